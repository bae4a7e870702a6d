/*
 * relay.c - hands spooled messages to the local SMTP host (see relay.h).
 *
 * The only file that includes libesmtp.h.  Facts about libesmtp 1.1.0 that
 * shape it:
 *  - smtp_start_session() succeeding says nothing about any message: the
 *    status of every message and every recipient is read afterwards.
 *  - it streams the message from a callback and dot-stuffs it; it does not
 *    convert bare LF (the spool holds canonical CRLF already);
 *  - it rewrites some headers: strips Return-Path, drops a repeated
 *    single-instance header (To, Cc, From, Date, ...), adds Date, From
 *    and Message-Id when absent.  These rewrites cannot be switched off
 *    (Hdr_PROHIBIT on Message-Id would delete the message's own one) and
 *    are documented.
 *  - a STARTTLS SSL_CTX handed to a session is freed with that session,
 *    so every session gets a fresh one.
 *  - smtp_set_timeout() takes milliseconds.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <libesmtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "relay.h"

#define RELAY_BATCH_MAX 10000   /* messages per SMTP session */
#define RELAY_CHUNK (64 * 1024) /* bytes per message callback */

/* One message in flight: the spool record and its open file. */
struct relay_item {
	struct spool_msg *msg;
	int fd;
	int open_failed;
	char *open_error;
	int recorded;   /* outcome already queued for the spool */
	smtp_message_t sm;
	char *reply;    /* owned: the reply that decided the outcome */
};

long relay_backoff(int attempts)
{
	static const long steps[] = { 60, 300, 900, 1800, 3600 };
	size_t n = sizeof steps / sizeof steps[0];
	if (attempts < 1)
		attempts = 1;
	return (size_t)attempts <= n ? steps[attempts - 1] : steps[n - 1];
}

/* msg_cb - libesmtp's message source: rewind when len is NULL, else the
 * next chunk of the spool file (len 0 at the end).  libesmtp frees *ctx. */
static const char *msg_cb(void **ctx, int *len, void *arg)
{
	struct relay_item *it = arg;
	if (*ctx == NULL)
		*ctx = xmalloc(RELAY_CHUNK);
	if (len == NULL) {
		if (it->fd >= 0 && lseek(it->fd, 0, SEEK_SET) < 0)
			it->open_failed = 1;
		return NULL;
	}
	if (it->fd < 0) {
		*len = 0;
		return *ctx;
	}
	ssize_t n;
	do
		n = read(it->fd, *ctx, RELAY_CHUNK);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		/* a short message must not be accepted as complete: drop the
		 * connection by reporting an error to libesmtp is not possible,
		 * so mark the item and classify it as deferred afterwards */
		it->open_failed = 1;
		free(it->open_error);
		it->open_error = xasprintf("read %s: %s", it->msg->path, strerror(errno));
		n = 0;
	}
	*len = (int)n;
	return *ctx;
}

/* session_tls - a fresh SSL_CTX for this session (libesmtp frees it) */
static enum pg_res session_tls(const struct conf *c, smtp_session_t s, char **err_r)
{
	if (c->smtp.tls == TLS_NONE) {
		smtp_starttls_enable(s, Starttls_DISABLED);
		return PG_OK;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		set_err(err_r, "cannot create a TLS context");
		return PG_IO;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int ok = c->smtp.ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, c->smtp.ca_file, NULL)
					 : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1 || !smtp_starttls_set_ctx(s, ctx)) {
		SSL_CTX_free(ctx);
		set_err(err_r, "cannot set up STARTTLS toward %s:%d", c->smtp.host, c->smtp.port);
		return PG_CONFIG;
	}
	smtp_starttls_enable(s, c->smtp.tls == TLS_STARTTLS ? Starttls_ENABLED : Starttls_REQUIRED);
	return PG_OK;
}

