/*
 * fetchmailrc_parse.c - the .fetchmailrc lexer and parser (see
 * fetchmailrc_int.h): tokens as fetchmail's flex lexer (rcfile_l.l) reads
 * them, including its NAME state after user/pass/is/to/= (the next word is
 * a string even if it is a keyword) and its AUTH state after auth; then
 * fetchmail's grammar (rcfile_y.y) by recursive descent.  A syntax error
 * names the line and column of the offending token.
 */
#include "config.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetchmailrc_int.h"
#include "util.h"

/* ---- keywords ---------------------------------------------------------- */


/* what follows a keyword in a server or user option */
enum arg { A_NONE, A_STR, A_NUM, A_STRNUM, A_STRS, A_NUMS, A_SPECIAL };
enum scope { SC_OTHER, SC_SERVER, SC_USER };

struct kwdef {
	const char *word;
	enum kw kw;
	enum scope scope;
	enum arg arg;
	int negatable; /* `no KEYWORD` is in the grammar */
};

/* The words of rcfile_l.l (aliases spelled out), then passwordfile,
 * which newer fetchmail releases accept. */
static const struct kwdef kwdefs[] = {
	{ "set", K_SET, SC_OTHER, A_NONE, 0 },
	{ "logfile", K_LOGFILE, SC_OTHER, A_NONE, 0 },
	{ "idfile", K_IDFILE, SC_OTHER, A_NONE, 0 },
	{ "pidfile", K_PIDFILE, SC_OTHER, A_NONE, 0 },
	{ "daemon", K_DAEMON, SC_OTHER, A_NONE, 0 },
	{ "syslog", K_SYSLOG, SC_OTHER, A_NONE, 0 },
	{ "invisible", K_INVISIBLE, SC_OTHER, A_NONE, 0 },
	{ "showdots", K_SHOWDOTS, SC_OTHER, A_NONE, 0 },
	{ "postmaster", K_POSTMASTER, SC_OTHER, A_NONE, 0 },
	{ "bouncemail", K_BOUNCEMAIL, SC_OTHER, A_NONE, 0 },
	{ "spambounce", K_SPAMBOUNCE, SC_OTHER, A_NONE, 0 },
	{ "softbounce", K_SOFTBOUNCE, SC_OTHER, A_NONE, 0 },
	{ "warnings", K_WARNINGS, SC_USER, A_NUM, 0 },
	{ "tracepolls", K_TRACEPOLLS, SC_SERVER, A_NONE, 1 },
	{ "defaults", K_DEFAULTS, SC_OTHER, A_NONE, 0 },
	{ "server", K_POLL, SC_OTHER, A_NONE, 0 },
	{ "poll", K_POLL, SC_OTHER, A_NONE, 0 },
	{ "skip", K_SKIP, SC_OTHER, A_NONE, 0 },
	{ "via", K_VIA, SC_SERVER, A_STR, 0 },
	{ "aka", K_AKA, SC_SERVER, A_STRS, 0 },
	{ "local", K_LOCALDOMAINS, SC_SERVER, A_STRS, 0 },
	{ "localdomains", K_LOCALDOMAINS, SC_SERVER, A_STRS, 0 },
	{ "proto", K_PROTOCOL, SC_SERVER, A_SPECIAL, 0 },
	{ "protocol", K_PROTOCOL, SC_SERVER, A_SPECIAL, 0 },
	{ "service", K_SERVICE, SC_SERVER, A_STRNUM, 0 },
	{ "port", K_PORT, SC_SERVER, A_NUM, 0 },
	{ "interval", K_INTERVAL, SC_SERVER, A_NUM, 0 },
	{ "auth", K_AUTH, SC_SERVER, A_SPECIAL, 0 },
	{ "authenticate", K_AUTH, SC_SERVER, A_SPECIAL, 0 },
	{ "preauth", K_AUTH, SC_SERVER, A_SPECIAL, 0 },
	{ "preauthenticate", K_AUTH, SC_SERVER, A_SPECIAL, 0 },
	{ "timeout", K_TIMEOUT, SC_SERVER, A_NUM, 0 },
	{ "envelope", K_ENVELOPE, SC_SERVER, A_SPECIAL, 1 },
	{ "qvirtual", K_QVIRTUAL, SC_SERVER, A_STR, 0 },
	{ "principal", K_PRINCIPAL, SC_SERVER, A_STR, 0 },
	{ "esmtpname", K_ESMTPNAME, SC_SERVER, A_STR, 0 },
	{ "esmtppassword", K_ESMTPPASSWORD, SC_SERVER, A_STR, 0 },
	{ "bad-header", K_BADHEADER, SC_SERVER, A_SPECIAL, 0 },
	{ "accept", K_ACCEPT, SC_OTHER, A_NONE, 0 },
	{ "reject", K_REJECT, SC_OTHER, A_NONE, 0 },
	{ "interface", K_INTERFACE, SC_SERVER, A_STR, 0 },
	{ "monitor", K_MONITOR, SC_SERVER, A_STR, 0 },
	{ "plugin", K_PLUGIN, SC_SERVER, A_STR, 0 },
	{ "plugout", K_PLUGOUT, SC_SERVER, A_STR, 0 },
	{ "dns", K_DNS, SC_SERVER, A_NONE, 1 },
	{ "uidl", K_UIDL, SC_SERVER, A_NONE, 1 },
	{ "checkalias", K_CHECKALIAS, SC_SERVER, A_NONE, 1 },
	{ "user", K_USER, SC_OTHER, A_NONE, 0 },
	{ "username", K_USER, SC_OTHER, A_NONE, 0 },
	{ "pass", K_PASS, SC_USER, A_STR, 0 },
	{ "password", K_PASS, SC_USER, A_STR, 0 },
	{ "passwordfile", K_PASSWORDFILE, SC_USER, A_STR, 0 },
	{ "folder", K_FOLDER, SC_USER, A_STRS, 0 },
	{ "folders", K_FOLDER, SC_USER, A_STRS, 0 },
	{ "smtp", K_SMTPHOST, SC_USER, A_STRS, 0 },
	{ "smtphost", K_SMTPHOST, SC_USER, A_STRS, 0 },
	{ "fetchdomains", K_FETCHDOMAINS, SC_USER, A_STRS, 0 },
	{ "smtpaddress", K_SMTPADDRESS, SC_USER, A_STR, 0 },
	{ "smtpname", K_SMTPNAME, SC_USER, A_STR, 0 },
	{ "antispam", K_ANTISPAM, SC_USER, A_NUMS, 0 },
	{ "mda", K_MDA, SC_USER, A_STR, 0 },
	{ "bsmtp", K_BSMTP, SC_USER, A_STR, 0 },
	{ "lmtp", K_LMTP, SC_USER, A_NONE, 0 },
	{ "pre", K_PRECONNECT, SC_USER, A_STR, 0 },
	{ "preconnect", K_PRECONNECT, SC_USER, A_STR, 0 },
	{ "post", K_POSTCONNECT, SC_USER, A_STR, 0 },
	{ "postconnect", K_POSTCONNECT, SC_USER, A_STR, 0 },
	{ "batchlimit", K_BATCHLIMIT, SC_USER, A_NUM, 0 },
	{ "fetchlimit", K_FETCHLIMIT, SC_USER, A_NUM, 0 },
	{ "fetchsizelimit", K_FETCHSIZELIMIT, SC_USER, A_NUM, 0 },
	{ "fastuidl", K_FASTUIDL, SC_USER, A_NUM, 0 },
	{ "expunge", K_EXPUNGE, SC_USER, A_NUM, 0 },
	{ "properties", K_PROPERTIES, SC_USER, A_STR, 0 },
	{ "is", K_IS, SC_USER, A_SPECIAL, 0 },
	{ "to", K_TO, SC_USER, A_SPECIAL, 0 },
	{ "here", K_HERE, SC_OTHER, A_NONE, 0 },
	{ "there", K_THERE, SC_OTHER, A_NONE, 0 },
	{ "no", K_NO, SC_OTHER, A_NONE, 0 },
	{ "keep", K_KEEP, SC_USER, A_NONE, 1 },
	{ "flush", K_FLUSH, SC_USER, A_NONE, 1 },
	{ "limitflush", K_LIMITFLUSH, SC_USER, A_NONE, 1 },
	{ "fetchall", K_FETCHALL, SC_USER, A_NONE, 1 },
	{ "rewrite", K_REWRITE, SC_USER, A_NONE, 1 },
	{ "forcecr", K_FORCECR, SC_USER, A_NONE, 1 },
	{ "stripcr", K_STRIPCR, SC_USER, A_NONE, 1 },
	{ "pass8", K_PASS8BITS, SC_USER, A_NONE, 1 },
	{ "pass8bits", K_PASS8BITS, SC_USER, A_NONE, 1 },
	{ "dropstatus", K_DROPSTATUS, SC_USER, A_NONE, 1 },
	{ "dropdelivered", K_DROPDELIVERED, SC_USER, A_NONE, 1 },
	{ "mimedec", K_MIMEDECODE, SC_USER, A_NONE, 1 },
	{ "mimedecode", K_MIMEDECODE, SC_USER, A_NONE, 1 },
	{ "idle", K_IDLE, SC_USER, A_NONE, 1 },
	{ "forceidle", K_FORCEIDLE, SC_USER, A_NONE, 1 },
	{ "ssl", K_SSL, SC_USER, A_NONE, 1 },
	{ "sslkey", K_SSLKEY, SC_USER, A_STR, 0 },
	{ "sslcert", K_SSLCERT, SC_USER, A_STR, 0 },
	{ "sslproto", K_SSLPROTO, SC_USER, A_STR, 0 },
	{ "sslcertck", K_SSLCERTCK, SC_USER, A_NONE, 1 },
	{ "sslcertfile", K_SSLCERTFILE, SC_USER, A_STR, 0 },
	{ "sslcertpath", K_SSLCERTPATH, SC_USER, A_STR, 0 },
	{ "sslcommonname", K_SSLCOMMONNAME, SC_USER, A_STR, 0 },
	{ "sslfingerprint", K_SSLFINGERPRINT, SC_USER, A_STR, 0 },
	{ "limit", K_LIMIT, SC_USER, A_NUM, 0 },
	{ "with", K_NOISE, SC_OTHER, A_NONE, 0 },
	{ "and", K_NOISE, SC_OTHER, A_NONE, 0 },
	{ "has", K_NOISE, SC_OTHER, A_NONE, 0 },
	{ "wants", K_NOISE, SC_OTHER, A_NONE, 0 },
	{ "options", K_NOISE, SC_OTHER, A_NONE, 0 },
};

