#include "config.h"

/*
 * spool.c - open/close, schema migrations, the ingest writer and group commit.
 * The relay's queue transitions (claim, finish) are in spool_relay.c.  See spool.h for the
 * contract; recovery lives in spool_recover.c, listing in spool_admin.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

#define SPOOL_BUSY_MS 10000
/* WAL pages before a checkpoint: SQLite's default for most handles; a poll
 * (spool_defer_checkpoints) leaves them to the relay up to 16 MiB */
#define SPOOL_CKPT_PAGES 1000
#define SPOOL_CKPT_DEFERRED_PAGES 4096
/* how long a checkpoint waits for readers to leave the WAL so that it can
 * start over (SQLITE_CHECKPOINT_RESTART), in 1 ms steps */
#define SPOOL_CKPT_WAIT_MS 100
/* SQLite's page cache per handle, KiB (a limit: used as needed).  Above a
 * group's pages SQLite would spill them into the WAL before the commit. */
#define SPOOL_CACHE_KIB "8192"
/* The WAL file is cut back to this size whenever a checkpoint lets it
 * start over (PRAGMA journal_size_limit): a drain's peak does not stay on
 * disk, nor have to be read again by the next start. */
#define SPOOL_WAL_LIMIT "4194304"
/* Free pages spool_compact leaves in the file for the next groups (4 MiB);
 * the rest goes back to the file system (auto_vacuum = INCREMENTAL). */
#define SPOOL_FREE_SLACK_PAGES 1024


/* Keep in step with enum spool_sq in spool_int.h. */
static const char *const spool_sq_sql[SQ__COUNT] = {
	[SQ_BEGIN] = "BEGIN IMMEDIATE",
	[SQ_COMMIT] = "COMMIT",
	[SQ_ROLLBACK] = "ROLLBACK",
	/* a message an operator deleted is known too: never fetched again */
	[SQ_UIDL_KNOWN] = "SELECT 1 FROM messages WHERE account = ?1 AND uidl = ?2 "
			  "UNION ALL SELECT 1 FROM tombstones WHERE account = ?1 AND uidl = ?2",
	[SQ_ID_KNOWN] = "SELECT 1 FROM messages WHERE id = ?1",
	[SQ_TOMB_KNOWN] = "SELECT 1 FROM tombstones WHERE account = ?1 AND uidl = ?2",
	[SQ_INS_MSG] = "INSERT INTO messages (id, account, uidl, size, digest, sender, "
		       "state, attempts, next_attempt, created, updated, last_reply, in_index, "
		       "eightbit, listed_size, duplicate_of) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, 0, 0, ?7, ?7, ?9, ?10, ?11, ?12, ?13)",
	/* OR IGNORE: the same address twice in one envelope is one delivery */
	[SQ_INS_RCPT] = "INSERT OR IGNORE INTO recipients (msg_id, addr, state, last_reply) "
			"VALUES (?1, ?2, ?3, ?4)",
	[SQ_CLAIM_SEL] = SPOOL_CLAIM_SEL_SQL,
	[SQ_CLAIM_UPD] = "UPDATE messages SET state = 'sending', attempts = attempts + 1, "
			 "updated = ?2, claim = ?3 WHERE id = ?1",
	[SQ_RCPT_TODO] = "SELECT addr, state, last_reply FROM recipients "
			 "WHERE msg_id = ?1 AND state NOT IN ('sent', 'held') ORDER BY rowid",
	[SQ_MSG_FINISH] = "UPDATE messages SET state = ?2, last_reply = ?3, updated = ?5, "
			  "claim = NULL, "
			  "next_attempt = CASE WHEN ?2 = 'deferred' THEN ?4 ELSE next_attempt END "
			  "WHERE id = ?1",
	[SQ_RCPT_FINISH] = "UPDATE recipients SET state = ?3, last_reply = ?4 "
			   "WHERE msg_id = ?1 AND addr = ?2",
	[SQ_RCPT_ALL] = "SELECT addr, state, last_reply FROM recipients WHERE msg_id = ?1 "
			"ORDER BY rowid",
	[SQ_GET] = "SELECT " SPOOL_MSG_COLS " FROM messages WHERE id = ?1",
	[SQ_INS_BODY] = "INSERT INTO bodies (msg_id, body) VALUES (?1, ?2)",
	[SQ_INS_HIST] = "INSERT INTO history (msg_id, at, state, reply) VALUES (?1, ?2, ?3, ?4)",
	[SQ_DEL_BODY] = "DELETE FROM bodies WHERE msg_id = ?1",
	[SQ_INS_RETAINED] = "INSERT OR REPLACE INTO retained (msg_id, until) VALUES (?1, ?2)",
	[SQ_GET_BODY] = "SELECT body FROM bodies WHERE msg_id = ?1",
	[SQ_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
	[SQ_SYNC_FULL] = "PRAGMA synchronous = FULL",
	[SQ_DEDUPE_FIND] = SPOOL_DEDUPE_FIND_SQL,
	[SQ_DEDUPE_ADD] = SPOOL_DEDUPE_ADD_SQL,
	[SQ_DEDUPE_FIND_NEW] = SPOOL_DEDUPE_FIND_NEW_SQL,
	[SQ_DEDUPE_BLOOM_GEN] = SPOOL_DEDUPE_BLOOM_GEN_SQL,
};

static const char *const state_names[] = {
	[SPOOL_QUEUED] = "queued",   [SPOOL_SENDING] = "sending", [SPOOL_SENT] = "sent",
	[SPOOL_DEFERRED] = "deferred", [SPOOL_HELD] = "held", [SPOOL_DUPLICATE] = "duplicate",
};

/* ---- small helpers shared by the library (declared in spool_int.h) ---- */

void spool_oom(void)
{
	fputs("popgate: spool: out of memory\n", stderr);
	abort();
}

void *spool_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		spool_oom();
	return p;
}

