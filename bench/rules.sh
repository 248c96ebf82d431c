#!/usr/bin/env bash
# HTTPS requests/s through wgmitm (64 keep-alive h2load clients, 1 KiB body,
# nginx upstream) with no rules, with 20 enabled rules that match no
# connection (they must leave every flow on the byte-for-byte path), and
# with one header rule that matches every request (the active HTTP layer),
# over HTTP/1.1 and h2, alternating in one run through HOME/rules.json
# reloads. Prints the medians and each set's ratio to "none".
#
#   ns cli (wireguard-go, h2load) ── ns srv (wgmitm) ── ns host (nginx :8443)
#
#   sudo bench/rules.sh        (WGMITM=path/to/wgmitm, REPS=3, N=20000)
# Needs root, nginx and h2load.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/wgmitm}
REPS=${REPS:-3}
N=${N:-20000}
source "$here/../tests/e2e/lib.sh"
require_root
for tool in nginx h2load; do command -v "$tool" >/dev/null || fail "$tool is needed"; done
say "load: $(uptime | sed 's/.*load average/load average/')"
pki="$E2E_TMP/pki"
test_pki "$pki"
topology_hosts --upstream-ca "$pki/ca.pem"
www="$E2E_TMP/www"
mkdir -p "$www" "$E2E_TMP/nginx"
head -c 768 /dev/urandom | base64 -w0 | head -c 1024 >"$www/1k.txt"
cat >"$E2E_TMP/nginx/nginx.conf" <<CONF
user root; worker_processes 2; pid $E2E_TMP/nginx/nginx.pid; daemon off;
error_log $E2E_TMP/nginx/error.log warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $E2E_TMP/nginx/body;
  server { listen 203.0.113.10:8443 ssl http2; ssl_certificate $pki/www.pem;
    ssl_certificate_key $pki/www.key; root $www; } }
CONF
serve "$HOST" nginx -e "$E2E_TMP/nginx/error.log" -c "$E2E_TMP/nginx/nginx.conf"
wait_port "$HOST" 203.0.113.10 8443

nomatch='['
for i in $(seq 1 20); do
  nomatch+="{\"id\": \"n$i\", \"conditions\": {\"host_pattern\": \"^nothing$i\\\\.example$\"},"
  nomatch+="\"actions\": [{\"type\": \"set_header\", \"name\": \"X-N\", \"value\": \"$i\"}]}"
  [ "$i" = 20 ] || nomatch+=','
done
nomatch+=']'
declare -A rules=(
  [none]='[]'
  [nomatch20]="$nomatch"
  [header_all]='[{"id": "all", "actions": [{"type": "set_header", "name": "X-Bench", "value": "1"}]}]'
)
sets=(none nomatch20 header_all)
loaded() { grep -c 'rules.json: [0-9]* rules' "$E2E_TMP/wgmitm.log" || true; }
loaded_since() { [ "$(loaded)" -gt "$1" ]; }
use_rules() {
  local before
  before=$(loaded)
  printf '{"rules": %s}\n' "${rules[$1]}" >"$HOME_DIR/rules.json"
  # The watcher logs each load; wait for this one.
  wait_for 10 loaded_since "$before" || fail "rules.json ($1) was not loaded"
}

rps() { # proto
  local extra=()
  [ "$1" = h1 ] && extra=(--h1)
  in_ns "$CLI" timeout 120 h2load -c 64 -n "$N" -t 1 "${extra[@]}" \
    --connect-to "$HOST4:8443" "https://www.test:8443/1k.txt" >"$E2E_TMP/h2load.out" 2>&1 || true
  python3 - "$E2E_TMP/h2load.out" "$N" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
n = int(sys.argv[2])
fin = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
codes = re.search(r"status codes: (\d+) 2xx", out)
print(fin.group(1) if fin and codes and int(codes.group(1)) == n else "nan")
PY
}

# Warm up: the leaf certificate, upstream sessions.
rps h1 >/dev/null
results="$E2E_TMP/results.tsv"
: >"$results"
for rep in $(seq 1 "$REPS"); do
  for s in "${sets[@]}"; do
    use_rules "$s"
    for proto in h1 h2; do
      v=$(rps "$proto")
      printf '%s\t%s\t%s\n' "$s" "$proto" "$v" >>"$results"
      say "rep $rep: $s $proto $v req/s"
    done
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = {}
for s, p, v in rows:
    med.setdefault((s, p), []).append(float(v))
print("%-12s %-4s %12s %8s" % ("rules", "http", "req/s", "ratio"))
for p in ("h1", "h2"):
    base = statistics.median(med[("none", p)])
    for s in ("none", "nomatch20", "header_all"):
        m = statistics.median(med[(s, p)])
        print("%-12s %-4s %12.0f %8.3f" % (s, p, m, m / base))
PY
say "done"
