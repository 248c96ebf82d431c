/* MCP: JSON-RPC 2.0 sessions whose tools are control API requests. */
#include "control/mcp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define RPC_PARSE_ERROR -32700
#define RPC_INVALID_REQUEST -32600
#define RPC_METHOD_NOT_FOUND -32601
#define RPC_INVALID_PARAMS -32602

static const char *const versions[] = { "2025-11-25", "2025-06-18", NULL };

struct mcp_session {
	struct mcp_backend be;
	const char *version; /* agreed; NULL before initialize */
};

bool mcp_version_known(const char *v)
{
	for (size_t i = 0; v && versions[i]; i++)
		if (strcmp(v, versions[i]) == 0)
			return true;
	return false;
}

struct mcp_session *mcp_session_new(const struct mcp_backend *be)
{
	struct mcp_session *s = calloc(1, sizeof(*s));
	if (s)
		s->be = *be;
	return s;
}

void mcp_session_free(struct mcp_session *s)
{
	free(s);
}

const char *mcp_session_version(const struct mcp_session *s)
{
	return s->version;
}

/* ---- The tools ------------------------------------------------------------ */

#define PROPS(...) "{\"type\":\"object\",\"properties\":{" __VA_ARGS__ "}"
#define STR(name, desc) "\"" name "\":{\"type\":\"string\",\"description\":\"" desc "\"}"
#define INT(name, desc, lo, hi)                                                                    \
	"\"" name "\":{\"type\":\"integer\",\"minimum\":" #lo ",\"maximum\":" #hi                  \
	",\"description\":\"" desc "\"}"

struct tool {
	const char *name, *title, *description, *schema;
};

