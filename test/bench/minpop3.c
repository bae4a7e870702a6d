/*
 * minpop3.c - the yardstick for bench_pop3.sh: a minimal pipelined POP3
 * RETR client.  USER/PASS, then RETR 1..N in batches of 64 written with one
 * write each, replies counted by their terminating "." lines; the bodies go
 * nowhere.  No TLS, no parsing beyond what counting needs.  With a sixth
 * argument "dele", each RETR is followed by its DELE in the same batch and
 * the client waits for the reply to QUIT (the server's expunge): the
 * server's share of any drain, the floor for bench.sh.
 *
 *   minpop3 HOST PORT USER PASS COUNT [dele]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 20];
static size_t blen, bpos;

/* next_line - pointer to the next line (without LF) or NULL at EOF */
static char *next_line(int fd, size_t *n)
{
	for (;;) {
		char *lf = memchr(buf + bpos, '\n', blen - bpos);
		if (lf != NULL) {
			char *l = buf + bpos;
			*n = (size_t)(lf - l);
			bpos = (size_t)(lf - buf) + 1;
			return l;
		}
		memmove(buf, buf + bpos, blen - bpos);
		blen -= bpos;
		bpos = 0;
		ssize_t r = read(fd, buf + blen, sizeof buf - blen);
		if (r <= 0)
			return NULL;
		blen += (size_t)r;
	}
}

static void cmd(int fd, const char *s)
{
	size_t n;
	if (write(fd, s, strlen(s)) < 0 || next_line(fd, &n) == NULL || buf[bpos - n - 1] != '+') {
		fprintf(stderr, "minpop3: %s failed\n", s);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 6 && !(argc == 7 && strcmp(argv[6], "dele") == 0))
		return 2;
	int dele = argc == 7;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return 1;
	size_t n;
	next_line(fd, &n);
	char line[512];
	snprintf(line, sizeof line, "USER %s\r\n", argv[3]);
	cmd(fd, line);
	snprintf(line, sizeof line, "PASS %s\r\n", argv[4]);
	cmd(fd, line);
	long count = atol(argv[5]), sent = 0, done = 0;
	unsigned long long octets = 0;
	while (done < count) {
		char batch[64 * 48];
		size_t bl = 0;
		while (sent < count && sent - done < 64) {
			++sent;
			bl += (size_t)snprintf(batch + bl, sizeof batch - bl, "RETR %ld\r\n", sent);
			if (dele)
				bl += (size_t)snprintf(batch + bl, sizeof batch - bl, "DELE %ld\r\n",
						       sent);
		}
		if (bl > 0 && write(fd, batch, bl) != (ssize_t)bl)
			return 1;
		char *l = next_line(fd, &n); /* +OK */
		if (l == NULL || l[0] != '+')
			return 1;
		while ((l = next_line(fd, &n)) != NULL && !(n <= 2 && l[0] == '.' && (n == 1 || l[1] == '\r')))
			octets += n + 1;
		if (l == NULL)
			return 1;
		if (dele && ((l = next_line(fd, &n)) == NULL || l[0] != '+'))
			return 1; /* the DELE's +OK */
		done++;
	}
	if (write(fd, "QUIT\r\n", 6) < 0)
		return 1;
	char *q = next_line(fd, &n);
	if (dele && (q == NULL || q[0] != '+'))
		return 1;
	printf("%ld messages, %llu octets\n", done, octets);
	return 0;
}
