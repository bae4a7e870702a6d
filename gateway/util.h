/*
 * util.h - allocation, bounded buffers and the gateway's result codes.
 *
 * Contract:
 *  - x*alloc never return NULL: on exhaustion they log and abort(), so
 *    callers never carry an out-of-memory path.
 *  - Every gateway module returns an enum pg_res.  PG_TEMP means "try again
 *    later", PG_PERM "will not work until something changes".  On any
 *    result other than PG_OK the function sets *err_r to a malloc'd,
 *    human-readable message (without a trailing newline) which the caller
 *    frees.  Only main() maps results to exit codes.
 *  - struct buf grows up to a hard cap given at init; appending past the cap
 *    fails instead of growing, so hostile input cannot inflate memory.
 */
#ifndef POPGATE_UTIL_H
#define POPGATE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define PG_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum pg_res {
	PG_OK = 0,
	PG_TEMP,   /* transient: network, server busy, 4xx; retry later */
	PG_PERM,   /* permanent: 5xx, refused policy; retrying will not help */
	PG_PROTO,  /* the peer broke the protocol */
	PG_IO,     /* local I/O (disk, spool) failed */
	PG_AUTH,   /* authentication refused */
	PG_CONFIG, /* configuration or usage error */
};

const char *pg_res_name(enum pg_res r);

/* How a connection is secured (POP3 `tls`, SMTP `tls`). */
enum tls_mode { TLS_NONE = 0, TLS_STARTTLS, TLS_IMPLICIT };

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PG_PRINTF(1, 2);
char *xvasprintf(const char *fmt, va_list ap) PG_PRINTF(1, 0);

/* set_err - replace *err_r (if err_r is not NULL) with a formatted message */
void set_err(char **err_r, const char *fmt, ...) PG_PRINTF(2, 3);

struct buf {
	char *data; /* always NUL-terminated when non-NULL */
	size_t len;
	size_t cap;
	size_t max; /* hard cap on len */
};

void buf_init(struct buf *b, size_t max);
/* buf_append - append n bytes; returns -1 (and appends nothing) past the cap */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_printf(struct buf *b, const char *fmt, ...) PG_PRINTF(2, 3);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

/* now_ms - monotonic clock in milliseconds, for deadlines */
int64_t now_ms(void);

/* sanitize_for_log - copy at most max bytes of s, replacing controls by '?';
 * returns a malloc'd string safe to put in a key=value log line. */
char *sanitize_for_log(const char *s, size_t len, size_t max);

#endif
