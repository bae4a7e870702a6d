/*
 * poller.h - drains one POP3 account into the spool.
 *
 * Contract:
 *  - Uses pop3.h for the protocol and spool.h for storage; never SMTP.
 *  - For each message the server has and the spool does not: RETR streamed
 *    into a spool writer (our Received: line first), finish, and commit in
 *    groups; DELE (unless keep) only for messages whose commit returned.
 *    Messages already in the spool are not fetched again; with keep off they
 *    are deleted (a crash between commit and QUIT left them on the server).
 *    A server without UIDL (keep off, dedupe on) is drained: every message
 *    is fetched, and one already spooled is committed as a duplicate.
 *  - Returns PG_OK when the session ended with a successful QUIT; otherwise
 *    the error class of what stopped it, with *err_r set.  Whatever was
 *    committed before the error stays committed.
 *  - stop_flag (may be NULL) is polled between messages: when it becomes
 *    non-zero the poll commits what it has, sends QUIT and returns.
 */
#ifndef POPGATE_POLLER_H
#define POPGATE_POLLER_H

#include <signal.h>
#include <stdint.h>

#include "conf.h"
#include "spool.h"
#include "util.h"

struct poll_stats {
	unsigned int on_server;   /* messages listed by the server */
	unsigned int fetched;     /* newly committed to the spool */
	uint64_t bytes;           /* octets committed */
	unsigned int deleted;     /* DELE sent and QUIT succeeded */
	unsigned int skipped;     /* already in the spool (kept on server) */
	unsigned int deferred;    /* new, left for a later poll by the per-poll limits */
	unsigned int oversize_skipped; /* over max_message_size, oversize = skip */
	unsigned int expired;     /* kept messages deleted after keep_days */
	unsigned int pruned;      /* sent/duplicate rows forgotten (gone from the server) */
	unsigned int duplicates;  /* committed in state duplicate (dedupe) */
};

/* progress callback, called after every committed group (may be NULL) */
typedef void (*poll_progress_fn)(void *ctx, const struct conf_account *a,
				 const struct poll_stats *st, unsigned int total_new);

/* poller_poll_account - one POP3 session of account a into the spool.  From
 * then on sp defers WAL checkpoints to other handles (spool_defer_checkpoints):
 * give it a handle that only polls. */
enum pg_res poller_poll_account(const struct conf *c, const struct conf_account *a,
				struct spool *sp, const volatile sig_atomic_t *stop_flag,
				poll_progress_fn progress, void *progress_ctx,
				struct poll_stats *st_r, char **err_r);

/* poller_account_ready - may a scheduled (not manual) poll of the account
 * run at `now`?  Returns 1 if yes.  Returns 0 if not, with *not_before_r
 * set to the earliest time it may (0: not until the configuration changes
 * or an operator polls it by hand, after an [AUTH] refusal) and *why_r to a
 * malloc'd reason ("LOGIN-DELAY 900 s", "backoff after 3 failures",
 * "authentication refused").  Reads the spool's account state.  An OAuth2
 * account in state reauthorize is always ready: its poll fails at once
 * (no token request, no login) with PG_AUTH and the command to run. */
int poller_account_ready(const struct conf_account *a, struct spool *sp, time_t now,
			 time_t *not_before_r, char **why_r);

#endif
