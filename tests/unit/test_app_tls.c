/* TLS legs, entirely in memory: each test puts a tls_leg opposite a plain
 * OpenSSL SSL object on memory BIOs and moves the bytes between them.
 *
 *   upstream leg (client role)  <->  OpenSSL server, cert by a test CA
 *   client leg (server role)    <->  OpenSSL client trusting the wgmitm CA
 *
 * Covered: SNI and ALPN on the wire, verification by name and by IP and
 * its failure reasons, insecure mode, session resumption by host:port, the
 * leaf's names and its verification by a client, ALPN selection, 1 MiB of
 * plaintext each way, close_notify, the three ways a client can fail (an
 * alert, a hang-up after our Certificate, garbage), the client leg's
 * versions and suites (TLS 1.2 AEAD only, nothing older), the leaf cache,
 * the key log, and the JSON summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "mitm/ca.h"
#include "mitm/tls.h"

#define ALPN_WIRE "\x02h2\x08http/1.1"
#define ALPN_WIRE_LEN (sizeof(ALPN_WIRE) - 1)

/* What the OpenSSL server saw of the upstream leg's ClientHello. */
struct seen {
	int sni_calls;
	bool have_sni;
	char sni[256];
	bool have_alpn;
	uint8_t alpn[256];
	size_t alpn_len;
};

struct fixture {
	char dir[64];
	char ca_path[128];
	char keylog_path[128];
	X509 *up_ca; /* the test CA the upstream servers chain to */
	EVP_PKEY *up_ca_key;
	X509 *mitm_ca; /* what phones trust */
	EVP_PKEY *mitm_ca_key;
	EVP_PKEY *srv_key;
	X509 *srv_cert; /* www.test, alt.test, 192.0.2.7 by up_ca */
	SSL_CTX *srv;   /* the upstream server */
	struct seen seen;
	struct tls_ctx *t;       /* upstream_ca = ca_path */
	struct sockaddr_in dest; /* 192.0.2.7:443 */
};

/* ---- certificates ------------------------------------------------------- */

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	return k;
}

/* A server certificate for `san` ("DNS:a,IP:b"); issuer NULL: self-signed. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
		       EVP_PKEY *issuer_key)
{
	X509 *x = X509_new();
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(random() & 0x7fffffff) + 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400);
	X509_NAME *name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						    (const unsigned char *)cn, -1, -1, 0),
			 1);
	assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name), 1);
	assert_int_equal(X509_set_pubkey(x, key), 1);

	X509V3_CTX v3;
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	const struct {
		int nid;
		const char *value;
	} exts[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_key_usage, "critical,digitalSignature" },
		{ NID_ext_key_usage, "serverAuth" },
		{ NID_subject_alt_name, san },
	};
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].value);
		assert_non_null(e);
		assert_int_equal(X509_add_ext(x, e, -1), 1);
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(x, issuer ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

/* ---- the OpenSSL server ------------------------------------------------- */

static int on_servername(SSL *ssl, int *al, void *arg)
{
	(void)al;
	struct seen *s = arg;
	const char *n = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	s->sni_calls++;
	s->have_sni = n != NULL;
	snprintf(s->sni, sizeof(s->sni), "%s", n ? n : "");
	return SSL_TLSEXT_ERR_OK;
}

/* Records the offered list and picks h2 when it is there. */
static int on_server_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	struct seen *s = arg;
	s->have_alpn = true;
	s->alpn_len = inlen < sizeof(s->alpn) ? inlen : sizeof(s->alpn);
	memcpy(s->alpn, in, s->alpn_len);
	for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
		if (in[i] == 2 && i + 3 <= inlen && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_NOACK;
}

/* ---- fixture -------------------------------------------------------------- */

static struct tls_ctx *ctx_new(struct fixture *f, bool with_ca, bool insecure, const char *keylog)
{
	struct tls_config cfg = {
		.ca_cert = f->mitm_ca,
		.ca_key = f->mitm_ca_key,
		.insecure_upstream = insecure,
		.keylog_path = keylog,
	};
	if (with_ca) {
		cfg.upstream_ca[0] = f->ca_path;
		cfg.n_upstream_ca = 1;
	}
	char err[256] = "";
	struct tls_ctx *t = tls_ctx_new(&cfg, err, sizeof(err));
	if (!t)
		print_message("tls_ctx_new: %s\n", err);
	assert_non_null(t);
	return t;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	char err[256];
	snprintf(f->dir, sizeof(f->dir), "/tmp/wgmitm-tls-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->ca_path, sizeof(f->ca_path), "%s/upstream-ca.pem", f->dir);
	snprintf(f->keylog_path, sizeof(f->keylog_path), "%s/keylog.txt", f->dir);

	assert_int_equal(ca_generate(&f->up_ca, &f->up_ca_key, err, sizeof(err)), 0);
	assert_int_equal(ca_generate(&f->mitm_ca, &f->mitm_ca_key, err, sizeof(err)), 0);
	FILE *fp = fopen(f->ca_path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, f->up_ca), 1);
	assert_int_equal(fclose(fp), 0);

