/*
 * routecmd.c - `popgate route [--account NAME] ID|FILE`: the envelope the
 * current configuration gives a message, without sending anything.
 *
 * ID is a spooled message (its file is read; popgate's own Received field,
 * always the first, is skipped as the poller never routes on it); FILE is a
 * raw RFC 5322 message with LF or CRLF line ends.  The account is --account,
 * else the spooled message's own, else the only configured one.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "route.h"
#include "spool.h"

struct route_args {
	const char *account;
	const char *what;  /* ID or FILE */
};

static int is_spool_id(const char *s)
{
	if (strlen(s) != SPOOL_ID_LEN)
		return 0;
	return strspn(s, "0123456789abcdefABCDEF") == SPOOL_ID_LEN;
}

/* skip_first_field - bytes of buf[0..n) that are not the first header field */
static size_t skip_first_field(const char *buf, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (buf[i] == '\n' && buf[i + 1] != ' ' && buf[i + 1] != '\t')
			return i + 1;
	return 0;
}

/* feed_fd - the header block of fd (named path) into h (bounded: headers
 * only); closes fd */
static int feed_fd(int fd, const char *path, int skip_ours, struct route_hdrs *h)
{
	char buf[65536];
	int first = 1;
	size_t total = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0 && total < 4u * 1024 * 1024) {
		size_t off = first && skip_ours ? skip_first_field(buf, (size_t)n) : 0;
		route_hdrs_feed(h, buf + off, (size_t)n - off);
		first = 0;
		total += (size_t)n;
	}
	int e = errno;
	close(fd);
	if (n < 0) {
		fprintf(stderr, "popgate route: read %s: %s\n", path, strerror(e));
		return EX_IOERR;
	}
	/* a file of headers only still ends: route_decide() ends the input */
	return EX_OK;
}

/* feed_file - feed_fd on a file by name */
static int feed_file(const char *path, int skip_ours, struct route_hdrs *h)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "popgate route: cannot open %s: %s\n", path, strerror(errno));
		return EX_NOINPUT;
	}
	return feed_fd(fd, path, skip_ours, h);
}

static void print_result(const struct conf_account *a, const struct route_result *r)
{
	printf("account: %s\n", a->name);
	printf("routing: %s\n", a->deliver_to ? "single-drop" : "multidrop");
	printf("sender: <%s>\n", r->sender);
	for (size_t i = 0; i < r->nrcpts; i++)
		printf("recipient: <%s>\n", r->rcpts[i]);
	if (r->hold_reason != NULL) {
		char *why = sanitize_for_log(r->hold_reason, strlen(r->hold_reason), 400);
		printf("status: held (%s)\n", why);
		free(why);
	} else {
		printf("status: deliver\n");
	}
}

/* route_file - route one file (or, fd >= 0, that open spool message named
 * path) under account name (or the default) */
static int route_file(const struct conf *c, const char *name, const char *path, int fd, int ours)
{
	const struct conf_account *a = NULL;
	if (name != NULL)
		a = conf_find_account(c, name);
	else if (c->naccounts == 1)
		a = &c->accounts[0];
	if (a == NULL) {
		if (fd >= 0)
			close(fd);
		if (name != NULL)
			fprintf(stderr, "popgate route: no account named '%s'\n", name);
		else
			fprintf(stderr, "popgate route: several accounts: say which with --account\n");
		return EX_USAGE;
	}
	struct route_hdrs *h = route_hdrs_new(a);
	struct route_result r = { 0 };
	char *err = NULL;
	int code = fd >= 0 ? feed_fd(fd, path, ours, h) : feed_file(path, ours, h);
	if (code == EX_OK) {
		if (route_decide(a, h, &r, &err) != PG_OK) {
			fprintf(stderr, "popgate route: %s\n", err);
			code = EX_CONFIG;
		} else {
			print_result(a, &r);
		}
	}
	free(err);
	route_result_free(&r);
	route_hdrs_free(&h);
	return code;
}

static int do_route_id(const struct conf *c, struct spool *sp, void *arg)
{
	struct route_args *ra = arg;
	struct spool_msg *m = NULL;
	char *err = NULL;
	enum spool_res sr = spool_get(sp, ra->what, &m, &err);
	if (sr != SPOOL_OK) {
		fprintf(stderr, "popgate route: message %s: %s\n", ra->what,
			err ? err : spool_res_name(sr));
		free(err);
		return sr == SPOOL_NOTFOUND ? EX_NOINPUT : EX_IOERR;
	}
	const char *name = ra->account;
	if (name == NULL && conf_find_account(c, m->account) != NULL)
		name = m->account;
	int fd = -1;
	sr = spool_msg_open(sp, m, &fd, &err);
	if (sr != SPOOL_OK) {
		fprintf(stderr, "popgate route: message %s: %s\n", ra->what,
			err ? err : spool_res_name(sr));
		free(err);
		spool_msg_free(&m);
		return sr == SPOOL_NOTFOUND ? EX_NOINPUT : EX_IOERR;
	}
	int code = route_file(c, name, m->id, fd, 1);
	spool_msg_free(&m);
	return code;
}

int cmd_route(const struct cli_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = { { "account", required_argument, NULL, 'a' },
						  { NULL, 0, NULL, 0 } };
	struct route_args ra = { 0 };
	int ch;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		if (ch != 'a') {
			fprintf(stderr, "usage: popgate route [--account NAME] ID|FILE\n");
			return EX_USAGE;
		}
		ra.account = optarg;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: popgate route [--account NAME] ID|FILE\n");
		return EX_USAGE;
	}
	ra.what = argv[optind];
	if (is_spool_id(ra.what) && access(ra.what, F_OK) != 0)
		return with_existing_spool(o, "route", do_route_id, &ra);
	struct conf *c = load(o, 1);
	if (c == NULL)
		return EX_CONFIG;
	int code = route_file(c, ra.account, ra.what, -1, 0);
	conf_free(&c);
	log_close();
	return code;
}
