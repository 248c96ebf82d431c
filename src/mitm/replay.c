/* Replay of recorded HTTP requests: the request built from a record and
 * its edits (sans-IO), then sent on the loop and recorded.
 *
 * A replay's steps, each a callback of the one before:
 *   kick (a 0 ms timer, so `done` never runs inside replay_start)
 *   → resolve (uv_getaddrinfo, only when the URL no longer names the
 *     original server) → the policy → connect → TLS handshake (https)
 *   → the request written → the response read until the observer emits
 *     the exchange → the record written, `done` called, handles closed.
 * Any failure, the timeout or a shutdown ends it with the exchange as far
 * as it went (the request, no response) and end_reason and error saying
 * why. */
#include "mitm/replay.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "flows/fields.h"
#include "mitm/http1.h"
#include "mitm/tls.h"

/* ---- Building the request (sans-IO) --------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* RFC 9110 token characters (method and header names). */
static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

/* A field value HTTP/1.1 can carry: no CR, LF or NUL. */
static bool is_field_value(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return false;
	return true;
}

static bool is_hostchar(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_';
}

int replay_parse_url(const char *url, bool *tls, char host[static REPLAY_HOST_LEN], uint16_t *port,
		     size_t *target_off, size_t *target_len, char *err, size_t errlen)
{
	size_t len = strlen(url);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)url[i];
		if (c <= 0x20 || c >= 0x7f)
			return fail(err, errlen,
				    "url: byte %zu is a space, a control byte or not ASCII "
				    "(percent-encode it)",
				    i);
	}
	size_t p;
	if (strncasecmp(url, "https://", 8) == 0) {
		*tls = true;
		p = 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		*tls = false;
		p = 7;
	} else {
		return fail(err, errlen, "url: expected an absolute http:// or https:// URL");
	}
	size_t auth_end = p + strcspn(url + p, "/?#");
	if (memchr(url + p, '@', auth_end - p))
		return fail(err, errlen, "url: user information (user@) is not sent");
	const char *h = url + p;
	size_t hl;
	const char *portstr = NULL;
	size_t portlen = 0;
	if (h[0] == '[') {
		const char *close = memchr(h, ']', auth_end - p);
		if (!close)
			return fail(err, errlen, "url: an IPv6 address without its ]");
		hl = (size_t)(close - h - 1);
		char a[INET6_ADDRSTRLEN];
		struct in6_addr in6;
		if (hl == 0 || hl >= sizeof(a))
			return fail(err, errlen, "url: not an IPv6 address");
		memcpy(a, h + 1, hl);
		a[hl] = '\0';
		if (inet_pton(AF_INET6, a, &in6) != 1)
			return fail(err, errlen, "url: \"%s\" is not an IPv6 address", a);
		const char *after = close + 1;
		if (after < url + auth_end) {
			if (*after != ':')
				return fail(err, errlen, "url: expected :PORT after the ]");
			portstr = after + 1;
			portlen = (size_t)(url + auth_end - portstr);
		}
		h++;
	} else {
		const char *colon = memchr(h, ':', auth_end - p);
		hl = colon ? (size_t)(colon - h) : auth_end - p;
		if (colon) {
			portstr = colon + 1;
			portlen = (size_t)(url + auth_end - portstr);
		}
		for (size_t i = 0; i < hl; i++)
			if (!is_hostchar((unsigned char)h[i]))
				return fail(err, errlen,
					    "url: the host has a byte a name cannot have");
	}
	if (hl == 0)
		return fail(err, errlen, "url: no host");
	if (hl >= REPLAY_HOST_LEN)
		return fail(err, errlen, "url: the host is longer than %d bytes",
			    REPLAY_HOST_LEN - 1);
	for (size_t i = 0; i < hl; i++)
		host[i] = (char)tolower((unsigned char)h[i]);
	host[hl] = '\0';
	*port = *tls ? 443 : 80;
	if (portstr) {
		unsigned long v = 0;
		if (portlen == 0 || portlen > 5)
			return fail(err, errlen, "url: expected a port from 1 to 65535");
		for (size_t i = 0; i < portlen; i++) {
			if (!isdigit((unsigned char)portstr[i]))
				return fail(err, errlen, "url: expected a port from 1 to 65535");
			v = v * 10 + (unsigned long)(portstr[i] - '0');
		}
		if (v == 0 || v > 65535)
			return fail(err, errlen, "url: expected a port from 1 to 65535");
		*port = (uint16_t)v;
	}
	*target_off = auth_end;
	*target_len = strcspn(url + auth_end, "#");
	return 0;
}

/* "ip:port" or "[ip6]:port", as records write addresses. */
static int parse_addr(const char *s, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (!s)
		return -1;
	char a[INET6_ADDRSTRLEN];
	const char *colon;
	size_t n;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		n = (size_t)(close - s - 1);
		colon = close + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		n = (size_t)(colon - s);
	}
	if (n == 0 || n >= sizeof(a))
		return -1;
	memcpy(a, s, n);
	a[n] = '\0';
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return -1;
	struct sockaddr_in *in4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, a, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, a, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	return -1;
}

