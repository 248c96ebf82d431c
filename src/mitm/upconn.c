/* An upstream stream of our own (upconn.h): resolve, check, dial, TLS. */
#include "mitm/upconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/strbuf.h"
#include "flows/flowlog.h"
#include "mitm/tls.h"

#define UPCONN_READ_SIZE 16384
#define WHY_LEN 400

/* Messages are cut where they must be: a name may be long. */
__attribute__((format(printf, 3, 4))) static void fmt(char *out, size_t n, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	(void)vsnprintf(out, n, f, ap);
	va_end(ap);
}

enum up_state { UP_RESOLVING, UP_CONNECTING, UP_HANDSHAKE, UP_OPEN, UP_DEAD };

struct upconn_write {
	uv_write_t req;
	struct upconn *u;
	size_t len;
	uint8_t data[];
};

struct upconn {
	uv_loop_t *loop;
	struct upconn_ops ops;
	void *ctx;
	enum up_state state;
	bool tls_on, closed, reading, paused, shut, eof;
	char host[256];
	char sni[256]; /* "" : none */
	uint16_t port;
	uint8_t alpn[64];
	size_t alpn_len;
	char peer[FLOWLOG_ADDR_LEN];
	struct tls_ctx *tls;
	struct tls_leg leg;
	bool leg_init;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_getaddrinfo_t gai;
	uv_connect_t conn;
	bool tcp_init, gai_busy;
	unsigned handles;    /* open uv handles */
	struct strbuf early; /* plaintext written before the stream was up */
	size_t queued;
	uint8_t rbuf[UPCONN_READ_SIZE];
	uint8_t pbuf[UPCONN_READ_SIZE];
};

static void up_free_maybe(struct upconn *u)
{
	if (u->closed && u->handles == 0 && !u->gai_busy) {
		if (u->leg_init)
			tls_leg_free(&u->leg);
		strbuf_free(&u->early);
		free(u);
	}
}

static void up_handle_closed(uv_handle_t *h)
{
	struct upconn *u = h->data;
	u->handles--;
	up_free_maybe(u);
}

static void up_close_handles(struct upconn *u, bool reset)
{
	if (u->tcp_init && !uv_is_closing((uv_handle_t *)&u->tcp)) {
		if (reset && u->state != UP_RESOLVING && u->state != UP_CONNECTING)
			uv_tcp_close_reset(&u->tcp, up_handle_closed);
		else
			uv_close((uv_handle_t *)&u->tcp, up_handle_closed);
	}
	if (!uv_is_closing((uv_handle_t *)&u->timer))
		uv_close((uv_handle_t *)&u->timer, up_handle_closed);
}

/* The stream is dead: one callback says why, then only close remains. */
static void up_fail(struct upconn *u, int err, const char *why)
{
	enum up_state was = u->state;
	if (was == UP_DEAD)
		return;
	u->state = UP_DEAD;
	if (u->reading) {
		uv_read_stop((uv_stream_t *)&u->tcp);
		u->reading = false;
	}
	uv_timer_stop(&u->timer);
	if (was == UP_OPEN)
		u->ops.error(u->ctx, why);
	else
		u->ops.ready(u->ctx, err, why);
}

static void up_on_write(uv_write_t *req, int status)
{
	struct upconn_write *w = req->data;
	struct upconn *u = w->u;
	size_t before = u->queued;
	u->queued -= w->len;
	free(w);
	if (u->closed || u->state == UP_DEAD)
		return;
	if (status < 0) {
		char why[WHY_LEN];
		fmt(why, sizeof(why), "write to %s: %s", u->peer, uv_strerror(status));
		up_fail(u, status, why);
		return;
	}
	if (before >= UPCONN_MAX_QUEUED / 2 && u->queued < UPCONN_MAX_QUEUED / 2 && u->ops.drained)
		u->ops.drained(u->ctx);
}

static int up_send(struct upconn *u, const uint8_t *p, size_t n)
{
	size_t done = 0;
	if (u->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
		int r = uv_try_write((uv_stream_t *)&u->tcp, &b, 1);
		if (r >= 0)
			done = (size_t)r;
		else if (r != UV_EAGAIN)
			return r;
	}
	if (done == n)
		return 0;
	struct upconn_write *w = malloc(sizeof(*w) + n - done);
	if (!w)
		return -ENOMEM;
	w->u = u;
	w->len = n - done;
	w->req.data = w;
	memcpy(w->data, p + done, w->len);
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
	int r = uv_write(&w->req, (uv_stream_t *)&u->tcp, &b, 1, up_on_write);
	if (r < 0) {
		free(w);
		return r;
	}
	u->queued += w->len;
	return 0;
}

