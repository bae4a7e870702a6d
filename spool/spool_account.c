/*
 * spool_account.c - per-account poll state (see spool.h): what the
 * scheduler needs to decide when an account may be polled, and what
 * `popgate status` reports.
 */
#include "config.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"
#include "spool_int.h"

#define ACCOUNT_COLS                                                                   \
	"name, last_poll, last_result, last_fetched, last_bytes, not_before, failures, " \
	"auth_failed, last_error, login_delay, expire, problem_uidls"

static char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t != NULL ? spool_xstrdup((const char *)t) : NULL;
}

static int col_int_or(sqlite3_stmt *st, int i, int dflt)
{
	return sqlite3_column_type(st, i) == SQLITE_NULL ? dflt : sqlite3_column_int(st, i);
}

static void row_to_state(sqlite3_stmt *st, struct spool_account_state *a)
{
	a->name = col_text(st, 0);
	a->last_poll = (time_t)sqlite3_column_int64(st, 1);
	a->last_result = col_text(st, 2);
	a->last_fetched = (unsigned)sqlite3_column_int64(st, 3);
	a->last_bytes = (uint64_t)sqlite3_column_int64(st, 4);
	a->not_before = (time_t)sqlite3_column_int64(st, 5);
	a->failures = (unsigned)sqlite3_column_int64(st, 6);
	a->auth_failed = col_text(st, 7);
	a->last_error = col_text(st, 8);
	a->login_delay = col_int_or(st, 9, -1);
	a->expire = col_int_or(st, 10, -1);
	a->problem_uidls = col_text(st, 11);
}

enum spool_res spool_account_get(struct spool *sp, const char *name,
				 struct spool_account_state *st_r, char **err_r)
{
	static const char sql[] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE name = ?1";
	sqlite3_stmt *st = NULL;
	memset(st_r, 0, sizeof *st_r);
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW) {
		row_to_state(st, st_r);
		rc = SQLITE_DONE;
	} else if (rc == SQLITE_DONE) {
		st_r->name = spool_xstrdup(name);
		st_r->login_delay = -1;
		st_r->expire = -1;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "account state", err_r);
	return SPOOL_OK;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
	if (v != NULL)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

enum spool_res spool_account_put(struct spool *sp, const struct spool_account_state *a,
				 char **err_r)
{
	static const char sql[] =
		"INSERT OR REPLACE INTO accounts (" ACCOUNT_COLS ") "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
	sqlite3_stmt *st = NULL;
	if (a->name == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "account state: no account name");
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)a->last_poll);
		bind_text_or_null(st, 3, a->last_result);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)a->last_fetched);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)a->last_bytes);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)a->not_before);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)a->failures);
		bind_text_or_null(st, 8, a->auth_failed);
		bind_text_or_null(st, 9, a->last_error);
		if (a->login_delay >= 0)
			sqlite3_bind_int(st, 10, a->login_delay);
		else
			sqlite3_bind_null(st, 10);
		if (a->expire != -1)
			sqlite3_bind_int(st, 11, a->expire);
		else
			sqlite3_bind_null(st, 11);
		bind_text_or_null(st, 12, a->problem_uidls);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "account state update", err_r);
	return SPOOL_OK;
}

enum spool_res spool_account_list(struct spool *sp, spool_account_cb cb, void *ctx,
				  char **err_r)
{
	static const char sql[] = "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY name";
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		struct spool_account_state a;
		memset(&a, 0, sizeof a);
		row_to_state(st, &a);
		int stop = cb(ctx, &a);
		spool_account_state_free(&a);
		if (stop) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "account list", err_r);
	return SPOOL_OK;
}

void spool_account_state_free(struct spool_account_state *a)
{
	free(a->name);
	free(a->last_result);
	free(a->auth_failed);
	free(a->last_error);
	free(a->problem_uidls);
	memset(a, 0, sizeof *a);
}

/* ---- the last relay round ---------------------------------------------- */

enum spool_res spool_relay_state_put(struct spool *sp, const struct spool_relay_state *rs,
				     char **err_r)
{
	static const char sql[] =
		"INSERT OR REPLACE INTO relay_state (id, last_run, result, attempted, sent, "
		"deferred, held, bytes, error) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)rs->last_run);
		sqlite3_bind_text(st, 2, rs->result ? rs->result : "ok", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, rs->attempted);
		sqlite3_bind_int64(st, 4, rs->sent);
		sqlite3_bind_int64(st, 5, rs->deferred);
		sqlite3_bind_int64(st, 6, rs->held);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)rs->bytes);
		bind_text_or_null(st, 8, rs->error);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "relay state update", err_r);
	return SPOOL_OK;
}

enum spool_res spool_relay_state_get(struct spool *sp, struct spool_relay_state *rs_r,
				     char **err_r)
{
	static const char sql[] = "SELECT last_run, result, attempted, sent, deferred, held, "
				  "bytes, error FROM relay_state WHERE id = 1";
	sqlite3_stmt *st = NULL;
	memset(rs_r, 0, sizeof *rs_r);
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		rs_r->last_run = (time_t)sqlite3_column_int64(st, 0);
		rs_r->result = col_text(st, 1);
		rs_r->attempted = (unsigned)sqlite3_column_int64(st, 2);
		rs_r->sent = (unsigned)sqlite3_column_int64(st, 3);
		rs_r->deferred = (unsigned)sqlite3_column_int64(st, 4);
		rs_r->held = (unsigned)sqlite3_column_int64(st, 5);
		rs_r->bytes = (uint64_t)sqlite3_column_int64(st, 6);
		rs_r->error = col_text(st, 7);
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "relay state", err_r);
	return SPOOL_OK;
}

