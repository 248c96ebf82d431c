#!/usr/bin/env bash
# What peers may not reach, and the one door to the host they may.
#
#   ns cli (wireguard-go) ── ns srv (wgmitm --allow-host-port 8091) ── ns host
#   (layout drawn in lib.sh: topology_hosts); srv also holds servers on its
#   loopback (127.0.0.1:8091, 127.0.0.1:8092) and on 169.254.169.254:80.
#
# Link-local (metadata) addresses and a crafted packet to 127.0.0.1 are
# refused and never reached; the
# endpoint's own address serves only DNS and allowed host ports; an allowed
# host port reaches the capture host's loopback; UDP to a refused address
# or a closed port gets ICMP unreachable; refusals are recorded.
source "$(dirname "$0")/lib.sh"
require_root
hosts="$(dirname "$0")/hosts.py"

topology_hosts --allow-host-port 8091
ip -n "$SRV" addr add 169.254.169.254/32 dev lo
mkdir -p "$E2E_TMP/www"
echo "dev server on the capture host" >"$E2E_TMP/www/index.txt"
serve "$SRV" python3 -m http.server --bind 127.0.0.1 --directory "$E2E_TMP/www" 8091
serve "$SRV" python3 -m http.server --bind ::1 --directory "$E2E_TMP/www" 8091
serve "$SRV" python3 -m http.server --bind 127.0.0.1 --directory "$E2E_TMP/www" 8092
serve "$SRV" python3 -m http.server --bind 169.254.169.254 --directory "$E2E_TMP/www" 80
wait_port "$SRV" 127.0.0.1 8091
wait_port "$SRV" ::1 8091
wait_port "$SRV" 127.0.0.1 8092
wait_port "$SRV" 169.254.169.254 80
route_via "$CLI" wgc1 169.254.0.0/16

# The allowed host port reaches the host's loopback through the tunnel address.
got=$(in_ns "$CLI" curl -sS --max-time 10 "http://$SRV4:8091/index.txt") || fail "allowed host port unreachable"
[ "$got" = "dev server on the capture host" ] || fail "allowed host port served '$got'"
got=$(in_ns "$CLI" curl -sS --max-time 10 "http://[$SRV6]:8091/index.txt") || fail "allowed host port over IPv6"
say "--allow-host-port 8091: reached the host's loopback over IPv4 and IPv6"

# Everything else is reset at once, never a timeout.
refused() {
  set +e
  in_ns "$CLI" curl -sS --max-time 20 "$1" >/dev/null 2>"$E2E_TMP/curl.err"
  local rc=$?
  set -e
  # 55 and 56: the reset arrived while curl was sending or reading.
  [ $rc -eq 7 ] || [ $rc -eq 55 ] || [ $rc -eq 56 ] || [ $rc -eq 52 ] ||
    fail "$1: curl exit $rc ($(cat "$E2E_TMP/curl.err")), expected a reset"
}
refused "http://$SRV4:8092/index.txt"
refused "http://169.254.169.254/index.txt"
refused "http://[$SRV6]:8092/index.txt"
# Exactly the two allowed requests reached a server.
[ "$(grep -c 'GET' "$E2E_TMP/servers.log")" = 2 ] || fail "servers saw: $(grep GET "$E2E_TMP/servers.log")"
say "own address port 8092 and 169.254.169.254 refused with a reset, nothing reached"

# A crafted packet to 127.0.0.1 through the tunnel: route the client's own
# loopback address into wgc1 (route_localnet, a rule ahead of the local
# table). wgmitm must refuse it, not reach its host's 127.0.0.1:8092.
in_ns "$CLI" sysctl -qw net.ipv4.conf.wgc1.route_localnet=1
ip -n "$CLI" route add 127.0.0.1/32 dev wgc1 src "$(conf_value "$E2E_TMP/phone.conf" Address | cut -d/ -f1)" table 100
ip -n "$CLI" rule add to 127.0.0.1/32 lookup 100 pref 100
ip -n "$CLI" rule del pref 0
ip -n "$CLI" rule add pref 200 lookup local
in_ns "$CLI" ip route get 127.0.0.1 | grep -q wgc1 || fail "could not route 127.0.0.1 into the tunnel"
refused "http://127.0.0.1:8092/index.txt"
[ "$(grep -c 'GET' "$E2E_TMP/servers.log")" = 2 ] || fail "a packet to 127.0.0.1 reached the host's loopback"
ip -n "$CLI" rule del pref 100
say "crafted packet to 127.0.0.1 refused, the host's loopback not reached"

# UDP: refused destination and closed port both come back as ICMP errors.
in_ns "$CLI" python3 - "$HOST4" <<'PY' || fail "UDP errors not reported to the client"
import socket, sys
def probe(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect(addr)
    s.send(b"hello")
    try:
        s.recv(100)
        return "answered"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return type(e).__name__ + ":" + str(e.errno)
a = probe((sys.argv[1], 9999))
b = probe(("169.254.169.254", 53))
print("closed port:", a, "| link-local:", b)
assert a.startswith("ConnectionRefusedError"), a
assert b not in ("answered", "timeout"), b
PY
say "UDP: closed port -> port unreachable, link-local -> prohibited"

kill -TERM "$WGMITM_PID"
wait "$WGMITM_PID" || fail "wgmitm exited non-zero"
python3 - "$HOME_DIR/flows.jsonl" <<'PY' || fail "refusals not recorded"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
reasons = sorted(set(r.get("end_reason", "") for r in recs))
print("end reasons:", reasons)
assert any(r.get("end_reason", "").startswith("policy:link") for r in recs), "link-local refusal"
assert any(r.get("end_reason", "").startswith("policy:own") for r in recs), "own address refusal"
assert any(r.get("end_reason", "") == "policy:loopback" for r in recs), "loopback refusal"
assert any(r.get("upstream", "").startswith("127.0.0.1:8091") or r.get("server", "").endswith(":8091") for r in recs)
PY
say "PASS"
