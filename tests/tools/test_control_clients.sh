#!/usr/bin/env bash
# The control server (tests/tools/control_demo) against real clients: curl
# for HTTP/1.1 (keep-alive, uploads with --data-binary, a chunked download,
# an asynchronous answer, the login cookie, the refusals) and Node's ws
# package for WebSocket (control_ws.js). Skips (77) without curl or node.
set -euo pipefail
build=${WGMITM_BUILD_DIR:?}
src=${WGMITM_SOURCE_DIR:?}
demo=$build/tests/control_demo
command -v curl >/dev/null || { echo "skip: curl not installed"; exit 77; }
if ! command -v node >/dev/null || [ ! -e /usr/share/nodejs/ws/index.js ]; then
  echo "skip: node or node-ws not installed"; exit 77
fi

tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  echo "--- server log:" >&2
  cat "$tmp/err" >&2 || true
  exit 1
}

mkdir "$tmp/home"
# stdin stays open for the server's lifetime (it stops when it closes).
"$demo" "$tmp/home" >"$tmp/out" 2>"$tmp/err" < <(sleep 110) &
pid=$!
for _ in $(seq 100); do
  grep -q '^ready' "$tmp/out" 2>/dev/null && break
  sleep 0.05
done
grep -q '^ready' "$tmp/out" || fail "the server did not start"
port=$(awk '$1 == "port" { print $2 }' "$tmp/out")
token=$(awk '$1 == "token" { print $2 }' "$tmp/out")
[ "$(stat -c %a "$tmp/home/api-token")" = 600 ] || fail "api-token is not 0600"
[ "$(cat "$tmp/home/api-token")" = "$token" ] || fail "api-token does not hold the token"
base=http://127.0.0.1:$port
c() { curl -sS --max-time 20 -H "Authorization: Bearer $token" "$@"; }

# Keep-alive: three requests, one connection.
out=$(c -w '%{http_code} %{num_connects}\n' -o /dev/null "$base/hello" -o /dev/null \
  "$base/echo/a?b=c" -o /dev/null "$base/async")
[ "$out" = $'200 1\n200 0\n200 0' ] || fail "keep-alive: $out"

# Query decoding and path parameters.
out=$(c "$base/echo/x%20y?q=a+b%26c&e=")
[ "$out" = '{"id":"x y","method":"GET","query":{"q":"a b&c","e":""},"user_agent":"curl/'"$(curl -V | awk 'NR==1{print $2}')"'"}' ] ||
  fail "echo: $out"

# Uploads: under the 1 MiB bound (curl asks Expect: 100-continue past
# 1 MiB on its own), and over it.
head -c 1000000 /dev/urandom >"$tmp/blob"
want=$(sha256sum "$tmp/blob" | cut -d' ' -f1)
out=$(c --data-binary "@$tmp/blob" "$base/upload")
[ "$out" = "{\"bytes\":1000000,\"sha256\":\"$want\"}" ] || fail "upload: $out"
out=$(c -H 'Expect: 100-continue' --data-binary "@$tmp/blob" "$base/upload")
[ "$out" = "{\"bytes\":1000000,\"sha256\":\"$want\"}" ] || fail "upload with 100-continue: $out"
head -c 3000000 /dev/urandom >"$tmp/big"
code=$(c -o "$tmp/resp" -w '%{http_code}' --data-binary "@$tmp/big" "$base/upload" || true)
[ "$code" = 413 ] || fail "3 MB upload: $code"
grep -q '"status":413' "$tmp/resp" || fail "413 body: $(cat "$tmp/resp")"

# A chunked download of 200,000 lines, whole and in order.
c "$base/stream?n=200000" >"$tmp/lines"
[ "$(wc -l <"$tmp/lines")" = 200000 ] || fail "stream: $(wc -l <"$tmp/lines") lines"
[ "$(tail -n1 "$tmp/lines")" = "line 199999" ] || fail "stream end: $(tail -n1 "$tmp/lines")"
seq 0 199999 | sed 's/^/line /' | cmp -s - "$tmp/lines" || fail "stream content"
# The same, read at 2 MB/s: the server waits for the reader.
c --limit-rate 2M "$base/stream?n=100000" | wc -l | grep -qx 100000 || fail "slow stream"

# HEAD and 404/405.
out=$(c -I "$base/hello" | tr -d '\r' | grep -i '^content-length')
[ "$out" = "Content-Length: 17" ] || fail "HEAD: $out"
[ "$(c -o /dev/null -w '%{http_code}' "$base/nothing")" = 404 ] || fail 404
[ "$(c -o /dev/null -w '%{http_code}' -X DELETE "$base/hello")" = 405 ] || fail 405

# Refusals: no token, a wrong one, DNS rebinding, another origin.
code=$(curl -sS -o "$tmp/resp" -w '%{http_code}' "$base/hello")
[ "$code" = 401 ] || fail "no token: $code"
grep -q 'api-token' "$tmp/resp" || fail "401 should name the token file: $(cat "$tmp/resp")"
[ "$(curl -sS -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer x' "$base/hello")" = 401 ] ||
  fail "wrong token"
[ "$(c -o /dev/null -w '%{http_code}' -H 'Host: evil.example' "$base/hello")" = 421 ] ||
  fail "rebinding"
[ "$(c -o /dev/null -w '%{http_code}' -H 'Origin: http://evil.example' "$base/hello")" = 403 ] ||
  fail "cross-origin"

# The login link sets the cookie; the cookie then opens the API.
code=$(curl -sS -c "$tmp/jar" -o /dev/null -w '%{http_code}' "$base/login?token=$token")
[ "$code" = 303 ] || fail "login: $code"
grep -q "wgmitm_token.$token" "$tmp/jar" || fail "no cookie in the jar"
grep -q '^#HttpOnly_127.0.0.1' "$tmp/jar" || fail "the cookie is not HttpOnly"
[ "$(curl -sS -b "$tmp/jar" "$base/hello")" = '{"hello":"world"}' ] || fail "cookie"

# WebSocket with Node's ws.
timeout 30 node "$src/tests/tools/control_ws.js" "$port" "$token" || fail "ws"

kill -TERM "$pid"
wait "$pid" || fail "the server exited with $?"
pid=
grep -q 'WebSocket closed: 4000' "$tmp/err" || fail "on_close 4000 not seen"
echo "control clients: ok"
