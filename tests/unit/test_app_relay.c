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

#include "netstack_client.h"

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

/* ---- the fixture ---------------------------------------------------------- */

struct server;

struct fixture {
	uv_loop_t loop;
	struct nsc net; /* the netstack and the clients */
	struct policy policy;
	struct flowlog *log;
	struct relay *relay;
	char dir[64], path[128];
	struct server *servers[4];
	size_t nservers;
	int accepts;
};

static int on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	struct fixture *f = ctx;
	f->accepts++;
	return relay_tcp_accept(f->relay, netstack_tcp_stream(conn), client, dest);
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
	assert_int_equal(uv_loop_init(&f->loop), 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_relay.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/%s", f->dir, FLOWLOG_FILE);
	assert_int_equal(flowlog_open(&f->log, f->path, NULL), 0);

	struct addrpool pool;
	assert_int_equal(addrpool_parse4("10.77.0.0/24", &pool.net4, &pool.prefix4), 0);
	assert_int_equal(addrpool_parse6("fd77::/64", &pool.net6, &pool.prefix6), 0);
	policy_init(&f->policy, &pool);

	struct nsc_config nc = {
		.net = { .mtu = 1420, .addr4 = f->policy.addr4, .addr6 = f->policy.addr6 },
		.peer4 = PEER4,
		.peer6 = PEER6,
		.tcp_accept = on_accept,
		.tcp_accept_ctx = f
	};
	nsc_init(&f->net, &f->loop, &nc);
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
	nsc_free(&f->net);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	uv_walk(&f->loop, walk_close, NULL); /* the test servers */
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	flowlog_close(f->log);
	unlink(f->path);
	rmdir(f->dir);
	for (size_t i = 0; i < f->nservers; i++)
		free(f->servers[i]);
	free(f);
	return 0;
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
	struct nsc_client *c;
	size_t len;
};

static bool has_rx(void *arg)
{
	struct want_rx *w = arg;
	return w->c->rxlen >= w->len;
}

static bool has_rst(void *arg)
{
	return ((struct nsc_client *)arg)->rsts > 0;
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
	struct nsc_client *c = nsc_client_dial(&f->net, v6, 40000, v6 ? TUN6 : TUN4, s->port);
	nsc_client_send(&f->net, c, NSC_SYN, NULL, 0);
	nsc_pump(&f->net); /* SYN|ACK → ACK: accepted, dialling */
	assert_int_equal(f->accepts, 1);
	static const char req[] = "echo me through the relay\n"; /* neither TLS nor HTTP */
	nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, req,
			strlen(req)); /* before the connect completes */

	struct want_rx w = { c, strlen(req) };
	assert_true(nsc_run_until(&f->net, has_rx, &w, 3000));
	assert_memory_equal(c->rx, req, strlen(req));
	assert_int_equal(s->received, strlen(req));

	/* Client FIN → upstream EOF → the echo server's FIN → client FIN. */
	nsc_client_send(&f->net, c, NSC_ACK | NSC_FIN, NULL, 0);
	assert_true(nsc_run_until(&f->net, server_eof, s, 3000));
	assert_true(nsc_run_until(&f->net, nsc_got_fin, c, 3000));
	assert_true(nsc_run_until(&f->net, relay_idle, f, 3000));
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40001, TUN4, s->port);
	nsc_client_connect(&f->net, c);

	size_t up = 2u << 20;
	uint8_t *data = malloc(up);
	uint64_t sum = 0;
	for (size_t i = 0; i < up; i++) {
		data[i] = (uint8_t)(i * 13 + 1);
		sum += data[i];
	}
	nsc_client_write(&f->net, c, data, up);
	free(data);

	struct want_rx w = { c, s->to_send };
	assert_true(nsc_run_until(&f->net, has_rx, &w, 20000));
	assert_int_equal(c->rxlen, s->to_send);
	assert_memory_equal(c->rx, s->sendbuf, s->to_send);
	assert_true(nsc_run_until(&f->net, nsc_got_fin, c, 3000)); /* the server's FIN */

	nsc_client_send(&f->net, c, NSC_ACK | NSC_FIN, NULL, 0);
	assert_true(nsc_run_until(&f->net, server_eof, s, 5000));
	assert_int_equal(s->received, up);
	assert_int_equal(s->received_sum, sum);
	assert_true(nsc_run_until(&f->net, relay_idle, f, 3000));

	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.bytes_up, up);
	assert_int_equal(st.bytes_down, s->to_send);
	assert_int_equal(f->net.dropped, 0);
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40002, TUN4, s->port);
	nsc_client_connect(&f->net, c);
	/* The client stops acknowledging: pretend every segment is lost. */
	c->mute = true;
	nsc_run_for(&f->net, 300);
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40050, TUN4, s->port);
	nsc_client_send(&f->net, c, NSC_SYN, NULL, 0);
	nsc_pump(&f->net);
	static const char req[] = "GET /api/flows HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, req, strlen(req));
	assert_true(nsc_run_until(&f->net, has_rst, c, 3000));
	assert_true(nsc_run_until(&f->net, relay_idle, f, 3000));
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

	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40003, TUN4, port);
	uint64_t t0 = nsc_now_ms();
	nsc_client_send(&f->net, c, NSC_SYN, NULL, 0);
	assert_true(nsc_run_until(&f->net, has_rst, c, 2000));
	assert_true(nsc_now_ms() - t0 < 500);
	assert_true(nsc_run_until(&f->net, relay_idle, f, 1000));

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
		struct nsc_client *c = nsc_client_dial(&f->net, 0, (uint16_t)(41000 + i),
						       cases[i].dst, cases[i].port);
		nsc_client_send(&f->net, c, NSC_SYN, NULL, 0);
		assert_true(nsc_run_until(&f->net, has_rst, c, 1000));
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

