/* What the running endpoint reports to the control API (struct api_ops):
 * status, counters, live peers, peer changes, the CA, the configuration. */
#include "daemonapi.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "common/log.h"
#include "mitm/ca.h"
#include "mitm/capage.h"
#include "mitm/dns.h"
#include "mitm/httpflow.h"
#include "mitm/relay.h"
#include "mitm/tls.h"
#include "mitm/udp.h"
#include "netstack/netstack.h"
#include "peerops.h"
#include "runconfig.h"
#include "wg/device.h"
#include "wg/peer.h"

#define U(o, name, v) json_object_set_new(o, name, json_integer((json_int_t)(v)))

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
		out[0] = '\0';
	}
}

static json_t *wall_time(const struct timespec *ts)
{
	if (ts->tv_sec == 0 && ts->tv_nsec == 0)
		return json_null();
	char t[FLOWLOG_TIME_LEN];
	flowlog_format_time(ts, t);
	return json_string(t);
}

static json_t *api_status(void *ctx)
{
	struct daemon *d = ctx;
	char pub[45], a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN];
	state_key_to_base64(d->st.public_key, pub);
	struct in_addr s4;
	struct in6_addr s6;
	addrpool_server(&d->st.pool, &s4, &s6);
	inet_ntop(AF_INET, &s4, a4, sizeof(a4));
	inet_ntop(AF_INET6, &s6, a6, sizeof(a6));
	json_t *listen = json_array();
	for (size_t i = 0; i < d->nudp; i++) {
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		if (uv_udp_getsockname(&d->udp[i], (struct sockaddr *)&ss, &len) == 0) {
			char a[FLOWLOG_ADDR_LEN];
			flowlog_format_addr((struct sockaddr *)&ss, a);
			json_array_append_new(listen, json_string(a));
		}
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct netstack_stats ns = { 0 };
	if (d->ns)
		netstack_get_stats(d->ns, &ns);
	return json_pack("{s:s,s:I,s:o,s:s,s:o,s:{s:s,s:s},s:I,s:I,s:I,s:b,s:s}", "version",
			 WGMITM_VERSION, "pid", (json_int_t)getpid(), "started",
			 wall_time(&d->started), "public_key", pub, "listen", listen, "tunnel",
			 "address", a4, "address6", a6, "peers", (json_int_t)d->npeers, "records",
			 (json_int_t)flowlog_lines(d->flows), "tcp_open", (json_int_t)ns.tcp_active,
			 "intercept", d->tls != NULL, "home", d->st.home);
}