/* the protocol names of the lexer (lower or upper case, not mixed) */
static const char *const proto_words[] = { "auto", "pop2", "pop3", "imap", "apop", "rpop",
	"etrn", "odmr", "kpop", "sdps", NULL };
static const char *const authtype_words[] = { "any", "gssapi", "kerberos", "kerberos_v4",
	"kerberos4", "kerberos_v5", "kerberos5", "ssh", "implicit", "external", "otp", "opie",
	"cram", "cram-md5", "msn", "ntlm", NULL };
/* the no-prefixed words the lexer splits into `no` and the keyword */
static const char *const no_words[] = { "nobouncemail", "nouidl", "nocheckalias", "nodns",
	"noenvelope", "nokeep", "noflush", "nolimitflush", "nofetchall", "norewrite",
	"noforcecr", "nostripcr", "nopass8", "nopass8bits", "nodropstatus", "nodropdelivered",
	"nomimedec", "nomimedecode", "nospambounce", "noidle", "noforceidle", NULL };

static int in_list(const char *const *l, const char *w, size_t n)
{
	for (; *l != NULL; l++)
		if (strlen(*l) == n && strncmp(*l, w, n) == 0)
			return 1;
	return 0;
}

static const struct kwdef *kw_find(const char *w, size_t n)
{
	for (size_t i = 0; i < sizeof kwdefs / sizeof kwdefs[0]; i++)
		if (strlen(kwdefs[i].word) == n && strncmp(kwdefs[i].word, w, n) == 0)
			return &kwdefs[i];
	return NULL;
}

