/*
 * msgfilter.c - POP3 multi-line body to canonical CRLF message (see
 * msgfilter.h).
 *
 * The filter is a byte-level state machine so that it gives the same output
 * however the input is cut into pieces: a "." or ".\r" at the start of a
 * line and a CR at the end of a piece are held in the state until the next
 * byte decides what they were.  Inside a line it copies whole runs between
 * CR/LF bytes, so the per-byte cost is a memchr-like scan plus one memcpy.
 *
 * Return-Path is looked for on the canonical output lines (what the SMTP
 * side will see), only in the header block, with a fixed 998-octet buffer.
 */
#include "config.h"

#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "msgfilter.h"

#define MF_OUT_MAX 65536
#define MF_RP_MAX 998

enum mf_line {
	MF_START, /* at the start of a line */
	MF_DOT,   /* saw "." at the start of a line */
	MF_DOTCR, /* saw ".\r" at the start of a line */
	MF_BODY,  /* inside a line, dot (if any) already removed */
	MF_DONE,  /* terminator seen */
};

enum mf_rp {
	RP_NONE,     /* no Return-Path seen yet */
	RP_CAPTURE,  /* inside the Return-Path header line */
	RP_WAITCONT, /* Return-Path line ended; a folded continuation may follow */
	RP_DONE,     /* captured (or given up); never changes again */
};

enum mf_hdr {
	HDR_NAME,  /* matching the line's first bytes against "return-path:" */
	HDR_RP,    /* capturing this line into rp */
	HDR_OTHER, /* some other header or body line */
};

struct msgfilter {
	mf_sink_fn sink;
	void *ctx;
	enum mf_line st;
	int pending_cr;   /* a CR inside a line, not yet known to be CRLF */
	int crlf;         /* CRLF server: only CRLF starts a protocol line */
	int discard;      /* output is dropped (a message over its limit) */
	enum pg_res fail; /* sticky sink error */
	uint64_t bytes;
	/* header tracking on output lines */
	int in_header;
	size_t line_pos;
	enum mf_hdr hdr;
	enum mf_rp rp_st;
	int rp_toolong;
	size_t rp_len;
	size_t out_len;
	/* the buffers last: mf_new clears only what comes before them */
	char rp[MF_RP_MAX + 1];
	char out[MF_OUT_MAX];
};

static const char rp_name[] = "return-path:";

struct msgfilter *mf_new(mf_sink_fn sink, void *ctx)
{
	struct msgfilter *f = xmalloc(sizeof *f);
	memset(f, 0, offsetof(struct msgfilter, rp));
	f->rp[0] = '\0';
	f->sink = sink;
	f->ctx = ctx;
	f->st = MF_START;
	f->crlf = 0;
	f->in_header = 1;
	f->hdr = HDR_NAME;
	f->rp_st = RP_NONE;
	return f;
}

void mf_free(struct msgfilter **f)
{
	if (f == NULL || *f == NULL)
		return;
	free(*f);
	*f = NULL;
}

void mf_set_crlf(struct msgfilter *f, int crlf)
{
	f->crlf = crlf != 0;
}

void mf_discard(struct msgfilter *f)
{
	f->discard = 1;
	f->out_len = 0;
}

uint64_t mf_bytes(const struct msgfilter *f)
{
	return f->bytes;
}

