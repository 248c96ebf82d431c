/* Endpoint: HOST[:PORT] parsing and formatting, ranking of injected
 * interface lists, default routes read from /proc text. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>

#include "qr/endpoint.h"

struct parse_case {
	const char *text;
	uint16_t default_port;
	int rc;
	int family;
	const char *host;
	uint16_t port;
	const char *formatted; /* or an error substring when rc != 0 */
};

static const struct parse_case parse_cases[] = {
	{ "192.168.1.23", 51820, 0, AF_INET, "192.168.1.23", 51820, "192.168.1.23:51820" },
	{ "192.168.1.23:443", 51820, 0, AF_INET, "192.168.1.23", 443, "192.168.1.23:443" },
	{ "[fd00::1]", 51820, 0, AF_INET6, "fd00::1", 51820, "[fd00::1]:51820" },
	{ "[FD00:0:0::1]:1", 51820, 0, AF_INET6, "fd00::1", 1, "[fd00::1]:1" },
	{ "[2001:db8::1]:65535", 0, 0, AF_INET6, "2001:db8::1", 65535, "[2001:db8::1]:65535" },
	{ "[::ffff:192.0.2.1]:5", 0, 0, AF_INET6, "::ffff:192.0.2.1", 5, "[::ffff:192.0.2.1]:5" },
	{ "Capture.Example.LAN", 7, 0, AF_UNSPEC, "capture.example.lan", 7,
	  "capture.example.lan:7" },
	{ "host-1.lan.:9", 0, 0, AF_UNSPEC, "host-1.lan.", 9, "host-1.lan.:9" },
	{ "localhost", 1, 0, AF_UNSPEC, "localhost", 1, "localhost:1" },
	{ "", 1, -EINVAL, 0, NULL, 0, "empty endpoint" },
	{ "192.168.1.23", 0, -EINVAL, 0, NULL, 0, "missing ':PORT'" },
	{ "192.168.1.23:", 1, -EINVAL, 0, NULL, 0, "bad port ''" },
	{ "192.168.1.23:0", 1, -EINVAL, 0, NULL, 0, "bad port '0'" },
	{ "192.168.1.23:65536", 1, -EINVAL, 0, NULL, 0, "bad port '65536'" },
	{ "192.168.1.23:+80", 1, -EINVAL, 0, NULL, 0, "bad port '+80'" },
	{ "192.168.1.23:80 ", 1, -EINVAL, 0, NULL, 0, "bad port" },
	{ "fd00::1", 1, -EINVAL, 0, NULL, 0,
	  "write an IPv6 address in brackets, e.g. [fd00::1]:51820" },
	{ "fd00::1:51820", 1, -EINVAL, 0, NULL, 0, "in brackets" },
	{ "[fd00::1", 1, -EINVAL, 0, NULL, 0, "missing ']'" },
	{ "[fd00::1]x", 1, -EINVAL, 0, NULL, 0, "expected ':PORT' after ']'" },
	{ "[]:1", 1, -EINVAL, 0, NULL, 0, "bad IPv6 address" },
	{ "[192.0.2.1]:1", 1, -EINVAL, 0, NULL, 0, "bad IPv6 address '192.0.2.1'" },
	{ "[fe80::1%eth0]:1", 1, -EINVAL, 0, NULL, 0, "bad IPv6 address" },
	{ ":51820", 1, -EINVAL, 0, NULL, 0, "missing host" },
	{ "300.1.1.1", 1, -EINVAL, 0, NULL, 0, "neither an IPv4 address nor a host name" },
	{ "1.2.3", 1, -EINVAL, 0, NULL, 0, "neither" },
	{ "-bad.lan", 1, -EINVAL, 0, NULL, 0, "neither" },
	{ "bad-.lan", 1, -EINVAL, 0, NULL, 0, "neither" },
	{ "a..b", 1, -EINVAL, 0, NULL, 0, "neither" },
	{ "under_score.lan", 1, -EINVAL, 0, NULL, 0, "neither" },
	{ "sp ace", 1, -EINVAL, 0, NULL, 0, "neither" },
};

static void test_parse_and_format(void **state)
{
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *pc = &parse_cases[i];
		struct qr_endpoint ep;
		char err[256] = "", text[QR_ENDPOINT_TEXT_MAX];
		int rc = qr_endpoint_parse(&ep, pc->text, pc->default_port, err, sizeof(err));

		if (rc != pc->rc)
			fail_msg("case %zu '%s': rc %d, want %d (%s)", i, pc->text, rc, pc->rc,
				 err);
		if (rc != 0) {
			if (strstr(err, pc->formatted) == NULL)
				fail_msg("case %zu '%s': got \"%s\", want \"%s\"", i, pc->text, err,
					 pc->formatted);
			continue;
		}
		assert_int_equal(ep.family, pc->family);
		assert_string_equal(ep.host, pc->host);
		assert_int_equal(ep.port, pc->port);
		assert_int_equal(qr_endpoint_format(&ep, text, sizeof(text)),
				 (int)strlen(pc->formatted));
		assert_string_equal(text, pc->formatted);
		/* What we format parses back to the same endpoint. */
		struct qr_endpoint back;
		assert_int_equal(qr_endpoint_parse(&back, text, 0, NULL, 0), 0);
		assert_string_equal(back.host, ep.host);
		assert_int_equal(back.port, ep.port);
	}
}

