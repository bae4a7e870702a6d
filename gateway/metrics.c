/*
 * metrics.c - collect the operator's figures from the spool and render them
 * as Prometheus text or JSON (see metrics.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "tokenstore.h"
#include "spool_stats.h"

long sched_jitter(const char *name, int interval)
{
	uint32_t h = 2166136261u; /* FNV-1a: stable, no libc dependence */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	long span = interval / 10;
	return span > 0 ? (long)(h % (uint32_t)(span + 1)) : 0;
}

time_t sched_next_poll(const struct conf_account *a, const struct spool_account_state *st)
{
	if (st->last_poll == 0)
		return st->not_before;
	time_t next = st->last_poll + a->interval + sched_jitter(a->name, a->interval);
	return st->not_before > next ? st->not_before : next;
}

/* ---- collection ---- */

static int add_counter(void *ctx, const char *name, const char *account, const char *reason,
		       uint64_t value)
{
	struct metrics *m = ctx;
	m->counters = xrealloc(m->counters, (m->ncounters + 1) * sizeof *m->counters);
	struct metrics_counter *mc = &m->counters[m->ncounters++];
	mc->name = xstrdup(name);
	mc->account = xstrdup(account);
	mc->reason = xstrdup(reason);
	mc->value = value;
	return 0;
}

static struct metrics_account *add_account(struct metrics *m)
{
	m->accounts = xrealloc(m->accounts, (m->naccounts + 1) * sizeof *m->accounts);
	struct metrics_account *ma = &m->accounts[m->naccounts++];
	memset(ma, 0, sizeof *ma);
	return ma;
}

/* account_tokens - the token store's state of an OAuth2 account; the
 * tokens themselves are wiped at once */
static void account_tokens(const struct conf *c, struct metrics_account *ma)
{
	struct tokenstore_entry e;
	char *err = NULL;
	if (ma->conf == NULL || ma->conf->oauth2 == NULL)
		return;
	ma->oauth2 = 1;
	if (tokenstore_read(c->spool_dir, ma->conf->name, &e, &err) != PG_OK) {
		LOG_WARN("account=%s status=token-store-unreadable reason=\"%s\"", ma->conf->name, err);
		free(err);
		return;
	}
	ma->token_state = (int)e.state;
	ma->token_expires = e.access_token != NULL ? e.access_expires : 0;
	ma->refresh_issued = e.refresh_token != NULL ? e.refresh_issued : 0;
	tokenstore_entry_wipe(&e);
}

static void account_derive(struct metrics_account *ma)
{
	const struct spool_account_state *st = &ma->st;
	ma->failing = st->auth_failed != NULL ||
		      (st->last_result != NULL && strcmp(st->last_result, "ok") != 0) ||
		      ma->token_state == TOKENSTORE_REAUTHORIZE;
	ma->next_poll = ma->conf != NULL ? sched_next_poll(ma->conf, st) : 0;
}

/* accounts in the spool that are no longer configured still show (their
 * history matters), after the configured ones */
static int add_stale(void *ctx, const struct spool_account_state *st)
{
	struct metrics *m = ctx;
	for (size_t i = 0; i < m->naccounts; i++)
		if (m->accounts[i].conf != NULL && strcmp(m->accounts[i].conf->name, st->name) == 0)
			return 0;
	struct metrics_account *ma = add_account(m);
	ma->st = *st;
	ma->st.name = xstrdup(st->name);
	ma->st.last_result = st->last_result ? xstrdup(st->last_result) : NULL;
	ma->st.auth_failed = st->auth_failed ? xstrdup(st->auth_failed) : NULL;
	ma->st.last_error = st->last_error ? xstrdup(st->last_error) : NULL;
	account_derive(ma);
	return 0;
}

static void add_problem(struct metrics *m, const char *what, const char *account,
			const char *fmt, ...) PG_PRINTF(4, 5);

