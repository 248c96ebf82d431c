#!/usr/bin/env bash
# Interception rules end to end (docs/rules.md): a wireguard-go client
# talks HTTPS/1.1 through wgmitm to a test host while rules from run's
# options and HOME/rules.json change requests and responses, answer and
# block them, and edit and drop WebSocket messages; the tunnel's DNS
# answers an overridden name.
#
#   ns cli (wireguard-go, curl, dig, node) ── ns srv (wgmitm run + rules) ── ns host (HTTPS :8443, wss :8446)
#   www.test -> 203.0.113.10 (curl --resolve); api.staging.test -> 203.0.113.10 (a DNS override)
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl dig python3; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"
wsjs="$(cd "$(dirname "$0")" && pwd)/ws.js"
export NODE_PATH=/usr/share/nodejs

pki="$E2E_TMP/pki"
test_pki "$pki"
www="$E2E_TMP/www"
mkdir -p "$www"
printf '{"user": {"name": "cat"}, "items": [1, 2]}' >"$www/user.json"
printf 'plain text from the server\n' >"$www/plain.txt"
printf 'served from a local file\n' >"$E2E_TMP/local.txt"
head -c 200000 /dev/urandom >"$www/big.bin"

# A second server for redirects (map remote): staging.test, its own
# certificate, at 203.0.113.11. wgmitm resolves the name through a hosts
# file of its own mount namespace (the machine's /etc/hosts is not touched).
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=staging.test" \
  -keyout "$pki/staging.key" -out "$pki/staging.csr" 2>/dev/null
printf 'subjectAltName=DNS:staging.test\nextendedKeyUsage=serverAuth\n' >"$pki/staging.ext"
openssl x509 -req -in "$pki/staging.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/staging.ext" -out "$pki/staging.pem" 2>/dev/null
mkdir -p "$E2E_TMP/staging/to-staging"
printf 'served by staging\n' >"$E2E_TMP/staging/who.txt"
printf '127.0.0.1 localhost\n203.0.113.11 staging.test\n127.0.0.1 loop.test\n' >"$E2E_TMP/hosts"
real=$WGMITM
WGMITM="$E2E_TMP/wgmitm-hosts"
cat >"$WGMITM" <<SH
#!/bin/sh
exec unshare -m sh -c 'mount --bind "\$0" /etc/hosts && exec "\$@"' "$E2E_TMP/hosts" "$real" "\$@"
SH
chmod +x "$WGMITM"

topology_hosts --upstream-ca "$pki/ca.pem" \
  --map-remote '|~u /to-staging/|https://www.test:8443/to-staging/|https://staging.test:9443/' \
  --map-remote '|~u /old/|/old/|/' \
  --map-remote '|~u /plain-to-staging/|http://[^/]*/plain-to-staging/|https://staging.test:9443/' \
  --map-remote '|~u /to-closed/|https://www.test:8443/to-closed/|https://staging.test:9999/' \
  --map-remote '|~u /to-loop/|https://www.test:8443/to-loop/|http://loop.test:8443/' \
  --modify-headers '|~u /headers|X-Added|from-option' \
  --block-list '|~u /blocked|403' \
  --block-list '|~u /reset|444' \
  --map-local "|/mapped/|$E2E_TMP/local.txt" \
  --network-condition 'tablet:latency=50,down=1000' \
  --dns-override 'api.staging.test=203.0.113.10' \
  --dns-override '*.wild.test=203.0.113.77,2001:db8:1::77'
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
wait_port "$HOST" 127.0.0.1 8443
serve "$HOST" python3 "$hosts" http "$www" 8080
wait_port "$HOST" 127.0.0.1 8080
serve "$HOST" node "$wsjs" server 8446 "$pki/www.pem" "$pki/www.key"
wait_port "$HOST" 127.0.0.1 8446
hveth=$(ip -n "$HOST" -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1 | head -n1)
ip -n "$HOST" addr add 203.0.113.11/24 dev "$hveth"
serve "$HOST" python3 "$hosts" https "$E2E_TMP/staging" 9443 "$pki/staging.pem" "$pki/staging.key"
wait_port "$HOST" 203.0.113.11 9443
c=(in_ns "$CLI" curl -sS --max-time 30 --cacert "$E2E_TMP/wgca.pem" --resolve "www.test:8443:$HOST4")

