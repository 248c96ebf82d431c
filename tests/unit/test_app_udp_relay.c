/* The UDP relay in one process: real upstream sockets on 127.0.0.1 (the
 * policy's test switch lets loopback stand in for the internet), the reply
 * path and ICMP callback captured instead of a netstack. Echo, our own
 * service, policy refusal, ICMP port unreachable from upstream, the table
 * bound and each peer's share of it, idle expiry, shutdown, and the records
 * of each; a listener's relay (via, user, mixed families, own ports). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/addrpool.h"
#include "flows/flowlog.h"
#include "mitm/policy.h"
#include "mitm/udp.h"

struct echo {
	uv_udp_t sock;
	struct sockaddr_in addr;
	uint8_t buf[2048];
};

struct harness {
	uv_loop_t loop;
	struct policy policy;
	struct echo echo;
	struct udp_relay *relay;
	struct flowlog *log;
	char path[64];
	int replies, locals, unreach[2];
	uint8_t last[2048];
	size_t last_len;
	struct sockaddr_in last_from, last_to;
};

static void echo_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	struct echo *e = h->data;
	(void)s;
	*b = uv_buf_init((char *)e->buf, sizeof(e->buf));
}

static void echo_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
		      unsigned flags)
{
	struct echo *e = h->data;
	(void)b;
	(void)flags;
	if (n < 0 || !from)
		return;
	uv_buf_t out = uv_buf_init((char *)e->buf, (unsigned)n);
	assert_int_equal(uv_udp_try_send(h, &out, 1, from), (int)n);
}

static int capture(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		   const uint8_t *data, size_t len)
{
	struct harness *h = ctx;
	h->replies++;
	assert_true(len <= sizeof(h->last));
	memcpy(h->last, data, len);
	h->last_len = len;
	memcpy(&h->last_from, from, sizeof(h->last_from));
	memcpy(&h->last_to, to, sizeof(h->last_to));
	return 0;
}

static void local(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
		  const uint8_t *data, size_t len)
{
	struct harness *h = ctx;
	(void)client;
	(void)data;
	(void)len;
	assert_int_equal(ntohs(((const struct sockaddr_in *)dest)->sin_port), 53);
	h->locals++;
}

static void unreachable(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
			const uint8_t *data, size_t len, enum udp_relay_unreach why)
{
	struct harness *h = ctx;
	(void)client;
	(void)dest;
	(void)data;
	(void)len;
	h->unreach[why]++;
}

/* 10.66.0.3 is the tablet; every other client is the phone. */
static const char *peer_of(void *ctx, const struct sockaddr *client)
{
	(void)ctx;
	const struct sockaddr_in *in = (const struct sockaddr_in *)client;
	return ntohl(in->sin_addr.s_addr) == 0x0a420003 ? "tablet" : "phone";
}

static struct sockaddr_in sin4(const char *ip, uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

static void harness_init(struct harness *h, size_t max_flows, uint32_t per_peer)
{
	memset(h, 0, sizeof(*h));
	assert_int_equal(uv_loop_init(&h->loop), 0);
	struct addrpool pool;
	assert_int_equal(addrpool_parse4("10.66.0.0/24", &pool.net4, &pool.prefix4), 0);
	assert_int_equal(addrpool_parse6("fd66::/64", &pool.net6, &pool.prefix6), 0);
	policy_init(&h->policy, &pool);
	h->policy.allow_loopback = true;

	h->echo.sock.data = &h->echo;
	struct sockaddr_in lo = sin4("127.0.0.1", 0);
	assert_int_equal(uv_udp_init(&h->loop, &h->echo.sock), 0);
	assert_int_equal(uv_udp_bind(&h->echo.sock, (struct sockaddr *)&lo, 0), 0);
	int len = sizeof(h->echo.addr);
	assert_int_equal(uv_udp_getsockname(&h->echo.sock, (struct sockaddr *)&h->echo.addr, &len),
			 0);
	assert_int_equal(uv_udp_recv_start(&h->echo.sock, echo_alloc, echo_recv), 0);

	snprintf(h->path, sizeof(h->path), "/tmp/wgmitm-udp-XXXXXX");
	int fd = mkstemp(h->path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(flowlog_open(&h->log, h->path, NULL), 0);
	struct udp_relay_config cfg = {
		.policy = &h->policy,
		.log = h->log,
		.max_flows = max_flows,
		.max_flows_per_peer = per_peer,
		.idle_ms = 300,
		.dns_idle_ms = 150,
		.local = local,
		.local_ctx = h,
		.peer_name = peer_of,
		.unreachable = unreachable,
		.unreachable_ctx = h,
		.send = capture,
		.send_ctx = h,
	};
	h->relay = udp_relay_new(&h->loop, NULL, &cfg);
	assert_non_null(h->relay);
}

static void close_cb(uv_handle_t *hd)
{
	(void)hd;
}

static void harness_free(struct harness *h)
{
	udp_relay_free(h->relay);
	uv_close((uv_handle_t *)&h->echo.sock, close_cb);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h->loop), 0);
	flowlog_close(h->log);
	unlink(h->path);
}

