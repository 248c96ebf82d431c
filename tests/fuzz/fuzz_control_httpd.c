/* libFuzzer target for the control API's server (control/httpd.h) with its
 * authentication (control/auth.h): the bytes up to four clients send, into
 * connections driven through httpd_conn_feed/take/sent without sockets.
 * The clock and timers are fuzz_uv.h's.
 *
 * Input: byte 0 picks the limits (bit 0: small head and body; bit 1: a
 * small output bound; bit 2: small WebSocket message and queue bounds;
 * bit 3: two connections at most), bit 4 an eager transport (it takes and
 * reports output sent, and delivers held input, from inside its callbacks),
 * bits 5-6 the bind address (for the Host checks: 127.0.0.1, ::, 0.0.0.0,
 * ::1); then operations, each a byte: bits 0-3
 * the operation, bits 4-5 the connection, bits 6-7 an argument:
 *    0 open             1 data (a chunk, see fuzz_reader.h), held while
 *    2 data, even when  the server does not read
 *      not reading      3 take the output and report it sent
 *    4 take the output, keep it in flight    5 report the oldest in flight
 *    6 FIN              7 reset (the transport frees the connection)
 *    8 time: a byte picks how far            9 answer the waiting requests
 *   10 a canned request (a byte picks it; most carry the token; arg bit 0:
 *      even when not reading)
 *   11 a masked WebSocket frame: a byte for the first header byte, a chunk
 *      for the payload; arg bit 0: a 64-bit length
 *   12 the same, unmasked   13 the loop's deferred work (a 0 ms timer)
 *   14 close every open WebSocket (code and reason by arg)
 *   15 send every open WebSocket a message (size by arg)
 * The routes: GET /hello, POST /echo (body back behind "echo:"), GET
 * /items/{id}, GET /files/(anything), GET /async (answered by op 9), GET /stream?n=
 * (chunked, with backpressure), WebSocket /ws (echo; "flood" sends until
 * the queue refuses, "close" closes), and /login.
 *
 * Invariants beyond "no crash / no sanitizer report": what each client
 * receives is well-formed: whole HTTP/1.1 responses (status line, header
 * lines, the end of the head, then exactly Content-Length bytes, a valid
 * chunked body, or a body to the close for Connection: close), 1xx without
 * a body, after a 101 only unmasked, unfragmented server frames with valid
 * close codes, and nothing after a closing response, a close frame or the
 * transport's shutdown; the bytes a connection holds stay under its
 * bounds; never more connections than max_conns; once everything is
 * answered and read and the clock has moved past every timeout, only
 * WebSocket connections are still open. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fuzz_uv.h"

#include "common/log.h"
#include "control/auth.h"
#include "control/httpd.h"
#include "fuzz_reader.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CONNS 4
#define PORT 8080
#define TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define INFLIGHT_MAX 32
#define PENDING_MAX (128u * 1024)
#define HEAD_CAP 16384

static uv_loop_t loop;
static struct auth *auth;
static struct httpd *srv;
static struct httpd_config cfg;
static bool debug;
static char home[64];

/* ---- What a client receives ---------------------------------------------- */

enum rx_state {
	RX_HEAD,
	RX_AFTER_HEAD,
	RX_LENGTH,
	RX_CHUNK_SIZE,
	RX_CHUNK_DATA,
	RX_CHUNK_CRLF,
	RX_TRAILER,
	RX_TO_CLOSE,
	RX_WS,
	RX_DONE
};

struct rx {
	enum rx_state st;
	char head[HEAD_CAP];
	size_t head_len;
	bool close; /* Connection: close on the last head */
	bool chunked;
	uint64_t left; /* body or chunk bytes */
	char peek[9];  /* after a head: a HEAD's answer is followed by a head */
	size_t peek_len;
	char line[32]; /* a chunk-size line */
	size_t line_len;
	uint8_t frame[14]; /* a WebSocket frame header */
	size_t frame_len;
	uint8_t close_payload[2];
	size_t close_got;
	bool in_close;
};

static void die(const char *why, const struct rx *r)
{
	fprintf(stderr, "malformed output: %s\n", why);
	if (r && r->head_len)
		fprintf(stderr, "last head:\n%.*s\n", (int)r->head_len, r->head);
	abort();
}

