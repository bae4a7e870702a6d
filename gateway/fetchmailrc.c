/*
 * fetchmailrc.c - .fetchmailrc to popgate.conf (see fetchmailrc.h).
 *
 * Three steps (the first two in fetchmailrc_parse.c): a lexer that reads tokens as fetchmail's flex lexer does
 * (rcfile_l.l: keyword table, the NAME state after user/pass/is/to/= that
 * makes the next word a string, the AUTH state after auth), a recursive
 * descent parser of fetchmail's grammar (rcfile_y.y) that records every
 * option as a setting with its line in a layer (the defaults entry, a
 * server entry, a user), and a converter that resolves each (entry, user)
 * through user -> server -> defaults, as fetchmail's optmerge() does, and
 * writes one account block per pair.  All parser memory lives in an arena
 * freed at the end; a syntax error unwinds with longjmp to fmrc_convert().
 */
#include "config.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fetchmailrc.h"
#include "fetchmailrc_int.h"
#include "util.h"

#define RC_MAX (1024 * 1024)

/* ---- converter ---------------------------------------------------------- */

/* how an option the converter does not handle centrally is reported */
enum how { H_LEFT, H_NOTE };
struct rule {
	enum kw kw;
	int neg; /* -1: either form */
	enum how how;
	const char *why;
};

static const struct rule rules[] = {
	{ K_UIDL, -1, H_NOTE, "popgate always tracks messages by UIDL in its spool" },
	{ K_DNS, 1, H_NOTE, "popgate never looks names up: the domains are listed in local_domains" },
	{ K_DNS, 0, H_LEFT, "popgate does no DNS lookups for multidrop: list every domain in "
	  "local_domains" },
	{ K_CHECKALIAS, 1, H_NOTE, "popgate compares domains by name" },
	{ K_CHECKALIAS, 0, H_LEFT, "popgate compares domains by name, never by IP address" },
	{ K_FETCHSIZELIMIT, -1, H_NOTE, "popgate reads the sizes with one LIST" },
	{ K_FASTUIDL, -1, H_NOTE, "popgate reads the whole UIDL list once" },
	{ K_EXPUNGE, -1, H_NOTE, "popgate's spool remembers what it took: a broken session is "
	  "completed by the next one" },
	{ K_FORCECR, -1, H_NOTE, "popgate stores every message with CRLF line ends" },
	{ K_PASS8BITS, -1, H_NOTE, "popgate declares 8BITMIME for every 8-bit message" },
	{ K_REWRITE, 1, H_NOTE, "popgate never rewrites headers" },
	{ K_REWRITE, 0, H_LEFT, "popgate never rewrites addresses in headers" },
	{ K_PROPERTIES, -1, H_NOTE, "ignored by fetchmail itself" },
	{ K_TRACEPOLLS, 1, H_NOTE, "popgate's Received field names the account anyway" },
	{ K_TRACEPOLLS, 0, H_NOTE, "popgate's Received field names the account" },
	{ K_SSLCERTCK, 0, H_NOTE, "popgate always verifies the certificate and its name" },
	{ K_SSLCERTCK, 1, H_LEFT, "popgate always verifies the server's certificate; trust a "
	  "private CA with ca_file or pin it with tls_fingerprint" },
	{ K_FETCHALL, -1, H_NOTE, "popgate takes every message that is not in its spool yet "
	  "(it never looks at seen flags)" },
	{ K_KEEP, 1, H_NOTE, "keep = false is popgate's default" },
	{ K_FLUSH, 1, H_NOTE, "popgate never deletes mail it has not fetched" },
	{ K_LIMITFLUSH, 1, H_NOTE, "popgate never deletes mail it has not fetched" },
	{ K_STRIPCR, 1, H_NOTE, "popgate keeps CRLF line ends for SMTP" },
	{ K_DROPSTATUS, 1, H_NOTE, "popgate does not change messages" },
	{ K_DROPDELIVERED, 1, H_NOTE, "popgate does not change messages" },
	{ K_MIMEDECODE, 1, H_NOTE, "popgate does not change messages" },
	{ K_IDLE, 1, H_NOTE, "IMAP only" },
	{ K_FORCEIDLE, 1, H_NOTE, "IMAP only" },
	{ K_SSL, 1, H_NOTE, "fetchmail's default, see tls" },
	{ K_LIMITFLUSH, 0, H_LEFT, "popgate never deletes mail it has not fetched (oversize = "
	  "\"skip\" leaves it on the server)" },
	{ K_QVIRTUAL, -1, H_LEFT, "popgate does not strip a prefix from user names; add a map "
	  "entry for each address instead" },
	{ K_MDA, -1, H_LEFT, "popgate delivers over SMTP only; let the local MTA run the MDA "
	  "(for example a Postfix transport, procmail from ~/.forward)" },
	{ K_BSMTP, -1, H_LEFT, "popgate delivers over SMTP only" },
	{ K_LMTP, -1, H_LEFT, "popgate delivers over SMTP only (no LMTP)" },
	{ K_ANTISPAM, -1, H_LEFT, "popgate never discards mail: a message the SMTP host refuses "
	  "is held with the reply (popgate queue --state held)" },
	{ K_PRECONNECT, -1, H_LEFT, "popgate runs no command before a poll; run it from the "
	  "service or timer that starts popgate" },
	{ K_POSTCONNECT, -1, H_LEFT, "popgate runs no command after a poll; run it from the "
	  "service or timer that starts popgate" },
	{ K_FOLDER, -1, H_LEFT, "POP3 has no folders" },
	{ K_FETCHDOMAINS, -1, H_LEFT, "ETRN/ODMR only" },
	{ K_WARNINGS, -1, H_LEFT, "popgate logs each oversize message at every poll" },
	{ K_STRIPCR, 0, H_LEFT, "popgate keeps CRLF line ends (needed for SMTP)" },
	{ K_DROPSTATUS, 0, H_LEFT, "popgate does not change messages" },
	{ K_DROPDELIVERED, 0, H_LEFT, "popgate does not change messages" },
	{ K_MIMEDECODE, 0, H_LEFT, "popgate does not change messages" },
	{ K_IDLE, 0, H_LEFT, "IMAP only" },
	{ K_FORCEIDLE, 0, H_LEFT, "IMAP only" },
	{ K_SSLKEY, -1, H_LEFT, "popgate has no client certificates" },
	{ K_SSLCERT, -1, H_LEFT, "popgate has no client certificates" },
	{ K_SSLCERTPATH, -1, H_LEFT, "popgate takes one CA file: concatenate the directory's "
	  "certificates into one PEM file and name it in ca_file" },
	{ K_SSLCOMMONNAME, -1, H_LEFT, "popgate checks the certificate against server: use the "
	  "name the certificate carries as server, or pin tls_fingerprint" },
	{ K_SSLFINGERPRINT, -1, H_LEFT, "this is fetchmail's MD5 fingerprint; popgate pins "
	  "SHA-256: get it with `openssl s_client -connect SERVER:PORT [-starttls pop3] "
	  "</dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256` (or popgate "
	  "test-account) and set tls_fingerprint = \"sha256:...\"" },
	{ K_PRINCIPAL, -1, H_LEFT, "popgate has no Kerberos" },
	{ K_ESMTPNAME, -1, H_LEFT, "set user and password_file in the smtp block by hand" },
	{ K_ESMTPPASSWORD, -1, H_LEFT, "put it in a file named by password_file in the smtp "
	  "block by hand (the password is not copied)" },
	{ K_INTERFACE, -1, H_LEFT, "popgate does not watch interfaces" },
	{ K_MONITOR, -1, H_LEFT, "popgate does not watch interfaces" },
	{ K_PLUGIN, -1, H_LEFT, "popgate connects over TCP itself" },
	{ K_PLUGOUT, -1, H_LEFT, "popgate connects over TCP itself" },
	{ K_BADHEADER, -1, H_LEFT, "popgate relays every message as it is" },
};

