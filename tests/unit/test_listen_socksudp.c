/* SOCKS5 UDP associations (listen/socksudp.h) in one process: a real loop,
 * a UDP echo on 127.0.0.1 (the policy's test switch lets loopback stand in
 * for the internet), a client socket, and a stand-in for the control
 * connection. The reply's BND, echoes by address and by name (one lookup,
 * then the cache), fragments and other ports dropped, the limit on
 * associations, the end by FIN, by idle time and with the listener (a
 * lookup still running), and the records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/addrpool.h"
#include "flows/flowlog.h"
#include "listen/socks5.h"
#include "listen/socksudp.h"
#include "mitm/policy.h"

/* ---- a control connection that records what happens to it --------------- */

struct ctl {
	struct stream s;
	const struct stream_cb *cb;
	void *arg;
	uint8_t out[64];
	size_t out_len;
	bool closed, paused;
};

static void ctl_set_cb(struct stream *s, const struct stream_cb *cb, void *arg)
{
	struct ctl *c = (struct ctl *)s;
	c->cb = cb;
	c->arg = arg;
}

static size_t ctl_write(struct stream *s, const uint8_t *data, size_t len)
{
	struct ctl *c = (struct ctl *)s;
	assert_true(c->out_len + len <= sizeof(c->out));
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return len;
}

static size_t ctl_writable(const struct stream *s)
{
	(void)s;
	return 1 << 20;
}

static void ctl_pause(struct stream *s)
{
	((struct ctl *)s)->paused = true;
}

static void ctl_resume(struct stream *s)
{
	((struct ctl *)s)->paused = false;
}

static int ctl_shutdown(struct stream *s)
{
	(void)s;
	return 0;
}

static void ctl_close(struct stream *s)
{
	struct ctl *c = (struct ctl *)s;
	assert_false(c->closed);
	c->closed = true;
}

static const struct stream_ops ctl_ops = {
	.set_cb = ctl_set_cb,
	.write = ctl_write,
	.writable = ctl_writable,
	.pause = ctl_pause,
	.resume = ctl_resume,
	.shutdown = ctl_shutdown,
	.close = ctl_close,
	.abort = ctl_close,
};

static void ctl_init(struct ctl *c)
{
	memset(c, 0, sizeof(*c));
	c->s.ops = &ctl_ops;
}

/* ---- the echo and the client ------------------------------------------- */

struct udp_end {
	uv_udp_t sock;
	struct sockaddr_in addr;
	bool echo;
	uint8_t buf[2048];
	uint8_t last[2048];
	size_t last_len;
	int got;
};

static void end_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	struct udp_end *e = h->data;
	(void)s;
	*b = uv_buf_init((char *)e->buf, sizeof(e->buf));
}

static void end_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
		     unsigned flags)
{
	struct udp_end *e = h->data;
	(void)b;
	(void)flags;
	if (n < 0 || !from)
		return;
	if (e->echo) {
		uv_buf_t out = uv_buf_init((char *)e->buf, (unsigned)n);
		assert_int_equal(uv_udp_try_send(h, &out, 1, from), (int)n);
		return;
	}
	memcpy(e->last, e->buf, (size_t)n);
	e->last_len = (size_t)n;
	e->got++;
}