static void headers_remove_at(struct http_headers *h, size_t i)
{
	h->bytes -= h->v[i].name_len + h->v[i].value_len;
	free(h->v[i].name); /* the value shares the name's allocation */
	memmove(&h->v[i], &h->v[i + 1], (h->n - i - 1) * sizeof(h->v[0]));
	h->n--;
}

/* Removes every `name` (case-insensitive); returns the index of the first
 * one, or SIZE_MAX when there was none. */
static size_t headers_remove_all(struct http_headers *h, const char *name)
{
	size_t first = SIZE_MAX;
	for (size_t i = h->n; i-- > 0;) {
		if (strcasecmp(h->v[i].name, name) == 0) {
			headers_remove_at(h, i);
			first = i;
		}
	}
	return first;
}

/* Adds a header, or moves the last one added to index `at`. */
static int headers_insert(struct http_headers *h, size_t at, const char *name, size_t nl,
			  const char *value, size_t vl)
{
	int rc = http_headers_add(h, name, nl, value, vl);
	if (rc < 0 || at >= h->n - 1)
		return rc;
	struct http_header last = h->v[h->n - 1];
	memmove(&h->v[at + 1], &h->v[at], (h->n - 1 - at) * sizeof(h->v[0]));
	h->v[at] = last;
	return 0;
}

/* Appends a cookie to the Cookie header already there. 0, or -1 when
 * there is none yet (or out of memory: then it goes as a header of its
 * own). */
static int join_cookie(struct replay_request *r, const char *v, size_t vl)
{
	size_t at = SIZE_MAX;
	for (size_t i = 0; i < r->headers.n && at == SIZE_MAX; i++)
		if (strcasecmp(r->headers.v[i].name, "cookie") == 0)
			at = i;
	if (at == SIZE_MAX)
		return -1;
	const struct http_header *h = &r->headers.v[at];
	size_t n = h->value_len + 2 + vl;
	char *joined = malloc(n);
	if (!joined)
		return -1;
	memcpy(joined, h->value, h->value_len);
	memcpy(joined + h->value_len, "; ", 2);
	memcpy(joined + h->value_len + 2, v, vl);
	headers_remove_at(&r->headers, at);
	int rc = headers_insert(&r->headers, at, "Cookie", 6, joined, n);
	free(joined);
	return rc < 0 ? -1 : 0;
}

static bool hop_by_hop(const char *name)
{
	static const char *const hop[] = { "connection",       "keep-alive",
					   "proxy-connection", "te",
					   "upgrade",          "transfer-encoding",
					   "content-length",   "host",
					   "http2-settings",   "proxy-authorization" };
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (strcasecmp(name, hop[i]) == 0)
			return true;
	return false;
}

static void note_edit(struct replay_request *r, const char *name)
{
	json_array_append_new(r->edits, json_string(name));
}

