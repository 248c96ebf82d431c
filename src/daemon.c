#include "daemon.h"
#include "daemon_internal.h"
#include "daemonlisten.h"
#include "listen/users.h"
#include "daemonshape.h"

#include "common/log.h"
#include "peerconf.h"
#include "state.h"
#include "runconfig.h"
#include "rulesrc.h"
#include "mitm/rules.h"
#include "udpbatch.h"
#include "mitm/capage.h"
#include "mitm/dns.h"
#include "mitm/dnsnames.h"
#include "mitm/replay.h"
#include "control/api.h"
#include "control/config.h"
#include "daemonapi.h"
#include "daemonstats.h"
#include "flows/store.h"
#include "flows/flowlog.h"
#include "mitm/localname.h"
#include "mitm/policy.h"
#include "mitm/ca.h"
#include "mitm/httpflow.h"
#include "mitm/passthru.h"
#include "mitm/relay.h"
#include "mitm/tls.h"
#include "mitm/udp.h"
#include "netstack/netstack.h"
#include "wg/crypto.h"
#include "wg/device.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

/* libuv hands recvmmsg batches in 64 KiB slots of one buffer. */
#define RECV_SLOT 65536
#define RECV_BATCH 32
#define RELOAD_DEBOUNCE_MS 100

static uint64_t now_ns(void)
{
	return uv_hrtime();
}

/* --- WireGuard device <-> sockets and lwIP --- */

static void on_wg_send(void *ctx, const struct wg_endpoint *to, const uint8_t *buf, size_t len)
{
	struct daemon *d = ctx;
	for (size_t i = 0; i < d->nudp; i++) {
		if (d->udp_family[i] != to->sa.sa_family)
			continue;
		udpbatch_add(d->out[i], &to->sa, (socklen_t)wg_endpoint_len(to), buf, len);
		return;
	}
	d->no_socket++;
}

static void on_wg_deliver(void *ctx, struct wg_peer *peer, uint8_t *pkt, size_t len)
{
	struct daemon *d = ctx;
	struct daemon_peer *dp = wg_peer_user(peer);
	if (dp && dp->up && daemon_shape_up(d, dp, pkt, len))
		return;
	if (d->nup == sizeof(d->up) / sizeof(d->up[0])) {
		d->no_route_drops++;
		return;
	}
	/* pkt points into the receive buffer, which outlives this batch. */
	d->up[d->nup].pkt = pkt;
	d->up[d->nup].len = len;
	d->nup++;
}

static void flush_up(struct daemon *d)
{
	for (size_t i = 0; i < d->nup && d->ns; i++)
		netstack_input(d->ns, d->up[i].pkt, d->up[i].len);
	d->nup = 0;
}

static void on_wall_time(void *ctx, struct timespec *out)
{
	(void)ctx;
	clock_gettime(CLOCK_REALTIME, out);
}

static void daemon_stop(struct daemon *d);

/* The address of a packet's source (src) or destination, IPv4 or IPv6:
 * 4 or 16 bytes at *a; 0 when it is neither. */
static size_t pkt_addr(const uint8_t *pkt, size_t len, bool src, const uint8_t **a)
{
	if (len >= 20 && pkt[0] >> 4 == 4) {
		*a = pkt + (src ? 12 : 16);
		return 4;
	}
	if (len >= 40 && pkt[0] >> 4 == 6) {
		*a = pkt + (src ? 8 : 24);
		return 16;
	}
	return 0;
}

static bool wrap_owns(const struct daemon_wrap *w, const uint8_t *pkt, size_t len, bool src)
{
	const uint8_t *a;
	size_t n = pkt_addr(pkt, len, src, &a);
	return (n == 4 && memcmp(a, &w->addr4, 4) == 0) ||
	       (n == 16 && memcmp(a, &w->addr6, 16) == 0);
}

static void on_tun_readable(uv_poll_t *h, int status, int events)
{
	struct daemon *d = h->data;
	const struct daemon_wrap *w = d->opts->wrap;
	(void)events;
	if (status < 0 || !d->ns)
		return;
	/* A bounded batch per wake, so the tunnel's peers get their turn. */
	for (int i = 0; i < 64; i++) {
		ssize_t n = read(w->tun_fd, d->tun_buf, RECV_SLOT);
		if (n <= 0)
			return;
		if (!wrap_owns(w, d->tun_buf, (size_t)n, true)) {
			d->tun_drops++;
			continue;
		}
		netstack_input(d->ns, d->tun_buf, (size_t)n);
	}
}

static void on_sigchld(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	(void)signum;
	struct daemon_wrap *w = d->opts->wrap;
	int st;
	if (waitpid(w->child, &st, WNOHANG) != w->child)
		return;
	w->status = st;
	w->child = -1;
	if (!d->stopping) {
		log_debug("the wrapped command ended; stopping");
		daemon_stop(d);
	}
}

/* A wrapped command's records say so, and which command it was. */
static void decorate_wrap(void *ctx, json_t *record)
{
	const struct daemon_wrap *w = ctx;
	const char *peer = json_string_value(json_object_get(record, "peer"));
	if (!peer || strcmp(peer, w->name) != 0)
		return;
	json_object_set_new(record, "via", json_string("wrap"));
	json_t *cmd = json_array();
	for (char **a = w->argv; a && *a; a++)
		json_array_append_new(cmd, json_string(*a));
	json_object_set_new(record, "command", cmd);
}

static int open_wrap(struct daemon *d)
{
	struct daemon_wrap *w = d->opts->wrap;
	if (!w)
		return 0;
	flowlog_set_decorator(d->flows, decorate_wrap, w);
	if (w->tun_fd >= 0) {
		if (!(d->tun_buf = malloc(RECV_SLOT)))
			return -1;
		int rc = uv_poll_init(d->loop, &d->tun_poll, w->tun_fd);
		if (rc < 0) {
			log_error("wrap: the TUN device: %s", uv_strerror(rc));
			return -1;
		}
		d->tun_poll.data = d;
		uv_poll_start(&d->tun_poll, UV_READABLE, on_tun_readable);
	}
	uv_signal_init(d->loop, &d->sig_chld);
	d->sig_chld.data = d;
	uv_signal_start(&d->sig_chld, on_sigchld, SIGCHLD);
	return 0;
}

