/* The listeners' parsers of untrusted bytes: the HTTP proxy's request
 * head (CONNECT, absolute form, the rewrite, credentials, refusals), the
 * SOCKS5 messages and replies, the header of SOCKS5 UDP datagrams, the
 * users file, the specs of the reverse, forward and UDP forward
 * listeners, and the configuration's listener entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "listen/entry.h"
#include "listen/proxyreq.h"
#include "listen/socks5.h"
#include "listen/target.h"
#include "listen/users.h"

static int parse(const char *s, struct proxyreq *r, char *why)
{
	return proxyreq_parse((const uint8_t *)s, strlen(s), r, why, 200);
}

static void test_connect(void **state)
{
	(void)state;
	struct proxyreq r;
	char why[200];
	const char *s = "CONNECT www.test:8443 HTTP/1.1\r\nHost: www.test:8443\r\n"
			"Proxy-Authorization: Basic YWxpY2U6czNjcjp0\r\n\r\n\x16\x03\x01";
	assert_int_equal(parse(s, &r, why), 0);
	assert_int_equal(r.kind, PROXYREQ_CONNECT);
	assert_string_equal(r.host, "www.test");
	assert_int_equal(r.port, 8443);
	assert_true(r.has_auth);
	assert_string_equal(r.user, "alice");
	assert_string_equal(r.pass, "s3cr:t"); /* only the first colon splits */
	assert_int_equal(r.head_len, strlen(s) - 3);
	assert_null(r.rewritten);
	proxyreq_free(&r);

	assert_int_equal(parse("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n", &r, why), 0);
	assert_string_equal(r.host, "2001:db8::1");
	assert_int_equal(r.port, 443);
	assert_false(r.has_auth);
	proxyreq_free(&r);

	/* Every prefix of a head is incomplete, never an error. */
	for (size_t n = 0; n < strlen(s) - 3; n++) {
		assert_int_equal(proxyreq_parse((const uint8_t *)s, n, &r, why, sizeof(why)),
				 -EAGAIN);
		proxyreq_free(&r);
	}
}

static void test_absolute(void **state)
{
	(void)state;
	struct proxyreq r;
	char why[200];
	const char *s = "POST http://www.test:8080/up?x=1 HTTP/1.1\r\nHost: www.test:8080\r\n"
			"Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\n"
			"Proxy-Authorization: Basic Ym9iOnB3\r\nContent-Length: 3\r\n\r\nabc";
	assert_int_equal(parse(s, &r, why), 0);
	assert_int_equal(r.kind, PROXYREQ_ABSOLUTE);
	assert_string_equal(r.host, "www.test");
	assert_int_equal(r.port, 8080);
	assert_string_equal(r.user, "bob");
	const char *want = "POST /up?x=1 HTTP/1.1\r\nHost: www.test:8080\r\n"
			   "Content-Length: 3\r\nConnection: close\r\n\r\n";
	assert_int_equal(r.rewritten_len, strlen(want));
	assert_memory_equal(r.rewritten, want, strlen(want));
	assert_memory_equal(s + r.head_len, "abc", 3);
	proxyreq_free(&r);

	/* No Host: the URL's authority; no path: "/"; default port 80. */
	assert_int_equal(parse("GET http://a.test HTTP/1.0\r\n\r\n", &r, why), 0);
	assert_int_equal(r.port, 80);
	want = "GET / HTTP/1.0\r\nHost: a.test\r\nConnection: close\r\n\r\n";
	assert_memory_equal(r.rewritten, want, strlen(want));
	proxyreq_free(&r);
}

