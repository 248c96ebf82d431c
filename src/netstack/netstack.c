/* The netstack's packet path: one lwIP netif with no link layer between the
 * WireGuard layer and lwIP, and lwIP's timers on the libuv loop. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "netstack_assert.h"
#include "netstack_internal.h"
#include "netstack_testing.h"

#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/ip4.h"
#include "lwip/ip4_frag.h"
#include "lwip/ip6.h"
#include "lwip/ip6_frag.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/stats.h"
#include "lwip/timeouts.h"

#define NETSTACK_IP4_HLEN 20
#define NETSTACK_IP6_HLEN 40
#define NETSTACK_PROTO_TCP 6
#define NETSTACK_PROTO_UDP 17
#define NETSTACK_TCP_SYN 0x02
#define NETSTACK_TCP_ACK 0x10

/* lwIP is one global stack: one netstack at a time. */
static struct netstack *netstack__instance;
static bool netstack__lwip_ready;

/* ---- Timers ------------------------------------------------------------ */

static void netstack__timer_cb(uv_timer_t *timer);

/* Arms the timer for lwIP's next timeout, unless it already fires sooner. */
void netstack__timer_arm(struct netstack *ns)
{
	u32_t sleep = sys_timeouts_sleeptime();
	if (sleep == SYS_TIMEOUTS_SLEEPTIME_INFINITE)
		return;
	uint64_t due = uv_now(ns->loop) + sleep;
	if (uv_is_active((uv_handle_t *)&ns->timer) && ns->timer_due <= due)
		return;
	ns->timer_due = due;
	uv_timer_start(&ns->timer, netstack__timer_cb, sleep, 0);
}

static void netstack__timer_cb(uv_timer_t *timer)
{
	struct netstack *ns = timer->data;
	sys_check_timeouts();
	netstack__timer_arm(ns);
}

_Static_assert(NETSTACK_TCP_TICK_MS == TCP_SLOW_INTERVAL, "test hook tick");
_Static_assert(NETSTACK_TCP_TIME_WAIT_MS == 2 * TCP_MSL, "test hook TIME-WAIT");

void netstack__test_tcp_ticks(struct netstack *ns, unsigned ticks)
{
	for (unsigned i = 0; i < ticks; i++) {
		tcp_fasttmr();
		tcp_slowtmr();
	}
	netstack__timer_arm(ns);
}

void netstack__test_fail_next_segment(void)
{
	netstack__fail_next_segment = true;
}

/* ---- Output: lwIP -> WireGuard ------------------------------------------ */

static err_t netstack__emit(struct netif *netif, struct pbuf *p)
{
	struct netstack *ns = netif->state;
	if (ns->closing)
		return ERR_OK;
	const uint8_t *pkt = p->payload;
	size_t len = p->tot_len;

	if (p->len != p->tot_len) {
		/* A chain (headers and data in separate pbufs): one copy into the
         * scratch buffer, which holds any chain (tot_len is 16 bits). */
		if (pbuf_copy_partial(p, ns->scratch, p->tot_len, 0) != p->tot_len)
			return ERR_BUF;
		pkt = ns->scratch;
		ns->stats.out_flattened++;
	}
	ns->stats.out_packets++;
	ns->stats.out_bytes += len;
	NETSTACK_UPCALL_ENTER();
	ns->ops.output(ns->ctx, pkt, len);
	NETSTACK_UPCALL_LEAVE();
	return ERR_OK;
}

static err_t netstack__output4(struct netif *netif, struct pbuf *p, const ip4_addr_t *dst)
{
	(void)dst; /* the caller routes by the header's destination */
	return netstack__emit(netif, p);
}

static err_t netstack__output6(struct netif *netif, struct pbuf *p, const ip6_addr_t *dst)
{
	(void)dst;
	return netstack__emit(netif, p);
}

static err_t netstack__netif_init(struct netif *netif)
{
	netif->name[0] = 'w';
	netif->name[1] = 'g';
	netif->output = netstack__output4;
	netif->output_ip6 = netstack__output6;
	/* Point-to-point: no broadcast, no ARP, no link-layer address. */
	netif->flags = 0;
	netif->hwaddr_len = 0;
	return ERR_OK;
}

