/*
 * main.c - popgate's entry point: global options, command dispatch, usage.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "cli.h"
#include "conf.h"
#include "relay.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: popgate [-c FILE] [-v] COMMAND [ARGS]\n"
		"\n"
		"Drains POP3 mailboxes into a durable spool and relays the mail to a\n"
		"local SMTP host.\n"
		"\n"
		"Commands:\n"
		"  poll [--once] [ACCOUNT...]   fetch new mail into the spool\n"
		"  relay [--once]               send spooled mail to the SMTP host\n"
		"  run [-f]                     daemon: poll every account on its interval,\n"
		"                               relay after each poll (-f: foreground)\n"
		"  run --once                   poll each due account once, relay, exit\n"
		"                               (for a timer or cron)\n"
		"  queue [--state S] [--account A] [--all] [--json]\n"
		"                               list spooled messages (--all: include sent)\n"
		"  show [--raw] ID              envelope, history, headers of one message\n"
		"                               (--raw: the stored message itself)\n"
		"  requeue ID...|--held|--all   held/deferred messages back to the queue, due now\n"
		"  hold ID...                   keep messages from being relayed\n"
		"  delete ID... --yes           remove messages from the spool for good\n"
		"  flush                        make deferred mail due and relay now\n"
		"  check-config                 validate the configuration file\n"
		"  status [--json]              accounts, queue and totals; exit 1 when an\n"
		"                               account fails or mail is held\n"
		"  test-account NAME            connect and log in, show capabilities and\n"
		"                               mailbox size; fetch nothing\n"
		"  route [--account NAME] ID|FILE\n"
		"                               show the envelope a message gets (dry run)\n"
		"  authorize [--port N] [--timeout S] [--refresh-token-file FILE] NAME\n"
		"                               OAuth2: sign in (device or browser flow), test\n"
		"                               client credentials, or import a refresh token\n"
		"  import-fetchmailrc [--secrets-dir DIR] [FILE|-]\n"
		"                               print a popgate.conf made from a .fetchmailrc\n"
		"                               (default ~/.fetchmailrc); DIR gets the passwords\n"
		"\n"
		"Options:\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"  -v, --verbose       log at debug level (protocol traces; never secrets)\n"
		"  -h, --help          show this help\n"
		"  -V, --version       show the version\n"
		"\n"
		"Exit codes follow sysexits.h: 0 ok, 64 usage, 69 unavailable, 74 spool I/O,\n"
		"75 temporary failure, 76 protocol error, 77 authentication, 78 configuration.\n"
		"See popgate(8) and popgate.conf(5).\n",
		CONF_DEFAULT_PATH);
}

struct command {
	const char *name;
	int (*fn)(const struct cli_opts *o, int argc, char **argv);
};

static const struct command commands[] = {
	{ "poll", cmd_poll },   { "relay", cmd_relay }, { "run", cmd_run },
	{ "queue", cmd_queue }, { "check-config", cmd_check_config },
	{ "show", cmd_show },   { "requeue", cmd_requeue }, { "hold", cmd_hold },
	{ "delete", cmd_delete }, { "flush", cmd_flush },
	{ "route", cmd_route },
	{ "status", cmd_status }, { "test-account", cmd_test_account },
	{ "authorize", cmd_authorize },
	{ "import-fetchmailrc", cmd_import_fetchmailrc },
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' }, { "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_opts o = { .conf_path = CONF_DEFAULT_PATH };
	int ch;
	opterr = 0; /* our own one-line messages, without argv[0]'s full path */
	/* '+': stop at the command name; its options are its own */
	while ((ch = getopt_long(argc, argv, "+c:vhV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.conf_path = optarg;
			break;
		case 'v':
			o.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return EX_OK;
		case 'V':
			printf("popgate %s\n", PACKAGE_VERSION);
			return EX_OK;
		default:
			/* one line naming the option, not the whole help */
			if (optopt != 0)
				fprintf(stderr, "popgate: unknown option '-%c' (try 'popgate --help')\n",
					optopt);
			else
				fprintf(stderr, "popgate: unknown option '%s' (try 'popgate --help')\n",
					argv[optind - 1]);
			return EX_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "popgate: no command given (try 'popgate --help')\n");
		return EX_USAGE;
	}
	const char *cmd = argv[optind];
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return EX_OK;
	}
	/* every message recovery or a reclaim sends again is named in the
	 * log before that is committed, whichever command opens the spool */
	spool_set_requeue_log(relay_requeue_log);
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(cmd, commands[i].name) == 0) {
			optind++; /* let the command parse its own options from 1 */
			return commands[i].fn(&o, argc - optind + 1, argv + optind - 1);
		}
	}
	fprintf(stderr, "popgate: unknown command '%s' (try popgate --help)\n", cmd);
	return EX_USAGE;
}
