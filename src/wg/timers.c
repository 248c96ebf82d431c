/* Timers, whitepaper section 6, in the shape of the Linux module's timers.c.
 *
 * - retransmit_handshake: an initiation got no response after
 *   REKEY_TIMEOUT + jitter: send it again, at most
 *   REKEY_ATTEMPT_TIME / REKEY_TIMEOUT more times, then give up, drop the
 *   queued packets and arm zero_key_material to clear the residue.
 * - send_keepalive: we received data and sent nothing for
 *   KEEPALIVE_TIMEOUT: send an empty transport packet (passive keepalive).
 * - new_handshake: we sent data and received nothing (not even a keepalive)
 *   for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter: start a new handshake.
 * - zero_key_material: no new session for 3 * REJECT_AFTER_TIME: wipe the
 *   handshake state and every keypair.
 * - persistent_keepalive: if configured, send an empty packet when no
 *   authenticated packet went either way for the interval.
 *
 * Not timers but age checks done on traffic (wg_timers_rekey_on_*,
 * wg_timers_keypair_can_*): rekey after REKEY_AFTER_TIME (initiator, on
 * send) or REKEY_AFTER_MESSAGES; rekey once at REJECT_AFTER_TIME -
 * KEEPALIVE_TIMEOUT - REKEY_TIMEOUT (initiator, on receive); refuse a keypair
 * after REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES.
 */
#include "wg/timers.h"

#include <sodium.h>
#include <string.h>

void wg_timer_params_default(struct wg_timer_params *p)
{
	p->rekey_after_time = WG_REKEY_AFTER_TIME_NS;
	p->reject_after_time = WG_REJECT_AFTER_TIME_NS;
	p->rekey_attempt_time = WG_REKEY_ATTEMPT_TIME_NS;
	p->rekey_timeout = WG_REKEY_TIMEOUT_NS;
	p->rekey_timeout_jitter_max = WG_REKEY_TIMEOUT_JITTER_MAX_NS;
	p->keepalive_timeout = WG_KEEPALIVE_TIMEOUT_NS;
	p->zero_keys_after = WG_ZERO_KEYS_AFTER_NS;
	p->rekey_after_messages = WG_REKEY_AFTER_MESSAGES;
	p->reject_after_messages = WG_REJECT_AFTER_MESSAGES;
	p->under_load_handshakes = WG_UNDER_LOAD_QUEUE_THRESHOLD;
	p->under_load_window = WG_UNDER_LOAD_AFTER_TIME_NS;
	p->under_load_hold = WG_UNDER_LOAD_AFTER_TIME_NS;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > WG_TIMER_OFF - b ? WG_TIMER_OFF - 1 : a + b;
}

/* "birth + age <= now", as the Linux module's wg_birthdate_has_expired. */
static bool expired(uint64_t birth, uint64_t age, uint64_t now)
{
	return birth <= now && now - birth >= age;
}

static uint64_t jitter(const struct wg_timer_params *p)
{
	uint64_t max = p->rekey_timeout_jitter_max;
	if (max == 0)
		return 0;
	uint64_t r;
	randombytes_buf(&r, sizeof(r));
	return r % max;
}

void wg_timers_init(struct wg_timers *t, const struct wg_timer_params *params,
		    uint64_t persistent_keepalive_interval)
{
	memset(t, 0, sizeof(*t));
	t->params = params;
	t->persistent_keepalive_interval = persistent_keepalive_interval;
	t->last_sent_handshake = WG_TIMER_OFF;
	wg_timers_stop(t);
}

void wg_timers_stop(struct wg_timers *t)
{
	t->retransmit_handshake = WG_TIMER_OFF;
	t->send_keepalive = WG_TIMER_OFF;
	t->new_handshake = WG_TIMER_OFF;
	t->zero_key_material = WG_TIMER_OFF;
	t->persistent_keepalive = WG_TIMER_OFF;
	t->need_another_keepalive = false;
	t->keepalive_again = false;
}

/* After an authenticated data packet is sent. */
void wg_timers_data_sent(struct wg_timers *t, uint64_t now)
{
	const struct wg_timer_params *p = t->params;
	if (t->new_handshake == WG_TIMER_OFF)
		t->new_handshake =
			add_sat(now, p->keepalive_timeout + p->rekey_timeout + jitter(p));
}

/* After an authenticated data packet is received. */
void wg_timers_data_received(struct wg_timers *t, uint64_t now)
{
	if (t->send_keepalive == WG_TIMER_OFF)
		t->send_keepalive = add_sat(now, t->params->keepalive_timeout);
	else
		t->need_another_keepalive = true;
}

/* After any authenticated packet is sent: keepalive, data or handshake. */
void wg_timers_any_authenticated_packet_sent(struct wg_timers *t, uint64_t now)
{
	t->send_keepalive = WG_TIMER_OFF;
	/* Data that arrived while the keepalive timer was pending gets one more
	 * keepalive; it is armed after the first one went out, which the
	 * reference implementations intend but let their asynchronous send
	 * cancel. */
	if (t->keepalive_again) {
		t->keepalive_again = false;
		t->send_keepalive = add_sat(now, t->params->keepalive_timeout);
	}
}

/* After any authenticated packet is received: keepalive, data or handshake. */
void wg_timers_any_authenticated_packet_received(struct wg_timers *t, uint64_t now)
{
	t->new_handshake = WG_TIMER_OFF;
}

/* Before an authenticated packet is sent or after one is received. */
void wg_timers_any_authenticated_packet_traversal(struct wg_timers *t, uint64_t now)
{
	if (t->persistent_keepalive_interval)
		t->persistent_keepalive = add_sat(now, t->persistent_keepalive_interval);
}

