/* Parent proxy handshakes (mitm/parent.h): what is sent for HTTP CONNECT
 * and SOCKS5, with and without credentials, for names and addresses; the
 * answers, whole and a byte at a time; where the target's bytes begin;
 * failures and what they say. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mitm/parent.h"

static struct parent_hs h;

static enum parent_result feed(const void *p, size_t n, size_t *used, uint8_t *out, size_t *outlen)
{
	return parent_feed(&h, p, n, used, out, outlen);
}

static void test_http(void **state)
{
	(void)state;
	uint8_t out[PARENT_MAX_OUT];
	size_t n;
	assert_int_equal(
		parent_begin(&h, PARENT_HTTP, "www.test", 8443, "alice", "s@cret", out, &n), 0);
	/* base64("alice:s@cret") */
	const char *want = "CONNECT www.test:8443 HTTP/1.1\r\nHost: www.test:8443\r\n"
			   "Proxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n\r\n";
	assert_int_equal(n, strlen(want));
	assert_memory_equal(out, want, n);

	/* A byte at a time, and the target's first bytes right after. */
	const char *ans = "HTTP/1.1 200 Connection established\r\nVia: 1.1 parent\r\n\r\nSSH-2.0";
	size_t head = strlen(ans) - 7, used = 0, outlen = 0;
	for (size_t i = 0; i + 1 < head; i++) {
		assert_int_equal(feed(ans + i, 1, &used, out, &outlen), PARENT_MORE);
		assert_int_equal(used, 1);
	}
	assert_int_equal(feed(ans + head - 1, 8, &used, out, &outlen), PARENT_DONE);
	assert_int_equal(used, 1);
	assert_int_equal(outlen, 0);

	assert_int_equal(parent_begin(&h, PARENT_HTTP, "2001:db8::1", 443, NULL, NULL, out, &n), 0);
	want = "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n";
	assert_memory_equal(out, want, strlen(want));
	const char *e407 =
		"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n";
	assert_int_equal(feed(e407, strlen(e407), &used, out, &outlen), PARENT_FAIL);
	assert_string_equal(h.why, "parent proxy answered 407 Proxy Authentication Required");
	assert_false(h.refused);

	assert_int_equal(parent_begin(&h, PARENT_HTTP, "x.test", 1, NULL, NULL, out, &n), 0);
	const char *e502 = "HTTP/1.0 502 Bad\x01Gateway\r\n\r\n";
	assert_int_equal(feed(e502, strlen(e502), &used, out, &outlen), PARENT_FAIL);
	assert_true(h.refused);
	assert_non_null(strstr(h.why, "502 Bad?Gateway")); /* the parent's words, printable */

	assert_int_equal(parent_begin(&h, PARENT_HTTP, "x.test", 1, NULL, NULL, out, &n), 0);
	assert_int_equal(feed("SSH-2.0-OpenSSH\r\n", 17, &used, out, &outlen), PARENT_FAIL);
	assert_non_null(strstr(h.why, "malformed answer"));

	/* An endless head is cut off. */
	assert_int_equal(parent_begin(&h, PARENT_HTTP, "x.test", 1, NULL, NULL, out, &n), 0);
	assert_int_equal(feed("HTTP/1.1 200 OK\r\n", 17, &used, out, &outlen), PARENT_MORE);
	char line[64];
	memset(line, 'a', sizeof(line));
	memcpy(line, "X-A: ", 5);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	enum parent_result r = PARENT_MORE;
	for (int i = 0; i < 200 && r == PARENT_MORE; i++)
		r = feed(line, sizeof(line), &used, out, &outlen);
	assert_int_equal(r, PARENT_FAIL);
	assert_non_null(strstr(h.why, "larger than 8 KiB"));

	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(parent_begin(&h, PARENT_HTTP, longname, 1, NULL, NULL, out, &n), -1);
}