const char *mf_return_path(const struct msgfilter *f)
{
	if (f->rp_st != RP_DONE || f->rp_toolong || f->rp_len == 0)
		return NULL;
	return f->rp;
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* rp_finish - trim the captured value; it is final from now on */
static void rp_finish(struct msgfilter *f)
{
	while (f->rp_len > 0 && (is_wsp(f->rp[f->rp_len - 1])))
		f->rp_len--;
	f->rp[f->rp_len] = '\0';
	f->rp_st = RP_DONE;
}

static void rp_add(struct msgfilter *f, char c)
{
	if (f->rp_toolong || (f->rp_len == 0 && is_wsp(c)))
		return;
	if (f->rp_len == MF_RP_MAX) {
		f->rp_toolong = 1;
		return;
	}
	f->rp[f->rp_len++] = c;
}

/* hdr_bytes - follow output content bytes while in the header block */
static void hdr_bytes(struct msgfilter *f, const char *p, size_t n)
{
	for (size_t i = 0; i < n && f->in_header; i++) {
		char c = p[i];
		if (f->line_pos == 0 && f->rp_st == RP_WAITCONT) {
			if (is_wsp(c)) {
				f->rp_st = RP_CAPTURE;
				f->hdr = HDR_RP;
			} else {
				rp_finish(f);
			}
		}
		if (f->hdr == HDR_NAME) {
			char lc = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
			if (lc != rp_name[f->line_pos])
				f->hdr = HDR_OTHER;
			else if (f->line_pos == sizeof rp_name - 2)
				f->hdr = f->rp_st == RP_NONE ? HDR_RP : HDR_OTHER;
			if (f->hdr == HDR_RP) {
				f->rp_st = RP_CAPTURE;
				f->line_pos++;
				continue; /* the colon is not part of the value */
			}
		} else if (f->hdr == HDR_RP) {
			rp_add(f, c);
		}
		f->line_pos++;
	}
}

/* hdr_eol - an output line ended; an empty one ends the header block */
static void hdr_eol(struct msgfilter *f)
{
	if (!f->in_header)
		return;
	if (f->line_pos == 0) {
		f->in_header = 0;
		if (f->rp_st == RP_CAPTURE || f->rp_st == RP_WAITCONT)
			rp_finish(f);
		return;
	}
	if (f->rp_st == RP_CAPTURE)
		f->rp_st = RP_WAITCONT;
	f->line_pos = 0;
	f->hdr = HDR_NAME;
}

static enum pg_res flush(struct msgfilter *f, char **err_r)
{
	if (f->out_len == 0 || f->fail != PG_OK)
		return f->fail;
	enum pg_res r = f->sink(f->ctx, f->out, f->out_len, err_r);
	f->out_len = 0;
	if (r != PG_OK)
		f->fail = r;
	return r;
}

static enum pg_res out_put(struct msgfilter *f, const char *p, size_t n, char **err_r)
{
	if (f->discard)
		return PG_OK;
	f->bytes += n;
	while (n > 0) {
		size_t room = MF_OUT_MAX - f->out_len;
		size_t k = n < room ? n : room;
		memcpy(f->out + f->out_len, p, k);
		f->out_len += k;
		p += k;
		n -= k;
		if (f->out_len == MF_OUT_MAX && flush(f, err_r) != PG_OK)
			return f->fail;
	}
	return PG_OK;
}

static enum pg_res emit(struct msgfilter *f, const char *p, size_t n, char **err_r)
{
	if (f->in_header)
		hdr_bytes(f, p, n);
	return out_put(f, p, n, err_r);
}

static enum pg_res emit_eol(struct msgfilter *f, char **err_r)
{
	hdr_eol(f);
	return out_put(f, "\r\n", 2, err_r);
}

/* end_message - the terminator was seen: settle the headers, flush */
static enum pg_res end_message(struct msgfilter *f, char **err_r)
{
	f->st = MF_DONE;
	if (f->rp_st == RP_CAPTURE || f->rp_st == RP_WAITCONT)
		rp_finish(f);
	return flush(f, err_r);
}

/* body_run - consume bytes inside a line; returns how many were used */
static size_t body_run(struct msgfilter *f, const char *p, size_t n, enum pg_res *r,
		       char **err_r)
{
	size_t j = 0;
	if (f->pending_cr) {
		f->pending_cr = 0;
		*r = emit_eol(f, err_r); /* CRLF, or a bare CR which becomes one */
		if (p[0] == '\n') {
			f->st = MF_START;
			return 1;
		}
		return 0; /* a bare CR never starts a protocol line */
	}
	const char *lf = memchr(p, '\n', n);
	size_t lim = lf != NULL ? (size_t)(lf - p) : n;
	const char *cr = memchr(p, '\r', lim);
	j = cr != NULL ? (size_t)(cr - p) : lim;
	*r = emit(f, p, j, err_r);
	if (j == n || *r != PG_OK)
		return j;
	if (p[j] == '\n') {
		*r = emit_eol(f, err_r);
		/* a bare LF: in a CRLF session the next line is data, not a
		 * protocol line (no terminator, no dot-unstuffing) */
		if (!f->crlf)
			f->st = MF_START;
	} else {
		f->pending_cr = 1;
	}
	return j + 1;
}

/* step - advance the state machine by at least one byte or one state */
static size_t step(struct msgfilter *f, const char *p, size_t n, enum pg_res *r,
		   char **err_r)
{
	switch (f->st) {
	case MF_START:
		if (p[0] == '.') {
			f->st = MF_DOT;
			return 1;
		}
		f->st = MF_BODY;
		return 0;
	case MF_DOT:
		if (p[0] == '\n' && f->crlf) {
			/* "." + bare LF: data (a lone "." line), not the end */
			*r = emit(f, ".", 1, err_r);
			f->st = MF_BODY;
			return 0;
		}
		if (p[0] == '\n') {
			*r = end_message(f, err_r);
			return 1;
		}
		if (p[0] == '\r') {
			f->st = MF_DOTCR;
			return 1;
		}
		f->st = MF_BODY; /* the stuffed dot is dropped */
		return 0;
	case MF_DOTCR:
		if (p[0] == '\n') {
			*r = end_message(f, err_r);
			return 1;
		}
		/* "." then a bare CR: a LF server's stuffed dot before a bare CR;
		 * in a CRLF session the dot is data, like "." + bare LF */
		if (f->crlf)
			*r = emit(f, ".", 1, err_r);
		f->st = MF_BODY;
		f->pending_cr = 1;
		return 0;
	case MF_BODY:
		return body_run(f, p, n, r, err_r);
	case MF_DONE:
		break;
	}
	return n;
}

enum pg_res mf_feed(struct msgfilter *f, const char *data, size_t len, int complete,
		    int *done_r, char **err_r)
{
	(void)complete; /* line ends are the LF bytes themselves */
	if (f->fail != PG_OK) {
		set_err(err_r, "message output failed earlier");
		return f->fail;
	}
	size_t i = 0;
	enum pg_res r = PG_OK;
	while (i < len && f->st != MF_DONE && r == PG_OK)
		i += step(f, data + i, len - i, &r, err_r);
	*done_r = r == PG_OK && f->st == MF_DONE;
	return r;
}

enum pg_res mf_finish(struct msgfilter *f, char **err_r)
{
	enum pg_res r = PG_OK;
	if (f->fail != PG_OK) {
		set_err(err_r, "message output failed earlier");
		return f->fail;
	}
	if (f->st == MF_DONE)
		return PG_OK;
	if ((f->st == MF_DOT || f->st == MF_DOTCR) && f->crlf)
		r = emit(f, ".", 1, err_r); /* no terminator: the dot is data */
	if (f->st == MF_DOTCR)
		f->pending_cr = 1; /* "." + bare CR: content is one CR */
	if (r == PG_OK && (f->st != MF_START || f->pending_cr)) {
		f->pending_cr = 0;
		r = emit_eol(f, err_r);
	}
	if (r == PG_OK)
		r = end_message(f, err_r);
	return r;
}

enum pg_res mf_feed_all(struct msgfilter *f, const char *data, size_t len, int *done_r,
			char **err_r)
{
	size_t i = 0;
	*done_r = 0;
	while (i < len && !*done_r) {
		size_t n = len - i < MF_OUT_MAX ? len - i : MF_OUT_MAX;
		const char *lf = memchr(data + i, '\n', n);
		if (lf != NULL)
			n = (size_t)(lf - (data + i)) + 1;
		enum pg_res r = mf_feed(f, data + i, n, lf != NULL, done_r, err_r);
		if (r != PG_OK)
			return r;
		i += n;
	}
	return PG_OK;
}