static struct stream *local_conn;
static int local_accept(void *ctx, struct stream *conn, const struct sockaddr *client,
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 41100, TUN4, 53);
	nsc_client_send(&f->net, c, NSC_SYN, NULL, 0);
	assert_true(nsc_run_until(&f->net, has_rst, c, 1000));
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
	struct nsc_client *a1 = nsc_client_dial(&f->net, 0, 41001, TUN4, s[0]->port);
	struct nsc_client *a2 = nsc_client_dial(&f->net, 0, 41002, TUN4, s[1]->port);
	struct nsc_client *a3 = nsc_client_dial(&f->net, 0, 41003, TUN4, s[2]->port);
	nsc_client_connect(&f->net, a1);
	nsc_client_connect(&f->net, a2);
	nsc_client_send(&f->net, a3, NSC_SYN, NULL, 0);
	assert_true(nsc_run_until(&f->net, has_rst, a3, 2000));
	assert_int_equal(s[2]->accepted, 0); /* never dialled */

	/* The other peer (IPv6 source) has its own share. */
	struct nsc_client *b1 = nsc_client_dial(&f->net, 1, 41004, TUN6, s[2]->port);
	nsc_client_connect(&f->net, b1);
	struct want_srv ws = { s[2], 3 };
	nsc_client_send(&f->net, b1, NSC_ACK | NSC_PSH, "abc", 3);
	assert_true(nsc_run_until(&f->net, server_got, &ws, 2000));

	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.refused_peer_limit, 1);
	assert_int_equal(st.open, 3);

	/* A slot given back: the peer's next flow is taken. */
	nsc_client_send(&f->net, a1, NSC_ACK | NSC_RST, NULL, 0);
	assert_true(nsc_run_until(&f->net, server_closed_or_error, s[0], 3000));
	struct nsc_client *a4 = nsc_client_dial(&f->net, 0, 41005, TUN4, s[3]->port);
	nsc_client_connect(&f->net, a4);
	nsc_client_send(&f->net, a4, NSC_ACK | NSC_PSH, "xy", 2);
	struct want_srv ws2 = { s[3], 2 };
	assert_true(nsc_run_until(&f->net, server_got, &ws2, 2000));
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40004, TUN4, s->port);
	nsc_client_connect(&f->net, c);
	nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, "hello", 5);
	struct want_srv ws = { s, 5 };
	assert_true(nsc_run_until(&f->net, server_got, &ws, 2000));
	nsc_client_send(&f->net, c, NSC_ACK | NSC_RST, NULL, 0);
	assert_true(nsc_run_until(&f->net, server_closed_or_error, s, 3000));
	assert_true(s->error);
	assert_int_equal(s->error_code, UV_ECONNRESET);
	assert_int_equal(s->received, 5);
	assert_true(nsc_run_until(&f->net, relay_idle, f, 1000));
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40005, TUN4, s->port);
	nsc_client_connect(&f->net, c);
	nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, "boom", 4);
	assert_true(nsc_run_until(&f->net, has_rst, c, 3000));
	assert_int_equal(c->fins, 0);
	assert_true(nsc_run_until(&f->net, relay_idle, f, 1000));
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

	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40006, TUN4, ntohs(sin.sin_port));
	nsc_client_send(&f->net, c, NSC_SYN, NULL, 0);
	uint64_t t0 = nsc_now_ms();
	assert_true(nsc_run_until(&f->net, has_rst, c, 3000));
	uint64_t took = nsc_now_ms() - t0;
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
	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40007, TUN4, s->port);
	nsc_client_connect(&f->net, c);
	nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, "x", 1);
	struct want_srv ws = { s, 1 };
	assert_true(nsc_run_until(&f->net, server_got, &ws, 2000));
	relay_shutdown(f->relay);
	assert_true(nsc_run_until(&f->net, has_rst, c, 1000));
	assert_true(nsc_run_until(&f->net, server_error, s, 2000));
	struct relay_stats st;
	relay_get_stats(f->relay, &st);
	assert_int_equal(st.open, 0);
	struct records rs;
	read_records(f, &rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rec_str(rs.r[0], "end_reason"), "shutdown");
	free_records(&rs);
	/* Later connections are refused. */
	struct nsc_client *c2 = nsc_client_dial(&f->net, 0, 40008, TUN4, s->port);
	nsc_client_send(&f->net, c2, NSC_SYN, NULL, 0);
	assert_true(nsc_run_until(&f->net, has_rst, c2, 1000));
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

	struct nsc_client *c = nsc_client_dial(&f->net, 0, 40009, TUN4, ntohs(sin.sin_port));
	nsc_client_connect(&f->net, c);
	static const char first[] = "relay this, then hang up\n"; /* neither TLS nor HTTP */
	nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, first, strlen(first));
	/* The server reads it all, so its close sends a FIN, not a reset. */
	int afd = -1;
	char buf[64];
	size_t got = 0;
	uint64_t end = nsc_now_ms() + 3000;
	while (got < strlen(first)) {
		assert_true(nsc_now_ms() < end);
		uv_run(&f->loop, UV_RUN_NOWAIT);
		nsc_pump(&f->net);
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
	assert_true(nsc_run_until(&f->net, nsc_got_fin, c, 3000)); /* the relay read the EOF */

	/* Half-closed: the client may still send, the closed socket resets. */
	for (int i = 0; i < 50 && c->rsts == 0; i++) {
		nsc_client_send(&f->net, c, NSC_ACK | NSC_PSH, "more", 4);
		nsc_run_for(&f->net, 20);
	}
	close(lfd);
	assert_true(c->rsts > 0);
	assert_true(nsc_run_until(&f->net, relay_idle, f, 1000));
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
