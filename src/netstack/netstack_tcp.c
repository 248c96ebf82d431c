/* TCP connections to any destination, terminated in lwIP and exposed as
 * byte streams with backpressure.
 *
 * Ownership: lwIP owns the pcb; struct netstack_tcp is ours. The two are
 * tied by tcp_arg until either side lets go:
 *   - lwIP frees the pcb (reset, give-up, orderly close): tcp_err fires, we
 *     tell the upper layer (ops.closed) and free the handle;
 *   - the upper layer closes or aborts: we detach the pcb's callbacks first
 *     (lwIP finishes or resets it alone) and free the handle.
 * The handle is never freed while one of its callbacks into the upper layer
 * is running (depth), so closing from inside a callback is safe. A callback
 * that aborts its own pcb must return ERR_ABRT to lwIP (aborted_in_cb). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "netstack_assert.h"
#include "netstack_internal.h"

#include "lwip/priv/tcp_priv.h"

struct netstack_tcp {
	struct stream st; /* first: the stream ops find the handle from it */
	struct netstack *ns;
	struct tcp_pcb *pcb;              /* NULL once lwIP freed it or we let go */
	struct netstack_tcp *prev, *next; /* ns->conns */
	struct stream_cb ops;
	void *arg;
	struct pbuf *held;   /* received, not yet delivered */
	unsigned depth;      /* upper-layer callbacks running */
	unsigned in_lwip_cb; /* lwIP callbacks for this pcb running */
	bool paused;
	bool delivering;
	bool draining;    /* final delivery: pause no longer holds data */
	bool fin_pending; /* client FIN seen, not yet delivered */
	bool fin_delivered;
	bool done;          /* no more upper-layer callbacks */
	bool aborted_in_cb; /* pcb aborted inside its own callback */
};

static int netstack__tcp_errno(err_t err)
{
	switch (err) {
	case ERR_CLSD:
	case ERR_OK:
		return 0;
	case ERR_RST:
		return -ECONNRESET;
	case ERR_MEM:
		return -ENOMEM;
	default:
		return -ECONNABORTED;
	}
}

static void netstack__tcp_detach(struct tcp_pcb *pcb)
{
	tcp_arg(pcb, NULL);
	tcp_recv(pcb, NULL); /* lwIP's default then acks and drops data, closes on FIN */
	tcp_sent(pcb, NULL);
	tcp_err(pcb, NULL);
	tcp_poll(pcb, NULL, 0);
}

static void netstack__tcp_maybe_free(struct netstack_tcp *conn)
{
	if (!conn->done || conn->pcb != NULL || conn->depth != 0 || conn->delivering ||
	    conn->in_lwip_cb != 0)
		return;
	struct netstack *ns = conn->ns;
	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		ns->conns = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	if (conn->held != NULL)
		pbuf_free(conn->held);
	free(conn);
}

/* The upper layer consumed `len` bytes: open the window by as much. */
static void netstack__tcp_recved(struct netstack_tcp *conn, size_t len)
{
	while (conn->pcb != NULL && len > 0) {
		u16_t n = len > 0xffff ? 0xffff : (u16_t)len; /* tcp_recved takes u16 */
		tcp_recved(conn->pcb, n);
		len -= n;
	}
}

/* Hands held data (then a pending FIN) to the upper layer until it pauses,
 * closes, or nothing is left. Not re-entered: a resume from inside recv
 * just lets this loop continue. While draining, pausing holds nothing back
 * (the connection is over; see netstack__tcp_finish). */
static void netstack__tcp_deliver(struct netstack_tcp *conn)
{
	if (conn->delivering)
		return;
	conn->delivering = true;
	while ((!conn->paused || conn->draining) && !conn->done && conn->held != NULL) {
		struct pbuf *q = conn->held;
		u16_t n = q->len;
		if (n > 0) {
			conn->depth++;
			conn->ops.recv(conn->arg, q->payload, n);
			conn->depth--;
			if (conn->done)
				break; /* close/abort already acknowledged what was held */
		}
		conn->held = pbuf_free_header(q, n);
		netstack__tcp_recved(conn, n);
	}
	if ((!conn->paused || conn->draining) && !conn->done && conn->held == NULL &&
	    conn->fin_pending && !conn->fin_delivered) {
		conn->fin_delivered = true;
		conn->depth++;
		conn->ops.recv(conn->arg, NULL, 0);
		conn->depth--;
	}
	conn->delivering = false;
}

