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

/* more than the old cap of 1 MiB (6,000 accounts; 10,000 take about
 * 2 MiB) loads; over 16 MiB is refused with the file named */
START_TEST(test_many_thousand_accounts)
{
	FILE *f = fopen(conf_path, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 6000; i++) {
		char name[32];
		snprintf(name, sizeof name, "mailbox-%05d", i);
		fputs(account_block(name, "  interval = \"1h\"\n"), f);
	}
	ck_assert_int_gt(ftell(f), 1024 * 1024);
	fclose(f);
	struct conf *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_OK);
	ck_assert_uint_eq(c->naccounts, 6000);
	ck_assert_str_eq(c->accounts[5999].name, "mailbox-05999");
	conf_free(&c);
	f = fopen(conf_path, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 17 * 1024; i++)
		fprintf(f, "# %01020d\n", i);
	fclose(f);
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "file larger than 16 MiB"));
	ck_assert_ptr_nonnull(strstr(err, conf_path));
	free(err);
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
	/* Postfix's smtp_tls_security_level names, and the older aliases */
	static const struct {
		const char *name;
		enum smtp_tls level;
	} lv[] = { { "none", SMTP_TLS_NONE },	    { "may", SMTP_TLS_MAY },
		   { "Encrypt", SMTP_TLS_ENCRYPT }, { "verify", SMTP_TLS_VERIFY },
		   { "starttls", SMTP_TLS_VERIFY }, { "required", SMTP_TLS_VERIFY } };
	for (size_t i = 0; i < sizeof lv / sizeof lv[0]; i++) {
		snprintf(text, sizeof text, "smtp {\n  tls = \"%s\"\n}\n%s", lv[i].name,
			 account_block("office", ""));
		write_conf(text);
		struct conf *c = NULL;
		ck_assert_msg(conf_load(conf_path, &c, &err) == PG_OK, "%s", err);
		ck_assert_int_eq(c->smtp.tls, lv[i].level);
		conf_free(&c);
	}
	snprintf(text, sizeof text, "smtp {\n  tls = \"encrypt\"\n  tls_fingerprint = \"sha256:12\"\n}\n%s",
		 account_block("office", ""));
	expect_error(text, 3, "tls_fingerprint", "sha256:12");
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
	ck_assert_int_eq(c->smtp.tls, SMTP_TLS_VERIFY); /* "starttls" is an alias of verify */
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
	snprintf(text, sizeof text, "%s",
		 account_block("o", "  envelope_header = \"X-Original-To\"\n  dedupe = \"message\"\n"));
	expect_error(text, 1, "dedupe = \"message\" cannot tell apart the copies of a multidrop", NULL);
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
	ck_assert_int_eq(conf_read_secret(&a, &secret, &err), PG_CONFIG); /* the configuration's fault: exit 78, not 75 */
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

/* no account: valid (the package's shipped file), with the one warning
 * the daemon's idle state is announced from */
START_TEST(test_no_account)
{
	struct conf *c = NULL;
	char *err = NULL;
	write_conf("spool_dir = \"/tmp/x\"\n");
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_OK);
	ck_assert_ptr_null(err);
	ck_assert_uint_eq(c->naccounts, 0);
	ck_assert_ptr_nonnull(c->warnings);
	ck_assert_ptr_nonnull(strstr(c->warnings, CONF_NO_ACCOUNT_WARNING));
	conf_free(&c);
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

