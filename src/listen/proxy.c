/* HTTP proxy and SOCKS5 listeners (proxy.h).
 *
 * A connection's way: FIRST (one byte says which protocol) → HTTP (the
 * request head) or SOCKS_GREET → SOCKS_AUTH → SOCKS_REQ → RESOLVE (a name:
 * uv_getaddrinfo) → handed to the relay. Until then the connection is a
 * `pconn` here, with a timer for the whole exchange; afterwards only its
 * stream lives on, the relay's, and the listener counts it until its
 * socket is closed (sockstream_on_free). A UDP ASSOCIATE hands the stream
 * to an association (socksudp.h) instead, which holds it as its control
 * connection. */
#include "listen/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "flows/flowlog.h"
#include "listen/authext.h"
#include "listen/proxyreq.h"
#include "listen/sockstream.h"
#include "listen/socks5.h"
#include "listen/socksudp.h"
#include "listen/target.h"
#include "listen/users.h"
#include "mitm/relay.h"

struct proxy {
	uv_loop_t *loop;
	uv_tcp_t srv;
	struct proxy_config cfg;
	struct listen_target target;     /* cfg.target points here */
	struct socks_udp_config udp_cfg; /* cfg.udp points here */
	struct socks_udp *udp;           /* the UDP associations; NULL: none */
	struct proxy_stats st;
	struct pconn *conns;
	size_t live; /* pconns not yet freed: released ones wait for their timer */
	bool srv_closed, freed;
};

enum pstate {
	PS_FIRST,
	PS_HTTP,
	PS_SOCKS_GREET,
	PS_SOCKS_AUTH,
	PS_SOCKS_REQ,
	PS_AUTH_WAIT, /* the external endpoint is asked (authreq) */
	PS_RESOLVE
};

struct pconn {
	struct proxy *p;
	struct pconn *prev, *next;
	struct stream *s; /* NULL once gone or handed on */
	struct sockstream *ss;
	uv_timer_t timer;
	uv_getaddrinfo_t gai;
	bool resolving, released, timer_closed, over_limit;
	enum pstate st;
	struct proxyreq req;
	bool have_req;
	struct socks5_req sreq;
	char user[256];
	bool authed;
	struct authext_req *authreq; /* PS_AUTH_WAIT */
	bool auth_socks;             /* PS_AUTH_WAIT: for SOCKS5 (else HTTP) */
	size_t auth_len;             /* PS_AUTH_WAIT, SOCKS5: the message's bytes */
	struct sockaddr_storage client;
	size_t len;
	uint8_t buf[PROXYREQ_MAX_HEAD];
};

static void proxy_free_now(struct proxy *p)
{
	if (p->freed && p->srv_closed && !p->conns && !p->live && p->st.open == 0)
		free(p);
}

static void pconn_free(struct pconn *c)
{
	struct proxy *p = c->p;
	free(c);
	p->live--;
	proxy_free_now(p);
}

static void pconn_on_timer_closed(uv_handle_t *h)
{
	struct pconn *c = h->data;
	c->timer_closed = true;
	if (c->resolving)
		return; /* the resolver's callback frees it */
	pconn_free(c);
}

/* Done with the exchange: the stream was handed on, is gone, or is closed
 * here (FIN after what was written). */
static void pconn_release(struct pconn *c)
{
	if (c->released)
		return;
	c->released = true;
	struct proxy *p = c->p;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	if (c->s) {
		stream_close(c->s);
		c->s = NULL;
	}
	if (c->have_req)
		proxyreq_free(&c->req);
	authext_cancel(c->authreq);
	c->authreq = NULL;
	memset(c->user, 0, sizeof(c->user));
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, pconn_on_timer_closed);
}

static void answer(struct stream *s, const void *data, size_t n)
{
	(void)stream_write(s, data, n); /* far below the send buffer */
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 407:
		return "Proxy Authentication Required";
	case 408:
		return "Request Timeout";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

static void answer_http(struct stream *s, int status, const char *why)
{
	char body[512], head[1024];
	int bl = snprintf(body, sizeof(body), "wgmitm: %s\n", why);
	if (bl < 0 || (size_t)bl >= sizeof(body))
		bl = (int)sizeof(body) - 1;
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: %d\r\nConnection: close\r\n%s\r\n",
			  status, reason_phrase(status), bl,
			  status == 407 ? "Proxy-Authenticate: Basic realm=\"wgmitm\"\r\n" : "");
	answer(s, head, (size_t)hl);
	answer(s, body, (size_t)bl);
}

