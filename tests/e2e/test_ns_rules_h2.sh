#!/usr/bin/env bash
# Interception rules over HTTP/2 end to end (docs/rules.md, "HTTP/2"): a
# wireguard-go client talks h2 through wgmitm to nghttpd while rules from
# HOME/rules.json edit requests and responses, answer, block and reset
# single streams, and hold one stream while another on the same
# connection completes.
#
#   ns cli (wireguard-go, curl --http2, nghttp) ── ns srv (wgmitm run + rules) ── ns host (nghttpd h2 :8444)
#   www.test -> 203.0.113.10 (curl --resolve)
#
# gRPC (grpcio, TLS) through a rule that sets a metadata header, unary and
# server streaming.
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl python3 nghttpd nghttp curl; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
# Debian's python3-grpcio is for Debian's python3, which PATH may not put first.
grpc_py=python3
python3 -c 'import grpc' 2>/dev/null || grpc_py=/usr/bin/python3
"$grpc_py" -c 'import grpc' 2>/dev/null || { [ "${CI:-}" = true ] && fail "needs python3-grpcio"; say "SKIP: needs python3-grpcio"; exit 77; }

pki="$E2E_TMP/pki"
test_pki "$pki"
www="$E2E_TMP/www"
mkdir -p "$www"
printf '{"user": {"name": "cat", "role": "guest"}}' >"$www/user.json"
printf 'hello over h2\n' >"$www/hello.txt"
printf 'slow answer\n' >"$www/slow.txt"
head -c 1048576 /dev/urandom >"$www/big.bin"

topology_hosts --upstream-ca "$pki/ca.pem"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"
cat >"$HOME_DIR/rules.json" <<'JSON'
{"rules": [
  {"id": "h2-hdr", "conditions": {"path_pattern": "^/hello"},
   "actions": [{"type": "set_header", "name": "X-H2-Added", "value": "yes"}]},
  {"id": "h2-resp", "direction": "response", "conditions": {"path_pattern": "^/hello"},
   "actions": [{"type": "set_header", "name": "X-Resp-H2", "value": "edited"}]},
  {"id": "h2-json", "direction": "response", "conditions": {"path_pattern": "^/user.json"},
   "actions": [{"type": "set_json", "path": "user.role", "value": "admin"}]},
  {"id": "h2-mock", "conditions": {"path_pattern": "^/mock/"},
   "actions": [{"type": "mock", "status": 201, "headers": {"Content-Type": "text/plain"},
                "body": "mocked over h2"}]},
  {"id": "h2-403", "conditions": {"path_pattern": "^/blocked"},
   "actions": [{"type": "block", "status": 403}]},
  {"id": "h2-444", "conditions": {"path_pattern": "^/reset"},
   "actions": [{"type": "block", "status": 444}]},
  {"id": "h2-slow", "conditions": {"path_pattern": "^/slow"},
   "actions": [{"type": "delay", "ms": 1500}]},
  {"id": "h2-throttle", "direction": "response", "conditions": {"path_pattern": "^/big"},
   "actions": [{"type": "throttle", "bytes_per_s": 262144}]},
  {"id": "h2-grpc", "conditions": {"path_pattern": "^/echo\\.Echo/"},
   "actions": [{"type": "set_header", "name": "x-grpc-rule", "value": "set by wgmitm"}]}
]}
JSON
wait_for 10 grep -q "rules.json: 9 rules" "$E2E_TMP/wgmitm.log" || fail "rules.json was not loaded"
# -v: the request headers nghttpd received go to servers.log.
serve "$HOST" nghttpd -v -d "$www" --trailer "grpc-status: 0" 8444 "$pki/www.key" "$pki/www.pem"
wait_port "$HOST" 127.0.0.1 8444
c=(in_ns "$CLI" curl -sS --http2 --max-time 30 --cacert "$E2E_TMP/wgca.pem" --resolve "www.test:8444:$HOST4")
u=https://www.test:8444

# Request header set: seen by the server; response header set: seen by curl.
got=$("${c[@]}" -D "$E2E_TMP/h.txt" -w '%{http_version}' "$u/hello.txt")
[ "$got" = "hello over h2
2" ] || fail "h2 GET through the rules layer: $got"
grep -q "x-h2-added: yes" "$E2E_TMP/servers.log" || fail "the server did not see x-h2-added"
grep -qi "^x-resp-h2: edited" "$E2E_TMP/h.txt" || fail "no response header: $(cat "$E2E_TMP/h.txt")"
say "h2: request header seen upstream, response header seen by the client"

# Response body set_json.
got=$("${c[@]}" "$u/user.json")
echo "$got" | grep -q '"role": *"admin"' || fail "set_json over h2: $got"
say "h2: response body set_json"

# Mock and block 403: answered by wgmitm.
got=$("${c[@]}" -w ' %{http_code}' "$u/mock/x")
[ "$got" = "mocked over h2 201" ] || fail "mock over h2: $got"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "$u/blocked")
[ "$code" = 403 ] || fail "block 403 over h2: $code"
grep -q ":path: /mock/x\|:path: /blocked" "$E2E_TMP/servers.log" && fail "mock or block reached the server"
say "h2: mock and block 403 answered without the server"

