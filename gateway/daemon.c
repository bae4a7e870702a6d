/*
 * daemon.c - the long-running modes: signals and the scheduler.
 *
 * The parent process never talks POP3 or SMTP.  It keeps one slot per
 * account (when its next poll is due) and a small pool of poll workers, at
 * most max_parallel_polls busy at once: a worker is a child forked with the
 * current configuration that opens its spool handle once and then runs
 * polls one after another (poller_poll_account()), each account sent by the
 * parent over the worker's socket and each result (enum pg_res) sent back,
 * so a poll costs no fork, no SQLite open and no OpenSSL set-up.  Workers
 * are retired (their socket closed: they exit at EOF) on reload, at stop,
 * and when no poll is due for WORKER_LINGER_SECS; a worker that dies
 * mid-poll ends that poll as a poll child's death did (nothing is lost: a
 * DELE counts only at QUIT, after the commit), and the next poll gets a
 * fresh worker.  The relay runs in one child of its own, one round at a
 * time.  The parent wakes on a self-pipe written by the signal handlers
 * (TERM/INT stop, HUP reload, USR1 poll now, CHLD a child ended) and by
 * workers after every commit and every poll, so the relay starts as soon as
 * mail is in the spool.  Handlers only set flags and write one byte.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "poller.h"
#include "relay.h"
#include "spool.h"

/* how long running polls may take to finish their message after SIGTERM
 * before they are killed (nothing is lost: a DELE counts only at QUIT) */
#define STOP_GRACE_SECS 30
/* pause after a relay round that failed or found nothing it could send */
#define RELAY_RETRY_SECS 10
/* relay child exit status when the round had nothing to send */
#define RELAY_EXIT_IDLE 100
/* a relay child's exit status: fewer messages than smtp.max_sessions sent */
#define RELAY_EXIT_SMALL 101
/* idle poll workers are kept while a poll is due within this many seconds
 * (a worker's fork and spool open cost about what one poll costs) */
#define WORKER_LINGER_SECS 5

volatile sig_atomic_t cli_stop;
static volatile sig_atomic_t got_hup, got_usr1;
static int wake_pipe[2] = { -1, -1 };
static int in_child;

static void on_signal(int sig)
{
	int saved = errno;
	if (sig == SIGTERM || sig == SIGINT)
		cli_stop = 1;
	else if (sig == SIGHUP)
		got_hup = 1;
	else if (sig == SIGUSR1)
		got_usr1 = 1;
	if (!in_child && wake_pipe[1] >= 0) {
		ssize_t r = write(wake_pipe[1], "x", 1);
		(void)r;
	}
	errno = saved;
}

