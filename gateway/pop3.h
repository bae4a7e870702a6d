/*
 * pop3.h - the POP3 client protocol state machine (RFC 1939, 2449, 2595).
 *
 * Contract:
 *  - Knows sockets (via net.h) and the line reader; knows nothing of the
 *    spool or SQLite.  One struct pop3 is one session; pop3_close() frees it
 *    (sending nothing: call pop3_quit() first for a clean end).
 *  - All state changes go through one transition function that logs
 *    "old -> new" at debug level.
 *  - Every reply is read through the bounded line reader under the reply
 *    timeout; a reply line longer than POP3_REPLY_MAX, a multi-line list
 *    longer than POP3_LIST_MAX lines, or garbage is PG_PROTO.
 *  - -ERR replies: PG_AUTH for a refused login (or [AUTH] code), PG_TEMP for
 *    [IN-USE], [LOGIN-DELAY], [SYS/TEMP], PG_PERM otherwise.  The server's
 *    text (sanitised) is in *err_r.
 *    The last -ERR's response code and text are copied to params->status
 *    (if given), so a caller can act on them even after a failed open.
 *  - Secrets: the password is sent but never logged; protocol tracing at
 *    debug level shows "PASS <hidden>", "AUTH PLAIN <hidden>", and every
 *    SASL continuation line the client sends as "<hidden>".
 *  - Plaintext: plaintext-equivalent logins (USER/PASS, PLAIN, LOGIN, and
 *    APOP outside TLS) on a connection without TLS are refused with
 *    PG_CONFIG before anything is sent unless allow_plaintext is set.
 *  - Pipelining (RFC 2449): commands are queued into one output buffer and
 *    written with one write per batch (pop3_flush(), or implicitly by the
 *    first read); replies are read in order.  At most POP3_PIPELINE_MAX
 *    commands are outstanding, and only 1 when pop3_pipelining() is 0
 *    (no PIPELINING capability, or the account turned it off).
 *  - Timeouts: connect, TLS handshake, each reply, and the whole session
 *    (session_timeout_ms, checked before every read) are separate.
 *  - Custom I/O (fuzzers, tests): with params->io_read set, the session runs
 *    over those callbacks instead of a socket (TLS is then impossible).
 */
#ifndef POPGATE_POP3_H
#define POPGATE_POP3_H

#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include "conf.h"
#include "linereader.h"
#include "msgfilter.h"
#include "util.h"

#define POP3_REPLY_MAX 1024   /* RFC 2449: 512 octets; leave room for odd servers */
#define POP3_LIST_MAX 1000000 /* lines in a UIDL/LIST reply */
#define POP3_CAPA_MAX 1000    /* lines in a CAPA reply */
#define POP3_PIPELINE_MAX 64  /* commands outstanding at once */
#define POP3_DRAIN_MAX (64ULL * 1024 * 1024) /* octets read past a RETR limit */
#define POP3_SASL_ROUNDS 8    /* continuation rounds in one AUTH */

/* What the server said in its last -ERR (RFC 2449 response code). */
struct pop3_status {
	char code[32];  /* "IN-USE", "SYS/TEMP", "AUTH", ... or "" */
	char text[256]; /* the reply text, sanitised */
};

typedef ssize_t (*pop3_write_fn)(void *ctx, const void *buf, size_t len, char **err_r);

struct pop3_params {
	const char *host;
	int port;
	enum tls_mode tls;
	const char *ca_file;     /* NULL: system trust store */
	const char *tls_fingerprint; /* NULL, or "sha256:<hex>" leaf pin */
	int allow_plaintext;     /* permit plaintext-equivalent logins without TLS */
	int pipelining;          /* use PIPELINING when the server offers it */
	int connect_timeout_ms;
	int timeout_ms;          /* each reply */
	int tls_timeout_ms;      /* the TLS handshake; 0: timeout_ms */
	int session_timeout_ms;  /* the whole session; 0: none */
	const char *account;     /* for log lines only */
	struct pop3_status *status; /* optional: last -ERR code and text */
	lr_read_fn io_read;      /* optional custom transport (no TLS) */
	pop3_write_fn io_write;
	void *io_ctx;
};

struct pop3_capa {
	unsigned int have_capa : 1; /* server answered CAPA */
	unsigned int top : 1;
	unsigned int uidl : 1;
	unsigned int user : 1;
	unsigned int pipelining : 1;
	unsigned int resp_codes : 1;
	unsigned int stls : 1;
	int login_delay;  /* seconds, -1 if not announced */
	int expire;       /* days, -1 if not announced, -2 for NEVER */
	char *sasl;       /* space-separated mechanisms, or NULL */
	char *implementation;
};

