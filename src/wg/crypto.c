/* WireGuard's primitives over libsodium and OpenSSL 3.
 *
 * Choice per primitive, measured on the reference machine (AMD EPYC, AVX2,
 * one core, OpenSSL 3.0.22, libsodium 1.0.18; bench/bench_wg_handshake
 * prints these numbers again on any machine):
 *
 *   X25519 DH          libsodium 17-26k/s  OpenSSL EVP_PKEY 6-10k/s    -> libsodium
 *   X25519 public key  libsodium 18-28k/s  OpenSSL EVP_PKEY 9-20k/s    -> libsodium
 *     (OpenSSL needs two EVP_PKEY objects and a context per operation)
 *   ChaCha20-Poly1305, one packet, key set per call (ns):
 *        0 B  libsodium 225-370   OpenSSL 390-760
 *      256 B  libsodium 640-1130  OpenSSL 770-1520
 *      512 B  libsodium 780-1500  OpenSSL 870-1500
 *     1024 B  libsodium 1350-2200 OpenSSL 1290-2000
 *     1420 B  libsodium 1800-3700 OpenSSL 1375-2770 (1033 MB/s best)
 *     OpenSSL 3.0's EVP carries ~400-500 ns of fixed cost per packet (re-init
 *     with key and nonce, Final, tag ctrl), so it only wins from ~1 KB:
 *     -> libsodium below WG_AEAD_OPENSSL_MIN_LEN, OpenSSL from there. The
 *     "3x faster" figure holds for long buffers, not 1420-byte packets.
 *   XChaCha20-Poly1305: libsodium (OpenSSL has none), ~600 ns for a cookie.
 *   BLAKE2s-256 64 B ~260-500 ns, keyed BLAKE2s-128 (mac1) ~530-950 ns,
 *   KDF2 ~3-4.5 us: OpenSSL (libsodium has no BLAKE2s). HMAC-BLAKE2s is
 *   RFC 2104 here over the BLAKE2s digest, ~0.75-1.15 us, rather than
 *   OpenSSL's EVP_MAC HMAC, ~1.1-1.7 us, whose context keeps key material
 *   between calls (see wg_hmac).
 *   Ranges: the machine was shared with other builds while measuring.
 *
 * Keys left in the per-thread contexts: none by wg_mac (it clears its
 * context's key after each call, a copy of ~10-50 ns) or wg_hmac (no keyed
 * context). The ChaCha20-Poly1305 context keeps the last packet's key until
 * wg_crypto_forget_keys(), which the device calls whenever it frees a
 * keypair: re-keying it with zeros after every packet (~100-250 ns of EVP
 * init) took bench_wg_transport's receive path from 747k to 713k packets/s
 * (fastest chunks, medians of 3), for a key that its keypair holds anyway.
 *
 * The alternatives stay compiled (wg_crypto__*_sodium / _openssl) so the
 * tests check both against the vectors and the benchmark can re-measure.
 */
#include "wg/crypto.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

/* The choices (see the measurements at the top of this file). */
#define WG_X25519_IMPL wg_crypto__x25519_sodium
#define WG_X25519_BASE_IMPL wg_crypto__x25519_base_sodium
#define WG_X25519_IMPL_NAME "libsodium crypto_scalarmult"
#define WG_AEAD_OPENSSL_MIN_LEN 1024
#define WG_AEAD_IMPL_NAME "libsodium below 1024 bytes, OpenSSL EVP from 1024"

/* Algorithms fetched once; read-only afterwards, so shared by all threads. */
static EVP_CIPHER *g_chacha;
static EVP_MD *g_blake2s;
static EVP_MAC *g_blake2smac;
static bool g_initialized;
static pthread_key_t g_tls_key;

/* Per-thread reusable contexts: allocated on a thread's first use, freed by
 * the pthread key destructor at thread exit. */
struct wg_crypto_tls {
	EVP_CIPHER_CTX *aead;
	EVP_MD_CTX *md; /* BLAKE2s-256: wg_hash and wg_hmac */
	EVP_MAC_CTX *mac16;
};
static _Thread_local struct wg_crypto_tls *t_ctx;

