/*
 * dedupe.c - content keys for duplicate detection (see dedupe.h).
 *
 * The header is scanned a byte at a time (it is small); once the empty line
 * that ends it is seen, the body goes to its digest in whole chunks.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "dedupe.h"

#define FIELD_MAX 1024 /* a Message-ID field with its folding; longer: ignored */
#define MSGID_MAX 998

enum hstate {
	H_LINE_START, /* at the start of a header line */
	H_IN_LINE,    /* inside a header line */
	H_BODY,       /* after the empty line */
};

struct dedupe_keys {
	EVP_MD *sha256; /* fetched once: EVP_sha256() would look it up at each init */
	EVP_MD_CTX *all, *body;
	enum hstate hs;
	int in_msgid;       /* the current field is Message-ID */
	int cr;             /* the last octet was CR */
	char field[FIELD_MAX];
	size_t flen;
	int field_over;     /* the field outgrew the buffer */
	size_t line_len;    /* octets of the current line (name detection) */
	char msgid[MSGID_MAX + 1];
	size_t msgid_len;   /* 0: none found yet */
	int msgid_done;
};

static void oom(void)
{
	fputs("popgate: out of memory\n", stderr);
	abort();
}

static void md_init(const struct dedupe_keys *k, EVP_MD_CTX *c)
{
	if (EVP_DigestInit_ex(c, k->sha256, NULL) != 1)
		oom(); /* sha256 is always there: a failure is one of allocation */
}

struct dedupe_keys *dedupe_new(void)
{
	struct dedupe_keys *k = calloc(1, sizeof *k);
	if (k == NULL || (k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
	    (k->all = EVP_MD_CTX_new()) == NULL || (k->body = EVP_MD_CTX_new()) == NULL)
		oom();
	dedupe_reset(k);
	return k;
}

void dedupe_reset(struct dedupe_keys *k)
{
	md_init(k, k->all);
	md_init(k, k->body);
	k->hs = H_LINE_START;
	k->in_msgid = k->cr = k->field_over = k->msgid_done = 0;
	k->flen = k->line_len = k->msgid_len = 0;
}

/* field_end - the Message-ID field is complete: keep its value without
 * folding and white space (the first such field only) */
static void field_end(struct dedupe_keys *k)
{
	if (!k->in_msgid)
		return;
	k->in_msgid = 0;
	if (k->msgid_done || k->flen < sizeof "Message-ID:" - 1)
		return; /* a line cut short ("Message-I" and the line end) is no field */
	k->msgid_done = 1;
	if (k->field_over)
		return;
	size_t n = 0;
	for (size_t i = sizeof "Message-ID:" - 1; i < k->flen; i++) {
		char c = k->field[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (n == MSGID_MAX)
			return; /* too long: no key */
		k->msgid[n++] = c;
	}
	k->msgid_len = n;
}

static void field_add(struct dedupe_keys *k, char c)
{
	if (k->flen < sizeof k->field)
		k->field[k->flen++] = c;
	else
		k->field_over = 1;
}

/* header_byte - one octet of the header; 1 when the header just ended */
static int header_byte(struct dedupe_keys *k, char c)
{
	if (k->hs == H_LINE_START) {
		if (c == '\r' || c == '\n') {
			if (c == '\n') { /* the empty line: the body follows */
				field_end(k);
				k->hs = H_BODY;
				return 1;
			}
			return 0;
		}
		if (c == ' ' || c == '\t') { /* folding: the same field goes on */
			k->hs = H_IN_LINE;
			if (k->in_msgid)
				field_add(k, c);
			return 0;
		}
		field_end(k); /* a new field begins */
		k->hs = H_IN_LINE;
		k->line_len = 0;
		k->flen = 0;
		k->field_over = 0;
		k->in_msgid = !k->msgid_done; /* decided once its name is read */
	}
	if (c == '\n') {
		k->hs = H_LINE_START;
		return 0;
	}
	if (k->in_msgid) {
		if (k->line_len < sizeof "Message-ID:" - 1 && !k->field_over &&
		    k->flen == k->line_len) {
			/* still reading the name: drop out at the first mismatch */
			if (strncasecmp(&c, &"Message-ID:"[k->line_len], 1) != 0) {
				k->in_msgid = 0;
				return 0;
			}
		}
		field_add(k, c);
	}
	k->line_len++;
	return 0;
}

void dedupe_feed(struct dedupe_keys *k, const void *data, size_t len)
{
	const char *p = data;
	size_t i = 0;

	if (EVP_DigestUpdate(k->all, data, len) != 1)
		oom();
	while (k->hs != H_BODY && i < len)
		header_byte(k, p[i++]);
	if (k->hs == H_BODY && i < len && EVP_DigestUpdate(k->body, p + i, len - i) != 1)
		oom();
}

static void md_final(EVP_MD_CTX *c, unsigned char out[SPOOL_KEY_LEN])
{
	unsigned int n = 0;
	if (EVP_DigestFinal_ex(c, out, &n) != 1 || n != SPOOL_KEY_LEN)
		oom();
}

void dedupe_end(struct dedupe_keys *k, struct spool_dedupe *d)
{
	unsigned char body[SPOOL_KEY_LEN];
	static const char tag[] = "popgate dedupe message-id+body\n";

	if (k->hs != H_BODY)
		field_end(k); /* a message with no body */
	md_final(k->all, d->exact);
	md_final(k->body, body);
	d->has_msgkey = k->msgid_len > 0;
	if (d->has_msgkey) {
		EVP_MD_CTX *c = k->body; /* finished: reused for the key */
		md_init(k, c);
		if (EVP_DigestUpdate(c, tag, sizeof tag - 1) != 1 ||
		    EVP_DigestUpdate(c, k->msgid, k->msgid_len) != 1 ||
		    EVP_DigestUpdate(c, "\n", 1) != 1 ||
		    EVP_DigestUpdate(c, body, sizeof body) != 1)
			oom();
		md_final(c, d->msgkey);
	} else {
		memset(d->msgkey, 0, sizeof d->msgkey);
	}
}

void dedupe_free(struct dedupe_keys **k)
{
	if (*k == NULL)
		return;
	EVP_MD_CTX_free((*k)->all);
	EVP_MD_CTX_free((*k)->body);
	EVP_MD_free((*k)->sha256);
	free(*k);
	*k = NULL;
}
