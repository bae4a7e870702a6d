/*
 * pop3.c - POP3 client state machine (RFC 1939, RFC 2449, RFC 2595); see
 * pop3.h for the contract.
 *
 * Why it looks the way it does:
 *  - One linereader per session reads every byte from the server, so there
 *    is one place that bounds line length and one buffer to inspect for
 *    injected bytes after STLS.
 *  - pop3_set_state() is the only way to change state, so a debug log shows
 *    the whole life of a session.  Any transport or protocol error moves the
 *    session to FAILED: after that the reply stream is out of step and no
 *    further command may be sent.  A plain -ERR keeps the session usable.
 *  - Replies are classified once (reply_error()), from the RFC 2449
 *    response code when there is one, so retry decisions are consistent.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "linereader.h"
#include "log.h"
#include "net.h"
#include "pop3.h"
#include "sasl.h"

enum pop3_state {
	P3_INIT,
	P3_CONNECTED,     /* TCP (and implicit TLS) up, no greeting yet */
	P3_GREETED,       /* +OK greeting read */
	P3_STLS,          /* STLS sent, switching to TLS */
	P3_AUTHORIZATION, /* ready for USER/PASS, APOP or AUTH */
	P3_AUTH,          /* a login exchange is in progress */
	P3_TRANSACTION,   /* logged in */
	P3_QUIT,          /* QUIT sent */
	P3_CLOSED,        /* QUIT acknowledged: deletions committed */
	P3_FAILED,        /* out of step with the server; only close is allowed */
};

static const char *const state_names[] = {
	[P3_INIT] = "INIT",
	[P3_CONNECTED] = "CONNECTED",
	[P3_GREETED] = "GREETED",
	[P3_STLS] = "STLS",
	[P3_AUTHORIZATION] = "AUTHORIZATION",
	[P3_AUTH] = "AUTH",
	[P3_TRANSACTION] = "TRANSACTION",
	[P3_QUIT] = "QUIT",
	[P3_CLOSED] = "CLOSED",
	[P3_FAILED] = "FAILED",
};

struct pop3 {
	enum pop3_state state;
	char *host;
	int port;
	enum tls_mode tls;
	char *ca_file;
	int allow_plaintext;
	int want_pipelining;
	int timeout_ms;
	int tls_timeout_ms;
	char *fingerprint;
	int64_t deadline;      /* session_timeout, monotonic ms; 0: none */
	char *account;
	struct pop3_status *status;
	struct net *net;
	lr_read_fn io_read;    /* net_read, or the caller's */
	pop3_write_fn io_write;
	void *io_ctx;
	struct linereader *lr;
	struct pop3_capa capa;
	char *apop_ts;         /* the greeting's <timestamp>, if valid */
	int crlf;              /* the greeting ended in CRLF: strict line ends */
	int last_crlf;         /* the last line read_line returned ended in CRLF */
	unsigned int ndeleted; /* DELEs this session: message numbers stay valid */
	struct buf out;        /* queued commands, written by flush */
	struct { enum pop3_cmd cmd; unsigned int num; } fifo[POP3_PIPELINE_MAX];
	size_t fifo_head, fifo_len;
};

/* one status line, already checked and stripped of its line end */
struct reply {
	int ok;           /* +OK or -ERR */
	const char *text; /* after "+OK "/"-ERR ", inside the reader's buffer */
	size_t len;
};

static void pop3_set_state(struct pop3 *s, enum pop3_state st)
{
	if (s->state != st)
		LOG_DEBUG("pop3 account=%s state %s -> %s", s->account, state_names[s->state],
			  state_names[st]);
	s->state = st;
}

/* fail - the session can no longer be used; pass the result through */
static enum pg_res fail(struct pop3 *s, enum pg_res r)
{
	if (r != PG_OK)
		pop3_set_state(s, P3_FAILED);
	return r;
}

static void capa_reset(struct pop3_capa *c)
{
	free(c->sasl);
	free(c->implementation);
	memset(c, 0, sizeof *c);
	c->login_delay = -1;
	c->expire = -1;
}

/* io_write - everything, through the socket or the caller's callback */
static enum pg_res io_write(struct pop3 *s, const void *p, size_t len, char **err_r)
{
	if (s->net != NULL)
		return net_write(s->net, p, len, err_r);
	const char *c = p;
	while (len > 0) {
		ssize_t w = s->io_write(s->io_ctx, c, len, err_r);
		if (w <= 0) {
			if (w == 0 || err_r == NULL || *err_r == NULL)
				set_err(err_r, "write to %s:%d failed", s->host, s->port);
			return PG_TEMP;
		}
		c += w;
		len -= (size_t)w;
	}
	return PG_OK;
}

/* session_read - the line reader's source: checks the session deadline and
 * gives each read at most the time left of it */
static ssize_t session_read(void *ctx, void *buf, size_t len, char **err_r)
{
	struct pop3 *s = ctx;
	if (s->deadline != 0) {
		int64_t left = s->deadline - now_ms();
		if (left <= 0) {
			set_err(err_r, "session_timeout exceeded (the whole session took too long)");
			return -2;
		}
		if (s->net != NULL)
			net_set_timeout(s->net, left < s->timeout_ms ? (int)left : s->timeout_ms);
	}
	return s->io_read(s->io_ctx, buf, len, err_r);
}

/* send_cmd - one command, one write; `shown` is what the trace prints */
static enum pg_res send_cmd(struct pop3 *s, const char *cmd, const char *shown, char **err_r)
{
	LOG_DEBUG("pop3 account=%s > %s", s->account, shown != NULL ? shown : cmd);
	char *line = xasprintf("%s\r\n", cmd);
	enum pg_res r = io_write(s, line, strlen(line), err_r);
	/* the line may hold the password */
	explicit_bzero(line, strlen(line));
	free(line);
	return fail(s, r);
}

/* read_line - one complete, bounded line without its CRLF/LF */
static enum pg_res read_line(struct pop3 *s, const char **line_r, size_t *len_r,
			     const char *what, char **err_r)
{
	const char *p;
	size_t n;
	int complete;
	enum pg_res r = lr_read(s->lr, &p, &n, &complete, err_r);
	if (r != PG_OK) {
		char *e = *err_r;
		*err_r = NULL;
		set_err(err_r, "%s:%d: reading %s: %s", s->host, s->port, what, e);
		free(e);
		return fail(s, r);
	}
	if (!complete || n > POP3_REPLY_MAX) {
		set_err(err_r, "%s:%d: %s line longer than %d octets", s->host, s->port, what,
			POP3_REPLY_MAX);
		return fail(s, PG_PROTO);
	}
	n--; /* LF */
	s->last_crlf = n > 0 && p[n - 1] == '\r';
	if (s->last_crlf)
		n--;
	*line_r = p;
	*len_r = n;
	return PG_OK;
}

