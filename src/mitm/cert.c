#include "mitm/cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* --- name sets --- */

void cert_names_init(struct cert_names *n)
{
	n->ndns = n->nip4 = n->nip6 = n->pool_used = 0;
}

/* Lower-cases `in` into out (>= CERT_DNS_NAME_MAX + 1) if it is a DNS name
 * a certificate may carry; returns its length or 0. */
static size_t dns_normalize(const char *in, size_t len, char *out)
{
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > CERT_DNS_NAME_MAX)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (c == '*') {
			/* Only a whole leftmost label, followed by more labels. */
			if (i != 0 || len < 3 || in[1] != '.')
				return 0;
			label++;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_') {
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
		out[i] = (char)c;
	}
	if (label == 0)
		return 0;
	out[len] = '\0';
	return len;
}

/* Binary search in the sorted view: position of `name` or where it goes. */
static size_t dns_find(const struct cert_names *n, const char *name, bool *found)
{
	size_t lo = 0, hi = n->ndns;
	*found = false;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(n->dns[n->sorted[mid]], name);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int dns_add(struct cert_names *n, const char *name, size_t len)
{
	char norm[CERT_DNS_NAME_MAX + 1];
	size_t nlen = dns_normalize(name, len, norm);
	if (nlen == 0)
		return -EINVAL;
	bool found;
	size_t pos = dns_find(n, norm, &found);
	if (found)
		return 0;
	if (n->ndns == CERT_NAMES_MAX || n->pool_used + nlen + 1 > sizeof(n->pool))
		return -ENOSPC;
	char *dst = n->pool + n->pool_used;
	memcpy(dst, norm, nlen + 1);
	n->pool_used += nlen + 1;
	memmove(&n->sorted[pos + 1], &n->sorted[pos], n->ndns - pos);
	n->sorted[pos] = (uint8_t)n->ndns;
	n->dns[n->ndns++] = dst;
	return 1;
}

int cert_names_add_ip4(struct cert_names *n, const struct in_addr *ip)
{
	for (size_t i = 0; i < n->nip4; i++)
		if (n->ip4[i].s_addr == ip->s_addr)
			return 0;
	if (n->nip4 == CERT_NAMES_MAX)
		return -ENOSPC;
	n->ip4[n->nip4++] = *ip;
	return 1;
}

int cert_names_add_ip6(struct cert_names *n, const struct in6_addr *ip)
{
	for (size_t i = 0; i < n->nip6; i++)
		if (memcmp(&n->ip6[i], ip, sizeof(*ip)) == 0)
			return 0;
	if (n->nip6 == CERT_NAMES_MAX)
		return -ENOSPC;
	n->ip6[n->nip6++] = *ip;
	return 1;
}

int cert_names_add(struct cert_names *n, const char *name)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, name, &a4) == 1)
		return cert_names_add_ip4(n, &a4) < 0 ? -ENOSPC : 0;
	if (inet_pton(AF_INET6, name, &a6) == 1)
		return cert_names_add_ip6(n, &a6) < 0 ? -ENOSPC : 0;
	int rc = dns_add(n, name, strlen(name));
	return rc < 0 ? rc : 0;
}

int cert_names_from_x509(struct cert_names *n, X509 *upstream)
{
	int added = 0, rc = 0;
	bool full = false;
	GENERAL_NAMES *gens = X509_get_ext_d2i(upstream, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS) {
			const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
			int len = ASN1_STRING_length(g->d.dNSName);
			/* An embedded NUL is a forgery attempt: dns_normalize refuses it. */
			rc = len > 0 ? dns_add(n, (const char *)p, (size_t)len) : -EINVAL;
		} else if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 4) {
			struct in_addr a;
			memcpy(&a, ASN1_STRING_get0_data(g->d.iPAddress), 4);
			rc = cert_names_add_ip4(n, &a);
		} else if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 16) {
			struct in6_addr a;
			memcpy(&a, ASN1_STRING_get0_data(g->d.iPAddress), 16);
			rc = cert_names_add_ip6(n, &a);
		} else {
			continue;
		}
		if (rc > 0)
			added++;
		else if (rc == -ENOSPC)
			full = true;
	}
	bool had_san = gens != NULL;
	GENERAL_NAMES_free(gens);
	if (!had_san) {
		/* A legacy certificate: its CN is its only name. */
		X509_NAME *subj = X509_get_subject_name(upstream);
		int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
		if (idx >= 0) {
			ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
			if (ASN1_STRING_type(s) != V_ASN1_BMPSTRING &&
			    ASN1_STRING_type(s) != V_ASN1_UNIVERSALSTRING) {
				rc = dns_add(n, (const char *)ASN1_STRING_get0_data(s),
					     (size_t)ASN1_STRING_length(s));
				if (rc > 0)
					added++;
				else if (rc == -ENOSPC)
					full = true;
			}
		}
	}
	return full ? -ENOSPC : added;
}

