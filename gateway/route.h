/*
 * route.h - decides a fetched message's envelope, once, at ingest.
 *
 * Contract:
 *  - A struct route_hdrs is fed the message's canonical bytes as they are
 *    written to the spool (any chunking) and keeps, bounded, the header
 *    fields routing needs (Return-Path, Sender, From, the account's
 *    envelope header, Received, To/Cc for guess_from_headers).  It stops
 *    collecting at the end of the header block; memory never grows with the
 *    message.
 *  - route_decide() ends the input (route_hdrs_end) and applies the account's rules (single-drop deliver_to, or
 *    multidrop: envelope_header, envelope_skip, local_domains, map,
 *    fallback_to, guess_from_headers; envelope_from or Return-Path and the
 *    usual fallbacks for the sender) and fills a struct route_result.  When
 *    no safe recipient exists, or an address is unusable (CR, LF, NUL, angle
 *    brackets, controls, more than 254 octets), hold_reason says why and the
 *    message is committed `held`: never guessed, never dropped.
 *  - Results are owned by the caller: route_result_free().
 */
#ifndef POPGATE_ROUTE_H
#define POPGATE_ROUTE_H

#include <stddef.h>

#include "conf.h"
#include "util.h"

struct route_hdrs;

struct route_result {
	char *sender;       /* "" for <> */
	char **rcpts;
	size_t nrcpts;
	char *hold_reason;  /* NULL, or why the message must be held */
};

struct route_hdrs *route_hdrs_new(const struct conf_account *a);
/* route_hdrs_feed - the canonical message bytes, in order, any chunking */
void route_hdrs_feed(struct route_hdrs *h, const void *data, size_t len);
/* route_hdrs_end - the input is over: a last line without its line end, and
 * the last field of a header block without an empty line (a message with no
 * body), are complete.  Later feeding is ignored.  route_decide() calls it,
 * so the poller and `popgate route` end their input the same way. */
void route_hdrs_end(struct route_hdrs *h);
void route_hdrs_free(struct route_hdrs **h);

enum pg_res route_decide(const struct conf_account *a, struct route_hdrs *h,
			 struct route_result *r, char **err_r);
void route_result_free(struct route_result *r);

/* route_addr_ok - an address safe to hand to the SMTP library */
int route_addr_ok(const char *addr);

#endif