/* parse_status - a +OK/-ERR status line; anything else is PG_PROTO */
static enum pg_res parse_status(struct pop3 *s, const char *p, size_t n, struct reply *rep,
				const char *what, char **err_r)
{
	size_t skip;
	if (n >= 3 && memcmp(p, "+OK", 3) == 0 && (n == 3 || p[3] == ' ')) {
		rep->ok = 1;
		skip = 3;
	} else if (n >= 4 && memcmp(p, "-ERR", 4) == 0 && (n == 4 || p[4] == ' ')) {
		rep->ok = 0;
		skip = 4;
	} else {
		char *t = sanitize_for_log(p, n, 200);
		set_err(err_r, "%s:%d: unexpected reply to %s: %s", s->host, s->port, what, t);
		free(t);
		return fail(s, PG_PROTO);
	}
	if (skip < n)
		skip++;
	rep->text = p + skip;
	rep->len = n - skip;
	if (log_get_level() >= LOGL_DEBUG) {
		char *t = sanitize_for_log(p, n, POP3_REPLY_MAX);
		LOG_DEBUG("pop3 account=%s < %s", s->account, t);
		free(t);
	}
	return PG_OK;
}

/* read_status - read one status line */
static enum pg_res read_status(struct pop3 *s, struct reply *rep, const char *what,
			       char **err_r)
{
	const char *p;
	size_t n;
	enum pg_res r = read_line(s, &p, &n, what, err_r);
	if (r != PG_OK)
		return r;
	return parse_status(s, p, n, rep, what, err_r);
}

/* code_is - does the RFC 2449 code equal name or lie below it ("SYS/TEMP/x")? */
static int code_is(const char *code, size_t len, const char *name)
{
	size_t k = strlen(name);
	return len >= k && strncasecmp(code, name, k) == 0 && (len == k || code[k] == '/');
}

/* reply_class - the result class of a -ERR reply */
static enum pg_res reply_class(const struct reply *rep, enum pg_res dflt)
{
	if (rep->len < 2 || rep->text[0] != '[')
		return dflt;
	const char *end = memchr(rep->text, ']', rep->len);
	if (end == NULL)
		return dflt;
	const char *code = rep->text + 1;
	size_t len = (size_t)(end - code);
	if (code_is(code, len, "IN-USE") || code_is(code, len, "LOGIN-DELAY") ||
	    code_is(code, len, "SYS/TEMP"))
		return PG_TEMP;
	if (code_is(code, len, "AUTH"))
		return PG_AUTH;
	if (code_is(code, len, "SYS/PERM"))
		return PG_PERM;
	return dflt;
}

/* record_status - keep the -ERR's response code and text for the caller */
static void record_status(struct pop3 *s, const struct reply *rep, const char *text)
{
	if (s->status == NULL)
		return;
	s->status->code[0] = '\0';
	snprintf(s->status->text, sizeof s->status->text, "%s", text);
	const char *end = rep->len > 1 && rep->text[0] == '[' ?
			  memchr(rep->text, ']', rep->len) : NULL;
	if (end != NULL && (size_t)(end - rep->text) < sizeof s->status->code) {
		char *c = sanitize_for_log(rep->text + 1, (size_t)(end - rep->text) - 1,
					   sizeof s->status->code - 1);
		snprintf(s->status->code, sizeof s->status->code, "%s", c);
		free(c);
	}
}

/* reply_error - set *err_r from a -ERR reply and return its class */
static enum pg_res reply_error(struct pop3 *s, const struct reply *rep, const char *what,
			       enum pg_res dflt, char **err_r)
{
	char *t = sanitize_for_log(rep->text, rep->len, 400);
	set_err(err_r, "%s:%d: %s refused: -ERR %s", s->host, s->port, what, t);
	record_status(s, rep, t);
	free(t);
	return reply_class(rep, dflt);
}

/* command - send cmd and read its status; -ERR becomes an error of class
 * dflt (or the response code's) and leaves the session usable */
static enum pg_res command(struct pop3 *s, const char *cmd, const char *shown,
			   struct reply *rep, enum pg_res dflt, char **err_r)
{
	const char *what = shown != NULL ? shown : cmd;
	enum pg_res r = send_cmd(s, cmd, shown, err_r);
	if (r == PG_OK)
		r = read_status(s, rep, what, err_r);
	if (r == PG_OK && !rep->ok)
		r = reply_error(s, rep, what, dflt, err_r);
	return r;
}

/* require - refuse a call made in the wrong state */
static enum pg_res require(struct pop3 *s, enum pop3_state want, const char *what,
			   char **err_r)
{
	if (s->state == want)
		return PG_OK;
	if (s->state == P3_FAILED)
		set_err(err_r, "%s:%d: %s: session already failed", s->host, s->port, what);
	else
		set_err(err_r, "%s:%d: %s not allowed in state %s", s->host, s->port, what,
			state_names[s->state]);
	return PG_PERM;
}