void spool_relay_state_free(struct spool_relay_state *rs)
{
	free(rs->result);
	free(rs->error);
	memset(rs, 0, sizeof *rs);
}

/* ---- the account's UIDLs (poller: plan, keep_days, pruning) ------------ */

void spool_uidl_rows_free(struct spool_uidl_row **rows, size_t n)
{
	if (rows == NULL || *rows == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*rows)[i].uidl);
	free(*rows);
	*rows = NULL;
}

enum spool_res spool_account_uidls(struct spool *sp, const char *account,
				   struct spool_uidl_row **rows_r, size_t *n_r, char **err_r)
{
	static const char sql[] = "SELECT uidl, state, created, listed_size FROM messages "
				  "WHERE account = ?1 ORDER BY uidl";
	sqlite3_stmt *st = NULL;
	struct spool_uidl_row *rows = NULL;
	size_t n = 0, cap = 0;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			rows = spool_xrealloc(rows, cap, sizeof *rows);
		}
		struct spool_uidl_row *r = &rows[n++];
		r->uidl = spool_xstrdup((const char *)sqlite3_column_text(st, 0));
		if (spool_state_from_text(sqlite3_column_text(st, 1), &r->state) < 0)
			r->state = SPOOL_QUEUED;
		r->created = (time_t)sqlite3_column_int64(st, 2);
		r->listed_size = sqlite3_column_type(st, 3) == SQLITE_NULL ?
				 -1 : (int64_t)sqlite3_column_int64(st, 3);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		spool_uidl_rows_free(&rows, n);
		return spool_dbfail(sp, rc, "account uidl list", err_r);
	}
	*rows_r = rows;
	*n_r = n;
	return SPOOL_OK;
}

enum spool_res spool_account_tombstones(struct spool *sp, const char *account,
					char ***uidls_r, size_t *n_r, char **err_r)
{
	static const char sql[] = "SELECT uidl FROM tombstones WHERE account = ?1 ORDER BY uidl";
	sqlite3_stmt *st = NULL;
	char **v = NULL;
	size_t n = 0, cap = 0;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = spool_xrealloc(v, cap, sizeof *v);
		}
		v[n++] = spool_xstrdup((const char *)sqlite3_column_text(st, 0));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return spool_dbfail(sp, rc, "account tombstones", err_r);
	}
	*uidls_r = v;
	*n_r = n;
	return SPOOL_OK;
}

static int table_exists(struct spool *sp, const char *name)
{
	sqlite3_stmt *st = NULL;
	int found = 0;
	if (sqlite3_prepare_v2(sp->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' "
			       "AND name = ?1", -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		found = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return found;
}

/* prune_exec - one statement with (account, uidl) bound */
static int prune_exec(struct spool *sp, const char *sql, const char *account, const char *uidl,
		      time_t before, int *changed_r)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, uidl, -1, SQLITE_STATIC);
		if (sqlite3_bind_parameter_count(st) >= 3)
			sqlite3_bind_int64(st, 3, (sqlite3_int64)before);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (changed_r != NULL)
		*changed_r = sqlite3_changes(sp->db);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

enum spool_res spool_uidl_prune(struct spool *sp, const char *account, const char *const *gone,
				size_t n, time_t sent_before, unsigned int *pruned_r, char **err_r)
{
	/* only sent rows: a message still queued, deferred or held is in the
	 * spool; a retained file (keep_sent_days) keeps its row until purged */
	const char *del = table_exists(sp, "retained")
		? "DELETE FROM messages WHERE account = ?1 AND uidl = ?2 "
		  "AND state IN ('sent', 'duplicate') "
		  "AND updated < ?3 AND id NOT IN (SELECT msg_id FROM retained)"
		: "DELETE FROM messages WHERE account = ?1 AND uidl = ?2 "
		  "AND state IN ('sent', 'duplicate') "
		  "AND updated < ?3";
	int tomb = table_exists(sp, "tombstones");
	unsigned int pruned = 0;
	*pruned_r = 0;
	if (n == 0)
		return SPOOL_OK;
	/* spool_exec_sq, not sqlite3_exec: inside spool_batch_begin it is a
	 * savepoint of the batch */
	enum spool_res res = spool_exec_sq(sp, SQ_BEGIN, "begin uidl prune", err_r);
	if (res != SPOOL_OK)
		return res;
	int rc = SQLITE_OK;
	for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
		int changed = 0;
		rc = prune_exec(sp, del, account, gone[i], sent_before, &changed);
		pruned += (unsigned)changed;
		if (rc == SQLITE_OK && tomb)
			rc = prune_exec(sp, "DELETE FROM tombstones WHERE account = ?1 AND uidl = ?2 "
					"AND deleted < ?3", account, gone[i], sent_before, NULL);
	}
	if (rc != SQLITE_OK) {
		enum spool_res r = spool_dbfail(sp, rc, "uidl prune", err_r);
		spool_rollback(sp);
		return r;
	}
	if ((res = spool_exec_sq(sp, SQ_COMMIT, "commit uidl prune", err_r)) != SPOOL_OK) {
		spool_rollback(sp);
		return res;
	}
	*pruned_r = pruned;
	return SPOOL_OK;
}
