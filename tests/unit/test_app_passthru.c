/* Passthrough table: --passthrough globs (case-insensitive, first match,
 * bounded) and the automatic (peer, host) entries a certificate rejection
 * adds (expiry, independence of peers, case of the host, bounds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mitm/passthru.h"

static void test_rules_match(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(PASSTHRU_DEFAULT_AUTO_S);
	assert_non_null(p);
	assert_null(passthru_rule(p, "www.apple.com"));

	assert_int_equal(passthru_add_rule(p, "*.apple.com"), 0);
	assert_int_equal(passthru_add_rule(p, "pinned.example"), 0);
	assert_int_equal(passthru_add_rule(p, "10.0.0.?"), 0);

	assert_string_equal(passthru_rule(p, "www.apple.com"), "*.apple.com");
	assert_string_equal(passthru_rule(p, "a.b.apple.com"), "*.apple.com");
	/* Case-insensitive both ways: SNI case is the client's choice. */
	assert_string_equal(passthru_rule(p, "WWW.Apple.COM"), "*.apple.com");
	assert_string_equal(passthru_rule(p, "PINNED.example"), "pinned.example");
	assert_string_equal(passthru_rule(p, "10.0.0.7"), "10.0.0.?");

	/* The glob is anchored at both ends. */
	assert_null(passthru_rule(p, "apple.com"));
	assert_null(passthru_rule(p, "www.apple.com.evil"));
	assert_null(passthru_rule(p, "notpinned.example"));
	assert_null(passthru_rule(p, "pinned.example.org"));
	assert_null(passthru_rule(p, "10.0.0.77"));
	assert_null(passthru_rule(p, ""));
	passthru_free(p);
}

static void test_rules_first_match(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(0);
	assert_int_equal(passthru_add_rule(p, "API.example.com"), 0);
	assert_int_equal(passthru_add_rule(p, "*.example.com"), 0);
	assert_int_equal(passthru_add_rule(p, "*"), 0);

	const char *r = passthru_rule(p, "api.example.com");
	assert_string_equal(r, "API.example.com");
	assert_string_equal(passthru_rule(p, "cdn.example.com"), "*.example.com");
	assert_string_equal(passthru_rule(p, "anything.else"), "*");
	/* The same rule pointer every time (callers may keep it for logs). */
	assert_ptr_equal(passthru_rule(p, "Api.Example.Com"), r);
	passthru_free(p);
}

static void test_rules_bounds(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(0);
	char glob[PASSTHRU_GLOB_LEN + 1];

	assert_int_equal(passthru_add_rule(p, ""), -EINVAL);

	/* The longest pattern that fits (with its NUL), then one longer. */
	memset(glob, 'a', sizeof(glob));
	glob[PASSTHRU_GLOB_LEN] = 0;
	assert_int_equal(passthru_add_rule(p, glob), -EINVAL);
	glob[PASSTHRU_GLOB_LEN - 1] = 0;
	assert_int_equal(passthru_add_rule(p, glob), 0);
	assert_string_equal(passthru_rule(p, glob), glob);
	glob[PASSTHRU_GLOB_LEN - 2] = 0;
	assert_null(passthru_rule(p, glob));

	for (int i = 1; i < PASSTHRU_MAX_RULES; i++) {
		char g[32];
		snprintf(g, sizeof(g), "host%d.test", i);
		assert_int_equal(passthru_add_rule(p, g), 0);
	}
	assert_int_equal(passthru_add_rule(p, "one.too.many"), -ENOSPC);
	assert_null(passthru_rule(p, "one.too.many"));
	/* The last one that fitted is matched. */
	char last[32];
	snprintf(last, sizeof(last), "host%d.test", PASSTHRU_MAX_RULES - 1);
	assert_string_equal(passthru_rule(p, last), last);
	/* Bad patterns are refused even when full (checked first). */
	assert_int_equal(passthru_add_rule(p, ""), -EINVAL);
	passthru_free(p);
}

static void test_auto_expiry(void **state)
{
	(void)state;
	const uint32_t life = 600;
	struct passthru *p = passthru_new(life);
	const uint64_t t0 = 1000;

	assert_false(passthru_auto_has(p, "phone", "pinned.test", t0));
	assert_int_equal(passthru_auto_count(p, t0), 0);

	passthru_auto_add(p, "phone", "pinned.test", t0);
	assert_true(passthru_auto_has(p, "phone", "pinned.test", t0));
	assert_true(passthru_auto_has(p, "phone", "pinned.test", t0 + life - 1));
	assert_int_equal(passthru_auto_count(p, t0), 1);
	assert_int_equal(passthru_auto_count(p, t0 + life - 1), 1);
	/* Expires at now + auto_s. */
	assert_false(passthru_auto_has(p, "phone", "pinned.test", t0 + life));
	assert_int_equal(passthru_auto_count(p, t0 + life), 0);

	/* A new rejection renews it. */
	passthru_auto_add(p, "phone", "pinned.test", t0 + 500);
	assert_true(passthru_auto_has(p, "phone", "pinned.test", t0 + life));
	assert_true(passthru_auto_has(p, "phone", "pinned.test", t0 + 500 + life - 1));
	assert_false(passthru_auto_has(p, "phone", "pinned.test", t0 + 500 + life));
	assert_int_equal(passthru_auto_count(p, t0 + 500), 1);
	/* Rules are a separate table. */
	assert_null(passthru_rule(p, "pinned.test"));
	passthru_free(p);
}

