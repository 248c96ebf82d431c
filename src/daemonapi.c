/* What the running endpoint reports to the control API (struct api_ops):
 * status, counters, live peers, peer changes, the CA, the configuration. */
#include "daemonapi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "common/log.h"
#include "daemonstats.h"
#include "flows/fields.h"
#include "mitm/ca.h"
#include "mitm/held.h"
#include "mitm/relay.h"
#include "mitm/replay.h"
#include "netstack/netstack.h"
#include "peerops.h"
#include "rulesrc.h"
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
	return daemon_stats_json(ctx);
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

static json_t *api_held_list(void *ctx)
{
	struct daemon *d = ctx;
	struct held *h = d->relay ? relay_held(d->relay) : NULL;
	return h ? held_list(h) : json_array();
}

static int api_held_release(void *ctx, uint64_t id, const json_t *edits, char *err, size_t errlen)
{
	struct daemon *d = ctx;
	struct held *h = d->relay ? relay_held(d->relay) : NULL;
	return h ? held_release(h, id, edits, err, errlen) : -ENOENT;
}

static int api_held_kill(void *ctx, uint64_t id)
{
	struct daemon *d = ctx;
	struct held *h = d->relay ? relay_held(d->relay) : NULL;
	return h ? held_kill(h, id) : -ENOENT;
}

static json_t *api_rules_list(void *ctx)
{
	struct daemon *d = ctx;
	return d->rules ? rulesrc_list(d->rules) : json_array();
}

struct replay_wait {
	void (*done)(void *arg, int status, json_t *answer);
	void *arg;
};

/* The answer: the new flow's id and outline, its status, and the error
 * when the upstream failed (the flow records it too). */
static void replay_ended(void *arg, const struct replay_result *r)
{
	struct replay_wait *w = arg;
	json_t *a;
	int status;
	if (r->id[0]) {
		struct flow_fields ff;
		json_t *flow = r->record && flow_fields_read(r->record, &ff) == 0
				       ? flow_summary_json(&ff)
				       : json_null();
		a = json_pack("{s:s,s:O?,s:o,s:s,s:s?,s:o}", "id", r->id, "replay_of",
			      json_object_get(r->record, "replay_of"), "status",
			      r->status ? json_integer(r->status) : json_null(), "end_reason",
			      r->end_reason, "error", r->error, "flow", flow);
		status = 201;
	} else {
		a = json_pack("{s:{s:i,s:s}}", "error", "status", 500, "message",
			      r->error ? r->error : "the replay was not recorded");
		status = 500;
	}
	w->done(w->arg, status, a);
	free(w);
}

static int api_replay(void *ctx, const json_t *record, const json_t *edits,
		      void (*done)(void *arg, int status, json_t *answer), void *arg, int *status,
		      char *err, size_t errlen)
{
	struct daemon *d = ctx;
	*status = 400;
	if (!d->replay) {
		*status = 503;
		snprintf(err, errlen, "replay is not available");
		return -1;
	}
	struct replay_request req;
	if (replay_build(record, edits, &req, err, errlen) < 0) {
		replay_request_free(&req);
		return -1;
	}
	struct replay_wait *w = malloc(sizeof(*w));
	if (!w) {
		replay_request_free(&req);
		*status = 500;
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*w = (struct replay_wait){ .done = done, .arg = arg };
	log_debug("replaying flow %s: %s %s://%s:%u%s", req.replay_of, req.method,
		  req.tls ? "https" : "http", req.host, req.port, req.target ? req.target : "");
	int rc = replay_start(d->replay, &req, replay_ended, w);
	if (rc < 0) {
		free(w);
		*status = rc == -EBUSY ? 429 : rc == -ESHUTDOWN ? 503 : 500;
		snprintf(err, errlen, "%s",
			 rc == -EBUSY       ? "too many replays in flight (16): retry when one ends"
			 : rc == -ESHUTDOWN ? "the endpoint is shutting down"
					    : "out of memory");
		return -1;
	}
	return 0;
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
				 .held_list = api_held_list,
				 .held_release = api_held_release,
				 .held_kill = api_held_kill,
				 .rules_list = api_rules_list,
				 .replay = api_replay,
				 .ctx = d };
}
