#!/usr/bin/env bash
# Hostile traffic while a real peer works.
#
#        ns cli                                   ns srv
#   wireguard-go wgc1 (peer "phone")         wgmitm run, UDP :51820
#   192.168.77.2/24  (peer)       ---veth--- 192.168.77.1/24
#   192.168.77.3/24  (flooder)
#
# 1. 100,000 random, truncated and unknown-index datagrams: the peer keeps
#    getting echo replies and the endpoint counts the drops.
# 2. A flood of initiations with a valid MAC1 from another address: the
#    endpoint answers with cookie replies, and the real peer still completes
#    a fresh handshake during the flood (retrying with MAC2).
source "$(dirname "$0")/lib.sh"
require_root
flood="$(dirname "$0")/wgflood.py"

home="$E2E_TMP/home"
srv=$(netns_add wgm-srv)
cli=$(netns_add wgm-cli)
read -r _ vcli < <(veth_pair "$srv" 192.168.77.1/24 "$cli" 192.168.77.2/24)
ip -n "$cli" addr add 192.168.77.3/24 dev "$vcli"

start_wgmitm "$srv" "$home"
WGMITM_HOME="$home" "$WGMITM" peer config phone --endpoint 192.168.77.1 >"$E2E_TMP/phone.conf"
srv4=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f1 | tr -d ' ')
pub=$(conf_value "$E2E_TMP/phone.conf" PublicKey)
wg_client "$cli" wgc1 "$E2E_TMP/phone.conf"
route_via "$cli" wgc1 "$srv4/32"
ip netns exec "$cli" ping -c 2 -i 0.2 -W 2 "$srv4" >/dev/null || fail "peer did not join"

# 1. Junk while pinging.
ip netns exec "$cli" ping -c 100 -i 0.05 -W 2 "$srv4" >"$E2E_TMP/ping1" 2>&1 &
pinger=$!
sent=$(ip netns exec "$cli" timeout 90 python3 "$flood" junk 192.168.77.1 51820 100000)
wait $pinger || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$E2E_TMP/ping1")
say "junk: $sent datagrams sent; peer got $received/100 echo replies meanwhile"
[ "$sent" -ge 99000 ] || fail "could only send $sent junk datagrams"
[ "${received:-0}" -ge 95 ] || fail "the real peer lost replies during junk: $received/100"
kill -0 "$WGMITM_PID" || fail "wgmitm died"
stats=$(wgmitm_stats)
echo "$stats" | grep 'drops:' || fail "no drop counters printed"
drops=$(echo "$stats" | grep 'drops:' | sed 's/.*drops: //' | grep -o '[0-9]\+' | awk '{ s += $1 } END { print s + 0 }')
say "drops counted: $drops"
[ "$drops" -ge 99000 ] || fail "only $drops of $sent junk datagrams counted as drops"
ip netns exec "$cli" ping -c 3 -i 0.2 -W 2 "$srv4" >/dev/null || fail "peer broken after junk"

# 2. Initiation flood with valid MAC1 from 192.168.77.3; meanwhile the peer
#    must complete a new handshake: remove and re-add it to force one.
ip netns exec "$cli" timeout 60 python3 "$flood" initiations 192.168.77.1 51820 "$pub" 14 \
  --bind 192.168.77.3 >"$E2E_TMP/flood.out" &
flooder=$!
sleep 1
ip netns exec "$cli" wg set wgc1 peer "$pub" remove
wg-quick strip "$E2E_TMP/wgc1.conf" >"$E2E_TMP/again"
ip netns exec "$cli" wg addconf wgc1 "$E2E_TMP/again"
start=$SECONDS
ok=0
while [ $((SECONDS - start)) -lt 12 ]; do
  if ip netns exec "$cli" ping -c 1 -W 1 "$srv4" >/dev/null 2>&1; then ok=1; break; fi
done
took=$((SECONDS - start))
wait $flooder || fail "flooder failed"
read -r _ fsent _ fcookies <"$E2E_TMP/flood.out"
say "flood: $fsent initiations, $fcookies cookie replies; real peer rejoined after ${took}s"
[ "$ok" = 1 ] || fail "the real peer could not complete a handshake during the flood"
[ "$fcookies" -gt 0 ] || fail "no cookie replies under load"
kill -0 "$WGMITM_PID" || fail "wgmitm died"
wgmitm_stats | grep -E 'stats: (drops|stats|peer)' | head -n 5
say "PASS"