static const struct tool tools[] = {
	{ "status", "Endpoint status",
	  "What the capture endpoint is doing: version, uptime, its WireGuard listen address, "
	  "peers, flows stored, the control API address and the counters. Call it first to "
	  "check that `wgmitm run` is up.",
	  PROPS() "}" },
	{ "list_flows", "List captured flows",
	  "Recorded flows, newest first, one outline each (id, time, peer, type, method, "
	  "status, URL, size, duration, TLS outcome). `filter` is a mitmproxy-style filter "
	  "expression: ~d host, ~u url-regex, ~m method, ~c status, ~h/~hq/~hs header, "
	  "~b/~bq/~bs body, ~t content-type, ~tcp, ~udp, ~dns, ~websocket, ~e (error), "
	  "~peer NAME, ~tls-rejected, ~passthrough, combined with !, &, | and parentheses; a "
	  "bare word matches the URL. Pages of `limit` (default 50); pass `next_cursor` back "
	  "as `cursor` for the next page. Read one flow with get_flow.",
	  PROPS(STR("filter", "filter expression; empty: every flow") "," INT(
		  "limit", "flows per page", 1,
		  200) "," STR("cursor", "next_cursor of the previous page")) "}" },
	{ "search_flows", "Search flows for text",
	  "Flows whose URL (and, if asked, headers or bodies) contain `text`, newest first, "
	  "case-insensitive. The same outlines and paging as list_flows; use list_flows for "
	  "structured filters.",
	  PROPS(STR("text",
		    "the text to find, taken literally") ","
							 "\"in\":{\"type\":\"array\",\"items\":{"
							 "\"enum\":[\"url\",\"headers\",\"body\"]},"
							 "\"description\":\"where to look; default "
							 "[\\\"url\\\"]\"}," INT(
								 "limit", "flows per page", 1,
								 200) "," STR("cursor",
									      "next_cursor of "
									      "the previous "
									      "page")) ",\"requi"
										       "red\":["
										       "\"text\""
										       "]}" },
	{ "get_flow", "One flow",
	  "One recorded flow by id: for an HTTP exchange its method, URL, request and "
	  "response headers, status, timings, both TLS legs, and each body as an outline "
	  "(size, whether it was cut, content type, the first 512 characters when it is "
	  "text). Read a whole body with get_body.",
	  PROPS(STR("id", "the flow id, as list_flows gives it")) ",\"required\":[\"id\"]}" },
	{ "get_body", "A body of a flow",
	  "The request or response body of an HTTP flow, by byte range (`offset`, `length`, "
	  "at most 65536 bytes a call), decoded from its Content-Encoding (gzip, deflate, br, "
	  "zstd) unless `raw` is true. Text comes as text, other bytes as base64. The answer "
	  "says the total size, so you can ask for the next range.",
	  PROPS(STR("id",
		    "the flow id") ","
				   "\"part\":{\"enum\":[\"request\",\"response\"],\"description\":"
				   "\"which body\"}," INT(
					   "offset", "first byte", 0,
					   2147483647) "," INT("length",
							       "bytes to read, default 16384", 1,
							       65536) ","
								      "\"raw\":{\"type\":"
								      "\"boolean\",\"description\":"
								      "\"as recorded, not "
								      "decoded\"}") ",\"required\":"
										    "[\"id\","
										    "\"part\"]}" },
	{ "list_peers", "List devices",
	  "The WireGuard peers (phones, tablets, ...) with their tunnel addresses, last "
	  "handshake, endpoint, bytes each way and flow count.",
	  PROPS() "}" },
	{ "add_peer", "Add a device",
	  "Creates a peer and returns its WireGuard configuration and a QR code image to scan "
	  "with the official WireGuard app (+ > Scan from QR code). Optional: allowed_ips for "
	  "split tunnelling, apps or exclude_apps (Android package names).",
	  PROPS(STR("name", "a name: letters, digits, - and _") "," STR(
		  "allowed_ips", "what the device routes "
				 "through the tunnel; default "
				 "all") ","
					"\"apps\":{\"type\":"
					"\"array\",\"items\":{"
					"\"type\":\"string\"},"
					"\"description\":"
					"\"Android: only "
					"these apps use the "
					"tunnel\"},"
					"\"exclude_apps\":{"
					"\"type\":\"array\","
					"\"items\":{\"type\":"
					"\"string\"},"
					"\"description\":"
					"\"Android: these "
					"apps bypass the "
					"tunnel\"}") ",\"requi"
						     "red\":["
						     "\"name\""
						     "]}" },
	{ "remove_peer", "Remove a device",
	  "Removes a peer by name; its device can no longer connect. Its recorded flows stay.",
	  PROPS(STR("name", "the peer's name")) ",\"required\":[\"name\"]}" },
	{ "get_config", "Read the configuration",
	  "The whole configuration in force: capture_scope, tls_passthrough, "
	  "auto_passthrough_s, intercept_tls, upstream_ca, upstream_insecure_skip_verify, "
	  "body_cap, quic, dns_upstreams, allow_host_ports, max_connections, "
	  "max_connections_per_peer and the timeouts.",
	  PROPS() "}" },
	{ "start", "Reset the configuration",
	  "RESETS the whole configuration to `config`: every field it omits goes back to its "
	  "default (capture_scope to capture everything, tls_passthrough to empty, ...). Use "
	  "it once to set up a session; to change one thing later use configure, which keeps "
	  "everything else.",
	  PROPS("\"config\":{\"type\":\"object\",\"description\":\"the whole configuration "
		"(fields as get_config shows)\"}") "}" },
	{ "configure", "Change part of the configuration",
	  "Changes only the fields given and keeps the rest. With operation \"merge\" (the "
	  "default) a list is replaced by an array or edited with {\"add\": [...], "
	  "\"remove\": [...]}, e.g. {\"tls_passthrough\": {\"add\": [\"*.example.com\"]}} or "
	  "{\"capture_scope\": {\"excludes\": {\"add\": [\"~d telemetry\"]}}}; with "
	  "\"replace\" each field given is replaced whole. A bad value is refused with the "
	  "field named and nothing changes. Changes apply to new connections at once and "
	  "survive a restart.",
	  PROPS("\"operation\":{\"enum\":[\"merge\",\"replace\"]}") ",\"additionalProperties\":"
								    "true}" },
	{ "export_har", "Export flows as HAR",
	  "The HTTP flows matching `filter` (newest first, at most `limit`, default 100) as a "
	  "HAR 1.2 document, as Chrome DevTools imports it. Large exports are cut at 64 KiB of "
	  "text; narrow the filter or use the API's /api/har for the whole capture.",
	  PROPS(STR("filter", "filter expression; empty: every HTTP flow") "," INT(
		  "limit", "flows at most", 1, 1000)) "}" },
	{ "traffic_usage", "Traffic per device, user, host or way in",
	  "Accounting from the store: for each device (`by` device), proxy user, host or way "
	  "in (wireguard, http-proxy, socks5, reverse, forward, wrap), the connections, the "
	  "HTTP exchanges and the bytes each way, biggest first. `filter` narrows the flows "
	  "counted (the list_flows syntax, e.g. ~via socks5 or ~d example.com).",
	  PROPS("\"by\":{\"enum\":[\"device\",\"user\",\"host\",\"via\"]}," STR(
		  "filter", "filter expression; empty: every flow") "," INT("limit",
									    "groups at most", 1,
									    1000)) ",\"required\":["
										   "\"by\"]}" },
	{ "clear_flows", "Delete recorded flows",
	  "Deletes every recorded flow from the store, to start a capture afresh. The flows "
	  "file on disk keeps its lines, and a rebuild does not bring them back. Cannot be "
	  "undone.",
	  PROPS() "}" },
	{ "resend", "Resend a recorded request",
	  "Resends a recorded HTTP request (the flow `id`) to its server, as it was or edited: "
	  "`method`, `url` (absolute; another host is allowed where a device could go), "
	  "`headers` ({\"Name\": \"value\"} sets, {\"Name\": null} removes), `body` (text) "
	  "or `body_base64`. Waits for the response (20 s at most, or `timeout_ms`), over "
	  "HTTP/1.1 with the "
	  "endpoint's upstream TLS settings, and records it as a new flow whose replay_of is "
	  "`id`. Answers the new flow's id, status and outline (read it with get_flow). A "
	  "failure (refused, TLS, timeout) is recorded on the new flow too and returned as an "
	  "error.",
	  PROPS(STR("id", "the flow to resend, as list_flows gives it") "," STR(
		  "method",
		  "anothe"
		  "r "
		  "metho"
		  "d") "," STR("url",
			       "another absolute URL") ","
						       "\"headers\":{\"type\":\"object\","
						       "\"additionalProperties\":{\"type\":"
						       "[\"string\",\"null\"]},\"description\":"
						       "\"headers to set (string) or remove "
						       "(null)\"}," STR(
							       "body",
							       "the body to send, as "
							       "text") "," STR("body_base64",
									       "the body to send, "
									       "base64") "," INT("t"
												 "i"
												 "m"
												 "e"
												 "o"
												 "u"
												 "t"
												 "_"
												 "m"
												 "s",
												 "h"
												 "o"
												 "w"
												 " "
												 "l"
												 "o"
												 "n"
												 "g"
												 " "
												 "t"
												 "h"
												 "e"
												 " "
												 "r"
												 "e"
												 "p"
												 "l"
												 "a"
												 "y"
												 " "
												 "m"
												 "a"
												 "y"
												 " "
												 "t"
												 "a"
												 "k"
												 "e"
												 ","
												 " "
												 "i"
												 "n"
												 " "
												 "m"
												 "s",
												 100,
												 600000)) ",\"requi"
													  "red\":"
													  "[\"id\"]"
													  "}" },
	{ "list_rules", "List interception rules",
	  "Every interception rule in force (docs/rules.md), in order, with its source: "
	  "\"config\" (edited with add_rule and remove_rule), \"file\" (HOME/rules.json) or "
	  "\"options\" (run's command line).",
	  PROPS() "}" },
	{ "add_rule", "Add an interception rule",
	  "Adds one rule to the configuration (replacing the configuration's rule of the same "
	  "id): {\"id\", \"match\" (a filter expression), \"direction\" (request, response, "
	  "both), \"conditions\", \"device\", \"actions\": [{\"type\": \"set_header\", "
	  "\"name\", \"value\"}, {\"type\": \"mock\", \"status\", \"body\"}, {\"type\": "
	  "\"block\", \"status\"}, {\"type\": \"redirect\", ...}, {\"type\": "
	  "\"breakpoint\"}, ...]}. A rule without actions is a breakpoint: matching requests "
	  "(or responses, with direction response) are held until released (list_held). A bad "
	  "rule is refused with the field named; the running rules stay.",
	  PROPS("\"rule\":{\"type\":\"object\",\"description\":\"the rule object\"}") ",\"req"
										      "uired\":"
										      "[\"rule\"]"
										      "}" },
	{ "remove_rule", "Remove an interception rule",
	  "Removes the configuration's rule with this id (rules from HOME/rules.json or run's "
	  "options are edited there).",
	  PROPS(STR("id", "the rule's id")) ",\"required\":[\"id\"]}" },
	{ "list_held", "List held messages",
	  "What breakpoints hold now: requests not yet sent upstream and responses not yet sent "
	  "to the device, each with its id, phase, method, URL, status, headers, a body preview, "
	  "the rule and its deadline (it is released as it is then); WebSocket messages "
	  "(proto websocket) with their text. Release or kill each.",
	  PROPS() "}" },
	{ "release", "Release a held message",
	  "Lets a held message go on, as it is or edited: `edits` may set method and path (a "
	  "request), status (a response), headers ([[name, value], ...] replaces all), "
	  "set_headers ({name: value}), remove_headers ([names]) and body (text) or "
	  "body_base64; Content-Length follows a new body. A WebSocket message takes only body "
	  "or body_base64, its new content.",
	  PROPS(INT("id", "the held item's id", 1,
		    9007199254740991) ",\"edits\":{\"type\":"
				      "\"object\",\"descripti"
				      "on\":\"what to "
				      "change\"}") ",\"requi"
						   "red\":[\"id\"]}" },
	{ "kill", "Kill a held message",
	  "Ends a held message's connection with a reset: the request never reaches the "
	  "server, or the response never reaches the device.",
	  PROPS(INT("id", "the held item's id", 1, 9007199254740991)) ",\"required\":[\"id\"]}" },
};

