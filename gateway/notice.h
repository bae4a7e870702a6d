/*
 * notice.h - delivery notices about held and expired messages.
 *
 * Contract:
 *  - notice_send() composes an RFC 3464 multipart/report (human part,
 *    message/delivery-status, text/rfc822-headers with the original header
 *    block) about one message the relay has just held, and commits it into
 *    the spool as a new message of the pseudo account NOTICE_ACCOUNT, envelope
 *    sender <> and one recipient chosen by `bounce` (the postmaster, or the
 *    original sender).  The relay then sends it like any other message.
 *  - No notice is made when bounce = none, when the chosen recipient would
 *    be <> (or is unsafe), or when the message is itself a notice (no
 *    notice loops).  That is PG_OK with nothing committed.
 *  - PG_IO with *err_r (caller frees) when the spool failed; the held
 *    message itself is unaffected.
 */
#ifndef POPGATE_NOTICE_H
#define POPGATE_NOTICE_H

#include <time.h>

#include "conf.h"
#include "spool.h"
#include "util.h"

#define NOTICE_ACCOUNT "_notice"

/* notice_recipient - who gets a notice about m, or NULL for nobody */
const char *notice_recipient(const struct conf *c, const struct spool_msg *m);

/* notice_send - m was held at `now` because of `reason` (an SMTP reply or
 * a local reason); expired: it sat deferred past max_queue_time */
enum pg_res notice_send(const struct conf *c, struct spool *sp, const struct spool_msg *m,
			const char *reason, int expired, time_t now, char **err_r);

#endif