	f->srv_key = ec_key();
	f->srv_cert = make_cert(f->srv_key, "www.test", "DNS:www.test,DNS:alt.test,IP:192.0.2.7",
				f->up_ca, f->up_ca_key);
	f->srv = SSL_CTX_new(TLS_server_method());
	assert_non_null(f->srv);
	assert_int_equal(SSL_CTX_use_certificate(f->srv, f->srv_cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(f->srv, f->srv_key), 1);
	SSL_CTX_set_tlsext_servername_callback(f->srv, on_servername);
	SSL_CTX_set_tlsext_servername_arg(f->srv, &f->seen);
	SSL_CTX_set_alpn_select_cb(f->srv, on_server_alpn, &f->seen);

	f->t = ctx_new(f, true, false, NULL);
	f->dest.sin_family = AF_INET;
	f->dest.sin_port = htons(443);
	assert_int_equal(inet_pton(AF_INET, "192.0.2.7", &f->dest.sin_addr), 1);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	tls_ctx_free(f->t);
	SSL_CTX_free(f->srv);
	X509_free(f->srv_cert);
	EVP_PKEY_free(f->srv_key);
	X509_free(f->up_ca);
	EVP_PKEY_free(f->up_ca_key);
	X509_free(f->mitm_ca);
	EVP_PKEY_free(f->mitm_ca_key);
	unlink(f->ca_path);
	unlink(f->keylog_path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- the peer and the pump ---------------------------------------------- */

static SSL *peer_new(SSL_CTX *c, bool server)
{
	SSL *s = SSL_new(c);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	assert_non_null(s);
	assert_non_null(rb);
	assert_non_null(wb);
	BIO_set_mem_eof_return(rb, -1);
	SSL_set_bio(s, rb, wb);
	if (server)
		SSL_set_accept_state(s);
	else
		SSL_set_connect_state(s);
	return s;
}

/* Moves ciphertext both ways until neither side has any left; the bytes
 * moved. */
static size_t pump(struct tls_leg *leg, SSL *peer)
{
	size_t moved = 0;
	for (;;) {
		size_t step = 0;
		const uint8_t *p;
		size_t n = tls_leg_out(leg, &p);
		if (n > 0) {
			assert_int_equal(BIO_write(SSL_get_rbio(peer), p, (int)n), (int)n);
			tls_leg_consume(leg, n);
			step += n;
		}
		uint8_t buf[8192];
		int r;
		while ((r = BIO_read(SSL_get_wbio(peer), buf, sizeof(buf))) > 0) {
			assert_int_equal(tls_leg_feed(leg, buf, (size_t)r), 0);
			step += (size_t)r;
		}
		if (step == 0)
			return moved;
		moved += step;
	}
}

struct hs {
	enum tls_result leg;
	int peer;     /* SSL_do_handshake's last result */
	int peer_err; /* SSL_get_error when it failed */
};

/* Steps both handshakes and pumps until no bytes move: every byte
 * delivered has been seen by one more step of its receiver. */
static struct hs handshake(struct tls_leg *leg, SSL *peer)
{
	struct hs h = { TLS_WANT, 0, SSL_ERROR_WANT_READ };
	for (int i = 0; i < 32; i++) {
		if (h.leg == TLS_WANT)
			h.leg = tls_leg_handshake(leg);
		if (h.peer != 1 && h.peer_err == SSL_ERROR_WANT_READ) {
			ERR_clear_error();
			h.peer = SSL_do_handshake(peer);
			h.peer_err = h.peer == 1 ? SSL_ERROR_NONE : SSL_get_error(peer, h.peer);
		}
		if (pump(leg, peer) == 0)
			break;
	}
	ERR_clear_error();
	return h;
}

static struct tls_leg *upstream_leg(struct fixture *f, struct tls_ctx *t, const char *sni,
				    const uint8_t *alpn, size_t alpn_len)
{
	struct tls_leg *leg = calloc(1, sizeof(*leg));
	assert_non_null(leg);
	assert_int_equal(
		tls_leg_upstream(t, leg, sni, (const struct sockaddr *)&f->dest, alpn, alpn_len),
		0);
	return leg;
}

static void leg_free(struct tls_leg *leg)
{
	tls_leg_free(leg);
	free(leg);
}

/* Handshake of an upstream leg against the server, with `cert` (NULL: the
 * fixture's) on the server; tickets taken in by one read. */
static void upstream_handshake(struct fixture *f, struct tls_leg *leg, SSL **peer_out, X509 *cert)
{
	SSL *peer = peer_new(f->srv, true);
	if (cert)
		assert_int_equal(SSL_use_certificate(peer, cert), 1);
	struct hs h = handshake(leg, peer);
	assert_int_equal(h.leg, TLS_OK);
	assert_int_equal(h.peer, 1);
	assert_true(leg->done);
	/* TLS 1.3 tickets come after the server's Finished. */
	uint8_t b[64];
	size_t n = 99;
	assert_int_equal(tls_leg_read(leg, b, sizeof(b), &n), TLS_WANT);
	assert_int_equal(n, 0);
	if (peer_out)
		*peer_out = peer;
	else
		SSL_free(peer);
}

static void assert_alpn(const struct tls_leg *leg, const char *want)
{
	const uint8_t *p;
	unsigned len;
	tls_leg_alpn(leg, &p, &len);
	if (!want) {
		assert_int_equal(len, 0);
		return;
	}
	assert_int_equal(len, strlen(want));
	assert_memory_equal(p, want, len);
}

/* ---- upstream leg --------------------------------------------------------- */

static void test_upstream_sni_alpn(void **state)
{
	struct fixture *f = *state;
	struct tls_leg *leg =
		upstream_leg(f, f->t, "www.test", (const uint8_t *)ALPN_WIRE, ALPN_WIRE_LEN);
	assert_string_equal(leg->host, "www.test");
	SSL *peer;
	upstream_handshake(f, leg, &peer, NULL);

	assert_true(f->seen.have_sni);
	assert_string_equal(f->seen.sni, "www.test");
	assert_true(f->seen.have_alpn);
	assert_int_equal(f->seen.alpn_len, ALPN_WIRE_LEN);
	assert_memory_equal(f->seen.alpn, ALPN_WIRE, ALPN_WIRE_LEN);
	assert_alpn(leg, "h2");

	char why[160] = "";
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	assert_non_null(tls_leg_peer_cert(leg));
	assert_int_equal(X509_cmp(tls_leg_peer_cert(leg), f->srv_cert), 0);

	json_t *j = tls_leg_json(leg);
	assert_string_equal(json_string_value(json_object_get(j, "version")), "TLSv1.3");
	const char *cipher = json_string_value(json_object_get(j, "cipher"));
	assert_non_null(cipher);
	assert_true(strlen(cipher) > 0);
	assert_string_equal(json_string_value(json_object_get(j, "alpn")), "h2");
	json_decref(j);

	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.upstream_handshakes, 1);
	assert_int_equal(st.upstream_resumed, 0);
	assert_int_equal(st.upstream_failed, 0);
	assert_int_equal(st.upstream_unverified, 0);
	SSL_free(peer);
	leg_free(leg);
}

/* No ALPN offered: the server sees no extension, the leg reports none. */
static void test_upstream_no_alpn(void **state)
{
	struct fixture *f = *state;
	struct tls_leg *leg = upstream_leg(f, f->t, "alt.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	assert_false(f->seen.have_alpn);
	assert_string_equal(f->seen.sni, "alt.test");
	assert_alpn(leg, NULL);
	char why[160];
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	json_t *j = tls_leg_json(leg);
	assert_true(json_is_null(json_object_get(j, "alpn")));
	json_decref(j);
	leg_free(leg);
}

/* No SNI: nothing on the wire, the dialled IP is what is verified. */
static void test_upstream_by_ip(void **state)
{
	struct fixture *f = *state;
	char why[160] = "";
	struct tls_leg *leg = upstream_leg(f, f->t, NULL, NULL, 0);
	assert_string_equal(leg->host, "192.0.2.7");
	upstream_handshake(f, leg, NULL, NULL);
	assert_false(f->seen.have_sni);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	leg_free(leg);

	/* A certificate for the name only: the IP does not match (another
	 * port, so the first session is not resumed). */
	X509 *named = make_cert(f->srv_key, "www.test", "DNS:www.test", f->up_ca, f->up_ca_key);
	f->dest.sin_port = htons(4443);
	leg = upstream_leg(f, f->t, "", NULL, 0);
	upstream_handshake(f, leg, NULL, named);
	assert_false(f->seen.have_sni);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "IP address mismatch"));
	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.upstream_unverified, 1);
	/* Verification never aborts the handshake: it finished. */
	assert_int_equal(st.upstream_handshakes, 2);
	assert_int_equal(st.upstream_failed, 0);
	leg_free(leg);
	X509_free(named);
}

