/* The timer state machine driven by an injected clock: the test plays the
 * peer, performs the actions wg_timers_expire() asks for and calls the hooks
 * a real peer would call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sodium.h>

#include "wg/timers.h"

#define S WG_NS_PER_SEC
#define MS WG_NS_PER_MS

struct sim {
	struct wg_timer_params p;
	struct wg_timers t;
	uint64_t now;
	unsigned initiations, keepalives, gave_up, zeroed, new_handshakes, persistent;
	uint64_t initiation_at[64];
};

static void sim_init(struct sim *s, uint64_t pk)
{
	memset(s, 0, sizeof(*s));
	wg_timer_params_default(&s->p);
	s->now = 1000 * S; /* any origin: the timers only use differences */
	wg_timers_init(&s->t, &s->p, pk);
}

static void sim_send_initiation(struct sim *s, bool retry)
{
	if (!wg_timers_initiation_allowed(&s->t, retry, s->now))
		return;
	wg_timers_any_authenticated_packet_traversal(&s->t, s->now);
	wg_timers_any_authenticated_packet_sent(&s->t, s->now);
	wg_timers_handshake_initiated(&s->t, s->now);
	if (s->initiations < 64)
		s->initiation_at[s->initiations] = s->now;
	s->initiations++;
}

static void sim_send_keepalive(struct sim *s)
{
	wg_timers_any_authenticated_packet_traversal(&s->t, s->now);
	wg_timers_any_authenticated_packet_sent(&s->t, s->now);
	s->keepalives++;
}

/* Advance to `until`, firing every deadline on the way. */
static void sim_run(struct sim *s, uint64_t until)
{
	for (;;) {
		uint64_t next = wg_timers_next(&s->t);
		if (next > until)
			break;
		if (next > s->now)
			s->now = next;
		unsigned a = wg_timers_expire(&s->t, s->now);
		assert_int_not_equal(a, 0);
		if (a & WG_TIMER_RETRY_HANDSHAKE)
			sim_send_initiation(s, true);
		if (a & WG_TIMER_GIVE_UP)
			s->gave_up++;
		if (a & WG_TIMER_NEW_HANDSHAKE) {
			s->new_handshakes++;
			sim_send_initiation(s, false);
		}
		if (a & WG_TIMER_SEND_KEEPALIVE)
			sim_send_keepalive(s);
		if (a & WG_TIMER_PERSISTENT_KEEPALIVE) {
			s->persistent++;
			sim_send_keepalive(s);
		}
		if (a & WG_TIMER_ZERO_KEYS)
			s->zeroed++;
	}
	s->now = until;
}

static int setup(void **state)
{
	(void)state;
	return sodium_init() < 0 ? -1 : 0;
}

/* No response ever: retransmit every REKEY_TIMEOUT + [0, 333 ms), give up
 * after REKEY_ATTEMPT_TIME, then zero the residue 3 * REJECT_AFTER_TIME
 * later. */
static void test_retransmit_and_give_up(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	uint64_t start = s.now;
	sim_send_initiation(&s, false);
	sim_run(&s, start + 200 * S);

	/* 1 initiation + REKEY_ATTEMPT_TIME / REKEY_TIMEOUT + 1 retries. */
	assert_int_equal(s.initiations, 1 + WG_MAX_TIMER_HANDSHAKES + 1);
	for (unsigned i = 1; i < s.initiations; i++) {
		uint64_t gap = s.initiation_at[i] - s.initiation_at[i - 1];
		assert_true(gap >= 5 * S);
		assert_true(gap < 5 * S + 333 * MS);
	}
	assert_int_equal(s.gave_up, 1);
	uint64_t last = s.initiation_at[s.initiations - 1];
	assert_true(last - start >= 90 * S);
	assert_int_equal(s.zeroed, 0);
	/* The give-up armed zero_key_material for 540 s. */
	assert_true(s.t.zero_key_material > last + 540 * S);
	assert_true(s.t.zero_key_material <= last + 540 * S + 6 * S);
	sim_run(&s, start + 700 * S);
	assert_int_equal(s.zeroed, 1);
	assert_int_equal(s.initiations, 1 + WG_MAX_TIMER_HANDSHAKES + 1);
	assert_int_equal(wg_timers_next(&s.t), WG_TIMER_OFF);
}

