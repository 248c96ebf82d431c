/* `wgmitm export`: the flows file as HAR 1.2. */
#ifndef WGMITM_EXPORTCMD_H
#define WGMITM_EXPORTCMD_H

/* argv[0] is "export". `home` is the --home override or NULL (the default
 * flows file is HOME/flows.jsonl); `version` goes into log.creator. Returns
 * the exit status: 0, 1 on failure, 2 on a usage error. */
int exportcmd_main(int argc, char **argv, const char *home, const char *version);

#endif
