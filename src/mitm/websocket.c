/* Passive WebSocket observer: RFC 6455 frames each way, RFC 7692
 * permessage-deflate, messages batched as JSON.
 *
 * Frame layout (RFC 6455 5.2), parsed one byte stream per direction:
 *   byte 0: FIN, RSV1..3, opcode (4 bits)
 *   byte 1: MASK, payload length (7 bits: 0-125, 126 = 16-bit follows,
 *           127 = 64-bit follows, most significant bit 0)
 *   then the extended length, then the 4-byte masking key when MASK,
 *   then the payload, XORed with key[i % 4] when masked (5.3). */
#include "mitm/websocket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "flows/flowlog.h"

enum {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xa,
};

#define WS_FIN 0x80
#define WS_RSV1 0x40 /* "compressed" with permessage-deflate (RFC 7692 6) */
#define WS_RSV23 0x30
#define WS_MASK 0x80
#define WS_MAX_CONTROL 125 /* RFC 6455 5.5 */
#define WS_INFLATE_CHUNK 16384

enum { DIR_UP, DIR_DOWN };

struct ws_dir {
	/* the frame header being read */
	uint8_t hdr[14];
	size_t hdr_len, hdr_need;
	bool in_payload;
	uint8_t opcode;
	bool fin, masked;
	uint8_t key[4];
	uint64_t remaining; /* payload bytes left in this frame */
	uint64_t pos;       /* payload bytes already read (mask phase) */
	/* the data message being assembled */
	bool in_message, compressed;
	uint8_t msg_opcode;
	struct http_body msg;
	struct timespec msg_time;
	/* a control frame's payload */
	uint8_t ctl[WS_MAX_CONTROL];
	size_t ctl_len;
	/* permessage-deflate */
	z_stream z;
	bool z_ready;
	bool no_context_takeover;
};

struct ws_obs {
	struct http_sink sink;
	size_t body_cap;
	char *url;
	struct http_clock clock; /* read once per call */
	bool deflate;            /* permessage-deflate negotiated */
	struct ws_dir dir[2];

	json_t *messages;      /* pending batch */
	struct timespec first; /* time of its oldest message */
	bool close_seen, close_reported;
	int close_dir;
	int close_code; /* -1: no status in the frame */
	char *close_reason;
	size_t close_reason_len;

	bool failed, finished;
	char error[96];
	struct ws_stats stats;
};

static const struct timespec *now(struct ws_obs *o)
{
	return http_clock_now(&o->clock);
}

/* ---- permessage-deflate negotiation (RFC 7692 5, 7.1) -------------------- */

/* Reads the extension the server accepted. Window sizes need nothing: a
 * 15-bit inflate window decodes any smaller one. */
static void parse_extensions(struct ws_obs *o, const char *ext)
{
	if (!ext)
		return;
	const char *p = ext;
	while (*p) {
		/* one extension: token *( ";" param ) up to "," */
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		bool first = true, is_deflate = false;
		const char *q = p;
		while (q < end) {
			while (q < end && (*q == ' ' || *q == '\t' || *q == ';'))
				q++;
			const char *t = q;
			while (q < end && *q != ';' && *q != '=' && *q != ' ' && *q != '\t')
				q++;
			size_t tl = (size_t)(q - t);
			while (q < end && *q != ';')
				q++; /* skip "=value" */
			if (tl == 0)
				continue;
			if (first) {
				is_deflate =
					tl == 18 && strncasecmp(t, "permessage-deflate", 18) == 0;
				first = false;
				if (!is_deflate)
					break;
			} else if (tl == 26 &&
				   strncasecmp(t, "client_no_context_takeover", 26) == 0) {
				o->dir[DIR_UP].no_context_takeover = true;
			} else if (tl == 26 &&
				   strncasecmp(t, "server_no_context_takeover", 26) == 0) {
				o->dir[DIR_DOWN].no_context_takeover = true;
			}
		}
		if (is_deflate) {
			o->deflate = true;
			return;
		}
		o->dir[DIR_UP].no_context_takeover = o->dir[DIR_DOWN].no_context_takeover = false;
		p = *end ? end + 1 : end;
	}
}

/* ---- batches ------------------------------------------------------------- */