static const struct kwdef *kw_def(enum kw k)
{
	for (size_t i = 0; i < sizeof kwdefs / sizeof kwdefs[0]; i++)
		if (kwdefs[i].kw == k)
			return &kwdefs[i];
	return NULL;
}

/* ---- arena ------------------------------------------------------------- */

void *a_keep(struct arena *a, void *p)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 64;
		a->p = xrealloc(a->p, a->cap * sizeof *a->p);
	}
	a->p[a->n++] = p;
	return p;
}

void a_free(struct arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->p[i]);
	free(a->p);
	a->p = NULL;
	a->n = a->cap = 0;
}

static void syntax(struct px *p, int line, int col, const char *fmt, ...) PG_PRINTF(4, 5);
static void syntax(struct px *p, int line, int col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *m = xvasprintf(fmt, ap);
	va_end(ap);
	p->err = xasprintf("%s:%d:%d: syntax error: %s", p->src, line, col, m);
	free(m);
	longjmp(p->jb, 1);
}

char *a_strndup(struct px *p, const char *s, size_t n)
{
	return a_keep(&p->ar, xstrndup(s, n));
}

static void layer_add(struct px *p, struct layer *l, struct set *s)
{
	struct set **nv = a_keep(&p->ar, xmalloc((l->n + 1) * sizeof *nv));
	if (l->n > 0)
		memcpy(nv, l->v, l->n * sizeof *nv);
	nv[l->n++] = s;
	l->v = nv;
}

