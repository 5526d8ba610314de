#!/usr/bin/env bash
# Controller benchmark (by hand, not a test): a file directory of N users (default 100,000),
# of whom ~500 hold credentials; measures
#   - the first pass (issuing ~500 virtual cards),
#   - time from a one-user group change (atomic rename of the data file) to that user's
#     certificate issued: the controller's issue counter on /metrics (polled every 10 ms with
#     curl, cheap next to the figure), then checked in the inventory,
#   - peak RSS of the controller (VmHWM), its directory data file size,
#   - CPU used while idle for 60 s.
# Usage: cargo build --release && benches/controller.sh [N]
set -euo pipefail
N=${1:-100000}
K=${KEYFLEET:-$(dirname "$0")/../target/release/keyfleet}
K=$(realpath "$K")
W=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
cp -r "$(dirname "$0")/../examples/quickstart" "$W/policy"
python3 - "$N" "$W/policy/people.yaml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
u = lambda i: f"u{i:06d}"
out = ["users:"]
out += [f"  - {{uid: {u(i)}, cn: User {i}, mail: {u(i)}@example.com, attributes: {{employeeNumber: \"{i}\"}}}}" for i in range(n)]
out += ["groups:",
        "  - name: engineering", "    members: [" + ", ".join(u(i) for i in range(300)) + "]",
        "  - name: finance", "    members: [" + ", ".join(u(i) for i in range(300, 500)) + "]",
        "  - name: contractors", "    members: [" + u(500) + "]",
        "  - name: staff", "    members: [" + ", ".join(u(i) for i in range(n)) + "]"]
open(path, "w").write("\n".join(out) + "\n")
PY
ls -l "$W/policy/people.yaml" | awk '{printf "directory data file: %.1f MiB\n", $5/1048576}'
now() { date +%s.%N; }
PORT=${PORT:-19464}
issued() {
  curl -sf "http://127.0.0.1:$PORT/metrics" \
    | awk '/^keyfleet_actions_total\{kind="issue",outcome="done"\}/ {n=$2} END {print n+0}'
}
start=$(now)
KEYFLEET_LOG=${KEYFLEET_LOG:-info,keyfleet::controller::pass=debug} \
  "$K" run -C "$W/policy" --state-dir "$W/state" --listen "127.0.0.1:$PORT" > "$W/run.log" 2>&1 & PID=$!
until "$K" plan -C "$W/policy" --state-dir "$W/state" > /dev/null 2>&1; do sleep 0.5; done
echo "first pass converged after $(echo "$(now) - $start" | bc) s"
grep -o 'pass complete.*' "$W/run.log" | sed 's/\x1b\[[0-9;]*m//g' | head -3
echo "after the first pass: peak RSS $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status), RSS $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status)"

# One-user group change: u000777 joins contractors.
sed "s/    members: \[u000500\]/    members: [u000500, u000777]/" "$W/policy/people.yaml" > "$W/policy/.people.tmp"
before=$(issued)
t0=$(now)
mv "$W/policy/.people.tmp" "$W/policy/people.yaml"
until [ "$(issued)" -gt "$before" ]; do sleep 0.01; done
t1=$(now)
echo "one-user change -> certificate issued (pass finished): $(echo "$t1 - $t0" | bc) s"
until "$K" inventory -C "$W/policy" --state-dir "$W/state" --format json 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if any(c["user"]=="u000777" and c["status"]=="active" for c in d["certificates"]) else 1)'; do
  sleep 0.05
done
echo "  (and seen by the CLI in the inventory through the control socket after $(echo "$(now) - $t0" | bc) s)"
grep -o 'pass complete.*' "$W/run.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1
grep -o 'observe_ms.*' "$W/run.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1
grep -o 'directory snapshot held.*' "$W/run.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1 \
  | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^heap_bytes=/) {split($i, a, "="); printf "directory data held (the snapshot): %.1f MiB\n", a[2] / 1048576}}'

sleep 2
echo "peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status), current RSS: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status)"
ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }
threads() { for t in /proc/$PID/task/*; do echo "$(basename "$t") $(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done | sort; }
threads > "$W/threads.0"; c0=$(ticks); sleep 60; c1=$(ticks); threads > "$W/threads.1"
echo "idle CPU over 60 s: $(( (c1 - c0) * 1000 / $(getconf CLK_TCK) )) ms"
join "$W/threads.0" "$W/threads.1" | awk -v hz="$(getconf CLK_TCK)" '$5 > $3 {printf "  thread %s (%s): %d ms\n", $1, $2, ($5 - $3) * 1000 / hz}'
kill -TERM $PID; wait $PID || true