static int take_body(struct replay_request *r, const json_t *record, const json_t *edits, char *err,
		     size_t errlen)
{
	const json_t *text = json_object_get(edits, "body");
	const json_t *b64 = json_object_get(edits, "body_base64");
	if (text && b64)
		return fail(err, errlen, "body and body_base64: give one of them");
	if (text && !json_is_string(text))
		return fail(err, errlen, "body: expected a string (or body_base64)");
	if (b64 && !json_is_string(b64))
		return fail(err, errlen, "body_base64: expected a base64 string");
	if (text) {
		size_t n = json_string_length(text);
		if (n > REPLAY_MAX_BODY)
			return fail(err, errlen, "body: more than %u bytes", REPLAY_MAX_BODY);
		r->body = malloc(n ? n : 1);
		if (!r->body)
			return fail(err, errlen, "out of memory");
		memcpy(r->body, json_string_value(text), n);
		r->body_len = n;
		note_edit(r, "body");
		return 0;
	}
	if (b64) {
		size_t n = json_string_length(b64);
		if (n / 4 * 3 > REPLAY_MAX_BODY + 3)
			return fail(err, errlen, "body_base64: more than %u bytes",
				    REPLAY_MAX_BODY);
		r->body = malloc(n / 4 * 3 + 3);
		if (!r->body)
			return fail(err, errlen, "out of memory");
		if (sodium_base642bin(r->body, n / 4 * 3 + 3, json_string_value(b64), n, "\r\n",
				      &r->body_len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
			return fail(err, errlen, "body_base64: not base64");
		note_edit(r, "body");
		return 0;
	}
	const json_t *body = json_object_get(json_object_get(record, "request"), "body");
	if (!json_is_object(body))
		return 0;
	if (json_is_true(json_object_get(body, "truncated")))
		return fail(err, errlen,
			    "the recorded request body was cut at the body cap (%lld bytes were "
			    "sent): pass the whole body (body or body_base64) to replay it",
			    (long long)json_integer_value(json_object_get(body, "size")));
	size_t n;
	uint8_t *owned;
	const uint8_t *p = flow_body_bytes(body, &n, &owned);
	if (n > REPLAY_MAX_BODY) {
		free(owned);
		return fail(err, errlen, "the recorded body is over %u bytes", REPLAY_MAX_BODY);
	}
	if (p && n) {
		r->body = malloc(n);
		if (!r->body) {
			free(owned);
			return fail(err, errlen, "out of memory");
		}
		memcpy(r->body, p, n);
		r->body_len = n;
	}
	free(owned);
	return 0;
}

static int apply_header_edits(struct replay_request *r, const json_t *hs, char *err, size_t errlen)
{
	if (!hs)
		return 0;
	if (!json_is_object(hs))
		return fail(err, errlen, "headers: expected an object {name: value or null}");
	const char *name;
	const json_t *v;
	json_object_foreach((json_t *)hs, name, v)
	{
		size_t nl = strlen(name);
		if (!is_token(name, nl))
			return fail(err, errlen, "headers: \"%.64s\" is not a header name", name);
		if (strcasecmp(name, "content-length") == 0 ||
		    strcasecmp(name, "transfer-encoding") == 0 ||
		    strcasecmp(name, "connection") == 0)
			return fail(err, errlen,
				    "headers: %s is set by the replay (Content-Length from the "
				    "body, Connection: close)",
				    name);
		if (!json_is_null(v) && !json_is_string(v))
			return fail(err, errlen,
				    "headers: %s: expected a string, or null to remove it", name);
		size_t at = headers_remove_all(&r->headers, name);
		if (json_is_null(v))
			continue;
		const char *val = json_string_value(v);
		size_t vl = json_string_length(v);
		if (!is_field_value(val, vl))
			return fail(err, errlen, "headers: %s: a value cannot hold CR, LF or NUL",
				    name);
		if (headers_insert(&r->headers, at == SIZE_MAX ? r->headers.n : at, name, nl, val,
				   vl) < 0)
			return fail(err, errlen, "headers: over %u bytes in all",
				    HTTPFLOW_MAX_HEADER_BYTES);
	}
	if (json_object_size(hs))
		note_edit(r, "headers");
	return 0;
}

int replay_build(const json_t *record, const json_t *edits, struct replay_request *r, char *err,
		 size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->edits = json_array();
	if (!r->edits)
		return fail(err, errlen, "out of memory");
	const char *type = json_string_value(json_object_get(record, "type"));
	const char *id = json_string_value(json_object_get(record, "id"));
	if (!type || !id || strcmp(type, "http") != 0)
		return fail(err, errlen,
			    "flow %s is a %s record, not an HTTP request: only http flows "
			    "replay",
			    id ? id : "?", type ? type : "typeless");
	snprintf(r->replay_of, sizeof(r->replay_of), "%s", id);
	if (json_is_true(json_object_get(record, "websocket")))
		return fail(err, errlen,
			    "flow %s upgraded to WebSocket: an upgrade does not replay", id);
	if (edits && !json_is_null(edits) && !json_is_object(edits))
		return fail(err, errlen, "the edits are a JSON object");
	if (!json_is_object(edits))
		edits = NULL;
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)edits, k, v)
	{
		if (strcmp(k, "method") && strcmp(k, "url") && strcmp(k, "headers") &&
		    strcmp(k, "body") && strcmp(k, "body_base64") && strcmp(k, "timeout_ms"))
			return fail(
				err, errlen,
				"%.64s: unknown edit (a replay takes method, url, headers, body, "
				"body_base64, and timeout_ms)",
				k);
	}
	/* Not an edit of the request: how long this replay may take. */
	const json_t *to = json_object_get(edits, "timeout_ms");
	if (to) {
		if (!json_is_integer(to) || json_integer_value(to) < 100 ||
		    json_integer_value(to) > REPLAY_MAX_TIMEOUT_MS)
			return fail(err, errlen, "timeout_ms: expected 100 to %u",
				    REPLAY_MAX_TIMEOUT_MS);
		r->timeout_ms = (uint32_t)json_integer_value(to);
	}

	/* Method. */
	const json_t *em = json_object_get(edits, "method");
	if (em && !json_is_string(em))
		return fail(err, errlen, "method: expected a string");
	const char *method =
		em ? json_string_value(em) : json_string_value(json_object_get(record, "method"));
	if (!method)
		return fail(err, errlen, "flow %s has no method", id);
	size_t ml = strlen(method);
	if (!is_token(method, ml) || ml >= sizeof(r->method))
		return fail(err, errlen, "method: \"%.32s\" is not a method", method);
	if (strcasecmp(method, "CONNECT") == 0)
		return fail(err, errlen, "method: CONNECT opens a tunnel and does not replay");
	memcpy(r->method, method, ml + 1);
	if (em)
		note_edit(r, "method");

	/* URL: the original's, or the edit's. */
	const char *orig_url = json_string_value(json_object_get(record, "url"));
	const json_t *eu = json_object_get(edits, "url");
	if (eu && !json_is_string(eu))
		return fail(err, errlen, "url: expected a string");
	const char *url = eu ? json_string_value(eu) : orig_url;
	if (!url)
		return fail(err, errlen, "flow %s has no URL", id);
	size_t toff, tlen;
	char e2[200];
	if (replay_parse_url(url, &r->tls, r->host, &r->port, &toff, &tlen, e2, sizeof(e2)) < 0) {
		if (eu)
			return fail(err, errlen, "%s", e2);
		return fail(err, errlen, "the recorded URL does not replay: %s", e2);
	}
	size_t tgt = tlen + 2;
	r->target = malloc(tgt);
	if (!r->target)
		return fail(err, errlen, "out of memory");
	snprintf(r->target, tgt, "%s%.*s", tlen && url[toff] == '/' ? "" : "/", (int)tlen,
		 url + toff);
	bool same = !eu;
	if (eu && orig_url) {
		bool otls;
		char ohost[REPLAY_HOST_LEN];
		uint16_t oport;
		size_t a, b;
		same = replay_parse_url(orig_url, &otls, ohost, &oport, &a, &b, e2, sizeof(e2)) ==
			       0 &&
		       otls == r->tls && oport == r->port && strcmp(ohost, r->host) == 0;
	}
	if (eu)
		note_edit(r, "url");
	r->use_server = same && parse_addr(json_string_value(json_object_get(record, "server")),
					   &r->server) == 0;
	(void)parse_addr(json_string_value(json_object_get(record, "client")), &r->client);
	const char *peer = json_string_value(json_object_get(record, "peer"));
	snprintf(r->peer, sizeof(r->peer), "%s", peer ? peer : "");
	const char *ver = json_string_value(json_object_get(record, "http_version"));
	if (ver && strcmp(ver, "HTTP/2") == 0)
		snprintf(r->note, sizeof(r->note), "recorded over HTTP/2, replayed over HTTP/1.1");

	/* Headers: Host from the URL's authority, then the recorded ones but
	 * pseudo-headers and those of the connection (framing is redone). */
	const char *auth = url + (r->tls ? 8 : 7);
	size_t authl = (size_t)(url + toff - auth);
	char hostbuf[REPLAY_HOST_LEN + 16];
	if (authl >= sizeof(hostbuf))
		return fail(err, errlen, "url: the host is too long");
	for (size_t i = 0; i < authl; i++)
		hostbuf[i] = (char)tolower((unsigned char)auth[i]);
	if (http_headers_add(&r->headers, "Host", 4, hostbuf, authl) < 0)
		return fail(err, errlen, "out of memory");
	const json_t *rh = json_object_get(json_object_get(record, "request"), "headers");
	bool framed = false;
	size_t i;
	const json_t *pair;
	json_array_foreach(rh, i, pair)
	{
		const char *n = json_string_value(json_array_get(pair, 0));
		const json_t *jv = json_array_get(pair, 1);
		if (!n || !json_is_string(jv) || n[0] == ':')
			continue;
		if (strcasecmp(n, "content-length") == 0 || strcasecmp(n, "transfer-encoding") == 0)
			framed = true;
		if (hop_by_hop(n))
			continue;
		size_t nl = strlen(n), vl = json_string_length(jv);
		if (!is_token(n, nl) || !is_field_value(json_string_value(jv), vl))
			return fail(
				err, errlen,
				"the recorded header \"%.64s\" has bytes HTTP/1.1 cannot carry: "
				"remove or set it",
				n);
		if (strcasecmp(n, "cookie") == 0 && join_cookie(r, json_string_value(jv), vl) == 0)
			continue; /* HTTP/2 splits cookies; HTTP/1.1 sends one header */
		if (http_headers_add(&r->headers, n, nl, json_string_value(jv), vl) < 0)
			return fail(err, errlen, "the recorded headers are over %u bytes",
				    HTTPFLOW_MAX_HEADER_BYTES);
	}
	if (apply_header_edits(r, json_object_get(edits, "headers"), err, errlen) < 0)
		return -1;
	if (take_body(r, record, edits, err, errlen) < 0)
		return -1;
	if (!http_headers_find(&r->headers, "host"))
		return fail(err, errlen,
			    "headers: Host cannot be removed from an HTTP/1.1 request");
	if (r->body_len || framed || !strcasecmp(r->method, "POST") ||
	    !strcasecmp(r->method, "PUT") || !strcasecmp(r->method, "PATCH")) {
		char cl[24];
		int n = snprintf(cl, sizeof(cl), "%zu", r->body_len);
		if (http_headers_add(&r->headers, "Content-Length", 14, cl, (size_t)n) < 0)
			return fail(err, errlen, "out of memory");
	}
	if (http_headers_add(&r->headers, "Connection", 10, "close", 5) < 0)
		return fail(err, errlen, "headers: over %u bytes in all",
			    HTTPFLOW_MAX_HEADER_BYTES);
	return 0;
}

