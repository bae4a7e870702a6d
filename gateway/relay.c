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
 *  - every session gets a fresh STARTTLS SSL_CTX, which the relay frees
 *    after the session (the packaged libesmtp does not).
 *  - smtp_set_timeout() takes milliseconds.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "net.h"
#include "notice.h"
#include "relay.h"
/* after conf.h (auth-client.h defines AUTH_USER as a macro), before
 * libesmtp.h (which declares smtp_auth_set_context only after it) */
#include <auth-client.h>
#include <libesmtp.h>

#define RELAY_CHUNK (64 * 1024) /* bytes per message callback */
/* Outcomes per spool transaction (one fsync per this many messages).  The
 * recipients a host accepted are journalled at once (spool_journal_note), so
 * a relay killed before the batch is recorded sends none of them again;
 * this many is what a power loss can send twice. */
#define RELAY_COMMIT_EVERY 256
/* the most one of several parallel sessions claims at a time */
#define RELAY_SHARE 256
/* a message deferred this many times is logged at warning, not info */
#define RELAY_WARN_ATTEMPTS 3

/* One message in flight: the spool record and its open file, or its body
 * read from the index (in_index). */
struct relay_item {
	struct spool_msg *msg;
	struct spool *sp;
	unsigned char *body; /* in_index: the message, loaded when libesmtp starts it */
	size_t blen;
	int body_sent;
	int fd;
	int open_failed;
	char *open_error;
	int recorded;   /* outcome already queued for the spool */
	int expired;    /* deferred past max_queue_time: held instead */
	smtp_message_t sm;
	char *reply;    /* owned: the reply that decided the outcome */
};

long relay_backoff(const struct conf *c, int attempts)
{
	if (attempts < 1)
		attempts = 1;
	if (c->nretry == 0)
		return 3600;
	/* the schedule's last interval repeats */
	size_t i = (size_t)attempts <= c->nretry ? (size_t)attempts - 1 : c->nretry - 1;
	return c->retry_intervals[i];
}

/* msg_8bit - 1 if the message has an octet over 127, 0 if not or
 * unreadable (add_message then reports the error).  Known from ingest for
 * every message but those spooled by an older popgate. */
static int msg_8bit(struct spool *sp, const struct spool_msg *m)
{
	unsigned char buf[65536];
	int fd = -1, found = 0;
	ssize_t n;
	if (m->eightbit >= 0)
		return m->eightbit;
	if (spool_msg_open(sp, m, &fd, NULL) != SPOOL_OK)
		return 0;
	while (fd >= 0 && !found && (n = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] & 0x80) {
				found = 1;
				break;
			}
	if (fd >= 0)
		close(fd);
	return found;
}

/* body_cb - msg_cb for a message whose body is in the index: one chunk */
static const char *body_cb(struct relay_item *it, int *len)
{
	if (len == NULL) {
		it->body_sent = 0;
		if (it->body == NULL && it->msg->body != NULL) {
			/* read with the claim: the item owns it from here */
			it->body = it->msg->body;
			it->blen = it->msg->body_len;
			it->msg->body = NULL;
		}
		if (it->body == NULL && !it->open_failed) {
			char *err = NULL;
			if (spool_body_get(it->sp, it->msg->id, &it->body, &it->blen, &err) !=
			    SPOOL_OK) {
				it->open_failed = 1;
				it->open_error = err;
			}
		}
		return NULL;
	}
	if (it->body == NULL || it->body_sent) {
		/* complete: release the memory (a later rewind reloads it) */
		free(it->body);
		it->body = NULL;
		*len = 0;
		return "";
	}
	it->body_sent = 1;
	*len = (int)it->blen;
	return (const char *)it->body;
}

/* msg_cb - libesmtp's message source: rewind when len is NULL, else the
 * next chunk of the spool file (len 0 at the end).  libesmtp frees *ctx. */
