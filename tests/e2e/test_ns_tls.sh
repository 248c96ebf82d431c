#!/usr/bin/env bash
# TLS interception end to end: a wireguard-go client that trusts only
# wgmitm's CA talks HTTPS (HTTP/1.1, HTTP/2, WebSocket) to test hosts whose
# certificates come from a test CA that wgmitm is told to trust
# (--upstream-ca). Every exchange lands in the flows file and in the HAR.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm) ── ns host (HTTPS servers)
source "$(dirname "$0")/lib.sh"
require_root
for tool in openssl nghttpd nghttp node; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"
wsjs="$(cd "$(dirname "$0")" && pwd)/ws.js"
harjs="$(cd "$(dirname "$0")/.." && pwd)/har-validate.js"
export NODE_PATH=/usr/share/nodejs

# A test PKI: the upstream CA, a good certificate for www.test (and the
# host's IPs), and a self-signed one for bad.test.
pki="$E2E_TMP/pki"
test_pki "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bad.test" \
  -addext "subjectAltName=DNS:bad.test" -keyout "$pki/bad.key" -out "$pki/bad.pem" 2>/dev/null

export SSLKEYLOGFILE="$E2E_TMP/keys.log"
topology_hosts --upstream-ca "$pki/ca.pem"
unset SSLKEYLOGFILE
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"

www="$E2E_TMP/www"
mkdir -p "$www"
head -c 1000003 /dev/urandom >"$www/small.bin"
printf '{"hello": "world"}\n' >"$www/hello.json"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
serve "$HOST" python3 "$hosts" https "$www" 9443 "$pki/bad.pem" "$pki/bad.key"
serve "$HOST" python3 "$hosts" http "$www" 8080
serve "$HOST" python3 "$hosts" tcpecho 7007
serve "$HOST" nghttpd -d "$www" --trailer "grpc-status: 0" 8444 "$pki/www.key" "$pki/www.pem"
serve "$HOST" node "$wsjs" server 8445 "$pki/www.pem" "$pki/www.key"
for p in 8443 9443 8080 7007 8444 8445; do wait_port "$HOST" 127.0.0.1 $p; done

sum() { sha256sum | cut -d' ' -f1; }
want_small=$(sum <"$www/small.bin")
c=(in_ns "$CLI" curl -sS --max-time 60 --cacert "$E2E_TMP/wgca.pem"
   --resolve "www.test:8443:$HOST4" --resolve "www.test:8444:$HOST4"
   --resolve "bad.test:9443:$HOST4" --resolve "www6.test:8443:[$HOST6]")

# HTTPS/1.1 GET and POST, byte-exact, over IPv4 and IPv6.
got=$("${c[@]}" "https://www.test:8443/small.bin" | sum)
[ "$got" = "$want_small" ] || fail "HTTPS GET differs"
got=$("${c[@]}" -H "Host: www.test:8443" "https://[$HOST6]:8443/small.bin" | sum)
[ "$got" = "$want_small" ] || fail "HTTPS GET over IPv6 differs"
got=$("${c[@]}" --data-binary @"$www/small.bin" "https://www.test:8443/upload")
[ "$got" = "$want_small" ] || fail "HTTPS POST: server saw $got"
say "HTTPS/1.1 GET and POST: byte-exact, v4 and v6"

# HTTP/2: curl, then nghttp with 8 concurrent streams and a trailer.
ver=$("${c[@]}" --http2 -o /dev/null -w '%{http_version}' "https://www.test:8444/small.bin")
[ "$ver" = 2 ] || fail "HTTP/2 was not negotiated through the endpoint (got $ver)"
in_ns "$CLI" timeout 30 nghttp -n -y -m 8 "https://$HOST4:8444/hello.json" 2>"$E2E_TMP/nghttp.err" ||
  fail "nghttp failed: $(tail -3 "$E2E_TMP/nghttp.err")"
say "HTTP/2: curl and 8 concurrent nghttp streams"

# An h2 client to an HTTP/1.1-only upstream gets HTTP/1.1 (ALPN mirrored).
ver=$("${c[@]}" --http2 -o /dev/null -w '%{http_version}' "https://www.test:8443/hello.json")
[ "$ver" = 1.1 ] || fail "h2 client to an HTTP/1.1 upstream: got $ver"

# SNI-less: a client dialling the IP gets a leaf for the IP.
got=$("${c[@]}" "https://$HOST4:8443/small.bin" | sum)
[ "$got" = "$want_small" ] || fail "SNI-less HTTPS differs"
say "h2 client to an HTTP/1.1 upstream, SNI-less connection: fine"

