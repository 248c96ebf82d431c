/* The passive HTTP/2 observer (h2obs.h).
 *
 * Each direction is one streaming frame parser (RFC 9113 section 4.1): a
 * frame is read as its 9-byte header, a fixed part (Pad Length, the
 * priority fields, a promised stream id, an error code, SETTINGS entries
 * six bytes at a time), the content, then the padding. Content is never
 * buffered: DATA goes straight into the stream's body, header block
 * fragments straight into the direction's HPACK inflater (which keeps its
 * own state across chunks), everything else is skipped. */
#include "mitm/h2obs.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 9113 section 3.4: the client connection preface. */
static const uint8_t h2_preface[24] = {
	'P', 'R', 'I',  ' ',  '*',  ' ',  'H', 'T', 'T',  'P',  '/',  '2',
	'.', '0', '\r', '\n', '\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n',
};

/* Section 4.1: Length (24) | Type (8) | Flags (8) | R (1) | Stream Id (31). */
#define H2_FRAME_HEADER_LEN 9
#define H2_DEFAULT_MAX_FRAME 16384u /* section 4.2 */
#define H2_MAX_MAX_FRAME ((1u << 24) - 1)
#define H2_DEFAULT_TABLE_SIZE 4096u /* RFC 7541 section 4.2 */

/* Section 6: frame types and the flags this parser uses. */
enum {
	H2_DATA = 0x0,
	H2_HEADERS = 0x1,
	H2_PRIORITY = 0x2,
	H2_RST_STREAM = 0x3,
	H2_SETTINGS = 0x4,
	H2_PUSH_PROMISE = 0x5,
	H2_PING = 0x6,
	H2_GOAWAY = 0x7,
	H2_WINDOW_UPDATE = 0x8,
	H2_CONTINUATION = 0x9,
};
enum {
	H2_FLAG_END_STREAM = 0x01,
	H2_FLAG_ACK = 0x01,
	H2_FLAG_END_HEADERS = 0x04,
	H2_FLAG_PADDED = 0x08,
	H2_FLAG_PRIORITY = 0x20,
};
/* Section 6.5.2. */
enum {
	H2_SETTINGS_HEADER_TABLE_SIZE = 0x1,
	H2_SETTINGS_MAX_FRAME_SIZE = 0x5,
};
#define H2_SETTING_LEN 6
#define H2_PRIORITY_LEN 5
#define H2_RST_STREAM_LEN 4
#define H2_GOAWAY_MIN_LEN 8

enum h2_dir_id { DIR_CLIENT = 0, DIR_SERVER = 1 };

enum h2_phase {
	PH_PREFACE, /* client direction: the 24 preface bytes */
	PH_HEAD,    /* the 9-byte frame header */
	PH_FIXED,   /* fixed fields at the start of the payload */
	PH_CONTENT, /* body bytes, header block fragment, or skipped bytes */
	PH_PAD,     /* padding */
};

/* Where a header block's fields go. */
enum h2_block_kind {
	BK_DISCARD, /* decoded for the HPACK state only */
	BK_REQUEST,
	BK_REQ_TRAILERS,
	BK_RESPONSE, /* a 1xx or the final response head */
	BK_RESP_TRAILERS,
	BK_PROMISE, /* PUSH_PROMISE: the promised stream's request */
};

/* Settings one side sent that the other has not acknowledged yet (6.5.3:
 * they bind the other side once it acknowledges them). */
struct h2_settings {
	uint32_t table_size, max_frame;
	bool has_table_size, has_max_frame;
};
#define H2OBS_PENDING_SETTINGS 8

struct h2obs_stream {
	struct http_exchange x;
	uint8_t opener;      /* enum h2_dir_id */
	bool req_head_done;  /* request (or promised request) head decoded */
	bool resp_head_done; /* final (non-1xx) response head decoded */
	bool refused;        /* opened above the other side's GOAWAY */
	bool closing;        /* marked for emission by a GOAWAY */
};

struct h2_dir {
	enum h2_phase phase;
	uint32_t preface_have;
	uint8_t head[H2_FRAME_HEADER_LEN];
	uint8_t head_have;
	bool seen_frame;

	/* The frame being read. */
	uint32_t len, sid;
	uint8_t type, flags;
	uint8_t fixed[8];
	uint8_t fixed_need, fixed_have;
	uint32_t settings_left; /* SETTINGS payload bytes not read yet */
	uint32_t content_left, pad_left;
	struct h2obs_stream *data_stream; /* DATA target, NULL: ignored */
	struct h2_settings cur_settings;

	/* The header block being decoded (it may span CONTINUATION frames). */
	bool in_block, block_end_stream, block_info, block_final;
	uint32_t block_sid;
	enum h2_block_kind block_kind;
	struct h2obs_stream *block_stream; /* NULL: not recorded */

