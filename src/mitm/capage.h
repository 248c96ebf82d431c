/* The CA install page: a small HTTP/1.1 server on port 80 of the endpoint's
 * tunnel addresses (http://wgmitm.internal/, mitm/localname.h), reached
 * only through the tunnel. A phone that just joined opens it to download
 * and trust the capture CA:
 *
 *   /                    HTML: fingerprint, subject, links, short steps
 *                        for Android, iOS and desktops
 *   /ca.crt, /ca.pem     the certificate, PEM (application/x-x509-ca-cert)
 *   /ca.cer, /ca.der     the certificate, DER (application/pkix-cert)
 *   /ca.mobileconfig     an iOS configuration profile holding one
 *                        com.apple.security.root payload (the DER);
 *                        identifiers and UUIDs derive from the CA's
 *                        fingerprint, so installing it again replaces it
 *   anything else        404
 *
 * GET and HEAD only; other methods get 405, a request with a body 413, a
 * request head over CAPAGE_MAX_HEAD bytes 431, a target over
 * CAPAGE_MAX_TARGET bytes 414, anything llhttp rejects 400 (these close the
 * connection). Keep-alive and pipelining as HTTP/1.1 says (Connection:
 * close and HTTP/1.0 honoured); a connection idle for CAPAGE_IDLE_MS is
 * closed.
 *
 * Every response is built once at start (the CA does not change while
 * `run` runs): serving one is handing constant bytes to
 * stream_write, as far as the send buffer takes them, the rest on
 * ops.sent. While a response is pending the client's data waits in the
 * netstack (its window closes), so memory per connection is bounded. */
#ifndef WGMITM_MITM_CAPAGE_H
#define WGMITM_MITM_CAPAGE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/x509.h>
#include <uv.h>

#include "common/stream.h"

#define CAPAGE_PORT 80
#define CAPAGE_MAX_HEAD (16u * 1024) /* request line and headers */
#define CAPAGE_MAX_TARGET 2048       /* the request target */
#define CAPAGE_IDLE_MS 30000
#define CAPAGE_DEFAULT_MAX_CONNS 64

struct capage_config {
	X509 *ca; /* borrowed during capage_new; required */
	/* The endpoint's tunnel addresses, shown on the page (may be unspecified). */
	struct in_addr addr4;
	struct in6_addr addr6;
	size_t max_conns; /* 0: CAPAGE_DEFAULT_MAX_CONNS; more are reset, and so
			   * are a peer's past half of them */
	uint32_t idle_ms; /* 0: CAPAGE_IDLE_MS */
	/* The peer owning a client address (NULL, or returning NULL: one
	 * unnamed peer). */
	const char *(*peer_name)(void *ctx, const struct sockaddr *client);
	void *peer_ctx;
};

struct capage_stats {
	uint64_t conns_accepted, conns_refused, conns_active;
	uint64_t conns_refused_peer;           /* reset: the peer held half of max_conns */
	uint64_t conns_idle;                   /* closed after idle_ms */
	uint64_t requests;                     /* responses sent, all statuses */
	uint64_t page, pem, der, mobileconfig; /* 200s by resource */
	uint64_t not_found;                    /* 404 */
	uint64_t rejected;                     /* 400, 405, 413, 414, 431 */
	uint64_t bytes_sent;
};

/* ---- Responses (pure) ------------------------------------------------------ */

/* The prebuilt responses for one CA. */
struct capage_site;

/* NULL with errno EINVAL (no certificate) or ENOMEM. */
struct capage_site *capage_site_new(X509 *ca, const struct in_addr *addr4,
				    const struct in6_addr *addr6)
	__attribute__((warn_unused_result));
void capage_site_free(struct capage_site *s);

/* One response: `head` (status line and headers), then `body` (NULL and 0
 * for HEAD requests). Both point into the site. */
struct capage_response {
	int status;
	const uint8_t *head;
	size_t head_len;
	const uint8_t *body;
	size_t body_len;
	bool close; /* the connection closes after it */
};

/* The response to `method` (llhttp's HTTP_GET, HTTP_HEAD, ...) for the
 * request target (origin form "/ca.pem?x", or absolute form
 * "http://host/ca.pem"). keep_alive: what the request allows. */
void capage_site_respond(const struct capage_site *s, int method, const char *target,
			 size_t target_len, bool keep_alive, struct capage_response *out);

/* An error response that closes the connection: 400, 405, 413, 414, 431. */
void capage_site_error(const struct capage_site *s, int status, struct capage_response *out);

/* The page's bytes, for inspection (tests). */
const char *capage_site_html(const struct capage_site *s, size_t *len);

/* ---- The server ------------------------------------------------------------ */

/* NULL with errno EINVAL or ENOMEM. cfg is copied (the certificate is not
 * kept). */
struct capage *capage_new(uv_loop_t *loop, const struct capage_config *cfg)
	__attribute__((warn_unused_result));

/* A client's TCP connection to port 80 of our tunnel address: the shape of
 * netstack_ops.tcp_accept (`ctx` is the capage). Returns 0 after taking the
 * connection, nonzero to have it reset (shut down, over max_conns). */
int capage_tcp_accept(void *ctx, struct stream *conn, const struct sockaddr *client,
		      const struct sockaddr *dest);

void capage_get_stats(const struct capage *c, struct capage_stats *out);

/* Aborts every connection (call before netstack_free) and stops the timer.
 * Later connections are refused. Idempotent. */
void capage_shutdown(struct capage *c);

/* Shuts down if needed; the memory is released once libuv has closed the
 * timer (the loop must run again). NULL is a no-op. */
void capage_free(struct capage *c);

#endif