/* ---- lexer -------------------------------------------------------------- */

/* escapes - fetchmail's escapes(): in place, never longer */
static void escapes(char *s)
{
	const char *cp = s;
	char *tp = s;
	while (*cp != '\0') {
		int cval = 0;
		if (*cp == '\\' && cp[1] != '\0' && strchr("0123456789xX", cp[1]) != NULL) {
			const char *hex = "00112233445566778899aAbBcCdDeEfF", *dp;
			int dcount = 0;
			if (*++cp == 'x' || *cp == 'X')
				for (++cp; *cp && (dp = strchr(hex, *cp)) && dcount++ < 2; cp++)
					cval = cval * 16 + (int)(dp - hex) / 2;
			else if (*cp == '0')
				while (*cp && strchr("01234567", *cp) && dcount++ < 3)
					cval = cval * 8 + (*cp++ - '0');
			else
				while (*cp && strchr("0123456789", *cp) && dcount++ < 3)
					cval = cval * 10 + (*cp++ - '0');
		} else if (*cp == '\\') {
			switch (*++cp) {
			case '\n':
				cp++;
				continue;
			case '\0':
				*tp = '\0';
				return;
			case 'n': cval = '\n'; break;
			case 't': cval = '\t'; break;
			case 'b': cval = '\b'; break;
			case 'r': cval = '\r'; break;
			default: cval = (unsigned char)*cp;
			}
			cp++;
		} else {
			cval = (unsigned char)*cp++;
		}
		*tp++ = (char)cval;
	}
	*tp = '\0';
}

static void advance(struct px *p, size_t n)
{
	for (size_t i = 0; i < n && p->pos < p->len; i++, p->pos++) {
		if (p->buf[p->pos] == '\n') {
			p->line++;
			p->col = 1;
		} else {
			p->col++;
		}
	}
}

static int word_char(char c)
{
	return c != '\0' && strchr("=;:, \t\r\n", c) == NULL;
}

/* skip_blank - past blanks, the punctuation fetchmail ignores, comments,
 * newlines and backslash-newlines; 1 at the end of the input */
