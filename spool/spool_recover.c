#include "config.h"

/*
 * spool_recover.c - put the spool back in a consistent state after a crash.
 *
 * Run by spool_open() after the migrations, only while this handle holds the
 * spool exclusively (see lock_and_recover in spool.c).  The table:
 *
 *   tmp/<id>, any index state          removed: never finished, so never
 *                                      committed, so the server still has it
 *   relay.<r>.journal entry, its row   the recipient -> `sent`; a message
 *   `sending`, recipient not sent/held with nothing left to do -> `sent`
 *                                      (the host accepted it before the
 *                                      relay died; applied first)
 *   row `sending`                      -> `queued` (recipients an older
 *                                      popgate left `sending` -> `queued`;
 *                                      a claim keeps theirs), a history row
 *                                      saying it may go out twice; the
 *                                      relay died mid-session, at-least-
 *                                      once says retry
 *   retained row, until passed         retention dropped (its body too);
 *                                      the file goes with the next rule
 *   msg/<id>, row in_index             removed: a copy an older popgate
 *                                      wrote beside the body (the body in
 *                                      the index is the message)
 *   msg/<id>, no row                   removed: its commit never returned,
 *                                      so it was not deleted on the server
 *   msg/<id>, row `sent`, no retained  removed: the unlink after the commit
 *                                      did not happen
 *   msg/<id>, row `sent`, retained     kept for audit (keep_sent_days)
 *   msg/<id>, row `duplicate`          as a `sent` row (kept while retained)
 *   row queued/deferred/sending,       -> `held`, last_reply "spool file
 *   not in_index, no msg/<id>          missing at recovery" (an operator
 *                                      decides; never silently dropped)
 *   row held, no file                  left alone (already for an operator)
 *   row sent, no file; row + file      the normal states: nothing to do
 *
 * One guard: an index with no schema yet while msg/ holds files means the
 * index was lost, not that a commit failed; removing those files could lose
 * mail already deleted on the server, so spool_open() refuses instead
 * (spool_recover_guard).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

#define MISSING_REPLY "spool file missing at recovery"

/* open_dir - a DIR stream on a copy of fd, positioned at the start */
static enum spool_res open_dir(struct spool *sp, int fd, const char *name, DIR **d_r,
			       char **err_r)
{
	int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	*d_r = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (*d_r == NULL) {
		int err = errno;

		if (dfd >= 0)
			close(dfd);
		return spool_fail(err_r, SPOOL_IO, "%s/%s: opendir: %s", sp->dir, name,
				  strerror(err));
	}
	rewinddir(*d_r);
	return SPOOL_OK;
}

static int skip_entry(const struct dirent *de)
{
	return strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
	       de->d_type == DT_DIR;
}

static enum spool_res clean_tmp(struct spool *sp, char **err_r)
{
	enum spool_res res;
	struct dirent *de;
	DIR *d;

	if ((res = open_dir(sp, sp->tmpfd, "tmp", &d, err_r)) != SPOOL_OK)
		return res;
	while ((de = readdir(d)) != NULL) {
		if (skip_entry(de))
			continue;
		if (unlinkat(sp->tmpfd, de->d_name, 0) == 0)
			sp->rec.tmp_removed++;
		else if (errno != ENOENT) {
			res = spool_fail(err_r, SPOOL_IO, "%s/tmp/%s: unlink: %s", sp->dir,
					 de->d_name, strerror(errno));
			break;
		}
	}
	closedir(d);
	return res;
}

/* exec_changes - run one update with ?1 = now and ?2 = claim (NULL: any),
 * return the rows it changed */
static enum spool_res exec_changes(struct spool *sp, const char *sql, time_t now,
				   const char *claim, const char *step, unsigned int *n_r,
				   char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		int np = sqlite3_bind_parameter_count(st);

		if (np >= 1)
			sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
		if (np >= 2 && claim != NULL)
			sqlite3_bind_text(st, 2, claim, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, step, err_r);
	if (n_r != NULL)
		*n_r += (unsigned int)sqlite3_changes(sp->db);
	return SPOOL_OK;
}

/* The `sending` messages of one claim (?2), or all of them (?2 NULL). */
#define SENDING_OF_CLAIM "state = 'sending' AND (?2 IS NULL OR claim = ?2)"

static spool_requeue_log_fn requeue_log;

void spool_set_requeue_log(spool_requeue_log_fn fn)
{
	requeue_log = fn;
}

