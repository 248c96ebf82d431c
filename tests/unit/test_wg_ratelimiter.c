/* Handshake rate limiter: 20/s, burst 5, per IPv4 address / IPv6 /64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wg/messages.h"
#include "wg/ratelimiter.h"

#define MS 1000000ULL
#define SEC 1000000000ULL

static struct wg_endpoint v4(uint32_t addr, uint16_t port)
{
	struct wg_endpoint ep;

	memset(&ep, 0, sizeof(ep));
	ep.in4.sin_family = AF_INET;
	ep.in4.sin_addr.s_addr = htonl(addr);
	ep.in4.sin_port = htons(port);
	return ep;
}

static struct wg_endpoint v6(const char *addr)
{
	struct wg_endpoint ep;

	memset(&ep, 0, sizeof(ep));
	ep.in6.sin6_family = AF_INET6;
	ep.in6.sin6_port = htons(1000);
	assert_int_equal(inet_pton(AF_INET6, addr, &ep.in6.sin6_addr), 1);
	return ep;
}

static size_t burst(struct wg_ratelimiter *rl, const struct wg_endpoint *ep, uint64_t now,
		    int tries)
{
	size_t n = 0;

	for (int i = 0; i < tries; i++)
		n += wg_ratelimiter_allow(rl, ep, now);
	return n;
}

static void test_burst_then_limited(void **state)
{
	struct wg_ratelimiter rl;
	struct wg_endpoint a = v4(0xc0000201, 1), a2 = v4(0xc0000201, 2), b = v4(0xc0000202, 1);
	const uint64_t t0 = 100 * SEC;

	(void)state;
	assert_true(wg_ratelimiter_init(&rl, 1024));
	assert_int_equal(burst(&rl, &a, t0, 10), WG_RATELIMIT_BURST);
	/* Another port of the same address shares the bucket. */
	assert_false(wg_ratelimiter_allow(&rl, &a2, t0));
	/* Another address has its own. */
	assert_int_equal(burst(&rl, &b, t0, 10), WG_RATELIMIT_BURST);
	/* Refill: one packet per 50 ms. */
	assert_false(wg_ratelimiter_allow(&rl, &a, t0 + 49 * MS));
	assert_true(wg_ratelimiter_allow(&rl, &a, t0 + 50 * MS));
	assert_false(wg_ratelimiter_allow(&rl, &a, t0 + 50 * MS));
	assert_int_equal(burst(&rl, &a, t0 + 200 * MS, 10), 3);
	/* Steady state: 20 per second. */
	{
		size_t n = 0;

		for (uint64_t t = t0 + SEC; t < t0 + 2 * SEC; t += 5 * MS)
			n += wg_ratelimiter_allow(&rl, &a, t);
		assert_true(n >= 20 && n <= 20 + WG_RATELIMIT_BURST);
	}
	/* Long idle: full burst again, never more. */
	assert_int_equal(burst(&rl, &a, t0 + 100 * SEC, 10), WG_RATELIMIT_BURST);
	wg_ratelimiter_free(&rl);
}

static void test_ipv6_prefix(void **state)
{
	struct wg_ratelimiter rl;
	struct wg_endpoint x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9"),
			   z = v6("2001:db8:1:3::1");
	struct wg_endpoint mapped = v6("::ffff:192.0.2.1"), plain = v4(0xc0000201, 5);

	(void)state;
	assert_true(wg_ratelimiter_init(&rl, 64));
	assert_int_equal(burst(&rl, &x, SEC, 3), 3);
	/* Same /64: shares the bucket. */
	assert_int_equal(burst(&rl, &y, SEC, 10), WG_RATELIMIT_BURST - 3);
	/* Next /64: its own. */
	assert_int_equal(burst(&rl, &z, SEC, 10), WG_RATELIMIT_BURST);
	/* An IPv4-mapped address is that IPv4 address. */
	assert_int_equal(burst(&rl, &mapped, SEC, 2), 2);
	assert_int_equal(burst(&rl, &plain, SEC, 10), WG_RATELIMIT_BURST - 2);
	/* Unset endpoints are refused. */
	{
		struct wg_endpoint none;

		memset(&none, 0, sizeof(none));
		assert_false(wg_ratelimiter_allow(&rl, &none, SEC));
	}
	wg_ratelimiter_free(&rl);
}

/* The table never grows: more sources than slots evict the least recently
 * used; idle slots are reused without counting as evictions. */
static void test_table_bound(void **state)
{
	struct wg_ratelimiter rl;
	size_t slots;

	(void)state;
	assert_true(wg_ratelimiter_init(&rl, 64));
	slots = rl.n_buckets * WG_RATELIMITER_WAYS;
	assert_true(slots >= 64 && slots < 128);
	for (uint32_t i = 0; i < 10000; i++) {
		struct wg_endpoint ep = v4(0x0a000000 + i, 1);

		/* Every new source gets its first packet. */
		assert_true(wg_ratelimiter_allow(&rl, &ep, SEC));
	}
	assert_true(wg_ratelimiter_count(&rl, SEC) <= slots);
	assert_true(rl.evictions >= 10000 - slots);
	/* After a full refill period every slot is free again. */
	assert_int_equal(wg_ratelimiter_count(&rl, 2 * SEC), 0);
	{
		uint64_t ev = rl.evictions;

		for (uint32_t i = 0; i < 10000; i++) {
			struct wg_endpoint ep = v4(0x0b000000 + i, 1);

			assert_true(wg_ratelimiter_allow(&rl, &ep, 3 * SEC + i));
			/* No bucket can be full after WAYS insertions. */
			if (i == WG_RATELIMITER_WAYS - 1)
				assert_int_equal(rl.evictions, ev);
		}
	}
	wg_ratelimiter_free(&rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_limited),
		cmocka_unit_test(test_ipv6_prefix),
		cmocka_unit_test(test_table_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
