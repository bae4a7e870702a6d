/*
 * relay.h - hands spooled messages to the local SMTP host (libesmtp).
 *
 * Contract:
 *  - The only file that includes libesmtp.h.  Reads the spool through
 *    spool.h; never POP3.
 *  - relay_run_once() claims every due message, sends them in one SMTP
 *    session (each session with its own SSL_CTX), reads the status of every
 *    message and every recipient, and records the outcomes in the spool:
 *    2xx -> sent (file removed), 4xx or no answer -> deferred with backoff,
 *    5xx -> held with the server's reply.
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

/* relay_backoff - seconds to wait before attempt number `attempts`+1 */
long relay_backoff(int attempts);

#endif
