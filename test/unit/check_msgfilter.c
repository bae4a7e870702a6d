/*
 * check_msgfilter.c - POP3 body to canonical CRLF: dot-unstuffing, the
 * terminator, line-end repair, Return-Path capture and output batching.
 * Most inputs are also fed cut at every split point and in 1- and 3-byte
 * pieces, because the filter must not care where the reads fell.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linereader.h"
#include "msgfilter.h"

/* the filter's mode for run() and check_splits(): 1 = a CRLF server */
static int g_crlf;

struct sink {
	char *data;
	size_t len, cap;
	size_t calls;
	size_t max_chunk;
	size_t fail_at; /* fail on this call number (1-based), 0 never */
};

static enum pg_res sink_fn(void *ctx, const void *d, size_t n, char **err_r)
{
	struct sink *s = ctx;
	s->calls++;
	if (s->fail_at != 0 && s->calls == s->fail_at) {
		set_err(err_r, "spool write: No space left on device");
		return PG_IO;
	}
	ck_assert_uint_gt(n, 0);
	if (n > s->max_chunk)
		s->max_chunk = n;
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->data = realloc(s->data, s->cap);
	}
	memcpy(s->data + s->len, d, n);
	s->len += n;
	return PG_OK;
}

/* feed_split - feed in pieces of `step` bytes (0: at LF like lr_read);
 * a piece is complete when it ends in LF */
static enum pg_res feed_split(struct msgfilter *f, const char *in, size_t len, size_t step,
			      int *done, char **err)
{
	size_t i = 0;
	*done = 0;
	while (i < len && !*done) {
		size_t n = len - i;
		if (step > 0 && n > step)
			n = step;
		const char *lf = memchr(in + i, '\n', n);
		if (lf != NULL)
			n = (size_t)(lf - (in + i)) + 1;
		enum pg_res r = mf_feed(f, in + i, n, in[i + n - 1] == '\n', done, err);
		if (r != PG_OK)
			return r;
		i += n;
	}
	return PG_OK;
}

/* run - canonical output of in (NUL-terminated copy in *out), fed whole */
static char *run(const char *in, size_t len, size_t *outlen, int *done, char **rp)
{
	struct sink s = { 0 };
	struct msgfilter *f = mf_new(sink_fn, &s);
	mf_set_crlf(f, g_crlf);
	char *err = NULL;
	ck_assert_int_eq(mf_feed_all(f, in, len, done, &err), PG_OK);
	ck_assert_uint_eq(mf_bytes(f), s.len);
	if (rp != NULL) {
		const char *r = mf_return_path(f);
		*rp = r != NULL ? strdup(r) : NULL;
	}
	mf_free(&f);
	ck_assert_ptr_null(f);
	s.data = realloc(s.data, s.len + 1);
	s.data[s.len] = '\0';
	*outlen = s.len;
	return s.data;
}

/* check_splits - every 2-way split and small steps give the same output */
static void check_splits(const char *in, size_t len, const char *want, size_t wantlen)
{
	for (size_t k = 0; k <= len; k++) {
		struct sink s = { 0 };
		struct msgfilter *f = mf_new(sink_fn, &s);
		mf_set_crlf(f, g_crlf);
		int done = 0;
		char *err = NULL;
		ck_assert_int_eq(mf_feed(f, in, k, k > 0 && in[k - 1] == '\n', &done, &err), PG_OK);
		if (!done)
			ck_assert_int_eq(mf_feed(f, in + k, len - k, 1, &done, &err), PG_OK);
		ck_assert_int_eq(done, 1);
		ck_assert_uint_eq(s.len, wantlen);
		ck_assert_mem_eq(s.data ? s.data : "", want, wantlen);
		mf_free(&f);
		free(s.data);
	}
	static const size_t steps[] = { 1, 2, 3, 5 };
	for (size_t j = 0; j < sizeof steps / sizeof steps[0]; j++) {
		struct sink s = { 0 };
		struct msgfilter *f = mf_new(sink_fn, &s);
		mf_set_crlf(f, g_crlf);
		int done = 0;
		char *err = NULL;
		ck_assert_int_eq(feed_split(f, in, len, steps[j], &done, &err), PG_OK);
		ck_assert_int_eq(done, 1);
		ck_assert_uint_eq(s.len, wantlen);
		ck_assert_mem_eq(s.data ? s.data : "", want, wantlen);
		mf_free(&f);
		free(s.data);
	}
}

struct expect {
	const char *in;
	const char *out;
};

