/* An external authentication endpoint (authext.h). */
#include "listen/authext.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <llhttp.h>
#include <sodium.h>

#include "common/log.h"
#include "listen/target.h"
#include "mitm/upconn.h"

#define ANSWER_MAX 8192

struct entry {
	uint8_t key[crypto_generichash_BYTES];
	bool ok;
	uint64_t expires; /* 0: free */
};

struct authext {
	uv_loop_t *loop;
	struct tls_ctx *tls;
	char host[LISTEN_HOST_MAX + 1];
	uint16_t port;
	bool https;
	char path[512];
	char label[600]; /* the URL for logs */
	uint32_t ttl_ok, ttl_denied;
	uint8_t hash_key[crypto_generichash_KEYBYTES];
	struct entry cache[AUTHEXT_CACHE];
	struct authext_req *pending;
	unsigned npending;
	struct authext_stats st;
};

struct authext_req {
	struct authext *a;
	struct authext_req *prev, *next;
	struct upconn *u;
	uint8_t key[crypto_generichash_BYTES];
	void (*cb)(void *ctx, bool allowed);
	void *ctx;
	uint8_t in[ANSWER_MAX];
	size_t len;
};

static uint64_t now_s(const struct authext *a)
{
	return uv_now(a->loop) / 1000;
}

static struct entry *slot(struct authext *a, const uint8_t *key)
{
	uint32_t v;
	memcpy(&v, key, sizeof(v));
	return &a->cache[v % AUTHEXT_CACHE];
}

/* ---- one check ------------------------------------------------------------- */

static void req_unlink(struct authext_req *r)
{
	struct authext *a = r->a;
	if (r->prev)
		r->prev->next = r->next;
	else
		a->pending = r->next;
	if (r->next)
		r->next->prev = r->prev;
	a->npending--;
}

/* The verdict: cached, told, and the request let go. */
static void req_done(struct authext_req *r, bool ok, bool cache)
{
	struct authext *a = r->a;
	if (cache) {
		struct entry *e = slot(a, r->key);
		memcpy(e->key, r->key, sizeof(e->key));
		e->ok = ok;
		e->expires = now_s(a) + (ok ? a->ttl_ok : a->ttl_denied);
	}
	if (ok)
		a->st.allowed++;
	else
		a->st.denied++;
	req_unlink(r);
	upconn_close(r->u, false);
	void (*cb)(void *, bool) = r->cb;
	void *ctx = r->ctx;
	sodium_memzero(r, sizeof(*r));
	free(r);
	cb(ctx, ok);
}

static void req_failed(struct authext_req *r, const char *why)
{
	r->a->st.failed++;
	log_warn("--auth-url %s: %s; the credentials are refused", r->a->label, why);
	req_done(r, false, false); /* the endpoint's trouble is not cached */
}

static int on_headers_complete(llhttp_t *p)
{
	(void)p;
	return HPE_PAUSED;
}

static const llhttp_settings_t answer_settings = { .on_headers_complete = on_headers_complete };

int authext_parse_answer(const uint8_t *in, size_t n, int *status)
{
	llhttp_t h;
	llhttp_init(&h, HTTP_RESPONSE, &answer_settings);
	llhttp_errno_t e = llhttp_execute(&h, (const char *)in, n);
	if (e == HPE_OK)
		return 0;
	/* llhttp takes a status line without a code ("HTTP/1.0 \n") as 0. */
	if (e != HPE_PAUSED || h.status_code < 100 || h.status_code > 999)
		return -1;
	*status = h.status_code;
	return 1;
}

static void u_data(void *ctx, const uint8_t *p, size_t n)
{
	struct authext_req *r = ctx;
	if (n > sizeof(r->in) - r->len)
		n = sizeof(r->in) - r->len;
	memcpy(r->in + r->len, p, n);
	r->len += n;
	int status = 0;
	int rc = authext_parse_answer(r->in, r->len, &status);
	if (rc == 0) {
		if (r->len == sizeof(r->in))
			req_failed(r, "the answer's head is larger than 8 KiB");
		return;
	}
	if (rc < 0) {
		req_failed(r, "the answer is not HTTP");
		return;
	}
	if (status >= 200 && status <= 299) {
		req_done(r, true, true);
	} else if (status == 401 || status == 403) {
		req_done(r, false, true);
	} else {
		char why[64];
		snprintf(why, sizeof(why), "it answered %d", status);
		req_failed(r, why);
	}
}

static void u_ready(void *ctx, int err, const char *why)
{
	if (err)
		req_failed(ctx, why && why[0] ? why : "cannot connect");
}

static void u_eof(void *ctx)
{
	req_failed(ctx, "it closed the connection without an answer");
}

static void u_error(void *ctx, const char *why)
{
	req_failed(ctx, why && why[0] ? why : "connection failed");
}

static void u_drained(void *ctx)
{
	(void)ctx;
}