#define NTOOLS (sizeof(tools) / sizeof(tools[0]))

json_t *mcp_tools_json(void)
{
	json_t *a = json_array();
	for (size_t i = 0; i < NTOOLS; i++) {
		json_error_t e;
		json_t *schema = json_loads(tools[i].schema, 0, &e);
		if (!schema) {
			fprintf(stderr, "mcp: tool %s: bad schema: %s\n", tools[i].name, e.text);
			abort(); /* a programming error, caught by the unit test */
		}
		json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:o}", "name", tools[i].name,
						   "title", tools[i].title, "description",
						   tools[i].description, "inputSchema", schema));
	}
	return a;
}

/* ---- JSON-RPC --------------------------------------------------------------- */

static json_t *rpc_result(const json_t *id, json_t *result)
{
	return json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result", result);
}

static json_t *rpc_error(const json_t *id, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static json_t *rpc_error(const json_t *id, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_t *nullid = json_null();
	json_t *r = json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id ? id : nullid,
			      "error", "code", code, "message", msg);
	json_decref(nullid);
	return r;
}

/* A tool's answer: text (and structured JSON when there is some). */
static json_t *tool_text(const char *text, json_t *structured, bool is_error)
{
	json_t *content = json_array();
	json_array_append_new(content, json_pack("{s:s,s:s}", "type", "text", "text", text));
	json_t *r = json_pack("{s:o,s:b}", "content", content, "isError", is_error);
	if (structured)
		json_object_set_new(r, "structuredContent", structured);
	return r;
}