static void add_problem(struct metrics *m, const char *what, const char *account,
			const char *fmt, ...)
{
	va_list ap;
	m->problems = xrealloc(m->problems, (m->nproblems + 1) * sizeof *m->problems);
	struct metrics_problem *p = &m->problems[m->nproblems++];
	p->what = what;
	p->account = account ? xstrdup(account) : NULL;
	va_start(ap, fmt);
	p->reason = xvasprintf(fmt, ap);
	va_end(ap);
}

/* find_problems - what makes `status` unhealthy, each with its reason */
static void find_problems(const struct conf *c, struct metrics *m)
{
	char d[32], w[32];
	const struct spool_relay_state *rs = &m->relay;
	if (rs->result != NULL && strcmp(rs->result, "ok") != 0)
		add_problem(m, "relay-failed", NULL, "the last relay round (%lds ago) failed (%s): %s",
			    (long)(m->now - rs->last_run), rs->result, rs->error ? rs->error : "");
	for (size_t i = 0; i < m->naccounts; i++) {
		const struct metrics_account *ma = &m->accounts[i];
		const char *e = ma->st.last_error ? ma->st.last_error : "";
		if (ma->conf == NULL || !ma->failing)
			continue;
		if (ma->token_state == TOKENSTORE_REAUTHORIZE)
			add_problem(m, "account-reauthorize", ma->st.name, "the OAuth2 grant was "
				    "refused: run popgate authorize %s", ma->st.name);
		else if (ma->st.auth_failed != NULL)
			add_problem(m, "account-held", ma->st.name, "authentication refused: %s; "
				    "not polled on schedule until the configuration changes", e);
		else
			add_problem(m, "account-failing", ma->st.name, "%u failed poll%s (%s), in "
				    "backoff for %lds: %s", ma->st.failures, ma->st.failures == 1 ?
				    "" : "s", ma->st.last_result ? ma->st.last_result : "?",
				    ma->st.not_before > m->now ? (long)(ma->st.not_before - m->now) : 0L, e);
	}
	if (m->queue[SPOOL_HELD] > 0)
		add_problem(m, "mail-held", NULL, "%" PRIu64 " message%s held (popgate queue --state "
			    "held)", m->queue[SPOOL_HELD], m->queue[SPOOL_HELD] == 1 ? "" : "s");
	if (m->oldest_unsent != 0 && m->now - m->oldest_unsent > c->status_warn_age) {
		conf_format_duration((long)(m->now - m->oldest_unsent), d, sizeof d);
		conf_format_duration(c->status_warn_age, w, sizeof w);
		add_problem(m, "queue-age", NULL, "the oldest message not sent has waited %s, over "
			    "status_warn_age %s", d, w);
	}
}

enum pg_res metrics_collect(const struct conf *c, struct spool *sp, struct metrics *m_r,
			    char **err_r)
{
	char *err = NULL;
	memset(m_r, 0, sizeof *m_r);
	m_r->now = time(NULL);
	enum spool_res r = spool_count_by_state(sp, m_r->queue, &err);
	if (r == SPOOL_OK)
		r = spool_oldest_unsent(sp, &m_r->oldest_unsent, &err);
	if (r == SPOOL_OK)
		r = spool_counter_list(sp, add_counter, m_r, &err);
	for (size_t i = 0; r == SPOOL_OK && i < c->naccounts; i++) {
		struct metrics_account *ma = add_account(m_r);
		ma->conf = &c->accounts[i];
		r = spool_account_get(sp, c->accounts[i].name, &ma->st, &err);
		if (r == SPOOL_OK)
			r = spool_dedupe_alert_get(sp, c->accounts[i].name, &ma->renumbered_at,
						   &ma->renumbered_dups, &err);
		account_tokens(c, ma);
		if (r == SPOOL_OK)
			account_derive(ma);
	}
	if (r == SPOOL_OK)
		r = spool_account_list(sp, add_stale, m_r, &err);
	if (r == SPOOL_OK)
		r = spool_relay_state_get(sp, &m_r->relay, &err);
	if (r == SPOOL_OK)
		find_problems(c, m_r);
	if (r != SPOOL_OK) {
		set_err(err_r, "%s", err ? err : spool_res_name(r));
		free(err);
		metrics_free(m_r);
		return r == SPOOL_BUSY ? PG_TEMP : PG_IO;
	}
	return PG_OK;
}

