/* lwIP port definitions for wgmitm (Linux, gcc/clang, NO_SYS=1).
 * Included by lwip/arch.h; only lwIP and src/netstack see it. */
#ifndef WGMITM_NETSTACK_ARCH_CC_H
#define WGMITM_NETSTACK_ARCH_CC_H

#include <endian.h> /* BYTE_ORDER, LITTLE_ENDIAN, BIG_ENDIAN from libc */
#include <stdint.h>
#include <stdlib.h>

/* Types come from <stdint.h> via lwip/arch.h (LWIP_NO_STDINT_H is 0). */

/* Byte order: compiler builtins instead of lwIP's generic functions. The
 * C library's own htons/ntohs stay untouched (netstack.c uses both). */
#define LWIP_DONT_PROVIDE_BYTEORDER_FUNCTIONS 1
#if BYTE_ORDER == LITTLE_ENDIAN
#define lwip_htons(x) ((u16_t)__builtin_bswap16((u16_t)(x)))
#define lwip_htonl(x) ((u32_t)__builtin_bswap32((u32_t)(x)))
#else
#define lwip_htons(x) ((u16_t)(x))
#define lwip_htonl(x) ((u32_t)(x))
#endif
#define lwip_ntohs(x) lwip_htons(x)
#define lwip_ntohl(x) lwip_htonl(x)

/* Structs are packed with the GNU attribute. */
#define PACK_STRUCT_FIELD(x) x
#define PACK_STRUCT_STRUCT __attribute__((packed))
#define PACK_STRUCT_BEGIN
#define PACK_STRUCT_END

/* Diagnostics go to stderr; a failed assert aborts (so fuzzers and tests
 * see it) instead of printing and carrying on with broken state. */
void netstack__diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void netstack__assert(const char *msg, const char *file, int line);
#define LWIP_PLATFORM_DIAG(x)                                                                      \
	do {                                                                                       \
		netstack__diag x;                                                                  \
	} while (0)
#define LWIP_PLATFORM_ASSERT(x) netstack__assert((x), __FILE__, __LINE__)

/* TCP initial sequence numbers, IPv6 fragment ids: from libsodium. */
uint32_t netstack__rand(void);
#define LWIP_RAND() ((u32_t)netstack__rand())

#endif