/* ---- One call in flight ------------------------------------------------------ */

struct call {
	struct mcp_session *s;
	json_t *id;
	const struct tool *tool;
	json_t *args;
	mcp_reply_fn reply;
	void *arg;
	int step;     /* add_peer: 0 the peer, 1 its QR code */
	json_t *keep; /* add_peer: the first answer */
};

static void call_done(struct call *c, json_t *result)
{
	json_t *answer = rpc_result(c->id, result);
	mcp_reply_fn reply = c->reply;
	void *arg = c->arg;
	json_decref(c->id);
	json_decref(c->args);
	json_decref(c->keep);
	free(c);
	reply(arg, answer);
}

static const char *arg_str(const json_t *args, const char *k)
{
	return json_string_value(json_object_get(args, k));
}

static json_int_t arg_int(const json_t *args, const char *k, json_int_t def, json_int_t lo,
			  json_int_t hi)
{
	const json_t *v = json_object_get(args, k);
	if (!json_is_integer(v))
		return def;
	json_int_t n = json_integer_value(v);
	return n < lo ? lo : n > hi ? hi : n;
}

/* Appends `s` percent-encoded (RFC 3986 unreserved kept). */
static void put_escaped(char *out, size_t cap, const char *s)
{
	size_t n = strlen(out);
	static const char hex[] = "0123456789ABCDEF";
	for (; *s && n + 4 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			out[n++] = (char)c;
		} else {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		}
	}
	out[n] = '\0';
}

static void put_param(char *out, size_t cap, const char *name, const char *value)
{
	if (!value || !*value)
		return;
	size_t n = strlen(out);
	snprintf(out + n, cap - n, "%s%s=", strchr(out, '?') ? "&" : "?", name);
	put_escaped(out, cap, value);
}

static void put_int(char *out, size_t cap, const char *name, json_int_t v)
{
	char b[32];
	snprintf(b, sizeof(b), "%lld", (long long)v);
	put_param(out, cap, name, b);
}

/* `text` as a filter argument matching it literally: a quoted regex with
 * every metacharacter escaped. */
static void literal_filter(char *out, size_t cap, const char *op, const char *text)
{
	size_t n = strlen(out);
	n += (size_t)snprintf(out + n, cap - n, "%s%s \"", n ? " | " : "", op);
	for (; *text && n + 6 < cap; text++) {
		if (strchr(".^$|()[]{}*+?\\/", *text)) {
			out[n++] = '\\';
			out[n++] = '\\';
		} else if (*text == '"') {
			out[n++] = '\\';
		}
		out[n++] = *text;
	}
	if (n + 2 < cap)
		out[n++] = '"';
	out[n] = '\0';
}

static void backend_call(struct call *c, const char *method, const char *target,
			 const json_t *body);

/* The API's error message, or a default. */
static void api_error_text(const struct mcp_api_reply *r, char *out, size_t cap)
{
	if (r->status == 0) {
		snprintf(out, cap, "the wgmitm endpoint is not reachable: %s",
			 r->error ? r->error : "no answer; is `wgmitm run` running?");
		return;
	}
	json_t *j = json_loadb((const char *)r->body, r->len, 0, NULL);
	const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	const char *f = json_string_value(json_object_get(json_object_get(j, "error"), "field"));
	if (m)
		snprintf(out, cap, "%s%s%s (HTTP %d)", f ? f : "", f ? ": " : "", m, r->status);
	else
		snprintf(out, cap, "the API answered HTTP %d", r->status);
	json_decref(j);
}

/* Text no longer than MCP_MAX_TEXT, cut at a character boundary. */
static json_t *bounded_text_result(const char *text, size_t len, json_t *structured)
{
	if (len <= MCP_MAX_TEXT)
		return tool_text(text, structured, false);
	size_t cut = MCP_MAX_TEXT;
	while (cut > 0 && ((unsigned char)text[cut] & 0xc0) == 0x80)
		cut--;
	char *t = malloc(cut + 128);
	if (!t)
		return tool_text("out of memory", NULL, true);
	memcpy(t, text, cut);
	snprintf(t + cut, 128, "\n[cut at %u KiB of %zu bytes: ask for less]", MCP_MAX_TEXT / 1024,
		 len);
	json_t *r = tool_text(t, NULL, false);
	free(t);
	json_decref(structured);
	return r;
}

static void outline_body(json_t *msg)
{
	json_t *body = json_object_get(msg, "body");
	if (!json_is_object(body))
		return;
	json_t *o = json_object();
	json_object_set(o, "size", json_object_get(body, "size"));
	json_object_set(o, "truncated", json_object_get(body, "truncated"));
	const char *text = json_string_value(json_object_get(body, "text"));
	if (text) {
		size_t n = strlen(text), keep = n > 512 ? 512 : n;
		while (keep < n && keep > 0 && ((unsigned char)text[keep] & 0xc0) == 0x80)
			keep--;
		json_object_set_new(o, "preview", json_stringn(text, keep));
		json_object_set_new(o, "preview_complete", json_boolean(keep == n));
	} else if (json_object_get(body, "base64")) {
		json_object_set_new(o, "binary", json_true());
	}
	json_object_set_new(msg, "body", o);
}

