/* `wgmitm wrap -- COMMAND`: runs a command in a network namespace of its
 * own (in a user namespace, so no root is needed where the kernel allows
 * it) whose only interface is a TUN device that the endpoint reads into
 * its netstack. Every connection the command makes, from any runtime,
 * is intercepted and recorded like a peer's (peer "wrap"), DNS included;
 * our CA is trusted through the usual runtimes' variables. On exit it
 * prints what the command reached, and passes its exit status through. */
#ifndef WGMITM_WRAPCMD_H
#define WGMITM_WRAPCMD_H

#include "daemon.h"

/* Runs `cmd` (NULL-terminated) under an endpoint started with `o` (its
 * interception options; the rest is set here). `report_json`: also write
 * the report there (NULL: none). `home` is the --home override or NULL.
 * Returns the command's exit status (128 + N for signal N), 1 when wrap
 * itself failed. */
/* env_proxy: no namespace; the command gets HTTP(S)_PROXY and ALL_PROXY
 * pointing at a loopback proxy listener (HTTP and SOCKS5 on one port)
 * whose flows are the wrap peer's: only what honours them is seen. */
int wrapcmd_main(struct daemon_options *o, char **cmd, const char *report_json, const char *home,
		 bool env_proxy);

#endif
