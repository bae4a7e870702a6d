/*
 * authorize.c - `popgate authorize NAME`: obtain the account's OAuth2 grant
 * and put it in the token store (tokenstore.h).
 *
 *  - device: prints the verification URL and the user code (and how long
 *    they are valid), polls the token endpoint until the user has signed in.
 *  - browser: listens on 127.0.0.1 (a free port, or --port), prints the URL
 *    to open and the `ssh -L` line for a headless machine, serves one
 *    redirect, checks `state`, answers the browser with a short page and
 *    exchanges the code (PKCE S256).
 *  - client_credentials: nothing to authorize; one token request tests the
 *    credentials and stores the token.
 *  - --refresh-token-file FILE: import a refresh token obtained elsewhere,
 *    checked by one refresh before it is stored.
 * Success also clears the account's authentication hold in the spool, so
 * the daemon polls it again on schedule.
 *
 * Exit status: 0 stored; 77 refused or expired (sign in again), 78 the
 * configuration (invalid_client, ...), 75 temporary (network, 5xx), 64 usage.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "oauth2.h"
#include "spool.h"
#include "tokenstore.h"

#define REQUEST_MAX 8192

struct authorize_opts {
	int port;              /* browser: 0 = a free port */
	int wait;              /* browser: seconds to wait for the redirect */
	const char *refresh_file;
	struct spool *sp;      /* opened first: it creates the spool directory */
};

/* ---- storing the grant --------------------------------------------------- */

/* clear_hold - the account may be polled on schedule again */
static void clear_hold(struct spool *sp, const struct conf_account *a)
{
	struct spool_account_state st;
	char *err = NULL;
	if (spool_account_get(sp, a->name, &st, &err) == SPOOL_OK) {
		free(st.auth_failed);
		st.auth_failed = NULL;
		st.failures = 0;
		st.not_before = 0;
		if (spool_account_put(sp, &st, &err) != SPOOL_OK)
			LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, err);
		spool_account_state_free(&st);
	}
	free(err);
}

/* store - the new grant, under the account's refresh lock */
static int store(const struct conf *c, const struct conf_account *a, struct oauth2_token *t,
		 const char *old_refresh, struct spool *sp)
{
	struct tokenstore_entry e = { .state = TOKENSTORE_VALID };
	char *err = NULL;
	int lock = -1;
	e.refresh_token = t->refresh_token ? t->refresh_token :
			  old_refresh ? xstrdup(old_refresh) : NULL;
	t->refresh_token = NULL;
	e.refresh_issued = time(NULL);
	e.access_token = t->access_token;
	t->access_token = NULL;
	e.access_expires = t->expires_at;
	enum pg_res r = tokenstore_lock(c->spool_dir, a->name, 60, &lock, &err);
	if (r == PG_OK)
		r = tokenstore_write(c->spool_dir, a->name, &e, &err);
	tokenstore_unlock(&lock);
	if (r != PG_OK) {
		fprintf(stderr, "popgate authorize: %s\n", err);
		free(err);
		tokenstore_entry_wipe(&e);
		return pg_exit_code(r);
	}
	char until[64] = "unknown";
	if (e.access_expires > 0) {
		struct tm tm;
		localtime_r(&e.access_expires, &tm);
		strftime(until, sizeof until, "%Y-%m-%d %H:%M:%S", &tm);
	}
	printf("account %s: authorized; access token valid until %s%s\n", a->name, until,
	       e.refresh_token ? ", refresh token stored" : "");
	LOG_INFO("account=%s status=authorized flow=%s refresh_token=%s", a->name,
		 conf_oauth2_flow_name(a->oauth2->flow), e.refresh_token ? "stored" : "none");
	tokenstore_entry_wipe(&e);
	clear_hold(sp, a);
	return EX_OK;
}

static int failed(const struct conf_account *a, enum oauth2_res r, const char *err)
{
	fprintf(stderr, "popgate authorize %s: failed (%s): %s\n", a->name, oauth2_res_name(r),
		err ? err : "");
	return pg_exit_code(oauth2_to_pg(r));
}

/* ---- device flow -------------------------------------------------------- */

