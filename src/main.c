/* wgmitm command line. */
#include "control/config.h"
#include "daemon.h"
#include "daemonshape.h"
#include "mitm/rules.h"
#include "exportcmd.h"
#include "flowscmd.h"
#include "mcpcmd.h"
#include "replaycmd.h"
#include "wrapcmd.h"
#include "listen/authext.h"
#include "peerops.h"
#include "common/log.h"
#include "cacmd.h"
#include "peerconf.h"
#include "state.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef WGMITM_VERSION
#define WGMITM_VERSION "0.1.0"
#endif

static const char *home_override;

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
	const char *help;
};

static const char main_usage[] =
	"usage: wgmitm [--home DIR] [-v|-q] COMMAND [ARGS]\n"
	"\n"
	"A userspace WireGuard endpoint that captures a phone's traffic.\n"
	"\n"
	"commands:\n"
	"  run                 start the endpoint (default: UDP 0.0.0.0:51820 and [::]:51820)\n"
	"  peer add NAME       create a peer and print its config and QR code\n"
	"  peer config NAME    write the peer's wg-quick config to stdout\n"
	"  peer list           list peers\n"
	"  peer show NAME      show a peer (--qr for its QR code)\n"
	"  peer remove NAME    remove a peer (a running endpoint refuses it at once)\n"
	"  ca export|show|import  the CA phones trust for TLS interception (export [--der])\n"
	"  export --har FILE   the recorded HTTP exchanges as HAR 1.2 (--flows FILE to pick the "
	"file)\n"
	"  wrap -- COMMAND     run a command with all its traffic captured (no root needed)\n"
	"  replay ID           resend a recorded HTTP request, as it was or edited (--help)\n"
	"\n"
	"options:\n"
	"  --home DIR          state directory (default $WGMITM_HOME, else ~/.wgmitm)\n"
	"  -v, --verbose       more log output (repeat for more)\n"
	"  -q, --quiet         errors only\n"
	"  --version           print the version\n"
	"  -h, --help          this help; `wgmitm COMMAND --help` for a command\n";

static int usage_error(const struct command *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "wgmitm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: %s\n", cmd->usage);
	return 2;
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

static int open_state(struct state *st, bool create)
{
	char home[4096], err[512];
	int rc = state_home_resolve(home_override, home, sizeof(home));
	if (rc < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory: %s\n", strerror(-rc));
		return -1;
	}
	if (state_open(st, home, create, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
		return -1;
	}
	return 0;
}

/* getopt_long over argv[0..] where argv[0] is the command word. */
/* optind = 0 makes glibc re-initialise its scanner (permutation state included). */
static void reset_getopt(void)
{
	optind = 0;
	opterr = 1;
}

/* --- run --- */

static int parse_listen(const char *text, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, (size_t)(close - text - 1));
		host[close - text - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon || strchr(text, ':') != colon || (size_t)(colon - text) >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, (size_t)(colon - text));
		host[colon - text] = '\0';
		port = colon + 1;
	}
	char *end;
	long p = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || p < 0 || p > 65535)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *in4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		return 0;
	}
	return -EINVAL;
}

