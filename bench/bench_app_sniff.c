/* Cost of looking at a stream's first bytes, per ClientHello file:
 *   classify:  sniff_classify on the whole hello
 *   parse:     sniff_client_hello (SNI, ALPN, versions ...)
 *   baseline:  letting OpenSSL parse it instead: SSL_new on a server context,
 *              the hello through a memory BIO, SNI read in the client-hello
 *              callback, which stops the handshake there; SSL_free
 * The sniff columns are the fastest of 40 batches of 50,000 calls; the
 * OpenSSL column the mean of 20,000.
 * Usage: bench_app_sniff FILE... (e.g. tests/fuzz/corpus/app_sniff/tls_*) */
#include "mitm/sniff.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int hello_cb(SSL *ssl, int *alert, void *arg)
{
	const unsigned char *ext;
	size_t len;
	(void)alert;
	*(size_t *)arg +=
		SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) ? len : 0;
	return SSL_CLIENT_HELLO_RETRY;
}

int main(int argc, char **argv)
{
	static uint8_t buf[SNIFF_MAX_HELLO];
	static struct sniff_hello h;
	size_t sink = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CLIENTHELLO-FILE...\n", argv[0]);
		return 2;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_set_client_hello_cb(ctx, hello_cb, &sink);

	printf("%-28s %6s %12s %12s %14s\n", "file", "bytes", "classify ns", "parse ns",
	       "openssl ns");
	for (int f = 1; f < argc; f++) {
		FILE *fp = fopen(argv[f], "rb");
		if (!fp) {
			perror(argv[f]);
			return 1;
		}
		size_t n = fread(buf, 1, sizeof(buf), fp);
		fclose(fp);
		if (sniff_classify(buf, n) != SNIFF_TLS || sniff_client_hello(buf, n, &h) != 0) {
			fprintf(stderr, "%s: not a complete ClientHello (%s)\n", argv[f],
				h.reason ? h.reason : "incomplete");
			continue;
		}

		/* The fastest of several batches: the machine is shared, and a
		 * preempted batch says nothing about the code. */
		const int batches = 40, iters = 50000, ssl_iters = 20000;
		double classify = 1e30, parse = 1e30, t0;
		for (int b = 0; b < batches; b++) {
			t0 = now_ns();
			for (int i = 0; i < iters; i++) {
				sink += sniff_classify(buf, n);
				__asm__ volatile("" ::: "memory");
			}
			double t = (now_ns() - t0) / iters;
			classify = t < classify ? t : classify;

			t0 = now_ns();
			for (int i = 0; i < iters; i++) {
				sink += (size_t)sniff_client_hello(buf, n, &h) + h.sni_len;
				__asm__ volatile("" ::: "memory");
			}
			t = (now_ns() - t0) / iters;
			parse = t < parse ? t : parse;
		}

		t0 = now_ns();
		for (int i = 0; i < ssl_iters; i++) {
			SSL *ssl = SSL_new(ctx);
			BIO *rb = BIO_new_mem_buf(buf, (int)n), *wb = BIO_new(BIO_s_mem());
			SSL_set_bio(ssl, rb, wb);
			SSL_set_accept_state(ssl);
			if (SSL_do_handshake(ssl) != -1 ||
			    SSL_get_error(ssl, -1) != SSL_ERROR_WANT_CLIENT_HELLO_CB) {
				fprintf(stderr, "%s: OpenSSL did not stop at the hello callback\n",
					argv[f]);
				return 1;
			}
			SSL_free(ssl);
		}
		double ossl = (now_ns() - t0) / ssl_iters;

		const char *base = strrchr(argv[f], '/');
		printf("%-28s %6zu %12.1f %12.1f %14.1f\n", base ? base + 1 : argv[f], n, classify,
		       parse, ossl);
	}
	SSL_CTX_free(ctx);
	return sink == 42; /* keeps the loops */
}