static void set_handler(int sig, void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

void cli_install_signals(void)
{
	if (wake_pipe[0] < 0 && pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		wake_pipe[0] = wake_pipe[1] = -1;
	set_handler(SIGTERM, on_signal);
	set_handler(SIGINT, on_signal);
	set_handler(SIGPIPE, SIG_IGN);
}

/* daemon_signals - the scheduler's extra signals */
static void daemon_signals(void)
{
	cli_install_signals();
	set_handler(SIGHUP, on_signal);
	set_handler(SIGUSR1, on_signal);
	set_handler(SIGCHLD, on_signal);
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

/* wait_wake - sleep until a signal, a child's note or the timeout; drain */
static void wait_wake(long ms)
{
	struct pollfd pfd = { .fd = wake_pipe[0], .events = POLLIN };
	char buf[256];
	if (ms > 0 && !got_hup && !got_usr1)
		poll(&pfd, 1, ms > 600000 ? 600000 : (int)ms);
	while (read(wake_pipe[0], buf, sizeof buf) > 0)
		;
}

/* sd_notify_msg - one datagram to systemd's $NOTIFY_SOCKET (Type=notify):
 * READY=1, STATUS=... for `systemctl status`; nothing without the socket.
 * No libsystemd: the protocol is one sendto() ("@" = abstract name). */
static void sd_notify_msg(const char *fmt, ...) PG_PRINTF(1, 2);
static void sd_notify_msg(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen = path != NULL ? strlen(path) : 0;
	if (plen < 2 || plen >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
		return;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof msg)
		return;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (const struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen)) < 0)
		LOG_DEBUG("status=notify-failed reason=\"%s\"", strerror(errno));
	close(fd);
}

/* ---- the schedule ---- */

struct slot {
	char *name;
	const struct conf_account *a; /* its account in the current configuration */
	time_t next;  /* next poll due; 0: now */
	int force;    /* SIGUSR1 or a new account: skip the readiness check */
	pid_t pid;    /* the worker running its poll, or 0 */
	int done;     /* run --once: polled (or skipped) */
};

/* a poll worker (see the top of the file); its protocol: the parent writes
 * a uint32_t, the account's index in the configuration the worker was
 * forked with; the worker answers with an int32_t, the poll's enum pg_res */
struct worker {
	pid_t pid;   /* 0: a free entry */
	int fd;      /* the parent's end; -1 once retired (the worker exits at EOF) */
	int busy;    /* an account was sent, its result not read yet */
	int stale;   /* forked with a replaced configuration: retire when idle */
};

struct sched {
	const struct conf *c;      /* current configuration */
	struct conf *owned;        /* set once a reload replaced the caller's */
	struct spool *sp;
	char **only;               /* accounts named on the command line, or NULL */
	size_t nonly;
	struct slot *slots;
	size_t nslots;
	size_t running;            /* polls running (busy workers) */
	struct worker *workers;
	size_t nworkers;
	pid_t relay_pid;
	time_t relay_not_before;
	time_t relay_started;      /* when the running (or last) relay child started */
	unsigned long polls_done;  /* polls ended so far */
	unsigned long relay_polls; /* polls_done when the relay child started */
	time_t relay_gap_until;    /* while polls run: no relay before this */
	int do_poll, do_relay;
	int verbose;
	int once;                  /* run --once */
	int once_code;             /* its exit code: the first failure */
	int relay_failed;          /* run --once: the last relay failed */
};

/* worker_retire - close the parent's end: the worker exits at EOF once its
 * poll (if any) is done; it stays in the table until reaped */
static void worker_retire(struct worker *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
}

static int selected(const struct sched *s, const char *name)
{
	if (s->only == NULL)
		return 1;
	for (size_t i = 0; i < s->nonly; i++)
		if (strcmp(s->only[i], name) == 0)
			return 1;
	return 0;
}

static struct slot *slot_by_name(struct slot *slots, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) /* a name moved by build_slots is NULL */
		if (slots[i].name != NULL && strcmp(slots[i].name, name) == 0)
			return &slots[i];
	return NULL;
}

/* first_due - an account's first poll: where its stored state says */
static time_t first_due(struct sched *s, const struct conf_account *a)
{
	struct spool_account_state st;
	char *err = NULL;
	time_t due = 0;
	if (spool_account_get(s->sp, a->name, &st, &err) == SPOOL_OK)
		due = sched_next_poll(a, &st);
	free(err);
	spool_account_state_free(&st);
	return due;
}

/* build_slots - one slot per selected account of s->c, keeping the timing
 * and running child of accounts that were there before (reload) */
static void build_slots(struct sched *s, unsigned *added_r, unsigned *removed_r)
{
	struct slot *old = s->slots;
	size_t nold = s->nslots, kept = 0;
	s->slots = xcalloc(s->c->naccounts ? s->c->naccounts : 1, sizeof *s->slots);
	s->nslots = 0;
	for (size_t i = 0; s->do_poll && i < s->c->naccounts; i++) {
		const struct conf_account *a = &s->c->accounts[i];
		if (!selected(s, a->name))
			continue;
		struct slot *ns = &s->slots[s->nslots++], *os = slot_by_name(old, nold, a->name);
		if (os != NULL) {
			*ns = *os;
			os->name = NULL;
			kept++;
		} else {
			ns->name = xstrdup(a->name);
			ns->next = old != NULL ? 0 : first_due(s, a);
			ns->force = old != NULL;
		}
		ns->a = a; /* a lookup by name per poll was linear in the accounts */
	}
	for (size_t i = 0; i < nold; i++)
		free(old[i].name);
	free(old);
	/* OpenSSL's set-up and the trust stores once here, not in every poll
	 * child (3 ms of a 13 ms poll over TLS); read again on reload */
	net_tls_preload_clear();
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].a->tls != TLS_NONE)
			net_tls_preload(s->slots[i].a->ca_file);
	/* the configuration's parse tree is freed by now (about 12 KiB per
	 * account, 120 MiB for 10,000): give those pages back, or every fork
	 * copies their page tables and the daemon keeps them resident */
	(void)malloc_trim(0);
	*added_r = (unsigned)(s->nslots - kept);
	*removed_r = (unsigned)(nold - kept);
}

