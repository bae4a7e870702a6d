/*
 * oauth2.c - OAuth 2.0 token endpoint client (see oauth2.h).
 */
#include "config.h"

#include <curl/curl.h>
#include <jansson.h>
#include <string.h>

#include "log.h"
#include "oauth2.h"

const char *oauth2_res_name(enum oauth2_res r)
{
	static const char *const names[] = { "ok", "temporary", "reauthorize", "config",
					     "denied" };
	return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

enum pg_res oauth2_to_pg(enum oauth2_res r)
{
	switch (r) {
	case OAUTH2_OK:
		return PG_OK;
	case OAUTH2_TEMP:
		return PG_TEMP;
	case OAUTH2_CONFIG:
		return PG_CONFIG;
	case OAUTH2_REAUTHORIZE:
	case OAUTH2_DENIED:
		return PG_AUTH;
	}
	return PG_PERM;
}

int oauth2_global_init(char **err_r)
{
	static int done;
	if (done)
		return 0;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		set_err(err_r, "libcurl: curl_global_init failed");
		return -1;
	}
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	if (v == NULL || v->ssl_version == NULL || strncmp(v->ssl_version, "OpenSSL", 7) != 0) {
		set_err(err_r, "libcurl %s has no OpenSSL backend (%s): install libcurl4-openssl-dev",
			v ? v->version : "?", v && v->ssl_version ? v->ssl_version : "no TLS");
		return -1;
	}
	done = 1;
	return 0;
}