/* Both directions are closed: the client's FIN arrived after ours
 * (CLOSING, TIME-WAIT) or acknowledged it (LAST-ACK, the pcb is gone).
 * lwIP keeps what is left of the pcb to itself (it frees TIME-WAIT pcbs
 * without a callback, so the handle must not keep it). Data held by a
 * pause was already acknowledged to the client: it is delivered now,
 * whatever the pause says (at most one window), then the FIN, then
 * closed(0). */
static void netstack__tcp_finish(struct netstack_tcp *conn)
{
	struct netstack *ns = conn->ns;
	if (conn->pcb != NULL) {
		netstack__tcp_detach(conn->pcb);
		conn->pcb = NULL;
		ns->stats.tcp_active--;
	}
	if (conn->done || ns->closing)
		return;
	conn->draining = true;
	netstack__tcp_deliver(conn);
	conn->draining = false;
	if (!conn->done && conn->ops.closed != NULL) {
		conn->done = true;
		conn->depth++;
		conn->ops.closed(conn->arg, 0);
		conn->depth--;
	}
	conn->done = true;
}

/* ---- lwIP callbacks ------------------------------------------------------ */

static err_t netstack__tcp_on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
	struct netstack_tcp *conn = arg;
	(void)err; /* always ERR_OK in lwIP 2.1 */
	if (p == NULL)
		conn->fin_pending = true;
	else if (conn->held == NULL)
		conn->held = p;
	else
		pbuf_cat(conn->held, p);

	conn->in_lwip_cb++;
	if (p == NULL && (pcb->state == CLOSING || pcb->state == TIME_WAIT))
		netstack__tcp_finish(conn); /* we had shut down first */
	else
		netstack__tcp_deliver(conn);
	conn->in_lwip_cb--;
	struct netstack *ns = conn->ns;
	bool aborted = conn->aborted_in_cb;
	conn->aborted_in_cb = false;
	netstack__tcp_maybe_free(conn); /* conn may be gone from here on */
	netstack__timer_arm(ns);
	return aborted ? ERR_ABRT : ERR_OK;
}

static err_t netstack__tcp_on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
	struct netstack_tcp *conn = arg;
	(void)pcb;
	if (conn->done || conn->ops.sent == NULL)
		return ERR_OK;
	conn->in_lwip_cb++;
	conn->depth++;
	conn->ops.sent(conn->arg, len);
	conn->depth--;
	conn->in_lwip_cb--;
	bool aborted = conn->aborted_in_cb;
	conn->aborted_in_cb = false;
	netstack__tcp_maybe_free(conn);
	return aborted ? ERR_ABRT : ERR_OK;
}

/* lwIP has already freed the pcb. */
static void netstack__tcp_on_err(void *arg, err_t err)
{
	struct netstack_tcp *conn = arg;
	struct netstack *ns = conn->ns;
	conn->pcb = NULL;
	ns->stats.tcp_active--;
	if (err == ERR_CLSD) {
		netstack__tcp_finish(conn); /* LAST-ACK acknowledged: orderly */
	} else if (!conn->done && !ns->closing && conn->ops.closed != NULL) {
		conn->done = true;
		conn->depth++;
		conn->ops.closed(conn->arg, netstack__tcp_errno(err));
		conn->depth--;
	}
	conn->done = true;
	netstack__tcp_maybe_free(conn);
}

/* lwIP probes idle connections in ESTABLISHED and CLOSE-WAIT only. After
 * our FIN is acknowledged (FIN-WAIT-2) the client may still send, and a
 * client that vanishes then would hold the connection forever (lwIP's
 * FIN-WAIT-2 timeout applies only after tcp_close): the same probes, with
 * the same timing, from the poll timer that netstack_tcp_shutdown starts. */