/* ---- Input: WireGuard -> lwIP ------------------------------------------- */

/* What netstack_input learns from the headers before lwIP sees them. */
struct netstack_pkt {
	size_t total;       /* length the IP header claims */
	int version;        /* 4 or 6 */
	uint8_t proto;      /* upper-layer protocol */
	size_t l4off;       /* offset of its header, if first fragment */
	bool first;         /* unfragmented, or the first fragment */
	bool whole;         /* unfragmented */
	const uint8_t *dst; /* destination address, 4 or 16 bytes */
};

/* IPv6 extension headers, checked before lwIP sees them: lwIP 2.1.3's
 * ip6_input reads each header's length byte before checking that the header
 * is there (a packet whose chain ends at the end of the buffer makes it read
 * past it; found by fuzz_netstack_input). Every header must fit, every
 * option inside hop-by-hop and destination options must fit, and a first
 * fragment must hold the whole chain (RFC 8200 section 4.5). */
static bool netstack__ip6_chain(const uint8_t *pkt, struct netstack_pkt *pi)
{
	size_t total = pi->total;
	uint8_t nh = pkt[6];
	size_t off = NETSTACK_IP6_HLEN;
	for (;;) {
		size_t hlen;
		switch (nh) {
		case 0:  /* hop-by-hop options */
		case 60: /* destination options */
			if (total - off < 8)
				return false;
			hlen = 8 * (1 + (size_t)pkt[off + 1]);
			if (hlen > total - off)
				return false;
			for (size_t o = off + 2; o < off + hlen;) {
				if (pkt[o] == 0) { /* Pad1 */
					o++;
					continue;
				}
				if (off + hlen - o < 2 || off + hlen - o - 2 < pkt[o + 1])
					return false;
				o += 2 + (size_t)pkt[o + 1];
			}
			break;
		case 43: /* routing */
			if (total - off < 8)
				return false;
			hlen = 8 * (1 + (size_t)pkt[off + 1]);
			if (hlen > total - off)
				return false;
			break;
		case 44: /* fragment */
			if (total - off < 8)
				return false;
			hlen = 8;
			pi->whole = false;
			/* A later fragment carries payload only; reassembly re-parses
             * the chain of the first one, checked here. */
			if (((size_t)pkt[off + 2] << 8 | pkt[off + 3]) >> 3 != 0) {
				pi->proto = pkt[off];
				pi->first = false;
				return true;
			}
			break;
		default: /* upper layer, or no next header (59) */
			pi->proto = nh;
			pi->l4off = off;
			return true;
		}
		nh = pkt[off];
		off += hlen;
	}
}

/* Parses what lwIP must not be trusted with, or returns false after counting
 * why the packet is unusable. Cheap checks first; lwIP validates the rest. */
static bool netstack__parse(struct netstack *ns, const uint8_t *pkt, size_t len,
			    struct netstack_pkt *pi)
{
	if (len < 1) {
		ns->stats.drop_short++;
		return false;
	}
	pi->version = pkt[0] >> 4;
	pi->first = true;
	pi->whole = true;
	switch (pi->version) {
	case 4: {
		if (len < NETSTACK_IP4_HLEN) {
			ns->stats.drop_short++;
			return false;
		}
		size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
		pi->total = (size_t)pkt[2] << 8 | pkt[3];
		if (ihl < NETSTACK_IP4_HLEN || pi->total < ihl || pi->total > len) {
			ns->stats.drop_length++;
			return false;
		}
		pi->proto = pkt[9];
		pi->l4off = ihl;
		pi->first = (((size_t)pkt[6] << 8 | pkt[7]) & 0x1fff) == 0;
		pi->whole = (((size_t)pkt[6] << 8 | pkt[7]) & 0x3fff) == 0; /* no MF, offset 0 */
		pi->dst = pkt + 16;
		return true;
	}
	case 6:
		if (len < NETSTACK_IP6_HLEN) {
			ns->stats.drop_short++;
			return false;
		}
		pi->total = NETSTACK_IP6_HLEN + ((size_t)pkt[4] << 8 | pkt[5]);
		/* payload length 0 with data would be a jumbogram: refused. */
		if (pi->total > len || pi->total > NETSTACK_MAX_PACKET) {
			ns->stats.drop_length++;
			return false;
		}
		if (!netstack__ip6_chain(pkt, pi)) {
			ns->stats.drop_ext_header++;
			return false;
		}
		pi->dst = pkt + 24;
		return true;
	default:
		ns->stats.drop_version++;
		return false;
	}
}

