#!/usr/bin/env bash
# The flow store's cost on the HTTPS path: intercepted HTTPS requests/s
# through wgmitm with the store following the log (the default) against
# the same endpoint with --no-store (flows.jsonl only), same run, same
# namespaces, alternating, REPS times each; prints the medians and the
# ratio on / off (the goal: at least 0.95), and wgmitm's cpu time per
# request (all its threads, from /proc) during the run and with the 2 s
# after it, when the store catches up (and of that the store thread's).
#
#   cli wireguard-go ── srv wgmitm (TLS intercepted, HTTP recorded) ── host: nginx
#
#   sudo bench/store.sh           (WGMITM=path, REPS=5, N=20000 requests each,
#                                  64 keep-alive HTTP/1.1 clients, 1 KiB bodies)
# Needs root, nginx (nginx-light: `scripts/setup --bench`) and h2load.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/wgmitm}
REPS=${REPS:-5}
N=${N:-20000}
source "$here/../tests/e2e/lib.sh"
require_root
for tool in nginx h2load; do
  command -v "$tool" >/dev/null || fail "$tool is needed (scripts/setup --bench)"
done

pki="$E2E_TMP/pki"
test_pki "$pki"
topology_hosts --upstream-ca "$pki/ca.pem"
WGMITM_HOME="$HOME_DIR" "$WGMITM" ca export >"$E2E_TMP/wgca.pem"

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
  types { text/plain txt; }
  keepalive_requests 1000000;
  server {
    listen 203.0.113.10:8443 ssl;
    ssl_certificate $pki/www.pem;
    ssl_certificate_key $pki/www.key;
    root $www;
  }
}
EOF
serve "$HOST" nginx -e "$E2E_TMP/nginx/error.log" -c "$E2E_TMP/nginx/nginx.conf"
wait_port "$HOST" 203.0.113.10 8443

# restart [run options]: a new wgmitm on the same home; the client's peer
# is set anew (its session dropped) so the next packet starts a handshake.
restart() {
  kill "$WGMITM_PID"; wait "$WGMITM_PID" 2>/dev/null || true
  : >"$E2E_TMP/wgmitm.log"
  start_wgmitm "$SRV" "$HOME_DIR" --upstream-ca "$pki/ca.pem" "$@"
  in_ns "$CLI" wg setconf wgc1 "$E2E_TMP/wgc1.setconf"
  wait_for 15 in_ns "$CLI" ping -c 1 -W 1 "$SRV4" || fail "the peer did not come back"
}

rps() {
  in_ns "$CLI" timeout 120 h2load -c 64 -n "$N" -t 1 --h1 --connect-to "203.0.113.10:8443" \
    "https://www.test:8443/1k.txt" >"$E2E_TMP/h2load.out" 2>&1 || true
  python3 - "$E2E_TMP/h2load.out" "$N" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
fin = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
ok = re.search(r"status codes: (\d+) 2xx", out)
if not fin or not ok or int(ok.group(1)) != int(sys.argv[2]):
    sys.stderr.write("h2load did not complete: " + " | ".join(out.strip().splitlines()[-6:]) + "\n")
    print("nan")
else:
    print(fin.group(1))
PY
}

# wgmitm's cpu time (all threads) in clock ticks; store_ticks: its store
# writer thread's.
ticks() { awk '{print $14 + $15}' "/proc/$WGMITM_PID/stat"; }
store_ticks() {
  local t
  for t in /proc/"$WGMITM_PID"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = wgmitm-store ] && awk '{print $14 + $15}' "$t/stat" && return
  done
  echo 0
}
hz=$(getconf CLK_TCK)
# measure ARRAY: one timed run into ARRAY; its cpu µs per request during
# the run, and including what follows within 2 s (the store's URL index),
# into ARRAY_cpu and ARRAY_all.
measure() {
  local t0 t1 t2 s0 s2 r
  t0=$(ticks) s0=$(store_ticks)
  r=$(rps)
  t1=$(ticks)
  sleep 2
  t2=$(ticks) s2=$(store_ticks)
  eval "$1+=(\"$r\")"
  eval "$1_cpu+=($(( (t1 - t0) * 1000000 / hz / N )))"
  eval "$1_all+=($(( (t2 - t0) * 1000000 / hz / N )))"
  eval "$1_store+=($(( (s2 - s0) * 1000000 / hz / N )))"
}

on=() off=() on_cpu=() off_cpu=() on_all=() off_all=() on_store=() off_store=()
for i in $(seq 1 "$REPS"); do
  restart
  rps >/dev/null # warm: leaf minted, upstream sessions cached
  measure on
  restart --no-store
  rps >/dev/null
  measure off
  say "rep $i: store on ${on[-1]} req/s (${on_cpu[-1]} us cpu/req, ${on_all[-1]} with the next 2 s," \
    "${on_store[-1]} in the store thread)," \
    "off ${off[-1]} req/s (${off_cpu[-1]} us, ${off_all[-1]})"
done
stored=$(WGMITM_HOME="$HOME_DIR" "$WGMITM" flows --limit 1 --json | wc -l)
[ "$stored" -ge 1 ] || fail "the store holds nothing"

python3 - "${on[*]}" "${off[*]}" "${on_cpu[*]}" "${off_cpu[*]}" "${on_all[*]}" "${off_all[*]}" \
  "${on_store[*]}" "${off_store[*]}" <<'PY'
import statistics, sys
col = [[float(x) for x in a.split()] for a in sys.argv[1:]]
med = [statistics.median(c) for c in col]
print(f"{'HTTPS (64 clients, HTTP/1.1), median of ' + str(len(col[0])):44s} {'store on':>9s} {'off':>9s} {'ratio':>7s}")
rows = [("req/s", med[0], med[1]), ("wgmitm cpu us/request during the run", med[2], med[3]),
        ("  with the next 2 s (the store catching up)", med[4], med[5])]
for name, a, b in rows:
    print(f"{name:44s} {a:9.0f} {b:9.0f} {a / b:7.3f}")
print(f"{'  of which the store thread':44s} {med[6]:9.0f}")
PY
