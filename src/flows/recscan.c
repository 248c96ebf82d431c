/* One pass over a record's bytes: a validating JSON scanner that keeps
 * spans, not values, and copies out only what the store needs. */
#include "flows/recscan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#define MAX_DEPTH 2048      /* jansson's JSON_PARSER_MAX_DEPTH */
#define KEEP_CAP (4u << 20) /* working memory above this is freed after a line */

enum jt { JT_OBJ, JT_ARR, JT_STR, JT_INT, JT_REAL, JT_TRUE, JT_FALSE, JT_NULL };

struct tok {
	enum jt t;
	const unsigned char *s, *e; /* a string: between its quotes */
	bool esc;                   /* a string has escapes */
	bool nul;                   /* a string has \u0000 */
	int64_t i;                  /* JT_INT */
};

struct scan {
	const unsigned char *p, *end;
	int depth;
	struct rec_scan *rs;
};

static void ws(struct scan *sc)
{
	while (sc->p < sc->end &&
	       (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
		sc->p++;
}

static bool eat(struct scan *sc, unsigned char c)
{
	ws(sc);
	if (sc->p < sc->end && *sc->p == c) {
		sc->p++;
		return true;
	}
	return false;
}

static int hex4(const unsigned char *p, const unsigned char *end)
{
	if (end - p < 4)
		return -1;
	int v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = p[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		v = v << 4 | d;
	}
	return v;
}

/* The length of the UTF-8 sequence at p (1 for ASCII), 0 when invalid:
 * overlong, a surrogate, past U+10FFFF, or cut short. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	uint32_t v;
	if (c < 0x80)
		return 1;
	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		n = 2;
		v = c & 0x1f;
	} else if (c < 0xf0) {
		n = 3;
		v = c & 0x0f;
	} else if (c < 0xf5) {
		n = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
		v = v << 6 | (p[i] & 0x3f);
	}
	if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) || (n == 3 && v < 0x800) ||
	    (n == 4 && v < 0x10000))
		return 0;
	return n;
}

/* A string from its opening quote (at sc->p). */
static int scan_string(struct scan *sc, struct tok *t)
{
	const unsigned char *p = sc->p + 1, *end = sc->end;
	t->t = JT_STR;
	t->s = p;
	t->esc = t->nul = false;
	for (;;) {
		if (p >= end)
			return -1;
		unsigned char c = *p;
		if (c == '"')
			break;
		if (c < 0x20)
			return -1;
		if (c >= 0x80) {
			size_t n = utf8_len(p, end);
			if (!n)
				return -1;
			p += n;
			continue;
		}
		if (c != '\\') {
			p++;
			continue;
		}
		t->esc = true;
		if (++p >= end)
			return -1;
		switch (*p) {
		case '"':
		case '\\':
		case '/':
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			p++;
			continue;
		case 'u':
			break;
		default:
			return -1;
		}
		int v = hex4(p + 1, end);
		if (v < 0)
			return -1;
		p += 5;
		if (v >= 0xd800 && v <= 0xdbff) {
			if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
				return -1;
			int lo = hex4(p + 2, end);
			if (lo < 0xdc00 || lo > 0xdfff)
				return -1;
			p += 6;
		} else if (v >= 0xdc00 && v <= 0xdfff) {
			return -1;
		} else if (v == 0) {
			t->nul = true;
		}
	}
	t->e = p;
	sc->p = p + 1;
	return 0;
}

static bool digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

/* jansson's number grammar and ranges: an integer must fit int64_t, a
 * real must not overflow a double. */
static int scan_number(struct scan *sc, struct tok *t)
{
	const unsigned char *p = sc->p, *end = sc->end, *s = p;
	if (*p == '-')
		p++;
	if (!digit(p, end))
		return -1;
	if (*p == '0') {
		p++;
		if (digit(p, end))
			return -1;
	} else {
		while (digit(p, end))
			p++;
	}
	bool real = false;
	if (p < end && *p == '.') {
		if (!digit(p + 1, end))
			return -1;
		p++;
		while (digit(p, end))
			p++;
		real = true;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!digit(p, end))
			return -1;
		while (digit(p, end))
			p++;
		real = true;
	}
	size_t n = (size_t)(p - s);
	t->s = s;
	t->e = p;
	sc->p = p;
	if (!real) {
		/* Integers: digits alone, so the value is exact without strtoll. */
		bool neg = *s == '-';
		uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
		for (const unsigned char *q = s + neg; q < p; q++) {
			unsigned d = (unsigned)(*q - '0');
			if (v > (lim - d) / 10)
				return -1;
			v = v * 10 + d;
		}
		t->t = JT_INT;
		t->i = neg ? (int64_t)(0 - v) : (int64_t)v;
		return 0;
	}
	t->t = JT_REAL;
	/* strtod needs the text NUL-terminated; the line is not. */
	char small[64], *buf = n < sizeof(small) ? small : malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, s, n);
	buf[n] = '\0';
	double d = strtod(buf, NULL);
	if (buf != small)
		free(buf);
	return isinf(d) ? -1 : 0;
}

