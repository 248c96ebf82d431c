/* QR codes of realistic client configs: every output (terminal in each
 * style, PNG, SVG) is decoded by an independent reader (zbarimg, with
 * rsvg-convert rasterising the SVG) and compared byte for byte with the
 * config text. The terminal drawing is parsed back into modules first. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qr/qrcode.h"
#include "qr/wgconf.h"

static char tmpdir[] = "/tmp/wgmitm-test-qr-XXXXXX";

/* A config as a phone gets it: both addresses, DNS, MTU, a preshared key,
 * keepalive, an IPv6 endpoint and an application list. */
static size_t realistic_config(char *buf, size_t cap, enum qr_wgconf_apps mode)
{
	struct qr_wgconf c;
	char err[QR_WGCONF_ERR_MAX];
	size_t len = 0;

	qr_wgconf_init(&c);
	for (int i = 0; i < QR_WGCONF_KEY_LEN; i++) {
		c.private_key[i] = (uint8_t)(0x91 * i + 7);
		c.public_key[i] = (uint8_t)(0x35 * i + 1);
		c.psk[i] = (uint8_t)(0x6b * i + 3);
	}
	c.has_psk = true;
	c.address4.family = AF_INET;
	inet_pton(AF_INET, "10.66.77.2", &c.address4.addr.v4);
	c.address4.prefix = 32;
	c.address6.family = AF_INET6;
	inet_pton(AF_INET6, "fd77:6d69:746d::2", &c.address6.addr.v6);
	c.address6.prefix = 128;
	c.n_dns = 2;
	c.dns[0].family = AF_INET;
	inet_pton(AF_INET, "10.66.77.1", &c.dns[0].addr.v4);
	c.dns[1].family = AF_INET6;
	inet_pton(AF_INET6, "fd77:6d69:746d::1", &c.dns[1].addr.v6);
	c.mtu = 1380;
	c.keepalive = 25;
	assert_int_equal(qr_endpoint_parse(&c.endpoint, "[2001:db8:1234::17]:51820", 0, NULL, 0),
			 0);
	c.apps_mode = mode;
	if (mode != QR_WGCONF_APPS_ALL) {
		c.n_apps = 2;
		strcpy(c.apps[0], "com.android.chrome");
		strcpy(c.apps[1], "org.mozilla.firefox");
	}
	assert_int_equal(qr_wgconf_render(&c, buf, cap, &len, err, sizeof(err)), 0);
	qr_wgconf_wipe(&c);
	return len;
}

static void need_tool(const char *tool, const char *package)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	if (system(cmd) != 0)
		fail_msg("%s not found: install Debian's %s (scripts/setup does)", tool, package);
}

/* zbarimg's reading of an image, exactly as bytes. With -Sbinary zbar
 * neither converts character sets nor appends the newline --raw otherwise
 * adds (checked with zbar 0.23.92). Its stderr (ImageMagick's D-Bus noise
 * in containers) is dropped. Returns the length, or -1 when nothing was
 * decoded. */
static long zbar_decode(const char *image, char *out, size_t cap)
{
	char cmd[512];
	FILE *p;
	size_t n;
	int status;

	snprintf(cmd, sizeof(cmd),
		 "zbarimg --raw -q -Sdisable -Sqrcode.enable -Sbinary '%s' 2>/dev/null", image);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, cap, p);
	status = pclose(p);
	if (status != 0 || n == 0)
		return -1;
	assert_true(n < cap);
	return (long)n;
}

static void assert_decodes_to(const char *image, const char *text, size_t len)
{
	char got[8192];
	long n = zbar_decode(image, got, sizeof(got));

	if (n < 0)
		fail_msg("zbarimg could not read a QR code in %s", image);
	if ((size_t)n != len || memcmp(got, text, len) != 0)
		fail_msg("%s decoded to %ld bytes, want %zu:\n%.*s", image, n, len, (int)n, got);
}

/* ---- terminal ---- */

/* A module bitmap rebuilt from the terminal drawing. */
struct bitmap {
	int w, h;
	uint8_t px[400 * 400]; /* 1 = dark */
};