static struct sockaddr_in sin4(const char *ip, uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

static void end_open(uv_loop_t *loop, struct udp_end *e, bool echo)
{
	memset(e, 0, sizeof(*e));
	e->echo = echo;
	e->sock.data = e;
	struct sockaddr_in lo = sin4("127.0.0.1", 0);
	assert_int_equal(uv_udp_init(loop, &e->sock), 0);
	assert_int_equal(uv_udp_bind(&e->sock, (struct sockaddr *)&lo, 0), 0);
	int len = sizeof(e->addr);
	assert_int_equal(uv_udp_getsockname(&e->sock, (struct sockaddr *)&e->addr, &len), 0);
	assert_int_equal(uv_udp_recv_start(&e->sock, end_alloc, end_recv), 0);
}

static void closed_cb(uv_handle_t *h)
{
	(void)h;
}

/* ---- the harness -------------------------------------------------------- */

struct harness {
	uv_loop_t loop;
	struct policy policy;
	struct flowlog *log;
	char path[64];
	struct udp_end echo, client, other;
	struct socks_udp *g;
};

static void run_ms(struct harness *h, uint64_t ms, bool (*done)(struct harness *))
{
	uint64_t end = uv_hrtime() + ms * 1000000ull;
	while (uv_hrtime() < end && !(done && done(h)))
		uv_run(&h->loop, UV_RUN_NOWAIT);
}

static bool client_got(struct harness *h)
{
	return h->client.got > 0;
}

static void harness_init(struct harness *h)
{
	memset(h, 0, sizeof(*h));
	assert_int_equal(uv_loop_init(&h->loop), 0);
	struct addrpool pool;
	assert_int_equal(addrpool_parse4("10.66.0.0/24", &pool.net4, &pool.prefix4), 0);
	assert_int_equal(addrpool_parse6("fd66::/64", &pool.net6, &pool.prefix6), 0);
	policy_init(&h->policy, &pool);
	h->policy.allow_loopback = true;
	end_open(&h->loop, &h->echo, true);
	end_open(&h->loop, &h->client, false);
	end_open(&h->loop, &h->other, false);
	snprintf(h->path, sizeof(h->path), "/tmp/wgmitm-socksudp-XXXXXX");
	int fd = mkstemp(h->path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(flowlog_open(&h->log, h->path, NULL), 0);
	struct socks_udp_config cfg = {
		.policy = &h->policy,
		.log = h->log,
		.quic = UDP_RELAY_QUIC_REFUSE,
		.max_associations = 2,
		.max_flows = 4,
		.idle_ms = 300,
	};
	h->g = socks_udp_new(&h->loop, &cfg);
	assert_non_null(h->g);
}

static void harness_free(struct harness *h)
{
	socks_udp_free(h->g);
	uv_close((uv_handle_t *)&h->echo.sock, closed_cb);
	uv_close((uv_handle_t *)&h->client.sock, closed_cb);
	uv_close((uv_handle_t *)&h->other.sock, closed_cb);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h->loop), 0); /* every handle closed */
	flowlog_close(h->log);
	unlink(h->path);
}

/* The association's BND from its reply. */
static struct sockaddr_in bnd_of(const struct ctl *c)
{
	assert_int_equal(c->out_len, 10);
	assert_memory_equal(c->out, "\x05\x00\x00\x01\x7f\x00\x00\x01", 8);
	struct sockaddr_in a = { .sin_family = AF_INET };
	memcpy(&a.sin_addr, c->out + 4, 4);
	memcpy(&a.sin_port, c->out + 8, 2);
	assert_int_not_equal(a.sin_port, 0);
	return a;
}

static void send_dgram(struct udp_end *from, const struct sockaddr_in *bnd, const uint8_t *hdr,
		       size_t hl, const char *msg)
{
	uint8_t d[512];
	memcpy(d, hdr, hl);
	memcpy(d + hl, msg, strlen(msg));
	uv_buf_t b = uv_buf_init((char *)d, (unsigned)(hl + strlen(msg)));
	assert_int_equal(uv_udp_try_send(&from->sock, &b, 1, (const struct sockaddr *)bnd),
			 (int)(hl + strlen(msg)));
}

static size_t name_hdr(uint8_t *out, const char *name, uint16_t port)
{
	size_t n = strlen(name);
	out[0] = out[1] = out[2] = 0;
	out[3] = 3;
	out[4] = (uint8_t)n;
	memcpy(out + 5, name, n);
	out[5 + n] = (uint8_t)(port >> 8);
	out[6 + n] = (uint8_t)port;
	return 7 + n;
}

struct records {
	json_t *r[16];
	int n;
};

static int collect(void *ctx, size_t line, json_t *record, const char *error)
{
	struct records *rs = ctx;
	(void)line;
	assert_null(error);
	assert_true(rs->n < 16);
	rs->r[rs->n++] = json_incref(record);
	return 0;
}

