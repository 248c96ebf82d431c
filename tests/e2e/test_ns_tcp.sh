#!/usr/bin/env bash
# TCP through the tunnel to real servers: wgmitm terminates every connection
# in lwIP and relays it to the original destination.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm) ── ns host (HTTP, echo servers)
#   (layout drawn in lib.sh: topology_hosts)
#
# HTTP over IPv4 and IPv6 byte-exact; 100 MiB download and upload with
# matching sha256; 500 parallel connections; half-close; a refused upstream
# gives a reset, not a timeout; every connection lands in the flows file.
source "$(dirname "$0")/lib.sh"
require_root
hosts="$(dirname "$0")/hosts.py"

topology_hosts
www="$E2E_TMP/www"
mkdir -p "$www"
head -c 1000003 /dev/urandom >"$www/small.bin"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$www/big.bin"
serve "$HOST" python3 "$hosts" http "$www" 8080
serve "$HOST" python3 "$hosts" tcpecho 7007
serve "$HOST" python3 "$hosts" halfclose 7008
wait_port "$HOST" 127.0.0.1 8080
wait_port "$HOST" 127.0.0.1 7007
wait_port "$HOST" 127.0.0.1 7008

sum() { sha256sum | cut -d' ' -f1; }
want_small=$(sum <"$www/small.bin")
want_big=$(sum <"$www/big.bin")

# HTTP over IPv4 and IPv6, byte-exact.
got=$(in_ns "$CLI" curl -sS --max-time 30 "http://$HOST4:8080/small.bin" | sum)
[ "$got" = "$want_small" ] || fail "IPv4 download differs"
got=$(in_ns "$CLI" curl -sS --max-time 30 "http://[$HOST6]:8080/small.bin" | sum)
[ "$got" = "$want_small" ] || fail "IPv6 download differs"
say "HTTP over IPv4 and IPv6: byte-exact"

# 100 MiB each way.
start=$(date +%s.%N)
got=$(in_ns "$CLI" curl -sS --max-time 240 "http://$HOST4:8080/big.bin" | sum)
[ "$got" = "$want_big" ] || fail "100 MiB download differs"
mid=$(date +%s.%N)
got=$(in_ns "$CLI" curl -sS --max-time 240 -T "$www/big.bin" "http://[$HOST6]:8080/up")
[ "$got" = "$want_big" ] || fail "100 MiB upload differs: server saw $got"
end=$(date +%s.%N)
say "100 MiB: $(awk -v a="$start" -v b="$mid" -v c="$end" 'BEGIN { printf "download %.1f MiB/s, upload %.1f MiB/s", 100 / (b - a), 100 / (c - b) }'), sha256 match"

# 500 parallel connections, all open at once.
in_ns "$CLI" timeout 120 python3 "$hosts" parallel "$HOST4" 7007 500 || fail "parallel connections failed"

# Half-close: the client shuts down writing and still reads the reply.
in_ns "$CLI" timeout 30 python3 "$hosts" halfclose-client "$HOST6" 7008 || fail "half-close broke"

# A refused upstream resets the client's connection (not a timeout).
set +e
in_ns "$CLI" curl -sS --max-time 20 "http://$HOST4:9/" >/dev/null 2>"$E2E_TMP/curl.err"
rc=$?
set -e
[ $rc -eq 7 ] || [ $rc -eq 55 ] || [ $rc -eq 56 ] || [ $rc -eq 52 ] ||
  fail "refused upstream: curl exit $rc ($(cat "$E2E_TMP/curl.err")), expected a reset"
say "refused upstream: client saw a reset (curl exit $rc)"

# Records: one line per connection, valid JSON, with bytes that add up.
flows="$HOME_DIR/flows.jsonl"
[ -s "$flows" ] || fail "no flows file"
python3 - "$flows" "$HOST4" "$HOST6" <<'PY' || fail "flow records incomplete"
import json, sys
path, h4, h6 = sys.argv[1:4]
recs = [json.loads(l) for l in open(path) if l.strip()]
tcp = [r for r in recs if r.get("type") == "tcp"]
big = [r for r in tcp if r.get("bytes_down", 0) >= 100 * 1024 * 1024]
up = [r for r in tcp if r.get("bytes_up", 0) >= 100 * 1024 * 1024]
echo = [r for r in tcp if r.get("server", "").endswith(":7007")]
refused = [r for r in tcp if r.get("server", "").endswith(":9")]
print("records: %d tcp, %d echo" % (len(tcp), len(echo)))
assert big and up, "no record of the 100 MiB transfers"
assert len(echo) >= 500, "only %d echo connections recorded" % len(echo)
assert all(r.get("peer") == "phone" for r in tcp), "peer name missing"
assert refused and refused[0].get("end_reason") == "upstream_refused", refused
PY
kill -0 "$WGMITM_PID" || fail "wgmitm died"
say "PASS"
