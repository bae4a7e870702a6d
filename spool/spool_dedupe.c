#include "config.h"

/*
 * spool_dedupe.c - duplicate detection that survives a UIDL change.
 *
 * The poller computes a message's content keys (gateway/dedupe.c) and hands
 * them over with its envelope.  Inside the commit's transaction (so two
 * copies in one group, or a copy committed by another process meanwhile,
 * are seen), spool_dedupe_check looks for an earlier copy: one range scan
 * of the dedupe table's primary key (account, kind, key, created), the
 * earliest within the window, in each of the two key tables.  A duplicate
 * is committed in state `duplicate` naming the original; an original's
 * keys join the small table dedupe_new, which spool_dedupe_maintain (at the
 * end of a poll) merges into dedupe about once a day or at 50,000 keys, so
 * a commit never inserts at random places of a large B-tree; keys past
 * dedupe_days are pruned then.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

static enum spool_res query_int(struct spool *sp, const char *sql, const char *t, int64_t *v_r,
				char **err_r);

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

/* ---- the Bloom filter of `dedupe` ----------------------------------------
 * The large table changes only when the poller merges or prunes it, once a
 * day: then the filter is rebuilt in the same transaction.  A commit tests
 * each key against it (the handle keeps a copy, reloaded when gen moves):
 * a key it excludes cannot be in `dedupe`, and only the small `dedupe_new`
 * is searched; the search of the large B-tree (a page read per message
 * that the page cache rarely has) is left for the about 1 % of false
 * positives and the real duplicates. */
#define BLOOM_BITS_PER_KEY 10
#define BLOOM_PROBES 7

/* bloom_hashes - two 64-bit hashes of (account, kind, key): the key is a
 * SHA-256, its octets are as good as any hash; the account is folded in */
static void bloom_hashes(const char *account, int kind, const unsigned char *key,
			 uint64_t *h1_r, uint64_t *h2_r)
{
	uint64_t a = 1469598103934665603ULL, h1 = 0, h2 = 0; /* FNV-1a of the account */
	for (const unsigned char *c = (const unsigned char *)account; *c; c++)
		a = (a ^ *c) * 1099511628211ULL;
	for (int i = 0; i < 8; i++) {
		h1 = h1 << 8 | key[i];
		h2 = h2 << 8 | key[8 + i];
	}
	*h1_r = h1 ^ a ^ (uint64_t)kind * 0x9e3779b97f4a7c15ULL;
	*h2_r = (h2 ^ (a >> 7)) | 1;
}

static void bloom_set(unsigned char *bits, uint64_t nbits, const char *account, int kind,
		      const unsigned char *key)
{
	uint64_t h1, h2;
	bloom_hashes(account, kind, key, &h1, &h2);
	for (int i = 0; i < BLOOM_PROBES; i++) {
		uint64_t b = (h1 + (uint64_t)i * h2) % nbits;
		bits[b >> 3] |= (unsigned char)(1u << (b & 7));
	}
}

static int bloom_maybe(const struct spool *sp, const char *account, int kind,
		       const unsigned char *key)
{
	uint64_t h1, h2;
	bloom_hashes(account, kind, key, &h1, &h2);
	for (int i = 0; i < BLOOM_PROBES; i++) {
		uint64_t b = (h1 + (uint64_t)i * h2) % sp->dd_nbits;
		if (!(sp->dd_bits[b >> 3] & (1u << (b & 7))))
			return 0;
	}
	return 1;
}

void spool_dedupe_release(struct spool *sp)
{
	free(sp->dd_bits);
	sp->dd_bits = NULL;
	sp->dd_nbits = 0;
	sp->dd_gen = 0;
}

/* bloom_current - the handle's copy of the filter is the stored one (gen
 * checked per lookup: a merge by another process may have replaced it);
 * none stored: dd_nbits 0, every lookup searches both tables */
