/*
 * net.h - a TCP connection with optional TLS, for the POP3 client.
 *
 * Contract:
 *  - Every blocking step (connect, TLS handshake, each read, each write)
 *    runs under the connection's current timeout; an expired timeout is
 *    PG_TEMP with a message naming the step.
 *  - TLS: OpenSSL 3, TLS 1.2 minimum, SNI set to the host name, the peer
 *    certificate verified against ca_file (or the system store) and the host
 *    name checked; a failure is PG_PERM with OpenSSL's verify reason.
 *  - net_read() is the raw read callback for the line reader (lr_read_fn);
 *    no other code reads the socket.
 *  - net_write() writes everything or fails; callers batch their output.
 *  - TCP_NODELAY is set: callers flush whole batches with one write.
 *  - Pinning: with a fingerprint ("sha256:<hex>", colons and case
 *    ignored), the leaf certificate's SHA-256 (over its DER form) must
 *    match; when it does, a chain or host-name verification failure is
 *    accepted (the pin is a stronger statement than the CA's), and when it
 *    does not, the handshake fails with PG_PERM whatever the CA says.
 */
#ifndef POPGATE_NET_H
#define POPGATE_NET_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/types.h>

#include "util.h"

struct net;

struct net_tls_params {
	const char *servername; /* for SNI and host-name verification */
	const char *ca_file;    /* NULL: system trust store */
	int verify;             /* 1 (default); 0 only for explicit test setups */
	const char *fingerprint; /* optional "sha256:<64 hex>" leaf pin */
	int timeout_ms;         /* handshake timeout; 0: the connection's timeout */
};

enum pg_res net_connect(const char *host, int port, int timeout_ms, struct net **n_r,
			char **err_r);
void net_set_timeout(struct net *n, int timeout_ms);
enum pg_res net_start_tls(struct net *n, const struct net_tls_params *p, char **err_r);
/* net_tls_preload - before forking connection children (the daemon): make
 * OpenSSL's one-time set-up (algorithm tables, the client method's
 * cipher and group lists) and load the trust store of ca_file (NULL: the
 * system store) once, so that every child inherits them instead of
 * repeating them per connection; net_start_tls then uses the loaded
 * store.  A store that cannot be loaded is not kept: the connection loads
 * it itself and reports the error.  net_tls_preload_clear drops the
 * stores (a reload: CA files are read again). */
void net_tls_preload(const char *ca_file);
void net_tls_preload_clear(void);
int net_is_tls(const struct net *n);
/* net_tls_info - "TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL */
const char *net_tls_info(const struct net *n);
/* net_read - lr_read_fn over the connection (TLS or not) */
ssize_t net_read(void *n, void *buf, size_t len, char **err_r);
enum pg_res net_write(struct net *n, const void *p, size_t len, char **err_r);
void net_close(struct net **n);

/* Certificate pins, shared with the relay's STARTTLS (one parser, one
 * digest).  net_pin_parse: "sha256:<64 hex>", colons and case ignored, into
 * 32 bytes; -1 if malformed.  net_cert_sha256: the SHA-256 of the
 * certificate's DER form as 64 lower-case hex digits; -1 if it cannot be
 * computed ("none" in hex).  net_pin_check: 1 if cert matches pin, else 0
 * with the certificate's own digest in seen. */
int net_pin_parse(const char *fp, unsigned char pin[32]);
int net_cert_sha256(X509 *cert, unsigned char md[32], char hex[65]);
int net_pin_check(X509 *cert, const unsigned char pin[32], char seen[65]);

#endif
