/* The TCP relay between a netstack stream and a libuv socket.
 *
 * A flow's life:
 *   accept:   policy, peer name, uv_tcp_connect + timer; client paused
 *   connect:  timer stopped, client resumed, upstream read started
 *   running:  bytes both ways with the backpressure described in relay.h
 *   closing:  each direction ends on its own (FIN → shutdown); when both
 *             have, or on a reset/error of either leg, the flow is
 *             finished: one record, the netstack handle released, both
 *             uv handles closed. Once one direction has ended, the flow
 *             also ends when nothing moves for half_close_timeout_ms.
 *   freed:    after the two close callbacks (no libuv request of ours can
 *             still call back then).
 * Ownership: the netstack handle is ours from accept until we close or
 * abort it, or until ops.closed returns (c->cs is then NULL).
 *
 * Interception modes (relay.h), in the order a flow can pass them:
 *   DIAL → SNIFF (client bytes buffered until they say what they are)
 *        → RAW (relayed as they are, observed when plain HTTP)
 *        → UP_HS (TLS: upstream handshake; client bytes held, its FIN seen)
 *          → CLIENT_HS (client handshake with the minted leaf; upstream
 *            reads stopped) → TLS (plaintext relayed between the legs)
 *          → FAIL (upstream failed and closed: client handshake, then a
 *            502 page)
 * The flow's one timer watches whatever it waits for (relay.h): the
 * connect (DIAL), the rest of the first bytes (SNIFF, then relayed raw),
 * either handshake (UP_HS; CLIENT_HS and FAIL), the request the 502 answers
 * (FAIL), and traffic once half-closed (SNIFF, RAW, TLS). A client FIN, a
 * client reset and the timer end every mode; the upstream's FIN or reset
 * end every mode that reads it (CLIENT_HS reads it once TLS is up, FAIL has
 * let the upstream go). */
#include "mitm/relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "common/tally.h"
#include "mitm/dnsnames.h"
#include "mitm/errpage.h"
#include "flows/flowlog.h"
#include "mitm/h1rw.h"
#include "mitm/held.h"
#include "mitm/h2obs.h"
#include "mitm/h2rw.h"
#include "mitm/http1.h"
#include "mitm/httpflow.h"
#include "mitm/localname.h"
#include "mitm/parent.h"
#include "mitm/passthru.h"
#include "mitm/rules.h"
#include "mitm/sniff.h"
#include "mitm/tls.h"
#include "mitm/upconn.h"
#include "common/stream.h"

struct relay_conn;

/* Upstream reads start again only when the netstack has this much room:
 * fewer, larger reads (lwIP's send buffer is 1 MiB). */
#define RELAY_READ_LOWAT (16u * 1024)

struct relay {
	uv_loop_t *loop;
	struct relay_config cfg;
	int (*local_accept)(void *ctx, struct stream *conn, const struct sockaddr *client,
			    const struct sockaddr *dest);
	void *local_ctx;
	struct relay_conn *conns; /* every flow not yet freed */
	struct relay_stats stats;
	bool shut;                              /* relay_shutdown ran: refuse new flows */
	bool freed;                             /* relay_free ran: free with the last flow */
	struct tally *per_peer;                 /* open flows per peer, against max_per_peer */
	char refusal[POLICY_VERDICT_COUNT][32]; /* "policy:<verdict>" end reasons */
	uint8_t rbuf[RELAY_READ_SIZE];          /* upstream reads land here, one at a time */
	uint8_t pbuf[RELAY_READ_SIZE];          /* plaintext out of a TLS leg */
	uv_timer_t tick;                        /* WebSocket batches of quiet flows, 1 s */
	bool tick_closed;
	uint16_t protected_ports[RELAY_MAX_PROTECTED]; /* our own services on the host */
	size_t nprotected;
	struct ruleset *rules; /* interception rules in force; NULL: none */
	struct held *held;     /* what breakpoints hold (mitm/held.h) */
	struct relay_parent parents[RELAY_MAX_PARENTS];
	size_t nparents;
	struct relay_bucket *buckets; /* the users' with flows now */
};

/* A flow going through a parent proxy: the handshake's state until it is
 * done (then freed), the parent's label for the record. */
struct relay_pdial {
	struct parent_hs hs;
	bool socks5;
	char host[256]; /* the target as the parent is asked for it */
	uint16_t port;
	char user[256], pass[256];
	char label[280];
};

/* A delay rule's timer: its own allocation, so that it closes apart from
 * the flow's handles (c is NULL once the flow has ended). */
struct relay_delay {
	uv_timer_t t;
	struct relay_conn *c;
};

/* A token bucket: bytes/s (0: none), what it holds, ms of the last refill. */
struct relay_tb {
	uint64_t rate;
	double tokens;
	uint64_t at;
};

/* A user's share of bandwidth (relay_config.user_rate): one bucket per
 * direction for all of the user's flows, alive while a flow holds it. */
struct relay_bucket {
	struct relay_bucket *next;
	unsigned refs;
	struct relay_tb tb[2];
	char user[];
};

/* Pacing a flow: a throttle rule's bucket per direction (0: from the
 * client, 1: from the upstream), its user's shared one, and the timer
 * that lets a stopped side go on. */
struct relay_pace {
	uv_timer_t t;
	struct relay_conn *c;
	struct relay_tb own[2];
	struct relay_bucket *user; /* NULL: none */
	bool blocked[2];           /* that side waits for tokens */
};

struct relay_write {
	uv_write_t req;
	size_t len;
	uint8_t data[];
};

enum relay_mode {
	MODE_DIAL,
	MODE_PARENT, /* connected to a parent proxy, its handshake under way */
	MODE_SNIFF,
	MODE_RAW,
	MODE_UP_HS,
	MODE_CLIENT_HS,
	MODE_TLS,
	MODE_FAIL
};

enum obs_kind { OBS_NONE, OBS_HTTP1, OBS_H2 };

#define RELAY_FIRST_BYTES 64

/* What only intercepted (or sniffed) flows need: allocated at the first
 * client byte, so idle raw flows stay small. */
struct relay_icpt {
	uint8_t *sniff; /* client bytes held while deciding */
	size_t sniff_len;
	struct sniff_hello hello;
	struct tls_leg up, cl;
	bool up_tls, cl_tls; /* legs initialised */
	/* Shaped flows (relay_shape): the client leg is plain (TLS originated
	 * upstream only); what is inside the TLS is not HTTP. */
	bool cl_plain, raw_inside;
	const char *proto; /* "raw", "tls", "tls-passthrough", "http", "h2c" */
	char passthrough[PASSTHRU_GLOB_LEN + 8];
	char tls_error[200];
	json_t *tls_json; /* {"client":…, "upstream":…} once both are up */
	json_t *up_leg;   /* the upstream leg with its certificate, for the tcp record only */
	char authority[FLOWLOG_ADDR_LEN]; /* the server as "ip:port" for URLs */
	enum obs_kind obs;
	void *obs_ptr;
	struct errpage *err; /* FAIL: the 502 we answer with */
	struct h1rw *rw;     /* rules apply: HTTP/1.1 terminated (mitm/h1rw.h) */
	struct h2rw *h2rw;   /* rules apply: HTTP/2 terminated (mitm/h2rw.h) */
	struct relay_delay *delay;
	uint64_t held_id[2]; /* the registry's items: request, response (0: none) */
	/* A redirect moved the upstream: the dialled one is closed (detached)
	 * and upc is the server bytes go to now. */
	struct upconn *upc;
	bool detached, upc_paused;
	/* Plain HTTP through the active layer: what the netstack did not
	 * take yet (the TLS leg keeps it otherwise). */
	struct strbuf clout;
	uint8_t first_up[RELAY_FIRST_BYTES], first_down[RELAY_FIRST_BYTES];
	size_t first_up_len, first_down_len;
	uint64_t first_up_size, first_down_size;
};

struct relay_conn {
	struct relay *relay;
	enum relay_mode mode;
	struct relay_icpt *x; /* NULL until the first client byte */
	struct relay_conn *prev, *next;
	struct stream *cs; /* the client; NULL once released, or closed by its side */
	uv_tcp_t up;
	uv_timer_t timer;    /* the timeout of what the flow waits for */
	uint64_t acked;      /* bytes the client acknowledged (ops.sent) */
	uint64_t idle_bytes; /* half-closed: bytes in, both ways, and acked by
	                                  the client, at the last tick */
	uv_connect_t connect_req;
	uv_shutdown_t shutdown_req;
	struct flowlog_flow flow;
	struct tally_entry *share;        /* this flow in relay.per_peer */
	struct sockaddr_storage upstream; /* dialled address (rewritten for host ports) */
	bool host_port;
	unsigned handles;          /* uv handles not yet closed */
	struct relay_shape *shape; /* a fixed-target listener's; NULL: sniffed */
	struct relay_pace *pace;   /* throttled (a rule, the user's rate); NULL: not */
	struct relay_pdial *pd;    /* through a parent proxy; NULL: direct */
	/* A listener's flow: told once the upstream is dialled (relay.h). */
	void (*dialled)(void *ctx, struct stream *s, int err, const char *why);
	void *dialled_ctx;

	uint8_t *pending; /* upstream bytes the netstack refused */
	size_t pending_off, pending_len;
	size_t queued; /* client bytes in the upstream write queue */

	bool connected;
	bool reading;       /* uv_read_start is on */
	bool client_paused; /* by us, for backpressure or connecting */
	bool client_fin;    /* FIN (or orderly close) from the client */
	bool up_shutdown;   /* uv_shutdown issued */
	bool up_shutdown_done;
	bool upstream_eof;
	bool down_shutdown; /* stream_shutdown issued */
	bool half_timer;    /* the timer checks a half-closed flow for traffic */
	bool finished;      /* record written, handles closing */
};

enum leg_end {
	END_GRACEFUL,       /* stream_close, uv_close */
	END_RESET_CLIENT,   /* stream_abort, uv_close */
	END_RESET_UPSTREAM, /* client already gone; uv_tcp_close_reset */
	END_RESET_BOTH,     /* stream_abort, uv_tcp_close_reset */
};

static void relay_conn_check_done(struct relay_conn *c);
static void relay_conn_finish(struct relay_conn *c, const char *reason, enum leg_end how);
static void relay_conn_read_on(struct relay_conn *c);
static void relay_conn_stop_reading(struct relay_conn *c);
static void relay_conn_down_done(struct relay_conn *c);
static void relay_conn_on_timeout(uv_timer_t *t);
static void obs_finish(struct relay_conn *c, const char *reason);

static void relay_free_now(struct relay *r)
{
	if (r->freed && r->tick_closed && r->conns == NULL) {
		ruleset_unref(r->rules);
		held_free(r->held);
		tally_free(r->per_peer);
		free(r);
	}
}

/* ---- observers ---------------------------------------------------------- */

/* The records of a flow's exchanges say where it came in, as its own does. */
static void relay_conn_origin_to(const struct relay_conn *c, struct flowlog_flow *f)
{
	f->via = c->flow.via;
	memcpy(f->user, c->flow.user, sizeof(f->user));
}

/* An exchange from an observer becomes an "http" record. */
static void sink_exchange(void *ctx, const struct http_exchange *x)
{
	struct relay_conn *c = ctx;
	struct relay *r = c->relay;
	if (!r->cfg.log)
		return;
	struct flowlog_flow f;
	flowlog_flow_begin(&f, r->cfg.log, "http", c->flow.peer[0] ? c->flow.peer : NULL,
			   (const struct sockaddr *)&c->flow.client,
			   (const struct sockaddr *)&c->flow.server);
	relay_conn_origin_to(c, &f);
	if (x->start.tv_sec)
		f.start = x->start;
	f.end = x->end.tv_sec ? x->end : f.start;
	f.bytes_up = x->req.body.size;
	f.bytes_down = x->resp.body.size;
	f.end_reason = x->error ? x->error : "complete";
	if (x->error_detail[0])
		snprintf(f.error, sizeof(f.error), "%s", x->error_detail);
	json_t *o = flowlog_flow_json(&f);
	if (!o)
		return;
	json_object_set_new(o, "conn", json_string(c->flow.id));
	json_object_set(o, "tls", c->x && c->x->tls_json ? c->x->tls_json : json_null());
	if (c->x && c->x->rw) {
		json_t *note = h1rw_take_note(c->x->rw);
		if (note && json_object_size(note))
			json_object_set(o, "rules", note);
		json_decref(note);
	} else if (c->x && c->x->h2rw) {
		/* The observer watches the client's leg: its stream ids are
		 * the ones h2rw keys its notes by. */
		json_t *note = h2rw_take_note(c->x->h2rw, x->stream_id);
		if (note && json_object_size(note))
			json_object_set(o, "rules", note);
		json_decref(note);
	}
	if (http_exchange_to_json(x, c->x ? c->x->authority : NULL, o) == 0 &&
	    flowlog_write(r->cfg.log, o) == 0)
		r->stats.http_exchanges++;
	json_decref(o);
}

/* A batch of WebSocket messages becomes a "websocket" record. */
static void sink_websocket(void *ctx, json_t *batch)
{
	struct relay_conn *c = ctx;
	struct relay *r = c->relay;
	if (!r->cfg.log) {
		json_decref(batch);
		return;
	}
	struct flowlog_flow f;
	flowlog_flow_begin(&f, r->cfg.log, "websocket", c->flow.peer[0] ? c->flow.peer : NULL,
			   (const struct sockaddr *)&c->flow.client,
			   (const struct sockaddr *)&c->flow.server);
	relay_conn_origin_to(c, &f);
	f.end_reason = "batch";
	json_t *o = flowlog_flow_json(&f);
	if (o) {
		json_object_set_new(o, "conn", json_string(c->flow.id));
		json_object_update(o, batch);
		/* What the message rules did since the last batch. */
		json_t *note = c->x && c->x->rw ? h1rw_take_ws_note(c->x->rw) : NULL;
		if (note)
			json_object_set_new(o, "rules", note);
		if (flowlog_write(r->cfg.log, o) == 0)
			r->stats.ws_batches++;
	}
	json_decref(o);
	json_decref(batch);
}

static void obs_start(struct relay_conn *c, enum obs_kind kind, const char *scheme)
{
	struct relay_icpt *x = c->x;
	if (c->relay->cfg.no_http || kind == OBS_NONE)
		return;
	struct http_sink sink = { .exchange = sink_exchange,
				  .websocket = sink_websocket,
				  .ctx = c };
	size_t cap = c->relay->cfg.body_cap;
	if (kind == OBS_HTTP1) {
		struct http1_config hc = { .sink = sink,
					   .body_cap = cap,
					   .scheme = scheme,
					   .default_authority = x->authority };
		x->obs_ptr = http1_obs_new(&hc);
	} else if (kind == OBS_H2) {
		struct h2obs_config hc = { .sink = sink,
					   .body_cap = cap,
					   .scheme = scheme,
					   .default_authority = x->authority };
		x->obs_ptr = h2obs_new(&hc);
	}
	x->obs = x->obs_ptr ? kind : OBS_NONE;
}

