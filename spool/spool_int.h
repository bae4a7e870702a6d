/*
 * spool_int.h - internals shared by the spool library's own files.
 * Not for the poller or the relay: they use spool.h only.
 */
#ifndef POPGATE_SPOOL_INT_H
#define POPGATE_SPOOL_INT_H

struct spool_migration {
	unsigned int version;  /* the file's number: PRAGMA user_version after it */
	const char *name;      /* file name, for error messages */
	const char *sql;
};

extern const struct spool_migration spool_migrations[];
extern const unsigned int spool_nmigrations;

/* Everything below needs the full library headers; schema_sql.c (generated)
 * only needs the migration table above. */
#ifdef POPGATE_SPOOL_H
#include <pthread.h>

#include <openssl/evp.h>
#include <sqlite3.h>

/* Cached prepared statements, prepared on first use (SQLITE_PREPARE_PERSISTENT)
 * and kept until spool_close().  Keep in step with the table in spool.c. */
enum spool_sq {
	SQ_BEGIN = 0,
	SQ_COMMIT,
	SQ_ROLLBACK,
	SQ_UIDL_KNOWN,
	SQ_ID_KNOWN,
	SQ_TOMB_KNOWN,
	SQ_INS_MSG,
	SQ_INS_RCPT,
	SQ_CLAIM_SEL,
	SQ_CLAIM_UPD,
	SQ_RCPT_TODO,
	SQ_MSG_FINISH,
	SQ_RCPT_FINISH,
	SQ_RCPT_ALL,
	SQ_GET,
	SQ_INS_BODY,
	SQ_INS_HIST,
	SQ_DEL_BODY,
	SQ_INS_RETAINED,
	SQ_GET_BODY,
	SQ_SYNC_NORMAL,
	SQ_SYNC_FULL,
	SQ_DEDUPE_FIND,
	SQ_DEDUPE_ADD,
	SQ_DEDUPE_FIND_NEW,
	SQ_DEDUPE_BLOOM_GEN,
	SQ__COUNT
};

/* A finished message waiting for spool_commit(). */
struct spool_pending {
	char id[SPOOL_ID_LEN + 1];
	char *account;
	char *uidl;
	char *sender;
	char **rcpts;
	size_t nrcpts;
	uint64_t size;
	char digest[65];
	char *hold_reason;  /* NULL, or commit as held with this reply */
	int inl;            /* small: no file, stored as a row of `bodies` */
	int eightbit;       /* an octet > 127 */
	uint64_t listed_size; /* LIST size, 0 unknown */
	unsigned char *body; /* inl: the message (size octets), for the commit */
	struct spool_dedupe *dedupe; /* the caller's (envelope), or NULL */
	char dup_of[SPOOL_ID_LEN + 1]; /* "" or the original (spool_dedupe_check) */
	enum spool_res res; /* SPOOL_OK or SPOOL_DUP, decided inside the commit */
};

struct spool {
	char *dir;          /* absolute (realpath at open) */
	int rootfd;         /* flock'd: LOCK_EX while recovering, then LOCK_SH */
	int tmpfd;
	int msgfd;          /* kept open: fsync'd once per commit */
	uint32_t id_next;   /* low half of the next message id (random start) */
	int id_seeded;
	EVP_MD *sha256;     /* fetched once */
	struct spool_writer *spare; /* a finished writer, reused (its buffer) */
	/* spool_checkpoint_in_background: the checkpoint thread */
	int bg_ckpt;
	pthread_t ck_thr;
	pthread_mutex_t ck_mu;
	pthread_cond_t ck_cv;
	int ck_want, ck_stop;
	int jfd;            /* the relay journal (spool_journal.c), -1: none yet */
	int jdirty;         /* it holds entries not yet in the index */
	char jname[64];
	int defer_ckpt;     /* spool_defer_checkpoints() */
	int batch;          /* spool_batch_begin(): a transaction of ours is open */
	/* spool_commit_start: the group in flight lives in csp, a second handle
	 * on the same tree with its own connection, used by the thread only */
	struct spool *csp;
	pthread_t commit_thr;
	int commit_live;    /* a commit is in flight (or done, not finished) */
	int commit_joined;  /* it ran without a thread: nothing to join */
	int is_commit_handle;
	enum spool_res cres; /* csp: the thread's result */
	int cuncertain;
	char *cerr;
	int ckpt_close_off; /* NO_CKPT_ON_CLOSE was set */
	sqlite3 *db;
	sqlite3_stmt *sq[SQ__COUNT];
	struct spool_pending *pend;
	size_t npend, pendcap;
	uint64_t pend_bytes;     /* octets of the pending group */
	uint64_t pend_mem;       /* of them in memory (in-index bodies) */
	int64_t pend_since_ms;   /* CLOCK_MONOTONIC ms of its first message */
	int64_t busy_since_ms;   /* busy_wait: when this wait began */
	int keep_sent_days;      /* retention of sent files (spool_params) */
	time_t last_purge;       /* last spool_purge_sent() by finish_attempts */
	struct spool_recovery rec;
	/* spool_dedupe.c: this handle's copy of the Bloom filter of `dedupe` */
	unsigned char *dd_bits;
	uint64_t dd_nbits;       /* 0: none loaded */
	int64_t dd_gen;
	/* per commit transaction (commit_tx clears dd_tx): the filter and
	 * whether `dedupe` is empty are read once, not per message; under the
	 * write lock neither can change until the commit */
	int dd_tx;
	int dd_big_empty;
};

