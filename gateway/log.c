/* log.c - key=value event lines to syslog or stderr (see log.h) */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
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

/* the process id, cached; a forked child fetches its own (fork_child) */
static pid_t log_pid;
static int log_pid_hooked;

static void fork_child(void)
{
	log_pid = 0;
}

static pid_t my_pid(void)
{
	if (!log_pid_hooked) {
		log_pid_hooked = pthread_atfork(NULL, NULL, fork_child) == 0;
		log_pid = 0;
	}
	if (log_pid == 0 || !log_pid_hooked)
		log_pid = getpid();
	return log_pid;
}

/* stamp - "YYYY-mm-ddTHH:MM:SS.mmm" of now; the seconds part formatted once
 * per second */
static void stamp(char out[48])
{
	static time_t last = (time_t)-1;
	static char sec[24];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last) {
		struct tm tm;
		localtime_r(&ts.tv_sec, &tm);
		strftime(sec, sizeof sec, "%Y-%m-%dT%H:%M:%S", &tm);
		last = ts.tv_sec;
	}
	snprintf(out, 48, "%s.%03d", sec, (int)(ts.tv_nsec / 1000000L));
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const tag[] = { "error", "warning", "info", "debug" };
	if (level > log_lvl)
		return;
	va_list ap;
	if (!log_stderr) {
		va_start(ap, fmt);
		char *line = xvasprintf(fmt, ap);
		va_end(ap);
		syslog(prio[level], "%s: %s", tag[level], line);
		free(line);
		return;
	}
	/* one write per line so concurrent writers do not interleave; most
	 * lines fit the stack buffer, longer ones are formatted again */
	char buf[2048], ts[48], *out = buf;
	stamp(ts);
	int pre = snprintf(buf, sizeof buf, "%s %s[%ld]: %s: ", ts, log_ident, (long)my_pid(),
			   tag[level]);
	if (pre < 0 || (size_t)pre >= sizeof buf - 2)
		pre = 0;
	va_start(ap, fmt);
	int n = vsnprintf(buf + pre, sizeof buf - (size_t)pre - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)pre + (size_t)n + 1 >= sizeof buf) {
		va_start(ap, fmt);
		char *line = xvasprintf(fmt, ap);
		va_end(ap);
		out = xasprintf("%.*s%s\n", pre, buf, line);
		free(line);
	} else {
		buf[pre + n] = '\n';
		buf[pre + n + 1] = '\0';
	}
	if (log_tty_hook != NULL)
		log_tty_hook();
	fputs(out, stderr);
	fflush(stderr);
	if (out != buf)
		free(out);
}

void log_close(void)
{
	if (!log_stderr)
		closelog();
}
