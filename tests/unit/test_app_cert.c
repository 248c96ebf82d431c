/* Leaf certificates: they verify against our CA alone as TLS server
 * certificates, carry SAN (DNS and IP), EKU serverAuth, CA:FALSE, AKID,
 * a validity phones accept, a CN only when it fits; names taken from an
 * upstream certificate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/ca.h"
#include "mitm/cert.h"

struct fixture {
	X509 *ca;
	EVP_PKEY *ca_key;
	struct cert_minter m;
	struct cert_names names;
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];
	assert_int_equal(ca_generate(&f->ca, &f->ca_key, err, sizeof(err)), 0);
	assert_int_equal(cert_minter_init(&f->m, f->ca, f->ca_key, NULL, err, sizeof(err)), 0);
	cert_names_init(&f->names);
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

/* X509_verify_cert with a store holding only our CA, purpose sslserver,
 * and the host or IP checked as a TLS client would. */
static int verify(X509 *ca, X509 *leaf, const char *host, const char *ip)
{
	X509_STORE *store = X509_STORE_new();
	assert_int_equal(X509_STORE_add_cert(store, ca), 1);
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, NULL), 1);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	if (host)
		X509_VERIFY_PARAM_set1_host(param, host, 0);
	if (ip)
		X509_VERIFY_PARAM_set1_ip_asc(param, ip);
	int ok = X509_verify_cert(ctx);
	if (ok != 1)
		print_message("verify: %s\n",
			      X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok;
}

static void assert_leaf_shape(const struct fixture *f, X509 *x)
{
	int crit;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_false(bc->ca);
	BASIC_CONSTRAINTS_free(bc);
	assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
	assert_true(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
	/* AKID = the CA's SKID. */
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(x);
	assert_non_null(akid);
	assert_int_equal(ASN1_OCTET_STRING_cmp(akid, X509_get0_subject_key_id(f->ca)), 0);
	/* Validity within the 397 days phones accept, valid now. */
	int days, secs;
	assert_int_equal(
		ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
	assert_true(days <= 397);
	assert_true(days >= 300);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
	/* 16-byte positive serial. */
	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	assert_int_equal(ASN1_STRING_length(serial), 16);
	assert_int_equal(ASN1_STRING_type(serial), V_ASN1_INTEGER);
	/* The shared leaf key, never the CA's. */
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(x), cert_minter_key(&f->m)), 1);
	assert_int_not_equal(EVP_PKEY_eq(X509_get0_pubkey(x), f->ca_key), 1);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
}

static int san_count(X509 *x, int type, int *crit)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, crit, NULL);
	assert_non_null(gens);
	int n = 0;
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++)
		n += sk_GENERAL_NAME_value(gens, i)->type == type;
	GENERAL_NAMES_free(gens);
	return n;
}

static void test_leaf_verifies(void **ctx)
{
	struct fixture *f = *ctx;
	assert_int_equal(cert_names_add(&f->names, "Example.COM"), 0);
	assert_int_equal(cert_names_add(&f->names, "*.example.com"), 0);
	X509 *x = cert_mint_names(&f->m, &f->names);
	assert_non_null(x);
	assert_leaf_shape(f, x);
	assert_int_equal(verify(f->ca, x, "example.com", NULL), 1);
	assert_int_equal(verify(f->ca, x, "www.example.com", NULL), 1);
	assert_int_not_equal(verify(f->ca, x, "example.org", NULL), 1);
	int crit;
	assert_int_equal(san_count(x, GEN_DNS, &crit), 2);
	assert_int_equal(crit, 0);
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, "example.com");
	/* Another CA does not verify it. */
	X509 *other;
	EVP_PKEY *other_key;
	char err[128];
	assert_int_equal(ca_generate(&other, &other_key, err, sizeof(err)), 0);
	assert_int_not_equal(verify(other, x, "example.com", NULL), 1);
	X509_free(other);
	EVP_PKEY_free(other_key);
	X509_free(x);
}

static void test_long_name_has_no_cn(void **ctx)
{
	struct fixture *f = *ctx;
	const char *name = "a-very-long-label-for-testing-common-name-limits.subdomain.example.com";
	assert_true(strlen(name) > CERT_CN_MAX);
	X509 *x = cert_mint(&f->m, &name, 1, NULL, 0, NULL, 0);
	assert_non_null(x);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
	int crit;
	assert_int_equal(san_count(x, GEN_DNS, &crit), 1);
	assert_int_equal(crit, 1); /* empty subject: SAN critical */
	assert_leaf_shape(f, x);
	assert_int_equal(verify(f->ca, x, name, NULL), 1);
	X509_free(x);
}

static void test_ip_san(void **ctx)
{
	struct fixture *f = *ctx;
	assert_int_equal(cert_names_add(&f->names, "192.0.2.7"), 0);
	assert_int_equal(cert_names_add(&f->names, "2001:db8::7"), 0);
	assert_int_equal(f->names.ndns, 0);
	X509 *x = cert_mint_names(&f->m, &f->names);
	assert_non_null(x);
	assert_leaf_shape(f, x);
	int crit;
	assert_int_equal(san_count(x, GEN_IPADD, &crit), 2);
	assert_int_equal(verify(f->ca, x, NULL, "192.0.2.7"), 1);
	assert_int_equal(verify(f->ca, x, NULL, "2001:db8::7"), 1);
	assert_int_not_equal(verify(f->ca, x, NULL, "192.0.2.8"), 1);
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, "192.0.2.7");
	X509_free(x);
}

