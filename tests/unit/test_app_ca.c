/* The capture CA: what phones require of it, persistence, and import checks
 * with messages that name the file and the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mitm/ca.h"

struct fixture {
	char home[256];
	char err[9000];
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->home, sizeof(f->home), "/tmp/wgmitm-ca-XXXXXX");
	assert_non_null(mkdtemp(f->home));
	*ctx = f;
	return 0;
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->home);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void path_in(const struct fixture *f, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", f->home, name);
}

/* A self-signed certificate with the given basicConstraints and validity
 * (seconds from now). */
static X509 *make_cert(EVP_PKEY *key, const char *bc, long from, long to)
{
	X509 *x = X509_new();
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), from);
	X509_gmtime_adj(X509_getm_notAfter(x), to);
	X509_set_pubkey(x, key);
	if (bc) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, bc);
		assert_non_null(ext);
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	return x;
}

static void write_pair(const struct fixture *f, const char *name, X509 *x, EVP_PKEY *key)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.crt", f->home, name);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, x), 1);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/%s.key", f->home, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
}

static int import(struct fixture *f, const char *cert, const char *key)
{
	char c[512], k[512];
	snprintf(c, sizeof(c), "%s/%s.crt", f->home, cert);
	snprintf(k, sizeof(k), "%s/%s.key", f->home, key);
	f->err[0] = '\0';
	return ca_import(f->home, c, k, f->err, sizeof(f->err));
}

