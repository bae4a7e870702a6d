/*
 * conf_schema.c - the configuration file's options (libconfuse tables with
 * their defaults), the names each enumerated option accepts, and the
 * validators libconfuse calls while parsing (ranges, durations, sizes,
 * addresses).  conf.c parses and extracts; see conf.h for the contract.
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

/* port_in_range - min 0 lets 0 mean "the default for the TLS mode" */
static int port_in_range(cfg_t *cfg, cfg_opt_t *opt, long min)
{
	long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
	if (v < min || v > 65535) {
		cfg_error(cfg, "option '%s': %ld is not a port number (1-65535%s)", opt->name, v,
			  min == 0 ? ", or 0 for the default" : "");
		return -1;
	}
	return 0;
}

static int validate_port(cfg_t *cfg, cfg_opt_t *opt)
{
	return port_in_range(cfg, opt, 0);
}

static int validate_port_required(cfg_t *cfg, cfg_opt_t *opt)
{
	return port_in_range(cfg, opt, 1);
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

/* has_control - any octet below 0x20, or DEL */
int conf_has_control(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 1;
	return 0;
}

static cfg_opt_t smtp_opts[] = {
	CFG_STR("host", "127.0.0.1", CFGF_NONE),
	CFG_INT("port", 25, CFGF_NONE),
	CFG_STR("helo_name", NULL, CFGF_NONE),
	CFG_STR("timeout", "300", CFGF_NONE),
	CFG_STR("tls", "none", CFGF_NONE),
	CFG_STR("ca_file", NULL, CFGF_NONE),
	CFG_STR("tls_fingerprint", NULL, CFGF_NONE),
	CFG_STR("user", NULL, CFGF_NONE),
	CFG_STR("password_file", NULL, CFGF_NONE),
	CFG_BOOL("allow_plaintext_auth", cfg_false, CFGF_NONE),
	CFG_INT("max_sessions", 4, CFGF_NONE),
	CFG_INT("max_messages_per_session", 1000, CFGF_NONE),
	CFG_END(),
};

static cfg_opt_t map_opts[] = {
	CFG_STR("to", NULL, CFGF_NODEFAULT),
	CFG_END(),
};

/* the oauth2 block of an account (see "OAuth2 block" below) */
static cfg_opt_t oauth2_opts[] = {
	CFG_STR("provider", NULL, CFGF_NONE),
	CFG_STR("tenant", NULL, CFGF_NONE),
	CFG_STR("client_id", NULL, CFGF_NONE),
	CFG_STR("client_secret_file", NULL, CFGF_NONE),
	CFG_STR("client_certificate_file", NULL, CFGF_NONE),
	CFG_STR("client_key_file", NULL, CFGF_NONE),
	CFG_STR("flow", NULL, CFGF_NONE),
	CFG_STR("scope", NULL, CFGF_NONE),
	CFG_STR("token_endpoint", NULL, CFGF_NONE),
	CFG_STR("device_endpoint", NULL, CFGF_NONE),
	CFG_STR("authorize_endpoint", NULL, CFGF_NONE),
	CFG_STR("ca_file", NULL, CFGF_NONE),
	CFG_END(),
};

static cfg_opt_t account_opts[] = {
	CFG_STR("server", NULL, CFGF_NODEFAULT),
	CFG_INT("port", 0, CFGF_NONE),
	CFG_STR("tls", "implicit", CFGF_NONE),
	CFG_STR("ca_file", NULL, CFGF_NONE),
	CFG_STR("tls_fingerprint", NULL, CFGF_NONE),
	CFG_STR("user", NULL, CFGF_NODEFAULT),
	CFG_STR("password_file", NULL, CFGF_NONE),
	CFG_STR("password_command", NULL, CFGF_NONE),
	CFG_STR("auth", "auto", CFGF_NONE),
	CFG_BOOL("allow_plaintext", cfg_false, CFGF_NONE),
	CFG_BOOL("pipelining", cfg_true, CFGF_NONE),
	CFG_STR("deliver_to", NULL, CFGF_NONE),
	CFG_BOOL("keep", cfg_false, CFGF_NONE),
	CFG_INT("keep_days", 0, CFGF_NONE),
	CFG_STR("max_message_size", "0", CFGF_NONE),
	CFG_STR("oversize", "hold", CFGF_NONE),
	CFG_STR("dedupe", "exact", CFGF_NONE),
	CFG_INT("dedupe_days", 90, CFGF_NONE),
	CFG_INT("dedupe_alert", 100, CFGF_NONE),
	CFG_INT("max_messages_per_poll", 0, CFGF_NONE),
	CFG_STR("max_bytes_per_poll", "0", CFGF_NONE),
	CFG_STR("interval", "300", CFGF_NONE),
	CFG_STR("timeout", "60", CFGF_NONE),
	CFG_STR("connect_timeout", "30", CFGF_NONE),
	CFG_STR("tls_timeout", "30", CFGF_NONE),
	CFG_STR("session_timeout", "3600", CFGF_NONE),
	CFG_STR("envelope_header", NULL, CFGF_NONE),
	CFG_INT("envelope_skip", 0, CFGF_NONE),
	CFG_STR_LIST("local_domains", NULL, CFGF_NONE),
	CFG_SEC("map", map_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
	CFG_STR("fallback_to", NULL, CFGF_NONE),
	CFG_BOOL("guess_from_headers", cfg_false, CFGF_NONE),
	CFG_STR("envelope_from", NULL, CFGF_NONE),
	CFG_SEC("oauth2", oauth2_opts, CFGF_MULTI),
	CFG_END(),
};

static cfg_opt_t top_opts[] = {
	CFG_STR("spool_dir", "/var/spool/popgate", CFGF_NONE),
	CFG_STR("hostname", NULL, CFGF_NONE),
	CFG_STR("log_level", "info", CFGF_NONE),
	CFG_STR("user", NULL, CFGF_NONE),
	CFG_STR("pid_file", NULL, CFGF_NONE),
	CFG_INT("max_parallel_polls", 4, CFGF_NONE),
	CFG_STR("metrics_file", NULL, CFGF_NONE),
	CFG_INT("keep_sent_days", 0, CFGF_NONE),
	CFG_STR("postmaster", NULL, CFGF_NONE),
	CFG_STR("bounce", NULL, CFGF_NONE),
	CFG_STR("max_queue_time", "5d", CFGF_NONE),
	CFG_STR("status_warn_age", "1h", CFGF_NONE),
	CFG_STR_LIST("retry_intervals", "{1m, 5m, 15m, 30m, 1h}", CFGF_NONE),
	CFG_SEC("smtp", smtp_opts, CFGF_NONE),
	CFG_SEC("account", account_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
	CFG_END(),
};

cfg_t *conf_schema_init(void)
{
	return cfg_init(top_opts, CFGF_NONE);
}


const char *const conf_auth_names[] = { "auto", "user", "apop", "plain", "login",
					  "cram-md5", "scram-sha-1", "scram-sha-256",
					  "xoauth2", "oauthbearer", NULL };
const char *const conf_oversize_names[] = { "skip", "hold", "fetch", NULL };
/* in the order of enum spool_dedupe_mode */
const char *const conf_dedupe_names[] = { "off", "exact", "message", NULL };
const char *const conf_bounce_names[] = { "none", "postmaster", "sender", NULL };
const char *const conf_envhdr_names[] = { "Delivered-To", "X-Original-To", "Envelope-To",
					    "X-Envelope-To", "Received", NULL };
const char *const conf_tls_names[] = { "implicit", "starttls", "none", NULL };
/* Postfix's smtp_tls_security_level names; "starttls" and "required" (the
 * names of earlier versions) are aliases of verify */
const char *const conf_smtp_tls_names[] = { "none",	  "may",      "encrypt", "verify",
					      "starttls", "required", NULL };
const char *const conf_loglevel_names[] = { "error", "warning", "info", "debug", NULL };
const char *const conf_oauth2_provider_names[] = { "microsoft", "google", "generic", NULL };
const char *const conf_oauth2_flow_names[] = { "device", "browser", "client_credentials",
						 NULL };

const char *conf_auth_name(enum conf_auth a)
{
	if ((unsigned)a < sizeof conf_auth_names / sizeof conf_auth_names[0] - 1)
		return conf_auth_names[a];
	return "?";
}

int conf_name_index(const char *const *names, const char *v)
{
	for (int i = 0; names[i] != NULL; i++)
		if (strcasecmp(names[i], v) == 0)
			return i;
	return -1;
}

static char *names_joined(const char *const *names)
{
	struct buf b;
	buf_init(&b, 1024);
	for (int i = 0; names[i] != NULL; i++)
		buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
	return b.data ? b.data : xstrdup("");
}

/* validate_names - a string option whose value must be one of a list */
static int validate_names(cfg_t *cfg, cfg_opt_t *opt, const char *const *names)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	if (v != NULL && conf_name_index(names, v) >= 0)
		return 0;
	char *all = names_joined(names);
	cfg_error(cfg, "option '%s': '%s' is not one of %s", opt->name, v ? v : "", all);
	free(all);
	return -1;
}

static int validate_auth(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_auth_names);
}

static int validate_dedupe(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_dedupe_names);
}

