/* libFuzzer target for the names taken from an upstream certificate
 * (cert_names_from_x509: hostile input, an upstream can serve anything)
 * and the leaf minted from them. Invariants beyond "no crash": every DNS
 * name kept passes cert_names_add again (it is valid), the cache key fits
 * and is NUL-terminated, and a minted leaf carries the CA as its issuer. */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "mitm/ca.h"
#include "mitm/cert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cert_minter minter;
static bool ready;

static void setup(void)
{
	X509 *ca_cert = NULL;
	EVP_PKEY *ca_key = NULL;
	char err[256];
	if (ca_generate(&ca_cert, &ca_key, err, sizeof(err)) < 0 ||
	    cert_minter_init(&minter, ca_cert, ca_key, NULL, err, sizeof(err)) < 0)
		abort();
	X509_free(ca_cert); /* the minter holds references */
	EVP_PKEY_free(ca_key);
	ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ready)
		setup();
	const unsigned char *p = data;
	X509 *x = d2i_X509(NULL, &p, (long)size);
	if (!x)
		return 0;
	static struct cert_names n, again;
	cert_names_init(&n);
	(void)cert_names_from_x509(&n, x);
	X509_free(x);

	cert_names_init(&again);
	for (size_t i = 0; i < n.ndns; i++)
		if (cert_names_add(&again, n.dns[i]) != 0)
			abort(); /* a kept name must be valid and not a duplicate */
	static char key[CERT_NAMES_POOL + 64 * CERT_NAMES_MAX];
	size_t klen = cert_names_key(&n, key, sizeof(key));
	if (klen >= sizeof(key) || (klen && key[klen] != 0))
		abort();

	if (n.ndns + n.nip4 + n.nip6 == 0)
		return 0;
	X509 *leaf = cert_mint_names(&minter, &n);
	if (!leaf)
		abort();
	if (X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(minter.ca_cert)) != 0)
		abort();
	X509_free(leaf);
	return 0;
}