/* Unicast destinations only: nothing is terminated for broadcast, multicast
 * or unspecified addresses. */
static bool netstack__unicast(const struct netstack_pkt *pi)
{
	const uint8_t *d = pi->dst;
	if (pi->version == 4) {
		static const uint8_t zero[4], ones[4] = { 255, 255, 255, 255 };
		return memcmp(d, zero, 4) != 0 && memcmp(d, ones, 4) != 0 && (d[0] & 0xf0) != 0xe0;
	}
	static const uint8_t zero6[16];
	return d[0] != 0xff && memcmp(d, zero6, 16) != 0;
}

/* TCP and UDP to any destination: a listener (on a SYN) or a bound UDP pcb
 * (on a datagram) for the destination port, both bound to the any address,
 * so lwIP takes the packet whatever address it was sent to. */
static void netstack__prepare_port(struct netstack *ns, const uint8_t *pkt,
				   const struct netstack_pkt *pi)
{
	if (!pi->first)
		return; /* reassembly completes on the first fragment's pcb */
	size_t l4len = pi->total - pi->l4off;
	const uint8_t *l4 = pkt + pi->l4off;
	if (pi->proto == NETSTACK_PROTO_TCP && l4len >= 20) {
		u16_t port = (u16_t)(l4[2] << 8 | l4[3]);
		uint8_t flags = l4[13];
		if (port != 0 && (flags & NETSTACK_TCP_SYN) && !(flags & NETSTACK_TCP_ACK))
			netstack__tcp_listen(ns, port);
	} else if (pi->proto == NETSTACK_PROTO_UDP && l4len >= 8) {
		u16_t port = (u16_t)(l4[2] << 8 | l4[3]);
		if (port != 0)
			netstack__udp_bind(ns, port);
	}
}

/* lwIP's input with the assert trap set (netstack_assert.h). False when an
 * assert unwound it. Its own function, so that nothing of the caller's
 * lives across setjmp. */
static __attribute__((noinline)) bool netstack__guarded_input(struct netif *netif, struct pbuf *p,
							      int version)
{
	netstack_trap trap;
	if (__builtin_setjmp(trap) != 0)
		return false;
	netstack__assert_trap = &trap;
	if (version == 4)
		ip4_input(p, netif);
	else
		ip6_input(p, netif);
	netstack__assert_trap = NULL;
	return true;
}

/* Resets the TCP connection a packet belongs to, if there is one. */
static void netstack__reset_conn(const uint8_t *pkt, const struct netstack_pkt *pi)
{
	ip_addr_t src, dst;
	if (pi->version == 4) {
		IP_ADDR4(&src, pkt[12], pkt[13], pkt[14], pkt[15]);
		IP_ADDR4(&dst, pkt[16], pkt[17], pkt[18], pkt[19]);
	} else {
		memset(&src, 0, sizeof src);
		memset(&dst, 0, sizeof dst);
		IP_SET_TYPE(&src, IPADDR_TYPE_V6);
		IP_SET_TYPE(&dst, IPADDR_TYPE_V6);
		memcpy(ip_2_ip6(&src)->addr, pkt + 8, 16);
		memcpy(ip_2_ip6(&dst)->addr, pkt + 24, 16);
	}
	u16_t sport = (u16_t)(pkt[pi->l4off] << 8 | pkt[pi->l4off + 1]);
	u16_t dport = (u16_t)(pkt[pi->l4off + 2] << 8 | pkt[pi->l4off + 3]);
	for (struct tcp_pcb *pcb = tcp_active_pcbs; pcb != NULL; pcb = pcb->next) {
		if (pcb->remote_port == sport && pcb->local_port == dport &&
		    ip_addr_cmp(&pcb->remote_ip, &src) && ip_addr_cmp(&pcb->local_ip, &dst)) {
			tcp_abort(pcb); /* reset; on_err tells the upper layer */
			return;
		}
	}
}