	nghttp2_hd_inflater *hd; /* decodes what this side encoded */
	uint32_t max_frame;      /* frames this side may send */
	struct h2_settings pending[H2OBS_PENDING_SETTINGS];
	unsigned pending_first, pending_n;
	uint32_t last_opened;   /* highest stream id this side opened */
	uint32_t refused_above; /* the other side's GOAWAY last id */
};

/* Open streams by id: linear probing, backward-shift deletion. */
struct h2_map {
	struct h2obs_stream **slot;
	size_t cap, n;
	unsigned bits;
};
#define H2_MAP_MIN_BITS 4

struct h2obs {
	struct http_sink sink;
	size_t body_cap, max_streams;
	char *scheme, *default_authority;
	struct h2_dir dir[2];
	struct h2_map map;
	struct h2obs_stats stats;
	bool failed, stopped;
};

static const uint8_t empty_input[1];

static struct timespec now_rt(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

static uint32_t be24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Section 7: error code names. */
static void h2_error_name(uint32_t code, char *out, size_t n)
{
	static const char *const names[] = {
		"NO_ERROR",
		"PROTOCOL_ERROR",
		"INTERNAL_ERROR",
		"FLOW_CONTROL_ERROR",
		"SETTINGS_TIMEOUT",
		"STREAM_CLOSED",
		"FRAME_SIZE_ERROR",
		"REFUSED_STREAM",
		"CANCEL",
		"COMPRESSION_ERROR",
		"CONNECT_ERROR",
		"ENHANCE_YOUR_CALM",
		"INADEQUATE_SECURITY",
		"HTTP_1_1_REQUIRED",
	};
	if (code < sizeof(names) / sizeof(names[0]))
		snprintf(out, n, "%s", names[code]);
	else
		snprintf(out, n, "0x%x", (unsigned)code);
}

/* ---- stream map ---- */

static size_t map_home(const struct h2_map *m, uint32_t id)
{
	return (size_t)((id * 0x9E3779B1u) >> (32 - m->bits));
}

static int map_init(struct h2_map *m, unsigned bits)
{
	m->bits = bits;
	m->cap = (size_t)1 << bits;
	m->n = 0;
	m->slot = calloc(m->cap, sizeof(*m->slot));
	return m->slot ? 0 : -ENOMEM;
}

static struct h2obs_stream *map_get(const struct h2_map *m, uint32_t id)
{
	size_t mask = m->cap - 1;
	for (size_t i = map_home(m, id); m->slot[i]; i = (i + 1) & mask)
		if (m->slot[i]->x.stream_id == id)
			return m->slot[i];
	return NULL;
}

static void map_place(struct h2_map *m, struct h2obs_stream *st)
{
	size_t mask = m->cap - 1, i = map_home(m, st->x.stream_id);
	while (m->slot[i])
		i = (i + 1) & mask;
	m->slot[i] = st;
	m->n++;
}

/* Keeps the load at most one half. */
static int map_put(struct h2_map *m, struct h2obs_stream *st)
{
	if ((m->n + 1) * 2 > m->cap) {
		struct h2_map bigger;
		if (map_init(&bigger, m->bits + 1) < 0)
			return -ENOMEM;
		for (size_t i = 0; i < m->cap; i++)
			if (m->slot[i])
				map_place(&bigger, m->slot[i]);
		free(m->slot);
		*m = bigger;
	}
	map_place(m, st);
	return 0;
}

static void map_del(struct h2_map *m, const struct h2obs_stream *st)
{
	size_t mask = m->cap - 1, i = map_home(m, st->x.stream_id);
	while (m->slot[i] != st) {
		if (!m->slot[i])
			return;
		i = (i + 1) & mask;
	}
	m->slot[i] = NULL;
	m->n--;
	/* Pull back every later entry of the cluster whose home is not in
	 * (i, j], so lookups never meet a hole before their entry. */
	for (size_t j = (i + 1) & mask; m->slot[j]; j = (j + 1) & mask) {
		size_t k = map_home(m, m->slot[j]->x.stream_id);
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (stays)
			continue;
		m->slot[i] = m->slot[j];
		m->slot[j] = NULL;
		i = j;
	}
}

/* ---- exchanges ---- */

static void stream_free(struct h2obs_stream *st)
{
	http_exchange_free(&st->x);
	free(st);
}

/* Hands the exchange to the sink and frees it; the dir pointers to it are
 * cleared. Does not touch the map. */
static void stream_emit(struct h2obs *o, struct h2obs_stream *st, const char *error,
			const char *detail)
{
	for (int d = 0; d < 2; d++) {
		if (o->dir[d].data_stream == st)
			o->dir[d].data_stream = NULL;
		if (o->dir[d].block_stream == st)
			o->dir[d].block_stream = NULL;
	}
	if (error) {
		st->x.error = error;
		snprintf(st->x.error_detail, sizeof(st->x.error_detail), "%s",
			 detail ? detail : "");
	}
	if (st->x.end.tv_sec == 0 && st->x.end.tv_nsec == 0)
		st->x.end = now_rt();
	if (o->sink.exchange)
		o->sink.exchange(o->sink.ctx, &st->x);
	o->stats.emitted++;
	stream_free(st);
}

static void stream_close(struct h2obs *o, struct h2obs_stream *st, const char *error,
			 const char *detail)
{
	map_del(&o->map, st);
	stream_emit(o, st, error, detail);
}

/* Emits every open stream with `error` and empties the map. */
static void streams_close_all(struct h2obs *o, const char *error, const char *detail)
{
	for (size_t i = 0; i < o->map.cap; i++) {
		struct h2obs_stream *st = o->map.slot[i];
		if (!st)
			continue;
		o->map.slot[i] = NULL;
		o->map.n--;
		stream_emit(o, st, error, detail);
	}
}

static void stream_maybe_done(struct h2obs *o, struct h2obs_stream *st)
{
	if (st->x.req.complete && st->x.resp.complete)
		stream_close(o, st, NULL, NULL);
}

static void stream_request_ended(struct h2obs *o, struct h2obs_stream *st)
{
	st->x.req.complete = true;
	st->x.request_end = now_rt();
	if (st->refused) {
		/* Opened above the server's GOAWAY: it will never be answered. */
		stream_close(o, st, "connection_closed", "GOAWAY: stream not processed");
		return;
	}
	stream_maybe_done(o, st);
}

static void stream_response_ended(struct h2obs *o, struct h2obs_stream *st)
{
	st->x.resp.complete = true;
	st->x.end = now_rt();
	stream_maybe_done(o, st);
}

/* A stream `d` opened (HEADERS from the client, PUSH_PROMISE from the
 * server), or NULL when it is not recorded. */
static struct h2obs_stream *stream_open(struct h2obs *o, int d, uint32_t id)
{
	o->stats.streams_seen++;
	if (o->map.n >= o->max_streams) {
		o->stats.dropped++;
		return NULL;
	}
	struct h2obs_stream *st = calloc(1, sizeof(*st));
	if (!st) {
		o->stats.dropped++;
		return NULL;
	}
	http_exchange_init(&st->x, o->body_cap);
	st->x.stream_id = id;
	st->opener = (uint8_t)d;
	st->refused = id > o->dir[d].refused_above;
	st->x.start = now_rt();
	if (http_strdup_n(&st->x.version, "HTTP/2", 6) < 0 ||
	    http_strdup_n(&st->x.scheme, o->scheme, strlen(o->scheme)) < 0 ||
	    map_put(&o->map, st) < 0) {
		stream_free(st);
		o->stats.dropped++;
		return NULL;
	}
	return st;
}

/* ---- failure ---- */

/* Section 5.4.1: a connection error. Nothing after it can be decoded
 * (HPACK state or framing is lost): open streams end with "parse_error",
 * or one record carries the error when none is open. */
static void __attribute__((format(printf, 3, 4)))
h2obs_fail(struct h2obs *o, int d, const char *fmt, ...)
{
	if (o->stopped)
		return;
	char detail[sizeof(((struct http_exchange *)0)->error_detail)];
	int k = snprintf(detail, sizeof(detail), "%s: ", d == DIR_CLIENT ? "client" : "server");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail + k, sizeof(detail) - (size_t)k, fmt, ap);
	va_end(ap);

	o->failed = o->stopped = true;
	uint64_t before = o->stats.emitted;
	streams_close_all(o, "parse_error", detail);
	if (o->stats.emitted != before)
		return;
	struct h2obs_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return;
	http_exchange_init(&st->x, 0);
	st->x.stream_id = o->dir[d].sid;
	st->x.start = now_rt();
	if (http_strdup_n(&st->x.version, "HTTP/2", 6) < 0 ||
	    http_strdup_n(&st->x.scheme, o->scheme, strlen(o->scheme)) < 0) {
		stream_free(st);
		return;
	}
	stream_emit(o, st, "parse_error", detail);
}

