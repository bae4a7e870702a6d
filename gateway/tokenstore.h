/*
 * tokenstore.h - the OAuth2 token store: one file per account,
 * SPOOL/oauth2/<account>.tokens, and the one way a login gets its token.
 *
 * Contract:
 *  - The only module that reads or writes token files.  Directory 0700,
 *    files 0600; a file readable by group or others is refused (naming it).
 *  - Writes are atomic and durable: a temp file created O_EXCL, written,
 *    fsync'd, renamed over the old one, and the directory fsync'd, all
 *    before the caller may use a new access token (a rotated refresh token
 *    may be the only valid one).
 *  - Refreshes are serialised per account by flock() on
 *    SPOOL/oauth2/<account>.lock: a second process waits, then re-reads
 *    the file and takes the token the first one stored.
 *  - Tokens never leave this module except as the access token returned to
 *    a login; every copy in memory is wiped (OPENSSL_cleanse) before free.
 *    Nothing here logs a token, in any form.
 *  - Results are enum pg_res with *err_r as in util.h.
 */
#ifndef POPGATE_TOKENSTORE_H
#define POPGATE_TOKENSTORE_H

#include <time.h>

#include "conf.h"
#include "util.h"

enum tokenstore_state {
	TOKENSTORE_NONE = 0,     /* no file: never authorized */
	TOKENSTORE_VALID,        /* a refresh token (or client_credentials) to use */
	TOKENSTORE_REAUTHORIZE,  /* invalid_grant: popgate authorize NAME first */
};
const char *tokenstore_state_name(enum tokenstore_state s);

struct tokenstore_entry {
	enum tokenstore_state state;
	char *refresh_token;     /* NULL for client_credentials */
	time_t refresh_issued;   /* when the refresh token was issued to us */
	char *access_token;      /* NULL: none yet */
	time_t access_expires;   /* 0: unknown */
	time_t updated;          /* last write */
	char *reason;            /* why reauthorize (no secrets), or NULL */
	time_t retry_until;      /* the identity provider's Retry-After: no
				  * token request before this time (0: none) */
};

/* tokenstore_read - the account's entry; a missing file is PG_OK with
 * state TOKENSTORE_NONE.  Needs no lock (files are replaced by rename). */
enum pg_res tokenstore_read(const char *spool_dir, const char *account,
			    struct tokenstore_entry *e_r, char **err_r);
/* tokenstore_write - replace the account's entry atomically and durably */
enum pg_res tokenstore_write(const char *spool_dir, const char *account,
			     const struct tokenstore_entry *e, char **err_r);
/* tokenstore_lock - the account's refresh lock, waiting at most wait_s
 * seconds (PG_TEMP when another process holds it longer); *fd_r >= 0 */
enum pg_res tokenstore_lock(const char *spool_dir, const char *account, int wait_s, int *fd_r,
			    char **err_r);
void tokenstore_unlock(int *fd);
void tokenstore_entry_wipe(struct tokenstore_entry *e);
/* tokenstore_retry_until - the account's stored Retry-After deadline (0:
 * none, or unreadable) */
time_t tokenstore_retry_until(const char *spool_dir, const char *account);

/* tokenstore_login_token - the access token for the account's next login.
 *  - refused: NULL, or the token a server just refused: then a token equal
 *    to it is not used again (refresh), one stored meanwhile by another
 *    process is.
 *  - Refreshes (or, for client_credentials, requests) a token when the
 *    stored one expires within 5 minutes, is unknown, or was refused, under
 *    the account's lock, and stores the result before returning it.
 *  - A 429/503 with Retry-After is stored (retry_until): until then no
 *    request is made and the result is PG_TEMP naming the time.
 *  - State reauthorize, or no grant yet: PG_AUTH with *reauth_r = 1 and no
 *    request at all.  invalid_grant: the state becomes reauthorize (stored),
 *    PG_AUTH, *reauth_r = 1.  invalid_client & co: PG_CONFIG.  Network,
 *    429/5xx, garbage: PG_TEMP.  *fresh_r = 1 when the token was obtained
 *    by this call.  The caller wipes and frees *token_r. */
enum pg_res tokenstore_login_token(const struct conf *c, const struct conf_account *a,
				   const char *refused, char **token_r, int *fresh_r,
				   int *reauth_r, char **err_r);

#endif
