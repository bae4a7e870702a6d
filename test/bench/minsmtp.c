/*
 * minsmtp.c - the SMTP yardstick for bench.sh: a minimal pipelined SMTP
 * client.  One session; per message MAIL+RCPT+DATA in one write, the three
 * replies, then the whole body and its final dot in one write and the
 * reply.  The body is SIZE octets of CRLF lines made once in memory (no
 * file reads, no dot-stuffing needed).  No TLS, no parsing beyond reply
 * codes: the SMTP host's share of any drain, the "smtp-floor" of bench.sh.
 *
 *   minsmtp HOST PORT COUNT SIZE
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

static char buf[1 << 16];
static size_t blen, bpos;

/* reply - read one (possibly multi-line) reply; its code, or -1 at EOF */
static int reply(int fd)
{
	for (;;) {
		char *lf = memchr(buf + bpos, '\n', blen - bpos);
		if (lf != NULL) {
			char *l = buf + bpos;
			bpos = (size_t)(lf - buf) + 1;
			if (lf - l >= 4 && l[3] == '-')
				continue;
			return atoi(l);
		}
		memmove(buf, buf + bpos, blen - bpos);
		blen -= bpos;
		bpos = 0;
		ssize_t r = read(fd, buf + blen, sizeof buf - blen);
		if (r <= 0)
			return -1;
		blen += (size_t)r;
	}
}

static void put(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0) {
			perror("minsmtp: write");
			exit(1);
		}
		p += w;
		n -= (size_t)w;
	}
}

static void expect(int fd, int want_class, const char *what)
{
	int c = reply(fd);
	if (c / 100 != want_class) {
		fprintf(stderr, "minsmtp: %s: reply %d\n", what, c);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	long count = atol(argv[3]), size = atol(argv[4]);
	if (fd < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("minsmtp: connect");
		return 1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	static const char line[] =
		"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
	static const char hdr[] = "From: sender@example.org\r\nTo: bench@corp.example\r\n"
				  "Subject: bench\r\n\r\n";
	size_t ll = sizeof line - 1, n = sizeof hdr - 1;
	size_t cap = (size_t)(size > 0 ? size : 0) + n + ll + 8;
	char *body = malloc(cap);
	if (body == NULL)
		return 1;
	memcpy(body, hdr, n);
	while (n + ll <= (size_t)size || n == sizeof hdr - 1) {
		memcpy(body + n, line, ll);
		n += ll;
	}
	memcpy(body + n, ".\r\n", 3);
	n += 3;
	expect(fd, 2, "greeting");
	put(fd, "EHLO minsmtp\r\n", 14);
	expect(fd, 2, "EHLO");
	static const char env[] = "MAIL FROM:<sender@example.org>\r\n"
				  "RCPT TO:<bench@corp.example>\r\nDATA\r\n";
	for (long i = 0; i < count; i++) {
		put(fd, env, sizeof env - 1);
		expect(fd, 2, "MAIL");
		expect(fd, 2, "RCPT");
		expect(fd, 3, "DATA");
		put(fd, body, n);
		expect(fd, 2, "end of data");
	}
	put(fd, "QUIT\r\n", 6);
	reply(fd);
	free(body);
	close(fd);
	return 0;
}
