/*
 * service.c - `popgate run`: what a system daemon does before and after its
 * loop.  In order: read and validate the configuration (errors reach the
 * terminal), take the spool's daemon lock (two daemons never share a
 * spool; a second one exits 75), detach unless -f, open the log (syslog
 * unless -f), write the pid file, hand the spool tree to `user =` and drop
 * to it when started as root, then open the spool and run the scheduler.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "privs.h"
#include "spool.h"

#define LOCK_NAME "popgate.lock"
#define DEFAULT_PID_FILE "/run/popgate.pid"

/* take_lock - flock the spool's lock file for the daemon's life; -1 and a
 * message on stderr when another daemon has it */
static int take_lock(const char *spool_dir)
{
	if (mkdir(spool_dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "popgate: cannot create spool directory %s: %s\n", spool_dir,
			strerror(errno));
		return -2;
	}
	char *path = xasprintf("%s/%s", spool_dir, LOCK_NAME);
	/* like every spool file: 0600 whatever the umask (an older one too) */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		fprintf(stderr, "popgate: cannot open %s: %s\n", path, strerror(errno));
		free(path);
		return -2;
	}
	struct stat lst;
	if (fstat(fd, &lst) == 0 && (lst.st_mode & 077) != 0 && lst.st_uid == geteuid())
		(void)fchmod(fd, 0600);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		fprintf(stderr, "popgate: another popgate daemon%s%s%s is running on spool %s "
			"(lock %s held); not starting a second one\n", *pid ? " (pid " : "", pid,
			*pid ? ")" : "", spool_dir, path);
		close(fd);
		free(path);
		return -1;
	}
	free(path);
	return fd;
}

static void write_pid(int fd)
{
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		LOG_WARN("status=pid-warning reason=\"cannot record pid: %s\"", strerror(errno));
}

static int pid_file_write(const char *path, uid_t uid, gid_t gid)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		LOG_ERR("pid_file=%s status=failed reason=\"%s\"", path, strerror(errno));
		return -1;
	}
	write_pid(fd);
	/* the unprivileged daemon may then empty it at exit */
	if (uid != (uid_t)-1 && fchown(fd, uid, gid) != 0)
		LOG_WARN("pid_file=%s status=chown-failed reason=\"%s\"", path, strerror(errno));
	close(fd);
	return 0;
}

static void pid_file_remove(const char *path)
{
	if (unlink(path) == 0 || errno == ENOENT)
		return;
	/* after the drop the directory (/run) is not ours: leave it empty, so
	 * no stale pid points at an unrelated process */
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0)
		close(fd);
}

static int daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	if (chdir("/") != 0)
		return -1;
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

/* prepare - everything that needs root, in order; returns an exit code */
static int prepare(const struct conf *c, int fg, int lockfd, const char *pid_file)
{
	const struct passwd *pw = NULL;
	int root = geteuid() == 0;
	if (root && c->user != NULL && (pw = getpwnam(c->user)) == NULL) {
		LOG_ERR("user=%s status=failed reason=\"no such user (option 'user' in %s)\"",
			c->user, c->path);
		return EX_NOUSER;
	}
	write_pid(lockfd);
	if (pid_file != NULL &&
	    pid_file_write(pid_file, pw ? pw->pw_uid : (uid_t)-1, pw ? pw->pw_gid : (gid_t)-1) != 0)
		return EX_CANTCREAT;
	if (pw != NULL && privs_drop(c, pw) != 0)
		return EX_NOPERM;
	if (pw != NULL)
		LOG_INFO("user=%s uid=%ld gid=%ld status=dropped", pw->pw_name, (long)pw->pw_uid,
			 (long)pw->pw_gid);
	if (root && pw == NULL)
		LOG_WARN("status=running-as-root reason=\"no 'user' in %s; set user = \\\"popgate\\\"\"",
			 c->path);
	return EX_OK;
}

int cmd_run(const struct cli_opts *o, int argc, char **argv)
{
	struct poll_args pa = { .relay = 1 };
	int fg = o->foreground;
	int first = parse_once(argc, argv, "+f", &pa.run_once, &fg);
	if (first < 0 || first != argc) {
		if (first >= 0)
			fprintf(stderr, "popgate run: unexpected argument '%s'\n", argv[first]);
		return EX_USAGE;
	}
	struct conf *c = load(o, 1); /* errors to the terminal, before detaching */
	if (c == NULL)
		return EX_CONFIG;
	if (pa.run_once)
		fg = 1; /* one cycle from a timer or a shell: stays in the foreground */
	int code = EX_TEMPFAIL;
	int lockfd = take_lock(c->spool_dir);
	const char *pid_file = c->pid_file;
	if (pid_file == NULL && !fg && geteuid() == 0)
		pid_file = DEFAULT_PID_FILE;
	if (lockfd < 0) {
		code = lockfd == -1 ? EX_TEMPFAIL : EX_CANTCREAT;
		goto out;
	}
	if (!fg && daemonize() != 0) {
		perror("popgate: cannot detach");
		code = EX_OSERR;
		goto out;
	}
	log_close();
	log_open("popgate", fg, log_get_level());
	code = prepare(c, fg, lockfd, pid_file);
	if (code == EX_OK) {
		struct spool *sp = open_spool(c);
		code = EX_IOERR;
		if (sp != NULL) {
			code = do_poll(c, sp, &pa);
			spool_close(&sp);
		}
	}
	if (pid_file != NULL)
		pid_file_remove(pid_file);
out:
	if (lockfd >= 0)
		close(lockfd);
	conf_free(&c);
	log_close();
	return code;
}
