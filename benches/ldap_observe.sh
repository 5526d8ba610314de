#!/bin/sh
# Benchmark: Keyfleet's full observation of an OpenLDAP directory with 100,000 users and 2,000
# groups, against ldapsearch doing the same paged searches (same filters, same attributes,
# same page size) to /dev/null. Prints wall times, the ratio and peak RSS of both.
#
# Usage: benches/ldap_observe.sh [USERS] [GROUPS]     (defaults 100000 2000)
# Needs slapd, ldap-utils, python3 and GNU time (/usr/bin/time); builds keyfleet --release.
# Not part of .ci/run.
set -eu

USERS=${1:-100000}
NGROUPS=${2:-2000}
PAGE=1000
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d)
SLAPD_PID=
cleanup() {
    if [ -n "$SLAPD_PID" ]; then kill "$SLAPD_PID" 2>/dev/null || true; wait "$SLAPD_PID" 2>/dev/null || true; fi
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; apt-get install time)" >&2; exit 1; }

echo "building keyfleet (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet --bin keyfleet)
KF="$ROOT/target/release/keyfleet"

mkdir "$T/db"
cp /usr/sbin/slapd "$T/slapd"   # a copy is not confined by an AppArmor profile for /usr/sbin/slapd
cat > "$T/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $T/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
sizelimit size.soft=unlimited size.hard=unlimited size.prtotal=unlimited
timelimit unlimited
database mdb
maxsize 4294967296
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw secret
directory $T/db
index objectClass eq
index uid,cn,mail,employeeNumber eq
index member,memberOf eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
overlay memberof
EOF

echo "generating $USERS users and $NGROUPS groups..." >&2
python3 - "$USERS" "$NGROUPS" > "$T/big.ldif" <<'EOF'
import random, sys
nu, ng = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(42)
B = "dc=example,dc=org"
w = sys.stdout.write
w(f"dn: {B}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n")
w(f"dn: ou=people,{B}\nobjectClass: organizationalUnit\nou: people\n\n")
w(f"dn: ou=groups,{B}\nobjectClass: organizationalUnit\nou: groups\n\n")
members = [[] for _ in range(ng)]
for i in range(nu):
    uid = f"user{i:06d}"
    gs = rnd.sample(range(ng), rnd.randint(1, 3))
    w(f"dn: uid={uid},ou=people,{B}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: User {i}\n"
      f"sn: {i}\nmail: {uid}@example.org\nemployeeNumber: {i}\n")
    for g in gs:
        members[g].append(uid)
        w(f"memberOf: cn=group{g:05d},ou=groups,{B}\n")   # slapadd runs no overlays
    w("\n")
for g in range(ng):
    w(f"dn: cn=group{g:05d},ou=groups,{B}\nobjectClass: groupOfNames\ncn: group{g:05d}\n")
    for u in members[g] or ["nobody"]:
        w(f"member: uid={u},ou=people,{B}\n")
    w("\n")
EOF
echo "slapadd..." >&2
slapadd -q -f "$T/slapd.conf" -l "$T/big.ldif"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="ldap://127.0.0.1:$PORT"
"$T/slapd" -f "$T/slapd.conf" -h "$URL/" -d 0 &
SLAPD_PID=$!
i=0
until ldapsearch -x -H "$URL" -s base -b "" namingContexts >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 500 ] || { echo "slapd did not start" >&2; exit 1; }; sleep 0.02
done

mkdir "$T/policy"
printf 'secret\n' > "$T/policy/bind.pw"
cat > "$T/policy/policy.yaml" <<EOF
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata: {name: lab}
spec:
  local: {subject: 'CN=Lab CA,O=Example'}
---
apiVersion: keyfleet.dev/v1
kind: Directory
metadata: {name: corp}
spec:
  ldap:
    url: $URL
    flavour: openldap
    bindDn: cn=admin,dc=example,dc=org
    bindPassword: {file: bind.pw}
    baseDn: dc=example,dc=org
    pageSize: $PAGE
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: employee}
spec:
  cardType: virtual
  certificates:
    - {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256,
       subject: 'CN=\${user.cn},SERIALNUMBER=\${user.attr.employeeNumber},O=Example',
       subjectAltNames: [{email: '\${user.mail}'}]}
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: staff}
spec: {directory: corp, template: employee, groups: [{name: group00001, nested: true}]}
EOF

# The same two searches Keyfleet sends (filters and attributes of the openldap flavour for
# these templates), paged, bound as the same DN.
LS="ldapsearch -x -LLL -H $URL -D cn=admin,dc=example,dc=org -w secret -E pr=$PAGE/noprompt -b dc=example,dc=org"
cat > "$T/ls.sh" <<EOF
$LS '(|(objectClass=inetOrgPerson)(objectClass=person))' uid cn pwdAccountLockedTime mail employeeNumber > /dev/null
$LS '(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))' cn member uniqueMember > /dev/null
EOF

measure() {  # name, command...: appends "seconds maxrss_kb" to $T/<name>.txt
    name=$1; shift
    /usr/bin/time -f "%e %M" -o "$T/time.out" "$@" > /dev/null
    cat "$T/time.out" >> "$T/$name.txt"
}

# Warm the server's caches once, then alternate, 3 runs each; report medians.
sh "$T/ls.sh"
for run in 1 2 3; do
    measure kf "$KF" -C "$T/policy" --state-dir "$T/state" directory members group00001 --format json
    measure ls sh "$T/ls.sh"
done
median() { sort -n -k1,1 "$1" | sed -n 2p; }
KF_M=$(median "$T/kf.txt"); LS_M=$(median "$T/ls.txt")
KF_S=${KF_M% *}; KF_R=${KF_M#* }; LS_S=${LS_M% *}; LS_R=${LS_M#* }
echo "users=$USERS groups=$NGROUPS page=$PAGE (median of 3)"
echo "keyfleet full observation: ${KF_S} s, peak RSS $((KF_R / 1024)) MB   runs: $(cut -d' ' -f1 "$T/kf.txt" | tr '\n' ' ')"
echo "ldapsearch (same searches): ${LS_S} s, peak RSS $((LS_R / 1024)) MB (largest of the two ldapsearch processes)   runs: $(cut -d' ' -f1 "$T/ls.txt" | tr '\n' ' ')"
python3 -c "print(f'ratio keyfleet/ldapsearch: {float(\"$KF_S\")/float(\"$LS_S\"):.2f} (target <= 1.3)')"