static bool tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A whole head in r->head: checked, and what follows decided. */
static void head_done(struct rx *r)
{
	r->head[r->head_len] = '\0';
	if (r->head_len < 17 || memcmp(r->head, "HTTP/1.1 ", 9) != 0 || r->head[12] != ' ')
		die("status line", r);
	int status = atoi(r->head + 9);
	if (status < 100 || status > 599)
		die("status code", r);
	long length = -1;
	int lengths = 0;
	r->chunked = false;
	r->close = false;
	char *line = strstr(r->head, "\r\n") + 2;
	while (*line != '\r') {
		char *eol = strstr(line, "\r\n");
		if (!eol)
			die("header line", r);
		char *colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon || colon == line)
			die("header without a name", r);
		for (char *p = line; p < colon; p++)
			if (!tchar((unsigned char)*p))
				die("header name", r);
		if (colon[1] != ' ')
			die("header separator", r);
		for (char *p = colon + 2; p < eol; p++)
			if (*p == '\0' || *p == '\r' || *p == '\n')
				die("header value", r);
		size_t nl = (size_t)(colon - line);
		const char *v = colon + 2;
		if (nl == 14 && strncasecmp(line, "Content-Length", nl) == 0) {
			lengths++;
			char *e;
			length = strtol(v, &e, 10);
			if (e != eol || length < 0)
				die("Content-Length", r);
		} else if (nl == 17 && strncasecmp(line, "Transfer-Encoding", nl) == 0) {
			if (strncmp(v, "chunked\r\n", 9) != 0)
				die("Transfer-Encoding", r);
			r->chunked = true;
		} else if (nl == 10 && strncasecmp(line, "Connection", nl) == 0) {
			r->close = strncmp(v, "close\r\n", 7) == 0;
		}
		line = eol + 2;
	}
	if (lengths > 1 || (lengths && r->chunked))
		die("framing: Content-Length twice, or with chunked", r);
	r->head_len = 0;
	r->peek_len = 0;
	if (status == 101) {
		r->st = RX_WS;
		r->frame_len = 0;
		return;
	}
	if (status < 200 || status == 204 || status == 304) {
		if (lengths || r->chunked)
			die("a body framed on a response that has none", r);
		r->st = r->close ? RX_DONE : RX_HEAD;
		return;
	}
	if (!lengths && !r->chunked) {
		if (!r->close)
			die("no length, not chunked, not closing", r);
		r->st = RX_TO_CLOSE;
		return;
	}
	if (lengths && length == 0) {
		r->st = r->close ? RX_DONE : RX_HEAD;
		return;
	}
	r->left = lengths ? (uint64_t)length : 0;
	r->st = RX_AFTER_HEAD;
}

static void rx_byte(struct rx *r, uint8_t ch);

static void body_done(struct rx *r)
{
	r->st = r->close ? RX_DONE : RX_HEAD;
}

/* After a head with a body: the body, or (a HEAD's answer) the next head.
 * Our bodies never begin with a status line (echo answers "echo:..."). */
static void after_head_decide(struct rx *r)
{
	bool next_head = r->peek_len == 9 && memcmp(r->peek, "HTTP/1.1 ", 9) == 0;
	size_t n = r->peek_len;
	char tmp[9];
	memcpy(tmp, r->peek, n);
	r->peek_len = 0;
	if (next_head) {
		if (r->close)
			die("a response after a closing one", r);
		r->st = RX_HEAD;
	} else if (r->chunked) {
		r->st = RX_CHUNK_SIZE;
		r->line_len = 0;
	} else {
		r->st = RX_LENGTH;
	}
	for (size_t i = 0; i < n; i++)
		rx_byte(r, (uint8_t)tmp[i]);
}

