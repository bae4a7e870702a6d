#include "config.h"

/*
 * spool.c - open/close, schema migrations, the ingest writer, group commit,
 * and the relay's queue transitions (claim, finish).  See spool.h for the
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

#define SPOOL_WBUF (64 * 1024)    /* writer buffer: one write() per 64 KiB; a
				   * message that fits stays in the index */
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

struct spool_writer {
	struct spool *sp;
	char id[SPOOL_ID_LEN + 1];
	char *account;
	char *uidl;
	int fd;         /* tmp/<id>, opened at the first flush; -1 before */
	size_t blen;
	uint64_t size;
	uint64_t flushed; /* octets written to the file so far */
	int failed;     /* a write failed: the file is incomplete, only abort is left */
	int eightbit;   /* an octet > 127 was seen */
	uint64_t listed_size; /* the server's LIST size, 0 unknown */
	int has_file;   /* tmp/<id> was created */
	EVP_MD_CTX *md;
	unsigned char buf[SPOOL_WBUF]; /* last: not cleared on reuse */
};

static void commit_handle_free(struct spool *csp);

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
	/* created has one-second resolution; rowid keeps commit order within it */
	[SQ_CLAIM_SEL] = "SELECT " SPOOL_MSG_COLS " FROM messages "
			 "WHERE state = 'queued' OR (state = 'deferred' AND next_attempt <= ?1) "
			 "ORDER BY created, rowid LIMIT ?2",
	[SQ_CLAIM_UPD] = "UPDATE messages SET state = 'sending', attempts = attempts + 1, "
			 "updated = ?2, claim = ?3 WHERE id = ?1",
	[SQ_RCPT_TODO] = "SELECT addr, state, last_reply FROM recipients "
			 "WHERE msg_id = ?1 AND state NOT IN ('sent', 'held') ORDER BY rowid",
	[SQ_RCPT_SENDING] = "UPDATE recipients SET state = 'sending' "
			    "WHERE msg_id = ?1 AND state NOT IN ('sent', 'held')",
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

static void spool_oom(void)
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

