/* Credentials checked by an external HTTP endpoint (run --auth-url), for
 * teams whose users live elsewhere: each user/password not in the cache
 * is POSTed as JSON {"user", "password", "via", "client"} to the URL; a
 * 2xx answer allows, 401 and 403 deny, and anything else (another status,
 * no answer within AUTHEXT_TIMEOUT_MS, a connection or TLS failure)
 * denies too and is logged: a broken endpoint lets no one in.
 *
 * Verdicts are cached by a digest of user and password (never the
 * password): allowed for ttl_ok seconds, denied for ttl_denied. At most
 * AUTHEXT_MAX_PENDING checks run at once; past it a check is denied at
 * once (busy). Loop thread only. */
#ifndef WGMITM_LISTEN_AUTHEXT_H
#define WGMITM_LISTEN_AUTHEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define AUTHEXT_TIMEOUT_MS 5000
#define AUTHEXT_MAX_PENDING 64
#define AUTHEXT_CACHE 1024
#define AUTHEXT_DEFAULT_TTL_OK 300
#define AUTHEXT_DEFAULT_TTL_DENIED 30

struct tls_ctx;
struct authext;
struct authext_req;

struct authext_stats {
	uint64_t checks, cache_hits, allowed, denied, failed, busy;
};

/* url: http://HOST[:PORT][/PATH] or https://...; tls verifies an https
 * endpoint as any upstream (NULL: https refused). NULL with a message in
 * err. */
struct authext *authext_new(uv_loop_t *loop, struct tls_ctx *tls, const char *url, uint32_t ttl_ok,
			    uint32_t ttl_denied, char *err, size_t errlen);
/* Pending checks are cancelled (their callbacks never run). NULL: no-op. */
void authext_free(struct authext *a);

enum authext_verdict { AUTHEXT_DENY, AUTHEXT_ALLOW, AUTHEXT_PENDING };

/* A cached verdict, or AUTHEXT_PENDING with *req set: cb(ctx, allowed)
 * runs later, once, unless authext_cancel(*req) runs first. */
enum authext_verdict authext_check(struct authext *a, const char *user, const char *pass,
				   const char *via, const char *client,
				   void (*cb)(void *ctx, bool allowed), void *ctx,
				   struct authext_req **req);
void authext_cancel(struct authext_req *req);

void authext_get_stats(const struct authext *a, struct authext_stats *out);

/* The endpoint's answer so far (its first n bytes): 1 when its head is
 * whole (*status set), 0 when more is needed, -1 when it is not HTTP. */
int authext_parse_answer(const uint8_t *in, size_t n, int *status);

#endif
