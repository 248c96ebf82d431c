/* The control API: routes over the store, the configuration and the
 * running endpoint; live events; MCP over streamable HTTP. */
#include "control/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <llhttp.h>
#include <sodium.h>

#include "common/atomicfile.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "control/auth.h"
#include "control/httpd.h"
#include "control/mcp.h"
#include "control/webui.h"
#include "flows/decode.h"
#include "flows/fields.h"
#include "flows/filter.h"
#include "flows/flowlog.h"
#include "flows/har.h"
#include "flows/query.h"
#include "flows/store.h"

#define API_INFO_FILE "api.json"
#define API_MAX_LIMIT 1000
#define API_MCP_SESSIONS 64
#define API_MCP_IDLE_MS (30u * 60 * 1000)
#define API_BODY_CAP (64u << 20) /* decoded bodies served at most */
#define API_QUERY_MS 10000       /* one list query at most */
#define API_QUERY_S "10"

struct sub; /* a live events subscriber */

struct mcp_http {
	char id[33];
	struct mcp_session *s;
	uint64_t last_used;
};

struct api {
	uv_loop_t *loop;
	struct httpd *httpd;
	struct auth *auth;
	struct api_ops ops;
	const struct config_checks *checks;
	char home[4096];
	char info_path[4200];
	char *store_path;
	struct sub *subs;
	size_t nsubs;
	uv_timer_t tick;
	bool tick_closed, freeing;
	struct mcp_http mcp[API_MCP_SESSIONS];
};

/* ---- Small helpers ---------------------------------------------------------- */

static struct api *api_of(void *arg)
{
	return arg;
}

