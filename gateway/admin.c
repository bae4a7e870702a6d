/*
 * admin.c - queue administration commands (the mailq/postqueue of popgate):
 * queue, show, requeue, hold, delete, flush.
 *
 * Every command opens the spool like any other handle, so it works beside a
 * running daemon: recovery is skipped while the daemon holds the spool, and
 * each action is one spool transaction that refuses a message a relay
 * session has claimed (`sending`).  A flush and a daemon never send one
 * message twice: spool_claim_due() moves a message to `sending` inside a
 * BEGIN IMMEDIATE transaction, so only one of them can claim it.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "spool.h"

#define SHOW_HEADER_MAX (64 * 1024) /* `show` prints at most this much header */

static void fmt_age(time_t secs, char *out, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(out, len, "%lds", (long)secs);
	else if (secs < 7200)
		snprintf(out, len, "%ldm", (long)(secs / 60));
	else if (secs < 172800)
		snprintf(out, len, "%ldh", (long)(secs / 3600));
	else
		snprintf(out, len, "%ldd", (long)(secs / 86400));
}

static void fmt_time(time_t t, char *out, size_t len)
{
	struct tm tm;
	if (t <= 0 || localtime_r(&t, &tm) == NULL || strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(out, len, "-");
}

/* json_str - s as a JSON string (controls escaped; NULL as null) */
static void json_str(FILE *f, const char *s)
{
	if (s == NULL) {
		fputs("null", f);
		return;
	}
	putc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			putc(*p, f);
	}
	putc('"', f);
}

/* spool_code - the exit code of a failed spool call, with the message */
static int spool_code(const char *cmd, enum spool_res r, char *err)
{
	fprintf(stderr, "popgate %s: %s\n", cmd, err ? err : spool_res_name(r));
	free(err);
	switch (r) {
	case SPOOL_NOTFOUND:
	case SPOOL_INVAL:
		return EX_DATAERR;
	case SPOOL_BUSY:
		return EX_TEMPFAIL;
	default:
		return EX_IOERR;
	}
}

/* ---- queue ---- */

struct queue_args {
	int state;
	const char *account;
	int all;
	int json;
	unsigned int count;
	time_t now;
};

static void queue_json(const struct spool_msg *m, int first)
{
	printf("%s\n  {\"id\": \"%s\", \"account\": ", first ? "" : ",", m->id);
	json_str(stdout, m->account);
	printf(", \"uidl\": ");
	json_str(stdout, m->uidl);
	printf(", \"state\": \"%s\", \"size\": %llu, \"created\": %lld, \"updated\": %lld, "
	       "\"attempts\": %d, \"next_attempt\": %lld, \"sender\": ",
	       spool_state_name(m->state), (unsigned long long)m->size, (long long)m->created,
	       (long long)m->updated, m->attempts, (long long)m->next_attempt);
	json_str(stdout, m->sender);
	printf(", \"recipients\": [");
	for (size_t i = 0; i < m->nrcpts; i++) {
		printf("%s{\"address\": ", i ? ", " : "");
		json_str(stdout, m->rcpts[i].addr);
		printf(", \"state\": \"%s\", \"reply\": ", spool_state_name(m->rcpts[i].state));
		json_str(stdout, m->rcpts[i].reply);
		putchar('}');
	}
	printf("], \"last_reply\": ");
	json_str(stdout, m->last_reply);
	printf(", \"duplicate_of\": ");
	json_str(stdout, m->duplicate_of[0] ? m->duplicate_of : NULL);
	putchar('}');
}

static int queue_line(void *ctx, const struct spool_msg *m)
{
	struct queue_args *qa = ctx;
	char age[32];
	if (qa->json) {
		queue_json(m, qa->count == 0);
		qa->count++;
		return 0;
	}
	fmt_age(qa->now - m->created, age, sizeof age);
	char dup[48];
	const char *lr = m->last_reply;
	if (m->duplicate_of[0] != '\0') { /* names the original */
		snprintf(dup, sizeof dup, "duplicate of %s", m->duplicate_of);
		lr = dup;
	}
	char *reply = sanitize_for_log(lr ? lr : "-", lr ? strlen(lr) : 1, 200);
	printf("%-16s %-12s %-8s %9llu %5s %3d %s\n", m->id, m->account, spool_state_name(m->state),
	       (unsigned long long)m->size, age, m->attempts, reply);
	free(reply);
	qa->count++;
	return 0;
}