static int parse_uint(const char *text, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (errno || *text == '\0' || *text == '-' || *end != '\0' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* "A" or "A,B", both from 1 to max; *b is left as it is without ",B". */
static int parse_uint_pair(const char *text, unsigned long max, unsigned long *a, unsigned long *b)
{
	const char *comma = strchr(text, ',');
	char first[32];
	size_t n = comma ? (size_t)(comma - text) : strlen(text);
	if (n >= sizeof(first))
		return -EINVAL;
	memcpy(first, text, n);
	first[n] = '\0';
	if (parse_uint(first, max, a) < 0 || *a == 0 ||
	    (comma && (parse_uint(comma + 1, max, b) < 0 || *b == 0)))
		return -EINVAL;
	return 0;
}

/* The interception options `run` and `wrap` share (their getopt codes:
 * C I p b N). 0 when `c` was one and is taken, a usage error's status,
 * or -1 when `c` is none of them. */
#define INTERCEPT_LONGOPTS                                                                         \
	{ "upstream-ca", required_argument, NULL, 'C' },                                           \
		{ "insecure-upstream", no_argument, NULL, 'I' },                                   \
		{ "passthrough", required_argument, NULL, 'p' },                                   \
		{ "body-cap", required_argument, NULL, 'b' },                                      \
		{ "no-intercept", no_argument, NULL, 'N' },                                        \
		{ "map-remote", required_argument, NULL, 0x100 },                                  \
		{ "map-local", required_argument, NULL, 0x101 },                                   \
		{ "modify-headers", required_argument, NULL, 0x102 },                              \
		{ "modify-body", required_argument, NULL, 0x103 },                                 \
		{ "block-list", required_argument, NULL, 0x104 },                                  \
		{ "intercept", required_argument, NULL, 0x105 },                                   \
	{                                                                                          \
		"dns-override", required_argument, NULL, 0x106                                     \
	}

/* --map-remote, ..., --dns-override: each becomes a rule (or DNS override)
 * with the id "<option>-<n>", n counting that option's uses. */
static int rule_option(const struct command *cmd, int which, struct daemon_options *o)
{
	static const char *const names[] = { "map-remote",  "map-local",  "modify-headers",
					     "modify-body", "block-list", "intercept",
					     "dns-override" };
	bool dns = which == 6;
	json_t **list = dns ? &o->dns_overrides : &o->rule_options;
	if (!*list)
		*list = json_array();
	unsigned n = 1;
	size_t i;
	json_t *e;
	size_t plen = strlen(names[which]);
	json_array_foreach(*list, i, e)
	{
		const char *id = json_string_value(json_object_get(e, "id"));
		if (id && strncmp(id, names[which], plen) == 0 && id[plen] == '-')
			n++;
	}
	struct rules_error re;
	json_t *r = rules_from_option(names[which], optarg, n, &re);
	if (!r) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s: %s", re.field, re.message);
		return usage_error(cmd, "%s", msg);
	}
	json_array_append_new(*list, r);
	return 0;
}

/* --network-condition DEVICE:latency=MS,down=KBPS,up=KBPS,loss=PCT: one
 * entry of network_conditions (checked with the configuration). */
static int condition_option(const struct command *cmd, const char *arg, struct daemon_options *o)
{
	static const struct {
		const char *opt, *key;
	} keys[] = { { "latency", "latency_ms" },
		     { "down", "down_kbps" },
		     { "up", "up_kbps" },
		     { "loss", "loss_percent" } };
	const char *colon = strchr(arg, ':');
	if (!colon || colon == arg)
		return usage_error(cmd, "--network-condition \"%s\": expected DEVICE:KEY=VALUE,...",
				   arg);
	json_t *c = json_pack("{s:s%}", "device", arg, (size_t)(colon - arg));
	char *rest = strdup(colon + 1);
	if (!c || !rest) {
		json_decref(c);
		free(rest);
		return usage_error(cmd, "%s", "out of memory");
	}
	char *save = NULL;
	for (char *kv = strtok_r(rest, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		char *end = NULL;
		double v = eq ? strtod(eq + 1, &end) : 0;
		size_t k = 0;
		if (eq) {
			*eq = '\0';
			while (k < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[k].opt, kv) != 0)
				k++;
		}
		if (!eq || k == sizeof(keys) / sizeof(keys[0]) || end == eq + 1 || *end) {
			json_decref(c);
			free(rest);
			return usage_error(
				cmd,
				"--network-condition \"%s\": expected latency=MS, down=KBPS, "
				"up=KBPS or loss=PCT",
				arg);
		}
		json_object_set_new(c, keys[k].key, json_real(v));
	}
	free(rest);
	struct config_error err;
	if (daemon_shape_check(c, "--network-condition", &err) < 0) {
		json_decref(c);
		char msg[sizeof(err.field) + sizeof(err.message) + 2];
		snprintf(msg, sizeof(msg), "%s: %s", err.field, err.message);
		return usage_error(cmd, "%s", msg);
	}
	if (!o->network_conditions)
		o->network_conditions = json_array();
	json_array_append_new(o->network_conditions, c);
	return 0;
}

static int intercept_option(const struct command *cmd, int c, struct daemon_options *o)
{
	unsigned long v;
	switch (c) {
	case 'C':
		if (o->nupstream_ca == DAEMON_MAX_UPSTREAM_CA)
			return usage_error(cmd, "too many --upstream-ca files%s", "");
		if (access(optarg, R_OK) != 0)
			return usage_error(cmd, "--upstream-ca \"%s\": cannot read it", optarg);
		o->upstream_ca[o->nupstream_ca++] = optarg;
		return 0;
	case 'I':
		o->insecure_upstream = true;
		return 0;
	case 'p':
		if (o->npassthrough == DAEMON_MAX_PASSTHROUGH)
			return usage_error(cmd, "too many --passthrough patterns%s", "");
		o->passthrough[o->npassthrough++] = optarg;
		return 0;
	case 'b':
		if (parse_uint(optarg, 16ul * 1024 * 1024, &v) < 0)
			return usage_error(cmd, "--body-cap \"%s\": expected bytes, at most 16 MiB",
					   optarg);
		o->body_cap = (long)v; /* 0: bodies are counted, not kept */
		return 0;
	case 'N':
		o->no_intercept = true;
		return 0;
	case 0x100:
	case 0x101:
	case 0x102:
	case 0x103:
	case 0x104:
	case 0x105:
	case 0x106:
		return rule_option(cmd, c - 0x100, o);
	default:
		return -1;
	}
}

static const struct command cmd_run_def;

/* "1500", "500M", "2G" (with `mult` per step of `suffixes`). */
static int parse_scaled(const char *s, const char *suffixes, int64_t mult, int64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || errno || *s == '-')
		return -1;
	int64_t m = 1;
	if (*end) {
		const char *k = strchr(suffixes, *end);
		if (!k || end[1] != '\0')
			return -1;
		for (const char *q = suffixes; q <= k; q++)
			m *= mult;
	}
	if (v > (unsigned long long)(INT64_MAX / m))
		return -1;
	*out = (int64_t)v * m;
	return 0;
}