static int device_flow(const struct conf *c, const struct conf_account *a,
		       struct oauth2_client *oc, const struct authorize_opts *ao)
{
	struct oauth2_device d;
	struct oauth2_token t = { 0 };
	char *err = NULL;
	enum oauth2_res r = oauth2_device_start(oc, &d, &err);
	if (r != OAUTH2_OK) {
		int code = failed(a, r, err);
		free(err);
		return code;
	}
	long mins = (long)(d.expires_at - time(NULL) + 59) / 60;
	printf("To authorize account %s, open\n  %s\nand enter the code\n  %s\n"
	       "(valid for %ld minute%s). Waiting for the sign-in...\n", a->name,
	       d.verification_uri, d.user_code, mins, mins == 1 ? "" : "s");
	if (d.verification_uri_complete != NULL)
		printf("Or open this address, which carries the code:\n  %s\n",
		       d.verification_uri_complete);
	fflush(stdout);
	r = oauth2_device_wait(oc, &d, &cli_stop, &t, &err);
	oauth2_device_wipe(&d);
	int code = r == OAUTH2_OK ? store(c, a, &t, NULL, ao->sp) : failed(a, r, err);
	oauth2_token_wipe(&t);
	free(err);
	return code;
}

/* ---- browser flow: the loopback redirect (RFC 8252) ---------------------- */

static int listen_loopback(int port, int *port_r, char **err_r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	socklen_t len = sizeof sin;
	int one = 1;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 8) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		set_err(err_r, "cannot listen on 127.0.0.1:%d: %s", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port_r = ntohs(sin.sin_port);
	return fd;
}

/* read_request - the request head, bounded in size and time */
static int read_request(int fd, char *buf, size_t cap, int64_t deadline)
{
	size_t n = 0;
	while (n + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		if (left <= 0 || poll(&p, 1, (int)(left > 5000 ? 5000 : left)) <= 0)
			return -1;
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r <= 0)
			return -1;
		n += (size_t)r;
		buf[n] = '\0';
		if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL)
			return 0;
	}
	return -1;
}

static void answer(int fd, int status, const char *text)
{
	char page[1024], head[256];
	int n = snprintf(page, sizeof page, "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
			 "<title>popgate</title></head><body><p>popgate: %s</p></body></html>\n",
			 text);
	int h = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: text/html; "
			 "charset=utf-8\r\nContent-Length: %d\r\nCache-Control: no-store\r\n"
			 "Connection: close\r\n\r\n", status, status == 200 ? "OK" :
			 status == 404 ? "Not Found" : "Bad Request", n);
	if (write(fd, head, (size_t)h) < 0 || write(fd, page, (size_t)n) < 0)
		LOG_DEBUG("status=browser-gone");
}

static int hexval(int ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 :
	       ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* query_param - the decoded value of name in a query string, or NULL */
static char *query_param(const char *q, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = q; p != NULL && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
		if (strncmp(p, name, nl) != 0 || p[nl] != '=')
			continue;
		const char *v = p + nl + 1;
		size_t len = strcspn(v, "&");
		char *out = xmalloc(len + 1), *o = out;
		for (size_t i = 0; i < len; i++) {
			if (v[i] == '%' && i + 2 < len && hexval(v[i + 1]) >= 0 &&
			    hexval(v[i + 2]) >= 0) {
				*o++ = (char)(hexval(v[i + 1]) * 16 + hexval(v[i + 2]));
				i += 2;
			} else {
				*o++ = v[i] == '+' ? ' ' : v[i];
			}
		}
		*o = '\0';
		return out;
	}
	return NULL;
}

/* one_redirect - judge the redirect's query: the code, or why not */
static enum oauth2_res one_redirect(const char *query, const char *state, char **code_r,
				    char **err_r)
{
	char *st = query_param(query, "state"), *code = query_param(query, "code");
	char *error = query_param(query, "error");
	enum oauth2_res r = OAUTH2_OK;
	if (st == NULL || strcmp(st, state) != 0) {
		set_err(err_r, "the redirect's state does not match this authorization (an old "
			"or forged redirect)");
		r = OAUTH2_DENIED;
	} else if (error != NULL || code == NULL || code[0] == '\0') {
		char *e = error ? sanitize_for_log(error, strlen(error), 64) : NULL;
		set_err(err_r, "the identity provider sent no code (error=%s)", e ? e : "none");
		free(e);
		r = OAUTH2_DENIED;
	} else {
		*code_r = code;
		code = NULL;
	}
	free(st);
	free(error);
	if (code != NULL)
		explicit_bzero(code, strlen(code));
	free(code);
	return r;
}