void *spool_xrealloc(void *p, size_t n, size_t size)
{
	void *q;

	if (size != 0 && n > SIZE_MAX / size)
		spool_oom();
	q = realloc(p, n != 0 && size != 0 ? n * size : 1);
	if (q == NULL)
		spool_oom();
	return q;
}

char *spool_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		spool_oom();
	return p;
}

enum spool_res spool_fail(char **err_r, enum spool_res res, const char *fmt, ...)
{
	va_list ap;

	if (err_r == NULL)
		return res;
	va_start(ap, fmt);
	if (vasprintf(err_r, fmt, ap) < 0)
		spool_oom();
	va_end(ap);
	return res;
}

enum spool_res spool_errno_res(int err)
{
	return err == ENOSPC || err == EDQUOT ? SPOOL_FULL : SPOOL_IO;
}

enum spool_res spool_dbfail(struct spool *sp, int rc, const char *step, char **err_r)
{
	enum spool_res res = SPOOL_IO;
	const char *msg = sp->db ? sqlite3_errmsg(sp->db) : sqlite3_errstr(rc);

	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		res = SPOOL_BUSY;
		break;
	case SQLITE_FULL:
		res = SPOOL_FULL;
		break;
	}
	return spool_fail(err_r, res, "index.db: %s: %s", step, msg);
}

enum spool_res spool_stmt(struct spool *sp, enum spool_sq q, sqlite3_stmt **st_r,
			  char **err_r)
{
	int rc;

	if (sp->sq[q] == NULL) {
		rc = sqlite3_prepare_v3(sp->db, spool_sq_sql[q], -1, SQLITE_PREPARE_PERSISTENT,
					&sp->sq[q], NULL);
		if (rc != SQLITE_OK)
			return spool_dbfail(sp, rc, "prepare", err_r);
	}
	sqlite3_reset(sp->sq[q]);
	sqlite3_clear_bindings(sp->sq[q]);
	*st_r = sp->sq[q];
	return SPOOL_OK;
}

/* batch_sq - inside spool_batch_begin: a function's own transaction is a
 * savepoint of the batch */
static enum spool_res batch_sq(struct spool *sp, enum spool_sq q, const char *step, char **err_r)
{
	static const char *const sql[] = {
		[SQ_BEGIN] = "SAVEPOINT pg_inner",
		[SQ_COMMIT] = "RELEASE pg_inner",
		[SQ_ROLLBACK] = "ROLLBACK TO pg_inner; RELEASE pg_inner",
	};
	int rc = sqlite3_exec(sp->db, sql[q], NULL, NULL, NULL);
	return rc == SQLITE_OK ? SPOOL_OK : spool_dbfail(sp, rc, step, err_r);
}

enum spool_res spool_batch_begin(struct spool *sp, char **err_r)
{
	enum spool_res res;
	if (sp->batch)
		return SPOOL_OK;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin batch", err_r)) != SPOOL_OK)
		return res;
	sp->batch = 1;
	return SPOOL_OK;
}

enum spool_res spool_batch_end(struct spool *sp, char **err_r)
{
	if (!sp->batch)
		return SPOOL_OK;
	sp->batch = 0;
	/* SQLite ended it already after an error inside (I/O, full disk) */
	if (sqlite3_get_autocommit(sp->db))
		return SPOOL_OK;
	enum spool_res res = spool_exec_sq(sp, SQ_COMMIT, "commit batch", err_r);
	spool_rollback(sp); /* still open (busy): give it up */
	return res;
}

