#!/usr/bin/env bash
# Phones join with configs from `wgmitm peer config` and ping the endpoint.
#
#        ns cli1                    ns srv                        ns cli2
#   wireguard-go wgc1         wgmitm run, UDP :51820          wireguard-go wgc2
#   peer "phone"              tunnel 10.66.77.1, pool6::1      peer "laptop" (added live)
#   192.168.77.2/24 ---veth--- 192.168.77.1/24
#                              192.168.78.1/24 ---veth--- 192.168.78.2/24
#
# Checks: first start creates "phone" and prints its QR; handshake and ping
# over IPv4 and IPv6; a peer added while running joins; both at once; a
# removed peer is refused while the other keeps working.
source "$(dirname "$0")/lib.sh"
require_root

home="$E2E_TMP/home"
srv=$(netns_add wgm-srv)
cli1=$(netns_add wgm-cli1)
cli2=$(netns_add wgm-cli2)
veth_pair "$srv" 192.168.77.1/24 "$cli1" 192.168.77.2/24 >/dev/null
veth_pair "$srv" 192.168.78.1/24 "$cli2" 192.168.78.2/24 >/dev/null

start_wgmitm "$srv" "$home"
grep -q 'created peer "phone"' "$E2E_TMP/wgmitm.log" || fail "first start did not create peer phone"
grep -q '▀\|▄\|█' "$E2E_TMP/wgmitm.log" || fail "first start printed no QR code"

WGMITM_HOME="$home" "$WGMITM" peer config phone --endpoint 192.168.77.1:51820 >"$E2E_TMP/phone.conf"
grep -q '^AllowedIPs = 0.0.0.0/0, ::/0$' "$E2E_TMP/phone.conf" || fail "phone config does not route everything"
srv4=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f1 | tr -d ' ')
srv6=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f2 | tr -d ' ')
[ -n "$srv4" ] && [ -n "$srv6" ] || fail "config has no DNS addresses: $(cat "$E2E_TMP/phone.conf")"
say "endpoint tunnel addresses: $srv4 $srv6"

wg_client "$cli1" wgc1 "$E2E_TMP/phone.conf"
route_via "$cli1" wgc1 "$srv4/32" "$srv6/128"

ip netns exec "$cli1" ping -c 3 -i 0.2 -W 2 "$srv4" >/dev/null || fail "phone: no IPv4 echo reply from $srv4"
ip netns exec "$cli1" ping -6 -c 3 -i 0.2 -W 2 "$srv6" >/dev/null || fail "phone: no IPv6 echo reply from $srv6"
ip netns exec "$cli1" wg show wgc1 latest-handshakes | awk '{exit !($2 > 0)}' ||
  fail "phone: no handshake recorded by wireguard-go"
say "phone joined: handshake done, IPv4 and IPv6 echo answered"

# A second peer added while the endpoint runs.
WGMITM_HOME="$home" "$WGMITM" peer add laptop --endpoint 192.168.78.1 >"$E2E_TMP/add.out"
grep -q 'PrivateKey' "$E2E_TMP/add.out" || fail "peer add printed no config"
WGMITM_HOME="$home" "$WGMITM" peer config laptop >"$E2E_TMP/laptop.conf"
grep -q '^Endpoint = 192.168.78.1:51820$' "$E2E_TMP/laptop.conf" || fail "laptop endpoint not kept"
wait_for 3 grep -q 'peer laptop ready' "$E2E_TMP/wgmitm.log" || fail "added peer not picked up within 3 s"
wg_client "$cli2" wgc2 "$E2E_TMP/laptop.conf"
route_via "$cli2" wgc2 "$srv4/32" "$srv6/128"
ip netns exec "$cli2" ping -c 3 -i 0.2 -W 2 "$srv4" >/dev/null || fail "laptop: no echo reply"

# Both at once.
ip netns exec "$cli1" ping -c 20 -i 0.05 -W 2 "$srv4" >"$E2E_TMP/p1" &
p1=$!
ip netns exec "$cli2" ping -6 -c 20 -i 0.05 -W 2 "$srv6" >"$E2E_TMP/p2" &
p2=$!
wait $p1 || fail "phone lost replies while laptop was active: $(tail -n 2 "$E2E_TMP/p1")"
wait $p2 || fail "laptop lost replies while phone was active: $(tail -n 2 "$E2E_TMP/p2")"
say "two peers at once: ok"

# Removal takes effect without a restart; the other peer is untouched.
WGMITM_HOME="$home" "$WGMITM" peer remove laptop >/dev/null
wait_for 3 grep -q 'peer laptop removed' "$E2E_TMP/wgmitm.log" || fail "removal not picked up within 3 s"
if ip netns exec "$cli2" ping -c 2 -i 0.2 -W 1 "$srv4" >/dev/null 2>&1; then
  fail "removed peer still gets replies"
fi
# Force a fresh handshake attempt: the endpoint must refuse it.
ip netns exec "$cli2" wg set wgc2 peer "$(conf_value "$E2E_TMP/laptop.conf" PublicKey)" remove
wg-quick strip "$E2E_TMP/wgc2.conf" >"$E2E_TMP/wgc2.again"
ip netns exec "$cli2" wg addconf wgc2 "$E2E_TMP/wgc2.again"
if ip netns exec "$cli2" ping -c 2 -i 0.5 -W 1 "$srv4" >/dev/null 2>&1; then
  fail "removed peer completed a new handshake"
fi
ip netns exec "$cli1" ping -c 3 -i 0.2 -W 2 "$srv4" >/dev/null || fail "phone broke after laptop was removed"
say "removed peer refused, remaining peer fine"

# A clean stop: SIGTERM exits 0.
kill -TERM "$WGMITM_PID"
wait "$WGMITM_PID" || fail "wgmitm exited non-zero on SIGTERM"
say "PASS"
