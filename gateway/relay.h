/*
 * relay.h - hands spooled messages to the local SMTP host (libesmtp).
 *
 * Contract:
 *  - The only file that includes libesmtp.h.  Reads the spool through
 *    spool.h; never POP3.
 *  - relay_run_once() claims due messages in batches of
 *    smtp.max_messages_per_session, sends each batch in one SMTP session
 *    (two when it mixes 7-bit and 8-bit messages: BODY=8BITMIME is
 *    session-wide in libesmtp), each session with its own SSL_CTX, reads the
 *    status of every message and every recipient, and records the outcomes:
 *    2xx -> sent (file removed), 4xx or no answer -> deferred on the
 *    retry_intervals schedule, or held once older than max_queue_time,
 *    5xx -> held with the server's reply.  A held message gets an RFC 3464
 *    notice (notice.h) per `bounce`.  With smtp.max_sessions > 1 it forks
 *    that many children, each with its own spool handle, and waits for them.
 *    When they are done it takes back the claims of any that died
 *    (relay_reclaim), so a killed session's messages are queued again at
 *    once instead of staying `sending` until the next exclusive open.
 *  - PG_OK when the session ran (whatever the per-message outcomes were);
 *    PG_TEMP when the host could not be reached (messages deferred);
 *    PG_IO when the spool failed.
 */
#ifndef POPGATE_RELAY_H
#define POPGATE_RELAY_H

#include <signal.h>
#include <stdint.h>

#include "conf.h"
#include "spool.h"
#include "util.h"

struct relay_stats {
	unsigned int attempted;
	unsigned int sent;
	unsigned int deferred;
	unsigned int held;
	uint64_t bytes;
};

enum pg_res relay_run_once(const struct conf *c, struct spool *sp,
			   const volatile sig_atomic_t *stop_flag, struct relay_stats *st_r,
			   char **err_r);

/* relay_reclaim - spool_reclaim(), logged: a `status=reclaimed` summary
 * and one `status=requeued-after-crash` line per message sent again.  For
 * whoever has just seen a relay process die (the daemon, relay_run_once). */
void relay_reclaim(struct spool *sp);

/* relay_requeue_log - the spool_set_requeue_log callback: one
 * `id=... account=... status=requeued-after-crash` warning, written before
 * the requeue is committed.  main() installs it for the whole process. */
void relay_requeue_log(const char *id, const char *account, int reclaim);

/* relay_backoff - seconds to wait before attempt number `attempts`+1:
 * retry_intervals[attempts-1], the last interval repeating */
long relay_backoff(const struct conf *c, int attempts);

#endif
