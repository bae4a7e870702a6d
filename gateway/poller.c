/*
 * poller.c - drains one POP3 account into the spool (see poller.h).
 *
 * Ordering (invariant 1): RETR streams into a spool writer; the writer is
 * finished (a small message stays in memory, a large one is fsync'd and
 * renamed into msg/) and the message joins the pending group; the group is
 * committed (one transaction, fsync'd) by the spool's commit thread while
 * the next group is fetched; only when that commit has finished are its
 * messages DELE'd.  POP3 deletes take effect at QUIT, so a crash anywhere
 * before QUIT deletes nothing, and a message committed but not yet deleted
 * is recognised by its UIDL next time and only deleted.
 *
 * Pipelining: RETRs are queued up to the session's window and written in
 * one batch; replies are read in order.  When a group is committed, its
 * DELEs join the next batch, in front of the next RETRs, so the link never
 * waits for a round trip and a DELE never precedes its commit.  Without
 * PIPELINING the window is 1: the same loop, one command at a time.
 *
 * Account state: every poll ends by storing the account's state (failures,
 * backoff, [AUTH] hold, LOGIN-DELAY, EXPIRE) for poller_account_ready().
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "dedupe.h"
#include "log.h"
#include "msgfilter.h"
#include "poller.h"
#include "tokenstore.h"
#include "pop3.h"
#include "route.h"
#include "spool_stats.h"

#define BACKOFF_BASE 60          /* first retry after a temporary failure */
#define BACKOFF_MAX 3600         /* longest ordinary backoff */
#define BACKOFF_SYS_PERM (6 * 3600) /* [SYS/PERM]: the admin must act */
#define PRUNE_AFTER 86400        /* a sent row stays a day for `queue`/`show` */
#define PROBLEM_MAX 32           /* problem UIDLs remembered per account */
#define LOGIN_DELAY_MAX 86400    /* a server's LOGIN-DELAY is obeyed up to a day */
#define SLACK_FACTOR 4           /* RETR may exceed LIST's (estimated) size ... */
#define SLACK_EXTRA (1024 * 1024) /* ... this many times, plus this */

/* a message the plan decided to fetch */
struct pick {
	struct pop3_msginfo *mi;
	int hold; /* over max_message_size with oversize = hold */
	char *spool_uidl; /* the key it is spooled under when its UIDL was
			   * reused (see uidl_reused) or the server has no
			   * UIDL; NULL: mi->uidl */
	struct spool_dedupe dd; /* its content keys; the commit sets dd.dup_of_r */
};

static const char *pick_uidl(const struct pick *pk)
{
	return pk->spool_uidl != NULL ? pk->spool_uidl : pk->mi->uidl;
}

/* One poll in progress. */
struct poll {
	const struct conf *c;
	const struct conf_account *a;
	struct spool *sp;
	struct pop3 *s;
	struct poll_stats *st;
	unsigned int *dele;  /* message numbers committed (or known) to delete */
	size_t ndele;
	size_t dele_sent;    /* dele[0..dele_sent) already queued */
	int broken;          /* the connection is unusable (failed mid-RETR) */
	struct pick *sel;    /* what to fetch, in message order */
	size_t nsel;
	size_t next_send;    /* sel[0..next_send) RETR queued */
	size_t next_read;    /* sel[0..next_read) RETR answered */
	struct pick **group; /* finished, not yet committed */
	size_t ngroup;
	uint64_t group_bytes;
	struct pick **cgroup; /* the group being committed (commit thread) */
	size_t ncgroup;
	uint64_t cgroup_bytes;
	int inflight;        /* cgroup's commit started, not finished */
	unsigned int total_new;
	poll_progress_fn progress;
	void *progress_ctx;
	struct pop3_status status; /* the server's last -ERR */
	/* problem messages (see problems_*): loaded at the start, stored at
	 * the end with what this poll learned */
	char *probs[PROBLEM_MAX];
	int prob_done[PROBLEM_MAX]; /* spooled this poll */
	size_t nprobs;
	char *newprobs[PROBLEM_MAX]; /* broke this session or over the limit */
	size_t nnew;
	struct dedupe_keys *dk; /* NULL: dedupe = off */
	unsigned int dups;      /* committed as duplicates this poll */
	int no_uidl;            /* the server has no UIDL: drain by digest */
};

static enum pg_res spool_to_pg(enum spool_res r)
{
	switch (r) {
	case SPOOL_OK:
		return PG_OK;
	case SPOOL_BUSY:
		return PG_TEMP;
	default:
		return PG_IO;
	}
}

/* The message's way to disk: the spool writer, and the routing header
 * collector on the side. */
struct ingest {
	struct spool_writer *w;
	struct route_hdrs *rh;
	struct dedupe_keys *dk; /* or NULL */
};

/* writer_sink - the message as the server sent it (canonical line ends);
 * our Received line goes to the writer before and reaches no key */
static enum pg_res writer_sink(void *ctx, const void *data, size_t len, char **err_r)
{
	struct ingest *in = ctx;
	route_hdrs_feed(in->rh, data, len);
	if (in->dk != NULL)
		dedupe_feed(in->dk, data, len);
	return spool_to_pg(spool_writer_write(in->w, data, len, err_r));
}

static void received_header(const struct poll *p, const char *id, char *out, size_t outlen)
{
	static char date[64];
	static time_t last = (time_t)-1;
	time_t now = time(NULL);
	if (now != last) { /* formatted once a second */
		struct tm tm;
		localtime_r(&now, &tm);
		strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
		last = now;
	}
	const char *tls = pop3_tls_info(p->s);
	snprintf(out, outlen,
		 "Received: from %s (account %s%s%s)\r\n\tby %s (popgate) with POP3 id %s\r\n"
		 "\t%s%s%s%s; %s\r\n",
		 p->a->server, p->a->name, tls ? "; " : "", tls ? tls : "", p->c->hostname, id,
		 /* multidrop: the recipients are not known yet, no `for` clause */
		 p->a->deliver_to ? "for <" : "", p->a->deliver_to ? p->a->deliver_to : "",
		 p->a->deliver_to ? ">" : "", p->a->deliver_to ? "" : "(multidrop)", date);
}

