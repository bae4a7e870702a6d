/* fuzz_multiline.c - the line reader (a small buffer, so long lines are
 * cut into pieces) feeding the message filter, as RETR does. */
#include "config.h"

#include <stdlib.h>

#include "fuzz_common.h"
#include "linereader.h"
#include "msgfilter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct canned c = { .p = data, .len = size };
	struct linereader *lr = lr_new(size > 0 ? 16 + data[0] : 64, canned_read, &c);
	struct msgfilter *mf = mf_new(discard_sink, NULL);
	char *err = NULL;
	int done = 0;
	while (!done) {
		const char *p;
		size_t n;
		int complete;
		if (lr_read(lr, &p, &n, &complete, &err) != PG_OK)
			break;
		if (n == 0 || n > 16 + 255)
			abort(); /* the reader must never hand out more than its buffer */
		if (mf_feed(mf, p, n, complete, &done, &err) != PG_OK)
			break;
	}
	if (!done)
		(void)mf_finish(mf, &err);
	(void)mf_return_path(mf);
	free(err);
	mf_free(&mf);
	lr_free(&lr);
	return 0;
}
