/*
 * oauth2_load.c - oauth2.h in the popgate binary: the OAuth2 client
 * (libcurl, jansson) is a module, popgate-oauth2.so, loaded on first use,
 * so the processes of a site without OAuth2 accounts never map libcurl and
 * its thirty dependencies (issue 16: ~4.7 MiB of RSS in every process).
 *
 * Which file: popgate-oauth2.so in the directory of the running executable
 * (/proc/self/exe) if it is there (the build tree, where the tests run),
 * else PKGLIBDIR/popgate-oauth2.so (the installed one).  Loaded with
 * RTLD_NOW | RTLD_LOCAL in the process that makes the first request (a
 * poll worker, `popgate authorize`), never in the daemon's parent before a
 * fork.  A missing or unusable module is an OAUTH2_TEMP error naming the
 * path and dlerror() from oauth2_client_new / oauth2_global_init, and every
 * other entry point needs a client, hence a loaded module.  The result
 * names and the wipes are in the binary (oauth2_common.c).
 */
#include "config.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "oauth2.h"
#include "oauth2_module.h"

#ifndef PKGLIBDIR
#error "PKGLIBDIR must be defined by the build"
#endif

static const struct oauth2_module *mod;

/* module_path - the module next to the executable if it is there, else the
 * installed one; malloc'd */
static char *module_path(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash != NULL) {
			*slash = '\0';
			char *p = xasprintf("%s/%s", exe, OAUTH2_MODULE_FILE);
			if (access(p, F_OK) == 0)
				return p;
			free(p);
		}
	}
	return xasprintf("%s/%s", PKGLIBDIR, OAUTH2_MODULE_FILE);
}

/* load - the module's table, or NULL with *err_r set */
static const struct oauth2_module *load(char **err_r)
{
	if (mod != NULL)
		return mod;
	char *path = module_path();
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	const struct oauth2_module *m = NULL;
	char *load_err = NULL;
	if (h == NULL) {
		const char *e = dlerror();
		load_err = xasprintf("cannot load the OAuth2 module %s: %s", path,
				     e ? e : "unknown error");
	} else if ((m = dlsym(h, OAUTH2_MODULE_SYMBOL)) == NULL) {
		const char *e = dlerror();
		load_err = xasprintf("the OAuth2 module %s has no %s: %s", path,
				     OAUTH2_MODULE_SYMBOL, e ? e : "unknown error");
	} else if (m->abi != OAUTH2_MODULE_ABI) {
		load_err = xasprintf("the OAuth2 module %s is from another build (abi %d, "
				     "popgate needs %d)", path, m->abi, OAUTH2_MODULE_ABI);
		m = NULL;
	} else if (m->build == NULL || strcmp(m->build, POPGATE_BUILD_ID) != 0) {
		load_err = xasprintf("the OAuth2 module %s is from another build (%s, popgate "
				     "%s is %s): install the module and popgate from the same "
				     "build and restart popgate", path,
				     m->build ? m->build : "none", PACKAGE_VERSION, POPGATE_BUILD_ID);
		m = NULL;
	}
	if (m == NULL) {
		if (h != NULL)
			dlclose(h);
		set_err(err_r, "%s", load_err);
		free(load_err);
	} else {
		LOG_DEBUG("status=loaded module=\"%s\"", path);
		mod = m; /* never unloaded: its libcurl state lives as long as the process */
	}
	free(path);
	return m;
}

/* need - the table when the caller holds a client (so it is loaded) */
static const struct oauth2_module *need(void)
{
	if (mod == NULL) { /* a client without a module: a bug in the caller */
		LOG_ERR("status=failed reason=\"OAuth2 module not loaded\"");
		abort();
	}
	return mod;
}

int oauth2_global_init(char **err_r)
{
	const struct oauth2_module *m = load(err_r);
	return m == NULL ? -1 : m->global_init(err_r);
}

enum oauth2_res oauth2_client_new(const struct conf_account *a, struct oauth2_client **c_r,
				  char **err_r)
{
	*c_r = NULL;
	const struct oauth2_module *m = load(err_r);
	return m == NULL ? OAUTH2_TEMP : m->client_new(a, c_r, err_r);
}

void oauth2_client_free(struct oauth2_client **c)
{
	if (c != NULL && *c != NULL)
		need()->client_free(c);
}

long oauth2_retry_after(const struct oauth2_client *c)
{
	return need()->retry_after(c);
}

long oauth2_http_status(const struct oauth2_client *c)
{
	return need()->http_status(c);
}

enum oauth2_res oauth2_device_start(struct oauth2_client *c, struct oauth2_device *d_r,
				    char **err_r)
{
	return need()->device_start(c, d_r, err_r);
}

enum oauth2_res oauth2_device_wait(struct oauth2_client *c, struct oauth2_device *d,
				   const volatile sig_atomic_t *stop, struct oauth2_token *t_r,
				   char **err_r)
{
	return need()->device_wait(c, d, stop, t_r, err_r);
}

void oauth2_pkce_new(char **verifier_r, char **challenge_r, char **state_r)
{
	need()->pkce_new(verifier_r, challenge_r, state_r);
}

char *oauth2_pkce_challenge(const char *verifier)
{
	return need()->pkce_challenge(verifier);
}

char *oauth2_authorize_url(const struct oauth2_client *c, const char *redirect_uri,
			   const char *state, const char *challenge)
{
	return need()->authorize_url(c, redirect_uri, state, challenge);
}

enum oauth2_res oauth2_exchange_code(struct oauth2_client *c, const char *code,
				     const char *verifier, const char *redirect_uri,
				     struct oauth2_token *t_r, char **err_r)
{
	return need()->exchange_code(c, code, verifier, redirect_uri, t_r, err_r);
}

enum oauth2_res oauth2_refresh(struct oauth2_client *c, const char *refresh_token,
			       struct oauth2_token *t_r, char **err_r)
{
	return need()->refresh(c, refresh_token, t_r, err_r);
}

enum oauth2_res oauth2_client_credentials(struct oauth2_client *c, struct oauth2_token *t_r,
					  char **err_r)
{
	return need()->client_credentials(c, t_r, err_r);
}

enum oauth2_res oauth2_parse_token_reply(const char *endpoint, long http_status,
					 const char *body, size_t len, struct oauth2_token *t_r,
					 int *pending_r, char **err_r)
{
	const struct oauth2_module *m = load(err_r);
	return m == NULL ? OAUTH2_TEMP
			 : m->parse_token_reply(endpoint, http_status, body, len, t_r,
						pending_r, err_r);
}

char *oauth2_client_assertion(const struct oauth2_client *c, time_t now)
{
	return need()->client_assertion(c, now);
}
