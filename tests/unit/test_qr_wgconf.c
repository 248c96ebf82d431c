/* Client config: golden rendering, round trips, every parse error with its
 * file:line, split tunnels, application lists, stripping for `wg setconf`. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qr/wgconf.h"

/* Keys are the bytes 0x00..0x1f, 0x20..0x3f and 0x40..0x5f; their base64
 * below was computed independently (Python's base64 module). */
#define PRIV_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define PUB_B64 "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define PSK_B64 "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="

static const char golden[] = "[Interface]\n"
			     "PrivateKey = " PRIV_B64 "\n"
			     "Address = 10.66.77.2/32, fd77:6d69:746d::2/128\n"
			     "DNS = 10.66.77.1, fd77:6d69:746d::1\n"
			     "MTU = 1380\n"
			     "\n"
			     "[Peer]\n"
			     "PublicKey = " PUB_B64 "\n"
			     "PresharedKey = " PSK_B64 "\n"
			     "AllowedIPs = 0.0.0.0/0, ::/0\n"
			     "Endpoint = 192.168.1.23:51820\n"
			     "PersistentKeepalive = 25\n";

static void fill(uint8_t *p, uint8_t start)
{
	for (int i = 0; i < QR_WGCONF_KEY_LEN; i++)
		p[i] = (uint8_t)(start + i);
}

static void fixed_config(struct qr_wgconf *c)
{
	qr_wgconf_init(c);
	fill(c->private_key, 0x00);
	fill(c->public_key, 0x20);
	fill(c->psk, 0x40);
	c->has_psk = true;
	c->address4.family = AF_INET;
	inet_pton(AF_INET, "10.66.77.2", &c->address4.addr.v4);
	c->address4.prefix = 32;
	c->address6.family = AF_INET6;
	inet_pton(AF_INET6, "fd77:6d69:746d::2", &c->address6.addr.v6);
	c->address6.prefix = 128;
	c->n_dns = 2;
	c->dns[0].family = AF_INET;
	inet_pton(AF_INET, "10.66.77.1", &c->dns[0].addr.v4);
	c->dns[1].family = AF_INET6;
	inet_pton(AF_INET6, "fd77:6d69:746d::1", &c->dns[1].addr.v6);
	c->mtu = 1380;
	assert_int_equal(qr_endpoint_parse(&c->endpoint, "192.168.1.23:51820", 0, NULL, 0), 0);
	c->keepalive = 25;
}

static void test_golden(void **state)
{
	struct qr_wgconf c;
	char buf[QR_WGCONF_TEXT_MAX], err[QR_WGCONF_ERR_MAX];
	size_t len = 0;

	fixed_config(&c);
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), 0);
	assert_string_equal(buf, golden);
	assert_int_equal(len, strlen(golden));
	qr_wgconf_wipe(&c);
	assert_true(c.private_key[1] == 0 && c.psk[1] == 0);
}

static void test_render_too_small(void **state)
{
	struct qr_wgconf c;
	char buf[100], err[QR_WGCONF_ERR_MAX];

	fixed_config(&c);
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), NULL, err, sizeof(err)), -ENOSPC);
	/* The partial text held the private key: nothing of it is left. */
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
}

