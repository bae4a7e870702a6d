#include "config.h"

/*
 * spool_journal.c - the relay's journal of accepted recipients.
 *
 * The relay records outcomes in the index in batches (one fsync'd
 * transaction per RELAY_COMMIT_EVERY messages): an fsync per message would
 * halve its speed.  So that a relay killed between the host's reply to the
 * final `.` and that batch commit sends no message twice, each accepted
 * recipient is first appended to this journal, one write() per message,
 * at once (no fsync: it survives the process being killed, not a power
 * loss; after a power loss the batch bound applies).
 *
 * File: <spool>/relay.<random>.journal, created O_EXCL before the handle's
 * first claim and held under an exclusive flock() while the handle lives,
 * emptied after every fsync'd finish of this handle, removed by
 * spool_close().  Line: "<message id>\t<recipient>\n" (a stored recipient
 * never holds a TAB: control characters are refused at ingest).
 *
 * Its name is the claim: every message the handle claims carries it in
 * messages.claim.  The lock tells the living from the dead: a handle that
 * can take it (or finds no file) knows the claimer is gone, so
 * spool_reclaim can take its claims back while the spool stays shared.
 *
 * Recovery (spool_journal_recover, exclusive lock, before `sending` rows are
 * requeued) marks each journalled recipient of a still-`sending` message
 * sent, and the message sent when none is left to do; then removes the
 * journals.  A kill that lands between the reply and the write() still
 * requeues that one message: the only duplicate left, and it is logged.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

#define JOURNAL_PREFIX "relay."
#define JOURNAL_SUFFIX ".journal"
#define JOURNAL_REPLY "accepted by the host before the relay stopped (relay journal)"

static enum spool_res journal_open(struct spool *sp, char **err_r)
{
	uint64_t rnd = 0;
	ssize_t n;

	while ((n = getrandom(&rnd, sizeof rnd, 0)) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)sizeof rnd)
		return spool_fail(err_r, SPOOL_IO, "getrandom: %s",
				  n < 0 ? strerror(errno) : "short read");
	snprintf(sp->jname, sizeof sp->jname, JOURNAL_PREFIX "%016llx" JOURNAL_SUFFIX,
		 (unsigned long long)rnd);
	sp->jfd = openat(sp->rootfd, sp->jname,
			 O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
	if (sp->jfd < 0)
		return spool_fail(err_r, spool_errno_res(errno), "%s/%s: open: %s", sp->dir,
				  sp->jname, strerror(errno));
	/* a new file: nobody else can hold its lock */
	if (flock(sp->jfd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;

		close(sp->jfd);
		sp->jfd = -1;
		(void)unlinkat(sp->rootfd, sp->jname, 0);
		return spool_fail(err_r, SPOOL_IO, "%s/%s: flock: %s", sp->dir, sp->jname,
				  strerror(err));
	}
	return SPOOL_OK;
}

enum spool_res spool_journal_ensure(struct spool *sp, char **err_r)
{
	return sp->jfd >= 0 ? SPOOL_OK : journal_open(sp, err_r);
}

enum spool_res spool_journal_note(struct spool *sp, const struct spool_msg *m, char **err_r)
{
	enum spool_res res;
	char stackbuf[1024], *line = stackbuf;
	size_t idlen = strlen(m->id), len = 0, off = 0;

	for (size_t i = 0; i < m->nrcpts; i++)
		if (m->rcpts[i].state == SPOOL_SENT)
			len += idlen + 1 + strlen(m->rcpts[i].addr) + 1;
	if (len == 0)
		return SPOOL_OK;
	if (sp->jfd < 0 && (res = journal_open(sp, err_r)) != SPOOL_OK)
		return res;
	/* the lines built in place (no stdio stream per message): the common
	 * message fits the stack buffer */
	if (len > sizeof stackbuf)
		line = spool_xcalloc(len, 1);
	for (size_t i = 0, p = 0; i < m->nrcpts; i++) {
		size_t al;

		if (m->rcpts[i].state != SPOOL_SENT)
			continue;
		al = strlen(m->rcpts[i].addr);
		memcpy(line + p, m->id, idlen);
		p += idlen;
		line[p++] = '\t';
		memcpy(line + p, m->rcpts[i].addr, al);
		p += al;
		line[p++] = '\n';
	}
	sp->jdirty = 1;
	/* one write: a kill cannot leave half of it */
	while (off < len) {
		ssize_t n = write(sp->jfd, line + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			if (line != stackbuf)
				free(line);
			return spool_fail(err_r, spool_errno_res(err), "%s/%s: write: %s", sp->dir,
					  sp->jname, strerror(err));
		}
		off += (size_t)n;
	}
	if (line != stackbuf)
		free(line);
	return SPOOL_OK;
}

