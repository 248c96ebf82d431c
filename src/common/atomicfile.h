/* Whole-file replacement that a crash never leaves half written. */
#ifndef WGMITM_COMMON_ATOMICFILE_H
#define WGMITM_COMMON_ATOMICFILE_H

#include <stddef.h>

/* Writes `len` bytes to `path` with `mode`: a temp file beside it, fsync,
 * rename over `path`, fsync of the directory. A reader sees the old file
 * or the new one, never a mix. Returns 0 or -errno. */
int atomicfile_write(const char *path, const void *data, size_t len, unsigned mode);

#endif
