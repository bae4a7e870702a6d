/* check_oauth2.c - the OAuth2 client without a network: replies of a token
 * endpoint and their classes, PKCE (RFC 7636 appendix B), the
 * private_key_jwt assertion (signature, x5t#S256, claims) */
#include "config.h"

#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "oauth2.h"
#include "sasl.h"

static const char *EP = "https://idp.test/token";

static enum oauth2_res parse(long status, const char *body, struct oauth2_token *t, int *pending,
			     char **err)
{
	*err = NULL;
	return oauth2_parse_token_reply(EP, status, body, strlen(body), t, pending, err);
}

START_TEST(test_token_reply_ok)
{
	struct oauth2_token t;
	char *err = NULL;
	int pending = -1;
	time_t now = time(NULL);
	ck_assert_int_eq(parse(200, "{\"access_token\":\"eyJ.abc.def\",\"token_type\":\"Bearer\","
			       "\"expires_in\":3600,\"refresh_token\":\"R2\",\"scope\":\"pop\"}",
			       &t, &pending, &err), OAUTH2_OK);
	ck_assert_str_eq(t.access_token, "eyJ.abc.def");
	ck_assert_str_eq(t.refresh_token, "R2");
	ck_assert_str_eq(t.scope, "pop");
	ck_assert_int_eq(pending, 0);
	ck_assert(t.expires_at >= now + 3600 && t.expires_at <= time(NULL) + 3600);
	oauth2_token_wipe(&t);
	ck_assert_ptr_null(t.access_token);
	/* expires_in as a string of digits (some endpoints); no refresh token */
	ck_assert_int_eq(parse(200, "{\"access_token\":\"a\",\"expires_in\":\"60\"}", &t, NULL,
			       &err), OAUTH2_OK);
	ck_assert_ptr_null(t.refresh_token);
	ck_assert(t.expires_at > now);
	oauth2_token_wipe(&t);
}
END_TEST

/* expect - class and every needle in the message (which names the endpoint) */
static void expect(long status, const char *body, enum oauth2_res res, int pend, const char *n1,
		   const char *n2)
{
	struct oauth2_token t;
	char *err = NULL;
	int pending = -1;
	ck_assert_int_eq(parse(status, body, &t, &pending, &err), res);
	ck_assert_ptr_null(t.access_token);
	ck_assert_int_eq(pending, pend);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, EP) != NULL, "no endpoint in '%s'", err);
	if (n1)
		ck_assert_msg(strstr(err, n1) != NULL, "expected '%s' in '%s'", n1, err);
	if (n2)
		ck_assert_msg(strstr(err, n2) != NULL, "expected '%s' in '%s'", n2, err);
	free(err);
}

START_TEST(test_token_reply_errors)
{
	expect(400, "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS70000 revoked\"}",
	       OAUTH2_REAUTHORIZE, 0, "HTTP 400 error=invalid_grant", "AADSTS70000");
	expect(401, "{\"error\":\"invalid_client\"}", OAUTH2_CONFIG, 0, "error=invalid_client", NULL);
	expect(400, "{\"error\":\"unauthorized_client\"}", OAUTH2_CONFIG, 0, "unauthorized_client",
	       NULL);
	expect(400, "{\"error\":\"invalid_scope\"}", OAUTH2_CONFIG, 0, "invalid_scope", NULL);
	expect(400, "{\"error\":\"authorization_pending\"}", OAUTH2_TEMP, 1, NULL, NULL);
	expect(400, "{\"error\":\"slow_down\"}", OAUTH2_TEMP, 2, NULL, NULL);
	expect(400, "{\"error\":\"access_denied\"}", OAUTH2_DENIED, 0, "access_denied", NULL);
	expect(400, "{\"error\":\"expired_token\"}", OAUTH2_DENIED, 0, "expired_token", NULL);
	/* 429/5xx are temporary whatever the body says */
	expect(429, "{\"error\":\"invalid_grant\"}", OAUTH2_TEMP, 0, "HTTP 429", NULL);
	expect(503, "<html><body>Service Unavailable</body></html>", OAUTH2_TEMP, 0,
	       "HTTP 503 with a body that is not JSON", NULL);
	expect(500, "", OAUTH2_TEMP, 0, "HTTP 500", NULL);
	expect(400, "{\"foo\":1}", OAUTH2_TEMP, 0, "without an OAuth2 error", NULL);
	/* 200 that is not a token */
	expect(200, "<html>sign in</html>", OAUTH2_TEMP, 0, "HTTP 200", "not a JSON object");
	expect(200, "garbage\x01\xff", OAUTH2_TEMP, 0, "not a JSON object", NULL);
	expect(200, "[\"access_token\"]", OAUTH2_TEMP, 0, "not a JSON object", NULL);
	expect(200, "{\"token_type\":\"Bearer\"}", OAUTH2_TEMP, 0, "no 'access_token'", NULL);
	expect(200, "{\"access_token\":42}", OAUTH2_TEMP, 0, "malformed 'access_token'", NULL);
	expect(200, "{\"access_token\":\"a b\"}", OAUTH2_TEMP, 0, "malformed 'access_token'", NULL);
	expect(200, "{\"access_token\":\"a\",\"expires_in\":\"soon\"}", OAUTH2_TEMP, 0,
	       "malformed 'expires_in'", NULL);
	expect(200, "{\"access_token\":\"a\",\"expires_in\":-5}", OAUTH2_TEMP, 0,
	       "malformed 'expires_in'", NULL);
	expect(200, "{\"access_token\":\"a\",\"refresh_token\":[]}", OAUTH2_TEMP, 0,
	       "malformed 'refresh_token'", NULL);
	expect(200, "{\"access_token\":\"a\",\"token_type\":\"mac\"}", OAUTH2_TEMP, 0,
	       "malformed 'token_type'", NULL);
	/* duplicate members are refused, not guessed */
	expect(200, "{\"access_token\":\"a\",\"access_token\":\"b\"}", OAUTH2_TEMP, 0,
	       "not a JSON object", NULL);
}
END_TEST

