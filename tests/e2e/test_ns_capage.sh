#!/usr/bin/env bash
# The CA install page, its name in the tunnel's DNS, and QUIC refusal.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm run) ── ns host (UDP 443 logger/echo)
#   (layout drawn in lib.sh: topology_hosts)
#
# Through the tunnel: wgmitm.internal and ca.wgmitm.internal resolve to the
# endpoint's tunnel addresses (UDP and TCP, A and AAAA) without an upstream
# resolver; http://wgmitm.internal/ serves the page, the PEM and DER equal
# `wgmitm ca export [--der]`, the iOS profile parses as a plist holding the
# DER. UDP to port 443 gets ICMP port unreachable (ECONNREFUSED) and never
# reaches the host; with --quic passthrough it is relayed and answered.
source "$(dirname "$0")/lib.sh"
require_root
command -v dig >/dev/null || fail "dig (bind9-dnsutils) is needed"
command -v curl >/dev/null || fail "curl is needed"

# No resolver answers at 203.0.113.10: our names must not need one.
topology_hosts --dns-upstream 203.0.113.10
export WGMITM_HOME="$HOME_DIR"

# A UDP server on port 443 of the test host that logs and echoes datagrams.
cat >"$E2E_TMP/udp443.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 443))
while True:
    data, addr = s.recvfrom(65535)
    with open(sys.argv[1], "ab") as f:
        f.write(data + b"\n")
    s.sendto(data, addr)
PY
: >"$E2E_TMP/udp443.log"
serve "$HOST" python3 "$E2E_TMP/udp443.py" "$E2E_TMP/udp443.log"

# --- DNS: the friendly names, answered by wgmitm itself ---
a=$(in_ns "$CLI" dig +short +time=3 +tries=2 @"$SRV4" wgmitm.internal A)
[ "$a" = "$SRV4" ] || fail "wgmitm.internal A: '$a', expected $SRV4"
aaaa=$(in_ns "$CLI" dig +short +time=3 +tries=2 @"$SRV6" CA.wgmitm.internal AAAA)
[ "$aaaa" = "$SRV6" ] || fail "ca.wgmitm.internal AAAA: '$aaaa', expected $SRV6"
tcp=$(in_ns "$CLI" dig +short +tcp +time=3 +tries=2 @"$SRV4" ca.wgmitm.internal A)
[ "$tcp" = "$SRV4" ] || fail "ca.wgmitm.internal A over TCP: '$tcp'"
ttl=$(in_ns "$CLI" dig +noall +answer +time=3 +tries=2 @"$SRV4" wgmitm.internal A | awk '{ print $2 }')
[ "$ttl" = 60 ] || fail "TTL '$ttl', expected 60"
mx=$(in_ns "$CLI" dig +time=3 +tries=2 @"$SRV4" wgmitm.internal MX)
grep -q 'status: NOERROR' <<<"$mx" && grep -q 'ANSWER: 0' <<<"$mx" || fail "MX is not NODATA: $mx"
say "DNS: wgmitm.internal A/AAAA (UDP, TCP, TTL 60), NODATA for MX: ok"

# --- the page, by name and by address ---
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/ca.pem"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export --der >"$E2E_TMP/ca.der"
fp=$(WGMITM_HOME="$HOME_DIR" "$WGMITM" ca show | sed -n 's/^sha256: *//p')
[ -n "$fp" ] || fail "no fingerprint from wgmitm ca show"
get() { in_ns "$CLI" curl -sS --max-time 10 --resolve "wgmitm.internal:80:$SRV4" "$@"; }
get -o "$E2E_TMP/got.pem" http://wgmitm.internal/ca.pem || fail "GET /ca.pem"
cmp -s "$E2E_TMP/got.pem" "$E2E_TMP/ca.pem" || fail "/ca.pem differs from wgmitm ca export"
in_ns "$CLI" curl -sS --max-time 10 -g -o "$E2E_TMP/got.der" "http://[$SRV6]/ca.der" || fail "GET [v6]/ca.der"
cmp -s "$E2E_TMP/got.der" "$E2E_TMP/ca.der" || fail "/ca.der differs from wgmitm ca export --der"
get -o "$E2E_TMP/got.crt" http://wgmitm.internal/ca.crt && cmp -s "$E2E_TMP/got.crt" "$E2E_TMP/ca.pem" ||
  fail "/ca.crt"
