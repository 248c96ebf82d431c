/* `wgmitm mcp`: one JSON-RPC message per line in, one answer per line out
 * (MCP's stdio transport). Logs go to stderr only: stdout is the protocol. */
#include "mcpcmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/apiclient.h"
#include "control/mcp.h"
#include "mitm/replay.h"
#include "state.h"

#define MCPCMD_MAX_LINE (4u << 20)

struct backend {
	struct apiclient api;
	bool have_api;
	char why[512]; /* why there is no API */
	const char *home;
};

static void request(void *ctx, const char *method, const char *target, const json_t *body,
		    mcp_api_done done, void *arg)
{
	struct backend *b = ctx;
	/* The endpoint may have started (or restarted on another port) since. */
	if (apiclient_open(&b->api, b->home, b->why, sizeof(b->why)) == 0)
		b->have_api = true;
	if (!b->have_api) {
		struct mcp_api_reply r = { .status = 0, .error = b->why };
		done(arg, &r);
		return;
	}
	/* A replay answers when it ends: its own bound, and some. */
	size_t tl = strlen(target);
	json_int_t tmo = json_integer_value(json_object_get(body, "timeout_ms"));
	b->api.timeout_ms = tl > 7 && strcmp(target + tl - 7, "/replay") == 0
				    ? (unsigned)(tmo ? tmo : REPLAY_TIMEOUT_MS) + 10000
				    : 30000;
	struct apiclient_reply ar;
	apiclient_request(&b->api, method, target, body, &ar);
	struct mcp_api_reply r = { .status = ar.status,
				   .ctype = ar.ctype[0] ? ar.ctype : NULL,
				   .body = ar.body,
				   .len = ar.len,
				   .error = ar.error };
	done(arg, &r);
	apiclient_reply_free(&ar);
}

static void write_answer(void *arg, json_t *answer)
{
	(void)arg;
	if (!answer)
		return;
	char *line = json_dumps(answer, JSON_COMPACT);
	json_decref(answer);
	if (!line)
		return;
	fputs(line, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	free(line);
}

int mcpcmd_main(int argc, char **argv, const char *home_override)
{
	if (argc > 1) {
		fprintf(stderr, "usage: wgmitm mcp\n(an MCP server on stdio: add it to your "
				"agent as the command `wgmitm mcp`)\n");
		return 2;
	}
	(void)argv;
	char home[4096];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	struct backend b = { .home = home };
	struct mcp_backend be = { .request = request, .ctx = &b };
	struct mcp_session *s = mcp_session_new(&be);
	char *line = malloc(MCPCMD_MAX_LINE);
	if (!s || !line) {
		fprintf(stderr, "wgmitm mcp: out of memory\n");
		free(line);
		mcp_session_free(s);
		return 1;
	}
	while (fgets(line, MCPCMD_MAX_LINE, stdin)) {
		size_t n = strlen(line);
		if (n && line[n - 1] != '\n' && !feof(stdin)) {
			/* Longer than we take: skip the rest, answer the error. */
			int ch;
			while ((ch = getchar()) != EOF && ch != '\n')
				;
			write_answer(NULL, json_pack("{s:s,s:n,s:{s:i,s:s}}", "jsonrpc", "2.0",
						     "id", "error", "code", -32600, "message",
						     "message longer than 4 MiB"));
			continue;
		}
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0)
			continue;
		mcp_session_handle(s, line, n, write_answer, NULL);
	}
	free(line);
	mcp_session_free(s);
	return 0;
}
