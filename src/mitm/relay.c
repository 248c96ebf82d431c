/* The TCP relay between a netstack stream and a libuv socket.
 *
 * A flow's life:
 *   accept:   policy, peer name, uv_tcp_connect + timer; client paused
 *   connect:  timer stopped, client resumed, upstream read started
 *   running:  bytes both ways with the backpressure described in relay.h
 *   closing:  each direction ends on its own (FIN → shutdown); when both
 *             have, or on a reset/error of either leg, the flow is
 *             finished: one record, the netstack handle released, both
 *             uv handles closed
 *   freed:    after the two close callbacks (no libuv request of ours can
 *             still call back then).
 * Ownership: the netstack handle is ours from accept until we close or
 * abort it, or until ops.closed returns (c->ns is then NULL). */
#include "mitm/relay.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/flowlog.h"
#include "netstack/netstack.h"

struct relay_conn;

/* Upstream reads start again only when the netstack has this much room:
 * fewer, larger reads (lwIP's send buffer is 1 MiB). */
#define RELAY_READ_LOWAT (16u * 1024)

struct relay {
	uv_loop_t *loop;
	struct relay_config cfg;
	int (*local_accept)(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			    const struct sockaddr *dest);
	void *local_ctx;
	struct relay_conn *conns;      /* every flow not yet freed */
	struct relay_stats stats;
	bool shut;                     /* relay_shutdown ran: refuse new flows */
	bool freed;                    /* relay_free ran: free with the last flow */
	char refusal[POLICY_VERDICT_COUNT][32]; /* "policy:<verdict>" end reasons */
	uint8_t rbuf[RELAY_READ_SIZE]; /* upstream reads land here, one at a time */
};

struct relay_write {
	uv_write_t req;
	size_t len;
	uint8_t data[];
};

struct relay_conn {
	struct relay *relay;
	struct relay_conn *prev, *next;
	struct netstack_tcp *ns;       /* NULL once released or closed by the netstack */
	uv_tcp_t up;
	uv_timer_t timer;              /* connect timeout */
	uv_connect_t connect_req;
	uv_shutdown_t shutdown_req;
	struct flowlog_flow flow;
	struct sockaddr_storage upstream; /* dialled address (rewritten for host ports) */
	bool host_port;
	unsigned handles;              /* uv handles not yet closed */

	uint8_t *pending;              /* upstream bytes the netstack refused */
	size_t pending_off, pending_len;
	size_t queued;                 /* client bytes in the upstream write queue */

	bool connected;
	bool reading;                  /* uv_read_start is on */
	bool client_paused;            /* by us, for backpressure or connecting */
	bool client_fin;               /* FIN (or orderly close) from the client */
	bool up_shutdown;              /* uv_shutdown issued */
	bool up_shutdown_done;
	bool upstream_eof;
	bool down_shutdown;            /* netstack_tcp_shutdown issued */
	bool finished;                 /* record written, handles closing */
};

enum leg_end {
	END_GRACEFUL,      /* netstack_tcp_close, uv_close */
	END_RESET_CLIENT,  /* netstack_tcp_abort, uv_close */
	END_RESET_UPSTREAM,/* client already gone; uv_tcp_close_reset */
	END_RESET_BOTH,    /* netstack_tcp_abort, uv_tcp_close_reset */
};

static void relay_conn_check_done(struct relay_conn *c);

static void relay_free_now(struct relay *r)
{
	free(r);
}

/* ---- finishing ---------------------------------------------------------- */

static void relay_conn_on_close(uv_handle_t *h)
{
	struct relay_conn *c = h->data;
	if (--c->handles != 0)
		return;
	struct relay *r = c->relay;
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->pending);
	free(c);
	if (r->freed && r->conns == NULL)
		relay_free_now(r);
}

static void relay_conn_close_upstream(struct relay_conn *c, bool reset)
{
	uv_handle_t *h = (uv_handle_t *)&c->up;
	if (uv_is_closing(h))
		return;
	/* close_reset fails after uv_shutdown or before the socket exists;
	 * a plain close still ends the flow. */
	if (!reset || uv_tcp_close_reset(&c->up, relay_conn_on_close) != 0)
		uv_close(h, relay_conn_on_close);
}