static void obs_client(struct relay_conn *c, const uint8_t *p, size_t n)
{
	struct relay_icpt *x = c->x;
	switch (x ? x->obs : OBS_NONE) {
	case OBS_HTTP1:
		if (n)
			http1_obs_client(x->obs_ptr, p, n);
		else
			http1_obs_client_eof(x->obs_ptr);
		break;
	case OBS_H2:
		if (n)
			h2obs_client(x->obs_ptr, p, n);
		break;
	case OBS_NONE:
		break;
	}
}

static void obs_server(struct relay_conn *c, const uint8_t *p, size_t n)
{
	struct relay_icpt *x = c->x;
	switch (x ? x->obs : OBS_NONE) {
	case OBS_HTTP1:
		if (n)
			http1_obs_server(x->obs_ptr, p, n);
		else
			http1_obs_server_eof(x->obs_ptr);
		break;
	case OBS_H2:
		if (n)
			h2obs_server(x->obs_ptr, p, n);
		break;
	case OBS_NONE:
		break;
	}
}

static void obs_finish(struct relay_conn *c, const char *reason)
{
	struct relay_icpt *x = c->x;
	if (!x || !x->obs_ptr)
		return;
	switch (x->obs) {
	case OBS_HTTP1:
		http1_obs_finish(x->obs_ptr, reason);
		http1_obs_free(x->obs_ptr);
		break;
	case OBS_H2:
		h2obs_finish(x->obs_ptr, reason);
		h2obs_free(x->obs_ptr);
		break;
	case OBS_NONE:
		break;
	}
	x->obs_ptr = NULL;
	x->obs = OBS_NONE;
}

static void relay_delay_closed(uv_handle_t *h)
{
	free(h->data);
}

/* The rules' own handles close with the flow's, not after them: a
 * shutdown closes every handle left once the flows have finished. */
static void relay_icpt_release(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	if (!x)
		return;
	upconn_close(x->upc, false);
	x->upc = NULL;
	if (x->delay) {
		x->delay->c = NULL;
		uv_close((uv_handle_t *)&x->delay->t, relay_delay_closed);
		x->delay = NULL;
	}
}

static void relay_bucket_unref(struct relay *r, struct relay_bucket *b)
{
	if (!b || --b->refs > 0)
		return;
	for (struct relay_bucket **pp = &r->buckets; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	free(b);
}

static void relay_conn_pace_release(struct relay_conn *c)
{
	struct relay_pace *p = c->pace;
	if (!p)
		return;
	relay_bucket_unref(c->relay, p->user);
	p->user = NULL;
	p->c = NULL;
	uv_close((uv_handle_t *)&p->t, relay_delay_closed);
	c->pace = NULL;
}

static void relay_icpt_free(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	if (!x)
		return;
	obs_finish(c, "shutdown"); /* normally done at finish already */
	if (x->up_tls)
		tls_leg_free(&x->up);
	if (x->cl_tls)
		tls_leg_free(&x->cl);
	json_decref(x->tls_json);
	json_decref(x->up_leg);
	errpage_free(x->err);
	h1rw_free(x->rw);
	strbuf_free(&x->clout);
	h2rw_free(x->h2rw);
	free(x->sniff);
	free(x);
	c->x = NULL;
}

static void keep_first(uint8_t *buf, size_t *len, uint64_t *size, const uint8_t *p, size_t n)
{
	if (*len < RELAY_FIRST_BYTES) {
		size_t k = RELAY_FIRST_BYTES - *len < n ? RELAY_FIRST_BYTES - *len : n;
		memcpy(buf + *len, p, k);
		*len += k;
	}
	*size += n;
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
	relay_icpt_free(c);
	free(c->shape);
	free(c->pd);
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

/* The interception keys of the tcp record (docs/flows.md). */
static void relay_conn_record_icpt(const struct relay_conn *c, json_t *o)
{
	const struct relay_icpt *x = c->x;
	if (!x || !x->proto)
		return;
	json_object_set_new(o, "proto", json_string(x->proto));
	if (x->hello.sni_present)
		json_object_set_new(o, "sni", json_string(x->hello.sni));
	if (x->hello.n_alpn > 0) {
		json_t *a = json_array();
		for (size_t i = 0; i < x->hello.n_alpn; i++)
			json_array_append_new(
				a, json_stringn((const char *)x->hello.alpn_wire +
							x->hello.alpn_off[i] + 1,
						x->hello.alpn_wire[x->hello.alpn_off[i]]));
		json_object_set_new(o, "alpn_offered", a);
	}
	if (x->tls_json && x->up_leg) {
		/* The exchanges share tls_json; only this record has the cert. */
		json_t *tls = json_copy(x->tls_json);
		if (tls)
			json_object_set(tls, "upstream", x->up_leg);
		json_object_set_new(o, "tls", tls ? tls : json_null());
	} else if (x->tls_json) {
		json_object_set(o, "tls", x->tls_json);
	}
	if (x->passthrough[0])
		json_object_set_new(o, "passthrough", json_string(x->passthrough));
	if (x->tls_error[0])
		json_object_set_new(o, "tls_error", json_string(x->tls_error));
	if (strcmp(x->proto, "raw") == 0 || strcmp(x->proto, "tls-passthrough") == 0) {
		if (x->first_up_size)
			json_object_set_new(o, "first_up",
					    http_body_json(x->first_up, x->first_up_len,
							   x->first_up_size,
							   x->first_up_size > x->first_up_len));
		if (x->first_down_size)
			json_object_set_new(o, "first_down",
					    http_body_json(x->first_down, x->first_down_len,
							   x->first_down_size,
							   x->first_down_size > x->first_down_len));
	}
}

/* Ends the flow once: writes the record, lets go of both legs. */
static void relay_conn_finish(struct relay_conn *c, const char *reason, enum leg_end how)
{
	if (c->finished)
		return;
	struct relay *r = c->relay;
	c->finished = true;
	r->stats.open--;
	tally_give(r->per_peer, c->share);
	c->share = NULL;

	/* What a breakpoint held here is gone with it. */
	for (size_t i = 0; c->x && i < 2; i++) {
		if (c->x->held_id[i])
			held_remove(r->held, c->x->held_id[i], "closed");
		c->x->held_id[i] = 0;
	}

	/* Exchanges still open end with the connection. */
	const char *why = strcmp(reason, "fin") == 0 ? "connection_closed" : reason;
	obs_finish(c, why);

	c->flow.end_reason = reason;
	clock_gettime(CLOCK_REALTIME, &c->flow.end);
	if (r->cfg.log) {
		json_t *o = flowlog_flow_json(&c->flow);
		if (o && c->host_port) {
			char up[FLOWLOG_ADDR_LEN];
			flowlog_format_addr((const struct sockaddr *)&c->upstream, up);
			json_object_set_new(o, "upstream", json_string(up));
		}
		if (o && c->pd)
			json_object_set_new(o, "upstream_proxy", json_string(c->pd->label));
		if (o)
			relay_conn_record_icpt(c, o);
		if (o)
			(void)flowlog_write(r->cfg.log, o);
		json_decref(o);
		r->stats.records++;
	}

	if (c->cs) {
		if (how == END_GRACEFUL)
			stream_close(c->cs);
		else if (how == END_RESET_CLIENT || how == END_RESET_BOTH)
			stream_abort(c->cs);
		c->cs = NULL;
	}
	relay_icpt_release(c);
	relay_conn_pace_release(c);
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
	/* ETIMEDOUT: the upstream stopped answering keepalives or
	 * retransmissions, the kernel gave up. */
	const char *reason = uverr == UV_ECONNRESET || uverr == UV_EPIPE ? "upstream_reset"
			     : uverr == UV_ETIMEDOUT                     ? "timeout"
									 : "error";
	relay_conn_finish(c, reason, END_RESET_CLIENT);
}

static void relay_conn_oom(struct relay_conn *c)
{
	snprintf(c->flow.error, sizeof(c->flow.error), "out of memory");
	relay_conn_finish(c, "error", END_RESET_BOTH);
}

/* Both directions closed in order. */
static void relay_conn_check_done(struct relay_conn *c)
{
	if (c->finished)
		return;
	if (c->client_fin && c->up_shutdown_done && c->upstream_eof && (c->down_shutdown || !c->cs))
		relay_conn_finish(c, "fin", END_GRACEFUL);
}

/* ---- timeouts ----------------------------------------------------------- */

/* The timer now watches the current wait (one shot), replacing what it
 * watched before. */
static void relay_conn_arm(struct relay_conn *c, uint32_t ms)
{
	if (c->finished)
		return;
	c->half_timer = false;
	uv_update_time(c->relay->loop);
	uv_timer_start(&c->timer, relay_conn_on_timeout, ms, 0);
}

static void relay_conn_disarm(struct relay_conn *c)
{
	if (c->finished)
		return;
	c->half_timer = false;
	uv_timer_stop(&c->timer);
}

/* Traffic so far: bytes in from either side, bytes the client took. */
static uint64_t relay_conn_traffic(const struct relay_conn *c)
{
	return c->flow.bytes_up + c->flow.bytes_down + c->acked;
}

/* One direction has ended and the other has not: from now on the flow ends
 * when, between two ticks of half_close_timeout_ms, no byte came from
 * either side and the client acknowledged nothing (a slow client still
 * draining what we queued is progress). Costs nothing per byte. */
static void relay_conn_half_closed(struct relay_conn *c)
{
	if (c->finished || c->half_timer || c->client_fin == c->upstream_eof)
		return;
	bool waits = c->mode == MODE_RAW || c->mode == MODE_TLS ||
		     (c->mode == MODE_SNIFF && !(c->x && c->x->sniff_len));
	if (!waits)
		return; /* a handshake or the first bytes: their own timeout runs */
	uint32_t ms = c->relay->cfg.half_close_timeout_ms;
	c->half_timer = true;
	c->idle_bytes = relay_conn_traffic(c);
	uv_update_time(c->relay->loop);
	uv_timer_start(&c->timer, relay_conn_on_timeout, ms, ms);
}

/* ---- client → upstream -------------------------------------------------- */

static void relay_conn_pause_client(struct relay_conn *c)
{
	if (c->cs && !c->client_paused) {
		c->client_paused = true;
		stream_pause(c->cs);
	}
}

static void relay_conn_resume_client(struct relay_conn *c)
{
	if (c->cs && c->client_paused) {
		c->client_paused = false;
		stream_resume(c->cs); /* may deliver (on_client_recv) at once */
	}
}

static void relay_conn_on_shutdown(uv_shutdown_t *req, int status)
{
	struct relay_conn *c = req->data;
	if (status == UV_ECANCELED || c->finished)
		return;
	/* ENOTCONN: the upstream already closed both ways (it answered a
	 * close_notify by hanging up): nothing left to shut down. */
	if (status < 0 && status != UV_ENOTCONN) {
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
	if (c->x && c->x->upc)
		upconn_shutdown(c->x->upc);
	if (!c->connected || c->up_shutdown || c->finished)
		return;
	c->up_shutdown = true;
	c->shutdown_req.data = c;
	int rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->up, relay_conn_on_shutdown);
	if (rc == UV_ENOTCONN) {
		c->up_shutdown_done = true;
		relay_conn_check_done(c);
	} else if (rc < 0) {
		relay_conn_upstream_failed(c, "upstream shutdown", rc);
		return;
	}
	relay_conn_half_closed(c);
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
	if (c->client_paused && c->connected && c->mode != MODE_UP_HS && c->mode != MODE_PARENT &&
	    c->queued <= c->relay->cfg.max_buffer / 2)
		relay_conn_resume_client(c);
}

/* Bytes to the upstream socket: straight in when nothing is queued, the
 * rest copied into a write request. False when the flow ended. */
static bool relay_conn_up_send(struct relay_conn *c, const uint8_t *data, size_t len)
{
	size_t done = 0;
	if (c->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&c->up, &b, 1);
		if (n >= 0)
			done = (size_t)n;
		else if (n != UV_EAGAIN) {
			relay_conn_upstream_failed(c, "upstream write", n);
			return false;
		}
	}
	if (done == len)
		return true;
	size_t rest = len - done;
	struct relay_write *w = malloc(sizeof(*w) + rest);
	if (!w) {
		relay_conn_oom(c);
		return false;
	}
	memcpy(w->data, data + done, rest);
	w->len = rest;
	w->req.data = c;
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->up, &b, 1, relay_conn_on_write);
	if (rc < 0) {
		free(w);
		relay_conn_upstream_failed(c, "upstream write", rc);
		return false;
	}
	c->queued += rest;
	if (c->queued > c->relay->cfg.max_buffer) {
		c->relay->stats.client_pauses++;
		relay_conn_pause_client(c);
	}
	return true;
}

/* What the upstream TLS leg produced goes to the socket. */
static bool relay_conn_up_flush(struct relay_conn *c)
{
	const uint8_t *p;
	size_t n = tls_leg_out(&c->x->up, &p);
	if (n == 0)
		return true;
	bool ok = relay_conn_up_send(c, p, n);
	if (c->x)
		tls_leg_consume(&c->x->up, n);
	return ok;
}

/* What the client TLS leg produced goes to the netstack, as far as it takes;
 * the rest waits in the leg for ops.sent. */
static void relay_conn_client_flush(struct relay_conn *c)
{
	if (!c->cs)
		return;
	const uint8_t *p;
	size_t n;
	while ((n = tls_leg_out(&c->x->cl, &p)) > 0) {
		size_t w = stream_write(c->cs, p, n);
		tls_leg_consume(&c->x->cl, w);
		if (w < n)
			break;
	}
}

static size_t relay_conn_client_pending(const struct relay_conn *c)
{
	if (c->x && c->x->cl_tls) {
		const uint8_t *p;
		return tls_leg_out(&c->x->cl, &p);
	}
	return c->pending_len + (c->x ? c->x->clout.len : 0);
}

/* Plain HTTP from the active layer: to the netstack as far as it takes. */
static void relay_conn_clout_flush(struct relay_conn *c)
{
	struct strbuf *b = &c->x->clout;
	if (!c->cs || b->len == 0)
		return;
	size_t n = stream_write(c->cs, (const uint8_t *)b->p, b->len);
	if (n == b->len) {
		strbuf_reset(b);
		return;
	}
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
	b->p[b->len] = '\0';
}

static void relay_conn_client_tls_data(struct relay_conn *c);
static void relay_conn_upstream_tls_data(struct relay_conn *c);
static void relay_conn_sniff(struct relay_conn *c);
static void relay_conn_rules_start(struct relay_conn *c, const char *scheme, bool h2);
static void relay_conn_rw_client(struct relay_conn *c, const uint8_t *p, size_t n);
static bool pace_take(struct relay_conn *c, int d, size_t n);
static size_t pace_room(struct relay_conn *c, size_t room, bool *paced);
static void relay_conn_client_tls_failed(struct relay_conn *c, const char *how);
static void relay_conn_client_hs_done(struct relay_conn *c);
static void relay_conn_upstream_ready(struct relay_conn *c, bool ok);

