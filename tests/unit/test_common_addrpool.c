/* Address pools: parsing, the endpoint's own addresses, allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "common/addrpool.h"

static struct addrpool pool(const char *p4, const char *p6)
{
	struct addrpool p;
	assert_int_equal(addrpool_parse4(p4, &p.net4, &p.prefix4), 0);
	assert_int_equal(addrpool_parse6(p6, &p.net6, &p.prefix6), 0);
	return p;
}

static void assert_addr4(struct in_addr a, const char *want)
{
	char s[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a, s, sizeof(s));
	assert_string_equal(s, want);
}

static void assert_addr6(const struct in6_addr *a, const char *want)
{
	char s[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, a, s, sizeof(s));
	assert_string_equal(s, want);
}

static void test_parse(void **ctx)
{
	(void)ctx;
	struct in_addr n4;
	struct in6_addr n6;
	uint8_t p;
	assert_int_equal(addrpool_parse4("10.66.77.0/24", &n4, &p), 0);
	assert_int_equal(p, 24);
	static const char *bad4[] = { "10.66.77.1/24", "10.66.77.0",   "10.66.77.0/31",
				      "10.66.77.0/7",  "10.66.77.0/x", "10.66.77.0/24x",
				      "300.1.1.0/24",  "fd00::/64",    "" };
	for (size_t i = 0; i < sizeof(bad4) / sizeof(bad4[0]); i++)
		assert_int_equal(addrpool_parse4(bad4[i], &n4, &p), -EINVAL);
	assert_int_equal(addrpool_parse6("fd12:3456:789a::/64", &n6, &p), 0);
	assert_int_equal(p, 64);
	static const char *bad6[] = { "fd00::1/64", "fd00::/128", "fd00::/40", "10.0.0.0/8",
				      "fd00::" };
	for (size_t i = 0; i < sizeof(bad6) / sizeof(bad6[0]); i++)
		assert_int_equal(addrpool_parse6(bad6[i], &n6, &p), -EINVAL);
}

static void test_server_and_allocation(void **ctx)
{
	(void)ctx;
	struct addrpool p = pool("10.66.77.0/24", "fd12:3456:789a::/64");
	struct in_addr s4, a4;
	struct in6_addr s6, a6;
	addrpool_server(&p, &s4, &s6);
	assert_addr4(s4, "10.66.77.1");
	assert_addr6(&s6, "fd12:3456:789a::1");
	assert_int_equal(addrpool_allocate(&p, NULL, 0, &a4, &a6), 0);
	assert_addr4(a4, "10.66.77.2");
	assert_addr6(&a6, "fd12:3456:789a::2");
	/* The lowest free host number, IPv6 following IPv4. */
	struct in_addr used[3];
	inet_pton(AF_INET, "10.66.77.2", &used[0]);
	inet_pton(AF_INET, "10.66.77.4", &used[1]);
	inet_pton(AF_INET, "10.66.77.3", &used[2]);
	assert_int_equal(addrpool_allocate(&p, used, 3, &a4, &a6), 0);
	assert_addr4(a4, "10.66.77.5");
	assert_addr6(&a6, "fd12:3456:789a::5");
	assert_true(addrpool_contains4(&p, a4));
	assert_true(addrpool_contains6(&p, &a6));
	struct in_addr out;
	inet_pton(AF_INET, "10.66.78.5", &out);
	assert_false(addrpool_contains4(&p, out));
}

static void test_pool_full(void **ctx)
{
	(void)ctx;
	/* /29: hosts 1..6, 1 is the endpoint, 7 is broadcast: five peers. */
	struct addrpool p = pool("192.168.250.0/29", "fd00:1::/64");
	struct in_addr used[8];
	struct in6_addr a6;
	size_t n = 0;
	while (addrpool_allocate(&p, used, n, &used[n], &a6) == 0)
		n++;
	assert_int_equal(n, 5);
	assert_addr4(used[4], "192.168.250.6");
	assert_int_equal(addrpool_allocate(&p, used, n, &used[n], &a6), -ENOSPC);
}

static void test_wide_pools(void **ctx)
{
	(void)ctx;
	/* Host numbers above 255 carry into the IPv6 address too. */
	struct addrpool p = pool("10.66.0.0/16", "fd00:2::/64");
	struct in_addr used[300];
	struct in6_addr a6;
	for (size_t i = 0; i < 300; i++)
		assert_int_equal(addrpool_allocate(&p, used, i, &used[i], &a6), 0);
	assert_addr4(used[299], "10.66.1.45");
	assert_addr6(&a6, "fd00:2::12d");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_server_and_allocation),
		cmocka_unit_test(test_pool_full),
		cmocka_unit_test(test_wide_pools),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