/* Bodies and WebSocket messages reduced to outlines. */
static void outline_flow(json_t *rec)
{
	outline_body(json_object_get(rec, "request"));
	outline_body(json_object_get(rec, "response"));
	json_t *msgs = json_object_get(rec, "messages");
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m) outline_body(m);
	for (const char *k = "first_up"; k; k = strcmp(k, "first_up") == 0 ? "first_down" : NULL) {
		json_t *wrap = json_pack("{s:O}", "body", json_object_get(rec, k));
		if (json_object_get(rec, k)) {
			outline_body(wrap);
			json_object_set(rec, k, json_object_get(wrap, "body"));
		}
		json_decref(wrap);
	}
}

/* A list page as text lines (and the page as structured content). */
static json_t *flows_result(json_t *page)
{
	json_t *flows = json_object_get(page, "flows");
	size_t cap = 256 + json_array_size(flows) * 256, n = 0;
	char *t = malloc(cap);
	if (!t) {
		json_decref(page);
		return tool_text("out of memory", NULL, true);
	}
	n += (size_t)snprintf(t + n, cap - n, "%zu flow%s", json_array_size(flows),
			      json_array_size(flows) == 1 ? "" : "s");
	const char *next = json_string_value(json_object_get(page, "next_cursor"));
	n += (size_t)snprintf(t + n, cap - n, next ? " (more: cursor %s)\n" : "\n",
			      next ? next : "");
	size_t i;
	json_t *f;
	json_array_foreach(flows, i, f)
	{
		const char *url = json_string_value(json_object_get(f, "url"));
		const char *host = json_string_value(json_object_get(f, "host"));
		json_int_t status = json_integer_value(json_object_get(f, "status"));
		char st[16] = "-";
		if (status)
			snprintf(st, sizeof(st), "%lld", (long long)status);
		int w = snprintf(t + n, cap - n, "%s  %s  %s  %s %s  %s  %lldB\n",
				 json_string_value(json_object_get(f, "id")) ?: "?",
				 json_string_value(json_object_get(f, "peer")) ?: "-",
				 json_string_value(json_object_get(f, "type")) ?: "?",
				 json_string_value(json_object_get(f, "method")) ?: "", st,
				 url    ? url
				 : host ? host
					: "",
				 (long long)json_integer_value(json_object_get(f, "size")));
		if (w < 0 || (size_t)w >= cap - n)
			break;
		n += (size_t)w;
	}
	json_t *r = bounded_text_result(t, n, page);
	free(t);
	return r;
}

