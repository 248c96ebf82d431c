#!/usr/bin/env bash
# TLS connections that end before they are established, end to end, and
# gRPC (grpc-core: ALPN grpc-exp) through the interception.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm) ── ns host (TLS and gRPC servers)
#
# - `openssl s_client -alpn ftp`: the upstream refuses the ALPN, the client
#   gets its handshake with us (and the 502 when it asks), then closes;
# - clients that close right after our certificate without an alert, with a
#   FIN and with a reset (what grpc-core and other pinning apps do): a
#   rejection, and the host passes through for that client afterwards;
# - a client that half-closes during the upstream handshake;
# - gRPC trusting our CA: recorded as HTTP/2 although ALPN says grpc-exp;
#   gRPC pinned to the real CA: rejected once, then passed through.
# Afterwards the counters show no connection open and every record is there.
source "$(dirname "$0")/lib.sh"
require_root
command -v openssl >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs openssl"; say "SKIP: needs openssl"; exit 77; }
hosts="$(dirname "$0")/hosts.py"
ends="$(dirname "$0")/tlsends.py"
# grpcio is Debian's python3-grpcio, for the system's python3.
gpy=""
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import grpc' 2>/dev/null; then gpy=$p; break; fi
done
if [ -z "$gpy" ]; then
  [ "${CI:-}" = true ] && fail "needs python3-grpcio"
  say "python3-grpcio missing: the gRPC part is skipped"
fi

pki="$E2E_TMP/pki"
test_pki "$pki"
# One more certificate from the upstream CA, for the names the cases use:
# automatic passthrough is per host, so each case has its own.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=cases.test" \
  -keyout "$pki/cases.key" -out "$pki/cases.csr" 2>/dev/null
printf 'subjectAltName=DNS:fin.test,DNS:rst.test,DNS:grpc.test,DNS:pinned.test\nextendedKeyUsage=serverAuth\n' >"$pki/cases.ext"
openssl x509 -req -in "$pki/cases.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/cases.ext" -out "$pki/cases.pem" 2>/dev/null

topology_hosts --upstream-ca "$pki/ca.pem"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"

www="$E2E_TMP/www"
mkdir -p "$www"
printf 'hello\n' >"$www/hello.txt"
# openssl s_server refuses an ALPN list it has nothing in common with
# (no_application_protocol), as nginx and grpc servers do.
serve "$HOST" openssl s_server -accept 8444 -4 -cert "$pki/www.pem" -key "$pki/www.key" \
  -alpn h2,http/1.1 -www -quiet
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/cases.pem" "$pki/cases.key"
serve "$HOST" python3 "$hosts" halfclose 7008   # says nothing until EOF: no TLS answer
[ -n "$gpy" ] && serve "$HOST" "$gpy" "$ends" grpc-server 50051 "$pki/cases.pem" "$pki/cases.key"
for p in 8444 8443 7008; do wait_port "$HOST" 127.0.0.1 $p; done
[ -n "$gpy" ] && wait_port "$HOST" 127.0.0.1 50051

# The counters of open connections (wgmitm's stats line), which must come
# back to zero after each case.
open_tcp() { wgmitm_stats | sed -n 's/.*stats: tcp open \([0-9]*\),.*/\1/p' | tail -1; }
zero_open() { [ "$(open_tcp)" = 0 ]; }
all_closed() { wait_for 15 zero_open || fail "$1: connections still open (tcp open $(open_tcp))"; }

# 1. ALPN the server refuses: s_client finishes its handshake with us, reads
# nothing, and closes (close_notify, FIN).
in_ns "$CLI" timeout 20 openssl s_client -connect "$HOST4:8444" -servername www.test -alpn ftp \
  -CAfile "$E2E_TMP/wgca.pem" </dev/null >"$E2E_TMP/alpn.out" 2>&1 ||
  fail "s_client -alpn ftp: $(tail -3 "$E2E_TMP/alpn.out")"
grep -q "No ALPN negotiated" "$E2E_TMP/alpn.out" || fail "s_client -alpn ftp: $(tail -5 "$E2E_TMP/alpn.out")"
# The same with a request: the 502 names the reason, then we close.
printf 'GET / HTTP/1.1\r\nHost: www.test\r\n\r\n' |
  in_ns "$CLI" timeout 20 openssl s_client -connect "$HOST4:8444" -servername www.test -alpn ftp \
    -quiet -CAfile "$E2E_TMP/wgca.pem" >"$E2E_TMP/alpn502.out" 2>&1 || true
grep -q "502" "$E2E_TMP/alpn502.out" || fail "no 502 for the refused ALPN: $(tail -5 "$E2E_TMP/alpn502.out")"
all_closed "s_client -alpn ftp"
say "s_client -alpn ftp: handshake with us, 502 on request, both connections closed"

