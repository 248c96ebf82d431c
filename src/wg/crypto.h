/* The cryptographic primitives WireGuard uses, one function each.
 *
 * Every function is pure (buffers in, buffers out, no shared mutable state
 * visible to the caller). Which library implements a primitive was chosen by
 * speed measured on the reference machine; see the table in crypto.c and
 * bench/bench_wg_handshake.c, which prints the measurements.
 *
 * Thread safety: call wg_crypto_init() once, before any other function, from
 * one thread. Afterwards every function may be called from any thread at the
 * same time: the algorithm objects fetched at init are read-only, and each
 * thread gets its own reusable OpenSSL contexts on first use (freed
 * automatically when the thread exits). Allocation of those contexts happens
 * once per thread, never per packet; if it fails the process aborts.
 */
#ifndef WGMITM_WG_CRYPTO_H
#define WGMITM_WG_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/messages.h"

/* Initialises libsodium, fetches the OpenSSL algorithms, allocates the
 * calling thread's contexts. Returns false if a required algorithm is
 * unavailable. Idempotent. */
bool wg_crypto_init(void) WG_WARN_UNUSED;

/* Frees the calling thread's contexts now (they are freed at thread exit
 * anyway; useful for leak checkers at the end of main). */
void wg_crypto_thread_cleanup(void);

/* Overwrites with zeros the key the calling thread's reusable
 * ChaCha20-Poly1305 context still holds: wg_aead_encrypt/decrypt leave the
 * key of their last call on 1024 bytes or more there (the OpenSSL path;
 * libsodium, below that, keeps nothing). Clearing it after every packet
 * would cost ~5% of the transport receive path, and the key lives on in
 * its keypair anyway, so whoever wipes keys that went through wg_aead_*
 * calls this right after (the device does whenever it frees a keypair).
 * No other function here leaves a key behind: the MAC context is cleared
 * after each call, and HMAC has no keyed context. */
void wg_crypto_forget_keys(void);

/* Random bytes (libsodium randombytes_buf). */
void wg_random(uint8_t *out, size_t len);

/* X25519 (RFC 7748). */
void wg_x25519_clamp(uint8_t private_key[WG_KEY_LEN]);
/* A fresh random, clamped private key. */
void wg_x25519_generate_private(uint8_t private_key[WG_KEY_LEN]);
/* public = X25519(private, 9). false only if the result is all zeros. */
bool wg_x25519_public(uint8_t public_key[WG_KEY_LEN],
		      const uint8_t private_key[WG_KEY_LEN]) WG_WARN_UNUSED;
/* Fresh random keypair. */
void wg_x25519_keypair(uint8_t private_key[WG_KEY_LEN], uint8_t public_key[WG_KEY_LEN]);
/* shared = X25519(private, public). Returns false if the result is all zeros
 * (public is a low-order point); shared is then zeroed. */
bool wg_x25519(uint8_t shared[WG_KEY_LEN], const uint8_t private_key[WG_KEY_LEN],
	       const uint8_t public_key[WG_KEY_LEN]) WG_WARN_UNUSED;

/* ChaCha20-Poly1305 IETF with WireGuard's nonce: 4 zero bytes || LE64
 * counter. encrypt writes len + WG_TAG_LEN bytes to dst; decrypt reads
 * len >= WG_TAG_LEN bytes (ciphertext || tag) and writes len - WG_TAG_LEN
 * bytes. dst == src (in place) is allowed; other overlaps are not. ad may be
 * NULL when ad_len is 0. decrypt returns false if the tag does not verify;
 * dst's contents are then unspecified (never use them). */
void wg_aead_encrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t ad_len,
		     uint64_t counter, const uint8_t key[WG_KEY_LEN]);
bool wg_aead_decrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t ad_len,
		     uint64_t counter, const uint8_t key[WG_KEY_LEN]) WG_WARN_UNUSED;

/* XChaCha20-Poly1305 (libsodium: OpenSSL has none), same conventions. */
void wg_xaead_encrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		      size_t ad_len, const uint8_t nonce[WG_XNONCE_LEN],
		      const uint8_t key[WG_KEY_LEN]);
bool wg_xaead_decrypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		      size_t ad_len, const uint8_t nonce[WG_XNONCE_LEN],
		      const uint8_t key[WG_KEY_LEN]) WG_WARN_UNUSED;

/* HASH(a || b) with BLAKE2s-256; b may be NULL when b_len is 0. */
void wg_hash(uint8_t out[WG_HASH_LEN], const uint8_t *a, size_t a_len, const uint8_t *b,
	     size_t b_len);

/* Keyed BLAKE2s with a 16-byte output (MAC1, MAC2, the cookie).
 * 1 <= key_len <= 32. */
void wg_mac(uint8_t out[WG_MAC_LEN], const uint8_t *key, size_t key_len, const uint8_t *in,
	    size_t len);

