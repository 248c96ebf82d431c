/* The TCP relay on loopback, without root:
 *
 *   hand-made TCP client ──segments──► netstack (lwIP) ──stream──► relay ──uv_tcp──► server
 *   10.77.0.2:4xxxx                     dialled 10.77.0.1:P            127.0.0.1:P / [::1]:P
 *
 * The client dials the endpoint's own tunnel address on a port opted in
 * with --allow-host-port, which the policy rewrites to the host's loopback,
 * where a libuv server of the test listens. Everything runs on one loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "inet_testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "flows/flowlog.h"
#include "mitm/policy.h"
#include "mitm/relay.h"
#include "netstack/netstack.h"

#define TUN4 "10.77.0.1"
#define PEER4 "10.77.0.2"
#define TUN6 "fd77::1"
#define PEER6 "fd77::2"

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10

#define WSCALE_OURS 7 /* the client's window scale */
#define WSCALE_LWIP 5 /* TCP_RCV_SCALE */

/* ---- raw TCP segments ---------------------------------------------------- */

struct client {
	int v6;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint32_t seq; /* next byte we send */
	uint32_t una; /* oldest byte the netstack has not acknowledged */
	uint32_t ack; /* next byte we expect */
	uint32_t wnd; /* the netstack's window, scaled */
	bool established;
	int rsts, fins;
	uint8_t *rx; /* bytes received, in order */
	size_t rxlen, rxcap;
	bool ack_due;
	bool mute; /* acknowledge nothing (a stalled client) */
};

/* One segment from the client; returns the packet length. */
static size_t build_seg(uint8_t *pkt, const struct client *c, uint8_t flags, const uint8_t *opt,
			size_t optlen, const void *data, size_t len)
{
	size_t alen = c->v6 ? 16 : 4, hl = c->v6 ? 40 : 20, thl = 20 + optlen;
	size_t ulen = thl + len;
	memset(pkt, 0, hl + thl);
	if (c->v6) {
		pkt[0] = 0x60;
		put16(pkt + 4, (uint32_t)ulen);
		pkt[6] = 6;
		pkt[7] = 64;
		memcpy(pkt + 8, c->src, 16);
		memcpy(pkt + 24, c->dst, 16);
	} else {
		pkt[0] = 0x45;
		put16(pkt + 2, (uint32_t)(20 + ulen));
		pkt[8] = 64;
		pkt[9] = 6;
		memcpy(pkt + 12, c->src, 4);
		memcpy(pkt + 16, c->dst, 4);
		put16(pkt + 10, fold(sum16(0, pkt, 20)));
	}
	uint8_t *t = pkt + hl;
	put16(t, c->sport);
	put16(t + 2, c->dport);
	put32(t + 4, c->seq);
	put32(t + 8, (flags & F_ACK) ? c->ack : 0);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = flags;
	put16(t + 14, 0xffff);
	if (optlen > 0)
		memcpy(t + 20, opt, optlen);
	if (len > 0)
		memcpy(t + thl, data, len);
	/* Pseudo-header, then the segment. */
	uint32_t acc = sum16(sum16(0, c->src, alen), c->dst, alen);
	uint8_t ph[4] = { 0, 6, (uint8_t)(ulen >> 8), (uint8_t)ulen };
	acc = sum16(acc, ph, 4);
	put16(t + 16, fold(sum16(acc, t, ulen)));
	return hl + ulen;
}

/* ---- the fixture ---------------------------------------------------------- */

#define MAX_PKTS 8192
#define PKT_MAX 1500

struct server;

struct fixture {
	uv_loop_t loop;
	struct netstack *ns;
	struct policy policy;
	struct flowlog *log;
	struct relay *relay;
	char dir[64], path[128];
	/* packets the netstack emitted, not yet looked at */
	uint8_t (*pkts)[PKT_MAX];
	size_t pktlen[MAX_PKTS];
	size_t npkts;
	size_t dropped;
	struct client *clients[8];
	size_t nclients;
	struct server *servers[4];
	size_t nservers;
	int accepts;
};

static void on_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct fixture *f = ctx;
	if (f->npkts == MAX_PKTS || len > PKT_MAX) {
		f->dropped++;
		return;
	}
	memcpy(f->pkts[f->npkts], pkt, len);
	f->pktlen[f->npkts++] = len;
}

static int on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	struct fixture *f = ctx;
	f->accepts++;
	return relay_tcp_accept(f->relay, conn, client, dest);
}

/* test_peer_share: IPv6 clients are another peer. */
static bool split_peers;

