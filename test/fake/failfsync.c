/*
 * failfsync.c - LD_PRELOAD shim for the disk-fault test: the Nth fsync() or
 * fdatasync() on a file whose path contains FAILFSYNC_MATCH fails with EIO
 * (and does not sync), as a dying disk would report it.  Every other call
 * goes to libc.
 *
 *   gcc -shared -fPIC -o failfsync.so failfsync.c -ldl
 *   FAILFSYNC_MATCH=/spool/tmp/ FAILFSYNC_N=3 LD_PRELOAD=./failfsync.so popgate ...
 *
 * A slow disk instead: every fsync() or fdatasync() on a file whose path
 * contains FAILFSYNC_SLOW_MATCH sleeps FAILFSYNC_SLOW_MS milliseconds first
 * (the crash test widens the window in which a commit is written but its
 * fsync has not returned, as a loaded disk does).  FAILFSYNC_SLOW_FIRST=1:
 * only the first such call, and only in a process group leader (the
 * crash test starts popgate with setsid: its recovery commit at start).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int seen;

/* fd_path - the path of fd, or "" */
static const char *fd_path(int fd, char *path, size_t size)
{
	char link[64];
	ssize_t len;

	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	len = readlink(link, path, size - 1);
	path[len < 0 ? 0 : len] = '\0';
	return path;
}

/* slow - sleep before the sync of a matching file */
static void slow(int fd)
{
	const char *match = getenv("FAILFSYNC_SLOW_MATCH");
	const char *ms = getenv("FAILFSYNC_SLOW_MS");
	const char *first = getenv("FAILFSYNC_SLOW_FIRST");
	static pid_t slowed; /* the process whose first call was slowed */
	char path[4096];

	if (match == NULL || ms == NULL || strstr(fd_path(fd, path, sizeof path), match) == NULL)
		return;
	if (first != NULL && atoi(first) == 1) {
		if (slowed == getpid() || getpid() != getpgrp())
			return;
		slowed = getpid();
	}
	struct timespec ts = { atoi(ms) / 1000, (long)(atoi(ms) % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* hit - is this the call that must fail? */
static int hit(int fd)
{
	const char *match = getenv("FAILFSYNC_MATCH");
	const char *nth = getenv("FAILFSYNC_N");
	char link[64], path[4096];
	ssize_t len;

	if (match == NULL || nth == NULL)
		return 0;
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	len = readlink(link, path, sizeof path - 1);
	if (len < 0)
		return 0;
	path[len] = '\0';
	if (strstr(path, match) == NULL)
		return 0;
	if (++seen != atoi(nth))
		return 0;
	fprintf(stderr, "failfsync: failing fsync #%d on %s with EIO\n", seen, path);
	return 1;
}

int fsync(int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");

	if (hit(fd)) {
		errno = EIO;
		return -1;
	}
	slow(fd);
	return real(fd);
}

int fdatasync(int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

	if (hit(fd)) {
		errno = EIO;
		return -1;
	}
	slow(fd);
	return real(fd);
}