static void render_parse_render(const struct qr_wgconf *c)
{
	struct qr_wgconf back;
	char a[QR_WGCONF_TEXT_MAX], b[QR_WGCONF_TEXT_MAX], err[QR_WGCONF_ERR_MAX] = "";
	size_t la, lb;

	assert_int_equal(qr_wgconf_render(c, a, sizeof(a), &la, err, sizeof(err)), 0);
	if (qr_wgconf_parse(&back, a, la, "rt.conf", err, sizeof(err)) != 0)
		fail_msg("parse of rendered text failed: %s\n%s", err, a);
	assert_int_equal(qr_wgconf_render(&back, b, sizeof(b), &lb, err, sizeof(err)), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(a, b, la);
	assert_memory_equal(back.private_key, c->private_key, QR_WGCONF_KEY_LEN);
	assert_memory_equal(back.public_key, c->public_key, QR_WGCONF_KEY_LEN);
	assert_int_equal(back.has_psk, c->has_psk);
	assert_int_equal(back.n_allowed, c->n_allowed);
	assert_int_equal(back.n_dns, c->n_dns);
	assert_int_equal(back.n_apps, c->n_apps);
	assert_int_equal(back.apps_mode, c->apps_mode);
	assert_int_equal(back.mtu, c->mtu);
	assert_int_equal(back.keepalive, c->keepalive);
	assert_int_equal(back.endpoint.port, c->endpoint.port);
	assert_string_equal(back.endpoint.host, c->endpoint.host);
}

static void test_round_trip(void **state)
{
	struct qr_wgconf c;

	/* Full config. */
	fixed_config(&c);
	render_parse_render(&c);

	/* Minimal: IPv4 only, no DNS/MTU/PSK/keepalive, IPv6 endpoint. */
	qr_wgconf_init(&c);
	fill(c.private_key, 0x01);
	fill(c.public_key, 0x81);
	c.address4.family = AF_INET;
	inet_pton(AF_INET, "10.0.0.2", &c.address4.addr.v4);
	c.address4.prefix = 32;
	assert_int_equal(qr_endpoint_parse(&c.endpoint, "[2001:db8::1]:443", 0, NULL, 0), 0);
	render_parse_render(&c);

	/* IPv6 only, a host name endpoint, a listen port, excluded apps. */
	qr_wgconf_init(&c);
	fill(c.private_key, 0x02);
	fill(c.public_key, 0x82);
	c.address6.family = AF_INET6;
	inet_pton(AF_INET6, "fd00::5", &c.address6.addr.v6);
	c.address6.prefix = 128;
	c.listen_port = 40000;
	c.apps_mode = QR_WGCONF_APPS_EXCLUDE;
	c.n_apps = 2;
	strcpy(c.apps[0], "com.android.vending");
	strcpy(c.apps[1], "org.example.bank_app2");
	assert_int_equal(qr_endpoint_parse(&c.endpoint, "capture.example.lan:51820", 0, NULL, 0),
			 0);
	render_parse_render(&c);
}

/* A foreign but valid file: comments, odd case and spacing, CRLF, repeated
 * list keys, sections in the other order. */
static void test_parse_lenient_forms(void **state)
{
	static const char text[] = "# made by hand\r\n"
				   "[peer]\r\n"
				   "publickey=" PUB_B64 "   # server\r\n"
				   "ALLOWEDIPS = 10.0.0.0/8\r\n"
				   "AllowedIPs = fd00::/8 , 192.168.0.0/16\r\n"
				   "endpoint = [FD00:0:0::1]:51820\r\n"
				   "PersistentKeepalive = off\r\n"
				   "\r\n"
				   "[INTERFACE]\r\n"
				   "\tPrivateKey\t=\t" PRIV_B64 "\r\n"
				   "Address = 10.1.2.3/24\r\n"
				   "Address = fd00::3/64\r\n"
				   "dns = 1.1.1.1\r\n"
				   "DNS = 2606:4700:4700::1111";
	struct qr_wgconf c;
	char err[QR_WGCONF_ERR_MAX] = "";
	char buf[64];

	if (qr_wgconf_parse(&c, text, strlen(text), "hand.conf", err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(c.n_allowed, 3);
	assert_int_equal(qr_cidr_format(&c.allowed[1], buf, sizeof(buf)), 8);
	assert_string_equal(buf, "fd00::/8");
	assert_int_equal(c.address4.prefix, 24);
	assert_int_equal(c.address6.prefix, 64);
	assert_int_equal(c.n_dns, 2);
	assert_int_equal(c.keepalive, 0);
	assert_int_equal(c.endpoint.family, AF_INET6);
	assert_string_equal(c.endpoint.host, "fd00::1");
	assert_int_equal(c.endpoint.port, 51820);
	assert_int_equal(c.private_key[31], 0x1f);
	assert_int_equal(c.public_key[0], 0x20);
}

struct bad_case {
	const char *text;
	const char *expect; /* substring of the message, file:line included */
};

#define IF_HDR "[Interface]\nPrivateKey = " PRIV_B64 "\nAddress = 10.0.0.2/32\n"
#define PEER_HDR "[Peer]\nPublicKey = " PUB_B64 "\nEndpoint = 192.0.2.1:51820\n"

static const struct bad_case bad_cases[] = {
	{ "[Interfac]\n", "t.conf:1: unknown section '[Interfac]'" },
	{ "\n\n[Interface]\n[Peer]\n[Nope]\n", "t.conf:5: unknown section '[Nope]'" },
	{ IF_HDR "Tabel = off\n" PEER_HDR, "t.conf:4: unknown key 'Tabel' in [Interface]" },
	{ IF_HDR "Table = off\n" PEER_HDR, "t.conf:4: unknown key 'Table' in [Interface]" },
	{ IF_HDR "PostUp = iptables -A\n" PEER_HDR,
	  "t.conf:4: unknown key 'PostUp' in [Interface]" },
	{ IF_HDR PEER_HDR "FwMark = 1\n", "t.conf:7: unknown key 'FwMark' in [Peer]" },
	{ IF_HDR "PublicKey = " PUB_B64 "\n" PEER_HDR,
	  "t.conf:4: PublicKey belongs in [Peer], not in [Interface]" },
	{ "PrivateKey = " PRIV_B64 "\n",
	  "t.conf:1: 'PrivateKey' before any [Interface] or [Peer]" },
	{ IF_HDR "just words\n" PEER_HDR, "t.conf:4: expected 'Key = Value'" },
	{ IF_HDR "Bad Key = 1\n" PEER_HDR, "t.conf:4: bad key 'Bad Key'" },
	{ IF_HDR "MTU =\n" PEER_HDR, "t.conf:4: empty value for MTU" },
	{ IF_HDR "MTU = # later\n" PEER_HDR, "t.conf:4: empty value for MTU" },
	/* keys */
	{ "[Interface]\nPrivateKey = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n",
	  "t.conf:2: PrivateKey: not the base64 of 32 bytes" },
	{ "[Interface]\nPrivateKey = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n",
	  "t.conf:2: PrivateKey: not the base64" }, /* 31 bytes */
	{ "[Interface]\nPrivateKey = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=AAAA\n",
	  "t.conf:2: PrivateKey: not the base64" }, /* too long */
	{ "[Interface]\nPrivateKey = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh!=\n",
	  "t.conf:2: PrivateKey: not the base64" }, /* bad character */
	{ IF_HDR "[Peer]\nPublicKey = nope\n", "t.conf:5: PublicKey: 'nope' is not the base64" },
	{ IF_HDR PEER_HDR "PresharedKey = " PUB_B64 "x\n",
	  "t.conf:7: PresharedKey: not the base64" },
	/* addresses and CIDRs */
	{ "[Interface]\nAddress = 10.0.0.300/32\n", "t.conf:2: Address: bad CIDR '10.0.0.300/32'" },
	{ "[Interface]\nAddress = 10.0.0.2/33\n",
	  "t.conf:2: Address: bad CIDR '10.0.0.2/33': prefix" },
	{ "[Interface]\nAddress = 10.0.0.2/32, 10.0.0.3/32\n",
	  "t.conf:2: Address: more than one IPv4 address" },
	{ "[Interface]\nAddress = fd00::2/128\nAddress = fd00::3/128\n",
	  "t.conf:3: Address: more than one IPv6 address" },
	{ "[Interface]\nAddress = 10.0.0.2/32,,fd00::2/128\n",
	  "t.conf:2: empty entry in the Address" },
	{ "[Interface]\nDNS = 10.0.0.1, dns.example\n",
	  "t.conf:2: DNS: 'dns.example' is not an IP address" },
	{ IF_HDR "[Peer]\nAllowedIPs = 10.0.0.1/8\n",
	  "t.conf:5: AllowedIPs: bad CIDR '10.0.0.1/8': bits set after the /8 prefix" },
	{ IF_HDR "[Peer]\nAllowedIPs = 0.0.0.0/0, ::/129\n",
	  "t.conf:5: AllowedIPs: bad CIDR '::/129': prefix length must be 0..128" },
	{ IF_HDR "[Peer]\nAllowedIPs = 10.0.0.0/-1\n", "t.conf:5: AllowedIPs: bad CIDR" },
	{ IF_HDR "[Peer]\nAllowedIPs = 10.0.0.0/ 8\n", "t.conf:5: AllowedIPs: bad CIDR" },
	{ IF_HDR "[Peer]\nAllowedIPs = example.com/8\n", "t.conf:5: AllowedIPs: bad CIDR" },
	{ IF_HDR "[Peer]\nAllowedIPs = 0.0.0.0/0,\n", "t.conf:5: empty entry in the AllowedIPs" },
	/* endpoint */
	{ IF_HDR "[Peer]\nEndpoint = 192.0.2.1\n",
	  "t.conf:5: Endpoint: '192.0.2.1': missing ':PORT'" },
	{ IF_HDR "[Peer]\nEndpoint = fd00::1:51820\n",
	  "t.conf:5: Endpoint: 'fd00::1:51820': write an IPv6" },
	{ IF_HDR "[Peer]\nEndpoint = [fd00::1:51820\n",
	  "t.conf:5: Endpoint: '[fd00::1:51820': missing ']'" },
	{ IF_HDR "[Peer]\nEndpoint = 192.0.2.1:0\n",
	  "t.conf:5: Endpoint: '192.0.2.1:0': bad port" },
	{ IF_HDR "[Peer]\nEndpoint = 192.0.2.1:65536\n",
	  "t.conf:5: Endpoint: '192.0.2.1:65536': bad port" },
	{ IF_HDR "[Peer]\nEndpoint = bad_host:1\n",
	  "t.conf:5: Endpoint: 'bad_host:1': 'bad_host' is neither" },
	{ IF_HDR "[Peer]\nEndpoint = 192.0.2:1\n",
	  "t.conf:5: Endpoint: '192.0.2:1': '192.0.2' is neither" },
	/* numbers */
	{ IF_HDR "MTU = 575\n" PEER_HDR, "t.conf:4: MTU: '575' is not in 576..65535" },
	{ IF_HDR "MTU = 65536\n" PEER_HDR, "t.conf:4: MTU: '65536' is not in 576..65535" },
	{ IF_HDR "MTU = 1400x\n" PEER_HDR, "t.conf:4: MTU: '1400x'" },
	{ IF_HDR "Address = fd00::2/128\nMTU = 1000\n" PEER_HDR,
	  "t.conf:5: MTU 1000 is below 1280, the minimum for the IPv6 Address" },
	{ IF_HDR "ListenPort = 0\n" PEER_HDR, "t.conf:4: ListenPort: '0' is not 1..65535" },
	{ IF_HDR PEER_HDR "PersistentKeepalive = -5\n", "t.conf:7: PersistentKeepalive: '-5'" },
	/* duplicates */
	{ IF_HDR "PrivateKey = " PRIV_B64 "\n",
	  "t.conf:4: duplicate key PrivateKey (first on line 2)" },
	{ IF_HDR "mtu = 1400\nMTU = 1420\n", "t.conf:5: duplicate key MTU (first on line 4)" },
	{ IF_HDR PEER_HDR "endpoint = 192.0.2.2:1\n",
	  "t.conf:7: duplicate key Endpoint (first on line 6)" },
	{ IF_HDR "[Interface]\n", "t.conf:4: second [Interface] section (first on line 1)" },
	{ IF_HDR PEER_HDR "[Peer]\n", "t.conf:7: second [Peer] section (first on line 4)" },
	/* application lists */
	{ IF_HDR "IncludedApplications = com.a.b\nExcludedApplications = com.c.d\n",
	  "t.conf:5: IncludedApplications and ExcludedApplications exclude each other" },
	{ IF_HDR "ExcludedApplications = com.a.b, 9lives.app\n",
	  "t.conf:4: ExcludedApplications: '9lives.app' is not an Android package name" },
	{ IF_HDR "IncludedApplications = com..b\n", "t.conf:4: IncludedApplications: 'com..b'" },
	/* missing pieces, reported at their section's line */
	{ "[Interface]\nAddress = 10.0.0.2/32\n" PEER_HDR,
	  "t.conf:1: missing required key PrivateKey in [Interface]" },
	{ "[Interface]\nPrivateKey = " PRIV_B64 "\n" PEER_HDR,
	  "t.conf:1: missing required key Address in [Interface]" },
	{ IF_HDR "\n[Peer]\nEndpoint = 192.0.2.1:51820\n",
	  "t.conf:5: missing required key PublicKey in [Peer]" },
	{ IF_HDR "[Peer]\nPublicKey = " PUB_B64 "\n",
	  "t.conf:4: missing required key Endpoint in [Peer]" },
	{ IF_HDR "# no peer\n\n", "t.conf:5: no [Peer] section" },
	{ "# nothing\n", "t.conf:1: no [Interface] section" },
	{ "", "t.conf:1: no [Interface] section" },
};

static void test_parse_errors(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct qr_wgconf c;
		char err[QR_WGCONF_ERR_MAX] = "";
		const struct bad_case *bc = &bad_cases[i];

		memset(&c, 0xaa, sizeof(c));
		if (qr_wgconf_parse(&c, bc->text, strlen(bc->text), "t.conf", err, sizeof(err)) !=
		    -EINVAL)
			fail_msg("case %zu accepted:\n%s", i, bc->text);
		if (strstr(err, bc->expect) == NULL)
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, bc->expect);
		/* A failed parse leaves nothing behind, keys included. */
		for (size_t j = 0; j < sizeof(c.private_key); j++)
			assert_int_equal(c.private_key[j], 0);
	}
}

static void test_parse_error_limits(void **state)
{
	struct qr_wgconf c;
	char err[QR_WGCONF_ERR_MAX] = "";
	char text[QR_WGCONF_LINE_MAX + 64];
	static const char with_nul[] = "[Interface]\nMTU = 14\0"
				       "00\n";

	/* A line longer than the limit */
	memset(text, 'a', sizeof(text));
	memcpy(text, "[Interface]\n# ", 14);
	assert_int_equal(qr_wgconf_parse(&c, text, sizeof(text), "long.conf", err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "long.conf:2: line longer than"));
	/* A NUL byte inside a line */
	assert_int_equal(
		qr_wgconf_parse(&c, with_nul, sizeof(with_nul) - 1, "nul.conf", err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "nul.conf:2: NUL byte"));
	/* No file name given */
	assert_int_equal(qr_wgconf_parse(&c, "[x]", 3, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "<config>:1: unknown section"));
	/* Too many AllowedIPs */
	char big[QR_WGCONF_TEXT_MAX] = IF_HDR PEER_HDR "AllowedIPs = 10.0.0.0/32";
	for (int i = 1; i <= QR_WGCONF_MAX_ALLOWED; i++) {
		size_t n = strlen(big);
		snprintf(big + n, sizeof(big) - n, ", 10.0.%d.0/32", i);
	}
	assert_int_equal(qr_wgconf_parse(&c, big, strlen(big), "big.conf", err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "big.conf:7: AllowedIPs: more than 64 entries"));
}

static void test_split_tunnel(void **state)
{
	static const char text[] = IF_HDR "[Peer]\n"
					  "PublicKey = " PUB_B64 "\n"
					  "AllowedIPs = 10.66.77.0/24, 192.168.0.0/16, fd77::/16\n"
					  "AllowedIPs = 203.0.113.7/32\n"
					  "Endpoint = 192.0.2.1:51820\n";
	struct qr_wgconf c;
	char err[QR_WGCONF_ERR_MAX] = "", buf[QR_WGCONF_TEXT_MAX];
	size_t len;

	if (qr_wgconf_parse(&c, text, strlen(text), "split.conf", err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(c.n_allowed, 4);
	assert_int_equal(c.allowed[2].family, AF_INET6);
	assert_int_equal(c.allowed[2].prefix, 16);
	assert_int_equal(c.allowed[3].prefix, 32);
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), 0);
	assert_non_null(strstr(
		buf, "\nAllowedIPs = 10.66.77.0/24, 192.168.0.0/16, fd77::/16, 203.0.113.7/32\n"));

	/* The public CIDR parser: bare addresses, host bits, bounds */
	struct qr_cidr cidr;
	assert_int_equal(qr_cidr_parse(&cidr, "192.0.2.9", err, sizeof(err)), 0);
	assert_int_equal(cidr.prefix, 32);
	assert_int_equal(qr_cidr_parse(&cidr, "2001:db8::", err, sizeof(err)), 0);
	assert_int_equal(cidr.prefix, 128);
	assert_int_equal(qr_cidr_parse(&cidr, "2001:db9::/31", err, sizeof(err)), -EINVAL);
	assert_int_equal(qr_cidr_parse(&cidr, "2001:db8::/32", err, sizeof(err)), 0);
	assert_int_equal(qr_cidr_parse(&cidr, "0.0.0.0/0", err, sizeof(err)), 0);
	assert_int_equal(qr_cidr_parse(&cidr, "128.0.0.0/0", err, sizeof(err)), -EINVAL);
	assert_int_equal(qr_cidr_parse(&cidr, "10.0.0.0/0008", err, sizeof(err)), -EINVAL);
	assert_int_equal(qr_cidr_parse(&cidr, "/8", err, sizeof(err)), -EINVAL);

	/* Render refuses a CIDR with host bits set */
	c.allowed[0].addr.v4.s_addr = htonl(0x0a424d01);
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "bad AllowedIPs entry #1");
}

