/* `wgmitm replay`: resends a recorded HTTP request through the running
 * endpoint's control API (POST /api/flows/{id}/replay). */
#ifndef WGMITM_REPLAYCMD_H
#define WGMITM_REPLAYCMD_H

/* argv[0] is "replay". `home` is the --home override or NULL. Exit
 * statuses: 0 (replayed, a response recorded), 1 (the replay failed, or
 * the API could not be reached), 2 (a usage error). */
int replaycmd_main(int argc, char **argv, const char *home);

#endif