static void ws_byte(struct rx *r, uint8_t ch)
{
	if (r->left > 0) {
		if (r->in_close && r->close_got < 2)
			r->close_payload[r->close_got++] = ch;
		if (--r->left == 0 && r->in_close)
			r->st = RX_DONE;
		return;
	}
	r->frame[r->frame_len++] = ch;
	if (r->frame_len == 1) {
		uint8_t op = ch & 0x0f;
		if (!(ch & 0x80) || (ch & 0x70))
			die("server frame: FIN clear or RSV set", NULL);
		if (op != 1 && op != 2 && op != 8 && op != 10)
			die("server frame: opcode", NULL);
		return;
	}
	uint8_t len7 = r->frame[1] & 0x7f;
	if (r->frame_len == 2 && (r->frame[1] & 0x80))
		die("server frame: masked", NULL);
	size_t hl = len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
	if (r->frame_len < hl)
		return;
	uint64_t n = len7;
	if (len7 == 126) {
		n = (uint64_t)r->frame[2] << 8 | r->frame[3];
		if (n < 126)
			die("server frame: length not minimal", NULL);
	} else if (len7 == 127) {
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | r->frame[2 + i];
		if (n <= 0xffff)
			die("server frame: length not minimal", NULL);
	}
	uint8_t op = r->frame[0] & 0x0f;
	if ((op & 8) && n > 125)
		die("server frame: control frame over 125 bytes", NULL);
	if (op == 8 && n == 1)
		die("server frame: close with one byte", NULL);
	r->frame_len = 0;
	r->left = n;
	r->in_close = op == 8;
	r->close_got = 0;
	if (n == 0 && r->in_close)
		r->st = RX_DONE;
}

static void rx_byte(struct rx *r, uint8_t ch)
{
	switch (r->st) {
	case RX_HEAD:
		if (r->head_len + 1 >= sizeof(r->head))
			die("a response head without an end", r);
		r->head[r->head_len++] = (char)ch;
		if (r->head_len >= 4 && memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4) == 0)
			head_done(r);
		return;
	case RX_AFTER_HEAD:
		r->peek[r->peek_len++] = (char)ch;
		if (r->peek_len == 9 || (!r->chunked && r->peek_len == r->left && r->left < 9))
			after_head_decide(r);
		return;
	case RX_LENGTH:
		if (r->left == 0) {
			body_done(r);
			rx_byte(r, ch);
			return;
		}
		if (--r->left == 0)
			body_done(r);
		return;
	case RX_CHUNK_SIZE:
		if (r->line_len + 1 >= sizeof(r->line))
			die("chunk size line", r);
		r->line[r->line_len++] = (char)ch;
		if (r->line_len >= 2 && r->line[r->line_len - 2] == '\r' && ch == '\n') {
			r->line[r->line_len - 2] = '\0';
			char *e;
			r->left = strtoull(r->line, &e, 16);
			if (e == r->line || *e)
				die("chunk size", r);
			r->line_len = 0;
			r->st = r->left ? RX_CHUNK_DATA : RX_TRAILER;
		}
		return;
	case RX_CHUNK_DATA:
		if (--r->left == 0) {
			r->st = RX_CHUNK_CRLF;
			r->line_len = 0;
		}
		return;
	case RX_CHUNK_CRLF:
		if (ch != (r->line_len == 0 ? '\r' : '\n'))
			die("chunk end", r);
		if (++r->line_len == 2) {
			r->st = RX_CHUNK_SIZE;
			r->line_len = 0;
		}
		return;
	case RX_TRAILER:
		/* Our last chunk has no trailers: just CRLF. */
		if (ch != (r->line_len == 0 ? '\r' : '\n'))
			die("last chunk end", r);
		if (++r->line_len == 2)
			body_done(r);
		return;
	case RX_TO_CLOSE:
		return;
	case RX_WS:
		ws_byte(r, ch);
		return;
	case RX_DONE:
		die("bytes after the end (closing response or close frame)", r);
	}
}

/* ---- The transport -------------------------------------------------------- */

struct client {
	struct httpd_conn *conn;
	bool open, reading, shut, closed, ws, in_output;
	struct rx rx;
	uint8_t *inflight[INFLIGHT_MAX];
	size_t inflight_len[INFLIGHT_MAX];
	size_t ninflight;
	uint8_t *pending;
	size_t pending_len;
};

static struct client clients[CONNS];
static bool eager; /* the transport writes and reads from inside its callbacks */

static void take(struct client *k, bool keep);
static void deliver_pending(struct client *k);

