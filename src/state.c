#include "state.h"

#include "common/atomicfile.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_VERSION 1

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

int state_home_resolve(const char *override, char *out, size_t outlen)
{
	const char *home = override;
	if (!home || !*home)
		home = getenv("WGMITM_HOME");
	if (home && *home) {
		if ((size_t)snprintf(out, outlen, "%s", home) >= outlen)
			return -ENAMETOOLONG;
		return 0;
	}
	const char *user_home = getenv("HOME");
	if (!user_home || !*user_home) {
		struct passwd *pw = getpwuid(getuid());
		if (!pw)
			return -ENOENT;
		user_home = pw->pw_dir;
	}
	if ((size_t)snprintf(out, outlen, "%s/.wgmitm", user_home) >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

void state_key_to_base64(const uint8_t key[STATE_KEY_LEN], char out[45])
{
	sodium_bin2base64(out, 45, key, STATE_KEY_LEN, sodium_base64_VARIANT_ORIGINAL);
}

int state_key_from_base64(const char *b64, uint8_t key[STATE_KEY_LEN])
{
	size_t len = 0;
	const char *end;
	if (strlen(b64) != 44)
		return -EINVAL;
	if (sodium_base642bin(key, STATE_KEY_LEN, b64, 44, NULL, &len, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    len != STATE_KEY_LEN || *end != '\0')
		return -EINVAL;
	return 0;
}

void state_generate_private_key(uint8_t private_key[STATE_KEY_LEN])
{
	randombytes_buf(private_key, STATE_KEY_LEN);
	private_key[0] &= 248;
	private_key[31] = (private_key[31] & 127) | 64;
}

void state_public_key(const uint8_t private_key[STATE_KEY_LEN], uint8_t public_key[STATE_KEY_LEN])
{
	crypto_scalarmult_base(public_key, private_key);
}

bool state_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > STATE_NAME_MAX || name[0] == '-' || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static int write_json(const char *path, json_t *root, char *err, size_t errlen)
{
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!text)
		return fail(err, errlen, -ENOMEM, "%s: cannot serialise", path);
	size_t len = strlen(text);
	/* jansson leaves out the final newline that editors expect. */
	char *withnl = realloc(text, len + 2);
	if (!withnl) {
		free(text);
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	}
	withnl[len] = '\n';
	withnl[len + 1] = '\0';
	int rc = atomicfile_write(path, withnl, len + 1, 0600);
	free(withnl);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: cannot write: %s", path, strerror(-rc));
	return 0;
}

static void path_of(const struct state *st, const char *file, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", st->home, file);
}

/* Field readers: each error names the file and the field. */
struct reader {
	const char *path;
	char *err;
	size_t errlen;
	const char *where; /* "" or "peer 3 (phone)" */
};

static int read_string(const struct reader *r, json_t *obj, const char *key, bool required,
		       char *out, size_t outlen)
{
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (!required) {
			out[0] = '\0';
			return 0;
		}
		return fail(r->err, r->errlen, -EINVAL, "%s: %s%smissing field \"%s\"", r->path,
			    r->where, *r->where ? ": " : "", key);
	}
	if (!json_is_string(v) || json_string_length(v) >= outlen)
		return fail(r->err, r->errlen, -EINVAL,
			    "%s: %s%sfield \"%s\" must be a string of at most %zu characters",
			    r->path, r->where, *r->where ? ": " : "", key, outlen - 1);
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	if (strlen(out) != json_string_length(v))
		return fail(r->err, r->errlen, -EINVAL, "%s: %s%sfield \"%s\" holds a NUL byte",
			    r->path, r->where, *r->where ? ": " : "", key);
	return 0;
}

static int read_key(const struct reader *r, json_t *obj, const char *key,
		    uint8_t out[STATE_KEY_LEN])
{
	char b64[64];
	int rc = read_string(r, obj, key, true, b64, sizeof(b64));
	if (rc < 0)
		return rc;
	if (state_key_from_base64(b64, out) < 0)
		return fail(r->err, r->errlen, -EINVAL,
			    "%s: %s%sfield \"%s\" is not a base64 key of 32 bytes", r->path,
			    r->where, *r->where ? ": " : "", key);
	return 0;
}

static int read_uint(const struct reader *r, json_t *obj, const char *key, long long min,
		     long long max, long long def, long long *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return fail(r->err, r->errlen, -EINVAL,
			    "%s: %s%sfield \"%s\" must be an integer from %lld to %lld", r->path,
			    r->where, *r->where ? ": " : "", key, min, max);
	*out = json_integer_value(v);
	return 0;
}

static json_t *load_json(const char *path, char *err, size_t errlen, int *rc)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (access(path, F_OK) != 0) {
			*rc = -ENOENT;
			fail(err, errlen, -ENOENT, "%s: does not exist", path);
			return NULL;
		}
		*rc = -EINVAL;
		fail(err, errlen, -EINVAL, "%s:%d:%d: not valid JSON: %s", path, jerr.line,
		     jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		*rc = -EINVAL;
		fail(err, errlen, -EINVAL, "%s: must hold a JSON object", path);
		return NULL;
	}
	json_t *version = json_object_get(root, "version");
	if (!json_is_integer(version) || json_integer_value(version) != STATE_VERSION) {
		json_decref(root);
		*rc = -EINVAL;
		fail(err, errlen, -EINVAL,
		     "%s: field \"version\" must be %d (this wgmitm reads state version %d)", path,
		     STATE_VERSION, STATE_VERSION);
		return NULL;
	}
	*rc = 0;
	return root;
}

