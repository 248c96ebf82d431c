#!/usr/bin/env bash
# The web UI at scale: a store of N (1,000,000) generated flows against the
# baseline of 1,000, each rebuilt with `wgmitm store rebuild`, served by
# `wgmitm run` in a namespace of its own, measured in headless chromium
# (bench/webui/bench.mjs): time to the first rows, to the far end of the
# list, to a filtered list, to an open flow, and the page's JS heap.
#
#   sudo bench/webui.sh [N]
#
# Soak: the flow list open and following for SECONDS (60) while a real
# WireGuard peer makes RATE (200, env SOAK_RATE) HTTP requests a second
# through wgmitm; the page's JS heap (after a garbage collection) at the
# start and the end, against the same page left idle as long (baseline),
# and the ratio of the two ends (bench/webui/soak.mjs, bench/webui/load.py).
#
#   sudo bench/webui.sh --soak [SECONDS]
#
#   ns cli: wireguard-go, load.py ── ns srv: wgmitm, chromium ── ns host: webui_server.py :8080
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = --soak ]; then
  secs=${2:-60}
  rate=${SOAK_RATE:-200}
  source "$here/../tests/e2e/lib.sh"
  require_root
  topology_hosts
  serve "$HOST" python3 "$here/../tests/e2e/webui_server.py" 8080
  wait_port "$HOST" 127.0.0.1 8080
  token=$(cat "$HOME_DIR/api-token")
  say "baseline: the page idle for $secs s"
  in_ns "$SRV" node "$here/webui/soak.mjs" http://127.0.0.1:8081 "$token" "$secs" | tee "$E2E_TMP/idle" | sed 's/^/[idle] /'
  say "soak: $rate flows/s for $secs s"
  # The load starts with the page (it waits 2 s for the live list) and
  # stops with it; bounded by its own count of requests.
  in_ns "$CLI" python3 "$here/webui/load.py" "$HOST4" 8080 "$rate" "$((secs + 2))" >"$E2E_TMP/load" 2>&1 &
  load_pid=$!
  in_ns "$SRV" node "$here/webui/soak.mjs" http://127.0.0.1:8081 "$token" "$secs" | tee "$E2E_TMP/soak" | sed 's/^/[soak] /'
  wait "$load_pid" || true
  say "load: $(cat "$E2E_TMP/load") ($(awk '{ printf "%.0f", $2 / $6 }' "$E2E_TMP/load") requests/s reached of $rate)"
  v() { awk -v k="$2" '$1 == k { print $2 }' "$E2E_TMP/$1"; }
  for k in heap_start_mb heap_end_mb heap_peak_mb; do
    say "$k: $(v soak $k) under $rate flows/s, $(v idle $k) idle (ratio $(python3 -c "print(round($(v soak $k) / max($(v idle $k), 0.01), 2))"))"
  done
  say "growth over $secs s: $(python3 -c "print(round($(v soak heap_end_mb) - $(v soak heap_start_mb), 2))") MB under load, $(python3 -c "print(round($(v idle heap_end_mb) - $(v idle heap_start_mb), 2))") MB idle"
  exit 0
fi
source "$here/../tests/e2e/lib.sh"
require_root
n=${1:-1000000}
ns=$(netns_add wgm-bench)
for size in 1000 "$n"; do
  home="$E2E_TMP/home-$size"
  mkdir -p "$home"
  python3 "$here/webui/gen.py" "$size" >"$home/flows.jsonl"
  t0=$(date +%s%N)
  WGMITM_HOME="$home" "$WGMITM" store rebuild >/dev/null
  say "$size flows: store rebuilt in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  : >"$E2E_TMP/wgmitm.log"
  start_wgmitm "$ns" "$home"
  token=$(cat "$home/api-token")
  in_ns "$ns" node "$here/webui/bench.mjs" http://127.0.0.1:8081 "$token" | sed "s/^/[$size flows] /" | tee "$E2E_TMP/res-$size"
  kill "$WGMITM_PID"; wait "$WGMITM_PID" 2>/dev/null || true
done
for k in first_rows_ms end_ms filter_ms open_ms heap_mb; do
  a=$(awk -v k="$k" '$3 == k { print $4 }' "$E2E_TMP/res-1000")
  b=$(awk -v k="$k" '$3 == k { print $4 }' "$E2E_TMP/res-$n")
  say "$k: $b at $n flows, $a at 1000 (ratio $(python3 -c "print(round($b / max($a, 0.1), 2))"))"
done