static const char *msg_cb(void **ctx, int *len, void *arg)
{
	struct relay_item *it = arg;
	if (it->msg->in_index)
		return body_cb(it, len);
	if (*ctx == NULL)
		*ctx = xmalloc(RELAY_CHUNK);
	if (len == NULL) {
		/* rewind: (re)open lazily, so a session of thousands of
		 * messages holds one file open at a time, not thousands */
		if (it->fd >= 0 && lseek(it->fd, 0, SEEK_SET) < 0)
			it->open_failed = 1;
		if (it->fd < 0 && !it->open_failed) {
			it->fd = open(it->msg->path, O_RDONLY | O_CLOEXEC);
			if (it->fd < 0) {
				it->open_failed = 1;
				it->open_error = xasprintf("open %s: %s", it->msg->path,
							   strerror(errno));
			}
		}
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
	if (n == 0) {
		close(it->fd); /* the message is complete: release the file */
		it->fd = -1;
	}
	*len = (int)n;
	return *ctx;
}

/* tls_level - the STARTTLS policy: SMTP AUTH credentials and a pin make
 * "may" a requirement (a stripped STARTTLS must not send the password in
 * clear or skip the pin) unless allow_plaintext_auth says otherwise */
static enum smtp_tls tls_level(const struct conf *c)
{
	if (c->smtp.tls == SMTP_TLS_MAY &&
	    (c->smtp.tls_fingerprint != NULL ||
	     (c->smtp.user != NULL && !c->smtp.allow_plaintext_auth)))
		return SMTP_TLS_ENCRYPT;
	return c->smtp.tls;
}

/* The first TLS problem of this process's current session (relay sessions
 * are single-threaded, one per process at a time), so a refused
 * certificate or a missing STARTTLS is named in the log instead of showing
 * up as "no reply". */
static char tls_verify_error[512];

/* The SSL_CTX handed to the current session.  libesmtp 1.1.0 as packaged
 * in Debian 12 does not free a context given with smtp_starttls_set_ctx()
 * (LeakSanitizer showed it, and freeing it after smtp_destroy_session() is
 * clean under ASan), so the relay frees it itself after each session. */
static SSL_CTX *session_ctx;
static unsigned char session_pin[32]; /* the current session's tls_fingerprint */

static int verify_cb(int preverify_ok, X509_STORE_CTX *x)
{
	if (!preverify_ok && tls_verify_error[0] == '\0')
		snprintf(tls_verify_error, sizeof tls_verify_error,
			 "certificate verify failed (%s)",
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
	return preverify_ok;
}

/* pin_verify - the whole certificate check with tls_fingerprint: the
 * leaf's SHA-256 (net.c's digest) decides, CA and name do not */
static int pin_verify(X509_STORE_CTX *x, void *arg)
{
	char seen[65];
	const char *want = arg;
	if (net_pin_check(X509_STORE_CTX_get0_cert(x), session_pin, seen))
		return 1;
	X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
	if (tls_verify_error[0] == '\0')
		snprintf(tls_verify_error, sizeof tls_verify_error,
			 "certificate does not match tls_fingerprint (expected %s, the server's "
			 "is sha256:%s)", want, seen);
	return 0;
}

/* tls_ctx_verify - what the certificate must satisfy at this level */
static int tls_ctx_verify(const struct conf *c, enum smtp_tls level, SSL_CTX *ctx)
{
	if (c->smtp.tls_fingerprint != NULL) {
		if (net_pin_parse(c->smtp.tls_fingerprint, session_pin) != 0)
			return 0;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		SSL_CTX_set_cert_verify_callback(ctx, pin_verify, c->smtp.tls_fingerprint);
		return 1;
	}
	if (level != SMTP_TLS_VERIFY) {
		/* may, encrypt: encrypted, certificate not checked (event_cb
		 * accepts what libesmtp's own check reports) */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
	unsigned char a[16];
	int ip = inet_pton(AF_INET, c->smtp.host, a) == 1 || inet_pton(AF_INET6, c->smtp.host, a) == 1;
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, c->smtp.host)
		: X509_VERIFY_PARAM_set1_host(vp, c->smtp.host, 0)) != 1)
		return 0;
	return c->smtp.ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, c->smtp.ca_file, NULL)
				       : SSL_CTX_set_default_verify_paths(ctx);
}