static void run_ms(struct harness *h, uint64_t ms, bool (*done)(struct harness *))
{
	uint64_t end = uv_hrtime() + ms * 1000000ull;
	while (uv_hrtime() < end && !(done && done(h)))
		uv_run(&h->loop, UV_RUN_NOWAIT);
}

static bool got_reply(struct harness *h)
{
	return h->replies > 0;
}

static bool got_refused(struct harness *h)
{
	struct udp_relay_stats st;
	udp_relay_get_stats(h->relay, &st);
	return st.flows_upstream_refused > 0;
}

static void send_to(struct harness *h, const struct sockaddr_in *client,
		    const struct sockaddr_in *dest, const char *msg)
{
	udp_relay_recv(h->relay, (const struct sockaddr *)client, (const struct sockaddr *)dest,
		       (const uint8_t *)msg, strlen(msg));
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

static int64_t num(json_t *r, const char *k)
{
	return json_integer_value(json_object_get(r, k));
}

static const char *str(json_t *r, const char *k)
{
	return json_string_value(json_object_get(r, k));
}

static void test_relay(void **ctx)
{
	(void)ctx;
	struct harness h;
	harness_init(&h, 3, 3);
	struct sockaddr_in cl = sin4("10.66.0.2", 40000), cl2 = sin4("10.66.0.2", 40001);

	/* Echo: the answer comes back from the destination to the client. */
	send_to(&h, &cl, &h.echo.addr, "hello");
	run_ms(&h, 2000, got_reply);
	assert_int_equal(h.replies, 1);
	assert_int_equal(h.last_len, 5);
	assert_memory_equal(h.last, "hello", 5);
	assert_int_equal(memcmp(&h.last_from, &h.echo.addr, sizeof(h.last_from)), 0);
	assert_int_equal(memcmp(&h.last_to, &cl, sizeof(cl)), 0);
	h.replies = 0;
	send_to(&h, &cl, &h.echo.addr, "again!");
	run_ms(&h, 2000, got_reply);
	assert_int_equal(h.last_len, 6);

	/* Our DNS goes to the local service; no flow. */
	struct sockaddr_in own = sin4("10.66.0.1", 53);
	send_to(&h, &cl, &own, "q");
	assert_int_equal(h.locals, 1);

	/* Refused by policy: ICMP prohibited each time, one socketless flow. */
	struct sockaddr_in meta = sin4("169.254.169.254", 80);
	send_to(&h, &cl, &meta, "x");
	send_to(&h, &cl, &meta, "yy");
	assert_int_equal(h.unreach[UDP_RELAY_UNREACH_PROHIBITED], 2);

	/* A closed port on upstream: ICMP port unreachable ends the flow. */
	uv_udp_t tmp;
	struct sockaddr_in closed = sin4("127.0.0.1", 0);
	assert_int_equal(uv_udp_init(&h.loop, &tmp), 0);
	assert_int_equal(uv_udp_bind(&tmp, (struct sockaddr *)&closed, 0), 0);
	int alen = sizeof(closed);
	assert_int_equal(uv_udp_getsockname(&tmp, (struct sockaddr *)&closed, &alen), 0);
	uv_close((uv_handle_t *)&tmp, close_cb);
	uv_run(&h.loop, UV_RUN_NOWAIT);
	send_to(&h, &cl2, &closed, "anyone?");
	run_ms(&h, 1000, got_refused);
	struct udp_relay_stats st;
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_upstream_refused, 1);
	assert_int_equal(h.unreach[UDP_RELAY_UNREACH_PORT], 1);

	/* The table holds 3: echo, the refused burst, one more; then full. */
	struct sockaddr_in other = sin4("10.66.0.2", 40002), other2 = sin4("10.66.0.2", 40003);
	send_to(&h, &other, &h.echo.addr, "3rd");
	send_to(&h, &other2, &h.echo.addr, "4th");
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.table_full, 1);
	assert_int_equal(st.flows_active, 3);
	assert_int_equal(st.flows_opened, 3);
	assert_int_equal(st.flows_refused, 1);
	assert_int_equal(st.policy_drop, 2);
	assert_int_equal(st.local, 1);

	/* Idle expiry: the refused burst (150 ms) and the others (300 ms). */
	run_ms(&h, 800, NULL);
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 0);
	assert_int_equal(st.flows_idle, 2);

	/* A flow alive at shutdown is recorded as such. */
	send_to(&h, &cl, &h.echo.addr, "last");
	udp_relay_shutdown(h.relay);
	send_to(&h, &cl, &h.echo.addr, "dropped");
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 0);
	assert_int_equal(st.records, 5);

	struct records rs = { .n = 0 };
	assert_int_equal(flowlog_read(h.path, collect, &rs, NULL), 0);
	assert_int_equal(rs.n, 5);
	char echo[FLOWLOG_ADDR_LEN], cls[FLOWLOG_ADDR_LEN];
	flowlog_format_addr((struct sockaddr *)&h.echo.addr, echo);
	flowlog_format_addr((struct sockaddr *)&closed, cls);
	/* In the order the flows ended: upstream refused at once, the refused
	 * burst after 150 ms, the two echo flows after 300 ms, then shutdown. */
	json_t *r = rs.r[0];
	assert_string_equal(str(r, "server"), cls);
	assert_string_equal(str(r, "end_reason"), "upstream_refused");
	assert_int_equal(num(r, "packets_up"), 1);
	assert_int_equal(num(r, "packets_down"), 0);
	r = rs.r[1];
	assert_string_equal(str(r, "type"), "udp");
	assert_string_equal(str(r, "server"), "169.254.169.254:80");
	assert_string_equal(str(r, "end_reason"), "policy:link_local");
	assert_int_equal(num(r, "packets_up"), 2);
	assert_int_equal(num(r, "bytes_up"), 3);
	r = rs.r[2];
	assert_string_equal(str(r, "server"), echo);
	assert_string_equal(str(r, "client"), "10.66.0.2:40000");
	assert_string_equal(str(r, "peer"), "phone");
	assert_string_equal(str(r, "end_reason"), "idle");
	assert_int_equal(num(r, "packets_up"), 2);
	assert_int_equal(num(r, "packets_down"), 2);
	assert_int_equal(num(r, "bytes_up"), 11);
	assert_int_equal(num(r, "bytes_down"), 11);
	assert_string_equal(str(rs.r[3], "client"), "10.66.0.2:40002");
	assert_string_equal(str(rs.r[3], "end_reason"), "idle");
	assert_string_equal(str(rs.r[4], "end_reason"), "shutdown");
	assert_int_equal(num(rs.r[4], "packets_up"), 1);
	for (int i = 0; i < rs.n; i++)
		json_decref(rs.r[i]);
	harness_free(&h);
}