void replay_request_free(struct replay_request *r)
{
	if (!r)
		return;
	free(r->target);
	free(r->body);
	http_headers_free(&r->headers);
	json_decref(r->edits);
	memset(r, 0, sizeof(*r));
}

uint8_t *replay_serialize(const struct replay_request *r, size_t *len)
{
	size_t n = strlen(r->method) + strlen(r->target) + 16 + r->body_len;
	for (size_t i = 0; i < r->headers.n; i++)
		n += r->headers.v[i].name_len + r->headers.v[i].value_len + 4;
	uint8_t *out = malloc(n), *p = out;
	if (!out)
		return NULL;
	p += sprintf((char *)p, "%s %s HTTP/1.1\r\n", r->method, r->target);
	for (size_t i = 0; i < r->headers.n; i++) {
		const struct http_header *h = &r->headers.v[i];
		memcpy(p, h->name, h->name_len);
		p += h->name_len;
		*p++ = ':';
		*p++ = ' ';
		memcpy(p, h->value, h->value_len);
		p += h->value_len;
		*p++ = '\r';
		*p++ = '\n';
	}
	*p++ = '\r';
	*p++ = '\n';
	if (r->body_len)
		memcpy(p, r->body, r->body_len);
	p += r->body_len;
	*len = (size_t)(p - out);
	return out;
}