/* FAIL: the 502's connection ends in order (close_notify, FIN); the record
 * keeps the upstream's failure. */
static void relay_conn_fail_close(struct relay_conn *c)
{
	tls_leg_close_notify(&c->x->cl);
	relay_conn_client_flush(c);
	relay_conn_finish(c, "tls:upstream_error", END_GRACEFUL);
}

/* The client half-closed while a handshake was pending: it can never send
 * its Finished, so nothing can come of the connection. After our
 * Certificate that is a rejection (see relay_conn_client_tls_data); before
 * it, the client gave up (during the upstream handshake, for one). */
static void relay_conn_client_fin_in_handshake(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	c->client_fin = true;
	if (c->mode == MODE_CLIENT_HS || c->mode == MODE_FAIL) {
		relay_conn_client_tls_data(c); /* a hang-up after our flight is recorded there */
		if (c->finished || x->cl.done)
			return;
	}
	if (c->mode == MODE_FAIL) {
		relay_conn_finish(c, "tls:upstream_error", END_GRACEFUL);
		return;
	}
	c->relay->stats.tls_client_failed++;
	snprintf(x->tls_error, sizeof(x->tls_error), "client TLS: closed during the %shandshake",
		 c->mode == MODE_UP_HS ? "upstream " : "");
	relay_conn_finish(c, "tls:client_error", END_GRACEFUL);
}

static void relay_conn_on_client_recv(void *arg, const uint8_t *data, size_t len)
{
	struct relay_conn *c = arg;
	if (c->finished)
		return;
	if (len == 0) {
		if (c->mode == MODE_SNIFF && c->x && c->x->sniff_len > 0) {
			/* Undecided when the client stopped: relay what it sent. */
			c->x->proto = "raw";
			c->mode = MODE_RAW;
			relay_conn_disarm(c); /* the sniff timeout */
			keep_first(c->x->first_up, &c->x->first_up_len, &c->x->first_up_size,
				   c->x->sniff, c->x->sniff_len);
			if (!relay_conn_up_send(c, c->x->sniff, c->x->sniff_len))
				return;
			free(c->x->sniff);
			c->x->sniff = NULL;
			c->x->sniff_len = 0;
		}
		if (c->mode == MODE_UP_HS && c->x->cl_plain) {
			/* A plaintext client may half-close after its request:
			 * passed on once the upstream leg is up. */
			c->client_fin = true;
			return;
		}
		if (c->mode == MODE_UP_HS || c->mode == MODE_CLIENT_HS ||
		    (c->mode == MODE_FAIL && !c->x->cl.done)) {
			relay_conn_client_fin_in_handshake(c);
			if (c->finished)
				return;
		}
		if (c->mode == MODE_FAIL) {
			relay_conn_fail_close(c); /* no request will come */
			return;
		}
		if (c->mode == MODE_TLS && c->x->cl_tls)
			obs_client(c, NULL, 0);
		if (c->mode == MODE_TLS && c->x->cl.plain) {
			tls_leg_close_notify(&c->x->up);
			if (!relay_conn_up_flush(c))
				return;
		}
		relay_conn_client_done(c);
		return;
	}
	c->flow.bytes_up += len;
	c->relay->stats.bytes_up += len;
	if (!pace_take(c, 0, len))
		relay_conn_pause_client(c); /* the throttle's timer resumes it */

	switch (c->mode) {
	case MODE_RAW:
		if (c->x) {
			keep_first(c->x->first_up, &c->x->first_up_len, &c->x->first_up_size, data,
				   len);
			obs_client(c, data, len);
			if (c->x->rw) {
				relay_conn_rw_client(c, data, len);
				return;
			}
		}
		(void)relay_conn_up_send(c, data, len);
		return;
	case MODE_SNIFF:
	case MODE_UP_HS: {
		struct relay_icpt *x = c->x;
		if (!x) {
			x = c->x = calloc(1, sizeof(*x));
			if (!x) {
				relay_conn_oom(c);
				return;
			}
			flowlog_format_addr((const struct sockaddr *)&c->flow.server, x->authority);
		}
		uint8_t *nb = realloc(x->sniff, x->sniff_len + len);
		if (!nb) {
			relay_conn_oom(c);
			return;
		}
		x->sniff = nb;
		memcpy(x->sniff + x->sniff_len, data, len);
		x->sniff_len += len;
		if (c->mode == MODE_SNIFF) {
			relay_conn_sniff(c);
			/* Undecided: the rest must come within the sniff timeout. */
			if (!c->finished && c->mode == MODE_SNIFF && !c->half_timer &&
			    !uv_is_active((uv_handle_t *)&c->timer))
				relay_conn_arm(c, c->relay->cfg.sniff_timeout_ms);
		} else if (x->sniff_len >= SNIFF_MAX_HELLO) {
			/* UP_HS: bytes after the ClientHello (a client does not
			 * send any before our answer, as a rule) are held up to
			 * this bound, then the netstack holds the rest. The
			 * client is not paused before: its FIN must reach us. */
			relay_conn_pause_client(c);
		}
		return;
	}
	case MODE_CLIENT_HS:
	case MODE_TLS:
	case MODE_FAIL:
		if (tls_leg_feed(&c->x->cl, data, len) < 0) {
			relay_conn_oom(c);
			return;
		}
		relay_conn_client_tls_data(c);
		return;
	case MODE_DIAL:
	case MODE_PARENT:
		return; /* paused: cannot happen */
	}
}

/* ---- deciding what the stream is ---------------------------------------- */

/* Relay the held bytes as they are, from now on. */
static void relay_conn_go_raw(struct relay_conn *c, const char *proto, enum obs_kind obs,
			      const char *scheme)
{
	struct relay_icpt *x = c->x;
	x->proto = proto;
	c->mode = MODE_RAW;
	if (!c->half_timer)
		relay_conn_disarm(c); /* the sniff timeout */
	obs_start(c, obs, scheme);
	if (obs == OBS_HTTP1)
		relay_conn_rules_start(c, "http", false);
	uint8_t *held = x->sniff;
	size_t n = x->sniff_len;
	x->sniff = NULL;
	x->sniff_len = 0;
	if (n) {
		keep_first(x->first_up, &x->first_up_len, &x->first_up_size, held, n);
		obs_client(c, held, n);
		if (x->rw)
			relay_conn_rw_client(c, held, n);
		else
			(void)relay_conn_up_send(c, held, n);
	}
	free(held);
	if (c->finished)
		return;
	relay_conn_read_on(c);
	relay_conn_half_closed(c);
}

/* The SNI, or the dialled IP when there is none. */
static const char *relay_conn_host(const struct relay_conn *c, char buf[static INET6_ADDRSTRLEN])
{
	if (c->x->hello.sni_present && !c->x->hello.sni_is_ip)
		return c->x->hello.sni;
	unsigned port;
	(void)flowlog_format_ip((const struct sockaddr *)&c->flow.server, buf, &port);
	return buf;
}

static uint64_t relay_now_s(const struct relay *r)
{
	return uv_now(r->loop) / 1000;
}

/* ---- shaped flows (relay_shape) ----------------------------------------- */

/* The ALPN list offered upstream for a declared protocol; AUTO and RAW keep
 * what the client offered. */
static void shape_alpn_wire(enum relay_proto proto, const uint8_t **alpn, size_t *len)
{
	if (proto == RELAY_PROTO_HTTP) {
		*alpn = (const uint8_t *)"\x08http/1.1";
		*len = 9;
	} else if (proto == RELAY_PROTO_HTTP2 || proto == RELAY_PROTO_GRPC) {
		*alpn = (const uint8_t *)"\x02h2";
		*len = 3;
	}
}

static bool hello_offers(const struct sniff_hello *h, const char *proto);

/* What a TLS client is given when the upstream speaks plaintext: the
 * declared protocol when the client offers it; for AUTO HTTP/1.1 first,
 * as nothing says the upstream speaks h2c. */
static const char *shape_client_alpn(const struct relay_shape *sh, const struct sniff_hello *h)
{
	switch (sh->proto) {
	case RELAY_PROTO_RAW:
		return NULL;
	case RELAY_PROTO_HTTP:
		return hello_offers(h, "http/1.1") ? "http/1.1" : NULL;
	case RELAY_PROTO_HTTP2:
	case RELAY_PROTO_GRPC:
		return hello_offers(h, "h2")         ? "h2"
		       : hello_offers(h, "grpc-exp") ? "grpc-exp"
						     : NULL;
	case RELAY_PROTO_AUTO:
		break;
	}
	return hello_offers(h, "http/1.1") ? "http/1.1" : hello_offers(h, "h2") ? "h2" : NULL;
}

/* A plaintext client and a TLS upstream: the upstream handshake, with the
 * client's bytes held (they go into a plain client leg once it is done). */
static void relay_conn_originate_tls(struct relay_conn *c, enum sniff_proto k)
{
	struct relay *r = c->relay;
	struct relay_icpt *x = c->x;
	const struct relay_shape *sh = c->shape;
	enum relay_proto proto = sh->proto;
	if (proto == RELAY_PROTO_AUTO)
		proto = k == SNIFF_HTTP1                ? RELAY_PROTO_HTTP
			: k == SNIFF_H2_PRIOR_KNOWLEDGE ? RELAY_PROTO_HTTP2
							: RELAY_PROTO_RAW;
	x->cl_plain = true;
	x->raw_inside = proto == RELAY_PROTO_RAW;
	x->proto = proto == RELAY_PROTO_RAW ? "raw" : proto == RELAY_PROTO_HTTP ? "http" : "h2c";
	if (!r->cfg.tls) {
		snprintf(x->tls_error, sizeof(x->tls_error), "upstream TLS: no TLS context");
		relay_conn_finish(c, "tls:upstream_error", END_RESET_BOTH);
		return;
	}
	const uint8_t *alpn = NULL;
	size_t alpn_len = 0;
	shape_alpn_wire(proto, &alpn, &alpn_len);
	if (tls_leg_upstream(r->cfg.tls, &x->up, sh->name, (const struct sockaddr *)&c->upstream,
			     alpn, alpn_len) < 0) {
		relay_conn_oom(c);
		return;
	}
	if (sh->insecure >= 0)
		x->up.insecure = sh->insecure;
	x->up_tls = true;
	c->mode = MODE_UP_HS;
	relay_conn_arm(c, r->cfg.handshake_timeout_ms);
	(void)tls_leg_handshake(&x->up);
	if (!relay_conn_up_flush(c))
		return;
	relay_conn_read_on(c);
}

/* What the listener declared decides, where it can; false: sniff on as
 * for the tunnel (an undecided plaintext, both sides plain, AUTO). */
static bool relay_conn_sniff_shaped(struct relay_conn *c, enum sniff_proto k)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	const struct relay_shape *sh = c->shape;
	bool plain_raw = sh->client == RELAY_CLIENT_PLAIN && sh->proto == RELAY_PROTO_RAW;
	if (k == SNIFF_NEED_MORE && !plain_raw && x->sniff_len < SNIFF_MAX_HELLO)
		return false;
	if (k == SNIFF_TLS && sh->client != RELAY_CLIENT_PLAIN)
		return false; /* the ClientHello path, shaped in relay_conn_start_tls */
	if (k != SNIFF_TLS && sh->client == RELAY_CLIENT_TLS) {
		r->stats.tls_client_failed++;
		snprintf(x->tls_error, sizeof(x->tls_error),
			 "client TLS: the client did not begin TLS");
		relay_conn_finish(c, "tls:client_error", END_RESET_BOTH);
		return true;
	}
	if (!sh->upstream_tls && !plain_raw && k != SNIFF_TLS && sh->proto == RELAY_PROTO_AUTO)
		return false;
	if (k == SNIFF_HTTP1)
		r->stats.proto_http++;
	else if (k == SNIFF_H2_PRIOR_KNOWLEDGE)
		r->stats.proto_h2c++;
	else if (k == SNIFF_TLS)
		r->stats.proto_tls++;
	else
		r->stats.proto_raw++;
	if (sh->upstream_tls) {
		relay_conn_originate_tls(c, plain_raw ? SNIFF_OTHER : k);
		return true;
	}
	switch (plain_raw || k == SNIFF_TLS ? RELAY_PROTO_RAW : sh->proto) {
	case RELAY_PROTO_RAW:
		relay_conn_go_raw(c, k == SNIFF_TLS ? "tls-passthrough" : "raw", OBS_NONE, NULL);
		return true;
	case RELAY_PROTO_HTTP:
		relay_conn_go_raw(c, "http", OBS_HTTP1, "http");
		return true;
	case RELAY_PROTO_HTTP2:
	case RELAY_PROTO_GRPC:
		relay_conn_go_raw(c, "h2c", OBS_H2, "http");
		return true;
	case RELAY_PROTO_AUTO:
		break;
	}
	return false; /* not reached */
}

static void relay_conn_start_tls(struct relay_conn *c)
{
	struct relay *r = c->relay;
	struct relay_icpt *x = c->x;
	char hostbuf[INET6_ADDRSTRLEN];
	const char *host = relay_conn_host(c, hostbuf);
	const struct relay_shape *sh = c->shape;
	const char *rule =
		r->cfg.passthrough && !sh ? passthru_rule(r->cfg.passthrough, host) : NULL;
	if (rule) {
		snprintf(x->passthrough, sizeof(x->passthrough), "rule:%s", rule);
		r->stats.passthrough_rule++;
	} else if (r->cfg.passthrough && !sh &&
		   passthru_auto_has(r->cfg.passthrough, c->flow.peer, host, relay_now_s(r))) {
		snprintf(x->passthrough, sizeof(x->passthrough), "auto");
		r->stats.passthrough_auto++;
	}
	if (x->passthrough[0] || !r->cfg.tls || (r->cfg.no_intercept && !sh)) {
		relay_conn_go_raw(c, "tls-passthrough", OBS_NONE, NULL);
		return;
	}
	x->raw_inside = sh && sh->proto == RELAY_PROTO_RAW;
	if (sh && !sh->upstream_tls) {
		/* TLS ends here: the upstream gets the plaintext. */
		const char *pick = shape_client_alpn(sh, &x->hello);
		if (tls_leg_plain(r->cfg.tls, &x->up, false, (const uint8_t *)pick,
				  pick ? strlen(pick) : 0) < 0) {
			relay_conn_oom(c);
			return;
		}
		x->up_tls = true;
		x->proto = "tls";
		relay_conn_upstream_ready(c, true);
		return;
	}
	const char *sni = x->hello.sni_present && !x->hello.sni_is_ip ? x->hello.sni : NULL;
	const uint8_t *alpn = x->hello.alpn_wire;
	size_t alpn_len = x->hello.alpn_wire_len;
	if (sh) {
		sni = sh->name;
		shape_alpn_wire(sh->proto, &alpn, &alpn_len);
	}
	if (tls_leg_upstream(r->cfg.tls, &x->up, sni, (const struct sockaddr *)&c->upstream, alpn,
			     alpn_len) < 0) {
		relay_conn_oom(c);
		return;
	}
	if (sh && sh->insecure >= 0)
		x->up.insecure = sh->insecure;
	x->up_tls = true;
	x->proto = "tls";
	c->mode = MODE_UP_HS;
	relay_conn_arm(c, r->cfg.handshake_timeout_ms);
	(void)tls_leg_handshake(&x->up); /* the ClientHello */
	if (!relay_conn_up_flush(c))
		return;
	relay_conn_read_on(c);
}

