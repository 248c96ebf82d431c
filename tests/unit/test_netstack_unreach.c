/* ICMP / ICMPv6 destination unreachable for UDP datagrams
 * (netstack_udp_unreachable): the emitted packets are parsed and checked
 * field by field with checksum code independent of the netstack's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "inet_testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/un.h>

#include "netstack/netstack.h"

#define TUN4 "10.77.0.1"
#define PEER4 "10.77.0.2"
#define TUN6 "fd77::1"
#define PEER6 "fd77::2"
#define FAR4 "8.8.8.8"
#define FAR6 "2001:4860:4860::8888"

#define MAX_OUT 8

struct fixture {
	uv_loop_t loop;
	struct netstack *ns;
	int nout;
	size_t outlen[MAX_OUT];
	uint8_t out[MAX_OUT][2048];
	/* udp_recv answers every datagram with this reason, from inside the callback */
	int answer;
	enum netstack_unreach reason;
	int answer_rc;
};

static void on_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct fixture *f = ctx;
	assert_true(f->nout < MAX_OUT);
	assert_true(len <= sizeof f->out[0]);
	memcpy(f->out[f->nout], pkt, len);
	f->outlen[f->nout++] = len;
}

static void on_udp(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
		   const uint8_t *data, size_t len)
{
	struct fixture *f = ctx;
	if (f->answer)
		f->answer_rc = netstack_udp_unreachable(f->ns, client, dest, data, len, f->reason);
}

static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(uv_loop_init(&f.loop), 0);
	struct netstack_config cfg = { .mtu = 1420 };
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	assert_int_equal(inet_pton(AF_INET6, TUN6, &cfg.addr6), 1);
	struct netstack_ops ops = { .output = on_output, .udp_recv = on_udp };
	f.ns = netstack_new(&f.loop, &cfg, &ops, &f);
	assert_non_null(f.ns);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	netstack_free(f->ns);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	return 0;
}

/* ---- Independent checksum and byte helpers (RFC 1071) -------------------- */

static uint32_t pseudo(int v6, const uint8_t *src, const uint8_t *dst, uint32_t ulen, uint8_t proto)
{
	size_t alen = v6 ? 16 : 4;
	uint32_t acc = sum16(sum16(0, src, alen), dst, alen);
	if (v6) {
		uint8_t t6[8] = { (uint8_t)(ulen >> 24),
				  (uint8_t)(ulen >> 16),
				  (uint8_t)(ulen >> 8),
				  (uint8_t)ulen,
				  0,
				  0,
				  0,
				  proto };
		return sum16(acc, t6, 8);
	}
	uint8_t t4[4] = { (uint8_t)(ulen >> 8), (uint8_t)ulen, 0, proto };
	return sum16(acc, t4, 4);
}

static struct sockaddr_storage addr(int v6, const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
	}
	return ss;
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 13 + (i >> 7));
}

/* ---- Checking one error message ------------------------------------------ */

struct expect {
	int v6;
	const char *client, *dest;
	uint16_t cport, dport;
	uint8_t type, code;
	const uint8_t *data;
	size_t len;    /* the datagram's payload length */
	size_t quoted; /* payload bytes expected in the quote */
};

/* Parses emitted packet i as an unreachable and checks every field. Returns
 * the offset of the quoted UDP header. */
