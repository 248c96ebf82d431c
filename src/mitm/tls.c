/* TLS legs over memory BIOs; see tls.h. */
#include "mitm/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "mitm/ca.h"
#include "mitm/cert.h"
#include "mitm/certcache.h"
#include "flows/flowlog.h"

/* The client leg's suites, in our order of preference. */
#define TLS_CLIENT_SUITES_ECDSA                                                                    \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-"        \
	"POLY1305"
#define TLS_CLIENT_SUITES_RSA                                                                      \
	"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_CLIENT_SUITES_13                                                                       \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* Upstream sessions kept for resumption, by host and port: a new TLS
 * connection to a host we saw costs one round trip less and no upstream
 * certificate verification. Collisions replace. */
#define TLS_SESS_SLOTS 1024

struct tls_sess {
	char key[288];
	SSL_SESSION *sess;
};

struct tls_ctx {
	SSL_CTX *client_side;   /* server role, toward the tunnel client */
	SSL_CTX *upstream_side; /* client role, toward the real server */
	struct cert_minter minter;
	struct certcache *cache;
	bool insecure;
	int keylog_fd;
	struct tls_stats stats;
	uint8_t sess_hash_key[crypto_shorthash_KEYBYTES];
	struct tls_sess sess[TLS_SESS_SLOTS];
	struct cert_names names; /* scratch for tls_leaf_for (one loop thread) */
};

static int tls_leg_index = -1;

static struct tls_leg *leg_of(const SSL *ssl)
{
	return SSL_get_ex_data(ssl, tls_leg_index);
}

static void set_err_from_queue(struct tls_leg *leg, const char *what)
{
	if (leg->err[0])
		return;
	unsigned long e = ERR_peek_last_error();
	if (e) {
		char buf[120];
		ERR_error_string_n(e, buf, sizeof(buf));
		const char *reason = ERR_reason_error_string(e);
		snprintf(leg->err, sizeof(leg->err), "%s: %s", what, reason ? reason : buf);
	} else {
		snprintf(leg->err, sizeof(leg->err), "%s", what);
	}
}

/* ---- callbacks ------------------------------------------------------------ */

static void on_keylog(const SSL *ssl, const char *line)
{
	struct tls_leg *leg = leg_of(ssl);
	if (!leg || leg->ctx->keylog_fd < 0)
		return;
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "%s\n", line);
	if (n <= 0 || (size_t)n >= sizeof(buf))
		return;
	/* One write per line on an O_APPEND descriptor: lines never interleave. */
	if (write(leg->ctx->keylog_fd, buf, (size_t)n) == n)
		leg->ctx->stats.keylog_lines++;
}

static void on_info(const SSL *ssl, int where, int ret)
{
	struct tls_leg *leg = leg_of(ssl);
	if (!leg || !(where & SSL_CB_ALERT))
		return;
	if ((ret >> 8) != SSL3_AL_FATAL)
		return;
	if (where & SSL_CB_READ)
		leg->alert_received = ret & 0xff;
	else
		leg->alert_sent = ret & 0xff;
}

/* Sees every handshake message: tells when our Certificate went out. */
static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
		   SSL *ssl, void *arg)
{
	(void)version;
	(void)arg;
	if (!write_p || content_type != SSL3_RT_HANDSHAKE || len < 1)
		return;
	struct tls_leg *leg = leg_of(ssl);
	if (leg && ((const uint8_t *)buf)[0] == SSL3_MT_CERTIFICATE)
		leg->cert_sent = true;
}

/* Client leg: answer with the upstream's choice when the client offered it. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)arg;
	struct tls_leg *leg = leg_of(ssl);
	if (!leg || leg->alpn_pick_len == 0)
		return SSL_TLSEXT_ERR_NOACK;
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == leg->alpn_pick_len && memcmp(in + i + 1, leg->alpn_pick, l) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)l;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static size_t sess_slot(const struct tls_ctx *t, const char *key)
{
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, (const uint8_t *)key, strlen(key), t->sess_hash_key);
	uint64_t v;
	memcpy(&v, h, sizeof(v));
	return (size_t)(v % TLS_SESS_SLOTS);
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_leg *leg = leg_of(ssl);
	if (!leg || !leg->sess_key[0])
		return 0;
	struct tls_ctx *t = leg->ctx;
	struct tls_sess *s = &t->sess[sess_slot(t, leg->sess_key)];
	if (s->sess)
		SSL_SESSION_free(s->sess);
	snprintf(s->key, sizeof(s->key), "%s", leg->sess_key);
	s->sess = sess;
	return 1; /* we keep the reference */
}

