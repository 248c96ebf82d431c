/* Applying the configuration document to the running endpoint. */
#include "runconfig.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "daemonlisten.h"
#include "daemonshape.h"
#include "flows/fields.h"
#include "flows/filter.h"
#include "flows/flowlog.h"
#include "listen/entry.h"
#include "mitm/dns.h"
#include "mitm/passthru.h"
#include "mitm/policy.h"
#include "mitm/relay.h"
#include "mitm/rules.h"
#include "mitm/tls.h"
#include "mitm/udp.h"
#include "netstack/netstack.h"
#include "rulesrc.h"

static int check_dns(const char *addr, char *why, size_t n)
{
	struct sockaddr_storage ss;
	if (dns_parse_upstream(addr, &ss) < 0) {
		snprintf(why, n, "\"%s\": expected ADDR[:PORT] or [ADDR6]:PORT", addr);
		return -1;
	}
	return 0;
}

static int check_filter(const char *expr, char *why, size_t n)
{
	struct filter_error fe;
	struct filter *f = filter_parse(expr, &fe);
	if (!f) {
		snprintf(why, n, "%s", fe.column ? fe.message : "out of memory");
		return -1;
	}
	filter_free(f);
	return 0;
}

static int check_rule(const json_t *rule, const char *path, struct config_error *err)
{
	struct rules_error e;
	if (rules_check(rule, path, &e) == 0)
		return 0;
	snprintf(err->field, sizeof(err->field), "%.127s", e.field);
	snprintf(err->message, sizeof(err->message), "%.255s", e.message);
	return -1;
}

static int check_dns_override(const json_t *o, const char *path, struct config_error *err)
{
	struct rules_error e;
	if (rules_check_dns(o, path, &e) == 0)
		return 0;
	snprintf(err->field, sizeof(err->field), "%.127s", e.field);
	snprintf(err->message, sizeof(err->message), "%.255s", e.message);
	return -1;
}

/* One listener alone; what it shares with the others (ports) is checked
 * when it is applied. */
static int check_listener(const json_t *o, const char *path, struct config_error *err)
{
	struct listen_entry e;
	char member[64], why[256];
	if (listen_entry_parse(o, &e, member, sizeof(member), why, sizeof(why)) == 0)
		return 0;
	snprintf(err->field, sizeof(err->field), "%.100s%s%.26s", path, *member ? "." : "", member);
	snprintf(err->message, sizeof(err->message), "%s", why);
	return -1;
}

const struct config_checks runconfig_checks = { .filter = check_filter,
						.dns_upstream = check_dns,
						.rule = check_rule,
						.dns_override = check_dns_override,
						.condition = daemon_shape_check,
						.listener = check_listener };

/* ---- The capture scope ------------------------------------------------------ */

static int fail(struct config_error *err, const char *field, const char *msg);

struct runconfig_scope {
	struct filter **inc, **exc;
	size_t ninc, nexc;
};

void runconfig_scope_free(struct runconfig_scope *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->ninc; i++)
		filter_free(s->inc[i]);
	for (size_t i = 0; i < s->nexc; i++)
		filter_free(s->exc[i]);
	free(s->inc);
	free(s->exc);
	free(s);
}

static int compile_list(const json_t *list, struct filter ***out, size_t *n)
{
	size_t cap = json_array_size(list);
	*out = calloc(cap ? cap : 1, sizeof(**out));
	*n = 0;
	if (!*out)
		return -1;
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e)
	{
		char *expr = config_scope_filter(e);
		struct filter_error fe;
		struct filter *f = expr ? filter_parse(expr, &fe) : NULL;
		free(expr);
		if (!f)
			return -1;
		(*out)[(*n)++] = f;
	}
	return 0;
}

/* Excludes win; with includes, a record must match one. */
static bool scope_gate(void *ctx, const json_t *record)
{
	const struct runconfig_scope *s = ctx;
	struct flow_fields ff;
	if (flow_fields_read(record, &ff) < 0)
		return true; /* not ours to judge: logged */
	for (size_t i = 0; i < s->nexc; i++)
		if (filter_match(s->exc[i], &ff))
			return false;
	if (s->ninc == 0)
		return true;
	for (size_t i = 0; i < s->ninc; i++)
		if (filter_match(s->inc[i], &ff))
			return true;
	return false;
}

