#!/usr/bin/env bash
# wgmitm's HTTP proxy listener (`run --http-proxy`) against mitmproxy's
# regular (explicit proxy) mode, in one run, to the same upstream:
#
#   ns srv: load client ── 127.0.0.1:18080 wgmitm run --http-proxy ──┐
#           load client ── 127.0.0.1:18081 mitmdump --mode regular ──┴─veth── ns host: nginx
#
# Both proxies run side by side in srv for the whole run and are measured in
# turns: each rep runs every metric through one and then the other, the
# order swapped on every rep; medians of REPS are printed with the ratio
# wgmitm / mitmproxy. Both intercept TLS (each with its own CA, trusted by
# the client; both trust the upstream's test CA). Both run with their
# defaults: wgmitm records every exchange to HOME/flows.jsonl and its store;
# mitmdump (-q) parses every flow and passes it to its addons but keeps no
# list of flows (that is mitmweb's and the console's view) and writes no
# file. MITM_WRITE=1 makes mitmdump record too (-w FILE, every flow written
# to disk), closer to what wgmitm does.
# nginx serves a 1 KiB file over HTTPS (8443) and plain HTTP (8080).
#
# Metrics, requests/s computed from the elapsed time of each run:
#   connect_ka  HTTPS through CONNECT: CONC tunnels (CONNECT, TLS with the
#               proxy's CA), then N keep-alive GETs spread over them; the
#               clock starts once every tunnel is up
#   plain       plain HTTP in absolute form (GET http://www.test:8080/...),
#               one request per client connection for both proxies: wgmitm
#               answers every absolute-form request with Connection: close,
#               so mitmproxy is given the same (the client sends
#               Connection: close and opens a new connection per request)
#   connect_new a new connection per request: CONNECT, a full TLS handshake
#               (no session resumption on the client side), one GET, close
# The load client is a small Python asyncio program (below; h2load cannot
# use a proxy) with CONC connections at once. Every response must be a 200
# whose body is the file's bytes; a run with any failure counts as nan.
# mitmproxy is far slower: it gets smaller counts (the _MITM variables).
# The machine's cores are shared by the client, the proxy under test and
# nginx (the other proxy idles meanwhile): each run prints the CPU share
# the proxy and the client used, and the load average and the core count
# are printed at the start and the end. On a small machine (2 cores) the
# Python client takes a core of its own, so the fastest rates are partly
# the client's; the CPU shares say which side was saturated.
#
#   sudo bench/proxy.sh          (WGMITM=path/to/wgmitm, REPS=3, CONC=16,
#                                 N=20000, N_MITM=3000 keep-alive requests,
#                                 PLAIN=5000, PLAIN_MITM=1000 plain requests,
#                                 NEW=2000, NEW_MITM=500 new TLS connections,
#                                 MITM_WRITE=0)
# Needs root, nginx (nginx-light) and mitmdump (`scripts/setup --bench`),
# python3, curl, openssl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/wgmitm}
REPS=${REPS:-3}
CONC=${CONC:-16}
N=${N:-20000}
N_MITM=${N_MITM:-3000}
PLAIN=${PLAIN:-5000}
PLAIN_MITM=${PLAIN_MITM:-1000}
NEW=${NEW:-2000}
NEW_MITM=${NEW_MITM:-500}
MITM_WRITE=${MITM_WRITE:-0}
source "$here/../tests/e2e/lib.sh"
require_root
for tool in nginx mitmdump python3 curl openssl; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done

load() { say "load: $(uptime | sed 's/.*load average/load average/') on $(nproc) cores"; }
load

pki="$E2E_TMP/pki"
test_pki "$pki"
SRV=$(netns_add wgm-srv)
HOST=$(netns_add wgm-host)
veth_pair "$SRV" 203.0.113.1/24 "$HOST" 203.0.113.10/24 >/dev/null
# Both proxies resolve www.test through /etc/hosts: lib.sh runs this script
# in a mount namespace of its own, so the bind mount is seen here only.
printf '127.0.0.1 localhost\n203.0.113.10 www.test\n' >"$E2E_TMP/hosts"
mount --bind "$E2E_TMP/hosts" /etc/hosts
# Thousands of short connections per run: TIME_WAIT must not run the
# namespace out of ports (sysctls of srv's network namespace only).
in_ns "$SRV" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"

