/* The running endpoint's parts, shared by daemon.c (the wiring),
 * daemonapi.c (what it reports to the control API) and daemonstats.c (its
 * counters). */
#ifndef WGMITM_DAEMON_INTERNAL_H
#define WGMITM_DAEMON_INTERNAL_H

#include <time.h>

#include <jansson.h>
#include <openssl/x509.h>
#include <uv.h>

#include "control/config.h"
#include "daemon.h"
#include "flows/flowlog.h"
#include "listen/proxy.h"
#include "listen/socksudp.h"
#include "listen/udpfwd.h"
#include "mitm/policy.h"
#include "mitm/udp.h"
#include "common/shaper.h"
#include "state.h"

struct wg_peer;
struct wg_device;
struct netstack;
struct relay;
struct udp_relay;
struct tls_ctx;
struct passthru;
struct dns_proxy;
struct dnsnames;
struct capage;
struct udpbatch;
struct api;
struct runconfig_scope;
struct store;
struct rulesrc;
struct replay_engine;

/* One state peer as the device knows it. */
struct shaper;

struct daemon_peer {
	struct wg_peer *wp;
	struct shaper *down, *up; /* its network condition; NULL: none */
	uint8_t public_key[STATE_KEY_LEN];
	uint8_t preshared_key[STATE_KEY_LEN];
	struct in_addr addr4;
	struct in6_addr addr6;
	char name[STATE_NAME_MAX + 1];
};

struct daemon {
	uv_loop_t *loop;
	const struct daemon_options *opts;
	struct state st;
	struct wg_device *dev;
	struct netstack *ns;
	struct policy policy;
	struct flowlog *flows;
	struct relay *relay;
	struct udp_relay *udp_relay;
	struct tls_ctx *tls;
	struct passthru *passthru;
	struct dns_proxy *dns;
	struct dnsnames *names; /* what the tunnel's DNS answered, for the relay */
	struct capage *capage;  /* the CA page; NULL without a CA */
	uv_udp_t udp[DAEMON_MAX_LISTEN];
	struct udpbatch *out[DAEMON_MAX_LISTEN]; /* one send batch per socket */
	uv_check_t check;
	int udp_family[DAEMON_MAX_LISTEN];
	size_t nudp;
	uv_timer_t wg_timer;
	uint64_t wg_deadline;
	uv_prepare_t prepare;
	uv_signal_t sig_int, sig_term, sig_hup, sig_usr1;
	uv_fs_event_t watch;
	bool watching;
	uv_timer_t reload_timer;
	uv_timer_t rules_timer; /* HOME/rules.json changed: reload once it settles */
	/* Network conditions (daemonshape.h): per device, and the timer of
	 * the next shaped packet due. */
	struct daemon_condition {
		char device[64];
		struct shaper_config down, up;
	} conds[64];
	size_t nconds;
	uv_timer_t shape_timer;
	bool shape_timer_init;
	uv_timer_t stats_timer;
	struct daemon_peer **peers;
	size_t npeers;
	uint8_t *recv_buf;
	bool recv_buf_busy;
	/* Packets the device delivered during one wg_device_receive(): handed
	 * to lwIP after it returns, because lwIP's replies call back into the
	 * device, which must not be re-entered. */
	struct {
		uint8_t *pkt;
		size_t len;
	} up[8];
	size_t nup;
	bool stopping;
	uint64_t no_route_drops;
	uint64_t no_socket; /* a peer's endpoint family we do not listen on */
	json_t *config;     /* the configuration in force (control/config.h) */
	struct timespec started;
	X509 *ca_cert; /* a reference, for the API; NULL without a CA */
	struct api *api;
	struct runconfig_scope *scope; /* the capture scope in force; NULL: everything */
	struct store *store;           /* HOME/flows.db, following the log; NULL: off */
	struct rulesrc *rules;         /* the interception rules' sources */
	struct replay_engine *replay;  /* resends recorded requests (API) */
	uint64_t notified_lines;       /* flowlog_lines when the store was last told */
	uv_poll_t tun_poll;            /* wrap: the command's TUN device */
	/* The listeners (daemonlisten.c): the configuration's, by name, and
	 * wrap --env-proxy's own. proxies and udp_forwards list every open
	 * one, for the counters; retired_* keep the counts of closed ones. */
	struct daemon_listener *listeners; /* DAEMON_MAX_LISTENERS */
	size_t nlisteners;
	struct proxy *internal[DAEMON_MAX_PROXY];
	size_t ninternal;
	struct proxy *proxies[DAEMON_MAX_LISTENERS + DAEMON_MAX_PROXY];
	size_t nproxies;
	struct udp_forward *udp_forwards[DAEMON_MAX_LISTENERS];
	size_t nudp_forwards;
	struct proxy_stats retired_proxy;
	struct socks_udp_stats retired_socks_udp;
	struct udp_forward_stats retired_udp_forward;
	struct users *users;  /* --users */
	struct authext *auth; /* --auth-url */
	/* Our UDP ports on the host (WireGuard, the UDP forwards): no UDP
	 * relay sends there (daemonlisten.c fills it). */
	struct udp_relay_ports udp_protect;
	uint8_t *tun_buf;
	uv_signal_t sig_chld;
	uint64_t tun_drops; /* wrap: packets not from its address, or not sent */
};

/* A new configuration from the control plane: applied, then saved. 0, or
 * -1 with err set (what could not be applied is named; the rest holds). */
int daemon_set_config(struct daemon *d, json_t *doc, struct config_error *err);

/* Reads the peers again and brings the device in line with them. */
void daemon_reload(struct daemon *d, const char *why);

#endif