# Request headers: set by an option, seen by the server.
got=$("${c[@]}" "https://www.test:8443/headers")
echo "$got" | grep -q '"X-Added", "from-option"' || fail "the server did not see X-Added: $got"
say "--modify-headers: the upstream saw the header"

# Block with a status, and with a reset (444).
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "https://www.test:8443/blocked")
[ "$code" = 403 ] || fail "--block-list 403: got $code"
if "${c[@]}" -o /dev/null "https://www.test:8443/reset" 2>/dev/null; then fail "--block-list 444 did not reset"; fi
say "--block-list: 403 answered, 444 reset"

# Map local: the file, without the server.
got=$("${c[@]}" "https://www.test:8443/mapped/anything")
[ "$got" = "served from a local file" ] || fail "--map-local: got $got"
say "--map-local: answered from the file"

# Keep-alive with a local answer between two upstream requests.
out=$("${c[@]}" "https://www.test:8443/plain.txt" "https://www.test:8443/mapped/x" "https://www.test:8443/plain.txt")
[ "$(echo "$out" | grep -c 'plain text from the server')" = 2 ] && echo "$out" | grep -q 'local file' ||
  fail "keep-alive with a mock in between: $out"
say "keep-alive: upstream, mock, upstream on one connection"

# Map remote: to another server with its own certificate and name (SNI and
# Host follow), and back to the dialled one on the same connection.
got=$("${c[@]}" "https://www.test:8443/to-staging/who.txt")
[ "$got" = "served by staging" ] || fail "--map-remote to staging: got $got"
out=$("${c[@]}" "https://www.test:8443/plain.txt" "https://www.test:8443/to-staging/who.txt" \
  "https://www.test:8443/plain.txt" "https://www.test:8443/old/plain.txt")
[ "$out" = "$(printf 'plain text from the server\nserved by staging\nplain text from the server\nplain text from the server')" ] ||
  fail "keep-alive across redirects: $out"
got=$("${c[@]}" -w '%{http_code}' "https://www.test:8443/to-closed/x" | tr '\n' ' ' || true)
echo "$got" | grep -q 'cannot be reached.*9999.*refused.* 502$' || fail "redirect to a closed port: $got"
got=$("${c[@]}" -w '%{http_code}' "https://www.test:8443/to-loop/x" | tr '\n' ' ' || true)
echo "$got" | grep -q 'loop.test.*refused.* 502$' || fail "redirect to loopback was not refused: $got"
say "--map-remote: another server (SNI, Host, its certificate), back on one connection, path only; failures are 502s with the reason"

# Plain HTTP goes through the same layer.
p=(in_ns "$CLI" curl -sS --max-time 30 --resolve "www.test:8080:$HOST4")
code=$("${p[@]}" -o /dev/null -w '%{http_code}' "http://www.test:8080/blocked")
[ "$code" = 403 ] || fail "plain HTTP --block-list: got $code"
got=$("${p[@]}" "http://www.test:8080/headers")
echo "$got" | grep -q '"X-Added", "from-option"' || fail "plain HTTP: the server did not see X-Added: $got"
out=$("${p[@]}" "http://www.test:8080/mapped/x" "http://www.test:8080/plain-to-staging/who.txt" "http://www.test:8080/plain.txt")
[ "$out" = "$(printf 'served from a local file\nserved by staging\nplain text from the server')" ] ||
  fail "plain HTTP keep-alive with a mock and a redirect to HTTPS: $out"
say "plain HTTP: block, headers, map local, and map remote to an HTTPS server"

