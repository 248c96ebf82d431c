/* Noise IKpsk2 handshake between two identities in one process, in the
 * shape of wireguard-go's device/noise_test.go TestNoiseHandshake: chaining
 * key and hash agree after each message, transport keys pair up, and every
 * rejection path returns its own reason without touching the state. */
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

struct side {
	struct wg_noise_static id;
	struct wg_handshake peer; /* this side's handshake with the other */
	bool known;               /* lookup finds the peer */
};

static struct wg_handshake *lookup_static(void *ctx, const uint8_t remote_static[WG_KEY_LEN])
{
	struct side *s = ctx;

	if (!s->known || memcmp(s->peer.remote_static, remote_static, WG_KEY_LEN) != 0)
		return NULL;
	return &s->peer;
}

static struct wg_handshake *lookup_index(void *ctx, uint32_t index)
{
	struct side *s = ctx;

	return s->known && s->peer.local_index == index ? &s->peer : NULL;
}

static struct side ini, res;

static void make_pair(const uint8_t *psk_i, const uint8_t *psk_r)
{
	uint8_t sk[32];

	wg_x25519_generate_private(sk);
	assert_true(wg_noise_static_init(&ini.id, sk));
	wg_x25519_generate_private(sk);
	assert_true(wg_noise_static_init(&res.id, sk));
	wg_handshake_init(&ini.peer, &ini.id, res.id.public_key, psk_i);
	wg_handshake_init(&res.peer, &res.id, ini.id.public_key, psk_r);
	ini.known = res.known = true;
	/* Both sides precompute the same DH(s_i, S_r) = DH(s_r, S_i). */
	assert_memory_equal(ini.peer.precomputed_static_static, res.peer.precomputed_static_static,
			    32);
}

static void stamp(uint8_t t[12], long sec)
{
	struct timespec ts = { .tv_sec = 1700000000 + sec, .tv_nsec = 0 };

	wg_tai64n_from_timespec(t, &ts);
}

static int setup(void **state)
{
	(void)state;
	return wg_crypto_init() ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	wg_crypto_thread_cleanup();
	return 0;
}

/* One full handshake; returns both sides' keys. */
static void handshake(struct wg_session_keys *ki, struct wg_session_keys *kr, long t_sec,
		      uint64_t now)
{
	struct wg_msg_initiation init;
	struct wg_msg_response resp;
	struct wg_handshake *hs;
	uint8_t t[12];

	stamp(t, t_sec);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 0x11223344, t, &init));
	assert_int_equal(ini.peer.state, WG_HANDSHAKE_CREATED_INITIATION);
	assert_int_equal(init.header.type, WG_MSG_INITIATION);
	assert_int_equal(wg_message_classify((const uint8_t *)&init, sizeof(init)),
			 WG_MSG_INITIATION);
	assert_int_equal(wg_load_le32(init.sender_index), 0x11223344);

	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, now, &hs),
			 WG_NOISE_OK);
	assert_ptr_equal(hs, &res.peer);
	assert_int_equal(res.peer.state, WG_HANDSHAKE_CONSUMED_INITIATION);
	assert_int_equal(res.peer.remote_index, 0x11223344);
	assert_memory_equal(res.peer.latest_timestamp, t, 12);
	assert_memory_equal(ini.peer.chaining_key, res.peer.chaining_key, 32);
	assert_memory_equal(ini.peer.hash, res.peer.hash, 32);

	assert_true(wg_noise_create_response(&res.peer, 0x55667788, &resp));
	assert_int_equal(res.peer.state, WG_HANDSHAKE_CREATED_RESPONSE);
	assert_int_equal(wg_message_classify((const uint8_t *)&resp, sizeof(resp)),
			 WG_MSG_RESPONSE);
	assert_int_equal(wg_load_le32(resp.receiver_index), 0x11223344);

	assert_int_equal(wg_noise_consume_response(&ini.id, &resp, lookup_index, &ini, &hs),
			 WG_NOISE_OK);
	assert_ptr_equal(hs, &ini.peer);
	assert_int_equal(ini.peer.state, WG_HANDSHAKE_CONSUMED_RESPONSE);
	assert_int_equal(ini.peer.remote_index, 0x55667788);
	assert_memory_equal(ini.peer.chaining_key, res.peer.chaining_key, 32);
	assert_memory_equal(ini.peer.hash, res.peer.hash, 32);

	assert_true(wg_noise_begin_session(&ini.peer, ki));
	assert_true(wg_noise_begin_session(&res.peer, kr));
}

