/* The client side of a parent (upstream) proxy's handshake: HTTP CONNECT
 * (with Basic credentials) or SOCKS5 (RFC 1928, with RFC 1929
 * username/password), sans I/O. The relay dials the parent, sends what
 * parent_begin wrote, feeds what the parent answers, and once the
 * handshake is done the connection is the target's.
 *
 * The parent's bytes are untrusted: every answer is bounded
 * (PARENT_MAX_ANSWER) and checked. */
#ifndef WGMITM_MITM_PARENT_H
#define WGMITM_MITM_PARENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PARENT_MAX_ANSWER 8192 /* an HTTP answer head; SOCKS replies are far smaller */
#define PARENT_MAX_OUT 1024    /* the most one step writes */

enum parent_kind { PARENT_HTTP, PARENT_SOCKS5 };

enum parent_result {
	PARENT_MORE, /* send what was written (if any), feed more */
	PARENT_DONE, /* connected: bytes after `used` are the target's */
	PARENT_FAIL, /* `why` says what; refused: the parent says the target refused */
};

struct parent_hs {
	enum parent_kind kind;
	int step;
	char host[256]; /* the target as the parent is asked for it */
	uint16_t port;
	char user[256], pass[256]; /* "" : none */
	uint8_t in[PARENT_MAX_ANSWER];
	size_t in_len;
	bool refused;
	char why[200];
};

/* Begins a handshake for host:port (a name or an IP literal, IPv6 without
 * brackets); user/pass NULL or "": none. Writes the first message into
 * out (PARENT_MAX_OUT bytes) and its length into *outlen. 0, or -1 when
 * host or the credentials do not fit the protocol (why says so). */
int parent_begin(struct parent_hs *h, enum parent_kind kind, const char *host, uint16_t port,
		 const char *user, const char *pass, uint8_t *out, size_t *outlen);

/* What the parent sent: *used is how much of p belongs to the handshake
 * (all of it, except with PARENT_DONE); out/outlen as above. */
enum parent_result parent_feed(struct parent_hs *h, const uint8_t *p, size_t n, size_t *used,
			       uint8_t *out, size_t *outlen);

#endif