/* The endpoint is the user's choice: any address it resolves to. */
static int u_allow(void *ctx, const struct sockaddr *addr, struct sockaddr_storage *dial, char *why,
		   size_t whylen)
{
	(void)ctx;
	(void)why;
	(void)whylen;
	memset(dial, 0, sizeof(*dial));
	memcpy(dial, addr,
	       addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
	return 0;
}

static const struct upconn_ops req_ops = {
	.ready = u_ready,
	.data = u_data,
	.eof = u_eof,
	.error = u_error,
	.drained = u_drained,
	.allow = u_allow,
};

enum authext_verdict authext_check(struct authext *a, const char *user, const char *pass,
				   const char *via, const char *client,
				   void (*cb)(void *ctx, bool allowed), void *ctx,
				   struct authext_req **out)
{
	*out = NULL;
	a->st.checks++;
	uint8_t key[crypto_generichash_BYTES];
	crypto_generichash_state hs;
	crypto_generichash_init(&hs, a->hash_key, sizeof(a->hash_key), sizeof(key));
	crypto_generichash_update(&hs, (const uint8_t *)user, strlen(user) + 1);
	crypto_generichash_update(&hs, (const uint8_t *)pass, strlen(pass));
	crypto_generichash_final(&hs, key, sizeof(key));
	struct entry *e = slot(a, key);
	if (e->expires > now_s(a) && sodium_memcmp(e->key, key, sizeof(key)) == 0) {
		a->st.cache_hits++;
		return e->ok ? AUTHEXT_ALLOW : AUTHEXT_DENY;
	}
	if (a->npending >= AUTHEXT_MAX_PENDING) {
		a->st.busy++;
		return AUTHEXT_DENY;
	}
	struct authext_req *r = calloc(1, sizeof(*r));
	json_t *body = json_pack("{s:s,s:s,s:s,s:s}", "user", user, "password", pass, "via",
				 via ? via : "", "client", client ? client : "");
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	char head[1200];
	int hn = text ? snprintf(head, sizeof(head),
				 "POST %s HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: "
				 "application/json\r\n"
				 "Content-Length: %zu\r\nConnection: close\r\n"
				 "User-Agent: wgmitm\r\n\r\n",
				 a->path, a->host, a->port, strlen(text))
		      : -1;
	struct upconn_target t = { .host = a->host, .port = a->port, .tls = a->https };
	if (r && hn > 0 && (size_t)hn < sizeof(head))
		r->u = upconn_open(a->loop, a->tls, &t, &req_ops, r, AUTHEXT_TIMEOUT_MS);
	if (!r || !r->u || upconn_write(r->u, (const uint8_t *)head, (size_t)hn) < 0 ||
	    upconn_write(r->u, (const uint8_t *)text, strlen(text)) < 0) {
		if (text)
			sodium_memzero(text, strlen(text));
		free(text);
		if (r)
			upconn_close(r->u, false);
		free(r);
		a->st.failed++;
		return AUTHEXT_DENY;
	}
	sodium_memzero(text, strlen(text));
	free(text);
	memcpy(r->key, key, sizeof(key));
	r->a = a;
	r->cb = cb;
	r->ctx = ctx;
	r->next = a->pending;
	if (a->pending)
		a->pending->prev = r;
	a->pending = r;
	a->npending++;
	*out = r;
	return AUTHEXT_PENDING;
}

void authext_cancel(struct authext_req *r)
{
	if (!r)
		return;
	req_unlink(r);
	upconn_close(r->u, true);
	sodium_memzero(r, sizeof(*r));
	free(r);
}

/* ---- the endpoint ------------------------------------------------------------ */

struct authext *authext_new(uv_loop_t *loop, struct tls_ctx *tls, const char *url, uint32_t ttl_ok,
			    uint32_t ttl_denied, char *err, size_t errlen)
{
	struct authext *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->loop = loop;
	a->tls = tls;
	a->ttl_ok = ttl_ok;
	a->ttl_denied = ttl_denied;
	randombytes_buf(a->hash_key, sizeof(a->hash_key));
	const char *rest;
	if (strncmp(url, "https://", 8) == 0) {
		a->https = true;
		rest = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		rest = url + 7;
	} else {
		snprintf(err, errlen, "expected http:// or https://");
		free(a);
		return NULL;
	}
	/* HOST[:PORT], then the path. */
	const char *slash = strchr(rest, '/');
	size_t hn = slash ? (size_t)(slash - rest) : strlen(rest);
	struct listen_target t;
	memset(&t, 0, sizeof(t));
	if (listen_parse_hostport(rest, hn, a->https ? 443 : 80, &t) < 0) {
		snprintf(err, errlen, "the URL's host or port is not valid");
		free(a);
		return NULL;
	}
	memcpy(a->host, t.host, sizeof(a->host));
	a->port = t.port;
	const char *path = slash ? slash : "/";
	if (strlen(path) >= sizeof(a->path) || strpbrk(path, " \r\n")) {
		snprintf(err, errlen, "the URL's path is not valid");
		free(a);
		return NULL;
	}
	snprintf(a->path, sizeof(a->path), "%s", path);
	if (a->https && !tls) {
		snprintf(err, errlen, "https needs TLS, which is off");
		free(a);
		return NULL;
	}
	snprintf(a->label, sizeof(a->label), "%s", url);
	return a;
}

void authext_free(struct authext *a)
{
	if (!a)
		return;
	while (a->pending)
		authext_cancel(a->pending);
	sodium_memzero(a->cache, sizeof(a->cache));
	free(a);
}

void authext_get_stats(const struct authext *a, struct authext_stats *out)
{
	*out = a->st;
}
