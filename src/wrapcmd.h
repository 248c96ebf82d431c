/* `wgmitm wrap -- COMMAND`: runs a command in a network namespace of its
 * own (in a user namespace, so no root is needed where the kernel allows
 * it) whose only interface is a TUN device that the endpoint reads into
 * its netstack. Every connection the command makes, from any runtime,
 * is intercepted and recorded like a peer's (peer "wrap"), DNS included;
 * our CA is trusted through the usual runtimes' variables. On exit it
 * prints what the command reached, and passes its exit status through. */
#ifndef WGMITM_WRAPCMD_H
#define WGMITM_WRAPCMD_H

/* argv[0] is "wrap". `home` is the --home override or NULL. */
int wrapcmd_main(int argc, char **argv, const char *home);

#endif