# HOME/rules.json: watched; response rules and a mock.
cat >"$HOME_DIR/rules.json" <<JSON
{"rules": [
  {"id": "resp-edit", "direction": "response", "match": "~u /user.json",
   "actions": [{"type": "set_json", "path": "user.role", "value": "admin"},
               {"type": "replace_body", "regex": "cat", "replacement": "dog"},
               {"type": "set_header", "name": "X-Rule", "value": "resp-edit"}]},
  {"id": "teapot", "direction": "response", "conditions": {"path_pattern": "^/plain"},
   "actions": [{"type": "set_status", "status": 418}]},
  {"id": "mock-api", "conditions": {"path_pattern": "^/api/", "methods": ["POST"]},
   "actions": [{"type": "mock", "status": 201, "headers": {"Content-Type": "application/json"},
                "body": "{\"mocked\": true}"}]},
  {"id": "slow", "conditions": {"path_pattern": "^/slow"},
   "actions": [{"type": "delay", "ms": 300}]},
  {"id": "narrow", "direction": "response", "conditions": {"path_pattern": "^/big"},
   "actions": [{"type": "throttle", "bytes_per_s": 100000}]},
  {"id": "ws-edit", "conditions": {"path_pattern": "^/ws-rules"},
   "actions": [{"type": "ws_replace", "regex": "secret", "replacement": "public"}]},
  {"id": "ws-drop", "direction": "response",
   "conditions": {"path_pattern": "^/ws-rules", "message_pattern": "^drop"},
   "actions": [{"type": "ws_drop"}]}
]}
JSON
wait_for 10 grep -q "rules.json: 7 rules" "$E2E_TMP/wgmitm.log" || fail "rules.json was not loaded"
got=$("${c[@]}" -D "$E2E_TMP/h.txt" "https://www.test:8443/user.json")
[ "$got" = '{"user":{"name":"dog","role":"admin"},"items":[1,2]}' ] || fail "response body edits: $got"
grep -qi '^x-rule: resp-edit' "$E2E_TMP/h.txt" || fail "response header not set"
grep -qi "^content-length: ${#got}" "$E2E_TMP/h.txt" || fail "Content-Length not fixed up: $(cat "$E2E_TMP/h.txt")"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "https://www.test:8443/plain.txt")
[ "$code" = 418 ] || fail "set_status: got $code"
got=$("${c[@]}" -w ' %{http_code}' -d x "https://www.test:8443/api/v1")
[ "$got" = '{"mocked": true} 201' ] || fail "mock: $got"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "https://www.test:8443/slow/plain.txt")
[ "$code" = 200 ] || fail "delayed request: got $code"
# A throttle: 200 kB at 100 kB/s cannot come in under a second (the
# bucket's burst is 12.5 kB); the bytes are the server's.
t=$("${c[@]}" -o "$E2E_TMP/big.out" -w '%{time_total}' "https://www.test:8443/big.bin")
cmp -s "$E2E_TMP/big.out" "$www/big.bin" || fail "throttled download differs"
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 1.0 else 1)' "$t" ||
  fail "200 kB throttled to 100 kB/s came in $t s"
say "rules.json: set_json, replace_body, set_header, set_status, mock, delay, throttle ($t s for 200 kB at 100 kB/s)"

# WebSocket messages (the server echoes; it would compress, but the offer
# is removed): the client's "secret" is edited on its way up, the echo of
# "drop me" is dropped on its way down.
in_ns "$CLI" timeout 30 node "$wsjs" rules "wss://$HOST4:8446/ws-rules" "$E2E_TMP/wgca.pem" ||
  fail "WebSocket message rules"
wait_for 10 grep -q '"action":"ws_drop"' "$HOME_DIR/flows.jsonl" || fail "no websocket record noting the drop"
grep -q '"action":"ws_replace"' "$HOME_DIR/flows.jsonl" || fail "no websocket record noting the edit"
say "WebSocket rules: a message edited and one dropped, seen by a real client, noted in the records"

# A bad rules.json keeps the running rules and names the field.
echo '[{"id": "x", "actions": [{"type": "mock", "status": 42}]}]' >"$HOME_DIR/rules.json"
wait_for 10 grep -q 'rules\[0\].actions\[0\].status' "$E2E_TMP/wgmitm.log" || fail "bad rules.json not reported"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "https://www.test:8443/plain.txt")
[ "$code" = 418 ] || fail "the running rules did not stay: $code"
say "a bad rules.json is refused with its field; the running rules stay"

# The records: the client's view, and the rules that acted.
python3 - "$HOME_DIR/flows.jsonl" <<'PY' || fail "records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
http = [r for r in recs if r["type"] == "http"]
def one(path):
    xs = [r for r in http if r["url"].endswith(path)]
    assert xs, "no record for " + path
    return xs[-1]