static json_t *body_json(struct httpd_req *req, struct httpd_resp *resp)
{
	size_t len;
	const uint8_t *b = httpd_req_body(req, &len);
	if (len == 0) {
		httpd_reply_error(resp, 400, "expected a JSON object in the request body");
		return NULL;
	}
	json_error_t e;
	json_t *j = json_loadb((const char *)b, len, JSON_REJECT_DUPLICATES, &e);
	if (!j) {
		httpd_reply_error(resp, 400, "the body is not JSON: line %d column %d: %s", e.line,
				  e.column, e.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		httpd_reply_error(resp, 400, "expected a JSON object in the request body");
		return NULL;
	}
	return j;
}

static void reply_config_error(struct httpd_resp *resp, const struct config_error *err)
{
	json_t *e = json_pack("{s:{s:i,s:s,s:s}}", "error", "status", 400, "field", err->field,
			      "message", err->message);
	httpd_reply_json(resp, 400, e);
}

/* ---- Status, counters, CA, configuration ------------------------------------ */

static void h_status(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	(void)req;
	json_t *s = a->ops.status(a->ops.ctx);
	char url[128];
	snprintf(url, sizeof(url), "http://%s%s%s:%u", strchr(httpd_host(a->httpd), ':') ? "[" : "",
		 httpd_host(a->httpd), strchr(httpd_host(a->httpd), ':') ? "]" : "",
		 httpd_port(a->httpd));
	json_object_set_new(s, "api", json_string(url));
	struct store_reader *r;
	if (a->store_path && store_reader_open(&r, a->store_path) == 0) {
		struct store_stats st;
		if (store_reader_stats(r, &st) == 0)
			json_object_set_new(s, "store",
					    json_pack("{s:I,s:I,s:o,s:o}", "flows", st.flows,
						      "bytes", st.db_bytes, "oldest",
						      flow_time_json(st.oldest_us), "newest",
						      flow_time_json(st.newest_us)));
		store_reader_close(r);
	}
	httpd_reply_json(resp, 200, s);
}

static void h_stats(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	(void)req;
	httpd_reply_json(resp, 200, a->ops.stats(a->ops.ctx));
}

static void h_ca(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	json_t *ca = a->ops.ca(a->ops.ctx);
	if (!ca) {
		httpd_reply_error(resp, 404,
				  "there is no CA: the endpoint runs with --no-intercept "
				  "and none was made");
		return;
	}
	const char *path = httpd_req_path(req);
	size_t n = strlen(path);
	if (n > 4 && strcmp(path + n - 4, ".pem") == 0) {
		const char *pem = json_string_value(json_object_get(ca, "pem"));
		httpd_resp_header(resp, "Content-Disposition",
				  "attachment; filename=wgmitm-ca.pem");
		httpd_reply(resp, 200, "application/x-pem-file", pem, strlen(pem));
	} else {
		httpd_reply_json(resp, 200, json_incref(ca));
	}
	json_decref(ca);
}

static void h_config_get(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	(void)req;
	httpd_reply_json(resp, 200, json_deep_copy(a->ops.config_get(a->ops.ctx)));
}

static void config_change(struct api *a, struct httpd_req *req, struct httpd_resp *resp, bool start)
{
	json_t *body = body_json(req, resp);
	if (!body)
		return;
	struct config_error err;
	json_t *doc =
		start ? config_start(body, a->checks, &err)
		      : config_configure(a->ops.config_get(a->ops.ctx), body, a->checks, &err);
	json_decref(body);
	if (!doc) {
		reply_config_error(resp, &err);
		return;
	}
	if (a->ops.config_set(a->ops.ctx, doc, &err) < 0) {
		json_decref(doc);
		reply_config_error(resp, &err);
		return;
	}
	httpd_reply_json(resp, 200, doc);
}

static void h_config_start(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	config_change(api_of(arg), req, resp, true);
}

static void h_config_configure(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	config_change(api_of(arg), req, resp, false);
}

/* ---- Breakpoints: held messages ------------------------------------------------ */

static bool held_id(struct httpd_req *req, struct httpd_resp *resp, uint64_t *id)
{
	const char *s = httpd_req_param(req, "id");
	char *end;
	unsigned long long v = s ? strtoull(s, &end, 10) : 0;
	if (!s || !*s || *end || v == 0 || *s == '-') {
		httpd_reply_error(resp, 404, "no held item has the id \"%s\"", s ? s : "");
		return false;
	}
	*id = v;
	return true;
}

static void h_held(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	(void)req;
	json_t *l = a->ops.held_list ? a->ops.held_list(a->ops.ctx) : json_array();
	httpd_reply_json(
		resp, 200,
		json_pack("{s:I,s:o}", "count", (json_int_t)json_array_size(l), "held", l));
}

static void h_held_one(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	uint64_t id;
	if (!held_id(req, resp, &id))
		return;
	json_t *l = a->ops.held_list ? a->ops.held_list(a->ops.ctx) : json_array();
	size_t i;
	json_t *v;
	json_array_foreach(l, i, v)
	{
		if ((uint64_t)json_integer_value(json_object_get(v, "id")) == id) {
			httpd_reply_json(resp, 200, json_incref(v));
			json_decref(l);
			return;
		}
	}
	json_decref(l);
	httpd_reply_error(resp, 404, "no held item has the id %llu", (unsigned long long)id);
}

static void h_held_release(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	uint64_t id;
	if (!held_id(req, resp, &id))
		return;
	size_t len;
	httpd_req_body(req, &len);
	json_t *edits = len ? body_json(req, resp) : NULL;
	if (len && !edits)
		return;
	char err[512] = "";
	int rc = a->ops.held_release ? a->ops.held_release(a->ops.ctx, id, edits, err, sizeof(err))
				     : -ENOENT;
	bool edited = json_object_size(edits) > 0;
	json_decref(edits);
	if (rc == -ENOENT) {
		httpd_reply_error(resp, 404, "no held item has the id %llu",
				  (unsigned long long)id);
		return;
	}
	if (rc < 0) {
		/* "field: message": the field named as configuration errors do. */
		struct config_error ce = { 0 };
		const char *colon = strstr(err, ": ");
		if (colon) {
			int fl = (int)(colon - err) < 127 ? (int)(colon - err) : 127;
			snprintf(ce.field, sizeof(ce.field), "%.*s", fl, err);
			snprintf(ce.message, sizeof(ce.message), "%.255s", colon + 2);
		} else {
			snprintf(ce.message, sizeof(ce.message), "%.255s", err);
		}
		reply_config_error(resp, &ce);
		return;
	}
	httpd_reply_json(resp, 200,
			 json_pack("{s:I,s:b}", "released", (json_int_t)id, "edited", edited));
}

static void h_held_kill(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	uint64_t id;
	if (!held_id(req, resp, &id))
		return;
	if (!a->ops.held_kill || a->ops.held_kill(a->ops.ctx, id) < 0) {
		httpd_reply_error(resp, 404, "no held item has the id %llu",
				  (unsigned long long)id);
		return;
	}
	httpd_reply_json(resp, 200, json_pack("{s:I}", "killed", (json_int_t)id));
}

/* ---- Rules, edited by id (the configuration's intercept_rules) ------------------ */

static json_t *rules_all(struct api *a)
{
	if (a->ops.rules_list)
		return a->ops.rules_list(a->ops.ctx);
	json_t *l =
		json_deep_copy(json_object_get(a->ops.config_get(a->ops.ctx), "intercept_rules"));
	size_t i;
	json_t *v;
	json_array_foreach(l, i, v) json_object_set_new(v, "source", json_string("config"));
	return l ? l : json_array();
}

/* The rule `id` of any source (a new reference), or NULL. */
static json_t *rule_find(struct api *a, const char *id)
{
	json_t *l = rules_all(a), *found = NULL;
	size_t i;
	json_t *v;
	json_array_foreach(l, i, v)
	{
		const char *rid = json_string_value(json_object_get(v, "id"));
		if (rid && strcmp(rid, id) == 0) {
			found = json_incref(v);
			break;
		}
	}
	json_decref(l);
	return found;
}

/* A configure request on intercept_rules ({"add": ...}, {"remove": ...}):
 * the whole configuration checked, applied and saved, as configure does.
 * true: done; otherwise the error is the reply. */
static bool rules_edit(struct api *a, struct httpd_resp *resp, json_t *edit)
{
	json_t *req = json_pack("{s:o}", "intercept_rules", edit);
	struct config_error err;
	json_t *doc = config_configure(a->ops.config_get(a->ops.ctx), req, a->checks, &err);
	json_decref(req);
	if (!doc) {
		reply_config_error(resp, &err);
		return false;
	}
	if (a->ops.config_set(a->ops.ctx, doc, &err) < 0) {
		json_decref(doc);
		reply_config_error(resp, &err);
		return false;
	}
	json_decref(doc);
	return true;
}

/* One rule object checked as rules_check does, its errors naming the
 * field ("actions[0].status"). */
static bool rule_ok(struct api *a, struct httpd_resp *resp, const json_t *rule)
{
	struct config_error err = { 0 };
	if (a->checks && a->checks->rule && a->checks->rule(rule, "rule", &err) < 0) {
		reply_config_error(resp, &err);
		return false;
	}
	return true;
}

static void h_rules(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	(void)req;
	httpd_reply_json(resp, 200, json_pack("{s:o}", "rules", rules_all(api_of(arg))));
}

static void h_rule_add(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	json_t *rule = body_json(req, resp);
	if (!rule)
		return;
	json_object_del(rule, "source");
	const char *id = json_string_value(json_object_get(rule, "id"));
	json_t *old = id ? rule_find(a, id) : NULL;
	if (old) {
		const char *src = json_string_value(json_object_get(old, "source"));
		/* id and src point into the objects: answer before they go. */
		httpd_reply_error(resp, 409,
				  "id: a rule has the id \"%s\" already (source %s); PATCH it or "
				  "pick another id",
				  id, src ? src : "?");
		json_decref(old);
		json_decref(rule);
		return;
	}
	if (!rule_ok(a, resp, rule) || !rules_edit(a, resp, json_pack("{s:[O]}", "add", rule))) {
		json_decref(rule);
		return;
	}
	httpd_reply_json(resp, 201, rule);
}

/* The configuration's rule `id`, or NULL with the reply made. */
static json_t *config_rule(struct api *a, struct httpd_req *req, struct httpd_resp *resp)
{
	const char *id = httpd_req_param(req, "id");
	json_t *r = rule_find(a, id);
	if (!r) {
		httpd_reply_error(resp, 404, "no rule has the id \"%s\"", id);
		return NULL;
	}
	const char *src = json_string_value(json_object_get(r, "source"));
	if (!src || strcmp(src, "config") != 0) {
		httpd_reply_error(
			resp, 409,
			"the rule \"%s\" comes from %s, not the configuration: edit it "
			"there",
			id, src && strcmp(src, "file") == 0 ? "HOME/rules.json" : "run's options");
		json_decref(r);
		return NULL;
	}
	json_object_del(r, "source");
	return r;
}

static void h_rule_get(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *id = httpd_req_param(req, "id");
	json_t *r = rule_find(a, id);
	if (!r) {
		httpd_reply_error(resp, 404, "no rule has the id \"%s\"", id);
		return;
	}
	httpd_reply_json(resp, 200, r);
}

/* The fields given replace the rule's (null removes one); the id stays. */
static void h_rule_patch(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	json_t *body = body_json(req, resp);
	if (!body)
		return;
	json_t *r = config_rule(a, req, resp);
	if (!r) {
		json_decref(body);
		return;
	}
	const json_t *nid = json_object_get(body, "id");
	if (nid && !json_equal(nid, json_object_get(r, "id"))) {
		httpd_reply_error(resp, 400, "id: a rule keeps its id (add a new one instead)");
		json_decref(body);
		json_decref(r);
		return;
	}
	json_t *nr = json_copy(r);
	const char *k;
	json_t *v;
	json_object_foreach(body, k, v)
	{
		if (json_is_null(v))
			json_object_del(nr, k);
		else
			json_object_set(nr, k, v);
	}
	json_decref(body);
	json_decref(r);
	if (!rule_ok(a, resp, nr) || !rules_edit(a, resp, json_pack("{s:[O]}", "add", nr))) {
		json_decref(nr);
		return;
	}
	httpd_reply_json(resp, 200, nr);
}

static void h_rule_delete(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	json_t *r = config_rule(a, req, resp);
	if (!r)
		return;
	json_t *id = json_incref(json_object_get(r, "id"));
	json_decref(r);
	if (rules_edit(a, resp, json_pack("{s:[O]}", "remove", id)))
		httpd_reply_json(resp, 200, json_pack("{s:O}", "removed", id));
	json_decref(id);
}

/* ---- Peers -------------------------------------------------------------------- */

static void h_peer_add(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	json_t *body = body_json(req, resp);
	if (!body)
		return;
	json_t *out;
	char err[512];
	int rc = a->ops.peer_add(a->ops.ctx, body, &out, err, sizeof(err));
	json_decref(body);
	if (rc < 0) {
		httpd_reply_error(resp, strstr(err, "exists") ? 409 : 400, "%s", err);
		return;
	}
	httpd_reply_json(resp, 201, out);
}

static void h_peer_remove(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *name = httpd_req_param(req, "name");
	char err[512];
	if (a->ops.peer_remove(a->ops.ctx, name, err, sizeof(err)) < 0) {
		httpd_reply_error(resp, 404, "%s", err);
		return;
	}
	httpd_reply_json(resp, 200, json_pack("{s:s}", "removed", name));
}

static void h_peer_config(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *name = httpd_req_param(req, "name");
	char err[512];
	char *text = a->ops.peer_config(a->ops.ctx, name, err, sizeof(err));
	if (!text) {
		httpd_reply_error(resp, 404, "%s", err);
		return;
	}
	char disp[128];
	snprintf(disp, sizeof(disp), "attachment; filename=%s.conf", name);
	httpd_resp_header(resp, "Content-Disposition", disp);
	httpd_reply(resp, 200, "text/plain; charset=utf-8", text, strlen(text));
	sodium_memzero(text, strlen(text));
	free(text);
}

static void h_peer_qr(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *name = httpd_req_param(req, "name");
	const char *file = httpd_req_param(req, "file");
	bool svg = strcmp(file, "qr.svg") == 0;
	if (!svg && strcmp(file, "qr.png") != 0) {
		httpd_reply_error(resp, 404, "a peer has config, qr.png and qr.svg");
		return;
	}
	uint8_t *data;
	size_t len;
	char err[512];
	if (a->ops.peer_qr(a->ops.ctx, name, svg, &data, &len, err, sizeof(err)) < 0) {
		httpd_reply_error(resp, 404, "%s", err);
		return;
	}
	httpd_reply(resp, 200, svg ? "image/svg+xml" : "image/png", data, len);
	free(data);
}

static void h_peer_file(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	if (strcmp(httpd_req_param(req, "file"), "config") == 0)
		h_peer_config(req, resp, arg);
	else
		h_peer_qr(req, resp, arg);
}

/* ---- Flows: queries on the thread pool ---------------------------------------- */

enum query_kind { Q_LIST, Q_GET, Q_BODY, Q_CLEAR, Q_HAR, Q_PEERS, Q_USAGE };

struct query {
	uv_work_t work;
	struct api *a;
	struct httpd_resp *resp;
	enum query_kind kind;
	char *filter;   /* text, parsed on the worker */
	int64_t cursor; /* Q_LIST */
	char *anchor;   /* Q_LIST: list from this flow's id (before/after) */
	bool oldest;    /* Q_LIST: oldest first */
	unsigned limit;
	char *id; /* Q_GET, Q_BODY */
	/* Q_PEERS: json holds the peers array on the way in */
	int part;        /* Q_BODY: 0 request, 1 response */
	bool decode;     /* Q_BODY */
	bool filter_set; /* Q_CLEAR: delete only those */
	int group;       /* Q_USAGE: enum store_group */
	/* The answer, made on the worker. */
	int status;
	json_t *json;
	uint8_t *data;
	size_t len, off;
	char ctype[128];
	char error[512];
	unsigned error_column;
};

static void query_free(struct query *q)
{
	free(q->filter);
	free(q->id);
	free(q->anchor);
	json_decref(q->json);
	free(q->data);
	free(q);
}

static int query_fail(struct query *q, int status, const char *msg)
{
	q->status = status;
	snprintf(q->error, sizeof(q->error), "%s", msg);
	return -1;
}

/* The query's filter as a store query. */
static int where_make(struct query *q, struct flows_query *w)
{
	struct filter_error fe;
	if (flows_query_make(w, q->filter, &fe) < 0) {
		q->error_column = fe.column;
		return query_fail(q, fe.column ? 400 : 500, fe.message);
	}
	return 0;
}

static json_t *row_json(const struct store_row *r)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(r->id));
	json_object_set_new(o, "type", json_string(r->type));
	json_object_set_new(o, "start", flow_time_json(r->start_us));
	json_object_set_new(o, "duration_ms",
			    r->duration_us > 0 ? json_real((double)r->duration_us / 1000.0)
					       : json_null());
	json_object_set_new(o, "peer", r->peer ? json_string(r->peer) : json_null());
	json_object_set_new(o, "method", r->method ? json_string(r->method) : json_null());
	json_object_set_new(o, "status", r->status ? json_integer(r->status) : json_null());
	json_object_set_new(o, "host", json_string(r->host ? r->host : ""));
	json_object_set_new(o, "url", r->url ? json_string(r->url) : json_null());
	json_object_set_new(o, "bytes_up", json_integer(r->bytes_up));
	json_object_set_new(o, "bytes_down", json_integer(r->bytes_down));
	json_object_set_new(o, "size", json_integer(r->bytes_up + r->bytes_down));
	json_object_set_new(o, "proto", r->proto ? json_string(r->proto) : json_null());
	json_object_set_new(o, "passthrough", json_boolean(r->flags & STORE_PASSTHROUGH));
	json_object_set_new(o, "tls_rejected", json_boolean(r->flags & STORE_TLS_REJECTED));
	json_object_set_new(o, "websocket", json_boolean(r->flags & STORE_WEBSOCKET));
	json_object_set_new(o, "end_reason",
			    r->end_reason ? json_string(r->end_reason) : json_null());
	json_object_set_new(o, "error", r->error ? json_string(r->error) : json_null());
	json_object_set_new(o, "via", json_string(r->via ? r->via : "wireguard"));
	json_object_set_new(o, "user", r->user ? json_string(r->user) : json_null());
	json_object_set_new(o, "replay_of", r->replay_of ? json_string(r->replay_of) : json_null());
	return o;
}