static void test_upstream_self_signed(void **state)
{
	struct fixture *f = *state;
	X509 *self = make_cert(f->srv_key, "www.test", "DNS:www.test", NULL, NULL);
	struct tls_leg *leg = upstream_leg(f, f->t, "www.test", NULL, 0);
	upstream_handshake(f, leg, NULL, self);
	char why[160] = "";
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "self-signed"));
	assert_int_equal(X509_cmp(tls_leg_peer_cert(leg), self), 0);
	leg_free(leg);

	/* --insecure-upstream: anything goes. */
	struct tls_ctx *t = ctx_new(f, false, true, NULL);
	leg = upstream_leg(f, t, "www.test", NULL, 0);
	upstream_handshake(f, leg, NULL, self);
	why[0] = 0;
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	leg_free(leg);
	leg = upstream_leg(f, t, "wrong.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	struct tls_stats st;
	tls_ctx_stats(t, &st);
	assert_int_equal(st.upstream_unverified, 0);
	leg_free(leg);
	tls_ctx_free(t);
	X509_free(self);
}

/* The upstream's certificate as recorded: names, SANs, dates, fingerprint
 * and the verdict; a certificate with too many names (some not ASCII) is
 * cut to the bound and made printable; with --insecure-upstream the
 * verdict is still computed (the name too) and marked insecure. */
static void test_upstream_cert_json(void **state)
{
	struct fixture *f = *state;
	struct tls_leg *leg = upstream_leg(f, f->t, "www.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	json_t *c = tls_leg_cert_json(leg);
	assert_non_null(c);
	assert_string_equal(json_string_value(json_object_get(c, "subject")), "CN=www.test");
	const char *issuer = json_string_value(json_object_get(c, "issuer"));
	assert_non_null(issuer);
	char want[TLS_CERT_NAME_MAX + 1];
	BIO *b = BIO_new(BIO_s_mem());
	X509_NAME_print_ex(b, X509_get_subject_name(f->up_ca), 0, XN_FLAG_RFC2253);
	char *data;
	long len = BIO_get_mem_data(b, &data);
	snprintf(want, sizeof(want), "%.*s", (int)len, data);
	BIO_free(b);
	assert_string_equal(issuer, want);
	json_t *sans = json_object_get(c, "sans");
	assert_int_equal(json_array_size(sans), 3);
	assert_string_equal(json_string_value(json_array_get(sans, 0)), "DNS:www.test");
	assert_string_equal(json_string_value(json_array_get(sans, 1)), "DNS:alt.test");
	assert_string_equal(json_string_value(json_array_get(sans, 2)), "IP:192.0.2.7");
	assert_null(json_object_get(c, "sans_more"));
	const char *nb = json_string_value(json_object_get(c, "not_before"));
	const char *na = json_string_value(json_object_get(c, "not_after"));
	assert_non_null(nb);
	assert_non_null(na);
	assert_int_equal(strlen(nb), 20);
	assert_int_equal(nb[19], 'Z');
	assert_true(strcmp(nb, na) < 0);
	char fp[CA_FINGERPRINT_LEN];
	ca_fingerprint(f->srv_cert, fp);
	assert_string_equal(json_string_value(json_object_get(c, "sha256")), fp);
	assert_true(json_is_true(json_object_get(c, "verified")));
	assert_null(json_object_get(c, "verify_error"));
	assert_null(json_object_get(c, "insecure"));
	json_decref(c);
	leg_free(leg);

	/* 40 names, one with bytes past ASCII and one as long as allowed. */
	char san[8192] = "IP:2001:db8::7,DNS:caf\xc3\xa9.test";
	size_t off = strlen(san);
	for (int i = 0; i < 38; i++)
		off += (size_t)snprintf(san + off, sizeof(san) - off, ",DNS:n%d.test", i);
	X509 *many = make_cert(f->srv_key, "many.test", san, NULL, NULL);
	struct tls_ctx *t = ctx_new(f, true, true, NULL);
	leg = upstream_leg(f, t, "other.test", NULL, 0);
	upstream_handshake(f, leg, NULL, many);
	c = tls_leg_cert_json(leg);
	assert_non_null(c);
	sans = json_object_get(c, "sans");
	assert_int_equal(json_array_size(sans), TLS_CERT_SANS);
	assert_string_equal(json_string_value(json_array_get(sans, 0)), "IP:2001:db8::7");
	assert_string_equal(json_string_value(json_array_get(sans, 1)), "DNS:caf??.test");
	assert_string_equal(json_string_value(json_array_get(sans, 2)), "DNS:n0.test");
	assert_int_equal(json_integer_value(json_object_get(c, "sans_more")), 40 - TLS_CERT_SANS);
	assert_string_equal(json_string_value(json_object_get(c, "subject")), "CN=many.test");
	assert_false(json_is_true(json_object_get(c, "verified")));
	assert_non_null(
		strstr(json_string_value(json_object_get(c, "verify_error")), "self-signed"));
	assert_true(json_is_true(json_object_get(c, "insecure")));
	json_decref(c);
	leg_free(leg);
	X509_free(many);

	/* Insecure, a chain that verifies, the wrong name: the name is checked. */
	leg = upstream_leg(f, t, "wrong.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	c = tls_leg_cert_json(leg);
	char why[160];
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	assert_false(json_is_true(json_object_get(c, "verified")));
	assert_string_equal(json_string_value(json_object_get(c, "verify_error")),
			    "hostname mismatch");
	json_decref(c);
	leg_free(leg);
	tls_ctx_free(t);
}

static void test_upstream_wrong_host(void **state)
{
	struct fixture *f = *state;
	struct tls_leg *leg = upstream_leg(f, f->t, "other.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	assert_string_equal(f->seen.sni, "other.test");
	char why[160] = "";
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "hostname mismatch"));
	leg_free(leg);

	/* Without the test CA the chain itself fails. */
	struct tls_ctx *t = ctx_new(f, false, false, NULL);
	leg = upstream_leg(f, t, "www.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "local issuer"));
	leg_free(leg);
	tls_ctx_free(t);
}

/* Trust changed at run time: a leg begun after it uses the new anchors and
 * verification mode, one begun before keeps what it began with, and a bad
 * file changes nothing. */
static void test_upstream_set_trust(void **state)
{
	struct fixture *f = *state;
	struct tls_ctx *t = ctx_new(f, false, false, NULL);
	struct tls_leg *before = upstream_leg(f, t, "www.test", NULL, 0);
	const char *ca[] = { f->ca_path };
	char err[256] = "";
	assert_int_equal(tls_ctx_set_upstream(t, ca, 1, false, err, sizeof(err)), 0);
	struct tls_leg *leg = upstream_leg(f, t, "www.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	char why[160] = "";
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	leg_free(leg);
	upstream_handshake(f, before, NULL, NULL); /* the store it began with */
	assert_int_equal(tls_leg_verify(before, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "local issuer"));
	leg_free(before);

	char missing[160];
	snprintf(missing, sizeof(missing), "%s/missing.pem", f->dir);
	const char *bad[] = { missing };
	assert_int_equal(tls_ctx_set_upstream(t, bad, 1, true, err, sizeof(err)), -1);
	assert_non_null(strstr(err, missing));
	leg = upstream_leg(f, t, "other.test", NULL, 0); /* still verified */
	upstream_handshake(f, leg, NULL, NULL);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), -1);
	leg_free(leg);

	/* Insecure from now on. */
	assert_int_equal(tls_ctx_set_upstream(t, NULL, 0, true, err, sizeof(err)), 0);
	leg = upstream_leg(f, t, "other.test", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), 0);
	leg_free(leg);
	tls_ctx_free(t);
}

