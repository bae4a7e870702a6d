/*
 * dedupe.h - the content keys that recognise a message fetched before
 * under another UIDL (dedupe = exact | message; the lookup is the spool's).
 *
 * Contract:
 *  - Fed the canonical message bytes (msgfilter's output: every line ends
 *    in CRLF, so a server's LF or CRLF gives the same keys), any chunking,
 *    from the first octet the server sent: popgate's own Received line is
 *    written to the spool before and is never fed here.
 *  - dedupe_end() fills a struct spool_dedupe: exact = sha256 of all the
 *    octets; msgkey = sha256 of the first Message-ID field's value (folding
 *    and white space removed) and the body (the octets after the empty line
 *    that ends the header); has_msgkey = 0 when there is no Message-ID (or
 *    it is empty or longer than 998 octets): mode message then falls back
 *    to exact.
 *  - Memory is fixed (one bounded field buffer); dedupe_reset() starts the
 *    next message with the same object.  Allocation aborts on failure.
 */
#ifndef POPGATE_DEDUPE_H
#define POPGATE_DEDUPE_H

#include <stddef.h>

#include "spool.h"

struct dedupe_keys;

struct dedupe_keys *dedupe_new(void);
void dedupe_reset(struct dedupe_keys *k);
void dedupe_feed(struct dedupe_keys *k, const void *data, size_t len);
/* dedupe_end - the keys of the message fed since the last reset into d
 * (mode, since and dup_of_r are left alone) */
void dedupe_end(struct dedupe_keys *k, struct spool_dedupe *d);
void dedupe_free(struct dedupe_keys **k);

#endif
