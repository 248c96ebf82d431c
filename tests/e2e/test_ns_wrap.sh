#!/usr/bin/env bash
# `wgmitm wrap -- COMMAND`: curl, Python's urllib, Node's fetch (which
# ignores proxy variables), a raw TCP client and a DNS lookup, each run
# under wrap with no trust or proxy flags of its own, as root and as an
# unprivileged user, and git ls-remote over smart HTTP (HTTPS); every
# exchange is recorded (peer "wrap"), the report counts are exact, and the
# command's exit status comes back.
#
#   ns srv (wgmitm wrap; the command in namespaces of its own) ── ns host (servers)
source "$(dirname "$0")/lib.sh"
require_root
for tool in curl node setpriv git; do
  command -v "$tool" >/dev/null 2>&1 || { [ "${CI:-}" = true ] && fail "needs $tool"; say "SKIP: needs $tool"; exit 77; }
done
hosts="$(dirname "$0")/hosts.py"

pki="$E2E_TMP/pki"
test_pki "$pki"
SRV=$(netns_add wgm-srv)
HOST=$(netns_add wgm-host)
veth_pair "$SRV" 203.0.113.1/24 "$HOST" 203.0.113.10/24 >/dev/null
HOST4=203.0.113.10
www="$E2E_TMP/www"
mkdir -p "$www"
printf '{"hello": "world"}\n' >"$www/hello.json"
head -c 200000 /dev/urandom >"$www/blob.bin"
serve "$HOST" python3 "$hosts" https "$www" 8443 "$pki/www.pem" "$pki/www.key"
serve "$HOST" python3 "$hosts" http "$www" 8080
serve "$HOST" python3 "$hosts" tcpecho 7007
for p in 8443 8080 7007; do wait_port "$HOST" 127.0.0.1 $p; done

