/* WebSocket (RFC 6455) on the control server: the handshake, client frames
 * in (masked, reassembled up to a bound), server frames out (unmasked,
 * into a bounded queue). See httpd.h for the backpressure choice. */
#include "control/httpd_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "common/log.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_MSG_KEEP (64u * 1024) /* a message buffer kept between messages */

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

int ws_check_handshake(const struct httpd_req *r, const char **why)
{
	if (!r->websocket) {
		*why = "this is a WebSocket endpoint: connect with a WebSocket client";
		return 426;
	}
	if (r->head || r->minor < 1) {
		*why = "a WebSocket handshake is a GET over HTTP/1.1";
		return 400;
	}
	const char *conn = httpd_req_header(r, "Connection");
	if (!conn || !header_has_token(conn, "upgrade")) {
		*why = "a WebSocket handshake needs \"Connection: Upgrade\"";
		return 400;
	}
	const char *ver = httpd_req_header(r, "Sec-WebSocket-Version");
	if (!ver || strcmp(ver, "13") != 0) {
		*why = "only WebSocket version 13 is spoken here";
		return 426;
	}
	const char *key = httpd_req_header(r, "Sec-WebSocket-Key");
	uint8_t bin[16];
	size_t binlen = 0;
	const char *end = NULL;
	if (!key || httpd_req_header_count(r, "Sec-WebSocket-Key") != 1 || strlen(key) != 24 ||
	    sodium_base642bin(bin, sizeof(bin), key, 24, NULL, &binlen, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    binlen != 16 || end != key + 24) {
		*why = "Sec-WebSocket-Key must be 16 bytes in base64";
		return 400;
	}
	return 0;
}

static bool ws_accept(const char *key, char out[29])
{
	char buf[24 + sizeof(WS_GUID)];
	int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	if (n <= 0 || EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
		return false;
	sodium_bin2base64(out, 29, md, 20, sodium_base64_VARIANT_ORIGINAL);
	return true;
}

void ws_upgrade(struct httpd_conn *c, struct exch *ex)
{
	struct httpd_ws *ws = calloc(1, sizeof(*ws));
	char accept[29];
	if (!ws || !ws_accept(httpd_req_header(&ex->req, "Sec-WebSocket-Key"), accept)) {
		free(ws);
		conn_abort(c);
		return;
	}
	ws->conn = c;
	ws->ex = ex;
	ws->h = ex->route->ws;
	ws->arg = ex->route->arg;
	c->ex = NULL;
	c->ws = ws;
	c->mode = M_WS;
	c->ps = P_IDLE;
	char head[160];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			 accept);
	conn_append(c, head, (size_t)n);
	c->out_floor = c->out_len; /* an overflow never drops the 101 */
	conn_notify_output(c);
	c->srv->stats.ws_opened++;
	c->srv->stats.requests++;
	log_debug("control: %s: WebSocket %s open", c->peer, httpd_req_path(&ex->req));
	if (ws->h->on_open)
		ws->h->on_open(ws, ws->arg);
}

/* ---- Frames out ---------------------------------------------------------- */

static void ws_overflow(struct httpd_ws *ws);

static int ws_frame(struct httpd_ws *ws, uint8_t op, const void *p, size_t n, bool bounded)
{
	struct httpd_conn *c = ws->conn;
	if (c->mode != M_WS)
		return -EPIPE;
	uint8_t hdr[10];
	size_t hl;
	hdr[0] = (uint8_t)(0x80 | op);
	if (n < 126) {
		hdr[1] = (uint8_t)n;
		hl = 2;
	} else if (n <= 0xffff) {
		hdr[1] = 126;
		hdr[2] = (uint8_t)(n >> 8);
		hdr[3] = (uint8_t)n;
		hl = 4;
	} else {
		hdr[1] = 127;
		for (int i = 0; i < 8; i++)
			hdr[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	size_t qmax = c->srv->cfg.ws_queue_max;
	if (bounded && conn_queued(c) + hl + n > qmax) {
		ws_overflow(ws);
		return -ENOBUFS;
	}
	if (!conn_append(c, hdr, hl) || !conn_append(c, p, n))
		return -EPIPE;
	conn_notify_output(c);
	if (conn_queued(c) > qmax / 2)
		ws->drain_armed = true;
	return 0;
}

static void ws_send_close(struct httpd_ws *ws, int code, const char *reason)
{
	uint8_t b[125];
	size_t n = 0;
	if (code != 1005) {
		b[0] = (uint8_t)(code >> 8);
		b[1] = (uint8_t)code;
		n = 2;
		if (reason) {
			size_t rl = strlen(reason);
			if (rl > 123) {
				rl = 123;
				while (rl > 0 && ((unsigned char)reason[rl] & 0xc0) == 0x80)
					rl--; /* cut between characters */
			}
			memcpy(b + 2, reason, rl);
			n += rl;
		}
	}
	ws_frame(ws, OP_CLOSE, b, n, false);
}

/* on_close is due: delivered from the connection's run loop, never from
 * inside the handler's own call. */
static void ws_notify(struct httpd_ws *ws, int code)
{
	if (ws->notified || ws->notify_pending)
		return;
	ws->notify_pending = true;
	ws->close_code = code;
	conn_changed(ws->conn);
}

static void ws_overflow(struct httpd_ws *ws)
{
	struct httpd_conn *c = ws->conn;
	c->srv->stats.ws_overflows++;
	log_debug("control: %s: WebSocket client reads too slowly (%zu bytes queued); closing",
		  c->peer, conn_queued(c));
	/* What is not taken yet is whole frames: dropped, memory back. */
	c->out_len = c->out_floor;
	ws->drain_armed = false;
	ws_send_close(ws, 1008, "the client reads too slowly");
	ws->state = WS_CLOSING;
	c->phase_start = uv_now(c->srv->loop);
	ws_notify(ws, 1008);
}

/* Fails the connection (RFC 6455 7.1.7): close frame, then TCP close. */
static void ws_fail(struct httpd_ws *ws, int code, const char *why)
{
	struct httpd_conn *c = ws->conn;
	log_debug("control: %s: WebSocket closed with %d: %s", c->peer, code, why);
	if (ws->state == WS_OPEN) {
		ws_send_close(ws, code, why);
		ws_notify(ws, code);
	}
	ws->state = WS_DONE;
	conn_begin_finish(c);
}

/* ---- Frames in ------------------------------------------------------------- */

static bool close_code_valid(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

static void ws_got_close(struct httpd_ws *ws)
{
	int code = 1005;
	if (ws->plen == 1) {
		ws_fail(ws, 1002, "a close frame with a 1-byte body");
		return;
	}
	if (ws->plen >= 2) {
		code = ws->ctl[0] << 8 | ws->ctl[1];
		if (!close_code_valid(code)) {
			ws_fail(ws, 1002, "a close code that may not be sent");
			return;
		}
		if (!utf8_valid(ws->ctl + 2, (size_t)ws->plen - 2)) {
			ws_fail(ws, 1007, "a close reason that is not UTF-8");
			return;
		}
	}
	if (ws->state == WS_OPEN) {
		ws_send_close(ws, code, NULL); /* echoed */
		ws_notify(ws, code);
	}
	ws->state = WS_DONE;
	conn_begin_finish(ws->conn);
}

static void ws_frame_done(struct httpd_ws *ws)
{
	switch (ws->opcode) {
	case OP_PING:
		if (ws->state == WS_OPEN)
			ws_frame(ws, OP_PONG, ws->ctl, (size_t)ws->plen, true);
		return;
	case OP_PONG:
		return;
	case OP_CLOSE:
		ws_got_close(ws);
		return;
	default:
		break;
	}
	if (!ws->fin)
		return;
	ws->in_msg = false;
	size_t n = ws->msg_len;
	ws->msg_len = 0;
	if (ws->state != WS_OPEN || ws->notified || ws->notify_pending)
		return;
	if (!ws->msg_binary && !utf8_valid(ws->msg, n)) {
		ws_fail(ws, 1007, "a text message that is not UTF-8");
		return;
	}
	if (ws->msg)
		ws->msg[n] = '\0';
	if (ws->h->on_message)
		ws->h->on_message(ws, ws->msg_binary, ws->msg ? ws->msg : (const uint8_t *)"", n,
				  ws->arg);
	if (ws->msg_cap > WS_MSG_KEEP) {
		free(ws->msg);
		ws->msg = NULL;
		ws->msg_cap = 0;
	}
}

/* The frame header at p (avail bytes): its length, 0 when incomplete, or
 * -1 after failing the connection. */
static long ws_header(struct httpd_ws *ws, const uint8_t *p, size_t avail)
{
	const struct httpd_config *cfg = &ws->conn->srv->cfg;
	uint8_t b0 = p[0], op = b0 & 0x0f;
	bool ctl = op & 8;
	const char *bad = NULL;
	if (b0 & 0x70)
		bad = "reserved bits set (no extension was negotiated)";
	else if ((op > OP_BINARY && op < OP_CLOSE) || op > OP_PONG)
		bad = "an unknown opcode";
	else if (ctl && !(b0 & 0x80))
		bad = "a fragmented control frame";
	else if (!ctl && op == OP_CONT && !ws->in_msg)
		bad = "a continuation frame without a message";
	else if (!ctl && op != OP_CONT && ws->in_msg)
		bad = "a new message inside a fragmented one";
	if (bad) {
		ws_fail(ws, 1002, bad);
		return -1;
	}
	if (avail < 2)
		return 0;
	uint8_t b1 = p[1];
	size_t len7 = b1 & 0x7f;
	if (!(b1 & 0x80)) {
		ws_fail(ws, 1002, "client frames must be masked");
		return -1;
	}
	if (ctl && len7 > 125) {
		ws_fail(ws, 1002, "a control frame over 125 bytes");
		return -1;
	}
	size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
	if (avail < hl)
		return 0;
	uint64_t plen = len7;
	if (len7 == 126) {
		plen = (uint64_t)p[2] << 8 | p[3];
	} else if (len7 == 127) {
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | p[2 + i];
		if (plen >> 63) {
			ws_fail(ws, 1002, "a frame length with the top bit set");
			return -1;
		}
	}
	if (!ctl && ws->state == WS_OPEN && plen > cfg->ws_max_message - ws->msg_len) {
		char why[80];
		snprintf(why, sizeof(why), "a message over %zu bytes", cfg->ws_max_message);
		ws_fail(ws, 1009, why);
		return -1;
	}
	memcpy(ws->mask, p + hl - 4, 4);
	ws->have_hdr = true;
	ws->fin = b0 & 0x80;
	ws->opcode = op;
	ws->plen = plen;
	ws->pgot = 0;
	if (!ctl && op != OP_CONT) {
		ws->in_msg = true;
		ws->msg_binary = op == OP_BINARY;
	}
	return (long)hl;
}

static bool ws_parse(struct httpd_conn *c)
{
	struct httpd_ws *ws = c->ws;
	size_t used = 0;
	bool progress = false;
	for (;;) {
		if (c->mode != M_WS)
			return true; /* failed or finishing: the input is gone */
		const uint8_t *p = c->in + used;
		size_t avail = c->in_len - used;
		if (!ws->have_hdr) {
			if (avail == 0)
				break;
			long hl = ws_header(ws, p, avail);
			if (hl < 0)
				return true;
			if (hl == 0)
				break;
			used += (size_t)hl;
			p += hl;
			avail -= (size_t)hl;
		}
		bool ctl = ws->opcode & 8;
		size_t take = (size_t)(ws->plen - ws->pgot) < avail ? (size_t)(ws->plen - ws->pgot)
								    : avail;
		uint8_t *dst = NULL;
		if (ctl) {
			dst = ws->ctl + ws->pgot;
		} else if (ws->state == WS_OPEN) {
			if (ws->msg_len + take + 1 > ws->msg_cap) {
				size_t cap = ws->msg_cap ? ws->msg_cap : 1024;
				while (cap < ws->msg_len + take + 1)
					cap *= 2;
				uint8_t *m = realloc(ws->msg, cap);
				if (!m) {
					conn_abort(c);
					return true;
				}
				ws->msg = m;
				ws->msg_cap = cap;
			}
			dst = ws->msg + ws->msg_len;
			ws->msg_len += take;
		}
		if (dst)
			for (size_t i = 0; i < take; i++)
				dst[i] = p[i] ^ ws->mask[(ws->pgot + i) & 3];
		ws->pgot += take;
		used += take;
		if (ws->pgot < ws->plen)
			break;
		ws->have_hdr = false;
		progress = true;
		ws_frame_done(ws);
	}
	if (used >= c->in_len) {
		c->in_len = 0;
	} else {
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	return progress || used > 0;
}

bool ws_run(struct httpd_conn *c)
{
	struct httpd_ws *ws = c->ws;
	if (ws->notify_pending) {
		ws->notify_pending = false;
		ws->notified = true;
		if (ws->h->on_close)
			ws->h->on_close(ws, ws->close_code, ws->arg);
		return true;
	}
	if (c->mode != M_WS)
		return false;
	size_t qmax = c->srv->cfg.ws_queue_max;
	if (ws->drain_armed && conn_queued(c) <= qmax / 4) {
		ws->drain_armed = false;
		if (ws->state == WS_OPEN && !ws->notified && ws->h->on_drain)
			ws->h->on_drain(ws, ws->arg);
		return true;
	}
	if (c->in_len > 0 && ws_parse(c))
		return true;
	if (c->eof) {
		/* FIN without a close frame. */
		if (ws->state == WS_OPEN)
			ws_notify(ws, 1006);
		ws->state = WS_DONE;
		conn_begin_finish(c);
		return true;
	}
	return false;
}

uint64_t ws_deadline(const struct httpd_conn *c)
{
	if (c->ws && c->ws->state == WS_CLOSING)
		return c->phase_start + c->srv->cfg.ws_close_ms;
	return 0;
}

void ws_expire(struct httpd_conn *c)
{
	conn_abort(c);
}

void ws_conn_gone(struct httpd_conn *c)
{
	struct httpd_ws *ws = c->ws;
	c->ws = NULL;
	if (!ws->notified) {
		int code = ws->notify_pending ? ws->close_code : 1006;
		ws->notified = true;
		ws->notify_pending = false;
		if (ws->h->on_close)
			ws->h->on_close(ws, code, ws->arg);
	}
	free(ws->msg);
	exch_free(ws->ex);
	free(ws);
}

/* ---- The handler's calls ----------------------------------------------------- */

const struct httpd_req *httpd_ws_req(const struct httpd_ws *ws)
{
	return &ws->ex->req;
}

void httpd_ws_set_data(struct httpd_ws *ws, void *data)
{
	ws->data = data;
}

void *httpd_ws_data(const struct httpd_ws *ws)
{
	return ws->data;
}

static int ws_send(struct httpd_ws *ws, uint8_t op, const void *data, size_t len)
{
	if (!ws || ws->state != WS_OPEN || ws->notified || ws->notify_pending)
		return -EPIPE;
	struct httpd *s = ws->conn->srv;
	s->in_api++;
	int rc = ws_frame(ws, op, data, len, true);
	s->in_api--;
	return rc;
}

int httpd_ws_send_text(struct httpd_ws *ws, const char *data, size_t len)
{
	return ws_send(ws, OP_TEXT, data, len);
}

int httpd_ws_send_binary(struct httpd_ws *ws, const void *data, size_t len)
{
	return ws_send(ws, OP_BINARY, data, len);
}

int httpd_ws_close(struct httpd_ws *ws, int code, const char *reason)
{
	if (!ws || ws->state != WS_OPEN || ws->notified || ws->notify_pending)
		return -EPIPE;
	if (!(code == 1000 || code == 1001 || code == 1008 || code == 1011 ||
	      (code >= 3000 && code <= 4999)))
		return -EINVAL;
	struct httpd_conn *c = ws->conn;
	c->srv->in_api++;
	ws_send_close(ws, code, reason);
	ws->state = WS_CLOSING;
	c->phase_start = uv_now(c->srv->loop);
	ws_notify(ws, code);
	c->srv->in_api--;
	return 0;
}

size_t httpd_ws_queued(const struct httpd_ws *ws)
{
	return conn_queued(ws->conn);
}

size_t httpd_ws_queue_max(const struct httpd_ws *ws)
{
	return ws->conn->srv->cfg.ws_queue_max;
}
