/* fuzz_sender.c - sender selection from what the sender wrote:
 * Return-Path, then Sender, then From (route_decide on a single-drop
 * account), with header collection and unfolding.  Input: the message
 * (fuzz_hdrs.h: with repeats).  Checked: the same sender and hold reason
 * whatever the chunking; the sender is <> or safe for libesmtp, with its
 * domain in lower case; the recipient is the account's. */
#include "config.h"

#include <ctype.h>
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

static size_t decide(const struct conf_account *a, const uint8_t *d, size_t n, int small,
		     struct route_result *r)
{
	struct route_hdrs *h = route_hdrs_new(a);
	char *err = NULL;
	size_t total = fuzz_expand(d, n, small, feed, h);
	if (route_decide(a, h, r, &err) != PG_OK)
		abort();
	route_hdrs_free(&h);
	return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		log_open("fuzz", 1, LOGL_ERR);
		quiet = 1;
	}
	struct conf_account a = { .name = "fuzz", .deliver_to = "local@corp.example" };
	struct route_result big, small;
	int twice = decide(&a, data, size, 0, &big) <= FUZZ_SMALL_MAX;
	if (twice)
		decide(&a, data, size, 1, &small);
	if (twice && (strcmp(big.sender, small.sender) != 0 ||
		      (big.hold_reason == NULL) != (small.hold_reason == NULL) ||
		      (big.hold_reason != NULL && strcmp(big.hold_reason, small.hold_reason) != 0)))
		abort(); /* chunking changed the decision */
	if (big.sender[0] != '\0') {
		if (!route_addr_ok(big.sender))
			abort();
		const char *at = strrchr(big.sender, '@');
		for (const char *p = at ? at : ""; *p; p++)
			if (isupper((unsigned char)*p))
				abort();
	}
	if (big.nrcpts != 1 || strcmp(big.rcpts[0], "local@corp.example") != 0)
		abort();
	route_result_free(&big);
	if (twice)
		route_result_free(&small);
	return 0;
}
