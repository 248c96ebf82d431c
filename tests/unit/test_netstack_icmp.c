/* The netstack answers ICMP echo on its IPv4 tunnel address and ICMPv6 echo
 * on its IPv6 tunnel address, and drops malformed input without output. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "inet_testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "netstack/netstack.h"

#define TUN4 "10.77.0.1"
#define PEER4 "10.77.0.2"
#define TUN6 "fd77::1"
#define PEER6 "fd77::2"

/* ---- Captured output ---------------------------------------------------- */

struct capture {
	int count;
	size_t len;
	uint8_t pkt[2048];
};

static void capture_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct capture *c = ctx;
	c->count++;
	assert_true(len <= sizeof c->pkt);
	memcpy(c->pkt, pkt, len);
	c->len = len;
}

struct fixture {
	uv_loop_t loop;
	struct netstack *ns;
	struct capture out;
};

static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(uv_loop_init(&f.loop), 0);
	struct netstack_config cfg = { .mtu = 1420 };
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	assert_int_equal(inet_pton(AF_INET6, TUN6, &cfg.addr6), 1);
	struct netstack_ops ops = { .output = capture_output };
	f.ns = netstack_new(&f.loop, &cfg, &ops, &f.out);
	assert_non_null(f.ns);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int before = f->out.count;
	netstack_free(f->ns);
	assert_int_equal(f->out.count, before);
	uv_run(&f->loop, UV_RUN_DEFAULT); /* lets the timer close */
	assert_int_equal(uv_loop_close(&f->loop), 0);
	return 0;
}

/* ---- Independent checksum code (RFC 1071) ------------------------------- */

static uint32_t pseudo6(const uint8_t *src, const uint8_t *dst, size_t ulen, uint8_t nh)
{
	uint8_t tail[8] = { (uint8_t)(ulen >> 24),
			    (uint8_t)(ulen >> 16),
			    (uint8_t)(ulen >> 8),
			    (uint8_t)ulen,
			    0,
			    0,
			    0,
			    nh };
	uint32_t acc = sum16(0, src, 16);
	acc = sum16(acc, dst, 16);
	return sum16(acc, tail, sizeof tail);
}

static const char payload[] = "wgmitm echo payload 0123456789abcdefghijklmnopqrstuvwxyz";
#define PAYLOAD_LEN (sizeof payload - 1)

/* IPv4 + ICMP echo request from PEER4 to `dst` with correct checksums. */
static size_t build_echo4(uint8_t *pkt, const char *dst, uint16_t id, uint16_t seq)
{
	size_t len = 20 + 8 + PAYLOAD_LEN;
	memset(pkt, 0, len);
	pkt[0] = 0x45;
	put16(pkt + 2, (uint16_t)len);
	put16(pkt + 4, 0x1234); /* identification */
	pkt[8] = 64;            /* TTL */
	pkt[9] = 1;             /* ICMP */
	assert_int_equal(inet_pton(AF_INET, PEER4, pkt + 12), 1);
	assert_int_equal(inet_pton(AF_INET, dst, pkt + 16), 1);
	put16(pkt + 10, fold(sum16(0, pkt, 20)));
	uint8_t *icmp = pkt + 20;
	icmp[0] = 8; /* echo request */
	put16(icmp + 4, id);
	put16(icmp + 6, seq);
	memcpy(icmp + 8, payload, PAYLOAD_LEN);
	put16(icmp + 2, fold(sum16(0, icmp, 8 + PAYLOAD_LEN)));
	return len;
}

