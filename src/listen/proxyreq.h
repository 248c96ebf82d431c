/* The request head an HTTP proxy client sends first (untrusted bytes):
 * `CONNECT host:port` (authority form, RFC 9110 9.3.6) or a request in
 * absolute form (`GET http://host/path HTTP/1.1`), with its
 * Proxy-Authorization. llhttp reads the head; nothing here parses HTTP by
 * hand. Sans-IO and allocation-free except for the rewritten head. */
#ifndef WGMITM_LISTEN_PROXYREQ_H
#define WGMITM_LISTEN_PROXYREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXYREQ_MAX_HEAD (16u * 1024)
#define PROXYREQ_MAX_HEADERS 128
#define PROXYREQ_HOST_LEN 256
#define PROXYREQ_CRED_LEN 256

enum proxyreq_kind { PROXYREQ_CONNECT = 1, PROXYREQ_ABSOLUTE = 2 };

struct proxyreq {
	enum proxyreq_kind kind;
	char host[PROXYREQ_HOST_LEN]; /* a name or an address (IPv6 without brackets) */
	uint16_t port;
	bool has_auth; /* a Basic Proxy-Authorization was given */
	char user[PROXYREQ_CRED_LEN], pass[PROXYREQ_CRED_LEN];
	size_t head_len; /* the head's bytes in the input; what follows is the client's */
	/* Absolute form: the head as the server gets it (malloc'd): origin
	 * form, Host from the URL when the client sent none, the Proxy-*
	 * headers and hop-by-hop Connection headers left out, and
	 * "Connection: close" (one upstream per connection: a later request
	 * may name another server). */
	char *rewritten;
	size_t rewritten_len;
};

/* Parses the head at the start of p[0..n). Returns 0 (out filled; free
 * with proxyreq_free), -EAGAIN (incomplete: call again with more, up to
 * PROXYREQ_MAX_HEAD), -ENOMEM, or an HTTP status to answer (400 malformed,
 * 431 head too large, 501 a scheme other than http:// in absolute form, 505
 * not HTTP/1.x) with the reason in why[0..whylen). */
int proxyreq_parse(const uint8_t *p, size_t n, struct proxyreq *out, char *why, size_t whylen);

void proxyreq_free(struct proxyreq *r);

/* "host:port" / "[v6]:port" / "host" into host and port (default_port
 * when absent; 0 default: a port is required). false when malformed. */
bool proxyreq_split_authority(const char *a, size_t n, char host[PROXYREQ_HOST_LEN], uint16_t *port,
			      uint16_t default_port);

#endif