static void test_socks5(void **state)
{
	(void)state;
	uint8_t out[PARENT_MAX_OUT];
	size_t n, used, outlen;
	/* No credentials, a name. */
	assert_int_equal(parent_begin(&h, PARENT_SOCKS5, "www.test", 443, NULL, NULL, out, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "\x05\x01\x00", 3);
	assert_int_equal(feed("\x05", 1, &used, out, &outlen), PARENT_MORE);
	assert_int_equal(outlen, 0);
	assert_int_equal(feed("\x00", 1, &used, out, &outlen), PARENT_MORE);
	assert_int_equal(outlen, 5 + 8 + 2);
	assert_memory_equal(out, "\x05\x01\x00\x03\x08www.test\x01\xbb", outlen);
	/* A reply with a name as the bound address, then the target's bytes. */
	const uint8_t rep[] = { 5, 0, 0, 3, 3, 'a', 'b', 'c', 0, 80, 'H', 'i' };
	assert_int_equal(feed(rep, 3, &used, out, &outlen), PARENT_MORE);
	assert_int_equal(feed(rep + 3, sizeof(rep) - 3, &used, out, &outlen), PARENT_DONE);
	assert_int_equal(used, sizeof(rep) - 3 - 2);

	/* Credentials, an IPv6 address; the reply IPv4. */
	assert_int_equal(
		parent_begin(&h, PARENT_SOCKS5, "2001:db8::1", 8443, "alice", "s@cret", out, &n),
		0);
	assert_memory_equal(out, "\x05\x02\x02\x00", 4); /* user/password first */
	assert_int_equal(feed("\x05\x02", 2, &used, out, &outlen), PARENT_MORE);
	assert_memory_equal(out,
			    "\x01\x05"
			    "alice\x06s@cret",
			    outlen);
	assert_int_equal(feed("\x01\x00", 2, &used, out, &outlen), PARENT_MORE);
	assert_int_equal(outlen, 4 + 16 + 2);
	assert_memory_equal(out, "\x05\x01\x00\x04\x20\x01\x0d\xb8", 8);
	assert_memory_equal(out + 20, "\x20\xfb", 2);
	const uint8_t ok4[] = { 5, 0, 0, 1, 192, 0, 2, 1, 0x1f, 0x90 };
	assert_int_equal(feed(ok4, sizeof(ok4), &used, out, &outlen), PARENT_DONE);
	assert_int_equal(used, sizeof(ok4));

	/* Failures: credentials refused, connection refused, no method,
	 * bytes past an answer that is not the last. */
	assert_int_equal(parent_begin(&h, PARENT_SOCKS5, "192.0.2.1", 1, "u", "p", out, &n), 0);
	assert_int_equal(feed("\x05\x02", 2, &used, out, &outlen), PARENT_MORE);
	assert_int_equal(feed("\x01\x01", 2, &used, out, &outlen), PARENT_FAIL);
	assert_non_null(strstr(h.why, "refused the credentials"));

	assert_int_equal(parent_begin(&h, PARENT_SOCKS5, "192.0.2.1", 1, NULL, NULL, out, &n), 0);
	assert_int_equal(feed("\x05\x00", 2, &used, out, &outlen), PARENT_MORE);
	assert_memory_equal(out, "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x01", outlen);
	assert_int_equal(feed("\x05\x05\x00\x01\0\0\0\0\0\0", 10, &used, out, &outlen),
			 PARENT_FAIL);
	assert_true(h.refused);
	assert_string_equal(h.why, "parent proxy (SOCKS5): connection refused");

	assert_int_equal(parent_begin(&h, PARENT_SOCKS5, "x.test", 1, NULL, NULL, out, &n), 0);
	assert_int_equal(feed("\x05\xff", 2, &used, out, &outlen), PARENT_FAIL);
	assert_non_null(strstr(h.why, "wants credentials"));

	assert_int_equal(parent_begin(&h, PARENT_SOCKS5, "x.test", 1, NULL, NULL, out, &n), 0);
	assert_int_equal(feed("\x05\x00\x05", 3, &used, out, &outlen), PARENT_FAIL);
	assert_non_null(strstr(h.why, "more than its answer"));

	assert_int_equal(parent_begin(&h, PARENT_SOCKS5, "x.test", 1, NULL, NULL, out, &n), 0);
	assert_int_equal(feed("\x04\x00", 2, &used, out, &outlen), PARENT_FAIL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http),
		cmocka_unit_test(test_socks5),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