/* session_tls - a fresh SSL_CTX for this session (freed after it) */
static enum pg_res session_tls(const struct conf *c, smtp_session_t s, char **err_r)
{
	enum smtp_tls level = tls_level(c);
	tls_verify_error[0] = '\0';
	if (level == SMTP_TLS_NONE) {
		if (c->smtp.user != NULL && !c->smtp.allow_plaintext_auth) {
			set_err(err_r, "smtp: refusing SMTP AUTH as '%s' without TLS toward %s:%d "
				"(set tls = encrypt or verify, or allow_plaintext_auth = true)",
				c->smtp.user, c->smtp.host, c->smtp.port);
			return PG_CONFIG;
		}
		smtp_starttls_enable(s, Starttls_DISABLED);
		return PG_OK;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		set_err(err_r, "cannot create a TLS context");
		return PG_IO;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* libesmtp 1.1.0 waits on the socket with select() and misses bytes
	 * OpenSSL has already buffered: TLS 1.3's post-handshake session
	 * tickets then stall the session after STARTTLS until the server's
	 * timeout (seen with Postfix).  TLS 1.2 has no such records. */
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	session_ctx = ctx;
	if (tls_ctx_verify(c, level, ctx) != 1 || !smtp_starttls_set_ctx(s, ctx)) {
		SSL_CTX_free(ctx);
		session_ctx = NULL;
		set_err(err_r, "cannot set up STARTTLS toward %s:%d (ca_file or tls_fingerprint "
			"unusable)", c->smtp.host, c->smtp.port);
		return PG_CONFIG;
	}
	smtp_starttls_enable(s, level == SMTP_TLS_MAY ? Starttls_ENABLED : Starttls_REQUIRED);
	return PG_OK;
}

/* SMTP AUTH credentials for the interaction callback; the password is
 * read from its file for each relay run and wiped afterwards. */
struct relay_auth {
	char *user;
	char *pass;
	auth_context_t ctx;
};

/* auth_interact - libesmtp's SASL plugins ask for the user and password */
static int auth_interact(auth_client_request_t req, char **result, int fields, void *arg)
{
	struct relay_auth *ra = arg;
	for (int i = 0; i < fields; i++) {
		if (req[i].flags & AUTH_USER)
			result[i] = ra->user;
		else if (req[i].flags & AUTH_PASS)
			result[i] = ra->pass;
		else
			return 0; /* a realm or anything else: not configured */
	}
	return 1;
}

static void relay_auth_free(struct relay_auth *ra)
{
	if (ra->ctx != NULL)
		auth_destroy_context(ra->ctx);
	if (ra->pass != NULL) {
		explicit_bzero(ra->pass, strlen(ra->pass));
		free(ra->pass);
	}
	memset(ra, 0, sizeof *ra);
}

/* session_auth - PLAIN and LOGIN (and what else the SASL plugins offer)
 * when a user is configured; the TLS policy is checked in session_tls */
static enum pg_res session_auth(const struct conf *c, smtp_session_t s, struct relay_auth *ra,
				char **err_r)
{
	static int inited;
	if (c->smtp.user == NULL)
		return PG_OK;
	if (ra->pass == NULL &&
	    conf_read_file_secret(c->smtp.password_file, "smtp password_file", &ra->pass, err_r) !=
		    PG_OK)
		return PG_CONFIG;
	if (!inited) {
		auth_client_init();
		inited = 1;
	}
	ra->user = c->smtp.user;
	if (ra->ctx == NULL)
		ra->ctx = auth_create_context();
	if (ra->ctx == NULL) {
		set_err(err_r, "libesmtp: cannot create an AUTH context");
		return PG_IO;
	}
	auth_set_mechanism_flags(ra->ctx, AUTH_PLUGIN_PLAIN, 0);
	auth_set_interact_cb(ra->ctx, auth_interact, ra);
	if (!smtp_auth_set_context(s, ra->ctx)) {
		set_err(err_r, "libesmtp: cannot set the AUTH context");
		return PG_IO;
	}
	return PG_OK;
}

static enum pg_res session_setup(const struct conf *c, smtp_session_t s, struct relay_auth *ra,
				 char **err_r)
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
	enum pg_res res = session_tls(c, s, err_r);
	return res == PG_OK ? session_auth(c, s, ra, err_r) : res;
}

