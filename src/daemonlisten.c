/* The daemon's proxy listeners (daemonlisten.h). */
#include "daemonlisten.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "control/api.h"
#include "control/config.h"
#include "daemon_internal.h"
#include "flows/flowlog.h"
#include "listen/authext.h"
#include "listen/entry.h"
#include "listen/proxy.h"
#include "listen/socksudp.h"
#include "listen/target.h"
#include "listen/udpfwd.h"
#include "listen/users.h"
#include "mitm/relay.h"
#include "mitm/udp.h"

static uint16_t port_of(const struct sockaddr_storage *a)
{
	return sockaddr_port((const struct sockaddr *)a);
}

static bool is_loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

static bool is_any(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	return sockaddr_same((const struct sockaddr *)a, (const struct sockaddr *)b);
}

/* Two binds that cannot both succeed: one port, and one address or a
 * wildcard of the same family (Linux lets [::] take IPv4 too). Port 0 is
 * any free port. */
static bool clash(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (port_of(a) != port_of(b) || port_of(a) == 0)
		return false;
	if (is_any(a) || is_any(b))
		return a->ss_family == b->ss_family || (is_any(a) && a->ss_family == AF_INET6) ||
		       (is_any(b) && b->ss_family == AF_INET6);
	return same_addr(a, b);
}

static const char *kind(const struct daemon_proxy *p)
{
	return p->http && p->socks5 ? "--http-proxy/--socks5"
	       : p->http            ? "--http-proxy"
				    : "--socks5";
}

int daemon_add_proxy(struct daemon_options *o, const char *spec, bool socks5, char *err,
		     size_t errlen)
{
	char host[128] = "127.0.0.1";
	unsigned port;
	const char *opt = socks5 ? "--socks5" : "--http-proxy";
	if (daemon_parse_api(spec, host, sizeof(host), &port) < 0 || port == 0) {
		snprintf(err, errlen, "%s \"%s\": expected [ADDR:]PORT", opt, spec);
		return -1;
	}
	struct sockaddr_storage a;
	memset(&a, 0, sizeof(a));
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&a) != 0 &&
	    uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&a) != 0) {
		snprintf(err, errlen, "%s \"%s\": expected [ADDR:]PORT", opt, spec);
		return -1;
	}
	for (size_t i = 0; i < o->nproxies; i++)
		if (same_addr(&o->proxies[i].addr, &a)) {
			if (socks5)
				o->proxies[i].socks5 = true;
			else
				o->proxies[i].http = true;
			return 0;
		}
	if (o->nproxies == DAEMON_MAX_PROXY) {
		snprintf(err, errlen, "more than %d proxy listeners", DAEMON_MAX_PROXY);
		return -1;
	}
	o->proxies[o->nproxies++] =
		(struct daemon_proxy){ .addr = a, .http = !socks5, .socks5 = socks5 };
	return 0;
}

int daemon_add_target(struct daemon_options *o, const char *spec, bool reverse, char *err,
		      size_t errlen)
{
	const char *opt = reverse ? "--reverse" : "--forward";
	if (o->ntargets == DAEMON_MAX_TARGETS) {
		snprintf(err, errlen, "more than %d --reverse and --forward listeners",
			 DAEMON_MAX_TARGETS);
		return -1;
	}
	char why[200];
	struct listen_target *t = &o->targets[o->ntargets];
	int rc = reverse ? listen_parse_reverse(spec, t, why, sizeof(why))
			 : listen_parse_forward(spec, t, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "%s \"%s\": %s", opt, spec, why);
		return -1;
	}
	t->spec = spec;
	o->ntargets++;
	return 0;
}