/* the account being written */
struct acct {
	struct px *p;
	struct conv *cv;
	struct entry *e;
	struct user *u;
	FILE *b; /* the block's option lines */
	char *bbuf;
	size_t blen;
	const char *dest; /* fetchmail's RCPT domain */
};

struct conv {
	struct px *p;
	const struct fmrc_opts *o;
	FILE *diag;
	struct fmrc_result *r;
	char **names;
	size_t nnames;
	long daemon;   /* set daemon, 0 when absent */
	const char *postmaster_raw; /* as the rcfile gave it */
	const char *first_dest;     /* the first account's RCPT domain */
	int smtp_line;
	const char *smtp_host;
	long smtp_port;
	long batchlimit;
	FILE *top;     /* comments for the top of the file */
	char *topbuf;
	size_t toplen;
};

static void left_out(struct conv *cv, FILE *b, struct set *s, const char *why)
{
	fprintf(b, "    # NOT CONVERTED (line %d): %s: %s\n", s->line, s->word, why);
	if (!s->reported) {
		s->reported = 1;
		cv->r->nleft_out++;
		fprintf(cv->diag, "%s:%d: %s: not converted: %s\n", cv->o->source, s->line, s->word,
			why);
	}
}

static void note(FILE *b, const struct set *s, const char *why)
{
	fprintf(b, "    # line %d: %s: %s\n", s->line, s->word, why);
}

/* find - the value in force for an account: user, entry, defaults */
static struct set *find(const struct acct *a, enum kw k)
{
	struct layer *ls[8];
	size_t n = 0;
	if (a->u != NULL)
		ls[n++] = &a->u->l;
	ls[n++] = &a->e->srv;
	if (a->e->defaults != NULL) {
		for (size_t i = a->e->defaults->nu; i > 0 && n < 7; i--)
			ls[n++] = &a->e->defaults->u[i - 1]->l;
		ls[n++] = &a->e->defaults->srv;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = ls[i]->n; j > 0; j--)
			if (ls[i]->v[j - 1]->kw == k)
				return ls[i]->v[j - 1];
	return NULL;
}

/* qstr - s as a popgate.conf string: in single quotes (taken literally)
 * when it holds a '$' or a backslash, which libconfuse would expand or
 * unescape in double quotes; else in double quotes, \ and " escaped */