static int collect_row(void *ctx, const struct store_row *r)
{
	json_array_append_new(ctx, row_json(r));
	return 0;
}

static int har_row(void *ctx, const struct store_row *r)
{
	json_array_append_new(ctx, json_string(r->id));
	return 0;
}

static void q_list(struct query *q, struct store_reader *r)
{
	struct flows_query w;
	if (where_make(q, &w) < 0)
		return;
	struct store_query sq = w.q;
	sq.cursor = q->cursor;
	sq.limit = q->limit;
	sq.oldest_first = q->oldest;
	int rc;
	if (q->anchor && (rc = store_seq(r, q->anchor, &sq.cursor)) < 0) {
		flows_query_free(&w);
		query_fail(q, rc == -ENOENT ? 404 : 500,
			   rc == -ENOENT ? "before/after: no flow with this id in the store (yet)"
					 : store_reader_errmsg(r));
		return;
	}
	json_t *flows = json_array();
	int64_t next = 0;
	rc = store_list(r, &sq, collect_row, flows, &next);
	flows_query_free(&w);
	if (rc < 0) {
		json_decref(flows);
		if (rc == -ETIMEDOUT)
			query_fail(q, 503,
				   "the filter took longer than " API_QUERY_S
				   " s on this store: narrow it (a host, a status or a "
				   "type uses an index)");
		else
			query_fail(q, 500, store_reader_errmsg(r));
		return;
	}
	q->json = json_pack("{s:o}", "flows", flows);
	if (next) {
		char c[32];
		snprintf(c, sizeof(c), "%lld", (long long)next);
		json_object_set_new(q->json, "next_cursor", json_string(c));
	} else {
		json_object_set_new(q->json, "next_cursor", json_null());
	}
	q->status = 200;
}

static void q_body(struct query *q, struct store_reader *r)
{
	uint8_t *data;
	size_t len;
	char *enc;
	int rc = store_body(r, q->id, q->part, &data, &len, &enc);
	if (rc == -ENOENT) {
		query_fail(q, 404, "no such flow, or it has no such body");
		return;
	}
	if (rc < 0) {
		query_fail(q, 500, store_reader_errmsg(r));
		return;
	}
	json_t *rec = NULL;
	const char *ctype = NULL;
	if (store_get(r, q->id, &rec) == 0) {
		const json_t *msg = json_object_get(rec, q->part ? "response" : "request");
		ctype = flow_header(json_object_get(msg, "headers"), "content-type");
	}
	snprintf(q->ctype, sizeof(q->ctype), "%s", ctype ? ctype : "application/octet-stream");
	json_decref(rec);
	if (q->decode && !decode_is_identity(enc)) {
		uint8_t *out;
		size_t outlen;
		enum decode_status ds = decode_body(enc, data, len, API_BODY_CAP, &out, &outlen);
		if (ds == DECODE_UNKNOWN || ds == DECODE_NOMEM || !out) {
			/* Served as recorded, saying so. */
			snprintf(q->error, sizeof(q->error), "%s", decode_status_name(ds));
		} else {
			free(data);
			data = out;
			len = outlen;
			free(enc);
			enc = NULL;
			if (ds != DECODE_COMPLETE)
				snprintf(q->error, sizeof(q->error), "%s", decode_status_name(ds));
		}
	}
	/* The encoding still on the bytes, as the client must know it. */
	if (enc)
		snprintf(q->error + strlen(q->error), sizeof(q->error) - strlen(q->error),
			 "%sencoding=%s", q->error[0] ? ";" : "", enc);
	free(enc);
	q->data = data;
	q->len = len;
	q->status = 200;
}