# WebSocket over TLS, with permessage-deflate: every echo checked.
in_ns "$CLI" timeout 30 node "$wsjs" client "wss://$HOST4:8445/chat" "$E2E_TMP/wgca.pem" 5 ||
  fail "WebSocket echo failed"
say "WebSocket echo: 10 messages each way"

# Streaming: the first 64 KiB of a 100 MiB response arrive while the server
# still holds the rest.
rm -f "$E2E_TMP/release"
"${c[@]}" -o "$E2E_TMP/stream.out" "https://www.test:8443/stream/104857600?hold=$E2E_TMP/release" &
curl_pid=$!
first_chunk_in() { [ "$(stat -c %s "$E2E_TMP/stream.out" 2>/dev/null || echo 0)" -ge 65536 ]; }
wait_for 20 first_chunk_in ||
  fail "the first chunk did not reach the client while the server held the rest"
touch "$E2E_TMP/release"
wait "$curl_pid" || fail "streamed download failed"
[ "$(stat -c %s "$E2E_TMP/stream.out")" -eq 104857600 ] || fail "streamed download has the wrong size"
say "streaming: first chunk before the rest was sent; 100 MiB complete"

# An upstream with a certificate nobody vouches for: 502 with the reason.
code=$("${c[@]}" -o "$E2E_TMP/502.txt" -w '%{http_code}' "https://bad.test:9443/" || true)
[ "$code" = 502 ] || fail "bad upstream certificate: HTTP $code, expected 502"
grep -q "certificate" "$E2E_TMP/502.txt" || fail "502 page without the reason: $(cat "$E2E_TMP/502.txt")"
say "bad upstream certificate: 502 ($(head -c 120 "$E2E_TMP/502.txt"))"
# An h2-only client (nghttp offers only h2, as gRPC clients do) gets the
# 502 over HTTP/2.
in_ns "$CLI" timeout 20 nghttp -y -v "https://$HOST4:9443/" >"$E2E_TMP/502h2.txt" 2>&1 || true
grep -q ':status: 502' "$E2E_TMP/502h2.txt" || fail "h2-only client: no 502 over HTTP/2: $(tail -5 "$E2E_TMP/502h2.txt")"
grep -q "wgmitm: upstream certificate" "$E2E_TMP/502h2.txt" || fail "h2 502 without the reason"
say "bad upstream certificate, h2-only client: 502 over HTTP/2"

# A client that does not trust our CA: recorded, and the host passes through
# for this peer afterwards (the client then sees the real certificate).
set +e
in_ns "$CLI" curl -sS --max-time 20 --resolve "www.test:8443:$HOST4" "https://www.test:8443/hello.json" \
  >/dev/null 2>"$E2E_TMP/reject.err"
rc=$?
set -e
[ $rc -ne 0 ] || fail "a client without our CA accepted the minted certificate"
got=$(in_ns "$CLI" curl -sS --max-time 20 --cacert "$pki/ca.pem" --resolve "www.test:8443:$HOST4" \
  "https://www.test:8443/hello.json") || fail "no passthrough after the client rejected our certificate"
[ "$got" = '{"hello": "world"}' ] || fail "passthrough answer differs: $got"
say "client rejection recorded; the next connection passes through"

# Plain HTTP and a raw TCP stream.
got=$(in_ns "$CLI" curl -sS --max-time 20 "http://$HOST4:8080/hello.json")
[ "$got" = '{"hello": "world"}' ] || fail "plain HTTP differs"
got=$(in_ns "$CLI" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 7007), 10)
s.sendall(b"PING raw bytes\n"); s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode().strip())' "$HOST4")
[ "$got" = "PING raw bytes" ] || fail "raw echo differs: $got"

# The records.
sleep 0.5
flows="$HOME_DIR/flows.jsonl"
www_fp=$(openssl x509 -in "$pki/www.pem" -noout -fingerprint -sha256 | cut -d= -f2)
python3 - "$flows" "$www_fp" <<'PY' || fail "flow records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
http = [r for r in recs if r["type"] == "http"]
tcp = {r["id"]: r for r in recs if r["type"] == "tcp"}
def need(cond, what):
    if not cond:
        sys.exit("missing: " + what)
def find(pred):
    return [r for r in http if pred(r)]
g = find(lambda r: r["url"] == "https://www.test:8443/small.bin" and r["method"] == "GET")
need(g and g[0]["response"]["status"] == 200 and g[0]["response"]["body"]["size"] == 1000003
     and not g[0]["response"]["body"]["truncated"], "HTTPS GET record with its 1 MB body")
st = find(lambda r: "/stream/" in r["url"])
need(st and st[0]["response"]["body"]["size"] == 104857600 and st[0]["response"]["body"]["truncated"],
     "the 100 MiB download recorded with its size, body truncated at the cap")