static void qstr(FILE *f, const char *s)
{
	if (strpbrk(s, "$\\") != NULL && strchr(s, '\'') == NULL) {
		fprintf(f, "'%s'", s);
		return;
	}
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s < 0x20)
			fprintf(f, "\\x%02x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void opt_str(FILE *f, const char *name, const char *v)
{
	fprintf(f, "    %-15s = ", name);
	qstr(f, v);
	fputc('\n', f);
}

static void top_str(FILE *f, const char *name, const char *v)
{
	fprintf(f, "%s = ", name);
	qstr(f, v);
	fputc('\n', f);
}

static char *addr_in(struct px *p, const char *name, const char *dom)
{
	if (strchr(name, '@') != NULL)
		return (char *)name;
	return a_keep(&p->ar, xasprintf("%s@%s", name, dom));
}

/* host_part - an smtphost entry without its /port */
static char *host_part(struct px *p, const char *h, long *port_r)
{
	const char *sl = strchr(h, '/');
	*port_r = 0;
	if (sl == NULL)
		return (char *)h;
	*port_r = strtol(sl + 1, NULL, 10);
	return a_strndup(p, h, (size_t)(sl - h));
}

/* account_name - USER@SERVER, reduced to safe characters, unique */
static char *account_name(struct conv *cv, const char *user, const char *server)
{
	struct px *p = cv->p;
	char *base = a_keep(&p->ar, xasprintf("%s@%s", user, server));
	char *at = strrchr(base, '@');
	for (char *c = base; *c != '\0'; c++)
		if (!isalnum((unsigned char)*c) && strchr("._+-", *c) == NULL && c != at)
			*c = '_';
	if (base[0] == '.')
		base[0] = '_';
	char *name = base;
	for (int i = 2;; i++) {
		int dup = 0;
		for (size_t j = 0; j < cv->nnames; j++)
			dup |= strcmp(cv->names[j], name) == 0;
		if (!dup)
			break;
		name = a_keep(&p->ar, xasprintf("%s-%d", base, i));
	}
	char **nn = a_keep(&p->ar, xmalloc((cv->nnames + 1) * sizeof *nn));
	if (cv->nnames > 0)
		memcpy(nn, cv->names, cv->nnames * sizeof *nn);
	nn[cv->nnames++] = name;
	cv->names = nn;
	return name;
}

static const char *const env_headers[] = { "Delivered-To", "X-Original-To", "Envelope-To",
	"X-Envelope-To", "Received", NULL };

static void add_secret(struct conv *cv, const char *acct, const char *secret)
{
	struct fmrc_result *r = cv->r;
	r->secrets = xrealloc(r->secrets, (r->nsecrets + 1) * sizeof *r->secrets);
	r->secrets[r->nsecrets].account = xstrdup(acct);
	r->secrets[r->nsecrets].secret = xstrdup(secret);
	r->nsecrets++;
}

/* rc_path - a file name of the rcfile: fetchmail reads a relative one
 * against the rcfile's directory (prependdir), popgate against the
 * configuration's, so it is made absolute when the rcfile's is known */
static const char *rc_path(struct acct *a, const char *f)
{
	const char *src = a->cv->o->source, *sl = strrchr(src, '/');
	if (f[0] == '/' || sl == NULL || src[0] != '/')
		return f;
	return a_keep(&a->p->ar, xasprintf("%.*s/%s", (int)(sl - src), src, f));
}

/* conv_tls - tls, port, ca_file, allow_plaintext from ssl/sslproto/service */
static void conv_tls(struct acct *a)
{
	FILE *b = a->b;
	struct set *ssl = find(a, K_SSL), *proto = find(a, K_SSLPROTO);
	struct set *svc = find(a, K_SERVICE), *port = find(a, K_PORT), *ca = find(a, K_SSLCERTFILE);
	int implicit = ssl != NULL && !ssl->neg;
	int plain = !implicit && proto != NULL && proto->s[0] == '\0';
	if (implicit) {
		fprintf(b, "    tls             = \"implicit\"    # ssl\n");
	} else if (plain) {
		fprintf(b, "    # sslproto '': fetchmail did not use TLS and sent the password in clear\n");
		fprintf(b, "    tls             = \"none\"\n    allow_plaintext = true\n");
	} else {
		fprintf(b, "    # fetchmail %s STLS; popgate requires it (it never falls back to "
			"plaintext)\n", proto ? "required" : "tried");
		fprintf(b, "    tls             = \"starttls\"\n");
	}
	struct set *ps = port ? port : svc;
	if (ps != NULL) {
		long n = ps->has_n ? ps->n : 0;
		if (!ps->has_n && strcmp(ps->s, "pop3") == 0)
			n = 110;
		else if (!ps->has_n && strcmp(ps->s, "pop3s") == 0)
			n = 995;
		if (n >= 1 && n <= 65535)
			fprintf(b, "    port            = %ld\n", n);
		else
			left_out(a->cv, b, ps, "popgate takes a port number (1-65535)");
	}
	if (ca != NULL)
		opt_str(b, "ca_file", rc_path(a, ca->s));
}

/* conv_auth - auth and the password source */
static void conv_auth(struct acct *a, const char *name)
{
	struct conv *cv = a->cv;
	FILE *b = a->b;
	struct set *au = find(a, K_AUTH), *proto = find(a, K_PROTOCOL);
	const char *m = NULL;
	if (proto != NULL && strcasecmp(proto->s, "apop") == 0)
		m = "apop";
	if (au != NULL) {
		static const char *const map[][2] = { { "password", "user" }, { "any", "auto" },
			{ "cram", "cram-md5" }, { "cram-md5", "cram-md5" }, { "apop", "apop" },
			{ "APOP", "apop" }, { "oauthbearer", "oauthbearer" },
			{ "xoauth2", "xoauth2" }, { NULL, NULL } };
		const char *got = NULL;
		for (size_t i = 0; map[i][0] != NULL; i++)
			if (strcmp(map[i][0], au->s) == 0)
				got = map[i][1];
		if (got == NULL)
			left_out(cv, b, au, "popgate offers auto, user, apop, plain, login, cram-md5, "
				 "scram-sha-1, scram-sha-256, xoauth2 and oauthbearer; auto is used");
		else if (strcmp(got, "auto") != 0)
			m = got;
	}
	if (m != NULL)
		opt_str(b, "auth", m);
	int token = m != NULL && (strcmp(m, "xoauth2") == 0 || strcmp(m, "oauthbearer") == 0);
	struct set *pw = find(a, K_PASS), *pwf = find(a, K_PASSWORDFILE);
	const char *dir = cv->o->secrets_dir;
	char *file = dir ? xasprintf("%s/%s.pass", dir, name) : xasprintf("%s.pass", name);
	a_keep(&a->p->ar, file);
	if (pwf != NULL && pw == NULL) {
		if (token) {
			char *cmd = xasprintf("cat %s", rc_path(a, pwf->s));
			opt_str(b, "password_command", cmd);
			free(cmd);
		} else {
			opt_str(b, "password_file", rc_path(a, pwf->s));
		}
		fprintf(b, "    # the file must be mode 0600 and hold the password on one line\n");
		return;
	}
	if (pw != NULL && (pw->s[0] == '\0' || strpbrk(pw->s, "\r\n") != NULL)) {
		left_out(cv, b, pw, pw->s[0] == '\0' ? "an empty password: popgate's password "
			 "file holds one non-empty line" : "the password holds a line break: "
			 "popgate's password file holds one line; it is not written");
	} else if (pw != NULL) {
		add_secret(cv, name, pw->s);
		if (dir == NULL)
			fprintf(b, "    # put the password from line %d in this file (mode 0600), or "
				"run with --secrets-dir\n", pw->line);
	} else {
		fprintf(b, "    # no password in the rcfile (fetchmail asked, or read ~/.netrc): "
			"write it to this file, mode 0600\n");
	}
	if (token) {
		fprintf(b, "    # the access token, as fetchmail used it; for tokens popgate "
			"refreshes itself see the oauth2 block and popgate authorize\n");
		char *cmd = xasprintf("cat %s", file);
		opt_str(b, "password_command", cmd);
		free(cmd);
	} else {
		opt_str(b, "password_file", file);
	}
}

/* local_names - the is/to lists in force (the user's, else the defaults'):
 * sets, their count, and whether '*' is among the names */
static struct set **local_names(struct acct *a, size_t *n_r, int *wild_r)
{
	struct layer *ls[2] = { a->u ? &a->u->l : NULL, NULL };
	if (a->e->defaults != NULL && a->e->defaults->nu > 0)
		ls[1] = &a->e->defaults->u[a->e->defaults->nu - 1]->l;
	struct set **v = NULL;
	size_t n = 0;
	*wild_r = 0;
	for (size_t i = 0; i < 2 && n == 0; i++) {
		if (ls[i] == NULL)
			continue;
		v = a_keep(&a->p->ar, xmalloc((ls[i]->n + 1) * sizeof *v));
		for (size_t j = 0; j < ls[i]->n; j++)
			if (ls[i]->v[j]->kw == K_IS || ls[i]->v[j]->kw == K_TO)
				v[n++] = ls[i]->v[j];
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < v[i]->nv; j++)
			if (strcmp(v[i]->v[j], "*") == 0)
				*wild_r = 1;
	*n_r = n;
	return v;
}

/* conv_envelope - envelope [N] HEADER, or no envelope */
static void conv_envelope(struct acct *a)
{
	struct conv *cv = a->cv;
	FILE *b = a->b;
	struct set *env = find(a, K_ENVELOPE);
	const char *hdr = "X-Envelope-To";
	if (env == NULL) {
		fprintf(b, "    # fetchmail's default envelope header (it also parsed Received "
			"lines; set envelope_header = \"Received\" for that)\n");
	} else if (env->neg) {
		left_out(cv, b, env, "popgate reads an envelope header first; X-Envelope-To is used, "
			 "To and Cc only when it gives nothing (guess_from_headers)");
		fprintf(b, "    guess_from_headers = true\n");
	} else {
		size_t hl = strlen(env->s);
		if (hl > 0 && env->s[hl - 1] == ':')
			hl--;
		hdr = NULL;
		for (size_t i = 0; env_headers[i] != NULL; i++)
			if (strlen(env_headers[i]) == hl && strncasecmp(env_headers[i], env->s, hl) == 0)
				hdr = env_headers[i];
		if (hdr == NULL) {
			left_out(cv, b, env, "popgate reads Delivered-To, X-Original-To, Envelope-To, "
				 "X-Envelope-To or Received; X-Envelope-To is used");
			hdr = "X-Envelope-To";
		}
	}
	opt_str(b, "envelope_header", hdr);
	if (env != NULL && !env->neg && env->has_n) {
		if (env->n >= 0 && env->n <= 100)
			fprintf(b, "    envelope_skip   = %ld\n", env->n);
		else
			left_out(cv, b, env, "envelope_skip takes 0 to 100");
	}
}

static int in_strs(const char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(v[i], s) == 0)
			return 1;
	return 0;
}

