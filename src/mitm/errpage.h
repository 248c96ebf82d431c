/* What wgmitm answers in place of an upstream that failed (TLS handshake or
 * certificate verification): a 502 Bad Gateway naming the reason, over
 * HTTP/1.1 or HTTP/2 (gRPC and other h2-only clients), then the end of the
 * connection. Sans-IO: the relay feeds the client's plaintext and sends
 * what comes out through the client's TLS leg. */
#ifndef WGMITM_MITM_ERRPAGE_H
#define WGMITM_MITM_ERRPAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ERRPAGE_MAX_HEAD (16u * 1024) /* HTTP/1 request head awaited at most */

struct errpage;

/* reason: one line, copied. NULL on allocation failure. */
struct errpage *errpage_new(bool h2, const char *reason);
void errpage_free(struct errpage *e);

/* The client's plaintext. HTTP/1: the answer follows the end of the first
 * request head (or ERRPAGE_MAX_HEAD bytes). HTTP/2: every request stream
 * gets the answer, then GOAWAY. Returns 0, or -EPROTO when the client's
 * bytes are not valid HTTP/2 (the connection should just end). */
int errpage_client(struct errpage *e, const uint8_t *p, size_t n);

/* The bytes to send (valid until the next call), and how many were taken. */
size_t errpage_out(struct errpage *e, const uint8_t **p);
void errpage_consume(struct errpage *e, size_t n);

/* Everything was said: close the connection once the output is sent. */
bool errpage_done(const struct errpage *e);

#endif
