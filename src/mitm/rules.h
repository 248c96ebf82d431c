/* Active interception rules (docs/rules.md): what to change, answer, block,
 * slow down or hold in the HTTP traffic of the tunnel, and the tunnel's DNS
 * overrides.
 *
 * A rule is a JSON object (the same through the API's intercept_rules,
 * HOME/rules.json and, translated, run's mitmproxy-style options):
 *
 *   {"id": "r1", "enabled": true, "direction": "request",
 *    "match": "~d api\\.example\\.com",                    (optional)
 *    "conditions": {"host_pattern": "...", "path_pattern": "...",
 *                   "methods": ["GET"], "header_match": {"Name": "regex"}},
 *    "device": "phone",                                    (optional)
 *    "actions": [{"type": "set_header", "name": "X", "value": "1"}, ...]}
 *
 * The match is the filter expression (flows/filter.h) and every condition,
 * ANDed; no match and no conditions matches everything. A rule without
 * "actions" is a breakpoint (the capture-proxy API's intercept rule).
 *
 * Order: for each message, the enabled rules whose direction covers it and
 * that match are taken in list order. Their transforms (headers, body,
 * status, delay, throttle) all apply, in order; of their terminal actions
 * (mock, block, redirect, breakpoint) the first one wins and later ones are
 * ignored (a mock or block ends the transforms of the request: nothing
 * goes upstream).
 *
 * Compiled sets are immutable and reference-counted: a connection keeps
 * the set it started with while a reload installs a new one. Loop thread
 * only (the filters hold PCRE2 match data). */
#ifndef WGMITM_MITM_RULES_H
#define WGMITM_MITM_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "mitm/httpflow.h"

struct filter;

#define RULES_MAX 256        /* rules in one set */
#define RULES_MAX_ACTIONS 16 /* actions of one rule */
#define RULES_MAX_CONDS 16   /* header_match entries, methods */
#define RULES_ID_LEN 64      /* longest id + NUL */
#define RULES_MAX_TEXT 4096  /* a regex, name, value or replacement */
#define RULES_MAX_INLINE_BODY (1u << 20)
#define RULES_MAX_FILE_BODY (16u << 20) /* a mock's body_file (map local) */
#define RULES_DNS_MAX 64                /* DNS overrides */
#define RULES_DNS_MAX_ADDRS 8           /* addresses of one override */
#define RULES_MAX_DELAY_MS 600000
#define RULES_FILE "rules.json"

enum rule_dir { RULE_REQUEST = 1, RULE_RESPONSE = 2, RULE_BOTH = 3 };

enum rule_action_kind {
	/* transforms */
	RA_SET_HEADER,
	RA_ADD_HEADER,
	RA_REMOVE_HEADER,
	RA_REPLACE_BODY, /* regex → replacement, or the whole body */
	RA_SET_JSON,     /* one field of a JSON body, by path */
	RA_SET_STATUS,
	RA_DELAY,
	RA_THROTTLE,
	/* terminal */
	RA_MOCK,
	RA_BLOCK,
	RA_REDIRECT,
	RA_BREAKPOINT,
	/* WebSocket messages after the upgrade (never part of an HTTP plan) */
	RA_WS_REPLACE,    /* a transform: regex → replacement in a text message */
	RA_WS_DROP,       /* terminal: the message goes nowhere */
	RA_WS_BREAKPOINT, /* terminal: the message is held */
};

struct rule_header {
	char *name, *value;
};

struct rule_action {
	enum rule_action_kind kind;
	enum rule_dir on;   /* which messages: request, response or both */
	char *name, *value; /* headers */
	void *re;           /* pcre2_code *: body regex, redirect url_regex */
	char *replacement;  /* replace_body, redirect url_regex */
	char **path;        /* set_json: the keys ("a.b.0" split), npath of them */
	size_t npath;
	json_t *json;                /* set_json: the value */
	int status;                  /* set_status, mock, block (0 or 444: reset) */
	uint32_t ms;                 /* delay */
	uint64_t rate;               /* throttle: bytes/s */
	struct rule_header *headers; /* mock */
	size_t nheaders;
	uint8_t *body; /* mock, replace_body whole: owned */
	size_t body_len;
	bool has_body;
	char *scheme, *host, *rpath; /* redirect parts (NULL: kept) */
	uint16_t port;               /* redirect (0: kept, or the scheme's) */
};

