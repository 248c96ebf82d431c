/* DNS forwarder for the tunnel's own address: fresh IDs, answers mapped
 * back, every query recorded. ldns parses; nothing here reads DNS by hand
 * except the two ID bytes and the QR bit of the fixed header (RFC 1035
 * 4.1.1). */
#include "mitm/dns.h"
#include "mitm/dnsnames.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <sodium.h>

#include "common/sockaddr.h"
#include "common/tally.h"
#include "flows/flowlog.h"
#include "mitm/localname.h"
#include "mitm/rules.h"
#include "netstack/netstack.h"

#define DNS_HEADER_LEN 12 /* RFC 1035 4.1.1 */
#define DNS_FLAG_QR 0x80  /* in header byte 2 */
#define DNS_TCP_MAX_MSG 65535
#define DNS_TCP_IN_CAP (2 * (2 + DNS_TCP_MAX_MSG)) /* one message and what came with it */
#define DNS_SLOT_NONE UINT32_MAX

struct dns_tcp;

/* One TCP connection to an upstream, for one client connection. Separate
 * from it so an abandoned connection can finish closing on its own. */
struct dns_upconn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	struct dns_proxy *p;
	struct dns_tcp *owner; /* NULL once abandoned */
	size_t upstream;
	bool connected, writing;
	uint8_t *wbuf; /* the length-prefixed query being written */
	size_t wlen;
	uint8_t hdr[2];
	size_t hdr_have;
	uint8_t *msg; /* the answer being read */
	size_t msg_len, msg_have;
};

/* A client's TCP connection to our port 53. */
struct dns_tcp {
	struct dns_proxy *p;
	struct stream *conn;
	struct sockaddr_storage client, dest;
	struct dns_tcp *prev, *next;
	uint8_t *in; /* bytes received, not yet handled */
	size_t in_len, in_cap;
	uint8_t *out; /* the answer being written back */
	size_t out_len, out_off;
	uint32_t query; /* slot in flight, or DNS_SLOT_NONE */
	struct dns_upconn *up;
	uint64_t idle_due;
	struct tally_entry *share; /* this connection in proxy.peer_tcp */
	bool paused, eof;
};

struct dns_query {
	bool used;
	uint16_t client_id, up_id;
	struct dns_tcp *tcp; /* NULL: UDP */
	ldns_pkt *q;         /* the parsed query */
	uint8_t *wire;       /* the query with the upstream ID */
	size_t len;
	uint64_t start_ns;
	uint64_t deadline_ms, attempt_due_ms;
	size_t cur;                /* upstream of the latest attempt */
	uint32_t tried;            /* upstreams sent to (bit per index) */
	struct tally_entry *share; /* this query in proxy.peer_queries */
	struct flowlog_flow rec;
};

struct dns_proxy {
	uv_loop_t *loop;
	struct netstack *ns;
	struct dns_config cfg;
	uv_udp_t sock[2]; /* IPv4, IPv6 */
	bool has_sock[2];
	uv_timer_t timer;
	uint64_t timer_due;
	struct dns_query *queries;
	uint32_t *free_slots;
	uint32_t nfree;
	struct dns_tcp *tcps;
	/* Each peer's queries in flight and TCP connections, each against half
	 * of its bound, so that one peer cannot take all of either. */
	struct tally *peer_queries, *peer_tcp;
	uint32_t peer_max_queries, peer_max_tcp;
	size_t closing; /* handles still closing */
	bool shut, freeing;
	struct dns_stats stats;
	struct dns_idmap ids;
	struct ruleset *rules; /* DNS overrides (mitm/rules.h); NULL: none */
	uint8_t buf[65536];    /* one UDP answer at a time */
};

/* Once freed and every handle has closed. */
static void proxy_maybe_release(struct dns_proxy *p)
{
	if (!p->freeing || p->closing)
		return;
	free(p->queries);
	free(p->free_slots);
	ruleset_unref(p->rules);
	tally_free(p->peer_queries);
	tally_free(p->peer_tcp);
	free(p);
}

/* ---- Configuration ------------------------------------------------------ */

static socklen_t sa_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

/* A numeric address, IPv6 optionally with %scope, and a port. */
static int parse_addr(const char *ip, uint16_t port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *a4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		return 0;
	}
	char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
	if (strlen(ip) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, ip);
	char *scope = strchr(buf, '%');
	if (scope)
		*scope++ = '\0';
	if (inet_pton(AF_INET6, buf, &a6->sin6_addr) != 1)
		return -EINVAL;
	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons(port);
	if (scope) {
		char *end;
		unsigned long n = strtoul(scope, &end, 10);
		if (*scope && !*end)
			a6->sin6_scope_id = (uint32_t)n;
		else if (!(a6->sin6_scope_id = if_nametoindex(scope)))
			return -EINVAL;
	}
	return 0;
}

size_t dns_parse_resolv_conf(const char *text, struct sockaddr_storage *out, size_t max)
{
	size_t n = 0;
	const char *line = text;
	while (*line && n < max) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		char buf[256];
		if (len < sizeof(buf)) {
			memcpy(buf, line, len);
			buf[len] = '\0';
			char *hash = strpbrk(buf, "#;");
			if (hash)
				*hash = '\0';
			char *save, *kw = strtok_r(buf, " \t\r", &save);
			char *addr = kw ? strtok_r(NULL, " \t\r", &save) : NULL;
			if (kw && addr && strcmp(kw, "nameserver") == 0 &&
			    parse_addr(addr, DNS_PORT, &out[n]) == 0)
				n++;
		}
		line += len + (eol ? 1 : 0);
	}
	return n;
}

int dns_load_resolv_conf(const char *path, struct sockaddr_storage *out, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char text[16384];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, text + have, sizeof(text) - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
		if (r == 0 || (have += (size_t)r) == sizeof(text) - 1)
			break;
	}
	close(fd);
	text[have] = '\0';
	return (int)dns_parse_resolv_conf(text, out, max);
}

int dns_parse_upstream(const char *s, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
	const char *port = NULL;
	size_t hlen;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || (close[1] && close[1] != ':'))
			return -EINVAL;
		hlen = (size_t)(close - s - 1);
		s++;
		port = close[1] ? close + 2 : NULL;
	} else {
		const char *colon = strchr(s, ':');
		bool one_colon = colon && !strchr(colon + 1, ':');
		hlen = one_colon ? (size_t)(colon - s) : strlen(s); /* several: plain IPv6 */
		port = one_colon ? colon + 1 : NULL;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	unsigned long p = DNS_PORT;
	if (port) {
		char *end;
		if (!isdigit((unsigned char)*port))
			return -EINVAL;
		p = strtoul(port, &end, 10);
		if (*end || p == 0 || p > 65535)
			return -EINVAL;
	}
	return parse_addr(host, (uint16_t)p, out);
}

/* ---- Query ID map -------------------------------------------------------- */

void dns_idmap_init(struct dns_idmap *m)
{
	memset(m, 0, sizeof(*m));
}