/* What the TLS leg made goes to the socket. */
static int up_flush_leg(struct upconn *u)
{
	const uint8_t *p;
	size_t n;
	while ((n = tls_leg_out(&u->leg, &p)) > 0) {
		int r = up_send(u, p, n);
		tls_leg_consume(&u->leg, n);
		if (r < 0)
			return r;
	}
	return 0;
}

static int up_write_now(struct upconn *u, const uint8_t *p, size_t n)
{
	if (!u->tls_on)
		return up_send(u, p, n);
	if (tls_leg_write(&u->leg, p, n) != TLS_OK)
		return -EPROTO;
	return up_flush_leg(u);
}

static void up_fail_io(struct upconn *u, int rc, const char *what)
{
	char why[WHY_LEN];
	if (rc == -EPROTO && u->leg_init) {
		char e[128];
		tls_leg_error(&u->leg, e, sizeof(e));
		fmt(why, sizeof(why), "%s %s: TLS: %s", what, u->peer, e);
	} else {
		fmt(why, sizeof(why), "%s %s: %s", what, u->peer,
		    rc == -ENOMEM ? "out of memory" : uv_strerror(rc));
	}
	up_fail(u, rc, why);
}

static void up_opened(struct upconn *u)
{
	u->state = UP_OPEN;
	uv_timer_stop(&u->timer);
	if (u->early.len) {
		int rc = up_write_now(u, (const uint8_t *)u->early.p, u->early.len);
		strbuf_free(&u->early);
		if (rc < 0) {
			up_fail_io(u, rc, "write to");
			return;
		}
	}
	u->ops.ready(u->ctx, 0, NULL);
}

static void up_tls_data(struct upconn *u)
{
	if (u->state == UP_HANDSHAKE) {
		enum tls_result hs = tls_leg_handshake(&u->leg);
		int rc = up_flush_leg(u);
		if (rc < 0) {
			up_fail_io(u, rc, "write to");
			return;
		}
		if (hs == TLS_WANT)
			return;
		char why[WHY_LEN], e[160];
		if (hs == TLS_ERROR) {
			tls_leg_error(&u->leg, e, sizeof(e));
			fmt(why, sizeof(why), "TLS with %s: %s", u->peer, e);
			up_fail(u, -EPROTO, why);
			return;
		}
		if (tls_leg_verify(&u->leg, e, sizeof(e)) < 0) {
			fmt(why, sizeof(why), "certificate of %s: %s", u->host, e);
			up_fail(u, -EPROTO, why);
			return;
		}
		up_opened(u);
		if (u->state != UP_OPEN || u->closed)
			return;
	}
	while (u->state == UP_OPEN && !u->closed && !u->paused) {
		size_t n = 0;
		enum tls_result r = tls_leg_read(&u->leg, u->pbuf, sizeof(u->pbuf), &n);
		int rc = up_flush_leg(u);
		if (rc < 0) {
			up_fail_io(u, rc, "write to");
			return;
		}
		if (r == TLS_WANT)
			return;
		if (r == TLS_CLOSED) {
			if (!u->eof) {
				u->eof = true;
				u->ops.eof(u->ctx);
			}
			return;
		}
		if (r == TLS_ERROR) {
			up_fail_io(u, -EPROTO, "read from");
			return;
		}
		u->ops.data(u->ctx, u->pbuf, n);
	}
}

static void up_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct upconn *u = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)u->rbuf, sizeof(u->rbuf));
}

static void up_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct upconn *u = s->data;
	if (u->closed || u->state == UP_DEAD || nread == 0)
		return;
	if (nread == UV_EOF) {
		uv_read_stop(s);
		u->reading = false;
		if (u->state == UP_HANDSHAKE) {
			char why[WHY_LEN];
			fmt(why, sizeof(why), "%s closed during the TLS handshake", u->peer);
			up_fail(u, -ECONNRESET, why);
		} else if (!u->eof) {
			u->eof = true;
			u->ops.eof(u->ctx);
		}
		return;
	}
	if (nread < 0) {
		up_fail_io(u, (int)nread, "read from");
		return;
	}
	if (!u->tls_on) {
		u->ops.data(u->ctx, (const uint8_t *)buf->base, (size_t)nread);
		return;
	}
	if (tls_leg_feed(&u->leg, (const uint8_t *)buf->base, (size_t)nread) < 0) {
		up_fail(u, -ENOMEM, "out of memory");
		return;
	}
	up_tls_data(u);
}