static json_t *api_stats(void *ctx)
{
	struct daemon *d = ctx;
	json_t *o = json_object();
	const struct wg_device_stats *s = wg_device_stats(d->dev);
	json_t *wg = json_object();
	U(wg, "datagrams_in", s->rx_datagrams);
	U(wg, "transport_in", s->rx_packets);
	U(wg, "transport_in_bytes", s->rx_bytes);
	U(wg, "transport_out", s->tx_packets);
	U(wg, "transport_out_bytes", s->tx_bytes);
	U(wg, "handshakes", s->handshakes_initiator + s->handshakes_responder);
	U(wg, "cookie_replies", s->cookie_replies_sent);
	U(wg, "under_load_events", s->under_load_events);
	U(wg, "no_route", d->no_route_drops);
	json_t *drops = json_object();
	for (int r = 0; r < WG_DROP__COUNT; r++)
		if (s->drop[r])
			U(drops, wg_drop_reason_str((enum wg_drop_reason)r), s->drop[r]);
	json_object_set_new(wg, "drops", drops);
	json_object_set_new(o, "wireguard", wg);

	struct netstack_stats ns = { 0 };
	if (d->ns)
		netstack_get_stats(d->ns, &ns);
	json_t *n = json_object();
	U(n, "packets_in", ns.in_packets);
	U(n, "packets_out", ns.out_packets);
	U(n, "tcp_accepted", ns.tcp_accepted);
	U(n, "tcp_refused", ns.tcp_refused);
	U(n, "tcp_open", ns.tcp_active);
	U(n, "udp_in", ns.udp_in);
	U(n, "udp_out", ns.udp_out);
	U(n, "lwip_mem_errors", ns.lwip_mem_err);
	U(n, "lwip_asserts_contained", ns.drop_lwip_assert);
	U(n, "syns_over_half_open_limit", ns.tcp_syn_limited);
	json_object_set_new(o, "netstack", n);

	if (d->relay) {
		struct relay_stats rs;
		relay_get_stats(d->relay, &rs);
		json_t *t = json_object();
		U(t, "open", rs.open);
		U(t, "accepted", rs.accepted);
		U(t, "refused", rs.refused);
		U(t, "refused_peer_share", rs.refused_peer_limit);
		U(t, "upstream_failed", rs.connect_failed);
		U(t, "bytes_up", rs.bytes_up);
		U(t, "bytes_down", rs.bytes_down);
		U(t, "tls", rs.proto_tls);
		U(t, "http", rs.proto_http);
		U(t, "h2c", rs.proto_h2c);
		U(t, "raw", rs.proto_raw);
		U(t, "intercepted", rs.intercepted);
		U(t, "passthrough_rule", rs.passthrough_rule);
		U(t, "passthrough_auto", rs.passthrough_auto);
		U(t, "tls_client_rejected", rs.tls_client_rejected);
		U(t, "tls_client_failed", rs.tls_client_failed);
		U(t, "tls_upstream_failed", rs.tls_upstream_failed);
		U(t, "http_exchanges", rs.http_exchanges);
		U(t, "websocket_batches", rs.ws_batches);
		json_object_set_new(o, "tcp", t);
	}
	if (d->udp_relay) {
		struct udp_relay_stats us;
		udp_relay_get_stats(d->udp_relay, &us);
		json_t *u = json_object();
		U(u, "flows_open", us.flows_active);
		U(u, "bytes_up", us.bytes_up);
		U(u, "bytes_down", us.bytes_down);
		U(u, "policy_drops", us.policy_drop);
		U(u, "quic_refused", us.quic_refused);
		U(u, "table_full", us.table_full);
		U(u, "over_peer_share", us.peer_limit);
		json_object_set_new(o, "udp", u);
	}
	if (d->dns) {
		struct dns_stats ds;
		dns_proxy_get_stats(d->dns, &ds);
		json_t *q = json_object();
		U(q, "queries", ds.queries_udp + ds.queries_tcp);
		U(q, "answered", ds.answered);
		U(q, "local_answers", ds.local_answers);
		U(q, "timeouts", ds.timeouts);
		U(q, "busy", ds.busy);
		U(q, "over_peer_share", ds.busy_peer);
		U(q, "malformed", ds.malformed + ds.formerr);
		json_object_set_new(o, "dns", q);
	}
	if (d->tls) {
		struct tls_stats ts;
		tls_ctx_stats(d->tls, &ts);
		json_t *t = json_object();
		U(t, "leaves_minted", ts.leaves_minted);
		U(t, "leaf_cache_hits", ts.leaf_cache_hits);
		U(t, "upstream_handshakes", ts.upstream_handshakes);
		U(t, "upstream_resumed", ts.upstream_resumed);
		json_object_set_new(o, "tls", t);
	}
	size_t kept;
	uint64_t cuts;
	http_body_usage(&kept, &cuts);
	json_t *r = json_object();
	U(r, "records", flowlog_lines(d->flows));
	U(r, "record_errors", flowlog_errors(d->flows));
	U(r, "out_of_scope", flowlog_skipped(d->flows));
	U(r, "body_bytes_held", kept);
	U(r, "body_budget_cuts", cuts);
	json_object_set_new(o, "records", r);
	return o;
}

/* The state's peers, with what the device knows of each. */
static json_t *api_peers(void *ctx)
{
	struct daemon *d = ctx;
	json_t *a = json_array();
	for (size_t i = 0; i < d->st.npeers; i++) {
		const struct state_peer *p = &d->st.peers[i];
		char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN], pub[45];
		inet_ntop(AF_INET, &p->addr4, a4, sizeof(a4));
		inet_ntop(AF_INET6, &p->addr6, a6, sizeof(a6));
		state_key_to_base64(p->public_key, pub);
		json_t *o =
			json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "name", p->name, "address",
				  a4, "address6", a6, "public_key", pub, "allowed_ips",
				  p->allowed_ips, "apps", p->include_apps, "exclude_apps",
				  p->exclude_apps, "created", (json_int_t)p->created);
		const struct daemon_peer *dp = NULL;
		for (size_t k = 0; k < d->npeers; k++)
			if (strcmp(d->peers[k]->name, p->name) == 0)
				dp = d->peers[k];
		if (dp && dp->wp) {
			struct wg_peer_info info;
			wg_peer_info(dp->wp, &info);
			char ep[FLOWLOG_ADDR_LEN];
			format_endpoint(&info.endpoint, ep, sizeof(ep));
			json_object_set_new(o, "endpoint", ep[0] ? json_string(ep) : json_null());
			json_object_set_new(o, "last_handshake", wall_time(&info.last_handshake));
			json_object_set_new(o, "session", json_boolean(info.has_session));
			U(o, "rx_bytes", info.rx_bytes);
			U(o, "tx_bytes", info.tx_bytes);
		} else {
			json_object_set_new(o, "endpoint", json_null());
			json_object_set_new(o, "last_handshake", json_null());
			json_object_set_new(o, "session", json_false());
		}
		json_array_append_new(a, o);
	}
	return a;
}

