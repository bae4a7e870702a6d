/*
 * check_fetchmailrc.c - the .fetchmailrc converter (issue 18) over a table
 * of rcfile snippets: every keyword, quoting and escapes as fetchmail's
 * lexer reads them, defaults inheritance, multidrop, odd spacing, line
 * continuation and syntax errors (line and column).  Every snippet that
 * converts is also loaded with popgate's own configuration parser, with
 * the secrets written, so the output is proved to be a valid popgate.conf.
 */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "fetchmailrc.h"

struct snippet {
	const char *what;
	const char *rc;
	int status;          /* FMRC_* */
	const char *want[8]; /* lines (substrings) the output must contain */
	const char *not[4];  /* substrings it must not contain */
	const char *diag;    /* substring of stderr (or of the syntax error) */
};

#define ACC "account \"jo@pop.example.com\" {"

static const struct snippet snippets[] = {
	{ "minimal poll: STLS as fetchmail tries it, deliver_to the local user",
	  "poll pop.example.com user jo password secret\n", FMRC_OK,
	  { ACC, "server          = \"pop.example.com\"", "tls             = \"starttls\"",
	    "user            = \"jo\"", "password_file   = \"@DIR@/jo@pop.example.com.pass\"",
	    "deliver_to      = \"tester@localhost\"" },
	  { "secret" }, NULL },
	{ "noise words and punctuation, server synonym, odd spacing",
	  "server\tpop.example.com ,with proto POP3;\n\n   user   jo  ,  there has\n"
	  "password:secret   and wants options keep;\n", FMRC_OK,
	  { ACC, "keep            = true" }, { "secret" }, NULL },
	{ "ssl -> implicit, port, sslcertfile -> ca_file",
	  "poll pop.example.com port 9995 user jo pass x ssl sslcertfile ca.pem\n",
	  FMRC_OK,
	  { "tls             = \"implicit\"", "port            = 9995",
	    "ca_file         = \"ca.pem\"" }, { "starttls" }, NULL },
	{ "service by name and number",
	  "poll pop.example.com service pop3s user jo pass x ssl\n"
	  "poll p2.example.com service 1110 user jo pass x\n", FMRC_OK,
	  { "port            = 995", "port            = 1110" }, { NULL }, NULL },
	{ "sslproto '' -> plaintext, with the comment",
	  "poll pop.example.com user jo pass x sslproto ''\n", FMRC_OK,
	  { "tls             = \"none\"", "allow_plaintext = true",
	    "sent the password in clear" }, { NULL }, NULL },
	{ "sslproto tls1.2+ without ssl -> required STLS",
	  "poll pop.example.com user jo pass x sslproto 'tls1.2+' sslcertck\n", FMRC_OK,
	  { "tls             = \"starttls\"", "fetchmail required STLS",
	    "# line 1: sslcertck: popgate always verifies" }, { NULL }, NULL },
	{ "double quotes, single quotes, fetchmail's escapes",
	  "poll pop.example.com user \"jo\" pass 'a\\tb\\x41\\101\\0101\\\\z\\qy'\n", FMRC_OK,
	  { ACC }, { NULL }, "SECRET:a\tbAe\b1\\zqy" },
	{ "a quoted string joined across lines with backslash-newline",
	  "poll pop.example.com user jo pass \"ab\\\ncd\"\n", FMRC_OK,
	  { ACC }, { NULL }, "SECRET:abcd" },
	{ "a quoted string across lines keeps the newline; comment with # in a word",
	  "poll pop.example.com # xyzzy\n user jo pass p#ss # a comment\n", FMRC_OK,
	  { ACC }, { "xyzzy", "a comment" }, "SECRET:p#ss" },
	{ "line continuation between tokens",
	  "poll pop.example.com \\\n  user jo \\\n  pass x keep\n", FMRC_OK,
	  { ACC, "keep            = true" }, { NULL }, NULL },
	{ "a keyword as a user name after user/pass/is (NAME state)",
	  "poll pop.example.com user keep pass poll is fetchall\n", FMRC_OK,
	  { "account \"keep@pop.example.com\" {", "user            = \"keep\"",
	    "deliver_to      = \"fetchall@localhost\"" }, { "keep            = true" },
	  "SECRET:poll" },
	{ "user LOCAL here is REMOTE there",
	  "poll pop.example.com user esr here is eric there pass x\n", FMRC_OK,
	  { "account \"eric@pop.example.com\" {", "user            = \"eric\"",
	    "deliver_to      = \"esr@localhost\"" }, { NULL }, NULL },
	{ "defaults inherited; an entry overrides them; the defaults' user",
	  "defaults proto pop3 timeout 45 user \"jo\" fetchall keep\n"
	  "poll pop.example.com pass one\n"
	  "poll p2.example.com timeout 90 user ann pass two no keep\n", FMRC_OK,
	  { ACC, "timeout         = 45", "account \"ann@p2.example.com\" {",
	    "timeout         = 90", "keep            = true",
	    "# line 1: fetchall: popgate takes every message", "# line 3: no keep" },
	  { NULL }, NULL },
	{ "several users on one server: one account each, names unique",
	  "poll pop.example.com user jo pass a user jo pass b user ann pass c\n", FMRC_OK,
	  { ACC, "account \"jo@pop.example.com-2\" {", "account \"ann@pop.example.com\" {" },
	  { NULL }, NULL },
	{ "via, smtphost with a port, smtpaddress -> the RCPT domain",
	  "poll label via pop.example.com user jo pass x is jo smtphost mx.corp.example/2525 "
	  "smtpaddress corp.example\n", FMRC_OK,
	  { "account \"jo@label\" {", "server          = \"pop.example.com\"",
	    "host            = \"mx.corp.example\"", "port            = 2525",
	    "deliver_to      = \"jo@corp.example\"" }, { NULL }, NULL },
	{ "smtpname -> deliver_to; several smtphosts: the first",
	  "poll pop.example.com user jo pass x smtpname boss@corp.example "
	  "smtphost a.example b.example\n", FMRC_OK,
	  { "deliver_to      = \"boss@corp.example\"", "host            = \"a.example\"",
	    "smtphost lists 2 hosts" }, { NULL }, NULL },
	{ "limits: limit, fetchlimit, batchlimit; timeout; interval with set daemon",
	  "set daemon 600\npoll pop.example.com interval 3 timeout 20 user jo pass x limit 5000 "
	  "fetchlimit 50 batchlimit 10 fetchsizelimit 5 expunge 10\n", FMRC_OK,
	  { "max_message_size = 5000", "oversize        = \"skip\"",
	    "max_messages_per_poll = 50", "max_messages_per_session = 10",
	    "timeout         = 20", "interval        = 1800" }, { NULL }, NULL },
	{ "keep + flush -> keep_days; uidl",
	  "poll pop.example.com uidl user jo pass x keep flush\n", FMRC_OK,
	  { "keep            = true", "keep_days       = 1", "# line 1: uidl" },
	  { "# NOT CONVERTED" }, NULL },
	{ "auth types", "poll pop.example.com auth cram-md5 user jo pass x\n"
	  "poll p2.example.com auth password user jo pass x\n"
	  "poll p3.example.com proto apop user jo pass x\n"
	  "poll p4.example.com auth any user jo pass x\n", FMRC_OK,
	  { "auth            = \"cram-md5\"", "auth            = \"user\"",
	    "auth            = \"apop\"" }, { "\"auto\"" }, NULL },
	{ "oauthbearer: the token through password_command",
	  "poll pop.example.com auth oauthbearer user jo pass tok ssl\n", FMRC_OK,
	  { "auth            = \"oauthbearer\"",
	    "password_command = \"cat @DIR@/jo@pop.example.com.pass\"" },
	  { "password_file   =" }, "SECRET:tok" },
	{ "passwordfile names the file; nothing to write",
	  "poll pop.example.com user jo passwordfile /etc/jo.pw\n", FMRC_OK,
	  { "password_file   = \"/etc/jo.pw\"" }, { NULL }, NULL },
	{ "set statements", "set postmaster \"pm\"\nset no bouncemail\nset syslog\n"
	  "set softbounce\nset pidfile = /run/fm.pid\nset idfile /x/ids\n"
	  "poll pop.example.com user jo pass x\n", FMRC_OK,
	  { "postmaster = \"pm@localhost\"", "pid_file = \"/run/fm.pid\"",
	    "set no bouncemail", "set softbounce", "set idfile" }, { NULL }, NULL },
	{ "multidrop: envelope with skip, localdomains, aka, mappings, *, postmaster",
	  "set postmaster pm\n"
	  "poll mx.example.net envelope 1 \"X-Original-To:\" localdomains corp.example "
	  "aka alias.example.net no dns\n"
	  "  user catch pass x to alice bob=robert * here smtpaddress corp.example\n", FMRC_PARTIAL,
	  { "envelope_header = \"X-Original-To\"", "envelope_skip   = 1",
	    "local_domains   = { \"corp.example\", \"alias.example.net\", \"mx.example.net\" }",
	    "map \"alice@alias.example.net\" { to = \"alice@corp.example\" }",
	    "map \"bob@mx.example.net\" { to = \"robert@corp.example\" }",
	    "fallback_to     = \"pm@corp.example\"", "# line 2: no dns",
	    "# NOT CONVERTED (line 3): to: '*'" },
	  { "deliver_to", "map \"@" }, ":3: to: not converted: '*'" },
	{ "multidrop: '*' where the server's name is the RCPT domain converts",
	  "poll corp.example user catch pass x is a * smtpaddress corp.example\n", FMRC_OK,
	  { "local_domains   = { \"corp.example\" }",
	    "map \"a@corp.example\" { to = \"a@corp.example\" }" }, { "map \"@" }, NULL },
	{ "multidrop with default envelope and a full-address mapping",
	  "poll mx.example.net user catch pass x is a@x.example=ann b\n", FMRC_OK,
	  { "envelope_header = \"X-Envelope-To\"",
	    "map \"a@x.example\" { to = \"ann@localhost\" }",
	    "map \"b@mx.example.net\" { to = \"b@localhost\" }",
	    "map \"@mx.example.net\" { to = \"tester@localhost\" }",
	    "fallback_to     = \"tester@localhost\"" }, { NULL }, NULL },
	{ "multidrop: repeated names and an aka equal to the server or a localdomain",
	  "poll mx.example.net aka mx.example.net corp.example localdomains corp.example "
	  "user catch pass x is a a b\n", FMRC_OK,
	  { "local_domains   = { \"corp.example\", \"mx.example.net\" }",
	    "map \"a@mx.example.net\" { to = \"a@localhost\" }",
	    "map \"@mx.example.net\" { to = \"tester@localhost\" }" },
	  { "@corp.example\"", "map \"a@mx.example.net\" { to = \"a@localhost\" }\n    map \"a@mx" },
	  NULL },
	{ "multidrop: an envelope header popgate cannot read",
	  "poll mx.example.net envelope X-Foo user catch pass x is a b\n", FMRC_PARTIAL,
	  { "envelope_header = \"X-Envelope-To\"", "# NOT CONVERTED (line 1): envelope" },
	  { NULL }, ":1: envelope: not converted" },
	{ "no envelope -> guess_from_headers, reported",
	  "poll mx.example.net no envelope user catch pass x is a b\n", FMRC_PARTIAL,
	  { "guess_from_headers = true" }, { NULL }, ":1: no envelope: not converted" },
	{ "nokeep is split as fetchmail's lexer does",
	  "poll pop.example.com user jo pass x nokeep nofetchall\n", FMRC_OK,
	  { "# line 1: no keep", "# line 1: no fetchall" }, { "keep            = true" },
	  NULL },
	{ "mda is not converted, with line and reason",
	  "poll pop.example.com user jo pass x\n  mda \"/usr/bin/procmail -d %T\"\n", FMRC_PARTIAL,
	  { "# NOT CONVERTED (line 2): mda: popgate delivers over SMTP only" }, { NULL },
	  ":2: mda: not converted: popgate delivers over SMTP only" },
	{ "sslfingerprint: popgate wants SHA-256, and how to get it",
	  "poll pop.example.com user jo pass x ssl sslfingerprint \"AA:BB\"\n", FMRC_PARTIAL,
	  { "# NOT CONVERTED (line 1): sslfingerprint" }, { NULL },
	  "openssl x509 -noout -fingerprint -sha256" },
	{ "antispam, preconnect, postconnect, sslcommonname, sslcertpath, qvirtual",
	  "poll pop.example.com qvirtual pre- user jo pass x antispam 571 550 "
	  "preconnect \"ssh -f x\" postconnect 'true' sslcommonname pop sslcertpath /etc/c\n",
	  FMRC_PARTIAL,
	  { "NOT CONVERTED (line 1): antispam", "NOT CONVERTED (line 1): preconnect",
	    "NOT CONVERTED (line 1): postconnect", "NOT CONVERTED (line 1): sslcommonname",
	    "NOT CONVERTED (line 1): sslcertpath", "NOT CONVERTED (line 1): qvirtual" },
	  { NULL }, ":1: antispam: not converted" },
	{ "interval without set daemon is reported",
	  "poll pop.example.com interval 2 user jo pass x\n", FMRC_PARTIAL,
	  { "NOT CONVERTED (line 1): interval" }, { "interval        =" }, NULL },
	{ "IMAP entry left out; skip entry commented out",
	  "poll imap.example.com proto imap user jo pass x\n"
	  "skip pop.example.com user jo pass y\n", FMRC_PARTIAL,
	  { "NOT CONVERTED: protocol imap", "# account \"jo@pop.example.com\" {",
	    "a skip entry", "#     # NOT CONVERTED (line 2): skip" }, { NULL },
	  ":1: proto: not converted" },
	{ "a password with a line break or empty is not written",
	  "poll pop.example.com user jo pass 'a\\nb'\npoll p2.example.com user jo pass \"\"\n",
	  FMRC_PARTIAL, { "NOT CONVERTED (line 1): pass: the password holds a line break",
	    "NOT CONVERTED (line 2): pass: an empty password" }, { NULL }, ":2: pass: not converted" },
	{ "error: user option before user", "poll pop.example.com\nkeep user jo\n",
	  FMRC_SYNTAX, { NULL }, { NULL }, ":2:6: syntax error: 'user' where" },
	{ "error: server option after user options",
	  "poll pop.example.com user jo pass x\n   proto pop3\n", FMRC_SYNTAX, { NULL }, { NULL },
	  ":2:4: syntax error: server option 'proto' after user options" },
	{ "error: unterminated string", "poll pop.example.com user jo pass \"abc\n",
	  FMRC_SYNTAX, { NULL }, { NULL }, ":1:35: syntax error: unterminated double-quoted" },
	{ "error: a number expected", "poll pop.example.com timeout soon user jo\n",
	  FMRC_SYNTAX, { NULL }, { NULL }, ":1:30: syntax error: timeout expected (a number)" },
	{ "error: a double quote cannot be escaped (fetchmail ends the string there)",
	  "poll pop.example.com user jo pass \"a\\\"b\"\n", FMRC_SYNTAX, { NULL }, { NULL },
	  ":1:39: syntax error" },
	{ "error: `set daemon = N`, as in fetchmail ('=' makes the next word a string)",
	  "set daemon = 60\n", FMRC_SYNTAX, { NULL }, { NULL },
	  ":1:14: syntax error: the poll interval in seconds expected (a number)" },
	{ "error: defaults with a user option before user",
	  "defaults keep user jo\n", FMRC_SYNTAX, { NULL }, { NULL }, ":1:15: syntax error" },
	{ "error: bad protocol", "poll pop.example.com proto smtp\n", FMRC_SYNTAX, { NULL },
	  { NULL }, ":1:28: syntax error: protocol name expected" },
	{ "a '$' or a backslash in a value: single quotes, taken literally",
	  "poll pop.example.com user 'a$b' pass x sslcertfile 'ca.pem'\n"
	  "poll p2.example.com user 'c\\\\d' pass x\n", FMRC_OK,
	  { "user            = 'a$b'", "user            = 'c\\d'" }, { NULL }, NULL },
	{ "out of range numbers are reported, never written",
	  "set daemon 99999999999\npoll pop.example.com interval 99999999 timeout 0 "
	  "envelope 200 Delivered-To user jo pass x "
	  "fetchlimit 99999999 batchlimit 9999999 is a b\n",
	  FMRC_PARTIAL,
	  { "NOT CONVERTED (line 2): timeout", "NOT CONVERTED (line 2): fetchlimit",
	    "NOT CONVERTED (line 2): batchlimit", "NOT CONVERTED (line 2): envelope",
	    "interval        = 604800" }, { NULL }, NULL },
	{ "empty file: no account, still a header", "# nothing\n", FMRC_OK,
	  { "has no poll entry" }, { NULL }, NULL },
};

