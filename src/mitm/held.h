/* Breakpoints: the registry of messages held by a breakpoint rule
 * (docs/rules.md, "Breakpoints"), one per relay.
 *
 * A protocol layer (mitm/h1rw.h today; an HTTP/2 layer registers one item
 * per stream the same way) holds a request before it goes upstream or a
 * response before it reaches the client, and registers it here with a
 * description (what the API lists) and two callbacks: release (as it is,
 * or with edits) and kill. The registry gives it an id and a deadline;
 * whoever calls held_release / held_kill / held_expire reaches the layer
 * through those callbacks, after the item has left the registry (so a
 * callback may hold a new item at once). A layer that lets go of an item
 * itself (its connection closed) calls held_remove.
 *
 * Sans-IO: time comes in as milliseconds of a monotonic clock (the caller
 * runs a timer and calls held_expire); events go out through a callback.
 * Bounded: at most `max` items; edits are checked and bounded by
 * held_edits_parse. Loop thread only. */
#ifndef WGMITM_MITM_HELD_H
#define WGMITM_MITM_HELD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mitm/httpflow.h"

#define HELD_DEFAULT_MAX 256
#define HELD_DEFAULT_TIMEOUT_MS (300u * 1000)
#define HELD_MAX_TIMEOUT_MS (86400u * 1000)
#define HELD_PREVIEW 4096              /* body bytes shown in the list */
#define HELD_MAX_EDIT_BODY (4u << 20)  /* a body given in edits */
#define HELD_MAX_EDIT_HEADERS 256      /* header entries given in edits */
#define HELD_MAX_EDIT_TARGET 8192      /* a new request target */
#define HELD_MAX_EDIT_JSON (16u << 20) /* bytes of the edits' JSON text */

enum held_phase { HELD_REQUEST = 1, HELD_RESPONSE = 2 };

/* What a release changes; each part absent keeps the message's own.
 * Applied in this order: headers (the whole list), remove_headers,
 * set_headers, then the body (Content-Length follows it). */
struct held_edits {
	char method[32]; /* "" keeps; request only */
	char *path;      /* the request target; NULL keeps */
	int status;      /* 0 keeps; response only (100-599) */
	bool has_headers;
	struct http_headers headers; /* replaces every header */
	struct http_headers set;     /* each replaces all of its name, or is added */
	char **remove;               /* names, nremove of them */
	size_t nremove;
	bool has_body;
	uint8_t *body;
	size_t body_len;
};

/* Parses the JSON edits of a release (untrusted: the API's request body):
 *   {"method": "POST", "path": "/x?y", "status": 201,
 *    "headers": [["Name", "value"], ...], "set_headers": {"Name": "value"},
 *    "remove_headers": ["Name"], "body": "text" | "body_base64": "..."}
 * for `phase` (method and path are for requests, status for responses).
 * NULL or {} is no edit. 0, or -1 with `why` naming the field. */
int held_edits_parse(const json_t *j, enum held_phase phase, struct held_edits *e, char *why,
		     size_t whylen);
void held_edits_free(struct held_edits *e);
/* Whether the edits change anything. */
bool held_edits_any(const struct held_edits *e);
/* The header edits done to `h` in place. 0 or -ENOMEM / -E2BIG. */
int held_edits_apply_headers(const struct held_edits *e, struct http_headers *h);

/* A layer's callbacks for one item; `ctx` is the one given to held_add.
 * Called once at most, after the item left the registry; edits NULL: as
 * it is. */
struct held_item_ops {
	void (*release)(void *ctx, uint64_t id, const struct held_edits *edits);
	void (*kill)(void *ctx, uint64_t id);
};

struct held_config {
	size_t max;          /* items at once; 0: HELD_DEFAULT_MAX */
	uint32_t timeout_ms; /* 0: HELD_DEFAULT_TIMEOUT_MS */
	/* An item was held, released, edited, killed, timed out, or dropped
	 * (its connection closed): `what` is "held", "released", "killed",
	 * "timeout" or "closed", `item` its description (borrowed). NULL:
	 * none. */
	void (*event)(void *ctx, const char *what, const json_t *item);
	void *ctx;
};

struct held;

struct held *held_new(const struct held_config *cfg);
/* Every item left is dropped without a callback (their layers are gone). */
void held_free(struct held *h);

/* From now on, items held get this delay (0: the default). */
void held_set_timeout(struct held *h, uint32_t ms);
uint32_t held_timeout(const struct held *h);

/* Registers an item. `info` (stolen) describes it: "conn", "peer",
 * "phase", "proto", "method", "url", "status", "headers", "body", "rule",
 * ...; the registry adds "id", "held_since", "deadline". The new id
 * (never 0), or 0 when the registry is full (info is freed). */
uint64_t held_add(struct held *h, json_t *info, const struct held_item_ops *ops, void *ctx,
		  uint64_t now_ms);
/* The layer let go of the item itself (`why`: "closed", ...): it leaves
 * without a callback. No-op for an unknown id. */
void held_remove(struct held *h, uint64_t id, const char *why);

/* Releases an item, with edits (JSON as for held_edits_parse; NULL: as
 * it is). 0; -ENOENT no such item; -EINVAL bad edits (why says which
 * field; the item stays held). */
int held_release(struct held *h, uint64_t id, const json_t *edits, char *why, size_t whylen);
/* Kills an item. 0 or -ENOENT. */
int held_kill(struct held *h, uint64_t id);
/* Items past their deadline are released as they are ("timeout"
 * events). Returns the next deadline (0: none). */
uint64_t held_expire(struct held *h, uint64_t now_ms);

/* Every item, oldest first (a new array); one item (a new reference) or
 * NULL. */
json_t *held_list(const struct held *h);
json_t *held_get(const struct held *h, uint64_t id);
size_t held_count(const struct held *h);

#endif