static void parse_terminal(const char *s, size_t len, bool ansi, bool inverted, struct bitmap *bm)
{
	int x = 0, row = 0;

	memset(bm, 0, sizeof(*bm));
	bm->w = -1;
	for (size_t i = 0; i < len;) {
		int top, bottom;
		unsigned char ch = (unsigned char)s[i];

		if (ch == '\033') {
			assert_true(ansi);
			assert_int_equal(s[i + 1], '[');
			while (i < len && s[i] != 'm')
				i++;
			i++;
			continue;
		}
		if (ch == '\n') {
			if (bm->w < 0)
				bm->w = x;
			assert_int_equal(x, bm->w); /* every line equally wide */
			x = 0;
			row++;
			i++;
			continue;
		}
		if (ch == ' ') {
			top = bottom = 0;
			i++;
		} else {
			assert_true(i + 3 <= len);
			assert_int_equal((unsigned char)s[i], 0xe2);
			assert_int_equal((unsigned char)s[i + 1], 0x96);
			switch ((unsigned char)s[i + 2]) {
			case 0x80: /* ▀ upper half */
				top = 1, bottom = 0;
				break;
			case 0x84: /* ▄ lower half */
				top = 0, bottom = 1;
				break;
			case 0x88: /* █ full */
				top = bottom = 1;
				break;
			default:
				fail_msg("unexpected character at byte %zu", i);
				return;
			}
			i += 3;
		}
		assert_true(x < 400 && 2 * row + 1 < 400);
		bm->px[(2 * row) * 400 + x] = (uint8_t)(top ^ inverted);
		bm->px[(2 * row + 1) * 400 + x] = (uint8_t)(bottom ^ inverted);
		x++;
	}
	assert_int_equal(x, 0); /* ends with a newline */
	bm->h = 2 * row;
}

/* PBM (P4) with scale pixels per module, for zbarimg. */
static void write_pbm(const char *path, const struct bitmap *bm, int w, int h, int scale)
{
	FILE *f = fopen(path, "wb");
	int pw = w * scale, rowbytes = (pw + 7) / 8;
	uint8_t row[400 * 8 / 8 + 1];

	assert_non_null(f);
	fprintf(f, "P4\n%d %d\n", pw, h * scale);
	for (int y = 0; y < h * scale; y++) {
		memset(row, 0, sizeof(row));
		for (int x = 0; x < pw; x++)
			if (bm->px[(y / scale) * 400 + x / scale])
				row[x / 8] |= (uint8_t)(0x80 >> (x % 8));
		assert_int_equal(fwrite(row, 1, (size_t)rowbytes, f), (size_t)rowbytes);
	}
	assert_int_equal(fclose(f), 0);
}

static void check_terminal(const char *text, size_t len, enum qr_term_style style, const char *tag)
{
	static struct bitmap bm;
	struct qr_code code = { 0 };
	unsigned quiet = 0;
	char *out = NULL, pbm[256];
	size_t outlen = 0;
	FILE *f;

	assert_int_equal(qr_code_encode_for_terminal(&code, text, len, 80, &quiet), 0);
	f = open_memstream(&out, &outlen);
	assert_non_null(f);
	assert_int_equal(qr_code_write_terminal(&code, f, style, quiet), 0);
	assert_int_equal(fclose(f), 0);

	parse_terminal(out, outlen, style == QR_TERM_ANSI, style == QR_TERM_PLAIN_INVERTED, &bm);
	int size = code.width + 2 * (int)quiet;
	assert_int_equal(bm.w, size);
	assert_int_equal((unsigned)bm.w, qr_code_terminal_columns(&code, quiet));
	assert_int_equal((unsigned)bm.h / 2, qr_code_terminal_rows(&code, quiet));
	assert_true(bm.w <= 80);
	/* The drawing holds exactly the symbol and a light quiet zone. */
	for (int y = 0; y < bm.h; y++)
		for (int x = 0; x < size; x++)
			assert_int_equal(
				bm.px[y * 400 + x],
				y < size && qr_code_dark(&code, x - (int)quiet, y - (int)quiet));
	if (style == QR_TERM_ANSI) {
		/* Every line sets black on white itself and resets at its end. */
		int lines = 0;
		for (char *p = out; (p = strstr(p, "\033[38;5;16;48;5;231m")) != NULL; p++)
			lines++;
		assert_int_equal(lines, bm.h / 2);
		assert_non_null(strstr(out, "\033[0m\n"));
	} else {
		assert_null(memchr(out, '\033', outlen));
	}

	snprintf(pbm, sizeof(pbm), "%s/term-%s.pbm", tmpdir, tag);
	write_pbm(pbm, &bm, size, size, 4);
	assert_decodes_to(pbm, text, len);
	free(out);
	qr_code_free(&code);
}

static void test_terminal_decodes(void **state)
{
	char text[QR_WGCONF_TEXT_MAX];
	size_t len;

	need_tool("zbarimg", "zbar-tools");
	len = realistic_config(text, sizeof(text), QR_WGCONF_APPS_INCLUDE);
	check_terminal(text, len, QR_TERM_ANSI, "ansi");
	check_terminal(text, len, QR_TERM_PLAIN, "plain");
	check_terminal(text, len, QR_TERM_PLAIN_INVERTED, "inverted");
	len = realistic_config(text, sizeof(text), QR_WGCONF_APPS_EXCLUDE);
	check_terminal(text, len, QR_TERM_PLAIN, "excluded");
}

