/* libFuzzer target for the tunnel's DNS proxy: queries from peers over UDP
 * (dns_proxy_udp) and over TCP (real netstack connections from a hand-made
 * client into dns_proxy_tcp_accept, length-prefixed messages split as the
 * input says), and the upstream resolvers' answers, also untrusted: UDP
 * datagrams on the proxy's sockets and the TCP stream of an upstream
 * connection, fed through libuv's callbacks by fuzz_uv.h (no sockets; the
 * clock and the query IDs are the input's to decide).
 *
 * Input: byte 0 is the configuration (bits 0-1 the upstreams, 2-3
 * max_outstanding, 4 the endpoint's own names answered here, 5 max_tcp 1,
 * 6-7 attempt and timeout). Then operations, each a byte: bits 0-3 the
 * operation, bits 4-7 an argument `a`. "chunk" is a length (1 byte; bit 7
 * set: 15 bits over 2 bytes) and that many bytes.
 *   0 UDP query        client a&3 (two IPv4, two IPv6); chunk
 *   1 UDP answer       raw chunk to the socket the (a&3)-th latest
 *                      datagram left from; a&4: its ID is that query's;
 *                      a&8: from another address than the one asked
 *   2 UDP answer       built: that query's header and question, a flags
 *                      byte (rcode, TC, AA, QR cleared, question case
 *                      changed), a counts byte (AN, NS, AR), then the
 *                      records as a chunk; a as for 1 (a&4 unused)
 *   3 UDP event        a&1: the (a>>1)-th socket reports ECONNREFUSED,
 *                      else "nothing more to read"
 *   4 time             the clock moves on (attempts, timeouts, idle TCP)
 *   5 TCP connect      connection a&3; a&4 IPv6; a&8 acknowledges only
 *                      on "ack"
 *   6 TCP data         connection a&3, chunk sent raw
 *   7 TCP message      connection a&3, chunk sent with its length prefix
 *   8 TCP end          connection a&3; a&4: reset, else FIN
 *   9 TCP ack/ticks    connection a&3; a&8: 8 ticks of lwIP's timers,
 *                      else acknowledge what arrived
 *  10 upstream connect the (a&7)-th pending TCP connect completes;
 *                      a&8: refused
 *  11 upstream write   the (a&7)-th pending write completes; a&8: reset
 *  12 upstream bytes   the (a&7)-th upstream TCP stream reads a raw chunk
 *  13 upstream answer  built as for 2 from the latest query written on
 *                      stream a&7, framed, delivered in two reads (a split
 *                      byte first)
 *  14 upstream end     stream a&7 reads EOF, or with a&8 a reset
 *  15 failure          the next libuv call of one kind fails (fuv_fail)
 *
 * Invariants beyond "no crash / no sanitizer report": every answer a client
 * gets (UDP, or a message on its TCP stream) is a response (QR set, a whole
 * header) carrying an ID that client used; at the end, with the clock
 * moved on, every query still in flight times out by its deadline; every
 * record in the flows file parses as a JSON object. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_flows.h"
#include "fuzz_tcp_peer.h"
#include "fuzz_uv.h"

#include "mitm/dns.h"
#include "fuzz_reader.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NCLIENTS 4

static uv_loop_t loop;
static bool debug; /* WGMITM_FUZZ_DEBUG set: what each input did, on stderr */

/* The IDs each client used: its answers may carry no other. */
struct ids {
	uint8_t bits[65536 / 8];
};

static void ids_add(struct ids *s, const uint8_t *msg, size_t len)
{
	if (len >= 2)
		s->bits[(msg[0] << 5) | (msg[1] >> 3)] |= (uint8_t)(1u << (msg[1] & 7));
}

static bool ids_has(const struct ids *s, const uint8_t *msg)
{
	return s->bits[(msg[0] << 5) | (msg[1] >> 3)] & (1u << (msg[1] & 7));
}

static void check_answer(const struct ids *s, const uint8_t *msg, size_t len, const char *how)
{
	if (len < 12 || !(msg[2] & 0x80) || !ids_has(s, msg)) {
		fprintf(stderr, "%s answer of %zu bytes is not a response with the client's ID\n",
			how, len);
		abort();
	}
}

/* ---- UDP clients ------------------------------------------------------- */

static struct sockaddr_storage clients[NCLIENTS], tunnel4, tunnel6;
static struct ids udp_ids[NCLIENTS];

