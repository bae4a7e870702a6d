/*
 * fuzz_hdrs.h - message bytes for the header fuzz targets (route, sender,
 * notice).  The input may hold a repeat: the bytes 0x01 'R', a 3-byte
 * big-endian count, a 1-byte length L and L bytes, which stand for those L
 * bytes count times.  So a seed of a few dozen bytes is a 10 MiB header or
 * 100,000 header fields, and libFuzzer can mutate the count like any other
 * byte (the expansion is capped at FUZZ_EXPAND_MAX).  The bytes are handed
 * out either in large pieces or in small pieces whose sizes come from the
 * data, so the targets can check that chunking changes nothing (for inputs
 * up to FUZZ_SMALL_MAX expanded: the check needs no megabytes, and it would
 * halve the executions of the big ones).  FUZZ_EXPAND_MAX in the
 * environment lowers the cap (octets) for a long run that should spend its
 * time on many small inputs rather than on a few 16 MiB ones.
 */
#ifndef POPGATE_FUZZ_HDRS_H
#define POPGATE_FUZZ_HDRS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_EXPAND_MAX (16u * 1024 * 1024)
#define FUZZ_SMALL_MAX (256u * 1024)

typedef void (*fuzz_feed_fn)(void *ctx, const void *p, size_t n);

struct fuzz_emit {
	fuzz_feed_fn fn;
	void *ctx;
	int small;      /* small pieces of data-driven sizes */
	uint32_t seed;
	size_t total;
};

/* fuzz_expand_max - FUZZ_EXPAND_MAX, or the environment's lower cap */
static size_t fuzz_expand_max(void)
{
	static size_t max;
	if (max == 0) {
		const char *v = getenv("FUZZ_EXPAND_MAX");
		unsigned long long e = v ? strtoull(v, NULL, 10) : 0;
		max = e > 0 && e < FUZZ_EXPAND_MAX ? (size_t)e : FUZZ_EXPAND_MAX;
	}
	return max;
}

static void fuzz_emit(struct fuzz_emit *e, const uint8_t *p, size_t n)
{
	if (n > fuzz_expand_max() - e->total)
		n = fuzz_expand_max() - e->total;
	e->total += n;
	while (n > 0) {
		size_t k = n;
		if (e->small) {
			e->seed = e->seed * 1103515245u + 12345u + p[0];
			k = 1 + (e->seed >> 16) % 1021;
			if (k > n)
				k = n;
		}
		e->fn(e->ctx, p, k);
		p += k;
		n -= k;
	}
}

/* fuzz_expand - the input, repeats expanded, to fn; returns the octets */
static size_t fuzz_expand(const uint8_t *d, size_t n, int small, fuzz_feed_fn fn, void *ctx)
{
	static uint8_t block[65536];
	struct fuzz_emit e = { fn, ctx, small, 1, 0 };
	size_t i = 0;
	while (i < n && e.total < fuzz_expand_max()) {
		const uint8_t *m = memmem(d + i, n - i, "\x01R", 2);
		size_t lit = m ? (size_t)(m - (d + i)) : n - i;
		fuzz_emit(&e, d + i, lit);
		i += lit;
		if (m == NULL || n - i < 6) {
			fuzz_emit(&e, d + i, n - i);
			break;
		}
		size_t count = (size_t)d[i + 2] << 16 | (size_t)d[i + 3] << 8 | d[i + 4];
		size_t ulen = d[i + 5];
		i += 6;
		if (ulen > n - i)
			ulen = n - i;
		const uint8_t *unit = d + i;
		i += ulen;
		if (ulen == 0 || count == 0)
			continue;
		size_t per = sizeof block / ulen; /* units per block */
		for (size_t k = 0; k < per; k++)
			memcpy(block + k * ulen, unit, ulen);
		while (count > 0 && e.total < fuzz_expand_max()) {
			size_t u = count < per ? count : per;
			fuzz_emit(&e, block, u * ulen);
			count -= u;
		}
	}
	return e.total;
}

#endif