static void test_upstream_bad_ca_file(void **state)
{
	struct fixture *f = *state;
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/missing.pem", f->dir);
	struct tls_config cfg = {
		.ca_cert = f->mitm_ca,
		.ca_key = f->mitm_ca_key,
		.upstream_ca = { missing },
		.n_upstream_ca = 1,
	};
	char err[256] = "";
	assert_null(tls_ctx_new(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, missing));
}

/* A second connection to the same host:port resumes; another port does not. */
static void test_upstream_resumption(void **state)
{
	struct fixture *f = *state;
	SSL *peer;
	struct tls_leg *first = upstream_leg(f, f->t, "www.test", NULL, 0);
	upstream_handshake(f, first, &peer, NULL);
	assert_false(SSL_session_reused(peer));
	SSL_free(peer);
	/* Gone before the next one, without close_notify, as connections
	 * usually end: the session must survive it. */
	leg_free(first);

	struct tls_leg *second = upstream_leg(f, f->t, "www.test", NULL, 0);
	upstream_handshake(f, second, &peer, NULL);
	assert_true(SSL_session_reused(peer));
	assert_true(SSL_session_reused(second->ssl));
	char why[160] = "";
	assert_int_equal(tls_leg_verify(second, why, sizeof(why)), 0);
	assert_non_null(tls_leg_peer_cert(second));
	SSL_free(peer);

	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.upstream_handshakes, 2);
	assert_int_equal(st.upstream_resumed, 1);

	/* Same name, another port: a full handshake. */
	f->dest.sin_port = htons(8443);
	struct tls_leg *third = upstream_leg(f, f->t, "www.test", NULL, 0);
	upstream_handshake(f, third, &peer, NULL);
	assert_false(SSL_session_reused(peer));
	SSL_free(peer);
	/* Another name on the first port: a full handshake too. */
	f->dest.sin_port = htons(443);
	struct tls_leg *fourth = upstream_leg(f, f->t, "alt.test", NULL, 0);
	upstream_handshake(f, fourth, &peer, NULL);
	assert_false(SSL_session_reused(peer));
	SSL_free(peer);
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.upstream_handshakes, 4);
	assert_int_equal(st.upstream_resumed, 1);
	leg_free(second);
	leg_free(third);
	leg_free(fourth);
}

/* ---- client leg ----------------------------------------------------------- */

/* An OpenSSL client; trusting the wgmitm CA or nothing. */
static SSL_CTX *client_ctx(struct fixture *f, bool trust)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	assert_non_null(c);
	if (trust)
		assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(c), f->mitm_ca), 1);
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
	return c;
}

static SSL *client_peer(SSL_CTX *c, const char *sni, const char *alpn, size_t alpn_len)
{
	SSL *s = peer_new(c, false);
	if (sni) {
		assert_int_equal(SSL_set_tlsext_host_name(s, sni), 1);
		assert_int_equal(SSL_set1_host(s, sni), 1);
	}
	if (alpn_len)
		assert_int_equal(SSL_set_alpn_protos(s, (const uint8_t *)alpn, (unsigned)alpn_len),
				 0);
	return s;
}

static struct tls_leg *client_leg(struct fixture *f, X509 *leaf, const char *pick)
{
	struct tls_leg *leg = calloc(1, sizeof(*leg));
	assert_non_null(leg);
	assert_int_equal(
		tls_leg_client(f->t, leg, leaf, (const uint8_t *)pick, pick ? strlen(pick) : 0), 0);
	return leg;
}

static bool san_has_dns(X509 *x, const char *name)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS &&
		    (size_t)ASN1_STRING_length(g->d.dNSName) == strlen(name) &&
		    memcmp(ASN1_STRING_get0_data(g->d.dNSName), name, strlen(name)) == 0)
			found = true;
	}
	GENERAL_NAMES_free(gens);
	return found;
}

static bool san_has_ip4(X509 *x, const char *ip)
{
	uint8_t a[4];
	assert_int_equal(inet_pton(AF_INET, ip, a), 1);
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 4 &&
		    memcmp(ASN1_STRING_get0_data(g->d.iPAddress), a, 4) == 0)
			found = true;
	}
	GENERAL_NAMES_free(gens);
	return found;
}

