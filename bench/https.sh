#!/usr/bin/env bash
# HTTPS through four paths to the same upstream, in one run:
#
#   direct     cli ──veth── srv (kernel forwarding) ──veth── host: nginx
#   vpn        cli wireguard-go ── srv wireguard-go + kernel forwarding ── host: nginx
#   wgmitm     cli wireguard-go ── srv wgmitm (TLS intercepted, HTTP recorded) ── host: nginx
#   mitmproxy  cli ──veth── srv mitmdump --mode reverse (TLS on both legs) ── host: nginx
#
# "direct" runs the load generator in the client namespace and reaches the
# host over the same two veths as the tunnels, routed by the kernel in srv:
# the same hops, no tunnel, no proxy. mitmproxy listens in srv on the veth
# address with its defaults (mitmdump keeps no flows and writes none: no
# -w file, no stream_large_bodies); wgmitm records every exchange to
# HOME/flows.jsonl with its default body cap.
#
# Metrics (each repeated REPS times, medians printed):
#   rps      h2load, 64 keep-alive connections, 1 KiB body, HTTP/1.1 and h2
#   latency  h2load -c 1 (sequential keep-alive requests), p50/p99 of the
#            per-request times in --log-file
#   tls      new TLS connections/s: CONC parallel `openssl s_time -new`
#            (full handshake, one HTTP/1.0 GET of the 1 KiB file, close;
#            no session resumption on the client side, no SNI)
#   stream   curl, one 100 MiB download, single stream, HTTP/1.1 and h2
# h2load and s_time do not verify certificates; curl does (each path's CA).
# wgmitm is warmed up first (its leaf certificate is cached and it resumes
# TLS sessions to the upstream, as in normal operation).
#
#   sudo bench/https.sh              (WGMITM=path/to/wgmitm, REPS=3, N=20000,
#                                     N_MITM=2000, CONC=8, TLS_SECS=5, PROFILE=1)
# Needs root, nginx (nginx-light) and mitmdump (`scripts/setup --bench`),
# h2load (nghttp2-client), curl,
# openssl; perf for the profile of wgmitm under load (PROFILE=0 skips it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/wgmitm}
REPS=${REPS:-3}
N=${N:-20000}
N_MITM=${N_MITM:-2000}
LAT_N=${LAT_N:-2000}
CONC=${CONC:-8}
TLS_SECS=${TLS_SECS:-5}
PROFILE=${PROFILE:-1}
source "$here/../tests/e2e/lib.sh"
require_root
for tool in nginx h2load mitmdump curl openssl; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done

load() { say "load: $(uptime | sed 's/.*load average/load average/')"; }
load

# Test PKI: the upstream's CA and a leaf for www.test and the host's address.
pki="$E2E_TMP/pki"
test_pki "$pki"

topology_hosts --upstream-ca "$pki/ca.pem"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"

# The upstream: nginx, TLS, HTTP/1.1 and h2 on one port, keep-alive.
www="$E2E_TMP/www"
mkdir -p "$www" "$E2E_TMP/nginx"
head -c 768 /dev/urandom | base64 -w0 | head -c 1024 >"$www/1k.txt"
head -c $((100 << 20)) /dev/urandom >"$www/100m.bin"
cat >"$E2E_TMP/nginx/nginx.conf" <<EOF
user root;
worker_processes 2;
pid $E2E_TMP/nginx/nginx.pid;
daemon off;
error_log $E2E_TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $E2E_TMP/nginx/body;
  proxy_temp_path $E2E_TMP/nginx/proxy;
  types { text/plain txt; application/octet-stream bin; }
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {
    listen 203.0.113.10:8443 ssl http2;
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

# Host ports as the client dials them: "ADDR PORT CAFILE" per target.
declare -A dial
dial[direct]="203.0.113.10 8443 $pki/ca.pem"
dial[vpn]="203.0.113.10 8443 $pki/ca.pem"
dial[wgmitm]="203.0.113.10 8443 $E2E_TMP/wgca.pem"
dial[mitmproxy]="192.168.77.1 8445 $E2E_TMP/mitm/mitmproxy-ca-cert.pem"
results="$E2E_TMP/results.tsv"
: >"$results"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }

# h2load_rps TARGET N [h2load args]: requests/s with 64 keep-alive clients.
h2load_rps() {
  local t=$1 n=$2; shift 2
  local addr port ca
  read -r addr port ca <<<"${dial[$t]}"
  in_ns "$CLI" timeout 120 h2load -c 64 -n "$n" -t 1 --connect-to "$addr:$port" "$@" \
    "https://www.test:$port/1k.txt" >"$E2E_TMP/h2load.out" 2>&1 || true
  python3 - "$E2E_TMP/h2load.out" "$n" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
n = int(sys.argv[2])
fin = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
req = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
codes = re.search(r"status codes: (\d+) 2xx", out)
if not (fin and req and codes) or int(req.group(2)) != n or int(codes.group(1)) != n:
    sys.stderr.write("h2load did not complete: " + " | ".join(out.strip().splitlines()[-8:]) + "\n")
    print("nan")
else:
    print(fin.group(3))
PY
}

