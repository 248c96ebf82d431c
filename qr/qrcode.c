/* QR codes: libqrencode for the symbol, our own drawing for terminal, PNG and SVG. */
#include "qr/qrcode.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <qrencode.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Largest payload of any QR code: version 40, level L, byte mode. */
#define QR_CODE_BYTES_MAX 2953

static const QRecLevel levels[] = {
	[QR_CODE_LEVEL_L] = QR_ECLEVEL_L,
	[QR_CODE_LEVEL_M] = QR_ECLEVEL_M,
	[QR_CODE_LEVEL_Q] = QR_ECLEVEL_Q,
	[QR_CODE_LEVEL_H] = QR_ECLEVEL_H,
};

int qr_code_encode(struct qr_code *out, const void *data, size_t len, enum qr_code_level level)
{
	QRcode *qr;
	size_t n;

	memset(out, 0, sizeof(*out));
	if ((unsigned)level > QR_CODE_LEVEL_H || (data == NULL && len > 0))
		return -EINVAL;
	if (len > QR_CODE_BYTES_MAX)
		return -EMSGSIZE;
	/* Byte mode for the whole text: a config is mixed-case base64 with
	 * short digit runs, where mode switching saves almost nothing, and
	 * every reader returns byte-mode text unchanged. */
	errno = 0;
	qr = QRcode_encodeData((int)len, data, 0, levels[level]);
	if (qr == NULL)
		return errno == ERANGE ? -EMSGSIZE : errno == ENOMEM ? -ENOMEM : -EINVAL;
	n = (size_t)qr->width * (size_t)qr->width;
	out->modules = malloc(n);
	if (out->modules == NULL) {
		sodium_memzero(qr->data, n);
		QRcode_free(qr);
		return -ENOMEM;
	}
	/* Bit 0 of each libqrencode byte is the module colour. */
	for (size_t i = 0; i < n; i++)
		out->modules[i] = qr->data[i] & 1;
	out->version = qr->version;
	out->width = qr->width;
	out->level = level;
	sodium_memzero(qr->data, n);
	QRcode_free(qr);
	return 0;
}

int qr_code_encode_for_terminal(struct qr_code *out, const void *data, size_t len,
				unsigned max_cols, unsigned *quiet)
{
	int rc = qr_code_encode(out, data, len, QR_CODE_LEVEL_M);

	if (rc != 0)
		return rc;
	if (max_cols == 0 || (unsigned)out->width + 2 * QR_CODE_QUIET <= max_cols) {
		*quiet = QR_CODE_QUIET;
		return 0;
	}
	qr_code_free(out);
	rc = qr_code_encode(out, data, len, QR_CODE_LEVEL_L);
	if (rc != 0)
		return rc;
	for (unsigned q = QR_CODE_QUIET; q >= QR_CODE_TERM_QUIET_MIN; q--) {
		if ((unsigned)out->width + 2 * q <= max_cols) {
			*quiet = q;
			return 0;
		}
	}
	qr_code_free(out);
	return -E2BIG;
}

void qr_code_free(struct qr_code *c)
{
	if (c->modules != NULL) {
		sodium_memzero(c->modules, (size_t)c->width * (size_t)c->width);
		free(c->modules);
	}
	memset(c, 0, sizeof(*c));
}

bool qr_code_dark(const struct qr_code *c, int x, int y)
{
	if (x < 0 || y < 0 || x >= c->width || y >= c->width)
		return false;
	return c->modules[(size_t)y * (size_t)c->width + (size_t)x] != 0;
}

unsigned qr_code_terminal_columns(const struct qr_code *c, unsigned quiet)
{
	return (unsigned)c->width + 2 * quiet;
}

unsigned qr_code_terminal_rows(const struct qr_code *c, unsigned quiet)
{
	return ((unsigned)c->width + 2 * quiet + 1) / 2;
}

/* 0, or the error a stream reported. */
static int stream_result(FILE *f)
{
	if (fflush(f) != 0 || ferror(f))
		return errno != 0 ? -errno : -EIO;
	return 0;
}

int qr_code_write_terminal(const struct qr_code *c, FILE *f, enum qr_term_style style,
			   unsigned quiet)
{
	/* Indexed by (top dark) | (bottom dark) << 1 */
	static const char *const cells[4] = { " ", "\u2580", "\u2584", "\u2588" };
	int size = c->width + 2 * (int)quiet;
	bool invert = style == QR_TERM_PLAIN_INVERTED;

	if (c->modules == NULL || quiet > 64)
		return -EINVAL;
	errno = 0;
	for (int y = 0; y < size; y += 2) {
		if (style == QR_TERM_ANSI)
			fputs("\033[38;5;16;48;5;231m", f);
		for (int x = 0; x < size; x++) {
			int mx = x - (int)quiet, my = y - (int)quiet;
			bool top = qr_code_dark(c, mx, my) != invert;
			/* Below the last row lies more quiet zone: light. */
			bool bottom = y + 1 < size ? qr_code_dark(c, mx, my + 1) != invert : invert;
			fputs(cells[top | bottom << 1], f);
		}
		fputs(style == QR_TERM_ANSI ? "\033[0m\n" : "\n", f);
	}
	return stream_result(f);
}

