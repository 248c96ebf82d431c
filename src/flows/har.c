/* Flow records to HAR 1.2. The mapping choices are listed in har.h. */
#include "flows/har.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "flows/decode.h"

/* JSON text flags of the whole file. 15 digits: ms rounded to µs print as
 * written ("12.345"), not as the nearest binary double ("12.345000000000001"). */
#define HAR_DUMP_FLAGS (JSON_INDENT(2) | JSON_REAL_PRECISION(15))
/* An entry's depth in {"log": {"entries": [ ... ]}}, in spaces. */
#define HAR_ENTRY_INDENT "      "

/* Entries are kept as JSON text, a fraction of the size of a jansson tree;
 * WebSocket upgrades stay trees until their messages are attached. */
struct har_entry {
	int64_t start_us;
	size_t seq; /* file order, to keep the sort stable */
	char *text; /* the entry serialized, or NULL while `entry` is set */
	json_t *entry;
	char *ws_key; /* "conn\turl-without-scheme" of an upgrade, or NULL */
};

struct har {
	char *version;
	struct har_entry *v;
	size_t n, cap;
	/* ws_key -> {"messages": [...], "batches": n, "close": {...}} */
	json_t *ws;
	struct har_stats stats;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int nomem(char *err, size_t errlen)
{
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

/* --- time --- */

bool har_parse_time(const char *text, int64_t *us)
{
	if (!text)
		return false;
	int y, mo, d, h, mi, s, n = 0;
	if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 || n != 19)
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
		return false;
	const char *p = text + n;
	int64_t frac = 0;
	if (*p == '.') {
		int digits = 0;
		for (p++; isdigit((unsigned char)*p); p++, digits++)
			if (digits < 6)
				frac = frac * 10 + (*p - '0');
		if (digits == 0)
			return false;
		for (; digits < 6; digits++)
			frac *= 10;
	}
	int offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om, m = 0;
		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5 || oh > 23 || om > 59)
			return false;
		offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 1 + m;
	} else {
		return false;
	}
	if (*p != '\0')
		return false;
	struct tm tm = { .tm_year = y - 1900,
			 .tm_mon = mo - 1,
			 .tm_mday = d,
			 .tm_hour = h,
			 .tm_min = mi,
			 .tm_sec = s };
	time_t t = timegm(&tm);
	*us = ((int64_t)t - offset) * 1000000 + frac;
	return true;
}

void har_format_time(int64_t us, char out[static 32])
{
	int64_t ms = us >= 0 ? us / 1000 : -((-us + 999) / 1000);
	time_t t = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
	int frac = (int)(ms - (int64_t)t * 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char date[24];
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 32, "%s.%03dZ", date, frac);
}

/* An RFC 1123 / RFC 850 / asctime date (cookie Expires) to epoch seconds. */
static bool parse_http_date(const char *text, time_t *out)
{
	static const char *const formats[] = {
		"%a, %d %b %Y %H:%M:%S GMT",
		"%a, %d-%b-%Y %H:%M:%S GMT",
		"%A, %d-%b-%y %H:%M:%S GMT",
		"%a %b %d %H:%M:%S %Y",
	};
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		struct tm tm = { 0 };
		const char *end = strptime(text, formats[i], &tm);
		if (end && *end == '\0') {
			*out = timegm(&tm);
			return true;
		}
	}
	return false;
}

/* --- small JSON helpers --- */