static err_t netstack__tcp_on_poll(void *arg, struct tcp_pcb *pcb)
{
	(void)arg;
	if (pcb->state != FIN_WAIT_2 || !ip_get_option(pcb, SOF_KEEPALIVE))
		return ERR_OK;
	u32_t idle = tcp_ticks - pcb->tmr;
	if (idle > (pcb->keep_idle + pcb->keep_cnt * pcb->keep_intvl) / TCP_SLOW_INTERVAL) {
		tcp_abort(pcb); /* reset; on_err reports -ECONNABORTED and frees conn */
		return ERR_ABRT;
	}
	if (idle > (pcb->keep_idle + pcb->keep_cnt_sent * pcb->keep_intvl) / TCP_SLOW_INTERVAL &&
	    tcp_keepalive(pcb) == ERR_OK)
		pcb->keep_cnt_sent++;
	return ERR_OK;
}

/* lwIP calls these; each counts as an upcall (netstack_assert.h): a failed
 * assert below one of them must not unwind through our code. */
#define NETSTACK_TCP_UPCALL(name, params, args)                                                    \
	static err_t name##_upcall params                                                          \
	{                                                                                          \
		NETSTACK_UPCALL_ENTER();                                                           \
		err_t r = name args;                                                               \
		NETSTACK_UPCALL_LEAVE();                                                           \
		return r;                                                                          \
	}
NETSTACK_TCP_UPCALL(netstack__tcp_on_recv,
		    (void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err), (arg, pcb, p, err))
NETSTACK_TCP_UPCALL(netstack__tcp_on_sent, (void *arg, struct tcp_pcb *pcb, u16_t len),
		    (arg, pcb, len))
NETSTACK_TCP_UPCALL(netstack__tcp_on_poll, (void *arg, struct tcp_pcb *pcb), (arg, pcb))

static void netstack__tcp_on_err_upcall(void *arg, err_t err)
{
	NETSTACK_UPCALL_ENTER();
	netstack__tcp_on_err(arg, err);
	NETSTACK_UPCALL_LEAVE();
}

/* The handshake completed on a port's listener. */
static const struct stream_ops netstack__tcp_stream_ops;

static err_t netstack__tcp_on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
	struct netstack *ns = arg;
	if (pcb == NULL || err != ERR_OK) {
		ns->stats.tcp_refused++; /* lwIP could not allocate the pcb */
		return ERR_VAL;
	}
	struct netstack_tcp *conn = NULL;
	if (ns->ops.tcp_accept != NULL && ns->stats.tcp_active < ns->max_tcp)
		conn = calloc(1, sizeof *conn);
	if (conn == NULL) {
		ns->stats.tcp_refused++;
		tcp_abort(pcb);
		return ERR_ABRT;
	}
	conn->st.ops = &netstack__tcp_stream_ops;
	conn->ns = ns;
	conn->pcb = pcb;
	conn->next = ns->conns;
	if (ns->conns != NULL)
		ns->conns->prev = conn;
	ns->conns = conn;
	ns->stats.tcp_active++;
	tcp_arg(pcb, conn);
	tcp_recv(pcb, netstack__tcp_on_recv_upcall);
	tcp_sent(pcb, netstack__tcp_on_sent_upcall);
	tcp_err(pcb, netstack__tcp_on_err_upcall);
	tcp_nagle_disable(pcb); /* a relay: the upper layer already batches */
	ip_set_option(pcb, SOF_KEEPALIVE);
	pcb->keep_idle = ns->keep_idle_ms;
	pcb->keep_intvl = 1000u * NETSTACK_KEEPALIVE_INTERVAL_S;
	pcb->keep_cnt = NETSTACK_KEEPALIVE_COUNT;

	union netstack_sockaddr client, dest;
	netstack__sockaddr_from_ip(&pcb->remote_ip, pcb->remote_port, &client);
	netstack__sockaddr_from_ip(&pcb->local_ip, pcb->local_port, &dest);
	conn->in_lwip_cb++;
	conn->depth++;
	int rc = ns->ops.tcp_accept(ns->ctx, conn, &client.sa, &dest.sa);
	conn->depth--;
	if (!conn->done && (rc != 0 || conn->ops.recv == NULL)) {
		netstack_tcp_abort(conn); /* inside the callback: sets aborted_in_cb */
		ns->stats.tcp_refused++;
	} else if (!conn->done) {
		ns->stats.tcp_accepted++;
	}
	conn->in_lwip_cb--;
	bool aborted = conn->aborted_in_cb;
	netstack__tcp_maybe_free(conn);
	return aborted ? ERR_ABRT : ERR_OK;
}