# 444: that stream is reset; the next one on the same connection works.
out=$("${c[@]}" -w '%{url_effective} %{http_code} %{num_connects}\n' "$u/reset" "$u/hello.txt" 2>"$E2E_TMP/reset.err" || true)
grep -qi "INTERNAL_ERROR\|stream 1 was not closed cleanly\|HTTP/2 stream" "$E2E_TMP/reset.err" ||
  fail "444 did not reset the stream: $(cat "$E2E_TMP/reset.err")"
echo "$out" | grep -q "hello.txt 200 0" || fail "the connection did not go on after the reset: $out"
say "h2: 444 resets only its stream"

# A delayed stream and a fast one multiplexed on one connection: the fast one first.
out=$("${c[@]}" -Z -o /dev/null -o /dev/null -w '%{url_effective} %{time_total}\n' "$u/slow.txt" "$u/hello.txt")
first=$(echo "$out" | head -1)
echo "$first" | grep -q hello.txt || fail "the fast stream did not finish first: $out"
python3 - "$out" <<'PY' || fail "timings: $out"
import sys
t = {l.split()[0].rsplit("/", 1)[1]: float(l.split()[1]) for l in sys.argv[1].splitlines() if l.strip()}
assert t["slow.txt"] >= 1.4, t
assert t["hello.txt"] < 1.0, t
PY
say "h2: a delayed stream held while another completed first"

# A throttled stream (1 MiB at 256 KiB/s) and a fast one on one connection.
out=$("${c[@]}" -Z -o "$E2E_TMP/big.out" -o /dev/null -w '%{url_effective} %{time_total}\n' "$u/big.bin" "$u/hello.txt")
echo "$out" | head -1 | grep -q hello.txt || fail "the fast stream did not finish first: $out"
cmp -s "$E2E_TMP/big.out" "$www/big.bin" || fail "the throttled body differs"
python3 - "$out" <<'PY' || fail "timings: $out"
import sys
t = {l.split()[0].rsplit("/", 1)[1]: float(l.split()[1]) for l in sys.argv[1].splitlines() if l.strip()}
assert t["big.bin"] >= 3.0, t  # a lower bound only: a slow machine cannot fail it
PY
say "h2: a throttled stream paced ($(echo "$out" | grep big.bin | cut -d' ' -f2) s for 1 MiB) while another completed first"

# gRPC: the rule's metadata reaches the server; trailers and a stream come back.
serve "$HOST" "$grpc_py" "$(dirname "$0")/grpc_echo.py" server 50051 "$pki/www.pem" "$pki/www.key"
wait_port "$HOST" 127.0.0.1 50051
got=$(in_ns "$CLI" timeout 30 "$grpc_py" "$(dirname "$0")/grpc_echo.py" client "$HOST4:50051" "$E2E_TMP/wgca.pem" www.test 2>&1) ||
  fail "gRPC through the rules layer: $got"
[ "$got" = "hello|set by wgmitm
0,1,2" ] || fail "gRPC answers: $got"
say "gRPC: unary and server-streaming calls, the rule's metadata seen by the server"

# nghttp: several streams on one connection, with the server's trailer.
in_ns "$CLI" timeout 30 nghttp -n -s -m 4 "https://$HOST4:8444/hello.txt" >"$E2E_TMP/nghttp.out" 2>&1 ||
  fail "nghttp -m 4 through the rules layer: $(cat "$E2E_TMP/nghttp.out")"
say "h2: nghttp with 4 concurrent streams"

# The records: one per stream, with the rules that acted on it.
python3 - "$HOME_DIR/flows.jsonl" <<'PY' || fail "records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
http = [r for r in recs if r["type"] == "http"]
def one(path):
    xs = [r for r in http if r["url"].endswith(path)]
    assert xs, "no record for " + path
    return xs[0]
h = one("/hello.txt")
assert h["rules"]["matched"] == ["h2-hdr", "h2-resp"], h.get("rules")
assert ["x-h2-added", "yes"] in [[k.lower(), v] for k, v in h["rules"]["request_headers_upstream"]], h["rules"]
m = one("/mock/x")
assert m["rules"]["mocked_by"] == "h2-mock" and m["response"]["status"] == 201, m
u = one("/user.json")
assert "guest" in u["rules"]["response_body_original"]["text"], u["rules"]
b = one("/blocked")
assert b["rules"]["blocked_by"] == "h2-403", b
g = one("/echo.Echo/Say")
assert g["rules"]["matched"] == ["h2-grpc"] and g["response"]["status"] == 200, g.get("rules")
r = one("/reset")
assert r["rules"]["blocked_by"] == "h2-444" and r["rules"].get("reset") is True, r
print("records ok")
PY
say "records: the rules of each stream"
say "PASS"
