/*
 * notice.c - RFC 3464 delivery notices about held messages (see notice.h).
 *
 * The notice is streamed into the spool writer, so the number of recipients
 * and the length of their replies cost no memory.  The original header
 * block is kept in memory up to NOTICE_HDRS_MAX octets; past that it is cut
 * at a line end and the notice says so, in its human part and after the
 * quoted lines.  It is in canonical CRLF form, like every spool file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "notice.h"
#include "route.h"


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

void notice_hdrs_init(struct notice_hdrs *h)
{
	memset(h, 0, sizeof *h);
	buf_init(&h->b, NOTICE_HDRS_MAX);
}

/* cut_at_line - keep the complete lines of the block only */
static void cut_at_line(struct notice_hdrs *h)
{
	size_t n = h->b.len;
	while (n > 0 && h->b.data[n - 1] != '\n')
		n--;
	h->b.len = n;
	h->cut = 1;
	h->done = 1;
}

void notice_hdrs_feed(struct notice_hdrs *h, const void *data, size_t len)
{
	if (h->done || len == 0)
		return;
	h->total += len;
	size_t room = h->b.max - h->b.len, n = len < room ? len : room;
	buf_append(&h->b, data, n);
	const char *d = h->b.data;
	if (h->b.len >= 2 && d[0] == '\r' && d[1] == '\n') {
		h->b.len = 0; /* no header at all */
		h->done = 1;
		return;
	}
	/* the empty line; memmem, not strstr: a header may hold a NUL */
	size_t from = h->scan > 3 ? h->scan - 3 : 0;
	const char *end = memmem(d + from, h->b.len - from, "\r\n\r\n", 4);
	h->scan = h->b.len;
	if (end != NULL) {
		h->b.len = (size_t)(end - d) + 2;
		h->done = 1;
	} else if (n < len) {
		cut_at_line(h); /* over NOTICE_HDRS_MAX */
	}
}

void notice_hdrs_end(struct notice_hdrs *h)
{
	if (h->done)
		return;
	h->done = 1; /* no empty line: a message with no body */
	if (h->b.len > 0 && h->b.data[h->b.len - 1] != '\n' && buf_append(&h->b, "\r\n", 2) != 0)
		cut_at_line(h);
}

void notice_hdrs_free(struct notice_hdrs *h)
{
	buf_free(&h->b);
}

/* orig_headers - the header block of the spool file */
static void orig_headers(struct spool *sp, const struct spool_msg *m, struct notice_hdrs *h)
{
	char chunk[8192];
	int fd = -1;
	ssize_t n;
	notice_hdrs_init(h);
	(void)spool_msg_open(sp, m, &fd, NULL); /* unreadable: noted in the notice */
	if (fd < 0) {
		h->unreadable = 1;
		return;
	}
	while (!h->done && (n = read(fd, chunk, sizeof chunk)) > 0)
		notice_hdrs_feed(h, chunk, (size_t)n);
	notice_hdrs_end(h);
	close(fd);
}

/* The notice is streamed to a sink; the first failure sticks. */
struct nout {
	notice_sink_fn fn;
	void *ctx;
	enum pg_res res;
	char *err;
};

static void out_write(struct nout *o, const void *p, size_t n)
{
	if (o->res == PG_OK && n > 0)
		o->res = o->fn(o->ctx, p, n, &o->err);
}

static void out_printf(struct nout *o, const char *fmt, ...) PG_PRINTF(2, 3);

static void out_printf(struct nout *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	out_write(o, s, strlen(s));
	free(s);
}

/* boundary - one that no quoted header line contains (the id and the time
 * are not known to a sender in advance, so a few tries always do; the
 * bound keeps a block made of near-misses from costing more) */
static void boundary(const struct spool_msg *m, time_t now, const struct notice_hdrs *h,
		     char *bnd, size_t len)
{
	for (unsigned i = 0; i < 64; i++) {
		snprintf(bnd, len, "popgate-%s-%lld%s%.0u", m->id, (long long)now, i ? "-" : "", i);
		if (h->b.len == 0 || memmem(h->b.data, h->b.len, bnd, strlen(bnd)) == NULL)
			return;
	}
}

