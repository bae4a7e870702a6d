/*
 * oauth2.c - OAuth 2.0 token endpoint client (see oauth2.h).
 *
 * Why CURLOPT_CAINFO for ca_file: libcurl has no "add one CA" option with
 * the OpenSSL backend; CAINFO replaces the default store.  An admin gives
 * ca_file for a private or test identity provider whose CA is not in the
 * system store, so the given file is the right and only trust anchor for
 * that endpoint; verification of peer and host name stays on either way.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "conf.h"
#include "log.h"
#include "oauth2.h"
#include "oauth2_module.h"

#define REPLY_MAX (64 * 1024)  /* a token reply is a few KiB */
#define TOKEN_MAX (16 * 1024)  /* a JWT access token is a few KiB */
#define SLOW_DOWN_STEP 5       /* RFC 8628 3.5 */
#define DEVICE_GRANT "urn:ietf:params:oauth:grant-type:device_code"
#define JWT_BEARER "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

struct oauth2_client {
	const struct conf_account *a;
	const struct conf_oauth2 *o;
	char *secret;        /* client secret, or NULL */
	EVP_PKEY *key;       /* private_key_jwt, or NULL */
	char *x5t_s256;      /* base64url SHA-256 of the certificate's DER */
	long connect_ms, total_ms;
	long retry_after;    /* of the last reply */
	long http_status;
};

/* the reply of one request */
struct reply {
	struct buf body;
	long retry_after;
	int too_big;
};

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

/* ---- small helpers ------------------------------------------------------ */

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

static void buf_wipe(struct buf *b)
{
	if (b->data != NULL)
		OPENSSL_cleanse(b->data, b->cap);
	buf_free(b);
}

/* b64url - base64url without padding (RFC 4648 5) */
static char *b64url(const unsigned char *p, size_t n)
{
	static const char al[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = xmalloc(4 * (n / 3 + 1) + 1), *o = out;
	size_t i = 0;
	for (; i + 2 < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
		*o++ = al[v >> 18 & 63], *o++ = al[v >> 12 & 63];
		*o++ = al[v >> 6 & 63], *o++ = al[v & 63];
	}
	if (n - i == 1) {
		unsigned v = (unsigned)p[i] << 16;
		*o++ = al[v >> 18 & 63], *o++ = al[v >> 12 & 63];
	} else if (n - i == 2) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
		*o++ = al[v >> 18 & 63], *o++ = al[v >> 12 & 63], *o++ = al[v >> 6 & 63];
	}
	*o = '\0';
	return out;
}

static char *random_b64url(size_t nbytes)
{
	unsigned char r[64];
	if (nbytes > sizeof r || RAND_bytes(r, (int)nbytes) != 1) {
		LOG_ERR("status=failed reason=\"no random bytes from OpenSSL\"");
		abort();
	}
	char *s = b64url(r, nbytes);
	OPENSSL_cleanse(r, sizeof r);
	return s;
}

/* form_add - "&name=value", value percent-encoded (RFC 3986 unreserved
 * kept).  Past the buffer's cap the form is wiped and stays empty, so a
 * truncated request is never sent (the callers refuse an empty form). */
static void form_add(struct buf *b, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	int bad = b->max == 0 || buf_printf(b, "%s%s=", b->len ? "&" : "", name) != 0;
	for (const unsigned char *p = (const unsigned char *)value; !bad && *p; p++) {
		char e[4] = { (char)*p, 0, 0, 0 };
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~'))
			e[0] = '%', e[1] = hex[*p >> 4], e[2] = hex[*p & 15];
		bad = buf_append(b, e, strlen(e)) != 0;
	}
	if (bad) {
		buf_wipe(b);
		b->max = 0;
	}
}

/* token_ok - a bearer token: printable ASCII without blanks, bounded */
static int token_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > TOKEN_MAX)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return 0;
	return 1;
}

/* ---- the client ------------------------------------------------------- */