/* ---- The engine ------------------------------------------------------------ */

#define REPLAY_READ_SIZE (64u * 1024)

struct replay_engine {
	uv_loop_t *loop;
	struct replay_config cfg;
	struct replay *list; /* in flight */
	size_t inflight;
	size_t alive; /* in flight or closing */
	bool shutting, freeing;
};

struct replay {
	struct replay_engine *e;
	struct replay *next;
	struct replay_request req;
	replay_done_fn done;
	void *arg;
	uv_timer_t timer;
	uv_getaddrinfo_t gai;
	uv_tcp_t tcp;
	uv_connect_t creq;
	int handles; /* open uv handles */
	bool resolving, tcp_on, leg_on, sent, finished;
	struct sockaddr_storage dest; /* what is dialled (family 0: not yet) */
	struct tls_leg leg;
	json_t *up_leg; /* the upstream leg as records show it, with its cert */
	struct http1_obs *obs;
	uint8_t *wire; /* the request bytes */
	size_t wire_len;
	uint8_t *rbuf;
	const char *end_reason; /* the first failure; NULL: none */
	char error[256];
	json_t *record; /* written once the observer emitted the exchange */
	char id[FLOWLOG_ID_LEN];
	int status;
};

struct replay_write {
	uv_write_t w;
	uint8_t data[];
};

static void engine_maybe_free(struct replay_engine *e)
{
	if (e->freeing && e->alive == 0)
		free(e);
}

static void replay_free(struct replay *r)
{
	struct replay_engine *e = r->e;
	if (r->leg_on)
		tls_leg_free(&r->leg);
	http1_obs_free(r->obs);
	json_decref(r->up_leg);
	json_decref(r->record);
	replay_request_free(&r->req);
	free(r->wire);
	free(r->rbuf);
	free(r);
	e->alive--;
	engine_maybe_free(e);
}

static void replay_maybe_free(struct replay *r)
{
	if (r->finished && r->handles == 0 && !r->resolving)
		replay_free(r);
}

static void on_closed(uv_handle_t *h)
{
	struct replay *r = h->data;
	r->handles--;
	replay_maybe_free(r);
}

/* The exchange, as the observer emits it: the record. */
static void on_exchange(void *ctx, const struct http_exchange *x)
{
	struct replay *r = ctx;
	struct replay_engine *e = r->e;
	if (r->record)
		return;
	struct flowlog_flow f;
	flowlog_flow_begin(
		&f, e->cfg.log, "http", r->req.peer[0] ? r->req.peer : NULL,
		(const struct sockaddr *)&r->req.client,
		(const struct sockaddr *)(r->dest.ss_family ? &r->dest : &r->req.server));
	if (x->start.tv_sec)
		f.start = x->start;
	f.end = x->end.tv_sec ? x->end : f.start;
	f.bytes_up = x->req.body.size;
	f.bytes_down = x->resp.body.size;
	f.end_reason = r->end_reason ? r->end_reason : x->error ? x->error : "complete";
	if (r->error[0])
		f.error[0] = '!'; /* the key in its place; the whole message below */
	else if (x->error_detail[0])
		snprintf(f.error, sizeof(f.error), "%s", x->error_detail);
	json_t *o = flowlog_flow_json(&f);
	if (!o)
		return;
	if (r->error[0])
		json_object_set_new(o, "error", json_string(r->error));
	json_object_set_new(o, "via", json_string("replay"));
	json_object_set_new(o, "replay_of", json_string(r->req.replay_of));
	if (json_array_size(r->req.edits))
		json_object_set(o, "replay_edits", r->req.edits);
	if (r->req.note[0])
		json_object_set_new(o, "replay_note", json_string(r->req.note));
	if (r->req.tls)
		json_object_set_new(o, "tls",
				    json_pack("{s:n,s:O?}", "client", "upstream", r->up_leg));
	else
		json_object_set_new(o, "tls", json_null());
	char authority[REPLAY_HOST_LEN + 16];
	snprintf(authority, sizeof(authority), "%s%s%s:%u", strchr(r->req.host, ':') ? "[" : "",
		 r->req.host, strchr(r->req.host, ':') ? "]" : "", r->req.port);
	if (http_exchange_to_json(x, authority, o) < 0) {
		json_decref(o);
		return;
	}
	(void)flowlog_write(e->cfg.log, o);
	snprintf(r->id, sizeof(r->id), "%s", f.id);
	r->status = x->status;
	r->record = o;
}

