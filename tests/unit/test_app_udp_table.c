/* The UDP flow table: keys, insert and lookup, expiry order across two
 * timeout classes, the capacity bound, and reuse of removed entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mitm/udp_table.h"

static const uint64_t timeouts[UDP_TABLE_CLASSES] = { 60000, 30000 };

static struct sockaddr_storage addr(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
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

static struct udp_flow_key key(const char *cip, uint16_t cport, const char *dip, uint16_t dport)
{
	struct sockaddr_storage c = addr(cip, cport), d = addr(dip, dport);
	struct udp_flow_key k;
	assert_true(udp_flow_key_make(&k, (struct sockaddr *)&c, (struct sockaddr *)&d));
	return k;
}

static void test_key_make(void **ctx)
{
	(void)ctx;
	struct sockaddr_storage c4 = addr("10.66.77.2", 5000), d6 = addr("2001:db8::1", 53);
	struct udp_flow_key k;
	assert_false(udp_flow_key_make(&k, (struct sockaddr *)&c4, (struct sockaddr *)&d6));
	struct sockaddr_storage bad;
	memset(&bad, 0, sizeof(bad));
	bad.ss_family = AF_UNIX;
	assert_false(udp_flow_key_make(&k, (struct sockaddr *)&bad, (struct sockaddr *)&bad));

	/* Scope ids and flow labels do not make a different flow. */
	struct sockaddr_storage c6 = addr("fd00::2", 4000), c6s = c6;
	((struct sockaddr_in6 *)&c6s)->sin6_scope_id = 7;
	((struct sockaddr_in6 *)&c6s)->sin6_flowinfo = htonl(0x12345);
	struct udp_flow_key k1, k2;
	assert_true(udp_flow_key_make(&k1, (struct sockaddr *)&c6, (struct sockaddr *)&d6));
	assert_true(udp_flow_key_make(&k2, (struct sockaddr *)&c6s, (struct sockaddr *)&d6));
	struct udp_table *t = udp_table_new(4, timeouts);
	assert_non_null(t);
	assert_non_null(udp_table_insert(t, &k1, 0, 0));
	assert_non_null(udp_table_lookup(t, &k2));
	udp_table_free(t);
}

static void test_insert_lookup(void **ctx)
{
	(void)ctx;
	struct udp_table *t = udp_table_new(64, timeouts);
	assert_non_null(t);
	assert_int_equal(udp_table_capacity(t), 64);
	assert_int_equal(udp_table_next_deadline(t), UINT64_MAX);
	assert_null(udp_table_first(t));

	struct udp_flow_key a = key("10.66.77.2", 40000, "93.184.216.34", 443);
	struct udp_flow_key b =
		key("10.66.77.2", 40001, "93.184.216.34", 443); /* other client port */
	struct udp_flow_key c =
		key("10.66.77.2", 40000, "93.184.216.34", 444); /* other dest port */
	struct udp_flow_key d = key("10.66.77.3", 40000, "93.184.216.34", 443); /* other client */
	struct udp_flow_key e6 = key("fd00::2", 40000, "2001:db8::34", 443);

	int tag[5];
	struct udp_flow_key *keys[5] = { &a, &b, &c, &d, &e6 };
	for (int i = 0; i < 5; i++) {
		assert_null(udp_table_lookup(t, keys[i]));
		struct udp_table_entry *e = udp_table_insert(t, keys[i], 0, 1000);
		assert_non_null(e);
		e->data = &tag[i];
		assert_int_equal(e->deadline_ms, 61000);
	}
	assert_int_equal(udp_table_count(t), 5);
	for (int i = 0; i < 5; i++) {
		struct udp_table_entry *e = udp_table_lookup(t, keys[i]);
		assert_non_null(e);
		assert_ptr_equal(e->data, &tag[i]);
	}
	errno = 0;
	assert_null(udp_table_insert(t, &a, 0, 2000));
	assert_int_equal(errno, EEXIST);
	struct udp_flow_key other = key("10.0.0.1", 1, "10.0.0.2", 2);
	assert_null(udp_table_insert(t, &other, UDP_TABLE_CLASSES, 0));
	assert_int_equal(errno, EINVAL);

	udp_table_remove(t, udp_table_lookup(t, &c));
	assert_null(udp_table_lookup(t, &c));
	assert_int_equal(udp_table_count(t), 4);
	for (int i = 0; i < 5; i++)
		if (i != 2)
			assert_ptr_equal(udp_table_lookup(t, keys[i])->data, &tag[i]);
	udp_table_free(t);
}

/* Deadlines: class 0 is 60 s, class 1 (DNS-like) 30 s; touching moves a flow
 * to the back of its class. Expiry yields flows in deadline order across
 * both classes. */
