/* libFuzzer target for the control plane's JSON requests: MCP messages
 * (mcp_session_handle, with a backend whose answers the input also picks)
 * and configuration requests (config_start, config_configure). The input
 * is a selector byte, then the text. Invariants beyond "no crash":
 * - every MCP message gets exactly one answer call, and the answer, when
 *   there is one, is JSON-RPC 2.0 (an object or an array of them, each
 *   with "jsonrpc": "2.0" and either "result" or "error" with a code);
 * - a tool result is bounded: its text at most MCP_MAX_TEXT plus a note;
 * - a configuration request either fails naming something in err.message,
 *   or yields a document that start accepts back unchanged (complete and
 *   valid), and configure with an empty request leaves it as it is. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "control/mcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct canned {
	const uint8_t *p;
	size_t n;
};

/* The backend answers with a status and a body cut from the input. */
static void request(void *ctx, const char *method, const char *target, const json_t *body,
		    mcp_api_done done, void *arg)
{
	struct canned *c = ctx;
	(void)method;
	(void)body;
	if (!target || target[0] != '/')
		abort();
	struct mcp_api_reply r = { .status = 0, .error = "fuzz" };
	if (c->n >= 2) {
		static const int statuses[] = { 200, 201, 400, 404, 500, 0 };
		r.status = statuses[c->p[0] % 6];
		static const char *const types[] = { "application/json", "image/png", "text/plain",
						     NULL };
		r.ctype = types[c->p[1] % 4];
		size_t len = c->n > 2 ? c->p[2] : 0;
		if (len > c->n - 2)
			len = c->n - 2;
		r.body = c->p + 2;
		r.len = len;
		c->p += 2 + len;
		c->n -= 2 + len;
	}
	done(arg, &r);
}

static void check_one(const json_t *a)
{
	if (!json_is_object(a))
		abort();
	if (strcmp(json_string_value(json_object_get(a, "jsonrpc")) ?: "", "2.0") != 0)
		abort();
	const json_t *res = json_object_get(a, "result"), *err = json_object_get(a, "error");
	if (!res == !err)
		abort();
	if (err && !json_is_integer(json_object_get(err, "code")))
		abort();
	const json_t *content = json_object_get(res, "content");
	size_t i;
	const json_t *c;
	json_array_foreach(content, i, c)
	{
		const char *t = json_string_value(json_object_get(c, "text"));
		if (t && strlen(t) > MCP_MAX_TEXT + 128)
			abort();
	}
}

static void on_answer(void *arg, json_t *a)
{
	int *calls = arg;
	(*calls)++;
	if (json_is_array(a)) {
		size_t i;
		json_t *e;
		json_array_foreach(a, i, e) check_one(e);
	} else if (a) {
		check_one(a);
	}
	json_decref(a);
}

static void fuzz_mcp(const uint8_t *data, size_t size)
{
	/* The first half the message, the rest the backend's answers. */
	size_t split = size / 2;
	struct canned c = { data + split, size - split };
	struct mcp_backend be = { .request = request, .ctx = &c };
	struct mcp_session *s = mcp_session_new(&be);
	if (!s)
		return;
	int calls = 0;
	mcp_session_handle(s, (const char *)data, split, on_answer, &calls);
	if (calls != 1)
		abort(); /* the fuzz backend answers at once: so must the session */
	mcp_session_free(s);
}

static void fuzz_config(const uint8_t *data, size_t size, bool start)
{
	json_t *req = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	if (!req)
		return;
	struct config_error err;
	json_t *cur = config_defaults();
	json_t *doc =
		start ? config_start(req, NULL, &err) : config_configure(cur, req, NULL, &err);
	if (!doc) {
		if (!err.message[0])
			abort();
	} else {
		json_t *again = config_start(doc, NULL, &err);
		if (!again || !json_equal(again, doc))
			abort();
		json_t *empty = json_object();
		json_t *same = config_configure(doc, empty, NULL, &err);
		if (!same || !json_equal(same, doc))
			abort();
		json_decref(empty);
		json_decref(same);
		json_decref(again);
		/* Each scope entry is a filter expression or becomes one. */
		const json_t *scope = json_object_get(doc, "capture_scope");
		for (const char *k = "includes"; k;
		     k = strcmp(k, "includes") == 0 ? "excludes" : NULL) {
			size_t i;
			json_t *e;
			json_array_foreach(json_object_get(scope, k), i, e)
			{
				char *f = config_scope_filter(e);
				if (!f)
					abort();
				free(f);
			}
		}
	}
	json_decref(doc);
	json_decref(cur);
	json_decref(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_mcp(data + 1, size - 1);
		break;
	case 1:
		fuzz_config(data + 1, size - 1, true);
		break;
	default:
		fuzz_config(data + 1, size - 1, false);
		break;
	}
	return 0;
}
