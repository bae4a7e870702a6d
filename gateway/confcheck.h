/*
 * confcheck.h - what conf_load() cannot know: whether the files and
 * programs the configuration names will work for the user popgate runs as.
 *
 * Contract:
 *  - confcheck_runtime() checks, as the run-time user (`user =` when
 *    running as root, else the invoking user): that `user` exists; that
 *    every password_file and ca_file can be read; that every
 *    password_command's program exists and can be executed; that
 *    metrics_file's directory exists and can be written.  Each problem is
 *    one line "FILE: option 'NAME' ...: what is wrong; the fix" appended to
 *    *errs_r (errors) or *warns_r (warnings: things that may appear later).
 *    Returns the number of errors.  The caller frees both strings (NULL
 *    when there is nothing to say).
 *  - The access checks run in a child that switches to the user (initgroups,
 *    setgid, setuid), so group membership and ACLs count as at run time;
 *    the caller's privileges never change.
 *  - account: NULL checks everything; else only what that account and the
 *    top level use (test-account).
 */
#ifndef POPGATE_CONFCHECK_H
#define POPGATE_CONFCHECK_H

#include "conf.h"

int confcheck_runtime(const struct conf *c, const struct conf_account *account, char **errs_r,
		      char **warns_r);

#endif