get -o "$E2E_TMP/page.html" http://wgmitm.internal/ || fail "GET /"
grep -qF "$fp" "$E2E_TMP/page.html" || fail "the page does not show the fingerprint $fp"
grep -q "Certificate Trust Settings" "$E2E_TMP/page.html" || fail "the page lacks the iOS steps"
hdrs=$(get -D - -o "$E2E_TMP/ca.mobileconfig" http://wgmitm.internal/ca.mobileconfig) || fail "GET /ca.mobileconfig"
grep -qi '^content-type: application/x-apple-aspen-config' <<<"$hdrs" || fail "profile content type: $hdrs"
python3 - "$E2E_TMP/ca.mobileconfig" "$E2E_TMP/ca.der" <<'PY' || fail "the profile is not the expected plist"
import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
der = open(sys.argv[2], "rb").read()
assert p["PayloadType"] == "Configuration" and p["PayloadVersion"] == 1, p
assert p["PayloadDisplayName"] == "wgmitm CA"
(root,) = p["PayloadContent"]
assert root["PayloadType"] == "com.apple.security.root"
assert root["PayloadContent"] == der
assert p["PayloadUUID"] != root["PayloadUUID"]
PY
# Keep-alive: two requests on one connection (curl reuses it).
two=$(get -s -o /dev/null -o /dev/null -w '%{num_connects} ' http://wgmitm.internal/ca.pem http://wgmitm.internal/ca.der)
[ "$two" = "1 0 " ] || fail "keep-alive: connects per request '$two'"
code=$(get -o /dev/null -w '%{http_code}' http://wgmitm.internal/nothing)
[ "$code" = 404 ] || fail "404 expected, got $code"
code=$(get -o /dev/null -w '%{http_code}' -X POST -d x http://wgmitm.internal/ca.pem)
[ "$code" = 405 ] || fail "POST: 405 expected, got $code"
in_ns "$CLI" curl -s --max-time 5 -o /dev/null "http://$SRV4:81/" && fail "port 81 of the tunnel address answered"
say "CA page: PEM and DER equal wgmitm ca export, profile, page, keep-alive, 404, 405: ok"

# --- QUIC refused: ECONNREFUSED at the client, nothing at the host ---
quic_probe() {
  in_ns "$CLI" python3 - "$1" <<'PY'
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 443))
try:
    for _ in range(3):
        s.send(b"quic-initial")
        data = s.recv(2048)
        print("answered")
        sys.exit(0)
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
PY
}
r4=$(quic_probe "$HOST4")
r6=$(quic_probe "$HOST6")
[ "$r4" = refused ] || fail "UDP to $HOST4:443: $r4 (expected ECONNREFUSED)"
[ "$r6" = refused ] || fail "UDP to [$HOST6]:443: $r6 (expected ECONNREFUSED)"
sleep 0.3
[ ! -s "$E2E_TMP/udp443.log" ] || fail "the host received QUIC datagrams: $(cat "$E2E_TMP/udp443.log")"
# The UDP server is up: a direct datagram from srv reaches it.
in_ns "$SRV" python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"direct", ("203.0.113.10", 443))'
wait_for 5 grep -q direct "$E2E_TMP/udp443.log" || fail "the UDP 443 server is not listening"
stats=$(wgmitm_stats)
grep -q "quic refused [1-9]" <<<"$stats" || fail "quic refusals not counted: $stats"
grep -q "ca page requests [1-9]" <<<"$stats" || fail "ca page requests not counted: $stats"
say "QUIC to port 443 refused over IPv4 and IPv6, the host saw nothing: ok"

# Records are written when flows end: stop cleanly, then read them.
kill -TERM "$WGMITM_PID"
wait "$WGMITM_PID" || fail "wgmitm exited non-zero on SIGTERM"
python3 - "$HOME_DIR/flows.jsonl" "$HOST4" <<'PY' || fail "records incomplete"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dns = [r for r in recs if r.get("type") == "dns" and (r.get("name") or "").lower().endswith("wgmitm.internal")]
quic = [r for r in recs if r.get("type") == "udp" and r.get("end_reason") == "quic_refused"]
print("records: %d for our names, %d QUIC refusals" % (len(dns), len(quic)))
assert len(dns) >= 5, dns
assert all(r["upstream"] is None and r["end_reason"] == "answered" for r in dns), dns
assert any(r["server"] == sys.argv[2] + ":443" for r in quic), quic
assert all(r["peer"] == "phone" and r["packets_up"] >= 1 for r in quic)
PY

# --- --quic passthrough: relayed, the host's server answers ---
start_wgmitm "$SRV" "$HOME_DIR" --dns-upstream 203.0.113.10 --quic passthrough
# The client still holds the old session: make it handshake afresh.
in_ns "$CLI" wg set wgc1 peer "$(conf_value "$E2E_TMP/phone.conf" PublicKey)" remove
in_ns "$CLI" wg addconf wgc1 "$E2E_TMP/wgc1.setconf"
wait_for 10 in_ns "$CLI" ping -c 1 -W 1 "$SRV4" || fail "peer did not rejoin the restarted endpoint"
r4=$(quic_probe "$HOST4")
[ "$r4" = answered ] || fail "--quic passthrough: UDP to $HOST4:443: $r4"
grep -q quic-initial "$E2E_TMP/udp443.log" || fail "the host did not see the relayed datagram"
say "--quic passthrough: relayed and answered: ok"
say "PASS"