/* Calls `done` and closes; the record must be there, or be made now. */
static void replay_finish(struct replay *r)
{
	if (r->finished)
		return;
	r->finished = true;
	struct replay_engine *e = r->e;
	for (struct replay **pp = &e->list; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	e->inflight--;
	const char *reason = r->end_reason ? r->end_reason
			     : r->record
				     ? json_string_value(json_object_get(r->record, "end_reason"))
				     : "error";
	struct replay_result res = { .id = r->id,
				     .status = r->status,
				     .end_reason = reason ? reason : "complete",
				     .error = r->error[0] ? r->error
					      : r->record ? json_string_value(json_object_get(
								    r->record, "error"))
							  : "the flow could not be recorded",
				     .record = r->record };
	r->done(r->arg, &res);
	if (r->resolving)
		(void)uv_cancel((uv_req_t *)&r->gai);
	if (r->tcp_on && !uv_is_closing((uv_handle_t *)&r->tcp))
		uv_close((uv_handle_t *)&r->tcp, on_closed);
	if (!uv_is_closing((uv_handle_t *)&r->timer))
		uv_close((uv_handle_t *)&r->timer, on_closed);
	replay_maybe_free(r);
}

/* Ends the replay as it stands with `reason` (a static string). */
static void replay_fail(struct replay *r, const char *reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void replay_fail(struct replay *r, const char *reason, const char *fmt, ...)
{
	if (r->finished)
		return;
	if (!r->end_reason) {
		r->end_reason = reason;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->error, sizeof(r->error), fmt, ap);
		va_end(ap);
	}
	if (r->obs && !r->record) {
		if (!r->sent)
			http1_obs_client(r->obs, r->wire, r->wire_len);
		r->sent = true;
		http1_obs_finish(r->obs, reason);
	}
	replay_finish(r);
}

static void on_written(uv_write_t *w, int status)
{
	(void)status; /* a failed write shows as a read error or EOF */
	free(w);
}

static void send_bytes(struct replay *r, const uint8_t *p, size_t n)
{
	struct replay_write *w = malloc(sizeof(*w) + n);
	if (!w) {
		replay_fail(r, "error", "out of memory");
		return;
	}
	memcpy(w->data, p, n);
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
	int rc = uv_write(&w->w, (uv_stream_t *)&r->tcp, &b, 1, on_written);
	if (rc < 0) {
		free(w);
		replay_fail(r, "upstream_reset", "write: %s", uv_strerror(rc));
	}
}

static void tls_flush(struct replay *r)
{
	const uint8_t *p;
	size_t n;
	while (!r->finished && (n = tls_leg_out(&r->leg, &p)) > 0) {
		send_bytes(r, p, n);
		tls_leg_consume(&r->leg, n);
	}
}

static void send_request(struct replay *r)
{
	http1_obs_client(r->obs, r->wire, r->wire_len);
	r->sent = true;
	if (r->req.tls) {
		if (tls_leg_write(&r->leg, r->wire, r->wire_len) != TLS_OK) {
			char why[160];
			tls_leg_error(&r->leg, why, sizeof(why));
			replay_fail(r, "tls:upstream_error", "upstream TLS: %s", why);
			return;
		}
		tls_flush(r);
	} else {
		send_bytes(r, r->wire, r->wire_len);
	}
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct replay *r = h->data;
	(void)hint;
	*buf = uv_buf_init((char *)r->rbuf, REPLAY_READ_SIZE);
}

static void upstream_ended(struct replay *r)
{
	http1_obs_server_eof(r->obs);
	if (!r->record)
		replay_fail(r, "connection_closed",
			    "the server closed the connection before its response ended");
	else
		replay_finish(r);
}

/* The TLS handshake finished: the leg recorded, verified, then the request. */
static void tls_ready(struct replay *r)
{
	r->up_leg = tls_leg_json(&r->leg);
	json_t *cert = tls_leg_cert_json(&r->leg);
	if (r->up_leg && cert)
		json_object_set_new(r->up_leg, "cert", cert);
	else
		json_decref(cert);
	char why[160];
	if (tls_leg_verify(&r->leg, why, sizeof(why)) < 0) {
		replay_fail(r, "tls:upstream_error", "upstream certificate: %s", why);
		return;
	}
	send_request(r);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct replay *r = s->data;
	if (r->finished || nread == 0)
		return;
	if (nread == UV_EOF) {
		if (r->req.tls && !r->leg.done) {
			replay_fail(r, "tls:upstream_error",
				    "upstream TLS: the server closed the connection during the "
				    "handshake");
			return;
		}
		upstream_ended(r);
		return;
	}
	if (nread < 0) {
		replay_fail(r, "upstream_reset", "read: %s", uv_strerror((int)nread));
		return;
	}
	if (!r->req.tls) {
		http1_obs_server(r->obs, (const uint8_t *)buf->base, (size_t)nread);
		if (r->record)
			replay_finish(r);
		return;
	}
	if (tls_leg_feed(&r->leg, (const uint8_t *)buf->base, (size_t)nread) < 0) {
		replay_fail(r, "error", "out of memory");
		return;
	}
	char why[160];
	if (!r->leg.done) {
		enum tls_result t = tls_leg_handshake(&r->leg);
		tls_flush(r);
		if (t == TLS_ERROR) {
			tls_leg_error(&r->leg, why, sizeof(why));
			replay_fail(r, "tls:upstream_error", "upstream TLS: %s", why);
			return;
		}
		if (t == TLS_WANT || r->finished)
			return;
		tls_ready(r);
		if (r->finished)
			return;
	}
	for (;;) {
		size_t n;
		enum tls_result t = tls_leg_read(&r->leg, r->rbuf, REPLAY_READ_SIZE, &n);
		if (t == TLS_OK && n) {
			http1_obs_server(r->obs, r->rbuf, n);
			if (r->record) {
				replay_finish(r);
				return;
			}
			continue;
		}
		tls_flush(r); /* a key update, a ticket's answer */
		if (t == TLS_CLOSED) {
			upstream_ended(r);
		} else if (t == TLS_ERROR) {
			tls_leg_error(&r->leg, why, sizeof(why));
			replay_fail(r, "upstream_reset", "upstream TLS: %s", why);
		}
		return;
	}
}

static void on_connect(uv_connect_t *c, int status)
{
	struct replay *r = c->data;
	if (status == UV_ECANCELED || r->finished)
		return;
	char a[FLOWLOG_ADDR_LEN];
	flowlog_format_addr((const struct sockaddr *)&r->dest, a);
	if (status < 0) {
		replay_fail(r,
			    status == UV_ECONNREFUSED ? "upstream_refused" : "upstream_unreachable",
			    "connect to %s: %s", a, uv_strerror(status));
		return;
	}
	int rc = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
	if (rc < 0) {
		replay_fail(r, "error", "read: %s", uv_strerror(rc));
		return;
	}
	if (!r->req.tls) {
		send_request(r);
		return;
	}
	struct in6_addr probe6;
	struct in_addr probe4;
	bool ip = inet_pton(AF_INET, r->req.host, &probe4) == 1 ||
		  inet_pton(AF_INET6, r->req.host, &probe6) == 1;
	static const uint8_t alpn[] = "\x08http/1.1";
	if (tls_leg_upstream(r->e->cfg.tls, &r->leg, ip ? NULL : r->req.host,
			     (const struct sockaddr *)&r->dest, alpn, sizeof(alpn) - 1) < 0) {
		replay_fail(r, "error", "out of memory");
		return;
	}
	r->leg_on = true;
	(void)tls_leg_handshake(&r->leg); /* the ClientHello */
	tls_flush(r);
}

static bool host_port_allowed(const struct policy *p, uint16_t port)
{
	for (size_t i = 0; i < p->nhost_ports; i++)
		if (p->host_ports[i] == port)
			return true;
	return false;
}

static uint16_t sa_port(const struct sockaddr *sa)
{
	return ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
					       : ((const struct sockaddr_in *)sa)->sin_port);
}