static void relay_conn_sniff(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	enum sniff_proto k = sniff_classify(x->sniff, x->sniff_len);
	if (c->shape && relay_conn_sniff_shaped(c, k))
		return;
	switch (k) {
	case SNIFF_NEED_MORE:
		if (x->sniff_len >= SNIFF_MAX_HELLO) {
			r->stats.proto_raw++;
			relay_conn_go_raw(c, "raw", OBS_NONE, NULL);
		}
		return;
	case SNIFF_TLS: {
		int rc = sniff_client_hello(x->sniff, x->sniff_len, &x->hello);
		if (rc == -EAGAIN)
			return;
		r->stats.proto_tls++;
		if (rc < 0) {
			snprintf(x->tls_error, sizeof(x->tls_error), "ClientHello not parsed: %s",
				 x->hello.reason ? x->hello.reason : "malformed");
			relay_conn_go_raw(c, "tls-passthrough", OBS_NONE, NULL);
			return;
		}
		relay_conn_start_tls(c);
		return;
	}
	case SNIFF_HTTP1:
		r->stats.proto_http++;
		relay_conn_go_raw(c, "http", OBS_HTTP1, "http");
		return;
	case SNIFF_H2_PRIOR_KNOWLEDGE:
		r->stats.proto_h2c++;
		relay_conn_go_raw(c, "h2c", OBS_H2, "http");
		return;
	case SNIFF_OTHER:
		r->stats.proto_raw++;
		relay_conn_go_raw(c, "raw", OBS_NONE, NULL);
		return;
	}
}

/* ---- TLS ---------------------------------------------------------------- */

/* Whether the client's ALPN list has this protocol. */
static bool hello_offers(const struct sniff_hello *h, const char *proto)
{
	size_t len = strlen(proto);
	for (size_t i = 0; i < h->n_alpn; i++)
		if (h->alpn_wire[h->alpn_off[i]] == len &&
		    memcmp(h->alpn_wire + h->alpn_off[i] + 1, proto, len) == 0)
			return true;
	return false;
}

/* ALPN protocols that are HTTP/2: "h2", and "grpc-exp", which grpc-core
 * offers before h2 and its servers pick (the same protocol under another
 * name). */
static bool alpn_is_h2(const uint8_t *p, size_t len)
{
	return (len == 2 && memcmp(p, "h2", 2) == 0) || (len == 8 && memcmp(p, "grpc-exp", 8) == 0);
}

/* Client leg with a leaf for this host; `alpn` is what to select. */
static bool relay_conn_client_leg(struct relay_conn *c, X509 *upstream_cert, const uint8_t *alpn,
				  size_t alpn_len)
{
	struct relay_icpt *x = c->x;
	struct tls_ctx *t = c->relay->cfg.tls;
	if (x->cl_plain) {
		/* The upstream's choice, or what the client's bytes are. */
		if (!alpn_len && !x->raw_inside) {
			alpn = (const uint8_t *)(strcmp(x->proto, "h2c") == 0 ? "h2" : "http/1.1");
			alpn_len = strlen((const char *)alpn);
		}
		if (tls_leg_plain(t, &x->cl, true, alpn, alpn_len) < 0) {
			relay_conn_oom(c);
			return false;
		}
	} else {
		const char *sni = x->hello.sni_present ? x->hello.sni
				  : c->shape           ? c->shape->name
						       : NULL;
		X509 *leaf = tls_leaf_for(t, sni, (const struct sockaddr *)&c->flow.server,
					  upstream_cert);
		if (!leaf) {
			snprintf(x->tls_error, sizeof(x->tls_error), "cannot mint a certificate");
			relay_conn_finish(c, "error", END_RESET_BOTH);
			return false;
		}
		int rc = tls_leg_client(t, &x->cl, leaf, alpn, alpn_len);
		X509_free(leaf);
		if (rc < 0) {
			relay_conn_oom(c);
			return false;
		}
	}
	x->cl_tls = true;
	/* The ClientHello (and whatever followed it) goes in first. */
	if (tls_leg_feed(&x->cl, x->sniff, x->sniff_len) < 0) {
		relay_conn_oom(c);
		return false;
	}
	free(x->sniff);
	x->sniff = NULL;
	x->sniff_len = 0;
	return true;
}

/* The upstream handshake ended, well or not. */
static void relay_conn_upstream_ready(struct relay_conn *c, bool ok)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	char why[160];
	if (ok && !x->up_leg) {
		/* Kept even when it does not verify: the record shows what failed. */
		x->up_leg = tls_leg_json(&x->up);
		json_t *cert = tls_leg_cert_json(&x->up);
		if (x->up_leg && cert)
			json_object_set_new(x->up_leg, "cert", cert);
		else
			json_decref(cert);
	}
	if (ok && tls_leg_verify(&x->up, why, sizeof(why)) < 0) {
		snprintf(x->tls_error, sizeof(x->tls_error), "upstream certificate: %s", why);
		ok = false;
	} else if (!ok) {
		tls_leg_error(&x->up, why, sizeof(why));
		snprintf(x->tls_error, sizeof(x->tls_error), "upstream TLS: %s", why);
	}
	relay_conn_stop_reading(c);
	if (ok) {
		const uint8_t *alpn;
		unsigned alen;
		tls_leg_alpn(&x->up, &alpn, &alen);
		if (!relay_conn_client_leg(c, tls_leg_peer_cert(&x->up), alpn, alen))
			return;
		c->mode = MODE_CLIENT_HS;
	} else {
		/* The client learns why from a 502 page when it speaks HTTP/1.1. */
		r->stats.tls_upstream_failed++;
		log_info("%s: %s", x->up.host, x->tls_error);
		/* Nothing more will be said to the upstream: let it go now (its
		 * FIN or reset could not be seen any more). */
		if (!uv_is_closing((uv_handle_t *)&c->up))
			uv_close((uv_handle_t *)&c->up, relay_conn_on_close);
		if (x->raw_inside) {
			relay_conn_finish(c, "tls:upstream_error", END_RESET_BOTH);
			return; /* no protocol to say why in */
		}
		/* HTTP/1.1 when offered (or no ALPN at all), else HTTP/2 (gRPC). */
		const char *pick = hello_offers(&x->hello, "http/1.1")   ? "http/1.1"
				   : hello_offers(&x->hello, "h2")       ? "h2"
				   : hello_offers(&x->hello, "grpc-exp") ? "grpc-exp"
									 : NULL;
		if (!relay_conn_client_leg(c, NULL, (const uint8_t *)pick, pick ? strlen(pick) : 0))
			return;
		c->mode = MODE_FAIL;
	}
	/* The client has this long to finish its handshake. */
	relay_conn_arm(c, r->cfg.handshake_timeout_ms);
	relay_conn_resume_client(c);
	if (x->cl.plain) {
		/* No handshake on a plaintext client's side. */
		relay_conn_client_hs_done(c);
		if (c->finished)
			return;
	}
	if (!c->finished)
		relay_conn_client_tls_data(c);
	if (!c->finished && x->cl.plain && c->client_fin && c->mode == MODE_TLS) {
		/* The FIN that came during the upstream handshake. */
		tls_leg_close_notify(&x->up);
		if (!relay_conn_up_flush(c))
			return;
		relay_conn_client_done(c);
	}
}

/* ---- rules: the active HTTP/1.1 layer ------------------------------------ */

static void rw_to_upstream(void *ctx, const uint8_t *p, size_t n)
{
	struct relay_conn *c = ctx;
	if (c->finished)
		return;
	if (c->x->detached) {
		if (!c->x->upc || upconn_write(c->x->upc, p, n) < 0)
			return; /* its error callback ends the flow */
		if (upconn_queued(c->x->upc) > UPCONN_MAX_QUEUED / 2) {
			c->relay->stats.client_pauses++;
			relay_conn_pause_client(c);
		}
		return;
	}
	if (!c->x->up_tls) {
		(void)relay_conn_up_send(c, p, n);
		return;
	}
	if (tls_leg_write(&c->x->up, p, n) != TLS_OK) {
		relay_conn_finish(c, "error", END_RESET_BOTH);
		return;
	}
	(void)relay_conn_up_flush(c);
}

static void rw_to_client(void *ctx, const uint8_t *p, size_t n)
{
	struct relay_conn *c = ctx;
	if (c->finished)
		return;
	obs_server(c, p, n);
	if (!c->x->cl_tls) {
		/* Bounded by what the layer writes: the upstream is read only
		 * while this is empty, and answers are capped. */
		if (strbuf_append(&c->x->clout, p, n) < 0) {
			relay_conn_oom(c);
			return;
		}
		relay_conn_clout_flush(c);
	} else if (tls_leg_write(&c->x->cl, p, n) != TLS_OK) {
		relay_conn_finish(c, "error", END_RESET_BOTH);
		return;
	} else {
		relay_conn_client_flush(c);
	}
	/* A redirect's server is read only as fast as the client takes. */
	if (c->x->upc && !c->x->upc_paused && relay_conn_client_pending(c) > RELAY_READ_SIZE) {
		c->x->upc_paused = true;
		upconn_pause(c->x->upc);
	}
}

/* ---- rules: redirects to another server ----------------------------------- */

static void upc_ready(void *ctx, int err, const char *why)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	if (c->finished)
		return;
	if (err < 0) {
		snprintf(c->flow.error, sizeof(c->flow.error), "redirect: %s", why);
		h1rw_upstream_failed(x->rw, why);
		if (x->cl_tls)
			relay_conn_client_flush(c);
		relay_conn_finish(c, "error", END_GRACEFUL);
		return;
	}
	h1rw_resume(x->rw);
	if (!c->finished && h1rw_backlog(x->rw) <= H1RW_MAX_HELD / 2)
		relay_conn_resume_client(c);
}

static void upc_data(void *ctx, const uint8_t *p, size_t n)
{
	struct relay_conn *c = ctx;
	if (c->finished)
		return;
	c->flow.bytes_down += n;
	c->relay->stats.bytes_down += n;
	h1rw_server(c->x->rw, p, n);
	if (!c->finished)
		relay_conn_resume_client(c); /* a held request may have gone on */
}

static void upc_eof(void *ctx)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	if (c->finished)
		return;
	h1rw_server_eof(x->rw);
	if (c->finished)
		return;
	if (x->cl_tls) {
		tls_leg_close_notify(&x->cl);
		relay_conn_client_flush(c);
	}
	c->upstream_eof = true;
	relay_conn_down_done(c);
	relay_conn_half_closed(c);
}

static void upc_error(void *ctx, const char *why)
{
	struct relay_conn *c = ctx;
	if (c->finished)
		return;
	c->relay->stats.upstream_resets++;
	snprintf(c->flow.error, sizeof(c->flow.error), "redirect: %s", why);
	relay_conn_finish(c, "upstream_reset", END_RESET_CLIENT);
}

static void upc_drained(void *ctx)
{
	struct relay_conn *c = ctx;
	if (!c->finished && h1rw_backlog(c->x->rw) <= H1RW_MAX_HELD / 2)
		relay_conn_resume_client(c);
}

/* A redirect's server passes the destination policy as a dialled one does. */
static int upc_allow(void *ctx, const struct sockaddr *addr, struct sockaddr_storage *dial,
		     char *why, size_t whylen)
{
	struct relay_conn *c = ctx;
	struct relay *r = c->relay;
	enum policy_verdict v = policy_check(r->cfg.policy, IPPROTO_TCP, addr, dial);
	if (v == POLICY_LOCAL_SERVICE) {
		snprintf(why, whylen, "refused: one of our own services");
		return -1;
	}
	if (policy_refused(v)) {
		snprintf(why, whylen, "refused (%s)", r->refusal[v]);
		return -1;
	}
	return 0;
}

static const struct upconn_ops upc_ops = { .ready = upc_ready,
					   .data = upc_data,
					   .eof = upc_eof,
					   .error = upc_error,
					   .drained = upc_drained,
					   .allow = upc_allow };

/* The dialled upstream is let go, with a close_notify: from the first
 * redirect on, every request goes through an upconn of its own. */
static void relay_conn_detach(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	x->detached = true;
	relay_conn_stop_reading(c);
	if (x->up_tls) {
		tls_leg_close_notify(&x->up);
		(void)relay_conn_up_flush(c);
	}
	c->up_shutdown = true;
	c->up_shutdown_done = true;
	relay_conn_close_upstream(c, false);
}

static void rw_retarget(void *ctx, const struct h1rw_target *t)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	if (c->finished)
		return;
	if (x->upc) {
		upconn_close(x->upc, false);
		x->upc = NULL;
		x->upc_paused = false;
	}
	if (!x->detached)
		relay_conn_detach(c);
	static const uint8_t h1[] = "\x08http/1.1";
	struct upconn_target ut = { .alpn = h1, .alpn_len = sizeof(h1) - 1 };
	char ip[INET6_ADDRSTRLEN];
	if (t) {
		ut.host = t->host;
		ut.port = t->port;
		ut.tls = strcmp(t->scheme, "https") == 0;
	} else {
		/* Back to the dialled server: its address, the client's SNI. */
		unsigned port = 0;
		(void)flowlog_format_ip((const struct sockaddr *)&c->upstream, ip, &port);
		ut.host = ip;
		ut.port = (uint16_t)port;
		ut.tls = x->up_tls;
		ut.sni = x->hello.sni_present && !x->hello.sni_is_ip ? x->hello.sni : NULL;
	}
	x->upc = upconn_open(r->loop, r->cfg.tls, &ut, &upc_ops, c, r->cfg.connect_timeout_ms);
	if (!x->upc) {
		relay_conn_oom(c);
		return;
	}
	r->stats.redirects++;
}

static void rw_reset(void *ctx, const char *rule_id)
{
	struct relay_conn *c = ctx;
	snprintf(c->flow.error, sizeof(c->flow.error), "reset by rule %s", rule_id);
	relay_conn_finish(c, "rule:block", END_RESET_BOTH);
}

