/*
 * conf.h - the configuration file (libconfuse) and account secrets.
 *
 * Contract:
 *  - conf_load() parses and validates the whole file.  On failure it returns
 *    PG_CONFIG and *err_r holds the errors, one per line, each as
 *    "FILE:LINE: option 'NAME': what is wrong" so an admin can go straight
 *    to it.  libconfuse stops at the first syntax or value error; the
 *    checks that need a whole account (missing options, password file
 *    mode) are all reported together.  Nothing half-parsed is returned.
 *    A file with no account is valid (a package's shipped file): its
 *    warnings carry CONF_NO_ACCOUNT_WARNING and the daemon idles.
 *  - The returned struct conf is immutable and owned by the caller
 *    (conf_free()).  Strings are never NULL unless documented as optional.
 *  - conf_read_secret() reads an account's password; it refuses a password
 *    file readable or writable by group or others (PG_CONFIG, naming the
 *    file and its mode) and never logs the secret.
 */
#ifndef POPGATE_CONF_H
#define POPGATE_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Fixed, whatever --sysconfdir says: admins and docs expect this path. */
#define CONF_DEFAULT_PATH "/etc/popgate/popgate.conf"
/* The one warning of a configuration without an account block. */
#define CONF_NO_ACCOUNT_WARNING "no account is configured: nothing is polled until an " \
	"account block is added (popgate.conf(5)) and popgate is reloaded"

/* TLS toward the local SMTP host, named as Postfix's
 * smtp_tls_security_level: may = STARTTLS when offered, unverified;
 * encrypt = STARTTLS required, unverified; verify = required, CA and host
 * name verified ("starttls" and "required" are aliases of verify). */
enum smtp_tls {
	SMTP_TLS_NONE = 0,
	SMTP_TLS_MAY,
	SMTP_TLS_ENCRYPT,
	SMTP_TLS_VERIFY,
};

struct conf_smtp {
	char *host;
	int port;
	char *helo_name;  /* optional: NULL means the host name */
	int timeout;      /* seconds, each SMTP step */
	enum smtp_tls tls; /* as Postfix's smtp_tls_security_level */
	char *ca_file;    /* optional */
	char *tls_fingerprint; /* optional "sha256:<64 hex>" pin of the leaf */
	char *user;       /* SMTP AUTH user, optional */
	char *password_file; /* SMTP AUTH password, required with user */
	int allow_plaintext_auth; /* AUTH without TLS */
	int max_sessions;          /* parallel SMTP sessions (default 1) */
	int max_messages_per_session; /* default 1000 */
};

/* POP3 authentication mechanisms (`auth =`). */
enum conf_auth {
	AUTH_AUTO = 0,
	AUTH_USER,
	AUTH_APOP,
	AUTH_PLAIN,
	AUTH_LOGIN,
	AUTH_CRAM_MD5,
	AUTH_SCRAM_SHA1,
	AUTH_SCRAM_SHA256,
	AUTH_XOAUTH2,
	AUTH_OAUTHBEARER,
};
const char *conf_auth_name(enum conf_auth a);

/* What to do with a message over max_message_size. */
enum conf_oversize { OVERSIZE_SKIP = 0, OVERSIZE_HOLD, OVERSIZE_FETCH };

/* Who gets a notice when a message is held or expires. */
enum conf_bounce { BOUNCE_NONE = 0, BOUNCE_POSTMASTER, BOUNCE_SENDER };

/* One entry of an account's address map (multidrop). */
struct conf_map {
	char *from; /* address as found in the envelope header (lower case) */
	char *to;   /* local delivery address */
};

/* ---- OAuth2 (the account's `oauth2 { }` block) ---- */
enum conf_oauth2_provider { OAUTH2_PROVIDER_MICROSOFT = 0, OAUTH2_PROVIDER_GOOGLE,
			    OAUTH2_PROVIDER_GENERIC };
enum conf_oauth2_flow { OAUTH2_FLOW_DEVICE = 0, OAUTH2_FLOW_BROWSER,
			OAUTH2_FLOW_CLIENT_CREDENTIALS };
const char *conf_oauth2_provider_name(enum conf_oauth2_provider p);
const char *conf_oauth2_flow_name(enum conf_oauth2_flow f);

/* Endpoints and scope are always set after conf_load: the provider's
 * defaults unless given.  Optional strings are NULL when not given. */
struct conf_oauth2 {
	enum conf_oauth2_provider provider;
	enum conf_oauth2_flow flow;
	char *tenant;            /* microsoft */
	char *client_id;
	char *client_secret_file; /* optional (google, client_credentials) */
	char *client_certificate_file; /* client_credentials with private_key_jwt */
	char *client_key_file;
	char *scope;
	char *token_endpoint;    /* https:// */
	char *device_endpoint;   /* https://, NULL when the flow is not device */
	char *authorize_endpoint; /* https://, NULL when the flow is not browser */
	char *ca_file;           /* optional: the CA store for the identity provider */
	int line;                /* line of the oauth2 block */
};

