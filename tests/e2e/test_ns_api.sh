#!/usr/bin/env bash
# The control plane end to end: a peer browses through the tunnel; its
# flows appear in the API (filters selecting exactly the right ones), in
# the live WebSocket and in `wgmitm flows`; the peer cannot reach the API
# at any address of the capture host; a configuration change applies at
# once and survives a restart; kill -9 under traffic loses nothing that
# reached the log; the official MCP SDK drives `wgmitm mcp` and /mcp.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm, API on 0.0.0.0:8081) ── ns host (HTTP)
source "$(dirname "$0")/lib.sh"
require_root
here=$(cd "$(dirname "$0")" && pwd)
node_modules="$here/../node/node_modules"
for tool in node curl jq; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
[ -d "$node_modules/@modelcontextprotocol/sdk" ] || {
  [ "${CI:-}" = true ] && fail "needs the MCP SDK (scripts/setup installs it)"
  say "SKIP: needs the MCP SDK in tests/node (scripts/setup installs it)"; exit 77; }

# The API on every address of srv, and its port also offered as a host
# port: neither may let a peer in.
topology_hosts --api 0.0.0.0:8081 --allow-host-port 8081
www="$E2E_TMP/www"
mkdir -p "$www"
printf 'hello\n' >"$www/hello.txt"
printf '{"user": "alice"}\n' >"$www/user.json"
serve "$HOST" python3 "$here/hosts.py" http "$www" 8080
wait_port "$HOST" 127.0.0.1 8080

TOKEN=$(cat "$HOME_DIR/api-token")
api() { in_ns "$SRV" curl -sS --max-time 10 -H "Authorization: Bearer $TOKEN" "$@"; }
api_url=http://127.0.0.1:8081
c=(in_ns "$CLI" curl -sS --max-time 10 -o /dev/null)

# Live events first: a subscriber for this host's 404s.
in_ns "$SRV" env NODE_PATH=/usr/share/nodejs node "$here/events.js" \
  "ws://127.0.0.1:8081/api/events?filter=~d%20$HOST4%20%26%20~c%20404" "$TOKEN" 2 20 \
  >"$E2E_TMP/events.out" 2>"$E2E_TMP/events.err" &
events_pid=$!
in_ns "$SRV" env NODE_PATH=/usr/share/nodejs node "$here/events.js" \
  "ws://127.0.0.1:8081/api/events?filter=~tcp%20%26%20~d%20$HOST4&starts=1" "$TOKEN" 6 20 flow_start \
  >"$E2E_TMP/starts.out" 2>"$E2E_TMP/starts.err" &
starts_pid=$!
wait_for 10 grep -q subscribed "$E2E_TMP/events.out" || fail "the events WebSocket did not subscribe: $(cat "$E2E_TMP/events.err")"
wait_for 10 grep -q subscribed "$E2E_TMP/starts.out" || fail "the starts WebSocket did not subscribe: $(cat "$E2E_TMP/starts.err")"

# The peer browses: 3 GETs that succeed, 2 that miss, 1 POST.
t0=$(date +%s%N)
for p in hello.txt user.json hello.txt; do "${c[@]}" "http://$HOST4:8080/$p"; done
for p in missing1 missing2; do "${c[@]}" "http://$HOST4:8080/$p"; done
"${c[@]}" --data-binary "name=bob" "http://$HOST4:8080/form"

count() { api -G "$api_url/api/flows" --data-urlencode "filter=$1" --data-urlencode limit=1000 | jq '.flows | length'; }
# has FILTER N: the API lists N flows for FILTER now (for wait_for).
has() { [ "$(count "$1")" = "$2" ]; }
wait_for 10 has "~http & ~d $HOST4" 6 || fail "the API shows $(count "~http & ~d $HOST4") of the 6 exchanges"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
say "6 exchanges in the API ${ms} ms after the first request"
wait "$events_pid" || fail "live events: $(cat "$E2E_TMP/events.err")"
[ "$(grep -c missing "$E2E_TMP/events.out")" = 2 ] || fail "live events: $(cat "$E2E_TMP/events.out")"
wait "$starts_pid" || fail "flow_start events: $(cat "$E2E_TMP/starts.err")"
say "live events: exactly the two 404s, filtered on the server; a flow_start for each of the 6 connections"

# Filters select exactly the right flows.
check() { local got; got=$(count "$1"); [ "$got" = "$2" ] || fail "filter '$1': $got flows, want $2"; }
check "~c 404 & ~d $HOST4" 2
check "~c 200 & ~d $HOST4" 4
check "~m POST & ~d $HOST4" 1
check "~u user\\.json" 1
check "hello.txt" 2
check "~bq name=bob" 1
check "~d $HOST4 & ~http & !~c 200" 2
check "~tcp & ~d $HOST4" 6
check "~peer phone & ~http & ~d $HOST4" 6
check "~d $HOST4 & (~c 404 | ~m POST)" 3
err=$(api -G "$api_url/api/flows" --data-urlencode "filter=~c 404 & (~m GET")
[ "$(echo "$err" | jq -r .error.column)" -gt 0 ] || fail "a syntax error without a column: $err"
say "filters: status, method, URL, bare word, body, negation, grouping; errors point at their column"

