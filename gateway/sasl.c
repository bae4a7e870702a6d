/*
 * sasl.c - SASL client mechanisms and APOP (see sasl.h).
 *
 * Each mechanism is a tiny state machine over `step`: the number of client
 * messages produced so far.  SCRAM keeps what the final verification needs
 * (the AuthMessage and the ServerSignature it expects) and wipes the salted
 * password as soon as it is no longer needed.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "sasl.h"

struct sasl {
	enum sasl_mech mech;
	int step;      /* client messages sent so far */
	int complete;  /* nothing more is needed from us */
	char *user;
	char *secret;
	char *host;
	int port;
	/* SCRAM */
	char *nonce;       /* client nonce */
	char *first_bare;  /* client-first-message-bare */
	unsigned char server_sig[EVP_MAX_MD_SIZE];
	unsigned int sig_len;
};

const char *sasl_mech_name(enum sasl_mech m)
{
	static const char *const names[] = {
		[SASL_PLAIN] = "PLAIN", [SASL_LOGIN] = "LOGIN", [SASL_CRAM_MD5] = "CRAM-MD5",
		[SASL_SCRAM_SHA1] = "SCRAM-SHA-1", [SASL_SCRAM_SHA256] = "SCRAM-SHA-256",
		[SASL_XOAUTH2] = "XOAUTH2", [SASL_OAUTHBEARER] = "OAUTHBEARER",
	};
	return names[m];
}

void sasl_wipe_free(char *p, size_t n)
{
	if (p == NULL)
		return;
	explicit_bzero(p, n);
	free(p);
}

static void wipe_str(char **p)
{
	if (*p != NULL)
		sasl_wipe_free(*p, strlen(*p));
	*p = NULL;
}

struct sasl *sasl_new(enum sasl_mech m, const char *user, const char *secret,
		      const char *host, int port)
{
	struct sasl *s = xcalloc(1, sizeof *s);
	s->mech = m;
	s->user = xstrdup(user);
	s->secret = xstrdup(secret);
	s->host = xstrdup(host != NULL ? host : "");
	s->port = port;
	return s;
}

void sasl_set_nonce(struct sasl *s, const char *nonce)
{
	free(s->nonce);
	s->nonce = xstrdup(nonce);
}

int sasl_has_initial(const struct sasl *s)
{
	return s->mech == SASL_PLAIN || s->mech == SASL_SCRAM_SHA1 ||
	       s->mech == SASL_SCRAM_SHA256;
}

int sasl_complete(const struct sasl *s)
{
	return s->complete;
}

void sasl_free(struct sasl **sp)
{
	if (sp == NULL || *sp == NULL)
		return;
	struct sasl *s = *sp;
	wipe_str(&s->secret);
	free(s->user);
	free(s->host);
	free(s->nonce);
	free(s->first_bare);
	explicit_bzero(s, sizeof *s);
	free(s);
	*sp = NULL;
}

/* ---- base64 ----------------------------------------------------------- */