int daemon_add_udp_forward(struct daemon_options *o, const char *spec, char *err, size_t errlen)
{
	if (o->nudp_forwards == DAEMON_MAX_UDP_FORWARDS) {
		snprintf(err, errlen, "more than %d --udp-forward listeners",
			 DAEMON_MAX_UDP_FORWARDS);
		return -1;
	}
	char why[200];
	if (listen_parse_udp_forward(spec, &o->udp_forwards[o->nudp_forwards], why, sizeof(why)) <
	    0) {
		snprintf(err, errlen, "--udp-forward \"%s\": %s", spec, why);
		return -1;
	}
	o->udp_forwards[o->nudp_forwards].spec = spec;
	o->nudp_forwards++;
	return 0;
}

int daemon_add_parent(struct daemon_options *o, const char *spec, char *err, size_t errlen)
{
	if (o->nparents == RELAY_MAX_PARENTS) {
		snprintf(err, errlen, "more than %d --upstream-proxy", RELAY_MAX_PARENTS);
		return -1;
	}
	char why[200];
	if (listen_parse_parent(spec, &o->parents[o->nparents], why, sizeof(why)) < 0) {
		/* The spec may hold a password: not repeated. */
		snprintf(err, errlen, "--upstream-proxy: %s", why);
		return -1;
	}
	o->nparents++;
	return 0;
}

/* HOST resolved now, once (the first address), with PORT. 0, or -1 with
 * why. */
static int resolve_host(const char *host, uint16_t port, int socktype, struct sockaddr_storage *out,
			char *why, size_t whylen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = socktype };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0 || !res || res->ai_addrlen > sizeof(*out)) {
		snprintf(why, whylen, "cannot resolve %s: %s", host,
			 rc ? gai_strerror(rc) : "no address");
		if (res)
			freeaddrinfo(res);
		return -1;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	sockaddr_set_port((struct sockaddr *)out, port);
	return 0;
}

int daemon_parents_apply(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	if (o->nparents == 0)
		return 0;
	struct relay_parent ps[RELAY_MAX_PARENTS];
	for (size_t i = 0; i < o->nparents; i++) {
		const struct listen_parent *lp = &o->parents[i];
		ps[i] = lp->p;
		char why[300];
		if (resolve_host(lp->host, lp->port, SOCK_STREAM, &ps[i].addr, why, sizeof(why)) <
		    0) {
			log_error("--upstream-proxy %s: %s", lp->p.label, why);
			sodium_memzero(ps, sizeof(ps));
			return -1;
		}
		log_info("upstream proxy %s for %s%s%s", lp->p.label,
			 lp->p.device[0] ? "device "
			 : lp->p.glob[0] ? "hosts "
					 : "every flow",
			 lp->p.device[0] ? lp->p.device : lp->p.glob,
			 lp->p.user[0] ? " (with credentials)" : "");
	}
	int rc = relay_set_parents(d->relay, ps, o->nparents);
	sodium_memzero(ps, sizeof(ps));
	return rc < 0 ? -1 : 0;
}

/* ---- the checks: before anything binds ----------------------------------- */

/* A listener's address and what to call it. */
struct bound {
	struct sockaddr_storage addr;
	char label[LISTEN_NAME_MAX + 16];
	bool needs_users; /* a proxy: credentials make it safe to open */
	bool udp;         /* binds UDP: collides only with UDP */
	bool wireguard;   /* bound already (the tunnel's, wrap's): only collisions
			   * with the others apply */
};

#define MAX_BOUND                                                                                  \
	(DAEMON_MAX_LISTENERS + DAEMON_MAX_PROXY + DAEMON_MAX_TARGETS + DAEMON_MAX_UDP_FORWARDS +  \
	 DAEMON_MAX_LISTEN + 8)

static void bound_add(struct bound *l, size_t *n, const struct sockaddr_storage *a,
		      const char *label, bool needs_users, bool udp, bool wireguard)
{
	if (*n == MAX_BOUND)
		return;
	l[*n] = (struct bound){
		.addr = *a, .needs_users = needs_users, .udp = udp, .wireguard = wireguard
	};
	snprintf(l[*n].label, sizeof(l[*n].label), "%s", label);
	(*n)++;
}

