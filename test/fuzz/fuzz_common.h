/*
 * fuzz_common.h - canned server bytes as a POP3 transport for the
 * libFuzzer targets: reads hand out the input in pieces whose sizes come
 * from the input itself (so line boundaries fall between reads), writes
 * are swallowed.
 */
#ifndef POPGATE_FUZZ_COMMON_H
#define POPGATE_FUZZ_COMMON_H

#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "log.h"
#include "pop3.h"

struct canned {
	const uint8_t *p;
	size_t len, pos;
};

static ssize_t canned_read(void *ctx, void *buf, size_t len, char **err_r)
{
	struct canned *c = ctx;
	(void)err_r;
	if (c->pos >= c->len)
		return 0;
	size_t n = 1 + (c->p[c->pos] % 61) * 17; /* 1..1021, decided by the data */
	if (n > len)
		n = len;
	if (n > c->len - c->pos)
		n = c->len - c->pos;
	memcpy(buf, c->p + c->pos, n);
	c->pos += n;
	return (ssize_t)n;
}

static ssize_t swallow_write(void *ctx, const void *buf, size_t len, char **err_r)
{
	(void)ctx;
	(void)buf;
	(void)err_r;
	return (ssize_t)len;
}

static enum pg_res discard_sink(void *ctx, const void *data, size_t len, char **err_r)
{
	(void)ctx;
	(void)data;
	(void)len;
	(void)err_r;
	return PG_OK;
}

static void canned_params(struct pop3_params *pp, struct canned *c, const uint8_t *data,
			  size_t size)
{
	static int quiet;
	if (!quiet) {
		log_open("fuzz", 1, LOGL_ERR);
		quiet = 1;
	}
	c->p = data;
	c->len = size;
	c->pos = 0;
	memset(pp, 0, sizeof *pp);
	pp->host = "fuzz.invalid";
	pp->port = 110;
	pp->tls = TLS_NONE;
	pp->allow_plaintext = 1;
	pp->pipelining = 1;
	pp->timeout_ms = 1000;
	pp->account = "fuzz";
	pp->io_read = canned_read;
	pp->io_write = swallow_write;
	pp->io_ctx = c;
}

#endif
