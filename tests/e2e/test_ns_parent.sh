#!/usr/bin/env bash
# Parent (upstream) proxies end to end: wgmitm sends chosen flows on
# through another proxy (a second wgmitm with an HTTP proxy and SOCKS5
# listener, credentials required), from its HTTP proxy listener and from
# the tunnel: chosen by host glob and by device, credentials with an
# escaped '@', HTTPS intercepted on our side and recorded on both; a
# parent that refuses the credentials or is not there is a 502 with the
# reason; records say "upstream_proxy".
#
#   ns cli (wireguard-go, curl) ── ns srv (wgmitm, curl) ── ns host (HTTP/HTTPS servers)
#                                      └── ns par (the parent: wgmitm --http-proxy/--socks5) ──┘
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"

pki="$E2E_TMP/pki"
test_pki "$pki"
printf '127.0.0.1 localhost\n203.0.113.10 www.test bad.test down.test direct.test named.test\n' >"$E2E_TMP/hosts"
mount --bind "$E2E_TMP/hosts" /etc/hosts

# The parent's way to the host is its own: srv ── par ── host.
topology_hosts --upstream-ca "$pki/ca.pem" --api 127.0.0.1:18090 --http-proxy 18080 \
  --upstream-proxy 'http://alice:s%40cret@192.0.2.2:3128@www.test' \
  --upstream-proxy 'http://alice:wrong@192.0.2.2:3128@bad.test' \
  --upstream-proxy 'http://192.0.2.2:9@down.test' \
  --upstream-proxy 'http://alice:s%40cret@192.0.2.2:3128@named.test' \
  --upstream-proxy 'socks5://alice:s%40cret@192.0.2.2:1080@device=phone' \
  --dns-override named.test=203.0.113.10
PAR=$(netns_add wgm-par)
veth_pair "$SRV" 192.0.2.1/24 "$PAR" 192.0.2.2/24 >/dev/null
veth_pair "$PAR" 198.51.100.1/24 "$HOST" 198.51.100.2/24 >/dev/null
ip -n "$PAR" route add 203.0.113.0/24 via 198.51.100.2

www="$E2E_TMP/www"
mkdir -p "$www"
printf '{"hello": "parent"}\n' >"$www/hello.json"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
serve "$HOST" python3 "$hosts" http "$www" 8080
wait_port "$HOST" 127.0.0.1 8443
wait_port "$HOST" 127.0.0.1 8080

printf 'alice:s@cret\n' >"$E2E_TMP/users"
PHOME="$E2E_TMP/parent"
# The parent relays TLS as it is, as a company proxy does.
serve "$PAR" env WGMITM_HOME="$PHOME" "$WGMITM" run --listen 127.0.0.1:0 --api off --no-intercept \
  --upstream-ca "$pki/ca.pem" --http-proxy 0.0.0.0:3128 --socks5 0.0.0.0:1080 --users "$E2E_TMP/users"
wait_port "$PAR" 192.0.2.2 3128
wait_port "$PAR" 192.0.2.2 1080
wait_for 10 grep -q "upstream proxy socks5://192.0.2.2:1080 for device phone (with credentials)" "$E2E_TMP/wgmitm.log" ||
  fail "the parents were not set up: $(grep -i proxy "$E2E_TMP/wgmitm.log" | tail -n 5)"

WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
want='{"hello": "parent"}'
c=(in_ns "$SRV" curl -sS --max-time 20 --cacert "$E2E_TMP/wgca.pem" -x http://127.0.0.1:18080)

# From the HTTP proxy listener, by host glob, through the HTTP parent.
got=$("${c[@]}" https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "HTTPS through the parent: got '$got'"
got=$("${c[@]}" http://www.test:8080/hello.json)
[ "$got" = "$want" ] || fail "HTTP through the parent: got '$got'"
# A host no parent is chosen for goes direct.
got=$("${c[@]}" http://direct.test:8080/hello.json)
[ "$got" = "$want" ] || fail "direct: got '$got'"
say "HTTP proxy listener → HTTP parent (CONNECT, credentials): HTTPS and HTTP; others direct"

# Failures reach the client with the reason.
code=$("${c[@]}" -o "$E2E_TMP/bad.txt" -w '%{http_code}' http://bad.test:8080/hello.json || true)
[ "$code" = 502 ] || fail "wrong parent credentials gave HTTP $code"
grep -q "parent proxy answered 407" "$E2E_TMP/bad.txt" || fail "407 not said: $(cat "$E2E_TMP/bad.txt")"
code=$("${c[@]}" -o "$E2E_TMP/down.txt" -w '%{http_code}' http://down.test:8080/hello.json || true)
[ "$code" = 502 ] || fail "a parent that is not there gave HTTP $code"
grep -q "parent proxy http://192.0.2.2:9: connect: connection refused" "$E2E_TMP/down.txt" ||
  fail "the refused parent is not named: $(cat "$E2E_TMP/down.txt")"
say "a parent refusing credentials, or not there: 502 with the reason"

# From the tunnel, by device, through the SOCKS5 parent (the tunnel knows
# only the address).
got=$(in_ns "$CLI" curl -sS --max-time 20 --cacert "$E2E_TMP/wgca.pem" \
  --resolve www.test:8443:203.0.113.10 https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "the tunnel through the SOCKS5 parent: got '$got'"
say "tunnel (device phone) → SOCKS5 parent with credentials"

# A name the phone looked up in the tunnel's DNS chooses the parent for
# its flows to that address, and the parent is asked for the name.
in_ns "$CLI" python3 - "$SRV4" <<'PY' || fail "the tunnel's DNS did not answer named.test"
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05named\x04test\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (sys.argv[1], 53))
a = s.recv(512)
assert a[:2] == b"\x12\x34" and struct.unpack(">H", a[6:8])[0] >= 1, a
assert socket.inet_aton("203.0.113.10") in a, a
PY
got=$(in_ns "$CLI" curl -sS --max-time 20 --resolve named.test:8080:203.0.113.10 http://named.test:8080/hello.json)
[ "$got" = "$want" ] || fail "the tunnel by name through the HTTP parent: got '$got'"
say "tunnel: a name its DNS answered chooses the HTTP parent, which is asked for the name"

wait_for 10 python3 - "$HOME_DIR/flows.jsonl" "$PHOME/flows.jsonl" <<'PY' || fail "records: $(tail -n 3 "$HOME_DIR/flows.jsonl")"
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
theirs = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
tcp = [r for r in ours if r["type"] == "tcp"]
def through(label, **kw):
    return [r for r in tcp if r.get("upstream_proxy") == label and all(r.get(k) == v for k, v in kw.items())]
assert len(through("http://192.0.2.2:3128", via="http-proxy", end_reason="fin")) >= 2, tcp
assert through("http://192.0.2.2:3128", end_reason="upstream_unreachable"), "407 recorded"
assert through("http://192.0.2.2:9", end_reason="upstream_unreachable"), "refused parent recorded"
assert through("socks5://192.0.2.2:1080", peer="phone", end_reason="fin"), "tunnel via socks5"
assert through("http://192.0.2.2:3128", peer="phone", end_reason="fin"), "tunnel by name via http"
by_id = {r["id"]: r for r in tcp}
direct = [h for h in ours if h["type"] == "http" and h["request"]["url"].startswith("http://direct.test")]
assert direct and all("upstream_proxy" not in by_id[h["conn"]] for h in direct), "direct went through a parent"
# Ours decrypted the HTTPS; the parent saw it as its client: TLS from us.
http = [r for r in ours if r["type"] == "http"]
assert any(r["request"]["url"] == "https://www.test:8443/hello.json" and r.get("via") == "http-proxy" for r in http), http
assert any(r["request"]["url"] == "https://www.test:8443/hello.json" and r.get("peer") == "phone" for r in http), http
pt = [r for r in theirs if r["type"] == "tcp"]
assert any(r.get("via") == "http-proxy" and r.get("user") == "alice" and r["server"] == "203.0.113.10:8443" for r in pt), pt
assert any(r.get("via") == "socks5" and r.get("user") == "alice" and r["server"] == "203.0.113.10:8443" for r in pt), pt
# The parent was asked for named.test (its own record's URL says so).
assert any(r["type"] == "http" and r["request"]["url"] == "http://named.test:8080/hello.json" and r.get("via") == "http-proxy"
           for r in theirs), [r["request"]["url"] for r in theirs if r["type"] == "http"]
PY
say "records: upstream_proxy on ours, via and user on the parent's"

# Accounting and counters.
token=$(cat "$HOME_DIR/api-token")
api() { in_ns "$SRV" curl -sS --max-time 10 -H "Authorization: Bearer $token" "http://127.0.0.1:18090$1"; }
for _ in $(seq 50); do # the store follows the log
  api '/api/usage?by=via' | grep -q wireguard && break
  sleep 0.2
done
api '/api/usage?by=via' | python3 -c '
import json, sys
u = {g["key"]: g for g in json.load(sys.stdin)["usage"]}
assert u["http-proxy"]["connections"] >= 5 and u["http-proxy"]["bytes_down"] > 0, u
assert u["http-proxy"]["exchanges"] >= 3, u
assert u["wireguard"]["connections"] >= 1 and u["wireguard"]["bytes_up"] > 0, u
' || fail "usage by via: $(api '/api/usage?by=via')"
api '/api/usage?by=device&filter=~tcp' | python3 -c '
import json, sys
u = {g["key"]: g for g in json.load(sys.stdin)["usage"]}
assert u["phone"]["connections"] >= 1 and u[None]["connections"] >= 5, u
' || fail "usage by device: $(api '/api/usage?by=device&filter=~tcp')"
code=$(in_ns "$SRV" curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:18090/api/usage?by=colour")
[ "$code" = 400 ] || fail "usage by an unknown group gave $code"
api /api/stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["listeners"]["accepted"] >= 5 and s["listeners"]["handed"] >= 5, s["listeners"]
assert s["tcp"]["parent_dials"] >= 5 and s["tcp"]["parent_failed"] >= 2, s["tcp"]
' || fail "stats: $(api /api/stats)"
say "accounting per way in and device (/api/usage), listener and parent counters (/api/stats)"
say "PASS"
