/* libFuzzer target for the UDP relay: datagrams from peers to any address
 * (udp_relay_recv, as the netstack's ops.udp_recv calls it), through the
 * destination policy, QUIC refusal, our own services and the bounded flow
 * table, and what comes back on the flows' upstream sockets (datagrams,
 * ICMP errors as receive errors), fed through libuv's callbacks by
 * fuzz_uv.h: no socket sends or receives anything, and the clock (idle
 * expiry) is the input's.
 *
 * Input: byte 0 is the configuration (bits 0-1 max_flows 8/1/2/default,
 * bit 2 QUIC relayed, bit 3 host port 8080 allowed, bits 4-5 the idle
 * times, bit 6 no unreachable callback, bit 7 no local callback). Then
 * operations, each a byte: bits 0-2 the operation, bits 3-7 an argument a:
 *   0 datagram         a client byte (bits 0-1 which of four addresses, two
 *                      per family; bits 2-7 the source port), a destination
 *                      byte (below 32: one of the addresses listed in
 *                      LLVMFuzzerInitialize; else bit 6: IPv6, and the
 *                      address and port follow in the input), then the payload as a chunk (a length byte,
 *                      bit 7 set: 15 bits over 2 bytes)
 *   1 answer           the (a)-th upstream socket receives a chunk
 *   2 upstream error   the (a>>2)-th socket: ECONNREFUSED, ENETUNREACH,
 *                      ECONNRESET or "nothing more to read" (a&3)
 *   3 oversized        the (a)-th socket receives 65537 bytes (cut)
 *   4 time             the clock moves on (a&15 picks how far)
 *   5 failure          the next libuv call of one kind fails (a&7)
 *   6 reply refused    the next answer to a client is refused (ENOMEM)
 *   7 shutdown         the relay ends its flows; later datagrams drop
 *
 * Invariants beyond "no crash / no sanitizer report": nothing leaves for a
 * destination the policy refuses (loopback only as a rewritten host port,
 * port 443 only when QUIC is relayed); answers, ICMP errors and local
 * service datagrams go to a client about a destination it sent to; never
 * more flows than max_flows, and none once the idle time has passed in
 * silence; every record parses as a JSON object. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "fuzz_flows.h"
#include "fuzz_uv.h"

#include "common/addrpool.h"
#include "mitm/policy.h"
#include "mitm/udp.h"
#include "fuzz_reader.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static struct policy policy_base;
static bool debug; /* WGMITM_FUZZ_DEBUG set: what each input did, on stderr */

static struct sockaddr_storage clients[4];
static struct sockaddr_storage dests[32];

static void set_addr(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1)
			abort();
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		if (inet_pton(AF_INET, ip, &a->sin_addr) != 1)
			abort();
	}
}

