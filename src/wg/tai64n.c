/* TAI64N (https://cr.yp.to/libtai/tai64.html) as WireGuard writes it. */
#include "wg/tai64n.h"

#include <string.h>

/* TAI64 label of the Unix epoch: 2^62 + 10 (the TAI-UTC offset of 1970),
 * as wireguard-go's tai64n.go. The exact offset does not matter to a
 * responder: it only compares timestamps from the same initiator. */
#define TAI64_BASE ((1ULL << 62) + 10)

void wg_tai64n_from_timespec(uint8_t out[WG_TIMESTAMP_LEN], const struct timespec *wall)
{
	uint64_t secs = TAI64_BASE + (uint64_t)(int64_t)wall->tv_sec;
	/* Rounding the nanoseconds down to ~16.8 ms keeps an initiation from
	 * revealing the initiator's clock at high resolution (a fingerprint
	 * and a timing side channel on its handshake path). The granularity
	 * is below the 20 ms flood limit (1 s / 50), so initiations a
	 * responder would accept still carry strictly increasing stamps. */
	uint32_t nsec = (uint32_t)wall->tv_nsec & ~(WG_TAI64N_WHITENER - 1);

	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(secs >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		out[8 + i] = (uint8_t)(nsec >> (24 - 8 * i));
}

void wg_tai64n_now(uint8_t out[WG_TIMESTAMP_LEN])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	wg_tai64n_from_timespec(out, &ts);
}

bool wg_tai64n_is_newer(const uint8_t a[WG_TIMESTAMP_LEN], const uint8_t b[WG_TIMESTAMP_LEN])
{
	/* Big-endian fields: lexicographic order is time order. Timestamps
	 * are not secret (the peer sent them), so memcmp is fine. */
	return memcmp(a, b, WG_TIMESTAMP_LEN) > 0;
}