/* ---- header blocks ---- */

static void header_add(struct http_headers *h, const nghttp2_nv *nv)
{
	/* -E2BIG marks the list truncated; -ENOMEM loses one field. */
	(void)http_headers_add(h, (const char *)nv->name, nv->namelen, (const char *)nv->value,
			       nv->valuelen);
}

static bool name_is(const nghttp2_nv *nv, const char *name)
{
	size_t n = strlen(name);
	return nv->namelen == n && memcmp(nv->name, name, n) == 0;
}

static void request_field(struct http_exchange *x, const nghttp2_nv *nv)
{
	header_add(&x->req.headers, nv);
	if (nv->namelen == 0 || nv->name[0] != ':')
		return;
	/* Section 8.3.1: the request pseudo-header fields (first one wins). */
	char **dst = NULL;
	if (name_is(nv, ":method"))
		dst = &x->method;
	else if (name_is(nv, ":authority"))
		dst = &x->authority;
	else if (name_is(nv, ":path"))
		dst = &x->path;
	if (dst && !*dst)
		(void)http_strdup_n(dst, (const char *)nv->value, nv->valuelen);
}

/* Section 8.3.2: ":status" is three digits. */
static int parse_status(const nghttp2_nv *nv)
{
	if (nv->valuelen != 3)
		return 0;
	int v = 0;
	for (int i = 0; i < 3; i++) {
		if (nv->value[i] < '0' || nv->value[i] > '9')
			return 0;
		v = v * 10 + (nv->value[i] - '0');
	}
	return v;
}