/* sending_ids - remember which messages recovery requeues, and name each
 * one in the log now, before the commit (spool_set_requeue_log) */
static enum spool_res sending_ids(struct spool *sp, const char *claim, char **err_r)
{
	sqlite3_stmt *st = NULL;
	size_t n = 0;
	int rc;

	while (sp->rec.requeued_ids != NULL && sp->rec.requeued_ids[n] != NULL)
		n++;
	rc = sqlite3_prepare_v2(sp->db, "SELECT id, account FROM messages WHERE "
				SENDING_OF_CLAIM " ORDER BY id", -1, &st, NULL);
	if (st != NULL && claim != NULL)
		sqlite3_bind_text(st, 2, claim, -1, SQLITE_STATIC);
	while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		/* NULL-terminated; grown one at a time: recovery is rare */
		sp->rec.requeued_ids = spool_xrealloc(sp->rec.requeued_ids, n + 2, sizeof(char *));
		sp->rec.requeued_ids[n++] = spool_xstrdup((const char *)sqlite3_column_text(st, 0));
		sp->rec.requeued_ids[n] = NULL;
		if (requeue_log != NULL)
			requeue_log(sp->rec.requeued_ids[n - 1],
				    (const char *)sqlite3_column_text(st, 1), claim != NULL);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "recovery sending", err_r);
	return SPOOL_OK;
}

/* requeue_sending - `sending` -> `queued` for one claim (NULL: every one) */
static enum spool_res requeue_sending(struct spool *sp, time_t now, const char *claim,
				      char **err_r)
{
	enum spool_res res;

	/* the one window for a duplicate at the SMTP host: say so per message */
	if ((res = sending_ids(sp, claim, err_r)) != SPOOL_OK)
		return res;
	res = exec_changes(sp, "INSERT INTO history (msg_id, at, state, reply) SELECT id, ?1, "
			   "'queued', 'recovery: the relay stopped while sending it; sent again "
			   "(a duplicate if the host had already accepted it)' FROM messages "
			   "WHERE " SENDING_OF_CLAIM, now, claim, "recovery history", NULL, err_r);
	if (res != SPOOL_OK)
		return res;
	/* recipients first: the message rows still say whose claim they are
	 * (only an older popgate's claims left recipients `sending`) */
	res = exec_changes(sp, "UPDATE recipients SET state = 'queued' WHERE state = 'sending' "
			   "AND (?2 IS NULL OR msg_id IN (SELECT id FROM messages WHERE "
			   SENDING_OF_CLAIM "))", now, claim, "recovery requeue recipients", NULL,
			   err_r);
	if (res != SPOOL_OK)
		return res;
	return exec_changes(sp, "UPDATE messages SET state = 'queued', updated = ?1, claim = NULL "
			    "WHERE " SENDING_OF_CLAIM, now, claim, "recovery requeue",
			    &sp->rec.sending_requeued, err_r);
}

/* row_state - *found_r = 0 if msg/<name> has no row, else its state */
static enum spool_res row_state(struct spool *sp, sqlite3_stmt *st, const char *name,
				int *found_r, enum spool_state *st_r, int *inidx_r, char **err_r)
{
	int rc;

	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	*found_r = rc == SQLITE_ROW;
	*inidx_r = rc == SQLITE_ROW && sqlite3_column_int(st, 2) != 0;
	if (rc == SQLITE_ROW && spool_state_from_text(sqlite3_column_text(st, 0), st_r) < 0)
		*st_r = SPOOL_HELD;
	/* a duplicate's file lives like a sent one's (retained, then removed) */
	if (rc == SQLITE_ROW && *st_r == SPOOL_DUPLICATE)
		*st_r = SPOOL_SENT;
	/* a retained sent file counts as not sent here: it stays */
	if (rc == SQLITE_ROW && *st_r == SPOOL_SENT && sqlite3_column_type(st, 1) != SQLITE_NULL)
		*st_r = SPOOL_HELD;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "recovery lookup", err_r);
	return SPOOL_OK;
}

/* scan_msg - remove files of msg/ that have no row, a `sent` row, or an
 * in-index row (an old copy) */
