/* SOCKS5 UDP ASSOCIATE (socksudp.h). */
#include "listen/socksudp.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sockaddr.h"
#include "listen/socks5.h"

struct assoc;

/* A name being resolved, and the datagrams that wait for it. It outlives
 * its association when that ends first (the resolver cannot be stopped
 * once it runs): `a` is then NULL. */
struct lookup {
	struct socks_udp *g;
	struct assoc *a;
	uv_getaddrinfo_t req;
	char name[256];
	size_t nlen;
	size_t npending;
	struct {
		uint16_t port;
		size_t len;
		uint8_t *data;
	} pending[SOCKS_UDP_PENDING];
};

struct cache_entry {
	char name[256];
	size_t nlen;                  /* 0: a free slot */
	struct sockaddr_storage addr; /* family 0: the name did not resolve */
	uint64_t expires_ms;
};

struct assoc {
	struct socks_udp *g;
	struct assoc *prev, *next;
	struct stream *ctl; /* NULL once closed */
	uv_udp_t sock;
	uv_timer_t timer;
	unsigned handles;               /* still to be closed before the memory goes */
	struct udp_relay *relay;        /* made at the first datagram */
	struct sockaddr_storage client; /* the client's UDP address */
	bool port_known;                /* client's port: declared or locked */
	uint64_t last_ms;               /* the last datagram either way */
	bool ended;
	struct lookup *lookups[SOCKS_UDP_MAX_LOOKUPS];
	size_t nlookups;
	struct cache_entry *cache; /* SOCKS_UDP_CACHE, made at the first name */
	char user[256];
};

struct socks_udp {
	uv_loop_t *loop;
	struct socks_udp_config cfg;
	struct assoc *list; /* the live associations */
	size_t nalloc;      /* associations whose memory is not yet released */
	unsigned lookups;   /* in flight, the ended associations' too */
	bool freeing;
	struct socks_udp_stats st;
	uint8_t in[UDP_RELAY_BUF_SIZE];      /* a datagram from a client */
	uint8_t answers[UDP_RELAY_BUF_SIZE]; /* the relays' receive buffer */
};

/* ---- addresses ------------------------------------------------------------ */

/* A v4-mapped IPv6 address as the IPv4 one (a listener on [::]). */
static void unmap(const struct sockaddr *in, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (in->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)in;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)out;
			s4->sin_family = AF_INET;
			s4->sin_port = s6->sin6_port;
			memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
		} else {
			memcpy(out, s6, sizeof(*s6));
		}
	} else if (in->sa_family == AF_INET) {
		memcpy(out, in, sizeof(struct sockaddr_in));
	}
}

static uint16_t port_of(const struct sockaddr_storage *a)
{
	return sockaddr_port((const struct sockaddr *)a);
}

static void set_port(struct sockaddr_storage *a, uint16_t port)
{
	sockaddr_set_port((struct sockaddr *)a, port);
}

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	return sockaddr_same_ip((const struct sockaddr *)a, (const struct sockaddr *)b);
}

/* ---- the end ------------------------------------------------------------- */

static void group_maybe_free(struct socks_udp *g)
{
	if (g->freeing && g->nalloc == 0 && g->lookups == 0)
		free(g);
}

static void assoc_handle_closed(uv_handle_t *h)
{
	struct assoc *a = h->data;
	if (--a->handles > 0)
		return;
	struct socks_udp *g = a->g;
	free(a);
	g->nalloc--;
	group_maybe_free(g);
}

static void assoc_end(struct assoc *a, const char *reason)
{
	if (a->ended)
		return;
	a->ended = true;
	struct socks_udp *g = a->g;
	if (a->prev)
		a->prev->next = a->next;
	else
		g->list = a->next;
	if (a->next)
		a->next->prev = a->prev;
	a->prev = a->next = NULL;
	g->st.active--;
	/* Lookups still queued are cancelled; running ones answer later, to
	 * nobody. */
	for (size_t i = 0; i < a->nlookups; i++) {
		a->lookups[i]->a = NULL;
		(void)uv_cancel((uv_req_t *)&a->lookups[i]->req);
	}
	a->nlookups = 0;
	if (a->relay) {
		udp_relay_stop(a->relay, reason); /* every flow's record */
		udp_relay_free(a->relay);
		a->relay = NULL;
	}
	if (a->ctl) {
		static const struct stream_cb none = { 0 };
		stream_set_cb(a->ctl, &none, NULL);
		stream_close(a->ctl);
		a->ctl = NULL;
	}
	free(a->cache);
	a->cache = NULL;
	memset(a->user, 0, sizeof(a->user));
	uv_udp_recv_stop(&a->sock);
	uv_timer_stop(&a->timer);
	uv_close((uv_handle_t *)&a->sock, assoc_handle_closed);
	uv_close((uv_handle_t *)&a->timer, assoc_handle_closed);
}