static void relay_conn_error(struct relay_conn *c, const char *what, int uverr)
{
	snprintf(c->flow.error, sizeof(c->flow.error), "%s: %s", what, uv_strerror(uverr));
}

/* Ends the flow once: writes the record, lets go of both legs. */
static void relay_conn_finish(struct relay_conn *c, const char *reason, enum leg_end how)
{
	if (c->finished)
		return;
	struct relay *r = c->relay;
	c->finished = true;
	r->stats.open--;

	c->flow.end_reason = reason;
	clock_gettime(CLOCK_REALTIME, &c->flow.end);
	if (r->cfg.log) {
		json_t *o = flowlog_flow_json(&c->flow);
		if (o && c->host_port) {
			char up[FLOWLOG_ADDR_LEN];
			flowlog_format_addr((const struct sockaddr *)&c->upstream, up);
			json_object_set_new(o, "upstream", json_string(up));
		}
		if (o)
			(void)flowlog_write(r->cfg.log, o);
		json_decref(o);
		r->stats.records++;
	}

	if (c->ns) {
		if (how == END_GRACEFUL)
			netstack_tcp_close(c->ns);
		else if (how == END_RESET_CLIENT || how == END_RESET_BOTH)
			netstack_tcp_abort(c->ns);
		c->ns = NULL;
	}
	uv_close((uv_handle_t *)&c->timer, relay_conn_on_close);
	relay_conn_close_upstream(c, how == END_RESET_UPSTREAM || how == END_RESET_BOTH);
}

/* The upstream leg failed after connecting: reset the client. */
static void relay_conn_upstream_failed(struct relay_conn *c, const char *what, int uverr)
{
	if (c->finished)
		return;
	c->relay->stats.upstream_resets++;
	if (uverr != UV_ECONNRESET)
		relay_conn_error(c, what, uverr);
	relay_conn_finish(c, uverr == UV_ECONNRESET || uverr == UV_EPIPE ? "upstream_reset" : "error",
			  END_RESET_CLIENT);
}

/* Both directions closed in order. */
static void relay_conn_check_done(struct relay_conn *c)
{
	if (c->finished)
		return;
	if (c->client_fin && c->up_shutdown_done && c->upstream_eof && (c->down_shutdown || !c->ns))
		relay_conn_finish(c, "fin", END_GRACEFUL);
}

/* ---- client → upstream -------------------------------------------------- */

static void relay_conn_pause_client(struct relay_conn *c)
{
	if (c->ns && !c->client_paused) {
		c->client_paused = true;
		netstack_tcp_pause(c->ns);
	}
}

static void relay_conn_resume_client(struct relay_conn *c)
{
	if (c->ns && c->client_paused) {
		c->client_paused = false;
		netstack_tcp_resume(c->ns); /* may deliver (on_client_recv) at once */
	}
}

static void relay_conn_on_shutdown(uv_shutdown_t *req, int status)
{
	struct relay_conn *c = req->data;
	if (status == UV_ECANCELED || c->finished)
		return;
	if (status < 0) {
		relay_conn_upstream_failed(c, "upstream shutdown", status);
		return;
	}
	c->up_shutdown_done = true;
	relay_conn_check_done(c);
}

/* The client will send no more: FIN upstream once the queue has drained
 * (uv_shutdown waits for queued writes). */
static void relay_conn_client_done(struct relay_conn *c)
{
	c->client_fin = true;
	if (!c->connected || c->up_shutdown || c->finished)
		return;
	c->up_shutdown = true;
	c->shutdown_req.data = c;
	int rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->up, relay_conn_on_shutdown);
	if (rc < 0)
		relay_conn_upstream_failed(c, "upstream shutdown", rc);
}

static void relay_conn_on_write(uv_write_t *req, int status)
{
	struct relay_write *w = (struct relay_write *)req;
	struct relay_conn *c = req->data;
	size_t len = w->len;
	free(w);
	c->queued -= len;
	if (status == UV_ECANCELED || c->finished)
		return;
	if (status < 0) {
		relay_conn_upstream_failed(c, "upstream write", status);
		return;
	}
	if (c->client_paused && c->connected && c->queued <= c->relay->cfg.max_buffer / 2)
		relay_conn_resume_client(c);
}