static int client_index(const struct sockaddr *sa)
{
	for (int i = 0; i < NCLIENTS; i++) {
		const struct sockaddr *c = (const struct sockaddr *)&clients[i];
		if (c->sa_family != sa->sa_family)
			continue;
		size_t n = c->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						   : sizeof(struct sockaddr_in6);
		if (memcmp(c, sa, n) == 0)
			return i;
	}
	return -1;
}

static int on_reply(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		    const uint8_t *data, size_t len)
{
	(void)ctx;
	int i = client_index(to);
	const struct sockaddr *want = to->sa_family == AF_INET ? (const struct sockaddr *)&tunnel4
							       : (const struct sockaddr *)&tunnel6;
	size_t n =
		to->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (i < 0 || memcmp(from, want, n) != 0) {
		fprintf(stderr, "UDP answer to an address that asked nothing, or from another\n");
		abort();
	}
	check_answer(&udp_ids[i], data, len, "UDP");
	return 0;
}

static const char *peer_of(void *ctx, const struct sockaddr *client)
{
	(void)ctx;
	switch (client_index(client)) {
	case 0:
		return "phone";
	case 1:
		return NULL;
	case 2:
		return "laptop \"work\" \xc3\xa9\\";
	default:
		return "a-peer-name-longer-than-the-record-keeps-it-at-all-0123456789abcdefghij";
	}
}

/* ---- TCP clients: what they send and what comes back, both framed ----- */

/* A stream of length-prefixed messages; only their heads are kept. */
struct framer {
	uint8_t hdr[2];
	size_t hdr_have;
	uint8_t head[12];
	size_t len, have;
};

struct tcp_client {
	struct ids ids;
	struct framer sent, rcvd;
};

static struct tcp_client tcps[TCPP_CONNS];

/* Feeds stream bytes; calls `done` with the head (up to 12 bytes) and
 * length of each whole message. */
static void framer_feed(struct framer *f, const uint8_t *p, size_t n,
			void (*done)(size_t conn, const uint8_t *head, size_t len), size_t conn)
{
	while (n > 0) {
		if (f->hdr_have < 2) {
			f->hdr[f->hdr_have++] = *p++;
			n--;
			if (f->hdr_have == 2) {
				f->len = (size_t)f->hdr[0] << 8 | f->hdr[1];
				f->have = 0;
				if (f->len == 0) {
					done(conn, f->head, 0);
					f->hdr_have = 0;
				}
			}
			continue;
		}
		size_t k = f->len - f->have < n ? f->len - f->have : n;
		for (size_t i = 0; i < k && f->have + i < sizeof(f->head); i++)
			f->head[f->have + i] = p[i];
		f->have += k;
		p += k;
		n -= k;
		if (f->have == f->len) {
			done(conn, f->head, f->len);
			f->hdr_have = 0;
		}
	}
}

static void sent_msg(size_t conn, const uint8_t *msg, size_t len)
{
	ids_add(&tcps[conn].ids, msg, len);
}

static void rcvd_msg(size_t conn, const uint8_t *msg, size_t len)
{
	check_answer(&tcps[conn].ids, msg, len, "TCP");
}

static void on_tcp_data(void *ctx, size_t i, const uint8_t *data, size_t len)
{
	(void)ctx;
	framer_feed(&tcps[i].rcvd, data, len, rcvd_msg, i);
}

/* ---- Answers from upstream ------------------------------------------- */

/* Where the question section of `q` ends (QDCOUNT names with type and
 * class), or 0 when it does not parse that far. */
static size_t question_end(const uint8_t *q, size_t len)
{
	size_t off = 12, qd = (size_t)q[4] << 8 | q[5];
	for (size_t i = 0; i < qd; i++) {
		for (;;) {
			if (off >= len)
				return 0;
			uint8_t l = q[off];
			if ((l & 0xc0) == 0xc0) {
				off += 2;
				break;
			}
			if (l & 0xc0)
				return 0;
			off += 1 + (size_t)l;
			if (l == 0)
				break;
		}
		off += 4;
		if (off > len)
			return 0;
	}
	return off;
}

/* An answer to query `q` (its ID, opcode, RD, CD and question) with the
 * input's flags, counts and records. Returns its length. */