/* ---- problem messages ------------------------------------------------
 * One bad message must never block a mailbox.  A RETR refused with -ERR
 * leaves the session in step: the message stays on the server and the
 * rest is fetched and deleted as usual.  A message whose RETR broke the
 * session (connection lost, timeout, garbage mid-message) or was over its
 * limit is remembered by UIDL in the account state; later polls leave it
 * on the server while anything else is to be fetched or deleted, and try
 * it again (alone) only when nothing else is waiting.  It leaves the list
 * once it is spooled or gone from the server. */

static int problem_find(char *const *v, size_t n, const char *uidl)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], uidl) == 0)
			return (int)i;
	return -1;
}

/* problems_load - the account's stored list */
static void problems_load(struct poll *p)
{
	struct spool_account_state st;
	char *err = NULL;
	if (spool_account_get(p->sp, p->a->name, &st, &err) != SPOOL_OK) {
		free(err);
		return;
	}
	char *save = NULL;
	for (char *t = st.problem_uidls ? strtok_r(st.problem_uidls, " ", &save) : NULL;
	     t != NULL && p->nprobs < PROBLEM_MAX; t = strtok_r(NULL, " ", &save))
		p->probs[p->nprobs++] = xstrdup(t);
	spool_account_state_free(&st);
}

/* problem_add - this message broke the session or was over its limit */
static void problem_add(struct poll *p, const char *uidl, const char *why)
{
	char *w = sanitize_for_log(why, strlen(why), 300);
	LOG_WARN("account=%s uidl=%s status=problem-message reason=\"%s\" action=\"left on the "
		 "server; fetched again only when nothing else is waiting\"", p->a->name, uidl, w);
	free(w);
	if (p->nnew < PROBLEM_MAX && problem_find(p->newprobs, p->nnew, uidl) < 0)
		p->newprobs[p->nnew++] = xstrdup(uidl);
}

/* problems_string - the list to store: the old entries still on the server
 * (when the scan got that far) and not spooled, oldest first, then this
 * poll's; NULL if empty */
static char *problems_string(const struct poll *p, const struct pop3_msginfo *list, size_t n)
{
	struct buf b;
	size_t kept = 0;
	buf_init(&b, (size_t)PROBLEM_MAX * 72);
	for (size_t i = 0; i < p->nprobs + p->nnew && kept < PROBLEM_MAX; i++) {
		int old = i < p->nprobs;
		const char *u = old ? p->probs[i] : p->newprobs[i - p->nprobs];
		if (old && (p->prob_done[i] || problem_find(p->newprobs, p->nnew, u) >= 0))
			continue;
		int on = p->dele == NULL; /* no server list: keep it */
		for (size_t k = 0; k < n && !on; k++)
			on = list[k].uidl != NULL && strcmp(list[k].uidl, u) == 0;
		if (!on)
			continue;
		buf_printf(&b, "%s%s", kept++ ? " " : "", u);
	}
	char *r = kept > 0 ? xstrndup(b.data, b.len) : NULL;
	buf_free(&b);
	return r;
}

static void problems_free(struct poll *p)
{
	for (size_t i = 0; i < p->nprobs; i++)
		free(p->probs[i]);
	for (size_t i = 0; i < p->nnew; i++)
		free(p->newprobs[i]);
	p->nprobs = p->nnew = 0;
}

/* sat_add, sat_mul - saturating (a LIST size may be anything up to 2^64-1) */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* retr_limit - the most octets taken for this message: the account's
 * max_message_size when it has one and LIST is within it (the hard cap,
 * whatever the body turns out to be), else a generous multiple of LIST's
 * size (servers such as Exchange report estimates; oversize = hold/fetch
 * take a message LIST puts over the cap); 0: no limit (LIST gave 0) */
static uint64_t retr_limit(const struct poll *p, const struct pick *pk)
{
	if (p->a->max_message_size > 0 && pk->mi->size <= p->a->max_message_size)
		return p->a->max_message_size;
	if (pk->mi->size == 0)
		return 0;
	return sat_add(sat_mul(pk->mi->size, SLACK_FACTOR), SLACK_EXTRA);
}

/* fetch_one - read the reply to RETR into a finished (pending) spool file;
 * its envelope is decided here, once.  A -ERR leaves the message on the
 * server (logged) and the session usable. */
static enum pg_res fetch_one(struct poll *p, struct pick *pk, char **err_r)
{
	struct pop3_msginfo *mi = pk->mi;
	struct ingest in = { .rh = route_hdrs_new(p->a), .dk = p->dk };
	struct msgfilter *mf = NULL;
	struct route_result rr = { 0 };
	char hdr[2048], reason[160];
	int refused = 0;
	enum pg_res res = spool_to_pg(spool_writer_begin(p->sp, p->a->name, pick_uidl(pk), &in.w,
							  err_r));
	if (res != PG_OK)
		goto out;
	char id[SPOOL_ID_LEN + 1];
	memcpy(id, spool_writer_id(in.w), sizeof id);
	received_header(p, id, hdr, sizeof hdr);
	res = spool_to_pg(spool_writer_write(in.w, hdr, strlen(hdr), err_r));
	if (res != PG_OK)
		goto fail;
	if (in.dk != NULL)
		dedupe_reset(in.dk);
	mf = mf_new(writer_sink, &in);
	res = pop3_read_retr(p->s, mf, retr_limit(p, pk), &refused, err_r);
	if (refused == POP3_RETR_TOO_LARGE) {
		char *why = xasprintf("%s (LIST gave %llu octets)", *err_r,
				      (unsigned long long)mi->size);
		problem_add(p, mi->uidl, why);
		free(why);
	} else if (refused) {
		char *why = sanitize_for_log(*err_r, strlen(*err_r), 300);
		LOG_WARN("account=%s uidl=%s status=retr-refused action=\"left on the server\" "
			 "reason=\"%s\"", p->a->name, mi->uidl, why);
		free(why);
	}
	if (refused) {
		free(*err_r);
		*err_r = NULL;
		res = PG_OK;
		spool_writer_abort(&in.w);
		goto out;
	}
	if (res != PG_OK)
		goto fail;
	res = route_decide(p->a, in.rh, &rr, err_r);
	if (res != PG_OK)
		goto fail;
	if (pk->hold)
		snprintf(reason, sizeof reason, "oversize: %llu octets (max_message_size %llu)",
			 (unsigned long long)mi->size, (unsigned long long)p->a->max_message_size);
	struct spool_envelope env = { .sender = rr.sender, .rcpts = (const char *const *)rr.rcpts,
				      .nrcpts = rr.nrcpts,
				      .hold_reason = pk->hold ? reason : rr.hold_reason };
	if (in.dk != NULL) {
		dedupe_end(in.dk, &pk->dd);
		pk->dd.mode = (enum spool_dedupe_mode)p->a->dedupe;
		pk->dd.since = time(NULL) - (time_t)p->a->dedupe_days * 86400;
		pk->dd.dup_of_r[0] = '\0';
		env.dedupe = &pk->dd;
	}
	uint64_t size = mf_bytes(mf) + strlen(hdr);
	spool_writer_listed_size(in.w, mi->size);
	res = spool_to_pg(spool_writer_finish(&in.w, &env, err_r));
	if (res != PG_OK)
		goto out;
	LOG_INFO("id=%s account=%s uidl=%s status=%s size=%llu from=<%s>%s%s%s", id, p->a->name,
		 mi->uidl, env.hold_reason ? "fetched-held" : "fetched", (unsigned long long)size,
		 rr.sender, env.hold_reason ? " reason=\"" : "",
		 env.hold_reason ? env.hold_reason : "", env.hold_reason ? "\"" : "");
	p->group[p->ngroup++] = pk;
	p->group_bytes += size;
	goto out;
fail:
	spool_writer_abort(&in.w);
out:
	mf_free(&mf);
	route_hdrs_free(&in.rh);
	route_result_free(&rr);
	return res;
}