int dns_idmap_add(struct dns_idmap *m, uint32_t slot)
{
	if (m->used >= 65536)
		return -ENOSPC;
	/* Random probes first; a scan from a random start when the map is
	 * nearly full. Either way the ID is unpredictable to an off-path
	 * spoofer, who must also match our source port and the question. */
	uint32_t id = randombytes_uniform(65536);
	for (int i = 0; i < 32 && m->slot[id]; i++)
		id = randombytes_uniform(65536);
	while (m->slot[id])
		id = (id + 1) & 0xffff;
	m->slot[id] = slot + 1;
	m->used++;
	return (int)id;
}

uint32_t dns_idmap_get(const struct dns_idmap *m, uint16_t id)
{
	return m->slot[id] ? m->slot[id] - 1 : DNS_IDMAP_NONE;
}

void dns_idmap_del(struct dns_idmap *m, uint16_t id)
{
	if (m->slot[id]) {
		m->slot[id] = 0;
		m->used--;
	}
}

/* ---- Records ------------------------------------------------------------- */

/* ldns's text of a dname without the trailing dot ("." stays). */
static json_t *dname_json(const ldns_rdf *d)
{
	char *s = ldns_rdf2str(d);
	if (!s)
		return json_null();
	size_t n = strlen(s);
	if (n > 1 && s[n - 1] == '.')
		s[n - 1] = '\0';
	json_t *j = json_string(s);
	free(s);
	return j;
}

static json_t *type_json(ldns_rr_type t)
{
	char *s = ldns_rr_type2str(t);
	json_t *j = s ? json_string(s) : json_integer(t);
	free(s);
	return j;
}

static json_t *answers_json(const ldns_pkt *a)
{
	json_t *arr = json_array();
	const ldns_rr_list *l = ldns_pkt_answer(a);
	for (size_t i = 0; arr && l && i < ldns_rr_list_rr_count(l); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(l, i);
		char data[2048];
		size_t used = 0;
		data[0] = '\0';
		for (size_t k = 0; k < ldns_rr_rd_count(rr); k++) {
			char *s = ldns_rdf2str(ldns_rr_rdf(rr, k));
			if (!s)
				continue;
			int w = snprintf(data + used, sizeof(data) - used, "%s%s", k ? " " : "", s);
			free(s);
			if (w < 0 || (size_t)w >= sizeof(data) - used)
				break;
			used += (size_t)w;
		}
		json_t *o = json_object();
		json_object_set_new(o, "name", dname_json(ldns_rr_owner(rr)));
		json_object_set_new(o, "type", type_json(ldns_rr_get_type(rr)));
		json_object_set_new(o, "ttl", json_integer(ldns_rr_ttl(rr)));
		json_object_set_new(o, "data", json_string(data));
		json_array_append_new(arr, o);
	}
	return arr;
}

static const char *rcode_name(int rcode, char buf[16])
{
	ldns_lookup_table *t = ldns_lookup_by_id(ldns_rcodes, rcode);
	if (t)
		return t->name;
	snprintf(buf, 16, "RCODE%d", rcode);
	return buf;
}

/* The addresses an answer gave for the name asked, for the relay. */
static void learn_names(struct dns_proxy *p, const char *peer, const ldns_pkt *q, const ldns_pkt *a)
{
	const ldns_rr_list *qs = ldns_pkt_question(q);
	const ldns_rr_list *l = ldns_pkt_answer(a);
	if (!qs || ldns_rr_list_rr_count(qs) == 0 || !l)
		return;
	char *name = ldns_rdf2str(ldns_rr_owner(ldns_rr_list_rr(qs, 0)));
	if (!name)
		return;
	uint64_t now = uv_now(p->loop) / 1000;
	for (size_t i = 0; i < ldns_rr_list_rr_count(l); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(l, i);
		ldns_rr_type t = ldns_rr_get_type(rr);
		if ((t != LDNS_RR_TYPE_A && t != LDNS_RR_TYPE_AAAA) || ldns_rr_rd_count(rr) < 1)
			continue;
		const ldns_rdf *d = ldns_rr_rdf(rr, 0);
		size_t n = ldns_rdf_size(d);
		if ((t == LDNS_RR_TYPE_A && n == 4) || (t == LDNS_RR_TYPE_AAAA && n == 16))
			dnsnames_learn(p->cfg.names, peer && peer[0] ? peer : NULL,
				       ldns_rdf_data(d), n, name, ldns_rr_ttl(rr), now);
	}
	free(name);
}

/* The record of one query. `q` may be NULL (unparsable), `a` NULL (no
 * answer from upstream: `rcode` is what the client got, -1 for nothing). */
static void dns_record(struct dns_proxy *p, struct flowlog_flow *rec, bool tcp, const ldns_pkt *q,
		       const ldns_pkt *a, int rcode, const struct sockaddr *upstream,
		       uint64_t start_ns, const char *reason)
{
	if (p->cfg.names && q && a)
		learn_names(p, rec->peer, q, a);
	if (!p->cfg.log)
		return;
	rec->end_reason = reason;
	clock_gettime(CLOCK_REALTIME, &rec->end);
	json_t *j = flowlog_flow_json(rec);
	if (!j)
		return;
	json_object_set_new(j, "transport", json_string(tcp ? "tcp" : "udp"));
	const ldns_rr_list *qs = q ? ldns_pkt_question(q) : NULL;
	if (qs && ldns_rr_list_rr_count(qs) > 0) {
		const ldns_rr *qr = ldns_rr_list_rr(qs, 0);
		json_object_set_new(j, "name", dname_json(ldns_rr_owner(qr)));
		json_object_set_new(j, "qtype", type_json(ldns_rr_get_type(qr)));
		if (ldns_rr_get_class(qr) != LDNS_RR_CLASS_IN)
			json_object_set_new(j, "qclass", json_integer(ldns_rr_get_class(qr)));
	} else {
		json_object_set_new(j, "name", json_null());
		json_object_set_new(j, "qtype", json_null());
	}
	char rb[16];
	if (a)
		rcode = ldns_pkt_get_rcode(a);
	json_object_set_new(j, "rcode",
			    rcode >= 0 ? json_string(rcode_name(rcode, rb)) : json_null());
	json_object_set_new(j, "answers", a ? answers_json(a) : json_array());
	if (a && ldns_pkt_tc(a))
		json_object_set_new(j, "tc", json_true());
	char up[FLOWLOG_ADDR_LEN];
	if (upstream)
		flowlog_format_addr(upstream, up);
	json_object_set_new(j, "upstream", upstream ? json_string(up) : json_null());
	json_object_set_new(j, "duration_ms",
			    json_real((double)((uv_hrtime() - start_ns) / 1000) / 1000.0));
	if (flowlog_write(p->cfg.log, j) == 0)
		p->stats.records++;
	json_decref(j);
}

/* ---- Replies ------------------------------------------------------------- */

static void tcp_respond(struct dns_tcp *t, const uint8_t *data, size_t len);