static void on_netstack_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct daemon *d = ctx;
	const struct daemon_wrap *w = d->opts->wrap;
	if (w && wrap_owns(w, pkt, len, false)) {
		/* A full TUN queue drops, as a full link would. */
		if (write(w->tun_fd, pkt, len) != (ssize_t)len)
			d->tun_drops++;
		return;
	}
	struct wg_peer *peer = wg_device_peer_by_dst(d->dev, pkt, len);
	if (!peer) {
		/* Packets between peers are not forwarded; anything else has no route. */
		d->no_route_drops++;
		return;
	}
	struct daemon_peer *dp = wg_peer_user(peer);
	if (dp && dp->down && daemon_shape_down(d, dp, pkt, len))
		return;
	wg_device_send(d->dev, peer, pkt, len, now_ns());
}

/* --- netstack <-> relays --- */

/* The peer that owns a tunnel address: flows are recorded under its name. */
/* One peer's share of the relayed connections: by default half, so that
 * a peer that opens connections without end leaves the rest to others. */
static uint32_t daemon_tcp_per_peer(const struct daemon_options *o)
{
	uint32_t max = o->max_tcp ? o->max_tcp : DAEMON_DEFAULT_MAX_TCP;
	if (o->max_tcp_per_peer)
		return o->max_tcp_per_peer < max ? o->max_tcp_per_peer : max;
	return max > 1 ? max / 2 : 1;
}

static const char *peer_name_by_addr(void *ctx, const struct sockaddr *client)
{
	struct daemon *d = ctx;
	const struct daemon_wrap *w = d->opts->wrap;
	if (w && ((client->sa_family == AF_INET &&
		   ((const struct sockaddr_in *)client)->sin_addr.s_addr == w->addr4.s_addr) ||
		  (client->sa_family == AF_INET6 &&
		   memcmp(&((const struct sockaddr_in6 *)client)->sin6_addr, &w->addr6,
			  sizeof(w->addr6)) == 0)))
		return w->name;
	for (size_t i = 0; i < d->npeers; i++) {
		const struct daemon_peer *p = d->peers[i];
		if (client->sa_family == AF_INET &&
		    ((const struct sockaddr_in *)client)->sin_addr.s_addr == p->addr4.s_addr)
			return p->name;
		if (client->sa_family == AF_INET6 &&
		    memcmp(&((const struct sockaddr_in6 *)client)->sin6_addr, &p->addr6,
			   sizeof(p->addr6)) == 0)
			return p->name;
	}
	return "";
}

static int on_tcp_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			 const struct sockaddr *dest)
{
	struct daemon *d = ctx;
	return d->relay ? relay_tcp_accept(d->relay, netstack_tcp_stream(conn), client, dest) : -1;
}

/* Our own TCP services on the tunnel addresses, by port. */
static int on_local_tcp(void *ctx, struct stream *conn, const struct sockaddr *client,
			const struct sockaddr *dest)
{
	struct daemon *d = ctx;
	uint16_t port =
		ntohs(dest->sa_family == AF_INET ? ((const struct sockaddr_in *)dest)->sin_port
						 : ((const struct sockaddr_in6 *)dest)->sin6_port);
	if (port == DNS_PORT && d->dns)
		return dns_proxy_tcp_accept(d->dns, conn, client, dest);
	if (port == CAPAGE_PORT && d->capage)
		return capage_tcp_accept(d->capage, conn, client, dest);
	return -1;
}

static void on_udp_recv(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
			const uint8_t *data, size_t len)
{
	struct daemon *d = ctx;
	if (d->udp_relay)
		udp_relay_recv(d->udp_relay, client, dest, data, len);
}

static void on_udp_unreachable(void *ctx, const struct sockaddr *client,
			       const struct sockaddr *dest, const uint8_t *data, size_t len,
			       enum udp_relay_unreach why)
{
	struct daemon *d = ctx;
	if (d->ns)
		netstack_udp_unreachable(d->ns, client, dest, data, len,
					 why == UDP_RELAY_UNREACH_PORT
						 ? NETSTACK_UNREACH_PORT
						 : NETSTACK_UNREACH_PROHIBITED);
}

static void on_local_udp(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
			 const uint8_t *data, size_t len)
{
	dns_proxy_udp(ctx, client, dest, data, len);
}

/* Timers: after each loop iteration's work, fire what is due and arm the
 * one uv timer for the next deadline. */
static void on_wg_timer(uv_timer_t *t)
{
	(void)t;
}

static void flush_out(struct daemon *d)
{
	for (size_t i = 0; i < d->nudp; i++)
		if (d->out[i]->n)
			udpbatch_flush(d->out[i]);
}

/* After the poll phase: what the received packets produced goes out now,
 * and the flow records of this iteration with one write. */
/* This iteration's records in one write; the store follows the log. */
static void flush_records(struct daemon *d)
{
	(void)flowlog_flush(d->flows);
	uint64_t lines = flowlog_lines(d->flows);
	if (d->store && lines != d->notified_lines) {
		d->notified_lines = lines;
		store_notify(d->store);
	}
}

static void on_check(uv_check_t *c)
{
	struct daemon *d = c->data;
	flush_out(d);
	flush_records(d);
}