/* issue 13.9: one duration syntax for every time option */
START_TEST(test_durations_everywhere)
{
	char text[8192];
	struct conf *c = NULL;
	char *err = NULL;
	snprintf(text, sizeof text, "status_warn_age = 90m\nsmtp {\n  timeout = \"2m\"\n}\n%s",
		 account_block("office", "  interval = \"5m\"\n  timeout = 90s\n"
			       "  connect_timeout = 1m\n  tls_timeout = 45\n  session_timeout = 2h\n"));
	write_conf(text);
	ck_assert_msg(conf_load(conf_path, &c, &err) == PG_OK, "%s", err ? err : "");
	ck_assert_int_eq(c->accounts[0].interval, 300);
	ck_assert_int_eq(c->accounts[0].timeout, 90);
	ck_assert_int_eq(c->accounts[0].connect_timeout, 60);
	ck_assert_int_eq(c->accounts[0].tls_timeout, 45);
	ck_assert_int_eq(c->accounts[0].session_timeout, 7200);
	ck_assert_int_eq(c->smtp.timeout, 120);
	ck_assert_int_eq(c->status_warn_age, 5400);
	conf_free(&c);
	snprintf(text, sizeof text, "%s", account_block("office", "  tls_timeout = 2h\n"));
	expect_error(text, 6, "tls_timeout", "out of range (1s to 1h)");
	snprintf(text, sizeof text, "%s", account_block("office", "  interval = \"5 min\"\n"));
	expect_error(text, 6, "interval", "not a duration");
	char b[32];
	conf_format_duration(300, b, sizeof b);
	ck_assert_str_eq(b, "5m");
	conf_format_duration(90, b, sizeof b);
	ck_assert_str_eq(b, "90s");
}
END_TEST

/* issue 13.9: an option given twice is a warning naming both lines */
START_TEST(test_duplicate_option_warned)
{
	char text[8192];
	struct conf *c = NULL;
	char *err = NULL;
	snprintf(text, sizeof text, "log_level = \"info\"\nlog_level = \"debug\"\n"
		 "smtp {\n  port = 25\n}\n%s",
		 account_block("office", "  interval = 60\n  interval = 120 # again\n"));
	write_conf(text);
	ck_assert_msg(conf_load(conf_path, &c, &err) == PG_OK, "%s", err ? err : "");
	ck_assert_ptr_nonnull(c->warnings);
	char want[512];
	snprintf(want, sizeof want, "%s:2: option 'log_level' is given again (first at line 1)",
		 conf_path);
	ck_assert_msg(strstr(c->warnings, want) != NULL, "%s", c->warnings);
	snprintf(want, sizeof want, "%s:12: option 'interval' is given again (first at line 11)",
		 conf_path);
	ck_assert_msg(strstr(c->warnings, want) != NULL, "%s", c->warnings);
	ck_assert_ptr_null(strstr(c->warnings, "'port'"));
	conf_free(&c);
	/* the same key in two accounts is no duplicate */
	snprintf(text, sizeof text, "%s", account_block("a", "  interval = 60\n"));
	size_t n = strlen(text);
	snprintf(text + n, sizeof text - n, "%s", account_block("b", "  interval = 60\n"));
	write_conf(text);
	ck_assert_int_eq(conf_load(conf_path, &c, &err), PG_OK);
	ck_assert_ptr_null(c->warnings);
	conf_free(&c);
}
END_TEST

/* ---- the oauth2 block ---- */

/* oauth2_conf - an account with `auth`, extra account options, then an
 * oauth2 block (at line 6 plus the lines of extra) */
static void oauth2_conf(char *text, size_t len, const char *auth, const char *extra,
			const char *body)
{
	snprintf(text, len,
		 "account \"sales\" {\n"
		 "  server = \"outlook.office365.com\"\n"
		 "  user = \"sales@contoso.example\"\n"
		 "  auth = \"%s\"\n"
		 "  deliver_to = \"sales@corp.example\"\n"
		 "%s"
		 "  oauth2 {\n%s  }\n"
		 "}\n",
		 auth, extra, body);
}

static struct conf *oauth2_load(const char *body)
{
	char text[4096];
	struct conf *c = NULL;
	char *err = NULL;
	oauth2_conf(text, sizeof text, "xoauth2", "", body);
	write_conf(text);
	ck_assert_msg(conf_load(conf_path, &c, &err) == PG_OK, "%s", err ? err : "");
	return c;
}

