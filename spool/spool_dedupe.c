#include "config.h"

/*
 * spool_dedupe.c - duplicate detection that survives a UIDL change.
 *
 * The poller computes a message's content keys (gateway/dedupe.c) and hands
 * them over with its envelope.  Inside the commit's transaction (so two
 * copies in one group, or a copy committed by another process meanwhile,
 * are seen), spool_dedupe_check looks for an earlier copy: one range scan
 * of the dedupe table's primary key (account, kind, key, created), the
 * earliest within the window.  A duplicate is committed in state
 * `duplicate` naming the original; an original's keys join the table.
 * The table is pruned by the poller after dedupe_days.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

#define KIND_EXACT 0
#define KIND_MESSAGE 1

/* lookup_key - which key a lookup uses: the Message-ID key in mode
 * message when there is one (an exact copy has the same), else the exact */
static void lookup_key(const struct spool_dedupe *d, int *kind_r, const unsigned char **key_r)
{
	if (d->mode == SPOOL_DEDUPE_MESSAGE && d->has_msgkey) {
		*kind_r = KIND_MESSAGE;
		*key_r = d->msgkey;
	} else {
		*kind_r = KIND_EXACT;
		*key_r = d->exact;
	}
}

enum spool_res spool_dedupe_check(struct spool *sp, struct spool_pending *p, char **err_r)
{
	const struct spool_dedupe *d = p->dedupe;
	const unsigned char *key;
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int kind, rc;

	p->dup_of[0] = '\0';
	if (d == NULL || d->mode == SPOOL_DEDUPE_OFF)
		return SPOOL_OK;
	lookup_key(d, &kind, &key);
	if ((res = spool_stmt(sp, SQ_DEDUPE_FIND, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->account, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, kind);
	sqlite3_bind_blob(st, 3, key, SPOOL_KEY_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)d->since);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(st, 0);
		snprintf(p->dup_of, sizeof p->dup_of, "%s", id ? (const char *)id : "");
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe lookup", err_r);
	return SPOOL_OK;
}

static enum spool_res add_key(struct spool *sp, const struct spool_pending *p, int kind,
			      const unsigned char *key, time_t now, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	if ((res = spool_stmt(sp, SQ_DEDUPE_ADD, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->account, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, kind);
	sqlite3_bind_blob(st, 3, key, SPOOL_KEY_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
	sqlite3_bind_text(st, 5, p->id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe insert", err_r);
	return SPOOL_OK;
}

/* keep_duplicate - its body is kept as long as a sent message's */
static enum spool_res keep_duplicate(struct spool *sp, const struct spool_pending *p,
				     time_t now, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	char reply[64];
	int rc;

	if ((res = spool_stmt(sp, SQ_INS_RETAINED, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now + (sqlite3_int64)sp->keep_sent_days * 86400);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "retain duplicate", err_r);
	snprintf(reply, sizeof reply, "duplicate of %s", p->dup_of);
	return spool_history_add(sp, p->id, now, "duplicate", reply, err_r);
}

enum spool_res spool_dedupe_record(struct spool *sp, struct spool_pending *p, time_t now,
				   char **err_r)
{
	struct spool_dedupe *d = p->dedupe;
	enum spool_res res;

	if (d == NULL || d->mode == SPOOL_DEDUPE_OFF)
		return SPOOL_OK;
	snprintf(d->dup_of_r, sizeof d->dup_of_r, "%s", p->dup_of);
	if (p->dup_of[0])
		return keep_duplicate(sp, p, now, err_r);
	/* both keys, whatever the mode: a later change of mode still finds it */
	if ((res = add_key(sp, p, KIND_EXACT, d->exact, now, err_r)) != SPOOL_OK)
		return res;
	if (d->has_msgkey)
		res = add_key(sp, p, KIND_MESSAGE, d->msgkey, now, err_r);
	return res;
}

enum spool_res spool_dedupe_prune(struct spool *sp, const char *account, time_t before,
				  unsigned int *n_r, char **err_r)
{
	/* the kinds spelled out: each is a range of the primary key */
	static const char sql[] = "DELETE FROM dedupe WHERE account = ?1 AND kind IN (0, 1) "
				  "AND created < ?2";
	sqlite3_stmt *st = NULL;
	int rc;

	if (n_r != NULL)
		*n_r = 0;
	rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "dedupe prune", err_r);
	sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)before);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe prune", err_r);
	if (n_r != NULL)
		*n_r = (unsigned int)sqlite3_changes(sp->db);
	return SPOOL_OK;
}

enum spool_res spool_dedupe_count(struct spool *sp, const char *account, uint64_t *n_r,
				  char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*n_r = 0;
	rc = sqlite3_prepare_v2(sp->db, "SELECT COUNT(*) FROM dedupe WHERE account = ?1", -1,
				&st, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "dedupe count", err_r);
	sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*n_r = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "dedupe count", err_r);
	return SPOOL_OK;
}

/* The renumbering alert lives in `meta` as "dedupe_alert <account>" =
 * "<unix time> <count>": one row per account, replaced. */
enum spool_res spool_dedupe_alert_put(struct spool *sp, const char *account, time_t when,
				      unsigned int count, char **err_r)
{
	sqlite3_stmt *st = NULL;
	char val[64];
	int rc;

	snprintf(val, sizeof val, "%lld %u", (long long)when, count);
	rc = sqlite3_prepare_v2(sp->db, "INSERT OR REPLACE INTO meta (key, value) "
				"VALUES ('dedupe_alert ' || ?1, ?2)", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "dedupe alert", err_r);
	sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, val, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe alert", err_r);
	return SPOOL_OK;
}

enum spool_res spool_dedupe_alert_get(struct spool *sp, const char *account, time_t *when_r,
				      unsigned int *count_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	long long when = 0;
	unsigned int count = 0;
	int rc;

	*when_r = 0;
	*count_r = 0;
	rc = sqlite3_prepare_v2(sp->db, "SELECT value FROM meta WHERE key = 'dedupe_alert ' || ?1",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "dedupe alert", err_r);
	sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL &&
	    sscanf((const char *)sqlite3_column_text(st, 0), "%lld %u", &when, &count) == 2) {
		*when_r = (time_t)when;
		*count_r = count;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe alert", err_r);
	return SPOOL_OK;
}
