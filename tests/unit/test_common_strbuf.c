/* The growable byte string: growth, the NUL after every step, printf, the
 * cap, allocation failures and the error that sticks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

/* Under AddressSanitizer a request too large to allocate fails the way it
 * does in libc (NULL) instead of ending the test. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

static void assert_holds(const struct strbuf *b, const char *want, size_t len)
{
	assert_int_equal(b->len, len);
	assert_memory_equal(b->p, want, len);
	assert_int_equal(b->p[len], '\0');
}

static void test_empty(void **state)
{
	(void)state;
	struct strbuf b;
	strbuf_init(&b, 0);
	/* A string before anything is allocated. */
	assert_non_null(b.p);
	assert_string_equal(b.p, "");
	assert_int_equal(b.cap, 0);
	assert_int_equal(strbuf_append(&b, NULL, 0), 0);
	assert_int_equal(strbuf_append_str(&b, ""), 0);
	assert_holds(&b, "", 0);
	strbuf_reset(&b);
	assert_holds(&b, "", 0);
	strbuf_free(&b);
	assert_string_equal(b.p, "");
	/* Detached, it is still an allocated string. */
	size_t len = 1;
	char *s = strbuf_detach(&b, &len);
	assert_non_null(s);
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	free(s);
}

static void test_growth(void **state)
{
	(void)state;
	struct strbuf b;
	strbuf_init(&b, 0);
	char want[10000];
	size_t n = 0;
	size_t caps = 0, last_cap = 0;
	for (int i = 0; n + 7 < sizeof(want); i++) {
		/* Bytes, NULs among them, and strings. */
		if (i % 2) {
			char chunk[3] = { (char)('a' + i % 26), '\0', 'z' };
			assert_int_equal(strbuf_append(&b, chunk, sizeof(chunk)), 0);
			memcpy(want + n, chunk, sizeof(chunk));
			n += sizeof(chunk);
		} else {
			assert_int_equal(strbuf_append_str(&b, "line\n"), 0);
			memcpy(want + n, "line\n", 5);
			n += 5;
		}
		assert_holds(&b, want, n);
		assert_true(b.cap > b.len);
		if (b.cap != last_cap) {
			caps++;
			last_cap = b.cap;
		}
	}
	/* It doubles: few reallocations for many appends. */
	assert_true(caps <= 10);
	/* Reserved room is used without another allocation. */
	assert_int_equal(strbuf_reserve(&b, 5000), 0);
	char *p = b.p;
	size_t cap = b.cap;
	assert_true(cap >= b.len + 5001);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(strbuf_append(&b, "12345", 5), 0);
	assert_ptr_equal(b.p, p);
	assert_int_equal(b.cap, cap);
	/* Reset keeps the allocation. */
	strbuf_reset(&b);
	assert_holds(&b, "", 0);
	assert_ptr_equal(b.p, p);
	assert_int_equal(strbuf_append_str(&b, "again"), 0);
	assert_holds(&b, "again", 5);
	size_t len;
	char *s = strbuf_detach(&b, &len);
	assert_ptr_equal(s, p);
	assert_int_equal(len, 5);
	assert_string_equal(s, "again");
	free(s);
	assert_holds(&b, "", 0);
	assert_int_equal(b.cap, 0);
	strbuf_free(&b);
}

