/*
 * conf.c - the configuration file (see conf.h): read, clean, parse with
 * libconfuse, extract into struct conf, check across options.  The option
 * tables and validators are in conf_schema.c, secrets in conf_secret.c.
 *
 * libconfuse (3.3 in Debian 12) miscounts line numbers after comments (each
 * "#" or "//" comment adds two to the count, a block comment one), which
 * would send an admin to the wrong line.  We therefore blank out comments
 * ourselves, keeping every newline, and hand libconfuse the cleaned text:
 * its line counter is then exact.
 */
#include "config.h"

#include <confuse.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "conf.h"
#include "conf_int.h"
#include "log.h"

/* 10,000 accounts take about 2 MiB (issue 16: a 10,000-mailbox site) */
#define CONF_MAX_SIZE (16 * 1024 * 1024)

struct conf_ctx {
	const char *path;
	char *dir;        /* the file's directory (absolute): base of relative paths */
	struct buf errs;
	int nerrs;
	const char *text; /* the cleaned file, to find section lines */
	const char *scan_from; /* just after the last account header found */
	int scan_line;         /* the line scan_from is on */
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

/* section_line - the line where `account "NAME"` starts in the cleaned text
 * (the name must match whole, so "office" does not match "office2"; with
 * prefix, only its first nlen octets: a name whose control character was
 * written as an escape such as \n) */
static int section_line_n(const char *text, const char *from, int line, const char *name,
			  size_t nlen, int prefix, const char **at_r)
{
	for (const char *p = from; *p; p++) {
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
		if (prefix || (quote && end == quote) ||
		    (!quote && (end == ' ' || end == '\t' || end == '{' || end == '\n'))) {
			*at_r = p + 1;
			return line;
		}
	}
	return 0;
}

/* section_line - the line of account `name`'s header.  Sections come in
 * file order, so the search starts after the previous one found (from the
 * top again if not there): a search from the top for each account made
 * loading 10,000 accounts take 30 s. */
static int section_line(struct conf_ctx *cx, const char *name)
{
	const char *text = cx->text, *at = NULL;
	size_t len = strlen(name);
	int line = 0;
	if (cx->scan_from != NULL)
		line = section_line_n(text, cx->scan_from, cx->scan_line, name, len, 0, &at);
	if (line == 0)
		line = section_line_n(text, text, 1, name, len, 0, &at);
	if (line != 0) {
		cx->scan_from = at;
		cx->scan_line = line;
		return line;
	}
	size_t ok = strcspn(name, "\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f"
			    "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f");
	if (name[ok] != '\0')
		line = section_line_n(text, text, 1, name, ok, 1, &at);
	return line;
}

static enum tls_mode tls_parse(const char *v)
{
	static const enum tls_mode modes[] = { TLS_IMPLICIT, TLS_STARTTLS, TLS_NONE };
	int i = conf_name_index(conf_tls_names, v);
	return i >= 0 ? modes[i] : TLS_IMPLICIT;
}

static char *opt_strdup(cfg_t *sec, const char *name)
{
	const char *v = cfg_getstr(sec, name);
	return v != NULL ? xstrdup(v) : NULL;
}

/* opt_path - a path option, made absolute against the directory of the
 * configuration file, once, at load (the daemon later does chdir("/")) */
static char *opt_path(const struct conf_ctx *cx, cfg_t *sec, const char *name)
{
	const char *v = cfg_getstr(sec, name);
	if (v == NULL)
		return NULL;
	if (v[0] == '/' || v[0] == '\0' || cx->dir == NULL)
		return xstrdup(v);
	return xasprintf("%s/%s", cx->dir, v);
}

/* opt_duration - a validated time option in seconds */
static long opt_duration(cfg_t *sec, const char *name)
{
	long v = 0;
	if (conf_parse_duration(cfg_getstr(sec, name), &v) != 0)
		v = 0;
	return v;
}

static char *lower_dup(const char *v)
{
	char *r = xstrdup(v);
	for (char *p = r; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return r;
}

/* account_routing - single-drop or multidrop options */
static void account_routing(struct conf_ctx *cx, cfg_t *sec, struct conf_account *a)
{
	a->deliver_to = opt_strdup(sec, "deliver_to");
	const char *eh = cfg_getstr(sec, "envelope_header");
	if (eh != NULL)
		a->envelope_header = xstrdup(conf_envhdr_names[conf_name_index(conf_envhdr_names, eh)]);
	a->envelope_skip = (int)cfg_getint(sec, "envelope_skip");
	a->nlocal_domains = cfg_size(sec, "local_domains");
	a->local_domains = xcalloc(a->nlocal_domains, sizeof *a->local_domains);
	for (size_t i = 0; i < a->nlocal_domains; i++)
		a->local_domains[i] = lower_dup(cfg_getnstr(sec, "local_domains", (unsigned)i));
	a->nmaps = cfg_size(sec, "map");
	a->maps = xcalloc(a->nmaps, sizeof *a->maps);
	for (size_t i = 0; i < a->nmaps; i++) {
		cfg_t *m = cfg_getnsec(sec, "map", (unsigned)i);
		a->maps[i].from = lower_dup(cfg_title(m));
		a->maps[i].to = opt_strdup(m, "to");
		if (a->maps[i].to == NULL)
			conf_add_error(cx, a->line, "account '%s': map '%s' needs a 'to' address",
				       a->name, a->maps[i].from);
	}
	a->fallback_to = opt_strdup(sec, "fallback_to");
	a->guess_from_headers = cfg_getbool(sec, "guess_from_headers");
	a->envelope_from = opt_strdup(sec, "envelope_from");
	if (a->envelope_from != NULL && strcmp(a->envelope_from, "<>") == 0)
		a->envelope_from[0] = '\0';
	if ((a->deliver_to == NULL) == (a->envelope_header == NULL))
		conf_add_error(cx, a->line, "account '%s': give exactly one of 'deliver_to' "
			       "(single-drop) or 'envelope_header' (multidrop)", a->name);
	if (a->envelope_header == NULL && (a->nlocal_domains || a->nmaps || a->fallback_to))
		conf_add_error(cx, a->line, "account '%s': local_domains, map and fallback_to need "
			       "envelope_header (multidrop)", a->name);
}

/* account_limits - leave-on-server, size limits, timeouts */
static void account_limits(struct conf_ctx *cx, cfg_t *sec, struct conf_account *a)
{
	a->keep = cfg_getbool(sec, "keep");
	a->keep_days = (int)cfg_getint(sec, "keep_days");
	if (a->keep_days > 0 && !a->keep)
		conf_add_error(cx, a->line, "account '%s': keep_days needs keep = true", a->name);
	conf_parse_size(cfg_getstr(sec, "max_message_size"), &a->max_message_size);
	a->oversize = (enum conf_oversize)conf_name_index(conf_oversize_names, cfg_getstr(sec, "oversize"));
	a->max_messages_per_poll = (unsigned)cfg_getint(sec, "max_messages_per_poll");
	a->dedupe = conf_name_index(conf_dedupe_names, cfg_getstr(sec, "dedupe"));
	a->dedupe_days = (int)cfg_getint(sec, "dedupe_days");
	a->dedupe_alert = (unsigned)cfg_getint(sec, "dedupe_alert");
	/* a multidrop mailbox holds one copy per recipient: same Message-ID and
	 * body, only the envelope header differs; `message` would drop all but one */
	if (a->dedupe == conf_name_index(conf_dedupe_names, "message") && a->envelope_header != NULL)
		conf_add_error(cx, a->line,
			       "account '%s': dedupe = \"message\" cannot tell apart the copies of a "
			       "multidrop mailbox (one per recipient, the same Message-ID and body): "
			       "use \"exact\" with envelope_header",
			       a->name);
	conf_parse_size(cfg_getstr(sec, "max_bytes_per_poll"), &a->max_bytes_per_poll);
	a->interval = (int)opt_duration(sec, "interval");
	a->timeout = (int)opt_duration(sec, "timeout");
	a->connect_timeout = (int)opt_duration(sec, "connect_timeout");
	a->tls_timeout = (int)opt_duration(sec, "tls_timeout");
	a->session_timeout = (int)opt_duration(sec, "session_timeout");
}

/* ---- OAuth2 block ----------------------------------------------------------
 * An account's `oauth2 { }`: the provider's defaults, then the checks of each
 * flow.  Every error names the account, "oauth2", the option and the fix,
 * at the line of the oauth2 block.  Kept together here, apart from the
 * password options, so the rest of conf.c can change independently. */

#define MS_LOGIN "https://login.microsoftonline.com/"
#define MS_SCOPE_DELEGATED "https://outlook.office.com/POP.AccessAsUser.All offline_access"
#define MS_SCOPE_APP "https://outlook.office365.com/.default"
#define GOOGLE_AUTHORIZE "https://accounts.google.com/o/oauth2/v2/auth"
#define GOOGLE_TOKEN "https://oauth2.googleapis.com/token"
#define GOOGLE_SCOPE "https://mail.google.com/"

static void oauth2_free(struct conf_oauth2 **op)
{
	struct conf_oauth2 *o = *op;
	if (o == NULL)
		return;
	free(o->tenant);
	free(o->client_id);
	free(o->client_secret_file);
	free(o->client_certificate_file);
	free(o->client_key_file);
	free(o->scope);
	free(o->token_endpoint);
	free(o->device_endpoint);
	free(o->authorize_endpoint);
	free(o->ca_file);
	free(o);
	*op = NULL;
}

static void oauth2_error(struct conf_ctx *cx, const struct conf_account *a, const char *fmt, ...)
	PG_PRINTF(3, 4);

static void oauth2_error(struct conf_ctx *cx, const struct conf_account *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	conf_add_error(cx, a->oauth2->line, "account '%s': oauth2: %s", a->name, msg);
	free(msg);
}

/* oauth2_https_ok - an absolute https URL with a host, no blanks or controls */
static int oauth2_https_ok(const char *u)
{
	if (strncasecmp(u, "https://", 8) != 0 || u[8] == '\0' || u[8] == '/')
		return 0;
	for (const unsigned char *p = (const unsigned char *)u; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return 0;
	return 1;
}

/* oauth2_tenant_ok - a GUID, a domain or common/organizations/consumers:
 * it becomes part of a URL path */
static int oauth2_tenant_ok(const char *t)
{
	for (const char *p = t; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
			return 0;
	return *t != '\0' && *t != '.' && strlen(t) <= 253;
}

/* oauth2_defaults - the provider's endpoints and scope where not given */
static void oauth2_defaults(struct conf_ctx *cx, const struct conf_account *a)
{
	struct conf_oauth2 *o = a->oauth2;
	int app = o->flow == OAUTH2_FLOW_CLIENT_CREDENTIALS;
	if (o->provider == OAUTH2_PROVIDER_MICROSOFT) {
		if (o->tenant == NULL) {
			oauth2_error(cx, a, "option 'tenant' is required with provider = microsoft "
				     "(the directory: its GUID or domain, or organizations)");
			return;
		}
		if (!oauth2_tenant_ok(o->tenant)) {
			oauth2_error(cx, a, "option 'tenant': '%s' is not a tenant ID, domain, "
				     "organizations, common or consumers", o->tenant);
			return;
		}
		if (app && (strcasecmp(o->tenant, "common") == 0 ||
			    strcasecmp(o->tenant, "organizations") == 0 ||
			    strcasecmp(o->tenant, "consumers") == 0))
			oauth2_error(cx, a, "option 'tenant': flow = client_credentials needs the "
				     "tenant's ID or domain, not '%s'", o->tenant);
		if (o->token_endpoint == NULL)
			o->token_endpoint = xasprintf(MS_LOGIN "%s/oauth2/v2.0/token", o->tenant);
		if (o->device_endpoint == NULL && o->flow == OAUTH2_FLOW_DEVICE)
			o->device_endpoint = xasprintf(MS_LOGIN "%s/oauth2/v2.0/devicecode", o->tenant);
		if (o->authorize_endpoint == NULL && o->flow == OAUTH2_FLOW_BROWSER)
			o->authorize_endpoint = xasprintf(MS_LOGIN "%s/oauth2/v2.0/authorize",
							  o->tenant);
		if (o->scope == NULL)
			o->scope = xstrdup(app ? MS_SCOPE_APP : MS_SCOPE_DELEGATED);
	} else if (o->provider == OAUTH2_PROVIDER_GOOGLE) {
		if (o->token_endpoint == NULL)
			o->token_endpoint = xstrdup(GOOGLE_TOKEN);
		if (o->authorize_endpoint == NULL && o->flow == OAUTH2_FLOW_BROWSER)
			o->authorize_endpoint = xstrdup(GOOGLE_AUTHORIZE);
		if (o->scope == NULL)
			o->scope = xstrdup(GOOGLE_SCOPE);
	}
}

/* oauth2_flow_check - what each provider and flow requires */
static void oauth2_flow_check(struct conf_ctx *cx, const struct conf_account *a)
{
	const struct conf_oauth2 *o = a->oauth2;
	int cert = o->client_certificate_file != NULL, key = o->client_key_file != NULL;
	if (o->provider == OAUTH2_PROVIDER_GOOGLE && o->flow == OAUTH2_FLOW_DEVICE)
		oauth2_error(cx, a, "option 'flow': Google does not grant its mail scope to the "
			     "device flow; use flow = \"browser\"");
	if (o->provider == OAUTH2_PROVIDER_GOOGLE && o->flow == OAUTH2_FLOW_CLIENT_CREDENTIALS)
		oauth2_error(cx, a, "option 'flow': Google has no client_credentials grant for "
			     "Gmail; use flow = \"browser\"");
	if (o->provider == OAUTH2_PROVIDER_GOOGLE && o->client_secret_file == NULL)
		oauth2_error(cx, a, "option 'client_secret_file' is required with provider = google "
			     "(the Desktop app client's secret, in a file of mode 0600)");
	if (o->provider == OAUTH2_PROVIDER_GENERIC) {
		if (o->token_endpoint == NULL)
			oauth2_error(cx, a, "option 'token_endpoint' is required with provider = generic");
		if (o->flow == OAUTH2_FLOW_DEVICE && o->device_endpoint == NULL)
			oauth2_error(cx, a, "option 'device_endpoint' is required with provider = "
				     "generic and flow = device");
		if (o->flow == OAUTH2_FLOW_BROWSER && o->authorize_endpoint == NULL)
			oauth2_error(cx, a, "option 'authorize_endpoint' is required with provider = "
				     "generic and flow = browser");
		if (o->scope == NULL)
			oauth2_error(cx, a, "option 'scope' is required with provider = generic");
	}
	if (o->flow == OAUTH2_FLOW_CLIENT_CREDENTIALS) {
		if (cert != key)
			oauth2_error(cx, a, "options 'client_certificate_file' and 'client_key_file' go "
				     "together (a certificate credential)");
		if ((o->client_secret_file != NULL) == (cert || key))
			oauth2_error(cx, a, "flow = client_credentials needs exactly one credential: "
				     "'client_secret_file', or 'client_certificate_file' and "
				     "'client_key_file'");
	} else if (cert || key) {
		oauth2_error(cx, a, "options 'client_certificate_file' and 'client_key_file' are "
			     "used with flow = \"client_credentials\" only");
	}
}

/* oauth2_files_check - files readable, secrets 0600, endpoints https */
static void oauth2_files_check(struct conf_ctx *cx, const struct conf_account *a)
{
	const struct conf_oauth2 *o = a->oauth2;
	const struct {
		const char *name, *value;
		int secret;
	} files[] = {
		{ "client_secret_file", o->client_secret_file, 1 },
		{ "client_key_file", o->client_key_file, 1 },
		{ "client_certificate_file", o->client_certificate_file, 0 },
		{ "ca_file", o->ca_file, 0 },
	};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *why = NULL;
		if (files[i].value == NULL)
			continue;
		if (files[i].secret && conf_check_secret_file(files[i].value, &why) != 0)
			oauth2_error(cx, a, "option '%s': %s", files[i].name, why);
		else if (!files[i].secret && access(files[i].value, R_OK) != 0)
			oauth2_error(cx, a, "option '%s': cannot read '%s': %s", files[i].name,
				     files[i].value, strerror(errno));
		free(why);
	}
	const struct {
		const char *name, *value;
	} urls[] = {
		{ "token_endpoint", o->token_endpoint },
		{ "device_endpoint", o->device_endpoint },
		{ "authorize_endpoint", o->authorize_endpoint },
	};
	for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++)
		if (urls[i].value != NULL && !oauth2_https_ok(urls[i].value))
			oauth2_error(cx, a, "option '%s': '%s' is not an https:// URL (tokens travel "
				     "only over verified TLS; give a private CA in 'ca_file')",
				     urls[i].name, urls[i].value);
}

/* oauth2_line - the line of the first "oauth2 {" at or after line `from`
 * (libconfuse gives a section the line of its closing brace) */
static int oauth2_line(const char *text, int from)
{
	int line = 1;
	for (const char *p = text; *p; p++) {
		if (*p == '\n') {
			line++;
			continue;
		}
		if (line < from || strncmp(p, "oauth2", 6) != 0 ||
		    (p > text && !isspace((unsigned char)p[-1])))
			continue;
		const char *q = p + 6;
		while (isspace((unsigned char)*q))
			q++;
		if (*q == '{')
			return line;
	}
	return 0;
}

/* account_oauth2 - the oauth2 block: popgate gets the access token itself */
static void account_oauth2(struct conf_ctx *cx, cfg_t *sec, struct conf_account *a)
{
	cfg_t *os = cfg_getnsec(sec, "oauth2", 0);
	struct conf_oauth2 *o = a->oauth2 = xcalloc(1, sizeof *o);
	o->line = oauth2_line(cx->text, a->line);
	if (o->line == 0)
		o->line = os->line > 0 ? os->line : a->line;
	if (cfg_size(sec, "oauth2") > 1)
		oauth2_error(cx, a, "only one oauth2 block per account");
	if (a->password_file != NULL || a->password_command != NULL)
		oauth2_error(cx, a, "an account with an oauth2 block takes no '%s': popgate gets "
			     "the access token itself; remove that option",
			     a->password_file ? "password_file" : "password_command");
	if (a->auth != AUTH_XOAUTH2 && a->auth != AUTH_OAUTHBEARER)
		oauth2_error(cx, a, "the account's auth = %s cannot carry a token; set auth = "
			     "\"xoauth2\" (Microsoft 365, Gmail) or \"oauthbearer\"",
			     conf_auth_name(a->auth));
	if (a->name[0] == '.' || strchr(a->name, '/') != NULL)
		oauth2_error(cx, a, "the account name names its token file: no '/' or leading '.'");
	const char *prov = cfg_getstr(os, "provider"), *flow = cfg_getstr(os, "flow");
	if (prov == NULL)
		oauth2_error(cx, a, "option 'provider' is required (microsoft, google or generic)");
	if (flow == NULL)
		oauth2_error(cx, a, "option 'flow' is required (device, browser or "
			     "client_credentials)");
	if (cfg_getstr(os, "client_id") == NULL)
		oauth2_error(cx, a, "option 'client_id' is required (the application (client) ID "
			     "of the app registration)");
	if (prov == NULL || flow == NULL)
		return;
	o->provider = (enum conf_oauth2_provider)conf_name_index(conf_oauth2_provider_names, prov);
	o->flow = (enum conf_oauth2_flow)conf_name_index(conf_oauth2_flow_names, flow);
	static const char *const strs[] = { "tenant", "client_id", "client_secret_file",
		"client_certificate_file", "client_key_file", "scope", "token_endpoint",
		"device_endpoint", "authorize_endpoint", "ca_file" };
	char **dst[] = { &o->tenant, &o->client_id, &o->client_secret_file,
		&o->client_certificate_file, &o->client_key_file, &o->scope, &o->token_endpoint,
		&o->device_endpoint, &o->authorize_endpoint, &o->ca_file };
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
		*dst[i] = opt_strdup(os, strs[i]);
	oauth2_defaults(cx, a);
	oauth2_flow_check(cx, a);
	oauth2_files_check(cx, a);
}
/* ---- end of the OAuth2 block ------------------------------------------- */

/* account_secret - exactly one source of the password, and a safe file */
static void account_secret(struct conf_ctx *cx, cfg_t *sec, struct conf_account *a)
{
	a->password_file = opt_path(cx, sec, "password_file");
	a->password_command = opt_strdup(sec, "password_command");
	if (cfg_size(sec, "oauth2") > 0) {
		account_oauth2(cx, sec, a);
		return;
	}
	if ((a->password_file == NULL) == (a->password_command == NULL))
		conf_add_error(cx, a->line, "account '%s': give exactly one of 'password_file' or "
			       "'password_command'", a->name);
	char *why = NULL;
	if (a->password_file != NULL && conf_check_secret_file(a->password_file, &why) != 0)
		conf_add_error(cx, a->line, "account '%s': option 'password_file': %s", a->name, why);
	free(why);
	if ((a->auth == AUTH_XOAUTH2 || a->auth == AUTH_OAUTHBEARER) && a->password_command == NULL)
		conf_add_error(cx, a->line, "account '%s': auth = %s needs an oauth2 { } block "
			       "(popgate gets the tokens) or 'password_command' (a program prints "
			       "the access token)", a->name, conf_auth_name(a->auth));
}

/* account_extract - copy one account section, reporting missing options
 * and cross-option problems at the section's line */
static void account_extract(struct conf_ctx *cx, struct conf *c, cfg_t *sec,
			    struct conf_account *a)
{
	static const char *const required[] = { "server", "user" };
	a->name = xstrdup(cfg_title(sec));
	a->file = c->path;
	a->line = section_line(cx, a->name);
	/* the name goes into every message's Received field (inside a comment)
	 * and into every log line: a CR or LF there would add header fields
	 * or log lines, a parenthesis would end the comment */
	if (conf_has_control(a->name)) {
		char *shown = sanitize_for_log(a->name, strlen(a->name), 100);
		conf_add_error(cx, a->line, "account '%s': the name contains a control character "
			       "(CR, LF, TAB, NUL...): it would break the Received field and the "
			       "log lines", shown);
		free(a->name); /* from here on only used in messages */
		a->name = shown;
	} else if (a->name[0] == '\0' || strpbrk(a->name, " \"=()\\") != NULL) {
		conf_add_error(cx, a->line, "account '%s': the name must be non-empty and contain "
			       "no blanks, quotes, parentheses, backslashes or '='", a->name);
	}
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
		if (cfg_size(sec, required[i]) == 0)
			conf_add_error(cx, a->line, "account '%s': missing required option '%s'",
				       a->name, required[i]);
	a->server = opt_strdup(sec, "server");
	a->tls = tls_parse(cfg_getstr(sec, "tls"));
	a->port = (int)cfg_getint(sec, "port");
	if (a->port == 0)
		a->port = a->tls == TLS_IMPLICIT ? 995 : 110;
	a->ca_file = opt_path(cx, sec, "ca_file");
	a->tls_fingerprint = opt_strdup(sec, "tls_fingerprint");
	a->user = opt_strdup(sec, "user");
	a->auth = (enum conf_auth)conf_name_index(conf_auth_names, cfg_getstr(sec, "auth"));
	a->allow_plaintext = cfg_getbool(sec, "allow_plaintext");
	a->pipelining = cfg_getbool(sec, "pipelining");
	account_secret(cx, sec, a);
	account_routing(cx, sec, a);
	account_limits(cx, sec, a);
	if (a->ca_file != NULL && access(a->ca_file, R_OK) != 0)
		conf_add_error(cx, a->line, "account '%s': option 'ca_file': cannot read '%s': %s",
			       a->name, a->ca_file, strerror(errno));
	if (a->tls_fingerprint != NULL && a->tls == TLS_NONE)
		conf_add_error(cx, a->line, "account '%s': tls_fingerprint needs tls = implicit or "
			       "starttls", a->name);
}

/* conf_smtp_extract - the smtp block */
static void conf_smtp_extract(struct conf_ctx *cx, cfg_t *smtp, struct conf_smtp *s)
{
	s->host = opt_strdup(smtp, "host");
	s->port = (int)cfg_getint(smtp, "port");
	s->helo_name = opt_strdup(smtp, "helo_name");
	s->timeout = (int)opt_duration(smtp, "timeout");
	static const enum smtp_tls smodes[] = { SMTP_TLS_NONE,	 SMTP_TLS_MAY,	  SMTP_TLS_ENCRYPT,
						SMTP_TLS_VERIFY, SMTP_TLS_VERIFY, SMTP_TLS_VERIFY };
	int ti = conf_name_index(conf_smtp_tls_names, cfg_getstr(smtp, "tls"));
	s->tls = ti >= 0 ? smodes[ti] : SMTP_TLS_NONE;
	s->ca_file = opt_path(cx, smtp, "ca_file");
	s->tls_fingerprint = opt_strdup(smtp, "tls_fingerprint");
	if (s->tls_fingerprint != NULL && s->tls == SMTP_TLS_NONE)
		conf_add_error(cx, 0, "smtp: option 'tls_fingerprint' needs TLS: set tls = \"encrypt\" "
			       "(or may or verify) in the smtp block");
	if (s->ca_file != NULL && access(s->ca_file, R_OK) != 0)
		conf_add_error(cx, 0, "smtp: option 'ca_file': cannot read '%s': %s", s->ca_file,
			       strerror(errno));
	s->user = opt_strdup(smtp, "user");
	s->password_file = opt_path(cx, smtp, "password_file");
	s->allow_plaintext_auth = cfg_getbool(smtp, "allow_plaintext_auth");
	s->max_sessions = (int)cfg_getint(smtp, "max_sessions");
	s->max_messages_per_session = (int)cfg_getint(smtp, "max_messages_per_session");
	char *why = NULL;
	if ((s->user == NULL) != (s->password_file == NULL))
		conf_add_error(cx, 0, "smtp: 'user' and 'password_file' go together (SMTP AUTH)");
	else if (s->password_file != NULL && conf_check_secret_file(s->password_file, &why) != 0)
		conf_add_error(cx, 0, "smtp: option 'password_file': %s", why);
	free(why);
}

/* conf_policy_extract - daemon and queue policy at the top level */
static void conf_policy_extract(struct conf_ctx *cx, cfg_t *cfg, struct conf *c)
{
	c->user = opt_strdup(cfg, "user");
	c->pid_file = opt_path(cx, cfg, "pid_file");
	c->max_parallel_polls = (int)cfg_getint(cfg, "max_parallel_polls");
	c->metrics_file = opt_path(cx, cfg, "metrics_file");
	c->keep_sent_days = (int)cfg_getint(cfg, "keep_sent_days");
	c->postmaster = opt_strdup(cfg, "postmaster");
	const char *b = cfg_getstr(cfg, "bounce");
	c->bounce = b ? (enum conf_bounce)conf_name_index(conf_bounce_names, b)
		      : c->postmaster ? BOUNCE_POSTMASTER : BOUNCE_NONE;
	if (c->bounce == BOUNCE_POSTMASTER && c->postmaster == NULL)
		conf_add_error(cx, 0, "bounce = postmaster needs a 'postmaster' address");
	c->max_queue_time = opt_duration(cfg, "max_queue_time");
	c->status_warn_age = opt_duration(cfg, "status_warn_age");
	c->nretry = cfg_size(cfg, "retry_intervals");
	c->retry_intervals = xcalloc(c->nretry ? c->nretry : 1, sizeof *c->retry_intervals);
	for (size_t i = 0; i < c->nretry; i++)
		conf_parse_duration(cfg_getnstr(cfg, "retry_intervals", (unsigned)i),
				    &c->retry_intervals[i]);
	if (c->nretry == 0) {
		c->retry_intervals[0] = 3600;
		c->nretry = 1;
	}
}

static void conf_extract(struct conf_ctx *cx, cfg_t *cfg, struct conf *c)
{
	c->spool_dir = opt_path(cx, cfg, "spool_dir");
	c->log_level = opt_strdup(cfg, "log_level");
	c->hostname = opt_strdup(cfg, "hostname");
	if (c->hostname == NULL) {
		char host[HOST_NAME_MAX + 1] = "localhost";
		if (gethostname(host, sizeof host) != 0)
			strcpy(host, "localhost");
		host[HOST_NAME_MAX] = '\0';
		if (conf_has_control(host) || strpbrk(host, " ()<>;\"\\") != NULL) {
			char *shown = sanitize_for_log(host, strlen(host), 100);
			conf_add_error(cx, 0, "option 'hostname': the system's host name '%s' cannot "
				       "go into a Received field; set hostname", shown);
			free(shown);
		}
		c->hostname = xstrdup(host);
	}
	conf_smtp_extract(cx, cfg_getsec(cfg, "smtp"), &c->smtp);
	conf_policy_extract(cx, cfg, c);
	c->naccounts = cfg_size(cfg, "account");
	c->accounts = xcalloc(c->naccounts, sizeof *c->accounts);
	for (size_t i = 0; i < c->naccounts; i++)
		account_extract(cx, c, cfg_getnsec(cfg, "account", (unsigned)i), &c->accounts[i]);
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
			n > CONF_MAX_SIZE ? "file larger than 16 MiB" : "file contains NUL bytes");
		free(text);
		return NULL;
	}
	text[n] = '\0';
	strip_comments(text, n);
	return text;
}

