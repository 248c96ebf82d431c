/* The home directory: the endpoint's key, its address pools and its peers.
 *
 *   HOME/server.json  private key, pools, listen port         (0600)
 *   HOME/peers.json   every peer with its own key pair         (0600)
 *   HOME/.lock        flock()ed around read-modify-write
 *
 * Files are replaced atomically (temp file, fsync, rename, fsync of the
 * directory), so a reader never sees half a file. A file that does not parse
 * or holds a bad value is an error naming the file and the field; it is
 * never overwritten. */
#ifndef WGMITM_STATE_H
#define WGMITM_STATE_H

#include "common/addrpool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_KEY_LEN 32
#define STATE_NAME_MAX 32
#define STATE_LIST_MAX 1024

#define STATE_DEFAULT_POOL4 "10.66.77.0/24"
#define STATE_DEFAULT_PORT 51820
#define STATE_DEFAULT_MTU 1420
#define STATE_DEFAULT_KEEPALIVE 25

struct state_peer {
	char name[STATE_NAME_MAX + 1];
	uint8_t private_key[STATE_KEY_LEN];
	uint8_t public_key[STATE_KEY_LEN];
	uint8_t preshared_key[STATE_KEY_LEN];
	struct in_addr addr4;
	struct in6_addr addr6;
	char endpoint[300];                /* "" = detect when rendering */
	char allowed_ips[STATE_LIST_MAX];  /* what the client routes into the tunnel */
	char include_apps[STATE_LIST_MAX]; /* Android IncludedApplications */
	char exclude_apps[STATE_LIST_MAX]; /* Android ExcludedApplications */
	uint16_t mtu;
	uint16_t keepalive; /* client PersistentKeepalive, 0 = off */
	int64_t created;    /* unix seconds */
};

struct state {
	char home[4096];
	uint8_t private_key[STATE_KEY_LEN];
	uint8_t public_key[STATE_KEY_LEN];
	struct addrpool pool;
	uint16_t port; /* the port clients are told to use */
	struct state_peer *peers;
	size_t npeers;
	int lock_fd;
};

/* The home directory: --home, else $WGMITM_HOME, else ~/.wgmitm. */
int state_home_resolve(const char *override, char *out, size_t outlen);

/* Opens HOME, creating it (0700) and server.json when `create` is set.
 * Loads peers.json when present. On error returns -errno or -EINVAL and
 * writes a message naming the file into err. */
int state_open(struct state *st, const char *home, bool create, char *err, size_t errlen);
void state_close(struct state *st);

/* Re-reads peers.json only (for a running endpoint). */
int state_reload_peers(struct state *st, char *err, size_t errlen);

/* Exclusive lock around read-modify-write by concurrent CLI invocations. */
int state_lock(struct state *st, char *err, size_t errlen);
void state_unlock(struct state *st);

int state_save_peers(const struct state *st, char *err, size_t errlen);

struct state_peer *state_peer_find(const struct state *st, const char *name);
/* Appends a peer with fresh keys and the next free addresses. The caller
 * fills the optional fields afterwards and saves. */
int state_peer_create(struct state *st, const char *name, struct state_peer **out, char *err,
		      size_t errlen);
int state_peer_remove(struct state *st, const char *name);

bool state_name_valid(const char *name);

/* Base64 of a 32-byte key, and back (exactly 32 bytes or -EINVAL). */
void state_key_to_base64(const uint8_t key[STATE_KEY_LEN], char out[45]);
int state_key_from_base64(const char *b64, uint8_t key[STATE_KEY_LEN]);
/* X25519 public key of a private key (clamped as WireGuard does). */
void state_public_key(const uint8_t private_key[STATE_KEY_LEN], uint8_t public_key[STATE_KEY_LEN]);
void state_generate_private_key(uint8_t private_key[STATE_KEY_LEN]);

#endif