static void test_printf(void **state)
{
	(void)state;
	struct strbuf b;
	strbuf_init(&b, 0);
	assert_int_equal(strbuf_printf(&b, "%d %s", 42, "things"), 0);
	assert_holds(&b, "42 things", 9);
	/* Longer than the room there is: the second try after growing. */
	char big[3000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(strbuf_printf(&b, "[%s]", big), 0);
	assert_int_equal(b.len, 9 + 2 + sizeof(big) - 1);
	assert_int_equal(memcmp(b.p, "42 things[xxx", 13), 0);
	assert_int_equal(b.p[b.len - 1], ']');
	assert_int_equal(b.p[b.len], '\0');
	/* Many small ones, checked against snprintf. */
	strbuf_reset(&b);
	char want[4096] = "";
	size_t n = 0;
	for (unsigned i = 0; i < 200; i++) {
		n += (size_t)snprintf(want + n, sizeof(want) - n, "%u,", i * 7919u);
		assert_int_equal(strbuf_printf(&b, "%u,", i * 7919u), 0);
		assert_holds(&b, want, n);
	}
	/* Nothing at all. */
	assert_int_equal(strbuf_printf(&b, "%s", ""), 0);
	assert_holds(&b, want, n);
	strbuf_free(&b);

	/* Into a buffer never allocated. */
	strbuf_init(&b, 0);
	assert_int_equal(strbuf_printf(&b, "%s", "first"), 0);
	assert_holds(&b, "first", 5);
	strbuf_free(&b);
}

static void test_cap(void **state)
{
	(void)state;
	struct strbuf b;
	strbuf_init(&b, 10);
	assert_int_equal(strbuf_append_str(&b, "abc"), 0);
	/* The allocation stays within the cap. */
	assert_true(b.cap <= 11);
	/* A printf over the cap, after its first try wrote into the room. */
	assert_int_equal(strbuf_printf(&b, "%s", "0123456789"), -E2BIG);
	assert_holds(&b, "abc", 3);
	assert_int_equal(b.err, -E2BIG);
	/* The error sticks, even for what would fit. */
	assert_int_equal(strbuf_append_str(&b, "d"), -E2BIG);
	assert_int_equal(strbuf_printf(&b, "d"), -E2BIG);
	assert_int_equal(strbuf_reserve(&b, 0), -E2BIG);
	assert_holds(&b, "abc", 3);
	/* A detached buffer in error gives nothing. */
	size_t len = 1;
	assert_null(strbuf_detach(&b, &len));
	assert_int_equal(len, 0);
	assert_int_equal(b.err, 0);
	assert_int_equal(b.max, 10);

	/* Up to the cap exactly, then one byte more. */
	assert_int_equal(strbuf_append_str(&b, "0123456"), 0);
	assert_int_equal(strbuf_printf(&b, "%d", 789), 0);
	assert_holds(&b, "0123456789", 10);
	assert_int_equal(strbuf_append(&b, "x", 1), -E2BIG);
	assert_holds(&b, "0123456789", 10);
	/* Reset clears the error. */
	strbuf_reset(&b);
	assert_int_equal(b.err, 0);
	assert_int_equal(strbuf_append(&b, "0123456789", 10), 0);
	assert_holds(&b, "0123456789", 10);
	/* A size that would wrap around is over the cap, not a small one. */
	strbuf_reset(&b);
	assert_int_equal(strbuf_append_str(&b, "a"), 0);
	assert_int_equal(strbuf_reserve(&b, SIZE_MAX), -E2BIG);
	strbuf_free(&b);

	/* The largest cap there is. */
	strbuf_init(&b, SIZE_MAX);
	assert_int_equal(strbuf_append_str(&b, "ok"), 0);
	assert_holds(&b, "ok", 2);
	strbuf_free(&b);
}

static void test_enomem(void **state)
{
	(void)state;
	struct strbuf b;
	strbuf_init(&b, 0);
	assert_int_equal(strbuf_append_str(&b, "kept"), 0);
	/* More than a size_t can count. */
	assert_int_equal(strbuf_reserve(&b, SIZE_MAX - 2), -ENOMEM);
	assert_int_equal(b.err, -ENOMEM);
	assert_holds(&b, "kept", 4);
	assert_int_equal(strbuf_append_str(&b, "more"), -ENOMEM);
	assert_int_equal(strbuf_printf(&b, "%s", "more"), -ENOMEM);
	assert_holds(&b, "kept", 4);
	strbuf_reset(&b);
	assert_int_equal(strbuf_append_str(&b, "fresh"), 0);
	assert_holds(&b, "fresh", 5);
	/* More than realloc can give. */
	assert_int_equal(strbuf_reserve(&b, SIZE_MAX / 2), -ENOMEM);
	assert_holds(&b, "fresh", 5);
	assert_null(strbuf_detach(&b, NULL));
	assert_holds(&b, "", 0);
	/* Likewise before the first allocation. */
	assert_int_equal(strbuf_reserve(&b, SIZE_MAX / 2), -ENOMEM);
	assert_holds(&b, "", 0);
	assert_int_equal(b.cap, 0);
	strbuf_free(&b);
	assert_int_equal(b.err, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),  cmocka_unit_test(test_growth),
		cmocka_unit_test(test_printf), cmocka_unit_test(test_cap),
		cmocka_unit_test(test_enomem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
