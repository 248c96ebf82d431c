/* The names the tunnel's DNS answered (mitm/dnsnames.h): per peer and
 * address, the newest answer wins, TTLs clamped, entries expire, and a
 * full bucket drops its oldest entry, not the newest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "mitm/dnsnames.h"

static struct sockaddr_storage addr(const char *ip)
{
	struct sockaddr_storage s;
	memset(&s, 0, sizeof(s));
	struct sockaddr_in *v4 = (struct sockaddr_in *)&s;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&s;
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
		v4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
		v6->sin6_family = AF_INET6;
	return s;
}

static void learn(struct dnsnames *m, const char *peer, const char *ip, const char *name,
		  uint32_t ttl, uint64_t now)
{
	struct sockaddr_storage s = addr(ip);
	if (s.ss_family == AF_INET)
		dnsnames_learn(m, peer, (const uint8_t *)&((struct sockaddr_in *)&s)->sin_addr, 4,
			       name, ttl, now);
	else
		dnsnames_learn(m, peer, (const uint8_t *)&((struct sockaddr_in6 *)&s)->sin6_addr,
			       16, name, ttl, now);
}

static const char *look(struct dnsnames *m, const char *peer, const char *ip, uint64_t now)
{
	struct sockaddr_storage s = addr(ip);
	return dnsnames_lookup(m, peer, (struct sockaddr *)&s, now);
}

static void test_dnsnames(void **state)
{
	(void)state;
	struct dnsnames *m = dnsnames_new();
	assert_non_null(m);
	learn(m, "phone", "203.0.113.10", "www.test.", 30, 1000);
	learn(m, "phone", "2001:db8::1", "v6.test", 600, 1000);
	assert_string_equal(look(m, "phone", "203.0.113.10", 1000), "www.test");
	assert_string_equal(look(m, "phone", "2001:db8::1", 1000), "v6.test");
	assert_null(look(m, "tablet", "203.0.113.10", 1000)); /* another peer's lookup */
	assert_null(look(m, NULL, "203.0.113.10", 1000));
	assert_null(look(m, "phone", "203.0.113.11", 1000));
	/* A 30 s TTL lasts the minimum, 60 s. */
	assert_non_null(look(m, "phone", "203.0.113.10", 1059));
	assert_null(look(m, "phone", "203.0.113.10", 1060));
	/* The newest answer for an address wins. */
	learn(m, "phone", "2001:db8::1", "cdn.test", 99999, 1001);
	assert_string_equal(look(m, "phone", "2001:db8::1", 1001), "cdn.test");
	assert_non_null(look(m, "phone", "2001:db8::1", 1001 + DNSNAMES_MAX_TTL_S - 1));
	assert_null(look(m, "phone", "2001:db8::1", 1001 + DNSNAMES_MAX_TTL_S));
	/* Garbage is ignored. */
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	learn(m, "phone", "198.51.100.1", longname, 60, 1000);
	assert_null(look(m, "phone", "198.51.100.1", 1000));
	dnsnames_learn(m, "phone", (const uint8_t *)"abc", 3, "x.test", 60, 1000);
	/* Many more names than slots: the table stays bounded and the newest
	 * are there. */
	char ip[32], name[32];
	for (int i = 0; i < 4 * DNSNAMES_SLOTS; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		snprintf(name, sizeof(name), "h%d.test", i);
		learn(m, "phone", ip, name, 600, 2000 + (uint64_t)i);
	}
	int found = 0;
	for (int i = 4 * DNSNAMES_SLOTS - 64; i < 4 * DNSNAMES_SLOTS; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		snprintf(name, sizeof(name), "h%d.test", i);
		const char *n = look(m, "phone", ip, 2000 + 4 * DNSNAMES_SLOTS);
		found += n && strcmp(n, name) == 0;
	}
	assert_true(found >= 60); /* 4 ways per bucket: the newest survive */
	dnsnames_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_dnsnames) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