static int count_one(void *ctx, const struct spool_msg *m)
{
	(void)m;
	++*(unsigned int *)ctx;
	return 1; /* one is enough */
}

static int do_queue(const struct conf *c, struct spool *sp, void *arg)
{
	struct queue_args *qa = arg;
	struct spool_filter f = { .state = qa->state, .account = qa->account,
				  .include_sent = qa->all || qa->state == SPOOL_SENT ||
						   qa->state == SPOOL_DUPLICATE };
	char *err = NULL;
	qa->now = time(NULL);
	/* a name that is neither configured nor in the spool is a typo */
	if (qa->account != NULL && conf_find_account(c, qa->account) == NULL) {
		struct spool_filter any = { .state = -1, .account = qa->account, .include_sent = 1 };
		unsigned int seen = 0;
		enum spool_res r = spool_list(sp, &any, count_one, &seen, &err);
		if (r != SPOOL_OK)
			return spool_code("queue", r, err);
		if (seen == 0) {
			fprintf(stderr, "popgate queue: no account '%s' in %s (and no message of it "
				"in the spool)\n", qa->account, c->path);
			return EX_USAGE;
		}
	}
	if (qa->json)
		printf("[");
	else
		printf("%-16s %-12s %-8s %9s %5s %3s %s\n", "ID", "ACCOUNT", "STATE", "SIZE", "AGE",
		       "ATT", "LAST_REPLY");
	enum spool_res r = spool_list(sp, &f, queue_line, qa, &err);
	if (r != SPOOL_OK)
		return spool_code("queue", r, err);

	if (qa->json)
		printf("%s]\n", qa->count ? "\n" : "");
	else
		printf("-- %u message%s\n", qa->count, qa->count == 1 ? "" : "s");
	return EX_OK;
}