/* load_key - the private key and the certificate's x5t#S256 */
static enum oauth2_res load_key(struct oauth2_client *c, char **err_r)
{
	const struct conf_oauth2 *o = c->o;
	FILE *f = fopen(o->client_key_file, "r");
	if (f == NULL) {
		set_err(err_r, "oauth2: client_key_file '%s': %s", o->client_key_file, strerror(errno));
		return OAUTH2_CONFIG;
	}
	c->key = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
	fclose(f);
	if (c->key == NULL || EVP_PKEY_get_base_id(c->key) != EVP_PKEY_RSA) {
		set_err(err_r, "oauth2: client_key_file '%s' is not an unencrypted PEM RSA private key",
			o->client_key_file);
		return OAUTH2_CONFIG;
	}
	f = fopen(o->client_certificate_file, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f != NULL)
		fclose(f);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (x == NULL || X509_digest(x, EVP_sha256(), md, &mdlen) != 1) {
		X509_free(x);
		set_err(err_r, "oauth2: client_certificate_file '%s' is not a PEM certificate",
			o->client_certificate_file);
		return OAUTH2_CONFIG;
	}
	EVP_PKEY *pub = X509_get0_pubkey(x);
	int match = pub != NULL && EVP_PKEY_eq(pub, c->key) == 1;
	X509_free(x);
	if (!match) {
		set_err(err_r, "oauth2: client_key_file '%s' is not the key of client_certificate_file "
			"'%s'", o->client_key_file, o->client_certificate_file);
		return OAUTH2_CONFIG;
	}
	c->x5t_s256 = b64url(md, mdlen);
	return OAUTH2_OK;
}

enum oauth2_res oauth2_client_new(const struct conf_account *a, struct oauth2_client **c_r,
				  char **err_r)
{
	*c_r = NULL;
	if (a->oauth2 == NULL) {
		set_err(err_r, "account '%s' has no oauth2 block", a->name);
		return OAUTH2_CONFIG;
	}
	if (oauth2_global_init(err_r) != 0)
		return OAUTH2_CONFIG;
	struct oauth2_client *c = xcalloc(1, sizeof *c);
	c->a = a;
	c->o = a->oauth2;
	c->connect_ms = (a->connect_timeout > 0 ? a->connect_timeout : 30) * 1000L;
	c->total_ms = (a->timeout > 0 ? a->timeout : 60) * 1000L;
	enum oauth2_res r = OAUTH2_OK;
	if (c->o->client_secret_file != NULL) {
		char *what = xasprintf("account '%s': oauth2: client_secret_file", a->name);
		if (conf_read_file_secret(c->o->client_secret_file, what, &c->secret, err_r) != PG_OK)
			r = OAUTH2_CONFIG;
		free(what);
	}
	if (r == OAUTH2_OK && c->o->client_key_file != NULL)
		r = load_key(c, err_r);
	if (r != OAUTH2_OK)
		oauth2_client_free(&c);
	*c_r = c;
	return r;
}

void oauth2_client_free(struct oauth2_client **cp)
{
	struct oauth2_client *c = *cp;
	if (c == NULL)
		return;
	wipe_free(&c->secret);
	EVP_PKEY_free(c->key);
	free(c->x5t_s256);
	free(c);
	*cp = NULL;
}

long oauth2_retry_after(const struct oauth2_client *c)
{
	return c->retry_after;
}

long oauth2_http_status(const struct oauth2_client *c)
{
	return c->http_status;
}

/* ---- one HTTPS request ------------------------------------------------ */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct reply *r = ud;
	if (buf_append(&r->body, p, size * n) != 0) {
		r->too_big = 1;
		return 0; /* libcurl aborts the transfer */
	}
	return size * n;
}

/* on_header - Retry-After in seconds (an HTTP date counts as 60 s) */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct reply *r = ud;
	size_t len = size * n;
	if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
		char v[64];
		size_t k = len - 12 < sizeof v - 1 ? len - 12 : sizeof v - 1;
		memcpy(v, p + 12, k);
		v[k] = '\0';
		char *end = NULL;
		long s = strtol(v, &end, 10);
		r->retry_after = (end != v && s >= 0) ? (s > 86400 ? 86400 : s) : 60;
	}
	return len;
}

static void set_common(CURL *h, const struct oauth2_client *c, struct reply *rep, char *errbuf)
{
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->o->ca_file != NULL)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->o->ca_file);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->total_ms);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "popgate/" PACKAGE_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, rep);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, rep);
}

/* post_form - POST the form to the endpoint; the reply's body (capped) and
 * HTTP status.  Only transport failures come back as errors (OAUTH2_TEMP). */