static void test_refusals(void **state)
{
	(void)state;
	struct proxyreq r;
	char why[200];
	static const struct {
		const char *head;
		int status;
	} cases[] = {
		{ "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
		{ "GET https://a.test/ HTTP/1.1\r\n\r\n", 501 },
		{ "GET ftp://a.test/ HTTP/1.1\r\n\r\n", 501 },
		{ "GET http://u:p@a.test/ HTTP/1.1\r\n\r\n", 400 },
		{ "GET http://a.test:0/ HTTP/1.1\r\n\r\n", 400 },
		{ "GET http://a.test:65536/ HTTP/1.1\r\n\r\n", 400 },
		{ "GET http://a.test?q HTTP/1.1\r\n\r\n", 400 },
		{ "CONNECT a.test HTTP/1.1\r\n\r\n", 400 },
		{ "CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n", 400 },
		{ "CONNECT [2001:db8::1 HTTP/1.1\r\n\r\n", 400 },
		{ "GARBAGE\r\n\r\n", 400 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = parse(cases[i].head, &r, why);
		if (rc != cases[i].status)
			fail_msg("%s: %d (%s), not %d", cases[i].head, rc, why, cases[i].status);
		assert_true(why[0] != '\0');
		proxyreq_free(&r);
	}
	/* A head past 16 KiB: 431, not a wait for more. */
	size_t n = PROXYREQ_MAX_HEAD + 10;
	char *big = malloc(n + 1);
	memcpy(big, "GET http://a.test/ HTTP/1.1\r\nX: ", 32);
	memset(big + 32, 'a', n - 32);
	big[n] = '\0';
	assert_int_equal(parse(big, &r, why), 431);
	free(big);
	/* Bad credentials are no credentials. */
	assert_int_equal(parse("CONNECT a.test:1 HTTP/1.1\r\nProxy-Authorization: Basic !!\r\n\r\n",
			       &r, why),
			 0);
	assert_false(r.has_auth);
	proxyreq_free(&r);
	assert_int_equal(parse("CONNECT a.test:1 HTTP/1.1\r\nProxy-Authorization: Digest x\r\n\r\n",
			       &r, why),
			 0);
	assert_false(r.has_auth);
	proxyreq_free(&r);
}

static void test_socks5(void **state)
{
	(void)state;
	bool none, up;
	assert_int_equal(socks5_parse_greeting((const uint8_t *)"\x05\x02\x00\x02", 4, &none, &up),
			 4);
	assert_true(none);
	assert_true(up);
	assert_int_equal(socks5_parse_greeting((const uint8_t *)"\x05\x02\x00", 3, &none, &up), 0);
	assert_int_equal(socks5_parse_greeting((const uint8_t *)"\x04\x01", 2, &none, &up), -1);
	assert_int_equal(socks5_parse_greeting((const uint8_t *)"\x05\x00", 2, &none, &up), -1);

	char u[256], p[256];
	assert_int_equal(socks5_parse_userpass((const uint8_t *)"\x01\x03"
								"bob\x02pw",
					       8, u, p),
			 8);
	assert_string_equal(u, "bob");
	assert_string_equal(p, "pw");
	assert_int_equal(socks5_parse_userpass((const uint8_t *)"\x01\x03"
								"bob\x02p",
					       7, u, p),
			 0);
	assert_int_equal(socks5_parse_userpass((const uint8_t *)"\x01\x03"
								"b\0b\x00",
					       7, u, p),
			 -1);

	struct socks5_req r;
	uint8_t rep;
	const uint8_t v4[] = { 5, 1, 0, 1, 203, 0, 113, 10, 0x20, 0xfb };
	assert_int_equal(socks5_parse_request(v4, sizeof(v4), &r, &rep), 10);
	assert_int_equal(r.cmd, SOCKS5_CONNECT);
	assert_string_equal(r.host, "203.0.113.10");
	assert_int_equal(r.port, 8443);
	assert_int_equal(ntohs(((struct sockaddr_in *)&r.addr)->sin_port), 8443);
	for (size_t n = 0; n < sizeof(v4); n++)
		assert_int_equal(socks5_parse_request(v4, n, &r, &rep), 0);
	const uint8_t name[] = { 5, 1, 0, 3, 8, 'w', 'w', 'w', '.', 't', 'e', 's', 't', 1, 0xbb };
	assert_int_equal(socks5_parse_request(name, sizeof(name), &r, &rep), (int)sizeof(name));
	assert_string_equal(r.host, "www.test");
	assert_int_equal(r.port, 443);
	uint8_t v6[22] = { 5, 1, 0, 4 };
	v6[4] = 0x20, v6[5] = 0x01, v6[19] = 1, v6[20] = 0, v6[21] = 80;
	assert_int_equal(socks5_parse_request(v6, sizeof(v6), &r, &rep), 22);
	assert_int_equal(r.addr.ss_family, AF_INET6);
	const uint8_t atyp[] = { 5, 1, 0, 9, 1, 2, 3, 4, 0, 80 };
	assert_int_equal(socks5_parse_request(atyp, sizeof(atyp), &r, &rep), -1);
	assert_int_equal(rep, SOCKS5_ATYP_UNSUPPORTED);
	const uint8_t port0[] = { 5, 1, 0, 1, 1, 2, 3, 4, 0, 0 };
	assert_int_equal(socks5_parse_request(port0, sizeof(port0), &r, &rep), -1);
	const uint8_t slash[] = { 5, 1, 0, 3, 3, 'a', '/', 'b', 0, 80 };
	assert_int_equal(socks5_parse_request(slash, sizeof(slash), &r, &rep), -1);

	uint8_t out[22];
	assert_int_equal(socks5_reply(out, SOCKS5_OK, NULL), 10);
	assert_memory_equal(out, "\x05\x00\x00\x01\0\0\0\0\0\0", 10);
	assert_int_equal(socks5_rep_for(UV_ECONNREFUSED), SOCKS5_REFUSED);
	assert_int_equal(socks5_rep_for(UV_ETIMEDOUT), SOCKS5_TTL_EXPIRED);
}

static char *write_file(const char *text)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/test_listen_users.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void test_users(void **state)
{
	(void)state;
	char err[300];
	/* "hunter2" as SHA-512 crypt (openssl passwd -6 -salt abcdefgh hunter2). */
	char *path =
		write_file("# team\n\nalice:secret\n  bob:$6$abcdefgh$M/eYsB4rVXAm3ZNc88J.UD9r"
			   "CKAT6FB1rahiwJCHtEndQNORCub5qhjxn50qbqVVthkM.9HpEwtf0t.iV9uH0/\r\n");
	struct users *u = users_load(path, err, sizeof(err));
	unlink(path);
	assert_non_null(u);
	assert_int_equal(users_count(u), 2);
	assert_true(users_check(u, "alice", "secret"));
	assert_false(users_check(u, "alice", "secret2"));
	assert_false(users_check(u, "alice", ""));
	assert_false(users_check(u, "carol", "secret"));
	assert_true(users_check(u, "bob", "hunter2"));
	assert_true(users_check(u, "bob", "hunter2")); /* remembered */
	assert_false(users_check(u, "bob", "hunter3"));
	users_free(u);

	static const struct {
		const char *text, *want;
	} bad[] = {
		{ "alice\n", ":1: expected user:password" },
		{ "a:b\n:c\n", ":2: expected user:password" },
		{ "a:\n", ":1: expected user:password" },
		{ "a:b\na:c\n", ":2: user \"a\" is listed twice" },
		{ "a:$6$x\n", ":1: the password hash of \"a\" is too short" },
		{ "# nobody\n", ": no users" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		path = write_file(bad[i].text);
		u = users_load(path, err, sizeof(err));
		unlink(path);
		assert_null(u);
		if (!strstr(err, bad[i].want) || strncmp(err, path, strlen(path)) != 0)
			fail_msg("%s: \"%s\"", bad[i].text, err);
	}
	assert_null(users_load("/nonexistent/users", err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/users"));
}

static uint16_t port_of(const struct sockaddr_storage *a)
{
	return ntohs(a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
					     : ((const struct sockaddr_in6 *)a)->sin6_port);
}

static void test_targets(void **state)
{
	(void)state;
	struct listen_target t;
	char err[200];
	char ip[INET6_ADDRSTRLEN];

	assert_int_equal(listen_parse_reverse("https://api.test:8443@8443", &t, err, sizeof(err)),
			 0);
	assert_string_equal(t.host, "api.test");
	assert_int_equal(t.port, 8443);
	assert_true(t.shape.upstream_tls);
	assert_int_equal(t.shape.client, RELAY_CLIENT_SNIFF);
	assert_string_equal(t.via, "reverse");
	assert_int_equal(t.addr.ss_family, AF_INET);
	inet_ntop(AF_INET, &((struct sockaddr_in *)&t.addr)->sin_addr, ip, sizeof(ip));
	assert_string_equal(ip, "127.0.0.1");
	assert_int_equal(port_of(&t.addr), 8443);
	assert_string_equal(t.authority, "api.test:8443");

	assert_int_equal(
		listen_parse_reverse("http://[2001:db8::1]/@[::1]:80", &t, err, sizeof(err)), 0);
	assert_string_equal(t.host, "2001:db8::1");
	assert_int_equal(t.port, 80);
	assert_false(t.shape.upstream_tls);
	assert_int_equal(t.addr.ss_family, AF_INET6);
	assert_string_equal(t.authority, "[2001:db8::1]"); /* the scheme's port: none */
	assert_int_equal(listen_parse_reverse("https://x.test@0.0.0.0:1", &t, err, sizeof(err)), 0);
	assert_int_equal(t.port, 443);
	assert_string_equal(t.authority, "x.test");
	assert_int_equal(listen_parse_reverse("https://x.test:1@1,keep-host", &t, err, sizeof(err)),
			 0);
	assert_string_equal(t.authority, "");
	assert_int_equal(port_of(&t.addr), 1);
	assert_int_equal(listen_parse_reverse("https://x.test:1@1,keep", &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "keep-host"));

	assert_int_equal(listen_parse_forward("5432=db.test:5432", &t, err, sizeof(err)), 0);
	assert_string_equal(t.host, "db.test");
	assert_int_equal(t.shape.client, RELAY_CLIENT_PLAIN);
	assert_int_equal(t.shape.proto, RELAY_PROTO_AUTO);
	assert_false(t.shape.upstream_tls);
	assert_int_equal(t.shape.insecure, -1);
	assert_int_equal(
		listen_parse_forward("10.0.0.1:50051=[2001:db8::5]:50051,protocol=grpc,tls,"
				     "upstream-tls,insecure=false",
				     &t, err, sizeof(err)),
		0);
	assert_string_equal(t.host, "2001:db8::5");
	assert_int_equal(t.shape.client, RELAY_CLIENT_TLS);
	assert_int_equal(t.shape.proto, RELAY_PROTO_GRPC);
	assert_true(t.shape.upstream_tls);
	assert_int_equal(t.shape.insecure, 0);
	assert_int_equal(listen_parse_forward("1=h.test:2,protocol=sse,insecure,tls=0", &t, err,
					      sizeof(err)),
			 0);
	assert_int_equal(t.shape.proto, RELAY_PROTO_HTTP);
	assert_int_equal(t.shape.insecure, 1);
	assert_int_equal(t.shape.client, RELAY_CLIENT_PLAIN);

	static const struct {
		int reverse;
		const char *spec, *want;
	} bad[] = {
		{ 1, "https://x.test", "URL@" },
		{ 1, "ftp://x.test@1", "http:// or https://" },
		{ 1, "https://x.test/api@1", "path" },
		{ 1, "https://x.test:0@1", "host or port" },
		{ 1, "https://x test@1", "host or port" },
		{ 1, "https://x.test@host.test:1", "after '@'" },
		{ 1, "https://x.test@70000", "after '@'" },
		{ 0, "8080", "expected [ADDR:]PORT=" },
		{ 0, "x=h.test:1", "before '='" },
		{ 0, "1=h.test", "HOST:PORT" },
		{ 0, "1=[::1:2", "HOST:PORT" },
		{ 0, "1=[zz]:2", "HOST:PORT" },
		{ 0, "1=h.test:2,protocol=ftp", "protocol=ftp" },
		{ 0, "1=h.test:2,tls=maybe", "true or false" },
		{ 0, "1=h.test:2,bogus", "unknown option" },
		{ 0, "1=h.test:2,", "unknown option" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = bad[i].reverse ? listen_parse_reverse(bad[i].spec, &t, err, sizeof(err))
					: listen_parse_forward(bad[i].spec, &t, err, sizeof(err));
		if (rc == 0 || !strstr(err, bad[i].want))
			fail_msg("%s: rc %d \"%s\"", bad[i].spec, rc, err);
	}
}

static void test_parents(void **state)
{
	(void)state;
	struct listen_parent lp;
	char err[200];
	assert_int_equal(listen_parse_parent("http://parent.test:3128", &lp, err, sizeof(err)), 0);
	assert_string_equal(lp.host, "parent.test");
	assert_int_equal(lp.port, 3128);
	assert_false(lp.p.socks5);
	assert_string_equal(lp.p.user, "");
	assert_string_equal(lp.p.glob, "");
	assert_string_equal(lp.p.label, "http://parent.test:3128");

	assert_int_equal(listen_parse_parent("http://al%69ce:s%40cret:x@10.0.0.1:3128/@*.corp.test",
					     &lp, err, sizeof(err)),
			 0);
	assert_string_equal(lp.p.user, "alice");
	assert_string_equal(lp.p.pass, "s@cret:x");
	assert_string_equal(lp.host, "10.0.0.1");
	assert_string_equal(lp.p.glob, "*.corp.test");
	assert_string_equal(lp.p.label, "http://10.0.0.1:3128");

	/* One '@': credentials when HOST:PORT follows it, else a glob. */
	assert_int_equal(
		listen_parse_parent("socks5://u:p@[2001:db8::1]:1080", &lp, err, sizeof(err)), 0);
	assert_true(lp.p.socks5);
	assert_string_equal(lp.p.user, "u");
	assert_string_equal(lp.host, "2001:db8::1");
	assert_string_equal(lp.p.label, "socks5://[2001:db8::1]:1080");
	assert_int_equal(
		listen_parse_parent("socks5h://p.test:1080@device=phone", &lp, err, sizeof(err)),
		0);
	assert_string_equal(lp.p.device, "phone");
	assert_string_equal(lp.p.user, "");

	static const struct {
		const char *spec, *want;
	} bad[] = {
		{ "ftp://p:1", "http:// or socks5://" },
		{ "http://p.test", "HOST:PORT" },
		{ "http://p.test:0", "HOST:PORT" },
		{ "http://a@b@p.test:1@x", "too many" },
		{ "http://u:%zz@p.test:1", "credentials" },
		{ "http://u:%00@p.test:1", "credentials" },
		{ "http://:p@p.test:1", "credentials" },
		{ "http://p.test:1@", "nothing after" },
		{ "http://p.test:1@device=", "device=NAME" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (listen_parse_parent(bad[i].spec, &lp, err, sizeof(err)) == 0 ||
		    !strstr(err, bad[i].want))
			fail_msg("%s: \"%s\"", bad[i].spec, err);
}

/* UDP ASSOCIATE's request may say port 0 (the client does not know yet);
 * the datagrams' header; our answers' header. */
static void test_socks5_udp(void **state)
{
	(void)state;
	struct socks5_req r;
	uint8_t rep;
	const uint8_t assoc0[] = { 5, 3, 0, 1, 0, 0, 0, 0, 0, 0 };
	assert_int_equal(socks5_parse_request(assoc0, sizeof(assoc0), &r, &rep), 10);
	assert_int_equal(r.cmd, SOCKS5_UDP_ASSOCIATE);
	assert_int_equal(r.port, 0);
	assert_int_equal(rep, SOCKS5_OK);
	const uint8_t assoc[] = { 5, 3, 0, 1, 127, 0, 0, 1, 0x9c, 0x40 };
	assert_int_equal(socks5_parse_request(assoc, sizeof(assoc), &r, &rep), 10);
	assert_int_equal(r.port, 40000);
	const uint8_t connect0[] = { 5, 1, 0, 1, 1, 2, 3, 4, 0, 0 };
	assert_int_equal(socks5_parse_request(connect0, sizeof(connect0), &r, &rep), -1);

	struct socks5_udp_hdr h;
	const uint8_t v4[] = { 0, 0, 0, 1, 203, 0, 113, 10, 0x1b, 0x58, 'h', 'i' };
	assert_int_equal(socks5_parse_udp(v4, sizeof(v4), &h), 10);
	assert_int_equal(h.atyp, 1);
	assert_int_equal(h.port, 7000);
	assert_int_equal(h.addr.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&h.addr)->sin_port), 7000);
	assert_int_equal(((struct sockaddr_in *)&h.addr)->sin_addr.s_addr, htonl(0xcb00710a));
	/* Every cut of the header is malformed; an empty payload is not. */
	for (size_t n = 0; n < 10; n++)
		assert_int_equal(socks5_parse_udp(v4, n, &h), SOCKS5_UDP_MALFORMED);
	assert_int_equal(socks5_parse_udp(v4, 10, &h), 10);

	uint8_t v6[24] = { 0, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8 };
	v6[19] = 0x10, v6[20] = 0, v6[21] = 53, v6[22] = 'q', v6[23] = '?';
	assert_int_equal(socks5_parse_udp(v6, sizeof(v6), &h), 22);
	assert_int_equal(h.atyp, 4);
	assert_int_equal(h.addr.ss_family, AF_INET6);
	char ip[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&h.addr)->sin6_addr, ip, sizeof(ip));
	assert_string_equal(ip, "2001:db8::10");
	assert_int_equal(h.port, 53);

	const uint8_t name[] = { 0, 0, 0, 3, 8, 'w', 'w', 'w', '.', 't', 'e', 's', 't', 0, 7, 'x' };
	assert_int_equal(socks5_parse_udp(name, sizeof(name), &h), 15);
	assert_int_equal(h.atyp, 3);
	assert_string_equal(h.name, "www.test");
	assert_int_equal(h.name_len, 8);
	assert_int_equal(h.port, 7);

	static const struct {
		const char *what;
		uint8_t b[16];
		size_t n;
		int want;
	} bad[] = {
		{ "FRAG 1", { 0, 0, 1, 1, 1, 2, 3, 4, 0, 7 }, 10, SOCKS5_UDP_FRAGMENT },
		{ "FRAG 0x80 (the last of a sequence)", { 0, 0, 0x80, 1 }, 4, SOCKS5_UDP_FRAGMENT },
		{ "RSV", { 0, 1, 0, 1, 1, 2, 3, 4, 0, 7 }, 10, SOCKS5_UDP_MALFORMED },
		{ "ATYP 2", { 0, 0, 0, 2, 1, 2, 3, 4, 0, 7 }, 10, SOCKS5_UDP_MALFORMED },
		{ "port 0", { 0, 0, 0, 1, 1, 2, 3, 4, 0, 0 }, 10, SOCKS5_UDP_MALFORMED },
		{ "empty name", { 0, 0, 0, 3, 0, 0, 7 }, 7, SOCKS5_UDP_MALFORMED },
		{ "name cut", { 0, 0, 0, 3, 5, 'a', 'b', 0, 7 }, 9, SOCKS5_UDP_MALFORMED },
		{ "space", { 0, 0, 0, 3, 3, 'a', ' ', 'b', 0, 7 }, 10, SOCKS5_UDP_MALFORMED },
		{ "slash", { 0, 0, 0, 3, 3, 'a', '/', 'b', 0, 7 }, 10, SOCKS5_UDP_MALFORMED },
		{ "NUL", { 0, 0, 0, 3, 3, 'a', 0, 'b', 0, 7 }, 10, SOCKS5_UDP_MALFORMED },
		{ "DEL", { 0, 0, 0, 3, 1, 0x7f, 0, 7 }, 8, SOCKS5_UDP_MALFORMED },
		{ "IPv6 cut",
		  { 0, 0, 0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 },
		  16,
		  SOCKS5_UDP_MALFORMED },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (socks5_parse_udp(bad[i].b, bad[i].n, &h) != bad[i].want)
			fail_msg("%s: not %d", bad[i].what, bad[i].want);
	/* The longest name. */
	uint8_t longest[4 + 1 + 255 + 2] = { 0, 0, 0, 3, 255 };
	memset(longest + 5, 'a', 255);
	longest[261] = 1;
	assert_int_equal(socks5_parse_udp(longest, sizeof(longest), &h), (int)sizeof(longest));
	assert_int_equal(strlen(h.name), 255);
	assert_int_equal(h.port, 1);

	/* Answers: ATYP 1 or 4, the source's address and port. */
	uint8_t out[SOCKS5_UDP_HDR_MAX];
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(7000) };
	inet_pton(AF_INET, "203.0.113.10", &a4.sin_addr);
	assert_int_equal(socks5_udp_header(out, (struct sockaddr *)&a4), 10);
	assert_memory_equal(out, v4, 10);
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(53) };
	inet_pton(AF_INET6, "2001:db8::10", &a6.sin6_addr);
	assert_int_equal(socks5_udp_header(out, (struct sockaddr *)&a6), 22);
	assert_memory_equal(out, v6, 22);
	struct sockaddr un = { .sa_family = AF_UNIX };
	assert_int_equal(socks5_udp_header(out, &un), 0);
}

static void test_udp_forward_spec(void **state)
{
	(void)state;
	struct listen_target t;
	char err[200], ip[INET6_ADDRSTRLEN];
	assert_int_equal(listen_parse_udp_forward("5353=dns.test:53", &t, err, sizeof(err)), 0);
	assert_string_equal(t.host, "dns.test");
	assert_int_equal(t.port, 53);
	assert_string_equal(t.via, "forward");
	assert_int_equal(t.addr.ss_family, AF_INET);
	inet_ntop(AF_INET, &((struct sockaddr_in *)&t.addr)->sin_addr, ip, sizeof(ip));
	assert_string_equal(ip, "127.0.0.1");
	assert_int_equal(port_of(&t.addr), 5353);
	assert_int_equal(
		listen_parse_udp_forward("[::1]:9000=[2001:db8::5]:9001", &t, err, sizeof(err)), 0);
	assert_int_equal(t.addr.ss_family, AF_INET6);
	assert_int_equal(port_of(&t.addr), 9000);
	assert_string_equal(t.host, "2001:db8::5");
	assert_int_equal(t.port, 9001);
	assert_int_equal(listen_parse_udp_forward("0.0.0.0:1=203.0.113.10:2", &t, err, sizeof(err)),
			 0);
	assert_string_equal(t.host, "203.0.113.10");

	static const struct {
		const char *spec, *want;
	} bad[] = {
		{ "5353", "expected [ADDR:]PORT=" },
		{ "x=h.test:1", "before '='" },
		{ "0=h.test:1", "before '='" },
		{ "host.test:1=h.test:1", "before '='" },
		{ "1=h.test", "HOST:PORT" },
		{ "1=h.test:0", "HOST:PORT" },
		{ "1=h.test:65536", "HOST:PORT" },
		{ "1=[::1:2", "HOST:PORT" },
		{ "1=h test:2", "HOST:PORT" },
		{ "1=", "HOST:PORT" },
		{ "1=h.test:2,protocol=raw", "no options" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (listen_parse_udp_forward(bad[i].spec, &t, err, sizeof(err)) == 0 ||
		    !strstr(err, bad[i].want))
			fail_msg("%s: \"%s\"", bad[i].spec, err);
}

static int entry(const char *text, struct listen_entry *e, char *field, char *why)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	assert_non_null(j);
	field[0] = why[0] = '\0';
	int rc = listen_entry_parse(j, e, field, 64, why, 256);
	json_decref(j);
	return rc;
}

static void test_entries(void **state)
{
	(void)state;
	struct listen_entry e;
	char field[64], why[256];
	assert_int_equal(entry("{\"name\":\"web\",\"type\":\"http-proxy+socks5\",\"listen\":8080,"
			       "\"max_connections\":7}",
			       &e, field, why),
			 0);
	assert_string_equal(e.name, "web");
	assert_int_equal(e.kind, LISTEN_PROXY);
	assert_true(e.http && e.socks5);
	assert_int_equal(e.max_connections, 7);
	assert_int_equal(ntohs(((struct sockaddr_in *)&e.t.addr)->sin_port), 8080);
	assert_int_equal(((struct sockaddr_in *)&e.t.addr)->sin_addr.s_addr,
			 htonl(INADDR_LOOPBACK));

	assert_int_equal(entry("{\"name\":\"api\",\"type\":\"reverse\",\"listen\":\"[::1]:8443\","
			       "\"url\":\"https://backend.test:9443\"}",
			       &e, field, why),
			 0);
	assert_int_equal(e.kind, LISTEN_TARGET);
	assert_string_equal(e.t.host, "backend.test");
	assert_int_equal(e.t.port, 9443);
	assert_true(e.t.shape.upstream_tls);
	assert_int_equal(e.t.shape.client, RELAY_CLIENT_SNIFF);
	assert_int_equal(e.t.addr.ss_family, AF_INET6);

	/* The fields mean what the option's spec means. */
	assert_int_equal(entry("{\"name\":\"db\",\"type\":\"forward\",\"listen\":\"5432\","
			       "\"target\":\"db.test:5432\",\"protocol\":\"grpc\",\"tls\":true,"
			       "\"upstream_tls\":true,\"upstream_insecure_skip_verify\":false}",
			       &e, field, why),
			 0);
	struct listen_target t;
	assert_int_equal(listen_parse_forward("5432=db.test:5432,protocol=grpc,tls,upstream-tls,"
					      "insecure=false",
					      &t, why, sizeof(why)),
			 0);
	assert_int_equal(memcmp(&e.t.shape, &t.shape, sizeof(t.shape)), 0);
	assert_string_equal(e.t.host, t.host);
	assert_int_equal(
		entry("{\"name\":\"x\",\"type\":\"forward\",\"spec\":\"9000=h.test:1,tls\","
		      "\"max_connections\":3}",
		      &e, field, why),
		0);
	assert_int_equal(e.t.shape.client, RELAY_CLIENT_TLS);
	assert_int_equal(e.max_connections, 3);
	assert_int_equal(entry("{\"name\":\"u\",\"type\":\"udp-forward\",\"listen\":5353,"
			       "\"target\":\"[2001:db8::1]:53\"}",
			       &e, field, why),
			 0);
	assert_int_equal(e.kind, LISTEN_UDP_FORWARD);
	assert_string_equal(e.t.host, "2001:db8::1");

	/* Each refusal names its member. */
	static const struct {
		const char *text, *field, *words;
	} bad[] = {
		{ "{\"type\":\"socks5\",\"listen\":1}", "name", "printable" },
		{ "{\"name\":\"a b\",\"type\":\"socks5\",\"listen\":1}", "name", "no spaces" },
		{ "{\"name\":\"a\",\"type\":\"ftp\",\"listen\":1}", "type", "expected" },
		{ "{\"name\":\"a\",\"type\":\"socks5\",\"listen\":0}", "listen", "1 to 65535" },
		{ "{\"name\":\"a\",\"type\":\"socks5\",\"listen\":\"x:1\"}", "listen", "ADDR" },
		{ "{\"name\":\"a\",\"type\":\"socks5\",\"listen\":1,\"target\":\"h:1\"}", "target",
		  "not a member of a socks5" },
		{ "{\"name\":\"a\",\"type\":\"forward\",\"listen\":1}", "target", "HOST:PORT" },
		{ "{\"name\":\"a\",\"type\":\"forward\",\"listen\":1,\"target\":\"h:1,tls\"}",
		  "target", "HOST:PORT" },
		{ "{\"name\":\"a\",\"type\":\"forward\",\"listen\":1,\"target\":\"h:1\","
		  "\"protocol\":\"ftp\"}",
		  "protocol", "grpc" },
		{ "{\"name\":\"a\",\"type\":\"forward\",\"listen\":1,\"target\":\"h:1\",\"tls\":1}",
		  "tls", "true or false" },
		{ "{\"name\":\"a\",\"type\":\"reverse\",\"listen\":1}", "url", "needs" },
		{ "{\"name\":\"a\",\"type\":\"reverse\",\"listen\":1,\"url\":\"https://h/p\"}",
		  "url", "path" },
		{ "{\"name\":\"a\",\"type\":\"forward\",\"spec\":\"1=h:1\",\"tls\":true}", "tls",
		  "not both" },
		{ "{\"name\":\"a\",\"type\":\"forward\",\"spec\":\"1=h\"}", "spec", "HOST:PORT" },
		{ "{\"name\":\"a\",\"type\":\"socks5\",\"listen\":1,\"max_connections\":0}",
		  "max_connections", "1 to" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(entry(bad[i].text, &e, field, why), -1);
		if (strcmp(field, bad[i].field) || !strstr(why, bad[i].words))
			fail_msg("%s: %s: %s", bad[i].text, field, why);
	}

	/* run's options as entries: named by type and address. */
	struct sockaddr_storage a;
	assert_int_equal(listen_parse_addr("[::1]:9000", 10, &a), 0);
	json_t *j = listen_entry_from_spec("forward", "[::1]:9000=h.test:1", &a);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "forward@[::1]:9000");
	assert_int_equal(listen_entry_parse(j, &e, field, sizeof(field), why, sizeof(why)), 0);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_absolute),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_socks5),
		cmocka_unit_test(test_users),
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_parents),
		cmocka_unit_test(test_socks5_udp),
		cmocka_unit_test(test_udp_forward_spec),
		cmocka_unit_test(test_entries),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
