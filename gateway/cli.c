/*
 * cli.c - the popgate commands (see cli.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "poller.h"
#include "relay.h"
#include "spool.h"

volatile sig_atomic_t cli_stop;
static int wake_pipe[2] = { -1, -1 };

int pg_exit_code(enum pg_res r)
{
	switch (r) {
	case PG_OK:
		return EX_OK;
	case PG_TEMP:
		return EX_TEMPFAIL;
	case PG_PERM:
		return EX_UNAVAILABLE;
	case PG_PROTO:
		return EX_PROTOCOL;
	case PG_IO:
		return EX_IOERR;
	case PG_AUTH:
		return EX_NOPERM;
	case PG_CONFIG:
		return EX_CONFIG;
	}
	return EX_SOFTWARE;
}

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

/* load - read the config and set up logging; prints errors itself */
static struct conf *load(const struct cli_opts *o, int to_stderr)
{
	struct conf *c = NULL;
	char *err = NULL;
	enum log_level lvl = LOGL_INFO;
	if (conf_load(o->conf_path, &c, &err) != PG_OK) {
		fprintf(stderr, "popgate: configuration errors:\n%s\n", err);
		free(err);
		return NULL;
	}
	log_level_parse(c->log_level, &lvl);
	log_open("popgate", to_stderr, o->verbose ? LOGL_DEBUG : lvl);
	return c;
}

static struct spool *open_spool(const struct conf *c)
{
	struct spool *sp = NULL;
	char *err = NULL;
	if (spool_open(c->spool_dir, &sp, &err) != SPOOL_OK) {
		LOG_ERR("spool=%s status=failed reason=\"%s\"", c->spool_dir, err);
		free(err);
		return NULL;
	}
	const struct spool_recovery *r = spool_last_recovery(sp);
	if (r->tmp_removed || r->sending_requeued || r->uncommitted_removed ||
	    r->missing_file_held || r->orphans_removed)
		LOG_WARN("spool=%s status=recovered tmp_removed=%u requeued=%u "
			 "uncommitted_removed=%u missing_file_held=%u sent_files_removed=%u",
			 c->spool_dir, r->tmp_removed, r->sending_requeued, r->uncommitted_removed,
			 r->missing_file_held, r->orphans_removed);
	return sp;
}

int cmd_check_config(const struct cli_opts *o, int argc, char **argv)
{
	if (argc > 1) {
		fprintf(stderr, "popgate: check-config takes no arguments\n");
		return EX_USAGE;
	}
	struct conf *c = load(o, 1);
	if (c == NULL)
		return EX_CONFIG;
	printf("%s: ok (%zu account%s, spool %s, smtp %s:%d)\n", c->path, c->naccounts,
	       c->naccounts == 1 ? "" : "s", c->spool_dir, c->smtp.host, c->smtp.port);
	conf_free(&c);
	return EX_OK;
}

static void poll_progress(void *ctx, const struct conf_account *a, const struct poll_stats *st,
			  unsigned int total_new)
{
	LOG_INFO("account=%s progress=%u/%u bytes=%llu", a->name, st->fetched, total_new,
		 (unsigned long long)st->bytes);
}

/* worse - keep the first failure's exit code */
static int worse(int cur, int code)
{
	return cur != EX_OK ? cur : code;
}

static int poll_one(const struct conf *c, const struct conf_account *a, struct spool *sp,
		    unsigned int *fetched_r)
{
	struct poll_stats st;
	char *err = NULL;
	enum pg_res res = poller_poll_account(c, a, sp, &cli_stop, poll_progress, NULL, &st, &err);
	free(err); /* the poller has logged it */
	*fetched_r += st.fetched;
	return pg_exit_code(res);
}

static int relay_once(const struct conf *c, struct spool *sp)
{
	struct relay_stats st;
	char *err = NULL;
	enum pg_res res = relay_run_once(c, sp, &cli_stop, &st, &err);
	if (res != PG_OK)
		LOG_ERR("relay status=failed class=%s attempted=%u sent=%u deferred=%u held=%u "
			"reason=\"%s\"", pg_res_name(res), st.attempted, st.sent, st.deferred, st.held,
			err ? err : "");
	else if (st.attempted > 0)
		LOG_INFO("relay status=ok attempted=%u sent=%u deferred=%u held=%u bytes=%llu",
			 st.attempted, st.sent, st.deferred, st.held, (unsigned long long)st.bytes);
	free(err);
	return pg_exit_code(res);
}

/* select_accounts - the accounts named on the command line, or all */
static int select_accounts(const struct conf *c, int argc, char **argv,
			   const struct conf_account ***sel_r, size_t *n_r)
{
	const struct conf_account **sel = xcalloc(c->naccounts + (size_t)argc, sizeof *sel);
	size_t n = 0;
	if (argc == 0)
		for (size_t i = 0; i < c->naccounts; i++)
			sel[n++] = &c->accounts[i];
	for (int i = 0; i < argc; i++) {
		const struct conf_account *a = conf_find_account(c, argv[i]);
		if (a == NULL) {
			fprintf(stderr, "popgate: no account '%s' in %s\n", argv[i], c->path);
			free(sel);
			return EX_USAGE;
		}
		sel[n++] = a;
	}
	*sel_r = sel;
	*n_r = n;
	return EX_OK;
}

/* schedule - the daemon loop: poll each selected account every interval,
 * relay after a poll brought mail and whenever a deferred message is due */