static void reply(struct dns_proxy *p, struct dns_tcp *tcp, const struct sockaddr *client,
		  const struct sockaddr *dest, const uint8_t *data, size_t len)
{
	if (tcp) {
		tcp_respond(tcp, data, len);
		return;
	}
	int rc = p->cfg.send ? p->cfg.send(p->cfg.send_ctx, dest, client, data, len)
			     : netstack_udp_send(p->ns, dest, client, data, len);
	if (rc < 0)
		p->stats.reply_drop++;
}

/* A response we make ourselves: FORMERR for an unparsable query (header
 * only, RFC 1035 4.1.1), SERVFAIL with the question for one we could not
 * get answered. Returns the wire length (0 on failure), *out to free. */
static size_t synth_response(const uint8_t *hdr, const ldns_pkt *q, uint16_t id, int rcode,
			     uint8_t **out)
{
	ldns_pkt *r = ldns_pkt_new();
	if (!r)
		return 0;
	ldns_pkt_set_id(r, id);
	ldns_pkt_set_qr(r, true);
	ldns_pkt_set_ra(r, true);
	ldns_pkt_set_rcode(r, (uint8_t)rcode);
	if (q) {
		ldns_pkt_set_opcode(r, ldns_pkt_get_opcode(q));
		ldns_pkt_set_rd(r, ldns_pkt_rd(q));
		ldns_pkt_set_cd(r, ldns_pkt_cd(q));
		ldns_rr_list *qs = ldns_rr_list_clone(ldns_pkt_question(q));
		if (qs) {
			ldns_pkt_push_rr_list(r, LDNS_SECTION_QUESTION, qs);
			ldns_rr_list_free(qs); /* the RRs now belong to r */
		}
	} else {
		ldns_pkt_set_opcode(r, (ldns_pkt_opcode)((hdr[2] >> 3) & 0x0f));
		ldns_pkt_set_rd(r, hdr[2] & 0x01);
	}
	size_t len = 0;
	*out = NULL;
	if (ldns_pkt2wire(out, r, &len) != LDNS_STATUS_OK)
		len = 0;
	ldns_pkt_free(r);
	return len;
}

/* ---- Queries in flight --------------------------------------------------- */

static void timer_arm(struct dns_proxy *p, uint64_t due);
static void query_send(struct dns_proxy *p, uint32_t slot);
static void tcp_process(struct dns_tcp *t);
static void up_abandon(struct dns_tcp *t);

static void query_release(struct dns_proxy *p, uint32_t slot)
{
	struct dns_query *q = &p->queries[slot];
	dns_idmap_del(&p->ids, q->up_id);
	ldns_pkt_free(q->q);
	free(q->wire);
	if (q->tcp)
		q->tcp->query = DNS_SLOT_NONE;
	tally_give(p->peer_queries, q->share);
	memset(q, 0, sizeof(*q));
	p->free_slots[p->nfree++] = slot;
	p->stats.outstanding--;
}

/* The client gets SERVFAIL with its ID and question. */
static void query_fail(struct dns_proxy *p, uint32_t slot, const char *reason)
{
	struct dns_query *q = &p->queries[slot];
	struct dns_tcp *tcp = q->tcp;
	uint8_t *wire;
	size_t len = synth_response(NULL, q->q, q->client_id, LDNS_RCODE_SERVFAIL, &wire);
	q->rec.packets_down = len ? 1 : 0;
	q->rec.bytes_down = len;
	dns_record(p, &q->rec, tcp != NULL, q->q, NULL, LDNS_RCODE_SERVFAIL,
		   (const struct sockaddr *)&p->cfg.upstreams[q->cur], q->start_ns, reason);
	struct sockaddr_storage client = q->rec.client, dest = q->rec.server;
	query_release(p, slot);
	if (len)
		reply(p, tcp, (struct sockaddr *)&client, (struct sockaddr *)&dest, wire, len);
	free(wire);
	if (tcp)
		tcp_process(tcp);
}

/* Does `a` answer `q`? The same question (names compared as DNS does,
 * case-insensitively: clients may randomise case). */
static bool same_question(const ldns_pkt *q, const ldns_pkt *a)
{
	const ldns_rr_list *ql = ldns_pkt_question(q), *al = ldns_pkt_question(a);
	size_t n = ql ? ldns_rr_list_rr_count(ql) : 0;
	if (n != (al ? ldns_rr_list_rr_count(al) : 0))
		return false;
	for (size_t i = 0; i < n; i++) {
		const ldns_rr *x = ldns_rr_list_rr(ql, i), *y = ldns_rr_list_rr(al, i);
		if (ldns_rr_get_type(x) != ldns_rr_get_type(y) ||
		    ldns_rr_get_class(x) != ldns_rr_get_class(y) ||
		    ldns_dname_compare(ldns_rr_owner(x), ldns_rr_owner(y)) != 0)
			return false;
	}
	return true;
}

/* The upstream answered: the answer goes to the client with its own ID.
 * `data` is ours to modify. Returns false when it does not answer the
 * query (the query keeps waiting). */
static bool query_answer(struct dns_proxy *p, uint32_t slot, uint8_t *data, size_t len,
			 size_t upstream)
{
	struct dns_query *q = &p->queries[slot];
	ldns_pkt *a = NULL;
	if (ldns_wire2pkt(&a, data, len) != LDNS_STATUS_OK)
		return false;
	if (!ldns_pkt_qr(a) || !same_question(q->q, a)) {
		ldns_pkt_free(a);
		return false;
	}
	struct dns_tcp *tcp = q->tcp;
	data[0] = (uint8_t)(q->client_id >> 8);
	data[1] = (uint8_t)q->client_id;
	p->stats.answered++;
	if (ldns_pkt_tc(a))
		p->stats.truncated++;
	q->rec.packets_down = 1;
	q->rec.bytes_down = len;
	dns_record(p, &q->rec, tcp != NULL, q->q, a, -1,
		   (const struct sockaddr *)&p->cfg.upstreams[upstream], q->start_ns, "answered");
	ldns_pkt_free(a);
	struct sockaddr_storage client = q->rec.client, dest = q->rec.server;
	query_release(p, slot);
	reply(p, tcp, (struct sockaddr *)&client, (struct sockaddr *)&dest, data, len);
	if (tcp)
		tcp_process(tcp);
	return true;
}

/* An address record for `owner` (copied) of type A or AAAA. */
static ldns_rr *local_rr(const ldns_rdf *owner, ldns_rr_type type, const void *addr)
{
	ldns_rr *rr = ldns_rr_new();
	ldns_rdf *name = ldns_rdf_clone(owner);
	ldns_rdf *data = type == LDNS_RR_TYPE_A
				 ? ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, 4, addr)
				 : ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, 16, addr);
	if (!rr || !name || !data || !ldns_rr_push_rdf(rr, data)) {
		ldns_rr_free(rr);
		ldns_rdf_deep_free(name);
		ldns_rdf_deep_free(data);
		return NULL;
	}
	ldns_rr_set_owner(rr, name);
	ldns_rr_set_type(rr, type);
	ldns_rr_set_class(rr, LDNS_RR_CLASS_IN);
	ldns_rr_set_ttl(rr, LOCALNAME_TTL);
	return rr;
}

