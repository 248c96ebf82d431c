/* Leaf minting and cache hits, against baselines in the same run:
 *   wgmitm:      EC P-256 CA, one shared P-256 leaf key, ECDSA-SHA256 signature
 *   baseline A:  RSA-2048 CA signing a leaf with the shared RSA key (what
 *                mitmproxy does per host: its leaves reuse the CA's RSA key)
 *   baseline B:  RSA-2048 CA and a fresh RSA-2048 key per leaf (naive)
 * Usage: bench_app_cert [leaves] */
#include "mitm/ca.h"
#include "mitm/cert.h"
#include "mitm/certcache.h"

#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static X509 *rsa_ca(EVP_PKEY *key)
{
	X509 *ca = X509_new();
	X509_set_version(ca, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(ca), "CN", MBSTRING_ASC,
				   (const unsigned char *)"bench rsa ca", -1, -1, 0);
	X509_set_issuer_name(ca, X509_get_subject_name(ca));
	X509_gmtime_adj(X509_getm_notBefore(ca), -60);
	X509_gmtime_adj(X509_getm_notAfter(ca), 86400L * 3650);
	X509_set_pubkey(ca, key);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, ca, ca, NULL, NULL, 0);
	const int nids[] = { NID_basic_constraints, NID_subject_key_identifier };
	const char *vals[] = { "critical,CA:TRUE", "hash" };
	for (int i = 0; i < 2; i++) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nids[i], vals[i]);
		X509_add_ext(ca, ext, -1);
		X509_EXTENSION_free(ext);
	}
	X509_sign(ca, key, EVP_sha256());
	return ca;
}

/* Mean us per leaf for `n` distinct host names. */
static double mint_us(const struct cert_minter *m, int n, int fresh_rsa_key, X509 *ca,
		      EVP_PKEY *ca_key)
{
	char name[64];
	double t0 = now_us();
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "host%d.bench.example", i);
		const char *p = name;
		X509 *x;
		if (fresh_rsa_key) {
			struct cert_minter one;
			char err[128];
			EVP_PKEY *k = EVP_RSA_gen(2048);
			if (cert_minter_init(&one, ca, ca_key, k, err, sizeof(err)) < 0)
				abort();
			x = cert_mint(&one, &p, 1, NULL, 0, NULL, 0);
			cert_minter_free(&one);
			EVP_PKEY_free(k);
		} else {
			x = cert_mint(m, &p, 1, NULL, 0, NULL, 0);
		}
		if (!x)
			abort();
		X509_free(x);
	}
	return (now_us() - t0) / n;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	if (n < 10)
		n = 10;
	char err[256];
	X509 *ec_ca;
	EVP_PKEY *ec_key;
	if (ca_generate(&ec_ca, &ec_key, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	EVP_PKEY *rsa_key = EVP_RSA_gen(2048);
	X509 *rca = rsa_ca(rsa_key);
	struct cert_minter ec, rsa;
	if (cert_minter_init(&ec, ec_ca, ec_key, NULL, err, sizeof(err)) < 0 ||
	    cert_minter_init(&rsa, rca, rsa_key, rsa_key, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* Warm up both paths. */
	mint_us(&ec, 10, 0, NULL, NULL);
	mint_us(&rsa, 10, 0, NULL, NULL);

	double ec_us = mint_us(&ec, n, 0, NULL, NULL);
	double rsa_us = mint_us(&rsa, n, 0, NULL, NULL);
	int nfresh = n / 20 > 10 ? n / 20 : 10;
	double fresh_us = mint_us(NULL, nfresh, 1, rca, rsa_key);

	/* Cache: hits over a working set of 1024 hosts in a 4096-entry cache. */
	struct certcache *c = certcache_new(CERTCACHE_DEFAULT_CAPACITY);
	enum { SET = 1024 };
	static struct cert_names names[SET];
	char name[64];
	for (int i = 0; i < SET; i++) {
		cert_names_init(&names[i]);
		snprintf(name, sizeof(name), "host%d.bench.example", i);
		cert_names_add(&names[i], name);
		X509_free(certcache_get(c, &ec, &names[i], NULL));
	}
	const int hits = 2000000;
	double t0 = now_us();
	for (int i = 0; i < hits; i++)
		X509_free(certcache_get(c, &ec, &names[(i * 7) % SET], NULL));
	double hit_ns = (now_us() - t0) * 1e3 / hits;
	struct certcache_stats st;
	certcache_stats(c, &st);

	printf("leaf minting, %d distinct hosts each (OpenSSL %s):\n", n,
	       OpenSSL_version(OPENSSL_VERSION));
	printf("  wgmitm     EC P-256 CA, shared P-256 leaf key   %8.1f us/leaf  %7.0f leaves/s\n",
	       ec_us, 1e6 / ec_us);
	printf("  baseline   RSA-2048 CA, shared RSA leaf key     %8.1f us/leaf  %7.0f leaves/s  "
	       "(%.1fx slower)\n",
	       rsa_us, 1e6 / rsa_us, rsa_us / ec_us);
	printf("  baseline   RSA-2048 CA, fresh RSA-2048 key/leaf %8.1f us/leaf  %7.0f leaves/s  "
	       "(%.0fx slower, %d leaves)\n",
	       fresh_us, 1e6 / fresh_us, fresh_us / ec_us, nfresh);
	printf("certcache hit (%d hosts cached, capacity %zu): %.0f ns/hit (%llu hits, %llu "
	       "misses)\n",
	       SET, st.capacity, hit_ns, (unsigned long long)st.hits,
	       (unsigned long long)st.misses);
	printf("  a hit is %.0fx cheaper than minting\n", ec_us * 1e3 / hit_ns);

	certcache_free(c);
	cert_minter_free(&ec);
	cert_minter_free(&rsa);
	X509_free(ec_ca);
	X509_free(rca);
	EVP_PKEY_free(ec_key);
	EVP_PKEY_free(rsa_key);
	return 0;
}
