/* `wgmitm flows`, `wgmitm flow` and `wgmitm store`: the flow store from the
 * command line, whether or not `run` is running. */
#ifndef WGMITM_FLOWSCMD_H
#define WGMITM_FLOWSCMD_H

/* argv[0] is the command word; `home` the --home override or NULL. Exit
 * statuses: 0, 1 on failure, 2 on a usage error. */
int flowscmd_list(int argc, char **argv, const char *home);
int flowscmd_show(int argc, char **argv, const char *home);
int flowscmd_store(int argc, char **argv, const char *home);

#endif