/* Seconds, or with s, m, h, d. */
static int parse_age(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || errno || *s == '-' || v == 0)
		return -1;
	int64_t m = 1;
	if (*end) {
		if (end[1])
			return -1;
		switch (*end) {
		case 's':
			break;
		case 'm':
			m = 60;
			break;
		case 'h':
			m = 3600;
			break;
		case 'd':
			m = 86400;
			break;
		default:
			return -1;
		}
	}
	if (v > (unsigned long long)(INT64_MAX / m))
		return -1;
	*out = (int64_t)v * m;
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	struct daemon_options o = { .under_load_threshold = -1,
				    .auto_passthrough_s = -1,
				    .body_cap = -1 };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "endpoint", required_argument, NULL, 'e' },
		{ "stats-interval", required_argument, NULL, 's' },
		{ "dns-upstream", required_argument, NULL, 'd' },
		{ "allow-host-port", required_argument, NULL, 'P' },
		{ "max-connections", required_argument, NULL, 'M' },
		{ "max-connections-per-peer", required_argument, NULL, 'm' },
		{ "auto-passthrough", required_argument, NULL, 'A' },
		{ "quic", required_argument, NULL, 'Q' },
		{ "debug-rekey-after", required_argument, NULL, 'R' },
		{ "debug-reject-after", required_argument, NULL, 'J' },
		{ "debug-keepalive", required_argument, NULL, 'K' },
		{ "debug-rekey-timeout", required_argument, NULL, 'T' },
		{ "debug-under-load", required_argument, NULL, 'U' },
		{ "api", required_argument, NULL, 'a' },
		{ "store-max-size", required_argument, NULL, 'z' },
		{ "store-max-age", required_argument, NULL, 'g' },
		{ "no-store", no_argument, NULL, 'S' },
		{ "network-condition", required_argument, NULL, 0x110 },
		{ "http-proxy", required_argument, NULL, 0x120 },
		{ "socks5", required_argument, NULL, 0x121 },
		{ "users", required_argument, NULL, 0x122 },
		{ "allow-open-proxy", no_argument, NULL, 0x123 },
		{ "reverse", required_argument, NULL, 0x124 },
		{ "forward", required_argument, NULL, 0x125 },
		{ "upstream-proxy", required_argument, NULL, 0x126 },
		{ "max-connections-per-user", required_argument, NULL, 0x127 },
		{ "user-rate", required_argument, NULL, 0x128 },
		{ "udp-forward", required_argument, NULL, 0x129 },
		{ "auth-url", required_argument, NULL, 0x12a },
		{ "auth-ttl", required_argument, NULL, 0x12b },
		INTERCEPT_LONGOPTS,
		{ 0 },
	};
	reset_getopt();
	int c;
	unsigned long v;
	char perr[256];
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (o.nlisten == DAEMON_MAX_LISTEN)
				return usage_error(&cmd_run_def, "too many --listen addresses%s",
						   "");
			if (parse_listen(optarg, &o.listen[o.nlisten]) < 0)
				return usage_error(
					&cmd_run_def,
					"--listen \"%s\": expected ADDR:PORT or [ADDR6]:PORT",
					optarg);
			o.nlisten++;
			break;
		case 'e':
			o.endpoint = optarg;
			break;
		case 's':
			if (parse_uint(optarg, 86400, &v) < 0)
				return usage_error(&cmd_run_def,
						   "--stats-interval \"%s\": expected seconds",
						   optarg);
			o.stats_interval_ms = v * 1000;
			break;
		case 'd':
			if (o.ndns_upstream == DAEMON_MAX_DNS)
				return usage_error(&cmd_run_def,
						   "too many --dns-upstream addresses%s", "");
			o.dns_upstream[o.ndns_upstream++] = optarg;
			break;
		case 'P':
			if (parse_uint(optarg, 65535, &v) < 0 || v == 0)
				return usage_error(&cmd_run_def,
						   "--allow-host-port \"%s\": expected a port",
						   optarg);
			if (o.nhost_ports == DAEMON_MAX_HOST_PORTS)
				return usage_error(&cmd_run_def,
						   "too many --allow-host-port ports%s", "");
			o.host_ports[o.nhost_ports++] = (uint16_t)v;
			break;
		case 'M':
			if (parse_uint(optarg, 1000000, &v) < 0 || v == 0)
				return usage_error(
					&cmd_run_def,
					"--max-connections \"%s\": expected a positive number",
					optarg);
			o.max_tcp = (uint32_t)v;
			break;
		case 'm':
			if (parse_uint(optarg, 1000000, &v) < 0 || v == 0)
				return usage_error(&cmd_run_def,
						   "--max-connections-per-peer \"%s\": expected a "
						   "positive number",
						   optarg);
			o.max_tcp_per_peer = (uint32_t)v;
			break;
		case 'A':
			if (parse_uint(optarg, 30 * 86400, &v) < 0)
				return usage_error(&cmd_run_def,
						   "--auto-passthrough \"%s\": expected seconds",
						   optarg);
			o.auto_passthrough_s = (long)v;
			break;
		case 'a': {
			char host[128];
			unsigned port;
			if (strcmp(optarg, "off") != 0 &&
			    daemon_parse_api(optarg, host, sizeof(host), &port) < 0)
				return usage_error(&cmd_run_def,
						   "--api \"%s\": expected [ADDR:]PORT or off",
						   optarg);
			o.api = optarg;
			break;
		}
		case 'z':
			if (parse_scaled(optarg, "KMGT", 1024, &o.store_max_size) < 0 ||
			    o.store_max_size < (1 << 20))
				return usage_error(
					&cmd_run_def,
					"--store-max-size \"%s\": expected bytes (at least "
					"1M), e.g. 500M or 10G",
					optarg);
			break;
		case 0x110: {
			int r = condition_option(&cmd_run_def, optarg, &o);
			if (r)
				return r;
			break;
		}
		case 0x120:
		case 0x121:
			if (daemon_add_proxy(&o, optarg, c == 0x121, perr, sizeof(perr)) < 0)
				return usage_error(&cmd_run_def, "%s", perr);
			break;
		case 0x122:
			o.users_file = optarg;
			break;
		case 0x12a:
			o.auth_url = optarg;
			break;
		case 0x12b: {
			unsigned long ok, denied = AUTHEXT_DEFAULT_TTL_DENIED;
			if (parse_uint_pair(optarg, 86400, &ok, &denied) < 0)
				return usage_error(&cmd_run_def,
						   "--auth-ttl \"%s\": expected SECONDS or "
						   "ALLOWED,DENIED (1 to 86400)",
						   optarg);
			o.auth_ttl[0] = (uint32_t)ok;
			o.auth_ttl[1] = (uint32_t)denied;
			break;
		}
		case 0x123:
			o.allow_open_proxy = true;
			break;
		case 0x124:
		case 0x125:
			if (daemon_add_target(&o, optarg, c == 0x124, perr, sizeof(perr)) < 0)
				return usage_error(&cmd_run_def, "%s", perr);
			break;
		case 0x126:
			if (daemon_add_parent(&o, optarg, perr, sizeof(perr)) < 0)
				return usage_error(&cmd_run_def, "%s", perr);
			break;
		case 0x127:
			if (parse_uint(optarg, 1000000, &v) < 0 || v == 0)
				return usage_error(&cmd_run_def,
						   "--max-connections-per-user \"%s\": expected a "
						   "positive number",
						   optarg);
			o.max_tcp_per_user = (uint32_t)v;
			break;
		case 0x128: {
			/* KBPS, or DOWN,UP in kilobits/s (as --network-condition) */
			unsigned long down, up = 0;
			if (parse_uint_pair(optarg, 100000000, &down, &up) < 0)
				return usage_error(&cmd_run_def,
						   "--user-rate \"%s\": expected KBPS or DOWN,UP "
						   "(kilobits/s, positive)",
						   optarg);
			if (!up)
				up = down;
			o.user_rate[1] = (uint64_t)down * 1000 / 8;
			o.user_rate[0] = (uint64_t)up * 1000 / 8;
			break;
		}
		case 0x129:
			if (daemon_add_udp_forward(&o, optarg, perr, sizeof(perr)) < 0)
				return usage_error(&cmd_run_def, "%s", perr);
			break;
		case 'S':
			o.no_store = true;
			break;
		case 'g':
			if (parse_age(optarg, &o.store_max_age) < 0)
				return usage_error(
					&cmd_run_def,
					"--store-max-age \"%s\": expected seconds or e.g. "
					"12h, 7d",
					optarg);
			break;
		case 'Q':
			if (strcmp(optarg, "refuse") != 0 && strcmp(optarg, "passthrough") != 0)
				return usage_error(&cmd_run_def,
						   "--quic \"%s\": expected refuse or passthrough",
						   optarg);
			o.quic_passthrough = strcmp(optarg, "passthrough") == 0;
			break;
		case 'R':
		case 'J':
		case 'K':
		case 'T':
		case 'U':
			if (parse_uint(optarg, 1000000, &v) < 0 || (c != 'U' && v == 0))
				return usage_error(&cmd_run_def,
						   "debug timer \"%s\": expected a positive number",
						   optarg);
			if (c == 'R')
				o.rekey_after_time_s = (unsigned)v;
			if (c == 'J')
				o.reject_after_time_s = (unsigned)v;
			if (c == 'K')
				o.keepalive_timeout_s = (unsigned)v;
			if (c == 'T')
				o.rekey_timeout_s = (unsigned)v;
			if (c == 'U')
				o.under_load_threshold = (int)v;
			break;
		default: {
			int r = intercept_option(&cmd_run_def, c, &o);
			if (r > 0)
				return r;
			if (r < 0) {
				fprintf(stderr, "usage: %s\n", cmd_run_def.usage);
				return 2;
			}
		}
		}
	}
	if (optind != argc)
		return usage_error(&cmd_run_def, "unexpected argument \"%s\"", argv[optind]);
	if (o.stats_interval_ms == 0 && log_get_level() >= LOG_DEBUG)
		o.stats_interval_ms = 10000;
	char home[4096];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	o.home = home;
	int status = daemon_run(&o);
	json_decref(o.rule_options);
	json_decref(o.dns_overrides);
	json_decref(o.network_conditions);
	return status;
}

