#!/usr/bin/env bash
# Reverse and forward listeners end to end: each cell of the client TLS ×
# upstream TLS matrix with curl, nghttp and Python clients on the capture
# host's loopback, test hosts behind; HTTP/2 both ways and h2c to an h2
# upstream; raw bytes (an echo and a half-close); an upstream that does not
# verify (a 502 with the reason) and the per-forward insecure override; a
# client that does not begin TLS on a tls forward, and a refused target,
# reset; records with via, both TLS legs (null for a plaintext side) and
# the upstream's URL.
#
#   ns srv (wgmitm, the clients) ── ns host (HTTP, HTTPS, h2, echo servers)
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl curl nghttpd nghttp python3; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"

pki="$E2E_TMP/pki"
test_pki "$pki"
SRV=$(netns_add wgm-srv)
HOST=$(netns_add wgm-host)
veth_pair "$SRV" 203.0.113.1/24 "$HOST" 203.0.113.10/24 2001:db8:1::1/64 2001:db8:1::10/64 >/dev/null
# www.test is on the certificate; other.test (the same host) is not.
printf '127.0.0.1 localhost\n203.0.113.10 www.test other.test\n' >"$E2E_TMP/hosts"
mount --bind "$E2E_TMP/hosts" /etc/hosts

www="$E2E_TMP/www"
mkdir -p "$www"
printf '{"hello": "forward"}\n' >"$www/hello.json"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
serve "$HOST" python3 "$hosts" http "$www" 8080
serve "$HOST" nghttpd -d "$www" 8444 "$pki/www.key" "$pki/www.pem"
serve "$HOST" nghttpd -d "$www" --no-tls 8445
serve "$HOST" python3 "$hosts" tcpecho 7
serve "$HOST" python3 "$hosts" halfclose 9000
serve "$HOST" python3 "$hosts" udpecho 7001
for p in 8443 8080 8444 8445 7 9000; do wait_port "$HOST" 127.0.0.1 $p; done

HOME_DIR="$E2E_TMP/home"
start_wgmitm "$SRV" "$HOME_DIR" --listen 127.0.0.1:0 --api 127.0.0.1:18090 \
  --upstream-ca "$pki/ca.pem" \
  --reverse https://www.test:8443@18443 \
  --reverse http://www.test:8080/@127.0.0.1:18080 \
  --reverse http://www.test:8080@18081,keep-host \
  --forward 18444=www.test:8444,protocol=http2,tls,upstream-tls \
  --forward 18445=www.test:8444,protocol=http2,upstream-tls \
  --forward 18446=www.test:8445,tls,protocol=http2 \
  --forward 18447=203.0.113.10:7 \
  --forward '[::1]:18448=[2001:db8:1::10]:9000,protocol=raw' \
  --forward 18449=other.test:8443,upstream-tls,protocol=http \
  --forward 18450=other.test:8443,upstream-tls,insecure \
  --forward 18451=www.test:8080,tls \
  --forward 18452=203.0.113.10:9
wait_for 10 grep -q "forward on 127.0.0.1:18452" "$E2E_TMP/wgmitm.log" ||
  fail "the listeners did not start: $(tail -n 5 "$E2E_TMP/wgmitm.log")"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
want='{"hello": "forward"}'
c=(in_ns "$SRV" curl -sS --max-time 20 --cacert "$E2E_TMP/wgca.pem")