run_all() {
  local home=$1 who=$2 as=("${@:3}")
  local report="$home/report.json"
  # curl: HTTPS through the bundle in CURL_CA_BUNDLE / SSL_CERT_FILE.
  got=$("${as[@]}" env WGMITM_HOME="$home" "$WGMITM" wrap --upstream-ca "$pki/ca.pem" \
    --report-json "$report" -- curl -sS --max-time 20 --resolve "www.test:8443:$HOST4" \
    https://www.test:8443/hello.json 2>"$E2E_TMP/wrap.err") || { cat "$E2E_TMP/wrap.err"; fail "$who: curl under wrap failed"; }
  [ "$got" = '{"hello": "world"}' ] || fail "$who: curl got: $got"
  grep -q "1 host contacted" "$E2E_TMP/wrap.err" || { cat "$E2E_TMP/wrap.err"; fail "$who: no report"; }
  python3 - "$report" <<'PY' || fail "$who: the report's counts"
import json, sys
r = json.load(open(sys.argv[1]))
h = r["hosts"]["www.test"]
assert h["requests"] == 1 and h["methods"] == {"GET": 1} and h["statuses"] == {"2xx": 1}, h
assert h["connections"] == 1 and h["bytes_down"] > 0, h
assert r["downloads"][0]["url"] == "https://www.test:8443/hello.json", r["downloads"]
import hashlib
assert r["downloads"][0]["sha256"] == hashlib.sha256(b'{"hello": "world"}\n').hexdigest()
assert r["exit"] == 0 and r["failures"] == [], r
PY
  say "$who: curl over HTTPS, trusted with no flag; the report counts one GET"

  # Python and Node by address (the certificate names it), several requests.
  "${as[@]}" env WGMITM_HOME="$home" "$WGMITM" wrap --upstream-ca "$pki/ca.pem" \
    --report-json "$report" -- sh -c "
      python3 -c 'import urllib.request as u; print(u.urlopen(\"https://$HOST4:8443/hello.json\", timeout=20).read().decode().strip())' &&
      node -e 'fetch(\"https://$HOST4:8443/blob.bin\").then(r => r.arrayBuffer()).then(b => console.log(b.byteLength))' &&
      curl -sS -o /dev/null -w '%{http_code}\n' http://$HOST4:8080/missing" >"$E2E_TMP/out" 2>"$E2E_TMP/wrap.err" ||
    { cat "$E2E_TMP/wrap.err"; fail "$who: python/node under wrap failed"; }
  [ "$(sed -n 1p "$E2E_TMP/out")" = '{"hello": "world"}' ] || fail "$who: python got $(cat "$E2E_TMP/out")"
  [ "$(sed -n 2p "$E2E_TMP/out")" = 200000 ] || fail "$who: node got $(cat "$E2E_TMP/out")"
  [ "$(sed -n 3p "$E2E_TMP/out")" = 404 ] || fail "$who: curl got $(cat "$E2E_TMP/out")"
  python3 - "$report" "$HOST4" "$www/blob.bin" <<'PY' || fail "$who: the report's counts (python, node, curl)"
import hashlib, json, sys
r = json.load(open(sys.argv[1]))
h = r["hosts"][sys.argv[2]]
assert h["requests"] == 3 and h["methods"] == {"GET": 3}, h
assert h["statuses"] == {"2xx": 2, "4xx": 1}, h
sums = {d["url"]: d["sha256"] for d in r["downloads"]}
want = hashlib.sha256(open(sys.argv[3], "rb").read()).hexdigest()
assert sums["https://%s:8443/blob.bin" % sys.argv[2]] == want, sums
PY
  say "$who: Python urllib and Node fetch trusted the CA; 3 requests, statuses and a download's SHA-256 exact"

  # A raw TCP client and a DNS lookup of the endpoint's own name; the exit
  # status passes through.
  set +e
  "${as[@]}" env WGMITM_HOME="$home" "$WGMITM" wrap -- python3 -c "
import socket, sys
print(socket.gethostbyname('wgmitm.internal'))
s = socket.create_connection(('$HOST4', 7007), 10)
s.sendall(b'ping'); print(s.recv(4).decode())
sys.exit(7)" >"$E2E_TMP/out" 2>"$E2E_TMP/wrap.err"
  rc=$?
  set -e
  [ "$rc" = 7 ] || { cat "$E2E_TMP/wrap.err"; fail "$who: exit status $rc, not 7"; }
  [ "$(sed -n 2p "$E2E_TMP/out")" = ping ] || fail "$who: raw TCP got $(cat "$E2E_TMP/out")"
  case "$(sed -n 1p "$E2E_TMP/out")" in 10.*) ;; *) fail "$who: DNS answered $(cat "$E2E_TMP/out")" ;; esac
  say "$who: raw TCP echoed, DNS answered by the endpoint, exit status 7 passed through"

  # Everything is recorded, as the peer "wrap".
  python3 - "$home/flows.jsonl" <<'PY' || fail "$who: records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
http = [r for r in recs if r["type"] == "http"]
assert len(http) == 4 and all(r["peer"] == "wrap" for r in http), [(r["type"], r.get("peer")) for r in recs]
assert all(r["via"] == "wrap" for r in recs), [r.get("via") for r in recs]
assert http[0]["command"][0] == "curl" and "https://www.test:8443/hello.json" in http[0]["command"], http[0]["command"]
assert any(r["type"] == "tcp" and r.get("server", "").endswith(":7007") and r["peer"] == "wrap" for r in recs)
assert any(r["type"] == "dns" and r["peer"] == "wrap" for r in recs)
PY
  say "$who: every exchange recorded under peer wrap"
}

run_all "$E2E_TMP/home-root" root in_ns "$SRV"

# git over smart HTTP on HTTPS: it trusts the CA through GIT_SSL_CAINFO.
git init -q --bare "$www/repo.git"
git -C "$E2E_TMP" -c init.defaultBranch=main init -q work
git -C "$E2E_TMP/work" -c user.name=t -c user.email=t@test commit -q --allow-empty -m one
git -C "$E2E_TMP/work" push -q "$www/repo.git" main
head_id=$(git -C "$E2E_TMP/work" rev-parse HEAD)
report="$E2E_TMP/home-root/git-report.json"
in_ns "$SRV" env WGMITM_HOME="$E2E_TMP/home-root" "$WGMITM" wrap --upstream-ca "$pki/ca.pem" \
  --report-json "$report" -- git ls-remote "https://$HOST4:8443/git/repo.git" >"$E2E_TMP/out" 2>"$E2E_TMP/wrap.err" ||
  { cat "$E2E_TMP/wrap.err"; fail "git ls-remote under wrap failed"; }