/* server_names - the names of the server whose users are mapped (aka, and
 * via or the poll name), without repeats and without the localdomains,
 * whose addresses fetchmail passes through unaltered */
static const char **server_names(struct acct *a, struct set *ld, size_t *n_r)
{
	struct set *aka = find(a, K_AKA), *via = find(a, K_VIA);
	size_t n = 0, max = (aka ? aka->nv : 0) + 1;
	const char **al = a_keep(&a->p->ar, xmalloc(max * sizeof *al));
	for (size_t i = 0; i < max; i++) {
		const char *nm = i + 1 < max ? aka->v[i] : via ? via->s : a->e->name;
		if (!in_strs(al, n, nm) && !(ld && in_strs((const char *const *)ld->v, ld->nv, nm)))
			al[n++] = nm;
	}
	*n_r = n;
	return al;
}

/* map_line - one map entry, unless its title was written already */
static void map_line(struct acct *a, const char ***done, size_t *ndone, const char *from,
		     const char *to)
{
	if (in_strs(*done, *ndone, from))
		return;
	const char **nd = a_keep(&a->p->ar, xmalloc((*ndone + 1) * sizeof *nd));
	if (*ndone > 0)
		memcpy(nd, *done, *ndone * sizeof *nd);
	nd[(*ndone)++] = from;
	*done = nd;
	fprintf(a->b, "    map ");
	qstr(a->b, from);
	fprintf(a->b, " { to = ");
	qstr(a->b, to);
	fprintf(a->b, " }\n");
}