struct commit_ctx {
	struct poll *p;
	struct pick **group; /* the committed group */
	size_t n;
	unsigned int committed;
	size_t next; /* the callbacks come in the group's order: look here first */
};

static void commit_cb(void *ctx, const char *account, const char *uidl, const char *id,
		      enum spool_res r)
{
	struct commit_ctx *cc = ctx;
	struct poll *p = cc->p;
	for (size_t k = 0; k < cc->n; k++) {
		size_t i = (cc->next + k) % cc->n;
		struct pop3_msginfo *mi = cc->group[i]->mi;
		if (strcmp(pick_uidl(cc->group[i]), uidl) != 0)
			continue;
		cc->next = i + 1;
		if (r == SPOOL_BUSY) {
			/* not committed: it must stay on the server */
			LOG_WARN("id=%s account=%s uidl=%s status=not-committed action=\"left on the "
				 "server for the next poll\" reason=\"another process committed a "
				 "message with the same spool id\"", id, account, uidl);
			return;
		}
		int pi = problem_find(p->probs, p->nprobs, mi->uidl);
		if (pi >= 0)
			p->prob_done[pi] = 1;
		if (r == SPOOL_DUP)
			LOG_WARN("id=%s account=%s uidl=%s status=duplicate "
				 "action=\"already in the spool; new copy discarded\"", id, account, uidl);
		else if (cc->group[i]->dd.dup_of_r[0] != '\0') {
			LOG_INFO("id=%s account=%s uidl=%s status=duplicate duplicate_of=%s "
				 "action=\"not relayed\"", id, account, mi->uidl,
				 cc->group[i]->dd.dup_of_r);
			p->dups++;
		} else
			cc->committed++;
		if (!p->a->keep)
			p->dele[p->ndele++] = mi->num;
		return;
	}
}

/* commit_finish - wait until the group in flight is durable, then queue
 * its DELEs */
static enum pg_res commit_finish(struct poll *p, char **err_r)
{
	if (!p->inflight)
		return PG_OK;
	struct commit_ctx cc = { .p = p, .group = p->cgroup, .n = p->ncgroup };
	enum spool_res r = spool_commit_finish(p->sp, commit_cb, &cc, err_r);
	uint64_t bytes = p->cgroup_bytes;
	p->inflight = 0;
	p->ncgroup = 0;
	p->cgroup_bytes = 0;
	if (r != SPOOL_OK)
		return spool_to_pg(r);
	p->st->fetched += cc.committed;
	p->st->bytes += bytes;
	if (p->progress != NULL)
		p->progress(p->progress_ctx, p->a, p->st, p->total_new);
	return PG_OK;
}

/* commit_start - finish the group in flight, then hand the pending group to
 * the spool's commit thread: the next group is fetched meanwhile */
static enum pg_res commit_start(struct poll *p, char **err_r)
{
	enum pg_res res = commit_finish(p, err_r);
	if (res != PG_OK || p->ngroup == 0)
		return res;
	struct pick **g = p->cgroup;
	p->cgroup = p->group;
	p->ncgroup = p->ngroup;
	p->cgroup_bytes = p->group_bytes;
	p->group = g;
	p->ngroup = 0;
	p->group_bytes = 0;
	enum spool_res r = spool_commit_start(p->sp, err_r);
	if (r != SPOOL_OK) {
		p->ncgroup = 0; /* not committed: left on the server */
		return spool_to_pg(r);
	}
	p->inflight = 1;
	return PG_OK;
}

/* commit_group - the group in flight and the pending one, both durable */
static enum pg_res commit_group(struct poll *p, char **err_r)
{
	enum pg_res res = commit_start(p, err_r);
	return res == PG_OK ? commit_finish(p, err_r) : res;
}

/* fill_window - queue DELEs of committed messages, then RETRs, up to the
 * session's window, and write them in one batch.  Refilled only once half
 * the window has drained, so a batch is many commands, not one per reply. */
static enum pg_res fill_window(struct poll *p, int stopping, char **err_r)
{
	size_t win = pop3_window(p->s);
	enum pg_res res = PG_OK;
	if (pop3_outstanding(p->s) > win / 2)
		return PG_OK;
	while (res == PG_OK && pop3_outstanding(p->s) < win && p->dele_sent < p->ndele)
		res = pop3_queue(p->s, P3C_DELE, p->dele[p->dele_sent++], err_r);
	while (res == PG_OK && !stopping && pop3_outstanding(p->s) < win && p->next_send < p->nsel)
		res = pop3_queue(p->s, P3C_RETR, p->sel[p->next_send++].mi->num, err_r);
	if (res == PG_OK)
		res = pop3_flush(p->s, err_r);
	return res;
}

