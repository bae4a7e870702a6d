/*
 * route.c - the envelope of a fetched message (see route.h).
 *
 * Header fields are collected while the message streams to disk: physical
 * lines are capped at 998 octets (RFC 5322), a field is unfolded into a
 * buffer capped at ROUTE_FIELD_MAX, and at most ROUTE_ADDR_MAX occurrences
 * or addresses are kept.  A field that breaks a cap is remembered as
 * unusable, never truncated into a plausible-looking address.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "log.h"
#include "route.h"

#define HDR_LINE_MAX 998 /* octets of a physical line, without its CRLF */
#define ROUTE_FIELD_MAX 16384 /* one unfolded field */
#define ROUTE_ADDR_MAX 100    /* occurrences / addresses kept per list */
#define ROUTE_NAME_MAX 64

/* A bounded list of strings; a NULL entry is an unusable (overlong) value. */
struct strlist {
	char **v;
	size_t n;
	int overflow; /* more than ROUTE_ADDR_MAX entries were offered */
};

struct route_hdrs {
	char envhdr[ROUTE_NAME_MAX]; /* the account's envelope header, or "" */
	int in_headers;       /* still before the empty line */
	struct buf line;      /* the current physical line (bounded) */
	int line_overflow;
	struct buf field;     /* the current unfolded field (bounded) */
	int field_bad;        /* a line or the field broke its cap */
	char *return_path;    /* first value of each, NULL if absent */
	char *sender;
	char *from;
	struct strlist env;   /* every envelope header occurrence, top first */
	struct strlist tocc;  /* To and Cc values (guess_from_headers) */
};

static void strlist_push(struct strlist *l, char *s)
{
	if (l->n >= ROUTE_ADDR_MAX) {
		l->overflow = 1;
		free(s);
		return;
	}
	l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
	l->v[l->n++] = s;
}

static void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof *l);
}

static int strlist_has(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i] != NULL && strcasecmp(l->v[i], s) == 0)
			return 1;
	return 0;
}