h = one("/headers")
assert "modify-headers-1" in h["rules"]["matched"], h.get("rules")
assert ["X-Added", "from-option"] in h["rules"]["request_headers_upstream"], h["rules"]
m = one("/mapped/anything")
assert m["rules"]["mocked_by"] == "map-local-1" and m["response"]["status"] == 200, m
u = one("/user.json")
assert u["rules"]["response_original"]["status"] == 200, u["rules"]
assert "cat" in u["rules"]["response_body_original"]["text"], u["rules"]
assert "dog" in u["response"]["body"]["text"], u["response"]
r = one("/to-staging/who.txt")
assert r["rules"]["redirected_to"] == "https://staging.test:9443/who.txt", r["rules"]
assert r["rules"]["redirected_by"] == "map-remote-1", r["rules"]
assert ["Host", "staging.test:9443"] in r["rules"]["request_headers_upstream"], r["rules"]
assert r["response"]["body"]["text"] == "served by staging\n", r["response"]
f = one("/to-closed/x")
assert "9999" in f["rules"]["redirect_error"] and f["response"]["status"] == 502, f
b = one("/blocked")
assert b["rules"]["blocked_by"] == "block-list-1" and b["response"]["status"] == 403, b
tcp = [r for r in recs if r["type"] == "tcp" and r.get("end_reason") == "rule:block"]
assert tcp and "block-list-2" in tcp[0]["error"], "no reset record"
print("records ok")
PY
say "records: rules matched, what went upstream, the original response"

# DNS overrides in the tunnel's DNS.
got=$(in_ns "$CLI" dig +short +time=3 +tries=2 @"$SRV4" api.staging.test A)
[ "$got" = 203.0.113.10 ] || fail "override: got '$got'"
got=$(in_ns "$CLI" dig +short +time=3 +tries=2 @"$SRV4" a.b.wild.test AAAA)
[ "$got" = 2001:db8:1::77 ] || fail "wildcard override: got '$got'"
got=$("${c[@]}" --resolve "api.staging.test:8443:$HOST4" -o /dev/null -w '%{http_code}' -k "https://api.staging.test:8443/plain.txt" || true)
say "DNS overrides: exact and wildcard answered"

grep -q '"end_reason":"override"' "$HOME_DIR/flows.jsonl" || fail "no DNS record with end_reason override"

# Network conditions for the device, through the API's configuration: the
# round trip gains the latency (a lower bound only: a loaded machine adds
# more), a bad value names its field, and all loss stops every packet.
api() { in_ns "$SRV" curl -sS --max-time 10 -H "Authorization: Bearer $(cat "$HOME_DIR/api-token")" "$@"; }
rtt() { in_ns "$CLI" ping -c 3 -i 0.3 -W 5 -q "$SRV4" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p'; }
got=$(api -X PATCH -d '{"network_conditions": [{"device": "phone", "latency_ms": 300, "down_kbps": 2000}]}' \
  http://127.0.0.1:8081/api/config)
echo "$got" | grep -q '"latency_ms": *300' || fail "the condition was not taken: $got"
echo "$got" | grep -q '"tablet"' && fail "the list given replaces the one from --network-condition: $got"
avg=$(rtt)
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 300 else 1)' "${avg:-0}" ||
  fail "latency 300 ms: the round trip was ${avg:-lost} ms"
got=$(api -X PATCH -d '{"network_conditions": [{"device": "phone", "loss_percent": 140}]}' \
  http://127.0.0.1:8081/api/config)
echo "$got" | grep -q 'network_conditions\[0\].loss_percent' || fail "bad condition not named: $got"
api -X PATCH -d '{"network_conditions": [{"device": "phone", "loss_percent": 100}]}' \
  http://127.0.0.1:8081/api/config >/dev/null
if in_ns "$CLI" ping -c 2 -W 1 -q "$SRV4" >/dev/null 2>&1; then fail "100 % loss let pings through"; fi
api -X PATCH -d '{"network_conditions": []}' http://127.0.0.1:8081/api/config >/dev/null
in_ns "$CLI" ping -c 1 -W 5 -q "$SRV4" >/dev/null || fail "no ping after the condition was removed"
say "network conditions: latency (round trip ${avg} ms for 300 ms), bandwidth, loss, a bad value refused, removed"
say "PASS"