/* wait_redirect - serve requests on the listener until the one redirect
 * to "/" arrives (anything else gets a 404) or the deadline passes */
static enum oauth2_res wait_redirect(int lfd, const char *state, int64_t deadline, char **code_r,
				     char **err_r)
{
	char req[REQUEST_MAX];
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		if (cli_stop || left <= 0) {
			set_err(err_r, "no redirect from the browser %s", cli_stop ? "(stopped)" :
				"in time; run popgate authorize again (--timeout for longer)");
			return OAUTH2_DENIED;
		}
		if (poll(&p, 1, (int)(left > 1000 ? 1000 : left)) <= 0)
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		int got = read_request(fd, req, sizeof req, deadline);
		char *sp1 = got == 0 && strncmp(req, "GET ", 4) == 0 ? req + 4 : NULL;
		size_t plen = sp1 ? strcspn(sp1, " \r\n") : 0;
		if (sp1 == NULL || plen == 0 || sp1[0] != '/' ||
		    (sp1[1] != '?' && sp1[1] != ' ')) {
			answer(fd, 404, "nothing here");
			close(fd);
			continue;
		}
		sp1[plen] = '\0';
		enum oauth2_res r = one_redirect(sp1[1] == '?' ? sp1 + 2 : "", state, code_r, err_r);
		answer(fd, r == OAUTH2_OK ? 200 : 400, r == OAUTH2_OK ?
		       "authorization received; popgate is fetching the token. You can close "
		       "this window." : "authorization failed; see the terminal where popgate "
		       "authorize runs.");
		close(fd);
		explicit_bzero(req, sizeof req);
		return r;
	}
}

static int browser_flow(const struct conf *c, const struct conf_account *a,
			struct oauth2_client *oc, const struct authorize_opts *ao)
{
	char *err = NULL, *verifier = NULL, *challenge = NULL, *state = NULL, *code = NULL;
	struct oauth2_token t = { 0 };
	int port = 0, rc;
	int lfd = listen_loopback(ao->port, &port, &err);
	if (lfd < 0) {
		fprintf(stderr, "popgate authorize %s: %s\n", a->name, err);
		free(err);
		return EX_UNAVAILABLE;
	}
	char *redirect = xasprintf("http://127.0.0.1:%d", port);
	oauth2_pkce_new(&verifier, &challenge, &state);
	char *url = oauth2_authorize_url(oc, redirect, state, challenge);
	printf("To authorize account %s, open this address in a browser:\n  %s\n"
	       "popgate waits on 127.0.0.1:%d for the redirect (%d s). On a machine without a\n"
	       "browser, first forward that port from the machine with the browser:\n"
	       "  ssh -L %d:127.0.0.1:%d %s\n", a->name, url, port, ao->wait, port, port,
	       c->hostname);
	fflush(stdout);
	enum oauth2_res r = wait_redirect(lfd, state, now_ms() + (int64_t)ao->wait * 1000, &code,
					  &err);
	close(lfd);
	if (r == OAUTH2_OK) {
		free(err);
		err = NULL;
		r = oauth2_exchange_code(oc, code, verifier, redirect, &t, &err);
	}
	rc = r == OAUTH2_OK ? store(c, a, &t, NULL, ao->sp) : failed(a, r, err);
	oauth2_token_wipe(&t);
	if (code != NULL)
		explicit_bzero(code, strlen(code));
	explicit_bzero(verifier, strlen(verifier));
	free(code), free(verifier), free(challenge), free(state), free(url), free(redirect);
	free(err);
	return rc;
}

/* ---- client_credentials and imports ------------------------------------- */

