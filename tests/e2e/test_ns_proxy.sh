#!/usr/bin/env bash
# The HTTP proxy and SOCKS5 listeners end to end: curl, Python and Node
# clients on the capture host's loopback reach test hosts through
# `run --http-proxy` and `--socks5` (one port for both), HTTPS intercepted
# with wgmitm's CA, plain HTTP in absolute form, names resolved by wgmitm;
# errors as the protocols say (502 with the reason, 403 for the policy,
# 407 and SOCKS auth failures for credentials); records carry `via` and
# `user`.
#
#   ns srv (wgmitm, the clients) ── ns host (HTTP and HTTPS servers)
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl curl node python3; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"

pki="$E2E_TMP/pki"
test_pki "$pki"
SRV=$(netns_add wgm-srv)
HOST=$(netns_add wgm-host)
veth_pair "$SRV" 203.0.113.1/24 "$HOST" 203.0.113.10/24 2001:db8:1::1/64 2001:db8:1::10/64 >/dev/null
# Names the endpoint resolves: this test runs in a mount namespace of its own.
printf '127.0.0.1 localhost\n203.0.113.10 www.test\n' >"$E2E_TMP/hosts"
mount --bind "$E2E_TMP/hosts" /etc/hosts

www="$E2E_TMP/www"
mkdir -p "$www"
printf '{"hello": "proxy"}\n' >"$www/hello.json"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
serve "$HOST" python3 "$hosts" http "$www" 8080
wait_port "$HOST" 127.0.0.1 8443
wait_port "$HOST" 127.0.0.1 8080

HOME_DIR="$E2E_TMP/home"
P=18080
start_wgmitm "$SRV" "$HOME_DIR" --listen 127.0.0.1:0 --api 127.0.0.1:18090 \
  --upstream-ca "$pki/ca.pem" --http-proxy $P --socks5 127.0.0.1:$P
wait_for 10 grep -q "HTTP proxy and SOCKS5 on 127.0.0.1:$P" "$E2E_TMP/wgmitm.log" ||
  fail "the listener did not start"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
want='{"hello": "proxy"}'
c=(in_ns "$SRV" curl -sS --max-time 20 --cacert "$E2E_TMP/wgca.pem")

