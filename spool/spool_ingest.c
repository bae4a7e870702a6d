#include "config.h"

/*
 * spool_ingest.c - the ingest side of the spool: a message streamed into a
 * writer (tmp/<id>, or kept in memory for the index when small), sealed
 * with its digest, and the group commit that makes a group of finished
 * messages durable in one transaction (in the caller's thread, or in a
 * commit thread on a second handle while the poller downloads the next
 * group).  See spool.h for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

#define SPOOL_WBUF (64 * 1024)    /* writer buffer: one write() per 64 KiB; a
				   * message that fits stays in the index */
/* The commit thread's page cache, KiB.  A small body fills a page that is
 * written once and never read again: with the bodies inserted last
 * (commit_tx) they are spilled into the WAL when the cache is full at no
 * extra write, and this is enough for the index pages a group searches
 * and changes (the dedupe keys at random places).  The handles' usual
 * 8 MiB held the poll's RSS 4 MiB higher; 2 MiB cost a third more WAL
 * writes and twice the reads (pages pushed out between two uses;
 * docs/performance.md). */
#define SPOOL_COMMIT_CACHE_KIB "4096"

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
void spool_pending_clear(struct spool *sp, int unlink_files)
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

void spool_writer_spare_free(struct spool *sp)
{
	if (sp->spare != NULL) {
		EVP_MD_CTX_free(sp->spare->md);
		free(sp->spare);
		sp->spare = NULL;
	}
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
		sp->pend_since_ms = spool_mono_ms();
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
	       spool_mono_ms() - sp->pend_since_ms >= SPOOL_GROUP_MS;
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

/* insert_body - the inline message's durable copy, in the transaction.
 * The memory copy goes at once: the row is the only copy the commit needs
 * (a failed commit drops the whole group), and the next group, filled
 * meanwhile, reuses the space instead of adding its own */
static enum spool_res insert_body(struct spool *sp, struct spool_pending *p, char **err_r)
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
	free(p->body);
	p->body = NULL;
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
	sp->dd_tx = 0; /* spool_dedupe_check reads its state anew */
	for (size_t i = 0; i < sp->npend; i++) {
		if ((res = insert_pending(sp, &sp->pend[i], now, err_r)) != SPOOL_OK) {
			spool_rollback(sp);
			return res;
		}
	}
	/* the bodies last: each fills a page that is written once and never
	 * read again, so they pass through the page cache (spilled into the
	 * WAL when it is full) after the index pages the rows above search
	 * and change at random places, instead of pushing those out between
	 * two uses (each such page read back and written again) */
	for (size_t i = 0; i < sp->npend; i++) {
		struct spool_pending *p = &sp->pend[i];

		if (p->res == SPOOL_OK && p->inl && (res = insert_body(sp, p, err_r)) != SPOOL_OK) {
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
		spool_pending_clear(sp, !uncertain);
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
	if ((res = spool_open_db(csp, err_r)) != SPOOL_OK) {
		spool_commit_handle_free(csp);
		return res;
	}
	/* this connection only inserts a message's rows after the message row
	 * itself, in one transaction: the foreign key checks could never fail
	 * (the ON DELETE CASCADEs of the other handles stay on) */
	if (sqlite3_exec(csp->db, "PRAGMA foreign_keys = OFF; "
			 "PRAGMA cache_size = -" SPOOL_COMMIT_CACHE_KIB, NULL, NULL, NULL) !=
	    SQLITE_OK) {
		res = spool_dbfail(csp, SQLITE_ERROR, "pragmas", err_r);
		spool_commit_handle_free(csp);
		return res;
	}
	sp->csp = csp;
	return SPOOL_OK;
}

void spool_commit_handle_free(struct spool *csp)
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
	if ((res = commit_handle(sp, err_r)) != SPOOL_OK) {
		/* not committed, as a failed spool_commit: the caller leaves
		 * them on the server, and this handle (a poll worker's, used
		 * for the next account) must not carry them into a later group */
		spool_pending_clear(sp, 1);
		return res;
	}
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
