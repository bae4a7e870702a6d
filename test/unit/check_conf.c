/* check_conf.c - configuration parsing: values, defaults, and errors that
 * name the file, the line and the option */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"

static char dir[] = "/tmp/check_conf.XXXXXX";
static char conf_path[256], pass_path[256];

static void setup(void)
{
	strcpy(dir, "/tmp/check_conf.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(conf_path, sizeof conf_path, "%s/popgate.conf", dir);
	snprintf(pass_path, sizeof pass_path, "%s/office.pass", dir);
	FILE *f = fopen(pass_path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("s3cret\n", f);
	fclose(f);
	chmod(pass_path, 0600);
}

static void teardown(void)
{
	unlink(conf_path);
	unlink(pass_path);
	rmdir(dir);
}

static void write_conf(const char *text)
{
	FILE *f = fopen(conf_path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/* account_block - a valid account using the test password file */
static char *account_block(const char *name, const char *extra)
{
	static char b[2048];
	snprintf(b, sizeof b,
		 "account \"%s\" {\n"
		 "  server = \"pop.example.com\"\n"
		 "  user = \"office@example.com\"\n"
		 "  password_file = \"%s\"\n"
		 "  deliver_to = \"office@corp.example\"\n"
		 "%s"
		 "}\n",
		 name, pass_path, extra);
	return b;
}

static char *load_err(const char *text)
{
	struct conf *c = NULL;
	char *err = NULL;
	write_conf(text);
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_CONFIG);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(err);
	return err;
}

/* expect_error - the error text contains "FILE:LINE:" and every needle */
static void expect_error(const char *text, int line, const char *n1, const char *n2)
{
	char *err = load_err(text);
	char where[300];
	snprintf(where, sizeof where, "%s:%d:", conf_path, line);
	ck_assert_msg(strstr(err, where) != NULL, "expected '%s' in '%s'", where, err);
	if (n1)
		ck_assert_msg(strstr(err, n1) != NULL, "expected '%s' in '%s'", n1, err);
	if (n2)
		ck_assert_msg(strstr(err, n2) != NULL, "expected '%s' in '%s'", n2, err);
	free(err);
}

START_TEST(test_full_example)
{
	char text[8192];
	snprintf(text, sizeof text,
		 "spool_dir = \"/var/spool/popgate\"\n"
		 "smtp {\n  host = \"127.0.0.1\"\n  port = 25\n}\n"
		 "account \"office\" {\n"
		 "  server = \"pop.example.com\"\n  port = 995\n  tls = \"implicit\"   # implicit\n"
		 "  ca_file = \"%s\"\n  user = \"office@example.com\"\n"
		 "  password_file = \"%s\"\n  allow_plaintext = false\n"
		 "  deliver_to = \"office@corp.example\"\n  keep = false\n  interval = 300\n}\n",
		 pass_path, pass_path);
	write_conf(text);
	struct conf *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_OK);
	ck_assert_str_eq(c->spool_dir, "/var/spool/popgate");
	ck_assert_str_eq(c->smtp.host, "127.0.0.1");
	ck_assert_int_eq(c->smtp.port, 25);
	ck_assert_uint_eq(c->naccounts, 1);
	const struct conf_account *a = conf_find_account(c, "office");
	ck_assert_ptr_nonnull(a);
	ck_assert_str_eq(a->server, "pop.example.com");
	ck_assert_int_eq(a->port, 995);
	ck_assert_int_eq(a->tls, TLS_IMPLICIT);
	ck_assert_str_eq(a->deliver_to, "office@corp.example");
	ck_assert_int_eq(a->keep, 0);
	ck_assert_int_eq(a->interval, 300);
	ck_assert_int_eq(a->line, 6);
	char *secret = NULL;
	ck_assert_int_eq(conf_read_secret(a, &secret, &err), PG_OK);
	ck_assert_str_eq(secret, "s3cret");
	free(secret);
	conf_free(&c);
	ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_defaults_and_many_accounts)
{
	char text[8192];
	snprintf(text, sizeof text, "%s", account_block("a", "  tls = \"starttls\"\n"));
	strncat(text, account_block("b", "  tls = \"none\"\n  allow_plaintext = true\n"),
		sizeof text - strlen(text) - 1);
	strncat(text, account_block("c", ""), sizeof text - strlen(text) - 1);
	write_conf(text);
	struct conf *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_OK);
	ck_assert_uint_eq(c->naccounts, 3);
	ck_assert_int_eq(c->accounts[0].port, 110);
	ck_assert_int_eq(c->accounts[1].port, 110);
	ck_assert_int_eq(c->accounts[1].allow_plaintext, 1);
	ck_assert_int_eq(c->accounts[2].port, 995);
	ck_assert_int_eq(c->accounts[2].tls, TLS_IMPLICIT);
	ck_assert_int_eq(c->smtp.port, 25);
	ck_assert_str_eq(c->spool_dir, "/var/spool/popgate");
	conf_free(&c);
}
END_TEST

START_TEST(test_unknown_option)
{
	char text[8192];
	snprintf(text, sizeof text, "%s", account_block("office", "  colour = \"blue\"\n"));
	expect_error(text, 6, "colour", NULL);
}
END_TEST

START_TEST(test_line_after_comments)
{
	/* the bad port is on line 13; libconfuse alone reports a later line */
	char text[8192];
	snprintf(text, sizeof text,
		 "# popgate configuration\n# second comment\n// c++ comment\n/* block\n   comment */\n"
		 "spool_dir = \"/tmp/x\" # trailing \"quoted\" comment\n%s",
		 account_block("office", "  # comment inside\n  port = 99999\n"));
	expect_error(text, 13, "port", "99999");
}
END_TEST

START_TEST(test_hash_inside_string_kept)
{
	char text[8192];
	snprintf(text, sizeof text, "spool_dir = \"/srv/spool#1//x/*y*/\"\n%s",
		 account_block("office", ""));
	write_conf(text);
	struct conf *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_OK);
	ck_assert_str_eq(c->spool_dir, "/srv/spool#1//x/*y*/");
	conf_free(&c);
}
END_TEST