static const struct expect cases[] = {
	/* dot-unstuffing */
	{ "..x\r\n.\r\n", ".x\r\n" },
	{ "..\r\n.\r\n", ".\r\n" },
	{ "a\r\n...\r\n.\r\n", "a\r\n..\r\n" },
	{ ".x\r\n.\r\n", "x\r\n" },
	{ "x.\r\n.y\r\n.\r\n", "x.\r\ny\r\n" },
	/* terminators, and nothing after them is used */
	{ ".\r\n", "" },
	{ ".\n", "" },
	{ "a\r\n.\nignored\r\n", "a\r\n" },
	{ "a\n.\r\nignored", "a\r\n" },
	/* bare LF and bare CR */
	{ "a\nb\n.\n", "a\r\nb\r\n" },
	{ "a\rb\r\n.\r\n", "a\r\nb\r\n" },
	{ "a\r\r\n.\r\n", "a\r\n\r\n" },
	{ "\r\n\n\r\r\n.\r\n", "\r\n\r\n\r\n\r\n" },
	{ "\r.\r\n.\r\n", "\r\n.\r\n" },
	{ ".\r\r\n.\r\n", "\r\n\r\n" },
	{ ".\rx\r\n.\r\n", "\r\nx\r\n" },
	{ "a\r\n\r\nbody\r\n.\r\n", "a\r\n\r\nbody\r\n" },
	/* 8-bit and NUL-free binary bytes pass unchanged */
	{ "S\xc3\xa9\xff\x80\x01\r\n.\r\n", "S\xc3\xa9\xff\x80\x01\r\n" },
};

START_TEST(test_cases)
{
	const struct expect *e = &cases[_i];
	g_crlf = 0;
	size_t olen;
	int done;
	char *out = run(e->in, strlen(e->in), &olen, &done, NULL);
	ck_assert_int_eq(done, 1);
	ck_assert_uint_eq(olen, strlen(e->out));
	ck_assert_mem_eq(out, e->out, olen);
	free(out);
	check_splits(e->in, strlen(e->in), e->out, strlen(e->out));
}
END_TEST

/* A CRLF server (issue 12): a bare LF or bare CR is data, the line after
 * it is not a protocol line, and only CRLF "." CRLF ends the message.  The
 * stored message is canonical CRLF and keeps every "." that was not a
 * stuffing dot. */
static const struct expect crlf_cases[] = {
	/* the three shapes of a bare-LF "." line, with a smuggling payload */
	{ "Subject: a\r\n\r\nBefore the payload.\n.\nMAIL FROM:<x@evil.example>\r\n"
	  "last line\r\n.\r\n",
	  "Subject: a\r\n\r\nBefore the payload.\r\n.\r\nMAIL FROM:<x@evil.example>\r\n"
	  "last line\r\n" },
	{ "Subject: b\r\n\r\nBefore.\n.\r\nMAIL FROM:<x@evil.example>\r\nlast line\r\n.\r\n",
	  "Subject: b\r\n\r\nBefore.\r\n.\r\nMAIL FROM:<x@evil.example>\r\nlast line\r\n" },
	{ "Subject: c\r\n\r\nBefore.\r\n.\nMAIL FROM:<x@evil.example>\r\nlast line\r\n.\r\n",
	  "Subject: c\r\n\r\nBefore.\r\n.\r\nMAIL FROM:<x@evil.example>\r\nlast line\r\n" },
	/* a bare LF does not start a line for dot-unstuffing either */
	{ "line1\n.hidden-dot\r\n.\r\n", "line1\r\n.hidden-dot\r\n" },
	{ "line1\n..two\r\n.\r\n", "line1\r\n..two\r\n" },
	/* nor does a bare CR */
	{ "x\r.\r\n.\r\n", "x\r\n.\r\n" },
	{ "x\r.y\r\n.\r\n", "x\r\n.y\r\n" },
	/* "." + bare CR at a protocol line start: the dot is data */
	{ ".\rx\r\n.\r\n", ".\r\nx\r\n" },
	/* what a CRLF server stuffed is still unstuffed */
	{ "..\r\n...x\r\n.y\r\n.\r\n", ".\r\n..x\r\ny\r\n" },
	{ "..\n.\nx\r\n.\r\n", ".\r\n.\r\nx\r\n" },
	/* only CRLF "." CRLF ends it; what follows is not used */
	{ "a\r\n.\r\nignored\r\n", "a\r\n" },
	{ ".\r\n", "" },
	{ "a\nb\r\n\n\r\n.\r\n", "a\r\nb\r\n\r\n\r\n" },
};