static int skip_blank(struct px *p)
{
	while (p->pos < p->len) {
		const char *c = p->buf + p->pos;
		if (*c != '\0' && strchr(" \t\r;:,\n", *c) != NULL) {
			advance(p, 1);
		} else if (*c == '#') {
			while (p->pos < p->len && p->buf[p->pos] != '\n')
				advance(p, 1);
		} else if (*c == '\\' && p->len - p->pos > 1 && c[1] == '\n') {
			advance(p, 2);
		} else {
			return 0;
		}
	}
	return 1;
}

/* lex_quoted - a "..." or '...' string: up to the next same quote (no
 * escaped quote, as in fetchmail), then fetchmail's escapes */
static void lex_quoted(struct px *p, struct token *t)
{
	const char *c = p->buf + p->pos;
	const char *end = memchr(c + 1, *c, p->len - p->pos - 1);
	if (end == NULL)
		syntax(p, t->line, t->col, "unterminated %s-quoted string",
		       *c == '"' ? "double" : "single");
	t->s = a_strndup(p, c + 1, (size_t)(end - c - 1));
	escapes(t->s);
	t->kw = K_STRING;
	p->st = LS_INITIAL;
	advance(p, (size_t)(end - c) + 1);
}

/* word_kind - what fetchmail's lexer makes of the unquoted word c[0..n)
 * outside its NAME state: a number, `no` (of a no-prefixed word, which is
 * then read again from its third octet), a protocol or authentication
 * type, a keyword, or a string; returns how many octets it took */
static size_t word_kind(struct px *p, struct token *t, const char *c, size_t n)
{
	size_t dig = c[0] == '-' ? 1 : 0;
	while (dig < n && isdigit((unsigned char)c[dig]))
		dig++;
	if (dig == n && n > (c[0] == '-' ? 1u : 0u)) {
		t->kw = K_NUMBER;
		t->n = strtol(t->s, NULL, 10);
		return n;
	}
	if (in_list(no_words, c, n)) {
		t->kw = K_NO;
		t->s = "no";
		return 2;
	}
	char low[16];
	int upper = n < sizeof low;
	for (size_t i = 0; upper && i < n; i++) {
		upper = isupper((unsigned char)c[i]) || isdigit((unsigned char)c[i]);
		low[i] = (char)tolower((unsigned char)c[i]);
	}
	const struct kwdef *d;
	if (p->st == LS_AUTH && n == 8 && strncmp(c, "password", 8) == 0) {
		t->kw = K_AUTHTYPE;
		p->st = LS_INITIAL;
	} else if (in_list(proto_words, c, n) || (upper && in_list(proto_words, low, n))) {
		t->kw = K_PROTO;
	} else if (in_list(authtype_words, c, n)) {
		t->kw = K_AUTHTYPE;
		p->st = LS_INITIAL;
	} else if ((d = kw_find(c, n)) != NULL) {
		t->kw = d->kw;
		if (d->kw == K_USER || d->kw == K_PASS || d->kw == K_IS || d->kw == K_TO)
			p->st = LS_NAME;
		else if (d->kw == K_AUTH)
			p->st = LS_AUTH;
	} else {
		escapes(t->s);
		t->kw = K_STRING;
		p->st = LS_INITIAL;
	}
	return n;
}

/* lex - the next token into p->tok (noise words skipped) */
static void lex(struct px *p)
{
	struct token *t = &p->tok;
	do {
		int eof = skip_blank(p);
		t->line = p->line;
		t->col = p->col;
		t->s = NULL;
		if (eof) {
			t->kw = K_EOF;
			return;
		}
		const char *c = p->buf + p->pos;
		if (*c == '\0')
			syntax(p, t->line, t->col, "NUL byte in the file");
		if (*c == '"' || *c == '\'') {
			lex_quoted(p, t);
			return;
		}
		if (*c == '=') {
			t->kw = K_MAP;
			t->s = "=";
			p->st = LS_NAME;
			advance(p, 1);
			return;
		}
		size_t n = 0;
		while (n < p->len - p->pos && word_char(c[n]))
			n++;
		t->s = a_strndup(p, c, n);
		if (p->st == LS_NAME) {
			/* after user, pass, is, to, =: a string, whatever it says */
			escapes(t->s);
			t->kw = K_STRING;
			p->st = LS_INITIAL;
			advance(p, n);
			return;
		}
		advance(p, word_kind(p, t, c, n));
	} while (t->kw == K_NOISE);
}