static void assoc_on_idle(uv_timer_t *t)
{
	struct assoc *a = t->data;
	uint64_t now = uv_now(a->g->loop), due = a->last_ms + a->g->cfg.idle_ms;
	if (now >= due) {
		a->g->st.ended_idle++;
		assoc_end(a, "idle");
		return;
	}
	uv_timer_start(&a->timer, assoc_on_idle, due - now, 0);
}

/* ---- the control connection ------------------------------------------------ */

static void ctl_recv(void *arg, const uint8_t *data, size_t len)
{
	struct assoc *a = arg;
	(void)data;
	if (len == 0) { /* the client's FIN: it is done */
		a->g->st.ended_closed++;
		assoc_end(a, "association_closed");
	}
	/* Anything else on it means nothing (RFC 1928): read and dropped. */
}

static void ctl_closed(void *arg, int err)
{
	struct assoc *a = arg;
	(void)err;
	a->ctl = NULL; /* freed by its kind */
	a->g->st.ended_closed++;
	assoc_end(a, "association_closed");
}

static const struct stream_cb ctl_cb = { .recv = ctl_recv, .closed = ctl_closed };

/* ---- answers: relay -> client ---------------------------------------------- */

/* The relay's reply path: the header names the destination as the source;
 * the payload is not copied (two buffers, one sendmsg). */
static int assoc_send(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		      const uint8_t *data, size_t len)
{
	struct assoc *a = ctx;
	uint8_t hdr[SOCKS5_UDP_HDR_MAX];
	size_t hl = socks5_udp_header(hdr, from);
	if (hl == 0 || len > UDP_RELAY_BUF_SIZE) {
		a->g->st.answer_drop++;
		return -EAFNOSUPPORT;
	}
	uv_buf_t b[2] = { uv_buf_init((char *)hdr, (unsigned)hl),
			  uv_buf_init((char *)data, (unsigned)len) };
	int rc = uv_udp_try_send(&a->sock, b, 2, to);
	if (rc < 0) {
		a->g->st.answer_drop++;
		return rc;
	}
	a->g->st.answers++;
	a->last_ms = uv_now(a->g->loop);
	return 0;
}

static bool assoc_relay(struct assoc *a)
{
	if (a->relay)
		return true;
	struct socks_udp *g = a->g;
	struct udp_relay_config rc = {
		.policy = g->cfg.policy,
		.log = g->cfg.log,
		.max_flows = g->cfg.max_flows,
		.max_flows_per_peer = g->cfg.max_flows, /* one client: all of it */
		.idle_ms = g->cfg.idle_ms,
		.quic = g->cfg.quic,
		.via = "socks5",
		.user = a->user,
		.protect = g->cfg.protect,
		.recv_buf = g->answers,
		.send = assoc_send,
		.send_ctx = a,
	};
	a->relay = udp_relay_new(g->loop, NULL, &rc);
	if (!a->relay)
		g->st.relay_failed++;
	return a->relay != NULL;
}

/* ---- names ---------------------------------------------------------------- */

static struct cache_entry *cache_find(struct assoc *a, const char *name, size_t n, uint64_t now)
{
	if (!a->cache)
		return NULL;
	for (size_t i = 0; i < SOCKS_UDP_CACHE; i++) {
		struct cache_entry *e = &a->cache[i];
		if (e->nlen != n || memcmp(e->name, name, n) != 0)
			continue;
		if (e->expires_ms > now)
			return e;
		e->nlen = 0; /* stale: asked again */
		return NULL;
	}
	return NULL;
}

/* A free slot, or the one that expires first. */
static void cache_put(struct assoc *a, const char *name, size_t n,
		      const struct sockaddr_storage *addr, uint64_t now)
{
	if (!a->cache)
		return;
	struct cache_entry *e = &a->cache[0];
	for (size_t i = 0; i < SOCKS_UDP_CACHE; i++) {
		if (a->cache[i].nlen == 0) {
			e = &a->cache[i];
			break;
		}
		if (a->cache[i].expires_ms < e->expires_ms)
			e = &a->cache[i];
	}
	memcpy(e->name, name, n);
	e->name[n] = '\0';
	e->nlen = n;
	if (addr)
		e->addr = *addr;
	else
		memset(&e->addr, 0, sizeof(e->addr));
	e->expires_ms = now + (addr ? SOCKS_UDP_CACHE_MS : SOCKS_UDP_NEGATIVE_MS);
}

