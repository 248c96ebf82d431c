#!/usr/bin/env bash
# Bulk TCP throughput and connection setup rate through the tunnel: wgmitm
# against wireguard-go (kernel forwarding) on the same namespaces, same run.
#
#   ns cli: wireguard-go client ── ns srv: wgmitm  (or: wireguard-go + kernel forwarding)
#                                      └── ns host: iperf3 -s
#
# Runs iperf3 single stream and 4 streams, upload and download, for each
# endpoint, and prints the ratio wgmitm / wireguard-go. Needs root.
#   bench/tunnel.sh [SECONDS]     (default 8 per run)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export WGMITM=${WGMITM:-$here/../build/wgmitm}
secs=${1:-8}
source "$here/../tests/e2e/lib.sh"
require_root
command -v iperf3 >/dev/null || fail "iperf3 is needed"

topology_hosts
serve "$HOST" iperf3 -s -p 5201
serve "$HOST" python3 "$here/../tests/e2e/hosts.py" holdserver 7010
wait_port "$HOST" 127.0.0.1 5201
wait_port "$HOST" 127.0.0.1 7010
setup_rate() { in_ns "$CLI" python3 "$here/../tests/e2e/hosts.py" setup-rate "$HOST4" 7010 "$secs"; }

# iperf3 NS ARGS: Mbit/s of the receiver side.
run_iperf() {
  local ns=$1; shift
  # The server takes one test at a time and may still be closing the last.
  # Each attempt is bounded: an endpoint that stopped forwarding would
  # otherwise hold the client (and this script) for good.
  for _ in 1 2 3; do
    if timeout -k 5 $((secs + 30)) ip netns exec "$ns" iperf3 -c "$HOST4" -p 5201 -t "$secs" \
      --connect-timeout 5000 -J "$@" >"$E2E_TMP/iperf.json" 2>&1 &&
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f" % (d["end"]["sum_received"]["bits_per_second"] / 1e6))' \
        "$E2E_TMP/iperf.json" 2>/dev/null; then
      return
    fi
    sleep 1
  done
  echo "iperf3 failed: $(head -c 300 "$E2E_TMP/iperf.json")" >&2
  echo 0
}

declare -A wgm base
cases=("1 stream up:-P 1" "1 stream down:-P 1 -R" "4 streams up:-P 4" "4 streams down:-P 4 -R")
for c in "${cases[@]}"; do
  name=${c%%:*}; args=${c#*:}
  # shellcheck disable=SC2086
  wgm[$name]=$(run_iperf "$CLI" $args)
  echo "wgmitm        $name: ${wgm[$name]} Mbit/s"
  if ! kill -0 "$WGMITM_PID" 2>/dev/null; then
    st=0; wait "$WGMITM_PID" || st=$?
    fail "wgmitm exited during \"$name\" with status $st (128+N: signal N)"
  fi
done

wgm_rate=$(setup_rate)
echo "wgmitm        connections/s: $wgm_rate"

# Baseline: the same client config against wireguard-go in srv, forwarding
# in the kernel to the host namespace.
baseline_wireguard_go
for c in "${cases[@]}"; do
  name=${c%%:*}; args=${c#*:}
  # shellcheck disable=SC2086
  base[$name]=$(run_iperf "$CLI" $args)
  echo "wireguard-go  $name: ${base[$name]} Mbit/s"
done

base_rate=$(setup_rate)
echo "wireguard-go  connections/s: $base_rate"

echo
printf '%-16s %10s %14s %7s\n' case wgmitm wireguard-go ratio
for c in "${cases[@]}"; do
  name=${c%%:*}
  awk -v n="$name" -v a="${wgm[$name]}" -v b="${base[$name]}" \
    'BEGIN { printf "%-16s %7d Mb/s %9d Mb/s %7.2f\n", n, a, b, (b > 0 ? a / b : 0) }'
done
awk -v a="$wgm_rate" -v b="$base_rate" \
  'BEGIN { printf "%-16s %7d /s   %9d /s   %7.2f\n", "conn setup", a, b, (b > 0 ? a / b : 0) }'