static void tls_free(void *p)
{
	struct wg_crypto_tls *t = p;

	if (t == NULL)
		return;
	EVP_CIPHER_CTX_free(t->aead);
	EVP_MD_CTX_free(t->md);
	EVP_MAC_CTX_free(t->mac16);
	free(t);
}

static struct wg_crypto_tls *tls_new(void)
{
	struct wg_crypto_tls *t = calloc(1, sizeof(*t));
	size_t mac_size = WG_MAC_LEN;
	OSSL_PARAM mac16_params[] = {
		OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &mac_size),
		OSSL_PARAM_construct_end(),
	};

	if (t == NULL)
		return NULL;
	t->aead = EVP_CIPHER_CTX_new();
	t->md = EVP_MD_CTX_new();
	t->mac16 = EVP_MAC_CTX_new(g_blake2smac);
	if (t->aead == NULL || t->md == NULL || t->mac16 == NULL)
		goto fail;
	if (!EVP_CipherInit_ex2(t->aead, g_chacha, NULL, NULL, 1, NULL))
		goto fail;
	if (!EVP_MAC_CTX_set_params(t->mac16, mac16_params))
		goto fail;
	return t;
fail:
	tls_free(t);
	return NULL;
}

static struct wg_crypto_tls *tls_get(void)
{
	if (__builtin_expect(t_ctx != NULL, 1))
		return t_ctx;
	if (!g_initialized)
		abort(); /* wg_crypto_init() was not called */
	t_ctx = tls_new();
	if (t_ctx == NULL || pthread_setspecific(g_tls_key, t_ctx) != 0)
		abort(); /* out of memory for a few hundred bytes, once per thread */
	return t_ctx;
}

bool wg_crypto_init(void)
{
	if (g_initialized)
		return true;
	if (sodium_init() < 0)
		return false;
	g_chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
	g_blake2s = EVP_MD_fetch(NULL, "BLAKE2S-256", NULL);
	g_blake2smac = EVP_MAC_fetch(NULL, "BLAKE2SMAC", NULL);
	if (g_chacha == NULL || g_blake2s == NULL || g_blake2smac == NULL)
		goto fail;
	if (pthread_key_create(&g_tls_key, tls_free) != 0)
		goto fail;
	g_initialized = true;
	return true;
fail:
	EVP_CIPHER_free(g_chacha);
	EVP_MD_free(g_blake2s);
	EVP_MAC_free(g_blake2smac);
	g_chacha = NULL;
	g_blake2s = NULL;
	g_blake2smac = NULL;
	return false;
}

void wg_crypto_thread_cleanup(void)
{
	if (t_ctx == NULL)
		return;
	tls_free(t_ctx);
	t_ctx = NULL;
	pthread_setspecific(g_tls_key, NULL);
}

static const uint8_t g_zero_key[WG_KEY_LEN];

void wg_crypto_forget_keys(void)
{
	/* ChaCha20 keeps the key in its context (the key schedule is the key
	 * itself) until the next init; a zero key overwrites it. The nonce is
	 * left: it is no secret. */
	if (t_ctx != NULL && !EVP_CipherInit_ex2(t_ctx->aead, NULL, g_zero_key, NULL, -1, NULL))
		abort();
}

void wg_crypto__aead_context_tag(uint8_t tag[WG_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx = tls_get()->aead;
	uint8_t nonce[WG_AEAD_NONCE_LEN] = { 0 };
	int outl;

	/* A NULL key keeps the one the context holds. */
	if (!EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, 1, NULL) ||
	    !EVP_CipherFinal_ex(ctx, tag, &outl) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_LEN, tag))
		abort();
}

bool wg_crypto__mac_context_mac(uint8_t out[WG_MAC_LEN], const uint8_t *in, size_t len)
{
	EVP_MAC_CTX *ctx = tls_get()->mac16;
	size_t outl;

	/* A NULL key keeps the one the context holds (fails if none). */
	return EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, in, len) &&
	       EVP_MAC_final(ctx, out, &outl, WG_MAC_LEN);
}

void wg_random(uint8_t *out, size_t len)
{
	randombytes_buf(out, len);
}