struct route_hdrs *route_hdrs_new(const struct conf_account *a)
{
	struct route_hdrs *h = xcalloc(1, sizeof *h);
	h->in_headers = 1;
	if (a != NULL && a->envelope_header != NULL)
		snprintf(h->envhdr, sizeof h->envhdr, "%s", a->envelope_header);
	buf_init(&h->line, HDR_LINE_MAX + 1); /* + the CR of its CRLF */
	buf_init(&h->field, ROUTE_FIELD_MAX);
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

/* field_done - the current field is complete: keep it if routing needs it */
static void field_done(struct route_hdrs *h)
{
	const char *f = h->field.data;
	size_t n = h->field.len;
	const char *colon = n ? memchr(f, ':', n) : NULL;
	if (colon == NULL)
		goto out;
	size_t nl = (size_t)(colon - f);
	while (nl > 0 && (f[nl - 1] == ' ' || f[nl - 1] == '\t'))
		nl--;
	char name[ROUTE_NAME_MAX];
	if (nl == 0 || nl >= sizeof name)
		goto out;
	memcpy(name, f, nl);
	name[nl] = '\0';
	/* a NUL must not shorten an address into a valid one: make it a control */
	for (size_t i = 0; i < n; i++)
		if (h->field.data[i] == '\0')
			h->field.data[i] = '\x01';
	const char *v = colon + 1;
	size_t vn = n - (size_t)(v - f);
	if (h->envhdr[0] != '\0' && strcasecmp(name, h->envhdr) == 0)
		strlist_push(&h->env, h->field_bad ? NULL : trim_dup(v, vn));
	if (h->field_bad)
		goto out; /* only an envelope occurrence is counted when unusable */
	if (h->return_path == NULL && strcasecmp(name, "Return-Path") == 0)
		h->return_path = trim_dup(v, vn);
	else if (h->sender == NULL && strcasecmp(name, "Sender") == 0)
		h->sender = trim_dup(v, vn);
	else if (h->from == NULL && strcasecmp(name, "From") == 0)
		h->from = trim_dup(v, vn);
	else if (strcasecmp(name, "To") == 0 || strcasecmp(name, "Cc") == 0)
		strlist_push(&h->tocc, trim_dup(v, vn));
out:
	buf_reset(&h->field);
	h->field_bad = 0;
}

/* line_done - one complete physical header line (without its CRLF) */
static void line_done(struct route_hdrs *h)
{
	size_t n = h->line.len;
	const char *l = h->line.data ? h->line.data : "";
	if (n > 0 && l[n - 1] == '\r')
		n--;
	if (n == 0) {
		field_done(h);
		h->in_headers = 0;
		return;
	}
	if (l[0] != ' ' && l[0] != '\t')
		field_done(h);
	/* an overlong line is unusable, but its start (the field name) is kept
	 * so an envelope header holds the message instead of vanishing */
	if (h->line_overflow || n > HDR_LINE_MAX)
		h->field_bad = 1;
	/* unfolding (RFC 5322 2.2.3) is removing the CRLF: append as is */
	if (buf_append(&h->field, l, n) != 0)
		h->field_bad = 1;
}

void route_hdrs_feed(struct route_hdrs *h, const void *data, size_t len)
{
	const char *p = data, *end = p + len;
	while (h->in_headers && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		size_t room = h->line.max - h->line.len;
		if (n > room) {
			h->line_overflow = 1; /* keep the start: the field name */
			n = room;
		}
		buf_append(&h->line, p, n);
		if (nl == NULL)
			return;
		line_done(h);
		buf_reset(&h->line);
		h->line_overflow = 0;
		p = nl + 1;
	}
}

void route_hdrs_end(struct route_hdrs *h)
{
	if (!h->in_headers)
		return;
	if (h->line.len > 0 || h->line_overflow)
		line_done(h); /* a last line without its LF */
	buf_reset(&h->line);
	h->line_overflow = 0;
	field_done(h);
	h->in_headers = 0;
}

void route_hdrs_free(struct route_hdrs **hp)
{
	struct route_hdrs *h = *hp;
	if (h == NULL)
		return;
	buf_free(&h->line);
	buf_free(&h->field);
	free(h->return_path);
	free(h->sender);
	free(h->from);
	strlist_free(&h->env);
	strlist_free(&h->tocc);
	free(h);
	*hp = NULL;
}

int route_addr_ok(const char *a)
{
	size_t n = strlen(a);
	if (n == 0 || n > 254)
		return 0;
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (*p <= 0x20 || *p == 0x7f || *p == '<' || *p == '>')
			return 0;
	return 1;
}

/* ---- address parsing ---------------------------------------------------- */

struct alist_state {
	struct buf bare;  /* text outside comments, quotes kept */
	struct buf angle; /* the last <...> */
	int have_angle;
	int in_angle;
};

static void alist_emit(struct alist_state *s, struct strlist *out)
{
	const struct buf *b = s->have_angle ? &s->angle : &s->bare;
	char *a = trim_dup(b->data ? b->data : "", b->len);
	if (s->in_angle) {
		/* unbalanced '<': keep the bracket so the address is refused */
		free(a);
		a = xasprintf("<%s", s->angle.data ? s->angle.data : "");
	}
	if (a[0] != '\0')
		strlist_push(out, a);
	else
		free(a);
	buf_reset(&s->bare);
	buf_reset(&s->angle);
	s->have_angle = s->in_angle = 0;
}

/* addr_list - the addresses of an RFC 5322 address list (display names,
 * comments, quoted strings and groups handled); bounded by the field cap */
static void addr_list(const char *v, struct strlist *out)
{
	struct alist_state s = { 0 };
	int depth = 0, quote = 0;
	buf_init(&s.bare, ROUTE_FIELD_MAX);
	buf_init(&s.angle, ROUTE_FIELD_MAX);
	for (const char *p = v; *p; p++) {
		struct buf *dst = s.in_angle ? &s.angle : &s.bare;
		if (depth > 0) {
			depth += (*p == '(') - (*p == ')');
			if (*p == '\\' && p[1] != '\0')
				p++;
		} else if (quote) {
			if (*p == '\\' && p[1] != '\0')
				buf_append(dst, ++p, 1);
			else if (*p == '"')
				quote = 0;
			else
				buf_append(dst, p, 1);
		} else if (*p == '(') {
			depth = 1;
		} else if (*p == '"') {
			quote = 1;
		} else if (s.in_angle) {
			if (*p == '>')
				s.in_angle = 0, s.have_angle = 1;
			else
				buf_append(&s.angle, p, 1);
		} else if (*p == '<') {
			s.in_angle = 1;
			buf_reset(&s.angle);
		} else if (*p == ',' || *p == ';') {
			alist_emit(&s, out);
		} else if (*p == ':') {
			buf_reset(&s.bare); /* "group-name:" */
		} else {
			buf_append(&s.bare, p, 1);
		}
	}
	alist_emit(&s, out);
	buf_free(&s.bare);
	buf_free(&s.angle);
}

/* rcv_scan - where a Received value's clauses end: the last ';' outside
 * comments, quoted strings and angle brackets (the date follows it; none:
 * the whole value).  Quoted strings are honoured inside comments too, as
 * Exim writes `(envelope-from <"local part">)`.  -1 when a comment or a
 * quoted string is still open at the end: malformed, so no clause is
 * trusted. */
static ssize_t rcv_scan(const char *v)
{
	int depth = 0, cquote = 0, quote = 0, angle = 0;
	ssize_t semi = -1;
	const char *p;
	for (p = v; *p; p++) {
		char c = *p;
		if ((depth > 0 || quote) && c == '\\' && p[1] != '\0')
			p++; /* quoted-pair */
		else if (cquote)
			cquote = c != '"';
		else if (depth > 0)
			cquote = c == '"', depth += (c == '(') - (c == ')');
		else if (quote)
			quote = c != '"';
		else if (c == '"')
			quote = 1;
		else if (angle)
			angle = c != '>';
		else if (c == '<')
			angle = 1;
		else if (c == '(')
			depth = 1;
		else if (c == ';')
			semi = p - v;
	}
	if (depth > 0 || quote)
		return -1;
	return semi >= 0 ? semi : p - v;
}

/* rcv_token - the next word of v[*pos..end) outside comments (a quoted
 * string or <...> is part of its word); 0 at the end */
static int rcv_token(const char *v, size_t end, size_t *pos, size_t *start_r, size_t *len_r)
{
	size_t i = *pos;
	int depth = 0, cquote = 0;
	for (; i < end; i++) { /* blanks and comments separate words */
		char c = v[i];
		if (depth > 0 && c == '\\' && i + 1 < end)
			i++;
		else if (cquote) /* as rcv_scan() reads comments */
			cquote = c != '"';
		else if (depth > 0)
			cquote = c == '"', depth += (c == '(') - (c == ')');
		else if (c == '(')
			depth = 1;
		else if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
			break;
	}
	if (i >= end)
		return 0;
	size_t s = i;
	int quote = 0, angle = 0;
	for (; i < end; i++) {
		char c = v[i];
		if (quote && c == '\\' && i + 1 < end)
			i++;
		else if (quote)
			quote = c != '"';
		else if (c == '"')
			quote = 1;
		else if (angle)
			angle = c != '>';
		else if (c == '<')
			angle = 1;
		else if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '(')
			break;
	}
	*start_r = s;
	*len_r = i - s;
	*pos = i;
	return 1;
}

