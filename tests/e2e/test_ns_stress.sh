#!/usr/bin/env bash
# The network stack under bad conditions.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm) ── ns host (HTTP server)
#   (layout drawn in lib.sh: topology_hosts)
#
# 1. 5% of the tunnel's UDP datagrams dropped both ways (nftables in srv):
#    transfers still complete byte-exact (speed is bench/'s business).
# 2. Clients that stop reading: wgmitm stops reading the upstream sockets,
#    so its memory does not grow with the size of the downloads.
source "$(dirname "$0")/lib.sh"
require_root
command -v nft >/dev/null || fail "nft (package nftables) is needed for the loss test"
hosts="$(dirname "$0")/hosts.py"

topology_hosts
www="$E2E_TMP/www"
mkdir -p "$www"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$www/mid.bin"
head -c $((400 * 1024 * 1024)) /dev/zero >"$www/huge.bin"
serve "$HOST" python3 "$hosts" http "$www" 8080
wait_port "$HOST" 127.0.0.1 8080
sum() { sha256sum | cut -d' ' -f1; }
want=$(sum <"$www/mid.bin")

# 1. Loss on the tunnel path.
in_ns "$SRV" nft add table inet loss
in_ns "$SRV" nft add chain inet loss in '{ type filter hook input priority 0; }'
in_ns "$SRV" nft add chain inet loss out '{ type filter hook output priority 0; }'
in_ns "$SRV" nft add rule inet loss in udp dport 51820 numgen random mod 100 '<' 5 drop
in_ns "$SRV" nft add rule inet loss out udp sport 51820 numgen random mod 100 '<' 5 drop
got=$(in_ns "$CLI" curl -sS --max-time 300 "http://$HOST4:8080/mid.bin" | sum)
[ "$got" = "$want" ] || fail "download under 5% loss differs"
got=$(in_ns "$CLI" curl -sS --max-time 300 -T "$www/mid.bin" "http://[$HOST6]:8080/up")
[ "$got" = "$want" ] || fail "upload under 5% loss differs"
dropped=$(in_ns "$SRV" nft list ruleset | grep -c drop)
say "4 MiB each way under 5% loss: byte-exact ($dropped loss rules active)"
in_ns "$SRV" nft delete table inet loss

# 2. Four clients download 400 MiB each but read 64 KiB/s for 12 s.
base=$(rss_kb "$WGMITM_PID")
pids=()
for _ in 1 2 3 4; do
  in_ns "$CLI" timeout 60 python3 "$hosts" slowread "$HOST4" 8080 huge.bin 12 >>"$E2E_TMP/slow.out" &
  pids+=("$!")
done
peak=$base
for _ in $(seq 1 24); do
  sleep 0.5
  now=$(rss_kb "$WGMITM_PID")
  [ "$now" -gt "$peak" ] && peak=$now
done
for p in "${pids[@]}"; do wait "$p" || fail "slow reader failed"; done
growth=$(( (peak - base) / 1024 ))
say "slow readers: wgmitm RSS $((base / 1024)) MiB -> peak $((peak / 1024)) MiB (+$growth MiB) while 4 x 400 MiB were pending"
# Each connection may hold its windows (about 1 MiB each way in lwIP plus
# the upstream socket buffers); 64 MiB would mean the downloads were buffered.
[ "$growth" -lt 64 ] || fail "memory grew by $growth MiB: the upstream was not paused"
kill -0 "$WGMITM_PID" || fail "wgmitm died"
say "PASS"