START_TEST(test_oauth2_microsoft_defaults)
{
	struct conf *c = oauth2_load("provider = \"microsoft\"\ntenant = \"contoso.example\"\n"
				     "client_id = \"0000-1111\"\nflow = \"device\"\n");
	const struct conf_oauth2 *o = c->accounts[0].oauth2;
	ck_assert_ptr_nonnull(o);
	ck_assert_int_eq(o->provider, OAUTH2_PROVIDER_MICROSOFT);
	ck_assert_int_eq(o->flow, OAUTH2_FLOW_DEVICE);
	ck_assert_str_eq(o->token_endpoint,
			 "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token");
	ck_assert_str_eq(o->device_endpoint,
			 "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/devicecode");
	ck_assert_ptr_null(o->authorize_endpoint);
	ck_assert_str_eq(o->scope, "https://outlook.office.com/POP.AccessAsUser.All offline_access");
	ck_assert_str_eq(o->client_id, "0000-1111");
	ck_assert_int_eq(o->line, 6);
	ck_assert_ptr_null(c->accounts[0].password_file);
	ck_assert_ptr_null(c->accounts[0].password_command);
	conf_free(&c);

	char body[1024];
	snprintf(body, sizeof body, "provider = \"microsoft\"\ntenant = \"contoso.example\"\n"
		 "client_id = \"x\"\nflow = \"browser\"\n");
	c = oauth2_load(body);
	o = c->accounts[0].oauth2;
	ck_assert_str_eq(o->authorize_endpoint,
			 "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize");
	ck_assert_ptr_null(o->device_endpoint);
	conf_free(&c);

	snprintf(body, sizeof body, "provider = \"microsoft\"\ntenant = \"1b2c3d4e-aaaa-bbbb\"\n"
		 "client_id = \"x\"\nflow = \"client_credentials\"\n"
		 "client_certificate_file = \"%s\"\nclient_key_file = \"%s\"\n", pass_path, pass_path);
	c = oauth2_load(body);
	o = c->accounts[0].oauth2;
	ck_assert_int_eq(o->flow, OAUTH2_FLOW_CLIENT_CREDENTIALS);
	ck_assert_str_eq(o->scope, "https://outlook.office365.com/.default");
	ck_assert_str_eq(o->client_key_file, pass_path);
	ck_assert_ptr_null(o->client_secret_file);
	conf_free(&c);
}
END_TEST

/* issue 13.5: relative paths are resolved against the file's directory,
 * and the file's own path is made absolute, whatever the working dir */
START_TEST(test_relative_paths)
{
	char text[8192], cwd[1024], want[1024];
	struct conf *c = NULL;
	char *err = NULL;
	snprintf(text, sizeof text, "spool_dir = \"relspool\"\nmetrics_file = \"m/x.prom\"\n"
		 "pid_file = \"p.pid\"\naccount \"office\" {\n  server = \"pop.example.com\"\n"
		 "  user = \"u\"\n  password_file = \"office.pass\"\n"
		 "  deliver_to = \"office@corp.example\"\n}\n");
	write_conf(text);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(dir), 0);
	ck_assert_msg(conf_load("popgate.conf", &c, &err) == PG_OK, "%s", err ? err : "");
	ck_assert_int_eq(chdir("/"), 0);
	ck_assert_str_eq(c->path, conf_path);
	snprintf(want, sizeof want, "%s/relspool", dir);
	ck_assert_str_eq(c->spool_dir, want);
	snprintf(want, sizeof want, "%s/m/x.prom", dir);
	ck_assert_str_eq(c->metrics_file, want);
	snprintf(want, sizeof want, "%s/p.pid", dir);
	ck_assert_str_eq(c->pid_file, want);
	ck_assert_str_eq(c->accounts[0].password_file, pass_path);
	conf_free(&c);
	ck_assert_int_eq(chdir(cwd), 0);
}
END_TEST

