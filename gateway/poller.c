/*
 * poller.c - drains one POP3 account into the spool (see poller.h).
 *
 * Ordering (invariant 1): RETR streams into a spool writer; the writer is
 * finished (fsync + rename) and the message joins the pending group; the
 * group is committed (directory fsync + one transaction); only then are its
 * messages DELE'd.  POP3 deletes take effect at QUIT, so a crash anywhere
 * before QUIT deletes nothing, and a message committed but not yet deleted
 * is recognised by its UIDL next time and only deleted.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "msgfilter.h"
#include "poller.h"
#include "pop3.h"
#include "route.h"

#define GROUP_MAX_MSGS 100
#define GROUP_MAX_BYTES (16u * 1024 * 1024)

/* One poll in progress. */
struct poll {
	const struct conf *c;
	const struct conf_account *a;
	struct spool *sp;
	struct pop3 *s;
	struct poll_stats *st;
	unsigned int *dele;  /* message numbers committed (or known) to delete */
	size_t ndele;
	size_t dele_sent;    /* dele[0..dele_sent) already sent */
	int broken;          /* the connection is unusable (failed mid-RETR) */
	struct pop3_msginfo **group; /* finished, not yet committed */
	size_t ngroup;
	uint64_t group_bytes;
	unsigned int total_new;
	poll_progress_fn progress;
	void *progress_ctx;
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
};

static enum pg_res writer_sink(void *ctx, const void *data, size_t len, char **err_r)
{
	struct ingest *in = ctx;
	route_hdrs_feed(in->rh, data, len);
	return spool_to_pg(spool_writer_write(in->w, data, len, err_r));
}

static void received_header(const struct poll *p, const char *id, char *out, size_t outlen)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	const char *tls = pop3_tls_info(p->s);
	snprintf(out, outlen,
		 "Received: from %s (account %s%s%s)\r\n\tby %s (popgate) with POP3 id %s\r\n"
		 "\tfor <%s>; %s\r\n",
		 p->a->server, p->a->name, tls ? "; " : "", tls ? tls : "", p->c->hostname, id,
		 p->a->deliver_to, date);
}

/* fetch_one - RETR one message into a finished (pending) spool file; its
 * envelope is decided here, once */
static enum pg_res fetch_one(struct poll *p, struct pop3_msginfo *mi, char **err_r)
{
	struct ingest in = { .rh = route_hdrs_new(p->a) };
	struct msgfilter *mf = NULL;
	struct route_result rr = { 0 };
	char hdr[2048];
	enum pg_res res = spool_to_pg(spool_writer_begin(p->sp, p->a->name, mi->uidl, &in.w, err_r));
	if (res != PG_OK)
		goto out;
	char id[SPOOL_ID_LEN + 1];
	snprintf(id, sizeof id, "%s", spool_writer_id(in.w));
	received_header(p, id, hdr, sizeof hdr);
	res = spool_to_pg(spool_writer_write(in.w, hdr, strlen(hdr), err_r));
	if (res != PG_OK)
		goto fail;
	mf = mf_new(writer_sink, &in);
	res = pop3_retr(p->s, mi->num, mf, err_r);
	if (res != PG_OK) {
		p->broken = 1;
		goto fail;
	}
	res = route_decide(p->a, in.rh, &rr, err_r);
	if (res != PG_OK)
		goto fail;
	struct spool_envelope env = { .sender = rr.sender, .rcpts = (const char *const *)rr.rcpts,
				      .nrcpts = rr.nrcpts, .hold_reason = rr.hold_reason };
	uint64_t size = mf_bytes(mf) + strlen(hdr);
	res = spool_to_pg(spool_writer_finish(&in.w, &env, err_r));
	if (res != PG_OK)
		goto out;
	LOG_INFO("id=%s account=%s uidl=%s status=%s size=%llu from=<%s>%s%s%s", id, p->a->name,
		 mi->uidl, rr.hold_reason ? "fetched-held" : "fetched", (unsigned long long)size,
		 rr.sender, rr.hold_reason ? " reason=\"" : "", rr.hold_reason ? rr.hold_reason : "",
		 rr.hold_reason ? "\"" : "");
	p->group[p->ngroup++] = mi;
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
	unsigned int committed;
};

