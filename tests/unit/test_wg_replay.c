/* Replay window as a table of (counter, expected) rows, in the spirit of the
 * Linux module's selftest/counter.c: in order, out of order, duplicates, far
 * jumps, the edge of the window and REJECT_AFTER_MESSAGES. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "wg/replay.h"

#define W ((uint64_t)WG_REPLAY_WINDOW)
#define LIM (W + 1)
#define RAM WG_REJECT_AFTER_MESSAGES

struct row {
	uint64_t counter;
	bool expect;
};

static void run_table(const struct row *rows, size_t n)
{
	struct wg_replay r;
	wg_replay_init(&r);
	for (size_t i = 0; i < n; i++) {
		bool pre = wg_replay_check(&r, rows[i].counter);
		bool got = wg_replay_update(&r, rows[i].counter);
		if (got != rows[i].expect)
			fail_msg("row %zu: counter %llu expected %d got %d", i + 1,
				 (unsigned long long)rows[i].counter, rows[i].expect, got);
		/* The read-only check never rejects what update accepts. */
		if (got && !pre)
			fail_msg("row %zu: check rejected an acceptable counter", i + 1);
	}
}

static void test_table(void **state)
{
	(void)state;
	static const struct row rows[] = {
		{ 0, true },  /* first packet */
		{ 1, true },  /* in order */
		{ 1, false }, /* duplicate */
		{ 9, true },  /* small jump */
		{ 8, true },  /* out of order, inside */
		{ 7, true },
		{ 7, false },  /* duplicate out of order */
		{ LIM, true }, /* jump by exactly the window + 1 */
		{ LIM - 1, true },
		{ LIM - 1, false },
		{ LIM - 2, true },
		{ 2, true }, /* oldest still in the window */
		{ 2, false },
		{ LIM + 16, true },
		{ 3, false }, /* fell out of the window */
		{ LIM + 16, false },
		{ LIM * 4, true },             /* far jump: the whole ring is cleared */
		{ LIM * 4 - (LIM - 1), true }, /* exactly WINDOW behind: accepted */
		{ 10, false },
		{ LIM * 4 - LIM, false }, /* WINDOW + 1 behind */
		{ LIM * 4 - (LIM + 1), false },
		{ LIM * 4 - (LIM - 2), true },
		{ LIM * 4 + 1 - LIM, false },
		{ 0, false },
		{ RAM, false },    /* limit itself is never valid */
		{ RAM - 1, true }, /* last valid counter */
		{ RAM, false },
		{ RAM - 1, false },
		{ RAM - 2, true },
		{ RAM + 1, false },
		{ RAM + 2, false },
		{ RAM - 2, false },
		{ RAM - 3, true },
		{ UINT64_MAX, false }, /* would wrap the +1 shift */
		{ 0, false },
	};
	run_table(rows, sizeof(rows) / sizeof(rows[0]));
}

/* Fill the window in order, then the lowest counter still fits. */
static void test_bulk_forward(void **state)
{
	(void)state;
	struct wg_replay r;
	wg_replay_init(&r);
	for (uint64_t i = 1; i <= W; i++)
		assert_true(wg_replay_update(&r, i));
	assert_true(wg_replay_update(&r, 0));
	assert_false(wg_replay_update(&r, 0));

	wg_replay_init(&r);
	for (uint64_t i = 2; i <= W + 1; i++)
		assert_true(wg_replay_update(&r, i));
	assert_true(wg_replay_update(&r, 1));
	assert_false(wg_replay_update(&r, 0)); /* W + 1 behind */
}

/* Fill it backwards: every row is out of order. */
static void test_bulk_backward(void **state)
{
	(void)state;
	struct wg_replay r;
	wg_replay_init(&r);
	for (uint64_t i = W + 1; i > 0; i--)
		assert_true(wg_replay_update(&r, i));

	wg_replay_init(&r);
	for (uint64_t i = W + 2; i > 1; i--)
		assert_true(wg_replay_update(&r, i));
	assert_false(wg_replay_update(&r, 0));

	wg_replay_init(&r);
	for (uint64_t i = W; i > 0; i--)
		assert_true(wg_replay_update(&r, i));
	assert_true(wg_replay_update(&r, W + 1));
	assert_false(wg_replay_update(&r, 0));

	wg_replay_init(&r);
	for (uint64_t i = W; i > 0; i--)
		assert_true(wg_replay_update(&r, i));
	assert_true(wg_replay_update(&r, 0));
	assert_true(wg_replay_update(&r, W + 1));
}

/* Sliding by less than the ring must clear the recycled words: a counter
 * that maps to a reused bit position is new, not a replay. */
static void test_ring_reuse(void **state)
{
	(void)state;
	struct wg_replay r;
	wg_replay_init(&r);
	for (uint64_t i = 0; i < 3 * WG_REPLAY_BITS_TOTAL; i += 7) {
		assert_true(wg_replay_update(&r, i));
		assert_false(wg_replay_check(&r, i));
	}
	/* Every counter in a long in-order run is new exactly once. */
	wg_replay_init(&r);
	for (uint64_t i = 0; i < 5 * WG_REPLAY_BITS_TOTAL; i++) {
		assert_true(wg_replay_update(&r, i));
		if (i >= 100)
			assert_false(wg_replay_update(&r, i - 100));
	}
	assert_int_equal(wg_replay_next(&r), 5 * WG_REPLAY_BITS_TOTAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_bulk_forward),
		cmocka_unit_test(test_bulk_backward),
		cmocka_unit_test(test_ring_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