# HTTP proxy: CONNECT to a name (HTTPS intercepted), absolute-form HTTP.
got=$("${c[@]}" -x "http://127.0.0.1:$P" https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "HTTPS through the HTTP proxy: got '$got'"
got=$("${c[@]}" -x "http://127.0.0.1:$P" http://www.test:8080/hello.json)
[ "$got" = "$want" ] || fail "HTTP through the HTTP proxy: got '$got'"
got=$("${c[@]}" -x "http://127.0.0.1:$P" -H "Host: www.test" "http://[2001:db8:1::10]:8080/hello.json")
[ "$got" = "$want" ] || fail "HTTP to an IPv6 address through the HTTP proxy: got '$got'"
say "HTTP proxy: CONNECT with HTTPS intercepted, absolute-form HTTP, IPv6"

# SOCKS5 on the same port: a name, IPv4, IPv6.
got=$("${c[@]}" -x "socks5h://127.0.0.1:$P" https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "SOCKS5 with a name: got '$got'"
got=$("${c[@]}" -x "socks5://127.0.0.1:$P" https://203.0.113.10:8443/hello.json)
[ "$got" = "$want" ] || fail "SOCKS5 with IPv4: got '$got'"
got=$("${c[@]}" -x "socks5://127.0.0.1:$P" "https://[2001:db8:1::10]:8443/hello.json")
[ "$got" = "$want" ] || fail "SOCKS5 with IPv6: got '$got'"
say "SOCKS5 on the same port: names, IPv4, IPv6"

# Python and Node, each with its own client code.
got=$(in_ns "$SRV" python3 - "$P" "$E2E_TMP/wgca.pem" <<'PY'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
proxy = urllib.request.ProxyHandler({"https": "http://127.0.0.1:%s" % sys.argv[1]})
op = urllib.request.build_opener(proxy, urllib.request.HTTPSHandler(context=ctx))
print(op.open("https://www.test:8443/hello.json", timeout=20).read().decode().strip())
PY
)
[ "$got" = "$want" ] || fail "Python through the HTTP proxy: got '$got'"
got=$(in_ns "$SRV" node - "$P" "$E2E_TMP/wgca.pem" <<'JS'
const http = require('http'), tls = require('tls'), fs = require('fs');
const [port, ca] = process.argv.slice(2);
setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: 'www.test:8443' })
  .on('connect', (res, sock) => {
    if (res.statusCode !== 200) { console.error('CONNECT', res.statusCode); process.exit(1); }
    const t = tls.connect({ socket: sock, servername: 'www.test', ca: fs.readFileSync(ca) }, () => {
      t.write('GET /hello.json HTTP/1.1\r\nHost: www.test:8443\r\nConnection: close\r\n\r\n');
    });
    let buf = '';
    t.on('data', d => buf += d);
    t.on('end', () => { console.log(buf.split('\r\n\r\n')[1].trim()); });
  }).end();
JS
)
[ "$got" = "$want" ] || fail "Node through the HTTP proxy: got '$got'"
say "Python urllib and Node (CONNECT + tls) through the HTTP proxy"

# Errors: a closed upstream port is a 502 with the reason; the policy's
# loopback refusal (the control API among others) a 403; SOCKS reply 2,
# "not allowed".
code=$("${c[@]}" -o "$E2E_TMP/502.txt" -w '%{http_code}' -x "http://127.0.0.1:$P" http://203.0.113.10:9/ || true)
[ "$code" = 502 ] || fail "a refused upstream gave HTTP $code"
grep -qi "refused" "$E2E_TMP/502.txt" || fail "the 502 does not say why: $(cat "$E2E_TMP/502.txt")"
code=$("${c[@]}" -o /dev/null -w '%{http_connect}' -x "http://127.0.0.1:$P" https://203.0.113.10:9/ || true)
[ "$code" = 502 ] || fail "a refused CONNECT gave $code"
code=$("${c[@]}" -o /dev/null -w '%{http_connect}' -x "http://127.0.0.1:$P" https://127.0.0.1:18090/ || true)
[ "$code" = 403 ] || fail "CONNECT to the control API gave $code, not 403"
if "${c[@]}" -o /dev/null -x "socks5://127.0.0.1:$P" http://127.0.0.1:18090/ 2>"$E2E_TMP/socks.err"; then
  fail "SOCKS5 reached the control API"
fi
grep -q "SOCKS5 connection.*(2)" "$E2E_TMP/socks.err" || fail "SOCKS5 refusal: $(cat "$E2E_TMP/socks.err")"
code=$("${c[@]}" -o "$E2E_TMP/502n.txt" -w '%{http_code}' -x "http://127.0.0.1:$P" http://nowhere.invalid/ || true)
[ "$code" = 502 ] && grep -q "cannot resolve nowhere.invalid" "$E2E_TMP/502n.txt" ||
  fail "an unknown name gave HTTP $code: $(cat "$E2E_TMP/502n.txt")"
say "errors: 502 with the reason, 403 and SOCKS 'not allowed' for the policy"

# The records: via and the real destination; the store lists them.
flows="$HOME_DIR/flows.jsonl"
wait_for 10 python3 - "$flows" <<'PY' || fail "records: $(tail -n 5 "$flows")"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
http = [r for r in recs if r["type"] == "http"]
via = sorted({r.get("via") for r in http})
assert via == ["http-proxy", "socks5"], via
hosts = {(r.get("via"), r["request"]["url"]) for r in http}
assert ("http-proxy", "https://www.test:8443/hello.json") in hosts, hosts
assert ("socks5", "https://www.test:8443/hello.json") in hosts, hosts
assert ("http-proxy", "http://www.test:8080/hello.json") in hosts, hosts
tcp = [r for r in recs if r["type"] == "tcp" and r.get("via")]
assert any(r["end_reason"] == "upstream_refused" and r["server"] == "203.0.113.10:9" for r in tcp), tcp
assert any(r["end_reason"] == "policy:loopback" for r in tcp), [r["end_reason"] for r in tcp]
# A name that does not resolve is a record too, with no server.
assert any(r["end_reason"] == "upstream_unresolved" and r["server"] is None and
           "nowhere.invalid" in r.get("error", "") and r["via"] == "http-proxy" for r in tcp), tcp
PY
token=$(cat "$HOME_DIR/api-token")
n=$(in_ns "$SRV" curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:18090/api/flows?filter=~via%20socks5%20%26%20~http" |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin)["flows"]))')
[ "$n" -ge 3 ] || fail "the store lists $n socks5 exchanges"
say "records: via http-proxy / socks5, failures recorded; ~via in the store"
kill "$WGMITM_PID"; wait "$WGMITM_PID" 2>/dev/null || true

# Credentials: --users with a plain and a hashed password.
printf '# test users\nalice:secret\nbob:%s\n' "$(openssl passwd -6 hunter2)" >"$E2E_TMP/users"
head -c 524288 /dev/urandom >"$www/half.bin"
# An external endpoint for the users the file does not name: carol:ext.
cat >"$E2E_TMP/auth.py" <<'PY'
import http.server, json, sys
asked = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        asked.append(body)
        ok = self.path == "/check" and body["user"] == "carol" and body["password"] == "ext"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        out = json.dumps(asked).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 18099), H).serve_forever()
PY
serve "$SRV" python3 "$E2E_TMP/auth.py"
wait_port "$SRV" 127.0.0.1 18099
start_wgmitm "$SRV" "$HOME_DIR" --listen 127.0.0.1:0 --api off \
  --upstream-ca "$pki/ca.pem" --http-proxy $P --socks5 $P --users "$E2E_TMP/users" \
  --auth-url http://127.0.0.1:18099/check \
  --max-connections-per-user 2 --user-rate 2000
wait_for 10 grep -q "credentials from --users and --auth-url" "$E2E_TMP/wgmitm.log" || fail "no listener with users"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P" http://www.test:8080/hello.json || true)
[ "$code" = 407 ] || fail "no credentials gave HTTP $code, not 407"
code=$("${c[@]}" -o /dev/null -w '%{http_connect}' -x "http://alice:wrong@127.0.0.1:$P" https://www.test:8443/hello.json || true)
[ "$code" = 407 ] || fail "a wrong password gave $code, not 407"
got=$("${c[@]}" -x "http://alice:secret@127.0.0.1:$P" https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "alice through the HTTP proxy: got '$got'"
got=$("${c[@]}" -x "http://bob:hunter2@127.0.0.1:$P" http://www.test:8080/hello.json)
[ "$got" = "$want" ] || fail "bob (hashed password) through the HTTP proxy: got '$got'"
if "${c[@]}" -o /dev/null -x "socks5h://alice:wrong@127.0.0.1:$P" https://www.test:8443/hello.json 2>/dev/null; then
  fail "SOCKS5 took a wrong password"
fi
if "${c[@]}" -o /dev/null -x "socks5h://127.0.0.1:$P" https://www.test:8443/hello.json 2>/dev/null; then
  fail "SOCKS5 took no credentials"
fi
got=$("${c[@]}" -x "socks5h://bob:hunter2@127.0.0.1:$P" https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "bob through SOCKS5: got '$got'"
wait_for 10 python3 - "$flows" <<'PY' || fail "user in the records: $(tail -n 3 "$flows")"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
users = {(r.get("via"), r.get("user")) for r in recs if r["type"] == "http"}
assert ("http-proxy", "alice") in users and ("http-proxy", "bob") in users and ("socks5", "bob") in users, users
PY
say "credentials: 407 without or wrong, plain and crypt(3) passwords, SOCKS5 RFC 1929; user recorded"

# The external endpoint: carol is let in over HTTP and SOCKS5, asked once
# (then cached); a wrong password is refused; file users are not asked.
got=$("${c[@]}" -x "http://carol:ext@127.0.0.1:$P" http://www.test:8080/hello.json)
[ "$got" = "$want" ] || fail "carol (--auth-url) through the HTTP proxy: got '$got'"
got=$("${c[@]}" -x "socks5h://carol:ext@127.0.0.1:$P" https://www.test:8443/hello.json)
[ "$got" = "$want" ] || fail "carol (--auth-url) through SOCKS5: got '$got'"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' -x "http://carol:nope@127.0.0.1:$P" http://www.test:8080/hello.json || true)
[ "$code" = 407 ] || fail "a password the endpoint refuses gave HTTP $code"
got=$("${c[@]}" -x "http://alice:secret@127.0.0.1:$P" http://www.test:8080/hello.json)
[ "$got" = "$want" ] || fail "alice with --auth-url too: got '$got'"
in_ns "$SRV" curl -sS --max-time 5 http://127.0.0.1:18099/ | python3 -c '
import json, sys
asked = json.load(sys.stdin)
assert [(a["user"], a["password"]) for a in asked] == [("carol", "ext"), ("carol", "nope")], asked
assert asked[0]["via"] == "http-proxy" and asked[0]["client"] == "127.0.0.1", asked[0]
' || fail "the endpoint was asked: $(in_ns "$SRV" curl -sS http://127.0.0.1:18099/)"
wait_for 10 grep -q '"user":"carol"' "$flows" || fail "carol not recorded"
say "--auth-url: the endpoint lets carol in (HTTP, SOCKS5), once then cached; refusals; file users not asked"

# Per-user limits: two connections at once (a third is a 503), and 2000
# kbit/s for all of a user's flows: two 512 KiB downloads side by side take
# at least the time of 1 MiB at that rate, less the bucket's burst. A lower
# bound only: a slow machine cannot make it fail.
in_ns "$SRV" python3 - "$P" <<'PY' || fail "per-user connection limit"
import base64, socket, sys
port = int(sys.argv[1])
auth = base64.b64encode(b"alice:secret").decode()
def connect():
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.settimeout(10)
    s.sendall(("CONNECT www.test:8443 HTTP/1.1\r\nHost: www.test:8443\r\n"
               "Proxy-Authorization: Basic %s\r\n\r\n" % auth).encode())
    return s, s.recv(4096).decode(errors="replace")
held = [connect() for _ in range(2)]
assert all(r.startswith("HTTP/1.1 200") for _, r in held), [r for _, r in held]
third, r = connect()
while True:  # the 503 and its reason, then the close
    d = third.recv(4096)
    if not d:
        break
    r += d.decode(errors="replace")
assert r.startswith("HTTP/1.1 503") and "too many connections" in r, r
for s, _ in held:
    s.close()
third.close()
PY
start=$(date +%s.%N)
pids=()
for i in 1 2; do
  "${c[@]}" -o "$E2E_TMP/half$i.bin" -x "http://alice:secret@127.0.0.1:$P" http://www.test:8080/half.bin &
  pids+=("$!")
done
wait "${pids[@]}"
end=$(date +%s.%N)
cmp -s "$E2E_TMP/half1.bin" "$www/half.bin" && cmp -s "$E2E_TMP/half2.bin" "$www/half.bin" ||
  fail "the paced downloads differ"
python3 -c "import sys; t = float(sys.argv[2]) - float(sys.argv[1]); assert t >= 3.0, t" "$start" "$end" ||
  fail "two downloads of one user at 2000 kbit/s took less than 3 s: the rate did not hold"
say "per-user limits: 2 connections (a third is a 503), one rate shared by the user's flows"
kill "$WGMITM_PID"; wait "$WGMITM_PID" 2>/dev/null || true

# A proxy open to the network without credentials is refused before it binds.
if in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" run --listen 127.0.0.1:0 --api off \
    --http-proxy 0.0.0.0:$P >"$E2E_TMP/open.log" 2>&1; then
  fail "an open proxy started"
fi
grep -q -- "--allow-open-proxy" "$E2E_TMP/open.log" || fail "the refusal does not say why: $(cat "$E2E_TMP/open.log")"
if in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" run --listen 127.0.0.1:0 --api 127.0.0.1:$P \
    --http-proxy $P >"$E2E_TMP/clash.log" 2>&1; then
  fail "a proxy on the API's port started"
fi
grep -q "control API's port" "$E2E_TMP/clash.log" || fail "the clash is not named: $(cat "$E2E_TMP/clash.log")"
say "an open proxy and a port collision are refused before anything binds"
say "PASS"