static void test_generate_has_what_phones_need(void **ctx)
{
	struct fixture *f = *ctx;
	struct ca ca;
	bool created = false;
	assert_int_equal(ca_load(&ca, f->home, true, &created, f->err, sizeof(f->err)), 0);
	assert_true(created);
	X509 *x = ca.cert;

	/* basicConstraints CA:TRUE, critical. */
	int crit = -1;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_true(bc->ca);
	assert_int_equal(crit, 1);
	BASIC_CONSTRAINTS_free(bc);
	/* keyUsage keyCertSign + cRLSign, critical. */
	ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
	assert_non_null(ku);
	assert_int_equal(crit, 1);
	ASN1_BIT_STRING_free(ku);
	assert_int_equal(X509_get_key_usage(x) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN),
			 KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_non_null(X509_get0_subject_key_id(x));
	/* A CN naming the product (iOS lists CAs by it). */
	char cn[256];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_memory_equal(cn, "wgmitm CA ", 10);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	assert_int_equal(EVP_PKEY_get_base_id(ca.key), EVP_PKEY_EC);
	assert_int_equal(EVP_PKEY_get_bits(ca.key), 256);
	assert_int_equal(X509_check_issued(x, x), X509_V_OK);
	/* Valid now for 10 years (and a day back for slow clocks). */
	int days, secs;
	assert_int_equal(
		ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
	assert_int_equal(days, CA_VALID_DAYS + 1);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
	assert_int_equal(ca_check(ca.cert, ca.key, "ca", f->err, sizeof(f->err)), 0);

	char path[512];
	struct stat sb;
	path_in(f, CA_KEY_FILE, path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	path_in(f, CA_CERT_FILE, path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);
	ca_free(&ca);
}

static void test_persists(void **ctx)
{
	struct fixture *f = *ctx;
	struct ca a, b;
	bool created;
	char fa[CA_FINGERPRINT_LEN], fb[CA_FINGERPRINT_LEN];
	assert_int_equal(ca_load(&a, f->home, true, &created, f->err, sizeof(f->err)), 0);
	assert_true(created);
	assert_int_equal(ca_load(&b, f->home, true, &created, f->err, sizeof(f->err)), 0);
	assert_false(created);
	ca_fingerprint(a.cert, fa);
	ca_fingerprint(b.cert, fb);
	assert_int_equal(strlen(fa), 95);
	assert_string_equal(fa, fb);
	assert_int_equal(EVP_PKEY_eq(a.key, b.key), 1);
	ca_free(&a);
	ca_free(&b);
}

static void test_missing_half_is_an_error(void **ctx)
{
	struct fixture *f = *ctx;
	struct ca ca;
	/* Without create: not made. */
	assert_int_equal(ca_load(&ca, f->home, false, NULL, f->err, sizeof(f->err)), -ENOENT);
	assert_non_null(strstr(f->err, "ca.pem"));
	assert_int_equal(ca_load(&ca, f->home, true, NULL, f->err, sizeof(f->err)), 0);
	ca_free(&ca);
	char path[512];
	path_in(f, CA_KEY_FILE, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	/* The certificate phones trust is never replaced by a new pair. */
	assert_int_equal(ca_load(&ca, f->home, true, NULL, f->err, sizeof(f->err)), -ENOENT);
	assert_non_null(strstr(f->err, "ca-key.pem: does not exist"));
}

static void test_import_checks(void **ctx)
{
	struct fixture *f = *ctx;
	EVP_PKEY *k1 = EVP_EC_gen("P-256");
	EVP_PKEY *k2 = EVP_EC_gen("P-256");
	X509 *good = make_cert(k1, "critical,CA:TRUE", -3600, 86400);
	X509 *leaf = make_cert(k1, "critical,CA:FALSE", -3600, 86400);
	X509 *nobc = make_cert(k1, NULL, -3600, 86400);
	X509 *expired = make_cert(k1, "critical,CA:TRUE", -7200, -3600);
	X509 *future = make_cert(k1, "critical,CA:TRUE", 3600, 7200);
	write_pair(f, "good", good, k1);
	write_pair(f, "leaf", leaf, k1);
	write_pair(f, "nobc", nobc, k1);
	write_pair(f, "expired", expired, k1);
	write_pair(f, "future", future, k1);
	write_pair(f, "other", good, k2); /* other.key does not match */

	struct ca before;
	assert_int_equal(ca_load(&before, f->home, true, NULL, f->err, sizeof(f->err)), 0);
	char fp_before[CA_FINGERPRINT_LEN];
	ca_fingerprint(before.cert, fp_before);
	ca_free(&before);

	assert_int_equal(import(f, "leaf", "leaf"), -EINVAL);
	assert_non_null(strstr(f->err, "leaf.crt: not a CA certificate"));
	assert_int_equal(import(f, "nobc", "nobc"), -EINVAL);
	assert_non_null(strstr(f->err, "nobc.crt: not a CA certificate"));
	assert_int_equal(import(f, "expired", "expired"), -EINVAL);
	assert_non_null(strstr(f->err, "expired.crt: expired"));
	assert_int_equal(import(f, "future", "future"), -EINVAL);
	assert_non_null(strstr(f->err, "not valid yet"));
	assert_int_equal(import(f, "good", "other"), -EINVAL);
	assert_non_null(strstr(f->err, "other.key: the private key does not match"));
	/* A key given as the certificate, and a missing file. */
	assert_int_equal(import(f, "nothere", "good"), -ENOENT);
	assert_non_null(strstr(f->err, "nothere.crt"));
	char c[512], k[512];
	snprintf(c, sizeof(c), "%s/good.key", f->home);
	snprintf(k, sizeof(k), "%s/good.crt", f->home);
	assert_int_equal(ca_import(f->home, c, k, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "good.key: not a certificate"));

	/* Nothing refused touched the CA. */
	struct ca now;
	char fp[CA_FINGERPRINT_LEN];
	assert_int_equal(ca_load(&now, f->home, false, NULL, f->err, sizeof(f->err)), 0);
	ca_fingerprint(now.cert, fp);
	assert_string_equal(fp, fp_before);
	ca_free(&now);

	/* The good one is adopted; the old pair is kept as .bak. */
	assert_int_equal(import(f, "good", "good"), 0);
	assert_int_equal(ca_load(&now, f->home, false, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(X509_cmp(now.cert, good), 0);
	assert_int_equal(EVP_PKEY_eq(now.key, k1), 1);
	ca_free(&now);
	char path[512];
	path_in(f, "ca.pem.bak", path, sizeof(path));
	FILE *fp_bak = fopen(path, "r");
	assert_non_null(fp_bak);
	X509 *bak = PEM_read_X509(fp_bak, NULL, NULL, NULL);
	fclose(fp_bak);
	assert_non_null(bak);
	ca_fingerprint(bak, fp);
	assert_string_equal(fp, fp_before);
	X509_free(bak);
	struct stat sb;
	path_in(f, "ca-key.pem.bak", path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	X509_free(good);
	X509_free(leaf);
	X509_free(nobc);
	X509_free(expired);
	X509_free(future);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
}

static void test_import_keyusage_without_certsign(void **ctx)
{
	struct fixture *f = *ctx;
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = make_cert(k, "critical,CA:TRUE", -60, 86400);
	/* Re-sign with a keyUsage that lacks keyCertSign. */
	X509_EXTENSION *ext =
		X509V3_EXT_conf_nid(NULL, NULL, NID_key_usage, "critical,digitalSignature");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	write_pair(f, "ku", x, k);
	assert_int_equal(import(f, "ku", "ku"), -EINVAL);
	assert_non_null(strstr(f->err, "ku.crt: keyUsage lacks keyCertSign"));
	X509_free(x);
	EVP_PKEY_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_generate_has_what_phones_need, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_persists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_half_is_an_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_keyusage_without_certsign, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
