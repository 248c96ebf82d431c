#include "mitm/ca.h"

#include "common/atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

/* The last OpenSSL error as text, or `fallback`. */
static const char *ssl_reason(const char *fallback)
{
	static _Thread_local char buf[256];
	unsigned long e = ERR_peek_last_error();
	ERR_clear_error();
	if (!e)
		return fallback;
	const char *r = ERR_reason_error_string(e);
	snprintf(buf, sizeof(buf), "%s", r ? r : fallback);
	return buf;
}

void ca_fingerprint(X509 *cert, char out[CA_FINGERPRINT_LEN])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	out[0] = '\0';
	if (!X509_digest(cert, EVP_sha256(), md, &n))
		return;
	for (unsigned int i = 0; i < n && i * 3 + 3 <= CA_FINGERPRINT_LEN; i++)
		snprintf(out + i * 3, 4, i + 1 < n ? "%02X:" : "%02X", md[i]);
}

void ca_key_describe(EVP_PKEY *key, char *out, size_t outlen)
{
	char group[64] = "";
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC:
		EVP_PKEY_get_group_name(key, group, sizeof(group), NULL);
		snprintf(out, outlen, "EC %s",
			 strcmp(group, "prime256v1") == 0  ? "P-256"
			 : strcmp(group, "secp384r1") == 0 ? "P-384"
							   : group);
		break;
	case EVP_PKEY_RSA:
		snprintf(out, outlen, "RSA %d", EVP_PKEY_get_bits(key));
		break;
	default:
		snprintf(out, outlen, "%s", OBJ_nid2sn(EVP_PKEY_get_base_id(key)));
	}
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static int random_serial(X509 *cert)
{
	unsigned char raw[16];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40); /* positive, 16 bytes */
	BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
	int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

int ca_generate(X509 **cert_out, EVP_PKEY **key_out, char *err, size_t errlen)
{
	*cert_out = NULL;
	*key_out = NULL;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	if (!key || !cert)
		goto fail;

	char host[64] = "";
	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	unsigned char id[4];
	if (RAND_bytes(id, sizeof(id)) != 1)
		goto fail;
	char cn[128];
	snprintf(cn, sizeof(cn), "wgmitm CA %.40s %02x%02x%02x%02x", host, id[0], id[1], id[2],
		 id[3]);

	X509_NAME *name = X509_get_subject_name(cert);
	if (!X509_set_version(cert, X509_VERSION_3) || random_serial(cert) < 0 ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"wgmitm",
					-1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0) ||
	    !X509_set_issuer_name(cert, name) ||
	    /* A day back: a phone whose clock is a little behind still accepts it. */
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -86400) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), (long)CA_VALID_DAYS * 86400) ||
	    !X509_set_pubkey(cert, key))
		goto fail;

	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
	if (add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(cert, &ctx, NID_subject_key_identifier, "hash") < 0 ||
	    add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always") < 0)
		goto fail;
	if (!X509_sign(cert, key, EVP_sha256()))
		goto fail;
	*cert_out = cert;
	*key_out = key;
	return 0;
fail:
	X509_free(cert);
	EVP_PKEY_free(key);
	return fail(err, errlen, -EIO, "cannot generate the CA: %s", ssl_reason("OpenSSL error"));
}

int ca_check(X509 *cert, EVP_PKEY *key, const char *what, char *err, size_t errlen)
{
	uint32_t flags = X509_get_extension_flags(cert);
	if (flags & EXFLAG_INVALID)
		return fail(err, errlen, -EINVAL, "%s: malformed extensions", what);
	/* EXFLAG_CA is set only by basicConstraints CA:TRUE. */
	if (!(flags & EXFLAG_BCONS) || !(flags & EXFLAG_CA))
		return fail(err, errlen, -EINVAL,
			    "%s: not a CA certificate (no basicConstraints CA:TRUE)", what);
	if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN))
		return fail(err, errlen, -EINVAL, "%s: keyUsage lacks keyCertSign", what);
	if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0)
		return fail(err, errlen, -EINVAL, "%s: not valid yet (notBefore is in the future)",
			    what);
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
		return fail(err, errlen, -EINVAL, "%s: expired (notAfter is in the past)", what);
	int type = EVP_PKEY_get_base_id(key);
	if (type != EVP_PKEY_EC && type != EVP_PKEY_RSA)
		return fail(err, errlen, -EINVAL, "%s: unsupported key type %s (EC or RSA)", what,
			    OBJ_nid2sn(type));
	if (type == EVP_PKEY_RSA && EVP_PKEY_get_bits(key) < 2048)
		return fail(err, errlen, -EINVAL, "%s: RSA key of %d bits (phones need >= 2048)",
			    what, EVP_PKEY_get_bits(key));
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		return fail(err, errlen, -EINVAL,
			    "%s: the private key does not match the certificate", what);
	}
	return 0;
}