/* add_message - one spool message into the session */
static enum pg_res add_message(smtp_session_t s, struct relay_item *it, int body8, char **err_r)
{
	struct spool_msg *m = it->msg;
	/* checked here, opened by msg_cb when libesmtp starts the message */
	if (!m->in_index && access(m->path, R_OK) != 0) {
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
	/* ENVID: a DSN from the host names the spool id (sent only when the
	 * host offers DSN; libesmtp goes on without it otherwise) */
	smtp_dsn_set_envid(sm, m->id);
	if (body8)
		smtp_8bitmime_set_body(sm, E8bitmime_8BITMIME);
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
	struct relay_item **out_items; /* the item of each outcome */
	size_t nouts;
	struct relay_auth auth;
	struct relay_stats *st;
	time_t now;
	int spool_failed;
	char *spool_err;
	int no8bit;          /* the host lacks 8BITMIME for this 8-bit session */
	int64_t last_read_ms; /* CLOCK_MONOTONIC of the host's last reply line */
	int data_pending;    /* DATA was written, its 354 not yet read */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* monitor_cb - libesmtp's protocol trace (commands and replies, not the
 * message): when the host last said something, and whether it owes the
 * answer to DATA, so that a session cut by the timeout says so */
static void monitor_cb(const char *buf, int len, int writing, void *arg)
{
	struct relay_run *run = arg;
	if (writing == SMTP_CB_READING) {
		run->last_read_ms = mono_ms();
		if (len >= 3 && strncmp(buf, "354", 3) == 0)
			run->data_pending = 0;
	} else if (writing == SMTP_CB_WRITING) {
		/* PIPELINING: DATA may end a batch that starts with MAIL */
		for (int i = 0; i + 4 <= len; i++)
			if ((i == 0 || buf[i - 1] == '\n') && strncasecmp(buf + i, "DATA", 4) == 0)
				run->data_pending = 1;
	}
}

/* session_failure - why a session that libesmtp calls started ended early
 * (NULL: it did not): the host's missing 8BITMIME for an 8-bit message
 * (run->no8bit: those messages are held, not retried), a silence that
 * outlasted the smtp timeout, or the error libesmtp saw */
static char *session_failure(struct relay_run *run, int body8)
{
	char ebuf[256];
	int e = smtp_errno();
	const struct conf *c = run->c;
	if (e == 0)
		return NULL;
	if (body8 && e == SMTP_ERR_EXTENSION_NOT_AVAILABLE) {
		run->no8bit = 1;
		return xasprintf("the SMTP host %s:%d does not offer 8BITMIME, which this message "
				 "(8-bit octets) needs; enable 8BITMIME on the host, then popgate "
				 "requeue it", c->smtp.host, c->smtp.port);
	}
	if (e == SMTP_ERR_DROPPED_CONNECTION &&
	    mono_ms() - run->last_read_ms >= (int64_t)c->smtp.timeout * 1000 - 50)
		return xasprintf("timed out: no reply from %s:%d for %ds (timeout) %s", c->smtp.host,
				 c->smtp.port, c->smtp.timeout,
				 run->data_pending ? "after DATA" : "after the final dot of the message");
	return xasprintf("SMTP session with %s:%d failed: %s", c->smtp.host, c->smtp.port,
			 smtp_strerror(e, ebuf, sizeof ebuf));
}

static char *status_text(const smtp_status_t *s)
{
	if (s == NULL || s->code == 0)
		return NULL;
	const char *t = s->text != NULL ? s->text : "";
	size_t n = strcspn(t, "\r\n");
	char *clean = sanitize_for_log(t, n, 400);
	char *r = s->enh_class != 0 ? xasprintf("%d %d.%d.%d %s", s->code, s->enh_class,
						  s->enh_subject, s->enh_detail, clean)
				    : xasprintf("%d %s", s->code, clean);
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
		run->nouts = 0;
		return;
	}
	/* notices follow the commit of the held state: a crash in between
	 * loses a notice, never sends one about a message still queued */
	for (size_t i = 0; i < run->nouts; i++) {
		if (run->outs[i].state != SPOOL_HELD)
			continue;
		const struct relay_item *it = run->out_items[i];
		if (notice_send(run->c, run->sp, it->msg, it->reply, it->expired, run->now, &err) !=
		    PG_OK) {
			LOG_ERR("id=%s status=notice-failed reason=\"%s\"", it->msg->id, err);
			free(err);
			err = NULL;
		}
	}
	run->nouts = 0;
}

static void log_outcome(const struct relay_run *run, const struct relay_item *it,
			enum spool_state st)
{
	const struct spool_msg *m = it->msg;
	/* held mail, and mail deferred again and again, must reach an admin
	 * who logs at warning */
	enum log_level lvl = st == SPOOL_HELD ||
		(st == SPOOL_DEFERRED && m->attempts >= RELAY_WARN_ATTEMPTS) ? LOGL_WARN : LOGL_INFO;
	if (lvl > log_get_level())
		return; /* not even the recipient list is built */
	char *to = xstrdup("");
	for (size_t i = 0; i < m->nrcpts; i++) {
		char *n = xasprintf("%s%s<%s>", to, i ? "," : "", m->rcpts[i].addr);
		free(to);
		to = n;
	}
	log_msg(lvl, "id=%s account=%s from=<%s> to=%s relay=%s:%d delay=%lds attempts=%d "
		 "status=%s (%s)",
		 m->id, m->account, m->sender, to, run->c->smtp.host, run->c->smtp.port,
		 (long)(run->now - m->created), m->attempts, spool_state_name(st),
		 it->reply ? it->reply : "no reply");
	free(to);
}

/* expire - a deferred message past max_queue_time is held, with the last
 * temporary reply kept in the reason */
