#!/usr/bin/env bash
# SOCKS5 UDP ASSOCIATE and UDP forwards end to end: a SOCKS5 UDP client
# (tests/e2e/socks5udp.py) on the capture host's loopback reaches UDP
# echoes on a test host by IPv4, IPv6 and by name, with and without
# credentials, every echo checked; a fragment is dropped; datagrams from
# another source port than the client's (locked onto, or declared) are not
# relayed; closing the control connection ends the association and its
# records appear at once (via socks5, the user); a destination the policy
# refuses (loopback) is recorded and not relayed. UDP forwards echo N
# datagrams (IPv4, IPv6, a name, an IPv4 client to an IPv6 target) with
# exact counts in their records; a forward to loopback is refused and
# recorded. Bad --udp-forward specs, collisions (two UDP forwards, the
# WireGuard port) and an open forward are refused before anything binds; a
# TCP listener on a UDP forward's port is not a collision.
#
#   ns srv (wgmitm, the clients; a UDP echo on loopback) ── ns host (UDP echoes)
source "$(dirname "$0")/lib.sh"
require_root
command -v python3 >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs python3"; say "SKIP: needs python3"; exit 77; }
hosts="$(dirname "$0")/hosts.py"
s5u="$(dirname "$0")/socks5udp.py"

SRV=$(netns_add wgm-srv)
HOST=$(netns_add wgm-host)
veth_pair "$SRV" 203.0.113.1/24 "$HOST" 203.0.113.10/24 2001:db8:1::1/64 2001:db8:1::10/64 >/dev/null
# Names the endpoint resolves: this test runs in a mount namespace of its own.
printf '127.0.0.1 localhost\n203.0.113.10 www.test\n' >"$E2E_TMP/hosts"
mount --bind "$E2E_TMP/hosts" /etc/hosts

# 7000 and 7001: the destinations; 7009: probes that an association is
# gone (kept apart so the others' counts stay exact). 7002 in srv: what a
# refused loopback destination would have reached.
for p in 7000 7001 7009; do serve "$HOST" python3 "$hosts" udpecho $p; done
serve "$SRV" python3 "$hosts" udpecho 7002
for p in 7000 7001 7009; do
  wait_for 10 in_ns "$HOST" python3 "$s5u" plain 127.0.0.1 $p 1 || fail "no UDP echo on the host's port $p"
done
wait_for 10 in_ns "$SRV" python3 "$s5u" plain 127.0.0.1 7002 1 || fail "no UDP echo on srv's loopback"

HOME_DIR="$E2E_TMP/home"
flows="$HOME_DIR/flows.jsonl"
P=18080
N=20
start_wgmitm "$SRV" "$HOME_DIR" --listen 127.0.0.1:0 --api off --socks5 $P \
  --udp-forward 15353=203.0.113.10:7000 \
  --udp-forward '[::1]:15354=[2001:db8:1::10]:7000' \
  --udp-forward 15355=www.test:7001 \
  --udp-forward 15356=127.0.0.1:7002 \
  --udp-forward '15357=[2001:db8:1::10]:7001' \
  --forward 15353=203.0.113.10:9
wait_for 10 grep -q "forward on 127.0.0.1:15353 to 203.0.113.10:9" "$E2E_TMP/wgmitm.log" ||
  fail "the listeners did not start: $(tail -n 5 "$E2E_TMP/wgmitm.log")"
grep -q "UDP forward on 127.0.0.1:15353 to 203.0.113.10:7000" "$E2E_TMP/wgmitm.log" ||
  fail "the UDP forward on 15353 did not start"
grep -q "UDP forward on 127.0.0.1:15355 to 203.0.113.10:7001 (www.test)" "$E2E_TMP/wgmitm.log" ||
  fail "the UDP forward to a name did not start"
say "listeners up: a TCP forward and a UDP forward share port 15353"

# SOCKS5 UDP without credentials.
c=(in_ns "$SRV" timeout 120 python3 "$s5u")
echo_out=$("${c[@]}" $P echo $N 203.0.113.10:7009 203.0.113.10:7000 '[2001:db8:1::10]:7000' www.test:7001) ||
  fail "SOCKS5 UDP echo: $echo_out"