static void test_apps(void **state)
{
	struct qr_wgconf c;
	char buf[QR_WGCONF_TEXT_MAX], err[QR_WGCONF_ERR_MAX] = "";
	size_t len;

	fixed_config(&c);
	c.apps_mode = QR_WGCONF_APPS_INCLUDE;
	c.n_apps = 2;
	strcpy(c.apps[0], "com.android.chrome");
	strcpy(c.apps[1], "com.example.app");
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), 0);
	assert_non_null(strstr(buf, "MTU = 1380\nIncludedApplications = com.android.chrome, "
				    "com.example.app\n\n[Peer]\n"));
	assert_null(strstr(buf, "Excluded"));
	render_parse_render(&c);

	c.apps_mode = QR_WGCONF_APPS_EXCLUDE;
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), 0);
	assert_non_null(
		strstr(buf, "\nExcludedApplications = com.android.chrome, com.example.app\n"));
	render_parse_render(&c);

	/* Repeated lines add up; mixing the two lists does not. */
	static const char text[] = IF_HDR "ExcludedApplications = a.b\n"
					  "excludedapplications = c.d, e_f.g1\n" PEER_HDR;
	if (qr_wgconf_parse(&c, text, strlen(text), "apps.conf", err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(c.apps_mode, QR_WGCONF_APPS_EXCLUDE);
	assert_int_equal(c.n_apps, 3);
	assert_string_equal(c.apps[2], "e_f.g1");

	/* Mode without names or names without mode */
	fixed_config(&c);
	c.apps_mode = QR_WGCONF_APPS_INCLUDE;
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), -EINVAL);
	c.apps_mode = QR_WGCONF_APPS_ALL;
	c.n_apps = 1;
	strcpy(c.apps[0], "com.x");
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), -EINVAL);
	c.apps_mode = QR_WGCONF_APPS_INCLUDE;
	strcpy(c.apps[0], "com.x,com.y"); /* would inject a second entry */
	assert_int_equal(qr_wgconf_render(&c, buf, sizeof(buf), &len, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "bad application name 'com.x,com.y'");
}

