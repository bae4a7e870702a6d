/*
 * spool.h - the durable message spool: message files plus a SQLite index.
 *
 * The spool is the only thing the poller and the relay share, and this
 * library is the only code that includes sqlite3.h.
 *
 * Layout under the spool root:
 *   tmp/<id>      a large message being written (created O_EXCL)
 *   msg/<id>      committed large message files (canonical CRLF, our
 *                 Received first)
 *   index.db      SQLite index (WAL, synchronous=FULL, busy timeout); small
 *                 messages live here only (table bodies)
 *
 * Contract:
 *  - Every function returns enum spool_res; on anything but SPOOL_OK it sets
 *    *err_r to a malloc'd message naming the file or the SQL step, which the
 *    caller frees.  SPOOL_BUSY is "try again" (locked database), SPOOL_FULL
 *    "no space left", SPOOL_IO any other failure.
 *  - Ingest order (invariant 1): spool_writer_begin() picks the id;
 *    spool_writer_write() buffers; a message that outgrows the 64 KiB buffer
 *    is written to tmp/<id> (created O_EXCL at the first flush), and
 *    spool_writer_finish() fsyncs that file and renames it into msg/.  A
 *    message that fits the buffer never gets a file: finish keeps it in
 *    memory and the commit stores it as a row of `bodies` (in_index).
 *    Either way it is then "pending"; spool_commit() fsyncs msg/ once (if a
 *    file was renamed) and inserts the index rows of every pending message
 *    in one BEGIN IMMEDIATE transaction.  Only when spool_commit() reports a
 *    message SPOOL_OK (or SPOOL_DUP) may the caller DELE it.  A message whose
 *    finish or commit failed is not in the spool (its file is removed or
 *    left for recovery) and must not be deleted from the server.
 *  - (account, uidl) is unique: spool_uidl_known() says whether a message
 *    was ever committed; a commit that collides reports SPOOL_DUP for that
 *    message via the callback and removes its file.
 *  - Ids are the second (8 hex) and a per-handle random start plus a
 *    counter (8 hex): unique within a handle by construction.  Two
 *    processes can draw the same id only by chance; the commit checks under
 *    its write lock and reports the later one SPOOL_BUSY (not committed,
 *    not to be deleted: the next poll fetches it again under a new id).
 *  - Relay side: spool_claim_due() moves due messages to `sending` and
 *    returns them; spool_finish_attempts() records every outcome of a session
 *    in one transaction, then unlinks the files of sent messages.
 *  - spool_open() creates the tree and database if missing, applies the
 *    numbered migrations (PRAGMA user_version), and runs recovery: temp
 *    files removed, `sending` rows back to `queued`, files in msg/ without an
 *    index row removed (their commit never returned, so the server still
 *    has the message and it was not deleted), files of `sent` and `duplicate`
 *    rows not retained removed,
 *    index rows whose file is gone (and not sent) marked held with a reason.
 *    Recovery runs only when no other handle (process) has the spool open:
 *    every handle holds a shared flock on the spool directory, recovery
 *    needs it exclusive, so a poll run from cron never deletes the pending
 *    files or requeues the `sending` rows of a running daemon.  The claims
 *    of a relay that died while the spool stays shared are taken back by
 *    spool_reclaim(): each claim names its handle's journal, locked while
 *    that handle lives.
 *  - Who frees what: structs returned through *_r are freed with the
 *    matching spool_*_free().
 */
#ifndef POPGATE_SPOOL_H
#define POPGATE_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum spool_res {
	SPOOL_OK = 0,
	SPOOL_BUSY, /* database locked past the busy timeout */
	SPOOL_FULL, /* ENOSPC/EDQUOT */
	SPOOL_IO,   /* any other file or database failure */
	SPOOL_DUP,  /* (account, uidl) already present */
	SPOOL_NOTFOUND,
	SPOOL_INVAL, /* bad argument (unknown state name, id syntax) */
};

