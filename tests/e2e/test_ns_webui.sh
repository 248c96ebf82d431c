#!/usr/bin/env bash
# The web UI in a real browser (Debian's chromium driven by puppeteer-core,
# tests/browser/webui.mjs) with a real WireGuard peer: the login link and
# the login page, a flow in the live list within a second or so of the
# request (measured and printed, not asserted), filtering, a flow's body,
# the certificate an HTTPS upstream presented (from a test CA), WebSocket
# messages (a wss echo), DNS answers (dig through the tunnel to dnsmasq),
# a client rejecting our certificate and its host passed through in one
# click,
# hostile URLs, headers and bodies rendering inert under the CSP, devices
# (the QR code shown on screen decodes, with zbarimg, to a configuration
# that joins), certificates, configuration and events.
# WEBUI_BROWSER=firefox (test_ns_webui_firefox.sh) runs webui.mjs's focused
# pass in firefox-esr instead: login link, live list, filter, a flow's body,
# hostile content, the QR code.
#
#   ns cli  wireguard-go wgc1 (phone)        ns cli2  wireguard-go wgc2 (tablet, from the QR)
#     192.168.77.2 ──veth── ns srv: wgmitm run, API on 127.0.0.1:8081, chromium ── 192.168.78.2
#                           203.0.113.1 ──veth── ns host: tests/e2e/webui_server.py :8080,
#                                                        hosts.py https :8443 (www.test, test CA),
#                                                        ws.js wss echo :8445, dnsmasq :53
source "$(dirname "$0")/lib.sh"
require_root
here=$(cd "$(dirname "$0")" && pwd)
browser_dir="$here/../browser"
skip() { [ "${CI:-}" = true ] && fail "$1"; say "SKIP: $1"; exit 77; }
for tool in node curl jq zbarimg dig dnsmasq; do command -v "$tool" >/dev/null 2>&1 || skip "needs $tool"; done
browser=${WEBUI_BROWSER:-chromium}
case "$browser" in
  chromium) browser_bin=${CHROMIUM:-/usr/bin/chromium} ;;
  firefox) browser_bin=${FIREFOX:-/usr/bin/firefox-esr} ;;
  *) fail "WEBUI_BROWSER=$browser: chromium or firefox" ;;
esac
[ -x "$browser_bin" ] || skip "needs $browser_bin (scripts/setup installs it)"
[ -d "$browser_dir/node_modules/puppeteer-core" ] || skip "needs puppeteer-core in tests/browser (scripts/setup installs it)"

# HTTPS upstreams with certificates from a test CA that wgmitm trusts.
pki="$E2E_TMP/pki"
test_pki "$pki"
topology_hosts --upstream-ca "$pki/ca.pem" --dns-upstream 203.0.113.10
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
mkdir -p "$E2E_TMP/www"
printf 'hello over TLS\n' >"$E2E_TMP/www/tls.txt"
serve "$HOST" python3 "$here/webui_server.py" 8080
serve "$HOST" python3 "$here/hosts.py" https "$E2E_TMP/www" 8443 "$pki/www.pem" "$pki/www.key"
serve "$HOST" env NODE_PATH=/usr/share/nodejs node "$here/ws.js" server 8445 "$pki/www.pem" "$pki/www.key"
printf '203.0.113.10 www.test.example\n' >"$E2E_TMP/hosts.dns"
serve "$HOST" dnsmasq --no-daemon --no-resolv --no-hosts --local=/test.example/ --addn-hosts="$E2E_TMP/hosts.dns" \
  --listen-address=203.0.113.10 --bind-interfaces --port=53 --pid-file="$E2E_TMP/dnsmasq.pid"
for p in 8080 8443 8445; do wait_port "$HOST" 127.0.0.1 $p; done
wait_for 10 in_ns "$HOST" dig +short +time=1 +tries=1 @203.0.113.10 www.test.example A || fail "dnsmasq did not start"
TOKEN=$(cat "$HOME_DIR/api-token")
out="$E2E_TMP/browser"
mkdir -p "$out"