START_TEST(test_bad_values)
{
	char text[8192];
	snprintf(text, sizeof text, "%s", account_block("office", "  tls = \"maybe\"\n"));
	expect_error(text, 6, "tls", "maybe");
	snprintf(text, sizeof text, "%s", account_block("office", "  keep = perhaps\n"));
	expect_error(text, 6, "keep", NULL);
	snprintf(text, sizeof text, "%s", account_block("office", "  interval = 0\n"));
	expect_error(text, 6, "interval", NULL);
	snprintf(text, sizeof text, "smtp {\n  port = \"x\"\n}\n%s", account_block("office", ""));
	expect_error(text, 2, "port", NULL);
	snprintf(text, sizeof text, "log_level = \"loud\"\n%s", account_block("office", ""));
	expect_error(text, 1, "log_level", "loud");
}
END_TEST

/* regression: an error in account "office" must not point at the line of
 * an earlier account whose name merely starts with "office" */
START_TEST(test_account_line_whole_name)
{
	char text[8192];
	snprintf(text, sizeof text, "%s\n", account_block("office2", ""));
	strncat(text, "account \"office\" {\n  server = \"s\"\n}\n", sizeof text - strlen(text) - 1);
	expect_error(text, 8, "office", "user");
}
END_TEST

/* regression: values that would reach the SMTP dialogue are checked */
START_TEST(test_smtp_values)
{
	char text[8192];
	snprintf(text, sizeof text, "smtp {\n  port = 0\n}\n%s", account_block("office", ""));
	expect_error(text, 2, "port", NULL);
	snprintf(text, sizeof text, "smtp {\n  helo_name = \"gw\\nRSET\"\n}\n%s",
		 account_block("office", ""));
	expect_error(text, 2, "helo_name", NULL);
	snprintf(text, sizeof text, "smtp {\n  tls = \"sometimes\"\n}\n%s", account_block("office", ""));
	expect_error(text, 2, "tls", "sometimes");
	snprintf(text, sizeof text, "smtp {\n  ca_file = \"/nonexistent/ca.pem\"\n}\n%s",
		 account_block("office", ""));
	char *err = load_err(text);
	ck_assert_msg(strstr(err, "/nonexistent/ca.pem") != NULL, "%s", err);
	free(err);
}
END_TEST