/* conv_multidrop - local_domains, map, fallback_to from the is/to names */
static void conv_multidrop(struct acct *a, struct set **ln, size_t nsets, int wild)
{
	struct conv *cv = a->cv;
	struct px *p = a->p;
	FILE *b = a->b;
	struct set *ld = find(a, K_LOCALDOMAINS);
	size_t nal, ndone = 0;
	const char **al = server_names(a, ld, &nal), **done = NULL;
	fprintf(b, "    local_domains   = {");
	for (size_t i = 0; ld && i < ld->nv; i++) {
		fputs(i ? ", " : " ", b);
		qstr(b, ld->v[i]);
	}
	for (size_t i = 0; i < nal; i++) {
		fputs(i || (ld && ld->nv) ? ", " : " ", b);
		qstr(b, al[i]);
	}
	fprintf(b, " }\n");
	if (ld != NULL || find(a, K_AKA) != NULL)
		fprintf(b, "    # fetchmail matched these as domain suffixes; popgate compares whole "
			"domains: add subdomains that receive mail\n");
	for (size_t i = 0; i < nsets; i++) {
		for (size_t j = 0; j < ln[i]->nv; j++) {
			const char *l = ln[i]->v[j], *r = ln[i]->rhs[j] ? ln[i]->rhs[j] : l;
			const char *to = addr_in(p, r, a->dest);
			if (strcmp(l, "*") == 0)
				continue;
			if (strchr(l, '@') != NULL)
				map_line(a, &done, &ndone, l, to);
			for (size_t k = 0; strchr(l, '@') == NULL && k < nal; k++)
				map_line(a, &done, &ndone,
					 a_keep(&p->ar, xasprintf("%s@%s", l, al[k])), to);
		}
	}
	const char *pm = cv->postmaster_raw ? cv->postmaster_raw
					    : cv->o->local_user ? cv->o->local_user : "postmaster";
	const char *pma = addr_in(p, pm, a->dest);
	if (wild && !in_strs(al, nal, a->dest)) {
		for (size_t i = 0; i < nsets; i++)
			for (size_t j = 0; j < ln[i]->nv; j++)
				if (strcmp(ln[i]->v[j], "*") == 0)
					left_out(cv, b, ln[i], "'*': popgate passes other users of the "
						 "server's names through as they are (USER@SERVER), "
						 "fetchmail sent them to USER@smtpaddress");
	} else if (!wild) {
		fprintf(b, "    # other users of the server's names: fetchmail did not deliver "
			"them (the postmaster got the mail when no one else did)\n");
		for (size_t k = 0; k < nal; k++)
			map_line(a, &done, &ndone, a_keep(&p->ar, xasprintf("@%s", al[k])), pma);
	}
	fprintf(b, "    # fetchmail sent mail without a local recipient to the postmaster\n");
	opt_str(b, "fallback_to", pma);
}

/* conv_delivery - deliver_to (one local name), or the multidrop options */
static void conv_delivery(struct acct *a)
{
	struct conv *cv = a->cv;
	int wild;
	size_t nsets, nnames = 0;
	struct set **ln = local_names(a, &nsets, &wild);
	const char *only = NULL;
	for (size_t i = 0; i < nsets; i++)
		for (size_t j = 0; j < ln[i]->nv; j++)
			if (strcmp(ln[i]->v[j], "*") != 0) {
				nnames++;
				only = ln[i]->rhs[j] ? ln[i]->rhs[j] : ln[i]->v[j];
			}
	struct set *sname = find(a, K_SMTPNAME);
	if (!wild && nnames <= 1) {
		const char *local = only ? only : cv->o->local_user ? cv->o->local_user : "root";
		opt_str(a->b, "deliver_to", sname ? sname->s : addr_in(a->p, local, a->dest));
		return;
	}
	if (sname != NULL)
		left_out(cv, a->b, sname, "multidrop: popgate keeps each recipient");
	conv_envelope(a);
	conv_multidrop(a, ln, nsets, wild);
}