void metrics_free(struct metrics *m)
{
	for (size_t i = 0; i < m->ncounters; i++) {
		free(m->counters[i].name);
		free(m->counters[i].account);
		free(m->counters[i].reason);
	}
	for (size_t i = 0; i < m->naccounts; i++)
		spool_account_state_free(&m->accounts[i].st);
	free(m->counters);
	free(m->accounts);
	for (size_t i = 0; i < m->nproblems; i++) {
		free(m->problems[i].account);
		free(m->problems[i].reason);
	}
	free(m->problems);
	spool_relay_state_free(&m->relay);
	memset(m, 0, sizeof *m);
}

uint64_t metrics_counter_value(const struct metrics *m, const char *name, const char *account,
			       const char *reason)
{
	uint64_t v = 0;
	for (size_t i = 0; i < m->ncounters; i++) {
		const struct metrics_counter *mc = &m->counters[i];
		if (strcmp(mc->name, name) == 0 && (account == NULL || strcmp(mc->account, account) == 0) &&
		    (reason == NULL || strcmp(mc->reason, reason) == 0))
			v += mc->value;
	}
	return v;
}

/* ---- counting ---- */

static void count(struct spool *sp, const char *name, const char *account, const char *reason,
		  uint64_t delta)
{
	char *err = NULL;
	if (delta == 0 && reason == NULL)
		return;
	if (spool_counter_add(sp, name, account, reason, delta, &err) != SPOOL_OK) {
		LOG_WARN("metrics status=counter-failed counter=%s reason=\"%s\"", name, err);
		free(err);
	}
}

void metrics_count_poll(struct spool *sp, const char *account, enum pg_res res,
			unsigned int fetched, uint64_t bytes)
{
	count(sp, "polls", account, res == PG_OK ? "ok" : pg_res_name(res), 1);
	count(sp, "fetched", account, NULL, fetched);
	count(sp, "fetched_bytes", account, NULL, bytes);
}

void metrics_count_relay(struct spool *sp, unsigned int sent, unsigned int deferred,
			 unsigned int held, uint64_t bytes)
{
	count(sp, "relay_sent", NULL, NULL, sent);
	count(sp, "relay_deferred", NULL, NULL, deferred);
	count(sp, "relay_held", NULL, NULL, held);
	count(sp, "relay_bytes", NULL, NULL, bytes);
}

/* ---- Prometheus text format ---- */

/* prom_label - a label value with \, " and newline escaped */
static void prom_label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void prom_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* prom_account_counter - one sample per configured account (0 if none yet),
 * so a rate() starts from a known zero */
static void prom_account_counter(const struct metrics *m, FILE *f, const char *metric,
				 const char *counter, const char *help)
{
	prom_head(f, metric, "counter", help);
	for (size_t i = 0; i < m->naccounts; i++) {
		fputs(metric, f);
		fputs("{account=\"", f);
		prom_label(f, m->accounts[i].st.name);
		fprintf(f, "\"} %" PRIu64 "\n",
			metrics_counter_value(m, counter, m->accounts[i].st.name, NULL));
	}
}

static void prom_polls(const struct metrics *m, FILE *f)
{
	prom_head(f, "popgate_polls_total", "counter", "Polls by account and result.");
	for (size_t i = 0; i < m->ncounters; i++) {
		const struct metrics_counter *mc = &m->counters[i];
		if (strcmp(mc->name, "polls") != 0)
			continue;
		fputs("popgate_polls_total{account=\"", f);
		prom_label(f, mc->account);
		fputs("\",result=\"", f);
		prom_label(f, mc->reason);
		fprintf(f, "\"} %" PRIu64 "\n", mc->value);
	}
	prom_head(f, "popgate_poll_failures_total", "counter",
		  "Failed polls by account and reason (error class).");
	for (size_t i = 0; i < m->ncounters; i++) {
		const struct metrics_counter *mc = &m->counters[i];
		if (strcmp(mc->name, "polls") != 0 || strcmp(mc->reason, "ok") == 0)
			continue;
		fputs("popgate_poll_failures_total{account=\"", f);
		prom_label(f, mc->account);
		fputs("\",reason=\"", f);
		prom_label(f, mc->reason);
		fprintf(f, "\"} %" PRIu64 "\n", mc->value);
	}
}

