/* TLS on both legs of an intercepted connection, over memory BIOs.
 *
 * The relay owns the sockets; a leg only turns ciphertext into plaintext and
 * back: the relay feeds what arrived (tls_leg_feed), drives the handshake or
 * reads plaintext, writes plaintext, and sends what the leg produced
 * (tls_leg_out / tls_leg_consume). Nothing here touches the network.
 *
 * Upstream leg (client role): the client's SNI and ALPN list, verified
 * against the system store plus --upstream-ca files and the name the client
 * asked for (or the IP it dialled). Verification never aborts the handshake:
 * the relay reads the result afterwards, so a failure can be told to the
 * client as a 502 with the reason.
 * Client leg (server role): a leaf minted for the SNI plus the upstream
 * certificate's names, and the ALPN the upstream chose. TLS 1.2 and 1.3
 * only; on TLS 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305, signed
 * with the leaf's key type (ECDSA, or RSA for an RSA leaf key): no CBC
 * suite, no RSA key transport. Our preference wins (AES-128-GCM first),
 * except that a client preferring ChaCha20 gets it. */
#ifndef WGMITM_MITM_TLS_H
#define WGMITM_MITM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TLS_MAX_UPSTREAM_CA 16

struct tls_config {
	X509 *ca_cert; /* references taken */
	EVP_PKEY *ca_key;
	const char *upstream_ca[TLS_MAX_UPSTREAM_CA]; /* extra trust anchors (PEM files) */
	size_t n_upstream_ca;
	bool insecure_upstream;  /* do not verify upstream certificates */
	const char *keylog_path; /* NSS key log lines for both legs; NULL: none */
	size_t cert_cache;       /* leaves cached; 0: the default */
};

struct tls_stats {
	uint64_t leaves_minted, leaf_cache_hits;
	uint64_t upstream_handshakes, upstream_resumed, upstream_failed, upstream_unverified;
	uint64_t client_handshakes, client_rejected, client_failed;
	uint64_t keylog_lines;
};

struct tls_ctx;

/* NULL with a message in err (a bad --upstream-ca file names it). */
struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *t);

/* New trust anchors and verification for upstream legs begun from now on
 * (those in progress keep theirs); the upstream session cache is emptied.
 * -1 with a message in err, and nothing changed, when a file fails. */
int tls_ctx_set_upstream(struct tls_ctx *t, const char *const *ca, size_t nca, bool insecure,
			 char *err, size_t errlen);
void tls_ctx_stats(const struct tls_ctx *t, struct tls_stats *out);

struct tls_leg {
	SSL *ssl;
	BIO *in, *out;      /* owned by ssl */
	bool server;        /* the client leg */
	bool done;          /* handshake finished */
	int alert_received; /* last fatal alert from the peer, -1: none */
	int alert_sent;
	bool cert_sent;         /* our Certificate went out (client leg) */
	char host[256];         /* what the upstream is verified against */
	char sess_key[288];     /* upstream session cache key: host + port */
	uint8_t alpn_pick[256]; /* client leg: the protocol to select */
	size_t alpn_pick_len;
	char err[160]; /* first fatal error, "" when none */
	bool insecure; /* upstream leg: not verified (the setting when it began) */
	bool plain;    /* no TLS: bytes pass as they are (tls_leg_plain) */
	bool plain_eof;
	struct tls_ctx *ctx;
};

/* The upstream leg. sni NULL or "": none sent and the dialled IP is
 * verified. alpn: wire format (length-prefixed list), may be empty.
 * 0 or -ENOMEM. */
int tls_leg_upstream(struct tls_ctx *t, struct tls_leg *leg, const char *sni,
		     const struct sockaddr *dest, const uint8_t *alpn, size_t alpn_len);

/* The client leg with `leaf` (a reference is taken) and the ALPN protocol to
 * select when the client offers it (NULL/0: none). 0 or -ENOMEM/-EIO. */
int tls_leg_client(struct tls_ctx *t, struct tls_leg *leg, X509 *leaf, const uint8_t *alpn,
		   size_t alpn_len);

/* A leg without TLS, for a side that speaks plaintext when the other is
 * TLS (reverse and forward listeners: TLS terminated or originated on one
 * side only): born with its handshake done, what is fed is read as it is,
 * what is written is the output; no close_notify, verification passes,
 * the ALPN is `alpn` (one protocol, not the wire list; NULL/0: none) and
 * tls_leg_json is JSON null. 0 or -ENOMEM. */