static const char *peer_name(void *ctx, const struct sockaddr *client)
{
	(void)ctx;
	return split_peers && client->sa_family == AF_INET6 ? "tablet" : "phone";
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	split_peers = false;
	f->pkts = malloc(sizeof(*f->pkts) * MAX_PKTS);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_relay.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/%s", f->dir, FLOWLOG_FILE);
	assert_int_equal(flowlog_open(&f->log, f->path, NULL), 0);

	struct addrpool pool;
	assert_int_equal(addrpool_parse4("10.77.0.0/24", &pool.net4, &pool.prefix4), 0);
	assert_int_equal(addrpool_parse6("fd77::/64", &pool.net6, &pool.prefix6), 0);
	policy_init(&f->policy, &pool);

	struct netstack_config nc = { .mtu = 1420 };
	nc.addr4 = f->policy.addr4;
	nc.addr6 = f->policy.addr6;
	struct netstack_ops ops = { .output = on_output, .tcp_accept = on_accept };
	f->ns = netstack_new(&f->loop, &nc, &ops, f);
	assert_non_null(f->ns);
	struct relay_config rc = {
		.policy = &f->policy,
		.log = f->log,
		.peer_name = peer_name,
		.connect_timeout_ms = 2000,
	};
	f->relay = relay_new(&f->loop, &rc);
	assert_non_null(f->relay);
	*state = f;
	return 0;
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	relay_free(f->relay);
	netstack_free(f->ns);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	uv_walk(&f->loop, walk_close, NULL); /* the test servers */
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	flowlog_close(f->log);
	unlink(f->path);
	rmdir(f->dir);
	for (size_t i = 0; i < f->nclients; i++) {
		free(f->clients[i]->rx);
		free(f->clients[i]);
	}
	for (size_t i = 0; i < f->nservers; i++)
		free(f->servers[i]);
	free(f->pkts);
	free(f);
	return 0;
}

/* ---- the client's side of TCP ------------------------------------------- */

static struct client *client_new(struct fixture *f, int v6, uint16_t sport, const char *dst,
				 uint16_t dport)
{
	struct client *c = calloc(1, sizeof(*c));
	c->v6 = v6;
	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, v6 ? PEER6 : PEER4, c->src), 1);
	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, dst, c->dst), 1);
	c->sport = sport;
	c->dport = dport;
	c->seq = 1000u * sport;
	c->una = c->seq;
	f->clients[f->nclients++] = c;
	return c;
}

static void client_send(struct fixture *f, struct client *c, uint8_t flags, const void *data,
			size_t len)
{
	uint8_t pkt[PKT_MAX + 100];
	static const uint8_t syn_opt[8] = { 2, 4, 0x05, 0x64, 1, 3, 3, WSCALE_OURS };
	bool syn = flags & F_SYN;
	netstack_input(f->ns, pkt,
		       build_seg(pkt, c, flags, syn ? syn_opt : NULL, syn ? sizeof(syn_opt) : 0,
				 data, len));
	c->seq += (uint32_t)len + ((flags & (F_SYN | F_FIN)) ? 1 : 0);
}

/* Looks at what the netstack emitted: SYN|ACK, data in order, FIN, RST,
 * acknowledgements of our bytes. */