static void block_field(struct h2obs *o, struct h2_dir *s, const nghttp2_nv *nv)
{
	struct h2obs_stream *st = s->block_stream;
	if (!st)
		return;
	struct http_exchange *x = &st->x;
	switch (s->block_kind) {
	case BK_REQUEST:
	case BK_PROMISE:
		request_field(x, nv);
		break;
	case BK_REQ_TRAILERS:
		header_add(&x->req.trailers, nv);
		break;
	case BK_RESPONSE:
		if (s->block_info)
			break; /* the rest of a 1xx head */
		if (name_is(nv, ":status")) {
			int status = parse_status(nv);
			/* Section 8.1: interim responses come before the final one. */
			if (status >= 100 && status <= 199) {
				s->block_info = true;
				if (x->n_informational <
				    sizeof(x->informational) / sizeof(x->informational[0]))
					x->informational[x->n_informational++] = status;
				break;
			}
			if (!x->status)
				x->status = status;
		}
		header_add(&x->resp.headers, nv);
		break;
	case BK_RESP_TRAILERS:
		header_add(&x->resp.trailers, nv);
		break;
	case BK_DISCARD:
		break;
	}
}

/* Feeds a fragment of the current header block to the inflater; `final`
 * on its last bytes (RFC 7541: blocks are decoded in order, across
 * CONTINUATION frames). */
static void block_feed(struct h2obs *o, int d, const uint8_t *p, size_t n, bool final)
{
	struct h2_dir *s = &o->dir[d];
	if (n == 0)
		p = empty_input;
	for (;;) {
		nghttp2_nv nv;
		int flags = 0;
		ssize_t r = nghttp2_hd_inflate_hd2(s->hd, &nv, &flags, p, n, final);
		if (r < 0) {
			h2obs_fail(o, d, "HPACK on stream %u: %s", (unsigned)s->block_sid,
				   nghttp2_strerror((int)r));
			return;
		}
		p += r;
		n -= (size_t)r;
		if (flags & NGHTTP2_HD_INFLATE_EMIT)
			block_field(o, s, &nv);
		if (flags & NGHTTP2_HD_INFLATE_FINAL) {
			nghttp2_hd_inflate_end_headers(s->hd);
			s->block_final = true;
			return;
		}
		if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && (n == 0 || r == 0))
			break;
	}
	if (final)
		h2obs_fail(o, d, "HPACK on stream %u: truncated header block",
			   (unsigned)s->block_sid);
}

/* A HEADERS or PUSH_PROMISE frame starts a header block: decide where its
 * fields go. */
static void block_begin(struct h2obs *o, int d, uint32_t sid, uint32_t promised)
{
	struct h2_dir *s = &o->dir[d];
	struct h2obs_stream *st = NULL;
	enum h2_block_kind kind = BK_DISCARD;

	s->in_block = true;
	s->block_sid = sid;
	s->block_end_stream = s->type == H2_HEADERS && (s->flags & H2_FLAG_END_STREAM);
	s->block_info = false;
	s->block_final = false;

	if (s->type == H2_PUSH_PROMISE) {
		/* Section 8.4: the promised stream's request; server ids are even. */
		if (promised > s->last_opened && promised % 2 == 0) {
			s->last_opened = promised;
			st = stream_open(o, d, promised);
			kind = BK_PROMISE;
		}
	} else if (d == DIR_CLIENT) {
		st = map_get(&o->map, sid);
		if (st) {
			kind = st->opener == DIR_CLIENT && !st->x.req.complete ? BK_REQ_TRAILERS
									       : BK_DISCARD;
		} else if (sid > s->last_opened && sid % 2 == 1) {
			/* Section 5.1.1: a new stream, ids only grow. */
			s->last_opened = sid;
			st = stream_open(o, d, sid);
			kind = BK_REQUEST;
		}
	} else {
		st = map_get(&o->map, sid);
		if (st && !st->x.resp.complete) {
			kind = st->resp_head_done ? BK_RESP_TRAILERS : BK_RESPONSE;
			if (st->x.response_start.tv_sec == 0 && st->x.response_start.tv_nsec == 0)
				st->x.response_start = now_rt();
		}
	}
	s->block_kind = kind;
	s->block_stream = kind == BK_DISCARD ? NULL : st;
}