static void random_ula(char *out, size_t outlen)
{
	/* RFC 4193: a random 40-bit global ID makes clashes with other ULAs unlikely. */
	uint8_t g[5];
	randombytes_buf(g, sizeof(g));
	snprintf(out, outlen, "fd%02x:%02x%02x:%02x%02x::/64", g[0], g[1], g[2], g[3], g[4]);
}

static int create_server(struct state *st, const char *path, char *err, size_t errlen)
{
	char pool6[64];
	random_ula(pool6, sizeof(pool6));
	state_generate_private_key(st->private_key);
	char b64[45];
	state_key_to_base64(st->private_key, b64);
	json_t *root =
		json_pack("{s:i, s:s, s:s, s:s, s:i}", "version", STATE_VERSION, "private_key", b64,
			  "pool4", STATE_DEFAULT_POOL4, "pool6", pool6, "port", STATE_DEFAULT_PORT);
	sodium_memzero(b64, sizeof(b64));
	if (!root)
		return fail(err, errlen, -ENOMEM, "out of memory");
	int rc = write_json(path, root, err, errlen);
	json_decref(root);
	return rc;
}

static int load_server(struct state *st, const char *path, char *err, size_t errlen)
{
	int rc;
	json_t *root = load_json(path, err, errlen, &rc);
	if (!root)
		return rc;
	struct reader r = { path, err, errlen, "" };
	char pool4[64], pool6[80];
	long long port;
	if ((rc = read_key(&r, root, "private_key", st->private_key)) < 0 ||
	    (rc = read_string(&r, root, "pool4", true, pool4, sizeof(pool4))) < 0 ||
	    (rc = read_string(&r, root, "pool6", true, pool6, sizeof(pool6))) < 0 ||
	    (rc = read_uint(&r, root, "port", 1, 65535, STATE_DEFAULT_PORT, &port)) < 0)
		goto out;
	if (addrpool_parse4(pool4, &st->pool.net4, &st->pool.prefix4) < 0) {
		rc = fail(err, errlen, -EINVAL,
			  "%s: field \"pool4\" must be an IPv4 network from /8 to /30 with zero "
			  "host bits, not \"%s\"",
			  path, pool4);
		goto out;
	}
	if (addrpool_parse6(pool6, &st->pool.net6, &st->pool.prefix6) < 0) {
		rc = fail(err, errlen, -EINVAL,
			  "%s: field \"pool6\" must be an IPv6 network from /48 to /96 with zero "
			  "host bits, not \"%s\"",
			  path, pool6);
		goto out;
	}
	st->port = (uint16_t)port;
	state_public_key(st->private_key, st->public_key);
out:
	json_decref(root);
	return rc;
}

