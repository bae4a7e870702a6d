/*
 * net.c - TCP connection with optional TLS for the POP3 client (see net.h).
 *
 * The socket is non-blocking from connect() to close: every wait is a
 * poll() with a deadline, so no step (connect, handshake, read, write) can
 * hang on a silent peer.  TLS gets a fresh SSL_CTX per connection, so no
 * settings or session state leak between accounts.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net.h"

struct net {
	int fd;
	int timeout_ms;
	char *host;
	int port;
	SSL_CTX *ctx;
	SSL *ssl;
	char tls_info[128];
	unsigned char pin[32]; /* SHA-256 of the pinned leaf certificate */
	int pinned;
	X509 *leaf; /* the server's certificate as seen during verification */
};

/* wait_fd - poll until the fd is ready or the deadline passes.
 * Returns 1 ready, 0 timed out, -1 error (errno set). */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd pfd = { .fd = fd, .events = events };
		int r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 1; /* POLLERR/POLLHUP: the next I/O call reports it */
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/* connect_one - non-blocking connect to one address under the timeout.
 * Returns the fd, or -1 with *reason set to a static string. */
static int connect_one(const struct addrinfo *ai, int timeout_ms, const char **reason)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	if (fd < 0) {
		*reason = strerror(errno);
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS && errno != EINTR) {
		*reason = strerror(errno);
		close(fd);
		return -1;
	}
	int w = wait_fd(fd, POLLOUT, now_ms() + timeout_ms);
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (w == 0) {
		*reason = "timed out";
	} else if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
		*reason = strerror(errno);
	} else if (soerr != 0) {
		*reason = strerror(soerr);
	} else {
		return fd;
	}
	close(fd);
	return -1;
}

enum pg_res net_connect(const char *host, int port, int timeout_ms, struct net **n_r,
			char **err_r)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	char portstr[16];
	snprintf(portstr, sizeof portstr, "%d", port);
	int gai = getaddrinfo(host, portstr, &hints, &res);
	if (gai != 0) {
		set_err(err_r, "connect to %s:%d: cannot resolve host: %s", host, port,
			gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		return PG_TEMP;
	}
	const char *reason = "no usable address";
	int fd = -1;
	for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		fd = connect_one(ai, timeout_ms, &reason);
	if (fd < 0) {
		set_err(err_r, "connect to %s:%d: %s", host, port, reason);
		freeaddrinfo(res);
		return PG_TEMP;
	}
	freeaddrinfo(res);
	int one = 1;
	/* we always write whole batches; Nagle would only add latency */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct net *n = xcalloc(1, sizeof *n);
	n->fd = fd;
	n->timeout_ms = timeout_ms;
	n->host = xstrdup(host);
	n->port = port;
	*n_r = n;
	return PG_OK;
}

void net_set_timeout(struct net *n, int timeout_ms)
{
	n->timeout_ms = timeout_ms;
}

int net_is_tls(const struct net *n)
{
	return n->ssl != NULL;
}

const char *net_tls_info(const struct net *n)
{
	return n->ssl != NULL && n->tls_info[0] != '\0' ? n->tls_info : NULL;
}