enum spool_res spool_exec_sq(struct spool *sp, enum spool_sq q, const char *step, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

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
static enum spool_res rcpts_from_stmt(struct spool *sp, sqlite3_stmt *st, struct spool_msg *m,
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
	return rcpts_from_stmt(sp, st, m, err_r);
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

static int64_t mono_ms(void)
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
	int64_t now = mono_ms();

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

static enum spool_res open_db(struct spool *sp, char **err_r)
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
	if ((res = open_db(sp, err_r)) != SPOOL_OK)
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

static void pending_clear_one(struct spool_pending *p)
{
	free(p->account);
	free(p->uidl);
	free(p->sender);
	free(p->hold_reason);
	free(p->body);
	for (size_t i = 0; i < p->nrcpts; i++)
		free(p->rcpts[i]);
	free(p->rcpts);
	memset(p, 0, sizeof *p);
}

/* pending_clear - forget every pending message; unlink their files if asked */
static void pending_clear(struct spool *sp, int unlink_files)
{
	for (size_t i = 0; i < sp->npend; i++) {
		/* an in-index message has no file: msg/<id> could only be
		 * another process's file with the same id */
		if (unlink_files && !sp->pend[i].inl)
			(void)unlinkat(sp->msgfd, sp->pend[i].id, 0);
		pending_clear_one(&sp->pend[i]);
	}
	sp->npend = 0;
	sp->pend_bytes = 0;
	sp->pend_mem = 0;
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
	commit_handle_free(sp->csp);
	spool_checkpoint_in_background(sp, 0);
	spool_journal_close(sp);
	/* never committed: the server still has them, nothing may refer to them */
	pending_clear(sp, 1);
	free(sp->pend);
	if (sp->spare != NULL) {
		EVP_MD_CTX_free(sp->spare->md);
		free(sp->spare);
	}
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

static const char hexdig[] = "0123456789ABCDEF";

static void put_hex32(char *out, uint32_t v)
{
	for (int i = 7; i >= 0; i--) {
		out[i] = hexdig[v & 0xf];
		v >>= 4;
	}
}

/* next_id - the second, then the handle's counter from a random start:
 * unique within this handle; across processes see spool.h (ids) */
static enum spool_res next_id(struct spool *sp, char id[SPOOL_ID_LEN + 1], char **err_r)
{
	if (!sp->id_seeded) {
		ssize_t n;

		while ((n = getrandom(&sp->id_next, sizeof sp->id_next, 0)) < 0 && errno == EINTR)
			;
		if (n != (ssize_t)sizeof sp->id_next)
			return spool_fail(err_r, SPOOL_IO, "getrandom: %s",
					  n < 0 ? strerror(errno) : "short read");
		sp->id_seeded = 1;
	}
	put_hex32(id, (uint32_t)time(NULL));
	put_hex32(id + 8, sp->id_next++);
	id[SPOOL_ID_LEN] = '\0';
	return SPOOL_OK;
}

static void writer_free(struct spool_writer **wp, int unlink_tmp)
{
	struct spool_writer *w = *wp;

	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (unlink_tmp && w->has_file)
		(void)unlinkat(w->sp->tmpfd, w->id, 0);
	free(w->account);
	free(w->uidl);
	w->account = w->uidl = NULL;
	if (w->sp->spare == NULL) {
		w->sp->spare = w; /* keeps its digest context and buffer */
	} else {
		EVP_MD_CTX_free(w->md);
		free(w);
	}
	*wp = NULL;
}

enum spool_res spool_writer_begin(struct spool *sp, const char *account, const char *uidl,
				  struct spool_writer **w_r, char **err_r)
{
	struct spool_writer *w;
	EVP_MD_CTX *md;
	enum spool_res res;

	*w_r = NULL;
	if (account == NULL || uidl == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "spool_writer_begin: account or uidl missing");
	if (sp->sha256 == NULL && (sp->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		return spool_fail(err_r, SPOOL_IO, "sha256: not available");
	if (sp->spare != NULL) {
		w = sp->spare;
		sp->spare = NULL;
	} else {
		/* the 64 KiB buffer is not cleared: only what is written is read */
		w = malloc(sizeof *w);
		if (w == NULL)
			spool_oom();
		w->md = NULL;
	}
	md = w->md;
	memset(w, 0, offsetof(struct spool_writer, buf));
	w->md = md != NULL ? md : EVP_MD_CTX_new();
	w->sp = sp;
	w->fd = -1;
	w->account = spool_xstrdup(account);
	w->uidl = spool_xstrdup(uidl);
	if (w->md == NULL || EVP_DigestInit_ex(w->md, sp->sha256, NULL) != 1) {
		res = spool_fail(err_r, SPOOL_IO, "sha256: cannot initialise digest");
		goto fail;
	}
	if ((res = next_id(sp, w->id, err_r)) != SPOOL_OK)
		goto fail;
	*w_r = w;
	return SPOOL_OK;
fail:
	writer_free(&w, 0);
	return res;
}

const char *spool_writer_id(const struct spool_writer *w)
{
	return w->id;
}

/* writer_flush - the buffer to tmp/<id>, created (O_EXCL) at the first flush:
 * only a message that outgrows the buffer gets a file */
static enum spool_res writer_flush(struct spool_writer *w, char **err_r)
{
	size_t off = 0;

	if (w->fd < 0 && w->flushed == 0) {
		w->fd = openat(w->sp->tmpfd, w->id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd < 0 && errno == EEXIST)
			return spool_fail(err_r, SPOOL_BUSY, "%s/tmp/%s: exists: another process "
					  "drew the same id", w->sp->dir, w->id);
		if (w->fd < 0)
			return spool_fail(err_r, spool_errno_res(errno), "%s/tmp/%s: open: %s",
					  w->sp->dir, w->id, strerror(errno));
		w->has_file = 1;
	}
	while (off < w->blen) {
		ssize_t n = write(w->fd, w->buf + off, w->blen - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			return spool_fail(err_r, spool_errno_res(err), "%s/tmp/%s: write: %s",
					  w->sp->dir, w->id, strerror(err));
		}
		off += (size_t)n;
	}
	w->flushed += w->blen;
	w->blen = 0;
	return SPOOL_OK;
}

/* has_8bit - any octet over 127 in p[0..len) */
static int has_8bit(const unsigned char *p, size_t len)
{
	uint64_t acc = 0, word;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		memcpy(&word, p + i, 8);
		acc |= word;
	}
	for (; i < len; i++)
		acc |= p[i];
	return (acc & UINT64_C(0x8080808080808080)) != 0;
}

enum spool_res spool_writer_write(struct spool_writer *w, const void *data, size_t len,
				  char **err_r)
{
	const unsigned char *p = data;
	enum spool_res res;

	if (w->failed)
		return spool_fail(err_r, SPOOL_INVAL, "%s/tmp/%s: write after a failed write",
				  w->sp->dir, w->id);
	if (len == 0)
		return SPOOL_OK;
	if (EVP_DigestUpdate(w->md, data, len) != 1) {
		w->failed = 1;
		return spool_fail(err_r, SPOOL_IO, "sha256: digest update failed");
	}
	if (!w->eightbit)
		w->eightbit = has_8bit(p, len);
	w->size += len;
	while (len > 0) {
		size_t n = SPOOL_WBUF - w->blen;

		if (n > len)
			n = len;
		memcpy(w->buf + w->blen, p, n);
		w->blen += n;
		p += n;
		len -= n;
		/* flushed only when more follows: a message of exactly 64 KiB
		 * still fits the index */
		if (w->blen == SPOOL_WBUF && len > 0 && (res = writer_flush(w, err_r)) != SPOOL_OK) {
			w->failed = 1;
			return res;
		}
	}
	return SPOOL_OK;
}

static enum spool_res env_check(const struct spool_envelope *env, char **err_r)
{
	if (env == NULL || env->sender == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "envelope: no sender (use \"\" for <>)");
	if ((env->nrcpts == 0 || env->rcpts == NULL) && env->hold_reason == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "envelope: no recipients");
	for (size_t i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i] == NULL || env->rcpts[i][0] == '\0')
			return spool_fail(err_r, SPOOL_INVAL, "envelope: empty recipient %zu", i);
	return SPOOL_OK;
}

/* writer_seal - the digest in hex; a message with a file: flush, fsync and
 * close it.  A message that never left the buffer (inl) has no file: its
 * durable copy is the row of `bodies` written by the commit. */
static enum spool_res writer_seal(struct spool_writer *w, int inl, char digest[65], char **err_r)
{
	static const char lower[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	enum spool_res res;
	int fd;

	if (!inl) {
		if ((res = writer_flush(w, err_r)) != SPOOL_OK)
			return res;
		if (fsync(w->fd) < 0)
			return spool_fail(err_r, spool_errno_res(errno), "%s/tmp/%s: fsync: %s",
					  w->sp->dir, w->id, strerror(errno));
		fd = w->fd;
		w->fd = -1;
		/* close can report a delayed write error (NFS, quota) */
		if (close(fd) < 0)
			return spool_fail(err_r, spool_errno_res(errno), "%s/tmp/%s: close: %s",
					  w->sp->dir, w->id, strerror(errno));
	}
	if (EVP_DigestFinal_ex(w->md, md, &mdlen) != 1 || mdlen != 32)
		return spool_fail(err_r, SPOOL_IO, "sha256: digest final failed");
	for (unsigned int i = 0; i < mdlen; i++) {
		digest[2 * i] = lower[md[i] >> 4];
		digest[2 * i + 1] = lower[md[i] & 0xf];
	}
	digest[2 * mdlen] = '\0';
	return SPOOL_OK;
}

/* writer_publish - tmp/<id> -> msg/<id>, never replacing an existing file */
static enum spool_res writer_publish(struct spool_writer *w, char **err_r)
{
	struct spool *sp = w->sp;
	int rc;

	rc = renameat2(sp->tmpfd, w->id, sp->msgfd, w->id, RENAME_NOREPLACE);
	if (rc < 0 && (errno == EINVAL || errno == ENOSYS))
		rc = renameat(sp->tmpfd, w->id, sp->msgfd, w->id); /* fs without NOREPLACE */
	if (rc < 0 && errno == EEXIST)
		return spool_fail(err_r, SPOOL_BUSY, "%s/msg/%s: exists: another process drew "
				  "the same id", sp->dir, w->id);
	if (rc < 0)
		return spool_fail(err_r, spool_errno_res(errno), "%s/tmp/%s: rename to msg/: %s",
				  sp->dir, w->id, strerror(errno));
	return SPOOL_OK;
}

static void pending_add(struct spool *sp, const struct spool_writer *w, const char *digest,
			const struct spool_envelope *env, int inl)
{
	struct spool_pending *p;

	if (sp->npend == 0)
		sp->pend_since_ms = mono_ms();
	sp->pend_bytes += w->size;
	if (inl)
		sp->pend_mem += w->size;
	if (sp->npend == sp->pendcap) {
		sp->pendcap = sp->pendcap ? sp->pendcap * 2 : 16;
		sp->pend = spool_xrealloc(sp->pend, sp->pendcap, sizeof *sp->pend);
	}
	p = &sp->pend[sp->npend++];
	memset(p, 0, sizeof *p);
	memcpy(p->id, w->id, sizeof p->id);
	p->account = spool_xstrdup(w->account);
	p->uidl = spool_xstrdup(w->uidl);
	p->sender = spool_xstrdup(env->sender);
	p->rcpts = spool_xcalloc(env->nrcpts, sizeof *p->rcpts);
	for (size_t i = 0; i < env->nrcpts; i++)
		p->rcpts[i] = spool_xstrdup(env->rcpts[i]);
	p->nrcpts = env->nrcpts;
	p->hold_reason = env->hold_reason ? spool_xstrdup(env->hold_reason) : NULL;
	p->size = w->size;
	p->inl = inl;
	p->eightbit = w->eightbit;
	p->listed_size = w->listed_size;
	p->dedupe = env->dedupe;
	if (inl) {
		/* still in the writer's buffer (it was never flushed); kept
		 * for the commit, at most 64 KiB per message */
		p->body = malloc(w->size > 0 ? w->size : 1);
		if (p->body == NULL)
			spool_oom();
		memcpy(p->body, w->buf, w->size);
	}
	memcpy(p->digest, digest, sizeof p->digest);
}

void spool_writer_listed_size(struct spool_writer *w, uint64_t size)
{
	w->listed_size = size;
}

enum spool_res spool_writer_finish(struct spool_writer **wp, const struct spool_envelope *env,
				   char **err_r)
{
	struct spool_writer *w = *wp;
	char digest[65];
	enum spool_res res;
	int inl;

	if (w == NULL)
		return spool_fail(err_r, SPOOL_INVAL, "spool_writer_finish: no writer");
	inl = w->flushed == 0; /* the whole message is still in the buffer */
	if (w->failed) {
		res = spool_fail(err_r, SPOOL_IO, "%s/tmp/%s: an earlier write failed",
				 w->sp->dir, w->id);
		goto fail;
	}
	if ((res = env_check(env, err_r)) != SPOOL_OK)
		goto fail;
	if ((res = writer_seal(w, inl, digest, err_r)) != SPOOL_OK)
		goto fail;
	if (!inl && (res = writer_publish(w, err_r)) != SPOOL_OK)
		goto fail;
	pending_add(w->sp, w, digest, env, inl);
	writer_free(wp, 0);
	return SPOOL_OK;
fail:
	writer_free(wp, 1);
	return res;
}

void spool_writer_abort(struct spool_writer **wp)
{
	writer_free(wp, 1);
}

size_t spool_pending(const struct spool *sp)
{
	return sp->npend;
}

int spool_group_full(const struct spool *sp)
{
	if (sp->npend == 0)
		return 0;
	return sp->npend >= SPOOL_GROUP_MSGS || sp->pend_bytes >= SPOOL_GROUP_BYTES ||
	       sp->pend_mem >= SPOOL_GROUP_MEM_BYTES ||
	       mono_ms() - sp->pend_since_ms >= SPOOL_GROUP_MS;
}

enum spool_res spool_history_add(struct spool *sp, const char *id, time_t now, const char *state,
				 const char *reply, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	if ((res = spool_stmt(sp, SQ_INS_HIST, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
	sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
	if (reply != NULL)
		sqlite3_bind_text(st, 4, reply, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "insert history", err_r);
	return SPOOL_OK;
}

/* insert_body - the inline message's durable copy, in the transaction */
static enum spool_res insert_body(struct spool *sp, const struct spool_pending *p, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	if ((res = spool_stmt(sp, SQ_INS_BODY, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, p->body, (int)p->size, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "insert body", err_r);
	return SPOOL_OK;
}

/* ---- group commit ---- */

/* insert_conflict - the message row hit a UNIQUE constraint (only that
 * statement was undone): (account, uidl) already committed by another
 * process -> SPOOL_DUP; the id drawn by another process too -> SPOOL_BUSY
 * (not committed, stays on the server).  Its file, if any, is ours: it was
 * renamed with NOREPLACE. */
static enum spool_res insert_conflict(struct spool *sp, struct spool_pending *p,
				      const char *why, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int known, rc;

	if ((res = spool_uidl_known(sp, p->account, p->uidl, &known, err_r)) != SPOOL_OK)
		return res;
	if (known) {
		p->res = SPOOL_DUP;
		return SPOOL_OK;
	}
	if ((res = spool_stmt(sp, SQ_ID_KNOWN, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW) {
		p->res = SPOOL_BUSY;
		return SPOOL_OK;
	}
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "id lookup", err_r);
	return spool_fail(err_r, SPOOL_IO, "index.db: insert message %s: %s", p->id, why);
}

static enum spool_res insert_pending(struct spool *sp, struct spool_pending *p, time_t now,
				     char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	/* checked under BEGIN IMMEDIATE, so nobody can insert in between: an
	 * operator's delete (tombstone) here, a copy already committed by
	 * another process by the UNIQUE constraints of the insert */
	if ((res = spool_stmt(sp, SQ_TOMB_KNOWN, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->account, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, p->uidl, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "tombstone lookup", err_r);
	p->res = rc == SQLITE_ROW ? SPOOL_DUP : SPOOL_OK;
	if (p->res == SPOOL_DUP)
		return SPOOL_OK;
	if ((res = spool_dedupe_check(sp, p, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_stmt(sp, SQ_INS_MSG, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, p->account, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, p->uidl, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)p->size);
	sqlite3_bind_text(st, 5, p->digest, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, p->sender, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)now);
	sqlite3_bind_text(st, 8, p->dup_of[0] ? "duplicate" : p->hold_reason ? "held" : "queued",
			  -1, SQLITE_STATIC);
	if (p->dup_of[0])
		sqlite3_bind_text(st, 13, p->dup_of, -1, SQLITE_STATIC);
	if (p->hold_reason != NULL)
		sqlite3_bind_text(st, 9, p->hold_reason, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 9);
	sqlite3_bind_int(st, 10, p->inl);
	sqlite3_bind_int(st, 11, p->eightbit);
	if (p->listed_size > 0 && p->listed_size <= INT64_MAX)
		sqlite3_bind_int64(st, 12, (sqlite3_int64)p->listed_size);
	else
		sqlite3_bind_null(st, 12);
	rc = sqlite3_step(st);
	if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		char why[256];

		snprintf(why, sizeof why, "%s", sqlite3_errmsg(sp->db));
		sqlite3_reset(st);
		return insert_conflict(sp, p, why, err_r);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "insert message", err_r);
	for (size_t i = 0; i < p->nrcpts; i++) {
		if ((res = spool_stmt(sp, SQ_INS_RCPT, &st, err_r)) != SPOOL_OK)
			return res;
		sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, p->rcpts[i], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, p->hold_reason ? "held" : "queued", -1, SQLITE_STATIC);
		if (p->hold_reason != NULL)
			sqlite3_bind_text(st, 4, p->hold_reason, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 4);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return spool_dbfail(sp, rc, "insert recipient", err_r);
	}
	if (p->inl && (res = insert_body(sp, p, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_dedupe_record(sp, p, now, err_r)) != SPOOL_OK)
		return res;
	/* a queued message's fetch is its `created` (spool_history); only a
	 * hold at fetch needs a row, for its reason */
	if (p->hold_reason == NULL)
		return SPOOL_OK;
	return spool_history_add(sp, p->id, now, "fetched-held", p->hold_reason, err_r);
}

/* commit_tx - insert every pending row in one transaction.  *uncertain_r is
 * set when COMMIT itself failed after SQLite ended the transaction (I/O
 * error): the rows may be durable, so their files must stay for recovery. */
static enum spool_res commit_tx(struct spool *sp, int *uncertain_r, char **err_r)
{
	time_t now = time(NULL);
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	*uncertain_r = 0;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin commit", err_r)) != SPOOL_OK)
		return res;
	for (size_t i = 0; i < sp->npend; i++) {
		if ((res = insert_pending(sp, &sp->pend[i], now, err_r)) != SPOOL_OK) {
			spool_rollback(sp);
			return res;
		}
	}
	if ((res = spool_stmt(sp, SQ_COMMIT, &st, err_r)) != SPOOL_OK) {
		spool_rollback(sp);
		return res;
	}
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return SPOOL_OK;
	res = spool_dbfail(sp, rc, "commit", err_r);
	if (sqlite3_get_autocommit(sp->db) == 0)
		spool_rollback(sp); /* still open (busy): the rollback is certain */
	else
		*uncertain_r = 1;
	return res;
}

/* commit_run - make sp's pending group durable: one directory fsync for
 * the renames of its files (in-index messages need none), one transaction.
 * Leaves the group in sp->pend for commit_done. */
static enum spool_res commit_run(struct spool *sp, int *uncertain_r, char **err_r)
{
	int files = 0;

	*uncertain_r = 0;
	for (size_t i = 0; i < sp->npend; i++)
		files += !sp->pend[i].inl;
	if (files > 0 && fsync(sp->msgfd) < 0)
		return spool_fail(err_r, spool_errno_res(errno), "%s/msg: fsync: %s", sp->dir,
				  strerror(errno));
	return commit_tx(sp, uncertain_r, err_r);
}

/* commit_done - after commit_run: on failure forget the group (removing its
 * files unless the commit may have happened); on success remove the files
 * of messages reported DUP or BUSY, and report each message to cb */
static void commit_done(struct spool *sp, enum spool_res res, int uncertain, spool_commit_cb cb,
			void *ctx)
{
	struct spool_pending *pend;
	size_t n;

	if (res != SPOOL_OK) {
		pending_clear(sp, !uncertain);
		return;
	}
	/* detach first: a callback may start the next group */
	pend = sp->pend;
	n = sp->npend;
	sp->pend = NULL;
	sp->npend = sp->pendcap = 0;
	sp->pend_bytes = 0;
	sp->pend_mem = 0;
	for (size_t i = 0; i < n; i++)
		if (pend[i].res != SPOOL_OK && !pend[i].inl)
			(void)unlinkat(sp->msgfd, pend[i].id, 0);
	for (size_t i = 0; i < n; i++) {
		if (cb != NULL)
			cb(ctx, pend[i].account, pend[i].uidl, pend[i].id, pend[i].res);
		pending_clear_one(&pend[i]);
	}
	free(pend);
}

enum spool_res spool_commit(struct spool *sp, spool_commit_cb cb, void *ctx, char **err_r)
{
	enum spool_res res;
	int uncertain = 0;

	/* a group in flight first, reported like this one */
	if ((res = spool_commit_finish(sp, cb, ctx, err_r)) != SPOOL_OK)
		return res;
	if (sp->npend == 0)
		return SPOOL_OK;
	res = commit_run(sp, &uncertain, err_r);
	commit_done(sp, res, uncertain, cb, ctx);
	return res;
}

/* ---- the commit thread ---- */

static void *commit_thread(void *arg)
{
	struct spool *csp = arg;

	csp->cres = commit_run(csp, &csp->cuncertain, &csp->cerr);
	return NULL;
}

/* commit_handle - the commit thread's own handle: the same tree and file
 * descriptors, its own SQLite connection (a connection is never used by
 * two threads at once) */
static enum spool_res commit_handle(struct spool *sp, char **err_r)
{
	struct spool *csp;
	enum spool_res res;

	if (sp->csp != NULL)
		return SPOOL_OK;
	csp = spool_xcalloc(1, sizeof *csp);
	csp->dir = sp->dir;
	csp->rootfd = csp->tmpfd = csp->jfd = -1; /* not its own: never closed */
	csp->msgfd = sp->msgfd;
	csp->is_commit_handle = 1;
	csp->keep_sent_days = sp->keep_sent_days; /* a duplicate's retention */
	if ((res = open_db(csp, err_r)) != SPOOL_OK) {
		commit_handle_free(csp);
		return res;
	}
	/* this connection only inserts a message's rows after the message row
	 * itself, in one transaction: the foreign key checks could never fail
	 * (the ON DELETE CASCADEs of the other handles stay on) */
	if (sqlite3_exec(csp->db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL) != SQLITE_OK) {
		res = spool_dbfail(csp, SQLITE_ERROR, "pragmas", err_r);
		commit_handle_free(csp);
		return res;
	}
	sp->csp = csp;
	return SPOOL_OK;
}

static void commit_handle_free(struct spool *csp)
{
	if (csp == NULL)
		return;
	for (int i = 0; i < SQ__COUNT; i++)
		sqlite3_finalize(csp->sq[i]);
	if (csp->db != NULL)
		sqlite3_close(csp->db);
	free(csp->pend);
	spool_dedupe_release(csp);
	free(csp);
}

enum spool_res spool_commit_start(struct spool *sp, char **err_r)
{
	struct spool *csp;
	enum spool_res res;
	int rc;

	if (sp->commit_live)
		return spool_fail(err_r, SPOOL_INVAL, "spool_commit_start: a commit is in flight");
	if (sp->npend == 0)
		return SPOOL_OK;
	if ((res = commit_handle(sp, err_r)) != SPOOL_OK)
		return res;
	csp = sp->csp;
	if (csp->defer_ckpt != sp->defer_ckpt)
		spool_defer_checkpoints(csp, sp->defer_ckpt);
	/* the group moves to the commit handle; sp starts the next one (the
	 * array of an earlier failed group, emptied by commit_done, goes) */
	free(csp->pend);
	csp->pend = sp->pend;
	csp->npend = sp->npend;
	csp->pendcap = sp->pendcap;
	csp->pend_bytes = sp->pend_bytes;
	csp->pend_mem = sp->pend_mem;
	sp->pend = NULL;
	sp->npend = sp->pendcap = 0;
	sp->pend_bytes = 0;
	sp->pend_mem = 0;
	csp->cres = SPOOL_OK;
	csp->cuncertain = 0;
	csp->cerr = NULL;
	rc = pthread_create(&sp->commit_thr, NULL, commit_thread, csp);
	if (rc != 0) {
		/* no thread: commit here, the result waits for finish */
		csp->cres = commit_run(csp, &csp->cuncertain, &csp->cerr);
		sp->commit_joined = 1;
	} else {
		sp->commit_joined = 0;
	}
	sp->commit_live = 1;
	return SPOOL_OK;
}

int spool_commit_in_flight(const struct spool *sp)
{
	return sp->commit_live;
}

enum spool_res spool_commit_finish(struct spool *sp, spool_commit_cb cb, void *ctx,
				   char **err_r)
{
	struct spool *csp = sp->csp;
	enum spool_res res;

	if (!sp->commit_live)
		return SPOOL_OK;
	if (!sp->commit_joined)
		pthread_join(sp->commit_thr, NULL);
	sp->commit_live = 0;
	res = csp->cres;
	commit_done(csp, res, csp->cuncertain, cb, ctx);
	if (res != SPOOL_OK && err_r != NULL)
		*err_r = csp->cerr;
	else
		free(csp->cerr);
	csp->cerr = NULL;
	return res;
}

/* ---- relay ---- */

static enum spool_res claim_select(struct spool *sp, time_t now, size_t max,
				   struct spool_msg ***msgs_r, size_t *n_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	size_t cap = 0;
	int rc;

	if ((res = spool_stmt(sp, SQ_CLAIM_SEL, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 2, max > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n_r == cap) {
			cap = cap ? cap * 2 : 16;
			*msgs_r = spool_xrealloc(*msgs_r, cap, sizeof **msgs_r);
		}
		(*msgs_r)[(*n_r)++] = spool_msg_from_row(sp, st);
	}
	/* all rows are read before any is updated: no update under a live cursor */
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "claim select", err_r);
	return SPOOL_OK;
}

static enum spool_res claim_one(struct spool *sp, struct spool_msg *m, time_t now,
				char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	if ((res = spool_stmt(sp, SQ_CLAIM_UPD, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
	sqlite3_bind_text(st, 3, sp->jname, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "claim update", err_r);
	/* returned with their state before the claim (queued/deferred) */
	if ((res = spool_stmt(sp, SQ_RCPT_TODO, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	if ((res = rcpts_from_stmt(sp, st, m, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_stmt(sp, SQ_RCPT_SENDING, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "claim recipients", err_r);
	m->state = SPOOL_SENDING;
	m->attempts++;
	m->updated = now;
	return SPOOL_OK;
}

enum spool_res spool_claim_due(struct spool *sp, time_t now, size_t max,
			       struct spool_msg ***msgs_r, size_t *n_r, char **err_r)
{
	struct spool_msg **msgs = NULL;
	enum spool_res res;
	size_t n = 0;

	*msgs_r = NULL;
	*n_r = 0;
	if (max == 0)
		return SPOOL_OK;
	/* the claims name this handle's journal, locked while it lives: a
	 * claim whose lock is free belongs to a dead relay (spool_reclaim) */
	if ((res = spool_journal_ensure(sp, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_exec_sq(sp, SQ_SYNC_NORMAL, "claim", err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin claim", err_r)) != SPOOL_OK)
		goto out;
	res = claim_select(sp, now, max, &msgs, &n, err_r);
	size_t bytes = 0;
	for (size_t i = 0; res == SPOOL_OK && i < n; i++) {
		res = claim_one(sp, msgs[i], now, err_r);
		/* the bodies with the claim: one read transaction, not one per
		 * message in the middle of the SMTP session */
		if (res == SPOOL_OK && msgs[i]->in_index &&
		    bytes + msgs[i]->size <= SPOOL_CLAIM_BODY_BYTES) {
			res = spool_body_get(sp, msgs[i]->id, &msgs[i]->body, &msgs[i]->body_len,
					     err_r);
			bytes += msgs[i]->body_len;
		}
	}
	if (res == SPOOL_OK)
		res = spool_exec_sq(sp, SQ_COMMIT, "commit claim", err_r);
out:
	if (res != SPOOL_OK)
		spool_rollback(sp);
	/* every other commit of this handle stays fsync'd */
	(void)spool_exec_sq(sp, SQ_SYNC_FULL, "claim", NULL);
	if (res != SPOOL_OK) {
		spool_msgs_free(&msgs, n);
		return res;
	}
	*msgs_r = msgs;
	*n_r = n;
	return SPOOL_OK;
}

/* rcpt_final - what a recipient row becomes: the relay's verdict, or the
 * message's outcome for a recipient it left undecided ('sending' is never
 * stored) */
static enum spool_state rcpt_final(const struct spool_rcpt *r, enum spool_state msg_state)
{
	if (r->state == SPOOL_SENT || r->state == SPOOL_DEFERRED || r->state == SPOOL_HELD)
		return r->state;
	return msg_state;
}

static enum spool_res finish_rcpts(struct spool *sp, const struct spool_outcome *o,
				   char **err_r)
{
	const struct spool_msg *m = o->msg;
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	for (size_t i = 0; i < m->nrcpts; i++) {
		const struct spool_rcpt *r = &m->rcpts[i];

		if ((res = spool_stmt(sp, SQ_RCPT_FINISH, &st, err_r)) != SPOOL_OK)
			return res;
		sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->addr, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, spool_state_name(rcpt_final(r, o->state)), -1,
				  SQLITE_STATIC);
		if (r->reply != NULL)
			sqlite3_bind_text(st, 4, r->reply, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return spool_dbfail(sp, rc, "finish recipient", err_r);
	}
	return SPOOL_OK;
}

static enum spool_res finish_one(struct spool *sp, const struct spool_outcome *o, time_t now,
				 char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	if ((res = spool_stmt(sp, SQ_MSG_FINISH, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, o->msg->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, spool_state_name(o->state), -1, SQLITE_STATIC);
	if (o->reply != NULL)
		sqlite3_bind_text(st, 3, o->reply, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)o->next_attempt);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "finish message", err_r);
	if (sqlite3_changes(sp->db) != 1)
		return spool_fail(err_r, SPOOL_NOTFOUND, "index.db: finish message: %s: no such "
				  "message", o->msg->id);
	if ((res = finish_rcpts(sp, o, err_r)) != SPOOL_OK)
		return res;
	if ((res = spool_history_add(sp, o->msg->id, now, spool_state_name(o->state), o->reply,
				     err_r)) != SPOOL_OK)
		return res;
	if (o->state != SPOOL_SENT)
		return SPOOL_OK;
	/* sent: the file goes now (with its inline body), or is retained */
	if ((res = spool_stmt(sp, sp->keep_sent_days > 0 ? SQ_INS_RETAINED : SQ_DEL_BODY, &st,
			      err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, o->msg->id, -1, SQLITE_STATIC);
	if (sp->keep_sent_days > 0)
		sqlite3_bind_int64(st, 2, (sqlite3_int64)now + (sqlite3_int64)sp->keep_sent_days * 86400);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return spool_dbfail(sp, rc, "finish retention", err_r);
	return SPOOL_OK;
}

/* finish_apply - mirror the committed outcome in memory, drop sent files */
static void finish_apply(struct spool *sp, struct spool_outcome *o, time_t now)
{
	struct spool_msg *m = o->msg;

	for (size_t i = 0; i < m->nrcpts; i++)
		m->rcpts[i].state = rcpt_final(&m->rcpts[i], o->state);
	m->state = o->state;
	m->updated = now;
	if (o->state == SPOOL_DEFERRED)
		m->next_attempt = o->next_attempt;
	free(m->last_reply);
	m->last_reply = o->reply ? spool_xstrdup(o->reply) : NULL;
	/* a failed unlink leaves an orphan that recovery removes: the row says sent */
	if (o->state == SPOOL_SENT && sp->keep_sent_days == 0 && !m->in_index)
		(void)unlinkat(sp->msgfd, m->id, 0);
}

enum spool_res spool_finish_attempts(struct spool *sp, struct spool_outcome *outs, size_t n,
				     char **err_r)
{
	time_t now = time(NULL);
	enum spool_res res;

	for (size_t i = 0; i < n; i++) {
		enum spool_state st = outs[i].state;

		if (outs[i].msg == NULL ||
		    (st != SPOOL_SENT && st != SPOOL_DEFERRED && st != SPOOL_HELD))
			return spool_fail(err_r, SPOOL_INVAL, "outcome %zu: no message or state "
					  "not sent/deferred/held", i);
	}
	if (n == 0)
		return SPOOL_OK;
	if ((res = spool_exec_sq(sp, SQ_BEGIN, "begin finish", err_r)) != SPOOL_OK)
		return res;
	for (size_t i = 0; res == SPOOL_OK && i < n; i++)
		res = finish_one(sp, &outs[i], now, err_r);
	if (res == SPOOL_OK)
		res = spool_exec_sq(sp, SQ_COMMIT, "commit finish", err_r);
	if (res != SPOOL_OK) {
		spool_rollback(sp);
		return res;
	}
	spool_journal_reset(sp);
	for (size_t i = 0; i < n; i++)
		finish_apply(sp, &outs[i], now);
	/* retained files whose time is up go with the relay's rounds, at
	 * most once a minute; a failure here is retried then (or by recovery) */
	if (sp->keep_sent_days > 0 && now - sp->last_purge >= 60) {
		sp->last_purge = now;
		(void)spool_purge_sent(sp, now, NULL, NULL);
	}
	return SPOOL_OK;
}

enum spool_res spool_body_get(struct spool *sp, const char *id, unsigned char **body_r,
			      size_t *len_r, char **err_r)
{
	sqlite3_stmt *st = NULL;
	enum spool_res res;
	int rc;

	*body_r = NULL;
	*len_r = 0;
	if ((res = spool_stmt(sp, SQ_GET_BODY, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		size_t len = (size_t)sqlite3_column_bytes(st, 0);
		const void *b = sqlite3_column_blob(st, 0);

		*body_r = malloc(len > 0 ? len : 1);
		if (*body_r == NULL)
			spool_oom();
		if (len > 0)
			memcpy(*body_r, b, len);
		*len_r = len;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return spool_fail(err_r, SPOOL_NOTFOUND, "index.db: message %s: no body in the "
				  "index", id);
	if (rc != SQLITE_ROW)
		return spool_dbfail(sp, rc, "read body", err_r);
	return SPOOL_OK;
}

enum spool_res spool_msg_open(struct spool *sp, const struct spool_msg *m, int *fd_r,
			      char **err_r)
{
	unsigned char *body = NULL;
	enum spool_res res;
	size_t len = 0, off = 0;
	int fd;

	*fd_r = -1;
	if (!m->in_index) {
		fd = openat(sp->msgfd, m->id, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return spool_fail(err_r, errno == ENOENT ? SPOOL_NOTFOUND : SPOOL_IO,
					  "%s: open: %s", m->path, strerror(errno));
		*fd_r = fd;
		return SPOOL_OK;
	}
	if ((res = spool_body_get(sp, m->id, &body, &len, err_r)) != SPOOL_OK)
		return res;
	fd = memfd_create("popgate-body", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		res = spool_fail(err_r, SPOOL_IO, "memfd_create: %s", strerror(errno));
		goto out;
	}
	while (off < len) {
		ssize_t n = write(fd, body + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			res = spool_fail(err_r, SPOOL_IO, "memfd write: %s",
					 n < 0 ? strerror(errno) : "short write");
			goto out;
		}
		off += (size_t)n;
	}
	/* sealed: the reader cannot change what it was given */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
	    lseek(fd, 0, SEEK_SET) < 0) {
		res = spool_fail(err_r, SPOOL_IO, "memfd seal: %s", strerror(errno));
		goto out;
	}
	*fd_r = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(body);
	return res;
}

enum spool_res spool_fork_prepare(struct spool *sp, char **err_r)
{
	if (sp->commit_live)
		return spool_fail(err_r, SPOOL_INVAL, "spool_fork_prepare: a commit is in flight");
	spool_checkpoint_in_background(sp, 0);
	commit_handle_free(sp->csp);
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
	if ((res = open_db(sp, err_r)) != SPOOL_OK)
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