static size_t sa_size(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static bool same(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/* ---- What the relay does toward clients -------------------------------- */

/* The (client, destination) pairs the input sent: anything toward a client
 * must be about one of them. */
#define MAX_PAIRS 1024
static struct {
	struct sockaddr_storage client, dest;
} pairs[MAX_PAIRS];
static size_t npairs;
static bool pairs_full;

static void pair_add(const struct sockaddr *client, const struct sockaddr *dest)
{
	for (size_t i = 0; i < npairs; i++)
		if (same((const struct sockaddr *)&pairs[i].client, client) &&
		    same((const struct sockaddr *)&pairs[i].dest, dest))
			return;
	if (npairs == MAX_PAIRS) {
		pairs_full = true;
		return;
	}
	memcpy(&pairs[npairs].client, client, sa_size(client));
	memcpy(&pairs[npairs].dest, dest, sa_size(dest));
	npairs++;
}

static void pair_check(const struct sockaddr *client, const struct sockaddr *dest, const char *what)
{
	if (pairs_full)
		return;
	for (size_t i = 0; i < npairs; i++)
		if (same((const struct sockaddr *)&pairs[i].client, client) &&
		    same((const struct sockaddr *)&pairs[i].dest, dest))
			return;
	fprintf(stderr, "%s for a client about a destination it never sent to\n", what);
	abort();
}

static int replies, unreach[2], locals;
static int reply_fail;

static int on_reply(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		    const uint8_t *data, size_t len)
{
	(void)ctx;
	(void)data;
	(void)len;
	pair_check(to, from, "an answer");
	replies++;
	int rc = reply_fail;
	reply_fail = 0;
	return rc;
}

static void on_unreachable(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
			   const uint8_t *data, size_t len, enum udp_relay_unreach why)
{
	(void)ctx;
	(void)data;
	(void)len;
	pair_check(client, dest, "an ICMP error");
	if (why != UDP_RELAY_UNREACH_PORT && why != UDP_RELAY_UNREACH_PROHIBITED)
		abort();
	unreach[why]++;
}

static const struct policy *cur_policy;

static void on_local(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
		     const uint8_t *data, size_t len)
{
	(void)ctx;
	(void)data;
	(void)len;
	pair_check(client, dest, "a local service datagram");
	if (policy_check(cur_policy, IPPROTO_UDP, dest, NULL) != POLICY_LOCAL_SERVICE) {
		fprintf(stderr, "a datagram to a local service the policy does not name\n");
		abort();
	}
	locals++;
}

static const char *peer_of(void *ctx, const struct sockaddr *client)
{
	(void)ctx;
	return client->sa_family == AF_INET ? "phone" : NULL;
}

/* The datagrams sent upstream since fuv_sent_total was `before`, checked
 * against the policy. */
static void check_sent(uint64_t before, bool quic_relayed, bool host_port)
{
	uint64_t fresh = fuv_sent_total - before;
	for (size_t i = fresh < fuv_nsent ? fuv_nsent - (size_t)fresh : 0; i < fuv_nsent; i++) {
		const struct sockaddr *to = (const struct sockaddr *)&fuv_sent(i)->to;
		uint16_t port = ntohs(to->sa_family == AF_INET
					      ? ((const struct sockaddr_in *)to)->sin_port
					      : ((const struct sockaddr_in6 *)to)->sin6_port);
		enum policy_verdict v = policy_check(cur_policy, IPPROTO_UDP, to, NULL);
		bool ok = v == POLICY_ALLOW;
		if (v == POLICY_REFUSE_LOOPBACK && host_port && port == 8080)
			ok = true; /* a host port, rewritten to loopback */
		if (port == UDP_RELAY_QUIC_PORT && !quic_relayed)
			ok = false;
		if (!ok) {
			fprintf(stderr, "a datagram left for a refused destination (%s, port %u)\n",
				policy_verdict_name(v), port);
			abort();
		}
	}
}

/* ---- Input --------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuv_init();
	flows_init();
	if (uv_loop_init(&loop) != 0)
		abort();
	struct addrpool pool;
	memset(&pool, 0, sizeof(pool));
	if (addrpool_parse4("10.77.0.0/24", &pool.net4, &pool.prefix4) != 0 ||
	    addrpool_parse6("fd77::/64", &pool.net6, &pool.prefix6) != 0)
		abort();
	policy_init(&policy_base, &pool);
	set_addr(&clients[0], "10.77.0.2", 0);
	set_addr(&clients[1], "10.77.0.3", 0);
	set_addr(&clients[2], "fd77::2", 0);
	set_addr(&clients[3], "fd77::3", 0);
	static const struct {
		const char *ip;
		uint16_t port;
	} d[32] = {
		{ "93.184.216.34", 53 },
		{ "93.184.216.34", 443 },
		{ "93.184.216.34", 123 },
		{ "10.77.0.1", 53 },
		{ "10.77.0.1", 8080 },
		{ "10.77.0.1", 9999 },
		{ "10.77.0.7", 5000 },
		{ "127.0.0.1", 53 },
		{ "0.0.0.0", 80 },
		{ "169.254.169.254", 80 },
		{ "224.0.0.251", 5353 },
		{ "255.255.255.255", 67 },
		{ "192.168.1.1", 1900 },
		{ "8.8.8.8", 53 },
		{ "1.1.1.1", 443 },
		{ "203.0.113.9", 0 },
		{ "2606:4700::1111", 53 },
		{ "2606:4700::1111", 443 },
		{ "fd77::1", 53 },
		{ "fd77::1", 8080 },
		{ "fd77::9", 7 },
		{ "::1", 53 },
		{ "::", 53 },
		{ "fe80::1", 53 },
		{ "ff02::fb", 5353 },
		{ "::ffff:93.184.216.34", 443 },
		{ "::ffff:127.0.0.1", 53 },
		{ "::ffff:10.77.0.1", 53 },
		{ "2001:db8::1", 4789 },
		{ "64:ff9b::5db8:d822", 443 },
		{ "::ffff:10.77.0.1", 8080 },
		{ "93.184.216.34", 65535 },
	};
	for (int i = 0; i < 32; i++)
		set_addr(&dests[i], d[i].ip, d[i].port);
	debug = getenv("WGMITM_FUZZ_DEBUG") != NULL;
	return 0;
}

static const uint64_t advances[16] = { 1,    10,   49,    50,    51,    149,   150,   300,
				       1000, 5000, 29999, 30000, 59999, 60000, 60001, 3600000 };

static const struct {
	enum fuv_op op;
	int err;
} failures[8] = {
	{ FUV_UDP_SEND, UV_EAGAIN },           { FUV_UDP_SEND, UV_ECONNREFUSED },
	{ FUV_UDP_SEND, UV_ENOBUFS },          { FUV_UDP_CONNECT, UV_ENETUNREACH },
	{ FUV_UDP_CONNECT, UV_EHOSTUNREACH },  { FUV_UDP_RECV_START, UV_ENOMEM },
	{ FUV_UDP_CONNECT, UV_EADDRNOTAVAIL }, { FUV_UDP_SEND, UV_EMSGSIZE },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	fuv_reset();
	npairs = 0;
	pairs_full = false;
	replies = locals = unreach[0] = unreach[1] = 0;
	reply_fail = 0;
	struct flowlog *log = flows_open();

	uint8_t c = data[0];
	struct policy pol = policy_base;
	bool host_port = c & 8, quic = c & 4;
	if (host_port && policy_add_host_port(&pol, 8080) != 0)
		abort();
	cur_policy = &pol;
	static const size_t max_flows[4] = { 8, 1, 2, 0 };
	static const uint32_t idle[4] = { 0, 300, 1000, 50 }, dns_idle[4] = { 0, 150, 1000, 50 };
	struct udp_relay_config cfg = {
		.policy = &pol,
		.log = log,
		.max_flows = max_flows[c & 3],
		.idle_ms = idle[(c >> 4) & 3],
		.dns_idle_ms = dns_idle[(c >> 4) & 3],
		.quic = quic ? UDP_RELAY_QUIC_PASSTHROUGH : UDP_RELAY_QUIC_REFUSE,
		.local = c & 0x80 ? NULL : on_local,
		.peer_name = peer_of,
		.unreachable = c & 0x40 ? NULL : on_unreachable,
		.send = on_reply,
	};
	size_t limit = cfg.max_flows ? cfg.max_flows : UDP_RELAY_DEFAULT_MAX_FLOWS;
	struct udp_relay *relay = udp_relay_new(&loop, NULL, &cfg);
	if (!relay)
		abort();
	static uint8_t big[65537];
	bool shut = false;

	struct reader r = { data + 1, size - 1 };
	uint8_t op;
	for (int n = 0; n < 2048 && get8(&r, &op); n++) {
		unsigned a = op >> 3;
		const uint8_t *chunk;
		size_t len;
		uint64_t sent_before = fuv_sent_total;
		switch (op & 7) {
		case 0: {
			uint8_t cb, db;
			if (!get8(&r, &cb) || !get8(&r, &db))
				break;
			struct sockaddr_storage client = clients[cb & 3], dest;
			uint16_t cport = (uint16_t)(40000 + (cb >> 2));
			if (client.ss_family == AF_INET)
				((struct sockaddr_in *)&client)->sin_port = htons(cport);
			else
				((struct sockaddr_in6 *)&client)->sin6_port = htons(cport);
			if (db < 32) {
				dest = dests[db];
			} else {
				uint8_t addr[16], port[2];
				bool v6 = db & 0x40;
				memset(&dest, 0, sizeof(dest));
				if (!get_bytes(&r, addr, v6 ? 16 : 4) || !get_bytes(&r, port, 2))
					break;
				if (v6) {
					struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dest;
					d6->sin6_family = AF_INET6;
					memcpy(&d6->sin6_addr, addr, 16);
					memcpy(&d6->sin6_port, port, 2);
				} else {
					struct sockaddr_in *d4 = (struct sockaddr_in *)&dest;
					d4->sin_family = AF_INET;
					memcpy(&d4->sin_addr, addr, 4);
					memcpy(&d4->sin_port, port, 2);
				}
			}
			if (!get_chunk(&r, &chunk, &len))
				break;
			pair_add((const struct sockaddr *)&client, (const struct sockaddr *)&dest);
			/* A heap copy of exactly the datagram, so reads past it show. */
			uint8_t *copy = malloc(len ? len : 1);
			memcpy(copy, chunk, len);
			udp_relay_recv(relay, (const struct sockaddr *)&client,
				       (const struct sockaddr *)&dest, copy, len);
			free(copy);
			break;
		}
		case 1: {
			if (!get_chunk(&r, &chunk, &len))
				break;
			uv_udp_t *h = fuv_udp_reader(a);
			if (h)
				fuv_udp_deliver(h, 0, chunk, len, NULL);
			break;
		}
		case 2: {
			static const int errs[3] = { UV_ECONNREFUSED, UV_ENETUNREACH,
						     UV_ECONNRESET };
			uv_udp_t *h = fuv_udp_reader(a >> 2);
			if (h)
				fuv_udp_deliver(h, (a & 3) < 3 ? errs[a & 3] : 0, NULL, 0, NULL);
			break;
		}
		case 3: {
			uv_udp_t *h = fuv_udp_reader(a);
			if (h)
				fuv_udp_deliver(h, 0, big, sizeof(big), NULL);
			break;
		}
		case 4:
			fuv_advance(advances[a & 15]);
			break;
		case 5:
			fuv_fail(failures[a & 7].op, failures[a & 7].err);
			break;
		case 6:
			reply_fail = -ENOMEM;
			break;
		case 7:
			udp_relay_shutdown(relay);
			shut = true;
			break;
		}
		check_sent(sent_before, quic, host_port);
		struct udp_relay_stats st;
		udp_relay_get_stats(relay, &st);
		if (st.flows_active > limit || (shut && st.flows_active != 0)) {
			fprintf(stderr, "%llu flows active, max_flows %zu%s\n",
				(unsigned long long)st.flows_active, limit,
				shut ? ", after shutdown" : "");
			abort();
		}
	}

	/* With the clock moved on by the longer idle time and nobody sending,
	 * every flow has ended. */
	uint64_t idle_max = cfg.idle_ms ? cfg.idle_ms : UDP_RELAY_DEFAULT_IDLE_MS;
	uint64_t dns_max = cfg.dns_idle_ms ? cfg.dns_idle_ms : UDP_RELAY_DEFAULT_DNS_IDLE_MS;
	fuv_advance((idle_max > dns_max ? idle_max : dns_max) + 1);
	struct udp_relay_stats end;
	udp_relay_get_stats(relay, &end);
	if (end.flows_active != 0) {
		fprintf(stderr, "%llu flows active after the idle time\n",
			(unsigned long long)end.flows_active);
		abort();
	}

	if (debug) {
		struct udp_relay_stats st;
		udp_relay_get_stats(relay, &st);
		fprintf(stderr,
			"active %llu opened %llu refused %llu idle %llu upstream_refused %llu "
			"error %llu "
			"table_full %llu policy_drop %llu quic %llu local %llu up %llu/%llu down "
			"%llu/%llu "
			"send_drop %llu reply_drop %llu unreach %llu records %llu\n",
			(unsigned long long)st.flows_active, (unsigned long long)st.flows_opened,
			(unsigned long long)st.flows_refused, (unsigned long long)st.flows_idle,
			(unsigned long long)st.flows_upstream_refused,
			(unsigned long long)st.flows_error, (unsigned long long)st.table_full,
			(unsigned long long)st.policy_drop, (unsigned long long)st.quic_refused,
			(unsigned long long)st.local, (unsigned long long)st.datagrams_up,
			(unsigned long long)st.bytes_up, (unsigned long long)st.datagrams_down,
			(unsigned long long)st.bytes_down, (unsigned long long)st.send_drop,
			(unsigned long long)st.reply_drop, (unsigned long long)st.unreachable_sent,
			(unsigned long long)st.records);
	}
	udp_relay_free(relay);
	fuv_pump(&loop);
	flows_close_check(log, debug);
	fuv_finish();
	return 0;
}