static void sort_bytes(void *base, size_t n, size_t size)
{
	/* Insertion sort: sets hold a handful of addresses. */
	unsigned char *a = base, tmp[16];
	for (size_t i = 1; i < n; i++) {
		memcpy(tmp, a + i * size, size);
		size_t j = i;
		while (j > 0 && memcmp(a + (j - 1) * size, tmp, size) > 0) {
			memcpy(a + j * size, a + (j - 1) * size, size);
			j--;
		}
		memcpy(a + j * size, tmp, size);
	}
}

size_t cert_names_key(const struct cert_names *n, char *out, size_t outlen)
{
	size_t len = 0;
	for (size_t i = 0; i < n->ndns; i++) {
		const char *s = n->dns[n->sorted[i]];
		size_t sl = strlen(s);
		if (len + sl + 1 >= outlen)
			return 0;
		memcpy(out + len, s, sl);
		len += sl;
		out[len++] = '\n';
	}
	struct in_addr ip4[CERT_NAMES_MAX];
	struct in6_addr ip6[CERT_NAMES_MAX];
	memcpy(ip4, n->ip4, n->nip4 * sizeof(ip4[0]));
	memcpy(ip6, n->ip6, n->nip6 * sizeof(ip6[0]));
	sort_bytes(ip4, n->nip4, sizeof(ip4[0]));
	sort_bytes(ip6, n->nip6, sizeof(ip6[0]));
	char text[INET6_ADDRSTRLEN];
	for (size_t i = 0; i < n->nip4 + n->nip6; i++) {
		if (i < n->nip4)
			inet_ntop(AF_INET, &ip4[i], text, sizeof(text));
		else
			inet_ntop(AF_INET6, &ip6[i - n->nip4], text, sizeof(text));
		size_t tl = strlen(text);
		if (len + tl + 2 >= outlen)
			return 0;
		out[len++] = '#';
		memcpy(out + len, text, tl);
		len += tl;
		out[len++] = '\n';
	}
	if (len < outlen)
		out[len] = '\0';
	return len;
}

/* --- the minter --- */

void cert_minter_free(struct cert_minter *m)
{
	X509_free(m->ca_cert);
	EVP_PKEY_free(m->ca_key);
	EVP_PKEY_free(m->leaf_key);
	X509_EXTENSION_free(m->ext_bc);
	X509_EXTENSION_free(m->ext_ku);
	X509_EXTENSION_free(m->ext_eku);
	X509_EXTENSION_free(m->ext_akid);
	X509_free(m->tmpl);
	memset(m, 0, sizeof(*m));
}

EVP_PKEY *cert_minter_key(const struct cert_minter *m)
{
	return m->leaf_key;
}

/* authorityKeyIdentifier = the CA's subjectKeyIdentifier, or (a CA imported
 * without one) the SHA-1 of its public key, RFC 5280 4.2.1.2 method 1. */
static X509_EXTENSION *make_akid(X509 *ca)
{
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
	if (!akid)
		return NULL;
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(ca);
	if (skid) {
		akid->keyid = ASN1_OCTET_STRING_dup(skid);
	} else {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int len = 0;
		if (X509_pubkey_digest(ca, EVP_sha1(), md, &len) &&
		    (akid->keyid = ASN1_OCTET_STRING_new()))
			ASN1_OCTET_STRING_set(akid->keyid, md, (int)len);
	}
	X509_EXTENSION *ext =
		akid->keyid ? X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid) : NULL;
	AUTHORITY_KEYID_free(akid);
	return ext;
}

int cert_minter_init(struct cert_minter *m, X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *leaf_key,
		     char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	if (!X509_up_ref(ca_cert) || !EVP_PKEY_up_ref(ca_key)) {
		snprintf(err, errlen, "cannot reference the CA");
		return -EIO;
	}
	m->ca_cert = ca_cert;
	m->ca_key = ca_key;
	if (leaf_key && EVP_PKEY_up_ref(leaf_key))
		m->leaf_key = leaf_key;
	else if (!leaf_key)
		m->leaf_key = EVP_EC_gen("P-256");
	if (!m->leaf_key) {
		snprintf(err, errlen, "cannot make the leaf key");
		cert_minter_free(m);
		return -EIO;
	}
	/* An RSA leaf key is also used for key transport by TLS 1.2 RSA suites. */
	bool rsa = EVP_PKEY_get_base_id(m->leaf_key) == EVP_PKEY_RSA;
	m->ext_bc = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:FALSE");
	m->ext_ku = X509V3_EXT_conf_nid(NULL, NULL, NID_key_usage,
					rsa ? "critical,digitalSignature,keyEncipherment"
					    : "critical,digitalSignature");
	m->ext_eku = X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage, "serverAuth");
	m->ext_akid = make_akid(ca_cert);
	m->tmpl = X509_new();
	if (!m->ext_bc || !m->ext_ku || !m->ext_eku || !m->ext_akid || !m->tmpl ||
	    !X509_set_version(m->tmpl, X509_VERSION_3) ||
	    !X509_set_issuer_name(m->tmpl, X509_get_subject_name(ca_cert)) ||
	    !X509_set_pubkey(m->tmpl, m->leaf_key) || !X509_add_ext(m->tmpl, m->ext_bc, -1) ||
	    !X509_add_ext(m->tmpl, m->ext_ku, -1) || !X509_add_ext(m->tmpl, m->ext_eku, -1) ||
	    !X509_add_ext(m->tmpl, m->ext_akid, -1) ||
	    /* X509_dup encodes: the template needs times and a signature. */
	    !X509_gmtime_adj(X509_getm_notBefore(m->tmpl), 0) ||
	    !X509_gmtime_adj(X509_getm_notAfter(m->tmpl), 0) ||
	    !X509_sign(m->tmpl, ca_key, EVP_sha256())) {
		snprintf(err, errlen, "cannot build the leaf extensions");
		ERR_clear_error();
		cert_minter_free(m);
		return -EIO;
	}
	return 0;
}