static void t_output(void *ctx)
{
	struct client *k = ctx;
	/* Eager, like a transport that tries the write at once: taken and
	 * reported sent from inside the callback. */
	if (eager && !k->in_output) {
		k->in_output = true;
		take(k, false);
		k->in_output = false;
	}
}

static void t_reading(void *ctx, bool on)
{
	struct client *k = ctx;
	k->reading = on;
	if (eager && on)
		deliver_pending(k);
}

static void t_shutdown(void *ctx)
{
	struct client *k = ctx;
	if (k->shut || httpd_conn_queued(k->conn) != 0) {
		fprintf(stderr, "shutdown twice, or with bytes queued\n");
		abort();
	}
	k->shut = true;
}

static void t_close(void *ctx)
{
	struct client *k = ctx;
	k->closed = true; /* freed after the operation, never from here */
}

static const struct httpd_transport transport = { t_output, t_reading, t_shutdown, t_close };

static void deliver_pending(struct client *k)
{
	if (!k->open || k->closed || !k->reading || !k->pending_len)
		return;
	uint8_t *p = k->pending;
	size_t n = k->pending_len;
	k->pending = NULL;
	k->pending_len = 0;
	httpd_conn_feed(k->conn, p, n);
	free(p);
}

static void check_bounds(struct client *k)
{
	size_t q = httpd_conn_queued(k->conn);
	size_t bound = cfg.out_high + cfg.max_body + cfg.ws_queue_max + 64 * 1024;
	if (q > bound) {
		fprintf(stderr, "%zu bytes queued, bound %zu\n", q, bound);
		abort();
	}
}

static void receive(struct client *k, const uint8_t *p, size_t n)
{
	if (k->shut && n) {
		fprintf(stderr, "output after the shutdown\n");
		abort();
	}
	struct rx *r = &k->rx;
	for (size_t i = 0; i < n;) {
		/* Payload runs are skipped whole: only framing is checked. */
		size_t run = 0;
		if ((r->st == RX_LENGTH || r->st == RX_CHUNK_DATA) && r->left > 1)
			run = r->left - 1;
		else if (r->st == RX_WS && r->left > 1 && !r->in_close)
			run = r->left - 1;
		else if (r->st == RX_TO_CLOSE)
			run = n - i;
		if (run > n - i)
			run = n - i;
		if (run) {
			if (r->st != RX_TO_CLOSE)
				r->left -= run;
			i += run;
			continue;
		}
		rx_byte(r, p[i++]);
		if (r->st == RX_WS)
			k->ws = true;
	}
}

static void take(struct client *k, bool keep)
{
	if (!k->open || k->closed)
		return;
	uint8_t *buf;
	size_t n = httpd_conn_take(k->conn, &buf);
	if (!n)
		return;
	receive(k, buf, n);
	if (keep && k->ninflight < INFLIGHT_MAX) {
		k->inflight[k->ninflight] = buf;
		k->inflight_len[k->ninflight++] = n;
		return;
	}
	httpd_conn_sent(k->conn, buf, n);
}

static void sent_oldest(struct client *k)
{
	if (!k->open || k->closed || !k->ninflight)
		return;
	uint8_t *buf = k->inflight[0];
	size_t n = k->inflight_len[0];
	memmove(k->inflight, k->inflight + 1, --k->ninflight * sizeof(k->inflight[0]));
	memmove(k->inflight_len, k->inflight_len + 1, k->ninflight * sizeof(k->inflight_len[0]));
	httpd_conn_sent(k->conn, buf, n);
}

static void client_free(struct client *k)
{
	if (!k->open)
		return;
	httpd_conn_free(k->conn);
	for (size_t i = 0; i < k->ninflight; i++)
		free(k->inflight[i]);
	free(k->pending);
	memset(k, 0, sizeof(*k));
}

static void client_open(struct client *k)
{
	if (k->open)
		return;
	memset(k, 0, sizeof(*k));
	k->conn = httpd_conn_new(srv, &transport, k, "fuzz");
	if (!k->conn)
		return;
	k->open = true;
	k->reading = true;
}