static int parse_peer(struct state *st, const struct reader *base, json_t *obj, size_t index,
		      struct state_peer *p)
{
	char where[80];
	struct reader r = *base;
	snprintf(where, sizeof(where), "peer %zu", index + 1);
	r.where = where;
	if (!json_is_object(obj))
		return fail(r.err, r.errlen, -EINVAL, "%s: %s must be an object", r.path, where);
	memset(p, 0, sizeof(*p));
	int rc;
	if ((rc = read_string(&r, obj, "name", true, p->name, sizeof(p->name))) < 0)
		return rc;
	if (!state_name_valid(p->name))
		return fail(r.err, r.errlen, -EINVAL,
			    "%s: %s: name \"%s\" may hold only letters, digits, '.', '_' and '-'",
			    r.path, where, p->name);
	snprintf(where, sizeof(where), "peer \"%s\"", p->name);
	char a4[INET_ADDRSTRLEN + 1], a6[INET6_ADDRSTRLEN + 1];
	long long mtu, keepalive, created;
	if ((rc = read_key(&r, obj, "private_key", p->private_key)) < 0 ||
	    (rc = read_key(&r, obj, "preshared_key", p->preshared_key)) < 0 ||
	    (rc = read_string(&r, obj, "address4", true, a4, sizeof(a4))) < 0 ||
	    (rc = read_string(&r, obj, "address6", true, a6, sizeof(a6))) < 0 ||
	    (rc = read_string(&r, obj, "endpoint", false, p->endpoint, sizeof(p->endpoint))) < 0 ||
	    (rc = read_string(&r, obj, "allowed_ips", false, p->allowed_ips,
			      sizeof(p->allowed_ips))) < 0 ||
	    (rc = read_string(&r, obj, "include_apps", false, p->include_apps,
			      sizeof(p->include_apps))) < 0 ||
	    (rc = read_string(&r, obj, "exclude_apps", false, p->exclude_apps,
			      sizeof(p->exclude_apps))) < 0 ||
	    (rc = read_uint(&r, obj, "mtu", 1280, 9000, STATE_DEFAULT_MTU, &mtu)) < 0 ||
	    (rc = read_uint(&r, obj, "keepalive", 0, 65535, STATE_DEFAULT_KEEPALIVE, &keepalive)) <
		    0 ||
	    (rc = read_uint(&r, obj, "created", 0, INT64_MAX, 0, &created)) < 0)
		return rc;
	if (inet_pton(AF_INET, a4, &p->addr4) != 1 || !addrpool_contains4(&st->pool, p->addr4))
		return fail(r.err, r.errlen, -EINVAL,
			    "%s: %s: address4 \"%s\" is not an IPv4 address inside pool4", r.path,
			    where, a4);
	if (inet_pton(AF_INET6, a6, &p->addr6) != 1 || !addrpool_contains6(&st->pool, &p->addr6))
		return fail(r.err, r.errlen, -EINVAL,
			    "%s: %s: address6 \"%s\" is not an IPv6 address inside pool6", r.path,
			    where, a6);
	p->mtu = (uint16_t)mtu;
	p->keepalive = (uint16_t)keepalive;
	p->created = created;
	state_public_key(p->private_key, p->public_key);
	return 0;
}

static int check_unique(const struct state *st, const struct state_peer *peers, size_t n,
			const char *path, char *err, size_t errlen)
{
	struct in_addr server4;
	struct in6_addr server6;
	addrpool_server(&st->pool, &server4, &server6);
	for (size_t i = 0; i < n; i++) {
		if (peers[i].addr4.s_addr == server4.s_addr ||
		    memcmp(&peers[i].addr6, &server6, sizeof(server6)) == 0)
			return fail(err, errlen, -EINVAL,
				    "%s: peer \"%s\" uses the endpoint's own tunnel address", path,
				    peers[i].name);
		for (size_t j = 0; j < i; j++) {
			const char *what = NULL;
			if (strcmp(peers[i].name, peers[j].name) == 0)
				what = "name";
			else if (peers[i].addr4.s_addr == peers[j].addr4.s_addr)
				what = "address4";
			else if (memcmp(&peers[i].addr6, &peers[j].addr6, sizeof(peers[i].addr6)) ==
				 0)
				what = "address6";
			else if (sodium_memcmp(peers[i].public_key, peers[j].public_key,
					       STATE_KEY_LEN) == 0)
				what = "private_key";
			if (what)
				return fail(err, errlen, -EINVAL,
					    "%s: peers \"%s\" and \"%s\" share the same %s", path,
					    peers[j].name, peers[i].name, what);
		}
	}
	return 0;
}

