/* Recorded HTTP exchanges and their "http" JSON records (docs/flows.md).
 *
 * http_exchange_to_json writes the keys from "http_version" on; the caller
 * has already added the common keys and, after them, "conn" and "tls", so the
 * documented order holds. The common keys come from the exchange: start and
 * end from x->start / x->end, bytes_up / bytes_down from the body sizes,
 * end_reason "complete" or x->error, error from x->error_detail. */
#include "mitm/httpflow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "flows/flowlog.h"

#define HEADERS_INITIAL 16
#define BODY_INITIAL 1024

/* ---- headers ------------------------------------------------------------- */

int http_headers_add(struct http_headers *h, const char *name, size_t name_len, const char *value,
		     size_t value_len)
{
	size_t add = name_len + value_len;
	if (add > HTTPFLOW_MAX_HEADER_BYTES || h->bytes + add > HTTPFLOW_MAX_HEADER_BYTES) {
		h->truncated = true;
		return -E2BIG;
	}
	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : HEADERS_INITIAL;
		struct http_header *v = realloc(h->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	/* Name and value share one allocation; the value follows the name's NUL. */
	char *mem = malloc(name_len + value_len + 2);
	if (!mem)
		return -ENOMEM;
	if (name_len)
		memcpy(mem, name, name_len);
	mem[name_len] = '\0';
	char *val = mem + name_len + 1;
	if (value_len)
		memcpy(val, value, value_len);
	val[value_len] = '\0';
	h->v[h->n++] = (struct http_header){ mem, val, name_len, value_len };
	h->bytes += add;
	return 0;
}

static bool ascii_case_equal(const char *a, size_t a_len, const char *b)
{
	size_t i = 0;
	for (; i < a_len && b[i]; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + 32);
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + 32);
		if (x != y)
			return false;
	}
	return i == a_len && b[i] == '\0';
}

const struct http_header *http_headers_find(const struct http_headers *h, const char *name)
{
	for (size_t i = 0; i < h->n; i++)
		if (ascii_case_equal(h->v[i].name, h->v[i].name_len, name))
			return &h->v[i];
	return NULL;
}

void http_headers_free(struct http_headers *h)
{
	for (size_t i = 0; i < h->n; i++)
		free(h->v[i].name); /* value lives in the same block */
	free(h->v);
	memset(h, 0, sizeof(*h));
}

/* ---- bodies -------------------------------------------------------------- */

const struct timespec *http_clock_now(struct http_clock *c)
{
	if (!c->valid) {
		if (c->read)
			c->read(&c->now);
		else
			clock_gettime(CLOCK_REALTIME, &c->now);
		c->valid = true;
	}
	return &c->now;
}

void http_body_init(struct http_body *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap;
}

/* The allocation behind `len` kept bytes: the next power of two from
 * BODY_INITIAL, at most the cap. Derived, so the struct needs no field. */
static size_t body_alloc_for(size_t len, size_t cap)
{
	size_t a = BODY_INITIAL;
	while (a < len)
		a *= 2;
	return a < cap ? a : cap;
}

/* Bodies kept by every exchange in the process (one loop thread): the
 * allocations, against a budget, so that many connections or streams with
 * large bodies cannot grow memory without bound. Over the budget, bytes are
 * counted and not kept (the record says truncated). */
static size_t body_budget = HTTPFLOW_DEFAULT_BUDGET;
static size_t body_kept;
static uint64_t body_budget_cuts;

void http_body_set_budget(size_t bytes)
{
	body_budget = bytes;
}

void http_body_usage(size_t *kept, uint64_t *cuts)
{
	*kept = body_kept;
	*cuts = body_budget_cuts;
}

static size_t body_allocated(const struct http_body *b)
{
	return b->data ? body_alloc_for(b->len, b->cap) : 0;
}

void http_body_append(struct http_body *b, const uint8_t *p, size_t n)
{
	b->size += n;
	size_t room = b->cap - b->len;
	size_t take = n < room ? n : room;
	if (take < n)
		b->truncated = true;
	if (take == 0)
		return;
	size_t need = b->len + take;
	size_t have = body_allocated(b);
	if (!b->data || need > have) {
		size_t want = body_alloc_for(need, b->cap);
		if (body_kept + (want - have) > body_budget) {
			/* Fill what is already allocated, keep nothing more. */
			body_budget_cuts++;
			b->truncated = true;
			take = b->data ? have - b->len : 0;
			if (take == 0)
				return;
		} else {
			uint8_t *d = realloc(b->data, want);
			if (!d) {
				b->truncated = true;
				return;
			}
			b->data = d;
			body_kept += want - have;
		}
	}
	memcpy(b->data + b->len, p, take);
	b->len += take;
}

void http_body_free(struct http_body *b)
{
	body_kept -= body_allocated(b);
	free(b->data);
	size_t cap = b->cap;
	memset(b, 0, sizeof(*b));
	b->cap = cap;
}
/* ---- exchanges ----------------------------------------------------------- */

