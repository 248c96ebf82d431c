/* The MCP session against a recording backend: version negotiation, the
 * tools and their schemas, the API request each tool makes, bounded and
 * outlined answers, errors as JSON-RPC and tool errors require. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/mcp.h"

struct fake {
	char method[16], target[2048];
	json_t *body;
	int calls;
	/* The next answers, in order. */
	struct {
		int status;
		const char *ctype;
		const char *body;
		size_t len;
	} answers[16];
	int nanswers, next;
};

static void fake_request(void *ctx, const char *method, const char *target, const json_t *body,
			 mcp_api_done done, void *arg)
{
	struct fake *f = ctx;
	snprintf(f->method, sizeof(f->method), "%s", method);
	snprintf(f->target, sizeof(f->target), "%s", target);
	json_decref(f->body);
	f->body = body ? json_deep_copy(body) : NULL;
	f->calls++;
	struct mcp_api_reply r = { .status = 0, .error = "connection refused" };
	if (f->next < f->nanswers) {
		r.status = f->answers[f->next].status;
		r.ctype = f->answers[f->next].ctype;
		r.body = (const uint8_t *)f->answers[f->next].body;
		r.len = f->answers[f->next].len ? f->answers[f->next].len
						: strlen(f->answers[f->next].body);
		f->next++;
	}
	done(arg, &r);
}

static void answer(struct fake *f, int status, const char *ctype, const char *body)
{
	f->answers[f->nanswers].status = status;
	f->answers[f->nanswers].ctype = ctype;
	f->answers[f->nanswers].body = body;
	f->answers[f->nanswers].len = 0;
	f->nanswers++;
}

struct got {
	json_t *answer;
	int replies;
};

static void on_reply(void *arg, json_t *a)
{
	struct got *g = arg;
	g->replies++;
	json_decref(g->answer);
	g->answer = a;
}

/* Sends `text` ('-quoted JSON) and returns the answer (owned by g). */
static json_t *send_msg(struct mcp_session *s, struct got *g, const char *text)
{
	char *t = strdup(text);
	for (char *p = t; *p; p++)
		if (*p == '\'')
			*p = '"';
	int before = g->replies;
	mcp_session_handle(s, t, strlen(t), on_reply, g);
	free(t);
	assert_int_equal(g->replies, before + 1);
	return g->answer;
}

static json_t *call_tool(struct mcp_session *s, struct got *g, const char *name, const char *args)
{
	char msg[4096];
	snprintf(msg, sizeof(msg),
		 "{'jsonrpc':'2.0','id':7,'method':'tools/call','params':{'name':'%s',"
		 "'arguments':%s}}",
		 name, args);
	json_t *a = send_msg(s, g, msg);
	json_t *result = json_object_get(a, "result");
	if (!result) {
		char *d = json_dumps(a, 0);
		fail_msg("%s: %s", name, d);
	}
	return result;
}

static const char *first_text(const json_t *result)
{
	return json_string_value(
		json_object_get(json_array_get(json_object_get(result, "content"), 0), "text"));
}

static struct mcp_session *session(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	struct mcp_backend be = { .request = fake_request, .ctx = f };
	struct mcp_session *s = mcp_session_new(&be);
	assert_non_null(s);
	return s;
}

static void done(struct mcp_session *s, struct fake *f, struct got *g)
{
	mcp_session_free(s);
	json_decref(f->body);
	json_decref(g->answer);
}

static void test_initialize(void **ctx)
{
	(void)ctx;
	static const struct {
		const char *asked, *got;
	} cases[] = {
		{ "2025-11-25", "2025-11-25" },
		{ "2025-06-18", "2025-06-18" },
		{ "2024-11-05", MCP_LATEST }, /* older: ours, the client decides */
		{ "2099-01-01", MCP_LATEST }, /* newer than us */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake f;
		struct got g = { 0 };
		struct mcp_session *s = session(&f);
		assert_null(mcp_session_version(s));
		char msg[512];
		snprintf(msg, sizeof(msg),
			 "{'jsonrpc':'2.0','id':1,'method':'initialize','params':{"
			 "'protocolVersion':'%s','capabilities':{},'clientInfo':{'name':'t',"
			 "'version':'1'}}}",
			 cases[i].asked);
		json_t *a = send_msg(s, &g, msg);
		json_t *r = json_object_get(a, "result");
		assert_string_equal(json_string_value(json_object_get(r, "protocolVersion")),
				    cases[i].got);
		assert_non_null(json_object_get(json_object_get(r, "capabilities"), "tools"));
		assert_string_equal(json_string_value(json_object_get(
					    json_object_get(r, "serverInfo"), "name")),
				    "wgmitm");
		assert_int_equal(json_integer_value(json_object_get(a, "id")), 1);
		assert_string_equal(mcp_session_version(s), cases[i].got);
		/* The initialized notification: nothing answered. */
		send_msg(s, &g, "{'jsonrpc':'2.0','method':'notifications/initialized'}");
		assert_null(g.answer);
		done(s, &f, &g);
	}
	assert_true(mcp_version_known("2025-06-18"));
	assert_false(mcp_version_known("2024-11-05"));
	assert_false(mcp_version_known(NULL));
}