static enum spool_state expire(struct relay_run *run, struct relay_item *it)
{
	char *r = xasprintf("expired: deferred for %lds, over max_queue_time %lds; last reply: %s",
			    (long)(run->now - it->msg->created), run->c->max_queue_time, it->reply);
	free(it->reply);
	it->reply = r;
	it->expired = 1;
	for (size_t i = 0; i < it->msg->nrcpts; i++)
		if (it->msg->rcpts[i].state != SPOOL_SENT)
			it->msg->rcpts[i].state = SPOOL_HELD;
	return SPOOL_HELD;
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
	/* accepted recipients are journalled before anything else: a kill
	 * from here on does not send them twice */
	char *jerr = NULL;
	if (w.nsent > 0 && spool_journal_note(run->sp, it->msg, &jerr) != SPOOL_OK) {
		LOG_WARN("id=%s status=journal-failed reason=\"%s\" note=\"a crash before the "
			 "outcome is recorded would send it again\"", it->msg->id, jerr);
		free(jerr);
	}
	if (it->open_failed && it->open_error != NULL) {
		st = SPOOL_HELD; /* unreadable spool file: an operator must look */
		it->reply = xasprintf("local error: %s%s", it->open_error,
				      w.nsent ? " (the host may have a truncated copy)" : "");
		for (size_t i = 0; i < it->msg->nrcpts; i++)
			it->msg->rcpts[i].state = SPOOL_HELD;
		free(w.first_bad);
	} else if (run->no8bit && w.nsent == 0) {
		/* retrying cannot help until the host changes: held at once,
		 * for `popgate requeue` once it offers 8BITMIME */
		st = SPOOL_HELD;
		it->reply = xstrdup(session_err ? session_err : "host lacks 8BITMIME");
		for (size_t i = 0; i < it->msg->nrcpts; i++)
			it->msg->rcpts[i].state = SPOOL_HELD;
		free(w.first_bad);
	} else if (w.ndeferred > 0 || sm == NULL) {
		st = SPOOL_DEFERRED;
		/* no 4xx/5xx of the host's own: the session's end says why */
		if (session_err != NULL && w.first_bad != NULL &&
		    (w.ms == NULL || (w.ms->code / 100 != 4 && w.ms->code / 100 != 5))) {
			free(w.first_bad);
			w.first_bad = NULL;
		}
		it->reply = w.first_bad ? w.first_bad : xstrdup(session_err ? session_err : "no reply");
		if (run->now - it->msg->created >= run->c->max_queue_time)
			st = expire(run, it);
	} else if (w.nheld > 0) {
		st = SPOOL_HELD;
		it->reply = w.first_bad;
	} else {
		st = SPOOL_SENT;
		it->reply = status_text(w.ms);
		free(w.first_bad);
	}
	run->out_items[run->nouts] = it;
	struct spool_outcome *o = &run->outs[run->nouts++];
	o->msg = it->msg;
	o->state = st;
	o->reply = it->reply;
	o->next_attempt = st == SPOOL_DEFERRED ? run->now + relay_backoff(run->c, it->msg->attempts)
					       : 0;
	run->st->sent += st == SPOOL_SENT;
	run->st->held += st == SPOOL_HELD;
	run->st->deferred += st == SPOOL_DEFERRED;
	if (st == SPOOL_SENT)
		run->st->bytes += it->msg->size;
	log_outcome(run, it, st);
	if (run->nouts >= RELAY_COMMIT_EVERY)
		flush_outcomes(run);
}

/* nodelay_fd - TCP_NODELAY on fd if it is a connected TCP socket */
static void nodelay_fd(int fd)
{
	int one = 1, type = 0;
	struct stat sb;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss, tl = sizeof type;
	if (fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode))
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM)
		return;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return;
	sl = sizeof ss;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* set_nodelay - TCP_NODELAY on this process's connected TCP sockets.
 * libesmtp does not expose its socket, and without TCP_NODELAY Nagle's
 * algorithm holds each message's final small segment until the receiver's
 * delayed ACK (about 40 ms per message: 22 messages/s measured instead of
 * thousands).  libesmtp builds whole command batches and body chunks in its
 * own buffer, so no-delay does not mean a segment per line.  Only the
 * SMTP session's socket is connected when this runs (the relay never holds
 * a POP3 connection; SQLite uses files).  The open descriptors are listed
 * from /proc/self/fd: probing every number up to 4096 was 4,096 system
 * calls per session (164,000 in a drain of 10,000 messages). */
static void set_nodelay(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL) {
		for (int fd = 0; fd < 4096; fd++)
			nodelay_fd(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		if (de->d_name[0] < '0' || de->d_name[0] > '9' || *end != '\0' || fd == dirfd(d))
			continue;
		nodelay_fd((int)fd);
	}
	closedir(d);
}

