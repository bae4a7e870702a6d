/*
 * oauth2.h - OAuth 2.0 token endpoint client: the device authorization
 * grant (RFC 8628), the authorization code grant with PKCE S256
 * (RFC 7636, loopback redirect per RFC 8252), refresh_token, and
 * client_credentials with a client secret or a private_key_jwt assertion
 * (RFC 7523, RS256, x5t#S256 of the certificate in its header).
 *
 * Contract:
 *  - The only module that includes libcurl and jansson.
 *  - In the popgate binary these calls go through oauth2_load.c to the
 *    module popgate-oauth2.so (oauth2.c), loaded by the first
 *    oauth2_client_new() or oauth2_global_init() of the process; when it
 *    cannot be loaded they fail (OAUTH2_TEMP, -1) with *err_r naming the
 *    module's path and dlerror().  The unit tests link oauth2.c directly.
 *  - Every request is one libcurl easy handle: HTTPS only, no redirects,
 *    peer and host verification always on (ca_file, when set, is the CA
 *    store used for the identity provider: CURLOPT_CAINFO), connect and
 *    total timeouts, a cap on the response size.
 *  - Request and response bodies are never logged.  The endpoint, the HTTP
 *    status and the OAuth2 `error` field are (and are in *err_r).
 *  - Results are an enum oauth2_res; on anything but OAUTH2_OK *err_r is a
 *    malloc'd message naming the endpoint, which the caller frees.
 *  - Tokens returned in struct oauth2_token are malloc'd; oauth2_token_wipe()
 *    cleanses and frees them.
 */
#ifndef POPGATE_OAUTH2_H
#define POPGATE_OAUTH2_H

#include <signal.h>
#include <time.h>

#include "util.h"

enum oauth2_res {
	OAUTH2_OK = 0,
	OAUTH2_TEMP,        /* 429/5xx, timeouts, TLS, network, garbage: retry later */
	OAUTH2_REAUTHORIZE, /* invalid_grant: the grant is dead; run popgate authorize */
	OAUTH2_CONFIG,      /* invalid_client, unauthorized_client, invalid_scope, ... */
	OAUTH2_DENIED,      /* device flow: access_denied or expired_token */
};

const char *oauth2_res_name(enum oauth2_res r);
/* oauth2_to_pg - the pg_res class of an oauth2 result */
enum pg_res oauth2_to_pg(enum oauth2_res r);

/* oauth2_global_init - once per process, before any other call; returns -1
 * with *err_r set when libcurl is unusable (no HTTPS, not OpenSSL) */
int oauth2_global_init(char **err_r);

struct conf_account;
struct oauth2_client; /* one account's client: endpoints, credentials */

/* What a token endpoint granted.  All strings malloc'd (NULL if absent). */
struct oauth2_token {
	char *access_token;
	char *refresh_token; /* NULL: none issued (keep the old one) */
	char *scope;
	time_t expires_at;   /* 0: the endpoint gave no expires_in */
};

/* What a device authorization endpoint answered (RFC 8628 3.2). */
struct oauth2_device {
	char *device_code;   /* secret-ish: never printed */
	char *user_code;
	char *verification_uri;
	char *verification_uri_complete; /* optional */
	time_t expires_at;
	int interval;        /* seconds between polls (default 5) */
};

/* oauth2_client_new - the account's client: reads client_secret_file, the
 * certificate and private key (PG_CONFIG-like OAUTH2_CONFIG when a file is
 * unusable, naming it).  Timeouts: the account's connect_timeout for the
 * connection, its timeout for the whole request. */
enum oauth2_res oauth2_client_new(const struct conf_account *a, struct oauth2_client **c_r,
				  char **err_r);
void oauth2_client_free(struct oauth2_client **c);
/* oauth2_retry_after - Retry-After (seconds) of the last 429/503, else 0 */
long oauth2_retry_after(const struct oauth2_client *c);
/* oauth2_http_status - the HTTP status of the last reply (0: none) */
long oauth2_http_status(const struct oauth2_client *c);

/* oauth2_device_start - the device authorization request */
enum oauth2_res oauth2_device_start(struct oauth2_client *c, struct oauth2_device *d_r,
				    char **err_r);
/* oauth2_device_wait - poll the token endpoint until the user has signed in
 * (OAUTH2_OK), refused or let the code expire (OAUTH2_DENIED), or an error;
 * honours interval, authorization_pending and slow_down (+5 s).  *stop
 * (may be NULL) ends the wait early with OAUTH2_TEMP. */
enum oauth2_res oauth2_device_wait(struct oauth2_client *c, struct oauth2_device *d,
				   const volatile sig_atomic_t *stop, struct oauth2_token *t_r,
				   char **err_r);
void oauth2_device_wipe(struct oauth2_device *d);

/* oauth2_pkce_new - a PKCE S256 verifier (43 chars) and its challenge, and
 * a random state; each malloc'd */
void oauth2_pkce_new(char **verifier_r, char **challenge_r, char **state_r);
/* oauth2_pkce_challenge - base64url(SHA-256(verifier)), malloc'd */
char *oauth2_pkce_challenge(const char *verifier);
/* oauth2_authorize_url - where the browser goes (authorization code grant) */
char *oauth2_authorize_url(const struct oauth2_client *c, const char *redirect_uri,
			   const char *state, const char *challenge);
/* oauth2_exchange_code - authorization_code grant with the PKCE verifier */
enum oauth2_res oauth2_exchange_code(struct oauth2_client *c, const char *code,
				     const char *verifier, const char *redirect_uri,
				     struct oauth2_token *t_r, char **err_r);
/* oauth2_refresh - refresh_token grant; t_r->refresh_token is the rotated
 * token, or NULL when the endpoint kept the old one */
enum oauth2_res oauth2_refresh(struct oauth2_client *c, const char *refresh_token,
			       struct oauth2_token *t_r, char **err_r);
/* oauth2_client_credentials - client_credentials grant with the client
 * secret or a private_key_jwt assertion */
enum oauth2_res oauth2_client_credentials(struct oauth2_client *c, struct oauth2_token *t_r,
					  char **err_r);
/* oauth2_token_wipe - cleanse and free the token's strings */
void oauth2_token_wipe(struct oauth2_token *t);

/* For tests and fuzzing: classify one reply of a token endpoint (what a
 * request does after the HTTP exchange).  Pending and slow_down come back
 * as OAUTH2_TEMP with *pending_r set to 1 and 2 (pending_r may be NULL). */
enum oauth2_res oauth2_parse_token_reply(const char *endpoint, long http_status,
					 const char *body, size_t len, struct oauth2_token *t_r,
					 int *pending_r, char **err_r);
/* oauth2_client_assertion - the RS256 JWT of private_key_jwt (tests) */
char *oauth2_client_assertion(const struct oauth2_client *c, time_t now);

#endif
