#!/usr/bin/env bash
# Crafted TCP from a real peer: hand-made segments from raw sockets in the
# client namespace, through wireguard-go and the tunnel, must not take the
# endpoint down for anyone.
#
#   ns cli (wireguard-go, raw sockets) ── ns srv (wgmitm) ── ns host
#   (layout drawn in lib.sh: topology_hosts)
#
# The bare FIN 2^31 before rcv_nxt that made lwIP assert ("insane offset!"),
# sent on a connection whose upstream never answers, so the relay still holds
# the client: the endpoint acknowledges it as a duplicate, counts no assert,
# and the peer keeps working.
source "$(dirname "$0")/lib.sh"
require_root
hosts="$(dirname "$0")/hosts.py"

topology_hosts
serve "$HOST" python3 "$hosts" tcpecho 7007
wait_port "$HOST" 127.0.0.1 7007
# Port 7999 of the host swallows SYNs: the upstream dial hangs.
in_ns "$HOST" nft -f - <<'NFT'
table inet e2e {
  chain in { type filter hook input priority 0; tcp dport 7999 drop; }
}
NFT
# The client kernel knows nothing of the raw connections: its resets to the
# endpoint's SYN-ACKs go, the raw sockets' own packets (IP id 4242) pass.
in_ns "$CLI" nft -f - <<'NFT'
table ip e2e {
  chain out { type filter hook output priority 0; tcp flags rst ip id != 4242 drop; }
}
NFT
cli4=$(conf_value "$E2E_TMP/phone.conf" Address | cut -d, -f1 | cut -d/ -f1 | tr -d ' ')

for i in 1 2 3; do
  in_ns "$CLI" timeout 30 python3 "$(dirname "$0")/rawtcp.py" fin-2pow31 "$cli4" "$HOST4" 7999 ||
    fail "crafted FIN $i: no duplicate ACK"
  kill -0 "$WGMITM_PID" 2>/dev/null || fail "the endpoint died on crafted FIN $i"
done
say "3 bare FINs 2^31 behind rcv_nxt: acknowledged as duplicates, endpoint up"

# The peer still works: a ping, and a relayed echo.
in_ns "$CLI" ping -c 1 -W 3 "$SRV4" >/dev/null || fail "ping after the crafted FINs"
got=$(in_ns "$CLI" timeout 10 python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 7007), 5)
s.sendall(b"still here")
print(s.recv(64).decode())' "$HOST4")
[ "$got" = "still here" ] || fail "echo after the crafted FINs: '$got'"

stats=$(wgmitm_stats)
grep -q "lwip asserts contained 0" <<<"$stats" || fail "an lwIP assert was hit: $(grep 'asserts' <<<"$stats")"
if grep -q "lwip: assertion" "$E2E_TMP/wgmitm.log"; then
  fail "lwIP asserted: $(grep 'lwip: assertion' "$E2E_TMP/wgmitm.log" | head -1)"
fi
say "peer still served; no lwIP assert"
kill -0 "$WGMITM_PID" || fail "wgmitm died"
say "PASS"
