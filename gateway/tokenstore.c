/*
 * tokenstore.c - the OAuth2 token store (see tokenstore.h).
 *
 * File format (text, one key=value per line, order free, unknown keys
 * ignored; tokens are printable ASCII without blanks, checked on receipt):
 *
 *   popgate-oauth2-tokens 1
 *   state=valid|reauthorize
 *   refresh_token=...
 *   refresh_issued=<unix time>
 *   access_token=...
 *   access_expires=<unix time, 0 unknown>
 *   updated=<unix time>
 *   reason=<why reauthorize, sanitized>
 *   retry_until=<unix time: the identity provider's Retry-After, 0 none>
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "oauth2.h"
#include "tokenstore.h"

#define STORE_MAX (64 * 1024)
#define MAGIC "popgate-oauth2-tokens 1"
#define EXPIRY_MARGIN 300 /* refresh when the token expires within 5 minutes */

const char *tokenstore_state_name(enum tokenstore_state s)
{
	static const char *const names[] = { "none", "valid", "reauthorize" };
	return (unsigned)s < 3 ? names[s] : "?";
}

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

void tokenstore_entry_wipe(struct tokenstore_entry *e)
{
	wipe_free(&e->refresh_token);
	wipe_free(&e->access_token);
	free(e->reason);
	memset(e, 0, sizeof *e);
}

static char *store_dir(const char *spool_dir)
{
	return xasprintf("%s/oauth2", spool_dir);
}

/* ensure_dir - SPOOL/oauth2, mode 0700 */
static enum pg_res ensure_dir(const char *dir, char **err_r)
{
	struct stat st;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		set_err(err_r, "token store: cannot create '%s': %s", dir, strerror(errno));
		return PG_IO;
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		set_err(err_r, "token store: '%s' is not a directory", dir);
		return PG_IO;
	}
	if ((st.st_mode & 077) != 0 && chmod(dir, 0700) != 0) {
		set_err(err_r, "token store: cannot chmod 700 '%s': %s", dir, strerror(errno));
		return PG_IO;
	}
	return PG_OK;
}

/* ---- reading ----------------------------------------------------------- */

static int parse_time(const char *v, time_t *t_r)
{
	char *end = NULL;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (*v < '0' || *v > '9' || *end != '\0' || errno != 0)
		return -1;
	*t_r = (time_t)n;
	return 0;
}

/* parse_line - one key=value line into e; -1 when malformed */
static int parse_line(char *line, struct tokenstore_entry *e)
{
	char *eq = strchr(line, '=');
	if (eq == NULL)
		return -1;
	*eq = '\0';
	const char *k = line, *v = eq + 1;
	if (strcmp(k, "state") == 0) {
		if (strcmp(v, "valid") == 0)
			e->state = TOKENSTORE_VALID;
		else if (strcmp(v, "reauthorize") == 0)
			e->state = TOKENSTORE_REAUTHORIZE;
		else
			return -1;
	} else if (strcmp(k, "refresh_token") == 0 && *v && e->refresh_token == NULL) {
		e->refresh_token = xstrdup(v);
	} else if (strcmp(k, "access_token") == 0 && *v && e->access_token == NULL) {
		e->access_token = xstrdup(v);
	} else if (strcmp(k, "reason") == 0 && e->reason == NULL) {
		e->reason = xstrdup(v);
	} else if (strcmp(k, "refresh_issued") == 0) {
		return parse_time(v, &e->refresh_issued);
	} else if (strcmp(k, "access_expires") == 0) {
		return parse_time(v, &e->access_expires);
	} else if (strcmp(k, "updated") == 0) {
		return parse_time(v, &e->updated);
	} else if (strcmp(k, "retry_until") == 0) {
		return parse_time(v, &e->retry_until);
	}
	return 0;
}

