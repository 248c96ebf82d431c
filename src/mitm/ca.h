/* The capture CA: the certificate phones are told to trust, and its key.
 *
 *   HOME/ca.pem       certificate (PEM, 0644)
 *   HOME/ca-key.pem   private key (PKCS#8 PEM, 0600)
 *   HOME/.ca.lock     flock()ed while the pair is created or replaced
 *
 * Generated on first use: EC P-256 key (leaf signatures are ECDSA, ~30x
 * faster than RSA-2048 signatures, and both phone platforms accept it),
 * valid 10 years, SHA-256 signature, basicConstraints CA:TRUE pathlen:0 and
 * keyUsage keyCertSign+cRLSign (both critical), subjectKeyIdentifier, and a
 * CN "wgmitm CA <hostname> <random id>" (iOS hides CAs without a CN from
 * Certificate Trust Settings). Files are replaced atomically, key first. */
#ifndef WGMITM_MITM_CA_H
#define WGMITM_MITM_CA_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>

#define CA_CERT_FILE "ca.pem"
#define CA_KEY_FILE "ca-key.pem"
#define CA_VALID_DAYS 3650
/* "AA:BB:...": 32 bytes as colon hex plus NUL. */
#define CA_FINGERPRINT_LEN 96

struct ca {
	X509 *cert;    /* owned */
	EVP_PKEY *key; /* owned */
	char cert_path[4200];
	char key_path[4200];
};

/* Loads HOME's CA; when it does not exist and `create` is set, makes HOME
 * (0700) and generates it. On error returns -errno or -EINVAL with a message
 * naming the file in err; nothing existing is overwritten. `created` (may be
 * NULL) tells whether this call generated the pair. */
int ca_load(struct ca *ca, const char *home, bool create, bool *created, char *err, size_t errlen);
void ca_free(struct ca *ca);

/* A fresh self-signed CA with the properties above. 0 or -EIO. */
int ca_generate(X509 **cert, EVP_PKEY **key, char *err, size_t errlen);

/* Why `cert`+`key` cannot serve as the CA: not a CA (basicConstraints),
 * no keyCertSign, not currently valid, unsupported key, key does not match.
 * 0 when fine, else -EINVAL with the reason (prefixed by `what`) in err. */
int ca_check(X509 *cert, EVP_PKEY *key, const char *what, char *err, size_t errlen);

/* Adopts the CA in cert_file (PEM or DER) with key_file (PEM or DER) as
 * HOME's CA after ca_check; the previous pair is kept as ca.pem.bak and
 * ca-key.pem.bak. Errors name the file and the reason. */
int ca_import(const char *home, const char *cert_file, const char *key_file, char *err,
	      size_t errlen);

/* SHA-256 of the DER certificate as colon hex. */
void ca_fingerprint(X509 *cert, char out[CA_FINGERPRINT_LEN]);

/* Key description for humans: "EC P-256", "RSA 2048". */
void ca_key_describe(EVP_PKEY *key, char *out, size_t outlen);

#endif