/* read_one - the next reply in order: a DELE, or a RETR into the spool */
static enum pg_res read_one(struct poll *p, char **err_r)
{
	if (pop3_next(p->s, NULL) == P3C_DELE)
		return pop3_read_dele(p->s, err_r);
	struct pick *pk = &p->sel[p->next_read++];
	enum pg_res res = fetch_one(p, pk, err_r);
	/* the session broke inside this message (not a local spool error):
	 * remember it so the next poll drains the rest first */
	if (res != PG_OK && res != PG_IO && pop3_failed(p->s))
		problem_add(p, pk->mi->uidl, *err_r != NULL ? *err_r : "session failed");
	if (res == PG_OK && (spool_group_full(p->sp) || p->next_read >= p->nsel))
		res = commit_start(p, err_r);
	return res;
}

static int stop_requested(const struct poll *p, const volatile sig_atomic_t *stop_flag)
{
	if (stop_flag == NULL || !*stop_flag)
		return 0;
	if (p->next_send < p->nsel)
		LOG_INFO("account=%s status=stopping reason=\"signal\"", p->a->name);
	return 1;
}

/* drain - fetch every selected message, committing and deleting in groups */
static enum pg_res drain(struct poll *p, const volatile sig_atomic_t *stop_flag, char **err_r)
{
	enum pg_res res = PG_OK;
	for (;;) {
		int stopping = stop_requested(p, stop_flag);
		res = fill_window(p, stopping, err_r);
		if (res != PG_OK)
			break;
		if (pop3_outstanding(p->s) > 0) {
			res = read_one(p, err_r);
			if (res != PG_OK)
				break;
			continue;
		}
		/* nothing on the wire: commit what is left; its DELEs go next */
		if (p->ngroup == 0 && !p->inflight)
			break;
		if ((res = commit_group(p, err_r)) != PG_OK)
			break;
	}
	if (res != PG_OK && (pop3_failed(p->s) || pop3_outstanding(p->s) > 0))
		p->broken = 1; /* replies are out of step: no QUIT, no deletion */
	/* what was finished before an error is complete and durable on disk:
	 * commit it too (it will be deleted on the next poll) */
	char *cerr = NULL;
	enum pg_res cres = commit_group(p, res == PG_OK ? err_r : &cerr);
	if (cres != PG_OK && res != PG_OK)
		LOG_ERR("account=%s status=commit-failed reason=\"%s\"", p->a->name, cerr);
	free(cerr);
	return res != PG_OK ? res : cres;
}

/* ---- plan: what to fetch, what to delete, what the limits leave ----- */

static int cmp_row(const void *k, const void *e)
{
	return strcmp(k, ((const struct spool_uidl_row *)e)->uidl);
}

/* select_new - apply max_message_size/oversize and the per-poll limits to
 * a message not in the spool; returns 0 when the limits are reached */
static int select_new(struct poll *p, struct pop3_msginfo *mi, uint64_t *bytes)
{
	const struct conf_account *a = p->a;
	int over = a->max_message_size > 0 && mi->size > a->max_message_size;
	if (over && a->oversize == OVERSIZE_SKIP) {
		p->st->oversize_skipped++;
		LOG_INFO("account=%s uidl=%s status=skipped-oversize size=%llu max_message_size=%llu "
			 "action=\"left on the server\"", a->name, mi->uidl,
			 (unsigned long long)mi->size, (unsigned long long)a->max_message_size);
		return 1;
	}
	if ((a->max_messages_per_poll > 0 && p->nsel >= a->max_messages_per_poll) ||
	    (a->max_bytes_per_poll > 0 && p->nsel > 0 &&
	     sat_add(*bytes, mi->size) > a->max_bytes_per_poll)) {
		p->st->deferred++;
		return 0;
	}
	p->sel[p->nsel].mi = mi;
	p->sel[p->nsel++].hold = over && a->oversize == OVERSIZE_HOLD;
	*bytes = sat_add(*bytes, mi->size);
	p->total_new++;
	return 1;
}

/* would_delete - known_action would DELE a message the spool has */
static int would_delete(const struct poll *p, const struct spool_uidl_row *row, time_t now)
{
	const struct conf_account *a = p->a;
	return !a->keep || (a->keep_days > 0 && row->created > 0 &&
			    now - row->created >= (time_t)a->keep_days * 86400);
}

/* known_row - the spool's row for this message, or NULL if it is new.
 * A UIDL is meant to name one message forever, but a non-compliant server
 * may give a new message an old UIDL; deleting it unfetched would lose it.
 * So before a DELE, the server's LIST size is compared with the one
 * recorded at fetch: when they differ (and both are known), the message is
 * new; it is spooled under "<uidl> <LIST size>" (a space never occurs in a
 * UIDL), which *reused_r gets (the caller frees it), unless that key is in
 * the spool already (fetched on an earlier poll). */
static const struct spool_uidl_row *known_row(struct poll *p, const struct pop3_msginfo *mi,
					      const struct spool_uidl_row *rows, size_t nrows,
					      time_t now, char **reused_r)
{
	const struct spool_uidl_row *row = nrows == 0 ? NULL :
		bsearch(mi->uidl, rows, nrows, sizeof *rows, cmp_row);
	*reused_r = NULL;
	if (row == NULL || row->listed_size < 0 || mi->size == 0 ||
	    (uint64_t)row->listed_size == mi->size || !would_delete(p, row, now))
		return row;
	char *key = xasprintf("%s %llu", mi->uidl, (unsigned long long)mi->size);
	const struct spool_uidl_row *again = bsearch(key, rows, nrows, sizeof *rows, cmp_row);
	if (again != NULL) {
		free(key);
		return again;
	}
	LOG_WARN("account=%s uidl=%s status=uidl-reused listed=%llu spooled_listed=%lld "
		 "action=\"fetched as a new message, not deleted\" reason=\"the server lists a "
		 "different size for a UIDL already in the spool\"", p->a->name, mi->uidl,
		 (unsigned long long)mi->size, (long long)row->listed_size);
	*reused_r = key;
	return NULL;
}