static void up_read_on(struct upconn *u)
{
	if (u->reading || u->paused || u->eof || u->closed ||
	    (u->state != UP_OPEN && u->state != UP_HANDSHAKE))
		return;
	if (uv_read_start((uv_stream_t *)&u->tcp, up_on_alloc, up_on_read) == 0)
		u->reading = true;
}

static void up_on_connect(uv_connect_t *req, int status)
{
	struct upconn *u = req->data;
	if (u->closed || u->state == UP_DEAD)
		return;
	if (status < 0) {
		char why[WHY_LEN];
		fmt(why, sizeof(why), "connect to %s: %s", u->peer, uv_strerror(status));
		up_fail(u, status, why);
		return;
	}
	if (!u->tls_on) {
		up_opened(u);
		up_read_on(u);
		return;
	}
	u->state = UP_HANDSHAKE;
	up_read_on(u);
	up_tls_data(u); /* the ClientHello */
}

static void up_dial(struct upconn *u, const struct sockaddr *addr)
{
	struct sockaddr_storage dial;
	char why[WHY_LEN];
	char ip[INET6_ADDRSTRLEN];
	unsigned port = 0;
	(void)flowlog_format_ip(addr, ip, &port);
	fmt(u->peer, sizeof(u->peer), addr->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
	if (u->ops.allow && u->ops.allow(u->ctx, addr, &dial, why, sizeof(why)) < 0) {
		char msg[WHY_LEN];
		fmt(msg, sizeof(msg), "%s (%s): %s", u->host, u->peer, why);
		up_fail(u, -EACCES, msg);
		return;
	}
	if (!u->ops.allow)
		memcpy(&dial, addr,
		       addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						   : sizeof(struct sockaddr_in));
	if (u->tls_on) {
		if (tls_leg_upstream(u->tls, &u->leg, u->sni[0] ? u->sni : NULL,
				     (const struct sockaddr *)&dial, u->alpn, u->alpn_len) < 0) {
			up_fail(u, -ENOMEM, "out of memory");
			return;
		}
		u->leg_init = true;
	}
	int rc = uv_tcp_init(u->loop, &u->tcp);
	if (rc < 0) {
		up_fail_io(u, rc, "socket for");
		return;
	}
	u->tcp_init = true;
	u->handles++;
	u->tcp.data = u;
	u->conn.data = u;
	u->state = UP_CONNECTING;
	rc = uv_tcp_connect(&u->conn, &u->tcp, (const struct sockaddr *)&dial, up_on_connect);
	if (rc < 0)
		up_fail_io(u, rc, "connect to");
}

static void up_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct upconn *u = req->data;
	u->gai_busy = false;
	if (u->closed) {
		uv_freeaddrinfo(res);
		up_free_maybe(u);
		return;
	}
	if (status < 0 || !res) {
		char why[WHY_LEN];
		fmt(why, sizeof(why), "resolve %s: %s", u->host,
		    status < 0 ? uv_strerror(status) : "no address");
		uv_freeaddrinfo(res);
		up_fail(u, status < 0 ? status : -ENOENT, why);
		return;
	}
	up_dial(u, res->ai_addr);
	uv_freeaddrinfo(res);
}

static void up_on_timeout(uv_timer_t *t)
{
	struct upconn *u = t->data;
	char why[WHY_LEN];
	fmt(why, sizeof(why), "%s:%u did not answer in time (%s)", u->host, u->port,
	    u->state == UP_RESOLVING    ? "resolving"
	    : u->state == UP_CONNECTING ? "connecting"
					: "TLS handshake");
	up_fail(u, -ETIMEDOUT, why);
}