static void test_validate(void **state)
{
	struct qr_wgconf c;
	char err[QR_WGCONF_ERR_MAX];

	fixed_config(&c);
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), 0);
	memset(c.private_key, 0, sizeof(c.private_key));
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[Interface] has no PrivateKey");

	fixed_config(&c);
	c.address4.family = 0;
	c.address6.family = 0;
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[Interface] has no Address");

	fixed_config(&c);
	c.endpoint.port = 0;
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no Endpoint"));

	fixed_config(&c);
	strcpy(c.endpoint.host, "a b"); /* not a host name: would break the line */
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "bad Endpoint");

	fixed_config(&c);
	c.mtu = 1200; /* fine for IPv4, not with the IPv6 address */
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);
	c.address6.family = 0;
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), 0);
	c.mtu = 500;
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);

	fixed_config(&c);
	c.n_dns = QR_WGCONF_MAX_DNS + 1;
	assert_int_equal(qr_wgconf_validate(&c, err, sizeof(err)), -EINVAL);
	/* NULL err is allowed */
	assert_int_equal(qr_wgconf_validate(&c, NULL, 0), -EINVAL);
}

static void test_base64(void **state)
{
	uint8_t key[QR_WGCONF_KEY_LEN], want[QR_WGCONF_KEY_LEN];
	char b64[QR_WGCONF_KEY_B64_LEN + 1];

	fill(want, 0x40);
	qr_wgconf_key_to_base64(b64, want);
	assert_string_equal(b64, PSK_B64);
	assert_true(qr_wgconf_key_from_base64(key, PSK_B64));
	assert_memory_equal(key, want, sizeof(key));
	/* Non-canonical: the last digit carries bits past the 256th. */
	assert_false(
		qr_wgconf_key_from_base64(key, "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9="));
	assert_false(qr_wgconf_key_from_base64(key, "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8"));
	assert_false(
		qr_wgconf_key_from_base64(key, "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=="));
	assert_false(
		qr_wgconf_key_from_base64(key, "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xd-l8="));
	assert_false(qr_wgconf_key_from_base64(key, ""));
}