int cmd_queue(const struct cli_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = { { "state", required_argument, NULL, 's' },
						  { "account", required_argument, NULL, 'a' },
						  { "all", no_argument, NULL, 'A' },
						  { "json", no_argument, NULL, 'j' },
						  { NULL, 0, NULL, 0 } };
	struct queue_args qa = { .state = -1 };
	int ch;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		enum spool_state st;
		if (ch == 's' && spool_state_parse(optarg, &st) == 0)
			qa.state = (int)st;
		else if (ch == 'a')
			qa.account = optarg;
		else if (ch == 'A')
			qa.all = 1;
		else if (ch == 'j')
			qa.json = 1;
		else {
			fprintf(stderr, "popgate queue: bad option%s%s (states: queued, sending, sent, "
				"deferred, held)\n", ch == 's' ? " value " : "", ch == 's' ? optarg : "");
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "popgate queue: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	return with_existing_spool(o, "queue", do_queue, &qa);
}

/* ---- show ---- */

static int show_history(void *ctx, time_t at, const char *state, const char *reply)
{
	char when[64];
	(void)ctx;
	fmt_time(at, when, sizeof when);
	char *r = sanitize_for_log(reply ? reply : "", reply ? strlen(reply) : 0, 400);
	printf("  %s  %-8s %s\n", when, state ? state : "?", r);
	free(r);
	return 0;
}

/* show_headers - the header section of the message, bounded */
static void show_headers(struct spool *sp, const struct spool_msg *m)
{
	char line[1024], *err = NULL;
	size_t total = 0;
	int fd = -1;
	FILE *f = NULL;
	if (spool_msg_open(sp, m, &fd, &err) != SPOOL_OK || (f = fdopen(fd, "r")) == NULL) {
		printf("  (%s%s)\n", err ? err : strerror(errno),
		       m->state == SPOOL_SENT ? "; sent messages are removed unless keep_sent_days" : "");
		free(err);
		if (fd >= 0)
			close(fd);
		return;
	}
	while (fgets(line, sizeof line, f) != NULL && total < SHOW_HEADER_MAX) {
		size_t n = strcspn(line, "\r\n");
		if (n == 0 && line[0] != '\0' && strchr(line, '\n') != NULL)
			break; /* the empty line: end of the header */
		total += strlen(line);
		/* a folded header's TAB is shown as is; other controls are not */
		for (size_t i = 0; i < n; i++)
			if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
				line[i] = '?';
		printf("  %.*s%s\n", (int)n, line, strchr(line, '\n') == NULL ? "..." : "");
	}
	fclose(f);
}

static int do_show(const struct conf *c, struct spool *sp, void *arg)
{
	const char *id = arg;
	struct spool_msg *m = NULL;
	char *err = NULL, created[64], updated[64], next[64];
	(void)c;
	enum spool_res r = spool_get(sp, id, &m, &err);
	if (r != SPOOL_OK)
		return spool_code("show", r, err);
	fmt_time(m->created, created, sizeof created);
	fmt_time(m->updated, updated, sizeof updated);
	fmt_time(m->next_attempt, next, sizeof next);
	printf("id:           %s\naccount:      %s\nuidl:         %s\nstate:        %s\n"
	       "size:         %llu\nsha256:       %s\nfile:         %s\ncreated:      %s\n"
	       "updated:      %s\nattempts:     %d\nnext attempt: %s\n",
	       m->id, m->account, m->uidl, spool_state_name(m->state),
	       (unsigned long long)m->size, m->digest,
	       m->in_index ? "(none: the body is in index.db, table bodies)" : m->path, created,
	       updated, m->attempts,
	       m->state == SPOOL_DEFERRED ? next : "-");
	char *lr = sanitize_for_log(m->last_reply ? m->last_reply : "-",
				    m->last_reply ? strlen(m->last_reply) : 1, 400);
	if (m->duplicate_of[0] != '\0')
		printf("duplicate of: %s (not relayed; `popgate requeue %s` sends it)\n",
		       m->duplicate_of, m->id);
	printf("last reply:   %s\nenvelope:\n  MAIL FROM:<%s>\n", lr, m->sender);
	free(lr);
	for (size_t i = 0; i < m->nrcpts; i++)
		printf("  RCPT TO:<%s>  %s%s%s\n", m->rcpts[i].addr,
		       spool_state_name(m->rcpts[i].state), m->rcpts[i].reply ? "  " : "",
		       m->rcpts[i].reply ? m->rcpts[i].reply : "");
	printf("history:\n");
	r = spool_history(sp, m->id, show_history, NULL, &err);
	printf("headers:\n");
	show_headers(sp, m);
	spool_msg_free(&m);
	if (r != SPOOL_OK)
		return spool_code("show", r, err);
	return EX_OK;
}

/* do_show_raw - the stored message, byte for byte (our Received header
 * first, CRLF lines), to stdout: `postcat -q` for popgate */
static int do_show_raw(const struct conf *c, struct spool *sp, void *arg)
{
	const char *id = arg;
	struct spool_msg *m = NULL;
	char *err = NULL, buf[65536];
	int fd = -1, code = EX_OK;
	ssize_t n;
	(void)c;
	enum spool_res r = spool_get(sp, id, &m, &err);
	if (r == SPOOL_OK)
		r = spool_msg_open(sp, m, &fd, &err);
	spool_msg_free(&m);
	if (r != SPOOL_OK)
		return spool_code("show", r, err);
	while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
		if (n > 0 && fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
			fprintf(stderr, "popgate show: write to stdout: %s\n", strerror(errno));
			code = EX_IOERR;
			break;
		}
	}
	if (n < 0) {
		fprintf(stderr, "popgate show: read message %s: %s\n", id, strerror(errno));
		code = EX_IOERR;
	}
	close(fd);
	if (fflush(stdout) != 0 && code == EX_OK) {
		fprintf(stderr, "popgate show: write to stdout: %s\n", strerror(errno));
		code = EX_IOERR;
	}
	return code;
}

int cmd_show(const struct cli_opts *o, int argc, char **argv)
{
	int raw = argc == 3 && strcmp(argv[1], "--raw") == 0;
	if (argc != 2 + raw || argv[1 + raw][0] == '-') {
		fprintf(stderr, "usage: popgate show [--raw] ID\n");
		return EX_USAGE;
	}
	return with_existing_spool(o, "show", raw ? do_show_raw : do_show, argv[1 + raw]);
}

/* ---- requeue, hold, delete ---- */

enum action { ACT_REQUEUE, ACT_HOLD, ACT_DELETE };

struct action_args {
	enum action act;
	int held, all;   /* requeue --held / --all */
	int nids;
	char **ids;
};

static const char *const action_names[] = { "requeue", "hold", "delete" };