static int cc_flow(const struct conf *c, const struct conf_account *a, struct oauth2_client *oc,
		   const struct authorize_opts *ao)
{
	struct oauth2_token t = { 0 };
	char *err = NULL;
	enum oauth2_res r = oauth2_client_credentials(oc, &t, &err);
	int rc = r == OAUTH2_OK ? store(c, a, &t, NULL, ao->sp) : failed(a, r, err);
	oauth2_token_wipe(&t);
	free(err);
	return rc;
}

static int import_flow(const struct conf *c, const struct conf_account *a,
		       struct oauth2_client *oc, const struct authorize_opts *ao)
{
	const char *file = ao->refresh_file;
	struct oauth2_token t = { 0 };
	char *err = NULL, *rt = NULL;
	if (conf_read_file_secret(file, "--refresh-token-file", &rt, &err) != PG_OK) {
		fprintf(stderr, "popgate authorize %s: %s\n", a->name, err);
		free(err);
		return EX_CONFIG;
	}
	enum oauth2_res r = oauth2_refresh(oc, rt, &t, &err);
	int rc = r == OAUTH2_OK ? store(c, a, &t, rt, ao->sp) : failed(a, r, err);
	oauth2_token_wipe(&t);
	explicit_bzero(rt, strlen(rt));
	free(rt);
	free(err);
	return rc;
}

static int parse_opts(int argc, char **argv, struct authorize_opts *ao)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 't' },
		{ "refresh-token-file", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;
	char *end = NULL;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+p:t:r:", longopts, NULL)) != -1) {
		long v = 0;
		if (ch == 'p' || ch == 't') {
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (*end != '\0' || errno != 0 || v < (ch == 'p' ? 1 : 1) ||
			    v > (ch == 'p' ? 65535 : 86400)) {
				fprintf(stderr, "popgate authorize: --%s: '%s' is out of range\n",
					ch == 'p' ? "port" : "timeout", optarg);
				return -1;
			}
		}
		if (ch == 'p')
			ao->port = (int)v;
		else if (ch == 't')
			ao->wait = (int)v;
		else if (ch == 'r')
			ao->refresh_file = optarg;
		else
			return -1;
	}
	return optind == argc - 1 ? optind : -1;
}

int cmd_authorize(const struct cli_opts *o, int argc, char **argv)
{
	struct authorize_opts ao = { .port = 0, .wait = 300 };
	int first = parse_opts(argc, argv, &ao);
	if (first < 0) {
		fprintf(stderr, "usage: popgate authorize [--port N] [--timeout SECONDS] "
			"[--refresh-token-file FILE] NAME\n");
		return EX_USAGE;
	}
	struct conf *c = load(o, 1);
	if (c == NULL)
		return EX_CONFIG;
	int code = EX_OK;
	char *err = NULL;
	struct oauth2_client *oc = NULL;
	const struct conf_account *a = conf_find_account(c, argv[first]);
	cli_install_signals();
	if (a == NULL || a->oauth2 == NULL) {
		fprintf(stderr, "popgate authorize: %s '%s' in %s\n", a == NULL ? "no account" :
			"no oauth2 block in account", argv[first], c->path);
		code = a == NULL ? EX_USAGE : EX_CONFIG;
	} else if ((ao.sp = open_spool(c)) == NULL) {
		code = EX_IOERR;
	} else if (oauth2_client_new(a, &oc, &err) != OAUTH2_OK) {
		fprintf(stderr, "popgate authorize %s: %s\n", a->name, err);
		code = EX_CONFIG;
	} else if (ao.refresh_file != NULL) {
		code = import_flow(c, a, oc, &ao);
	} else if (a->oauth2->flow == OAUTH2_FLOW_DEVICE) {
		code = device_flow(c, a, oc, &ao);
	} else if (a->oauth2->flow == OAUTH2_FLOW_BROWSER) {
		code = browser_flow(c, a, oc, &ao);
	} else {
		code = cc_flow(c, a, oc, &ao);
	}
	spool_close(&ao.sp);
	oauth2_client_free(&oc);
	free(err);
	conf_free(&c);
	log_close();
	return code;
}