struct rule {
	char id[RULES_ID_LEN];
	bool enabled;
	enum rule_dir dir;
	struct filter *filter; /* NULL: none */
	void *host_re, *path_re;
	char *methods[RULES_MAX_CONDS];
	size_t nmethods;
	struct {
		char *name;
		void *re;
	} hdr[RULES_MAX_CONDS];
	size_t nhdr;
	char *device; /* NULL: every peer */
	struct rule_action actions[RULES_MAX_ACTIONS];
	size_t nactions;
	bool has_request, has_response; /* an HTTP action for that side */
	void *msg_re;                   /* conditions.message_pattern (NULL: none) */
	enum rule_dir ws_dir;           /* directions its ws_ actions cover (0: none) */
};

struct rules_dns {
	char name[256];  /* lowercase, no final dot; "*.x" for a wildcard */
	char device[64]; /* "" every peer */
	struct sockaddr_storage addrs[RULES_DNS_MAX_ADDRS];
	size_t naddrs;
};

struct ruleset {
	unsigned refs;
	struct rule *v;
	size_t n;
	struct rules_dns dns[RULES_DNS_MAX];
	size_t ndns;
	size_t enabled_http; /* enabled rules (0: every connection on the fast path) */
};

/* Where a parse failed: the field's path (as given by the caller, then
 * ".actions[1].status") and why. */
struct rules_error {
	char field[160];
	char message[256];
};

/* Compiles rules (a JSON array of rule objects) and DNS overrides (an array
 * of {"name", "addresses", "device"}, may be NULL). `path` names the array
 * in errors ("intercept_rules"). Ids must be unique. A new set with one
 * reference, or NULL with err set. */
struct ruleset *ruleset_new(const json_t *rules, const char *path, const json_t *dns,
			    const char *dns_path, struct rules_error *err);
/* Checks one rule object (what ruleset_new checks for each). 0 or -1. */
int rules_check(const json_t *rule, const char *path, struct rules_error *err);
/* Checks one DNS override object. 0 or -1. */
int rules_check_dns(const json_t *o, const char *path, struct rules_error *err);
struct ruleset *ruleset_ref(struct ruleset *rs);
void ruleset_unref(struct ruleset *rs);

/* run's mitmproxy-style options, as a rule (or, for "dns-override", a DNS
 * override) JSON object: `opt` is the option's name without "--"
 * ("map-remote", "map-local", "modify-headers", "modify-body",
 * "block-list", "intercept", "dns-override"), `n` numbers the rule ids
 * ("modify-headers-2"). A new object, or NULL with err naming the option
 * and the field ("--map-remote: URL-REGEX: ..."). */
json_t *rules_from_option(const char *opt, const char *value, unsigned n, struct rules_error *err);

/* Whether some enabled rule may apply to a connection of `peer` (NULL:
 * none) to `host` (the SNI; NULL: unknown, e.g. plain HTTP before its
 * Host header): decided from the rules' devices and host conditions
 * (host_pattern, ~d in the filter); false keeps the connection on the
 * byte-for-byte path. */
bool ruleset_may_apply(const struct ruleset *rs, const char *peer, const char *host);

/* A message as rules see it. Request side fields are always set; status
 * and resp_headers in the response phase. */
struct rules_msg {
	const char *peer;   /* NULL: none */
	const char *scheme; /* "https", "http" */
	const char *host;   /* lowercase, without the port */
	const char *authority;
	const char *path; /* as sent, with the query */
	const char *method;
	const struct http_headers *req_headers;
	int status; /* 0: the request phase */
	const struct http_headers *resp_headers;
};

#define RULES_MAX_MATCHED 32

/* What the matching rules do to one message. */
struct rules_plan {
	const struct rule *matched[RULES_MAX_MATCHED]; /* in order */
	size_t nmatched;
	const struct rule_action *transforms[RULES_MAX_MATCHED * 4];
	size_t ntransforms;
	const struct rule_action *terminal; /* the first one; NULL: none */
	const struct rule *terminal_rule;
	bool needs_body; /* a transform rewrites the body */
};