static int read_file(const char *path, unsigned char **data, size_t *len, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	size_t cap = 4096, n = 0;
	unsigned char *buf = OPENSSL_secure_malloc(cap);
	int rc = 0;
	while (buf) {
		if (n == cap) {
			/* Certificates and keys are small; anything larger is not one. */
			if (cap >= (1u << 20)) {
				rc = fail(err, errlen, -EFBIG,
					  "%s: too large for a certificate or key", path);
				break;
			}
			unsigned char *bigger = OPENSSL_secure_malloc(cap * 2);
			if (bigger)
				memcpy(bigger, buf, n);
			OPENSSL_secure_clear_free(buf, cap);
			buf = bigger;
			cap *= 2;
			continue;
		}
		size_t got = fread(buf + n, 1, cap - n, fp);
		n += got;
		if (got == 0)
			break;
	}
	if (!buf)
		rc = fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	else if (rc == 0 && ferror(fp))
		rc = fail(err, errlen, -EIO, "%s: read error", path);
	fclose(fp);
	if (rc < 0) {
		if (buf)
			OPENSSL_secure_clear_free(buf, cap);
		return rc;
	}
	*data = buf;
	*len = n;
	return (int)cap;
}

static int load_cert(const char *path, X509 **out, char *err, size_t errlen)
{
	unsigned char *data;
	size_t len;
	int cap = read_file(path, &data, &len, err, errlen);
	if (cap < 0)
		return cap;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	if (!cert) {
		const unsigned char *p = data;
		cert = d2i_X509(NULL, &p, (long)len);
	}
	BIO_free(bio);
	OPENSSL_secure_clear_free(data, (size_t)cap);
	ERR_clear_error();
	if (!cert)
		return fail(err, errlen, -EINVAL, "%s: not a certificate (PEM or DER)", path);
	*out = cert;
	return 0;
}

static int load_key(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	unsigned char *data;
	size_t len;
	int cap = read_file(path, &data, &len, err, errlen);
	if (cap < 0)
		return cap;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	/* An empty passphrase callback: an encrypted key is refused, not prompted for. */
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
	if (!key) {
		const unsigned char *p = data;
		key = d2i_AutoPrivateKey(NULL, &p, (long)len);
	}
	BIO_free(bio);
	OPENSSL_secure_clear_free(data, (size_t)cap);
	ERR_clear_error();
	if (!key)
		return fail(err, errlen, -EINVAL, "%s: not an unencrypted private key (PEM or DER)",
			    path);
	*out = key;
	return 0;
}

/* Writes the key (0600) then the certificate (0644), each atomically. */
static int save_pair(const struct ca *ca, X509 *cert, EVP_PKEY *key, char *err, size_t errlen)
{
	int rc = 0;
	BIO *kb = BIO_new(BIO_s_secmem()); /* cleared when freed */
	BIO *cb = BIO_new(BIO_s_mem());
	if (!kb || !cb || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, cert)) {
		rc = fail(err, errlen, -EIO, "cannot encode the CA: %s",
			  ssl_reason("OpenSSL error"));
		goto out;
	}
	char *p;
	long n = BIO_get_mem_data(kb, &p);
	if ((rc = atomicfile_write(ca->key_path, p, (size_t)n, 0600)) < 0) {
		fail(err, errlen, rc, "%s: cannot write: %s", ca->key_path, strerror(-rc));
		goto out;
	}
	n = BIO_get_mem_data(cb, &p);
	if ((rc = atomicfile_write(ca->cert_path, p, (size_t)n, 0644)) < 0)
		fail(err, errlen, rc, "%s: cannot write: %s", ca->cert_path, strerror(-rc));
out:
	BIO_free(kb);
	BIO_free(cb);
	return rc;
}

static int ca_paths(struct ca *ca, const char *home, char *err, size_t errlen)
{
	if ((size_t)snprintf(ca->cert_path, sizeof(ca->cert_path), "%s/" CA_CERT_FILE, home) >=
		    sizeof(ca->cert_path) ||
	    (size_t)snprintf(ca->key_path, sizeof(ca->key_path), "%s/" CA_KEY_FILE, home) >=
		    sizeof(ca->key_path))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", home);
	return 0;
}