/* The endpoint's own names (localname.h) are ours to answer: returns true
 * when `q` asked for one of them and was answered (and recorded). */
static bool local_answer(struct dns_proxy *p, struct dns_tcp *tcp, const struct sockaddr *client,
			 const struct sockaddr *dest, const ldns_pkt *q, uint16_t client_id,
			 struct flowlog_flow *rec, uint64_t start_ns)
{
	bool has4 = p->cfg.local4.s_addr != INADDR_ANY;
	bool has6 = !IN6_IS_ADDR_UNSPECIFIED(&p->cfg.local6);
	const ldns_rr_list *qs = ldns_pkt_question(q);
	if ((!has4 && !has6) || ldns_pkt_get_opcode(q) != LDNS_PACKET_QUERY || !qs ||
	    ldns_rr_list_rr_count(qs) != 1)
		return false;
	const ldns_rr *qr = ldns_rr_list_rr(qs, 0);
	const ldns_rdf *owner = ldns_rr_owner(qr);
	ldns_rdf *zone = ldns_dname_new_frm_str(LOCALNAME_HOST ".");
	ldns_rdf *ca = ldns_dname_new_frm_str(LOCALNAME_CA_HOST ".");
	bool ours = false, exact = false;
	if (zone && ca && owner) {
		/* Names compare case-insensitively (clients may randomise case). */
		exact = ldns_dname_compare(owner, zone) == 0 || ldns_dname_compare(owner, ca) == 0;
		ours = exact || ldns_dname_is_subdomain(owner, zone);
	}
	ldns_rdf_deep_free(zone);
	ldns_rdf_deep_free(ca);
	if (!ours)
		return false;

	ldns_pkt *a = ldns_pkt_new();
	ldns_rr_list *qcopy = ldns_rr_list_clone(qs);
	if (!a || !qcopy) {
		ldns_pkt_free(a);
		ldns_rr_list_deep_free(qcopy);
		return false; /* forwarded instead */
	}
	ldns_pkt_set_id(a, client_id);
	ldns_pkt_set_qr(a, true);
	ldns_pkt_set_aa(a, true);
	ldns_pkt_set_ra(a, true);
	ldns_pkt_set_rd(a, ldns_pkt_rd(q));
	ldns_pkt_set_cd(a, ldns_pkt_cd(q));
	ldns_pkt_set_opcode(a, LDNS_PACKET_QUERY);
	ldns_pkt_push_rr_list(a, LDNS_SECTION_QUESTION, qcopy);
	ldns_rr_list_free(qcopy); /* the RRs now belong to a */
	ldns_rr_type t = ldns_rr_get_type(qr);
	bool in = ldns_rr_get_class(qr) == LDNS_RR_CLASS_IN;
	if (!exact) {
		ldns_pkt_set_rcode(a, LDNS_RCODE_NXDOMAIN);
	} else if (in) {
		/* Other types: NOERROR without answers (NODATA). */
		ldns_rr *rr4 = has4 && (t == LDNS_RR_TYPE_A || t == LDNS_RR_TYPE_ANY)
				       ? local_rr(owner, LDNS_RR_TYPE_A, &p->cfg.local4)
				       : NULL;
		ldns_rr *rr6 = has6 && (t == LDNS_RR_TYPE_AAAA || t == LDNS_RR_TYPE_ANY)
				       ? local_rr(owner, LDNS_RR_TYPE_AAAA, &p->cfg.local6)
				       : NULL;
		if (rr4)
			ldns_pkt_push_rr(a, LDNS_SECTION_ANSWER, rr4);
		if (rr6)
			ldns_pkt_push_rr(a, LDNS_SECTION_ANSWER, rr6);
	}
	uint8_t *wire = NULL;
	size_t len = 0;
	if (ldns_pkt2wire(&wire, a, &len) != LDNS_STATUS_OK)
		len = 0;
	p->stats.local_answers++;
	if (tcp)
		p->stats.queries_tcp++;
	else
		p->stats.queries_udp++;
	rec->packets_down = len ? 1 : 0;
	rec->bytes_down = len;
	dns_record(p, rec, tcp != NULL, q, a, -1, NULL, start_ns, "answered");
	ldns_pkt_free(a);
	if (len)
		reply(p, tcp, client, dest, wire, len);
	free(wire);
	return true;
}

/* A DNS override of the rules (rules.h) answers `q`: returns true when it
 * did (and recorded it, end_reason "override"). A and AAAA get the
 * override's addresses of that family; other types of the name get
 * NOERROR without answers. */
static bool override_answer(struct dns_proxy *p, struct dns_tcp *tcp, const struct sockaddr *client,
			    const struct sockaddr *dest, const ldns_pkt *q, uint16_t client_id,
			    struct flowlog_flow *rec, uint64_t start_ns, const char *peer)
{
	const ldns_rr_list *qs = ldns_pkt_question(q);
	if (!p->rules || p->rules->ndns == 0 || ldns_pkt_get_opcode(q) != LDNS_PACKET_QUERY ||
	    !qs || ldns_rr_list_rr_count(qs) != 1)
		return false;
	const ldns_rr *qr = ldns_rr_list_rr(qs, 0);
	const ldns_rdf *owner = ldns_rr_owner(qr);
	char *name = owner ? ldns_rdf2str(owner) : NULL;
	const struct rules_dns *o = name ? ruleset_dns_lookup(p->rules, name, peer) : NULL;
	free(name);
	if (!o || ldns_rr_get_class(qr) != LDNS_RR_CLASS_IN)
		return false;
	ldns_pkt *a = ldns_pkt_new();
	ldns_rr_list *qcopy = ldns_rr_list_clone(qs);
	if (!a || !qcopy) {
		ldns_pkt_free(a);
		ldns_rr_list_deep_free(qcopy);
		return false; /* forwarded instead */
	}
	ldns_pkt_set_id(a, client_id);
	ldns_pkt_set_qr(a, true);
	ldns_pkt_set_aa(a, true);
	ldns_pkt_set_ra(a, true);
	ldns_pkt_set_rd(a, ldns_pkt_rd(q));
	ldns_pkt_set_opcode(a, LDNS_PACKET_QUERY);
	ldns_pkt_push_rr_list(a, LDNS_SECTION_QUESTION, qcopy);
	ldns_rr_list_free(qcopy);
	ldns_rr_type t = ldns_rr_get_type(qr);
	for (size_t i = 0; i < o->naddrs; i++) {
		const struct sockaddr_storage *ss = &o->addrs[i];
		ldns_rr *rr = NULL;
		if (ss->ss_family == AF_INET && (t == LDNS_RR_TYPE_A || t == LDNS_RR_TYPE_ANY))
			rr = local_rr(owner, LDNS_RR_TYPE_A,
				      &((const struct sockaddr_in *)ss)->sin_addr);
		else if (ss->ss_family == AF_INET6 &&
			 (t == LDNS_RR_TYPE_AAAA || t == LDNS_RR_TYPE_ANY))
			rr = local_rr(owner, LDNS_RR_TYPE_AAAA,
				      &((const struct sockaddr_in6 *)ss)->sin6_addr);
		if (rr)
			ldns_pkt_push_rr(a, LDNS_SECTION_ANSWER, rr);
	}
	uint8_t *wire = NULL;
	size_t len = 0;
	if (ldns_pkt2wire(&wire, a, &len) != LDNS_STATUS_OK)
		len = 0;
	p->stats.override_answers++;
	if (tcp)
		p->stats.queries_tcp++;
	else
		p->stats.queries_udp++;
	rec->packets_down = len ? 1 : 0;
	rec->bytes_down = len;
	dns_record(p, rec, tcp != NULL, q, a, -1, NULL, start_ns, "override");
	ldns_pkt_free(a);
	if (len)
		reply(p, tcp, client, dest, wire, len);
	free(wire);
	return true;
}