static uint32_t xs_next(uint32_t *s)
{
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

#define BULK (1u << 20)

/* 1 MiB each way in uneven chunks, read back byte for byte. */
static void bulk_both_ways(struct tls_leg *leg, SSL *peer)
{
	uint8_t *src = malloc(BULK), *dst = malloc(BULK);
	assert_non_null(src);
	assert_non_null(dst);
	uint32_t rng = 0x9e3779b9;
	for (size_t i = 0; i < BULK; i++)
		src[i] = (uint8_t)xs_next(&rng);

	/* leg -> peer */
	size_t off = 0, got = 0;
	while (off < BULK) {
		size_t chunk = 1 + xs_next(&rng) % 40000;
		if (chunk > BULK - off)
			chunk = BULK - off;
		assert_int_equal(tls_leg_write(leg, src + off, chunk), TLS_OK);
		off += chunk;
		pump(leg, peer);
		size_t n;
		while (got < BULK && SSL_read_ex(peer, dst + got, BULK - got, &n) == 1)
			got += n;
		if (got < BULK)
			assert_int_equal(SSL_get_error(peer, 0), SSL_ERROR_WANT_READ);
	}
	assert_int_equal(got, BULK);
	assert_memory_equal(src, dst, BULK);

	/* peer -> leg, read through a small buffer */
	memset(dst, 0, BULK);
	off = got = 0;
	while (off < BULK) {
		size_t chunk = 1 + xs_next(&rng) % 40000, w;
		if (chunk > BULK - off)
			chunk = BULK - off;
		assert_int_equal(SSL_write_ex(peer, src + off, chunk, &w), 1);
		assert_int_equal(w, chunk);
		off += chunk;
		pump(leg, peer);
		for (;;) {
			uint8_t buf[3000];
			size_t n = 0;
			enum tls_result r = tls_leg_read(leg, buf, sizeof(buf), &n);
			if (r == TLS_WANT)
				break;
			assert_int_equal(r, TLS_OK);
			assert_true(n > 0 && n <= sizeof(buf));
			assert_true(got + n <= BULK);
			memcpy(dst + got, buf, n);
			got += n;
		}
	}
	assert_int_equal(got, BULK);
	assert_memory_equal(src, dst, BULK);
	free(src);
	free(dst);
}

static void test_client_leg(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, f->srv_cert);
	assert_non_null(leaf);
	/* The SNI plus the upstream certificate's names. */
	assert_true(san_has_dns(leaf, "www.test"));
	assert_true(san_has_dns(leaf, "alt.test"));
	assert_true(san_has_ip4(leaf, "192.0.2.7"));

	struct tls_leg *leg = client_leg(f, leaf, "h2");
	X509_free(leaf); /* the leg holds its own reference */
	SSL_CTX *cc = client_ctx(f, true);
	SSL *peer = client_peer(cc, "www.test", ALPN_WIRE, ALPN_WIRE_LEN);

	struct hs h = handshake(leg, peer);
	assert_int_equal(h.leg, TLS_OK);
	assert_int_equal(h.peer, 1);
	assert_true(leg->done);
	assert_true(leg->cert_sent);
	assert_int_equal(SSL_get_verify_result(peer), X509_V_OK);
	assert_false(tls_leg_client_rejected(leg));
	assert_alpn(leg, "h2");
	const uint8_t *p;
	unsigned plen;
	SSL_get0_alpn_selected(peer, &p, &plen);
	assert_int_equal(plen, 2);
	assert_memory_equal(p, "h2", 2);

	json_t *j = tls_leg_json(leg);
	assert_string_equal(json_string_value(json_object_get(j, "version")), "TLSv1.3");
	assert_true(strlen(json_string_value(json_object_get(j, "cipher"))) > 0);
	assert_string_equal(json_string_value(json_object_get(j, "alpn")), "h2");
	json_decref(j);

	bulk_both_ways(leg, peer);

	/* Our close_notify reaches the client... */
	tls_leg_close_notify(leg);
	pump(leg, peer);
	uint8_t b[16];
	size_t n;
	assert_int_equal(SSL_read_ex(peer, b, sizeof(b), &n), 0);
	assert_int_equal(SSL_get_error(peer, 0), SSL_ERROR_ZERO_RETURN);
	/* ...and the client's reads as TLS_CLOSED. */
	assert_true(SSL_shutdown(peer) >= 0);
	pump(leg, peer);
	assert_int_equal(tls_leg_read(leg, b, sizeof(b), &n), TLS_CLOSED);
	assert_int_equal(n, 0);

	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.client_handshakes, 1);
	assert_int_equal(st.client_rejected, 0);
	assert_int_equal(st.client_failed, 0);
	assert_int_equal(st.leaves_minted, 1);
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* The client closes first: TLS_CLOSED on the client leg. */
static void test_client_close_first(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, true);
	SSL *peer = client_peer(cc, "www.test", NULL, 0);
	struct hs h = handshake(leg, peer);
	assert_int_equal(h.leg, TLS_OK);
	const char msg[] = "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n";
	size_t w;
	assert_int_equal(SSL_write_ex(peer, msg, sizeof(msg) - 1, &w), 1);
	assert_int_equal(SSL_shutdown(peer), 0);
	pump(leg, peer);
	uint8_t b[256];
	size_t n;
	assert_int_equal(tls_leg_read(leg, b, sizeof(b), &n), TLS_OK);
	assert_int_equal(n, sizeof(msg) - 1);
	assert_memory_equal(b, msg, n);
	assert_int_equal(tls_leg_read(leg, b, sizeof(b), &n), TLS_CLOSED);
	/* Writing after the client closed still works (half-close). */
	assert_int_equal(tls_leg_write(leg, (const uint8_t *)"HTTP/1.1 204 \r\n\r\n", 17), TLS_OK);
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

static void test_client_alpn(void **state)
{
	struct fixture *f = *state;
	SSL_CTX *cc = client_ctx(f, true);
	const struct {
		const char *pick;  /* what the upstream chose */
		const char *offer; /* what the client offers (wire) */
		size_t offer_len;
		const char *want;
	} rows[] = {
		{ "h2", ALPN_WIRE, ALPN_WIRE_LEN, "h2" },
		{ "http/1.1", ALPN_WIRE, ALPN_WIRE_LEN, "http/1.1" },
		{ "h2", NULL, 0, NULL },                  /* client offers none */
		{ "h2", "\x08http/1.1", 9, NULL },        /* not offered */
		{ NULL, ALPN_WIRE, ALPN_WIRE_LEN, NULL }, /* upstream chose none */
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		X509 *leaf =
			tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
		struct tls_leg *leg = client_leg(f, leaf, rows[i].pick);
		X509_free(leaf);
		SSL *peer = client_peer(cc, "www.test", rows[i].offer, rows[i].offer_len);
		struct hs h = handshake(leg, peer);
		assert_int_equal(h.leg, TLS_OK);
		assert_int_equal(h.peer, 1);
		assert_alpn(leg, rows[i].want);
		const uint8_t *p;
		unsigned plen;
		SSL_get0_alpn_selected(peer, &p, &plen);
		assert_int_equal(plen, rows[i].want ? strlen(rows[i].want) : 0);
		json_t *j = tls_leg_json(leg);
		if (rows[i].want)
			assert_string_equal(json_string_value(json_object_get(j, "alpn")),
					    rows[i].want);
		else
			assert_true(json_is_null(json_object_get(j, "alpn")));
		json_decref(j);
		SSL_free(peer);
		leg_free(leg);
	}
	SSL_CTX_free(cc);
}

/* No SNI: the leaf is for the dialled IP, and a client checking the IP
 * accepts it. */
static void test_client_leaf_ip(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, NULL, (const struct sockaddr *)&f->dest, NULL);
	assert_non_null(leaf);
	assert_true(san_has_ip4(leaf, "192.0.2.7"));
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, true);
	SSL *peer = client_peer(cc, NULL, NULL, 0);
	assert_int_equal(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(peer), "192.0.2.7"), 1);
	struct hs h = handshake(leg, peer);
	assert_int_equal(h.leg, TLS_OK);
	assert_int_equal(h.peer, 1);
	assert_int_equal(SSL_get_verify_result(peer), X509_V_OK);
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* ---- a client that does not accept us ----------------------------------- */