static void q_har(struct query *q, struct store_reader *r)
{
	struct flows_query w;
	if (where_make(q, &w) < 0)
		return;
	/* The newest `limit` flows, then written oldest first. */
	json_t *ids = json_array();
	struct store_query sq = w.q;
	sq.limit = q->limit;
	int rc = store_list(r, &sq, har_row, ids, NULL);
	flows_query_free(&w);
	if (rc < 0) {
		json_decref(ids);
		query_fail(q, 500, store_reader_errmsg(r));
		return;
	}
	struct har *h = har_create(WGMITM_VERSION);
	char err[256];
	for (size_t i = json_array_size(ids); h && i-- > 0;) {
		json_t *rec;
		if (store_get(r, json_string_value(json_array_get(ids, i)), &rec) == 0) {
			(void)!har_add_record(h, rec, err, sizeof(err));
			json_decref(rec);
		}
	}
	json_decref(ids);
	struct har_stats hs;
	char *buf = NULL;
	size_t n = 0;
	FILE *f = h ? open_memstream(&buf, &n) : NULL;
	if (!f || har_finish(h, &hs) < 0 || har_write(h, f) < 0) {
		if (f)
			fclose(f);
		free(buf);
		har_free(h);
		query_fail(q, 500, "out of memory");
		return;
	}
	fclose(f);
	har_free(h);
	q->data = (uint8_t *)buf;
	q->len = n;
	snprintf(q->ctype, sizeof(q->ctype), "application/json");
	q->status = 200;
}

static int usage_row(void *ctx, const struct store_usage *u)
{
	json_array_append_new(ctx, json_pack("{s:s?,s:I,s:I,s:I,s:I}", "key", u->key, "connections",
					     (json_int_t)u->connections, "exchanges",
					     (json_int_t)u->exchanges, "bytes_up",
					     (json_int_t)u->bytes_up, "bytes_down",
					     (json_int_t)u->bytes_down));
	return 0;
}

static const char *const usage_by[] = {
	[STORE_BY_DEVICE] = "device",
	[STORE_BY_USER] = "user",
	[STORE_BY_HOST] = "host",
	[STORE_BY_VIA] = "via",
};

static void q_usage(struct query *q, struct store_reader *r)
{
	struct flows_query w;
	if (where_make(q, &w) < 0)
		return;
	json_t *rows = json_array();
	int rc = store_usage(r, (enum store_group)q->group, w.q.where, w.q.params, w.q.nparams,
			     q->limit, usage_row, rows);
	flows_query_free(&w);
	if (rc < 0) {
		json_decref(rows);
		if (rc == -ETIMEDOUT)
			query_fail(q, 503,
				   "the accounting took longer than " API_QUERY_S
				   " s: narrow the filter");
		else
			query_fail(q, 500, store_reader_errmsg(r));
		return;
	}
	q->json = json_pack("{s:s,s:o}", "by", usage_by[q->group], "usage", rows);
	q->status = 200;
}

/* Each peer's "flows" and "last_flow" (null when the store cannot say). */
static void q_peers(struct query *q, struct store_reader *r)
{
	json_t *peers = q->json;
	size_t i;
	json_t *p;
	json_array_foreach(peers, i, p)
	{
		const char *name = json_string_value(json_object_get(p, "name"));
		int64_t n = 0, last = 0;
		bool ok = r && name && store_peer_flows(r, name, &n, &last) == 0;
		json_object_set_new(p, "flows", ok ? json_integer((json_int_t)n) : json_null());
		json_object_set_new(p, "last_flow", ok && n ? flow_time_json(last) : json_null());
	}
	q->json = json_pack("{s:o}", "peers", peers);
	q->status = 200;
}

static void query_run(uv_work_t *w)
{
	struct query *q = w->data;
	struct store_reader *r;
	int rc = store_reader_open(&r, q->a->store_path);
	if (rc < 0 && q->kind == Q_PEERS) {
		q_peers(q, NULL); /* the peers all the same */
		return;
	}
	if (rc < 0) {
		query_fail(q, 503,
			   rc == -ENOENT ? "the flow store is not there yet (it is being made)"
					 : "the flow store cannot be read now");
		return;
	}
	/* A filter that scans a large store must not hold a worker for good. */
	store_reader_set_timeout(r, API_QUERY_MS);
	switch (q->kind) {
	case Q_LIST:
		q_list(q, r);
		break;
	case Q_GET:
		if ((rc = store_get(r, q->id, &q->json)) == 0)
			q->status = 200;
		else
			query_fail(q, rc == -ENOENT ? 404 : 500,
				   rc == -ENOENT ? "no flow with this id" : store_reader_errmsg(r));
		break;
	case Q_BODY:
		q_body(q, r);
		break;
	case Q_CLEAR: {
		int64_t before = 0;
		store_count(r, NULL, NULL, 0, &before);
		if (store_reader_clear(r) < 0) {
			query_fail(q, 500, store_reader_errmsg(r));
			break;
		}
		q->json = json_pack("{s:I}", "deleted", (json_int_t)before);
		q->status = 200;
		break;
	}
	case Q_HAR:
		q_har(q, r);
		break;
	case Q_PEERS:
		q_peers(q, r);
		break;
	case Q_USAGE:
		q_usage(q, r);
		break;
	}
	store_reader_close(r);
}

static void har_writable(struct httpd_resp *resp, void *arg)
{
	struct query *q = arg;
	while (q->off < q->len) {
		size_t n = q->len - q->off > 65536 ? 65536 : q->len - q->off;
		int rc = httpd_stream_write(resp, q->data + q->off, n);
		if (rc == -EAGAIN)
			return;
		if (rc < 0)
			break;
		q->off += n;
		if (rc == HTTPD_FULL)
			return;
	}
	httpd_stream_end(resp);
	query_free(q);
}

static void query_done(uv_work_t *w, int status)
{
	struct query *q = w->data;
	(void)status;
	if (q->status != 200) {
		if (q->error_column) {
			json_t *e = json_pack("{s:{s:i,s:s,s:i}}", "error", "status", q->status,
					      "message", q->error, "column", q->error_column);
			httpd_reply_json(q->resp, q->status, e);
		} else {
			httpd_reply_error(q->resp, q->status, "%s", q->error);
		}
		query_free(q);
		return;
	}
	if (q->kind == Q_HAR) {
		httpd_resp_header(q->resp, "Content-Disposition",
				  "attachment; filename=wgmitm.har");
		if (httpd_stream_begin(q->resp, 200, q->ctype, har_writable, q) < 0) {
			httpd_stream_end(q->resp);
			query_free(q);
			return;
		}
		har_writable(q->resp, q);
		return;
	}
	if (q->kind == Q_BODY) {
		if (q->error[0])
			httpd_resp_header(q->resp, "X-Wgmitm-Body", q->error);
		httpd_reply(q->resp, 200, q->ctype, q->data, q->len);
	} else {
		httpd_reply_json(q->resp, 200, json_incref(q->json));
	}
	query_free(q);
}

static struct query *query_new(struct api *a, struct httpd_resp *resp, enum query_kind kind)
{
	if (!a->store_path) {
		httpd_reply_error(resp, 503, "the flow store is off");
		return NULL;
	}
	struct query *q = calloc(1, sizeof(*q));
	if (!q) {
		httpd_reply_error(resp, 500, "out of memory");
		return NULL;
	}
	q->a = a;
	q->resp = resp;
	q->kind = kind;
	q->work.data = q;
	return q;
}

static void query_start(struct query *q)
{
	if (uv_queue_work(q->a->loop, &q->work, query_run, query_done) < 0) {
		httpd_reply_error(q->resp, 500, "cannot queue the query");
		query_free(q);
	}
}

/* The peers, with their flow counts from the store (counted on the thread
 * pool: a range of the peer index, long for a peer of a million flows). */
static void h_peers(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	(void)req;
	json_t *peers = a->ops.peers(a->ops.ctx);
	if (!a->store_path) {
		httpd_reply_json(resp, 200, json_pack("{s:o}", "peers", peers));
		return;
	}
	struct query *q = query_new(a, resp, Q_PEERS);
	if (!q) {
		json_decref(peers);
		return;
	}
	q->json = peers;
	query_start(q);
}