static void test_hostname_limits(void **state)
{
	struct qr_endpoint ep;
	char name[300], text[QR_ENDPOINT_TEXT_MAX], small[8];

	/* A 63-character label is fine, 64 is not. */
	memset(name, 'a', 63);
	strcpy(name + 63, ".lan");
	assert_int_equal(qr_endpoint_parse(&ep, name, 1, NULL, 0), 0);
	memset(name, 'a', 64);
	strcpy(name + 64, ".lan");
	assert_int_equal(qr_endpoint_parse(&ep, name, 1, NULL, 0), -EINVAL);
	/* 253 characters in all is the longest name. */
	for (int i = 0; i < 253; i++)
		name[i] = (i % 2) ? '.' : 'a';
	name[252] = 'b';
	name[253] = '\0';
	assert_int_equal(qr_endpoint_parse(&ep, name, 65535, NULL, 0), 0);
	assert_int_equal(qr_endpoint_format(&ep, text, sizeof(text)), 253 + 6);
	name[253] = 'c';
	name[254] = '\0';
	assert_int_equal(qr_endpoint_parse(&ep, name, 1, NULL, 0), -EINVAL);
	/* Format reports a short buffer. */
	assert_int_equal(qr_endpoint_parse(&ep, "[2001:db8::1]", 51820, NULL, 0), 0);
	assert_int_equal(qr_endpoint_format(&ep, small, sizeof(small)), -ENOSPC);
}

static struct qr_endpoint_iface v4(const char *name, const char *addr, bool def)
{
	struct qr_endpoint_iface i = { .flags = IFF_UP | IFF_RUNNING,
				       .family = AF_INET,
				       .default_route = def };
	strcpy(i.name, name);
	assert_int_equal(inet_pton(AF_INET, addr, &i.addr.v4), 1);
	return i;
}

static struct qr_endpoint_iface v6(const char *name, const char *addr, bool def)
{
	struct qr_endpoint_iface i = { .flags = IFF_UP | IFF_RUNNING,
				       .family = AF_INET6,
				       .default_route = def };
	strcpy(i.name, name);
	assert_int_equal(inet_pton(AF_INET6, addr, &i.addr.v6), 1);
	return i;
}

static void test_rank(void **state)
{
	struct qr_endpoint_iface ifs[32];
	struct qr_endpoint_candidate out[32];
	size_t n = 0;

	/* A laptop: Docker, a VPN, Wi-Fi with the default route, a wired
	 * link without it, and the addresses nobody on the LAN can use. */
	ifs[n] = v4("lo", "127.0.0.1", false);
	ifs[n++].flags |= IFF_LOOPBACK;
	ifs[n] = v6("lo", "::1", false);
	ifs[n++].flags |= IFF_LOOPBACK;
	ifs[n++] = v4("docker0", "172.17.0.1", false);
	ifs[n++] = v4("wg0", "10.8.0.2", false);
	ifs[n++] = v6("eth0", "2001:db8:1::10", false);
	ifs[n++] = v4("eth0", "192.168.50.10", false);
	ifs[n++] = v6("wlan0", "fe80::1234", true);
	ifs[n++] = v6("wlan0", "fd12:3456::7", true);
	ifs[n++] = v6("wlan0", "2001:db8:2::7", true);
	ifs[n++] = v4("wlan0", "192.168.1.23", true);
	ifs[n++] = v4("wlan0", "169.254.3.4", true);
	ifs[n++] = v6("eth1", "fd99::1", false);
	ifs[n++] = v4("eth2", "203.0.113.9", false);
	ifs[n++] = v4("eth3", "100.64.1.2", false);
	ifs[n] = v4("eth4", "10.9.9.9", false);
	ifs[n++].flags = IFF_UP; /* no carrier */
	ifs[n] = v4("eth5", "10.9.9.10", false);
	ifs[n++].flags = 0; /* down */
	ifs[n++] = v4("eth6", "0.0.0.0", false);
	ifs[n++] = v4("eth6", "224.0.0.5", false);
	ifs[n++] = v6("eth6", "::", false);
	ifs[n++] = v6("eth6", "ff02::1", false);
	ifs[n++] = v6("eth6", "::ffff:192.168.1.1", false);
	ifs[n++] = v4("wlan0", "192.168.1.23", true); /* listed twice */

	size_t got = qr_endpoint_rank(ifs, n, 51820, out, 32);
	static const struct {
		const char *text, *ifname;
		enum qr_endpoint_tier tier;
	} want[] = {
		{ "192.168.1.23:51820", "wlan0", QR_ENDPOINT_DEFAULT_V4 },
		{ "[fd12:3456::7]:51820", "wlan0", QR_ENDPOINT_DEFAULT_V6 },
		{ "[2001:db8:2::7]:51820", "wlan0", QR_ENDPOINT_DEFAULT_V6 },
		{ "192.168.50.10:51820", "eth0", QR_ENDPOINT_PRIVATE_V4 },
		{ "100.64.1.2:51820", "eth3", QR_ENDPOINT_PRIVATE_V4 },
		{ "203.0.113.9:51820", "eth2", QR_ENDPOINT_PUBLIC_V4 },
		{ "[2001:db8:1::10]:51820", "eth0", QR_ENDPOINT_GLOBAL_V6 },
		{ "[fd99::1]:51820", "eth1", QR_ENDPOINT_ULA_V6 },
		{ "172.17.0.1:51820", "docker0", QR_ENDPOINT_VIRTUAL },
		{ "10.8.0.2:51820", "wg0", QR_ENDPOINT_VIRTUAL },
	};
	assert_int_equal(got, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < got; i++) {
		if (strcmp(out[i].text, want[i].text) != 0)
			fail_msg("#%zu: got %s, want %s", i, out[i].text, want[i].text);
		assert_string_equal(out[i].ifname, want[i].ifname);
		assert_int_equal(out[i].tier, want[i].tier);
		assert_int_equal(out[i].ep.port, 51820);
	}

	/* cap bounds the output and keeps the best ones */
	assert_int_equal(qr_endpoint_rank(ifs, n, 1, out, 2), 2);
	assert_string_equal(out[0].text, "192.168.1.23:1");
	assert_string_equal(out[1].text, "[fd12:3456::7]:1");
	/* nothing usable */
	assert_int_equal(qr_endpoint_rank(ifs, 2, 1, out, 32), 0);
}

