/*
 * check_sasl.c - known-answer tests for the SASL mechanisms and APOP:
 * RFC 5802 (SCRAM-SHA-1), RFC 7677 (SCRAM-SHA-256), RFC 2195 (CRAM-MD5),
 * RFC 1939 (APOP), plus PLAIN/XOAUTH2/OAUTHBEARER layouts and the
 * rejection of bad challenges.
 */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

static char *step_str(struct sasl *s, const char *chal, enum pg_res want)
{
	char *out = NULL, *err = NULL;
	size_t n = 0;
	enum pg_res r = sasl_step(s, (const unsigned char *)chal, chal ? strlen(chal) : 0, &out,
				  &n, &err);
	ck_assert_msg(r == want, "sasl_step: %d (want %d): %s", r, want, err ? err : "");
	free(err);
	return out;
}

static void scram_case(enum sasl_mech m, const char *cnonce, const char *sfirst,
		       const char *cfinal, const char *sfinal)
{
	struct sasl *s = sasl_new(m, "user", "pencil", "h", 110);
	sasl_set_nonce(s, cnonce);
	ck_assert(sasl_has_initial(s));
	char *first = step_str(s, NULL, PG_OK);
	char *want = xasprintf("n,,n=user,r=%s", cnonce);
	ck_assert_str_eq(first, want);
	char *fin = step_str(s, sfirst, PG_OK);
	ck_assert_str_eq(fin, cfinal);
	ck_assert(!sasl_complete(s));
	char *last = step_str(s, sfinal, PG_OK);
	ck_assert_str_eq(last, "");
	ck_assert(sasl_complete(s));
	free(first);
	free(want);
	free(fin);
	free(last);
	sasl_free(&s);
	ck_assert_ptr_null(s);
}

