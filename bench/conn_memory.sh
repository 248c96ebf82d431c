#!/usr/bin/env bash
# Memory per idle relayed TCP connection, against wireguard-go with kernel
# forwarding on the same namespaces in the same run.
#
#   ns cli (N idle connections) ── ns srv (wgmitm | wireguard-go) ── ns host (server)
#
# wgmitm's cost is its RSS growth plus the kernel memory (slab) its upstream
# sockets add; the baseline's is the kernel memory alone (wireguard-go keeps
# no per-connection state). The client and server sockets are in both.
#   bench/conn_memory.sh [N]     (default 10000; needs root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/wgmitm}
n=${1:-10000}
source "$here/../tests/e2e/lib.sh"
require_root
topology_hosts
serve "$HOST" python3 "$here/../tests/e2e/hosts.py" holdserver 7010
wait_port "$HOST" 127.0.0.1 7010

slab_kb() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }

# measure LABEL PID-or-empty: opens N idle connections, prints the growth.
measure() {
  local label=$1 pid=$2 rss0=0 rss1=0 s0 s1 start end holder
  sync; echo 2 >/proc/sys/vm/drop_caches 2>/dev/null || true
  [ -n "$pid" ] && rss0=$(rss_kb "$pid")
  s0=$(slab_kb)
  start=$(date +%s.%N)
  rm -f "$E2E_TMP/hold.out"
  in_ns "$CLI" python3 "$here/../tests/e2e/hosts.py" hold "$HOST4" 7010 "$n" 10 >"$E2E_TMP/hold.out" &
  holder=$!
  wait_for 120 grep -q open "$E2E_TMP/hold.out" || fail "could not open $n connections through $label"
  end=$(date +%s.%N)
  sleep 1
  [ -n "$pid" ] && rss1=$(rss_kb "$pid")
  s1=$(slab_kb)
  wait "$holder" || true
  awk -v l="$label" -v n="$n" -v r="$((rss1 - rss0))" -v s="$((s1 - s0))" -v a="$start" -v b="$end" 'BEGIN {
    printf "%-13s %6.0f conn/s to open; per connection: process %5.0f B + kernel %5.0f B = %5.0f B\n",
      l, n / (b - a), r * 1024 / n, s * 1024 / n, (r + s) * 1024 / n }'
  echo $(( (rss1 - rss0 + s1 - s0) * 1024 / n )) >"$E2E_TMP/cost-$label"
  sleep 2
}

measure wgmitm "$WGMITM_PID"
baseline_wireguard_go
measure wireguard-go ""
awk -v a="$(cat "$E2E_TMP/cost-wgmitm")" -v b="$(cat "$E2E_TMP/cost-wireguard-go")" \
  'BEGIN { printf "ratio wgmitm / wireguard-go memory per connection: %.2f\n", (b > 0 ? a / b : 0) }'
