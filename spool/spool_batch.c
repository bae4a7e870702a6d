/*
 * spool_batch.c - what the relay asks the spool before a round (see
 * spool_batch.h).
 */
#include "config.h"

#include <sqlite3.h>
#include <stdint.h>

#include "spool.h"
#include "spool_batch.h"
#include "spool_int.h"

enum spool_res spool_due_count(struct spool *sp, time_t now, size_t max, size_t *n_r,
			       char **err_r)
{
	/* the claim's own condition (SQ_CLAIM_SEL), on the messages_due index */
	static const char sql[] =
		"SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE state = 'queued' OR "
		"(state = 'deferred' AND next_attempt <= ?1) LIMIT ?2)";
	sqlite3_stmt *st = NULL;
	int rc;

	*n_r = 0;
	rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
		sqlite3_bind_int64(st, 2, max > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)max);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW)
		*n_r = (size_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "due count", err_r);
	return SPOOL_OK;
}
