/* QR codes of a text (the client config) with libqrencode, drawn for a
 * terminal (UTF-8 half blocks), as PNG (libpng, 1-bit grey) or as SVG.
 *
 * Terminal size: a cell holds two modules stacked (▀ ▄ █ and space), so a
 * symbol of W modules with a quiet zone q takes W + 2q columns and
 * ceil((W + 2q) / 2) rows. A typical config (350..425 bytes) is version 13
 * at level L: 69 modules + 2 x 4 = 77 columns, 39 rows. Up to 458 bytes
 * (version 14, 73 modules, quiet zone 3: 79 columns) fits 80 columns. */
#ifndef WGMITM_QR_QRCODE_H
#define WGMITM_QR_QRCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define QR_CODE_QUIET 4          /* the standard quiet zone, used for images */
#define QR_CODE_TERM_QUIET_MIN 2 /* the least a terminal code gets */
#define QR_CODE_SCALE_MAX 64     /* pixels per module in images */

enum qr_code_level {
	QR_CODE_LEVEL_L = 0, /* ~7% of the symbol may be lost */
	QR_CODE_LEVEL_M,     /* ~15% */
	QR_CODE_LEVEL_Q,     /* ~25% */
	QR_CODE_LEVEL_H,     /* ~30% */
};

struct qr_code {
	int version; /* 1..40 */
	int width;   /* modules per side, without the quiet zone */
	enum qr_code_level level;
	uint8_t *modules; /* width * width, row-major, 1 = dark; owned */
};

/* Encodes len bytes (any bytes) at the smallest version for that level.
 * Returns 0, -EMSGSIZE when the data does not fit the largest QR code
 * (2953 bytes at level L), -ENOMEM or -EINVAL. */
int qr_code_encode(struct qr_code *out, const void *data, size_t len, enum qr_code_level level)
	__attribute__((warn_unused_result));

/* Encodes for a terminal max_cols wide (0 = no limit): level M with a quiet
 * zone of 4 when that fits, else level L with the widest quiet zone that
 * fits (4 down to 2). *quiet gets the zone to draw with. Returns 0,
 * -E2BIG when even level L with a zone of 2 is wider than max_cols (show a
 * PNG or SVG instead), or an error of qr_code_encode(). */
int qr_code_encode_for_terminal(struct qr_code *out, const void *data, size_t len,
				unsigned max_cols, unsigned *quiet)
	__attribute__((warn_unused_result));

/* Frees the modules (wiped first: a config QR code holds a private key).
 * Safe on a zeroed struct. */
void qr_code_free(struct qr_code *c);

/* True for a dark module; false outside the symbol (the quiet zone). */
bool qr_code_dark(const struct qr_code *c, int x, int y);

/* Terminal size of the drawing with that quiet zone. */
unsigned qr_code_terminal_columns(const struct qr_code *c, unsigned quiet);
unsigned qr_code_terminal_rows(const struct qr_code *c, unsigned quiet);

enum qr_term_style {
	/* Black modules on a white background with explicit 256-colour escapes
	 * (palette 16 and 231, which themes do not remap), each line reset at
	 * its end: scans on dark and light terminals alike. */
	QR_TERM_ANSI = 0,
	/* No escape codes; blocks are the dark modules: for light-background
	 * terminals, files and printing. */
	QR_TERM_PLAIN,
	/* No escape codes; blocks are the LIGHT modules: for dark-background
	 * terminals that show blocks in a light text colour. */
	QR_TERM_PLAIN_INVERTED,
};

/* Draws the code with UTF-8 half blocks. Returns 0 or -errno (-EIO when
 * the stream reports an error without errno). */
int qr_code_write_terminal(const struct qr_code *c, FILE *f, enum qr_term_style style,
			   unsigned quiet);

/* PNG, 1-bit greyscale, scale pixels per module (1..QR_CODE_SCALE_MAX),
 * quiet zone of QR_CODE_QUIET modules. Returns 0, -EINVAL (bad scale),
 * -ENOMEM, or -errno / -EIO on a write error. */
int qr_code_write_png(const struct qr_code *c, FILE *f, unsigned scale);
/* Same into a new file at path (mode 0600: it holds a private key);
 * -errno from open/write/close. A failed write removes the file. */
int qr_code_save_png(const struct qr_code *c, const char *path, unsigned scale);

/* SVG: a white background and ONE path of dark modules in module units,
 * shape-rendering="crispEdges", quiet zone of QR_CODE_QUIET modules,
 * width/height scale pixels per module. Same results as the PNG writers. */
int qr_code_write_svg(const struct qr_code *c, FILE *f, unsigned scale);
int qr_code_save_svg(const struct qr_code *c, const char *path, unsigned scale);

/* A sentence for a negative result of the functions above. */
const char *qr_code_strerror(int rc);

#endif