enum spool_state {
	SPOOL_QUEUED = 0,
	SPOOL_SENDING,
	SPOOL_SENT,
	SPOOL_DEFERRED,
	SPOOL_HELD,
	SPOOL_DUPLICATE, /* an earlier copy was spooled (duplicate_of); not relayed */
};
#define SPOOL_NSTATES 6

const char *spool_state_name(enum spool_state st);
/* spool_state_parse - 0 and *st_r set, or -1 for an unknown name */
int spool_state_parse(const char *name, enum spool_state *st_r);
const char *spool_res_name(enum spool_res r);

#define SPOOL_ID_LEN 16 /* hex characters */

struct spool;
struct spool_writer;

/* Duplicate detection at commit (spool_dedupe.c).  The caller computes the
 * keys over the message as the server sent it (CRLF line ends, without
 * popgate's own Received line) and hands them over with the envelope; the
 * commit looks for an earlier copy of the same account committed at or
 * after `since` and, when one exists, commits this message in state
 * `duplicate` instead of `queued` (durable like any message: the caller
 * DELEs it after the commit as usual).  The keys of a message that is not
 * a duplicate are recorded for later lookups. */
#define SPOOL_KEY_LEN 32
enum spool_dedupe_mode {
	SPOOL_DEDUPE_OFF = 0,
	SPOOL_DEDUPE_EXACT,   /* the same content */
	SPOOL_DEDUPE_MESSAGE, /* the same Message-ID and body (exact without one) */
};
struct spool_dedupe {
	enum spool_dedupe_mode mode;
	unsigned char exact[SPOOL_KEY_LEN];  /* sha256 of the whole message */
	int has_msgkey;                      /* it has a Message-ID */
	unsigned char msgkey[SPOOL_KEY_LEN]; /* sha256 of Message-ID and body */
	time_t since;                        /* the window: older copies are forgotten */
	char dup_of_r[17];                   /* out, set by the commit: "" or the id of
					      * the earlier copy (valid when the commit
					      * callback runs) */
};

struct spool_rcpt {
	char *addr;
	enum spool_state state; /* queued/deferred: still to do; sent; held */
	char *reply;            /* last SMTP reply for this recipient, or NULL */
};

/* Envelope handed over at ingest. */
struct spool_envelope {
	const char *sender;        /* "" for the null sender <> */
	const char *const *rcpts;  /* at least one, unless hold_reason is set */
	size_t nrcpts;
	const char *hold_reason;   /* non-NULL: commit the message `held` with this
				    * as its last reply (routing found no safe
				    * recipient, oversize policy, ...) */
	struct spool_dedupe *dedupe; /* NULL: no duplicate detection; else it must
				      * stay valid until the commit callback */
};

/* A message as the relay and the queue listing see it. */
struct spool_msg {
	char id[SPOOL_ID_LEN + 1];
	char *account;
	char *uidl;
	char *path;             /* absolute path of msg/<id> (no such file when
				 * in_index: read it with spool_msg_open) */
	uint64_t size;
	char digest[65];        /* sha256 hex of the file */
	char *sender;
	struct spool_rcpt *rcpts;
	size_t nrcpts;
	enum spool_state state;
	int attempts;
	time_t next_attempt;
	time_t created;
	time_t updated;
	char *last_reply;       /* NULL if none */
	int in_index;           /* the body is a row of `bodies`, no file */
	int eightbit;           /* 1: an octet > 127, 0: none, -1: not known */
	unsigned char *body;    /* spool_claim_due: an in-index body read with
				 * the claim (NULL: read it with spool_body_get) */
	size_t body_len;
	char duplicate_of[SPOOL_ID_LEN + 1]; /* state duplicate: the original; else "" */
};

/* Outcome of one delivery attempt, filled by the relay. */
struct spool_outcome {
	struct spool_msg *msg;      /* rcpts[i].state/reply updated by the relay */
	enum spool_state state;     /* SENT, DEFERRED or HELD */
	const char *reply;          /* the reply that decided it */
	time_t next_attempt;        /* for DEFERRED */
};