/* One value: a scalar whole, or a container's opening bracket (the
 * caller then reads or skips its members). */
static int value(struct scan *sc, struct tok *t)
{
	ws(sc);
	if (sc->p >= sc->end)
		return -1;
	switch (*sc->p) {
	case '{':
	case '[':
		if (++sc->depth > MAX_DEPTH)
			return -1;
		t->t = *sc->p == '{' ? JT_OBJ : JT_ARR;
		t->s = sc->p++;
		return 0;
	case '"':
		return scan_string(sc, t);
	case 't':
	case 'f':
	case 'n': {
		static const char *const lit[] = { "true", "false", "null" };
		static const enum jt type[] = { JT_TRUE, JT_FALSE, JT_NULL };
		int k = *sc->p == 't' ? 0 : *sc->p == 'f' ? 1 : 2;
		size_t n = strlen(lit[k]);
		if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, lit[k], n) != 0)
			return -1;
		t->t = type[k];
		t->s = sc->p;
		sc->p += n;
		t->e = sc->p;
		return 0;
	}
	default:
		if (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9'))
			return scan_number(sc, t);
		return -1;
	}
}

/* In an object after '{' or a member: 1 and the next member's key (the
 * scanner then at its value), 0 at the closing brace (consumed), -1.
 * *sep: the comma before the key, NULL for the first member. */
static int member(struct scan *sc, bool *first, struct tok *key, const unsigned char **sep)
{
	*sep = NULL;
	if (eat(sc, '}')) {
		sc->depth--;
		return 0;
	}
	if (!*first) {
		ws(sc);
		*sep = sc->p;
		if (!eat(sc, ','))
			return -1;
	}
	*first = false;
	ws(sc);
	if (sc->p >= sc->end || *sc->p != '"' || scan_string(sc, key) < 0 || key->nul)
		return -1;
	return eat(sc, ':') ? 1 : -1;
}

/* In an array: 1 when an element follows, 0 at ']' (consumed), -1. */
static int element(struct scan *sc, bool *first)
{
	if (eat(sc, ']')) {
		sc->depth--;
		return 0;
	}
	if (!*first && !eat(sc, ','))
		return -1;
	*first = false;
	return 1;
}

static int skip_rest(struct scan *sc, enum jt t);

static int skip_after(struct scan *sc, const struct tok *t)
{
	return t->t == JT_OBJ || t->t == JT_ARR ? skip_rest(sc, t->t) : 0;
}

static int skip_value(struct scan *sc)
{
	struct tok t;
	return value(sc, &t) < 0 ? -1 : skip_after(sc, &t);
}

/* The rest of a container whose opening bracket was read. */
static int skip_rest(struct scan *sc, enum jt t)
{
	bool first = true;
	int r;
	if (t == JT_OBJ) {
		struct tok key;
		const unsigned char *sep;
		while ((r = member(sc, &first, &key, &sep)) == 1)
			if (skip_value(sc) < 0)
				return -1;
	} else {
		while ((r = element(sc, &first)) == 1)
			if (skip_value(sc) < 0)
				return -1;
	}
	return r;
}

