/* `wgmitm replay ID [edits]`: the edits as the API's JSON object, the
 * answer as a line (or the JSON). */
#include "replaycmd.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/apiclient.h"
#include "mitm/replay.h"
#include "state.h"

#define USAGE                                                                                      \
	"usage: wgmitm replay ID [--set-header NAME=VALUE]... [--remove-header NAME]...\n"         \
	"                        [--method M] [--url URL] [--body FILE|-] [--timeout S]\n"         \
	"                        [--json]\n"

/* A file (or stdin for "-") of at most REPLAY_MAX_BODY bytes. */
static uint8_t *read_body(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f) {
		perror(path);
		return NULL;
	}
	size_t cap = 65536, n = 0;
	uint8_t *b = malloc(cap);
	while (b) {
		size_t got = fread(b + n, 1, cap - n, f);
		n += got;
		if (n > REPLAY_MAX_BODY) {
			fprintf(stderr, "wgmitm replay: %s: more than %u bytes\n", path,
				REPLAY_MAX_BODY);
			free(b);
			b = NULL;
			break;
		}
		if (got == 0)
			break;
		if (n == cap) {
			uint8_t *nb = realloc(b, cap *= 2);
			if (!nb) {
				free(b);
				b = NULL;
			}
			b = nb;
		}
	}
	if (b && ferror(f)) {
		perror(path);
		free(b);
		b = NULL;
	}
	if (f != stdin)
		fclose(f);
	*len = n;
	return b;
}

/* Text when the bytes are UTF-8 without NUL, else base64. */
static int set_body(json_t *edits, const uint8_t *b, size_t n)
{
	json_t *text = memchr(b, 0, n) ? NULL : json_stringn((const char *)b, n);
	if (text)
		return json_object_set_new(edits, "body", text);
	size_t cap = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);
	if (!s)
		return -1;
	sodium_bin2base64(s, cap, b, n, sodium_base64_VARIANT_ORIGINAL);
	int rc = json_object_set_new(edits, "body_base64", json_string(s));
	free(s);
	return rc;
}

int replaycmd_main(int argc, char **argv, const char *home_override)
{
	static const struct option longopts[] = {
		{ "set-header", required_argument, NULL, 's' },
		{ "remove-header", required_argument, NULL, 'r' },
		{ "method", required_argument, NULL, 'm' },
		{ "url", required_argument, NULL, 'u' },
		{ "body", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	json_t *edits = json_object(), *headers = json_object();
	bool as_json = false;
	int status = 2, c;
	optind = 0; /* the command's own options, from argv[1] */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's': {
			const char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg) {
				fprintf(stderr,
					"wgmitm replay: --set-header %s: expected NAME=VALUE\n",
					optarg);
				goto out;
			}
			char name[256];
			snprintf(name, sizeof(name), "%.*s", (int)(eq - optarg), optarg);
			json_object_set_new(headers, name, json_string(eq + 1));
			break;
		}
		case 'r':
			json_object_set_new(headers, optarg, json_null());
			break;
		case 'm':
			json_object_set_new(edits, "method", json_string(optarg));
			break;
		case 'u':
			json_object_set_new(edits, "url", json_string(optarg));
			break;
		case 'b': {
			size_t n;
			uint8_t *b = read_body(optarg, &n);
			if (!b) {
				status = 1;
				goto out;
			}
			int rc = set_body(edits, b, n);
			free(b);
			if (rc < 0) {
				fprintf(stderr, "wgmitm replay: out of memory\n");
				status = 1;
				goto out;
			}
			break;
		}
		case 'j':
			as_json = true;
			break;
		case 't': {
			char *end;
			double s = strtod(optarg, &end);
			if (*end || s < 0.1 || s > REPLAY_MAX_TIMEOUT_MS / 1000) {
				fprintf(stderr,
					"wgmitm replay: --timeout %s: expected seconds, 0.1 to "
					"%u\n",
					optarg, REPLAY_MAX_TIMEOUT_MS / 1000);
				goto out;
			}
			json_object_set_new(edits, "timeout_ms",
					    json_integer((json_int_t)(s * 1000)));
			break;
		}
		case 'h':
			fputs(USAGE, stdout);
			status = 0;
			goto out;
		default:
			fputs(USAGE, stderr);
			goto out;
		}
	}
	if (optind != argc - 1) {
		fputs(USAGE, stderr);
		goto out;
	}
	if (json_object_size(headers))
		json_object_set(edits, "headers", headers);
	status = 1;
	char home[4096], err[512];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		goto out;
	}
	struct apiclient api;
	if (apiclient_open(&api, home, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm replay: %s\n", err);
		goto out;
	}
	/* The replay's own bound, and some. */
	json_int_t tmo = json_integer_value(json_object_get(edits, "timeout_ms"));
	api.timeout_ms = (uint32_t)(tmo ? tmo : REPLAY_TIMEOUT_MS) + 10000;
	const char *id = argv[optind];
	char target[512] = "/api/flows/";
	size_t t = strlen(target);
	static const char hex[] = "0123456789ABCDEF";
	for (const char *p = id; *p && t + 20 < sizeof(target); p++) {
		unsigned char ch = (unsigned char)*p;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.') {
			target[t++] = (char)ch;
		} else {
			target[t++] = '%';
			target[t++] = hex[ch >> 4];
			target[t++] = hex[ch & 15];
		}
	}
	snprintf(target + t, sizeof(target) - t, "/replay");
	struct apiclient_reply r;
	if (apiclient_request(&api, "POST", target, edits, &r) < 0) {
		fprintf(stderr, "wgmitm replay: %s\n", r.error);
		apiclient_reply_free(&r);
		goto out;
	}
	json_t *a = json_loadb((const char *)r.body, r.len, 0, NULL);
	if (r.status != 201) {
		const char *msg =
			json_string_value(json_object_get(json_object_get(a, "error"), "message"));
		fprintf(stderr, "wgmitm replay: %s (HTTP %d)\n", msg ? msg : "the API refused",
			r.status);
	} else if (as_json) {
		char *text = json_dumps(a, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (text)
			puts(text);
		free(text);
		status = json_is_string(json_object_get(a, "error")) ? 1 : 0;
	} else {
		const json_t *flow = json_object_get(a, "flow");
		json_int_t st = json_integer_value(json_object_get(a, "status"));
		const char *error = json_string_value(json_object_get(a, "error"));
		char sts[16] = "-";
		if (st)
			snprintf(sts, sizeof(sts), "%lld", (long long)st);
		printf("%s  %s  %s %s  (replay of %s)\n",
		       json_string_value(json_object_get(a, "id")), sts,
		       json_string_value(json_object_get(flow, "method")) ?: "?",
		       json_string_value(json_object_get(flow, "url")) ?: "?", id);
		if (error)
			printf("error: %s: %s\n",
			       json_string_value(json_object_get(a, "end_reason")) ?: "error",
			       error);
		else
			printf("%lld bytes up, %lld down, %.1f ms\n",
			       (long long)json_integer_value(json_object_get(flow, "bytes_up")),
			       (long long)json_integer_value(json_object_get(flow, "bytes_down")),
			       json_number_value(json_object_get(flow, "duration_ms")));
		status = error ? 1 : 0;
	}
	json_decref(a);
	apiclient_reply_free(&r);
out:
	json_decref(headers);
	json_decref(edits);
	return status;
}
