/* The running endpoint's counters. Each is one row of `counters` below:
 * its place in GET /api/stats and its words in the log lines, so a new
 * counter is added there and nowhere else. */
#include "daemonstats.h"

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "listen/proxy.h"
#include "listen/socksudp.h"
#include "listen/udpfwd.h"
#include "mitm/capage.h"
#include "mitm/dns.h"
#include "mitm/httpflow.h"
#include "mitm/relay.h"
#include "mitm/tls.h"
#include "mitm/udp.h"
#include "netstack/netstack.h"
#include "udpbatch.h"
#include "wg/device.h"

/* The API's objects, in its order. */
enum group {
	G_WIREGUARD,
	G_NETSTACK,
	G_TCP,
	G_UDP,
	G_DNS,
	G_TLS,
	G_RECORDS,
	G_CAPAGE,
	G_LISTEN,
	G__COUNT
};

/* Every counter at one moment, read once from the modules. A module that
 * does not run reads as zeros. */
struct snapshot {
	bool runs[G__COUNT]; /* the modules that run */
	struct wg_device_stats wg;
	struct netstack_stats ns;
	struct relay_stats tcp;
	struct udp_relay_stats udp;
	struct dns_stats dns;
	struct tls_stats tls;
	struct capage_stats ca;
	struct proxy_stats listen;   /* every proxy, reverse and forward listener's, summed */
	struct socks_udp_stats sudp; /* SOCKS5 UDP associations, summed */
	uint64_t fwd_datagrams, fwd_flows, fwd_bytes_up, fwd_bytes_down; /* UDP forwards */
	/* The endpoint's own, and sums. */
	uint64_t peers, handshakes, no_route, send_errors;
	uint64_t dns_queries, dns_malformed;
	uint64_t records, record_errors, out_of_scope, body_kept, body_cuts;
};

static const char *const group_key[G__COUNT] = {
	[G_WIREGUARD] = "wireguard",
	[G_NETSTACK] = "netstack",
	[G_TCP] = "tcp",
	[G_UDP] = "udp",
	[G_DNS] = "dns",
	[G_TLS] = "tls",
	[G_RECORDS] = "records", /* the CA page's are in the log only */
	[G_LISTEN] = "listeners",
};

/* The log lines, in order; the drops line follows the first. */
enum line {
	L_NONE,     /* the API only */
	L_DEVICE,   /* always */
	L_SERVICES, /* this and the next two while the relays run */
	L_CAPAGE,
	L_STREAMS,
	L_LISTEN, /* while listeners run */
	L__COUNT
};

struct counter {
	enum group group;
	const char *key;   /* in the group's object of the API; NULL: the log only */
	enum line line;    /* L_NONE: the API only */
	const char *words; /* before the value in its line */
	const char *unit;  /* after it, or NULL */
	size_t at;         /* of a uint64_t in struct snapshot */
};

/* The offset of a snapshot field, which must be a uint64_t. */
#define AT(field)                                                                                  \
	(offsetof(struct snapshot, field) +                                                        \
	 0 * sizeof(_Generic(((struct snapshot *)0)->field, uint64_t : 1)))

/* In the order of the log lines; the API's objects take their keys in
 * this order too. */