/* abs_path - path made absolute against the working directory (symbolic
 * links kept: relative options follow the file as the admin named it) */
static char *abs_path(const char *path)
{
	char cwd[PATH_MAX];
	if (path[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
		return xstrdup(path);
	while (path[0] == '.' && path[1] == '/')
		path += 2;
	return xasprintf("%s%s%s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", path);
}

/* ---- options given twice (libconfuse keeps the last one silently) ---- */

struct conf_key {
	int scope;          /* which { } block */
	const char *name;   /* into the cleaned text */
	size_t len;
	int line;
};

static int ident_char(char ch, int first)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
	       (!first && ((ch >= '0' && ch <= '9') || ch == '-'));
}

/* note_key - a key at text[i..i+len) in scope; warn if the scope had it */
static void note_key(struct buf *w, const char *file, struct conf_key **keys, size_t *n,
		     size_t *cap, struct conf_key k)
{
	for (size_t j = 0; j < *n; j++) {
		const struct conf_key *o = &(*keys)[j];
		if (o->scope == k.scope && o->len == k.len && strncmp(o->name, k.name, k.len) == 0) {
			buf_printf(w, "%s%s:%d: option '%.*s' is given again (first at line %d); "
				   "only one counts: remove the other", w->len ? "\n" : "", file,
				   k.line, (int)k.len, k.name, o->line);
			return;
		}
	}
	if (*n == *cap)
		*keys = xrealloc(*keys, (*cap = *cap ? *cap * 2 : 64) * sizeof **keys);
	(*keys)[(*n)++] = k;
}

/* find_duplicates - every `name =` (or untitled `name {`) given twice in
 * one block of the cleaned text, as warning lines (NULL if none) */
static char *find_duplicates(const char *file, const char *t)
{
	struct buf w;
	struct conf_key *keys = NULL;
	size_t n = 0, cap = 0, depth = 0;
	int stack[32] = { 0 }, next_scope = 1, line = 1;
	buf_init(&w, 64 * 1024);
	for (size_t i = 0; t[i] != '\0';) {
		char ch = t[i];
		if (ch == '"' || ch == '\'') {
			for (i++; t[i] != '\0' && t[i] != ch; i++) {
				line += t[i] == '\n';
				if (t[i] == '\\' && t[i + 1] != '\0')
					i++;
			}
			i += t[i] != '\0';
		} else if (ch == '{' || ch == '}') {
			if (ch == '{' && depth + 1 < sizeof stack / sizeof stack[0])
				stack[++depth] = next_scope++;
			else if (ch == '}' && depth > 0)
				depth--;
			i++;
		} else if (ident_char(ch, 1) && (i == 0 || !ident_char(t[i - 1], 0))) {
			size_t j = i;
			while (ident_char(t[j], 0))
				j++;
			size_t k = j;
			while (t[k] == ' ' || t[k] == '\t')
				k++;
			if (t[k] == '=' || t[k] == '{')
				note_key(&w, file, &keys, &n, &cap, (struct conf_key){
					.scope = stack[depth], .name = t + i, .len = j - i, .line = line });
			i = j;
		} else {
			line += ch == '\n';
			i++;
		}
	}
	free(keys);
	return w.data;
}

enum pg_res conf_load(const char *path, struct conf **c_r, char **err_r)
{
	char *apath = abs_path(path);
	struct conf_ctx cx = { .path = apath };
	struct conf *c = NULL;
	enum pg_res res = PG_CONFIG;
	cfg_t *cfg = NULL;
	*c_r = NULL;
	cx.dir = xstrdup(apath);
	*strrchr(cx.dir, '/') = '\0';
	if (cx.dir[0] == '\0')
		strcpy(cx.dir, "/");
	buf_init(&cx.errs, 64 * 1024);
	char *text = read_clean(apath, err_r);
	if (text == NULL)
		goto out;
	cx.text = text;
	cur_ctx = &cx;
	cfg = conf_schema_init();
	cfg_set_error_function(cfg, conf_errfunc);
	conf_set_validators(cfg);
	if (cfg_parse_buf(cfg, text) != CFG_SUCCESS) {
		if (cx.nerrs == 0)
			conf_add_error(&cx, 0, "cannot parse the file");
		goto fail;
	}
	c = xcalloc(1, sizeof *c);
	c->path = xstrdup(apath);
	c->warnings = find_duplicates(apath, text);
	conf_extract(&cx, cfg, c);
	if (cx.nerrs > 0)
		goto fail;
	if (c->naccounts == 0) { /* valid: the daemon idles until a reload adds one */
		char *w = xasprintf("%s%s", c->warnings != NULL ? c->warnings : "",
				    CONF_NO_ACCOUNT_WARNING "\n");
		free(c->warnings);
		c->warnings = w;
	}
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
	free(cx.dir);
	free(apath);
	return res;
}

static void account_free(struct conf_account *a)
{
	free(a->name);
	free(a->server);
	free(a->ca_file);
	free(a->tls_fingerprint);
	free(a->user);
	free(a->password_file);
	free(a->password_command);
	free(a->deliver_to);
	free(a->envelope_header);
	for (size_t i = 0; i < a->nlocal_domains; i++)
		free(a->local_domains[i]);
	free(a->local_domains);
	for (size_t i = 0; i < a->nmaps; i++) {
		free(a->maps[i].from);
		free(a->maps[i].to);
	}
	free(a->maps);
	free(a->fallback_to);
	free(a->envelope_from);
	oauth2_free(&a->oauth2);
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
	free(c->warnings);
	free(c->spool_dir);
	free(c->hostname);
	free(c->log_level);
	free(c->user);
	free(c->pid_file);
	free(c->metrics_file);
	free(c->postmaster);
	free(c->retry_intervals);
	free(c->smtp.host);
	free(c->smtp.helo_name);
	free(c->smtp.ca_file);
	free(c->smtp.tls_fingerprint);
	free(c->smtp.user);
	free(c->smtp.password_file);
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

