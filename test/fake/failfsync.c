/*
 * failfsync.c - LD_PRELOAD shim for the disk-fault test: the Nth fsync() or
 * fdatasync() on a file whose path contains FAILFSYNC_MATCH fails with EIO
 * (and does not sync), as a dying disk would report it.  Every other call
 * goes to libc.
 *
 *   gcc -shared -fPIC -o failfsync.so failfsync.c -ldl
 *   FAILFSYNC_MATCH=/spool/tmp/ FAILFSYNC_N=3 LD_PRELOAD=./failfsync.so popgate ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int seen;

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
	return real(fd);
}

int fdatasync(int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

	if (hit(fd)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}