static bool parse_limit(struct httpd_req *req, struct httpd_resp *resp, unsigned def, unsigned max,
			unsigned *out)
{
	const char *l = httpd_req_query(req, "limit");
	*out = def;
	if (!l)
		return true;
	char *end;
	unsigned long v = strtoul(l, &end, 10);
	if (!*l || *end || v == 0 || v > max) {
		httpd_reply_error(resp, 400, "limit: expected 1 to %u", max);
		return false;
	}
	*out = (unsigned)v;
	return true;
}

static void h_flows(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	unsigned limit;
	if (!parse_limit(req, resp, 100, API_MAX_LIMIT, &limit))
		return;
	int64_t cursor = 0;
	const char *c = httpd_req_query(req, "cursor");
	if (c && *c) {
		char *end;
		long long v = strtoll(c, &end, 10);
		if (*end || v <= 0) {
			httpd_reply_error(resp, 400, "cursor: pass back the next_cursor of a page");
			return;
		}
		cursor = v;
	}
	/* order=oldest; before=ID (older than that flow, newest first) or
	 * after=ID (newer than it, oldest first). */
	const char *order = httpd_req_query(req, "order");
	const char *before = httpd_req_query(req, "before"), *after = httpd_req_query(req, "after");
	if (order && strcmp(order, "oldest") != 0 && strcmp(order, "newest") != 0) {
		httpd_reply_error(resp, 400, "order: expected newest or oldest");
		return;
	}
	if ((before && !*before) || (after && !*after) || (before && after) ||
	    ((before || after) && cursor)) {
		httpd_reply_error(resp, 400,
				  "before=ID or after=ID: one flow id, and not with a cursor");
		return;
	}
	bool oldest = after || (order && strcmp(order, "oldest") == 0);
	if ((before && oldest) || (after && order && strcmp(order, "newest") == 0)) {
		httpd_reply_error(resp, 400,
				  "before=ID lists newest first and after=ID oldest first: drop "
				  "order");
		return;
	}
	struct query *q = query_new(a, resp, Q_LIST);
	if (!q)
		return;
	const char *f = httpd_req_query(req, "filter");
	q->filter = f ? strdup(f) : NULL;
	q->anchor = before ? strdup(before) : after ? strdup(after) : NULL;
	q->oldest = oldest;
	q->cursor = cursor;
	q->limit = limit;
	query_start(q);
}

/* Traffic per device, user, host or way in, from the store. */
static void h_usage(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	unsigned limit;
	if (!parse_limit(req, resp, 100, 10000, &limit))
		return;
	const char *by = httpd_req_query(req, "by");
	int group = -1;
	for (size_t i = 0; i < sizeof(usage_by) / sizeof(usage_by[0]); i++)
		if (by && strcmp(by, usage_by[i]) == 0)
			group = (int)i;
	if (group < 0) {
		httpd_reply_error(resp, 400, "by: expected device, user, host or via");
		return;
	}
	struct query *q = query_new(a, resp, Q_USAGE);
	if (!q)
		return;
	const char *f = httpd_req_query(req, "filter");
	q->filter = f ? strdup(f) : NULL;
	q->group = group;
	q->limit = limit;
	query_start(q);
}

static void h_flows_clear(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *f = httpd_req_query(req, "filter");
	if (f && *f) {
		httpd_reply_error(resp, 400,
				  "DELETE /api/flows clears every flow and takes "
				  "no filter");
		return;
	}
	struct query *q = query_new(a, resp, Q_CLEAR);
	if (q)
		query_start(q);
}

static void h_flow(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct query *q = query_new(api_of(arg), resp, Q_GET);
	if (!q)
		return;
	q->id = strdup(httpd_req_param(req, "id"));
	query_start(q);
}

static void h_flow_body(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	const char *part = httpd_req_param(req, "part");
	if (strcmp(part, "request") != 0 && strcmp(part, "response") != 0) {
		httpd_reply_error(resp, 404, "a flow has request/body and response/body");
		return;
	}
	struct query *q = query_new(api_of(arg), resp, Q_BODY);
	if (!q)
		return;
	q->id = strdup(httpd_req_param(req, "id"));
	q->part = strcmp(part, "response") == 0;
	const char *d = httpd_req_query(req, "decode");
	q->decode = d && (strcmp(d, "1") == 0 || strcmp(d, "true") == 0);
	query_start(q);
}

static void h_har(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	unsigned limit;
	if (!parse_limit(req, resp, 10000, 100000, &limit))
		return;
	struct query *q = query_new(api_of(arg), resp, Q_HAR);
	if (!q)
		return;
	const char *f = httpd_req_query(req, "filter");
	/* HAR holds HTTP exchanges and their WebSocket messages. */
	size_t n = f ? strlen(f) : 0;
	q->filter = malloc(n + 48);
	if (q->filter)
		snprintf(q->filter, n + 48,
			 n ? "(~http | ~websocket) & (%s)" : "~http | ~websocket", f ? f : "");
	q->limit = limit;
	query_start(q);
}

/* ---- Replay: the record read on the thread pool, then resent ---------------- */

struct replay_call {
	uv_work_t work;
	struct api *a;
	struct httpd_resp *resp;
	char *id;
	json_t *edits; /* NULL: as recorded */
	json_t *record;
	int status;
	char error[512];
};

static void replay_call_free(struct replay_call *c)
{
	free(c->id);
	json_decref(c->edits);
	json_decref(c->record);
	free(c);
}

static void replay_read(uv_work_t *w)
{
	struct replay_call *c = w->data;
	struct store_reader *r;
	int rc = store_reader_open(&r, c->a->store_path);
	if (rc < 0) {
		c->status = 503;
		snprintf(c->error, sizeof(c->error), "the flow store cannot be read now");
		return;
	}
	rc = store_get(r, c->id, &c->record);
	c->status = rc == 0 ? 200 : rc == -ENOENT ? 404 : 500;
	if (rc < 0)
		snprintf(c->error, sizeof(c->error), "%s",
			 rc == -ENOENT ? "no flow with this id (a flow just recorded may take a "
					 "moment to reach the store)"
				       : store_reader_errmsg(r));
	store_reader_close(r);
}

static void replay_answered(void *arg, int status, json_t *answer)
{
	httpd_reply_json(arg, status, answer);
}

static void replay_read_done(uv_work_t *w, int status)
{
	struct replay_call *c = w->data;
	(void)status;
	struct api *a = c->a;
	if (c->status != 200) {
		httpd_reply_error(c->resp, c->status, "%s", c->error);
	} else if (!a->ops.replay) {
		httpd_reply_error(c->resp, 503, "this endpoint does not replay flows");
	} else {
		int st = 500;
		if (a->ops.replay(a->ops.ctx, c->record, c->edits, replay_answered, c->resp, &st,
				  c->error, sizeof(c->error)) < 0)
			httpd_reply_error(c->resp, st, "%s", c->error);
	}
	replay_call_free(c);
}

/* POST /api/flows/{id}/replay [edits]: answered when the replay ended. */
static void h_flow_replay(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	if (!a->store_path) {
		httpd_reply_error(resp, 503, "the flow store is off");
		return;
	}
	size_t len;
	(void)httpd_req_body(req, &len);
	json_t *edits = len ? body_json(req, resp) : NULL;
	if (len && !edits)
		return;
	struct replay_call *c = calloc(1, sizeof(*c));
	if (!c || !(c->id = strdup(httpd_req_param(req, "id")))) {
		free(c);
		json_decref(edits);
		httpd_reply_error(resp, 500, "out of memory");
		return;
	}
	c->a = a;
	c->resp = resp;
	c->edits = edits;
	c->work.data = c;
	if (uv_queue_work(a->loop, &c->work, replay_read, replay_read_done) < 0) {
		httpd_reply_error(resp, 500, "cannot queue the request");
		replay_call_free(c);
	}
}

/* ---- Live events ---------------------------------------------------------------- */

/* A subscriber: what it asked for. Messages are JSON text frames:
 * {"type":"flow","flow":{outline}}, {"type":"log","level","message"},
 * {"type":"stats","stats":{...}}, {"type":"dropped","count":N} (flows not
 * sent while the client read too slowly: list again to catch up),
 * {"type":"error","message"} (a bad subscription; the old one stays). */