/* HMAC-BLAKE2s-256 (block size 64); key non-NULL (a key over 64 bytes is
 * hashed first, as RFC 2104 says). out may alias in or key. */
void wg_hmac(uint8_t out[WG_HASH_LEN], const uint8_t *key, size_t key_len, const uint8_t *in,
	     size_t len);

/* The WireGuard KDF_n(key, input) (whitepaper 5.4): T0 = HMAC(key, input),
 * T1 = HMAC(T0, 0x1), Ti = HMAC(T0, Ti-1 || i). Outputs may alias key. */
void wg_kdf1(uint8_t t1[WG_HASH_LEN], const uint8_t key[WG_HASH_LEN], const uint8_t *in,
	     size_t len);
void wg_kdf2(uint8_t t1[WG_HASH_LEN], uint8_t t2[WG_HASH_LEN], const uint8_t key[WG_HASH_LEN],
	     const uint8_t *in, size_t len);
void wg_kdf3(uint8_t t1[WG_HASH_LEN], uint8_t t2[WG_HASH_LEN], uint8_t t3[WG_HASH_LEN],
	     const uint8_t key[WG_HASH_LEN], const uint8_t *in, size_t len);

/* Implementation names chosen at init, for logs and benchmarks. */
struct wg_crypto_choice {
	const char *x25519;
	const char *aead;
	const char *xaead;
	const char *hash;
	const char *mac;
	const char *hmac;
};
void wg_crypto_get_choice(struct wg_crypto_choice *out);

/* The alternative implementations behind the choices above, for the tests
 * (both must pass the vectors) and the benchmark (which re-measures them).
 * Not for other callers. */
bool wg_crypto__x25519_sodium(uint8_t out[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN],
			      const uint8_t pk[WG_KEY_LEN]);
bool wg_crypto__x25519_openssl(uint8_t out[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN],
			       const uint8_t pk[WG_KEY_LEN]);
bool wg_crypto__x25519_base_sodium(uint8_t pub[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN]);
bool wg_crypto__x25519_base_openssl(uint8_t pub[WG_KEY_LEN], const uint8_t sk[WG_KEY_LEN]);
void wg_crypto__aead_encrypt_sodium(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
				    size_t ad_len, uint64_t counter, const uint8_t key[WG_KEY_LEN]);
bool wg_crypto__aead_decrypt_sodium(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
				    size_t ad_len, uint64_t counter, const uint8_t key[WG_KEY_LEN]);
void wg_crypto__aead_encrypt_openssl(uint8_t *dst, const uint8_t *src, size_t len,
				     const uint8_t *ad, size_t ad_len, uint64_t counter,
				     const uint8_t key[WG_KEY_LEN]);
bool wg_crypto__aead_decrypt_openssl(uint8_t *dst, const uint8_t *src, size_t len,
				     const uint8_t *ad, size_t ad_len, uint64_t counter,
				     const uint8_t key[WG_KEY_LEN]);
/* The same with an arbitrary 12-byte nonce (for the RFC 8439 vectors). */
void wg_crypto__aead_encrypt_nonce_sodium(uint8_t *dst, const uint8_t *src, size_t len,
					  const uint8_t *ad, size_t ad_len,
					  const uint8_t nonce[WG_AEAD_NONCE_LEN],
					  const uint8_t key[WG_KEY_LEN]);
bool wg_crypto__aead_decrypt_nonce_sodium(uint8_t *dst, const uint8_t *src, size_t len,
					  const uint8_t *ad, size_t ad_len,
					  const uint8_t nonce[WG_AEAD_NONCE_LEN],
					  const uint8_t key[WG_KEY_LEN]);
void wg_crypto__aead_encrypt_nonce_openssl(uint8_t *dst, const uint8_t *src, size_t len,
					   const uint8_t *ad, size_t ad_len,
					   const uint8_t nonce[WG_AEAD_NONCE_LEN],
					   const uint8_t key[WG_KEY_LEN]);
bool wg_crypto__aead_decrypt_nonce_openssl(uint8_t *dst, const uint8_t *src, size_t len,
					   const uint8_t *ad, size_t ad_len,
					   const uint8_t nonce[WG_AEAD_NONCE_LEN],
					   const uint8_t key[WG_KEY_LEN]);
/* What the calling thread's reusable contexts compute with the key they
 * still hold, for the tests that check no key survives: the tag of an empty
 * message sealed under the AEAD context's key with counter 0, and the MAC
 * of in under the MAC context's key (false if it holds none). */
void wg_crypto__aead_context_tag(uint8_t tag[WG_TAG_LEN]);
bool wg_crypto__mac_context_mac(uint8_t out[WG_MAC_LEN], const uint8_t *in, size_t len);
/* KDF_n with a key of any length (wireguard-go's vectors use short keys). */
void wg_crypto__kdf(uint8_t *outs[3], int n, const uint8_t *key, size_t key_len, const uint8_t *in,
		    size_t len);

#endif
