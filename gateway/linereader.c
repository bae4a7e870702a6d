/*
 * linereader.c - the bounded line reader (see linereader.h).
 *
 * The buffer holds the unread bytes in [start, end).  A returned line is
 * just a pointer into the buffer, so a line costs no copy.  We move the
 * unread tail to the front only when the free space at the end is gone and
 * a line is still incomplete; each byte is therefore moved at most once per
 * line it belongs to, never once per returned line (no O(n^2) memmove).
 * `scanned` remembers how far we already searched for LF so a line that
 * arrives in many small reads is not re-scanned from its start each time.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "linereader.h"

struct linereader {
	char *buf;
	size_t max;     /* capacity of buf == longest piece returned */
	size_t start;   /* first unread byte */
	size_t end;     /* one past the last received byte */
	size_t scanned; /* bytes in [start, scanned) contain no LF */
	int midline;    /* last piece returned was incomplete (complete=0) */
	lr_read_fn fn;
	void *ctx;
};

struct linereader *lr_new(size_t max_line, lr_read_fn fn, void *ctx)
{
	struct linereader *lr = xcalloc(1, sizeof *lr);
	if (max_line == 0)
		max_line = LR_DEFAULT_MAX;
	lr->buf = xmalloc(max_line);
	lr->max = max_line;
	lr->fn = fn;
	lr->ctx = ctx;
	return lr;
}

void lr_free(struct linereader **lr)
{
	if (lr == NULL || *lr == NULL)
		return;
	free((*lr)->buf);
	free(*lr);
	*lr = NULL;
}

size_t lr_pending(const struct linereader *lr)
{
	return lr->end - lr->start;
}

void lr_discard(struct linereader *lr)
{
	lr->start = lr->end = lr->scanned = 0;
	lr->midline = 0;
}

/* take - hand out [start, start+n) and advance past it */
static void take(struct linereader *lr, size_t n, int complete, const char **line_r,
		 size_t *len_r, int *complete_r)
{
	*line_r = lr->buf + lr->start;
	*len_r = n;
	*complete_r = complete;
	lr->start += n;
	lr->scanned = lr->start;
	lr->midline = !complete;
	if (lr->start == lr->end)
		lr->start = lr->end = lr->scanned = 0; /* free compaction */
}

/* fill - one read into the free tail, compacting first if the tail is full */
static enum pg_res fill(struct linereader *lr, char **err_r)
{
	if (lr->end == lr->max && lr->start > 0) {
		size_t n = lr->end - lr->start;
		memmove(lr->buf, lr->buf + lr->start, n);
		lr->scanned -= lr->start;
		lr->start = 0;
		lr->end = n;
	}
	char *err = NULL;
	ssize_t r = lr->fn(lr->ctx, lr->buf + lr->end, lr->max - lr->end, &err);
	if (r > 0) {
		lr->end += (size_t)r;
		return PG_OK;
	}
	if (r == 0) {
		free(err);
		if (lr->end > lr->start || lr->midline) {
			set_err(err_r, "connection closed in the middle of a line");
			return PG_PROTO;
		}
		set_err(err_r, "connection closed by server");
		return PG_TEMP;
	}
	/* a network failure is temporary; PG_IO is kept for local I/O */
	enum pg_res res = PG_TEMP;
	if (err != NULL) {
		free(*err_r);
		*err_r = err;
	} else {
		set_err(err_r, r == -2 ? "read timed out" : "read failed");
	}
	return res;
}

enum pg_res lr_read(struct linereader *lr, const char **line_r, size_t *len_r,
		    int *complete_r, char **err_r)
{
	for (;;) {
		char *lf = NULL;
		if (lr->end > lr->scanned)
			lf = memchr(lr->buf + lr->scanned, '\n', lr->end - lr->scanned);
		if (lf != NULL) {
			take(lr, (size_t)(lf - (lr->buf + lr->start)) + 1, 1, line_r, len_r,
			     complete_r);
			return PG_OK;
		}
		lr->scanned = lr->end;
		if (lr->end - lr->start == lr->max) {
			take(lr, lr->max, 0, line_r, len_r, complete_r);
			return PG_OK;
		}
		enum pg_res res = fill(lr, err_r);
		if (res != PG_OK)
			return res;
	}
}