/* Fills `plan` for `phase` (RULE_REQUEST or RULE_RESPONSE). Returns
 * whether any rule matched. */
bool rules_plan_for(const struct ruleset *rs, enum rule_dir phase, const struct rules_msg *m,
		    struct rules_plan *plan);

/* The slowest throttle of the plan's transforms for `phase` (bytes/s); 0:
 * none. */
uint64_t rules_plan_rate(const struct rules_plan *plan, enum rule_dir phase);

/* The header edits of `plan` that apply on `phase`, done to `h` in order.
 * 0 or -ENOMEM / -E2BIG. */
int rules_apply_headers(const struct rules_plan *plan, enum rule_dir phase, struct http_headers *h);
/* The body edits of `plan` on `phase` applied to body: a new malloc'd body
 * in *out (*outlen), or 0 with *out NULL when nothing changed. The result
 * is at most `cap` bytes (-E2BIG past it). The body is what is on the
 * wire: a compressed body (Content-Encoding other than identity) is left
 * as it is (returns -EPROTO). */
int rules_apply_body(const struct rules_plan *plan, enum rule_dir phase, const uint8_t *body,
		     size_t len, size_t cap, uint8_t **out, size_t *outlen);
/* Single-action helpers (for the tests, the rewriter). */
int rules_body_replace(const struct rule_action *a, const uint8_t *in, size_t len, size_t cap,
		       uint8_t **out, size_t *outlen);
int rules_body_set_json(const struct rule_action *a, const uint8_t *in, size_t len, size_t cap,
			uint8_t **out, size_t *outlen);

/* A redirect's new URL for scheme://authority/path: writes scheme, host,
 * port and path (path with its query) into the buffers. 0, or -1 when the
 * result is not a usable http(s) URL. */
int rules_redirect_target(const struct rule_action *a, const char *scheme, const char *authority,
			  const char *path, char *out_scheme, size_t schemelen, char *out_host,
			  size_t hostlen, uint16_t *out_port, char *out_path, size_t pathlen);

/* The "rules" note of an exchange's record (docs/rules.md): the action's
 * name, one more entry of "actions", and the rules of `plan` that matched
 * ("matched", each once) with its transforms on `phase` ("SIDE:type name"). */
const char *rules_action_name(enum rule_action_kind k);
void rules_note_action(json_t *note, const char *what);
void rules_note_plan(json_t *note, const struct rules_plan *plan, enum rule_dir phase,
		     const char *side);

/* WebSocket message rules (docs/rules.md, "WebSocket messages"). The
 * rules with ws_ actions whose match and conditions (but message_pattern)
 * select a connection's upgrade request `m`, in list order, whatever their
 * direction. Returns whether there is one. */
struct rules_ws {
	const struct rule *v[RULES_MAX_MATCHED];
	size_t n;
};
bool rules_ws_for(const struct ruleset *rs, const struct rules_msg *m, struct rules_ws *out);

/* What the selected rules do to one whole message: `dir` RULE_REQUEST
 * (client to server) or RULE_RESPONSE; `text` for a text message (a
 * message_pattern matches text messages only, ws_replace edits only them). */
struct rules_ws_plan {
	const struct rule *matched[RULES_MAX_MATCHED];
	size_t nmatched;
	const struct rule_action *edits[RULES_MAX_MATCHED * 4]; /* ws_replace, in order */
	size_t nedits;
	const struct rule_action *terminal; /* ws_drop or ws_breakpoint; NULL: none */
	const struct rule *terminal_rule;
};
bool rules_ws_plan_for(const struct rules_ws *sel, enum rule_dir dir, bool text, const uint8_t *msg,
		       size_t len, struct rules_ws_plan *plan);

/* The addresses of a DNS override for `name` (no final dot, any case) and
 * `peer`: exact names first, then the longest matching wildcard. NULL:
 * none. */
const struct rules_dns *ruleset_dns_lookup(const struct ruleset *rs, const char *name,
					   const char *peer);

#endif