static enum oauth2_res post_form(struct oauth2_client *c, const char *endpoint,
				 const struct buf *form, struct reply *rep, char **err_r)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
	c->http_status = 0;
	c->retry_after = 0;
	if (form->data == NULL || form->len == 0) {
		curl_slist_free_all(hdrs);
		if (h != NULL)
			curl_easy_cleanup(h);
		set_err(err_r, "oauth2: %s: the request does not fit in %d KiB", endpoint, 64);
		return OAUTH2_CONFIG;
	}
	if (h == NULL || hdrs == NULL) {
		curl_slist_free_all(hdrs);
		if (h != NULL)
			curl_easy_cleanup(h);
		set_err(err_r, "oauth2: %s: cannot set up libcurl", endpoint);
		return OAUTH2_TEMP;
	}
	set_common(h, c, rep, errbuf);
	curl_easy_setopt(h, CURLOPT_URL, endpoint);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, form->data ? form->data : "");
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)form->len);
	CURLcode cr = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	c->http_status = status;
	c->retry_after = rep->retry_after;
	if (rep->too_big) {
		set_err(err_r, "oauth2: %s: HTTP %ld: reply larger than %d KiB", endpoint, status,
			REPLY_MAX / 1024);
		return OAUTH2_TEMP;
	}
	if (cr != CURLE_OK) {
		char *why = sanitize_for_log(errbuf[0] ? errbuf : curl_easy_strerror(cr),
					     strlen(errbuf[0] ? errbuf : curl_easy_strerror(cr)), 300);
		set_err(err_r, "oauth2: %s: %s%s", endpoint,
			cr == CURLE_OPERATION_TIMEDOUT ? "timed out: " :
			cr == CURLE_PEER_FAILED_VERIFICATION || cr == CURLE_SSL_CONNECT_ERROR ||
			cr == CURLE_SSL_CACERT_BADFILE ? "TLS: " : "", why);
		free(why);
		return OAUTH2_TEMP;
	}
	return OAUTH2_OK;
}

/* ---- replies ------------------------------------------------------------ */

/* json_str - a string member, NULL when absent; -1 when of another type */
static int json_str(json_t *o, const char *name, const char **v_r)
{
	json_t *v = json_object_get(o, name);
	*v_r = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -1;
	*v_r = json_string_value(v);
	return 0;
}

/* json_int - an integer member (or a string of digits, as some endpoints
 * send); -1 when malformed, 0 with *v_r = def when absent */
static int json_int(json_t *o, const char *name, long def, long *v_r)
{
	json_t *v = json_object_get(o, name);
	*v_r = def;
	if (v == NULL)
		return 0;
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);
		if (i < 0 || i > 10L * 365 * 86400)
			return -1;
		*v_r = (long)i;
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end = NULL;
		errno = 0;
		long i = strtol(s, &end, 10);
		if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || i > 10L * 365 * 86400)
			return -1;
		*v_r = i;
		return 0;
	}
	return -1;
}