/* IPv6 + ICMPv6 echo request from PEER6 to `dst` with a correct checksum. */
static size_t build_echo6(uint8_t *pkt, const char *dst, uint16_t id, uint16_t seq)
{
	size_t ulen = 8 + PAYLOAD_LEN;
	memset(pkt, 0, 40 + ulen);
	pkt[0] = 0x60;
	put16(pkt + 4, (uint16_t)ulen);
	pkt[6] = 58; /* ICMPv6 */
	pkt[7] = 64; /* hop limit */
	assert_int_equal(inet_pton(AF_INET6, PEER6, pkt + 8), 1);
	assert_int_equal(inet_pton(AF_INET6, dst, pkt + 24), 1);
	uint8_t *icmp = pkt + 40;
	icmp[0] = 128; /* echo request */
	put16(icmp + 4, id);
	put16(icmp + 6, seq);
	memcpy(icmp + 8, payload, PAYLOAD_LEN);
	put16(icmp + 2, fold(sum16(pseudo6(pkt + 8, pkt + 24, ulen, 58), icmp, ulen)));
	return 40 + ulen;
}

/* ---- Tests -------------------------------------------------------------- */

static void test_icmp4_echo(void **state)
{
	struct fixture *f = *state;
	uint8_t req[128];
	size_t len = build_echo4(req, TUN4, 0xbeef, 7);

	netstack_input(f->ns, req, len);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	assert_int_equal(f->out.count, 1);
	const uint8_t *r = f->out.pkt;
	assert_int_equal(f->out.len, len);
	assert_int_equal(r[0], 0x45);
	assert_int_equal(get16(r + 2), len);
	assert_int_equal(r[9], 1);
	assert_memory_equal(r + 12, req + 16, 4); /* src: the tunnel address */
	assert_memory_equal(r + 16, req + 12, 4); /* dst: the peer */
	assert_int_equal(fold(sum16(0, r, 20)), 0);
	const uint8_t *icmp = r + 20;
	assert_int_equal(icmp[0], 0); /* echo reply */
	assert_int_equal(icmp[1], 0);
	assert_int_equal(get16(icmp + 4), 0xbeef);
	assert_int_equal(get16(icmp + 6), 7);
	assert_memory_equal(icmp + 8, payload, PAYLOAD_LEN);
	assert_int_equal(fold(sum16(0, icmp, 8 + PAYLOAD_LEN)), 0);

	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.in_packets, 1);
	assert_int_equal(st.in_bytes, len);
	assert_int_equal(st.out_packets, 1);
	assert_int_equal(st.out_bytes, len);
}

static void test_icmp6_echo(void **state)
{
	struct fixture *f = *state;
	uint8_t req[128];
	size_t len = build_echo6(req, TUN6, 0x4242, 513);

	netstack_input(f->ns, req, len);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	assert_int_equal(f->out.count, 1);
	const uint8_t *r = f->out.pkt;
	size_t ulen = 8 + PAYLOAD_LEN;
	assert_int_equal(f->out.len, 40 + ulen);
	assert_int_equal(r[0] >> 4, 6);
	assert_int_equal(get16(r + 4), ulen);
	assert_int_equal(r[6], 58);
	assert_memory_equal(r + 8, req + 24, 16); /* src: the tunnel address */
	assert_memory_equal(r + 24, req + 8, 16); /* dst: the peer */
	const uint8_t *icmp = r + 40;
	assert_int_equal(icmp[0], 129); /* echo reply */
	assert_int_equal(icmp[1], 0);
	assert_int_equal(get16(icmp + 4), 0x4242);
	assert_int_equal(get16(icmp + 6), 513);
	assert_memory_equal(icmp + 8, payload, PAYLOAD_LEN);
	assert_int_equal(fold(sum16(pseudo6(r + 8, r + 24, ulen, 58), icmp, ulen)), 0);
}

/* The WireGuard layer trims padding, but bytes past the header's length
 * must not reach lwIP either. */
static void test_trailing_bytes_ignored(void **state)
{
	struct fixture *f = *state;
	uint8_t req[256];
	size_t len = build_echo4(req, TUN4, 1, 2);
	memset(req + len, 0xee, 16);

	netstack_input(f->ns, req, len + 16);
	assert_int_equal(f->out.count, 1);
	assert_int_equal(f->out.len, len);
}