static void request_head_done(struct h2obs *o, struct http_exchange *x)
{
	if (x->authority)
		return;
	/* Section 8.3.1: Host may stand in for :authority. */
	const struct http_header *h = http_headers_find(&x->req.headers, "host");
	if (h)
		(void)http_strdup_n(&x->authority, h->value, h->value_len);
	else if (o->default_authority)
		(void)http_strdup_n(&x->authority, o->default_authority,
				    strlen(o->default_authority));
}

/* The frame carrying END_HEADERS was read completely. */
static void block_end(struct h2obs *o, int d)
{
	struct h2_dir *s = &o->dir[d];
	struct h2obs_stream *st = s->block_stream;
	s->in_block = false;
	s->block_stream = NULL;
	if (!st)
		return;
	switch (s->block_kind) {
	case BK_REQUEST:
		st->req_head_done = true;
		request_head_done(o, &st->x);
		if (s->block_end_stream)
			stream_request_ended(o, st);
		break;
	case BK_PROMISE:
		/* A promised request has no body (section 8.4). */
		st->req_head_done = true;
		request_head_done(o, &st->x);
		stream_request_ended(o, st);
		break;
	case BK_REQ_TRAILERS:
		if (s->block_end_stream)
			stream_request_ended(o, st);
		break;
	case BK_RESPONSE:
		if (s->block_info)
			break;
		st->resp_head_done = true;
		if (s->block_end_stream)
			stream_response_ended(o, st);
		break;
	case BK_RESP_TRAILERS:
		if (s->block_end_stream)
			stream_response_ended(o, st);
		break;
	case BK_DISCARD:
		break;
	}
}

/* ---- control frames ---- */

static void rst_stream(struct h2obs *o, int d, uint32_t code)
{
	struct h2obs_stream *st = map_get(&o->map, o->dir[d].sid);
	if (!st)
		return;
	/* Section 8.1: a server may answer fully, then reset the request with
	 * NO_ERROR to stop its upload; the exchange itself is complete. */
	if (d == DIR_SERVER && code == 0 && st->x.resp.complete) {
		stream_close(o, st, NULL, NULL);
		return;
	}
	char name[32];
	h2_error_name(code, name, sizeof(name));
	stream_close(o, st, d == DIR_CLIENT ? "client_reset" : "upstream_reset", name);
}

/* Section 6.8: streams the receiver opened above last_stream_id were not
 * processed and never will be. */
static void goaway(struct h2obs *o, int d, uint32_t last_id, uint32_t code)
{
	int e = 1 - d;
	if (last_id < o->dir[e].refused_above)
		o->dir[e].refused_above = last_id;

	char name[32], detail[96];
	h2_error_name(code, name, sizeof(name));
	snprintf(detail, sizeof(detail), "GOAWAY %s, last stream %u", name, (unsigned)last_id);
	for (size_t i = 0; i < o->map.cap; i++) {
		struct h2obs_stream *st = o->map.slot[i];
		if (st)
			st->closing = st->opener == e && st->x.stream_id > last_id;
	}
	/* Removal shifts later entries back into slot i: look at it again. */
	for (size_t i = 0; i < o->map.cap;) {
		struct h2obs_stream *st = o->map.slot[i];
		if (st && st->closing)
			stream_close(o, st, "connection_closed", detail);
		else
			i++;
	}
}

/* One SETTINGS entry (section 6.5.1), sent by d. Frame size raises apply
 * at once (frames already under way may use them), everything else when
 * the other side acknowledges. */
static void setting(struct h2obs *o, int d, uint16_t id, uint32_t value)
{
	struct h2_settings *cur = &o->dir[d].cur_settings;
	if (id == H2_SETTINGS_HEADER_TABLE_SIZE) {
		cur->table_size = value;
		cur->has_table_size = true;
	} else if (id == H2_SETTINGS_MAX_FRAME_SIZE) {
		if (value < H2_DEFAULT_MAX_FRAME)
			value = H2_DEFAULT_MAX_FRAME;
		if (value > H2_MAX_MAX_FRAME)
			value = H2_MAX_MAX_FRAME;
		cur->max_frame = value;
		cur->has_max_frame = true;
		struct h2_dir *peer = &o->dir[1 - d];
		if (value > peer->max_frame)
			peer->max_frame = value;
	}
}

static void settings_sent(struct h2obs *o, int d)
{
	struct h2_dir *s = &o->dir[d];
	if (s->pending_n == H2OBS_PENDING_SETTINGS) {
		/* Too many unacknowledged: fold into the newest. */
		struct h2_settings *last =
			&s->pending[(s->pending_first + s->pending_n - 1) % H2OBS_PENDING_SETTINGS];
		if (s->cur_settings.has_table_size) {
			last->table_size = s->cur_settings.table_size;
			last->has_table_size = true;
		}
		if (s->cur_settings.has_max_frame) {
			last->max_frame = s->cur_settings.max_frame;
			last->has_max_frame = true;
		}
		return;
	}
	s->pending[(s->pending_first + s->pending_n) % H2OBS_PENDING_SETTINGS] = s->cur_settings;
	s->pending_n++;
}

