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
/* cli_install_signals - SIGTERM/SIGINT set cli_stop and wake cli_sleep() */
void cli_install_signals(void);
/* cli_sleep - wait up to seconds, returning early on a signal */
void cli_sleep(int seconds);

#endif