/* ---- copying out --------------------------------------------------------- */

/* Sized by rec_scan so that it never runs out (see there). */
static char *take(struct rec_scan *rs, size_t n)
{
	if (n > rs->arena_cap - rs->arena_used)
		return NULL;
	char *p = rs->arena + rs->arena_used;
	rs->arena_used += n;
	return p;
}

static void put_utf8(char **o, uint32_t v)
{
	unsigned char *p = (unsigned char *)*o;
	if (v < 0x80) {
		*p++ = (unsigned char)v;
	} else if (v < 0x800) {
		*p++ = (unsigned char)(0xc0 | v >> 6);
		*p++ = (unsigned char)(0x80 | (v & 0x3f));
	} else if (v < 0x10000) {
		*p++ = (unsigned char)(0xe0 | v >> 12);
		*p++ = (unsigned char)(0x80 | (v >> 6 & 0x3f));
		*p++ = (unsigned char)(0x80 | (v & 0x3f));
	} else {
		*p++ = (unsigned char)(0xf0 | v >> 18);
		*p++ = (unsigned char)(0x80 | (v >> 12 & 0x3f));
		*p++ = (unsigned char)(0x80 | (v >> 6 & 0x3f));
		*p++ = (unsigned char)(0x80 | (v & 0x3f));
	}
	*o = (char *)p;
}

/* A validated string's bytes, unescaped, to `o` (room: its span); returns
 * the end. */
static char *unescape(char *o, const struct tok *t)
{
	if (!t->esc) {
		size_t n = (size_t)(t->e - t->s);
		memcpy(o, t->s, n);
		return o + n;
	}
	for (const unsigned char *p = t->s; p < t->e;) {
		const unsigned char *bs = memchr(p, '\\', (size_t)(t->e - p));
		size_t n = (size_t)((bs ? bs : t->e) - p);
		memcpy(o, p, n);
		o += n;
		if (!bs)
			break;
		p = bs + 1;
		switch (*p++) {
		case 'b':
			*o++ = '\b';
			break;
		case 'f':
			*o++ = '\f';
			break;
		case 'n':
			*o++ = '\n';
			break;
		case 'r':
			*o++ = '\r';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'u': {
			uint32_t v = (uint32_t)hex4(p, t->e);
			p += 4;
			if (v >= 0xd800 && v <= 0xdbff) {
				uint32_t lo = (uint32_t)hex4(p + 2, t->e);
				p += 6;
				v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
			}
			put_utf8(&o, v);
			break;
		}
		default: /* '"', '\\', '/' */
			*o++ = (char)p[-1];
			break;
		}
	}
	return o;
}

/* A NUL-terminated copy; NULL when not a string. */
static const char *copy_str(struct rec_scan *rs, const struct tok *t)
{
	if (t->t != JT_STR)
		return NULL;
	char *o = take(rs, (size_t)(t->e - t->s) + 1);
	if (!o)
		return NULL;
	*unescape(o, t) = '\0';
	return o;
}

/* ---- the record's parts -------------------------------------------------- */

/* What a reading of "request" or "response" found. */
struct part_scan {
	bool headers;     /* "headers" is an array */
	const char *text; /* in the arena */
	size_t text_len;
	bool ctype_found, enc_found;  /* flow_header's first name match */
	const char *ctype, *encoding; /* NUL-terminated copies; NULL: none */
	int64_t status;
	/* "body" is an object; its last "text" and "base64" members */
	bool body;
	struct member_span {
		bool is; /* the value is a string */
		struct tok v;
		const unsigned char *start, *end; /* the bytes to cut */
	} text_m, b64_m;
};

static bool is_name(const char *s, size_t n, const char *name)
{
	size_t len = strlen(name);
	return strnlen(s, n) == len && strncasecmp(s, name, len) == 0;
}

/* "headers": [[name, value], ...]. The text is built in place: each pair
 * is unescaped where the text ends and kept when both are strings. */
