/*
 * testaccount.c - `popgate test-account NAME`: connect, TLS, authenticate,
 * show the server's capabilities and mailbox size, fetch nothing, QUIT;
 * when a step fails, say which and what it most likely means, in words an
 * admin can act on.  Nothing is written to the spool.
 *
 * Exit status: 0 the account works; otherwise the sysexits code of the
 * failed step (69 unavailable, 75 temporary/network, 76 protocol,
 * 77 authentication, 78 configuration).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "cli.h"
#include "confcheck.h"
#include "log.h"
#include "net.h"
#include "pop3.h"
#include "tokenstore.h"

/* how long the port probe waits for a greeting or a TLS answer */
#define PROBE_MS 5000

/* explain - plain words for the error text of a failed step */
static const char *explain(enum pg_res res, const char *step, const char *err)
{
	static const struct {
		const char *needle;
		const char *words;
	} hints[] = {
		{ "cannot resolve", "the server's name does not resolve (DNS): check 'server'" },
		{ "Connection refused", "nothing listens on that port: check 'server', 'port' and "
					"'tls' (995 is implicit TLS, 110 plain/STLS)" },
		{ "timed out", "no answer in time: a firewall dropping packets, a wrong port, or a "
			       "server that is down or overloaded" },
		{ "No route to host", "the network cannot reach the server" },
		{ "Network is unreachable", "the network cannot reach the server" },
		{ "tls_fingerprint", "the certificate is not the pinned one (tls_fingerprint)" },
		{ "certificate has expired", "the server's certificate has expired" },
		{ "self-signed", "the certificate is self-signed: give its CA in 'ca_file' or pin it "
				 "with 'tls_fingerprint'" },
		{ "unable to get local issuer", "the certificate's issuer is not trusted: set "
						"'ca_file' to the CA that signed it" },
		{ "Hostname mismatch", "the certificate is for another host name: use the name in "
				       "the certificate as 'server'" },
		{ "certificate verify failed", "the certificate could not be verified: see the "
					       "reason in brackets" },
		{ "cannot load CA", "the 'ca_file' could not be read" },
		{ "does not offer XOAUTH2", "the server does not offer XOAUTH2: use the 'auth' it "
					    "lists, or a server that supports OAuth2" },
		{ "does not offer", "the server does not offer that 'auth' mechanism: use one it "
				    "lists" },
		{ "Permission denied", "the run-time user cannot read it: fix owner/mode (chown "
				       "the user popgate runs as, chmod 600)" },
		{ "password_command", "the password_command does not work: see above" },
		{ "STLS", "the server does not offer STLS: use tls = \"implicit\" (port 995) or "
			  "allow a plain connection explicitly" },
		{ "plaintext", "the login would send the password unencrypted: enable TLS, or set "
			       "allow_plaintext = true if you accept that" },
	};
	for (size_t i = 0; err != NULL && i < sizeof hints / sizeof hints[0]; i++)
		if (strstr(err, hints[i].needle) != NULL)
			return hints[i].words;
	switch (res) {
	case PG_AUTH:
		return "the server refused the user name or password (or token): check 'user' and "
		       "the secret; for OAuth2 check that the token is fresh and has the POP scope";
	case PG_CONFIG:
		return "the configuration does not allow this step";
	case PG_PROTO:
		return "the server broke the POP3 protocol";
	case PG_TEMP:
		return "a temporary failure (network or server busy): try again later";
	default:
		return strcmp(step, "login") == 0 ? "the server refused the login"
						  : "the server refused the request";
	}
}

static void show_capa(const struct pop3 *s)
{
	const struct pop3_capa *cp = pop3_capa(s);
	const char *tls = pop3_tls_info(s);
	printf("  tls:            %s\n", tls ? tls : "none (plain connection)");
	if (!cp->have_capa) {
		printf("  capabilities:   (the server does not answer CAPA)\n");
		return;
	}
	printf("  capabilities:  %s%s%s%s%s%s\n", cp->user ? " USER" : "", cp->uidl ? " UIDL" : "",
	       cp->top ? " TOP" : "", cp->pipelining ? " PIPELINING" : "",
	       cp->resp_codes ? " RESP-CODES" : "", cp->stls ? " STLS" : "");
	printf("  sasl:           %s\n", cp->sasl ? cp->sasl : "(none)");
	if (cp->implementation != NULL)
		printf("  implementation: %s\n", cp->implementation);
	if (cp->login_delay >= 0)
		printf("  login-delay:    %d s between logins\n", cp->login_delay);
	if (cp->expire == -2)
		printf("  expire:         never\n");
	else if (cp->expire >= 0)
		printf("  expire:         %d days\n", cp->expire);
}