static void flush(struct ws_obs *o)
{
	size_t n = o->messages ? json_array_size(o->messages) : 0;
	bool close = o->close_seen && !o->close_reported;
	if (n == 0 && !close && !(o->failed && o->error[0]))
		return;
	json_t *b = json_object();
	if (!b)
		return;
	json_object_set_new(b, "url", json_string(o->url));
	json_object_set_new(b, "messages", o->messages ? o->messages : json_array());
	o->messages = NULL;
	if (close) {
		json_t *c = json_object();
		json_object_set_new(c, "dir", json_string(o->close_dir == DIR_UP ? "up" : "down"));
		json_object_set_new(c, "code",
				    o->close_code < 0 ? json_null() : json_integer(o->close_code));
		json_t *body = http_body_json((const uint8_t *)o->close_reason, o->close_reason_len,
					      o->close_reason_len, false);
		json_t *text = json_object_get(body, "text");
		/* RFC 6455 5.5.1 wants UTF-8; anything else is recorded as "" */
		json_object_set_new(c, "reason", text ? json_incref(text) : json_string(""));
		json_decref(body);
		json_object_set_new(b, "close", c);
		o->close_reported = true;
	}
	if (o->failed && o->error[0]) {
		json_object_set_new(b, "error", json_string(o->error));
		o->error[0] = '\0'; /* once */
	}
	o->stats.batches++;
	if (o->sink.websocket)
		o->sink.websocket(o->sink.ctx, b);
	else
		json_decref(b);
}

static const char *opcode_name(uint8_t op)
{
	switch (op) {
	case WS_OP_TEXT:
		return "text";
	case WS_OP_BINARY:
		return "binary";
	case WS_OP_CLOSE:
		return "close";
	case WS_OP_PING:
		return "ping";
	default:
		return "pong";
	}
}

static void record(struct ws_obs *o, int d, uint8_t op, const struct timespec *t,
		   const uint8_t *data, size_t len, uint64_t size, bool truncated)
{
	if (!o->messages) {
		o->messages = json_array();
		if (!o->messages)
			return;
		o->first = *t;
	}
	char ts[FLOWLOG_TIME_LEN];
	flowlog_format_time(t, ts);
	json_t *m = json_object();
	if (!m)
		return;
	json_object_set_new(m, "dir", json_string(d == DIR_UP ? "up" : "down"));
	json_object_set_new(m, "time", json_string(ts));
	json_object_set_new(m, "opcode", json_string(opcode_name(op)));
	json_object_set_new(m, "body", http_body_json(data, len, size, truncated));
	json_array_append_new(o->messages, m);
	o->stats.messages[d]++;
	if (json_array_size(o->messages) >= WS_BATCH_MESSAGES)
		flush(o);
}

static void malformed(struct ws_obs *o, int d, const char *why)
{
	snprintf(o->error, sizeof(o->error), "malformed frame (%s): %s",
		 d == DIR_UP ? "up" : "down", why);
	o->failed = true;
	flush(o);
}

/* ---- payload ------------------------------------------------------------- */

/* XORs p[0, n) with the key, starting at payload offset `pos`. */
static void unmask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t pos)
{
	size_t i = 0;
	/* byte by byte until the key phase is 0, then 8 bytes at a time */
	while (i < n && ((pos + i) & 3) != 0) {
		p[i] ^= key[(pos + i) & 3];
		i++;
	}
	uint64_t k8;
	uint8_t kb[8] = { key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3] };
	memcpy(&k8, kb, 8);
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		w ^= k8;
		memcpy(p + i, &w, 8);
	}
	for (; i < n; i++)
		p[i] ^= key[(pos + i) & 3];
}

/* Inflates into the message; bytes past the cap are counted only. */
static int inflate_feed(struct ws_dir *d, const uint8_t *in, size_t n)
{
	uint8_t out[WS_INFLATE_CHUNK];
	d->z.next_in = (Bytef *)in;
	d->z.avail_in = (uInt)n;
	for (;;) {
		d->z.next_out = out;
		d->z.avail_out = sizeof(out);
		int rc = inflate(&d->z, Z_SYNC_FLUSH);
		size_t got = sizeof(out) - d->z.avail_out;
		if (got)
			http_body_append(&d->msg, out, got);
		if (rc == Z_STREAM_END) {
			/* a final block: a fresh stream may follow */
			if (inflateReset(&d->z) != Z_OK)
				return -1;
			if (d->z.avail_in == 0)
				return 0;
			continue;
		}
		if (rc == Z_BUF_ERROR)
			return 0; /* needs more input */
		if (rc != Z_OK)
			return -1;
		if (d->z.avail_in == 0 && d->z.avail_out != 0)
			return 0;
	}
}

