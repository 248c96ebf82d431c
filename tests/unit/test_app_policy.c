/* Destination policy: a table of destinations and the verdict each gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mitm/policy.h"

#define TCP IPPROTO_TCP
#define UDP IPPROTO_UDP

/* Pools 10.66.77.0/24 and fd00:66:77::/64: we are 10.66.77.1 and
 * fd00:66:77::1; port 8080 is opted in with --allow-host-port. */
static void make_policy(struct policy *p)
{
	struct addrpool pool;
	assert_int_equal(addrpool_parse4("10.66.77.0/24", &pool.net4, &pool.prefix4), 0);
	assert_int_equal(addrpool_parse6("fd00:66:77::/64", &pool.net6, &pool.prefix6), 0);
	policy_init(p, &pool);
	assert_int_equal(policy_add_host_port(p, 8080), 0);
}

static void make_addr(const char *ip, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	} else {
		assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
	}
}

/* "ip port" of an address, to compare rewritten destinations. */
static void addr_str(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		port = ntohs(sin->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		port = ntohs(sin6->sin6_port);
	}
	snprintf(out, len, "%s %u", ip, port);
}

struct row {
	int proto;
	const char *ip;
	uint16_t port;
	enum policy_verdict want;
	const char *rewritten; /* "ip port", NULL: same as given */
};