static void test_expiry_order(void **ctx)
{
	(void)ctx;
	struct udp_table *t = udp_table_new(16, timeouts);
	assert_non_null(t);
	struct udp_flow_key k[4] = {
		key("10.66.77.2", 1, "1.1.1.1", 9000), /* class 0 at t=0    -> 60000 */
		key("10.66.77.2", 2, "1.1.1.1", 53),   /* class 1 at t=0    -> 30000 */
		key("10.66.77.2", 3, "1.1.1.1",
		    9000), /* class 0 at t=1000 -> 61000, touched at 10000 -> 70000 */
		key("10.66.77.2", 4, "8.8.8.8", 53), /* class 1 at t=20000 -> 50000 */
	};
	assert_non_null(udp_table_insert(t, &k[0], 0, 0));
	assert_non_null(udp_table_insert(t, &k[1], 1, 0));
	assert_non_null(udp_table_insert(t, &k[2], 0, 1000));
	assert_int_equal(udp_table_next_deadline(t), 30000);
	udp_table_touch(t, udp_table_lookup(t, &k[2]), 10000);
	assert_non_null(udp_table_insert(t, &k[3], 1, 20000));

	/* Touching the tail of a class keeps it valid. */
	udp_table_touch(t, udp_table_lookup(t, &k[3]), 20000);

	assert_null(udp_table_expired(t, 29999));
	static const struct {
		uint64_t now;
		int expect; /* index into k, -1: nothing */
	} steps[] = {
		{ 30000, 1 }, { 30000, -1 }, { 49999, -1 }, { 50000, 3 },
		{ 65000, 0 }, { 65000, -1 }, { 70000, 2 },  { 1000000, -1 },
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct udp_table_entry *e = udp_table_expired(t, steps[i].now);
		if (steps[i].expect < 0) {
			assert_null(e);
			continue;
		}
		assert_non_null(e);
		assert_ptr_equal(e, udp_table_lookup(t, &k[steps[i].expect]));
		udp_table_remove(t, e);
	}
	assert_int_equal(udp_table_count(t), 0);
	assert_int_equal(udp_table_next_deadline(t), UINT64_MAX);

	/* A touched head moves behind a later flow of its class. */
	assert_non_null(udp_table_insert(t, &k[0], 0, 0));
	assert_non_null(udp_table_insert(t, &k[2], 0, 5));
	udp_table_touch(t, udp_table_lookup(t, &k[0]), 10);
	assert_int_equal(udp_table_next_deadline(t), 60005);
	assert_ptr_equal(udp_table_expired(t, 60005), udp_table_lookup(t, &k[2]));
	udp_table_free(t);
}

static void test_capacity(void **ctx)
{
	(void)ctx;
	enum { CAP = 100 };
	struct udp_table *t = udp_table_new(CAP, timeouts);
	assert_non_null(t);
	struct udp_flow_key k;
	for (int i = 0; i < CAP; i++) {
		k = key("10.66.77.2", (uint16_t)(1000 + i), "198.51.100.7", 9);
		assert_non_null(udp_table_insert(t, &k, (unsigned)(i & 1), (uint64_t)i));
	}
	assert_int_equal(udp_table_count(t), CAP);
	k = key("10.66.77.2", 999, "198.51.100.7", 9);
	errno = 0;
	assert_null(udp_table_insert(t, &k, 0, 500));
	assert_int_equal(errno, ENOSPC);

	/* Freed room is reused; every key is still found after churn. */
	struct udp_flow_key gone = key("10.66.77.2", 1000 + 17, "198.51.100.7", 9);
	udp_table_remove(t, udp_table_lookup(t, &gone));
	assert_non_null(udp_table_insert(t, &k, 0, 500));
	assert_null(udp_table_insert(t, &gone, 0, 500));
	for (int i = 0; i < CAP; i++) {
		struct udp_flow_key q = key("10.66.77.2", (uint16_t)(1000 + i), "198.51.100.7", 9);
		if (i == 17)
			assert_null(udp_table_lookup(t, &q));
		else
			assert_non_null(udp_table_lookup(t, &q));
	}

	/* Draining through udp_table_first empties the table. */
	size_t n = 0;
	for (struct udp_table_entry *e; (e = udp_table_first(t)) != NULL; n++)
		udp_table_remove(t, e);
	assert_int_equal(n, CAP);
	assert_int_equal(udp_table_count(t), 0);

	errno = 0;
	assert_null(udp_table_new(0, timeouts));
	assert_int_equal(errno, EINVAL);
	udp_table_free(t);
	udp_table_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_make),
		cmocka_unit_test(test_insert_lookup),
		cmocka_unit_test(test_expiry_order),
		cmocka_unit_test(test_capacity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