static void pump(struct fixture *f)
{
	for (size_t i = 0; i < f->npkts; i++) {
		const uint8_t *p = f->pkts[i];
		size_t len = f->pktlen[i];
		int v6 = (p[0] >> 4) == 6;
		size_t hl = v6 ? 40 : (size_t)(p[0] & 15) * 4;
		if ((v6 ? p[6] : p[9]) != 6)
			continue;
		const uint8_t *t = p + hl;
		uint16_t dport = get16(t + 2);
		struct client *c = NULL;
		for (size_t k = 0; k < f->nclients; k++)
			if (f->clients[k]->sport == dport && f->clients[k]->v6 == v6)
				c = f->clients[k];
		if (!c)
			continue;
		uint32_t seq = get32(t + 4), ack = get32(t + 8);
		uint8_t flags = t[13];
		size_t thl = (size_t)(t[12] >> 4) * 4;
		const uint8_t *data = t + thl;
		size_t dlen = len - hl - thl;
		if (flags & F_RST) {
			c->rsts++;
			continue;
		}
		if (flags & F_SYN) {
			c->ack = seq + 1;
			c->una = ack;
			c->wnd = get16(t + 14); /* not scaled in a SYN */
			c->ack_due = true;
			continue;
		}
		if (flags & F_ACK) {
			if ((int32_t)(ack - c->una) > 0)
				c->una = ack;
			c->wnd = (uint32_t)get16(t + 14) << WSCALE_LWIP;
		}
		if (dlen > 0 && seq == c->ack) {
			if (c->rxlen + dlen > c->rxcap) {
				c->rxcap = (c->rxlen + dlen) * 2;
				c->rx = realloc(c->rx, c->rxcap);
			}
			memcpy(c->rx + c->rxlen, data, dlen);
			c->rxlen += dlen;
			c->ack += (uint32_t)dlen;
			c->ack_due = true;
		} else if (dlen > 0) {
			c->ack_due = true; /* a retransmission: say again where we are */
		}
		if ((flags & F_FIN) && seq + dlen == c->ack) {
			c->fins++;
			c->ack++;
			c->ack_due = true;
		}
	}
	f->npkts = 0;
	for (size_t k = 0; k < f->nclients; k++) {
		struct client *c = f->clients[k];
		if (c->ack_due && c->rsts == 0 && !c->mute) {
			c->ack_due = false;
			client_send(f, c, F_ACK, NULL, 0);
			c->established = true;
		}
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop and the client until cond holds; false after `ms`. */
static bool run_until(struct fixture *f, bool (*cond)(void *), void *arg, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	for (;;) {
		pump(f);
		if (cond(arg))
			return true;
		if (now_ms() > end)
			return false;
		if (uv_run(&f->loop, UV_RUN_NOWAIT) == 0 || f->npkts == 0)
			usleep(200);
	}
}

static void run_for(struct fixture *f, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	while (now_ms() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		pump(f);
		usleep(200);
	}
}

static bool is_established(void *arg)
{
	return ((struct client *)arg)->established;
}

static void client_connect(struct fixture *f, struct client *c)
{
	client_send(f, c, F_SYN, NULL, 0);
	assert_true(run_until(f, is_established, c, 2000));
}

/* Sends `len` bytes within the netstack's window (pumping as needed). */
static void client_write(struct fixture *f, struct client *c, const uint8_t *data, size_t len)
{
	size_t off = 0;
	uint64_t end = now_ms() + 10000;
	while (off < len) {
		assert_true(now_ms() < end);
		uint32_t inflight = c->seq - c->una;
		size_t n = len - off;
		if (n > 1380)
			n = 1380;
		if (inflight + n > c->wnd || inflight > 512 * 1024) {
			uv_run(&f->loop, UV_RUN_NOWAIT);
			pump(f);
			if (f->npkts == 0)
				usleep(100);
			continue;
		}
		client_send(f, c, F_ACK | F_PSH, data + off, n);
		off += n;
		pump(f);
	}
}

/* ---- the upstream server ------------------------------------------------ */

enum server_mode { SRV_ECHO, SRV_SEND_THEN_FIN, SRV_RESET_ON_DATA, SRV_SINK };

struct server {
	uv_tcp_t listener;
	uv_tcp_t conn;
	enum server_mode mode;
	uint16_t port;
	int accepted;
	bool eof, error, closed;
	int error_code;
	size_t received;
	uint64_t received_sum; /* sum of bytes received, to check content */
	size_t to_send;
	uv_shutdown_t sreq;
	uv_write_t wreq;
	uint8_t *sendbuf;
	char buf[65536];
};

static void srv_on_close(uv_handle_t *h)
{
	struct server *s = h->data;
	s->closed = true;
}

static void srv_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
	struct server *s = h->data;
	(void)sugg;
	*b = uv_buf_init(s->buf, sizeof(s->buf));
}

static void srv_on_shutdown(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status;
}

static void srv_echo_written(uv_write_t *req, int status)
{
	(void)status;
	free(req);
}

static void srv_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct server *s = st->data;
	if (n == UV_EOF) {
		s->eof = true;
		uv_read_stop(st);
		if (s->mode == SRV_ECHO)
			uv_shutdown(&s->sreq, st, srv_on_shutdown);
		return;
	}
	if (n < 0) {
		s->error = true;
		s->error_code = (int)n;
		uv_close((uv_handle_t *)st, srv_on_close);
		return;
	}
	s->received += (size_t)n;
	for (ssize_t i = 0; i < n; i++)
		s->received_sum += (uint8_t)b->base[i];
	if (s->mode == SRV_ECHO) {
		uv_write_t *w = malloc(sizeof(*w) + (size_t)n);
		memcpy(w + 1, b->base, (size_t)n);
		uv_buf_t out = uv_buf_init((char *)(w + 1), (unsigned)n);
		assert_int_equal(uv_write(w, st, &out, 1, srv_echo_written), 0);
	} else if (s->mode == SRV_RESET_ON_DATA) {
		uv_read_stop(st);
		assert_int_equal(uv_tcp_close_reset(&s->conn, srv_on_close), 0);
	}
}