static enum pg_res parse_store(char *text, const char *path, struct tokenstore_entry *e,
			       char **err_r)
{
	char *save = NULL;
	int n = 0;
	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		n++;
		if ((n == 1 && strcmp(line, MAGIC) != 0) || (n > 1 && parse_line(line, e) != 0)) {
			set_err(err_r, "token store: '%s' line %d is not understood; run popgate "
				"authorize again to rewrite it", path, n);
			return PG_IO;
		}
	}
	if (n == 0 || e->state == TOKENSTORE_NONE) {
		set_err(err_r, "token store: '%s' has no state line", path);
		return PG_IO;
	}
	return PG_OK;
}

enum pg_res tokenstore_read(const char *spool_dir, const char *account,
			    struct tokenstore_entry *e_r, char **err_r)
{
	memset(e_r, 0, sizeof *e_r);
	char *path = xasprintf("%s/oauth2/%s.tokens", spool_dir, account);
	char *text = NULL;
	enum pg_res r = PG_OK;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		goto out; /* never authorized */
	if (fd < 0 || fstat(fd, &st) != 0) {
		set_err(err_r, "token store: cannot open '%s': %s", path, strerror(errno));
		r = PG_IO;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_size > STORE_MAX) {
		set_err(err_r, "token store: '%s' %s", path, !S_ISREG(st.st_mode) ?
			"is not a regular file" : st.st_size > STORE_MAX ? "is too large" :
			"is readable or writable by group or others: run chmod 600 on it");
		r = PG_IO;
		goto out;
	}
	text = xmalloc((size_t)st.st_size + 1);
	ssize_t n = read(fd, text, (size_t)st.st_size);
	if (n != st.st_size) {
		set_err(err_r, "token store: cannot read '%s'", path);
		r = PG_IO;
		goto out;
	}
	text[n] = '\0';
	r = parse_store(text, path, e_r, err_r);
	if (r != PG_OK)
		tokenstore_entry_wipe(e_r);
	OPENSSL_cleanse(text, (size_t)n);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	free(path);
	return r;
}

/* ---- writing ----------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	close(fd);
	return r;
}

/* format_entry - the file's text (holds secrets: the caller wipes it) */
static void format_entry(struct buf *b, const struct tokenstore_entry *e)
{
	char *reason = e->reason ? sanitize_for_log(e->reason, strlen(e->reason), 400) : NULL;
	buf_printf(b, "%s\nstate=%s\n", MAGIC,
		   e->state == TOKENSTORE_REAUTHORIZE ? "reauthorize" : "valid");
	if (e->refresh_token != NULL)
		buf_printf(b, "refresh_token=%s\n", e->refresh_token);
	buf_printf(b, "refresh_issued=%lld\n", (long long)e->refresh_issued);
	if (e->access_token != NULL)
		buf_printf(b, "access_token=%s\n", e->access_token);
	buf_printf(b, "access_expires=%lld\nupdated=%lld\n", (long long)e->access_expires,
		   (long long)time(NULL));
	if (reason != NULL)
		buf_printf(b, "reason=%s\n", reason);
	if (e->retry_until != 0)
		buf_printf(b, "retry_until=%lld\n", (long long)e->retry_until);
	free(reason);
}

enum pg_res tokenstore_write(const char *spool_dir, const char *account,
			     const struct tokenstore_entry *e, char **err_r)
{
	char *dir = store_dir(spool_dir);
	char *path = xasprintf("%s/%s.tokens", dir, account);
	char *tmp = xasprintf("%s/.%s.tokens.%ld", dir, account, (long)getpid());
	struct buf b;
	enum pg_res r = ensure_dir(dir, err_r);
	buf_init(&b, STORE_MAX);
	format_entry(&b, e);
	if (r != PG_OK)
		goto out;
	unlink(tmp); /* a leftover of a killed process with our pid */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || b.data == NULL || write_all(fd, b.data, b.len) != 0 || fsync(fd) != 0) {
		set_err(err_r, "token store: cannot write '%s': %s", tmp,
			b.data == NULL ? "too large" : strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		r = PG_IO;
		goto out;
	}
	if (close(fd) != 0 || rename(tmp, path) != 0 || fsync_dir(dir) != 0) {
		set_err(err_r, "token store: cannot replace '%s': %s", path, strerror(errno));
		unlink(tmp);
		r = PG_IO;
	}
out:
	if (b.data != NULL)
		OPENSSL_cleanse(b.data, b.cap);
	buf_free(&b);
	free(tmp);
	free(path);
	free(dir);
	return r;
}