static void test_not_our_address_dropped(void **state)
{
	struct fixture *f = *state;
	uint8_t req[128];
	size_t len = build_echo4(req, "10.77.0.9", 1, 1);
	netstack_input(f->ns, req, len);
	len = build_echo6(req, "fd77::9", 1, 1);
	netstack_input(f->ns, req, len);
	assert_int_equal(f->out.count, 0);

	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.in_packets, 2);
	assert_int_equal(st.lwip_ip4_drop, 1);
	/* lwIP 2.1's ip6_input drops "not for us" without counting it. */
}

static void test_malformed_dropped(void **state)
{
	struct fixture *f = *state;
	uint8_t good4[128], good6[128], bad[128];
	size_t len4 = build_echo4(good4, TUN4, 3, 3);
	size_t len6 = build_echo6(good6, TUN6, 3, 3);

	netstack_input(f->ns, good4, 0);        /* empty */
	netstack_input(f->ns, good4, 19);       /* truncated IPv4 header */
	netstack_input(f->ns, good6, 39);       /* truncated IPv6 header */
	netstack_input(f->ns, good4, len4 - 1); /* shorter than total length */
	netstack_input(f->ns, good6, len6 - 1); /* shorter than payload length */
	memcpy(bad, good4, len4);
	bad[0] = 0x44; /* IHL below 5 */
	netstack_input(f->ns, bad, len4);
	memcpy(bad, good4, len4);
	put16(bad + 2, 12); /* total length < IHL */
	netstack_input(f->ns, bad, len4);
	memcpy(bad, good4, len4);
	bad[0] = 0x55; /* version 5 */
	netstack_input(f->ns, bad, len4);
	memcpy(bad, good6, len6);
	bad[0] = 0x00; /* version 0 */
	netstack_input(f->ns, bad, len6);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	assert_int_equal(f->out.count, 0);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.in_packets, 0);
	assert_int_equal(st.drop_short, 3);
	assert_int_equal(st.drop_length, 4);
	assert_int_equal(st.drop_version, 2);

	/* Still answering afterwards. */
	netstack_input(f->ns, good4, len4);
	assert_int_equal(f->out.count, 1);
}

