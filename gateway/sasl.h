/*
 * sasl.h - client side of the SASL mechanisms popgate speaks to POP3
 * servers (RFC 5034 framing is pop3.c's job), plus APOP.
 *
 * Contract:
 *  - A struct sasl is one authentication exchange.  sasl_step() turns the
 *    server's decoded challenge (or NULL for the initial response) into the
 *    next client message, raw (the caller base64-encodes it).  Messages are
 *    malloc'd; the caller frees them with sasl_wipe_free() because they may
 *    hold the secret.
 *  - Results: PG_OK; PG_PROTO for a challenge that breaks the mechanism's
 *    syntax (the caller cancels with "*"); PG_AUTH when the server's SCRAM
 *    signature is wrong or the server sent a SCRAM error (e=...).
 *  - Mechanisms: PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1
 *    and SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677),
 *    XOAUTH2 (Google/Microsoft), OAUTHBEARER (RFC 7628).  Secrets are
 *    used as given (no SASLprep: non-ASCII passwords must already be in
 *    their normalised UTF-8 form).
 *  - Nothing here logs; nothing here keeps the secret past sasl_free()
 *    (copies are wiped).
 */
#ifndef POPGATE_SASL_H
#define POPGATE_SASL_H

#include <stddef.h>

#include "util.h"

enum sasl_mech {
	SASL_PLAIN,
	SASL_LOGIN,
	SASL_CRAM_MD5,
	SASL_SCRAM_SHA1,
	SASL_SCRAM_SHA256,
	SASL_XOAUTH2,
	SASL_OAUTHBEARER,
};

#define SASL_SCRAM_MAX_ITER 1000000 /* a hostile server cannot make us spin */

struct sasl;

/* sasl_mech_name - the IANA name ("SCRAM-SHA-256") */
const char *sasl_mech_name(enum sasl_mech m);
struct sasl *sasl_new(enum sasl_mech m, const char *user, const char *secret,
		      const char *host, int port);
/* sasl_set_nonce - fixed SCRAM client nonce (known-answer tests only) */
void sasl_set_nonce(struct sasl *s, const char *nonce);
/* sasl_has_initial - does the mechanism start with a client message?
 * (XOAUTH2 and OAUTHBEARER do, but pop3.c sends them in the two-step form
 * Microsoft 365 requires, so they answer 0 here) */
int sasl_has_initial(const struct sasl *s);
enum pg_res sasl_step(struct sasl *s, const unsigned char *chal, size_t clen, char **out_r,
		      size_t *outlen_r, char **err_r);
/* sasl_complete - the exchange needs nothing more from the client side
 * (for SCRAM: the server's signature was verified) */
int sasl_complete(const struct sasl *s);
void sasl_free(struct sasl **s);
void sasl_wipe_free(char *p, size_t n);

/* base64 (RFC 4648, no line breaks); decode returns -1 on bad input */
char *sasl_b64_encode(const void *p, size_t n);
int sasl_b64_decode(const char *p, size_t n, unsigned char **out_r, size_t *outlen_r);

/* sasl_apop_timestamp - the <...@...> timestamp of an APOP greeting, checked
 * (RFC 1939 msg-id syntax: printable, no spaces or brackets inside, one
 * '@'); malloc'd, or NULL if the greeting has none or it is malformed */
char *sasl_apop_timestamp(const char *greeting, size_t len);
/* sasl_apop_digest - 32 lower-case hex digits of MD5(timestamp secret) */
void sasl_apop_digest(const char *timestamp, const char *secret, char out[33]);

#endif
