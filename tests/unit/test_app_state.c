/* State directory: creation, keys that persist, peers, and clear errors
 * for corrupt or hand-edited files that are never overwritten. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/addrpool.h"
#include "common/atomicfile.h"
#include "state.h"

struct fixture {
	char home[256];
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->home, sizeof(f->home), "/tmp/wgmitm-state-XXXXXX");
	assert_non_null(mkdtemp(f->home));
	*ctx = f;
	return 0;
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->home);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void write_file(const char *home, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", home, name);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static char *read_file(const char *home, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", home, name);
	FILE *fp = fopen(path, "r");
	if (!fp)
		return NULL;
	char *buf = calloc(1, 65536);
	size_t n = fread(buf, 1, 65535, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static mode_t file_mode(const char *home, const char *name)
{
	char path[512];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/%s", home, name);
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_mode & 0777;
}

static void test_create_and_reopen_keeps_keys(void **ctx)
{
	struct fixture *f = *ctx;
	struct state st;
	char err[512];
	assert_int_equal(state_open(&st, f->home, true, err, sizeof(err)), 0);
	uint8_t pub[32];
	memcpy(pub, st.public_key, 32);
	assert_int_equal(st.npeers, 0);
	assert_int_equal(file_mode(f->home, "server.json"), 0600);
	struct state_peer *p;
	assert_int_equal(state_peer_create(&st, "phone", &p, err, sizeof(err)), 0);
	uint8_t peer_priv[32];
	memcpy(peer_priv, p->private_key, 32);
	assert_int_equal(state_save_peers(&st, err, sizeof(err)), 0);
	assert_int_equal(file_mode(f->home, "peers.json"), 0600);
	state_close(&st);

	/* A restart sees the same keys: configs already scanned stay valid. */
	assert_int_equal(state_open(&st, f->home, true, err, sizeof(err)), 0);
	assert_memory_equal(st.public_key, pub, 32);
	assert_int_equal(st.npeers, 1);
	assert_string_equal(st.peers[0].name, "phone");
	assert_memory_equal(st.peers[0].private_key, peer_priv, 32);
	char a4[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &st.peers[0].addr4, a4, sizeof(a4));
	assert_string_equal(a4, "10.66.77.2");
	state_close(&st);
}

static void test_open_without_create_fails_clearly(void **ctx)
{
	struct fixture *f = *ctx;
	struct state st;
	char err[512];
	assert_int_equal(state_open(&st, f->home, false, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "server.json"));
}

static void test_peers_get_distinct_addresses(void **ctx)
{
	struct fixture *f = *ctx;
	struct state st;
	char err[512];
	assert_int_equal(state_open(&st, f->home, true, err, sizeof(err)), 0);
	struct state_peer *p;
	for (int i = 0; i < 5; i++) {
		char name[16];
		snprintf(name, sizeof(name), "p%d", i);
		assert_int_equal(state_peer_create(&st, name, &p, err, sizeof(err)), 0);
	}
	assert_int_equal(state_peer_create(&st, "p3", &p, err, sizeof(err)), -EEXIST);
	assert_int_equal(state_peer_create(&st, "bad name", &p, err, sizeof(err)), -EINVAL);
	/* A removed peer's address is reused by the next one. */
	struct in_addr freed = state_peer_find(&st, "p1")->addr4;
	assert_int_equal(state_peer_remove(&st, "p1"), 0);
	assert_int_equal(state_peer_remove(&st, "p1"), -ENOENT);
	assert_int_equal(state_peer_create(&st, "p5", &p, err, sizeof(err)), 0);
	assert_int_equal(p->addr4.s_addr, freed.s_addr);
	assert_int_equal(state_save_peers(&st, err, sizeof(err)), 0);
	state_close(&st);
	assert_int_equal(state_open(&st, f->home, false, err, sizeof(err)), 0);
	assert_int_equal(st.npeers, 5);
	state_close(&st);
}

/* Each corrupt file gives an error naming the file and what is wrong, and
 * the file is left exactly as it was. */
static void expect_peers_error(struct fixture *f, const char *peers, const char *needle)
{
	struct state st;
	char err[512];
	write_file(f->home, "peers.json", peers);
	int rc = state_open(&st, f->home, true, err, sizeof(err));
	if (rc == 0)
		fail_msg("accepted corrupt peers.json: %s", peers);
	assert_non_null(strstr(err, "peers.json"));
	if (!strstr(err, needle))
		fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
	char *after = read_file(f->home, "peers.json");
	assert_string_equal(after, peers);
	free(after);
}

