/* Containment of a failed lwIP assert (docs/internals/netstack.md). Shared
 * by arch/sys_arch.c, which raises it, and the netstack, which catches it;
 * nothing outside src/netstack may include it. */
#ifndef WGMITM_NETSTACK_ASSERT_H
#define WGMITM_NETSTACK_ASSERT_H

#include <stdbool.h>
#include <stdint.h>

/* Set while lwIP processes one inbound packet: a failed assert unwinds to
 * it, unless code of ours runs between it and the assert (an upcall). */
/* The compiler's setjmp (__builtin_setjmp: frame, stack and resume address
 * only, no signal mask), a few instructions per packet instead of libc's
 * ~50. */
typedef void *netstack_trap[5];
extern netstack_trap *netstack__assert_trap;
/* Depth of our callbacks running below lwIP frames: never unwound through. */
extern unsigned netstack__upcalls;
/* SYNs dropped by the half-open limit per source (arch/sys_arch.c). */
extern uint64_t netstack__syn_limited;
/* netstack__test_fail_next_segment's flag. */
extern bool netstack__fail_next_segment;
/* Failed asserts so far, contained or not. */
extern unsigned long netstack__assert_count;

#define NETSTACK_UPCALL_ENTER() (netstack__upcalls++)
#define NETSTACK_UPCALL_LEAVE() (netstack__upcalls--)

#endif
