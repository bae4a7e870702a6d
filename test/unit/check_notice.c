/*
 * check_notice.c - the delivery notice quotes the held message's header
 * block whole, however many recipients and long replies it has (issue 12:
 * past 128 KiB of notice the headers went missing without a word), says so
 * when the block is over NOTICE_HDRS_MAX, and never quotes the body (a NUL
 * in a header hid the empty line from strstr).  Through a real spool:
 * ingest, commit, notice_send, then the notice as the relay would read it.
 */
#include "config.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "notice.h"
#include "spool.h"

static char tdir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(tdir, "/tmp/check_notice.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
}

static void teardown(void)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* held_notice - commit msg (len octets) with nrcpts recipients whose
 * replies are long, send a notice about it, and return the notice's bytes */
static char *held_notice(const char *msg, size_t len, size_t nrcpts, size_t *len_r)
{
	struct spool *sp = NULL;
	struct spool_writer *w = NULL;
	char *err = NULL, id[SPOOL_ID_LEN + 1];
	const char **rcpts = calloc(nrcpts, sizeof *rcpts);
	for (size_t i = 0; i < nrcpts; i++) {
		char a[64];
		snprintf(a, sizeof a, "r%03zu@corp.example", i);
		rcpts[i] = strdup(a);
	}
	struct spool_envelope env = { "s@example.org", rcpts, nrcpts, NULL, NULL };
	ck_assert_msg(spool_open(tdir, &sp, &err) == SPOOL_OK, "%s", err);
	ck_assert_msg(spool_writer_begin(sp, "acct", "u1", &w, &err) == SPOOL_OK, "%s", err);
	snprintf(id, sizeof id, "%s", spool_writer_id(w));
	ck_assert_msg(spool_writer_write(w, msg, len, &err) == SPOOL_OK, "%s", err);
	ck_assert_msg(spool_writer_finish(&w, &env, &err) == SPOOL_OK, "%s", err);
	ck_assert_msg(spool_commit(sp, NULL, NULL, &err) == SPOOL_OK, "%s", err);
	struct spool_msg *m = NULL;
	ck_assert_msg(spool_get(sp, id, &m, &err) == SPOOL_OK, "%s", err);
	ck_assert_uint_eq(m->nrcpts, nrcpts);
	for (size_t i = 0; i < m->nrcpts; i++) {
		char r[512];
		snprintf(r, sizeof r, "550 5.1.1 <%s>: Recipient address rejected: %0400d",
			 m->rcpts[i].addr, 7);
		free(m->rcpts[i].reply);
		m->rcpts[i].reply = strdup(r);
		m->rcpts[i].state = SPOOL_HELD;
	}
	struct conf c = { .hostname = "gw.test", .bounce = BOUNCE_POSTMASTER,
			  .postmaster = "pm@corp.example" };
	c.smtp.host = "127.0.0.1";
	time_t now = time(NULL);
	ck_assert_msg(notice_send(&c, sp, m, "550 5.1.1 refused", 0, now, &err) == PG_OK, "%s",
		      err);
	struct spool_msg **due = NULL;
	size_t n = 0;
	ck_assert_msg(spool_claim_due(sp, now + 1, 10, &due, &n, &err) == SPOOL_OK, "%s", err);
	char *out = NULL;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(due[i]->account, NOTICE_ACCOUNT) != 0)
			continue;
		int fd = -1;
		ck_assert_msg(spool_msg_open(sp, due[i], &fd, &err) == SPOOL_OK, "%s", err);
		size_t cap = 1 << 16, got = 0;
		ssize_t k;
		out = malloc(cap + 1);
		while ((k = read(fd, out + got, cap - got)) > 0)
			if ((got += (size_t)k) == cap)
				out = realloc(out, (cap *= 2) + 1);
		close(fd);
		out[got] = '\0';
		*len_r = got;
	}
	ck_assert_ptr_nonnull(out);
	spool_msgs_free(&due, n);
	spool_msg_free(&m);
	spool_close(&sp);
	for (size_t i = 0; i < nrcpts; i++)
		free((char *)rcpts[i]);
	free(rcpts);
	return out;
}