/* announce_state - the daemon's state for `systemctl status` (and READY=1
 * once started); a poller without an account idles, saying so once */
static void announce_state(const struct sched *s, int starting)
{
	const char *ready = starting ? "READY=1\n" : "";
	if (s->once)
		return;
	if (s->do_poll && s->c->naccounts == 0) {
		LOG_WARN("status=idle reason=\"no account in %s\" action=\"add an account "
			 "block, then reload popgate (SIGHUP)\"", s->c->path);
		sd_notify_msg("%sSTATUS=idle: no account in %s", ready, s->c->path);
	} else if (s->do_poll)
		sd_notify_msg("%sSTATUS=polling %zu account%s%s", ready, s->nslots,
			      s->nslots == 1 ? "" : "s", s->do_relay ? ", relaying" : "");
	else
		sd_notify_msg("%sSTATUS=relaying", ready);
}

/* reload - SIGHUP: a new configuration, or the old one kept */
static void reload(struct sched *s)
{
	struct conf *nc = NULL;
	char *err = NULL;
	if (conf_load(s->c->path, &nc, &err) != PG_OK) {
		char *save = NULL;
		for (char *l = strtok_r(err, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
			LOG_ERR("reload status=rejected error=\"%s\"", l);
		LOG_ERR("reload status=rejected action=\"keeping the running configuration\"");
		free(err);
		return;
	}
	const char *why = NULL;
	if (strcmp(nc->spool_dir, s->c->spool_dir) != 0)
		why = "spool_dir changed";
	else if ((nc->user == NULL) != (s->c->user == NULL) ||
		 (nc->user && strcmp(nc->user, s->c->user) != 0))
		why = "user changed";
	if (why != NULL) {
		LOG_ERR("reload status=rejected reason=\"%s: restart popgate for that\" "
			"action=\"keeping the running configuration\"", why);
		conf_free(&nc);
		return;
	}
	conf_free(&s->owned);
	s->owned = nc;
	s->c = nc;
	conf_log_warnings(nc);
	enum log_level lvl = LOGL_INFO;
	if (!s->verbose && log_level_parse(nc->log_level, &lvl) == 0)
		log_set_level(lvl);
	unsigned added = 0, removed = 0;
	/* workers know the old configuration: idle ones go now, busy ones
	 * after their poll; new ones are forked with the new one */
	for (size_t i = 0; i < s->nworkers; i++) {
		s->workers[i].stale = 1;
		if (!s->workers[i].busy)
			worker_retire(&s->workers[i]);
	}
	build_slots(s, &added, &removed);
	LOG_INFO("reload status=ok accounts=%zu added=%u removed=%u", s->nslots, added, removed);
	announce_state(s, 0);
}

/* child_setup - in a fresh child: default signal plumbing, own spool */
static struct spool *child_setup(const struct conf *c)
{
	in_child = 1;
	close(wake_pipe[0]);
	set_handler(SIGHUP, SIG_IGN);
	set_handler(SIGUSR1, SIG_IGN);
	set_handler(SIGCHLD, SIG_DFL);
	struct spool *sp = NULL;
	char *err = NULL;
	if (spool_open(c->spool_dir, &sp, &err) != SPOOL_OK) {
		LOG_ERR("spool=%s status=failed reason=\"%s\"", c->spool_dir, err);
		_exit(PG_IO);
	}
	return sp;
}

/* note_commit - a poll child's progress callback: wake the parent so the
 * relay starts while the drain goes on */
static void note_commit(void *ctx, const struct conf_account *a, const struct poll_stats *st,
			unsigned int total_new)
{
	ssize_t r = write(wake_pipe[1], "m", 1);
	(void)r;
	LOG_DEBUG("account=%s progress=%u/%u bytes=%llu", a->name, st->fetched, total_new,
		  (unsigned long long)st->bytes);
}

/* worker_poll - one poll of account a in a worker, counted in the metrics */
static enum pg_res worker_poll(const struct conf *c, const struct conf_account *a,
			    struct spool *sp)
{
	struct poll_stats st;
	char *err = NULL;
	memset(&st, 0, sizeof st);
	enum pg_res res = poller_poll_account(c, a, sp, &cli_stop, note_commit, NULL, &st, &err);
	free(err); /* logged by the poller */
	err = NULL;
	/* the three counters in one fsync'd transaction */
	if (spool_batch_begin(sp, &err) != SPOOL_OK) {
		LOG_DEBUG("account=%s status=spool-warning reason=\"%s\"", a->name, err);
		free(err);
		err = NULL;
	}
	metrics_count_poll(sp, a->name, res, st.fetched, st.bytes);
	if (spool_batch_end(sp, &err) != SPOOL_OK) {
		LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, err);
		free(err);
	}
	return res;
}

/* worker_main - a poll worker's life: one spool handle, then the accounts
 * the parent sends, one poll each, until EOF (retired) or SIGTERM/SIGINT.
 * Its exit status is that of a poll child: PG_IO if the spool would not
 * open (the parent counts it against the account it had sent). */
static void worker_main(const struct conf *c, int fd)
{
	struct spool *sp = child_setup(c);
	while (!cli_stop) {
		uint32_t idx;
		ssize_t r = read(fd, &idx, sizeof idx);
		if (r < 0 && errno == EINTR)
			continue; /* a stop signal: the loop ends */
		if (r != (ssize_t)sizeof idx || idx >= c->naccounts)
			break;
		int32_t res = (int32_t)worker_poll(c, &c->accounts[idx], sp);
		if (write(fd, &res, sizeof res) != (ssize_t)sizeof res)
			break;
		r = write(wake_pipe[1], "p", 1);
		(void)r;
	}
	spool_close(&sp);
	close(fd);
	_exit(EX_OK);
}

static void relay_child(const struct conf *c)
{
	struct spool *sp = child_setup(c);
	struct relay_stats st;
	memset(&st, 0, sizeof st);
	int code = relay_once_stats(c, sp, &st);
	spool_close(&sp);
	_exit(code != EX_OK ? code : st.attempted == 0 ? RELAY_EXIT_IDLE
	      : st.attempted < (unsigned)c->smtp.max_sessions ? RELAY_EXIT_SMALL : EX_OK);
}

/* fork_clean - fork() with no SQLite connection open in this process (see
 * spool_fork_prepare); the parent's handle is reopened at once */
static pid_t fork_clean(struct spool *sp)
{
	char *err = NULL;
	if (spool_fork_prepare(sp, &err) != SPOOL_OK) {
		LOG_ERR("spool status=fork-refused reason=\"%s\"", err);
		free(err);
		errno = EBUSY;
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	int saved = errno;
	if (pid != 0 && spool_fork_done(sp, &err) != SPOOL_OK) {
		LOG_ERR("spool status=reopen-failed reason=\"%s\"", err);
		free(err);
	}
	errno = saved;
	return pid;
}

/* close_worker_fds - in a new child: the parent's ends of the workers'
 * sockets (a worker holding another's end would never see its EOF) */
static void close_worker_fds(struct sched *s)
{
	for (size_t i = 0; i < s->nworkers; i++)
		if (s->workers[i].fd >= 0)
			close(s->workers[i].fd);
}

/* worker_spawn - fork a new poll worker with the current configuration */
static struct worker *worker_spawn(struct sched *s)
{
	size_t i = 0;
	int sv[2];
	while (i < s->nworkers && s->workers[i].pid != 0)
		i++;
	if (i == s->nworkers) {
		s->workers = xrealloc(s->workers, (s->nworkers + 1) * sizeof *s->workers);
		s->workers[s->nworkers++] = (struct worker){ .pid = 0, .fd = -1 };
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return NULL;
	pid_t pid = fork_clean(s->sp);
	if (pid < 0) {
		int saved = errno;
		close(sv[0]);
		close(sv[1]);
		errno = saved;
		return NULL;
	}
	if (pid == 0) {
		close(sv[0]);
		close_worker_fds(s);
		worker_main(s->c, sv[1]);
	}
	close(sv[1]);
	(void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
	struct worker *w = &s->workers[i];
	*w = (struct worker){ .pid = pid, .fd = sv[0] };
	LOG_DEBUG("status=worker-started pid=%ld", (long)pid);
	return w;
}

/* worker_for_poll - an idle worker of the current configuration, or a new
 * one; NULL with errno set if none can be had */
static struct worker *worker_for_poll(struct sched *s)
{
	for (size_t i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];
		if (w->pid != 0 && w->fd >= 0 && !w->busy && !w->stale)
			return w;
	}
	return worker_spawn(s);
}

static void start_poll(struct sched *s, struct slot *sl, const struct conf_account *a)
{
	uint32_t idx = (uint32_t)(a - s->c->accounts);
	struct worker *w = NULL;
	/* an idle worker may have died unseen: its write fails, retry once */
	for (int tries = 0; tries < 2 && w == NULL; tries++) {
		if ((w = worker_for_poll(s)) == NULL)
			break;
		if (write(w->fd, &idx, sizeof idx) != (ssize_t)sizeof idx) {
			worker_retire(w);
			w = NULL;
			errno = EPIPE;
		}
	}
	if (w == NULL) {
		LOG_ERR("account=%s status=deferred reason=\"fork: %s\"", a->name, strerror(errno));
		sl->next = time(NULL) + 10;
		return;
	}
	w->busy = 1;
	LOG_DEBUG("account=%s status=polling pid=%ld forced=%d", a->name, (long)w->pid, sl->force);
	sl->pid = w->pid;
	sl->force = 0;
	s->running++;
}

/* start_due_polls - every due, ready account, up to max_parallel_polls */
static void start_due_polls(struct sched *s, time_t now)
{
	for (size_t i = 0; i < s->nslots && !cli_stop; i++) {
		struct slot *sl = &s->slots[i];
		if (s->running >= (size_t)s->c->max_parallel_polls)
			return;
		if (sl->pid != 0 || sl->next > now)
			continue;
		const struct conf_account *a = sl->a;
		time_t nb = 0;
		char *why = NULL;
		if (sl->done)
			continue;
		if (!sl->force && !poller_account_ready(a, s->sp, now, &nb, &why)) {
			char *w = sanitize_for_log(why ? why : "", why ? strlen(why) : 0, 300);
			sl->next = nb > now ? nb : now + a->interval;
			sl->done = s->once; /* run --once waits for no account */
			/* run --once: the skip decides the exit status (77: held
			 * after a refused login, 75: backoff or LOGIN-DELAY) */
			if (s->once && s->once_code == EX_OK)
				s->once_code = nb == 0 ? EX_NOPERM : EX_TEMPFAIL;
			log_msg(s->once ? LOGL_WARN : LOGL_INFO,
				"account=%s status=skipped reason=\"%s\" next=%lds", a->name, w,
				(long)(sl->next - now));
			free(w);
			free(why);
			continue;
		}
		start_poll(s, sl, a);
	}
}

static void maybe_relay(struct sched *s, time_t now)
{
	time_t due = 0;
	char *err = NULL;
	if (!s->do_relay || s->relay_pid != 0 || cli_stop || now < s->relay_not_before)
		return;
	if (s->running > 0 && now < s->relay_gap_until)
		return;
	if (spool_next_due(s->sp, &due, &err) != SPOOL_OK) {
		LOG_WARN("relay status=spool-error reason=\"%s\"", err);
		free(err);
		s->relay_not_before = now + RELAY_RETRY_SECS;
		return;
	}
	if (due == 0 || due > now)
		return;
	pid_t pid = fork_clean(s->sp);
	if (pid < 0) {
		LOG_ERR("relay status=deferred reason=\"fork: %s\"", strerror(errno));
		s->relay_not_before = now + RELAY_RETRY_SECS;
		return;
	}
	if (pid == 0) {
		close_worker_fds(s);
		relay_child(s->c);
	}
	s->relay_pid = pid;
	s->relay_started = now;
	s->relay_polls = s->polls_done;
}

/* poll_done - the poll run by worker pid ended: with its result (code >= 0)
 * or with the worker (code -1: killed by signal sig) */
static void poll_done(struct sched *s, pid_t pid, int code, int sig)
{
	time_t now = time(NULL);
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];
		if (sl->pid != pid)
			continue;
		const struct conf_account *a = sl->a;
		sl->pid = 0;
		sl->next = now + a->interval + sched_jitter(a->name, a->interval);
		sl->done = s->once;
		if (s->once && s->once_code == EX_OK)
			s->once_code = code < 0 ? EX_SOFTWARE : pg_exit_code((enum pg_res)code);
		break;
	}
	if (code < 0)
		LOG_ERR("pid=%ld status=killed signal=%d", (long)pid, sig);
	s->running--; /* a poll of an account removed by a reload counts too */
	s->polls_done++;
	metrics_after_round(s->c, s->sp);
}

/* worker_collect - a busy worker's result, if it has sent it */
static void worker_collect(struct sched *s, struct worker *w)
{
	int32_t res;
	if (!w->busy || w->fd < 0)
		return;
	ssize_t r = recv(w->fd, &res, sizeof res, MSG_DONTWAIT);
	if (r != (ssize_t)sizeof res)
		return; /* nothing yet; an end or a short read shows at its exit */
	w->busy = 0;
	if (w->stale || cli_stop)
		worker_retire(w);
	poll_done(s, w->pid, res < 0 || res > PG_CONFIG ? PG_IO : (int)res, 0);
}

static void collect_results(struct sched *s)
{
	for (size_t i = 0; i < s->nworkers; i++)
		worker_collect(s, &s->workers[i]);
}

/* worker_done - a worker ended; its poll, if one was running, ends with it
 * as a poll child's did: by its exit status or its signal */
static void worker_done(struct sched *s, struct worker *w, int status)
{
	pid_t pid = w->pid;
	worker_collect(s, w); /* a result sent just before the end counts */
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	int busy = w->busy;
	worker_retire(w);
	*w = (struct worker){ .pid = 0, .fd = -1 };
	if (busy && code == EX_OK) {
		/* it ended (a stop signal of its own) without sending the
		 * poll's result: not a successful poll */
		LOG_WARN("status=worker-ended pid=%ld reason=\"no result for its poll\"",
			 (long)pid);
		code = PG_TEMP;
	}
	if (busy)
		poll_done(s, pid, code, code < 0 ? WTERMSIG(status) : 0);
	else if (code != EX_OK)
		LOG_WARN("status=worker-ended pid=%ld code=%d signal=%d", (long)pid, code,
			 code < 0 ? WTERMSIG(status) : 0);
	else
		LOG_DEBUG("status=worker-ended pid=%ld", (long)pid);
}

static void child_done(struct sched *s, pid_t pid, int status)
{
	time_t now = time(NULL);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (pid == s->relay_pid) {
		s->relay_pid = 0;
		int small = code == RELAY_EXIT_SMALL;
		if (small)
			code = EX_OK;
		s->relay_not_before = code == EX_OK ? 0 : now + RELAY_RETRY_SECS;
		/* a round that sent fewer messages than it has sessions, while
		 * polls go on bringing a message or two each: the next one waits
		 * for the next second (ignored once no poll runs), so one round
		 * carries what many polls brought instead of a fork, spool opens
		 * and an SMTP session per message (bench_accounts.sh: 3 ms of
		 * CPU per account polled); a big drain's rounds are not small */
		/* the same when as many polls ended during the round as run at
		 * once: a cycle over many accounts (each bringing a message or
		 * two), not one account's drain; rounds back to back there
		 * cost a fork and max_sessions session processes each */
		int many = s->polls_done - s->relay_polls >= (unsigned long)s->c->max_parallel_polls;
		s->relay_gap_until = small || many ? s->relay_started + 1 : 0;
		s->relay_failed = code != EX_OK && code != RELAY_EXIT_IDLE;
		if (s->once && s->relay_failed && s->once_code == EX_OK)
			s->once_code = code < 0 ? EX_SOFTWARE : code;
		if (code < 0)
			LOG_ERR("relay status=killed signal=%d", WTERMSIG(status));
		/* a relay that died mid-session left its claims `sending`: take
		 * them back now, not at the next restart (sessions of its that
		 * still run hold their claims and finish them) */
		if (s->relay_failed)
			relay_reclaim(s->sp);
		metrics_after_round(s->c, s->sp);
		return;
	}
	for (size_t i = 0; i < s->nworkers; i++)
		if (s->workers[i].pid == pid) {
			worker_done(s, &s->workers[i], status);
			return;
		}
}

static void reap(struct sched *s)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		child_done(s, pid, status);
}

