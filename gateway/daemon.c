/*
 * daemon.c - the long-running modes: signals, the schedule loop, detaching,
 * and the run command.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "spool.h"

volatile sig_atomic_t cli_stop;
static int wake_pipe[2] = { -1, -1 };

static void on_stop(int sig)
{
	int saved = errno;
	cli_stop = 1;
	if (wake_pipe[1] >= 0) {
		ssize_t r = write(wake_pipe[1], "x", 1);
		(void)r;
	}
	errno = saved;
	(void)sig;
}

void cli_install_signals(void)
{
	if (wake_pipe[0] < 0 && pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		wake_pipe[0] = wake_pipe[1] = -1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

void cli_sleep(int seconds)
{
	if (cli_stop || seconds <= 0)
		return;
	struct pollfd pfd = { .fd = wake_pipe[0], .events = POLLIN };
	if (wake_pipe[0] < 0) {
		sleep((unsigned)seconds);
		return;
	}
	poll(&pfd, 1, seconds * 1000);
}

/* schedule - the daemon loop: poll each selected account every interval,
 * relay after a poll brought mail and whenever a deferred message is due */
int schedule(const struct conf *c, struct spool *sp, const struct conf_account **sel,
		    size_t n, int do_poll, int do_relay)
{
	time_t *next = xcalloc(n ? n : 1, sizeof *next);
	int code = EX_OK;
	while (!cli_stop) {
		time_t now = time(NULL), wake = now + 300;
		unsigned int fetched = 0;
		for (size_t i = 0; do_poll && i < n && !cli_stop; i++) {
			if (now >= next[i]) {
				poll_one(c, sel[i], sp, &fetched);
				next[i] = time(NULL) + sel[i]->interval;
			}
			if (next[i] < wake)
				wake = next[i];
		}
		time_t due = 0;
		char *err = NULL;
		if (do_relay && !cli_stop && spool_next_due(sp, &due, &err) == SPOOL_OK && due != 0 &&
		    due <= time(NULL))
			relay_once(c, sp);
		free(err);
		err = NULL;
		if (do_relay && spool_next_due(sp, &due, &err) == SPOOL_OK && due != 0 && due < wake)
			wake = due;
		free(err);
		long left = (long)(wake - time(NULL));
		cli_sleep(left < 1 ? 1 : (int)left);
	}
	LOG_INFO("status=stopped reason=\"signal\"");
	free(next);
	return code;
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

int cmd_run(const struct cli_opts *o, int argc, char **argv)
{
	struct poll_args pa = { .relay = 1 };
	int fg = o->foreground;
	int first = parse_once(argc, argv, "+f", NULL, &fg);
	if (first < 0 || first != argc) {
		if (first >= 0)
			fprintf(stderr, "popgate run: unexpected argument '%s'\n", argv[first]);
		return EX_USAGE;
	}
	if (!fg) {
		/* validate before detaching so errors reach the terminal */
		struct conf *c = NULL;
		char *err = NULL;
		if (conf_load(o->conf_path, &c, &err) != PG_OK) {
			fprintf(stderr, "popgate: configuration errors:\n%s\n", err);
			free(err);
			return EX_CONFIG;
		}
		conf_free(&c);
		if (daemonize() != 0) {
			perror("popgate: cannot detach");
			return EX_OSERR;
		}
	}
	return with_spool(o, fg, do_poll, &pa);
}

