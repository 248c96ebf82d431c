/* The leaf cache: a hit is the same certificate, order of names does not
 * matter, the bound holds with LRU eviction; time per hit is printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mitm/ca.h"
#include "mitm/cert.h"
#include "mitm/certcache.h"

struct fixture {
	X509 *ca;
	EVP_PKEY *ca_key;
	struct cert_minter m;
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];
	assert_int_equal(ca_generate(&f->ca, &f->ca_key, err, sizeof(err)), 0);
	assert_int_equal(cert_minter_init(&f->m, f->ca, f->ca_key, NULL, err, sizeof(err)), 0);
	*ctx = f;
	return 0;
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	cert_minter_free(&f->m);
	X509_free(f->ca);
	EVP_PKEY_free(f->ca_key);
	free(f);
	return 0;
}

static void names_of(struct cert_names *n, const char *a, const char *b)
{
	cert_names_init(n);
	assert_int_equal(cert_names_add(n, a), 0);
	if (b)
		assert_int_equal(cert_names_add(n, b), 0);
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void test_hit_is_same_cert(void **ctx)
{
	struct fixture *f = *ctx;
	struct certcache *c = certcache_new(16);
	assert_non_null(c);
	struct cert_names n1, n2;
	names_of(&n1, "example.com", "www.example.com");
	names_of(&n2, "WWW.example.com", "example.com");
	bool hit;
	X509 *a = certcache_get(c, &f->m, &n1, &hit);
	assert_non_null(a);
	assert_false(hit);
	X509 *b = certcache_get(c, &f->m, &n2, &hit);
	assert_true(hit);
	assert_ptr_equal(a, b);
	/* Another set is another leaf. */
	names_of(&n2, "example.com", NULL);
	X509 *d = certcache_get(c, &f->m, &n2, &hit);
	assert_false(hit);
	assert_ptr_not_equal(a, d);

	/* References: the handed-out leaf outlives the cache. */
	X509_free(b);
	certcache_free(c);
	char cn[64];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(a), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, "example.com");
	X509_free(a);
	X509_free(d);
}

static void test_hit_time(void **ctx)
{
	struct fixture *f = *ctx;
	struct certcache *c = certcache_new(0);
	struct cert_names n[64];
	char name[64];
	for (int i = 0; i < 64; i++) {
		snprintf(name, sizeof(name), "host%d.example.com", i);
		names_of(&n[i], name, NULL);
		X509_free(certcache_get(c, &f->m, &n[i], NULL));
	}
	const int rounds = 200000;
	double t0 = now_ns();
	for (int i = 0; i < rounds; i++) {
		bool hit;
		X509 *x = certcache_get(c, &f->m, &n[i & 63], &hit);
		assert_true(hit);
		X509_free(x);
	}
	double per = (now_ns() - t0) / rounds;
	struct certcache_stats st;
	certcache_stats(c, &st);
	assert_int_equal(st.misses, 64);
	assert_int_equal(st.hits, (uint64_t)rounds);
	print_message("certcache hit (key + lookup + up_ref + free): %.0f ns\n", per);
	certcache_free(c);
}

static void test_eviction_keeps_bound(void **ctx)
{
	struct fixture *f = *ctx;
	struct certcache *c = certcache_new(8);
	struct cert_names n;
	char name[64];
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "h%d.example", i);
		names_of(&n, name, NULL);
		X509_free(certcache_get(c, &f->m, &n, NULL));
		/* Keep h0 recent: LRU must spare it. */
		names_of(&n, "h0.example", NULL);
		bool hit;
		X509_free(certcache_get(c, &f->m, &n, &hit));
		assert_true(hit);
		struct certcache_stats st;
		certcache_stats(c, &st);
		assert_true(st.size <= 8);
	}
	struct certcache_stats st;
	certcache_stats(c, &st);
	assert_int_equal(st.size, 8);
	assert_int_equal(st.evictions, 12);
	/* The 7 most recent others and h0 remain; older ones were evicted. */
	bool hit;
	for (int i = 13; i < 20; i++) {
		snprintf(name, sizeof(name), "h%d.example", i);
		names_of(&n, name, NULL);
		X509_free(certcache_get(c, &f->m, &n, &hit));
		assert_true(hit);
	}
	names_of(&n, "h5.example", NULL);
	X509_free(certcache_get(c, &f->m, &n, &hit));
	assert_false(hit);
	certcache_free(c);
}

static void test_lower_layer(void **ctx)
{
	struct fixture *f = *ctx;
	struct certcache *c = certcache_new(2);
	const char *name = "x.example";
	X509 *x = cert_mint(&f->m, &name, 1, NULL, 0, NULL, 0);
	assert_null(certcache_lookup(c, "k", 1));
	assert_int_equal(certcache_insert(c, "k", 1, x), 0);
	assert_int_equal(certcache_insert(c, "k", 1, x), 0); /* replaces, no leak */
	X509 *y = certcache_lookup(c, "k", 1);
	assert_ptr_equal(x, y);
	X509_free(y);
	struct certcache_stats st;
	certcache_stats(c, &st);
	assert_int_equal(st.size, 1);
	certcache_free(c);
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hit_is_same_cert, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hit_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eviction_keeps_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lower_layer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
