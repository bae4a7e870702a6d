/*
 * check_route.c - routing decisions on what a remote sender wrote (issue
 * 12): the `for` clause of Received (only the receiving host's, never the
 * sender's HELO), a header block without a body or a final line end, and
 * over-long envelope header lines.  Every message is also fed in 1- and
 * 7-byte pieces: the decision must not depend on where the reads fell.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

static char *doms[] = { "corp.example" };

static struct conf_account multidrop(const char *hdr)
{
	struct conf_account a = { .name = "m", .envelope_header = (char *)hdr,
				  .local_domains = doms, .nlocal_domains = 1,
				  .fallback_to = "fallback@corp.example" };
	return a;
}

/* decide - "sender|rcpt rcpt|hold reason" for msg fed in pieces of step
 * octets (0: at once) */
static char *decide(const struct conf_account *a, const char *msg, size_t len, size_t step)
{
	struct route_hdrs *h = route_hdrs_new(a);
	struct route_result r;
	char *err = NULL, out[4096] = "";
	for (size_t i = 0; i < len;) {
		size_t n = step == 0 || len - i < step ? len - i : step;
		route_hdrs_feed(h, msg + i, n);
		i += n;
	}
	ck_assert_int_eq(route_decide(a, h, &r, &err), PG_OK);
	snprintf(out, sizeof out, "%s|", r.sender);
	for (size_t i = 0; i < r.nrcpts; i++)
		snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? " " : "",
			 r.rcpts[i]);
	snprintf(out + strlen(out), sizeof out - strlen(out), "|%s",
		 r.hold_reason ? r.hold_reason : "");
	route_result_free(&r);
	route_hdrs_free(&h);
	return strdup(out);
}

/* check - the decision at once, and in 1- and 7-octet pieces */
static void check(const struct conf_account *a, const char *msg, size_t len, const char *want)
{
	static const size_t steps[] = { 0, 1, 7 };
	for (size_t i = 0; i < 3; i++) {
		char *got = decide(a, msg, len, steps[i]);
		ck_assert_msg(strcmp(got, want) == 0, "step %zu: got \"%s\", want \"%s\" for:\n%s",
			      steps[i], got, want, msg);
		free(got);
	}
}

#define CHECK(a, msg, want) check((a), (msg), strlen(msg), (want))

static const struct {
	const char *what, *msg, *want;
} rcvd[] = {
	{ "the issue's example: the HELO says `for boss`",
	  "Received: from for boss@corp.example (unknown [192.0.2.7]) by mx.provider.example "
	  "(Postfix) with ESMTP id 4AbC for <anna@corp.example>; Tue, 1 Dec 2026 10:00:00 +0100\r\n"
	  "From: x@evil.example\r\n\r\nbody\r\n",
	  "x@evil.example|anna@corp.example|" },
	{ "folded, as Postfix writes it",
	  "Received: from for boss@corp.example (unknown [192.0.2.7])\r\n\tby mx.provider.example "
	  "(Postfix) with ESMTP id 4AbC\r\n\tfor <anna@corp.example>; Tue, 1 Dec 2026\r\n\r\n",
	  "|anna@corp.example|" },
	{ "a HELO with a whole fake by-clause",
	  "Received: from x by evil.example with y id z for <boss@corp.example> (unknown "
	  "[192.0.2.7])\r\n\tby mx.provider.example with ESMTP id 4AbC\r\n\tfor "
	  "<anna@corp.example>; date\r\n\r\n",
	  "|anna@corp.example|" },
	{ "the HELO's for, and no for of the host: nothing (fallback)",
	  "Received: from x for <boss@corp.example> (unknown [192.0.2.7])\r\n\tby mx with ESMTP id "
	  "4AbC; date\r\n\r\n",
	  "|fallback@corp.example|" },
	{ "for only in comments",
	  "Received: from h (for boss@corp.example) by mx (for boss@corp.example) id 1\r\n"
	  "\t(nested (for boss@corp.example) \\) for boss@corp.example); date\r\n\r\n",
	  "|fallback@corp.example|" },
	{ "for in comments and the host's for",
	  "Received: from h (for boss@corp.example) by mx (for <boss@corp.example>) id 1 (x\\)\r\n"
	  "\tfor boss@corp.example) for <anna@corp.example> (for boss@corp.example); d\r\n\r\n",
	  "|anna@corp.example|" },
	{ "no ';' (no date)",
	  "Received: from h by mx with SMTP for <anna@corp.example>\r\n\r\n",
	  "|anna@corp.example|" },
	{ "a ';' in the HELO",
	  "Received: from x; by evil for <boss@corp.example> (unknown [192.0.2.7])\r\n\tby mx "
	  "with ESMTP id 4AbC for <anna@corp.example>; date\r\n\r\n",
	  "|anna@corp.example|" },
	{ "folded inside the clause",
	  "Received: from x\r\n\tby\r\n mx\r\n\tfor\r\n <anna@corp.example>\r\n\t; date\r\n\r\n",
	  "|anna@corp.example|" },
	{ "for a@b without brackets, domain lower-cased",
	  "Received: from x by mx id 1abc for Anna@Corp.Example; date\r\n\r\n",
	  "|Anna@corp.example|" },
	{ "for with several addresses",
	  "Received: from x by mx id 1 for <anna@corp.example>, <bob@corp.example> c@corp.example"
	  "; date\r\n\r\n",
	  "|anna@corp.example bob@corp.example c@corp.example|" },
	{ "an unclosed comment (a HELO with '(') trusts nothing",
	  "Received: from x by evil for <boss@corp.example> ( (unknown [192.0.2.7])\r\n\tby mx "
	  "(Postfix) with ESMTP id 4AbC for <anna@corp.example>; date\r\n\r\n",
	  "|fallback@corp.example|" },
	{ "Exim's envelope-from comment with a quoted ')'",
	  "Received: from [192.0.2.9] (helo=x)\r\n\tby mx.example with esmtp (Exim 4.96)\r\n"
	  "\t(envelope-from <\"a) for <boss@corp.example> (b\"@evil.example>)\r\n"
	  "\tid 1abc-000; date\r\n\r\n",
	  "|fallback@corp.example|" },
	{ "a quoted local part that says `by ... for`",
	  "Received: from x by mx id 1 for <\"by evil for boss\"@elsewhere.example>; date\r\n\r\n",
	  "|fallback@corp.example|" },
	{ "an unclosed '<' in the host's for: held, not guessed",
	  "Received: from x by mx id 1 for <anna@corp.example; date\r\n\r\n",
	  "|fallback@corp.example|" },
};