START_TEST(test_pkce)
{
	char *c = oauth2_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
	ck_assert_str_eq(c, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
	free(c);
	char *v = NULL, *ch = NULL, *st = NULL, *v2 = NULL, *ch2 = NULL, *st2 = NULL;
	oauth2_pkce_new(&v, &ch, &st);
	oauth2_pkce_new(&v2, &ch2, &st2);
	ck_assert_uint_eq(strlen(v), 43);
	ck_assert_str_ne(v, v2);
	ck_assert_str_ne(st, st2);
	c = oauth2_pkce_challenge(v);
	ck_assert_str_eq(c, ch);
	free(c);
	free(v), free(ch), free(st), free(v2), free(ch2), free(st2);
}
END_TEST

/* ---- private_key_jwt ---- */

static char dir[] = "/tmp/check_oauth2.XXXXXX";
static char key_path[300], cert_path[300], other_key_path[300];
static unsigned char cert_der_sha256[32];

static EVP_PKEY *write_key(const char *path)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	ck_assert_ptr_nonnull(k);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	chmod(path, 0600);
	return k;
}

static void setup(void)
{
	strcpy(dir, "/tmp/check_oauth2.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(key_path, sizeof key_path, "%s/app.key", dir);
	snprintf(other_key_path, sizeof other_key_path, "%s/other.key", dir);
	snprintf(cert_path, sizeof cert_path, "%s/app.pem", dir);
	EVP_PKEY *k = write_key(key_path);
	EVP_PKEY_free(write_key(other_key_path));
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"popgate-test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, k, EVP_sha256());
	unsigned int n = 0;
	X509_digest(x, EVP_sha256(), cert_der_sha256, &n);
	FILE *f = fopen(cert_path, "w");
	PEM_write_X509(f, x);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void teardown(void)
{
	unlink(key_path);
	unlink(other_key_path);
	unlink(cert_path);
	rmdir(dir);
}

/* b64url_decode - via the standard alphabet decoder */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *len_r)
{
	char *t = calloc(1, n + 4);
	for (size_t i = 0; i < n; i++)
		t[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	while (n % 4)
		t[n++] = '=';
	unsigned char *out = NULL;
	ck_assert_int_eq(sasl_b64_decode(t, n, &out, len_r), 0);
	free(t);
	return out;
}

START_TEST(test_client_assertion)
{
	struct conf_oauth2 o = { .provider = OAUTH2_PROVIDER_MICROSOFT,
				 .flow = OAUTH2_FLOW_CLIENT_CREDENTIALS, .client_id = "app-id",
				 .client_certificate_file = cert_path, .client_key_file = key_path,
				 .token_endpoint = (char *)EP, .scope = "s" };
	struct conf_account a = { .name = "app", .oauth2 = &o, .timeout = 5, .connect_timeout = 5 };
	struct oauth2_client *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(oauth2_client_new(&a, &c, &err), OAUTH2_OK);
	char *jwt = oauth2_client_assertion(c, 1700000000);
	ck_assert_ptr_nonnull(jwt);
	char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	ck_assert_ptr_nonnull(d2);
	size_t hl, cl, sl;
	unsigned char *hdr = b64url_decode(jwt, (size_t)(d1 - jwt), &hl);
	unsigned char *cl_ = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
	unsigned char *sig = b64url_decode(d2 + 1, strlen(d2 + 1), &sl);
	char *x5t = NULL;
	{ /* the expected x5t#S256 */
		size_t i;
		static const char al[] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		x5t = calloc(1, 50);
		unsigned char *p = cert_der_sha256;
		char *q = x5t;
		for (i = 0; i + 2 < 32; i += 3) {
			unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
			*q++ = al[v >> 18 & 63], *q++ = al[v >> 12 & 63];
			*q++ = al[v >> 6 & 63], *q++ = al[v & 63];
		}
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
		*q++ = al[v >> 18 & 63], *q++ = al[v >> 12 & 63], *q++ = al[v >> 6 & 63];
	}
	char want[200];
	snprintf(want, sizeof want, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5t#S256\":\"%s\"}", x5t);
	ck_assert_str_eq((char *)hdr, want);
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"aud\":\"https://idp.test/token\""));
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"iss\":\"app-id\""));
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"sub\":\"app-id\""));
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"iat\":1700000000"));
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"nbf\":1700000000"));
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"exp\":1700000300"));
	ck_assert_ptr_nonnull(strstr((char *)cl_, "\"jti\":\""));
	/* the signature verifies with the certificate's key over header.claims */
	FILE *f = fopen(cert_path, "r");
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	ck_assert_int_eq(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)), 1);
	ck_assert_int_eq(EVP_DigestVerify(m, sig, sl, (unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
	EVP_MD_CTX_free(m);
	X509_free(x);
	/* two assertions differ (jti) */
	char *jwt2 = oauth2_client_assertion(c, 1700000000);
	ck_assert_str_ne(jwt, jwt2);
	free(jwt2);
	free(jwt), free(hdr), free(cl_), free(sig), free(x5t);
	oauth2_client_free(&c);
	ck_assert_ptr_null(c);

	/* a key that is not the certificate's is refused, naming both files */
	o.client_key_file = other_key_path;
	ck_assert_int_eq(oauth2_client_new(&a, &c, &err), OAUTH2_CONFIG);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err, other_key_path));
	ck_assert_ptr_nonnull(strstr(err, "is not the key of client_certificate_file"));
	free(err);
	err = NULL;
	o.client_key_file = cert_path; /* not a key at all */
	chmod(cert_path, 0600);
	ck_assert_int_eq(oauth2_client_new(&a, &c, &err), OAUTH2_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "is not an unencrypted PEM RSA private key"));
	free(err);
}
END_TEST