# The upstream: nginx, HTTPS and plain HTTP, keep-alive without a limit.
www="$E2E_TMP/www"
mkdir -p "$www" "$E2E_TMP/nginx"
head -c 768 /dev/urandom | base64 -w0 | head -c 1024 >"$www/1k.txt"
cat >"$E2E_TMP/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $E2E_TMP/nginx/nginx.pid;
daemon off;
error_log $E2E_TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $E2E_TMP/nginx/body;
  proxy_temp_path $E2E_TMP/nginx/proxy;
  types { text/plain txt; }
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {
    listen 203.0.113.10:8443 ssl;
    listen 203.0.113.10:8080;
    ssl_certificate $pki/www.pem;
    ssl_certificate_key $pki/www.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:10m;
    root $www;
  }
}
EOF
serve "$HOST" nginx -e "$E2E_TMP/nginx/error.log" -c "$E2E_TMP/nginx/nginx.conf"
wait_port "$HOST" 203.0.113.10 8443
wait_port "$HOST" 203.0.113.10 8080

# wgmitm: the tunnel on a loopback port nobody uses, the proxy on 18080.
HOME_DIR="$E2E_TMP/home"
start_wgmitm "$SRV" "$HOME_DIR" --listen 127.0.0.1:0 --upstream-ca "$pki/ca.pem" --http-proxy 18080
wait_for 10 grep -q "HTTP proxy.* on 127.0.0.1:18080" "$E2E_TMP/wgmitm.log" || fail "the proxy listener did not start"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"

# mitmdump in regular mode; its first start writes its CA into confdir.
mkdir -p "$E2E_TMP/mitm"
mitm_write=()
[ "$MITM_WRITE" = 1 ] && mitm_write=(-w "$E2E_TMP/mitm/flows")
serve "$SRV" mitmdump --mode regular --listen-host 127.0.0.1 --listen-port 18081 \
  --set confdir="$E2E_TMP/mitm" --set ssl_verify_upstream_trusted_ca="$pki/ca.pem" -q "${mitm_write[@]}"
mitm_pid=${E2E_PIDS[-1]}
wait_port "$SRV" 127.0.0.1 18081
wait_for 10 test -s "$E2E_TMP/mitm/mitmproxy-ca-cert.pem" || fail "mitmproxy wrote no CA"

# "PORT CAFILE" per proxy.
declare -A proxy
proxy[wgmitm]="18080 $E2E_TMP/wgca.pem"
proxy[mitmproxy]="18081 $E2E_TMP/mitm/mitmproxy-ca-cert.pem"
# ip netns exec and env exec their command: these are the proxies' PIDs.
declare -A proxy_pid
proxy_pid[wgmitm]=$WGMITM_PID
proxy_pid[mitmproxy]=$mitm_pid

# The load client: python3 load.py MODE PROXY_PORT N CONC CAFILE BODYFILE SECS
# prints "REQ/S OK FAILED SECONDS CPU_SECONDS" (REQ/S nan unless all N
# succeeded; CPU_SECONDS: the client's own, during the timed part).
cat >"$E2E_TMP/load.py" <<'PY'
import asyncio, ssl, sys, time

mode, port, n, conc, cafile, bodyfile, secs = sys.argv[1:8]
port, n, conc, secs = int(port), int(n), int(conc), float(secs)
body = open(bodyfile, "rb").read()
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
ok = failed = 0
first_error = None
left = n

async def read_response(r):
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    if "content-length" in fields:
        data = await r.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        data = b""
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            data += await r.readexactly(size + 2)
            data = data[:-2]
            if size == 0:
                await r.readuntil(b"\r\n")
                break
    else:
        raise ValueError("response without a length: %r" % lines[0])
    if status[1] != "200" or data != body:
        raise ValueError("%s, %d body bytes" % (lines[0], len(data)))

