/* Content-Encoding decoding: each coding, lists, truncated and invalid
 * input, the cap. The encoded bodies are made with each library's encoder
 * (flows_testutil.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "flows/decode.h"
#include "tests/unit/flows_testutil.h"

static const char TEXT[] = "<html><body>Hello, decoded world! Hello, decoded world!</body></html>";
#define TEXT_LEN (sizeof(TEXT) - 1)

static void expect(const char *enc, struct flows_test_buf in, size_t cap, enum decode_status want,
		   const void *text, size_t text_len)
{
	uint8_t *out;
	size_t outlen;
	enum decode_status st = decode_body(enc, in.p, in.len, cap, &out, &outlen);
	if (st != want)
		fail_msg("%s: %s, expected %s", enc ? enc : "(null)", decode_status_name(st),
			 decode_status_name(want));
	assert_int_equal(outlen, text_len);
	if (text_len)
		assert_memory_equal(out, text, text_len);
	else
		assert_null(out);
	free(out);
}

static void test_codings(void **ctx)
{
	(void)ctx;
	struct flows_test_buf raw = { (uint8_t *)TEXT, TEXT_LEN };
	expect(NULL, raw, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect("", raw, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect(" Identity ,", raw, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	assert_true(decode_is_identity(NULL));
	assert_true(decode_is_identity("identity, "));
	assert_false(decode_is_identity("gzip"));
	assert_false(decode_is_identity("compress"));

	struct flows_test_buf gz = flows_test_zlib(TEXT, TEXT_LEN, 15 + 16);
	expect("gzip", gz, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect("x-gzip", gz, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect("GZip", gz, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);

	struct flows_test_buf zl = flows_test_zlib(TEXT, TEXT_LEN, 15);
	expect("deflate", zl, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	struct flows_test_buf rawdef = flows_test_zlib(TEXT, TEXT_LEN, -15);
	expect("deflate", rawdef, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);

	struct flows_test_buf br = flows_test_brotli(TEXT, TEXT_LEN);
	expect("br", br, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	struct flows_test_buf zs = flows_test_zstd(TEXT, TEXT_LEN);
	expect("zstd", zs, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);

	/* Two gzip members are one body; bytes after a stream are ignored. */
	struct flows_test_buf two = { malloc(gz.len * 2 + 3), gz.len * 2 };
	memcpy(two.p, gz.p, gz.len);
	memcpy(two.p + gz.len, gz.p, gz.len);
	uint8_t *out;
	size_t outlen;
	assert_int_equal(decode_body("gzip", two.p, two.len, 1000, &out, &outlen), DECODE_COMPLETE);
	assert_int_equal(outlen, 2 * TEXT_LEN);
	assert_memory_equal(out + TEXT_LEN, TEXT, TEXT_LEN);
	free(out);
	memcpy(two.p + gz.len, "xyz", 3);
	two.len = gz.len + 3;
	expect("gzip", two, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	free(two.p);

	/* Empty bodies decode to nothing, whatever the (known) coding. */
	struct flows_test_buf empty = { NULL, 0 };
	expect("gzip", empty, DECODE_DEFAULT_CAP, DECODE_COMPLETE, "", 0);
	expect("br, zstd", empty, DECODE_DEFAULT_CAP, DECODE_COMPLETE, "", 0);
	expect(NULL, empty, DECODE_DEFAULT_CAP, DECODE_COMPLETE, "", 0);

	free(gz.p);
	free(zl.p);
	free(rawdef.p);
	free(br.p);
	free(zs.p);
}

