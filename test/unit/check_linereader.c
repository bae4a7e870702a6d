/*
 * check_linereader.c - the bounded line reader, fed by a scripted fake
 * socket that hands out its input in 1-byte, 3-byte, random or explicitly
 * listed fragments, so line and CRLF boundaries fall between reads.
 */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "linereader.h"

enum chunking { CH_ONE, CH_THREE, CH_RANDOM, CH_ALL, CH_FRAGS };

struct script {
	const char *data;
	size_t len, pos;
	enum chunking mode;
	unsigned int seed;
	const char *const *frags; /* CH_FRAGS: NULL-terminated list */
	size_t frag;
	int at_end;               /* 0: EOF, -1: error, -2: timeout */
	size_t reads;
};

static ssize_t fake_read(void *ctx, void *buf, size_t len, char **err_r)
{
	struct script *s = ctx;
	size_t n;
	s->reads++;
	if (s->mode == CH_FRAGS) {
		const char *f = s->frags[s->frag];
		if (f == NULL)
			goto end;
		n = strlen(f);
		ck_assert_uint_ge(len, n); /* the test sizes the buffer for this */
		memcpy(buf, f, n);
		s->frag++;
		return (ssize_t)n;
	}
	if (s->pos == s->len)
		goto end;
	switch (s->mode) {
	case CH_ONE: n = 1; break;
	case CH_THREE: n = 3; break;
	case CH_RANDOM: n = 1 + (size_t)(rand_r(&s->seed) % 200); break;
	default: n = s->len; break;
	}
	if (n > s->len - s->pos)
		n = s->len - s->pos;
	if (n > len)
		n = len;
	memcpy(buf, s->data + s->pos, n);
	s->pos += n;
	return (ssize_t)n;
end:
	if (s->at_end == -1) {
		set_err(err_r, "read from test:110: Connection reset by peer");
		return -1;
	}
	if (s->at_end == -2) {
		set_err(err_r, "read from test:110: timed out after 5 ms");
		return -2;
	}
	return 0;
}

struct piece {
	size_t len;
	int complete;
};

/* drain - read pieces until an error; the concatenation goes to *out */
static enum pg_res drain(struct linereader *lr, char *out, size_t outmax, size_t *outlen,
			 struct piece *pieces, size_t maxp, size_t *np, char **err)
{
	*outlen = 0;
	*np = 0;
	for (;;) {
		const char *p;
		size_t n;
		int c;
		enum pg_res r = lr_read(lr, &p, &n, &c, err);
		if (r != PG_OK)
			return r;
		ck_assert_uint_le(*outlen + n, outmax);
		memcpy(out + *outlen, p, n);
		*outlen += n;
		ck_assert_uint_lt(*np, maxp);
		pieces[*np].len = n;
		pieces[*np].complete = c;
		(*np)++;
	}
}

static const enum chunking all_modes[] = { CH_ONE, CH_THREE, CH_RANDOM, CH_ALL };

START_TEST(test_lines_split_across_reads)
{
	static const char in[] = "+OK hello\r\nsecond line\r\n\r\nbare lf\nlast\r\n";
	static const size_t want[] = { 11, 13, 2, 8, 6 };
	for (size_t m = 0; m < sizeof all_modes / sizeof all_modes[0]; m++) {
		struct script s = { .data = in, .len = sizeof in - 1, .mode = all_modes[m],
				    .seed = 7 };
		struct linereader *lr = lr_new(64, fake_read, &s);
		char out[256];
		struct piece pc[16];
		size_t olen, np;
		char *err = NULL;
		ck_assert_int_eq(drain(lr, out, sizeof out, &olen, pc, 16, &np, &err), PG_TEMP);
		ck_assert_str_eq(err, "connection closed by server");
		ck_assert_uint_eq(np, 5);
		for (size_t i = 0; i < np; i++) {
			ck_assert_uint_eq(pc[i].len, want[i]);
			ck_assert_int_eq(pc[i].complete, 1);
		}
		ck_assert_mem_eq(out, in, sizeof in - 1);
		free(err);
		lr_free(&lr);
		ck_assert_ptr_null(lr);
	}
}
END_TEST

START_TEST(test_crlf_split_across_reads)
{
	static const char *const frags[] = { "abc\r", "\nde", "f\r", "\n", "g", "\r", "\n", NULL };
	struct script s = { .mode = CH_FRAGS, .frags = frags };
	struct linereader *lr = lr_new(32, fake_read, &s);
	const char *p;
	size_t n;
	int c;
	char *err = NULL;
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
	ck_assert_uint_eq(n, 5);
	ck_assert_mem_eq(p, "abc\r\n", 5);
	ck_assert_int_eq(c, 1);
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
	ck_assert_mem_eq(p, "def\r\n", 5);
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert_mem_eq(p, "g\r\n", 3);
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_TEMP);
	free(err);
	lr_free(&lr);
}
END_TEST

