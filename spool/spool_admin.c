#include "config.h"

/*
 * spool_admin.c - listing, lookup, counters and per-account bookkeeping for
 * the operator commands; none of it is on the hot ingest or relay path.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

/* list_prepare - a fresh statement per call (not cached): a list callback
 * may itself call spool_list() or spool_get() */
static enum spool_res list_prepare(struct spool *sp, const struct spool_filter *flt,
				   sqlite3_stmt **st_r, char **err_r)
{
	static const char sql[] =
		"SELECT " SPOOL_MSG_COLS " FROM messages "
		"WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR account = ?2) "
		"AND (?3 OR state NOT IN ('sent', 'duplicate')) ORDER BY created, rowid";
	int rc;

	rc = sqlite3_prepare_v2(sp->db, sql, -1, st_r, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "list", err_r);
	if (flt->state >= 0)
		sqlite3_bind_text(*st_r, 1, spool_state_name((enum spool_state)flt->state), -1,
				  SQLITE_STATIC);
	if (flt->account != NULL)
		sqlite3_bind_text(*st_r, 2, flt->account, -1, SQLITE_STATIC);
	/* asking for state `sent` explicitly includes sent messages */
	sqlite3_bind_int(*st_r, 3, flt->include_sent || flt->state == SPOOL_SENT);
	return SPOOL_OK;
}

enum spool_res spool_list(struct spool *sp, const struct spool_filter *flt, spool_list_cb cb,
			  void *ctx, char **err_r)
{
	static const struct spool_filter all = { -1, NULL, 0 };
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc = SQLITE_DONE, stop = 0;

	if (flt == NULL)
		flt = &all;
	if (flt->state < -1 || flt->state >= SPOOL_NSTATES)
		return spool_fail(err_r, SPOOL_INVAL, "list: unknown state %d", flt->state);
	if ((res = list_prepare(sp, flt, &st, err_r)) != SPOOL_OK)
		return res;
	while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct spool_msg *m = spool_msg_from_row(sp, st);

		res = spool_load_rcpts(sp, m, err_r);
		if (res == SPOOL_OK && cb != NULL)
			stop = cb(ctx, m);
		spool_msg_free(&m);
		if (res != SPOOL_OK)
			goto out;
	}
	if (!stop && rc != SQLITE_DONE)
		res = spool_dbfail(sp, rc, "list", err_r);
out:
	sqlite3_finalize(st);
	return res;
}

enum spool_res spool_get(struct spool *sp, const char *id, struct spool_msg **m_r,
			 char **err_r)
{
	char uid[SPOOL_ID_LEN + 1];
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	*m_r = NULL;
	if (!spool_id_valid(id))
		return spool_fail(err_r, SPOOL_INVAL, "%s: not a message id (16 hex digits)",
				  id ? id : "(null)");
	/* operators may type the id in lower case */
	for (size_t i = 0; i <= SPOOL_ID_LEN; i++)
		uid[i] = (char)toupper((unsigned char)id[i]);
	if ((res = spool_stmt(sp, SQ_GET, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*m_r = spool_msg_from_row(sp, st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return spool_fail(err_r, SPOOL_NOTFOUND, "%s: no such message", uid);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "get", err_r);
	res = spool_load_rcpts(sp, *m_r, err_r);
	if (res != SPOOL_OK)
		spool_msg_free(m_r);
	return res;
}

enum spool_res spool_count_by_state(struct spool *sp, uint64_t counts[SPOOL_NSTATES],
				    char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_state state;
	int rc;

	memset(counts, 0, SPOOL_NSTATES * sizeof counts[0]);
	rc = sqlite3_prepare_v2(sp->db, "SELECT state, COUNT(*) FROM messages GROUP BY state",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "count", err_r);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (spool_state_from_text(sqlite3_column_text(st, 0), &state) == 0)
			counts[state] = (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "count", err_r);
	return SPOOL_OK;
}

enum spool_res spool_account_update(struct spool *sp, const char *account, time_t last_poll,
				    const char *result, unsigned int fetched, char **err_r)
{
	static const char sql[] =
		"INSERT INTO accounts (name, last_poll, last_result, last_fetched) "
		"VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE SET "
		"last_poll = excluded.last_poll, last_result = excluded.last_result, "
		"last_fetched = excluded.last_fetched";
	sqlite3_stmt *st = NULL;
	int rc;

	if (account == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "account update: no account name");
	rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)last_poll);
		if (result != NULL)
			sqlite3_bind_text(st, 3, result, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)fetched);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "account update", err_r);
	return SPOOL_OK;
}