# One flow, its body, paging.
id=$(api -G "$api_url/api/flows" --data-urlencode "filter=~u user\\.json" | jq -r '.flows[0].id')
api "$api_url/api/flows/$id" | jq -e '.response.status == 200' >/dev/null || fail "GET /api/flows/$id"
[ "$(api "$api_url/api/flows/$id/response/body?decode=1")" = '{"user": "alice"}' ] || fail "the response body"
page1=$(api "$api_url/api/flows?limit=2")
cur=$(echo "$page1" | jq -r .next_cursor)
page2=$(api "$api_url/api/flows?limit=2&cursor=$cur")
[ "$(echo "$page1 $page2" | jq -s '[.[].flows[].id] | unique | length')" = 4 ] || fail "paging repeats flows"
in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" flows "~c 404" >"$E2E_TMP/cli.out"
[ "$(grep -c missing "$E2E_TMP/cli.out")" = 2 ] || fail "wgmitm flows: $(cat "$E2E_TMP/cli.out")"
in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" flow "$id" | grep -q '"user": "alice"' || fail "wgmitm flow $id"
in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" timeout 30 "$WGMITM" flows --follow --json '~u followed' \
  >"$E2E_TMP/follow.out" 2>&1 &
follow_pid=$!
sleep 0.5
"${c[@]}" "http://$HOST4:8080/hello.txt?followed=1"
wait_for 10 grep -q 'followed=1' "$E2E_TMP/follow.out" || fail "wgmitm flows --follow: $(cat "$E2E_TMP/follow.out")"
kill "$follow_pid" 2>/dev/null || true
say "one flow, its body, keyset paging, wgmitm flows (and --follow) and wgmitm flow"

# The API is not for peers: not at the tunnel address (even as a host
# port), not at the capture host's own address behind the tunnel (srv's
# 203.0.113.1), and without the token not at all.
for target in "$SRV4" 203.0.113.1 "[$SRV6]"; do
  if in_ns "$CLI" curl -sS --max-time 5 -o /dev/null "http://$target:8081/api/status" 2>/dev/null; then
    fail "a peer reached the API at $target"
  fi
done
code=$(in_ns "$SRV" curl -s -o /dev/null -w '%{http_code}' "$api_url/api/status")
[ "$code" = 401 ] || fail "no token: HTTP $code"
code=$(in_ns "$SRV" curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H "Host: evil.example" "$api_url/api/status")
[ "$code" = 421 ] || fail "a rebinding Host: HTTP $code"
own_service() {
  api -G "$api_url/api/flows" --data-urlencode "filter=~tcp & ~dst :8081" |
    jq -e '[.flows[] | select(.end_reason == "policy:own_service")] | length == 2' >/dev/null
}
wait_for 10 own_service || fail "no policy:own_service records for the peer's attempts"
say "the API: refused to peers at every address (recorded as policy:own_service), 401 without the token, 421 for a foreign Host"

# Configuration: exclude a path from the capture; it applies at once.
api -d '{"capture_scope": {"excludes": {"add": ["~u secret"]}}, "tls_passthrough": {"add": ["*.pinned.test"]}}' \
  "$api_url/api/config/configure" | jq -e '.capture_scope.excludes == ["~u secret"]' >/dev/null || fail "configure"
bad=$(api -d '{"max_connections": "many"}' "$api_url/api/config/configure")
[ "$(echo "$bad" | jq -r .error.field)" = max_connections ] || fail "a bad value: $bad"
"${c[@]}" "http://$HOST4:8080/secret.txt"
"${c[@]}" "http://$HOST4:8080/hello.txt?after=config"
wait_for 10 has "~u after=config" 1 || fail "the request after the change is missing"
[ "$(count "~u secret")" = 0 ] || fail "an excluded request was recorded"
say "capture_scope excludes apply at once; a bad value is refused naming its field"

# kill -9 under traffic, then a restart: every logged line is in the store,
# and the configuration came back.
in_ns "$CLI" bash -c "for i in \$(seq 1 200); do curl -s -o /dev/null --max-time 2 http://$HOST4:8080/hello.txt?load=\$i; done" &
load_pid=$!
sleep 1
kill -9 "$WGMITM_PID"
kill "$load_pid" 2>/dev/null || true
wait "$load_pid" 2>/dev/null || true
wait "$WGMITM_PID" 2>/dev/null || true
logged=$(python3 - "$HOME_DIR/flows.jsonl" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1], "rb"):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    n += 1
print(n)
PY
)
start_wgmitm "$SRV" "$HOME_DIR" --api 0.0.0.0:8081
TOKEN=$(cat "$HOME_DIR/api-token")
stored() { api "$api_url/api/status" | jq -r '.store.flows // 0'; }
caught_up() { [ "$(stored)" -ge "$logged" ]; }
wait_for 20 caught_up || fail "after kill -9: $(stored) flows stored of $logged logged"
api "$api_url/api/config" | jq -e '.capture_scope.excludes == ["~u secret"] and (.tls_passthrough | index("*.pinned.test"))' >/dev/null ||
  fail "the configuration did not survive the restart"
say "kill -9 under traffic: all $logged logged flows in the store after the restart; the configuration kept"

# The official MCP SDK over stdio and streamable HTTP.
in_ns "$SRV" node "$here/../node/mcp_client.mjs" stdio "$WGMITM" "$HOME_DIR" "$HOST4" \
  >"$E2E_TMP/mcp-stdio.out" 2>&1 || fail "MCP over stdio: $(tail -5 "$E2E_TMP/mcp-stdio.out")"
in_ns "$SRV" node "$here/../node/mcp_client.mjs" http "$api_url/mcp" "$TOKEN" "$HOST4" \
  >"$E2E_TMP/mcp-http.out" 2>&1 || fail "MCP over HTTP: $(tail -5 "$E2E_TMP/mcp-http.out")"
say "MCP SDK (stdio and HTTP): tools listed, flows listed, searched and read, a peer added and removed"
say "PASS"