# 2. Closes right after our certificate, without an alert: a reset, a FIN.
in_ns "$CLI" timeout 20 python3 "$ends" close "$HOST4" 8443 rst.test rst || fail "rst client"
in_ns "$CLI" timeout 20 python3 "$ends" close "$HOST4" 8443 fin.test fin || fail "fin client"
all_closed "FIN or reset after our certificate"
# The host now passes through for this client: the real certificate.
got=$(in_ns "$CLI" curl -sS --max-time 20 --cacert "$pki/ca.pem" --resolve "fin.test:8443:$HOST4" \
  "https://fin.test:8443/hello.txt") || fail "no passthrough after a FIN right after our certificate"
[ "$got" = hello ] || fail "passthrough answer differs: $got"
say "FIN or reset right after our certificate: rejections, the host passes through"

# 3. A client that half-closes while we talk to the upstream.
in_ns "$CLI" timeout 20 python3 "$ends" close "$HOST4" 7008 early.test early-fin ||
  fail "the connection half-closed during the upstream handshake did not end"
all_closed "FIN during the upstream handshake"
say "FIN during the upstream handshake: the connection ended"

# 4. gRPC: trusting our CA (recorded), then pinned to the real CA.
if [ -n "$gpy" ]; then
  got=$(in_ns "$CLI" timeout 30 "$gpy" "$ends" grpc-call "$HOST4" 50051 grpc.test "$E2E_TMP/wgca.pem") ||
    fail "gRPC call through the interception failed"
  [ "$got" = "pong:ping" ] || fail "gRPC answer: $got"
  if in_ns "$CLI" timeout 30 "$gpy" "$ends" grpc-call "$HOST4" 50051 pinned.test "$pki/ca.pem" \
      2>"$E2E_TMP/pinned.err"; then
    fail "a gRPC client pinned to the real CA accepted our certificate"
  fi
  got=$(in_ns "$CLI" timeout 30 "$gpy" "$ends" grpc-call "$HOST4" 50051 pinned.test "$pki/ca.pem") ||
    fail "the pinned gRPC client did not recover (no automatic passthrough)"
  [ "$got" = "pong:ping" ] || fail "pinned gRPC answer: $got"
  say "gRPC: intercepted and recorded; pinned client rejected once, then passed through"
fi

all_closed "the end"
say "counters: tcp open 0"

flows="$HOME_DIR/flows.jsonl"
python3 - "$flows" "${gpy:+grpc}" <<'PY' || fail "flow records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tcp = [r for r in recs if r["type"] == "tcp"]
http = [r for r in recs if r["type"] == "http"]
def need(cond, what):
    if not cond:
        sys.exit("missing: " + what + "\n" + "\n".join(json.dumps(r) for r in tcp))
def by(pred):
    return [r for r in tcp if pred(r)]
need(not by(lambda r: r["end_reason"] == "shutdown"), "no connection left to the shutdown")
alpn = by(lambda r: r.get("alpn_offered") == ["ftp"])
need(len(alpn) == 2 and all(r["end_reason"] == "tls:upstream_error" and
     "no application protocol" in r.get("tls_error", "") for r in alpn),
     "two ALPN-refused connections, tls:upstream_error")
need(any(h["url"].startswith("https://www.test") and h["response"] and h["response"]["status"] == 502
         for h in http), "the 502 as an http record")
for sni, word in (("rst.test", "reset the connection"), ("fin.test", "closed the connection")):
    rej = by(lambda r: r.get("sni") == sni and r["end_reason"] == "tls:client_rejected")
    need(rej and word in rej[0]["tls_error"], "%s: rejection (%s)" % (sni, word))
need(by(lambda r: r.get("sni") == "fin.test" and r.get("passthrough") == "auto"),
     "fin.test passed through afterwards")
early = by(lambda r: r.get("sni") == "early.test")
need(early and early[0]["end_reason"] == "tls:client_error" and
     "closed during the upstream handshake" in early[0]["tls_error"], "early FIN record")
if len(sys.argv) > 2 and sys.argv[2] == "grpc":
    g = by(lambda r: r.get("sni") == "grpc.test")
    need(g and g[0]["tls"]["client"]["alpn"] == "grpc-exp" and g[0]["tls"]["upstream"]["alpn"] == "grpc-exp",
         "gRPC connection with ALPN grpc-exp on both legs")
    calls = [h for h in http if h["conn"] == g[0]["id"]]
    need(calls and calls[0]["http_version"] == "HTTP/2" and calls[0]["url"].endswith("/echo.Echo/Say")
         and calls[0]["response"]["status"] == 200, "the gRPC call as an HTTP/2 record")
    p = by(lambda r: r.get("sni") == "pinned.test")
    need(any(r["end_reason"] == "tls:client_rejected" for r in p), "pinned gRPC client rejected")
    need(any(r.get("passthrough") == "auto" for r in p), "pinned gRPC client passed through")
print("records: %d tcp, %d http" % (len(tcp), len(http)))
PY
say "records checked"
say "PASS"