static const struct command cmd_run_def = {
	"run",
	cmd_run,
	"wgmitm run [--listen ADDR:PORT]... [--endpoint HOST[:PORT]] [--dns-upstream "
	"ADDR[:PORT]]...\n"
	"                  [--allow-host-port PORT]... [--max-connections N]\n"
	"                  [--max-connections-per-peer N] [--stats-interval S]\n"
	"                  [--upstream-ca FILE]... [--insecure-upstream] [--passthrough GLOB]...\n"
	"                  [--auto-passthrough S] [--body-cap BYTES] [--no-intercept]\n"
	"                  [--quic refuse|passthrough] [--api [ADDR:]PORT|off]\n"
	"                  [--store-max-size BYTES] [--store-max-age AGE] [--no-store]\n"
	"                  [--map-remote SPEC]... [--map-local SPEC]... [--modify-headers "
	"SPEC]...\n"
	"                  [--modify-body SPEC]... [--block-list SPEC]... [--intercept FILTER]...\n"
	"                  [--dns-override NAME=ADDR[,ADDR]]...\n"
	"                  [--network-condition DEVICE:latency=MS,down=KBPS,up=KBPS,loss=PCT]...\n"
	"                  [--http-proxy [ADDR:]PORT]... [--socks5 [ADDR:]PORT]... [--users FILE]\n"
	"                  [--reverse URL@[ADDR:]PORT]... [--forward "
	"[ADDR:]PORT=HOST:PORT[,...]]...\n"
	"                  [--udp-forward [ADDR:]PORT=HOST:PORT]...\n"
	"                  [--upstream-proxy URL[@GLOB]]... [--allow-open-proxy]\n"
	"                  [--max-connections-per-user N] [--user-rate KBPS[,UP_KBPS]]\n"
	"                  [--auth-url URL] [--auth-ttl SECONDS[,DENIED]]",
	"Start the endpoint. On first start it creates the server key and, when no\n"
	"peer exists, a peer named \"phone\" whose QR code it prints. Every TCP and\n"
	"UDP flow of a peer is relayed to its destination and recorded in\n"
	"HOME/flows.jsonl; the endpoint's tunnel address answers DNS, and serves the\n"
	"CA install page at http://wgmitm.internal/ inside the tunnel.\n"
	"Peers added or removed with `wgmitm peer` take effect within a second\n"
	"(the state directory is watched; SIGHUP forces a reload).\n"
	"SIGUSR1 prints the counters; -v prints them every 10 s.\n"
	"\n"
	"  --listen ADDR:PORT       UDP address to listen on, repeatable\n"
	"                           (default 0.0.0.0 and [::] on the state's port, 51820)\n"
	"  --endpoint HOST[:PORT]   address written into configs printed at start\n"
	"  --dns-upstream ADDR[:PORT]  resolver for the tunnel's DNS, repeatable\n"
	"                           (default: the nameservers of /etc/resolv.conf)\n"
	"  --allow-host-port PORT   let peers reach this port of the capture host's\n"
	"                           loopback at the endpoint's tunnel address, repeatable\n"
	"  --max-connections N      TCP connections relayed at once, more are reset (16384)\n"
	"  --max-connections-per-peer N  of those, one peer's at once (half of\n"
	"                           --max-connections), so no peer can starve the others\n"
	"  --stats-interval S       print counters every S seconds\n"
	"\n"
	"interception (TLS is decrypted with the CA of `wgmitm ca`; HTTP is recorded):\n"
	"  --upstream-ca FILE       also trust this CA (PEM) for upstream servers, repeatable\n"
	"  --insecure-upstream      do not verify upstream certificates\n"
	"  --passthrough GLOB       relay TLS to matching hosts untouched, e.g. '*.apple.com',\n"
	"                           repeatable\n"
	"  --auto-passthrough S     after a client rejects our certificate for a host, pass\n"
	"                           that host through for its peer for S seconds (3600; 0: never)\n"
	"  --body-cap BYTES         bytes of each HTTP body recorded (1048576; 0: none)\n"
	"  --no-intercept           relay TLS untouched (connections are still recorded)\n"
	"  --quic refuse|passthrough  UDP to port 443 (QUIC, HTTP/3): refuse answers ICMP\n"
	"                           port unreachable so apps fall back to TLS over TCP,\n"
	"                           which is decrypted (default); passthrough relays it\n"
	"  SSLKEYLOGFILE=PATH       (environment) write TLS keys of both legs for Wireshark\n"
	"\n"
	"rules (docs/rules.md; mitmproxy's syntax: the first character separates, FILTER\n"
	"is optional; each repeatable; HOME/rules.json and the API add more):\n"
	"  --map-remote |FILTER|URL-REGEX|REPLACEMENT  send matching requests elsewhere\n"
	"  --map-local |URL-REGEX|PATH     answer matching requests with a file\n"
	"  --modify-headers |FILTER|NAME|VALUE  set a header (empty VALUE removes it)\n"
	"  --modify-body |FILTER|REGEX|REPLACEMENT  rewrite bodies\n"
	"  --block-list |FILTER|STATUS     answer with STATUS (444: reset the connection)\n"
	"  --intercept FILTER              hold matching requests (with ~s: responses)\n"
	"  --dns-override NAME=ADDR[,ADDR] the tunnel's DNS answers NAME (or *.NAME)\n"
	"  --network-condition DEVICE:latency=MS,down=KBPS,up=KBPS,loss=PCT\n"
	"                           a slow or lossy link for that device's packets (any\n"
	"                           of the four; latency is added to the round trip)\n"
	"\n"
	"ways in besides the tunnel (docs/listeners.md; records say which, as \"via\"):\n"
	"  --http-proxy [ADDR:]PORT an HTTP proxy (absolute-form requests and CONNECT),\n"
	"                           e.g. 8080 (ADDR: 127.0.0.1), repeatable\n"
	"  --socks5 [ADDR:]PORT     a SOCKS5 proxy (CONNECT and UDP ASSOCIATE); the same port\n"
	"                           as --http-proxy serves both\n"
	"  --users FILE             user:password lines (crypt(3) hashes too): both proxies\n"
	"                           then need credentials\n"
	"  --reverse URL@[ADDR:]PORT[,keep-host]  in front of a server:\n"
	"                           https://api.internal:8443@8443; clients may speak TLS or\n"
	"                           not, the URL's scheme goes upstream, its host as Host\n"
	"  --forward [ADDR:]PORT=HOST:PORT[,protocol=P][,tls][,upstream-tls][,insecure]\n"
	"                           a port to one target; tls: clients speak TLS (terminated),\n"
	"                           upstream-tls: TLS to the target; P: auto, raw, http, http2,\n"
	"                           grpc, websocket, sse\n"
	"  --udp-forward [ADDR:]PORT=HOST:PORT  a UDP port to one target (HOST resolved at\n"
	"                           start), each client's datagrams a flow, repeatable\n"
	"  --upstream-proxy URL[@GLOB]  send flows on through a parent proxy:\n"
	"                           http://[USER:PASS@]HOST:PORT (CONNECT) or socks5://...;\n"
	"                           GLOB: hosts (*.corp.example) or device=NAME; none: all;\n"
	"                           repeatable, the first match wins; the tunnel's flows too\n"
	"  --allow-open-proxy       allow a listener on a non-loopback address without --users\n"
	"                           (forwards: at all)\n"
	"  --auth-url URL           ask this HTTP(S) endpoint about credentials --users does\n"
	"                           not name: POST {user, password, via, client}; 2xx allows\n"
	"  --auth-ttl S[,DENIED]    how long its verdicts are kept (300,30)\n"
	"  --max-connections-per-user N  one --users user's connections at once (as a peer's)\n"
	"  --user-rate KBPS[,UP_KBPS]  each --users user's bandwidth, kilobits/s, towards the\n"
	"                           client (and from it; default the same), for all its flows\n"
	"\n"
	"control plane (docs/api.md; the configuration saved in HOME/config.json is\n"
	"read first, these options override it):\n"
	"  --api [ADDR:]PORT|off    the control API, web UI and MCP over HTTP\n"
	"                           (127.0.0.1:8081); it needs the token of HOME/api-token\n"
	"  --store-max-size BYTES   HOME/flows.db at most, the oldest flows evicted (2G)\n"
	"  --store-max-age AGE      flows kept at most this long, e.g. 7d (no limit)\n"
	"  --no-store               flows.jsonl only: no HOME/flows.db, no lists or search\n"
	"\n"
	"debug options (shortened WireGuard timers, seconds; for tests):\n"
	"  --debug-rekey-after S    REKEY_AFTER_TIME (120)\n"
	"  --debug-reject-after S   REJECT_AFTER_TIME (180)\n"
	"  --debug-keepalive S      KEEPALIVE_TIMEOUT (10)\n"
	"  --debug-rekey-timeout S  REKEY_TIMEOUT (5)\n"
	"  --debug-under-load N     handshakes/s above which cookies are required\n",
};

