#!/usr/bin/env bash
# Replay end to end (docs/api.md, docs/flows.md): a wireguard-go peer
# makes an HTTPS request through wgmitm; it is resent as recorded and
# edited (a header set and removed, a method and a body, another URL)
# through `wgmitm replay`, the API and MCP (`wgmitm mcp` over stdio). The
# test host sees the edits, each replay is a new flow with replay_of set,
# an unreachable upstream and a refused destination are errors on the flow.
#
#   ns cli (wireguard-go, curl) ── ns srv (wgmitm run, API 127.0.0.1:8081) ── ns host (HTTPS :8443)
#   www.test -> 203.0.113.10 (curl --resolve); upstream verified with --upstream-ca
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl curl jq python3 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"

pki="$E2E_TMP/pki"
test_pki "$pki"
www="$E2E_TMP/www"
mkdir -p "$www"
topology_hosts --upstream-ca "$pki/ca.pem" --api 127.0.0.1:8081
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
wait_port "$HOST" 127.0.0.1 8443

TOKEN=$(cat "$HOME_DIR/api-token")
api() { in_ns "$SRV" curl -sS --max-time 40 -H "Authorization: Bearer $TOKEN" "$@"; }
api_url=http://127.0.0.1:8081
wg() { in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" "$@"; }
# record ID: the flow from the store, once it is there.
record() { WGMITM_HOME="$HOME_DIR" "$WGMITM" flow "$1" --json 2>/dev/null; }
stored() { record "$1" >/dev/null; }
# seen ID: the request headers the test host echoed in the flow's response.
seen() { record "$1" | jq -c '.response.body.text | fromjson | map({(.[0]): .[1]}) | add'; }

# The original: the peer asks for /headers (the host echoes what it got).
in_ns "$CLI" curl -sS --max-time 30 --cacert "$E2E_TMP/wgca.pem" \
  --resolve "www.test:8443:$HOST4" -H "X-Orig: 1" -o /dev/null "https://www.test:8443/headers"
list() { api -G "$api_url/api/flows" --data-urlencode "filter=$1" --data-urlencode limit=10; }
wait_for 10 eval '[ "$(list "~http & ~u /headers" | jq ".flows | length")" = 1 ]' ||
  fail "the original request is not in the store: $(list "~http")"
orig=$(list "~http & ~u /headers" | jq -r '.flows[0].id')
# The connection's record is written when it ends.
wait_for 10 eval '[ "$(list "~tcp & ~d www.test" | jq ".flows | length")" = 1 ]' ||
  fail "the original's connection is not in the store"
tcp_id=$(list "~tcp & ~d www.test" | jq -r '.flows[0].id')
say "original flow $orig (its connection $tcp_id)"

# check_replay ID: a new flow, linked to the original, like any http record.
check_replay() {
  wait_for 10 stored "$1" || fail "replay $1 is not in the store"
  local r; r=$(record "$1")
  [ "$(echo "$r" | jq -r .replay_of)" = "$orig" ] || fail "$1: replay_of: $(echo "$r" | jq -c .replay_of)"
  [ "$(echo "$r" | jq -r .via)" = replay ] || fail "$1: via: $(echo "$r" | jq -c .via)"
  [ "$(echo "$r" | jq -r .peer)" = phone ] || fail "$1: peer: $(echo "$r" | jq -c .peer)"
  [ "$(echo "$r" | jq -r .type)" = http ] || fail "$1: type"
  [ "$(echo "$r" | jq -r .tls.upstream.cert.verified)" = true ] ||
    fail "$1: the upstream leg was not verified with --upstream-ca: $(echo "$r" | jq -c .tls)"
}

# 1. As recorded, through the CLI.
t0=$(date +%s%N)
out=$(wg replay "$orig" --json) || fail "wgmitm replay: $out"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
r1=$(echo "$out" | jq -r .id)
[ "$(echo "$out" | jq -r .status)" = 200 ] || fail "replay as recorded: $out"
check_replay "$r1"
[ "$(seen "$r1" | jq -r '."X-Orig"')" = 1 ] || fail "the host did not get the recorded header: $(seen "$r1")"
[ "$(seen "$r1" | jq -r '.Host')" = www.test:8443 ] || fail "Host: $(seen "$r1")"
say "CLI replay as recorded: flow $r1, 200, the host saw the recorded headers (${ms} ms)"

# 2. Edited: a header set, one removed; the short summary.
out=$(wg replay "$orig" --set-header X-Replay=cli --remove-header X-Orig --timeout 30) || fail "wgmitm replay: $out"
r2=$(echo "$out" | head -n 1 | awk '{print $1}')
echo "$out" | head -n 1 | grep -q "  200  GET https://www.test:8443/headers  (replay of $orig)" ||
  fail "the summary line: $out"
check_replay "$r2"
[ "$(seen "$r2" | jq -r '."X-Replay"')" = cli ] && [ "$(seen "$r2" | jq -r '."X-Orig"')" = null ] ||
  fail "header edits: the host saw $(seen "$r2")"
[ "$(record "$r2" | jq -c .replay_edits)" = '["headers"]' ] || fail "replay_edits: $(record "$r2" | jq -c .replay_edits)"
if out=$(wg replay "$orig" --timeout 0.01 2>&1); then fail "--timeout 0.01 was taken"; fi
echo "$out" | grep -q "expected seconds" || fail "--timeout 0.01: $out"
say "CLI replay edited: X-Replay set, X-Orig removed at the host (--timeout 30; 0.01 refused)"

# 3. Another method and a body (the host answers a PUT with its sha256).
head -c 3000 /dev/urandom >"$E2E_TMP/body.bin"
want=$(sha256sum "$E2E_TMP/body.bin" | cut -d' ' -f1)
out=$(wg replay "$orig" --method PUT --body "$E2E_TMP/body.bin" --json) || fail "wgmitm replay PUT: $out"
r3=$(echo "$out" | jq -r .id)
check_replay "$r3"
r=$(record "$r3")
[ "$(echo "$r" | jq -r .method)" = PUT ] || fail "method: $(echo "$r" | jq -r .method)"
[ "$(echo "$r" | jq -r .response.body.text | tr -d '\n')" = "$want" ] ||
  fail "the host hashed another body: $(echo "$r" | jq -r .response.body.text)"
[ "$(echo "$r" | jq -r .request.body.size)" = 3000 ] || fail "request body size: $(echo "$r" | jq -c .request.body)"
say "CLI replay as PUT with a 3000-byte binary body: the host got it whole"

# 4. The API, edits as JSON, answered when the replay ended.
out=$(api -X POST -H 'Content-Type: application/json' -w '\n%{http_code}' \
  -d '{"headers": {"X-Replay": "api"}, "url": "https://www.test:8443/headers?from=api"}' \
  "$api_url/api/flows/$orig/replay")
[ "$(echo "$out" | tail -n 1)" = 201 ] || fail "API replay: $out"
r4=$(echo "$out" | head -n 1 | jq -r .id)
[ "$(echo "$out" | head -n 1 | jq -r .replay_of)" = "$orig" ] || fail "API answer: $out"
check_replay "$r4"
[ "$(seen "$r4" | jq -r '."X-Replay"')" = api ] || fail "API edit: $(seen "$r4")"
[ "$(record "$r4" | jq -r .url)" = "https://www.test:8443/headers?from=api" ] || fail "API url: $(record "$r4" | jq -r .url)"
api "$api_url/api/flows/$r4" | jq -e ".replay_of == \"$orig\"" >/dev/null || fail "GET /api/flows/$r4 has no replay_of"
say "API replay: 201 with the new flow, its URL and header edits reached the host"

# 5. MCP over stdio: resend.
printf '%s\n' \
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}' \
  "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"resend\",\"arguments\":{\"id\":\"$orig\",\"headers\":{\"X-Replay\":\"mcp\"}}}}" |
  wg mcp >"$E2E_TMP/mcp.out" 2>"$E2E_TMP/mcp.err" || fail "wgmitm mcp: $(cat "$E2E_TMP/mcp.err")"