struct sub {
	struct api *a;
	struct httpd_ws *ws;
	struct sub *next;
	struct filter *filter; /* NULL: every flow */
	bool flows, starts, log, stats;
	bool held; /* breakpoint events (on unless asked off) */
	uint64_t dropped;
};

static void sub_send(struct sub *s, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text)
		return;
	(void)httpd_ws_send_text(s->ws, text, strlen(text));
	free(text);
}

/* A client slower than the flows: drop flow events past half the queue
 * (it learns how many), rather than lose the connection. */
static bool sub_congested(const struct sub *s)
{
	return httpd_ws_queued(s->ws) > httpd_ws_queue_max(s->ws) / 2;
}

static void sub_error(struct sub *s, const char *fmt, const char *what)
{
	char msg[512];
	snprintf(msg, sizeof(msg), fmt, what);
	sub_send(s, json_pack("{s:s,s:s}", "type", "error", "message", msg));
}

/* {"flows": true | "FILTER" | false, "log": bool, "stats": bool}; fields
 * absent keep their value. */
static void sub_configure(struct sub *s, const json_t *req)
{
	const json_t *f = json_object_get(req, "flows");
	struct filter *nf = s->filter;
	bool flows = s->flows;
	if (json_is_string(f) && *json_string_value(f)) {
		struct filter_error fe;
		nf = filter_parse(json_string_value(f), &fe);
		if (!nf) {
			json_t *e = json_pack("{s:s,s:s,s:i}", "type", "error", "message",
					      fe.message, "column", fe.column);
			sub_send(s, e);
			return;
		}
		flows = true;
	} else if (json_is_boolean(f) || json_is_string(f)) {
		nf = NULL;
		flows = json_is_string(f) || json_is_true(f);
	} else if (f) {
		sub_error(s, "%s", "flows: expected true, false or a filter expression");
		return;
	}
	if (nf != s->filter)
		filter_free(s->filter);
	s->filter = nf;
	s->flows = flows;
	const json_t *l = json_object_get(req, "log"), *st = json_object_get(req, "stats");
	const json_t *sts = json_object_get(req, "starts");
	const json_t *hd = json_object_get(req, "held");
	if (hd)
		s->held = json_is_true(hd);
	if (sts)
		s->starts = json_is_true(sts);
	if (l)
		s->log = json_is_true(l);
	if (st)
		s->stats = json_is_true(st);
	sub_send(s,
		 json_pack("{s:s,s:b,s:b,s:b,s:b,s:b}", "type", "subscribed", "flows", s->flows,
			   "starts", s->starts, "log", s->log, "stats", s->stats, "held", s->held));
}

static void ev_open(struct httpd_ws *ws, void *arg)
{
	struct api *a = arg;
	struct sub *s = calloc(1, sizeof(*s));
	if (!s) {
		httpd_ws_close(ws, 4000, "out of memory");
		return;
	}
	s->a = a;
	s->ws = ws;
	s->flows = true;
	s->held = true;
	httpd_ws_set_data(ws, s);
	s->next = a->subs;
	a->subs = s;
	a->nsubs++;
	/* The query string subscribes too: ?filter=...&log=1&stats=1 */
	const struct httpd_req *req = httpd_ws_req(ws);
	json_t *r = json_object();
	const char *f = httpd_req_query(req, "filter");
	if (f && *f)
		json_object_set_new(r, "flows", json_string(f));
	const char *l = httpd_req_query(req, "log"), *st = httpd_req_query(req, "stats");
	const char *sts = httpd_req_query(req, "starts");
	if (sts)
		json_object_set_new(r, "starts", json_boolean(strcmp(sts, "0") != 0));
	if (l)
		json_object_set_new(r, "log", json_boolean(strcmp(l, "0") != 0));
	if (st)
		json_object_set_new(r, "stats", json_boolean(strcmp(st, "0") != 0));
	sub_configure(s, r);
	json_decref(r);
}

static void ev_message(struct httpd_ws *ws, bool binary, const uint8_t *data, size_t len, void *arg)
{
	(void)arg;
	struct sub *s = httpd_ws_data(ws);
	if (!s)
		return;
	json_t *j = binary ? NULL : json_loadb((const char *)data, len, 0, NULL);
	if (!json_is_object(j))
		sub_error(s, "%s", "expected a JSON object such as {\"flows\": \"~d example\"}");
	else
		sub_configure(s, j);
	json_decref(j);
}

static void ev_drain(struct httpd_ws *ws, void *arg)
{
	(void)arg;
	struct sub *s = httpd_ws_data(ws);
	if (s && s->dropped) {
		sub_send(s, json_pack("{s:s,s:I}", "type", "dropped", "count",
				      (json_int_t)s->dropped));
		s->dropped = 0;
	}
}

static void ev_close(struct httpd_ws *ws, int code, void *arg)
{
	struct api *a = arg;
	(void)code;
	struct sub *s = httpd_ws_data(ws);
	if (!s)
		return;
	for (struct sub **p = &a->subs; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	a->nsubs--;
	filter_free(s->filter);
	free(s);
}

static const struct httpd_ws_handler events_handler = {
	.on_open = ev_open,
	.on_message = ev_message,
	.on_drain = ev_drain,
	.on_close = ev_close,
};

void api_flow_recorded(struct api *a, const json_t *record)
{
	if (!a || !a->subs)
		return;
	struct flow_fields ff;
	if (flow_fields_read(record, &ff) < 0)
		return;
	char *text = NULL;
	for (struct sub *s = a->subs; s; s = s->next) {
		if (!s->flows || (s->filter && !filter_match(s->filter, &ff)))
			continue;
		if (sub_congested(s)) {
			s->dropped++;
			continue;
		}
		if (!text) {
			json_t *m = json_pack("{s:s,s:o}", "type", "flow", "flow",
					      flow_summary_json(&ff));
			text = json_dumps(m, JSON_COMPACT);
			json_decref(m);
			if (!text)
				return;
		}
		(void)httpd_ws_send_text(s->ws, text, strlen(text));
	}
	free(text);
}

void api_flow_started(struct api *a, const struct flowlog_flow *f)
{
	if (!a || !a->subs)
		return;
	/* What is known at the start: type, id, peer, addresses, time. */
	json_t *rec = flowlog_flow_json(f);
	if (!rec)
		return;
	struct flow_fields ff;
	char *text = NULL;
	if (flow_fields_read(rec, &ff) == 0) {
		for (struct sub *s = a->subs; s; s = s->next) {
			if (!s->flows || !s->starts || (s->filter && !filter_match(s->filter, &ff)))
				continue;
			if (sub_congested(s)) {
				s->dropped++;
				continue;
			}
			if (!text) {
				json_t *o = flow_summary_json(&ff);
				json_object_set_new(o, "client",
						    json_string(ff.client ? ff.client : ""));
				json_object_set_new(o, "server",
						    json_string(ff.server ? ff.server : ""));
				json_t *m = json_pack("{s:s,s:o}", "type", "flow_start", "flow", o);
				text = json_dumps(m, JSON_COMPACT);
				json_decref(m);
				if (!text)
					break;
			}
			(void)httpd_ws_send_text(s->ws, text, strlen(text));
		}
	}
	free(text);
	json_decref(rec);
}

void api_held_event(struct api *a, const char *what, const json_t *item)
{
	if (!a)
		return;
	for (struct sub *s = a->subs; s; s = s->next)
		if (s->held)
			sub_send(s, json_pack("{s:s,s:s,s:O}", "type", "held", "event", what,
					      "item", item));
}

void api_log_line(struct api *a, const char *level, const char *line)
{
	if (!a)
		return;
	for (struct sub *s = a->subs; s; s = s->next)
		if (s->log && !sub_congested(s))
			sub_send(s, json_pack("{s:s,s:s,s:s}", "type", "log", "level", level,
					      "message", line));
}

static void on_tick(uv_timer_t *t)
{
	struct api *a = t->data;
	json_t *stats = NULL;
	for (struct sub *s = a->subs; s; s = s->next) {
		if (!s->stats || sub_congested(s))
			continue;
		if (!stats)
			stats = a->ops.stats(a->ops.ctx);
		sub_send(s, json_pack("{s:s,s:O}", "type", "stats", "stats", stats));
	}
	json_decref(stats);
	/* MCP sessions nobody used for a while. */
	uint64_t now = uv_now(a->loop);
	for (size_t i = 0; i < API_MCP_SESSIONS; i++) {
		if (a->mcp[i].s && now - a->mcp[i].last_used > API_MCP_IDLE_MS) {
			mcp_session_free(a->mcp[i].s);
			memset(&a->mcp[i], 0, sizeof(a->mcp[i]));
		}
	}
}

/* ---- MCP over streamable HTTP ------------------------------------------------------ */

/* An MCP tool's API request, made through the server itself: a connection
 * without a socket fed the request, with the token, so it takes the same
 * checks and routes as any client's. */
struct inproc {
	struct api *a;
	struct httpd_conn *conn;
	mcp_api_done done;
	void *arg;
	struct strbuf out; /* what the server sent */
	bool closed;
	uv_timer_t timer;
	/* The response, parsed once the connection closes. */
	char ctype[128];
	bool in_ctype;
	struct strbuf body;
	bool complete;
};

static void inproc_output(void *ctx)
{
	struct inproc *ip = ctx;
	uint8_t *buf;
	size_t n;
	while ((n = httpd_conn_take(ip->conn, &buf)) > 0) {
		strbuf_append(&ip->out, buf, n);
		httpd_conn_sent(ip->conn, buf, n);
	}
}

static void inproc_reading(void *ctx, bool on)
{
	(void)ctx;
	(void)on;
}

static void inproc_finish(uv_timer_t *t);

static void inproc_close(void *ctx)
{
	struct inproc *ip = ctx;
	if (ip->closed)
		return;
	ip->closed = true;
	uv_timer_start(&ip->timer, inproc_finish, 0, 0);
}

static void inproc_shutdown(void *ctx)
{
	inproc_output(ctx);
	inproc_close(ctx);
}

static const struct httpd_transport inproc_transport = {
	.output = inproc_output,
	.reading = inproc_reading,
	.shutdown = inproc_shutdown,
	.close = inproc_close,
};

static int ip_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct inproc *ip = p->data;
	ip->in_ctype = len == 12 && strncasecmp(at, "content-type", 12) == 0;
	return 0;
}

