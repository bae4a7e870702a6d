/*
 * conf.c - the configuration file (see conf.h).
 *
 * libconfuse (3.3 in Debian 12) miscounts line numbers after comments (each
 * "#" or "//" comment adds two to the count, a block comment one), which
 * would send an admin to the wrong line.  We therefore blank out comments
 * ourselves, keeping every newline, and hand libconfuse the cleaned text:
 * its line counter is then exact.
 */
#include "config.h"

#include <confuse.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

#define CONF_MAX_SIZE (1024 * 1024)
#define SECRET_MAX 4096

struct conf_ctx {
	const char *path;
	struct buf errs;
	int nerrs;
	const char *text; /* the cleaned file, to find section lines */
};

/* The error function has no user pointer, so parsing is not reentrant;
 * popgate parses one file at a time. */
static struct conf_ctx *cur_ctx;

static void conf_add_error(struct conf_ctx *cx, int line, const char *fmt, ...)
	PG_PRINTF(3, 4);

static void conf_add_error(struct conf_ctx *cx, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (cx->nerrs < 50) {
		if (line > 0)
			buf_printf(&cx->errs, "%s%s:%d: %s", cx->nerrs ? "\n" : "", cx->path, line, msg);
		else
			buf_printf(&cx->errs, "%s%s: %s", cx->nerrs ? "\n" : "", cx->path, msg);
	}
	cx->nerrs++;
	free(msg);
}

static void conf_errfunc(cfg_t *cfg, const char *fmt, va_list ap)
{
	char *msg = xvasprintf(fmt, ap);
	conf_add_error(cur_ctx, cfg != NULL ? cfg->line : 0, "%s", msg);
	free(msg);
}

/* strip_comments - blank out #, // and C comments outside quotes, keeping
 * newlines, so libconfuse counts lines right */
static void strip_comments(char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		char c = s[i];
		if (c == '"' || c == '\'') {
			for (i++; i < n && s[i] != c; i++)
				if (s[i] == '\\' && i + 1 < n)
					i++;
			i++;
		} else if (c == '#' || (c == '/' && i + 1 < n && s[i + 1] == '/')) {
			for (; i < n && s[i] != '\n'; i++)
				s[i] = ' ';
		} else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
			s[i] = s[i + 1] = ' ';
			for (i += 2; i < n && !(s[i] == '*' && i + 1 < n && s[i + 1] == '/'); i++)
				if (s[i] != '\n')
					s[i] = ' ';
			if (i < n)
				s[i] = s[i + 1] = ' ';
			i += 2;
		} else {
			i++;
		}
	}
}

static int validate_port(cfg_t *cfg, cfg_opt_t *opt)
{
	long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
	if (v < 0 || v > 65535) {
		cfg_error(cfg, "option '%s': %ld is not a port number (1-65535, or 0 for the "
			  "default)", opt->name, v);
		return -1;
	}
	return 0;
}

static int validate_port_required(cfg_t *cfg, cfg_opt_t *opt)
{
	long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
	if (v < 1 || v > 65535) {
		cfg_error(cfg, "option '%s': %ld is not a port number (1-65535)", opt->name, v);
		return -1;
	}
	return 0;
}

static int validate_positive(cfg_t *cfg, cfg_opt_t *opt)
{
	long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
	if (v < 1 || v > 7 * 24 * 3600) {
		cfg_error(cfg, "option '%s': %ld is out of range (1-604800 seconds)", opt->name, v);
		return -1;
	}
	return 0;
}