static void srv_sent(uv_write_t *req, int status)
{
	struct server *s = req->data;
	if (status < 0)
		return; /* the flow was reset under it (teardown) */
	uv_shutdown(&s->sreq, (uv_stream_t *)&s->conn, srv_on_shutdown);
}

static void srv_on_connection(uv_stream_t *l, int status)
{
	struct server *s = l->data;
	assert_int_equal(status, 0);
	assert_int_equal(s->accepted, 0); /* one connection per server */
	s->accepted++;
	uv_tcp_init(l->loop, &s->conn);
	s->conn.data = s;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
	uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_on_read);
	if (s->mode == SRV_SEND_THEN_FIN) {
		s->wreq.data = s;
		uv_buf_t b = uv_buf_init((char *)s->sendbuf, (unsigned)s->to_send);
		assert_int_equal(uv_write(&s->wreq, (uv_stream_t *)&s->conn, &b, 1, srv_sent), 0);
	}
}

/* Listens on 127.0.0.1 (or ::1) on an ephemeral port; false if the family
 * is unavailable. */
static struct server *server_start(struct fixture *f, int v6, enum server_mode mode)
{
	struct server *s = calloc(1, sizeof(*s));
	f->servers[f->nservers++] = s;
	s->mode = mode;
	uv_tcp_init(&f->loop, &s->listener);
	s->listener.data = s;
	struct sockaddr_storage ss;
	if (v6)
		uv_ip6_addr("::1", 0, (struct sockaddr_in6 *)&ss);
	else
		uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&ss);
	if (uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0) != 0 ||
	    uv_listen((uv_stream_t *)&s->listener, 16, srv_on_connection) != 0) {
		uv_close((uv_handle_t *)&s->listener, NULL);
		return NULL;
	}
	int len = sizeof(ss);
	uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
	s->port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
			   : ((struct sockaddr_in *)&ss)->sin_port);
	assert_int_equal(policy_add_host_port(&f->policy, s->port), 0);
	return s;
}

/* ---- reading the records back ------------------------------------------ */

struct records {
	size_t n;
	json_t *r[16];
};

static int keep_record(void *ctx, size_t line, json_t *record, const char *error)
{
	struct records *rs = ctx;
	(void)line;
	assert_null(error);
	assert_true(rs->n < 16);
	rs->r[rs->n++] = json_incref(record);
	return 0;
}

static void read_records(struct fixture *f, struct records *rs)
{
	memset(rs, 0, sizeof(*rs));
	bool partial = true;
	assert_int_equal(flowlog_read(f->path, keep_record, rs, &partial), 0);
	assert_false(partial);
}

static void free_records(struct records *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		json_decref(rs->r[i]);
}

static const char *rec_str(json_t *r, const char *key)
{
	const char *s = json_string_value(json_object_get(r, key));
	return s ? s : "(none)";
}

static long long rec_int(json_t *r, const char *key)
{
	return json_integer_value(json_object_get(r, key));
}

/* ---- conditions ------------------------------------------------------- */

struct want_rx {
	struct client *c;
	size_t len;
};

static bool has_rx(void *arg)
{
	struct want_rx *w = arg;
	return w->c->rxlen >= w->len;
}

static bool has_fin(void *arg)
{
	return ((struct client *)arg)->fins > 0;
}

static bool has_rst(void *arg)
{
	return ((struct client *)arg)->rsts > 0;
}

static bool relay_idle(void *arg)
{
	struct fixture *f = arg;
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	return st.open == 0;
}

static bool server_eof(void *arg)
{
	return ((struct server *)arg)->eof;
}

static bool server_error(void *arg)
{
	return ((struct server *)arg)->error;
}

struct want_srv {
	struct server *s;
	size_t n;
};

static bool server_got(void *arg)
{
	struct want_srv *w = arg;
	return w->s->received >= w->n;
}

static bool server_closed_or_error(void *arg)
{
	struct server *s = arg;
	return s->error || s->eof;
}

/* ---- tests ------------------------------------------------------------- */

/* Data both ways and FIN mapped both ways; the client's first bytes arrive
 * before the upstream is connected and are held until it is. */