enum spool_res spool_open(const char *dir, struct spool **sp_r, char **err_r);
/* Options of spool_open_ex.  They are stored in the index, so a handle
 * opened with spool_open (params NULL: relay children, admin commands)
 * uses what the last opener with the configuration recorded. */
struct spool_params {
	int keep_sent_days; /* 0: a sent message's file is removed at once;
			     * N: kept N days for audit, then purged by the
			     * relay's finish or by recovery */
};
enum spool_res spool_open_ex(const char *dir, const struct spool_params *p, struct spool **sp_r,
			     char **err_r);
void spool_close(struct spool **sp);
const char *spool_dir(const struct spool *sp);

/* Recovery statistics of the last spool_open() (for the log). */
struct spool_recovery {
	unsigned int tmp_removed;
	unsigned int sending_requeued;
	unsigned int uncommitted_removed;
	unsigned int missing_file_held;
	unsigned int orphans_removed; /* files of sent rows */
	int skipped;                  /* another handle had the spool open */
	unsigned int copies_removed;  /* msg/<id> copies of in-index bodies
				       * (left by an older popgate) */
	unsigned int sent_purged;     /* retained sent files past keep_sent_days */
	unsigned int journal_rcpts;   /* recipients marked sent from relay journals */
	unsigned int journal_sent;    /* messages that became sent by them */
	/* ids of the messages requeued from `sending` (sending_requeued of
	 * them): each may reach the SMTP host twice, so each is logged */
	char **requeued_ids;
};
const struct spool_recovery *spool_last_recovery(const struct spool *sp);

/* spool_set_requeue_log - fn is called once for every message that
 * recovery (spool_open) or spool_reclaim takes back from `sending` to send
 * again (the host may already have it), before that change is committed:
 * a process killed while the commit is being written has named the
 * message already (a line too many if the commit is lost, never one too
 * few).  reclaim: 1 from spool_reclaim, 0 from recovery at open.
 * Process-wide, inherited by forks; NULL (the default): no call. */
typedef void (*spool_requeue_log_fn)(const char *id, const char *account, int reclaim);
void spool_set_requeue_log(spool_requeue_log_fn fn);

/* ---- ingest (poller) ---- */

/* spool_uidl_known - *known_r = 1 if (account, uidl) was ever committed */
enum spool_res spool_uidl_known(struct spool *sp, const char *account, const char *uidl,
				int *known_r, char **err_r);

enum spool_res spool_writer_begin(struct spool *sp, const char *account, const char *uidl,
				  struct spool_writer **w_r, char **err_r);
/* spool_writer_id - the id this message will have (for Received: and logs) */
const char *spool_writer_id(const struct spool_writer *w);
/* spool_writer_write - buffered (one write() per 64 KiB).  After an error
 * the writer only accepts spool_writer_abort() (finish also fails). */
enum spool_res spool_writer_write(struct spool_writer *w, const void *data, size_t len,
				  char **err_r);
/* spool_writer_finish - flush, fsync, rename into msg/; frees *w.  On error
 * the temp file is removed and *w freed. */
enum spool_res spool_writer_finish(struct spool_writer **w, const struct spool_envelope *env,
				   char **err_r);
/* spool_writer_listed_size - the server's LIST size of the message (0:
 * unknown), recorded in its row (listed_size, migration 009) so a later
 * poll can tell a UIDL the server reused; call before spool_writer_finish */
void spool_writer_listed_size(struct spool_writer *w, uint64_t size);
/* spool_writer_abort - remove the temp file, free *w */
void spool_writer_abort(struct spool_writer **w);

/* spool_pending - messages finished but not yet committed */
size_t spool_pending(const struct spool *sp);

/* Group commit bounds: commit when the pending group holds this many
 * messages, or octets, or octets held in memory (in-index messages, until
 * their commit), or its first message has waited this long (a slow server
 * must not hold finished messages undeleted for long). */