static void test_client_rejects_alert(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, false); /* trusts nothing */
	SSL *peer = client_peer(cc, "www.test", NULL, 0);

	struct hs h = handshake(leg, peer);
	assert_int_equal(h.peer_err, SSL_ERROR_SSL);
	assert_int_equal(h.leg, TLS_ERROR);
	assert_false(leg->done);
	assert_true(leg->cert_sent);
	assert_int_equal(leg->alert_received, SSL_AD_UNKNOWN_CA);
	assert_true(tls_leg_client_rejected(leg));
	char why[160];
	tls_leg_error(leg, why, sizeof(why));
	char want[80];
	snprintf(want, sizeof(want), "alert %s received",
		 SSL_alert_desc_string_long(SSL_AD_UNKNOWN_CA));
	assert_string_equal(why, want);
	assert_string_equal(why, "alert unknown CA received");

	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.client_rejected, 1);
	assert_int_equal(st.client_failed, 0);
	assert_int_equal(st.client_handshakes, 0);
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* A client that checks the name: bad_certificate-class alerts count too. */
static void test_client_rejects_name(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, true);
	SSL *peer = client_peer(cc, "www.test", NULL, 0);
	assert_int_equal(SSL_set1_host(peer, "elsewhere.test"), 1);
	struct hs h = handshake(leg, peer);
	assert_int_equal(h.peer_err, SSL_ERROR_SSL);
	assert_int_equal(SSL_get_verify_result(peer), X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(h.leg, TLS_ERROR);
	assert_true(leg->alert_received >= 0);
	assert_true(tls_leg_client_rejected(leg));
	char why[160];
	tls_leg_error(leg, why, sizeof(why));
	assert_non_null(strstr(why, "alert "));
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* A client that goes quiet after our flight (pinning apps often just hang
 * up): a rejection while the handshake is still pending. */
static void test_client_hangs_up(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, false);
	SSL *peer = client_peer(cc, "www.test", NULL, 0);

	/* Nothing received yet: not a rejection. */
	assert_int_equal(tls_leg_handshake(leg), TLS_WANT);
	assert_false(leg->cert_sent);
	assert_false(tls_leg_client_rejected(leg));

	/* ClientHello in, server flight out, then nothing more. */
	assert_true(SSL_do_handshake(peer) <= 0);
	pump(leg, peer);
	assert_int_equal(tls_leg_handshake(leg), TLS_WANT);
	const uint8_t *p;
	assert_true(tls_leg_out(leg, &p) > 0);
	assert_true(leg->cert_sent);
	assert_false(leg->done);
	assert_int_equal(leg->alert_received, -1);
	assert_true(tls_leg_client_rejected(leg));
	ERR_clear_error();
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* Not TLS at all: a failure, not a rejection. */
static void test_client_garbage(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	const char junk[] = "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n";
	assert_int_equal(tls_leg_feed(leg, (const uint8_t *)junk, sizeof(junk) - 1), 0);
	assert_int_equal(tls_leg_handshake(leg), TLS_ERROR);
	assert_false(leg->cert_sent);
	assert_false(tls_leg_client_rejected(leg));
	char why[160];
	tls_leg_error(leg, why, sizeof(why));
	assert_true(strlen(why) > 0);
	assert_string_not_equal(why, "unknown TLS error");
	/* A later call does not turn it into success. */
	assert_int_equal(tls_leg_handshake(leg), TLS_ERROR);
	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.client_rejected, 0);
	assert_true(st.client_failed >= 1);
	leg_free(leg);

	/* Random bytes shaped like a handshake record. */
	X509 *leaf2 = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	leg = client_leg(f, leaf2, NULL);
	X509_free(leaf2);
	uint8_t rec[5 + 64] = { 0x16, 0x03, 0x01, 0x00, 64 };
	uint32_t rng = 7;
	for (size_t i = 5; i < sizeof(rec); i++)
		rec[i] = (uint8_t)xs_next(&rng);
	assert_int_equal(tls_leg_feed(leg, rec, sizeof(rec)), 0);
	assert_int_equal(tls_leg_handshake(leg), TLS_ERROR);
	assert_false(tls_leg_client_rejected(leg));
	leg_free(leg);
}

/* The client got our flight, then sent something that is not TLS: a
 * protocol failure, not a rejection of the certificate (it would put the
 * host on the automatic passthrough list). */
static void test_client_garbage_after_flight(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, true);
	SSL *peer = client_peer(cc, "www.test", NULL, 0);
	assert_true(SSL_do_handshake(peer) <= 0);
	pump(leg, peer);
	assert_int_equal(tls_leg_handshake(leg), TLS_WANT);
	assert_true(leg->cert_sent);
	const uint8_t *p;
	tls_leg_consume(leg, tls_leg_out(leg, &p)); /* the flight went out */

	const char junk[] = "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n";
	assert_int_equal(tls_leg_feed(leg, (const uint8_t *)junk, sizeof(junk) - 1), 0);
	assert_int_equal(tls_leg_handshake(leg), TLS_ERROR);
	assert_int_equal(leg->alert_received, -1);
	assert_false(tls_leg_client_rejected(leg));
	char why[160];
	tls_leg_error(leg, why, sizeof(why));
	assert_string_not_equal(why, "unknown TLS error");
	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.client_rejected, 0);
	assert_int_equal(st.client_failed, 1);
	ERR_clear_error();
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* A TLS 1.2 client that answers our flight with close_notify (a plaintext
 * alert record before ChangeCipherSpec): a rejection. */
static void test_client_close_after_flight(void **state)
{
	struct fixture *f = *state;
	X509 *leaf = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *leg = client_leg(f, leaf, NULL);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, true);
	assert_int_equal(SSL_CTX_set_max_proto_version(cc, TLS1_2_VERSION), 1);
	SSL *peer = client_peer(cc, "www.test", NULL, 0);
	assert_true(SSL_do_handshake(peer) <= 0);
	pump(leg, peer);
	assert_int_equal(tls_leg_handshake(leg), TLS_WANT);
	assert_true(leg->cert_sent);
	const uint8_t *p;
	tls_leg_consume(leg, tls_leg_out(leg, &p));

	static const uint8_t close_notify[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00 };
	assert_int_equal(tls_leg_feed(leg, close_notify, sizeof(close_notify)), 0);
	assert_int_equal(tls_leg_handshake(leg), TLS_ERROR);
	assert_true(tls_leg_client_rejected(leg));
	char why[160];
	tls_leg_error(leg, why, sizeof(why));
	assert_string_equal(why, "closed during the handshake");
	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.client_rejected, 1);
	assert_int_equal(st.client_failed, 0);
	ERR_clear_error();
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(leg);
}