static size_t check_unreach(struct fixture *f, int i, const struct expect *e)
{
	assert_true(i < f->nout);
	const uint8_t *p = f->out[i];
	size_t len = f->outlen[i];
	int af = e->v6 ? AF_INET6 : AF_INET;
	size_t alen = e->v6 ? 16 : 4, hl = e->v6 ? 40 : 20;
	uint8_t client[16], dest[16];
	assert_int_equal(inet_pton(af, e->client, client), 1);
	assert_int_equal(inet_pton(af, e->dest, dest), 1);

	/* Outer header: from the address the client sent to, to the client. */
	const uint8_t *src, *dst;
	if (e->v6) {
		assert_int_equal(p[0] >> 4, 6);
		assert_int_equal(40 + get16(p + 4), len);
		assert_int_equal(p[6], 58);
		assert_true(p[7] > 0);
		src = p + 8;
		dst = p + 24;
	} else {
		assert_int_equal(p[0], 0x45);
		assert_int_equal(get16(p + 2), len);
		assert_int_equal(get16(p + 6) & 0x1fff, 0); /* not a fragment */
		assert_true(p[8] > 0);
		assert_int_equal(p[9], 1);
		assert_int_equal(fold(sum16(0, p, 20)), 0);
		src = p + 12;
		dst = p + 16;
	}
	assert_memory_equal(src, dest, alen);
	assert_memory_equal(dst, client, alen);
	assert_true(len <= (e->v6 ? 1280u : 576u));

	/* ICMP header and checksum (ICMPv6: with the pseudo-header). */
	const uint8_t *icmp = p + hl;
	size_t ilen = len - hl;
	assert_int_equal(icmp[0], e->type);
	assert_int_equal(icmp[1], e->code);
	assert_int_equal(get16(icmp + 4), 0);
	assert_int_equal(get16(icmp + 6), 0);
	uint32_t acc = e->v6 ? pseudo(1, src, dst, (uint32_t)ilen, 58) : 0;
	assert_int_equal(fold(sum16(acc, icmp, ilen)), 0);

	/* The quoted datagram: client -> dest, lengths of the whole datagram. */
	const uint8_t *q = icmp + 8;
	const uint8_t *qsrc, *qdst;
	if (e->v6) {
		assert_int_equal(q[0] >> 4, 6);
		assert_int_equal(get16(q + 4), 8 + e->len);
		assert_int_equal(q[6], 17);
		qsrc = q + 8;
		qdst = q + 24;
	} else {
		assert_int_equal(q[0], 0x45);
		assert_int_equal(get16(q + 2), 20 + 8 + e->len);
		assert_int_equal(q[9], 17);
		assert_int_equal(fold(sum16(0, q, 20)), 0);
		qsrc = q + 12;
		qdst = q + 16;
	}
	assert_memory_equal(qsrc, client, alen);
	assert_memory_equal(qdst, dest, alen);
	const uint8_t *u = q + hl;
	assert_int_equal(get16(u), e->cport);
	assert_int_equal(get16(u + 2), e->dport);
	assert_int_equal(get16(u + 4), 8 + e->len);
	assert_int_not_equal(get16(u + 6), 0);
	/* The UDP checksum is the datagram's, over all of it (not just the quote). */
	acc = pseudo(e->v6, qsrc, qdst, (uint32_t)(8 + e->len), 17);
	assert_int_equal(fold(sum16(sum16(acc, u, 8), e->data, e->len)), 0);
	/* Quoted payload: the datagram's first bytes, nothing else after. */
	assert_int_equal(len, hl + 8 + hl + 8 + e->quoted);
	assert_memory_equal(u + 8, e->data, e->quoted);
	return (size_t)(u - p);
}

/* ---- Tests ------------------------------------------------------------------ */

static void test_unreach4_port(void **state)
{
	struct fixture *f = *state;
	uint8_t data[100];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = pattern(i);
	struct sockaddr_storage c = addr(0, PEER4, 5353), d = addr(0, FAR4, 53);
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&c,
						  (struct sockaddr *)&d, data, sizeof data,
						  NETSTACK_UNREACH_PORT),
			 0);
	assert_int_equal(f->nout, 1);
	struct expect e = { 0, PEER4, FAR4, 5353, 53, 3, 3, data, sizeof data, sizeof data };
	check_unreach(f, 0, &e);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.udp_unreach, 1);
	assert_int_equal(st.out_packets, 1);
	assert_int_equal(st.out_bytes, f->outlen[0]);
}

