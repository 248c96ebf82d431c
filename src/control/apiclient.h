/* A blocking client of the running endpoint's control API, for commands
 * that talk to it (`wgmitm mcp`). It finds the API in HOME/api.json, which
 * `run` writes when the API is up, and sends the token of HOME/api-token. */
#ifndef WGMITM_CONTROL_APICLIENT_H
#define WGMITM_CONTROL_APICLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define APICLIENT_INFO_FILE "api.json"
#define APICLIENT_TOKEN_FILE "api-token"
#define APICLIENT_MAX_BODY (64u << 20) /* answers past this are an error */

struct apiclient {
	char host[256]; /* numeric address */
	unsigned port;
	char token[128];
	unsigned timeout_ms; /* each request, whole */
};

struct apiclient_reply {
	int status; /* 0: no answer; error says why */
	char ctype[128];
	uint8_t *body; /* malloc'd, NUL-terminated (not counted in len) */
	size_t len;
	char error[256];
};

/* Reads HOME/api.json and HOME/api-token. -1 with a message in `err` a
 * person can act on (the endpoint is not running, or its API is off). */
int apiclient_open(struct apiclient *c, const char *home, char *err, size_t errlen);

/* One request (a JSON body or NULL). Returns 0 with out filled (any HTTP
 * status), or -1 with out->error set. apiclient_reply_free afterwards. */
int apiclient_request(const struct apiclient *c, const char *method, const char *target,
		      const json_t *body, struct apiclient_reply *out);
void apiclient_reply_free(struct apiclient_reply *r);

#endif