/* A failed lwIP assert while it processed this packet (arch/sys_arch.c):
 * the TCP connection it belongs to, if any, is reset, since lwIP's state
 * for it is no longer trusted, and the packet is dropped. `p` is a whole
 * TCP segment that netstack_input holds a reference to: nothing refers to
 * it once its pcb is gone, whatever frame lwIP abandoned, so it is freed.
 * Any other packet (NULL here) may sit in a reassembly queue: left. */
static void netstack__contain(struct netstack *ns, const uint8_t *pkt,
			      const struct netstack_pkt *pi, struct pbuf *p)
{
	ns->stats.drop_lwip_assert++;
	tcp_input_pcb = NULL;
	if (p == NULL)
		return;
	if (pi->total >= pi->l4off + 4)
		netstack__reset_conn(pkt, pi);
	p->ref = 1;
	pbuf_free(p);
}

void netstack_input(struct netstack *ns, const uint8_t *pkt, size_t len)
{
	struct netstack_pkt pi = { 0 };
	if (!netstack__parse(ns, pkt, len, &pi))
		return;

	/* One exact-size pbuf: lwIP may keep it (TCP receive and out-of-order
     * queues, reassembly), so the bytes must be copied out of the caller's
     * buffer. */
	struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)pi.total, PBUF_RAM);
	if (p == NULL) {
		ns->stats.drop_nomem++;
		return;
	}
	memcpy(p->payload, pkt, pi.total);
	ns->stats.in_packets++;
	ns->stats.in_bytes += pi.total;

	bool terminate = (pi.proto == NETSTACK_PROTO_TCP || pi.proto == NETSTACK_PROTO_UDP) &&
			 netstack__unicast(&pi);
	if (terminate)
		netstack__prepare_port(ns, pkt, &pi);

	/* lwIP takes only packets for the netif's own addresses. For TCP and UDP
     * the netif briefly wears the packet's destination (single thread, no
     * lwIP callbacks on the change); pcbs keep their own local address, so
     * replies leave from the address the client dialled. ip4_input and
     * ip6_input always take ownership of a reference to the pbuf. */
	ip4_addr_t *own4 = ip_2_ip4(&ns->netif.ip_addr);
	u32_t saved4 = own4->addr;
	ip6_addr_t *slot6 = ip_2_ip6(&ns->netif.ip6_addr[NETSTACK_IP6_SLOT_DEST]);
	if (pi.version == 4) {
		if (terminate)
			memcpy(&own4->addr, pi.dst, 4);
	} else if (terminate) {
		memcpy(slot6->addr, pi.dst, 16);
		ns->netif.ip6_addr_state[NETSTACK_IP6_SLOT_DEST] = IP6_ADDR_PREFERRED;
	}
	/* A reference of our own to a whole TCP segment, so that after a
     * contained assert it is freed exactly once. Not for other packets:
     * lwIP answers an echo request in place, and asserts it holds the only
     * reference. */
	bool ref = pi.proto == NETSTACK_PROTO_TCP && pi.whole;
	if (ref)
		pbuf_ref(p);
	bool ok = netstack__guarded_input(&ns->netif, p, pi.version);
	own4->addr = saved4;
	ns->netif.ip6_addr_state[NETSTACK_IP6_SLOT_DEST] = IP6_ADDR_INVALID;
	if (!ok)
		netstack__contain(ns, pkt, &pi, ref ? p : NULL);
	else if (ref)
		pbuf_free(p);

	netstack__timer_arm(ns);
}

/* ---- Addresses ---------------------------------------------------------- */