static enum spool_res bloom_current(struct spool *sp, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int64_t gen = 0;
	int rc;

	if ((res = spool_stmt(sp, SQ_DEDUPE_BLOOM_GEN, &st, err_r)) != SPOOL_OK)
		return res;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		gen = (int64_t)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe filter", err_r);
	if (gen == sp->dd_gen)
		return SPOOL_OK;
	spool_dedupe_release(sp);
	if (gen == 0)
		return SPOOL_OK;
	rc = sqlite3_prepare_v2(sp->db, "SELECT bits FROM dedupe_bloom WHERE id = 1", -1, &st,
				NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int n = sqlite3_column_bytes(st, 0);
		const void *b = sqlite3_column_blob(st, 0);
		if (n > 0 && b != NULL) {
			sp->dd_bits = spool_xcalloc((size_t)n, 1);
			memcpy(sp->dd_bits, b, (size_t)n);
			sp->dd_nbits = (uint64_t)n * 8;
			sp->dd_gen = gen;
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe filter", err_r);
	return SPOOL_OK;
}

/* bloom_rebuild - inside the merge's transaction: the filter of every key
 * in `dedupe` */
static enum spool_res bloom_rebuild(struct spool *sp, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int64_t n = 0;
	int rc;

	if ((res = query_int(sp, "SELECT COUNT(*) FROM dedupe", NULL, &n, err_r)) != SPOOL_OK)
		return res;
	uint64_t nbits = (uint64_t)(n > 1000 ? n : 1000) * BLOOM_BITS_PER_KEY;
	nbits = (nbits + 63) / 64 * 64;
	unsigned char *bits = spool_xcalloc((size_t)(nbits / 8), 1);
	rc = sqlite3_prepare_v2(sp->db, "SELECT account, kind, key FROM dedupe", -1, &st, NULL);
	while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *acct = sqlite3_column_text(st, 0);
		const void *key = sqlite3_column_blob(st, 2);
		if (acct != NULL && key != NULL && sqlite3_column_bytes(st, 2) == SPOOL_KEY_LEN)
			bloom_set(bits, nbits, (const char *)acct, sqlite3_column_int(st, 1), key);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE) {
		free(bits);
		return spool_dbfail(sp, rc, "dedupe filter build", err_r);
	}
	rc = sqlite3_prepare_v2(sp->db, "INSERT OR REPLACE INTO dedupe_bloom (id, gen, bits) "
				"VALUES (1, COALESCE((SELECT gen FROM dedupe_bloom WHERE id = 1), "
				"0) + 1, ?1)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_blob64(st, 1, bits, nbits / 8, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	free(bits);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "dedupe filter store", err_r);
	return SPOOL_OK;
}

/* tx_state - once per commit transaction: the current filter, and with
 * none stored whether `dedupe` has any key at all (a new spool: only
 * dedupe_new is searched, one range scan instead of two and a sort) */
static enum spool_res tx_state(struct spool *sp, char **err_r)
{
	enum spool_res res;
	int64_t any = 0;

	if ((res = bloom_current(sp, err_r)) != SPOOL_OK)
		return res;
	if (sp->dd_nbits == 0 &&
	    (res = query_int(sp, "SELECT EXISTS (SELECT 1 FROM dedupe)", NULL, &any, err_r)) !=
		    SPOOL_OK)
		return res;
	sp->dd_big_empty = sp->dd_nbits == 0 && !any;
	sp->dd_tx = 1;
	return SPOOL_OK;
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
	if (!sp->dd_tx && (res = tx_state(sp, err_r)) != SPOOL_OK)
		return res;
	int big = !sp->dd_big_empty && (sp->dd_nbits == 0 ||
					 bloom_maybe(sp, p->account, kind, key));
	if ((res = spool_stmt(sp, big ? SQ_DEDUPE_FIND : SQ_DEDUPE_FIND_NEW, &st, err_r)) !=
	    SPOOL_OK)
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

#define MERGE_ROWS 50000 /* dedupe_new is merged when it holds this many keys */
#define MAINT_EVERY 86400 /* or this long after the last merge (prune: per account) */

/* step_sql - run one statement binding ?1 text (may be NULL) and ?2
 * integer; *changes_r (may be NULL) the rows changed */
static enum spool_res step_sql(struct spool *sp, const char *sql, const char *t, int64_t i,
			       unsigned int *changes_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK) {
		if (t != NULL)
			sqlite3_bind_text(st, 1, t, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW && rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "dedupe maintenance", err_r);
	if (changes_r != NULL)
		*changes_r = (unsigned int)sqlite3_changes(sp->db);
	return SPOOL_OK;
}

/* query_int - the first column of the first row of sql (?1 text), 0 if none */
static enum spool_res query_int(struct spool *sp, const char *sql, const char *t, int64_t *v_r,
				char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);

	*v_r = 0;
	if (rc == SQLITE_OK) {
		if (t != NULL)
			sqlite3_bind_text(st, 1, t, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			*v_r = (int64_t)sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "dedupe maintenance", err_r);
	return SPOOL_OK;
}

static const char meta_get[] = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1";
static const char meta_put[] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";

/* maintain_tx - inside a transaction: merge dedupe_new into dedupe when it
 * is due, prune the account when it is due */
static enum spool_res maintain_tx(struct spool *sp, const char *account, time_t before,
				  time_t now, int force, unsigned int *pruned_r, char **err_r)
{
	char pkey[300];
	int64_t merged = 0, pruned = 0, rows = 0;
	unsigned int n = 0;
	enum spool_res res;

	snprintf(pkey, sizeof pkey, "dedupe_pruned %s", account);
	if ((res = query_int(sp, meta_get, "dedupe_merged", &merged, err_r)) != SPOOL_OK ||
	    (res = query_int(sp, meta_get, pkey, &pruned, err_r)) != SPOOL_OK ||
	    (res = query_int(sp, "SELECT COUNT(*) FROM (SELECT 1 FROM dedupe_new LIMIT 50000)",
			     NULL, &rows, err_r)) != SPOOL_OK)
		return res;
	int changed = 0;
	if (force || rows >= MERGE_ROWS || now - merged >= MAINT_EVERY) {
		changed = 1;
		/* the recent keys, in key order: one pass over the big B-tree */
		res = step_sql(sp, "INSERT OR IGNORE INTO dedupe SELECT * FROM dedupe_new "
			       "ORDER BY account, kind, key, created, msg_id", NULL, 0, NULL,
			       err_r);
		if (res == SPOOL_OK)
			res = step_sql(sp, "DELETE FROM dedupe_new", NULL, 0, NULL, err_r);
		if (res == SPOOL_OK)
			res = step_sql(sp, meta_put, "dedupe_merged", now, NULL, err_r);
		if (res != SPOOL_OK)
			return res;
	}
	if (!force && now - pruned < MAINT_EVERY)
		return changed ? bloom_rebuild(sp, err_r) : SPOOL_OK;
	/* the kinds spelled out: each is a range of the primary key */
	res = step_sql(sp, "DELETE FROM dedupe WHERE account = ?1 AND kind IN (0, 1) AND "
		       "created < ?2", account, before, &n, err_r);
	*pruned_r += n;
	if (res == SPOOL_OK)
		res = step_sql(sp, "DELETE FROM dedupe_new WHERE account = ?1 AND kind IN (0, 1) "
			       "AND created < ?2", account, before, &n, err_r);
	*pruned_r += res == SPOOL_OK ? n : 0;
	if (res == SPOOL_OK)
		res = step_sql(sp, meta_put, pkey, now, NULL, err_r);
	if (res == SPOOL_OK)
		res = bloom_rebuild(sp, err_r);
	return res;
}

enum spool_res spool_dedupe_maintain(struct spool *sp, const char *account, time_t before,
				     time_t now, int force, unsigned int *n_r, char **err_r)
{
	unsigned int n = 0;
	enum spool_res res;

	if (n_r != NULL)
		*n_r = 0;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin dedupe maintenance", err_r)) != SPOOL_OK)
		return res;
	res = maintain_tx(sp, account, before, now, force, &n, err_r);
	if (res != SPOOL_OK) {
		spool_rollback(sp);
		return res;
	}
	if ((res = spool_exec_sq(sp, SQ_COMMIT, "commit dedupe maintenance", err_r)) != SPOOL_OK) {
		spool_rollback(sp);
		return res;
	}
	if (n_r != NULL)
		*n_r = n;
	return SPOOL_OK;
}

enum spool_res spool_dedupe_count(struct spool *sp, const char *account, uint64_t *n_r,
				  char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*n_r = 0;
	rc = sqlite3_prepare_v2(sp->db, "SELECT (SELECT COUNT(*) FROM dedupe WHERE account = ?1) + "
				"(SELECT COUNT(*) FROM dedupe_new WHERE account = ?1)", -1, &st, NULL);
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
