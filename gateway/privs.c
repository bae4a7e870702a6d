/*
 * privs.c - who works on the spool (see privs.h).
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "log.h"
#include "privs.h"

static uid_t chown_uid;
static gid_t chown_gid;
static int chown_failed;

static int chown_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type == FTW_SL || (sb->st_uid == chown_uid && sb->st_gid == chown_gid))
		return 0;
	if (lchown(p, chown_uid, chown_gid) != 0) {
		LOG_ERR("spool=%s status=chown-failed reason=\"%s\"", p, strerror(errno));
		chown_failed = 1;
	}
	return 0;
}

/* hand_over - the spool tree (if any) to the user */
static int hand_over(const struct conf *c, const struct passwd *pw)
{
	struct stat st;
	chown_uid = pw->pw_uid;
	chown_gid = pw->pw_gid;
	chown_failed = 0;
	if (lstat(c->spool_dir, &st) != 0 && errno == ENOENT)
		return 0;
	if (nftw(c->spool_dir, chown_one, 16, FTW_PHYS) != 0 || chown_failed) {
		LOG_ERR("spool=%s status=failed reason=\"cannot hand the spool to user %s\"",
			c->spool_dir, pw->pw_name);
		return -1;
	}
	return 0;
}

int privs_become(const struct passwd *pw)
{
	if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0)
		return -1;
	return 0;
}

int privs_drop(const struct conf *c, const struct passwd *pw)
{
	if (hand_over(c, pw) != 0)
		return -1;
	if (privs_become(pw) != 0) {
		LOG_ERR("user=%s status=failed reason=\"cannot drop privileges: %s\"", pw->pw_name,
			strerror(errno));
		return -1;
	}
	if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid || getgid() != pw->pw_gid ||
	    getegid() != pw->pw_gid || (pw->pw_uid != 0 && setuid(0) == 0)) {
		LOG_ERR("user=%s status=failed reason=\"privileges did not drop\"", pw->pw_name);
		return -1;
	}
	LOG_DEBUG("user=%s uid=%ld gid=%ld status=dropped", pw->pw_name, (long)pw->pw_uid,
		  (long)pw->pw_gid);
	return 0;
}

int privs_spool_exists(const char *spool_dir)
{
	char *p = xasprintf("%s/index.db", spool_dir);
	struct stat st;
	int ok = stat(p, &st) == 0;
	free(p);
	return ok;
}

/* not_root - a spool directory this user cannot write is refused with
 * its owner named (sqlite would say "unable to open database file") */
static int not_root(const struct conf *c)
{
	struct stat st;
	if (stat(c->spool_dir, &st) != 0 || access(c->spool_dir, W_OK | X_OK) == 0)
		return EX_OK;
	struct passwd *o = getpwuid(st.st_uid);
	fprintf(stderr, "popgate: spool %s belongs to %s%s%ld%s and this user (uid %ld) cannot "
		"write it: run popgate as that user (sudo -u %s popgate ...) or as root with "
		"user = \"%s\" in %s\n", c->spool_dir, o ? o->pw_name : "uid ", o ? " (uid " : "",
		(long)st.st_uid, o ? ")" : "", (long)geteuid(), o ? o->pw_name : "OWNER",
		o ? o->pw_name : "OWNER", c->path);
	return EX_NOPERM;
}

int privs_for_spool(const struct conf *c, int create)
{
	if (geteuid() != 0)
		return not_root(c);
	if (c->user == NULL)
		return EX_OK;
	struct passwd *pw = getpwnam(c->user);
	if (pw == NULL) {
		fprintf(stderr, "popgate: no such user '%s' (option 'user' in %s): create it "
			"(useradd --system %s) or fix the option\n", c->user, c->path, c->user);
		return EX_NOUSER;
	}
	if (create && mkdir(c->spool_dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "popgate: cannot create spool directory %s: %s\n", c->spool_dir,
			strerror(errno));
		return EX_CANTCREAT;
	}
	if (privs_drop(c, pw) != 0) {
		fprintf(stderr, "popgate: cannot work on spool %s as user %s (see the log above)\n",
			c->spool_dir, c->user);
		return EX_NOPERM;
	}
	return EX_OK;
}
