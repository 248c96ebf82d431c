#!/usr/bin/env bash
# Breakpoints end to end (docs/rules.md, "Breakpoints"): a wireguard-go
# peer's HTTPS/1.1 requests are held by --intercept rules and seen in
# GET /api/held; one is released edited (the test host sees the new path
# and header), one killed (curl sees a reset, the record says why), one
# times out (breakpoint_timeout_s set through the API) and goes on as it
# was; a held response is released with another status; a WebSocket
# message from a real client is held and released edited. Then rules are
# added, disabled and removed by id through the API and through MCP
# (`wgmitm mcp` on stdio).
#
#   ns cli (wireguard-go, curl) ── ns srv (wgmitm run, API 127.0.0.1:8081) ── ns host (HTTPS :8443)
#   www.test -> 203.0.113.10 (curl --resolve)
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl python3 jq; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
here=$(cd "$(dirname "$0")" && pwd)

pki="$E2E_TMP/pki"
test_pki "$pki"
www="$E2E_TMP/www"
mkdir -p "$www"
printf 'plain text from the server\n' >"$www/plain.txt"

topology_hosts --upstream-ca "$pki/ca.pem" --intercept '~u /bp/' --intercept '~s & ~u /rbp/'
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
serve "$HOST" python3 "$here/hosts.py" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
wait_port "$HOST" 127.0.0.1 8443
c=(in_ns "$CLI" curl -sS --max-time 60 --cacert "$E2E_TMP/wgca.pem" --resolve "www.test:8443:$HOST4")
TOKEN=$(cat "$HOME_DIR/api-token")
api() { in_ns "$SRV" curl -sS --max-time 10 -H "Authorization: Bearer $TOKEN" "$@"; }
A=http://127.0.0.1:8081

# held_count N: the API lists N held items now (for wait_for).
held_count() { [ "$(api "$A/api/held" | jq .count)" = "$1" ]; }
held_id() { api "$A/api/held" | jq -r ".held[] | select(.url | test(\"$1\")) | .id"; }

events=false
if command -v node >/dev/null 2>&1 && [ -d /usr/share/nodejs/ws ]; then
  in_ns "$SRV" env NODE_PATH=/usr/share/nodejs node "$here/events.js" \
    "ws://127.0.0.1:8081/api/events" "$TOKEN" 8 60 held >"$E2E_TMP/events.out" 2>"$E2E_TMP/events.err" &
  events_pid=$!
  wait_for 10 grep -q subscribed "$E2E_TMP/events.out" || fail "events: $(cat "$E2E_TMP/events.err")"
  events=true
fi

# 1. Held, seen in the list, released edited: another path, a new header.
"${c[@]}" "https://www.test:8443/bp/one" >"$E2E_TMP/one.out" 2>&1 &
one=$!
wait_for 10 held_count 1 || fail "the request was not held: $(api "$A/api/held")"
item=$(api "$A/api/held" | jq -c '.held[0]')
[ "$(echo "$item" | jq -r .url)" = "https://www.test:8443/bp/one" ] || fail "held item: $item"
[ "$(echo "$item" | jq -r '.phase + " " + .method + " " + .rule + " " + .proto')" = "request GET intercept-1 http/1.1" ] ||
  fail "held item: $item"
echo "$item" | jq -e '.peer == "phone" and (.deadline | length) > 0 and (.conn | length) > 0' >/dev/null || fail "held item: $item"
sleep 1
kill -0 "$one" 2>/dev/null || fail "curl did not wait for the held request: $(cat "$E2E_TMP/one.out")"
id=$(echo "$item" | jq .id)
out=$(api -X POST "$A/api/held/$id/release" -d '{"path": "/headers", "set_headers": {"X-Edited": "by the breakpoint"}}')
echo "$out" | jq -e '.edited == true' >/dev/null || fail "release: $out"
wait "$one" || fail "curl after the release: $(cat "$E2E_TMP/one.out")"
grep -q '"X-Edited", "by the breakpoint"' "$E2E_TMP/one.out" || fail "the server did not see the edits: $(cat "$E2E_TMP/one.out")"
held_count 0 || fail "still held after the release"
out=$(api -X POST "$A/api/held/$id/release")
echo "$out" | jq -e '.error.status == 404' >/dev/null || fail "a second release: $out"
say "held, listed, released edited: the server saw /headers with X-Edited"