/* ---- locking ------------------------------------------------------------ */

enum pg_res tokenstore_lock(const char *spool_dir, const char *account, int wait_s, int *fd_r,
			    char **err_r)
{
	char *dir = store_dir(spool_dir);
	char *path = xasprintf("%s/%s.lock", dir, account);
	enum pg_res r = ensure_dir(dir, err_r);
	*fd_r = -1;
	int fd = r == PG_OK ? open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600) : -1;
	if (r == PG_OK && fd < 0) {
		set_err(err_r, "token store: cannot open '%s': %s", path, strerror(errno));
		r = PG_IO;
	}
	int64_t deadline = now_ms() + (int64_t)wait_s * 1000;
	while (r == PG_OK && flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		if ((e != EWOULDBLOCK && e != EINTR) || now_ms() >= deadline) {
			set_err(err_r, "token store: '%s' %s", path, e == EWOULDBLOCK ?
				"stays locked by another process refreshing the token" : strerror(e));
			r = e == EWOULDBLOCK ? PG_TEMP : PG_IO;
			break;
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (r == PG_OK)
		*fd_r = fd;
	else if (fd >= 0)
		close(fd);
	free(path);
	free(dir);
	return r;
}

void tokenstore_unlock(int *fd)
{
	if (*fd >= 0) {
		flock(*fd, LOCK_UN);
		close(*fd);
	}
	*fd = -1;
}

/* ---- the token for a login ---------------------------------------------- */

/* usable - the stored access token may be used for a login now */
static int usable(const struct tokenstore_entry *e, const char *refused, time_t now)
{
	return e->access_token != NULL && e->access_expires > now + EXPIRY_MARGIN &&
	       (refused == NULL || strcmp(refused, e->access_token) != 0);
}

/* reauthorize - record the state so no request is made until authorize */
static void mark_reauthorize(const struct conf *c, const struct conf_account *a,
			     struct tokenstore_entry *e, const char *why)
{
	char *werr = NULL;
	e->state = TOKENSTORE_REAUTHORIZE;
	wipe_free(&e->access_token);
	e->access_expires = 0;
	free(e->reason);
	e->reason = xstrdup(why);
	if (tokenstore_write(c->spool_dir, a->name, e, &werr) != PG_OK) {
		LOG_ERR("account=%s status=spool-warning reason=\"%s\"", a->name, werr);
		free(werr);
	}
	LOG_ERR("account=%s status=reauthorize action=\"run: popgate authorize %s\" reason=\"%s\"",
		a->name, a->name, why);
}

/* note_retry_after - store the identity provider's Retry-After, so no
 * process asks again before it has passed */
static void note_retry_after(const struct conf *c, const struct conf_account *a,
			     struct tokenstore_entry *e, long seconds)
{
	char *werr = NULL;
	e->retry_until = time(NULL) + seconds;
	if (tokenstore_write(c->spool_dir, a->name, e, &werr) != PG_OK) {
		LOG_WARN("account=%s status=spool-warning reason=\"%s\"", a->name, werr);
		free(werr);
	}
}

time_t tokenstore_retry_until(const char *spool_dir, const char *account)
{
	struct tokenstore_entry e;
	char *err = NULL;
	time_t t = 0;
	if (tokenstore_read(spool_dir, account, &e, &err) == PG_OK)
		t = e.retry_until;
	else
		free(err);
	tokenstore_entry_wipe(&e);
	return t;
}

/* obtain - a new access token (refresh, or client_credentials), stored
 * durably before it is returned in e */
static enum pg_res obtain(const struct conf *c, const struct conf_account *a,
			  struct tokenstore_entry *e, int *reauth_r, char **err_r)
{
	struct oauth2_client *oc = NULL;
	struct oauth2_token t = { 0 };
	int cc = a->oauth2->flow == OAUTH2_FLOW_CLIENT_CREDENTIALS;
	enum oauth2_res or = oauth2_client_new(a, &oc, err_r);
	if (or == OAUTH2_OK)
		or = cc ? oauth2_client_credentials(oc, &t, err_r)
			: oauth2_refresh(oc, e->refresh_token, &t, err_r);
	long retry_after = oc != NULL && or == OAUTH2_TEMP ? oauth2_retry_after(oc) : 0;
	oauth2_client_free(&oc);
	if (retry_after > 0)
		note_retry_after(c, a, e, retry_after);
	if (or == OAUTH2_REAUTHORIZE && !cc) {
		mark_reauthorize(c, a, e, err_r && *err_r ? *err_r : "invalid_grant");
		*reauth_r = 1;
	}
	if (or != OAUTH2_OK)
		return oauth2_to_pg(or);
	time_t now = time(NULL);
	e->state = TOKENSTORE_VALID;
	wipe_free(&e->access_token);
	e->access_token = t.access_token;
	t.access_token = NULL;
	e->access_expires = t.expires_at;
	if (t.refresh_token != NULL) { /* rotated: the old one may be dead now */
		wipe_free(&e->refresh_token);
		e->refresh_token = t.refresh_token;
		t.refresh_token = NULL;
		e->refresh_issued = now;
	}
	free(e->reason);
	e->reason = NULL;
	e->retry_until = 0;
	oauth2_token_wipe(&t);
	return tokenstore_write(c->spool_dir, a->name, e, err_r);
}

enum pg_res tokenstore_login_token(const struct conf *c, const struct conf_account *a,
				   const char *refused, char **token_r, int *fresh_r,
				   int *reauth_r, char **err_r)
{
	struct tokenstore_entry e;
	int lock = -1;
	*token_r = NULL;
	*fresh_r = *reauth_r = 0;
	if (a->oauth2 == NULL) {
		set_err(err_r, "account '%s' has no oauth2 block", a->name);
		return PG_CONFIG;
	}
	int wait_s = a->connect_timeout + a->timeout + 10;
	enum pg_res r = tokenstore_lock(c->spool_dir, a->name, wait_s, &lock, err_r);
	if (r != PG_OK)
		return r;
	r = tokenstore_read(c->spool_dir, a->name, &e, err_r);
	int cc = a->oauth2->flow == OAUTH2_FLOW_CLIENT_CREDENTIALS;
	if (r == PG_OK && e.state == TOKENSTORE_REAUTHORIZE) {
		set_err(err_r, "account '%s' must be authorized again (%s): run popgate authorize %s",
			a->name, e.reason ? e.reason : "the grant was refused", a->name);
		*reauth_r = 1;
		r = PG_AUTH;
	} else if (r == PG_OK && !cc && e.refresh_token == NULL) {
		set_err(err_r, "account '%s' is not authorized yet: run popgate authorize %s",
			a->name, a->name);
		*reauth_r = 1;
		r = PG_AUTH;
	} else if (r == PG_OK && !usable(&e, refused, time(NULL)) && e.retry_until > time(NULL)) {
		char when[32];
		struct tm tm;
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&e.retry_until, &tm));
		set_err(err_r, "the identity provider asked for no request before %s (Retry-After, "
			"%lld s from now)", when, (long long)(e.retry_until - time(NULL)));
		r = PG_TEMP;
	} else if (r == PG_OK && !usable(&e, refused, time(NULL))) {
		r = obtain(c, a, &e, reauth_r, err_r);
		*fresh_r = r == PG_OK;
	}
	if (r == PG_OK)
		*token_r = xstrdup(e.access_token);
	tokenstore_unlock(&lock);
	tokenstore_entry_wipe(&e);
	return r;
}
