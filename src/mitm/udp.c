/* UDP relay: flows of datagrams between tunnel clients and real sockets. */
#include "mitm/udp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sockaddr.h"
#include "common/tally.h"
#include "flows/flowlog.h"
#include "mitm/policy.h"
#include "mitm/udp_table.h"
#include "netstack/netstack.h"

#define UDP_RELAY_CLASS_DEFAULT 0
#define UDP_RELAY_CLASS_SHORT 1 /* DNS-like flows and refused destinations */

struct udp_flow {
	struct udp_relay *r;
	struct udp_table_entry *entry;
	uv_udp_t sock;
	bool has_sock;
	struct flowlog_flow rec;
	struct sockaddr_storage upstream; /* differs from rec.server for host ports */
	bool rewritten;
	bool quic;                 /* socketless: refused as QUIC, not by the policy */
	struct tally_entry *share; /* this flow in relay.per_peer */
};

struct udp_relay {
	uv_loop_t *loop;
	struct netstack *ns;
	struct udp_relay_config cfg;
	struct udp_table *table;
	struct tally *per_peer; /* open flows per peer, against max_flows_per_peer */
	uv_timer_t timer;
	uint64_t timer_due; /* UINT64_MAX: not armed */
	bool shut, freeing, timer_closed;
	size_t closing; /* sockets and timer still closing */
	struct udp_relay_stats stats;
	char policy_reason[POLICY_VERDICT_COUNT][32];
	char user[FLOWLOG_PEER_LEN];
	uint8_t *buf;      /* receive buffer: one datagram at a time */
	uint8_t own_buf[]; /* UDP_RELAY_BUF_SIZE, unless cfg.recv_buf */
};

/* ---- Life of a flow ------------------------------------------------------ */

static void relay_maybe_free(struct udp_relay *r)
{
	if (r->freeing && r->timer_closed && r->closing == 0) {
		udp_table_free(r->table);
		tally_free(r->per_peer);
		free(r);
	}
}

static void flow_closed(uv_handle_t *h)
{
	struct udp_flow *f = h->data;
	struct udp_relay *r = f->r;
	free(f);
	r->closing--;
	relay_maybe_free(r);
}

static void flow_record(struct udp_flow *f)
{
	struct udp_relay *r = f->r;
	if (!r->cfg.log)
		return;
	clock_gettime(CLOCK_REALTIME, &f->rec.end);
	json_t *j = flowlog_flow_json(&f->rec);
	if (!j)
		return;
	if (f->rewritten) {
		char up[FLOWLOG_ADDR_LEN];
		flowlog_format_addr((const struct sockaddr *)&f->upstream, up);
		json_object_set_new(j, "upstream", json_string(up));
	}
	if (flowlog_write(r->cfg.log, j) == 0)
		r->stats.records++;
	json_decref(j);
}

/* Writes the record, forgets the flow and closes its socket. */
static void flow_end(struct udp_flow *f, const char *reason)
{
	struct udp_relay *r = f->r;
	f->rec.end_reason = reason;
	flow_record(f);
	udp_table_remove(r->table, f->entry);
	f->entry = NULL;
	tally_give(r->per_peer, f->share);
	f->share = NULL;
	r->stats.flows_active--;
	if (f->has_sock) {
		uv_udp_recv_stop(&f->sock);
		r->closing++;
		uv_close((uv_handle_t *)&f->sock, flow_closed);
	} else {
		free(f);
	}
}

static void flow_error(struct udp_flow *f, int err)
{
	snprintf(f->rec.error, sizeof(f->rec.error), "%s", uv_strerror(err));
	f->r->stats.flows_error++;
	flow_end(f, err == UV_ENETUNREACH || err == UV_EHOSTUNREACH ? "upstream_unreachable"
								    : "error");
}

/* ---- Idle expiry ------------------------------------------------------ */

static void timer_arm(struct udp_relay *r);

