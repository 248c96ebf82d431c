/* Handshake throughput on one core against the X25519 ceiling measured in
 * the same run, plus the measurements behind the crypto choices.
 *
 * Responder side (what wgmitm does for each connecting phone), per
 * handshake: mac1 check, consume initiation, create response, add macs,
 * begin session. Its X25519 operations: es = DH(s_r, E_i) (1), the new
 * ephemeral key pair (1, fixed base), ee (1), se (1) = 4; ss is
 * precomputed per peer. Ceiling = x25519_ops_per_sec / 4.
 * Full handshake (both roles, one core): 8 X25519 operations.
 *
 * Usage: bench_wg_handshake [seconds per measurement, default 0.5]
 * Primitive figures are the best of 3 runs (the machine may be shared). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wg/cookie.h"
#include "wg/noise.h"
#include "wg/tai64n.h"

static double g_secs = 0.5;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs fn in batches until g_secs elapsed; best of 3; returns ops/s. */
#define MEASURE(result, batch, ...)                                                                \
	do {                                                                                       \
		double best_ = 0;                                                                  \
		for (int r_ = 0; r_ < 3; r_++) {                                                   \
			double t0_ = now_s(), t_;                                                  \
			long n_ = 0;                                                               \
			do {                                                                       \
				for (int i_ = 0; i_ < (batch); i_++) {                             \
					__VA_ARGS__;                                               \
				}                                                                  \
				n_ += (batch);                                                     \
			} while ((t_ = now_s() - t0_) < g_secs);                                   \
			if (n_ / t_ > best_)                                                       \
				best_ = n_ / t_;                                                   \
		}                                                                                  \
		(result) = best_;                                                                  \
	} while (0)

static void bench_primitives(double *x25519_chosen)
{
	uint8_t sk[32], pk[32], out[32];
	static uint8_t buf[2048];
	uint8_t key[32];
	double a, b;
	size_t sizes[] = { 0, 32, 256, 512, 1024, 1420 };
	struct wg_crypto_choice ch;

	wg_x25519_keypair(sk, pk);
	wg_random(key, sizeof(key));
	printf("crypto selection (ops/s; best of 3):\n");
	MEASURE(a, 64, {
		if (!wg_crypto__x25519_sodium(out, sk, pk))
			abort();
		sk[1] ^= out[0];
	});
	MEASURE(b, 64, {
		if (!wg_crypto__x25519_openssl(out, sk, pk))
			abort();
		sk[1] ^= out[0];
	});
	printf("  X25519 DH          libsodium %8.0f/s   OpenSSL EVP_PKEY %8.0f/s\n", a, b);
	MEASURE(a, 64, {
		if (!wg_crypto__x25519_base_sodium(out, sk))
			abort();
		sk[1] ^= out[0];
	});
	MEASURE(b, 64, {
		if (!wg_crypto__x25519_base_openssl(out, sk))
			abort();
		sk[1] ^= out[0];
	});
	printf("  X25519 public key  libsodium %8.0f/s   OpenSSL EVP_PKEY %8.0f/s\n", a, b);
	MEASURE(*x25519_chosen, 64, {
		if (!wg_x25519(out, sk, pk))
			abort();
		sk[1] ^= out[0];
	});

	printf("  ChaCha20-Poly1305 encrypt, WireGuard nonce, in place:\n");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		MEASURE(a, 256,
			wg_crypto__aead_encrypt_sodium(buf, buf, n, NULL, 0, (uint64_t)i_, key));
		MEASURE(b, 256,
			wg_crypto__aead_encrypt_openssl(buf, buf, n, NULL, 0, (uint64_t)i_, key));
		printf("    %5zu B  libsodium %6.0f ns %6.0f MB/s   OpenSSL EVP %6.0f ns %6.0f "
		       "MB/s\n",
		       n, 1e9 / a, a * (double)n / 1e6, 1e9 / b, b * (double)n / 1e6);
	}
	/* Valid ciphertext decrypted out of place: the full cost of a good packet. */
	wg_aead_encrypt(buf, buf, 1420, NULL, 0, 5, key);
	MEASURE(a, 256, {
		if (!wg_crypto__aead_decrypt_sodium(buf, buf, 1420 + 16, NULL, 0, 5, key))
			abort();
		wg_crypto__aead_encrypt_sodium(buf, buf, 1420, NULL, 0, 5, key);
	});
	MEASURE(b, 256, wg_crypto__aead_encrypt_sodium(buf, buf, 1420, NULL, 0, 5, key));
	printf("    1420 B decrypt (measured as decrypt+encrypt minus encrypt)  libsodium %6.0f ns",
	       1e9 / a - 1e9 / b);
	MEASURE(a, 256, {
		if (!wg_crypto__aead_decrypt_openssl(buf, buf, 1420 + 16, NULL, 0, 5, key))
			abort();
		wg_crypto__aead_encrypt_openssl(buf, buf, 1420, NULL, 0, 5, key);
	});
	MEASURE(b, 256, wg_crypto__aead_encrypt_openssl(buf, buf, 1420, NULL, 0, 5, key));
	printf("   OpenSSL EVP %6.0f ns\n", 1e9 / a - 1e9 / b);
	MEASURE(a, 256, wg_xaead_encrypt(buf, buf, 16, buf + 64, 16, buf + 128, key));
	printf("  XChaCha20-Poly1305 (libsodium) 16 B  %6.0f ns\n", 1e9 / a);
	MEASURE(a, 256, wg_hash(out, buf, 32, buf + 32, 32));
	printf("  BLAKE2s-256 64 B               %6.0f ns\n", 1e9 / a);
	MEASURE(a, 256, wg_mac(out, key, 32, buf, 116));
	printf("  keyed BLAKE2s-128 116 B (mac1)  %6.0f ns\n", 1e9 / a);
	MEASURE(a, 256, wg_hmac(out, key, 32, buf, 32));
	printf("  HMAC-BLAKE2s 32 B              %6.0f ns\n", 1e9 / a);
	MEASURE(a, 256, wg_kdf2(out, key, key, buf, 32));
	printf("  KDF2                           %6.0f ns\n", 1e9 / a);
	wg_crypto_get_choice(&ch);
	printf("  chosen: x25519=%s; aead=%s; xaead=%s; hash=%s; mac=%s; hmac=%s\n", ch.x25519,
	       ch.aead, ch.xaead, ch.hash, ch.mac, ch.hmac);
}