/* ---- X25519 ---- */

void wg_x25519_clamp(uint8_t k[WG_KEY_LEN])
{
	k[0] &= 248;
	k[31] = (k[31] & 127) | 64;
}

void wg_x25519_generate_private(uint8_t k[WG_KEY_LEN])
{
	randombytes_buf(k, WG_KEY_LEN);
	wg_x25519_clamp(k);
}

bool wg_crypto__x25519_sodium(uint8_t out[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN],
			      const uint8_t pk[WG_KEY_LEN])
{
	/* libsodium returns -1 for an all-zero result (low-order point). */
	if (crypto_scalarmult_curve25519(out, sk, pk) != 0) {
		sodium_memzero(out, WG_KEY_LEN);
		return false;
	}
	return true;
}

bool wg_crypto__x25519_openssl(uint8_t out[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN],
			       const uint8_t pk[WG_KEY_LEN])
{
	EVP_PKEY *priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, WG_KEY_LEN);
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pk, WG_KEY_LEN);
	EVP_PKEY_CTX *ctx = priv != NULL ? EVP_PKEY_CTX_new(priv, NULL) : NULL;
	size_t len = WG_KEY_LEN;
	bool ok = ctx != NULL && peer != NULL && EVP_PKEY_derive_init(ctx) > 0 &&
		  EVP_PKEY_derive_set_peer(ctx, peer) > 0 && EVP_PKEY_derive(ctx, out, &len) > 0 &&
		  len == WG_KEY_LEN; /* OpenSSL fails an all-zero result itself */

	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	EVP_PKEY_free(priv);
	if (!ok)
		sodium_memzero(out, WG_KEY_LEN);
	return ok;
}

bool wg_crypto__x25519_base_sodium(uint8_t pub[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN])
{
	return crypto_scalarmult_curve25519_base(pub, sk) == 0;
}

bool wg_crypto__x25519_base_openssl(uint8_t pub[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN])
{
	EVP_PKEY *priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, WG_KEY_LEN);
	size_t len = WG_KEY_LEN;
	bool ok = priv != NULL && EVP_PKEY_get_raw_public_key(priv, pub, &len) == 1 &&
		  len == WG_KEY_LEN;

	EVP_PKEY_free(priv);
	return ok;
}

bool wg_x25519(uint8_t out[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN], const uint8_t pk[WG_KEY_LEN])
{
	return WG_X25519_IMPL(out, sk, pk);
}

bool wg_x25519_public(uint8_t pub[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN])
{
	return WG_X25519_BASE_IMPL(pub, sk);
}

void wg_x25519_keypair(uint8_t sk[WG_KEY_LEN], uint8_t pub[WG_KEY_LEN])
{
	do
		wg_x25519_generate_private(sk);
	while (!wg_x25519_public(pub, sk));
}

/* ---- ChaCha20-Poly1305 with the WireGuard counter nonce ---- */

static void counter_nonce(uint8_t nonce[WG_AEAD_NONCE_LEN], uint64_t counter)
{
	memset(nonce, 0, 4);
	wg_store_le64(nonce + 4, counter);
}

void wg_crypto__aead_encrypt_nonce_sodium(uint8_t *dst, const uint8_t *src, size_t len,
					  const uint8_t *ad, size_t ad_len,
					  const uint8_t nonce[WG_AEAD_NONCE_LEN],
					  const uint8_t key[WG_KEY_LEN])
{
	crypto_aead_chacha20poly1305_ietf_encrypt(dst, NULL, src, len, ad, ad_len, NULL, nonce,
						  key);
}

bool wg_crypto__aead_decrypt_nonce_sodium(uint8_t *dst, const uint8_t *src, size_t len,
					  const uint8_t *ad, size_t ad_len,
					  const uint8_t nonce[WG_AEAD_NONCE_LEN],
					  const uint8_t key[WG_KEY_LEN])
{
	if (len < WG_TAG_LEN)
		return false;
	return crypto_aead_chacha20poly1305_ietf_decrypt(dst, NULL, NULL, src, len, ad, ad_len,
							 nonce, key) == 0;
}