/* parse_uint - strict decimal: digits only, no sign, no overflow past max */
static int parse_uint(const char *p, size_t n, uint64_t max, uint64_t *v_r)
{
	uint64_t v = 0;
	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		unsigned d = (unsigned)(p[i] - '0');
		/* d > max first: (max - d) would wrap (found by fuzz_reply) */
		if (d > max || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}

/* ---- multi-line replies ----------------------------------------------- */

typedef enum pg_res (*ml_line_fn)(struct pop3 *s, void *ctx, const char *p, size_t n,
				  char **err_r);

/* read_multiline - lines up to ".", dot-unstuffed, at most max_lines.
 * With a CRLF server (s->crlf) only a line after a CRLF is a protocol line
 * (the terminator, or dot-stuffed), and only "." CRLF ends the reply, as in
 * the message filter; a bare LF ends a line of data. */
static enum pg_res read_multiline(struct pop3 *s, const char *what, size_t max_lines,
				  ml_line_fn fn, void *ctx, char **err_r)
{
	size_t count = 0;
	int proto = 1; /* this line starts after a protocol line end */
	for (;;) {
		const char *p;
		size_t n;
		enum pg_res r = read_line(s, &p, &n, what, err_r);
		if (r != PG_OK)
			return r;
		if (proto && n > 0 && p[0] == '.') {
			if (n == 1 && (s->last_crlf || !s->crlf))
				return PG_OK;
			if (n > 1 || !s->crlf) {
				p++;
				n--;
			}
		}
		proto = s->last_crlf || !s->crlf;
		if (++count > max_lines) {
			set_err(err_r, "%s:%d: %s reply has more than %zu lines", s->host, s->port,
				what, max_lines);
			return fail(s, PG_PROTO);
		}
		r = fn(s, ctx, p, n, err_r);
		if (r != PG_OK)
			return fail(s, r);
	}
}

/* ---- CAPA ------------------------------------------------------------- */

/* capa_word - does the line start with keyword kw (then space or end)?
 * Sets *arg_r to the rest after the spaces. */
static int capa_word(const char *p, size_t n, const char *kw, const char **arg_r,
		     size_t *alen_r)
{
	size_t k = strlen(kw);
	if (n < k || strncasecmp(p, kw, k) != 0 || (n > k && p[k] != ' '))
		return 0;
	while (k < n && p[k] == ' ')
		k++;
	*arg_r = p + k;
	*alen_r = n - k;
	return 1;
}

/* capa_num - leading number of an argument ("900", "31 USER"); -1 if none */
static int capa_num(const char *a, size_t n)
{
	size_t k = 0;
	uint64_t v;
	while (k < n && a[k] >= '0' && a[k] <= '9')
		k++;
	if (parse_uint(a, k, 1000000000, &v) < 0)
		return -1;
	return (int)v;
}

static enum pg_res capa_line(struct pop3 *s, void *ctx, const char *p, size_t n,
			     char **err_r)
{
	struct pop3_capa *c = &s->capa;
	const char *a;
	size_t an;
	(void)ctx;
	if (log_get_level() >= LOGL_DEBUG) {
		char *t = sanitize_for_log(p, n, POP3_REPLY_MAX);
		LOG_DEBUG("pop3 account=%s < %s", s->account, t);
		free(t);
	}
	if (capa_word(p, n, "TOP", &a, &an))
		c->top = 1;
	else if (capa_word(p, n, "UIDL", &a, &an))
		c->uidl = 1;
	else if (capa_word(p, n, "USER", &a, &an))
		c->user = 1;
	else if (capa_word(p, n, "PIPELINING", &a, &an))
		c->pipelining = 1;
	else if (capa_word(p, n, "RESP-CODES", &a, &an))
		c->resp_codes = 1;
	else if (capa_word(p, n, "STLS", &a, &an))
		c->stls = 1;
	else if (capa_word(p, n, "LOGIN-DELAY", &a, &an))
		c->login_delay = capa_num(a, an);
	else if (capa_word(p, n, "EXPIRE", &a, &an))
		c->expire = (an >= 5 && strncasecmp(a, "NEVER", 5) == 0) ? -2 : capa_num(a, an);
	else if (capa_word(p, n, "SASL", &a, &an) && c->sasl == NULL)
		c->sasl = sanitize_for_log(a, an, 400);
	else if (capa_word(p, n, "IMPLEMENTATION", &a, &an) && c->implementation == NULL)
		c->implementation = sanitize_for_log(a, an, 200);
	return PG_OK;
}

/* do_capa - CAPA; -ERR just means the server predates RFC 2449 */
static enum pg_res do_capa(struct pop3 *s, char **err_r)
{
	struct reply rep;
	capa_reset(&s->capa);
	enum pg_res r = send_cmd(s, "CAPA", NULL, err_r);
	if (r == PG_OK)
		r = read_status(s, &rep, "CAPA", err_r);
	if (r != PG_OK || !rep.ok)
		return r;
	s->capa.have_capa = 1;
	return read_multiline(s, "CAPA", POP3_CAPA_MAX, capa_line, NULL, err_r);
}

/* ---- open ------------------------------------------------------------- */

static enum pg_res start_tls(struct pop3 *s, char **err_r)
{
	struct net_tls_params tp = { .servername = s->host, .ca_file = s->ca_file, .verify = 1,
				     .fingerprint = s->fingerprint,
				     .timeout_ms = s->tls_timeout_ms };
	enum pg_res r = net_start_tls(s->net, &tp, err_r);
	if (r == PG_OK)
		LOG_DEBUG("pop3 account=%s tls=%s", s->account, net_tls_info(s->net));
	return fail(s, r);
}

/* do_stls - RFC 2595 upgrade; never falls back to plaintext */
static enum pg_res do_stls(struct pop3 *s, char **err_r)
{
	struct reply rep;
	if (s->capa.have_capa && !s->capa.stls) {
		set_err(err_r, "%s:%d: server does not offer STLS", s->host, s->port);
		return fail(s, PG_PERM);
	}
	pop3_set_state(s, P3_STLS);
	enum pg_res r = command(s, "STLS", NULL, &rep, PG_PERM, err_r);
	if (r != PG_OK)
		return fail(s, r);
	if (lr_pending(s->lr) > 0) {
		set_err(err_r, "%s:%d: server sent data after STLS +OK (possible injection); "
			       "refusing", s->host, s->port);
		return fail(s, PG_PROTO);
	}
	r = start_tls(s, err_r);
	if (r != PG_OK)
		return r;
	lr_discard(s->lr);
	return do_capa(s, err_r); /* what we learned in plaintext is not trusted */
}

/* greeting - the server's first line must be +OK */
static enum pg_res greeting(struct pop3 *s, char **err_r)
{
	struct reply rep;
	enum pg_res r = read_status(s, &rep, "greeting", err_r);
	if (r != PG_OK)
		return r;
	if (!rep.ok)
		return fail(s, reply_error(s, &rep, "connection", PG_PERM, err_r));
	s->apop_ts = sasl_apop_timestamp(rep.text, rep.len);
	/* RFC 1939 servers end every line in CRLF: then a bare LF inside a
	 * multi-line reply is data.  A server whose greeting ends in a bare LF
	 * is read leniently (every LF ends a line), as before. */
	s->crlf = s->last_crlf;
	if (!s->crlf)
		LOG_INFO("account=%s server=%s:%d status=bare-lf-server action=\"every LF ends "
			 "a line (the greeting did not end in CRLF)\"", s->account, s->host, s->port);
	pop3_set_state(s, P3_GREETED);
	return PG_OK;
}

/* connect - a socket, or the caller's transport */
static enum pg_res connect_io(struct pop3 *s, const struct pop3_params *p, char **err_r)
{
	if (p->io_read != NULL) {
		if (s->tls != TLS_NONE || p->io_write == NULL) {
			set_err(err_r, "custom transport: no TLS, and both callbacks are needed");
			return PG_CONFIG;
		}
		s->io_read = p->io_read;
		s->io_write = p->io_write;
		s->io_ctx = p->io_ctx;
		return PG_OK;
	}
	enum pg_res r = net_connect(p->host, p->port, p->connect_timeout_ms, &s->net, err_r);
	if (r != PG_OK)
		return r;
	net_set_timeout(s->net, p->timeout_ms);
	s->io_read = net_read;
	s->io_ctx = s->net;
	return PG_OK;
}

static enum pg_res open_session(struct pop3 *s, const struct pop3_params *p, char **err_r)
{
	enum pg_res r = connect_io(s, p, err_r);
	if (r != PG_OK)
		return fail(s, r);
	s->lr = lr_new(LR_DEFAULT_MAX, session_read, s);
	pop3_set_state(s, P3_CONNECTED);
	if (s->tls == TLS_IMPLICIT && (r = start_tls(s, err_r)) != PG_OK)
		return r;
	if ((r = greeting(s, err_r)) != PG_OK)
		return r;
	if ((r = do_capa(s, err_r)) != PG_OK)
		return r;
	if (s->tls == TLS_STARTTLS && (r = do_stls(s, err_r)) != PG_OK)
		return r;
	pop3_set_state(s, P3_AUTHORIZATION);
	return PG_OK;
}

enum pg_res pop3_open(const struct pop3_params *p, struct pop3 **s_r, char **err_r)
{
	struct pop3 *s = xcalloc(1, sizeof *s);
	s->state = P3_INIT;
	s->host = xstrdup(p->host);
	s->port = p->port;
	s->tls = p->tls;
	s->ca_file = p->ca_file != NULL ? xstrdup(p->ca_file) : NULL;
	s->allow_plaintext = p->allow_plaintext;
	s->want_pipelining = p->pipelining;
	s->timeout_ms = p->timeout_ms;
	s->tls_timeout_ms = p->tls_timeout_ms;
	s->fingerprint = p->tls_fingerprint != NULL ? xstrdup(p->tls_fingerprint) : NULL;
	s->deadline = p->session_timeout_ms > 0 ? now_ms() + p->session_timeout_ms : 0;
	s->status = p->status;
	if (s->status != NULL)
		memset(s->status, 0, sizeof *s->status);
	s->account = xstrdup(p->account != NULL ? p->account : "-");
	buf_init(&s->out, 64 * 1024);
	capa_reset(&s->capa);
	enum pg_res r = open_session(s, p, err_r);
	if (r != PG_OK) {
		pop3_close(&s);
		return r;
	}
	*s_r = s;
	return PG_OK;
}

const struct pop3_capa *pop3_capa(const struct pop3 *s)
{
	return &s->capa;
}

const char *pop3_tls_info(const struct pop3 *s)
{
	return s->net != NULL ? net_tls_info(s->net) : NULL;
}

/* ---- login ------------------------------------------------------------ */

static int is_tls(const struct pop3 *s)
{
	return s->net != NULL && net_is_tls(s->net);
}

/* bad_arg - a command argument must not break the line (injection) */
static int bad_arg(const char *a)
{
	for (; *a != '\0'; a++)
		if (*a == '\r' || *a == '\n')
			return 1;
	return 0;
}

/* login_failed - prefix a refused login's error with the user name */
static enum pg_res login_failed(struct pop3 *s, const char *user, enum pg_res r, char **err_r)
{
	if (s->state != P3_FAILED) {
		char *e = *err_r;
		*err_r = NULL;
		set_err(err_r, "login as %s failed: %s", user, e);
		free(e);
		pop3_set_state(s, P3_AUTHORIZATION);
	}
	return r;
}

static enum pg_res user_pass(struct pop3 *s, const char *user, const char *pass, char **err_r)
{
	struct reply rep;
	char *cmd = xasprintf("USER %s", user);
	enum pg_res r = command(s, cmd, NULL, &rep, PG_AUTH, err_r);
	free(cmd);
	if (r != PG_OK)
		return r;
	cmd = xasprintf("PASS %s", pass);
	r = command(s, cmd, "PASS <hidden>", &rep, PG_AUTH, err_r);
	explicit_bzero(cmd, strlen(cmd));
	free(cmd);
	return r;
}

static enum pg_res apop(struct pop3 *s, const char *user, const char *pass, char **err_r)
{
	struct reply rep;
	char digest[33];
	if (s->apop_ts == NULL) {
		set_err(err_r, "%s:%d: APOP: the greeting has no valid <timestamp>", s->host, s->port);
		return PG_PERM;
	}
	sasl_apop_digest(s->apop_ts, pass, digest);
	char *cmd = xasprintf("APOP %s %s", user, digest);
	char *shown = xasprintf("APOP %s <hidden>", user);
	enum pg_res r = command(s, cmd, shown, &rep, PG_AUTH, err_r);
	free(cmd);
	free(shown);
	return r;
}

/* sasl_send - one continuation line (base64 of msg), never traced */
static enum pg_res sasl_send(struct pop3 *s, const char *m, size_t n, char **err_r)
{
	char *b = sasl_b64_encode(m, n);
	enum pg_res r = send_cmd(s, b, "<hidden>", err_r);
	sasl_wipe_free(b, strlen(b));
	return r;
}

/* sasl_cancel - "*" after a challenge we cannot answer; the server's -ERR
 * follows and keeps the session in step */
static enum pg_res sasl_cancel(struct pop3 *s, enum pg_res why, char **err_r)
{
	struct reply rep;
	char *e = NULL;
	enum pg_res r = send_cmd(s, "*", NULL, &e);
	if (r == PG_OK)
		r = read_status(s, &rep, "AUTH cancel", &e);
	free(e);
	if (r != PG_OK)
		return r;
	return why;
}

/* sasl_start - "AUTH MECH [initial-response]" (RFC 5034: inline only if the
 * command fits in 255 octets; else the initial response waits for "+ ") */
static enum pg_res sasl_start(struct pop3 *s, struct sasl *sa, const char *mech,
			      char **held_r, size_t *heldlen_r, char **err_r)
{
	char *cmd = NULL, *m = NULL;
	size_t n = 0;
	enum pg_res r;
	if (sasl_has_initial(sa)) {
		if ((r = sasl_step(sa, NULL, 0, &m, &n, err_r)) != PG_OK)
			return r;
		char *b = sasl_b64_encode(m, n);
		cmd = xasprintf("AUTH %s %s", mech, n == 0 ? "=" : b);
		sasl_wipe_free(b, strlen(b));
		if (strlen(cmd) + 2 > 255) {
			sasl_wipe_free(cmd, strlen(cmd));
			cmd = NULL;
			*held_r = m;
			*heldlen_r = n;
			m = NULL;
		}
	}
	if (cmd == NULL)
		cmd = xasprintf("AUTH %s", mech);
	char *shown = xasprintf("AUTH %s%s", mech, strchr(cmd + 5, ' ') ? " <hidden>" : "");
	r = send_cmd(s, cmd, shown, err_r);
	free(shown);
	sasl_wipe_free(cmd, strlen(cmd));
	sasl_wipe_free(m, n);
	return r;
}

/* sasl_round - answer one "+ challenge" line */
static enum pg_res sasl_round(struct pop3 *s, struct sasl *sa, const char *p, size_t n,
			      char **held, size_t heldlen, char **err_r)
{
	unsigned char *chal = NULL;
	size_t clen = 0;
	char *m = NULL;
	size_t mlen = 0;
	size_t skip = n > 1 && p[1] == ' ' ? 2 : 1;
	if (sasl_b64_decode(p + skip, n - skip, &chal, &clen) < 0) {
		set_err(err_r, "%s:%d: AUTH: challenge is not base64", s->host, s->port);
		return sasl_cancel(s, PG_PROTO, err_r);
	}
	enum pg_res r = PG_OK;
	if (*held != NULL) {
		m = *held;
		mlen = heldlen;
		*held = NULL;
	} else {
		r = sasl_step(sa, chal, clen, &m, &mlen, err_r);
	}
	free(chal);
	if (r != PG_OK)
		return sasl_cancel(s, r, err_r);
	r = sasl_send(s, m, mlen, err_r);
	sasl_wipe_free(m, mlen);
	return r;
}

/* sasl_auth - one SASL exchange (RFC 5034) */
static enum pg_res sasl_auth(struct pop3 *s, enum sasl_mech mech, const char *user,
			     const char *secret, char **err_r)
{
	struct sasl *sa = sasl_new(mech, user, secret, s->host, s->port);
	char *held = NULL;
	size_t heldlen = 0;
	const char *name = sasl_mech_name(mech);
	enum pg_res r = sasl_start(s, sa, name, &held, &heldlen, err_r);
	for (int round = 0; r == PG_OK; round++) {
		const char *p;
		size_t n;
		struct reply rep;
		if ((r = read_line(s, &p, &n, "AUTH", err_r)) != PG_OK)
			break;
		if (n >= 1 && p[0] == '+' && (n == 1 || p[1] == ' ') && round < POP3_SASL_ROUNDS) {
			LOG_DEBUG("pop3 account=%s < +%s", s->account, n > 1 ? " <challenge>" : "");
			r = sasl_round(s, sa, p, n, &held, heldlen, err_r);
			continue;
		}
		/* not a challenge: it must be the final status */
		r = parse_status(s, p, n, &rep, "AUTH", err_r);
		if (r == PG_OK && !rep.ok)
			r = reply_error(s, &rep, name, PG_AUTH, err_r);
		else if (r == PG_OK && !sasl_complete(sa)) {
			set_err(err_r, "%s:%d: %s: server accepted before the exchange was complete "
				"(server not authenticated)", s->host, s->port, name);
			r = fail(s, PG_PROTO);
		}
		break;
	}
	sasl_wipe_free(held, heldlen);
	sasl_free(&sa);
	return r;
}

/* mechanism table, strongest first (the order auto picks in) */
static const struct mech {
	enum conf_auth auth;
	const char *name;   /* SASL name, NULL for USER and APOP */
	int plain_equiv;    /* reveals the password to an eavesdropper */
	int in_auto;
} mechs[] = {
	{ AUTH_SCRAM_SHA256, "SCRAM-SHA-256", 0, 1 },
	{ AUTH_SCRAM_SHA1, "SCRAM-SHA-1", 0, 1 },
	{ AUTH_CRAM_MD5, "CRAM-MD5", 0, 1 },
	{ AUTH_APOP, NULL, 1, 1 }, /* MD5 of a greeting: crackable offline */
	{ AUTH_PLAIN, "PLAIN", 1, 1 },
	{ AUTH_LOGIN, "LOGIN", 1, 1 },
	{ AUTH_USER, NULL, 1, 1 },
	{ AUTH_XOAUTH2, "XOAUTH2", 0, 0 },
	{ AUTH_OAUTHBEARER, "OAUTHBEARER", 0, 0 },
};

/* offered - does the server announce the mechanism? */
static int offered(const struct pop3 *s, const struct mech *m)
{
	if (m->auth == AUTH_USER)
		return !s->capa.have_capa || s->capa.user;
	if (m->auth == AUTH_APOP)
		return s->apop_ts != NULL;
	const char *l = s->capa.sasl;
	size_t k = strlen(m->name);
	while (l != NULL && *l != '\0') {
		if (strncasecmp(l, m->name, k) == 0 && (l[k] == ' ' || l[k] == '\0'))
			return 1;
		l = strchr(l, ' ');
		if (l != NULL)
			l++;
	}
	return 0;
}

/* pick - the mechanism to use (from mechs[from] on), or an error saying
 * why there is none */
static enum pg_res pick(struct pop3 *s, enum conf_auth want, size_t from,
			const struct mech **m_r, char **err_r)
{
	int blocked = 0;
	for (size_t i = from; i < sizeof mechs / sizeof *mechs; i++) {
		const struct mech *m = &mechs[i];
		if (want != AUTH_AUTO ? m->auth != want : !m->in_auto)
			continue;
		if (want == AUTH_AUTO && !offered(s, m))
			continue;
		/* an explicit SASL mechanism missing from the server's CAPA SASL
		 * list is a configuration mistake, not a wrong password: say so
		 * (exit 78) instead of sending it and being refused (which holds
		 * the account as if the password were wrong).  A server that
		 * lists no SASL line at all may still take it: tried. */
		if (want != AUTH_AUTO && m->name != NULL && s->capa.have_capa && s->capa.sasl != NULL &&
		    !offered(s, m)) {
			set_err(err_r, "%s:%d: the server does not offer %s (it offers: %s%s%s); "
				"change option 'auth'", s->host, s->port, m->name,
				s->capa.sasl,
				s->capa.user ? ", USER" : "", s->apop_ts ? ", APOP" : "");
			return PG_CONFIG;
		}
		if (m->plain_equiv && !is_tls(s) && !s->allow_plaintext) {
			blocked = 1;
			continue;
		}
		*m_r = m;
		return PG_OK;
	}
	if (blocked) {
		set_err(err_r, "refusing to send the password over an unencrypted connection to "
			"%s:%d (set allow_plaintext = true to allow it)", s->host, s->port);
		return PG_CONFIG;
	}
	set_err(err_r, "%s:%d: no usable authentication mechanism (server offers: %s%s)",
		s->host, s->port, s->capa.sasl ? s->capa.sasl : "no SASL",
		s->apop_ts ? ", APOP" : "");
	return PG_PERM;
}

static enum pg_res do_login(struct pop3 *s, const struct mech *m, const char *user,
			    const char *secret, char **err_r)
{
	pop3_set_state(s, P3_AUTH);
	switch (m->auth) {
	case AUTH_USER:
		return user_pass(s, user, secret, err_r);
	case AUTH_APOP:
		return apop(s, user, secret, err_r);
	case AUTH_PLAIN:
		return sasl_auth(s, SASL_PLAIN, user, secret, err_r);
	case AUTH_LOGIN:
		return sasl_auth(s, SASL_LOGIN, user, secret, err_r);
	case AUTH_CRAM_MD5:
		return sasl_auth(s, SASL_CRAM_MD5, user, secret, err_r);
	case AUTH_SCRAM_SHA1:
		return sasl_auth(s, SASL_SCRAM_SHA1, user, secret, err_r);
	case AUTH_SCRAM_SHA256:
		return sasl_auth(s, SASL_SCRAM_SHA256, user, secret, err_r);
	case AUTH_XOAUTH2:
		return sasl_auth(s, SASL_XOAUTH2, user, secret, err_r);
	default:
		return sasl_auth(s, SASL_OAUTHBEARER, user, secret, err_r);
	}
}

static const char *mech_name(const struct mech *m)
{
	return m->name != NULL ? m->name : m->auth == AUTH_APOP ? "APOP" : "USER";
}

/* fallback - auth = auto, and the server refused a mechanism it offered:
 * the next acceptable one, once (a server may announce APOP or a SASL
 * mechanism it cannot do for this user, e.g. GNU Mailutils pop3d's APOP
 * timestamp with no APOP secret).  Only a refusal of the login (PG_AUTH)
 * with the session still in step falls back; NULL: none. */
static const struct mech *fallback(struct pop3 *s, enum conf_auth want, const struct mech *m,
				   enum pg_res r, int tries)
{
	const struct mech *next = NULL;
	char *e = NULL;
	if (want != AUTH_AUTO || r != PG_AUTH || tries > 1 || s->state == P3_FAILED)
		return NULL;
	if (pick(s, want, (size_t)(m - mechs) + 1, &next, &e) != PG_OK)
		next = NULL;
	free(e);
	return next;
}

enum pg_res pop3_auth(struct pop3 *s, enum conf_auth want, const char *user,
		      const char *secret, const char **used_r, char **err_r)
{
	const struct mech *m = NULL;
	char tried[64] = "";
	int tries = 0;
	enum pg_res r = require(s, P3_AUTHORIZATION, "login", err_r);
	if (r != PG_OK)
		return r;
	if (bad_arg(user) || bad_arg(secret) || user[0] == '\0' || strchr(user, ' ') != NULL) {
		set_err(err_r, "%s:%d: user name is empty or has a space or line break, or the "
			"password has a line break", s->host, s->port);
		return PG_CONFIG;
	}
	if ((r = pick(s, want, 0, &m, err_r)) != PG_OK)
		return r;
	for (;;) {
		size_t tl = strlen(tried);
		snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? "," : "", mech_name(m));
		tries++;
		LOG_DEBUG("pop3 account=%s auth=%s", s->account, conf_auth_name(m->auth));
		r = do_login(s, m, user, secret, err_r);
		if (r == PG_OK)
			break;
		r = login_failed(s, user, r, err_r);
		const struct mech *next = fallback(s, want, m, r, tries);
		if (next == NULL)
			break;
		char *why = sanitize_for_log(*err_r, strlen(*err_r), 300);
		LOG_WARN("account=%s status=auth-fallback refused=%s next=%s reason=\"%s\"",
			 s->account, mech_name(m), mech_name(next), why);
		free(why);
		free(*err_r);
		*err_r = NULL;
		m = next;
	}
	if (r != PG_OK) {
		if (want == AUTH_AUTO) {
			char *e = *err_r;
			*err_r = NULL;
			set_err(err_r, "%s (methods_tried=%s)", e, tried);
			free(e);
		}
		return r;
	}
	if (tries > 1)
		LOG_INFO("account=%s status=auth-ok auth=%s methods_tried=%s", s->account,
			 mech_name(m), tried);
	if (used_r != NULL)
		*used_r = mech_name(m);
	pop3_set_state(s, P3_TRANSACTION);
	return PG_OK;
}

