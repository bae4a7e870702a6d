/*
 * spool_batch.h - what the relay asks the spool before a round.
 *
 * Contract: same error contract as spool.h (enum spool_res; *err_r is set
 * on failure and the caller frees it).  Read-only; no transaction is left
 * open.
 */
#ifndef POPGATE_SPOOL_BATCH_H
#define POPGATE_SPOOL_BATCH_H

#include <stddef.h>
#include <time.h>

#include "spool.h"

/* spool_due_count - how many messages spool_claim_due would find due at
 * now, counted up to max (so a large queue costs no more than max index
 * entries): the relay opens no more sessions than there is mail for */
enum spool_res spool_due_count(struct spool *sp, time_t now, size_t max, size_t *n_r,
			       char **err_r);

#endif