static int validate_oversize(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_oversize_names);
}

static int validate_bounce(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_bounce_names);
}

static int validate_envhdr(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_envhdr_names);
}

static int validate_tls(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_tls_names);
}

static int validate_smtp_tls(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_smtp_tls_names);
}

static int validate_loglevel(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_loglevel_names);
}

static int validate_oauth2_provider(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_oauth2_provider_names);
}

static int validate_oauth2_flow(cfg_t *cfg, cfg_opt_t *opt)
{
	return validate_names(cfg, opt, conf_oauth2_flow_names);
}

const char *conf_oauth2_provider_name(enum conf_oauth2_provider p)
{
	return (unsigned)p < 3 ? conf_oauth2_provider_names[p] : "?";
}

const char *conf_oauth2_flow_name(enum conf_oauth2_flow f)
{
	return (unsigned)f < 3 ? conf_oauth2_flow_names[f] : "?";
}

int conf_parse_size(const char *s, uint64_t *v_r)
{
	char *end = NULL;
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	unsigned int shift = 0;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return -1;
	}
	if ((*end == 'b' || *end == 'B') && shift)
		end++;
	if (*end != '\0' || v > (UINT64_MAX >> shift))
		return -1;
	*v_r = (uint64_t)v << shift;
	return 0;
}