static void on_timer(uv_timer_t *t)
{
	struct udp_relay *r = t->data;
	r->timer_due = UINT64_MAX;
	uint64_t now = uv_now(r->loop);
	for (struct udp_table_entry *e; (e = udp_table_expired(r->table, now)) != NULL;) {
		struct udp_flow *f = e->data;
		if (!f->has_sock) {
			flow_end(f, f->rec.end_reason); /* a refused burst is over */
			continue;
		}
		r->stats.flows_idle++;
		flow_end(f, "idle");
	}
	timer_arm(r);
}

/* Activity only moves deadlines later, so the timer is re-armed only when
 * the earliest deadline moved earlier (a new flow) or the timer fired. */
static void timer_arm(struct udp_relay *r)
{
	uint64_t next = udp_table_next_deadline(r->table);
	if (next == UINT64_MAX || next >= r->timer_due)
		return;
	uint64_t now = uv_now(r->loop);
	r->timer_due = next;
	uv_timer_start(&r->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- Upstream -> client ---------------------------------------------- */

static int reply_send(struct udp_relay *r, const struct sockaddr *from, const struct sockaddr *to,
		      const uint8_t *data, size_t len)
{
	if (r->cfg.send)
		return r->cfg.send(r->cfg.send_ctx, from, to, data, len);
	return netstack_udp_send(r->ns, from, to, data, len);
}

static void unreachable(struct udp_relay *r, const struct sockaddr *client,
			const struct sockaddr *dest, const uint8_t *data, size_t len,
			enum udp_relay_unreach why)
{
	if (!r->cfg.unreachable)
		return;
	r->cfg.unreachable(r->cfg.unreachable_ctx, client, dest, data, len, why);
	r->stats.unreachable_sent++;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct udp_flow *f = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)f->r->buf, UDP_RELAY_BUF_SIZE);
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
		    unsigned flags)
{
	struct udp_flow *f = h->data;
	struct udp_relay *r = f->r;
	(void)buf;
	if (nread < 0) {
		if (nread == UV_ECONNREFUSED) {
			/* The destination answered ICMP port unreachable. */
			r->stats.flows_upstream_refused++;
			unreachable(r, (const struct sockaddr *)&f->rec.client,
				    (const struct sockaddr *)&f->rec.server, NULL, 0,
				    UDP_RELAY_UNREACH_PORT);
			flow_end(f, "upstream_refused");
		} else {
			flow_error(f, (int)nread);
		}
		return;
	}
	if (addr == NULL)
		return; /* nothing more to read now */
	if (flags & UV_UDP_PARTIAL) {
		r->stats.reply_drop++; /* cannot happen with a 64 KiB buffer */
		return;
	}
	int rc = reply_send(r, (const struct sockaddr *)&f->rec.server,
			    (const struct sockaddr *)&f->rec.client, r->buf, (size_t)nread);
	if (rc < 0) {
		r->stats.reply_drop++;
		return;
	}
	r->stats.datagrams_down++;
	r->stats.bytes_down += (uint64_t)nread;
	f->rec.packets_down++;
	f->rec.bytes_down += (uint64_t)nread;
	udp_table_touch(r->table, f->entry, uv_now(r->loop));
}

/* ---- Client -> upstream ---------------------------------------------- */

static uint16_t port_of(const struct sockaddr *sa)
{
	return sockaddr_port(sa);
}

static socklen_t sa_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

/* The table keys one family: a listener's client may send to the other
 * family (IPv4 client, IPv6 destination); the IPv4 side is then keyed as
 * its v4-mapped IPv6 address. */
static bool flow_key(struct udp_flow_key *key, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	if (client->sa_family == dest->sa_family)
		return udp_flow_key_make(key, client, dest);
	const struct sockaddr *v4 = client->sa_family == AF_INET ? client : dest;
	if (v4->sa_family != AF_INET || (v4 == client ? dest : client)->sa_family != AF_INET6)
		return false;
	const struct sockaddr_in *in = (const struct sockaddr_in *)v4;
	struct sockaddr_in6 m = { .sin6_family = AF_INET6, .sin6_port = in->sin_port };
	m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
	memcpy(&m.sin6_addr.s6_addr[12], &in->sin_addr, 4);
	return v4 == client ? udp_flow_key_make(key, (const struct sockaddr *)&m, dest)
			    : udp_flow_key_make(key, client, (const struct sockaddr *)&m);
}

