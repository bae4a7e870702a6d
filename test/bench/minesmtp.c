/*
 * minesmtp.c - the libesmtp yardstick for issue 16: what libesmtp alone
 * costs to send COUNT messages of SIZE octets over one session, with no
 * spool, no journal and no SQLite.  The body is made once in memory and
 * handed to libesmtp in one chunk per message (the relay's in-index path);
 * TCP_NODELAY is set on the session's socket as the relay does.  Its CPU
 * (/usr/bin/time) is the floor of popgate's relay with libesmtp.
 *
 *   minesmtp HOST PORT COUNT SIZE [PER_SESSION]
 *
 * PER_SESSION (default COUNT): messages per SMTP session.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libesmtp.h>

static char *body;
static size_t blen;

struct src {
	int sent;
};

static const char *cb(void **ctx, int *len, void *arg)
{
	struct src *s = arg;
	(void)ctx;
	if (len == NULL) {
		s->sent = 0;
		return NULL;
	}
	if (s->sent) {
		*len = 0;
		return "";
	}
	s->sent = 1;
	*len = (int)blen;
	return body;
}

/* on connect: TCP_NODELAY on the session's socket (the highest open fd) */
static void event_cb(smtp_session_t s, int event, void *arg, ...)
{
	(void)s;
	(void)arg;
	if (event != SMTP_EV_CONNECT)
		return;
	for (int fd = 3; fd < 64; fd++) {
		struct stat sb;
		int one = 1;
		if (fstat(fd, &sb) == 0 && S_ISSOCK(sb.st_mode))
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: minesmtp HOST PORT COUNT SIZE [PER_SESSION]\n");
		return 2;
	}
	char hostport[300];
	long count = atol(argv[3]), size = atol(argv[4]);
	long per = argc == 6 ? atol(argv[5]) : count;
	snprintf(hostport, sizeof hostport, "%s:%s", argv[1], argv[2]);
	static const char line[] =
		"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
	static const char hdr[] = "From: sender@example.org\r\nTo: bench@corp.example\r\n"
				  "Subject: bench\r\nMessage-Id: <bench@example.org>\r\n"
				  "Date: Sun, 22 Nov 2026 02:00:00 +0000\r\n\r\n";
	size_t ll = sizeof line - 1;
	body = malloc((size_t)(size > 0 ? size : 0) + sizeof hdr + ll);
	if (body == NULL || per < 1)
		return 1;
	memcpy(body, hdr, sizeof hdr - 1);
	blen = sizeof hdr - 1;
	while (blen + ll <= (size_t)size || blen == sizeof hdr - 1) {
		memcpy(body + blen, line, ll);
		blen += ll;
	}
	struct src *srcs = calloc((size_t)per, sizeof *srcs);
	if (srcs == NULL)
		return 1;
	long done = 0, ok = 0;
	while (done < count) {
		long n = count - done < per ? count - done : per;
		smtp_session_t s = smtp_create_session();
		if (s == NULL || !smtp_set_server(s, hostport) || !smtp_set_hostname(s, "minesmtp"))
			return 1;
		smtp_starttls_enable(s, Starttls_DISABLED);
		smtp_set_eventcb(s, event_cb, NULL);
		smtp_message_t *ms = calloc((size_t)n, sizeof *ms);
		for (long i = 0; i < n; i++) {
			ms[i] = smtp_add_message(s);
			if (ms[i] == NULL || !smtp_set_reverse_path(ms[i], "sender@example.org") ||
			    !smtp_set_messagecb(ms[i], cb, &srcs[i]) ||
			    smtp_add_recipient(ms[i], "bench@corp.example") == NULL)
				return 1;
		}
		if (!smtp_start_session(s)) {
			char eb[128];
			fprintf(stderr, "minesmtp: %s\n", smtp_strerror(smtp_errno(), eb, sizeof eb));
			return 1;
		}
		for (long i = 0; i < n; i++) {
			const smtp_status_t *st = smtp_message_transfer_status(ms[i]);
			ok += st != NULL && st->code / 100 == 2;
		}
		free(ms);
		smtp_destroy_session(s);
		done += n;
	}
	free(srcs);
	free(body);
	printf("minesmtp: %ld of %ld accepted\n", ok, count);
	return ok == count ? 0 : 1;
}