/* d acknowledged the oldest SETTINGS of the other side: from here on d's
 * encoder and frame sizes follow them. */
static void settings_acked(struct h2obs *o, int d)
{
	struct h2_dir *s = &o->dir[d], *peer = &o->dir[1 - d];
	if (peer->pending_n == 0)
		return;
	struct h2_settings set = peer->pending[peer->pending_first];
	peer->pending_first = (peer->pending_first + 1) % H2OBS_PENDING_SETTINGS;
	peer->pending_n--;
	if (set.has_max_frame)
		s->max_frame = set.max_frame;
	if (set.has_table_size) {
		int r = nghttp2_hd_inflate_change_table_size(s->hd, set.table_size);
		if (r != 0)
			h2obs_fail(o, d, "HPACK table size %u: %s", (unsigned)set.table_size,
				   nghttp2_strerror(r));
	}
}

/* ---- framing ---- */

/* Section 4.1: a frame header was read. */
static void frame_begin(struct h2obs *o, int d, const uint8_t *h)
{
	struct h2_dir *s = &o->dir[d];
	s->len = be24(h);
	s->type = h[3];
	s->flags = h[4];
	s->sid = be32(h + 5) & 0x7fffffffu;
	s->fixed_need = s->fixed_have = 0;
	s->content_left = s->pad_left = 0;
	s->data_stream = NULL;
	o->stats.frames[d]++;

	/* Section 4.2: no frame over the receiver's SETTINGS_MAX_FRAME_SIZE. */
	if (s->len > s->max_frame) {
		h2obs_fail(o, d, "frame type %u of %u bytes over max frame size %u", s->type,
			   (unsigned)s->len, (unsigned)s->max_frame);
		return;
	}
	/* Section 3.4: each side's preface starts with SETTINGS. */
	if (!s->seen_frame && (s->type != H2_SETTINGS || (s->flags & H2_FLAG_ACK))) {
		h2obs_fail(o, d, "first frame is type %u, not SETTINGS", s->type);
		return;
	}
	s->seen_frame = true;
	/* Section 6.10: nothing may come between a block's frames. */
	if (s->in_block && (s->type != H2_CONTINUATION || s->sid != s->block_sid)) {
		h2obs_fail(o, d, "frame type %u inside the header block of stream %u", s->type,
			   (unsigned)s->block_sid);
		return;
	}

	bool padded = s->flags & H2_FLAG_PADDED;
	switch (s->type) {
	case H2_DATA: /* 6.1 */
		if (s->sid == 0)
			goto stream0;
		s->fixed_need = padded;
		break;
	case H2_HEADERS: /* 6.2 */
		if (s->sid == 0)
			goto stream0;
		s->fixed_need = padded + (s->flags & H2_FLAG_PRIORITY ? H2_PRIORITY_LEN : 0);
		break;
	case H2_PUSH_PROMISE: /* 6.6 */
		if (s->sid == 0)
			goto stream0;
		if (d == DIR_CLIENT) {
			h2obs_fail(o, d, "PUSH_PROMISE from the client");
			return;
		}
		s->fixed_need = padded + 4;
		break;
	case H2_CONTINUATION: /* 6.10 */
		if (!s->in_block) {
			h2obs_fail(o, d, "CONTINUATION on stream %u outside a header block",
				   (unsigned)s->sid);
			return;
		}
		break;
	case H2_RST_STREAM: /* 6.4 */
		if (s->sid == 0)
			goto stream0;
		if (s->len != H2_RST_STREAM_LEN) {
			h2obs_fail(o, d, "RST_STREAM of %u bytes", (unsigned)s->len);
			return;
		}
		s->fixed_need = H2_RST_STREAM_LEN;
		break;
	case H2_SETTINGS: /* 6.5 */
		if (s->sid != 0 ||
		    (s->flags & H2_FLAG_ACK ? s->len != 0 : s->len % H2_SETTING_LEN)) {
			h2obs_fail(o, d, "SETTINGS of %u bytes on stream %u", (unsigned)s->len,
				   (unsigned)s->sid);
			return;
		}
		memset(&s->cur_settings, 0, sizeof(s->cur_settings));
		s->settings_left = s->len;
		s->fixed_need = s->len ? H2_SETTING_LEN : 0;
		break;
	case H2_GOAWAY: /* 6.8 */
		if (s->sid != 0 || s->len < H2_GOAWAY_MIN_LEN) {
			h2obs_fail(o, d, "GOAWAY of %u bytes on stream %u", (unsigned)s->len,
				   (unsigned)s->sid);
			return;
		}
		s->fixed_need = H2_GOAWAY_MIN_LEN;
		break;
	default:
		/* PRIORITY, PING, WINDOW_UPDATE and unknown types (section 5.5)
		 * do not change what is recorded: skipped. */
		break;
	}
	if (s->fixed_need > s->len) {
		h2obs_fail(o, d, "frame type %u of %u bytes too short", s->type, (unsigned)s->len);
		return;
	}
	s->phase = PH_FIXED;
	return;
stream0:
	h2obs_fail(o, d, "frame type %u on stream 0", s->type);
}