/* conv_policy - keep, limits, timeouts, interval */
static void conv_policy(struct acct *a)
{
	struct conv *cv = a->cv;
	FILE *b = a->b;
	struct set *keep = find(a, K_KEEP), *flush = find(a, K_FLUSH), *s;
	if (keep != NULL && !keep->neg) {
		fprintf(b, "    keep            = true\n");
		if (flush != NULL && !flush->neg)
			fprintf(b, "    # keep + flush: fetchmail deleted kept mail at the next poll\n"
				"    keep_days       = 1\n");
	} else if (flush != NULL && !flush->neg) {
		left_out(cv, b, flush, "popgate never deletes mail it has not fetched (it fetches "
			 "every message, then deletes it)");
	}
	if ((s = find(a, K_LIMIT)) != NULL && s->n > 0) {
		fprintf(b, "    max_message_size = %ld\n    oversize        = \"skip\"    # "
			"fetchmail left oversize mail on the server\n", s->n);
	}
	if ((s = find(a, K_FETCHLIMIT)) != NULL && s->n > 10000000)
		left_out(cv, b, s, "max_messages_per_poll takes at most 10000000");
	else if (s != NULL && s->n > 0)
		fprintf(b, "    max_messages_per_poll = %ld\n", s->n);
	if ((s = find(a, K_TIMEOUT)) != NULL) {
		if (s->n >= 1 && s->n <= 604800)
			fprintf(b, "    timeout         = %ld\n", s->n);
		else
			left_out(cv, b, s, "popgate's timeout takes 1 second to 7 days");
	}
	s = find(a, K_INTERVAL);
	long iv = cv->daemon > 604800 ? 604800 : cv->daemon;
	if (s != NULL) {
		if (cv->daemon > 0)
			iv = s->n > 1 && s->n < 604800 ? iv * s->n : iv;
		else
			left_out(cv, b, s, "counts daemon cycles, and there is no 'set daemon'");
	}
	if (iv > 604800)
		iv = 604800;
	if (iv > 0)
		fprintf(b, "    interval        = %ld\n", iv);
	if ((s = find(a, K_BATCHLIMIT)) != NULL && s->n > 1000000)
		left_out(cv, b, s, "max_messages_per_session takes at most 1000000");
	else if (s != NULL && s->n > 0 && cv->batchlimit == 0)
		cv->batchlimit = s->n;
}

/* conv_rest - every option in force that was not handled above */
static void conv_rest(struct acct *a, struct layer *l)
{
	for (size_t i = 0; i < l->n; i++) {
		struct set *s = l->v[i];
		if (find(a, s->kw) != s && s->kw != K_IS && s->kw != K_TO)
			continue; /* overridden */
		if (s->kw == K_FLUSH && !s->neg)
			continue; /* conv_policy() */
		for (size_t j = 0; j < sizeof rules / sizeof rules[0]; j++) {
			const struct rule *r = &rules[j];
			if (r->kw != s->kw || (r->neg != -1 && r->neg != s->neg))
				continue;
			if (r->how == H_NOTE)
				note(a->b, s, r->why);
			else
				left_out(a->cv, a->b, s, r->why);
			break;
		}
	}
}

/* conv_smtp - an smtphost other than the smtp block's (the first one the
 * rcfile names) cannot be kept */
static void conv_smtp(struct acct *a)
{
	struct conv *cv = a->cv;
	struct set *h = find(a, K_SMTPHOST);
	if (h == NULL) {
		if (cv->smtp_line > 0)
			fprintf(a->b, "    # fetchmail relayed this account's mail to localhost:25; "
				"popgate uses the smtp block\n");
		return;
	}
	if (h->v[0][0] == '/') {
		left_out(cv, a->b, h, "a socket path (LMTP): popgate relays over TCP SMTP only");
		return;
	}
	long port;
	const char *host = host_part(a->p, h->v[0], &port);
	if (strcmp(host, cv->smtp_host) != 0 || (port ? port : 25) != cv->smtp_port)
		left_out(cv, a->b, h, "popgate relays every account to one SMTP host (the smtp "
			 "block)");
	else if (h->nv > 1)
		fprintf(a->b, "    # line %d: smtphost lists %zu hosts; popgate relays to the first "
			"one (%s) only\n", h->line, h->nv, h->v[0]);
}

/* smtp_prescan - the smtp block: the first smtphost of the file (a user's,
 * else the defaults') */
static void smtp_prescan(struct conv *cv)
{
	struct set *first = NULL;
	for (size_t i = 0; i < cv->p->ne && first == NULL; i++) {
		struct entry *e = cv->p->e[i];
		for (size_t j = 0; j < e->nu && first == NULL; j++)
			for (size_t k = 0; k < e->u[j]->l.n && first == NULL; k++)
				if (e->u[j]->l.v[k]->kw == K_SMTPHOST && e->u[j]->l.v[k]->v[0][0] != '/')
					first = e->u[j]->l.v[k];
	}
	cv->smtp_host = "localhost";
	cv->smtp_port = 25;
	if (first != NULL) {
		long port;
		cv->smtp_host = host_part(cv->p, first->v[0], &port);
		cv->smtp_port = port > 0 ? port : 25;
		cv->smtp_line = first->line;
	}
}

