#include "cacmd.h"

#include "mitm/ca.h"
#include "state.h"

#include <openssl/pem.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct sub {
	const char *name;
	int (*run)(int argc, char **argv, const char *home);
	const char *usage;
	const char *help;
};

static bool has_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

static int load(struct ca *ca, const char *home, bool *created)
{
	char err[4400];
	if (ca_load(ca, home, true, created, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
		return -1;
	}
	if (*created)
		fprintf(stderr, "wgmitm: generated a new CA in %s\n", ca->cert_path);
	return 0;
}

static int cmd_export(int argc, char **argv, const char *home)
{
	bool der = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--der") == 0) {
			der = true;
		} else {
			fprintf(stderr,
				"wgmitm: unexpected argument \"%s\"\nusage: wgmitm ca export "
				"[--der]\n",
				argv[i]);
			return 2;
		}
	}
	struct ca ca;
	bool created;
	if (load(&ca, home, &created) < 0)
		return 1;
	BIO *out = BIO_new_fp(stdout, BIO_NOCLOSE);
	int ok = out && (der ? i2d_X509_bio(out, ca.cert) : PEM_write_bio_X509(out, ca.cert));
	ok = ok && BIO_flush(out) == 1;
	BIO_free(out);
	ca_free(&ca);
	if (!ok || fflush(stdout) != 0) {
		fprintf(stderr, "wgmitm: cannot write the certificate to stdout\n");
		return 1;
	}
	return 0;
}

static void print_time(const char *label, const ASN1_TIME *t)
{
	struct tm tm;
	char text[64] = "?";
	if (ASN1_TIME_to_tm(t, &tm) == 1)
		strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("%-12s %s\n", label, text);
}

static int cmd_show(int argc, char **argv, const char *home)
{
	if (argc > 1) {
		fprintf(stderr, "wgmitm: unexpected argument \"%s\"\nusage: wgmitm ca show\n",
			argv[1]);
		return 2;
	}
	struct ca ca;
	bool created;
	if (load(&ca, home, &created) < 0)
		return 1;
	char fp[CA_FINGERPRINT_LEN], key[64], subject[512];
	ca_fingerprint(ca.cert, fp);
	ca_key_describe(ca.key, key, sizeof(key));
	X509_NAME_oneline(X509_get_subject_name(ca.cert), subject, sizeof(subject));
	printf("%-12s %s\n", "certificate:", ca.cert_path);
	printf("%-12s %s (%s)\n", "key:", ca.key_path, key);
	printf("%-12s %s\n", "subject:", subject);
	printf("%-12s %s\n", "sha256:", fp);
	print_time("not before:", X509_get0_notBefore(ca.cert));
	print_time("not after:", X509_get0_notAfter(ca.cert));
	ca_free(&ca);
	return 0;
}

static int cmd_import(int argc, char **argv, const char *home)
{
	if (argc != 3) {
		fprintf(stderr,
			"wgmitm: expected CERT and KEY\nusage: wgmitm ca import CERT KEY\n");
		return 2;
	}
	char err[9000];
	if (ca_import(home, argv[1], argv[2], err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
		return 1;
	}
	struct ca ca;
	if (ca_load(&ca, home, false, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "wgmitm: %s\n", err);
		return 1;
	}
	char fp[CA_FINGERPRINT_LEN];
	ca_fingerprint(ca.cert, fp);
	printf("imported the CA into %s (sha256 %s); the previous one, if any, is in %s.bak\n",
	       ca.cert_path, fp, ca.cert_path);
	ca_free(&ca);
	return 0;
}

static const struct sub subs[] = {
	{ "export", cmd_export, "wgmitm ca export [--der]",
	  "Write the CA certificate to stdout, PEM (default) or DER (--der), to\n"
	  "install on a phone, e.g.\n"
	  "  wgmitm ca export > wgmitm-ca.pem        (iOS profile, Android, browsers)\n"
	  "  wgmitm ca export --der > wgmitm-ca.crt  (Android's installer also takes DER)\n"
	  "The CA is generated on first use.\n" },
	{ "show", cmd_show, "wgmitm ca show",
	  "Print the CA's files, key type, subject, SHA-256 fingerprint and validity.\n"
	  "Compare the fingerprint with what the phone shows before trusting it.\n" },
	{ "import", cmd_import, "wgmitm ca import CERT KEY",
	  "Adopt an existing CA (for phones that already trust it): CERT and KEY are\n"
	  "PEM or DER files. The certificate must be a CA (basicConstraints CA:TRUE),\n"
	  "have keyCertSign if it has a keyUsage, be valid now, and match the key.\n"
	  "The previous CA is kept as ca.pem.bak and ca-key.pem.bak.\n" },
	{ 0 },
};

int cacmd_main(int argc, char **argv, const char *home)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		FILE *out = argc < 2 ? stderr : stdout;
		fprintf(out, "usage: wgmitm ca COMMAND [ARGS]\n\n"
			     "The CA that signs intercepted TLS certificates (HOME/ca.pem, "
			     "HOME/ca-key.pem).\n\n"
			     "commands:\n");
		for (const struct sub *s = subs; s->name; s++)
			fprintf(out, "  %s\n", s->usage);
		return argc < 2 ? 2 : 0;
	}
	const struct sub *s = subs;
	while (s->name && strcmp(s->name, argv[1]) != 0)
		s++;
	if (!s->name) {
		fprintf(stderr, "wgmitm: unknown command \"ca %s\" (see `wgmitm ca --help`)\n",
			argv[1]);
		return 2;
	}
	if (has_help(argc - 1, argv + 1)) {
		printf("usage: %s\n\n%s", s->usage, s->help);
		return 0;
	}
	char dir[4096];
	if (state_home_resolve(home, dir, sizeof(dir)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	return s->run(argc - 1, argv + 1, dir);
}
