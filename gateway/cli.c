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
#include "confcheck.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "privs.h"
#include "relay.h"
#include "spool.h"


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

/* conf_log_warnings - what the configuration accepts but should not, one
 * log line each (stderr for the commands, syslog for a reload) */
void conf_log_warnings(const struct conf *c)
{
	for (const char *p = c->warnings; p != NULL && *p != '\0';) {
		size_t n = strcspn(p, "\n");
		LOG_WARN("config=%s status=warning reason=\"%.*s\"", c->path, (int)n, p);
		p += n + (p[n] == '\n');
	}
}

/* load - read the config and set up logging; prints errors itself */
struct conf *load(const struct cli_opts *o, int to_stderr)
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
	conf_log_warnings(c);
	return c;
}

struct spool *open_spool(const struct conf *c)
{
	struct spool *sp = NULL;
	char *err = NULL;
	struct spool_params prm = { .keep_sent_days = c->keep_sent_days };
	if (spool_open_ex(c->spool_dir, &prm, &sp, &err) != SPOOL_OK) {
		LOG_ERR("spool=%s status=failed reason=\"%s\"", c->spool_dir, err);
		free(err);
		return NULL;
	}
	const struct spool_recovery *r = spool_last_recovery(sp);
	if (r->tmp_removed || r->sending_requeued || r->uncommitted_removed ||
	    r->missing_file_held || r->orphans_removed || r->copies_removed || r->sent_purged ||
	    r->journal_rcpts)
		LOG_WARN("spool=%s status=recovered tmp_removed=%u requeued=%u "
			 "uncommitted_removed=%u missing_file_held=%u sent_files_removed=%u "
			 "copies_removed=%u sent_purged=%u journal_sent=%u journal_rcpts=%u",
			 c->spool_dir, r->tmp_removed, r->sending_requeued, r->uncommitted_removed,
			 r->missing_file_held, r->orphans_removed, r->copies_removed, r->sent_purged,
			 r->journal_sent, r->journal_rcpts);
	/* each requeued message was named before the commit (relay_requeue_log) */
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
	/* what the parser cannot see: files and programs as the run-time user */
	char *errs = NULL, *warns = NULL;
	int nerr = confcheck_runtime(c, NULL, &errs, &warns);
	if (warns != NULL)
		fprintf(stderr, "popgate: configuration warnings:\n%s", warns);
	if (nerr > 0)
		fprintf(stderr, "popgate: configuration errors:\n%s", errs ? errs : "");
	free(errs);
	free(warns);
	if (nerr > 0) {
		conf_free(&c);
		return EX_CONFIG;
	}
	printf("%s: ok (%zu account%s, spool %s, smtp %s:%d)\n", c->path, c->naccounts,
	       c->naccounts == 1 ? "" : "s", c->spool_dir, c->smtp.host, c->smtp.port);
	conf_free(&c);
	return EX_OK;
}

/* The progress bar of `poll --once` on a terminal: redrawn after every
 * committed group, wiped before each log line (log_set_tty_hook) so the
 * two never mix.  Never drawn on a pipe, a file or the journal. */
static int bar_on;
static int bar_drawn;

static void bar_clear(void)
{
	if (bar_drawn)
		fputs("\r\033[K", stderr);
	bar_drawn = 0;
}

static void poll_progress(void *ctx, const struct conf_account *a, const struct poll_stats *st,
			  unsigned int total_new)
{
	if (!bar_on) {
		LOG_DEBUG("account=%s progress=%u/%u bytes=%llu", a->name, st->fetched, total_new,
			  (unsigned long long)st->bytes);
		return;
	}
	char bar[31];
	unsigned int done = total_new ? (st->fetched > total_new ? total_new : st->fetched) : 0;
	size_t fill = total_new ? (size_t)done * 30 / total_new : 30;
	memset(bar, '#', fill);
	memset(bar + fill, '.', 30 - fill);
	bar[30] = '\0';
	bar_clear();
	fprintf(stderr, "%s [%s] %u/%u messages %.1f MiB", a->name, bar, st->fetched, total_new,
		(double)st->bytes / (1024.0 * 1024.0));
	fflush(stderr);
	bar_drawn = 1;
}