static char *slurp_mem(FILE *f, char **buf)
{
	fclose(f);
	return *buf;
}

/* write_secrets - the secrets as the command writes them */
static void write_secrets(const char *dir, const struct fmrc_result *r)
{
	for (size_t i = 0; i < r->nsecrets; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s.pass", dir, r->secrets[i].account);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_gt(write(fd, r->secrets[i].secret, strlen(r->secrets[i].secret)), -1);
		ck_assert_int_eq(write(fd, "\n", 1), 1);
		close(fd);
	}
}

static char *replace_dir(const char *s, const char *dir)
{
	const char *at = strstr(s, "@DIR@");
	char *r;
	if (at == NULL)
		return strdup(s);
	ck_assert_int_gt(asprintf(&r, "%.*s%s%s", (int)(at - s), s, dir, at + 5), 0);
	return r;
}

START_TEST(test_snippet)
{
	const struct snippet *sn = &snippets[_i];
	char dir[] = "/tmp/check_fetchmailrc.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char *obuf = NULL, *dbuf = NULL;
	size_t olen = 0, dlen = 0;
	FILE *in = fmemopen((void *)sn->rc, strlen(sn->rc), "r");
	FILE *out = open_memstream(&obuf, &olen), *diag = open_memstream(&dbuf, &dlen);
	struct fmrc_opts o = { .source = "rc", .secrets_dir = dir, .local_user = "tester" };
	struct fmrc_result r;
	enum fmrc_status st = fmrc_convert(in, out, diag, &o, &r);
	fclose(in);
	char *text = slurp_mem(out, &obuf), *d = slurp_mem(diag, &dbuf);
	ck_assert_msg((int)st == sn->status, "%s: status %d, want %d; error %s; diag:\n%s\n%s",
		      sn->what, st, sn->status, r.error ? r.error : "-", d, text);
	for (size_t i = 0; i < 8 && sn->want[i] != NULL; i++) {
		char *w = replace_dir(sn->want[i], dir);
		ck_assert_msg(strstr(text, w) != NULL, "%s: no \"%s\" in:\n%s", sn->what, w, text);
		free(w);
	}
	for (size_t i = 0; i < 4 && sn->not[i] != NULL; i++)
		ck_assert_msg(strstr(text, sn->not[i]) == NULL, "%s: \"%s\" in:\n%s", sn->what,
			      sn->not[i], text);
	if (sn->diag != NULL && strncmp(sn->diag, "SECRET:", 7) == 0) {
		ck_assert_msg(r.nsecrets >= 1 && strcmp(r.secrets[0].secret, sn->diag + 7) == 0,
			      "%s: secret \"%s\", want \"%s\"", sn->what,
			      r.nsecrets ? r.secrets[0].secret : "(none)", sn->diag + 7);
	} else if (sn->diag != NULL) {
		const char *hay = st == FMRC_SYNTAX ? r.error : d;
		ck_assert_msg(strstr(hay, sn->diag) != NULL, "%s: no \"%s\" in: %s", sn->what,
			      sn->diag, hay);
	}
	if (st == FMRC_SYNTAX) {
		ck_assert_msg(olen == 0, "%s: output on a syntax error", sn->what);
	} else if (strstr(text, "\naccount \"") != NULL && strstr(sn->rc, "passwordfile") == NULL &&
		   strstr(text, "): pass: ") == NULL /* a password file left to write */) {
		/* popgate's own parser takes the output as it is */
		write_secrets(dir, &r);
		char path[4096];
		snprintf(path, sizeof path, "%s/popgate.conf", dir);
		FILE *f = fopen(path, "w");
		fprintf(f, "spool_dir = \"%s/spool\"\n%s", dir, text);
		fclose(f);
		/* a relative ca_file is the configuration directory's */
		char ca[4096];
		snprintf(ca, sizeof ca, "%s/ca.pem", dir);
		f = fopen(ca, "w");
		fprintf(f, "not checked by the parser\n");
		fclose(f);
		struct conf *c = NULL;
		char *err = NULL;
		ck_assert_msg(conf_load(path, &c, &err) == PG_OK, "%s: popgate.conf refused: %s\n%s",
			      sn->what, err ? err : "", text);
		conf_free(&c);
		unlink(path);
		unlink(ca);
	}
	for (size_t i = 0; i < r.nsecrets; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s.pass", dir, r.secrets[i].account);
		unlink(path);
	}
	rmdir(dir);
	fmrc_result_free(&r);
	free(text);
	free(d);
}
END_TEST