/* compose_intro - the notice's own header and its human-readable part */
static void compose_intro(struct nout *o, const struct conf *c, const struct spool_msg *m,
			  const char *to, const char *reason, int expired, time_t now,
			  const struct notice_hdrs *h, const char *bnd)
{
	char date[64];
	rfc5322_date(now, date, sizeof date);
	char *why = sanitize_for_log(reason ? reason : "no reply", reason ? strlen(reason) : 8, 400);
	out_printf(o, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\nTo: <%s>\r\n"
		   "Subject: popgate: message %s held (%s)\r\nDate: %s\r\n"
		   "Message-ID: <notice.%s.%lld@%s>\r\nAuto-Submitted: auto-replied\r\n"
		   "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
		   "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n"
		   "This is a MIME-encapsulated message.\r\n\r\n",
		   c->hostname, to, m->id, expired ? "expired" : "refused", date, m->id,
		   (long long)now, c->hostname, bnd);
	out_printf(o, "--%s\r\nContent-Description: Notification\r\n"
		   "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
		   "This is popgate on %s.\r\n\r\nThe message %s (account %s, from <%s>) %s\r\n"
		   "It is held in the spool; nothing was bounced to its sender unless\r\n"
		   "bounce = sender is configured.  See it with `popgate queue --state held`.\r\n\r\n"
		   "Reason: %s\r\n\r\n",
		   bnd, c->hostname, m->id, m->account, m->sender,
		   expired ? "could not be delivered before max_queue_time ran out."
			   : "was refused by the local mail host.",
		   why);
	if (h->cut)
		out_printf(o, "Its header block is longer than the %u KiB a notice quotes: only\r\n"
			   "its first %zu octets (whole lines) are below, the rest was cut.\r\n"
			   "The whole message is in the spool: `popgate show %s`.\r\n\r\n",
			   NOTICE_HDRS_MAX / 1024, h->b.len, m->id);
	free(why);
}

void notice_compose(const struct conf *c, const struct spool_msg *m, const char *to,
		    const char *reason, int expired, time_t now, const struct notice_hdrs *h,
		    notice_sink_fn fn, void *ctx, enum pg_res *res_r, char **err_r)
{
	struct nout o = { fn, ctx, PG_OK, NULL };
	char date[64], arrival[64], bnd[96];
	rfc5322_date(now, date, sizeof date);
	rfc5322_date(m->created, arrival, sizeof arrival);
	boundary(m, now, h, bnd, sizeof bnd);
	compose_intro(&o, c, m, to, reason, expired, now, h, bnd);
	out_printf(&o, "--%s\r\nContent-Description: Delivery report\r\n"
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
		out_printf(&o, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n"
			   "Remote-MTA: dns; %s\r\nDiagnostic-Code: smtp; %s\r\n"
			   "Last-Attempt-Date: %s\r\n",
			   m->rcpts[i].addr, rst, c->smtp.host, rwhy, date);
		free(rwhy);
	}
	out_printf(&o, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
		   "Content-Type: text/rfc822-headers\r\n\r\n", bnd);
	if (h->unreadable || (h->b.len == 0 && !h->cut))
		out_printf(&o, "X-Popgate-Note: the original %s\r\n",
			   h->unreadable ? "message file could not be read" : "message has no header");
	out_write(&o, h->b.data, h->b.len);
	if (h->cut)
		out_printf(&o, "X-Popgate-Note: the header block was cut here, after %zu of its "
			   "octets (a notice quotes at most %u KiB)\r\n",
			   h->b.len, NOTICE_HDRS_MAX / 1024);
	out_printf(&o, "\r\n--%s--\r\n", bnd);
	*res_r = o.res;
	if (o.res != PG_OK && err_r != NULL)
		*err_r = o.err;
	else
		free(o.err);
}

static enum pg_res spool_pg(enum spool_res r)
{
	return r == SPOOL_OK ? PG_OK : r == SPOOL_BUSY ? PG_TEMP : PG_IO;
}

static enum pg_res writer_sink(void *ctx, const void *data, size_t len, char **err_r)
{
	return spool_pg(spool_writer_write(ctx, data, len, err_r));
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
	struct notice_hdrs h;
	struct spool_writer *w = NULL;
	char uidl[96];
	snprintf(uidl, sizeof uidl, "notice-%s-%lld", m->id, (long long)now);
	orig_headers(sp, m, &h);
	const char *rcpts[1] = { to };
	struct spool_envelope env = { .sender = "", .rcpts = rcpts, .nrcpts = 1 };
	enum pg_res res = spool_pg(spool_writer_begin(sp, NOTICE_ACCOUNT, uidl, &w, err_r));
	if (res == PG_OK)
		notice_compose(c, m, to, reason, expired, now, &h, writer_sink, w, &res, err_r);
	if (res != PG_OK)
		spool_writer_abort(&w);
	else
		res = spool_pg(spool_writer_finish(&w, &env, err_r));
	if (res == PG_OK)
		res = spool_pg(spool_commit(sp, NULL, NULL, err_r));
	if (res == PG_OK)
		LOG_INFO("id=%s account=%s status=notice to=<%s> uidl=%s%s", m->id, m->account, to,
			 uidl, h.cut ? " headers=cut" : "");
	notice_hdrs_free(&h);
	return res;
}
