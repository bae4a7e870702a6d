/*
 * admin.c - queue administration commands (the mailq/postqueue of popgate).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "cli.h"
#include "log.h"
#include "spool.h"

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
