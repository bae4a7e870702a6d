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

enum pop3_state {
	P3_INIT,
	P3_CONNECTED,     /* TCP (and implicit TLS) up, no greeting yet */
	P3_GREETED,       /* +OK greeting read */
	P3_STLS,          /* STLS sent, switching to TLS */
	P3_AUTHORIZATION, /* ready for USER/PASS */
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
	int timeout_ms;
	char *account;
	struct net *net;
	struct linereader *lr;
	struct pop3_capa capa;
	unsigned int ndeleted; /* DELEs this session: message numbers stay valid */
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

/* send_cmd - one command, one write; `shown` is what the trace prints */
static enum pg_res send_cmd(struct pop3 *s, const char *cmd, const char *shown, char **err_r)
{
	LOG_DEBUG("pop3 account=%s > %s", s->account, shown != NULL ? shown : cmd);
	char *line = xasprintf("%s\r\n", cmd);
	enum pg_res r = net_write(s->net, line, strlen(line), err_r);
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
	if (n > 0 && p[n - 1] == '\r')
		n--;
	*line_r = p;
	*len_r = n;
	return PG_OK;
}

/* read_status - a +OK/-ERR status line; anything else is PG_PROTO */
static enum pg_res read_status(struct pop3 *s, struct reply *rep, const char *what,
			       char **err_r)
{
	const char *p;
	size_t n;
	enum pg_res r = read_line(s, &p, &n, what, err_r);
	if (r != PG_OK)
		return r;
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

/* reply_error - set *err_r from a -ERR reply and return its class */
static enum pg_res reply_error(struct pop3 *s, const struct reply *rep, const char *what,
			       enum pg_res dflt, char **err_r)
{
	char *t = sanitize_for_log(rep->text, rep->len, 400);
	set_err(err_r, "%s:%d: %s refused: -ERR %s", s->host, s->port, what, t);
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
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}

/* ---- multi-line replies ----------------------------------------------- */

typedef enum pg_res (*ml_line_fn)(struct pop3 *s, void *ctx, const char *p, size_t n,
				  char **err_r);

/* read_multiline - lines up to ".", dot-unstuffed, at most max_lines */
static enum pg_res read_multiline(struct pop3 *s, const char *what, size_t max_lines,
				  ml_line_fn fn, void *ctx, char **err_r)
{
	size_t count = 0;
	for (;;) {
		const char *p;
		size_t n;
		enum pg_res r = read_line(s, &p, &n, what, err_r);
		if (r != PG_OK)
			return r;
		if (n > 0 && p[0] == '.') {
			if (n == 1)
				return PG_OK;
			p++;
			n--;
		}
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
	struct net_tls_params tp = { .servername = s->host, .ca_file = s->ca_file, .verify = 1 };
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
	pop3_set_state(s, P3_GREETED);
	return PG_OK;
}

static enum pg_res open_session(struct pop3 *s, const struct pop3_params *p, char **err_r)
{
	enum pg_res r = net_connect(p->host, p->port, p->connect_timeout_ms, &s->net, err_r);
	if (r != PG_OK)
		return fail(s, r);
	net_set_timeout(s->net, p->timeout_ms);
	s->lr = lr_new(LR_DEFAULT_MAX, net_read, s->net);
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
	s->timeout_ms = p->timeout_ms;
	s->account = xstrdup(p->account != NULL ? p->account : "-");
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

/* bad_arg - a command argument must not break the line (injection) */
static int bad_arg(const char *a)
{
	for (; *a != '\0'; a++)
		if (*a == '\r' || *a == '\n')
			return 1;
	return 0;
}

enum pg_res pop3_login(struct pop3 *s, const char *user, const char *pass, char **err_r)
{
	struct reply rep;
	enum pg_res r = require(s, P3_AUTHORIZATION, "login", err_r);
	if (r != PG_OK)
		return r;
	if (!net_is_tls(s->net) && !s->allow_plaintext) {
		set_err(err_r, "refusing to send USER/PASS over an unencrypted connection to "
			       "%s:%d (set allow_plaintext = true to allow it)", s->host, s->port);
		return PG_CONFIG;
	}
	if (bad_arg(user) || bad_arg(pass) || user[0] == '\0') {
		set_err(err_r, "%s:%d: user name or password is empty or contains a line break",
			s->host, s->port);
		return PG_CONFIG;
	}
	char *cmd = xasprintf("USER %s", user);
	r = command(s, cmd, NULL, &rep, PG_AUTH, err_r);
	free(cmd);
	if (r != PG_OK)
		return r;
	cmd = xasprintf("PASS %s", pass);
	r = command(s, cmd, "PASS <hidden>", &rep, PG_AUTH, err_r);
	explicit_bzero(cmd, strlen(cmd));
	free(cmd);
	if (r != PG_OK) {
		if (s->state != P3_FAILED) {
			char *e = *err_r;
			*err_r = NULL;
			set_err(err_r, "login as %s failed: %s", user, e);
			free(e);
		}
		return r;
	}
	pop3_set_state(s, P3_TRANSACTION);
	return PG_OK;
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

/* retr_body - stream the multi-line body into the filter */
static enum pg_res retr_body(struct pop3 *s, unsigned int num, struct msgfilter *mf,
			     char **err_r)
{
	int done = 0;
	while (!done) {
		const char *p;
		size_t n;
		int complete;
		enum pg_res r = lr_read(s->lr, &p, &n, &complete, err_r);
		if (r != PG_OK) {
			char *e = *err_r;
			*err_r = NULL;
			set_err(err_r, "%s:%d: connection lost during RETR %u after %llu octets: %s",
				s->host, s->port, num, (unsigned long long)mf_bytes(mf), e);
			free(e);
			return fail(s, r);
		}
		r = mf_feed(mf, p, n, complete, &done, err_r);
		if (r != PG_OK)
			return fail(s, r); /* the rest of the body is still unread */
	}
	return PG_OK;
}

enum pg_res pop3_retr(struct pop3 *s, unsigned int num, struct msgfilter *mf, char **err_r)
{
	struct reply rep;
	char cmd[32];
	enum pg_res r = require(s, P3_TRANSACTION, "RETR", err_r);
	if (r != PG_OK)
		return r;
	snprintf(cmd, sizeof cmd, "RETR %u", num);
	r = command(s, cmd, NULL, &rep, PG_PERM, err_r);
	if (r != PG_OK)
		return r;
	return retr_body(s, num, mf, err_r);
}

enum pg_res pop3_dele(struct pop3 *s, unsigned int num, char **err_r)
{
	struct reply rep;
	char cmd[32];
	enum pg_res r = require(s, P3_TRANSACTION, "DELE", err_r);
	if (r != PG_OK)
		return r;
	snprintf(cmd, sizeof cmd, "DELE %u", num);
	r = command(s, cmd, NULL, &rep, PG_PERM, err_r);
	if (r == PG_OK)
		s->ndeleted++;
	return r;
}

enum pg_res pop3_quit(struct pop3 *s, char **err_r)
{
	struct reply rep;
	if (s->state != P3_TRANSACTION && s->state != P3_AUTHORIZATION)
		return require(s, P3_TRANSACTION, "QUIT", err_r);
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
	free(s->host);
	free(s->ca_file);
	free(s->account);
	free(s);
	*sp = NULL;
}