/* The tunnel's destination policy, as for a device: loopback only on an
 * --allow-host-port port. */
static enum policy_verdict check_dest(struct replay *r, const struct sockaddr *sa,
				      struct sockaddr_storage *out)
{
	enum policy_verdict v = policy_check(r->e->cfg.policy, IPPROTO_TCP, sa, out);
	if (v == POLICY_REFUSE_LOOPBACK &&
	    host_port_allowed(r->e->cfg.policy, sa_port((const struct sockaddr *)out)))
		return POLICY_HOST_PORT;
	if (v == POLICY_LOCAL_SERVICE)
		return POLICY_REFUSE_OWN_ADDRESS;
	return v;
}

static const char *policy_reason(enum policy_verdict v)
{
	static char names[POLICY_VERDICT_COUNT][40];
	char *n = names[v];
	if (!n[0])
		snprintf(n, sizeof(names[0]), "policy:%s", policy_verdict_name(v));
	return n;
}

static void dial(struct replay *r, const struct sockaddr *dest)
{
	memcpy(&r->dest, dest,
	       dest->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
	int rc = uv_tcp_init(r->e->loop, &r->tcp);
	if (rc < 0) {
		replay_fail(r, "error", "socket: %s", uv_strerror(rc));
		return;
	}
	r->tcp.data = r;
	r->tcp_on = true;
	r->handles++;
	r->creq.data = r;
	rc = uv_tcp_connect(&r->creq, &r->tcp, dest, on_connect);
	if (rc < 0) {
		char a[FLOWLOG_ADDR_LEN];
		flowlog_format_addr(dest, a);
		replay_fail(r, rc == UV_ECONNREFUSED ? "upstream_refused" : "upstream_unreachable",
			    "connect to %s: %s", a, uv_strerror(rc));
	}
}

static void refuse(struct replay *r, enum policy_verdict v, const struct sockaddr *sa)
{
	char a[FLOWLOG_ADDR_LEN];
	flowlog_format_addr(sa, a);
	memcpy(&r->dest, sa,
	       sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					 : sizeof(struct sockaddr_in));
	replay_fail(r, policy_reason(v),
		    "the destination %s is refused (%s), as it would be for a device%s", a,
		    policy_verdict_name(v),
		    v == POLICY_REFUSE_LOOPBACK ? ": --allow-host-port PORT opens a host port"
						: "");
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
	struct replay *r = g->data;
	r->resolving = false;
	if (r->finished) {
		uv_freeaddrinfo(res);
		replay_maybe_free(r);
		return;
	}
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		replay_fail(r, "upstream_unreachable", "resolve %s: %s", r->req.host,
			    uv_strerror(status));
		return;
	}
	/* The first address the policy allows; else the first one's verdict. */
	struct sockaddr_storage first, ok;
	enum policy_verdict fv = POLICY_ALLOW;
	bool have_first = false, have_ok = false;
	for (struct addrinfo *ai = res; ai && !have_ok; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		struct sockaddr_storage out;
		enum policy_verdict v = check_dest(r, ai->ai_addr, &out);
		if (!policy_refused(v)) {
			ok = out;
			have_ok = true;
		} else if (!have_first) {
			first = out;
			fv = v;
			have_first = true;
		}
	}
	uv_freeaddrinfo(res);
	if (have_ok)
		dial(r, (const struct sockaddr *)&ok);
	else if (have_first)
		refuse(r, fv, (const struct sockaddr *)&first);
	else
		replay_fail(r, "upstream_unreachable", "resolve %s: no IPv4 or IPv6 address",
			    r->req.host);
}