struct pop3_msginfo {
	unsigned int num;
	uint64_t size;  /* from LIST */
	char *uidl;     /* from UIDL; NULL if the server has no UIDL */
};

struct pop3;

/* pop3_open - connect, TLS as configured, greeting, CAPA (again after STLS) */
enum pg_res pop3_open(const struct pop3_params *p, struct pop3 **s_r, char **err_r);
const struct pop3_capa *pop3_capa(const struct pop3 *s);
/* pop3_login - USER/PASS */
enum pg_res pop3_login(struct pop3 *s, const char *user, const char *pass, char **err_r);
/* pop3_auth - log in with `mech` (AUTH_AUTO: the strongest mechanism the
 * server offers that is allowed on this connection: SCRAM-SHA-256 >
 * SCRAM-SHA-1 > CRAM-MD5 > APOP > PLAIN > LOGIN > USER; if the server
 * refuses it (PG_AUTH, session still in step), the next acceptable one is
 * tried, once, logged as status=auth-fallback; a final refusal's error
 * ends in "(methods_tried=APOP,USER)").  *used_r (may be NULL) gets the
 * name of the mechanism that logged in. */
enum pg_res pop3_auth(struct pop3 *s, enum conf_auth mech, const char *user,
		      const char *secret, const char **used_r, char **err_r);
/* pop3_stat - message count and total octets */
enum pg_res pop3_stat(struct pop3 *s, unsigned int *count_r, uint64_t *octets_r, char **err_r);
/* pop3_scan - LIST and UIDL merged into one array, ordered by message
 * number; caller frees with pop3_msginfo_free().  UIDLs are checked: 1-70
 * printable characters (0x21-0x7E) and unique, else PG_PROTO. */
enum pg_res pop3_scan(struct pop3 *s, struct pop3_msginfo **list_r, size_t *n_r, char **err_r);
void pop3_msginfo_free(struct pop3_msginfo **list, size_t n);
/* pop3_retr - RETR num, streaming the message through the filter (which
 * writes wherever its sink goes).  PG_OK only after the terminating ".". */
enum pg_res pop3_retr(struct pop3 *s, unsigned int num, struct msgfilter *mf, char **err_r);
enum pg_res pop3_dele(struct pop3 *s, unsigned int num, char **err_r);

/* ---- pipelined use ---- */
enum pop3_cmd { P3C_NONE = 0, P3C_RETR, P3C_DELE };
/* pop3_pipelining - may more than one command be outstanding? */
int pop3_pipelining(const struct pop3 *s);
/* pop3_window - how many commands may be outstanding (1 without pipelining) */
size_t pop3_window(const struct pop3 *s);
/* pop3_outstanding - commands queued or sent whose reply is not yet read */
size_t pop3_outstanding(const struct pop3 *s);
/* pop3_queue - append RETR/DELE num to the output batch (PG_PERM when the
 * window is full) */
enum pg_res pop3_queue(struct pop3 *s, enum pop3_cmd cmd, unsigned int num, char **err_r);
/* pop3_flush - write the whole batch with one write */
enum pg_res pop3_flush(struct pop3 *s, char **err_r);
/* pop3_next - the oldest command without a reply (P3C_NONE if none) */
enum pop3_cmd pop3_next(const struct pop3 *s, unsigned int *num_r);
/* pop3_read_retr - the reply to the oldest command, which must be a RETR:
 * streamed through mf (lines of any length pass through in pieces).  limit
 * (0: none) is the most octets of body taken: a longer body is read to its
 * terminator and discarded (at most POP3_DRAIN_MAX more octets, else the
 * session fails), so the session stays in step.  *refused_r (when given)
 * says why a message was not taken while the session stays usable:
 * POP3_RETR_REFUSED for a -ERR reply, POP3_RETR_TOO_LARGE for a body over
 * the limit (both PG_PERM, the reason in *err_r); 0 otherwise. */
enum { POP3_RETR_REFUSED = 1, POP3_RETR_TOO_LARGE = 2 };
enum pg_res pop3_read_retr(struct pop3 *s, struct msgfilter *mf, uint64_t limit,
			   int *refused_r, char **err_r);
/* pop3_read_dele - the reply to the oldest command, which must be a DELE */
enum pg_res pop3_read_dele(struct pop3 *s, char **err_r);
/* pop3_failed - the session is out of step; only pop3_close() is left */
int pop3_failed(const struct pop3 *s);
/* pop3_quit - QUIT; the server commits the DELEs only when this returns PG_OK */
enum pg_res pop3_quit(struct pop3 *s, char **err_r);
void pop3_close(struct pop3 **s);
/* pop3_tls_info - cipher description, or NULL on a plain connection */
const char *pop3_tls_info(const struct pop3 *s);

#endif