enum spool_res spool_exec_sq(struct spool *sp, enum spool_sq q, const char *step, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	if (sp->batch && (q == SQ_BEGIN || q == SQ_COMMIT || q == SQ_ROLLBACK))
		return batch_sq(sp, q, step, err_r);
	if ((res = spool_stmt(sp, q, &st, err_r)) != SPOOL_OK)
		return res;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, step, err_r);
	return SPOOL_OK;
}

void spool_rollback(struct spool *sp)
{
	/* SQLite may already have rolled back (I/O error, full disk): then
	 * there is nothing to end and ROLLBACK would only report that. */
	if (sqlite3_get_autocommit(sp->db) == 0)
		(void)spool_exec_sq(sp, SQ_ROLLBACK, "rollback", NULL);
}

const char *spool_state_name(enum spool_state st)
{
	if ((unsigned int)st >= sizeof state_names / sizeof state_names[0])
		return "unknown";
	return state_names[st];
}

int spool_state_parse(const char *name, enum spool_state *st_r)
{
	for (size_t i = 0; i < sizeof state_names / sizeof state_names[0]; i++) {
		if (name != NULL && strcmp(name, state_names[i]) == 0) {
			*st_r = (enum spool_state)i;
			return 0;
		}
	}
	return -1;
}

int spool_state_from_text(const unsigned char *s, enum spool_state *st_r)
{
	return spool_state_parse((const char *)s, st_r);
}

const char *spool_res_name(enum spool_res r)
{
	static const char *const names[] = {
		[SPOOL_OK] = "ok",      [SPOOL_BUSY] = "busy",          [SPOOL_FULL] = "full",
		[SPOOL_IO] = "io",      [SPOOL_DUP] = "duplicate",      [SPOOL_NOTFOUND] = "not found",
		[SPOOL_INVAL] = "invalid",
	};

	if ((unsigned int)r >= sizeof names / sizeof names[0])
		return "unknown";
	return names[r];
}

int spool_id_valid(const char *id)
{
	size_t i;

	if (id == NULL)
		return 0;
	for (i = 0; i < SPOOL_ID_LEN; i++) {
		char c = id[i];

		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f')))
			return 0;
	}
	return id[i] == '\0';
}

static char *col_strdup(sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	return s ? spool_xstrdup((const char *)s) : NULL;
}

struct spool_msg *spool_msg_from_row(struct spool *sp, sqlite3_stmt *st)
{
	struct spool_msg *m = spool_xcalloc(1, sizeof *m);
	const unsigned char *s;

	s = sqlite3_column_text(st, 0);
	snprintf(m->id, sizeof m->id, "%s", s ? (const char *)s : "");
	m->account = col_strdup(st, 1);
	m->uidl = col_strdup(st, 2);
	if (asprintf(&m->path, "%s/msg/%s", sp->dir, m->id) < 0)
		spool_oom();
	m->size = (uint64_t)sqlite3_column_int64(st, 3);
	s = sqlite3_column_text(st, 4);
	snprintf(m->digest, sizeof m->digest, "%s", s ? (const char *)s : "");
	m->sender = col_strdup(st, 5);
	if (m->sender == NULL)
		m->sender = spool_xstrdup("");
	if (spool_state_from_text(sqlite3_column_text(st, 6), &m->state) < 0)
		m->state = SPOOL_HELD; /* the CHECK constraint makes this unreachable */
	m->attempts = sqlite3_column_int(st, 7);
	m->next_attempt = (time_t)sqlite3_column_int64(st, 8);
	m->created = (time_t)sqlite3_column_int64(st, 9);
	m->updated = (time_t)sqlite3_column_int64(st, 10);
	m->last_reply = col_strdup(st, 11);
	m->in_index = sqlite3_column_int(st, 12) != 0;
	m->eightbit = sqlite3_column_type(st, 13) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 13);
	s = sqlite3_column_text(st, 14);
	snprintf(m->duplicate_of, sizeof m->duplicate_of, "%s", s ? (const char *)s : "");
	return m;
}

/* rcpts_from_stmt - append every row (addr, state, last_reply) of st to m */
enum spool_res spool_rcpts_from_stmt(struct spool *sp, sqlite3_stmt *st, struct spool_msg *m,
				      char **err_r)
{
	size_t cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct spool_rcpt *r;

		if (m->nrcpts == cap) {
			cap = cap ? cap * 2 : 4;
			m->rcpts = spool_xrealloc(m->rcpts, cap, sizeof *m->rcpts);
		}
		r = &m->rcpts[m->nrcpts++];
		r->addr = col_strdup(st, 0);
		if (r->addr == NULL)
			r->addr = spool_xstrdup("");
		if (spool_state_from_text(sqlite3_column_text(st, 1), &r->state) < 0)
			r->state = SPOOL_HELD;
		r->reply = col_strdup(st, 2);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "load recipients", err_r);
	return SPOOL_OK;
}

