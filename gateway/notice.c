/*
 * notice.c - RFC 3464 delivery notices about held messages (see notice.h).
 *
 * The notice is built in a bounded buffer: the original header block is
 * copied up to NOTICE_HDRS_MAX octets (cut at a line end), everything else
 * is small.  It is in canonical CRLF form, like every spool file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "notice.h"
#include "route.h"

#define NOTICE_HDRS_MAX (64 * 1024)
#define NOTICE_MAX (NOTICE_HDRS_MAX + 64 * 1024)

const char *notice_recipient(const struct conf *c, const struct spool_msg *m)
{
	if (strcmp(m->account, NOTICE_ACCOUNT) == 0)
		return NULL; /* never a notice about a notice */
	switch (c->bounce) {
	case BOUNCE_SENDER:
		if (m->sender[0] != '\0' && route_addr_ok(m->sender))
			return m->sender;
		return c->postmaster; /* never to <>: the postmaster, if any */
	case BOUNCE_POSTMASTER:
		return c->postmaster;
	default:
		return NULL;
	}
}

static void rfc5322_date(time_t t, char *out, size_t len)
{
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(out, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* status_code - the enhanced status code of a reply ("550 5.1.1 ...") or a
 * default from its class */
static void status_code(const char *reply, int expired, char *out, size_t len)
{
	unsigned a, b, c;
	int code = 0;
	if (expired) {
		snprintf(out, len, "4.4.7");
		return;
	}
	if (reply != NULL && sscanf(reply, "%d %u.%u.%u", &code, &a, &b, &c) == 4 &&
	    (a == 4 || a == 5) && b < 1000 && c < 1000) {
		snprintf(out, len, "%u.%u.%u", a, b, c);
		return;
	}
	snprintf(out, len, "%s", reply != NULL && reply[0] == '4' ? "4.0.0" : "5.0.0");
}

/* orig_headers - the header block of the spool file, CRLF, bounded */
static void orig_headers(struct spool *sp, const struct spool_msg *m, struct buf *b)
{
	char chunk[8192];
	struct buf h;
	buf_init(&h, NOTICE_HDRS_MAX);
	int fd = -1;
	(void)spool_msg_open(sp, m, &fd, NULL); /* unreadable: noted below */
	ssize_t n;
	while (fd >= 0 && (n = read(fd, chunk, sizeof chunk)) > 0) {
		size_t room = h.max - h.len;
		buf_append(&h, chunk, (size_t)n < room ? (size_t)n : room);
		char *end = h.data ? strstr(h.data, "\r\n\r\n") : NULL;
		if (end != NULL) {
			h.len = (size_t)(end - h.data) + 2;
			break;
		}
		if (h.len == h.max) { /* cut at the last complete line */
			char *p = h.data + h.len;
			while (p > h.data && !(p[-1] == '\n'))
				p--;
			h.len = (size_t)(p - h.data);
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	if (h.len == 0)
		buf_printf(b, "X-Popgate-Note: the original message file could not be read\r\n");
	else
		buf_append(b, h.data, h.len);
	buf_free(&h);
}

/* compose - the whole notice into b */
static void compose(const struct conf *c, struct spool *sp, const struct spool_msg *m,
		    const char *to, const char *reason, int expired, time_t now, struct buf *b)
{
	char date[64], arrival[64], st[16], bnd[64];
	rfc5322_date(now, date, sizeof date);
	rfc5322_date(m->created, arrival, sizeof arrival);
	status_code(reason, expired, st, sizeof st);
	snprintf(bnd, sizeof bnd, "popgate-%s-%lld", m->id, (long long)now);
	char *why = sanitize_for_log(reason ? reason : "no reply", reason ? strlen(reason) : 8, 400);
	buf_printf(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\nTo: <%s>\r\n"
		   "Subject: popgate: message %s held (%s)\r\nDate: %s\r\n"
		   "Message-ID: <notice.%s.%lld@%s>\r\nAuto-Submitted: auto-replied\r\n"
		   "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
		   "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n"
		   "This is a MIME-encapsulated message.\r\n\r\n",
		   c->hostname, to, m->id, expired ? "expired" : "refused", date, m->id,
		   (long long)now, c->hostname, bnd);
	buf_printf(b, "--%s\r\nContent-Description: Notification\r\n"
		   "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
		   "This is popgate on %s.\r\n\r\nThe message %s (account %s, from <%s>) %s\r\n"
		   "It is held in the spool; nothing was bounced to its sender unless\r\n"
		   "bounce = sender is configured.  See it with `popgate queue --state held`.\r\n\r\n"
		   "Reason: %s\r\n\r\n",
		   bnd, c->hostname, m->id, m->account, m->sender,
		   expired ? "could not be delivered before max_queue_time ran out."
			   : "was refused by the local mail host.",
		   why);
	buf_printf(b, "--%s\r\nContent-Description: Delivery report\r\n"
		   "Content-Type: message/delivery-status\r\n\r\n"
		   "Reporting-MTA: dns; %s\r\nX-Popgate-Queue-ID: %s\r\nOriginal-Envelope-Id: %s\r\n"
		   "Arrival-Date: %s\r\n",
		   bnd, c->hostname, m->id, m->id, arrival);
	for (size_t i = 0; i < m->nrcpts; i++) {
		if (m->rcpts[i].state == SPOOL_SENT)
			continue;
		const char *r = m->rcpts[i].reply ? m->rcpts[i].reply : reason;
		char rst[16];
		status_code(r, expired, rst, sizeof rst);
		char *rwhy = sanitize_for_log(r ? r : "no reply", r ? strlen(r) : 8, 400);
		buf_printf(b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n"
			   "Remote-MTA: dns; %s\r\nDiagnostic-Code: smtp; %s\r\n"
			   "Last-Attempt-Date: %s\r\n",
			   m->rcpts[i].addr, rst, c->smtp.host, rwhy, date);
		free(rwhy);
	}
	buf_printf(b, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
		   "Content-Type: text/rfc822-headers\r\n\r\n", bnd);
	orig_headers(sp, m, b);
	buf_printf(b, "\r\n--%s--\r\n", bnd);
	free(why);
}

static enum pg_res spool_pg(enum spool_res r)
{
	return r == SPOOL_OK ? PG_OK : r == SPOOL_BUSY ? PG_TEMP : PG_IO;
}

enum pg_res notice_send(const struct conf *c, struct spool *sp, const struct spool_msg *m,
			const char *reason, int expired, time_t now, char **err_r)
{
	const char *to = notice_recipient(c, m);
	if (to == NULL) {
		LOG_INFO("id=%s account=%s status=no-notice reason=\"%s\"", m->id, m->account,
			 strcmp(m->account, NOTICE_ACCOUNT) == 0 ? "a notice about a notice"
								 : "no notice recipient (bounce)");
		return PG_OK;
	}
	struct buf b;
	struct spool_writer *w = NULL;
	char uidl[96];
	snprintf(uidl, sizeof uidl, "notice-%s-%lld", m->id, (long long)now);
	buf_init(&b, NOTICE_MAX);
	compose(c, sp, m, to, reason, expired, now, &b);
	const char *rcpts[1] = { to };
	struct spool_envelope env = { .sender = "", .rcpts = rcpts, .nrcpts = 1 };
	enum pg_res res = spool_pg(spool_writer_begin(sp, NOTICE_ACCOUNT, uidl, &w, err_r));
	if (res == PG_OK)
		res = spool_pg(spool_writer_write(w, b.data, b.len, err_r));
	if (res != PG_OK)
		spool_writer_abort(&w);
	else
		res = spool_pg(spool_writer_finish(&w, &env, err_r));
	if (res == PG_OK)
		res = spool_pg(spool_commit(sp, NULL, NULL, err_r));
	if (res == PG_OK)
		LOG_INFO("id=%s account=%s status=notice to=<%s> uidl=%s", m->id, m->account, to,
			 uidl);
	buf_free(&b);
	return res;
}