static void prom_account_gauges(const struct metrics *m, FILE *f)
{
	static const char *const names[] = {
		"popgate_account_last_poll_timestamp_seconds", "popgate_account_up",
		"popgate_account_consecutive_failures", "popgate_account_auth_held",
		"popgate_account_next_poll_timestamp_seconds",
	};
	static const char *const helps[] = {
		"Unix time of the account's last poll (0: never).",
		"1 if the account's last poll succeeded and it is not held.",
		"Consecutive failed polls (drives the backoff).",
		"1 if the server refused the credentials; no scheduled poll until the "
		"configuration changes.",
		"Unix time of the next scheduled poll (0: now).",
	};
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
		prom_head(f, names[k], "gauge", helps[k]);
		for (size_t i = 0; i < m->naccounts; i++) {
			const struct metrics_account *ma = &m->accounts[i];
			long long v[] = { (long long)ma->st.last_poll,
					  ma->st.last_poll != 0 && !ma->failing,
					  (long long)ma->st.failures, ma->st.auth_failed != NULL,
					  (long long)ma->next_poll };
			fprintf(f, "%s{account=\"", names[k]);
			prom_label(f, ma->st.name);
			fprintf(f, "\"} %lld\n", v[k]);
		}
	}
}

static void prom_relay(const struct metrics *m, FILE *f)
{
	static const char *const counters[] = { "relay_sent", "relay_deferred", "relay_held",
						"relay_bytes" };
	static const char *const names[] = { "popgate_messages_relayed_total",
					     "popgate_messages_deferred_total",
					     "popgate_messages_held_total", "popgate_bytes_relayed_total" };
	static const char *const helps[] = { "Messages accepted by the SMTP host.",
					     "Delivery attempts deferred (4xx, no answer).",
					     "Messages held after a permanent refusal.",
					     "Octets of the messages the SMTP host accepted." };
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
		prom_head(f, names[k], "counter", helps[k]);
		fprintf(f, "%s %" PRIu64 "\n", names[k],
			metrics_counter_value(m, counters[k], NULL, NULL));
	}
}

/* prom_oauth2 - the token state of the OAuth2 accounts (never a token) */
static void prom_oauth2(const struct metrics *m, FILE *f)
{
	prom_head(f, "popgate_account_oauth2_reauthorize", "gauge",
		  "1 if the identity provider refused the grant (invalid_grant): run "
		  "popgate authorize NAME.");
	for (size_t i = 0; i < m->naccounts; i++)
		if (m->accounts[i].oauth2) {
			fputs("popgate_account_oauth2_reauthorize{account=\"", f);
			prom_label(f, m->accounts[i].st.name);
			fprintf(f, "\"} %d\n", m->accounts[i].token_state == TOKENSTORE_REAUTHORIZE);
		}
	prom_head(f, "popgate_account_oauth2_token_expiry_timestamp_seconds", "gauge",
		  "Unix time the stored access token expires (0: none).");
	for (size_t i = 0; i < m->naccounts; i++)
		if (m->accounts[i].oauth2) {
			fputs("popgate_account_oauth2_token_expiry_timestamp_seconds{account=\"", f);
			prom_label(f, m->accounts[i].st.name);
			fprintf(f, "\"} %lld\n", (long long)m->accounts[i].token_expires);
		}
}

