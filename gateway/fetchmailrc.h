/*
 * fetchmailrc.h - read a fetchmail run control file (.fetchmailrc) and
 * write the equivalent popgate.conf.
 *
 * Contract:
 *  - fmrc_convert() reads the whole rcfile from `in` (at most 1 MiB),
 *    tokenises it the way fetchmail's lexer does (keywords, numbers,
 *    unquoted words; "..." and '...' strings with fetchmail's escapes:
 *    \n \t \b \r, \\, \NNN decimal, \0OOO octal, \xHH hex, backslash-newline
 *    joins; '#' comments; backslash-newline between tokens; the noise
 *    words and/with/has/wants/options and the punctuation , ; :), parses
 *    it with fetchmail's grammar (set statements, defaults, poll/skip
 *    entries, server options, user descriptions and user options) and
 *    writes a popgate.conf to `out`.
 *  - Every keyword without a popgate equivalent is written as a
 *    "NOT CONVERTED" comment where it stood (in the block of each account
 *    it applies to, defaults included; set statements at the top) and,
 *    once, to `diag` as "NAME:LINE: KEYWORD: not converted: WHY".
 *  - Passwords never reach `out`: each account with a password gets
 *    password_file = "SECRETS_DIR/ACCOUNT.pass" (or "ACCOUNT.pass" next to
 *    the configuration without a secrets directory; password_command =
 *    "cat FILE" for xoauth2/oauthbearer tokens) and the password is
 *    returned in r->secrets for the caller to write (an empty one or one
 *    with a line break is reported instead); this module does no file I/O
 *    beyond `in`, `out` and `diag`.
 *  - Returns FMRC_OK when everything was converted, FMRC_PARTIAL when
 *    something was left out (listed on diag), FMRC_SYNTAX on a syntax
 *    error (r->error = "NAME:LINE:COL: ...", nothing written to `out`),
 *    FMRC_IO when `in` cannot be read or is too large.  The values are
 *    the command's exit codes (0, 1, 65, 74).
 *  - The caller frees r with fmrc_result_free() whatever the result.
 */
#ifndef POPGATE_FETCHMAILRC_H
#define POPGATE_FETCHMAILRC_H

#include <stddef.h>
#include <stdio.h>

enum fmrc_status { FMRC_OK = 0, FMRC_PARTIAL = 1, FMRC_SYNTAX = 65, FMRC_IO = 74 };

struct fmrc_opts {
	const char *source;      /* the rcfile's name, for comments and messages */
	const char *secrets_dir; /* where password files go; NULL: next to the config */
	const char *local_user;  /* fetchmail's default local name (the user running it) */
};

struct fmrc_secret {
	char *account; /* the account name; the file is ACCOUNT.pass */
	char *secret;  /* the password (or token) as the rcfile gave it */
};

struct fmrc_result {
	struct fmrc_secret *secrets;
	size_t nsecrets;
	size_t nleft_out; /* keywords reported as not converted */
	char *error;      /* FMRC_SYNTAX / FMRC_IO: what and where */
};

enum fmrc_status fmrc_convert(FILE *in, FILE *out, FILE *diag, const struct fmrc_opts *o,
			      struct fmrc_result *r);
/* fmrc_result_free - free and wipe the secrets, free the error */
void fmrc_result_free(struct fmrc_result *r);

#endif
