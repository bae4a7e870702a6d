/*
 * fetchmailrc_int.h - what the .fetchmailrc parser (fetchmailrc_parse.c)
 * hands the converter (fetchmailrc.c); private to those two files.
 *
 * Contract: fmrc_parse() reads p->buf[0..p->len) and fills p->global (the
 * set statements) and p->e (defaults, poll and skip entries in file
 * order), or sets p->err ("NAME:LINE:COL: syntax error: ...") and
 * longjmps to p->jb.  Every allocation it makes is in p->ar, freed with
 * a_free() by the caller.
 */
#ifndef POPGATE_FETCHMAILRC_INT_H
#define POPGATE_FETCHMAILRC_INT_H

#include <setjmp.h>
#include <stddef.h>

enum kw {
	K_STRING = 1, K_NUMBER, K_EOF, K_MAP, K_NO, K_PROTO, K_AUTHTYPE,
	K_SET, K_LOGFILE, K_IDFILE, K_PIDFILE, K_DAEMON, K_SYSLOG, K_INVISIBLE, K_SHOWDOTS,
	K_POSTMASTER, K_BOUNCEMAIL, K_SPAMBOUNCE, K_SOFTBOUNCE, K_WARNINGS, K_TRACEPOLLS,
	K_DEFAULTS, K_POLL, K_SKIP, K_VIA, K_AKA, K_LOCALDOMAINS, K_PROTOCOL, K_SERVICE, K_PORT,
	K_INTERVAL, K_AUTH, K_TIMEOUT, K_ENVELOPE, K_QVIRTUAL, K_PRINCIPAL, K_ESMTPNAME,
	K_ESMTPPASSWORD, K_BADHEADER, K_ACCEPT, K_REJECT, K_USER, K_PASS, K_PASSWORDFILE,
	K_FOLDER, K_SMTPHOST, K_FETCHDOMAINS, K_SMTPADDRESS, K_SMTPNAME, K_ANTISPAM, K_MDA,
	K_BSMTP, K_LMTP, K_PRECONNECT, K_POSTCONNECT, K_INTERFACE, K_MONITOR, K_PLUGIN,
	K_PLUGOUT, K_BATCHLIMIT, K_FETCHLIMIT, K_FETCHSIZELIMIT, K_FASTUIDL, K_EXPUNGE,
	K_PROPERTIES, K_IS, K_HERE, K_THERE, K_TO, K_KEEP, K_FLUSH, K_LIMITFLUSH, K_FETCHALL,
	K_REWRITE, K_FORCECR, K_STRIPCR, K_PASS8BITS, K_DROPSTATUS, K_DROPDELIVERED,
	K_MIMEDECODE, K_IDLE, K_FORCEIDLE, K_DNS, K_UIDL, K_SSL, K_SSLKEY, K_SSLCERT,
	K_SSLPROTO, K_SSLCERTCK, K_SSLCERTFILE, K_SSLCERTPATH, K_SSLCOMMONNAME,
	K_SSLFINGERPRINT, K_CHECKALIAS, K_LIMIT, K_NOISE,
};

struct arena {
	void **p;
	size_t n, cap;
};

/* one option as the rcfile gave it */
struct set {
	enum kw kw;
	int neg; /* `no KEYWORD` */
	int line, col;
	char *word; /* the keyword as written */
	char *s;    /* string argument */
	long n;     /* number argument */
	int has_n;
	char **v, **rhs; /* list arguments; rhs: the `=` side of is/to mappings */
	size_t nv;
	int reported;
};

struct layer {
	struct set **v;
	size_t n;
};

struct user {
	struct layer l;
	int line;
};

struct entry {
	char *name;
	int skip, is_defaults, line;
	struct layer srv;
	struct user **u;
	size_t nu;
	struct entry *defaults; /* the defaults entry in force, or NULL */
	struct set *skip_set;   /* the converter's report of a skip entry */
};

struct token {
	enum kw kw;
	char *s; /* STRING text (escapes done) or the word as written */
	long n;
	int line, col;
};

enum lexstate { LS_INITIAL, LS_NAME, LS_AUTH };

struct px {
	const char *buf;
	size_t len, pos;
	int line, col;
	enum lexstate st;
	struct token tok; /* the current (peeked) token */
	struct arena ar;
	jmp_buf jb;
	char *err;
	const char *src;
	struct layer global;
	struct entry **e;
	size_t ne;
};

void *a_keep(struct arena *a, void *p);
void a_free(struct arena *a);
char *a_strndup(struct px *p, const char *s, size_t n);
void fmrc_parse(struct px *p);

#endif