# 2. Killed: the client gets a reset; the record says so.
"${c[@]}" "https://www.test:8443/bp/two" >"$E2E_TMP/two.out" 2>&1 &
two=$!
wait_for 10 held_count 1 || fail "the second request was not held"
out=$(api -X POST "$A/api/held/$(held_id /bp/two)/kill")
echo "$out" | jq -e '.killed > 0' >/dev/null || fail "kill: $out"
if wait "$two"; then fail "curl succeeded after a kill: $(cat "$E2E_TMP/two.out")"; fi
wait_for 10 grep -q '"end_reason":"rule:breakpoint_killed"' "$HOME_DIR/flows.jsonl" ||
  fail "no tcp record ended by the kill"
say "killed: curl saw $(tail -c 80 "$E2E_TMP/two.out" | tr '\n' ' '); the tcp record ends rule:breakpoint_killed"

# 3. A timeout set through the configuration: released as it was.
out=$(api -X PATCH "$A/api/config" -d '{"breakpoint_timeout_s": 2}')
[ "$(echo "$out" | jq .breakpoint_timeout_s)" = 2 ] || fail "breakpoint_timeout_s: $out"
t0=$(date +%s%N)
got=$("${c[@]}" "https://www.test:8443/bp/plain.txt")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$got" = "plain text from the server" ] || fail "after the timeout: $got"
[ "$ms" -ge 1900 ] || fail "released after $ms ms, before the 2 s timeout"
say "timed out after $ms ms (breakpoint_timeout_s 2) and went on as it was"

# 4. A held response, released with another status.
"${c[@]}" -o /dev/null -w '%{http_code}' "https://www.test:8443/rbp/plain.txt" >"$E2E_TMP/four.out" 2>&1 &
four=$!
wait_for 10 held_count 1 || fail "the response was not held"
item=$(api "$A/api/held" | jq -c '.held[0]')
echo "$item" | jq -e '.phase == "response" and .status == 200 and .body.text == "plain text from the server\n"' >/dev/null ||
  fail "held response: $item"
out=$(api -X POST "$A/api/held/$(echo "$item" | jq .id)/release" -d '{"status": 299, "set_headers": {"X-B": "1"}}')
wait "$four" || fail "curl after the response's release: $(cat "$E2E_TMP/four.out")"
[ "$(cat "$E2E_TMP/four.out")" = 299 ] || fail "the edited status: $(cat "$E2E_TMP/four.out")"
out=$(api -X POST "$A/api/held/1/release" -d '{"status": 1}')
echo "$out" | jq -e '.error.status == 404' >/dev/null || fail "an unknown id: $out"
say "a held response released with status 299"

if $events; then
  wait "$events_pid" || fail "held events: $(cat "$E2E_TMP/events.err") $(cat "$E2E_TMP/events.out")"
  for e in "held request https://www.test:8443/bp/one" "released request https://www.test:8443/bp/one" \
    "killed request https://www.test:8443/bp/two" "timeout request https://www.test:8443/bp/plain.txt" \
    "released response https://www.test:8443/rbp/plain.txt"; do
    grep -qx "$e" "$E2E_TMP/events.out" || fail "no event \"$e\": $(cat "$E2E_TMP/events.out")"
  done
  say "held, released, killed and timeout events on /api/events"
fi

# 5. HTTP/2: a stream held and released edited while another stream of the
# same connection goes on.
api -X PATCH "$A/api/config" -d '{"breakpoint_timeout_s": 60}' >/dev/null
printf 'another file\n' >"$www/other.txt"
serve "$HOST" nghttpd -d "$www" 8444 "$pki/www.key" "$pki/www.pem"
wait_port "$HOST" 127.0.0.1 8444
"${c[@]}" --resolve "www.test:8444:$HOST4" --http2 --parallel -o "$E2E_TMP/h2a.out" \
  "https://www.test:8444/bp/h2.txt" -o "$E2E_TMP/h2b.out" "https://www.test:8444/plain.txt" 2>"$E2E_TMP/h2.err" &
