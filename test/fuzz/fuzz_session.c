/* fuzz_session.c - a whole POP3 session driven by canned server bytes:
 * greeting, CAPA, AUTH (auto: SASL exchanges, APOP, USER), scan, pipelined
 * RETR and DELE, QUIT. */
#include "config.h"

#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void transaction(struct pop3 *s, char **err)
{
	struct pop3_msginfo *list = NULL;
	size_t n = 0;
	if (pop3_scan(s, &list, &n, err) != PG_OK)
		return;
	struct msgfilter *mf = mf_new(discard_sink, NULL);
	size_t sent = 0, read = 0;
	while (read < n && !pop3_failed(s)) {
		while (sent < n && pop3_outstanding(s) < pop3_window(s) &&
		       pop3_queue(s, sent % 3 == 2 ? P3C_DELE : P3C_RETR, list[sent].num, err) == PG_OK)
			sent++;
		enum pg_res r = pop3_next(s, NULL) == P3C_DELE
			? pop3_read_dele(s, err)
			: pop3_read_retr(s, mf, list[read].size, NULL, err);
		read++;
		free(*err);
		*err = NULL;
		if (r != PG_OK && pop3_failed(s))
			break;
		mf_free(&mf);
		mf = mf_new(discard_sink, NULL);
	}
	mf_free(&mf);
	pop3_msginfo_free(&list, n);
	if (!pop3_failed(s) && pop3_outstanding(s) == 0)
		(void)pop3_quit(s, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct canned c;
	struct pop3_params pp;
	struct pop3 *s = NULL;
	char *err = NULL;
	canned_params(&pp, &c, data, size);
	if (pop3_open(&pp, &s, &err) == PG_OK) {
		free(err);
		err = NULL;
		if (pop3_auth(s, AUTH_AUTO, "user", "pencil", NULL, &err) == PG_OK)
			transaction(s, &err);
	}
	pop3_close(&s);
	free(err);
	return 0;
}