static const struct row rows[] = {
	/* The internet. */
	{ TCP, "93.184.216.34", 443, POLICY_ALLOW, NULL },
	{ UDP, "8.8.8.8", 53, POLICY_ALLOW, NULL },
	{ TCP, "10.0.0.1", 80, POLICY_ALLOW, NULL }, /* private but not ours */
	{ TCP, "192.168.1.1", 80, POLICY_ALLOW, NULL },
	{ TCP, "1.0.0.1", 80, POLICY_ALLOW, NULL },
	{ TCP, "223.255.255.255", 80, POLICY_ALLOW, NULL }, /* just below multicast */
	{ TCP, "169.253.255.255", 80, POLICY_ALLOW, NULL }, /* just below link-local */
	{ TCP, "169.255.0.0", 80, POLICY_ALLOW, NULL },     /* just above */
	{ TCP, "128.0.0.1", 80, POLICY_ALLOW, NULL },       /* just above loopback */
	{ TCP, "2606:4700::1111", 443, POLICY_ALLOW, NULL },
	{ UDP, "2001:4860:4860::8888", 53, POLICY_ALLOW, NULL },
	{ TCP, "fe00::1", 80, POLICY_ALLOW, NULL },       /* just below fe80::/10 */
	{ TCP, "fec0::1", 80, POLICY_ALLOW, NULL },       /* just above */
	{ TCP, "fd00:66:78::1", 80, POLICY_ALLOW, NULL }, /* next /64 */
	{ TCP, "::2", 80, POLICY_ALLOW, NULL },
	/* Loopback. */
	{ TCP, "127.0.0.1", 22, POLICY_REFUSE_LOOPBACK, NULL },
	{ TCP, "127.255.255.254", 22, POLICY_REFUSE_LOOPBACK, NULL },
	{ UDP, "127.0.0.53", 53, POLICY_REFUSE_LOOPBACK, NULL },
	{ TCP, "::1", 22, POLICY_REFUSE_LOOPBACK, NULL },
	/* Unspecified and "this network". */
	{ TCP, "0.0.0.0", 80, POLICY_REFUSE_UNSPECIFIED, NULL },
	{ TCP, "0.1.2.3", 80, POLICY_REFUSE_UNSPECIFIED, NULL },
	{ UDP, "::", 53, POLICY_REFUSE_UNSPECIFIED, NULL },
	/* Link-local, cloud metadata. */
	{ TCP, "169.254.169.254", 80, POLICY_REFUSE_LINK_LOCAL, NULL },
	{ TCP, "169.254.0.0", 80, POLICY_REFUSE_LINK_LOCAL, NULL },
	{ TCP, "fe80::1", 80, POLICY_REFUSE_LINK_LOCAL, NULL },
	{ TCP, "febf:ffff::1", 80, POLICY_REFUSE_LINK_LOCAL, NULL },
	/* Multicast and broadcast. */
	{ UDP, "224.0.0.251", 5353, POLICY_REFUSE_MULTICAST, NULL },
	{ UDP, "239.255.255.250", 1900, POLICY_REFUSE_MULTICAST, NULL },
	{ UDP, "ff02::fb", 5353, POLICY_REFUSE_MULTICAST, NULL },
	{ UDP, "ff05::1:3", 547, POLICY_REFUSE_MULTICAST, NULL },
	{ UDP, "255.255.255.255", 67, POLICY_REFUSE_BROADCAST, NULL },
	/* Other peers: inside the pools, not our address. */
	{ TCP, "10.66.77.2", 80, POLICY_REFUSE_PEER, NULL },
	{ TCP, "10.66.77.255", 80, POLICY_REFUSE_PEER, NULL },
	{ TCP, "10.66.77.0", 80, POLICY_REFUSE_PEER, NULL },
	{ UDP, "fd00:66:77::2", 53, POLICY_REFUSE_PEER, NULL },
	{ TCP, "fd00:66:77::ffff:1", 80, POLICY_REFUSE_PEER, NULL },
	/* Our own addresses: DNS is ours, 8080 goes to the host, the rest is refused. */
	{ UDP, "10.66.77.1", 53, POLICY_LOCAL_SERVICE, NULL },
	{ TCP, "10.66.77.1", 53, POLICY_LOCAL_SERVICE, NULL },
	{ UDP, "fd00:66:77::1", 53, POLICY_LOCAL_SERVICE, NULL },
	{ TCP, "fd00:66:77::1", 53, POLICY_LOCAL_SERVICE, NULL },
	{ TCP, "10.66.77.1", 8080, POLICY_HOST_PORT, "127.0.0.1 8080" },
	{ UDP, "10.66.77.1", 8080, POLICY_HOST_PORT, "127.0.0.1 8080" },
	{ TCP, "fd00:66:77::1", 8080, POLICY_HOST_PORT, "::1 8080" },
	{ TCP, "10.66.77.1", 22, POLICY_REFUSE_OWN_ADDRESS, NULL },
	{ TCP, "10.66.77.1", 8081, POLICY_REFUSE_OWN_ADDRESS, NULL },
	{ UDP, "fd00:66:77::1", 123, POLICY_REFUSE_OWN_ADDRESS, NULL },
	/* IPv4-mapped IPv6: judged (and dialled) as the IPv4 address. */
	{ TCP, "::ffff:127.0.0.1", 22, POLICY_REFUSE_LOOPBACK, "127.0.0.1 22" },
	{ TCP, "::ffff:169.254.169.254", 80, POLICY_REFUSE_LINK_LOCAL, "169.254.169.254 80" },
	{ TCP, "::ffff:0.0.0.0", 80, POLICY_REFUSE_UNSPECIFIED, "0.0.0.0 80" },
	{ UDP, "::ffff:224.0.0.1", 9, POLICY_REFUSE_MULTICAST, "224.0.0.1 9" },
	{ UDP, "::ffff:255.255.255.255", 9, POLICY_REFUSE_BROADCAST, "255.255.255.255 9" },
	{ TCP, "::ffff:10.66.77.3", 80, POLICY_REFUSE_PEER, "10.66.77.3 80" },
	{ UDP, "::ffff:10.66.77.1", 53, POLICY_LOCAL_SERVICE, "10.66.77.1 53" },
	{ TCP, "::ffff:10.66.77.1", 8080, POLICY_HOST_PORT, "127.0.0.1 8080" },
	{ TCP, "::ffff:10.66.77.1", 25, POLICY_REFUSE_OWN_ADDRESS, "10.66.77.1 25" },
	{ TCP, "::ffff:93.184.216.34", 443, POLICY_ALLOW, "93.184.216.34 443" },
	/* Not v4-mapped: IPv4-compatible and NAT64 forms are plain IPv6. */
	{ TCP, "::127.0.0.1", 22, POLICY_ALLOW, NULL },
	{ TCP, "64:ff9b::7f00:1", 22, POLICY_ALLOW, NULL },
	/* Neither TCP nor UDP. */
	{ IPPROTO_ICMP, "93.184.216.34", 0, POLICY_REFUSE_FAMILY, NULL },
};

static void test_table(void **ctx)
{
	(void)ctx;
	struct policy p;
	make_policy(&p);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct sockaddr_storage dest, out;
		make_addr(r->ip, r->port, &dest);
		enum policy_verdict v = policy_check(&p, r->proto, (struct sockaddr *)&dest, &out);
		if (v != r->want)
			fail_msg("%s %s:%u: got %s, want %s", r->proto == TCP ? "tcp" : "udp",
				 r->ip, r->port, policy_verdict_name(v),
				 policy_verdict_name(r->want));
		char got[80], want[80];
		addr_str(&out, got, sizeof(got));
		if (r->rewritten)
			snprintf(want, sizeof(want), "%s", r->rewritten);
		else
			addr_str(&dest, want, sizeof(want));
		if (strcmp(got, want) != 0)
			fail_msg("%s:%u: rewritten to %s, want %s", r->ip, r->port, got, want);
		/* The same answer without a rewrite buffer. */
		assert_int_equal(policy_check(&p, r->proto, (struct sockaddr *)&dest, NULL), v);
		assert_int_equal(policy_refused(v), v >= POLICY_REFUSE_LOOPBACK);
	}
}

