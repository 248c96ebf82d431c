/* Hooks for the netstack's unit tests only: they let a test run lwIP's TCP
 * timers without waiting for the wall clock, and exercise the containment
 * of a failed lwIP assert. Not for production code. */
#ifndef WGMITM_NETSTACK_TESTING_H
#define WGMITM_NETSTACK_TESTING_H

#include "netstack.h"

/* One TCP slow tick of lwIP time: 100 ms (TCP_SLOW_INTERVAL). */
#define NETSTACK_TCP_TICK_MS 100
/* How long lwIP keeps a pcb in TIME-WAIT (2 x TCP_MSL, lwipopts.h). */
#define NETSTACK_TCP_TIME_WAIT_MS 60000

/* Runs lwIP's TCP timers as if `ticks` slow ticks had passed (each: the fast
 * timer once, the slow timer once): retransmissions, keepalives, TIME-WAIT
 * expiry. Output and callbacks happen before it returns. */
void netstack__test_tcp_ticks(struct netstack *ns, unsigned ticks);

/* Makes lwIP fail an assert while it processes the next segment of an
 * established connection, as a bug reachable from a peer would: the
 * netstack must contain it (docs/internals/netstack.md). */
void netstack__test_fail_next_segment(void);

#endif