static size_t build_answer(const uint8_t *q, size_t qlen, uint8_t flags, uint8_t counts,
			   const uint8_t *rrs, size_t rrlen, uint8_t *out, size_t cap)
{
	if (qlen < 12)
		return 0;
	size_t qend = question_end(q, qlen);
	if (qend == 0)
		qend = 12;
	if (qend + rrlen > cap)
		rrlen = cap - qend;
	memcpy(out, q, qend);
	if (qend == 12)
		out[4] = out[5] = 0;
	out[2] = (uint8_t)((q[2] & 0x79) | (flags & 0x40 ? 0 : 0x80) | (flags & 0x20 ? 0x04 : 0) |
			   (flags & 0x10 ? 0x02 : 0));
	out[3] = (uint8_t)(0x80 | (q[3] & 0x10) | (flags & 0x0f));
	out[6] = 0;
	out[7] = counts & 0x0f;
	out[8] = 0;
	out[9] = (counts >> 4) & 3;
	out[10] = 0;
	out[11] = counts >> 6;
	if (flags & 0x80) {
		/* Another case for the name: still the same question. */
		for (size_t i = 13; i < qend; i++) {
			uint8_t c = out[i];
			if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
				out[i] ^= 0x20;
				break;
			}
		}
	}
	memcpy(out + qend, rrs, rrlen);
	return qend + rrlen;
}

/* The (k % n)-th latest of the recorded UDP datagrams (or TCP writes) that
 * still name their handle; NULL when there is none. */
static const struct fuv_msg *latest_sent(bool tcp, size_t k, const void *handle)
{
	size_t n = 0;
	for (size_t i = 0; i < fuv_nsent; i++)
		n += fuv_sent(i)->h && fuv_sent(i)->tcp == tcp &&
		     (!handle || fuv_sent(i)->h == handle);
	if (n == 0)
		return NULL;
	k %= n;
	for (size_t i = fuv_nsent; i-- > 0;) {
		const struct fuv_msg *m = fuv_sent(i);
		if (m->h && m->tcp == tcp && (!handle || m->h == handle) && k-- == 0)
			return m;
	}
	return NULL;
}

/* ---- Input -------------------------------------------------------------- */

