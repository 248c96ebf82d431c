/* SOCKS5 messages (listen/socks5.h) as the listener reads them: a
 * greeting, then (when the first byte asks) a username/password, then a
 * request, each from whatever bytes are left; every parser takes exactly
 * what it says and no prefix of a message is an error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "listen/socks5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool none, up;
	int n = socks5_parse_greeting(data, size, &none, &up);
	if (n > 0) {
		if ((size_t)n > size)
			abort();
		/* A prefix is incomplete, not malformed (except the version). */
		if (n > 1 && socks5_parse_greeting(data, (size_t)n - 1, &none, &up) != 0)
			abort();
		data += n, size -= (size_t)n;
		char u[256], p[256];
		int m = socks5_parse_userpass(data, size, u, p);
		if (m > 0) {
			if ((size_t)m > size || strlen(u) == 0)
				abort();
			data += m, size -= (size_t)m;
		}
		struct socks5_req r;
		uint8_t rep;
		int k = socks5_parse_request(data, size, &r, &rep);
		if (k > 0) {
			if ((size_t)k > size || (r.port == 0 && r.cmd != SOCKS5_UDP_ASSOCIATE) ||
			    rep != SOCKS5_OK || strlen(r.host) >= sizeof(r.host))
				abort();
			if (socks5_parse_request(data, (size_t)k - 1, &r, &rep) > 0)
				abort();
			uint8_t out[22];
			size_t l = socks5_reply(out, rep, (const struct sockaddr *)&r.addr);
			if (l != 10 && l != 22)
				abort();
		}
	}
	return 0;
}
