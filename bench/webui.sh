#!/usr/bin/env bash
# The web UI at scale: a store of N (1,000,000) generated flows against the
# baseline of 1,000, each rebuilt with `wgmitm store rebuild`, served by
# `wgmitm run` in a namespace of its own, measured in headless chromium
# (bench/webui/bench.mjs): time to the first rows, to the far end of the
# list, to a filtered list, to an open flow, and the page's JS heap.
#
#   sudo bench/webui.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
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