static const struct counter counters[] = {
	{ G_WIREGUARD, NULL, L_DEVICE, "peers ", NULL, AT(peers) },
	{ G_WIREGUARD, "handshakes", L_DEVICE, ", handshakes ", NULL, AT(handshakes) },
	{ G_WIREGUARD, "datagrams_in", L_DEVICE, ", datagrams in ", NULL, AT(wg.rx_datagrams) },
	{ G_WIREGUARD, "transport_in", L_DEVICE, ", transport in ", NULL, AT(wg.rx_packets) },
	{ G_WIREGUARD, "transport_in_bytes", L_DEVICE, " (", " B)", AT(wg.rx_bytes) },
	{ G_WIREGUARD, "transport_out", L_DEVICE, " out ", NULL, AT(wg.tx_packets) },
	{ G_WIREGUARD, "transport_out_bytes", L_DEVICE, " (", " B)", AT(wg.tx_bytes) },
	{ G_WIREGUARD, "cookie_replies", L_DEVICE, ", cookie replies ", NULL,
	  AT(wg.cookie_replies_sent) },
	{ G_WIREGUARD, "under_load_events", L_NONE, NULL, NULL, AT(wg.under_load_events) },
	{ G_NETSTACK, "packets_in", L_DEVICE, ", netstack in ", NULL, AT(ns.in_packets) },
	{ G_NETSTACK, "packets_out", L_DEVICE, " out ", NULL, AT(ns.out_packets) },
	{ G_WIREGUARD, "no_route", L_DEVICE, ", no route ", NULL, AT(no_route) },
	{ G_WIREGUARD, NULL, L_DEVICE, ", udp send errors ", NULL, AT(send_errors) },

	{ G_TCP, "open", L_SERVICES, "tcp open ", NULL, AT(tcp.open) },
	{ G_TCP, "accepted", L_SERVICES, ", accepted ", NULL, AT(tcp.accepted) },
	{ G_TCP, "refused", L_SERVICES, ", refused ", NULL, AT(tcp.refused) },
	{ G_TCP, "refused_peer_share", L_SERVICES, ", over the peer's share ", NULL,
	  AT(tcp.refused_peer_limit) },
	{ G_TCP, "upstream_failed", L_SERVICES, ", upstream failed ", NULL,
	  AT(tcp.connect_failed) },
	{ G_TCP, NULL, L_SERVICES, " (refused ", NULL, AT(tcp.connect_refused) },
	{ G_TCP, NULL, L_SERVICES, ", timeout ", ")", AT(tcp.connect_timeout) },
	{ G_TCP, "bytes_up", L_SERVICES, ", bytes up ", NULL, AT(tcp.bytes_up) },
	{ G_TCP, "bytes_down", L_SERVICES, " down ", NULL, AT(tcp.bytes_down) },
	{ G_UDP, "flows_open", L_SERVICES, " | udp flows ", NULL, AT(udp.flows_active) },
	{ G_UDP, "bytes_up", L_SERVICES, ", up ", " B", AT(udp.bytes_up) },
	{ G_UDP, "bytes_down", L_SERVICES, ", down ", " B", AT(udp.bytes_down) },
	{ G_UDP, "policy_drops", L_SERVICES, ", policy drops ", NULL, AT(udp.policy_drop) },
	{ G_UDP, "over_peer_share", L_SERVICES, ", over the peer's share ", NULL,
	  AT(udp.peer_limit) },
	{ G_DNS, "queries", L_SERVICES, " | dns queries ", NULL, AT(dns_queries) },
	{ G_DNS, "answered", L_SERVICES, ", answered ", NULL, AT(dns.answered) },
	{ G_DNS, "timeouts", L_SERVICES, ", timeouts ", NULL, AT(dns.timeouts) },
	{ G_NETSTACK, "tcp_accepted", L_NONE, NULL, NULL, AT(ns.tcp_accepted) },
	{ G_NETSTACK, "tcp_refused", L_SERVICES, " | netstack tcp refused ", NULL,
	  AT(ns.tcp_refused) },
	{ G_NETSTACK, "tcp_open", L_NONE, NULL, NULL, AT(ns.tcp_active) },
	{ G_NETSTACK, "udp_in", L_NONE, NULL, NULL, AT(ns.udp_in) },
	{ G_NETSTACK, "udp_out", L_NONE, NULL, NULL, AT(ns.udp_out) },
	{ G_NETSTACK, "lwip_mem_errors", L_SERVICES, ", lwip mem errors ", NULL,
	  AT(ns.lwip_mem_err) },
	{ G_NETSTACK, "lwip_asserts_contained", L_SERVICES, ", lwip asserts contained ", NULL,
	  AT(ns.drop_lwip_assert) },
	{ G_NETSTACK, "syns_over_half_open_limit", L_SERVICES, ", syns over the half-open limit ",
	  NULL, AT(ns.tcp_syn_limited) },

	{ G_CAPAGE, NULL, L_CAPAGE, "ca page requests ", NULL, AT(ca.requests) },
	{ G_CAPAGE, NULL, L_CAPAGE, " (page ", NULL, AT(ca.page) },
	{ G_CAPAGE, NULL, L_CAPAGE, ", pem ", NULL, AT(ca.pem) },
	{ G_CAPAGE, NULL, L_CAPAGE, ", der ", NULL, AT(ca.der) },
	{ G_CAPAGE, NULL, L_CAPAGE, ", profile ", NULL, AT(ca.mobileconfig) },
	{ G_CAPAGE, NULL, L_CAPAGE, ", not found ", NULL, AT(ca.not_found) },
	{ G_CAPAGE, NULL, L_CAPAGE, ", rejected ", NULL, AT(ca.rejected) },
	{ G_CAPAGE, NULL, L_CAPAGE, ", over the peer's share ", ")", AT(ca.conns_refused_peer) },
	{ G_DNS, "local_answers", L_CAPAGE, " | dns local answers ", NULL, AT(dns.local_answers) },
	{ G_DNS, "busy", L_NONE, NULL, NULL, AT(dns.busy) },
	{ G_DNS, "over_peer_share", L_CAPAGE, ", over the peer's share ", " queries",
	  AT(dns.busy_peer) },
	{ G_DNS, NULL, L_CAPAGE, ", ", " tcp", AT(dns.tcp_refused_peer) },
	{ G_DNS, "malformed", L_NONE, NULL, NULL, AT(dns_malformed) },
	{ G_UDP, "quic_refused", L_CAPAGE, " | quic refused ", NULL, AT(udp.quic_refused) },
	{ G_UDP, "table_full", L_NONE, NULL, NULL, AT(udp.table_full) },

	{ G_TCP, "tls", L_STREAMS, "streams tls ", NULL, AT(tcp.proto_tls) },
	{ G_TCP, "http", L_STREAMS, ", http ", NULL, AT(tcp.proto_http) },
	{ G_TCP, "h2c", L_STREAMS, ", h2c ", NULL, AT(tcp.proto_h2c) },
	{ G_TCP, "raw", L_STREAMS, ", raw ", NULL, AT(tcp.proto_raw) },
	{ G_TCP, "intercepted", L_STREAMS, " | intercepted ", NULL, AT(tcp.intercepted) },
	{ G_TCP, "passthrough_rule", L_STREAMS, ", passthrough rule ", NULL,
	  AT(tcp.passthrough_rule) },
	{ G_TCP, "passthrough_auto", L_STREAMS, " auto ", NULL, AT(tcp.passthrough_auto) },
	{ G_TCP, "tls_client_rejected", L_STREAMS, " | client rejected ", NULL,
	  AT(tcp.tls_client_rejected) },
	{ G_TCP, "tls_client_failed", L_STREAMS, ", client failed ", NULL,
	  AT(tcp.tls_client_failed) },
	{ G_TCP, "tls_upstream_failed", L_STREAMS, ", upstream failed ", NULL,
	  AT(tcp.tls_upstream_failed) },
	{ G_TCP, "http_exchanges", L_STREAMS, " | http exchanges ", NULL, AT(tcp.http_exchanges) },
	{ G_TCP, "websocket_batches", L_STREAMS, ", websocket batches ", NULL, AT(tcp.ws_batches) },
	{ G_TCP, "rules_connections", L_STREAMS, " | rules on ", " connections",
	  AT(tcp.rules_connections) },
	{ G_TCP, "redirects", L_STREAMS, ", redirects ", NULL, AT(tcp.redirects) },
	{ G_TCP, "throttled", L_STREAMS, ", throttled ", NULL, AT(tcp.throttled) },
	{ G_TCP, "parent_dials", L_STREAMS, " | through parent proxies ", NULL,
	  AT(tcp.parent_dials) },
	{ G_TCP, "parent_failed", L_STREAMS, ", failed ", NULL, AT(tcp.parent_failed) },
	{ G_TLS, "leaves_minted", L_STREAMS, " | leaves minted ", NULL, AT(tls.leaves_minted) },
	{ G_TLS, "leaf_cache_hits", L_STREAMS, ", cache hits ", NULL, AT(tls.leaf_cache_hits) },
	{ G_TLS, "upstream_resumed", L_STREAMS, ", upstream resumed ", NULL,
	  AT(tls.upstream_resumed) },
	{ G_TLS, "upstream_handshakes", L_STREAMS, "/", NULL, AT(tls.upstream_handshakes) },
	{ G_RECORDS, "records", L_NONE, NULL, NULL, AT(records) },
	{ G_RECORDS, "record_errors", L_NONE, NULL, NULL, AT(record_errors) },
	{ G_RECORDS, "out_of_scope", L_NONE, NULL, NULL, AT(out_of_scope) },
	{ G_RECORDS, "body_bytes_held", L_STREAMS, " | bodies kept ", " B", AT(body_kept) },
	{ G_RECORDS, "body_budget_cuts", L_STREAMS, ", budget cuts ", NULL, AT(body_cuts) },

	{ G_LISTEN, "accepted", L_LISTEN, "listeners accepted ", NULL, AT(listen.accepted) },
	{ G_LISTEN, "handed", L_LISTEN, ", relayed ", NULL, AT(listen.handed) },
	{ G_LISTEN, "open", L_LISTEN, ", open ", NULL, AT(listen.open) },
	{ G_LISTEN, "auth_failed", L_LISTEN, " | credentials refused ", NULL,
	  AT(listen.auth_failed) },
	{ G_LISTEN, "bad_requests", L_LISTEN, ", bad requests ", NULL, AT(listen.bad_request) },
	{ G_LISTEN, "refused_limit", L_LISTEN, ", over the limit ", NULL,
	  AT(listen.refused_limit) },
	{ G_LISTEN, "refused_policy", L_LISTEN, ", refused by the policy ", NULL,
	  AT(listen.refused_policy) },
	{ G_LISTEN, "resolve_failed", L_LISTEN, ", names not resolved ", NULL,
	  AT(listen.resolve_failed) },
	{ G_LISTEN, "udp_associations", L_LISTEN, " | socks5 udp associations ", NULL,
	  AT(sudp.associations) },
	{ G_LISTEN, "udp_associations_open", L_LISTEN, " (open ", ")", AT(sudp.active) },
	{ G_LISTEN, "udp_datagrams", L_LISTEN, ", datagrams ", NULL, AT(sudp.datagrams) },
	{ G_LISTEN, "udp_dropped_foreign", L_LISTEN, ", dropped: foreign ", NULL,
	  AT(sudp.foreign) },
	{ G_LISTEN, "udp_dropped_fragments", L_LISTEN, " fragments ", NULL, AT(sudp.fragments) },
	{ G_LISTEN, "udp_dropped_malformed", L_LISTEN, " malformed ", NULL, AT(sudp.malformed) },
	{ G_LISTEN, "udp_forward_datagrams", L_LISTEN, " | udp forwards datagrams ", NULL,
	  AT(fwd_datagrams) },
	{ G_LISTEN, "udp_forward_flows", L_LISTEN, ", flows ", NULL, AT(fwd_flows) },
	{ G_LISTEN, "udp_forward_bytes_up", L_LISTEN, ", up ", " B", AT(fwd_bytes_up) },
	{ G_LISTEN, "udp_forward_bytes_down", L_LISTEN, ", down ", " B", AT(fwd_bytes_down) },
};