#define SPOOL_GROUP_MSGS 1000
#define SPOOL_GROUP_BYTES (16u * 1024 * 1024)
#define SPOOL_GROUP_MEM_BYTES (4u * 1024 * 1024)
#define SPOOL_GROUP_MS 1000
/* spool_group_full - 1 when the pending group should be committed now */
int spool_group_full(const struct spool *sp);

/* Called once per pending message by spool_commit(): res is SPOOL_OK,
 * SPOOL_DUP (already present: the new copy was removed; delete it on the
 * server) or SPOOL_BUSY (not committed: another process drew the same id;
 * leave it on the server). */
typedef void (*spool_commit_cb)(void *ctx, const char *account, const char *uidl,
				const char *id, enum spool_res res);

/* spool_commit - make every pending message durable (dir fsync + one
 * transaction).  On failure no pending message is committed; their files
 * are removed and the caller must not DELE them. */
enum spool_res spool_commit(struct spool *sp, spool_commit_cb cb, void *ctx, char **err_r);

/* The same commit in a thread, so the caller goes on fetching the next
 * group meanwhile.  spool_commit_start hands the pending group to the
 * commit thread (its own SQLite connection) and returns; the caller may go
 * on with spool_writer_* and spool_group_full only.  spool_commit_finish
 * waits for it and reports like spool_commit (cb per message, or the error
 * for the whole group): only then may the caller DELE.  One commit is in
 * flight at a time; spool_commit and spool_close finish it first.  A
 * failed spool_commit_start drops the pending group as a failed
 * spool_commit does (files removed, nothing to DELE). */
enum spool_res spool_commit_start(struct spool *sp, char **err_r);
enum spool_res spool_commit_finish(struct spool *sp, spool_commit_cb cb, void *ctx,
				   char **err_r);
int spool_commit_in_flight(const struct spool *sp);

/* ---- relay ---- */

/* spool_claim_due - up to max messages in state queued, or deferred with
 * next_attempt <= now, oldest first (by created; queued messages are read
 * in commit order, only as many as max); they become `sending` (attempts+1),
 * their recipient rows stay as they are until spool_finish_attempts.
 * Only recipients not yet sent/held are returned in rcpts.  In-index
 * bodies come with the claim (m->body) up to SPOOL_CLAIM_BODY_BYTES in all.
 * The claim is committed without fsync: a claim lost to a power failure
 * only leaves the message queued, and the next fsync'd commit (the
 * outcomes) makes it durable with them. */
#define SPOOL_CLAIM_BODY_BYTES (8u * 1024 * 1024)
enum spool_res spool_claim_due(struct spool *sp, time_t now, size_t max,
			       struct spool_msg ***msgs_r, size_t *n_r, char **err_r);
/* spool_finish_attempts - record n outcomes in one transaction, then unlink
 * the files of the messages that became sent.  fsync'd (synchronous=FULL). */
enum spool_res spool_finish_attempts(struct spool *sp, struct spool_outcome *outs, size_t n,
				     char **err_r);
/* spool_journal_note - before the outcome of m reaches the index (the
 * relay commits outcomes in batches): append its recipients in state
 * SPOOL_SENT to this handle's relay journal, so that recovery after a kill
 * marks them sent instead of sending them again.  One write(), no fsync
 * (spool_journal.c).  Emptied by every successful spool_finish_attempts. */
enum spool_res spool_journal_note(struct spool *sp, const struct spool_msg *m, char **err_r);
/* spool_reclaim - take back the claims of relays that died while others
 * keep the spool open (a daemon's relay child or session killed): every
 * `sending` message whose claiming handle no longer holds the lock on its
 * journal is handled as recovery would (journalled recipients -> sent,
 * the rest -> queued with a history row).  Safe at any time, with the
 * spool shared; live claims are never touched.  Fills the
 * journal_rcpts, journal_sent, sending_requeued and requeued_ids of
 * spool_last_recovery() (cleared first; the caller logs them). */
