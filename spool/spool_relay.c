#include "config.h"

/*
 * spool_relay.c - the relay's queue transitions: claim due messages
 * (queued, or deferred and due) as sending, finish attempts with their
 * outcomes, and hand a claimed message's body to the relay.  See spool.h
 * for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

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
	/* the recipients to do, with their state (queued/deferred), which their
	 * rows keep during the claim: the message row is the claim, so each
	 * recipient row is written once per attempt (at the finish), not twice */
	if ((res = spool_stmt(sp, SQ_RCPT_TODO, &st, err_r)) != SPOOL_OK)
		return res;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	if ((res = spool_rcpts_from_stmt(sp, st, m, err_r)) != SPOOL_OK)
		return res;
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