/* next_wake - milliseconds until the earliest due poll or relay */
static long next_wake(struct sched *s, time_t now)
{
	time_t wake = now + 300, due = 0;
	char *err = NULL;
	int full = s->running >= (size_t)s->c->max_parallel_polls;
	for (size_t i = 0; !full && i < s->nslots; i++)
		if (s->slots[i].pid == 0 && !s->slots[i].done && s->slots[i].next < wake)
			wake = s->slots[i].next;
	if (s->do_relay && s->relay_pid == 0 && spool_next_due(s->sp, &due, &err) == SPOOL_OK &&
	    due != 0) {
		if (due < s->relay_not_before)
			due = s->relay_not_before;
		if (s->running > 0 && due < s->relay_gap_until)
			due = s->relay_gap_until;
		if (due < wake)
			wake = due;
	}
	free(err);
	return wake <= now ? 0 : (long)(wake - now) * 1000;
}

static size_t workers_alive(const struct sched *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->nworkers; i++)
		n += s->workers[i].pid != 0;
	return n;
}

/* shutdown - stop the children: they finish the message in flight, commit,
 * QUIT; after STOP_GRACE_SECS the stragglers are killed */
static void shutdown_children(struct sched *s)
{
	time_t deadline = time(NULL) + STOP_GRACE_SECS;
	int killed = 0;
	for (size_t i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];
		w->stale = 1; /* retired once its result is in */
		if (w->busy)
			kill(w->pid, SIGTERM);
		else
			worker_retire(w);
	}
	if (s->relay_pid != 0)
		kill(s->relay_pid, SIGTERM);
	while (s->running > 0 || s->relay_pid != 0 || workers_alive(s) > 0) {
		collect_results(s);
		reap(s);
		if (s->running == 0 && s->relay_pid == 0 && workers_alive(s) == 0)
			break;
		if (!killed && time(NULL) >= deadline) {
			LOG_WARN("status=stopping action=\"killing %zu poll(s) still running after "
				 "%d s\"", s->running, STOP_GRACE_SECS);
			for (size_t i = 0; i < s->nworkers; i++)
				if (s->workers[i].pid != 0)
					kill(s->workers[i].pid, SIGKILL);
			if (s->relay_pid != 0)
				kill(s->relay_pid, SIGKILL);
			killed = 1;
		}
		wait_wake(1000);
	}
}