char *sasl_b64_encode(const void *p, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

int sasl_b64_decode(const char *p, size_t n, unsigned char **out_r, size_t *outlen_r)
{
	if (n % 4 != 0 || n > 1u << 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			 (c >= '0' && c <= '9') || c == '+' || c == '/' ||
			 (c == '=' && i >= n - 2 && (i == n - 1 || p[n - 1] == '='));
		if (!ok)
			return -1;
	}
	unsigned char *out = xmalloc(n / 4 * 3 + 1);
	int len = n > 0 ? EVP_DecodeBlock(out, (const unsigned char *)p, (int)n) : 0;
	if (len < 0) {
		free(out);
		return -1;
	}
	if (n > 0 && p[n - 1] == '=')
		len -= p[n - 2] == '=' ? 2 : 1;
	out[len] = '\0';
	*out_r = out;
	*outlen_r = (size_t)len;
	return 0;
}

/* ---- helpers ---------------------------------------------------------- */

static void hex(const unsigned char *d, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

/* msg - hand a built message out */
static enum pg_res msg(char *m, size_t n, char **out_r, size_t *outlen_r)
{
	*out_r = m;
	*outlen_r = n;
	return PG_OK;
}

static enum pg_res plain_step(struct sasl *s, char **out_r, size_t *outlen_r)
{
	size_t u = strlen(s->user), p = strlen(s->secret);
	char *m = xmalloc(u + p + 3);
	m[0] = '\0';
	memcpy(m + 1, s->user, u);
	m[u + 1] = '\0';
	memcpy(m + u + 2, s->secret, p);
	m[u + p + 2] = '\0';
	s->complete = 1;
	return msg(m, u + p + 2, out_r, outlen_r);
}

static enum pg_res cram_step(struct sasl *s, const unsigned char *chal, size_t clen,
			     char **out_r, size_t *outlen_r, char **err_r)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;
	char hx[2 * EVP_MAX_MD_SIZE + 1];
	if (clen == 0) {
		set_err(err_r, "CRAM-MD5: empty challenge");
		return PG_PROTO;
	}
	HMAC(EVP_md5(), s->secret, (int)strlen(s->secret), chal, clen, d, &dl);
	hex(d, dl, hx);
	s->complete = 1;
	char *m = xasprintf("%s %s", s->user, hx);
	return msg(m, strlen(m), out_r, outlen_r);
}

/* oauth_step - the token message, then an empty (XOAUTH2) or %x01
 * (OAUTHBEARER, RFC 7628 3.2.3) reply to an error challenge */
static enum pg_res oauth_step(struct sasl *s, char **out_r, size_t *outlen_r)
{
	char *m;
	if (s->step > 0) {
		s->complete = 1;
		m = xstrdup(s->mech == SASL_XOAUTH2 ? "" : "\x01");
		return msg(m, strlen(m), out_r, outlen_r);
	}
	s->complete = 1; /* the server may accept the token as it is */
	if (s->mech == SASL_XOAUTH2)
		m = xasprintf("user=%s\001auth=Bearer %s\001\001", s->user, s->secret);
	else
		m = xasprintf("n,a=%s,\001host=%s\001port=%d\001auth=Bearer %s\001\001", s->user,
			      s->host, s->port, s->secret);
	return msg(m, strlen(m), out_r, outlen_r);
}

/* ---- SCRAM (RFC 5802) ------------------------------------------------- */

static const EVP_MD *scram_md(const struct sasl *s)
{
	return s->mech == SASL_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

/* scram_name - saslname: "=" -> "=3D", "," -> "=2C" */
static char *scram_name(const char *u)
{
	struct buf b;
	buf_init(&b, 4096);
	for (; *u != '\0'; u++) {
		if (*u == '=')
			buf_append(&b, "=3D", 3);
		else if (*u == ',')
			buf_append(&b, "=2C", 3);
		else
			buf_append(&b, u, 1);
	}
	char *r = xstrdup(b.data != NULL ? b.data : "");
	buf_free(&b);
	return r;
}

static enum pg_res scram_first(struct sasl *s, char **out_r, size_t *outlen_r)
{
	if (s->nonce == NULL) {
		unsigned char rnd[18];
		if (RAND_bytes(rnd, sizeof rnd) != 1)
			abort(); /* no randomness: nothing safe to do */
		s->nonce = sasl_b64_encode(rnd, sizeof rnd);
	}
	char *name = scram_name(s->user);
	s->first_bare = xasprintf("n=%s,r=%s", name, s->nonce);
	free(name);
	char *m = xasprintf("n,,%s", s->first_bare);
	return msg(m, strlen(m), out_r, outlen_r);
}

/* scram_attr - value of attribute `k` ("r", "s", "i") in a SCRAM message */
static int scram_attr(const char *m, char k, const char **v_r, size_t *vlen_r)
{
	const char *p = m;
	while (*p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		if (len >= 2 && p[0] == k && p[1] == '=') {
			*v_r = p + 2;
			*vlen_r = len - 2;
			return 0;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return -1;
}

struct scram_in {
	const char *nonce;
	size_t nlen;
	unsigned char *salt;
	size_t slen;
	unsigned long iter;
};

static enum pg_res scram_parse_first(struct sasl *s, const char *m, struct scram_in *in,
				     char **err_r)
{
	const char *v, *sv, *iv;
	size_t vl, svl, ivl;
	if (strncmp(m, "r=", 2) != 0 || scram_attr(m, 'r', &v, &vl) < 0 ||
	    scram_attr(m, 's', &sv, &svl) < 0 || scram_attr(m, 'i', &iv, &ivl) < 0) {
		set_err(err_r, "%s: malformed server-first-message", sasl_mech_name(s->mech));
		return PG_PROTO;
	}
	size_t cn = strlen(s->nonce);
	if (vl <= cn || strncmp(v, s->nonce, cn) != 0) {
		set_err(err_r, "%s: server nonce does not extend ours", sasl_mech_name(s->mech));
		return PG_PROTO;
	}
	char ibuf[16];
	char *end;
	if (ivl == 0 || ivl >= sizeof ibuf || sasl_b64_decode(sv, svl, &in->salt, &in->slen) < 0) {
		set_err(err_r, "%s: bad salt or iteration count", sasl_mech_name(s->mech));
		return PG_PROTO;
	}
	memcpy(ibuf, iv, ivl);
	ibuf[ivl] = '\0';
	in->iter = strtoul(ibuf, &end, 10);
	if (*end != '\0' || ibuf[0] < '1' || ibuf[0] > '9' || in->iter > SASL_SCRAM_MAX_ITER) {
		set_err(err_r, "%s: iteration count %s out of range", sasl_mech_name(s->mech), ibuf);
		return PG_PROTO;
	}
	in->nonce = v;
	in->nlen = vl;
	return PG_OK;
}

/* scram_proof - client-final-message from the server-first-message */
static enum pg_res scram_final(struct sasl *s, const char *sfirst, char **out_r,
			       size_t *outlen_r, char **err_r)
{
	struct scram_in in = { 0 };
	enum pg_res r = scram_parse_first(s, sfirst, &in, err_r);
	if (r != PG_OK) {
		free(in.salt);
		return r;
	}
	const EVP_MD *md = scram_md(s);
	int hl = EVP_MD_get_size(md);
	unsigned char salted[EVP_MAX_MD_SIZE], ckey[EVP_MAX_MD_SIZE], skey[EVP_MAX_MD_SIZE];
	unsigned char stored[EVP_MAX_MD_SIZE], csig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
	unsigned int l;
	PKCS5_PBKDF2_HMAC(s->secret, (int)strlen(s->secret), in.salt, (int)in.slen, (int)in.iter,
			  md, hl, salted);
	free(in.salt);
	HMAC(md, salted, hl, (const unsigned char *)"Client Key", 10, ckey, &l);
	HMAC(md, salted, hl, (const unsigned char *)"Server Key", 10, skey, &l);
	explicit_bzero(salted, sizeof salted);
	EVP_Digest(ckey, (size_t)hl, stored, &l, md, NULL);
	char *without = xasprintf("c=biws,r=%.*s", (int)in.nlen, in.nonce);
	char *auth = xasprintf("%s,%s,%s", s->first_bare, sfirst, without);
	HMAC(md, stored, hl, (unsigned char *)auth, strlen(auth), csig, &l);
	HMAC(md, skey, hl, (unsigned char *)auth, strlen(auth), s->server_sig, &s->sig_len);
	for (int i = 0; i < hl; i++)
		proof[i] = ckey[i] ^ csig[i];
	explicit_bzero(ckey, sizeof ckey);
	explicit_bzero(skey, sizeof skey);
	char *p64 = sasl_b64_encode(proof, (size_t)hl);
	char *m = xasprintf("%s,p=%s", without, p64);
	free(p64);
	free(without);
	free(auth);
	return msg(m, strlen(m), out_r, outlen_r);
}

/* scram_verify - server-final-message: v=<signature> or e=<error> */
static enum pg_res scram_verify(struct sasl *s, const char *m, char **out_r,
				size_t *outlen_r, char **err_r)
{
	const char *v;
	size_t vl;
	unsigned char *sig = NULL;
	size_t sl = 0;
	if (strncmp(m, "e=", 2) == 0) {
		set_err(err_r, "%s: server error %.60s", sasl_mech_name(s->mech), m + 2);
		return PG_AUTH;
	}
	if (scram_attr(m, 'v', &v, &vl) < 0 || sasl_b64_decode(v, vl, &sig, &sl) < 0) {
		set_err(err_r, "%s: malformed server-final-message", sasl_mech_name(s->mech));
		return PG_PROTO;
	}
	int good = sl == s->sig_len && CRYPTO_memcmp(sig, s->server_sig, sl) == 0;
	free(sig);
	if (!good) {
		set_err(err_r, "%s: the server's signature is wrong (it does not know the "
			       "password: possible impostor)", sasl_mech_name(s->mech));
		return PG_AUTH;
	}
	s->complete = 1;
	return msg(xstrdup(""), 0, out_r, outlen_r);
}

static enum pg_res scram_step(struct sasl *s, const unsigned char *chal, size_t clen,
			      char **out_r, size_t *outlen_r, char **err_r)
{
	if (s->step == 0)
		return scram_first(s, out_r, outlen_r);
	if (memchr(chal, '\0', clen) != NULL) {
		set_err(err_r, "%s: NUL in challenge", sasl_mech_name(s->mech));
		return PG_PROTO;
	}
	char *m = xstrndup((const char *)chal, clen);
	enum pg_res r;
	if (s->step == 1)
		r = scram_final(s, m, out_r, outlen_r, err_r);
	else if (s->step == 2)
		r = scram_verify(s, m, out_r, outlen_r, err_r);
	else {
		set_err(err_r, "%s: unexpected extra challenge", sasl_mech_name(s->mech));
		r = PG_PROTO;
	}
	free(m);
	return r;
}

/* ---- dispatch --------------------------------------------------------- */

enum pg_res sasl_step(struct sasl *s, const unsigned char *chal, size_t clen, char **out_r,
		      size_t *outlen_r, char **err_r)
{
	enum pg_res r;
	if (chal == NULL) {
		chal = (const unsigned char *)"";
		clen = 0;
	}
	switch (s->mech) {
	case SASL_PLAIN:
		r = s->step == 0 ? plain_step(s, out_r, outlen_r) : PG_PROTO;
		break;
	case SASL_LOGIN:
		/* the prompts ("Username:", "Password:") are not checked: servers vary */
		if (s->step > 1)
			r = PG_PROTO;
		else {
			const char *v = s->step == 0 ? s->user : s->secret;
			s->complete = s->step == 1;
			r = msg(xstrdup(v), strlen(v), out_r, outlen_r);
		}
		break;
	case SASL_CRAM_MD5:
		r = s->step == 0 ? cram_step(s, chal, clen, out_r, outlen_r, err_r) : PG_PROTO;
		break;
	case SASL_SCRAM_SHA1:
	case SASL_SCRAM_SHA256:
		r = scram_step(s, chal, clen, out_r, outlen_r, err_r);
		break;
	default:
		r = s->step < 2 ? oauth_step(s, out_r, outlen_r) : PG_PROTO;
		break;
	}
	if (r == PG_PROTO && (err_r == NULL || *err_r == NULL))
		set_err(err_r, "%s: unexpected challenge", sasl_mech_name(s->mech));
	if (r == PG_OK)
		s->step++;
	return r;
}

/* ---- APOP (RFC 1939 section 7) ---------------------------------------- */

char *sasl_apop_timestamp(const char *g, size_t len)
{
	const char *lt = memchr(g, '<', len);
	if (lt == NULL)
		return NULL;
	const char *gt = memchr(lt, '>', len - (size_t)(lt - g));
	if (gt == NULL || gt - lt < 4)
		return NULL;
	int ats = 0;
	for (const char *p = lt + 1; p < gt; p++) {
		if (*p <= 0x20 || *p >= 0x7f || *p == '<')
			return NULL;
		if (*p == '@')
			ats++;
	}
	if (ats != 1 || lt[1] == '@' || gt[-1] == '@')
		return NULL;
	return xstrndup(lt, (size_t)(gt - lt) + 1);
}

void sasl_apop_digest(const char *timestamp, const char *secret, char out[33])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (c == NULL)
		abort();
	EVP_DigestInit_ex(c, EVP_md5(), NULL);
	EVP_DigestUpdate(c, timestamp, strlen(timestamp));
	EVP_DigestUpdate(c, secret, strlen(secret));
	EVP_DigestFinal_ex(c, d, &dl);
	EVP_MD_CTX_free(c);
	hex(d, 16, out);
}