static enum pg_res session_setup(const struct conf *c, smtp_session_t s, char **err_r)
{
	char hostport[512];
	int n = snprintf(hostport, sizeof hostport, "%s:%d", c->smtp.host, c->smtp.port);
	if (n < 0 || (size_t)n >= sizeof hostport) {
		set_err(err_r, "smtp host name too long");
		return PG_CONFIG;
	}
	if (!smtp_set_server(s, hostport) ||
	    !smtp_set_hostname(s, c->smtp.helo_name ? c->smtp.helo_name : c->hostname)) {
		set_err(err_r, "cannot set SMTP server %s", hostport);
		return PG_CONFIG;
	}
	long ms = (long)c->smtp.timeout * 1000L;
	static const int which[] = { Timeout_GREETING, Timeout_ENVELOPE, Timeout_DATA,
				     Timeout_TRANSFER, Timeout_DATA2 };
	for (size_t i = 0; i < sizeof which / sizeof which[0]; i++)
		smtp_set_timeout(s, which[i] | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
	return session_tls(c, s, err_r);
}

/* add_message - one spool message into the session */
static enum pg_res add_message(smtp_session_t s, struct relay_item *it, char **err_r)
{
	struct spool_msg *m = it->msg;
	it->fd = open(m->path, O_RDONLY | O_CLOEXEC);
	if (it->fd < 0) {
		it->open_failed = 1;
		it->open_error = xasprintf("open %s: %s", m->path, strerror(errno));
		return PG_OK; /* classified after the session; not added */
	}
	smtp_message_t sm = smtp_add_message(s);
	it->sm = sm;
	if (sm == NULL || !smtp_set_reverse_path(sm, m->sender) ||
	    !smtp_set_messagecb(sm, msg_cb, it)) {
		set_err(err_r, "libesmtp: cannot add message %s", m->id);
		return PG_IO;
	}
	smtp_message_set_application_data_release(sm, it, NULL);
	if (m->size < (uint64_t)0xffffffffUL)
		smtp_size_set_estimate(sm, (unsigned long)m->size);
	for (size_t i = 0; i < m->nrcpts; i++) {
		smtp_recipient_t r = smtp_add_recipient(sm, m->rcpts[i].addr);
		if (r == NULL) {
			set_err(err_r, "libesmtp: cannot add recipient to %s", m->id);
			return PG_IO;
		}
		smtp_recipient_set_application_data_release(r, &m->rcpts[i], NULL);
	}
	return PG_OK;
}

/* Session-wide state shared with the event callback. */
struct relay_run {
	const struct conf *c;
	struct spool *sp;
	struct relay_item *items;
	size_t nitems;
	struct spool_outcome *outs; /* outcomes not yet committed */
	size_t nouts;
	struct relay_stats *st;
	time_t now;
	int spool_failed;
	char *spool_err;
};

static char *status_text(const smtp_status_t *s)
{
	if (s == NULL || s->code == 0)
		return NULL;
	const char *t = s->text != NULL ? s->text : "";
	size_t n = strcspn(t, "\r\n");
	char *clean = sanitize_for_log(t, n, 400);
	char *r = xasprintf("%d %s", s->code, clean);
	free(clean);
	return r;
}

/* rcpt_verdict - what one recipient's replies mean */
static enum spool_state rcpt_verdict(const smtp_status_t *rs, const smtp_status_t *rp,
				     const smtp_status_t *ms, const smtp_status_t **why_r)
{
	if (rp != NULL && rp->code / 100 == 5) {
		*why_r = rp;
		return SPOOL_HELD;
	}
	if (rp != NULL && rp->code / 100 == 4) {
		*why_r = rp;
		return SPOOL_DEFERRED;
	}
	if (rs != NULL && rs->code / 100 == 5) {
		*why_r = rs;
		return SPOOL_HELD;
	}
	if (rs != NULL && rs->code / 100 == 4) {
		*why_r = rs;
		return SPOOL_DEFERRED;
	}
	*why_r = ms;
	if (rs != NULL && rs->code / 100 == 2 && ms != NULL && ms->code / 100 == 2)
		return SPOOL_SENT;
	if (ms != NULL && ms->code / 100 == 5)
		return SPOOL_HELD;
	return SPOOL_DEFERRED; /* 4xx, or no answer at all (connection lost) */
}

struct rcpt_walk {
	const smtp_status_t *rp, *ms;
	int nsent, nheld, ndeferred;
	char *first_bad; /* reply of the first refused recipient */
};

static void rcpt_cb(smtp_recipient_t r, const char *mailbox, void *arg)
{
	struct rcpt_walk *w = arg;
	struct spool_rcpt *sr = smtp_recipient_get_application_data(r);
	const smtp_status_t *why = NULL;
	enum spool_state v = rcpt_verdict(smtp_recipient_status(r), w->rp, w->ms, &why);
	if (sr == NULL)
		return;
	sr->state = v;
	free(sr->reply);
	sr->reply = status_text(why);
	if (v == SPOOL_SENT)
		w->nsent++;
	else if (v == SPOOL_HELD)
		w->nheld++;
	else
		w->ndeferred++;
	if (v != SPOOL_SENT && w->first_bad == NULL && sr->reply != NULL)
		w->first_bad = xstrdup(sr->reply);
}

static void flush_outcomes(struct relay_run *run)
{
	char *err = NULL;
	if (run->nouts == 0)
		return;
	if (spool_finish_attempts(run->sp, run->outs, run->nouts, &err) != SPOOL_OK) {
		/* the messages stay `sending`; recovery requeues them, so a
		 * sent one may go out twice: say so */
		LOG_ERR("relay status=spool-error reason=\"%s\" messages=%zu "
			"note=\"outcomes not recorded; sent messages may be sent again\"",
			err, run->nouts);
		run->spool_failed = 1;
		if (run->spool_err == NULL)
			run->spool_err = err;
		else
			free(err);
	}
	run->nouts = 0;
}

static void log_outcome(const struct relay_run *run, const struct relay_item *it,
			enum spool_state st)
{
	const struct spool_msg *m = it->msg;
	char *to = xstrdup("");
	for (size_t i = 0; i < m->nrcpts; i++) {
		char *n = xasprintf("%s%s<%s>", to, i ? "," : "", m->rcpts[i].addr);
		free(to);
		to = n;
	}
	LOG_INFO("id=%s account=%s from=<%s> to=%s relay=%s:%d delay=%lds attempts=%d "
		 "status=%s (%s)",
		 m->id, m->account, m->sender, to, run->c->smtp.host, run->c->smtp.port,
		 (long)(run->now - m->created), m->attempts, spool_state_name(st),
		 it->reply ? it->reply : "no reply");
	free(to);
}

/* record - decide one message's outcome and queue it for the spool */
static void record(struct relay_run *run, struct relay_item *it, smtp_message_t sm,
		   const char *session_err)
{
	struct rcpt_walk w = { 0 };
	enum spool_state st;
	if (it->recorded)
		return;
	it->recorded = 1;
	if (sm != NULL) {
		w.rp = smtp_reverse_path_status(sm);
		w.ms = smtp_message_transfer_status(sm);
		smtp_enumerate_recipients(sm, rcpt_cb, &w);
	}
	if (it->open_failed && it->open_error != NULL) {
		st = SPOOL_HELD; /* unreadable spool file: an operator must look */
		it->reply = xasprintf("local error: %s%s", it->open_error,
				      w.nsent ? " (the host may have a truncated copy)" : "");
		for (size_t i = 0; i < it->msg->nrcpts; i++)
			it->msg->rcpts[i].state = SPOOL_HELD;
		free(w.first_bad);
	} else if (w.ndeferred > 0 || sm == NULL) {
		st = SPOOL_DEFERRED;
		it->reply = w.first_bad ? w.first_bad : xstrdup(session_err ? session_err : "no reply");
	} else if (w.nheld > 0) {
		st = SPOOL_HELD;
		it->reply = w.first_bad;
	} else {
		st = SPOOL_SENT;
		it->reply = status_text(w.ms);
		free(w.first_bad);
	}
	struct spool_outcome *o = &run->outs[run->nouts++];
	o->msg = it->msg;
	o->state = st;
	o->reply = it->reply;
	o->next_attempt = st == SPOOL_DEFERRED ? run->now + relay_backoff(it->msg->attempts) : 0;
	run->st->sent += st == SPOOL_SENT;
	run->st->held += st == SPOOL_HELD;
	run->st->deferred += st == SPOOL_DEFERRED;
	if (st == SPOOL_SENT)
		run->st->bytes += it->msg->size;
	log_outcome(run, it, st);
	if (run->nouts >= 64)
		flush_outcomes(run);
}

static void event_cb(smtp_session_t session, int event, void *arg, ...)
{
	struct relay_run *run = arg;
	va_list ap;
	va_start(ap, arg);
	if (event == SMTP_EV_MESSAGESENT) {
		smtp_message_t sm = va_arg(ap, smtp_message_t);
		struct relay_item *it = smtp_message_get_application_data(sm);
		if (it != NULL)
			record(run, it, sm, NULL);
	} else if (event == SMTP_EV_INVALID_PEER_CERTIFICATE ||
		   event == SMTP_EV_NO_PEER_CERTIFICATE || event == SMTP_EV_WRONG_PEER_CERTIFICATE) {
		/* only the invalid-certificate event passes the verify result
		 * (a long) before the int *ok; the others pass int *ok first */
		if (event == SMTP_EV_INVALID_PEER_CERTIFICATE)
			(void)va_arg(ap, long);
		int *ok = va_arg(ap, int *);
		if (ok != NULL)
			*ok = 0; /* never accept a certificate that failed verification */
		LOG_WARN("relay smtp=%s:%d status=tls-refused reason=\"%s\"", run->c->smtp.host,
			 run->c->smtp.port,
			 event == SMTP_EV_NO_PEER_CERTIFICATE ? "no peer certificate" :
			 event == SMTP_EV_WRONG_PEER_CERTIFICATE ? "certificate does not match the host"
								  : "certificate verification failed");
	}
	va_end(ap);
}

static void items_free(struct relay_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (items[i].fd >= 0)
			close(items[i].fd);
		free(items[i].open_error);
		free(items[i].reply);
	}
	free(items);
}