enum spool_res spool_load_rcpts(struct spool *sp, struct spool_msg *m, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;

	if ((res = spool_stmt(sp, SQ_RCPT_ALL, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	return spool_rcpts_from_stmt(sp, st, m, err_r);
}

/* ---- open, close, migrations ---- */

static enum spool_res mkdir_0700(const char *path, char **err_r)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return spool_fail(err_r, spool_errno_res(errno), "%s: mkdir: %s", path,
				  strerror(errno));
	return SPOOL_OK;
}

/* private_mode - the spool holds mail: a file or directory of it that
 * group or others can use (made by an older popgate, or by hand) is made
 * 0600 / 0700 when this user owns it; anything else is left as it is */
static void private_mode(int fd)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) != 0 || (st.st_mode & 077) == 0 || st.st_uid != geteuid())
		return;
	(void)fchmod(fd, S_ISDIR(st.st_mode) ? 0700 : 0600);
}

/* private_db_files - index.db is created 0600 here, before SQLite would
 * create it with 0644 less the umask; SQLite gives its -wal and -shm the
 * mode of the database file.  Existing ones are made private too. */
static enum spool_res private_db_files(struct spool *sp, char **err_r)
{
	static const char *const names[] = { "index.db", "index.db-wal", "index.db-shm" };

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		int fd = openat(sp->rootfd, names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
				(i == 0 ? O_CREAT : 0), 0600);

		if (fd < 0 && i > 0 && errno == ENOENT)
			continue;
		if (fd < 0)
			return spool_fail(err_r, spool_errno_res(errno), "%s/%s: open: %s", sp->dir,
					  names[i], strerror(errno));
		private_mode(fd);
		close(fd);
	}
	return SPOOL_OK;
}

/* open_subdir - create <dir>/<name> if missing, return an O_DIRECTORY fd */
static enum spool_res open_subdir(struct spool *sp, const char *name, int *fd_r, char **err_r)
{
	enum spool_res res;
	char *path;

	if (asprintf(&path, "%s/%s", sp->dir, name) < 0)
		spool_oom();
	res = mkdir_0700(path, err_r);
	if (res == SPOOL_OK) {
		*fd_r = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (*fd_r < 0)
			res = spool_fail(err_r, SPOOL_IO, "%s: open: %s", path, strerror(errno));
	}
	free(path);
	return res;
}

static enum spool_res open_tree(const char *dir, struct spool *sp, char **err_r)
{
	enum spool_res res;

	if ((res = mkdir_0700(dir, err_r)) != SPOOL_OK)
		return res;
	/* relative spool dirs become absolute so msg paths survive a chdir */
	sp->dir = realpath(dir, NULL);
	if (sp->dir == NULL)
		return spool_fail(err_r, SPOOL_IO, "%s: realpath: %s", dir, strerror(errno));
	sp->rootfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->rootfd < 0)
		return spool_fail(err_r, SPOOL_IO, "%s: open: %s", sp->dir, strerror(errno));
	private_mode(sp->rootfd);
	if ((res = open_subdir(sp, "tmp", &sp->tmpfd, err_r)) != SPOOL_OK)
		return res;
	private_mode(sp->tmpfd);
	if ((res = open_subdir(sp, "msg", &sp->msgfd, err_r)) != SPOOL_OK)
		return res;
	private_mode(sp->msgfd);
	return private_db_files(sp, err_r);
}

static enum spool_res user_version(struct spool *sp, unsigned int *v_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(sp->db, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*v_r = (unsigned int)sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "read user_version", err_r);
	return SPOOL_OK;
}

/* apply_migration - one migration in its own transaction; another process
 * may have applied it meanwhile, so the version is read again under lock */
static enum spool_res apply_migration(struct spool *sp, const struct spool_migration *mg,
				      char **err_r)
{
	enum spool_res res;
	unsigned int v = 0;
	char *errmsg = NULL;
	char pragma[64];
	int rc;

	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin migration", err_r)) != SPOOL_OK)
		return res;
	if ((res = user_version(sp, &v, err_r)) != SPOOL_OK || v >= mg->version)
		goto done;
	rc = sqlite3_exec(sp->db, mg->sql, NULL, NULL, &errmsg);
	if (rc == SQLITE_OK) {
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %u", mg->version);
		rc = sqlite3_exec(sp->db, pragma, NULL, NULL, &errmsg);
	}
	if (rc != SQLITE_OK) {
		res = spool_fail(err_r, SPOOL_IO, "index.db: migration %s: %s", mg->name,
				 errmsg ? errmsg : sqlite3_errstr(rc));
		if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
			res = SPOOL_BUSY;
	}
done:
	sqlite3_free(errmsg);
	if (res != SPOOL_OK) {
		spool_rollback(sp);
		return res;
	}
	return spool_exec_sq(sp, SQ_COMMIT, "commit migration", err_r);
}