START_TEST(scram_sha1_rfc5802)
{
	scram_case(SASL_SCRAM_SHA1, "fyko+d2lbbFgONRv9qkxdawL",
		   "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
		   "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
		   "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		   "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}
END_TEST

START_TEST(scram_sha256_rfc7677)
{
	scram_case(SASL_SCRAM_SHA256, "rOprNGfwEbeRWgbNEkqO",
		   "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
		   "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		   "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
		   "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		   "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}
END_TEST

START_TEST(scram_bad_server)
{
	static const char *const bad_first[] = {
		"r=OTHERNONCE,s=QSXCR+Q6sek8bf92,i=4096",       /* nonce not ours */
		"r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096", /* not extended */
		"r=fyko+d2lbbFgONRv9qkxdawLx,s=!!!!,i=4096",    /* bad salt */
		"r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=0",
		"r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=99999999999",
		"r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92",
		"garbage",
	};
	for (size_t i = 0; i < sizeof bad_first / sizeof *bad_first; i++) {
		struct sasl *s = sasl_new(SASL_SCRAM_SHA1, "user", "pencil", "h", 110);
		sasl_set_nonce(s, "fyko+d2lbbFgONRv9qkxdawL");
		free(step_str(s, NULL, PG_OK));
		free(step_str(s, bad_first[i], PG_PROTO));
		sasl_free(&s);
	}
	/* a wrong server signature is an impostor: PG_AUTH */
	struct sasl *s = sasl_new(SASL_SCRAM_SHA1, "user", "pencil", "h", 110);
	sasl_set_nonce(s, "fyko+d2lbbFgONRv9qkxdawL");
	free(step_str(s, NULL, PG_OK));
	free(step_str(s, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
		      PG_OK));
	free(step_str(s, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", PG_AUTH));
	ck_assert(!sasl_complete(s));
	sasl_free(&s);
}
END_TEST

START_TEST(scram_name_escape)
{
	struct sasl *s = sasl_new(SASL_SCRAM_SHA256, "a=b,c", "x", "h", 110);
	sasl_set_nonce(s, "N");
	char *first = step_str(s, NULL, PG_OK);
	ck_assert_str_eq(first, "n,,n=a=3Db=2Cc,r=N");
	free(first);
	sasl_free(&s);
}
END_TEST

START_TEST(cram_md5_rfc2195)
{
	struct sasl *s = sasl_new(SASL_CRAM_MD5, "tim", "tanstaaftanstaaf", "h", 110);
	ck_assert(!sasl_has_initial(s));
	char *r = step_str(s, "<1896.697170952@postoffice.reston.mci.net>", PG_OK);
	ck_assert_str_eq(r, "tim b913a602c7eda7a495b4e6e7334d3890");
	free(r);
	sasl_free(&s);
}
END_TEST

START_TEST(apop_rfc1939)
{
	const char *g = "POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
	char *ts = sasl_apop_timestamp(g, strlen(g));
	ck_assert_str_eq(ts, "<1896.697170952@dbc.mtview.ca.us>");
	char d[33];
	sasl_apop_digest(ts, "tanstaaf", d);
	ck_assert_str_eq(d, "c4c9334bac560ecc979e58001b3e22fb");
	free(ts);
	static const char *const bad[] = { "ready", "ready <>", "ready <abc>", "ready <a@b@c>",
					   "ready <a b@c>", "ready <@bc>", "ready <ab@>",
					   "ready <abc@def" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(sasl_apop_timestamp(bad[i], strlen(bad[i])) == NULL, "%s", bad[i]);
}
END_TEST

START_TEST(plain_and_oauth_layout)
{
	char *out = NULL;
	size_t n = 0;
	struct sasl *s = sasl_new(SASL_PLAIN, "tim", "pw", "h", 110);
	ck_assert_int_eq(sasl_step(s, NULL, 0, &out, &n, NULL), PG_OK);
	ck_assert_uint_eq(n, 7);
	ck_assert_mem_eq(out, "\0tim\0pw", 7);
	char *b = sasl_b64_encode(out, n);
	ck_assert_str_eq(b, "AHRpbQBwdw==");
	free(b);
	sasl_wipe_free(out, n);
	sasl_free(&s);

	s = sasl_new(SASL_XOAUTH2, "u@x.example", "TOKEN", "h", 995);
	ck_assert(!sasl_has_initial(s));
	out = step_str(s, "", PG_OK);
	ck_assert_str_eq(out, "user=u@x.example\001auth=Bearer TOKEN\001\001");
	free(out);
	out = step_str(s, "{\"status\":\"400\"}", PG_OK);
	ck_assert_str_eq(out, "");
	free(out);
	sasl_free(&s);

	s = sasl_new(SASL_OAUTHBEARER, "u@x.example", "TOKEN", "pop.x.example", 995);
	out = step_str(s, "", PG_OK);
	ck_assert_str_eq(out, "n,a=u@x.example,\001host=pop.x.example\001port=995\001"
			      "auth=Bearer TOKEN\001\001");
	free(out);
	sasl_free(&s);
}
END_TEST

START_TEST(base64_decode_strict)
{
	unsigned char *o = NULL;
	size_t n = 0;
	ck_assert_int_eq(sasl_b64_decode("AHRpbQBwdw==", 12, &o, &n), 0);
	ck_assert_uint_eq(n, 7);
	free(o);
	ck_assert_int_eq(sasl_b64_decode("", 0, &o, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(o);
	ck_assert_int_eq(sasl_b64_decode("AHR", 3, &o, &n), -1);
	ck_assert_int_eq(sasl_b64_decode("AH=p", 4, &o, &n), -1);
	ck_assert_int_eq(sasl_b64_decode("AH p", 4, &o, &n), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sasl");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, scram_sha1_rfc5802);
	tcase_add_test(tc, scram_sha256_rfc7677);
	tcase_add_test(tc, scram_bad_server);
	tcase_add_test(tc, scram_name_escape);
	tcase_add_test(tc, cram_md5_rfc2195);
	tcase_add_test(tc, apop_rfc1939);
	tcase_add_test(tc, plain_and_oauth_layout);
	tcase_add_test(tc, base64_decode_strict);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