static void test_names_validation_and_key(void **ctx)
{
	struct fixture *f = *ctx;
	struct cert_names *n = &f->names;
	assert_int_equal(cert_names_add(n, "b.example"), 0);
	assert_int_equal(cert_names_add(n, "A.example."), 0);
	assert_int_equal(cert_names_add(n, "a.example"), 0); /* duplicate */
	assert_int_equal(cert_names_add(n, "10.0.0.2"), 0);
	assert_int_equal(cert_names_add(n, "10.0.0.1"), 0);
	assert_int_equal(n->ndns, 2);
	assert_string_equal(n->dns[0], "b.example"); /* order kept: first is the CN */
	static const char *const bad[] = {
		"",      ".",
		"a..b",  ".a",
		"a b",   "a/b",
		"*",     "*a.b",
		"a.*.b", "exa\xc3\xa9mple.com",
		"a\"b",  "0123456789012345678901234567890123456789012345678901234567890123.com",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cert_names_add(n, bad[i]), -EINVAL);
	char key[256];
	size_t len = cert_names_key(n, key, sizeof(key));
	assert_string_equal(key, "a.example\nb.example\n#10.0.0.1\n#10.0.0.2\n");
	assert_int_equal(len, strlen(key));
	/* The same set in another order has the same key. */
	struct cert_names m;
	cert_names_init(&m);
	cert_names_add(&m, "10.0.0.1");
	cert_names_add(&m, "a.example");
	cert_names_add(&m, "10.0.0.2");
	cert_names_add(&m, "B.EXAMPLE");
	char key2[256];
	assert_int_equal(cert_names_key(&m, key2, sizeof(key2)), len);
	assert_string_equal(key, key2);
	assert_int_equal(cert_names_key(n, key, 10), 0);
	/* No names: no leaf. */
	assert_null(cert_mint(&f->m, NULL, 0, NULL, 0, NULL, 0));
}

static void test_names_from_upstream(void **ctx)
{
	struct fixture *f = *ctx;
	/* An "upstream" certificate with DNS, IP and an invalid name. */
	X509 *up = X509_new();
	X509_set_version(up, X509_VERSION_3);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509_set_pubkey(up, k);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, up, up, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
						  "DNS:www.example.net,DNS:*.cdn.example.net,DNS:"
						  "bad name,IP:198.51.100.1,IP:2001:db8::1");
	assert_non_null(ext);
	X509_add_ext(up, ext, -1);
	X509_EXTENSION_free(ext);

	assert_int_equal(cert_names_add(&f->names, "example.net"), 0); /* the SNI */
	assert_int_equal(cert_names_from_x509(&f->names, up), 4);
	assert_int_equal(f->names.ndns, 3);
	assert_int_equal(f->names.nip4, 1);
	assert_int_equal(f->names.nip6, 1);
	assert_string_equal(f->names.dns[0], "example.net");
	X509 *x = cert_mint_names(&f->m, &f->names);
	assert_non_null(x);
	assert_int_equal(verify(f->ca, x, "img.cdn.example.net", NULL), 1);
	assert_int_equal(verify(f->ca, x, NULL, "198.51.100.1"), 1);
	X509_free(x);

	/* No SAN: the CN is the name. */
	struct cert_names n;
	cert_names_init(&n);
	X509 *legacy = X509_new();
	X509_NAME_add_entry_by_txt(X509_get_subject_name(legacy), "CN", MBSTRING_ASC,
				   (const unsigned char *)"Legacy.Example.org", -1, -1, 0);
	assert_int_equal(cert_names_from_x509(&n, legacy), 1);
	assert_string_equal(n.dns[0], "legacy.example.org");
	X509_free(legacy);
	X509_free(up);
	EVP_PKEY_free(k);
}

static void test_rsa_ca(void **ctx)
{
	(void)ctx;
	/* An imported RSA CA signs with RSA-SHA256; leaves keep their EC key. */
	EVP_PKEY *key = EVP_RSA_gen(2048);
	X509 *ca = X509_new();
	X509_set_version(ca, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(ca), "CN", MBSTRING_ASC,
				   (const unsigned char *)"rsa ca", -1, -1, 0);
	X509_set_issuer_name(ca, X509_get_subject_name(ca));
	X509_gmtime_adj(X509_getm_notBefore(ca), -60);
	X509_gmtime_adj(X509_getm_notAfter(ca), 86400 * 30); /* shorter than a leaf */
	X509_set_pubkey(ca, key);
	X509_EXTENSION *ext =
		X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(ca, ext, -1);
	X509_EXTENSION_free(ext);
	X509_sign(ca, key, EVP_sha256());
	struct cert_minter m;
	char err[128];
	assert_int_equal(cert_minter_init(&m, ca, key, NULL, err, sizeof(err)), 0);
	const char *name = "rsa.example";
	X509 *x = cert_mint(&m, &name, 1, NULL, 0, NULL, 0);
	assert_non_null(x);
	assert_int_equal(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
	/* The CA has no SKID: AKID is the SHA-1 of its key. */
	assert_non_null(X509_get0_authority_key_id(x));
	/* Never outlives its CA. */
	assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)), 0);
	assert_int_equal(verify(ca, x, "rsa.example", NULL), 1);
	X509_free(x);
	cert_minter_free(&m);
	X509_free(ca);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_leaf_verifies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_name_has_no_cn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip_san, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_validation_and_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_from_upstream, setup, teardown),
		cmocka_unit_test(test_rsa_ca),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