/* the output never holds a password, and a secret is wiped on free */
START_TEST(test_no_password_in_output)
{
	const char *rc = "poll pop.example.com user jo password Sup3rS3cret\n";
	char *obuf = NULL;
	size_t olen = 0;
	FILE *in = fmemopen((void *)rc, strlen(rc), "r");
	FILE *out = open_memstream(&obuf, &olen), *diag = fopen("/dev/null", "w");
	struct fmrc_opts o = { .source = "rc", .local_user = "tester" };
	struct fmrc_result r;
	ck_assert_int_eq(fmrc_convert(in, out, diag, &o, &r), FMRC_OK);
	fclose(in);
	fclose(out);
	fclose(diag);
	ck_assert_ptr_null(strstr(obuf, "Sup3rS3cret"));
	ck_assert_ptr_nonnull(strstr(obuf, "password_file   = \"jo@pop.example.com.pass\""));
	ck_assert_uint_eq(r.nsecrets, 1);
	ck_assert_str_eq(r.secrets[0].account, "jo@pop.example.com");
	fmrc_result_free(&r);
	free(obuf);
}
END_TEST

/* relative file names are the rcfile directory's, as fetchmail reads them */
START_TEST(test_relative_paths)
{
	const char *rc = "poll p.example user jo pass x sslcertfile ca.pem\n"
			 "poll q.example user jo passwordfile pw/jo\n"
			 "poll r.example user jo passwordfile /abs/jo\n";
	char *obuf = NULL;
	size_t olen = 0;
	FILE *in = fmemopen((void *)rc, strlen(rc), "r");
	FILE *out = open_memstream(&obuf, &olen), *diag = fopen("/dev/null", "w");
	struct fmrc_opts o = { .source = "/home/jo/.fetchmailrc", .local_user = "jo" };
	struct fmrc_result r;
	ck_assert_int_eq(fmrc_convert(in, out, diag, &o, &r), FMRC_OK);
	fclose(in);
	fclose(out);
	fclose(diag);
	ck_assert_ptr_nonnull(strstr(obuf, "ca_file         = \"/home/jo/ca.pem\""));
	ck_assert_ptr_nonnull(strstr(obuf, "password_file   = \"/home/jo/pw/jo\""));
	ck_assert_ptr_nonnull(strstr(obuf, "password_file   = \"/abs/jo\""));
	fmrc_result_free(&r);
	free(obuf);
}
END_TEST

static Suite *fmrc_suite(void)
{
	Suite *s = suite_create("fetchmailrc");
	TCase *tc = tcase_create("core");
	tcase_add_loop_test(tc, test_snippet, 0, (int)(sizeof snippets / sizeof snippets[0]));
	tcase_add_test(tc, test_no_password_in_output);
	tcase_add_test(tc, test_relative_paths);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(fmrc_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