/* worse - keep the first failure's exit code */
int worse(int cur, int code)
{
	return cur != EX_OK ? cur : code;
}

int poll_one(const struct conf *c, const struct conf_account *a, struct spool *sp,
		    unsigned int *fetched_r)
{
	struct poll_stats st;
	char *err = NULL;
	enum pg_res res = poller_poll_account(c, a, sp, &cli_stop, poll_progress, NULL, &st, &err);
	free(err); /* the poller has logged it */
	bar_clear();
	*fetched_r += st.fetched;
	metrics_count_poll(sp, a->name, res, st.fetched, st.bytes);
	metrics_after_round(c, sp);
	return pg_exit_code(res);
}

/* record_relay - the round's result for `status`: every round that had
 * mail to send or failed (an idle round changes nothing) */
static void record_relay(struct spool *sp, enum pg_res res, const struct relay_stats *st,
			 const char *err)
{
	if (res == PG_OK && st->attempted == 0)
		return;
	struct spool_relay_state rs = {
		.last_run = time(NULL), .result = (char *)pg_res_name(res),
		.attempted = st->attempted, .sent = st->sent, .deferred = st->deferred,
		.held = st->held, .bytes = st->bytes,
		.error = res != PG_OK ? (char *)(err ? err : pg_res_name(res)) : NULL,
	};
	char *serr = NULL;
	if (spool_relay_state_put(sp, &rs, &serr) != SPOOL_OK) {
		LOG_WARN("relay status=spool-warning reason=\"%s\"", serr);
		free(serr);
	}
}

int relay_once_stats(const struct conf *c, struct spool *sp, struct relay_stats *st)
{
	char *err = NULL;
	enum pg_res res = relay_run_once(c, sp, &cli_stop, st, &err);
	if (res != PG_OK)
		LOG_ERR("relay status=failed class=%s attempted=%u sent=%u deferred=%u held=%u "
			"reason=\"%s\"", pg_res_name(res), st->attempted, st->sent, st->deferred,
			st->held, err ? err : "");
	else if (st->attempted > 0)
		LOG_INFO("relay status=ok attempted=%u sent=%u deferred=%u held=%u bytes=%llu",
			 st->attempted, st->sent, st->deferred, st->held,
			 (unsigned long long)st->bytes);
	record_relay(sp, res, st, err);
	free(err);
	metrics_count_relay(sp, st->sent, st->deferred, st->held, st->bytes);
	return pg_exit_code(res);
}

int relay_once(const struct conf *c, struct spool *sp)
{
	struct relay_stats st;
	memset(&st, 0, sizeof st);
	int code = relay_once_stats(c, sp, &st);
	metrics_after_round(c, sp);
	return code;
}