# Reverse to an HTTPS server: plaintext and TLS clients on one port.
got=$("${c[@]}" http://127.0.0.1:18443/hello.json)
[ "$got" = "$want" ] || fail "reverse, plaintext client → TLS upstream: got '$got'"
got=$("${c[@]}" --resolve www.test:18443:127.0.0.1 https://www.test:18443/hello.json)
[ "$got" = "$want" ] || fail "reverse, TLS client → TLS upstream: got '$got'"
# Requests reach the backend with its own name as Host, unless keep-host.
host_seen() { "${c[@]}" "$@" | python3 -c 'import json,sys; print(dict((k.lower(), v) for k, v in json.load(sys.stdin))["host"])'; }
[ "$(host_seen http://127.0.0.1:18443/headers)" = www.test:8443 ] || fail "reverse: Host not the backend's (plaintext client)"
[ "$(host_seen --resolve www.test:18443:127.0.0.1 https://www.test:18443/headers)" = www.test:8443 ] ||
  fail "reverse: Host not the backend's (TLS client)"
[ "$(host_seen http://127.0.0.1:18080/headers)" = www.test:8080 ] || fail "reverse: Host not the backend's (plain)"
[ "$(host_seen http://127.0.0.1:18081/headers)" = 127.0.0.1:18081 ] || fail "reverse keep-host: Host changed"
# No SNI: the leaf carries the target's name.
in_ns "$SRV" python3 - "$E2E_TMP/wgca.pem" <<'PY' || fail "reverse, TLS client without SNI"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.check_hostname = False
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", 18443), 10), server_hostname=None)
s.settimeout(10)
sans = [v for k, v in s.getpeercert()["subjectAltName"]]
assert "www.test" in sans, sans
s.sendall(b"GET /hello.json HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n")
buf = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
assert buf.startswith(b"HTTP/1.") and b'"forward"' in buf, buf[:200]
PY
# Reverse to an HTTP server: TLS terminated, or plaintext through.
got=$("${c[@]}" --resolve www.test:18080:127.0.0.1 https://www.test:18080/hello.json)
[ "$got" = "$want" ] || fail "reverse, TLS client → plaintext upstream: got '$got'"
got=$("${c[@]}" http://127.0.0.1:18080/hello.json)
[ "$got" = "$want" ] || fail "reverse, plaintext both sides: got '$got'"
say "reverse: every cell of client TLS × upstream TLS"

# Forwards with HTTP/2: TLS both sides, h2c to an h2 upstream, h2 to h2c.
ver=$("${c[@]}" --http2 --resolve www.test:18444:127.0.0.1 -o "$E2E_TMP/h2.out" -w '%{http_version}' https://www.test:18444/hello.json)
[ "$ver" = 2 ] && [ "$(cat "$E2E_TMP/h2.out")" = "$want" ] || fail "forward h2, TLS both: $ver $(cat "$E2E_TMP/h2.out")"
got=$("${c[@]}" --http2-prior-knowledge http://127.0.0.1:18445/hello.json)
[ "$got" = "$want" ] || fail "forward, h2c client → h2 upstream: got '$got'"
in_ns "$SRV" timeout 20 nghttp -v "http://127.0.0.1:18445/hello.json" >"$E2E_TMP/nghttp.out" 2>&1 ||
  fail "nghttp (h2c) to the forward: $(tail -n 5 "$E2E_TMP/nghttp.out")"
grep -q ':status: 200' "$E2E_TMP/nghttp.out" || fail "nghttp (h2c): $(tail -n 5 "$E2E_TMP/nghttp.out")"
ver=$("${c[@]}" --http2 --resolve www.test:18446:127.0.0.1 -o "$E2E_TMP/h2c.out" -w '%{http_version}' https://www.test:18446/hello.json)
[ "$ver" = 2 ] && [ "$(cat "$E2E_TMP/h2c.out")" = "$want" ] || fail "forward, h2 client → h2c upstream: $ver $(cat "$E2E_TMP/h2c.out")"
say "forward: h2 both TLS, h2c → h2 over TLS, h2 over TLS → h2c"

# Raw forwards: an echo (IPv4), a half-close over IPv6.
in_ns "$SRV" python3 - <<'PY' || fail "raw echo through the forward"
import socket
s = socket.create_connection(("127.0.0.1", 18447), 5)
s.settimeout(10)
s.sendall(b"ping\x00\xff" * 1000)
got = b""
while len(got) < 6000:
    d = s.recv(65536)
    assert d, "closed after %d bytes" % len(got)
    got += d
assert got == b"ping\x00\xff" * 1000
PY
out=$(in_ns "$SRV" python3 "$hosts" halfclose-client ::1 18448) || fail "half-close through the forward: $out"
say "raw: echo and half-close relayed"

# Verification: a name the certificate lacks is a 502 with the reason for
# a plaintext client; ,insecure lets it through.
code=$("${c[@]}" -o "$E2E_TMP/bad.txt" -w '%{http_code}' http://127.0.0.1:18449/hello.json || true)
[ "$code" = 502 ] || fail "an unverified upstream gave HTTP $code"
grep -q "upstream certificate" "$E2E_TMP/bad.txt" || fail "the 502 does not say why: $(cat "$E2E_TMP/bad.txt")"
got=$("${c[@]}" http://127.0.0.1:18450/hello.json)
[ "$got" = "$want" ] || fail "insecure forward: got '$got'"
# A plaintext client on a tls forward, and a refused target: reset.
if "${c[@]}" -o /dev/null http://127.0.0.1:18451/hello.json 2>"$E2E_TMP/notls.err"; then
  fail "a plaintext client got through a tls forward"
fi
got=$("${c[@]}" --resolve www.test:18451:127.0.0.1 https://www.test:18451/hello.json)
[ "$got" = "$want" ] || fail "tls forward to a plaintext upstream: got '$got'"
if "${c[@]}" -o /dev/null http://127.0.0.1:18452/ 2>"$E2E_TMP/refused.err"; then
  fail "a refused target answered"
fi
grep -q "reset\|Recv failure\|Empty reply\|Couldn.t connect" "$E2E_TMP/refused.err" || fail "refused target: $(cat "$E2E_TMP/refused.err")"
say "errors: 502 for an unverified upstream, insecure override, resets"

flows="$HOME_DIR/flows.jsonl"
wait_for 10 python3 - "$flows" <<'PY' || fail "records: $(tail -n 5 "$flows")"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
http = [r for r in recs if r["type"] == "http"]
tcp = [r for r in recs if r["type"] == "tcp"]
def one(pred, what):
    got = [r for r in http if pred(r)]
    assert got, what
    return got[0]
# The record keeps the request as the client sent it (Host included).
assert any(r["url"] == "http://127.0.0.1:18080/headers" for r in http), "the client's Host"
assert {r.get("via") for r in recs} <= {"reverse", "forward"}, {r.get("via") for r in recs}
# Plaintext client to the HTTPS reverse: the URL is the upstream's, the
# client leg null.
r = one(lambda r: r["via"] == "reverse" and r["server"] == "203.0.113.10:8443" and r["tls"] and r["tls"]["client"] is None, "plain → TLS")
assert r["request"]["url"].startswith("https://"), r["request"]["url"]
assert r["tls"]["upstream"]["version"].startswith("TLS"), r["tls"]
one(lambda r: r["via"] == "reverse" and r["server"] == "203.0.113.10:8443" and r["tls"] and r["tls"]["client"], "TLS → TLS")
r = one(lambda r: r["via"] == "reverse" and r["server"] == "203.0.113.10:8080" and r["tls"] and r["tls"]["upstream"] is None, "TLS → plain")
assert r["request"]["url"].startswith("http://"), r["request"]["url"]
one(lambda r: r["via"] == "reverse" and r["server"] == "203.0.113.10:8080" and not r["tls"], "plain → plain")
h2 = [r for r in http if r["via"] == "forward" and r["http_version"] == "HTTP/2"]
assert {r["server"] for r in h2} >= {"203.0.113.10:8444", "203.0.113.10:8445"}, [r["server"] for r in h2]
raw = [r for r in tcp if r.get("via") == "forward" and r["server"] in ("203.0.113.10:7", "[2001:db8:1::10]:9000")]
assert len(raw) >= 2 and all(r["end_reason"] == "fin" for r in raw), [(r["server"], r["end_reason"]) for r in raw]
assert any(r["end_reason"] == "tls:client_error" and "did not begin TLS" in r.get("tls_error", "") for r in tcp), "no TLS from the client"
assert any(r["end_reason"] == "upstream_refused" and r["server"] == "203.0.113.10:9" for r in tcp), "refused"
assert any(r["end_reason"] == "tls:upstream_error" and r["server"] == "203.0.113.10:8443" for r in tcp), "unverified"
PY
token=$(cat "$HOME_DIR/api-token")
n=$(in_ns "$SRV" curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:18090/api/flows?filter=~via%20reverse%20%26%20~http" |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin)["flows"]))')
[ "$n" -ge 5 ] || fail "the store lists $n reverse exchanges"
say "records: via, both legs, the upstream's URL; ~via reverse in the store"

# Listeners through the configuration: named, added, changed and removed
# at run time; an unchanged one keeps its clients; a port two want, the
# API's port, an open one, a bad field and a bind that fails are refused
# and leave the listeners as they were.
in_ns "$SRV" python3 - "$token" <<'PY' || fail "listeners through the configuration"
import json, socket, sys, time, urllib.request, urllib.error
token = sys.argv[1]
def api(path, body=None):
    req = urllib.request.Request("http://127.0.0.1:18090" + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
def get(port, path="/hello.json", proxy=None):
    h = urllib.request.ProxyHandler({"http": proxy} if proxy else {})
    with urllib.request.build_opener(h).open("http://%s/%s" % ("www.test:8080" if proxy else "127.0.0.1:%d" % port, path.lstrip("/")), timeout=10) as r:
        return r.read()
def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), 3).close()
        return False
    except ConnectionRefusedError:
        return True
def names(doc):
    return [l["name"] for l in doc["listeners"]]
st, doc = api("/api/config")
assert "forward@127.0.0.1:18447" in names(doc) and "reverse@127.0.0.1:18443" in names(doc), names(doc)
# A client of an unchanged listener: the echo forward, open across changes.
echo = socket.create_connection(("127.0.0.1", 18447), 5)
echo.settimeout(5)
echo.sendall(b"before\n"); assert echo.recv(100) == b"before\n"
st, doc = api("/api/config/configure", {"listeners": {"add": [
    {"name": "api-fwd", "type": "forward", "listen": 18460, "target": "www.test:8443", "upstream_tls": True},
    {"name": "api-proxy", "type": "http-proxy", "listen": "127.0.0.1:18462", "max_connections": 8},
    {"name": "api-compact", "type": "forward", "spec": "18463=www.test:8080"}]}})
assert st == 200, (st, doc)
assert b'"forward"' in get(18460) and b'"forward"' in get(18463), "added forwards"
assert b'"forward"' in get(0, proxy="http://127.0.0.1:18462"), "added proxy"
def refuse(entry, field, words):
    st, doc = api("/api/config/configure", {"listeners": {"add": [entry]}})
    assert st == 400, (entry, st, doc)
    e = doc["error"]
    assert e["field"].endswith(field) and words in e["message"], (entry, e)
    return e
refuse({"name": "dup", "type": "forward", "listen": 18444, "target": "www.test:1"}, ".listen", "already listener forward@127.0.0.1:18444")
refuse({"name": "apiport", "type": "socks5", "listen": 18090}, ".listen", "control API's port")
refuse({"name": "open", "type": "forward", "listen": "0.0.0.0:18464", "target": "www.test:1"}, ".listen", "--allow-open-proxy")
refuse({"name": "notarget", "type": "forward", "listen": 18465, "target": "www.test"}, ".target", "HOST:PORT")
refuse({"name": "rev", "type": "reverse", "listen": 18465, "url": "ftp://x"}, ".url", "http://")
refuse({"name": "x", "type": "socks5", "listen": 18465, "url": "http://x"}, ".url", "not a member")
taken = socket.socket(); taken.bind(("127.0.0.1", 18466)); taken.listen()
refuse({"name": "taken", "type": "http-proxy", "listen": 18466}, ".listen", "address already in use")
taken.close()
st, doc = api("/api/config")
assert "taken" not in names(doc) and "api-fwd" in names(doc), names(doc)
assert b'"forward"' in get(18460) and not refused(18462), "a refusal changed the listeners"
# Changed: the proxy moves; removed: the compact forward goes.
st, doc = api("/api/config/configure", {"listeners": {"add": [{"name": "api-proxy", "type": "http-proxy", "listen": 18467}], "remove": ["api-compact"]}})
assert st == 200, doc
assert refused(18462) and refused(18463), "the old ports still listen"
assert b'"forward"' in get(0, proxy="http://127.0.0.1:18467"), "the moved proxy"
echo.sendall(b"after\n"); assert echo.recv(100) == b"after\n", "the unchanged listener lost its client"
echo.close()
# A UDP forward added, used, then removed while its flow is live.
st, doc = api("/api/config/configure", {"listeners": {"add": [{"name": "api-udp", "type": "udp-forward", "listen": 18470, "target": "203.0.113.10:7001"}]}})
assert st == 200, doc
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
for _ in range(5):
    u.sendto(b"ping", ("127.0.0.1", 18470))
    try:
        if u.recvfrom(100)[0] == b"ping":
            break
    except socket.timeout:
        pass
else:
    raise AssertionError("no echo through the added UDP forward")
st, doc = api("/api/config/configure", {"listeners": {"remove": ["api-udp"]}})
assert st == 200 and "api-udp" not in names(doc), doc
u.sendto(b"gone", ("127.0.0.1", 18470))
try:
    got = u.recvfrom(100)[0]
    raise AssertionError("the removed UDP forward answered: %r" % got)
except (socket.timeout, ConnectionRefusedError):
    pass
st, stats = api("/api/stats")
assert stats["listeners"]["accepted"] >= 5, stats["listeners"]
PY
say "listeners added, changed and removed through the configuration; collisions and bad fields refused naming the field"
kill "$WGMITM_PID"; wait "$WGMITM_PID" 2>/dev/null || true

# Bad specs name the option; a forward open to the network is refused.
for spec in "--forward 18444" "--forward 18444=www.test" "--forward 18444=www.test:1,protocol=ftp" \
  "--forward 18444=www.test:1,bogus" "--reverse ftp://x@1" "--reverse https://x/path@1" "--reverse http://x@1,bogus"; do
  # shellcheck disable=SC2086
  if in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" run --listen 127.0.0.1:0 --api off $spec \
      >"$E2E_TMP/bad.log" 2>&1; then
    fail "run took $spec"
  fi
  grep -q -- "${spec%% *}" "$E2E_TMP/bad.log" || fail "$spec: the error does not name the option: $(cat "$E2E_TMP/bad.log")"
done
if in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" "$WGMITM" run --listen 127.0.0.1:0 --api off \
    --forward 0.0.0.0:18444=www.test:8443 >"$E2E_TMP/open.log" 2>&1; then
  fail "an open forward started"
fi
grep -q -- "--allow-open-proxy" "$E2E_TMP/open.log" || fail "the refusal does not say why: $(cat "$E2E_TMP/open.log")"
say "bad specs and an open forward are refused before anything binds"
say "PASS"