void wg_crypto__aead_encrypt_sodium(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
				    size_t ad_len, uint64_t counter, const uint8_t key[WG_KEY_LEN])
{
	uint8_t nonce[WG_AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	wg_crypto__aead_encrypt_nonce_sodium(dst, src, len, ad, ad_len, nonce, key);
}

bool wg_crypto__aead_decrypt_sodium(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
				    size_t ad_len, uint64_t counter, const uint8_t key[WG_KEY_LEN])
{
	uint8_t nonce[WG_AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	return wg_crypto__aead_decrypt_nonce_sodium(dst, src, len, ad, ad_len, nonce, key);
}

/* EVP_CipherUpdate takes an int length. */
static bool evp_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
	int outl;

	while (len > 0) {
		int n = len > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)len;

		if (!EVP_CipherUpdate(ctx, out, &outl, in, n))
			return false;
		if (out != NULL)
			out += n;
		in += n;
		len -= (size_t)n;
	}
	return true;
}

void wg_crypto__aead_encrypt_nonce_openssl(uint8_t *dst, const uint8_t *src, size_t len,
					   const uint8_t *ad, size_t ad_len,
					   const uint8_t nonce[WG_AEAD_NONCE_LEN],
					   const uint8_t key[WG_KEY_LEN])
{
	EVP_CIPHER_CTX *ctx = tls_get()->aead;
	int outl;

	/* The context keeps its cipher; only key and nonce are set per call. */
	if (!EVP_CipherInit_ex2(ctx, NULL, key, nonce, 1, NULL) ||
	    (ad_len > 0 && !evp_update(ctx, NULL, ad, ad_len)) || !evp_update(ctx, dst, src, len) ||
	    !EVP_CipherFinal_ex(ctx, dst + len, &outl) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_LEN, dst + len))
		abort(); /* cannot fail with a valid context; never emit unauthenticated data */
}

bool wg_crypto__aead_decrypt_nonce_openssl(uint8_t *dst, const uint8_t *src, size_t len,
					   const uint8_t *ad, size_t ad_len,
					   const uint8_t nonce[WG_AEAD_NONCE_LEN],
					   const uint8_t key[WG_KEY_LEN])
{
	EVP_CIPHER_CTX *ctx = tls_get()->aead;
	uint8_t tag[WG_TAG_LEN];
	int outl;

	if (len < WG_TAG_LEN)
		return false;
	len -= WG_TAG_LEN;
	/* Keep the tag aside: in place, dst overlaps src. */
	memcpy(tag, src + len, WG_TAG_LEN);
	if (!EVP_CipherInit_ex2(ctx, NULL, key, nonce, 0, NULL))
		return false;
	if (ad_len > 0 && !evp_update(ctx, NULL, ad, ad_len))
		return false;
	if (!evp_update(ctx, dst, src, len))
		return false;
	if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG_LEN, tag))
		return false;
	return EVP_CipherFinal_ex(ctx, dst + len, &outl) > 0;
}

void wg_crypto__aead_encrypt_openssl(uint8_t *dst, const uint8_t *src, size_t len,
				     const uint8_t *ad, size_t ad_len, uint64_t counter,
				     const uint8_t key[WG_KEY_LEN])
{
	uint8_t nonce[WG_AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	wg_crypto__aead_encrypt_nonce_openssl(dst, src, len, ad, ad_len, nonce, key);
}

bool wg_crypto__aead_decrypt_openssl(uint8_t *dst, const uint8_t *src, size_t len,
				     const uint8_t *ad, size_t ad_len, uint64_t counter,
				     const uint8_t key[WG_KEY_LEN])
{
	uint8_t nonce[WG_AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	return wg_crypto__aead_decrypt_nonce_openssl(dst, src, len, ad, ad_len, nonce, key);
}

void wg_aead_encrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t ad_len,
		     uint64_t counter, const uint8_t key[WG_KEY_LEN])
{
	if (len < WG_AEAD_OPENSSL_MIN_LEN)
		wg_crypto__aead_encrypt_sodium(dst, src, len, ad, ad_len, counter, key);
	else
		wg_crypto__aead_encrypt_openssl(dst, src, len, ad, ad_len, counter, key);
}

bool wg_aead_decrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t ad_len,
		     uint64_t counter, const uint8_t key[WG_KEY_LEN])
{
	if (len < WG_TAG_LEN + WG_AEAD_OPENSSL_MIN_LEN)
		return wg_crypto__aead_decrypt_sodium(dst, src, len, ad, ad_len, counter, key);
	return wg_crypto__aead_decrypt_openssl(dst, src, len, ad, ad_len, counter, key);
}