START_TEST(test_line_exactly_max)
{
	/* 8 bytes including LF fit an 8-byte buffer: one complete line */
	static const char in[] = "1234567\n12345678\nx\n";
	for (size_t m = 0; m < sizeof all_modes / sizeof all_modes[0]; m++) {
		struct script s = { .data = in, .len = sizeof in - 1, .mode = all_modes[m],
				    .seed = 3 };
		struct linereader *lr = lr_new(8, fake_read, &s);
		char out[64];
		struct piece pc[8];
		size_t olen, np;
		char *err = NULL;
		ck_assert_int_eq(drain(lr, out, sizeof out, &olen, pc, 8, &np, &err), PG_TEMP);
		ck_assert_uint_eq(np, 4);
		ck_assert_uint_eq(pc[0].len, 8);
		ck_assert_int_eq(pc[0].complete, 1);
		/* 9 bytes: 8 incomplete, then the LF alone completes the line */
		ck_assert_uint_eq(pc[1].len, 8);
		ck_assert_int_eq(pc[1].complete, 0);
		ck_assert_uint_eq(pc[2].len, 1);
		ck_assert_int_eq(pc[2].complete, 1);
		ck_assert_uint_eq(pc[3].len, 2);
		ck_assert_mem_eq(out, in, sizeof in - 1);
		free(err);
		lr_free(&lr);
	}
}
END_TEST

START_TEST(test_line_longer_than_max)
{
	enum { LONG = 1000, MAX = 64 };
	char in[LONG + 8];
	for (size_t i = 0; i < LONG; i++)
		in[i] = (char)('a' + i % 26);
	memcpy(in + LONG, "\r\nok\r\n", 6);
	size_t inlen = LONG + 6;
	for (size_t m = 0; m < sizeof all_modes / sizeof all_modes[0]; m++) {
		struct script s = { .data = in, .len = inlen, .mode = all_modes[m], .seed = 11 };
		struct linereader *lr = lr_new(MAX, fake_read, &s);
		char out[LONG + 16];
		struct piece pc[64];
		size_t olen, np;
		char *err = NULL;
		ck_assert_int_eq(drain(lr, out, sizeof out, &olen, pc, 64, &np, &err), PG_TEMP);
		size_t total = 0, i;
		for (i = 0; i < np && !pc[i].complete; i++) {
			ck_assert_uint_eq(pc[i].len, MAX);
			total += pc[i].len;
		}
		ck_assert_uint_lt(i, np);
		total += pc[i].len; /* the completing piece */
		ck_assert_uint_eq(total, LONG + 2);
		ck_assert_uint_eq(i, (LONG + 2) / MAX);
		ck_assert_uint_eq(np, i + 2);
		ck_assert_uint_eq(pc[i + 1].len, 4);
		ck_assert_uint_eq(olen, inlen);
		ck_assert_mem_eq(out, in, inlen);
		free(err);
		lr_free(&lr);
	}
}
END_TEST

START_TEST(test_eof_mid_line)
{
	static const char in[] = "+OK\r\npartial";
	for (size_t m = 0; m < sizeof all_modes / sizeof all_modes[0]; m++) {
		struct script s = { .data = in, .len = sizeof in - 1, .mode = all_modes[m],
				    .seed = 5 };
		struct linereader *lr = lr_new(64, fake_read, &s);
		char out[64];
		struct piece pc[8];
		size_t olen, np;
		char *err = NULL;
		ck_assert_int_eq(drain(lr, out, sizeof out, &olen, pc, 8, &np, &err), PG_PROTO);
		ck_assert_str_eq(err, "connection closed in the middle of a line");
		ck_assert_uint_eq(np, 1);
		free(err);
		lr_free(&lr);
	}
}
END_TEST

START_TEST(test_eof_after_incomplete_piece)
{
	/* the buffer is empty at EOF, but the line was never finished */
	static const char in[] = "0123456789abcdef";
	struct script s = { .data = in, .len = 16, .mode = CH_ALL };
	struct linereader *lr = lr_new(16, fake_read, &s);
	const char *p;
	size_t n;
	int c;
	char *err = NULL;
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
	ck_assert_int_eq(c, 0);
	ck_assert_uint_eq(lr_pending(lr), 0);
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_PROTO);
	free(err);
	lr_free(&lr);
}
END_TEST

