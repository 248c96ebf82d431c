#!/usr/bin/env bash
# Rekey under continuous traffic, then roaming, against wireguard-go.
#
#        ns cli                                   ns srv
#   wireguard-go wgc1 (peer "phone")         wgmitm run --debug-rekey-after 3
#   192.168.77.2/24               ---veth--- 192.168.77.1/24  --debug-reject-after 5
#
# The endpoint's shortened timers make its session expire every few seconds:
# it must start handshakes itself (initiator role) and rekey before
# rejecting, while a 20-per-second ping runs, without a stall. Then the
# client's UDP source port changes mid-stream and the replies follow it.
source "$(dirname "$0")/lib.sh"
require_root

home="$E2E_TMP/home"
srv=$(netns_add wgm-srv)
cli=$(netns_add wgm-cli)
veth_pair "$srv" 192.168.77.1/24 "$cli" 192.168.77.2/24 >/dev/null

start_wgmitm "$srv" "$home" --debug-rekey-after 3 --debug-reject-after 5 --debug-keepalive 2 \
  --debug-rekey-timeout 1
WGMITM_HOME="$home" "$WGMITM" peer config phone --endpoint 192.168.77.1 >"$E2E_TMP/phone.conf"
srv4=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f1 | tr -d ' ')
srv6=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f2 | tr -d ' ')
wg_client "$cli" wgc1 "$E2E_TMP/phone.conf"
route_via "$cli" wgc1 "$srv4/32" "$srv6/128"
ip netns exec "$cli" ping -c 2 -i 0.2 -W 2 "$srv4" >/dev/null || fail "peer did not join"

# longest_gap FILE: the longest run of missing icmp_seq numbers in ping output.
longest_gap() {
  grep -o 'icmp_seq=[0-9]*' "$1" | cut -d= -f2 | awk -v n="$2" '
    { got[$1] = 1 }
    END { run = 0; best = 0
          for (i = 1; i <= n; i++) { if (got[i]) run = 0; else if (++run > best) best = run }
          print best }'
}

# Rekey: 20 s of 20 pings per second spans several session lifetimes.
count=400
ip netns exec "$cli" ping -c $count -i 0.05 -W 1 "$srv4" >"$E2E_TMP/ping-rekey" 2>&1 || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$E2E_TMP/ping-rekey")
gap=$(longest_gap "$E2E_TMP/ping-rekey" $count)
stats=$(wgmitm_stats)
initiated=$(echo "$stats" | sed -n 's/.*handshakes \([0-9]*\).*/\1/p' | head -n 1)
say "rekey: $received/$count replies, longest gap $gap, handshakes $initiated"
[ "${initiated:-0}" -ge 4 ] || fail "expected several rekeys in 20 s, saw ${initiated:-0} handshakes"
[ "$gap" -le 4 ] || fail "traffic stalled during rekey: $gap consecutive pings lost"
[ "$received" -ge $((count - 8)) ] || fail "too many pings lost during rekeys: $received/$count"

# Roaming: the client's source port changes mid-stream.
ip netns exec "$cli" ping -c 100 -i 0.05 -W 1 "$srv6" >"$E2E_TMP/ping-roam" 2>&1 &
pinger=$!
sleep 1
ip netns exec "$cli" wg set wgc1 listen-port 40123
wait $pinger || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$E2E_TMP/ping-roam")
gap=$(longest_gap "$E2E_TMP/ping-roam" 100)
say "roaming: $received/100 replies, longest gap $gap"
wgmitm_stats | grep -q 'peer phone: endpoint 192.168.77.2:40123' ||
  fail "the endpoint did not follow the new source port"
[ "$gap" -le 4 ] || fail "traffic stalled when the client roamed: $gap lost in a row"
say "PASS"