static void test_rank_no_default_route(void **state)
{
	struct qr_endpoint_iface ifs[] = {
		v6("enp3s0", "2a01:4f8::5", false),
		v4("enp3s0", "203.0.113.5", false),
		v4("virbr0", "192.168.122.1", false),
		v4("enp4s0", "10.0.0.5", false),
	};
	struct qr_endpoint_candidate out[8];

	assert_int_equal(qr_endpoint_rank(ifs, 4, 51820, out, 8), 4);
	assert_string_equal(out[0].text, "10.0.0.5:51820");
	assert_string_equal(out[1].text, "203.0.113.5:51820");
	assert_string_equal(out[2].text, "[2a01:4f8::5]:51820");
	assert_string_equal(out[3].text, "192.168.122.1:51820");
}

static const char proc_route[] =
	"Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
	"wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
	"docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
	"eth0\t00000000\t0132A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
	"eth9\t00000000\t00000000\t0200\t0\t0\t0\t00000000\t0\t0\t0\n"
	"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t700\t00000000\t0\t0\t0";

static const char proc_ipv6_route[] =
	"fd123456000000000000000000000000 40 00000000000000000000000000000000 00 "
	"00000000000000000000000000000000 00000100 00000001 00000000 00000001    wlan0\n"
	"00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
	"fe800000000000000000000000000001 00000400 00000001 00000000 00450003    wlan0\n"
	"00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
	"00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
	"00000000000000000000000000000001 80 00000000000000000000000000000000 00 "
	"00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n";

static void test_default_routes(void **state)
{
	char names[4][IF_NAMESIZE];

	assert_int_equal(qr_endpoint_default_ifaces4(proc_route, names, 4), 2);
	assert_string_equal(names[0], "wlan0");
	assert_string_equal(names[1], "eth0");
	assert_int_equal(qr_endpoint_default_ifaces4(proc_route, names, 1), 1);
	assert_int_equal(qr_endpoint_default_ifaces6(proc_ipv6_route, names, 4), 1);
	assert_string_equal(names[0], "wlan0");
	assert_int_equal(qr_endpoint_default_ifaces4("", names, 4), 0);
	assert_int_equal(qr_endpoint_default_ifaces6("garbage\n\n", names, 4), 0);
}

/* The real machine: whatever it has, every candidate is well formed and
 * the list is ordered by tier. */
static void test_detect_here(void **state)
{
	struct qr_endpoint_candidate out[16];
	int n = qr_endpoint_detect(51820, out, 16);

	assert_true(n >= 0);
	print_message("detected %d candidate(s)%s%s\n", n, n > 0 ? ", best " : "",
		      n > 0 ? out[0].text : "");
	for (int i = 0; i < n; i++) {
		struct qr_endpoint back;
		assert_int_equal(qr_endpoint_parse(&back, out[i].text, 0, NULL, 0), 0);
		assert_int_equal(back.port, 51820);
		assert_true(out[i].ifname[0] != '\0');
		assert_string_not_equal(out[i].ifname, "lo");
		if (i > 0)
			assert_true(out[i - 1].tier <= out[i].tier);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_and_format),
		cmocka_unit_test(test_hostname_limits),
		cmocka_unit_test(test_rank),
		cmocka_unit_test(test_rank_no_default_route),
		cmocka_unit_test(test_default_routes),
		cmocka_unit_test(test_detect_here),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
