/*
 * oauth2_common.c - the parts of oauth2.h that need neither libcurl nor
 * jansson: result names and classes, and wiping what a request returned.
 * They are in the popgate binary (usable when the OAuth2 module is not
 * loaded, e.g. to report that it could not be) and in the module.
 */
#include "config.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

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

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

void oauth2_token_wipe(struct oauth2_token *t)
{
	wipe_free(&t->access_token);
	wipe_free(&t->refresh_token);
	free(t->scope);
	t->scope = NULL;
	t->expires_at = 0;
}

void oauth2_device_wipe(struct oauth2_device *d)
{
	wipe_free(&d->device_code);
	free(d->user_code);
	free(d->verification_uri);
	free(d->verification_uri_complete);
	memset(d, 0, sizeof *d);
}