static const char strip_in[] = "[Interface]\n"
			       "PrivateKey = " PRIV_B64 "\n"
			       "ListenPort = 40000\n"
			       "Address = 10.0.0.2/32\n"
			       "  dns=10.0.0.1 # resolver\n"
			       "MTU = 1380\n"
			       "Table = off\n"
			       "PreUp = true\n"
			       "PostUp = true\n"
			       "PreDown = true\n"
			       "postdown = true\n"
			       "SaveConfig = false\n"
			       "IncludedApplications = com.a.b\n"
			       "ExcludedApplications = com.c.d\n"
			       "# Address = stays, it is a comment\n"
			       "\n"
			       "[Peer]\n"
			       "PublicKey = " PUB_B64 "\n"
			       "AllowedIPs = 0.0.0.0/0, ::/0\n"
			       "Endpoint = [2001:db8::1]:51820";

static const char strip_out[] = "[Interface]\n"
				"PrivateKey = " PRIV_B64 "\n"
				"ListenPort = 40000\n"
				"# Address = stays, it is a comment\n"
				"\n"
				"[Peer]\n"
				"PublicKey = " PUB_B64 "\n"
				"AllowedIPs = 0.0.0.0/0, ::/0\n"
				"Endpoint = [2001:db8::1]:51820\n";

