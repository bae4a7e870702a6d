/*
 * route.c - the envelope of a fetched message (see route.h).
 *
 * This first version implements single-drop routing and the Return-Path
 * sender; multidrop follows.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "route.h"

#define HDR_LINE_MAX 998

struct route_hdrs {
	int in_headers;       /* still before the empty line */
	int at_line_start;
	struct buf line;      /* the current header line (bounded) */
	int line_overflow;
	char *return_path;    /* first Return-Path value */
};

struct route_hdrs *route_hdrs_new(const struct conf_account *a)
{
	struct route_hdrs *h = xcalloc(1, sizeof *h);
	h->in_headers = 1;
	h->at_line_start = 1;
	buf_init(&h->line, HDR_LINE_MAX + 2);
	(void)a;
	return h;
}

static char *trim_dup(const char *s, size_t n)
{
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		n--;
	return xstrndup(s, n);
}

/* header_done - one complete physical header line (no CRLF) */
static void header_done(struct route_hdrs *h, const char *l, size_t n)
{
	if (n == 0) {
		h->in_headers = 0;
		return;
	}
	if (h->return_path == NULL && n > 12 && strncasecmp(l, "Return-Path:", 12) == 0)
		h->return_path = trim_dup(l + 12, n - 12);
}

void route_hdrs_feed(struct route_hdrs *h, const void *data, size_t len)
{
	const char *p = data, *end = p + len;
	while (h->in_headers && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (!h->line_overflow && buf_append(&h->line, p, n) != 0)
			h->line_overflow = 1;
		if (nl == NULL)
			return;
		size_t ln = h->line.len;
		if (ln > 0 && h->line.data[ln - 1] == '\r')
			ln--;
		if (!h->line_overflow)
			header_done(h, h->line.data ? h->line.data : "", ln);
		buf_reset(&h->line);
		h->line_overflow = 0;
		p = nl + 1;
	}
}

void route_hdrs_free(struct route_hdrs **hp)
{
	struct route_hdrs *h = *hp;
	if (h == NULL)
		return;
	buf_free(&h->line);
	free(h->return_path);
	free(h);
	*hp = NULL;
}

int route_addr_ok(const char *a)
{
	size_t n = strlen(a);
	if (n > 254)
		return 0;
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (*p <= 0x20 || *p == 0x7f || *p == '<' || *p == '>')
			return 0;
	return 1;
}

/* path_addr - the address inside a Return-Path value, or NULL if unusable */
static char *path_addr(const char *v)
{
	const char *lt = strchr(v, '<');
	const char *start = lt ? lt + 1 : v;
	size_t n = lt ? strcspn(start, ">") : strcspn(start, " \t");
	if (lt != NULL && start[n] != '>')
		return NULL;
	char *a = xstrndup(start, n);
	if (!route_addr_ok(a)) {
		free(a);
		return NULL;
	}
	return a;
}

enum pg_res route_decide(const struct conf_account *a, const struct route_hdrs *h,
			 struct route_result *r, char **err_r)
{
	memset(r, 0, sizeof *r);
	if (a->envelope_from != NULL) {
		r->sender = xstrdup(a->envelope_from);
	} else if (h->return_path != NULL) {
		r->sender = path_addr(h->return_path);
		if (r->sender == NULL) {
			char *shown = sanitize_for_log(h->return_path, strlen(h->return_path), 200);
			LOG_WARN("account=%s status=bad-return-path value=\"%s\" "
				 "action=\"using the null sender <>\"", a->name, shown);
			free(shown);
			r->sender = xstrdup("");
		}
	} else {
		r->sender = xstrdup("");
	}
	if (a->deliver_to == NULL) {
		set_err(err_r, "account '%s': multidrop routing is not available yet", a->name);
		route_result_free(r);
		return PG_CONFIG;
	}
	r->rcpts = xcalloc(1, sizeof *r->rcpts);
	r->rcpts[0] = xstrdup(a->deliver_to);
	r->nrcpts = 1;
	return PG_OK;
}

void route_result_free(struct route_result *r)
{
	free(r->sender);
	for (size_t i = 0; i < r->nrcpts; i++)
		free(r->rcpts[i]);
	free(r->rcpts);
	free(r->hold_reason);
	memset(r, 0, sizeof *r);
}
