/*
 * confcheck.c - run-time checks of the configuration (see confcheck.h).
 */
#include "config.h"

#include <errno.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "confcheck.h"
#include "privs.h"

/* The problems found, one line each; errors and warnings apart. */
struct found {
	struct buf err;
	struct buf warn;
	int nerr;
	const char *who; /* "user 'popgate'" or "this user" */
	const char *file;
};

/* can_read - R_OK on a file (checked as the current process) */
static void can_read(struct found *f, const char *where, const char *opt, const char *path)
{
	if (path == NULL || access(path, R_OK) == 0)
		return;
	int e = errno;
	f->nerr++;
	if (e == EACCES)
		buf_printf(&f->err, "%s: %soption '%s': %s cannot read '%s': fix its owner or mode "
			   "(for a password file: chown the run-time user, chmod 600)\n",
			   f->file, where, opt, f->who, path);
	else
		buf_printf(&f->err, "%s: %soption '%s': cannot read '%s': %s\n", f->file, where, opt,
			   path, strerror(e));
}

/* find_program - the path execvp() would run for NAME, or NULL */
static char *find_program(const char *name)
{
	if (strchr(name, '/') != NULL)
		return xstrdup(name);
	const char *path = getenv("PATH");
	if (path == NULL || *path == '\0')
		path = "/bin:/usr/bin";
	for (const char *p = path; *p != '\0';) {
		size_t len = strcspn(p, ":");
		char *cand = xasprintf("%.*s/%s", (int)len, len ? p : ".", name);
		if (access(cand, F_OK) == 0)
			return cand;
		free(cand);
		p += len + (p[len] == ':');
	}
	return NULL;
}

/* can_exec - password_command's program exists and is executable */
static void can_exec(struct found *f, const char *where, const char *cmd)
{
	if (cmd == NULL)
		return;
	cmd += strspn(cmd, " \t");
	char *name = xstrndup(cmd, strcspn(cmd, " \t"));
	char *prog = find_program(name);
	struct stat st;
	if (prog == NULL || stat(prog, &st) != 0) {
		f->nerr++;
		buf_printf(&f->err, "%s: %soption 'password_command': program '%s' %s: give the "
			   "full path of an installed program\n", f->file, where, name,
			   prog == NULL ? "is not in PATH" : "does not exist");
	} else if (!S_ISREG(st.st_mode) || access(prog, X_OK) != 0) {
		f->nerr++;
		buf_printf(&f->err, "%s: %soption 'password_command': %s cannot execute '%s': "
			   "chmod 755 it (a regular file)\n", f->file, where, f->who, prog);
	}
	free(prog);
	free(name);
}

/* metrics_dir - metrics_file's directory exists and is writable (a
 * warning: the exporter's directory may be created later; until then each
 * write fails with a logged warning) */
static void metrics_dir(struct found *f, const char *path)
{
	if (path == NULL)
		return;
	char *copy = xstrdup(path);
	const char *dir = dirname(copy);
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		buf_printf(&f->warn, "%s: option 'metrics_file': directory '%s' does not exist: "
			   "create it (mkdir -p '%s') or the metrics are not written\n", f->file, dir,
			   dir);
	else if (access(dir, W_OK | X_OK) != 0)
		buf_printf(&f->warn, "%s: option 'metrics_file': %s cannot write in '%s': the "
			   "metrics are not written until it can\n", f->file, f->who, dir);
	free(copy);
}

static void check_all(struct found *f, const struct conf *c, const struct conf_account *only)
{
	can_read(f, "smtp: ", "ca_file", c->smtp.ca_file);
	can_read(f, "smtp: ", "password_file", c->smtp.password_file);
	for (size_t i = 0; i < c->naccounts; i++) {
		const struct conf_account *a = &c->accounts[i];
		if (only != NULL && a != only)
			continue;
		char *where = xasprintf("account '%s': ", a->name);
		can_read(f, where, "password_file", a->password_file);
		can_read(f, where, "ca_file", a->ca_file);
		can_exec(f, where, a->password_command);
		free(where);
	}
	metrics_dir(f, c->metrics_file);
}

/* as_user - run check_all in a child switched to pw; its findings come
 * back through a pipe as "E<line>" or "W<line>" */
static void as_user(struct found *f, const struct conf *c, const struct conf_account *only,
		    const struct passwd *pw)
{
	int pfd[2];
	if (pipe(pfd) != 0) {
		check_all(f, c, only);
		return;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		if (privs_become(pw) != 0)
			_exit(2);
		struct found g = { .who = f->who, .file = f->file };
		buf_init(&g.err, 65536);
		buf_init(&g.warn, 65536);
		check_all(&g, c, only);
		FILE *out = fdopen(pfd[1], "w");
		if (out != NULL) {
			fprintf(out, "%d\n%s%c%s", g.nerr, g.err.data ? g.err.data : "", '\0',
				g.warn.data ? g.warn.data : "");
			fclose(out);
		}
		_exit(0);
	}
	close(pfd[1]);
	struct buf in;
	buf_init(&in, 65536);
	char chunk[4096];
	ssize_t n;
	while (pid > 0 && (n = read(pfd[0], chunk, sizeof chunk)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		buf_append(&in, chunk, (size_t)n);
	}
	close(pfd[0]);
	int status = 0;
	while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || in.data == NULL) {
		f->nerr++;
		buf_printf(&f->err, "%s: option 'user': cannot check the files as user '%s' "
			   "(cannot switch to it)\n", f->file, pw->pw_name);
	} else {
		f->nerr += atoi(in.data);
		const char *e = strchr(in.data, '\n');
		e = e ? e + 1 : "";
		buf_printf(&f->err, "%s", e);
		const char *w = e + strlen(e);
		if ((size_t)(w - in.data) < in.len)
			buf_printf(&f->warn, "%s", w + 1);
	}
	free(in.data);
}

int confcheck_runtime(const struct conf *c, const struct conf_account *only, char **errs_r,
		      char **warns_r)
{
	struct found f = { .who = "this user", .file = c->path };
	buf_init(&f.err, 65536);
	buf_init(&f.warn, 65536);
	const struct passwd *pw = NULL;
	char *who = NULL;
	if (c->user != NULL && (pw = getpwnam(c->user)) == NULL) {
		f.nerr++;
		buf_printf(&f.err, "%s: option 'user': no such user '%s': create it (useradd "
			   "--system --home-dir /nonexistent --shell /usr/sbin/nologin %s) or remove "
			   "the option (popgate run would exit 67)\n", c->path, c->user, c->user);
	}
	if (pw != NULL)
		f.who = who = xasprintf("user '%s'", pw->pw_name);
	if (pw != NULL && geteuid() == 0 && pw->pw_uid != 0)
		as_user(&f, c, only, pw);
	else
		check_all(&f, c, only);
	*errs_r = f.err.data != NULL && f.err.len > 0 ? f.err.data : NULL;
	*warns_r = f.warn.data != NULL && f.warn.len > 0 ? f.warn.data : NULL;
	if (*errs_r == NULL)
		free(f.err.data);
	if (*warns_r == NULL)
		free(f.warn.data);
	free(who);
	return f.nerr;
}