struct upconn *upconn_open(uv_loop_t *loop, struct tls_ctx *tls, const struct upconn_target *t,
			   const struct upconn_ops *ops, void *ctx, uint32_t timeout_ms)
{
	size_t hl = t->host ? strlen(t->host) : 0;
	if (hl == 0 || hl >= sizeof(((struct upconn *)0)->host) || t->port == 0 ||
	    (t->sni && strlen(t->sni) >= sizeof(((struct upconn *)0)->sni)) ||
	    t->alpn_len > sizeof(((struct upconn *)0)->alpn) || (t->tls && !tls)) {
		errno = EINVAL;
		return NULL;
	}
	struct upconn *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->loop = loop;
	u->ops = *ops;
	u->ctx = ctx;
	u->tls = tls;
	u->tls_on = t->tls;
	memcpy(u->host, t->host, hl + 1);
	u->port = t->port;
	/* An IP literal is verified as an IP, and sent as no SNI. */
	unsigned char tmp[16];
	bool literal =
		inet_pton(AF_INET, u->host, tmp) == 1 || inet_pton(AF_INET6, u->host, tmp) == 1;
	snprintf(u->sni, sizeof(u->sni), "%s", t->sni ? t->sni : literal ? "" : u->host);
	if (t->alpn_len)
		memcpy(u->alpn, t->alpn, t->alpn_len);
	u->alpn_len = t->alpn_len;
	strbuf_init(&u->early, UPCONN_MAX_QUEUED);
	fmt(u->peer, sizeof(u->peer), "%s:%u", u->host, u->port);
	uv_timer_init(loop, &u->timer);
	u->timer.data = u;
	u->handles = 1;
	uv_timer_start(&u->timer, up_on_timeout, timeout_ms, 0);
	/* getaddrinfo runs in libuv's thread pool and calls back on the loop,
	 * literals included: one path for both. */
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	char port[8];
	snprintf(port, sizeof(port), "%u", t->port);
	u->gai.data = u;
	u->state = UP_RESOLVING;
	int rc = uv_getaddrinfo(loop, &u->gai, up_on_resolved, u->host, port, &hints);
	if (rc < 0) {
		u->closed = true;
		uv_close((uv_handle_t *)&u->timer, up_handle_closed);
		errno = -rc;
		return NULL;
	}
	u->gai_busy = true;
	return u;
}

int upconn_write(struct upconn *u, const uint8_t *p, size_t n)
{
	if (u->closed || u->state == UP_DEAD || u->shut)
		return -EPIPE;
	if (n == 0)
		return 0;
	if (u->state != UP_OPEN)
		return strbuf_append(&u->early, p, n);
	int rc = up_write_now(u, p, n);
	if (rc < 0)
		up_fail_io(u, rc, "write to");
	return rc < 0 ? -EPIPE : 0;
}

size_t upconn_queued(const struct upconn *u)
{
	return u->queued + u->early.len;
}

void upconn_pause(struct upconn *u)
{
	u->paused = true;
	if (u->reading) {
		uv_read_stop((uv_stream_t *)&u->tcp);
		u->reading = false;
	}
}

void upconn_resume(struct upconn *u)
{
	if (!u->paused)
		return;
	u->paused = false;
	if (u->state == UP_OPEN && u->tls_on && !u->closed)
		up_tls_data(u); /* plaintext left in the leg */
	if (!u->closed && u->state != UP_DEAD)
		up_read_on(u);
}

static void up_on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	free(req);
}

void upconn_shutdown(struct upconn *u)
{
	if (u->shut || u->closed || u->state != UP_OPEN)
		return;
	u->shut = true;
	if (u->tls_on) {
		tls_leg_close_notify(&u->leg);
		(void)up_flush_leg(u);
	}
	uv_shutdown_t *req = malloc(sizeof(*req));
	if (req && uv_shutdown(req, (uv_stream_t *)&u->tcp, up_on_shutdown) < 0)
		free(req);
}

void upconn_close(struct upconn *u, bool reset)
{
	if (!u || u->closed)
		return;
	u->closed = true;
	if (u->gai_busy)
		(void)uv_cancel((uv_req_t *)&u->gai);
	up_close_handles(u, reset);
}

bool upconn_matches(const struct upconn *u, const struct upconn_target *t)
{
	return u->state != UP_DEAD && !u->closed && !u->shut && !u->eof && u->tls_on == t->tls &&
	       u->port == t->port && strcasecmp(u->host, t->host) == 0;
}

json_t *upconn_tls_json(const struct upconn *u)
{
	if (!u->leg_init)
		return NULL;
	json_t *o = tls_leg_json(&u->leg);
	json_t *cert = tls_leg_cert_json(&u->leg);
	if (o && cert)
		json_object_set_new(o, "cert", cert);
	else
		json_decref(cert);
	return o;
}

const char *upconn_peer(const struct upconn *u)
{
	return u->peer;
}