void netstack__sockaddr_from_ip(const ip_addr_t *ip, u16_t port, union netstack_sockaddr *out)
{
	memset(out, 0, sizeof *out);
	if (IP_IS_V4(ip)) {
		out->in4.sin_family = AF_INET;
		out->in4.sin_port = htons(port);
		out->in4.sin_addr.s_addr = ip_2_ip4(ip)->addr;
	} else {
		out->in6.sin6_family = AF_INET6;
		out->in6.sin6_port = htons(port);
		memcpy(out->in6.sin6_addr.s6_addr, ip_2_ip6(ip)->addr, 16);
	}
}

bool netstack__ip_from_sockaddr(const struct sockaddr *sa, ip_addr_t *ip, u16_t *port)
{
	memset(ip, 0, sizeof *ip);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
		IP_SET_TYPE(ip, IPADDR_TYPE_V4);
		ip_2_ip4(ip)->addr = in4->sin_addr.s_addr;
		*port = ntohs(in4->sin_port);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		IP_SET_TYPE(ip, IPADDR_TYPE_V6);
		memcpy(ip_2_ip6(ip)->addr, in6->sin6_addr.s6_addr, 16);
		*port = ntohs(in6->sin6_port);
		return true;
	}
	return false;
}

/* ---- Life cycle --------------------------------------------------------- */

static void netstack__stats_reset(void)
{
	/* Only the protocol counters: the memp entries point at pool descriptors. */
	memset(&lwip_stats.link, 0, sizeof lwip_stats.link);
	memset(&lwip_stats.ip, 0, sizeof lwip_stats.ip);
	memset(&lwip_stats.ip_frag, 0, sizeof lwip_stats.ip_frag);
	memset(&lwip_stats.icmp, 0, sizeof lwip_stats.icmp);
	memset(&lwip_stats.udp, 0, sizeof lwip_stats.udp);
	memset(&lwip_stats.tcp, 0, sizeof lwip_stats.tcp);
	memset(&lwip_stats.ip6, 0, sizeof lwip_stats.ip6);
	memset(&lwip_stats.icmp6, 0, sizeof lwip_stats.icmp6);
	memset(&lwip_stats.ip6_frag, 0, sizeof lwip_stats.ip6_frag);
	memset(&lwip_stats.nd6, 0, sizeof lwip_stats.nd6);
	netstack__syn_limited = 0;
	memset(&lwip_stats.mem, 0, sizeof lwip_stats.mem);
}