enum spool_res spool_reclaim(struct spool *sp, char **err_r);
/* spool_body_get - the body of an in_index message (malloc'd copy) */
enum spool_res spool_body_get(struct spool *sp, const char *id, unsigned char **body_r,
			      size_t *len_r, char **err_r);
/* spool_msg_open - a read-only fd at offset 0 on the message: its file, or a
 * sealed memfd holding its in-index body.  SPOOL_NOTFOUND when it is gone (a sent
 * message that was not retained). */
enum spool_res spool_msg_open(struct spool *sp, const struct spool_msg *m, int *fd_r,
			      char **err_r);
/* spool_batch_begin - what follows on this handle, up to spool_batch_end,
 * is one transaction (BEGIN IMMEDIATE ... COMMIT): one fsync for a poll's
 * closing bookkeeping (account state, counters) instead of one per
 * statement.  A transaction of a spool function inside it becomes a
 * savepoint (its rollback undoes only its own work).  Never around a
 * message commit (spool_commit, spool_commit_start): a message's commit
 * must be durable before its DELE.  If the batch cannot start, what
 * follows runs as before, each statement on its own; spool_batch_end
 * commits (returns the error, the writes in it lost) and ends the mode. */
enum spool_res spool_batch_begin(struct spool *sp, char **err_r);
enum spool_res spool_batch_end(struct spool *sp, char **err_r);
/* spool_defer_checkpoints - on: this handle leaves WAL checkpoints to the
 * other handles (the relay, admin commands) unless the WAL passes 16 MiB,
 * and does not checkpoint on close: a poll spends its time on the POP3
 * session, not copying pages into the database file. */
void spool_defer_checkpoints(struct spool *sp, int on);
/* spool_checkpoint_truncate - copy the WAL into the database and cut it to
 * nothing, if no other handle is reading or writing (never waits).  Done
 * by spool_close of a handle that deferred its checkpoints and by
 * spool_compact. */
void spool_checkpoint_truncate(struct spool *sp);
/* spool_compact - the end of a relay round: give the free pages of sent
 * bodies back to the file system beyond a 4 MiB slack for the next groups
 * (PRAGMA incremental_vacuum; the index uses auto_vacuum = INCREMENTAL),
 * then spool_checkpoint_truncate.  So the index shrinks back once its
 * messages are sent, and the WAL does not hold a whole drain. */
enum spool_res spool_compact(struct spool *sp, char **err_r);
/* spool_fork_prepare - before fork(): close this handle's SQLite
 * connections (the handle, its lock and its directories stay).  SQLite
 * keeps per-process state about the locks of its connections (POSIX
 * locks, the WAL's shared memory); a child that inherits it believes it
 * holds locks it does not, and its own connections then write without
 * them.  A child opens its own handle; the parent calls spool_fork_done. */
enum spool_res spool_fork_prepare(struct spool *sp, char **err_r);
/* spool_fork_done - in the parent after fork(): reopen the connection */
enum spool_res spool_fork_done(struct spool *sp, char **err_r);
/* spool_checkpoint_in_background - on: this handle's checkpoints run in a
 * thread with its own connection, so a commit never waits for one (the
 * relay: the first commit after a large poll would copy its whole WAL).
 * off (and spool_close) waits for a checkpoint under way.  Only for a
 * process that does not fork while it is on. */
void spool_checkpoint_in_background(struct spool *sp, int on);
/* spool_next_due - earliest next_attempt among queued/deferred, 0 if none */
enum spool_res spool_next_due(struct spool *sp, time_t *when_r, char **err_r);

/* ---- listing and administration ---- */

struct spool_filter {
	int state;            /* -1 for any, else enum spool_state */
	const char *account;  /* NULL for any */
	int include_sent;     /* 0: sent and duplicate messages are not listed */
};

typedef int (*spool_list_cb)(void *ctx, const struct spool_msg *m);
/* spool_list - calls cb for each matching message, oldest first; stops early
 * if cb returns non-zero */
