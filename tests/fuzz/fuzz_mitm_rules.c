/* libFuzzer target for the interception rules (mitm/rules.h): the rule
 * parser over JSON, run's mitmproxy-style options, and what a compiled set
 * does to a message.
 *
 * The first byte picks the input's kind: 0 to 5 an option (map-remote,
 * modify-headers, modify-body, block-list, intercept, dns-override) whose
 * value is the rest up to a NUL; anything else a JSON document given as
 * intercept_rules (and, when it is an object, its "rules" and
 * "dns_overrides"). map-local and body_file, which read files, are left
 * out.
 *
 * Invariants beyond "no crash / no sanitizer report": a refusal names a
 * field and says why; an option that is accepted gives an object that
 * compiles as it is; a compiled set's matching, gate, header and body
 * edits and redirects run without error on a fixed message, and keep the
 * body within the cap they are given. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const OPTS[] = { "map-remote", "modify-headers", "modify-body",
				    "block-list", "intercept",      "dns-override" };

static void exercise(struct ruleset *rs)
{
	struct http_headers h = { 0 };
	(void)http_headers_add(&h, "Host", 4, "api.test", 8);
	(void)http_headers_add(&h, "Content-Type", 12, "application/json", 16);
	struct rules_msg m = { .peer = "phone",
			       .scheme = "https",
			       .host = "api.test",
			       .authority = "api.test",
			       .path = "/v1/users?id=1",
			       .method = "POST",
			       .req_headers = &h };
	(void)ruleset_may_apply(rs, "phone", "api.test");
	(void)ruleset_may_apply(rs, NULL, NULL);
	(void)ruleset_dns_lookup(rs, "a.staging.test", "phone");
	static const char body[] = "{\"user\": {\"name\": \"cat\"}, \"items\": [1, 2, 3]}";
	for (int phase = RULE_REQUEST; phase <= RULE_RESPONSE; phase++) {
		struct rules_plan plan;
		if (phase == RULE_RESPONSE) {
			m.status = 404;
			m.resp_headers = &h;
		}
		if (!rules_plan_for(rs, (enum rule_dir)phase, &m, &plan))
			continue;
		struct http_headers copy = { 0 };
		for (size_t i = 0; i < h.n; i++)
			(void)http_headers_add(&copy, h.v[i].name, h.v[i].name_len, h.v[i].value,
					       h.v[i].value_len);
		(void)rules_apply_headers(&plan, (enum rule_dir)phase, &copy);
		http_headers_free(&copy);
		uint8_t *out;
		size_t n;
		if (rules_apply_body(&plan, (enum rule_dir)phase, (const uint8_t *)body,
				     sizeof(body) - 1, 4096, &out, &n) == 0 &&
		    out && n > 4096)
			__builtin_trap();
		free(out);
		if (plan.terminal && plan.terminal->kind == RA_REDIRECT) {
			char scheme[8], host[256], path[2048];
			uint16_t port;
			(void)rules_redirect_target(plan.terminal, "https", "api.test", m.path,
						    scheme, sizeof(scheme), host, sizeof(host),
						    &port, path, sizeof(path));
		}
	}
	http_headers_free(&h);
}

static void check_error(const struct rules_error *err)
{
	if (!err->field[0] || !err->message[0])
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 8192)
		return 0;
	char *text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	struct rules_error err;
	if (data[0] < sizeof(OPTS) / sizeof(OPTS[0])) {
		const char *opt = OPTS[data[0]];
		json_t *r = rules_from_option(opt, text, 1, &err);
		if (!r) {
			check_error(&err);
		} else {
			bool dns = strcmp(opt, "dns-override") == 0;
			json_t *a = json_array();
			json_array_append_new(a, r);
			struct ruleset *rs =
				ruleset_new(dns ? NULL : a, "r", dns ? a : NULL, "d", &err);
			if (!rs)
				__builtin_trap(); /* accepted, then refused */
			exercise(rs);
			ruleset_unref(rs);
			json_decref(a);
		}
		free(text);
		return 0;
	}
	if (strstr(text, "body_file")) {
		free(text);
		return 0;
	}
	json_error_t je;
	json_t *doc = json_loads(text, JSON_DECODE_ANY, &je);
	free(text);
	if (!doc)
		return 0;
	const json_t *rules = json_is_object(doc) ? json_object_get(doc, "rules") : doc;
	const json_t *dns = json_is_object(doc) ? json_object_get(doc, "dns_overrides") : NULL;
	struct ruleset *rs = ruleset_new(rules, "intercept_rules", dns, "dns_overrides", &err);
	if (!rs)
		check_error(&err);
	else
		exercise(rs);
	ruleset_unref(rs);
	if (json_is_array(rules) && json_array_size(rules) > 0) {
		struct rules_error e2;
		if (rules_check(json_array_get(rules, 0), "x", &e2) < 0)
			check_error(&e2);
	}
	json_decref(doc);
	return 0;
}