/* ---- parser ------------------------------------------------------------- */

static const char *tokname(const struct token *t)
{
	return t->kw == K_EOF ? "end of file" : t->s;
}

static struct set *new_set(struct px *p, const struct token *kwt, int neg)
{
	struct set *s = a_keep(&p->ar, xcalloc(1, sizeof *s));
	s->kw = kwt->kw;
	s->neg = neg;
	s->line = kwt->line;
	s->col = kwt->col;
	s->word = kwt->s;
	return s;
}

static char *want_string(struct px *p, const char *what)
{
	if (p->tok.kw != K_STRING)
		syntax(p, p->tok.line, p->tok.col, "%s expected, found '%s'", what,
		       tokname(&p->tok));
	char *s = p->tok.s;
	lex(p);
	return s;
}

static long want_number(struct px *p, const char *what)
{
	if (p->tok.kw != K_NUMBER)
		syntax(p, p->tok.line, p->tok.col, "%s expected (a number), found '%s'", what,
		       tokname(&p->tok));
	long n = p->tok.n;
	lex(p);
	return n;
}

static void list_add(struct px *p, struct set *s, char *v, char *rhs)
{
	char **nv = a_keep(&p->ar, xmalloc((s->nv + 1) * sizeof *nv));
	char **nr = a_keep(&p->ar, xmalloc((s->nv + 1) * sizeof *nr));
	if (s->nv > 0) {
		memcpy(nv, s->v, s->nv * sizeof *nv);
		memcpy(nr, s->rhs, s->nv * sizeof *nr);
	}
	nv[s->nv] = v;
	nr[s->nv] = rhs;
	s->nv++;
	s->v = nv;
	s->rhs = nr;
}

/* mapping_list - STRING [= STRING] ... (is/to, user ... here) */
static void mapping_list(struct px *p, struct set *s)
{
	list_add(p, s, want_string(p, "a local name"), NULL);
	for (;;) {
		if (p->tok.kw == K_MAP) {
			lex(p);
			s->rhs[s->nv - 1] = want_string(p, "a local name after '='");
		} else if (p->tok.kw == K_STRING) {
			list_add(p, s, p->tok.s, NULL);
			lex(p);
		} else {
			return;
		}
	}
}

/* peek_no - the keyword after a `no` token (without consuming anything) */
static const struct kwdef *peek_no(struct px *p)
{
	size_t pos = p->pos;
	int line = p->line, col = p->col;
	enum lexstate st = p->st;
	struct token save = p->tok;
	lex(p);
	const struct kwdef *d = p->tok.kw == K_EOF ? NULL : kw_def(p->tok.kw);
	p->pos = pos;
	p->line = line;
	p->col = col;
	p->st = st;
	p->tok = save;
	return d != NULL && d->negatable ? d : NULL;
}

/* option_scope - SC_SERVER or SC_USER when the current token starts an
 * option of that kind, else SC_OTHER */
static enum scope option_scope(struct px *p)
{
	if (p->tok.kw == K_NO) {
		const struct kwdef *d = peek_no(p);
		return d ? d->scope : SC_OTHER;
	}
	const struct kwdef *d = p->tok.kw >= K_SET ? kw_def(p->tok.kw) : NULL;
	return d ? d->scope : SC_OTHER;
}

