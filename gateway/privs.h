/*
 * privs.h - who works on the spool.  Every command started as root with
 * `user =` set works on the spool as that user, so no file in it is ever
 * left owned by root where the daemon cannot use it.
 *
 * Contract:
 *  - privs_for_spool(): as root with `user =`: the spool tree is handed to
 *    the user (created 0700 first when `create` and missing), then the
 *    process drops to the user for good.  As root without `user =`: nothing.
 *    As another user: refuses a spool directory it cannot write, naming the
 *    owner and the fix.  Returns a sysexits code and prints why on failure.
 *  - privs_drop(): the daemon's drop (the spool tree chowned, initgroups,
 *    setgid, setuid, checked); 0 or -1 with the reason logged.
 *  - privs_spool_exists(): the spool has an index (index.db).
 */
#ifndef POPGATE_PRIVS_H
#define POPGATE_PRIVS_H

#include <pwd.h>

#include "conf.h"

int privs_for_spool(const struct conf *c, int create);
int privs_drop(const struct conf *c, const struct passwd *pw);
/* privs_become - initgroups, setgid, setuid to pw (no checks, no spool):
 * 0, or -1 with errno */
int privs_become(const struct passwd *pw);
int privs_spool_exists(const char *spool_dir);

#endif