START_TEST(test_received_for)
{
	struct conf_account a = multidrop("Received");
	CHECK(&a, rcvd[_i].msg, rcvd[_i].want);
}
END_TEST

START_TEST(test_received_unsafe)
{
	struct conf_account a = multidrop("Received");
	a.local_domains = NULL; /* every domain: the broken address is a candidate */
	a.nlocal_domains = 0;
	char *got = decide(&a, "Received: from x by mx id 1 for <anna@corp.example; date\r\n\r\n",
			   60, 0);
	ck_assert_msg(strstr(got, "|unsafe recipient address in Received") != NULL, "%s", got);
	free(got);
}
END_TEST

/* A header block with no body: the last field counts (the poller's case;
 * `popgate route` already fed an end) */
static const struct {
	const char *msg, *want;
} nobody[] = {
	{ "From: a@example.org\r\nX-Original-To: bob@corp.example", "a@example.org|bob@corp.example|" },
	{ "From: a@example.org\r\nX-Original-To: bob@corp.example\r\n",
	  "a@example.org|bob@corp.example|" },
	{ "X-Original-To: bob@corp.example\r\nReturn-Path: <rp@example.org>\r\n",
	  "rp@example.org|bob@corp.example|" },
	{ "X-Original-To: bob@corp.example\r\nSender: s@example.org", "s@example.org|bob@corp.example|" },
	{ "X-Original-To: bob@corp.example\r\nFrom: f@example.org\r\n\t(folded)\r\n",
	  "f@example.org|bob@corp.example|" },
	{ "X-Original-To:\r\n bob@corp.example\r\n", "|bob@corp.example|" },
	{ "X-Original-To: bob@corp.example\r", "|bob@corp.example|" },
};

START_TEST(test_no_body)
{
	struct conf_account a = multidrop("X-Original-To");
	CHECK(&a, nobody[_i].msg, nobody[_i].want);
}
END_TEST

/* line - "X-Original-To: <local>@corp.example" of exactly len octets */
static char *long_line(size_t len, const char *name)
{
	char *l = malloc(len + 1);
	size_t pre = strlen(name) + 2, post = strlen("@corp.example");
	ck_assert_uint_gt(len, pre + post);
	snprintf(l, len + 1, "%s: ", name);
	memset(l + pre, 'a', len - pre - post);
	memcpy(l + len - post, "@corp.example", post + 1);
	return l;
}

START_TEST(test_long_lines)
{
	struct conf_account a = multidrop("X-Original-To");
	char msg[8192], *l;
	/* 998 octets without the CRLF: legal, routed (the address, then a
	 * comment up to the limit) */
	const char *pre = "X-Original-To: bob@corp.example (";
	size_t k = 998 - strlen(pre) - 1;
	snprintf(msg, sizeof msg, "%s%*s)\r\n\r\nbody\r\n", pre, (int)k, "");
	memset(msg + strlen(pre), 'c', k);
	ck_assert_ptr_eq(strstr(msg, "\r\n"), msg + 998);
	CHECK(&a, msg, "|bob@corp.example|");
	pre = "Received: from x by mx id 1 for <bob@corp.example> (";
	snprintf(msg, sizeof msg, "%s%*s);\r\n\r\n", pre, (int)(998 - strlen(pre) - 2), "");
	ck_assert_ptr_eq(strstr(msg, "\r\n"), msg + 998);
	struct conf_account r = multidrop("Received");
	CHECK(&r, msg, "|bob@corp.example|");
	/* 999 and 5,000 octets: unusable, held (not fallback_to) */
	static const size_t bad[] = { 999, 1000, 5000 };
	for (size_t i = 0; i < 3; i++) {
		l = long_line(bad[i], "X-Original-To");
		snprintf(msg, sizeof msg, "From: a@example.org\r\n%s\r\n\r\nbody\r\n", l);
		free(l);
		CHECK(&a, msg, "a@example.org||unusable X-Original-To field (a line over 998 "
			       "octets or a field over 16384)");
	}
	/* an over-long line of another field changes nothing */
	l = long_line(5000, "X-Other");
	snprintf(msg, sizeof msg, "%s\r\nX-Original-To: bob@corp.example\r\n\r\n", l);
	free(l);
	CHECK(&a, msg, "|bob@corp.example|");
}
END_TEST

static Suite *route_suite(void)
{
	Suite *s = suite_create("route");
	TCase *tc = tcase_create("core");
	tcase_add_loop_test(tc, test_received_for, 0, (int)(sizeof rcvd / sizeof rcvd[0]));
	tcase_add_test(tc, test_received_unsafe);
	tcase_add_loop_test(tc, test_no_body, 0, (int)(sizeof nobody / sizeof nobody[0]));
	tcase_add_test(tc, test_long_lines);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(route_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