static void check_keys(const struct wg_session_keys *ki, const struct wg_session_keys *kr)
{
	static const uint8_t zero[32];

	assert_true(ki->initiator);
	assert_false(kr->initiator);
	assert_memory_equal(ki->send_key, kr->recv_key, 32);
	assert_memory_equal(ki->recv_key, kr->send_key, 32);
	assert_memory_not_equal(ki->send_key, ki->recv_key, 32);
	assert_memory_not_equal(ki->send_key, zero, 32);
	assert_int_equal(ki->local_index, 0x11223344);
	assert_int_equal(ki->remote_index, 0x55667788);
	assert_int_equal(kr->local_index, 0x55667788);
	assert_int_equal(kr->remote_index, 0x11223344);
	/* The handshakes forgot their ephemeral secrets. */
	assert_int_equal(ini.peer.state, WG_HANDSHAKE_ZEROED);
	assert_int_equal(res.peer.state, WG_HANDSHAKE_ZEROED);
	assert_memory_equal(ini.peer.ephemeral_private, zero, 32);
	assert_memory_equal(res.peer.ephemeral_private, zero, 32);
	assert_memory_equal(ini.peer.chaining_key, zero, 32);
	assert_memory_equal(res.peer.hash, zero, 32);
}

/* A transport message both ways with the session keys. */
static void check_transport(const struct wg_session_keys *ki, const struct wg_session_keys *kr)
{
	uint8_t pkt[WG_MSG_TRANSPORT_HEADER_LEN + 64 + WG_TAG_LEN];
	struct wg_msg_transport *m = (struct wg_msg_transport *)pkt;
	const char msg1[] = "wireguard test message 1 (padded to a multiple of 16)";
	uint8_t plain[64] = { 0 };

	memcpy(plain, msg1, sizeof(msg1));
	memset(pkt, 0, sizeof(pkt));
	m->header.type = WG_MSG_TRANSPORT;
	wg_store_le32(m->receiver_index, ki->remote_index);
	wg_store_le64(m->counter, 0);
	wg_aead_encrypt(m->encrypted_data, plain, sizeof(plain), NULL, 0, 0, ki->send_key);
	assert_int_equal(wg_message_classify(pkt, sizeof(pkt)), WG_MSG_TRANSPORT);
	assert_int_equal(wg_load_le32(m->receiver_index), kr->local_index);
	assert_true(wg_aead_decrypt(m->encrypted_data, m->encrypted_data,
				    sizeof(plain) + WG_TAG_LEN, NULL, 0, wg_load_le64(m->counter),
				    kr->recv_key));
	assert_memory_equal(m->encrypted_data, plain, sizeof(plain));

	/* Other direction, counter 1; wrong direction's key fails. */
	wg_aead_encrypt(m->encrypted_data, plain, sizeof(plain), NULL, 0, 1, kr->send_key);
	assert_false(wg_aead_decrypt(plain, m->encrypted_data, sizeof(plain) + WG_TAG_LEN, NULL, 0,
				     1, kr->recv_key));
	assert_true(wg_aead_decrypt(plain, m->encrypted_data, sizeof(plain) + WG_TAG_LEN, NULL, 0,
				    1, ki->recv_key));
	assert_memory_equal(plain, msg1, sizeof(msg1));
}

static void test_handshake_no_psk(void **state)
{
	struct wg_session_keys ki, kr;

	(void)state;
	make_pair(NULL, NULL);
	handshake(&ki, &kr, 0, 10 * SEC);
	check_keys(&ki, &kr);
	check_transport(&ki, &kr);
	/* A second handshake gives fresh keys. */
	{
		struct wg_session_keys ki2, kr2;

		handshake(&ki2, &kr2, 1, 11 * SEC);
		check_keys(&ki2, &kr2);
		assert_memory_not_equal(ki.send_key, ki2.send_key, 32);
	}
}

static void test_handshake_psk(void **state)
{
	uint8_t psk[32];
	struct wg_session_keys ki, kr, ki0, kr0;

	(void)state;
	wg_random(psk, 32);
	make_pair(psk, psk);
	handshake(&ki, &kr, 0, 10 * SEC);
	check_keys(&ki, &kr);
	check_transport(&ki, &kr);
	(void)ki0;
	(void)kr0;
}

/* Wrong PSK: the initiation is accepted (the PSK enters only at the
 * response), the response fails to decrypt and the initiator's state stays. */