static void snapshot_take(const struct daemon *d, struct snapshot *c)
{
	*c = (struct snapshot){ 0 };
	c->runs[G_WIREGUARD] = c->runs[G_NETSTACK] = c->runs[G_RECORDS] = true;
	c->wg = *wg_device_stats(d->dev);
	if (d->ns)
		netstack_get_stats(d->ns, &c->ns);
	if ((c->runs[G_TCP] = d->relay != NULL))
		relay_get_stats(d->relay, &c->tcp);
	if ((c->runs[G_UDP] = d->udp_relay != NULL))
		udp_relay_get_stats(d->udp_relay, &c->udp);
	if ((c->runs[G_DNS] = d->dns != NULL))
		dns_proxy_get_stats(d->dns, &c->dns);
	if ((c->runs[G_TLS] = d->tls != NULL))
		tls_ctx_stats(d->tls, &c->tls);
	if ((c->runs[G_CAPAGE] = d->capage != NULL))
		capage_get_stats(d->capage, &c->ca);
	c->runs[G_LISTEN] = d->nproxies > 0 || d->nudp_forwards > 0 ||
			    d->retired_proxy.accepted > 0 || d->retired_udp_forward.datagrams > 0;
	for (size_t i = 0; i < d->nudp_forwards; i++) {
		struct udp_forward_stats fs;
		udp_forward_get_stats(d->udp_forwards[i], &fs);
		c->fwd_datagrams += fs.datagrams;
		c->fwd_flows += fs.relay.flows_opened;
		c->fwd_bytes_up += fs.relay.bytes_up;
		c->fwd_bytes_down += fs.relay.bytes_down;
	}
	for (size_t i = 0; i < d->nproxies; i++) {
		struct socks_udp_stats us;
		if (proxy_get_udp_stats(d->proxies[i], &us)) {
			c->sudp.associations += us.associations;
			c->sudp.active += us.active;
			c->sudp.datagrams += us.datagrams;
			c->sudp.foreign += us.foreign;
			c->sudp.fragments += us.fragments;
			c->sudp.malformed += us.malformed;
		}
		struct proxy_stats ps;
		proxy_get_stats(d->proxies[i], &ps);
		c->listen.accepted += ps.accepted;
		c->listen.handed += ps.handed;
		c->listen.open += ps.open;
		c->listen.auth_failed += ps.auth_failed;
		c->listen.bad_request += ps.bad_request;
		c->listen.refused_limit += ps.refused_limit;
		c->listen.refused_policy += ps.refused_policy;
		c->listen.resolve_failed += ps.resolve_failed;
	}
	/* Listeners closed since: their counts go on. */
	const struct proxy_stats *rp = &d->retired_proxy;
	c->listen.accepted += rp->accepted;
	c->listen.handed += rp->handed;
	c->listen.auth_failed += rp->auth_failed;
	c->listen.bad_request += rp->bad_request;
	c->listen.refused_limit += rp->refused_limit;
	c->listen.refused_policy += rp->refused_policy;
	c->listen.resolve_failed += rp->resolve_failed;
	const struct socks_udp_stats *ru = &d->retired_socks_udp;
	c->sudp.associations += ru->associations;
	c->sudp.datagrams += ru->datagrams;
	c->sudp.foreign += ru->foreign;
	c->sudp.fragments += ru->fragments;
	c->sudp.malformed += ru->malformed;
	const struct udp_forward_stats *rf = &d->retired_udp_forward;
	c->fwd_datagrams += rf->datagrams;
	c->fwd_flows += rf->relay.flows_opened;
	c->fwd_bytes_up += rf->relay.bytes_up;
	c->fwd_bytes_down += rf->relay.bytes_down;

	c->peers = d->npeers;
	c->handshakes = c->wg.handshakes_initiator + c->wg.handshakes_responder;
	c->no_route = d->no_route_drops;
	for (size_t i = 0; i < d->nudp; i++)
		c->send_errors += d->out[i]->errors;
	c->send_errors += d->no_socket;
	c->dns_queries = c->dns.queries_udp + c->dns.queries_tcp;
	c->dns_malformed = c->dns.malformed + c->dns.formerr;
	c->records = flowlog_lines(d->flows);
	c->record_errors = flowlog_errors(d->flows);
	c->out_of_scope = flowlog_skipped(d->flows);
	size_t kept;
	http_body_usage(&kept, &c->body_cuts);
	c->body_kept = kept;
}