static void on_api(void *arg, const struct mcp_api_reply *r)
{
	struct call *c = arg;
	const char *name = c->tool->name;
	if (r->status < 200 || r->status > 299) {
		char msg[600];
		api_error_text(r, msg, sizeof(msg));
		call_done(c, tool_text(msg, NULL, true));
		return;
	}
	bool is_json = r->ctype && strncmp(r->ctype, "application/json", 16) == 0;
	json_t *j =
		is_json ? json_loadb((const char *)r->body, r->len, JSON_DECODE_ANY, NULL) : NULL;
	if (strcmp(name, "get_body") == 0) {
		json_decref(j);
		size_t off = (size_t)arg_int(c->args, "offset", 0, 0, INT32_MAX);
		size_t len = (size_t)arg_int(c->args, "length", 16384, 1, 65536);
		size_t total = r->len;
		if (off > total)
			off = total;
		if (len > total - off)
			len = total - off;
		const uint8_t *p = r->body + off;
		bool text = memchr(p, 0, len) == NULL;
		/* Valid UTF-8 whole, or cut only at the range's edges. */
		if (text) {
			json_t *probe = json_stringn((const char *)p, len);
			text = probe != NULL;
			json_decref(probe);
		}
		json_t *meta =
			json_pack("{s:I,s:I,s:I,s:s,s:s?}", "size", (json_int_t)total, "offset",
				  (json_int_t)off, "length", (json_int_t)len, "encoding",
				  text ? "text" : "base64", "content_type", r->ctype);
		char head[256];
		snprintf(head, sizeof(head), "bytes %zu-%zu of %zu%s%s%s\n", off,
			 len ? off + len - 1 : off, total, r->ctype ? " (" : "",
			 r->ctype ? r->ctype : "", r->ctype ? ")" : "");
		size_t b64 = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
		char *out = malloc(strlen(head) + (text ? len : b64) + 1);
		if (!out) {
			json_decref(meta);
			call_done(c, tool_text("out of memory", NULL, true));
			return;
		}
		strcpy(out, head);
		size_t hl = strlen(head);
		if (text) {
			memcpy(out + hl, p, len);
			out[hl + len] = '\0';
		} else {
			sodium_bin2base64(out + hl, b64, p, len, sodium_base64_VARIANT_ORIGINAL);
		}
		json_t *res = tool_text(out, meta, false);
		free(out);
		call_done(c, res);
		return;
	}
	if (strcmp(name, "add_peer") == 0 && c->step == 0) {
		if (!j) {
			call_done(c, tool_text("the API answered without JSON", NULL, true));
			return;
		}
		c->keep = j;
		c->step = 1;
		char target[256] = "/api/peers/";
		put_escaped(target, sizeof(target), arg_str(c->args, "name"));
		strncat(target, "/qr.png", sizeof(target) - strlen(target) - 1);
		backend_call(c, "GET", target, NULL);
		return;
	}
	if (strcmp(name, "add_peer") == 0) {
		const char *conf = json_string_value(json_object_get(c->keep, "config"));
		char msg[2048];
		snprintf(msg, sizeof(msg),
			 "Peer %s added. Scan the QR code with the WireGuard app (+ > Scan from QR "
			 "code), or import this configuration:\n\n%s",
			 arg_str(c->args, "name"), conf ? conf : "(no config in the answer)");
		json_t *res = tool_text(msg, json_incref(c->keep), false);
		if (r->ctype && strcmp(r->ctype, "image/png") == 0) {
			size_t b64 =
				sodium_base64_encoded_len(r->len, sodium_base64_VARIANT_ORIGINAL);
			char *d = malloc(b64);
			if (d) {
				sodium_bin2base64(d, b64, r->body, r->len,
						  sodium_base64_VARIANT_ORIGINAL);
				json_array_append_new(json_object_get(res, "content"),
						      json_pack("{s:s,s:s,s:s}", "type", "image",
								"data", d, "mimeType",
								"image/png"));
				free(d);
			}
		}
		json_decref(j);
		call_done(c, res);
		return;
	}
	if (!j && is_json) {
		call_done(c,
			  tool_text("the API answered with JSON that does not parse", NULL, true));
		return;
	}
	if (strcmp(name, "list_flows") == 0 || strcmp(name, "search_flows") == 0) {
		call_done(c, flows_result(j));
		return;
	}
	if (strcmp(name, "resend") == 0 && json_is_object(j)) {
		const json_t *flow = json_object_get(j, "flow");
		const char *error = json_string_value(json_object_get(j, "error"));
		json_int_t st = json_integer_value(json_object_get(j, "status"));
		char outcome[600];
		if (st)
			snprintf(outcome, sizeof(outcome), "%lld", (long long)st);
		else
			snprintf(outcome, sizeof(outcome), "%s: %s",
				 json_string_value(json_object_get(j, "end_reason")) ?: "error",
				 error ?: "no response");
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s %s %s -> %s; new flow %s (replay of %s)",
			 error ? "Resend failed:" : "Resent:",
			 json_string_value(json_object_get(flow, "method")) ?: "?",
			 json_string_value(json_object_get(flow, "url")) ?: "?", outcome,
			 json_string_value(json_object_get(j, "id")) ?: "?",
			 arg_str(c->args, "id") ?: "?");
		call_done(c, tool_text(msg, j, error != NULL));
		return;
	}
	if (strcmp(name, "get_flow") == 0)
		outline_flow(j);
	if (j) {
		char *text = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
		json_t *res = bounded_text_result(text ? text : "", text ? strlen(text) : 0,
						  json_is_object(j) ? j : NULL);
		if (!json_is_object(j))
			json_decref(j);
		free(text);
		call_done(c, res);
		return;
	}
	/* Not JSON (HAR is, but streamed as a download): text as it is. */
	call_done(c, bounded_text_result((const char *)r->body, r->len, NULL));
}

static void backend_call(struct call *c, const char *method, const char *target, const json_t *body)
{
	c->s->be.request(c->s->be.ctx, method, target, body, on_api, c);
}