/* A large datagram: the quote stops at 576 bytes in all. */
static void test_unreach4_prohibited_truncated(void **state)
{
	struct fixture *f = *state;
	static uint8_t data[3000];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = pattern(i);
	struct sockaddr_storage c = addr(0, PEER4, 40000), d = addr(0, "192.0.2.7", 443);
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&c,
						  (struct sockaddr *)&d, data, sizeof data,
						  NETSTACK_UNREACH_PROHIBITED),
			 0);
	assert_int_equal(f->nout, 1);
	assert_int_equal(f->outlen[0], 576);
	struct expect e = { 0, PEER4, "192.0.2.7", 40000,       443,
			    3, 13,    data,        sizeof data, 576 - 20 - 8 - 20 - 8 };
	check_unreach(f, 0, &e);

	/* An empty datagram quotes headers only. */
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&c,
						  (struct sockaddr *)&d, NULL, 0,
						  NETSTACK_UNREACH_PORT),
			 0);
	struct expect e0 = { 0, PEER4, "192.0.2.7", 40000, 443, 3, 3, data, 0, 0 };
	check_unreach(f, 1, &e0);
}

static void test_unreach6_port_and_prohibited(void **state)
{
	struct fixture *f = *state;
	static uint8_t data[1500];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = pattern(i);
	struct sockaddr_storage c = addr(1, PEER6, 51000), d = addr(1, FAR6, 443);
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&c,
						  (struct sockaddr *)&d, data, 200,
						  NETSTACK_UNREACH_PORT),
			 0);
	struct expect e = { 1, PEER6, FAR6, 51000, 443, 1, 4, data, 200, 200 };
	check_unreach(f, 0, &e);

	/* Larger than fits in 1280: the quote is cut there. */
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&c,
						  (struct sockaddr *)&d, data, sizeof data,
						  NETSTACK_UNREACH_PROHIBITED),
			 0);
	assert_int_equal(f->outlen[1], 1280);
	struct expect e2 = { 1, PEER6, FAR6, 51000,       443,
			     1, 1,     data, sizeof data, 1280 - 40 - 8 - 40 - 8 };
	check_unreach(f, 1, &e2);
}

/* Refusals emit nothing. */
static void test_unreach_refused(void **state)
{
	struct fixture *f = *state;
	uint8_t data[8] = { 0 };
	struct sockaddr_storage c4 = addr(0, PEER4, 1), d4 = addr(0, FAR4, 2);
	struct sockaddr_storage c6 = addr(1, PEER6, 1), d6 = addr(1, FAR6, 2);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	const struct sockaddr *C4 = (struct sockaddr *)&c4, *D4 = (struct sockaddr *)&d4;
	const struct sockaddr *C6 = (struct sockaddr *)&c6, *D6 = (struct sockaddr *)&d6;
	assert_int_equal(netstack_udp_unreachable(f->ns, C4, D6, data, 8, NETSTACK_UNREACH_PORT),
			 -EAFNOSUPPORT);
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&un,
						  (struct sockaddr *)&un, data, 8,
						  NETSTACK_UNREACH_PORT),
			 -EAFNOSUPPORT);
	/* No errors about multicast or broadcast datagrams (RFC 1122 3.2.2). */
	struct sockaddr_storage m4 = addr(0, "224.0.0.251", 5353),
				b4 = addr(0, "255.255.255.255", 67);
	struct sockaddr_storage m6 = addr(1, "ff02::fb", 5353), z6 = addr(1, "::", 1);
	assert_int_equal(netstack_udp_unreachable(f->ns, C4, (struct sockaddr *)&m4, data, 8,
						  NETSTACK_UNREACH_PORT),
			 -EINVAL);
	assert_int_equal(netstack_udp_unreachable(f->ns, C4, (struct sockaddr *)&b4, data, 8,
						  NETSTACK_UNREACH_PORT),
			 -EINVAL);
	assert_int_equal(netstack_udp_unreachable(f->ns, C6, (struct sockaddr *)&m6, data, 8,
						  NETSTACK_UNREACH_PORT),
			 -EINVAL);
	assert_int_equal(netstack_udp_unreachable(f->ns, (struct sockaddr *)&z6, D6, data, 8,
						  NETSTACK_UNREACH_PORT),
			 -EINVAL);
	assert_int_equal(netstack_udp_unreachable(f->ns, C4, D4, data, 8, (enum netstack_unreach)7),
			 -EINVAL);
	/* Lengths no datagram can have. */
	assert_int_equal(netstack_udp_unreachable(f->ns, C4, D4, data, 65535 - 28 + 1,
						  NETSTACK_UNREACH_PORT),
			 -EMSGSIZE);
	assert_int_equal(
		netstack_udp_unreachable(f->ns, C6, D6, data, 65535 - 8 + 1, NETSTACK_UNREACH_PORT),
		-EMSGSIZE);
	assert_int_equal(f->nout, 0);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.udp_unreach, 0);
}

