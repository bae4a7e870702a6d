/*
 * notice.h - delivery notices about held and expired messages.
 *
 * Contract:
 *  - notice_send() composes an RFC 3464 multipart/report (human part,
 *    message/delivery-status, text/rfc822-headers with the original header
 *    block, up to NOTICE_HDRS_MAX and said so when cut) about one message the relay has just held, and commits it into
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

#include <stdint.h>
#include <time.h>

#include "conf.h"
#include "spool.h"
#include "util.h"

#define NOTICE_ACCOUNT "_notice"
/* the most of the original header block a notice quotes (whole lines) */
#define NOTICE_HDRS_MAX (1024u * 1024)

/* notice_recipient - who gets a notice about m, or NULL for nobody */
const char *notice_recipient(const struct conf *c, const struct spool_msg *m);

/* The original header block, collected from the message's bytes (any
 * chunking) up to the empty line, bounded by NOTICE_HDRS_MAX: past it, cut
 * at a line end with cut set.  Exposed for the tests and the fuzz target. */
struct notice_hdrs {
	struct buf b;   /* the block, each line ending in CRLF */
	int done;
	int cut;        /* longer than NOTICE_HDRS_MAX: b holds its first lines */
	int unreadable; /* the message could not be read */
	size_t scan;    /* where the search for the empty line goes on */
	uint64_t total; /* octets fed */
};
void notice_hdrs_init(struct notice_hdrs *h);
void notice_hdrs_feed(struct notice_hdrs *h, const void *data, size_t len);
/* notice_hdrs_end - no more input (a message without a body) */
void notice_hdrs_end(struct notice_hdrs *h);
void notice_hdrs_free(struct notice_hdrs *h);

typedef enum pg_res (*notice_sink_fn)(void *ctx, const void *data, size_t len, char **err_r);
/* notice_compose - the whole notice about m, to `to`, quoting h, streamed to
 * fn; *res_r is PG_OK or the sink's first failure (with *err_r) */
void notice_compose(const struct conf *c, const struct spool_msg *m, const char *to,
		    const char *reason, int expired, time_t now, const struct notice_hdrs *h,
		    notice_sink_fn fn, void *ctx, enum pg_res *res_r, char **err_r);

/* notice_send - m was held at `now` because of `reason` (an SMTP reply or
 * a local reason); expired: it sat deferred past max_queue_time */
enum pg_res notice_send(const struct conf *c, struct spool *sp, const struct spool_msg *m,
			const char *reason, int expired, time_t now, char **err_r);

#endif
