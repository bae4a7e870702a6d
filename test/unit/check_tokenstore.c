/* check_tokenstore.c - the OAuth2 token store: round trip, modes, atomic
 * replacement, refusal of unsafe or unknown files, the refresh lock, and
 * the login token's decisions that need no network */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "tokenstore.h"

static char dir[] = "/tmp/check_tokenstore.XXXXXX";

static void rm_rf(const char *d)
{
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	ck_assert_int_eq(system(cmd), 0);
}

static void setup(void)
{
	strcpy(dir, "/tmp/check_tokenstore.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	rm_rf(dir);
}

static char *file_of(const char *account)
{
	static char p[400];
	snprintf(p, sizeof p, "%s/oauth2/%s.tokens", dir, account);
	return p;
}

START_TEST(test_round_trip)
{
	struct tokenstore_entry e = { .state = TOKENSTORE_VALID }, r;
	char *err = NULL;
	ck_assert_int_eq(tokenstore_read(dir, "sales", &r, &err), PG_OK);
	ck_assert_int_eq(r.state, TOKENSTORE_NONE);
	e.refresh_token = strdup("R1-refresh");
	e.refresh_issued = 1700000000;
	e.access_token = strdup("A1.access.jwt");
	e.access_expires = 1700003600;
	ck_assert_int_eq(tokenstore_write(dir, "sales", &e, &err), PG_OK);
	ck_assert_int_eq(tokenstore_read(dir, "sales", &r, &err), PG_OK);
	ck_assert_int_eq(r.state, TOKENSTORE_VALID);
	ck_assert_str_eq(r.refresh_token, "R1-refresh");
	ck_assert_str_eq(r.access_token, "A1.access.jwt");
	ck_assert_int_eq(r.refresh_issued, 1700000000);
	ck_assert_int_eq(r.access_expires, 1700003600);
	ck_assert(r.updated >= time(NULL) - 5);
	ck_assert_ptr_null(r.reason);
	tokenstore_entry_wipe(&r);
	/* modes: directory 0700, file 0600, no temp file left */
	struct stat st;
	char d[400];
	snprintf(d, sizeof d, "%s/oauth2", dir);
	ck_assert_int_eq(stat(d, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	ck_assert_int_eq(stat(file_of("sales"), &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	DIR *dh = opendir(d);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(dh)) != NULL)
		n += de->d_name[0] != '.' || strncmp(de->d_name, ".sales", 6) == 0 ? 1 : 0;
	closedir(dh);
	ck_assert_int_eq(n, 1); /* sales.tokens only */
	/* reauthorize with a reason; replaced whole */
	tokenstore_entry_wipe(&e);
	e.state = TOKENSTORE_REAUTHORIZE;
	e.refresh_token = strdup("R1-refresh");
	e.reason = strdup("oauth2: https://idp/token: HTTP 400 error=invalid_grant\nx");
	ck_assert_int_eq(tokenstore_write(dir, "sales", &e, &err), PG_OK);
	ck_assert_int_eq(tokenstore_read(dir, "sales", &r, &err), PG_OK);
	ck_assert_int_eq(r.state, TOKENSTORE_REAUTHORIZE);
	ck_assert_ptr_null(r.access_token);
	ck_assert_str_eq(r.reason, "oauth2: https://idp/token: HTTP 400 error=invalid_grant?x");
	tokenstore_entry_wipe(&r);
	tokenstore_entry_wipe(&e);
}
END_TEST

static void put_file(const char *text, mode_t mode)
{
	char d[400];
	snprintf(d, sizeof d, "%s/oauth2", dir);
	mkdir(d, 0700);
	FILE *f = fopen(file_of("x"), "w");
	fputs(text, f);
	fclose(f);
	chmod(file_of("x"), mode);
}

static void read_fails(const char *needle)
{
	struct tokenstore_entry r;
	char *err = NULL;
	ck_assert_int_eq(tokenstore_read(dir, "x", &r, &err), PG_IO);
	ck_assert_ptr_null(r.refresh_token);
	ck_assert_msg(strstr(err, needle) != NULL && strstr(err, file_of("x")) != NULL, "%s", err);
	free(err);
}

START_TEST(test_bad_files)
{
	put_file("popgate-oauth2-tokens 1\nstate=valid\nrefresh_token=R\n", 0644);
	read_fails("run chmod 600");
	put_file("something else\nstate=valid\n", 0600);
	read_fails("line 1 is not understood");
	put_file("popgate-oauth2-tokens 1\nstate=maybe\n", 0600);
	read_fails("line 2 is not understood");
	put_file("popgate-oauth2-tokens 1\naccess_expires=soon\nstate=valid\n", 0600);
	read_fails("line 2 is not understood");
	put_file("popgate-oauth2-tokens 1\n", 0600);
	read_fails("has no state line");
	put_file("", 0600);
	read_fails("has no state line");
}
END_TEST

START_TEST(test_lock)
{
	int a = -1, b = -1;
	char *err = NULL;
	ck_assert_int_eq(tokenstore_lock(dir, "sales", 0, &a, &err), PG_OK);
	ck_assert_int_ge(a, 0);
	/* a second holder (another open file) waits, then gives up: temporary */
	ck_assert_int_eq(tokenstore_lock(dir, "sales", 0, &b, &err), PG_TEMP);
	ck_assert_int_eq(b, -1);
	ck_assert_ptr_nonnull(strstr(err, "locked by another process"));
	free(err);
	err = NULL;
	/* another account is not blocked */
	ck_assert_int_eq(tokenstore_lock(dir, "other", 0, &b, &err), PG_OK);
	tokenstore_unlock(&b);
	/* a child holding it for a while: the parent waits and then gets it */
	tokenstore_unlock(&a);
	pid_t pid = fork();
	if (pid == 0) {
		int c = -1;
		char *e2 = NULL;
		if (tokenstore_lock(dir, "sales", 5, &c, &e2) != PG_OK)
			_exit(1);
		FILE *f = fopen(file_of("marker"), "w");
		fclose(f);
		sleep(1);
		unlink(file_of("marker"));
		tokenstore_unlock(&c);
		_exit(0);
	}
	struct stat st;
	for (int i = 0; i < 200 && stat(file_of("marker"), &st) != 0; i++)
		usleep(10000);
	ck_assert_int_eq(tokenstore_lock(dir, "sales", 10, &a, &err), PG_OK);
	/* the child had released it: its marker is gone */
	ck_assert_int_ne(stat(file_of("marker"), &st), 0);
	tokenstore_unlock(&a);
	int status = 0;
	waitpid(pid, &status, 0);
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* login tokens: decisions that must not touch the network (the endpoint
 * is a closed port: a request would come back PG_TEMP) */
START_TEST(test_login_token_offline)
{
	struct conf_oauth2 o = { .provider = OAUTH2_PROVIDER_GENERIC, .flow = OAUTH2_FLOW_DEVICE,
				 .client_id = "id", .scope = "pop",
				 .token_endpoint = "https://127.0.0.1:1/token" };
	struct conf_account a = { .name = "sales", .oauth2 = &o, .timeout = 2,
				  .connect_timeout = 2 };
	struct conf c = { .spool_dir = dir };
	char *tok = NULL, *err = NULL;
	int fresh = -1, reauth = -1;
	/* never authorized */
	ck_assert_int_eq(tokenstore_login_token(&c, &a, NULL, &tok, &fresh, &reauth, &err), PG_AUTH);
	ck_assert_int_eq(reauth, 1);
	ck_assert_ptr_nonnull(strstr(err, "run popgate authorize sales"));
	free(err);
	err = NULL;
	/* a stored token valid for an hour is used as it is */
	struct tokenstore_entry e = { .state = TOKENSTORE_VALID };
	e.refresh_token = strdup("R1");
	e.access_token = strdup("A1");
	e.access_expires = time(NULL) + 3600;
	ck_assert_int_eq(tokenstore_write(dir, "sales", &e, &err), PG_OK);
	ck_assert_int_eq(tokenstore_login_token(&c, &a, NULL, &tok, &fresh, &reauth, &err), PG_OK);
	ck_assert_str_eq(tok, "A1");
	ck_assert_int_eq(fresh, 0);
	ck_assert_int_eq(reauth, 0);
	free(tok);
	tok = NULL;
	/* the same token refused by the server: a refresh is attempted (and
	 * fails here, temporarily, naming the endpoint) */
	ck_assert_int_eq(tokenstore_login_token(&c, &a, "A1", &tok, &fresh, &reauth, &err), PG_TEMP);
	ck_assert_ptr_nonnull(strstr(err, "https://127.0.0.1:1/token"));
	free(err);
	err = NULL;
	/* a token another process stored meanwhile is taken, not refreshed */
	ck_assert_int_eq(tokenstore_login_token(&c, &a, "A0", &tok, &fresh, &reauth, &err), PG_OK);
	ck_assert_str_eq(tok, "A1");
	free(tok);
	tok = NULL;
	/* expiring within 5 minutes: refreshed */
	e.access_expires = time(NULL) + 200;
	ck_assert_int_eq(tokenstore_write(dir, "sales", &e, &err), PG_OK);
	ck_assert_int_eq(tokenstore_login_token(&c, &a, NULL, &tok, &fresh, &reauth, &err), PG_TEMP);
	free(err);
	err = NULL;
	/* reauthorize: no request, the command to run */
	e.state = TOKENSTORE_REAUTHORIZE;
	e.reason = strdup("HTTP 400 error=invalid_grant");
	ck_assert_int_eq(tokenstore_write(dir, "sales", &e, &err), PG_OK);
	ck_assert_int_eq(tokenstore_login_token(&c, &a, NULL, &tok, &fresh, &reauth, &err), PG_AUTH);
	ck_assert_int_eq(reauth, 1);
	ck_assert_ptr_null(tok);
	ck_assert_ptr_nonnull(strstr(err, "error=invalid_grant"));
	ck_assert_ptr_nonnull(strstr(err, "run popgate authorize sales"));
	free(err);
	tokenstore_entry_wipe(&e);
}
END_TEST

static Suite *tokenstore_suite(void)
{
	Suite *s = suite_create("tokenstore");
	TCase *tc = tcase_create("tokenstore");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_bad_files);
	tcase_add_test(tc, test_lock);
	tcase_add_test(tc, test_login_token_offline);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(tokenstore_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