static void commit_cb(void *ctx, const char *account, const char *uidl, const char *id,
		      enum spool_res r)
{
	struct commit_ctx *cc = ctx;
	struct poll *p = cc->p;
	for (size_t i = 0; i < p->ngroup; i++) {
		struct pop3_msginfo *mi = p->group[i];
		if (strcmp(mi->uidl, uidl) != 0)
			continue;
		if (r == SPOOL_DUP)
			LOG_WARN("id=%s account=%s uidl=%s status=duplicate "
				 "action=\"already in the spool; new copy discarded\"", id, account, uidl);
		else
			cc->committed++;
		if (!p->a->keep)
			p->dele[p->ndele++] = mi->num;
		return;
	}
}

/* commit_group - make the pending group durable, then queue its DELEs */
static enum pg_res commit_group(struct poll *p, char **err_r)
{
	struct commit_ctx cc = { .p = p };
	if (p->ngroup == 0)
		return PG_OK;
	enum spool_res r = spool_commit(p->sp, commit_cb, &cc, err_r);
	uint64_t bytes = p->group_bytes;
	p->ngroup = 0;
	p->group_bytes = 0;
	if (r != SPOOL_OK)
		return spool_to_pg(r);
	p->st->fetched += cc.committed;
	p->st->bytes += bytes;
	if (p->progress != NULL)
		p->progress(p->progress_ctx, p->a, p->st, p->total_new);
	return PG_OK;
}

/* send_deletes - DELE every queued number; deletions count only after QUIT */
static enum pg_res send_deletes(struct poll *p, char **err_r)
{
	for (; p->dele_sent < p->ndele; p->dele_sent++) {
		enum pg_res res = pop3_dele(p->s, p->dele[p->dele_sent], err_r);
		if (res != PG_OK) {
			p->broken = 1;
			return res;
		}
	}
	return PG_OK;
}

/* plan - mark what is already in the spool; queue DELEs for those (they
 * were committed before a crash or an earlier failed QUIT) */
static enum pg_res plan(struct poll *p, struct pop3_msginfo *list, size_t n, char *known,
			char **err_r)
{
	for (size_t i = 0; i < n; i++) {
		int k = 0;
		if (list[i].uidl == NULL) {
			set_err(err_r, "server %s:%d does not support UIDL; popgate needs it to "
				"recognise messages it already has", p->a->server, p->a->port);
			return PG_PERM;
		}
		enum spool_res r = spool_uidl_known(p->sp, p->a->name, list[i].uidl, &k, err_r);
		if (r != SPOOL_OK)
			return spool_to_pg(r);
		known[i] = (char)k;
		if (!k)
			p->total_new++;
		else if (p->a->keep)
			p->st->skipped++;
		else
			p->dele[p->ndele++] = list[i].num;
	}
	return PG_OK;
}

/* drain - fetch every new message, committing and deleting in groups */
static enum pg_res drain(struct poll *p, struct pop3_msginfo *list, size_t n, const char *known,
			 const volatile sig_atomic_t *stop_flag, char **err_r)
{
	enum pg_res res = send_deletes(p, err_r);
	for (size_t i = 0; res == PG_OK && i < n; i++) {
		if (known[i])
			continue;
		if (stop_flag != NULL && *stop_flag) {
			LOG_INFO("account=%s status=stopping reason=\"signal\"", p->a->name);
			break;
		}
		res = fetch_one(p, &list[i], err_r);
		if (res == PG_OK && (p->ngroup >= GROUP_MAX_MSGS || p->group_bytes >= GROUP_MAX_BYTES)) {
			res = commit_group(p, err_r);
			if (res == PG_OK)
				res = send_deletes(p, err_r);
		}
	}
	/* what was finished before an error is complete and durable on disk:
	 * commit it too (it will be deleted on the next poll if not now) */
	char *cerr = NULL;
	enum pg_res cres = commit_group(p, res == PG_OK ? err_r : &cerr);
	if (cres != PG_OK && res != PG_OK)
		LOG_ERR("account=%s status=commit-failed reason=\"%s\"", p->a->name, cerr);
	free(cerr);
	if (res == PG_OK)
		res = cres;
	if (res == PG_OK)
		res = send_deletes(p, err_r);
	return res;
}