static void test_scope_cleared_on_host_port(void **ctx)
{
	(void)ctx;
	struct policy p;
	make_policy(&p);
	struct sockaddr_storage dest, out;
	make_addr("fd00:66:77::1", 8080, &dest);
	((struct sockaddr_in6 *)&dest)->sin6_scope_id = 7;
	((struct sockaddr_in6 *)&dest)->sin6_flowinfo = htonl(0x12345);
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, &out), POLICY_HOST_PORT);
	assert_int_equal(((struct sockaddr_in6 *)&out)->sin6_scope_id, 0);
}

static void test_allow_loopback_for_tests(void **ctx)
{
	(void)ctx;
	struct policy p;
	make_policy(&p);
	p.allow_loopback = true;
	struct sockaddr_storage dest;
	make_addr("127.0.0.1", 5000, &dest);
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, NULL), POLICY_ALLOW);
	make_addr("::1", 5000, &dest);
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, NULL), POLICY_ALLOW);
	/* The rest of the defaults still hold. */
	make_addr("169.254.169.254", 80, &dest);
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, NULL),
			 POLICY_REFUSE_LINK_LOCAL);
}

static void test_ports(void **ctx)
{
	(void)ctx;
	struct policy p;
	make_policy(&p);
	assert_int_equal(policy_add_host_port(&p, 0), -EINVAL);
	assert_int_equal(policy_add_host_port(&p, 8080), 0); /* idempotent */
	assert_int_equal(p.nhost_ports, 1);
	for (uint16_t port = 9000; p.nhost_ports < POLICY_MAX_PORTS; port++)
		assert_int_equal(policy_add_host_port(&p, port), 0);
	assert_int_equal(policy_add_host_port(&p, 1), -ENOSPC);
	assert_int_equal(policy_add_local_port(&p, IPPROTO_ICMP, 80), -EINVAL);

	/* A later local service (the CA page on :80) takes its port. */
	struct sockaddr_storage dest;
	make_addr("10.66.77.1", 80, &dest);
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, NULL),
			 POLICY_REFUSE_OWN_ADDRESS);
	assert_int_equal(policy_add_local_port(&p, TCP, 80), 0);
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, NULL),
			 POLICY_LOCAL_SERVICE);
	assert_int_equal(policy_check(&p, UDP, (struct sockaddr *)&dest, NULL),
			 POLICY_REFUSE_OWN_ADDRESS);
	/* Our DNS stays ours even when port 53 is also a host port. */
	assert_int_equal(policy_add_local_port(&p, UDP, 53), 0);
	make_addr("10.66.77.1", 53, &dest);
	assert_int_equal(policy_check(&p, UDP, (struct sockaddr *)&dest, NULL),
			 POLICY_LOCAL_SERVICE);
}

static void test_names(void **ctx)
{
	(void)ctx;
	for (int v = 0; v < POLICY_VERDICT_COUNT; v++) {
		const char *n = policy_verdict_name((enum policy_verdict)v);
		assert_non_null(n);
		assert_string_not_equal(n, "unknown");
		for (int w = 0; w < v; w++)
			assert_string_not_equal(n, policy_verdict_name((enum policy_verdict)w));
	}
	assert_string_equal(policy_verdict_name(POLICY_REFUSE_LOOPBACK), "loopback");
	assert_string_equal(policy_verdict_name(POLICY_VERDICT_COUNT), "unknown");
}

static void test_bad_family(void **ctx)
{
	(void)ctx;
	struct policy p;
	make_policy(&p);
	struct sockaddr_storage dest = { .ss_family = AF_UNIX };
	assert_int_equal(policy_check(&p, TCP, (struct sockaddr *)&dest, NULL),
			 POLICY_REFUSE_FAMILY);
	assert_int_equal(policy_check(&p, TCP, NULL, NULL), POLICY_REFUSE_FAMILY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_scope_cleared_on_host_port),
		cmocka_unit_test(test_allow_loopback_for_tests),
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_bad_family),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