/* known_action - a message the spool already has: delete it (keep off, or
 * keep_days over) or leave it */
static void known_action(struct poll *p, struct pop3_msginfo *mi,
			 const struct spool_uidl_row *row, time_t now)
{
	const struct conf_account *a = p->a;
	if (!a->keep) {
		p->dele[p->ndele++] = mi->num;
		return;
	}
	if (a->keep_days > 0 && row != NULL && row->created > 0 &&
	    now - row->created >= (time_t)a->keep_days * 86400) {
		LOG_INFO("account=%s uidl=%s status=expired-kept keep_days=%d action=\"delete\"",
			 a->name, mi->uidl, a->keep_days);
		p->st->expired++;
		p->dele[p->ndele++] = mi->num;
		return;
	}
	p->st->skipped++;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* plan_problems - the problem messages on the server: the oldest problem
 * is tried alone when nothing else is to be fetched or deleted; the others
 * wait, logged */
static void plan_problems(struct poll *p, struct pop3_msginfo **waiting, size_t nwait,
			  uint64_t *bytes)
{
	size_t best = nwait;
	if (p->nsel == 0 && p->ndele == 0) {
		int bi = PROBLEM_MAX;
		for (size_t i = 0; i < nwait; i++) {
			int pi = problem_find(p->probs, p->nprobs, waiting[i]->uidl);
			if (pi < bi) {
				bi = pi;
				best = i;
			}
		}
	}
	for (size_t i = 0; i < nwait; i++) {
		if (i == best) {
			LOG_INFO("account=%s uidl=%s status=retry-problem-message reason=\"nothing "
				 "else is waiting\"", p->a->name, waiting[i]->uidl);
			select_new(p, waiting[i], bytes);
			continue;
		}
		p->st->deferred++;
		LOG_WARN("account=%s uidl=%s status=deferred-problem-message action=\"left on the "
			 "server while other messages are fetched or deleted\" reason=\"an earlier "
			 "RETR of it broke the session or was over the size limit\"", p->a->name,
			 waiting[i]->uidl);
	}
}

/* plan_no_uidl - a server without UIDL, drain mode: every message is new
 * to the plan; the commit recognises one spooled before (a crash between
 * commit and QUIT) by its content and records it as a duplicate, so it is
 * deleted, never relayed twice.  Its spool key names the poll and the
 * message number (unique: a UIDL never holds a space). */
static void plan_no_uidl(struct poll *p, struct pop3_msginfo *mi, uint64_t *bytes,
			 int *limited)
{
	static unsigned int seq;
	if (!p->no_uidl)
		LOG_WARN("account=%s status=no-uidl action=\"drain; messages recognised by "
			 "content (dedupe = %s)\"", p->a->name,
			 p->a->dedupe == SPOOL_DEDUPE_MESSAGE ? "message" : "exact");
	p->no_uidl = 1;
	mi->uidl = xasprintf("nouidl %lld.%d.%u.%u", (long long)time(NULL), (int)getpid(), seq++,
			     mi->num);
	if (!*limited)
		*limited = !select_new(p, mi, bytes);
	else
		p->st->deferred++;
}

/* plan - mark what is already in the spool; queue DELEs for those (they
 * were committed before a crash or an earlier failed QUIT) */
static enum pg_res plan(struct poll *p, struct pop3_msginfo *list, size_t n,
			const struct spool_uidl_row *rows, size_t nrows, char **err_r)
{
	uint64_t bytes = 0;
	int limited = 0;
	time_t now = time(NULL);
	char **tomb = NULL;
	size_t ntomb = 0, nwait = 0;
	struct pop3_msginfo *waiting[PROBLEM_MAX];
	enum spool_res tr = spool_account_tombstones(p->sp, p->a->name, &tomb, &ntomb, err_r);
	if (tr != SPOOL_OK)
		return spool_to_pg(tr);
	enum pg_res res = PG_OK;
	for (size_t i = 0; i < n && res == PG_OK; i++) {
		if (list[i].uidl == NULL && (p->a->keep || p->a->dedupe == SPOOL_DEDUPE_OFF)) {
			set_err(err_r, "server %s:%d does not support UIDL; popgate needs it to "
				"recognise messages it already has%s", p->a->server, p->a->port,
				p->a->keep ? " (keep = true cannot work without UIDL)" :
				" (with keep = false, dedupe = exact or message drains it)");
			res = PG_PERM;
			break;
		}
		if (list[i].uidl == NULL) {
			plan_no_uidl(p, &list[i], &bytes, &limited);
			continue;
		}
		char *reused = NULL;
		const struct spool_uidl_row *row = known_row(p, &list[i], rows, nrows, now, &reused);
		/* tombstones (deleted by an operator) count as known */
		int k = row != NULL || (reused == NULL && ntomb > 0 &&
					bsearch(&list[i].uidl, tomb, ntomb, sizeof *tomb, cmp_str));
		if (reused != NULL) {
			size_t before = p->nsel;
			if (!limited)
				limited = !select_new(p, &list[i], &bytes);
			else
				p->st->deferred++;
			if (p->nsel > before)
				p->sel[before].spool_uidl = reused;
			else
				free(reused);
		} else if (k)
			known_action(p, &list[i], row, now);
		else if (problem_find(p->probs, p->nprobs, list[i].uidl) >= 0)
			waiting[nwait++] = &list[i];
		else if (!limited)
			limited = !select_new(p, &list[i], &bytes);
		else
			p->st->deferred++;
	}
	for (size_t i = 0; i < ntomb; i++)
		free(tomb[i]);
	free(tomb);
	if (res == PG_OK)
		plan_problems(p, waiting, nwait, &bytes);
	if (res == PG_OK && limited)
		LOG_INFO("account=%s status=limited selected=%zu deferred=%u "
			 "reason=\"max_messages_per_poll or max_bytes_per_poll reached\"",
			 p->a->name, p->nsel, p->st->deferred);
	return res;
}

/* prune - forget rows sent over a day ago whose message is gone from the
 * server (after a complete UIDL listing and a clean QUIT only) */
static void prune(struct poll *p, const struct pop3_msginfo *list, size_t n,
		  const struct spool_uidl_row *rows, size_t nrows)
{
	const char **on = xcalloc(n + 1, sizeof *on), **gone = xcalloc(nrows + 1, sizeof *gone);
	size_t ngone = 0;
	for (size_t i = 0; i < n; i++)
		on[i] = list[i].uidl;
	qsort(on, n, sizeof *on, cmp_str);
	for (size_t i = 0; i < nrows; i++)
		if ((rows[i].state == SPOOL_SENT || rows[i].state == SPOOL_DUPLICATE) &&
		    bsearch(&rows[i].uidl, on, n, sizeof *on, cmp_str) == NULL)
			gone[ngone++] = rows[i].uidl;
	unsigned int pruned = 0;
	char *err = NULL;
	if (spool_uidl_prune(p->sp, p->a->name, gone, ngone, time(NULL) - PRUNE_AFTER, &pruned,
			     &err) != SPOOL_OK) {
		LOG_WARN("account=%s status=prune-failed reason=\"%s\"", p->a->name, err);
		free(err);
	} else if (pruned > 0) {
		LOG_INFO("account=%s status=pruned uidls=%u reason=\"sent and gone from the server\"",
			 p->a->name, pruned);
	}
	p->st->pruned = pruned;
	free(on);
	free(gone);
}

static void log_result(const struct poll *p, enum pg_res res, const char *err)
{
	const struct poll_stats *st = p->st;
	if (res == PG_OK) {
		LOG_INFO("account=%s status=ok on_server=%u fetched=%u bytes=%llu deleted=%u "
			 "kept=%u deferred=%u oversize_skipped=%u duplicates=%u", p->a->name,
			 st->on_server, st->fetched, (unsigned long long)st->bytes, st->deleted,
			 st->skipped, st->deferred, st->oversize_skipped, st->duplicates);
	} else {
		char *why = sanitize_for_log(err ? err : "", err ? strlen(err) : 0, 600);
		LOG_ERR("account=%s status=failed class=%s%s%s fetched=%u reason=\"%s\"", p->a->name,
			pg_res_name(res), p->status.code[0] ? " code=" : "", p->status.code,
			st->fetched, why);
		free(why);
	}
}

/* dedupe_end_of_poll - count this poll's duplicates, raise the renumbering
 * alert over dedupe_alert, merge the recent content keys and forget those
 * past dedupe_days (when due: spool_dedupe_maintain) */
static void dedupe_end_of_poll(struct poll *p, enum pg_res res)
{
	const struct conf_account *a = p->a;
	char *err = NULL;
	time_t now = time(NULL);
	p->st->duplicates = p->dups;
	if (p->dups > 0 && spool_counter_add(p->sp, "duplicates", a->name, NULL, p->dups, &err) !=
			   SPOOL_OK) {
		LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, err);
		free(err);
		err = NULL;
	}
	if (p->dups > a->dedupe_alert) {
		LOG_WARN("account=%s status=mailbox-renumbered duplicates=%u dedupe_alert=%u "
			 "reason=\"the server seems to have renumbered the mailbox (new UIDLs for "
			 "mail already fetched)\" action=\"duplicates recorded, not relayed\"",
			 a->name, p->dups, a->dedupe_alert);
		if (spool_dedupe_alert_put(p->sp, a->name, now, p->dups, &err) != SPOOL_OK) {
			LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, err);
			free(err);
			err = NULL;
		}
	}
	/* only after a poll that committed something: an idle account costs
	 * nothing, and its old keys are outside the window anyway */
	if (res != PG_OK || a->dedupe == SPOOL_DEDUPE_OFF || p->st->fetched + p->dups == 0)
		return;
	unsigned int n = 0;
	if (spool_dedupe_maintain(p->sp, a->name, now - (time_t)a->dedupe_days * 86400, now, 0, &n,
				  &err) != SPOOL_OK) {
		LOG_WARN("account=%s status=prune-failed reason=\"%s\"", a->name, err);
		free(err);
	} else if (n > 0) {
		LOG_INFO("account=%s status=pruned digests=%u reason=\"older than dedupe_days\"",
			 a->name, n);
	}
}