/* The image pixel (px, py) of a code scaled with the standard quiet zone. */
static bool pixel_dark(const struct qr_code *c, unsigned scale, unsigned px, unsigned py)
{
	return qr_code_dark(c, (int)(px / scale) - QR_CODE_QUIET,
			    (int)(py / scale) - QR_CODE_QUIET);
}

struct png_job {
	png_structp png;
	png_infop info;
	uint8_t *row;
};

/* libpng reports errors by longjmp; the row buffer is owned by the caller
 * so nothing allocated here is lost when it jumps. */
static int png_emit(struct png_job *job, const struct qr_code *c, FILE *f, unsigned scale)
{
	unsigned side = ((unsigned)c->width + 2 * QR_CODE_QUIET) * scale;

	if (setjmp(png_jmpbuf(job->png)))
		return -EIO;
	png_init_io(job->png, f);
	png_set_IHDR(job->png, job->info, side, side, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(job->png, job->info);
	for (unsigned py = 0; py < side; py++) {
		/* 1-bit grey: a set bit is white, bits fill from the MSB. */
		memset(job->row, 0, (side + 7) / 8);
		for (unsigned px = 0; px < side; px++)
			if (!pixel_dark(c, scale, px, py))
				job->row[px / 8] |= (uint8_t)(0x80u >> (px % 8));
		png_write_row(job->png, job->row);
	}
	png_write_end(job->png, NULL);
	return 0;
}

int qr_code_write_png(const struct qr_code *c, FILE *f, unsigned scale)
{
	struct png_job job = { 0 };
	unsigned side;
	int rc;

	if (c->modules == NULL || scale == 0 || scale > QR_CODE_SCALE_MAX)
		return -EINVAL;
	side = ((unsigned)c->width + 2 * QR_CODE_QUIET) * scale;
	job.row = malloc((side + 7) / 8);
	job.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	if (job.png != NULL)
		job.info = png_create_info_struct(job.png);
	if (job.row == NULL || job.png == NULL || job.info == NULL) {
		rc = -ENOMEM;
	} else {
		errno = 0;
		rc = png_emit(&job, c, f, scale);
		if (rc == 0)
			rc = stream_result(f);
		else if (errno != 0)
			rc = -errno;
	}
	if (job.png != NULL)
		png_destroy_write_struct(&job.png, job.info != NULL ? &job.info : NULL);
	free(job.row);
	return rc;
}

int qr_code_write_svg(const struct qr_code *c, FILE *f, unsigned scale)
{
	unsigned n = (unsigned)c->width + 2 * QR_CODE_QUIET;

	if (c->modules == NULL || scale == 0 || scale > QR_CODE_SCALE_MAX)
		return -EINVAL;
	errno = 0;
	fprintf(f,
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%u\" "
		"height=\"%u\" viewBox=\"0 0 %u %u\" shape-rendering=\"crispEdges\">\n"
		"<rect width=\"%u\" height=\"%u\" fill=\"#ffffff\"/>\n"
		"<path fill=\"#000000\" d=\"",
		n * scale, n * scale, n, n, n, n);
	/* One rectangle per horizontal run of dark modules. */
	for (int y = 0; y < c->width; y++) {
		for (int x = 0; x < c->width;) {
			if (!qr_code_dark(c, x, y)) {
				x++;
				continue;
			}
			int run = 1;
			while (qr_code_dark(c, x + run, y))
				run++;
			fprintf(f, "M%d %dh%dv1h-%dz", x + QR_CODE_QUIET, y + QR_CODE_QUIET, run,
				run);
			x += run;
		}
	}
	fputs("\"/>\n</svg>\n", f);
	return stream_result(f);
}

static int save(const struct qr_code *c, const char *path, unsigned scale,
		int (*write)(const struct qr_code *, FILE *, unsigned))
{
	int fd, rc;
	FILE *f;

	if (c->modules == NULL || scale == 0 || scale > QR_CODE_SCALE_MAX)
		return -EINVAL;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (f == NULL) {
		rc = -errno;
		close(fd);
		unlink(path);
		return rc;
	}
	rc = write(c, f, scale);
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc != 0)
		unlink(path);
	return rc;
}

int qr_code_save_png(const struct qr_code *c, const char *path, unsigned scale)
{
	return save(c, path, scale, qr_code_write_png);
}

int qr_code_save_svg(const struct qr_code *c, const char *path, unsigned scale)
{
	return save(c, path, scale, qr_code_write_svg);
}

const char *qr_code_strerror(int rc)
{
	switch (rc) {
	case 0:
		return "success";
	case -EMSGSIZE:
		return "text too long for a QR code (at most 2953 bytes)";
	case -E2BIG:
		return "QR code wider than the terminal; write it as PNG or SVG instead";
	case -EINVAL:
		return "invalid argument (scale must be 1..64)";
	case -EIO:
		return "write error";
	default:
		return strerror(-rc);
	}
}