void spool_journal_reset(struct spool *sp)
{
	/* what it held is in the index now; a failure only means recovery
	 * reads entries that are already recorded (they are ignored) */
	if (sp->jfd >= 0 && sp->jdirty && ftruncate(sp->jfd, 0) == 0)
		sp->jdirty = 0;
}

void spool_journal_close(struct spool *sp)
{
	if (sp->jfd < 0)
		return;
	/* removed under the lock; kept when entries may be unrecorded:
	 * recovery (or spool_reclaim) needs them */
	if (!sp->jdirty)
		(void)unlinkat(sp->rootfd, sp->jname, 0);
	close(sp->jfd);
	sp->jfd = -1;
}

/* apply_line - one journal entry: the recipient (not yet sent or held) of a
 * `sending` message is sent; *applied_r = 1 if it changed a row */
static enum spool_res apply_line(struct spool *sp, sqlite3_stmt *st, char *line, int *applied_r,
				 char **err_r)
{
	char *tab = strchr(line, '\t');
	int rc;

	*applied_r = 0;
	if (tab == NULL)
		return SPOOL_OK;
	*tab = '\0';
	if (!spool_id_valid(line) || tab[1] == '\0')
		return SPOOL_OK;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, line, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tab + 1, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, JOURNAL_REPLY, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "recovery journal", err_r);
	*applied_r = sqlite3_changes(sp->db) > 0;
	return SPOOL_OK;
}

static enum spool_res read_journal(struct spool *sp, sqlite3_stmt *st, const char *name,
				   char **err_r)
{
	enum spool_res res = SPOOL_OK;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int fd, applied;
	FILE *f;

	fd = openat(sp->rootfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || (f = fdopen(fd, "r")) == NULL) {
		if (fd >= 0)
			close(fd);
		return spool_fail(err_r, SPOOL_IO, "%s/%s: open: %s", sp->dir, name,
				  strerror(errno));
	}
	while (res == SPOOL_OK && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] != '\n')
			break; /* torn last line: never a whole entry */
		line[n - 1] = '\0';
		res = apply_line(sp, st, line, &applied, err_r);
		sp->rec.journal_rcpts += (unsigned int)applied;
	}
	free(line);
	fclose(f);
	return res;
}

/* finish_sent - messages whose recipients are all sent (or held) by now
 * become sent, as the relay's finish would have recorded them; the body
 * goes (or is retained), a file goes with recovery's scan of msg/ (or the
 * relay's next finish: an orphan of a sent row is removed by recovery).
 * claim: only the messages of that claim (NULL: every `sending` one). */