say "SOCKS5 UDP: $N datagrams each to IPv4, IPv6 and a name echoed; the association ended with its control connection"
frag_out=$("${c[@]}" $P fragment 203.0.113.10:7000) || fail "fragment: $frag_out"
say "SOCKS5 UDP: a fragment is dropped, a whole datagram after it echoed"
foreign_out=$("${c[@]}" $P foreign 203.0.113.10:7000) || fail "another port: $foreign_out"
declared_out=$("${c[@]}" $P declared 203.0.113.10:7000) || fail "declared port: $declared_out"
say "SOCKS5 UDP: datagrams from another port (locked onto, declared) are not relayed"
refused_out=$("${c[@]}" $P refused 127.0.0.1:7002 3) || fail "refused destination: $refused_out"
say "SOCKS5 UDP: a loopback destination is not relayed"

# The associations have ended: their records are there without a restart.
check_socks() {
  python3 - "$flows" "$echo_out" "$frag_out" "$foreign_out" "$declared_out" "$refused_out" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
udp = [r for r in recs if r["type"] == "udp" and r.get("via") == "socks5"]
echo, frag, foreign, declared, refused = (json.loads(a) for a in sys.argv[2:7])
def of(client):
    return [r for r in udp if r["client"] == client]
servers = {"203.0.113.10:7000": "203.0.113.10:7000", "[2001:db8:1::10]:7000": "[2001:db8:1::10]:7000",
           "www.test:7001": "203.0.113.10:7001"}
mine = [r for r in of(echo["client"]) if r["server"] != "203.0.113.10:7009"]
assert len(mine) == 3, [(r["server"], r["end_reason"]) for r in mine]
for dest, counts in echo["dests"].items():
    r = [r for r in mine if r["server"] == servers[dest]]
    assert len(r) == 1, (dest, [x["server"] for x in mine])
    r = r[0]
    assert r["end_reason"] == "association_closed", r
    assert r["packets_up"] == counts["sent"] and r["packets_down"] == counts["got"], (r, counts)
    assert r["bytes_up"] == r["bytes_down"] > 0, r
    assert r["peer"] is None and "user" not in r, r
for out in (frag, foreign, declared):
    r = of(out["client"])
    assert len(r) == 1, r
    assert r[0]["packets_up"] == out["sent"] and r[0]["packets_down"] == out["got"], (r, out)
    assert r[0]["end_reason"] == "association_closed", r
for out in (foreign, declared):
    assert not [r for r in recs if r.get("client") == out["foreign"]], "a foreign port made a flow"
r = of(refused["client"])
assert len(r) == 1 and r[0]["server"] == "127.0.0.1:7002", r
assert r[0]["end_reason"] == "policy:loopback", r
assert r[0]["packets_up"] == refused["sent"] and r[0]["packets_down"] == 0, r
PY
}
wait_for 10 check_socks || { check_socks || true; fail "SOCKS5 UDP records: $(grep socks5 "$flows" | tail -n 5)"; }
say "SOCKS5 UDP records: via socks5, exact counts, association_closed, policy:loopback"

# UDP forwards: N datagrams each, exactly counted.
f1=$(in_ns "$SRV" timeout 120 python3 "$s5u" plain 127.0.0.1 15353 $N) || fail "UDP forward (IPv4): $f1"
f2=$(in_ns "$SRV" timeout 120 python3 "$s5u" plain ::1 15354 $N) || fail "UDP forward (IPv6): $f2"
f3=$(in_ns "$SRV" timeout 120 python3 "$s5u" plain 127.0.0.1 15355 $N) || fail "UDP forward (a name): $f3"
f5=$(in_ns "$SRV" timeout 120 python3 "$s5u" plain 127.0.0.1 15357 $N) || fail "UDP forward (IPv4 → IPv6): $f5"
fr=$(in_ns "$SRV" timeout 60 python3 "$s5u" plain-refused 127.0.0.1 15356 3) || fail "refused UDP forward: $fr"
say "UDP forwards: $N datagrams echoed through each; the one to loopback relays nothing"

# Their flows are still open: a graceful stop writes them.
kill "$WGMITM_PID"
wait "$WGMITM_PID" 2>/dev/null || true
python3 - "$flows" "$f1" "$f2" "$f3" "$f5" "$fr" "$N" <<'PY' || fail "UDP forward records: $(grep '"forward"' "$flows" | tail -n 5)"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fwd = [r for r in recs if r["type"] == "udp" and r.get("via") == "forward"]
n = int(sys.argv[7])
want = [(sys.argv[2], "203.0.113.10:7000"), (sys.argv[3], "[2001:db8:1::10]:7000"),
        (sys.argv[4], "203.0.113.10:7001"), (sys.argv[5], "[2001:db8:1::10]:7001")]