/* ---- account state ------------------------------------------------------ */

/* config_fingerprint - what an [AUTH] refusal is tied to: server, port,
 * user, mechanism, and where the secret comes from (for a password_file,
 * its mtime too, so writing a new password counts as a change) */
static char *config_fingerprint(const struct conf_account *a)
{
	struct stat sb;
	long long mtime = 0;
	if (a->password_file != NULL && stat(a->password_file, &sb) == 0)
		mtime = (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
	char *in = xasprintf("%s\n%d\n%s\n%s\n%s\n%lld\n%s", a->server, a->port, a->user,
			     conf_auth_name(a->auth), a->password_file ? a->password_file : "",
			     mtime, a->password_command ? a->password_command : "");
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_Digest(in, strlen(in), md, &len, EVP_sha256(), NULL);
	free(in);
	char *hx = xmalloc(2 * len + 1);
	for (unsigned int i = 0; i < len; i++)
		snprintf(hx + 2 * i, 3, "%02x", md[i]);
	return hx;
}

/* backoff - seconds to wait after `failures` consecutive failures */
static time_t backoff(unsigned int failures)
{
	time_t b = BACKOFF_BASE;
	for (unsigned int i = 1; i < failures && b < BACKOFF_MAX; i++)
		b *= 2;
	return b < BACKOFF_MAX ? b : BACKOFF_MAX;
}

static int code_is(const char *code, const char *name)
{
	size_t k = strlen(name);
	return strncasecmp(code, name, k) == 0 && (code[k] == '\0' || code[k] == '/');
}

/* failure_state - not_before and auth_failed after a failed poll */
static void failure_state(const struct poll *p, enum pg_res res, struct spool_account_state *st,
			  time_t now)
{
	const char *code = p->status.code;
	st->failures++;
	if (res == PG_AUTH) {
		free(st->auth_failed);
		st->auth_failed = config_fingerprint(p->a);
		st->not_before = 0;
		LOG_WARN("account=%s status=auth-failed action=\"not polled on schedule until the "
			 "configuration or password changes, or an operator polls it by hand\"",
			 p->a->name);
		return;
	}
	time_t wait = backoff(st->failures);
	if (code_is(code, "SYS/PERM"))
		wait = BACKOFF_SYS_PERM;
	else if (code_is(code, "LOGIN-DELAY") && st->login_delay > wait)
		wait = st->login_delay;
	if (p->a->oauth2 != NULL) { /* the identity provider's Retry-After */
		time_t until = tokenstore_retry_until(p->c->spool_dir, p->a->name);
		if (until > now + wait)
			wait = until - now;
	}
	st->not_before = now + wait;
}

/* capped_login_delay - a LOGIN-DELAY is obeyed up to a day: a server (or
 * a forged CAPA before TLS is not trusted anyway) announcing up to 10^9 s
 * would otherwise stop the account for decades */
static int capped_login_delay(const struct poll *p, int announced)
{
	if (announced <= LOGIN_DELAY_MAX)
		return announced;
	LOG_WARN("account=%s status=login-delay-capped announced=%d used=%d reason=\"LOGIN-DELAY "
		 "over a day is not obeyed\"", p->a->name, announced, LOGIN_DELAY_MAX);
	return LOGIN_DELAY_MAX;
}

/* store_state - the account's state after this poll (poller_account_ready
 * reads it) */
static void store_state(const struct poll *p, enum pg_res res, const char *err,
			const struct pop3_capa *capa, const struct pop3_msginfo *list, size_t n)
{
	struct spool_account_state st;
	char *serr = NULL;
	time_t now = time(NULL);
	if (spool_account_get(p->sp, p->a->name, &st, &serr) != SPOOL_OK)
		goto fail;
	if (capa != NULL && capa->have_capa) {
		st.login_delay = capped_login_delay(p, capa->login_delay);
		st.expire = capa->expire;
	}
	free(st.last_error);
	st.last_error = NULL;
	free(st.problem_uidls);
	st.problem_uidls = problems_string(p, list, n);
	st.last_bytes = p->st->bytes;
	if (res == PG_OK) {
		st.failures = 0;
		free(st.auth_failed);
		st.auth_failed = NULL;
		st.not_before = st.login_delay > 0 ? now + st.login_delay : 0;
	} else {
		st.last_error = sanitize_for_log(err ? err : "", err ? strlen(err) : 0, 400);
		failure_state(p, res, &st, now);
	}
	if (spool_account_put(p->sp, &st, &serr) != SPOOL_OK)
		goto fail;
	spool_account_state_free(&st);
	return;
fail:
	LOG_WARN("account=%s status=spool-warning reason=\"%s\"", p->a->name, serr);
	free(serr);
	spool_account_state_free(&st);
}

/* ---- one poll ------------------------------------------------------------- */

/* oauth2_login - open and log in with the account's OAuth2 access token
 * (tokenstore.h: refreshed when it expires within 5 minutes).  A token
 * popgate thought valid that the server refuses is refreshed once and the
 * login retried once on a new connection (Microsoft closes it after a
 * failed AUTH). */
static enum pg_res oauth2_login(struct poll *p, const struct pop3_params *pp, const char **mech,
				char **err_r)
{
	const struct conf_account *a = p->a;
	char *tok = NULL, *tok2 = NULL;
	int fresh = 0, reauth = 0;
	enum pg_res res = tokenstore_login_token(p->c, a, NULL, &tok, &fresh, &reauth, err_r);
	if (res == PG_OK)
		res = pop3_open(pp, &p->s, err_r);
	if (res == PG_OK)
		res = pop3_auth(p->s, a->auth, a->user, tok, mech, err_r);
	if (res == PG_AUTH && tok != NULL && !fresh) {
		char *why = sanitize_for_log(*err_r, strlen(*err_r), 300);
		LOG_WARN("account=%s status=token-refused action=\"refresh and retry once\" "
			 "reason=\"%s\"", a->name, why);
		free(why);
		free(*err_r);
		*err_r = NULL;
		pop3_close(&p->s);
		memset(&p->status, 0, sizeof p->status);
		res = tokenstore_login_token(p->c, a, tok, &tok2, &fresh, &reauth, err_r);
		if (res == PG_OK)
			res = pop3_open(pp, &p->s, err_r);
		if (res == PG_OK)
			res = pop3_auth(p->s, a->auth, a->user, tok2, mech, err_r);
	}
	if (tok != NULL)
		explicit_bzero(tok, strlen(tok));
	if (tok2 != NULL)
		explicit_bzero(tok2, strlen(tok2));
	free(tok);
	free(tok2);
	return res;
}

/* session - open, log in, scan, plan, drain */
static enum pg_res session(struct poll *p, const volatile sig_atomic_t *stop_flag,
			   struct pop3_msginfo **list, size_t *n, struct spool_uidl_row **rows,
			   size_t *nrows, char **err_r)
{
	const struct conf_account *a = p->a;
	char *pass = NULL;
	struct pop3_params pp = {
		.host = a->server, .port = a->port, .tls = a->tls, .ca_file = a->ca_file,
		.tls_fingerprint = a->tls_fingerprint, .allow_plaintext = a->allow_plaintext,
		.pipelining = a->pipelining, .connect_timeout_ms = a->connect_timeout * 1000,
		.timeout_ms = a->timeout * 1000, .tls_timeout_ms = a->tls_timeout * 1000,
		.session_timeout_ms = a->session_timeout * 1000, .account = a->name,
		.status = &p->status,
	};
	const char *mech = NULL;
	enum pg_res res;
	if (a->oauth2 != NULL) {
		res = oauth2_login(p, &pp, &mech, err_r);
	} else {
		/* read anew on every login: access tokens of a password_command expire */
		res = conf_read_secret(a, &pass, err_r);
		if (res == PG_OK)
			res = pop3_open(&pp, &p->s, err_r);
		if (res == PG_OK)
			res = pop3_auth(p->s, a->auth, a->user, pass, &mech, err_r);
		if (pass != NULL)
			explicit_bzero(pass, strlen(pass));
		free(pass);
	}
	if (res != PG_OK)
		return res;
	LOG_DEBUG("account=%s auth=%s pipelining=%s", a->name, mech,
		  pop3_pipelining(p->s) ? "yes" : "no");
	if ((res = pop3_scan(p->s, list, n, err_r)) != PG_OK)
		return res;
	p->st->on_server = (unsigned)*n;
	p->dele = xcalloc(*n + 1, sizeof *p->dele);
	p->sel = xcalloc(*n + 1, sizeof *p->sel);
	p->group = xcalloc(*n + 1, sizeof *p->group);
	p->cgroup = xcalloc(*n + 1, sizeof *p->cgroup);
	res = spool_to_pg(spool_account_uidls(p->sp, a->name, rows, nrows, err_r));
	if (res == PG_OK)
		res = plan(p, *list, *n, *rows, *nrows, err_r);
	if (res == PG_OK)
		res = drain(p, stop_flag, err_r);
	return res;
}

/* quit - QUIT when the connection is still in step (a spool failure, a
 * refused login), so the DELEs of what was committed take effect */
static enum pg_res quit(struct poll *p, enum pg_res res, char **err_r)
{
	char *qerr = NULL;
	if (p->s == NULL || p->broken || res == PG_TEMP || res == PG_PROTO || pop3_failed(p->s))
		return res;
	enum pg_res qres = pop3_quit(p->s, &qerr);
	if (qres == PG_OK)
		p->st->deleted = (unsigned)p->dele_sent;
	else if (res == PG_OK) {
		res = qres;
		set_err(err_r, "%s", qerr);
	}
	free(qerr);
	return res;
}

enum pg_res poller_poll_account(const struct conf *c, const struct conf_account *a,
				struct spool *sp, const volatile sig_atomic_t *stop_flag,
				poll_progress_fn progress, void *progress_ctx,
				struct poll_stats *st_r, char **err_r)
{
	struct poll p = { .c = c, .a = a, .sp = sp, .st = st_r, .progress = progress,
			  .progress_ctx = progress_ctx };
	struct pop3_msginfo *list = NULL;
	struct spool_uidl_row *rows = NULL;
	size_t n = 0, nrows = 0;
	memset(st_r, 0, sizeof *st_r);
	/* a poll's handle leaves checkpoints to the relay (spool.h) */
	spool_defer_checkpoints(sp, 1);
	if (a->dedupe != SPOOL_DEDUPE_OFF)
		p.dk = dedupe_new();
	problems_load(&p);
	enum pg_res res = session(&p, stop_flag, &list, &n, &rows, &nrows, err_r);
	res = quit(&p, res, err_r);
	/* the bookkeeping after QUIT in one fsync'd transaction, not one per
	 * statement (every message's commit is behind us) */
	char *berr = NULL;
	if (spool_batch_begin(sp, &berr) != SPOOL_OK) {
		LOG_DEBUG("account=%s status=spool-warning reason=\"%s\"", a->name, berr);
		free(berr);
		berr = NULL;
	}
	if (res == PG_OK)
		prune(&p, list, n, rows, nrows);
	dedupe_end_of_poll(&p, res);
	dedupe_free(&p.dk);
	log_result(&p, res, err_r ? *err_r : NULL);
	char *uerr = NULL;
	if (spool_account_update(sp, a->name, time(NULL), res == PG_OK ? "ok" : pg_res_name(res),
				 st_r->fetched, &uerr) != SPOOL_OK) {
		LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, uerr);
		free(uerr);
	}
	/* the problem list is pruned against the server's list only when the
	 * scan succeeded (p.dele is allocated right after it) */
	store_state(&p, res, err_r ? *err_r : NULL, p.s != NULL ? pop3_capa(p.s) : NULL, list, n);
	if (spool_batch_end(sp, &berr) != SPOOL_OK) {
		LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, berr);
		free(berr);
	}
	problems_free(&p);
	pop3_close(&p.s);
	pop3_msginfo_free(&list, n);
	spool_uidl_rows_free(&rows, nrows);
	free(p.dele);
	for (size_t i = 0; i < p.nsel; i++)
		free(p.sel[i].spool_uidl);
	free(p.sel);
	free(p.group);
	free(p.cgroup);
	return res;
}