/* Headers valid enough to reach lwIP, but wrong inside: lwIP drops them. */
static void test_lwip_rejects_bad_headers(void **state)
{
	struct fixture *f = *state;
	uint8_t bad[128];
	size_t len = build_echo4(bad, TUN4, 5, 5);
	bad[9] = 99; /* unknown protocol */
	netstack_input(f->ns, bad, len);
	len = build_echo4(bad, TUN4, 5, 5);
	bad[0] = 0x4f; /* IHL 60 bytes: options run past the ICMP header */
	netstack_input(f->ns, bad, len);
	len = build_echo6(bad, TUN6, 5, 5);
	bad[6] = 0; /* hop-by-hop options header that runs off the end */
	netstack_input(f->ns, bad, 40 + 4);
	assert_int_equal(f->out.count <= 3, 1); /* at most ICMP errors */
	for (int i = 0; i < 20; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* IPv6 extension headers: a well-formed hop-by-hop header is passed, a
 * chain that runs off the packet never reaches lwIP (lwIP 2.1.3 would read
 * past the buffer: the first crash fuzz_netstack_input found). */
static void test_ip6_extension_headers(void **state)
{
	struct fixture *f = *state;
	uint8_t echo[128], pkt[256];
	size_t len = build_echo6(echo, TUN6, 6, 6);
	size_t ulen = len - 40;

	/* Hop-by-hop header (8 bytes: next 58, len 0, PadN of 4) then the echo.
     * The ICMPv6 checksum does not cover extension headers. */
	memcpy(pkt, echo, 40);
	pkt[6] = 0;
	put16(pkt + 4, (uint16_t)(8 + ulen));
	const uint8_t hbh[8] = { 58, 0, 1, 4, 0, 0, 0, 0 };
	memcpy(pkt + 40, hbh, 8);
	memcpy(pkt + 48, echo + 40, ulen);
	netstack_input(f->ns, pkt, 48 + ulen);
	assert_int_equal(f->out.count, 1);
	assert_int_equal(f->out.pkt[40], 129);

	/* Hop-by-hop announced, payload length 0: nothing follows the header. */
	memcpy(pkt, echo, 40);
	pkt[6] = 0;
	put16(pkt + 4, 0);
	netstack_input(f->ns, pkt, 40);
	/* An option whose length runs past its header. */
	memcpy(pkt, echo, 40);
	pkt[6] = 0;
	put16(pkt + 4, 8);
	const uint8_t hbh_bad[8] = { 59, 0, 1, 9, 0, 0, 0, 0 };
	memcpy(pkt + 40, hbh_bad, 8);
	netstack_input(f->ns, pkt, 48);
	/* Destination options header claiming 16 bytes with 8 present. */
	memcpy(pkt, echo, 40);
	pkt[6] = 60;
	put16(pkt + 4, 8);
	const uint8_t dst_long[8] = { 59, 1, 1, 4, 0, 0, 0, 0 };
	memcpy(pkt + 40, dst_long, 8);
	netstack_input(f->ns, pkt, 48);
	/* A first fragment whose chain ends with a header cut off. */
	memcpy(pkt, echo, 40);
	pkt[6] = 44;
	put16(pkt + 4, 10);
	const uint8_t frag[10] = { 43, 0, 0, 1, 0, 0, 0, 1, 58, 0 };
	memcpy(pkt + 40, frag, sizeof frag);
	netstack_input(f->ns, pkt, 50);

	assert_int_equal(f->out.count, 1);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.drop_ext_header, 4);
	assert_int_equal(st.in_packets, 1);
}

/* Echo requests split into two fragments are reassembled and answered
 * (IPv6 reassembly on 64-bit needs IPV6_FRAG_COPYHEADER; without it lwIP
 * asserted, as fuzz_netstack_input found). */
static void test_fragmented_echo(void **state)
{
	struct fixture *f = *state;
	uint8_t echo[128], pkt[128];

	/* IPv4: 64 bytes of ICMP as 32 + 32. */
	size_t len = build_echo4(echo, TUN4, 21, 21);
	size_t ulen = len - 20;
	assert_int_equal(ulen, 64);
	for (int i = 0; i < 2; i++) {
		memcpy(pkt, echo, 20);
		put16(pkt + 2, 20 + 32);
		put16(pkt + 6, (uint16_t)(i == 0 ? 0x2000 : 32 / 8)); /* MF / offset */
		put16(pkt + 10, 0);
		put16(pkt + 10, fold(sum16(0, pkt, 20)));
		memcpy(pkt + 20, echo + 20 + 32 * i, 32);
		netstack_input(f->ns, pkt, 20 + 32);
	}
	assert_int_equal(f->out.count, 1);
	assert_int_equal(f->out.pkt[20], 0);
	assert_memory_equal(f->out.pkt + 28, payload, PAYLOAD_LEN);

	/* IPv6: fragment header (next 58, offset, M, id) before each half. */
	len = build_echo6(echo, TUN6, 22, 22);
	ulen = len - 40;
	for (int i = 0; i < 2; i++) {
		memcpy(pkt, echo, 40);
		pkt[6] = 44;
		put16(pkt + 4, 8 + 32);
		uint8_t frag[8] = { 58, 0, 0, 0, 0x11, 0x22, 0x33, 0x44 };
		put16(frag + 2, (uint16_t)(i == 0 ? 1 : 32)); /* M=1 / offset 4 units */
		memcpy(pkt + 40, frag, 8);
		memcpy(pkt + 48, echo + 40 + 32 * i, 32);
		netstack_input(f->ns, pkt, 48 + 32);
	}
	assert_int_equal(f->out.count, 2);
	assert_int_equal(f->out.len, 40 + ulen);
	const uint8_t *r = f->out.pkt;
	assert_int_equal(r[6], 58);
	assert_int_equal(r[40], 129);
	assert_memory_equal(r + 48, payload, PAYLOAD_LEN);
	assert_int_equal(fold(sum16(pseudo6(r + 8, r + 24, ulen, 58), r + 40, ulen)), 0);
}

/* Fragment `half` (0 or 1) of a two-fragment echo request, v4 or v6. */
static size_t build_half(uint8_t *pkt, int v6, int half)
{
	uint8_t echo[128];
	if (!v6) {
		build_echo4(echo, TUN4, 23, 23);
		memcpy(pkt, echo, 20);
		put16(pkt + 2, 20 + 32);
		put16(pkt + 6, (uint16_t)(half == 0 ? 0x2000 : 4));
		put16(pkt + 10, 0);
		put16(pkt + 10, fold(sum16(0, pkt, 20)));
		memcpy(pkt + 20, echo + 20 + 32 * half, 32);
		return 52;
	}
	build_echo6(echo, TUN6, 23, 23);
	memcpy(pkt, echo, 40);
	pkt[6] = 44;
	put16(pkt + 4, 8 + 32);
	uint8_t frag[8] = { 58, 0, 0, 0, 1, 2, 3, 4 };
	put16(frag + 2, (uint16_t)(half == 0 ? 1 : 32));
	memcpy(pkt + 40, frag, 8);
	memcpy(pkt + 48, echo + 40 + 32 * half, 32);
	return 80;
}

/* netstack_free drops half-reassembled datagrams: a second netstack does
 * not complete them (and nothing is emitted while freeing). */
static void test_free_releases_reassembly(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[128];
	for (int v6 = 0; v6 < 2; v6++)
		netstack_input(f->ns, pkt, build_half(pkt, v6, 0));
	assert_int_equal(f->out.count, 0);

	netstack_free(f->ns);
	assert_int_equal(f->out.count, 0);
	struct netstack_config cfg = { .mtu = 1420 };
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	assert_int_equal(inet_pton(AF_INET6, TUN6, &cfg.addr6), 1);
	struct netstack_ops ops = { .output = capture_output };
	f->ns = netstack_new(&f->loop, &cfg, &ops, &f->out);
	assert_non_null(f->ns);

	for (int v6 = 0; v6 < 2; v6++)
		netstack_input(f->ns, pkt, build_half(pkt, v6, 1));
	assert_int_equal(f->out.count, 0);
	/* Both halves in the same netstack still work. */
	for (int v6 = 0; v6 < 2; v6++) {
		netstack_input(f->ns, pkt, build_half(pkt, v6, 0));
		netstack_input(f->ns, pkt, build_half(pkt, v6, 1));
	}
	assert_int_equal(f->out.count, 2);
}

static void test_single_instance_and_config(void **state)
{
	struct fixture *f = *state;
	struct netstack_config cfg = { .mtu = 1420 };
	struct netstack_ops ops = { .output = capture_output };
	errno = 0;
	assert_null(netstack_new(&f->loop, &cfg, &ops, &f->out));
	assert_int_equal(errno, EBUSY);

	netstack_free(f->ns);
	f->ns = NULL;
	cfg.mtu = 1000;
	assert_null(netstack_new(&f->loop, &cfg, &ops, &f->out));
	assert_int_equal(errno, EINVAL);
	struct netstack_ops no_output = { 0 };
	cfg.mtu = 0;
	assert_null(netstack_new(&f->loop, &cfg, &no_output, &f->out));
	assert_int_equal(errno, EINVAL);

	/* A new netstack right after freeing one; only IPv4 configured. */
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	f->ns = netstack_new(&f->loop, &cfg, &ops, &f->out);
	assert_non_null(f->ns);
	uint8_t req[128];
	size_t len = build_echo4(req, TUN4, 9, 9);
	netstack_input(f->ns, req, len);
	assert_int_equal(f->out.count, 1);
	len = build_echo6(req, TUN6, 9, 9);
	netstack_input(f->ns, req, len);
	assert_int_equal(f->out.count, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_icmp4_echo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_icmp6_echo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trailing_bytes_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_our_address_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lwip_rejects_bad_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip6_extension_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fragmented_echo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_releases_reassembly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_single_instance_and_config, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