void http_exchange_init(struct http_exchange *x, size_t body_cap)
{
	memset(x, 0, sizeof(*x));
	http_body_init(&x->req.body, body_cap);
	http_body_init(&x->resp.body, body_cap);
}

static void message_free(struct http_message *m)
{
	http_headers_free(&m->headers);
	http_headers_free(&m->trailers);
	http_body_free(&m->body);
}

void http_exchange_free(struct http_exchange *x)
{
	free(x->version);
	free(x->method);
	free(x->scheme);
	free(x->authority);
	free(x->path);
	free(x->reason);
	message_free(&x->req);
	message_free(&x->resp);
	size_t cap = x->req.body.cap;
	http_exchange_init(x, cap);
}

int http_strdup_n(char **dst, const char *s, size_t n)
{
	char *c = malloc(n + 1);
	if (!c)
		return -ENOMEM;
	if (n)
		memcpy(c, s, n);
	c[n] = '\0';
	free(*dst);
	*dst = c;
	return 0;
}

/* ---- UTF-8 (RFC 3629 table 3.9: no overlongs, surrogates or > U+10FFFF) --- */

/* Length of the longest valid prefix of p. *cut is set when what follows it
 * is a valid start of a sequence that runs past the end. */
static size_t utf8_prefix(const uint8_t *p, size_t n, bool *cut)
{
	size_t i = 0;
	*cut = false;
	while (i < n) {
		/* ASCII runs eight bytes at a time. */
		while (i + 8 <= n) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			if (w & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i >= n)
			break;
		uint8_t c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint8_t lo = 0x80, hi = 0xbf; /* bounds of the second byte */
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else {
			return i;
		}
		for (size_t k = 1; k < len; k++) {
			if (i + k >= n) {
				*cut = true;
				return i;
			}
			uint8_t b = p[i + k];
			if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf))
				return i;
		}
		i += len;
	}
	return n;
}

json_t *http_body_json(const uint8_t *data, size_t len, uint64_t size, bool truncated)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	bool cut;
	size_t valid = len ? utf8_prefix(data, len, &cut) : 0;
	int rc = 0;
	/* NUL is valid UTF-8 but marks binary data (and JSON readers refuse
	 * "\u0000" unless told otherwise). */
	if ((valid == len || (truncated && cut)) && (valid == 0 || !memchr(data, 0, valid))) {
		rc |= json_object_set_new(
			o, "text", json_stringn_nocheck(valid ? (const char *)data : "", valid));
	} else {
		size_t b64_len = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
		char *b64 = malloc(b64_len);
		if (!b64) {
			json_decref(o);
			return NULL;
		}
		sodium_bin2base64(b64, b64_len, data, len, sodium_base64_VARIANT_ORIGINAL);
		rc |= json_object_set_new(o, "base64", json_stringn_nocheck(b64, b64_len - 1));
		free(b64);
	}
	rc |= json_object_set_new(o, "size", json_integer((json_int_t)size));
	rc |= json_object_set_new(o, "truncated", json_boolean(truncated));
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* A header name or value as a JSON string: as is when UTF-8, else read as
 * ISO-8859-1 (what HTTP/1 header bytes historically are). */
static json_t *header_string(const char *s, size_t n)
{
	bool cut;
	if (utf8_prefix((const uint8_t *)s, n, &cut) == n)
		return json_stringn_nocheck(n ? s : "", n);
	char *out = malloc(2 * n + 1);
	if (!out)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)s[i];
		if (c < 0x80) {
			out[k++] = (char)c;
		} else {
			out[k++] = (char)(0xc0 | (c >> 6));
			out[k++] = (char)(0x80 | (c & 0x3f));
		}
	}
	out[k] = '\0';
	json_t *j = json_stringn_nocheck(out, k);
	free(out);
	return j;
}

void http_headers_remove(struct http_headers *h, const char *name)
{
	size_t o = 0;
	for (size_t i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, name) == 0) {
			h->bytes -= h->v[i].name_len + h->v[i].value_len;
			free(h->v[i].name); /* the value shares its block */
			continue;
		}
		h->v[o++] = h->v[i];
	}
	h->n = o;
}