res=$(jq -c 'select(.id == 2) | .result' "$E2E_TMP/mcp.out")
[ "$(echo "$res" | jq -r .isError)" = false ] || fail "MCP resend: $res"
r5=$(echo "$res" | jq -r .structuredContent.id)
echo "$res" | jq -r '.content[0].text' | grep -q "Resent: GET https://www.test:8443/headers -> 200; new flow $r5 (replay of $orig)" ||
  fail "MCP text: $(echo "$res" | jq -r '.content[0].text')"
check_replay "$r5"
[ "$(seen "$r5" | jq -r '."X-Replay"')" = mcp ] || fail "MCP edit: $(seen "$r5")"
say "MCP resend over stdio: flow $r5, the header reached the host"

# 6. An unreachable upstream: an error on the new flow, and exit 1.
if out=$(wg replay "$orig" --url "https://$HOST4:9/headers" 2>&1); then fail "a refused port replayed: $out"; fi
r6=$(echo "$out" | head -n 1 | awk '{print $1}')
echo "$out" | grep -q "error: upstream_refused: connect to $HOST4:9: connection refused" || fail "the refused replay said: $out"
wait_for 10 stored "$r6" || fail "the failed replay $r6 was not recorded"
r=$(record "$r6")
[ "$(echo "$r" | jq -r .end_reason)" = upstream_refused ] && [ "$(echo "$r" | jq -r .response)" = null ] &&
  [ "$(echo "$r" | jq -r .replay_of)" = "$orig" ] || fail "the failed replay's record: $r"
