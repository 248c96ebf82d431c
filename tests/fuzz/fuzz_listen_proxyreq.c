/* The HTTP proxy's first request head (listen/proxyreq.h), and the
 * authority splitter behind it: every answer is one of the documented
 * ones, and what is filled in holds together. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "listen/proxyreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyreq r;
	char why[200];
	int rc = proxyreq_parse(data, size, &r, why, sizeof(why));
	if (rc == 0) {
		if (r.head_len > size || r.host[0] == '\0' || r.port == 0)
			abort();
		if (r.kind == PROXYREQ_ABSOLUTE &&
		    (!r.rewritten || r.rewritten[r.rewritten_len] != '\0' ||
		     memcmp(r.rewritten + r.rewritten_len - 4, "\r\n\r\n", 4) != 0))
			abort();
		if (r.kind == PROXYREQ_CONNECT && r.rewritten)
			abort();
		/* Nothing a client sends reaches the rewritten head unchecked:
		 * it parses again, as the same request. */
		if (r.kind == PROXYREQ_ABSOLUTE) {
			struct proxyreq again;
			char w2[200];
			int rc2 = proxyreq_parse((const uint8_t *)r.rewritten, r.rewritten_len,
						 &again, w2, sizeof(w2));
			if (rc2 != 400 && rc2 != 431 && rc2 != -ENOMEM)
				abort(); /* origin form is not a proxy request */
			proxyreq_free(&again);
		}
	} else if (rc != -EAGAIN && rc != -ENOMEM && rc != 400 && rc != 431 && rc != 501 &&
		   rc != 505) {
		abort();
	}
	proxyreq_free(&r);

	char host[PROXYREQ_HOST_LEN];
	uint16_t port = 0;
	if (proxyreq_split_authority((const char *)data, size, host, &port, 0) &&
	    (port == 0 || host[0] == '\0' || strlen(host) >= PROXYREQ_HOST_LEN))
		abort();
	return 0;
}