/* field - the text after KEY up to END (or the end) in a certificate
 * description from net.c, into out */
static void field(const char *d, const char *key, const char *end, char *out, size_t outlen)
{
	const char *p = strstr(d, key);
	out[0] = '\0';
	if (p == NULL)
		return;
	p += strlen(key);
	const char *q = end != NULL ? strstr(p, end) : NULL;
	size_t k = q != NULL ? (size_t)(q - p) : strlen(p);
	snprintf(out, outlen, "%.*s", (int)k, p);
}

/* show_cert - the server's certificate from a TLS error, as mpop
 * --serverinfo shows it, with the line to paste for a pin */
static void show_cert(const char *d)
{
	char subj[300], iss[300], from[80], to[80], fp[80];
	field(d, "subject \"", "\", issuer", subj, sizeof subj);
	field(d, "issuer \"", "\", valid", iss, sizeof iss);
	field(d, "valid from ", " to ", from, sizeof from);
	field(d, " to ", ", fingerprint", to, sizeof to);
	field(d, "fingerprint ", NULL, fp, sizeof fp);
	printf("  the server's certificate:\n    subject:     %s\n    issuer:      %s\n"
	       "    valid:       from %s to %s\n    fingerprint: %s\n"
	       "  if you trust it, pin it in the account block:\n    tls_fingerprint = \"%s\"\n",
	       subj, iss, from, to, fp, fp);
}

static int fail(const char *name, const char *step, enum pg_res res, const char *err)
{
	static const char certkey[] = "; the server's certificate: ";
	const char *cert = err != NULL ? strstr(err, certkey) : NULL;
	size_t elen = err == NULL ? 0 : cert != NULL ? (size_t)(cert - err) : strlen(err);
	char *e = sanitize_for_log(err ? err : "", elen, 600);
	printf("FAILED at %s: %s\n  what it means: %s\n", step, e, explain(res, step, err));
	if (cert != NULL)
		show_cert(cert + strlen(certkey));
	fflush(stdout);
	LOG_DEBUG("account=%s test=failed step=%s class=%s", name, step, pg_res_name(res));
	free(e);
	return pg_exit_code(res);
}

/* hint - a mistake test-account recognises: printed, exit 78 */
static int hint(const char *name, const char *step, const char *what, const char *words)
{
	printf("FAILED at %s: %s\n  what it means: %s\n", step, what, words);
	fflush(stdout);
	LOG_DEBUG("account=%s test=failed step=%s class=config", name, step);
	return EX_CONFIG;
}

/* probe_plain - for tls = starttls or none: does the port greet in plain
 * text?  Returns 1 when it speaks TLS instead (a TLS record in answer, or
 * no greeting within PROBE_MS and a TLS handshake succeeds), else 0 */
static int probe_expects_tls(const struct conf_account *a)
{
	struct net *n = NULL;
	char *err = NULL;
	unsigned char b[8];
	int tls = 0;
	if (net_connect(a->server, a->port, a->connect_timeout * 1000, &n, &err) != PG_OK) {
		free(err);
		return 0; /* the real attempt reports it */
	}
	net_set_timeout(n, a->timeout * 1000 < PROBE_MS ? a->timeout * 1000 : PROBE_MS);
	ssize_t r = net_read(n, b, sizeof b, &err);
	free(err);
	err = NULL;
	if (r > 0) {
		tls = b[0] == 0x15 || b[0] == 0x16; /* a TLS alert or handshake record */
	} else if (r == -2) {
		/* silent: a TLS server waits for our ClientHello */
		struct net_tls_params tp = { .servername = a->server, .verify = 0,
					     .timeout_ms = PROBE_MS };
		tls = net_start_tls(n, &tp, &err) == PG_OK;
		free(err);
	}
	net_close(&n);
	return tls;
}

/* probe_greets_plain - for tls = implicit that failed with "wrong version
 * number": does the port send a plain "+OK" greeting? */
static int probe_greets_plain(const struct conf_account *a)
{
	struct net *n = NULL;
	char *err = NULL;
	char b[4] = "";
	if (net_connect(a->server, a->port, a->connect_timeout * 1000, &n, &err) != PG_OK) {
		free(err);
		return 0;
	}
	net_set_timeout(n, PROBE_MS);
	ssize_t r = net_read(n, b, 3, &err);
	free(err);
	net_close(&n);
	return r == 3 && memcmp(b, "+OK", 3) == 0;
}