/* The fixed fields were read: lay out content and padding, act on them. */
static void fixed_done(struct h2obs *o, int d)
{
	struct h2_dir *s = &o->dir[d];
	const uint8_t *f = s->fixed;

	if (s->type == H2_SETTINGS) {
		if (s->fixed_need) {
			setting(o, d, (uint16_t)(f[0] << 8 | f[1]), be32(f + 2));
			s->settings_left -= H2_SETTING_LEN;
		}
		if (s->settings_left) {
			s->fixed_have = 0; /* the next entry */
			return;
		}
		s->phase = PH_CONTENT;
		return;
	}

	uint32_t rest = s->len - s->fixed_need;
	if (s->flags & H2_FLAG_PADDED &&
	    (s->type == H2_DATA || s->type == H2_HEADERS || s->type == H2_PUSH_PROMISE)) {
		/* Sections 6.1, 6.2, 6.6: padding longer than what is left is a
		 * connection error. */
		s->pad_left = f[0];
		f++;
		if (s->pad_left > rest) {
			h2obs_fail(o, d, "padding of %u bytes in a %u-byte frame",
				   (unsigned)s->pad_left, (unsigned)s->len);
			return;
		}
	}
	s->content_left = rest - s->pad_left;
	s->phase = PH_CONTENT;

	switch (s->type) {
	case H2_DATA: {
		struct h2obs_stream *st = map_get(&o->map, s->sid);
		if (!st)
			break;
		if (d == DIR_CLIENT && st->opener == DIR_CLIENT && st->req_head_done &&
		    !st->x.req.complete)
			s->data_stream = st;
		else if (d == DIR_SERVER && st->resp_head_done && !st->x.resp.complete)
			s->data_stream = st;
		break;
	}
	case H2_HEADERS:
		block_begin(o, d, s->sid, 0);
		break;
	case H2_PUSH_PROMISE:
		block_begin(o, d, s->sid, be32(f) & 0x7fffffffu);
		break;
	case H2_RST_STREAM:
		rst_stream(o, d, be32(f));
		break;
	case H2_GOAWAY:
		goaway(o, d, be32(f) & 0x7fffffffu, be32(f + 4));
		break;
	default:
		break;
	}
}

static bool frame_has_block(const struct h2_dir *s)
{
	return s->type == H2_HEADERS || s->type == H2_PUSH_PROMISE || s->type == H2_CONTINUATION;
}

static void content(struct h2obs *o, int d, const uint8_t *p, size_t n)
{
	struct h2_dir *s = &o->dir[d];
	s->content_left -= (uint32_t)n;
	if (s->type == H2_DATA) {
		struct h2obs_stream *st = s->data_stream;
		if (st)
			http_body_append(d == DIR_CLIENT ? &st->x.req.body : &st->x.resp.body, p,
					 n);
	} else if (frame_has_block(s)) {
		block_feed(o, d, p, n, s->content_left == 0 && (s->flags & H2_FLAG_END_HEADERS));
	}
}

static void content_done(struct h2obs *o, int d)
{
	struct h2_dir *s = &o->dir[d];
	/* An empty last fragment still ends the block for the inflater. */
	if (frame_has_block(s) && (s->flags & H2_FLAG_END_HEADERS) && !s->block_final)
		block_feed(o, d, NULL, 0, true);
	s->phase = PH_PAD;
}

/* The whole payload was read. */
static void frame_end(struct h2obs *o, int d)
{
	struct h2_dir *s = &o->dir[d];
	s->phase = PH_HEAD;
	s->head_have = 0;
	switch (s->type) {
	case H2_DATA:
		if (s->data_stream && (s->flags & H2_FLAG_END_STREAM)) {
			struct h2obs_stream *st = s->data_stream;
			s->data_stream = NULL;
			if (d == DIR_CLIENT)
				stream_request_ended(o, st);
			else
				stream_response_ended(o, st);
		}
		break;
	case H2_HEADERS:
	case H2_PUSH_PROMISE:
	case H2_CONTINUATION:
		if (s->flags & H2_FLAG_END_HEADERS)
			block_end(o, d);
		break;
	case H2_SETTINGS:
		if (s->flags & H2_FLAG_ACK)
			settings_acked(o, d);
		else
			settings_sent(o, d);
		break;
	default:
		break;
	}
	s->data_stream = NULL;
}

