# Shared helpers for end-to-end tests. Source it; it sets up cleanup.
#
# Every test builds its own namespaces (names carry the test's PID), sends
# traffic only between them, and removes them on exit, even on failure.

set -euo pipefail

# wireguard-go keeps its control socket in /run/wireguard/IFNAME.sock, one
# directory for the whole machine, and `ip netns` names live in /run/netns:
# run each test in a mount namespace of its
# own with private tmpfs on both, so tests (and benchmarks) never collide and
# leave no name behind.
if [ -z "${E2E_PRIVATE_RUN:-}" ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1; then
  export E2E_PRIVATE_RUN=1
  exec unshare --mount --propagation private bash -c \
    'mkdir -p /run/wireguard /run/netns && mount -t tmpfs -o mode=0700 wgmitm-e2e /run/wireguard && mount -t tmpfs -o mode=0755 wgmitm-e2e /run/netns && exec bash "$@"' \
    bash "$0" "$@"
fi

# A wrapper running another test in a mode of its own names itself.
E2E_NAME=${E2E_NAME:-$(basename "${BASH_SOURCE[1]}" .sh)}
WGMITM=${WGMITM:-${WGMITM_BUILD_DIR:-build}/wgmitm}
E2E_ID=$$
E2E_TMP=$(mktemp -d "/tmp/wgmitm-e2e-$E2E_NAME.XXXXXX")
E2E_NETNS=()
E2E_PIDS=()

say() { printf '[%s] %s\n' "$E2E_NAME" "$*"; }
fail() {
  printf '[%s] FAIL: %s\n' "$E2E_NAME" "$*" >&2
  if [ -f "$E2E_TMP/wgmitm.log" ]; then
    echo "--- wgmitm log (last 60 lines) ---" >&2
    tail -n 60 "$E2E_TMP/wgmitm.log" >&2
  fi
  exit 1
}

# Root is needed for namespaces; skip (77) without it, except under CI.
require_root() {
  local missing=()
  for tool in ip wg wireguard-go ping; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ "$(id -u)" -ne 0 ] || [ ${#missing[@]} -gt 0 ]; then
    local why="needs root"
    [ ${#missing[@]} -gt 0 ] && why="needs ${missing[*]}"
    if [ "${CI:-}" = "true" ]; then
      echo "[$E2E_NAME] FAIL: end-to-end test $why, and CI=true forbids skipping" >&2
      exit 1
    fi
    echo "[$E2E_NAME] SKIP: end-to-end test $why (run scripts/test as root)"
    exit 77
  fi
  [ -x "$WGMITM" ] || fail "wgmitm binary not found at $WGMITM"
}

cleanup() {
  local rc=$?
  set +e
  # The endpoint first, given time for its graceful shutdown, so that a
  # sanitizer build reports leaks and errors in its log.
  if [ -n "${WGMITM_PID:-}" ] && kill -0 "$WGMITM_PID" 2>/dev/null; then
    kill "$WGMITM_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$WGMITM_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -f "$E2E_TMP/wgmitm.log" ] &&
     grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$E2E_TMP/wgmitm.log"; then
    echo "[$E2E_NAME] FAIL: sanitizer report in the wgmitm log:" >&2
    grep -A30 "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$E2E_TMP/wgmitm.log" | head -60 >&2
    [ $rc -eq 0 ] && rc=1
  fi
  for pid in "${E2E_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.2
  for pid in "${E2E_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in "${E2E_NETNS[@]}"; do
    # wireguard-go leaves its UAPI socket behind when killed.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  if [ $rc -eq 0 ] || [ -z "${E2E_KEEP:-}" ]; then rm -rf "$E2E_TMP"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

netns_add() {
  local ns="$1-$E2E_ID"
  ip netns add "$ns"
  E2E_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  echo "$ns"
}

# veth_pair NS_A ADDR_A NS_B ADDR_B [ADDR6_A ADDR6_B]: a link between two namespaces.
veth_pair() {
  local a=$1 aaddr=$2 b=$3 baddr=$4 a6=${5:-} b6=${6:-}
  local ia="va$E2E_ID$RANDOM" ib="vb$E2E_ID$RANDOM"
  ia=${ia:0:15}; ib=${ib:0:15}
  ip link add "$ia" netns "$a" type veth peer name "$ib" netns "$b"
  ip -n "$a" addr add "$aaddr" dev "$ia"
  ip -n "$b" addr add "$baddr" dev "$ib"
  if [ -n "$a6" ]; then
    ip -n "$a" addr add "$a6" dev "$ia" nodad
    ip -n "$b" addr add "$b6" dev "$ib" nodad
  fi
  ip -n "$a" link set "$ia" up
  ip -n "$b" link set "$ib" up
  echo "$ia $ib"
}

# start_wgmitm NS HOME [run options...]: starts the endpoint, waits until it listens.
start_wgmitm() {
  local ns=$1 home=$2; shift 2
  ip netns exec "$ns" env WGMITM_HOME="$home" "$WGMITM" -v run "$@" \
    >>"$E2E_TMP/wgmitm.log" 2>&1 &
  WGMITM_PID=$!
  E2E_PIDS+=("$WGMITM_PID")
  for _ in $(seq 1 100); do
    grep -q "listening on UDP" "$E2E_TMP/wgmitm.log" 2>/dev/null && return 0
    kill -0 "$WGMITM_PID" 2>/dev/null || fail "wgmitm exited at start"
    sleep 0.05
  done
  fail "wgmitm did not start listening"
}

# wg_client NS IFNAME CONFIG_FILE: a wireguard-go client configured from a
# wg-quick config (the file wgmitm wrote): keys through `wg setconf`, the
# interface addresses, MTU and default routes by hand (what wg-quick does).
wg_client() {
  local ns=$1 ifname=$2 conf=$3
  ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go "$ifname" \
    >>"$E2E_TMP/wireguard-go-$ifname.log" 2>&1 &
  E2E_PIDS+=("$!")
  for _ in $(seq 1 100); do
    ip -n "$ns" link show "$ifname" >/dev/null 2>&1 && break
    sleep 0.05
  done
  ip -n "$ns" link show "$ifname" >/dev/null 2>&1 || fail "wireguard-go did not create $ifname"
  # wg-quick strip removes Address/DNS/MTU; it wants a NAME.conf file.
  local copy="$E2E_TMP/$ifname.conf"
  cp "$conf" "$copy"
  wg-quick strip "$copy" >"$E2E_TMP/$ifname.setconf"
  ip netns exec "$ns" wg setconf "$ifname" "$E2E_TMP/$ifname.setconf" ||
    fail "wg setconf rejected the config"
  local addrs mtu
  addrs=$(sed -n 's/^Address *= *//p' "$conf" | tr ',' ' ')
  mtu=$(sed -n 's/^MTU *= *//p' "$conf")
  for a in $addrs; do ip -n "$ns" addr add "$a" dev "$ifname"; done
  ip -n "$ns" link set "$ifname" mtu "${mtu:-1420}" up
}

# route_via NS IFNAME CIDR...: send these destinations into the tunnel.
route_via() {
  local ns=$1 ifname=$2; shift 2
  for cidr in "$@"; do
    if [[ "$cidr" == *:* ]]; then ip -n "$ns" -6 route add "$cidr" dev "$ifname"
    else ip -n "$ns" route add "$cidr" dev "$ifname"; fi
  done
}

# conf_value FILE KEY: a value of a wg-quick config.
conf_value() { sed -n "s/^$2 *= *//p" "$1" | head -n 1; }

# wait_for SECONDS CMD...: retries a command until it succeeds.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $end ] && return 1
    sleep 0.1
  done
}

# wgmitm_stats: asks the endpoint for its counters (SIGUSR1) and prints the new lines.
wgmitm_stats() {
  local before
  before=$(wc -l <"$E2E_TMP/wgmitm.log")
  kill -USR1 "$WGMITM_PID"
  # The per-peer lines come last; a busy endpoint may take a moment.
  for _ in $(seq 1 40); do
    tail -n +"$((before + 1))" "$E2E_TMP/wgmitm.log" | grep -q "stats: peer" && break
    sleep 0.05
  done
  sleep 0.05
  tail -n +"$((before + 1))" "$E2E_TMP/wgmitm.log"
}

# topology_hosts [wgmitm run options...]: the three-namespace layout used by
# the network stack tests; sets CLI, SRV, HOST, SRV4, SRV6, HOST4, HOST6.
#
#   ns cli                         ns srv                          ns host
#   wireguard-go wgc1              wgmitm run                      test servers
#   192.168.77.2/24 ---veth--- 192.168.77.1/24
#                                  203.0.113.1/24    ---veth--- 203.0.113.10/24
#                                  2001:db8:1::1/64             2001:db8:1::10/64
#   routes: 203.0.113.0/24, 2001:db8:1::/64 and the endpoint's tunnel
#   addresses go into the tunnel.
topology_hosts() {
  HOME_DIR="$E2E_TMP/home"
  SRV=$(netns_add wgm-srv)
  CLI=$(netns_add wgm-cli)
  HOST=$(netns_add wgm-host)
  read -r SRV_VETH CLI_VETH < <(veth_pair "$SRV" 192.168.77.1/24 "$CLI" 192.168.77.2/24)
  veth_pair "$SRV" 203.0.113.1/24 "$HOST" 203.0.113.10/24 2001:db8:1::1/64 2001:db8:1::10/64 >/dev/null
  ip -n "$HOST" route add default via 203.0.113.1
  ip -n "$HOST" -6 route add default via 2001:db8:1::1
  HOST4=203.0.113.10
  HOST6=2001:db8:1::10
  start_wgmitm "$SRV" "$HOME_DIR" "$@"
  WGMITM_HOME="$HOME_DIR" "$WGMITM" peer config phone --endpoint 192.168.77.1 >"$E2E_TMP/phone.conf"
  SRV4=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f1 | tr -d ' ')
  SRV6=$(conf_value "$E2E_TMP/phone.conf" DNS | cut -d, -f2 | tr -d ' ')
  wg_client "$CLI" wgc1 "$E2E_TMP/phone.conf"
  route_via "$CLI" wgc1 "$SRV4/32" "$SRV6/128" 203.0.113.0/24 2001:db8:1::/64
  ip netns exec "$CLI" ping -c 1 -W 3 "$SRV4" >/dev/null || fail "peer did not join"
}

# test_pki DIR: an upstream test CA (DIR/ca.pem, ca.key) and a certificate
# it signed for www.test and the host's addresses (DIR/www.pem, www.key).
test_pki() {
  local pki=$1
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=upstream test CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=www.test" \
    -keyout "$pki/www.key" -out "$pki/www.csr" 2>/dev/null
  printf 'subjectAltName=DNS:www.test,IP:203.0.113.10,IP:2001:db8:1::10\nextendedKeyUsage=serverAuth\n' >"$pki/www.ext"
  openssl x509 -req -in "$pki/www.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/www.ext" -out "$pki/www.pem" 2>/dev/null
}

# in_ns NS CMD...: run a command in a namespace.
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# serve NS CMD...: a background server in a namespace, killed at exit.
serve() {
  local ns=$1; shift
  ip netns exec "$ns" "$@" >>"$E2E_TMP/servers.log" 2>&1 &
  E2E_PIDS+=("$!")
}

# wait_port NS ADDR PORT: until a TCP port accepts in that namespace.
wait_port() {
  local ns=$1 addr=$2 port=$3
  wait_for 10 ip netns exec "$ns" python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)" "$addr" "$port" ||
    fail "nothing listens on $addr port $port"
}

# rss_kb PID: resident memory of a process in KiB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# baseline_wireguard_go: for benchmarks, replaces wgmitm in srv by
# wireguard-go with the same key and peer, forwarding in the kernel to the
# host namespace, and makes the client handshake with it.
baseline_wireguard_go() {
  local priv peerpub psk
  kill "$WGMITM_PID"; wait "$WGMITM_PID" 2>/dev/null || true
  priv=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["private_key"])' "$HOME_DIR/server.json")
  peerpub=$(in_ns "$CLI" wg show wgc1 public-key)
  psk=$(conf_value "$E2E_TMP/phone.conf" PresharedKey)
  in_ns "$SRV" env WG_PROCESS_FOREGROUND=1 wireguard-go wgs1 >>"$E2E_TMP/wgs.log" 2>&1 &
  E2E_PIDS+=("$!")
  wait_for 5 ip -n "$SRV" link show wgs1 || fail "wireguard-go server did not start"
  printf '%s\n' "$priv" >"$E2E_TMP/srv.key"
  printf '%s\n' "$psk" >"$E2E_TMP/srv.psk"
  in_ns "$SRV" wg set wgs1 listen-port 51820 private-key "$E2E_TMP/srv.key" \
    peer "$peerpub" preshared-key "$E2E_TMP/srv.psk" allowed-ips "$(conf_value "$E2E_TMP/phone.conf" Address | tr -d ' ')"
  ip -n "$SRV" addr add "$SRV4/32" dev wgs1
  ip -n "$SRV" link set wgs1 mtu 1420 up
  ip -n "$SRV" route add "$(conf_value "$E2E_TMP/phone.conf" Address | cut -d, -f1 | tr -d ' ')" dev wgs1
  in_ns "$SRV" sysctl -qw net.ipv4.ip_forward=1
  # The client still holds wgmitm's session: make it handshake afresh.
  in_ns "$CLI" wg set wgc1 peer "$(conf_value "$E2E_TMP/phone.conf" PublicKey)" remove
  wg-quick strip "$E2E_TMP/wgc1.conf" >"$E2E_TMP/wgc1.again"
  in_ns "$CLI" wg addconf wgc1 "$E2E_TMP/wgc1.again"
  wait_for 10 in_ns "$CLI" ping -c 1 -W 1 "$HOST4" || fail "baseline tunnel does not forward"
}