static void test_rpc_errors(void **ctx)
{
	(void)ctx;
	struct fake f;
	struct got g = { 0 };
	struct mcp_session *s = session(&f);
	json_t *a = send_msg(s, &g, "{not json");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "error"), "code")),
			 -32700);
	assert_true(json_is_null(json_object_get(a, "id")));
	a = send_msg(s, &g, "{'jsonrpc':'1.0','id':2,'method':'ping'}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "error"), "code")),
			 -32600);
	a = send_msg(s, &g, "{'jsonrpc':'2.0','id':'x','method':'resources/list'}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "error"), "code")),
			 -32601);
	assert_string_equal(json_string_value(json_object_get(a, "id")), "x");
	a = send_msg(s, &g, "{'jsonrpc':'2.0','id':3,'method':'ping'}");
	assert_true(json_is_object(json_object_get(a, "result")));
	a = send_msg(s, &g,
		     "{'jsonrpc':'2.0','id':4,'method':'tools/call','params':{'name':'nope'}}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "error"), "code")),
			 -32602);
	/* A batch: one answer per request, none for the notification. */
	a = send_msg(s, &g,
		     "[{'jsonrpc':'2.0','id':5,'method':'ping'},{'jsonrpc':'2.0','method':"
		     "'notifications/cancelled'},{'jsonrpc':'2.0','id':6,'method':'ping'}]");
	assert_int_equal(json_array_size(a), 2);
	assert_int_equal(f.calls, 0);
	done(s, &f, &g);
}

static void test_tools_list(void **ctx)
{
	(void)ctx;
	struct fake f;
	struct got g = { 0 };
	struct mcp_session *s = session(&f);
	json_t *a = send_msg(s, &g, "{'jsonrpc':'2.0','id':1,'method':'tools/list'}");
	json_t *tools = json_object_get(json_object_get(a, "result"), "tools");
	static const char *const want[] = { "status",        "list_flows",  "search_flows",
					    "get_flow",      "get_body",    "list_peers",
					    "add_peer",      "remove_peer", "get_config",
					    "start",         "configure",   "export_har",
					    "traffic_usage", "clear_flows", "resend",
					    "list_rules",    "add_rule",    "remove_rule",
					    "list_held",     "release",     "kill" };
	assert_int_equal(json_array_size(tools), sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < json_array_size(tools); i++) {
		json_t *t = json_array_get(tools, i);
		assert_string_equal(json_string_value(json_object_get(t, "name")), want[i]);
		assert_true(strlen(json_string_value(json_object_get(t, "description"))) > 40);
		json_t *schema = json_object_get(t, "inputSchema");
		assert_string_equal(json_string_value(json_object_get(schema, "type")), "object");
		assert_true(json_is_object(json_object_get(schema, "properties")));
	}
	/* The reset-versus-merge difference is spelled out. */
	assert_non_null(
		strstr(json_string_value(json_object_get(json_array_get(tools, 9), "description")),
		       "RESETS"));
	done(s, &f, &g);
}