static const char *opt_str(const json_t *req, const char *key, char *buf, size_t cap)
{
	const json_t *v = json_object_get(req, key);
	if (json_is_string(v))
		return json_string_value(v);
	if (!json_is_array(v))
		return NULL;
	/* A list of apps as an array: the comma-separated form. */
	size_t n = 0, i;
	json_t *e;
	buf[0] = '\0';
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e))
			continue;
		int w = snprintf(buf + n, cap - n, "%s%s", n ? "," : "", json_string_value(e));
		if (w < 0 || (size_t)w >= cap - n)
			break;
		n += (size_t)w;
	}
	return buf;
}

static int api_peer_add(void *ctx, const json_t *req, json_t **out, char *err, size_t errlen)
{
	struct daemon *d = ctx;
	*out = NULL;
	const char *name = json_string_value(json_object_get(req, "name"));
	if (!name) {
		snprintf(err, errlen, "name: a peer needs a name (letters, digits, - and _)");
		return -1;
	}
	static const char *const known[] = { "name",     "allowed_ips", "apps",     "exclude_apps",
					     "endpoint", "mtu",         "keepalive" };
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)req, k, v)
	{
		bool ok = false;
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			ok |= strcmp(k, known[i]) == 0;
		if (!ok) {
			snprintf(err, errlen, "%s: unknown field (a peer has %s)", k,
				 "name, allowed_ips, apps, exclude_apps, endpoint, mtu, keepalive");
			return -1;
		}
	}
	char apps[STATE_LIST_MAX + 1], xapps[STATE_LIST_MAX + 1];
	const json_t *ka = json_object_get(req, "keepalive");
	struct peerops_spec spec = {
		.name = name,
		.endpoint = json_string_value(json_object_get(req, "endpoint")),
		.allowed_ips = json_string_value(json_object_get(req, "allowed_ips")),
		.apps = opt_str(req, "apps", apps, sizeof(apps)),
		.exclude_apps = opt_str(req, "exclude_apps", xapps, sizeof(xapps)),
		.mtu = (unsigned)json_integer_value(json_object_get(req, "mtu")),
		.keepalive = json_is_integer(ka) ? (int)json_integer_value(ka) : -1,
	};
	char *text;
	if (peerops_add(d->st.home, &spec, &text, err, errlen) < 0)
		return -1;
	log_info("peer %s added through the control API", name);
	daemon_reload(d, "a peer added");
	*out = json_pack("{s:s,s:s}", "name", name, "config", text);
	peerops_wipe(text);
	return 0;
}

static int api_peer_remove(void *ctx, const char *name, char *err, size_t errlen)
{
	struct daemon *d = ctx;
	if (peerops_remove(d->st.home, name, err, errlen) < 0)
		return -1;
	log_info("peer %s removed through the control API", name);
	daemon_reload(d, "a peer removed");
	return 0;
}

static char *api_peer_config(void *ctx, const char *name, char *err, size_t errlen)
{
	struct daemon *d = ctx;
	return peerops_config(d->st.home, name, d->opts->endpoint, err, errlen);
}

static int api_peer_qr(void *ctx, const char *name, bool svg, uint8_t **data, size_t *len,
		       char *err, size_t errlen)
{
	char *text = api_peer_config(ctx, name, err, errlen);
	if (!text)
		return -1;
	int rc = peerops_qr(text, svg, data, len, err, errlen);
	peerops_wipe(text);
	return rc;
}

static json_t *api_ca(void *ctx)
{
	struct daemon *d = ctx;
	if (!d->ca_cert)
		return NULL;
	char fp[CA_FINGERPRINT_LEN], subject[512];
	ca_fingerprint(d->ca_cert, fp);
	X509_NAME_oneline(X509_get_subject_name(d->ca_cert), subject, sizeof(subject));
	BIO *b = BIO_new(BIO_s_mem());
	if (!b || PEM_write_bio_X509(b, d->ca_cert) != 1) {
		BIO_free(b);
		return NULL;
	}
	char *pem;
	long n = BIO_get_mem_data(b, &pem);
	json_t *o = json_pack("{s:s,s:s,s:s%}", "fingerprint_sha256", fp, "subject", subject, "pem",
			      pem, (size_t)n);
	BIO_free(b);
	return o;
}

static const json_t *api_config_get(void *ctx)
{
	struct daemon *d = ctx;
	return d->config;
}

static int api_config_set(void *ctx, json_t *doc, struct config_error *err)
{
	return daemon_set_config(ctx, doc, err);
}

void daemon_api_ops(struct daemon *d, struct api_ops *ops)
{
	*ops = (struct api_ops){ .status = api_status,
				 .stats = api_stats,
				 .peers = api_peers,
				 .peer_add = api_peer_add,
				 .peer_remove = api_peer_remove,
				 .peer_config = api_peer_config,
				 .peer_qr = api_peer_qr,
				 .ca = api_ca,
				 .config_get = api_config_get,
				 .config_set = api_config_set,
				 .ctx = d };
}