/* The first of l[] that cannot be: two on one port, one on the API's port
 * (0: none), one open to others without credentials (creds: --users or
 * --auth-url; open_ok: --allow-open-proxy). -1 with *bad and the reason in
 * err, or 0. */
static int bounds_check(const struct bound *l, size_t n, unsigned api, bool creds, bool open_ok,
			size_t *bad, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		char a[80];
		flowlog_format_addr((const struct sockaddr *)&l[i].addr, a);
		*bad = i;
		if (api && !l[i].udp && !l[i].wireguard && port_of(&l[i].addr) == api) {
			snprintf(err, errlen, "%s %s: that is the control API's port", l[i].label,
				 a);
			return -1;
		}
		for (size_t j = 0; j < i; j++)
			if (l[i].udp == l[j].udp && !(l[i].wireguard && l[j].wireguard) &&
			    clash(&l[i].addr, &l[j].addr)) {
				char b[80];
				flowlog_format_addr((const struct sockaddr *)&l[j].addr, b);
				snprintf(err, errlen, "%s %s: the port is already %s's (%s)",
					 l[i].label, a, l[j].label, b);
				return -1;
			}
		if (l[i].wireguard || is_loopback(&l[i].addr) || open_ok ||
		    (l[i].needs_users && creds))
			continue;
		if (l[i].needs_users)
			snprintf(err, errlen,
				 "%s %s: a proxy on a non-loopback address without --users lets "
				 "anyone who reaches it use it; give --users FILE, or "
				 "--allow-open-proxy if that is what you want",
				 l[i].label, a);
		else
			snprintf(err, errlen,
				 "%s %s: a listener on a non-loopback address lets anyone who "
				 "reaches it through to its target; give --allow-open-proxy if "
				 "that is what you want",
				 l[i].label, a);
		return -1;
	}
	return 0;
}