/* --- peer --- */

static const struct command peer_cmds[];

static const struct command *peer_cmd(const char *name);

static int cmd_peer_add(int argc, char **argv)
{
	const struct command *self = peer_cmd("add");
	static const struct option longopts[] = {
		{ "endpoint", required_argument, NULL, 'e' },
		{ "qr-png", required_argument, NULL, 'p' },
		{ "qr-svg", required_argument, NULL, 's' },
		{ "allowed-ips", required_argument, NULL, 'a' },
		{ "apps", required_argument, NULL, 'i' },
		{ "exclude-apps", required_argument, NULL, 'x' },
		{ "mtu", required_argument, NULL, 'm' },
		{ "keepalive", required_argument, NULL, 'k' },
		{ 0 },
	};
	const char *endpoint = NULL, *png = NULL, *svg = NULL, *allowed = NULL, *apps = NULL,
		   *xapps = NULL;
	unsigned long mtu = STATE_DEFAULT_MTU, keepalive = STATE_DEFAULT_KEEPALIVE;
	reset_getopt();
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'e':
			endpoint = optarg;
			break;
		case 'p':
			png = optarg;
			break;
		case 's':
			svg = optarg;
			break;
		case 'a':
			allowed = optarg;
			break;
		case 'i':
			apps = optarg;
			break;
		case 'x':
			xapps = optarg;
			break;
		case 'm':
			if (parse_uint(optarg, 9000, &mtu) < 0 || mtu < 1280)
				return usage_error(self, "--mtu \"%s\": expected 1280 to 9000",
						   optarg);
			break;
		case 'k':
			if (parse_uint(optarg, 65535, &keepalive) < 0)
				return usage_error(self,
						   "--keepalive \"%s\": expected seconds (0 = off)",
						   optarg);
			break;
		default:
			fprintf(stderr, "usage: %s\n", self->usage);
			return 2;
		}
	}
	if (optind + 1 != argc)
		return usage_error(self, "expected one peer NAME%s", "");
	if (apps && xapps)
		return usage_error(self, "--apps and --exclude-apps cannot be used together%s", "");
	const char *name = argv[optind];

	char home[4096], err[512];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	struct peerops_spec spec = { .name = name,
				     .endpoint = endpoint,
				     .allowed_ips = allowed,
				     .apps = apps,
				     .exclude_apps = xapps,
				     .mtu = (unsigned)mtu,
				     .keepalive = (int)keepalive };
	char *text;
	if (peerops_add(home, &spec, &text, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
		return 1;
	}
	int rc = 0;
	if ((png || svg) && (rc = peerconf_save_qr(text, png, svg, err, sizeof(err))) < 0)
		fprintf(stderr, "wgmitm: %s\n", err);
	peerops_wipe(text);
	if (rc < 0) {
		/* As if never added: a peer whose QR file failed is not kept. */
		(void)peerops_remove(home, name, err, sizeof(err));
		return 1;
	}
	struct state st;
	if (open_state(&st, false) < 0)
		return 1;
	int status = 0;
	struct state_peer *p = state_peer_find(&st, name);
	if (!p || peerconf_print(&st, p, NULL, stdout, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", p ? err : "the new peer vanished");
		status = 1;
	}
	state_close(&st);
	return status;
}

static int load_peer(struct state *st, const struct command *self, int argc, char **argv,
		     struct state_peer **p)
{
	if (optind + 1 != argc)
		return usage_error(self, "expected one peer NAME%s", "");
	if (open_state(st, false) < 0)
		return 1;
	*p = state_peer_find(st, argv[optind]);
	if (!*p) {
		fprintf(stderr, "wgmitm: no peer named \"%s\" in %s (see `wgmitm peer list`)\n",
			argv[optind], st->home);
		state_close(st);
		return 1;
	}
	return 0;
}

static int no_options(const struct command *self, int argc, char **argv)
{
	static const struct option longopts[] = { { 0 } };
	reset_getopt();
	if (getopt_long(argc, argv, "", longopts, NULL) != -1) {
		fprintf(stderr, "usage: %s\n", self->usage);
		return 2;
	}
	return 0;
}

static int cmd_peer_config(int argc, char **argv)
{
	const struct command *self = peer_cmd("config");
	static const struct option longopts[] = { { "endpoint", required_argument, NULL, 'e' },
						  { 0 } };
	const char *endpoint = NULL;
	reset_getopt();
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'e') {
			fprintf(stderr, "usage: %s\n", self->usage);
			return 2;
		}
		endpoint = optarg;
	}
	struct state st;
	struct state_peer *p;
	int rc = load_peer(&st, self, argc, argv, &p);
	if (rc)
		return rc;
	char err[512], ep[320];
	char *text = NULL;
	if (peerconf_endpoint(&st, p, endpoint, ep, sizeof(ep), NULL, err, sizeof(err)) == 0)
		text = peerconf_render(&st, p, ep, err, sizeof(err));
	state_close(&st);
	if (!text) {
		fprintf(stderr, "wgmitm: %s\n", err);
		return 1;
	}
	fputs(text, stdout);
	sodium_memzero(text, strlen(text));
	free(text);
	return fflush(stdout) == 0 ? 0 : 1;
}