static void test_flow_tools(void **ctx)
{
	(void)ctx;
	struct fake f;
	struct got g = { 0 };
	struct mcp_session *s = session(&f);

	answer(&f, 200, "application/json",
	       "{\"flows\":[{\"id\":\"ab-2\",\"peer\":\"phone\",\"type\":\"http\",\"method\":"
	       "\"GET\",\"status\":200,\"url\":\"https://x.test/a\",\"size\":10}],"
	       "\"next_cursor\":\"17\"}");
	json_t *r = call_tool(s, &g, "list_flows", "{'filter':'~d x & ~c 200','limit':500}");
	assert_string_equal(f.method, "GET");
	assert_string_equal(f.target, "/api/flows?filter=~d%20x%20%26%20~c%20200&limit=200");
	assert_non_null(strstr(first_text(r), "ab-2  phone  http  GET 200  https://x.test/a"));
	assert_non_null(strstr(first_text(r), "cursor 17"));
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(r, "structuredContent"), "next_cursor")),
			    "17");

	answer(&f, 200, "application/json", "{\"flows\":[]}");
	call_tool(s, &g, "search_flows", "{'text':'a.b\\\"c','in':['url','body'],'cursor':'9'}");
	/* ~u "a\\.b\"c" | ~b "a\\.b\"c", escaped for the query string */
	assert_string_equal(f.target, "/api/flows?filter=~u%20%22a%5C%5C.b%5C%22c%22%20%7C%20~b%"
				      "20%22a%5C%5C.b%5C%22c%22&limit=50&cursor=9");

	/* get_flow: bodies as outlines. */
	char big[1400];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	char rec[2000];
	snprintf(rec, sizeof(rec),
		 "{\"type\":\"http\",\"id\":\"ab-2\",\"request\":{\"headers\":[],\"body\":{"
		 "\"text\":\"%s\",\"size\":1399}},\"response\":{\"status\":200,\"headers\":[],"
		 "\"body\":{\"base64\":\"AAEC\",\"size\":3}}}",
		 big);
	answer(&f, 200, "application/json", rec);
	r = call_tool(s, &g, "get_flow", "{'id':'ab-2'}");
	assert_string_equal(f.target, "/api/flows/ab-2");
	json_t *st = json_object_get(r, "structuredContent");
	json_t *qb = json_object_get(json_object_get(st, "request"), "body");
	assert_int_equal(json_string_length(json_object_get(qb, "preview")), 512);
	assert_false(json_is_true(json_object_get(qb, "preview_complete")));
	assert_null(json_object_get(qb, "text"));
	json_t *sb = json_object_get(json_object_get(st, "response"), "body");
	assert_true(json_is_true(json_object_get(sb, "binary")));
	assert_null(json_object_get(sb, "base64"));

	/* get_body: a byte range of what the API returned, text or base64. */
	answer(&f, 200, "text/plain", "hello, world");
	r = call_tool(s, &g, "get_body", "{'id':'ab-2','part':'response','offset':7,'length':5}");
	assert_string_equal(f.target, "/api/flows/ab-2/response/body?decode=1");
	assert_string_equal(first_text(r), "bytes 7-11 of 12 (text/plain)\nworld");
	f.answers[f.nanswers].status = 200;
	f.answers[f.nanswers].ctype = "application/octet-stream";
	f.answers[f.nanswers].body = "\x00\x01\x02";
	f.answers[f.nanswers].len = 3;
	f.nanswers++;
	r = call_tool(s, &g, "get_body", "{'id':'ab-2','part':'request','raw':true}");
	assert_string_equal(f.target, "/api/flows/ab-2/request/body");
	if (!strstr(first_text(r), "\nAAEC"))
		fail_msg("got %s", first_text(r));
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(r, "structuredContent"), "encoding")),
			    "base64");

	/* Missing argument: a tool error, no request. */
	int calls = f.calls;
	r = call_tool(s, &g, "get_body", "{'id':'ab-2'}");
	assert_true(json_is_true(json_object_get(r, "isError")));
	assert_non_null(strstr(first_text(r), "needs \"part\""));
	r = call_tool(s, &g, "list_flows", "{'limit':'ten'}");
	assert_true(json_is_true(json_object_get(r, "isError")));
	assert_int_equal(f.calls, calls);

	/* API errors reach the model as tool errors it can act on. */
	answer(&f, 400, "application/json",
	       "{\"error\":{\"status\":400,\"message\":\"column 3: ~q takes no argument\"}}");
	r = call_tool(s, &g, "list_flows", "{'filter':'~q x y'}");
	assert_true(json_is_true(json_object_get(r, "isError")));
	assert_string_equal(first_text(r), "column 3: ~q takes no argument (HTTP 400)");
	r = call_tool(s, &g, "status", "{}"); /* no answer left: unreachable */
	assert_true(json_is_true(json_object_get(r, "isError")));
	assert_non_null(strstr(first_text(r), "not reachable: connection refused"));
	done(s, &f, &g);
}