/* ---- XChaCha20-Poly1305 (libsodium only) ---- */

void wg_xaead_encrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		      size_t ad_len, const uint8_t nonce[WG_XNONCE_LEN],
		      const uint8_t key[WG_KEY_LEN])
{
	crypto_aead_xchacha20poly1305_ietf_encrypt(dst, NULL, src, len, ad, ad_len, NULL, nonce,
						   key);
}

bool wg_xaead_decrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		      size_t ad_len, const uint8_t nonce[WG_XNONCE_LEN],
		      const uint8_t key[WG_KEY_LEN])
{
	if (len < WG_TAG_LEN)
		return false;
	return crypto_aead_xchacha20poly1305_ietf_decrypt(dst, NULL, NULL, src, len, ad, ad_len,
							  nonce, key) == 0;
}

/* ---- BLAKE2s (OpenSSL only: libsodium has BLAKE2b, not BLAKE2s) ---- */

void wg_hash(uint8_t out[WG_HASH_LEN], const uint8_t *a, size_t a_len, const uint8_t *b,
	     size_t b_len)
{
	EVP_MD_CTX *ctx = tls_get()->md;
	unsigned int len;

	if (!EVP_DigestInit_ex2(ctx, g_blake2s, NULL) || !EVP_DigestUpdate(ctx, a, a_len) ||
	    (b_len > 0 && !EVP_DigestUpdate(ctx, b, b_len)) || !EVP_DigestFinal_ex(ctx, out, &len))
		abort();
}

void wg_mac(uint8_t out[WG_MAC_LEN], const uint8_t *key, size_t key_len, const uint8_t *in,
	    size_t len)
{
	EVP_MAC_CTX *ctx = tls_get()->mac16;
	uint8_t zero = 0;
	/* BLAKE2SMAC copies the key into its context, where it stays until the
	 * next init: replace it by a one-byte zero key (a copy, no hashing).
	 * The final cleanses the hash state itself. */
	OSSL_PARAM forget[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, &zero, 1),
		OSSL_PARAM_construct_end(),
	};
	size_t outl;

	/* The 16-byte output size was set once on the context. */
	if (!EVP_MAC_init(ctx, key, key_len, NULL) || !EVP_MAC_update(ctx, in, len) ||
	    !EVP_MAC_final(ctx, out, &outl, WG_MAC_LEN) || !EVP_MAC_CTX_set_params(ctx, forget))
		abort();
}

#define HMAC_BLOCK_LEN 64 /* BLAKE2s */

/* HMAC (RFC 2104) = HASH((key ^ opad) || HASH((key ^ ipad) || in)), over the
 * thread's BLAKE2s context. Not OpenSSL's EVP_MAC HMAC: its context keeps
 * the key's inner and outer hash states (enough to compute any HMAC under
 * that key, e.g. the rest of a KDF) until its next init, and clearing them
 * costs a re-init with another key per call. Here the padded key lives in a
 * stack block wiped before returning, and nothing keyed stays in the
 * digest context: after the outer final it holds no key bytes (the last
 * block is the inner hash, zero-padded), and OpenSSL's BLAKE2s final
 * cleanses it anyway. Faster too (no context copies). */
