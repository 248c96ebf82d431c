#!/usr/bin/env bash
# `wgmitm export --har`: no network and no root. A flows file of hand-made
# records (docs/flows.md: HTTP/1.x and HTTP/2 exchanges, a form POST, gzip,
# binary and truncated bodies, a request without response, a WebSocket
# upgrade and its messages, TCP/UDP/DNS records, a cut last line) is
# exported; the HAR must pass node-har-validator (tests/har-validate.js),
# "-" must write the same HAR to stdout, and a bad line in the middle must
# fail naming the file and the line, leaving an existing HAR untouched.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "FAIL: $*, and CI=true forbids skipping" >&2
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}
[ -x "${WGMITM:-}" ] || fail "wgmitm binary not found at ${WGMITM:-(WGMITM unset)}"
SRC=${WGMITM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export NODE_PATH=${NODE_PATH:-/usr/share/nodejs}
command -v node >/dev/null || skip "needs node (apt-get install nodejs)"
node -e "require('har-validator')" 2>/dev/null || skip "needs node-har-validator (apt-get install node-har-validator)"
TMP=$(mktemp -d /tmp/wgmitm-har-export.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
w() { "$WGMITM" "$@"; }

# The records of tests/unit/test_flows_har.c, and one of each other type.
cat >"$TMP/flows.jsonl" <<'EOF'
{"type":"tcp","id":"0a0b0c0d-1","peer":"phone","client":"10.66.77.2:40000","server":"93.184.216.34:443","start":"2024-05-01T12:00:00.000000Z","end":"2024-05-01T12:00:05.000000Z","bytes_up":100,"bytes_down":200,"end_reason":"fin","proto":"tls","sni":"example.com"}
{"type":"http","id":"0a0b0c0d-2","peer":"phone","client":"10.66.77.2:40000","server":"93.184.216.34:443","start":"2024-05-01T12:00:00.100000Z","end":"2024-05-01T12:00:00.131000Z","bytes_up":0,"bytes_down":44,"end_reason":"complete","conn":"0a0b0c0d-1","tls":{"client":{"version":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA256","alpn":"http/1.1"},"upstream":{"version":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA256","alpn":"http/1.1"}},"http_version":"HTTP/1.1","method":"GET","url":"https://example.com/search?q=caf%C3%A9&lang=en&empty=&flag","request":{"headers":[["Host","example.com"],["User-Agent","test/1.0"],["Cookie","sid=abc123; theme=dark"]],"body":{"text":"","size":0,"truncated":false}},"response":{"headers":[["Content-Type","text/html; charset=utf-8"],["Content-Encoding","gzip"],["Set-Cookie","id=42; Path=/; Domain=example.com; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure; HttpOnly; SameSite=Lax"],["Content-Length","44"]],"body":{"base64":"H4sIAAAAAAACA7MpsMs4vDInJ1+h/PC2opwUhYHl2egX2AEAsD/nQ5MAAAA=","size":44,"truncated":false},"status":200,"reason":"OK"},"timings":{"start":"2024-05-01T12:00:00.100000Z","request_end":"2024-05-01T12:00:00.100250Z","response_start":"2024-05-01T12:00:00.130500Z","end":"2024-05-01T12:00:00.131000Z"}}
{"type":"http","id":"0a0b0c0d-3","peer":"phone","client":"10.66.77.2:40002","server":"93.184.216.34:80","start":"2024-05-01T12:00:02.000000Z","end":"2024-05-01T12:00:02.050000Z","bytes_up":27,"bytes_down":0,"end_reason":"complete","conn":"0a0b0c0d-10","tls":null,"http_version":"HTTP/1.1","method":"POST","url":"http://example.com/login","request":{"headers":[["Host","example.com"],["Content-Type","application/x-www-form-urlencoded"],["Content-Length","27"]],"body":{"text":"user=alice&pass=p%40ss+word","size":27,"truncated":false}},"response":{"headers":[["Location","/home"],["Content-Length","0"]],"body":{"text":"","size":0,"truncated":false},"status":302,"reason":"Found"},"timings":{"start":"2024-05-01T12:00:02.000000Z","request_end":"2024-05-01T12:00:02.001000Z","response_start":"2024-05-01T12:00:02.049000Z","end":"2024-05-01T12:00:02.050000Z"}}
{"type":"http","id":"0a0b0c0d-4","peer":null,"client":"10.66.77.3:41000","server":"10.0.0.5:8080","start":"2024-05-01T12:00:01.000000Z","end":"2024-05-01T12:00:01.003000Z","bytes_up":0,"bytes_down":8,"end_reason":"complete","conn":"0a0b0c0d-11","tls":null,"http_version":"HTTP/1.0","method":"GET","url":"http://10.0.0.5:8080/img.png","request":{"headers":[["Host","10.0.0.5:8080"]],"body":{"text":"","size":0,"truncated":false}},"response":{"headers":[["Content-Type","image/png"]],"body":{"base64":"iVBORw0KGgo=","size":8,"truncated":false},"status":200,"reason":"OK"},"timings":{"start":"2024-05-01T12:00:01.000000Z","request_end":"2024-05-01T12:00:01.000100Z","response_start":"2024-05-01T12:00:01.002000Z","end":"2024-05-01T12:00:01.003000Z"}}
{"type":"http","id":"0a0b0c0d-5","peer":"phone","client":"10.66.77.2:40004","server":"198.51.100.7:443","start":"2024-05-01T12:00:03.000000Z","end":"2024-05-01T12:00:03.900000Z","bytes_up":4,"bytes_down":2000000,"end_reason":"complete","conn":"0a0b0c0d-12","tls":null,"http_version":"HTTP/1.1","method":"POST","url":"https://cdn.example.net/upload?x=1","request":{"headers":[["Host","cdn.example.net"],["Content-Type","application/octet-stream"]],"body":{"base64":"AAEC/w==","size":4,"truncated":false}},"response":{"headers":[["Content-Type","text/plain"]],"body":{"text":"0123456789","size":2000000,"truncated":true},"status":200,"reason":"OK"},"timings":{"start":"2024-05-01T12:00:03.000000Z","request_end":"2024-05-01T12:00:03.000500Z","response_start":"2024-05-01T12:00:03.100000Z","end":"2024-05-01T12:00:03.900000Z"}}
{"type":"http","id":"0a0b0c0d-6","peer":"phone","client":"[fd00::2]:40006","server":"[2001:db8::10]:443","start":"2024-05-01T12:00:04.000000Z","end":"2024-05-01T12:00:04.020000Z","bytes_up":0,"bytes_down":7,"end_reason":"complete","conn":"0a0b0c0d-13","tls":{"client":{"version":"TLSv1.3","cipher":"TLS_AES_256_GCM_SHA384","alpn":"h2"},"upstream":{"version":"TLSv1.3","cipher":"TLS_AES_256_GCM_SHA384","alpn":"h2"}},"http_version":"HTTP/2","stream_id":3,"method":"GET","url":"https://api.example.org/v1/items?page=2","request":{"headers":[[":method","GET"],[":scheme","https"],[":authority","api.example.org"],[":path","/v1/items?page=2"],["accept","application/json"],["cookie","a=1"],["cookie","b=2"]],"body":{"text":"","size":0,"truncated":false}},"response":{"headers":[[":status","200"],["content-type","application/json"]],"body":{"text":"[1,2,3]","size":7,"truncated":false},"status":200},"timings":{"start":"2024-05-01T12:00:04.000000Z","request_end":"2024-05-01T12:00:04.000001Z","response_start":"2024-05-01T12:00:04.010000Z","end":"2024-05-01T12:00:04.020000Z"}}
{"type":"http","id":"0a0b0c0d-7","peer":"phone","client":"10.66.77.2:40008","server":"93.184.216.34:443","start":"2024-05-01T12:00:05.000000Z","end":"2024-05-01T12:00:05.250000Z","bytes_up":0,"bytes_down":0,"end_reason":"upstream_reset","error":"upstream reset the connection","conn":"0a0b0c0d-14","tls":null,"http_version":"HTTP/1.1","method":"GET","url":"https://example.com/slow","request":{"headers":[["Host","example.com"]],"body":{"text":"","size":0,"truncated":false}},"response":null,"timings":{"start":"2024-05-01T12:00:05.000000Z","request_end":"2024-05-01T12:00:05.000200Z","response_start":null,"end":"2024-05-01T12:00:05.250000Z"}}
{"type":"http","id":"0a0b0c0d-8","peer":"phone","client":"10.66.77.2:40010","server":"203.0.113.9:443","start":"2024-05-01T12:00:06.000000Z","end":"2024-05-01T12:00:06.040000Z","bytes_up":0,"bytes_down":0,"end_reason":"complete","conn":"0a0b0c0d-15","tls":null,"http_version":"HTTP/1.1","method":"GET","url":"https://chat.example.com/socket","request":{"headers":[["Host","chat.example.com"],["Upgrade","websocket"],["Connection","Upgrade"],["Sec-WebSocket-Version","13"],["Sec-WebSocket-Key","dGhlIHNhbXBsZSBub25jZQ=="]],"body":{"text":"","size":0,"truncated":false}},"response":{"headers":[["Upgrade","websocket"],["Connection","Upgrade"],["Sec-WebSocket-Accept","s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]],"body":{"text":"","size":0,"truncated":false},"status":101,"reason":"Switching Protocols"},"websocket":true,"timings":{"start":"2024-05-01T12:00:06.000000Z","request_end":"2024-05-01T12:00:06.000100Z","response_start":"2024-05-01T12:00:06.040000Z","end":"2024-05-01T12:00:06.040000Z"}}
{"type":"websocket","id":"0a0b0c0d-9","peer":"phone","client":"10.66.77.2:40010","server":"203.0.113.9:443","start":"2024-05-01T12:00:06.500000Z","end":"2024-05-01T12:00:06.760000Z","bytes_up":5,"bytes_down":3,"end_reason":"fin","conn":"0a0b0c0d-15","url":"wss://chat.example.com/socket","messages":[{"dir":"up","time":"2024-05-01T12:00:06.500000Z","opcode":"text","body":{"text":"hello","size":5,"truncated":false}},{"dir":"down","time":"2024-05-01T12:00:06.750123Z","opcode":"binary","body":{"base64":"AQID","size":3,"truncated":false}}],"close":{"code":1000,"reason":"bye"}}
{"type":"websocket","id":"0a0b0c0d-16","peer":"phone","client":"10.66.77.2:40012","server":"203.0.113.9:443","start":"2024-05-01T12:00:07.000000Z","end":"2024-05-01T12:00:07.000000Z","bytes_up":2,"bytes_down":0,"end_reason":"fin","conn":"0a0b0c0d-99","url":"wss://other.example.com/","messages":[{"dir":"up","time":"2024-05-01T12:00:07.000000Z","opcode":"text","body":{"text":"hi","size":2,"truncated":false}}]}
{"type":"udp","id":"0a0b0c0d-17","peer":"phone","client":"10.66.77.2:50000","server":"192.0.2.53:443","start":"2024-05-01T12:00:08.000000Z","end":"2024-05-01T12:00:09.000000Z","bytes_up":1200,"bytes_down":3400,"packets_up":3,"packets_down":4,"end_reason":"timeout"}
{"type":"dns","id":"0a0b0c0d-18","peer":"phone","client":"10.66.77.2:50001","server":"10.66.77.1:53","start":"2024-05-01T12:00:08.100000Z","end":"2024-05-01T12:00:08.120000Z","bytes_up":30,"bytes_down":46,"packets_up":1,"packets_down":1,"end_reason":"answered"}
{"type":"http","id":"0a0b0c0d-19","peer":"phone","client":"10.66.77.2:40020","server":"[2001:db8::10]:443","start":"2024-05-01T12:00:09.000000Z","end":"2024-05-01T12:00:09.500000Z","bytes_up":0,"bytes_down":5,"end_reason":"complete","conn":"0a0b0c0d-13","tls":null,"http_version":"HTTP/2","stream_id":5,"method":"GET","url":"https://api.example.org/stream","request":{"headers":[[":method","GET"],[":scheme","https"],[":authority","api.example.org"],[":path","/stream"]],"body":{"text":"","size":0,"truncated":false}},"response":{"headers":[[":status","200"],["content-type","text/plain"]],"trailers":[["grpc-status","0"]],"body":{"text":"hello","size":5,"truncated":false},"status":200},"informational":[103],"timings":{"start":"2024-05-01T12:00:09.000000Z","request_end":"2024-05-01T12:00:09.400000Z","response_start":"2024-05-01T12:00:09.100000Z","end":"2024-05-01T12:00:09.500000Z"}}
EOF
# A write a crash cut short.
printf '%s' '{"type":"http","id":"0a0b0c0d-99","peer":"pho' >>"$TMP/flows.jsonl"

# Help and usage errors.
w --help | grep -q '^  export --har FILE' || fail "--help does not list export"
w export --help | grep -q '^usage: wgmitm export --har FILE' || fail "export --help prints no usage"
set +e
w export --flows "$TMP/flows.jsonl" >/dev/null 2>"$TMP/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "export without --har exits $rc, not 2"
grep -q -- '--har FILE is required' "$TMP/err" || fail "no word on the missing --har: $(cat "$TMP/err")"

# Export to a file: valid HAR, mode 0600, no temporary file left behind.
w export --har "$TMP/out.har" --flows "$TMP/flows.jsonl" 2>"$TMP/err" || fail "export failed: $(cat "$TMP/err")"
grep -q 'skipped the cut last line' "$TMP/err" || fail "the cut last line was not reported"
grep -q '1 WebSocket batch(es) matched no upgrade' "$TMP/err" || fail "the stray WebSocket batch was not reported"
grep -q '8 HTTP exchange(s), 2 WebSocket message(s)' "$TMP/err" || fail "summary: $(cat "$TMP/err")"
node "$SRC/tests/har-validate.js" "$TMP/out.har" || fail "the HAR does not validate"
[ "$(stat -c %a "$TMP/out.har")" = 600 ] || fail "out.har is not 0600"
[ "$(find "$TMP" -name 'out.har.tmp.*' | wc -l)" -eq 0 ] || fail "a temporary file was left behind"
# Spot checks of the mapping through a real JSON parser.
node -e '
const h = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const e = h.log.entries;
const want = (c, m) => { if (!c) { console.error(m); process.exit(1); } };
want(e.length === 8, "8 entries, got " + e.length);
want(h.log.creator.name === "wgmitm", "creator");
const ids = e.map((x) => x._wgmitm.id).join(",");
want(ids === "0a0b0c0d-2,0a0b0c0d-4,0a0b0c0d-3,0a0b0c0d-5,0a0b0c0d-6,0a0b0c0d-7,0a0b0c0d-8,0a0b0c0d-19", "order " + ids);
want(e[0].response.content.text.startsWith("<p>héllo"), "gzip body decoded");
want(e[1].response.content.encoding === "base64", "binary body in base64");
want(e[4].request.httpVersion === "http/2.0", "h2 version");
want(!e[4].request.headers.some((x) => x.name.startsWith(":")), "pseudo-headers in headers");
want(e[5].response.status === 0 && e[5].response._error, "no-response entry");
want(e[6]._webSocketMessages.length === 2 && e[6]._webSocketMessages[0].type === "send", "websocket messages");
// An early response: wait is 0, not negative.
want(e[7].timings.wait === 0 && e[7].response._trailers[0].name === "grpc-status", "early response / trailers");
' "$TMP/out.har" || fail "mapping spot checks"

# "-" writes the same HAR to stdout.
w export --har - --flows "$TMP/flows.jsonl" >"$TMP/stdout.har" 2>/dev/null || fail "export to stdout failed"
cmp -s "$TMP/out.har" "$TMP/stdout.har" || fail "stdout HAR differs from the file"

# A device is written to, never replaced by a file (as root, renaming over
# /dev/null would destroy it).
mkfifo "$TMP/fifo"
cat "$TMP/fifo" >"$TMP/fifo.har" &
w -q export --har "$TMP/fifo" --flows "$TMP/flows.jsonl" || fail "export to a FIFO failed"
wait
[ -p "$TMP/fifo" ] || fail "the FIFO was replaced by a file"
cmp -s "$TMP/out.har" "$TMP/fifo.har" || fail "FIFO HAR differs from the file"

# The default flows file is HOME/flows.jsonl.
mkdir -p "$TMP/home"
cp "$TMP/flows.jsonl" "$TMP/home/flows.jsonl"
WGMITM_HOME="$TMP/home" w -q export --har - >"$TMP/home.har" 2>"$TMP/err" || fail "export from HOME failed: $(cat "$TMP/err")"
cmp -s "$TMP/out.har" "$TMP/home.har" || fail "HOME/flows.jsonl export differs"
grep -q 'HTTP exchange' "$TMP/err" && fail "-q still prints the summary"

# A bad line in the middle: exit 1, file and line named, the old HAR kept.
head -n 3 "$TMP/flows.jsonl" >"$TMP/bad.jsonl"
echo '{"type":"http", this is not json' >>"$TMP/bad.jsonl"
tail -n +4 "$TMP/flows.jsonl" >>"$TMP/bad.jsonl"
set +e
w export --har "$TMP/out.har" --flows "$TMP/bad.jsonl" 2>"$TMP/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "a bad middle line exits $rc, not 1"
grep -q "^wgmitm: $TMP/bad.jsonl:4: invalid JSON" "$TMP/err" || fail "error does not name file:line: $(cat "$TMP/err")"
cmp -s "$TMP/out.har" "$TMP/stdout.har" || fail "a failed export changed the existing HAR"

# A well-formed line that is not a usable http record.
head -n 2 "$TMP/flows.jsonl" >"$TMP/bad2.jsonl"
echo '{"type":"http","id":"x-1","method":"GET","request":{"headers":[]},"response":null}' >>"$TMP/bad2.jsonl"
tail -n +3 "$TMP/flows.jsonl" >>"$TMP/bad2.jsonl"
set +e
w export --har - --flows "$TMP/bad2.jsonl" >/dev/null 2>"$TMP/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "a record without url exits $rc, not 1"
grep -q "bad2.jsonl:3: http record: \"url\" is not a string" "$TMP/err" || fail "record error: $(cat "$TMP/err")"

# Missing input, unwritable output.
set +e
w export --har - --flows "$TMP/none.jsonl" >/dev/null 2>"$TMP/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "cannot read $TMP/none.jsonl: No such file" "$TMP/err" || fail "missing flows file: $rc $(cat "$TMP/err")"
set +e
w export --har "$TMP/no/dir/out.har" --flows "$TMP/flows.jsonl" 2>"$TMP/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "cannot write $TMP/no/dir/out.har" "$TMP/err" || fail "unwritable output: $rc $(cat "$TMP/err")"

echo "PASS: HAR export"