/* QUIC: port 443 is refused with ICMP port unreachable by default (one
 * socketless flow per burst, "quic_refused", nothing sent upstream); in
 * passthrough mode it is relayed like other UDP. Refused destinations keep
 * their policy verdict. */
static void test_quic(void **ctx)
{
	(void)ctx;
	struct harness h;
	harness_init(&h, 8, 8);
	struct sockaddr_in cl = sin4("10.66.0.2", 41000);
	struct sockaddr_in quic = sin4("127.0.0.1", UDP_RELAY_QUIC_PORT);
	send_to(&h, &cl, &quic, "initial");
	send_to(&h, &cl, &quic, "retry");
	assert_int_equal(h.unreach[UDP_RELAY_UNREACH_PORT], 2);
	assert_int_equal(h.unreach[UDP_RELAY_UNREACH_PROHIBITED], 0);
	struct sockaddr_in meta = sin4("169.254.169.254", UDP_RELAY_QUIC_PORT);
	send_to(&h, &cl, &meta, "x");
	assert_int_equal(h.unreach[UDP_RELAY_UNREACH_PROHIBITED], 1);
	struct udp_relay_stats st;
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.quic_refused, 2);
	assert_int_equal(st.policy_drop, 1);
	assert_int_equal(st.flows_opened, 0);
	assert_int_equal(st.datagrams_up, 0);
	assert_int_equal(st.flows_active, 2);
	udp_relay_shutdown(h.relay);
	struct records rs = { .n = 0 };
	assert_int_equal(flowlog_read(h.path, collect, &rs, NULL), 0);
	assert_int_equal(rs.n, 2);
	int seen = 0;
	for (int i = 0; i < rs.n; i++) {
		if (strcmp(str(rs.r[i], "server"), "127.0.0.1:443") == 0) {
			assert_string_equal(str(rs.r[i], "type"), "udp");
			assert_string_equal(str(rs.r[i], "end_reason"), "quic_refused");
			assert_int_equal(num(rs.r[i], "packets_up"), 2);
			assert_int_equal(num(rs.r[i], "bytes_up"), 12);
			assert_int_equal(num(rs.r[i], "packets_down"), 0);
			seen++;
		} else {
			assert_string_equal(str(rs.r[i], "end_reason"), "policy:link_local");
		}
		json_decref(rs.r[i]);
	}
	assert_int_equal(seen, 1);

	/* Passthrough: a relay of its own; the datagram leaves for 443. */
	udp_relay_free(h.relay);
	struct udp_relay_config cfg = {
		.policy = &h.policy,
		.quic = UDP_RELAY_QUIC_PASSTHROUGH,
		.unreachable = unreachable,
		.unreachable_ctx = &h,
		.send = capture,
		.send_ctx = &h,
	};
	h.relay = udp_relay_new(&h.loop, NULL, &cfg);
	assert_non_null(h.relay);
	h.unreach[UDP_RELAY_UNREACH_PORT] = 0;
	send_to(&h, &cl, &quic, "initial");
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.quic_refused, 0);
	assert_int_equal(st.flows_opened, 1);
	assert_int_equal(st.datagrams_up, 1);
	harness_free(&h);
}