NETSTACK_TCP_UPCALL(netstack__tcp_on_accept, (void *arg, struct tcp_pcb *pcb, err_t err),
		    (arg, pcb, err))

/* ---- Listeners ------------------------------------------------------------ */

/* One listener per destination port, bound to the any address of both
 * families, made on the first SYN to that port and kept until
 * netstack_free (re-binding later could clash with its own connections). */
void netstack__tcp_listen(struct netstack *ns, u16_t port)
{
	if (ns->tcp_listen[port] != NULL)
		return;
	struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_ANY);
	if (pcb == NULL)
		return; /* lwIP answers the SYN with a reset */
	if (tcp_bind(pcb, IP_ANY_TYPE, port) != ERR_OK) {
		tcp_abort(pcb);
		return;
	}
	struct tcp_pcb *lpcb = tcp_listen_with_backlog(pcb, TCP_DEFAULT_LISTEN_BACKLOG);
	if (lpcb == NULL) {
		tcp_abort(pcb);
		return;
	}
	tcp_arg(lpcb, ns);
	tcp_accept(lpcb, netstack__tcp_on_accept_upcall);
	ns->tcp_listen[port] = lpcb;
	ns->stats.tcp_listeners++;
}

void netstack__tcp_free_all(struct netstack *ns)
{
	/* Our connections: reset, no callbacks (ns->closing). */
	while (ns->conns != NULL) {
		struct netstack_tcp *conn = ns->conns;
		conn->done = true;
		if (conn->pcb != NULL) {
			netstack__tcp_detach(conn->pcb);
			tcp_abort(conn->pcb);
			conn->pcb = NULL;
		}
		conn->depth = 0;
		conn->delivering = false;
		conn->in_lwip_cb = 0;
		netstack__tcp_maybe_free(conn);
	}
	/* pcbs we let go of (closing, TIME-WAIT), so the next netstack starts
     * with empty lists. */
	while (tcp_active_pcbs != NULL)
		tcp_abort(tcp_active_pcbs);
	while (tcp_tw_pcbs != NULL)
		tcp_abort(tcp_tw_pcbs);
	/* Every listener is ours: walk lwIP's list, not all 65536 ports. */
	while (tcp_listen_pcbs.listen_pcbs != NULL) {
		struct tcp_pcb_listen *lpcb = tcp_listen_pcbs.listen_pcbs;
		ns->tcp_listen[lpcb->local_port] = NULL;
		tcp_close((struct tcp_pcb *)lpcb); /* never fails for a listener */
	}
	ns->stats.tcp_listeners = 0;
	ns->stats.tcp_active = 0;
}

/* ---- Public API ----------------------------------------------------------- */

void netstack_tcp_set_ops(struct netstack_tcp *conn, const struct stream_cb *ops, void *arg)
{
	conn->ops = *ops;
	conn->arg = arg;
}

size_t netstack_tcp_writable(const struct netstack_tcp *conn)
{
	if (conn->pcb == NULL || conn->done)
		return 0;
	if (tcp_sndqueuelen(conn->pcb) >= TCP_SND_QUEUELEN)
		return 0;
	return conn->pcb->snd_buf; /* tcp_sndbuf() would clamp it to 16 bits */
}

size_t netstack_tcp_write(struct netstack_tcp *conn, const uint8_t *data, size_t len)
{
	size_t done = 0;
	while (done < len) {
		size_t room = netstack_tcp_writable(conn);
		if (room == 0)
			break;
		size_t n = len - done;
		if (n > room)
			n = room;
		if (n > 0xffff)
			n = 0xffff; /* tcp_write takes u16 */
		if (tcp_write(conn->pcb, data + done, (u16_t)n, TCP_WRITE_FLAG_COPY) != ERR_OK)
			break; /* ERR_MEM: queue full or no memory; ops.sent says when to retry */
		done += n;
	}
	if (done > 0) {
		tcp_output(conn->pcb); /* deferred by lwIP while inside this pcb's input */
		netstack__timer_arm(conn->ns);
	}
	return done;
}

