/* DNS inside the tunnel: our tunnel addresses answer port 53 (UDP and TCP)
 * by forwarding each query's wire bytes to an upstream resolver (the host's
 * /etc/resolv.conf nameservers, or --dns-upstream) and relaying the answer
 * back. Nothing is answered from a cache or rewritten except the query ID:
 * every query leaves with a fresh random ID, and the answer gets the
 * client's ID back. Queries and answers are parsed with ldns only to check
 * and record them.
 *
 *   UDP: one unconnected socket per family toward the upstreams; an answer
 *        is taken only from an upstream the query was sent to, with a live
 *        ID and the same question. Each attempt waits `attempt_ms`, then
 *        the query goes to the next upstream in order (one upstream: sent
 *        again); after `timeout_ms` in all the client gets SERVFAIL.
 *   TCP: length-prefixed messages (RFC 1035 4.2.2), one at a time per
 *        connection (the client's window closes meanwhile), each forwarded
 *        over a TCP connection to the upstream, kept for the next query.
 *        A client retries here after a truncated (TC) UDP answer.
 *
 * One record per query (type "dns"): the common flowlog keys (peer,
 * client, server = the address the client asked, start, end, bytes and
 * packets each way, end_reason "answered", "timeout", "busy", "malformed",
 * "closed", "shutdown") plus "transport" ("udp"/"tcp"), "name", "qtype",
 * "rcode", "answers" ([{"name","type","ttl","data"}]), "upstream" and
 * "duration_ms".
 *
 * The endpoint's own names (mitm/localname.h: wgmitm.internal and
 * ca.wgmitm.internal) are answered here, never forwarded: A and AAAA with
 * `local4` / `local6` (TTL LOCALNAME_TTL), NOERROR with no answer for
 * other types, NXDOMAIN for other names under wgmitm.internal. Their
 * records have "upstream": null.
 *
 * The forwarding core never needs a netstack: UDP answers go out through a
 * send callback (default netstack_udp_send), so it runs in tests on
 * loopback. */
#ifndef WGMITM_MITM_DNS_H
#define WGMITM_MITM_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/stream.h"

struct netstack;
struct flowlog;

#define DNS_MAX_UPSTREAMS 8
#define DNS_PORT 53
#define DNS_DEFAULT_TIMEOUT_MS 5000
#define DNS_DEFAULT_ATTEMPT_MS 2000
#define DNS_DEFAULT_MAX_OUTSTANDING 512 /* queries in flight, UDP and TCP */
#define DNS_DEFAULT_MAX_TCP 64          /* client TCP connections */
#define DNS_TCP_IDLE_MS 10000           /* an idle client TCP connection is closed */
#define DNS_RESOLV_CONF "/etc/resolv.conf"

struct dnsnames;

struct dns_config {
	struct sockaddr_storage upstreams[DNS_MAX_UPSTREAMS]; /* tried in this order */
	size_t nupstreams;                                    /* at least 1 */
	uint32_t timeout_ms;    /* 0: DNS_DEFAULT_TIMEOUT_MS; then SERVFAIL */
	uint32_t attempt_ms;    /* 0: DNS_DEFAULT_ATTEMPT_MS; then the next upstream */
	size_t max_outstanding; /* 0: default; 1..65535. Over it: SERVFAIL at once */
	size_t max_tcp;         /* 0: default. Over it: the connection is refused */
	struct flowlog *log;    /* borrowed; NULL: no records */

	/* The endpoint's tunnel addresses, the answers for its own names.
	 * Both unspecified: those names are forwarded like any other. */
	struct in_addr local4;
	struct in6_addr local6;

	/* The peer owning a client address, for records (NULL: unknown). */
	const char *(*peer_name)(void *ctx, const struct sockaddr *client);
	void *peer_ctx;

	/* Where the A and AAAA answers' addresses are noted with the name
	 * asked, per peer (borrowed; NULL: nowhere). */
	struct dnsnames *names;

	/* The UDP reply path; NULL: netstack_udp_send(ns, from, to, ...). */
	int (*send)(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		    const uint8_t *data, size_t len);
	void *send_ctx;
};

