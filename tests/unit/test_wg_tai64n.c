/* TAI64N encoding, whitening and ordering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wg/tai64n.h"

static void test_encoding(void **state)
{
	uint8_t t[12];
	struct timespec ts = { .tv_sec = 0, .tv_nsec = 0 };

	(void)state;
	/* The epoch: label 2^62 + 10. */
	wg_tai64n_from_timespec(t, &ts);
	assert_memory_equal(t, "\x40\x00\x00\x00\x00\x00\x00\x0a\x00\x00\x00\x00", 12);
	/* 1700000000 s = 0x6553f100; 0x12345678 ns whitened to 0x12000000. */
	ts.tv_sec = 1700000000;
	ts.tv_nsec = 0x12345678;
	wg_tai64n_from_timespec(t, &ts);
	assert_memory_equal(t, "\x40\x00\x00\x00\x65\x53\xf1\x0a\x12\x00\x00\x00", 12);
	/* 999999999 ns rounds down to 0x3b000000. */
	ts.tv_nsec = 999999999;
	wg_tai64n_from_timespec(t, &ts);
	assert_memory_equal(t + 8, "\x3b\x00\x00\x00", 4);
}

static void test_whitening_and_order(void **state)
{
	uint8_t a[12], b[12];
	struct timespec ts = { .tv_sec = 1700000000, .tv_nsec = 1000 };

	(void)state;
	wg_tai64n_from_timespec(a, &ts);
	/* Within one 2^24 ns step: the same stamp, so not newer. */
	ts.tv_nsec = WG_TAI64N_WHITENER - 1;
	wg_tai64n_from_timespec(b, &ts);
	assert_memory_equal(a, b, 12);
	assert_false(wg_tai64n_is_newer(b, a));
	/* Next step: newer. A 20 ms gap (the flood limit) always crosses one. */
	ts.tv_nsec = 1000 + 20000000;
	wg_tai64n_from_timespec(b, &ts);
	assert_true(wg_tai64n_is_newer(b, a));
	assert_false(wg_tai64n_is_newer(a, b));
	/* Seconds dominate nanoseconds. */
	ts.tv_sec++;
	ts.tv_nsec = 0;
	wg_tai64n_from_timespec(a, &ts);
	assert_true(wg_tai64n_is_newer(a, b));
	/* now() is after 2020. */
	wg_tai64n_now(a);
	ts.tv_sec = 1577836800;
	wg_tai64n_from_timespec(b, &ts);
	assert_true(wg_tai64n_is_newer(a, b));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encoding),
		cmocka_unit_test(test_whitening_and_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
