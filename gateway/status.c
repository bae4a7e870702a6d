/*
 * status.c - `popgate status [--json]`: what an operator or a monitoring
 * check wants to know, read from the spool (so it works while the daemon
 * runs): per account the last poll, its result, messages and bytes, the
 * next poll and the authentication state; the queue by state and the age
 * of the oldest message not sent; the relay totals.  The figures are those
 * of the metrics file (metrics.c collects both).
 *
 * Exit status: 0 healthy; 1 when anything in metrics' problem list holds:
 * the last relay round failed, a configured account is failing (last poll
 * failed: backoff, or held after an [AUTH] refusal), a message is held, or
 * the oldest message not sent is older than status_warn_age; 66 no spool,
 * 78 configuration, 74 spool errors.
 */
#include "config.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "cli.h"
#include "log.h"
#include "metrics.h"
#include "privs.h"
#include "spool.h"
#include "tokenstore.h"

#define STATUS_UNHEALTHY 1

static void fmt_time(time_t t, char *out, size_t len)
{
	struct tm tm;
	if (t == 0) {
		snprintf(out, len, "never");
		return;
	}
	localtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static void fmt_dur(long secs, char *out, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(out, len, "%lds", secs);
	else if (secs < 7200)
		snprintf(out, len, "%ldm", secs / 60);
	else if (secs < 172800)
		snprintf(out, len, "%ldh", secs / 3600);
	else
		snprintf(out, len, "%ldd", secs / 86400);
}

static void next_text(const struct metrics *m, const struct metrics_account *ma, char *out,
		      size_t len)
{
	char d[32];
	if (ma->conf == NULL)
		snprintf(out, len, "not configured");
	else if (ma->st.auth_failed != NULL)
		snprintf(out, len, "held: fix credentials");
	else if (ma->next_poll <= m->now)
		snprintf(out, len, "due now");
	else {
		fmt_dur((long)(ma->next_poll - m->now), d, sizeof d);
		snprintf(out, len, "in %s", d);
	}
}

/* print_tokens - an OAuth2 account's token state, never a token */
static void print_tokens(const struct metrics *m, const struct metrics_account *ma)
{
	char until[40], age[32];
	if (ma->token_state == TOKENSTORE_REAUTHORIZE) {
		printf("%-20s   oauth2: REAUTHORIZE: the grant was refused; run popgate authorize %s\n",
		       "", ma->st.name);
		return;
	}
	if (ma->token_state == TOKENSTORE_NONE) {
		if (ma->conf->oauth2->flow == OAUTH2_FLOW_CLIENT_CREDENTIALS)
			printf("%-20s   oauth2: no token yet (requested at the next poll)\n", "");
		else
			printf("%-20s   oauth2: not authorized: run popgate authorize %s\n", "",
			       ma->st.name);
		return;
	}
	fmt_time(ma->token_expires, until, sizeof until);
	fmt_dur((long)(m->now - ma->refresh_issued), age, sizeof age);
	printf("%-20s   oauth2: token valid until %s%s%s%s\n", "",
	       ma->token_expires ? until : "unknown",
	       ma->token_expires && ma->token_expires <= m->now ? " (expired; refreshed at the "
	       "next poll)" : "", ma->refresh_issued ? ", refresh token age " : "",
	       ma->refresh_issued ? age : "");
}

/* print_duplicates - duplicates recorded (dedupe), and the last poll that
 * met more than dedupe_alert of them */
static void print_duplicates(const struct metrics *m, const struct metrics_account *ma)
{
	uint64_t n = metrics_counter_value(m, "duplicates", ma->st.name, NULL);
	char when[40];
	if (n > 0)
		printf("%-20s   duplicates: %" PRIu64 " recorded, not relayed\n", "", n);
	if (ma->renumbered_at == 0)
		return;
	fmt_time(ma->renumbered_at, when, sizeof when);
	printf("%-20s   renumbered: the server seems to have renumbered the mailbox: %u "
	       "duplicates in the poll at %s\n", "", ma->renumbered_dups, when);
}

static void print_text(const struct metrics *m, const char *spool_dir)
{
	char when[40], next[40], age[32];
	printf("spool %s\nqueue: queued=%" PRIu64 " sending=%" PRIu64 " deferred=%" PRIu64
	       " held=%" PRIu64 " sent=%" PRIu64 " duplicate=%" PRIu64, spool_dir,
	       m->queue[SPOOL_QUEUED], m->queue[SPOOL_SENDING], m->queue[SPOOL_DEFERRED],
	       m->queue[SPOOL_HELD], m->queue[SPOOL_SENT], m->queue[SPOOL_DUPLICATE]);
	fmt_dur(m->oldest_unsent ? (long)(m->now - m->oldest_unsent) : 0, age, sizeof age);
	printf("; oldest not sent: %s\n", m->oldest_unsent ? age : "none");
	printf("relayed: sent=%" PRIu64 " deferred=%" PRIu64 " held=%" PRIu64 " bytes=%" PRIu64 "\n\n",
	       metrics_counter_value(m, "relay_sent", NULL, NULL),
	       metrics_counter_value(m, "relay_deferred", NULL, NULL),
	       metrics_counter_value(m, "relay_held", NULL, NULL),
	       metrics_counter_value(m, "relay_bytes", NULL, NULL));
	printf("%-20s %-19s %-9s %7s %12s %-22s %s\n", "ACCOUNT", "LAST POLL", "RESULT", "FETCHED",
	       "BYTES", "NEXT POLL", "FAILURES");
	for (size_t i = 0; i < m->naccounts; i++) {
		const struct metrics_account *ma = &m->accounts[i];
		fmt_time(ma->st.last_poll, when, sizeof when);
		next_text(m, ma, next, sizeof next);
		printf("%-20s %-19s %-9s %7u %12" PRIu64 " %-22s %u\n", ma->st.name, when,
		       ma->st.last_result ? ma->st.last_result : "-", ma->st.last_fetched,
		       ma->st.last_bytes, next, ma->st.failures);
		if (ma->oauth2)
			print_tokens(m, ma);
		print_duplicates(m, ma);
		if (ma->failing && ma->st.last_error != NULL) {
			char *e = sanitize_for_log(ma->st.last_error, strlen(ma->st.last_error), 300);
			printf("%-20s   last error: %s\n", "", e);
			free(e);
		}
	}
}

/* print_health - the last relay round and every problem, in words */
static void print_health(const struct metrics *m)
{
	const struct spool_relay_state *rs = &m->relay;
	char when[40];
	fmt_time(rs->last_run, when, sizeof when);
	if (rs->result == NULL)
		printf("\nlast relay round: none recorded\n");
	else {
		char *e = sanitize_for_log(rs->error ? rs->error : "", rs->error ? strlen(rs->error) : 0,
					   300);
		printf("\nlast relay round: %s %s attempted=%u sent=%u deferred=%u held=%u%s%s\n",
		       when, rs->result, rs->attempted, rs->sent, rs->deferred, rs->held,
		       *e ? " error: " : "", e);
		free(e);
	}
	if (m->nproblems == 0) {
		printf("healthy: yes\n");
		return;
	}
	printf("healthy: no\n");
	for (size_t i = 0; i < m->nproblems; i++) {
		const struct metrics_problem *p = &m->problems[i];
		char *r = sanitize_for_log(p->reason, strlen(p->reason), 400);
		printf("  %s%s%s: %s\n", p->what, p->account ? " " : "", p->account ? p->account : "",
		       r);
		free(r);
	}
}

int cmd_status(const struct cli_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = { { "json", no_argument, NULL, 'j' },
						  { NULL, 0, NULL, 0 } };
	int json = 0, ch;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "+j", longopts, NULL)) != -1) {
		if (ch != 'j') {
			fprintf(stderr, "popgate status: usage: popgate status [--json]\n");
			return EX_USAGE;
		}
		json = 1;
	}
	if (optind != argc) {
		fprintf(stderr, "popgate status: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	struct conf *c = load(o, 1);
	if (c == NULL)
		return EX_CONFIG;
	int code = EX_IOERR;
	struct spool *sp = NULL;
	struct metrics m;
	char *err = NULL;
	if (!privs_spool_exists(c->spool_dir)) {
		fprintf(stderr, "popgate status: no spool at %s (no index.db: `popgate poll --once` "
			"or the daemon creates it)\n", c->spool_dir);
		code = EX_NOINPUT;
	} else if ((code = privs_for_spool(c, 0)) == EX_OK) {
		code = EX_IOERR;
		sp = open_spool(c);
	}
	if (sp != NULL && metrics_collect(c, sp, &m, &err) == PG_OK) {
		if (json)
			metrics_render_json(&m, stdout);
		else {
			print_text(&m, c->spool_dir);
			print_health(&m);
		}
		code = m.nproblems == 0 ? EX_OK : STATUS_UNHEALTHY;
		metrics_free(&m);
	} else if (sp != NULL) {
		fprintf(stderr, "popgate status: %s\n", err);
	}
	free(err);
	spool_close(&sp);
	conf_free(&c);
	log_close();
	return code;
}