/* A response stops the retransmissions and resets the attempt count. */
static void test_handshake_complete(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	s.p.rekey_timeout_jitter_max = 0;
	sim_send_initiation(&s, false);
	sim_run(&s, s.now + 12 * S); /* two retries at +5 and +10 */
	assert_int_equal(s.initiations, 3);
	assert_int_equal(s.t.handshake_attempts, 2);
	wg_timers_session_derived(&s.t, s.now);
	wg_timers_handshake_complete(&s.t, s.now);
	wg_timers_any_authenticated_packet_received(&s.t, s.now);
	assert_int_equal(s.t.handshake_attempts, 0);
	assert_int_equal(s.t.retransmit_handshake, WG_TIMER_OFF);
	sim_run(&s, s.now + 100 * S);
	assert_int_equal(s.initiations, 3);
}

/* At most one initiation per REKEY_TIMEOUT, whoever asks. */
static void test_initiation_rate_limit(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	sim_send_initiation(&s, false);
	s.now += 4 * S;
	assert_false(wg_timers_initiation_allowed(&s.t, false, s.now));
	s.now += 1 * S;
	assert_true(wg_timers_initiation_allowed(&s.t, false, s.now));
}

/* A response sent holds back initiations for REKEY_TIMEOUT too (the
 * responder waits for the initiator's confirmation), without arming a
 * retransmission: retrying is the initiator's job. */
static void test_response_sent_rate_limit(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	assert_true(wg_timers_initiation_allowed(&s.t, false, s.now));
	wg_timers_session_derived(&s.t, s.now);
	wg_timers_any_authenticated_packet_traversal(&s.t, s.now);
	wg_timers_any_authenticated_packet_sent(&s.t, s.now);
	wg_timers_handshake_response_sent(&s.t, s.now);
	assert_int_equal(s.t.retransmit_handshake, WG_TIMER_OFF);
	s.now += 5 * S - 1;
	assert_false(wg_timers_initiation_allowed(&s.t, false, s.now));
	s.now += 1;
	assert_true(wg_timers_initiation_allowed(&s.t, false, s.now));
	sim_run(&s, s.now + 100 * S);
	assert_int_equal(s.initiations, 0);
}

/* Received data and sent nothing: one keepalive KEEPALIVE_TIMEOUT later;
 * more data during the wait asks for one more. Sending cancels it. */
static void test_passive_keepalive(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	uint64_t t0 = s.now;
	wg_timers_data_received(&s.t, s.now);
	sim_run(&s, t0 + 10 * S - 1);
	assert_int_equal(s.keepalives, 0);
	sim_run(&s, t0 + 10 * S);
	assert_int_equal(s.keepalives, 1);
	sim_run(&s, t0 + 60 * S);
	assert_int_equal(s.keepalives, 1);

	t0 = s.now;
	wg_timers_data_received(&s.t, s.now);
	s.now += 3 * S;
	wg_timers_data_received(&s.t, s.now); /* needs another one */
	sim_run(&s, t0 + 10 * S);
	assert_int_equal(s.keepalives, 2);
	sim_run(&s, t0 + 20 * S);
	assert_int_equal(s.keepalives, 3);
	sim_run(&s, t0 + 60 * S);
	assert_int_equal(s.keepalives, 3);

	/* Our own data goes out first: no keepalive needed. */
	t0 = s.now;
	wg_timers_data_received(&s.t, s.now);
	s.now += 2 * S;
	wg_timers_any_authenticated_packet_sent(&s.t, s.now);
	sim_run(&s, t0 + 60 * S);
	assert_int_equal(s.keepalives, 3);
}

/* Sent data and heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT:
 * new handshake; any authenticated packet received cancels it. */
static void test_new_handshake(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	s.p.rekey_timeout_jitter_max = 0;
	uint64_t t0 = s.now;
	wg_timers_data_sent(&s.t, s.now);
	s.now += 1 * S;
	wg_timers_data_sent(&s.t, s.now); /* does not push the deadline */
	sim_run(&s, t0 + 15 * S - 1);
	assert_int_equal(s.new_handshakes, 0);
	sim_run(&s, t0 + 15 * S);
	assert_int_equal(s.new_handshakes, 1);
	assert_int_equal(s.initiations, 1);

	struct sim r;
	sim_init(&r, 0);
	wg_timers_data_sent(&r.t, r.now);
	r.now += 14 * S;
	wg_timers_any_authenticated_packet_received(&r.t, r.now);
	sim_run(&r, r.now + 60 * S);
	assert_int_equal(r.new_handshakes, 0);
}