static void test_strip(void **state)
{
	char out[QR_WGCONF_TEXT_MAX], small[40];
	size_t len = 0;

	assert_int_equal(
		qr_wgconf_strip_for_setconf(strip_in, strlen(strip_in), out, sizeof(out), &len), 0);
	assert_string_equal(out, strip_out);
	assert_int_equal(len, strlen(strip_out));
	assert_int_equal(
		qr_wgconf_strip_for_setconf(strip_in, strlen(strip_in), small, sizeof(small), NULL),
		-ENOSPC);

	/* From a struct: the golden config without its wg-quick-only lines */
	struct qr_wgconf c;
	char err[QR_WGCONF_ERR_MAX];
	fixed_config(&c);
	assert_int_equal(qr_wgconf_render_setconf(&c, out, sizeof(out), &len, err, sizeof(err)), 0);
	assert_string_equal(out, "[Interface]\n"
				 "PrivateKey = " PRIV_B64 "\n"
				 "\n"
				 "[Peer]\n"
				 "PublicKey = " PUB_B64 "\n"
				 "PresharedKey = " PSK_B64 "\n"
				 "AllowedIPs = 0.0.0.0/0, ::/0\n"
				 "Endpoint = 192.168.1.23:51820\n"
				 "PersistentKeepalive = 25\n");
}