START_TEST(test_clean_eof)
{
	struct script s = { .data = "", .len = 0, .mode = CH_ALL };
	struct linereader *lr = lr_new(64, fake_read, &s);
	const char *p;
	size_t n;
	int c;
	char *err = NULL;
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_TEMP);
	ck_assert_str_eq(err, "connection closed by server");
	free(err);
	lr_free(&lr);
}
END_TEST

START_TEST(test_timeout_and_error)
{
	static const char in[] = "+OK\r\n+OK par";
	int ends[] = { -2, -1 };
	enum pg_res want[] = { PG_TEMP, PG_TEMP };
	const char *msg[] = { "read from test:110: timed out after 5 ms",
			      "read from test:110: Connection reset by peer" };
	for (int k = 0; k < 2; k++) {
		struct script s = { .data = in, .len = sizeof in - 1, .mode = CH_THREE,
				    .at_end = ends[k] };
		struct linereader *lr = lr_new(64, fake_read, &s);
		const char *p;
		size_t n;
		int c;
		char *err = NULL;
		ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
		ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), want[k]);
		ck_assert_str_eq(err, msg[k]);
		free(err);
		lr_free(&lr);
	}
}
END_TEST

START_TEST(test_pending_and_discard)
{
	static const char in[] = "+OK begin TLS\r\ninjected\r\n";
	struct script s = { .data = in, .len = sizeof in - 1, .mode = CH_ALL };
	struct linereader *lr = lr_new(64, fake_read, &s);
	const char *p;
	size_t n;
	int c;
	char *err = NULL;
	ck_assert_uint_eq(lr_pending(lr), 0);
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_OK);
	ck_assert_uint_eq(n, 15);
	ck_assert_uint_eq(lr_pending(lr), 10);
	lr_discard(lr);
	ck_assert_uint_eq(lr_pending(lr), 0);
	ck_assert_int_eq(lr_read(lr, &p, &n, &c, &err), PG_TEMP);
	free(err);
	lr_free(&lr);
}
END_TEST

/* random lines against a reference splitter, under every chunking */
START_TEST(test_random_against_reference)
{
	enum { MAX = 50, SIZE = 20000 };
	unsigned int seed = 1234;
	char *in = malloc(SIZE);
	for (size_t i = 0; i < SIZE; i++) {
		int r = rand_r(&seed) % 40;
		in[i] = r == 0 ? '\n' : r == 1 ? '\r' : (char)('A' + r);
	}
	in[SIZE - 1] = '\n';
	for (size_t m = 0; m < sizeof all_modes / sizeof all_modes[0]; m++) {
		struct script s = { .data = in, .len = SIZE, .mode = all_modes[m], .seed = 99 };
		struct linereader *lr = lr_new(MAX, fake_read, &s);
		size_t pos = 0, run = 0;
		for (;;) {
			const char *p;
			size_t n;
			int c;
			char *err = NULL;
			enum pg_res r = lr_read(lr, &p, &n, &c, &err);
			free(err);
			if (r != PG_OK) {
				ck_assert_int_eq(r, PG_TEMP);
				break;
			}
			/* reference: up to the next LF, at most MAX bytes */
			const char *lf = memchr(in + pos, '\n', SIZE - pos);
			size_t want = (size_t)(lf - (in + pos)) + 1;
			int wc = want <= MAX;
			if (!wc)
				want = MAX;
			ck_assert_uint_eq(n, want);
			ck_assert_int_eq(c, wc);
			ck_assert_mem_eq(p, in + pos, n);
			pos += n;
			run++;
		}
		ck_assert_uint_eq(pos, SIZE);
		ck_assert_uint_gt(run, 100);
		lr_free(&lr);
	}
	free(in);
}
END_TEST

static Suite *lr_suite(void)
{
	Suite *s = suite_create("linereader");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_lines_split_across_reads);
	tcase_add_test(tc, test_crlf_split_across_reads);
	tcase_add_test(tc, test_line_exactly_max);
	tcase_add_test(tc, test_line_longer_than_max);
	tcase_add_test(tc, test_eof_mid_line);
	tcase_add_test(tc, test_eof_after_incomplete_piece);
	tcase_add_test(tc, test_clean_eof);
	tcase_add_test(tc, test_timeout_and_error);
	tcase_add_test(tc, test_pending_and_discard);
	tcase_add_test(tc, test_random_against_reference);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(lr_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