/* A destination that is one of our own ports (cfg.protect) on an address
 * of this host. The port is checked first: the interface list is read only
 * for flows to one of those ports. */
static bool reaches_own_port(const struct udp_relay *r, const struct sockaddr *up)
{
	const struct udp_relay_ports *pp = r->cfg.protect;
	if (!pp)
		return false;
	uint16_t port = port_of(up);
	bool hit = false;
	for (size_t i = 0; i < pp->n && i < UDP_RELAY_MAX_PROTECTED; i++)
		hit |= pp->port[i] == port;
	if (!hit)
		return false;
	if (up->sa_family == AF_INET &&
	    (ntohl(((const struct sockaddr_in *)up)->sin_addr.s_addr) >> 24) == 127)
		return true;
	if (up->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)up)->sin6_addr))
		return true;
	uv_interface_address_t *ifs;
	int n;
	if (uv_interface_addresses(&ifs, &n) != 0)
		return true; /* cannot tell: refuse rather than loop */
	bool ours = false;
	for (int i = 0; i < n && !ours; i++) {
		if (up->sa_family == AF_INET && ifs[i].address.address4.sin_family == AF_INET)
			ours = ifs[i].address.address4.sin_addr.s_addr ==
			       ((const struct sockaddr_in *)up)->sin_addr.s_addr;
		else if (up->sa_family == AF_INET6 &&
			 ifs[i].address.address6.sin6_family == AF_INET6)
			ours = memcmp(&ifs[i].address.address6.sin6_addr,
				      &((const struct sockaddr_in6 *)up)->sin6_addr, 16) == 0;
	}
	uv_free_interface_addresses(ifs, n);
	return ours;
}

/* A new flow in the table, its record begun. NULL when the table is full
 * or the client's peer holds its share of it. */
static struct udp_flow *flow_new(struct udp_relay *r, const struct udp_flow_key *key,
				 const struct sockaddr *client, const struct sockaddr *dest,
				 unsigned cls)
{
	struct udp_flow *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->entry = udp_table_insert(r->table, key, cls, uv_now(r->loop));
	if (!f->entry) {
		free(f);
		r->stats.table_full++;
		return NULL;
	}
	const char *peer = r->cfg.peer_name ? r->cfg.peer_name(r->cfg.peer_ctx, client) : NULL;
	/* One peer cannot fill the table: the others keep room for theirs. */
	struct tally_entry *share = tally_take(r->per_peer, peer, r->cfg.max_flows_per_peer);
	if (!share) {
		udp_table_remove(r->table, f->entry);
		free(f);
		r->stats.peer_limit++;
		return NULL;
	}
	f->entry->data = f;
	f->r = r;
	f->share = share;
	flowlog_flow_begin(&f->rec, r->cfg.log, "udp", peer, client, dest);
	f->rec.has_packets = true;
	f->rec.via = r->cfg.via;
	memcpy(f->rec.user, r->user, sizeof(f->rec.user));
	r->stats.flows_active++;
	timer_arm(r);
	return f;
}

static int flow_open_socket(struct udp_flow *f, const struct sockaddr *upstream)
{
	struct udp_relay *r = f->r;
	int rc = uv_udp_init_ex(r->loop, &f->sock, upstream->sa_family);
	if (rc < 0)
		return rc;
	f->has_sock = true;
	f->sock.data = f;
	memcpy(&f->upstream, upstream, sa_len(upstream));
	if ((rc = uv_udp_connect(&f->sock, upstream)) < 0 ||
	    (rc = uv_udp_recv_start(&f->sock, on_alloc, on_recv)) < 0)
		return rc;
	r->stats.flows_opened++;
	return 0;
}

