/* SOCKS5 UDP ASSOCIATE (RFC 1928 section 7) for a SOCKS5 listener.
 *
 * An association is a UDP socket bound on the address the client reached
 * the listener at (port 0), tied to the client's TCP control connection.
 * Datagrams are taken only from the client's IP, and from the port it
 * declared in its request (DST.PORT), or else the port of its first
 * well-formed datagram; the address it declared is not used (a client
 * behind NAT cannot know it). Each datagram carries a header naming its
 * destination (socks5_parse_udp); fragments (FRAG other than 0) are dropped
 * and counted. Names are resolved here (uv_getaddrinfo, off the loop), a
 * few at a time, and cached per association for a minute (a failure for a
 * few seconds); the datagrams that wait for a lookup are held, a few per
 * name.
 *
 * The payloads go through a UDP relay of the association's own
 * (mitm/udp.h), made at the first datagram: the destination policy, a flow
 * per destination with an upstream socket each, "udp" records with via
 * "socks5" and the user. An answer goes back to the client with a header
 * naming the destination as its source.
 *
 * An association ends when its control connection closes, either side
 * (its flows end "association_closed"), after idle_ms without a datagram
 * either way ("idle"), or with the listener ("shutdown"); every flow then
 * writes its record. A client that never sends a datagram holds its
 * control connection and the bound socket, nothing more, until then.
 * Loop thread only. */
#ifndef WGMITM_LISTEN_SOCKSUDP_H
#define WGMITM_LISTEN_SOCKSUDP_H

#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/stream.h"
#include "mitm/udp.h"

#define SOCKS_UDP_DEFAULT_MAX_ASSOCIATIONS 256
#define SOCKS_UDP_DEFAULT_MAX_FLOWS 64 /* destinations of one association at once */
#define SOCKS_UDP_MAX_LOOKUPS 4        /* names being resolved, per association */
#define SOCKS_UDP_MAX_ALL_LOOKUPS 32   /* and for the whole listener */
#define SOCKS_UDP_PENDING 4            /* datagrams held per name being resolved */
#define SOCKS_UDP_CACHE 16             /* names remembered per association */
#define SOCKS_UDP_CACHE_MS 60000
#define SOCKS_UDP_NEGATIVE_MS 5000 /* a name that did not resolve, not asked again */

struct policy;
struct flowlog;

struct socks_udp_config {
	const struct policy *policy; /* borrowed; required */
	struct flowlog *log;         /* borrowed; NULL: no records */
	enum udp_relay_quic quic;
	const struct udp_relay_ports *protect; /* borrowed; NULL: none */
	uint32_t max_associations;             /* at once; 0: the default */
	uint32_t max_flows;                    /* per association; 0: the default */
	uint32_t idle_ms; /* flows and associations; 0: UDP_RELAY_DEFAULT_IDLE_MS */
};

struct socks_udp_stats {
	uint64_t associations, active, refused_limit;
	uint64_t datagrams;     /* from clients, relayed or resolving */
	uint64_t foreign;       /* from another address than the client's: dropped */
	uint64_t fragments;     /* FRAG other than 0: dropped */
	uint64_t malformed;     /* a header that does not parse: dropped */
	uint64_t lookups;       /* names sent to the resolver */
	uint64_t lookup_failed; /* datagrams to a name that did not resolve */
	uint64_t lookup_limit;  /* datagrams dropped: too many lookups at once */
	uint64_t answers;       /* sent to clients */
	uint64_t answer_drop;   /* the socket refused one */
	uint64_t relay_failed;  /* datagrams dropped: no relay could be made */
	uint64_t ended_closed, ended_idle;
};

/* The associations of one listener. NULL with errno EINVAL or ENOMEM. */
struct socks_udp *socks_udp_new(uv_loop_t *loop, const struct socks_udp_config *cfg)
	__attribute__((warn_unused_result));

/* UDP ASSOCIATE from `client` (the control connection's peer), which
 * reached us at `local`, declaring `client_port` (0: none). On 0 the
 * association has `ctl` (its callbacks are set here) and answered the
 * request: reply 0, BND the new socket. Else the caller keeps ctl and
 * answers: -EMFILE (max_associations reached), -ENOMEM, -ESHUTDOWN, or the
 * libuv error of the bind. `user` (NULL: none) is copied. */
int socks_udp_associate(struct socks_udp *g, struct stream *ctl, const struct sockaddr *client,
			const struct sockaddr *local, uint16_t client_port, const char *user);

void socks_udp_get_stats(const struct socks_udp *g, struct socks_udp_stats *out);

/* Ends every association ("shutdown", records written, control connections
 * closed). The memory is released once libuv has closed the handles and
 * the resolver has answered (the loop must run). NULL: no-op. */
void socks_udp_free(struct socks_udp *g);

#endif