static int apply_scope(const struct runconfig_targets *t, const json_t *doc,
		       struct config_error *err)
{
	const json_t *scope = json_object_get(doc, "capture_scope");
	struct runconfig_scope *s = calloc(1, sizeof(*s));
	if (!s || compile_list(json_object_get(scope, "includes"), &s->inc, &s->ninc) < 0 ||
	    compile_list(json_object_get(scope, "excludes"), &s->exc, &s->nexc) < 0) {
		runconfig_scope_free(s);
		return fail(err, "capture_scope", "an entry does not compile");
	}
	if (s->ninc == 0 && s->nexc == 0) {
		runconfig_scope_free(s);
		s = NULL;
	}
	flowlog_set_gate(t->log, s ? scope_gate : NULL, s);
	runconfig_scope_free(*t->scope);
	*t->scope = s;
	return 0;
}

static void set_strings(json_t *doc, const char *key, const char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	json_object_set_new(doc, key, a);
}

json_t *runconfig_from_options(const struct daemon_options *o)
{
	json_t *d = json_object();
	if (o->npassthrough)
		set_strings(d, "tls_passthrough", o->passthrough, o->npassthrough);
	if (o->auto_passthrough_s >= 0)
		json_object_set_new(d, "auto_passthrough_s", json_integer(o->auto_passthrough_s));
	if (o->no_intercept)
		json_object_set_new(d, "intercept_tls", json_false());
	if (o->nupstream_ca)
		set_strings(d, "upstream_ca", o->upstream_ca, o->nupstream_ca);
	if (o->insecure_upstream)
		json_object_set_new(d, "upstream_insecure_skip_verify", json_true());
	if (o->body_cap >= 0)
		json_object_set_new(d, "body_cap", json_integer(o->body_cap));
	if (o->quic_passthrough)
		json_object_set_new(d, "quic", json_string("passthrough"));
	if (o->ndns_upstream)
		set_strings(d, "dns_upstreams", o->dns_upstream, o->ndns_upstream);
	if (o->nhost_ports) {
		json_t *a = json_array();
		for (size_t i = 0; i < o->nhost_ports; i++)
			json_array_append_new(a, json_integer(o->host_ports[i]));
		json_object_set_new(d, "allow_host_ports", a);
	}
	if (o->max_tcp)
		json_object_set_new(d, "max_connections", json_integer(o->max_tcp));
	if (o->max_tcp_per_peer)
		json_object_set_new(d, "max_connections_per_peer",
				    json_integer(o->max_tcp_per_peer));
	if (o->network_conditions)
		json_object_set_new(d, "network_conditions", json_deep_copy(o->network_conditions));
	json_t *ls = daemon_listeners_from_options(o);
	if (json_array_size(ls))
		json_object_set_new(d, "listeners", json_pack("{s:o}", "add", ls));
	else
		json_decref(ls);
	return d;
}

static int64_t num(const json_t *doc, const char *key)
{
	return json_integer_value(json_object_get(doc, key));
}

static bool flag(const json_t *doc, const char *key)
{
	return json_is_true(json_object_get(doc, key));
}

static bool changed(const json_t *prev, const json_t *doc, const char *key)
{
	return !prev || !json_equal(json_object_get(prev, key), json_object_get(doc, key));
}

static int fail(struct config_error *err, const char *field, const char *msg)
{
	snprintf(err->field, sizeof(err->field), "%s", field);
	if (snprintf(err->message, sizeof(err->message), "%s", msg) >= (int)sizeof(err->message))
		err->message[sizeof(err->message) - 1] = '\0'; /* cut */
	return -1;
}

static int apply_passthrough(const struct runconfig_targets *t, const json_t *doc,
			     struct config_error *err)
{
	passthru_set_auto_s(t->passthru, (uint32_t)num(doc, "auto_passthrough_s"));
	passthru_clear_rules(t->passthru);
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(doc, "tls_passthrough"), i, g)
	{
		if (passthru_add_rule(t->passthru, json_string_value(g)) < 0)
			return fail(err, "tls_passthrough", "not a usable pattern");
	}
	return 0;
}

static int apply_upstream_tls(const struct runconfig_targets *t, const json_t *doc,
			      struct config_error *err)
{
	const char *cas[TLS_MAX_UPSTREAM_CA];
	size_t n = 0, i;
	json_t *v;
	json_array_foreach(json_object_get(doc, "upstream_ca"), i, v) if (n < TLS_MAX_UPSTREAM_CA)
		cas[n++] = json_string_value(v);
	char why[512];
	bool insecure = flag(doc, "upstream_insecure_skip_verify");
	if (tls_ctx_set_upstream(t->tls, cas, n, insecure, why, sizeof(why)) < 0)
		return fail(err, "upstream_ca", why);
	if (insecure)
		log_warn("upstream certificates are not verified (upstream_insecure_skip_verify)");
	return 0;
}

