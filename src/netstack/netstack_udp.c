/* UDP datagrams to any destination. lwIP's UDP is used for its checksums,
 * IPv6 and fragmentation; the netstack keeps no per-flow state: one pcb per
 * destination port, bound to the any address, serves every destination
 * address and every client, and the upper layer tracks flows. */
#include <errno.h>
#include <string.h>

#include "netstack_assert.h"
#include "netstack_internal.h"

#include "lwip/ip.h"

static void netstack__udp_on_recv(void *arg, struct udp_pcb *pcb, struct pbuf *p,
				  const ip_addr_t *addr, u16_t port)
{
	struct netstack *ns = arg;
	if (ns->ops.udp_recv == NULL) {
		ns->stats.udp_drop++;
		pbuf_free(p);
		return;
	}
	const uint8_t *data = p->payload;
	if (p->len != p->tot_len) { /* reassembled: a chain */
		pbuf_copy_partial(p, ns->rx_scratch, p->tot_len, 0);
		data = ns->rx_scratch;
	}
	union netstack_sockaddr client, dest;
	netstack__sockaddr_from_ip(addr, port, &client);
	netstack__sockaddr_from_ip(ip_current_dest_addr(), pcb->local_port, &dest);
	ns->stats.udp_in++;
	NETSTACK_UPCALL_ENTER();
	ns->ops.udp_recv(ns->ctx, &client.sa, &dest.sa, data, p->tot_len);
	NETSTACK_UPCALL_LEAVE();
	pbuf_free(p);
}

struct udp_pcb *netstack__udp_bind(struct netstack *ns, u16_t port)
{
	if (ns->udp_bound[port] != NULL)
		return ns->udp_bound[port];
	struct udp_pcb *pcb = udp_new_ip_type(IPADDR_TYPE_ANY);
	if (pcb == NULL) {
		ns->stats.udp_drop++;
		return NULL;
	}
	if (udp_bind(pcb, IP_ANY_TYPE, port) != ERR_OK) {
		udp_remove(pcb);
		ns->stats.udp_drop++;
		return NULL;
	}
	udp_recv(pcb, netstack__udp_on_recv, ns);
	ns->udp_bound[port] = pcb;
	return pcb;
}

void netstack__udp_free_all(struct netstack *ns)
{
	/* Every UDP pcb is ours: walk lwIP's list, not all 65536 ports. */
	while (udp_pcbs != NULL) {
		ns->udp_bound[udp_pcbs->local_port] = NULL;
		udp_remove(udp_pcbs);
	}
}

int netstack_udp_send(struct netstack *ns, const struct sockaddr *from, const struct sockaddr *to,
		      const uint8_t *data, size_t len)
{
	ip_addr_t src, dst;
	u16_t sport, dport;
	if (!netstack__ip_from_sockaddr(from, &src, &sport) ||
	    !netstack__ip_from_sockaddr(to, &dst, &dport) || from->sa_family != to->sa_family ||
	    sport == 0)
		return -EAFNOSUPPORT;
	size_t max = NETSTACK_MAX_PACKET - 8 - (from->sa_family == AF_INET ? 20 : 40);
	if (len > max)
		return -EMSGSIZE;
	struct udp_pcb *pcb = netstack__udp_bind(ns, sport);
	if (pcb == NULL)
		return -ENOMEM;
	/* PBUF_TRANSPORT leaves room for the UDP and IP headers in front, so
     * the packet leaves as one buffer unless it is fragmented. */
	struct pbuf *p = pbuf_alloc(PBUF_TRANSPORT, (u16_t)len, PBUF_RAM);
	if (p == NULL)
		return -ENOMEM;
	memcpy(p->payload, data, len);
	err_t err = udp_sendto_if_src(pcb, p, &dst, dport, &ns->netif, &src);
	pbuf_free(p);
	if (err != ERR_OK)
		return err == ERR_MEM ? -ENOMEM : -EMSGSIZE;
	ns->stats.udp_out++;
	netstack__timer_arm(ns);
	return 0;
}