static int ip_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct inproc *ip = p->data;
	if (ip->in_ctype && len < sizeof(ip->ctype)) {
		memcpy(ip->ctype, at, len);
		ip->ctype[len] = '\0';
	}
	return 0;
}

static int ip_body(llhttp_t *p, const char *at, size_t len)
{
	struct inproc *ip = p->data;
	strbuf_append(&ip->body, at, len);
	return 0;
}

static int ip_complete(llhttp_t *p)
{
	struct inproc *ip = p->data;
	ip->complete = true;
	return HPE_PAUSED;
}

static void inproc_timer_closed(uv_handle_t *h)
{
	struct inproc *ip = h->data;
	strbuf_free(&ip->out);
	strbuf_free(&ip->body);
	free(ip);
}

static void inproc_finish(uv_timer_t *t)
{
	struct inproc *ip = t->data;
	inproc_output(ip);
	httpd_conn_free(ip->conn);
	ip->conn = NULL;
	llhttp_settings_t st;
	llhttp_settings_init(&st);
	st.on_header_field = ip_header_field;
	st.on_header_value = ip_header_value;
	st.on_body = ip_body;
	st.on_message_complete = ip_complete;
	llhttp_t parser;
	llhttp_init(&parser, HTTP_RESPONSE, &st);
	parser.data = ip;
	if (ip->out.len)
		(void)llhttp_execute(&parser, ip->out.p, ip->out.len);
	if (!ip->complete)
		(void)llhttp_finish(&parser);
	/* A response missing bytes we could not keep is no answer. */
	bool kept = !ip->out.err && !ip->body.err;
	struct mcp_api_reply r = { .status = ip->complete && kept ? parser.status_code : 0,
				   .ctype = ip->ctype[0] ? ip->ctype : NULL,
				   .body = (const uint8_t *)ip->body.p,
				   .len = ip->body.len,
				   .error = kept ? "the API gave no answer" : "out of memory" };
	ip->done(ip->arg, &r);
	uv_close((uv_handle_t *)&ip->timer, inproc_timer_closed);
}

static void inproc_request(void *ctx, const char *method, const char *target, const json_t *body,
			   mcp_api_done done, void *arg)
{
	struct api *a = ctx;
	struct mcp_api_reply fail = { .status = 0, .error = "out of memory" };
	struct inproc *ip = calloc(1, sizeof(*ip));
	char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
	if (!ip || (body && !payload)) {
		free(ip);
		free(payload);
		done(arg, &fail);
		return;
	}
	ip->a = a;
	ip->done = done;
	ip->arg = arg;
	strbuf_init(&ip->out, 0);
	strbuf_init(&ip->body, 0);
	uv_timer_init(a->loop, &ip->timer);
	ip->timer.data = ip;
	ip->conn = httpd_conn_new(a->httpd, &inproc_transport, ip, "mcp");
	if (!ip->conn) {
		free(payload);
		done(arg, &fail);
		uv_close((uv_handle_t *)&ip->timer, inproc_timer_closed);
		return;
	}
	size_t plen = payload ? strlen(payload) : 0;
	char head[9000];
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nAuthorization: Bearer %s\r\n"
			 "Connection: close\r\nContent-Length: %zu\r\n%s\r\n",
			 method, target, httpd_port(a->httpd), auth_token(a->auth), plen,
			 payload ? "Content-Type: application/json\r\n" : "");
	if (n > 0 && (size_t)n < sizeof(head)) {
		httpd_conn_feed(ip->conn, (const uint8_t *)head, (size_t)n);
		if (plen)
			httpd_conn_feed(ip->conn, (const uint8_t *)payload, plen);
	}
	free(payload);
	httpd_conn_eof(ip->conn);
}

struct mcp_call {
	struct api *a;
	struct httpd_resp *resp;
	struct mcp_session *ephemeral; /* freed after the answer */
	char session_id[33];
};

static void mcp_answered(void *arg, json_t *answer)
{
	struct mcp_call *c = arg;
	if (c->session_id[0])
		httpd_resp_header(c->resp, "Mcp-Session-Id", c->session_id);
	if (!answer)
		httpd_reply(c->resp, 202, NULL, NULL, 0);
	else
		httpd_reply_json(c->resp, 200, answer);
	mcp_session_free(c->ephemeral);
	free(c);
}

static struct mcp_http *mcp_find(struct api *a, const char *id)
{
	for (size_t i = 0; i < API_MCP_SESSIONS; i++)
		if (a->mcp[i].s && strcmp(a->mcp[i].id, id) == 0)
			return &a->mcp[i];
	return NULL;
}

/* A new session in a free slot, or in place of the least recently used. */
static struct mcp_http *mcp_open(struct api *a)
{
	struct mcp_http *slot = &a->mcp[0];
	for (size_t i = 0; i < API_MCP_SESSIONS; i++) {
		if (!a->mcp[i].s) {
			slot = &a->mcp[i];
			break;
		}
		if (a->mcp[i].last_used < slot->last_used)
			slot = &a->mcp[i];
	}
	if (slot->s)
		mcp_session_free(slot->s);
	struct mcp_backend be = { .request = inproc_request, .ctx = a };
	slot->s = mcp_session_new(&be);
	if (!slot->s)
		return NULL;
	uint8_t rnd[16];
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(slot->id, sizeof(slot->id), rnd, sizeof(rnd));
	return slot;
}