START_TEST(test_authorize_url)
{
	struct conf_oauth2 o = { .provider = OAUTH2_PROVIDER_GOOGLE, .flow = OAUTH2_FLOW_BROWSER,
				 .client_id = "id.apps", .scope = "https://mail.google.com/",
				 .authorize_endpoint = "https://accounts.google.com/o/oauth2/v2/auth",
				 .token_endpoint = (char *)EP };
	struct conf_account a = { .name = "g", .oauth2 = &o };
	struct oauth2_client *c = NULL;
	char *err = NULL;
	ck_assert_int_eq(oauth2_client_new(&a, &c, &err), OAUTH2_OK);
	char *u = oauth2_authorize_url(c, "http://127.0.0.1:4711/", "ST", "CH");
	ck_assert_str_eq(u, "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&"
		"client_id=id.apps&redirect_uri=http%3A%2F%2F127.0.0.1%3A4711%2F&"
		"scope=https%3A%2F%2Fmail.google.com%2F&state=ST&code_challenge=CH&"
		"code_challenge_method=S256&access_type=offline&prompt=consent");
	free(u);
	oauth2_client_free(&c);
}
END_TEST

/* a request that does not fit is refused whole, never sent truncated (the
 * endpoint is a closed port: sending would come back temporary) */
START_TEST(test_form_overflow)
{
	struct conf_oauth2 o = { .provider = OAUTH2_PROVIDER_GENERIC, .flow = OAUTH2_FLOW_DEVICE,
				 .client_id = "id", .scope = "s",
				 .token_endpoint = "https://127.0.0.1:1/token" };
	struct conf_account a = { .name = "x", .oauth2 = &o, .timeout = 2, .connect_timeout = 2 };
	struct oauth2_client *c = NULL;
	struct oauth2_token t;
	char *err = NULL;
	ck_assert_int_eq(oauth2_client_new(&a, &c, &err), OAUTH2_OK);
	char *big = malloc(70000);
	memset(big, 'r', 69999);
	big[69999] = '\0';
	ck_assert_int_eq(oauth2_refresh(c, big, &t, &err), OAUTH2_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "does not fit"));
	ck_assert_ptr_null(t.access_token);
	free(err);
	free(big);
	oauth2_client_free(&c);
}
END_TEST

static Suite *oauth2_suite(void)
{
	Suite *s = suite_create("oauth2");
	TCase *tc = tcase_create("oauth2");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_token_reply_ok);
	tcase_add_test(tc, test_token_reply_errors);
	tcase_add_test(tc, test_pkce);
	tcase_add_test(tc, test_client_assertion);
	tcase_add_test(tc, test_authorize_url);
	tcase_add_test(tc, test_form_overflow);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(oauth2_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