/* run_session - one SMTP session for n claimed messages; every message gets
 * an outcome, whatever happens to the session */
static enum pg_res run_session(struct relay_run *run, struct spool_msg **msgs, size_t n,
			       char **err_r)
{
	enum pg_res res = PG_OK;
	char *session_err = NULL;
	size_t added = 0;
	smtp_session_t s = smtp_create_session();
	if (s == NULL) {
		set_err(err_r, "libesmtp: cannot create a session");
		return PG_IO;
	}
	run->items = xcalloc(n, sizeof *run->items);
	run->nitems = n;
	run->outs = xcalloc(n, sizeof *run->outs);
	run->nouts = 0;
	for (size_t i = 0; i < n; i++) {
		run->items[i].msg = msgs[i];
		run->items[i].fd = -1;
	}
	res = session_setup(run->c, s, &session_err);
	smtp_set_eventcb(s, event_cb, run);
	for (size_t i = 0; res == PG_OK && i < n; i++) {
		res = add_message(s, &run->items[i], &session_err);
		added += run->items[i].sm != NULL;
	}
	if (res == PG_OK && added > 0 && !smtp_start_session(s)) {
		char ebuf[256];
		int e = smtp_errno();
		session_err = xasprintf("SMTP session with %s:%d failed: %s", run->c->smtp.host,
					run->c->smtp.port, smtp_strerror(e, ebuf, sizeof ebuf));
		res = PG_TEMP;
	}
	for (size_t i = 0; i < n; i++)
		record(run, &run->items[i], run->items[i].sm, session_err);
	flush_outcomes(run);
	smtp_destroy_session(s);
	if (res != PG_OK)
		set_err(err_r, "%s", session_err ? session_err : "SMTP session failed");
	free(session_err);
	items_free(run->items, n);
	free(run->outs);
	run->items = NULL;
	run->outs = NULL;
	return res;
}

enum pg_res relay_run_once(const struct conf *c, struct spool *sp,
			   const volatile sig_atomic_t *stop_flag, struct relay_stats *st_r,
			   char **err_r)
{
	struct relay_run run = { .c = c, .sp = sp, .st = st_r };
	enum pg_res res = PG_OK;
	memset(st_r, 0, sizeof *st_r);
	for (int round = 0; round < 10000; round++) {
		struct spool_msg **msgs = NULL;
		size_t n = 0;
		char *err = NULL;
		if (stop_flag != NULL && *stop_flag)
			break;
		run.now = time(NULL);
		enum spool_res sr = spool_claim_due(sp, run.now, RELAY_BATCH_MAX, &msgs, &n, &err);
		if (sr != SPOOL_OK) {
			set_err(err_r, "spool: %s", err);
			free(err);
			return PG_IO;
		}
		if (n == 0)
			break;
		st_r->attempted += (unsigned)n;
		res = run_session(&run, msgs, n, err_r);
		spool_msgs_free(&msgs, n);
		if (run.spool_failed) {
			set_err(err_r, "spool: %s", run.spool_err);
			free(run.spool_err);
			return PG_IO;
		}
		if (res != PG_OK)
			break;
	}
	return res;
}