/* retire_idle_workers - no poll due for a while (or run --once has none
 * left to start): the idle workers go, their memory with them */
static void retire_idle_workers(struct sched *s, time_t now)
{
	size_t idle = 0;
	for (size_t i = 0; i < s->nworkers; i++)
		idle += s->workers[i].fd >= 0 && !s->workers[i].busy;
	if (idle == 0)
		return;
	for (size_t i = 0; !cli_stop && i < s->nslots; i++) {
		const struct slot *sl = &s->slots[i];
		if (sl->pid == 0 && !sl->done && sl->next <= now + WORKER_LINGER_SECS)
			return;
	}
	for (size_t i = 0; i < s->nworkers; i++)
		if (!s->workers[i].busy)
			worker_retire(&s->workers[i]);
}

/* once_finished - run --once: every account polled, nothing running, and
 * nothing due (or the relay just failed: the next run retries) */
static int once_finished(struct sched *s, time_t now)
{
	time_t due = 0;
	char *err = NULL;
	for (size_t i = 0; i < s->nslots; i++)
		if (!s->slots[i].done)
			return 0;
	if (s->running > 0 || s->relay_pid != 0)
		return 0;
	if (!s->do_relay || s->relay_failed)
		return 1;
	if (spool_next_due(s->sp, &due, &err) != SPOOL_OK) {
		free(err);
		return 1;
	}
	return due == 0 || due > now;
}

