/* UDP forwards (udpfwd.h). */
#include "listen/udpfwd.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct udp_forward {
	uv_loop_t *loop;
	uv_udp_t sock;
	struct udp_relay *relay;
	struct sockaddr_storage target;
	struct udp_forward_stats st;
	uint8_t buf[UDP_RELAY_BUF_SIZE]; /* a datagram from a client */
};

/* The relay's reply path: from the bound socket, to the client. */
static int fwd_send(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		    const uint8_t *data, size_t len)
{
	struct udp_forward *f = ctx;
	(void)from;
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	int rc = uv_udp_try_send(&f->sock, &b, 1, to);
	if (rc < 0) {
		f->st.answer_drop++;
		return rc;
	}
	return 0;
}

static void fwd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct udp_forward *f = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)f->buf, sizeof(f->buf));
}

static void fwd_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
		     unsigned flags)
{
	struct udp_forward *f = h->data;
	(void)buf;
	if (nread < 0 || !from || (flags & UV_UDP_PARTIAL) || !f->relay)
		return;
	f->st.datagrams++;
	udp_relay_recv(f->relay, from, (const struct sockaddr *)&f->target, f->buf, (size_t)nread);
}

static void fwd_closed(uv_handle_t *h)
{
	free(h->data);
}

struct udp_forward *udp_forward_new(uv_loop_t *loop, const struct udp_forward_config *cfg, int *err)
{
	if (!cfg->policy ||
	    (cfg->target.ss_family != AF_INET && cfg->target.ss_family != AF_INET6)) {
		*err = UV_EINVAL;
		return NULL;
	}
	struct udp_forward *f = calloc(1, sizeof(*f));
	if (!f) {
		*err = UV_ENOMEM;
		return NULL;
	}
	f->loop = loop;
	f->target = cfg->target;
	struct udp_relay_config rc = {
		.policy = cfg->policy,
		.log = cfg->log,
		.max_flows = cfg->max_flows,
		/* No peers here: every client shares the one table. */
		.max_flows_per_peer = cfg->max_flows ? cfg->max_flows : UDP_RELAY_DEFAULT_MAX_FLOWS,
		.idle_ms = cfg->idle_ms,
		/* The target is what was asked for, port 443 too. */
		.quic = UDP_RELAY_QUIC_PASSTHROUGH,
		.via = "forward",
		.protect = cfg->protect,
		.send = fwd_send,
		.send_ctx = f,
	};
	int rcode = uv_udp_init_ex(loop, &f->sock, cfg->addr.ss_family);
	if (rcode < 0) {
		free(f);
		*err = rcode;
		return NULL;
	}
	f->sock.data = f;
	f->relay = udp_relay_new(loop, NULL, &rc);
	if (!f->relay)
		rcode = UV_ENOMEM;
	else if ((rcode = uv_udp_bind(&f->sock, (const struct sockaddr *)&cfg->addr, 0)) == 0)
		rcode = uv_udp_recv_start(&f->sock, fwd_alloc, fwd_recv);
	if (rcode < 0) {
		udp_relay_free(f->relay);
		uv_close((uv_handle_t *)&f->sock, fwd_closed);
		*err = rcode;
		return NULL;
	}
	return f;
}

uint16_t udp_forward_port(const struct udp_forward *f)
{
	struct sockaddr_storage a;
	int len = sizeof(a);
	if (uv_udp_getsockname(&f->sock, (struct sockaddr *)&a, &len) != 0)
		return 0;
	return ntohs(a.ss_family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port
					    : ((struct sockaddr_in6 *)&a)->sin6_port);
}

void udp_forward_get_stats(const struct udp_forward *f, struct udp_forward_stats *out)
{
	*out = f->st;
	if (f->relay)
		udp_relay_get_stats(f->relay, &out->relay);
}

void udp_forward_free(struct udp_forward *f)
{
	if (!f)
		return;
	udp_relay_free(f->relay); /* records written now */
	f->relay = NULL;
	uv_udp_recv_stop(&f->sock);
	uv_close((uv_handle_t *)&f->sock, fwd_closed);
}