/* oauth2_reauthorize - the account's grant was refused (tokenstore.h) */
static int oauth2_reauthorize(const struct conf_account *a, struct spool *sp)
{
	struct tokenstore_entry e;
	char *err = NULL;
	if (a->oauth2 == NULL || tokenstore_read(spool_dir(sp), a->name, &e, &err) != PG_OK) {
		free(err);
		return 0;
	}
	int r = e.state == TOKENSTORE_REAUTHORIZE;
	tokenstore_entry_wipe(&e);
	return r;
}

int poller_account_ready(const struct conf_account *a, struct spool *sp, time_t now,
			 time_t *not_before_r, char **why_r)
{
	struct spool_account_state st;
	char *err = NULL;
	int ready = 1;
	*not_before_r = 0;
	if (spool_account_get(sp, a->name, &st, &err) != SPOOL_OK) {
		free(err);
		return 1; /* the poll itself will report the spool problem */
	}
	if (oauth2_reauthorize(a, sp)) {
		spool_account_state_free(&st);
		return 1; /* fails at once, no request, no login: exit 77 and the command to run */
	}
	if (st.auth_failed != NULL) {
		char *fp = config_fingerprint(a);
		if (strcmp(fp, st.auth_failed) == 0) {
			ready = 0;
			set_err(why_r, "authentication refused (%s); not polled until the "
				"configuration changes or an operator polls it by hand",
				st.last_error ? st.last_error : "no details");
		}
		free(fp);
		if (!ready || st.failures <= 1) {
			spool_account_state_free(&st);
			return ready; /* config changed after one refusal: try now */
		}
	}
	if (st.not_before > now) {
		ready = 0;
		*not_before_r = st.not_before;
		if (st.failures > 0)
			set_err(why_r, "backoff after %u failure%s: %s", st.failures,
				st.failures == 1 ? "" : "s", st.last_error ? st.last_error : "");
		else
			set_err(why_r, "LOGIN-DELAY %d s", st.login_delay);
	}
	spool_account_state_free(&st);
	return ready;
}