/* A peer that opens flows without end gets its share of the table and no
 * more: the next flow's datagrams are dropped and counted, the other peer
 * still gets room, and the share comes back as the peer's flows end. */
static void test_peer_share(void **ctx)
{
	(void)ctx;
	struct harness h;
	harness_init(&h, 4, 2);
	struct sockaddr_in dests[3];
	for (int i = 0; i < 3; i++) {
		struct sockaddr_in cl = sin4("10.66.0.2", (uint16_t)(42000 + i));
		dests[i] = cl;
		send_to(&h, &cl, &h.echo.addr, "phone");
	}
	struct udp_relay_stats st;
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 2);
	assert_int_equal(st.peer_limit, 1);
	assert_int_equal(st.table_full, 0);
	/* Still refused while the share is held, existing flows still pass. */
	send_to(&h, &dests[2], &h.echo.addr, "again");
	send_to(&h, &dests[0], &h.echo.addr, "known");
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.peer_limit, 2);
	assert_int_equal(st.datagrams_up, 3);

	struct sockaddr_in tab = sin4("10.66.0.3", 42000), tab2 = sin4("10.66.0.3", 42001);
	send_to(&h, &tab, &h.echo.addr, "tablet");
	send_to(&h, &tab2, &h.echo.addr, "tablet");
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 4);
	assert_int_equal(st.peer_limit, 2);

	/* Idle expiry gives the shares back. */
	run_ms(&h, 600, NULL);
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 0);
	send_to(&h, &dests[2], &h.echo.addr, "now");
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 1);
	assert_int_equal(st.peer_limit, 2);
	harness_free(&h);
}

