#include "exportcmd.h"

#include "flows/har.h"
#include "common/log.h"
#include "flows/flowlog.h"
#include "state.h"

#include <errno.h>
#include <sys/stat.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "wgmitm export --har FILE [--flows FILE]";

static const char help[] =
	"Convert the flows file to HAR 1.2 (the HTTP archive format browsers'\n"
	"developer tools, Charles, Fiddler and HAR viewers read): one entry per\n"
	"HTTP exchange, sorted by start time, WebSocket messages on their upgrade\n"
	"request's entry (\"_webSocketMessages\", as Chrome). TCP, UDP and DNS\n"
	"records have no HAR form and are left out.\n"
	"\n"
	"  --har FILE     where to write the HAR; \"-\" for stdout. The file is\n"
	"                 replaced atomically and created mode 0600 (it holds cookies)\n"
	"  --flows FILE   the flows file to read (default HOME/flows.jsonl)\n"
	"\n"
	"A cut last line (a write a crash interrupted) is skipped; any other line\n"
	"that is not a valid record is an error naming the file and line.\n";

struct reader {
	struct har *har;
	const char *path;
	size_t bad_line;
	char err[256];
};

static int on_record(void *ctx, size_t line, json_t *record, const char *error)
{
	struct reader *r = ctx;
	if (error) {
		snprintf(r->err, sizeof(r->err), "invalid JSON: %s", error);
		r->bad_line = line;
		return 1;
	}
	int rc = har_add_record(r->har, record, r->err, sizeof(r->err));
	if (rc < 0) {
		r->bad_line = line;
		return 1;
	}
	return 0;
}

/* Writes to something that is not a regular file (/dev/null, a FIFO, a
 * terminal): renaming over it would replace the device with a file. */
static int write_direct(const struct har *har, const char *path)
{
	FILE *fp = fopen(path, "w");
	if (!fp)
		return -errno;
	int rc = har_write(har, fp);
	if (fclose(fp) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

/* Writes to a temporary file beside `path`, then renames it over `path`, so
 * a reader never sees half a HAR. */
static int write_atomic(const struct har *har, const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		return write_direct(har, path);
	size_t n = strlen(path) + sizeof(".tmp.XXXXXX");
	char *tmp = malloc(n);
	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, n, "%s.tmp.XXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		int e = -errno;
		free(tmp);
		return e;
	}
	FILE *fp = fdopen(fd, "w");
	if (!fp) {
		int e = -errno;
		close(fd);
		unlink(tmp);
		free(tmp);
		return e;
	}
	int rc = har_write(har, fp);
	if (rc == 0 && fflush(fp) != 0)
		rc = -errno;
	if (rc == 0 && fsync(fileno(fp)) < 0)
		rc = -errno;
	if (fclose(fp) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	free(tmp);
	return rc;
}

int exportcmd_main(int argc, char **argv, const char *home, const char *version)
{
	static const struct option longopts[] = {
		{ "har", required_argument, NULL, 'o' },
		{ "flows", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *out = NULL, *flows = NULL;
	optind = 0;
	opterr = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'f':
			flows = optarg;
			break;
		case 'h':
			printf("usage: %s\n\n%s", usage, help);
			return 0;
		default:
			fprintf(stderr, "usage: %s\n", usage);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "wgmitm: unexpected argument \"%s\"\nusage: %s\n", argv[optind],
			usage);
		return 2;
	}
	if (!out) {
		fprintf(stderr, "wgmitm: --har FILE is required (\"-\" for stdout)\nusage: %s\n",
			usage);
		return 2;
	}
	char path[4096];
	if (!flows) {
		char dir[4000];
		if (state_home_resolve(home, dir, sizeof(dir)) < 0) {
			fprintf(stderr, "wgmitm: cannot find the home directory\n");
			return 1;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, FLOWLOG_FILE);
		flows = path;
	}

	struct reader r = { .har = har_create(version), .path = flows };
	if (!r.har) {
		fprintf(stderr, "wgmitm: out of memory\n");
		return 1;
	}
	int status = 1;
	bool partial = false;
	int rc = flowlog_read(flows, on_record, &r, &partial);
	if (rc < 0) {
		fprintf(stderr, "wgmitm: cannot read %s: %s\n", flows, strerror(-rc));
		goto out;
	}
	if (rc > 0) {
		fprintf(stderr, "wgmitm: %s:%zu: %s\n", flows, r.bad_line, r.err);
		goto out;
	}
	if (partial)
		fprintf(stderr,
			"wgmitm: %s: skipped the cut last line (a write interrupted by a crash)\n",
			flows);
	struct har_stats st;
	if (har_finish(r.har, &st) < 0) {
		fprintf(stderr, "wgmitm: out of memory\n");
		goto out;
	}
	if (st.skipped)
		fprintf(stderr,
			"wgmitm: %zu HTTP record(s) without a method or URL (unparsed requests) "
			"left out\n",
			st.skipped);
	if (st.ws_unmatched)
		fprintf(stderr,
			"wgmitm: %zu WebSocket batch(es) matched no upgrade request, left out\n",
			st.ws_unmatched);
	if (strcmp(out, "-") == 0) {
		if (har_write(r.har, stdout) < 0 || fflush(stdout) != 0) {
			fprintf(stderr, "wgmitm: cannot write the HAR to stdout\n");
			goto out;
		}
	} else if ((rc = write_atomic(r.har, out)) < 0) {
		fprintf(stderr, "wgmitm: cannot write %s: %s\n", out, strerror(-rc));
		goto out;
	}
	if (log_get_level() >= LOG_INFO)
		fprintf(stderr,
			"wgmitm: %zu HTTP exchange(s), %zu WebSocket message(s) from %s to %s\n",
			st.entries, st.ws_messages, flows, strcmp(out, "-") == 0 ? "stdout" : out);
	status = 0;
out:
	har_free(r.har);
	return status;
}