static void test_auto_keys(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(PASSTHRU_DEFAULT_AUTO_S);
	const uint64_t now = 5;

	passthru_auto_add(p, "alice", "Pinned.Test", now);
	/* The host is compared case-insensitively. */
	assert_true(passthru_auto_has(p, "alice", "pinned.test", now));
	assert_true(passthru_auto_has(p, "alice", "PINNED.TEST", now));
	/* Peers are independent: bob's app did not reject anything. */
	assert_false(passthru_auto_has(p, "bob", "pinned.test", now));
	assert_false(passthru_auto_has(p, "Alice", "pinned.test", now));
	assert_false(passthru_auto_has(p, "alice", "other.test", now));
	/* "peer\0host" keys: a name split differently is another key. */
	assert_false(passthru_auto_has(p, "alicep", "inned.test", now));
	assert_false(passthru_auto_has(p, "alice", "pinned.test.", now));
	assert_false(passthru_auto_has(p, NULL, "pinned.test", now));

	passthru_auto_add(p, "bob", "pinned.test", now);
	passthru_auto_add(p, NULL, "ip-only.test", now);
	assert_true(passthru_auto_has(p, "bob", "pinned.test", now));
	assert_true(passthru_auto_has(p, NULL, "ip-only.test", now));
	assert_true(passthru_auto_has(p, "", "ip-only.test", now));
	assert_int_equal(passthru_auto_count(p, now), 3);
	/* The same pair again is one entry. */
	passthru_auto_add(p, "alice", "PINNED.test", now + 1);
	assert_int_equal(passthru_auto_count(p, now + 1), 3);
	assert_true(passthru_auto_has(p, "alice", "pinned.test", now + PASSTHRU_DEFAULT_AUTO_S));
	assert_false(passthru_auto_has(p, "bob", "pinned.test", now + PASSTHRU_DEFAULT_AUTO_S));
	assert_int_equal(passthru_auto_count(p, now + PASSTHRU_DEFAULT_AUTO_S), 1);
	passthru_free(p);
}

static void test_auto_disabled(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(0);
	passthru_auto_add(p, "alice", "pinned.test", 10);
	assert_false(passthru_auto_has(p, "alice", "pinned.test", 10));
	assert_false(passthru_auto_has(p, "alice", "pinned.test", 0));
	assert_int_equal(passthru_auto_count(p, 0), 0);
	passthru_free(p);
}

static void test_auto_long_keys(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(60);
	char host[400];
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;

	passthru_auto_add(p, "alice", host, 1);
	assert_false(passthru_auto_has(p, "alice", host, 1));
	assert_int_equal(passthru_auto_count(p, 1), 0);

	/* A long peer name with a short host overflows the same way. */
	passthru_auto_add(p, host, "pinned.test", 1);
	assert_false(passthru_auto_has(p, host, "pinned.test", 1));
	assert_int_equal(passthru_auto_count(p, 1), 0);

	/* The longest key that fits: peer + NUL + host = 320 bytes. */
	char peer[16] = "alice";
	size_t hl = 320 - strlen(peer) - 1;
	host[hl] = 0;
	passthru_auto_add(p, peer, host, 1);
	assert_true(passthru_auto_has(p, peer, host, 1));
	host[hl] = 'h';
	host[hl + 1] = 0;
	assert_false(passthru_auto_has(p, peer, host, 1));
	passthru_auto_add(p, peer, host, 1);
	assert_int_equal(passthru_auto_count(p, 1), 1);
	passthru_free(p);
}

/* More distinct pairs than slots: the table stays bounded and the newest
 * entry is always there (a collision replaces the older one). */
static void test_auto_bounded(void **state)
{
	(void)state;
	struct passthru *p = passthru_new(60);
	char host[64];
	size_t total = 3 * PASSTHRU_AUTO_SLOTS;
	for (size_t i = 0; i < total; i++) {
		snprintf(host, sizeof(host), "h%zu.pinned.test", i);
		passthru_auto_add(p, "alice", host, 100);
		assert_true(passthru_auto_has(p, "alice", host, 100));
	}
	size_t n = passthru_auto_count(p, 100);
	assert_true(n <= PASSTHRU_AUTO_SLOTS);
	/* A keyed hash spreads 3x the slots over most of them. */
	assert_true(n > PASSTHRU_AUTO_SLOTS * 9 / 10);
	size_t present = 0;
	for (size_t i = 0; i < total; i++) {
		snprintf(host, sizeof(host), "h%zu.pinned.test", i);
		present += passthru_auto_has(p, "alice", host, 100);
	}
	assert_int_equal(present, n);
	passthru_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rules_match),    cmocka_unit_test(test_rules_first_match),
		cmocka_unit_test(test_rules_bounds),   cmocka_unit_test(test_auto_expiry),
		cmocka_unit_test(test_auto_keys),      cmocka_unit_test(test_auto_disabled),
		cmocka_unit_test(test_auto_long_keys), cmocka_unit_test(test_auto_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