static void set_addr(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		inet_pton(AF_INET6, ip, &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		inet_pton(AF_INET, ip, &a->sin_addr);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuv_init();
	if (uv_loop_init(&loop) != 0)
		abort();
	flows_init();
	set_addr(&clients[0], "10.77.0.2", 40001);
	set_addr(&clients[1], "10.77.0.3", 53);
	set_addr(&clients[2], "fd77::2", 40002);
	set_addr(&clients[3], "fd77::3", 5353);
	set_addr(&tunnel4, "10.77.0.1", 53);
	set_addr(&tunnel6, "fd77::1", 53);
	debug = getenv("WGMITM_FUZZ_DEBUG") != NULL;
	return 0;
}

static const uint64_t advances[16] = { 1,    10,   50,   100,   150,   300,   1000,  1999,
				       2000, 2500, 5000, 10000, 10001, 30000, 60000, 600000 };

static const struct {
	enum fuv_op op;
	int err;
} failures[16] = {
	{ FUV_UDP_SEND, UV_EAGAIN },
	{ FUV_UDP_SEND, UV_ENETUNREACH },
	{ FUV_UDP_SEND, UV_EMSGSIZE },
	{ FUV_TCP_CONNECT, UV_ECONNREFUSED },
	{ FUV_TCP_CONNECT, UV_EADDRNOTAVAIL },
	{ FUV_READ_START, UV_ENOTCONN },
	{ FUV_WRITE, UV_EPIPE },
	{ FUV_WRITE, UV_ENOMEM },
	{ FUV_UDP_SEND, UV_EAGAIN },
	{ FUV_TCP_CONNECT, UV_ENETUNREACH },
	{ FUV_READ_START, UV_EINVAL },
	{ FUV_WRITE, UV_EBADF },
	{ FUV_UDP_SEND, UV_EPERM },
	{ FUV_TCP_CONNECT, UV_EMFILE },
	{ FUV_READ_START, UV_ENOBUFS },
	{ FUV_WRITE, UV_ECONNRESET },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	fuv_reset();
	memset(udp_ids, 0, sizeof(udp_ids));
	memset(tcps, 0, sizeof(tcps));
	struct flowlog *log = flows_open();

	uint8_t c = data[0];
	static const char *const upstream_sets[4][3] = {
		{ "192.0.2.53" },
		{ "192.0.2.53", "2001:db8::53" },
		{ "2001:db8::53", "198.51.100.53", "192.0.2.53:5353" },
		{ "192.0.2.53", "198.51.100.53" },
	};
	static const size_t max_out[4] = { 0, 1, 2, 8 };
	static const uint32_t attempt[4] = { 0, 100, 1000, 50 },
			      timeout[4] = { 0, 300, 1000, 1000 };
	struct dns_config cfg = {
		.max_outstanding = max_out[(c >> 2) & 3],
		.max_tcp = c & 0x20 ? 1 : 0,
		.attempt_ms = attempt[c >> 6],
		.timeout_ms = timeout[c >> 6],
		.log = log,
		.peer_name = peer_of,
		.send = on_reply,
	};
	for (size_t i = 0; i < 3 && upstream_sets[c & 3][i]; i++) {
		if (dns_parse_upstream(upstream_sets[c & 3][i], &cfg.upstreams[i]) != 0)
			abort();
		cfg.nupstreams++;
	}
	if (c & 0x10) {
		inet_pton(AF_INET, "10.77.0.1", &cfg.local4);
		inet_pton(AF_INET6, "fd77::1", &cfg.local6);
	}
	struct dns_proxy *p = dns_proxy_new(&loop, NULL, &cfg);
	if (!p)
		abort();
	static struct tcpp t;
	bool have_tcp = false;
	static uint8_t ans[2 + 65535];

	struct reader r = { data + 1, size - 1 };
	uint8_t op;
	for (int n = 0; n < 1024 && get8(&r, &op); n++) {
		unsigned a = op >> 4;
		const uint8_t *chunk;
		size_t len;
		uint8_t b1, b2;
		const struct fuv_msg *m;
		if ((op & 15) >= 5 && (op & 15) <= 9 && !have_tcp) {
			if (!tcpp_init(&t, &loop, dns_proxy_tcp_accept, p))
				abort();
			t.on_data = on_tcp_data;
			have_tcp = true;
		}
		switch (op & 15) {
		case 0: {
			if (!get_chunk(&r, &chunk, &len))
				break;
			const struct sockaddr *cl = (const struct sockaddr *)&clients[a & 3];
			ids_add(&udp_ids[a & 3], chunk, len);
			/* A heap copy of exactly the datagram, so reads past it show. */
			uint8_t *copy = malloc(len ? len : 1);
			memcpy(copy, chunk, len);
			dns_proxy_udp(p, cl,
				      cl->sa_family == AF_INET ? (const struct sockaddr *)&tunnel4
							       : (const struct sockaddr *)&tunnel6,
				      copy, len);
			free(copy);
			break;
		}
		case 1:
		case 2: {
			bool built = (op & 15) == 2;
			if (built && (!get8(&r, &b1) || !get8(&r, &b2)))
				break;
			if (!get_chunk(&r, &chunk, &len))
				break;
			if (!(m = latest_sent(false, a & 3, NULL)))
				break;
			if (built) {
				len = build_answer(m->data, m->len, b1, b2, chunk, len, ans, 65535);
			} else {
				memcpy(ans, chunk, len);
				if ((a & 4) && len >= 2 && m->len >= 2)
					memcpy(ans, m->data, 2);
			}
			struct sockaddr_storage from = m->to;
			if (a & 8) {
				/* Another upstream's address, or the same with another port. */
				struct sockaddr_in *f4 = (struct sockaddr_in *)&from;
				if (from.ss_family == AF_INET &&
				    f4->sin_addr.s_addr != htonl(0xc6336435))
					f4->sin_addr.s_addr = htonl(0xc6336435); /* 198.51.100.53 */
				else
					((struct sockaddr_in *)&from)->sin_port ^= htons(1);
			}
			fuv_udp_deliver((uv_udp_t *)m->h, 0, ans, len,
					(const struct sockaddr *)&from);
			break;
		}
		case 3: {
			uv_udp_t *h = fuv_udp_reader(a >> 1);
			if (h)
				fuv_udp_deliver(h, a & 1 ? UV_ECONNREFUSED : 0, NULL, 0, NULL);
			break;
		}
		case 4:
			fuv_advance(advances[a]);
			if (have_tcp)
				tcpp_pump(&t);
			break;
		case 5:
			if (tcpp_connect(&t, a & 3, a & 4, DNS_PORT, a & 8, 0xffff))
				memset(&tcps[a & 3], 0, sizeof(tcps[a & 3]));
			break;
		case 6:
		case 7: {
			if (!get_chunk(&r, &chunk, &len))
				break;
			struct tcp_client *tc = &tcps[a & 3];
			uint8_t *msg = ans;
			size_t mlen = len;
			if ((op & 15) == 7) {
				ans[0] = (uint8_t)(len >> 8);
				ans[1] = (uint8_t)len;
				memcpy(ans + 2, chunk, len);
				mlen = len + 2;
			} else {
				memcpy(ans, chunk, len);
			}
			/* The IDs are noted before sending: the answer may come
			 * back while the bytes are being sent. */
			struct framer before = tc->sent;
			framer_feed(&tc->sent, msg, mlen, sent_msg, a & 3);
			size_t sent = tcpp_send(&t, a & 3, msg, mlen);
			if (sent < mlen) {
				/* What was not sent is not the client's: redo the framing
				 * with the bytes that went (IDs stay noted: harmless). */
				tc->sent = before;
				framer_feed(&tc->sent, msg, sent, sent_msg, a & 3);
			}
			break;
		}
		case 8:
			if (a & 4)
				tcpp_rst(&t, a & 3);
			else
				tcpp_fin(&t, a & 3);
			break;
		case 9:
			if (a & 8)
				tcpp_ticks(&t, 8);
			else
				tcpp_ack(&t, a & 3, 0xffff);
			break;
		case 10:
			fuv_connect_done(a & 7, a & 8 ? UV_ECONNREFUSED : 0);
			break;
		case 11:
			fuv_write_done(a & 7, a & 8 ? UV_ECONNRESET : 0);
			break;
		case 12:
		case 14: {
			bool bytes = (op & 15) == 12;
			if (bytes && !get_chunk(&r, &chunk, &len))
				break;
			uv_stream_t *s = fuv_stream_reader(a & 7);
			if (!s)
				break;
			if (bytes)
				fuv_tcp_deliver(s, 0, chunk, len);
			else
				fuv_tcp_deliver(s, a & 8 ? UV_ECONNRESET : UV_EOF, NULL, 0);
			break;
		}
		case 13: {
			uint8_t split;
			if (!get8(&r, &b1) || !get8(&r, &b2) || !get8(&r, &split) ||
			    !get_chunk(&r, &chunk, &len))
				break;
			uv_stream_t *s = fuv_stream_reader(a & 7);
			if (!s || !(m = latest_sent(true, 0, s)) || m->len < 2)
				break;
			size_t alen = build_answer(m->data + 2, m->len - 2, b1, b2, chunk, len,
						   ans + 2, 65535);
			ans[0] = (uint8_t)(alen >> 8);
			ans[1] = (uint8_t)alen;
			size_t first = split < alen + 2 ? split : alen + 2;
			fuv_tcp_deliver(s, 0, ans, first);
			if (first < alen + 2)
				fuv_tcp_deliver(s, 0, ans + first, alen + 2 - first);
			break;
		}
		case 15:
			fuv_fail(failures[a].op, failures[a].err);
			break;
		}
	}

	/* Every query ends by its deadline: with the clock moved on by the
	 * timeout, each query outstanding before must have timed out (no answer
	 * comes meanwhile), so timeouts grow while any is outstanding. Pipelined
	 * TCP queries start as earlier ones end: a bounded number of rounds. */
	uint32_t timeout_ms = cfg.timeout_ms ? cfg.timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
	struct dns_stats live;
	dns_proxy_get_stats(p, &live);
	for (int round = 0; round < 256 && live.outstanding > 0; round++) {
		uint64_t before = live.timeouts;
		fuv_advance(timeout_ms + 1);
		if (have_tcp)
			tcpp_pump(&t);
		dns_proxy_get_stats(p, &live);
		if (live.timeouts == before) {
			fprintf(stderr, "%llu queries outstanding past their deadline\n",
				(unsigned long long)live.outstanding);
			abort();
		}
	}

	if (debug) {
		struct dns_stats st;
		dns_proxy_get_stats(p, &st);
		fprintf(stderr,
			"udp %llu tcp %llu answered %llu local %llu tc %llu timeouts %llu retries "
			"%llu "
			"busy %llu malformed %llu formerr %llu ignored %llu stray %llu uperr %llu "
			"tcp accepted %llu refused %llu outstanding %llu records %llu\n",
			(unsigned long long)st.queries_udp, (unsigned long long)st.queries_tcp,
			(unsigned long long)st.answered, (unsigned long long)st.local_answers,
			(unsigned long long)st.truncated, (unsigned long long)st.timeouts,
			(unsigned long long)st.retries, (unsigned long long)st.busy,
			(unsigned long long)st.malformed, (unsigned long long)st.formerr,
			(unsigned long long)st.ignored, (unsigned long long)st.stray_answers,
			(unsigned long long)st.upstream_errors, (unsigned long long)st.tcp_accepted,
			(unsigned long long)st.tcp_refused, (unsigned long long)st.outstanding,
			(unsigned long long)st.records);
	}
	dns_proxy_free(p);
	if (have_tcp)
		tcpp_free(&t);
	fuv_pump(&loop);
	flows_close_check(log, debug);
	fuv_finish();
	return 0;
}