void dns_proxy_set_rules(struct dns_proxy *p, struct ruleset *rs)
{
	ruleset_unref(p->rules);
	p->rules = ruleset_ref(rs);
}

/* A query from a client (UDP, or one TCP message). Returns true when a
 * query is now in flight. */
static bool query_start(struct dns_proxy *p, struct dns_tcp *tcp, const struct sockaddr *client,
			const struct sockaddr *dest, const uint8_t *data, size_t len)
{
	/* Check hostile input before any work: the fixed header first. */
	if (len < DNS_HEADER_LEN) {
		p->stats.malformed++;
		return false;
	}
	if (data[2] & DNS_FLAG_QR) {
		p->stats.ignored++; /* a response sent to us: never answered */
		return false;
	}
	uint64_t start_ns = uv_hrtime();
	const char *peer = p->cfg.peer_name ? p->cfg.peer_name(p->cfg.peer_ctx, client) : NULL;
	struct flowlog_flow rec;
	flowlog_flow_begin(&rec, p->cfg.log, "dns", peer, client, dest);
	rec.has_packets = true;
	rec.packets_up = 1;
	rec.bytes_up = len;
	uint16_t client_id = (uint16_t)(data[0] << 8 | data[1]);

	ldns_pkt *qp = NULL;
	if (ldns_wire2pkt(&qp, data, len) != LDNS_STATUS_OK) {
		p->stats.formerr++;
		uint8_t *wire;
		size_t n = synth_response(data, NULL, client_id, LDNS_RCODE_FORMERR, &wire);
		rec.packets_down = n ? 1 : 0;
		rec.bytes_down = n;
		dns_record(p, &rec, tcp != NULL, NULL, NULL, LDNS_RCODE_FORMERR, NULL, start_ns,
			   "malformed");
		if (n)
			reply(p, tcp, client, dest, wire, n);
		free(wire);
		return false;
	}
	if (local_answer(p, tcp, client, dest, qp, client_id, &rec, start_ns) ||
	    override_answer(p, tcp, client, dest, qp, client_id, &rec, start_ns, peer)) {
		ldns_pkt_free(qp);
		return false;
	}
	struct tally_entry *share = NULL;
	if (p->nfree == 0 || !(share = tally_take(p->peer_queries, peer, p->peer_max_queries))) {
		if (p->nfree == 0)
			p->stats.busy++;
		else
			p->stats.busy_peer++;
		uint8_t *wire;
		size_t n = synth_response(NULL, qp, client_id, LDNS_RCODE_SERVFAIL, &wire);
		rec.packets_down = n ? 1 : 0;
		rec.bytes_down = n;
		dns_record(p, &rec, tcp != NULL, qp, NULL, LDNS_RCODE_SERVFAIL, NULL, start_ns,
			   p->nfree == 0 ? "busy" : "limit:peer_queries");
		ldns_pkt_free(qp);
		if (n)
			reply(p, tcp, client, dest, wire, n);
		free(wire);
		return false;
	}
	uint8_t *wire = malloc(len);
	if (!wire) {
		tally_give(p->peer_queries, share);
		ldns_pkt_free(qp);
		p->stats.malformed++;
		return false;
	}
	uint32_t slot = p->free_slots[--p->nfree];
	int id = dns_idmap_add(&p->ids, slot); /* cannot fail: slots < 65536 */
	struct dns_query *q = &p->queries[slot];
	q->used = true;
	q->share = share;
	q->client_id = client_id;
	q->up_id = (uint16_t)id;
	q->tcp = tcp;
	q->q = qp;
	memcpy(wire, data, len);
	wire[0] = (uint8_t)(id >> 8);
	wire[1] = (uint8_t)id;
	q->wire = wire;
	q->len = len;
	q->start_ns = start_ns;
	q->deadline_ms = uv_now(p->loop) + p->cfg.timeout_ms;
	q->cur = 0;
	q->rec = rec;
	p->stats.outstanding++;
	if (tcp) {
		p->stats.queries_tcp++;
		tcp->query = slot;
	} else {
		p->stats.queries_udp++;
	}
	query_send(p, slot);
	return true;
}

/* ---- UDP upstream --------------------------------------------------------- */

static int fam_index(int family)
{
	return family == AF_INET6;
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
	return sockaddr_same(a, (const struct sockaddr *)b);
}

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct dns_proxy *p = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)p->buf, sizeof(p->buf));
}

static void udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
		     unsigned flags)
{
	struct dns_proxy *p = h->data;
	(void)buf;
	if (nread < 0) {
		p->stats.upstream_errors++; /* e.g. ECONNREFUSED: the attempt times out */
		return;
	}
	if (!addr)
		return;
	if (nread < DNS_HEADER_LEN || (flags & UV_UDP_PARTIAL)) {
		p->stats.stray_answers++;
		return;
	}
	uint32_t slot = dns_idmap_get(&p->ids, (uint16_t)(p->buf[0] << 8 | p->buf[1]));
	struct dns_query *q = slot != DNS_IDMAP_NONE ? &p->queries[slot] : NULL;
	size_t from = DNS_MAX_UPSTREAMS;
	for (size_t i = 0; q && !q->tcp && i < p->cfg.nupstreams; i++)
		if ((q->tried & (1u << i)) && same_addr(addr, &p->cfg.upstreams[i]))
			from = i;
	if (from == DNS_MAX_UPSTREAMS || !query_answer(p, slot, p->buf, (size_t)nread, from))
		p->stats.stray_answers++;
}

/* ---- TCP: the client side -------------------------------------------------- */

static void tcp_unlink(struct dns_tcp *t)
{
	struct dns_proxy *p = t->p;
	if (t->prev)
		t->prev->next = t->next;
	else
		p->tcps = t->next;
	if (t->next)
		t->next->prev = t->prev;
	tally_give(p->peer_tcp, t->share);
	t->share = NULL;
	p->stats.tcp_active--;
}

/* The connection is gone (closed by us or by the client): its query, if
 * any, is recorded as "closed" and the upstream connection dropped. */