/* ---- context ---------------------------------------------------------------- */

/* The upstream side: the system trust store plus the user's anchors. */
static int upstream_side_init(struct tls_ctx *t, SSL_CTX *c, const char *const *ca, size_t nca,
			      char *err, size_t errlen)
{
	SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_info_callback(c, on_info);
	if (SSL_CTX_set_default_verify_paths(c) != 1) {
		snprintf(err, errlen, "cannot load the system trust store");
		return -1;
	}
	for (size_t i = 0; i < nca; i++) {
		if (SSL_CTX_load_verify_locations(c, ca[i], NULL) != 1) {
			unsigned long e = ERR_get_error();
			snprintf(err, errlen, "upstream CA %s: %s", ca[i],
				 e ? ERR_reason_error_string(e) : "cannot load");
			return -1;
		}
	}
	/* Never abort the handshake on verification: the result is read
	 * afterwards so the client can be told why (502). */
	SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(c, on_new_session);
	if (t->keylog_fd >= 0)
		SSL_CTX_set_keylog_callback(c, on_keylog);
	return 0;
}

static void sessions_forget(struct tls_ctx *t)
{
	for (size_t i = 0; i < TLS_SESS_SLOTS; i++) {
		SSL_SESSION_free(t->sess[i].sess);
		t->sess[i].sess = NULL;
		t->sess[i].key[0] = '\0';
	}
}

int tls_ctx_set_upstream(struct tls_ctx *t, const char *const *ca, size_t nca, bool insecure,
			 char *err, size_t errlen)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (upstream_side_init(t, c, ca, nca, err, errlen) < 0) {
		ERR_clear_error();
		SSL_CTX_free(c);
		return -1;
	}
	/* Legs in progress hold their own reference to the old one. */
	SSL_CTX_free(t->upstream_side);
	t->upstream_side = c;
	t->insecure = insecure;
	/* A session made without verification must not skip it later. */
	sessions_forget(t);
	return 0;
}

struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, char *err, size_t errlen)
{
	if (tls_leg_index < 0)
		tls_leg_index = SSL_get_ex_new_index(0, "wgmitm leg", NULL, NULL, NULL);
	struct tls_ctx *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->keylog_fd = -1;
	t->insecure = cfg->insecure_upstream;
	randombytes_buf(t->sess_hash_key, sizeof(t->sess_hash_key));
	if (cert_minter_init(&t->minter, cfg->ca_cert, cfg->ca_key, NULL, err, errlen) < 0) {
		free(t);
		return NULL;
	}
	t->cache = certcache_new(cfg->cert_cache);
	t->client_side = SSL_CTX_new(TLS_server_method());
	t->upstream_side = SSL_CTX_new(TLS_client_method());
	if (!t->cache || !t->client_side || !t->upstream_side) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* Client side: the leaf is set per connection; the shared leaf key
	 * once here. */
	if (SSL_CTX_use_PrivateKey(t->client_side, cert_minter_key(&t->minter)) != 1) {
		snprintf(err, errlen, "cannot use the leaf key");
		goto fail;
	}
	SSL_CTX_set_alpn_select_cb(t->client_side, on_alpn_select, NULL);
	SSL_CTX_set_options(t->client_side, SSL_OP_NO_RENEGOTIATION |
						    SSL_OP_CIPHER_SERVER_PREFERENCE |
						    SSL_OP_PRIORITIZE_CHACHA);
	/* Toward clients: TLS 1.2 and 1.3 only, and on TLS 1.2 only ECDHE
	 * with an AEAD cipher, signed with the leaf's key: no CBC suite
	 * (LUCKY13 and the padding oracles), no RSA key transport. ChaCha20
	 * wins when the client prefers it (phones without AES instructions). */
	bool rsa_leaf = EVP_PKEY_get_base_id(cert_minter_key(&t->minter)) == EVP_PKEY_RSA;
	if (SSL_CTX_set_min_proto_version(t->client_side, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(t->client_side, rsa_leaf ? TLS_CLIENT_SUITES_RSA
							     : TLS_CLIENT_SUITES_ECDSA) != 1 ||
	    SSL_CTX_set_ciphersuites(t->client_side, TLS_CLIENT_SUITES_13) != 1) {
		snprintf(err, errlen, "cannot set the client-side TLS versions and suites");
		goto fail;
	}
	SSL_CTX_set_mode(t->client_side, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_info_callback(t->client_side, on_info);
	if (upstream_side_init(t, t->upstream_side, cfg->upstream_ca, cfg->n_upstream_ca, err,
			       errlen) < 0)
		goto fail;

	if (cfg->keylog_path && cfg->keylog_path[0]) {
		t->keylog_fd =
			open(cfg->keylog_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (t->keylog_fd < 0) {
			snprintf(err, errlen, "SSLKEYLOGFILE %s: %s", cfg->keylog_path,
				 strerror(errno));
			goto fail;
		}
		SSL_CTX_set_keylog_callback(t->client_side, on_keylog);
		SSL_CTX_set_keylog_callback(t->upstream_side, on_keylog);
	}
	ERR_clear_error();
	return t;
fail:
	ERR_clear_error();
	tls_ctx_free(t);
	return NULL;
}

void tls_ctx_free(struct tls_ctx *t)
{
	if (!t)
		return;
	sessions_forget(t);
	SSL_CTX_free(t->client_side);
	SSL_CTX_free(t->upstream_side);
	certcache_free(t->cache);
	cert_minter_free(&t->minter);
	if (t->keylog_fd >= 0)
		close(t->keylog_fd);
	free(t);
}

void tls_ctx_stats(const struct tls_ctx *t, struct tls_stats *out)
{
	*out = t->stats;
}

/* ---- legs ----------------------------------------------------------------- */

static int leg_init(struct tls_ctx *t, struct tls_leg *leg, SSL_CTX *sctx, bool server)
{
	memset(leg, 0, sizeof(*leg));
	leg->ctx = t;
	leg->server = server;
	leg->alert_received = -1;
	leg->alert_sent = -1;
	leg->ssl = SSL_new(sctx);
	leg->in = BIO_new(BIO_s_mem());
	leg->out = BIO_new(BIO_s_mem());
	if (!leg->ssl || !leg->in || !leg->out) {
		SSL_free(leg->ssl);
		BIO_free(leg->in);
		BIO_free(leg->out);
		leg->ssl = NULL;
		return -ENOMEM;
	}
	/* An empty input BIO means "wait for more", not EOF. */
	BIO_set_mem_eof_return(leg->in, -1);
	SSL_set_bio(leg->ssl, leg->in, leg->out);
	SSL_set_ex_data(leg->ssl, tls_leg_index, leg);
	SSL_set_msg_callback(leg->ssl, on_msg);
	if (server)
		SSL_set_accept_state(leg->ssl);
	else
		SSL_set_connect_state(leg->ssl);
	return 0;
}

int tls_leg_upstream(struct tls_ctx *t, struct tls_leg *leg, const char *sni,
		     const struct sockaddr *dest, const uint8_t *alpn, size_t alpn_len)
{
	int rc = leg_init(t, leg, t->upstream_side, false);
	if (rc < 0)
		return rc;
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	(void)flowlog_format_ip(dest, ip, &port);
	bool have_sni = sni && sni[0];
	snprintf(leg->host, sizeof(leg->host), "%s", have_sni ? sni : ip);
	snprintf(leg->sess_key, sizeof(leg->sess_key), "%s:%u", leg->host, port);
	bool ok = true;
	if (have_sni)
		ok = SSL_set_tlsext_host_name(leg->ssl, sni) == 1;
	if (ok && alpn_len > 0)
		ok = SSL_set_alpn_protos(leg->ssl, alpn, (unsigned)alpn_len) == 0;
	leg->insecure = t->insecure;
	if (ok) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(leg->ssl);
		/* An IP literal sent as SNI (RFC 6066 forbids it; some clients
		 * do it) is checked against IP SANs, as SSL_set1_host would. */
		bool named;
		if (have_sni)
			named = X509_VERIFY_PARAM_set1_ip_asc(vp, sni) == 1 ||
				X509_VERIFY_PARAM_set1_host(vp, sni, 0) == 1;
		else
			named = X509_VERIFY_PARAM_set1_ip_asc(vp, ip) == 1;
		/* Insecure: the name is checked all the same, for the record
		 * (tls_leg_cert_json), but a name OpenSSL refuses is no error. */
		ok = named || t->insecure;
	}
	if (ok) {
		struct tls_sess *s = &t->sess[sess_slot(t, leg->sess_key)];
		if (s->sess && strcmp(s->key, leg->sess_key) == 0)
			SSL_set_session(leg->ssl, s->sess);
	}
	ERR_clear_error();
	if (!ok) {
		tls_leg_free(leg);
		return -ENOMEM;
	}
	return 0;
}

int tls_leg_client(struct tls_ctx *t, struct tls_leg *leg, X509 *leaf, const uint8_t *alpn,
		   size_t alpn_len)
{
	int rc = leg_init(t, leg, t->client_side, true);
	if (rc < 0)
		return rc;
	if (alpn_len > sizeof(leg->alpn_pick))
		alpn_len = 0;
	if (alpn_len)
		memcpy(leg->alpn_pick, alpn, alpn_len);
	leg->alpn_pick_len = alpn_len;
	if (SSL_use_certificate(leg->ssl, leaf) != 1) {
		ERR_clear_error();
		tls_leg_free(leg);
		return -EIO;
	}
	return 0;
}

int tls_leg_plain(struct tls_ctx *t, struct tls_leg *leg, bool server, const uint8_t *alpn,
		  size_t alpn_len)
{
	memset(leg, 0, sizeof(*leg));
	leg->ctx = t;
	leg->server = server;
	leg->plain = true;
	leg->done = true;
	leg->alert_received = -1;
	leg->alert_sent = -1;
	if (alpn_len > sizeof(leg->alpn_pick))
		alpn_len = 0;
	if (alpn_len)
		memcpy(leg->alpn_pick, alpn, alpn_len);
	leg->alpn_pick_len = alpn_len;
	leg->in = BIO_new(BIO_s_mem());
	leg->out = BIO_new(BIO_s_mem());
	if (!leg->in || !leg->out) {
		BIO_free(leg->in);
		BIO_free(leg->out);
		leg->in = leg->out = NULL;
		return -ENOMEM;
	}
	BIO_set_mem_eof_return(leg->in, -1);
	return 0;
}

void tls_leg_plain_eof(struct tls_leg *leg)
{
	leg->plain_eof = true;
}

size_t tls_leg_plain_pending(const struct tls_leg *leg)
{
	return leg->plain && leg->in ? BIO_ctrl_pending(leg->in) : 0;
}

void tls_leg_free(struct tls_leg *leg)
{
	if (leg && leg->plain) {
		BIO_free(leg->in);
		BIO_free(leg->out);
		leg->in = leg->out = NULL;
		return;
	}
	if (leg && leg->ssl) {
		/* A connection that ended without close_notify (most do: the
		 * TCP close comes first) would have OpenSSL drop its session
		 * from the caches, and the upstream session cache shares that
		 * object: mark a clean one as shut down so it stays resumable. */
		if (leg->done && !leg->err[0] && leg->alert_received < 0 && leg->alert_sent < 0)
			SSL_set_shutdown(leg->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(leg->ssl); /* frees both BIOs */
		leg->ssl = NULL;
	}
}

X509 *tls_leaf_for(struct tls_ctx *t, const char *sni, const struct sockaddr *dest, X509 *upstream)
{
	struct cert_names *n = &t->names;
	cert_names_init(n);
	bool named = sni && sni[0] && cert_names_add(n, sni) == 0;
	if (upstream)
		(void)cert_names_from_x509(n, upstream);
	if (!named) {
		if (dest->sa_family == AF_INET)
			(void)cert_names_add_ip4(n, &((const struct sockaddr_in *)dest)->sin_addr);
		else if (dest->sa_family == AF_INET6)
			(void)cert_names_add_ip6(n,
						 &((const struct sockaddr_in6 *)dest)->sin6_addr);
	}
	bool hit = false;
	X509 *leaf = certcache_get(t->cache, &t->minter, n, &hit);
	if (leaf) {
		if (hit)
			t->stats.leaf_cache_hits++;
		else
			t->stats.leaves_minted++;
	}
	return leaf;
}

int tls_leg_feed(struct tls_leg *leg, const uint8_t *p, size_t n)
{
	while (n > 0) {
		int chunk = n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
		int w = BIO_write(leg->in, p, chunk);
		if (w <= 0)
			return -ENOMEM;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static enum tls_result leg_fail(struct tls_leg *leg, int ret, const char *what)
{
	int e = SSL_get_error(leg->ssl, ret);
	if (e == SSL_ERROR_WANT_READ) {
		return TLS_WANT;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return TLS_CLOSED;
	if (leg->alert_received >= 0 && !leg->err[0])
		snprintf(leg->err, sizeof(leg->err), "alert %s received",
			 SSL_alert_desc_string_long(leg->alert_received));
	set_err_from_queue(leg, what);
	ERR_clear_error();
	return TLS_ERROR;
}

enum tls_result tls_leg_handshake(struct tls_leg *leg)
{
	if (leg->done)
		return TLS_OK; /* a plain leg is born done */
	ERR_clear_error();
	int ret = SSL_do_handshake(leg->ssl);
	if (ret == 1) {
		leg->done = true;
		struct tls_stats *s = &leg->ctx->stats;
		if (leg->server) {
			s->client_handshakes++;
		} else {
			s->upstream_handshakes++;
			if (SSL_session_reused(leg->ssl))
				s->upstream_resumed++;
		}
		return TLS_OK;
	}
	enum tls_result r = leg_fail(leg, ret, "handshake");
	if (r == TLS_CLOSED) {
		snprintf(leg->err, sizeof(leg->err), "closed during the handshake");
		r = TLS_ERROR;
	}
	if (r == TLS_ERROR) {
		struct tls_stats *s = &leg->ctx->stats;
		if (!leg->server)
			s->upstream_failed++;
		else if (tls_leg_client_rejected(leg))
			s->client_rejected++;
		else
			s->client_failed++;
	}
	return r;
}

enum tls_result tls_leg_read(struct tls_leg *leg, uint8_t *buf, size_t cap, size_t *n)
{
	*n = 0;
	if (leg->plain) {
		int chunk = cap > (size_t)INT32_MAX ? INT32_MAX : (int)cap;
		int r = chunk > 0 ? BIO_read(leg->in, buf, chunk) : 0;
		if (r <= 0)
			return leg->plain_eof && BIO_ctrl_pending(leg->in) == 0 ? TLS_CLOSED
										: TLS_WANT;
		*n = (size_t)r;
		return TLS_OK;
	}
	ERR_clear_error();
	int ret = SSL_read_ex(leg->ssl, buf, cap, n);
	if (ret == 1)
		return TLS_OK;
	return leg_fail(leg, 0, "read");
}

enum tls_result tls_leg_write(struct tls_leg *leg, const uint8_t *p, size_t n)
{
	if (n == 0)
		return TLS_OK;
	if (leg->plain) {
		while (n > 0) {
			int chunk = n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
			int w = BIO_write(leg->out, p, chunk);
			if (w <= 0) {
				snprintf(leg->err, sizeof(leg->err), "out of memory");
				return TLS_ERROR;
			}
			p += w;
			n -= (size_t)w;
		}
		return TLS_OK;
	}
	ERR_clear_error();
	size_t done = 0;
	int ret = SSL_write_ex(leg->ssl, p, n, &done);
	if (ret == 1 && done == n)
		return TLS_OK;
	(void)leg_fail(leg, 0, "write");
	return TLS_ERROR;
}

void tls_leg_close_notify(struct tls_leg *leg)
{
	if (leg->plain)
		return; /* the transport's FIN says it */
	ERR_clear_error();
	(void)SSL_shutdown(leg->ssl);
	ERR_clear_error();
}

size_t tls_leg_out(struct tls_leg *leg, const uint8_t **p)
{
	char *data = NULL;
	long len = BIO_get_mem_data(leg->out, &data);
	*p = (const uint8_t *)data;
	return len > 0 ? (size_t)len : 0;
}

void tls_leg_consume(struct tls_leg *leg, size_t n)
{
	uint8_t sink[4096];
	while (n > 0) {
		int chunk = n > sizeof(sink) ? (int)sizeof(sink) : (int)n;
		int r = BIO_read(leg->out, sink, chunk);
		if (r <= 0)
			break;
		n -= (size_t)r;
	}
}

void tls_leg_error(const struct tls_leg *leg, char *out, size_t outlen)
{
	if (leg->alert_received >= 0)
		snprintf(out, outlen, "alert %s received",
			 SSL_alert_desc_string_long(leg->alert_received));
	else if (leg->err[0])
		snprintf(out, outlen, "%s", leg->err);
	else
		snprintf(out, outlen, "unknown TLS error");
}

int tls_leg_verify(const struct tls_leg *leg, char *why, size_t whylen)
{
	if (leg->insecure || leg->plain)
		return 0;
	X509 *peer = SSL_get0_peer_certificate(leg->ssl);
	if (!peer) {
		snprintf(why, whylen, "no certificate");
		return -1;
	}
	long res = SSL_get_verify_result(leg->ssl);
	if (res == X509_V_OK)
		return 0;
	snprintf(why, whylen, "%s", X509_verify_cert_error_string(res));
	leg->ctx->stats.upstream_unverified++;
	return -1;
}

bool tls_leg_client_rejected(const struct tls_leg *leg)
{
	switch (leg->alert_received) {
	case SSL_AD_BAD_CERTIFICATE:
	case SSL_AD_UNSUPPORTED_CERTIFICATE:
	case SSL_AD_CERTIFICATE_REVOKED:
	case SSL_AD_CERTIFICATE_EXPIRED:
	case SSL_AD_CERTIFICATE_UNKNOWN:
	case SSL_AD_UNKNOWN_CA:
	case SSL_AD_ACCESS_DENIED:
		return true;
	case -1:
		/* No alert: a hang-up after our Certificate counts as a rejection
		 * (nothing failed yet, or the client sent close_notify); bytes
		 * that are not TLS do not. */
		if (!leg->server || !leg->cert_sent || leg->done)
			return false;
		return !leg->err[0] ||
		       (leg->ssl && (SSL_get_shutdown(leg->ssl) & SSL_RECEIVED_SHUTDOWN));
	default:
		return false;
	}
}

json_t *tls_leg_json(const struct tls_leg *leg)
{
	if (leg->plain)
		return json_null();
	const uint8_t *a;
	unsigned alen;
	tls_leg_alpn(leg, &a, &alen);
	json_t *o = json_object();
	json_object_set_new(o, "version", json_string(SSL_get_version(leg->ssl)));
	json_object_set_new(o, "cipher", json_string(SSL_get_cipher_name(leg->ssl)));
	json_object_set_new(o, "alpn", alen ? json_stringn((const char *)a, alen) : json_null());
	return o;
}

/* At most cap - 1 bytes of p into out, NUL-terminated, every byte that is
 * not printable ASCII as '?': a certificate's names are the upstream's
 * bytes, and a record holds only valid UTF-8. */
static void cert_text(char *out, size_t cap, const unsigned char *p, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < cap; i++)
		out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	out[i] = '\0';
}

static json_t *cert_name_json(const X509_NAME *name)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return json_null();
	/* RFC 2253 escapes every byte past ASCII. */
	(void)X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
	char *data = NULL;
	long len = BIO_get_mem_data(b, &data);
	char text[TLS_CERT_NAME_MAX + 1];
	cert_text(text, sizeof(text), (const unsigned char *)data, len > 0 ? (size_t)len : 0);
	BIO_free(b);
	return json_string(text);
}

static json_t *cert_time_json(const ASN1_TIME *t)
{
	struct tm tm;
	char buf[32];
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return json_null();
	return json_string(buf);
}

static json_t *cert_sans_json(X509 *x, size_t *more)
{
	json_t *a = json_array();
	*more = 0;
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int n = gens ? sk_GENERAL_NAME_num(gens) : 0;
	for (int i = 0; i < n && a; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char text[TLS_CERT_SAN_MAX + 1];
		if (g->type == GEN_DNS) {
			const ASN1_IA5STRING *s = g->d.dNSName;
			memcpy(text, "DNS:", 4);
			cert_text(text + 4, sizeof(text) - 4, ASN1_STRING_get0_data(s),
				  (size_t)ASN1_STRING_length(s));
		} else if (g->type == GEN_IPADD) {
			const ASN1_OCTET_STRING *s = g->d.iPAddress;
			char ip[INET6_ADDRSTRLEN] = "?";
			int af = ASN1_STRING_length(s) == 4    ? AF_INET
				 : ASN1_STRING_length(s) == 16 ? AF_INET6
							       : -1;
			if (af < 0 || !inet_ntop(af, ASN1_STRING_get0_data(s), ip, sizeof(ip)))
				snprintf(ip, sizeof(ip), "?");
			snprintf(text, sizeof(text), "IP:%s", ip);
		} else {
			continue; /* e-mail, URI, ...: not what a server is named by */
		}
		if (json_array_size(a) < TLS_CERT_SANS)
			json_array_append_new(a, json_string(text));
		else
			(*more)++;
	}
	GENERAL_NAMES_free(gens);
	return a ? a : json_null();
}

json_t *tls_leg_cert_json(const struct tls_leg *leg)
{
	X509 *x = leg->ssl && !leg->server ? SSL_get0_peer_certificate(leg->ssl) : NULL;
	if (!x)
		return NULL;
	json_t *o = json_object();
	if (!o)
		return NULL;
	size_t more = 0;
	char fp[CA_FINGERPRINT_LEN];
	ca_fingerprint(x, fp);
	long res = SSL_get_verify_result(leg->ssl);
	json_object_set_new(o, "subject", cert_name_json(X509_get_subject_name(x)));
	json_object_set_new(o, "issuer", cert_name_json(X509_get_issuer_name(x)));
	json_object_set_new(o, "sans", cert_sans_json(x, &more));
	if (more)
		json_object_set_new(o, "sans_more", json_integer((json_int_t)more));
	json_object_set_new(o, "not_before", cert_time_json(X509_get0_notBefore(x)));
	json_object_set_new(o, "not_after", cert_time_json(X509_get0_notAfter(x)));
	json_object_set_new(o, "sha256", json_string(fp));
	json_object_set_new(o, "verified", json_boolean(res == X509_V_OK));
	if (res != X509_V_OK)
		json_object_set_new(o, "verify_error",
				    json_string(X509_verify_cert_error_string(res)));
	if (leg->insecure)
		json_object_set_new(o, "insecure", json_true());
	return o;
}

void tls_leg_alpn(const struct tls_leg *leg, const uint8_t **p, unsigned *len)
{
	*p = NULL;
	*len = 0;
	if (leg->plain) {
		*p = leg->alpn_pick_len ? leg->alpn_pick : NULL;
		*len = (unsigned)leg->alpn_pick_len;
		return;
	}
	SSL_get0_alpn_selected(leg->ssl, p, len);
}

X509 *tls_leg_peer_cert(const struct tls_leg *leg)
{
	return leg->ssl ? SSL_get0_peer_certificate(leg->ssl) : NULL;
}