h2=$!
wait_for 10 held_count 1 || fail "the HTTP/2 request was not held: $(cat "$E2E_TMP/h2.err")"
item=$(api "$A/api/held" | jq -c '.held[0]')
echo "$item" | jq -e '.proto == "h2" and .phase == "request" and .stream > 0' >/dev/null || fail "held h2 item: $item"
wait_for 10 grep -q "plain text" "$E2E_TMP/h2b.out" || fail "the other stream waited for the held one"
kill -0 "$h2" 2>/dev/null || fail "curl did not wait for the held stream"
api -X POST "$A/api/held/$(echo "$item" | jq .id)/release" -d '{"path": "/other.txt"}' >/dev/null
wait "$h2" || fail "curl --http2: $(cat "$E2E_TMP/h2.err")"
[ "$(cat "$E2E_TMP/h2a.out")" = "another file" ] || fail "the edited stream got: $(cat "$E2E_TMP/h2a.out")"
wait_for 10 python3 - "$HOME_DIR/flows.jsonl" <<'PY' || fail "the HTTP/2 records: $(grep -c 8444 "$HOME_DIR/flows.jsonl")"
import json, sys
h = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "http" and ":8444/" in r["url"]]
assert len(h) == 2 and all(r["http_version"] == "HTTP/2" for r in h), h
assert h[0]["conn"] == h[1]["conn"], "not one connection"
bp = [r for r in h if "/bp/h2.txt" in r["url"]][0]
assert bp["rules"]["request_breakpoint"] == "edited", bp["rules"]
PY
say "HTTP/2: one stream held and released edited while the other of its connection finished"

# 5b. WebSocket: a client's message held by a ws_breakpoint rule (added
# through the API), the message after it waiting behind it, released with
# another text; the echo server answers both in order.
if command -v node >/dev/null 2>&1 && [ -d /usr/share/nodejs/ws ]; then
  serve "$HOST" env NODE_PATH=/usr/share/nodejs node "$here/ws.js" server 8446 "$pki/www.pem" "$pki/www.key"
  wait_port "$HOST" 127.0.0.1 8446
  out=$(api -X POST "$A/api/rules" -d '{"id": "ws-bp", "conditions": {"path_pattern": "^/ws-bp", "message_pattern": "hold"}, "actions": [{"type": "ws_breakpoint"}]}')
  [ "$(echo "$out" | jq -r .id)" = ws-bp ] || fail "POST /api/rules (ws_breakpoint): $out"
  in_ns "$CLI" env NODE_PATH=/usr/share/nodejs timeout 60 node "$here/ws.js" expect "wss://$HOST4:8446/ws-bp" \
    "$E2E_TMP/wgca.pem" '["please hold", "after"]' '["edited by the API", "after"]' >"$E2E_TMP/ws.out" 2>&1 &
  wsc=$!
  wait_for 10 held_count 1 || fail "the WebSocket message was not held: $(cat "$E2E_TMP/ws.out")"
  item=$(api "$A/api/held" | jq -c '.held[0]')
  echo "$item" | jq -e '.proto == "websocket" and .phase == "request" and .body.text == "please hold" and .rule == "ws-bp"' \
    >/dev/null || fail "held WebSocket item: $item"
  sleep 1
  kill -0 "$wsc" 2>/dev/null || fail "the client did not wait: $(cat "$E2E_TMP/ws.out")"
  out=$(api -X POST "$A/api/held/$(echo "$item" | jq .id)/release" -d '{"body": "edited by the API"}')
  echo "$out" | jq -e '.edited == true' >/dev/null || fail "WebSocket release: $out"
  wait "$wsc" || fail "the WebSocket client after the release: $(cat "$E2E_TMP/ws.out")"
  api -X DELETE "$A/api/rules/ws-bp" | jq -e '.removed == "ws-bp"' >/dev/null || fail "DELETE ws-bp"
  say "WebSocket: a message held (proto websocket), the next one behind it, released edited"
fi

