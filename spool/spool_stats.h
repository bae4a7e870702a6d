/*
 * spool_stats.h - counters and queue figures for metrics and status.
 *
 * Contract (same error contract as spool.h):
 *  - spool_counter_add() adds delta to the counter (name, account, reason),
 *    creating it at 0; counters only grow and survive restarts (table
 *    `counters`, migration 005).  account/reason may be NULL for "".
 *  - spool_counter_list() calls cb for every counter, ordered by name,
 *    account, reason; the strings are valid only during the call.
 *  - spool_oldest_unsent() sets *created_r to the commit time of the oldest
 *    message not sent (queued, sending, deferred or held), 0 if none.
 */
#ifndef POPGATE_SPOOL_STATS_H
#define POPGATE_SPOOL_STATS_H

#include <stdint.h>
#include <time.h>

#include "spool.h"

enum spool_res spool_counter_add(struct spool *sp, const char *name, const char *account,
				 const char *reason, uint64_t delta, char **err_r);
typedef int (*spool_counter_cb)(void *ctx, const char *name, const char *account,
				const char *reason, uint64_t value);
enum spool_res spool_counter_list(struct spool *sp, spool_counter_cb cb, void *ctx,
				  char **err_r);
enum spool_res spool_oldest_unsent(struct spool *sp, time_t *created_r, char **err_r);

#endif