void metrics_render_prom(const struct metrics *m, FILE *f)
{
	prom_oauth2(m, f);
	prom_account_counter(m, f, "popgate_messages_fetched_total", "fetched",
			     "Messages fetched into the spool.");
	prom_account_counter(m, f, "popgate_bytes_fetched_total", "fetched_bytes",
			     "Octets fetched into the spool.");
	prom_account_counter(m, f, "popgate_duplicates_total", "duplicates",
			     "Messages recorded as duplicates of one already spooled "
			     "(not relayed).");
	prom_polls(m, f);
	prom_account_gauges(m, f);
	prom_relay(m, f);
	prom_head(f, "popgate_queue_messages", "gauge", "Messages in the spool by state.");
	for (int s = SPOOL_QUEUED; s < SPOOL_NSTATES; s++)
		fprintf(f, "popgate_queue_messages{state=\"%s\"} %" PRIu64 "\n",
			spool_state_name((enum spool_state)s), m->queue[s]);
	prom_head(f, "popgate_queue_oldest_age_seconds", "gauge",
		  "Age of the oldest message not yet sent (0: none).");
	fprintf(f, "popgate_queue_oldest_age_seconds %lld\n",
		m->oldest_unsent ? (long long)(m->now - m->oldest_unsent) : 0LL);
	prom_head(f, "popgate_metrics_timestamp_seconds", "gauge",
		  "Unix time these figures were taken.");
	fprintf(f, "popgate_metrics_timestamp_seconds %lld\n", (long long)m->now);
}