static void lookup_free(struct lookup *lk)
{
	for (size_t i = 0; i < lk->npending; i++)
		free(lk->pending[i].data);
	free(lk);
}

/* A datagram kept until its name resolves (copied: the receive buffer is
 * the next datagram's). */
static bool lookup_hold(struct lookup *lk, uint16_t port, const uint8_t *data, size_t len)
{
	if (lk->npending == SOCKS_UDP_PENDING)
		return false;
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return false;
	memcpy(copy, data, len);
	lk->pending[lk->npending].port = port;
	lk->pending[lk->npending].len = len;
	lk->pending[lk->npending].data = copy;
	lk->npending++;
	return true;
}

static void lookup_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct lookup *lk = req->data;
	struct socks_udp *g = lk->g;
	struct assoc *a = lk->a;
	g->lookups--;
	if (a) {
		for (size_t i = 0; i < a->nlookups; i++)
			if (a->lookups[i] == lk) {
				a->lookups[i] = a->lookups[--a->nlookups];
				break;
			}
		struct sockaddr_storage addr;
		bool ok = status == 0 && res && res->ai_addrlen <= sizeof(addr) &&
			  (res->ai_family == AF_INET || res->ai_family == AF_INET6);
		if (ok) {
			unmap(res->ai_addr, &addr);
			ok = addr.ss_family != 0;
		}
		cache_put(a, lk->name, lk->nlen, ok ? &addr : NULL, uv_now(g->loop));
		for (size_t i = 0; i < lk->npending; i++) {
			if (!ok || !a->relay) {
				g->st.lookup_failed++;
				continue;
			}
			set_port(&addr, lk->pending[i].port);
			udp_relay_recv(a->relay, (const struct sockaddr *)&a->client,
				       (const struct sockaddr *)&addr, lk->pending[i].data,
				       lk->pending[i].len);
		}
	}
	uv_freeaddrinfo(res);
	lookup_free(lk);
	if (!a)
		group_maybe_free(g);
}

static void lookup_start(struct assoc *a, const struct socks5_udp_hdr *h, const uint8_t *data,
			 size_t len)
{
	struct socks_udp *g = a->g;
	for (size_t i = 0; i < a->nlookups; i++) {
		struct lookup *lk = a->lookups[i];
		if (lk->nlen == h->name_len && memcmp(lk->name, h->name, h->name_len) == 0) {
			if (!lookup_hold(lk, h->port, data, len))
				g->st.lookup_limit++;
			return;
		}
	}
	if (a->nlookups == SOCKS_UDP_MAX_LOOKUPS || g->lookups >= SOCKS_UDP_MAX_ALL_LOOKUPS) {
		g->st.lookup_limit++;
		return;
	}
	if (!a->cache && !(a->cache = calloc(SOCKS_UDP_CACHE, sizeof(*a->cache)))) {
		g->st.lookup_limit++;
		return;
	}
	struct lookup *lk = calloc(1, sizeof(*lk));
	if (!lk || !lookup_hold(lk, h->port, data, len)) {
		free(lk);
		g->st.lookup_limit++;
		return;
	}
	lk->g = g;
	lk->a = a;
	memcpy(lk->name, h->name, h->name_len + 1);
	lk->nlen = h->name_len;
	lk->req.data = lk;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM };
	int rc = uv_getaddrinfo(g->loop, &lk->req, lookup_done, lk->name, NULL, &hints);
	if (rc < 0) {
		lookup_free(lk);
		g->st.lookup_failed++;
		return;
	}
	a->lookups[a->nlookups++] = lk;
	g->lookups++;
	g->st.lookups++;
}

/* ---- datagrams: client -> relay ------------------------------------------- */

static void assoc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct assoc *a = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)a->g->in, sizeof(a->g->in));
}