START_TEST(test_oauth2_google_generic)
{
	char body[1024];
	snprintf(body, sizeof body, "provider = \"Google\"\nclient_id = \"x.apps\"\n"
		 "flow = \"browser\"\nclient_secret_file = \"%s\"\n", pass_path);
	struct conf *c = oauth2_load(body);
	const struct conf_oauth2 *o = c->accounts[0].oauth2;
	ck_assert_int_eq(o->provider, OAUTH2_PROVIDER_GOOGLE);
	ck_assert_str_eq(o->token_endpoint, "https://oauth2.googleapis.com/token");
	ck_assert_str_eq(o->authorize_endpoint, "https://accounts.google.com/o/oauth2/v2/auth");
	ck_assert_str_eq(o->scope, "https://mail.google.com/");
	conf_free(&c);

	snprintf(body, sizeof body, "provider = \"generic\"\nclient_id = \"x\"\nflow = \"device\"\n"
		 "scope = \"pop\"\ntoken_endpoint = \"https://127.0.0.1:8443/token\"\n"
		 "device_endpoint = \"https://127.0.0.1:8443/device\"\nca_file = \"%s\"\n", pass_path);
	c = oauth2_load(body);
	o = c->accounts[0].oauth2;
	ck_assert_str_eq(o->token_endpoint, "https://127.0.0.1:8443/token");
	ck_assert_str_eq(o->device_endpoint, "https://127.0.0.1:8443/device");
	ck_assert_str_eq(o->ca_file, pass_path);
	ck_assert_str_eq(o->scope, "pop");
	conf_free(&c);

	/* an explicit endpoint overrides a provider's default */
	c = oauth2_load("provider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"x\"\n"
			"flow = \"device\"\ntoken_endpoint = \"https://idp.test/token\"\n");
	ck_assert_str_eq(c->accounts[0].oauth2->token_endpoint, "https://idp.test/token");
	conf_free(&c);
}
END_TEST

/* oauth2_error_case - the error is at the oauth2 block's line and names
 * both needles */
static void oauth2_error_case(const char *auth, const char *extra, const char *body,
			      const char *n1, const char *n2)
{
	char text[4096];
	int line = 6;
	oauth2_conf(text, sizeof text, auth, extra, body);
	for (const char *p = extra; *p; p++)
		line += *p == '\n';
	expect_error(text, line, n1, n2);
}