enum pg_res metrics_write_file(const struct metrics *m, const char *path, char **err_r)
{
	char *tmp = xasprintf("%s.tmp", path);
	enum pg_res res = PG_IO;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL) {
		set_err(err_r, "%s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	metrics_render_prom(m, f);
	int bad = fflush(f) != 0 || ferror(f) || fsync(fd) != 0;
	int saved = errno;
	if (fclose(f) != 0 && !bad) {
		bad = 1;
		saved = errno;
	}
	if (bad) {
		set_err(err_r, "%s: write: %s", tmp, strerror(saved));
		unlink(tmp);
	} else if (rename(tmp, path) != 0) {
		set_err(err_r, "%s: rename to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
	} else {
		res = PG_OK;
	}
out:
	free(tmp);
	return res;
}

void metrics_after_round(const struct conf *c, struct spool *sp)
{
	if (c->metrics_file == NULL)
		return;
	struct metrics m;
	char *err = NULL;
	enum pg_res res = metrics_collect(c, sp, &m, &err);
	if (res == PG_OK) {
		res = metrics_write_file(&m, c->metrics_file, &err);
		metrics_free(&m);
	}
	if (res != PG_OK)
		LOG_WARN("metrics file=%s status=failed reason=\"%s\"", c->metrics_file, err);
	free(err);
}

/* ---- JSON (popgate status --json) ---- */

static void json_str(FILE *f, const char *s)
{
	if (s == NULL) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void json_polls(const struct metrics *m, FILE *f, const char *account)
{
	int first = 1;
	fputc('{', f);
	for (size_t i = 0; i < m->ncounters; i++) {
		const struct metrics_counter *mc = &m->counters[i];
		if (strcmp(mc->name, "polls") != 0 || strcmp(mc->account, account) != 0)
			continue;
		fputs(first ? "" : ", ", f);
		json_str(f, mc->reason);
		fprintf(f, ": %" PRIu64, mc->value);
		first = 0;
	}
	fputc('}', f);
}

static void json_account(const struct metrics *m, const struct metrics_account *ma, FILE *f)
{
	const struct spool_account_state *st = &ma->st;
	fputs("    {\"name\": ", f);
	json_str(f, st->name);
	fprintf(f, ", \"configured\": %s, \"last_poll\": %lld, \"last_result\": ",
		ma->conf ? "true" : "false", (long long)st->last_poll);
	json_str(f, st->last_result);
	fprintf(f, ", \"last_fetched\": %u, \"last_bytes\": %" PRIu64 ", \"next_poll\": ",
		st->last_fetched, st->last_bytes);
	if (st->auth_failed != NULL || ma->conf == NULL)
		fputs("null", f);
	else
		fprintf(f, "%lld", (long long)ma->next_poll);
	fprintf(f, ", \"not_before\": %lld, \"failures\": %u, \"auth_held\": %s, \"failing\": %s",
		(long long)st->not_before, st->failures, st->auth_failed ? "true" : "false",
		ma->failing ? "true" : "false");
	fputs(", \"last_error\": ", f);
	json_str(f, st->last_error);
	fprintf(f, ", \"login_delay\": %d, \"expire\": %d", st->login_delay, st->expire);
	fprintf(f, ", \"fetched_total\": %" PRIu64 ", \"bytes_fetched_total\": %" PRIu64,
		metrics_counter_value(m, "fetched", st->name, NULL),
		metrics_counter_value(m, "fetched_bytes", st->name, NULL));
	fprintf(f, ", \"duplicates_total\": %" PRIu64 ", \"renumbered_at\": %lld, "
		"\"renumbered_duplicates\": %u",
		metrics_counter_value(m, "duplicates", st->name, NULL),
		(long long)ma->renumbered_at, ma->renumbered_dups);
	fputs(", \"polls\": ", f);
	json_polls(m, f, st->name);
	if (ma->oauth2)
		fprintf(f, ", \"oauth2\": {\"state\": \"%s\", \"access_token_expires\": %lld, "
			"\"refresh_token_issued\": %lld, \"refresh_token_age\": %lld}",
			tokenstore_state_name((enum tokenstore_state)ma->token_state),
			(long long)ma->token_expires, (long long)ma->refresh_issued,
			ma->refresh_issued ? (long long)(m->now - ma->refresh_issued) : 0LL);
	fputc('}', f);
}

void metrics_render_json(const struct metrics *m, FILE *f)
{
	fprintf(f, "{\n  \"time\": %lld,\n  \"queue\": {", (long long)m->now);
	for (int s = SPOOL_QUEUED; s < SPOOL_NSTATES; s++)
		fprintf(f, "%s\"%s\": %" PRIu64, s ? ", " : "", spool_state_name((enum spool_state)s),
			m->queue[s]);
	fprintf(f, "},\n  \"oldest_unsent_age\": %lld,\n",
		m->oldest_unsent ? (long long)(m->now - m->oldest_unsent) : 0LL);
	fprintf(f, "  \"relay\": {\"sent\": %" PRIu64 ", \"deferred\": %" PRIu64 ", \"held\": %" PRIu64
		   ", \"bytes\": %" PRIu64 "},\n",
		metrics_counter_value(m, "relay_sent", NULL, NULL),
		metrics_counter_value(m, "relay_deferred", NULL, NULL),
		metrics_counter_value(m, "relay_held", NULL, NULL),
		metrics_counter_value(m, "relay_bytes", NULL, NULL));
	const struct spool_relay_state *rs = &m->relay;
	fprintf(f, "  \"last_relay\": {\"time\": %lld, \"result\": ", (long long)rs->last_run);
	json_str(f, rs->result);
	fprintf(f, ", \"attempted\": %u, \"sent\": %u, \"deferred\": %u, \"held\": %u, "
		"\"bytes\": %" PRIu64 ", \"error\": ", rs->attempted, rs->sent, rs->deferred,
		rs->held, rs->bytes);
	json_str(f, rs->error);
	fputs("},\n  \"accounts\": [\n", f);
	for (size_t i = 0; i < m->naccounts; i++) {
		json_account(m, &m->accounts[i], f);
		fputs(i + 1 < m->naccounts ? ",\n" : "\n", f);
	}
	fprintf(f, "  ],\n  \"healthy\": %s,\n  \"problems\": [", m->nproblems ? "false" : "true");
	for (size_t i = 0; i < m->nproblems; i++) {
		fprintf(f, "%s\n    {\"what\": \"%s\", \"account\": ", i ? "," : "", m->problems[i].what);
		json_str(f, m->problems[i].account);
		fputs(", \"reason\": ", f);
		json_str(f, m->problems[i].reason);
		fputc('}', f);
	}
	fprintf(f, "%s]\n}\n", m->nproblems ? "\n  " : "");
}