static int add_san(X509 *x, const char *const *dns, size_t ndns, const struct in_addr *ip4,
		   size_t nip4, const struct in6_addr *ip6, size_t nip6, bool critical)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_reserve(NULL, (int)(ndns + nip4 + nip6));
	int ok = gens != NULL;
	for (size_t i = 0; ok && i < ndns + nip4 + nip6; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_STRING *s = NULL;
		if (!g) {
			ok = 0;
			break;
		}
		if (i < ndns) {
			s = ASN1_IA5STRING_new();
			ok = s && ASN1_STRING_set(s, dns[i], -1);
			GENERAL_NAME_set0_value(g, GEN_DNS, s);
		} else {
			s = ASN1_OCTET_STRING_new();
			ok = s &&
			     (i < ndns + nip4
				      ? ASN1_OCTET_STRING_set(
						s, (const unsigned char *)&ip4[i - ndns], 4)
				      : ASN1_OCTET_STRING_set(
						s, (const unsigned char *)&ip6[i - ndns - nip4],
						16));
			GENERAL_NAME_set0_value(g, GEN_IPADD, s);
		}
		if (!s || !sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			ok = 0;
		}
	}
	ok = ok &&
	     X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) == 1;
	GENERAL_NAMES_free(gens);
	return ok ? 0 : -1;
}

X509 *cert_mint(const struct cert_minter *m, const char *const *dns, size_t ndns,
		const struct in_addr *ip4, size_t nip4, const struct in6_addr *ip6, size_t nip6)
{
	if (ndns + nip4 + nip6 == 0 || ndns > CERT_NAMES_MAX || nip4 > CERT_NAMES_MAX ||
	    nip6 > CERT_NAMES_MAX)
		return NULL;
	X509 *x = X509_dup(m->tmpl);
	if (!x)
		return NULL;
	unsigned char serial[16];
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto fail;
	serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40); /* positive, no leading zero */

	/* CN: the first name when it fits (SAN is what clients check). */
	char cn[INET6_ADDRSTRLEN] = "";
	const char *cn_text = NULL;
	if (ndns > 0 && strlen(dns[0]) <= CERT_CN_MAX)
		cn_text = dns[0];
	else if (ndns == 0 && nip4 > 0)
		cn_text = inet_ntop(AF_INET, &ip4[0], cn, sizeof(cn));
	else if (ndns == 0)
		cn_text = inet_ntop(AF_INET6, &ip6[0], cn, sizeof(cn));

	time_t now = time(NULL);
	if (!ASN1_STRING_set(X509_get_serialNumber(x), serial, sizeof(serial)) ||
	    (cn_text &&
	     !X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_ASC,
					 (const unsigned char *)cn_text, -1, -1, 0)) ||
	    !X509_time_adj_ex(X509_getm_notBefore(x), -1, 0, &now) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), CERT_LEAF_DAYS, 0, &now))
		goto fail;
	/* A leaf outliving its CA would fail anyway: end with the CA. */
	if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(m->ca_cert)) > 0 &&
	    !X509_set1_notAfter(x, X509_get0_notAfter(m->ca_cert)))
		goto fail;
	if (/* RFC 5280 4.2.1.6: an empty subject makes SAN critical. */
	    add_san(x, dns, ndns, ip4, nip4, ip6, nip6, cn_text == NULL) < 0)
		goto fail;
	if (!X509_sign(x, m->ca_key, EVP_sha256()))
		goto fail;
	return x;
fail:
	ERR_clear_error();
	X509_free(x);
	return NULL;
}

X509 *cert_mint_names(const struct cert_minter *m, const struct cert_names *n)
{
	return cert_mint(m, n->dns, n->ndns, n->ip4, n->nip4, n->ip6, n->nip6);
}