enum spool_res spool_list(struct spool *sp, const struct spool_filter *flt, spool_list_cb cb,
			  void *ctx, char **err_r);
enum spool_res spool_get(struct spool *sp, const char *id, struct spool_msg **m_r,
			 char **err_r);
/* spool_count_by_state - counts[SPOOL_QUEUED..SPOOL_DUPLICATE] */
enum spool_res spool_count_by_state(struct spool *sp, uint64_t counts[SPOOL_NSTATES],
				    char **err_r);

/* Operator actions (popgate requeue/hold/delete/flush).  Each is one
 * BEGIN IMMEDIATE transaction that only touches rows in the states it
 * names, so it is safe beside a running daemon: a message in `sending`
 * belongs to a relay session and is refused (SPOOL_BUSY, "try again").
 * SPOOL_NOTFOUND for an unknown id, SPOOL_INVAL for a state the action
 * does not apply to (requeue of a sent message, ...).  Each records a
 * history row. */
/* spool_requeue - held, deferred or duplicate -> queued, due now (queued:
 * no-op); a duplicate whose body is no longer kept is refused (INVAL) */
enum spool_res spool_requeue(struct spool *sp, const char *id, char **err_r);
/* spool_requeue_all - every held (held_only) or held+deferred message */
enum spool_res spool_requeue_all(struct spool *sp, int held_only, unsigned int *n_r,
				 char **err_r);
/* spool_hold - queued or deferred -> held with reason (held: no-op) */
enum spool_res spool_hold(struct spool *sp, const char *id, const char *reason, char **err_r);
/* spool_delete - remove a message in any state but sending: row, file,
 * history; its (account, uidl) is remembered so it is never fetched again */
enum spool_res spool_delete(struct spool *sp, const char *id, char **err_r);
/* spool_make_due - every deferred message becomes due now (flush) */
enum spool_res spool_make_due(struct spool *sp, unsigned int *n_r, char **err_r);
/* spool_history - cb for each state a message entered, oldest first */
typedef int (*spool_history_cb)(void *ctx, time_t at, const char *state, const char *reply);
enum spool_res spool_history(struct spool *sp, const char *id, spool_history_cb cb, void *ctx,
			     char **err_r);
/* spool_purge_sent - remove retained sent files whose keep_sent_days are
 * over; *n_r (may be NULL) the number removed */
enum spool_res spool_purge_sent(struct spool *sp, time_t now, unsigned int *n_r, char **err_r);
/* spool_oldest - created time of the oldest message not sent (0: none) */
enum spool_res spool_oldest(struct spool *sp, time_t *created_r, char **err_r);

/* Per-account bookkeeping (last poll, result). */
enum spool_res spool_account_update(struct spool *sp, const char *account, time_t last_poll,
				    const char *result, unsigned int fetched, char **err_r);

/* ---- per-account state (scheduling, status) ---- */

struct spool_account_state {
	char *name;
	time_t last_poll;      /* 0: never */
	char *last_result;     /* "ok", or the failure class; NULL: never */
	unsigned int last_fetched;
	uint64_t last_bytes;
	time_t not_before;     /* no scheduled poll before this; 0: any time */
	unsigned int failures; /* consecutive failed polls */
	char *auth_failed;     /* config fingerprint at an [AUTH] refusal, or NULL */
	char *last_error;      /* text of the last failure, or NULL */
	int login_delay;       /* seconds from CAPA LOGIN-DELAY, -1 unknown */
	int expire;            /* days from CAPA EXPIRE, -2 NEVER, -1 unknown */
	char *problem_uidls;   /* space-separated UIDLs of messages whose RETR
				* broke a session or was over its limit, or NULL
				* (the poller's; see poller.c) */
};

/* spool_account_get - the stored state; an account never polled gives a
 * zeroed state with its name set (and SPOOL_OK) */
enum spool_res spool_account_get(struct spool *sp, const char *name,
				 struct spool_account_state *st_r, char **err_r);