static void sched_loop(struct sched *s)
{
	while (!cli_stop) {
		if (got_hup) {
			got_hup = 0;
			reload(s);
		}
		if (got_usr1) {
			got_usr1 = 0;
			LOG_INFO("status=poll-all reason=\"SIGUSR1\" accounts=%zu", s->nslots);
			for (size_t i = 0; i < s->nslots; i++) {
				s->slots[i].next = 0;
				s->slots[i].force = 1;
			}
		}
		collect_results(s);
		reap(s);
		time_t now = time(NULL);
		if (s->once && once_finished(s, now))
			return;
		start_due_polls(s, now);
		maybe_relay(s, now);
		retire_idle_workers(s, now);
		/* run --once: an account skipped just now may have been the last */
		if (s->once && once_finished(s, now))
			return;
		wait_wake(next_wake(s, time(NULL)));
	}
}

/* schedule - the daemon loop: poll each selected account on its interval,
 * relay whenever mail is due */
int schedule(const struct conf *c, struct spool *sp, const struct conf_account **sel,
	     size_t n, int do_poll, int do_relay, int once)
{
	struct sched s = { .c = c, .sp = sp, .do_poll = do_poll, .do_relay = do_relay,
			   .verbose = log_get_level() == LOGL_DEBUG, .once = once };
	unsigned added, removed;
	daemon_signals();
	if (sel != NULL && n < c->naccounts) {
		s.only = xcalloc(n ? n : 1, sizeof *s.only);
		for (size_t i = 0; i < n; i++)
			s.only[s.nonly++] = xstrdup(sel[i]->name);
	}
	build_slots(&s, &added, &removed);
	if (once) /* every account now, each once (named ones even if not ready) */
		for (size_t i = 0; i < s.nslots; i++) {
			s.slots[i].next = 0;
			s.slots[i].force = s.only != NULL;
		}
	LOG_INFO("status=started accounts=%zu max_parallel_polls=%d relay=%s%s", s.nslots,
		 c->max_parallel_polls, do_relay ? "yes" : "no", once ? " once=yes" : "");
	announce_state(&s, 1);
	sched_loop(&s);
	if (!once)
		sd_notify_msg("STOPPING=1");
	const char *why = cli_stop ? "signal" : "done";
	LOG_INFO("status=stopping reason=\"%s\" polls_running=%zu relay_running=%s", why,
		 s.running, s.relay_pid ? "yes" : "no");
	shutdown_children(&s);
	metrics_after_round(s.c, s.sp);
	LOG_INFO("status=stopped reason=\"%s\"", why);
	for (size_t i = 0; i < s.nslots; i++)
		free(s.slots[i].name);
	free(s.slots);
	free(s.workers);
	for (size_t i = 0; s.only != NULL && i < s.nonly; i++)
		free(s.only[i]);
	free(s.only);
	conf_free(&s.owned);
	return once && !cli_stop ? s.once_code : EX_OK;
}
