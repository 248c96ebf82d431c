/* `wgmitm ca`: export, show and import the capture CA. */
#ifndef WGMITM_MITM_CACMD_H
#define WGMITM_MITM_CACMD_H

/* argv[0] is "ca". `home` is the --home override or NULL (then
 * state_home_resolve picks $WGMITM_HOME or ~/.wgmitm). Returns the exit
 * status: 0, 1 on failure, 2 on a usage error. */
int cacmd_main(int argc, char **argv, const char *home);

#endif