static enum spool_res migrate(struct spool *sp, char **err_r)
{
	unsigned int v = 0, newest = 0, i;
	enum spool_res res;

	for (i = 0; i < spool_nmigrations; i++)
		if (spool_migrations[i].version > newest)
			newest = spool_migrations[i].version;
	if ((res = user_version(sp, &v, err_r)) != SPOOL_OK)
		return res;
	/* a newer schema may mean anything: never write to it */
	if (v > newest)
		return spool_fail(err_r, SPOOL_IO,
				  "index.db has schema version %u, this popgate knows up to %u", v,
				  newest);
	if ((res = spool_recover_guard(sp, v, err_r)) != SPOOL_OK)
		return res;
	/* a migration that rebuilds a table (011) must not cascade its DROP */
	(void)sqlite3_exec(sp->db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL);
	for (i = 0; i < spool_nmigrations && res == SPOOL_OK; i++) {
		if (spool_migrations[i].version <= v)
			continue;
		res = apply_migration(sp, &spool_migrations[i], err_r);
	}
	(void)sqlite3_exec(sp->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
	return res;
}

static int wal_cb(void *ctx, int ncol, char **vals, char **names)
{
	*(int *)ctx = ncol > 0 && vals[0] != NULL && strcmp(vals[0], "wal") == 0;
	return 0;
}

int64_t spool_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* busy_wait - the database is locked by another handle (a poll's commit,
 * a relay's finish): retry every 0.2 ms up to SPOOL_BUSY_MS.  SQLite's own
 * busy timeout backs off to 100 ms sleeps, which stalls a relay and a poll
 * that take turns committing many times a second. */
static int busy_wait(void *ctx, int count)
{
	struct spool *sp = ctx;
	int64_t now = spool_mono_ms();

	if (count == 0)
		sp->busy_since_ms = now;
	if (now - sp->busy_since_ms >= SPOOL_BUSY_MS)
		return 0;
	usleep(count < 50 ? 200 : 2000);
	return 1;
}

/* busy_short - a checkpoint's wait for readers: SPOOL_CKPT_WAIT_MS at most */
static int busy_short(void *ctx, int count)
{
	(void)ctx;
	if (count >= SPOOL_CKPT_WAIT_MS)
		return 0;
	usleep(1000);
	return 1;
}

/* checkpoint_restart - copy the WAL into the database and, if the readers
 * leave it within SPOOL_CKPT_WAIT_MS, make the next commit start it over
 * (cut to journal_size_limit): a passive checkpoint alone never lets a WAL
 * that is read and written all the time start over, so it grew with the
 * whole drain.  What a busy wait leaves undone, the next one does. */
static void checkpoint_restart(sqlite3 *db, struct spool *sp)
{
	sqlite3_busy_handler(db, busy_short, NULL);
	(void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
	if (sp != NULL)
		sqlite3_busy_handler(db, busy_wait, sp);
	else
		sqlite3_busy_handler(db, NULL, NULL);
}

/* wal_hook - after each commit: a checkpoint (checkpoint_restart) once the
 * WAL holds this handle's threshold of pages; replaces SQLite's
 * auto-checkpoint, which has one threshold for every handle */
static int wal_hook(void *ctx, sqlite3 *db, const char *name, int pages)
{
	struct spool *sp = ctx;

	if (pages < (sp->defer_ckpt ? SPOOL_CKPT_DEFERRED_PAGES : SPOOL_CKPT_PAGES))
		return SQLITE_OK;
	if (sp->bg_ckpt && !sp->defer_ckpt) {
		/* the checkpoint thread does it; this commit returns at once */
		pthread_mutex_lock(&sp->ck_mu);
		sp->ck_want = 1;
		pthread_cond_signal(&sp->ck_cv);
		pthread_mutex_unlock(&sp->ck_mu);
		return SQLITE_OK;
	}
	(void)name;
	checkpoint_restart(db, sp);
	return SQLITE_OK;
}

/* ckpt_thread - spool_checkpoint_in_background: passive checkpoints on its
 * own connection whenever a commit of the handle asks (wal_hook) */
static void *ckpt_thread(void *arg)
{
	struct spool *sp = arg;
	sqlite3 *db = NULL;
	char *path = NULL;

	if (asprintf(&path, "%s/index.db", sp->dir) < 0 ||
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
		    SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA journal_size_limit = " SPOOL_WAL_LIMIT, NULL, NULL, NULL) !=
		    SQLITE_OK) {
		sqlite3_close(db);
		db = NULL;
	}
	free(path);
	pthread_mutex_lock(&sp->ck_mu);
	for (;;) {
		while (!sp->ck_want && !sp->ck_stop)
			pthread_cond_wait(&sp->ck_cv, &sp->ck_mu);
		if (!sp->ck_want)
			break;
		sp->ck_want = 0;
		pthread_mutex_unlock(&sp->ck_mu);
		/* waits for readers SPOOL_CKPT_WAIT_MS at most; what it
		 * leaves, the next request copies */
		if (db != NULL)
			checkpoint_restart(db, NULL);
		pthread_mutex_lock(&sp->ck_mu);
	}
	pthread_mutex_unlock(&sp->ck_mu);
	sqlite3_close(db);
	return NULL;
}

void spool_checkpoint_in_background(struct spool *sp, int on)
{
	if (on && !sp->bg_ckpt) {
		sp->ck_want = sp->ck_stop = 0;
		if (pthread_mutex_init(&sp->ck_mu, NULL) != 0)
			return;
		if (pthread_cond_init(&sp->ck_cv, NULL) != 0) {
			pthread_mutex_destroy(&sp->ck_mu);
			return;
		}
		if (pthread_create(&sp->ck_thr, NULL, ckpt_thread, sp) != 0) {
			pthread_cond_destroy(&sp->ck_cv);
			pthread_mutex_destroy(&sp->ck_mu);
			return; /* checkpoints stay inline */
		}
		sp->bg_ckpt = 1;
	} else if (!on && sp->bg_ckpt) {
		/* a checkpoint under way is finished, not abandoned: the WAL
		 * must not only grow */
		pthread_mutex_lock(&sp->ck_mu);
		sp->ck_stop = 1;
		pthread_cond_signal(&sp->ck_cv);
		pthread_mutex_unlock(&sp->ck_mu);
		pthread_join(sp->ck_thr, NULL);
		pthread_cond_destroy(&sp->ck_cv);
		pthread_mutex_destroy(&sp->ck_mu);
		sp->bg_ckpt = 0;
	}
}

static int pragma_int(struct spool *sp, const char *sql, int *v_r)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		*v_r = sqlite3_column_int(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

enum spool_res spool_open_db(struct spool *sp, char **err_r)
{
	char *path, *errmsg = NULL;
	int rc, wal = 0, pages = 0;
	enum spool_res res = SPOOL_OK;

	if (asprintf(&path, "%s/index.db", sp->dir) < 0)
		spool_oom();
	/* before SQLite initialises: no global mutex around every allocation
	 * for statistics nobody reads (fails harmlessly once initialised) */
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	rc = sqlite3_open_v2(path, &sp->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					    SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		res = spool_fail(err_r, SPOOL_IO, "%s: open: %s", path,
				 sp->db ? sqlite3_errmsg(sp->db) : sqlite3_errstr(rc));
		goto out;
	}
	sqlite3_busy_handler(sp->db, busy_wait, sp);
	sqlite3_wal_hook(sp->db, wal_hook, sp);
	/* a new index frees its pages on request (spool_compact): set before
	 * WAL mode and the first table; an older index is converted by the
	 * first exclusive open (vacuum_convert) */
	rc = pragma_int(sp, "PRAGMA page_count", &pages);
	if (rc == SQLITE_OK && pages == 0)
		rc = sqlite3_exec(sp->db, "PRAGMA auto_vacuum = INCREMENTAL", NULL, NULL, &errmsg);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(sp->db, "PRAGMA journal_mode = WAL", wal_cb, &wal, &errmsg);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(sp->db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; "
				  /* a group's pages stay in memory until its commit */
				  "PRAGMA cache_size = -" SPOOL_CACHE_KIB "; "
				  "PRAGMA journal_size_limit = " SPOOL_WAL_LIMIT "; "
				  /* Debian builds SQLite with SECURE_DELETE: every sent
				   * body's freed page would be written again as zeros
				   * (to the WAL, then by the checkpoint): 40 MB more
				   * per 10,000 small messages.  FAST zeroes only where
				   * it costs no extra write (docs/internals.md) */
				  "PRAGMA secure_delete = FAST", NULL, NULL, &errmsg);
	if (rc != SQLITE_OK)
		res = spool_dbfail(sp, rc, "pragmas", err_r);
	else if (!wal)
		res = spool_fail(err_r, SPOOL_IO, "%s: journal_mode=WAL not available", path);
out:
	sqlite3_free(errmsg);
	free(path);
	return res;
}

/* retention - keep_sent_days is a property of the spool: the opener that
 * has the configuration records it (meta), every other handle (relay and
 * poll children, admin commands opened with spool_open) reads it */
static enum spool_res retention(struct spool *sp, const struct spool_params *prm, char **err_r)
{
	sqlite3_stmt *st = NULL;
	int rc, stored = 0;

	rc = sqlite3_prepare_v2(sp->db, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = "
				"'keep_sent_days'", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		stored = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "read keep_sent_days", err_r);
	sp->keep_sent_days = stored > 0 ? stored : 0;
	if (prm == NULL || (prm->keep_sent_days > 0 ? prm->keep_sent_days : 0) == sp->keep_sent_days)
		return SPOOL_OK;
	sp->keep_sent_days = prm->keep_sent_days > 0 ? prm->keep_sent_days : 0;
	rc = sqlite3_prepare_v2(sp->db, "INSERT OR REPLACE INTO meta (key, value) VALUES "
				"('keep_sent_days', ?1)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int(st, 1, sp->keep_sent_days);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "store keep_sent_days", err_r);
	return SPOOL_OK;
}

/* vacuum_convert - an index made before auto_vacuum = INCREMENTAL (set by
 * open_db) gets it now, once: only a VACUUM can change it.  Run with the
 * spool held exclusively, so no other handle is open. */
static enum spool_res vacuum_convert(struct spool *sp, char **err_r)
{
	int av = 0;
	int rc = pragma_int(sp, "PRAGMA auto_vacuum", &av);

	if (rc == SQLITE_OK && av == 2)
		return SPOOL_OK;
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(sp->db, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM", NULL, NULL,
				  NULL);
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "vacuum (auto_vacuum = incremental)", err_r);
	return SPOOL_OK;
}

void spool_checkpoint_truncate(struct spool *sp)
{
	if (sp->db == NULL)
		return;
	/* never waits: busy means another handle is at work, and the WAL is
	 * cut when a later checkpoint lets it start over (journal_size_limit) */
	sqlite3_busy_handler(sp->db, NULL, NULL);
	(void)sqlite3_wal_checkpoint_v2(sp->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_busy_handler(sp->db, busy_wait, sp);
}

enum spool_res spool_compact(struct spool *sp, char **err_r)
{
	int av = 0, nfree = 0, rc;
	char sql[64];

	if (sp->db == NULL)
		return SPOOL_OK;
	rc = pragma_int(sp, "PRAGMA auto_vacuum", &av);
	if (rc == SQLITE_OK)
		rc = pragma_int(sp, "PRAGMA freelist_count", &nfree);
	if (rc == SQLITE_OK && av == 2 && nfree > SPOOL_FREE_SLACK_PAGES) {
		snprintf(sql, sizeof sql, "PRAGMA incremental_vacuum(%d)",
			 nfree - SPOOL_FREE_SLACK_PAGES);
		rc = sqlite3_exec(sp->db, sql, NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK)
		return spool_dbfail(sp, rc, "incremental vacuum", err_r);
	spool_checkpoint_truncate(sp);
	return SPOOL_OK;
}

/* lock_and_recover - recovery would destroy the pending files and the
 * `sending` claims of another handle, so it runs only if nobody else holds
 * the spool; every handle then keeps a shared lock while open */
static enum spool_res lock_and_recover(struct spool *sp, char **err_r)
{
	enum spool_res res = SPOOL_OK;

	if (flock(sp->rootfd, LOCK_EX | LOCK_NB) == 0) {
		res = spool_recover(sp, err_r);
		if (res == SPOOL_OK)
			res = vacuum_convert(sp, err_r);
		/* a WAL a killed run left is not copied here: that would delay
		 * the first relay of every start; the relay's checkpoints do it
		 * (checkpoint_restart), and the poll's deferral bounds it */
	} else if (errno == EWOULDBLOCK)
		sp->rec.skipped = 1;
	else
		return spool_fail(err_r, SPOOL_IO, "%s: flock: %s", sp->dir, strerror(errno));
	if (res != SPOOL_OK)
		return res;
	/* blocking: waits while another opener is still recovering */
	while (flock(sp->rootfd, LOCK_SH) < 0) {
		if (errno != EINTR)
			return spool_fail(err_r, SPOOL_IO, "%s: flock: %s", sp->dir,
					  strerror(errno));
	}
	return SPOOL_OK;
}

enum spool_res spool_open(const char *dir, struct spool **sp_r, char **err_r)
{
	return spool_open_ex(dir, NULL, sp_r, err_r);
}

enum spool_res spool_open_ex(const char *dir, const struct spool_params *prm, struct spool **sp_r,
			     char **err_r)
{
	struct spool *sp = spool_xcalloc(1, sizeof *sp);
	enum spool_res res;

	*sp_r = NULL;
	sp->rootfd = sp->tmpfd = sp->msgfd = sp->jfd = -1;
	if (dir == NULL || *dir == '\0') {
		res = spool_fail(err_r, SPOOL_INVAL, "spool directory not set");
		goto fail;
	}
	if ((res = open_tree(dir, sp, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = spool_open_db(sp, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = migrate(sp, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = retention(sp, prm, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = lock_and_recover(sp, err_r)) != SPOOL_OK)
		goto fail;
	*sp_r = sp;
	return SPOOL_OK;
fail:
	spool_close(&sp);
	return res;
}

void spool_close(struct spool **spp)
{
	struct spool *sp = *spp;

	if (sp == NULL)
		return;
	/* a commit in flight ends first; a group it made durable is simply
	 * not reported (not deleted on the server: the next poll does that) */
	if (sp->commit_live)
		(void)spool_commit_finish(sp, NULL, NULL, NULL);
	spool_commit_handle_free(sp->csp);
	spool_checkpoint_in_background(sp, 0);
	spool_journal_close(sp);
	/* never committed: the server still has them, nothing may refer to them */
	spool_pending_clear(sp, 1);
	free(sp->pend);
	spool_writer_spare_free(sp);
	EVP_MD_free(sp->sha256);
	spool_dedupe_release(sp);
	spool_recovery_clear(sp);
	for (int i = 0; i < SQ__COUNT; i++)
		sqlite3_finalize(sp->sq[i]);
	/* a poll's handle deferred its checkpoints for the POP3 session's
	 * sake; that is over: its WAL must not wait for the next start */
	if (sp->defer_ckpt)
		spool_checkpoint_truncate(sp);
	if (sp->db != NULL)
		sqlite3_close(sp->db);
	if (sp->msgfd >= 0)
		close(sp->msgfd);
	if (sp->tmpfd >= 0)
		close(sp->tmpfd);
	if (sp->rootfd >= 0)
		close(sp->rootfd); /* drops the flock */
	free(sp->dir);
	free(sp);
	*spp = NULL;
}

const char *spool_dir(const struct spool *sp)
{
	return sp->dir;
}

const struct spool_recovery *spool_last_recovery(const struct spool *sp)
{
	return &sp->rec;
}

/* ---- ingest ---- */

enum spool_res spool_uidl_known(struct spool *sp, const char *account, const char *uidl,
				int *known_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	*known_r = 0;
	if (account == NULL || uidl == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "spool_uidl_known: account or uidl missing");
	if ((res = spool_stmt(sp, SQ_UIDL_KNOWN, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, uidl, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		*known_r = 1;
	else if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "uidl lookup", err_r);
	return SPOOL_OK;
}



enum spool_res spool_fork_prepare(struct spool *sp, char **err_r)
{
	if (sp->commit_live)
		return spool_fail(err_r, SPOOL_INVAL, "spool_fork_prepare: a commit is in flight");
	spool_checkpoint_in_background(sp, 0);
	spool_commit_handle_free(sp->csp);
	sp->csp = NULL;
	for (int i = 0; i < SQ__COUNT; i++) {
		sqlite3_finalize(sp->sq[i]);
		sp->sq[i] = NULL;
	}
	if (sp->db != NULL && sqlite3_close(sp->db) != SQLITE_OK)
		return spool_dbfail(sp, SQLITE_BUSY, "close before fork", err_r);
	sp->db = NULL;
	sp->ckpt_close_off = 0;
	return SPOOL_OK;
}

enum spool_res spool_fork_done(struct spool *sp, char **err_r)
{
	enum spool_res res;

	if (sp->db != NULL)
		return SPOOL_OK;
	if ((res = spool_open_db(sp, err_r)) != SPOOL_OK)
		return res;
	spool_defer_checkpoints(sp, sp->defer_ckpt);
	return SPOOL_OK;
}

void spool_defer_checkpoints(struct spool *sp, int on)
{
	sp->defer_ckpt = on != 0;
	if (sp->db != NULL && sp->ckpt_close_off != sp->defer_ckpt &&
	    sqlite3_db_config(sp->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, sp->defer_ckpt, NULL) ==
		    SQLITE_OK)
		sp->ckpt_close_off = sp->defer_ckpt;
}

enum spool_res spool_next_due(struct spool *sp, time_t *when_r, char **err_r)
{
	static const char sql[] =
		"SELECT COUNT(*), MIN(CASE WHEN state = 'queued' THEN 0 ELSE next_attempt END) "
		"FROM messages WHERE state IN ('queued', 'deferred')";
	sqlite3_stmt *st = NULL;
	sqlite3_int64 count = 0, first = 0;
	int rc;

	*when_r = 0;
	rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		count = sqlite3_column_int64(st, 0);
		first = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "next due", err_r);
	/* queued means due now; 0 is reserved for "nothing to do" */
	if (count > 0)
		*when_r = first > 0 ? (time_t)first : time(NULL);
	return SPOOL_OK;
}
