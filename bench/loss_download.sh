#!/usr/bin/env bash
# Download speed through wgmitm with and without random loss on the tunnel.
#
#   ns cli (wireguard-go, curl) ── ns srv (wgmitm) ── ns host (HTTP server)
#   (layout in tests/e2e/lib.sh: topology_hosts)
#
# Downloads SIZE_MIB (20) of random bytes RUNS (2) times with 0% and LOSS (5)%
# of the tunnel's UDP datagrams dropped each way (nftables numgen in srv, as
# tests/e2e/test_ns_stress.sh), checks every download byte-exact and prints
# MB/s, lwIP's sender being the one that recovers. Also one upload each way
# for comparison (Linux sender) and the client's UDP receive-buffer drops.
#
#   WGMITM=build-lr/wgmitm bench/loss_download.sh      (root)
source "$(dirname "$0")/../tests/e2e/lib.sh"
require_root
command -v nft >/dev/null || fail "nft (package nftables) is needed"
hosts="$(dirname "$0")/../tests/e2e/hosts.py"
SIZE_MIB=${SIZE_MIB:-20}
RUNS=${RUNS:-2}
LOSS=${LOSS:-5}

topology_hosts
www="$E2E_TMP/www"
mkdir -p "$www"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$www/f.bin"
serve "$HOST" python3 "$hosts" http "$www" 8080
wait_port "$HOST" 127.0.0.1 8080
want=$(sha256sum <"$www/f.bin" | cut -d' ' -f1)

udp_rcvbuf_errors() {
  in_ns "$CLI" nstat -az UdpRcvbufErrors | awk '$1 == "UdpRcvbufErrors" { print $2 }'
}

set_loss() {
  in_ns "$SRV" nft delete table inet loss 2>/dev/null || true
  [ "$1" -gt 0 ] || return 0
  in_ns "$SRV" nft add table inet loss
  in_ns "$SRV" nft add chain inet loss in '{ type filter hook input priority 0; }'
  in_ns "$SRV" nft add chain inet loss out '{ type filter hook output priority 0; }'
  in_ns "$SRV" nft add rule inet loss in udp dport 51820 numgen random mod 100 '<' "$1" drop
  in_ns "$SRV" nft add rule inet loss out udp sport 51820 numgen random mod 100 '<' "$1" drop
}

# One transfer; prints MB/s (10^6 bytes per second).
download() {
  local out="$E2E_TMP/got.bin" speed
  speed=$(in_ns "$CLI" curl -sS --max-time 600 -o "$out" -w '%{speed_download}' \
    "http://$HOST4:8080/f.bin") || fail "download failed"
  [ "$(sha256sum <"$out" | cut -d' ' -f1)" = "$want" ] || fail "download differs"
  rm -f "$out"
  awk -v s="$speed" 'BEGIN { printf "%.2f", s / 1e6 }'
}
upload() {
  local speed
  speed=$(in_ns "$CLI" curl -sS --max-time 600 -o /dev/null -w '%{speed_upload}' \
    -T "$www/f.bin" "http://$HOST4:8080/up") || fail "upload failed"
  awk -v s="$speed" 'BEGIN { printf "%.2f", s / 1e6 }'
}

for loss in 0 "$LOSS"; do
  set_loss "$loss"
  speeds=()
  drops0=$(udp_rcvbuf_errors)
  for _ in $(seq 1 "$RUNS"); do speeds+=("$(download)"); done
  drops=$(( $(udp_rcvbuf_errors) - drops0 ))
  say "loss ${loss}%: download ${SIZE_MIB} MiB: ${speeds[*]} MB/s (client UdpRcvbufErrors +$drops); upload $(upload) MB/s"
done
set_loss 0
