/* The daemon's proxy listeners (daemonlisten.h). */
#include "daemonlisten.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "control/api.h"
#include "daemon_internal.h"
#include "listen/authext.h"
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

static void format(const struct sockaddr_storage *a, char *out, size_t n)
{
	char h[INET6_ADDRSTRLEN] = "?";
	if (a->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, h, sizeof(h));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, h, sizeof(h));
	snprintf(out, n, a->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", h, port_of(a));
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

int daemon_parents_apply(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	if (o->nparents == 0)
		return 0;
	struct relay_parent ps[RELAY_MAX_PARENTS];
	for (size_t i = 0; i < o->nparents; i++) {
		const struct listen_parent *lp = &o->parents[i];
		ps[i] = lp->p;
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
		struct addrinfo *res = NULL;
		int rc = getaddrinfo(lp->host, NULL, &hints, &res);
		if (rc != 0 || !res) {
			log_error("--upstream-proxy %s: cannot resolve %s: %s", lp->p.label,
				  lp->host, gai_strerror(rc));
			if (res)
				freeaddrinfo(res);
			return -1;
		}
		memset(&ps[i].addr, 0, sizeof(ps[i].addr));
		memcpy(&ps[i].addr, res->ai_addr, res->ai_addrlen);
		freeaddrinfo(res);
		if (ps[i].addr.ss_family == AF_INET)
			((struct sockaddr_in *)&ps[i].addr)->sin_port = htons(lp->port);
		else
			((struct sockaddr_in6 *)&ps[i].addr)->sin6_port = htons(lp->port);
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

/* Every listener's address and option, for the checks. */
struct bound {
	const struct sockaddr_storage *addr;
	const char *opt;
	bool needs_users; /* a proxy: --users makes it safe to open */
	bool udp;         /* binds UDP: collides only with UDP */
	bool wireguard;   /* the tunnel's --listen: only collisions apply */
};

#define MAX_BOUND                                                                                  \
	(DAEMON_MAX_PROXY + DAEMON_MAX_TARGETS + DAEMON_MAX_UDP_FORWARDS + DAEMON_MAX_LISTEN)

static size_t listeners_of(const struct daemon_options *o, struct bound out[MAX_BOUND])
{
	size_t n = 0;
	for (size_t i = 0; i < o->nlisten; i++)
		out[n++] = (struct bound){
			.addr = &o->listen[i], .opt = "--listen", .udp = true, .wireguard = true
		};
	for (size_t i = 0; i < o->nproxies; i++)
		out[n++] = (struct bound){ .addr = &o->proxies[i].addr,
					   .opt = kind(&o->proxies[i]),
					   .needs_users = true };
	for (size_t i = 0; i < o->ntargets; i++)
		out[n++] = (struct bound){ .addr = &o->targets[i].addr,
					   .opt = strcmp(o->targets[i].via, "reverse") == 0
							  ? "--reverse"
							  : "--forward" };
	for (size_t i = 0; i < o->nudp_forwards; i++)
		out[n++] = (struct bound){ .addr = &o->udp_forwards[i].addr,
					   .opt = "--udp-forward",
					   .udp = true };
	return n;
}

int daemon_listeners_check(const struct daemon_options *o, char *err, size_t errlen)
{
	unsigned api = API_DEFAULT_PORT;
	char host[128];
	bool api_on = !(o->api && strcmp(o->api, "off") == 0);
	if (api_on && o->api)
		(void)daemon_parse_api(o->api, host, sizeof(host), &api);
	struct bound l[MAX_BOUND];
	size_t n = listeners_of(o, l);
	for (size_t i = 0; i < n; i++) {
		char a[80];
		format(l[i].addr, a, sizeof(a));
		if (api_on && !l[i].udp && port_of(l[i].addr) == api) {
			snprintf(err, errlen, "%s %s: that is the control API's port", l[i].opt, a);
			return -1;
		}
		for (size_t j = 0; j < i; j++)
			if (l[i].udp == l[j].udp && clash(l[i].addr, l[j].addr)) {
				char b[80];
				format(l[j].addr, b, sizeof(b));
				snprintf(err, errlen, "%s %s: the port is already %s's (%s)",
					 l[i].opt, a, l[j].opt, b);
				return -1;
			}
		if (l[i].wireguard || is_loopback(l[i].addr) || o->allow_open_proxy ||
		    (l[i].needs_users && (o->users_file || o->auth_url)))
			continue;
		if (l[i].needs_users)
			snprintf(err, errlen,
				 "%s %s: a proxy on a non-loopback address without --users lets "
				 "anyone who reaches it use it; give --users FILE, or "
				 "--allow-open-proxy if that is what you want",
				 l[i].opt, a);
		else
			snprintf(err, errlen,
				 "%s %s: a listener on a non-loopback address lets anyone who "
				 "reaches it through to its target; give --allow-open-proxy if "
				 "that is what you want",
				 l[i].opt, a);
		return -1;
	}
	return 0;
}

static void protect_udp(struct daemon *d, uint16_t port)
{
	struct udp_relay_ports *pp = &d->udp_protect;
	for (size_t i = 0; i < pp->n; i++)
		if (pp->port[i] == port)
			return;
	if (pp->n < UDP_RELAY_MAX_PROTECTED)
		pp->port[pp->n++] = port;
}

/* The tunnel's own UDP sockets, bound by now (the state's port when no
 * --listen): a UDP forward there cannot bind, and no relay may send to
 * them. */
static int udp_forwards_check_wireguard(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	for (size_t i = 0; i < d->nudp; i++) {
		struct sockaddr_storage wg;
		int len = sizeof(wg);
		if (uv_udp_getsockname(&d->udp[i], (struct sockaddr *)&wg, &len) != 0)
			continue;
		protect_udp(d, port_of(&wg));
		for (size_t j = 0; j < o->nudp_forwards; j++)
			if (clash(&o->udp_forwards[j].addr, &wg)) {
				char a[80], b[80];
				format(&o->udp_forwards[j].addr, a, sizeof(a));
				format(&wg, b, sizeof(b));
				log_error("--udp-forward %s: the port is already WireGuard's (%s)",
					  a, b);
				return -1;
			}
	}
	return 0;
}

/* HOST resolved now, once, with the port. */
static int resolve_target(const struct listen_target *t, struct sockaddr_storage *out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(t->host, NULL, &hints, &res);
	if (rc != 0 || !res || res->ai_addrlen > sizeof(*out)) {
		log_error("--udp-forward: cannot resolve %s: %s", t->host,
			  rc ? gai_strerror(rc) : "no address");
		if (res)
			freeaddrinfo(res);
		return -1;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (out->ss_family == AF_INET)
		((struct sockaddr_in *)out)->sin_port = htons(t->port);
	else
		((struct sockaddr_in6 *)out)->sin6_port = htons(t->port);
	return 0;
}

static int udp_forwards_open(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	for (size_t i = 0; i < o->nudp_forwards; i++)
		protect_udp(d, port_of(&o->udp_forwards[i].addr));
	for (size_t i = 0; i < o->nudp_forwards; i++) {
		const struct listen_target *t = &o->udp_forwards[i];
		struct udp_forward_config fc = {
			.addr = t->addr,
			.policy = &d->policy,
			.log = d->flows,
			.protect = &d->udp_protect,
		};
		if (resolve_target(t, &fc.target) < 0)
			return -1;
		char a[80], b[80];
		format(&t->addr, a, sizeof(a));
		format(&fc.target, b, sizeof(b));
		int err;
		struct udp_forward *f = udp_forward_new(d->loop, &fc, &err);
		if (!f) {
			log_error("--udp-forward %s: %s", a, uv_strerror(err));
			return -1;
		}
		d->udp_forwards[d->nudp_forwards++] = f;
		log_info("UDP forward on %s to %s (%s)", a, b, t->host);
	}
	return 0;
}

int daemon_listeners_open(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
	if (udp_forwards_check_wireguard(d) < 0 || udp_forwards_open(d) < 0)
		return -1;
	if (o->nproxies == 0 && o->ntargets == 0)
		return 0;
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
	/* SOCKS5 UDP ASSOCIATE: the tunnel's policy and QUIC setting. */
	struct socks_udp_config suc = {
		.policy = &d->policy,
		.log = d->flows,
		.quic = o->quic_passthrough ? UDP_RELAY_QUIC_PASSTHROUGH : UDP_RELAY_QUIC_REFUSE,
		.protect = &d->udp_protect,
	};
	for (size_t i = 0; i < o->nproxies; i++) {
		const struct daemon_proxy *dp = &o->proxies[i];
		struct proxy_config pc = {
			.http = dp->http,
			.socks5 = dp->socks5,
			.addr = dp->addr,
			.relay = d->relay,
			.users = d->users,
			.auth = d->auth,
			.peer = dp->peer,
			.udp = &suc,
		};
		char a[80];
		format(&dp->addr, a, sizeof(a));
		int err;
		struct proxy *p = proxy_new(d->loop, &pc, &err);
		if (!p) {
			log_error("%s %s: %s", kind(dp), a, uv_strerror(err));
			return -1;
		}
		d->proxies[d->nproxies++] = p;
		/* A flow relayed back into a listener would loop. */
		(void)relay_protect_port(d->relay, proxy_port(p));
		log_info("%s on %s%s",
			 dp->http && dp->socks5 ? "HTTP proxy and SOCKS5"
			 : dp->http             ? "HTTP proxy"
						: "SOCKS5",
			 a,
			 d->users && d->auth ? " (credentials from --users and --auth-url)"
			 : d->users          ? " (credentials from --users)"
			 : d->auth           ? " (credentials from --auth-url)"
					     : "");
	}
	for (size_t i = 0; i < o->ntargets; i++) {
		const struct listen_target *t = &o->targets[i];
		struct proxy_config pc = { .addr = t->addr, .relay = d->relay, .target = t };
		char a[80];
		format(&t->addr, a, sizeof(a));
		int err;
		struct proxy *p = proxy_new(d->loop, &pc, &err);
		if (!p) {
			log_error("--%s %s: %s", t->via, a, uv_strerror(err));
			return -1;
		}
		d->proxies[d->nproxies++] = p;
		(void)relay_protect_port(d->relay, proxy_port(p));
		bool v6 = strchr(t->host, ':') != NULL;
		log_info("%s on %s to %s%s%s:%u (client %s, upstream %s)", t->via, a, v6 ? "[" : "",
			 t->host, v6 ? "]" : "", t->port,
			 t->shape.client == RELAY_CLIENT_SNIFF ? "TLS or plaintext"
			 : t->shape.client == RELAY_CLIENT_TLS ? "TLS"
							       : "plaintext",
			 t->shape.upstream_tls ? "TLS" : "plaintext");
	}
	return 0;
}

void daemon_listeners_close(struct daemon *d)
{
	for (size_t i = 0; i < d->nproxies; i++)
		proxy_free(d->proxies[i]);
	d->nproxies = 0;
	for (size_t i = 0; i < d->nudp_forwards; i++)
		udp_forward_free(d->udp_forwards[i]);
	d->nudp_forwards = 0;
	authext_free(d->auth); /* after the proxies: their waits are cancelled */
	d->auth = NULL;
}