struct dns_stats {
	uint64_t queries_udp, queries_tcp; /* well-formed queries taken */
	uint64_t answered;                 /* answers relayed to clients */
	uint64_t local_answers;            /* the endpoint's own names, answered here */
	uint64_t override_answers;         /* names answered by a DNS override (rules.h) */
	uint64_t truncated;                /* of those, TC set (client retries over TCP) */
	uint64_t timeouts;                 /* SERVFAIL after timeout_ms */
	uint64_t retries;                  /* attempts after the first */
	uint64_t busy;                     /* SERVFAIL: max_outstanding reached */
	uint64_t busy_peer;                /* SERVFAIL: the peer held half of it */
	uint64_t malformed;                /* dropped: unparsable, no readable header */
	uint64_t formerr;                  /* FORMERR: unparsable, header readable */
	uint64_t ignored;                  /* not a query (QR set), or an empty question */
	uint64_t stray_answers;            /* upstream datagrams matching no query */
	uint64_t upstream_errors;          /* socket, connect or write failures upstream */
	uint64_t reply_drop;               /* the reply path refused an answer */
	uint64_t tcp_accepted, tcp_refused, tcp_active;
	uint64_t tcp_refused_peer; /* refused: the peer held half of max_tcp */
	uint64_t outstanding;      /* gauge */
	uint64_t records;
};

/* cfg is copied. `ns` may be NULL when cfg->send is set (TCP needs a
 * netstack connection anyway). NULL with errno EINVAL, ENOMEM, or the
 * error of opening the upstream sockets. */
struct dns_proxy *dns_proxy_new(uv_loop_t *loop, struct netstack *ns, const struct dns_config *cfg)
	__attribute__((warn_unused_result));

/* One UDP datagram to our DNS service (udp_relay_config.local). */
void dns_proxy_udp(struct dns_proxy *p, const struct sockaddr *client, const struct sockaddr *dest,
		   const uint8_t *data, size_t len);

/* A client's TCP connection to our DNS service: the shape of
 * netstack_ops.tcp_accept (`ctx` is the dns_proxy). Returns 0 after taking
 * the connection, nonzero to have it reset (shut down, over max_tcp). */
int dns_proxy_tcp_accept(void *ctx, struct stream *conn, const struct sockaddr *client,
			 const struct sockaddr *dest);

/* A new list of upstreams (1..DNS_MAX_UPSTREAMS) for every query from now
 * on. 0, -EINVAL, or a socket error (nothing changed). */
int dns_proxy_set_upstreams(struct dns_proxy *p, const struct sockaddr_storage *ups, size_t n);

void dns_proxy_get_stats(const struct dns_proxy *p, struct dns_stats *out);

/* The DNS overrides of `rs` (mitm/rules.h) answer matching names from now
 * on, per peer when an override names a device (a reference is taken;
 * NULL: none). */
struct ruleset;
void dns_proxy_set_rules(struct dns_proxy *p, struct ruleset *rs);

/* Fails every query in flight (record end_reason "shutdown", no answer),
 * aborts the TCP connections and closes the sockets. Idempotent. */
void dns_proxy_shutdown(struct dns_proxy *p);

/* Shuts down if needed; memory is released once libuv has closed the
 * handles (the loop must run again). NULL is a no-op. */
void dns_proxy_free(struct dns_proxy *p);

/* ---- Configuration (pure) ---------------------------------------------- */

/* The nameservers of resolv.conf text, in order, port 53 ("nameserver
 * ADDR" lines; IPv6 with "%scope" allowed; comments start with # or ;;
 * other keywords are ignored, as are addresses that do not parse). At most
 * `max` are kept. Returns how many. */
size_t dns_parse_resolv_conf(const char *text, struct sockaddr_storage *out, size_t max);

/* Reads `path` (DNS_RESOLV_CONF) and parses it. Returns the count, or
 * -errno when it cannot be read. */
int dns_load_resolv_conf(const char *path, struct sockaddr_storage *out, size_t max);

/* "--dns-upstream ADDR[:PORT]": "1.1.1.1", "1.1.1.1:5353", "2606:4700::1111",
 * "[2606:4700::1111]:53". Returns 0 or -EINVAL. */
int dns_parse_upstream(const char *s, struct sockaddr_storage *out);

/* ---- Query ID map (pure) ------------------------------------------------
 * The upstream IDs in flight: a fresh random 16-bit ID per query, never one
 * in use, mapped to the caller's slot number. */
#define DNS_IDMAP_NONE UINT32_MAX

struct dns_idmap {
	uint32_t slot[65536]; /* slot + 1 per ID; 0: free */
	uint32_t used;
};

void dns_idmap_init(struct dns_idmap *m);
/* A random unused ID now mapped to `slot` (< UINT32_MAX - 1), or -ENOSPC. */
int dns_idmap_add(struct dns_idmap *m, uint32_t slot);
/* The slot of `id`, or DNS_IDMAP_NONE. */
uint32_t dns_idmap_get(const struct dns_idmap *m, uint16_t id);
void dns_idmap_del(struct dns_idmap *m, uint16_t id);

#endif
