/* libFuzzer target for the store's record reader (flows/recscan.h),
 * checked against jansson: the input is one log line.
 *
 * Invariants beyond "no crash / no sanitizer report": rec_scan accepts a
 * line exactly when json_loadb(JSON_ALLOW_NUL) and flow_fields_read do;
 * then every field is the same, the header texts are flow_headers_text's,
 * each body moved is flow_body_bytes' bytes with the part's first
 * Content-Encoding, and the record left parses to the same object with
 * that body member taken out. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "flows/fields.h"
#include "flows/recscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_str(const char *a, const char *b)
{
	if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
		abort();
}

static void check_fields(const struct flow_fields *a, const struct flow_fields *b)
{
	same_str(a->type, b->type);
	same_str(a->id, b->id);
	same_str(a->peer, b->peer);
	same_str(a->client, b->client);
	same_str(a->server, b->server);
	same_str(a->conn, b->conn);
	same_str(a->host, b->host);
	same_str(a->method, b->method);
	same_str(a->url, b->url);
	same_str(a->req_ctype, b->req_ctype);
	same_str(a->resp_ctype, b->resp_ctype);
	same_str(a->proto, b->proto);
	same_str(a->end_reason, b->end_reason);
	same_str(a->error, b->error);
	same_str(a->via, b->via);
	same_str(a->user, b->user);
	same_str(a->replay_of, b->replay_of);
	if (a->start_us != b->start_us || a->end_us != b->end_us || a->status != b->status ||
	    a->bytes_up != b->bytes_up || a->bytes_down != b->bytes_down ||
	    a->passthrough != b->passthrough || a->tls_rejected != b->tls_rejected ||
	    a->websocket != b->websocket || a->has_response != b->has_response)
		abort();
}

/* The body member the store takes: "text", else "base64" when it decodes. */
static const char *moved_key(const json_t *body)
{
	if (!json_is_object(body))
		return NULL;
	if (json_is_string(json_object_get(body, "text")))
		return "text";
	size_t len;
	uint8_t *owned;
	const uint8_t *p = flow_body_bytes(body, &len, &owned);
	free(owned);
	return p ? "base64" : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rec_scan rs; /* reused, as the store does */
	json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
	struct flow_fields f;
	bool ok = j && flow_fields_read(j, &f) == 0;
	int rc = rec_scan(&rs, (const char *)data, size);
	if (rc == -ENOMEM)
		abort();
	/* jansson skips one raw NUL byte after a number or a literal (its
	 * stream takes a NUL it has put back for the end of its buffer); that
	 * is not JSON, and the scanner refuses it. */
	if (ok && rc == -1 && memchr(data, 0, size))
		ok = false;
	if (ok != (rc == 0))
		abort();
	if (!ok) {
		json_decref(j);
		return 0;
	}
	check_fields(&f, &rs.f);
	const json_t *headers[2] = { f.req_headers, f.resp_headers };
	const json_t *bodies[2] = { f.req_body, f.resp_body };
	json_t *expect = json_deep_copy(j);
	for (int i = 0; i < 2; i++) {
		char *text;
		size_t len;
		if (flow_headers_text(headers[i], &text, &len))
			abort();
		if ((text == NULL) != (rs.headers[i] == NULL) ||
		    (text && (len != rs.headers_len[i] || memcmp(text, rs.headers[i], len) != 0)))
			abort();
		free(text);
		const char *key = moved_key(bodies[i]);
		if ((key != NULL) != rs.body[i].present)
			abort();
		if (!key)
			continue;
		uint8_t *owned;
		const uint8_t *p = flow_body_bytes(bodies[i], &len, &owned);
		if (len != rs.body[i].len || (len && memcmp(p, rs.body[i].data, len) != 0))
			abort();
		free(owned);
		same_str(flow_header(headers[i], "content-encoding"), rs.body[i].encoding);
		json_t *part = json_object_get(expect, i ? "response" : "request");
		json_object_del(json_object_get(part, "body"), key);
	}
	json_t *left = json_loadb(rs.record, rs.record_len, JSON_ALLOW_NUL, NULL);
	if (!left)
		abort();
	/* A repeated body key leaves its earlier values in the line. */
	for (int i = 0; i < 2; i++) {
		const char *key = rs.body[i].present ? moved_key(bodies[i]) : NULL;
		if (key)
			json_object_del(
				json_object_get(json_object_get(left, i ? "response" : "request"),
						"body"),
				key);
	}
	if (!json_equal(left, expect))
		abort();
	json_decref(left);
	json_decref(expect);
	json_decref(j);
	return 0;
}