static void account(struct conv *cv, FILE *out, struct entry *e, struct user *u)
{
	struct px *p = cv->p;
	struct acct a = { .p = p, .cv = cv, .e = e, .u = u };
	a.b = open_memstream(&a.bbuf, &a.blen);
	if (a.b == NULL)
		abort();
	struct set *user = find(&a, K_USER), *via = find(&a, K_VIA);
	struct set *proto = find(&a, K_PROTOCOL), *sa = find(&a, K_SMTPADDRESS);
	struct set *sh = find(&a, K_SMTPHOST);
	const char *remote = user ? user->s : cv->o->local_user ? cv->o->local_user : "root";
	long port;
	a.dest = sa ? sa->s : sh && sh->v[0][0] != '/' ? host_part(p, sh->v[0], &port)
							: "localhost";
	char *name = account_name(cv, remote, e->name);
	if (cv->first_dest == NULL)
		cv->first_dest = a.dest;
	int pop3 = proto == NULL || strcasecmp(proto->s, "pop3") == 0 ||
		   strcasecmp(proto->s, "apop") == 0 || strcasecmp(proto->s, "auto") == 0;
	if (!pop3) {
		fprintf(out, "\n# poll %s (line %d), user %s: NOT CONVERTED: protocol %s\n", e->name,
			e->line, remote, proto->s);
		left_out(cv, out, proto, "popgate speaks POP3 only; the entry is left out");
		fclose(a.b);
		free(a.bbuf);
		return;
	}
	if (proto != NULL && strcasecmp(proto->s, "auto") == 0)
		note(a.b, proto, "popgate speaks POP3");
	opt_str(a.b, "server", via ? via->s : e->name);
	conv_tls(&a);
	opt_str(a.b, "user", remote);
	conv_auth(&a, name);
	conv_delivery(&a);
	conv_policy(&a);
	conv_smtp(&a);
	if (e->defaults != NULL) {
		conv_rest(&a, &e->defaults->srv);
		for (size_t i = 0; i < e->defaults->nu; i++)
			conv_rest(&a, &e->defaults->u[i]->l);
	}
	conv_rest(&a, &e->srv);
	if (u != NULL)
		conv_rest(&a, &u->l);
	if (e->skip) {
		if (e->skip_set == NULL) {
			e->skip_set = a_keep(&p->ar, xcalloc(1, sizeof *e->skip_set));
			e->skip_set->kw = K_SKIP;
			e->skip_set->line = e->line;
			e->skip_set->word = "skip";
		}
		left_out(cv, a.b, e->skip_set, "popgate has no account polled only on demand; the "
			 "account is written commented out");
	}
	fclose(a.b);
	const char *pfx = e->skip ? "# " : "";
	fprintf(out, "\n# from %s line %d (%s %s)%s\n", cv->o->source, u ? u->line : e->line,
		e->skip ? "skip" : "poll", e->name,
		e->skip ? ": a skip entry, which fetchmail polls only when named; "
			  "remove the '# ' to poll it" : "");
	fprintf(out, "%saccount ", pfx);
	qstr(out, name);
	fprintf(out, " {\n");
	for (char *l = a.bbuf; *l != '\0';) {
		size_t n = strcspn(l, "\n");
		fprintf(out, "%s%.*s\n", pfx, (int)n, l);
		l += n + (l[n] == '\n');
	}
	fprintf(out, "%s}\n", pfx);
	free(a.bbuf);
}

/* conv_global - the set statements */
static void conv_global(struct conv *cv, FILE *out)
{
	for (size_t i = 0; i < cv->p->global.n; i++) {
		struct set *s = cv->p->global.v[i];
		switch (s->kw) {
		case K_DAEMON:
			cv->daemon = s->n;
			fprintf(out, "# line %d: set daemon %ld: the interval of every account\n",
				s->line, s->n);
			break;
		case K_POSTMASTER:
			cv->postmaster_raw = s->s;
			break;
		case K_PIDFILE:
			top_str(out, "pid_file", s->s);
			break;
		case K_BOUNCEMAIL:
			if (s->neg)
				fprintf(out, "# line %d: set no bouncemail: notices go to the postmaster\n",
					s->line);
			else
				fprintf(out, "# line %d: set bouncemail: notices about held mail go to the "
					"sender\nbounce = \"sender\"\n", s->line);
			break;
		case K_SOFTBOUNCE:
			if (s->neg)
				left_out(cv, out, s, "popgate never deletes mail the SMTP host refuses: it "
					 "holds it (popgate queue --state held)");
			else
				fprintf(out, "# line %d: set softbounce: popgate holds refused mail too\n",
					s->line);
			break;
		case K_SYSLOG:
			fprintf(out, "# line %d: %s: popgate logs to syslog (the journal) when it "
				"runs as a daemon\n", s->line, s->word);
			break;
		case K_LOGFILE:
			left_out(cv, out, s, "popgate logs to syslog (the journal) or stderr");
			break;
		case K_IDFILE:
			fprintf(out, "# line %d: set idfile: popgate keeps UIDLs in its spool; "
				"fetchmail's list is not imported\n", s->line);
			break;
		case K_SPAMBOUNCE:
			if (!s->neg)
				left_out(cv, out, s, "popgate never bounces; refused mail is held");
			break;
		case K_INVISIBLE:
			if (!s->neg)
				left_out(cv, out, s, "popgate always adds its Received field");
			break;
		default:
			break; /* showdots, properties: nothing to do */
		}
	}
}