START_TEST(test_crlf_cases)
{
	const struct expect *e = &crlf_cases[_i];
	g_crlf = 1;
	size_t olen;
	int done;
	char *out = run(e->in, strlen(e->in), &olen, &done, NULL);
	ck_assert_int_eq(done, 1);
	ck_assert_uint_eq(olen, strlen(e->out));
	ck_assert_mem_eq(out, e->out, olen);
	free(out);
	check_splits(e->in, strlen(e->in), e->out, strlen(e->out));
	g_crlf = 0;
}
END_TEST

/* a bare-LF "." is not a terminator in a CRLF session, so a reply that has
 * no CRLF "." CRLF is never complete (the caller does not commit it) */
START_TEST(test_crlf_no_terminator)
{
	static const char *const ins[] = { "a\n.\n", "a\n.\r\n", "a\r\n.\n", "a\r.\r\n" };
	for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
		struct sink s = { 0 };
		struct msgfilter *f = mf_new(sink_fn, &s);
		mf_set_crlf(f, 1);
		int done = 1;
		char *err = NULL;
		ck_assert_int_eq(mf_feed_all(f, ins[i], strlen(ins[i]), &done, &err), PG_OK);
		ck_assert_int_eq(done, 0);
		mf_free(&f);
		free(s.data);
	}
}
END_TEST

START_TEST(test_cr_at_piece_end)
{
	struct sink s = { 0 };
	struct msgfilter *f = mf_new(sink_fn, &s);
	int done = 0;
	char *err = NULL;
	/* CR ends an incomplete piece, LF starts the next: one line end */
	ck_assert_int_eq(mf_feed(f, "xxxx\r", 5, 0, &done, &err), PG_OK);
	ck_assert_int_eq(mf_feed(f, "\n", 1, 1, &done, &err), PG_OK);
	/* CR ends an incomplete piece, other data follows: a bare CR */
	ck_assert_int_eq(mf_feed(f, "yyyy\r", 5, 0, &done, &err), PG_OK);
	ck_assert_int_eq(mf_feed(f, "z\r\n", 3, 1, &done, &err), PG_OK);
	/* a "." that ends an incomplete piece is not a terminator yet */
	ck_assert_int_eq(mf_feed(f, ".", 1, 0, &done, &err), PG_OK);
	ck_assert_int_eq(done, 0);
	ck_assert_int_eq(mf_feed(f, ".w\r\n", 4, 1, &done, &err), PG_OK);
	ck_assert_int_eq(mf_feed(f, ".\r\n", 3, 1, &done, &err), PG_OK);
	ck_assert_int_eq(done, 1);
	static const char want[] = "xxxx\r\nyyyy\r\nz\r\n.w\r\n";
	ck_assert_uint_eq(s.len, sizeof want - 1);
	ck_assert_mem_eq(s.data, want, s.len);
	mf_free(&f);
	free(s.data);
}
END_TEST

START_TEST(test_long_line)
{
	enum { LONG = 200 * 1024 };
	char *in = malloc(LONG + 16);
	for (size_t i = 0; i < LONG; i++)
		in[i] = (char)(i % 7 == 0 ? '.' : 'a' + i % 26);
	in[0] = 'x';
	memcpy(in + LONG, "\r\n.\r\n", 5);
	size_t olen;
	int done;
	char *out = run(in, LONG + 5, &olen, &done, NULL);
	ck_assert_int_eq(done, 1);
	ck_assert_uint_eq(olen, LONG + 2);
	ck_assert_mem_eq(out, in, LONG + 2);
	free(out);
	free(in);
}
END_TEST

/* a fake socket for running the filter behind a real linereader */
struct src {
	const char *d;
	size_t len, pos, step;
};

static ssize_t src_read(void *ctx, void *buf, size_t len, char **err_r)
{
	struct src *s = ctx;
	size_t n = s->len - s->pos;
	if (n > s->step)
		n = s->step;
	if (n > len)
		n = len;
	memcpy(buf, s->d + s->pos, n);
	s->pos += n;
	return (ssize_t)n;
}