static int scan_headers(struct scan *sc, struct part_scan *ps)
{
	struct rec_scan *rs = sc->rs;
	char *text = rs->arena + rs->arena_used, *o = text;
	/* The value of a first match, as an offset into the text. */
	ptrdiff_t at[2] = { -1, -1 };
	size_t len[2] = { 0, 0 };
	bool found[2] = { false, false }, firste = true;
	int r;
	while ((r = element(sc, &firste)) == 1) {
		struct tok h;
		if (value(sc, &h) < 0)
			return -1;
		if (h.t != JT_ARR) {
			if (skip_after(sc, &h) < 0)
				return -1;
			continue;
		}
		bool first = true;
		struct tok name = { .t = JT_NULL }, val = { .t = JT_NULL };
		int k = 0, rr;
		while ((rr = element(sc, &first)) == 1) {
			struct tok t;
			if (value(sc, &t) < 0)
				return -1;
			if (k == 0)
				name = t;
			else if (k == 1)
				val = t;
			k++;
			if (skip_after(sc, &t) < 0)
				return -1;
		}
		if (rr < 0)
			return -1;
		if (name.t != JT_STR)
			continue;
		size_t room = (size_t)(name.e - name.s) + 4;
		if (val.t == JT_STR)
			room += (size_t)(val.e - val.s);
		if ((size_t)(o - rs->arena) + room > rs->arena_cap)
			return -ENOMEM;
		char *n0 = o, *n1 = unescape(o, &name);
		int which = -1;
		if (!found[0] && is_name(n0, (size_t)(n1 - n0), "content-type"))
			which = 0;
		else if (!found[1] && is_name(n0, (size_t)(n1 - n0), "content-encoding"))
			which = 1;
		if (which >= 0)
			found[which] = true;
		if (val.t != JT_STR)
			continue; /* not a pair of strings: no text, and a match is NULL */
		memcpy(n1, ": ", 2);
		char *v0 = n1 + 2, *v1 = unescape(v0, &val);
		if (which >= 0) {
			at[which] = v0 - text;
			len[which] = (size_t)(v1 - v0);
		}
		*v1 = '\n';
		o = v1 + 1;
	}
	if (r < 0)
		return -1;
	*o = '\0';
	ps->headers = true;
	ps->text = text;
	ps->text_len = (size_t)(o - text);
	rs->arena_used += ps->text_len + 1;
	const char **dst[2] = { &ps->ctype, &ps->encoding };
	ps->ctype_found = found[0];
	ps->enc_found = found[1];
	for (int i = 0; i < 2; i++) {
		*dst[i] = NULL;
		if (at[i] < 0)
			continue;
		char *c = take(rs, len[i] + 1);
		if (!c)
			return -ENOMEM;
		memcpy(c, text + at[i], len[i]);
		c[len[i]] = '\0';
		*dst[i] = c;
	}
	return 0;
}

/* The bytes that removing a member takes: with the comma before it, or,
 * for the first member, the comma after it (when there is one). */