static int test_one(const struct conf *c, const struct conf_account *a)
{
	struct pop3 *s = NULL;
	char *secret = NULL, *err = NULL;
	const char *used = NULL;
	unsigned int count = 0;
	uint64_t octets = 0;
	int code;
	struct pop3_params pp = {
		.host = a->server, .port = a->port, .tls = a->tls, .ca_file = a->ca_file,
		.tls_fingerprint = a->tls_fingerprint, .allow_plaintext = a->allow_plaintext,
		.pipelining = a->pipelining, .connect_timeout_ms = a->connect_timeout * 1000,
		.timeout_ms = a->timeout * 1000, .tls_timeout_ms = a->tls_timeout * 1000,
		.session_timeout_ms = a->session_timeout * 1000, .account = a->name,
	};
	printf("account %s: %s:%d (tls %s)\n", a->name, a->server, a->port,
	       a->tls == TLS_IMPLICIT ? "implicit" : a->tls == TLS_STARTTLS ? "starttls" : "none");
	/* as the daemon will run: files readable, programs executable */
	char *cerrs = NULL, *cwarns = NULL;
	int nerr = confcheck_runtime(c, a, &cerrs, &cwarns);
	free(cwarns);
	if (nerr > 0) {
		printf("%s", cerrs);
		code = hint(a->name, "the configuration check", "see above",
			    "the run-time user cannot read it: fix owner/mode (chown the user "
			    "popgate runs as, chmod 600 for a password file; chmod 755 for a "
			    "password_command), or fix the option named above");
		free(cerrs);
		goto out;
	}
	free(cerrs);
	int fresh = 0, reauth = 0;
	enum pg_res res = a->oauth2 != NULL ?
		tokenstore_login_token(c, a, NULL, &secret, &fresh, &reauth, &err) :
		conf_read_secret(a, &secret, &err);
	if (res != PG_OK) {
		code = fail(a->name, a->oauth2 ? "getting the OAuth2 access token" :
			    "reading the secret", res, err);
		goto out;
	}
	if (a->tls != TLS_IMPLICIT && probe_expects_tls(a)) {
		code = hint(a->name, "connect", "the server answered with TLS, not a POP3 greeting",
			    "this port expects implicit TLS: use tls = \"implicit\" (port 995), "
			    "or port 110 for tls = \"starttls\"");
		goto out;
	}
	res = pop3_open(&pp, &s, &err);
	if (res != PG_OK && a->tls == TLS_IMPLICIT && err != NULL &&
	    strstr(err, "wrong version number") != NULL && probe_greets_plain(a)) {
		code = hint(a->name, "connect/TLS", "the server sent a plain \"+OK\" greeting where a "
			    "TLS handshake was expected", "this port speaks plain POP3: use tls = "
			    "\"starttls\" or port 995");
		goto out;
	}
	if (res != PG_OK) {
		code = fail(a->name, "connect/TLS", res, err);
		goto out;
	}
	printf("  connected:      yes\n");
	show_capa(s);
	res = pop3_auth(s, a->auth, a->user, secret, &used, &err);
	explicit_bzero(secret, strlen(secret));
	if (res != PG_OK) {
		code = fail(a->name, "login", res, err);
		goto out;
	}
	printf("  login:          ok (user %s, %s)\n", a->user, used ? used : "?");
	res = pop3_stat(s, &count, &octets, &err);
	if (res != PG_OK) {
		code = fail(a->name, "STAT", res, err);
		goto out;
	}
	printf("  mailbox:        %u message%s, %llu octets (nothing fetched)\n", count,
	       count == 1 ? "" : "s", (unsigned long long)octets);
	res = pop3_quit(s, &err);
	code = res == PG_OK ? EX_OK : fail(a->name, "QUIT", res, err);
	if (code == EX_OK)
		printf("OK: account %s works\n", a->name);
out:
	pop3_close(&s);
	if (secret != NULL)
		explicit_bzero(secret, strlen(secret));
	free(secret);
	free(err);
	return code;
}

int cmd_test_account(const struct cli_opts *o, int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "popgate test-account: usage: popgate test-account NAME\n");
		return EX_USAGE;
	}
	struct conf *c = load(o, 1);
	if (c == NULL)
		return EX_CONFIG;
	int code;
	const struct conf_account *a = conf_find_account(c, argv[1]);
	if (a == NULL) {
		fprintf(stderr, "popgate: no account '%s' in %s\n", argv[1], c->path);
		code = EX_USAGE;
	} else {
		fflush(stdout);
		code = test_one(c, a);
	}
	conf_free(&c);
	log_close();
	return code;
}