static enum spool_res finish_sent(struct spool *sp, time_t now, const char *claim,
				  char **err_r)
{
	const char *sql[] = {
		"CREATE TEMP TABLE jdone (id TEXT)",
		"INSERT INTO jdone SELECT id FROM messages m WHERE state = 'sending' "
		"AND (?2 IS NULL OR claim = ?2) "
		"AND EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND r.state = "
		"'sent') AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND "
		"r.state NOT IN ('sent', 'held'))",
		"UPDATE messages SET state = 'sent', last_reply = '" JOURNAL_REPLY "', "
		"updated = ?1, claim = NULL WHERE id IN (SELECT id FROM jdone)",
		"INSERT INTO history (msg_id, at, state, reply) SELECT id, ?1, 'sent', '"
		JOURNAL_REPLY "' FROM jdone",
		sp->keep_sent_days > 0
			? "INSERT OR REPLACE INTO retained (msg_id, until) SELECT id, ?1 FROM jdone"
			: "DELETE FROM bodies WHERE msg_id IN (SELECT id FROM jdone)",
		"DROP TABLE jdone",
	};

	for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
		sqlite3_stmt *st = NULL;
		int rc = sqlite3_prepare_v2(sp->db, sql[i], -1, &st, NULL);

		if (rc == SQLITE_OK) {
			sqlite3_int64 t = (sqlite3_int64)now;
			int np = sqlite3_bind_parameter_count(st);

			if (i == 4 && sp->keep_sent_days > 0)
				t += (sqlite3_int64)sp->keep_sent_days * 86400;
			if (np >= 1)
				sqlite3_bind_int64(st, 1, t);
			if (np >= 2 && claim != NULL)
				sqlite3_bind_text(st, 2, claim, -1, SQLITE_STATIC);
			rc = sqlite3_step(st);
			if (i == 2 && rc == SQLITE_DONE)
				sp->rec.journal_sent += (unsigned int)sqlite3_changes(sp->db);
		}
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE) {
			/* the temp table must not outlive a failed step */
			(void)sqlite3_exec(sp->db, "DROP TABLE IF EXISTS jdone", NULL, NULL, NULL);
			return spool_dbfail(sp, rc, "recovery journal finish", err_r);
		}
	}
	return SPOOL_OK;
}

int spool_journal_is_name(const char *name)
{
	size_t n = strlen(name), p = strlen(JOURNAL_PREFIX), s = strlen(JOURNAL_SUFFIX);

	return n > p + s && strncmp(name, JOURNAL_PREFIX, p) == 0 &&
	       strcmp(name + n - s, JOURNAL_SUFFIX) == 0 && strchr(name, '/') == NULL;
}

/* prepare_apply - the statement that marks one journalled recipient sent */
static enum spool_res prepare_apply(struct spool *sp, const char *claim, sqlite3_stmt **st_r,
				    char **err_r)
{
	/* the recipient still to do: queued or deferred (a claim leaves it as
	 * it was), or `sending` (a claim of a popgate before 2026-12) */
	int rc = sqlite3_prepare_v2(sp->db, "UPDATE recipients SET state = 'sent', last_reply = ?3 "
				    "WHERE msg_id = ?1 AND addr = ?2 AND "
				    "state NOT IN ('sent', 'held') AND "
				    "EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND state = "
				    "'sending' AND (?4 IS NULL OR claim = ?4))", -1, st_r, NULL);

	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "recovery journal prepare", err_r);
	if (claim != NULL)
		sqlite3_bind_text(*st_r, 4, claim, -1, SQLITE_TRANSIENT);
	return SPOOL_OK;
}

enum spool_res spool_journal_apply(struct spool *sp, time_t now, const char *name,
				   const char *claim, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;

	if ((res = prepare_apply(sp, claim, &st, err_r)) != SPOOL_OK)
		return res;
	res = read_journal(sp, st, name, err_r);
	sqlite3_finalize(st);
	if (res == SPOOL_OK)
		res = finish_sent(sp, now, claim, err_r);
	return res;
}

enum spool_res spool_journal_recover(struct spool *sp, time_t now, char ***names_r,
				     size_t *n_r, char **err_r)
{
	enum spool_res res = SPOOL_OK;
	sqlite3_stmt *st = NULL;
	struct dirent *de;
	DIR *d;
	int dfd;

	*names_r = NULL;
	*n_r = 0;
	dfd = fcntl(sp->rootfd, F_DUPFD_CLOEXEC, 0);
	d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (d == NULL) {
		if (dfd >= 0)
			close(dfd);
		return spool_fail(err_r, SPOOL_IO, "%s: opendir: %s", sp->dir, strerror(errno));
	}
	rewinddir(d);
	res = prepare_apply(sp, NULL, &st, err_r);
	while (res == SPOOL_OK && (de = readdir(d)) != NULL) {
		if (!spool_journal_is_name(de->d_name))
			continue;
		res = read_journal(sp, st, de->d_name, err_r);
		*names_r = spool_xrealloc(*names_r, *n_r + 1, sizeof **names_r);
		(*names_r)[(*n_r)++] = spool_xstrdup(de->d_name);
	}
	sqlite3_finalize(st);
	closedir(d);
	if (res == SPOOL_OK && *n_r > 0)
		res = finish_sent(sp, now, NULL, err_r);
	return res;
}
