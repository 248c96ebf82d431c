/* `wgmitm wrap`: the command's namespaces, its TUN device handed to the
 * endpoint, and the report of what it reached. */
#include "wrapcmd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/route.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "common/log.h"
#include "daemon.h"
#include "flows/fields.h"
#include "mitm/ca.h"
#include "state.h"

#define WRAP_PEER "wrap"
#define TUN_NAME "wgmitm0"
#define BUNDLE_FILE "wrap-ca-bundle.pem"
#define RESOLV_FILE "wrap-resolv.conf"
#define SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define MAX_HOSTS 10000
#define MAX_DOWNLOADS 10000
#define MAX_FAILURES 1000

/* What the usual runtimes read for their trust anchors. */
static const char *const ca_vars[] = {
	"SSL_CERT_FILE",       "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
	"NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO",     "PIP_CERT",
	"AWS_CA_BUNDLE",       "DENO_CERT",          "CARGO_HTTP_CAINFO",
};

struct child_args {
	char **argv;
	int sock;
	struct in_addr addr4;
	struct in6_addr addr6;
	const char *resolv, *bundle;
	char proxy[64]; /* --env-proxy: "127.0.0.1:PORT" of the proxy listener */
};

/* What clients read for a proxy, both cases (curl reads only the lower
 * case http_proxy; most read both). */
static const char *const proxy_vars[] = {
	"HTTP_PROXY",
	"http_proxy",
	"HTTPS_PROXY",
	"https_proxy",
};

/* ---- the child: namespaces and the TUN device ----------------------------- */

static void die(const char *what)
{
	fprintf(stderr, "wgmitm wrap: %s: %s\n", what, strerror(errno));
	_exit(1);
}

static int put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int if_up(int s, const char *name)
{
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

/* struct in6_ifreq of <linux/ipv6.h>, which clashes with <netinet/in.h>. */
struct ifreq6 {
	struct in6_addr addr;
	uint32_t prefixlen;
	int ifindex;
};

/* IPv6 is a bonus: without it, clients fall back to IPv4. */
static void tun_ipv6(const struct child_args *a)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/accept_dad", TUN_NAME);
	(void)put_file(path, "0");
	int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq6 r = { .addr = a->addr6,
			    .prefixlen = 128,
			    .ifindex = (int)if_nametoindex(TUN_NAME) };
	struct in6_rtmsg rt = { .rtmsg_ifindex = r.ifindex,
				.rtmsg_flags = RTF_UP,
				.rtmsg_metric = 1 };
	if (ioctl(s, SIOCSIFADDR, &r) < 0 || ioctl(s, SIOCADDRT, &rt) < 0)
		log_debug("wrap: no IPv6 in the namespace: %s", strerror(errno));
	close(s);
}