void wg_hmac(uint8_t out[WG_HASH_LEN], const uint8_t *key, size_t key_len, const uint8_t *in,
	     size_t len)
{
	EVP_MD_CTX *ctx = tls_get()->md;
	uint8_t pad[HMAC_BLOCK_LEN];
	uint8_t inner[WG_HASH_LEN];
	unsigned int outl;
	size_t i;
	bool ok;

	if (key_len > HMAC_BLOCK_LEN) {
		/* RFC 2104: a longer key is hashed first (no WireGuard key is). */
		wg_hash(inner, key, key_len, NULL, 0);
		key = inner;
		key_len = WG_HASH_LEN;
	}
	for (i = 0; i < key_len; i++)
		pad[i] = key[i] ^ 0x36;
	for (; i < HMAC_BLOCK_LEN; i++)
		pad[i] = 0x36;
	/* in is read completely before out is written: they may alias. */
	ok = EVP_DigestInit_ex2(ctx, g_blake2s, NULL) &&
	     EVP_DigestUpdate(ctx, pad, HMAC_BLOCK_LEN) &&
	     (len == 0 || EVP_DigestUpdate(ctx, in, len)) && EVP_DigestFinal_ex(ctx, inner, &outl);
	for (i = 0; i < HMAC_BLOCK_LEN; i++)
		pad[i] ^= 0x36 ^ 0x5c;
	ok = ok && EVP_DigestInit_ex2(ctx, g_blake2s, NULL) &&
	     EVP_DigestUpdate(ctx, pad, HMAC_BLOCK_LEN) &&
	     EVP_DigestUpdate(ctx, inner, WG_HASH_LEN) && EVP_DigestFinal_ex(ctx, out, &outl);
	sodium_memzero(pad, sizeof(pad));
	sodium_memzero(inner, sizeof(inner));
	if (!ok)
		abort();
}

/* KDF_n (whitepaper 5.4 / HKDF with HMAC-BLAKE2s): T0 = HMAC(key, in),
 * T1 = HMAC(T0, 0x1), Ti = HMAC(T0, Ti-1 || i). */
void wg_crypto__kdf(uint8_t *outs[3], int n, const uint8_t *key, size_t key_len, const uint8_t *in,
		    size_t len)
{
	uint8_t t0[WG_HASH_LEN];
	uint8_t prev[WG_HASH_LEN + 1];

	wg_hmac(t0, key, key_len, in, len);
	prev[0] = 1;
	wg_hmac(prev, t0, WG_HASH_LEN, prev, 1);
	memcpy(outs[0], prev, WG_HASH_LEN);
	for (int i = 1; i < n; i++) {
		prev[WG_HASH_LEN] = (uint8_t)(i + 1);
		wg_hmac(prev, t0, WG_HASH_LEN, prev, WG_HASH_LEN + 1);
		memcpy(outs[i], prev, WG_HASH_LEN);
	}
	sodium_memzero(t0, sizeof(t0));
	sodium_memzero(prev, sizeof(prev));
}

void wg_kdf1(uint8_t t1[WG_HASH_LEN], const uint8_t key[WG_HASH_LEN], const uint8_t *in, size_t len)
{
	uint8_t *outs[3] = { t1, NULL, NULL };

	wg_crypto__kdf(outs, 1, key, WG_HASH_LEN, in, len);
}

void wg_kdf2(uint8_t t1[WG_HASH_LEN], uint8_t t2[WG_HASH_LEN], const uint8_t key[WG_HASH_LEN],
	     const uint8_t *in, size_t len)
{
	uint8_t *outs[3] = { t1, t2, NULL };

	wg_crypto__kdf(outs, 2, key, WG_HASH_LEN, in, len);
}

void wg_kdf3(uint8_t t1[WG_HASH_LEN], uint8_t t2[WG_HASH_LEN], uint8_t t3[WG_HASH_LEN],
	     const uint8_t key[WG_HASH_LEN], const uint8_t *in, size_t len)
{
	uint8_t *outs[3] = { t1, t2, t3 };

	wg_crypto__kdf(outs, 3, key, WG_HASH_LEN, in, len);
}

void wg_crypto_get_choice(struct wg_crypto_choice *out)
{
	out->x25519 = WG_X25519_IMPL_NAME;
	out->aead = WG_AEAD_IMPL_NAME;
	out->xaead = "libsodium";
	out->hash = "OpenSSL EVP_MD BLAKE2S-256";
	out->mac = "OpenSSL EVP_MAC BLAKE2SMAC size=16";
	out->hmac = "RFC 2104 over OpenSSL EVP_MD BLAKE2S-256";
}