static void answer_socks(struct stream *s, uint8_t rep)
{
	uint8_t r[22];
	answer(s, r, socks5_reply(r, rep, NULL));
}

static void pconn_http_error(struct pconn *c, int status, const char *why)
{
	answer_http(c->s, status, why);
	pconn_release(c);
}

/* ---- after the dial ------------------------------------------------------ */

static void connect_dialled(void *ctx, struct stream *s, int err, const char *why)
{
	(void)ctx;
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	if (err == 0)
		answer(s, ok, sizeof(ok) - 1);
	else
		answer_http(s, 502, why && why[0] ? why : uv_strerror(err));
}

static void plain_dialled(void *ctx, struct stream *s, int err, const char *why)
{
	(void)ctx;
	if (err != 0)
		answer_http(s, 502, why && why[0] ? why : uv_strerror(err));
}

static void socks_dialled(void *ctx, struct stream *s, int err, const char *why)
{
	(void)ctx;
	(void)why;
	answer_socks(s, err == 0 ? SOCKS5_OK : socks5_rep_for(err));
}

/* ---- hand on ------------------------------------------------------------- */

/* The record of a connection that ends here, before the relay. */
static void pconn_record(struct pconn *c, const char *reason, const char *error)
{
	struct proxy *p = c->p;
	bool socks = c->sreq.cmd != 0;
	struct relay_origin o = {
		.via = p->cfg.target ? p->target.via
		       : socks       ? "socks5"
				     : "http-proxy",
		.user = c->authed ? c->user : NULL,
		.peer = p->cfg.peer,
	};
	relay_record_listener_failure(p->cfg.relay, (const struct sockaddr *)&c->client, NULL, &o,
				      reason, error);
}

static void pconn_refused(struct pconn *c, struct stream *s, int rc)
{
	struct proxy *p = c->p;
	const char *why = rc == -ECONNREFUSED ? "the destination is not allowed (policy)"
			  : rc == -EMFILE     ? "too many connections"
					      : "the connection could not be relayed";
	if (rc == -ECONNREFUSED)
		p->st.refused_policy++;
	else
		p->st.refused_limit++;
	if (p->cfg.target)
		stream_abort(s); /* as the tunnel's refusals */
	else if (c->sreq.cmd)
		answer_socks(s, rc == -ECONNREFUSED ? SOCKS5_NOT_ALLOWED : SOCKS5_FAILURE);
	else
		answer_http(s, rc == -ECONNREFUSED ? 403 : 503, why);
	stream_close(s);
}

static void pconn_hand(struct pconn *c, const struct sockaddr *dest)
{
	struct proxy *p = c->p;
	bool socks = c->sreq.cmd != 0;
	struct relay_origin o = {
		.via = socks ? "socks5" : "http-proxy",
		.user = c->authed ? c->user : NULL,
		.host = p->cfg.target ? p->target.host
			: socks       ? c->sreq.host
				      : c->req.host,
		.peer = p->cfg.peer,
	};
	int rc = 0;
	if (socks) {
		o.dialled = socks_dialled;
		rc = sockstream_unread(c->ss, c->buf, c->len);
	} else if (c->req.kind == PROXYREQ_CONNECT) {
		o.dialled = connect_dialled;
		rc = sockstream_unread(c->ss, c->buf + c->req.head_len, c->len - c->req.head_len);
	} else {
		o.dialled = plain_dialled;
		rc = sockstream_unread(c->ss, (const uint8_t *)c->req.rewritten,
				       c->req.rewritten_len);
		if (rc == 0)
			rc = sockstream_unread(c->ss, c->buf + c->req.head_len,
					       c->len - c->req.head_len);
	}
	struct relay_shape shape;
	if (p->cfg.target) {
		shape = p->target.shape;
		shape.name = p->target.host;
		shape.authority = p->target.authority[0] ? p->target.authority : NULL;
		o.via = p->target.via;
		o.shape = &shape;
		o.dialled = NULL; /* a failure resets the client, as the tunnel's */
	}
	struct stream *s = c->s;
	if (rc != 0) {
		pconn_release(c);
		return;
	}
	static const struct stream_cb none = { 0 };
	stream_set_cb(s, &none, NULL);
	c->s = NULL;
	rc = relay_stream_accept(p->cfg.relay, s, (const struct sockaddr *)&c->client, dest, &o);
	if (rc != 0)
		pconn_refused(c, s, rc);
	else
		p->st.handed++;
	pconn_release(c);
}