static void feed(struct client *k, const uint8_t *p, size_t n, bool force)
{
	if (!k->open || k->closed || !n)
		return;
	if (!k->reading && !force) {
		if (k->pending_len + n > PENDING_MAX)
			n = PENDING_MAX - k->pending_len;
		k->pending = realloc(k->pending, k->pending_len + n + 1);
		memcpy(k->pending + k->pending_len, p, n);
		k->pending_len += n;
		return;
	}
	httpd_conn_feed(k->conn, p, n);
}

/* After each operation: closed connections freed, held input delivered. */
static void settle(void)
{
	for (int round = 0; round < 4; round++)
		for (int i = 0; i < CONNS; i++) {
			struct client *k = &clients[i];
			if (k->open && k->closed) {
				client_free(k);
				continue;
			}
			deliver_pending(k);
			if (k->open && !k->closed)
				check_bounds(k);
		}
}

/* ---- Routes ---------------------------------------------------------------- */

#define WAITING_MAX 16
static struct httpd_resp *waiting[WAITING_MAX];
static size_t nwaiting;

static struct httpd_ws *sockets[CONNS * 2];

static void hello(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	httpd_reply_json(resp, 200, json_pack("{s:s}", "hello", "world"));
}

static void echo(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	size_t len;
	const uint8_t *body = httpd_req_body(req, &len);
	uint8_t *out = malloc(len + 5);
	memcpy(out, "echo:", 5);
	memcpy(out + 5, body, len);
	httpd_reply(resp, 200, "text/plain", out, len + 5);
	free(out);
}

static void show(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	json_t *q = json_object();
	const char *n, *v;
	for (size_t i = 0; httpd_req_query_at(req, i, &n, &v); i++)
		json_object_set_new(q, n, json_stringn_nocheck(v, strlen(v)));
	const char *id = httpd_req_param(req, "id"), *rest = httpd_req_param(req, "*");
	httpd_resp_header(resp, "X-Id", id ? id : "none");
	httpd_reply_json(resp, 200, json_pack("{s:o,s:s?}", "query", q, "x", rest ? "rest" : NULL));
}

static void async_abort(struct httpd_resp *resp, void *arg)
{
	/* Answered at once when told, some of the time. */
	for (size_t i = 0; i < nwaiting; i++)
		if (waiting[i] == resp && (i & 1)) {
			waiting[i] = waiting[--nwaiting];
			httpd_reply(resp, 200, NULL, "", 0);
			return;
		}
}

static void async(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	if (nwaiting == WAITING_MAX) {
		httpd_reply_error(resp, 503, "busy");
		return;
	}
	httpd_resp_on_abort(resp, async_abort, NULL);
	waiting[nwaiting++] = resp;
}

static void answer_all(void)
{
	size_t n = nwaiting;
	nwaiting = 0;
	for (size_t i = 0; i < n; i++)
		httpd_reply_json(waiting[i], 200, json_pack("{s:b}", "late", true));
}

struct stream {
	long left;
	size_t size;
};

static void stream_more(struct httpd_resp *resp, void *arg)
{
	struct stream *s = arg;
	static uint8_t buf[2048];
	while (s->left > 0) {
		memset(buf, 'a' + (int)(s->left % 26), s->size);
		int rc = httpd_stream_write(resp, buf, s->size);
		if (rc == -EAGAIN)
			return;
		if (rc < 0)
			break;
		s->left--;
		if (rc == HTTPD_FULL)
			return;
	}
	httpd_stream_end(resp);
	free(s);
}

static void stream(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	const char *n = httpd_req_query(req, "n");
	struct stream *s = calloc(1, sizeof(*s));
	s->left = n ? atol(n) : 10;
	if (s->left > 400)
		s->left = 400;
	s->size = 1 + (size_t)(s->left * 37 % 2000);
	if (httpd_stream_begin(resp, 200, "text/plain", stream_more, s) < 0) {
		httpd_stream_end(resp);
		free(s);
		return;
	}
	stream_more(resp, s);
}

static void ws_open(struct httpd_ws *ws, void *arg)
{
	for (size_t i = 0; i < sizeof(sockets) / sizeof(sockets[0]); i++)
		if (!sockets[i]) {
			sockets[i] = ws;
			return;
		}
	httpd_ws_close(ws, 1008, "full");
}