static void flow_send(struct udp_flow *f, const uint8_t *data, size_t len)
{
	struct udp_relay *r = f->r;
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	/* UDP semantics: a datagram the socket cannot take now is lost, not
	 * queued (no allocation per datagram). */
	int rc = uv_udp_try_send(&f->sock, &b, 1, NULL);
	if (rc == UV_ECONNREFUSED) {
		/* An earlier datagram drew ICMP port unreachable. */
		r->stats.flows_upstream_refused++;
		unreachable(r, (const struct sockaddr *)&f->rec.client,
			    (const struct sockaddr *)&f->rec.server, data, len,
			    UDP_RELAY_UNREACH_PORT);
		flow_end(f, "upstream_refused");
		return;
	}
	if (rc < 0) {
		r->stats.send_drop++;
		return;
	}
	r->stats.datagrams_up++;
	r->stats.bytes_up += len;
	f->rec.packets_up++;
	f->rec.bytes_up += len;
	udp_table_touch(r->table, f->entry, uv_now(r->loop));
}

void udp_relay_recv(struct udp_relay *r, const struct sockaddr *client, const struct sockaddr *dest,
		    const uint8_t *data, size_t len)
{
	if (r->shut)
		return;
	struct udp_flow_key key;
	if (!flow_key(&key, client, dest)) {
		r->stats.policy_drop++;
		return;
	}

	/* An existing flow: its verdict was taken when it began. */
	struct udp_table_entry *e = udp_table_lookup(r->table, &key);
	if (e) {
		struct udp_flow *f = e->data;
		if (f->has_sock) {
			flow_send(f, data, len);
		} else {
			if (f->quic)
				r->stats.quic_refused++;
			else
				r->stats.policy_drop++;
			f->rec.packets_up++;
			f->rec.bytes_up += len;
			udp_table_touch(r->table, e, uv_now(r->loop));
			unreachable(r, client, dest, data, len,
				    f->quic ? UDP_RELAY_UNREACH_PORT
					    : UDP_RELAY_UNREACH_PROHIBITED);
		}
		return;
	}

	struct sockaddr_storage upstream;
	enum policy_verdict v = policy_check(r->cfg.policy, IPPROTO_UDP, dest, &upstream);
	if (v == POLICY_LOCAL_SERVICE) {
		r->stats.local++;
		if (r->cfg.local)
			r->cfg.local(r->cfg.local_ctx, client, dest, data, len);
		return;
	}
	bool own = !policy_refused(v) && reaches_own_port(r, (const struct sockaddr *)&upstream);
	if (policy_refused(v) || own) {
		/* Counted into a socketless flow: one record per burst. */
		if (own)
			r->stats.own_service++;
		else
			r->stats.policy_drop++;
		struct udp_flow *f = flow_new(r, &key, client, dest, UDP_RELAY_CLASS_SHORT);
		if (f) {
			r->stats.flows_refused++;
			f->rec.packets_up = 1;
			f->rec.bytes_up = len;
			f->rec.end_reason = own ? "policy:own_service" : r->policy_reason[v];
		}
		unreachable(r, client, dest, data, len, UDP_RELAY_UNREACH_PROHIBITED);
		return;
	}
	if (port_of(dest) == UDP_RELAY_QUIC_PORT && r->cfg.quic == UDP_RELAY_QUIC_REFUSE) {
		/* QUIC (HTTP/3) cannot be intercepted: "port unreachable" makes
		 * browsers and apps fall back to TLS over TCP at once. */
		r->stats.quic_refused++;
		struct udp_flow *f = flow_new(r, &key, client, dest, UDP_RELAY_CLASS_SHORT);
		if (f) {
			f->quic = true;
			f->rec.packets_up = 1;
			f->rec.bytes_up = len;
			f->rec.end_reason = "quic_refused";
		}
		unreachable(r, client, dest, data, len, UDP_RELAY_UNREACH_PORT);
		return;
	}

	unsigned cls =
		port_of(dest) == POLICY_DNS_PORT ? UDP_RELAY_CLASS_SHORT : UDP_RELAY_CLASS_DEFAULT;
	struct udp_flow *f = flow_new(r, &key, client, dest, cls);
	if (!f)
		return;
	f->rewritten = v == POLICY_HOST_PORT;
	int rc = flow_open_socket(f, (const struct sockaddr *)&upstream);
	if (rc < 0) {
		f->rec.packets_up = 1; /* the datagram that was not sent */
		unreachable(r, client, dest, data, len, UDP_RELAY_UNREACH_PORT);
		flow_error(f, rc);
		return;
	}
	flow_send(f, data, len);
}