static void test_terminal_width(void **state)
{
	char text[QR_WGCONF_TEXT_MAX];
	struct qr_code code = { 0 };
	unsigned quiet = 0;
	size_t len = realistic_config(text, sizeof(text), QR_WGCONF_APPS_ALL);

	/* A typical config: ~400 bytes, level L, quiet zone 4, within 80 columns. */
	assert_int_equal(qr_code_encode_for_terminal(&code, text, len, 80, &quiet), 0);
	print_message("typical config: %zu bytes -> version %d level %s, %d modules, quiet %u: "
		      "%u columns x %u rows\n",
		      len, code.version, code.level == QR_CODE_LEVEL_L ? "L" : "M", code.width,
		      quiet, qr_code_terminal_columns(&code, quiet),
		      qr_code_terminal_rows(&code, quiet));
	assert_true(len >= 300 && len <= 425);
	assert_true(qr_code_terminal_columns(&code, quiet) <= 80);
	assert_int_equal(quiet, 4);
	assert_int_equal(code.level, QR_CODE_LEVEL_L);
	qr_code_free(&code);

	/* Without a limit, level M with the full quiet zone. */
	assert_int_equal(qr_code_encode_for_terminal(&code, text, len, 0, &quiet), 0);
	assert_int_equal(code.level, QR_CODE_LEVEL_M);
	assert_int_equal(quiet, 4);
	qr_code_free(&code);

	/* A short text fits at level M. */
	assert_int_equal(qr_code_encode_for_terminal(&code, "hello", 5, 80, &quiet), 0);
	assert_int_equal(code.level, QR_CODE_LEVEL_M);
	assert_int_equal(code.width, 21);
	qr_code_free(&code);

	/* Squeezed: the quiet zone shrinks to 2, then it no longer fits. */
	assert_int_equal(qr_code_encode(&code, text, len, QR_CODE_LEVEL_L), 0);
	int w = code.width;
	qr_code_free(&code);
	assert_int_equal(qr_code_encode_for_terminal(&code, text, len, (unsigned)w + 4, &quiet), 0);
	assert_int_equal(quiet, 2);
	qr_code_free(&code);
	assert_int_equal(qr_code_encode_for_terminal(&code, text, len, (unsigned)w + 3, &quiet),
			 -E2BIG);
	assert_null(code.modules);
}

/* ---- PNG and SVG ---- */

static void check_png_header(const char *path, unsigned side)
{
	uint8_t h[33];
	FILE *f = fopen(path, "rb");

	assert_non_null(f);
	assert_int_equal(fread(h, 1, sizeof(h), f), sizeof(h));
	fclose(f);
	assert_memory_equal(h, "\x89PNG\r\n\x1a\n", 8);
	assert_memory_equal(h + 12, "IHDR", 4);
	assert_int_equal((h[16] << 24 | h[17] << 16 | h[18] << 8 | h[19]), side);
	assert_int_equal((h[20] << 24 | h[21] << 16 | h[22] << 8 | h[23]), side);
	assert_int_equal(h[24], 1); /* bit depth */
	assert_int_equal(h[25], 0); /* greyscale */
}

static void test_png_decodes(void **state)
{
	char text[QR_WGCONF_TEXT_MAX], path[256];
	struct qr_code code = { 0 };
	struct stat st;
	size_t len;

	need_tool("zbarimg", "zbar-tools");
	for (int mode = QR_WGCONF_APPS_INCLUDE; mode <= QR_WGCONF_APPS_EXCLUDE; mode++) {
		len = realistic_config(text, sizeof(text), (enum qr_wgconf_apps)mode);
		assert_int_equal(qr_code_encode(&code, text, len, QR_CODE_LEVEL_M), 0);
		for (unsigned scale = 3; scale <= 8; scale += 5) {
			snprintf(path, sizeof(path), "%s/code-%d-%u.png", tmpdir, mode, scale);
			assert_int_equal(qr_code_save_png(&code, path, scale), 0);
			check_png_header(path, (unsigned)(code.width + 2 * QR_CODE_QUIET) * scale);
			assert_int_equal(stat(path, &st), 0);
			assert_int_equal(st.st_mode & 0777, 0600);
			assert_decodes_to(path, text, len);
		}
		qr_code_free(&code);
	}
}

/* Reads our one SVG path back ("M{x} {y}h{n}v1h-{n}z" runs) and checks it
 * covers exactly the dark modules, offset by the quiet zone. */
