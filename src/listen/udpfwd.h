/* A UDP forward (run --udp-forward [ADDR:]PORT=HOST:PORT): a UDP socket
 * bound on ADDR:PORT whose every datagram goes to one target, through a
 * UDP relay of its own (mitm/udp.h): a flow per client address with an
 * upstream socket each, the destination policy, idle expiry, "udp" records
 * with via "forward". Answers go back to the client from the bound socket.
 * Loop thread only. */
#ifndef WGMITM_LISTEN_UDPFWD_H
#define WGMITM_LISTEN_UDPFWD_H

#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "mitm/udp.h"

struct policy;
struct flowlog;

struct udp_forward_config {
	struct sockaddr_storage addr;          /* where to listen */
	struct sockaddr_storage target;        /* resolved, with its port */
	const struct policy *policy;           /* borrowed; required */
	struct flowlog *log;                   /* borrowed; NULL: no records */
	const struct udp_relay_ports *protect; /* borrowed; NULL: none */
	uint32_t max_flows;                    /* clients at once; 0: the relay's default */
	uint32_t idle_ms;                      /* 0: UDP_RELAY_DEFAULT_IDLE_MS */
};

struct udp_forward_stats {
	uint64_t datagrams;   /* from clients */
	uint64_t answer_drop; /* answers the socket refused */
	struct udp_relay_stats relay;
};

/* Binds and starts reading. NULL with a libuv error in *err. */
struct udp_forward *udp_forward_new(uv_loop_t *loop, const struct udp_forward_config *cfg, int *err)
	__attribute__((warn_unused_result));

/* The bound port (for port 0). */
uint16_t udp_forward_port(const struct udp_forward *f);

void udp_forward_get_stats(const struct udp_forward *f, struct udp_forward_stats *out);

/* Ends every flow ("shutdown", records written) and closes the socket; the
 * memory is released once libuv has closed it (the loop must run). NULL:
 * no-op. */
void udp_forward_free(struct udp_forward *f);

#endif
