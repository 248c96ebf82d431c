/* libFuzzer target for a breakpoint release's edits (mitm/held.h), the
 * JSON an API client sends: byte 0 picks the phase (even: request), the
 * rest is the JSON text. Invariants beyond "no crash / no sanitizer
 * report": what parses has header names that are tokens and values
 * without CR, LF or NUL, a target without spaces, a status in 100-599,
 * a body within its bound; applying the header edits keeps those. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/held.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_headers(const struct http_headers *h)
{
	for (size_t i = 0; i < h->n; i++) {
		if (!h->v[i].name_len || memchr(h->v[i].name, ' ', h->v[i].name_len) ||
		    memchr(h->v[i].name, ':', h->v[i].name_len))
			__builtin_trap();
		for (size_t k = 0; k < h->v[i].value_len; k++)
			if (h->v[i].value[k] == '\r' || h->v[i].value[k] == '\n' ||
			    h->v[i].value[k] == '\0')
				__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	enum held_phase ph = (data[0] & 1) ? HELD_RESPONSE : HELD_REQUEST;
	json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
	struct held_edits e;
	char why[256];
	if (held_edits_parse(j, ph, &e, why, sizeof(why)) == 0) {
		if (e.status && (e.status < 100 || e.status > 599 || ph != HELD_RESPONSE))
			__builtin_trap();
		if (e.path && (strchr(e.path, ' ') || ph != HELD_REQUEST))
			__builtin_trap();
		if (e.has_body && e.body_len > HELD_MAX_EDIT_BODY)
			__builtin_trap();
		check_headers(&e.headers);
		check_headers(&e.set);
		struct http_headers h = { 0 };
		(void)http_headers_add(&h, "Host", 4, "x", 1);
		(void)http_headers_add(&h, "A", 1, "1", 1);
		(void)held_edits_apply_headers(&e, &h);
		check_headers(&h);
		(void)held_edits_any(&e);
		http_headers_free(&h);
		held_edits_free(&e);
	} else if (!why[0]) {
		__builtin_trap(); /* an error always says why */
	}
	json_decref(j);
	return 0;
}
