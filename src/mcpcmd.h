/* `wgmitm mcp`: an MCP server on stdin/stdout for coding agents, driving the
 * running endpoint through its control API. */
#ifndef WGMITM_MCPCMD_H
#define WGMITM_MCPCMD_H

/* argv[0] is "mcp". `home` is the --home override or NULL. Returns the
 * exit status: 0 at the end of input, 1 on failure, 2 on a usage error. */
int mcpcmd_main(int argc, char **argv, const char *home);

#endif
