/* The WireGuard device, sans-IO: our static key, the peers, the index
 * table, handshakes in both roles, cookies under load, transport
 * encryption/decryption, timers. Datagrams come in through
 * wg_device_receive(), go out through ops->send; decrypted inner packets
 * go up through ops->deliver. Time is passed in as monotonic nanoseconds
 * (`now`); the wall clock (TAI64N timestamps) comes from ops->wall_time.
 * Single-threaded: every call on one device from one thread. The ops
 * callbacks must not call back into the device (queue instead: a datagram
 * handed to ops->send is fed to the other side's receive later), nor remove
 * peers.
 *
 * Load (when cookie replies replace handshake processing): more than
 * params.under_load_handshakes (default 128, 1/8 of wireguard-go's 1024-slot
 * queue) initiations/responses with a valid MAC1 received within
 * params.under_load_window (1 s); the state holds for params.under_load_hold
 * (1 s) after load was last seen. Messages with a wrong MAC1 are dropped
 * (WG_DROP_BAD_MAC1) without counting: they cost no Diffie-Hellman, and
 * junk from anywhere must not put a joining peer through a cookie round. Under load, a handshake message without a valid MAC2 gets a
 * cookie reply and nothing else; one with a valid MAC2 passes the
 * per-source rate limiter (20/s, burst 5) before any Diffie-Hellman. As in
 * wireguard-go and the Linux module, the rate limiter only applies under
 * load. MAC1 is always checked before any Diffie-Hellman. */
#ifndef WGMITM_WG_DEVICE_H
#define WGMITM_WG_DEVICE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "wg/endpoint.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/timers.h"

#define WG_DEFAULT_MTU 1420

struct wg_device_ops {
	/* One outgoing UDP datagram; buf is only valid during the call. */
	void (*send)(void *ctx, const struct wg_endpoint *to, const uint8_t *buf, size_t len);
	/* An authenticated, trimmed, source-checked inner IP packet. pkt points
	 * into the datagram passed to wg_device_receive() and may be modified;
	 * valid only during the call. */
	void (*deliver)(void *ctx, struct wg_peer *peer, uint8_t *pkt, size_t len);
	/* Wall clock for TAI64N; NULL = CLOCK_REALTIME. */
	void (*wall_time)(void *ctx, struct timespec *out);
};

/* Drop reasons; one counter each in wg_device_stats.drop. */
enum wg_drop_reason {
	WG_DROP_BAD_SIZE = 0, /* wrong length for its type */
	WG_DROP_BAD_TYPE,     /* unknown type or nonzero reserved bytes */
	WG_DROP_BAD_MAC1,
	WG_DROP_RATELIMITED,          /* under load, valid MAC2, source over its rate */
	WG_DROP_UNDER_LOAD_NO_COOKIE, /* under load without valid MAC2 (a cookie reply was sent) */
	WG_DROP_HANDSHAKE_FAILED,     /* see handshake_failed[] for the noise result */
	WG_DROP_COOKIE_INVALID,       /* a cookie reply that did not decrypt */
	WG_DROP_UNKNOWN_INDEX,        /* receiver index matches nothing of the right kind */
	WG_DROP_KEYPAIR_EXPIRED,      /* past REJECT_AFTER_TIME */
	WG_DROP_REPLAY,
	WG_DROP_DECRYPT_FAILED,
	WG_DROP_BAD_INNER_PACKET,  /* neither IPv4 nor IPv6, or shorter than it claims */
	WG_DROP_SOURCE_MISMATCH,   /* inner source is not the peer's tunnel address */
	WG_DROP_QUEUE_OVERFLOW,    /* oldest packet waiting for a handshake dropped */
	WG_DROP_NO_ENDPOINT,       /* nowhere to send: the peer never reached us */
	WG_DROP_HANDSHAKE_TIMEOUT, /* queued packets dropped after REKEY_ATTEMPT_TIME */
	WG_DROP_TOO_BIG,           /* inner packet over WG_MAX_PLAINTEXT */
	WG_DROP_NO_MEMORY,
	WG_DROP__COUNT
};
const char *wg_drop_reason_str(enum wg_drop_reason r);

#define WG_NOISE_RESULT_COUNT 8