static void test_lists(void **ctx)
{
	(void)ctx;
	/* "gzip, br": gzip applied first, so br is undone first. */
	struct flows_test_buf gz = flows_test_zlib(TEXT, TEXT_LEN, 15 + 16);
	struct flows_test_buf brgz = flows_test_brotli(gz.p, gz.len);
	expect("gzip, br", brgz, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect("gzip,identity,,\tbr ", brgz, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	/* The other order: br's output is no gzip. */
	uint8_t *out;
	size_t outlen;
	assert_int_equal(decode_body("br, gzip", brgz.p, brgz.len, 1000, &out, &outlen),
			 DECODE_ERROR);
	free(out);

	struct flows_test_buf zs = flows_test_zstd(brgz.p, brgz.len);
	expect("gzip, br, zstd", zs, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);

	/* Unknown codings and over-long lists are not decoded at all. */
	struct flows_test_buf raw = { (uint8_t *)TEXT, TEXT_LEN };
	expect("compress", raw, DECODE_DEFAULT_CAP, DECODE_UNKNOWN, "", 0);
	expect("gzip, x-unknown", gz, DECODE_DEFAULT_CAP, DECODE_UNKNOWN, "", 0);
	expect("gzipx", gz, DECODE_DEFAULT_CAP, DECODE_UNKNOWN, "", 0);
	expect("identity,identity,identity,identity,identity,identity,identity,identity,identity",
	       raw, DECODE_DEFAULT_CAP, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect("gzip,gzip,gzip,gzip,gzip,gzip,gzip,gzip,gzip", gz, DECODE_DEFAULT_CAP,
	       DECODE_UNKNOWN, "", 0);
	/* Eight gzip layers are the most. */
	struct flows_test_buf layers = { malloc(gz.len), gz.len };
	memcpy(layers.p, gz.p, gz.len);
	for (int i = 1; i < DECODE_MAX_CODINGS; i++) {
		struct flows_test_buf next = flows_test_zlib(layers.p, layers.len, 15 + 16);
		free(layers.p);
		layers = next;
	}
	expect("gzip,gzip,gzip,gzip,gzip,gzip,gzip,gzip", layers, DECODE_DEFAULT_CAP,
	       DECODE_COMPLETE, TEXT, TEXT_LEN);
	free(layers.p);
	free(gz.p);
	free(brgz.p);
	free(zs.p);
}

static void test_truncated(void **ctx)
{
	(void)ctx;
	/* Text that compresses badly, over several zstd blocks, so that the
	 * first half of each stream holds some of it. */
	size_t n = 512 * 1024;
	char *big = malloc(n);
	uint32_t x = 12345;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		big[i] = (char)('a' + (x >> 16) % 26);
	}
	struct flows_test_buf enc[4] = { flows_test_zlib(big, n, 15 + 16),
					 flows_test_zlib(big, n, 15), flows_test_brotli(big, n),
					 flows_test_zstd(big, n) };
	const char *names[4] = { "gzip", "deflate", "br", "zstd" };
	for (int i = 0; i < 4; i++) {
		uint8_t *out;
		size_t outlen;
		enum decode_status st = decode_body(names[i], enc[i].p, enc[i].len / 2,
						    DECODE_DEFAULT_CAP, &out, &outlen);
		if (st != DECODE_TRUNCATED)
			fail_msg("%s cut in half: %s", names[i], decode_status_name(st));
		/* What decoded is the start of the body. */
		assert_true(outlen > 0 && outlen < n);
		assert_memory_equal(out, big, outlen);
		free(out);
		/* A stream cut after its first byte. */
		st = decode_body(names[i], enc[i].p, 1, DECODE_DEFAULT_CAP, &out, &outlen);
		assert_int_equal(st, DECODE_TRUNCATED);
		free(out);
		free(enc[i].p);
	}
	free(big);
}

static void test_cap(void **ctx)
{
	(void)ctx;
	/* A zip bomb: 64 MiB of zeros in about 64 KiB. */
	size_t n = 64u << 20;
	uint8_t *zeros = calloc(1, n);
	struct flows_test_buf enc[3] = { flows_test_zlib(zeros, n, 15 + 16),
					 flows_test_brotli(zeros, n), flows_test_zstd(zeros, n) };
	const char *names[3] = { "gzip", "br", "zstd" };
	for (int i = 0; i < 3; i++) {
		assert_true(enc[i].len < 1u << 20);
		uint8_t *out;
		size_t outlen;
		enum decode_status st =
			decode_body(names[i], enc[i].p, enc[i].len, 1u << 20, &out, &outlen);
		assert_int_equal(st, DECODE_CAPPED);
		assert_int_equal(outlen, 1u << 20);
		assert_memory_equal(out, zeros, outlen);
		free(out);
		free(enc[i].p);
	}
	free(zeros);

	/* A cap of exactly the body's size is enough; one less is not. */
	struct flows_test_buf gz = flows_test_zlib(TEXT, TEXT_LEN, 15 + 16);
	expect("gzip", gz, TEXT_LEN, DECODE_COMPLETE, TEXT, TEXT_LEN);
	expect("gzip", gz, TEXT_LEN - 1, DECODE_CAPPED, TEXT, TEXT_LEN - 1);
	expect("gzip", gz, 0, DECODE_CAPPED, "", 0);
	struct flows_test_buf raw = { (uint8_t *)TEXT, TEXT_LEN };
	expect(NULL, raw, 5, DECODE_CAPPED, TEXT, 5);
	/* The cap holds for each stage of a list. */
	struct flows_test_buf brgz = flows_test_brotli(gz.p, gz.len);
	assert_true(gz.len - 1 < TEXT_LEN);
	expect("gzip, br", brgz, gz.len - 1, DECODE_CAPPED, TEXT, gz.len - 1);
	free(gz.p);
	free(brgz.p);
}

static void test_garbage(void **ctx)
{
	(void)ctx;
	uint8_t junk[256];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 151 + 17);
	struct flows_test_buf b = { junk, sizeof(junk) };
	const char *names[] = { "gzip", "deflate", "br", "zstd" };
	for (size_t i = 0; i < 4; i++) {
		uint8_t *out;
		size_t outlen;
		enum decode_status st =
			decode_body(names[i], b.p, b.len, DECODE_DEFAULT_CAP, &out, &outlen);
		if (st != DECODE_ERROR)
			fail_msg("%s of garbage: %s", names[i], decode_status_name(st));
		free(out);
	}
	/* Invalid data after a good start: what decoded before it is kept. */
	struct flows_test_buf gz = flows_test_zlib(TEXT, TEXT_LEN, 15 + 16);
	struct flows_test_buf zs = flows_test_zstd(TEXT, TEXT_LEN);
	uint8_t *bad = malloc(zs.len + 8);
	memcpy(bad, zs.p, zs.len);
	memcpy(bad + zs.len, "garbage!", 8);
	struct flows_test_buf zb = { bad, zs.len + 8 };
	expect("zstd", zb, DECODE_DEFAULT_CAP, DECODE_ERROR, TEXT, TEXT_LEN);
	free(bad);
	/* A gzip trailer with a wrong CRC. */
	gz.p[gz.len - 8] ^= 1;
	uint8_t *out;
	size_t outlen;
	assert_int_equal(decode_body("gzip", gz.p, gz.len, 1000, &out, &outlen), DECODE_ERROR);
	assert_int_equal(outlen, TEXT_LEN);
	free(out);
	free(gz.p);
	free(zs.p);
	assert_string_equal(decode_status_name(DECODE_UNKNOWN), "unknown encoding");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codings),   cmocka_unit_test(test_lists),
		cmocka_unit_test(test_truncated), cmocka_unit_test(test_cap),
		cmocka_unit_test(test_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
