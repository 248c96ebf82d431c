/* The shaped link: serialisation at the rate, the delay on top, order kept
 * when the settings change, loss at its rate, and the queue's bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/shaper.h"

static uint8_t pkt[1500];

static void test_delay_only(void **state)
{
	(void)state;
	struct shaper_config c = { .delay_ms = 100 };
	struct shaper *s = shaper_new(&c, 1);
	size_t len;
	memset(pkt, 7, sizeof(pkt));
	assert_int_equal(shaper_push(s, pkt, 100, 1000), SHAPER_QUEUED);
	assert_int_equal(shaper_push(s, pkt, 200, 1010), SHAPER_QUEUED);
	assert_int_equal(shaper_next_due(s), 1100);
	assert_null(shaper_pop(s, 1099, &len));
	const uint8_t *p = shaper_pop(s, 1100, &len);
	assert_non_null(p);
	assert_int_equal(len, 100);
	assert_int_equal(p[99], 7);
	assert_null(shaper_pop(s, 1109, &len));
	assert_non_null(shaper_pop(s, 1110, &len));
	assert_int_equal(len, 200);
	assert_int_equal(shaper_next_due(s), UINT64_MAX);
	shaper_free(s);
}

static void test_rate(void **state)
{
	(void)state;
	/* 10,000 B/s: a 1,000-byte packet takes 100 ms on the link. */
	struct shaper_config c = { .rate = 10000, .delay_ms = 50 };
	struct shaper *s = shaper_new(&c, 1);
	size_t len;
	for (int i = 0; i < 3; i++)
		assert_int_equal(shaper_push(s, pkt, 1000, 0), SHAPER_QUEUED);
	assert_int_equal(shaper_next_due(s), 150);
	assert_non_null(shaper_pop(s, 150, &len));
	assert_int_equal(shaper_next_due(s), 250);
	assert_non_null(shaper_pop(s, 250, &len));
	assert_non_null(shaper_pop(s, 350, &len));
	/* An idle link starts again from now. */
	assert_int_equal(shaper_push(s, pkt, 1000, 1000), SHAPER_QUEUED);
	assert_int_equal(shaper_next_due(s), 1150);
	shaper_free(s);
}

static void test_order_kept(void **state)
{
	(void)state;
	struct shaper_config c = { .delay_ms = 500 };
	struct shaper *s = shaper_new(&c, 1);
	size_t len;
	assert_int_equal(shaper_push(s, pkt, 10, 0), SHAPER_QUEUED);
	c.delay_ms = 0;
	shaper_set(s, &c);
	assert_int_equal(shaper_push(s, pkt, 20, 1), SHAPER_QUEUED);
	assert_null(shaper_pop(s, 100, &len));
	assert_non_null(shaper_pop(s, 500, &len));
	assert_int_equal(len, 10);
	assert_non_null(shaper_pop(s, 500, &len));
	assert_int_equal(len, 20);
	shaper_free(s);
}

static void test_loss(void **state)
{
	(void)state;
	struct shaper_config c = { .loss_ppm = 100000 }; /* 10 % */
	struct shaper *s = shaper_new(&c, 42);
	int lost = 0;
	size_t len;
	for (int i = 0; i < 10000; i++) {
		if (shaper_push(s, pkt, 1, (uint64_t)i) == SHAPER_LOST)
			lost++;
		while (shaper_pop(s, (uint64_t)i, &len))
			;
	}
	assert_in_range(lost, 800, 1200);
	struct shaper_stats st;
	shaper_stats(s, &st);
	assert_int_equal(st.lost, (uint64_t)lost);
	assert_int_equal(st.passed, 10000u - (uint64_t)lost);
	shaper_free(s);
}

static void test_bounded(void **state)
{
	(void)state;
	struct shaper_config c = { .rate = 1000 };
	struct shaper *s = shaper_new(&c, 1);
	size_t n = 0;
	while (shaper_push(s, pkt, sizeof(pkt), 0) == SHAPER_QUEUED)
		n++;
	assert_int_equal(n, SHAPER_MAX_QUEUE / sizeof(pkt));
	assert_true(shaper_queued_bytes(s) <= SHAPER_MAX_QUEUE);
	struct shaper_stats st;
	shaper_stats(s, &st);
	assert_int_equal(st.full, 1);
	shaper_free(s); /* frees what is queued */
}

static void test_active(void **state)
{
	(void)state;
	struct shaper_config c = { 0 };
	assert_false(shaper_active(&c));
	c.loss_ppm = 1;
	assert_true(shaper_active(&c));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_delay_only), cmocka_unit_test(test_rate),
		cmocka_unit_test(test_order_kept), cmocka_unit_test(test_loss),
		cmocka_unit_test(test_bounded),    cmocka_unit_test(test_active),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
