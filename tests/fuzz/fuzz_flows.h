/* The flows file of a fuzz target: a memfd emptied for every input, so the
 * records code runs (batched, as in the daemon) without a file growing on
 * disk, and each input's records can be checked: every line must parse as a
 * JSON object. Include from one file per target. */
#ifndef WGMITM_FUZZ_FLOWS_H
#define WGMITM_FUZZ_FLOWS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "flows/flowlog.h"

static int flows_fd = -1;
static char flows_path[64];

/* From LLVMFuzzerInitialize. */
static inline void flows_init(void)
{
	flows_fd = memfd_create("fuzz-flows", MFD_CLOEXEC);
	if (flows_fd < 0)
		abort();
	snprintf(flows_path, sizeof(flows_path), "/proc/self/fd/%d", flows_fd);
}

/* An empty flows file, opened with batching on. */
static inline struct flowlog *flows_open(void)
{
	struct flowlog *log;
	if (ftruncate(flows_fd, 0) != 0 || flowlog_open(&log, flows_path, NULL) != 0)
		abort();
	flowlog_set_batching(log, true);
	return log;
}

/* Closes the log (writing what is queued) and checks every line; with
 * `print`, the records go to stderr. */
static inline void flows_close_check(struct flowlog *log, bool print)
{
	flowlog_close(log);
	off_t size = lseek(flows_fd, 0, SEEK_END);
	if (size <= 0)
		return;
	char *buf = malloc((size_t)size);
	if (!buf || pread(flows_fd, buf, (size_t)size, 0) != size)
		abort();
	for (char *line = buf, *end = buf + size; line < end;) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl) {
			fprintf(stderr, "flows file ends without a newline\n");
			abort();
		}
		json_error_t err;
		json_t *j = json_loadb(line, (size_t)(nl - line), 0, &err);
		if (!json_is_object(j)) {
			fprintf(stderr, "record is not a JSON object (%s): %.*s\n", err.text,
				(int)(nl - line), line);
			abort();
		}
		if (print)
			fprintf(stderr, "%.*s\n", (int)(nl - line), line);
		json_decref(j);
		line = nl + 1;
	}
	free(buf);
}

#endif