static uint64_t value(const struct snapshot *c, const struct counter *k)
{
	return *(const uint64_t *)((const char *)c + k->at);
}

#define NCOUNTERS (sizeof(counters) / sizeof(counters[0]))

static void snapshot_log(const struct snapshot *c)
{
	bool relays = c->runs[G_TCP] && c->runs[G_UDP] && c->runs[G_DNS];
	struct strbuf b;
	strbuf_init(&b, 0);
	for (enum line l = L_DEVICE; l < L__COUNT && (l == L_DEVICE || relays); l++) {
		if (l == L_LISTEN && !c->runs[G_LISTEN])
			continue;
		strbuf_reset(&b);
		for (size_t i = 0; i < NCOUNTERS; i++)
			if (counters[i].line == l)
				strbuf_printf(&b, "%s%llu%s", counters[i].words,
					      (unsigned long long)value(c, &counters[i]),
					      counters[i].unit ? counters[i].unit : "");
		log_info("stats: %s", b.err ? "(out of memory)" : b.p);
		if (l != L_DEVICE)
			continue;
		strbuf_reset(&b);
		for (int r = 0; r < WG_DROP__COUNT; r++)
			if (c->wg.drop[r])
				strbuf_printf(&b, "%s%s %llu", b.len ? ", " : "",
					      wg_drop_reason_str((enum wg_drop_reason)r),
					      (unsigned long long)c->wg.drop[r]);
		log_info("stats: drops: %s", b.err ? "(out of memory)" : b.len ? b.p : "none");
	}
	strbuf_free(&b);
}