async def connect_tunnel():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"CONNECT www.test:8443 HTTP/1.1\r\nHost: www.test:8443\r\n\r\n")
    head = await r.readuntil(b"\r\n\r\n")
    if head.split(b" ", 2)[1] != b"200":
        raise ValueError("CONNECT: %r" % head.split(b"\r\n")[0])
    await w.start_tls(ctx, server_hostname="www.test")
    return r, w

async def close(w):
    w.close()
    try:
        await asyncio.wait_for(w.wait_closed(), 5)
    except Exception:
        pass

def failure(e):
    global failed, first_error
    failed += 1
    first_error = first_error or "%s: %s" % (type(e).__name__, e)

def take():
    global left
    if left <= 0:
        return False
    left -= 1
    return True

async def keepalive(rw):
    global ok
    req = b"GET /1k.txt HTTP/1.1\r\nHost: www.test:8443\r\n\r\n"
    while take():
        try:
            if rw is None:
                rw = await connect_tunnel()
            rw[1].write(req)
            await read_response(rw[0])
            ok += 1
        except Exception as e:
            failure(e)
            if rw is not None:
                rw[1].transport.abort()
            rw = None
    if rw is not None:
        await close(rw[1])

async def one_per_connection():
    global ok
    while take():
        w = None
        try:
            if mode == "plain":
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET http://www.test:8080/1k.txt HTTP/1.1\r\nHost: www.test:8080\r\nConnection: close\r\n\r\n")
            else:
                r, w = await connect_tunnel()
                w.write(b"GET /1k.txt HTTP/1.1\r\nHost: www.test:8443\r\nConnection: close\r\n\r\n")
            await read_response(r)
            ok += 1
        except Exception as e:
            failure(e)
        if w is not None:
            await close(w)

async def main():
    if mode == "connect_ka":
        tunnels = await asyncio.gather(*(connect_tunnel() for _ in range(conc)), return_exceptions=True)
        for t in tunnels:
            if isinstance(t, BaseException):
                failure(t)
        start, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(keepalive(None if isinstance(t, BaseException) else t) for t in tunnels))
    else:
        start, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(one_per_connection() for _ in range(conc)))
    return time.monotonic() - start, time.process_time() - cpu

try:
    elapsed, cpu = asyncio.run(asyncio.wait_for(main(), secs))
except asyncio.TimeoutError:
    elapsed, cpu, first_error = secs, 0.0, first_error or "timed out after %g s" % secs
    failed += left
if first_error:
    sys.stderr.write("load %s: %d failed, first: %s\n" % (mode, failed, first_error))
rate = "%.1f" % (ok / elapsed) if ok == n and failed == 0 else "nan"
print("%s %d %d %.3f %.3f" % (rate, ok, failed, elapsed, cpu))
PY

results="$E2E_TMP/results.tsv"
: >"$results"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }

# cpu_ticks PID: user and system time of a process, in clock ticks.
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# share CPU_SECONDS SECONDS: a percentage of one core.
share() { awk -v c="$1" -v s="$2" 'BEGIN { printf "%.0f%%", (s > 0 ? 100 * c / s : 0) }'; }

# run_load PROXY MODE N: one bounded run of the load client; records its rate.
run_load() {
  local t=$1 mode=$2 n=$3 port ca out rate ok failed secs cpu pid before after
  read -r port ca <<<"${proxy[$t]}"
  pid=${proxy_pid[$t]}
  before=$(cpu_ticks "$pid")
  out=$(in_ns "$SRV" timeout 100 python3 "$E2E_TMP/load.py" "$mode" "$port" "$n" "$CONC" "$ca" \
    "$www/1k.txt" 90 2>>"$E2E_TMP/load.err") || out="nan 0 $n 0 0"
  after=$(cpu_ticks "$pid")
  read -r rate ok failed secs cpu <<<"$out"
  record "$t" "$mode" "$rate"
  # The proxy's ticks include the client's connection setup in connect_ka:
  # a share, not an exact figure.
  say "$t rep $r: $mode $rate req/s ($ok ok, $failed failed, $n in ${secs}s;" \
    "CPU: proxy $(share "$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN { print t / hz }')" "$secs")," \
    "client $(share "$cpu" "$secs"))"
  if [ "$failed" != 0 ]; then tail -n 1 "$E2E_TMP/load.err" | sed 's/^/    /'; fi
}