/* Columns every message SELECT returns, in this order (see spool_msg_from_row). */
#define SPOOL_MSG_COLS \
	"id, account, uidl, size, digest, sender, state, attempts, next_attempt, " \
	"created, updated, last_reply, in_index, eightbit, duplicate_of"

/* The relay's claim: due messages, oldest first (created, then rowid: commit
 * order within a second).  Fresh queued rows (next_attempt 0, nearly all of
 * a drain) are read in the order of their index entries, which is rowid
 * order, and only as many as the claim takes: sorting every due row to
 * keep the first few made each claim cost the whole queue (a 10,000-message
 * drain read 200,000 rows in 40 claims of 256).  Other queued rows (a
 * requeue after a crash keeps next_attempt) and due deferred ones are few
 * and read whole.  All are then ordered by (created, rowid). */
#define SPOOL_CLAIM_COLS_R SPOOL_MSG_COLS ", rowid AS r FROM messages WHERE "
#define SPOOL_CLAIM_SEL_SQL \
	"SELECT " SPOOL_MSG_COLS " FROM (" \
	"SELECT * FROM (SELECT " SPOOL_CLAIM_COLS_R "state = 'queued' AND next_attempt = 0 " \
	"ORDER BY rowid LIMIT ?2) " \
	"UNION ALL SELECT " SPOOL_CLAIM_COLS_R "state = 'queued' AND next_attempt > 0 " \
	"UNION ALL SELECT " SPOOL_CLAIM_COLS_R "state = 'queued' AND next_attempt < 0 " \
	"UNION ALL SELECT " SPOOL_CLAIM_COLS_R "state = 'deferred' AND next_attempt <= ?1" \
	") ORDER BY created, r LIMIT ?2"

/* allocation: abort with a message on failure (never NULL) */
void spool_oom(void) __attribute__((noreturn));
void *spool_xcalloc(size_t n, size_t size);
void *spool_xrealloc(void *p, size_t n, size_t size);
char *spool_xstrdup(const char *s);