static void on_prepare(uv_prepare_t *p)
{
	struct daemon *d = p->data;
	uint64_t now = now_ns();
	uint64_t next = wg_device_tick(d->dev, now);
	/* Timers and lwIP may have queued datagrams (and records): send before
	 * sleeping. */
	flush_out(d);
	flush_records(d);
	if (next == d->wg_deadline && uv_is_active((uv_handle_t *)&d->wg_timer))
		return;
	d->wg_deadline = next;
	if (next == UINT64_MAX) {
		uv_timer_stop(&d->wg_timer);
		return;
	}
	uint64_t ms = next > now ? (next - now + 999999) / 1000000 : 0;
	uv_timer_start(&d->wg_timer, on_wg_timer, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct daemon *d = h->data;
	(void)suggested;
	if (d->recv_buf_busy) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	d->recv_buf_busy = true;
	*buf = uv_buf_init((char *)d->recv_buf, RECV_SLOT * RECV_BATCH);
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
		    unsigned flags)
{
	struct daemon *d = h->data;
	if (nread >= 0 && addr) { /* empty datagrams too: counted as bad size */
		struct wg_endpoint from;
		if (wg_endpoint_set(&from, addr,
				    addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								: sizeof(struct sockaddr_in))) {
			wg_device_receive(d->dev, &from, (uint8_t *)buf->base, (size_t)nread,
					  now_ns());
			flush_up(d);
		}
	} else if (nread < 0) {
		log_warn("udp receive: %s", uv_strerror((int)nread));
	}
	/* With recvmmsg, chunks point into the batch buffer: free it only once. */
	if (!(flags & UV_UDP_MMSG_CHUNK) && buf->base == (char *)d->recv_buf)
		d->recv_buf_busy = false;
}

/* --- peers from the state directory --- */

static void daemon_peer_free(struct daemon *d, struct daemon_peer *dp)
{
	daemon_shape_peer_free(dp);
	if (dp->wp)
		wg_device_peer_remove(d->dev, dp->wp);
	sodium_memzero(dp, sizeof(*dp));
	free(dp);
}

static bool same_peer(const struct daemon_peer *dp, const struct state_peer *p)
{
	return sodium_memcmp(dp->public_key, p->public_key, STATE_KEY_LEN) == 0 &&
	       sodium_memcmp(dp->preshared_key, p->preshared_key, STATE_KEY_LEN) == 0 &&
	       dp->addr4.s_addr == p->addr4.s_addr &&
	       memcmp(&dp->addr6, &p->addr6, sizeof(dp->addr6)) == 0 &&
	       strcmp(dp->name, p->name) == 0;
}

/* Makes the device's peers match the state: removed or changed peers go
 * first (their sessions end at once), then new ones are added. */
static int sync_peers(struct daemon *d)
{
	size_t kept = 0;
	for (size_t i = 0; i < d->npeers; i++) {
		struct daemon_peer *dp = d->peers[i];
		bool found = false;
		for (size_t j = 0; j < d->st.npeers && !found; j++)
			found = same_peer(dp, &d->st.peers[j]);
		if (found) {
			d->peers[kept++] = dp;
		} else {
			log_info("peer %s removed", dp->name);
			daemon_peer_free(d, dp);
		}
	}
	d->npeers = kept;
	struct daemon_peer **grown =
		realloc(d->peers, (d->npeers + d->st.npeers + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	d->peers = grown;
	for (size_t j = 0; j < d->st.npeers; j++) {
		const struct state_peer *p = &d->st.peers[j];
		bool found = false;
		for (size_t i = 0; i < d->npeers && !found; i++)
			found = same_peer(d->peers[i], p);
		if (found)
			continue;
		struct daemon_peer *dp = calloc(1, sizeof(*dp));
		if (!dp)
			return -ENOMEM;
		memcpy(dp->public_key, p->public_key, STATE_KEY_LEN);
		memcpy(dp->preshared_key, p->preshared_key, STATE_KEY_LEN);
		dp->addr4 = p->addr4;
		dp->addr6 = p->addr6;
		snprintf(dp->name, sizeof(dp->name), "%s", p->name);
		struct wg_peer_config cfg = {
			.addr4 = p->addr4, .addr6 = p->addr6, .has_psk = true, .user = dp
		};
		memcpy(cfg.public_key, p->public_key, STATE_KEY_LEN);
		memcpy(cfg.preshared_key, p->preshared_key, STATE_KEY_LEN);
		dp->wp = wg_device_peer_add(d->dev, &cfg);
		sodium_memzero(&cfg, sizeof(cfg));
		if (!dp->wp) {
			log_error("peer %s: cannot add: %s", p->name, strerror(errno));
			daemon_peer_free(d, dp);
			continue;
		}
		d->peers[d->npeers++] = dp;
		daemon_shape_peer(d, dp);
		char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET, &p->addr4, a4, sizeof(a4));
		inet_ntop(AF_INET6, &p->addr6, a6, sizeof(a6));
		log_info("peer %s ready (%s, %s)", p->name, a4, a6);
	}
	return 0;
}

void daemon_reload(struct daemon *d, const char *why)
{
	char err[512];
	if (state_reload_peers(&d->st, err, sizeof(err)) < 0) {
		/* Keep serving the peers we have; the user fixes the file. */
		log_error("%s; keeping the current peers", err);
		return;
	}
	log_debug("reloading peers (%s)", why);
	if (sync_peers(d) < 0)
		log_error("reloading peers: out of memory");
}

static void on_reload_timer(uv_timer_t *t)
{
	daemon_reload(t->data, "peers.json changed");
}

static void on_rules_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	if (d->rules)
		(void)rulesrc_reload_file(d->rules);
}

static void on_watch(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct daemon *d = h->data;
	(void)events;
	if (status >= 0 && filename && strcmp(filename, RULES_FILE) == 0) {
		uv_timer_start(&d->rules_timer, on_rules_timer, RELOAD_DEBOUNCE_MS, 0);
		return;
	}
	if (status < 0 || (filename && strcmp(filename, "peers.json") != 0))
		return;
	/* A save is several events (temp file, rename): act once they settle. */
	uv_timer_start(&d->reload_timer, on_reload_timer, RELOAD_DEBOUNCE_MS, 0);
}

/* --- counters --- */

static void format_endpoint(const struct wg_endpoint *e, char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN];
	if (e->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &e->in4.sin_addr, a, sizeof(a));
		snprintf(out, outlen, "%s:%u", a, ntohs(e->in4.sin_port));
	} else if (e->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &e->in6.sin6_addr, a, sizeof(a));
		snprintf(out, outlen, "[%s]:%u", a, ntohs(e->in6.sin6_port));
	} else {
		snprintf(out, outlen, "-");
	}
}

