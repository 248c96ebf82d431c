/* mac1/mac2 and cookie replies with an injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wg/cookie.h"
#include "wg/noise.h"
#include "wg/tai64n.h"

#define SEC 1000000000ULL

static struct wg_noise_static server, client;
static struct wg_cookie_checker checker;
static struct wg_cookie_maker maker; /* the client's, for the server */
static struct wg_endpoint src;

static int setup(void **state)
{
	uint8_t sk[32];

	(void)state;
	if (!wg_crypto_init())
		return -1;
	wg_x25519_generate_private(sk);
	if (!wg_noise_static_init(&server, sk))
		return -1;
	wg_x25519_generate_private(sk);
	if (!wg_noise_static_init(&client, sk))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	wg_crypto_thread_cleanup();
	return 0;
}

static int reset(void **state)
{
	(void)state;
	wg_cookie_checker_init(&checker, &server);
	wg_cookie_maker_init(&maker, server.public_key);
	memset(&src, 0, sizeof(src));
	src.in4.sin_family = AF_INET;
	src.in4.sin_port = htons(51820);
	src.in4.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1 */
	return 0;
}

static void make_initiation(struct wg_msg_initiation *m)
{
	struct wg_handshake hs;
	uint8_t t[12];

	wg_handshake_init(&hs, &client, server.public_key, NULL);
	wg_tai64n_now(t);
	assert_true(wg_noise_create_initiation(&client, &hs, 42, t, m));
	wg_handshake_wipe(&hs);
}

static void test_mac1(void **state)
{
	struct wg_msg_initiation m;
	struct wg_cookie_maker wrong;
	uint8_t *b = (uint8_t *)&m;

	(void)state;
	make_initiation(&m);
	/* No macs yet. */
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, false, SEC),
			 WG_COOKIE_MAC_INVALID);
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m), SEC));
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, false, SEC),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	/* Under load, without a cookie: still only mac1. */
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true, SEC),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	/* Any changed byte before mac1 breaks it. */
	m.encrypted_timestamp[3] ^= 1;
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, false, SEC),
			 WG_COOKIE_MAC_INVALID);
	m.encrypted_timestamp[3] ^= 1;
	m.macs.mac1[15] ^= 1;
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, false, SEC),
			 WG_COOKIE_MAC_INVALID);
	m.macs.mac1[15] ^= 1;
	/* Wrong length. */
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m) - 1, &src, false, SEC),
			 WG_COOKIE_MAC_INVALID);
	assert_false(wg_cookie_add_macs(&maker, b, 100, SEC));
	/* mac1 for another server's key. */
	wg_cookie_maker_init(&wrong, client.public_key);
	assert_true(wg_cookie_add_macs(&wrong, b, sizeof(m), SEC));
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, false, SEC),
			 WG_COOKIE_MAC_INVALID);
}

/* Under load: reply with a cookie, the client retries with mac2. */
static void test_cookie_round_trip(void **state)
{
	struct wg_msg_initiation m;
	struct wg_msg_cookie_reply reply;
	uint8_t *b = (uint8_t *)&m;
	struct wg_endpoint other = src;

	(void)state;
	make_initiation(&m);
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m), SEC));
	assert_true(wg_cookie_create_reply(&checker, &reply, b, sizeof(m), &src, SEC));
	assert_int_equal(wg_message_classify((const uint8_t *)&reply, sizeof(reply)),
			 WG_MSG_COOKIE_REPLY);
	assert_int_equal(wg_load_le32(reply.receiver_index), 42);
	assert_true(wg_cookie_consume_reply(&maker, &reply, 2 * SEC));
	/* A reply is accepted once per mac1 sent. */
	assert_false(wg_cookie_consume_reply(&maker, &reply, 2 * SEC));

	make_initiation(&m);
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m), 3 * SEC));
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true, 3 * SEC),
			 WG_COOKIE_MAC_VALID_WITH_COOKIE);
	/* mac2 only counts when asked (not under load). */
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, false, 3 * SEC),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	/* The cookie is bound to the source port and address. */
	other.in4.sin_port = htons(51821);
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &other, true, 3 * SEC),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	other = src;
	other.in4.sin_addr.s_addr = htonl(0xc0000202);
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &other, true, 3 * SEC),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	/* Tampered mac2. */
	m.macs.mac2[0] ^= 1;
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true, 3 * SEC),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
}