static enum spool_res scan_msg(struct spool *sp, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	enum spool_state state = SPOOL_QUEUED;
	struct dirent *de;
	DIR *d = NULL;
	int rc, found, inidx;

	rc = sqlite3_prepare_v2(sp->db, "SELECT m.state, r.until, m.in_index FROM messages m "
				"LEFT JOIN retained r ON r.msg_id = m.id WHERE m.id = ?1", -1, &st,
				NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "recovery prepare", err_r);
	if ((res = open_dir(sp, sp->msgfd, "msg", &d, err_r)) != SPOOL_OK)
		goto out;
	while (res == SPOOL_OK && (de = readdir(d)) != NULL) {
		if (skip_entry(de))
			continue;
		res = row_state(sp, st, de->d_name, &found, &state, &inidx, err_r);
		if (res != SPOOL_OK || (found && state != SPOOL_SENT && !inidx))
			continue;
		if (unlinkat(sp->msgfd, de->d_name, 0) < 0) {
			if (errno != ENOENT)
				res = spool_fail(err_r, SPOOL_IO, "%s/msg/%s: unlink: %s", sp->dir,
						 de->d_name, strerror(errno));
			continue;
		}
		if (found && inidx)
			sp->rec.copies_removed++;
		else if (found)
			sp->rec.orphans_removed++;
		else
			sp->rec.uncommitted_removed++;
	}
out:
	if (d != NULL)
		closedir(d);
	sqlite3_finalize(st);
	return res;
}

/* missing_ids - ids of rows that still need their file but have none */
static enum spool_res missing_ids(struct spool *sp, char ***ids_r, size_t *n_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	struct stat stbuf;
	size_t cap = 0;
	int rc;

	rc = sqlite3_prepare_v2(sp->db, "SELECT id FROM messages WHERE state IN "
				"('queued', 'deferred', 'sending') AND in_index = 0 ORDER BY id",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "recovery prepare", err_r);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);

		if (id == NULL || fstatat(sp->msgfd, id, &stbuf, 0) == 0 || errno != ENOENT)
			continue;
		if (*n_r == cap) {
			cap = cap ? cap * 2 : 16;
			*ids_r = spool_xrealloc(*ids_r, cap, sizeof **ids_r);
		}
		(*ids_r)[(*n_r)++] = spool_xstrdup(id);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "recovery scan", err_r);
	return SPOOL_OK;
}

static enum spool_res hold_missing(struct spool *sp, time_t now, char **err_r)
{
	sqlite3_stmt *st = NULL;
	char **ids = NULL;
	size_t n = 0, i;
	enum spool_res res;
	int rc = SQLITE_DONE;

	if ((res = missing_ids(sp, &ids, &n, err_r)) != SPOOL_OK || n == 0)
		goto out;
	rc = sqlite3_prepare_v2(sp->db, "UPDATE messages SET state = 'held', last_reply = ?2, "
				"updated = ?3 WHERE id = ?1", -1, &st, NULL);
	for (i = 0; rc == SQLITE_OK && i < n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, MISSING_REPLY, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE) {
			sp->rec.missing_file_held++;
			rc = SQLITE_OK;
		}
	}
	if (rc != SQLITE_OK)
		res = spool_dbfail(sp, rc, "recovery hold", err_r);
out:
	sqlite3_finalize(st);
	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return res;
}

/* purge_expired - retention whose time is up; scan_msg removes the files */
static enum spool_res purge_expired(struct spool *sp, time_t now, char **err_r)
{
	enum spool_res res;
	char **ids = NULL;
	size_t n = 0;

	unsigned int purged = 0;

	res = spool_purge_tx(sp, now, &ids, &n, &purged, err_r);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	if (res == SPOOL_OK)
		sp->rec.sent_purged = purged;
	return res;
}

void spool_recovery_clear(struct spool *sp)
{
	for (size_t i = 0; sp->rec.requeued_ids != NULL && sp->rec.requeued_ids[i] != NULL; i++)
		free(sp->rec.requeued_ids[i]);
	free(sp->rec.requeued_ids);
	memset(&sp->rec, 0, sizeof sp->rec);
}

enum spool_res spool_recover(struct spool *sp, char **err_r)
{
	time_t now = time(NULL);
	enum spool_res res;
	char **jnames = NULL;
	size_t njnames = 0;

