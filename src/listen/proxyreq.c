/* The first request head of an HTTP proxy client (proxyreq.h). */
#include "listen/proxyreq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>
#include <sodium.h>

#include "common/strbuf.h"

struct span {
	const char *p;
	size_t n;
};

struct head {
	const char *base;
	struct span url;
	struct span name[PROXYREQ_MAX_HEADERS], value[PROXYREQ_MAX_HEADERS];
	size_t nh;
	bool in_value;
	bool too_many;
	bool complete;
};

/* llhttp gives one span per call over one buffer; adjacent calls join. */
static void span_add(struct span *s, const char *at, size_t len)
{
	if (!s->p)
		s->p = at;
	s->n = (size_t)(at + len - s->p);
}

static struct head *head_of(llhttp_t *p)
{
	return p->data;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	span_add(&head_of(p)->url, at, len);
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct head *h = head_of(p);
	if (h->in_value || h->nh == 0) {
		if (h->nh == PROXYREQ_MAX_HEADERS) {
			h->too_many = true;
			return -1;
		}
		h->nh++;
		h->in_value = false;
	}
	span_add(&h->name[h->nh - 1], at, len);
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct head *h = head_of(p);
	h->in_value = true;
	span_add(&h->value[h->nh - 1], at, len);
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	head_of(p)->complete = true;
	return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
};

static bool span_is(struct span s, const char *name)
{
	return s.n == strlen(name) && strncasecmp(s.p, name, s.n) == 0;
}

bool proxyreq_split_authority(const char *a, size_t n, char host[PROXYREQ_HOST_LEN], uint16_t *port,
			      uint16_t default_port)
{
	const char *end = a + n, *hp, *he, *colon = NULL;
	if (n == 0)
		return false;
	if (a[0] == '[') {
		hp = a + 1;
		he = memchr(hp, ']', n - 1);
		if (!he)
			return false;
		if (he + 1 < end) {
			if (he[1] != ':')
				return false;
			colon = he + 1;
		}
	} else {
		hp = a;
		colon = memchr(a, ':', n);
		he = colon ? colon : end;
		if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1)))
			return false; /* a bare IPv6 address needs brackets */
	}
	size_t hl = (size_t)(he - hp);
	if (hl == 0 || hl >= PROXYREQ_HOST_LEN)
		return false;
	for (const char *q = hp; q < he; q++)
		if ((unsigned char)*q <= ' ' || *q == '/' || *q == '@' || *q == '\\' || *q == 0x7f)
			return false;
	if (colon) {
		const char *d = colon + 1;
		if (d == end || end - d > 5)
			return false;
		unsigned v = 0;
		for (; d < end; d++) {
			if (*d < '0' || *d > '9')
				return false;
			v = v * 10 + (unsigned)(*d - '0');
		}
		if (v == 0 || v > 65535)
			return false;
		*port = (uint16_t)v;
	} else if (default_port) {
		*port = default_port;
	} else {
		return false;
	}
	memcpy(host, hp, hl);
	host[hl] = '\0';
	return true;
}

