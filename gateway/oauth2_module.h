/*
 * oauth2_module.h - the table the OAuth2 module (popgate-oauth2.so, built
 * from oauth2.c and oauth2_common.c) exports to the popgate binary, whose
 * loader (oauth2_load.c) implements oauth2.h by calling through it.
 *
 * Contract:
 *  - The module exports one data symbol, OAUTH2_MODULE_SYMBOL; the loader
 *    refuses a table whose abi differs from OAUTH2_MODULE_ABI (bump it when
 *    this struct's first members change), and then one whose build differs
 *    from its own POPGATE_BUILD_ID (set by each configure run, so a module
 *    of another build - installed over a running daemon, say - is never
 *    used with this binary's struct conf_account).
 *  - The module resolves util/log/conf helpers from the binary (exported
 *    with --dynamic-list=gateway/oauth2.dynlist); it has no copy of their
 *    state.
 */
#ifndef POPGATE_OAUTH2_MODULE_H
#define POPGATE_OAUTH2_MODULE_H

#include "oauth2.h"

#define OAUTH2_MODULE_ABI 2
#define OAUTH2_MODULE_SYMBOL "popgate_oauth2_module"
#define OAUTH2_MODULE_FILE "popgate-oauth2.so"

struct oauth2_module {
	int abi;
	const char *build; /* POPGATE_BUILD_ID of the module's build */
	int (*global_init)(char **err_r);
	enum oauth2_res (*client_new)(const struct conf_account *a, struct oauth2_client **c_r,
				      char **err_r);
	void (*client_free)(struct oauth2_client **c);
	long (*retry_after)(const struct oauth2_client *c);
	long (*http_status)(const struct oauth2_client *c);
	enum oauth2_res (*device_start)(struct oauth2_client *c, struct oauth2_device *d_r,
					char **err_r);
	enum oauth2_res (*device_wait)(struct oauth2_client *c, struct oauth2_device *d,
				       const volatile sig_atomic_t *stop, struct oauth2_token *t_r,
				       char **err_r);
	void (*pkce_new)(char **verifier_r, char **challenge_r, char **state_r);
	char *(*pkce_challenge)(const char *verifier);
	char *(*authorize_url)(const struct oauth2_client *c, const char *redirect_uri,
			       const char *state, const char *challenge);
	enum oauth2_res (*exchange_code)(struct oauth2_client *c, const char *code,
					 const char *verifier, const char *redirect_uri,
					 struct oauth2_token *t_r, char **err_r);
	enum oauth2_res (*refresh)(struct oauth2_client *c, const char *refresh_token,
				   struct oauth2_token *t_r, char **err_r);
	enum oauth2_res (*client_credentials)(struct oauth2_client *c, struct oauth2_token *t_r,
					      char **err_r);
	enum oauth2_res (*parse_token_reply)(const char *endpoint, long http_status,
					     const char *body, size_t len,
					     struct oauth2_token *t_r, int *pending_r,
					     char **err_r);
	char *(*client_assertion)(const struct oauth2_client *c, time_t now);
};

extern const struct oauth2_module popgate_oauth2_module;

#endif