static void test_other_tools(void **ctx)
{
	(void)ctx;
	struct fake f;
	struct got g = { 0 };
	struct mcp_session *s = session(&f);

	answer(&f, 200, "application/json",
	       "{\"name\":\"tablet\",\"config\":\"[Interface]\\nPrivateKey = k\\n\"}");
	f.answers[f.nanswers].status = 200;
	f.answers[f.nanswers].ctype = "image/png";
	f.answers[f.nanswers].body = "\x89PNG";
	f.answers[f.nanswers].len = 4;
	f.nanswers++;
	json_t *r = call_tool(s, &g, "add_peer", "{'name':'tablet','apps':['com.example']}");
	assert_string_equal(f.target, "/api/peers/tablet/qr.png");
	assert_non_null(strstr(first_text(r), "[Interface]"));
	json_t *img = json_array_get(json_object_get(r, "content"), 1);
	assert_string_equal(json_string_value(json_object_get(img, "type")), "image");
	assert_string_equal(json_string_value(json_object_get(img, "mimeType")), "image/png");
	assert_string_equal(json_string_value(json_object_get(img, "data")), "iVBORw==");

	answer(&f, 200, "application/json", "{\"removed\":\"tablet\"}");
	call_tool(s, &g, "remove_peer", "{'name':'tab let'}");
	assert_string_equal(f.method, "DELETE");
	assert_string_equal(f.target, "/api/peers/tab%20let");

	answer(&f, 200, "application/json", "{\"max_connections\":5}");
	call_tool(s, &g, "start", "{'config':{'max_connections':5}}");
	assert_string_equal(f.method, "POST");
	assert_string_equal(f.target, "/api/config/start");
	assert_int_equal(json_integer_value(json_object_get(f.body, "max_connections")), 5);

	answer(&f, 200, "application/json", "{}");
	call_tool(s, &g, "configure",
		  "{'operation':'merge','tls_passthrough':{'add':['*.example.com']}}");
	assert_string_equal(f.target, "/api/config/configure");
	assert_string_equal(json_string_value(json_object_get(f.body, "operation")), "merge");

	answer(&f, 200, "application/json", "{\"deleted\":3}");
	call_tool(s, &g, "clear_flows", "{}");
	assert_string_equal(f.method, "DELETE");
	assert_string_equal(f.target, "/api/flows");

	/* resend: the edits as the replay's body; the new flow's id and
	 * status said; an upstream failure is a tool error. */
	answer(&f, 201, "application/json",
	       "{\"id\":\"ab-9\",\"replay_of\":\"ab-1\",\"status\":201,\"end_reason\":"
	       "\"complete\",\"error\":null,\"flow\":{\"method\":\"PUT\",\"url\":"
	       "\"https://x.test/a\"}}");
	r = call_tool(
		s, &g, "resend",
		"{'id':'ab-1','method':'PUT','headers':{'X-A':'1','Cookie':null},'body':'hi'}");
	assert_string_equal(f.method, "POST");
	assert_string_equal(f.target, "/api/flows/ab-1/replay");
	assert_null(json_object_get(f.body, "id"));
	assert_string_equal(json_string_value(json_object_get(f.body, "method")), "PUT");
	assert_true(json_is_null(json_object_get(json_object_get(f.body, "headers"), "Cookie")));
	assert_string_equal(json_string_value(json_object_get(f.body, "body")), "hi");
	assert_false(json_is_true(json_object_get(r, "isError")));
	assert_non_null(strstr(first_text(r), "-> 201; new flow ab-9 (replay of ab-1)"));
	answer(&f, 201, "application/json",
	       "{\"id\":\"ab-10\",\"replay_of\":\"ab-1\",\"status\":null,\"end_reason\":"
	       "\"upstream_refused\",\"error\":\"connect to 1.2.3.4:9: connection refused\","
	       "\"flow\":{\"method\":\"GET\",\"url\":\"https://1.2.3.4:9/\"}}");
	r = call_tool(s, &g, "resend", "{'id':'ab-1','url':'https://1.2.3.4:9/'}");
	assert_true(json_is_true(json_object_get(r, "isError")));
	assert_non_null(strstr(first_text(r), "upstream_refused: connect to 1.2.3.4:9"));
	assert_non_null(strstr(first_text(r), "new flow ab-10"));
	answer(&f, 404, "application/json",
	       "{\"error\":{\"status\":404,\"message\":\"no flow with this id\"}}");
	r = call_tool(s, &g, "resend", "{'id':'nope'}");
	assert_true(json_is_true(json_object_get(r, "isError")));
	r = call_tool(s, &g, "resend", "{'url':'https://x/'}");
	assert_true(json_is_true(json_object_get(r, "isError")));

	/* A big HAR is cut with a note, not returned whole. */
	size_t n = MCP_MAX_TEXT * 2;
	char *har = malloc(n + 1);
	memset(har, 'h', n);
	har[n] = 0;
	answer(&f, 200, "application/octet-stream", har);
	r = call_tool(s, &g, "export_har", "{}");
	assert_string_equal(f.target, "/api/har?limit=100");
	answer(&f, 200, "application/json", "{\"by\":\"user\",\"usage\":[]}");
	r = call_tool(s, &g, "traffic_usage", "{\"by\":\"user\",\"filter\":\"~via socks5\"}");
	assert_string_equal(f.target, "/api/usage?by=user&filter=~via%20socks5&limit=100");
	answer(&f, 200, "application/octet-stream", har);
	r = call_tool(s, &g, "export_har", "{}");
	assert_true(strlen(first_text(r)) < MCP_MAX_TEXT + 200);
	assert_non_null(strstr(first_text(r), "ask for less"));
	free(har);
	done(s, &f, &g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_initialize),  cmocka_unit_test(test_rpc_errors),
		cmocka_unit_test(test_tools_list),  cmocka_unit_test(test_flow_tools),
		cmocka_unit_test(test_other_tools),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