static void records_free(struct records *rs)
{
	for (int i = 0; i < rs->n; i++)
		json_decref(rs->r[i]);
	rs->n = 0;
}

static const char *str(json_t *r, const char *k)
{
	return json_string_value(json_object_get(r, k));
}

static int64_t num(json_t *r, const char *k)
{
	return json_integer_value(json_object_get(r, k));
}

static void test_association(void **state)
{
	(void)state;
	struct harness h;
	harness_init(&h);
	struct sockaddr_in tcp_peer = sin4("127.0.0.1", 40000), local = sin4("127.0.0.1", 1080);
	struct ctl c1;
	ctl_init(&c1);
	assert_int_equal(socks_udp_associate(h.g, &c1.s, (struct sockaddr *)&tcp_peer,
					     (struct sockaddr *)&local, 0, "bob"),
			 0);
	assert_non_null(c1.cb);
	struct sockaddr_in bnd = bnd_of(&c1);

	/* By address: the answer names the echo as its source. */
	uint8_t hdr[SOCKS5_UDP_HDR_MAX + 300];
	size_t hl = socks5_udp_header(hdr, (struct sockaddr *)&h.echo.addr);
	send_dgram(&h.client, &bnd, hdr, hl, "ping");
	run_ms(&h, 2000, client_got);
	assert_int_equal(h.client.got, 1);
	assert_int_equal(h.client.last_len, hl + 4);
	assert_memory_equal(h.client.last, hdr, hl);
	assert_memory_equal(h.client.last + hl, "ping", 4);

	/* The first datagram's port is the client's now: another is dropped. */
	send_dgram(&h.other, &bnd, hdr, hl, "other");
	/* A fragment and a malformed header are dropped too. */
	uint8_t frag[SOCKS5_UDP_HDR_MAX];
	memcpy(frag, hdr, hl);
	frag[2] = 1;
	send_dgram(&h.client, &bnd, frag, hl, "frag");
	send_dgram(&h.client, &bnd, (const uint8_t *)"\0\0\0\x09", 4, "junk");
	run_ms(&h, 100, NULL);
	assert_int_equal(h.client.got, 1);
	assert_int_equal(h.other.got, 0);

	/* By name: one lookup, then the cache. */
	uint16_t eport = ntohs(h.echo.addr.sin_port);
	hl = name_hdr(hdr, "127.0.0.1", eport);
	h.client.got = 0;
	send_dgram(&h.client, &bnd, hdr, hl, "by name");
	run_ms(&h, 5000, client_got);
	assert_int_equal(h.client.got, 1);
	assert_int_equal(h.client.last_len, 10 + 7);
	assert_int_equal(h.client.last[3], 1); /* the address it resolved to */
	assert_memory_equal(h.client.last + 10, "by name", 7);
	h.client.got = 0;
	send_dgram(&h.client, &bnd, hdr, hl, "cached");
	run_ms(&h, 2000, client_got);
	assert_int_equal(h.client.got, 1);

	struct socks_udp_stats st;
	socks_udp_get_stats(h.g, &st);
	assert_int_equal(st.associations, 1);
	assert_int_equal(st.active, 1);
	assert_int_equal(st.datagrams, 3);
	assert_int_equal(st.foreign, 1);
	assert_int_equal(st.fragments, 1);
	assert_int_equal(st.malformed, 1);
	assert_int_equal(st.lookups, 1);
	assert_int_equal(st.answers, 3);

	/* Two at most; the third is refused and keeps its connection. */
	struct ctl c2, c3;
	ctl_init(&c2);
	ctl_init(&c3);
	assert_int_equal(socks_udp_associate(h.g, &c2.s, (struct sockaddr *)&tcp_peer,
					     (struct sockaddr *)&local, 0, NULL),
			 0);
	assert_int_equal(socks_udp_associate(h.g, &c3.s, (struct sockaddr *)&tcp_peer,
					     (struct sockaddr *)&local, 0, NULL),
			 -EMFILE);
	assert_null(c3.cb);
	assert_int_equal(c3.out_len, 0);

	/* The client's FIN ends the first: its control connection is closed,
	 * its flows recorded. */
	c1.cb->recv(c1.arg, NULL, 0);
	assert_true(c1.closed);
	socks_udp_get_stats(h.g, &st);
	assert_int_equal(st.active, 1);
	assert_int_equal(st.ended_closed, 1);
	struct records rs = { .n = 0 };
	assert_int_equal(flowlog_read(h.path, collect, &rs, NULL), 0);
	assert_int_equal(rs.n, 1); /* one destination, by address and by name */
	assert_string_equal(str(rs.r[0], "type"), "udp");
	assert_string_equal(str(rs.r[0], "via"), "socks5");
	assert_string_equal(str(rs.r[0], "user"), "bob");
	assert_string_equal(str(rs.r[0], "end_reason"), "association_closed");
	assert_int_equal(num(rs.r[0], "packets_up"), 3);
	assert_int_equal(num(rs.r[0], "packets_down"), 3);
	records_free(&rs);

	/* The second never sent a datagram: it ends after the idle time. */
	run_ms(&h, 1000, NULL);
	assert_true(c2.closed);
	socks_udp_get_stats(h.g, &st);
	assert_int_equal(st.active, 0);
	assert_int_equal(st.ended_idle, 1);
	harness_free(&h);
}