static void h_mcp_post(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *ver = httpd_req_header(req, "MCP-Protocol-Version");
	if (ver && !mcp_version_known(ver)) {
		httpd_reply_error(resp, 400,
				  "MCP-Protocol-Version %s is not one this server speaks "
				  "(2025-06-18, 2025-11-25)",
				  ver);
		return;
	}
	size_t len;
	const uint8_t *body = httpd_req_body(req, &len);
	struct mcp_call *c = calloc(1, sizeof(*c));
	if (!c) {
		httpd_reply_error(resp, 500, "out of memory");
		return;
	}
	c->a = a;
	c->resp = resp;
	struct mcp_session *s;
	const char *sid = httpd_req_header(req, "Mcp-Session-Id");
	if (sid) {
		struct mcp_http *m = mcp_find(a, sid);
		if (!m) {
			free(c);
			httpd_reply_error(resp, 404, "no MCP session %s: initialize again", sid);
			return;
		}
		m->last_used = uv_now(a->loop);
		s = m->s;
	} else if (len && strstr((const char *)body, "\"initialize\"")) {
		struct mcp_http *m = mcp_open(a);
		if (!m) {
			free(c);
			httpd_reply_error(resp, 500, "out of memory");
			return;
		}
		m->last_used = uv_now(a->loop);
		snprintf(c->session_id, sizeof(c->session_id), "%s", m->id);
		s = m->s;
	} else {
		/* No session: answered on its own (stateless clients). */
		struct mcp_backend be = { .request = inproc_request, .ctx = a };
		s = c->ephemeral = mcp_session_new(&be);
		if (!s) {
			free(c);
			httpd_reply_error(resp, 500, "out of memory");
			return;
		}
	}
	mcp_session_handle(s, (const char *)body, len, mcp_answered, c);
}

static void h_mcp_delete(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct api *a = api_of(arg);
	const char *sid = httpd_req_header(req, "Mcp-Session-Id");
	struct mcp_http *m = sid ? mcp_find(a, sid) : NULL;
	if (!m) {
		httpd_reply_error(resp, 404, "no such MCP session");
		return;
	}
	mcp_session_free(m->s);
	memset(m, 0, sizeof(*m));
	httpd_reply(resp, 204, NULL, NULL, 0);
}

static void h_mcp_get(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	(void)req;
	(void)arg;
	httpd_resp_header(resp, "Allow", "POST, DELETE");
	httpd_reply_error(resp, 405, "this MCP server sends no stream of its own: POST messages");
}

static void h_index(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	(void)req;
	(void)arg;
	httpd_reply_json(resp, 200,
			 json_pack("{s:s,s:s,s:s}", "name", "wgmitm control API", "version",
				   WGMITM_VERSION, "docs", "docs/api.md"));
}

/* ---- Setup ------------------------------------------------------------------------ */

struct route {
	const char *method, *pattern;
	httpd_handler fn;
};

static const struct route routes[] = {
	{ "GET", "/api", h_index },
	{ "GET", "/api/status", h_status },
	{ "GET", "/api/stats", h_stats },
	{ "GET", "/api/ca", h_ca },
	{ "GET", "/api/ca.pem", h_ca },
	{ "GET", "/api/config", h_config_get },
	{ "POST", "/api/config/start", h_config_start },
	{ "POST", "/api/config/configure", h_config_configure },
	{ "PATCH", "/api/config", h_config_configure },
	{ "GET", "/api/peers", h_peers },
	{ "POST", "/api/peers", h_peer_add },
	{ "DELETE", "/api/peers/{name}", h_peer_remove },
	{ "GET", "/api/peers/{name}/{file}", h_peer_file },
	{ "GET", "/api/flows", h_flows },
	{ "DELETE", "/api/flows", h_flows_clear },
	{ "GET", "/api/flows/{id}", h_flow },
	{ "GET", "/api/flows/{id}/{part}/body", h_flow_body },
	{ "POST", "/api/flows/{id}/replay", h_flow_replay },
	{ "GET", "/api/har", h_har },
	{ "GET", "/api/usage", h_usage },
	{ "GET", "/api/held", h_held },
	{ "GET", "/api/held/{id}", h_held_one },
	{ "POST", "/api/held/{id}/release", h_held_release },
	{ "POST", "/api/held/{id}/kill", h_held_kill },
	{ "GET", "/api/rules", h_rules },
	{ "POST", "/api/rules", h_rule_add },
	{ "GET", "/api/rules/{id}", h_rule_get },
	{ "PATCH", "/api/rules/{id}", h_rule_patch },
	{ "DELETE", "/api/rules/{id}", h_rule_delete },
	{ "POST", "/mcp", h_mcp_post },
	{ "GET", "/mcp", h_mcp_get },
	{ "DELETE", "/mcp", h_mcp_delete },
};

static int write_info(struct api *a)
{
	char text[512];
	int n = snprintf(text, sizeof(text), "{\"address\": \"%s\", \"port\": %u, \"pid\": %ld}\n",
			 strcmp(httpd_host(a->httpd), "0.0.0.0") == 0 ? "127.0.0.1"
			 : strcmp(httpd_host(a->httpd), "::") == 0    ? "::1"
								      : httpd_host(a->httpd),
			 httpd_port(a->httpd), (long)getpid());
	return atomicfile_write(a->info_path, text, (size_t)n, 0600);
}

struct api *api_new(uv_loop_t *loop, const struct api_config *cfg, char *err, size_t errlen)
{
	struct api *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->loop = loop;
	a->ops = *cfg->ops;
	a->checks = cfg->checks;
	snprintf(a->home, sizeof(a->home), "%s", cfg->home);
	snprintf(a->info_path, sizeof(a->info_path), "%s/%s", cfg->home, API_INFO_FILE);
	a->store_path = cfg->store_path ? strdup(cfg->store_path) : NULL;
	uv_timer_init(loop, &a->tick);
	a->tick.data = a;
	a->auth = auth_new(cfg->home);
	struct httpd_config hc = { .host = cfg->host, .port = cfg->port };
	a->httpd = a->auth ? httpd_new(loop, &hc) : NULL;
	if (!a->auth || !a->httpd) {
		snprintf(err, errlen, "cannot start the control API: %s",
			 a->auth ? strerror(errno) : "the token file (see above)");
		api_free(a);
		return NULL;
	}
	int rc = auth_attach(a->auth, a->httpd);
	if (rc == 0)
		rc = webui_attach(a->httpd);
	for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
		rc = httpd_route(a->httpd, routes[i].method, routes[i].pattern, routes[i].fn, a);
	if (rc == 0)
		rc = httpd_route_ws(a->httpd, "/api/events", &events_handler, a);
	if (rc == 0 && (rc = httpd_listen(a->httpd)) < 0) {
		snprintf(err, errlen, "control API on %s:%u: %s",
			 cfg->host ? cfg->host : "127.0.0.1", cfg->port, strerror(-rc));
		api_free(a);
		return NULL;
	}
	if (rc < 0) {
		snprintf(err, errlen, "cannot set up the control API: %s", strerror(-rc));
		api_free(a);
		return NULL;
	}
	if ((rc = write_info(a)) < 0)
		log_warn("%s: %s (wgmitm mcp will not find the API)", a->info_path, strerror(-rc));
	uv_timer_start(&a->tick, on_tick, 1000, 1000);
	uv_unref((uv_handle_t *)&a->tick);
	return a;
}

uint16_t api_port(const struct api *a)
{
	return httpd_port(a->httpd);
}

void api_login_url(const struct api *a, char *out, size_t outlen)
{
	if (auth_login_url(a->auth, a->httpd, out, outlen) < 0 && outlen)
		out[0] = '\0';
}

static void api_release(uv_handle_t *h)
{
	struct api *a = h->data;
	auth_free(a->auth);
	free(a->store_path);
	free(a);
}

void api_free(struct api *a)
{
	if (!a)
		return;
	if (a->httpd)
		unlink(a->info_path);
	for (size_t i = 0; i < API_MCP_SESSIONS; i++)
		mcp_session_free(a->mcp[i].s);
	memset(a->mcp, 0, sizeof(a->mcp));
	httpd_free(a->httpd); /* subscribers get on_close */
	a->httpd = NULL;
	uv_close((uv_handle_t *)&a->tick, api_release);
}