START_TEST(test_through_linereader)
{
	/* long lines, CRLF at every offset relative to the reader's buffer */
	enum { MAX = 16 };
	char in[4096];
	size_t len = 0;
	for (int l = 1; l < 60; l++) {
		if (l % 5 == 0)
			in[len++] = '.';
		for (int i = 0; i < l; i++)
			in[len++] = (char)('a' + (l + i) % 26);
		in[len++] = '\r';
		in[len++] = '\n';
	}
	memcpy(in + len, ".\r\n", 3);
	len += 3;
	size_t wantlen;
	int done;
	char *want = run(in, len, &wantlen, &done, NULL);
	for (size_t step = 1; step < 40; step += 3) {
		struct src src = { in, len, 0, step };
		struct linereader *lr = lr_new(MAX, src_read, &src);
		struct sink s = { 0 };
		struct msgfilter *f = mf_new(sink_fn, &s);
		char *err = NULL;
		done = 0;
		while (!done) {
			const char *p;
			size_t n;
			int c;
			ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
			ck_assert_int_eq(mf_feed(f, p, n, c, &done, &err), PG_OK);
		}
		ck_assert_uint_eq(s.len, wantlen);
		ck_assert_mem_eq(s.data, want, wantlen);
		mf_free(&f);
		lr_free(&lr);
		free(s.data);
	}
	free(want);
}
END_TEST

START_TEST(test_empty_message)
{
	struct sink s = { 0 };
	struct msgfilter *f = mf_new(sink_fn, &s);
	int done = 0;
	char *err = NULL;
	ck_assert_int_eq(mf_feed(f, ".\r\n", 3, 1, &done, &err), PG_OK);
	ck_assert_int_eq(done, 1);
	ck_assert_uint_eq(s.len, 0);
	ck_assert_uint_eq(s.calls, 0);
	ck_assert_uint_eq(mf_bytes(f), 0);
	ck_assert_ptr_null(mf_return_path(f));
	mf_free(&f);
}
END_TEST

struct rp_case {
	const char *in;
	const char *rp; /* NULL: none */
};

static const struct rp_case rp_cases[] = {
	{ "Received: x\r\nreturn-PATH:   <a@b.example>  \r\nReturn-Path: <c@d>\r\n\r\nbody\r\n.\r\n",
	  "<a@b.example>" },
	{ "Return-Path: <>\r\n\r\n.\r\n", "<>" },
	{ "Subject: x\r\n\r\nReturn-Path: <e@f>\r\n.\r\n", NULL },
	{ "Return-Path:\r\n\t<folded@example>\r\nX: y\r\n\r\n.\r\n", "<folded@example>" },
	{ "X-Return-Path: <no@x>\r\nReturn-Pathx: <no@y>\r\n\r\n.\r\n", NULL },
	{ "Return-Path: <last@header>\r\n.\r\n", "<last@header>" },
	{ "..Return-Path: <no@dot>\r\n\r\n.\r\n", NULL },
	{ ".Return-Path: <stuffed@dot>\r\n\r\n.\r\n", "<stuffed@dot>" },
	{ "Return-Path: <bare@lf>\n\n.\n", "<bare@lf>" },
};

START_TEST(test_return_path)
{
	const struct rp_case *c = &rp_cases[_i];
	size_t olen;
	int done;
	char *rp;
	char *out = run(c->in, strlen(c->in), &olen, &done, &rp);
	ck_assert_int_eq(done, 1);
	if (c->rp == NULL)
		ck_assert_ptr_null(rp);
	else
		ck_assert_str_eq(rp, c->rp);
	free(rp);
	free(out);
	/* and in 1-byte pieces */
	struct sink s = { 0 };
	struct msgfilter *f = mf_new(sink_fn, &s);
	char *err = NULL;
	ck_assert_int_eq(feed_split(f, c->in, strlen(c->in), 1, &done, &err), PG_OK);
	if (c->rp == NULL)
		ck_assert_ptr_null(mf_return_path(f));
	else
		ck_assert_str_eq(mf_return_path(f), c->rp);
	mf_free(&f);
	free(s.data);
}
END_TEST

START_TEST(test_return_path_too_long)
{
	char in[3000];
	int n = snprintf(in, sizeof in, "Return-Path: <");
	for (int i = 0; i < 1100; i++)
		in[n++] = 'a';
	n += snprintf(in + n, sizeof in - (size_t)n, ">\r\nReturn-Path: <x@y>\r\n\r\n.\r\n");
	size_t olen;
	int done;
	char *rp;
	char *out = run(in, (size_t)n, &olen, &done, &rp);
	ck_assert_ptr_null(rp); /* the first one counts, even when unusable */
	free(out);

	/* exactly 998 octets fits */
	n = snprintf(in, sizeof in, "Return-Path: ");
	for (int i = 0; i < 998; i++)
		in[n++] = 'b';
	n += snprintf(in + n, sizeof in - (size_t)n, "\r\n\r\n.\r\n");
	out = run(in, (size_t)n, &olen, &done, &rp);
	ck_assert_ptr_nonnull(rp);
	ck_assert_uint_eq(strlen(rp), 998);
	free(rp);
	free(out);
}
END_TEST