static void log_result(const struct poll *p, enum pg_res res, const char *err)
{
	const struct poll_stats *st = p->st;
	if (res == PG_OK) {
		LOG_INFO("account=%s status=ok on_server=%u fetched=%u bytes=%llu deleted=%u "
			 "kept=%u", p->a->name, st->on_server, st->fetched,
			 (unsigned long long)st->bytes, st->deleted, st->skipped);
	} else {
		char *why = sanitize_for_log(err ? err : "", err ? strlen(err) : 0, 600);
		LOG_ERR("account=%s status=failed class=%s fetched=%u reason=\"%s\"", p->a->name,
			pg_res_name(res), st->fetched, why);
		free(why);
	}
}

enum pg_res poller_poll_account(const struct conf *c, const struct conf_account *a,
				struct spool *sp, const volatile sig_atomic_t *stop_flag,
				poll_progress_fn progress, void *progress_ctx,
				struct poll_stats *st_r, char **err_r)
{
	struct poll p = { .c = c, .a = a, .sp = sp, .st = st_r, .progress = progress,
			  .progress_ctx = progress_ctx };
	struct pop3_msginfo *list = NULL;
	char *pass = NULL, *known = NULL;
	size_t n = 0;
	memset(st_r, 0, sizeof *st_r);
	struct pop3_params pp = {
		.host = a->server, .port = a->port, .tls = a->tls, .ca_file = a->ca_file,
		.allow_plaintext = a->allow_plaintext, .connect_timeout_ms = a->connect_timeout * 1000,
		.timeout_ms = a->timeout * 1000, .account = a->name,
	};
	enum pg_res res = conf_read_secret(a, &pass, err_r);
	if (res == PG_OK)
		res = pop3_open(&pp, &p.s, err_r);
	if (res == PG_OK)
		res = pop3_login(p.s, a->user, pass, err_r);
	if (pass != NULL)
		explicit_bzero(pass, strlen(pass));
	if (res == PG_OK)
		res = pop3_scan(p.s, &list, &n, err_r);
	if (res == PG_OK) {
		st_r->on_server = (unsigned)n;
		p.dele = xcalloc(n, sizeof *p.dele);
		p.group = xcalloc(GROUP_MAX_MSGS, sizeof *p.group);
		known = xcalloc(n, 1);
		res = plan(&p, list, n, known, err_r);
	}
	if (res == PG_OK)
		res = drain(&p, list, n, known, stop_flag, err_r);
	if (p.s != NULL && !p.broken && res != PG_TEMP && res != PG_PROTO) {
		/* the connection is still in step (a spool failure, a refused
		 * login): QUIT, so the DELEs of what was committed take effect */
		char *qerr = NULL;
		enum pg_res qres = pop3_quit(p.s, &qerr);
		if (qres == PG_OK)
			st_r->deleted = (unsigned)p.dele_sent;
		else if (res == PG_OK) {
			res = qres;
			set_err(err_r, "%s", qerr);
		}
		free(qerr);
	}
	log_result(&p, res, err_r ? *err_r : NULL);
	char *uerr = NULL;
	if (spool_account_update(sp, a->name, time(NULL), res == PG_OK ? "ok" : pg_res_name(res),
				 st_r->fetched, &uerr) != SPOOL_OK) {
		LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, uerr);
		free(uerr);
	}
	pop3_close(&p.s);
	pop3_msginfo_free(&list, n);
	free(pass);
	free(known);
	free(p.dele);
	free(p.group);
	return res;
}

int poller_account_ready(const struct conf_account *a, struct spool *sp, time_t now,
			 time_t *not_before_r, char **why_r)
{
	struct spool_account_state st;
	char *err = NULL;
	*not_before_r = 0;
	if (spool_account_get(sp, a->name, &st, &err) != SPOOL_OK) {
		free(err);
		return 1; /* the poll itself will report the spool problem */
	}
	int ready = st.not_before <= now;
	if (!ready) {
		*not_before_r = st.not_before;
		set_err(why_r, "%s", st.last_error ? st.last_error : "waiting after the last poll");
	}
	spool_account_state_free(&st);
	return ready;
}