/* conv_postmaster - set postmaster, in the first account's RCPT domain as
 * fetchmail completed it */
static void conv_postmaster(struct conv *cv, FILE *out)
{
	if (cv->postmaster_raw == NULL)
		return;
	const char *dom = cv->first_dest ? cv->first_dest : "localhost";
	fprintf(out, "# set postmaster: notices about held mail, and multidrop fallback_to\n");
	top_str(out, "postmaster", addr_in(cv->p, cv->postmaster_raw, dom));
}

static void convert(struct conv *cv, FILE *out)
{
	char *gbuf = NULL, *abuf = NULL;
	size_t glen = 0, alen = 0;
	FILE *g = open_memstream(&gbuf, &glen), *ac = open_memstream(&abuf, &alen);
	cv->top = open_memstream(&cv->topbuf, &cv->toplen);
	if (g == NULL || ac == NULL || cv->top == NULL)
		abort();
	conv_global(cv, g);
	smtp_prescan(cv);
	size_t naccounts = 0;
	for (size_t i = 0; i < cv->p->ne; i++) {
		struct entry *e = cv->p->e[i];
		if (e->is_defaults)
			continue;
		if (e->nu == 0) {
			account(cv, ac, e, NULL);
			naccounts++;
		}
		for (size_t j = 0; j < e->nu; j++, naccounts++)
			account(cv, ac, e, e->u[j]);
	}
	conv_postmaster(cv, g);
	fclose(g);
	fclose(ac);
	fclose(cv->top);
	fprintf(out, "# popgate.conf converted from %s by popgate import-fetchmailrc.\n",
		cv->o->source);
	fprintf(out, "# Review before use (popgate check-config, then popgate test-account NAME):\n"
		"#  - every NOT CONVERTED comment (%zu keyword%s, also listed on stderr);\n"
		"#  - each password_file: mode 0600, the password on one line;\n"
		"#  - fetchmail's list of seen messages (.fetchids) is not imported: with keep,\n"
		"#    popgate fetches once more what fetchmail left on the server;\n"
		"#  - spool_dir (default /var/spool/popgate), hostname and the smtp block.\n",
		cv->r->nleft_out, cv->r->nleft_out == 1 ? "" : "s");
	if (naccounts == 0)
		fprintf(out, "# The rcfile has no poll entry: add an account block.\n");
	if (cv->daemon == 0 && naccounts > 0)
		fprintf(out, "# No 'set daemon': fetchmail polled once per run.  popgate run polls "
			"every\n# interval (default 300 s); from the same timer or cron job, run "
			"popgate run --once.\n");
	fputs(cv->topbuf, out);
	fputs(gbuf, out);
	fprintf(out, "\nsmtp {\n");
	if (cv->smtp_line > 0)
		fprintf(out, "    # smtphost, line %d\n", cv->smtp_line);
	else
		fprintf(out, "    # fetchmail's default smtphost\n");
	opt_str(out, "host", cv->smtp_host);
	fprintf(out, "    port            = %ld\n", cv->smtp_port);
	if (cv->batchlimit > 0)
		fprintf(out, "    max_messages_per_session = %ld    # batchlimit\n", cv->batchlimit);
	fprintf(out, "}\n");
	fputs(abuf, out);
	free(gbuf);
	free(abuf);
	free(cv->topbuf);
}

enum fmrc_status fmrc_convert(FILE *in, FILE *out, FILE *diag, const struct fmrc_opts *o,
			      struct fmrc_result *r)
{
	memset(r, 0, sizeof *r);
	struct px p = { .line = 1, .col = 1, .src = o->source ? o->source : "-" };
	struct fmrc_opts oo = *o;
	oo.source = p.src;
	char *buf = xmalloc(RC_MAX + 1);
	size_t n = fread(buf, 1, RC_MAX + 1, in);
	if (ferror(in) || n > RC_MAX) {
		r->error = xasprintf("%s: %s", p.src, ferror(in) ? "read error" :
				     "larger than 1 MiB");
		free(buf);
		return FMRC_IO;
	}
	buf[n] = '\0';
	p.buf = buf;
	p.len = n;
	enum fmrc_status st;
	if (setjmp(p.jb) != 0) {
		r->error = p.err;
		st = FMRC_SYNTAX;
	} else {
		fmrc_parse(&p);
		/* the converter's left_out() writes to memory streams, never longjmps */
		struct conv cv = { .p = &p, .o = &oo, .diag = diag, .r = r };
		convert(&cv, out);
		st = r->nleft_out > 0 ? FMRC_PARTIAL : FMRC_OK;
	}
	a_free(&p.ar);
	free(buf);
	return st;
}

void fmrc_result_free(struct fmrc_result *r)
{
	for (size_t i = 0; i < r->nsecrets; i++) {
		free(r->secrets[i].account);
		if (r->secrets[i].secret != NULL) {
			memset(r->secrets[i].secret, 0, strlen(r->secrets[i].secret));
			free(r->secrets[i].secret);
		}
	}
	free(r->secrets);
	free(r->error);
	memset(r, 0, sizeof *r);
}