for out, server in want:
    out = json.loads(out)
    r = [r for r in fwd if r["client"] == out["client"]]
    assert len(r) == 1, (out, r)
    r = r[0]
    assert r["server"] == server, r
    assert out["got"] == n and r["packets_down"] == n, (r, out)
    assert r["packets_up"] == out["sent"], (r, out)
    assert r["bytes_up"] == r["bytes_down"] > 0, r
    assert r["end_reason"] == "shutdown" and r["peer"] is None, r
out = json.loads(sys.argv[6])
r = [r for r in fwd if r["client"] == out["client"]]
assert len(r) == 1 and r[0]["server"] == "127.0.0.1:7002", r
assert r[0]["end_reason"] == "policy:loopback", r
assert r[0]["packets_up"] == 3 and r[0]["packets_down"] == 0, r
PY
say "UDP forward records: via forward, packets_up/packets_down exact; the refused one policy:loopback"

# Bad specs and collisions stop run before anything binds.
bad_run() {
  local want=$1; shift
  if in_ns "$SRV" env WGMITM_HOME="$HOME_DIR" timeout 30 "$WGMITM" run --api off "$@" >"$E2E_TMP/bad.log" 2>&1; then
    fail "run took $*"
  fi
  grep -q -- "$want" "$E2E_TMP/bad.log" || fail "$*: the error does not say '$want': $(cat "$E2E_TMP/bad.log")"
}
bad_run "--udp-forward" --listen 127.0.0.1:0 --udp-forward 15353
bad_run "--udp-forward" --listen 127.0.0.1:0 --udp-forward 15353=www.test
bad_run "no options" --listen 127.0.0.1:0 --udp-forward 15353=www.test:7000,raw
bad_run "already --udp-forward" --listen 127.0.0.1:0 --udp-forward 15353=www.test:7000 \
  --udp-forward 0.0.0.0:15353=www.test:7001 --allow-open-proxy
bad_run "already --listen" --listen 127.0.0.1:15999 --udp-forward 15999=www.test:7000
bad_run "already WireGuard" --udp-forward 51820=www.test:7000
bad_run "--allow-open-proxy" --listen 127.0.0.1:0 --udp-forward 0.0.0.0:15360=www.test:7000
say "bad specs, two UDP forwards on a port, the WireGuard port, an open forward: refused"

# SOCKS5 UDP with credentials: the user is in every record.
printf 'alice:s3cret\n' >"$E2E_TMP/users"
P2=18081
start_wgmitm "$SRV" "$HOME_DIR" --listen 127.0.0.1:0 --api off --socks5 $P2 --users "$E2E_TMP/users"
wait_for 10 grep -q "SOCKS5 on 127.0.0.1:$P2 (credentials" "$E2E_TMP/wgmitm.log" ||
  fail "the SOCKS5 listener with --users did not start"
"${c[@]}" $P2 noauth >/dev/null || fail "no credentials offered, yet not refused"
if "${c[@]}" --user alice:wrong $P2 echo 1 203.0.113.10:7009 203.0.113.10:7000 >/dev/null 2>&1; then
  fail "a wrong password made an association"
fi
auth_out=$("${c[@]}" --user alice:s3cret $P2 echo 5 203.0.113.10:7009 203.0.113.10:7000 www.test:7001) ||
  fail "SOCKS5 UDP with credentials: $auth_out"
check_user() {
  python3 - "$flows" "$auth_out" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = json.loads(sys.argv[2])
mine = [r for r in recs if r["type"] == "udp" and r["client"] == out["client"]]
assert len(mine) >= 2, mine
for r in mine:
    assert r["via"] == "socks5" and r["user"] == "alice", r
    assert r["end_reason"] == "association_closed", r
for dest, server in (("203.0.113.10:7000", "203.0.113.10:7000"), ("www.test:7001", "203.0.113.10:7001")):
    r = [r for r in mine if r["server"] == server][0]
    c = out["dests"][dest]
    assert c["got"] == 5 and r["packets_up"] == c["sent"] and r["packets_down"] == 5, (r, c)
PY
}
wait_for 10 check_user || { check_user || true; fail "records with the user"; }
say "SOCKS5 UDP with credentials: no-auth and a wrong password refused; records carry user alice"
kill "$WGMITM_PID"
wait "$WGMITM_PID" 2>/dev/null || true
say "PASS"