/* ---- Setup and teardown ---------------------------------------------- */

struct udp_relay *udp_relay_new(uv_loop_t *loop, struct netstack *ns,
				const struct udp_relay_config *cfg)
{
	if (!loop || !cfg || !cfg->policy || (!ns && !cfg->send)) {
		errno = EINVAL;
		return NULL;
	}
	struct udp_relay *r = calloc(1, sizeof(*r) + (cfg->recv_buf ? 0 : UDP_RELAY_BUF_SIZE));
	if (!r) {
		errno = ENOMEM;
		return NULL;
	}
	r->loop = loop;
	r->ns = ns;
	r->cfg = *cfg;
	r->buf = cfg->recv_buf ? cfg->recv_buf : r->own_buf;
	if (cfg->user)
		snprintf(r->user, sizeof(r->user), "%s", cfg->user);
	r->cfg.user = NULL; /* the copy is r->user */
	if (!r->cfg.max_flows)
		r->cfg.max_flows = UDP_RELAY_DEFAULT_MAX_FLOWS;
	if (!r->cfg.max_flows_per_peer || r->cfg.max_flows_per_peer > r->cfg.max_flows)
		r->cfg.max_flows_per_peer =
			r->cfg.max_flows > 1 ? (uint32_t)(r->cfg.max_flows / 2) : 1;
	if (!r->cfg.idle_ms)
		r->cfg.idle_ms = UDP_RELAY_DEFAULT_IDLE_MS;
	if (!r->cfg.dns_idle_ms)
		r->cfg.dns_idle_ms = UDP_RELAY_DEFAULT_DNS_IDLE_MS;
	uint64_t timeouts[UDP_TABLE_CLASSES];
	timeouts[UDP_RELAY_CLASS_DEFAULT] = r->cfg.idle_ms;
	timeouts[UDP_RELAY_CLASS_SHORT] = r->cfg.dns_idle_ms;
	r->table = udp_table_new(r->cfg.max_flows, timeouts);
	r->per_peer = tally_new();
	if (!r->table || !r->per_peer) {
		int err = r->per_peer ? errno : ENOMEM;
		udp_table_free(r->table);
		tally_free(r->per_peer);
		free(r);
		errno = err;
		return NULL;
	}
	for (int v = 0; v < POLICY_VERDICT_COUNT; v++)
		snprintf(r->policy_reason[v], sizeof(r->policy_reason[v]), "policy:%s",
			 policy_verdict_name((enum policy_verdict)v));
	uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	r->timer_due = UINT64_MAX;
	return r;
}

void udp_relay_set_quic(struct udp_relay *r, enum udp_relay_quic quic)
{
	r->cfg.quic = quic;
}

void udp_relay_get_stats(const struct udp_relay *r, struct udp_relay_stats *out)
{
	*out = r->stats;
}

static void timer_closed(uv_handle_t *h)
{
	struct udp_relay *r = h->data;
	r->timer_closed = true;
	relay_maybe_free(r);
}

void udp_relay_stop(struct udp_relay *r, const char *reason)
{
	if (r->shut)
		return;
	r->shut = true;
	for (struct udp_table_entry *e; (e = udp_table_first(r->table)) != NULL;) {
		struct udp_flow *f = e->data;
		flow_end(f, f->has_sock ? reason : f->rec.end_reason);
	}
	uv_close((uv_handle_t *)&r->timer, timer_closed);
}

void udp_relay_shutdown(struct udp_relay *r)
{
	udp_relay_stop(r, "shutdown");
}

void udp_relay_free(struct udp_relay *r)
{
	if (!r)
		return;
	udp_relay_shutdown(r);
	r->freeing = true;
	relay_maybe_free(r);
}