/* spool_account_put - store every field of st (upsert) */
enum spool_res spool_account_put(struct spool *sp, const struct spool_account_state *st,
				 char **err_r);
typedef int (*spool_account_cb)(void *ctx, const struct spool_account_state *st);
/* spool_account_list - every stored account, by name */
enum spool_res spool_account_list(struct spool *sp, spool_account_cb cb, void *ctx,
				  char **err_r);
void spool_account_state_free(struct spool_account_state *st);

/* ---- the last relay round (status) ---- */

struct spool_relay_state {
	time_t last_run;       /* 0: no round recorded */
	char *result;          /* "ok" or the failure class; NULL: none */
	unsigned int attempted, sent, deferred, held;
	uint64_t bytes;
	char *error;           /* NULL when result is "ok" */
};

/* spool_relay_state_put - record a relay round's result (one row, replaced) */
enum spool_res spool_relay_state_put(struct spool *sp, const struct spool_relay_state *rs,
				     char **err_r);
/* spool_relay_state_get - the last recorded round; a zeroed state if none */
enum spool_res spool_relay_state_get(struct spool *sp, struct spool_relay_state *rs_r,
				     char **err_r);
void spool_relay_state_free(struct spool_relay_state *rs);

/* The account's message rows, for the poller's plan: which UIDLs it has,
 * in which state, since when (keep_days counts from `created`). */
struct spool_uidl_row {
	char *uidl;
	enum spool_state state;
	time_t created;
	int64_t listed_size; /* LIST size when it was fetched; -1 unknown */
};
/* spool_account_uidls - every row of the account, sorted by uidl (strcmp) */
enum spool_res spool_account_uidls(struct spool *sp, const char *account,
				   struct spool_uidl_row **rows_r, size_t *n_r, char **err_r);
void spool_uidl_rows_free(struct spool_uidl_row **rows, size_t n);
/* spool_account_tombstones - the UIDLs of the account's messages an
 * operator deleted (never fetched again), sorted (strcmp); free each and
 * the array */
enum spool_res spool_account_tombstones(struct spool *sp, const char *account,
					char ***uidls_r, size_t *n_r, char **err_r);
/* spool_uidl_prune - forget the given UIDLs of the account (gone from the
 * server): only rows sent or duplicate (updated) before sent_before and not retained
 * are deleted, with their tombstones older than that; one transaction.
 * *pruned_r rows were removed. */
enum spool_res spool_uidl_prune(struct spool *sp, const char *account, const char *const *gone,
				size_t n, time_t sent_before, unsigned int *pruned_r, char **err_r);

/* spool_dedupe_maintain - at the end of a poll: merge the recent content
 * keys (every account's) into the large table when due (50,000 of them, or
 * a day since the last merge) and forget the account's keys committed
 * before `before` (dedupe_days) when due (a day since its last prune);
 * force: both now.  One transaction.  *n_r (may be NULL) keys pruned. */
enum spool_res spool_dedupe_maintain(struct spool *sp, const char *account, time_t before,
				     time_t now, int force, unsigned int *n_r, char **err_r);
/* spool_dedupe_alert_put - a poll met more than dedupe_alert duplicates
 * (the server renumbered the mailbox): remembered for `status` */
enum spool_res spool_dedupe_alert_put(struct spool *sp, const char *account, time_t when,
				      unsigned int count, char **err_r);
/* spool_dedupe_alert_get - the last such alert of the account; *when_r 0: none */
enum spool_res spool_dedupe_alert_get(struct spool *sp, const char *account, time_t *when_r,
				      unsigned int *count_r, char **err_r);
/* spool_dedupe_count - the account's keys in the table (tests, status) */
enum spool_res spool_dedupe_count(struct spool *sp, const char *account, uint64_t *n_r,
				  char **err_r);

void spool_msg_free(struct spool_msg **m);
void spool_msgs_free(struct spool_msg ***msgs, size_t n);

#endif