static void echo_flow(struct fixture *f, int v6)
{
	struct server *s = server_start(f, v6, SRV_ECHO);
	if (!s)
		skip();
	struct client *c = client_new(f, v6, 40000, v6 ? TUN6 : TUN4, s->port);
	client_send(f, c, F_SYN, NULL, 0);
	pump(f); /* SYN|ACK → ACK: accepted, dialling */
	assert_int_equal(f->accepts, 1);
	static const char req[] = "echo me through the relay\n"; /* neither TLS nor HTTP */
	client_send(f, c, F_ACK | F_PSH, req, strlen(req));      /* before the connect completes */

	struct want_rx w = { c, strlen(req) };
	assert_true(run_until(f, has_rx, &w, 3000));
	assert_memory_equal(c->rx, req, strlen(req));
	assert_int_equal(s->received, strlen(req));

	/* Client FIN → upstream EOF → the echo server's FIN → client FIN. */
	client_send(f, c, F_ACK | F_FIN, NULL, 0);
	assert_true(run_until(f, server_eof, s, 3000));
	assert_true(run_until(f, has_fin, c, 3000));
	assert_true(run_until(f, relay_idle, f, 3000));
	assert_int_equal(c->rsts, 0);

	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.bytes_up, strlen(req));
	assert_int_equal(st.bytes_down, strlen(req));
	assert_int_equal(st.connect_failed, 0);

	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	json_t *r = rs.r[0];
	assert_string_equal(rec_str(r, "type"), "tcp");
	assert_string_equal(rec_str(r, "peer"), "phone");
	assert_string_equal(rec_str(r, "end_reason"), "fin");
	assert_string_equal(rec_str(r, "proto"), "raw");
	json_t *first = json_object_get(r, "first_up");
	assert_string_equal(json_string_value(json_object_get(first, "text")), req);
	char want[80];
	snprintf(want, sizeof(want), v6 ? "[%s]:%u" : "%s:%u", v6 ? TUN6 : TUN4, s->port);
	assert_string_equal(rec_str(r, "server"), want);
	snprintf(want, sizeof(want), v6 ? "[::1]:%u" : "127.0.0.1:%u", s->port);
	assert_string_equal(rec_str(r, "upstream"), want);
	snprintf(want, sizeof(want), v6 ? "[%s]:40000" : "%s:40000", v6 ? PEER6 : PEER4);
	assert_string_equal(rec_str(r, "client"), want);
	assert_int_equal(rec_int(r, "bytes_up"), strlen(req));
	assert_int_equal(rec_int(r, "bytes_down"), strlen(req));
	assert_null(json_object_get(r, "error"));
	free_records(&rs);
}

static void test_echo_v4(void **state)
{
	echo_flow(*state, 0);
}

static void test_echo_v6(void **state)
{
	echo_flow(*state, 1);
}

/* 4 MiB down (past lwIP's 1 MiB send buffer and the relay's read size) and
 * 2 MiB up (past the relay's upstream queue bound), content checked. */
static void test_bulk(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_SEND_THEN_FIN);
	assert_non_null(s);
	s->to_send = 4u << 20;
	s->sendbuf = malloc(s->to_send);
	for (size_t i = 0; i < s->to_send; i++)
		s->sendbuf[i] = (uint8_t)(i * 7 + (i >> 12));
	struct client *c = client_new(f, 0, 40001, TUN4, s->port);
	client_connect(f, c);

	size_t up = 2u << 20;
	uint8_t *data = malloc(up);
	uint64_t sum = 0;
	for (size_t i = 0; i < up; i++) {
		data[i] = (uint8_t)(i * 13 + 1);
		sum += data[i];
	}
	client_write(f, c, data, up);
	free(data);

	struct want_rx w = { c, s->to_send };
	assert_true(run_until(f, has_rx, &w, 20000));
	assert_int_equal(c->rxlen, s->to_send);
	assert_memory_equal(c->rx, s->sendbuf, s->to_send);
	assert_true(run_until(f, has_fin, c, 3000)); /* the server's FIN */

	client_send(f, c, F_ACK | F_FIN, NULL, 0);
	assert_true(run_until(f, server_eof, s, 5000));
	assert_int_equal(s->received, up);
	assert_int_equal(s->received_sum, sum);
	assert_true(run_until(f, relay_idle, f, 3000));

	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.bytes_up, up);
	assert_int_equal(st.bytes_down, s->to_send);
	assert_int_equal(f->dropped, 0);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "fin");
	assert_int_equal(rec_int(rs.r[0], "bytes_down"), (long long)s->to_send);
	assert_int_equal(rec_int(rs.r[0], "bytes_up"), (long long)up);
	free_records(&rs);
	free(s->sendbuf);
}

