/*
 * oauth2.h - OAuth 2.0 token endpoint client: the device authorization
 * grant (RFC 8628), the authorization code grant with PKCE S256
 * (RFC 7636, loopback redirect per RFC 8252), refresh_token, and
 * client_credentials with a client secret or a private_key_jwt assertion
 * (RFC 7523, RS256, x5t#S256 of the certificate in its header).
 *
 * Contract:
 *  - The only module that includes libcurl and jansson.
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

#endif