enum pg_res pop3_login(struct pop3 *s, const char *user, const char *pass, char **err_r)
{
	return pop3_auth(s, AUTH_USER, user, pass, NULL, err_r);
}

/* ---- transaction ------------------------------------------------------ */

/* split_num - "num rest": num strictly parsed, one space, rest non-empty */
static int split_num(const char *p, size_t n, uint64_t max, uint64_t *num_r,
		     const char **rest_r, size_t *rlen_r)
{
	const char *sp = memchr(p, ' ', n);
	if (sp == NULL || parse_uint(p, (size_t)(sp - p), max, num_r) < 0 || *num_r == 0)
		return -1;
	*rest_r = sp + 1;
	*rlen_r = n - (size_t)(sp + 1 - p);
	return *rlen_r > 0 ? 0 : -1;
}

/* leading_uint - a number followed by end or space (RFC 1939 allows more
 * information after the size in STAT and LIST replies) */
static int leading_uint(const char *p, size_t n, uint64_t *v_r)
{
	const char *sp = memchr(p, ' ', n);
	size_t k = sp != NULL ? (size_t)(sp - p) : n;
	return parse_uint(p, k, UINT64_MAX, v_r);
}

enum pg_res pop3_stat(struct pop3 *s, unsigned int *count_r, uint64_t *octets_r,
		      char **err_r)
{
	struct reply rep;
	enum pg_res r = require(s, P3_TRANSACTION, "STAT", err_r);
	if (r == PG_OK)
		r = command(s, "STAT", NULL, &rep, PG_PERM, err_r);
	if (r != PG_OK)
		return r;
	uint64_t count, octets;
	const char *sp = memchr(rep.text, ' ', rep.len);
	if (sp == NULL || parse_uint(rep.text, (size_t)(sp - rep.text), UINT32_MAX, &count) < 0 ||
	    leading_uint(sp + 1, rep.len - (size_t)(sp + 1 - rep.text), &octets) < 0) {
		char *t = sanitize_for_log(rep.text, rep.len, 200);
		set_err(err_r, "%s:%d: malformed STAT reply: %s", s->host, s->port, t);
		free(t);
		return fail(s, PG_PROTO);
	}
	*count_r = (unsigned int)count;
	*octets_r = octets;
	return PG_OK;
}