/* tools/call: the request each tool makes. */
static void tool_call(struct call *c)
{
	const char *name = c->tool->name;
	const json_t *a = c->args;
	char t[8192];
	t[0] = '\0';
	if (strcmp(name, "status") == 0) {
		backend_call(c, "GET", "/api/status", NULL);
	} else if (strcmp(name, "list_flows") == 0 || strcmp(name, "search_flows") == 0) {
		strcpy(t, "/api/flows");
		if (strcmp(name, "search_flows") == 0) {
			char f[4096] = "";
			const char *text = arg_str(a, "text");
			const json_t *in = json_object_get(a, "in");
			size_t i;
			json_t *w;
			bool any = false;
			json_array_foreach(in, i, w)
			{
				const char *where = json_string_value(w);
				const char *op = !where                      ? NULL
						 : !strcmp(where, "url")     ? "~u"
						 : !strcmp(where, "headers") ? "~h"
						 : !strcmp(where, "body")    ? "~b"
									     : NULL;
				if (op) {
					literal_filter(f, sizeof(f), op, text);
					any = true;
				}
			}
			if (!any)
				literal_filter(f, sizeof(f), "~u", text);
			put_param(t, sizeof(t), "filter", f);
		} else {
			put_param(t, sizeof(t), "filter", arg_str(a, "filter"));
		}
		put_int(t, sizeof(t), "limit", arg_int(a, "limit", 50, 1, 200));
		put_param(t, sizeof(t), "cursor", arg_str(a, "cursor"));
		backend_call(c, "GET", t, NULL);
	} else if (strcmp(name, "get_flow") == 0 || strcmp(name, "get_body") == 0) {
		strcpy(t, "/api/flows/");
		put_escaped(t, sizeof(t), arg_str(a, "id"));
		if (strcmp(name, "get_body") == 0) {
			const char *part = arg_str(a, "part");
			strncat(t,
				part && strcmp(part, "request") == 0 ? "/request/body"
								     : "/response/body",
				sizeof(t) - strlen(t) - 1);
			if (!json_is_true(json_object_get(a, "raw")))
				put_param(t, sizeof(t), "decode", "1");
		}
		backend_call(c, "GET", t, NULL);
	} else if (strcmp(name, "list_peers") == 0) {
		backend_call(c, "GET", "/api/peers", NULL);
	} else if (strcmp(name, "add_peer") == 0) {
		backend_call(c, "POST", "/api/peers", a);
	} else if (strcmp(name, "remove_peer") == 0) {
		strcpy(t, "/api/peers/");
		put_escaped(t, sizeof(t), arg_str(a, "name"));
		backend_call(c, "DELETE", t, NULL);
	} else if (strcmp(name, "get_config") == 0) {
		backend_call(c, "GET", "/api/config", NULL);
	} else if (strcmp(name, "start") == 0) {
		json_t *cfg = json_object_get(a, "config");
		json_t *empty = json_object();
		backend_call(c, "POST", "/api/config/start", cfg ? cfg : empty);
		json_decref(empty);
	} else if (strcmp(name, "configure") == 0) {
		backend_call(c, "POST", "/api/config/configure", a);
	} else if (strcmp(name, "export_har") == 0) {
		strcpy(t, "/api/har");
		put_param(t, sizeof(t), "filter", arg_str(a, "filter"));
		put_int(t, sizeof(t), "limit", arg_int(a, "limit", 100, 1, 1000));
		backend_call(c, "GET", t, NULL);
	} else if (strcmp(name, "traffic_usage") == 0) {
		strcpy(t, "/api/usage");
		put_param(t, sizeof(t), "by", arg_str(a, "by"));
		put_param(t, sizeof(t), "filter", arg_str(a, "filter"));
		put_int(t, sizeof(t), "limit", arg_int(a, "limit", 100, 1, 1000));
		backend_call(c, "GET", t, NULL);
	} else if (strcmp(name, "resend") == 0) {
		strcpy(t, "/api/flows/");
		put_escaped(t, sizeof(t), arg_str(a, "id"));
		strncat(t, "/replay", sizeof(t) - strlen(t) - 1);
		json_t *edits = json_deep_copy(a);
		json_object_del(edits, "id");
		backend_call(c, "POST", t, edits);
		json_decref(edits);
	} else if (strcmp(name, "clear_flows") == 0) {
		backend_call(c, "DELETE", "/api/flows", NULL);
	} else if (strcmp(name, "list_rules") == 0) {
		backend_call(c, "GET", "/api/rules", NULL);
	} else if (strcmp(name, "add_rule") == 0) {
		backend_call(c, "POST", "/api/rules", json_object_get(a, "rule"));
	} else if (strcmp(name, "remove_rule") == 0) {
		strcpy(t, "/api/rules/");
		put_escaped(t, sizeof(t), arg_str(a, "id"));
		backend_call(c, "DELETE", t, NULL);
	} else if (strcmp(name, "list_held") == 0) {
		backend_call(c, "GET", "/api/held", NULL);
	} else if (strcmp(name, "release") == 0 || strcmp(name, "kill") == 0) {
		snprintf(t, sizeof(t), "/api/held/%lld/%s",
			 (long long)json_integer_value(json_object_get(a, "id")), name);
		json_t *e = json_object_get(a, "edits");
		json_t *empty = json_object();
		backend_call(c, "POST", t, strcmp(name, "release") == 0 && e ? e : empty);
		json_decref(empty);
	}
}

/* Required arguments present and of the right JSON type. */
static int check_args(const struct tool *t, const json_t *args, char *why, size_t n)
{
	json_t *schema = json_loads(t->schema, 0, NULL);
	int rc = 0;
	size_t i;
	json_t *req;
	json_array_foreach(json_object_get(schema, "required"), i, req)
	{
		if (!json_object_get(args, json_string_value(req))) {
			snprintf(why, n, "%s needs \"%s\"", t->name, json_string_value(req));
			rc = -1;
			break;
		}
	}
	const char *k;
	json_t *p;
	json_object_foreach(json_object_get(schema, "properties"), k, p)
	{
		const json_t *v = json_object_get(args, k);
		const char *type = json_string_value(json_object_get(p, "type"));
		if (rc || !v || !type)
			continue;
		bool ok = (!strcmp(type, "string") && json_is_string(v)) ||
			  (!strcmp(type, "integer") && json_is_integer(v)) ||
			  (!strcmp(type, "boolean") && json_is_boolean(v)) ||
			  (!strcmp(type, "array") && json_is_array(v)) ||
			  (!strcmp(type, "object") && json_is_object(v));
		if (!ok) {
			snprintf(why, n, "%s: \"%s\" must be of type %s", t->name, k, type);
			rc = -1;
		}
	}
	json_decref(schema);
	return rc;
}

/* ---- Dispatch ----------------------------------------------------------------- */

struct batch {
	json_t *answers;
	size_t pending;
	bool started;
	mcp_reply_fn reply;
	void *arg;
};

static void batch_maybe_done(struct batch *b)
{
	if (!b->started || b->pending)
		return;
	json_t *a = b->answers;
	mcp_reply_fn reply = b->reply;
	void *arg = b->arg;
	free(b);
	if (json_array_size(a) == 0) {
		json_decref(a);
		a = NULL;
	}
	reply(arg, a);
}