START_TEST(test_sink_batches)
{
	enum { LINES = 10000 };
	char *in = malloc(LINES * 16 + 8);
	size_t len = 0;
	for (int i = 0; i < LINES; i++)
		len += (size_t)sprintf(in + len, "line %05d\r\n", i);
	memcpy(in + len, ".\r\n", 3);
	struct sink s = { 0 };
	struct msgfilter *f = mf_new(sink_fn, &s);
	int done = 0;
	char *err = NULL;
	ck_assert_int_eq(feed_split(f, in, len + 3, 0, &done, &err), PG_OK);
	ck_assert_int_eq(done, 1);
	ck_assert_uint_eq(s.len, len);
	ck_assert_mem_eq(s.data, in, len);
	/* 120,000 bytes: two sink calls (64 KiB + the rest), not 10,000 */
	ck_assert_uint_eq(s.calls, (len + 65535) / 65536);
	ck_assert_uint_eq(s.max_chunk, 65536);
	ck_assert_uint_eq(mf_bytes(f), len);
	mf_free(&f);
	free(s.data);
	free(in);
}
END_TEST

START_TEST(test_sink_error)
{
	char *in = malloc(200000);
	size_t len = 0;
	while (len < 190000)
		len += (size_t)sprintf(in + len, "some body text\r\n");
	memcpy(in + len, ".\r\n", 3);
	struct sink s = { .fail_at = 2 };
	struct msgfilter *f = mf_new(sink_fn, &s);
	int done = 0;
	char *err = NULL;
	ck_assert_int_eq(mf_feed_all(f, in, len + 3, &done, &err), PG_IO);
	ck_assert_str_eq(err, "spool write: No space left on device");
	ck_assert_int_eq(done, 0);
	ck_assert_int_eq(mf_feed(f, ".\r\n", 3, 1, &done, &err), PG_IO);
	ck_assert_int_eq(done, 0);
	free(err);
	mf_free(&f);
	free(s.data);
	free(in);

	/* an error from the final flush at the terminator propagates too */
	struct sink s2 = { .fail_at = 1 };
	f = mf_new(sink_fn, &s2);
	err = NULL;
	ck_assert_int_eq(mf_feed_all(f, "a\r\n.\r\n", 6, &done, &err), PG_IO);
	ck_assert_ptr_nonnull(err);
	free(err);
	mf_free(&f);
}
END_TEST

START_TEST(test_finish)
{
	static const struct expect fin[] = {
		{ "abc", "abc\r\n" }, { "abc\r", "abc\r\n" }, { "abc\n", "abc\r\n" },
		{ "", "" },           { ".", "\r\n" },        { "a\r\nb", "a\r\nb\r\n" },
	};
	for (size_t i = 0; i < sizeof fin / sizeof fin[0]; i++) {
		struct sink s = { 0 };
		struct msgfilter *f = mf_new(sink_fn, &s);
		int done = 0;
		char *err = NULL;
		ck_assert_int_eq(mf_feed_all(f, fin[i].in, strlen(fin[i].in), &done, &err), PG_OK);
		ck_assert_int_eq(done, 0);
		ck_assert_int_eq(mf_finish(f, &err), PG_OK);
		ck_assert_uint_eq(s.len, strlen(fin[i].out));
		ck_assert_mem_eq(s.data ? s.data : "", fin[i].out, s.len);
		mf_free(&f);
		free(s.data);
	}
}
END_TEST

static Suite *mf_suite(void)
{
	Suite *s = suite_create("msgfilter");
	TCase *tc = tcase_create("core");
	tcase_add_loop_test(tc, test_cases, 0, (int)(sizeof cases / sizeof cases[0]));
	tcase_add_loop_test(tc, test_crlf_cases, 0,
			    (int)(sizeof crlf_cases / sizeof crlf_cases[0]));
	tcase_add_test(tc, test_crlf_no_terminator);
	tcase_add_test(tc, test_cr_at_piece_end);
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_through_linereader);
	tcase_add_test(tc, test_empty_message);
	tcase_add_loop_test(tc, test_return_path, 0, (int)(sizeof rp_cases / sizeof rp_cases[0]));
	tcase_add_test(tc, test_return_path_too_long);
	tcase_add_test(tc, test_sink_batches);
	tcase_add_test(tc, test_sink_error);
	tcase_add_test(tc, test_finish);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(mf_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
