/* TAI64N timestamps for handshake initiations (whitepaper 5.4.2). */
#ifndef WGMITM_WG_TAI64N_H
#define WGMITM_WG_TAI64N_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "wg/messages.h"

/* Big-endian 8-byte TAI64 label (2^62 + 10 + Unix seconds, as wireguard-go)
 * then big-endian 4-byte nanoseconds rounded down to WG_TAI64N_WHITENER. */
void wg_tai64n_from_timespec(uint8_t out[WG_TIMESTAMP_LEN], const struct timespec *wall);

/* From CLOCK_REALTIME. */
void wg_tai64n_now(uint8_t out[WG_TIMESTAMP_LEN]);

/* true if a is strictly newer than b (byte order is time order). */
bool wg_tai64n_is_newer(const uint8_t a[WG_TIMESTAMP_LEN], const uint8_t b[WG_TIMESTAMP_LEN]);

/* Nanosecond granularity: 2^24 ns (about 16.8 ms). */
#define WG_TAI64N_WHITENER (1U << 24)

#endif
