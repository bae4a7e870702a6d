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
	"auth_failed, last_error, login_delay, expire"

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
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
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
	memset(a, 0, sizeof *a);
}