static void batch_one(void *arg, json_t *answer)
{
	struct batch *b = arg;
	if (answer)
		json_array_append_new(b->answers, answer);
	b->pending--;
	batch_maybe_done(b);
}

static void handle_one(struct mcp_session *s, json_t *msg, mcp_reply_fn reply, void *arg)
{
	const json_t *id = json_object_get(msg, "id");
	const char *method = json_string_value(json_object_get(msg, "method"));
	if (!json_is_object(msg) ||
	    strcmp(json_string_value(json_object_get(msg, "jsonrpc")) ?: "", "2.0") != 0 ||
	    (!method && !json_object_get(msg, "result") && !json_object_get(msg, "error")) ||
	    (id && !json_is_string(id) && !json_is_integer(id))) {
		reply(arg,
		      rpc_error(json_is_object(msg) && (json_is_string(id) || json_is_integer(id))
					? id
					: NULL,
				RPC_INVALID_REQUEST, "not a JSON-RPC 2.0 request"));
		return;
	}
	if (!method || !id) {
		/* A notification (initialized, cancelled, ...) or a response to
		 * a request we never sent: nothing to answer. */
		reply(arg, NULL);
		return;
	}
	const json_t *params = json_object_get(msg, "params");
	if (strcmp(method, "initialize") == 0) {
		const char *want = json_string_value(json_object_get(params, "protocolVersion"));
		s->version = versions[0];
		for (size_t i = 0; want && versions[i]; i++)
			if (strcmp(want, versions[i]) == 0)
				s->version = versions[i];
		reply(arg,
		      rpc_result(id,
				 json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s,s:s},s:s}",
					   "protocolVersion", s->version, "capabilities", "tools",
					   "listChanged", 0, "serverInfo", "name", "wgmitm",
					   "title", "wgmitm capture endpoint", "version",
					   WGMITM_VERSION, "instructions",
					   "wgmitm captures the traffic of devices (peers) "
					   "joined over WireGuard, decrypting TLS with its own "
					   "CA. Find flows with list_flows or search_flows, read "
					   "one with get_flow and its bodies with get_body. "
					   "Change settings with configure (merge); start "
					   "resets everything it does not name.")));
		return;
	}
	if (strcmp(method, "ping") == 0) {
		reply(arg, rpc_result(id, json_object()));
		return;
	}
	if (strcmp(method, "tools/list") == 0) {
		reply(arg, rpc_result(id, json_pack("{s:o}", "tools", mcp_tools_json())));
		return;
	}
	if (strcmp(method, "tools/call") == 0) {
		const char *name = json_string_value(json_object_get(params, "name"));
		const json_t *args = json_object_get(params, "arguments");
		const struct tool *t = NULL;
		for (size_t i = 0; name && i < NTOOLS; i++)
			if (strcmp(name, tools[i].name) == 0)
				t = &tools[i];
		if (!t) {
			reply(arg, rpc_error(id, RPC_INVALID_PARAMS, "unknown tool \"%s\"",
					     name ? name : "(none)"));
			return;
		}
		if (args && !json_is_object(args)) {
			reply(arg,
			      rpc_error(id, RPC_INVALID_PARAMS, "arguments must be an object"));
			return;
		}
		char why[256];
		json_t *empty = json_object();
		if (check_args(t, args ? args : empty, why, sizeof(why)) < 0) {
			json_decref(empty);
			/* Argument errors are tool errors the model can act on. */
			reply(arg, rpc_result(id, tool_text(why, NULL, true)));
			return;
		}
		struct call *c = calloc(1, sizeof(*c));
		if (!c) {
			json_decref(empty);
			reply(arg, rpc_error(id, -32603, "out of memory"));
			return;
		}
		c->s = s;
		c->id = json_incref((json_t *)id);
		c->tool = t;
		c->args = args ? json_incref((json_t *)args) : json_incref(empty);
		json_decref(empty);
		c->reply = reply;
		c->arg = arg;
		tool_call(c);
		return;
	}
	reply(arg, rpc_error(id, RPC_METHOD_NOT_FOUND, "no method \"%s\"", method));
}

void mcp_session_handle(struct mcp_session *s, const char *text, size_t len, mcp_reply_fn reply,
			void *arg)
{
	json_error_t e;
	json_t *msg = json_loadb(text, len, 0, &e);
	if (!msg) {
		reply(arg, rpc_error(NULL, RPC_PARSE_ERROR, "not JSON: %s", e.text));
		return;
	}
	if (!json_is_array(msg)) {
		handle_one(s, msg, reply, arg);
		json_decref(msg);
		return;
	}
	if (json_array_size(msg) == 0) {
		json_decref(msg);
		reply(arg, rpc_error(NULL, RPC_INVALID_REQUEST, "an empty batch"));
		return;
	}
	struct batch *b = calloc(1, sizeof(*b));
	if (!b) {
		json_decref(msg);
		reply(arg, rpc_error(NULL, -32603, "out of memory"));
		return;
	}
	b->answers = json_array();
	b->reply = reply;
	b->arg = arg;
	b->pending = json_array_size(msg);
	size_t i;
	json_t *m;
	json_array_foreach(msg, i, m) handle_one(s, m, batch_one, b);
	b->started = true;
	batch_maybe_done(b);
	json_decref(msg);
}