static void event_cb(smtp_session_t session, int event, void *arg, ...)
{
	struct relay_run *run = arg;
	va_list ap;
	va_start(ap, arg);
	if (event == SMTP_EV_CONNECT) {
		set_nodelay();
	} else if (event == SMTP_EV_MESSAGESENT) {
		smtp_message_t sm = va_arg(ap, smtp_message_t);
		struct relay_item *it = smtp_message_get_application_data(sm);
		if (it != NULL)
			record(run, it, sm, NULL);
	} else if (event == SMTP_EV_EXTNA_STARTTLS) {
		if (tls_level(run->c) != SMTP_TLS_MAY && tls_verify_error[0] == '\0')
			snprintf(tls_verify_error, sizeof tls_verify_error,
				 "the host does not offer STARTTLS (tls = \"%s\" requires it)",
				 run->c->smtp.tls == SMTP_TLS_VERIFY ? "verify" : "encrypt");
	} else if (event == SMTP_EV_INVALID_PEER_CERTIFICATE ||
		   event == SMTP_EV_NO_PEER_CERTIFICATE || event == SMTP_EV_WRONG_PEER_CERTIFICATE) {
		/* only the invalid-certificate event passes the verify result
		 * (a long) before the int *ok; the others pass int *ok first */
		if (event == SMTP_EV_INVALID_PEER_CERTIFICATE)
			(void)va_arg(ap, long);
		int *ok = va_arg(ap, int *);
		/* libesmtp's own check after the handshake.  verify: OpenSSL
		 * has already checked CA and name (host or IP, which libesmtp's
		 * name match does not know) or the handshake failed; a pin was
		 * checked by pin_verify; may and encrypt do not check (Postfix's
		 * meaning) */
		int accept = tls_level(run->c) != SMTP_TLS_VERIFY || run->c->smtp.tls_fingerprint != NULL ||
			     event == SMTP_EV_WRONG_PEER_CERTIFICATE;
		if (accept && event != SMTP_EV_NO_PEER_CERTIFICATE) {
			if (ok != NULL)
				*ok = 1;
		} else {
			if (ok != NULL)
				*ok = 0; /* never accept a certificate that failed verification */
			LOG_WARN("relay smtp=%s:%d status=tls-refused reason=\"%s\"",
				 run->c->smtp.host, run->c->smtp.port,
				 event == SMTP_EV_NO_PEER_CERTIFICATE ? "no peer certificate" :
				 event == SMTP_EV_WRONG_PEER_CERTIFICATE
					 ? "certificate does not match the host"
					 : "certificate verification failed");
		}
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
		free(items[i].body);
	}
	free(items);
}

/* any_reply - did the host answer MAIL for at least one message? */
static int any_reply(const struct relay_run *run, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		smtp_message_t sm = run->items[i].sm;
		if (sm == NULL)
			continue;
		const smtp_status_t *rp = smtp_reverse_path_status(sm);
		if (rp != NULL && rp->code != 0)
			return 1;
	}
	return 0;
}

/* run_session - one SMTP session for n claimed messages; every message gets
 * an outcome, whatever happens to the session.  body8: all n have 8-bit
 * octets and are declared BODY=8BITMIME (libesmtp makes 8BITMIME a
 * requirement of the whole session, so such messages travel apart). */
static enum pg_res run_session(struct relay_run *run, struct spool_msg **msgs, size_t n,
			       int body8, char **err_r)
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
	run->out_items = xcalloc(n, sizeof *run->out_items);
	run->nouts = 0;
	for (size_t i = 0; i < n; i++) {
		run->items[i].msg = msgs[i];
		run->items[i].sp = run->sp;
		run->items[i].fd = -1;
	}
	res = session_setup(run->c, s, &run->auth, &session_err);
	smtp_set_eventcb(s, event_cb, run);
	run->no8bit = run->data_pending = 0;
	run->last_read_ms = mono_ms();
	smtp_set_monitorcb(s, monitor_cb, run, 0);
	for (size_t i = 0; res == PG_OK && i < n; i++) {
		res = add_message(s, &run->items[i], body8, &session_err);
		added += run->items[i].sm != NULL;
	}
	if (res == PG_OK && added > 0) {
		int started = smtp_start_session(s);
		int replied = started && any_reply(run, n);
		if (started && (replied || (body8 && smtp_errno() == SMTP_ERR_EXTENSION_NOT_AVAILABLE)) &&
		    (session_err = session_failure(run, body8)) != NULL) {
			/* messages the host answered keep their replies; the rest
			 * take this reason */
			LOG_WARN("relay smtp=%s:%d status=session-failed reason=\"%s\"",
				 run->c->smtp.host, run->c->smtp.port, session_err);
		} else if (!replied) {
			/* libesmtp can report success for a session that never got
			 * as far as MAIL (a refused certificate): say what happened */
			char ebuf[256];
			int e = smtp_errno();
			session_err = xasprintf("SMTP session with %s:%d failed: %s",
						run->c->smtp.host, run->c->smtp.port,
						tls_verify_error[0] ? tls_verify_error
						: e ? smtp_strerror(e, ebuf, sizeof ebuf)
						    : "the session ended before any reply to MAIL");
			res = PG_TEMP;
		}
	}
	for (size_t i = 0; i < n; i++)
		record(run, &run->items[i], run->items[i].sm, session_err);
	flush_outcomes(run);
	smtp_destroy_session(s);
	SSL_CTX_free(session_ctx); /* NULL-safe; see session_ctx */
	session_ctx = NULL;
	if (res != PG_OK)
		set_err(err_r, "%s", session_err ? session_err : "SMTP session failed");
	free(session_err);
	items_free(run->items, n);
	free(run->outs);
	free(run->out_items);
	run->items = NULL;
	run->outs = NULL;
	run->out_items = NULL;
	return res;
}