static json_t *snapshot_json(const struct snapshot *c)
{
	json_t *o = json_object();
	json_t *group[G__COUNT] = { 0 };
	for (int g = 0; g < G__COUNT; g++) {
		if (group_key[g] && c->runs[g]) {
			group[g] = json_object();
			json_object_set_new(o, group_key[g], group[g]);
		}
	}
	for (size_t i = 0; i < NCOUNTERS; i++)
		if (counters[i].key && group[counters[i].group])
			json_object_set_new(group[counters[i].group], counters[i].key,
					    json_integer((json_int_t)value(c, &counters[i])));
	json_t *drops = json_object();
	for (int r = 0; r < WG_DROP__COUNT; r++)
		if (c->wg.drop[r])
			json_object_set_new(drops, wg_drop_reason_str((enum wg_drop_reason)r),
					    json_integer((json_int_t)c->wg.drop[r]));
	json_object_set_new(group[G_WIREGUARD], "drops", drops);
	return o;
}

void daemon_stats_log(const struct daemon *d)
{
	struct snapshot c;
	snapshot_take(d, &c);
	snapshot_log(&c);
}

json_t *daemon_stats_json(const struct daemon *d)
{
	struct snapshot c;
	snapshot_take(d, &c);
	return snapshot_json(&c);
}