/* The client declared its port: others are dropped even first. An
 * association that ends while its name is being resolved, and one alive
 * when the listener goes (its flow recorded "shutdown"). */
static void test_declared_and_teardown(void **state)
{
	(void)state;
	struct harness h;
	harness_init(&h);
	struct sockaddr_in tcp_peer = sin4("127.0.0.1", 40000), local = sin4("127.0.0.1", 1080);
	struct ctl c1, c2;
	ctl_init(&c1);
	ctl_init(&c2);
	assert_int_equal(socks_udp_associate(h.g, &c1.s, (struct sockaddr *)&tcp_peer,
					     (struct sockaddr *)&local,
					     ntohs(h.client.addr.sin_port), NULL),
			 0);
	struct sockaddr_in bnd = bnd_of(&c1);
	uint8_t hdr[SOCKS5_UDP_HDR_MAX];
	size_t hl = socks5_udp_header(hdr, (struct sockaddr *)&h.echo.addr);
	send_dgram(&h.other, &bnd, hdr, hl, "not declared");
	run_ms(&h, 100, NULL);
	send_dgram(&h.client, &bnd, hdr, hl, "declared");
	run_ms(&h, 2000, client_got);
	assert_int_equal(h.client.got, 1);
	assert_int_equal(h.other.got, 0);

	/* A second association resolving a name when its client goes. */
	assert_int_equal(socks_udp_associate(h.g, &c2.s, (struct sockaddr *)&tcp_peer,
					     (struct sockaddr *)&local, 0, NULL),
			 0);
	struct sockaddr_in bnd2 = bnd_of(&c2);
	uint8_t nh[300];
	size_t nl = name_hdr(nh, "localhost", 9);
	send_dgram(&h.other, &bnd2, nh, nl, "pending");
	struct socks_udp_stats st;
	for (int i = 0; i < 200; i++) {
		socks_udp_get_stats(h.g, &st);
		if (st.datagrams == 2)
			break;
		uv_run(&h.loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(st.lookups, 1);
	c2.cb->closed(c2.arg, -ECONNRESET); /* gone: no close of ours follows */
	assert_false(c2.closed);

	/* The listener goes with the first still open. */
	socks_udp_free(h.g);
	h.g = NULL;
	assert_true(c1.closed);
	struct records rs = { .n = 0 };
	assert_int_equal(flowlog_read(h.path, collect, &rs, NULL), 0);
	assert_int_equal(rs.n, 1);
	assert_string_equal(str(rs.r[0], "end_reason"), "shutdown");
	assert_null(json_object_get(rs.r[0], "user"));
	assert_int_equal(num(rs.r[0], "packets_up"), 1);
	records_free(&rs);
	harness_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_association),
		cmocka_unit_test(test_declared_and_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
