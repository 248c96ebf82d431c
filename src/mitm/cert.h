/* Leaf certificates minted on demand for intercepted TLS.
 *
 * Every leaf carries the same public key: one EC P-256 key pair made when the
 * minter starts (never the CA's key), so minting is one ECDSA signature with
 * an EC CA and no key generation. Each leaf has: a random 16-byte serial,
 * SAN with every DNS name and IP address (critical when the subject is
 * empty), CN only when the first name fits (<= 64 chars), basicConstraints
 * CA:FALSE and keyUsage digitalSignature (critical), extendedKeyUsage
 * serverAuth, authorityKeyIdentifier, validity now - 1 day .. now + 365 days
 * (366 days: under the 397 days iOS and Android accept; never past the CA),
 * SHA-256 signature. */
#ifndef WGMITM_MITM_CERT_H
#define WGMITM_MITM_CERT_H

#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#define CERT_LEAF_DAYS 365
#define CERT_CN_MAX 64 /* ub-common-name */
#define CERT_DNS_NAME_MAX 253
#define CERT_NAMES_MAX 128   /* names of each kind in one leaf; more are dropped */
#define CERT_NAMES_POOL 8192 /* bytes of DNS names in one set */

/* A set of names for one leaf: DNS names (lower case, validated, no
 * duplicates, in the order added: the first one becomes the CN) and IPs. */
struct cert_names {
	const char *dns[CERT_NAMES_MAX]; /* into pool */
	uint8_t sorted[CERT_NAMES_MAX];  /* indexes of dns[] in strcmp order */
	size_t ndns;
	struct in_addr ip4[CERT_NAMES_MAX];
	size_t nip4;
	struct in6_addr ip6[CERT_NAMES_MAX];
	size_t nip6;
	size_t pool_used;
	char pool[CERT_NAMES_POOL];
};

void cert_names_init(struct cert_names *n);
/* A host name, or an IP literal (becomes an IP SAN). A duplicate is
 * ignored. -EINVAL: not a valid DNS name (letters, digits, '-', '_', a
 * leading "*." wildcard; labels <= 63; <= 253 chars; one trailing dot is
 * dropped). -ENOSPC: the set is full. */
int cert_names_add(struct cert_names *n, const char *name);
int cert_names_add_ip4(struct cert_names *n, const struct in_addr *ip);
int cert_names_add_ip6(struct cert_names *n, const struct in6_addr *ip);
/* Adds the SAN DNS names and IP addresses of an upstream certificate
 * (invalid ones skipped; its CN only when it has no SAN at all). Returns
 * how many were new, or -ENOSPC when some did not fit. */
int cert_names_from_x509(struct cert_names *n, X509 *upstream);
/* The canonical cache key: the sorted set, one name per line, IPs as
 * "#addr". Returns its length, 0 when it does not fit in outlen. */
size_t cert_names_key(const struct cert_names *n, char *out, size_t outlen);

struct cert_minter {
	X509 *ca_cert; /* references held */
	EVP_PKEY *ca_key;
	EVP_PKEY *leaf_key; /* shared by every leaf */
	X509_EXTENSION *ext_bc, *ext_ku, *ext_eku, *ext_akid;
	/* Version, issuer, public key and the fixed extensions, copied per
	 * leaf (X509_dup) instead of rebuilt. */
	X509 *tmpl;
};

/* Takes references to the CA pair. leaf_key NULL: a fresh EC P-256 key
 * (otherwise a reference is taken: the benchmark's RSA baseline). 0, or
 * -EINVAL/-EIO with a message in err. */
int cert_minter_init(struct cert_minter *m, X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *leaf_key,
		     char *err, size_t errlen);
void cert_minter_free(struct cert_minter *m);

/* The key of every leaf (borrowed: valid until cert_minter_free). */
EVP_PKEY *cert_minter_key(const struct cert_minter *m);

/* A new leaf for these names (at least one name in all); the caller owns
 * the result. NULL on a bad argument or an OpenSSL failure. dns_names must be
 * valid DNS names (cert_names_add checks them). */
X509 *cert_mint(const struct cert_minter *m, const char *const *dns_names, size_t ndns,
		const struct in_addr *ip4, size_t nip4, const struct in6_addr *ip6, size_t nip6);
X509 *cert_mint_names(const struct cert_minter *m, const struct cert_names *names);

#endif