void spool_msg_free(struct spool_msg **mp)
{
	struct spool_msg *m = *mp;

	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nrcpts; i++) {
		free(m->rcpts[i].addr);
		free(m->rcpts[i].reply);
	}
	free(m->rcpts);
	free(m->account);
	free(m->uidl);
	free(m->path);
	free(m->sender);
	free(m->last_reply);
	free(m->body);
	free(m);
	*mp = NULL;
}

void spool_msgs_free(struct spool_msg ***msgsp, size_t n)
{
	struct spool_msg **msgs = *msgsp;

	if (msgs == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		spool_msg_free(&msgs[i]);
	free(msgs);
	*msgsp = NULL;
}

/* ---- operator actions ---- */

/* norm_id - validated, upper-case copy of an operator-typed id */
static enum spool_res norm_id(const char *id, char uid[SPOOL_ID_LEN + 1], char **err_r)
{
	if (!spool_id_valid(id))
		return spool_fail(err_r, SPOOL_INVAL, "%s: not a message id (16 hex digits)",
				  id ? id : "(null)");
	for (size_t i = 0; i <= SPOOL_ID_LEN; i++)
		uid[i] = (char)toupper((unsigned char)id[i]);
	return SPOOL_OK;
}

/* run_sql - one statement with text/int parameters given as a format:
 * 't' text (const char *), 'i' int64 (sqlite3_int64); *changes_r rows */
static enum spool_res run_sql(struct spool *sp, const char *sql, const char *step,
			      unsigned int *changes_r, char **err_r, const char *fmt, ...)
{
	sqlite3_stmt *st = NULL;
	va_list ap;
	int rc;

	rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	va_start(ap, fmt);
	for (int i = 0; rc == SQLITE_OK && fmt[i] != '\0'; i++) {
		if (fmt[i] == 't') {
			const char *v = va_arg(ap, const char *);

			if (v != NULL)
				sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT);
		} else {
			sqlite3_bind_int64(st, i + 1, va_arg(ap, sqlite3_int64));
		}
	}
	va_end(ap);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		enum spool_res res = spool_dbfail(sp, rc, step, err_r);

		sqlite3_finalize(st);
		return res;
	}
	sqlite3_finalize(st);
	if (changes_r != NULL)
		*changes_r = (unsigned int)sqlite3_changes(sp->db);
	return SPOOL_OK;
}

/* state_of - the state of a message (SPOOL_NOTFOUND if none), in the
 * caller's transaction */
static enum spool_res state_of(struct spool *sp, const char *id, enum spool_state *st_r,
			       char **account_r, char **uidl_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res = SPOOL_OK;
	int rc;

	rc = sqlite3_prepare_v2(sp->db, "SELECT state, account, uidl FROM messages WHERE id = ?1",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW) {
		if (spool_state_from_text(sqlite3_column_text(st, 0), st_r) < 0)
			*st_r = SPOOL_HELD;
		if (account_r != NULL)
			*account_r = spool_xstrdup((const char *)sqlite3_column_text(st, 1));
		if (uidl_r != NULL)
			*uidl_r = spool_xstrdup((const char *)sqlite3_column_text(st, 2));
	} else if (rc == SQLITE_DONE) {
		res = spool_fail(err_r, SPOOL_NOTFOUND, "%s: no such message", id);
	} else {
		res = spool_dbfail(sp, rc, "look up message", err_r);
	}
	sqlite3_finalize(st);
	return res;
}

/* in_index_of - 1 if the message's body is a row of `bodies` (no file:
 * a msg/<id> could only belong to another process with the same id) */
