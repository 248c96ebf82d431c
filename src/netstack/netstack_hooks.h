/* lwIP hooks (LWIP_HOOK_FILENAME). Included by lwIP's ip4.c and ip6.c
 * after lwIP's own headers, so lwIP types are known here.
 *
 * The input hooks see every inbound packet before lwIP's "is it for one of
 * my addresses" check. They are where packets to any destination get
 * accepted (TCP/UDP termination for whatever address the client dialled).
 * Return nonzero when the hook consumed (and freed) the pbuf. */
#ifndef WGMITM_NETSTACK_HOOKS_H
#define WGMITM_NETSTACK_HOOKS_H

struct pbuf;
struct netif;

int netstack__hook_ip4_input(struct pbuf *p, struct netif *inp);
int netstack__hook_ip6_input(struct pbuf *p, struct netif *inp);

#define LWIP_HOOK_IP4_INPUT(p, inp) netstack__hook_ip4_input((p), (inp))
#define LWIP_HOOK_IP6_INPUT(p, inp) netstack__hook_ip6_input((p), (inp))

#endif