static const char *str_of(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* Sets obj[key] to a new value; false on allocation failure. */
static bool put(json_t *obj, const char *key, json_t *value)
{
	return value && json_object_set_new(obj, key, value) == 0;
}

static bool put_str(json_t *obj, const char *key, const char *s)
{
	return put(obj, key, json_string(s ? s : ""));
}

static bool put_strn(json_t *obj, const char *key, const char *s, size_t n)
{
	return put(obj, key, json_stringn(s, n));
}

/* Shares a value of the record (jansson values are reference counted). */
static bool put_shared(json_t *obj, const char *key, json_t *value)
{
	return value && json_object_set(obj, key, value) == 0;
}

static json_t *name_value(const char *name, size_t name_len, const char *value, size_t value_len)
{
	json_t *nv = json_object();
	if (nv &&
	    (!put_strn(nv, "name", name, name_len) || !put_strn(nv, "value", value, value_len))) {
		json_decref(nv);
		return NULL;
	}
	return nv;
}

static bool append(json_t *array, json_t *value)
{
	return value && json_array_append_new(array, value) == 0;
}

/* A comment built from parts joined with "; ". */
struct comment {
	char text[512];
	size_t len;
};

static void comment_add(struct comment *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void comment_add(struct comment *c, const char *fmt, ...)
{
	if (c->len + 3 >= sizeof(c->text))
		return;
	if (c->len) {
		memcpy(c->text + c->len, "; ", 2);
		c->len += 2;
	}
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(c->text + c->len, sizeof(c->text) - c->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->len += (size_t)n < sizeof(c->text) - c->len ? (size_t)n
							       : sizeof(c->text) - c->len - 1;
}

static bool comment_put(json_t *obj, const struct comment *c)
{
	return c->len == 0 || put_strn(obj, "comment", c->text, c->len);
}

/* --- bytes: UTF-8, base64 --- */

/* Strict UTF-8 (no overlong forms, surrogates or code points over U+10FFFF). */
static bool utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = p[i];
		size_t len;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static json_t *base64_string(const uint8_t *p, size_t n)
{
	size_t b64len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64len);
	if (!b64)
		return NULL;
	sodium_bin2base64(b64, b64len, p, n, sodium_base64_VARIANT_ORIGINAL);
	json_t *s = json_stringn(b64, b64len - 1);
	free(b64);
	return s;
}

/* The recorded bytes of a BODY ({"text"} or {"base64"}). *data is owned
 * (free it) and may be NULL when there are none. false: bad base64 or no
 * memory. */
static bool body_bytes(const json_t *body, uint8_t **data, size_t *len)
{
	*data = NULL;
	*len = 0;
	const json_t *text = json_object_get(body, "text");
	const json_t *b64 = json_object_get(body, "base64");
	if (json_is_string(text)) {
		size_t n = json_string_length(text);
		if (n == 0)
			return true;
		if (!(*data = malloc(n)))
			return false;
		memcpy(*data, json_string_value(text), n);
		*len = n;
		return true;
	}
	if (!json_is_string(b64))
		return true;
	size_t n = json_string_length(b64);
	if (n == 0)
		return true;
	size_t cap = n / 4 * 3 + 3;
	if (!(*data = malloc(cap)))
		return false;
	if (sodium_base642bin(*data, cap, json_string_value(b64), n, "\r\n", len, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(*data);
		*data = NULL;
		return false;
	}
	return true;
}

/* --- headers, cookies, query strings --- */

/* A MESSAGE's headers ([[name, value], ...]) as HAR headers, without HTTP/2
 * pseudo-headers. NULL with *rc -ENOMEM, or -EINVAL for a malformed list. */
static json_t *har_headers(const json_t *list, int *rc, char *err, size_t errlen, const char *what)
{
	json_t *out = json_array();
	*rc = -ENOMEM;
	if (!out)
		return NULL;
	size_t i;
	json_t *pair;
	json_array_foreach(list, i, pair)
	{
		json_t *name = json_array_get(pair, 0), *value = json_array_get(pair, 1);
		if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_string(name) ||
		    !json_is_string(value)) {
			*rc = fail(err, errlen,
				   "%s header %zu is not a [name, value] pair of strings", what, i);
			json_decref(out);
			return NULL;
		}
		if (json_string_value(name)[0] == ':')
			continue;
		if (!append(out, name_value(json_string_value(name), json_string_length(name),
					    json_string_value(value), json_string_length(value)))) {
			json_decref(out);
			return NULL;
		}
	}
	*rc = 0;
	return out;
}

/* The first value of header `name` (ASCII case-insensitive) in a MESSAGE's
 * list, or NULL. */
static const char *header_value(const json_t *list, const char *name)
{
	size_t i;
	json_t *pair;
	json_array_foreach(list, i, pair)
	{
		const char *n = json_string_value(json_array_get(pair, 0));
		const char *v = json_string_value(json_array_get(pair, 1));
		if (n && v && strcasecmp(n, name) == 0)
			return v;
	}
	return NULL;
}

static const char *skip_ows(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

static const char *trim_end(const char *start, const char *end)
{
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	return end;
}

/* "a=1; b=2" of every Cookie header. */
static bool request_cookies(const json_t *headers, json_t *out)
{
	size_t i;
	json_t *pair;
	json_array_foreach(headers, i, pair)
	{
		const char *n = json_string_value(json_array_get(pair, 0));
		const char *v = json_string_value(json_array_get(pair, 1));
		if (!n || !v || strcasecmp(n, "cookie") != 0)
			continue;
		const char *end = v + strlen(v);
		for (const char *p = v; p < end;) {
			const char *semi = memchr(p, ';', (size_t)(end - p));
			const char *stop = semi ? semi : end;
			const char *a = skip_ows(p, stop), *b = trim_end(a, stop);
			if (b > a) {
				const char *eq = memchr(a, '=', (size_t)(b - a));
				const char *ne = eq ? trim_end(a, eq) : b;
				const char *vs = eq ? skip_ows(eq + 1, b) : b;
				if (!append(out,
					    name_value(a, (size_t)(ne - a), vs, (size_t)(b - vs))))
					return false;
			}
			p = semi ? semi + 1 : end;
		}
	}
	return true;
}

/* One Set-Cookie value as a HAR cookie. `now` (epoch seconds) turns
 * Max-Age into expires. */
static json_t *set_cookie(const char *v, int64_t now)
{
	const char *end = v + strlen(v);
	const char *semi = memchr(v, ';', (size_t)(end - v));
	const char *stop = semi ? semi : end;
	const char *a = skip_ows(v, stop), *b = trim_end(a, stop);
	const char *eq = memchr(a, '=', (size_t)(b - a));
	const char *ne = eq ? trim_end(a, eq) : b;
	const char *vs = eq ? skip_ows(eq + 1, b) : b;
	json_t *c = name_value(a, (size_t)(ne - a), vs, (size_t)(b - vs));
	if (!c)
		return NULL;
	bool secure = false, http_only = false, have_max_age = false;
	int64_t expires = 0;
	bool have_expires = false;
	for (const char *p = semi ? semi + 1 : end; p < end;) {
		const char *s2 = memchr(p, ';', (size_t)(end - p));
		const char *st = s2 ? s2 : end;
		const char *ka = skip_ows(p, st), *kb = trim_end(ka, st);
		const char *aeq = memchr(ka, '=', (size_t)(kb - ka));
		const char *kend = aeq ? trim_end(ka, aeq) : kb;
		const char *va = aeq ? skip_ows(aeq + 1, kb) : kb;
		size_t klen = (size_t)(kend - ka), vlen = (size_t)(kb - va);
		char val[128];
		snprintf(val, sizeof(val), "%.*s",
			 (int)(vlen < sizeof(val) ? vlen : sizeof(val) - 1), va);
		bool ok = true;
		if (klen == 4 && strncasecmp(ka, "path", 4) == 0) {
			ok = put_strn(c, "path", va, vlen);
		} else if (klen == 6 && strncasecmp(ka, "domain", 6) == 0) {
			ok = put_strn(c, "domain", va, vlen);
		} else if (klen == 7 && strncasecmp(ka, "expires", 7) == 0 && !have_max_age) {
			time_t t;
			if (parse_http_date(val, &t)) {
				expires = (int64_t)t;
				have_expires = true;
			}
		} else if (klen == 7 && strncasecmp(ka, "max-age", 7) == 0) {
			char *e;
			long long age = strtoll(val, &e, 10);
			if (*val && *e == '\0') {
				/* RFC 6265 5.2.2: zero or less expires at once. */
				expires = now + (age > 0 ? age : 0);
				have_expires = have_max_age = true;
			}
		} else if (klen == 6 && strncasecmp(ka, "secure", 6) == 0) {
			secure = true;
		} else if (klen == 8 && strncasecmp(ka, "httponly", 8) == 0) {
			http_only = true;
		} else if (klen == 8 && strncasecmp(ka, "samesite", 8) == 0) {
			ok = put_strn(c, "sameSite", va, vlen);
		}
		if (!ok) {
			json_decref(c);
			return NULL;
		}
		p = s2 ? s2 + 1 : end;
	}
	char when[32];
	if (have_expires)
		har_format_time(expires * 1000000, when);
	if ((have_expires && !put_str(c, "expires", when)) ||
	    !put(c, "httpOnly", json_boolean(http_only)) ||
	    !put(c, "secure", json_boolean(secure))) {
		json_decref(c);
		return NULL;
	}
	return c;
}

static bool response_cookies(const json_t *headers, int64_t now, json_t *out)
{
	size_t i;
	json_t *pair;
	json_array_foreach(headers, i, pair)
	{
		const char *n = json_string_value(json_array_get(pair, 0));
		const char *v = json_string_value(json_array_get(pair, 1));
		if (n && v && strcasecmp(n, "set-cookie") == 0 && !append(out, set_cookie(v, now)))
			return false;
	}
	return true;
}

/* "a=1&b&c=%20" as name/value pairs, left percent-encoded (as Chrome). */
static bool split_params(const char *p, size_t n, json_t *out)
{
	const char *end = p + n;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if (stop > p) {
			const char *eq = memchr(p, '=', (size_t)(stop - p));
			const char *ne = eq ? eq : stop;
			const char *vs = eq ? eq + 1 : stop;
			if (!append(out, name_value(p, (size_t)(ne - p), vs, (size_t)(stop - vs))))
				return false;
		}
		p = amp ? amp + 1 : end;
	}
	return true;
}

static bool query_string(const char *url, json_t *out)
{
	const char *q = strchr(url, '?');
	if (!q)
		return true;
	q++;
	const char *hash = strchr(q, '#');
	return split_params(q, hash ? (size_t)(hash - q) : strlen(q), out);
}

/* A recorded URL as a valid URI: bytes RFC 3986 never allows (controls,
 * space, "<>\^`{|}, non-ASCII) and a '%' that starts no escape are
 * percent-encoded, as a browser would have sent them. NULL when the URL has
 * no scheme or on allocation failure (*absolute tells which). */
static char *uri_of(const char *url, bool *absolute)
{
	const char *p = url;
	*absolute = false;
	if (!isalpha((unsigned char)*p))
		return NULL;
	while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	if (*p != ':')
		return NULL;
	*absolute = true;
	size_t n = strlen(url);
	char *out = malloc(n * 3 + 1), *o = out;
	if (!out)
		return NULL;
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *c = (const unsigned char *)url; *c; c++) {
		bool escape = *c <= 0x20 || *c >= 0x7f || strchr("\"<>\\^`{|}", *c) ||
			      (*c == '%' && !(isxdigit(c[1]) && isxdigit(c[2])));
		if (escape) {
			*o++ = '%';
			*o++ = hex[*c >> 4];
			*o++ = hex[*c & 15];
		} else {
			*o++ = (char)*c;
		}
	}
	*o = '\0';
	return out;
}

/* "HTTP/2" is written "http/2.0", the string Chrome exports. */
static const char *har_version(const char *v)
{
	if (!v)
		return "";
	if (strcmp(v, "HTTP/2") == 0 || strcmp(v, "HTTP/2.0") == 0)
		return "http/2.0";
	return v;
}

/* --- request and response --- */

/* Bytes a BODY kept, without decoding it. */
static size_t body_kept(const json_t *body)
{
	const json_t *text = json_object_get(body, "text"), *b64 = json_object_get(body, "base64");
	if (json_is_string(text))
		return json_string_length(text);
	if (!json_is_string(b64))
		return 0;
	size_t n = json_string_length(b64);
	const char *s = json_string_value(b64);
	size_t pad = (n > 0 && s[n - 1] == '=') + (n > 1 && s[n - 2] == '=');
	return n / 4 * 3 - pad;
}

/* postData of a request body into r (none when the body is empty). */
static bool post_data(json_t *r, const json_t *message, const json_t *body)
{
	json_t *text = json_object_get(body, "text"), *b64 = json_object_get(body, "base64");
	json_int_t size = json_integer_value(json_object_get(body, "size"));
	size_t kept = body_kept(body);
	if (size <= 0 && kept == 0)
		return true;
	const char *ctype = header_value(json_object_get(message, "headers"), "content-type");
	json_t *pd;
	if (!put(r, "postData", pd = json_object()) || !put_str(pd, "mimeType", ctype ? ctype : ""))
		return false;
	struct comment c = { .len = 0 };
	if (json_is_string(text)) {
		if (!put_shared(pd, "text", text))
			return false;
		if (ctype && strncasecmp(ctype, "application/x-www-form-urlencoded", 33) == 0) {
			json_t *params = json_array();
			if (!put(pd, "params", params) ||
			    !split_params(json_string_value(text), json_string_length(text),
					  params))
				return false;
		}
	} else if (json_is_string(b64)) {
		if (!put_shared(pd, "text", b64) || !put_str(pd, "_encoding", "base64"))
			return false;
		comment_add(&c, "binary body: text is base64 (_encoding)");
	}
	if (json_is_true(json_object_get(body, "truncated")))
		comment_add(&c, "truncated: %zu of %lld bytes recorded", kept, (long long)size);
	return comment_put(pd, &c);
}

/* Sets content.text (and encoding) from bytes. */
static bool content_bytes(json_t *content, const uint8_t *p, size_t n)
{
	if (utf8_valid(p, n))
		return put_strn(content, "text", (const char *)p, n);
	return put(content, "text", base64_string(p, n)) && put_str(content, "encoding", "base64");
}

/* A response's content: the body as recorded, or decoded when its
 * Content-Encoding is gzip or deflate. 0, -ENOMEM or -EINVAL. */
static int response_content(json_t *r, const json_t *message, const json_t *body,
			    json_int_t body_size, bool *truncated, char *err, size_t errlen)
{
	const json_t *headers = json_object_get(message, "headers");
	const char *ctype = header_value(headers, "content-type");
	const char *cenc = header_value(headers, "content-encoding");
	json_t *text = json_object_get(body, "text"), *b64 = json_object_get(body, "base64");
	size_t kept = body_kept(body);
	*truncated = json_is_true(json_object_get(body, "truncated"));
	json_t *content;
	if (!put(r, "content", content = json_object()))
		return -ENOMEM;
	struct comment c = { .len = 0 };
	if (*truncated)
		comment_add(&c, "truncated: %zu of %lld bytes recorded", kept,
			    (long long)body_size);

	char coding[32] = "";
	if (cenc) {
		const char *a = skip_ows(cenc, cenc + strlen(cenc)),
			   *b = trim_end(a, a + strlen(a));
		snprintf(coding, sizeof(coding), "%.*s", (int)(b - a), a);
	}
	/* What HAR export has always decoded (har.h); decode.h takes more. */
	bool zlib_coded = strcasecmp(coding, "gzip") == 0 || strcasecmp(coding, "x-gzip") == 0 ||
			  strcasecmp(coding, "deflate") == 0;
	bool identity = coding[0] == '\0' || strcasecmp(coding, "identity") == 0;
	if (!identity && !zlib_coded && kept > 0)
		comment_add(&c, "Content-Encoding %s not decoded: text is the encoded body",
			    coding);

	json_int_t size = body_size, compression = -1;
	uint8_t *raw = NULL, *dec = NULL;
	size_t raw_len = 0, dec_len = 0;
	int rc = -ENOMEM;
	bool decoded = false;
	if (zlib_coded && kept > 0) {
		if (!body_bytes(body, &raw, &raw_len)) {
			rc = json_is_string(b64)
				     ? fail(err, errlen, "response body: invalid base64")
				     : -ENOMEM;
			goto out;
		}
		enum decode_status ds =
			decode_body(coding, raw, raw_len, HAR_MAX_DECODED, &dec, &dec_len);
		if (ds == DECODE_NOMEM)
			goto out;
		if (ds == DECODE_ERROR || ds == DECODE_UNKNOWN) {
			comment_add(&c,
				    "Content-Encoding %s: invalid data, text is the encoded body",
				    coding);
		} else {
			decoded = true;
			if (ds == DECODE_COMPLETE && !*truncated) {
				size = (json_int_t)dec_len;
				compression = size - body_size;
			} else if (ds == DECODE_CAPPED) {
				comment_add(&c, "decoded body over %u bytes: cut", HAR_MAX_DECODED);
			} else {
				comment_add(&c,
					    "Content-Encoding %s: decoded what was recorded (%zu "
					    "bytes)",
					    coding, dec_len);
			}
		}
	}
	if (!put(content, "size", json_integer(size)) ||
	    (compression >= 0 && !put(content, "compression", json_integer(compression))) ||
	    !put_str(content, "mimeType", ctype ? ctype : "x-unknown"))
		goto out;
	if (decoded) {
		if (!content_bytes(content, dec, dec_len))
			goto out;
	} else if (raw) {
		if (!content_bytes(content, raw, raw_len))
			goto out;
	} else if (json_is_string(text) && json_string_length(text) > 0) {
		if (!put_shared(content, "text", text))
			goto out;
	} else if (json_is_string(b64) && json_string_length(b64) > 0) {
		if (!put_shared(content, "text", b64) || !put_str(content, "encoding", "base64"))
			goto out;
	}
	rc = comment_put(content, &c) ? 0 : -ENOMEM;
out:
	free(raw);
	free(dec);
	return rc;
}

static int put_trailers(json_t *obj, const json_t *message, char *err, size_t errlen,
			const char *what)
{
	const json_t *trailers = json_object_get(message, "trailers");
	if (!json_is_array(trailers) || json_array_size(trailers) == 0)
		return 0;
	int rc;
	json_t *t = har_headers(trailers, &rc, err, errlen, what);
	if (!t)
		return rc;
	return put(obj, "_trailers", t) ? 0 : -ENOMEM;
}

static int check_message(const json_t *m, const char *what, char *err, size_t errlen)
{
	if (!json_is_object(m))
		return fail(err, errlen, "\"%s\" is not an object", what);
	if (!json_is_array(json_object_get(m, "headers")))
		return fail(err, errlen, "\"%s\".headers is not an array", what);
	const json_t *body = json_object_get(m, "body");
	if (body && !json_is_object(body) && !json_is_null(body))
		return fail(err, errlen, "\"%s\".body is not an object", what);
	return 0;
}

/* The request object into e. 0, -ENOMEM or -EINVAL. */
static int build_request(json_t *e, const json_t *rec, const json_t *m, bool *truncated, char *err,
			 size_t errlen)
{
	const json_t *headers = json_object_get(m, "headers");
	const json_t *body = json_object_get(m, "body");
	const char *url = str_of(rec, "url");
	bool absolute;
	char *uri = uri_of(url, &absolute);
	if (!uri)
		return absolute ? -ENOMEM
				: fail(err, errlen, "http record: \"url\" is not absolute");
	json_t *r, *cookies, *qs;
	bool ok = put(e, "request", r = json_object()) &&
		  put_str(r, "method", str_of(rec, "method")) && put_str(r, "url", uri);
	free(uri);
	if (!ok || !put_str(r, "httpVersion", har_version(str_of(rec, "http_version"))) ||
	    !put(r, "cookies", cookies = json_array()))
		return -ENOMEM;
	if (!request_cookies(headers, cookies))
		return -ENOMEM;
	int rc;
	json_t *h = har_headers(headers, &rc, err, errlen, "request");
	if (!h)
		return rc;
	if (!put(r, "headers", h) || !put(r, "queryString", qs = json_array()) ||
	    !query_string(url, qs))
		return -ENOMEM;
	json_int_t size = json_integer_value(json_object_get(body, "size"));
	if (!put(r, "headersSize", json_integer(-1)) || !put(r, "bodySize", json_integer(size)) ||
	    !post_data(r, m, body))
		return -ENOMEM;
	*truncated = json_is_true(json_object_get(body, "truncated"));
	return put_trailers(r, m, err, errlen, "request trailer");
}

/* The response object into e. `now` (epoch seconds) dates Max-Age. */
static int build_response(json_t *e, const json_t *rec, const json_t *m, int64_t now,
			  bool *truncated, char *err, size_t errlen)
{
	json_t *r, *cookies;
	if (!put(e, "response", r = json_object()) ||
	    !put(r, "status", json_integer(json_integer_value(json_object_get(m, "status")))) ||
	    !put_str(r, "statusText", str_of(m, "reason")) ||
	    !put_str(r, "httpVersion", har_version(str_of(rec, "http_version"))) ||
	    !put(r, "cookies", cookies = json_array()))
		return -ENOMEM;
	const json_t *headers = json_object_get(m, "headers");
	if (!response_cookies(headers, now, cookies))
		return -ENOMEM;
	int rc;
	json_t *h = har_headers(headers, &rc, err, errlen, "response");
	if (!h)
		return rc;
	if (!put(r, "headers", h))
		return -ENOMEM;
	const json_t *body = json_object_get(m, "body");
	json_int_t size = json_integer_value(json_object_get(body, "size"));
	if ((rc = response_content(r, m, body, size, truncated, err, errlen)) < 0)
		return rc;
	if (!put_str(r, "redirectURL", header_value(headers, "location")) ||
	    !put(r, "headersSize", json_integer(-1)) || !put(r, "bodySize", json_integer(size)))
		return -ENOMEM;
	return put_trailers(r, m, err, errlen, "response trailer");
}

/* Chrome's shape for a request that got no response. */
static int failed_response(json_t *e, const char *why)
{
	json_t *r, *content;
	if (!put(e, "response", r = json_object()) || !put(r, "status", json_integer(0)) ||
	    !put_str(r, "statusText", "") || !put_str(r, "httpVersion", "") ||
	    !put(r, "cookies", json_array()) || !put(r, "headers", json_array()) ||
	    !put(r, "content", content = json_object()) || !put(content, "size", json_integer(0)) ||
	    !put_str(content, "mimeType", "x-unknown") || !put_str(r, "redirectURL", "") ||
	    !put(r, "headersSize", json_integer(-1)) || !put(r, "bodySize", json_integer(-1)) ||
	    !put_str(r, "_error", why))
		return -ENOMEM;
	return 0;
}

/* --- timings --- */

struct times {
	int64_t start, send, wait, receive; /* µs */
};

static bool opt_time(const json_t *obj, const char *key, int64_t *us, bool *have, char *err,
		     size_t errlen)
{
	const json_t *v = json_object_get(obj, key);
	*have = false;
	if (!v || json_is_null(v))
		return true;
	if (!har_parse_time(json_string_value(v), us)) {
		fail(err, errlen, "\"%s\" is not an RFC 3339 time", key);
		return false;
	}
	*have = true;
	return true;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The exchange split into send, wait and receive, which add up to its
 * duration exactly: each phase ends where the next starts, clamped so none
 * is negative (a server may answer before the request ended). */
static int exchange_times(const json_t *rec, struct times *t, char *err, size_t errlen)
{
	const json_t *tm = json_object_get(rec, "timings");
	if (tm && !json_is_object(tm) && !json_is_null(tm))
		return fail(err, errlen, "\"timings\" is not an object");
	int64_t start = 0, req_end = 0, resp_start = 0, end = 0;
	bool h_start, h_req_end, h_resp_start, h_end;
	if (!opt_time(tm, "start", &start, &h_start, err, errlen) ||
	    !opt_time(tm, "request_end", &req_end, &h_req_end, err, errlen) ||
	    !opt_time(tm, "response_start", &resp_start, &h_resp_start, err, errlen) ||
	    !opt_time(tm, "end", &end, &h_end, err, errlen))
		return -EINVAL;
	if (!h_start && !opt_time(rec, "start", &start, &h_start, err, errlen))
		return -EINVAL;
	if (!h_start)
		return fail(err, errlen, "no start time");
	if (!h_end && !opt_time(rec, "end", &end, &h_end, err, errlen))
		return -EINVAL;
	if (!h_end)
		end = h_resp_start ? resp_start : h_req_end ? req_end : start;
	end = end < start ? start : end;
	req_end = h_req_end ? clamp64(req_end, start, end)
			    : (h_resp_start ? clamp64(resp_start, start, end) : end);
	resp_start = h_resp_start ? clamp64(resp_start, req_end, end) : end;
	t->start = start;
	t->send = req_end - start;
	t->wait = resp_start - req_end;
	t->receive = end - resp_start;
	return 0;
}

static json_t *ms(int64_t us)
{
	return json_real((double)us / 1000.0);
}

/* --- entries --- */

/* "1.2.3.4:443" / "[2001:db8::1]:443" without the port (and zone): the
 * address alone, or "" when it is not one. */
static void server_ip(const char *server, char out[static 64])
{
	out[0] = '\0';
	if (!server)
		return;
	const char *a = server, *b;
	if (*a == '[') {
		a++;
		b = strchr(a, ']');
	} else {
		b = strrchr(a, ':');
	}
	if (!b || (size_t)(b - a) >= 64)
		return;
	char ip[64];
	memcpy(ip, a, (size_t)(b - a));
	ip[b - a] = '\0';
	char *zone = strchr(ip, '%');
	if (zone)
		*zone = '\0';
	unsigned char bin[16];
	if (inet_pton(AF_INET, ip, bin) == 1 || inet_pton(AF_INET6, ip, bin) == 1)
		memcpy(out, ip, strlen(ip) + 1);
}

/* The key that ties "websocket" batches to their upgrade: conn and the URL
 * without its scheme (the exchange says https://, the batches wss://). */
static char *ws_key(const char *conn, const char *url)
{
	const char *rest = strstr(url, "://");
	rest = rest ? rest + 3 : url;
	size_t n = strlen(conn) + 1 + strlen(rest) + 1;
	char *key = malloc(n);
	if (key)
		snprintf(key, n, "%s\t%s", conn, rest);
	return key;
}

static int add_http(struct har *h, json_t *rec, char *err, size_t errlen)
{
	const char *method = str_of(rec, "method"), *url = str_of(rec, "url");
	/* null: a request that never parsed; HAR has no form for it. */
	if (json_is_null(json_object_get(rec, "method")) ||
	    json_is_null(json_object_get(rec, "url"))) {
		h->stats.skipped++;
		return 0;
	}
	if (!method)
		return fail(err, errlen, "http record: \"method\" is not a string");
	if (!url)
		return fail(err, errlen, "http record: \"url\" is not a string");
	const json_t *req = json_object_get(rec, "request"),
		     *resp = json_object_get(rec, "response");
	if (check_message(req, "request", err, errlen) < 0)
		return -EINVAL;
	if (!json_is_null(resp) && check_message(resp, "response", err, errlen) < 0)
		return -EINVAL;
	struct times t = { 0 };
	if (exchange_times(rec, &t, err, errlen) < 0)
		return -EINVAL;
	if (h->n == h->cap) {
		size_t ncap = h->cap ? h->cap * 2 : 64;
		struct har_entry *nv = realloc(h->v, ncap * sizeof(*nv));
		if (!nv)
			return nomem(err, errlen);
		h->v = nv;
		h->cap = ncap;
	}

	bool req_trunc = false, resp_trunc = false;
	char when[32], ip[64];
	har_format_time(t.start, when);
	server_ip(str_of(rec, "server"), ip);
	const char *conn = str_of(rec, "conn");
	const char *why = str_of(rec, "error") ? str_of(rec, "error") : str_of(rec, "end_reason");
	bool websocket = json_is_true(json_object_get(rec, "websocket"));

	int rc = -ENOMEM;
	json_t *e = json_object(), *timings, *wg, *v;
	if (!put_str(e, "startedDateTime", when) ||
	    !put(e, "time", ms(t.send + t.wait + t.receive)))
		goto out;
	if ((rc = build_request(e, rec, req, &req_trunc, err, errlen)) < 0)
		goto out;
	rc = json_is_null(resp)
		     ? failed_response(e, why ? why : "no response")
		     : build_response(e, rec, resp, t.start / 1000000, &resp_trunc, err, errlen);
	if (rc < 0)
		goto out;
	rc = -ENOMEM;
	if (!put(e, "cache", json_object()) || !put(e, "timings", timings = json_object()) ||
	    !put(timings, "blocked", json_integer(-1)) || !put(timings, "dns", json_integer(-1)) ||
	    !put(timings, "connect", json_integer(-1)) || !put(timings, "send", ms(t.send)) ||
	    !put(timings, "wait", ms(t.wait)) || !put(timings, "receive", ms(t.receive)) ||
	    !put(timings, "ssl", json_integer(-1)))
		goto out;
	if ((ip[0] && !put_str(e, "serverIPAddress", ip)) ||
	    (conn && !put_str(e, "connection", conn)))
		goto out;
	if (json_is_null(resp)) {
		struct comment c = { .len = 0 };
		comment_add(&c, "no response: %s", why ? why : "unknown");
		if (!comment_put(e, &c))
			goto out;
	}
	if (websocket && !put_str(e, "_resourceType", "websocket"))
		goto out;

	/* Ours: what HAR has no field for. */
	if (!put(e, "_wgmitm", wg = json_object()))
		goto out;
	static const char *const shared[] = {
		"id", "peer", "client", "tls", "stream_id", "end_reason", "error", "informational"
	};
	for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++)
		if ((v = json_object_get(rec, shared[i])) && !put_shared(wg, shared[i], v))
			goto out;
	if (!put(wg, "truncated", json_boolean(req_trunc || resp_trunc)))
		goto out;
	if ((json_is_true(json_object_get(req, "headers_truncated")) ||
	     json_is_true(json_object_get(resp, "headers_truncated"))) &&
	    !put(wg, "headers_truncated", json_true()))
		goto out;

	struct har_entry *he = &h->v[h->n];
	*he = (struct har_entry){ .start_us = t.start, .seq = h->n };
	if (websocket && conn) {
		if (!(he->ws_key = ws_key(conn, url)))
			goto out;
		he->entry = e;
	} else {
		he->text = json_dumps(e, HAR_DUMP_FLAGS);
		json_decref(e);
		if (!he->text)
			return nomem(err, errlen);
	}
	h->n++;
	h->stats.entries++;
	return 0;
out:
	json_decref(e);
	return rc == -ENOMEM ? nomem(err, errlen) : -EINVAL;
}

static int ws_opcode(const char *name)
{
	static const struct {
		const char *name;
		int op;
	} ops[] = {
		{ "text", 1 }, { "binary", 2 }, { "close", 8 }, { "ping", 9 }, { "pong", 10 },
	};
	for (size_t i = 0; name && i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(name, ops[i].name) == 0)
			return ops[i].op;
	return -1;
}

static int add_websocket(struct har *h, json_t *rec, char *err, size_t errlen)
{
	const char *conn = str_of(rec, "conn"), *url = str_of(rec, "url");
	const json_t *messages = json_object_get(rec, "messages");
	if (!conn || !url) {
		/* Nothing to tie it to an entry. */
		h->stats.ws_unmatched++;
		return 0;
	}
	if (!json_is_array(messages))
		return fail(err, errlen, "websocket record: \"messages\" is not an array");
	char *key = ws_key(conn, url);
	if (!key)
		return nomem(err, errlen);
	int rc = -ENOMEM;
	json_t *slot = json_object_get(h->ws, key);
	if (!slot) {
		slot = json_object();
		if (!slot || json_object_set_new(h->ws, key, slot) < 0 ||
		    !put(slot, "messages", json_array()) || !put(slot, "batches", json_integer(0)))
			goto out;
	}
	json_t *out = json_object_get(slot, "messages");
	size_t i;
	json_t *m;
	json_array_foreach(messages, i, m)
	{
		const char *dir = str_of(m, "dir");
		int op = ws_opcode(str_of(m, "opcode"));
		int64_t when;
		if (!dir || (strcmp(dir, "up") != 0 && strcmp(dir, "down") != 0) || op < 0 ||
		    !har_parse_time(str_of(m, "time"), &when)) {
			rc = fail(err, errlen,
				  "websocket record: message %zu needs dir up/down, a known opcode "
				  "and a time",
				  i);
			goto out;
		}
		const json_t *body = json_object_get(m, "body");
		json_t *data = json_object_get(body, "text");
		if (!json_is_string(data))
			data = json_object_get(body, "base64");
		json_t *hm = json_object();
		/* Chrome: epoch seconds; milliseconds keep 15 significant digits. */
		double secs = (double)(when / 1000) / 1000.0;
		if (!append(out, hm) || !put_str(hm, "type", dir[0] == 'u' ? "send" : "receive") ||
		    !put(hm, "time", json_real(secs)) || !put(hm, "opcode", json_integer(op)) ||
		    !(json_is_string(data) ? put_shared(hm, "data", data)
					   : put_str(hm, "data", "")))
			goto out;
	}
	json_t *close = json_object_get(rec, "close");
	if (json_is_object(close) && !put_shared(slot, "close", close))
		goto out;
	if (!put(slot, "batches",
		 json_integer(json_integer_value(json_object_get(slot, "batches")) + 1)))
		goto out;
	rc = 0;
out:
	free(key);
	return rc == -ENOMEM ? nomem(err, errlen) : rc;
}

struct har *har_create(const char *creator_version)
{
	struct har *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->version = strdup(creator_version ? creator_version : "");
	h->ws = json_object();
	if (!h->version || !h->ws) {
		har_free(h);
		return NULL;
	}
	return h;
}

int har_add_record(struct har *h, json_t *record, char *err, size_t errlen)
{
	const char *type = str_of(record, "type");
	if (!json_is_object(record) || !type)
		return fail(err, errlen, "not a flow record (no \"type\")");
	if (strcmp(type, "http") == 0)
		return add_http(h, record, err, errlen);
	if (strcmp(type, "websocket") == 0)
		return add_websocket(h, record, err, errlen);
	h->stats.ignored++;
	return 0;
}

static int by_start(const void *a, const void *b)
{
	const struct har_entry *x = a, *y = b;
	if (x->start_us != y->start_us)
		return x->start_us < y->start_us ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int har_finish(struct har *h, struct har_stats *stats)
{
	for (size_t i = 0; i < h->n; i++) {
		struct har_entry *he = &h->v[i];
		if (!he->entry)
			continue;
		json_t *slot = json_object_get(h->ws, he->ws_key);
		if (slot) {
			json_t *close = json_object_get(slot, "close");
			if (!put_shared(he->entry, "_webSocketMessages",
					json_object_get(slot, "messages")) ||
			    (close && !put_shared(json_object_get(he->entry, "_wgmitm"),
						  "websocket_close", close)))
				return -ENOMEM;
			h->stats.ws_messages += json_array_size(json_object_get(slot, "messages"));
			/* One upgrade per connection and URL takes the messages. */
			json_object_del(h->ws, he->ws_key);
		}
		if (!(he->text = json_dumps(he->entry, HAR_DUMP_FLAGS)))
			return -ENOMEM;
		json_decref(he->entry);
		he->entry = NULL;
	}
	if (h->v)
		qsort(h->v, h->n, sizeof(*h->v), by_start);
	const char *key;
	json_t *slot;
	json_object_foreach(h->ws, key, slot) h->stats.ws_unmatched +=
		(size_t)json_integer_value(json_object_get(slot, "batches"));
	json_object_clear(h->ws);
	if (stats)
		*stats = h->stats;
	return 0;
}

void har_free(struct har *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++) {
		json_decref(h->v[i].entry);
		free(h->v[i].text);
		free(h->v[i].ws_key);
	}
	free(h->v);
	json_decref(h->ws);
	free(h->version);
	free(h);
}

/* Text with each line after the first indented to the entries' depth. */
static bool write_indented(const char *text, FILE *fp)
{
	fputs(HAR_ENTRY_INDENT, fp);
	for (const char *p = text;;) {
		const char *nl = strchr(p, '\n');
		if (!nl)
			return fputs(p, fp) != EOF;
		if (fwrite(p, 1, (size_t)(nl - p + 1), fp) != (size_t)(nl - p + 1) ||
		    fputs(HAR_ENTRY_INDENT, fp) == EOF)
			return false;
		p = nl + 1;
	}
}

int har_write(const struct har *h, FILE *fp)
{
	/* What json_dumpf(HAR_DUMP_FLAGS) writes for the whole log, one entry at
	 * a time. */
	json_t *v = json_string(h->version);
	char *version = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
	json_decref(v);
	if (!version)
		return -ENOMEM;
	fprintf(fp,
		"{\n  \"log\": {\n    \"version\": \"1.2\",\n    \"creator\": {\n"
		"      \"name\": \"wgmitm\",\n      \"version\": %s\n    },\n    \"entries\": [",
		version);
	free(version);
	for (size_t i = 0; i < h->n; i++) {
		if (fputs(i ? ",\n" : "\n", fp) == EOF || !write_indented(h->v[i].text, fp))
			return -EIO;
	}
	if (fputs(h->n ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n", fp) == EOF || ferror(fp))
		return -EIO;
	return 0;
}