grep -q "^$head_id"$'\t'"refs/heads/main$" "$E2E_TMP/out" || fail "git ls-remote: $(cat "$E2E_TMP/out")"
python3 - "$report" "$HOST4" <<'PY' || fail "the report of git ls-remote"
import json, sys
h = json.load(open(sys.argv[1]))["hosts"][sys.argv[2]]
assert h["methods"].get("GET", 0) >= 1 and h["statuses"] == {"2xx": h["requests"]}, h
PY
say "root: git ls-remote over smart HTTPS, trusting the CA with no flag"

# Unprivileged: a user namespace of its own, no root anywhere. Debian's
# udev makes /dev/net/tun mode 0666; where there is no udev (a bare VM) it
# is root's alone, and the unprivileged run gets a 0666 node of its own,
# bound over it in a mount namespace: the host's stays as it is.
mkdir -p "$E2E_TMP/home-user"
chown nobody "$E2E_TMP/home-user"
chmod 755 "$E2E_TMP"
user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
if ! "${user[@]}" test -r /dev/net/tun -a -w /dev/net/tun; then
  mknod -m 666 "$E2E_TMP/tun" c 10 200
  user=(unshare -m --propagation private sh -c 'mount --bind "$0" /dev/net/tun && exec "$@"'
        "$E2E_TMP/tun" "${user[@]}")
fi
# --env-proxy: no namespace; what honours the proxy variables is captured
# (curl, Python's urllib), a raw TCP client goes direct and is not seen.
home="$E2E_TMP/home-env"
report="$home/report.json"
in_ns "$SRV" env WGMITM_HOME="$home" "$WGMITM" wrap --env-proxy --upstream-ca "$pki/ca.pem" \
  --report-json "$report" -- sh -c "
    curl -sS --max-time 20 https://$HOST4:8443/hello.json &&
    python3 -c 'import urllib.request as u; print(u.urlopen(\"http://$HOST4:8080/hello.json\", timeout=20).status)' &&
    python3 -c 'import socket; s = socket.create_connection((\"$HOST4\", 7007), 10); s.sendall(b\"ping\"); print(s.recv(4).decode())'" \
  >"$E2E_TMP/out" 2>"$E2E_TMP/wrap.err" || { cat "$E2E_TMP/wrap.err"; fail "env-proxy: the command failed"; }
[ "$(cat "$E2E_TMP/out")" = "$(printf '{"hello": "world"}\n200\nping')" ] || fail "env-proxy: got $(cat "$E2E_TMP/out")"
grep -q "only what honours HTTP_PROXY" "$E2E_TMP/wrap.err" || fail "env-proxy does not say what it cannot see"
python3 - "$report" "$HOST4" "$home/flows.jsonl" <<'PY' || fail "env-proxy: the report and records"
import json, sys
r = json.load(open(sys.argv[1]))
h = r["hosts"][sys.argv[2]]
assert h["requests"] == 2 and h["statuses"] == {"2xx": 2}, h
assert h["connections"] == 2, h  # the raw client's is not there
recs = [json.loads(l) for l in open(sys.argv[3])]
assert recs and all(x["peer"] == "wrap" and x["via"] == "wrap" for x in recs), [(x.get("peer"), x.get("via")) for x in recs]
assert not any(x.get("server", "").endswith(":7007") for x in recs), "the raw client was captured?"
PY
say "env-proxy: curl and Python through the proxy variables, recorded as wrap; the raw client unseen, as said"

if in_ns "$SRV" setpriv --reuid=nobody --regid=nogroup --clear-groups unshare -U true 2>/dev/null; then
  run_all "$E2E_TMP/home-user" "unprivileged user" in_ns "$SRV" "${user[@]}"
else
  [ "${CI:-}" = true ] && fail "unprivileged user namespaces are off here"
  say "SKIP (unprivileged): this kernel does not allow user namespaces"
fi
say "PASS"