START_TEST(test_oauth2_errors)
{
	const char *ms = "provider = \"microsoft\"\ntenant = \"contoso.example\"\nclient_id = \"x\"\n";
	char body[1024], extra[512];
	/* exclusive with the password options */
	snprintf(extra, sizeof extra, "  password_file = \"%s\"\n", pass_path);
	snprintf(body, sizeof body, "%sflow = \"device\"\n", ms);
	oauth2_error_case("xoauth2", extra, body, "oauth2: an account with an oauth2 block takes no "
			  "'password_file'", "remove that option");
	oauth2_error_case("xoauth2", "  password_command = \"/bin/echo t\"\n", body,
			  "takes no 'password_command'", NULL);
	/* auth must carry a token */
	oauth2_error_case("user", "", body, "auth = user cannot carry a token", "xoauth2");
	oauth2_error_case("auto", "", body, "auth = auto", "oauthbearer");
	/* required per provider and flow */
	oauth2_error_case("xoauth2", "", "provider = \"microsoft\"\ntenant = \"t\"\nflow = \"device\"\n",
			  "option 'client_id' is required", NULL);
	oauth2_error_case("xoauth2", "", "client_id = \"x\"\n", "option 'provider' is required",
			  "option 'flow' is required");
	oauth2_error_case("xoauth2", "", "provider = \"microsoft\"\nclient_id = \"x\"\nflow = \"device\"\n",
			  "option 'tenant' is required", NULL);
	snprintf(body, sizeof body, "provider = \"google\"\nclient_id = \"x\"\nflow = \"device\"\n"
		 "client_secret_file = \"%s\"\n", pass_path);
	oauth2_error_case("xoauth2", "", body, "option 'flow'", "use flow = \"browser\"");
	oauth2_error_case("xoauth2", "", "provider = \"google\"\nclient_id = \"x\"\nflow = \"browser\"\n",
			  "option 'client_secret_file' is required with provider = google", NULL);
	oauth2_error_case("xoauth2", "", "provider = \"generic\"\nclient_id = \"x\"\nflow = \"device\"\n",
			  "option 'token_endpoint' is required", "option 'device_endpoint' is required");
	oauth2_error_case("xoauth2", "", "provider = \"generic\"\nclient_id = \"x\"\nflow = \"browser\"\n"
			  "scope = \"s\"\ntoken_endpoint = \"https://h/t\"\n",
			  "option 'authorize_endpoint' is required", NULL);
	/* https only, ca_file or not */
	snprintf(body, sizeof body, "%sflow = \"device\"\ntoken_endpoint = \"http://127.0.0.1/t\"\n"
		 "ca_file = \"%s\"\n", ms, pass_path);
	oauth2_error_case("xoauth2", "", body, "option 'token_endpoint': 'http://127.0.0.1/t' is not "
			  "an https:// URL", NULL);
	/* client_credentials: exactly one credential */
	snprintf(body, sizeof body, "%sflow = \"client_credentials\"\n", ms);
	oauth2_error_case("xoauth2", "", body, "needs exactly one credential", NULL);
	snprintf(body, sizeof body, "%sflow = \"client_credentials\"\nclient_key_file = \"%s\"\n", ms,
		 pass_path);
	oauth2_error_case("xoauth2", "", body, "'client_certificate_file' and 'client_key_file' go "
			  "together", NULL);
	snprintf(body, sizeof body, "provider = \"microsoft\"\ntenant = \"common\"\nclient_id = \"x\"\n"
		 "flow = \"client_credentials\"\nclient_secret_file = \"%s\"\n", pass_path);
	oauth2_error_case("xoauth2", "", body, "option 'tenant'", "not 'common'");
	snprintf(body, sizeof body, "%sflow = \"device\"\nclient_key_file = \"%s\"\n", ms, pass_path);
	oauth2_error_case("xoauth2", "", body, "client_credentials\" only", NULL);
	/* secrets 0600, files readable */
	chmod(pass_path, 0644);
	snprintf(body, sizeof body, "%sflow = \"client_credentials\"\nclient_secret_file = \"%s\"\n", ms,
		 pass_path);
	oauth2_error_case("xoauth2", "", body, "option 'client_secret_file'", "chmod 600");
	chmod(pass_path, 0600);
	snprintf(body, sizeof body, "%sflow = \"device\"\nca_file = \"/nonexistent/ca.pem\"\n", ms);
	oauth2_error_case("xoauth2", "", body, "option 'ca_file': cannot read '/nonexistent/ca.pem'",
			  NULL);
	/* the value checks of libconfuse name the option at its own line */
	char text[4096];
	snprintf(body, sizeof body, "%sflow = \"implicit\"\n", ms);
	oauth2_conf(text, sizeof text, "xoauth2", "", body);
	expect_error(text, 10, "option 'flow': 'implicit' is not one of device, browser, "
		     "client_credentials", NULL);
	/* xoauth2 without either source of tokens */
	expect_error("account \"x\" {\n  server = \"s\"\n  user = \"u\"\n  auth = \"xoauth2\"\n"
		     "  deliver_to = \"a@b.example\"\n}\n", 1, "needs an oauth2 { } block", NULL);
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
	tcase_set_timeout(tc, 60); /* 6,000 accounts under the sanitizers on a loaded machine */
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_full_example);
	tcase_add_test(tc, test_defaults_and_many_accounts);
	tcase_add_test(tc, test_many_thousand_accounts);
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
	tcase_add_test(tc, test_durations_everywhere);
	tcase_add_test(tc, test_duplicate_option_warned);
	tcase_add_test(tc, test_relative_paths);
	tcase_add_test(tc, test_account_name_controls);
	suite_add_tcase(s, tc);
	TCase *to = tcase_create("oauth2");
	tcase_add_checked_fixture(to, setup, teardown);
	tcase_add_test(to, test_oauth2_microsoft_defaults);
	tcase_add_test(to, test_oauth2_google_generic);
	tcase_add_test(to, test_oauth2_errors);
	suite_add_tcase(s, to);
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