json_t *http_headers_json(const struct http_headers *h)
{
	json_t *a = json_array();
	if (!a)
		return NULL;
	for (size_t i = 0; i < h->n; i++) {
		json_t *pair = json_array();
		if (!pair || json_array_append_new(a, pair) ||
		    json_array_append_new(pair, header_string(h->v[i].name, h->v[i].name_len)) ||
		    json_array_append_new(pair, header_string(h->v[i].value, h->v[i].value_len))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* MESSAGE: headers, trailers (when any), headers_truncated (when so), body. */
static int message_json(const struct http_message *m, json_t *o)
{
	int rc = json_object_set_new(o, "headers", http_headers_json(&m->headers));
	if (m->trailers.n || m->trailers.truncated)
		rc |= json_object_set_new(o, "trailers", http_headers_json(&m->trailers));
	if (m->headers.truncated || m->trailers.truncated)
		rc |= json_object_set_new(o, "headers_truncated", json_true());
	const struct http_body *b = &m->body;
	rc |= json_object_set_new(o, "body",
				  http_body_json(b->data, b->len, b->size, b->truncated));
	return rc ? -ENOMEM : 0;
}

static json_t *time_json(const struct timespec *ts)
{
	if (ts->tv_sec == 0 && ts->tv_nsec == 0)
		return json_null();
	char s[FLOWLOG_TIME_LEN];
	flowlog_format_time(ts, s);
	return json_string(s);
}

static bool has_scheme_prefix(const char *p)
{
	/* absolute-form: scheme ":" "//" (RFC 9112 3.2.2; scheme per RFC 3986 3.1) */
	size_t i = 0;
	while ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
	       (i > 0 &&
		((p[i] >= '0' && p[i] <= '9') || p[i] == '+' || p[i] == '-' || p[i] == '.')))
		i++;
	return i > 0 && p[i] == ':' && p[i + 1] == '/' && p[i + 2] == '/';
}

/* The absolute URL: absolute-form targets as sent; origin-form after
 * scheme://authority; "*" is the authority itself; authority-form (CONNECT)
 * becomes scheme://target. */
static json_t *url_json(const struct http_exchange *x, const char *default_authority)
{
	const char *scheme = x->scheme ? x->scheme : "http";
	const char *auth = x->authority ? x->authority : default_authority ? default_authority : "";
	const char *path = x->path ? x->path : "";
	if (has_scheme_prefix(path))
		return header_string(path, strlen(path));
	size_t sl = strlen(scheme), al = strlen(auth), pl = strlen(path);
	char stack[1024] = { 0 };
	size_t need = sl + 3 + al + pl + 1;
	char *u = need <= sizeof(stack) ? stack : malloc(need);
	if (!u)
		return NULL;
	size_t k = 0;
	memcpy(u, scheme, sl);
	k += sl;
	memcpy(u + k, "://", 3);
	k += 3;
	if (path[0] == '/' || path[0] == '\0' || strcmp(path, "*") == 0) {
		memcpy(u + k, auth, al);
		k += al;
		if (path[0] == '/') {
			memcpy(u + k, path, pl);
			k += pl;
		}
	} else {
		memcpy(u + k, path, pl);
		k += pl;
	}
	json_t *j = header_string(u, k);
	if (u != stack)
		free(u);
	return j;
}

static json_t *str_or_null(const char *s)
{
	return s ? header_string(s, strlen(s)) : json_null();
}

int http_exchange_to_json(const struct http_exchange *x, const char *default_authority,
			  json_t *record)
{
	int rc = 0;
	rc |= json_object_set_new(record, "http_version", str_or_null(x->version));
	if (x->version && strcmp(x->version, "HTTP/2") == 0)
		rc |= json_object_set_new(record, "stream_id", json_integer(x->stream_id));
	rc |= json_object_set_new(record, "method", str_or_null(x->method));
	rc |= json_object_set_new(record, "url", url_json(x, default_authority));

	json_t *req = json_object();
	rc |= json_object_set_new(record, "request", req);
	if (req)
		rc |= message_json(&x->req, req);

	if (x->status) {
		json_t *resp = json_object();
		rc |= json_object_set_new(record, "response", resp);
		if (resp) {
			rc |= json_object_set_new(resp, "status", json_integer(x->status));
			if (x->reason)
				rc |= json_object_set_new(
					resp, "reason",
					header_string(x->reason, strlen(x->reason)));
			rc |= message_json(&x->resp, resp);
		}
	} else {
		rc |= json_object_set_new(record, "response", json_null());
	}

	if (x->n_informational) {
		json_t *a = json_array();
		rc |= json_object_set_new(record, "informational", a);
		size_t n = x->n_informational;
		if (n > sizeof(x->informational) / sizeof(x->informational[0]))
			n = sizeof(x->informational) / sizeof(x->informational[0]);
		for (size_t i = 0; a && i < n; i++)
			rc |= json_array_append_new(a, json_integer(x->informational[i]));
	}
	if (x->websocket)
		rc |= json_object_set_new(record, "websocket", json_true());

	json_t *t = json_object();
	rc |= json_object_set_new(record, "timings", t);
	if (t) {
		rc |= json_object_set_new(t, "start", time_json(&x->start));
		rc |= json_object_set_new(t, "request_end", time_json(&x->request_end));
		rc |= json_object_set_new(t, "response_start", time_json(&x->response_start));
		rc |= json_object_set_new(t, "end", time_json(&x->end));
	}
	return rc ? -ENOMEM : 0;
}