/* classify - what an OAuth2 `error` code means for popgate */
static enum oauth2_res classify(const char *error, int *pending_r)
{
	static const struct {
		const char *error;
		enum oauth2_res res;
		int pending;
	} t[] = {
		{ "invalid_grant", OAUTH2_REAUTHORIZE, 0 },
		{ "invalid_client", OAUTH2_CONFIG, 0 },
		{ "unauthorized_client", OAUTH2_CONFIG, 0 },
		{ "invalid_scope", OAUTH2_CONFIG, 0 },
		{ "unsupported_grant_type", OAUTH2_CONFIG, 0 },
		{ "invalid_request", OAUTH2_CONFIG, 0 },
		{ "access_denied", OAUTH2_DENIED, 0 },
		{ "expired_token", OAUTH2_DENIED, 0 },
		{ "authorization_pending", OAUTH2_TEMP, 1 },
		{ "slow_down", OAUTH2_TEMP, 2 },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (strcmp(error, t[i].error) == 0) {
			if (pending_r != NULL)
				*pending_r = t[i].pending;
			return t[i].res;
		}
	return OAUTH2_TEMP; /* server_error, temporarily_unavailable, unknown */
}

/* parse_object - the body as one JSON object (duplicates refused) */
static json_t *parse_object(const char *body, size_t len)
{
	json_error_t je;
	json_t *j = body != NULL ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* error_reply - an error reply: class from status and `error` */
static enum oauth2_res error_reply(const char *endpoint, long status, json_t *j, int *pending_r,
				   char **err_r)
{
	const char *error = NULL, *desc = NULL;
	if (j == NULL || json_str(j, "error", &error) != 0 || error == NULL) {
		set_err(err_r, "oauth2: %s: HTTP %ld%s", endpoint, status,
			j == NULL ? " with a body that is not JSON" : " without an OAuth2 error");
		return OAUTH2_TEMP;
	}
	enum oauth2_res r = classify(error, pending_r);
	if (status == 429 || status >= 500)
		r = OAUTH2_TEMP;
	json_str(j, "error_description", &desc);
	char *e = sanitize_for_log(error, strlen(error), 64);
	char *d = desc ? sanitize_for_log(desc, strlen(desc), 240) : NULL;
	set_err(err_r, "oauth2: %s: HTTP %ld error=%s%s%s%s", endpoint, status, e,
		d ? " (" : "", d ? d : "", d ? ")" : "");
	free(e);
	free(d);
	return r;
}

/* token_fields - the members of a successful token reply */
static enum oauth2_res token_fields(const char *endpoint, json_t *j, struct oauth2_token *t,
				    char **err_r)
{
	const char *at = NULL, *rt = NULL, *type = NULL, *scope = NULL;
	long expires_in = 0;
	const char *bad = json_str(j, "access_token", &at) != 0 ? "access_token" :
			  json_str(j, "refresh_token", &rt) != 0 ? "refresh_token" :
			  json_str(j, "token_type", &type) != 0 ? "token_type" :
			  json_str(j, "scope", &scope) != 0 ? "scope" :
			  json_int(j, "expires_in", 0, &expires_in) != 0 ? "expires_in" : NULL;
	if (bad == NULL && at == NULL)
		bad = "access_token";
	if (bad == NULL && !token_ok(at))
		bad = "access_token";
	if (bad == NULL && rt != NULL && !token_ok(rt))
		bad = "refresh_token";
	if (bad == NULL && type != NULL && strcasecmp(type, "bearer") != 0)
		bad = "token_type";
	if (bad != NULL) {
		set_err(err_r, "oauth2: %s: HTTP 200 with %s '%s' (expected a token reply)", endpoint,
			json_object_get(j, bad) == NULL ? "no" : "a malformed", bad);
		return OAUTH2_TEMP;
	}
	t->access_token = xstrdup(at);
	t->refresh_token = rt ? xstrdup(rt) : NULL;
	t->scope = scope ? sanitize_for_log(scope, strlen(scope), 1000) : NULL;
	t->expires_at = expires_in > 0 ? time(NULL) + expires_in : 0;
	return OAUTH2_OK;
}

enum oauth2_res oauth2_parse_token_reply(const char *endpoint, long http_status,
					 const char *body, size_t len, struct oauth2_token *t_r,
					 int *pending_r, char **err_r)
{
	memset(t_r, 0, sizeof *t_r);
	if (pending_r != NULL)
		*pending_r = 0;
	json_t *j = parse_object(body, len);
	enum oauth2_res r;
	if (http_status == 200 && j == NULL) {
		set_err(err_r, "oauth2: %s: HTTP 200 with a body that is not a JSON object", endpoint);
		r = OAUTH2_TEMP;
	} else if (http_status == 200) {
		r = token_fields(endpoint, j, t_r, err_r);
	} else {
		r = error_reply(endpoint, http_status, j, pending_r, err_r);
	}
	json_decref(j);
	return r;
}

/* log_outcome - endpoint, HTTP status, class; never a body */
static void log_outcome(const struct oauth2_client *c, const char *endpoint, const char *grant,
			enum oauth2_res r, const char *err)
{
	if (r == OAUTH2_OK) {
		LOG_INFO("account=%s oauth2=%s endpoint=%s http=%ld status=ok", c->a->name, grant,
			 endpoint, c->http_status);
		return;
	}
	char *why = sanitize_for_log(err ? err : "", err ? strlen(err) : 0, 500);
	char ra[40] = "";
	if (c->retry_after > 0)
		snprintf(ra, sizeof ra, " retry_after=%ld", c->retry_after);
	LOG_WARN("account=%s oauth2=%s endpoint=%s http=%ld status=failed class=%s%s "
		 "reason=\"%s\"", c->a->name, grant, endpoint, c->http_status, oauth2_res_name(r),
		 ra, why);
	free(why);
}

/* ---- grants ------------------------------------------------------------- */

/* client_auth - client_id, and the client secret when there is one */
static void client_auth(const struct oauth2_client *c, struct buf *form)
{
	form_add(form, "client_id", c->o->client_id);
	if (c->secret != NULL)
		form_add(form, "client_secret", c->secret);
}

/* token_request - POST a grant to the token endpoint and classify the reply;
 * the form is wiped (it holds secrets) */
static enum oauth2_res token_request(struct oauth2_client *c, const char *grant, struct buf *form,
				     struct oauth2_token *t_r, int *pending_r, char **err_r)
{
	struct reply rep = { .retry_after = 0 };
	const char *ep = c->o->token_endpoint;
	buf_init(&rep.body, REPLY_MAX);
	memset(t_r, 0, sizeof *t_r);
	if (pending_r != NULL)
		*pending_r = 0;
	enum oauth2_res r = post_form(c, ep, form, &rep, err_r);
	if (r == OAUTH2_OK)
		r = oauth2_parse_token_reply(ep, c->http_status, rep.body.data, rep.body.len, t_r,
					     pending_r, err_r);
	buf_wipe(&rep.body);
	buf_wipe(form);
	if (pending_r != NULL && *pending_r)
		LOG_DEBUG("account=%s oauth2=%s endpoint=%s http=%ld status=%s", c->a->name, grant,
			  ep, c->http_status, *pending_r == 2 ? "slow_down" : "pending");
	else
		log_outcome(c, ep, grant, r, err_r ? *err_r : NULL);
	return r;
}

enum oauth2_res oauth2_refresh(struct oauth2_client *c, const char *refresh_token,
			       struct oauth2_token *t_r, char **err_r)
{
	struct buf form;
	buf_init(&form, 64 * 1024);
	form_add(&form, "grant_type", "refresh_token");
	form_add(&form, "refresh_token", refresh_token);
	client_auth(c, &form);
	if (c->o->provider != OAUTH2_PROVIDER_GOOGLE)
		form_add(&form, "scope", c->o->scope);
	return token_request(c, "refresh_token", &form, t_r, NULL, err_r);
}

enum oauth2_res oauth2_exchange_code(struct oauth2_client *c, const char *code,
				     const char *verifier, const char *redirect_uri,
				     struct oauth2_token *t_r, char **err_r)
{
	struct buf form;
	buf_init(&form, 64 * 1024);
	form_add(&form, "grant_type", "authorization_code");
	form_add(&form, "code", code);
	form_add(&form, "redirect_uri", redirect_uri);
	form_add(&form, "code_verifier", verifier);
	client_auth(c, &form);
	return token_request(c, "authorization_code", &form, t_r, NULL, err_r);
}

enum oauth2_res oauth2_client_credentials(struct oauth2_client *c, struct oauth2_token *t_r,
					  char **err_r)
{
	struct buf form;
	buf_init(&form, 64 * 1024);
	form_add(&form, "grant_type", "client_credentials");
	form_add(&form, "scope", c->o->scope);
	client_auth(c, &form);
	if (c->key != NULL) {
		char *jwt = oauth2_client_assertion(c, time(NULL));
		if (jwt == NULL) {
			buf_wipe(&form);
			set_err(err_r, "oauth2: cannot sign the client assertion with '%s'",
				c->o->client_key_file);
			return OAUTH2_CONFIG;
		}
		form_add(&form, "client_assertion_type", JWT_BEARER);
		form_add(&form, "client_assertion", jwt);
		wipe_free(&jwt);
	}
	return token_request(c, "client_credentials", &form, t_r, NULL, err_r);
}

/* ---- device authorization (RFC 8628) ------------------------------------ */

static enum oauth2_res device_fields(const char *ep, json_t *j, struct oauth2_device *d,
				     char **err_r)
{
	const char *dc = NULL, *uc = NULL, *uri = NULL, *url = NULL, *complete = NULL;
	long expires_in = 0, interval = 5;
	const char *bad = json_str(j, "device_code", &dc) != 0 || dc == NULL || !token_ok(dc) ?
			  "device_code" :
			  json_str(j, "user_code", &uc) != 0 || uc == NULL || !token_ok(uc) ?
			  "user_code" :
			  json_str(j, "verification_uri", &uri) != 0 ? "verification_uri" :
			  json_str(j, "verification_url", &url) != 0 ? "verification_url" :
			  json_str(j, "verification_uri_complete", &complete) != 0 ?
			  "verification_uri_complete" :
			  json_int(j, "expires_in", 0, &expires_in) != 0 || expires_in <= 0 ?
			  "expires_in" :
			  json_int(j, "interval", 5, &interval) != 0 || interval > 300 ? "interval" : NULL;
	if (bad == NULL && uri == NULL)
		uri = url; /* Google's older name */
	if (bad == NULL && (uri == NULL || !token_ok(uri) || strncasecmp(uri, "https://", 8) != 0))
		bad = "verification_uri";
	if (bad == NULL && complete != NULL && !token_ok(complete))
		bad = "verification_uri_complete";
	if (bad != NULL) {
		set_err(err_r, "oauth2: %s: HTTP 200 with a missing or malformed '%s'", ep, bad);
		return OAUTH2_TEMP;
	}
	d->device_code = xstrdup(dc);
	d->user_code = xstrdup(uc);
	d->verification_uri = xstrdup(uri);
	d->verification_uri_complete = complete ? xstrdup(complete) : NULL;
	d->expires_at = time(NULL) + expires_in;
	d->interval = interval > 0 ? (int)interval : 5;
	return OAUTH2_OK;
}

enum oauth2_res oauth2_device_start(struct oauth2_client *c, struct oauth2_device *d_r,
				    char **err_r)
{
	const char *ep = c->o->device_endpoint;
	struct reply rep = { .retry_after = 0 };
	struct buf form;
	memset(d_r, 0, sizeof *d_r);
	if (ep == NULL) {
		set_err(err_r, "oauth2: account '%s' has no device_endpoint", c->a->name);
		return OAUTH2_CONFIG;
	}
	buf_init(&rep.body, REPLY_MAX);
	buf_init(&form, 64 * 1024);
	client_auth(c, &form);
	form_add(&form, "scope", c->o->scope);
	enum oauth2_res r = post_form(c, ep, &form, &rep, err_r);
	buf_wipe(&form);
	if (r == OAUTH2_OK) {
		json_t *j = parse_object(rep.body.data, rep.body.len);
		if (c->http_status == 200 && j != NULL)
			r = device_fields(ep, j, d_r, err_r);
		else if (c->http_status == 200)
			r = OAUTH2_TEMP, set_err(err_r, "oauth2: %s: HTTP 200 with a body that is not "
						 "a JSON object", ep);
		else
			r = error_reply(ep, c->http_status, j, NULL, err_r);
		json_decref(j);
	}
	buf_wipe(&rep.body);
	log_outcome(c, ep, "device_authorization", r, err_r ? *err_r : NULL);
	return r;
}

/* nap - sleep seconds, in steps, unless *stop becomes set; 0 if stopped */
static int nap(long seconds, const volatile sig_atomic_t *stop)
{
	for (long i = 0; i < seconds * 10; i++) {
		if (stop != NULL && *stop)
			return 0;
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return stop == NULL || !*stop;
}

enum oauth2_res oauth2_device_wait(struct oauth2_client *c, struct oauth2_device *d,
				   const volatile sig_atomic_t *stop, struct oauth2_token *t_r,
				   char **err_r)
{
	long interval = d->interval > 0 ? d->interval : 5;
	memset(t_r, 0, sizeof *t_r);
	for (;;) {
		if (!nap(interval, stop)) {
			set_err(err_r, "oauth2: stopped while waiting for the sign-in");
			return OAUTH2_TEMP;
		}
		if (time(NULL) >= d->expires_at) {
			set_err(err_r, "oauth2: the user code expired before the sign-in; run popgate "
				"authorize %s again", c->a->name);
			return OAUTH2_DENIED;
		}
		struct buf form;
		int pending = 0;
		char *err = NULL;
		buf_init(&form, 64 * 1024);
		form_add(&form, "grant_type", DEVICE_GRANT);
		form_add(&form, "device_code", d->device_code);
		client_auth(c, &form);
		enum oauth2_res r = token_request(c, "device_code", &form, t_r, &pending, &err);
		if (r == OAUTH2_TEMP && pending) {
			if (pending == 2)
				interval += SLOW_DOWN_STEP;
			free(err);
			continue;
		}
		if (r == OAUTH2_TEMP && c->retry_after > 0 && c->retry_after < 300) {
			interval = c->retry_after > interval ? c->retry_after : interval;
			free(err);
			continue;
		}
		if (r != OAUTH2_OK)
			set_err(err_r, "%s", err);
		free(err);
		return r;
	}
}

/* ---- authorization code + PKCE ----------------------------------------- */

char *oauth2_pkce_challenge(const char *verifier)
{
	unsigned char md[32];
	unsigned int n = 0;
	EVP_Digest(verifier, strlen(verifier), md, &n, EVP_sha256(), NULL);
	return b64url(md, n);
}

void oauth2_pkce_new(char **verifier_r, char **challenge_r, char **state_r)
{
	*verifier_r = random_b64url(32);
	*challenge_r = oauth2_pkce_challenge(*verifier_r);
	*state_r = random_b64url(16);
}

char *oauth2_authorize_url(const struct oauth2_client *c, const char *redirect_uri,
			   const char *state, const char *challenge)
{
	struct buf q;
	buf_init(&q, 16 * 1024);
	form_add(&q, "response_type", "code");
	form_add(&q, "client_id", c->o->client_id);
	form_add(&q, "redirect_uri", redirect_uri);
	form_add(&q, "scope", c->o->scope);
	form_add(&q, "state", state);
	form_add(&q, "code_challenge", challenge);
	form_add(&q, "code_challenge_method", "S256");
	if (c->o->provider == OAUTH2_PROVIDER_GOOGLE) {
		form_add(&q, "access_type", "offline"); /* a refresh token */
		form_add(&q, "prompt", "consent");
	}
	const char *ep = c->o->authorize_endpoint ? c->o->authorize_endpoint : "";
	char *url = xasprintf("%s%c%s", ep, strchr(ep, '?') ? '&' : '?', q.data ? q.data : "");
	buf_free(&q);
	return url;
}

/* ---- private_key_jwt (RFC 7523) ----------------------------------------- */

static char *b64url_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (s == NULL)
		return NULL;
	char *r = b64url((const unsigned char *)s, strlen(s));
	free(s);
	return r;
}

char *oauth2_client_assertion(const struct oauth2_client *c, time_t now)
{
	if (c->key == NULL)
		return NULL;
	char *jti = random_b64url(18);
	char *hdr = b64url_json(json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT",
					  "x5t#S256", c->x5t_s256));
	char *claims = b64url_json(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}",
		"aud", c->o->token_endpoint, "iss", c->o->client_id, "sub", c->o->client_id,
		"jti", jti, "iat", (json_int_t)now, "nbf", (json_int_t)now,
		"exp", (json_int_t)now + 300));
	free(jti);
	char *input = hdr && claims ? xasprintf("%s.%s", hdr, claims) : NULL;
	free(hdr);
	free(claims);
	if (input == NULL)
		return NULL;
	unsigned char sig[1024];
	size_t siglen = sizeof sig;
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok = m != NULL && EVP_PKEY_get_size(c->key) <= (int)sizeof sig &&
		 EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, c->key) == 1 &&
		 EVP_DigestSign(m, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1;
	EVP_MD_CTX_free(m);
	char *jwt = NULL;
	if (ok) {
		char *s = b64url(sig, siglen);
		jwt = xasprintf("%s.%s", input, s);
		free(s);
	}
	free(input);
	return jwt;
}

/* ---- the module's table (oauth2_module.h) -------------------------------- */

const struct oauth2_module popgate_oauth2_module = {
	.abi = OAUTH2_MODULE_ABI,
	.build = POPGATE_BUILD_ID,
	.global_init = oauth2_global_init,
	.client_new = oauth2_client_new,
	.client_free = oauth2_client_free,
	.retry_after = oauth2_retry_after,
	.http_status = oauth2_http_status,
	.device_start = oauth2_device_start,
	.device_wait = oauth2_device_wait,
	.pkce_new = oauth2_pkce_new,
	.pkce_challenge = oauth2_pkce_challenge,
	.authorize_url = oauth2_authorize_url,
	.exchange_code = oauth2_exchange_code,
	.refresh = oauth2_refresh,
	.client_credentials = oauth2_client_credentials,
	.parse_token_reply = oauth2_parse_token_reply,
	.client_assertion = oauth2_client_assertion,
};