/* A real datagram from the client, refused from inside ops.udp_recv: the
 * quote reproduces the client's UDP header byte for byte. */
static void roundtrip(struct fixture *f, int v6)
{
	const char *peer = v6 ? PEER6 : PEER4, *far = v6 ? FAR6 : FAR4;
	uint8_t pkt[512];
	static const char q[] = "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07"
				"example\x03"
				"com";
	size_t qlen = sizeof q - 1, hl = v6 ? 40 : 20;
	memset(pkt, 0, sizeof pkt);
	if (v6) {
		pkt[0] = 0x60;
		put16(pkt + 4, (uint16_t)(8 + qlen));
		pkt[6] = 17;
		pkt[7] = 64;
		assert_int_equal(inet_pton(AF_INET6, peer, pkt + 8), 1);
		assert_int_equal(inet_pton(AF_INET6, far, pkt + 24), 1);
	} else {
		pkt[0] = 0x45;
		put16(pkt + 2, (uint16_t)(20 + 8 + qlen));
		pkt[8] = 64;
		pkt[9] = 17;
		assert_int_equal(inet_pton(AF_INET, peer, pkt + 12), 1);
		assert_int_equal(inet_pton(AF_INET, far, pkt + 16), 1);
		put16(pkt + 10, fold(sum16(0, pkt, 20)));
	}
	uint8_t *u = pkt + hl;
	put16(u, 33333);
	put16(u + 2, 53);
	put16(u + 4, (uint16_t)(8 + qlen));
	memcpy(u + 8, q, qlen);
	const uint8_t *s = pkt + (v6 ? 8 : 12), *d = pkt + (v6 ? 24 : 16);
	put16(u + 6, fold(sum16(pseudo(v6, s, d, (uint32_t)(8 + qlen), 17), u, 8 + qlen)));

	f->answer = 1;
	f->reason = NETSTACK_UNREACH_PORT;
	f->answer_rc = 1;
	netstack_input(f->ns, pkt, hl + 8 + qlen);
	assert_int_equal(f->answer_rc, 0);
	assert_int_equal(f->nout, 1);
	struct expect e = { v6,   peer, far, 33333, 53, v6 ? 1 : 3, v6 ? 4 : 3, (const uint8_t *)q,
			    qlen, qlen };
	size_t uoff = check_unreach(f, 0, &e);
	assert_memory_equal(f->out[0] + uoff, u, 8 + qlen);
}

static void test_unreach4_from_udp_recv(void **state)
{
	roundtrip(*state, 0);
}

static void test_unreach6_from_udp_recv(void **state)
{
	roundtrip(*state, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_unreach4_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreach4_prohibited_truncated, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unreach6_port_and_prohibited, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreach_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreach4_from_udp_recv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreach6_from_udp_recv, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
