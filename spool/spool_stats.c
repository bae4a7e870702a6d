/*
 * spool_stats.c - counters and queue figures (see spool_stats.h).
 */
#include "config.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"
#include "spool_int.h"
#include "spool_stats.h"

enum spool_res spool_counter_add(struct spool *sp, const char *name, const char *account,
				 const char *reason, uint64_t delta, char **err_r)
{
	static const char sql[] =
		"INSERT INTO counters (name, account, reason, value) VALUES (?1, ?2, ?3, ?4) "
		"ON CONFLICT (name, account, reason) DO UPDATE SET value = value + excluded.value";
	sqlite3_stmt *st = NULL;
	if (name == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "counter: no name");
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, account ? account : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, reason ? reason : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)delta);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "counter update", err_r);
	return SPOOL_OK;
}

static const char *text_or_empty(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t != NULL ? (const char *)t : "";
}

enum spool_res spool_counter_list(struct spool *sp, spool_counter_cb cb, void *ctx,
				  char **err_r)
{
	static const char sql[] =
		"SELECT name, account, reason, value FROM counters ORDER BY name, account, reason";
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		if (cb(ctx, text_or_empty(st, 0), text_or_empty(st, 1), text_or_empty(st, 2),
		       (uint64_t)sqlite3_column_int64(st, 3))) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "counter list", err_r);
	return SPOOL_OK;
}

enum spool_res spool_oldest_unsent(struct spool *sp, time_t *created_r, char **err_r)
{
	static const char sql[] =
		"SELECT MIN(created) FROM messages WHERE state NOT IN ('sent', 'duplicate')";
	sqlite3_stmt *st = NULL;
	*created_r = 0;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) != SQLITE_NULL)
			*created_r = (time_t)sqlite3_column_int64(st, 0);
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "oldest message", err_r);
	return SPOOL_OK;
}