void pop3_msginfo_free(struct pop3_msginfo **list, size_t n)
{
	if (list == NULL || *list == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*list)[i].uidl);
	free(*list);
	*list = NULL;
}

/* scan state shared by the LIST and UIDL line callbacks */
struct scan {
	unsigned int bound;     /* highest valid message number */
	uint32_t *pos;          /* message number -> index+1 in list, 0 = none */
	struct pop3_msginfo *list;
	size_t n, cap;
	size_t nuidl;
};

static enum pg_res scan_bad(struct pop3 *s, const char *what, const char *p, size_t n,
			    char **err_r)
{
	char *t = sanitize_for_log(p, n, 200);
	set_err(err_r, "%s:%d: bad %s line: %s", s->host, s->port, what, t);
	free(t);
	return PG_PROTO;
}

static enum pg_res list_line(struct pop3 *s, void *ctx, const char *p, size_t n,
			     char **err_r)
{
	struct scan *sc = ctx;
	uint64_t num, size;
	const char *rest;
	size_t rlen;
	if (split_num(p, n, sc->bound, &num, &rest, &rlen) < 0 ||
	    leading_uint(rest, rlen, &size) < 0 || sc->pos[num] != 0)
		return scan_bad(s, "LIST", p, n, err_r);
	if (sc->n == sc->cap) {
		sc->cap = sc->cap ? sc->cap * 2 : 64;
		sc->list = xrealloc(sc->list, sc->cap * sizeof *sc->list);
	}
	sc->list[sc->n] = (struct pop3_msginfo){ .num = (unsigned int)num, .size = size };
	sc->pos[num] = (uint32_t)++sc->n;
	return PG_OK;
}