static void test_wrong_psk_fails_at_response(void **state)
{
	uint8_t psk1[32], psk2[32], t[12];
	struct wg_msg_initiation init;
	struct wg_msg_response resp;
	struct wg_handshake *hs, before;

	(void)state;
	wg_random(psk1, 32);
	wg_random(psk2, 32);
	make_pair(psk1, psk2);
	stamp(t, 0);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_OK);
	assert_true(wg_noise_create_response(&res.peer, 2, &resp));
	before = ini.peer;
	assert_int_equal(wg_noise_consume_response(&ini.id, &resp, lookup_index, &ini, &hs),
			 WG_NOISE_DECRYPT_FAILED);
	assert_memory_equal(&before, &ini.peer, sizeof(before));
	/* PSK on one side only fails the same way. */
	make_pair(psk1, NULL);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_OK);
	assert_true(wg_noise_create_response(&res.peer, 2, &resp));
	assert_int_equal(wg_noise_consume_response(&ini.id, &resp, lookup_index, &ini, &hs),
			 WG_NOISE_DECRYPT_FAILED);
}

static void test_tampered_initiation(void **state)
{
	uint8_t t[12];
	struct wg_msg_initiation init, bad;
	struct wg_handshake *hs, before;
	size_t offsets[] = { offsetof(struct wg_msg_initiation, unencrypted_ephemeral),
			     offsetof(struct wg_msg_initiation, encrypted_static),
			     offsetof(struct wg_msg_initiation, encrypted_static) + 40,
			     offsetof(struct wg_msg_initiation, encrypted_timestamp),
			     offsetof(struct wg_msg_initiation, encrypted_timestamp) + 27 };

	(void)state;
	make_pair(NULL, NULL);
	stamp(t, 0);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	before = res.peer;
	for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		enum wg_noise_result r;

		bad = init;
		((uint8_t *)&bad)[offsets[i]] ^= 0x04;
		r = wg_noise_consume_initiation(&res.id, &bad, lookup_static, &res, SEC, &hs);
		assert_true(r == WG_NOISE_DECRYPT_FAILED || r == WG_NOISE_INVALID_KEY);
		assert_memory_equal(&before, &res.peer, sizeof(before));
	}
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_OK);
}

static void test_tampered_response(void **state)
{
	uint8_t t[12];
	struct wg_msg_initiation init;
	struct wg_msg_response resp, bad;
	struct wg_handshake *hs, before;

	(void)state;
	make_pair(NULL, NULL);
	stamp(t, 0);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_OK);
	assert_true(wg_noise_create_response(&res.peer, 2, &resp));
	before = ini.peer;
	bad = resp;
	bad.unencrypted_ephemeral[5] ^= 1;
	assert_int_not_equal(wg_noise_consume_response(&ini.id, &bad, lookup_index, &ini, &hs),
			     WG_NOISE_OK);
	bad = resp;
	bad.encrypted_nothing[0] ^= 1;
	assert_int_equal(wg_noise_consume_response(&ini.id, &bad, lookup_index, &ini, &hs),
			 WG_NOISE_DECRYPT_FAILED);
	assert_memory_equal(&before, &ini.peer, sizeof(before));
	/* Unknown receiver index. */
	bad = resp;
	wg_store_le32(bad.receiver_index, 999);
	assert_int_equal(wg_noise_consume_response(&ini.id, &bad, lookup_index, &ini, &hs),
			 WG_NOISE_UNKNOWN_PEER);
	assert_null(hs);
	/* The genuine one still works, and only once. */
	assert_int_equal(wg_noise_consume_response(&ini.id, &resp, lookup_index, &ini, &hs),
			 WG_NOISE_OK);
	assert_int_equal(wg_noise_consume_response(&ini.id, &resp, lookup_index, &ini, &hs),
			 WG_NOISE_WRONG_STATE);
}