static void ws_message(struct httpd_ws *ws, bool binary, const uint8_t *data, size_t len, void *arg)
{
	if (!binary && len >= 5 && memcmp(data, "flood", 5) == 0) {
		static char msg[3000];
		memset(msg, 'f', sizeof(msg));
		for (int i = 0; i < 10000; i++)
			if (httpd_ws_send_text(ws, msg, sizeof(msg)) < 0)
				break;
		return;
	}
	if (!binary && len == 5 && memcmp(data, "close", 5) == 0) {
		httpd_ws_close(ws, 4000, "asked");
		return;
	}
	if (binary)
		httpd_ws_send_binary(ws, data, len);
	else
		httpd_ws_send_text(ws, (const char *)data, len);
}

static void ws_drain(struct httpd_ws *ws, void *arg)
{
	httpd_ws_send_text(ws, "drained", 7);
}

static void ws_closed(struct httpd_ws *ws, int code, void *arg)
{
	for (size_t i = 0; i < sizeof(sockets) / sizeof(sockets[0]); i++)
		if (sockets[i] == ws)
			sockets[i] = NULL;
}

static const struct httpd_ws_handler ws_handler = {
	.on_open = ws_open,
	.on_message = ws_message,
	.on_drain = ws_drain,
	.on_close = ws_closed,
};

/* ---- Canned requests --------------------------------------------------------- */

#define AUTHZ "Host: 127.0.0.1:8080\r\nAuthorization: Bearer " TOKEN "\r\n"

static const char *const canned[] = {
	"GET /hello HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /stream?n=50 HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /async HTTP/1.1\r\n" AUTHZ "\r\n",
	"POST /echo HTTP/1.1\r\n" AUTHZ "Content-Length: 5\r\n\r\nhello",
	"GET /ws HTTP/1.1\r\n" AUTHZ "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"GET /login?token=" TOKEN " HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
	"HEAD /stream?n=5 HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /stream?n=20 HTTP/1.0\r\n" AUTHZ "\r\n",
	"POST /echo HTTP/1.1\r\n" AUTHZ "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"GET /items/%41?x=1+2&y HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /hello HTTP/1.1\r\nHost: evil.example\r\n\r\n",
	"POST /echo HTTP/1.1\r\n" AUTHZ "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n",
	"GET /files/a/b HTTP/1.1\r\n" AUTHZ "Connection: close\r\n\r\n",
	"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: wgmitm_token=" TOKEN "\r\n"
	"Origin: http://127.0.0.1:8080\r\n\r\n",
	"GET /hello HTTP/1.1\r\n" AUTHZ "Origin: http://evil.example\r\n\r\n",
	"DELETE /hello HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /files/a/%2e%2E/b HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /hello HTTP/1.0\r\n" AUTHZ "Connection: keep-alive\r\n\r\n",
	"GET /hello HTTP/1.1\r\nHost: [::1]:8080\r\nAuthorization: Bearer  " TOKEN "\r\n"
	"Sec-Fetch-Site: cross-site\r\n\r\n",
	"GET /hello HTTP/1.1\r\nHost: [::1]\r\nCookie: a=b;  wgmitm_token=" TOKEN "  ; c\r\n\r\n",
	"POST /echo HTTP/1.1\r\n" AUTHZ "Transfer-Encoding: chunked\r\n\r\n"
	"ffff\r\n",
	"GET /ws HTTP/1.1\r\n" AUTHZ "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	"Content-Length: 2\r\n\r\nab",
	"GET /hello HTTP/1.1\r\n" AUTHZ "Expect: 200-ok\r\n\r\n",
	"GET /login HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n",
	"GET /items/%zz HTTP/1.1\r\n" AUTHZ "\r\n",
	"GET /ws HTTP/1.0\r\n" AUTHZ "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
	NULL, /* many_headers */
};

/* One header field past the count the server takes, each short. */
static char many_headers[HTTPD_MAX_HEADERS * 6 + 256];

static void many_headers_init(void)
{
	size_t n = (size_t)snprintf(many_headers, sizeof(many_headers),
				    "GET /hello HTTP/1.1\r\n" AUTHZ);
	for (int i = 0; i < HTTPD_MAX_HEADERS; i++)
		n += (size_t)snprintf(many_headers + n, sizeof(many_headers) - n, "A: %d\r\n",
				      i % 10);
	snprintf(many_headers + n, sizeof(many_headers) - n, "\r\n");
}