/* every option of the later work parses into its field */
START_TEST(test_extended_options)
{
	char text[8192];
	snprintf(text, sizeof text,
		 "user = \"popgate\"\npid_file = \"/run/popgate.pid\"\nmax_parallel_polls = 8\n"
		 "metrics_file = \"/var/lib/node/popgate.prom\"\nkeep_sent_days = 7\n"
		 "postmaster = \"postmaster@corp.example\"\nmax_queue_time = 3d\n"
		 "retry_intervals = {30s, 2m, 1h}\n"
		 "smtp {\n  tls = \"STARTTLS\"\n  max_sessions = 3\n  max_messages_per_session = 50\n}\n"
		 "account \"m\" {\n  server = \"s\"\n  user = \"u\"\n  password_command = \"/bin/echo tok\"\n"
		 "  auth = \"XOAUTH2\"\n  tls = \"StartTLS\"\n"
		 "  tls_fingerprint = \"sha256:%s\"\n"
		 "  keep = true\n  keep_days = 14\n  max_message_size = 25M\n  oversize = skip\n"
		 "  max_messages_per_poll = 500\n  max_bytes_per_poll = 1G\n  session_timeout = 600\n"
		 "  envelope_header = \"delivered-to\"\n  envelope_skip = 1\n"
		 "  local_domains = {\"Example.COM\", \"corp.example\"}\n"
		 "  map \"Sales@example.com\" { to = \"anna@corp.example\" }\n"
		 "  fallback_to = \"catchall@corp.example\"\n  envelope_from = \"<>\"\n}\n",
		 "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89");
	write_conf(text);
	struct conf *c = NULL;
	char *err = NULL;
	ck_assert_msg(conf_load(conf_path, &c, &err) == PG_OK, "%s", err);
	ck_assert_str_eq(c->user, "popgate");
	ck_assert_int_eq(c->max_parallel_polls, 8);
	ck_assert_int_eq(c->keep_sent_days, 7);
	ck_assert_int_eq(c->bounce, BOUNCE_POSTMASTER);
	ck_assert_int_eq(c->max_queue_time, 3 * 86400);
	ck_assert_uint_eq(c->nretry, 3);
	ck_assert_int_eq(c->retry_intervals[0], 30);
	ck_assert_int_eq(c->retry_intervals[2], 3600);
	ck_assert_int_eq(c->smtp.tls, TLS_STARTTLS);
	ck_assert_int_eq(c->smtp.max_sessions, 3);
	const struct conf_account *a = &c->accounts[0];
	ck_assert_int_eq(a->auth, AUTH_XOAUTH2);
	ck_assert_int_eq(a->tls, TLS_STARTTLS);
	ck_assert_int_eq(a->port, 110);
	ck_assert_uint_eq(a->max_message_size, 25u << 20);
	ck_assert_uint_eq(a->max_bytes_per_poll, 1u << 30);
	ck_assert_int_eq(a->oversize, OVERSIZE_SKIP);
	ck_assert_int_eq(a->keep_days, 14);
	ck_assert_ptr_null(a->deliver_to);
	ck_assert_str_eq(a->envelope_header, "Delivered-To");
	ck_assert_uint_eq(a->nlocal_domains, 2);
	ck_assert_str_eq(a->local_domains[0], "example.com");
	ck_assert_uint_eq(a->nmaps, 1);
	ck_assert_str_eq(a->maps[0].from, "sales@example.com");
	ck_assert_str_eq(a->maps[0].to, "anna@corp.example");
	ck_assert_str_eq(a->envelope_from, "");
	char *tok = NULL;
	ck_assert_msg(conf_read_secret(a, &tok, &err) == PG_OK, "%s", err);
	ck_assert_str_eq(tok, "tok");
	free(tok);
	conf_free(&c);
}
END_TEST

