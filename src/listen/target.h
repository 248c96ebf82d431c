/* The specs of run's fixed-target listeners:
 *
 *   --reverse URL@[ADDR:]PORT[,keep-host]
 *                                URL is http://HOST[:PORT] or https://HOST[:PORT]
 *   --forward [ADDR:]PORT=HOST:PORT[,protocol=P][,tls][,upstream-tls][,insecure[=BOOL]]
 *   --upstream-proxy URL[@GLOB]  (below)
 *   --udp-forward [ADDR:]PORT=HOST:PORT
 *
 * ADDR defaults to 127.0.0.1; HOST is a name, an IPv4 address or [IPv6].
 * A reverse listener takes TLS or plaintext from its clients (the first
 * bytes tell), speaks the URL's scheme upstream and gives HTTP requests
 * the URL's host as Host (unless ",keep-host"); a forward's client
 * speaks TLS only with ",tls", its upstream only with ",upstream-tls".
 * P: auto, raw, http, http2, grpc, websocket, sse. */
#ifndef WGMITM_LISTEN_TARGET_H
#define WGMITM_LISTEN_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mitm/relay.h"

#define LISTEN_HOST_MAX 254

struct listen_target {
	struct sockaddr_storage addr; /* where to listen */
	char host[LISTEN_HOST_MAX + 1];
	uint16_t port;
	struct relay_shape shape; /* shape.name is left NULL: it is `host` */
	const char *via;          /* "reverse" or "forward" */
	/* reverse: the Host requests get, HOST[:PORT] (no port when the
	 * scheme's); "" with ",keep-host" and for forwards. */
	char authority[LISTEN_HOST_MAX + 9];
	const char *spec; /* run's option as given (borrowed); NULL: from the configuration */
};

/* "HOST[:PORT]" (a name, an IPv4 address or [IPv6]) of n bytes into t->host
 * and t->port; default_port 0: the port is required. 0 or -1. */
int listen_parse_hostport(const char *s, size_t n, uint16_t default_port, struct listen_target *t);

/* "[ADDR:]PORT" (ADDR an IPv4 address or [IPv6]; 127.0.0.1 when absent;
 * PORT 1-65535). 0 or -1. */
int listen_parse_addr(const char *s, size_t n, struct sockaddr_storage *out);

/* --upstream-proxy URL[@GLOB]: URL is http://[USER:PASS@]HOST:PORT or
 * socks5://[USER:PASS@]HOST:PORT (credentials percent-decoded); GLOB is a
 * host glob ("*.corp.example"), or device=NAME for one device's flows;
 * none: every flow. Fills all of *p but p->addr, which is `host` and
 * `port` resolved. 0, or -1 with what is wrong in err. */
struct listen_parent {
	struct relay_parent p;
	char host[LISTEN_HOST_MAX + 1];
	uint16_t port;
};
int listen_parse_parent(const char *spec, struct listen_parent *out, char *err, size_t errlen);

/* 0, or -1 with what is wrong in err (the option is the caller's to name). */
int listen_parse_reverse(const char *spec, struct listen_target *t, char *err, size_t errlen);
int listen_parse_forward(const char *spec, struct listen_target *t, char *err, size_t errlen);

/* --udp-forward [ADDR:]PORT=HOST:PORT: addr, host and port (no options;
 * via "forward", the shape unused). 0, or -1 with what is wrong in err. */
int listen_parse_udp_forward(const char *spec, struct listen_target *t, char *err, size_t errlen);

#endif
