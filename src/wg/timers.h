/* The whitepaper's timers (section 6) as event hooks, after the Linux
 * module's timers.c. Sans-IO: a timer is a deadline in monotonic nanoseconds
 * stored inside struct wg_timers (itself inside the peer), so arming one
 * allocates nothing. The owner calls the hooks when events happen, calls
 * wg_timers_expire() when wg_timers_next() is due, and performs the actions
 * it returns (the timers never send anything themselves).
 *
 * Every time constant comes from struct wg_timer_params so a test can shrink
 * them (e.g. rekey after 5 s); wg_timer_params_default() gives the
 * whitepaper's values. */
#ifndef WGMITM_WG_TIMERS_H
#define WGMITM_WG_TIMERS_H

#include <stdbool.h>
#include <stdint.h>

#include "wg/messages.h"

#define WG_TIMER_OFF UINT64_MAX

struct wg_timer_params {
	uint64_t rekey_after_time;         /* 120 s: initiator rekeys on send */
	uint64_t reject_after_time;        /* 180 s: keypair unusable */
	uint64_t rekey_attempt_time;       /* 90 s: give up retransmitting */
	uint64_t rekey_timeout;            /* 5 s: handshake retransmit */
	uint64_t rekey_timeout_jitter_max; /* 333 ms: random extra on retransmit */
	uint64_t keepalive_timeout;        /* 10 s: passive keepalive */
	uint64_t zero_keys_after;          /* 3 * reject_after_time */
	uint64_t rekey_after_messages;     /* 2^60 */
	uint64_t reject_after_messages;    /* 2^64 - 2^13 - 1 */
	/* Load detection for cookie replies (see device.h). */
	uint32_t under_load_handshakes; /* handshake messages per window */
	uint64_t under_load_window;     /* 1 s */
	uint64_t under_load_hold;       /* 1 s after load was last seen */
};

void wg_timer_params_default(struct wg_timer_params *p);

/* Actions returned by wg_timers_expire(), to be performed by the owner in
 * this order. */
enum wg_timer_action {
	/* Retransmit the initiation (it counted one more attempt). */
	WG_TIMER_RETRY_HANDSHAKE = 1u << 0,
	/* Attempts exhausted: drop the packets waiting for a session. */
	WG_TIMER_GIVE_UP = 1u << 1,
	/* Data was sent but nothing came back: start a new handshake. */
	WG_TIMER_NEW_HANDSHAKE = 1u << 2,
	/* Data was received and nothing sent since: send an empty packet. */
	WG_TIMER_SEND_KEEPALIVE = 1u << 3,
	/* Persistent keepalive interval passed without any traffic. */
	WG_TIMER_PERSISTENT_KEEPALIVE = 1u << 4,
	/* No new session for zero_keys_after: wipe handshake and keypairs. */
	WG_TIMER_ZERO_KEYS = 1u << 5,
};

struct wg_timers {
	const struct wg_timer_params *params; /* not owned; outlives the timers */
	uint64_t retransmit_handshake;
	uint64_t send_keepalive;
	uint64_t new_handshake;
	uint64_t zero_key_material;
	uint64_t persistent_keepalive;
	uint64_t persistent_keepalive_interval; /* 0 = off */
	uint64_t last_sent_handshake;           /* WG_TIMER_OFF = never */
	unsigned handshake_attempts;
	bool need_another_keepalive;
	bool keepalive_again; /* re-arm send_keepalive after the next send */
	bool sent_lastminute_handshake;
};

void wg_timers_init(struct wg_timers *t, const struct wg_timer_params *params,
		    uint64_t persistent_keepalive_interval);
/* Disarm every timer (peer removal, device down). */
void wg_timers_stop(struct wg_timers *t);

/* Event hooks (see the block comment in timers.c for what each arms). */
void wg_timers_data_sent(struct wg_timers *t, uint64_t now);
void wg_timers_data_received(struct wg_timers *t, uint64_t now);
void wg_timers_any_authenticated_packet_sent(struct wg_timers *t, uint64_t now);
void wg_timers_any_authenticated_packet_received(struct wg_timers *t, uint64_t now);
void wg_timers_any_authenticated_packet_traversal(struct wg_timers *t, uint64_t now);
void wg_timers_handshake_initiated(struct wg_timers *t, uint64_t now);
void wg_timers_handshake_response_sent(struct wg_timers *t, uint64_t now);
void wg_timers_handshake_complete(struct wg_timers *t, uint64_t now);
void wg_timers_session_derived(struct wg_timers *t, uint64_t now);
void wg_timers_persistent_keepalive(struct wg_timers *t, uint64_t interval, uint64_t now);

/* Whether a new initiation may be sent now: none within rekey_timeout of
 * the last initiation or response sent. A non-retry (fresh) request resets
 * the attempt count. */
bool wg_timers_initiation_allowed(struct wg_timers *t, bool is_retry, uint64_t now);

/* Fire what is due; returns a mask of enum wg_timer_action. */
unsigned wg_timers_expire(struct wg_timers *t, uint64_t now);
/* The earliest armed deadline, WG_TIMER_OFF if none. */
uint64_t wg_timers_next(const struct wg_timers *t);

/* Keypair age and use rules (whitepaper 6.2), pure. `birth` is when the
 * keypair was derived; `counter` the next sending counter. */
/* May we still send with it? (REJECT_AFTER_TIME / REJECT_AFTER_MESSAGES) */
bool wg_timers_keypair_can_send(const struct wg_timer_params *p, uint64_t birth, uint64_t counter,
				uint64_t now);
/* May we still accept packets under it? (REJECT_AFTER_TIME) */
bool wg_timers_keypair_can_receive(const struct wg_timer_params *p, uint64_t birth, uint64_t now);
/* After sending: rekey past REKEY_AFTER_MESSAGES, or, for the initiator of the
 * keypair, past REKEY_AFTER_TIME. */
bool wg_timers_rekey_on_send(const struct wg_timer_params *p, bool initiator, uint64_t birth,
			     uint64_t counter, uint64_t now);
/* After receiving data: the initiator of the current keypair rekeys once when
 * it is REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT old, so a peer
 * that only receives still gets a fresh session before the old one dies.
 * Returns true at most once until the next completed handshake. */
bool wg_timers_rekey_on_receive(struct wg_timers *t, bool initiator, uint64_t birth, uint64_t now);

#endif