static int rcv_is(const char *v, size_t s, size_t n, const char *kw)
{
	return n == strlen(kw) && strncasecmp(v + s, kw, n) == 0;
}

static int rcv_keyword(const char *v, size_t s, size_t n)
{
	static const char *const kw[] = { "from", "by", "via", "with", "id", "for" };
	for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
		if (rcv_is(v, s, n, kw[i]))
			return 1;
	return 0;
}

/* received_for - the addresses of a Received field's `for` clause (RFC 5321
 * 4.4): only the one the receiving host wrote, i.e. the last `for` after the
 * last `by` (whose argument is the host's name), before the date's ';',
 * outside comments.  The from-clause holds the sender's HELO, which may say
 * anything ("from for boss@corp.example (unknown [192.0.2.7]) by ..."), so
 * nothing before the by-clause counts.  A `for` with several addresses
 * gives each. */
static void received_for(const char *v, struct strlist *out)
{
	ssize_t end = rcv_scan(v);
	size_t pos = 0, s, n, by = SIZE_MAX, forpos = SIZE_MAX, idx = 0;
	if (end < 0)
		return;
	while (rcv_token(v, (size_t)end, &pos, &s, &n)) {
		if (rcv_is(v, s, n, "by")) {
			by = idx;
			forpos = SIZE_MAX;
		} else if (by != SIZE_MAX && idx > by + 1 && rcv_is(v, s, n, "for")) {
			forpos = pos;
		}
		idx++;
	}
	if (forpos == SIZE_MAX)
		return;
	pos = forpos;
	while (rcv_token(v, (size_t)end, &pos, &s, &n) && !rcv_keyword(v, s, n)) {
		char *t = xstrndup(v + s, n);
		addr_list(t, out);
		free(t);
	}
}