static void relay_conn_on_client_recv(void *arg, const uint8_t *data, size_t len)
{
	struct relay_conn *c = arg;
	if (c->finished)
		return;
	if (len == 0) {
		relay_conn_client_done(c);
		return;
	}
	c->flow.bytes_up += len;
	c->relay->stats.bytes_up += len;

	/* Straight into the socket when nothing is queued; the rest is
	 * copied, as the netstack's bytes live only during this call. */
	size_t done = 0;
	if (c->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&c->up, &b, 1);
		if (n >= 0)
			done = (size_t)n;
		else if (n != UV_EAGAIN) {
			relay_conn_upstream_failed(c, "upstream write", n);
			return;
		}
	}
	if (done == len)
		return;
	size_t rest = len - done;
	struct relay_write *w = malloc(sizeof(*w) + rest);
	if (!w) {
		snprintf(c->flow.error, sizeof(c->flow.error), "out of memory");
		relay_conn_finish(c, "error", END_RESET_BOTH);
		return;
	}
	memcpy(w->data, data + done, rest);
	w->len = rest;
	w->req.data = c;
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->up, &b, 1, relay_conn_on_write);
	if (rc < 0) {
		free(w);
		relay_conn_upstream_failed(c, "upstream write", rc);
		return;
	}
	c->queued += rest;
	if (c->queued > c->relay->cfg.max_buffer) {
		c->relay->stats.client_pauses++;
		relay_conn_pause_client(c);
	}
}

/* ---- upstream → client -------------------------------------------------- */

static void relay_conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct relay_conn *c = h->data;
	(void)suggested;
	/* Read no more than the netstack takes now: the bytes go on at once
	 * and the kernel's socket buffer holds the rest. 0 → UV_ENOBUFS. */
	size_t room = c->ns && !c->finished ? netstack_tcp_writable(c->ns) : 0;
	if (room > RELAY_READ_SIZE)
		room = RELAY_READ_SIZE;
	if (room < RELAY_READ_LOWAT)
		room = 0; /* wait for a useful amount rather than read in crumbs */
	*buf = uv_buf_init((char *)c->relay->rbuf, (unsigned)room);
}

static void relay_conn_stop_reading(struct relay_conn *c)
{
	if (c->reading) {
		c->reading = false;
		uv_read_stop((uv_stream_t *)&c->up);
	}
}

static void relay_conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void relay_conn_read_on(struct relay_conn *c)
{
	if (c->reading || !c->connected || c->upstream_eof || c->finished || !c->ns)
		return;
	if (uv_read_start((uv_stream_t *)&c->up, relay_conn_on_alloc, relay_conn_on_read) == 0)
		c->reading = true;
}

/* Upstream EOF and nothing left to hand over: FIN to the client. */
static void relay_conn_down_done(struct relay_conn *c)
{
	if (!c->upstream_eof || c->pending_len > 0 || c->down_shutdown || c->finished)
		return;
	c->down_shutdown = true;
	if (c->ns)
		(void)netstack_tcp_shutdown(c->ns);
	relay_conn_check_done(c);
}

static void relay_conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct relay_conn *c = s->data;
	if (c->finished)
		return;
	if (nread == UV_ENOBUFS) {
		/* The netstack is full: wait for ops.sent. */
		c->relay->stats.upstream_stops++;
		relay_conn_stop_reading(c);
		return;
	}
	if (nread == UV_EOF) {
		c->upstream_eof = true;
		relay_conn_stop_reading(c);
		relay_conn_down_done(c);
		return;
	}
	if (nread < 0) {
		relay_conn_upstream_failed(c, "upstream read", (int)nread);
		return;
	}
	if (nread == 0)
		return;
	size_t len = (size_t)nread;
	c->flow.bytes_down += len;
	c->relay->stats.bytes_down += len;
	size_t done = c->ns ? netstack_tcp_write(c->ns, (const uint8_t *)buf->base, len) : len;
	if (done == len)
		return;
	/* The netstack took less than it said it had room for (its segment
	 * queue is full): keep the rest, read no more until it is flushed. */
	if (!c->pending) {
		c->pending = malloc(RELAY_READ_SIZE);
		if (!c->pending) {
			snprintf(c->flow.error, sizeof(c->flow.error), "out of memory");
			relay_conn_finish(c, "error", END_RESET_BOTH);
			return;
		}
	}
	memcpy(c->pending, buf->base + done, len - done);
	c->pending_off = 0;
	c->pending_len = len - done;
	c->relay->stats.upstream_stops++;
	relay_conn_stop_reading(c);
}

