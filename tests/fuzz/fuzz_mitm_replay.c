/* libFuzzer target for replay's request builder (mitm/replay.h): URLs,
 * edits as the API takes them, and records as the store gives them.
 *
 * The first byte picks the input's kind: 0 the rest is a URL (up to a
 * NUL); 1 a JSON document of edits applied to a fixed HTTP/2 record;
 * anything else a JSON document taken as the record, replayed as it is.
 *
 * Invariants beyond "no crash / no sanitizer report": a refusal says why;
 * a parsed URL's host is non-empty, lowercase and its target starts with
 * '/' or '?' when there is one; a built request serialises to bytes that
 * start with its request line, hold no CR or LF inside a header and end
 * with its body; Host comes first unless an edit moved it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/replay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char RECORD[] =
	"{\"type\":\"http\",\"id\":\"f-1\",\"peer\":\"phone\",\"client\":\"10.0.0.2:5000\","
	"\"server\":\"[2001:db8::10]:443\",\"http_version\":\"HTTP/2\",\"method\":\"POST\","
	"\"url\":\"https://api.test/v1?x=1\",\"request\":{\"headers\":[[\":method\",\"POST\"],"
	"[\":authority\",\"api.test\"],[\"cookie\",\"a=1\"],[\"cookie\",\"b=2\"],"
	"[\"content-type\",\"application/json\"]],\"body\":{\"text\":\"{}\",\"size\":2,"
	"\"truncated\":false}}}";

static void check_built(const struct replay_request *r)
{
	size_t n;
	uint8_t *w = replay_serialize(r, &n);
	if (!w)
		return;
	size_t line = strlen(r->method) + 1 + strlen(r->target) + 11;
	if (n < line || memcmp(w, r->method, strlen(r->method)) != 0)
		abort();
	if (r->target[0] != '/')
		abort();
	for (size_t i = 0; i < r->headers.n; i++) {
		const struct http_header *h = &r->headers.v[i];
		if (memchr(h->name, '\r', h->name_len) || memchr(h->name, '\n', h->name_len) ||
		    memchr(h->value, '\r', h->value_len) || memchr(h->value, '\n', h->value_len))
			abort();
	}
	if (n < r->body_len || (r->body_len && memcmp(w + n - r->body_len, r->body, r->body_len)))
		abort();
	if (!r->host[0])
		abort();
	free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	char err[256];
	if (data[0] == 0) {
		char *url = strndup((const char *)data + 1, size - 1);
		if (!url)
			return 0;
		bool tls;
		char host[REPLAY_HOST_LEN];
		uint16_t port;
		size_t off, len;
		err[0] = '\0';
		if (replay_parse_url(url, &tls, host, &port, &off, &len, err, sizeof(err)) == 0) {
			if (!host[0] || port == 0 || off + len > strlen(url))
				abort();
			for (const char *p = host; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					abort();
			if (len && url[off] != '/' && url[off] != '?')
				abort();
		} else if (!err[0]) {
			abort();
		}
		free(url);
		return 0;
	}
	json_t *doc = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
	if (!doc)
		return 0;
	json_t *record = data[0] == 1 ? json_loads(RECORD, 0, NULL) : json_incref(doc);
	struct replay_request r;
	err[0] = '\0';
	if (replay_build(record, data[0] == 1 ? doc : NULL, &r, err, sizeof(err)) == 0)
		check_built(&r);
	else if (!err[0])
		abort();
	replay_request_free(&r);
	json_decref(record);
	json_decref(doc);
	return 0;
}