/* option - one server or user option into layer l */
static void option(struct px *p, struct layer *l)
{
	int neg = 0;
	if (p->tok.kw == K_NO) {
		neg = 1;
		lex(p);
	}
	struct token kt = p->tok;
	const struct kwdef *d = kw_def(kt.kw);
	struct set *s = new_set(p, &kt, neg);
	lex(p);
	if (neg) {
		s->word = xasprintf("no %s", kt.s);
		a_keep(&p->ar, s->word);
	} else if (d->arg == A_STR) {
		s->s = want_string(p, kt.s);
	} else if (d->arg == A_NUM) {
		s->n = want_number(p, kt.s);
		s->has_n = 1;
	} else if (d->arg == A_STRNUM) {
		if (p->tok.kw == K_NUMBER) {
			s->n = p->tok.n;
			s->has_n = 1;
			s->s = p->tok.s;
			lex(p);
		} else {
			s->s = want_string(p, kt.s);
		}
	} else if (d->arg == A_STRS) {
		list_add(p, s, want_string(p, kt.s), NULL);
		while (p->tok.kw == K_STRING) {
			list_add(p, s, p->tok.s, NULL);
			lex(p);
		}
	} else if (d->arg == A_NUMS) {
		do {
			list_add(p, s, p->tok.s, NULL);
			want_number(p, kt.s);
		} while (p->tok.kw == K_NUMBER);
	} else if (d->arg == A_SPECIAL) {
		switch (kt.kw) {
		case K_PROTOCOL:
			if (p->tok.kw != K_PROTO)
				syntax(p, p->tok.line, p->tok.col,
				       "protocol name expected (pop3, apop, auto, imap...), found '%s'",
				       tokname(&p->tok));
			s->s = p->tok.s;
			lex(p);
			break;
		case K_AUTH:
			/* fetchmail's types, apop, and newer releases' oauthbearer/xoauth2 */
			if (p->tok.kw != K_AUTHTYPE && p->tok.kw != K_PROTO &&
			    p->tok.kw != K_STRING)
				syntax(p, p->tok.line, p->tok.col,
				       "authentication type expected, found '%s'", tokname(&p->tok));
			p->st = LS_INITIAL;
			s->s = p->tok.s;
			lex(p);
			break;
		case K_ENVELOPE:
			if (p->tok.kw == K_NUMBER) {
				s->n = p->tok.n;
				s->has_n = 1;
				lex(p);
			}
			s->s = want_string(p, "a header name after envelope");
			break;
		case K_BADHEADER:
			if (p->tok.kw != K_ACCEPT && p->tok.kw != K_REJECT)
				syntax(p, p->tok.line, p->tok.col, "accept or reject expected");
			s->s = p->tok.s;
			lex(p);
			break;
		case K_IS:
		case K_TO:
			mapping_list(p, s);
			if (p->tok.kw == K_THERE && s->nv == 1 && s->rhs[0] == NULL) {
				s->kw = K_USER; /* is NAME there: the remote name */
				s->s = s->v[0];
				s->nv = 0;
				lex(p);
			} else if (p->tok.kw == K_HERE) {
				lex(p);
			}
			break;
		default:
			break;
		}
	}
	layer_add(p, l, s);
}

/* userdef - user NAME [there] | user NAMES here */
static void userdef(struct px *p, struct user *u)
{
	struct token kt = p->tok;
	lex(p);
	struct set *s = new_set(p, &kt, 0);
	mapping_list(p, s);
	if (p->tok.kw == K_HERE) {
		lex(p);
		s->kw = K_IS; /* user LOCAL here: local names */
	} else {
		if (s->nv != 1 || s->rhs[0] != NULL)
			syntax(p, kt.line, kt.col, "'user' takes one remote name (or local names "
			       "followed by 'here')");
		if (p->tok.kw == K_THERE)
			lex(p);
		s->s = s->v[0];
		s->nv = 0;
	}
	layer_add(p, &u->l, s);
}