need(g[0]["tls"]["client"]["version"].startswith("TLS") and g[0]["tls"]["upstream"]["alpn"] == "http/1.1",
     "TLS details on the record")
p = find(lambda r: r["method"] == "POST")
need(p and p[0]["request"]["body"]["size"] == 1000003, "POST record with its body size")
h2 = find(lambda r: r["http_version"] == "HTTP/2")
need(len(h2) >= 9, "HTTP/2 records (got %d)" % len(h2))
need(len({r["stream_id"] for r in h2 if r["url"].endswith("/hello.json")}) >= 8, "8 distinct h2 streams")
need(any(r["response"] and r["response"].get("trailers") == [["grpc-status", "0"]] for r in h2),
     "HTTP/2 trailers")
ws = [r for r in recs if r["type"] == "websocket"]
msgs = [m for r in ws for m in r["messages"]]
need(len([m for m in msgs if m["dir"] == "up" and m["opcode"] in ("text", "binary")]) == 10 and
     len([m for m in msgs if m["dir"] == "down" and m["opcode"] in ("text", "binary")]) == 10,
     "WebSocket messages both ways (got %d)" % len(msgs))
need(any(m["opcode"] == "text" and m["body"].get("text", "").startswith("text message 4") for m in msgs),
     "WebSocket text recorded (inflated)")
bad = [r for r in tcp.values() if r.get("sni") == "bad.test"]
need(bad and "certificate" in bad[0].get("tls_error", ""), "upstream certificate failure on the tcp record")
# The certificate each upstream presented, on the tcp record only.
good = [r for r in tcp.values() if r.get("sni") == "www.test" and r.get("proto") == "tls"]
need(good, "a tcp record of www.test")
cert = (good[0]["tls"]["upstream"] or {}).get("cert") or {}
need(cert.get("subject") == "CN=www.test" and cert.get("issuer") == "CN=upstream test CA"
     and cert.get("sans") == ["DNS:www.test", "IP:203.0.113.10", "IP:2001:db8:1::10"],
     "the upstream certificate's names on the tcp record: %s" % cert)
need(cert.get("sha256") == sys.argv[2] and cert.get("verified") is True and "verify_error" not in cert
     and cert["not_before"] < cert["not_after"], "the upstream certificate's fingerprint and verdict: %s" % cert)
need(all("cert" not in ((r["tls"] or {}).get("upstream") or {}) for r in http),
     "the certificate is on the tcp record only")
bcert = ((bad[0].get("tls") or {}).get("upstream") or {}).get("cert") or {}
need(bcert.get("subject") == "CN=bad.test" and bcert.get("verified") is False
     and "self-signed" in bcert.get("verify_error", ""), "the refused certificate on its tcp record: %s" % bad[0])
need(find(lambda r: r["url"].startswith("https://bad.test:9443/") and r["response"]["status"] == 502),
     "the 502 as an http record")
need(find(lambda r: r["http_version"] == "HTTP/2" and r["url"].endswith(":9443/") and r["response"]["status"] == 502),
     "the h2 502 as an http record")
rej = [r for r in tcp.values() if r["end_reason"] == "tls:client_rejected"]
need(rej and "client rejected certificate" in rej[0]["tls_error"], "client rejection record")
need(any(r.get("passthrough") == "auto" for r in tcp.values()), "automatic passthrough record")
need(find(lambda r: r["url"] == "http://203.0.113.10:8080/hello.json" and r["tls"] is None),
     "plain HTTP record")
raw = [r for r in tcp.values() if r.get("proto") == "raw"]
need(raw and raw[0]["first_up"].get("text", "").startswith("PING"), "raw stream with its first bytes")
for r in http:
    need(r["conn"] in tcp, "http record's conn %s has its tcp record" % r["conn"])
print("records: %d http, %d websocket batches, %d tcp" % (len(http), len(ws), len(tcp)))
PY
say "records checked"

grep -q "^CLIENT_HANDSHAKE_TRAFFIC_SECRET \|^CLIENT_RANDOM " "$E2E_TMP/keys.log" ||
  fail "SSLKEYLOGFILE has no key lines"

# HAR export validates.
WGMITM_HOME="$HOME_DIR" "$WGMITM" export --har "$E2E_TMP/out.har" || fail "export --har failed"
node "$harjs" "$E2E_TMP/out.har" || fail "the HAR does not validate"
say "HAR export: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["log"]["entries"]))' "$E2E_TMP/out.har") entries, valid"
wgmitm_stats | grep -i "tls\|http" | head -5 || true
say "PASS"
