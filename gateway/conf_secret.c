/*
 * conf_secret.c - secrets named by the configuration: password files (one
 * line, mode 0600 or stricter) and password_command (run without a shell,
 * its first line, a 30 s limit).  See conf.h for the contract.
 */
#include "config.h"

#include <confuse.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "conf.h"
#include "conf_int.h"
#include "log.h"

#define SECRET_MAX 4096

/* check_secret_file - the password file exists, is a regular file and is
 * not accessible by group or others */
int conf_check_secret_file(const char *path, char **why_r)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		*why_r = xasprintf("cannot use '%s': %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		*why_r = xasprintf("'%s' is not a regular file", path);
		return -1;
	}
	if (st.st_mode & 077) {
		*why_r = xasprintf("'%s' has mode %04o: it is readable or writable by group or "
				   "others; run chmod 600 '%s'",
				   path, (unsigned)(st.st_mode & 07777), path);
		return -1;
	}
	return 0;
}

/* one_line - accept n bytes as a secret: one non-empty line, no NUL */
static enum pg_res one_line(char *s, size_t n, const char *what, char **secret_r, char **err_r)
{
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	if (n == 0 || n > SECRET_MAX || memchr(s, '\0', n) != NULL || memchr(s, '\n', n) != NULL) {
		set_err(err_r, "%s must give one non-empty line", what);
		explicit_bzero(s, SECRET_MAX + 1);
		free(s);
		return PG_CONFIG;
	}
	s[n] = '\0';
	*secret_r = s;
	return PG_OK;
}

enum pg_res conf_read_file_secret(const char *path, const char *what, char **secret_r,
				  char **err_r)
{
	char *why = NULL;
	*secret_r = NULL;
	if (conf_check_secret_file(path, &why) != 0) {
		set_err(err_r, "%s: %s", what, why);
		free(why);
		return PG_CONFIG;
	}
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		set_err(err_r, "%s: cannot open '%s': %s", what, path, strerror(errno));
		return PG_CONFIG;
	}
	char *s = xmalloc(SECRET_MAX + 2);
	size_t n = fread(s, 1, SECRET_MAX + 1, f);
	fclose(f);
	char *label = xasprintf("%s '%s'", what, path);
	enum pg_res r = one_line(s, n, label, secret_r, err_r);
	free(label);
	return r;
}

/* split_argv - blank-separated words; no shell, no quoting */
static char **split_argv(const char *cmd)
{
	size_t n = 0, cap = 8;
	char **argv = xcalloc(cap, sizeof *argv);
	const char *p = cmd;
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		size_t len = strcspn(p, " \t");
		if (n + 2 > cap)
			argv = xrealloc(argv, (cap *= 2) * sizeof *argv);
		argv[n++] = xstrndup(p, len);
		p += len;
	}
	argv[n] = NULL;
	return argv;
}

static void free_argv(char **argv)
{
	for (size_t i = 0; argv[i] != NULL; i++)
		free(argv[i]);
	free(argv);
}

/* read_child - collect at most SECRET_MAX+1 bytes of the child's stdout
 * within the deadline; returns bytes read or -1 on timeout */
static ssize_t read_child(int fd, char *s, int64_t deadline)
{
	size_t n = 0;
	for (;;) {
		int64_t left = deadline - now_ms();
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (left <= 0)
			return -1;
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return -1;
		ssize_t r = read(fd, s + n, SECRET_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return (ssize_t)n;
		n += (size_t)r;
		if (n > SECRET_MAX)
			return (ssize_t)n; /* too long: refused by one_line */
	}
}

/* run_secret_command - run password_command without a shell (stdin
 * /dev/null, a 30 s limit) and take its first line of output */
static enum pg_res run_secret_command(const struct conf_account *a, char **secret_r,
				      char **err_r)
{
	int pfd[2];
	char **argv = split_argv(a->password_command);
	if (argv[0] == NULL || pipe2(pfd, O_CLOEXEC) != 0) {
		free_argv(argv);
		set_err(err_r, "account '%s': cannot run password_command", a->name);
		return PG_CONFIG;
	}
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0)
			dup2(null, 0);
		dup2(pfd[1], 1);
		execvp(argv[0], argv);
		_exit(errno == ENOENT || errno == ENOTDIR ? 127 : 126);
	}
	close(pfd[1]);
	char *s = xmalloc(SECRET_MAX + 2);
	ssize_t n = pid > 0 ? read_child(pfd[0], s, now_ms() + 30000) : -1;
	close(pfd[0]);
	int status = 0;
	if (pid > 0) {
		if (n < 0)
			kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	enum pg_res r = PG_TEMP;
	/* a program that is not there or not executable is the configuration's
	 * fault (exit 78), not a temporary failure */
	int missing = pid > 0 && n >= 0 && WIFEXITED(status) &&
		      (WEXITSTATUS(status) == 127 || WEXITSTATUS(status) == 126);
	if (pid < 0 || n < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		set_err(err_r, "account '%s': password_command '%s' %s", a->name, argv[0],
			pid < 0 ? "could not be started" : n < 0 ? "timed out after 30 s" :
			!WIFEXITED(status) ? "was killed by a signal" :
			WEXITSTATUS(status) == 127 ? "was not found (option 'password_command': give "
						     "the full path of an installed program)" :
			WEXITSTATUS(status) == 126 ? "cannot be executed (option 'password_command': "
						     "chmod 755 it)" : "exited with an error");
		if (missing)
			r = PG_CONFIG;
		explicit_bzero(s, SECRET_MAX + 2);
		free(s);
	} else {
		char *label = xasprintf("account '%s': password_command", a->name);
		r = one_line(s, (size_t)n, label, secret_r, err_r);
		free(label);
	}
	free_argv(argv);
	return r;
}

enum pg_res conf_read_secret(const struct conf_account *a, char **secret_r, char **err_r)
{
	*secret_r = NULL;
	if (a->password_command != NULL)
		return run_secret_command(a, secret_r, err_r);
	char *what = xasprintf("account '%s': password_file", a->name);
	enum pg_res r = conf_read_file_secret(a->password_file, what, secret_r, err_r);
	free(what);
	return r;
}