static void rw_delay_fired(uv_timer_t *t)
{
	struct relay_delay *d = t->data;
	struct relay_conn *c = d->c;
	if (!c || c->finished || !c->x || !c->x->rw)
		return;
	h1rw_resume(c->x->rw);
	if (!c->finished && h1rw_backlog(c->x->rw) <= H1RW_MAX_HELD / 2 && c->connected)
		relay_conn_resume_client(c);
}

static void rw_delay(void *ctx, uint32_t ms)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	if (!x->delay) {
		x->delay = calloc(1, sizeof(*x->delay));
		if (!x->delay) {
			h1rw_resume(x->rw); /* no timer: no delay */
			return;
		}
		uv_timer_init(c->relay->loop, &x->delay->t);
		x->delay->t.data = x->delay;
		x->delay->c = c;
	}
	uv_update_time(c->relay->loop);
	uv_timer_start(&x->delay->t, rw_delay_fired, ms, 0);
}

/* ---- rules: breakpoints -------------------------------------------------- */

static enum held_phase rw_held_phase(struct relay_icpt *x, uint64_t id)
{
	return x->held_id[0] == id ? HELD_REQUEST : HELD_RESPONSE;
}

static void rw_held_release(void *ctx, uint64_t id, const struct held_edits *e)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	if (c->finished || !x || !x->rw)
		return;
	enum held_phase ph = rw_held_phase(x, id);
	x->held_id[ph - 1] = 0;
	h1rw_release(x->rw, ph, e);
	if (!c->finished && c->connected && h1rw_backlog(x->rw) <= H1RW_MAX_HELD / 2)
		relay_conn_resume_client(c);
}

/* A kill resets the connection both ways; the tcp record says so. */
static void rw_held_kill(void *ctx, uint64_t id)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	if (c->finished || !x || !x->rw)
		return;
	enum held_phase ph = rw_held_phase(x, id);
	x->held_id[ph - 1] = 0;
	bool ws = h1rw_websocket(x->rw);
	h1rw_kill(x->rw, ph);
	snprintf(c->flow.error, sizeof(c->flow.error), "killed at a breakpoint (the %s)",
		 ws                   ? (ph == HELD_REQUEST ? "client's WebSocket message"
							    : "server's WebSocket message")
		 : ph == HELD_REQUEST ? "request"
				      : "response");
	relay_conn_finish(c, "rule:breakpoint_killed", END_RESET_BOTH);
}

static const struct held_item_ops rw_held_ops = { .release = rw_held_release,
						  .kill = rw_held_kill };

static int rw_hold(void *ctx, enum held_phase ph, json_t *info)
{
	struct relay_conn *c = ctx;
	struct relay *r = c->relay;
	if (!r->held || c->finished) {
		json_decref(info);
		return -1;
	}
	char a[FLOWLOG_ADDR_LEN];
	json_object_set_new(info, "conn", json_string(c->flow.id));
	flowlog_format_addr((const struct sockaddr *)&c->flow.client, a);
	json_object_set_new(info, "client", json_string(a));
	uint64_t id = held_add(r->held, info, &rw_held_ops, c, uv_now(r->loop));
	if (!id)
		return -1;
	c->x->held_id[ph - 1] = id;
	return 0;
}

static void rw_unhold(void *ctx, enum held_phase ph, const char *why)
{
	struct relay_conn *c = ctx;
	held_remove(c->relay->held, c->x->held_id[ph - 1], why);
	c->x->held_id[ph - 1] = 0;
}

/* ---- rules: throttles ------------------------------------------------------ */

/* The smallest amount a paced side moves at once: a tenth of a second's
 * worth, within [1 KiB, RELAY_READ_LOWAT]. */
static double pace_quantum(uint64_t rate)
{
	uint64_t q = rate / 10;
	return (double)(q < 1024 ? 1024 : q > RELAY_READ_LOWAT ? RELAY_READ_LOWAT : q);
}

static void tb_refill(struct relay_tb *b, uint64_t now)
{
	if (!b->rate)
		return;
	double q = pace_quantum(b->rate);
	double burst = (double)(b->rate / 4) > 2 * q ? (double)(b->rate / 4) : 2 * q;
	b->tokens += (double)b->rate * (double)(now - b->at) / 1000.0;
	if (b->tokens > burst)
		b->tokens = burst;
	b->at = now;
}

static bool tb_ok(const struct relay_tb *b)
{
	return !b->rate || b->tokens >= pace_quantum(b->rate);
}

/* ms until the bucket holds a quantum (0: it does, or no rate). */
static uint64_t tb_wait(const struct relay_tb *b)
{
	if (tb_ok(b))
		return 0;
	double need = pace_quantum(b->rate) - b->tokens;
	return (uint64_t)(need * 1000.0 / (double)b->rate) + 1;
}

/* The buckets side d of a flow takes from, refilled to now. */
static void pace_refill(struct relay_pace *p, int d, uint64_t now)
{
	tb_refill(&p->own[d], now);
	if (p->user)
		tb_refill(&p->user->tb[d], now);
}

static bool pace_ok(const struct relay_pace *p, int d)
{
	return tb_ok(&p->own[d]) && (!p->user || tb_ok(&p->user->tb[d]));
}

static bool pace_limits(const struct relay_pace *p, int d)
{
	return p && (p->own[d].rate || (p->user && p->user->tb[d].rate));
}

static void pace_fired(uv_timer_t *t);

static void pace_arm(struct relay_pace *p)
{
	uint64_t wait = 0;
	for (int d = 0; d < 2; d++) {
		if (!p->blocked[d])
			continue;
		uint64_t ms = tb_wait(&p->own[d]);
		if (p->user && tb_wait(&p->user->tb[d]) > ms)
			ms = tb_wait(&p->user->tb[d]);
		if (!ms)
			ms = 1;
		if (!wait || ms < wait)
			wait = ms;
	}
	if (wait)
		uv_timer_start(&p->t, pace_fired, wait, 0);
}

static void pace_fired(uv_timer_t *t)
{
	struct relay_pace *p = t->data;
	struct relay_conn *c = p->c;
	if (!c || c->finished)
		return;
	uint64_t now = uv_now(c->relay->loop);
	for (int d = 0; d < 2; d++) {
		if (!p->blocked[d])
			continue;
		pace_refill(p, d, now);
		if (!pace_ok(p, d))
			continue; /* another flow of the user took them */
		p->blocked[d] = false;
		if (d == 0)
			relay_conn_resume_client(c);
		else
			relay_conn_read_on(c);
	}
	pace_arm(p);
}

/* Bytes `n` came from side `d`: false when that side must wait now. */
static bool pace_take(struct relay_conn *c, int d, size_t n)
{
	struct relay_pace *p = c->pace;
	if (!pace_limits(p, d))
		return true;
	pace_refill(p, d, uv_now(c->relay->loop));
	if (p->own[d].rate)
		p->own[d].tokens -= (double)n;
	if (p->user && p->user->tb[d].rate)
		p->user->tb[d].tokens -= (double)n;
	if (pace_ok(p, d))
		return true;
	p->blocked[d] = true;
	pace_arm(p);
	return false;
}

/* How much side 1 (the upstream) may read now; *paced: a throttle
 * decides (reads may be small). */
static size_t pace_room(struct relay_conn *c, size_t room, bool *paced)
{
	struct relay_pace *p = c->pace;
	*paced = pace_limits(p, 1);
	if (!*paced)
		return room;
	pace_refill(p, 1, uv_now(c->relay->loop));
	if (!pace_ok(p, 1)) {
		p->blocked[1] = true;
		pace_arm(p);
		return 0;
	}
	double t = p->own[1].rate ? p->own[1].tokens : (double)room;
	if (p->user && p->user->tb[1].rate && p->user->tb[1].tokens < t)
		t = p->user->tb[1].tokens;
	return t < (double)room ? (size_t)t : room;
}

static struct relay_pace *relay_conn_pace(struct relay_conn *c)
{
	if (c->pace)
		return c->pace;
	struct relay_pace *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	uv_timer_init(c->relay->loop, &p->t);
	p->t.data = p;
	p->c = c;
	c->pace = p;
	return p;
}

static void rw_throttle(void *ctx, int phase, uint64_t rate)
{
	struct relay_conn *c = ctx;
	int d = phase == RULE_REQUEST ? 0 : 1;
	if (!c->pace && !rate)
		return;
	struct relay_pace *p = relay_conn_pace(c);
	if (!p)
		return; /* no throttle rather than no flow */
	p->own[d].rate = rate;
	p->own[d].at = uv_now(c->relay->loop);
	p->own[d].tokens = rate ? 2 * pace_quantum(rate) : 0;
	if (!rate && p->blocked[d] && pace_ok(p, d)) {
		p->blocked[d] = false;
		if (d == 0)
			relay_conn_resume_client(c);
		else
			relay_conn_read_on(c);
	}
	if (rate)
		c->relay->stats.throttled++;
}

/* The user's shared bucket for a listener's flow (relay_config.user_rate). */
static int relay_conn_user_rate(struct relay_conn *c, const char *user)
{
	struct relay *r = c->relay;
	struct relay_bucket *b;
	for (b = r->buckets; b; b = b->next)
		if (strcmp(b->user, user) == 0)
			break;
	if (!b) {
		size_t n = strlen(user) + 1;
		b = calloc(1, sizeof(*b) + n);
		if (!b)
			return -ENOMEM;
		memcpy(b->user, user, n);
		uint64_t now = uv_now(r->loop);
		for (int d = 0; d < 2; d++) {
			b->tb[d].rate = r->cfg.user_rate[d];
			b->tb[d].tokens = b->tb[d].rate ? 2 * pace_quantum(b->tb[d].rate) : 0;
			b->tb[d].at = now;
		}
		b->next = r->buckets;
		r->buckets = b;
	}
	struct relay_pace *p = relay_conn_pace(c);
	if (!p) {
		if (b->refs == 0) {
			b->refs = 1;
			relay_bucket_unref(r, b);
		}
		return -ENOMEM;
	}
	b->refs++;
	p->user = b;
	return 0;
}

/* Client plaintext into the active layer; the client waits while the
 * layer holds much of it (a delay, a redirect being dialled). */
static void relay_conn_rw_client(struct relay_conn *c, const uint8_t *p, size_t n)
{
	h1rw_client(c->x->rw, p, n);
	if (!c->finished && h1rw_backlog(c->x->rw) > H1RW_MAX_HELD / 2)
		relay_conn_pause_client(c); /* resumed as the delay ends */
}

/* The active HTTP/2 layer's hold timer (one per connection). */
static void rw_h2_timer_fired(uv_timer_t *t)
{
	struct relay_delay *d = t->data;
	struct relay_conn *c = d->c;
	if (!c || c->finished || !c->x || !c->x->h2rw)
		return;
	h2rw_timeout(c->x->h2rw);
}

static void rw_h2_timer(void *ctx, uint32_t ms)
{
	struct relay_conn *c = ctx;
	struct relay_icpt *x = c->x;
	if (!x->delay) {
		x->delay = calloc(1, sizeof(*x->delay));
		if (!x->delay)
			return; /* no timer: the hold ends with the next event */
		uv_timer_init(c->relay->loop, &x->delay->t);
		x->delay->t.data = x->delay;
		x->delay->c = c;
	}
	uv_update_time(c->relay->loop);
	uv_timer_start(&x->delay->t, rw_h2_timer_fired, ms, 0);
}

static void rw_h2_fail(void *ctx, const char *why)
{
	struct relay_conn *c = ctx;
	snprintf(c->flow.error, sizeof(c->flow.error), "%s", why);
	relay_conn_finish(c, "error", END_GRACEFUL);
}

/* Whether a rule may apply: then HTTP/1.1 or HTTP/2 goes through the
 * active layer. */
static void relay_conn_rules_start(struct relay_conn *c, const char *scheme, bool h2)
{
	struct relay *r = c->relay;
	struct relay_icpt *x = c->x;
	const char *sni = x->hello.sni_present && !x->hello.sni_is_ip ? x->hello.sni : NULL;
	const char *peer = c->flow.peer[0] ? c->flow.peer : NULL;
	const char *host = c->shape ? c->shape->authority : NULL;
	if (!host && (!r->rules || !ruleset_may_apply(r->rules, peer, sni)))
		return;
	if (h2) {
		char client[FLOWLOG_ADDR_LEN];
		flowlog_format_addr((const struct sockaddr *)&c->flow.client, client);
		struct h2rw_config hc = { .ops = { .to_upstream = rw_to_upstream,
						   .to_client = rw_to_client,
						   .timer = rw_h2_timer,
						   .fail = rw_h2_fail },
					  .ctx = c,
					  .rules = r->rules,
					  .peer = peer,
					  .scheme = scheme,
					  .default_authority = x->authority,
					  .upstream_authority = host,
					  .held = r->held,
					  .conn = c->flow.id,
					  .client = client };
		x->h2rw = h2rw_new(&hc);
		if (x->h2rw) {
			r->stats.rules_connections++;
			h2rw_flush(x->h2rw); /* both prefaces */
		}
		return;
	}
	struct h1rw_config wc = { .ops = { .to_upstream = rw_to_upstream,
					   .to_client = rw_to_client,
					   .reset = rw_reset,
					   .delay = rw_delay,
					   .retarget = rw_retarget,
					   .hold = rw_hold,
					   .unhold = rw_unhold,
					   .throttle = rw_throttle },
				  .ctx = c,
				  .rules = r->rules,
				  .peer = peer,
				  .scheme = scheme,
				  .default_authority = x->authority,
				  .upstream_authority = host };
	strbuf_init(&x->clout, 0);
	x->rw = h1rw_new(&wc);
	if (x->rw)
		r->stats.rules_connections++;
}

/* Both legs are up: plaintext flows. */
static void relay_conn_tls_established(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	c->mode = MODE_TLS;
	c->relay->stats.intercepted++;
	relay_conn_disarm(c); /* the handshake timeout */
	x->tls_json = json_object();
	json_object_set_new(x->tls_json, "client", tls_leg_json(&x->cl));
	json_object_set_new(x->tls_json, "upstream", tls_leg_json(&x->up));
	const uint8_t *alpn;
	unsigned alen;
	tls_leg_alpn(&x->cl, &alpn, &alen);
	/* The URL's scheme is the upstream's: what was reached, and how. */
	const char *scheme = x->up.plain ? "http" : "https";
	if (x->raw_inside) {
		/* declared raw: no HTTP layer */
	} else if (alpn_is_h2(alpn, alen)) {
		obs_start(c, OBS_H2, scheme);
		relay_conn_rules_start(c, scheme, true);
		if (c->finished)
			return;
	} else if (alen == 0 || (alen == 8 && memcmp(alpn, "http/1.1", 8) == 0) ||
		   (alen == 8 && memcmp(alpn, "http/1.0", 8) == 0)) {
		obs_start(c, OBS_HTTP1, scheme);
		relay_conn_rules_start(c, scheme, false);
	}
	/* Anything the upstream sent meanwhile waits in its leg. */
	relay_conn_upstream_tls_data(c);
	if (c->finished)
		return;
	relay_conn_read_on(c);
	relay_conn_half_closed(c);
}