/* After an initiation is sent. */
void wg_timers_handshake_initiated(struct wg_timers *t, uint64_t now)
{
	t->last_sent_handshake = now;
	t->retransmit_handshake = add_sat(now, t->params->rekey_timeout + jitter(t->params));
}

/* After a response is sent. Like an initiation it holds back new
 * initiations for rekey_timeout: the responder's keypair waits for the
 * initiator's first packet, and data queued meanwhile must not start a
 * crossing handshake (Linux send.c wg_packet_send_handshake_response and
 * wireguard-go SendHandshakeResponse set last_sent_handshake too). Nothing
 * is retransmitted: retrying is the initiator's job. */
void wg_timers_handshake_response_sent(struct wg_timers *t, uint64_t now)
{
	t->last_sent_handshake = now;
}

/* After a response is consumed, or the first transport packet under a
 * responder's new keypair confirmed it. */
void wg_timers_handshake_complete(struct wg_timers *t, uint64_t now)
{
	t->retransmit_handshake = WG_TIMER_OFF;
	t->handshake_attempts = 0;
	t->sent_lastminute_handshake = false;
}

/* After session keys are derived: before sending a response, or after
 * consuming one. */
void wg_timers_session_derived(struct wg_timers *t, uint64_t now)
{
	t->zero_key_material = add_sat(now, t->params->zero_keys_after);
}

void wg_timers_persistent_keepalive(struct wg_timers *t, uint64_t interval, uint64_t now)
{
	t->persistent_keepalive_interval = interval;
	t->persistent_keepalive = interval ? add_sat(now, interval) : WG_TIMER_OFF;
}

bool wg_timers_initiation_allowed(struct wg_timers *t, bool is_retry, uint64_t now)
{
	if (!is_retry)
		t->handshake_attempts = 0;
	return t->last_sent_handshake == WG_TIMER_OFF ||
	       expired(t->last_sent_handshake, t->params->rekey_timeout, now);
}

unsigned wg_timers_expire(struct wg_timers *t, uint64_t now)
{
	const struct wg_timer_params *p = t->params;
	unsigned actions = 0;

	if (t->retransmit_handshake <= now) {
		t->retransmit_handshake = WG_TIMER_OFF;
		uint64_t max_attempts =
			p->rekey_timeout ? p->rekey_attempt_time / p->rekey_timeout : 0;
		if (t->handshake_attempts > max_attempts) {
			/* Give up: no more packets wait for a keypair, and
			 * whatever a partial exchange left is wiped later. */
			t->send_keepalive = WG_TIMER_OFF;
			actions |= WG_TIMER_GIVE_UP;
			if (t->zero_key_material == WG_TIMER_OFF)
				t->zero_key_material = add_sat(now, p->zero_keys_after);
		} else {
			t->handshake_attempts++;
			actions |= WG_TIMER_RETRY_HANDSHAKE;
		}
	}
	if (t->new_handshake <= now) {
		t->new_handshake = WG_TIMER_OFF;
		actions |= WG_TIMER_NEW_HANDSHAKE;
	}
	if (t->send_keepalive <= now) {
		t->send_keepalive = WG_TIMER_OFF;
		actions |= WG_TIMER_SEND_KEEPALIVE;
		if (t->need_another_keepalive) {
			t->need_another_keepalive = false;
			t->keepalive_again = true;
		}
	}
	if (t->persistent_keepalive <= now) {
		t->persistent_keepalive = WG_TIMER_OFF;
		if (t->persistent_keepalive_interval)
			actions |= WG_TIMER_PERSISTENT_KEEPALIVE;
	}
	if (t->zero_key_material <= now) {
		t->zero_key_material = WG_TIMER_OFF;
		actions |= WG_TIMER_ZERO_KEYS;
	}
	return actions;
}

uint64_t wg_timers_next(const struct wg_timers *t)
{
	uint64_t n = t->retransmit_handshake;
	if (t->send_keepalive < n)
		n = t->send_keepalive;
	if (t->new_handshake < n)
		n = t->new_handshake;
	if (t->zero_key_material < n)
		n = t->zero_key_material;
	if (t->persistent_keepalive < n)
		n = t->persistent_keepalive;
	return n;
}

bool wg_timers_keypair_can_send(const struct wg_timer_params *p, uint64_t birth, uint64_t counter,
				uint64_t now)
{
	return !expired(birth, p->reject_after_time, now) && counter < p->reject_after_messages;
}

bool wg_timers_keypair_can_receive(const struct wg_timer_params *p, uint64_t birth, uint64_t now)
{
	return !expired(birth, p->reject_after_time, now);
}

bool wg_timers_rekey_on_send(const struct wg_timer_params *p, bool initiator, uint64_t birth,
			     uint64_t counter, uint64_t now)
{
	return counter > p->rekey_after_messages ||
	       (initiator && expired(birth, p->rekey_after_time, now));
}

bool wg_timers_rekey_on_receive(struct wg_timers *t, bool initiator, uint64_t birth, uint64_t now)
{
	const struct wg_timer_params *p = t->params;
	if (t->sent_lastminute_handshake || !initiator)
		return false;
	uint64_t age = p->reject_after_time - p->keepalive_timeout - p->rekey_timeout;
	if (p->reject_after_time < p->keepalive_timeout + p->rekey_timeout)
		age = 0;
	if (!expired(birth, age, now))
		return false;
	t->sent_lastminute_handshake = true;
	return true;
}