struct netstack *netstack_new(uv_loop_t *loop, const struct netstack_config *cfg,
			      const struct netstack_ops *ops, void *ctx)
{
	if (loop == NULL || cfg == NULL || ops == NULL || ops->output == NULL ||
	    (cfg->mtu != 0 && cfg->mtu < 1280) ||
	    cfg->keepalive_idle_s > NETSTACK_MAX_KEEPALIVE_IDLE_S) {
		errno = EINVAL;
		return NULL;
	}
	if (netstack__instance != NULL) {
		errno = EBUSY;
		return NULL;
	}
	if (sodium_init() < 0) { /* LWIP_RAND */
		errno = ENOMEM;
		return NULL;
	}

	struct netstack *ns = calloc(1, sizeof *ns);
	if (ns == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	ns->loop = loop;
	ns->ops = *ops;
	ns->ctx = ctx;
	ns->max_tcp = cfg->max_tcp != 0 ? cfg->max_tcp : NETSTACK_DEFAULT_MAX_TCP;
	ns->keep_idle_ms = 1000u * (cfg->keepalive_idle_s != 0 ? cfg->keepalive_idle_s
							       : NETSTACK_DEFAULT_KEEPALIVE_IDLE_S);

	if (!netstack__lwip_ready) {
		lwip_init();
		netstack__lwip_ready = true;
	}
	netstack__stats_reset();

	ip4_addr_t addr4, mask4, gw4;
	addr4.addr = cfg->addr4.s_addr;
	mask4.addr = PP_HTONL(0xffffffffUL);
	ip4_addr_set_zero(&gw4);
	if (netif_add(&ns->netif, &addr4, &mask4, &gw4, ns, netstack__netif_init, ip_input) ==
	    NULL) {
		free(ns);
		errno = ENOMEM;
		return NULL;
	}
	ns->netif.mtu = cfg->mtu != 0 ? cfg->mtu : NETSTACK_DEFAULT_MTU;

	static const struct in6_addr none6 = IN6ADDR_ANY_INIT;
	if (memcmp(&cfg->addr6, &none6, sizeof none6) != 0) {
		ip6_addr_t addr6;
		memset(&addr6, 0, sizeof addr6);
		memcpy(addr6.addr, cfg->addr6.s6_addr, sizeof addr6.addr);
		netif_ip6_addr_set(&ns->netif, 0, &addr6);
		/* Valid at once: there is no one to detect duplicates with. */
		netif_ip6_addr_set_state(&ns->netif, 0, IP6_ADDR_PREFERRED);
	}
	netif_set_default(&ns->netif);
	netif_set_link_up(&ns->netif);
	netif_set_up(&ns->netif);

	uv_timer_init(loop, &ns->timer);
	ns->timer.data = ns;
	/* The WireGuard socket keeps the loop alive; lwIP's timers alone don't. */
	uv_unref((uv_handle_t *)&ns->timer);
	netstack__timer_arm(ns);

	netstack__instance = ns;
	return ns;
}

void netstack_set_max_tcp(struct netstack *ns, uint32_t max_tcp)
{
	ns->max_tcp = max_tcp != 0 ? max_tcp : NETSTACK_DEFAULT_MAX_TCP;
}

void netstack_get_stats(const struct netstack *ns, struct netstack_stats *out)
{
	*out = ns->stats;
	out->tcp_syn_limited = netstack__syn_limited;
	out->tcp_time_wait = 0;
	for (const struct tcp_pcb *pcb = tcp_tw_pcbs; pcb != NULL; pcb = pcb->next)
		out->tcp_time_wait++;
	out->lwip_ip4_drop = lwip_stats.ip.drop;
	out->lwip_ip6_drop = lwip_stats.ip6.drop;
	out->lwip_icmp4_drop = lwip_stats.icmp.drop;
	out->lwip_icmp6_drop = lwip_stats.icmp6.drop;
	out->lwip_tcp_drop = lwip_stats.tcp.drop;
	out->lwip_udp_drop = lwip_stats.udp.drop;
	out->lwip_frag_drop = (uint64_t)lwip_stats.ip_frag.drop + lwip_stats.ip6_frag.drop;
	out->lwip_mem_err =
		(uint64_t)lwip_stats.ip.memerr + lwip_stats.ip6.memerr + lwip_stats.icmp.memerr +
		lwip_stats.icmp6.memerr + lwip_stats.tcp.memerr + lwip_stats.udp.memerr +
		lwip_stats.ip_frag.memerr + lwip_stats.ip6_frag.memerr + lwip_stats.mem.err;
}

static void netstack__close_cb(uv_handle_t *handle)
{
	free(handle->data);
}

/* Frees what lwIP still holds for this netstack's traffic, so the next
 * netstack starts clean: incomplete reassemblies expire after MAXAGE ticks of
 * their timers (their "time exceeded" errors go nowhere: closing is set). */
static void netstack__flush(void)
{
	for (int i = 0; i <= IP_REASS_MAXAGE; i++)
		ip_reass_tmr();
	for (int i = 0; i <= IPV6_REASS_MAXAGE; i++)
		ip6_reass_tmr();
}

void netstack_free(struct netstack *ns)
{
	if (ns == NULL)
		return;
	ns->closing = true;
	netstack__tcp_free_all(ns);
	netstack__udp_free_all(ns);
	netstack__flush();
	netif_set_down(&ns->netif);
	netif_remove(&ns->netif);
	if (netstack__instance == ns)
		netstack__instance = NULL;
	uv_timer_stop(&ns->timer);
	uv_close((uv_handle_t *)&ns->timer, netstack__close_cb);
}
