/* The daemon's proxy listeners (daemonlisten.h). */
#include "daemonlisten.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "control/api.h"
#include "daemon_internal.h"
#include "listen/proxy.h"
#include "listen/target.h"
#include "listen/users.h"
#include "mitm/relay.h"

static uint16_t port_of(const struct sockaddr_storage *a)
{
	return ntohs(a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
					     : ((const struct sockaddr_in6 *)a)->sin6_port);
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
	if (a->ss_family != b->ss_family || port_of(a) != port_of(b))
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

/* Two binds that cannot both succeed: one port, and one address or a
 * wildcard of the same family (Linux lets [::] take IPv4 too). */
static bool clash(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (port_of(a) != port_of(b))
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
};

static size_t listeners_of(const struct daemon_options *o,
			   struct bound out[DAEMON_MAX_PROXY + DAEMON_MAX_TARGETS])
{
	size_t n = 0;
	for (size_t i = 0; i < o->nproxies; i++)
		out[n++] = (struct bound){ &o->proxies[i].addr, kind(&o->proxies[i]), true };
	for (size_t i = 0; i < o->ntargets; i++)
		out[n++] = (struct bound){ &o->targets[i].addr,
					   strcmp(o->targets[i].via, "reverse") == 0 ? "--reverse"
										     : "--forward",
					   false };
	return n;
}

int daemon_listeners_check(const struct daemon_options *o, char *err, size_t errlen)
{
	unsigned api = API_DEFAULT_PORT;
	char host[128];
	bool api_on = !(o->api && strcmp(o->api, "off") == 0);
	if (api_on && o->api)
		(void)daemon_parse_api(o->api, host, sizeof(host), &api);
	struct bound l[DAEMON_MAX_PROXY + DAEMON_MAX_TARGETS];
	size_t n = listeners_of(o, l);
	for (size_t i = 0; i < n; i++) {
		char a[80];
		format(l[i].addr, a, sizeof(a));
		if (api_on && port_of(l[i].addr) == api) {
			snprintf(err, errlen, "%s %s: that is the control API's port", l[i].opt, a);
			return -1;
		}
		for (size_t j = 0; j < i; j++)
			if (clash(l[i].addr, l[j].addr)) {
				char b[80];
				format(l[j].addr, b, sizeof(b));
				snprintf(err, errlen, "%s %s: the port is already %s's (%s)",
					 l[i].opt, a, l[j].opt, b);
				return -1;
			}
		if (is_loopback(l[i].addr) || o->allow_open_proxy ||
		    (l[i].needs_users && o->users_file))
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

int daemon_listeners_open(struct daemon *d)
{
	const struct daemon_options *o = d->opts;
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
	for (size_t i = 0; i < o->nproxies; i++) {
		const struct daemon_proxy *dp = &o->proxies[i];
		struct proxy_config pc = {
			.http = dp->http,
			.socks5 = dp->socks5,
			.addr = dp->addr,
			.relay = d->relay,
			.users = d->users,
			.peer = dp->peer,
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
			 a, d->users ? " (credentials from --users)" : "");
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
}