/* Responses carry macs the same way, over IPv6 too. */
static void test_cookie_response_ipv6(void **state)
{
	uint8_t msg[WG_MSG_RESPONSE_LEN];
	struct wg_msg_cookie_reply reply;
	struct wg_endpoint v6;

	(void)state;
	memset(&v6, 0, sizeof(v6));
	v6.in6.sin6_family = AF_INET6;
	v6.in6.sin6_port = htons(443);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &v6.in6.sin6_addr), 1);
	wg_random(msg, sizeof(msg));
	msg[0] = WG_MSG_RESPONSE;
	msg[1] = msg[2] = msg[3] = 0;
	assert_true(wg_cookie_add_macs(&maker, msg, sizeof(msg), SEC));
	assert_true(wg_cookie_create_reply(&checker, &reply, msg, sizeof(msg), &v6, SEC));
	assert_true(wg_cookie_consume_reply(&maker, &reply, SEC));
	assert_true(wg_cookie_add_macs(&maker, msg, sizeof(msg), SEC));
	assert_int_equal(wg_cookie_validate(&checker, msg, sizeof(msg), &v6, true, SEC),
			 WG_COOKIE_MAC_VALID_WITH_COOKIE);
}

/* The checker's secret rotates after COOKIE_REFRESH_TIME; the maker stops
 * sending mac2 a little before. */
static void test_cookie_expiry(void **state)
{
	struct wg_msg_initiation m;
	struct wg_msg_cookie_reply reply;
	uint8_t *b = (uint8_t *)&m;
	const uint64_t t0 = 1000 * SEC;
	static const uint8_t zero[16];

	(void)state;
	make_initiation(&m);
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m), t0));
	assert_true(wg_cookie_create_reply(&checker, &reply, b, sizeof(m), &src, t0));
	assert_true(wg_cookie_consume_reply(&maker, &reply, t0));

	/* Just before the maker's margin: mac2 sent and valid. */
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m),
				       t0 + WG_COOKIE_REFRESH_TIME_NS - WG_COOKIE_LATENCY_NS - 1));
	assert_memory_not_equal(m.macs.mac2, zero, 16);
	assert_int_equal(
		wg_cookie_validate(&checker, b, sizeof(m), &src, true,
				   t0 + WG_COOKIE_REFRESH_TIME_NS - WG_COOKIE_LATENCY_NS - 1),
		WG_COOKIE_MAC_VALID_WITH_COOKIE);
	/* Past the margin: no mac2. */
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m),
				       t0 + WG_COOKIE_REFRESH_TIME_NS - WG_COOKIE_LATENCY_NS));
	assert_memory_equal(m.macs.mac2, zero, 16);

	/* A mac2 computed in time stops validating once the secret is old. */
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m), t0 + SEC));
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true,
					    t0 + WG_COOKIE_REFRESH_TIME_NS - 1),
			 WG_COOKIE_MAC_VALID_WITH_COOKIE);
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true,
					    t0 + WG_COOKIE_REFRESH_TIME_NS),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	/* A new reply rotates the secret: the old cookie is dead for good. */
	assert_true(wg_cookie_create_reply(&checker, &reply, b, sizeof(m), &src,
					   t0 + WG_COOKIE_REFRESH_TIME_NS));
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true,
					    t0 + WG_COOKIE_REFRESH_TIME_NS),
			 WG_COOKIE_MAC_VALID_NO_COOKIE);
	assert_true(wg_cookie_consume_reply(&maker, &reply, t0 + WG_COOKIE_REFRESH_TIME_NS));
	assert_true(wg_cookie_add_macs(&maker, b, sizeof(m), t0 + WG_COOKIE_REFRESH_TIME_NS));
	assert_int_equal(wg_cookie_validate(&checker, b, sizeof(m), &src, true,
					    t0 + WG_COOKIE_REFRESH_TIME_NS),
			 WG_COOKIE_MAC_VALID_WITH_COOKIE);
}