static void pconn_fail_resolve(struct pconn *c, int status)
{
	c->p->st.resolve_failed++;
	char e[300];
	snprintf(e, sizeof(e), "cannot resolve %s: %s",
		 c->p->cfg.target ? c->p->target.host
		 : c->sreq.cmd    ? c->sreq.host
				  : c->req.host,
		 uv_strerror(status));
	pconn_record(c, "upstream_unresolved", e);
	if (c->p->cfg.target) {
		log_warn("%s %s: cannot resolve %s: %s", c->p->target.via, c->p->target.host,
			 c->p->target.host, uv_strerror(status));
		stream_abort(c->s);
		c->s = NULL;
		pconn_release(c);
		return;
	}
	const char *host = c->sreq.cmd ? c->sreq.host : c->req.host;
	if (c->sreq.cmd) {
		answer_socks(c->s, SOCKS5_HOST_UNREACHABLE);
		pconn_release(c);
		return;
	}
	char why[400];
	snprintf(why, sizeof(why), "cannot resolve %s: %s", host, uv_strerror(status));
	pconn_http_error(c, 502, why);
}

static void pconn_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct pconn *c = req->data;
	c->resolving = false;
	if (c->released || !c->s) {
		uv_freeaddrinfo(res);
		if (!c->released) {
			pconn_release(c);
		} else if (c->timer_closed) {
			pconn_free(c);
		}
		return;
	}
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		pconn_fail_resolve(c, status < 0 ? status : UV_EAI_NONAME);
		return;
	}
	struct sockaddr_storage dest;
	memset(&dest, 0, sizeof(dest));
	memcpy(&dest, res->ai_addr, res->ai_addrlen);
	uv_freeaddrinfo(res);
	uint16_t port = c->p->cfg.target ? c->p->target.port
			: c->sreq.cmd    ? c->sreq.port
					 : c->req.port;
	if (dest.ss_family == AF_INET)
		((struct sockaddr_in *)&dest)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&dest)->sin6_port = htons(port);
	pconn_hand(c, (const struct sockaddr *)&dest);
}

/* An address is used as it is; a name goes to the resolver. */
static void pconn_resolve(struct pconn *c, const char *host, uint16_t port)
{
	struct sockaddr_storage dest;
	memset(&dest, 0, sizeof(dest));
	struct sockaddr_in *v4 = (struct sockaddr_in *)&dest;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&dest;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		pconn_hand(c, (const struct sockaddr *)&dest);
		return;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		pconn_hand(c, (const struct sockaddr *)&dest);
		return;
	}
	stream_pause(c->s);
	c->st = PS_RESOLVE;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	c->gai.data = c;
	int rc = uv_getaddrinfo(c->p->loop, &c->gai, pconn_on_resolved, host, NULL, &hints);
	if (rc < 0) {
		pconn_fail_resolve(c, rc);
		return;
	}
	c->resolving = true;
}

/* ---- the exchanges -------------------------------------------------------- */