static void test_corrupt_peers(void **ctx)
{
	struct fixture *f = *ctx;
	struct state st;
	char err[512];
	assert_int_equal(state_open(&st, f->home, true, err, sizeof(err)), 0);
	struct state_peer *p;
	assert_int_equal(state_peer_create(&st, "phone", &p, err, sizeof(err)), 0);
	char key[45];
	state_key_to_base64(p->private_key, key);
	char a6[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &p->addr6, a6, sizeof(a6));
	state_close(&st);

	char good_peer[1024];
	snprintf(good_peer, sizeof(good_peer),
		 "{\"name\":\"phone\",\"private_key\":\"%s\",\"preshared_key\":\"%s\",\"address4\":"
		 "\"10.66.77.2\",\"address6\":\"%s\"}",
		 key, key, a6);
	char text[4096];

	expect_peers_error(f, "{\"version\":1,\"peers\":[", "not valid JSON");
	expect_peers_error(f, "[]", "JSON object");
	expect_peers_error(f, "{\"version\":7,\"peers\":[]}", "version");
	expect_peers_error(f, "{\"version\":1,\"peers\":{}}", "\"peers\" must be an array");
	expect_peers_error(f, "{\"version\":1,\"peers\":[{\"name\":\"x\"}]}", "private_key");
	snprintf(text, sizeof(text), "{\"version\":1,\"peers\":[%s]}", good_peer);
	/* Sanity: the good one loads. */
	write_file(f->home, "peers.json", text);
	assert_int_equal(state_open(&st, f->home, false, err, sizeof(err)), 0);
	assert_int_equal(st.npeers, 1);
	state_close(&st);
	/* Bad key, address outside the pool, duplicate, bad mtu. */
	char bad[2048];
	snprintf(bad, sizeof(bad), "%s", good_peer);
	char *k = strstr(bad, key);
	k[3] = '!';
	snprintf(text, sizeof(text), "{\"version\":1,\"peers\":[%s]}", bad);
	expect_peers_error(f, text, "private_key");
	snprintf(bad, sizeof(bad), "%s", good_peer);
	memcpy(strstr(bad, "10.66.77.2"), "10.99.77.2", 10);
	snprintf(text, sizeof(text), "{\"version\":1,\"peers\":[%s]}", bad);
	expect_peers_error(f, text, "address4");
	snprintf(text, sizeof(text), "{\"version\":1,\"peers\":[%s,%s]}", good_peer, good_peer);
	expect_peers_error(f, text, "share the same name");
	snprintf(bad, sizeof(bad), "%s", good_peer);
	bad[strlen(bad) - 1] = '\0';
	strcat(bad, ",\"mtu\":99}");
	snprintf(text, sizeof(text), "{\"version\":1,\"peers\":[%s]}", bad);
	expect_peers_error(f, text, "mtu");
}

static void test_corrupt_server(void **ctx)
{
	struct fixture *f = *ctx;
	struct state st;
	char err[512];
	const char *bad = "{\"version\":1,\"private_key\":\"short\",\"pool4\":\"10.66.77.0/"
			  "24\",\"pool6\":\"fd00::/64\"}";
	write_file(f->home, "server.json", bad);
	assert_int_equal(state_open(&st, f->home, true, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "server.json"));
	assert_non_null(strstr(err, "private_key"));
	char *after = read_file(f->home, "server.json");
	assert_string_equal(after, bad);
	free(after);
	write_file(f->home, "server.json", "");
	assert_int_equal(state_open(&st, f->home, true, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "server.json"));
}

static void test_atomic_write_leaves_no_temp(void **ctx)
{
	struct fixture *f = *ctx;
	char path[512];
	snprintf(path, sizeof(path), "%s/x.json", f->home);
	assert_int_equal(atomicfile_write(path, "abc", 3, 0600), 0);
	assert_int_equal(atomicfile_write(path, "defg", 4, 0600), 0);
	char *text = read_file(f->home, "x.json");
	assert_string_equal(text, "defg");
	free(text);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q tmp", f->home);
	assert_int_not_equal(system(cmd), 0);
}

static void test_home_resolution(void **ctx)
{
	(void)ctx;
	char out[256];
	assert_int_equal(state_home_resolve("/x/y", out, sizeof(out)), 0);
	assert_string_equal(out, "/x/y");
	setenv("WGMITM_HOME", "/from/env", 1);
	assert_int_equal(state_home_resolve(NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "/from/env");
	unsetenv("WGMITM_HOME");
	setenv("HOME", "/home/u", 1);
	assert_int_equal(state_home_resolve(NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "/home/u/.wgmitm");
}

static void test_keys_base64(void **ctx)
{
	(void)ctx;
	uint8_t k[32], back[32];
	for (int i = 0; i < 32; i++)
		k[i] = (uint8_t)(i * 7);
	char b64[45];
	state_key_to_base64(k, b64);
	assert_int_equal(strlen(b64), 44);
	assert_int_equal(state_key_from_base64(b64, back), 0);
	assert_memory_equal(k, back, 32);
	assert_int_equal(state_key_from_base64("AAAA", back), -EINVAL);
	b64[10] = '*';
	assert_int_equal(state_key_from_base64(b64, back), -EINVAL);
	/* Public key of the RFC 7748 Alice private key. */
	uint8_t priv[32], pub[32];
	const char *alice = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
	assert_int_equal(state_key_from_base64(alice, priv), 0);
	state_public_key(priv, pub);
	state_key_to_base64(pub, b64);
	assert_string_equal(b64, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_reopen_keeps_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_without_create_fails_clearly, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_peers_get_distinct_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_peers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_write_leaves_no_temp, setup, teardown),
		cmocka_unit_test(test_home_resolution),
		cmocka_unit_test(test_keys_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
