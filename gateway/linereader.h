/*
 * linereader.h - the one bounded line reader all socket input goes through.
 *
 * Contract:
 *  - The reader owns a fixed buffer of max_line bytes (allocated once); it
 *    never grows.  Input comes from a read callback (a socket, a TLS stream,
 *    or canned bytes in tests and fuzzers).
 *  - lr_read() returns the next piece of input:
 *      complete=1: a whole line, including its terminating LF (and the CR
 *                  before it, if any);
 *      complete=0: max_line bytes of a line that is longer than the buffer;
 *                  the next call continues the same line.
 *    Callers reading protocol replies treat complete=0 as a protocol error;
 *    the message body reader streams such pieces through.
 *  - The returned pointer stays valid until the next lr_read()/lr_free().
 *  - Results are enum pg_res; end of input is PG_TEMP with "connection
 *    closed" in *err_r (PG_PROTO if it ends in the middle of a line); a read
 *    error or timeout is PG_TEMP too.  Network trouble is temporary: PG_IO
 *    is kept for local I/O (the spool).
 */
#ifndef POPGATE_LINEREADER_H
#define POPGATE_LINEREADER_H

#include <stddef.h>
#include <sys/types.h>

#include "util.h"

#define LR_DEFAULT_MAX 65536

/* lr_read_fn - read up to len bytes into buf.  Returns >0 bytes read, 0 at
 * end of input, -1 on error (sets *err_r), -2 on timeout (sets *err_r). */
typedef ssize_t (*lr_read_fn)(void *ctx, void *buf, size_t len, char **err_r);

struct linereader;

struct linereader *lr_new(size_t max_line, lr_read_fn fn, void *ctx);
void lr_free(struct linereader **lr);
enum pg_res lr_read(struct linereader *lr, const char **line_r, size_t *len_r,
		    int *complete_r, char **err_r);
/* lr_pending - bytes already received but not yet returned (STLS injection
 * check: must be 0 right after the +OK to STLS) */
size_t lr_pending(const struct linereader *lr);
/* lr_discard - drop anything buffered (used after a TLS switch) */
void lr_discard(struct linereader *lr);

#endif