static void tcp_forget(struct dns_tcp *t, const char *reason)
{
	struct dns_proxy *p = t->p;
	if (t->query != DNS_SLOT_NONE) {
		struct dns_query *q = &p->queries[t->query];
		dns_record(p, &q->rec, true, q->q, NULL, -1,
			   (const struct sockaddr *)&p->cfg.upstreams[q->cur], q->start_ns, reason);
		query_release(p, t->query);
	}
	up_abandon(t);
	tcp_unlink(t);
	free(t->in);
	free(t->out);
	free(t);
}

static void tcp_close(struct dns_tcp *t)
{
	stream_close(t->conn);
	tcp_forget(t, "closed");
}

static bool tcp_busy(const struct dns_tcp *t)
{
	return t->query != DNS_SLOT_NONE || t->out != NULL;
}

static void tcp_flush(struct dns_tcp *t)
{
	while (t->out && t->out_off < t->out_len) {
		size_t n = stream_write(t->conn, t->out + t->out_off, t->out_len - t->out_off);
		if (n == 0)
			return; /* ops.sent will call again */
		t->out_off += n;
	}
	free(t->out);
	t->out = NULL;
}

static void tcp_respond(struct dns_tcp *t, const uint8_t *data, size_t len)
{
	if (t->out || len > DNS_TCP_MAX_MSG)
		return; /* one answer at a time, by construction */
	t->out = malloc(2 + len);
	if (!t->out) {
		t->p->stats.reply_drop++;
		return;
	}
	t->out[0] = (uint8_t)(len >> 8);
	t->out[1] = (uint8_t)len;
	memcpy(t->out + 2, data, len);
	t->out_len = 2 + len;
	t->out_off = 0;
	tcp_flush(t);
}

/* Handles whole messages while nothing is in flight, and keeps the
 * client's window closed while something is (RFC 7766 allows serving one
 * query at a time per connection). */
static void tcp_process(struct dns_tcp *t)
{
	struct dns_proxy *p = t->p;
	while (!tcp_busy(t) && t->in_len >= 2) {
		size_t mlen = (size_t)t->in[0] << 8 | t->in[1];
		if (t->in_len < 2 + mlen)
			break;
		query_start(p, t, (struct sockaddr *)&t->client, (struct sockaddr *)&t->dest,
			    t->in + 2, mlen);
		memmove(t->in, t->in + 2 + mlen, t->in_len - 2 - mlen);
		t->in_len -= 2 + mlen;
	}
	t->idle_due = uv_now(p->loop) + DNS_TCP_IDLE_MS;
	if (tcp_busy(t)) {
		if (!t->paused) {
			t->paused = true;
			stream_pause(t->conn);
		}
		return;
	}
	timer_arm(p, t->idle_due);
	if (t->eof && t->in_len < 2) {
		tcp_close(t);
		return;
	}
	if (t->paused) {
		t->paused = false;
		stream_resume(t->conn); /* may deliver held data: tcp_recv */
	}
}

static void tcp_recv(void *arg, const uint8_t *data, size_t len)
{
	struct dns_tcp *t = arg;
	if (len == 0) {
		t->eof = true;
		if (!tcp_busy(t))
			tcp_process(t);
		return;
	}
	if (t->in_len + len > DNS_TCP_IN_CAP) {
		stream_abort(t->conn);
		tcp_forget(t, "closed");
		return;
	}
	if (t->in_len + len > t->in_cap) {
		size_t cap = t->in_cap ? t->in_cap : 512;
		while (cap < t->in_len + len)
			cap *= 2;
		if (cap > DNS_TCP_IN_CAP)
			cap = DNS_TCP_IN_CAP;
		uint8_t *n = realloc(t->in, cap);
		if (!n) {
			stream_abort(t->conn);
			tcp_forget(t, "closed");
			return;
		}
		t->in = n;
		t->in_cap = cap;
	}
	memcpy(t->in + t->in_len, data, len);
	t->in_len += len;
	if (!tcp_busy(t))
		tcp_process(t);
}

static void tcp_sent(void *arg, size_t len)
{
	struct dns_tcp *t = arg;
	(void)len;
	if (!t->out)
		return;
	tcp_flush(t);
	if (!t->out)
		tcp_process(t);
}

static void tcp_closed(void *arg, int err)
{
	struct dns_tcp *t = arg;
	(void)err;
	tcp_forget(t, "closed");
}

int dns_proxy_tcp_accept(void *ctx, struct stream *conn, const struct sockaddr *client,
			 const struct sockaddr *dest)
{
	struct dns_proxy *p = ctx;
	if (p->shut || p->stats.tcp_active >= p->cfg.max_tcp) {
		p->stats.tcp_refused++;
		return -1;
	}
	const char *peer = p->cfg.peer_name ? p->cfg.peer_name(p->cfg.peer_ctx, client) : NULL;
	struct tally_entry *share = tally_take(p->peer_tcp, peer, p->peer_max_tcp);
	if (!share) {
		p->stats.tcp_refused_peer++;
		return -1;
	}
	struct dns_tcp *t = calloc(1, sizeof(*t));
	if (!t) {
		tally_give(p->peer_tcp, share);
		p->stats.tcp_refused++;
		return -1;
	}
	t->share = share;
	t->p = p;
	t->conn = conn;
	memcpy(&t->client, client, sa_len(client));
	memcpy(&t->dest, dest, sa_len(dest));
	t->query = DNS_SLOT_NONE;
	t->next = p->tcps;
	if (p->tcps)
		p->tcps->prev = t;
	p->tcps = t;
	p->stats.tcp_accepted++;
	p->stats.tcp_active++;
	static const struct stream_cb ops = {
		.recv = tcp_recv,
		.sent = tcp_sent,
		.closed = tcp_closed,
	};
	stream_set_cb(conn, &ops, t);
	t->idle_due = uv_now(p->loop) + DNS_TCP_IDLE_MS;
	timer_arm(p, t->idle_due);
	return 0;
}

/* ---- TCP: the upstream side ------------------------------------------------ */

static void up_closed(uv_handle_t *h)
{
	struct dns_upconn *u = h->data;
	struct dns_proxy *p = u->p;
	free(u->wbuf);
	free(u->msg);
	free(u);
	p->closing--;
	proxy_maybe_release(p);
}

static void up_abandon(struct dns_tcp *t)
{
	struct dns_upconn *u = t->up;
	if (!u)
		return;
	t->up = NULL;
	u->owner = NULL;
	u->p->closing++;
	uv_close((uv_handle_t *)&u->tcp, up_closed);
}

/* This attempt cannot succeed (upstream refused, reset or closed): go to
 * the next upstream now if one is untried, else wait for the timer. */
static void up_failed(struct dns_tcp *t)
{
	struct dns_proxy *p = t->p;
	p->stats.upstream_errors++;
	up_abandon(t);
	if (t->query == DNS_SLOT_NONE)
		return;
	struct dns_query *q = &p->queries[t->query];
	uint32_t all = (uint32_t)((1ull << p->cfg.nupstreams) - 1);
	if ((q->tried & all) != all) {
		q->cur = (q->cur + 1) % p->cfg.nupstreams;
		p->stats.retries++;
		query_send(p, t->query);
	}
}