static enum pg_res uidl_line(struct pop3 *s, void *ctx, const char *p, size_t n,
			     char **err_r)
{
	struct scan *sc = ctx;
	uint64_t num;
	const char *u;
	size_t ulen;
	if (split_num(p, n, sc->bound, &num, &u, &ulen) < 0 || ulen > 70)
		return scan_bad(s, "UIDL", p, n, err_r);
	for (size_t i = 0; i < ulen; i++)
		if (u[i] < 0x21 || u[i] > 0x7e)
			return scan_bad(s, "UIDL", p, n, err_r);
	if (sc->pos[num] == 0 || sc->list[sc->pos[num] - 1].uidl != NULL)
		return scan_bad(s, "UIDL (message not in LIST, or listed twice)", p, n, err_r);
	sc->list[sc->pos[num] - 1].uidl = xstrndup(u, ulen);
	sc->nuidl++;
	return PG_OK;
}

static int cmp_num(const void *a, const void *b)
{
	const struct pop3_msginfo *x = a, *y = b;
	return x->num < y->num ? -1 : x->num > y->num;
}

static int cmp_uidl(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* check_uidls - every message has a UIDL and no two share one */
static enum pg_res check_uidls(struct pop3 *s, struct scan *sc, char **err_r)
{
	if (sc->nuidl != sc->n) {
		set_err(err_r, "%s:%d: UIDL lists %zu of %zu messages", s->host, s->port,
			sc->nuidl, sc->n);
		return PG_PROTO;
	}
	enum pg_res r = PG_OK;
	char **v = xcalloc(sc->n, sizeof *v);
	for (size_t i = 0; i < sc->n; i++)
		v[i] = sc->list[i].uidl;
	if (sc->n > 1)
		qsort(v, sc->n, sizeof *v, cmp_uidl);
	for (size_t i = 1; i < sc->n && r == PG_OK; i++) {
		if (strcmp(v[i - 1], v[i]) == 0) {
			set_err(err_r, "%s:%d: duplicate UIDL %s", s->host, s->port, v[i]);
			r = PG_PROTO;
		}
	}
	free(v);
	return r;
}

/* scan_lists - LIST, then UIDL, into sc */
static enum pg_res scan_lists(struct pop3 *s, struct scan *sc, char **err_r)
{
	struct reply rep;
	enum pg_res r = command(s, "LIST", NULL, &rep, PG_PERM, err_r);
	if (r == PG_OK)
		r = read_multiline(s, "LIST", POP3_LIST_MAX, list_line, sc, err_r);
	if (r != PG_OK)
		return r;
	if (sc->n > 1) /* qsort(NULL, 0) is undefined (found by fuzz_session) */
		qsort(sc->list, sc->n, sizeof *sc->list, cmp_num);
	for (size_t i = 0; i < sc->n; i++)
		sc->pos[sc->list[i].num] = (uint32_t)(i + 1);
	r = send_cmd(s, "UIDL", NULL, err_r);
	if (r == PG_OK)
		r = read_status(s, &rep, "UIDL", err_r);
	if (r != PG_OK || !rep.ok)
		return r; /* -ERR: no UIDL support; uidl stays NULL */
	r = read_multiline(s, "UIDL", POP3_LIST_MAX, uidl_line, sc, err_r);
	if (r == PG_OK)
		r = fail(s, check_uidls(s, sc, err_r));
	return r;
}

enum pg_res pop3_scan(struct pop3 *s, struct pop3_msginfo **list_r, size_t *n_r,
		      char **err_r)
{
	unsigned int count;
	uint64_t octets;
	enum pg_res r = pop3_stat(s, &count, &octets, err_r);
	if (r != PG_OK)
		return r;
	if (count > POP3_LIST_MAX) {
		set_err(err_r, "%s:%d: mailbox has %u messages (limit %d)", s->host, s->port,
			count, POP3_LIST_MAX);
		return PG_PERM;
	}
	/* deleted messages keep their numbers but leave STAT's count */
	struct scan sc = { .bound = count + s->ndeleted };
	sc.pos = xcalloc((size_t)sc.bound + 1, sizeof *sc.pos);
	r = scan_lists(s, &sc, err_r);
	free(sc.pos);
	if (r != PG_OK) {
		pop3_msginfo_free(&sc.list, sc.n);
		return r;
	}
	LOG_DEBUG("pop3 account=%s scan messages=%zu uidl=%s", s->account, sc.n,
		  sc.nuidl ? "yes" : "no");
	*list_r = sc.list;
	*n_r = sc.n;
	return PG_OK;
}

/* ---- pipelined RETR and DELE --------------------------------------- */

int pop3_pipelining(const struct pop3 *s)
{
	return s->want_pipelining && s->capa.pipelining;
}

size_t pop3_window(const struct pop3 *s)
{
	return pop3_pipelining(s) ? POP3_PIPELINE_MAX : 1;
}

size_t pop3_outstanding(const struct pop3 *s)
{
	return s->fifo_len;
}

int pop3_failed(const struct pop3 *s)
{
	return s->state == P3_FAILED;
}

enum pg_res pop3_queue(struct pop3 *s, enum pop3_cmd cmd, unsigned int num, char **err_r)
{
	enum pg_res r = require(s, P3_TRANSACTION, cmd == P3C_RETR ? "RETR" : "DELE", err_r);
	if (r != PG_OK)
		return r;
	if (s->fifo_len >= pop3_window(s)) {
		set_err(err_r, "%s:%d: %zu commands already outstanding", s->host, s->port,
			s->fifo_len);
		return PG_PERM;
	}
	if (buf_printf(&s->out, "%s %u\r\n", cmd == P3C_RETR ? "RETR" : "DELE", num) < 0) {
		set_err(err_r, "%s:%d: command batch too large", s->host, s->port);
		return PG_PERM;
	}
	LOG_DEBUG("pop3 account=%s > %s %u", s->account, cmd == P3C_RETR ? "RETR" : "DELE", num);
	size_t tail = (s->fifo_head + s->fifo_len) % POP3_PIPELINE_MAX;
	s->fifo[tail].cmd = cmd;
	s->fifo[tail].num = num;
	s->fifo_len++;
	return PG_OK;
}

enum pg_res pop3_flush(struct pop3 *s, char **err_r)
{
	if (s->out.len == 0)
		return PG_OK;
	enum pg_res r = io_write(s, s->out.data, s->out.len, err_r);
	buf_reset(&s->out);
	return fail(s, r);
}

enum pop3_cmd pop3_next(const struct pop3 *s, unsigned int *num_r)
{
	if (s->fifo_len == 0)
		return P3C_NONE;
	if (num_r != NULL)
		*num_r = s->fifo[s->fifo_head].num;
	return s->fifo[s->fifo_head].cmd;
}

/* reply_start - flush, pop the oldest command (it must be `cmd`), read its
 * status line */
static enum pg_res reply_start(struct pop3 *s, enum pop3_cmd cmd, struct reply *rep,
			       unsigned int *num_r, char *what, size_t wlen, char **err_r)
{
	if (s->state == P3_FAILED || pop3_next(s, num_r) != cmd) {
		set_err(err_r, "%s:%d: no %s reply is expected", s->host, s->port,
			cmd == P3C_RETR ? "RETR" : "DELE");
		return PG_PERM;
	}
	enum pg_res r = pop3_flush(s, err_r);
	if (r != PG_OK)
		return r;
	s->fifo_head = (s->fifo_head + 1) % POP3_PIPELINE_MAX;
	s->fifo_len--;
	snprintf(what, wlen, "%s %u", cmd == P3C_RETR ? "RETR" : "DELE", *num_r);
	return read_status(s, rep, what, err_r);
}

/* retr_body - stream the multi-line body into the filter.  Lines of any
 * length are streamed (the reader hands out pieces; memory stays bounded).
 * Past `limit` octets (0: none) the rest is read to the terminator and
 * discarded, so the session stays in step (*over_r = 1); a reply that goes
 * on for POP3_DRAIN_MAX octets beyond the limit is given up (session out of
 * step). */
static enum pg_res retr_body(struct pop3 *s, unsigned int num, struct msgfilter *mf,
			     uint64_t limit, int *over_r, char **err_r)
{
	uint64_t got = 0;
	int done = 0;
	*over_r = 0;
	while (!done) {
		const char *p;
		size_t n;
		int complete;
		enum pg_res r = lr_read(s->lr, &p, &n, &complete, err_r);
		if (r != PG_OK) {
			char *e = *err_r;
			*err_r = NULL;
			set_err(err_r, "%s:%d: connection lost during RETR %u after %llu octets: %s",
				s->host, s->port, num, (unsigned long long)got, e);
			free(e);
			return fail(s, r);
		}
		got += n;
		if (limit > 0 && got > limit && !*over_r) {
			*over_r = 1;
			mf_discard(mf); /* nothing more reaches the spool */
		}
		if (*over_r && got - limit > POP3_DRAIN_MAX) {
			set_err(err_r, "%s:%d: RETR %u: gave up after %llu octets (limit %llu; the "
				"reply did not end)", s->host, s->port, num, (unsigned long long)got,
				(unsigned long long)limit);
			return fail(s, PG_PROTO);
		}
		r = mf_feed(mf, p, n, complete, &done, err_r);
		if (r != PG_OK)
			return fail(s, r); /* the rest of the body is still unread */
	}
	if (*over_r) {
		set_err(err_r, "%s:%d: RETR %u: the message has %llu octets, over the limit of "
			"%llu (read to its end and discarded)", s->host, s->port, num,
			(unsigned long long)got, (unsigned long long)limit);
		return PG_PERM;
	}
	return PG_OK;
}

enum pg_res pop3_read_retr(struct pop3 *s, struct msgfilter *mf, uint64_t limit,
			   int *refused_r, char **err_r)
{
	struct reply rep;
	unsigned int num = 0;
	char what[32];
	int over = 0;
	if (refused_r != NULL)
		*refused_r = 0;
	enum pg_res r = reply_start(s, P3C_RETR, &rep, &num, what, sizeof what, err_r);
	if (r != PG_OK)
		return r;
	if (!rep.ok) {
		if (refused_r != NULL)
			*refused_r = POP3_RETR_REFUSED;
		return reply_error(s, &rep, what, PG_PERM, err_r);
	}
	mf_set_crlf(mf, s->crlf);
	r = retr_body(s, num, mf, limit, &over, err_r);
	if (over && r == PG_PERM && refused_r != NULL)
		*refused_r = POP3_RETR_TOO_LARGE;
	return r;
}

enum pg_res pop3_read_dele(struct pop3 *s, char **err_r)
{
	struct reply rep;
	unsigned int num = 0;
	char what[32];
	enum pg_res r = reply_start(s, P3C_DELE, &rep, &num, what, sizeof what, err_r);
	if (r != PG_OK)
		return r;
	if (!rep.ok)
		return reply_error(s, &rep, what, PG_PERM, err_r);
	s->ndeleted++;
	return PG_OK;
}

enum pg_res pop3_retr(struct pop3 *s, unsigned int num, struct msgfilter *mf, char **err_r)
{
	enum pg_res r = pop3_queue(s, P3C_RETR, num, err_r);
	return r != PG_OK ? r : pop3_read_retr(s, mf, 0, NULL, err_r);
}

enum pg_res pop3_dele(struct pop3 *s, unsigned int num, char **err_r)
{
	enum pg_res r = pop3_queue(s, P3C_DELE, num, err_r);
	return r != PG_OK ? r : pop3_read_dele(s, err_r);
}

enum pg_res pop3_quit(struct pop3 *s, char **err_r)
{
	struct reply rep;
	if (s->state != P3_TRANSACTION && s->state != P3_AUTHORIZATION)
		return require(s, P3_TRANSACTION, "QUIT", err_r);
	if (s->fifo_len > 0) {
		set_err(err_r, "%s:%d: QUIT with %zu replies unread", s->host, s->port, s->fifo_len);
		return PG_PERM;
	}
	pop3_set_state(s, P3_QUIT);
	enum pg_res r = command(s, "QUIT", NULL, &rep, PG_PERM, err_r);
	if (r != PG_OK)
		return fail(s, r);
	pop3_set_state(s, P3_CLOSED);
	return PG_OK;
}

void pop3_close(struct pop3 **sp)
{
	if (sp == NULL || *sp == NULL)
		return;
	struct pop3 *s = *sp;
	if (s->state != P3_CLOSED && s->state != P3_FAILED)
		pop3_set_state(s, P3_CLOSED);
	lr_free(&s->lr);
	net_close(&s->net);
	capa_reset(&s->capa);
	buf_free(&s->out);
	free(s->apop_ts);
	free(s->fingerprint);
	free(s->host);
	free(s->ca_file);
	free(s->account);
	free(s);
	*sp = NULL;
}