/* The client leg failed, or the client left it without an alert: `how`
 * says how it left (NULL: the leg's own error). Right after our
 * Certificate (tls_leg_client_rejected) it is a rejection. */
static void relay_conn_client_tls_failed(struct relay_conn *c, const char *how)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	char why[160];
	if (how)
		snprintf(why, sizeof(why), "%s", how);
	else
		tls_leg_error(&x->cl, why, sizeof(why));
	const char *reason;
	if (tls_leg_client_rejected(&x->cl)) {
		r->stats.tls_client_rejected++;
		snprintf(x->tls_error, sizeof(x->tls_error), "client rejected certificate: %s",
			 why);
		reason = "tls:client_rejected";
		char hostbuf[INET6_ADDRSTRLEN];
		const char *host = relay_conn_host(c, hostbuf);
		if (r->cfg.passthrough && !c->shape)
			passthru_auto_add(r->cfg.passthrough, c->flow.peer, host, relay_now_s(r));
		/* One line per host and peer: later connections pass through. */
		log_warn("%s rejected our certificate for %s (%s): if every host fails, the CA is "
			 "not installed (http://" LOCALNAME_HOST
			 "); if only some do, the app pins%s",
			 c->flow.peer[0] ? c->flow.peer : "a client", host, why,
			 r->cfg.passthrough ? " and the host now passes through for it" : "");
	} else {
		r->stats.tls_client_failed++;
		snprintf(x->tls_error, sizeof(x->tls_error), "client TLS: %s", why);
		reason = "tls:client_error";
	}
	relay_conn_client_flush(c); /* our alert */
	relay_conn_finish(c, reason, END_GRACEFUL);
}

/* FAIL: the 502 goes out through the client leg; once it is all out, the
 * connection ends. */
static void relay_conn_fail_answer(struct relay_conn *c, const uint8_t *p, size_t n)
{
	struct relay_icpt *x = c->x;
	if (n) {
		obs_client(c, p, n);
		if (errpage_client(x->err, p, n) < 0) {
			relay_conn_finish(c, "tls:upstream_error", END_RESET_BOTH);
			return;
		}
	}
	const uint8_t *out;
	size_t len = errpage_out(x->err, &out);
	if (len) {
		obs_server(c, out, len);
		if (tls_leg_write(&x->cl, out, len) != TLS_OK) {
			relay_conn_finish(c, "tls:upstream_error", END_RESET_BOTH);
			return;
		}
		errpage_consume(x->err, len);
	}
	if (errpage_done(x->err)) {
		relay_conn_fail_close(c);
		return;
	}
	relay_conn_client_flush(c);
}

/* The client leg's handshake is over (a plain leg has none): the flow is
 * established, or the 502 is ready to answer. */
static void relay_conn_client_hs_done(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	if (c->mode == MODE_CLIENT_HS) {
		relay_conn_tls_established(c);
	} else if (c->mode == MODE_FAIL && !x->tls_json) {
		x->tls_json = json_object();
		json_object_set_new(x->tls_json, "client", tls_leg_json(&x->cl));
		json_object_set_new(x->tls_json, "upstream", json_null());
		const uint8_t *alpn;
		unsigned alen;
		tls_leg_alpn(&x->cl, &alpn, &alen);
		bool h2 = alpn_is_h2(alpn, alen);
		obs_start(c, h2 ? OBS_H2 : OBS_HTTP1, x->cl.plain ? "http" : "https");
		x->err = errpage_new(h2, x->tls_error);
		if (!x->err) {
			relay_conn_oom(c);
			return;
		}
		relay_conn_fail_answer(c, NULL, 0); /* h2: our SETTINGS */
		if (c->finished)
			return;
		/* The request the 502 answers must come this soon. */
		relay_conn_arm(c, c->relay->cfg.handshake_timeout_ms);
	}
}

/* Client leg: drive the handshake, then pass plaintext upstream. */
static void relay_conn_client_tls_data(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	if (!x->cl.done) {
		enum tls_result hs = tls_leg_handshake(&x->cl);
		relay_conn_client_flush(c);
		if (hs == TLS_WANT && c->client_fin && tls_leg_client_rejected(&x->cl)) {
			/* grpc-core clients, and other pinning apps, just close
			 * (clean FIN) when our certificate does not verify. */
			relay_conn_client_tls_failed(
				c, "closed the connection after our certificate, without an alert");
			return;
		}
		if (hs == TLS_ERROR) {
			relay_conn_client_tls_failed(c, NULL);
			return;
		}
		if (hs == TLS_WANT)
			return;
		relay_conn_client_hs_done(c);
		if (c->finished)
			return;
	}
	for (;;) {
		size_t n = 0;
		enum tls_result rr = tls_leg_read(&x->cl, r->pbuf, sizeof(r->pbuf), &n);
		relay_conn_client_flush(c); /* tickets, key updates, alerts */
		if (rr == TLS_WANT)
			break;
		if (rr == TLS_CLOSED) {
			if (c->mode == MODE_TLS) {
				tls_leg_close_notify(&x->up);
				(void)relay_conn_up_flush(c);
			} else if (c->mode == MODE_FAIL) {
				relay_conn_fail_close(c); /* no request will come */
				return;
			}
			break;
		}
		if (rr == TLS_ERROR) {
			char why[160];
			tls_leg_error(&x->cl, why, sizeof(why));
			snprintf(x->tls_error, sizeof(x->tls_error), "client TLS: %s", why);
			relay_conn_finish(c, "tls:client_error", END_RESET_BOTH);
			return;
		}
		if (c->mode == MODE_FAIL) {
			relay_conn_fail_answer(c, r->pbuf, n);
			if (c->finished)
				return;
			continue;
		}
		obs_client(c, r->pbuf, n);
		if (x->h2rw) {
			/* HTTP/2 flow control bounds what it keeps. */
			h2rw_client(x->h2rw, r->pbuf, n);
			if (c->finished)
				return;
			continue;
		}
		if (x->rw) {
			relay_conn_rw_client(c, r->pbuf, n);
			if (c->finished)
				return;
			continue;
		}
		if (tls_leg_write(&x->up, r->pbuf, n) != TLS_OK) {
			relay_conn_finish(c, "error", END_RESET_BOTH);
			return;
		}
		if (!relay_conn_up_flush(c))
			return;
	}
}

/* Upstream leg: handshake, or plaintext to the client while it has room. */
static void relay_conn_upstream_tls_data(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	if (c->mode == MODE_UP_HS) {
		enum tls_result hs = tls_leg_handshake(&x->up);
		if (!relay_conn_up_flush(c))
			return;
		if (hs == TLS_OK)
			relay_conn_upstream_ready(c, true);
		else if (hs == TLS_ERROR)
			relay_conn_upstream_ready(c, false);
		return;
	}
	if (c->mode != MODE_TLS)
		return; /* CLIENT_HS / FAIL: kept in the leg for later */
	while (c->cs && relay_conn_client_pending(c) == 0) {
		size_t n = 0;
		size_t room = stream_writable(c->cs);
		if (room == 0)
			break;
		enum tls_result rr = tls_leg_read(
			&x->up, r->pbuf, room < sizeof(r->pbuf) ? room : sizeof(r->pbuf), &n);
		(void)relay_conn_up_flush(c);
		if (c->finished)
			return;
		if (rr == TLS_WANT)
			break;
		if (rr == TLS_CLOSED) {
			if (x->rw) {
				h1rw_server_eof(x->rw);
				if (c->finished)
					return;
			}
			tls_leg_close_notify(&x->cl);
			relay_conn_client_flush(c);
			break;
		}
		if (rr == TLS_ERROR && c->up_shutdown) {
			/* We passed on the client's FIN without a close_notify (the
			 * client sent none): OpenSSL servers answer that EOF with a
			 * decode_error alert. That is the end of the stream, not a
			 * failure. */
			break;
		}
		if (rr == TLS_ERROR) {
			char why[160];
			tls_leg_error(&x->up, why, sizeof(why));
			snprintf(x->tls_error, sizeof(x->tls_error), "upstream TLS: %s", why);
			relay_conn_finish(c, "tls:upstream_error", END_RESET_BOTH);
			return;
		}
		if (x->h2rw) {
			h2rw_server(x->h2rw, r->pbuf, n);
			if (c->finished)
				return;
			continue;
		}
		if (x->rw) {
			h1rw_server(x->rw, r->pbuf, n);
			if (c->finished)
				return;
			continue;
		}
		obs_server(c, r->pbuf, n);
		if (tls_leg_write(&x->cl, r->pbuf, n) != TLS_OK) {
			relay_conn_finish(c, "error", END_RESET_BOTH);
			return;
		}
		relay_conn_client_flush(c);
	}
}

/* ---- upstream → client -------------------------------------------------- */

static void relay_conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct relay_conn *c = h->data;
	(void)suggested;
	size_t room;
	if (c->mode == MODE_UP_HS || c->mode == MODE_SNIFF || c->mode == MODE_PARENT) {
		room = RELAY_READ_SIZE; /* for us, not for the client */
	} else {
		/* Read no more than the netstack takes now: the bytes go on at
		 * once and the kernel's socket buffer holds the rest. 0 →
		 * UV_ENOBUFS. */
		room = c->cs && !c->finished && relay_conn_client_pending(c) == 0
			       ? stream_writable(c->cs)
			       : 0;
		if (room > RELAY_READ_SIZE)
			room = RELAY_READ_SIZE;
		bool paced;
		room = pace_room(c, room, &paced);
		if (room < RELAY_READ_LOWAT && !paced)
			room = 0; /* wait for a useful amount rather than read in crumbs */
	}
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
	if (c->reading || !c->connected || c->upstream_eof || c->finished || !c->cs ||
	    uv_is_closing((uv_handle_t *)&c->up))
		return;
	if (c->mode == MODE_CLIENT_HS || c->mode == MODE_FAIL)
		return; /* the upstream waits in its socket */
	if (uv_read_start((uv_stream_t *)&c->up, relay_conn_on_alloc, relay_conn_on_read) == 0)
		c->reading = true;
}

/* Upstream EOF and nothing left to hand over: FIN to the client. */
static void relay_conn_down_done(struct relay_conn *c)
{
	if (!c->upstream_eof || relay_conn_client_pending(c) > 0 || c->down_shutdown || c->finished)
		return;
	if (c->x && tls_leg_plain_pending(&c->x->up) > 0)
		return; /* a plain upstream leg's bytes the client has no room for yet */
	c->down_shutdown = true;
	if (c->cs)
		(void)stream_shutdown(c->cs);
	relay_conn_check_done(c);
	relay_conn_half_closed(c);
}

static void relay_conn_raw_down(struct relay_conn *c, const uint8_t *data, size_t len)
{
	if (c->x && c->x->rw) {
		keep_first(c->x->first_down, &c->x->first_down_len, &c->x->first_down_size, data,
			   len);
		h1rw_server(c->x->rw, data, len); /* the observer sees what it writes */
		return;
	}
	if (c->x) {
		keep_first(c->x->first_down, &c->x->first_down_len, &c->x->first_down_size, data,
			   len);
		obs_server(c, data, len);
	}
	size_t done = c->cs ? stream_write(c->cs, data, len) : len;
	if (done == len)
		return;
	/* The netstack took less than it said it had room for (its segment
	 * queue is full): keep the rest, read no more until it is flushed. */
	if (!c->pending) {
		c->pending = malloc(RELAY_READ_SIZE);
		if (!c->pending) {
			relay_conn_oom(c);
			return;
		}
	}
	memcpy(c->pending, data + done, len - done);
	c->pending_off = 0;
	c->pending_len = len - done;
	c->relay->stats.upstream_stops++;
	relay_conn_stop_reading(c);
}

static void relay_conn_upstream_data(struct relay_conn *c, const uint8_t *data, size_t len);
static void relay_conn_parent_failed(struct relay_conn *c, const char *why, bool refused);
static void relay_conn_parent_read(struct relay_conn *c, ssize_t nread, const uint8_t *data);

static void relay_conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct relay_conn *c = s->data;
	if (c->finished)
		return;
	if (c->mode == MODE_PARENT) {
		relay_conn_parent_read(c, nread, (const uint8_t *)buf->base);
		return;
	}
	if (nread == UV_ENOBUFS) {
		/* The netstack is full: wait for ops.sent. */
		c->relay->stats.upstream_stops++;
		relay_conn_stop_reading(c);
		return;
	}
	if (nread == UV_EOF) {
		c->upstream_eof = true;
		relay_conn_stop_reading(c);
		if (c->mode == MODE_UP_HS) {
			snprintf(c->x->up.err, sizeof(c->x->up.err), "closed during the handshake");
			relay_conn_upstream_ready(c, false);
			return;
		}
		if (c->mode == MODE_RAW && c->x && c->x->rw) {
			h1rw_server_eof(c->x->rw);
			if (c->finished)
				return;
		}
		if (c->x && c->x->up.plain) {
			/* TLS_CLOSED once the client took what came before */
			tls_leg_plain_eof(&c->x->up);
			relay_conn_upstream_tls_data(c);
			if (c->finished)
				return;
		}
		if (c->mode == MODE_TLS && c->x->obs != OBS_NONE)
			obs_server(c, NULL, 0);
		relay_conn_down_done(c);
		relay_conn_half_closed(c); /* also while the client still drains what we hold */
		return;
	}
	if (nread < 0) {
		if (c->mode == MODE_UP_HS) {
			c->upstream_eof = true;
			relay_conn_stop_reading(c);
			snprintf(c->x->up.err, sizeof(c->x->up.err), "%s", uv_strerror((int)nread));
			relay_conn_upstream_ready(c, false);
			return;
		}
		relay_conn_upstream_failed(c, "upstream read", (int)nread);
		return;
	}
	if (nread == 0)
		return;
	relay_conn_upstream_data(c, (const uint8_t *)buf->base, (size_t)nread);
}

/* Bytes from the upstream, as the flow's state takes them. */
static void relay_conn_upstream_data(struct relay_conn *c, const uint8_t *data, size_t len)
{
	c->flow.bytes_down += len;
	c->relay->stats.bytes_down += len;
	if (!pace_take(c, 1, len))
		relay_conn_stop_reading(c); /* the throttle's timer reads on */
	switch (c->mode) {
	case MODE_SNIFF:
		/* The server spoke first: not TLS or HTTP from this client. */
		if (!c->x) {
			c->x = calloc(1, sizeof(*c->x));
			if (!c->x) {
				relay_conn_oom(c);
				return;
			}
		}
		c->relay->stats.proto_raw++;
		relay_conn_go_raw(c, "raw", OBS_NONE, NULL);
		if (c->finished)
			return;
		/* fall through */
	case MODE_RAW:
	case MODE_DIAL:
	case MODE_PARENT:
		relay_conn_raw_down(c, data, len);
		return;
	case MODE_UP_HS:
	case MODE_TLS:
	case MODE_CLIENT_HS:
	case MODE_FAIL:
		if (tls_leg_feed(&c->x->up, data, len) < 0) {
			relay_conn_oom(c);
			return;
		}
		relay_conn_upstream_tls_data(c);
		return;
	}
}

