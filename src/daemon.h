/* `wgmitm run`: the endpoint. One libuv loop drives the UDP sockets, the
 * WireGuard device, lwIP and state reloads. */
#ifndef WGMITM_DAEMON_H
#define WGMITM_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>

#include "listen/target.h"

#define DAEMON_MAX_LISTEN 8
#define DAEMON_MAX_DNS 8
#define DAEMON_MAX_HOST_PORTS 16
#define DAEMON_DEFAULT_MAX_TCP 16384
#define DAEMON_MAX_UPSTREAM_CA 16
#define DAEMON_MAX_PASSTHROUGH 64

/* `wgmitm wrap`: a command in a network namespace of its own, whose only
 * interface is a TUN device; the endpoint reads it into its netstack as
 * if it were a peer named `name` at addr4/addr6. */
struct daemon_wrap {
	int tun_fd; /* -1: none (--env-proxy: the command uses a proxy listener) */
	struct in_addr addr4;
	struct in6_addr addr6;
	const char *name;
	char **argv; /* the command line, for its records ("command") */
	int child;   /* its pid: when it exits, the endpoint stops */
	int go_fd;   /* a byte is written here once the endpoint runs */
	int status;  /* out: the command's wait status */
	void (*on_record)(void *arg, const json_t *record); /* its flows */
	void *arg;
};

#define DAEMON_MAX_PROXY 8
#define DAEMON_MAX_TARGETS 16
#define DAEMON_MAX_UDP_FORWARDS 16
#define DAEMON_MAX_LISTENERS 32 /* the configuration's "listeners" */

/* A proxy listener of run's --http-proxy / --socks5 (one port may be both). */
struct daemon_proxy {
	struct sockaddr_storage addr;
	bool http, socks5;
	const char *peer; /* its flows' peer (wrap --env-proxy); NULL: none */
};

struct daemon_options {
	const char *home;
	struct sockaddr_storage listen[DAEMON_MAX_LISTEN];
	size_t nlisten;             /* 0 = 0.0.0.0 and [::] on the state's port */
	const char *endpoint;       /* overrides endpoint detection in printed configs */
	uint64_t stats_interval_ms; /* 0 = only on SIGUSR1 */
	const char *dns_upstream[DAEMON_MAX_DNS]; /* ADDR[:PORT]; none = /etc/resolv.conf */
	size_t ndns_upstream;
	uint16_t host_ports[DAEMON_MAX_HOST_PORTS]; /* tunnel address port -> host loopback */
	size_t nhost_ports;
	uint32_t max_tcp;          /* relayed TCP connections at once; 0 = DAEMON_DEFAULT_MAX_TCP */
	uint32_t max_tcp_per_peer; /* of those, one peer's; 0 = half of max_tcp */
	uint32_t max_tcp_per_user; /* a listener user's; 0 = as a peer's */
	uint64_t user_rate[2];     /* a listener user's bytes/s up, down; 0: none */
	/* Interception. */
	bool no_intercept;                               /* relay TLS untouched (still recorded) */
	const char *upstream_ca[DAEMON_MAX_UPSTREAM_CA]; /* extra trust anchors, PEM files */
	size_t nupstream_ca;
	bool insecure_upstream;                          /* do not verify upstream certificates */
	const char *passthrough[DAEMON_MAX_PASSTHROUGH]; /* host globs relayed untouched */
	size_t npassthrough;
	long auto_passthrough_s; /* -1 = default; 0 = never */
	long body_cap;           /* bytes of each body recorded; -1 = 1 MiB */
	bool quic_passthrough;   /* relay UDP to port 443 instead of refusing it */
	/* Debug: shortened WireGuard timers, in seconds (0 = the whitepaper's). */
	unsigned rekey_after_time_s;
	unsigned reject_after_time_s;
	unsigned keepalive_timeout_s;
	unsigned rekey_timeout_s;
	int under_load_threshold; /* handshakes per second; -1 = default */
	/* The control plane. */
	const char *api;          /* [ADDR:]PORT or "off"; NULL: 127.0.0.1:8081 */
	int64_t store_max_size;   /* bytes of HOME/flows.db; 0: 2 GiB; < 0: no bound */
	int64_t store_max_age;    /* seconds a flow is kept; 0: no bound */
	bool no_store;            /* flows.jsonl only: no HOME/flows.db */
	struct daemon_wrap *wrap; /* NULL: the tunnel only */
	/* Interception rules from --map-remote, --modify-headers, ... (JSON
	 * arrays of rule objects and of DNS overrides; NULL: none). */
	struct json_t *rule_options;
	struct json_t *dns_overrides;
	struct json_t *network_conditions; /* --network-condition (network_conditions) */
	/* Ways in besides the tunnel (src/listen). */
	struct daemon_proxy proxies[DAEMON_MAX_PROXY];
	size_t nproxies;
	struct listen_target targets[DAEMON_MAX_TARGETS]; /* --reverse, --forward */
	size_t ntargets;
	struct listen_target udp_forwards[DAEMON_MAX_UDP_FORWARDS]; /* --udp-forward */
	size_t nudp_forwards;
	struct listen_parent parents[RELAY_MAX_PARENTS]; /* --upstream-proxy, in order */
	size_t nparents;
	const char *users_file; /* --users: the proxies' credentials; NULL: none */
	const char *auth_url;   /* --auth-url: the users the file does not name; NULL: none */
	uint32_t auth_ttl[2];   /* --auth-ttl: allowed, denied (s); 0: the defaults */
	bool allow_open_proxy;  /* a non-loopback listener without --users */
};

/* --http-proxy / --socks5 ADDR: [ADDR:]PORT (127.0.0.1 when no ADDR) added
 * to o->proxies, merged with an earlier one on the same address. 0, or -1
 * with a message in err. */
int daemon_add_proxy(struct daemon_options *o, const char *spec, bool socks5, char *err,
		     size_t errlen);

/* --reverse URL@[ADDR:]PORT or --forward [ADDR:]PORT=HOST:PORT[,...]
 * (listen/target.h) added to o->targets. 0, or -1 with a message in err. */
int daemon_add_target(struct daemon_options *o, const char *spec, bool reverse, char *err,
		      size_t errlen);

/* --udp-forward [ADDR:]PORT=HOST:PORT (listen/target.h) added to
 * o->udp_forwards. 0, or -1 with a message in err. */
int daemon_add_udp_forward(struct daemon_options *o, const char *spec, char *err, size_t errlen);

/* --upstream-proxy URL[@GLOB] (listen/target.h) added to o->parents. 0, or
 * -1 with a message in err. */
int daemon_add_parent(struct daemon_options *o, const char *spec, char *err, size_t errlen);

/* --api's value: [ADDR:]PORT (ADDR an IPv4 or IPv6 literal, IPv6 in
 * brackets). 0 or -1. */
int daemon_parse_api(const char *spec, char *host, size_t hostlen, unsigned *port);

/* Runs until SIGINT/SIGTERM. Returns the process exit status. */
int daemon_run(const struct daemon_options *opts);

#endif