void netstack_tcp_pause(struct netstack_tcp *conn)
{
	conn->paused = true;
}

void netstack_tcp_resume(struct netstack_tcp *conn)
{
	if (!conn->paused)
		return;
	conn->paused = false;
	struct netstack *ns = conn->ns;
	netstack__tcp_deliver(conn);
	netstack__tcp_maybe_free(conn);
	netstack__timer_arm(ns); /* a window update may be due */
}

int netstack_tcp_shutdown(struct netstack_tcp *conn)
{
	if (conn->pcb == NULL || conn->done)
		return -ENOTCONN;
	if (tcp_shutdown(conn->pcb, 0, 1) != ERR_OK)
		return -ENOTCONN;
	/* Keepalive in FIN-WAIT-2; the poll interval is in slow ticks (500 ms). */
	tcp_poll(conn->pcb, netstack__tcp_on_poll_upcall, 2);
	netstack__timer_arm(conn->ns);
	return 0;
}

void netstack_tcp_close(struct netstack_tcp *conn)
{
	if (conn->done)
		return;
	conn->done = true;
	struct tcp_pcb *pcb = conn->pcb;
	if (pcb != NULL) {
		/* Held data counts as read: lwIP resets instead of closing when
         * the window is not fully open. */
		if (conn->held != NULL)
			netstack__tcp_recved(conn, conn->held->tot_len);
		netstack__tcp_detach(pcb);
		conn->pcb = NULL;
		conn->ns->stats.tcp_active--;
		if (tcp_close(pcb) != ERR_OK) {
			tcp_abort(pcb);
			if (conn->in_lwip_cb != 0)
				conn->aborted_in_cb = true;
		}
		netstack__timer_arm(conn->ns);
	}
	netstack__tcp_maybe_free(conn);
}

void netstack_tcp_abort(struct netstack_tcp *conn)
{
	if (conn->done)
		return;
	conn->done = true;
	struct tcp_pcb *pcb = conn->pcb;
	if (pcb != NULL) {
		netstack__tcp_detach(pcb); /* tcp_abort would call tcp_err */
		conn->pcb = NULL;
		conn->ns->stats.tcp_active--;
		tcp_abort(pcb);
		if (conn->in_lwip_cb != 0)
			conn->aborted_in_cb = true;
	}
	netstack__tcp_maybe_free(conn);
}

/* ---- The connection as a stream ------------------------------------------- */

static struct netstack_tcp *netstack__tcp_of(struct stream *s)
{
	return (struct netstack_tcp *)s;
}

static void netstack__st_set_cb(struct stream *s, const struct stream_cb *cb, void *arg)
{
	netstack_tcp_set_ops(netstack__tcp_of(s), cb, arg);
}

static size_t netstack__st_write(struct stream *s, const uint8_t *data, size_t len)
{
	return netstack_tcp_write(netstack__tcp_of(s), data, len);
}

static size_t netstack__st_writable(const struct stream *s)
{
	return netstack_tcp_writable((const struct netstack_tcp *)s);
}

static void netstack__st_pause(struct stream *s)
{
	netstack_tcp_pause(netstack__tcp_of(s));
}

static void netstack__st_resume(struct stream *s)
{
	netstack_tcp_resume(netstack__tcp_of(s));
}

static int netstack__st_shutdown(struct stream *s)
{
	return netstack_tcp_shutdown(netstack__tcp_of(s));
}

static void netstack__st_close(struct stream *s)
{
	netstack_tcp_close(netstack__tcp_of(s));
}

static void netstack__st_abort(struct stream *s)
{
	netstack_tcp_abort(netstack__tcp_of(s));
}

static const struct stream_ops netstack__tcp_stream_ops = {
	.set_cb = netstack__st_set_cb,
	.write = netstack__st_write,
	.writable = netstack__st_writable,
	.pause = netstack__st_pause,
	.resume = netstack__st_resume,
	.shutdown = netstack__st_shutdown,
	.close = netstack__st_close,
	.abort = netstack__st_abort,
};

struct stream *netstack_tcp_stream(struct netstack_tcp *conn)
{
	return &conn->st;
}