/* headers - a header block of about size octets ending in "X-Last: end" */
static char *headers(size_t size, const char *extra)
{
	char *h = malloc(size + 4096);
	size_t n = (size_t)sprintf(h, "Received: from pop.example (account acct)\r\n%s", extra);
	for (unsigned i = 0; n < size; i++)
		n += (size_t)sprintf(h + n, "X-Filler-%06u: %0100u\r\n", i, i);
	n += (size_t)sprintf(h + n, "X-Last: end\r\n\r\nthe body must not be quoted\r\n");
	return h;
}

/* the closing boundary ends the notice, and there is one of each part */
static void well_formed(const char *out, size_t len)
{
	const char *b = strstr(out, "boundary=\"");
	ck_assert_ptr_nonnull(b);
	char bnd[128], close_[140];
	ck_assert_int_eq(sscanf(b + 10, "%127[^\"]", bnd), 1);
	snprintf(close_, sizeof close_, "\r\n--%s--\r\n", bnd);
	ck_assert_uint_ge(len, strlen(close_));
	ck_assert_msg(strcmp(out + len - strlen(close_), close_) == 0, "no closing boundary");
	ck_assert_ptr_nonnull(strstr(out, "Content-Type: text/rfc822-headers\r\n\r\nReceived: "));
	ck_assert_ptr_null(strstr(out, "the body must not be quoted"));
}

START_TEST(test_many_rcpts_and_headers)
{
	char *h = headers(74 * 1024, "");
	size_t len;
	char *out = held_notice(h, strlen(h), 100, &len);
	well_formed(out, len);
	ck_assert_ptr_nonnull(strstr(out, "X-Filler-000000: "));
	ck_assert_ptr_nonnull(strstr(out, "\r\nX-Last: end\r\n\r\n--"));
	ck_assert_ptr_nonnull(strstr(out, "Final-Recipient: rfc822; r099@corp.example"));
	ck_assert_ptr_null(strstr(out, "cut"));
	free(out);
	free(h);
}
END_TEST

START_TEST(test_headers_over_the_cap)
{
	char *h = headers(NOTICE_HDRS_MAX + 300 * 1024, "");
	size_t len;
	char *out = held_notice(h, strlen(h), 3, &len);
	well_formed(out, len);
	ck_assert_ptr_nonnull(strstr(out, "only\r\nits first "));
	ck_assert_ptr_nonnull(strstr(out, "the rest was cut"));
	ck_assert_ptr_nonnull(strstr(out, "\r\nX-Popgate-Note: the header block was cut here"));
	ck_assert_ptr_null(strstr(out, "X-Last: end"));
	ck_assert_uint_lt(len, NOTICE_HDRS_MAX + 16 * 1024);
	free(out);
	free(h);
}
END_TEST

START_TEST(test_nul_in_header)
{
	char *h = headers(2000, "X-Nul: a@b\r\n");
	size_t n = strlen(h), len;
	*strchr(h, '@') = '\0';
	char *out = held_notice(h, n, 1, &len);
	ck_assert_ptr_nonnull(memmem(out, len, "X-Last: end\r\n\r\n--", 17));
	ck_assert_ptr_nonnull(memmem(out, len, "X-Nul: a\0b\r\n", 12));
	ck_assert_ptr_null(memmem(out, len, "the body must not be quoted", 27));
	free(out);
	free(h);
}
END_TEST

START_TEST(test_no_body)
{
	const char *m = "Received: from x (account acct)\r\nSubject: s\r\nX-Last: end\r\n";
	size_t len;
	char *out = held_notice(m, strlen(m), 1, &len);
	ck_assert_ptr_nonnull(strstr(out, "\r\nX-Last: end\r\n\r\n--"));
	free(out);
}
END_TEST

static Suite *notice_suite(void)
{
	Suite *s = suite_create("notice");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_many_rcpts_and_headers);
	tcase_add_test(tc, test_headers_over_the_cap);
	tcase_add_test(tc, test_nul_in_header);
	tcase_add_test(tc, test_no_body);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(notice_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