# 6. Rules by id: added (the server sees its header), disabled, removed;
# bad ones refused with the field, the running rules kept.
hdr() { "${c[@]}" "https://www.test:8443/headers"; }
out=$(api -X POST "$A/api/rules" -d '{"id": "api-hdr", "match": "~u /headers", "actions": [{"type": "set_header", "name": "X-Api", "value": "1"}]}')
[ "$(echo "$out" | jq -r .id)" = api-hdr ] || fail "POST /api/rules: $out"
hdr | grep -q '"X-Api", "1"' || fail "the added rule did not apply: $(hdr)"
api "$A/api/config" | jq -e '.intercept_rules | map(.id) | index("api-hdr") != null' >/dev/null || fail "not in intercept_rules"
out=$(api -X POST "$A/api/rules" -d '{"id": "bad", "actions": [{"type": "mock", "status": 42}]}')
[ "$(echo "$out" | jq -r .error.field)" = "rule.actions[0].status" ] || fail "a bad rule: $out"
out=$(api -X POST "$A/api/rules" -d '{"id": "intercept-1"}')
echo "$out" | jq -e '.error.status == 409' >/dev/null || fail "a clashing id: $out"
out=$(api -X PATCH "$A/api/rules/api-hdr" -d '{"actions": [{"type": "set_header", "name": "X-Api", "value": 2}]}')
echo "$out" | jq -e '.error.field | startswith("rule.actions[0]")' >/dev/null || fail "a bad patch: $out"
hdr | grep -q '"X-Api", "1"' || fail "the running rule changed after a bad patch"
out=$(api -X PATCH "$A/api/rules/api-hdr" -d '{"enabled": false}')
echo "$out" | jq -e '.enabled == false' >/dev/null || fail "PATCH: $out"
if hdr | grep -q X-Api; then fail "a disabled rule applied"; fi
out=$(api -X PATCH "$A/api/rules/intercept-2" -d '{"enabled": false}')
echo "$out" | jq -e '.error.status == 409' >/dev/null || fail "patching an option's rule: $out"
api -X DELETE "$A/api/rules/api-hdr" | jq -e '.removed == "api-hdr"' >/dev/null || fail "DELETE"
api "$A/api/rules/api-hdr" | jq -e '.error.status == 404' >/dev/null || fail "still there after DELETE"
[ "$(api "$A/api/rules" | jq -r '[.rules[].id] | join(",")')" = "intercept-1,intercept-2" ] ||
  fail "rules left: $(api "$A/api/rules")"
say "rules by id: added, refused with the field, disabled, removed"

# 7. The same through MCP.
out=$(in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" python3 "$here/mcp_stdio.py" "$WGMITM" \
  'add_rule={"rule": {"id": "mcp-hdr", "match": "~u /headers", "actions": [{"type": "set_header", "name": "X-Mcp", "value": "yes"}]}}' \
  'list_rules=' 'add_rule={"rule": {"id": "mcp-bad", "direction": "up"}}' 'list_held=')
echo "$out" | sed -n 1p | grep -q mcp-hdr || fail "MCP add_rule: $out"
echo "$out" | sed -n 2p | grep -q '"mcp-hdr"' || fail "MCP list_rules: $out"
echo "$out" | sed -n 3p | grep -q '^ERROR rule.direction' || fail "MCP add_rule of a bad rule: $out"
echo "$out" | sed -n 4p | grep -q '"count": 0' || fail "MCP list_held: $out"
hdr | grep -q '"X-Mcp", "yes"' || fail "the MCP rule did not apply"
"${c[@]}" "https://www.test:8443/bp/mcp" >"$E2E_TMP/mcp.out" 2>&1 &
mcpc=$!
wait_for 10 held_count 1 || fail "not held for MCP"
out=$(in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" python3 "$here/mcp_stdio.py" "$WGMITM" \
  "release={\"id\": $(held_id /bp/mcp), \"edits\": {\"path\": \"/plain.txt\"}}" 'remove_rule={"id": "mcp-hdr"}')
echo "$out" | sed -n 1p | grep -q '"edited": true' || fail "MCP release: $out"
wait "$mcpc" || fail "curl after the MCP release"
[ "$(cat "$E2E_TMP/mcp.out")" = "plain text from the server" ] || fail "after the MCP release: $(cat "$E2E_TMP/mcp.out")"
if hdr | grep -q X-Mcp; then fail "MCP remove_rule left the rule"; fi
say "MCP: add_rule, list_rules, a bad rule refused, list_held, release edited, remove_rule"