static void up_write_done(uv_write_t *req, int status)
{
	struct dns_upconn *u = req->data;
	u->writing = false;
	free(u->wbuf);
	u->wbuf = NULL;
	if (status < 0 && u->owner)
		up_failed(u->owner);
}

static void up_write(struct dns_upconn *u, const uint8_t *wire, size_t len)
{
	u->wbuf = malloc(2 + len);
	if (!u->wbuf) {
		up_failed(u->owner);
		return;
	}
	u->wbuf[0] = (uint8_t)(len >> 8);
	u->wbuf[1] = (uint8_t)len;
	memcpy(u->wbuf + 2, wire, len);
	uv_buf_t b = uv_buf_init((char *)u->wbuf, (unsigned)(2 + len));
	u->wreq.data = u;
	u->writing = true;
	if (uv_write(&u->wreq, (uv_stream_t *)&u->tcp, &b, 1, up_write_done) < 0) {
		u->writing = false;
		free(u->wbuf);
		u->wbuf = NULL;
		up_failed(u->owner);
	}
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct dns_upconn *u = h->data;
	(void)suggested;
	/* Read exactly what the frame still needs: the length, then the message. */
	if (u->hdr_have < 2)
		*buf = uv_buf_init((char *)u->hdr + u->hdr_have, (unsigned)(2 - u->hdr_have));
	else
		*buf = uv_buf_init((char *)u->msg + u->msg_have,
				   (unsigned)(u->msg_len - u->msg_have));
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct dns_upconn *u = s->data;
	struct dns_tcp *t = u->owner;
	(void)buf;
	if (!t || nread == 0)
		return;
	if (nread < 0) {
		up_failed(t);
		return;
	}
	if (u->hdr_have < 2) {
		u->hdr_have += (size_t)nread;
		if (u->hdr_have < 2)
			return;
		u->msg_len = (size_t)u->hdr[0] << 8 | u->hdr[1];
		u->msg_have = 0;
		u->msg = u->msg_len >= DNS_HEADER_LEN ? malloc(u->msg_len) : NULL;
		if (!u->msg)
			up_failed(t);
		return;
	}
	u->msg_have += (size_t)nread;
	if (u->msg_have < u->msg_len)
		return;
	uint8_t *msg = u->msg;
	size_t len = u->msg_len;
	u->msg = NULL;
	u->hdr_have = 0;
	struct dns_proxy *p = t->p;
	uint32_t slot = t->query;
	if (slot == DNS_SLOT_NONE || p->queries[slot].up_id != (uint16_t)(msg[0] << 8 | msg[1]) ||
	    !query_answer(p, slot, msg, len, u->upstream))
		p->stats.stray_answers++;
	free(msg);
}

static void up_connected(uv_connect_t *req, int status)
{
	struct dns_upconn *u = req->data;
	struct dns_tcp *t = u->owner;
	if (!t)
		return;
	if (status < 0 || uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read) < 0) {
		up_failed(t);
		return;
	}
	u->connected = true;
	if (t->query != DNS_SLOT_NONE) {
		struct dns_query *q = &t->p->queries[t->query];
		up_write(u, q->wire, q->len);
	}
}

/* Sends the connection's query to upstream q->cur over TCP: on the kept
 * connection when it goes there and is idle, else on a new one. */
static void up_send(struct dns_tcp *t, struct dns_query *q)
{
	struct dns_proxy *p = t->p;
	struct dns_upconn *u = t->up;
	if (u && (u->upstream != q->cur || u->writing || u->hdr_have || !u->connected))
		up_abandon(t);
	if (t->up) {
		up_write(t->up, q->wire, q->len);
		return;
	}
	u = calloc(1, sizeof(*u));
	if (!u) {
		p->stats.upstream_errors++;
		return;
	}
	u->p = p;
	u->owner = t;
	u->upstream = q->cur;
	u->tcp.data = u;
	u->creq.data = u;
	int rc = uv_tcp_init(p->loop, &u->tcp);
	if (rc < 0) {
		free(u);
		p->stats.upstream_errors++;
		return;
	}
	t->up = u;
	rc = uv_tcp_connect(&u->creq, &u->tcp, (const struct sockaddr *)&p->cfg.upstreams[q->cur],
			    up_connected);
	if (rc < 0)
		up_failed(t); /* the timer tries again */
}

/* ---- Attempts and the timer ---------------------------------------------- */

static void query_send(struct dns_proxy *p, uint32_t slot)
{
	struct dns_query *q = &p->queries[slot];
	q->tried |= 1u << q->cur;
	q->attempt_due_ms = uv_now(p->loop) + p->cfg.attempt_ms;
	timer_arm(p, q->attempt_due_ms < q->deadline_ms ? q->attempt_due_ms : q->deadline_ms);
	if (q->tcp) {
		up_send(q->tcp, q);
		return;
	}
	const struct sockaddr *up = (const struct sockaddr *)&p->cfg.upstreams[q->cur];
	int fi = fam_index(up->sa_family);
	uv_buf_t b = uv_buf_init((char *)q->wire, (unsigned)q->len);
	if (!p->has_sock[fi] || uv_udp_try_send(&p->sock[fi], &b, 1, up) < 0)
		p->stats.upstream_errors++; /* lost like a datagram: the next attempt retries */
}

static void on_timer(uv_timer_t *tm)
{
	struct dns_proxy *p = tm->data;
	uint64_t now = uv_now(p->loop);
	p->timer_due = UINT64_MAX;
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < p->cfg.max_outstanding; i++) {
		struct dns_query *q = &p->queries[i];
		if (!q->used)
			continue;
		if (now >= q->deadline_ms) {
			p->stats.timeouts++;
			query_fail(p, i, "timeout");
			continue;
		}
		if (now >= q->attempt_due_ms) {
			/* The next upstream in order (the same one again when there
			 * is one): a lost datagram or a dead resolver. */
			q->cur = (q->cur + 1) % p->cfg.nupstreams;
			p->stats.retries++;
			if (q->tcp)
				up_abandon(q->tcp);
			query_send(p, i);
		}
		if (!q->used)
			continue;
		uint64_t due =
			q->attempt_due_ms < q->deadline_ms ? q->attempt_due_ms : q->deadline_ms;
		if (due < next)
			next = due;
	}
	for (struct dns_tcp *t = p->tcps, *n; t; t = n) {
		n = t->next;
		if (tcp_busy(t))
			continue;
		if (now >= t->idle_due) {
			tcp_close(t);
			continue;
		}
		if (t->idle_due < next)
			next = t->idle_due;
	}
	/* Only ever earlier than what the loop itself armed: a query failed
	 * above may have started the next query of its TCP connection in the
	 * slot it freed (or a lower one), which this loop does not visit again,
	 * so `next` can miss it; stopping the timer here left that query with
	 * no attempt and no deadline. A timer armed for something since ended
	 * only makes a spare run. */
	timer_arm(p, next);
}