# h2load_latency TARGET N [h2load args]: "p50 p99" in ms, one client, sequential.
h2load_latency() {
  local t=$1 n=$2; shift 2
  local addr port ca
  read -r addr port ca <<<"${dial[$t]}"
  rm -f "$E2E_TMP/lat.log"
  in_ns "$CLI" timeout 120 h2load -c 1 -n "$n" -t 1 --connect-to "$addr:$port" \
    --log-file "$E2E_TMP/lat.log" "$@" "https://www.test:$port/1k.txt" >"$E2E_TMP/h2load.out" 2>&1 || true
  python3 - "$E2E_TMP/lat.log" "$n" <<'PY'
import sys
try:
    rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
except OSError:
    rows = []
us = sorted(int(r[2]) for r in rows if r[1] == "200")
if len(us) != int(sys.argv[2]):
    sys.stderr.write("latency run: %d of %s requests succeeded\n" % (len(us), sys.argv[2]))
    print("nan nan")
else:
    pct = lambda p: us[min(len(us) - 1, int(p * len(us)))] / 1000.0
    print("%.3f %.3f" % (pct(0.50), pct(0.99)))
PY
}

# tls_rate TARGET: new TLS connections/s, CONC s_time clients in parallel.
tls_rate() {
  local t=$1 addr port ca i start end
  read -r addr port ca <<<"${dial[$t]}"
  start=$(date +%s.%N)
  for i in $(seq 1 "$CONC"); do
    in_ns "$CLI" timeout $((TLS_SECS + 30)) openssl s_time -connect "$addr:$port" -new \
      -time "$TLS_SECS" -www /1k.txt >"$E2E_TMP/stime.$i" 2>&1 &
  done
  wait
  end=$(date +%s.%N)
  cat "$E2E_TMP"/stime.* | python3 -c '
import re, sys
text = sys.stdin.read()
counts = [int(m) for m in re.findall(r"(\d+) connections in \d+ real seconds", text)]
if len(counts) != int(sys.argv[1]) or min(counts) == 0:
    sys.stderr.write("s_time: " + " | ".join(text.strip().splitlines()[-4:]) + "\n")
    print("nan")
else:
    print("%.0f" % (sum(counts) / (float(sys.argv[3]) - float(sys.argv[2]))))
' "$CONC" "$start" "$end"
  rm -f "$E2E_TMP"/stime.*
}

# stream TARGET CURL_PROTO MAXSECS: "MiB/s first-byte-seconds" of one 100 MiB download.
stream() {
  local t=$1 proto=$2 max=$3 addr port ca out
  read -r addr port ca <<<"${dial[$t]}"
  out=$(in_ns "$CLI" curl -sS "$proto" --max-time "$max" --cacert "$ca" --resolve "www.test:$port:$addr" \
    -o /dev/null -w '%{speed_download} %{size_download} %{time_starttransfer}' "https://www.test:$port/100m.bin") ||
    out="0 0 0"
  awk -v s="$out" 'BEGIN { split(s, a, " "); if (a[2] != 104857600) print "nan nan"; else printf "%.1f %.3f\n", a[1] / 1048576, a[3] }'
}