/* run_batch - one claimed batch: 7-bit messages in one session, 8-bit ones
 * in another; both run (every claimed message needs an outcome) */
static enum pg_res run_batch(struct relay_run *run, struct spool_msg **msgs, size_t n,
			     char **err_r)
{
	struct spool_msg **grp[2];
	size_t ng[2] = { 0, 0 };
	enum pg_res res = PG_OK;
	grp[0] = xcalloc(n, sizeof *grp[0]);
	grp[1] = xcalloc(n, sizeof *grp[1]);
	for (size_t i = 0; i < n; i++) {
		int b8 = msg_8bit(run->sp, msgs[i]);
		grp[b8][ng[b8]++] = msgs[i];
	}
	for (int g = 0; g < 2; g++) {
		char *err = NULL;
		if (ng[g] == 0)
			continue;
		enum pg_res r = run_session(run, grp[g], ng[g], g, &err);
		if (r != PG_OK && res == PG_OK) {
			res = r;
			set_err(err_r, "%s", err);
		}
		free(err);
	}
	free(grp[0]);
	free(grp[1]);
	return res;
}

/* relay_loop - claim and send batches until nothing is due */
static enum pg_res relay_loop(const struct conf *c, struct spool *sp,
			      const volatile sig_atomic_t *stop_flag, struct relay_stats *st_r,
			      char **err_r)
{
	struct relay_run run = { .c = c, .sp = sp, .st = st_r };
	enum pg_res res = PG_OK;
	/* this loop never forks: checkpoints may run beside it */
	spool_checkpoint_in_background(sp, 1);
	for (int round = 0; round < 100000; round++) {
		struct spool_msg **msgs = NULL;
		size_t n = 0;
		char *err = NULL;
		if (stop_flag != NULL && *stop_flag)
			break;
		run.now = time(NULL);
		/* with parallel sessions a claim is at most RELAY_SHARE, so a
		 * queue that is still filling (a poll going on) is shared by
		 * all of them instead of going to the first in one batch */
		size_t max = (size_t)c->smtp.max_messages_per_session;
		if (c->smtp.max_sessions > 1 && max > RELAY_SHARE)
			max = RELAY_SHARE;
		enum spool_res sr = spool_claim_due(sp, run.now, max, &msgs, &n, &err);
		if (sr != SPOOL_OK) {
			set_err(err_r, "spool: %s", err);
			free(err);
			res = PG_IO;
			break;
		}
		if (n == 0)
			break;
		st_r->attempted += (unsigned)n;
		res = run_batch(&run, msgs, n, err_r);
		spool_msgs_free(&msgs, n);
		if (run.spool_failed) {
			set_err(err_r, "spool: %s", run.spool_err);
			free(run.spool_err);
			res = PG_IO;
			break;
		}
		if (res != PG_OK)
			break;
	}
	relay_auth_free(&run.auth);
	spool_checkpoint_in_background(sp, 0);
	return res;
}

/* The result of one relay child, sent to the parent through a pipe. */
struct child_report {
	struct relay_stats st;
	enum pg_res res;
	char err[512];
};

/* child_main - one of max_sessions parallel senders: its own spool handle
 * (SQLite handles must not cross fork), disjoint batches (claims are
 * transactional) */
static void child_main(const struct conf *c, const char *dir, int wfd, pid_t parent,
		       const volatile sig_atomic_t *stop_flag)
{
	struct child_report rep;
	struct spool *sp = NULL;
	char *err = NULL;
	memset(&rep, 0, sizeof rep);
	/* the relay that started this session dies (kill -9, or killed after
	 * its stop grace): stop like on SIGTERM, after the batch in flight,
	 * instead of claiming on as an orphan */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
		raise(SIGTERM);
	if (spool_open(dir, &sp, &err) != SPOOL_OK) {
		rep.res = PG_IO;
	} else {
		rep.res = relay_loop(c, sp, stop_flag, &rep.st, &err);
		spool_close(&sp);
	}
	if (err != NULL)
		snprintf(rep.err, sizeof rep.err, "%s", err);
	free(err);
	ssize_t w = write(wfd, &rep, sizeof rep);
	_exit(w == (ssize_t)sizeof rep ? 0 : 1);
}

