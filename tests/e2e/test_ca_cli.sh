#!/usr/bin/env bash
# `wgmitm ca` without the network and without root: the CA is generated on
# first use, export (PEM/DER) parses with openssl and matches `ca show`,
# import adopts an `openssl req -x509` CA and refuses a leaf-only cert.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "${WGMITM:-}" ] || fail "wgmitm binary not found at ${WGMITM:-(WGMITM unset)}"
command -v openssl >/dev/null || { echo "SKIP: no openssl"; exit 77; }
TMP=$(mktemp -d /tmp/wgmitm-ca-cli.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export WGMITM_HOME="$TMP/home"
w() { "$WGMITM" "$@"; }

# Help for `ca` and each subcommand.
w --help | grep -q '^  ca ' || fail "--help does not list ca"
for cmd in "ca" "ca export" "ca show" "ca import"; do
  # shellcheck disable=SC2086
  w $cmd --help | grep -q '^usage: wgmitm' || fail "wgmitm $cmd --help prints no usage"
done
set +e
w ca frobnicate >/dev/null 2>&1; rc=$?
set -e
[ $rc -eq 2 ] || fail "unknown ca command does not exit 2"

# First use generates; the key is 0600.
w ca show >"$TMP/show1" 2>"$TMP/err"
grep -q 'generated a new CA' "$TMP/err" || fail "first use did not say it generated the CA"
[ "$(stat -c %a "$WGMITM_HOME/ca-key.pem")" = 600 ] || fail "ca-key.pem is not 0600"
grep -q '^subject: .*CN=wgmitm CA ' "$TMP/show1" || fail "show: no subject: $(cat "$TMP/show1")"
grep -q '^key: .*(EC P-256)' "$TMP/show1" || fail "show: key type missing"
grep -q '^not after: ' "$TMP/show1" || fail "show: no validity"
fp=$(sed -n 's/^sha256: *//p' "$TMP/show1")
[ ${#fp} -eq 95 ] || fail "show: bad fingerprint '$fp'"
w ca show >"$TMP/show2" 2>/dev/null
cmp -s "$TMP/show1" "$TMP/show2" || fail "the CA changed between invocations"

# Export PEM and DER: openssl parses both, same fingerprint as show.
w ca export >"$TMP/ca.pem"
w ca export --der >"$TMP/ca.der"
pem_fp=$(openssl x509 -in "$TMP/ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)
der_fp=$(openssl x509 -inform DER -in "$TMP/ca.der" -noout -fingerprint -sha256 | cut -d= -f2)
[ "$pem_fp" = "$fp" ] || fail "PEM fingerprint $pem_fp != $fp"
[ "$der_fp" = "$fp" ] || fail "DER fingerprint $der_fp != $fp"
openssl x509 -in "$TMP/ca.pem" -noout -text | grep -A1 'Basic Constraints: critical' | grep -q 'CA:TRUE' ||
  fail "exported CA lacks critical CA:TRUE"
cmp -s "$TMP/ca.pem" "$WGMITM_HOME/ca.pem" || fail "export differs from ca.pem"

# Import a CA made with openssl req -x509 (RSA 2048).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/team.key" -out "$TMP/team.crt" -days 30 \
  -subj "/CN=Team CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
w ca import "$TMP/team.crt" "$TMP/team.key" >"$TMP/imp" || fail "import of a valid CA failed"
team_fp=$(openssl x509 -in "$TMP/team.crt" -noout -fingerprint -sha256 | cut -d= -f2)
w ca show | grep -q "^sha256: *$team_fp\$" || fail "show does not report the imported CA"
w ca show | grep -q '(RSA 2048)' || fail "show does not report the RSA key"
bak_fp=$(openssl x509 -in "$WGMITM_HOME/ca.pem.bak" -noout -fingerprint -sha256 | cut -d= -f2)
[ "$bak_fp" = "$fp" ] || fail "the previous CA was not kept as ca.pem.bak"
[ "$(stat -c %a "$WGMITM_HOME/ca-key.pem")" = 600 ] || fail "imported key is not 0600"

# A leaf-only certificate (CA:FALSE, signed by the team CA) is refused.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/leaf.key" \
  -out "$TMP/leaf.csr" -subj "/CN=leaf.example" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TMP/leaf.ext"
openssl x509 -req -in "$TMP/leaf.csr" -CA "$TMP/team.crt" -CAkey "$TMP/team.key" -CAcreateserial \
  -days 30 -extfile "$TMP/leaf.ext" -out "$TMP/leaf.crt" 2>/dev/null
set +e
w ca import "$TMP/leaf.crt" "$TMP/leaf.key" >/dev/null 2>"$TMP/err"; rc=$?
w ca import "$TMP/team.crt" "$TMP/leaf.key" >/dev/null 2>"$TMP/err2"; rc2=$?
w ca import "$TMP/team.crt" >/dev/null 2>&1; rc3=$?
set -e
[ $rc -eq 1 ] || fail "a leaf-only certificate was imported (rc $rc)"
grep -q 'leaf.crt: not a CA certificate' "$TMP/err" || fail "unclear refusal: $(cat "$TMP/err")"
[ $rc2 -eq 1 ] && grep -q 'leaf.key: the private key does not match' "$TMP/err2" ||
  fail "mismatched key: $(cat "$TMP/err2")"
[ $rc3 -eq 2 ] || fail "import with one argument does not exit 2"
w ca show | grep -q "^sha256: *$team_fp\$" || fail "a refused import changed the CA"
echo "PASS: ca cli"