static int is_ip_literal(const char *s)
{
	unsigned char a[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* ssl_errstr - the first queued OpenSSL error, or a socket-level reason */
static void ssl_errstr(int sslerr, char *out, size_t outlen)
{
	unsigned long e = ERR_get_error();
	if (e != 0)
		ERR_error_string_n(e, out, outlen);
	else if (sslerr == SSL_ERROR_SYSCALL && errno != 0)
		snprintf(out, outlen, "%s", strerror(errno));
	else if (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN)
		snprintf(out, outlen, "connection closed by server");
	else
		snprintf(out, outlen, "SSL error %d", sslerr);
	ERR_clear_error();
}

/* verify_note - keep the leaf certificate (a failed handshake does not
 * keep it) so a refusal can describe it; pinned: let the handshake finish,
 * check_pin() decides */
static int verify_note(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct net *n = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
	X509 *leaf = X509_STORE_CTX_get0_cert(x);
	if (n != NULL && n->leaf == NULL && leaf != NULL && X509_up_ref(leaf) == 1)
		n->leaf = leaf;
	return n != NULL && n->pinned ? 1 : ok;
}

/* bio_text - a memory BIO's contents as a C string */
static void bio_text(BIO *b, char *out, size_t outlen)
{
	int k = BIO_read(b, out, (int)outlen - 1);
	out[k > 0 ? k : 0] = '\0';
}

/* cert_describe - "; the server's certificate: subject ..., issuer ...,
 * valid from ... to ..., fingerprint sha256:..." for an error message, so
 * an admin can judge it and paste the pin (as mpop --serverinfo shows) */
static void cert_describe(X509 *c, char *out, size_t outlen)
{
	char subj[256], iss[256], nb[64], na[64], hx[65];
	unsigned char md[32];
	BIO *b = BIO_new(BIO_s_mem());
	out[0] = '\0';
	if (c == NULL || b == NULL) {
		BIO_free(b);
		return;
	}
	X509_NAME_print_ex(b, X509_get_subject_name(c), 0, XN_FLAG_RFC2253);
	bio_text(b, subj, sizeof subj);
	X509_NAME_print_ex(b, X509_get_issuer_name(c), 0, XN_FLAG_RFC2253);
	bio_text(b, iss, sizeof iss);
	ASN1_TIME_print(b, X509_get0_notBefore(c));
	bio_text(b, nb, sizeof nb);
	ASN1_TIME_print(b, X509_get0_notAfter(c));
	bio_text(b, na, sizeof na);
	BIO_free(b);
	net_cert_sha256(c, md, hx);
	snprintf(out, outlen, "; the server's certificate: subject \"%s\", issuer \"%s\", "
		 "valid from %s to %s, fingerprint sha256:%s", subj, iss, nb, na, hx);
}

/* net_pin_parse - "sha256:" then 64 hex digits, colons and case ignored */
int net_pin_parse(const char *fp, unsigned char out[32])
{
	size_t k = 0;
	if (strncasecmp(fp, "sha256:", 7) != 0)
		return -1;
	for (const char *p = fp + 7; *p != '\0'; p++) {
		int v;
		if (*p == ':')
			continue;
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f')
			v = (*p | 0x20) - 'a' + 10;
		else
			return -1;
		if (k >= 64)
			return -1;
		out[k / 2] = (unsigned char)(k % 2 ? out[k / 2] | v : v << 4);
		k++;
	}
	return k == 64 ? 0 : -1;
}

int net_cert_sha256(X509 *cert, unsigned char md[32], char hex[65])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	snprintf(hex, 65, "none");
	if (cert == NULL || X509_digest(cert, EVP_sha256(), d, &len) != 1 || len != 32)
		return -1;
	memcpy(md, d, 32);
	for (unsigned int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	return 0;
}

int net_pin_check(X509 *cert, const unsigned char pin[32], char seen[65])
{
	unsigned char md[32];
	return net_cert_sha256(cert, md, seen) == 0 && CRYPTO_memcmp(md, pin, 32) == 0;
}

/* check_pin - the leaf certificate's SHA-256 must equal the pin */
static enum pg_res check_pin(struct net *n, char **err_r)
{
	char hx[65];
	X509 *cert = SSL_get1_peer_certificate(n->ssl);
	int ok = net_pin_check(cert, n->pin, hx);
	X509_free(cert);
	if (ok)
		return PG_OK;
	char desc[1024];
	cert_describe(n->leaf, desc, sizeof desc);
	set_err(err_r, "TLS handshake with %s:%d: certificate does not match tls_fingerprint "
		"(server's is sha256:%s)%s", n->host, n->port, hx, desc);
	return PG_PERM;
}

/* Trust stores loaded by net_tls_preload, by ca_file (NULL path: the
 * system store); shared read-only by the SSL_CTXs of forked children. */
struct ca_store {
	char *path;
	X509_STORE *store;
	/* a verifying client SSL_CTX on this store, built at the first
	 * connection of a process that makes many (a poll worker) and kept:
	 * SSL_CTX_new costs about 0.2 ms; everything per connection (host
	 * name, pin, the leaf kept by verify_note) is set on the SSL */
	SSL_CTX *ctx;
};
static struct ca_store *ca_stores;
static size_t nca_stores;

static struct ca_store *ca_store_find(const char *path)
{
	for (size_t i = 0; i < nca_stores; i++) {
		const char *p = ca_stores[i].path;
		if ((p == NULL && path == NULL) || (p != NULL && path != NULL && strcmp(p, path) == 0))
			return &ca_stores[i];
	}
	return NULL;
}

void net_tls_preload(const char *ca_file)
{
	static int warmed;
	if (!warmed) {
		/* the first SSL_CTX of a process costs milliseconds (provider
		 * algorithm fetches, cipher and group tables); the caches stay */
		SSL_CTX_free(SSL_CTX_new(TLS_client_method()));
		warmed = 1;
	}
	if (ca_store_find(ca_file) != NULL)
		return;
	X509_STORE *st = X509_STORE_new();
	int ok = st != NULL && (ca_file != NULL ? X509_STORE_load_file(st, ca_file)
					       : X509_STORE_set_default_paths(st));
	if (!ok) {
		X509_STORE_free(st);
		ERR_clear_error();
		return;
	}
	ca_stores = xrealloc(ca_stores, (nca_stores + 1) * sizeof *ca_stores);
	ca_stores[nca_stores].path = ca_file != NULL ? xstrdup(ca_file) : NULL;
	ca_stores[nca_stores].ctx = NULL;
	ca_stores[nca_stores++].store = st;
}

void net_tls_preload_clear(void)
{
	for (size_t i = 0; i < nca_stores; i++) {
		free(ca_stores[i].path);
		X509_STORE_free(ca_stores[i].store);
		SSL_CTX_free(ca_stores[i].ctx);
	}
	free(ca_stores);
	ca_stores = NULL;
	nca_stores = 0;
}

/* tls_setup - SSL_CTX and SSL for this connection, verification configured */
static enum pg_res tls_setup(struct net *n, const struct net_tls_params *p, char **err_r)
{
	char ebuf[256];
	const char *name = p->servername != NULL ? p->servername : n->host;
	struct ca_store *cs = p->verify ? ca_store_find(p->ca_file) : NULL;
	if (cs != NULL && cs->ctx != NULL && SSL_CTX_up_ref(cs->ctx) == 1) {
		n->ctx = cs->ctx;
		goto have_ctx;
	}
	n->ctx = SSL_CTX_new(TLS_client_method());
	if (n->ctx == NULL)
		goto ssl_fail;
	SSL_CTX_set_min_proto_version(n->ctx, TLS1_2_VERSION);
	/* POP3 has its own end marker; a missing close_notify is just EOF */
	SSL_CTX_set_options(n->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(n->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (p->verify) {
		/* pinned: the chain is checked after the handshake, by the pin */
		SSL_CTX_set_verify(n->ctx, SSL_VERIFY_PEER, verify_note);
		X509_STORE *pre = cs != NULL ? cs->store : NULL;
		if (pre != NULL)
			SSL_CTX_set1_cert_store(n->ctx, pre); /* loaded before the fork */
		int ok = pre != NULL ? 1
			 : p->ca_file != NULL
			 ? SSL_CTX_load_verify_locations(n->ctx, p->ca_file, NULL)
			 : SSL_CTX_set_default_verify_paths(n->ctx);
		if (!ok) {
			ssl_errstr(SSL_ERROR_SSL, ebuf, sizeof ebuf);
			set_err(err_r, "TLS with %s:%d: cannot load CA certificates from %s: %s",
				n->host, n->port, p->ca_file ? p->ca_file : "system store", ebuf);
			return PG_CONFIG;
		}
		if (cs != NULL && SSL_CTX_up_ref(n->ctx) == 1)
			cs->ctx = n->ctx;
	} else {
		SSL_CTX_set_verify(n->ctx, SSL_VERIFY_NONE, NULL);
	}
have_ctx:
	n->ssl = SSL_new(n->ctx);
	if (n->ssl == NULL || !SSL_set_fd(n->ssl, n->fd))
		goto ssl_fail;
	SSL_set_app_data(n->ssl, n);
	int ok = 1;
	if (is_ip_literal(name)) {
		if (p->verify)
			ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(n->ssl), name);
	} else {
		ok = SSL_set_tlsext_host_name(n->ssl, name) == 1;
		if (ok && p->verify) {
			SSL_set_hostflags(n->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			ok = SSL_set1_host(n->ssl, name);
		}
	}
	if (!ok)
		goto ssl_fail;
	SSL_set_connect_state(n->ssl);
	return PG_OK;
ssl_fail:
	ssl_errstr(SSL_ERROR_SSL, ebuf, sizeof ebuf);
	set_err(err_r, "TLS setup for %s:%d failed: %s", n->host, n->port, ebuf);
	return PG_PERM;
}

/* handshake_error - classify a failed SSL_connect */
static enum pg_res handshake_error(struct net *n, int sslerr, char **err_r)
{
	char ebuf[256];
	long vr = SSL_get_verify_result(n->ssl);
	if (vr != X509_V_OK) {
		char desc[1024];
		ERR_clear_error();
		cert_describe(n->leaf, desc, sizeof desc);
		set_err(err_r, "TLS handshake with %s:%d failed: certificate verify failed (%s)%s",
			n->host, n->port, X509_verify_cert_error_string(vr), desc);
		return PG_PERM;
	}
	ssl_errstr(sslerr, ebuf, sizeof ebuf);
	set_err(err_r, "TLS handshake with %s:%d failed: %s", n->host, n->port, ebuf);
	/* a TLS-level refusal will repeat; a dropped socket may not */
	return sslerr == SSL_ERROR_SSL ? PG_PERM : PG_TEMP;
}

enum pg_res net_start_tls(struct net *n, const struct net_tls_params *p, char **err_r)
{
	if (n->ssl != NULL) {
		set_err(err_r, "TLS already active on %s:%d", n->host, n->port);
		return PG_PERM;
	}
	n->pinned = p->fingerprint != NULL;
	if (n->pinned && net_pin_parse(p->fingerprint, n->pin) < 0) {
		set_err(err_r, "TLS with %s:%d: bad tls_fingerprint (want sha256:<64 hex digits>)",
			n->host, n->port);
		return PG_CONFIG;
	}
	enum pg_res r = tls_setup(n, p, err_r);
	if (r != PG_OK)
		return r;
	int tmo = p->timeout_ms > 0 ? p->timeout_ms : n->timeout_ms;
	int64_t deadline = now_ms() + tmo;
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int rc = SSL_connect(n->ssl);
		if (rc == 1)
			break;
		int e = SSL_get_error(n->ssl, rc);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			return handshake_error(n, e, err_r);
		int w = wait_fd(n->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
		if (w <= 0) {
			if (w == 0)
				set_err(err_r, "TLS handshake with %s:%d: timed out after %d ms",
					n->host, n->port, tmo);
			else
				set_err(err_r, "TLS handshake with %s:%d: %s", n->host, n->port,
					strerror(errno));
			return PG_TEMP;
		}
	}
	if (n->pinned && (r = check_pin(n, err_r)) != PG_OK)
		return r;
	snprintf(n->tls_info, sizeof n->tls_info, "%s %s", SSL_get_version(n->ssl),
		 SSL_get_cipher_name(n->ssl));
	return PG_OK;
}

/* io_wait - wait for the socket; -2 on timeout, -1 on poll error */
static ssize_t io_wait(struct net *n, short ev, const char *step, char **err_r)
{
	int w = wait_fd(n->fd, ev, now_ms() + n->timeout_ms);
	if (w > 0)
		return 0;
	if (w == 0) {
		set_err(err_r, "%s %s:%d: timed out after %d ms", step, n->host, n->port,
			n->timeout_ms);
		return -2;
	}
	set_err(err_r, "%s %s:%d: %s", step, n->host, n->port, strerror(errno));
	return -1;
}

static ssize_t tls_read(struct net *n, void *buf, size_t len, char **err_r)
{
	int want = len > INT_MAX ? INT_MAX : (int)len;
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int r = SSL_read(n->ssl, buf, want);
		if (r > 0)
			return r;
		int e = SSL_get_error(n->ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			ssize_t w = io_wait(n, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
					    "read from", err_r);
			if (w < 0)
				return w;
			continue;
		}
		if (e == SSL_ERROR_SYSCALL && errno == 0 && ERR_peek_error() == 0)
			return 0; /* EOF without close_notify */
		char ebuf[256];
		ssl_errstr(e, ebuf, sizeof ebuf);
		set_err(err_r, "read from %s:%d: TLS error: %s", n->host, n->port, ebuf);
		return -1;
	}
}

ssize_t net_read(void *vn, void *buf, size_t len, char **err_r)
{
	struct net *n = vn;
	if (n->ssl != NULL)
		return tls_read(n, buf, len, err_r);
	for (;;) {
		ssize_t r = recv(n->fd, buf, len, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			set_err(err_r, "read from %s:%d: %s", n->host, n->port, strerror(errno));
			return -1;
		}
		ssize_t w = io_wait(n, POLLIN, "read from", err_r);
		if (w < 0)
			return w;
	}
}

/* write_some - one write attempt: bytes written, 0 to retry after a wait on
 * *ev, or -1 on error */
static ssize_t write_some(struct net *n, const char *p, size_t len, short *ev, char **err_r)
{
	if (n->ssl != NULL) {
		ERR_clear_error();
		errno = 0;
		int r = SSL_write(n->ssl, p, len > INT_MAX ? INT_MAX : (int)len);
		if (r > 0)
			return r;
		int e = SSL_get_error(n->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			*ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
			return 0;
		}
		char ebuf[256];
		ssl_errstr(e, ebuf, sizeof ebuf);
		set_err(err_r, "write to %s:%d: TLS error: %s", n->host, n->port, ebuf);
		return -1;
	}
	ssize_t r = send(n->fd, p, len, MSG_NOSIGNAL);
	if (r >= 0)
		return r;
	if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
		*ev = POLLOUT;
		return 0;
	}
	set_err(err_r, "write to %s:%d: %s", n->host, n->port, strerror(errno));
	return -1;
}

enum pg_res net_write(struct net *n, const void *p, size_t len, char **err_r)
{
	const char *c = p;
	while (len > 0) {
		short ev = POLLOUT;
		ssize_t r = write_some(n, c, len, &ev, err_r);
		if (r < 0)
			return PG_TEMP;
		if (r == 0) {
			/* the timeout applies to each stall, not the whole batch */
			ssize_t w = io_wait(n, ev, "write to", err_r);
			if (w < 0)
				return PG_TEMP;
			continue;
		}
		c += r;
		len -= (size_t)r;
	}
	return PG_OK;
}

void net_close(struct net **np)
{
	if (np == NULL || *np == NULL)
		return;
	struct net *n = *np;
	if (n->ssl != NULL) {
		/* best effort close_notify; the socket is non-blocking, so this
		 * never waits for the peer */
		ERR_clear_error();
		(void)SSL_shutdown(n->ssl);
		ERR_clear_error();
		SSL_free(n->ssl);
	}
	SSL_CTX_free(n->ctx);
	X509_free(n->leaf);
	if (n->fd >= 0)
		close(n->fd);
	free(n->host);
	free(n);
	*np = NULL;
}