struct side {
	struct wg_noise_static id;
	struct wg_handshake peer;
	struct wg_cookie_maker maker;
};

static struct wg_handshake *lookup_static(void *ctx, const uint8_t remote_static[WG_KEY_LEN])
{
	struct side *s = ctx;

	return memcmp(s->peer.remote_static, remote_static, WG_KEY_LEN) == 0 ? &s->peer : NULL;
}

static struct wg_handshake *lookup_index(void *ctx, uint32_t index)
{
	struct side *s = ctx;

	return s->peer.local_index == index ? &s->peer : NULL;
}

#define BATCH 512
#define ROUNDS 5

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	static struct side ini, res;
	static struct wg_msg_initiation inits[BATCH];
	struct wg_cookie_checker checker;
	struct wg_endpoint src;
	uint8_t sk[32], t[12];
	double x25519_ops, responder = 0, full;
	uint64_t clock_ns = 1;
	long stamp_sec = 1;

	if (argc > 1)
		g_secs = atof(argv[1]);
	if (!wg_crypto_init())
		return 1;
	bench_primitives(&x25519_ops);
	printf("\nresponder rounds:\n");

	wg_x25519_generate_private(sk);
	if (!wg_noise_static_init(&ini.id, sk))
		return 1;
	wg_x25519_generate_private(sk);
	if (!wg_noise_static_init(&res.id, sk))
		return 1;
	wg_handshake_init(&ini.peer, &ini.id, res.id.public_key, NULL);
	wg_handshake_init(&res.peer, &res.id, ini.id.public_key, NULL);
	wg_cookie_maker_init(&ini.maker, res.id.public_key);
	wg_cookie_maker_init(&res.maker, ini.id.public_key);
	wg_cookie_checker_init(&checker, &res.id);
	memset(&src, 0, sizeof(src));
	src.in4.sin_family = AF_INET;
	src.in4.sin_port = htons(40000);
	src.in4.sin_addr.s_addr = htonl(0xc0000201);

	/* Responder alone: initiations prepared outside the timing, with
	 * increasing timestamps and a clock 1 s apart (no replay, no flood).
	 * Each round measures X25519 right before the handshakes, so a busy
	 * machine slows both alike; the ratio reported is the median round's. */
	double ratios[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		double elapsed = 0, x_round, hs_round;
		long n = 0;

		{
			uint8_t xo[32], xs[32], xp[32];

			wg_x25519_keypair(xs, xp);
			MEASURE(x_round, 64, {
				if (!wg_x25519(xo, xs, xp))
					abort();
				xs[1] ^= xo[0];
			});
		}

		while (elapsed < g_secs) {
			double t0;

			for (int i = 0; i < BATCH; i++) {
				struct timespec ts = { .tv_sec = stamp_sec++, .tv_nsec = 0 };

				wg_tai64n_from_timespec(t, &ts);
				if (!wg_noise_create_initiation(&ini.id, &ini.peer, 7, t,
								&inits[i]) ||
				    !wg_cookie_add_macs(&ini.maker, (uint8_t *)&inits[i],
							sizeof(inits[i]), clock_ns))
					abort();
			}
			t0 = now_s();
			for (int i = 0; i < BATCH; i++) {
				struct wg_handshake *hs;
				struct wg_msg_response resp;
				struct wg_session_keys keys;

				clock_ns += 1000000000ULL;
				if (wg_cookie_validate(&checker, (uint8_t *)&inits[i],
						       sizeof(inits[i]), &src, false,
						       clock_ns) != WG_COOKIE_MAC_VALID_NO_COOKIE ||
				    wg_noise_consume_initiation(&res.id, &inits[i], lookup_static,
								&res, clock_ns,
								&hs) != WG_NOISE_OK ||
				    !wg_noise_create_response(hs, 9, &resp) ||
				    !wg_cookie_add_macs(&res.maker, (uint8_t *)&resp, sizeof(resp),
							clock_ns) ||
				    !wg_noise_begin_session(hs, &keys))
					abort();
			}
			elapsed += now_s() - t0;
			n += BATCH;
		}
		hs_round = n / elapsed;
		ratios[r] = hs_round / (x_round / 4);
		if (hs_round > responder)
			responder = hs_round;
		if (x_round > x25519_ops)
			x25519_ops = x_round;
		printf("  round %d: X25519 %8.0f ops/s, responder %6.0f /s, ratio %.2f\n", r + 1,
		       x_round, hs_round, ratios[r]);
	}
	qsort(ratios, ROUNDS, sizeof(ratios[0]), cmp_double);

	/* Full handshake, both roles on this core. */
	MEASURE(full, 64, {
		struct wg_msg_initiation init;
		struct wg_msg_response resp;
		struct wg_handshake *hs;
		struct wg_session_keys ki, kr;
		struct timespec ts = { .tv_sec = stamp_sec++, .tv_nsec = 0 };

		clock_ns += 1000000000ULL;
		wg_tai64n_from_timespec(t, &ts);
		if (!wg_noise_create_initiation(&ini.id, &ini.peer, 7, t, &init) ||
		    !wg_cookie_add_macs(&ini.maker, (uint8_t *)&init, sizeof(init), clock_ns) ||
		    wg_cookie_validate(&checker, (uint8_t *)&init, sizeof(init), &src, false,
				       clock_ns) == WG_COOKIE_MAC_INVALID ||
		    wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, clock_ns,
						&hs) != WG_NOISE_OK ||
		    !wg_noise_create_response(hs, 9, &resp) ||
		    !wg_cookie_add_macs(&res.maker, (uint8_t *)&resp, sizeof(resp), clock_ns) ||
		    wg_noise_consume_response(&ini.id, &resp, lookup_index, &ini, &hs) !=
			    WG_NOISE_OK ||
		    !wg_noise_begin_session(&ini.peer, &ki) ||
		    !wg_noise_begin_session(&res.peer, &kr) ||
		    memcmp(ki.send_key, kr.recv_key, 32) != 0)
			abort();
	});

	printf("\nhandshakes on one core (best of 3, %.2f s each):\n", g_secs);
	printf("  X25519 (chosen impl)         %8.0f ops/s\n", x25519_ops);
	printf("  responder handshake          %8.0f /s   ceiling %8.0f /s (x25519/4)   ratio %.2f"
	       " (median of per-round ratios %.2f)\n",
	       responder, x25519_ops / 4, responder / (x25519_ops / 4), ratios[ROUNDS / 2]);
	printf("  full handshake (both roles)  %8.0f /s   ceiling %8.0f /s (x25519/8)   ratio "
	       "%.2f\n",
	       full, x25519_ops / 8, full / (x25519_ops / 8));
	wg_crypto_thread_cleanup();
	return 0;
}
