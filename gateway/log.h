/*
 * log.h - one key=value line per event, to syslog or stderr.
 *
 * Contract: log_open() once; after that every module logs through log_msg()
 * or the LOG_* macros.  Lines look like
 *   account=office uidl=123 id=5F00AB12C0FFEE01 status=fetched size=2048
 * (log.c itself must include log.h before syslog.h: the names clash.)
 * Callers must never pass a secret (password, token, its base64 form).
 * Text that came from a peer is passed through sanitize_for_log() first.
 */
#ifndef POPGATE_LOG_H
#define POPGATE_LOG_H

#include "util.h"

enum log_level { LOGL_ERR = 0, LOGL_WARN, LOGL_INFO, LOGL_DEBUG };

/* log_open - to_stderr=1 writes to stderr, 0 to syslog (facility mail) */
void log_open(const char *ident, int to_stderr, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *s, enum log_level *level_r);
void log_msg(enum log_level level, const char *fmt, ...) PG_PRINTF(2, 3);
void log_close(void);
/* log_set_tty_hook - fn (or NULL) runs before each line written to stderr
 * (the progress bar of poll --once wipes itself there) */
void log_set_tty_hook(void (*fn)(void));

#define LOG_ERR(...) log_msg(LOGL_ERR, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) \
	do { if (log_get_level() >= LOGL_DEBUG) log_msg(LOGL_DEBUG, __VA_ARGS__); } while (0)

#endif