# Warm-up, and a check that each path verifies with the client's CA: the
# proxies' leaf certificates for www.test are made here, not in rep 1.
for t in wgmitm mitmproxy; do
  read -r port ca <<<"${proxy[$t]}"
  for url in https://www.test:8443/1k.txt http://www.test:8080/1k.txt; do
    in_ns "$SRV" curl -sS --max-time 30 --cacert "$ca" -x "http://127.0.0.1:$port" -o "$E2E_TMP/got" "$url" ||
      fail "$t: GET $url through the proxy failed"
    cmp -s "$E2E_TMP/got" "$www/1k.txt" || fail "$t: GET $url returned other bytes"
  done
done
load

for r in $(seq 1 "$REPS"); do
  if [ $((r % 2)) = 1 ]; then order="wgmitm mitmproxy"; else order="mitmproxy wgmitm"; fi
  for t in $order; do
    if [ "$t" = mitmproxy ]; then
      run_load "$t" connect_ka "$N_MITM"; run_load "$t" plain "$PLAIN_MITM"; run_load "$t" connect_new "$NEW_MITM"
    else
      run_load "$t" connect_ka "$N"; run_load "$t" plain "$PLAIN"; run_load "$t" connect_new "$NEW"
    fi
  done
done
load

# What wgmitm recorded: every request of the runs and the warm-up (records
# are written as exchanges end; give the last ones a moment).
sent=$((REPS * (N + PLAIN + NEW) + 2))
count_http() { grep -c '"type": *"http"' "$HOME_DIR/flows.jsonl" || true; }
wait_for 5 test "$(count_http)" -ge "$sent" || true
say "wgmitm recorded $(count_http) HTTP exchanges ($sent requests sent)"
[ "$MITM_WRITE" = 1 ] && say "mitmdump wrote $(du -k "$E2E_TMP/mitm/flows" | cut -f1) KiB of flows"
wgmitm_stats | grep -o "stats: \(tcp open\|streams tls\).*" | sed 's/^/    /' || true
say "RSS: wgmitm $(rss_kb "$WGMITM_PID") KiB, mitmdump $(rss_kb "$mitm_pid") KiB"
warns=$(awk '$2 == "warn" || $2 == "error"' "$E2E_TMP/wgmitm.log" | wc -l)
say "wgmitm log: $warns warn or error lines"
awk '$2 == "warn" || $2 == "error"' "$E2E_TMP/wgmitm.log" | head -5 | sed 's/^/    /' || true
[ -s "$E2E_TMP/load.err" ] && { say "load client errors:"; sed 's/^/    /' "$E2E_TMP/load.err"; }

python3 - "$results" "$CONC" <<'PY'
import math, statistics, sys
vals = {}
for line in open(sys.argv[1]):
    t, m, v = line.rstrip("\n").split("\t")
    vals.setdefault((t, m), []).append(float(v))
def med(t, m):
    xs = vals.get((t, m), [])
    # One failed run makes the metric nan: a median would hide it.
    return float("nan") if not xs or any(math.isnan(x) for x in xs) else statistics.median(xs)
metrics = [("connect_ka", "HTTPS CONNECT keep-alive req/s"),
           ("plain", "HTTP absolute-form req/s (new conn)"),
           ("connect_new", "new CONNECT+TLS conn/s")]
print()
print("medians of the runs, %s concurrent connections" % sys.argv[2])
print("%-38s%12s%12s%20s" % ("metric", "wgmitm", "mitmproxy", "wgmitm/mitmproxy"))
for m, label in metrics:
    a, b = med("wgmitm", m), med("mitmproxy", m)
    r = a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")
    print("%-38s%12.0f%12.0f%19.1fx" % (label, a, b, r))
print()
print("all runs")
for m, label in metrics:
    for t in ("wgmitm", "mitmproxy"):
        print("  %-38s %-10s %s" % (label, t, " ".join("%g" % x for x in vals.get((t, m), []))))
PY