# measure TARGET N H2(yes/no): every metric REPS times.
measure() {
  local t=$1 n=$2 h2=$3 r v addr port ca
  read -r addr port ca <<<"${dial[$t]}"
  # Warm-up, and a check that the path verifies with the client's CA.
  in_ns "$CLI" curl -sS --max-time 30 --cacert "$ca" --resolve "www.test:$port:$addr" \
    -o /dev/null "https://www.test:$port/1k.txt" || fail "$t: HTTPS GET through this path failed"
  load
  for r in $(seq 1 "$REPS"); do
    v=$(h2load_rps "$t" "$n" --h1); record "$t" rps_h1 "$v"
    say "$t rep $r: HTTP/1.1 $v req/s"
    if [ "$h2" = yes ]; then
      v=$(h2load_rps "$t" "$n" -m 1); record "$t" rps_h2 "$v"
      say "$t rep $r: h2 $v req/s"
    fi
    read -r p50 p99 < <(h2load_latency "$t" "$( [ "$t" = mitmproxy ] && echo $((LAT_N / 4)) || echo "$LAT_N")" --h1)
    record "$t" p50_h1 "$p50"; record "$t" p99_h1 "$p99"
    say "$t rep $r: HTTP/1.1 c=1 p50 $p50 ms p99 $p99 ms"
    if [ "$h2" = yes ]; then
      read -r p50 p99 < <(h2load_latency "$t" "$LAT_N")
      record "$t" p50_h2 "$p50"; record "$t" p99_h2 "$p99"
      say "$t rep $r: h2 c=1 p50 $p50 ms p99 $p99 ms"
    fi
    v=$(tls_rate "$t"); record "$t" tls "$v"
    say "$t rep $r: $v new TLS connections/s ($CONC clients)"
    # mitmproxy holds a whole response before sending it (its default): one
    # HTTP/1.1 download with a longer bound.
    if [ "$t" != mitmproxy ] || [ "$r" = 1 ]; then
      read -r v ttfb < <(stream "$t" --http1.1 "$( [ "$t" = mitmproxy ] && echo 300 || echo 60)")
      record "$t" stream_h1 "$v"; record "$t" ttfb_h1 "$ttfb"
      say "$t rep $r: 100 MiB download HTTP/1.1 $v MiB/s, first byte after $ttfb s"
    fi
    if [ "$t" != mitmproxy ]; then
      read -r v ttfb < <(stream "$t" --http2 60)
      record "$t" stream_h2 "$v"; record "$t" ttfb_h2 "$ttfb"
      say "$t rep $r: 100 MiB download h2 $v MiB/s, first byte after $ttfb s"
    fi
  done
}

# profile WHAT CMD...: perf samples of wgmitm while CMD loads it.
profile() {
  local what=$1; shift
  "$@" >/dev/null 2>&1 &
  local loadpid=$!
  sleep 1
  perf record -F 999 -p "$WGMITM_PID" -o "$E2E_TMP/perf.data" -- sleep 4 >/dev/null 2>&1 || true
  wait "$loadpid" || true
  local samples
  samples=$({ perf script -i "$E2E_TMP/perf.data" -F period 2>/dev/null || true; } | wc -l)
  say "profile of wgmitm under $what (perf record -F 999 for 4 s: ${samples:-?} samples, about $(( ${samples:-0} / 40 ))% of one core; self time):"
  { perf report -i "$E2E_TMP/perf.data" --no-children --stdio --sort dso 2>/dev/null || true; } |
    grep -v '^#' | grep -v '^$' | head -6 | sed 's/^/    /' || true
  { perf report -i "$E2E_TMP/perf.data" --no-children --stdio --sort dso,symbol 2>/dev/null || true; } |
    grep -v '^#' | grep -v '^$' | head -20 | sed -e 's/ *- *- *$//' -e 's/^/    /' || true
}

# (c) wgmitm: the topology starts with it.
measure wgmitm "$N" yes
say "wgmitm recorded $(grep -c '"type":"http"\|"type": "http"' "$HOME_DIR/flows.jsonl" || true) HTTP exchanges"
before=$(wc -l <"$E2E_TMP/wgmitm.log")
kill -USR1 "$WGMITM_PID"
sleep 1
tail -n +"$((before + 1))" "$E2E_TMP/wgmitm.log" | grep -o "stats: \(tcp open\|streams tls\).*" | sed 's/^/    /' || true
say "wgmitm RSS: $(rss_kb "$WGMITM_PID") KiB"
if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
  profile "HTTP/1.1 keep-alive, 64 clients" \
    in_ns "$CLI" timeout 20 h2load --h1 -c 64 -D 7 -t 1 --connect-to 203.0.113.10:8443 https://www.test:8443/1k.txt
  TLS_SECS=7 profile "new TLS connections, $CONC clients" tls_rate wgmitm
  profile "100 MiB downloads (HTTP/1.1, one after another)" \
    in_ns "$CLI" timeout 8 bash -c "while curl -sS --http1.1 -o /dev/null --cacert $E2E_TMP/wgca.pem \
      --resolve www.test:8443:203.0.113.10 https://www.test:8443/100m.bin; do :; done"
fi

# (a) direct: the host's prefix routed over the veth, srv forwards.
in_ns "$SRV" sysctl -qw net.ipv4.ip_forward=1
ip -n "$CLI" route replace 203.0.113.0/24 via 192.168.77.1
measure direct "$N" yes

# (d) mitmproxy in srv, reverse proxy to the same upstream, over the veth.
mkdir -p "$E2E_TMP/mitm"
serve "$SRV" mitmdump --mode "reverse:https://203.0.113.10:8443" --listen-host 192.168.77.1 \
  --listen-port 8445 --set confdir="$E2E_TMP/mitm" --set ssl_verify_upstream_trusted_ca="$pki/ca.pem" -q