static void format_list(const char *list, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s", *list ? list : "-");
}

static int cmd_peer_list(int argc, char **argv)
{
	const struct command *self = peer_cmd("list");
	int rc = no_options(self, argc, argv);
	if (rc)
		return rc;
	if (optind != argc)
		return usage_error(self, "unexpected argument \"%s\"", argv[optind]);
	struct state st;
	if (open_state(&st, false) < 0)
		return 1;
	if (st.npeers == 0)
		printf("no peers (add one with `wgmitm peer add NAME`)\n");
	else
		printf("%-20s %-16s %-28s %s\n", "NAME", "ADDRESS", "ADDRESS6", "PUBLIC KEY");
	for (size_t i = 0; i < st.npeers; i++) {
		const struct state_peer *p = &st.peers[i];
		char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN], pub[45];
		inet_ntop(AF_INET, &p->addr4, a4, sizeof(a4));
		inet_ntop(AF_INET6, &p->addr6, a6, sizeof(a6));
		state_key_to_base64(p->public_key, pub);
		printf("%-20s %-16s %-28s %s\n", p->name, a4, a6, pub);
	}
	state_close(&st);
	return 0;
}

static int cmd_peer_show(int argc, char **argv)
{
	const struct command *self = peer_cmd("show");
	static const struct option longopts[] = { { "qr", no_argument, NULL, 'q' }, { 0 } };
	bool qr = false;
	reset_getopt();
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'q') {
			fprintf(stderr, "usage: %s\n", self->usage);
			return 2;
		}
		qr = true;
	}
	struct state st;
	struct state_peer *p;
	int rc = load_peer(&st, self, argc, argv, &p);
	if (rc)
		return rc;
	char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN], pub[45], when[64], list[STATE_LIST_MAX];
	inet_ntop(AF_INET, &p->addr4, a4, sizeof(a4));
	inet_ntop(AF_INET6, &p->addr6, a6, sizeof(a6));
	state_key_to_base64(p->public_key, pub);
	time_t created = (time_t)p->created;
	struct tm tm;
	gmtime_r(&created, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("name:          %s\n", p->name);
	printf("public key:    %s\n", pub);
	printf("addresses:     %s, %s\n", a4, a6);
	printf("endpoint:      %s\n", *p->endpoint ? p->endpoint : "(detected)");
	format_list(p->allowed_ips, list, sizeof(list));
	printf("allowed ips:   %s\n", *p->allowed_ips ? list : "0.0.0.0/0, ::/0");
	format_list(p->include_apps, list, sizeof(list));
	printf("apps:          %s\n", list);
	format_list(p->exclude_apps, list, sizeof(list));
	printf("exclude apps:  %s\n", list);
	printf("mtu:           %u\n", p->mtu);
	printf("keepalive:     %u%s\n", p->keepalive, p->keepalive ? " s" : " (off)");
	printf("created:       %s\n", when);
	int status = 0;
	if (qr) {
		char err[512];
		printf("\n");
		if (peerconf_print(&st, p, NULL, stdout, err, sizeof(err)) < 0) {
			fprintf(stderr, "wgmitm: %s\n", err);
			status = 1;
		}
	}
	state_close(&st);
	return status;
}

