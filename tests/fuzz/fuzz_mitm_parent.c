/* A parent proxy's answers (mitm/parent.h): the first byte picks HTTP or
 * SOCKS5 and whether credentials are sent, the rest arrives in chunks
 * whose sizes come from the input too. Checks: used never exceeds what
 * was fed, one step writes at most PARENT_MAX_OUT bytes, a failure says
 * why, and once done nothing more is taken. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/parent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t mode = data[0], chunking = data[1];
	data += 2, size -= 2;
	static struct parent_hs h; /* 8 KiB: not on the stack each run */
	uint8_t out[PARENT_MAX_OUT];
	size_t outlen = 0;
	const char *host = (mode & 2)   ? "2001:db8::1"
			   : (mode & 4) ? "192.0.2.1"
					: "www.example.test";
	if (parent_begin(&h, (mode & 1) ? PARENT_SOCKS5 : PARENT_HTTP, host, 443,
			 (mode & 8) ? "alice" : NULL, (mode & 8) ? "s@cret" : NULL, out,
			 &outlen) < 0)
		abort();
	if (outlen == 0 || outlen > PARENT_MAX_OUT)
		abort();
	size_t step = (size_t)(chunking % 17) + 1;
	while (size > 0) {
		size_t n = size < step ? size : step;
		size_t used = 0;
		enum parent_result r = parent_feed(&h, data, n, &used, out, &outlen);
		if (used > n || outlen > PARENT_MAX_OUT)
			abort();
		if (r == PARENT_FAIL) {
			if (!h.why[0])
				abort();
			return 0;
		}
		if (r == PARENT_DONE)
			return 0;
		if (used != n)
			abort(); /* more input is taken whole until the answer ends */
		data += n, size -= n;
	}
	return 0;
}
