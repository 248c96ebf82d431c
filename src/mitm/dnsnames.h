/* The names the tunnel's DNS answered, per peer: which name a peer looked
 * up for an address it then connects to. The relay asks it for the
 * tunnel's flows, which arrive by address only (a parent proxy is chosen
 * by the name, and asked for it).
 *
 * Bounded (a fixed table, the oldest entry of a slot's bucket replaced)
 * and keyed with SipHash: names and addresses come from DNS answers,
 * which an upstream controls. Entries last the answer's TTL, at least
 * DNSNAMES_MIN_TTL_S and at most DNSNAMES_MAX_TTL_S. Loop thread only. */
#ifndef WGMITM_MITM_DNSNAMES_H
#define WGMITM_MITM_DNSNAMES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNSNAMES_SLOTS 2048
#define DNSNAMES_MIN_TTL_S 60
#define DNSNAMES_MAX_TTL_S 3600
#define DNSNAMES_NAME_MAX 253

struct dnsnames;

struct dnsnames *dnsnames_new(void);
void dnsnames_free(struct dnsnames *m);

/* `peer` (NULL: none) looked up `name` and got `addr` (4 or 16 bytes). */
void dnsnames_learn(struct dnsnames *m, const char *peer, const uint8_t *addr, size_t alen,
		    const char *name, uint32_t ttl_s, uint64_t now_s);

/* The name for a flow of `peer` to `dest` (the port is ignored), or NULL;
 * valid until the next learn. */
const char *dnsnames_lookup(const struct dnsnames *m, const char *peer, const struct sockaddr *dest,
			    uint64_t now_s);

#endif