static int apply_dns(const struct runconfig_targets *t, const json_t *doc, struct config_error *err)
{
	struct sockaddr_storage ups[DNS_MAX_UPSTREAMS];
	size_t n = 0, i;
	json_t *v;
	json_array_foreach(json_object_get(doc, "dns_upstreams"), i, v)
	{
		if (n == DNS_MAX_UPSTREAMS || dns_parse_upstream(json_string_value(v), &ups[n]) < 0)
			return fail(err, "dns_upstreams", "expected ADDR[:PORT] or [ADDR6]:PORT");
		n++;
	}
	if (n == 0) {
		int got = dns_load_resolv_conf(DNS_RESOLV_CONF, ups, DNS_MAX_UPSTREAMS);
		if (got <= 0)
			return fail(err, "dns_upstreams",
				    DNS_RESOLV_CONF " has no usable nameserver; give one here");
		n = (size_t)got;
	}
	if (dns_proxy_set_upstreams(t->dns, ups, n) < 0)
		return fail(err, "dns_upstreams", "cannot open a socket for these upstreams");
	return 0;
}

static int apply_host_ports(const struct runconfig_targets *t, const json_t *doc,
			    struct config_error *err)
{
	policy_clear_host_ports(t->policy);
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(doc, "allow_host_ports"), i, v)
	{
		uint16_t port = (uint16_t)json_integer_value(v);
		if (t->api_port && port == t->api_port) {
			log_warn(
				"allow_host_ports %u: the control API's port stays closed to peers",
				port);
			continue;
		}
		if (policy_add_host_port(t->policy, port) < 0)
			return fail(err, "allow_host_ports", "cannot add the port");
	}
	return 0;
}

int runconfig_apply(const struct runconfig_targets *t, const json_t *prev, const json_t *doc,
		    struct config_error *err)
{
	memset(err, 0, sizeof(*err));
	uint32_t max = (uint32_t)num(doc, "max_connections");
	uint32_t per_peer = (uint32_t)num(doc, "max_connections_per_peer");
	if (per_peer == 0 || per_peer > max)
		per_peer = max > 1 ? max / 2 : 1;
	if (t->ns)
		netstack_set_max_tcp(t->ns, max);
	if (t->relay) {
		struct relay_config rc = {
			.connect_timeout_ms = (uint32_t)num(doc, "connect_timeout_ms"),
			.sniff_timeout_ms = (uint32_t)num(doc, "peek_timeout_ms"),
			.handshake_timeout_ms = (uint32_t)num(doc, "tls_handshake_timeout_ms"),
			.half_close_timeout_ms = (uint32_t)num(doc, "half_close_timeout_ms"),
			.body_cap = (size_t)num(doc, "body_cap"),
			.no_intercept = !flag(doc, "intercept_tls"),
			.max_per_peer = per_peer,
			.breakpoint_timeout_ms = (uint32_t)num(doc, "breakpoint_timeout_s") * 1000,
		};
		relay_reconfigure(t->relay, &rc);
	}
	if (t->udp_relay)
		udp_relay_set_quic(
			t->udp_relay,
			strcmp(json_string_value(json_object_get(doc, "quic")), "passthrough") == 0
				? UDP_RELAY_QUIC_PASSTHROUGH
				: UDP_RELAY_QUIC_REFUSE);
	if (t->passthru && apply_passthrough(t, doc, err) < 0)
		return -1;
	if (t->tls &&
	    (changed(prev, doc, "upstream_ca") ||
	     changed(prev, doc, "upstream_insecure_skip_verify")) &&
	    apply_upstream_tls(t, doc, err) < 0)
		return -1;
	if (!t->tls && flag(doc, "intercept_tls") && prev && changed(prev, doc, "intercept_tls"))
		log_warn(
			"intercept_tls: there is no CA (started with --no-intercept before one was "
			"made); restart without it to intercept");
	if (t->dns && changed(prev, doc, "dns_upstreams") && apply_dns(t, doc, err) < 0)
		return -1;
	if (t->policy && apply_host_ports(t, doc, err) < 0)
		return -1;
	if (t->rules &&
	    (changed(prev, doc, "intercept_rules") || changed(prev, doc, "dns_overrides")) &&
	    rulesrc_set_config(t->rules, json_object_get(doc, "intercept_rules"),
			       json_object_get(doc, "dns_overrides"), err) < 0)
		return -1;
	if (t->conditions && changed(prev, doc, "network_conditions") &&
	    t->conditions(t->conditions_ctx, json_object_get(doc, "network_conditions"), err) < 0)
		return -1;
	if (t->log && t->scope && changed(prev, doc, "capture_scope") &&
	    apply_scope(t, doc, err) < 0)
		return -1;
	return 0;
}