/* The client acknowledged data: the netstack has room again. */
static void relay_conn_on_client_sent(void *arg, size_t len)
{
	struct relay_conn *c = arg;
	c->acked += len;
	if (c->finished || !c->cs)
		return;
	if (c->x && c->x->cl_tls) {
		relay_conn_client_flush(c);
		if (relay_conn_client_pending(c) > 0)
			return;
		if (c->x->upc_paused) {
			c->x->upc_paused = false;
			upconn_resume(c->x->upc);
			if (c->finished || relay_conn_client_pending(c) > 0)
				return;
		}
		relay_conn_upstream_tls_data(c); /* plaintext held in the upstream leg */
		if (c->finished || relay_conn_client_pending(c) > 0)
			return;
		relay_conn_down_done(c);
	} else if (c->x && c->x->rw) {
		relay_conn_clout_flush(c);
		if (relay_conn_client_pending(c) > 0)
			return;
		if (c->x->upc_paused) {
			c->x->upc_paused = false;
			upconn_resume(c->x->upc);
			if (c->finished || relay_conn_client_pending(c) > 0)
				return;
		}
		relay_conn_down_done(c);
	} else if (c->pending_len > 0) {
		size_t n = stream_write(c->cs, c->pending + c->pending_off, c->pending_len);
		c->pending_off += n;
		c->pending_len -= n;
		if (c->pending_len > 0)
			return;
		free(c->pending); /* rare: give the memory back to idle flows */
		c->pending = NULL;
		relay_conn_down_done(c);
	}
	if (!c->reading && !c->finished && c->cs && stream_writable(c->cs) >= RELAY_READ_LOWAT)
		relay_conn_read_on(c);
}

/* ---- the client leg ends ------------------------------------------------ */

static void relay_conn_on_client_closed(void *arg, int err)
{
	struct relay_conn *c = arg;
	c->cs = NULL; /* freed when we return */
	if (c->finished)
		return;
	if (err == 0) {
		/* Orderly: the client sent FIN and acknowledged ours. Anything
		 * still paused in the netstack went with it. */
		if (!c->client_fin)
			relay_conn_on_client_recv(c, NULL, 0); /* what a FIN does in this mode */
		relay_conn_check_done(c);
		return;
	}
	c->relay->stats.client_resets++;
	const char *reason = "client_reset";
	if (err == -ECONNABORTED) {
		/* Not even TCP answers: whether our certificate ever reached the
		 * client is unknown, so this is no rejection. */
		reason = "timeout";
		snprintf(c->flow.error, sizeof(c->flow.error), "the client stopped responding");
	} else if (err != -ECONNRESET) {
		reason = "error";
		snprintf(c->flow.error, sizeof(c->flow.error), "client: %s", strerror(-err));
	} else if ((c->mode == MODE_CLIENT_HS || c->mode == MODE_FAIL) && c->x && c->x->cl_tls &&
		   !c->x->cl.done && tls_leg_client_rejected(&c->x->cl)) {
		relay_conn_client_tls_failed(
			c, "reset the connection after our certificate, without an alert");
		return;
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
	if (c->pd) {
		/* The parent is what could not be reached: say so. */
		r->stats.parent_failed++;
		char e[sizeof(c->flow.error)];
		memcpy(e, c->flow.error, sizeof(e));
		snprintf(c->flow.error, sizeof(c->flow.error), "parent proxy %.70s: %.40s",
			 c->pd->label, e);
		if (status == UV_ECONNREFUSED)
			reason = "upstream_unreachable"; /* the target was never asked */
	}
	if (c->dialled && c->cs) {
		/* The listener answers (a 502, a SOCKS failure): closed, not reset. */
		c->dialled(c->dialled_ctx, c->cs, timeout ? UV_ETIMEDOUT : status, c->flow.error);
		c->dialled = NULL;
		relay_conn_finish(c, reason, END_GRACEFUL);
		return;
	}
	relay_conn_finish(c, reason, END_RESET_CLIENT);
}

/* SNIFF: the first bytes stayed undecided (a prefix of a ClientHello, a
 * request line, the h2 preface): relayed as they are from now on. */
static void relay_conn_sniff_timeout(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	if (!x || x->sniff_len == 0)
		return; /* nothing held: an idle connection, nothing to decide */
	bool tls = sniff_classify(x->sniff, x->sniff_len) == SNIFF_TLS;
	if (c->shape && c->shape->client != RELAY_CLIENT_PLAIN) {
		/* The listener said TLS is terminated here: never passed on. */
		if (tls || c->shape->client == RELAY_CLIENT_TLS) {
			r->stats.tls_client_failed++;
			snprintf(x->tls_error, sizeof(x->tls_error),
				 tls ? "client TLS: ClientHello incomplete after %u ms"
				     : "client TLS: the client did not begin TLS",
				 r->cfg.sniff_timeout_ms);
			relay_conn_finish(c, "tls:client_error", END_RESET_BOTH);
			return;
		}
		if (relay_conn_sniff_shaped(c, SNIFF_OTHER))
			return;
	}
	if (tls) {
		r->stats.proto_tls++;
		snprintf(x->tls_error, sizeof(x->tls_error), "ClientHello incomplete after %u ms",
			 r->cfg.sniff_timeout_ms);
		relay_conn_go_raw(c, "tls-passthrough", OBS_NONE, NULL);
	} else {
		r->stats.proto_raw++;
		relay_conn_go_raw(c, "raw", OBS_NONE, NULL);
	}
}

/* CLIENT_HS, FAIL: the client did not finish its handshake in time, or
 * (FAIL) sent no request for the 502. */
static void relay_conn_client_timeout(struct relay_conn *c)
{
	struct relay_icpt *x = c->x;
	struct relay *r = c->relay;
	uint32_t ms = r->cfg.handshake_timeout_ms;
	char how[96];
	if (x->cl.done) {
		snprintf(c->flow.error, sizeof(c->flow.error), "no request within %u ms", ms);
		relay_conn_fail_close(c);
		return;
	}
	if (tls_leg_client_rejected(&x->cl)) {
		/* Alive (TCP acknowledged our flight) but silent after our
		 * certificate: an app that hangs rather than accept it. */
		snprintf(how, sizeof(how), "no answer to our certificate within %u ms", ms);
		relay_conn_client_tls_failed(c, how);
		return;
	}
	snprintf(how, sizeof(how), "client TLS: handshake timed out after %u ms", ms);
	if (c->mode == MODE_FAIL) {
		snprintf(c->flow.error, sizeof(c->flow.error), "%s", how);
		relay_conn_finish(c, "tls:upstream_error", END_GRACEFUL);
		return;
	}
	r->stats.tls_client_failed++;
	snprintf(x->tls_error, sizeof(x->tls_error), "%s", how);
	relay_conn_finish(c, "tls:client_error", END_GRACEFUL);
}

/* Half-closed: ends the flow after a whole period without traffic. */
static void relay_conn_half_tick(struct relay_conn *c)
{
	uint64_t bytes = relay_conn_traffic(c);
	if (bytes != c->idle_bytes) {
		c->idle_bytes = bytes;
		return;
	}
	snprintf(c->flow.error, sizeof(c->flow.error), "half-closed and idle for %u ms",
		 c->relay->cfg.half_close_timeout_ms);
	/* A reset both ways: a FIN would make a cut stream look complete. */
	relay_conn_finish(c, "timeout", END_RESET_BOTH);
}

static void relay_conn_on_timeout(uv_timer_t *t)
{
	struct relay_conn *c = t->data;
	if (c->finished)
		return;
	if (c->half_timer) {
		relay_conn_half_tick(c);
		return;
	}
	switch (c->mode) {
	case MODE_DIAL:
		relay_conn_connect_failed(c, UV_ETIMEDOUT, true); /* closing cancels the connect */
		return;
	case MODE_PARENT: {
		char why[400];
		snprintf(why, sizeof(why), "parent proxy %s: no answer within %u ms", c->pd->label,
			 c->relay->cfg.connect_timeout_ms);
		relay_conn_parent_failed(c, why, false);
		return;
	}
	case MODE_SNIFF:
		relay_conn_sniff_timeout(c);
		return;
	case MODE_UP_HS:
		snprintf(c->x->up.err, sizeof(c->x->up.err), "handshake timed out after %u ms",
			 c->relay->cfg.handshake_timeout_ms);
		relay_conn_upstream_ready(c, false);
		return;
	case MODE_CLIENT_HS:
	case MODE_FAIL:
		relay_conn_client_timeout(c);
		return;
	case MODE_RAW:
	case MODE_TLS:
		return; /* both sides open: TCP keepalive watches them */
	}
}

/* A connection that came back to this host (its two ends on one address:
 * loopback or any address of ours, whatever the policy let through) on a
 * port of our own services, e.g. the control API. */
static bool relay_conn_reached_own_service(struct relay_conn *c)
{
	struct relay *r = c->relay;
	if (r->nprotected == 0)
		return false;
	struct sockaddr_storage me, peer;
	int ml = sizeof(me), pl = sizeof(peer);
	if (uv_tcp_getsockname(&c->up, (struct sockaddr *)&me, &ml) < 0 ||
	    uv_tcp_getpeername(&c->up, (struct sockaddr *)&peer, &pl) < 0)
		return false;
	uint16_t port;
	if (peer.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&me,
					 *b = (const struct sockaddr_in *)&peer;
		if (a->sin_addr.s_addr != b->sin_addr.s_addr &&
		    (ntohl(b->sin_addr.s_addr) >> 24) != 127)
			return false;
		port = ntohs(b->sin_port);
	} else if (peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&me,
					  *b = (const struct sockaddr_in6 *)&peer;
		if (memcmp(&a->sin6_addr, &b->sin6_addr, 16) != 0 &&
		    !IN6_IS_ADDR_LOOPBACK(&b->sin6_addr))
			return false;
		port = ntohs(b->sin6_port);
	} else {
		return false;
	}
	for (size_t i = 0; i < r->nprotected; i++)
		if (r->protected_ports[i] == port)
			return true;
	return false;
}

/* ---- through a parent proxy -------------------------------------------- */

static void relay_conn_connected(struct relay_conn *c);

/* The parent failed or refused: as a failed dial, with its reason. */
static void relay_conn_parent_failed(struct relay_conn *c, const char *why, bool refused)
{
	struct relay *r = c->relay;
	r->stats.connect_failed++;
	r->stats.parent_failed++;
	if (refused)
		r->stats.connect_refused++;
	snprintf(c->flow.error, sizeof(c->flow.error), "%s", why);
	const char *reason = refused ? "upstream_refused" : "upstream_unreachable";
	if (c->dialled && c->cs) {
		c->dialled(c->dialled_ctx, c->cs, refused ? UV_ECONNREFUSED : UV_EHOSTUNREACH,
			   c->flow.error);
		c->dialled = NULL;
		relay_conn_finish(c, reason, END_GRACEFUL);
		return;
	}
	relay_conn_finish(c, reason, END_RESET_CLIENT);
}

static void relay_conn_parent_start(struct relay_conn *c)
{
	struct relay *r = c->relay;
	struct relay_pdial *pd = c->pd;
	uint8_t out[PARENT_MAX_OUT];
	size_t n = 0;
	int rc = parent_begin(&pd->hs, pd->socks5 ? PARENT_SOCKS5 : PARENT_HTTP, pd->host, pd->port,
			      pd->user, pd->pass, out, &n);
	sodium_memzero(pd->user, sizeof(pd->user));
	sodium_memzero(pd->pass, sizeof(pd->pass));
	if (rc < 0) {
		relay_conn_parent_failed(c, pd->hs.why, false);
		return;
	}
	c->mode = MODE_PARENT;
	if (!relay_conn_up_send(c, out, n))
		return;
	sodium_memzero(out, sizeof(out)); /* the credentials */
	relay_conn_arm(c, r->cfg.connect_timeout_ms);
	relay_conn_read_on(c);
}

static void relay_conn_parent_read(struct relay_conn *c, ssize_t nread, const uint8_t *data)
{
	char why[600];
	if (nread == UV_ENOBUFS)
		return;
	if (nread < 0) {
		snprintf(why, sizeof(why), "parent proxy %s: %s during the handshake", c->pd->label,
			 nread == UV_EOF ? "closed the connection" : uv_strerror((int)nread));
		relay_conn_parent_failed(c, why, false);
		return;
	}
	size_t n = (size_t)nread, used = 0, outlen = 0;
	uint8_t out[PARENT_MAX_OUT];
	enum parent_result pr = parent_feed(&c->pd->hs, data, n, &used, out, &outlen);
	if (pr == PARENT_FAIL) {
		snprintf(why, sizeof(why), "%s (%s)", c->pd->hs.why, c->pd->label);
		relay_conn_parent_failed(c, why, c->pd->hs.refused);
		return;
	}
	if (outlen) {
		bool ok = relay_conn_up_send(c, out, outlen);
		sodium_memzero(out, sizeof(out));
		if (!ok)
			return;
	}
	if (pr == PARENT_MORE)
		return;
	sodium_memzero(&c->pd->hs, sizeof(c->pd->hs));
	relay_conn_disarm(c);
	relay_conn_connected(c);
	if (!c->finished && used < n)
		relay_conn_upstream_data(c, data + used, n - used); /* the target spoke first */
}

int relay_set_parents(struct relay *r, const struct relay_parent *p, size_t n)
{
	if (n > RELAY_MAX_PARENTS)
		return -ENOSPC;
	if (n)
		memcpy(r->parents, p, n * sizeof(*p));
	r->nparents = n;
	return 0;
}

/* The parent for a flow to host (the address when NULL) from device. */
static const struct relay_parent *relay_parent_for(const struct relay *r, const char *host,
						   const struct sockaddr *dest, const char *device)
{
	if (r->nparents == 0)
		return NULL;
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	if (!host) {
		(void)flowlog_format_ip(dest, ip, &port);
		host = ip;
	}
	for (size_t i = 0; i < r->nparents; i++) {
		const struct relay_parent *p = &r->parents[i];
		if (p->device[0] && (!device || strcmp(p->device, device) != 0))
			continue;
		if (p->glob[0] && fnmatch(p->glob, host, FNM_CASEFOLD) != 0)
			continue;
		return p;
	}
	return NULL;
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
	if (relay_conn_reached_own_service(c)) {
		snprintf(c->flow.error, sizeof(c->flow.error),
			 "the endpoint's own control service is not reachable through the tunnel");
		relay_conn_finish(c, "policy:own_service", END_RESET_BOTH);
		return;
	}
	if (c->pd) {
		relay_conn_parent_start(c);
		return;
	}
	relay_conn_connected(c);
}

/* The upstream (the target, or the target through its parent) is there:
 * the client is told, and its bytes flow. */
static void relay_conn_connected(struct relay_conn *c)
{
	c->mode = MODE_SNIFF;
	if (c->dialled) {
		c->dialled(c->dialled_ctx, c->cs, 0, NULL);
		c->dialled = NULL;
	}
	uv_tcp_nodelay(&c->up, 1); /* the client's segments are already batched */
	uv_tcp_keepalive(&c->up, 1, RELAY_UPSTREAM_KEEPALIVE_IDLE_S);
	/* And then probes as the netstack sends them to clients, so a vanished
	 * upstream ends the flow ("timeout") in two minutes, not the
	 * kernel's default of twelve. */
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&c->up, &fd) == 0) {
		int intvl = RELAY_UPSTREAM_KEEPALIVE_INTERVAL_S,
		    cnt = RELAY_UPSTREAM_KEEPALIVE_COUNT;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	}
	/* A client that may speak TLS speaks first: what a plaintext server
	 * says before (an h2c server's SETTINGS) waits in the kernel until the
	 * legs are up. */
	if (!c->shape || c->shape->client == RELAY_CLIENT_PLAIN)
		relay_conn_read_on(c);
	if (c->shape && c->shape->client == RELAY_CLIENT_PLAIN &&
	    c->shape->proto == RELAY_PROTO_RAW) {
		/* Nothing to wait for: the server may speak first. */
		c->x = calloc(1, sizeof(*c->x));
		if (!c->x) {
			relay_conn_oom(c);
			return;
		}
		flowlog_format_addr((const struct sockaddr *)&c->flow.server, c->x->authority);
		(void)relay_conn_sniff_shaped(c, SNIFF_OTHER);
		if (c->finished)
			return;
	}
	/* Held client data and a held FIN arrive through on_client_recv. */
	relay_conn_resume_client(c);
	if (c->client_fin)
		relay_conn_client_done(c);
}