static void check_svg_path(const char *svg, const struct qr_code *code)
{
	static uint8_t seen[177 * 177];
	const char *d = strstr(svg, " d=\"");
	int x, y, n, n2, used;

	assert_non_null(d);
	assert_null(strstr(d + 4, " d=\"")); /* one path */
	assert_non_null(strstr(svg, "shape-rendering=\"crispEdges\""));
	memset(seen, 0, sizeof(seen));
	for (d += 4; *d != '"'; d += used) {
		used = 0;
		assert_int_equal(sscanf(d, "M%d %dh%dv1h-%dz%n", &x, &y, &n, &n2, &used), 4);
		assert_int_equal(n, n2);
		for (int i = 0; i < n; i++) {
			int mx = x + i - QR_CODE_QUIET, my = y - QR_CODE_QUIET;
			assert_true(mx >= 0 && my >= 0 && mx < code->width && my < code->width);
			assert_int_equal(seen[my * code->width + mx], 0);
			seen[my * code->width + mx] = 1;
		}
	}
	for (y = 0; y < code->width; y++)
		for (x = 0; x < code->width; x++)
			assert_int_equal(seen[y * code->width + x], qr_code_dark(code, x, y));
}

static void test_svg_decodes(void **state)
{
	char text[QR_WGCONF_TEXT_MAX], svg[256], png[256], cmd[600], want[128];
	struct qr_code code = { 0 };
	size_t len;

	need_tool("zbarimg", "zbar-tools");
	need_tool("rsvg-convert", "librsvg2-bin");
	len = realistic_config(text, sizeof(text), QR_WGCONF_APPS_INCLUDE);
	assert_int_equal(qr_code_encode(&code, text, len, QR_CODE_LEVEL_M), 0);
	snprintf(svg, sizeof(svg), "%s/code.svg", tmpdir);
	snprintf(png, sizeof(png), "%s/code-svg.png", tmpdir);
	assert_int_equal(qr_code_save_svg(&code, svg, 6), 0);

	FILE *f = fopen(svg, "r");
	static char body[200000];
	assert_non_null(f);
	size_t n = fread(body, 1, sizeof(body) - 1, f);
	fclose(f);
	body[n] = '\0';
	unsigned side = (unsigned)(code.width + 2 * QR_CODE_QUIET);
	snprintf(want, sizeof(want), "width=\"%u\" height=\"%u\" viewBox=\"0 0 %u %u\"", side * 6,
		 side * 6, side, side);
	assert_non_null(strstr(body, want));
	check_svg_path(body, &code);

	snprintf(cmd, sizeof(cmd), "rsvg-convert -b white -o '%s' '%s'", png, svg);
	assert_int_equal(system(cmd), 0);
	assert_decodes_to(png, text, len);
	qr_code_free(&code);
}

/* ---- errors ---- */

static void test_errors(void **state)
{
	struct qr_code code = { 0 };
	static char big[2954];
	char path[256];
	FILE *full;

	memset(big, 'a', sizeof(big));
	assert_int_equal(qr_code_encode(&code, big, sizeof(big), QR_CODE_LEVEL_L), -EMSGSIZE);
	assert_int_equal(qr_code_encode(&code, big, sizeof(big) - 1, QR_CODE_LEVEL_L), 0);
	assert_int_equal(code.version, 40);
	qr_code_free(&code);
	/* 2953 bytes fit level L only */
	assert_int_equal(qr_code_encode(&code, big, sizeof(big) - 1, QR_CODE_LEVEL_M), -EMSGSIZE);
	assert_int_equal(qr_code_encode(&code, big, 10, (enum qr_code_level)7), -EINVAL);
	assert_non_null(strstr(qr_code_strerror(-EMSGSIZE), "too long"));
	assert_non_null(strstr(qr_code_strerror(-E2BIG), "PNG or SVG"));

	assert_int_equal(qr_code_encode(&code, "x", 1, QR_CODE_LEVEL_H), 0);
	assert_int_equal(qr_code_save_png(&code, "/nonexistent-dir/q.png", 4), -ENOENT);
	assert_int_equal(qr_code_save_svg(&code, "/nonexistent-dir/q.svg", 4), -ENOENT);
	snprintf(path, sizeof(path), "%s/bad-scale.png", tmpdir);
	assert_int_equal(qr_code_save_png(&code, path, 0), -EINVAL);
	assert_int_equal(qr_code_save_png(&code, path, QR_CODE_SCALE_MAX + 1), -EINVAL);
	assert_int_equal(access(path, F_OK), -1);

	/* A device that refuses every write: each writer reports it. */
	full = fopen("/dev/full", "w");
	if (full != NULL) {
		assert_int_equal(qr_code_write_png(&code, full, 4), -ENOSPC);
		clearerr(full);
		assert_int_equal(qr_code_write_svg(&code, full, 4), -ENOSPC);
		clearerr(full);
		assert_int_equal(qr_code_write_terminal(&code, full, QR_TERM_ANSI, 4), -ENOSPC);
		fclose(full);
	}
	qr_code_free(&code);
	qr_code_free(&code); /* twice is harmless */
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_terminal_width), cmocka_unit_test(test_terminal_decodes),
		cmocka_unit_test(test_png_decodes),    cmocka_unit_test(test_svg_decodes),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