static uint32_t timeout_of(const struct replay *r)
{
	return r->req.timeout_ms      ? r->req.timeout_ms
	       : r->e->cfg.timeout_ms ? r->e->cfg.timeout_ms
				      : REPLAY_TIMEOUT_MS;
}

static void on_timeout(uv_timer_t *t)
{
	struct replay *r = t->data;
	replay_fail(r, "timeout", "no complete response within %u ms", timeout_of(r));
}

static void on_kick(uv_timer_t *t)
{
	struct replay *r = t->data;
	struct replay_engine *e = r->e;
	uv_timer_start(&r->timer, on_timeout, timeout_of(r), 0);
	if (r->req.tls && !e->cfg.tls) {
		replay_fail(r, "error",
			    "https replays need the endpoint's TLS settings, and it runs with "
			    "--no-intercept");
		return;
	}
	if (r->req.use_server) {
		struct sockaddr_storage out;
		enum policy_verdict v =
			check_dest(r, (const struct sockaddr *)&r->req.server, &out);
		if (policy_refused(v))
			refuse(r, v, (const struct sockaddr *)&out);
		else
			dial(r, (const struct sockaddr *)&out);
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", r->req.port);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	r->gai.data = r;
	int rc = uv_getaddrinfo(e->loop, &r->gai, on_resolved, r->req.host, port, &hints);
	if (rc < 0) {
		replay_fail(r, "upstream_unreachable", "resolve %s: %s", r->req.host,
			    uv_strerror(rc));
		return;
	}
	r->resolving = true;
}

struct replay_engine *replay_engine_new(uv_loop_t *loop, const struct replay_config *cfg)
{
	struct replay_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->loop = loop;
	e->cfg = *cfg;
	return e;
}

int replay_start(struct replay_engine *e, struct replay_request *req, replay_done_fn done,
		 void *arg)
{
	if (e->shutting) {
		replay_request_free(req);
		return -ESHUTDOWN;
	}
	if (e->inflight >= REPLAY_MAX_INFLIGHT) {
		replay_request_free(req);
		return -EBUSY;
	}
	struct replay *r = calloc(1, sizeof(*r));
	if (r)
		r->rbuf = malloc(REPLAY_READ_SIZE);
	if (r)
		r->wire = replay_serialize(req, &r->wire_len);
	char authority[REPLAY_HOST_LEN + 16];
	snprintf(authority, sizeof(authority), "%s%s%s:%u", strchr(req->host, ':') ? "[" : "",
		 req->host, strchr(req->host, ':') ? "]" : "", req->port);
	struct http1_config hc = { .sink = { .exchange = on_exchange, .ctx = r },
				   .body_cap = e->cfg.body_cap,
				   .scheme = req->tls ? "https" : "http",
				   .default_authority = authority };
	if (r && r->rbuf && r->wire)
		r->obs = http1_obs_new(&hc);
	if (!r || !r->obs) {
		if (r) {
			free(r->rbuf);
			free(r->wire);
		}
		free(r);
		replay_request_free(req);
		return -ENOMEM;
	}
	r->e = e;
	r->req = *req;
	memset(req, 0, sizeof(*req));
	r->done = done;
	r->arg = arg;
	uv_timer_init(e->loop, &r->timer);
	r->timer.data = r;
	r->handles = 1;
	r->next = e->list;
	e->list = r;
	e->inflight++;
	e->alive++;
	uv_timer_start(&r->timer, on_kick, 0, 0);
	return 0;
}

size_t replay_inflight(const struct replay_engine *e)
{
	return e->inflight;
}

void replay_engine_shutdown(struct replay_engine *e)
{
	if (!e)
		return;
	e->shutting = true;
	while (e->list)
		replay_fail(e->list, "shutdown", "the endpoint is shutting down");
}

void replay_engine_free(struct replay_engine *e)
{
	if (!e)
		return;
	replay_engine_shutdown(e);
	e->freeing = true;
	engine_maybe_free(e);
}