static void consume(struct pconn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

static bool needs_auth(const struct proxy *p)
{
	return p->cfg.users || p->cfg.auth;
}

enum auth_result { AUTH_NO, AUTH_OK, AUTH_WAIT };

static void pconn_auth_done(void *ctx, bool ok);

/* The users file decides for the users it names; the external endpoint,
 * when there is one, for the others (maybe later: AUTH_WAIT, the client
 * paused, pconn_auth_done goes on). */
static enum auth_result authenticate(struct pconn *c, const char *user, const char *pass,
				     bool socks, size_t socks_len)
{
	struct proxy *p = c->p;
	const struct users *u = p->cfg.users;
	if (!needs_auth(p))
		return AUTH_OK;
	bool ok;
	if (u && (users_has(u, user) || !p->cfg.auth)) {
		ok = users_check(u, user, pass);
	} else {
		char client[INET6_ADDRSTRLEN] = "";
		unsigned port;
		(void)flowlog_format_ip((const struct sockaddr *)&c->client, client, &port);
		enum authext_verdict v =
			authext_check(p->cfg.auth, user, pass, socks ? "socks5" : "http-proxy",
				      client, pconn_auth_done, c, &c->authreq);
		if (v == AUTHEXT_PENDING) {
			snprintf(c->user, sizeof(c->user), "%s", user);
			c->st = PS_AUTH_WAIT;
			c->auth_socks = socks;
			c->auth_len = socks_len;
			stream_pause(c->s);
			return AUTH_WAIT;
		}
		ok = v == AUTHEXT_ALLOW;
	}
	if (!ok) {
		p->st.auth_failed++;
		return AUTH_NO;
	}
	snprintf(c->user, sizeof(c->user), "%s", user);
	c->authed = true;
	return AUTH_OK;
}

static bool pconn_socks(struct pconn *c);

/* The external endpoint's verdict: the exchange goes on where it waited. */
static void pconn_auth_done(void *ctx, bool ok)
{
	struct pconn *c = ctx;
	c->authreq = NULL;
	if (!c->s) {
		pconn_release(c);
		return;
	}
	if (!ok) {
		c->p->st.auth_failed++;
		memset(c->user, 0, sizeof(c->user));
		if (c->auth_socks) {
			answer(c->s, (uint8_t[]){ 1, 1 }, 2);
			pconn_release(c);
		} else {
			pconn_http_error(c, 407, "wrong user or password");
		}
		return;
	}
	c->authed = true;
	if (!c->auth_socks) {
		pconn_resolve(c, c->req.host, c->req.port);
		return;
	}
	answer(c->s, (uint8_t[]){ 1, 0 }, 2);
	consume(c, c->auth_len);
	c->st = PS_SOCKS_REQ;
	stream_resume(c->s);
	(void)pconn_socks(c);
}

/* false: the connection was let go. */
static bool pconn_http(struct pconn *c)
{
	char why[200];
	int rc = proxyreq_parse(c->buf, c->len, &c->req, why, sizeof(why));
	if (rc == -EAGAIN)
		return true;
	if (rc == -ENOMEM) {
		pconn_http_error(c, 503, "out of memory");
		return false;
	}
	if (rc != 0) {
		c->p->st.bad_request++;
		pconn_http_error(c, rc, why);
		return false;
	}
	c->have_req = true;
	if (c->over_limit) {
		c->p->st.refused_limit++;
		pconn_record(c, "limit:listener_connections", NULL);
		pconn_http_error(c, 503, "too many connections to this listener");
		return false;
	}
	if (needs_auth(c->p)) {
		enum auth_result ar = c->req.has_auth
					      ? authenticate(c, c->req.user, c->req.pass, false, 0)
					      : AUTH_NO;
		if (ar == AUTH_WAIT)
			return false;
		if (ar == AUTH_NO) {
			pconn_http_error(c, 407,
					 c->req.has_auth ? "wrong user or password"
							 : "credentials needed");
			return false;
		}
	}
	pconn_resolve(c, c->req.host, c->req.port);
	return false;
}

/* UDP ASSOCIATE: the association takes the connection, or the client
 * hears "general failure" (the limit, no socket). */
static void pconn_associate(struct pconn *c)
{
	struct proxy *p = c->p;
	struct sockaddr_storage local;
	int rc = c->over_limit ? -EMFILE : sockstream_local(c->ss, &local);
	if (rc == 0)
		rc = socks_udp_associate(p->udp, c->s, (const struct sockaddr *)&c->client,
					 (const struct sockaddr *)&local, c->sreq.port,
					 c->authed ? c->user : NULL);
	if (rc != 0) {
		if (rc == -EMFILE)
			p->st.refused_limit++;
		answer_socks(c->s, SOCKS5_FAILURE);
	} else {
		p->st.udp_associations++;
		c->s = NULL; /* the association's */
	}
	pconn_release(c);
}

static bool pconn_socks(struct pconn *c)
{
	struct proxy *p = c->p;
	for (;;) {
		int n;
		if (c->st == PS_SOCKS_GREET) {
			bool none, userpass;
			n = socks5_parse_greeting(c->buf, c->len, &none, &userpass);
			if (n == 0)
				return true;
			uint8_t m = SOCKS5_NO_METHOD;
			if (n > 0 && !c->over_limit)
				m = needs_auth(p) ? (userpass ? SOCKS5_USERPASS : SOCKS5_NO_METHOD)
						  : (none ? SOCKS5_NO_AUTH : SOCKS5_NO_METHOD);
			if (n < 0 || m == SOCKS5_NO_METHOD) {
				if (n < 0)
					p->st.bad_request++;
				else if (c->over_limit) {
					p->st.refused_limit++;
					pconn_record(c, "limit:listener_connections", NULL);
				} else
					p->st.auth_failed++;
				if (n > 0)
					answer(c->s, (uint8_t[]){ SOCKS5_VERSION, m }, 2);
				pconn_release(c);
				return false;
			}
			answer(c->s, (uint8_t[]){ SOCKS5_VERSION, m }, 2);
			consume(c, (size_t)n);
			c->st = m == SOCKS5_USERPASS ? PS_SOCKS_AUTH : PS_SOCKS_REQ;
		} else if (c->st == PS_SOCKS_AUTH) {
			char user[256], pass[256];
			n = socks5_parse_userpass(c->buf, c->len, user, pass);
			if (n == 0)
				return true;
			enum auth_result ar =
				n > 0 ? authenticate(c, user, pass, true, (size_t)n) : AUTH_NO;
			memset(pass, 0, sizeof(pass));
			if (ar == AUTH_WAIT)
				return false;
			bool ok = ar == AUTH_OK;
			if (n < 0)
				p->st.bad_request++;
			answer(c->s, (uint8_t[]){ 1, ok ? 0 : 1 }, 2);
			if (!ok) {
				pconn_release(c);
				return false;
			}
			consume(c, (size_t)n);
			c->st = PS_SOCKS_REQ;
		} else {
			uint8_t rep;
			n = socks5_parse_request(c->buf, c->len, &c->sreq, &rep);
			if (n == 0)
				return true;
			if (n > 0 && c->sreq.cmd == SOCKS5_UDP_ASSOCIATE && p->udp) {
				pconn_associate(c);
				return false;
			}
			if (n < 0 || c->sreq.cmd != SOCKS5_CONNECT) {
				p->st.bad_request++;
				answer_socks(c->s, n < 0 ? rep : SOCKS5_CMD_UNSUPPORTED);
				pconn_release(c);
				return false;
			}
			consume(c, (size_t)n);
			if (c->sreq.atyp == 3) {
				pconn_resolve(c, c->sreq.host, c->sreq.port);
			} else {
				struct sockaddr_storage d = c->sreq.addr;
				pconn_hand(c, (const struct sockaddr *)&d);
			}
			return false;
		}
	}
}

static void pconn_on_recv(void *arg, const uint8_t *data, size_t len)
{
	struct pconn *c = arg;
	if (len == 0) {
		pconn_release(c); /* the client gave up before saying what it wants */
		return;
	}
	if (len > sizeof(c->buf) - c->len) {
		c->p->st.bad_request++;
		if (c->st == PS_HTTP)
			pconn_http_error(c, 431, "request head larger than 16 KiB");
		else
			pconn_release(c);
		return;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	if (c->st == PS_FIRST) {
		if (c->buf[0] == SOCKS5_VERSION && c->p->cfg.socks5) {
			c->st = PS_SOCKS_GREET;
		} else if (c->p->cfg.http) {
			c->st = PS_HTTP;
		} else {
			c->p->st.bad_request++;
			pconn_release(c);
			return;
		}
	}
	if (c->st == PS_HTTP)
		(void)pconn_http(c);
	else if (c->st != PS_RESOLVE && c->st != PS_AUTH_WAIT)
		(void)pconn_socks(c);
}

static void pconn_on_closed(void *arg, int err)
{
	(void)err;
	struct pconn *c = arg;
	c->s = NULL; /* freed by its kind when this returns */
	if (!c->resolving)
		pconn_release(c);
}

static const struct stream_cb pconn_cb = {
	.recv = pconn_on_recv,
	.closed = pconn_on_closed,
};

static void pconn_on_timeout(uv_timer_t *t)
{
	struct pconn *c = t->data;
	if (c->resolving)
		return; /* the resolver answers; its callback ends it */
	if (c->st == PS_HTTP && c->len)
		pconn_http_error(c, 408, "the request head did not arrive in time");
	else
		pconn_release(c);
}

static void proxy_on_ss_free(void *ctx)
{
	struct proxy *p = ctx;
	p->st.open--;
	proxy_free_now(p);
}

static void proxy_on_connection(uv_stream_t *srv, int status)
{
	struct proxy *p = srv->data;
	if (status < 0 || p->freed)
		return;
	int err;
	struct sockstream *ss = sockstream_accept(p->loop, srv, &err);
	if (!ss)
		return;
	p->st.accepted++;
	p->st.open++;
	sockstream_on_free(ss, proxy_on_ss_free, p);
	struct stream *s = sockstream_stream(ss);
	struct pconn *c = calloc(1, sizeof(*c));
	if (!c) {
		stream_abort(s);
		return;
	}
	c->p = p;
	p->live++;
	c->ss = ss;
	c->s = s;
	c->over_limit = p->st.open > p->cfg.max_connections;
	(void)sockstream_peer(ss, &c->client);
	uv_timer_init(p->loop, &c->timer);
	c->timer.data = c;
	uv_timer_start(&c->timer, pconn_on_timeout, p->cfg.head_timeout_ms, 0);
	c->next = p->conns;
	if (p->conns)
		p->conns->prev = c;
	p->conns = c;
	stream_set_cb(s, &pconn_cb, c);
	if (p->cfg.target) {
		if (c->over_limit) {
			p->st.refused_limit++;
			pconn_record(c, "limit:listener_connections", NULL);
			stream_abort(s);
			c->s = NULL;
			pconn_release(c);
			return;
		}
		/* Paused until the relay takes it: the client's bytes wait in the
		 * kernel. */
		pconn_resolve(c, p->target.host, p->target.port);
		return;
	}
	stream_resume(s);
}

/* ---- the listener ---------------------------------------------------------- */

static void proxy_on_srv_closed(uv_handle_t *h)
{
	struct proxy *p = h->data;
	p->srv_closed = true;
	proxy_free_now(p);
}

struct proxy *proxy_new(uv_loop_t *loop, const struct proxy_config *cfg, int *err)
{
	if (!cfg->relay || (!cfg->http && !cfg->socks5 && !cfg->target)) {
		*err = UV_EINVAL;
		return NULL;
	}
	struct proxy *p = calloc(1, sizeof(*p));
	if (!p) {
		*err = UV_ENOMEM;
		return NULL;
	}
	p->loop = loop;
	p->cfg = *cfg;
	if (cfg->target) {
		p->target = *cfg->target;
		p->cfg.target = &p->target;
	}
	p->cfg.udp = NULL;
	if (cfg->udp && cfg->socks5) {
		p->udp_cfg = *cfg->udp;
		p->cfg.udp = &p->udp_cfg;
		if (!(p->udp = socks_udp_new(loop, &p->udp_cfg))) {
			free(p);
			*err = UV_ENOMEM;
			return NULL;
		}
	}
	if (!p->cfg.max_connections)
		p->cfg.max_connections = PROXY_DEFAULT_MAX_CONNECTIONS;
	if (!p->cfg.head_timeout_ms)
		p->cfg.head_timeout_ms = PROXY_DEFAULT_HEAD_TIMEOUT_MS;
	int rc = uv_tcp_init(loop, &p->srv);
	if (rc < 0) {
		socks_udp_free(p->udp);
		free(p);
		*err = rc;
		return NULL;
	}
	p->srv.data = p;
	rc = uv_tcp_bind(&p->srv, (const struct sockaddr *)&p->cfg.addr, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&p->srv, 256, proxy_on_connection);
	if (rc < 0) {
		*err = rc;
		p->freed = true;
		socks_udp_free(p->udp);
		p->udp = NULL;
		uv_close((uv_handle_t *)&p->srv, proxy_on_srv_closed);
		return NULL;
	}
	return p;
}

uint16_t proxy_port(const struct proxy *p)
{
	struct sockaddr_storage a;
	int len = sizeof(a);
	if (uv_tcp_getsockname(&p->srv, (struct sockaddr *)&a, &len) != 0)
		return 0;
	return ntohs(a.ss_family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port
					    : ((struct sockaddr_in6 *)&a)->sin6_port);
}

void proxy_get_stats(const struct proxy *p, struct proxy_stats *out)
{
	*out = p->st;
}

bool proxy_get_udp_stats(const struct proxy *p, struct socks_udp_stats *out)
{
	if (!p->udp)
		return false;
	socks_udp_get_stats(p->udp, out);
	return true;
}

void proxy_set_users(struct proxy *p, const struct users *u)
{
	p->cfg.users = u;
}

void proxy_free(struct proxy *p)
{
	if (!p || p->freed)
		return;
	p->freed = true;
	while (p->conns)
		pconn_release(p->conns);
	socks_udp_free(p->udp); /* their control connections close: st.open follows */
	p->udp = NULL;
	uv_close((uv_handle_t *)&p->srv, proxy_on_srv_closed);
}
