/* The MCP server (Model Context Protocol, revisions 2025-06-18 and
 * 2025-11-25): JSON-RPC 2.0 messages in, answers out, whatever carries
 * them (`wgmitm mcp` over stdio, or the API's /mcp over streamable HTTP).
 *
 * Every tool is a request to the control API: the session asks its
 * backend (an HTTP client of the running endpoint, or the API's own router
 * in-process) and turns the answer into tool content. Outputs are bounded:
 * lists are pages with a cursor, flows come as outlines, bodies are read
 * by byte range.
 *
 * Version negotiation: a client asking for a revision we speak gets it;
 * any other (older or newer) gets our newest, and the client decides. */
#ifndef WGMITM_CONTROL_MCP_H
#define WGMITM_CONTROL_MCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define MCP_LATEST "2025-11-25"
#define MCP_MAX_TEXT (64u * 1024) /* text returned by one tool call, at most */

/* An answer of the control API. */
struct mcp_api_reply {
	int status;          /* HTTP status; 0: the API could not be reached */
	const char *ctype;   /* Content-Type, or NULL */
	const uint8_t *body; /* valid during the callback */
	size_t len;
	const char *error; /* status 0: why */
};

typedef void (*mcp_api_done)(void *arg, const struct mcp_api_reply *r);

/* The backend: one API request (method, target = path?query, JSON body or
 * NULL); `done` is called exactly once, possibly before this returns. */
struct mcp_backend {
	void (*request)(void *ctx, const char *method, const char *target, const json_t *body,
			mcp_api_done done, void *arg);
	void *ctx;
};

struct mcp_session;

struct mcp_session *mcp_session_new(const struct mcp_backend *be);
void mcp_session_free(struct mcp_session *s);

/* The revision agreed by initialize; NULL before it. */
const char *mcp_session_version(const struct mcp_session *s);

/* Whether `v` is a revision we speak (the MCP-Protocol-Version header). */
bool mcp_version_known(const char *v);

/* One message (a request, a notification, or a batch of them). `reply` is
 * called exactly once with the answer to send (a response, an array of
 * them, or NULL when nothing is to be sent: notifications only); the
 * reference is the callee's to drop. `text` is one message as received:
 * a parse error is answered as JSON-RPC requires. */
typedef void (*mcp_reply_fn)(void *arg, json_t *answer);
void mcp_session_handle(struct mcp_session *s, const char *text, size_t len, mcp_reply_fn reply,
			void *arg);

/* The tools as tools/list returns them (for documentation and tests). */
json_t *mcp_tools_json(void);

#endif
