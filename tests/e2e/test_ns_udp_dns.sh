#!/usr/bin/env bash
# UDP and DNS through the tunnel.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm --dns-upstream 203.0.113.10) ── ns host (dnsmasq, UDP echo)
#   (layout drawn in lib.sh: topology_hosts)
#
# UDP echo over IPv4 and IPv6; the tunnel's DNS address answers A and AAAA
# by asking the upstream resolver; queries and UDP flows are recorded.
source "$(dirname "$0")/lib.sh"
require_root
command -v dnsmasq >/dev/null || fail "dnsmasq is needed"
command -v dig >/dev/null || fail "dig (bind9-dnsutils) is needed"
hosts="$(dirname "$0")/hosts.py"

topology_hosts --dns-upstream 203.0.113.10
serve "$HOST" python3 "$hosts" udpecho 7009
cat >"$E2E_TMP/hosts.dns" <<HOSTS
203.0.113.10 www.test.example
2001:db8:1::10 www.test.example
HOSTS
serve "$HOST" dnsmasq --no-daemon --no-resolv --no-hosts --local=/test.example/ --addn-hosts="$E2E_TMP/hosts.dns" \
  --listen-address=203.0.113.10 --bind-interfaces --port=53 --log-queries --pid-file="$E2E_TMP/dnsmasq.pid"
wait_for 10 in_ns "$HOST" dig +short +time=1 +tries=1 @203.0.113.10 www.test.example A ||
  fail "dnsmasq did not start"

in_ns "$CLI" timeout 60 python3 "$hosts" udp-client "$HOST4" 7009 50 || fail "UDP echo over IPv4"
in_ns "$CLI" timeout 60 python3 "$hosts" udp-client "$HOST6" 7009 50 || fail "UDP echo over IPv6"
say "UDP echo over IPv4 and IPv6: ok"

a=$(in_ns "$CLI" dig +short +time=3 +tries=2 @"$SRV4" www.test.example A)
aaaa=$(in_ns "$CLI" dig +short +time=3 +tries=2 @"$SRV6" www.test.example AAAA)
[ "$a" = 203.0.113.10 ] || fail "A through the tunnel DNS: '$a'"
[ "$aaaa" = 2001:db8:1::10 ] || fail "AAAA through the tunnel DNS: '$aaaa'"
tcp=$(in_ns "$CLI" dig +short +tcp +time=3 +tries=2 @"$SRV4" www.test.example A)
[ "$tcp" = 203.0.113.10 ] || fail "DNS over TCP through the tunnel: '$tcp'"
nx=$(in_ns "$CLI" dig +time=3 +tries=2 @"$SRV4" nothing.test.example A | grep -o 'status: [A-Z]*')
[ "$nx" = "status: NXDOMAIN" ] || fail "NXDOMAIN not passed through: '$nx'"
say "DNS A, AAAA, TCP and NXDOMAIN through $SRV4 / $SRV6: ok"

# Records are written when flows end: stop cleanly, then read them.
kill -TERM "$WGMITM_PID"
wait "$WGMITM_PID" || fail "wgmitm exited non-zero on SIGTERM"
python3 - "$HOME_DIR/flows.jsonl" <<'PY' || fail "records incomplete"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dns = [r for r in recs if r.get("type") == "dns"]
udp = [r for r in recs if r.get("type") == "udp" and r.get("server", "").endswith(":7009")]
names = json.dumps(dns)
print("records: %d dns, %d udp echo" % (len(dns), len(udp)))
assert any("www.test.example" in json.dumps(r) and "203.0.113.10" in json.dumps(r) for r in dns), "A query not recorded with its answer"
assert any("2001:db8:1::10" in json.dumps(r) for r in dns), "AAAA answer not recorded"
assert len(udp) >= 2, "UDP flows not recorded"
assert all(r.get("peer") == "phone" for r in dns + udp)
assert sum(r.get("packets_up", 0) for r in udp) >= 100
PY
say "PASS"