static void ws_frame(struct client *k, uint8_t b0, const uint8_t *p, size_t n, bool mask,
		     bool len64)
{
	uint8_t *f = malloc(n + 14);
	size_t hl = 2;
	f[0] = b0;
	if (len64) {
		f[1] = 127;
		for (int i = 0; i < 8; i++)
			f[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	} else if (n < 126) {
		f[1] = (uint8_t)n;
	} else {
		f[1] = 126;
		f[2] = (uint8_t)(n >> 8);
		f[3] = (uint8_t)n;
		hl = 4;
	}
	static const uint8_t key[4] = { 0xa1, 0x05, 0x7e, 0x33 };
	if (mask) {
		f[1] |= 0x80;
		memcpy(f + hl, key, 4);
		hl += 4;
	}
	for (size_t i = 0; i < n; i++)
		f[hl + i] = mask ? p[i] ^ key[i & 3] : p[i];
	feed(k, f, hl + n, false);
	free(f);
}

/* ---- The target ------------------------------------------------------------- */

static void remove_home(void)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/api-token", home);
	unlink(path);
	rmdir(home);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuv_init();
	log_set_level(LOG_ERROR);
	snprintf(home, sizeof(home), "/tmp/fuzz-control-XXXXXX");
	if (!mkdtemp(home))
		abort();
	char path[128];
	snprintf(path, sizeof(path), "%s/api-token", home);
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fputs(TOKEN "\n", f);
	fclose(f);
	chmod(path, 0600);
	auth = auth_new(home);
	if (!auth || uv_loop_init(&loop) != 0)
		abort();
	atexit(remove_home);
	many_headers_init();
	debug = getenv("WGMITM_FUZZ_DEBUG") != NULL;
	return 0;
}