static int schedule(const struct conf *c, struct spool *sp, const struct conf_account **sel,
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

static int parse_once(int argc, char **argv, const char *extra, int *once_r, int *fg_r)
{
	static const struct option longopts[] = { { "once", no_argument, NULL, 'o' },
						  { "foreground", no_argument, NULL, 'f' },
						  { NULL, 0, NULL, 0 } };
	int ch;
	optind = 0;
	while ((ch = getopt_long(argc, argv, extra, longopts, NULL)) != -1) {
		if (ch == 'o' && once_r != NULL)
			*once_r = 1;
		else if (ch == 'f' && fg_r != NULL)
			*fg_r = 1;
		else {
			fprintf(stderr, "popgate %s: unknown option (see popgate --help)\n", argv[0]);
			return -1;
		}
	}
	return optind;
}

/* session - load config, log, spool; then run fn; free everything */
static int with_spool(const struct cli_opts *o, int to_stderr,
		      int (*fn)(const struct conf *c, struct spool *sp, void *arg), void *arg)
{
	struct conf *c = load(o, to_stderr);
	if (c == NULL)
		return EX_CONFIG;
	cli_install_signals();
	struct spool *sp = open_spool(c);
	int code = EX_IOERR;
	if (sp != NULL) {
		code = fn(c, sp, arg);
		spool_close(&sp);
	}
	conf_free(&c);
	log_close();
	return code;
}

struct poll_args {
	int once;
	int argc;
	char **argv;
	int relay; /* run: relay too */
};

static int do_poll(const struct conf *c, struct spool *sp, void *arg)
{
	struct poll_args *pa = arg;
	const struct conf_account **sel = NULL;
	size_t n = 0;
	int code = select_accounts(c, pa->argc, pa->argv, &sel, &n);
	if (code != EX_OK)
		return code;
	if (pa->once) {
		unsigned int fetched = 0;
		for (size_t i = 0; i < n && !cli_stop; i++)
			code = worse(code, poll_one(c, sel[i], sp, &fetched));
	} else {
		code = schedule(c, sp, sel, n, 1, pa->relay);
	}
	free(sel);
	return code;
}

int cmd_poll(const struct cli_opts *o, int argc, char **argv)
{
	struct poll_args pa = { 0 };
	int first = parse_once(argc, argv, "+", &pa.once, NULL);
	if (first < 0)
		return EX_USAGE;
	pa.argc = argc - first;
	pa.argv = argv + first;
	return with_spool(o, 1, do_poll, &pa);
}

static int do_relay(const struct conf *c, struct spool *sp, void *arg)
{
	int once = *(int *)arg;
	if (once)
		return relay_once(c, sp);
	return schedule(c, sp, NULL, 0, 0, 1);
}

int cmd_relay(const struct cli_opts *o, int argc, char **argv)
{
	int once = 0;
	int first = parse_once(argc, argv, "+", &once, NULL);
	if (first < 0 || first != argc) {
		if (first >= 0)
			fprintf(stderr, "popgate relay: unexpected argument '%s'\n", argv[first]);
		return EX_USAGE;
	}
	return with_spool(o, 1, do_relay, &once);
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

static void fmt_age(time_t secs, char *out, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(out, len, "%lds", (long)secs);
	else if (secs < 7200)
		snprintf(out, len, "%ldm", (long)(secs / 60));
	else if (secs < 172800)
		snprintf(out, len, "%ldh", (long)(secs / 3600));
	else
		snprintf(out, len, "%ldd", (long)(secs / 86400));
}

struct queue_args {
	int state;
	const char *account;
	int all;
	unsigned int count;
	time_t now;
};

static int queue_line(void *ctx, const struct spool_msg *m)
{
	struct queue_args *qa = ctx;
	char age[32];
	fmt_age(qa->now - m->created, age, sizeof age);
	char *reply = sanitize_for_log(m->last_reply ? m->last_reply : "-",
				       m->last_reply ? strlen(m->last_reply) : 1, 200);
	printf("%-16s %-12s %-8s %9llu %5s %3d %s\n", m->id, m->account, spool_state_name(m->state),
	       (unsigned long long)m->size, age, m->attempts, reply);
	free(reply);
	qa->count++;
	return 0;
}

static int do_queue(const struct conf *c, struct spool *sp, void *arg)
{
	struct queue_args *qa = arg;
	struct spool_filter f = { .state = qa->state, .account = qa->account,
				  .include_sent = qa->all || qa->state == SPOOL_SENT };
	char *err = NULL;
	qa->now = time(NULL);
	printf("%-16s %-12s %-8s %9s %5s %3s %s\n", "ID", "ACCOUNT", "STATE", "SIZE", "AGE", "ATT",
	       "LAST_REPLY");
	if (spool_list(sp, &f, queue_line, qa, &err) != SPOOL_OK) {
		fprintf(stderr, "popgate queue: %s\n", err);
		free(err);
		return EX_IOERR;
	}
	printf("-- %u message%s\n", qa->count, qa->count == 1 ? "" : "s");
	return EX_OK;
}

int cmd_queue(const struct cli_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = { { "state", required_argument, NULL, 's' },
						  { "account", required_argument, NULL, 'a' },
						  { "all", no_argument, NULL, 'A' },
						  { NULL, 0, NULL, 0 } };
	struct queue_args qa = { .state = -1 };
	int ch;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		enum spool_state st;
		if (ch == 's' && spool_state_parse(optarg, &st) == 0)
			qa.state = (int)st;
		else if (ch == 'a')
			qa.account = optarg;
		else if (ch == 'A')
			qa.all = 1;
		else {
			fprintf(stderr, "popgate queue: bad option%s%s (states: queued, sending, sent, "
				"deferred, held)\n", ch == 's' ? " value " : "", ch == 's' ? optarg : "");
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "popgate queue: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	return with_spool(o, 1, do_queue, &qa);
}