	spool_recovery_clear(sp);
	if ((res = clean_tmp(sp, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin recovery", err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_journal_recover(sp, now, &jnames, &njnames, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = requeue_sending(sp, now, NULL, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = purge_expired(sp, now, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = scan_msg(sp, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = hold_missing(sp, now, err_r)) != SPOOL_OK)
		goto fail;
	res = spool_exec_sq(sp, SQ_COMMIT, "commit recovery", err_r);
	/* applied and committed: the journals are done with */
	for (size_t i = 0; res == SPOOL_OK && i < njnames; i++)
		(void)unlinkat(sp->rootfd, jnames[i], 0);
	goto out;
fail:
	spool_rollback(sp);
out:
	for (size_t i = 0; i < njnames; i++)
		free(jnames[i]);
	free(jnames);
	return res;
}

/* spool_recover_guard - refuse a new (or empty-schema) index beside message
 * files: that index was lost or replaced, and recovery would delete mail */
enum spool_res spool_recover_guard(struct spool *sp, unsigned int user_version, char **err_r)
{
	enum spool_res res;
	struct dirent *de;
	unsigned int nfiles = 0;
	DIR *d;

	if (user_version != 0)
		return SPOOL_OK;
	if ((res = open_dir(sp, sp->msgfd, "msg", &d, err_r)) != SPOOL_OK)
		return res;
	while ((de = readdir(d)) != NULL)
		if (!skip_entry(de))
			nfiles++;
	closedir(d);
	if (nfiles == 0)
		return SPOOL_OK;
	return spool_fail(err_r, SPOOL_IO,
			  "%s/index.db is new but %s/msg holds %u message files: the index was "
			  "lost; restore it, or move the files away to start empty",
			  sp->dir, sp->dir, nfiles);
}

/* claim_dead - 1 if the handle that claimed as `claim` is gone: its journal
 * is missing, or its lock can be taken (*fd_r then holds it until the
 * caller has committed and removed the file); 0 if it lives */
static int claim_dead(struct spool *sp, const char *claim, int *fd_r)
{
	*fd_r = -1;
	if (!spool_journal_is_name(claim))
		return 1; /* not a name this library writes: nobody can hold it */
	if (strcmp(claim, sp->jname) == 0 && sp->jfd >= 0)
		return 0; /* this handle's own claims */
	int fd = openat(sp->rootfd, claim, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return errno == ENOENT;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		close(fd);
		return 0; /* held (or unlockable): treat as alive, never guess */
	}
	*fd_r = fd;
	return 1;
}

/* dead_claims - the distinct claims of `sending` messages whose claimer is
 * gone; fds[i] >= 0 holds the lock on names[i] */
static enum spool_res dead_claims(struct spool *sp, char ***names_r, int **fds_r, size_t *n_r,
				  char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc, fd;

	*names_r = NULL;
	*fds_r = NULL;
	*n_r = 0;
	rc = sqlite3_prepare_v2(sp->db, "SELECT DISTINCT claim FROM messages WHERE state = "
				"'sending' AND claim IS NOT NULL", -1, &st, NULL);
	while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *c = (const char *)sqlite3_column_text(st, 0);

		if (c == NULL || !claim_dead(sp, c, &fd))
			continue;
		*names_r = spool_xrealloc(*names_r, *n_r + 1, sizeof **names_r);
		*fds_r = spool_xrealloc(*fds_r, *n_r + 1, sizeof **fds_r);
		(*names_r)[*n_r] = spool_xstrdup(c);
		(*fds_r)[(*n_r)++] = fd;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "reclaim select", err_r);
	return SPOOL_OK;
}

enum spool_res spool_reclaim(struct spool *sp, char **err_r)
{
	time_t now = time(NULL);
	enum spool_res res;
	char **names = NULL;
	int *fds = NULL;
	size_t n = 0;

	spool_recovery_clear(sp);
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin reclaim", err_r)) != SPOOL_OK)
		return res;
	res = dead_claims(sp, &names, &fds, &n, err_r);
	for (size_t i = 0; res == SPOOL_OK && i < n; i++) {
		/* the journal first: what the host accepted is sent, not resent */
		if (fds[i] >= 0)
			res = spool_journal_apply(sp, now, names[i], names[i], err_r);
		if (res == SPOOL_OK)
			res = requeue_sending(sp, now, names[i], err_r);
	}
	if (res == SPOOL_OK && n > 0)
		res = spool_exec_sq(sp, SQ_COMMIT, "commit reclaim", err_r);
	else
		spool_rollback(sp); /* nothing to change, or a failure */
	for (size_t i = 0; i < n; i++) {
		/* removed while still locked: no other reclaimer reads it twice */
		if (res == SPOOL_OK && fds[i] >= 0)
			(void)unlinkat(sp->rootfd, names[i], 0);
		if (fds[i] >= 0)
			close(fds[i]);
		free(names[i]);
	}
	free(names);
	free(fds);
	return res;
}