/* TLS 1.2 on both legs: the same outcomes, resumption by session ID or
 * ticket. */
static void test_tls12(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(SSL_CTX_set_max_proto_version(f->srv, TLS1_2_VERSION), 1);
	SSL *peer;
	struct tls_leg *a =
		upstream_leg(f, f->t, "www.test", (const uint8_t *)ALPN_WIRE, ALPN_WIRE_LEN);
	upstream_handshake(f, a, &peer, NULL);
	assert_false(SSL_session_reused(peer));
	SSL_free(peer);
	assert_alpn(a, "h2");
	json_t *j = tls_leg_json(a);
	assert_string_equal(json_string_value(json_object_get(j, "version")), "TLSv1.2");
	json_decref(j);
	struct tls_leg *b = upstream_leg(f, f->t, "www.test", NULL, 0);
	upstream_handshake(f, b, &peer, NULL);
	assert_true(SSL_session_reused(peer));
	SSL_free(peer);
	char why[160];
	assert_int_equal(tls_leg_verify(b, why, sizeof(why)), 0);
	leg_free(a);
	leg_free(b);

	/* Client leg: a TLS 1.2 client that trusts us, one that does not. */
	for (int trust = 1; trust >= 0; trust--) {
		X509 *leaf =
			tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
		struct tls_leg *leg = client_leg(f, leaf, "h2");
		X509_free(leaf);
		SSL_CTX *cc = client_ctx(f, trust);
		assert_int_equal(SSL_CTX_set_max_proto_version(cc, TLS1_2_VERSION), 1);
		peer = client_peer(cc, "www.test", ALPN_WIRE, ALPN_WIRE_LEN);
		struct hs h = handshake(leg, peer);
		if (trust) {
			assert_int_equal(h.leg, TLS_OK);
			assert_int_equal(h.peer, 1);
			assert_alpn(leg, "h2");
			j = tls_leg_json(leg);
			assert_string_equal(json_string_value(json_object_get(j, "version")),
					    "TLSv1.2");
			json_decref(j);
		} else {
			assert_int_equal(h.leg, TLS_ERROR);
			assert_true(tls_leg_client_rejected(leg));
			tls_leg_error(leg, why, sizeof(why));
			assert_string_equal(why, "alert unknown CA received");
		}
		SSL_free(peer);
		SSL_CTX_free(cc);
		leg_free(leg);
	}
}

/* What the client leg offers: TLS 1.2 and 1.3 only, and on TLS 1.2 only
 * ECDHE with an AEAD cipher (AES-GCM, ChaCha20-Poly1305), signed with the
 * leaf's key (ECDSA): no CBC suite (LUCKY13 and its kin), no RSA key
 * transport, nothing older than TLS 1.2. */
static void test_client_leg_suites(void **state)
{
	struct fixture *f = *state;
	static const struct {
		int version;        /* the client's only version */
		const char *suites; /* the client's TLS 1.2 list */
		const char *chosen; /* NULL: the handshake fails */
	} cases[] = {
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256",
		  "ECDHE-ECDSA-AES128-GCM-SHA256" },
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384",
		  "ECDHE-ECDSA-AES256-GCM-SHA384" },
		{ TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305",
		  "ECDHE-ECDSA-CHACHA20-POLY1305" },
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA", NULL },    /* CBC, HMAC-SHA1 */
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256", NULL }, /* CBC */
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES256-SHA384", NULL }, /* CBC */
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES256-SHA", NULL },    /* CBC */
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES128-CCM", NULL },    /* AEAD, but not offered */
		/* CBC preferred by the client: we pick the AEAD one. */
		{ TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256",
		  "ECDHE-ECDSA-AES128-GCM-SHA256" },
		{ TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0", NULL },
		{ TLS1_VERSION, "DEFAULT:@SECLEVEL=0", NULL },
		{ TLS1_3_VERSION, NULL, "TLS_AES_128_GCM_SHA256" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509 *leaf =
			tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, NULL);
		struct tls_leg *leg = client_leg(f, leaf, NULL);
		X509_free(leaf);
		SSL_CTX *cc = client_ctx(f, true);
		assert_int_equal(SSL_CTX_set_min_proto_version(cc, cases[i].version), 1);
		assert_int_equal(SSL_CTX_set_max_proto_version(cc, cases[i].version), 1);
		if (cases[i].suites)
			assert_int_equal(SSL_CTX_set_cipher_list(cc, cases[i].suites), 1);
		SSL *peer = client_peer(cc, "www.test", NULL, 0);
		struct hs h = handshake(leg, peer);
		const char *got = h.peer == 1 ? SSL_get_cipher_name(peer) : "(failed)";
		if (cases[i].chosen ? h.peer != 1 || strcmp(got, cases[i].chosen) != 0
				    : h.peer == 1)
			print_error("version %#x, client suites %s: got %s, expected %s\n",
				    cases[i].version, cases[i].suites ? cases[i].suites : "default",
				    got, cases[i].chosen ? cases[i].chosen : "a failed handshake");
		if (cases[i].chosen) {
			assert_int_equal(h.leg, TLS_OK);
			assert_int_equal(h.peer, 1);
			assert_string_equal(got, cases[i].chosen);
		} else {
			assert_int_equal(h.leg, TLS_ERROR);
			assert_int_not_equal(h.peer, 1);
			assert_false(tls_leg_client_rejected(leg)); /* a failure, not a rejection */
		}
		SSL_free(peer);
		SSL_CTX_free(cc);
		leg_free(leg);
	}
}

/* A client that sent an IP literal as SNI (not allowed, but seen) is
 * verified upstream against the IP, as OpenSSL's SSL_set1_host does, and
 * the leaf carries the IP. */
static void test_upstream_ip_literal_sni(void **state)
{
	struct fixture *f = *state;
	struct tls_leg *leg = upstream_leg(f, f->t, "192.0.2.7", NULL, 0);
	upstream_handshake(f, leg, NULL, NULL);
	assert_string_equal(f->seen.sni, "192.0.2.7");
	char why[160] = "";
	int v = tls_leg_verify(leg, why, sizeof(why));
	if (v != 0)
		print_message("verify: %s\n", why);
	assert_int_equal(v, 0);
	leg_free(leg);

	X509 *named = make_cert(f->srv_key, "www.test", "DNS:www.test", f->up_ca, f->up_ca_key);
	f->dest.sin_port = htons(4443); /* not a resumption of the first */
	leg = upstream_leg(f, f->t, "192.0.2.7", NULL, 0);
	upstream_handshake(f, leg, NULL, named);
	assert_int_equal(tls_leg_verify(leg, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "IP address mismatch"));
	leg_free(leg);
	X509_free(named);

	X509 *leaf = tls_leaf_for(f->t, "192.0.2.7", (const struct sockaddr *)&f->dest, NULL);
	assert_true(san_has_ip4(leaf, "192.0.2.7"));
	X509_free(leaf);
}

