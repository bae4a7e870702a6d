/* fuzz_route.c - what any sender on the internet writes, as multidrop
 * routing reads it: header collection and unfolding (route_hdrs_feed), the
 * envelope header's address lists, the `for` clause of Received, the
 * address map, guess_from_headers and sender selection (route_decide).
 *
 * Input: byte 0 picks the account (bits 0-2 the envelope header, 3
 * local_domains, 4 a map, 5 fallback_to, 6 guess_from_headers, 7
 * envelope_from), byte 1 envelope_skip (mod 3); the rest is the message
 * (fuzz_hdrs.h: with repeats).  Checked: the same decision whatever the
 * chunking; every recipient and the sender safe for libesmtp; at most 100
 * recipients; a multidrop message with no recipient is held. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_hdrs.h"
#include "log.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void feed(void *ctx, const void *p, size_t n)
{
	route_hdrs_feed(ctx, p, n);
}

static void account(struct conf_account *a, uint8_t b0, uint8_t b1)
{
	static const char *const hdrs[] = { "Delivered-To", "X-Original-To", "Envelope-To",
					    "X-Envelope-To", "Received", "Received", "X-Original-To",
					    "Delivered-To" };
	static char *doms[] = { "corp.example", "example.org" };
	static struct conf_map maps[] = { { "boss@corp.example", "anna@corp.example" },
					  { "@example.org", "postmaster@corp.example" } };
	memset(a, 0, sizeof *a);
	a->name = "fuzz";
	a->envelope_header = (char *)hdrs[b0 & 7];
	a->envelope_skip = b1 % 3;
	if (b0 & 8) {
		a->local_domains = doms;
		a->nlocal_domains = 2;
	}
	if (b0 & 16) {
		a->maps = maps;
		a->nmaps = 2;
	}
	a->fallback_to = b0 & 32 ? "fallback@corp.example" : NULL;
	a->guess_from_headers = (b0 & 64) != 0;
	a->envelope_from = b0 & 128 ? "bounces@corp.example" : NULL;
}

static size_t decide(const struct conf_account *a, const uint8_t *d, size_t n, int small,
		     struct route_result *r)
{
	struct route_hdrs *h = route_hdrs_new(a);
	char *err = NULL;
	size_t total = fuzz_expand(d, n, small, feed, h);
	if (route_decide(a, h, r, &err) != PG_OK)
		abort(); /* a valid account always gets a decision */
	route_hdrs_free(&h);
	return total;
}

static int same(const char *x, const char *y)
{
	return (x == NULL && y == NULL) || (x != NULL && y != NULL && strcmp(x, y) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		log_open("fuzz", 1, LOGL_ERR);
		quiet = 1;
	}
	if (size < 2)
		return 0;
	struct conf_account a;
	struct route_result big, small;
	account(&a, data[0], data[1]);
	int twice = decide(&a, data + 2, size - 2, 0, &big) <= FUZZ_SMALL_MAX;
	if (twice)
		decide(&a, data + 2, size - 2, 1, &small);
	if (twice && (!same(big.sender, small.sender) || !same(big.hold_reason, small.hold_reason) ||
		      big.nrcpts != small.nrcpts))
		abort(); /* chunking changed the decision */
	for (size_t i = 0; i < big.nrcpts; i++)
		if ((twice && !same(big.rcpts[i], small.rcpts[i])) || !route_addr_ok(big.rcpts[i]))
			abort();
	if (big.sender == NULL || (big.sender[0] != '\0' && !route_addr_ok(big.sender)))
		abort();
	if (big.nrcpts > 100 || (big.nrcpts == 0 && big.hold_reason == NULL))
		abort();
	route_result_free(&big);
	if (twice)
		route_result_free(&small);
	return 0;
}
