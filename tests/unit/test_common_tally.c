/* Per-key counts with a cap: the per-peer share of shared tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "common/tally.h"

static void test_cap_per_key(void **state)
{
	(void)state;
	struct tally *t = tally_new();
	assert_non_null(t);
	struct tally_entry *a[3];
	for (int i = 0; i < 3; i++)
		assert_non_null(a[i] = tally_take(t, "phone", 3));
	assert_null(tally_take(t, "phone", 3));
	assert_int_equal(tally_refused(t), 1);
	/* Another key has its own share. */
	struct tally_entry *b = tally_take(t, "tablet", 3);
	assert_non_null(b);
	assert_int_equal(tally_count(t, "phone"), 3);
	assert_int_equal(tally_count(t, "tablet"), 1);
	assert_int_equal(tally_keys(t), 2);
	/* A slot given back can be taken again. */
	tally_give(t, a[0]);
	assert_int_equal(tally_count(t, "phone"), 2);
	assert_non_null(a[0] = tally_take(t, "phone", 3));
	for (int i = 0; i < 3; i++)
		tally_give(t, a[i]);
	assert_int_equal(tally_count(t, "phone"), 0);
	assert_int_equal(tally_keys(t), 1);
	tally_give(t, b);
	assert_int_equal(tally_keys(t), 0);
	tally_free(t);
}

static void test_null_key_and_zero_cap(void **state)
{
	(void)state;
	struct tally *t = tally_new();
	assert_null(tally_take(t, "x", 0));
	struct tally_entry *e = tally_take(t, NULL, 1);
	assert_non_null(e);
	assert_int_equal(tally_count(t, ""), 1);
	assert_null(tally_take(t, "", 1));
	tally_give(t, e);
	tally_give(t, NULL);
	assert_int_equal(tally_refused(t), 2);
	tally_free(t);
}

/* Many keys in the same buckets: removal from the middle of a chain. */
static void test_many_keys(void **state)
{
	(void)state;
	struct tally *t = tally_new();
	struct tally_entry *e[2000];
	char k[16];
	for (int i = 0; i < 2000; i++) {
		snprintf(k, sizeof(k), "peer%d", i);
		assert_non_null(e[i] = tally_take(t, k, 1));
	}
	assert_int_equal(tally_keys(t), 2000);
	for (int i = 0; i < 2000; i += 2)
		tally_give(t, e[i]);
	assert_int_equal(tally_keys(t), 1000);
	for (int i = 1; i < 2000; i += 2) {
		snprintf(k, sizeof(k), "peer%d", i);
		assert_int_equal(tally_count(t, k), 1);
		assert_int_equal(tally_count(t, k + 1), 0);
	}
	tally_free(t); /* frees what is still held */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cap_per_key),
		cmocka_unit_test(test_null_key_and_zero_cap),
		cmocka_unit_test(test_many_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
