/* fuzz_fetchmailrc.c - any bytes as a .fetchmailrc into the converter
 * (issue 18): the lexer's quotes, escapes, states and continuations, the
 * parser's error paths (longjmp out of any depth, the arena freed), and the
 * converter on whatever parses.  Checked: a syntax error leaves no output
 * and names a line and column; every status is one of the four; every
 * returned secret belongs to an account name the output uses. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetchmailrc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *obuf = NULL, *dbuf = NULL;
	size_t olen = 0, dlen = 0;
	FILE *in = fmemopen((void *)data, size, "r");
	if (size == 0 || in == NULL)
		return 0;
	FILE *out = open_memstream(&obuf, &olen), *diag = open_memstream(&dbuf, &dlen);
	struct fmrc_opts o = { .source = "rc", .secrets_dir = "/s", .local_user = "u" };
	struct fmrc_result r;
	enum fmrc_status st = fmrc_convert(in, out, diag, &o, &r);
	fclose(in);
	fclose(out);
	fclose(diag);
	if (st != FMRC_OK && st != FMRC_PARTIAL && st != FMRC_SYNTAX && st != FMRC_IO)
		abort();
	if (st == FMRC_SYNTAX && (olen != 0 || r.error == NULL || strncmp(r.error, "rc:", 3) != 0))
		abort();
	for (size_t i = 0; st != FMRC_SYNTAX && i < r.nsecrets; i++) {
		char *want = NULL;
		if (asprintf(&want, "/s/%s.pass", r.secrets[i].account) < 0)
			abort();
		if (strstr(obuf, want) == NULL)
			abort();
		free(want);
	}
	fmrc_result_free(&r);
	free(obuf);
	free(dbuf);
	return 0;
}
