#!/usr/bin/env bash
# The command line, without the network: peers, configs, QR images decoded
# back to the exact config, help for every command, clear errors.
source "$(dirname "$0")/lib.sh"
[ -x "$WGMITM" ] || fail "wgmitm binary not found at $WGMITM"

# Pipelines end in grep -q, which may close the pipe early: judge by grep.
set +o pipefail
export WGMITM_HOME="$E2E_TMP/home"
w() { "$WGMITM" "$@"; }

# Help for every command; unknown commands fail with status 2.
w --help | grep -q 'peer add NAME' || fail "--help lists no commands"
for cmd in "run" "peer" "peer add" "peer config" "peer list" "peer show" "peer remove"; do
  # shellcheck disable=SC2086
  w $cmd --help | grep -q '^usage: wgmitm' || fail "wgmitm $cmd --help prints no usage"
done
set +e
w frobnicate >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command does not exit 2"
w peer list >/dev/null 2>"$E2E_TMP/err"; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "$WGMITM_HOME" "$E2E_TMP/err" || fail "peer list without state: no clear error"

# Add a peer with every option; PNG and SVG decode to the exact config.
w peer add phone --endpoint 192.0.2.10 --qr-png "$E2E_TMP/phone.png" --qr-svg "$E2E_TMP/phone.svg" \
  --allowed-ips 10.1.0.0/16,fd00:1::/64 --apps com.example.app,org.example.other \
  >"$E2E_TMP/add.out"
w peer config phone >"$E2E_TMP/phone.conf"
grep -q '^Endpoint = 192.0.2.10:51820$' "$E2E_TMP/phone.conf" || fail "endpoint not written"
grep -q '^AllowedIPs = 10.1.0.0/16, fd00:1::/64$' "$E2E_TMP/phone.conf" || fail "split tunnel not written"
grep -q '^IncludedApplications = com.example.app, org.example.other$' "$E2E_TMP/phone.conf" ||
  fail "IncludedApplications not written"
grep -q '^Address = 10.66.77.2/32, fd' "$E2E_TMP/phone.conf" || fail "addresses not written"
grep -q '^MTU = 1420$' "$E2E_TMP/phone.conf" || fail "MTU not written"
grep -q '^PresharedKey = ' "$E2E_TMP/phone.conf" || fail "no preshared key"
[ "$(stat -c %a "$WGMITM_HOME/peers.json")" = 600 ] || fail "peers.json is not 0600"
[ "$(stat -c %a "$E2E_TMP/phone.png")" = 600 ] || fail "QR PNG (holds a private key) is not 0600"
# The config printed by `peer add` is the same text.
grep -qF "$(head -n 3 "$E2E_TMP/phone.conf")" "$E2E_TMP/add.out" || fail "peer add printed another config"

decode() { zbarimg --raw -q -Sbinary "$1" 2>/dev/null; }
decode "$E2E_TMP/phone.png" >"$E2E_TMP/png.txt" || fail "zbarimg cannot read the PNG"
cmp -s "$E2E_TMP/png.txt" "$E2E_TMP/phone.conf" || fail "PNG QR differs from the config"
rsvg-convert -o "$E2E_TMP/svg.png" "$E2E_TMP/phone.svg"
decode "$E2E_TMP/svg.png" >"$E2E_TMP/svg.txt" || fail "zbarimg cannot read the SVG"
cmp -s "$E2E_TMP/svg.txt" "$E2E_TMP/phone.conf" || fail "SVG QR differs from the config"

# Options that would make a config the apps refuse are refused, nothing stored.
set +e
w peer add bad1 --allowed-ips 10.1.0.1/16 >/dev/null 2>"$E2E_TMP/err"; rc1=$?
w peer add bad2 --apps a.b --exclude-apps c.d >/dev/null 2>&1; rc2=$?
w peer add "bad name" >/dev/null 2>&1; rc3=$?
w peer add phone >/dev/null 2>&1; rc4=$?
w peer add bad3 --endpoint 'fd00::1' >/dev/null 2>&1; rc5=$?
set -e
[ $rc1 -ne 0 ] && [ $rc2 -ne 0 ] && [ $rc3 -ne 0 ] && [ $rc4 -ne 0 ] && [ $rc5 -ne 0 ] ||
  fail "a bad peer add succeeded ($rc1 $rc2 $rc3 $rc4 $rc5)"
grep -q '10.1.0.1/16' "$E2E_TMP/err" || fail "bad CIDR error does not name the value: $(cat "$E2E_TMP/err")"
[ "$(w peer list | grep -c '^bad')" = 0 ] || fail "a refused peer was stored"

# IPv6 endpoint in brackets; list/show/remove.
w peer add laptop --endpoint '[2001:db8::5]:4444' >/dev/null
w peer config laptop | grep -q '^Endpoint = \[2001:db8::5\]:4444$' || fail "IPv6 endpoint not bracketed"
w peer list | grep -q '^laptop .*10.66.77.3' || fail "peer list misses laptop"
w peer show laptop | grep -q 'addresses: *10.66.77.3' || fail "peer show misses the address"
w peer show laptop --qr | grep -q '▀\|▄' || fail "peer show --qr printed no QR code"
w peer remove laptop | grep -q 'removed' || fail "peer remove said nothing"
set +e; w peer config laptop >/dev/null 2>&1; rc=$?; set -e
[ $rc -ne 0 ] || fail "config of a removed peer"

# Keys persist: the same config after the files are re-read.
w peer config phone | cmp -s - "$E2E_TMP/phone.conf" || fail "config changed between invocations"

# A corrupt state file is an error naming the file; it is not overwritten.
cp "$WGMITM_HOME/peers.json" "$E2E_TMP/peers.good"
printf '{"version":1,"peers":[{"name":"x"' >"$WGMITM_HOME/peers.json"
set +e; w peer list >/dev/null 2>"$E2E_TMP/err"; rc=$?; set -e
[ $rc -ne 0 ] && grep -q 'peers.json:1:' "$E2E_TMP/err" || fail "corrupt peers.json: no clear error: $(cat "$E2E_TMP/err")"
set +e; w peer add other >/dev/null 2>&1; set -e
grep -q '"name":"x"' "$WGMITM_HOME/peers.json" || fail "a corrupt peers.json was overwritten"
cp "$E2E_TMP/peers.good" "$WGMITM_HOME/peers.json"

# The terminal QR code fits 80 columns.
width=$(w peer show phone --qr | grep '[▀▄█]' | LC_ALL=C.UTF-8 wc -L)
[ "$width" -le 80 ] || fail "terminal QR code is $width columns wide"
say "PASS"
