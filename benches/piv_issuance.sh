#!/usr/bin/env bash
# PIV issuance benchmark (by hand, not part of .ci/run): the controller (`keyfleet run`,
# release build) issues three-slot PIV credentials (9A, 9C, 9D; P-256 keys generated on the
# card; the embedded local CA) to Keyfleet's virtual card in a private pcscd + vpcd reader
# (`keyfleet vcard serve`, the real PC/SC stack). Each cycle the user joins the group (the
# controller issues to the card in the reader) and leaves it again (revoke, then wipe). For
# every issuing pass the controller reports its wall time, its APDUs and the time spent inside
# PC/SC calls (card + pcscd + reader driver); the rest of the pass is Keyfleet's own work:
# observing the directory, planning, the CSRs, the journal and inventory writes (flushed to
# disk) and whatever of the CA's work the card did not hide (the CA signs one slot while the
# card makes the next slot's key). The same split is printed for the issuance alone (the
# pass's `apply_us` and `apply_card_io_us`). Prints each issuing pass and the medians.
#
# Usage: cargo build --release && benches/piv_issuance.sh [CYCLES]   (default 7)
# Needs pcscd, vsmartcard-vpcd and systemd-socket-activate (scripts/install-deps --test).
set -euo pipefail
CYCLES=${1:-7}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
K=${KEYFLEET:-$ROOT/target/release/keyfleet}
W=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket
for _ in range(100):
    a = socket.socket(); a.bind(("0.0.0.0", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("0.0.0.0", p + 1)); print(p); break
    except OSError:
        pass')
mkdir -p "$W/reader.conf.d"
printf 'FRIENDLYNAME "Bench VPCD"\nDEVICENAME /dev/null:0x%04X\nLIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x%04X\n' \
  "$PORT" "$PORT" > "$W/reader.conf.d/vpcd"
export PCSCLITE_CSOCK_NAME=$W/pcscd.comm
systemd-socket-activate -l "$PCSCLITE_CSOCK_NAME" pcscd -f -c "$W/reader.conf.d" > "$W/pcscd.log" 2>&1 &
PIDS+=($!)
"$K" vcard serve --state "$W/card" --vpcd "127.0.0.1:$PORT" > "$W/vcard.log" 2>&1 &
PIDS+=($!)

cp -r "$ROOT/examples/piv" "$W/policy"
cat >> "$W/policy/template.yaml" <<'EOF'
    - name: key-management
      slot: 9D
      authority: piv-ca
      profile: piv-key-management
      keyAlgorithm: ecc-p256
      subject: "CN=${user.cn},OU=Employees,O=Example"
      validity: 1y
      renewBefore: 30d
EOF
# One user in the directory: each revocation is all of them, so let the valve allow it.
cat > "$W/policy/settings.yaml" <<'EOF'
apiVersion: keyfleet.dev/v1
kind: Settings
metadata: {name: settings}
spec:
  safety: {maxRevocations: 5, maxRevocationPercent: 100}
EOF
member() {  # the group's members: alice or nobody (atomic replace, as an editor or git would)
  sed "s/    members: \[.*\]/    members: [$1]/" "$W/policy/people.yaml" > "$W/policy/.people.tmp"
  mv "$W/policy/.people.tmp" "$W/policy/people.yaml"
}
member ""
"$K" validate -C "$W/policy" > /dev/null

KEYFLEET_LOG=${KEYFLEET_LOG:-info} "$K" run -C "$W/policy" --state-dir "$W/state" > "$W/run.log" 2>&1 &
PIDS+=($!)
wait_log() {  # pattern, what
  for _ in $(seq 1 600); do
    grep -q "$1" "$W/run.log" && return 0
    sleep 0.05
  done
  echo "timed out waiting for $2; log:" >&2; cat "$W/run.log" >&2; exit 1
}
wait_log 'pass complete pass=1 ' "the first pass"
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
count() { grep -c "$1" "$W/run.log" || true; }
wait_more() {  # pattern, count before, what
  for _ in $(seq 1 600); do
    [ "$(count "$1")" -gt "$2" ] && return 0
    sleep 0.05
  done
  echo "timed out waiting for $3; log:" >&2; cat "$W/run.log" >&2; exit 1
}
for c in $(seq 1 "$CYCLES"); do
  issued=$(count 'planned=1 done=1 ')
  member alice
  wait_more 'planned=1 done=1 ' "$issued" "issuance $c"
  grep 'planned=1 done=1 ' "$W/run.log" | strip | tail -1 >> "$W/issued.log"
  wiped=$(count 'planned=2 done=2 ')
  member ""
  wait_more 'planned=2 done=2 ' "$wiped" "revocation $c"
done
strip < "$W/issued.log" | python3 -c '
import re, statistics, sys
rows = []
for line in sys.stdin:
    f = dict(re.findall(r"(\w+)=([0-9]+)", line))
    d, io, n, ca = int(f["duration_us"]), int(f["card_io_us"]), int(f["apdus"]), int(f["ca_us"])
    a, aio = int(f["apply_us"]), int(f["apply_card_io_us"])
    rows.append((d, io, n, ca, a, aio))
    print(f"issuing pass: {d/1000:6.1f} ms, {n} APDUs, card + transport {io/1000:5.1f} ms, "
          f"Keyfleet {(d-io)/1000:4.1f} ms ({100*(d-io)/d:4.1f} %); the issuance itself "
          f"{a/1000:5.1f} ms, Keyfleet {(a-aio)/1000:4.1f} ms ({100*(a-aio)/max(a,1):4.1f} %); "
          f"CA {ca/1000:4.1f} ms (beside the card)")
if rows:
    med = lambda f: statistics.median(f(r) for r in rows)
    d, io, ca, a = med(lambda r: r[0]), med(lambda r: r[1]), med(lambda r: r[3]), med(lambda r: r[4])
    own = med(lambda r: 100 * (r[0] - r[1]) / r[0])
    own_ms = med(lambda r: (r[0] - r[1]) / 1000)
    aown = med(lambda r: 100 * (r[4] - r[5]) / max(r[4], 1))
    aown_ms = med(lambda r: (r[4] - r[5]) / 1000)
    print(f"median of {len(rows)}: pass {d/1000:.1f} ms, card + transport {io/1000:.1f} ms, "
          f"Keyfleet own work {own_ms:.1f} ms = {own:.1f} % of the pass (observing, planning and "
          f"the issuance); the issuance action {a/1000:.1f} ms, Keyfleet {aown_ms:.1f} ms = "
          f"{aown:.1f} %; CA {ca/1000:.1f} ms, run beside the card (target < 10 %)")
'