int conf_parse_duration(const char *s, long *v_r)
{
	char *end = NULL;
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	long v = strtol(s, &end, 10);
	long mul = 1;
	if (errno != 0)
		return -1;
	switch (*end) {
	case '\0': break;
	case 's': mul = 1; end++; break;
	case 'm': mul = 60; end++; break;
	case 'h': mul = 3600; end++; break;
	case 'd': mul = 86400; end++; break;
	case 'w': mul = 7 * 86400; end++; break;
	default: return -1;
	}
	if (*end != '\0' || v > 10L * 365 * 86400 / mul)
		return -1;
	*v_r = v * mul;
	return 0;
}

static int validate_size(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	uint64_t n;
	if (conf_parse_size(v, &n) != 0) {
		cfg_error(cfg, "option '%s': '%s' is not a size (e.g. 25M, 512K, 1048576)",
			  opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

/* Time options and their ranges in seconds; one syntax for all of them
 * (conf_parse_duration).  Not listed: 1 s to 7 days. */
static const struct {
	const char *name;
	long min, max;
} dur_ranges[] = {
	{ "tls_timeout", 1, 3600 },
	{ "session_timeout", 0, 7 * 86400 },
	{ "max_queue_time", 1, 3650L * 86400 },
	{ "retry_intervals", 1, 3650L * 86400 },
	{ "status_warn_age", 1, 3650L * 86400 },
};

static void dur_range(const char *name, long *min_r, long *max_r)
{
	*min_r = 1;
	*max_r = 7 * 86400;
	for (size_t i = 0; i < sizeof dur_ranges / sizeof dur_ranges[0]; i++)
		if (strcmp(dur_ranges[i].name, name) == 0) {
			*min_r = dur_ranges[i].min;
			*max_r = dur_ranges[i].max;
		}
}

static int validate_duration(cfg_t *cfg, cfg_opt_t *opt)
{
	long min, max;
	dur_range(opt->name, &min, &max);
	for (unsigned int i = 0; i < cfg_opt_size(opt); i++) {
		const char *v = cfg_opt_getnstr(opt, i);
		long n;
		if (conf_parse_duration(v, &n) != 0) {
			cfg_error(cfg, "option '%s': '%s' is not a duration (seconds, or a number "
				  "with s, m, h, d or w: 300, 90s, 15m, 2h, 5d)", opt->name, v ? v : "");
			return -1;
		}
		if (n < min || n > max) {
			char a[32], b[32];
			conf_format_duration(min, a, sizeof a);
			conf_format_duration(max, b, sizeof b);
			cfg_error(cfg, "option '%s': '%s' is out of range (%s to %s)", opt->name, v, a, b);
			return -1;
		}
	}
	return 0;
}

void conf_format_duration(long secs, char *out, size_t len)
{
	static const struct { long mul; char unit; } u[] = {
		{ 7 * 86400, 'w' }, { 86400, 'd' }, { 3600, 'h' }, { 60, 'm' },
	};
	for (size_t i = 0; secs > 0 && i < sizeof u / sizeof u[0]; i++)
		if (secs % u[i].mul == 0) {
			snprintf(out, len, "%ld%c", secs / u[i].mul, u[i].unit);
			return;
		}
	snprintf(out, len, "%lds", secs);
}

/* Integer options and their ranges. */
static const struct {
	const char *name;
	long min, max;
} int_ranges[] = {
	{ "account|keep_days", 0, 36500 },
	{ "account|dedupe_days", 1, 36500 },
	{ "account|dedupe_alert", 1, 100000000 },
	{ "account|max_messages_per_poll", 0, 10000000 },
	{ "account|envelope_skip", 0, 100 },
	{ "max_parallel_polls", 1, 256 },
	{ "keep_sent_days", 0, 36500 },
	{ "smtp|max_sessions", 1, 64 },
	{ "smtp|max_messages_per_session", 1, 1000000 },
};

static int validate_range(cfg_t *cfg, cfg_opt_t *opt)
{
	long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
	for (size_t i = 0; i < sizeof int_ranges / sizeof int_ranges[0]; i++) {
		const char *bar = strchr(int_ranges[i].name, '|');
		const char *n = bar ? bar + 1 : int_ranges[i].name;
		if (strcmp(n, opt->name) != 0)
			continue;
		if (v < int_ranges[i].min || v > int_ranges[i].max) {
			cfg_error(cfg, "option '%s': %ld is out of range (%ld-%ld)", opt->name, v,
				  int_ranges[i].min, int_ranges[i].max);
			return -1;
		}
		return 0;
	}
	return 0;
}

/* validate_fingerprint - "sha256:" and 32 bytes in hex, colons allowed */
static int validate_fingerprint(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	size_t hex = 0;
	int ok = v != NULL && strncasecmp(v, "sha256:", 7) == 0;
	for (const char *p = ok ? v + 7 : ""; ok && *p; p++) {
		if (isxdigit((unsigned char)*p))
			hex++;
		else if (*p != ':')
			ok = 0;
	}
	if (!ok || hex != 64) {
		cfg_error(cfg, "option '%s': '%s' is not \"sha256:\" followed by 64 hex digits "
			  "(openssl x509 -noout -fingerprint -sha256)", opt->name, v ? v : "");
		return -1;
	}
	return 0;
}

static int validate_addr_or_null(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
	if (v != NULL && (*v == '\0' || strcmp(v, "<>") == 0))
		return 0;
	return validate_addr(cfg, opt);
}

static int validate_domain(cfg_t *cfg, cfg_opt_t *opt)
{
	for (unsigned int i = 0; i < cfg_opt_size(opt); i++) {
		const char *v = cfg_opt_getnstr(opt, i);
		int ok = v != NULL && *v != '\0' && strlen(v) <= 253;
		for (const char *p = v; ok && *p; p++)
			ok = isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_';
		if (!ok) {
			cfg_error(cfg, "option '%s': '%s' is not a domain name", opt->name, v ? v : "");
			return -1;
		}
	}
	return 0;
}

/* validate_map - a map section's title and target are addresses */
static int validate_map(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *sec = cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);
	const char *from = cfg_title(sec);
	if (from == NULL || (!addr_ok(from) && !(from[0] == '@' && from[1] != '\0'))) {
		cfg_error(cfg, "map '%s': the title must be an address or @domain", from ? from : "");
		return -1;
	}
	return 0;
}

void conf_set_validators(cfg_t *cfg)
{
	static const struct {
		const char *name;
		cfg_validate_callback_t fn;
	} v[] = {
		{ "log_level", validate_loglevel },   { "spool_dir", validate_nonempty },
		{ "smtp|port", validate_port_required },       { "smtp|host", validate_nonempty },
		{ "smtp|timeout", validate_duration }, { "account|port", validate_port },
		{ "account|tls", validate_tls },      { "account|server", validate_nonempty },
		{ "account|ca_file", validate_nonempty },
		{ "account|user", validate_nonempty }, { "account|password_file", validate_nonempty },
		{ "account|deliver_to", validate_addr }, { "account|interval", validate_duration },
		{ "account|timeout", validate_duration },
		{ "account|connect_timeout", validate_duration },
		{ "account|tls_timeout", validate_duration },
		{ "account|session_timeout", validate_duration },
		{ "status_warn_age", validate_duration },
		{ "hostname", validate_hostname }, { "smtp|tls", validate_smtp_tls },
		{ "smtp|ca_file", validate_nonempty }, { "smtp|helo_name", validate_hostname },
		{ "smtp|user", validate_nonempty }, { "smtp|password_file", validate_nonempty },
		{ "account|auth", validate_auth }, { "account|oversize", validate_oversize },
		{ "account|dedupe", validate_dedupe },
		{ "account|max_message_size", validate_size },
		{ "account|max_bytes_per_poll", validate_size },
		{ "account|tls_fingerprint", validate_fingerprint },
		{ "smtp|tls_fingerprint", validate_fingerprint },
		{ "account|password_command", validate_nonempty },
		{ "account|envelope_header", validate_envhdr },
		{ "account|local_domains", validate_domain },
		{ "account|fallback_to", validate_addr },
		{ "account|envelope_from", validate_addr_or_null },
		{ "account|map", validate_map }, { "account|map|to", validate_addr },
		{ "bounce", validate_bounce }, { "postmaster", validate_addr },
		{ "max_queue_time", validate_duration }, { "retry_intervals", validate_duration },
		{ "user", validate_nonempty }, { "pid_file", validate_nonempty },
		{ "metrics_file", validate_nonempty },
		{ "account|oauth2|provider", validate_oauth2_provider },
		{ "account|oauth2|flow", validate_oauth2_flow },
		{ "account|oauth2|tenant", validate_nonempty },
		{ "account|oauth2|client_id", validate_nonempty },
		{ "account|oauth2|client_secret_file", validate_nonempty },
		{ "account|oauth2|client_certificate_file", validate_nonempty },
		{ "account|oauth2|client_key_file", validate_nonempty },
		{ "account|oauth2|scope", validate_nonempty },
		{ "account|oauth2|token_endpoint", validate_nonempty },
		{ "account|oauth2|device_endpoint", validate_nonempty },
		{ "account|oauth2|authorize_endpoint", validate_nonempty },
		{ "account|oauth2|ca_file", validate_nonempty },
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		cfg_set_validate_func(cfg, v[i].name, v[i].fn);
	for (size_t i = 0; i < sizeof int_ranges / sizeof int_ranges[0]; i++)
		cfg_set_validate_func(cfg, int_ranges[i].name, validate_range);
}