/* options that only make sense together, and values of the new kinds */
START_TEST(test_extended_errors)
{
	char text[8192];
	snprintf(text, sizeof text, "%s", account_block("o", "  max_message_size = 12Q\n"));
	expect_error(text, 6, "max_message_size", "12Q");
	snprintf(text, sizeof text, "max_queue_time = soon\n%s", account_block("o", ""));
	expect_error(text, 1, "max_queue_time", "soon");
	snprintf(text, sizeof text, "%s", account_block("o", "  auth = \"kerberos\"\n"));
	expect_error(text, 6, "auth", "scram-sha-256");
	snprintf(text, sizeof text, "%s", account_block("o", "  tls_fingerprint = \"md5:00\"\n"));
	expect_error(text, 6, "tls_fingerprint", NULL);
	snprintf(text, sizeof text, "%s", account_block("o", "  keep_days = 3\n"));
	expect_error(text, 1, "keep_days needs keep", NULL);
	snprintf(text, sizeof text, "%s", account_block("o", "  envelope_header = \"X-Original-To\"\n"));
	expect_error(text, 1, "exactly one of 'deliver_to'", NULL);
	snprintf(text, sizeof text, "%s", account_block("o", "  password_command = \"/bin/true\"\n"));
	expect_error(text, 1, "exactly one of 'password_file'", NULL);
	snprintf(text, sizeof text, "bounce = postmaster\n%s", account_block("o", ""));
	char *err = load_err(text);
	ck_assert_msg(strstr(err, "needs a 'postmaster'") != NULL, "%s", err);
	free(err);
}
END_TEST

/* password_command: run without a shell, failure explained, never hangs */
START_TEST(test_password_command_failures)
{
	struct conf_account a = { .name = "o", .password_command = "/bin/false" };
	char *secret = NULL, *err = NULL;
	ck_assert_int_eq(conf_read_secret(&a, &secret, &err), PG_TEMP);
	ck_assert_msg(strstr(err, "exited with an error") != NULL, "%s", err);
	free(err);
	err = NULL;
	a.password_command = "/nonexistent/tokenhelper --account o";
	ck_assert_int_eq(conf_read_secret(&a, &secret, &err), PG_TEMP);
	ck_assert_msg(strstr(err, "not found") != NULL, "%s", err);
	free(err);
	err = NULL;
	a.password_command = "/bin/echo $HOME;rm";
	ck_assert_int_eq(conf_read_secret(&a, &secret, &err), PG_OK);
	ck_assert_str_eq(secret, "$HOME;rm"); /* no shell expanded anything */
	free(secret);
}
END_TEST

START_TEST(test_bad_address)
{
	char text[8192];
	snprintf(text, sizeof text,
		 "account \"office\" {\n  server = \"s\"\n  user = \"u\"\n  password_file = \"%s\"\n"
		 "  deliver_to = \"a@b>\\r\\nRCPT TO:<x@y\"\n}\n", pass_path);
	expect_error(text, 5, "deliver_to", NULL);
}
END_TEST

START_TEST(test_missing_required)
{
	char text[8192];
	snprintf(text, sizeof text,
		 "spool_dir = \"/tmp/x\"\n\naccount \"office\" {\n  user = \"u\"\n"
		 "  password_file = \"%s\"\n  deliver_to = \"a@b.example\"\n}\n", pass_path);
	expect_error(text, 3, "server", "office");
}
END_TEST