/* The reply's AD is the mac1 of the message it answers. */
static void test_cookie_wrong_ad(void **state)
{
	struct wg_msg_initiation m1, m2;
	struct wg_msg_cookie_reply reply;

	(void)state;
	make_initiation(&m1);
	make_initiation(&m2);
	assert_true(wg_cookie_add_macs(&maker, (uint8_t *)&m1, sizeof(m1), SEC));
	assert_true(
		wg_cookie_create_reply(&checker, &reply, (uint8_t *)&m1, sizeof(m1), &src, SEC));
	/* The client has since sent m2: its last mac1 differs. */
	assert_true(wg_cookie_add_macs(&maker, (uint8_t *)&m2, sizeof(m2), SEC));
	assert_false(wg_cookie_consume_reply(&maker, &reply, SEC));
	assert_false(maker.has_cookie);
	/* Nothing sent yet: refused. */
	wg_cookie_maker_init(&maker, server.public_key);
	assert_false(wg_cookie_consume_reply(&maker, &reply, SEC));
	/* Tampered ciphertext. */
	assert_true(wg_cookie_add_macs(&maker, (uint8_t *)&m1, sizeof(m1), SEC));
	reply.encrypted_cookie[0] ^= 1;
	assert_false(wg_cookie_consume_reply(&maker, &reply, SEC));
	reply.encrypted_cookie[0] ^= 1;
	assert_true(wg_cookie_consume_reply(&maker, &reply, SEC));
	/* A reply for an unset source cannot be made. */
	{
		struct wg_endpoint none;

		memset(&none, 0, sizeof(none));
		assert_false(wg_cookie_create_reply(&checker, &reply, (uint8_t *)&m1, sizeof(m1),
						    &none, SEC));
	}
}

static void test_endpoint_source_bytes(void **state)
{
	uint8_t out[WG_ENDPOINT_SOURCE_MAX];
	struct wg_endpoint a, b;

	(void)state;
	assert_int_equal(wg_endpoint_cookie_source(&src, out), 6);
	assert_memory_equal(out, "\xc0\x00\x02\x01\x6c\xca", 6); /* 51820 = 0xca6c, little-endian */
	/* IPv4-mapped IPv6 identifies the same source as IPv4. */
	memset(&a, 0, sizeof(a));
	a.in6.sin6_family = AF_INET6;
	a.in6.sin6_port = htons(51820);
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.1", &a.in6.sin6_addr), 1);
	assert_int_equal(wg_endpoint_cookie_source(&a, out), 6);
	assert_memory_equal(out, "\xc0\x00\x02\x01\x6c\xca", 6);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::2", &a.in6.sin6_addr), 1);
	assert_int_equal(wg_endpoint_cookie_source(&a, out), 18);
	b = a;
	assert_true(wg_endpoint_equal(&a, &b));
	b.in6.sin6_port = htons(1);
	assert_false(wg_endpoint_equal(&a, &b));
	assert_false(wg_endpoint_equal(&a, &src));
	assert_true(wg_endpoint_set(&b, &src.sa, sizeof(src.in4)));
	assert_true(wg_endpoint_equal(&b, &src));
	assert_int_equal(wg_endpoint_len(&b), sizeof(struct sockaddr_in));
	assert_false(wg_endpoint_set(&b, &src.sa, 4));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_mac1, reset),
		cmocka_unit_test_setup(test_cookie_round_trip, reset),
		cmocka_unit_test_setup(test_cookie_response_ipv6, reset),
		cmocka_unit_test_setup(test_cookie_expiry, reset),
		cmocka_unit_test_setup(test_cookie_wrong_ad, reset),
		cmocka_unit_test_setup(test_endpoint_source_bytes, reset),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