static int do_action(const struct conf *c, struct spool *sp, void *arg)
{
	struct action_args *aa = arg;
	const char *name = action_names[aa->act];
	int code = EX_OK;
	(void)c;
	if (aa->held || aa->all) {
		unsigned int n = 0;
		char *err = NULL;
		enum spool_res r = spool_requeue_all(sp, aa->held, &n, &err);
		if (r != SPOOL_OK)
			return spool_code(name, r, err);
		LOG_INFO("status=requeued messages=%u scope=%s by=operator", n,
			 aa->held ? "held" : "held+deferred");
		printf("requeued %u message%s\n", n, n == 1 ? "" : "s");
		return EX_OK;
	}
	for (int i = 0; i < aa->nids; i++) {
		char *err = NULL;
		enum spool_res r = aa->act == ACT_REQUEUE ? spool_requeue(sp, aa->ids[i], &err)
				 : aa->act == ACT_HOLD	  ? spool_hold(sp, aa->ids[i], NULL, &err)
							  : spool_delete(sp, aa->ids[i], &err);
		if (r != SPOOL_OK) {
			code = worse(code, spool_code(name, r, err));
			continue;
		}
		LOG_INFO("id=%s status=%s by=operator", aa->ids[i],
			 aa->act == ACT_REQUEUE ? "requeued" : aa->act == ACT_HOLD ? "held" : "deleted");
		printf("%s: %s\n", aa->ids[i],
		       aa->act == ACT_REQUEUE ? "requeued" : aa->act == ACT_HOLD ? "held" : "deleted");
	}
	return code;
}

static int parse_action(enum action act, int argc, char **argv, struct action_args *aa)
{
	static const struct option longopts[] = { { "held", no_argument, NULL, 'H' },
						  { "all", no_argument, NULL, 'A' },
						  { "yes", no_argument, NULL, 'y' },
						  { NULL, 0, NULL, 0 } };
	int ch, yes = 0;
	const char *name = action_names[act];
	memset(aa, 0, sizeof *aa);
	aa->act = act;
	optind = 0;
	/* no '+': options may follow the ids ("delete ID --yes") */
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == 'H' && act == ACT_REQUEUE)
			aa->held = 1;
		else if (ch == 'A' && act == ACT_REQUEUE)
			aa->all = 1;
		else if (ch == 'y' && act == ACT_DELETE)
			yes = 1;
		else {
			fprintf(stderr, "popgate %s: unknown option (see popgate --help)\n", name);
			return EX_USAGE;
		}
	}
	aa->ids = argv + optind;
	aa->nids = argc - optind;
	if ((aa->held || aa->all) ? aa->nids != 0 || (aa->held && aa->all) : aa->nids == 0) {
		fprintf(stderr, "usage: popgate %s %s\n", name,
			act == ACT_REQUEUE ? "ID...|--held|--all" : act == ACT_HOLD ? "ID..." : "ID... --yes");
		return EX_USAGE;
	}
	if (act == ACT_DELETE && !yes) {
		fprintf(stderr, "popgate delete: this removes mail for good; add --yes to confirm\n");
		return EX_USAGE;
	}
	return EX_OK;
}

static int run_action(enum action act, const struct cli_opts *o, int argc, char **argv)
{
	struct action_args aa;
	int code = parse_action(act, argc, argv, &aa);
	if (code != EX_OK)
		return code;
	return with_existing_spool(o, action_names[act], do_action, &aa);
}

int cmd_requeue(const struct cli_opts *o, int argc, char **argv)
{
	return run_action(ACT_REQUEUE, o, argc, argv);
}

int cmd_hold(const struct cli_opts *o, int argc, char **argv)
{
	return run_action(ACT_HOLD, o, argc, argv);
}

int cmd_delete(const struct cli_opts *o, int argc, char **argv)
{
	return run_action(ACT_DELETE, o, argc, argv);
}

/* ---- flush ---- */

static int do_flush(const struct conf *c, struct spool *sp, void *arg)
{
	unsigned int n = 0;
	char *err = NULL;
	(void)arg;
	enum spool_res r = spool_make_due(sp, &n, &err);
	if (r != SPOOL_OK)
		return spool_code("flush", r, err);
	LOG_INFO("status=flush deferred_made_due=%u by=operator", n);
	return relay_once(c, sp);
}

int cmd_flush(const struct cli_opts *o, int argc, char **argv)
{
	if (argc != 1) {
		fprintf(stderr, "usage: popgate flush\n");
		return EX_USAGE;
	}
	return with_existing_spool(o, "flush", do_flush, NULL);
}
