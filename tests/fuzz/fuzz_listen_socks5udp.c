/* The header of SOCKS5 UDP ASSOCIATE datagrams (listen/socks5.h) as an
 * association reads every datagram a client sends: untrusted, whole, up to
 * 64 KiB. A header that parses names a destination with a port, a name of
 * at most 255 valid bytes or an address; its bytes are exactly what was
 * parsed (an address header is rebuilt byte for byte by the answer's
 * writer), every cut of it is malformed, and anything after it is data. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "listen/socks5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct socks5_udp_hdr h;
	int n = socks5_parse_udp(data, size, &h);
	if (n == SOCKS5_UDP_FRAGMENT) {
		if (size < 3 || data[2] == 0 || data[0] || data[1])
			abort();
		return 0;
	}
	if (n == SOCKS5_UDP_MALFORMED)
		return 0;
	/* The shortest header names a one-letter host: 8 bytes. */
	if (n < 8 || (size_t)n > size || h.port == 0 || data[2] != 0)
		abort();
	for (size_t cut = 0; cut < (size_t)n; cut++) {
		struct socks5_udp_hdr again;
		if (socks5_parse_udp(data, cut, &again) >= 0)
			abort();
	}
	uint8_t out[SOCKS5_UDP_HDR_MAX];
	switch (h.atyp) {
	case 1:
	case 4: {
		size_t l = socks5_udp_header(out, (const struct sockaddr *)&h.addr);
		if (l != (size_t)n || memcmp(out, data, l) != 0)
			abort();
		break;
	}
	case 3:
		if (h.name_len == 0 || h.name_len > 255 || strlen(h.name) != h.name_len ||
		    (size_t)n != 4 + 1 + h.name_len + 2 ||
		    memcmp(h.name, data + 5, h.name_len) != 0)
			abort();
		for (size_t i = 0; i < h.name_len; i++)
			if ((uint8_t)h.name[i] <= ' ' || h.name[i] == 0x7f || h.name[i] == '/')
				abort();
		break;
	default:
		abort();
	}
	return 0;
}