static void dir_feed(struct h2obs *o, int d, const uint8_t *p, size_t n)
{
	struct h2_dir *s = &o->dir[d];
	for (;;) {
		if (o->stopped)
			return;
		/* Steps that need no more bytes. */
		if (s->phase == PH_FIXED && s->fixed_have == s->fixed_need) {
			fixed_done(o, d);
			continue;
		}
		if (s->phase == PH_CONTENT && s->content_left == 0) {
			content_done(o, d);
			continue;
		}
		if (s->phase == PH_PAD && s->pad_left == 0) {
			frame_end(o, d);
			continue;
		}
		if (n == 0)
			return;

		size_t k;
		switch (s->phase) {
		case PH_PREFACE:
			k = sizeof(h2_preface) - s->preface_have;
			if (k > n)
				k = n;
			if (memcmp(p, h2_preface + s->preface_have, k) != 0) {
				h2obs_fail(o, d, "not the HTTP/2 connection preface");
				return;
			}
			s->preface_have += (uint32_t)k;
			if (s->preface_have == sizeof(h2_preface))
				s->phase = PH_HEAD;
			break;
		case PH_HEAD:
			if (s->head_have == 0 && n >= H2_FRAME_HEADER_LEN) {
				k = H2_FRAME_HEADER_LEN;
				frame_begin(o, d, p);
				break;
			}
			k = H2_FRAME_HEADER_LEN - s->head_have;
			if (k > n)
				k = n;
			memcpy(s->head + s->head_have, p, k);
			s->head_have = (uint8_t)(s->head_have + k);
			if (s->head_have == H2_FRAME_HEADER_LEN)
				frame_begin(o, d, s->head);
			break;
		case PH_FIXED:
			k = (size_t)(s->fixed_need - s->fixed_have);
			if (k > n)
				k = n;
			memcpy(s->fixed + s->fixed_have, p, k);
			s->fixed_have = (uint8_t)(s->fixed_have + k);
			break;
		case PH_CONTENT:
			k = s->content_left < n ? s->content_left : n;
			content(o, d, p, k);
			break;
		case PH_PAD:
		default:
			k = s->pad_left < n ? s->pad_left : n;
			s->pad_left -= (uint32_t)k;
			break;
		}
		p += k;
		n -= k;
	}
}

/* ---- public ---- */

struct h2obs *h2obs_new(const struct h2obs_config *cfg)
{
	struct h2obs *o = calloc(1, sizeof(*o));
	if (!o)
		goto fail;
	o->sink = cfg->sink;
	o->body_cap = cfg->body_cap;
	o->max_streams = cfg->max_streams ? cfg->max_streams : H2OBS_DEFAULT_MAX_STREAMS;
	const char *scheme = cfg->scheme ? cfg->scheme : "https";
	if (http_strdup_n(&o->scheme, scheme, strlen(scheme)) < 0)
		goto fail_obs;
	if (cfg->default_authority && http_strdup_n(&o->default_authority, cfg->default_authority,
						    strlen(cfg->default_authority)) < 0)
		goto fail_obs;
	if (map_init(&o->map, H2_MAP_MIN_BITS) < 0)
		goto fail_obs;
	for (int d = 0; d < 2; d++) {
		struct h2_dir *s = &o->dir[d];
		s->phase = d == DIR_CLIENT ? PH_PREFACE : PH_HEAD;
		s->max_frame = H2_DEFAULT_MAX_FRAME;
		s->refused_above = UINT32_MAX;
		if (nghttp2_hd_inflate_new(&s->hd) != 0)
			goto fail_obs;
	}
	return o;
fail_obs:
	h2obs_free(o);
fail:
	errno = ENOMEM;
	return NULL;
}

void h2obs_free(struct h2obs *o)
{
	if (!o)
		return;
	if (o->map.slot) {
		for (size_t i = 0; i < o->map.cap; i++)
			if (o->map.slot[i])
				stream_free(o->map.slot[i]);
		free(o->map.slot);
	}
	for (int d = 0; d < 2; d++)
		if (o->dir[d].hd)
			nghttp2_hd_inflate_del(o->dir[d].hd);
	free(o->scheme);
	free(o->default_authority);
	free(o);
}

void h2obs_client(struct h2obs *o, const uint8_t *p, size_t n)
{
	dir_feed(o, DIR_CLIENT, p, n);
}

void h2obs_server(struct h2obs *o, const uint8_t *p, size_t n)
{
	dir_feed(o, DIR_SERVER, p, n);
}

void h2obs_finish(struct h2obs *o, const char *reason)
{
	if (o->stopped)
		return;
	o->stopped = true;
	streams_close_all(o, reason ? reason : "connection_closed", "");
}

bool h2obs_failed(const struct h2obs *o)
{
	return o->failed;
}

struct h2obs_stats h2obs_stats(const struct h2obs *o)
{
	return o->stats;
}
