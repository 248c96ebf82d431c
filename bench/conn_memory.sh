#!/usr/bin/env bash
# Memory per idle relayed TCP connection: wgmitm's RSS growth over 10,000
# connections, next to what the kernel spends on the same 10,000 sockets at
# the server (its TCP socket memory, /proc/net/sockstat) as the baseline.
#
#   ns cli (10,000 idle connections) ── ns srv (wgmitm) ── ns host (server)
#   bench/conn_memory.sh [N]     (default 10000; needs root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/src/wgmitm}
n=${1:-10000}
source "$here/../tests/e2e/lib.sh"
require_root
topology_hosts
serve "$HOST" python3 "$here/../tests/e2e/hosts.py" holdserver 7010
wait_port "$HOST" 127.0.0.1 7010

sockstat_kb() { in_ns "$1" awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) * 4 }' /proc/net/sockstat; }
rss0=$(rss_kb "$WGMITM_PID")
k0=$(sockstat_kb "$HOST")
start=$(date +%s.%N)
in_ns "$CLI" python3 "$here/../tests/e2e/hosts.py" hold "$HOST4" 7010 "$n" 20 >"$E2E_TMP/hold.out" &
holder=$!
wait_for 120 grep -q open "$E2E_TMP/hold.out" || fail "could not open $n connections"
end=$(date +%s.%N)
sleep 1
rss1=$(rss_kb "$WGMITM_PID")
k1=$(sockstat_kb "$HOST")
kill "$holder" 2>/dev/null || true
awk -v n="$n" -v r0="$rss0" -v r1="$rss1" -v k0="$k0" -v k1="$k1" -v a="$start" -v b="$end" 'BEGIN {
  w = (r1 - r0) * 1024 / n; k = (k1 - k0) * 1024 / n
  printf "%d idle connections opened in %.1f s (%.0f/s)\n", n, b - a, n / (b - a)
  printf "wgmitm RSS growth:            %8.0f bytes per connection (%d -> %d KiB)\n", w, r0, r1
  printf "kernel socket memory (server): %7.0f bytes per connection\n", k
  if (k > 0) printf "ratio wgmitm / kernel socket: %.2f\n", w / k
}'
