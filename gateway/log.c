/* log.c - key=value event lines to syslog or stderr (see log.h) */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* syslog.h defines LOG_ERR, LOG_INFO, LOG_DEBUG as priorities; this file
 * needs those, not our logging macros */
#undef LOG_ERR
#undef LOG_WARN
#undef LOG_INFO
#undef LOG_DEBUG
#include <syslog.h>

static int log_stderr = 1;
static enum log_level log_lvl = LOGL_INFO;
static const char *log_ident = "popgate";
static void (*log_tty_hook)(void);

void log_set_tty_hook(void (*fn)(void))
{
	log_tty_hook = fn;
}

void log_open(const char *ident, int to_stderr, enum log_level level)
{
	log_ident = ident;
	log_stderr = to_stderr;
	log_lvl = level;
	if (!to_stderr)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_level(enum log_level level)
{
	log_lvl = level;
}

enum log_level log_get_level(void)
{
	return log_lvl;
}

int log_level_parse(const char *s, enum log_level *level_r)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (strcasecmp(s, names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const tag[] = { "error", "warning", "info", "debug" };
	if (level > log_lvl)
		return;
	va_list ap;
	va_start(ap, fmt);
	char *line = xvasprintf(fmt, ap);
	va_end(ap);
	if (log_stderr) {
		struct timespec ts;
		struct tm tm;
		char stamp[32];
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		/* one write per line so concurrent writers do not interleave */
		char *out = xasprintf("%s.%03ld %s[%ld]: %s: %s\n", stamp, ts.tv_nsec / 1000000L,
				      log_ident, (long)getpid(), tag[level], line);
		if (log_tty_hook != NULL)
			log_tty_hook();
		fputs(out, stderr);
		fflush(stderr);
		free(out);
	} else {
		syslog(prio[level], "%s: %s", tag[level], line);
	}
	free(line);
}

void log_close(void)
{
	if (!log_stderr)
		closelog();
}