static void test_replay_and_flood(void **state)
{
	uint8_t t[12];
	struct wg_msg_initiation init, init_old, init_new;
	struct wg_handshake *hs, before;

	(void)state;
	make_pair(NULL, NULL);
	stamp(t, 5);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	stamp(t, 4);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init_old));
	stamp(t, 6);
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init_new));

	assert_int_equal(
		wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, 100 * SEC, &hs),
		WG_NOISE_OK);
	before = res.peer;
	/* The same message again (same timestamp), much later: replay. */
	assert_int_equal(
		wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, 200 * SEC, &hs),
		WG_NOISE_REPLAYED_TIMESTAMP);
	assert_ptr_equal(hs, &res.peer);
	/* An older timestamp: replay. */
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init_old, lookup_static, &res,
						     200 * SEC, &hs),
			 WG_NOISE_REPLAYED_TIMESTAMP);
	assert_memory_equal(&before, &res.peer, sizeof(before));
	/* A newer one 10 ms after the last: flood. */
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init_new, lookup_static, &res,
						     100 * SEC + 10000000ULL, &hs),
			 WG_NOISE_FLOOD);
	assert_memory_equal(&before, &res.peer, sizeof(before));
	/* 25 ms after: accepted. */
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init_new, lookup_static, &res,
						     100 * SEC + 25000000ULL, &hs),
			 WG_NOISE_OK);
	assert_int_equal(res.peer.last_initiation_consumption_ns, 100 * SEC + 25000000ULL);
}

static void test_unknown_static(void **state)
{
	uint8_t t[12], sk[32];
	struct wg_msg_initiation init;
	struct wg_handshake *hs;
	struct wg_noise_static stranger;
	struct wg_handshake stranger_hs;

	(void)state;
	make_pair(NULL, NULL);
	stamp(t, 0);
	/* Lookup that knows no one. */
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	res.known = false;
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_UNKNOWN_PEER);
	assert_null(hs);
	res.known = true;
	/* A stranger who knows the responder's public key. */
	wg_x25519_generate_private(sk);
	assert_true(wg_noise_static_init(&stranger, sk));
	wg_handshake_init(&stranger_hs, &stranger, res.id.public_key, NULL);
	assert_true(wg_noise_create_initiation(&stranger, &stranger_hs, 1, t, &init));
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_UNKNOWN_PEER);
	/* An initiation for another responder does not decrypt. */
	wg_handshake_init(&stranger_hs, &stranger, stranger.public_key, NULL);
	assert_true(wg_noise_create_initiation(&stranger, &stranger_hs, 1, t, &init));
	assert_int_equal(wg_noise_consume_initiation(&res.id, &init, lookup_static, &res, SEC, &hs),
			 WG_NOISE_DECRYPT_FAILED);
}

static void test_state_machine(void **state)
{
	struct wg_session_keys k;
	struct wg_msg_response resp;
	uint8_t zero_peer[32] = { 0 }, t[12];
	struct wg_handshake bad;
	struct wg_msg_initiation init;

	(void)state;
	make_pair(NULL, NULL);
	assert_false(wg_noise_begin_session(&ini.peer, &k));
	assert_false(wg_noise_create_response(&res.peer, 1, &resp));
	/* A low-order (here: zero) remote key makes every handshake fail. */
	wg_handshake_init(&bad, &ini.id, zero_peer, NULL);
	stamp(t, 0);
	assert_false(wg_noise_create_initiation(&ini.id, &bad, 1, t, &init));
	assert_int_equal(bad.state, WG_HANDSHAKE_ZEROED);
	/* Clear forgets a pending initiation. */
	assert_true(wg_noise_create_initiation(&ini.id, &ini.peer, 1, t, &init));
	wg_handshake_clear(&ini.peer);
	assert_int_equal(ini.peer.state, WG_HANDSHAKE_ZEROED);
	assert_memory_equal(ini.peer.remote_static, res.id.public_key, 32);
	assert_string_equal(wg_noise_result_str(WG_NOISE_FLOOD), "initiation flood");
}

/* The static identity: clamped private key, public key and derived keys. */
static void test_static_init(void **state)
{
	uint8_t sk[32], pub[32], mac1[32];
	struct wg_noise_static st;

	(void)state;
	memset(sk, 0xff, sizeof(sk));
	assert_true(wg_noise_static_init(&st, sk));
	assert_int_equal(st.private_key[0], 0xf8);
	assert_int_equal(st.private_key[31], 0x7f);
	assert_true(wg_x25519_public(pub, st.private_key));
	assert_memory_equal(pub, st.public_key, 32);
	wg_cookie_derive_mac1_key(mac1, pub);
	assert_memory_equal(mac1, st.mac1_key, 32);
	wg_noise_static_clear(&st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_static_init),
		cmocka_unit_test(test_handshake_no_psk),
		cmocka_unit_test(test_handshake_psk),
		cmocka_unit_test(test_wrong_psk_fails_at_response),
		cmocka_unit_test(test_tampered_initiation),
		cmocka_unit_test(test_tampered_response),
		cmocka_unit_test(test_replay_and_flood),
		cmocka_unit_test(test_unknown_static),
		cmocka_unit_test(test_state_machine),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