/* spool_fail - set *err_r (if err_r) to a formatted message, return res */
enum spool_res spool_fail(char **err_r, enum spool_res res, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* spool_errno_res - ENOSPC/EDQUOT -> SPOOL_FULL, else SPOOL_IO */
enum spool_res spool_errno_res(int err);
/* spool_dbfail - map a SQLite result code, message "index.db: <step>: <errmsg>" */
enum spool_res spool_dbfail(struct spool *sp, int rc, const char *step, char **err_r);

/* spool_mono_ms - CLOCK_MONOTONIC in milliseconds */
int64_t spool_mono_ms(void);
/* spool_open_db - open sp's index.db connection with the spool's pragmas */
enum spool_res spool_open_db(struct spool *sp, char **err_r);
/* spool_ingest.c: the pending group (unlink_files: their tmp files too), the
 * commit thread's handle, the reusable writer */
void spool_pending_clear(struct spool *sp, int unlink_files);
void spool_commit_handle_free(struct spool *csp);
void spool_writer_spare_free(struct spool *sp);
/* spool_rcpts_from_stmt - append every row (addr, state, last_reply) of st to m */
enum spool_res spool_rcpts_from_stmt(struct spool *sp, sqlite3_stmt *st, struct spool_msg *m,
				     char **err_r);
/* spool_stmt - the cached statement q, reset and unbound, ready to bind */
enum spool_res spool_stmt(struct spool *sp, enum spool_sq q, sqlite3_stmt **st_r,
			  char **err_r);
/* spool_exec_sq - run a cached statement without parameters (BEGIN etc.) */
enum spool_res spool_exec_sq(struct spool *sp, enum spool_sq q, const char *step,
			     char **err_r);
/* spool_rollback - end a failed transaction; its own errors are secondary */
void spool_rollback(struct spool *sp);

int spool_state_from_text(const unsigned char *s, enum spool_state *st_r);
int spool_id_valid(const char *id);
/* spool_msg_from_row - a spool_msg from a row of SPOOL_MSG_COLS (no rcpts) */
struct spool_msg *spool_msg_from_row(struct spool *sp, sqlite3_stmt *st);
/* spool_load_rcpts - fill m->rcpts with every recipient row of m */
enum spool_res spool_load_rcpts(struct spool *sp, struct spool_msg *m, char **err_r);

/* spool_history_add - one history row (inside the caller's transaction) */
enum spool_res spool_history_add(struct spool *sp, const char *id, time_t now, const char *state,
				 const char *reply, char **err_r);
/* spool_purge_tx - inside the caller's transaction: forget the retention of
 * messages whose time is up (*purged_r of them; their bodies go here);
 * *ids_r gets the ids of those with files (the caller unlinks them after
 * the commit) */
enum spool_res spool_purge_tx(struct spool *sp, time_t now, char ***ids_r, size_t *n_r,
			      unsigned int *purged_r, char **err_r);

/* spool_journal_ensure - create and lock this handle's journal if it has
 * none yet (before its first claim: the claims name it) */
enum spool_res spool_journal_ensure(struct spool *sp, char **err_r);
/* spool_journal_is_name - 1 if name has the form of a journal's file name */
int spool_journal_is_name(const char *name);
/* spool_journal_apply - inside the caller's transaction: apply the journal
 * `name` to the `sending` messages claimed as `claim` (NULL: any claim),
 * then mark sent those messages with nothing left to do */
enum spool_res spool_journal_apply(struct spool *sp, time_t now, const char *name,
				   const char *claim, char **err_r);
/* spool_journal_reset - after an fsync'd finish: the journal's entries are
 * recorded; empty it */
void spool_journal_reset(struct spool *sp);
/* spool_journal_close - close it; removed unless entries may be unrecorded */
void spool_journal_close(struct spool *sp);
/* spool_journal_recover - inside recovery's transaction, before `sending`
 * rows are requeued: apply every relay journal; *names_r (malloc'd) gets
 * their names, removed by the caller after the commit */
enum spool_res spool_journal_recover(struct spool *sp, time_t now, char ***names_r,
				     size_t *n_r, char **err_r);

/* Duplicate detection (spool_dedupe.c), inside the commit's transaction.
 * The lookup: the account's earliest key within the window, a search of
 * the primary key of each of the two key tables (merged and recent). */
#define SPOOL_DEDUPE_ARM(t) \
	"SELECT msg_id, created FROM (SELECT msg_id, created FROM " t " WHERE account = ?1 " \
	"AND kind = ?2 AND key = ?3 AND created >= ?4 ORDER BY created LIMIT 1)"
#define SPOOL_DEDUPE_FIND_SQL \
	"SELECT msg_id FROM (" SPOOL_DEDUPE_ARM("dedupe") " UNION ALL " \
	SPOOL_DEDUPE_ARM("dedupe_new") ") ORDER BY created LIMIT 1"
/* when the Bloom filter of dedupe excludes the key */
#define SPOOL_DEDUPE_FIND_NEW_SQL SPOOL_DEDUPE_ARM("dedupe_new")
#define SPOOL_DEDUPE_BLOOM_GEN_SQL "SELECT gen FROM dedupe_bloom WHERE id = 1"
#define SPOOL_DEDUPE_ADD_SQL \
	"INSERT OR IGNORE INTO dedupe_new (account, kind, key, created, msg_id) " \
	"VALUES (?1, ?2, ?3, ?4, ?5)"
/* spool_dedupe_release - free the handle's copy of the Bloom filter */
void spool_dedupe_release(struct spool *sp);
/* spool_dedupe_check - before p's row is inserted: p->dup_of = the id of
 * an earlier copy within the window, or "" */
enum spool_res spool_dedupe_check(struct spool *sp, struct spool_pending *p, char **err_r);
/* spool_dedupe_record - after p's rows are inserted: an original's keys
 * join the table; a duplicate gets its history row and the retention of a
 * sent message, and the caller's dedupe->dup_of_r is set */
enum spool_res spool_dedupe_record(struct spool *sp, struct spool_pending *p, time_t now,
				   char **err_r);

/* spool_recovery_clear - free and zero sp->rec */
void spool_recovery_clear(struct spool *sp);
/* spool_recover - the recovery table of spool.h, run by spool_open() while
 * holding the exclusive lock; fills sp->rec */
enum spool_res spool_recover(struct spool *sp, char **err_r);
/* spool_recover_guard - before migrating from user_version 0: refuse if
 * msg/ already holds files (the index was lost; recovery would delete mail) */
enum spool_res spool_recover_guard(struct spool *sp, unsigned int user_version,
				   char **err_r);
#endif

#endif