int tls_leg_plain(struct tls_ctx *t, struct tls_leg *leg, bool server, const uint8_t *alpn,
		  size_t alpn_len);

/* A plain leg's transport ended: tls_leg_read says TLS_CLOSED once what
 * was fed has been read. */
void tls_leg_plain_eof(struct tls_leg *leg);
/* Bytes fed to a plain leg and not read yet (0 for a TLS leg). */
size_t tls_leg_plain_pending(const struct tls_leg *leg);

void tls_leg_free(struct tls_leg *leg);

/* A leaf for this connection: the SNI (when valid), the upstream's
 * certificate names (upstream may be NULL), and the dialled IP when there is
 * no SNI. A new reference, or NULL. */
X509 *tls_leaf_for(struct tls_ctx *t, const char *sni, const struct sockaddr *dest, X509 *upstream);

/* Ciphertext from the network. 0, or -ENOMEM. */
int tls_leg_feed(struct tls_leg *leg, const uint8_t *p, size_t n);

enum tls_result {
	TLS_OK = 0,     /* progress (handshake finished, or bytes read/written) */
	TLS_WANT = 1,   /* needs more input */
	TLS_CLOSED = 2, /* the peer sent close_notify */
	TLS_ERROR = -1, /* fatal: see tls_leg_error */
};

/* Drives the handshake: TLS_OK once finished, TLS_WANT, TLS_ERROR. */
enum tls_result tls_leg_handshake(struct tls_leg *leg);

/* Plaintext: up to cap bytes into buf; *n set. TLS_OK with *n > 0,
 * TLS_WANT (nothing buffered), TLS_CLOSED, TLS_ERROR. */
enum tls_result tls_leg_read(struct tls_leg *leg, uint8_t *buf, size_t cap, size_t *n);

/* Encrypts all of p (memory BIOs never block). TLS_OK or TLS_ERROR. */
enum tls_result tls_leg_write(struct tls_leg *leg, const uint8_t *p, size_t n);

/* Queues close_notify. */
void tls_leg_close_notify(struct tls_leg *leg);

/* The ciphertext waiting to be sent: a pointer into the leg (valid until
 * the next call on it) and its length; consume what the transport took. */
size_t tls_leg_out(struct tls_leg *leg, const uint8_t **p);
void tls_leg_consume(struct tls_leg *leg, size_t n);

/* Why the leg failed, for logs and records: "alert unknown_ca received",
 * an OpenSSL reason, ... */
void tls_leg_error(const struct tls_leg *leg, char *out, size_t outlen);

/* After the upstream handshake: 0 when the certificate verified (or
 * verification is off), else -1 with the reason in why. */
int tls_leg_verify(const struct tls_leg *leg, char *why, size_t whylen);

/* The client rejected our certificate: a certificate alert, or (no alert,
 * no error, our Certificate out, the handshake pending) whatever ends the
 * leg now: the relay calls this when the client closes, resets or stays
 * silent there (pinning apps and grpc-core often just hang up). */
bool tls_leg_client_rejected(const struct tls_leg *leg);

/* {"version", "cipher", "alpn"} of an established leg. */
json_t *tls_leg_json(const struct tls_leg *leg);

/* The certificate the upstream presented (upstream leg, after its
 * handshake), or NULL when it sent none (or out of memory):
 * {"subject", "issuer", "sans": ["DNS:name", "IP:addr", ...], "sans_more",
 *  "not_before", "not_after", "sha256", "verified", "verify_error",
 *  "insecure"}. Names are RFC 2253 strings, non-ASCII escaped, at most
 * TLS_CERT_NAME_MAX bytes; at most TLS_CERT_SANS names of at most
 * TLS_CERT_SAN_MAX bytes each ("sans_more": how many more, only when any);
 * dates RFC 3339; "verified" is the chain and name check against the trust
 * anchors, computed with --insecure-upstream too ("insecure": true then,
 * and the connection went on whatever it says); "verify_error" only when
 * it failed. A new reference. */
#define TLS_CERT_NAME_MAX 256
#define TLS_CERT_SANS 16
#define TLS_CERT_SAN_MAX 260
json_t *tls_leg_cert_json(const struct tls_leg *leg);

/* The selected ALPN protocol (not NUL-terminated), or len 0. */
void tls_leg_alpn(const struct tls_leg *leg, const uint8_t **p, unsigned *len);

/* The peer's certificate (upstream leg), borrowed, or NULL. */
X509 *tls_leg_peer_cert(const struct tls_leg *leg);

#endif