static void print_stats(struct daemon *d)
{
	daemon_stats_log(d);
	for (size_t i = 0; i < d->npeers; i++) {
		struct wg_peer_info info;
		wg_peer_info(d->peers[i]->wp, &info);
		char ep[INET6_ADDRSTRLEN + 8];
		format_endpoint(&info.endpoint, ep, sizeof(ep));
		log_info("stats: peer %s: endpoint %s, session %s, rx %llu B, tx %llu B",
			 d->peers[i]->name, ep, info.has_session ? "yes" : "no",
			 (unsigned long long)info.rx_bytes, (unsigned long long)info.tx_bytes);
	}
}

static void on_stats_timer(uv_timer_t *t)
{
	print_stats(t->data);
}

/* --- signals and shutdown --- */

static void close_all(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* The netstack closes its own handles; everything else left is ours. */
static void daemon_stop(struct daemon *d)
{
	d->stopping = true;
	daemon_listeners_close(d); /* no new flows from them */
	/* Relays end their flows (records written) while the netstack still
	 * exists; then the netstack goes. */
	if (d->relay)
		relay_shutdown(d->relay);
	if (d->udp_relay)
		udp_relay_shutdown(d->udp_relay);
	if (d->dns)
		dns_proxy_shutdown(d->dns);
	if (d->capage)
		capage_shutdown(d->capage);
	replay_engine_shutdown(d->replay); /* answered while the API is there */
	api_free(d->api);
	d->api = NULL;
	daemon_shape_close(d);
	netstack_free(d->ns);
	d->ns = NULL;
	uv_walk(d->loop, close_all, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	if (signum == SIGHUP) {
		daemon_reload(d, "SIGHUP");
		if (d->rules)
			(void)rulesrc_reload_file(d->rules);
	} else if (signum == SIGUSR1) {
		print_stats(d);
	} else if (!d->stopping) {
		log_info("stopping (%s)", signum == SIGINT ? "SIGINT" : "SIGTERM");
		print_stats(d);
		daemon_stop(d);
	}
}

/* --- start-up --- */

static int open_udp(struct daemon *d, const struct sockaddr *addr)
{
	size_t i = d->nudp;
	uv_udp_t *u = &d->udp[i];
	int rc = uv_udp_init_ex(d->loop, u, addr->sa_family | UV_UDP_RECVMMSG);
	if (rc < 0)
		return rc;
	u->data = d;
	unsigned flags = addr->sa_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0;
	if ((rc = uv_udp_bind(u, addr, flags)) < 0 ||
	    (rc = uv_udp_recv_start(u, on_alloc, on_recv)) < 0) {
		uv_close((uv_handle_t *)u, NULL);
		return rc;
	}
	/* Bursts from many peers must not overflow the default buffers. */
	int size = 4 << 20;
	uv_recv_buffer_size((uv_handle_t *)u, &size);
	size = 4 << 20;
	uv_send_buffer_size((uv_handle_t *)u, &size);
	uv_os_fd_t fd;
	if ((rc = uv_fileno((uv_handle_t *)u, &fd)) < 0 ||
	    !(d->out[i] = malloc(sizeof(*d->out[i])))) {
		uv_close((uv_handle_t *)u, NULL);
		return rc < 0 ? rc : UV_ENOMEM;
	}
	udpbatch_init(d->out[i], fd);
	d->udp_family[i] = addr->sa_family;
	d->nudp++;
	return 0;
}

static int open_sockets(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	if (o->nlisten > 0) {
		for (size_t i = 0; i < o->nlisten; i++) {
			char text[80];
			struct wg_endpoint ep;
			wg_endpoint_set(&ep, (const struct sockaddr *)&o->listen[i],
					sizeof(o->listen[i]));
			format_endpoint(&ep, text, sizeof(text));
			int rc = open_udp(d, (const struct sockaddr *)&o->listen[i]);
			if (rc < 0) {
				log_error("cannot listen on UDP %s: %s", text, uv_strerror(rc));
				return rc;
			}
			log_info("listening on UDP %s", text);
		}
		return 0;
	}
	struct sockaddr_in any4;
	struct sockaddr_in6 any6;
	uv_ip4_addr("0.0.0.0", d->st.port, &any4);
	uv_ip6_addr("::", d->st.port, &any6);
	int rc4 = open_udp(d, (const struct sockaddr *)&any4);
	int rc6 = open_udp(d, (const struct sockaddr *)&any6);
	if (rc4 < 0 && rc6 < 0) {
		log_error("cannot listen on UDP port %u: %s", d->st.port, uv_strerror(rc4));
		return rc4;
	}
	if (rc4 < 0)
		log_warn("IPv4 UDP port %u: %s", d->st.port, uv_strerror(rc4));
	if (rc6 < 0)
		log_warn("IPv6 UDP port %u: %s (IPv4 only)", d->st.port, uv_strerror(rc6));
	log_info("listening on UDP port %u", d->st.port);
	return 0;
}

static void set_timer_params(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	struct wg_timer_params tp;
	wg_timer_params_default(&tp);
	if (o->rekey_after_time_s)
		tp.rekey_after_time = (uint64_t)o->rekey_after_time_s * WG_NS_PER_SEC;
	if (o->reject_after_time_s)
		tp.reject_after_time = (uint64_t)o->reject_after_time_s * WG_NS_PER_SEC;
	if (o->keepalive_timeout_s)
		tp.keepalive_timeout = (uint64_t)o->keepalive_timeout_s * WG_NS_PER_SEC;
	if (o->rekey_timeout_s)
		tp.rekey_timeout = (uint64_t)o->rekey_timeout_s * WG_NS_PER_SEC;
	if (o->reject_after_time_s)
		tp.zero_keys_after = 3 * tp.reject_after_time;
	if (o->under_load_threshold >= 0)
		tp.under_load_handshakes = (uint32_t)o->under_load_threshold;
	wg_device_set_timer_params(d->dev, &tp);
}

static int first_run_peer(struct daemon *d)
{
	char err[512];
	if (d->st.npeers > 0)
		return 0;
	struct state_peer *p;
	if (state_lock(&d->st, err, sizeof(err)) < 0 ||
	    state_reload_peers(&d->st, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	int rc = 0;
	if (d->st.npeers == 0) {
		if (state_peer_create(&d->st, "phone", &p, err, sizeof(err)) < 0 ||
		    state_save_peers(&d->st, err, sizeof(err)) < 0) {
			log_error("%s", err);
			rc = -1;
		} else {
			log_info("created peer \"phone\"; scan this with the WireGuard app:");
			if (peerconf_print(&d->st, p, d->opts->endpoint, stdout, err, sizeof(err)) <
			    0)
				log_error("%s", err);
			fflush(stdout);
		}
	}
	state_unlock(&d->st);
	return rc;
}

/* The CA, made on first start; with --no-intercept it is not created (no
 * CA: *have stays false, and there is no CA page). Loaded once for both the
 * TLS contexts and the CA page. */
static int daemon_load_ca(struct daemon *d, const struct daemon_options *o, struct ca *ca,
			  bool *have)
{
	char err[4400];
	bool created = false;
	*have = false;
	int rc = ca_load(ca, d->st.home, !o->no_intercept, &created, err, sizeof(err));
	if (rc == -ENOENT && o->no_intercept)
		return 0;
	if (rc < 0) {
		log_error("%s", err);
		return -1;
	}
	if (created)
		log_info("created the capture CA %s: install it on phones (http://wgmitm.internal "
			 "in the tunnel)",
			 ca->cert_path);
	*have = true;
	return 0;
}

/* Both TLS contexts and the passthrough list. SSLKEYLOGFILE in the
 * environment adds key log lines. */
static int daemon_start_tls(struct daemon *d, const struct daemon_options *o, const struct ca *ca)
{
	long auto_s = o->auto_passthrough_s < 0 ? PASSTHRU_DEFAULT_AUTO_S : o->auto_passthrough_s;
	d->passthru = passthru_new((uint32_t)auto_s);
	if (!d->passthru) {
		log_error("out of memory");
		return -1;
	}
	for (size_t i = 0; i < o->npassthrough; i++)
		if (passthru_add_rule(d->passthru, o->passthrough[i]) < 0) {
			log_error("--passthrough \"%s\": not a usable pattern", o->passthrough[i]);
			return -1;
		}
	if (o->no_intercept)
		return 0;
	char err[512];
	struct tls_config tc = {
		.ca_cert = ca->cert,
		.ca_key = ca->key,
		.insecure_upstream = o->insecure_upstream,
		.keylog_path = getenv("SSLKEYLOGFILE"),
	};
	for (size_t i = 0; i < o->nupstream_ca && i < TLS_MAX_UPSTREAM_CA; i++)
		tc.upstream_ca[tc.n_upstream_ca++] = o->upstream_ca[i];
	d->tls = tls_ctx_new(&tc, err, sizeof(err));
	if (!d->tls) {
		log_error("TLS: %s", err);
		return -1;
	}
	if (tc.keylog_path && tc.keylog_path[0])
		log_warn("SSLKEYLOGFILE: TLS keys of both legs go to %s", tc.keylog_path);
	if (o->insecure_upstream)
		log_warn("--insecure-upstream: upstream certificates are not verified");
	return 0;
}

/* The CA page on TCP :80 of our tunnel addresses. No CA (--no-intercept
 * before one was made): no page, the port stays refused. */
static int open_capage(struct daemon *d, const struct daemon_options *o, const struct ca *ca)
{
	if (!ca)
		return 0;
	struct capage_config cp = { .ca = ca->cert,
				    .addr4 = d->policy.addr4,
				    .addr6 = d->policy.addr6,
				    .peer_name = peer_name_by_addr,
				    .peer_ctx = d };
	d->capage = capage_new(d->loop, &cp);
	if (!d->capage || policy_add_local_port(&d->policy, IPPROTO_TCP, CAPAGE_PORT) < 0) {
		log_error("cannot start the CA page");
		return -1;
	}
	for (size_t i = 0; i < o->nhost_ports; i++)
		if (o->host_ports[i] == CAPAGE_PORT)
			log_warn("--allow-host-port %u: the CA page serves that port", CAPAGE_PORT);
	return 0;
}

/* Policy, flow records and the TCP relay exist before the netstack. */
/* A breakpoint event goes to the API's live events. */
static void on_held_event(void *ctx, const char *what, const json_t *item)
{
	struct daemon *d = ctx;
	api_held_event(d->api, what, item);
}

static int open_mitm(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	policy_init(&d->policy, &d->st.pool);
	for (size_t i = 0; i < o->nhost_ports; i++) {
		if (policy_add_host_port(&d->policy, o->host_ports[i]) < 0) {
			log_error("--allow-host-port %u: cannot add", o->host_ports[i]);
			return -1;
		}
		log_info("peers reach host port %u at the endpoint's tunnel address",
			 o->host_ports[i]);
	}
	char path[4200];
	size_t repaired = 0;
	snprintf(path, sizeof(path), "%s/%s", d->st.home, FLOWLOG_FILE);
	int rc = flowlog_open(&d->flows, path, &repaired);
	if (rc < 0) {
		log_error("%s: %s", path, strerror(-rc));
		return -1;
	}
	if (repaired)
		log_warn("%s: repaired a last line cut by a crash", path);
	flowlog_set_batching(d->flows, true); /* flushed every loop iteration */
	struct ca ca;
	bool have_ca;
	if (daemon_load_ca(d, o, &ca, &have_ca) < 0)
		return -1;
	rc = daemon_start_tls(d, o, have_ca ? &ca : NULL);
	if (rc == 0)
		rc = open_capage(d, o, have_ca ? &ca : NULL);
	if (have_ca) {
		X509_up_ref(ca.cert);
		d->ca_cert = ca.cert;
		ca_free(&ca);
	}
	if (rc < 0)
		return -1;
	struct relay_config rc_cfg = {
		.held_event = on_held_event,
		.held_ctx = d,
		.policy = &d->policy,
		.log = d->flows,
		.peer_name = peer_name_by_addr,
		.peer_ctx = d,
		.tls = d->tls,
		.passthrough = d->passthru,
		.body_cap = o->body_cap < 0 ? HTTPFLOW_DEFAULT_BODY_CAP : (size_t)o->body_cap,
		.max_per_peer = daemon_tcp_per_peer(o),
		.max_per_user = o->max_tcp_per_user,
		.names = d->names = dnsnames_new(), /* NULL: parents by address only */
		.user_rate = { o->user_rate[0], o->user_rate[1] },
	};
	d->relay = relay_new(d->loop, &rc_cfg);
	if (!d->relay) {
		log_error("cannot start the TCP relay");
		return -1;
	}
	if (daemon_parents_apply(d) < 0)
		return -1;
	struct replay_config rp = {
		.log = d->flows, .tls = d->tls, .policy = &d->policy, .body_cap = rc_cfg.body_cap
	};
	d->replay = replay_engine_new(d->loop, &rp);
	return 0;
}

/* DNS inside the tunnel and the UDP relay need the netstack. */

static int open_dns_udp(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	struct dns_config dc = { .log = d->flows,
				 .peer_name = peer_name_by_addr,
				 .peer_ctx = d,
				 .local4 = d->policy.addr4,
				 .local6 = d->policy.addr6,
				 .names = d->names };
	for (size_t i = 0; i < o->ndns_upstream; i++) {
		if (dns_parse_upstream(o->dns_upstream[i], &dc.upstreams[dc.nupstreams]) < 0) {
			log_error("--dns-upstream \"%s\": expected ADDR[:PORT] or [ADDR6]:PORT",
				  o->dns_upstream[i]);
			return -1;
		}
		dc.nupstreams++;
	}
	if (dc.nupstreams == 0) {
		int n = dns_load_resolv_conf(DNS_RESOLV_CONF, dc.upstreams, DNS_MAX_UPSTREAMS);
		if (n <= 0) {
			log_error("no DNS upstream: %s has no usable nameserver; give one with "
				  "--dns-upstream",
				  DNS_RESOLV_CONF);
			return -1;
		}
		dc.nupstreams = (size_t)n;
	}
	d->dns = dns_proxy_new(d->loop, d->ns, &dc);
	if (!d->dns) {
		log_error("cannot start the DNS proxy");
		return -1;
	}
	relay_set_local_tcp(d->relay, on_local_tcp, d);
	struct udp_relay_config uc = {
		.policy = &d->policy,
		.log = d->flows,
		.peer_name = peer_name_by_addr,
		.peer_ctx = d,
		.local = on_local_udp,
		.local_ctx = d->dns,
		.unreachable = on_udp_unreachable,
		.unreachable_ctx = d,
		.quic = o->quic_passthrough ? UDP_RELAY_QUIC_PASSTHROUGH : UDP_RELAY_QUIC_REFUSE,
		.protect = &d->udp_protect,
	};
	d->udp_relay = udp_relay_new(d->loop, d->ns, &uc);
	if (!d->udp_relay) {
		log_error("cannot start the UDP relay");
		return -1;
	}
	return 0;
}

static int daemon_conditions(void *ctx, const json_t *list, struct config_error *err)
{
	return daemon_shape_set(ctx, list, err);
}

static void config_targets(struct daemon *d, struct runconfig_targets *t)
{
	*t = (struct runconfig_targets){ .relay = d->relay,
					 .udp_relay = d->udp_relay,
					 .tls = d->tls,
					 .passthru = d->passthru,
					 .dns = d->dns,
					 .policy = &d->policy,
					 .ns = d->ns,
					 .log = d->flows,
					 .scope = &d->scope,
					 .rules = d->rules,
					 .conditions = daemon_conditions,
					 .conditions_ctx = d };
}

/* A new rule set goes to the relay and the tunnel's DNS. */
static void install_rules(void *ctx, struct ruleset *rs)
{
	struct daemon *d = ctx;
	if (d->relay)
		relay_set_rules(d->relay, rs);
	if (d->dns)
		dns_proxy_set_rules(d->dns, rs);
}

/* HOME/config.json, then the options given on the command line over it. */
static int load_config(struct daemon *d)
{
	d->rules = rulesrc_new(d->st.home, d->opts->rule_options, d->opts->dns_overrides,
			       install_rules, d);
	if (!d->rules)
		return -1;
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", d->st.home, CONFIG_FILE);
	struct config_error err;
	json_t *saved = config_load(path, &runconfig_checks, &err);
	if (!saved) {
		log_error("%s", err.message);
		return -1;
	}
	json_t *opts = runconfig_from_options(d->opts);
	json_t *doc = config_configure(saved, opts, &runconfig_checks, &err);
	json_decref(saved);
	json_decref(opts);
	if (!doc) {
		log_error("command line: %s: %s", err.field, err.message);
		return -1;
	}
	struct runconfig_targets t;
	config_targets(d, &t);
	if (runconfig_apply(&t, NULL, doc, &err) < 0) {
		log_error("%s: %s: %s", path, err.field, err.message);
		json_decref(doc);
		return -1;
	}
	d->config = doc;
	return 0;
}

int daemon_set_config(struct daemon *d, json_t *doc, struct config_error *err)
{
	/* Listeners first: a port they cannot have leaves everything as it was. */
	const json_t *ls = json_object_get(doc, "listeners");
	if (!json_equal(json_object_get(d->config, "listeners"), ls) &&
	    daemon_listeners_set(d, ls, err) < 0)
		return -1;
	struct runconfig_targets t;
	config_targets(d, &t);
	int rc = runconfig_apply(&t, d->config, doc, err);
	json_decref(d->config);
	d->config = json_incref(doc);
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", d->st.home, CONFIG_FILE);
	int src = config_save(path, doc);
	if (src < 0)
		log_warn("%s: cannot save the configuration: %s", path, strerror(-src));
	return rc;
}

/* HOME/flows.db, following the log. Without it capture goes on; lists
 * and searches wait for it. */
static int open_store(struct daemon *d)
{
	if (d->opts->no_store) {
		log_info("no flow store (--no-store): flows go to %s/%s only", d->st.home,
			 FLOWLOG_FILE);
		return 0;
	}
	char db[4200], log[4200];
	snprintf(db, sizeof(db), "%s/%s", d->st.home, STORE_FILE);
	snprintf(log, sizeof(log), "%s/%s", d->st.home, FLOWLOG_FILE);
	struct store_options so = { .max_size = d->opts->store_max_size,
				    .max_age = d->opts->store_max_age,
				    .background = true };
	int rc = store_open(&d->store, db, log, &so);
	if (rc == -EBUSY && d->opts->wrap) {
		/* The running endpoint's store follows the same log. */
		log_debug("%s: kept by the running endpoint, which takes these flows in", db);
		return 0;
	}
	if (rc == -EBUSY) {
		log_error("%s: another wgmitm run keeps this store; one run per home directory",
			  db);
		return -1;
	}
	if (rc < 0)
		log_error("%s: the flow store is off (%s); capture goes on in %s", db,
			  strerror(-rc), log);
	return 0;
}

static void on_record(void *ctx, const json_t *record)
{
	struct daemon *d = ctx;
	api_flow_recorded(d->api, record);
	const struct daemon_wrap *w = d->opts->wrap;
	const char *peer = json_string_value(json_object_get(record, "peer"));
	if (w && w->on_record && peer && strcmp(peer, w->name) == 0)
		w->on_record(w->arg, record);
}

static void on_flow_begin(void *ctx, const struct flowlog_flow *f)
{
	struct daemon *d = ctx;
	api_flow_started(d->api, f);
}

/* The control API: [ADDR:]PORT, "off", or 127.0.0.1:8081. */
static int open_api(struct daemon *d)
{
	const char *spec = d->opts->api;
	if (d->opts->wrap)
		flowlog_set_observer(d->flows, on_record, d);
	if (spec && strcmp(spec, "off") == 0)
		return 0;
	char host[128] = "127.0.0.1";
	unsigned port = API_DEFAULT_PORT;
	if (spec && daemon_parse_api(spec, host, sizeof(host), &port) < 0) {
		log_error("--api \"%s\": expected [ADDR:]PORT or off", spec);
		return -1;
	}
	char db[4200];
	snprintf(db, sizeof(db), "%s/%s", d->st.home, STORE_FILE);
	struct api_ops ops;
	daemon_api_ops(d, &ops);
	struct api_config ac = { .home = d->st.home,
				 .host = host,
				 .port = (uint16_t)port,
				 .store_path = d->store ? db : NULL,
				 .ops = &ops,
				 .checks = &runconfig_checks };
	char err[512];
	d->api = api_new(d->loop, &ac, err, sizeof(err));
	if (!d->api) {
		/* Capture matters more than the API: say so and go on. */
		log_error("%s; capture goes on without it", err);
		return 0;
	}
	(void)relay_protect_port(d->relay, api_port(d->api));
	flowlog_set_observer(d->flows, on_record, d);
	flowlog_set_begin_observer(d->flows, on_flow_begin, d);
	char url[512];
	api_login_url(d->api, url, sizeof(url));
	log_info("control API on %s port %u; open %s in a browser (token in %s/api-token)", host,
		 api_port(d->api), url, d->st.home);
	return 0;
}

int daemon_parse_api(const char *spec, char *host, size_t hostlen, unsigned *port)
{
	const char *p = spec;
	const char *colon = strrchr(spec, ':');
	if (colon) {
		size_t n = (size_t)(colon - spec);
		const char *h = spec;
		if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
			h++;
			n -= 2;
		}
		if (n == 0 || n >= hostlen)
			return -1;
		memcpy(host, h, n);
		host[n] = '\0';
		struct in6_addr a6;
		struct in_addr a4;
		if (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
			return -1;
		p = colon + 1;
	}
	char *end;
	unsigned long v = strtoul(p, &end, 10);
	if (!*p || *end || v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

int daemon_run(const struct daemon_options *opts)
{
	struct daemon *d = calloc(1, sizeof(*d));
	char err[512];
	int status = 1;
	if (!d)
		return 1;
	d->opts = opts;
	d->loop = uv_default_loop();
	if (daemon_listeners_check(opts, err, sizeof(err)) < 0) {
		log_error("%s", err);
		free(d);
		return 1;
	}
	clock_gettime(CLOCK_REALTIME, &d->started);
	/* A write to a socket its peer reset must fail with EPIPE (the flow
	 * ends as upstream_reset), not end the process. */
	signal(SIGPIPE, SIG_IGN);
	/* Every relayed connection holds an upstream socket: take the hard limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (!wg_crypto_init()) {
		log_error("crypto initialisation failed");
		goto out_free;
	}
	if (state_open(&d->st, opts->home, true, err, sizeof(err)) < 0) {
		log_error("%s", err);
		goto out_free;
	}
	/* A wrapped command needs no phone. */
	if (!opts->wrap && first_run_peer(d) < 0)
		goto out_state;
	d->recv_buf = malloc(RECV_SLOT * RECV_BATCH);
	if (!d->recv_buf)
		goto out_state;

	static const struct wg_device_ops wg_ops = { .send = on_wg_send,
						     .deliver = on_wg_deliver,
						     .wall_time = on_wall_time };
	d->dev = wg_device_new(d->st.private_key, &wg_ops, d);
	if (!d->dev) {
		log_error("cannot create the WireGuard device");
		goto out_state;
	}
	set_timer_params(d);

	if (open_mitm(d) < 0)
		goto out_dev;
	struct netstack_config nc = {
		.mtu = STATE_DEFAULT_MTU,
		.max_tcp = opts->max_tcp ? opts->max_tcp : DAEMON_DEFAULT_MAX_TCP,
	};
	addrpool_server(&d->st.pool, &nc.addr4, &nc.addr6);
	static const struct netstack_ops ns_ops = {
		.output = on_netstack_output,
		.tcp_accept = on_tcp_accept,
		.udp_recv = on_udp_recv,
	};
	d->ns = netstack_new(d->loop, &nc, &ns_ops, d);
	if (!d->ns) {
		log_error("cannot start the network stack: %s", strerror(errno));
		goto out_dev;
	}
	if (open_dns_udp(d) < 0 || load_config(d) < 0 || open_store(d) < 0 || open_api(d) < 0 ||
	    sync_peers(d) < 0 || open_sockets(d) < 0 || open_wrap(d) < 0 ||
	    daemon_listeners_open(d) < 0)
		goto out_loop;

	char pub[45], a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN];
	state_key_to_base64(d->st.public_key, pub);
	inet_ntop(AF_INET, &nc.addr4, a4, sizeof(a4));
	inet_ntop(AF_INET6, &nc.addr6, a6, sizeof(a6));
	log_info("endpoint public key %s, tunnel addresses %s and %s, %zu peer%s", pub, a4, a6,
		 d->npeers, d->npeers == 1 ? "" : "s");
	if (d->capage)
		log_info("CA page for peers: http://%s/ or http://%s/", LOCALNAME_HOST, a4);
	log_info("QUIC (UDP port 443): %s", opts->quic_passthrough
						    ? "relayed (not decrypted)"
						    : "refused, apps fall back to TLS over TCP");

	uv_timer_init(d->loop, &d->wg_timer);
	d->wg_timer.data = d;
	uv_prepare_init(d->loop, &d->prepare);
	d->prepare.data = d;
	uv_prepare_start(&d->prepare, on_prepare);
	uv_check_init(d->loop, &d->check);
	d->check.data = d;
	uv_check_start(&d->check, on_check);
	uv_timer_init(d->loop, &d->reload_timer);
	d->reload_timer.data = d;
	uv_timer_init(d->loop, &d->rules_timer);
	d->rules_timer.data = d;
	uv_timer_init(d->loop, &d->stats_timer);
	d->stats_timer.data = d;
	if (opts->stats_interval_ms)
		uv_timer_start(&d->stats_timer, on_stats_timer, opts->stats_interval_ms,
			       opts->stats_interval_ms);
	uv_signal_t *sigs[] = { &d->sig_int, &d->sig_term, &d->sig_hup, &d->sig_usr1 };
	int signums[] = { SIGINT, SIGTERM, SIGHUP, SIGUSR1 };
	for (size_t i = 0; i < 4; i++) {
		uv_signal_init(d->loop, sigs[i]);
		sigs[i]->data = d;
		uv_signal_start(sigs[i], on_signal, signums[i]);
	}
	if (uv_fs_event_init(d->loop, &d->watch) == 0) {
		d->watch.data = d;
		int rc = uv_fs_event_start(&d->watch, on_watch, d->st.home, 0);
		if (rc < 0)
			log_warn("cannot watch %s (%s): use SIGHUP after changing peers",
				 d->st.home, uv_strerror(rc));
	}

	if (opts->wrap && write(opts->wrap->go_fd, "g", 1) != 1)
		log_warn("wrap: cannot start the command: %s", strerror(errno));
	uv_run(d->loop, UV_RUN_DEFAULT);
	status = 0;
out_loop:
	if (!d->stopping)
		daemon_stop(d);
out_dev:
	replay_engine_free(d->replay);
	relay_free(d->relay);
	udp_relay_free(d->udp_relay);
	tls_ctx_free(d->tls);
	passthru_free(d->passthru);
	dns_proxy_free(d->dns);
	dnsnames_free(d->names);
	capage_free(d->capage);
	/* Let libuv close what the relays and the netstack closed. */
	uv_run(d->loop, UV_RUN_DEFAULT);
	flowlog_close(d->flows);
	store_close(d->store); /* after the last records: it takes them in */
	users_free(d->users);
	json_decref(d->config);
	rulesrc_free(d->rules);
	runconfig_scope_free(d->scope);
	X509_free(d->ca_cert);
	for (size_t i = 0; i < d->npeers; i++)
		daemon_peer_free(d, d->peers[i]);
	free(d->peers);
	wg_device_free(d->dev);
out_state:
	for (size_t i = 0; i < d->nudp; i++)
		free(d->out[i]);
	free(d->recv_buf);
	free(d->tun_buf);
	state_close(&d->st);
out_free:
	uv_loop_close(d->loop);
	free(d);
	return status;
}