static void data_bytes(struct ws_obs *o, struct ws_dir *d, int di, const uint8_t *p, size_t n)
{
	if (d->compressed) {
		uint8_t tmp[4096];
		while (n) {
			size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
			memcpy(tmp, p, k);
			if (d->masked)
				unmask(tmp, k, d->key, d->pos);
			d->pos += k;
			if (inflate_feed(d, tmp, k) != 0) {
				malformed(o, di, d->z.msg ? d->z.msg : "inflate failed");
				return;
			}
			p += k;
			n -= k;
		}
		return;
	}
	/* Uncompressed: copy what fits under the cap and unmask it in place. */
	size_t before = d->msg.len;
	http_body_append(&d->msg, p, n);
	if (d->masked && d->msg.len > before)
		unmask(d->msg.data + before, d->msg.len - before, d->key, d->pos);
	d->pos += n;
}

static void message_end(struct ws_obs *o, struct ws_dir *d, int di)
{
	if (d->compressed) {
		/* RFC 7692 7.2.2: the sender removed 00 00 ff ff; put it back. */
		static const uint8_t tail[4] = { 0x00, 0x00, 0xff, 0xff };
		if (inflate_feed(d, tail, sizeof(tail)) != 0) {
			malformed(o, di, d->z.msg ? d->z.msg : "inflate failed");
			return;
		}
		if (d->no_context_takeover && inflateReset(&d->z) != Z_OK) {
			malformed(o, di, "inflate reset failed");
			return;
		}
	}
	record(o, di, d->msg_opcode, &d->msg_time, d->msg.data, d->msg.len, d->msg.size,
	       d->msg.truncated);
	http_body_free(&d->msg);
	d->in_message = false;
	d->compressed = false;
}

static void control_end(struct ws_obs *o, struct ws_dir *d, int di)
{
	const uint8_t *body = d->ctl;
	size_t len = d->ctl_len;
	if (d->opcode == WS_OP_CLOSE) {
		/* 5.5.1: an optional 2-byte status code, then a UTF-8 reason */
		int code = -1;
		if (len >= 2) {
			code = (d->ctl[0] << 8) | d->ctl[1];
			body += 2;
			len -= 2;
		}
		if (!o->close_seen) {
			o->close_seen = true;
			o->close_dir = di;
			o->close_code = code;
			o->close_reason = malloc(len + 1);
			if (o->close_reason) {
				memcpy(o->close_reason, body, len);
				o->close_reason_len = len;
			}
		}
	}
	record(o, di, d->opcode, now(o), body, len, len, false);
}

/* ---- frames -------------------------------------------------------------- */

/* The header is complete: check it (5.2, 5.4, 5.5; RFC 7692 6). */
static bool header_done(struct ws_obs *o, struct ws_dir *d, int di)
{
	uint8_t b0 = d->hdr[0], b1 = d->hdr[1];
	d->fin = b0 & WS_FIN;
	d->opcode = b0 & 0x0f;
	d->masked = b1 & WS_MASK;
	uint64_t len = b1 & 0x7f;
	size_t at = 2;
	if (len == 126) {
		len = ((uint64_t)d->hdr[2] << 8) | d->hdr[3];
		at = 4;
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = (len << 8) | d->hdr[2 + i];
		at = 10;
		if (len >> 63) {
			malformed(o, di, "64-bit length with the top bit set");
			return false;
		}
	}
	if (d->masked)
		memcpy(d->key, d->hdr + at, 4);
	d->remaining = len;
	d->pos = 0;
	o->stats.frames[di]++;

	if (b0 & WS_RSV23) {
		malformed(o, di, "RSV2/RSV3 set");
		return false;
	}
	bool rsv1 = b0 & WS_RSV1;
	switch (d->opcode) {
	case WS_OP_CLOSE:
	case WS_OP_PING:
	case WS_OP_PONG:
		if (!d->fin || len > WS_MAX_CONTROL || rsv1) {
			malformed(o, di, "bad control frame");
			return false;
		}
		d->ctl_len = 0;
		return true;
	case WS_OP_TEXT:
	case WS_OP_BINARY:
		if (d->in_message) {
			malformed(o, di, "new message inside a fragmented one");
			return false;
		}
		if (rsv1 && !o->deflate) {
			malformed(o, di, "RSV1 without permessage-deflate");
			return false;
		}
		d->in_message = true;
		d->msg_opcode = d->opcode;
		d->compressed = rsv1;
		d->msg_time = *now(o);
		http_body_init(&d->msg, o->body_cap);
		if (rsv1 && !d->z_ready) {
			memset(&d->z, 0, sizeof(d->z));
			if (inflateInit2(&d->z, -15) != Z_OK) {
				malformed(o, di, "inflate init failed");
				return false;
			}
			d->z_ready = true;
		}
		return true;
	case WS_OP_CONT:
		if (!d->in_message) {
			malformed(o, di, "continuation without a message");
			return false;
		}
		if (rsv1) {
			malformed(o, di, "RSV1 on a continuation");
			return false;
		}
		return true;
	default:
		malformed(o, di, "reserved opcode");
		return false;
	}
}

