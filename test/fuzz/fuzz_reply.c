/* fuzz_reply.c - the status-line, CAPA, STAT, LIST and UIDL parsers: a
 * session up to pop3_scan() over canned server bytes. */
#include "config.h"

#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct canned c;
	struct pop3_params pp;
	struct pop3 *s = NULL;
	struct pop3_msginfo *list = NULL;
	size_t n = 0;
	char *err = NULL;
	canned_params(&pp, &c, data, size);
	if (pop3_open(&pp, &s, &err) == PG_OK) {
		free(err);
		err = NULL;
		if (pop3_login(s, "u", "p", &err) == PG_OK)
			(void)pop3_scan(s, &list, &n, &err);
	}
	pop3_msginfo_free(&list, n);
	pop3_close(&s);
	free(err);
	return 0;
}