static int validate_tls(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	if (v == NULL || (strcmp(v, "implicit") != 0 && strcmp(v, "starttls") != 0 &&
			  strcmp(v, "none") != 0)) {
		cfg_error(cfg, "option '%s': '%s' is not one of implicit, starttls, none",
			  opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

static int validate_smtp_tls(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	if (v == NULL || (strcmp(v, "none") != 0 && strcmp(v, "starttls") != 0 &&
			  strcmp(v, "required") != 0)) {
		cfg_error(cfg, "option '%s': '%s' is not one of none, starttls, required",
			  opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

static int validate_loglevel(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	enum log_level l;
	if (v == NULL || log_level_parse(v, &l) != 0) {
		cfg_error(cfg, "option '%s': '%s' is not one of error, warning, info, debug",
			  opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

/* addr_ok - a bare address usable in an SMTP envelope: no controls, no
 * spaces, no angle brackets, one '@' with text on both sides */
static int addr_ok(const char *a)
{
	size_t n = strlen(a);
	if (n == 0 || n > 254)
		return 0;
	const char *at = strrchr(a, '@');
	if (at == NULL || at == a || at[1] == '\0')
		return 0;
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (*p <= 0x20 || *p == 0x7f || *p == '<' || *p == '>' || *p == ',')
			return 0;
	return 1;
}

static int validate_addr(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	if (v == NULL || !addr_ok(v)) {
		cfg_error(cfg, "option '%s': '%s' is not a plain mail address (user@domain)",
			  opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

static int validate_nonempty(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	if (v == NULL || *v == '\0') {
		cfg_error(cfg, "option '%s': must not be empty", opt->name);
		return -1;
	}
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			cfg_error(cfg, "option '%s': contains a control character", opt->name);
			return -1;
		}
	}
	return 0;
}

/* validate_hostname - a name fit for HELO and Received: letters, digits,
 * '.', '-', '_', or an address literal in brackets */
static int validate_hostname(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	size_t n = v ? strlen(v) : 0;
	int ok = n > 0 && n <= 253;
	for (size_t i = 0; ok && i < n; i++) {
		unsigned char ch = (unsigned char)v[i];
		ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		     ch == '.' || ch == '-' || ch == '_' || ch == '[' || ch == ']' || ch == ':';
	}
	if (!ok) {
		cfg_error(cfg, "option '%s': '%s' is not a host name", opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

/* section_line - the line where `account "NAME"` starts in the cleaned text
 * (the name must match whole, so "office" does not match "office2") */
static int section_line(const char *text, const char *name)
{
	int line = 1;
	size_t nlen = strlen(name);
	for (const char *p = text; *p; p++) {
		if (*p == '\n') {
			line++;
			continue;
		}
		if (strncmp(p, "account", 7) != 0 ||
		    (p > text && p[-1] != ' ' && p[-1] != '\n' && p[-1] != '\t'))
			continue;
		const char *q = p + 7;
		while (*q == ' ' || *q == '\t')
			q++;
		char quote = (*q == '"' || *q == '\'') ? *q++ : '\0';
		if (strncmp(q, name, nlen) != 0)
			continue;
		char end = q[nlen];
		if ((quote && end == quote) || (!quote && (end == ' ' || end == '\t' ||
							   end == '{' || end == '\n')))
			return line;
	}
	return 0;
}

static cfg_opt_t smtp_opts[] = {
	CFG_STR("host", "127.0.0.1", CFGF_NONE),
	CFG_INT("port", 25, CFGF_NONE),
	CFG_STR("helo_name", NULL, CFGF_NONE),
	CFG_INT("timeout", 300, CFGF_NONE),
	CFG_STR("tls", "none", CFGF_NONE),
	CFG_STR("ca_file", NULL, CFGF_NONE),
	CFG_END(),
};

static cfg_opt_t account_opts[] = {
	CFG_STR("server", NULL, CFGF_NODEFAULT),
	CFG_INT("port", 0, CFGF_NONE),
	CFG_STR("tls", "implicit", CFGF_NONE),
	CFG_STR("ca_file", NULL, CFGF_NONE),
	CFG_STR("user", NULL, CFGF_NODEFAULT),
	CFG_STR("password_file", NULL, CFGF_NODEFAULT),
	CFG_BOOL("allow_plaintext", cfg_false, CFGF_NONE),
	CFG_STR("deliver_to", NULL, CFGF_NODEFAULT),
	CFG_BOOL("keep", cfg_false, CFGF_NONE),
	CFG_INT("interval", 300, CFGF_NONE),
	CFG_INT("timeout", 60, CFGF_NONE),
	CFG_INT("connect_timeout", 30, CFGF_NONE),
	CFG_END(),
};

static cfg_opt_t top_opts[] = {
	CFG_STR("spool_dir", "/var/spool/popgate", CFGF_NONE),
	CFG_STR("hostname", NULL, CFGF_NONE),
	CFG_STR("log_level", "info", CFGF_NONE),
	CFG_SEC("smtp", smtp_opts, CFGF_NONE),
	CFG_SEC("account", account_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
	CFG_END(),
};

static void set_validators(cfg_t *cfg)
{
	static const struct {
		const char *name;
		cfg_validate_callback_t fn;
	} v[] = {
		{ "log_level", validate_loglevel },   { "spool_dir", validate_nonempty },
		{ "smtp|port", validate_port_required },       { "smtp|host", validate_nonempty },
		{ "smtp|timeout", validate_positive }, { "account|port", validate_port },
		{ "account|tls", validate_tls },      { "account|server", validate_nonempty },
		{ "account|user", validate_nonempty }, { "account|password_file", validate_nonempty },
		{ "account|deliver_to", validate_addr }, { "account|interval", validate_positive },
		{ "account|timeout", validate_positive }, { "account|connect_timeout", validate_positive },
		{ "hostname", validate_hostname }, { "smtp|tls", validate_smtp_tls },
		{ "smtp|ca_file", validate_nonempty }, { "smtp|helo_name", validate_hostname },
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		cfg_set_validate_func(cfg, v[i].name, v[i].fn);
}

/* check_secret_file - the password file exists, is a regular file and is
 * not accessible by group or others */
static int check_secret_file(const char *path, char **why_r)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		*why_r = xasprintf("cannot use '%s': %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		*why_r = xasprintf("'%s' is not a regular file", path);
		return -1;
	}
	if (st.st_mode & 077) {
		*why_r = xasprintf("'%s' has mode %04o: it is readable or writable by group or "
				   "others; run chmod 600 '%s'",
				   path, (unsigned)(st.st_mode & 07777), path);
		return -1;
	}
	return 0;
}

static enum tls_mode tls_parse(const char *s)
{
	if (strcmp(s, "none") == 0)
		return TLS_NONE;
	if (strcmp(s, "starttls") == 0)
		return TLS_STARTTLS;
	return TLS_IMPLICIT;
}

static char *opt_strdup(cfg_t *sec, const char *name)
{
	const char *v = cfg_getstr(sec, name);
	return v != NULL ? xstrdup(v) : NULL;
}

/* account_extract - copy one account section, reporting missing options
 * and cross-option problems at the section's line */
static void account_extract(struct conf_ctx *cx, struct conf *c, cfg_t *sec,
			    struct conf_account *a)
{
	static const char *const required[] = { "server", "user", "password_file", "deliver_to" };
	a->name = xstrdup(cfg_title(sec));
	a->file = c->path;
	a->line = section_line(cx->text, a->name);
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
		if (cfg_size(sec, required[i]) == 0)
			conf_add_error(cx, a->line, "account '%s': missing required option '%s'",
				       a->name, required[i]);
	a->server = opt_strdup(sec, "server");
	a->tls = tls_parse(cfg_getstr(sec, "tls"));
	a->port = (int)cfg_getint(sec, "port");
	if (a->port == 0)
		a->port = a->tls == TLS_IMPLICIT ? 995 : 110;
	a->ca_file = opt_strdup(sec, "ca_file");
	a->user = opt_strdup(sec, "user");
	a->password_file = opt_strdup(sec, "password_file");
	a->allow_plaintext = cfg_getbool(sec, "allow_plaintext");
	a->deliver_to = opt_strdup(sec, "deliver_to");
	a->keep = cfg_getbool(sec, "keep");
	a->interval = (int)cfg_getint(sec, "interval");
	a->timeout = (int)cfg_getint(sec, "timeout");
	a->connect_timeout = (int)cfg_getint(sec, "connect_timeout");
	char *why = NULL;
	if (a->password_file != NULL && check_secret_file(a->password_file, &why) != 0)
		conf_add_error(cx, a->line, "account '%s': option 'password_file': %s", a->name, why);
	free(why);
	if (a->ca_file != NULL && access(a->ca_file, R_OK) != 0)
		conf_add_error(cx, a->line, "account '%s': option 'ca_file': cannot read '%s': %s",
			       a->name, a->ca_file, strerror(errno));
	if (a->name[0] == '\0' || strpbrk(a->name, " \t\"=") != NULL)
		conf_add_error(cx, a->line, "account '%s': the name must be non-empty and contain "
			       "no blanks, quotes or '='", a->name);
}

static void conf_extract(struct conf_ctx *cx, cfg_t *cfg, struct conf *c)
{
	c->spool_dir = opt_strdup(cfg, "spool_dir");
	c->log_level = opt_strdup(cfg, "log_level");
	c->hostname = opt_strdup(cfg, "hostname");
	if (c->hostname == NULL) {
		char host[HOST_NAME_MAX + 1] = "localhost";
		if (gethostname(host, sizeof host) != 0)
			strcpy(host, "localhost");
		host[HOST_NAME_MAX] = '\0';
		c->hostname = xstrdup(host);
	}
	cfg_t *smtp = cfg_getsec(cfg, "smtp");
	c->smtp.host = opt_strdup(smtp, "host");
	c->smtp.port = (int)cfg_getint(smtp, "port");
	c->smtp.helo_name = opt_strdup(smtp, "helo_name");
	c->smtp.timeout = (int)cfg_getint(smtp, "timeout");
	const char *stls = cfg_getstr(smtp, "tls");
	c->smtp.tls = strcmp(stls, "required") == 0 ? TLS_IMPLICIT
		      : strcmp(stls, "starttls") == 0 ? TLS_STARTTLS : TLS_NONE;
	c->smtp.ca_file = opt_strdup(smtp, "ca_file");
	if (c->smtp.ca_file != NULL && access(c->smtp.ca_file, R_OK) != 0)
		conf_add_error(cx, 0, "smtp: option 'ca_file': cannot read '%s': %s",
			       c->smtp.ca_file, strerror(errno));
	c->naccounts = cfg_size(cfg, "account");
	c->accounts = xcalloc(c->naccounts, sizeof *c->accounts);
	for (size_t i = 0; i < c->naccounts; i++)
		account_extract(cx, c, cfg_getnsec(cfg, "account", (unsigned)i), &c->accounts[i]);
	if (c->naccounts == 0)
		conf_add_error(cx, 0, "no account is configured (add an account \"NAME\" { ... } block)");
}

/* read_clean - read the file (bounded) and blank out its comments */
static char *read_clean(const char *path, char **err_r)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		set_err(err_r, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	char *text = xmalloc(CONF_MAX_SIZE + 1);
	size_t n = fread(text, 1, CONF_MAX_SIZE + 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad || n > CONF_MAX_SIZE || memchr(text, '\0', n) != NULL) {
		set_err(err_r, "%s: %s", path, bad ? "read error" :
			n > CONF_MAX_SIZE ? "file larger than 1 MiB" : "file contains NUL bytes");
		free(text);
		return NULL;
	}
	text[n] = '\0';
	strip_comments(text, n);
	return text;
}

enum pg_res conf_load(const char *path, struct conf **c_r, char **err_r)
{
	struct conf_ctx cx = { .path = path };
	struct conf *c = NULL;
	enum pg_res res = PG_CONFIG;
	cfg_t *cfg = NULL;
	*c_r = NULL;
	buf_init(&cx.errs, 64 * 1024);
	char *text = read_clean(path, err_r);
	if (text == NULL)
		goto out;
	cx.text = text;
	cur_ctx = &cx;
	cfg = cfg_init(top_opts, CFGF_NONE);
	cfg_set_error_function(cfg, conf_errfunc);
	set_validators(cfg);
	if (cfg_parse_buf(cfg, text) != CFG_SUCCESS) {
		if (cx.nerrs == 0)
			conf_add_error(&cx, 0, "cannot parse the file");
		goto fail;
	}
	c = xcalloc(1, sizeof *c);
	c->path = xstrdup(path);
	conf_extract(&cx, cfg, c);
	if (cx.nerrs > 0)
		goto fail;
	*c_r = c;
	c = NULL;
	res = PG_OK;
	goto out;
fail:
	set_err(err_r, "%s", cx.errs.data != NULL ? cx.errs.data : "configuration error");
out:
	conf_free(&c);
	if (cfg != NULL)
		cfg_free(cfg);
	cur_ctx = NULL;
	buf_free(&cx.errs);
	free(text);
	return res;
}

static void account_free(struct conf_account *a)
{
	free(a->name);
	free(a->server);
	free(a->ca_file);
	free(a->user);
	free(a->password_file);
	free(a->deliver_to);
}

void conf_free(struct conf **cp)
{
	struct conf *c = *cp;
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->naccounts; i++)
		account_free(&c->accounts[i]);
	free(c->accounts);
	free(c->path);
	free(c->spool_dir);
	free(c->hostname);
	free(c->log_level);
	free(c->smtp.host);
	free(c->smtp.helo_name);
	free(c->smtp.ca_file);
	free(c);
	*cp = NULL;
}

const struct conf_account *conf_find_account(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->naccounts; i++)
		if (strcmp(c->accounts[i].name, name) == 0)
			return &c->accounts[i];
	return NULL;
}

enum pg_res conf_read_secret(const struct conf_account *a, char **secret_r, char **err_r)
{
	char *why = NULL;
	*secret_r = NULL;
	if (check_secret_file(a->password_file, &why) != 0) {
		set_err(err_r, "account '%s': password_file: %s", a->name, why);
		free(why);
		return PG_CONFIG;
	}
	FILE *f = fopen(a->password_file, "r");
	if (f == NULL) {
		set_err(err_r, "account '%s': cannot open password_file '%s': %s", a->name,
			a->password_file, strerror(errno));
		return PG_CONFIG;
	}
	char *s = xmalloc(SECRET_MAX + 1);
	size_t n = fread(s, 1, SECRET_MAX + 1, f);
	fclose(f);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	if (n == 0 || n > SECRET_MAX || memchr(s, '\0', n) != NULL || memchr(s, '\n', n) != NULL) {
		set_err(err_r, "account '%s': password_file '%s' must hold one non-empty line",
			a->name, a->password_file);
		explicit_bzero(s, SECRET_MAX + 1);
		free(s);
		return PG_CONFIG;
	}
	s[n] = '\0';
	*secret_r = s;
	return PG_OK;
}
