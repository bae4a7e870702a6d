/*
 * nodelay.c - LD_PRELOAD shim: every TCP socket gets TCP_NODELAY when it
 * connects, so fetchmail's line-at-a-time writes are not held by Nagle's
 * algorithm until the peer's delayed ACK (about 40 ms per message on
 * loopback).  Used by test/bench/bench.sh for "fetchmail+nodelay".
 *
 *   gcc -shared -fPIC -o nodelay.so nodelay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int (*real)(int, const struct sockaddr *, socklen_t) =
		(int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
	int one = 1, type = 0;
	socklen_t tlen = sizeof type;

	if (addr != NULL && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) &&
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return real(fd, addr, len);
}