static int tun_open(const struct child_args *a)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == EACCES)
		die("/dev/net/tun (udev makes it mode 0666; here only its owner may open it)");
	if (fd < 0)
		die("/dev/net/tun");
	struct ifreq ifr = { .ifr_flags = IFF_TUN | IFF_NO_PI };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", TUN_NAME);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		die("the TUN device");
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket");
	if (if_up(s, "lo") < 0)
		die("lo");
	struct ifreq ar = { 0 };
	snprintf(ar.ifr_name, sizeof(ar.ifr_name), "%s", TUN_NAME);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ar.ifr_addr;
	sin->sin_family = AF_INET;
	sin->sin_addr = a->addr4;
	if (ioctl(s, SIOCSIFADDR, &ar) < 0)
		die("the TUN address");
	sin->sin_addr.s_addr = INADDR_BROADCAST;
	if (ioctl(s, SIOCSIFNETMASK, &ar) < 0)
		die("the TUN netmask");
	ar.ifr_mtu = STATE_DEFAULT_MTU;
	if (ioctl(s, SIOCSIFMTU, &ar) < 0)
		die("the TUN MTU");
	if (if_up(s, TUN_NAME) < 0)
		die("the TUN device up");
	struct rtentry rt = { .rt_flags = RTF_UP, .rt_dev = (char *)TUN_NAME };
	((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
	((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
	if (ioctl(s, SIOCADDRT, &rt) < 0)
		die("the default route");
	close(s);
	tun_ipv6(a);
	return fd;
}

static void send_fd(int sock, int fd)
{
	char byte = 't';
	struct iovec iov = { &byte, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	memset(&c, 0, sizeof(c));
	struct msghdr m = { .msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = c.buf,
			    .msg_controllen = sizeof(c.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sock, &m, 0) != 1)
		die("handing the TUN device over");
}

static void child_main(const struct child_args *a)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	/* root needs no user namespace (and may be where none is allowed). */
	bool userns = geteuid() != 0;
	if (unshare(CLONE_NEWNET | CLONE_NEWNS | (userns ? CLONE_NEWUSER : 0)) < 0)
		die(userns ? "a user and network namespace (unprivileged user namespaces may be "
			     "off: sysctl kernel.unprivileged_userns_clone; --env-proxy works "
			     "without them)"
			   : "a network namespace");
	if (userns) {
		char map[64];
		snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
		if (put_file("/proc/self/setgroups", "deny") < 0 ||
		    put_file("/proc/self/uid_map", map) < 0)
			die("the user namespace's uid map");
		snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
		if (put_file("/proc/self/gid_map", map) < 0)
			die("the user namespace's gid map");
	}
	/* The command's DNS is the endpoint's, in its own view of the files. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("a private mount namespace");
	if (mount(a->resolv, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0)
		die("/etc/resolv.conf");
	int tun = tun_open(a);
	send_fd(a->sock, tun);
	close(tun);
	char go;
	if (read(a->sock, &go, 1) != 1)
		_exit(1); /* the endpoint did not start; it said why */
	close(a->sock);
	for (size_t i = 0; i < sizeof(ca_vars) / sizeof(ca_vars[0]); i++)
		setenv(ca_vars[i], a->bundle, 1);
	execvp(a->argv[0], a->argv);
	fprintf(stderr, "wgmitm wrap: %s: %s\n", a->argv[0], strerror(errno));
	_exit(127);
}

/* --env-proxy: no namespace; the command is told of the proxy listener. */
static void env_child_main(const struct child_args *a)
{
	char go;
	if (read(a->sock, &go, 1) != 1)
		_exit(1); /* the endpoint did not start; it said why */
	close(a->sock);
	for (size_t i = 0; i < sizeof(ca_vars) / sizeof(ca_vars[0]); i++)
		setenv(ca_vars[i], a->bundle, 1);
	char url[96];
	snprintf(url, sizeof(url), "http://%s", a->proxy);
	for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
		setenv(proxy_vars[i], url, 1);
	/* Whatever honours only ALL_PROXY gets SOCKS5, names resolved by us. */
	snprintf(url, sizeof(url), "socks5h://%s", a->proxy);
	setenv("ALL_PROXY", url, 1);
	setenv("all_proxy", url, 1);
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");
	execvp(a->argv[0], a->argv);
	fprintf(stderr, "wgmitm wrap: %s: %s\n", a->argv[0], strerror(errno));
	_exit(127);
}

/* A free loopback port for the listener (it is bound again at once). */
static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int port = -1;
	if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(s, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (s >= 0)
		close(s);
	return port;
}

static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = { &byte, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct msghdr m = { .msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = c.buf,
			    .msg_controllen = sizeof(c.buf) };
	ssize_t n;
	while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *cm = n == 1 ? CMSG_FIRSTHDR(&m) : NULL;
	if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* ---- files the command reads ---------------------------------------------- */

/* Writes `path` anew (via a temporary: a concurrent wrap reads a whole file). */
static int write_whole(const char *path, const char *a, size_t alen, const char *b, size_t blen)
{
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	bool ok = fwrite(a, 1, alen, f) == alen && fwrite(b, 1, blen, f) == blen;
	if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static char *slurp(const char *path, size_t *len)
{
	*len = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t cap = 0;
	for (;;) {
		if (*len + 65536 > cap) {
			char *nb = realloc(buf, cap = *len + 65536 * 2);
			if (!nb)
				break;
			buf = nb;
		}
		size_t n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	return buf;
}

/* The system's trust anchors and ours, in one bundle. */
static int write_bundle(const char *home, char *out, size_t outlen)
{
	char ca_path[4200];
	snprintf(ca_path, sizeof(ca_path), "%s/%s", home, CA_CERT_FILE);
	snprintf(out, outlen, "%s/%s", home, BUNDLE_FILE);
	size_t slen, clen;
	char *sys = slurp(SYSTEM_BUNDLE, &slen), *ca = slurp(ca_path, &clen);
	int rc = ca ? write_whole(out, sys ? sys : "", sys ? slen : 0, ca, clen) : -1;
	if (!ca)
		fprintf(stderr, "wgmitm wrap: %s: %s\n", ca_path, strerror(errno));
	free(sys);
	free(ca);
	return rc;
}

/* ---- the report ----------------------------------------------------------- */

struct report {
	json_t *hosts; /* host -> { requests, methods, statuses, bytes_up, bytes_down, connections } */
	json_t *downloads; /* [{ url, status, size, sha256 }] */
	json_t *failures;  /* [{ type, host, reason }] */
	json_t *dns;       /* name -> lookups */
};

static json_t *host_entry(struct report *r, const char *host)
{
	json_t *h = json_object_get(r->hosts, host);
	if (h || json_object_size(r->hosts) >= MAX_HOSTS)
		return h;
	h = json_pack("{s:i, s:{}, s:{}, s:i, s:i, s:i}", "requests", 0, "methods", "statuses",
		      "bytes_up", 0, "bytes_down", 0, "connections", 0);
	json_object_set_new(r->hosts, host, h);
	return h;
}

static void add(json_t *o, const char *key, json_int_t n)
{
	json_t *v = json_object_get(o, key);
	json_object_set_new(o, key, json_integer((v ? json_integer_value(v) : 0) + n));
}

static bool ok_end(const char *reason)
{
	static const char *const ok[] = { "fin", "complete", "client_reset", "shutdown",
					  "answered" };
	if (!reason)
		return true;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strcmp(reason, ok[i]) == 0)
			return true;
	return false;
}

static void on_record(void *arg, const json_t *rec)
{
	struct report *r = arg;
	struct flow_fields f;
	if (flow_fields_read(rec, &f) < 0)
		return;
	const char *host = f.host[0] ? f.host : "(none)";
	if (strcmp(f.type, "dns") == 0) {
		if (json_object_size(r->dns) < MAX_HOSTS || json_object_get(r->dns, host))
			add(r->dns, host, 1);
	} else if (strcmp(f.type, "http") == 0) {
		json_t *h = host_entry(r, host);
		if (h) {
			add(h, "requests", 1);
			add(json_object_get(h, "methods"), f.method ? f.method : "?", 1);
			char cls[16] = "none";
			if (f.has_response)
				snprintf(cls, sizeof(cls), "%dxx", f.status / 100);
			add(json_object_get(h, "statuses"), cls, 1);
		}
		if (f.status >= 200 && f.status < 300 &&
		    json_array_size(r->downloads) < MAX_DOWNLOADS) {
			const json_t *body = f.resp_body;
			json_int_t size = json_integer_value(json_object_get(body, "size"));
			if (size > 0) {
				json_t *sha = json_null();
				size_t len;
				uint8_t *owned;
				const uint8_t *p = flow_body_bytes(body, &len, &owned);
				if (p && !json_is_true(json_object_get(body, "truncated"))) {
					uint8_t d[crypto_hash_sha256_BYTES];
					crypto_hash_sha256(d, p, len);
					char hex[2 * sizeof(d) + 1];
					sodium_bin2hex(hex, sizeof(hex), d, sizeof(d));
					sha = json_string(hex);
				}
				free(owned);
				json_array_append_new(r->downloads,
						      json_pack("{s:s?, s:i, s:I, s:o}", "url",
								f.url, "status", f.status, "size",
								size, "sha256", sha));
			}
		}
	} else {
		json_t *h = host_entry(r, host);
		if (h) {
			add(h, "connections", 1);
			add(h, "bytes_up", f.bytes_up);
			add(h, "bytes_down", f.bytes_down);
		}
	}
	if ((!ok_end(f.end_reason) || f.error) && json_array_size(r->failures) < MAX_FAILURES)
		json_array_append_new(r->failures,
				      json_pack("{s:s, s:s, s:s?, s:s?}", "type", f.type, "host",
						host, "reason", f.end_reason, "error", f.error));
}

static void human(char *out, size_t n, json_int_t b)
{
	if (b < 10000)
		snprintf(out, n, "%lld B", (long long)b);
	else if (b < 10000000)
		snprintf(out, n, "%.1f KB", (double)b / 1e3);
	else
		snprintf(out, n, "%.1f MB", (double)b / 1e6);
}

static void counts(char *out, size_t n, const json_t *o)
{
	const char *k;
	const json_t *v;
	size_t used = 0;
	out[0] = '\0';
	json_object_foreach((json_t *)o, k, v)
	{
		int w = snprintf(out + used, n - used, "%s%s %lld", used ? ", " : "", k,
				 (long long)json_integer_value(v));
		if (w < 0 || (size_t)w >= n - used)
			break;
		used += (size_t)w;
	}
}

static void print_report(const struct report *r, FILE *out)
{
	fprintf(out, "wgmitm wrap: %zu host%s contacted\n", json_object_size(r->hosts),
		json_object_size(r->hosts) == 1 ? "" : "s");
	const char *host;
	const json_t *h;
	json_object_foreach(r->hosts, host, h)
	{
		char up[32], down[32], m[256], s[256];
		human(up, sizeof(up), json_integer_value(json_object_get(h, "bytes_up")));
		human(down, sizeof(down), json_integer_value(json_object_get(h, "bytes_down")));
		counts(m, sizeof(m), json_object_get(h, "methods"));
		counts(s, sizeof(s), json_object_get(h, "statuses"));
		fprintf(out, "  %-40s %lld request%s%s%s%s%s, %lld connection%s, up %s, down %s\n",
			host, (long long)json_integer_value(json_object_get(h, "requests")),
			json_integer_value(json_object_get(h, "requests")) == 1 ? "" : "s",
			m[0] ? " (" : "", m, m[0] ? "; " : "", m[0] ? s : "",
			(long long)json_integer_value(json_object_get(h, "connections")),
			json_integer_value(json_object_get(h, "connections")) == 1 ? "" : "s", up,
			down);
	}
	size_t i;
	const json_t *d;
	if (json_array_size(r->downloads))
		fprintf(out, "downloads:\n");
	json_array_foreach(r->downloads, i, d)
	{
		char size[32];
		human(size, sizeof(size), json_integer_value(json_object_get(d, "size")));
		const char *sha = json_string_value(json_object_get(d, "sha256"));
		fprintf(out, "  %s  %s  %s\n", json_string_value(json_object_get(d, "url")), size,
			sha ? sha : "(body not kept whole)");
	}
	if (json_array_size(r->failures))
		fprintf(out, "failures:\n");
	json_array_foreach(r->failures, i, d)
	{
		const char *e = json_string_value(json_object_get(d, "error"));
		fprintf(out, "  %s %s: %s%s%s\n", json_string_value(json_object_get(d, "type")),
			json_string_value(json_object_get(d, "host")),
			json_string_value(json_object_get(d, "reason")) ?: "error", e ? ": " : "",
			e ? e : "");
	}
}

/* ---- the command ---------------------------------------------------------- */

static int wrap_run(struct daemon_options *op, struct child_args *ap, int tun_mode,
		    const char *report_json);

int wrapcmd_main(struct daemon_options *op, char **cmd, const char *report_json,
		 const char *home_override, bool env_proxy)
{
	struct daemon_options o = *op;
	char home[4096], err[512];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm wrap: cannot find the home directory\n");
		return 1;
	}
	o.home = home;
	/* Quiet unless asked: the command's own output is what matters. */
	if (log_get_level() == LOG_INFO)
		log_set_level(LOG_WARN);

	struct child_args a = { .argv = cmd };
	struct in_addr dns4;
	struct in6_addr dns6;
	int rc;
	if (env_proxy)
		goto files;
	/* The command's addresses: the pools' first free pair. */
	struct state st;
	if (state_open(&st, home, true, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm wrap: %s\n", err);
		return 1;
	}
	struct in_addr *used = calloc(st.npeers + 1, sizeof(*used));
	for (size_t i = 0; used && i < st.npeers; i++)
		used[i] = st.peers[i].addr4;
	rc = used ? addrpool_allocate(&st.pool, used, st.npeers, &a.addr4, &a.addr6) : -ENOMEM;
	addrpool_server(&st.pool, &dns4, &dns6);
	free(used);
	state_close(&st);
	if (rc < 0) {
		fprintf(stderr, "wgmitm wrap: the address pool is full\n");
		return 1;
	}
files:;
	/* Our CA, made now if there is none, for the command's bundle. */
	struct ca ca;
	bool created;
	if (!o.no_intercept) {
		if (ca_load(&ca, home, true, &created, err, sizeof(err)) < 0) {
			fprintf(stderr, "wgmitm wrap: %s\n", err);
			return 1;
		}
		ca_free(&ca);
	}
	char bundle[4200], resolv[4200], ns[INET_ADDRSTRLEN + 16];
	if (write_bundle(home, bundle, sizeof(bundle)) < 0 && !o.no_intercept)
		return 1;
	a.bundle = bundle;
	if (env_proxy) {
		int port = free_port();
		if (port < 0 || o.nproxies == DAEMON_MAX_PROXY) {
			fprintf(stderr, "wgmitm wrap: no free loopback port for the proxy\n");
			return 1;
		}
		struct daemon_proxy *dp = &o.proxies[o.nproxies++];
		memset(dp, 0, sizeof(*dp));
		struct sockaddr_in *sa = (struct sockaddr_in *)&dp->addr;
		sa->sin_family = AF_INET;
		sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa->sin_port = htons((uint16_t)port);
		dp->http = dp->socks5 = true;
		dp->peer = WRAP_PEER;
		snprintf(a.proxy, sizeof(a.proxy), "127.0.0.1:%d", port);
		fprintf(stderr,
			"wgmitm wrap --env-proxy: only what honours HTTP_PROXY, HTTPS_PROXY or "
			"ALL_PROXY is captured; raw TCP, UDP, DNS and runtimes that ignore proxy "
			"variables (Node's fetch, many Go programs) go direct and are not in the "
			"report\n");
		return wrap_run(&o, &a, -1, report_json);
	}
	snprintf(resolv, sizeof(resolv), "%s/%s", home, RESOLV_FILE);
	int nl = snprintf(ns, sizeof(ns), "nameserver ");
	inet_ntop(AF_INET, &dns4, ns + nl, sizeof(ns) - (size_t)nl);
	strcat(ns, "\n");
	if (write_whole(resolv, ns, strlen(ns), "", 0) < 0) {
		fprintf(stderr, "wgmitm wrap: %s: %s\n", resolv, strerror(errno));
		return 1;
	}
	a.resolv = resolv;
	return wrap_run(&o, &a, 0, report_json);
}

/* Starts the command (in its namespaces, or with proxy variables when
 * tun is -1) and the endpoint; returns the command's exit status. */
static int wrap_run(struct daemon_options *op, struct child_args *ap, int tun_mode,
		    const char *report_json)
{
	struct daemon_options o = *op;
	struct child_args a = *ap;
	char **cmd = a.argv;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("wgmitm wrap: socketpair");
		return 1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		perror("wgmitm wrap: fork");
		return 1;
	}
	if (pid == 0) {
		close(sv[0]);
		a.sock = sv[1];
		if (tun_mode < 0)
			env_child_main(&a);
		child_main(&a);
	}
	close(sv[1]);
	int tun = tun_mode < 0 ? -1 : recv_fd(sv[0]);
	if (tun < 0 && tun_mode >= 0) {
		int status;
		waitpid(pid, &status, 0);
		close(sv[0]);
		return 1; /* the child said why */
	}
	if (tun >= 0)
		fcntl(tun, F_SETFL, fcntl(tun, F_GETFL) | O_NONBLOCK);

	struct report r = { json_object(), json_array(), json_array(), json_object() };
	struct daemon_wrap w = { .tun_fd = tun,
				 .addr4 = a.addr4,
				 .addr6 = a.addr6,
				 .name = WRAP_PEER,
				 .argv = cmd,
				 .child = pid,
				 .go_fd = sv[0],
				 .on_record = on_record,
				 .arg = &r };
	o.wrap = &w;
	/* Its own WireGuard socket, on loopback and any free port. */
	struct sockaddr_in *lo = (struct sockaddr_in *)&o.listen[0];
	lo->sin_family = AF_INET;
	lo->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	o.nlisten = 1;
	int drc = daemon_run(&o);
	close(sv[0]);
	if (tun >= 0)
		close(tun);
	if (w.child > 0) {
		kill(w.child, SIGTERM);
		waitpid(w.child, &w.status, 0);
	}
	print_report(&r, stderr);
	if (report_json) {
		json_t *doc = json_pack("{s:O, s:O, s:O, s:O, s:i}", "hosts", r.hosts, "downloads",
					r.downloads, "failures", r.failures, "dns", r.dns, "exit",
					WIFEXITED(w.status) ? WEXITSTATUS(w.status)
							    : 128 + WTERMSIG(w.status));
		if (!doc || json_dump_file(doc, report_json, JSON_INDENT(2)) < 0)
			fprintf(stderr, "wgmitm wrap: %s: cannot write the report\n", report_json);
		json_decref(doc);
	}
	json_decref(r.hosts);
	json_decref(r.downloads);
	json_decref(r.failures);
	json_decref(r.dns);
	if (drc != 0 && pid > 0 && WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0)
		return 1;
	return WIFEXITED(w.status) ? WEXITSTATUS(w.status) : 128 + WTERMSIG(w.status);
}