www_fp=$(openssl x509 -in "$pki/www.pem" -noout -fingerprint -sha256 | cut -d= -f2)
in_ns "$SRV" env BROWSER="$browser" CHROMIUM="$browser_bin" FIREFOX="$browser_bin" BASE=http://127.0.0.1:8081 TOKEN="$TOKEN" CLI_NS="$CLI" UPSTREAM="http://$HOST4:8080" \
  TLS_HOST="www.test:8443:$HOST4" WGCA="$E2E_TMP/wgca.pem" WWW_FP="$www_fp" \
  WS_URL="wss://$HOST4:8445/chat" WS_JS="$here/ws.js" \
  DNS_SERVER="$SRV4" DNS_NAME=www.test.example DNS_ADDR="$HOST4" \
  OUT="$out" HOME="$E2E_TMP" timeout 300 node "$browser_dir/webui.mjs" 2>"$E2E_TMP/browser.err" |
  tee "$E2E_TMP/browser.out" | sed "s/^/[$E2E_NAME] /" || true
# WEBUI_SHOTS=DIR keeps the views' screenshots.
[ -z "${WEBUI_SHOTS:-}" ] || { mkdir -p "$WEBUI_SHOTS" && cp "$out"/*.png "$WEBUI_SHOTS"/ 2>/dev/null || true; }
grep -q '^ok: no script error' "$E2E_TMP/browser.out" ||
  fail "the browser test: $(tail -20 "$E2E_TMP/browser.err")"

# The QR code the page showed: zbarimg reads it back, and that config joins.
zbarimg -q --raw "$out/qr.png" >"$E2E_TMP/tablet.conf" 2>"$E2E_TMP/zbar.err" ||
  fail "zbarimg could not read the QR code on screen: $(cat "$E2E_TMP/zbar.err")"
grep -q '^\[Interface\]' "$E2E_TMP/tablet.conf" || fail "the QR code holds no configuration: $(head -3 "$E2E_TMP/tablet.conf")"
# The API's tablet config has the endpoint the endpoint detected: point it at srv's veth.
sed -i 's/^Endpoint *= *.*:\([0-9]*\)$/Endpoint = 192.168.78.1:\1/' "$E2E_TMP/tablet.conf"
CLI2=$(netns_add wgm-cli2)
veth_pair "$SRV" 192.168.78.1/24 "$CLI2" 192.168.78.2/24 >/dev/null
wg_client "$CLI2" wgc2 "$E2E_TMP/tablet.conf"
route_via "$CLI2" wgc2 "$SRV4/32" 203.0.113.0/24
in_ns "$CLI2" ping -c 1 -W 3 "$SRV4" >/dev/null || fail "the device added in the UI did not join"
in_ns "$CLI2" curl -sS --max-time 10 -o /dev/null "http://$HOST4:8080/hello.txt?from=tablet" ||
  fail "the tablet's request failed"
api() { in_ns "$SRV" curl -sS --max-time 10 -H "Authorization: Bearer $TOKEN" "$@"; }
tablet_flow() {
  api -G http://127.0.0.1:8081/api/flows --data-urlencode "filter=~peer ^tablet$ & ~u from=tablet" |
    jq -e '.flows | length == 1' >/dev/null
}
wait_for 10 tablet_flow || fail "the tablet's flow is not recorded under its name"
tablet_counted() {
  api http://127.0.0.1:8081/api/peers |
    jq -e '.peers[] | select(.name == "tablet") | .flows >= 1 and (.last_flow | type == "string")' >/dev/null
}
wait_for 10 tablet_counted || fail "/api/peers does not count the tablet's flows: $(api http://127.0.0.1:8081/api/peers)"
say "the QR code on screen decodes (zbarimg) to a configuration that joins; its traffic is recorded as peer tablet"
say "screenshots: $(ls "$out"/*.png | xargs -n1 basename | tr '\n' ' ')"
# WEBUI_SHOTS=DIR keeps them.
[ -n "${WEBUI_SHOTS:-}" ] && mkdir -p "$WEBUI_SHOTS" && cp "$out"/*.png "$WEBUI_SHOTS"/
say "PASS"
