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
 *  - Secrets: the password is sent but never logged; protocol tracing at
 *    debug level shows "PASS <hidden>".
 *  - Plaintext: USER/PASS on a connection without TLS is refused with
 *    PG_CONFIG before USER is sent unless allow_plaintext is set.
 */
#ifndef POPGATE_POP3_H
#define POPGATE_POP3_H

#include <stddef.h>
#include <stdint.h>

#include "msgfilter.h"
#include "util.h"

#define POP3_REPLY_MAX 1024   /* RFC 2449: 512 octets; leave room for odd servers */
#define POP3_LIST_MAX 1000000 /* lines in a UIDL/LIST reply */
#define POP3_CAPA_MAX 1000    /* lines in a CAPA reply */

struct pop3_params {
	const char *host;
	int port;
	enum tls_mode tls;
	const char *ca_file;     /* NULL: system trust store */
	int allow_plaintext;     /* permit USER/PASS without TLS */
	int connect_timeout_ms;
	int timeout_ms;          /* each reply, the TLS handshake */
	const char *account;     /* for log lines only */
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
/* pop3_quit - QUIT; the server commits the DELEs only when this returns PG_OK */
enum pg_res pop3_quit(struct pop3 *s, char **err_r);
void pop3_close(struct pop3 **s);
/* pop3_tls_info - cipher description, or NULL on a plain connection */
const char *pop3_tls_info(const struct pop3 *s);

#endif
