/*
 * importcmd.c - `popgate import-fetchmailrc [--secrets-dir DIR] [FILE]`:
 * convert a .fetchmailrc (default ~/.fetchmailrc, - for stdin) into a
 * popgate.conf on stdout (fetchmailrc.h does the conversion).
 *
 * With --secrets-dir each password goes to DIR/ACCOUNT.pass, created with
 * mode 0600 and O_EXCL: an existing file is never overwritten (exit 73,
 * and then nothing is written at all).  The configuration is printed only
 * after every secret is on disk.  Exit: 0 all converted, 1 something left
 * out (listed on stderr), 65 syntax error, 66 no such file, 73 a secret
 * file exists or cannot be created, 74 read error, 64 usage.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "cli.h"
#include "fetchmailrc.h"
#include "util.h"

/* write_secret - DIR/NAME.pass, 0600, never over an existing file */
static int write_secret(const char *dir, const struct fmrc_secret *s)
{
	char *path = xasprintf("%s/%s.pass", dir, s->account);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int rc = EX_OK;
	if (fd < 0) {
		fprintf(stderr, "popgate import-fetchmailrc: %s: %s%s\n", path, strerror(errno),
			errno == EEXIST ? " (not overwritten; remove it or choose another "
					  "--secrets-dir)" : "");
		free(path);
		return EX_CANTCREAT;
	}
	size_t n = strlen(s->secret);
	if (write(fd, s->secret, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
		fprintf(stderr, "popgate import-fetchmailrc: write %s: %s\n", path, strerror(errno));
		rc = EX_IOERR;
	}
	if (close(fd) != 0 && rc == EX_OK)
		rc = EX_IOERR;
	free(path);
	return rc;
}

/* secrets_check - refuse before writing anything when one file exists */
static int secrets_check(const char *dir, const struct fmrc_result *r)
{
	for (size_t i = 0; i < r->nsecrets; i++) {
		char *path = xasprintf("%s/%s.pass", dir, r->secrets[i].account);
		struct stat st;
		int exists = lstat(path, &st) == 0;
		if (exists)
			fprintf(stderr, "popgate import-fetchmailrc: %s exists (not overwritten; "
				"remove it or choose another --secrets-dir)\n", path);
		free(path);
		if (exists)
			return EX_CANTCREAT;
	}
	return EX_OK;
}

static const char *local_user(void)
{
	struct passwd *pw = getpwuid(getuid());
	if (pw != NULL)
		return pw->pw_name;
	return getenv("USER");
}

static int import_usage(FILE *f, int rc)
{
	fprintf(f, "usage: popgate import-fetchmailrc [--secrets-dir DIR] [FILE|-]\n"
		"Print a popgate.conf made from FILE (default ~/.fetchmailrc, - for stdin);\n"
		"with --secrets-dir each password goes to DIR/ACCOUNT.pass (mode 0600).\n");
	return rc;
}

/* open_rc - the rcfile: FILE, - (stdin) or ~/.fetchmailrc */
static FILE *open_rc(const char *arg, char **name_r)
{
	if (arg != NULL && strcmp(arg, "-") == 0) {
		*name_r = xstrdup("(stdin)");
		return stdin;
	}
	if (arg == NULL) {
		const char *home = getenv("HOME");
		struct passwd *pw = home ? NULL : getpwuid(getuid());
		*name_r = xasprintf("%s/.fetchmailrc", home ? home : pw ? pw->pw_dir : ".");
	} else {
		/* absolute: the comment names it, and its relative paths follow it */
		char *abs = realpath(arg, NULL);
		*name_r = abs ? abs : xstrdup(arg);
	}
	FILE *f = fopen(*name_r, "r");
	if (f == NULL)
		fprintf(stderr, "popgate import-fetchmailrc: cannot open %s: %s\n", *name_r,
			strerror(errno));
	return f;
}

/* secrets_dir - DIR made (0700) if missing, as an absolute path */
static char *secrets_dir(const char *dir)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "popgate import-fetchmailrc: mkdir %s: %s\n", dir, strerror(errno));
		return NULL;
	}
	char *abs = realpath(dir, NULL);
	if (abs == NULL)
		fprintf(stderr, "popgate import-fetchmailrc: %s: %s\n", dir, strerror(errno));
	return abs;
}

int cmd_import_fetchmailrc(const struct cli_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "secrets-dir", required_argument, NULL, 's' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL;
	int ch;
	(void)o;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+s:h", longopts, NULL)) != -1) {
		if (ch == 's')
			dir = optarg;
		else if (ch == 'h')
			return import_usage(stdout, EX_OK);
		else
			return import_usage(stderr, EX_USAGE);
	}
	if (argc - optind > 1)
		return import_usage(stderr, EX_USAGE);
	char *name = NULL, *absdir = NULL, *text = NULL;
	size_t tlen = 0;
	FILE *in = open_rc(optind < argc ? argv[optind] : NULL, &name);
	if (in == NULL) {
		free(name);
		return EX_NOINPUT;
	}
	if (dir != NULL && (absdir = secrets_dir(dir)) == NULL) {
		if (in != stdin)
			fclose(in);
		free(name);
		return EX_CANTCREAT;
	}
	struct fmrc_opts fo = { .source = name, .secrets_dir = absdir, .local_user = local_user() };
	struct fmrc_result r;
	FILE *mem = open_memstream(&text, &tlen);
	if (mem == NULL)
		abort();
	enum fmrc_status st = fmrc_convert(in, mem, stderr, &fo, &r);
	fclose(mem);
	if (in != stdin)
		fclose(in);
	int rc = (int)st;
	if (st == FMRC_SYNTAX || st == FMRC_IO) {
		fprintf(stderr, "popgate import-fetchmailrc: %s\n", r.error);
	} else if (absdir != NULL && (rc = secrets_check(absdir, &r)) == EX_OK) {
		for (size_t i = 0; i < r.nsecrets && rc == EX_OK; i++)
			rc = write_secret(absdir, &r.secrets[i]);
		if (rc == EX_OK)
			rc = (int)st;
	} else if (absdir == NULL && r.nsecrets > 0) {
		fprintf(stderr, "popgate import-fetchmailrc: %zu password%s not written: run with "
			"--secrets-dir DIR, or put each in the file its password_file names\n",
			r.nsecrets, r.nsecrets == 1 ? "" : "s");
		rc = FMRC_PARTIAL;
	}
	if (rc == FMRC_OK || rc == FMRC_PARTIAL) {
		fputs(text, stdout);
		if (fflush(stdout) != 0)
			rc = EX_IOERR;
		if (r.nleft_out > 0)
			fprintf(stderr, "popgate import-fetchmailrc: %zu keyword%s not converted (see "
				"above and the NOT CONVERTED comments)\n", r.nleft_out,
				r.nleft_out == 1 ? "" : "s");
	}
	fmrc_result_free(&r);
	free(text);
	free(absdir);
	free(name);
	return rc;
}