int daemon_listeners_check(const struct daemon_options *o, char *err, size_t errlen)
{
	unsigned api = API_DEFAULT_PORT;
	char host[128];
	if (o->api && strcmp(o->api, "off") == 0)
		api = 0;
	else if (o->api)
		(void)daemon_parse_api(o->api, host, sizeof(host), &api);
	struct bound *l = calloc(MAX_BOUND, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t n = 0;
	for (size_t i = 0; i < o->nlisten; i++)
		bound_add(l, &n, &o->listen[i], "--listen", false, true, true);
	for (size_t i = 0; i < o->nproxies; i++)
		bound_add(l, &n, &o->proxies[i].addr, kind(&o->proxies[i]), true, false, false);
	for (size_t i = 0; i < o->ntargets; i++)
		bound_add(l, &n, &o->targets[i].addr,
			  strcmp(o->targets[i].via, "reverse") == 0 ? "--reverse" : "--forward",
			  false, false, false);
	for (size_t i = 0; i < o->nudp_forwards; i++)
		bound_add(l, &n, &o->udp_forwards[i].addr, "--udp-forward", false, true, false);
	size_t bad;
	int rc = bounds_check(l, n, api, o->users_file || o->auth_url, o->allow_open_proxy, &bad,
			      err, errlen);
	free(l);
	return rc;
}

/* ---- the listeners --------------------------------------------------------- */

/* One listener of the configuration, open. */
struct daemon_listener {
	json_t *entry; /* its entry in "listeners" (a reference) */
	struct listen_entry le;
	struct proxy *proxy;     /* proxies, reverse, forward */
	struct udp_forward *udp; /* udp-forward */
};

static void protect_udp(struct daemon *d, uint16_t port)
{
	struct udp_relay_ports *pp = &d->udp_protect;
	for (size_t i = 0; i < pp->n; i++)
		if (pp->port[i] == port)
			return;
	if (pp->n < UDP_RELAY_MAX_PROTECTED)
		pp->port[pp->n++] = port;
}

static void log_proxy(const struct daemon *d, bool http, bool socks5, const char *a,
		      const char *name)
{
	log_info("%s on %s%s%s%s",
		 http && socks5 ? "HTTP proxy and SOCKS5"
		 : http         ? "HTTP proxy"
				: "SOCKS5",
		 a,
		 d->users && d->auth ? " (credentials from --users and --auth-url)"
		 : d->users          ? " (credentials from --users)"
		 : d->auth           ? " (credentials from --auth-url)"
				     : "",
		 name ? ", listener " : "", name ? name : "");
}

static struct proxy *open_proxy(struct daemon *d, struct proxy_config *pc, char *why, size_t whylen)
{
	/* SOCKS5 UDP ASSOCIATE: the tunnel's policy and QUIC setting. */
	struct socks_udp_config suc = {
		.policy = &d->policy,
		.log = d->flows,
		.quic = d->opts->quic_passthrough ? UDP_RELAY_QUIC_PASSTHROUGH
						  : UDP_RELAY_QUIC_REFUSE,
		.protect = &d->udp_protect,
	};
	if (pc->http || pc->socks5) {
		pc->users = d->users;
		pc->auth = d->auth;
		pc->udp = &suc;
	}
	pc->relay = d->relay;
	int err;
	struct proxy *p = proxy_new(d->loop, pc, &err);
	if (!p) {
		char a[80];
		flowlog_format_addr((const struct sockaddr *)&pc->addr, a);
		snprintf(why, whylen, "cannot listen on %s: %s", a, uv_strerror(err));
		return NULL;
	}
	/* A flow relayed back into a listener would loop. */
	(void)relay_protect_port(d->relay, proxy_port(p));
	return p;
}

static int open_one(struct daemon *d, struct daemon_listener *l, char *why, size_t whylen)
{
	const struct listen_entry *e = &l->le;
	char a[80];
	flowlog_format_addr((const struct sockaddr *)&e->t.addr, a);
	if (e->kind == LISTEN_UDP_FORWARD) {
		struct udp_forward_config fc = {
			.addr = e->t.addr,
			.policy = &d->policy,
			.log = d->flows,
			.protect = &d->udp_protect,
		};
		if (resolve_host(e->t.host, e->t.port, SOCK_DGRAM, &fc.target, why, whylen) < 0)
			return -1;
		protect_udp(d, port_of(&e->t.addr));
		int err;
		l->udp = udp_forward_new(d->loop, &fc, &err);
		if (!l->udp) {
			snprintf(why, whylen, "cannot listen on %s: %s", a, uv_strerror(err));
			return -1;
		}
		char b[80];
		flowlog_format_addr((const struct sockaddr *)&fc.target, b);
		log_info("UDP forward on %s to %s (%s), listener %s", a, b, e->t.host, e->name);
		return 0;
	}
	struct proxy_config pc = { .addr = e->t.addr, .max_connections = e->max_connections };
	if (e->kind == LISTEN_PROXY) {
		pc.http = e->http;
		pc.socks5 = e->socks5;
	} else {
		pc.target = &e->t;
	}
	l->proxy = open_proxy(d, &pc, why, whylen);
	if (!l->proxy)
		return -1;
	if (e->kind == LISTEN_PROXY) {
		log_proxy(d, e->http, e->socks5, a, e->name);
		return 0;
	}
	const struct listen_target *t = &e->t;
	bool v6 = strchr(t->host, ':') != NULL;
	log_info("%s on %s to %s%s%s:%u (client %s, upstream %s), listener %s", t->via, a,
		 v6 ? "[" : "", t->host, v6 ? "]" : "", t->port,
		 t->shape.client == RELAY_CLIENT_SNIFF ? "TLS or plaintext"
		 : t->shape.client == RELAY_CLIENT_TLS ? "TLS"
						       : "plaintext",
		 t->shape.upstream_tls ? "TLS" : "plaintext", e->name);
	return 0;
}

/* Closed; its counts go on in the retired totals. */
static void close_one(struct daemon *d, struct daemon_listener *l)
{
	if (l->proxy) {
		struct proxy_stats ps;
		proxy_get_stats(l->proxy, &ps);
		struct proxy_stats *r = &d->retired_proxy;
		r->accepted += ps.accepted;
		r->handed += ps.handed;
		r->auth_failed += ps.auth_failed;
		r->bad_request += ps.bad_request;
		r->refused_limit += ps.refused_limit;
		r->refused_policy += ps.refused_policy;
		r->resolve_failed += ps.resolve_failed;
		struct socks_udp_stats us;
		if (proxy_get_udp_stats(l->proxy, &us)) {
			struct socks_udp_stats *u = &d->retired_socks_udp;
			u->associations += us.associations;
			u->datagrams += us.datagrams;
			u->foreign += us.foreign;
			u->fragments += us.fragments;
			u->malformed += us.malformed;
		}
		proxy_free(l->proxy);
		l->proxy = NULL;
		log_info("listener %s closed", l->le.name);
	}
	if (l->udp) {
		struct udp_forward_stats fs;
		udp_forward_get_stats(l->udp, &fs);
		struct udp_forward_stats *r = &d->retired_udp_forward;
		r->datagrams += fs.datagrams;
		r->relay.flows_opened += fs.relay.flows_opened;
		r->relay.bytes_up += fs.relay.bytes_up;
		r->relay.bytes_down += fs.relay.bytes_down;
		udp_forward_free(l->udp);
		l->udp = NULL;
		log_info("listener %s closed", l->le.name);
	}
}

/* d->proxies and d->udp_forwards: every open one. */
static void relist(struct daemon *d)
{
	d->nproxies = d->nudp_forwards = 0;
	for (size_t i = 0; i < d->ninternal; i++)
		d->proxies[d->nproxies++] = d->internal[i];
	for (size_t i = 0; i < d->nlisteners; i++) {
		if (d->listeners[i].proxy)
			d->proxies[d->nproxies++] = d->listeners[i].proxy;
		if (d->listeners[i].udp)
			d->udp_forwards[d->nudp_forwards++] = d->listeners[i].udp;
	}
}

static int set_fail(struct config_error *err, size_t i, const char *member, const char *why)
{
	if (member && *member)
		snprintf(err->field, sizeof(err->field), "listeners[%zu].%s", i, member);
	else
		snprintf(err->field, sizeof(err->field), "listeners[%zu]", i);
	if (snprintf(err->message, sizeof(err->message), "%s", why) >= (int)sizeof(err->message))
		err->message[sizeof(err->message) - 1] = '\0'; /* cut */
	return -1;
}

/* Every listener of `list` that cannot be, before anything changes. */
static int check_entries(struct daemon *d, const struct daemon_listener *nl, size_t n,
			 struct config_error *err)
{
	const struct daemon_options *o = d->opts;
	struct bound *l = calloc(MAX_BOUND, sizeof(*l));
	if (!l)
		return set_fail(err, 0, NULL, "out of memory");
	size_t nb = 0;
	for (size_t i = 0; i < d->nudp; i++) {
		struct sockaddr_storage wg;
		int len = sizeof(wg);
		if (uv_udp_getsockname(&d->udp[i], (struct sockaddr *)&wg, &len) == 0)
			bound_add(l, &nb, &wg, "WireGuard", false, true, true);
	}
	for (size_t i = 0; i < o->nproxies; i++)
		if (o->proxies[i].peer)
			bound_add(l, &nb, &o->proxies[i].addr, "wrap's proxy", true, false, true);
	size_t first = nb;
	for (size_t i = 0; i < n; i++) {
		char label[LISTEN_NAME_MAX + 16];
		snprintf(label, sizeof(label), "listener %s", nl[i].le.name);
		bound_add(l, &nb, &nl[i].le.t.addr, label, nl[i].le.kind == LISTEN_PROXY,
			  nl[i].le.kind == LISTEN_UDP_FORWARD, false);
	}
	char why[512];
	size_t bad = 0;
	int rc = bounds_check(l, nb, d->api ? api_port(d->api) : 0, o->users_file || o->auth_url,
			      o->allow_open_proxy, &bad, why, sizeof(why));
	free(l);
	if (rc < 0)
		return set_fail(err, bad >= first ? bad - first : 0, "listen", why);
	return 0;
}

int daemon_listeners_set(struct daemon *d, const json_t *list, struct config_error *err)
{
	memset(err, 0, sizeof(*err));
	size_t n = json_array_size(list);
	if (d->opts->wrap) {
		if (n)
			log_debug("wrap: the configuration's %zu listener%s stay the running "
				  "endpoint's",
				  n, n == 1 ? "" : "s");
		return 0;
	}
	if (n > DAEMON_MAX_LISTENERS)
		return set_fail(err, DAEMON_MAX_LISTENERS, NULL, "too many listeners");
	struct daemon_listener *nl = calloc(DAEMON_MAX_LISTENERS, sizeof(*nl));
	if (!nl)
		return set_fail(err, 0, NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		char member[64], why[256];
		const json_t *e = json_array_get(list, i);
		if (listen_entry_parse(e, &nl[i].le, member, sizeof(member), why, sizeof(why)) <
		    0) {
			free(nl);
			return set_fail(err, i, member, why);
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(nl[j].le.name, nl[i].le.name) == 0) {
				free(nl);
				return set_fail(err, i, "name", "two listeners have this name");
			}
	}
	if (check_entries(d, nl, n, err) < 0) {
		free(nl);
		return -1;
	}
	/* An entry that did not change keeps its socket and its clients. */
	struct daemon_listener *old = d->listeners;
	bool kept[DAEMON_MAX_LISTENERS] = { 0 }, reused[DAEMON_MAX_LISTENERS] = { 0 };
	for (size_t i = 0; i < n; i++) {
		const json_t *e = json_array_get(list, i);
		nl[i].entry = json_incref((json_t *)e);
		for (size_t j = 0; j < d->nlisteners; j++)
			if (!kept[j] && strcmp(old[j].le.name, nl[i].le.name) == 0 &&
			    json_equal(old[j].entry, e)) {
				kept[j] = reused[i] = true;
				nl[i].proxy = old[j].proxy;
				nl[i].udp = old[j].udp;
				old[j].proxy = NULL;
				old[j].udp = NULL;
			}
	}
	for (size_t j = 0; j < d->nlisteners; j++)
		if (!kept[j])
			close_one(d, &old[j]);
	char why[512] = "";
	size_t bad = n;
	for (size_t i = 0; i < n && bad == n; i++)
		if (!reused[i] && open_one(d, &nl[i], why, sizeof(why)) < 0)
			bad = i;
	if (bad < n) {
		/* Back to the listeners there were. */
		for (size_t i = 0; i < n; i++) {
			for (size_t j = 0; reused[i] && j < d->nlisteners; j++)
				if (kept[j] && !old[j].proxy && !old[j].udp &&
				    strcmp(old[j].le.name, nl[i].le.name) == 0) {
					old[j].proxy = nl[i].proxy;
					old[j].udp = nl[i].udp;
					nl[i].proxy = NULL;
					nl[i].udp = NULL;
				}
			close_one(d, &nl[i]);
			json_decref(nl[i].entry);
		}
		for (size_t j = 0; j < d->nlisteners; j++) {
			char w[512];
			if (!kept[j] && open_one(d, &old[j], w, sizeof(w)) < 0)
				log_error("listener %s: %s", old[j].le.name, w);
		}
		free(nl);
		relist(d);
		return set_fail(err, bad, "listen", why);
	}
	for (size_t j = 0; j < d->nlisteners; j++)
		json_decref(old[j].entry);
	free(old);
	d->listeners = nl;
	d->nlisteners = n;
	relist(d);
	return 0;
}

int daemon_listeners_open(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	/* The tunnel's own UDP sockets: no UDP relay sends there. */
	for (size_t i = 0; i < d->nudp; i++) {
		struct sockaddr_storage wg;
		int len = sizeof(wg);
		if (uv_udp_getsockname(&d->udp[i], (struct sockaddr *)&wg, &len) == 0)
			protect_udp(d, port_of(&wg));
	}
	if (o->users_file) {
		char err[512];
		d->users = users_load(o->users_file, err, sizeof(err));
		if (!d->users) {
			log_error("--users: %s", err);
			return -1;
		}
	}
	if (o->auth_url) {
		char err[512];
		d->auth = authext_new(d->loop, d->tls, o->auth_url,
				      o->auth_ttl[0] ? o->auth_ttl[0] : AUTHEXT_DEFAULT_TTL_OK,
				      o->auth_ttl[1] ? o->auth_ttl[1] : AUTHEXT_DEFAULT_TTL_DENIED,
				      err, sizeof(err));
		if (!d->auth) {
			log_error("--auth-url %s: %s", o->auth_url, err);
			return -1;
		}
	}
	/* wrap --env-proxy's: its flows are the wrapped command's. */
	for (size_t i = 0; i < o->nproxies; i++) {
		const struct daemon_proxy *dp = &o->proxies[i];
		if (!dp->peer)
			continue;
		struct proxy_config pc = {
			.http = dp->http, .socks5 = dp->socks5, .addr = dp->addr, .peer = dp->peer
		};
		char why[512];
		struct proxy *p = open_proxy(d, &pc, why, sizeof(why));
		if (!p) {
			log_error("%s: %s", kind(dp), why);
			return -1;
		}
		d->internal[d->ninternal++] = p;
		char a[80];
		flowlog_format_addr((const struct sockaddr *)&dp->addr, a);
		log_proxy(d, dp->http, dp->socks5, a, NULL);
	}
	relist(d);
	struct config_error err;
	if (daemon_listeners_set(d, json_object_get(d->config, "listeners"), &err) < 0) {
		log_error("%s: %s", err.field, err.message);
		return -1;
	}
	return 0;
}

void daemon_listeners_close(struct daemon *d)
{
	for (size_t i = 0; i < d->ninternal; i++)
		proxy_free(d->internal[i]);
	d->ninternal = 0;
	for (size_t i = 0; i < d->nlisteners; i++) {
		close_one(d, &d->listeners[i]);
		json_decref(d->listeners[i].entry);
	}
	free(d->listeners);
	d->listeners = NULL;
	d->nlisteners = 0;
	relist(d);
	authext_free(d->auth); /* after the proxies: their waits are cancelled */
	d->auth = NULL;
}

json_t *daemon_listeners_from_options(const struct daemon_options *o)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < o->nproxies; i++) {
		const struct daemon_proxy *dp = &o->proxies[i];
		if (dp->peer)
			continue;
		char spec[80];
		flowlog_format_addr((const struct sockaddr *)&dp->addr, spec);
		json_array_append_new(a, listen_entry_from_spec(dp->http && dp->socks5
									? "http-proxy+socks5"
								: dp->http ? "http-proxy"
									   : "socks5",
								spec, &dp->addr));
	}
	for (size_t i = 0; a && i < o->ntargets; i++)
		json_array_append_new(a,
				      listen_entry_from_spec(o->targets[i].via, o->targets[i].spec,
							     &o->targets[i].addr));
	for (size_t i = 0; a && i < o->nudp_forwards; i++)
		json_array_append_new(a,
				      listen_entry_from_spec("udp-forward", o->udp_forwards[i].spec,
							     &o->udp_forwards[i].addr));
	return a;
}