/* select_accounts - the accounts named on the command line, or all */
int select_accounts(const struct conf *c, int argc, char **argv,
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

int parse_once(int argc, char **argv, const char *extra, int *once_r, int *fg_r)
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

/* spool_session - load config, log, spool (as `user =` when root); then
 * run fn; free everything.  must_exist: a command that only reads or
 * administers the spool never creates one (66 when there is none). */
static int spool_session(const struct cli_opts *o, const char *cmd, int must_exist,
			 int (*fn)(const struct conf *c, struct spool *sp, void *arg), void *arg)
{
	struct conf *c = load(o, 1);
	if (c == NULL)
		return EX_CONFIG;
	int code = EX_IOERR;
	if (must_exist && !privs_spool_exists(c->spool_dir)) {
		fprintf(stderr, "popgate %s: no spool at %s (no index.db: `popgate poll --once` or "
			"the daemon creates it)\n", cmd, c->spool_dir);
		code = EX_NOINPUT;
		goto out;
	}
	if ((code = privs_for_spool(c, !must_exist)) != EX_OK)
		goto out;
	cli_install_signals();
	struct spool *sp = open_spool(c);
	code = EX_IOERR;
	if (sp != NULL) {
		code = fn(c, sp, arg);
		spool_close(&sp);
	}
out:
	conf_free(&c);
	log_close();
	return code;
}

int with_spool(const struct cli_opts *o, int to_stderr,
	       int (*fn)(const struct conf *c, struct spool *sp, void *arg), void *arg)
{
	(void)to_stderr;
	return spool_session(o, NULL, 0, fn, arg);
}

int with_existing_spool(const struct cli_opts *o, const char *cmd,
			int (*fn)(const struct conf *c, struct spool *sp, void *arg), void *arg)
{
	return spool_session(o, cmd, 1, fn, arg);
}

/* announce_polling - `poll` without --once: say what it will do before the
 * first interval passes in silence */
static void announce_polling(const struct conf_account **sel, size_t n)
{
	int lo = 0, hi = 0;
	char a[32], b[32];
	for (size_t i = 0; i < n; i++) {
		if (i == 0 || sel[i]->interval < lo)
			lo = sel[i]->interval;
		if (sel[i]->interval > hi)
			hi = sel[i]->interval;
	}
	conf_format_duration(lo, a, sizeof a);
	conf_format_duration(hi, b, sizeof b);
	fprintf(stderr, "popgate: polling %zu account%s every %s%s%s (no relay; stop with "
		"Ctrl-C or SIGTERM)\n", n, n == 1 ? "" : "s", a, lo != hi ? " to " : "",
		lo != hi ? b : "");
}

/* server_hold - the server's LOGIN-DELAY since the last login has not
 * elapsed: logged (the operator asked for a poll) and 1 */
static int server_hold(const struct conf_account *a, struct spool *sp, time_t now)
{
	struct spool_account_state st;
	char *err = NULL;
	int hold = 0;
	if (spool_account_get(sp, a->name, &st, &err) != SPOOL_OK) {
		free(err);
		return 0; /* the poll itself reports the spool problem */
	}
	/* LOGIN-DELAY counts from a login: after a poll that succeeded or
	 * that the server refused with [LOGIN-DELAY] */
	int logged_in = st.last_result != NULL && (strcmp(st.last_result, "ok") == 0 ||
		(st.last_error != NULL && strstr(st.last_error, "LOGIN-DELAY") != NULL));
	if (st.login_delay > 0 && logged_in && now < st.last_poll + st.login_delay) {
		hold = 1;
		LOG_WARN("account=%s status=skipped reason=\"the server's LOGIN-DELAY %d s since "
			 "the last login has not elapsed\" not_before=%lld action=\"poll again in "
			 "%lld s\"", a->name, st.login_delay,
			 (long long)(st.last_poll + st.login_delay),
			 (long long)(st.last_poll + st.login_delay - now));
	}
	spool_account_state_free(&st);
	return hold;
}

int do_poll(const struct conf *c, struct spool *sp, void *arg)
{
	struct poll_args *pa = arg;
	const struct conf_account **sel = NULL;
	size_t n = 0;
	int code = select_accounts(c, pa->argc, pa->argv, &sel, &n);
	if (code != EX_OK)
		return code;
	if (pa->once) {
		unsigned int fetched = 0;
		bar_on = isatty(STDERR_FILENO);
		if (bar_on)
			log_set_tty_hook(bar_clear);
		for (size_t i = 0; i < n && !cli_stop; i++) {
			/* an operator's poll runs now, backoff or [AUTH] hold or
			 * not; only the server's own LOGIN-DELAY stops it */
			if (server_hold(sel[i], sp, time(NULL))) {
				code = worse(code, EX_TEMPFAIL);
				continue;
			}
			code = worse(code, poll_one(c, sel[i], sp, &fetched));
		}
		log_set_tty_hook(NULL);
		bar_on = 0;
	} else {
		if (!pa->relay)
			announce_polling(sel, n);
		code = schedule(c, sp, sel, n, 1, pa->relay, pa->run_once);
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
	return schedule(c, sp, NULL, 0, 0, 1, 0);
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