/* Keys are zeroed 3 * REJECT_AFTER_TIME after the last session derived. */
static void test_zero_keys(void **state)
{
	struct sim s;
	sim_init(&s, 0);
	uint64_t t0 = s.now;
	wg_timers_session_derived(&s.t, s.now);
	sim_run(&s, t0 + 100 * S);
	wg_timers_session_derived(&s.t, s.now); /* a new session pushes it */
	sim_run(&s, t0 + 100 * S + 540 * S - 1);
	assert_int_equal(s.zeroed, 0);
	sim_run(&s, t0 + 100 * S + 540 * S);
	assert_int_equal(s.zeroed, 1);
}

/* Persistent keepalive: one empty packet per quiet interval; traffic
 * pushes it back. */
static void test_persistent_keepalive(void **state)
{
	struct sim s;
	sim_init(&s, 25 * S);
	uint64_t t0 = s.now;
	wg_timers_any_authenticated_packet_traversal(&s.t, s.now);
	sim_run(&s, t0 + 100 * S);
	assert_int_equal(s.persistent, 4); /* 25, 50, 75, 100 */
	s.now += 10 * S;
	wg_timers_any_authenticated_packet_traversal(&s.t, s.now); /* traffic at 110 */
	sim_run(&s, t0 + 134 * S);
	assert_int_equal(s.persistent, 4);
	sim_run(&s, t0 + 135 * S);
	assert_int_equal(s.persistent, 5);
	/* Turned off at run time. */
	wg_timers_persistent_keepalive(&s.t, 0, s.now);
	sim_run(&s, t0 + 500 * S);
	assert_int_equal(s.persistent, 5);
}

/* Keypair age rules with default and shortened constants. */
static void test_keypair_age(void **state)
{
	struct wg_timer_params p;
	struct wg_timers t;
	wg_timer_params_default(&p);
	wg_timers_init(&t, &p, 0);
	uint64_t birth = 50 * S;

	/* REKEY_AFTER_TIME on send, for the initiator only. */
	assert_false(wg_timers_rekey_on_send(&p, true, birth, 1, birth + 120 * S - 1));
	assert_true(wg_timers_rekey_on_send(&p, true, birth, 1, birth + 120 * S));
	assert_false(wg_timers_rekey_on_send(&p, false, birth, 1, birth + 170 * S));
	/* REKEY_AFTER_MESSAGES, either role. */
	assert_false(wg_timers_rekey_on_send(&p, false, birth, WG_REKEY_AFTER_MESSAGES, birth));
	assert_true(wg_timers_rekey_on_send(&p, false, birth, WG_REKEY_AFTER_MESSAGES + 1, birth));

	/* REJECT_AFTER_TIME / REJECT_AFTER_MESSAGES. */
	assert_true(wg_timers_keypair_can_send(&p, birth, 0, birth + 180 * S - 1));
	assert_false(wg_timers_keypair_can_send(&p, birth, 0, birth + 180 * S));
	assert_true(wg_timers_keypair_can_send(&p, birth, WG_REJECT_AFTER_MESSAGES - 1, birth));
	assert_false(wg_timers_keypair_can_send(&p, birth, WG_REJECT_AFTER_MESSAGES, birth));
	assert_true(wg_timers_keypair_can_receive(&p, birth, birth + 180 * S - 1));
	assert_false(wg_timers_keypair_can_receive(&p, birth, birth + 180 * S));

	/* On receive, at 180 - 10 - 5 = 165 s, once. */
	assert_false(wg_timers_rekey_on_receive(&t, true, birth, birth + 165 * S - 1));
	assert_false(wg_timers_rekey_on_receive(&t, false, birth, birth + 165 * S));
	assert_true(wg_timers_rekey_on_receive(&t, true, birth, birth + 165 * S));
	assert_false(wg_timers_rekey_on_receive(&t, true, birth, birth + 166 * S));
	wg_timers_handshake_complete(&t, birth + 167 * S);
	assert_true(wg_timers_rekey_on_receive(&t, true, birth, birth + 168 * S));

	/* Shortened for an end-to-end test: rekey after 5 s. */
	p.rekey_after_time = 5 * S;
	p.reject_after_time = 8 * S;
	assert_true(wg_timers_rekey_on_send(&p, true, birth, 1, birth + 5 * S));
	assert_false(wg_timers_keypair_can_send(&p, birth, 1, birth + 8 * S));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retransmit_and_give_up),
		cmocka_unit_test(test_handshake_complete),
		cmocka_unit_test(test_initiation_rate_limit),
		cmocka_unit_test(test_response_sent_rate_limit),
		cmocka_unit_test(test_passive_keepalive),
		cmocka_unit_test(test_new_handshake),
		cmocka_unit_test(test_zero_keys),
		cmocka_unit_test(test_persistent_keepalive),
		cmocka_unit_test(test_keypair_age),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