static void frame_end(struct ws_obs *o, struct ws_dir *d, int di)
{
	d->in_payload = false;
	d->hdr_len = 0;
	if (d->opcode >= WS_OP_CLOSE)
		control_end(o, d, di);
	else if (d->fin)
		message_end(o, d, di);
}

static void feed(struct ws_obs *o, int di, const uint8_t *p, size_t n)
{
	struct ws_dir *d = &o->dir[di];
	o->clock.valid = false;
	while (n && !o->failed) {
		if (!d->in_payload) {
			if (d->hdr_len < 2) {
				d->hdr[d->hdr_len++] = *p++;
				n--;
				if (d->hdr_len < 2)
					continue;
				uint8_t l7 = d->hdr[1] & 0x7f;
				d->hdr_need = 2 +
					      (l7 == 126   ? 2
					       : l7 == 127 ? 8
							   : 0) +
					      (d->hdr[1] & WS_MASK ? 4 : 0);
			}
			size_t k = d->hdr_need - d->hdr_len;
			if (k > n)
				k = n;
			memcpy(d->hdr + d->hdr_len, p, k);
			d->hdr_len += k;
			p += k;
			n -= k;
			if (d->hdr_len < d->hdr_need)
				continue;
			if (!header_done(o, d, di))
				return;
			d->in_payload = true;
			if (d->remaining == 0)
				frame_end(o, d, di);
			continue;
		}
		size_t k = d->remaining < n ? (size_t)d->remaining : n;
		if (d->opcode >= WS_OP_CLOSE) {
			memcpy(d->ctl + d->ctl_len, p, k);
			if (d->masked)
				unmask(d->ctl + d->ctl_len, k, d->key, d->pos);
			d->ctl_len += k;
			d->pos += k;
		} else {
			data_bytes(o, d, di, p, k);
			if (o->failed)
				return;
		}
		d->remaining -= k;
		p += k;
		n -= k;
		if (d->remaining == 0)
			frame_end(o, d, di);
	}
}

/* ---- API ----------------------------------------------------------------- */

struct ws_obs *ws_obs_new(const struct ws_config *cfg)
{
	struct ws_obs *o = calloc(1, sizeof(*o));
	if (!o)
		goto fail;
	o->sink = cfg->sink;
	o->body_cap = cfg->body_cap;
	o->clock.read = cfg->clock;
	const char *url = cfg->url ? cfg->url : "";
	if (http_strdup_n(&o->url, url, strlen(url)) != 0)
		goto fail;
	parse_extensions(o, cfg->extensions);
	return o;
fail:
	ws_obs_free(o);
	errno = ENOMEM;
	return NULL;
}

void ws_obs_free(struct ws_obs *o)
{
	if (!o)
		return;
	for (int i = 0; i < 2; i++) {
		http_body_free(&o->dir[i].msg);
		if (o->dir[i].z_ready)
			inflateEnd(&o->dir[i].z);
	}
	json_decref(o->messages);
	free(o->close_reason);
	free(o->url);
	free(o);
}

void ws_obs_client(struct ws_obs *o, const uint8_t *p, size_t n)
{
	if (!o->failed && !o->finished)
		feed(o, DIR_UP, p, n);
}

void ws_obs_server(struct ws_obs *o, const uint8_t *p, size_t n)
{
	if (!o->failed && !o->finished)
		feed(o, DIR_DOWN, p, n);
}

void ws_obs_tick(struct ws_obs *o, const struct timespec *t)
{
	if (!o->messages || json_array_size(o->messages) == 0)
		return;
	int64_t age_ns = (int64_t)(t->tv_sec - o->first.tv_sec) * 1000000000 +
			 (t->tv_nsec - o->first.tv_nsec);
	if (age_ns >= (int64_t)WS_BATCH_SECONDS * 1000000000)
		flush(o);
}

void ws_obs_finish(struct ws_obs *o)
{
	if (o->finished)
		return;
	flush(o);
	o->finished = true;
}

bool ws_obs_failed(const struct ws_obs *o)
{
	return o->failed;
}

struct ws_stats ws_obs_stats(const struct ws_obs *o)
{
	return o->stats;
}