static void assoc_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
		       unsigned flags)
{
	struct assoc *a = h->data;
	struct socks_udp *g = a->g;
	(void)buf;
	if (nread < 0 || !from || a->ended)
		return;
	struct sockaddr_storage src;
	unmap(from, &src);
	if (!same_ip(&src, &a->client) || (a->port_known && port_of(&src) != port_of(&a->client))) {
		g->st.foreign++;
		return;
	}
	if (flags & UV_UDP_PARTIAL) {
		g->st.malformed++;
		return;
	}
	struct socks5_udp_hdr hdr;
	int hl = socks5_parse_udp(g->in, (size_t)nread, &hdr);
	if (hl == SOCKS5_UDP_FRAGMENT) {
		g->st.fragments++;
		return;
	}
	if (hl < 0) {
		g->st.malformed++;
		return;
	}
	if (!a->port_known) {
		/* No port declared: the first well-formed datagram's is the client's. */
		set_port(&a->client, port_of(&src));
		a->port_known = true;
	}
	g->st.datagrams++;
	uint64_t now = uv_now(g->loop);
	a->last_ms = now;
	if (!assoc_relay(a))
		return;
	const uint8_t *data = g->in + hl;
	size_t len = (size_t)nread - (size_t)hl;
	if (hdr.atyp != 3) {
		udp_relay_recv(a->relay, (const struct sockaddr *)&a->client,
			       (const struct sockaddr *)&hdr.addr, data, len);
		return;
	}
	struct cache_entry *e = cache_find(a, hdr.name, hdr.name_len, now);
	if (!e) {
		lookup_start(a, &hdr, data, len);
		return;
	}
	if (e->addr.ss_family == 0) {
		g->st.lookup_failed++;
		return;
	}
	struct sockaddr_storage dest = e->addr;
	set_port(&dest, hdr.port);
	udp_relay_recv(a->relay, (const struct sockaddr *)&a->client,
		       (const struct sockaddr *)&dest, data, len);
}

/* ---- setup ----------------------------------------------------------------- */

struct socks_udp *socks_udp_new(uv_loop_t *loop, const struct socks_udp_config *cfg)
{
	if (!loop || !cfg || !cfg->policy) {
		errno = EINVAL;
		return NULL;
	}
	struct socks_udp *g = calloc(1, sizeof(*g));
	if (!g) {
		errno = ENOMEM;
		return NULL;
	}
	g->loop = loop;
	g->cfg = *cfg;
	if (!g->cfg.max_associations)
		g->cfg.max_associations = SOCKS_UDP_DEFAULT_MAX_ASSOCIATIONS;
	if (!g->cfg.max_flows)
		g->cfg.max_flows = SOCKS_UDP_DEFAULT_MAX_FLOWS;
	if (!g->cfg.idle_ms)
		g->cfg.idle_ms = UDP_RELAY_DEFAULT_IDLE_MS;
	return g;
}

int socks_udp_associate(struct socks_udp *g, struct stream *ctl, const struct sockaddr *client,
			const struct sockaddr *local, uint16_t client_port, const char *user)
{
	if (g->freeing)
		return -ESHUTDOWN;
	if (g->st.active >= g->cfg.max_associations) {
		g->st.refused_limit++;
		return -EMFILE;
	}
	struct sockaddr_storage bind_addr;
	unmap(local, &bind_addr);
	if (bind_addr.ss_family == 0)
		return -EAFNOSUPPORT;
	struct assoc *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->g = g;
	unmap(client, &a->client);
	set_port(&a->client, client_port);
	a->port_known = client_port != 0;
	if (user)
		snprintf(a->user, sizeof(a->user), "%s", user);
	set_port(&bind_addr, 0);
	int rc = uv_udp_init_ex(g->loop, &a->sock, bind_addr.ss_family);
	if (rc < 0) {
		free(a);
		return rc;
	}
	a->sock.data = a;
	a->handles = 1;
	a->ended = true; /* until it is in the list */
	g->nalloc++;
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	if ((rc = uv_udp_bind(&a->sock, (const struct sockaddr *)&bind_addr, 0)) < 0 ||
	    (rc = uv_udp_getsockname(&a->sock, (struct sockaddr *)&bound, &blen)) < 0 ||
	    (rc = uv_udp_recv_start(&a->sock, assoc_alloc, assoc_recv)) < 0) {
		uv_close((uv_handle_t *)&a->sock, assoc_handle_closed);
		return rc;
	}
	uv_timer_init(g->loop, &a->timer);
	a->timer.data = a;
	a->handles = 2;
	a->ended = false;
	a->last_ms = uv_now(g->loop);
	uv_timer_start(&a->timer, assoc_on_idle, g->cfg.idle_ms, 0);
	a->next = g->list;
	if (g->list)
		g->list->prev = a;
	g->list = a;
	g->st.active++;
	g->st.associations++;

	uint8_t reply[22];
	(void)stream_write(ctl, reply, socks5_reply(reply, SOCKS5_OK, (struct sockaddr *)&bound));
	a->ctl = ctl;
	stream_set_cb(ctl, &ctl_cb, a);
	stream_resume(ctl);
	return 0;
}

void socks_udp_get_stats(const struct socks_udp *g, struct socks_udp_stats *out)
{
	*out = g->st;
}

void socks_udp_free(struct socks_udp *g)
{
	if (!g || g->freeing)
		return;
	g->freeing = true;
	while (g->list)
		assoc_end(g->list, "shutdown");
	group_maybe_free(g);
}