/* A slow client: the upstream is not read beyond what the netstack holds. */
static void test_slow_client_stops_upstream(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_SEND_THEN_FIN);
	assert_non_null(s);
	s->to_send = 16u << 20;
	s->sendbuf = calloc(1, s->to_send);
	struct client *c = client_new(f, 0, 40002, TUN4, s->port);
	client_connect(f, c);
	/* The client stops acknowledging: pretend every segment is lost. */
	c->mute = true;
	run_for(f, 300);
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	/* lwIP's send buffer (1 MiB) plus one read at most; the rest waits in
	 * the kernel's socket buffers and the server's write queue. */
	assert_true(st.bytes_down <= (1u << 20) + RELAY_READ_SIZE);
	assert_true(st.bytes_down >= 64 * 1024);
	assert_true(st.upstream_stops >= 1);
	assert_true(uv_stream_get_write_queue_size((uv_stream_t *)&s->conn) >
		    0); /* the server waits */
	free(s->sendbuf);
	s->sendbuf = NULL;
	/* teardown resets everything; the server's write is cancelled */
}

/* A port of the endpoint's own services (the control API) is never reached
 * through the tunnel, even where the policy lets the flow go to the host:
 * reset, recorded "policy:own_service", not a byte delivered. Other ports
 * still pass, and relay_reconfigure's per-peer share applies to new flows. */
static void test_own_service(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_ECHO);
	assert_non_null(s);
	assert_int_equal(relay_protect_port(f->relay, s->port), 0);
	struct client *c = client_new(f, 0, 40050, TUN4, s->port);
	client_send(f, c, F_SYN, NULL, 0);
	pump(f);
	static const char req[] = "GET /api/flows HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	client_send(f, c, F_ACK | F_PSH, req, strlen(req));
	assert_true(run_until(f, has_rst, c, 3000));
	assert_true(run_until(f, relay_idle, f, 3000));
	assert_int_equal(s->received, 0);
	assert_int_equal(c->rxlen, 0);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "policy:own_service");
	assert_non_null(strstr(rec_str(rs.r[0], "error"), "control service"));
	free_records(&rs);
}

/* Nothing listens: the client sees a reset promptly, "upstream_refused". */
static void test_refused_port(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_SINK);
	assert_non_null(s);
	uint16_t port = s->port;
	uv_close((uv_handle_t *)&s->listener, NULL); /* the port is now closed */
	uv_run(&f->loop, UV_RUN_NOWAIT);

	struct client *c = client_new(f, 0, 40003, TUN4, port);
	uint64_t t0 = now_ms();
	client_send(f, c, F_SYN, NULL, 0);
	assert_true(run_until(f, has_rst, c, 2000));
	assert_true(now_ms() - t0 < 500);
	assert_true(run_until(f, relay_idle, f, 1000));

	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.connect_failed, 1);
	assert_int_equal(st.connect_refused, 1);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "upstream_refused");
	assert_non_null(strstr(rec_str(rs.r[0], "error"), "refused"));
	free_records(&rs);
}

/* Destinations the policy refuses: reset after the handshake, recorded,
 * counted by verdict, never dialled. */
static void test_policy_refusals(void **state)
{
	struct fixture *f = *state;
	struct {
		const char *dst;
		uint16_t port;
		enum policy_verdict v;
	} cases[] = {
		{ "169.254.169.254", 80, POLICY_REFUSE_LINK_LOCAL },
		{ "10.77.0.3", 22, POLICY_REFUSE_PEER },
		{ TUN4, 22, POLICY_REFUSE_OWN_ADDRESS },
		{ TUN4, 53, POLICY_REFUSE_OWN_ADDRESS }, /* no local TCP service hooked */
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++) {
		struct client *c =
			client_new(f, 0, (uint16_t)(41000 + i), cases[i].dst, cases[i].port);
		client_send(f, c, F_SYN, NULL, 0);
		assert_true(run_until(f, has_rst, c, 1000));
	}
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.refused, n);
	assert_int_equal(st.refused_by[POLICY_REFUSE_LINK_LOCAL], 1);
	assert_int_equal(st.refused_by[POLICY_REFUSE_PEER], 1);
	assert_int_equal(st.refused_by[POLICY_REFUSE_OWN_ADDRESS], 2);
	assert_int_equal(st.accepted, 0);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 3); /* the unhooked local service is not a flow record */
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "policy:link_local");
	assert_string_equal(rec_str(rs.r[0], "server"), "169.254.169.254:80");
	assert_string_equal(rec_str(rs.r[1], "end_reason"), "policy:peer");
	assert_string_equal(rec_str(rs.r[2], "end_reason"), "policy:own_address");
	free_records(&rs);
}

static struct netstack_tcp *local_conn;
static int local_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			const struct sockaddr *dest)
{
	(void)client;
	int *calls = ctx;
	(*calls)++;
	assert_int_equal(ntohs(((const struct sockaddr_in *)dest)->sin_port), 53);
	local_conn = conn;
	return -1; /* the hook refuses: the netstack resets */
}