static void cut_span(struct scan *sc, struct member_span *m, const unsigned char *key,
		     const unsigned char *sep)
{
	m->start = sep ? sep : key;
	m->end = sc->p;
	if (!sep) {
		const unsigned char *q = sc->p;
		while (q < sc->end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
			q++;
		if (q < sc->end && *q == ',')
			m->end = q + 1;
	}
}

static bool key_is(const struct tok *k, const char *name);

static int scan_body(struct scan *sc, struct part_scan *ps)
{
	ps->body = true;
	memset(&ps->text_m, 0, sizeof(ps->text_m));
	memset(&ps->b64_m, 0, sizeof(ps->b64_m));
	bool first = true;
	struct tok key;
	const unsigned char *sep;
	int r;
	while ((r = member(sc, &first, &key, &sep)) == 1) {
		struct member_span *m = key_is(&key, "text")     ? &ps->text_m
					: key_is(&key, "base64") ? &ps->b64_m
								 : NULL;
		struct tok v;
		if (value(sc, &v) < 0 || skip_after(sc, &v) < 0)
			return -1;
		if (!m)
			continue;
		m->is = v.t == JT_STR;
		m->v = v;
		cut_span(sc, m, key.s - 1, sep);
	}
	return r;
}

static int scan_part(struct scan *sc, struct part_scan *ps)
{
	memset(ps, 0, sizeof(*ps));
	bool first = true;
	struct tok key;
	const unsigned char *sep;
	int r;
	while ((r = member(sc, &first, &key, &sep)) == 1) {
		struct tok v;
		if (value(sc, &v) < 0)
			return -1;
		if (key_is(&key, "headers")) {
			ps->headers = false;
			ps->text = NULL;
			ps->ctype = ps->encoding = NULL;
			ps->ctype_found = ps->enc_found = false;
			if (v.t == JT_ARR) {
				int rc = scan_headers(sc, ps);
				if (rc < 0)
					return rc;
				continue;
			}
		} else if (key_is(&key, "body")) {
			ps->body = false;
			if (v.t == JT_OBJ) {
				if (scan_body(sc, ps) < 0)
					return -1;
				continue;
			}
		} else if (key_is(&key, "status")) {
			ps->status = v.t == JT_INT ? v.i : 0;
		}
		if (skip_after(sc, &v) < 0)
			return -1;
	}
	return r;
}

/* ---- the record ---------------------------------------------------------- */

/* A key compared as unescaped; an escaped one is unescaped into a small
 * buffer first (the keys asked for are short). */
static bool key_is(const struct tok *k, const char *name)
{
	size_t n = strlen(name), kn = (size_t)(k->e - k->s);
	if (!k->esc)
		return kn == n && memcmp(k->s, name, n) == 0;
	if (kn > 6 * n) /* every character escaped at most as \uXXXX */
		return false;
	char buf[128];
	if (kn > sizeof(buf))
		return false;
	char *e = unescape(buf, k);
	return (size_t)(e - buf) == n && memcmp(buf, name, n) == 0;
}

enum slot {
	K_TYPE,
	K_ID,
	K_PEER,
	K_CLIENT,
	K_SERVER,
	K_CONN,
	K_START,
	K_END,
	K_END_REASON,
	K_ERROR,
	K_TLS_ERROR,
	K_URL,
	K_METHOD,
	K_HTTP_VERSION,
	K_PROTO,
	K_SNI,
	K_NAME,
	K_TRANSPORT,
	K_VIA,
	K_USER,
	K_REPLAY_OF,
	K_STRINGS, /* the string slots end here */
	K_BYTES_UP = K_STRINGS,
	K_BYTES_DOWN,
	K_WEBSOCKET,
	K_PASSTHROUGH,
	K_REQUEST,
	K_RESPONSE,
	K_N
};

static const char *const slot_key[K_N] = {
	[K_TYPE] = "type",
	[K_ID] = "id",
	[K_PEER] = "peer",
	[K_CLIENT] = "client",
	[K_SERVER] = "server",
	[K_CONN] = "conn",
	[K_START] = "start",
	[K_END] = "end",
	[K_END_REASON] = "end_reason",
	[K_ERROR] = "error",
	[K_TLS_ERROR] = "tls_error",
	[K_URL] = "url",
	[K_METHOD] = "method",
	[K_HTTP_VERSION] = "http_version",
	[K_PROTO] = "proto",
	[K_SNI] = "sni",
	[K_NAME] = "name",
	[K_TRANSPORT] = "transport",
	[K_VIA] = "via",
	[K_USER] = "user",
	[K_REPLAY_OF] = "replay_of",
	[K_BYTES_UP] = "bytes_up",
	[K_BYTES_DOWN] = "bytes_down",
	[K_WEBSOCKET] = "websocket",
	[K_PASSTHROUGH] = "passthrough",
	[K_REQUEST] = "request",
	[K_RESPONSE] = "response",
};

static int slot_of(const struct tok *key)
{
	for (int i = 0; i < K_N; i++)
		if (key_is(key, slot_key[i]))
			return i;
	return -1;
}

/* A body's content as the store keeps it: text as is, else base64
 * decoded; the member to cut from the record. */
static int take_body(struct rec_scan *rs, const struct part_scan *ps, struct rec_body *b,
		     const unsigned char **cut_start, const unsigned char **cut_end)
{
	memset(b, 0, sizeof(*b));
	*cut_start = *cut_end = NULL;
	if (!ps->body)
		return 0;
	const struct member_span *m;
	if (ps->text_m.is) {
		m = &ps->text_m;
		size_t n = (size_t)(m->v.e - m->v.s);
		char *o = take(rs, n + 1);
		if (!o)
			return -ENOMEM;
		b->len = (size_t)(unescape(o, &m->v) - o);
		b->data = b->len ? (const uint8_t *)o : NULL;
	} else if (ps->b64_m.is) {
		m = &ps->b64_m;
		size_t n = (size_t)(m->v.e - m->v.s);
		char *in = take(rs, n + 1);
		if (!in)
			return -ENOMEM;
		size_t in_len = (size_t)(unescape(in, &m->v) - in);
		in[in_len] = '\0';
		/* flow_body_bytes reads the string as a C string. */
		in_len = strlen(in);
		size_t cap = in_len / 4 * 3 + 3;
		uint8_t *o = (uint8_t *)take(rs, cap);
		if (!o)
			return -ENOMEM;
		size_t len;
		if (sodium_base642bin(o, cap, in, in_len, "\r\n", &len, NULL,
				      sodium_base64_VARIANT_ORIGINAL) != 0)
			return 0; /* not base64: stays in the record */
		b->len = len;
		b->data = len ? o : NULL;
	} else {
		return 0;
	}
	b->present = true;
	b->encoding = ps->encoding;
	*cut_start = m->start;
	*cut_end = m->end;
	return 0;
}

static int make_record(struct rec_scan *rs, const char *line, size_t n, const unsigned char *cs[2],
		       const unsigned char *ce[2])
{
	rs->record = line;
	rs->record_len = n;
	if (!cs[0] && !cs[1])
		return 0;
	if (rs->cut_cap < n) {
		char *c = realloc(rs->cut, n);
		if (!c)
			return -ENOMEM;
		rs->cut = c;
		rs->cut_cap = n;
	}
	int a = 0, b = 1;
	if (!cs[0] || (cs[1] && cs[1] < cs[0])) {
		a = 1;
		b = 0;
	}
	const char *p = line;
	char *o = rs->cut;
	const int order[2] = { a, b };
	for (int i = 0; i < 2; i++) {
		int k = order[i];
		if (!cs[k])
			continue;
		size_t len = (size_t)((const char *)cs[k] - p);
		memcpy(o, p, len);
		o += len;
		p = (const char *)ce[k];
	}
	size_t rest = (size_t)(line + n - p);
	memcpy(o, p, rest);
	o += rest;
	rs->record = rs->cut;
	rs->record_len = (size_t)(o - rs->cut);
	return 0;
}

static int prepare(struct rec_scan *rs, size_t n)
{
	/* Every byte of the line is copied out at most twice: once as a value
	 * (a string, a header's text, a body), once more as a header value's
	 * copy or a base64 body decoded. */
	size_t need = 2 * n + 64;
	if (need < n)
		return -ENOMEM;
	if (rs->arena_cap < need || (rs->arena_cap > KEEP_CAP && need <= KEEP_CAP)) {
		free(rs->arena);
		size_t cap = need > KEEP_CAP ? need : need < 65536 ? 65536 : need;
		rs->arena = malloc(cap);
		rs->arena_cap = rs->arena ? cap : 0;
		if (!rs->arena)
			return -ENOMEM;
	}
	if (rs->cut_cap > KEEP_CAP && n <= KEEP_CAP) {
		free(rs->cut);
		rs->cut = NULL;
		rs->cut_cap = 0;
	}
	rs->arena_used = 0;
	return 0;
}

int rec_scan(struct rec_scan *rs, const char *line, size_t n)
{
	int rc = prepare(rs, n);
	memset(&rs->f, 0, sizeof(rs->f));
	memset(rs->headers, 0, sizeof(rs->headers));
	memset(rs->headers_len, 0, sizeof(rs->headers_len));
	memset(rs->body, 0, sizeof(rs->body));
	rs->record = NULL;
	rs->record_len = 0;
	if (rc)
		return rc;
	struct scan sc = { (const unsigned char *)line, (const unsigned char *)line + n, 0, rs };
	struct tok top;
	if (value(&sc, &top) < 0 || (top.t != JT_OBJ && top.t != JT_ARR))
		return -1;
	if (top.t == JT_ARR)
		return -1; /* JSON, but not a record */

	const char *strs[K_STRINGS] = { 0 };
	int64_t bytes[2] = { 0, 0 };
	bool websocket = false, passthrough = false, part_is[2] = { false, false };
	struct part_scan parts[2];
	memset(parts, 0, sizeof(parts));
	bool first = true;
	struct tok key;
	const unsigned char *sep;
	int r;
	while ((r = member(&sc, &first, &key, &sep)) == 1) {
		struct tok v;
		if (value(&sc, &v) < 0)
			return -1;
		int k = slot_of(&key);
		if (k >= 0 && k < K_STRINGS) {
			strs[k] = copy_str(rs, &v);
		} else if (k == K_BYTES_UP || k == K_BYTES_DOWN) {
			bytes[k - K_BYTES_UP] = v.t == JT_INT ? v.i : 0;
		} else if (k == K_WEBSOCKET) {
			websocket = v.t == JT_TRUE;
		} else if (k == K_PASSTHROUGH) {
			passthrough = v.t == JT_STR;
		} else if (k == K_REQUEST || k == K_RESPONSE) {
			int i = k - K_REQUEST;
			part_is[i] = v.t == JT_OBJ;
			memset(&parts[i], 0, sizeof(parts[i]));
			if (part_is[i]) {
				int pr = scan_part(&sc, &parts[i]);
				if (pr < 0)
					return pr;
				continue;
			}
		}
		if (skip_after(&sc, &v) < 0)
			return -1;
	}
	if (r < 0)
		return -1;
	ws(&sc);
	if (sc.p != sc.end)
		return -1;

	struct flow_raw raw = {
		.type = strs[K_TYPE],
		.id = strs[K_ID],
		.peer = strs[K_PEER],
		.client = strs[K_CLIENT],
		.server = strs[K_SERVER],
		.conn = strs[K_CONN],
		.start = strs[K_START],
		.end = strs[K_END],
		.end_reason = strs[K_END_REASON],
		.error = strs[K_ERROR],
		.tls_error = strs[K_TLS_ERROR],
		.url = strs[K_URL],
		.method = strs[K_METHOD],
		.http_version = strs[K_HTTP_VERSION],
		.proto = strs[K_PROTO],
		.sni = strs[K_SNI],
		.name = strs[K_NAME],
		.transport = strs[K_TRANSPORT],
		.via = strs[K_VIA],
		.user = strs[K_USER],
		.replay_of = strs[K_REPLAY_OF],
		.bytes_up = bytes[0],
		.bytes_down = bytes[1],
		.status = parts[1].status,
		.has_response = part_is[1],
		.websocket = websocket,
		.passthrough = passthrough,
		.req_ctype = parts[0].ctype,
		.resp_ctype = parts[1].ctype,
	};
	if (flow_fields_derive(&raw, &rs->f) < 0)
		return -1;
	const unsigned char *cs[2] = { NULL, NULL }, *ce[2] = { NULL, NULL };
	if (strcmp(rs->f.type, "http") == 0) {
		for (int i = 0; i < 2; i++) {
			if (!part_is[i])
				continue;
			if (parts[i].headers) {
				rs->headers[i] = parts[i].text;
				rs->headers_len[i] = parts[i].text_len;
			}
			if ((rc = take_body(rs, &parts[i], &rs->body[i], &cs[i], &ce[i])))
				return rc;
		}
	}
	return make_record(rs, line, n, cs, ce);
}

void rec_scan_free(struct rec_scan *rs)
{
	free(rs->arena);
	free(rs->cut);
	memset(rs, 0, sizeof(*rs));
}