/* ---- plain legs ---------------------------------------------------------- */

/* A leg without TLS: what is fed is read as it is, what is written is the
 * output, EOF after the bytes, nothing to verify or describe. */
static void test_plain_leg(void **state)
{
	struct fixture *f = *state;
	struct tls_leg leg;
	assert_int_equal(tls_leg_plain(f->t, &leg, true, (const uint8_t *)"h2", 2), 0);
	assert_int_equal(tls_leg_handshake(&leg), TLS_OK);
	uint8_t buf[8];
	size_t n = 1;
	assert_int_equal(tls_leg_read(&leg, buf, sizeof(buf), &n), TLS_WANT);
	assert_int_equal(n, 0);
	assert_int_equal(tls_leg_feed(&leg, (const uint8_t *)"hello, world", 12), 0);
	assert_int_equal(tls_leg_plain_pending(&leg), 12);
	tls_leg_plain_eof(&leg);
	assert_int_equal(tls_leg_read(&leg, buf, sizeof(buf), &n), TLS_OK);
	assert_memory_equal(buf, "hello, w", 8);
	assert_int_equal(tls_leg_read(&leg, buf, sizeof(buf), &n), TLS_OK);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "orld", 4);
	assert_int_equal(tls_leg_read(&leg, buf, sizeof(buf), &n), TLS_CLOSED);

	assert_int_equal(tls_leg_write(&leg, (const uint8_t *)"abc", 3), TLS_OK);
	tls_leg_close_notify(&leg); /* nothing on the wire */
	const uint8_t *out;
	assert_int_equal(tls_leg_out(&leg, &out), 3);
	assert_memory_equal(out, "abc", 3);
	tls_leg_consume(&leg, 3);
	assert_int_equal(tls_leg_out(&leg, &out), 0);

	char why[64];
	assert_int_equal(tls_leg_verify(&leg, why, sizeof(why)), 0);
	assert_false(tls_leg_client_rejected(&leg));
	assert_null(tls_leg_peer_cert(&leg));
	assert_null(tls_leg_cert_json(&leg));
	json_t *j = tls_leg_json(&leg);
	assert_true(json_is_null(j));
	json_decref(j);
	const uint8_t *alpn;
	unsigned alen;
	tls_leg_alpn(&leg, &alpn, &alen);
	assert_int_equal(alen, 2);
	assert_memory_equal(alpn, "h2", 2);
	assert_int_equal(tls_leg_plain_pending(&leg), 0);
	tls_leg_free(&leg);

	/* A TLS leg never reports plain bytes. */
	assert_int_equal(tls_leg_upstream(f->t, &leg, "www.test", (const struct sockaddr *)&f->dest,
					  NULL, 0),
			 0);
	assert_int_equal(tls_leg_plain_pending(&leg), 0);
	tls_leg_free(&leg);
}

/* ---- leaves, key log -------------------------------------------------- */

static void test_leaf_cache(void **state)
{
	struct fixture *f = *state;
	X509 *a = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, f->srv_cert);
	X509 *b = tls_leaf_for(f->t, "www.test", (const struct sockaddr *)&f->dest, f->srv_cert);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(X509_cmp(a, b), 0);
	struct tls_stats st;
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.leaves_minted, 1);
	assert_int_equal(st.leaf_cache_hits, 1);

	/* Another set of names is another leaf. */
	X509 *c = tls_leaf_for(f->t, "other.test", (const struct sockaddr *)&f->dest, NULL);
	assert_non_null(c);
	assert_int_not_equal(X509_cmp(a, c), 0);
	assert_false(san_has_dns(c, "www.test"));
	tls_ctx_stats(f->t, &st);
	assert_int_equal(st.leaves_minted, 2);
	assert_int_equal(st.leaf_cache_hits, 1);
	X509_free(a);
	X509_free(b);
	X509_free(c);
}

/* The lines of the key log with `label` and this connection's client random. */
static int keylog_count(const char *path, const char *label, SSL *ssl, size_t *total)
{
	uint8_t cr[SSL3_RANDOM_SIZE];
	assert_int_equal(SSL_get_client_random(ssl, cr, sizeof(cr)), sizeof(cr));
	char hex[2 * SSL3_RANDOM_SIZE + 1];
	for (size_t i = 0; i < sizeof(cr); i++)
		snprintf(hex + 2 * i, 3, "%02x", cr[i]);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	char line[512];
	int n = 0;
	*total = 0;
	while (fgets(line, sizeof(line), fp)) {
		(*total)++;
		size_t ll = strlen(label);
		if (strncmp(line, label, ll) == 0 && line[ll] == ' ' &&
		    strncmp(line + ll + 1, hex, 2 * SSL3_RANDOM_SIZE) == 0)
			n++;
	}
	fclose(fp);
	return n;
}

static void test_keylog(void **state)
{
	struct fixture *f = *state;
	struct tls_ctx *t = ctx_new(f, true, false, f->keylog_path);

	struct tls_leg *up = upstream_leg(f, t, "www.test", NULL, 0);
	upstream_handshake(f, up, NULL, NULL);

	X509 *leaf = tls_leaf_for(t, "www.test", (const struct sockaddr *)&f->dest, NULL);
	struct tls_leg *cl = calloc(1, sizeof(*cl));
	assert_int_equal(tls_leg_client(t, cl, leaf, NULL, 0), 0);
	X509_free(leaf);
	SSL_CTX *cc = client_ctx(f, true);
	SSL *peer = client_peer(cc, "www.test", NULL, 0);
	struct hs h = handshake(cl, peer);
	assert_int_equal(h.leg, TLS_OK);

	size_t total;
	const char *labels[] = { "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
				 "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
				 "SERVER_TRAFFIC_SECRET_0" };
	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
		assert_int_equal(keylog_count(f->keylog_path, labels[i], up->ssl, &total), 1);
		assert_int_equal(keylog_count(f->keylog_path, labels[i], cl->ssl, &total), 1);
	}
	struct tls_stats st;
	tls_ctx_stats(t, &st);
	assert_true(total >= 8);
	assert_int_equal(st.keylog_lines, total);
	SSL_free(peer);
	SSL_CTX_free(cc);
	leg_free(cl);
	leg_free(up);
	tls_ctx_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_upstream_sni_alpn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_no_alpn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_by_ip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_self_signed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_cert_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_wrong_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_bad_ca_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_set_trust, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_resumption, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_leg, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_close_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_alpn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_leaf_ip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_rejects_alert, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_rejects_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_hangs_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_garbage_after_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_close_after_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls12, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_leg_suites, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_ip_literal_sni, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leaf_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keylog, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plain_leg, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