say "an unreachable upstream: flow $r6 says $(echo "$r" | jq -r .error)"

# 7. The tunnel's destination policy holds for an edited URL: not the
# capture host's loopback (here its own API).
if out=$(wg replay "$orig" --url "http://127.0.0.1:8081/api/status" 2>&1); then fail "loopback replayed: $out"; fi
echo "$out" | grep -q "policy:loopback" || fail "loopback replay said: $out"
say "an edited URL to loopback: refused by the policy ($(echo "$out" | tail -n 1 | cut -c1-60)...)"

# 8. What is not a request, and what is not there.
code=$(api -o "$E2E_TMP/e.json" -w '%{http_code}' -X POST "$api_url/api/flows/$tcp_id/replay")
[ "$code" = 400 ] && grep -q "not an HTTP request" "$E2E_TMP/e.json" || fail "a tcp flow: $code $(cat "$E2E_TMP/e.json")"
code=$(api -o "$E2E_TMP/e.json" -w '%{http_code}' -X POST "$api_url/api/flows/nope-1/replay")
[ "$code" = 404 ] || fail "an unknown id: $code $(cat "$E2E_TMP/e.json")"
code=$(api -o "$E2E_TMP/e.json" -w '%{http_code}' -X POST -d '{"headers": {"Content-Length": "1"}}' "$api_url/api/flows/$orig/replay")
[ "$code" = 400 ] || fail "a bad edit: $code $(cat "$E2E_TMP/e.json")"
say "errors: a tcp flow 400, an unknown id 404, a bad edit 400"

# The original is untouched; seven replays recorded, none of them a tcp flow.
[ "$(record "$orig" | jq -r .replay_of)" = null ] || fail "the original changed"
n=$(list "~http & ~d www.test" | jq '.flows | length')
[ "$n" -ge 6 ] || fail "expected the original and its replays, got $n"
kill -0 "$WGMITM_PID" || fail "wgmitm died"
say "PASS"