/* Left at 0, a peer's share is half the table. */
static void test_peer_share_default(void **ctx)
{
	(void)ctx;
	struct harness h;
	harness_init(&h, 6, 0);
	for (int i = 0; i < 5; i++) {
		struct sockaddr_in cl = sin4("10.66.0.2", (uint16_t)(43000 + i));
		send_to(&h, &cl, &h.echo.addr, "x");
	}
	struct udp_relay_stats st;
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.flows_active, 3);
	assert_int_equal(st.peer_limit, 2);
	harness_free(&h);
}

/* A listener's relay (SOCKS5 UDP, UDP forwards): its records say via and
 * user; a client of one family may send to the other; our own ports are
 * refused; a shared receive buffer; the flows' end reason at stop. */
static void test_listener(void **ctx)
{
	(void)ctx;
	struct harness h;
	harness_init(&h, 8, 8);
	udp_relay_free(h.relay);
	static uint8_t shared[UDP_RELAY_BUF_SIZE];
	struct udp_relay_ports own = { .n = 0 };
	struct udp_relay_config cfg = {
		.policy = &h.policy,
		.log = h.log,
		.idle_ms = 300,
		.dns_idle_ms = 150,
		.via = "socks5",
		.user = "alice",
		.protect = &own,
		.recv_buf = shared,
		.send = capture,
		.send_ctx = &h,
	};
	h.relay = udp_relay_new(&h.loop, NULL, &cfg);
	assert_non_null(h.relay);

	struct sockaddr_in6 c6 = { .sin6_family = AF_INET6,
				   .sin6_port = htons(5555),
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	udp_relay_recv(h.relay, (struct sockaddr *)&c6, (struct sockaddr *)&h.echo.addr,
		       (const uint8_t *)"mixed", 5);
	run_ms(&h, 2000, got_reply);
	assert_int_equal(h.replies, 1);
	assert_int_equal(h.last_len, 5);
	assert_memory_equal(h.last, "mixed", 5);
	assert_int_equal(memcmp(&h.last_from, &h.echo.addr, sizeof(h.last_from)), 0);

	/* The echo's port is ours now: refused, nothing sent. */
	own.port[0] = ntohs(h.echo.addr.sin_port);
	own.n = 1;
	struct sockaddr_in cl = sin4("127.0.0.1", 6000);
	send_to(&h, &cl, &h.echo.addr, "loop?");
	run_ms(&h, 50, NULL);
	assert_int_equal(h.replies, 1);
	struct udp_relay_stats st;
	udp_relay_get_stats(h.relay, &st);
	assert_int_equal(st.own_service, 1);
	assert_int_equal(st.flows_opened, 1);
	assert_int_equal(st.datagrams_up, 1);

	udp_relay_stop(h.relay, "association_closed");
	struct records rs = { .n = 0 };
	assert_int_equal(flowlog_read(h.path, collect, &rs, NULL), 0);
	assert_int_equal(rs.n, 2);
	for (int i = 0; i < rs.n; i++) {
		json_t *r = rs.r[i];
		assert_string_equal(str(r, "via"), "socks5");
		assert_string_equal(str(r, "user"), "alice");
		if (strcmp(str(r, "client"), "[::1]:5555") == 0) {
			assert_string_equal(str(r, "end_reason"), "association_closed");
			assert_int_equal(num(r, "packets_up"), 1);
			assert_int_equal(num(r, "packets_down"), 1);
		} else {
			assert_string_equal(str(r, "client"), "127.0.0.1:6000");
			assert_string_equal(str(r, "end_reason"), "policy:own_service");
			assert_int_equal(num(r, "packets_up"), 1);
			assert_int_equal(num(r, "packets_down"), 0);
		}
		json_decref(r);
	}
	harness_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_relay),      cmocka_unit_test(test_quic),
		cmocka_unit_test(test_peer_share), cmocka_unit_test(test_peer_share_default),
		cmocka_unit_test(test_listener),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
