/* One entry of the configuration's "listeners" (listen/entry.h), as the
 * API takes it: the first byte picks a whole JSON entry, or the "spec" of
 * one type with the rest as its text. Checks: a refusal names why, an
 * accepted entry is whole (a name, its type, a port, a target's host). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "listen/entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const types[] = { "http-proxy", "socks5",  "http-proxy+socks5",
				     "reverse",    "forward", "udp-forward" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++, size--;
	json_t *e;
	if (mode < 128) {
		e = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	} else {
		json_t *spec = json_stringn_nocheck((const char *)data, size);
		e = json_pack("{s:s,s:s,s:o*}", "name", "f", "type", types[mode % 6], "spec", spec);
	}
	if (!e)
		return 0;
	struct listen_entry le;
	char field[64], why[256];
	why[0] = '\0';
	if (listen_entry_parse(e, &le, field, sizeof(field), why, sizeof(why)) < 0) {
		if (!why[0])
			abort();
	} else {
		if (!le.name[0] || !le.type || strlen(le.name) > LISTEN_NAME_MAX)
			abort();
		if (le.kind != LISTEN_PROXY &&
		    (!le.t.host[0] || le.t.port == 0 || strlen(le.t.host) > LISTEN_HOST_MAX))
			abort();
		if (le.kind == LISTEN_PROXY && !le.http && !le.socks5)
			abort();
	}
	json_decref(e);
	return 0;
}
