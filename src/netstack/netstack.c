/* The netstack's packet path: one lwIP netif with no link layer between the
 * WireGuard layer and lwIP, and lwIP's timers on the libuv loop. */
#include "netstack.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/ip4.h"
#include "lwip/ip4_frag.h"
#include "lwip/ip6.h"
#include "lwip/ip6_frag.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/stats.h"
#include "lwip/timeouts.h"

#include "netstack_hooks.h"

/* An IP datagram's length field is 16 bits (IPv6: payload + 40 fixed bytes;
 * jumbograms are refused), and so is a pbuf chain's tot_len. */
#define NETSTACK_MAX_PACKET 0xffff
#define NETSTACK_IP4_HLEN   20
#define NETSTACK_IP6_HLEN   40

struct netstack {
    uv_loop_t *loop;
    uv_timer_t timer;        /* drives sys_check_timeouts */
    uint64_t timer_due;      /* loop time the armed timer fires at */
    bool closing;            /* netstack_free: emit nothing more */
    struct netstack_ops ops;
    void *ctx;
    struct netif netif;
    struct netstack_stats stats;
    /* Outbound pbuf chains are flattened here, never into a fresh buffer. */
    uint8_t scratch[NETSTACK_MAX_PACKET];
};

/* lwIP is one global stack: one netstack at a time. */
static struct netstack *netstack__instance;
static bool netstack__lwip_ready;

/* ---- Timers ------------------------------------------------------------ */

static void netstack__timer_cb(uv_timer_t *timer);

/* Arms the timer for lwIP's next timeout, unless it already fires sooner. */
static void netstack__timer_arm(struct netstack *ns)
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
    ns->ops.output(ns->ctx, pkt, len);
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

/* ---- Input hooks (see netstack_hooks.h) --------------------------------- */

int netstack__hook_ip4_input(struct pbuf *p, struct netif *inp)
{
    (void)p;
    (void)inp;
    return 0; /* not consumed: lwIP's normal input path */
}

int netstack__hook_ip6_input(struct pbuf *p, struct netif *inp)
{
    (void)p;
    (void)inp;
    return 0;
}

/* ---- Input: WireGuard -> lwIP ------------------------------------------- */

/* IPv6 extension headers, checked before lwIP sees them: lwIP 2.1.3's
 * ip6_input reads each header's length byte before checking that the header
 * is there (a packet whose chain ends at the end of the buffer makes it read
 * past it; found by fuzz_netstack_input). Every header must fit, every
 * option inside hop-by-hop and destination options must fit, and a first
 * fragment must hold the whole chain (RFC 8200 section 4.5). */
static bool netstack__ip6_chain_ok(const uint8_t *pkt, size_t total)
{
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
            /* A later fragment carries payload only; reassembly re-parses
             * the chain of the first one, checked here. */
            if (((size_t)pkt[off + 2] << 8 | pkt[off + 3]) >> 3 != 0)
                return true;
            break;
        default: /* upper layer, or no next header (59) */
            return true;
        }
        nh = pkt[off];
        off += hlen;
    }
}

/* The length the IP header claims for the packet, or 0 after counting the
 * reason it is unusable. Cheap checks first; lwIP validates the rest. */
static size_t netstack__ip_length(struct netstack *ns, const uint8_t *pkt, size_t len)
{
    if (len < 1) {
        ns->stats.drop_short++;
        return 0;
    }
    switch (pkt[0] >> 4) {
    case 4: {
        if (len < NETSTACK_IP4_HLEN) {
            ns->stats.drop_short++;
            return 0;
        }
        size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
        size_t total = (size_t)pkt[2] << 8 | pkt[3];
        if (ihl < NETSTACK_IP4_HLEN || total < ihl || total > len) {
            ns->stats.drop_length++;
            return 0;
        }
        return total;
    }
    case 6: {
        if (len < NETSTACK_IP6_HLEN) {
            ns->stats.drop_short++;
            return 0;
        }
        size_t total = NETSTACK_IP6_HLEN + ((size_t)pkt[4] << 8 | pkt[5]);
        /* payload length 0 with data would be a jumbogram: refused. */
        if (total > len || total > NETSTACK_MAX_PACKET) {
            ns->stats.drop_length++;
            return 0;
        }
        if (!netstack__ip6_chain_ok(pkt, total)) {
            ns->stats.drop_ext_header++;
            return 0;
        }
        return total;
    }
    default:
        ns->stats.drop_version++;
        return 0;
    }
}

void netstack_input(struct netstack *ns, const uint8_t *pkt, size_t len)
{
    size_t total = netstack__ip_length(ns, pkt, len);
    if (total == 0)
        return;

    /* One exact-size pbuf: lwIP may keep it (TCP receive and out-of-order
     * queues, reassembly), so the bytes must be copied out of the caller's
     * buffer. */
    struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)total, PBUF_RAM);
    if (p == NULL) {
        ns->stats.drop_nomem++;
        return;
    }
    memcpy(p->payload, pkt, total);
    ns->stats.in_packets++;
    ns->stats.in_bytes += total;

    /* ip4_input and ip6_input always take ownership of the pbuf. */
    if ((pkt[0] >> 4) == 4)
        ip4_input(p, &ns->netif);
    else
        ip6_input(p, &ns->netif);

    netstack__timer_arm(ns);
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
    memset(&lwip_stats.mem, 0, sizeof lwip_stats.mem);
}

struct netstack *netstack_new(uv_loop_t *loop, const struct netstack_config *cfg,
                              const struct netstack_ops *ops, void *ctx)
{
    if (loop == NULL || cfg == NULL || ops == NULL || ops->output == NULL ||
        (cfg->mtu != 0 && cfg->mtu < 1280)) {
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

    if (!netstack__lwip_ready) {
        lwip_init();
        netstack__lwip_ready = true;
    }
    netstack__stats_reset();

    ip4_addr_t addr4, mask4, gw4;
    addr4.addr = cfg->addr4.s_addr;
    mask4.addr = PP_HTONL(0xffffffffUL);
    ip4_addr_set_zero(&gw4);
    if (netif_add(&ns->netif, &addr4, &mask4, &gw4, ns, netstack__netif_init, ip_input) == NULL) {
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

void netstack_get_stats(const struct netstack *ns, struct netstack_stats *out)
{
    *out = ns->stats;
    out->lwip_ip4_drop = lwip_stats.ip.drop;
    out->lwip_ip6_drop = lwip_stats.ip6.drop;
    out->lwip_icmp4_drop = lwip_stats.icmp.drop;
    out->lwip_icmp6_drop = lwip_stats.icmp6.drop;
    out->lwip_tcp_drop = lwip_stats.tcp.drop;
    out->lwip_udp_drop = lwip_stats.udp.drop;
    out->lwip_frag_drop = (uint64_t)lwip_stats.ip_frag.drop + lwip_stats.ip6_frag.drop;
    out->lwip_mem_err = (uint64_t)lwip_stats.ip.memerr + lwip_stats.ip6.memerr +
                        lwip_stats.icmp.memerr + lwip_stats.icmp6.memerr +
                        lwip_stats.tcp.memerr + lwip_stats.udp.memerr +
                        lwip_stats.ip_frag.memerr + lwip_stats.ip6_frag.memerr +
                        lwip_stats.mem.err;
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
    netstack__flush();
    netif_set_down(&ns->netif);
    netif_remove(&ns->netif);
    if (netstack__instance == ns)
        netstack__instance = NULL;
    uv_timer_stop(&ns->timer);
    uv_close((uv_handle_t *)&ns->timer, netstack__close_cb);
}