/* The client acknowledged data: the netstack has room again. */
static void relay_conn_on_client_sent(void *arg, size_t len)
{
	struct relay_conn *c = arg;
	(void)len;
	if (c->finished || !c->ns)
		return;
	if (c->pending_len > 0) {
		size_t n = netstack_tcp_write(c->ns, c->pending + c->pending_off, c->pending_len);
		c->pending_off += n;
		c->pending_len -= n;
		if (c->pending_len > 0)
			return;
		free(c->pending); /* rare: give the memory back to idle flows */
		c->pending = NULL;
		relay_conn_down_done(c);
	}
	if (!c->reading && netstack_tcp_writable(c->ns) >= RELAY_READ_LOWAT)
		relay_conn_read_on(c);
}

/* ---- the client leg ends ------------------------------------------------ */

static void relay_conn_on_client_closed(void *arg, int err)
{
	struct relay_conn *c = arg;
	c->ns = NULL; /* freed when we return */
	if (c->finished)
		return;
	if (err == 0) {
		/* Orderly: the client sent FIN and acknowledged ours. Anything
		 * still paused in the netstack went with it. */
		if (!c->client_fin)
			relay_conn_client_done(c);
		relay_conn_check_done(c);
		return;
	}
	c->relay->stats.client_resets++;
	const char *reason = "client_reset";
	if (err == -ECONNABORTED) {
		reason = "timeout";
		snprintf(c->flow.error, sizeof(c->flow.error), "the client stopped responding");
	} else if (err != -ECONNRESET) {
		reason = "error";
		snprintf(c->flow.error, sizeof(c->flow.error), "client: %s", strerror(-err));
	}
	relay_conn_finish(c, reason, c->connected ? END_RESET_UPSTREAM : END_GRACEFUL);
}

/* ---- connecting --------------------------------------------------------- */

static void relay_conn_connect_failed(struct relay_conn *c, int status, bool timeout)
{
	struct relay *r = c->relay;
	r->stats.connect_failed++;
	const char *reason = "upstream_unreachable";
	if (timeout) {
		r->stats.connect_timeout++;
		snprintf(c->flow.error, sizeof(c->flow.error), "connect: timed out after %u ms",
			 r->cfg.connect_timeout_ms);
	} else {
		if (status == UV_ECONNREFUSED) {
			r->stats.connect_refused++;
			reason = "upstream_refused";
		}
		relay_conn_error(c, "connect", status);
	}
	relay_conn_finish(c, reason, END_RESET_CLIENT);
}

static void relay_conn_on_timeout(uv_timer_t *t)
{
	struct relay_conn *c = t->data;
	if (!c->connected && !c->finished)
		relay_conn_connect_failed(c, UV_ETIMEDOUT, true); /* closing cancels the connect */
}

static void relay_conn_on_connect(uv_connect_t *req, int status)
{
	struct relay_conn *c = req->data;
	if (status == UV_ECANCELED || c->finished)
		return;
	uv_timer_stop(&c->timer);
	if (status < 0) {
		relay_conn_connect_failed(c, status, false);
		return;
	}
	c->connected = true;
	uv_tcp_nodelay(&c->up, 1);   /* the client's segments are already batched */
	uv_tcp_keepalive(&c->up, 1, 60);
	relay_conn_read_on(c);
	/* Held client data and a held FIN arrive through on_client_recv. */
	relay_conn_resume_client(c);
	if (c->client_fin)
		relay_conn_client_done(c);
}

/* ---- accept ------------------------------------------------------------- */

static const struct netstack_tcp_ops relay_conn_ops = {
	.recv = relay_conn_on_client_recv,
	.sent = relay_conn_on_client_sent,
	.closed = relay_conn_on_client_closed,
};

/* A refused flow: counted and recorded, never dialled. */
static void relay_record_refusal(struct relay *r, enum policy_verdict v, const char *peer,
				 const struct sockaddr *client, const struct sockaddr *dest)
{
	r->stats.refused++;
	r->stats.refused_by[v]++;
	if (!r->cfg.log)
		return;
	struct flowlog_flow f;
	flowlog_flow_begin(&f, r->cfg.log, "tcp", peer, client, dest);
	f.end = f.start;
	f.end_reason = r->refusal[v];
	(void)flowlog_write_flow(r->cfg.log, &f);
	r->stats.records++;
}