static void test_local_service_hook(void **state)
{
	struct fixture *f = *state;
	int calls = 0;
	relay_set_local_tcp(f->relay, local_accept, &calls);
	struct client *c = client_new(f, 0, 41100, TUN4, 53);
	client_send(f, c, F_SYN, NULL, 0);
	assert_true(run_until(f, has_rst, c, 1000));
	assert_int_equal(calls, 1);
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.local, 1);
	assert_int_equal(st.refused, 0);
}

/* One peer holds at most max_per_peer flows: the next is reset at once and
 * recorded, another peer still gets its own, and a slot given back can be
 * taken again. */
static void test_peer_share(void **state)
{
	struct fixture *f = *state;
	relay_free(f->relay);
	struct relay_config rc = {
		.policy = &f->policy,
		.log = f->log,
		.peer_name = peer_name,
		.connect_timeout_ms = 2000,
		.max_per_peer = 2,
	};
	f->relay = relay_new(&f->loop, &rc);
	assert_non_null(f->relay);
	split_peers = true;

	struct server *s[4];
	for (int i = 0; i < 4; i++)
		assert_non_null(s[i] = server_start(f, i == 2, SRV_SINK));
	struct client *a1 = client_new(f, 0, 41001, TUN4, s[0]->port);
	struct client *a2 = client_new(f, 0, 41002, TUN4, s[1]->port);
	struct client *a3 = client_new(f, 0, 41003, TUN4, s[2]->port);
	client_connect(f, a1);
	client_connect(f, a2);
	client_send(f, a3, F_SYN, NULL, 0);
	assert_true(run_until(f, has_rst, a3, 2000));
	assert_int_equal(s[2]->accepted, 0); /* never dialled */

	/* The other peer (IPv6 source) has its own share. */
	struct client *b1 = client_new(f, 1, 41004, TUN6, s[2]->port);
	client_connect(f, b1);
	struct want_srv ws = { s[2], 3 };
	client_send(f, b1, F_ACK | F_PSH, "abc", 3);
	assert_true(run_until(f, server_got, &ws, 2000));

	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.refused_peer_limit, 1);
	assert_int_equal(st.open, 3);

	/* A slot given back: the peer's next flow is taken. */
	client_send(f, a1, F_ACK | F_RST, NULL, 0);
	assert_true(run_until(f, server_closed_or_error, s[0], 3000));
	struct client *a4 = client_new(f, 0, 41005, TUN4, s[3]->port);
	client_connect(f, a4);
	client_send(f, a4, F_ACK | F_PSH, "xy", 2);
	struct want_srv ws2 = { s[3], 2 };
	assert_true(run_until(f, server_got, &ws2, 2000));
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.refused_peer_limit, 1);

	struct records rs;
	read_records(f, &rs);
	size_t limited = 0;
	for (size_t i = 0; i < rs.n; i++)
		if (strcmp(rec_str(rs.r[i], "end_reason"), "limit:peer_connections") == 0) {
			assert_string_equal(rec_str(rs.r[i], "peer"), "phone");
			limited++;
		}
	assert_int_equal(limited, 1);
	free_records(&rs);
	split_peers = false;
}

/* Client RST → the upstream sees a reset, not an EOF. */
static void test_client_reset(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_SINK);
	assert_non_null(s);
	struct client *c = client_new(f, 0, 40004, TUN4, s->port);
	client_connect(f, c);
	client_send(f, c, F_ACK | F_PSH, "hello", 5);
	struct want_srv ws = { s, 5 };
	assert_true(run_until(f, server_got, &ws, 2000));
	client_send(f, c, F_ACK | F_RST, NULL, 0);
	assert_true(run_until(f, server_closed_or_error, s, 3000));
	assert_true(s->error);
	assert_int_equal(s->error_code, UV_ECONNRESET);
	assert_int_equal(s->received, 5);
	assert_true(run_until(f, relay_idle, f, 1000));
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "client_reset");
	assert_int_equal(rec_int(rs.r[0], "bytes_up"), 5);
	free_records(&rs);
}

/* Upstream RST → the client sees a reset. */
static void test_upstream_reset(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_RESET_ON_DATA);
	assert_non_null(s);
	struct client *c = client_new(f, 0, 40005, TUN4, s->port);
	client_connect(f, c);
	client_send(f, c, F_ACK | F_PSH, "boom", 4);
	assert_true(run_until(f, has_rst, c, 3000));
	assert_int_equal(c->fins, 0);
	assert_true(run_until(f, relay_idle, f, 1000));
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.upstream_resets, 1);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "upstream_reset");
	free_records(&rs);
}

