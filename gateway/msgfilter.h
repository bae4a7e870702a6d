/*
 * msgfilter.h - turns a POP3 multi-line response into canonical message
 * bytes, streaming.
 *
 * Contract:
 *  - Fed the pieces lr_read() returns (in order, with their complete flag),
 *    it removes the POP3 dot-stuffing, recognises the terminating "." line,
 *    and writes the message to the sink in canonical form: every line ends
 *    in CRLF; a bare CR and a bare LF each become CRLF; a missing final line
 *    end is added.  Over-long lines pass through unchanged (never folded).
 *  - Protocol lines: by default (a server that ends its lines with bare LF)
 *    every LF ends a protocol line.  After mf_set_crlf(f, 1) (the server's
 *    greeting ended in CRLF, RFC 1939) only CRLF does: a bare LF or bare CR
 *    is data that becomes CRLF in the output, the line after it is not
 *    dot-unstuffed and cannot be the terminator, and only CRLF "." CRLF ends
 *    the message.  A "." at a protocol line start followed by a bare LF or
 *    bare CR is then kept as data.  A line that is a lone "." in the output
 *    is left for the SMTP side to dot-stuff (libesmtp does).
 *  - Output is batched: the sink is called with chunks of up to 64 KiB,
 *    never once per line.
 *  - It records the first Return-Path header of the message (bounded), for
 *    the envelope sender.
 *  - No allocation grows with the input.
 */
#ifndef POPGATE_MSGFILTER_H
#define POPGATE_MSGFILTER_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* mf_sink_fn - consume len bytes of canonical message; PG_OK or an error with
 * *err_r set (the error is passed back out of mf_feed/mf_finish). */
typedef enum pg_res (*mf_sink_fn)(void *ctx, const void *data, size_t len, char **err_r);

struct msgfilter;

struct msgfilter *mf_new(mf_sink_fn sink, void *ctx);
void mf_free(struct msgfilter **f);
/* mf_set_crlf - 1: the session's server ends lines in CRLF (strict protocol
 * line ends, see above); 0 (the default): bare LF ends lines too */
void mf_set_crlf(struct msgfilter *f, int crlf);

/* mf_feed - one piece from lr_read().  Sets *done_r to 1 when the piece was
 * the terminating "." line (the message is then complete and mf_finish()
 * has been called internally).  Returns the sink's error, if any. */
enum pg_res mf_feed(struct msgfilter *f, const char *data, size_t len, int complete,
		    int *done_r, char **err_r);

/* mf_discard - from now on nothing reaches the sink (not even what is
 * buffered); the state machine still finds the terminator, so the rest of
 * a reply that is over its limit can be read and dropped */
void mf_discard(struct msgfilter *f);

/* mf_bytes - canonical bytes emitted so far */
uint64_t mf_bytes(const struct msgfilter *f);

/* mf_return_path - the first Return-Path header's value, trimmed, or NULL if
 * the message had none (or it was longer than 998 octets) */
const char *mf_return_path(const struct msgfilter *f);

/* mf_finish - end a message that has no terminating "." line (file input):
 * a held CR becomes CRLF, a missing final line end is added, and the output
 * is flushed.  A no-op after the terminator was seen. */
enum pg_res mf_finish(struct msgfilter *f, char **err_r);

/* mf_feed_all - convenience for tests and file input: run a whole
 * in-memory multi-line response through the filter (pieces of at most
 * 64 KiB, split at LF like lr_read() would). */
enum pg_res mf_feed_all(struct msgfilter *f, const char *data, size_t len, int *done_r,
			char **err_r);

#endif