static enum pg_res relay_parallel(const struct conf *c, struct spool *sp,
				  const volatile sig_atomic_t *stop_flag, struct relay_stats *st_r,
				  char **err_r)
{
	int n = c->smtp.max_sessions, fds[64], forwarded = 0, reopened = 1;
	pid_t pids[64], self = getpid();
	enum pg_res res = PG_OK;
	/* no SQLite connection may cross the forks (spool_fork_prepare) */
	if (spool_fork_prepare(sp, err_r) != SPOOL_OK)
		return PG_IO;
	for (int i = 0; i < n; i++) {
		int p[2];
		pids[i] = -1;
		fds[i] = -1;
		if (pipe(p) != 0)
			continue;
		fflush(NULL);
		pids[i] = fork();
		if (pids[i] == 0) {
			close(p[0]);
			child_main(c, spool_dir(sp), p[1], self, stop_flag);
		}
		close(p[1]);
		fds[i] = p[0];
		if (pids[i] < 0) {
			close(p[0]);
			fds[i] = -1;
		}
	}
	char *rerr = NULL;
	if (spool_fork_done(sp, &rerr) != SPOOL_OK) {
		reopened = 0;
		LOG_ERR("relay status=spool-error reason=\"%s\"", rerr);
		res = PG_IO;
		set_err(err_r, "spool: %s", rerr);
		free(rerr);
	}
	for (int i = 0; i < n; i++) {
		struct child_report rep;
		if (fds[i] < 0) {
			if (res == PG_OK) {
				res = PG_TEMP;
				set_err(err_r, "cannot start relay session %d: %s", i, strerror(errno));
			}
			continue;
		}
		ssize_t r;
		/* a stop (SIGTERM, SIGINT) reaches every session: each ends
		 * after its batch in flight, none claims another */
		do {
			if (stop_flag != NULL && *stop_flag && !forwarded) {
				for (int j = 0; j < n; j++)
					if (pids[j] > 0)
						kill(pids[j], SIGTERM);
				forwarded = 1;
			}
			r = read(fds[i], &rep, sizeof rep);
		} while (r < 0 && errno == EINTR);
		close(fds[i]);
		waitpid(pids[i], NULL, 0);
		if (r != (ssize_t)sizeof rep) {
			rep.res = PG_IO;
			memset(&rep.st, 0, sizeof rep.st);
			snprintf(rep.err, sizeof rep.err, "relay session %d ended without a report", i);
		}
		st_r->attempted += rep.st.attempted;
		st_r->sent += rep.st.sent;
		st_r->deferred += rep.st.deferred;
		st_r->held += rep.st.held;
		st_r->bytes += rep.st.bytes;
		if (rep.res != PG_OK && res == PG_OK) {
			res = rep.res;
			set_err(err_r, "%s", rep.err);
		}
	}
	/* a session that died (or failed to record its outcomes) left its
	 * claims `sending`: take them back now; a live relay elsewhere keeps
	 * its own */
	if (reopened)
		relay_reclaim(sp);
	return res;
}

void relay_reclaim(struct spool *sp)
{
	char *err = NULL;
	if (spool_reclaim(sp, &err) != SPOOL_OK) {
		LOG_ERR("relay status=reclaim-failed reason=\"%s\" note=\"the messages of a "
			"stopped relay stay sending until the spool is next opened alone\"", err);
		free(err);
		return;
	}
	const struct spool_recovery *r = spool_last_recovery(sp);
	if (r->sending_requeued == 0 && r->journal_sent == 0 && r->journal_rcpts == 0)
		return;
	LOG_WARN("relay status=reclaimed reason=\"a relay session stopped\" requeued=%u "
		 "journal_sent=%u journal_rcpts=%u",
		 r->sending_requeued, r->journal_sent, r->journal_rcpts);
	/* each message was named before the commit: relay_requeue_log */
}

void relay_requeue_log(const char *id, const char *account, int reclaim)
{
	LOG_WARN("id=%s account=%s status=requeued-after-crash note=\"%s; sent again, a "
		 "duplicate if the host had accepted it\"", id, account ? account : "",
		 reclaim ? "a relay session stopped while sending it"
			 : "the relay stopped while sending it");
}

enum pg_res relay_run_once(const struct conf *c, struct spool *sp,
			   const volatile sig_atomic_t *stop_flag, struct relay_stats *st_r,
			   char **err_r)
{
	enum pg_res res;
	char *err = NULL;
	memset(st_r, 0, sizeof *st_r);
	/* a relay process allocates and frees the same few sizes per message
	 * (claimed bodies, libesmtp's buffers): keep freed memory instead of
	 * giving it back to the kernel and faulting it in zeroed again (about
	 * a tenth of the relay's CPU on 10,000 x 2 KiB); it ends after the
	 * round (relay --once, the daemon's relay child), and no allocation
	 * grows with a message (bodies over 64 KiB are streamed) */
	(void)mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
	(void)mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
	if (c->smtp.max_sessions > 1)
		res = relay_parallel(c, sp, stop_flag, st_r, err_r);
	else
		res = relay_loop(c, sp, stop_flag, st_r, err_r);
	/* the round's sent bodies free their pages: the index shrinks back
	 * and the WAL is cut, so neither grows with the messages relayed */
	if (st_r->sent > 0 && spool_compact(sp, &err) != SPOOL_OK) {
		LOG_WARN("relay status=compact-failed reason=\"%s\"", err);
		free(err);
	}
	return res;
}
