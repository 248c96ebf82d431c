#!/usr/bin/env bash
# Hostile traffic while a real peer works.
#
#        ns cli                                   ns srv                        ns new
#   wireguard-go wgc1 (peer "phone")         wgmitm run, UDP :51820          wireguard-go wgc2
#   192.168.77.2/24  (peer)       ---veth--- 192.168.77.1/24                 (peer "laptop", added live)
#   192.168.77.3/24  (flooder)               192.168.78.1/24 ---veth--- 192.168.78.2/24
#
# 1. 100,000 random, truncated and unknown-index datagrams: the peer keeps
#    getting echo replies and the endpoint counts the drops.
# 2. Initiation-sized junk (random bytes, so a wrong MAC1) at 300/s for 6 s,
#    more than the load threshold (128 a second): a new peer joining meanwhile
#    gets a handshake response at once, no cookie reply, because junk that
#    fails MAC1 is not load; the endpoint counts the junk as bad mac1.
# 3. A flood of initiations with a valid MAC1 from another address: the
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

# 2. Junk initiations at 300/s from 192.168.77.3 while "laptop" joins.
# stat_of NAME: the number after NAME in the stats lines on stdin (0 if none).
stat_of() { sed -n "s/.*$1 \([0-9][0-9]*\).*/\1/p" | awk '{ print; n++ } END { if (!n) print 0 }' | head -n 1; }
new=$(netns_add wgm-new)
veth_pair "$srv" 192.168.78.1/24 "$new" 192.168.78.2/24 >/dev/null
WGMITM_HOME="$home" "$WGMITM" peer add laptop --endpoint 192.168.78.1 >/dev/null
wait_for 3 grep -q 'peer laptop ready' "$E2E_TMP/wgmitm.log" || fail "added peer not picked up within 3 s"
WGMITM_HOME="$home" "$WGMITM" peer config laptop >"$E2E_TMP/laptop.conf"
stats=$(wgmitm_stats)
badmac_before=$(echo "$stats" | grep 'drops:' | stat_of 'bad mac1')
handshakes_before=$(echo "$stats" | stat_of 'handshakes')
ip netns exec "$cli" timeout 30 python3 "$flood" junkinit 192.168.77.1 51820 300 6 \
  --bind 192.168.77.3 >"$E2E_TMP/junkinit.out" &
jflooder=$!
# "ready": 200 sent, within one load window: counted as load, they would
# hold the endpoint under load from here to the end of the flood. Only now
# does the laptop come up (its first handshake goes out at once: the config
# has a persistent keepalive), and its first ping must be answered.
wait_for 10 grep -q ready "$E2E_TMP/junkinit.out" || fail "junk flooder did not start"
wg_client "$new" wgc2 "$E2E_TMP/laptop.conf"
route_via "$new" wgc2 "$srv4/32"
first=ok
ip netns exec "$new" ping -c 1 -W 2 "$srv4" >/dev/null 2>&1 || first=lost
wait $jflooder || fail "junk flooder failed"
read -r _ jsent _ jreplies < <(grep '^sent' "$E2E_TMP/junkinit.out")
stats=$(wgmitm_stats)
drops=$(echo "$stats" | grep 'drops:')
badmac=$(( $(echo "$drops" | stat_of 'bad mac1') - badmac_before ))
handshakes=$(( $(echo "$stats" | stat_of 'handshakes') - handshakes_before ))
cookies=$(echo "$stats" | stat_of 'cookie replies')
say "junk initiations: $jsent sent, $badmac counted as bad mac1, $jreplies answered; laptop's first ping: $first; handshakes +$handshakes, cookie replies $cookies"
[ "$jsent" -gt 0 ] && [ "$badmac" -ge "$jsent" ] || fail "junk initiations not all counted as bad mac1: $badmac of $jsent"
[ "$jreplies" = 0 ] || fail "junk with a wrong MAC1 got $jreplies answers"
[ "$cookies" = 0 ] || fail "cookie replies were sent ($cookies): junk put the endpoint under load"
! echo "$drops" | grep -q 'under load' || fail "handshakes dropped under load: $drops"
[ "$first" = ok ] || fail "the new peer's first ping got no reply during junk"
[ "$handshakes" -ge 1 ] || fail "no new handshake counted by the endpoint"
ip netns exec "$new" wg show wgc2 latest-handshakes | awk '{exit !($2 > 0)}' ||
  fail "laptop: no handshake recorded by wireguard-go"

# 3. Initiation flood with valid MAC1 from 192.168.77.3; meanwhile the peer
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