struct conf_account {
	char *name;
	char *server;
	int port;
	enum tls_mode tls;
	char *ca_file;        /* optional */
	char *tls_fingerprint; /* optional "sha256:<64 hex>" (lower case, no colons) */
	char *user;
	char *password_file;  /* exactly one of password_file, password_command */
	char *password_command; /* argv split on blanks; run without a shell */
	struct conf_oauth2 *oauth2; /* NULL, or the oauth2 block (then neither of the two above) */
	enum conf_auth auth;
	int allow_plaintext;  /* USER/PASS, APOP, PLAIN, LOGIN without TLS */
	int pipelining;       /* 1: use PIPELINING when offered (default) */
	int keep;
	int keep_days;        /* with keep: delete after N days in the spool; 0 never */
	uint64_t max_message_size; /* octets, 0: no limit */
	enum conf_oversize oversize;
	int dedupe;           /* enum spool_dedupe_mode: 0 off, 1 exact, 2 message */
	int dedupe_days;      /* the window of duplicate detection */
	unsigned int dedupe_alert; /* more duplicates in one poll: renumbered mailbox */
	unsigned int max_messages_per_poll; /* 0: no limit */
	uint64_t max_bytes_per_poll;        /* 0: no limit */
	int interval;         /* seconds */
	int timeout;          /* seconds, each POP3 reply */
	int connect_timeout;  /* seconds */
	int tls_timeout;      /* seconds, the TLS handshake */
	int session_timeout;  /* seconds, the whole POP3 session; 0 none */
	/* routing: single-drop (deliver_to) or multidrop (envelope_header) */
	char *deliver_to;     /* NULL for multidrop */
	char *envelope_header; /* "Delivered-To", "X-Original-To", "Envelope-To",
				 "X-Envelope-To" or "Received"; NULL: single-drop */
	int envelope_skip;
	char **local_domains; /* lower case */
	size_t nlocal_domains;
	struct conf_map *maps;
	size_t nmaps;
	char *fallback_to;    /* optional */
	int guess_from_headers;
	char *envelope_from;  /* optional fixed envelope sender ("" = <>) */
	const char *file;     /* config file, for messages */
	int line;             /* line of the account block */
};

struct conf {
	char *path;
	char *spool_dir;
	char *hostname;       /* for Received: and HELO; default gethostname() */
	char *log_level;
	char *user;           /* run: drop privileges to this user; NULL: stay */
	char *pid_file;       /* run: default /run/popgate.pid (NULL with -f unless set) */
	int max_parallel_polls; /* default 4 */
	char *metrics_file;   /* optional Prometheus textfile */
	int keep_sent_days;   /* 0: remove a message file as soon as it is sent */
	char *postmaster;     /* optional address for notices */
	enum conf_bounce bounce;
	long max_queue_time;  /* seconds a message may stay deferred (default 5 days) */
	long status_warn_age; /* status: unhealthy when mail waits longer (default 1 h) */
	long *retry_intervals; /* backoff schedule in seconds; the last repeats */
	size_t nretry;
	struct conf_smtp smtp;
	struct conf_account *accounts;
	size_t naccounts;
	char *warnings;       /* NULL, or lines "FILE:LINE: ..." worth a warning */
};

/* conf_parse_size - "123", "10K", "25M", "1G" (powers of 1024) */
int conf_parse_size(const char *s, uint64_t *v_r);
/* conf_parse_duration - "300", "90s", "10m", "2h", "5d", "1w" to seconds;
 * the one syntax of every time option */
int conf_parse_duration(const char *s, long *v_r);
/* conf_format_duration - seconds the way a config file writes them ("5m") */
void conf_format_duration(long secs, char *out, size_t len);

enum pg_res conf_load(const char *path, struct conf **c_r, char **err_r);
void conf_free(struct conf **c);
const struct conf_account *conf_find_account(const struct conf *c, const char *name);
/* conf_read_secret - the account's password from password_file, or the
 * output of password_command (run without a shell, 30 s timeout, stdout's
 * trailing newline trimmed), read anew on every call (OAuth2 tokens expire) */
enum pg_res conf_read_secret(const struct conf_account *a, char **secret_r, char **err_r);
/* conf_read_file_secret - one line from a protected file (SMTP AUTH) */
enum pg_res conf_read_file_secret(const char *path, const char *what, char **secret_r,
				  char **err_r);

#endif