/* A listener whose accept queue is full drops SYNs: the connect timer
 * fires, the client gets a reset, "upstream_unreachable". */
static void test_connect_timeout(void **state)
{
	struct fixture *f = *state;
	relay_free(f->relay);
	struct relay_config rc = { .policy = &f->policy, .log = f->log, .connect_timeout_ms = 300 };
	f->relay = relay_new(&f->loop, &rc);

	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	socklen_t sl = sizeof(sin);
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	/* Fill the accept queue with connections nobody accepts. */
	int fill[4];
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		(void)connect(fill[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	usleep(50000);
	assert_int_equal(policy_add_host_port(&f->policy, ntohs(sin.sin_port)), 0);

	struct client *c = client_new(f, 0, 40006, TUN4, ntohs(sin.sin_port));
	client_send(f, c, F_SYN, NULL, 0);
	uint64_t t0 = now_ms();
	assert_true(run_until(f, has_rst, c, 3000));
	uint64_t took = now_ms() - t0;
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
	if (st.connect_timeout == 0)
		skip(); /* the kernel answered after all (another backlog policy) */
	assert_true(took >= 250);
	assert_int_equal(st.connect_failed, 1);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "upstream_unreachable");
	assert_non_null(strstr(rec_str(rs.r[0], "error"), "timed out"));
	free_records(&rs);
}

/* relay_shutdown resets both legs and records "shutdown". */
static void test_shutdown(void **state)
{
	struct fixture *f = *state;
	struct server *s = server_start(f, 0, SRV_SINK);
	assert_non_null(s);
	struct client *c = client_new(f, 0, 40007, TUN4, s->port);
	client_connect(f, c);
	client_send(f, c, F_ACK | F_PSH, "x", 1);
	struct want_srv ws = { s, 1 };
	assert_true(run_until(f, server_got, &ws, 2000));
	relay_shutdown(f->relay);
	assert_true(run_until(f, has_rst, c, 1000));
	assert_true(run_until(f, server_error, s, 2000));
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.open, 0);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "shutdown");
	free_records(&rs);
	/* Later connections are refused. */
	struct client *c2 = client_new(f, 0, 40008, TUN4, s->port);
	client_send(f, c2, F_SYN, NULL, 0);
	assert_true(run_until(f, has_rst, c2, 1000));
	assert_int_equal(s->accepted, 1);
}

/* The upstream closes while the client still sends (iperf3's server at the
 * end of an upload): the next write draws a reset from its kernel, the one
 * after fails with EPIPE. That ends the flow, "upstream_reset"; it must not
 * raise SIGPIPE, whose default action ends the whole process. */
static void test_upstream_closed_while_client_sends(void **state)
{
	struct fixture *f = *state;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	assert_int_equal(policy_add_host_port(&f->policy, ntohs(sin.sin_port)), 0);

	struct client *c = client_new(f, 0, 40009, TUN4, ntohs(sin.sin_port));
	client_connect(f, c);
	static const char first[] = "relay this, then hang up\n"; /* neither TLS nor HTTP */
	client_send(f, c, F_ACK | F_PSH, first, strlen(first));
	/* The server reads it all, so its close sends a FIN, not a reset. */
	int afd = -1;
	char buf[64];
	size_t got = 0;
	uint64_t end = now_ms() + 3000;
	while (got < strlen(first)) {
		assert_true(now_ms() < end);
		uv_run(&f->loop, UV_RUN_NOWAIT);
		pump(f);
		if (afd < 0)
			afd = accept(lfd, NULL, NULL);
		if (afd >= 0) {
			ssize_t n = recv(afd, buf + got, sizeof(buf) - got, MSG_DONTWAIT);
			if (n > 0)
				got += (size_t)n;
		}
		usleep(200);
	}
	assert_memory_equal(buf, first, strlen(first));
	close(afd);
	assert_true(run_until(f, has_fin, c, 3000)); /* the relay read the EOF */

	/* Half-closed: the client may still send, the closed socket resets. */
	for (int i = 0; i < 50 && c->rsts == 0; i++) {
		client_send(f, c, F_ACK | F_PSH, "more", 4);
		run_for(f, 20);
	}
	close(lfd);
	assert_true(c->rsts > 0);
	assert_true(run_until(f, relay_idle, f, 1000));
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.upstream_resets, 1);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "upstream_reset");
	free_records(&rs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_echo_v4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_share, setup, teardown),
		cmocka_unit_test_setup_teardown(test_echo_v6, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bulk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_client_stops_upstream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_service, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_local_service_hook, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_closed_while_client_sends, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
