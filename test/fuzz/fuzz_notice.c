/* fuzz_notice.c - the parts of the delivery notice that quote what a sender
 * (the original message) and the local host (its replies) wrote: the
 * header block collector (notice_hdrs_*) and the composer
 * (notice_compose).
 *
 * Input: byte 0 (bit 0: expired), byte 1 (recipients: its low 3 bits, or
 * 100 when bit 7 is set), then the SMTP reply up to the first LF, then the
 * held message (fuzz_hdrs.h: with repeats).  Checked: the same header block
 * whatever the chunking, within NOTICE_HDRS_MAX; the notice's own header is
 * its eight fields; its text and report parts are clean CRLF text (no bare
 * CR, LF or other control); its MIME boundary starts a line exactly four
 * times (three parts and the close), so no quoted line can end a part. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz_hdrs.h"
#include "log.h"
#include "notice.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* notice_send's spool calls, never reached here: stubs, so the target
 * needs neither SQLite nor the spool library */
enum spool_res spool_msg_open(struct spool *sp, const struct spool_msg *m, int *fd_r,
			      char **err_r)
{
	(void)sp, (void)m, (void)fd_r, (void)err_r;
	abort();
}
enum spool_res spool_writer_begin(struct spool *sp, const char *account, const char *uidl,
				  struct spool_writer **w_r, char **err_r)
{
	(void)sp, (void)account, (void)uidl, (void)w_r, (void)err_r;
	abort();
}
enum spool_res spool_writer_write(struct spool_writer *w, const void *data, size_t len,
				  char **err_r)
{
	(void)w, (void)data, (void)len, (void)err_r;
	abort();
}
enum spool_res spool_writer_finish(struct spool_writer **w, const struct spool_envelope *env,
				   char **err_r)
{
	(void)w, (void)env, (void)err_r;
	abort();
}
void spool_writer_abort(struct spool_writer **w)
{
	(void)w;
	abort();
}
enum spool_res spool_commit(struct spool *sp, spool_commit_cb cb, void *ctx, char **err_r)
{
	(void)sp, (void)cb, (void)ctx, (void)err_r;
	abort();
}

static void feed(void *ctx, const void *p, size_t n)
{
	notice_hdrs_feed(ctx, p, n);
}

struct out {
	char *p;
	size_t len, cap;
};

static enum pg_res sink(void *ctx, const void *data, size_t len, char **err_r)
{
	struct out *o = ctx;
	(void)err_r;
	if (o->len + len > o->cap) {
		o->cap = (o->len + len) * 2;
		o->p = realloc(o->p, o->cap);
	}
	memcpy(o->p + o->len, data, len);
	o->len += len;
	return PG_OK;
}

static size_t count(const char *h, size_t n, const char *needle)
{
	size_t k = 0, nl = strlen(needle);
	for (const char *p = h; (p = memmem(p, n - (size_t)(p - h), needle, nl)) != NULL; p += nl)
		k++;
	return k;
}

/* clean - CRLF text without other controls */
static void clean(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			abort();
		if (c == '\n' && (i == 0 || p[i - 1] != '\r'))
			abort();
		if ((c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		log_open("fuzz", 1, LOGL_ERR);
		quiet = 1;
	}
	if (size < 2)
		return 0;
	int expired = data[0] & 1;
	size_t nrcpts = data[1] & 0x80 ? 100 : data[1] & 7;
	const uint8_t *d = data + 2, *lf = memchr(d, '\n', size - 2);
	char *reason = lf ? strndup((const char *)d, (size_t)(lf - d)) : NULL;
	size_t off = lf ? (size_t)(lf - data) + 1 : 2;
	struct notice_hdrs big, small;
	notice_hdrs_init(&big);
	notice_hdrs_init(&small);
	fuzz_expand(data + off, size - off, 0, feed, &big);
	notice_hdrs_end(&big);
	if (big.total <= FUZZ_SMALL_MAX) {
		fuzz_expand(data + off, size - off, 1, feed, &small);
		notice_hdrs_end(&small);
		if (small.b.len != big.b.len || small.cut != big.cut ||
		    (big.b.len && memcmp(small.b.data, big.b.data, big.b.len) != 0))
			abort(); /* chunking changed the quoted block */
	}
	if (big.b.len > NOTICE_HDRS_MAX)
		abort();
	struct spool_rcpt rc[100];
	for (size_t i = 0; i < nrcpts; i++)
		rc[i] = (struct spool_rcpt){ .addr = "r@corp.example", .state = SPOOL_HELD,
					     .reply = i % 2 ? reason : NULL };
	struct spool_msg m = { .id = "0123456789ABCDEF", .account = "acct",
			       .sender = "s@example.org", .rcpts = rc, .nrcpts = nrcpts,
			       .created = 1764669600 };
	struct conf c = { .hostname = "gw.example" };
	c.smtp.host = "127.0.0.1";
	struct out o = { 0 };
	enum pg_res res;
	notice_compose(&c, &m, "pm@corp.example", reason, expired, 1764669700, &big, sink, &o,
		       &res, NULL);
	if (res != PG_OK)
		abort();
	/* the notice's own header: eight fields, clean */
	const char *hend = memmem(o.p, o.len, "\r\n\r\n", 4);
	if (hend == NULL)
		abort();
	size_t hl = (size_t)(hend - o.p) + 2, fields = 0;
	clean(o.p, hl);
	for (size_t i = 0; i < hl; i++)
		fields += (i == 0 || o.p[i - 1] == '\n') && o.p[i] != ' ' && o.p[i] != '\t';
	if (fields != 8)
		abort();
	/* the text and report parts: clean up to the quoted block */
	const char *q = memmem(o.p, o.len, "Content-Type: text/rfc822-headers\r\n\r\n", 37);
	if (q == NULL)
		abort();
	clean(o.p, (size_t)(q - o.p) + 37);
	const char *b = memmem(o.p, hl, "boundary=\"", 10);
	char bnd[128] = "\n--"; /* a delimiter starts a line (RFC 2046 5.1.1) */
	const char *bq = b ? memchr(b + 10, '"', hl - (size_t)(b + 10 - o.p)) : NULL;
	if (bq == NULL || (size_t)(bq - b - 10) > sizeof bnd - 4)
		abort();
	memcpy(bnd + 3, b + 10, (size_t)(bq - b - 10));
	bnd[3 + (bq - b - 10)] = '\0';
	if (count(o.p, o.len, bnd) != 4)
		abort(); /* a quoted line could end a part */
	free(o.p);
	free(reason);
	notice_hdrs_free(&big);
	notice_hdrs_free(&small);
	return 0;
}