static const uint64_t advances[8] = { 1, 50, 500, 2000, 5000, 10000, 30000, 120000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	fuv_reset();
	memset(clients, 0, sizeof(clients));
	memset(sockets, 0, sizeof(sockets));
	nwaiting = 0;
	uint8_t c0 = data[0];
	cfg = (struct httpd_config){ .port = PORT };
	if (c0 & 1) {
		cfg.max_head = 512;
		cfg.max_body = 2048;
	}
	if (c0 & 2)
		cfg.out_high = 4096;
	if (c0 & 4) {
		cfg.ws_max_message = 4096;
		cfg.ws_queue_max = 16384;
	}
	if (c0 & 8)
		cfg.max_conns = 2;
	eager = c0 & 16;
	static const char *const hosts[4] = { NULL, "::", "0.0.0.0", "::1" };
	cfg.host = hosts[(c0 >> 5) & 3];
	srv = httpd_new(&loop, &cfg);
	if (!srv || auth_attach(auth, srv) < 0 || httpd_route(srv, "GET", "/hello", hello, NULL) ||
	    httpd_route(srv, "POST", "/echo", echo, NULL) ||
	    httpd_route(srv, "GET", "/items/{id}", show, NULL) ||
	    httpd_route(srv, "GET", "/files/*", show, NULL) ||
	    httpd_route(srv, "GET", "/async", async, NULL) ||
	    httpd_route(srv, "GET", "/stream", stream, NULL) ||
	    httpd_route_ws(srv, "/ws", &ws_handler, NULL))
		abort();
	/* The effective limits, for the bounds below. */
	cfg.max_body = cfg.max_body ? cfg.max_body : HTTPD_MAX_BODY;
	cfg.out_high = cfg.out_high ? cfg.out_high : HTTPD_OUT_HIGH;
	cfg.ws_queue_max = cfg.ws_queue_max ? cfg.ws_queue_max : HTTPD_WS_QUEUE_MAX;
	unsigned max_conns = cfg.max_conns ? cfg.max_conns : HTTPD_MAX_CONNS;

	struct reader r = { data + 1, size - 1 };
	uint8_t op, b;
	for (int n = 0; n < 2048 && get8(&r, &op); n++) {
		struct client *k = &clients[(op >> 4) & 3];
		unsigned arg = op >> 6;
		const uint8_t *chunk;
		size_t len;
		switch (op & 15) {
		case 0:
			client_open(k);
			break;
		case 1:
		case 2:
			if (get_chunk(&r, &chunk, &len))
				feed(k, chunk, len, (op & 15) == 2);
			break;
		case 3:
			take(k, false);
			break;
		case 4:
			take(k, true);
			break;
		case 5:
			sent_oldest(k);
			break;
		case 6:
			if (k->open && !k->closed)
				httpd_conn_eof(k->conn);
			break;
		case 7:
			client_free(k);
			break;
		case 8:
			if (get8(&r, &b))
				fuv_advance(advances[b & 7]);
			break;
		case 9:
			answer_all();
			break;
		case 10:
			if (get8(&r, &b)) {
				const char *c = canned[b % (sizeof(canned) / sizeof(canned[0]))];
				if (!c)
					c = many_headers;
				feed(k, (const uint8_t *)c, strlen(c), arg & 1);
			}
			break;
		case 11:
		case 12:
			if (get8(&r, &b) && get_chunk(&r, &chunk, &len))
				ws_frame(k, b, chunk, len, (op & 15) == 11, arg & 1);
			break;
		case 13:
			fuv_advance(0);
			break;
		case 14: {
			/* A reason past 123 bytes is cut between characters. */
			static const char longer[] =
				"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
				"012345678901234567890123456789012345678901234567890123456789012345"
				"6789"
				"0123456789012345678901234567890123456\xe2\x82\xac\xe2\x82\xac";
			for (size_t i = 0; i < sizeof(sockets) / sizeof(sockets[0]); i++)
				if (sockets[i])
					httpd_ws_close(sockets[i],
						       arg == 0 ? 1000 : 3000 + (int)arg,
						       arg == 3 ? longer : "bye");
			break;
		}
		case 15: {
			static char msg[70000];
			static const size_t sizes[4] = { 5, 200, 5000, 70000 };
			memset(msg, 'b', sizeof(msg));
			for (size_t i = 0; i < sizeof(sockets) / sizeof(sockets[0]); i++)
				if (sockets[i])
					httpd_ws_send_text(sockets[i], msg, sizes[arg]);
			break;
		}
		}
		settle();
		struct httpd_stats st;
		httpd_get_stats(srv, &st);
		if (st.conns_active > max_conns) {
			fprintf(stderr, "%u connections open, max_conns %u\n", st.conns_active,
				max_conns);
			abort();
		}
	}

	/* Everything answered and read, the clock past every timeout: only
	 * WebSockets may still be open. A round answers at least one
	 * request or moves the clock on. */
	for (int round = 0; round < 4096; round++) {
		bool busy = false;
		for (int i = 0; i < CONNS; i++)
			busy |= clients[i].open && !clients[i].closed && !clients[i].ws;
		if (!busy)
			break;
		answer_all();
		for (int i = 0; i < CONNS; i++) {
			while (clients[i].ninflight)
				sent_oldest(&clients[i]);
			for (int t = 0; t < 64 && clients[i].open && !clients[i].closed; t++) {
				if (!httpd_conn_queued(clients[i].conn))
					break;
				take(&clients[i], false);
			}
		}
		settle();
		fuv_advance(130000);
		settle();
	}
	for (int i = 0; i < CONNS; i++) {
		struct client *k = &clients[i];
		if (k->open && !k->closed && !k->ws) {
			fprintf(stderr, "connection %d still open after every timeout\n", i);
			abort();
		}
	}
	if (debug) {
		struct httpd_stats st;
		httpd_get_stats(srv, &st);
		fprintf(stderr,
			"accepted %llu refused %llu timed out %llu requests %llu ws %llu "
			"overflows %llu peak %zu\n",
			(unsigned long long)st.conns_accepted, (unsigned long long)st.conns_refused,
			(unsigned long long)st.conns_timed_out, (unsigned long long)st.requests,
			(unsigned long long)st.ws_opened, (unsigned long long)st.ws_overflows,
			st.queued_peak);
	}
	httpd_free(srv);
	settle();
	for (int i = 0; i < CONNS; i++)
		client_free(&clients[i]);
	answer_all();
	fuv_pump(&loop);
	fuv_finish();
	srv = NULL;
	return 0;
}