struct wg_device_stats {
	uint64_t rx_datagrams, rx_datagram_bytes; /* everything handed to wg_device_receive */
	uint64_t rx_packets, rx_bytes; /* authenticated transport datagrams (keepalives included) */
	uint64_t tx_packets, tx_bytes; /* transport datagrams sent */
	uint64_t rx_keepalives, tx_keepalives;
	uint64_t rx_inner_bytes; /* delivered inner packet bytes */
	uint64_t initiations_sent, responses_sent;
	uint64_t handshakes_initiator; /* responses consumed, sessions started as initiator */
	uint64_t handshakes_responder; /* sessions confirmed by the initiator's first packet */
	uint64_t cookie_replies_sent, cookie_replies_received;
	uint64_t under_load_events; /* times the device entered the under-load state */
	uint64_t drop[WG_DROP__COUNT];
	uint64_t handshake_failed[WG_NOISE_RESULT_COUNT]; /* indexed by enum wg_noise_result */
};

/* Copies private_key (it is clamped); ops and ctx are kept. NULL on
 * allocation failure or if the crypto cannot be initialised. */
struct wg_device *wg_device_new(const uint8_t private_key[WG_KEY_LEN],
				const struct wg_device_ops *ops, void *ctx);
/* Wipes every key and frees the peers. */
void wg_device_free(struct wg_device *dev);
const uint8_t *wg_device_public_key(const struct wg_device *dev);

struct wg_peer_config {
	uint8_t public_key[WG_KEY_LEN];
	uint8_t preshared_key[WG_KEY_LEN];
	bool has_psk;
	struct in_addr addr4;            /* the peer's /32; INADDR_ANY = none */
	struct in6_addr addr6;           /* the peer's /128; :: = none */
	uint16_t persistent_keepalive_s; /* 0 = off */
	void *user;
};

/* NULL + errno EEXIST on a duplicate public key or address, EINVAL for our
 * own public key, ENOMEM on allocation failure. The peer is owned by the
 * device. */
struct wg_peer *wg_device_peer_add(struct wg_device *dev, const struct wg_peer_config *cfg);
/* Zeroes its keys and frees it; its indices stop matching at once. */
void wg_device_peer_remove(struct wg_device *dev, struct wg_peer *peer);
struct wg_peer *wg_device_peer_by_key(struct wg_device *dev, const uint8_t public_key[WG_KEY_LEN]);
/* The peer whose tunnel address is the inner packet's destination (routing
 * of outgoing packets); NULL if none or not an IP packet. */
struct wg_peer *wg_device_peer_by_dst(struct wg_device *dev, const uint8_t *ip_packet, size_t len);
/* Iteration: first peer, then wg_device_peer_next(); NULL at the end. */
struct wg_peer *wg_device_peer_first(struct wg_device *dev);
struct wg_peer *wg_device_peer_next(struct wg_peer *peer);
size_t wg_device_peer_count(const struct wg_device *dev);

/* One received UDP datagram. buf is modified (decrypted in place). */
void wg_device_receive(struct wg_device *dev, const struct wg_endpoint *from, uint8_t *buf,
		       size_t len, uint64_t now);
/* Encrypts and sends now, or queues (WG_PEER_QUEUE_LEN, oldest dropped)
 * and starts a handshake when there is no usable session. */
void wg_device_send(struct wg_device *dev, struct wg_peer *peer, const uint8_t *ip_packet,
		    size_t len, uint64_t now);
/* Fires due timers; returns the next deadline (UINT64_MAX = none). Also
 * call it after receive/send if the loop needs an exact deadline:
 * wg_device_next_deadline() reads it without firing anything. */
uint64_t wg_device_tick(struct wg_device *dev, uint64_t now);
uint64_t wg_device_next_deadline(const struct wg_device *dev);

/* All time constants and the load threshold; copied. Applies to running
 * timers from their next arming. */
void wg_device_set_timer_params(struct wg_device *dev, const struct wg_timer_params *params);
const struct wg_timer_params *wg_device_timer_params(const struct wg_device *dev);
/* MTU of the tunnel for padding (default WG_DEFAULT_MTU). */
void wg_device_set_mtu(struct wg_device *dev, size_t mtu);
size_t wg_device_mtu(const struct wg_device *dev);

const struct wg_device_stats *wg_device_stats(const struct wg_device *dev);
/* Whether handshake messages currently get cookie replies. */
bool wg_device_under_load(const struct wg_device *dev, uint64_t now);

#endif