/* domain_lower - lower-case the part after the last '@'; NULL if none */
static const char *domain_lower(char *addr)
{
	char *at = strrchr(addr, '@');
	if (at == NULL || at[1] == '\0')
		return NULL;
	for (char *p = at + 1; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return at + 1;
}

static int domain_local(const struct conf_account *a, const char *dom)
{
	if (a->nlocal_domains == 0)
		return 1;
	for (size_t i = 0; i < a->nlocal_domains; i++)
		if (strcmp(a->local_domains[i], dom) == 0)
			return 1;
	return 0;
}

/* map_addr - the address map: exact address first, then "@domain" */
static const char *map_addr(const struct conf_account *a, const char *addr, const char *dom)
{
	for (size_t i = 0; i < a->nmaps; i++)
		if (strcasecmp(a->maps[i].from, addr) == 0)
			return a->maps[i].to;
	for (size_t i = 0; i < a->nmaps; i++)
		if (a->maps[i].from[0] == '@' && strcmp(a->maps[i].from + 1, dom) == 0)
			return a->maps[i].to;
	return addr;
}

/* ---- decisions ----------------------------------------------------------- */

static void set_hold(struct route_result *r, const char *fmt, ...) PG_PRINTF(2, 3);

/* set_hold - the first reason to hold the message wins */
static void set_hold(struct route_result *r, const char *fmt, ...)
{
	va_list ap;
	if (r->hold_reason != NULL)
		return;
	va_start(ap, fmt);
	r->hold_reason = xvasprintf(fmt, ap);
	va_end(ap);
}

/* shown - an address as it may appear in a hold reason and the logs */
static char *shown(const char *v)
{
	return sanitize_for_log(v, strlen(v), 100);
}

/* keep_rcpts - filter, map, check and deduplicate candidate addresses */
static void keep_rcpts(const struct conf_account *a, struct strlist *cand, const char *what,
		       struct strlist *out, struct route_result *r)
{
	for (size_t i = 0; i < cand->n; i++) {
		char *addr = cand->v[i];
		const char *dom = addr ? domain_lower(addr) : NULL;
		if (dom == NULL || !domain_local(a, dom))
			continue; /* not an address, or not ours */
		const char *to = map_addr(a, addr, dom);
		if (!route_addr_ok(to)) {
			char *v = shown(to);
			set_hold(r, "unsafe recipient address in %s: \"%s\"", what, v);
			free(v);
			continue;
		}
		if (!strlist_has(out, to))
			strlist_push(out, xstrdup(to));
	}
	if (cand->overflow || out->overflow)
		set_hold(r, "more than %d recipients in %s", ROUTE_ADDR_MAX, what);
}

/* multidrop - recipients from the envelope header, or a hold reason */
static void multidrop(const struct conf_account *a, const struct route_hdrs *h,
		      struct strlist *out, struct route_result *r)
{
	struct strlist cand = { 0 };
	int received = strcasecmp(a->envelope_header, "Received") == 0;
	for (size_t i = (size_t)a->envelope_skip; i < h->env.n; i++) {
		if (h->env.v[i] == NULL)
			set_hold(r, "unusable %s field (a line over %d octets or a field "
				 "over %d)", a->envelope_header, HDR_LINE_MAX, ROUTE_FIELD_MAX);
		else if (received)
			received_for(h->env.v[i], &cand);
		else
			addr_list(h->env.v[i], &cand);
	}
	cand.overflow |= h->env.overflow;
	keep_rcpts(a, &cand, a->envelope_header, out, r);
	strlist_free(&cand);
	if (out->n > 0 || r->hold_reason != NULL)
		return;
	if (a->fallback_to != NULL) {
		strlist_push(out, xstrdup(a->fallback_to));
		return;
	}
	if (a->guess_from_headers) {
		for (size_t i = 0; i < h->tocc.n; i++)
			addr_list(h->tocc.v[i], &cand);
		keep_rcpts(a, &cand, "To/Cc", out, r);
		strlist_free(&cand);
	}
	if (out->n == 0)
		set_hold(r, "no recipient found in %s", a->envelope_header);
}

/* first_addr - the first address of a header value; NULL if it has none.
 * *null_r is set when the value is the null path "<>". */
static char *first_addr(const char *v, int *null_r)
{
	struct strlist l = { 0 };
	const char *p = v + strspn(v, " \t");
	if (strncmp(p, "<>", 2) == 0 && p[2 + strspn(p + 2, " \t")] == '\0') {
		*null_r = 1;
		return NULL;
	}
	addr_list(v, &l);
	char *a = l.n > 0 ? l.v[0] : NULL;
	if (a != NULL)
		l.v[0] = NULL;
	strlist_free(&l);
	return a;
}

/* decide_sender - envelope_from, else Return-Path, Sender, From; else <> */
static void decide_sender(const struct conf_account *a, const struct route_hdrs *h,
			  struct route_result *r)
{
	static const char *const names[] = { "Return-Path", "Sender", "From" };
	const char *vals[] = { h->return_path, h->sender, h->from };
	if (a->envelope_from != NULL) {
		r->sender = xstrdup(a->envelope_from);
		return;
	}
	for (size_t i = 0; i < 3; i++) {
		int isnull = 0;
		if (vals[i] == NULL)
			continue;
		char *addr = first_addr(vals[i], &isnull);
		if (isnull)
			break; /* <> stays <> */
		if (addr == NULL)
			continue; /* no address in this field: next fallback */
		if (!route_addr_ok(addr)) {
			char *v = shown(addr);
			set_hold(r, "unsafe envelope sender in %s: \"%s\"", names[i], v);
			free(v);
			free(addr);
			break;
		}
		domain_lower(addr);
		r->sender = addr;
		return;
	}
	r->sender = xstrdup("");
}

enum pg_res route_decide(const struct conf_account *a, struct route_hdrs *h,
			 struct route_result *r, char **err_r)
{
	struct strlist out = { 0 };
	memset(r, 0, sizeof *r);
	route_hdrs_end(h); /* every caller ends its input the same way */
	if (a->deliver_to == NULL && a->envelope_header == NULL) {
		set_err(err_r, "account '%s': neither deliver_to nor envelope_header", a->name);
		return PG_CONFIG;
	}
	decide_sender(a, h, r);
	if (a->deliver_to != NULL) {
		if (route_addr_ok(a->deliver_to))
			strlist_push(&out, xstrdup(a->deliver_to));
		else
			set_hold(r, "unsafe recipient address in deliver_to");
	} else {
		multidrop(a, h, &out, r);
	}
	/* held or not, the safe recipients found are stored (a requeue after
	 * the operator's fix needs them); unsafe ones never are */
	r->rcpts = out.v;
	r->nrcpts = out.n;
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
