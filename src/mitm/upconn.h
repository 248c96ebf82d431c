/* An upstream stream the engine opens itself: a name or address resolved,
 * checked against the destination policy, dialled, and with TLS (SNI,
 * ALPN, verified as every upstream leg is) or without. What a redirect
 * (map remote) needs to reach a server the client did not dial.
 *
 * Plaintext in and out through the callbacks; writes are queued in the
 * socket's write queue (upconn_queued says how much, to pause the writer);
 * reads stop with upconn_pause. Callbacks are never called from inside
 * upconn_open or after upconn_close. Loop thread only. */
#ifndef WGMITM_MITM_UPCONN_H
#define WGMITM_MITM_UPCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>
#include <uv.h>

struct tls_ctx;
struct upconn;

struct upconn_ops {
	/* Connected (and the TLS handshake verified): err 0. Else a
	 * negative errno and `why` says what failed; the stream is dead (only
	 * upconn_close remains). */
	void (*ready)(void *ctx, int err, const char *why);
	void (*data)(void *ctx, const uint8_t *p, size_t n);
	/* The server ended its stream (FIN or close_notify). */
	void (*eof)(void *ctx);
	/* A failure after ready (reset, TLS error): the stream is dead. */
	void (*error)(void *ctx, const char *why);
	/* The write queue went below half of UPCONN_MAX_QUEUED. */
	void (*drained)(void *ctx);
	/* May the resolved address be dialled? 0 with the address to dial in
	 * *dial (a policy may rewrite it), or -1 with `why` filled. */
	int (*allow)(void *ctx, const struct sockaddr *addr, struct sockaddr_storage *dial,
		     char *why, size_t whylen);
};

struct upconn_target {
	const char *host; /* a name or an IP literal */
	uint16_t port;
	bool tls;
	const char *sni;     /* with TLS, the name sent and verified; NULL: host
	                        (none for an IP literal, verified as the IP) */
	const uint8_t *alpn; /* wire format; NULL: none */
	size_t alpn_len;
};

#define UPCONN_MAX_QUEUED (1u << 20)

/* NULL with errno on failure (ENOMEM, EINVAL). The ops are copied. */
struct upconn *upconn_open(uv_loop_t *loop, struct tls_ctx *tls, const struct upconn_target *t,
			   const struct upconn_ops *ops, void *ctx, uint32_t timeout_ms);
/* Plaintext for the server; before ready it is kept and sent once the
 * stream is up. 0, or -EPIPE (dead, shut down) / -ENOMEM. */
int upconn_write(struct upconn *u, const uint8_t *p, size_t n);
size_t upconn_queued(const struct upconn *u);
void upconn_pause(struct upconn *u);
void upconn_resume(struct upconn *u);
/* No more writes: close_notify (with TLS) and FIN. Reads go on. */
void upconn_shutdown(struct upconn *u);
/* Ends it (a reset when `reset`) and frees it later; no more callbacks. */
void upconn_close(struct upconn *u, bool reset);

bool upconn_matches(const struct upconn *u, const struct upconn_target *t);
/* The TLS leg as flow records show it (with the certificate), or NULL. */
json_t *upconn_tls_json(const struct upconn *u);
/* "host:port" as dialled, for records. */
const char *upconn_peer(const struct upconn *u);

#endif