/* Makes HOME when asked and takes HOME/.ca.lock; returns the fd. */
static int lock_home(const char *home, bool create, char *err, size_t errlen)
{
	struct stat sb;
	if (stat(home, &sb) < 0) {
		if (errno != ENOENT || !create)
			return fail(err, errlen, -errno, "%s: %s", home, strerror(errno));
		if (mkdir(home, 0700) < 0 && errno != EEXIST)
			return fail(err, errlen, -errno, "%s: cannot create: %s", home,
				    strerror(errno));
	} else if (!S_ISDIR(sb.st_mode)) {
		return fail(err, errlen, -ENOTDIR, "%s: not a directory", home);
	}
	char path[4200];
	snprintf(path, sizeof(path), "%s/.ca.lock", home);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int rc = -errno;
			close(fd);
			return fail(err, errlen, rc, "%s: cannot lock: %s", path, strerror(-rc));
		}
	}
	return fd;
}

void ca_free(struct ca *ca)
{
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	ca->cert = NULL;
	ca->key = NULL;
}

int ca_load(struct ca *ca, const char *home, bool create, bool *created, char *err, size_t errlen)
{
	memset(ca, 0, sizeof(*ca));
	if (created)
		*created = false;
	int rc = ca_paths(ca, home, err, errlen);
	if (rc < 0)
		return rc;
	int lock = lock_home(home, create, err, errlen);
	if (lock < 0)
		return lock;
	bool have_cert = access(ca->cert_path, F_OK) == 0;
	bool have_key = access(ca->key_path, F_OK) == 0;
	if (!have_cert && !have_key) {
		if (!create) {
			rc = fail(err, errlen, -ENOENT, "%s: does not exist", ca->cert_path);
		} else if ((rc = ca_generate(&ca->cert, &ca->key, err, errlen)) == 0 &&
			   (rc = save_pair(ca, ca->cert, ca->key, err, errlen)) == 0 && created) {
			*created = true;
		}
	} else if (!have_cert || !have_key) {
		/* Never replace half a pair: the other half may be what phones trust. */
		rc = fail(err, errlen, -ENOENT,
			  "%s: does not exist but %s does (restore it, or move "
			  "both away to generate a new CA)",
			  have_cert ? ca->key_path : ca->cert_path,
			  have_cert ? ca->cert_path : ca->key_path);
	} else if ((rc = load_cert(ca->cert_path, &ca->cert, err, errlen)) == 0 &&
		   (rc = load_key(ca->key_path, &ca->key, err, errlen)) == 0) {
		rc = ca_check(ca->cert, ca->key, ca->cert_path, err, errlen);
	}
	close(lock);
	if (rc < 0)
		ca_free(ca);
	return rc;
}

/* Copies `path` to `path`.bak atomically (same mode); absent is fine. */
static int backup(const char *path, unsigned mode, char *err, size_t errlen)
{
	unsigned char *data;
	size_t len;
	if (access(path, F_OK) != 0)
		return 0;
	int cap = read_file(path, &data, &len, err, errlen);
	if (cap < 0)
		return cap;
	char bak[4300];
	snprintf(bak, sizeof(bak), "%s.bak", path);
	int rc = atomicfile_write(bak, data, len, mode);
	OPENSSL_secure_clear_free(data, (size_t)cap);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: cannot write: %s", bak, strerror(-rc));
	return 0;
}

int ca_import(const char *home, const char *cert_file, const char *key_file, char *err,
	      size_t errlen)
{
	struct ca ca;
	memset(&ca, 0, sizeof(ca));
	int rc = ca_paths(&ca, home, err, errlen);
	if (rc < 0)
		return rc;
	/* Every check before anything in HOME changes. */
	if ((rc = load_cert(cert_file, &ca.cert, err, errlen)) < 0 ||
	    (rc = load_key(key_file, &ca.key, err, errlen)) < 0)
		goto out;
	char what[4200];
	snprintf(what, sizeof(what), "%s", cert_file);
	if ((rc = ca_check(ca.cert, ca.key, what, err, errlen)) < 0) {
		/* The key is the other file: name it when it is the one at fault. */
		if (strstr(err, "private key does not match"))
			fail(err, errlen, rc,
			     "%s: the private key does not match the certificate %s", key_file,
			     cert_file);
		goto out;
	}
	int lock = lock_home(home, true, err, errlen);
	if (lock < 0) {
		rc = lock;
		goto out;
	}
	if ((rc = backup(ca.key_path, 0600, err, errlen)) == 0 &&
	    (rc = backup(ca.cert_path, 0644, err, errlen)) == 0)
		rc = save_pair(&ca, ca.cert, ca.key, err, errlen);
	close(lock);
out:
	ca_free(&ca);
	return rc;
}