static int cmd_peer_remove(int argc, char **argv)
{
	const struct command *self = peer_cmd("remove");
	int rc = no_options(self, argc, argv);
	if (rc)
		return rc;
	if (optind + 1 != argc)
		return usage_error(self, "expected one peer NAME%s", "");
	struct state st;
	char err[512];
	if (open_state(&st, false) < 0)
		return 1;
	int status = 1;
	if (state_lock(&st, err, sizeof(err)) < 0 ||
	    state_reload_peers(&st, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
	} else if (state_peer_remove(&st, argv[optind]) < 0) {
		fprintf(stderr, "wgmitm: no peer named \"%s\" in %s\n", argv[optind], st.home);
	} else if (state_save_peers(&st, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
	} else {
		printf("removed peer %s\n", argv[optind]);
		status = 0;
	}
	state_close(&st);
	return status;
}

static const struct command peer_cmds[] = {
	{ "add", cmd_peer_add,
	  "wgmitm peer add NAME [--endpoint HOST[:PORT]] [--qr-png FILE] [--qr-svg FILE]\n"
	  "                     [--allowed-ips CIDR,...] [--apps PKG,... | --exclude-apps "
	  "PKG,...]\n"
	  "                     [--mtu N] [--keepalive S]",
	  "Create a peer with its own key pair, preshared key and tunnel addresses,\n"
	  "then print its config and a QR code to scan with the WireGuard app.\n"
	  "\n"
	  "  --endpoint HOST[:PORT]   address the phone connects to (default: detected)\n"
	  "  --qr-png FILE            also write the QR code as PNG\n"
	  "  --qr-svg FILE            also write the QR code as SVG\n"
	  "  --allowed-ips CIDR,...   split tunnel: only these destinations go through\n"
	  "                           wgmitm (default 0.0.0.0/0, ::/0: everything)\n"
	  "  --apps PKG,...           Android: only these apps use the tunnel\n"
	  "  --exclude-apps PKG,...   Android: every app except these uses the tunnel\n"
	  "  --mtu N                  tunnel MTU (default 1420; 1280 for troublesome mobile "
	  "networks)\n"
	  "  --keepalive S            client PersistentKeepalive (default 25, 0 = off)\n" },
	{ "config", cmd_peer_config, "wgmitm peer config NAME [--endpoint HOST[:PORT]]",
	  "Write exactly the peer's wg-quick config to stdout, e.g.\n"
	  "  wgmitm peer config phone > phone.conf\n" },
	{ "list", cmd_peer_list, "wgmitm peer list",
	  "List the peers with their addresses and public keys.\n" },
	{ "show", cmd_peer_show, "wgmitm peer show NAME [--qr]",
	  "Show a peer's settings; --qr also prints its config and QR code.\n" },
	{ "remove", cmd_peer_remove, "wgmitm peer remove NAME",
	  "Remove a peer. A running endpoint refuses its packets within a second.\n" },
	{ 0 },
};

static const struct command *peer_cmd(const char *name)
{
	for (const struct command *c = peer_cmds; c->name; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static void print_help(const struct command *c)
{
	printf("usage: %s\n\n%s", c->usage, c->help);
}

static int cmd_peer(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		printf("usage: wgmitm peer COMMAND [ARGS]\n\ncommands:\n");
		for (const struct command *c = peer_cmds; c->name; c++)
			printf("  %s\n", c->usage);
		return argc < 2 ? 2 : 0;
	}
	const struct command *c = peer_cmd(argv[1]);
	if (!c) {
		fprintf(stderr, "wgmitm: unknown command \"peer %s\" (see `wgmitm peer --help`)\n",
			argv[1]);
		return 2;
	}
	if (wants_help(argc - 1, argv + 1)) {
		print_help(c);
		return 0;
	}
	return c->run(argc - 1, argv + 1);
}

static int cmd_ca(int argc, char **argv)
{
	return cacmd_main(argc, argv, home_override);
}

static int cmd_export(int argc, char **argv)
{
	return exportcmd_main(argc, argv, home_override, WGMITM_VERSION);
}

static int cmd_flows(int argc, char **argv)
{
	return flowscmd_list(argc, argv, home_override);
}

static int cmd_flow(int argc, char **argv)
{
	return flowscmd_show(argc, argv, home_override);
}

static int cmd_store(int argc, char **argv)
{
	return flowscmd_store(argc, argv, home_override);
}

static int cmd_mcp(int argc, char **argv)
{
	return mcpcmd_main(argc, argv, home_override);
}

static int cmd_replay(int argc, char **argv)
{
	return replaycmd_main(argc, argv, home_override);
}

static const struct command cmd_wrap_def = {
	"wrap",
	NULL,
	"wgmitm wrap [--upstream-ca FILE]... [--insecure-upstream] [--passthrough GLOB]...\n"
	"                   [--no-intercept] [--body-cap BYTES] [--no-store] [--report-json "
	"FILE]\n"
	"                   [--env-proxy]\n"
	"                   [--map-remote SPEC]... [--map-local SPEC]... [--modify-headers "
	"SPEC]...\n"
	"                   [--modify-body SPEC]... [--block-list SPEC]... [--dns-override "
	"NAME=ADDR]...\n"
	"                   -- COMMAND [ARG]...",
	NULL,
};

static int cmd_wrap(int argc, char **argv)
{
	struct daemon_options o = {
		.under_load_threshold = -1, .auto_passthrough_s = -1, .body_cap = -1, .api = "off"
	};
	const char *report_json = NULL;
	static const struct option longopts[] = {
		INTERCEPT_LONGOPTS,
		{ "no-store", no_argument, NULL, 'S' },
		{ "report-json", required_argument, NULL, 'r' },
		{ "env-proxy", no_argument, NULL, 'E' },
		{ 0 },
	};
	reset_getopt();
	int c;
	bool env_proxy = false;
	/* '+': the command's own options are its own. */
	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		if (c == 'S') {
			o.no_store = true;
		} else if (c == 'E') {
			env_proxy = true;
		} else if (c == 'r') {
			report_json = optarg;
		} else {
			int r = intercept_option(&cmd_wrap_def, c, &o);
			if (r > 0)
				return r;
			if (r < 0) {
				fprintf(stderr, "usage: %s\n", cmd_wrap_def.usage);
				return 2;
			}
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: %s\n", cmd_wrap_def.usage);
		return 2;
	}
	int status = wrapcmd_main(&o, argv + optind, report_json, home_override, env_proxy);
	json_decref(o.rule_options);
	json_decref(o.dns_overrides);
	return status;
}

static const struct command commands[] = {
	{ "run", cmd_run, NULL, NULL },
	{ "peer", cmd_peer, "wgmitm peer COMMAND [ARGS]", NULL },
	{ "ca", cmd_ca, "wgmitm ca COMMAND [ARGS]", NULL },
	{ "export", cmd_export, "wgmitm export --har FILE [--flows FILE]", NULL },
	{ "flows", cmd_flows, "wgmitm flows [FILTER] [--limit N] [--json] [--follow]", NULL },
	{ "flow", cmd_flow, "wgmitm flow ID [--json]", NULL },
	{ "store", cmd_store, "wgmitm store rebuild [--flows FILE]", NULL },
	{ "mcp", cmd_mcp, "wgmitm mcp", NULL },
	{ "replay", cmd_replay, "wgmitm replay ID [--set-header N=V]... [--body FILE] [--json]",
	  NULL },
	{ "wrap", cmd_wrap, "wgmitm wrap [OPTIONS] -- COMMAND [ARG]...", NULL },
	{ 0 },
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "home", required_argument, NULL, 'H' }, { "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },      { "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },       { 0 },
	};
	int verbosity = LOG_INFO;
	int c;
	/* '+' stops at the command word: its options belong to it. */
	while ((c = getopt_long(argc, argv, "+vqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'H':
			home_override = optarg;
			break;
		case 'v':
			if (verbosity < LOG_TRACE)
				verbosity++;
			break;
		case 'q':
			verbosity = LOG_ERROR;
			break;
		case 'V':
			printf("wgmitm %s\n", WGMITM_VERSION);
			return 0;
		case 'h':
			fputs(main_usage, stdout);
			return 0;
		default:
			fputs(main_usage, stderr);
			return 2;
		}
	}
	log_set_level((enum log_level)verbosity);
	if (optind >= argc) {
		fputs(main_usage, stderr);
		return 2;
	}
	argc -= optind;
	argv += optind;
	for (const struct command *cmd = commands; cmd->name; cmd++) {
		if (strcmp(cmd->name, argv[0]) != 0)
			continue;
		if (cmd->run == cmd_run && wants_help(argc, argv)) {
			print_help(&cmd_run_def);
			return 0;
		}
		return cmd->run(argc, argv);
	}
	fprintf(stderr, "wgmitm: unknown command \"%s\" (see `wgmitm --help`)\n", argv[0]);
	return 2;
}