int state_reload_peers(struct state *st, char *err, size_t errlen)
{
	char path[4200];
	path_of(st, "peers.json", path, sizeof(path));
	int rc;
	json_t *root = load_json(path, err, errlen, &rc);
	if (!root) {
		if (rc == -ENOENT) {
			free(st->peers);
			st->peers = NULL;
			st->npeers = 0;
			return 0;
		}
		return rc;
	}
	json_t *arr = json_object_get(root, "peers");
	if (!json_is_array(arr)) {
		json_decref(root);
		return fail(err, errlen, -EINVAL, "%s: field \"peers\" must be an array", path);
	}
	size_t n = json_array_size(arr);
	struct state_peer *peers = calloc(n ? n : 1, sizeof(*peers));
	if (!peers) {
		json_decref(root);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	struct reader r = { path, err, errlen, "" };
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = parse_peer(st, &r, json_array_get(arr, i), i, &peers[i]);
	if (rc == 0)
		rc = check_unique(st, peers, n, path, err, errlen);
	json_decref(root);
	if (rc < 0) {
		sodium_memzero(peers, n * sizeof(*peers));
		free(peers);
		return rc;
	}
	if (st->peers) {
		sodium_memzero(st->peers, st->npeers * sizeof(*st->peers));
		free(st->peers);
	}
	st->peers = peers;
	st->npeers = n;
	return 0;
}

int state_open(struct state *st, const char *home, bool create, char *err, size_t errlen)
{
	memset(st, 0, sizeof(*st));
	st->lock_fd = -1;
	if (sodium_init() < 0)
		return fail(err, errlen, -EIO, "libsodium failed to initialise");
	if ((size_t)snprintf(st->home, sizeof(st->home), "%s", home) >= sizeof(st->home))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", home);
	struct stat sb;
	if (stat(home, &sb) < 0) {
		if (errno != ENOENT || !create)
			return fail(err, errlen, -errno, "%s: %s%s", home, strerror(errno),
				    errno == ENOENT
					    ? " (run `wgmitm run` or `wgmitm peer add` first)"
					    : "");
		if (mkdir(home, 0700) < 0 && errno != EEXIST)
			return fail(err, errlen, -errno, "%s: cannot create: %s", home,
				    strerror(errno));
	} else if (!S_ISDIR(sb.st_mode)) {
		return fail(err, errlen, -ENOTDIR, "%s: not a directory", home);
	}
	char path[4200];
	path_of(st, "server.json", path, sizeof(path));
	int rc = 0;
	if (access(path, F_OK) != 0) {
		if (!create)
			return fail(err, errlen, -ENOENT,
				    "%s: does not exist (run `wgmitm run` first)", path);
		rc = state_lock(st, err, errlen);
		/* Another process may have created it while we waited for the lock. */
		if (rc == 0 && access(path, F_OK) != 0)
			rc = create_server(st, path, err, errlen);
		state_unlock(st);
		if (rc < 0)
			return rc;
	}
	if ((rc = load_server(st, path, err, errlen)) < 0)
		return rc;
	return state_reload_peers(st, err, errlen);
}

void state_close(struct state *st)
{
	state_unlock(st);
	if (st->peers) {
		sodium_memzero(st->peers, st->npeers * sizeof(*st->peers));
		free(st->peers);
	}
	sodium_memzero(st->private_key, sizeof(st->private_key));
	st->peers = NULL;
	st->npeers = 0;
}

int state_lock(struct state *st, char *err, size_t errlen)
{
	char path[4200];
	path_of(st, ".lock", path, sizeof(path));
	if (st->lock_fd >= 0)
		return 0;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			return fail(err, errlen, -e, "%s: cannot lock: %s", path, strerror(e));
		}
	}
	st->lock_fd = fd;
	return 0;
}

void state_unlock(struct state *st)
{
	if (st->lock_fd >= 0) {
		close(st->lock_fd);
		st->lock_fd = -1;
	}
}

