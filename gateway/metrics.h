/*
 * metrics.h - the figures an operator monitors, for the Prometheus textfile
 * (metrics_file) and `popgate status [--json]`; one collector, two renderers.
 *
 * Contract:
 *  - metrics_collect() reads everything from the spool (counters table,
 *    account state, queue counts) into a struct metrics the caller frees
 *    with metrics_free(); nothing is kept in memory between rounds, so the
 *    counters survive restarts and every process adds to the same ones.
 *  - metrics_count_poll()/metrics_count_relay() add one round's figures to
 *    the spool's counters (errors are logged, never fatal: metrics must not
 *    stop mail).
 *  - metrics_write_file() renders the Prometheus text format to FILE.tmp,
 *    fsyncs it and renames it over FILE (node_exporter never sees half a
 *    file); PG_IO with *err_r on failure.
 *  - metrics_after_round() = collect + write when metrics_file is set;
 *    failures are logged.
 */
#ifndef POPGATE_METRICS_H
#define POPGATE_METRICS_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "conf.h"
#include "spool.h"
#include "util.h"

struct metrics_counter {
	char *name;
	char *account;
	char *reason;
	uint64_t value;
};

struct metrics_account {
	const struct conf_account *conf; /* NULL: in the spool, no longer configured */
	struct spool_account_state st;
	time_t next_poll;                /* 0: unknown / not scheduled */
	int failing;                     /* last poll failed or the account is held */
	/* OAuth2 accounts: the token store's state (never a token) */
	int oauth2;                      /* 1: the account has an oauth2 block */
	int token_state;                 /* enum tokenstore_state */
	time_t token_expires;            /* access token valid until (0: none/unknown) */
	time_t refresh_issued;           /* when the refresh token was issued (0: none) */
	/* the last poll that met more than dedupe_alert duplicates (0: none) */
	time_t renumbered_at;
	unsigned int renumbered_dups;
};

/* One reason `status` is not healthy. */
struct metrics_problem {
	const char *what;   /* "relay-failed", "account-held", "account-failing",
			       "mail-held", "queue-age" */
	char *account;      /* or NULL */
	char *reason;       /* for a human */
};

struct metrics {
	time_t now;
	struct spool_relay_state relay;  /* the last relay round */
	struct metrics_problem *problems; /* empty: healthy */
	size_t nproblems;
	uint64_t queue[SPOOL_NSTATES];  /* by enum spool_state */
	time_t oldest_unsent;            /* created time, 0 if none */
	struct metrics_counter *counters;
	size_t ncounters;
	struct metrics_account *accounts; /* one per configured account, then others */
	size_t naccounts;
};

enum pg_res metrics_collect(const struct conf *c, struct spool *sp, struct metrics *m_r,
			    char **err_r);
void metrics_free(struct metrics *m);
/* metrics_counter_value - a counter's value (account/reason NULL: any, summed) */
uint64_t metrics_counter_value(const struct metrics *m, const char *name, const char *account,
			       const char *reason);
void metrics_render_prom(const struct metrics *m, FILE *f);
void metrics_render_json(const struct metrics *m, FILE *f);
enum pg_res metrics_write_file(const struct metrics *m, const char *path, char **err_r);

void metrics_count_poll(struct spool *sp, const char *account, enum pg_res res,
			unsigned int fetched, uint64_t bytes);
void metrics_count_relay(struct spool *sp, unsigned int sent, unsigned int deferred,
			 unsigned int held, uint64_t bytes);
void metrics_after_round(const struct conf *c, struct spool *sp);

/* sched_jitter - the account's fixed share of jitter, in seconds: up to a
 * tenth of its interval, derived from its name (stable across restarts, so
 * accounts stay spread and tests can predict it) */
long sched_jitter(const char *name, int interval);
/* sched_next_poll - when the scheduler will next poll the account, from its
 * stored state: the later of last poll + interval + jitter and not_before;
 * 0 (now) if it was never polled.  An [AUTH] hold (st->auth_failed) is not
 * reflected: the caller reports it. */
time_t sched_next_poll(const struct conf_account *a, const struct spool_account_state *st);

#endif