int relay_tcp_accept(struct relay *r, struct netstack_tcp *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	if (r->shut)
		return -ESHUTDOWN;
	struct sockaddr_storage upstream;
	enum policy_verdict v = policy_check(r->cfg.policy, IPPROTO_TCP, dest, &upstream);
	if (v == POLICY_LOCAL_SERVICE) {
		if (!r->local_accept) {
			r->stats.refused++;
			r->stats.refused_by[POLICY_REFUSE_OWN_ADDRESS]++;
			return -ECONNREFUSED;
		}
		r->stats.local++;
		return r->local_accept(r->local_ctx, conn, client, dest);
	}
	const char *peer = r->cfg.peer_name ? r->cfg.peer_name(r->cfg.peer_ctx, client) : NULL;
	if (policy_refused(v)) {
		relay_record_refusal(r, v, peer, client, dest);
		return -ECONNREFUSED;
	}

	struct relay_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->relay = r;
	c->upstream = upstream;
	c->host_port = v == POLICY_HOST_PORT;
	flowlog_flow_begin(&c->flow, r->cfg.log, "tcp", peer, client, dest);
	int rc = uv_tcp_init(r->loop, &c->up);
	if (rc < 0) {
		free(c);
		return rc;
	}
	uv_timer_init(r->loop, &c->timer); /* cannot fail on Unix */
	c->up.data = c;
	c->timer.data = c;
	c->handles = 2;
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	r->stats.open++;
	r->stats.accepted++;

	c->connect_req.data = c;
	rc = uv_tcp_connect(&c->connect_req, &c->up, (const struct sockaddr *)&c->upstream,
			    relay_conn_on_connect);
	if (rc < 0) {
		/* Failed at once (no route, no address): the netstack resets
		 * the client when we return nonzero. */
		relay_conn_connect_failed(c, rc, false);
		return rc;
	}
	uv_update_time(r->loop); /* the loop's clock may lag behind a long batch of packets */
	uv_timer_start(&c->timer, relay_conn_on_timeout, r->cfg.connect_timeout_ms, 0);
	c->ns = conn;
	netstack_tcp_set_ops(conn, &relay_conn_ops, c);
	relay_conn_pause_client(c); /* hold the client's bytes until we are connected */
	return 0;
}

/* ---- the relay ---------------------------------------------------------- */

struct relay *relay_new(uv_loop_t *loop, const struct relay_config *cfg)
{
	if (!loop || !cfg || !cfg->policy) {
		errno = EINVAL;
		return NULL;
	}
	struct relay *r = calloc(1, sizeof(*r));
	if (!r) {
		errno = ENOMEM;
		return NULL;
	}
	r->loop = loop;
	r->cfg = *cfg;
	if (r->cfg.max_buffer == 0)
		r->cfg.max_buffer = RELAY_DEFAULT_MAX_BUFFER;
	if (r->cfg.connect_timeout_ms == 0)
		r->cfg.connect_timeout_ms = RELAY_DEFAULT_CONNECT_TIMEOUT_MS;
	for (int v = 0; v < POLICY_VERDICT_COUNT; v++)
		snprintf(r->refusal[v], sizeof(r->refusal[v]), "policy:%s",
			 policy_verdict_name((enum policy_verdict)v));
	return r;
}

void relay_set_local_tcp(struct relay *r,
			 int (*accept)(void *ctx, struct netstack_tcp *conn,
				       const struct sockaddr *client, const struct sockaddr *dest),
			 void *ctx)
{
	r->local_accept = accept;
	r->local_ctx = ctx;
}

void relay_get_stats(const struct relay *r, struct relay_stats *out)
{
	*out = r->stats;
}

void relay_shutdown(struct relay *r)
{
	if (!r)
		return;
	r->shut = true;
	for (struct relay_conn *c = r->conns; c; c = c->next)
		if (!c->finished)
			relay_conn_finish(c, "shutdown", END_RESET_BOTH);
}

void relay_free(struct relay *r)
{
	if (!r)
		return;
	relay_shutdown(r);
	r->freed = true;
	if (r->conns == NULL)
		relay_free_now(r);
}