static struct user *new_user(struct px *p, struct entry *e, int line)
{
	struct user *u = a_keep(&p->ar, xcalloc(1, sizeof *u));
	struct user **nu = a_keep(&p->ar, xmalloc((e->nu + 1) * sizeof *nu));
	if (e->nu > 0)
		memcpy(nu, e->u, e->nu * sizeof *nu);
	nu[e->nu++] = u;
	e->u = nu;
	u->line = line;
	return u;
}

static void entry(struct px *p, struct entry *defaults)
{
	struct entry *e = a_keep(&p->ar, xcalloc(1, sizeof *e));
	e->line = p->tok.line;
	e->is_defaults = p->tok.kw == K_DEFAULTS;
	e->skip = p->tok.kw == K_SKIP;
	e->defaults = e->is_defaults ? NULL : defaults;
	lex(p);
	e->name = e->is_defaults ? "defaults" : want_string(p, "a server name");
	while (option_scope(p) == SC_SERVER)
		option(p, &e->srv);
	if (p->tok.kw == K_USER) {
		while (p->tok.kw == K_USER) {
			struct user *u = new_user(p, e, p->tok.line);
			userdef(p, u);
			while (option_scope(p) == SC_USER)
				option(p, &u->l);
		}
	} else if (option_scope(p) == SC_USER) {
		struct user *u = new_user(p, e, p->tok.line);
		while (option_scope(p) == SC_USER)
			option(p, &u->l);
	}
	if (option_scope(p) == SC_SERVER)
		syntax(p, p->tok.line, p->tok.col, "server option '%s' after user options",
		       p->tok.s);
	struct entry **ne = a_keep(&p->ar, xmalloc((p->ne + 1) * sizeof *ne));
	if (p->ne > 0)
		memcpy(ne, p->e, p->ne * sizeof *ne);
	ne[p->ne++] = e;
	p->e = ne;
}

/* set_statement - set KEYWORD [=] VALUE | set [no] FLAG */
static void set_statement(struct px *p)
{
	lex(p);
	int neg = 0;
	if (p->tok.kw == K_NO) {
		neg = 1;
		lex(p);
	}
	struct token kt = p->tok;
	struct set *s = new_set(p, &kt, neg);
	if (neg) {
		s->word = a_keep(&p->ar, xasprintf("no %s", kt.s ? kt.s : ""));
	}
	switch (kt.kw) {
	case K_LOGFILE: case K_IDFILE: case K_PIDFILE: case K_POSTMASTER: case K_PROPERTIES:
	case K_DAEMON:
		if (neg)
			break;
		lex(p);
		/* `=` puts fetchmail's lexer in its NAME state: the value is then
		 * a string, so `set daemon = 60` is a syntax error there too */
		if (p->tok.kw == K_MAP)
			lex(p);
		if (kt.kw == K_DAEMON) {
			s->n = want_number(p, "the poll interval in seconds");
			s->has_n = 1;
		} else {
			s->s = want_string(p, kt.s);
		}
		layer_add(p, &p->global, s);
		return;
	case K_BOUNCEMAIL: case K_SPAMBOUNCE: case K_SOFTBOUNCE: case K_SYSLOG:
	case K_INVISIBLE: case K_SHOWDOTS:
		lex(p);
		layer_add(p, &p->global, s);
		return;
	default:
		break;
	}
	syntax(p, kt.line, kt.col, "'%s' cannot follow 'set%s'", tokname(&kt), neg ? " no" : "");
}

void fmrc_parse(struct px *p)
{
	struct entry *defaults = NULL;
	lex(p);
	while (p->tok.kw != K_EOF) {
		switch (p->tok.kw) {
		case K_SET:
			set_statement(p);
			break;
		case K_POLL: case K_SKIP: case K_DEFAULTS:
			entry(p, defaults);
			if (p->e[p->ne - 1]->is_defaults)
				defaults = p->e[p->ne - 1];
			break;
		default:
			syntax(p, p->tok.line, p->tok.col,
			       "'%s' where set, poll, skip or defaults was expected%s",
			       tokname(&p->tok),
			       option_scope(p) == SC_USER ? " (a user option before 'user'?)" : "");
		}
	}
}