mitm_pid=${E2E_PIDS[-1]}
wait_port "$SRV" 192.168.77.1 8445
wait_for 10 test -s "$E2E_TMP/mitm/mitmproxy-ca-cert.pem" || fail "mitmproxy wrote no CA"
measure mitmproxy "$N_MITM" yes
say "mitmproxy RSS: $(rss_kb "$mitm_pid") KiB"

# (b) plain VPN: wireguard-go in srv instead of wgmitm, kernel forwarding.
ip -n "$CLI" route replace 203.0.113.0/24 dev wgc1
baseline_wireguard_go
measure vpn "$N" yes
load

python3 - "$results" <<'PY'
import math, statistics, sys
vals = {}
for line in open(sys.argv[1]):
    t, m, v = line.rstrip("\n").split("\t")
    vals.setdefault((t, m), []).append(float(v))
def med(t, m):
    xs = [x for x in vals.get((t, m), []) if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")
def runs(t, m):
    xs = vals.get((t, m), [])
    return "" if not xs else " ".join("%g" % x for x in xs)
targets = ["direct", "vpn", "wgmitm", "mitmproxy"]
metrics = [("rps_h1", "req/s HTTP/1.1 c=64", "%.0f"), ("rps_h2", "req/s h2 c=64", "%.0f"),
           ("p50_h1", "p50 ms HTTP/1.1 c=1", "%.3f"), ("p99_h1", "p99 ms HTTP/1.1 c=1", "%.3f"),
           ("p50_h2", "p50 ms h2 c=1", "%.3f"), ("p99_h2", "p99 ms h2 c=1", "%.3f"),
           ("tls", "new TLS conn/s", "%.0f"), ("stream_h1", "100 MiB HTTP/1.1 MiB/s", "%.1f"),
           ("ttfb_h1", "100 MiB HTTP/1.1 1st byte s", "%.3f"),
           ("stream_h2", "100 MiB h2 MiB/s", "%.1f"), ("ttfb_h2", "100 MiB h2 1st byte s", "%.3f")]
print()
print("medians of the runs")
print("%-28s" % "metric" + "".join("%12s" % t for t in targets))
for m, label, fmt in metrics:
    cells = []
    for t in targets:
        v = med(t, m)
        cells.append("%12s" % ("-" if math.isnan(v) else fmt % v))
    print("%-28s" % label + "".join(cells))
print()
print("all runs")
for m, label, _ in metrics:
    for t in targets:
        if vals.get((t, m)):
            print("  %-28s %-10s %s" % (label, t, runs(t, m)))
def ratio(a, b):
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")
print()
print("ratios")
r = ratio(med("wgmitm", "rps_h1"), med("mitmproxy", "rps_h1"))
print("  wgmitm / mitmproxy req/s HTTP/1.1   %6.1fx   goal >= 20x  %s" % (r, "met" if r >= 20 else "MISSED"))
r2 = ratio(med("wgmitm", "rps_h2"), med("mitmproxy", "rps_h2"))
print("  wgmitm / mitmproxy req/s h2         %6.1fx" % r2)
print("  wgmitm / VPN req/s HTTP/1.1         %6.2f" % ratio(med("wgmitm", "rps_h1"), med("vpn", "rps_h1")))
print("  wgmitm / VPN req/s h2               %6.2f" % ratio(med("wgmitm", "rps_h2"), med("vpn", "rps_h2")))
for proto in ("h1", "h2"):
    a50 = med("wgmitm", "p50_" + proto) - med("vpn", "p50_" + proto)
    a99 = med("wgmitm", "p99_" + proto) - med("vpn", "p99_" + proto)
    print("  wgmitm added over VPN %-3s c=1      p50 %+.3f ms  p99 %+.3f ms   goal p50 < 0.2 ms  %s"
          % (proto, a50, a99, "met" if a50 < 0.2 else "MISSED"))
m50 = med("mitmproxy", "p50_h1") - med("vpn", "p50_h1")
m99 = med("mitmproxy", "p99_h1") - med("vpn", "p99_h1")
print("  mitmproxy added over VPN h1  c=1    p50 %+.3f ms  p99 %+.3f ms" % (m50, m99))
print("  wgmitm / mitmproxy new TLS conn/s   %6.1fx" % ratio(med("wgmitm", "tls"), med("mitmproxy", "tls")))
print("  wgmitm / VPN new TLS conn/s         %6.2f" % ratio(med("wgmitm", "tls"), med("vpn", "tls")))
for proto in ("h1", "h2"):
    s = ratio(med("wgmitm", "stream_" + proto), med("direct", "stream_" + proto))
    print("  wgmitm / direct stream %-3s          %6.2f    goal >= 0.5  %s" % (proto, s, "met" if s >= 0.5 else "MISSED"))
    print("  wgmitm / VPN stream %-3s             %6.2f" % (proto, ratio(med("wgmitm", "stream_" + proto), med("vpn", "stream_" + proto))))
PY
