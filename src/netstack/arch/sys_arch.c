/* lwIP port for NO_SYS=1 on Linux: the clock, diagnostics, asserts and
 * random numbers lwIP asks its platform for. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "lwip/ip_addr.h"
#include "lwip/opt.h"
#include "lwip/sys.h"
#include "lwip/tcp.h"

#include "common/tally.h"
#include "netstack.h"
#include "netstack_assert.h"
#include "netstack_hooks.h"

/* Milliseconds from a monotonic clock; lwIP only compares differences, so
 * wrapping at 2^32 ms is fine. */
u32_t sys_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (u32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void netstack__diag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("lwip: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

netstack_trap *netstack__assert_trap;
unsigned netstack__upcalls;
unsigned long netstack__assert_count;

/* A failed assert means lwIP's state for what it was doing is broken. While
 * it processes a peer's packet with no code of ours in between, that state
 * is one connection's: unwind to netstack_input, which drops the packet and
 * resets that connection, so one peer cannot end everyone's sessions. Any
 * other assert aborts. Fuzz builds always abort, so fuzzing finds them. */
_Noreturn void netstack__assert(const char *msg, const char *file, int line)
{
	unsigned long n = ++netstack__assert_count;
	bool contain = netstack__assert_trap != NULL && netstack__upcalls == 0;
#ifdef NETSTACK_ASSERT_ABORTS
	contain = false;
#endif
	if (!contain || n <= 16 || n % 1024 == 0) /* a peer can repeat it: bounded log */
		fprintf(stderr, "lwip: assertion \"%s\" failed at %s:%d%s (%lu so far)\n", msg,
			file, line, contain ? "; packet dropped, its connection reset" : "", n);
	if (contain) {
		netstack_trap *trap = netstack__assert_trap;
		netstack__assert_trap = NULL;
		__builtin_longjmp(*trap, 1);
	}
	fflush(stderr);
	abort();
}

/* Half-open connections per source address (patches/lwip/0003). Entries
 * live while a source has any; lwIP is global, and so is this. */
static struct tally *netstack__half_open_by_src;
uint64_t netstack__syn_limited;

/* The address's text, by inet_ntop: lwIP's ip6addr_ntoa_r reads one word
 * past the address when only its last 16 bits are zero (UBSan found it). */
static void netstack__src_key(const ip_addr_t *ip, char *key, size_t len)
{
	const void *raw =
		IP_IS_V6(ip) ? (const void *)ip_2_ip6(ip)->addr : (const void *)&ip_2_ip4(ip)->addr;
	if (inet_ntop(IP_IS_V6(ip) ? AF_INET6 : AF_INET, raw, key, (socklen_t)len) == NULL)
		key[0] = '\0';
}

int netstack__half_open_allowed(const ip_addr_t *src)
{
	if (netstack__half_open_by_src == NULL)
		return 1;
	char key[INET6_ADDRSTRLEN];
	netstack__src_key(src, key, sizeof key);
	if (tally_count(netstack__half_open_by_src, key) < NETSTACK_HALF_OPEN_PER_SOURCE)
		return 1;
	netstack__syn_limited++;
	return 0;
}

void netstack__half_open(const struct tcp_pcb *pcb, int delta)
{
	if (netstack__half_open_by_src == NULL &&
	    (netstack__half_open_by_src = tally_new()) == NULL)
		return; /* no memory: not counted (fails open) */
	char key[INET6_ADDRSTRLEN];
	netstack__src_key(&pcb->remote_ip, key, sizeof key);
	if (delta > 0)
		(void)tally_take(netstack__half_open_by_src, key, UINT32_MAX);
	else
		tally_give_key(netstack__half_open_by_src, key);
}

bool netstack__fail_next_segment;

err_t netstack__tcp_inpacket(const struct tcp_pcb *pcb)
{
	if (netstack__fail_next_segment && pcb->state == ESTABLISHED) {
		netstack__fail_next_segment = false;
		LWIP_ASSERT("forced by netstack__test_fail_next_segment", 0);
	}
	return ERR_OK;
}

/* NETSTACK_FIXED_RANDOM (fuzz builds only): reproducible numbers, so a
 * fuzzer input can complete a TCP handshake and reach the data paths. */
uint32_t netstack__rand(void)
{
#ifdef NETSTACK_FIXED_RANDOM
	return 0x2545f491u;
#else
	return randombytes_random();
#endif
}

u32_t netstack__tcp_isn(const ip_addr_t *local_ip, u16_t local_port, const ip_addr_t *remote_ip,
			u16_t remote_port)
{
	static unsigned char key[crypto_shorthash_KEYBYTES];
	static int keyed;
	if (!keyed) {
#ifndef NETSTACK_FIXED_RANDOM
		randombytes_buf(key, sizeof key);
#endif
		keyed = 1;
	}
	/* F(localip, localport, remoteip, remoteport, secretkey): SipHash. */
	unsigned char in[2 * 16 + 2 * 2 + 1];
	memset(in, 0, sizeof in);
	in[0] = (unsigned char)IP_GET_TYPE(local_ip);
	memcpy(in + 1,
	       IP_IS_V4(local_ip) ? (const void *)ip_2_ip4(local_ip)
				  : (const void *)ip_2_ip6(local_ip)->addr,
	       IP_IS_V4(local_ip) ? 4 : 16);
	memcpy(in + 17,
	       IP_IS_V4(remote_ip) ? (const void *)ip_2_ip4(remote_ip)
				   : (const void *)ip_2_ip6(remote_ip)->addr,
	       IP_IS_V4(remote_ip) ? 4 : 16);
	memcpy(in + 33, &local_port, 2);
	memcpy(in + 35, &remote_port, 2);
	unsigned char h[crypto_shorthash_BYTES];
	crypto_shorthash(h, in, sizeof in, key);
	u32_t f;
	memcpy(&f, h, sizeof f);
#ifdef NETSTACK_FIXED_RANDOM
	return f;
#else
	/* M: a timer that ticks every 4 microseconds. */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	u32_t m = (u32_t)(((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) / 4000u);
	return m + f;
#endif
}
