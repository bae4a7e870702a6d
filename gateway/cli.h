/*
 * cli.h - the popgate commands (poll, relay, run, queue, check-config).
 *
 * Contract: each cmd_* takes the loaded configuration and the command's own
 * arguments (argv[0] is the command name), prints what the user asked for
 * on stdout, logs events through log.h, and returns a sysexits.h code.
 * Only this layer maps enum pg_res to exit codes (pg_exit_code()).
 */
#ifndef POPGATE_CLI_H
#define POPGATE_CLI_H

#include <signal.h>

#include "conf.h"

struct cli_opts {
	const char *conf_path;
	int verbose;       /* -v: debug logging */
	int foreground;    /* run -f */
};

extern volatile sig_atomic_t cli_stop;

int pg_exit_code(enum pg_res r);
int cmd_check_config(const struct cli_opts *o, int argc, char **argv);
int cmd_poll(const struct cli_opts *o, int argc, char **argv);
int cmd_relay(const struct cli_opts *o, int argc, char **argv);
int cmd_run(const struct cli_opts *o, int argc, char **argv);
int cmd_queue(const struct cli_opts *o, int argc, char **argv);
int cmd_show(const struct cli_opts *o, int argc, char **argv);
int cmd_requeue(const struct cli_opts *o, int argc, char **argv);
int cmd_hold(const struct cli_opts *o, int argc, char **argv);
int cmd_delete(const struct cli_opts *o, int argc, char **argv);
int cmd_flush(const struct cli_opts *o, int argc, char **argv);
int cmd_status(const struct cli_opts *o, int argc, char **argv);
int cmd_test_account(const struct cli_opts *o, int argc, char **argv);
int cmd_route(const struct cli_opts *o, int argc, char **argv);
int cmd_authorize(const struct cli_opts *o, int argc, char **argv);
/* importcmd.c: a .fetchmailrc to popgate.conf; needs no configuration */
int cmd_import_fetchmailrc(const struct cli_opts *o, int argc, char **argv);
/* Shared by the command files (cli.c, daemon.c, admin.c). */
struct spool;
struct conf_account;
/* load - read the config and open the log; prints errors, NULL on failure */
struct conf *load(const struct cli_opts *o, int to_stderr);
/* conf_log_warnings - log c->warnings, one line each */
void conf_log_warnings(const struct conf *c);
/* open_spool - spool_open with the recovery summary logged */
struct spool *open_spool(const struct conf *c);
/* with_spool - load, install signals, work as `user =` when root (privs.h),
 * open (or create) the spool, run fn, clean up */
int with_spool(const struct cli_opts *o, int to_stderr,
	       int (*fn)(const struct conf *c, struct spool *sp, void *arg), void *arg);
/* with_existing_spool - the same for a command that reads or administers
 * the spool: a missing spool is reported (exit 66), never created */
int with_existing_spool(const struct cli_opts *o, const char *cmd,
			int (*fn)(const struct conf *c, struct spool *sp, void *arg), void *arg);
/* worse - keep the first failure's exit code */
int worse(int cur, int code);
int poll_one(const struct conf *c, const struct conf_account *a, struct spool *sp,
	     unsigned int *fetched_r);
int relay_once(const struct conf *c, struct spool *sp);
/* relay_once_stats - one relay round, logged and counted; no metrics file */
struct relay_stats;
int relay_once_stats(const struct conf *c, struct spool *sp, struct relay_stats *st);
int select_accounts(const struct conf *c, int argc, char **argv,
		    const struct conf_account ***sel_r, size_t *n_r);
/* parse_once - --once / -f for poll, relay and run; returns the index of the
 * first operand or -1 */
int parse_once(int argc, char **argv, const char *extra, int *once_r, int *fg_r);
/* do_poll - poll (--once or on schedule); arg is a struct poll_args */
struct poll_args {
	int once;
	int argc;
	char **argv;
	int relay; /* run: relay too */
	int run_once; /* run --once: each account once, relaying meanwhile, then exit */
};
int do_poll(const struct conf *c, struct spool *sp, void *arg);
/* schedule - the daemon loop (daemon.c) */
int schedule(const struct conf *c, struct spool *sp, const struct conf_account **sel,
	     size_t n, int do_poll, int do_relay, int once);

/* cli_install_signals - SIGTERM/SIGINT set cli_stop and wake cli_sleep() */
void cli_install_signals(void);
/* cli_sleep - wait up to seconds, returning early on a signal */
void cli_sleep(int seconds);

#endif
