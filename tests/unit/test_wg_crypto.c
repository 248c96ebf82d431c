/* Known-answer tests for the WireGuard primitives: every implementation
 * behind a choice (libsodium and OpenSSL) must pass the same vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "wg/crypto.h"

static size_t unhex(uint8_t *out, size_t cap, const char *hex)
{
	size_t n = strlen(hex) / 2;

	assert_true(n <= cap);
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

#define assert_hex(buf, len, hex)                                                                  \
	do {                                                                                       \
		uint8_t want_[512];                                                                \
		size_t n_ = unhex(want_, sizeof(want_), hex);                                      \
		assert_int_equal(n_, (len));                                                       \
		assert_memory_equal((buf), want_, n_);                                             \
	} while (0)

static int setup(void **state)
{
	(void)state;
	return wg_crypto_init() ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	wg_crypto_thread_cleanup();
	return 0;
}

typedef bool (*dh_fn)(uint8_t *, const uint8_t *, const uint8_t *);
typedef bool (*base_fn)(uint8_t *, const uint8_t *);

/* RFC 7748 5.2 and 6.1. */
static void test_x25519_rfc7748(void **state)
{
	static const struct {
		const char *k, *u, *out;
	} v[] = {
		{ "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
		  "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
		  "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552" },
		{ "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
		  "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
		  "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957" },
	};
	dh_fn impls[] = { wg_crypto__x25519_sodium, wg_crypto__x25519_openssl, wg_x25519 };
	base_fn bases[] = { wg_crypto__x25519_base_sodium, wg_crypto__x25519_base_openssl,
			    wg_x25519_public };
	uint8_t k[32], u[32], out[32], a[32], b[32];

	(void)state;
	for (size_t impl = 0; impl < 3; impl++) {
		for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
			unhex(k, 32, v[i].k);
			unhex(u, 32, v[i].u);
			assert_true(impls[impl](out, k, u));
			assert_hex(out, 32, v[i].out);
		}
		/* 6.1: Alice and Bob. */
		unhex(a, 32, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
		unhex(b, 32, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
		assert_true(bases[impl](out, a));
		assert_hex(out, 32,
			   "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
		assert_true(bases[impl](u, b));
		assert_hex(u, 32,
			   "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
		assert_true(impls[impl](out, a, u));
		assert_hex(out, 32,
			   "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
	}
}

static void test_x25519_low_order_rejected(void **state)
{
	uint8_t sk[32], zero[32] = { 0 }, out[32];
	/* A point of order 8 (from the small-subgroup list of Curve25519). */
	uint8_t low[32];

	(void)state;
	unhex(low, 32, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
	wg_x25519_generate_private(sk);
	assert_false(wg_x25519(out, sk, zero));
	assert_memory_equal(out, zero, 32);
	assert_false(wg_crypto__x25519_sodium(out, sk, low));
	assert_false(wg_crypto__x25519_openssl(out, sk, low));
}

static void test_x25519_keypair(void **state)
{
	uint8_t a_sk[32], a_pk[32], b_sk[32], b_pk[32], s1[32], s2[32];

	(void)state;
	wg_x25519_keypair(a_sk, a_pk);
	wg_x25519_keypair(b_sk, b_pk);
	/* Clamped. */
	assert_int_equal(a_sk[0] & 7, 0);
	assert_int_equal(a_sk[31] & 0xc0, 0x40);
	assert_true(wg_x25519(s1, a_sk, b_pk));
	assert_true(wg_x25519(s2, b_sk, a_pk));
	assert_memory_equal(s1, s2, 32);
}

static const char sunscreen[] =
	"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
	"the future, sunscreen would be it.";

typedef void (*enc_nonce_fn)(uint8_t *, const uint8_t *, size_t, const uint8_t *, size_t,
			     const uint8_t *, const uint8_t *);
typedef bool (*dec_nonce_fn)(uint8_t *, const uint8_t *, size_t, const uint8_t *, size_t,
			     const uint8_t *, const uint8_t *);

/* RFC 8439 2.8.2 on both implementations (its nonce is not a WireGuard
 * counter nonce, hence the nonce-taking internals). */
static void test_aead_rfc8439(void **state)
{
	enc_nonce_fn enc[] = { wg_crypto__aead_encrypt_nonce_sodium,
			       wg_crypto__aead_encrypt_nonce_openssl };
	dec_nonce_fn dec[] = { wg_crypto__aead_decrypt_nonce_sodium,
			       wg_crypto__aead_decrypt_nonce_openssl };
	uint8_t key[32], nonce[12], ad[12], out[200], back[200];
	size_t len = sizeof(sunscreen) - 1;

	(void)state;
	unhex(key, 32, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
	unhex(nonce, 12, "070000004041424344454647");
	unhex(ad, 12, "50515253c0c1c2c3c4c5c6c7");
	for (size_t i = 0; i < 2; i++) {
		enc[i](out, (const uint8_t *)sunscreen, len, ad, 12, nonce, key);
		assert_hex(out, len + 16,
			   "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
			   "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
			   "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
			   "3ff4def08e4b7a9de576d26586cec64b6116"
			   "1ae10b594f09e26a7e902ecbd0600691");
		assert_true(dec[i](back, out, len + 16, ad, 12, nonce, key));
		assert_memory_equal(back, sunscreen, len);
		/* Tampered ciphertext, tag, AD: all rejected. */
		out[3] ^= 1;
		assert_false(dec[i](back, out, len + 16, ad, 12, nonce, key));
		out[3] ^= 1;
		out[len + 15] ^= 0x80;
		assert_false(dec[i](back, out, len + 16, ad, 12, nonce, key));
		out[len + 15] ^= 0x80;
		ad[0] ^= 1;
		assert_false(dec[i](back, out, len + 16, ad, 12, nonce, key));
		ad[0] ^= 1;
		assert_false(dec[i](back, out, 15, ad, 12, nonce, key));
	}
}

/* The WireGuard nonce is 4 zero bytes || LE64 counter. */
static void test_aead_counter_nonce(void **state)
{
	uint8_t key[32], nonce[12] = { 0 }, a[1500], b[1500];
	static const uint8_t msg[1400] = { 1, 2, 3 };
	const uint64_t counter = 0x0807060504030201ULL;
	size_t sizes[] = { 0, 1, 12, 32, 1023, 1024, 1400 };

	(void)state;
	wg_random(key, 32);
	unhex(nonce, 12, "000000000102030405060708");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		wg_crypto__aead_encrypt_nonce_sodium(a, msg, n, NULL, 0, nonce, key);
		wg_aead_encrypt(b, msg, n, NULL, 0, counter, key);
		assert_memory_equal(a, b, n + 16);
		wg_crypto__aead_encrypt_sodium(b, msg, n, NULL, 0, counter, key);
		assert_memory_equal(a, b, n + 16);
		wg_crypto__aead_encrypt_openssl(b, msg, n, NULL, 0, counter, key);
		assert_memory_equal(a, b, n + 16);
		assert_true(wg_aead_decrypt(b, a, n + 16, NULL, 0, counter, key));
		assert_memory_equal(b, msg, n);
		assert_false(wg_aead_decrypt(b, a, n + 16, NULL, 0, counter + 1, key));
	}
}

/* In place, as the transport path works: dst == src. Both sizes around
 * the sodium/OpenSSL switch. */
static void test_aead_in_place(void **state)
{
	uint8_t key[32], buf[1500 + 16], orig[1500], ad[16];
	size_t sizes[] = { 0, 100, 1023, 1024, 1420, 1500 };

	(void)state;
	wg_random(key, 32);
	wg_random(ad, sizeof(ad));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		wg_random(orig, n);
		memcpy(buf, orig, n);
		wg_aead_encrypt(buf, buf, n, ad, sizeof(ad), 7, key);
		assert_true(n == 0 || memcmp(buf, orig, n) != 0);
		assert_true(wg_aead_decrypt(buf, buf, n + 16, ad, sizeof(ad), 7, key));
		assert_memory_equal(buf, orig, n);
		/* In place on both implementations explicitly. */
		wg_crypto__aead_encrypt_openssl(buf, buf, n, NULL, 0, 9, key);
		assert_true(wg_crypto__aead_decrypt_sodium(buf, buf, n + 16, NULL, 0, 9, key));
		assert_memory_equal(buf, orig, n);
		wg_crypto__aead_encrypt_sodium(buf, buf, n, NULL, 0, 9, key);
		assert_true(wg_crypto__aead_decrypt_openssl(buf, buf, n + 16, NULL, 0, 9, key));
		assert_memory_equal(buf, orig, n);
		/* Tamper. */
		wg_aead_encrypt(buf, buf, n, NULL, 0, 9, key);
		buf[n] ^= 1;
		assert_false(wg_aead_decrypt(buf, buf, n + 16, NULL, 0, 9, key));
	}
}

/* draft-irtf-cfrg-xchacha-03 A.3.1. */
static void test_xaead_vector(void **state)
{
	uint8_t key[32], nonce[24], ad[12], out[200], back[200];
	size_t len = sizeof(sunscreen) - 1;

	(void)state;
	unhex(key, 32, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
	unhex(nonce, 24, "404142434445464748494a4b4c4d4e4f5051525354555657");
	unhex(ad, 12, "50515253c0c1c2c3c4c5c6c7");
	wg_xaead_encrypt(out, (const uint8_t *)sunscreen, len, ad, 12, nonce, key);
	assert_hex(out, len + 16,
		   "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
		   "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
		   "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c9"
		   "7637da9768812f615c68b13b52ec0875924c1c7987947deafd8780acf49");
	assert_true(wg_xaead_decrypt(back, out, len + 16, ad, 12, nonce, key));
	assert_memory_equal(back, sunscreen, len);
	out[0] ^= 1;
	assert_false(wg_xaead_decrypt(back, out, len + 16, ad, 12, nonce, key));
	out[0] ^= 1;
	nonce[23] ^= 1;
	assert_false(wg_xaead_decrypt(back, out, len + 16, ad, 12, nonce, key));
}

/* BLAKE2s-256 (RFC 7693 appendix B "abc"; empty string), keyed BLAKE2s
 * (BLAKE2 KAT, key 00..1f, empty input) and 16-byte keyed outputs checked
 * against Python's hashlib.blake2s, an independent implementation. */
static void test_blake2s(void **state)
{
	uint8_t out[32], key[32], in[100];

	(void)state;
	wg_hash(out, (const uint8_t *)"", 0, NULL, 0);
	assert_hex(out, 32, "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9");
	wg_hash(out, (const uint8_t *)"abc", 3, NULL, 0);
	assert_hex(out, 32, "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
	wg_hash(out, (const uint8_t *)"a", 1, (const uint8_t *)"bc", 2);
	assert_hex(out, 32, "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");

	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 100; i++)
		in[i] = (uint8_t)i;
	/* hashlib.blake2s(bytes(range(100)), key=bytes(range(32)), digest_size=16) */
	wg_mac(out, key, 32, in, 100);
	assert_hex(out, 16, "0b67d33f8b859c3157fbabd9e6e47ed0");
	/* hashlib.blake2s(b"wireguard cookie", key=bytes(range(16)), digest_size=16) */
	wg_mac(out, key, 16, (const uint8_t *)"wireguard cookie", 16);
	assert_hex(out, 16, "0530035f249c8638c091e170ccd0b8e7");
	/* The mac1 key derivation: HASH("mac1----" || RFC 7748 Alice's public). */
	unhex(key, 32, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
	wg_hash(out, (const uint8_t *)"mac1----", 8, key, 32);
	assert_hex(out, 32, "0ec72453412f9befa2f799ea837d0b88429321711dd01f9025163123bd1905be");
}

/* wireguard-go device/kdf_test.go TestKDF, and HMAC against Python's hmac
 * module with hashlib.blake2s. */
static void test_hmac_kdf(void **state)
{
	static const struct {
		const char *key, *input, *t0, *t1, *t2;
	} v[] = {
		{ "746573742d6b6579", "746573742d696e707574",
		  "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
		  "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
		  "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24" },
		{ "776972656775617264", "776972656775617264",
		  "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
		  "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
		  "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160" },
		{ "", "", "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
		  "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
		  "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e" },
	};
	uint8_t key[64], input[64], t[3][32], h[32];

	(void)state;
	wg_hmac(h, (const uint8_t *)"test-key", 8, (const uint8_t *)"test-input", 10);
	assert_hex(h, 32, "ed378e02e152b574e0d9e01fb029a7066c3cc687917c28bf9dfe5b042769fa46");
	/* A key of a whole block and a multi-block input; an empty input.
	 * hmac.new(bytes(range(64)), bytes(range(200)), hashlib.blake2s) and
	 * hmac.new(bytes(range(32)), b"", hashlib.blake2s). */
	{
		uint8_t k64[64], in200[200], h2[32];

		for (int i = 0; i < 200; i++)
			in200[i] = (uint8_t)i;
		memcpy(k64, in200, 64);
		wg_hmac(h, k64, 64, in200, 200);
		assert_hex(h, 32,
			   "690ee478866a3698f0ed2e87e8b25fcb63e56f6c2e6baa69acec75b6d645d1ae");
		wg_hmac(h, k64, 32, NULL, 0);
		assert_hex(h, 32,
			   "e2641d24dfa8dd89e8cb77f1cdc77d8c006e5bebdfc4d6a3a3a6f8d5b7586fb0");
		/* A key longer than a block is hashed first:
		 * hmac.new(bytes(range(100)), b"abc", hashlib.blake2s). */
		wg_hmac(h, in200, 100, (const uint8_t *)"abc", 3);
		assert_hex(h, 32,
			   "c1b751501db12b753069a918627b623179be55c8cc7ca5c4e14bdf32274ac656");
		/* Output aliasing the input, as the KDF does. */
		memcpy(h, in200, 32);
		wg_hmac(h, k64, 64, h, 32);
		wg_hmac(h2, k64, 64, in200, 32);
		assert_memory_equal(h, h2, 32);
	}

	/* wireguard-go's "t0" is KDF's first output (its T1 in the paper). */
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t kl = unhex(key, sizeof(key), v[i].key);
		size_t il = unhex(input, sizeof(input), v[i].input);

		for (int n = 1; n <= 3; n++) {
			uint8_t *outs[3] = { t[0], t[1], t[2] };

			memset(t, 0, sizeof(t));
			wg_crypto__kdf(outs, n, key, kl, input, il);
			assert_hex(t[0], 32, v[i].t0);
			if (n >= 2)
				assert_hex(t[1], 32, v[i].t1);
			if (n >= 3)
				assert_hex(t[2], 32, v[i].t2);
		}
	}

	/* The public KDFs (32-byte key) agree with the generic one, also when
	 * the output aliases the key as the handshake does. */
	{
		uint8_t ck[32], a[32], b[32], c[32], g[3][32];
		uint8_t *outs[3] = { g[0], g[1], g[2] };

		wg_random(ck, 32);
		wg_crypto__kdf(outs, 3, ck, 32, input, 9);
		wg_kdf3(a, b, c, ck, input, 9);
		assert_memory_equal(a, g[0], 32);
		assert_memory_equal(b, g[1], 32);
		assert_memory_equal(c, g[2], 32);
		wg_kdf2(a, b, ck, input, 9);
		assert_memory_equal(a, g[0], 32);
		assert_memory_equal(b, g[1], 32);
		wg_kdf1(ck, ck, input, 9);
		assert_memory_equal(ck, g[0], 32);
	}
}

/* No key stays in the thread's reusable contexts once it should be gone:
 * the MAC context forgets it after every call, the AEAD context (the
 * OpenSSL path, 1024 bytes and more) on wg_crypto_forget_keys(). Probed by
 * what the contexts compute without being given a key. */
static void test_contexts_forget_keys(void **state)
{
	uint8_t key[32], zero[32], buf[1420 + 16], want[16], want_zero[16], got[16];

	(void)state;
	wg_random(key, sizeof(key));
	memset(zero, 0, sizeof(zero));
	/* Tags of an empty message, counter 0 (libsodium: no context). */
	wg_crypto__aead_encrypt_sodium(want, NULL, 0, NULL, 0, 0, key);
	wg_crypto__aead_encrypt_sodium(want_zero, NULL, 0, NULL, 0, 0, zero);

	memset(buf, 0x5a, 1420);
	wg_aead_encrypt(buf, buf, 1420, NULL, 0, 7, key);
	wg_crypto__aead_context_tag(got);
	assert_memory_equal(got, want, 16); /* the probe sees a held key */
	wg_crypto_forget_keys();
	wg_crypto__aead_context_tag(got);
	assert_memory_not_equal(got, want, 16);
	assert_memory_equal(got, want_zero, 16);

	/* Decryption, successful or not, leaves the key the same way. */
	assert_true(wg_aead_decrypt(buf, buf, 1420 + 16, NULL, 0, 7, key));
	wg_crypto_forget_keys();
	wg_crypto__aead_context_tag(got);
	assert_memory_equal(got, want_zero, 16);
	buf[3] ^= 1;
	assert_false(wg_aead_decrypt(buf, buf, 1420 + 16, NULL, 0, 7, key));
	wg_crypto_forget_keys();
	wg_crypto__aead_context_tag(got);
	assert_memory_equal(got, want_zero, 16);

	/* The MAC context, right after each call. */
	wg_mac(want, key, 32, (const uint8_t *)"probe", 5);
	wg_mac(got, key, 32, buf, 116);
	if (wg_crypto__mac_context_mac(got, (const uint8_t *)"probe", 5))
		assert_memory_not_equal(got, want, 16);
	wg_mac(want, key, 16, (const uint8_t *)"probe", 5);
	wg_mac(got, key, 16, buf, 60);
	if (wg_crypto__mac_context_mac(got, (const uint8_t *)"probe", 5))
		assert_memory_not_equal(got, want, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_x25519_rfc7748),
		cmocka_unit_test(test_x25519_low_order_rejected),
		cmocka_unit_test(test_x25519_keypair),
		cmocka_unit_test(test_aead_rfc8439),
		cmocka_unit_test(test_aead_counter_nonce),
		cmocka_unit_test(test_aead_in_place),
		cmocka_unit_test(test_xaead_vector),
		cmocka_unit_test(test_blake2s),
		cmocka_unit_test(test_hmac_kdf),
		cmocka_unit_test(test_contexts_forget_keys),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
