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
 *  - The returned struct conf is immutable and owned by the caller
 *    (conf_free()).  Strings are never NULL unless documented as optional.
 *  - conf_read_secret() reads an account's password; it refuses a password
 *    file readable or writable by group or others (PG_CONFIG, naming the
 *    file and its mode) and never logs the secret.
 */
#ifndef POPGATE_CONF_H
#define POPGATE_CONF_H

#include <stddef.h>

#include "util.h"

/* Fixed, whatever --sysconfdir says: admins and docs expect this path. */
#define CONF_DEFAULT_PATH "/etc/popgate/popgate.conf"

struct conf_smtp {
	char *host;
	int port;
	char *helo_name;  /* optional: NULL means the host name */
	int timeout;      /* seconds, each SMTP step */
	enum tls_mode tls; /* TLS_NONE, TLS_STARTTLS (opportunistic), TLS_IMPLICIT = required */
	char *ca_file;    /* optional */
};

struct conf_account {
	char *name;
	char *server;
	int port;
	enum tls_mode tls;
	char *ca_file;        /* optional */
	char *user;
	char *password_file;  /* optional if password_command is given (later) */
	int allow_plaintext;
	char *deliver_to;
	int keep;
	int interval;         /* seconds */
	int timeout;          /* seconds, each POP3 reply */
	int connect_timeout;  /* seconds */
	const char *file;     /* config file, for messages */
	int line;             /* line of the account block */
};

struct conf {
	char *path;
	char *spool_dir;
	char *hostname;       /* for Received: and HELO; default gethostname() */
	char *log_level;
	struct conf_smtp smtp;
	struct conf_account *accounts;
	size_t naccounts;
};

enum pg_res conf_load(const char *path, struct conf **c_r, char **err_r);
void conf_free(struct conf **c);
const struct conf_account *conf_find_account(const struct conf *c, const char *name);
/* conf_read_secret - the account's password, trailing newline trimmed */
enum pg_res conf_read_secret(const struct conf_account *a, char **secret_r, char **err_r);

#endif