static int in_index_of(struct spool *sp, const char *id)
{
	sqlite3_stmt *st = NULL;
	int found = 0;

	if (sqlite3_prepare_v2(sp->db, "SELECT in_index FROM messages WHERE id = ?1", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		found = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
	}
	sqlite3_finalize(st);
	return found;
}

static enum spool_res busy_sending(const char *id, char **err_r)
{
	return spool_fail(err_r, SPOOL_BUSY, "%s: being sent by a relay session right now; "
			  "try again when it ends", id);
}

/* end_tx - commit on success, else roll back; the result of the action */
static enum spool_res end_tx(struct spool *sp, enum spool_res res, char **err_r)
{
	if (res == SPOOL_OK)
		res = spool_exec_sq(sp, SQ_COMMIT, "commit", err_r);
	if (res != SPOOL_OK)
		spool_rollback(sp);
	return res;
}

/* requeue_tx - one message back to queued, inside the transaction */
/* unretain_duplicate - a duplicate the operator sends after all: its body
 * must still be kept, and is no longer purged like a sent message's */
static enum spool_res unretain_duplicate(struct spool *sp, const char *id, char **err_r)
{
	unsigned int n = 0;
	enum spool_res res = run_sql(sp, "DELETE FROM retained WHERE msg_id = ?1", "requeue "
				     "duplicate", &n, err_r, "t", id);
	if (res == SPOOL_OK && n == 0)
		return spool_fail(err_r, SPOOL_INVAL, "%s: a duplicate whose body is no longer "
				  "kept (keep_sent_days)", id);
	return res;
}

static enum spool_res requeue_tx(struct spool *sp, const char *id, time_t now, char **err_r)
{
	enum spool_state state;
	enum spool_res res;

	if ((res = state_of(sp, id, &state, NULL, NULL, err_r)) != SPOOL_OK)
		return res;
	if (state == SPOOL_QUEUED)
		return SPOOL_OK;
	if (state == SPOOL_SENDING)
		return busy_sending(id, err_r);
	if (state == SPOOL_SENT)
		return spool_fail(err_r, SPOOL_INVAL, "%s: already sent", id);
	if (state == SPOOL_DUPLICATE && (res = unretain_duplicate(sp, id, err_r)) != SPOOL_OK)
		return res;
	res = run_sql(sp, "UPDATE messages SET state = 'queued', next_attempt = 0, updated = ?2 "
		      "WHERE id = ?1", "requeue", NULL, err_r, "ti", id, (sqlite3_int64)now);
	if (res == SPOOL_OK)
		res = run_sql(sp, "UPDATE recipients SET state = 'queued' WHERE msg_id = ?1 "
			      "AND state IN ('held', 'deferred')", "requeue recipients", NULL, err_r, "t", id);
	if (res == SPOOL_OK)
		res = spool_history_add(sp, id, now, "queued", "requeued by the operator", err_r);
	return res;
}

enum spool_res spool_requeue(struct spool *sp, const char *id, char **err_r)
{
	char uid[SPOOL_ID_LEN + 1];
	enum spool_res res;

	if ((res = norm_id(id, uid, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin requeue", err_r)) != SPOOL_OK)
		return res;
	return end_tx(sp, requeue_tx(sp, uid, time(NULL), err_r), err_r);
}

enum spool_res spool_requeue_all(struct spool *sp, int held_only, unsigned int *n_r,
				 char **err_r)
{
	const char *states = held_only ? "('held')" : "('held', 'deferred')";
	time_t now = time(NULL);
	enum spool_res res;
	char sql[512];

	*n_r = 0;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin requeue", err_r)) != SPOOL_OK)
		return res;
	snprintf(sql, sizeof sql, "INSERT INTO history (msg_id, at, state, reply) SELECT id, ?1, "
		 "'queued', 'requeued by the operator' FROM messages WHERE state IN %s", states);
	res = run_sql(sp, sql, "requeue history", NULL, err_r, "i", (sqlite3_int64)now);
	if (res == SPOOL_OK) {
		snprintf(sql, sizeof sql, "UPDATE recipients SET state = 'queued' WHERE state IN "
			 "('held', 'deferred') AND msg_id IN (SELECT id FROM messages WHERE "
			 "state IN %s)", states);
		res = run_sql(sp, sql, "requeue recipients", NULL, err_r, "");
	}
	if (res == SPOOL_OK) {
		snprintf(sql, sizeof sql, "UPDATE messages SET state = 'queued', next_attempt = 0, "
			 "updated = ?1 WHERE state IN %s", states);
		res = run_sql(sp, sql, "requeue", n_r, err_r, "i", (sqlite3_int64)now);
	}
	return end_tx(sp, res, err_r);
}

enum spool_res spool_hold(struct spool *sp, const char *id, const char *reason, char **err_r)
{
	char uid[SPOOL_ID_LEN + 1];
	enum spool_state state;
	time_t now = time(NULL);
	enum spool_res res;

	if (reason == NULL)
		reason = "held by the operator";
	if ((res = norm_id(id, uid, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin hold", err_r)) != SPOOL_OK)
		return res;
	res = state_of(sp, uid, &state, NULL, NULL, err_r);
	if (res != SPOOL_OK || state == SPOOL_HELD)
		return end_tx(sp, res, err_r);
	if (state == SPOOL_SENDING)
		return end_tx(sp, busy_sending(uid, err_r), err_r);
	if (state == SPOOL_SENT)
		return end_tx(sp, spool_fail(err_r, SPOOL_INVAL, "%s: already sent", uid), err_r);
	if (state == SPOOL_DUPLICATE) /* never relayed: nothing to hold back */
		return end_tx(sp, spool_fail(err_r, SPOOL_INVAL, "%s: a duplicate (not relayed)",
					     uid), err_r);
	res = run_sql(sp, "UPDATE messages SET state = 'held', last_reply = ?2, updated = ?3 "
		      "WHERE id = ?1", "hold", NULL, err_r, "tti", uid, reason, (sqlite3_int64)now);
	if (res == SPOOL_OK)
		res = run_sql(sp, "UPDATE recipients SET state = 'held' WHERE msg_id = ?1 AND "
			      "state IN ('queued', 'deferred')", "hold recipients", NULL, err_r, "t", uid);
	if (res == SPOOL_OK)
		res = spool_history_add(sp, uid, now, "held", reason, err_r);
	return end_tx(sp, res, err_r);
}

enum spool_res spool_delete(struct spool *sp, const char *id, char **err_r)
{
	char uid[SPOOL_ID_LEN + 1], *account = NULL, *uidl = NULL;
	enum spool_state state;
	enum spool_res res;

	if ((res = norm_id(id, uid, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin delete", err_r)) != SPOOL_OK)
		return res;
	res = state_of(sp, uid, &state, &account, &uidl, err_r);
	if (res == SPOOL_OK && state == SPOOL_SENDING)
		res = busy_sending(uid, err_r);
	int inidx = res == SPOOL_OK && in_index_of(sp, uid);
	/* the tombstone keeps a kept (keep = true) message from coming back */
	if (res == SPOOL_OK)
		res = run_sql(sp, "INSERT OR IGNORE INTO tombstones (account, uidl, deleted) "
			      "VALUES (?1, ?2, ?3)", "tombstone", NULL, err_r, "tti", account, uidl,
			      (sqlite3_int64)time(NULL));
	/* recipients, bodies, history, retained go by ON DELETE CASCADE */
	if (res == SPOOL_OK)
		res = run_sql(sp, "DELETE FROM messages WHERE id = ?1", "delete", NULL, err_r, "t", uid);
	free(account);
	free(uidl);
	if ((res = end_tx(sp, res, err_r)) != SPOOL_OK)
		return res;
	/* after the commit; a crash before this unlink leaves a file without a
	 * row, which recovery removes */
	if (!inidx && unlinkat(sp->msgfd, uid, 0) < 0 && errno != ENOENT)
		return spool_fail(err_r, SPOOL_IO, "%s/msg/%s: unlink: %s", sp->dir, uid,
				  strerror(errno));
	return SPOOL_OK;
}

enum spool_res spool_make_due(struct spool *sp, unsigned int *n_r, char **err_r)
{
	enum spool_res res;

	*n_r = 0;
	res = run_sql(sp, "UPDATE messages SET next_attempt = 0 WHERE state = 'deferred'",
		      "make due", n_r, err_r, "");
	return res;
}

enum spool_res spool_history(struct spool *sp, const char *id, spool_history_cb cb, void *ctx,
			     char **err_r)
{
	char uid[SPOOL_ID_LEN + 1];
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc, stop = 0;

	if ((res = norm_id(id, uid, err_r)) != SPOOL_OK)
		return res;
	/* the fetch of a queued message has no row (it is the message's
	 * `created`); one held at fetch has its 'fetched-held' row */
	rc = sqlite3_prepare_v2(sp->db,
				"SELECT created, 'queued', 'fetched', 0 FROM messages WHERE id = ?1 "
				"AND NOT EXISTS (SELECT 1 FROM history WHERE msg_id = ?1 AND "
				"state = 'fetched-held') "
				"UNION ALL SELECT at, CASE state WHEN 'fetched-held' THEN 'held' "
				"ELSE state END, reply, rowid FROM history WHERE msg_id = ?1 "
				"ORDER BY 4", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
		while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW)
			stop = cb(ctx, (time_t)sqlite3_column_int64(st, 0),
				  (const char *)sqlite3_column_text(st, 1),
				  (const char *)sqlite3_column_text(st, 2));
	}
	sqlite3_finalize(st);
	if (!stop && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "history", err_r);
	return SPOOL_OK;
}

enum spool_res spool_purge_tx(struct spool *sp, time_t now, char ***ids_r, size_t *n_r,
			      unsigned int *purged_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	size_t cap = 0;
	int rc;

	*ids_r = NULL;
	*n_r = 0;
	*purged_r = 0;
	rc = sqlite3_prepare_v2(sp->db, "SELECT r.msg_id, m.in_index FROM retained r JOIN "
				"messages m ON m.id = r.msg_id WHERE r.until <= ?1", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			(*purged_r)++;
			if (sqlite3_column_int(st, 1) != 0)
				continue; /* its body goes below; it has no file */
			if (*n_r == cap) {
				cap = cap ? cap * 2 : 16;
				*ids_r = spool_xrealloc(*ids_r, cap, sizeof **ids_r);
			}
			(*ids_r)[(*n_r)++] = spool_xstrdup((const char *)sqlite3_column_text(st, 0));
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "purge select", err_r);
	if (*purged_r == 0)
		return SPOOL_OK;
	enum spool_res res = run_sql(sp, "DELETE FROM bodies WHERE msg_id IN (SELECT msg_id "
				     "FROM retained WHERE until <= ?1)", "purge bodies", NULL,
				     err_r, "i", (sqlite3_int64)now);
	if (res == SPOOL_OK)
		res = run_sql(sp, "DELETE FROM retained WHERE until <= ?1", "purge", NULL, err_r,
			      "i", (sqlite3_int64)now);
	return res;
}

enum spool_res spool_purge_sent(struct spool *sp, time_t now, unsigned int *n_r, char **err_r)
{
	enum spool_res res;
	char **ids = NULL;
	size_t n = 0;

	if (n_r != NULL)
		*n_r = 0;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin purge", err_r)) != SPOOL_OK)
		return res;
	unsigned int purged = 0;
	res = end_tx(sp, spool_purge_tx(sp, now, &ids, &n, &purged, err_r), err_r);
	if (res == SPOOL_OK && n_r != NULL)
		*n_r = purged;
	for (size_t i = 0; i < n; i++) {
		/* after the commit: a crash in between leaves a sent file
		 * without retention, which recovery removes */
		if (res == SPOOL_OK)
			(void)unlinkat(sp->msgfd, ids[i], 0);
		free(ids[i]);
	}
	free(ids);
	return res;
}

enum spool_res spool_oldest(struct spool *sp, time_t *created_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*created_r = 0;
	rc = sqlite3_prepare_v2(sp->db, "SELECT MIN(created) FROM messages WHERE state <> 'sent'",
				-1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		*created_r = (time_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "oldest", err_r);
	return SPOOL_OK;
}