static void timer_arm(struct dns_proxy *p, uint64_t due)
{
	if (p->shut || due == UINT64_MAX || due >= p->timer_due)
		return;
	uint64_t now = uv_now(p->loop);
	p->timer_due = due;
	uv_timer_start(&p->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- UDP entry, setup and teardown ------------------------------------------ */

void dns_proxy_udp(struct dns_proxy *p, const struct sockaddr *client, const struct sockaddr *dest,
		   const uint8_t *data, size_t len)
{
	if (p->shut)
		return;
	query_start(p, NULL, client, dest, data, len);
}

static int open_udp(struct dns_proxy *p, int family)
{
	int fi = fam_index(family);
	uv_udp_t *u = &p->sock[fi];
	int rc = uv_udp_init_ex(p->loop, u, (unsigned)family);
	if (rc < 0)
		return rc;
	p->has_sock[fi] = true;
	u->data = p;
	struct sockaddr_storage any;
	memset(&any, 0, sizeof(any));
	any.ss_family = (sa_family_t)family;
	if ((rc = uv_udp_bind(u, (struct sockaddr *)&any,
			      family == AF_INET6 ? UV_UDP_IPV6ONLY : 0)) < 0)
		return rc;
	return uv_udp_recv_start(u, udp_alloc, udp_recv);
}

static void handle_closed(uv_handle_t *h)
{
	struct dns_proxy *p = h->data;
	p->closing--;
	proxy_maybe_release(p);
}

static uint32_t half(size_t n)
{
	return n > 1 ? (uint32_t)(n / 2) : 1;
}

struct dns_proxy *dns_proxy_new(uv_loop_t *loop, struct netstack *ns, const struct dns_config *cfg)
{
	if (!loop || !cfg || cfg->nupstreams == 0 || cfg->nupstreams > DNS_MAX_UPSTREAMS ||
	    cfg->max_outstanding > 65535 || (!ns && !cfg->send)) {
		errno = EINVAL;
		return NULL;
	}
	for (size_t i = 0; i < cfg->nupstreams; i++) {
		int f = cfg->upstreams[i].ss_family;
		if (f != AF_INET && f != AF_INET6) {
			errno = EINVAL;
			return NULL;
		}
	}
	if (sodium_init() < 0) {
		errno = ENOMEM;
		return NULL;
	}
	struct dns_proxy *p = calloc(1, sizeof(*p));
	if (!p) {
		errno = ENOMEM;
		return NULL;
	}
	p->loop = loop;
	p->ns = ns;
	p->cfg = *cfg;
	if (!p->cfg.timeout_ms)
		p->cfg.timeout_ms = DNS_DEFAULT_TIMEOUT_MS;
	if (!p->cfg.attempt_ms)
		p->cfg.attempt_ms = DNS_DEFAULT_ATTEMPT_MS;
	if (!p->cfg.max_outstanding)
		p->cfg.max_outstanding = DNS_DEFAULT_MAX_OUTSTANDING;
	if (!p->cfg.max_tcp)
		p->cfg.max_tcp = DNS_DEFAULT_MAX_TCP;
	p->peer_max_queries = half(p->cfg.max_outstanding);
	p->peer_max_tcp = half(p->cfg.max_tcp);
	p->queries = calloc(p->cfg.max_outstanding, sizeof(*p->queries));
	p->free_slots = calloc(p->cfg.max_outstanding, sizeof(*p->free_slots));
	p->peer_queries = tally_new();
	p->peer_tcp = tally_new();
	if (!p->queries || !p->free_slots || !p->peer_queries || !p->peer_tcp) {
		p->freeing = true;
		proxy_maybe_release(p);
		errno = ENOMEM;
		return NULL;
	}
	/* Lowest slot first out. */
	for (uint32_t i = 0; i < p->cfg.max_outstanding; i++)
		p->free_slots[i] = (uint32_t)(p->cfg.max_outstanding - 1 - i);
	p->nfree = (uint32_t)p->cfg.max_outstanding;
	dns_idmap_init(&p->ids);
	p->timer_due = UINT64_MAX;
	uv_timer_init(loop, &p->timer);
	p->timer.data = p;

	bool want[2] = { false, false };
	for (size_t i = 0; i < p->cfg.nupstreams; i++)
		want[fam_index(p->cfg.upstreams[i].ss_family)] = true;
	for (int fi = 0; fi < 2; fi++) {
		if (!want[fi])
			continue;
		int rc = open_udp(p, fi ? AF_INET6 : AF_INET);
		if (rc < 0) {
			dns_proxy_free(p);
			errno = -rc;
			return NULL;
		}
	}
	return p;
}

int dns_proxy_set_upstreams(struct dns_proxy *p, const struct sockaddr_storage *ups, size_t n)
{
	if (n == 0 || n > DNS_MAX_UPSTREAMS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int f = ups[i].ss_family;
		if (f != AF_INET && f != AF_INET6)
			return -EINVAL;
		int fi = fam_index(f);
		if (!p->has_sock[fi]) {
			int rc = open_udp(p, f);
			if (rc < 0)
				return rc;
		}
	}
	memcpy(p->cfg.upstreams, ups, n * sizeof(*ups));
	p->cfg.nupstreams = n;
	/* Queries in flight go on with the new list at their next attempt;
	 * an answer from an old upstream is then stray. */
	for (uint32_t i = 0; i < p->cfg.max_outstanding; i++) {
		struct dns_query *q = &p->queries[i];
		if (!q->used)
			continue;
		q->tried = 0;
		q->cur = 0;
	}
	return 0;
}

void dns_proxy_get_stats(const struct dns_proxy *p, struct dns_stats *out)
{
	*out = p->stats;
}

void dns_proxy_shutdown(struct dns_proxy *p)
{
	if (p->shut)
		return;
	while (p->tcps) {
		struct dns_tcp *t = p->tcps;
		stream_abort(t->conn);
		tcp_forget(t, "shutdown");
	}
	for (uint32_t i = 0; i < p->cfg.max_outstanding; i++) {
		struct dns_query *q = &p->queries[i];
		if (!q->used)
			continue;
		dns_record(p, &q->rec, false, q->q, NULL, -1,
			   (const struct sockaddr *)&p->cfg.upstreams[q->cur], q->start_ns,
			   "shutdown");
		query_release(p, i);
	}
	p->shut = true;
	for (int fi = 0; fi < 2; fi++) {
		if (p->has_sock[fi]) {
			p->closing++;
			uv_close((uv_handle_t *)&p->sock[fi], handle_closed);
		}
	}
	p->closing++;
	uv_close((uv_handle_t *)&p->timer, handle_closed);
}

void dns_proxy_free(struct dns_proxy *p)
{
	if (!p)
		return;
	dns_proxy_shutdown(p);
	p->freeing = true;
	proxy_maybe_release(p);
}