/* Runs `wg setconf` on a device that does not exist: wg parses the whole
 * file first and only then fails to reach the device, so a parse error
 * ("Line unrecognized", "Configuration parsing error") tells the text
 * apart from one that wg accepts. */
static int wg_setconf_output(const char *text, char *out, size_t cap)
{
	char path[] = "/tmp/wgmitm-test-setconf-XXXXXX";
	char cmd[256];
	int fd = mkstemp(path);
	FILE *p;
	size_t n;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	snprintf(cmd, sizeof(cmd), "wg setconf wgmitm-nx%d %s 2>&1", (int)(getpid() % 10000), path);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	pclose(p);
	unlink(path);
	return 0;
}

static void test_wg_accepts_stripped(void **state)
{
	struct qr_wgconf c;
	char text[QR_WGCONF_TEXT_MAX], err[QR_WGCONF_ERR_MAX], out[1024];
	size_t len;

	if (system("command -v wg >/dev/null 2>&1") != 0) {
		print_message("wg (wireguard-tools) not installed: skipping\n");
		skip();
	}
	fixed_config(&c);
	c.apps_mode = QR_WGCONF_APPS_EXCLUDE;
	c.n_apps = 1;
	strcpy(c.apps[0], "com.example");
	assert_int_equal(qr_endpoint_parse(&c.endpoint, "[2001:db8::1]:51820", 0, NULL, 0), 0);
	assert_int_equal(qr_wgconf_render_setconf(&c, text, sizeof(text), &len, err, sizeof(err)),
			 0);
	wg_setconf_output(text, out, sizeof(out));
	if (strstr(out, "Unable to modify interface") == NULL || strstr(out, "pars") != NULL)
		fail_msg("wg did not accept the stripped config:\n%s\n---\n%s", out, text);

	/* The unstripped text is refused by wg: the check above can fail. */
	assert_int_equal(qr_wgconf_render(&c, text, sizeof(text), &len, err, sizeof(err)), 0);
	wg_setconf_output(text, out, sizeof(out));
	assert_non_null(strstr(out, "Configuration parsing error"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),       cmocka_unit_test(test_render_too_small),
		cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_parse_lenient_forms),
		cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_parse_error_limits),
		cmocka_unit_test(test_split_tunnel), cmocka_unit_test(test_apps),
		cmocka_unit_test(test_validate),     cmocka_unit_test(test_base64),
		cmocka_unit_test(test_strip),        cmocka_unit_test(test_wg_accepts_stripped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