START_TEST(test_no_account)
{
	char *err = load_err("spool_dir = \"/tmp/x\"\n");
	ck_assert_ptr_nonnull(strstr(err, "no account"));
	ck_assert_ptr_nonnull(strstr(err, conf_path));
	free(err);
}
END_TEST

START_TEST(test_duplicate_account)
{
	char text[8192];
	snprintf(text, sizeof text, "%s", account_block("office", ""));
	strncat(text, account_block("office", ""), sizeof text - strlen(text) - 1);
	char *err = load_err(text);
	ck_assert_ptr_nonnull(strstr(err, "office"));
	free(err);
}
END_TEST

START_TEST(test_password_file_mode)
{
	chmod(pass_path, 0644);
	char text[8192];
	snprintf(text, sizeof text, "%s", account_block("office", ""));
	char *err = load_err(text);
	ck_assert_msg(strstr(err, "group or others") != NULL, "%s", err);
	ck_assert_ptr_nonnull(strstr(err, pass_path));
	ck_assert_ptr_nonnull(strstr(err, "password_file"));
	free(err);
	chmod(pass_path, 0600);
}
END_TEST

START_TEST(test_missing_file)
{
	struct conf *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(conf_load("/nonexistent/popgate.conf", &c, &err), PG_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/popgate.conf"));
	free(err);
}
END_TEST

/* regression (issue 12): a CR or LF in an account name went into every
 * relayed message's Received field (a "Bcc:" line) and split log lines */
START_TEST(test_account_name_controls)
{
	static const char *const names[] = { "office\\r\\nBcc: x@evil.example", "off\\nice",
					     "a\\tb", "x\\x01y", "tab\there" };
	char text[8192];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(text, sizeof text, "smtp {\n  port = 25\n}\n%s",
			 account_block(names[i], ""));
		char *err = load_err(text);
		char where[300];
		snprintf(where, sizeof where, "%s:4: account '", conf_path);
		ck_assert_msg(strstr(err, where) != NULL, "%s: expected '%s' in '%s'", names[i], where,
			      err);
		ck_assert_msg(strstr(err, "the name contains a control character") != NULL, "%s", err);
		ck_assert_msg(strpbrk(err, "\r\t\x01") == NULL, "raw control in the error: %s", err);
		for (const char *p = strchr(err, '\n'); p; p = strchr(p + 1, '\n'))
			ck_assert_msg(strncmp(p + 1, conf_path, strlen(conf_path)) == 0,
				      "a line of the error that is not an error: %s", err);
		free(err);
	}
	snprintf(text, sizeof text, "%s", account_block("a(b)", ""));
	expect_error(text, 1, "account 'a(b)'", "parentheses");
	snprintf(text, sizeof text, "%s", account_block("office", "  ca_file = \"/x\\ny\"\n"));
	expect_error(text, 6, "ca_file", "control character");
}
END_TEST

static Suite *conf_suite(void)
{
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("conf");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_full_example);
	tcase_add_test(tc, test_defaults_and_many_accounts);
	tcase_add_test(tc, test_unknown_option);
	tcase_add_test(tc, test_line_after_comments);
	tcase_add_test(tc, test_hash_inside_string_kept);
	tcase_add_test(tc, test_bad_values);
	tcase_add_test(tc, test_bad_address);
	tcase_add_test(tc, test_account_line_whole_name);
	tcase_add_test(tc, test_smtp_values);
	tcase_add_test(tc, test_extended_options);
	tcase_add_test(tc, test_extended_errors);
	tcase_add_test(tc, test_password_command_failures);
	tcase_add_test(tc, test_missing_required);
	tcase_add_test(tc, test_no_account);
	tcase_add_test(tc, test_duplicate_account);
	tcase_add_test(tc, test_password_file_mode);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_account_name_controls);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(conf_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
