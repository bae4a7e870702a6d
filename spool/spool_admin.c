#include "config.h"

/*
 * spool_admin.c - listing, lookup, counters and per-account bookkeeping for
 * the operator commands; none of it is on the hot ingest or relay path.
 */
#include <ctype.h>
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
		"AND (?3 OR state <> 'sent') ORDER BY created, rowid";
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
	if (flt->state < -1 || flt->state > SPOOL_HELD)
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

enum spool_res spool_count_by_state(struct spool *sp, uint64_t counts[5], char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_state state;
	int rc;

	memset(counts, 0, 5 * sizeof counts[0]);
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