/* ---- accept ------------------------------------------------------------- */

static const struct stream_cb relay_conn_ops = {
	.recv = relay_conn_on_client_recv,
	.sent = relay_conn_on_client_sent,
	.closed = relay_conn_on_client_closed,
};

/* A refused flow: recorded, never dialled. */
static void relay_record_refusal(struct relay *r, const char *reason, const char *peer,
				 const struct sockaddr *client, const struct sockaddr *dest,
				 const struct relay_origin *o)
{
	if (!r->cfg.log)
		return;
	struct flowlog_flow f;
	flowlog_flow_begin(&f, r->cfg.log, "tcp", peer, client, dest);
	if (o) {
		f.via = o->via;
		if (o->user)
			snprintf(f.user, sizeof(f.user), "%s", o->user);
	}
	f.end = f.start;
	f.end_reason = reason;
	(void)flowlog_write_flow(r->cfg.log, &f);
	r->stats.records++;
}

void relay_record_listener_failure(struct relay *r, const struct sockaddr *client,
				   const struct sockaddr *dest, const struct relay_origin *o,
				   const char *reason, const char *error)
{
	if (!r->cfg.log)
		return;
	struct sockaddr_storage none = { .ss_family = AF_UNSPEC };
	struct flowlog_flow f;
	flowlog_flow_begin(&f, r->cfg.log, "tcp", o->peer, client,
			   dest ? dest : (const struct sockaddr *)&none);
	f.via = o->via;
	if (o->user)
		snprintf(f.user, sizeof(f.user), "%s", o->user);
	if (error)
		snprintf(f.error, sizeof(f.error), "%s", error);
	f.end = f.start;
	f.end_reason = reason;
	(void)flowlog_write_flow(r->cfg.log, &f);
	r->stats.records++;
}

int relay_stream_accept(struct relay *r, struct stream *conn, const struct sockaddr *client,
			const struct sockaddr *dest, const struct relay_origin *o)
{
	if (r->shut)
		return -ESHUTDOWN;
	struct sockaddr_storage upstream;
	enum policy_verdict v = policy_check(r->cfg.policy, IPPROTO_TCP, dest, &upstream);
	if (v == POLICY_LOCAL_SERVICE) {
		/* The tunnel's own services answer on its addresses only. */
		if (!r->local_accept || o) {
			r->stats.refused++;
			r->stats.refused_by[POLICY_REFUSE_OWN_ADDRESS]++;
			if (o)
				relay_record_refusal(r, r->refusal[POLICY_REFUSE_OWN_ADDRESS],
						     o->peer, client, dest, o);
			return -ECONNREFUSED;
		}
		r->stats.local++;
		return r->local_accept(r->local_ctx, conn, client, dest);
	}
	const char *peer = o                  ? o->peer
			   : r->cfg.peer_name ? r->cfg.peer_name(r->cfg.peer_ctx, client)
					      : NULL;
	if (policy_refused(v)) {
		r->stats.refused++;
		r->stats.refused_by[v]++;
		relay_record_refusal(r, r->refusal[v], peer, client, dest, o);
		return -ECONNREFUSED;
	}
	/* One peer (or a listener's user) cannot hold every slot: the others
	 * keep theirs. */
	struct tally_entry *share = NULL;
	char ukey[300];
	bool by_user = o && o->user && o->user[0];
	uint32_t cap = by_user && r->cfg.max_per_user ? r->cfg.max_per_user : r->cfg.max_per_peer;
	if (by_user) /* ':' is not in a peer's name */
		snprintf(ukey, sizeof(ukey), "user:%s", o->user);
	if (cap) {
		share = tally_take(r->per_peer, by_user ? ukey : peer, cap);
		if (!share) {
			r->stats.refused_peer_limit++;
			relay_record_refusal(
				r, by_user ? "limit:user_connections" : "limit:peer_connections",
				peer, client, dest, o);
			return -EMFILE;
		}
	}

	struct relay_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		tally_give(r->per_peer, share);
		return -ENOMEM;
	}
	c->share = share;
	c->relay = r;
	c->upstream = upstream;
	c->host_port = v == POLICY_HOST_PORT;
	/* A tunnel flow's name: what its peer looked up for the address. */
	const char *host = o ? o->host : dnsnames_lookup(r->cfg.names, peer, dest, relay_now_s(r));
	const struct relay_parent *parent =
		c->host_port ? NULL : relay_parent_for(r, host, dest, peer);
	if (parent) {
		c->pd = calloc(1, sizeof(*c->pd));
		if (!c->pd) {
			tally_give(r->per_peer, share);
			free(c);
			return -ENOMEM;
		}
		unsigned port = 0;
		char ip[INET6_ADDRSTRLEN];
		(void)flowlog_format_ip(dest, ip, &port);
		snprintf(c->pd->host, sizeof(c->pd->host), "%s", host ? host : ip);
		c->pd->port = (uint16_t)port;
		c->pd->socks5 = parent->socks5;
		memcpy(c->pd->user, parent->user, sizeof(c->pd->user));
		memcpy(c->pd->pass, parent->pass, sizeof(c->pd->pass));
		snprintf(c->pd->label, sizeof(c->pd->label), "%s", parent->label);
		c->upstream = parent->addr;
		r->stats.parent_dials++;
	}
	flowlog_flow_begin(&c->flow, r->cfg.log, "tcp", peer, client, dest);
	if (o) {
		c->flow.via = o->via;
		if (o->user)
			snprintf(c->flow.user, sizeof(c->flow.user), "%s", o->user);
		c->dialled = o->dialled;
		c->dialled_ctx = o->ctx;
		if (o->shape) {
			size_t nl = o->shape->name ? strlen(o->shape->name) + 1 : 0;
			size_t al = o->shape->authority ? strlen(o->shape->authority) + 1 : 0;
			c->shape = malloc(sizeof(*c->shape) + nl + al);
			if (!c->shape) {
				tally_give(r->per_peer, share);
				free(c->pd);
				free(c);
				return -ENOMEM;
			}
			*c->shape = *o->shape;
			c->shape->name = NULL;
			if (al) {
				char *a = (char *)(c->shape + 1) + nl;
				memcpy(a, o->shape->authority, al);
				c->shape->authority = a;
			}
			/* An IP literal is verified as the address dialled. */
			struct in6_addr ip;
			if (nl && inet_pton(AF_INET, o->shape->name, &ip) != 1 &&
			    inet_pton(AF_INET6, o->shape->name, &ip) != 1) {
				char *name = (char *)(c->shape + 1);
				memcpy(name, o->shape->name, nl);
				c->shape->name = name;
			}
		}
	}
	int rc = uv_tcp_init(r->loop, &c->up);
	if (rc < 0) {
		tally_give(r->per_peer, share);
		free(c->pd);
		free(c->shape);
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
	if (by_user && (r->cfg.user_rate[0] || r->cfg.user_rate[1]))
		(void)relay_conn_user_rate(c, o->user); /* unpaced rather than refused */

	c->connect_req.data = c;
	if (c->dialled) {
		/* Ours from now on, whatever the dial does: a failure is
		 * the listener's answer, not a reset. */
		c->cs = conn;
		stream_set_cb(conn, &relay_conn_ops, c);
		relay_conn_pause_client(c);
	}
	rc = uv_tcp_connect(&c->connect_req, &c->up, (const struct sockaddr *)&c->upstream,
			    relay_conn_on_connect);
	if (rc < 0 && c->dialled) {
		relay_conn_connect_failed(c, rc, false);
		return 0;
	}
	if (rc < 0) {
		/* Failed at once (no route, no address): the netstack resets
		 * the client when we return nonzero. */
		relay_conn_connect_failed(c, rc, false);
		return rc;
	}
	uv_update_time(r->loop); /* the loop's clock may lag behind a long batch of packets */
	uv_timer_start(&c->timer, relay_conn_on_timeout, r->cfg.connect_timeout_ms, 0);
	if (!c->cs) {
		c->cs = conn;
		stream_set_cb(conn, &relay_conn_ops, c);
		relay_conn_pause_client(c); /* hold the client's bytes until we are connected */
	}
	return 0;
}

int relay_tcp_accept(struct relay *r, struct stream *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	return relay_stream_accept(r, conn, client, dest, NULL);
}

/* ---- the relay ---------------------------------------------------------- */

static void relay_on_tick(uv_timer_t *t)
{
	struct relay *r = t->data;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	for (struct relay_conn *c = r->conns; c; c = c->next)
		if (!c->finished && c->x && c->x->obs == OBS_HTTP1)
			http1_obs_tick(c->x->obs_ptr, &now);
	if (r->held && held_count(r->held))
		(void)held_expire(r->held, uv_now(r->loop));
}

static void relay_on_tick_closed(uv_handle_t *h)
{
	struct relay *r = h->data;
	r->tick_closed = true;
	relay_free_now(r);
}

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
	/* libuv writes to sockets with write(2): on a connection the upstream
	 * reset, that raises SIGPIPE, whose default action ends the process
	 * where the flow should end with "upstream_reset". Linux has no
	 * per-socket opt-out; a handler the program chose is kept. */
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	r->per_peer = tally_new();
	if (!r->per_peer) {
		free(r);
		errno = ENOMEM;
		return NULL;
	}
	r->loop = loop;
	uv_timer_init(loop, &r->tick); /* cannot fail on Unix */
	r->tick.data = r;
	uv_timer_start(&r->tick, relay_on_tick, 1000, 1000);
	uv_unref((uv_handle_t *)&r->tick);
	r->cfg = *cfg;
	if (r->cfg.max_buffer == 0)
		r->cfg.max_buffer = RELAY_DEFAULT_MAX_BUFFER;
	if (r->cfg.connect_timeout_ms == 0)
		r->cfg.connect_timeout_ms = RELAY_DEFAULT_CONNECT_TIMEOUT_MS;
	if (r->cfg.sniff_timeout_ms == 0)
		r->cfg.sniff_timeout_ms = RELAY_DEFAULT_SNIFF_TIMEOUT_MS;
	if (r->cfg.handshake_timeout_ms == 0)
		r->cfg.handshake_timeout_ms = RELAY_DEFAULT_HANDSHAKE_TIMEOUT_MS;
	if (r->cfg.half_close_timeout_ms == 0)
		r->cfg.half_close_timeout_ms = RELAY_DEFAULT_HALF_CLOSE_TIMEOUT_MS;
	for (int v = 0; v < POLICY_VERDICT_COUNT; v++)
		snprintf(r->refusal[v], sizeof(r->refusal[v]), "policy:%s",
			 policy_verdict_name((enum policy_verdict)v));
	/* Without it breakpoints let everything go on (rw_hold). */
	r->held = held_new(&(struct held_config){ .timeout_ms = cfg->breakpoint_timeout_ms,
						  .event = cfg->held_event,
						  .ctx = cfg->held_ctx });
	return r;
}

void relay_reconfigure(struct relay *r, const struct relay_config *cfg)
{
	r->cfg.connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
							    : RELAY_DEFAULT_CONNECT_TIMEOUT_MS;
	r->cfg.sniff_timeout_ms =
		cfg->sniff_timeout_ms ? cfg->sniff_timeout_ms : RELAY_DEFAULT_SNIFF_TIMEOUT_MS;
	r->cfg.handshake_timeout_ms = cfg->handshake_timeout_ms
					      ? cfg->handshake_timeout_ms
					      : RELAY_DEFAULT_HANDSHAKE_TIMEOUT_MS;
	r->cfg.half_close_timeout_ms = cfg->half_close_timeout_ms
					       ? cfg->half_close_timeout_ms
					       : RELAY_DEFAULT_HALF_CLOSE_TIMEOUT_MS;
	r->cfg.body_cap = cfg->body_cap;
	r->cfg.no_intercept = cfg->no_intercept;
	r->cfg.max_per_peer = cfg->max_per_peer;
	if (r->held)
		held_set_timeout(r->held, cfg->breakpoint_timeout_ms);
}

struct held *relay_held(struct relay *r)
{
	return r->held;
}

void relay_set_rules(struct relay *r, struct ruleset *rs)
{
	ruleset_unref(r->rules);
	r->rules = ruleset_ref(rs);
}

int relay_protect_port(struct relay *r, uint16_t port)
{
	if (r->nprotected == RELAY_MAX_PROTECTED)
		return -ENOSPC;
	r->protected_ports[r->nprotected++] = port;
	return 0;
}

void relay_set_local_tcp(struct relay *r,
			 int (*accept)(void *ctx, struct stream *conn,
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
	if (!uv_is_closing((uv_handle_t *)&r->tick))
		uv_close((uv_handle_t *)&r->tick, relay_on_tick_closed);
	for (struct relay_conn *c = r->conns; c; c = c->next)
		if (!c->finished)
			relay_conn_finish(c, "shutdown", END_RESET_BOTH);
}

void relay_free(struct relay *r)
{
	if (!r)
		return;
	relay_shutdown(r); /* closes the tick timer */
	r->freed = true;
	relay_free_now(r);
}