/* "Basic base64(user:pass)". */
static void read_auth(struct span v, struct proxyreq *out)
{
	while (v.n && (*v.p == ' ' || *v.p == '\t'))
		v.p++, v.n--;
	if (v.n < 6 || strncasecmp(v.p, "Basic ", 6) != 0)
		return;
	v.p += 6, v.n -= 6;
	while (v.n && v.p[0] == ' ')
		v.p++, v.n--;
	while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t'))
		v.n--;
	unsigned char dec[2 * PROXYREQ_CRED_LEN];
	size_t dl;
	if (sodium_base642bin(dec, sizeof(dec), v.p, v.n, NULL, &dl, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0)
		return;
	unsigned char *c = memchr(dec, ':', dl);
	if (!c || memchr(dec, '\0', dl))
		return;
	size_t ul = (size_t)(c - dec), pl = dl - ul - 1;
	if (ul >= PROXYREQ_CRED_LEN || pl >= PROXYREQ_CRED_LEN)
		return;
	memcpy(out->user, dec, ul);
	out->user[ul] = '\0';
	memcpy(out->pass, c + 1, pl);
	out->pass[pl] = '\0';
	out->has_auth = true;
	sodium_memzero(dec, sizeof(dec));
}

static bool hop_by_hop(struct span name)
{
	return span_is(name, "proxy-authorization") || span_is(name, "proxy-connection") ||
	       span_is(name, "connection") || span_is(name, "keep-alive");
}

static int rewrite(const struct head *h, llhttp_t *p, struct span path, struct span authority,
		   struct proxyreq *out)
{
	struct strbuf b;
	strbuf_init(&b, 2 * PROXYREQ_MAX_HEAD);
	bool host = false;
	int rc = strbuf_printf(&b, "%s %.*s HTTP/%d.%d\r\n", llhttp_method_name(p->method),
			       (int)path.n, path.p, p->http_major, p->http_minor);
	for (size_t i = 0; i < h->nh && rc == 0; i++) {
		if (hop_by_hop(h->name[i]))
			continue;
		host |= span_is(h->name[i], "host");
		rc = strbuf_printf(&b, "%.*s: %.*s\r\n", (int)h->name[i].n, h->name[i].p,
				   (int)h->value[i].n, h->value[i].p ? h->value[i].p : "");
	}
	if (rc == 0 && !host)
		rc = strbuf_printf(&b, "Host: %.*s\r\n", (int)authority.n, authority.p);
	if (rc == 0)
		rc = strbuf_printf(&b, "Connection: close\r\n\r\n");
	if (rc != 0) {
		strbuf_free(&b);
		return -ENOMEM;
	}
	out->rewritten = strbuf_detach(&b, &out->rewritten_len);
	return out->rewritten ? 0 : -ENOMEM;
}

static int fail(char *why, size_t whylen, int status, const char *msg)
{
	snprintf(why, whylen, "%s", msg);
	return status;
}

int proxyreq_parse(const uint8_t *data, size_t n, struct proxyreq *out, char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	struct head h = { .base = (const char *)data };
	llhttp_t p;
	llhttp_init(&p, HTTP_REQUEST, &settings);
	p.data = &h;
	size_t take = n < PROXYREQ_MAX_HEAD ? n : PROXYREQ_MAX_HEAD;
	llhttp_errno_t e = llhttp_execute(&p, (const char *)data, take);
	if (h.too_many)
		return fail(why, whylen, 431, "too many header fields");
	if (e == HPE_OK && !h.complete) {
		if (take == PROXYREQ_MAX_HEAD)
			return fail(why, whylen, 431, "request head larger than 16 KiB");
		return -EAGAIN;
	}
	if (!h.complete || e != HPE_PAUSED) {
		snprintf(why, whylen, "malformed request: %s", llhttp_get_error_reason(&p));
		return 400;
	}
	out->head_len = (size_t)((const uint8_t *)llhttp_get_error_pos(&p) - data);
	if (p.http_major != 1)
		return fail(why, whylen, 505, "only HTTP/1.x requests are proxied");
	for (size_t i = 0; i < h.nh; i++)
		if (span_is(h.name[i], "proxy-authorization") && h.value[i].p)
			read_auth(h.value[i], out);

	if (p.method == HTTP_CONNECT) {
		out->kind = PROXYREQ_CONNECT;
		if (!proxyreq_split_authority(h.url.p, h.url.n, out->host, &out->port, 0))
			return fail(why, whylen, 400, "CONNECT needs host:port");
		return 0;
	}
	out->kind = PROXYREQ_ABSOLUTE;
	static const char scheme[] = "http://";
	if (h.url.n < sizeof(scheme) - 1 || strncasecmp(h.url.p, scheme, sizeof(scheme) - 1)) {
		if (h.url.n && h.url.p[0] == '/')
			return fail(why, whylen, 400,
				    "this is a proxy: requests name their server (absolute form), "
				    "or use CONNECT");
		return fail(why, whylen, 501, "only http:// URLs are proxied without CONNECT");
	}
	struct span auth = { h.url.p + sizeof(scheme) - 1, h.url.n - (sizeof(scheme) - 1) };
	struct span path = { "/", 1 };
	for (size_t i = 0; i < auth.n; i++)
		if (auth.p[i] == '/' || auth.p[i] == '?' || auth.p[i] == '#') {
			path.p = auth.p + i;
			path.n = auth.n - i;
			auth.n = i;
			break;
		}
	if (path.p[0] != '/') {
		/* "http://host?q": the origin form is "/?q". */
		if (path.p[0] == '#')
			path = (struct span){ "/", 1 };
		else
			return fail(why, whylen, 400, "a query needs a path: http://host/?q");
	}
	if (memchr(auth.p, '@', auth.n))
		return fail(why, whylen, 400, "credentials in the URL are not forwarded");
	if (!proxyreq_split_authority(auth.p, auth.n, out->host, &out->port, 80))
		return fail(why, whylen, 400, "malformed host in the URL");
	int rc = rewrite(&h, &p, path, auth, out);
	return rc;
}

void proxyreq_free(struct proxyreq *r)
{
	free(r->rewritten);
	r->rewritten = NULL;
	sodium_memzero(r->pass, sizeof(r->pass));
}