int state_save_peers(const struct state *st, char *err, size_t errlen)
{
	char path[4200];
	path_of(st, "peers.json", path, sizeof(path));
	json_t *arr = json_array();
	json_t *root = json_pack("{s:i, s:o}", "version", STATE_VERSION, "peers", arr);
	if (!root)
		return fail(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < st->npeers; i++) {
		const struct state_peer *p = &st->peers[i];
		char priv[45], psk[45], a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN];
		state_key_to_base64(p->private_key, priv);
		state_key_to_base64(p->preshared_key, psk);
		inet_ntop(AF_INET, &p->addr4, a4, sizeof(a4));
		inet_ntop(AF_INET6, &p->addr6, a6, sizeof(a6));
		json_t *obj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:I}", "name", p->name,
					"private_key", priv, "preshared_key", psk, "address4", a4,
					"address6", a6, "mtu", (int)p->mtu, "keepalive",
					(int)p->keepalive, "created", (json_int_t)p->created);
		sodium_memzero(priv, sizeof(priv));
		sodium_memzero(psk, sizeof(psk));
		if (!obj) {
			json_decref(root);
			return fail(err, errlen, -ENOMEM, "out of memory");
		}
		if (*p->endpoint)
			json_object_set_new(obj, "endpoint", json_string(p->endpoint));
		if (*p->allowed_ips)
			json_object_set_new(obj, "allowed_ips", json_string(p->allowed_ips));
		if (*p->include_apps)
			json_object_set_new(obj, "include_apps", json_string(p->include_apps));
		if (*p->exclude_apps)
			json_object_set_new(obj, "exclude_apps", json_string(p->exclude_apps));
		json_array_append_new(arr, obj);
	}
	int rc = write_json(path, root, err, errlen);
	json_decref(root);
	return rc;
}

struct state_peer *state_peer_find(const struct state *st, const char *name)
{
	for (size_t i = 0; i < st->npeers; i++)
		if (strcmp(st->peers[i].name, name) == 0)
			return &st->peers[i];
	return NULL;
}

int state_peer_create(struct state *st, const char *name, struct state_peer **out, char *err,
		      size_t errlen)
{
	if (!state_name_valid(name))
		return fail(err, errlen, -EINVAL,
			    "peer name \"%s\": use 1 to %d letters, digits, '.', '_' or '-', not "
			    "starting with '-' or '.'",
			    name, STATE_NAME_MAX);
	if (state_peer_find(st, name))
		return fail(err, errlen, -EEXIST, "peer \"%s\" already exists", name);
	struct in_addr *used = calloc(st->npeers + 1, sizeof(*used));
	if (!used)
		return fail(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < st->npeers; i++)
		used[i] = st->peers[i].addr4;
	struct in_addr a4;
	struct in6_addr a6;
	int rc = addrpool_allocate(&st->pool, used, st->npeers, &a4, &a6);
	free(used);
	if (rc < 0)
		return fail(err, errlen, rc, "the address pool in %s/server.json is full",
			    st->home);
	struct state_peer *peers = realloc(st->peers, (st->npeers + 1) * sizeof(*peers));
	if (!peers)
		return fail(err, errlen, -ENOMEM, "out of memory");
	st->peers = peers;
	struct state_peer *p = &peers[st->npeers++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	state_generate_private_key(p->private_key);
	state_public_key(p->private_key, p->public_key);
	randombytes_buf(p->preshared_key, sizeof(p->preshared_key));
	p->addr4 = a4;
	p->addr6 = a6;
	p->mtu = STATE_DEFAULT_MTU;
	p->keepalive = STATE_DEFAULT_KEEPALIVE;
	p->created = (int64_t)time(NULL);
	*out = p;
	return 0;
}

int state_peer_remove(struct state *st, const char *name)
{
	struct state_peer *p = state_peer_find(st, name);
	if (!p)
		return -ENOENT;
	size_t i = (size_t)(p - st->peers);
	sodium_memzero(p, sizeof(*p));
	memmove(&st->peers[i], &st->peers[i + 1], (st->npeers - i - 1) * sizeof(*p));
	st->npeers--;
	return 0;
}
