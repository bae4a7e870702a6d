#include "config.h"

/*
 * check_spool.c - unit tests of the spool library (spool.h).
 *
 * Every test runs in a fresh mkdtemp() directory that is removed afterwards.
 * Outcomes are checked where they live: the bytes in msg/, the rows in
 * index.db (read with sqlite3 directly), the files left in tmp/ and msg/.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "spool.h"
#include "spool_int.h"

/* sha256 of MSG1 and of the 5 MiB pattern, computed with sha256sum */
#define MSG1 "Received: from pop.example by popgate; test\r\nSubject: hi\r\n\r\nbody line\r\n"
#define MSG1_SHA256 "bb9dfbac6dec0feac8737ecf11470469711518f9d134a3c33e9551fd709516a4"
#define BIG_SIZE (5u * 1024 * 1024)
#define BIG_SHA256 "16b632f11cf950dda67dc4c184a3f9e0aa1ffa4c18927bb8977e7da97ca25bca"

static char tdir[64];

/* ---- fixture and helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/check_spool.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
}

static void teardown(void)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tpath(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *tpath(const char *fmt, ...)
{
	static char buf[4][512];
	static int slot;
	char *p = buf[slot++ % 4];
	int n = snprintf(p, sizeof buf[0], "%s/", tdir);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p + n, sizeof buf[0] - (size_t)n, fmt, ap);
	va_end(ap);
	return p;
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static unsigned int count_entries(const char *sub)
{
	unsigned int n = 0;
	struct dirent *de;
	DIR *d = opendir(tpath("%s", sub));

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void write_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* read_file - whole file, malloc'd; *len_r its size */
static char *read_file(const char *path, size_t *len_r)
{
	struct stat st;
	char *buf;
	FILE *f = fopen(path, "rb");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fstat(fileno(f), &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	*len_r = fread(buf, 1, (size_t)st.st_size, f);
	buf[*len_r] = '\0';
	fclose(f);
	return buf;
}

/* db_text - first column of the first row of a query (%Q quotes), malloc'd */
static char *db_text(const char *fmt, ...)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *sql, *out = NULL;
	va_list ap;

	va_start(ap, fmt);
	sql = sqlite3_vmprintf(fmt, ap);
	va_end(ap);
	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
		      sqlite3_errmsg(db));
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
		out = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	sqlite3_free(sql);
	return out;
}

static long long db_int(const char *sql_fmt, const char *arg)
{
	char *s = db_text(sql_fmt, arg);
	long long v = s ? atoll(s) : -1;

	free(s);
	return v;
}

static void db_exec(const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err);
	sqlite3_close(db);
}

static void row_str_eq(const char *col, const char *id, const char *want)
{
	char *got = db_text("SELECT %s FROM messages WHERE id = %Q", col, id);

	ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s of %s: got %s, want %s", col,
		      id, got ? got : "NULL", want);
	free(got);
}

static struct spool *open_ok(void)
{
	struct spool *sp = NULL;
	char *err = NULL;
	enum spool_res r = spool_open(tdir, &sp, &err);

	ck_assert_msg(r == SPOOL_OK, "spool_open: %s", err ? err : "?");
	return sp;
}

struct commits {
	unsigned int n;
	char id[16][SPOOL_ID_LEN + 1];
	char uidl[16][32];
	enum spool_res res[16];
};

static void commit_cb(void *ctx, const char *account, const char *uidl, const char *id,
		      enum spool_res res)
{
	struct commits *c = ctx;

	ck_assert_uint_lt(c->n, 16);
	snprintf(c->id[c->n], sizeof c->id[0], "%s", id);
	snprintf(c->uidl[c->n], sizeof c->uidl[0], "%s", uidl);
	c->res[c->n++] = res;
}

/* ingest - begin, write content, finish with sender/rcpts; id into id_r */
static void ingest(struct spool *sp, const char *account, const char *uidl, const char *content,
		   const char *sender, const char *const *rcpts, size_t nrcpts, char *id_r)
{
	struct spool_envelope env = { sender, rcpts, nrcpts, NULL };
	struct spool_writer *w = NULL;
	char *err = NULL;

	ck_assert_int_eq(spool_writer_begin(sp, account, uidl, &w, &err), SPOOL_OK);
	snprintf(id_r, SPOOL_ID_LEN + 1, "%s", spool_writer_id(w));
	ck_assert_int_eq(spool_writer_write(w, content, strlen(content), &err), SPOOL_OK);
	ck_assert_msg(spool_writer_finish(&w, &env, &err) == SPOOL_OK, "finish: %s", err);
	ck_assert_ptr_null(w);
}

static void commit_ok(struct spool *sp, struct commits *c)
{
	char *err = NULL;

	ck_assert_msg(spool_commit(sp, commit_cb, c, &err) == SPOOL_OK, "commit: %s", err);
	ck_assert_uint_eq(spool_pending(sp), 0);
}

/* one_msg - ingest and commit one message with a single recipient */
static void one_msg(struct spool *sp, const char *uidl, const char *rcpt, char *id_r)
{
	const char *rcpts[] = { rcpt };
	struct commits c = { 0 };

	ingest(sp, "acct", uidl, MSG1, "from@example.org", rcpts, 1, id_r);
	commit_ok(sp, &c);
	ck_assert_uint_eq(c.n, 1);
	ck_assert_int_eq(c.res[0], SPOOL_OK);
}

static void claim(struct spool *sp, time_t now, size_t max, struct spool_msg ***msgs_r,
		  size_t *n_r)
{
	char *err = NULL;

	ck_assert_msg(spool_claim_due(sp, now, max, msgs_r, n_r, &err) == SPOOL_OK, "claim: %s",
		      err);
}

static void finish1(struct spool *sp, struct spool_msg *m, enum spool_state st,
		    const char *reply, time_t next)
{
	struct spool_outcome o = { m, st, reply, next };
	char *err = NULL;

	ck_assert_msg(spool_finish_attempts(sp, &o, 1, &err) == SPOOL_OK, "finish: %s", err);
}

/* ---- open and schema ---- */

/* newest_schema - the last migration's number: every open applies up to it */
static unsigned int newest_schema(void)
{
	return spool_migrations[spool_nmigrations - 1].version;
}

START_TEST(test_open_creates_tree)
{
	struct spool *sp = open_ok();
	struct stat st;

	ck_assert_int_eq(stat(tpath("tmp"), &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	ck_assert_int_eq(stat(tpath("msg"), &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	ck_assert(exists(tpath("index.db")));
	ck_assert_str_eq(spool_dir(sp), tdir);
	ck_assert_int_eq(db_int("PRAGMA user_version", NULL), (int)newest_schema());
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM messages", NULL), 0);
	spool_close(&sp);
	ck_assert_ptr_null(sp);
	/* a second open finds everything in place and migrates nothing */
	sp = open_ok();
	ck_assert_int_eq(db_int("PRAGMA user_version", NULL), (int)newest_schema());
	spool_close(&sp);
}
END_TEST

START_TEST(test_open_relative_and_missing_root)
{
	struct spool *sp = NULL;
	char *err = NULL, cwd[512];

	/* a root inside a missing parent names the path it could not create */
	ck_assert_int_eq(spool_open(tpath("no/such/dir"), &sp, &err), SPOOL_IO);
	ck_assert_ptr_null(sp);
	ck_assert_ptr_nonnull(strstr(err, "no/such/dir"));
	free(err);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(tdir), 0);
	ck_assert_int_eq(spool_open("rel", &sp, &err), SPOOL_OK);
	ck_assert_int_eq(chdir(cwd), 0);
	ck_assert_str_eq(spool_dir(sp), tpath("rel"));
	spool_close(&sp);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
	struct spool *sp = open_ok();
	char *err = NULL;

	spool_close(&sp);
	db_exec("PRAGMA user_version = 99");
	ck_assert_int_eq(spool_open(tdir, &sp, &err), SPOOL_IO);
	ck_assert_ptr_null(sp);
	char knows[64];
	snprintf(knows, sizeof knows, "knows up to %u", newest_schema());
	ck_assert_msg(strstr(err, "schema version 99") && strstr(err, knows), "%s", err);
	free(err);
	ck_assert_int_eq(db_int("PRAGMA user_version", NULL), 99);
}
END_TEST

START_TEST(test_names)
{
	enum spool_state st;

	ck_assert_str_eq(spool_state_name(SPOOL_QUEUED), "queued");
	ck_assert_str_eq(spool_state_name(SPOOL_SENDING), "sending");
	ck_assert_str_eq(spool_state_name(SPOOL_SENT), "sent");
	ck_assert_str_eq(spool_state_name(SPOOL_DEFERRED), "deferred");
	ck_assert_str_eq(spool_state_name(SPOOL_HELD), "held");
	ck_assert_int_eq(spool_state_parse("held", &st), 0);
	ck_assert_int_eq(st, SPOOL_HELD);
	ck_assert_int_eq(spool_state_parse("lost", &st), -1);
	ck_assert_str_eq(spool_res_name(SPOOL_OK), "ok");
	ck_assert_str_eq(spool_res_name(SPOOL_BUSY), "busy");
	ck_assert_str_eq(spool_res_name(SPOOL_FULL), "full");
	ck_assert_str_eq(spool_res_name(SPOOL_IO), "io");
	ck_assert_str_eq(spool_res_name(SPOOL_DUP), "duplicate");
	ck_assert_str_eq(spool_res_name(SPOOL_NOTFOUND), "not found");
	ck_assert_str_eq(spool_res_name(SPOOL_INVAL), "invalid");
}
END_TEST

/* ---- ingest ---- */

START_TEST(test_roundtrip)
{
	const char *rcpts[] = { "a@local.example", "b@local.example" };
	struct spool *sp = open_ok();
	struct commits c = { 0 };
	char id[SPOOL_ID_LEN + 1], *err = NULL, *body;
	size_t len;
	int known = -1;

	ck_assert_int_eq(spool_uidl_known(sp, "acct", "U1", &known, &err), SPOOL_OK);
	ck_assert_int_eq(known, 0);
	ingest(sp, "acct", "U1", MSG1, "", rcpts, 2, id);
	ck_assert_uint_eq(strspn(id, "0123456789ABCDEF"), SPOOL_ID_LEN);
	ck_assert_uint_eq(spool_pending(sp), 1);
	/* finished but not committed: in msg/, no row, not known */
	ck_assert(exists(tpath("msg/%s", id)));
	ck_assert_uint_eq(count_entries("tmp"), 0);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM messages", NULL), 0);
	commit_ok(sp, &c);
	ck_assert_uint_eq(c.n, 1);
	ck_assert_str_eq(c.id[0], id);
	ck_assert_str_eq(c.uidl[0], "U1");
	ck_assert_int_eq(c.res[0], SPOOL_OK);
	body = read_file(tpath("msg/%s", id), &len);
	ck_assert_uint_eq(len, strlen(MSG1));
	ck_assert_int_eq(memcmp(body, MSG1, len), 0);
	free(body);
	row_str_eq("size", id, "71");
	row_str_eq("digest", id, MSG1_SHA256);
	row_str_eq("sender", id, "");
	row_str_eq("account", id, "acct");
	row_str_eq("uidl", id, "U1");
	row_str_eq("state", id, "queued");
	row_str_eq("attempts", id, "0");
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE msg_id = %Q "
				"AND state = 'queued' AND addr IN ('a@local.example', "
				"'b@local.example')", id), 2);
	ck_assert_int_eq(spool_uidl_known(sp, "acct", "U1", &known, &err), SPOOL_OK);
	ck_assert_int_eq(known, 1);
	ck_assert_int_eq(spool_uidl_known(sp, "other", "U1", &known, &err), SPOOL_OK);
	ck_assert_int_eq(known, 0);
	spool_close(&sp);
}
END_TEST

START_TEST(test_group_commit_and_duplicate)
{
	const char *rcpts[] = { "a@local.example" };
	struct spool *sp = open_ok();
	struct commits c = { 0 };
	char id1[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1], id3[SPOOL_ID_LEN + 1];

	ingest(sp, "acct", "U1", MSG1, "s@x", rcpts, 1, id1);
	commit_ok(sp, &c);
	/* same (account, uidl) again, next to a new message in one group */
	ingest(sp, "acct", "U1", "other content\r\n", "s@x", rcpts, 1, id2);
	ingest(sp, "acct", "U2", MSG1, "s@x", rcpts, 1, id3);
	ck_assert_uint_eq(spool_pending(sp), 2);
	memset(&c, 0, sizeof c);
	commit_ok(sp, &c);
	ck_assert_uint_eq(c.n, 2);
	ck_assert_str_eq(c.id[0], id2);
	ck_assert_int_eq(c.res[0], SPOOL_DUP);
	ck_assert_str_eq(c.id[1], id3);
	ck_assert_int_eq(c.res[1], SPOOL_OK);
	ck_assert(!exists(tpath("msg/%s", id2)));
	ck_assert(exists(tpath("msg/%s", id1)));
	ck_assert(exists(tpath("msg/%s", id3)));
	row_str_eq("digest", id1, MSG1_SHA256);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM messages WHERE id = %Q", id2), 0);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM messages", NULL), 2);
	/* nothing pending: a no-op */
	memset(&c, 0, sizeof c);
	commit_ok(sp, &c);
	ck_assert_uint_eq(c.n, 0);
	spool_close(&sp);
}
END_TEST

START_TEST(test_abort_and_bad_envelope)
{
	struct spool_envelope noenv = { "s@x", NULL, 0, NULL };
	struct spool *sp = open_ok();
	struct spool_writer *w = NULL;
	char *err = NULL;

	ck_assert_int_eq(spool_writer_begin(sp, "acct", "U1", &w, &err), SPOOL_OK);
	ck_assert_int_eq(spool_writer_write(w, "abc", 3, &err), SPOOL_OK);
	ck_assert(exists(tpath("tmp/%s", spool_writer_id(w))));
	spool_writer_abort(&w);
	ck_assert_ptr_null(w);
	ck_assert_uint_eq(count_entries("tmp"), 0);
	ck_assert_uint_eq(spool_pending(sp), 0);
	/* a finish that fails removes the temp file and frees the writer */
	ck_assert_int_eq(spool_writer_begin(sp, "acct", "U1", &w, &err), SPOOL_OK);
	ck_assert_int_eq(spool_writer_finish(&w, &noenv, &err), SPOOL_INVAL);
	ck_assert_ptr_null(w);
	ck_assert_ptr_nonnull(err);
	free(err);
	ck_assert_uint_eq(count_entries("tmp"), 0);
	ck_assert_uint_eq(count_entries("msg"), 0);
	ck_assert_uint_eq(spool_pending(sp), 0);
	spool_close(&sp);
}
END_TEST

START_TEST(test_large_write)
{
	const char *rcpts[] = { "a@local.example" };
	struct spool_envelope env = { "s@x", rcpts, 1, NULL };
	struct spool *sp = open_ok();
	struct spool_writer *w = NULL;
	struct commits c = { 0 };
	char id[SPOOL_ID_LEN + 1], *err = NULL, *body;
	unsigned char *big = malloc(BIG_SIZE);
	size_t off, len;

	ck_assert_ptr_nonnull(big);
	for (size_t i = 0; i < BIG_SIZE; i++)
		big[i] = (unsigned char)(i % 251);
	ck_assert_int_eq(spool_writer_begin(sp, "acct", "BIG", &w, &err), SPOOL_OK);
	snprintf(id, sizeof id, "%s", spool_writer_id(w));
	/* odd-sized pieces cross the writer's buffer boundary at every offset */
	for (off = 0; off < BIG_SIZE; off += len) {
		len = BIG_SIZE - off < 997 ? BIG_SIZE - off : 997;
		ck_assert_int_eq(spool_writer_write(w, big + off, len, &err), SPOOL_OK);
	}
	ck_assert_int_eq(spool_writer_finish(&w, &env, &err), SPOOL_OK);
	commit_ok(sp, &c);
	body = read_file(tpath("msg/%s", id), &len);
	ck_assert_uint_eq(len, BIG_SIZE);
	ck_assert_int_eq(memcmp(body, big, BIG_SIZE), 0);
	row_str_eq("size", id, "5242880");
	row_str_eq("digest", id, BIG_SHA256);
	free(body);
	free(big);
	spool_close(&sp);
}
END_TEST

START_TEST(test_commit_busy)
{
	const char *rcpts[] = { "a@local.example" };
	struct spool *sp = open_ok();
	struct commits c = { 0 };
	char id[SPOOL_ID_LEN + 1], *err = NULL;
	sqlite3 *other = NULL;
	int known = 1;

	ingest(sp, "acct", "U1", MSG1, "s@x", rcpts, 1, id);
	/* another writer holds the index past the busy timeout */
	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &other), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_BUSY);
	ck_assert_msg(strstr(err, "index.db: ") && strstr(err, "locked"), "%s", err);
	free(err);
	/* nothing committed: no callback, nothing pending, the file is gone */
	ck_assert_uint_eq(c.n, 0);
	ck_assert_uint_eq(spool_pending(sp), 0);
	ck_assert(!exists(tpath("msg/%s", id)));
	ck_assert_int_eq(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	ck_assert_int_eq(spool_uidl_known(sp, "acct", "U1", &known, &err), SPOOL_OK);
	ck_assert_int_eq(known, 0);
	spool_close(&sp);
}
END_TEST

/* ---- relay transitions ---- */

START_TEST(test_claim_and_sent)
{
	struct spool *sp = open_ok();
	struct spool_msg **msgs = NULL;
	char id[SPOOL_ID_LEN + 1], *err = NULL;
	time_t now = time(NULL), due = -1;
	size_t n = 0;

	one_msg(sp, "U1", "a@local.example", id);
	ck_assert_int_eq(spool_next_due(sp, &due, &err), SPOOL_OK);
	ck_assert(due > 0 && due <= time(NULL));
	claim(sp, now, 10, &msgs, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(msgs[0]->id, id);
	ck_assert_str_eq(msgs[0]->path, tpath("msg/%s", id));
	ck_assert_str_eq(msgs[0]->sender, "from@example.org");
	ck_assert_str_eq(msgs[0]->digest, MSG1_SHA256);
	ck_assert_uint_eq(msgs[0]->size, strlen(MSG1));
	ck_assert_int_eq(msgs[0]->state, SPOOL_SENDING);
	ck_assert_int_eq(msgs[0]->attempts, 1);
	ck_assert_uint_eq(msgs[0]->nrcpts, 1);
	ck_assert_str_eq(msgs[0]->rcpts[0].addr, "a@local.example");
	row_str_eq("state", id, "sending");
	row_str_eq("attempts", id, "1");
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE msg_id = %Q "
				"AND state = 'sending'", id), 1);
	/* a claimed message is not claimed twice, and not due */
	{
		struct spool_msg **again = NULL;
		size_t n2 = 9;

		claim(sp, now, 10, &again, &n2);
		ck_assert_uint_eq(n2, 0);
		ck_assert_int_eq(spool_next_due(sp, &due, &err), SPOOL_OK);
		ck_assert_int_eq(due, 0);
	}
	msgs[0]->rcpts[0].state = SPOOL_SENT;
	finish1(sp, msgs[0], SPOOL_SENT, "250 2.0.0 Ok: queued as X", 0);
	ck_assert_int_eq(msgs[0]->state, SPOOL_SENT);
	ck_assert(!exists(tpath("msg/%s", id)));
	row_str_eq("state", id, "sent");
	row_str_eq("last_reply", id, "250 2.0.0 Ok: queued as X");
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE msg_id = %Q "
				"AND state = 'sent'", id), 1);
	spool_msgs_free(&msgs, n);
	ck_assert_ptr_null(msgs);
	claim(sp, now + 100000, 10, &msgs, &n);
	ck_assert_uint_eq(n, 0);
	/* a sent message still blocks its UIDL (invariant 2) */
	{
		int known = 0;

		ck_assert_int_eq(spool_uidl_known(sp, "acct", "U1", &known, &err), SPOOL_OK);
		ck_assert_int_eq(known, 1);
	}
	spool_close(&sp);
}
END_TEST

START_TEST(test_deferred_and_held)
{
	struct spool *sp = open_ok();
	struct spool_msg **msgs = NULL;
	char id1[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1], *err = NULL;
	time_t now = time(NULL), due = 0;
	size_t n = 0;

	one_msg(sp, "U1", "a@local.example", id1);
	one_msg(sp, "U2", "b@local.example", id2);
	claim(sp, now, 10, &msgs, &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(msgs[0]->id, id1); /* oldest first */
	{
		struct spool_outcome outs[2] = {
			{ msgs[0], SPOOL_DEFERRED, "451 4.3.0 try later", now + 600 },
			{ msgs[1], SPOOL_HELD, "550 5.1.1 no such user", 0 },
		};

		msgs[0]->rcpts[0].state = SPOOL_DEFERRED;
		msgs[1]->rcpts[0].state = SPOOL_HELD;
		ck_assert_int_eq(spool_finish_attempts(sp, outs, 2, &err), SPOOL_OK);
	}
	spool_msgs_free(&msgs, n);
	row_str_eq("state", id1, "deferred");
	row_str_eq("state", id2, "held");
	row_str_eq("last_reply", id2, "550 5.1.1 no such user");
	ck_assert(exists(tpath("msg/%s", id1)));
	ck_assert(exists(tpath("msg/%s", id2)));
	ck_assert_int_eq(spool_next_due(sp, &due, &err), SPOOL_OK);
	ck_assert_int_eq(due, now + 600);
	/* not due yet */
	claim(sp, now + 599, 10, &msgs, &n);
	ck_assert_uint_eq(n, 0);
	/* due: only the deferred one; held stays held */
	claim(sp, now + 600, 10, &msgs, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(msgs[0]->id, id1);
	ck_assert_int_eq(msgs[0]->attempts, 2);
	spool_msgs_free(&msgs, n);
	row_str_eq("state", id2, "held");
	claim(sp, now + 1000000, 10, &msgs, &n);
	ck_assert_uint_eq(n, 0);
	spool_close(&sp);
}
END_TEST

/* a message routing could not place is committed held with the reason,
 * even with no recipient, and the relay never claims it */
START_TEST(test_hold_at_ingest)
{
	struct spool *sp = open_ok();
	struct spool_envelope env = { "s@x", NULL, 0, "no recipient found in Delivered-To" };
	struct spool_writer *w = NULL;
	struct spool_msg **msgs = NULL;
	struct commits c = { 0 };
	char id[SPOOL_ID_LEN + 1], *err = NULL;
	size_t n = 0;

	ck_assert_int_eq(spool_writer_begin(sp, "acct", "H1", &w, &err), SPOOL_OK);
	snprintf(id, sizeof id, "%s", spool_writer_id(w));
	ck_assert_int_eq(spool_writer_write(w, MSG1, strlen(MSG1), &err), SPOOL_OK);
	ck_assert_msg(spool_writer_finish(&w, &env, &err) == SPOOL_OK, "finish: %s", err);
	commit_ok(sp, &c);
	ck_assert_int_eq(c.res[0], SPOOL_OK);
	row_str_eq("state", id, "held");
	row_str_eq("last_reply", id, "no recipient found in Delivered-To");
	ck_assert(exists(tpath("msg/%s", id)));
	claim(sp, time(NULL) + 1000000, 10, &msgs, &n);
	ck_assert_uint_eq(n, 0);
	spool_close(&sp);
}
END_TEST

START_TEST(test_mixed_recipients)
{
	const char *rcpts[] = { "a@local.example", "b@local.example" };
	struct spool *sp = open_ok();
	struct spool_msg **msgs = NULL;
	struct commits c = { 0 };
	char id[SPOOL_ID_LEN + 1];
	time_t now = time(NULL);
	size_t n = 0;

	ingest(sp, "acct", "U1", MSG1, "s@x", rcpts, 2, id);
	commit_ok(sp, &c);
	claim(sp, now, 10, &msgs, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(msgs[0]->nrcpts, 2);
	ck_assert_str_eq(msgs[0]->rcpts[0].addr, "a@local.example");
	msgs[0]->rcpts[0].state = SPOOL_SENT;
	msgs[0]->rcpts[0].reply = strdup("250 ok");
	msgs[0]->rcpts[1].state = SPOOL_DEFERRED;
	msgs[0]->rcpts[1].reply = strdup("452 mailbox full");
	finish1(sp, msgs[0], SPOOL_DEFERRED, "452 mailbox full", now + 60);
	spool_msgs_free(&msgs, n);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE msg_id = %Q "
				"AND addr = 'a@local.example' AND state = 'sent'", id), 1);
	claim(sp, now + 60, 10, &msgs, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(msgs[0]->nrcpts, 1);
	ck_assert_str_eq(msgs[0]->rcpts[0].addr, "b@local.example");
	ck_assert_int_eq(msgs[0]->rcpts[0].state, SPOOL_DEFERRED);
	ck_assert_str_eq(msgs[0]->rcpts[0].reply, "452 mailbox full");
	/* the relay left it undecided: stored as the message outcome, never sending */
	finish1(sp, msgs[0], SPOOL_DEFERRED, "421 closing", now + 120);
	spool_msgs_free(&msgs, n);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE state = 'sending'", NULL),
			 0);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE msg_id = %Q "
				"AND addr = 'b@local.example' AND state = 'deferred'", id), 1);
	spool_close(&sp);
}
END_TEST

/* ---- listing and administration ---- */

static int count_cb(void *ctx, const struct spool_msg *m)
{
	(*(unsigned int *)ctx)++;
	ck_assert_uint_ge(m->nrcpts, 1);
	return 0;
}

START_TEST(test_admin)
{
	struct spool *sp = open_ok();
	struct spool_filter flt = { -1, NULL, 0 };
	struct spool_msg **msgs = NULL, *m = NULL;
	char id1[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1], lower[SPOOL_ID_LEN + 1], *err = NULL;
	uint64_t counts[5];
	unsigned int seen = 0;
	size_t n = 0;

	one_msg(sp, "U1", "a@local.example", id1);
	one_msg(sp, "U2", "b@local.example", id2);
	claim(sp, time(NULL), 1, &msgs, &n);
	ck_assert_uint_eq(n, 1);
	msgs[0]->rcpts[0].state = SPOOL_SENT;
	finish1(sp, msgs[0], SPOOL_SENT, "250 ok", 0);
	spool_msgs_free(&msgs, n);
	ck_assert_int_eq(spool_count_by_state(sp, counts, &err), SPOOL_OK);
	ck_assert_uint_eq(counts[SPOOL_SENT], 1);
	ck_assert_uint_eq(counts[SPOOL_QUEUED], 1);
	ck_assert_int_eq(spool_list(sp, &flt, count_cb, &seen, &err), SPOOL_OK);
	ck_assert_uint_eq(seen, 1);
	flt.include_sent = 1;
	seen = 0;
	ck_assert_int_eq(spool_list(sp, &flt, count_cb, &seen, &err), SPOOL_OK);
	ck_assert_uint_eq(seen, 2);
	flt.account = "nobody";
	seen = 0;
	ck_assert_int_eq(spool_list(sp, &flt, count_cb, &seen, &err), SPOOL_OK);
	ck_assert_uint_eq(seen, 0);
	for (size_t i = 0; i <= SPOOL_ID_LEN; i++)
		lower[i] = (char)(id2[i] >= 'A' && id2[i] <= 'F' ? id2[i] + 32 : id2[i]);
	ck_assert_int_eq(spool_get(sp, lower, &m, &err), SPOOL_OK);
	ck_assert_str_eq(m->id, id2);
	ck_assert_str_eq(m->rcpts[0].addr, "b@local.example");
	spool_msg_free(&m);
	ck_assert_ptr_null(m);
	ck_assert_int_eq(spool_get(sp, "0000000000000000", &m, &err), SPOOL_NOTFOUND);
	free(err);
	ck_assert_int_eq(spool_get(sp, "../etc/passwd", &m, &err), SPOOL_INVAL);
	free(err);
	ck_assert_int_eq(spool_account_update(sp, "acct", 1000, "ok", 2, &err), SPOOL_OK);
	ck_assert_int_eq(spool_account_update(sp, "acct", 2000, "auth failed", 0, &err),
			 SPOOL_OK);
	ck_assert_int_eq(db_int("SELECT last_poll FROM accounts WHERE name = %Q", "acct"), 2000);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM accounts", NULL), 1);
	spool_close(&sp);
}
END_TEST

/* sent_one - claim everything due, finish the message id as state */
static void finish_id(struct spool *sp, const char *id, enum spool_state st, const char *reply)
{
	struct spool_msg **msgs = NULL;
	size_t n = 0, hit = 0;

	claim(sp, time(NULL), 100, &msgs, &n);
	for (size_t i = 0; i < n; i++) {
		int mine = strcmp(msgs[i]->id, id) == 0;

		if (mine)
			msgs[i]->rcpts[0].state = st;
		finish1(sp, msgs[i], mine ? st : SPOOL_DEFERRED, mine ? reply : "451 later",
			time(NULL) + 3600);
		hit += mine;
	}
	ck_assert_uint_eq(hit, 1);
	spool_msgs_free(&msgs, n);
}

static int hist_cb(void *ctx, time_t at, const char *state, const char *reply)
{
	char *buf = ctx;
	size_t len = strlen(buf);

	ck_assert_int_gt(at, 0);
	snprintf(buf + len, 512 - len, "%s:%s;", state, reply ? reply : "");
	return 0;
}

START_TEST(test_operator_actions)
{
	struct spool *sp = open_ok();
	char id1[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1], id3[SPOOL_ID_LEN + 1];
	char hist[512] = "", *err = NULL, *got;
	unsigned int n = 0;
	int known = 0;

	one_msg(sp, "U1", "a@local.example", id1);
	one_msg(sp, "U2", "b@local.example", id2);
	one_msg(sp, "U3", "c@local.example", id3);
	/* hold a queued message; the relay no longer claims it */
	ck_assert_int_eq(spool_hold(sp, id1, NULL, &err), SPOOL_OK);
	row_str_eq("state", id1, "held");
	row_str_eq("state", id1, "held");
	got = db_text("SELECT state FROM recipients WHERE msg_id = %Q", id1);
	ck_assert_str_eq(got, "held");
	free(got);
	finish_id(sp, id2, SPOOL_SENT, "250 ok"); /* id3 becomes deferred */
	row_str_eq("state", id3, "deferred");
	ck_assert_int_eq(spool_hold(sp, id2, NULL, &err), SPOOL_INVAL);
	free(err);
	err = NULL;
	ck_assert_int_eq(spool_requeue(sp, id2, &err), SPOOL_INVAL);
	free(err);
	err = NULL;
	/* a message in a relay session is refused, whatever the action */
	db_exec("UPDATE messages SET state = 'sending' WHERE id = (SELECT id FROM messages "
		"WHERE uidl = 'U3')");
	ck_assert_int_eq(spool_delete(sp, id3, &err), SPOOL_BUSY);
	free(err);
	err = NULL;
	ck_assert_int_eq(spool_hold(sp, id3, NULL, &err), SPOOL_BUSY);
	free(err);
	err = NULL;
	db_exec("UPDATE messages SET state = 'deferred' WHERE uidl = 'U3'");
	/* flush: deferred becomes due now */
	ck_assert_int_eq(spool_make_due(sp, &n, &err), SPOOL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(db_int("SELECT next_attempt FROM messages WHERE id = %Q", id3), 0);
	/* requeue --held / --all */
	ck_assert_int_eq(spool_requeue_all(sp, 1, &n, &err), SPOOL_OK);
	ck_assert_uint_eq(n, 1);
	row_str_eq("state", id1, "queued");
	row_str_eq("state", id3, "deferred");
	ck_assert_int_eq(spool_requeue_all(sp, 0, &n, &err), SPOOL_OK);
	ck_assert_uint_eq(n, 1);
	row_str_eq("state", id3, "queued");
	ck_assert_int_eq(spool_requeue(sp, id3, &err), SPOOL_OK); /* already queued */
	ck_assert_int_eq(spool_history(sp, id1, hist_cb, hist, &err), SPOOL_OK);
	ck_assert_str_eq(hist, "queued:fetched;held:held by the operator;"
			 "queued:requeued by the operator;");
	/* delete: row, file and history go; the uidl stays known */
	ck_assert_int_eq(spool_delete(sp, id1, &err), SPOOL_OK);
	ck_assert(!exists(tpath("msg/%s", id1)));
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM messages WHERE id = %Q", id1), 0);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM history WHERE msg_id = %Q", id1), 0);
	ck_assert_int_eq(spool_uidl_known(sp, "acct", "U1", &known, &err), SPOOL_OK);
	ck_assert_int_eq(known, 1);
	ck_assert_int_eq(spool_delete(sp, id1, &err), SPOOL_NOTFOUND);
	free(err);
	spool_close(&sp);
}
END_TEST

static struct spool *open_keep(int days)
{
	struct spool_params prm = { .keep_sent_days = days };
	struct spool *sp = NULL;
	char *err = NULL;

	ck_assert_msg(spool_open_ex(tdir, &prm, &sp, &err) == SPOOL_OK, "open: %s", err);
	return sp;
}

START_TEST(test_retention)
{
	struct spool *sp = open_keep(3);
	char id1[SPOOL_ID_LEN + 1], *err = NULL;
	unsigned int n = 9;

	one_msg(sp, "U1", "a@local.example", id1);
	finish_id(sp, id1, SPOOL_SENT, "250 ok");
	/* kept for audit: file, body and a retention row */
	ck_assert(exists(tpath("msg/%s", id1)));
	ck_assert_int_eq(db_int("SELECT until - updated FROM retained JOIN messages ON id = "
				"msg_id WHERE id = %Q", id1), 3 * 86400);
	ck_assert_int_eq(spool_purge_sent(sp, time(NULL), &n, &err), SPOOL_OK);
	ck_assert_uint_eq(n, 0);
	spool_close(&sp);
	/* recovery keeps a retained file */
	sp = open_keep(3);
	ck_assert(exists(tpath("msg/%s", id1)));
	ck_assert_int_eq(spool_purge_sent(sp, time(NULL) + 3 * 86400 + 1, &n, &err), SPOOL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert(!exists(tpath("msg/%s", id1)));
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM bodies", NULL), 0);
	row_str_eq("state", id1, "sent");
	spool_close(&sp);
	/* expired while nobody ran: recovery purges it */
	sp = open_keep(1);
	one_msg(sp, "U2", "a@local.example", id1);
	finish_id(sp, id1, SPOOL_SENT, "250 ok");
	spool_close(&sp);
	db_exec("UPDATE retained SET until = 1");
	sp = open_keep(1);
	ck_assert_uint_eq(spool_last_recovery(sp)->sent_purged, 1);
	ck_assert(!exists(tpath("msg/%s", id1)));
	spool_close(&sp);
	/* default: a sent file goes at once; nothing unsent is ever purged */
	sp = open_keep(0);
	one_msg(sp, "U3", "a@local.example", id1);
	db_exec("UPDATE messages SET created = 1, updated = 1");
	ck_assert_int_eq(spool_purge_sent(sp, time(NULL) + 1000 * 86400, &n, &err), SPOOL_OK);
	ck_assert(exists(tpath("msg/%s", id1)));
	finish_id(sp, id1, SPOOL_SENT, "250 ok");
	ck_assert(!exists(tpath("msg/%s", id1)));
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM bodies", NULL), 0);
	spool_close(&sp);
	/* the retention is the spool's: a plain spool_open keeps using it */
	sp = open_keep(2);
	spool_close(&sp);
	sp = open_ok();
	one_msg(sp, "U4", "a@local.example", id1);
	finish_id(sp, id1, SPOOL_SENT, "250 ok");
	ck_assert(exists(tpath("msg/%s", id1)));
	spool_close(&sp);
}
END_TEST

START_TEST(test_inline_bodies)
{
	struct spool *sp = open_ok();
	const char *rcpts[] = { "a@local.example" };
	char id1[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1], id3[SPOOL_ID_LEN + 1];
	char *big = malloc(70000), *got;
	struct commits c = { 0 };
	size_t len;

	memset(big, 'x', 69997);
	memcpy(big + 69997, "\r\n", 3);
	ingest(sp, "acct", "U1", MSG1, "s@x", rcpts, 1, id1);
	ingest(sp, "acct", "U2", MSG1, "s@x", rcpts, 1, id2);
	ingest(sp, "acct", "U3", big, "s@x", rcpts, 1, id3);
	ck_assert_int_eq(spool_group_full(sp), 0); /* 3 messages, 70 KB, just now */
	commit_ok(sp, &c);
	ck_assert_int_eq(spool_group_full(sp), 0);
	/* small ones are durable as rows; the large one as its fsync'd file */
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM bodies", NULL), 2);
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM bodies WHERE msg_id = %Q", id3), 0);
	spool_close(&sp);
	/* a lost copy is rewritten; after a reboot (new boot id) all are */
	ck_assert_int_eq(unlink(tpath("msg/%s", id1)), 0);
	write_file(tpath("msg/%s", id2), "trunc");
	sp = open_ok();
	ck_assert_uint_eq(spool_last_recovery(sp)->inline_restored, 1);
	got = read_file(tpath("msg/%s", id1), &len);
	ck_assert_str_eq(got, MSG1);
	free(got);
	spool_close(&sp);
	db_exec("UPDATE meta SET value = 'another boot' WHERE key = 'boot_id'");
	sp = open_ok();
	ck_assert_uint_eq(spool_last_recovery(sp)->inline_restored, 2);
	got = read_file(tpath("msg/%s", id2), &len);
	ck_assert_str_eq(got, MSG1);
	free(got);
	ck_assert_uint_eq(spool_last_recovery(sp)->missing_file_held, 0);
	spool_close(&sp);
	free(big);
}
END_TEST

START_TEST(test_group_bounds)
{
	struct spool *sp = open_ok();
	const char *rcpts[] = { "a@local.example" };
	char id[SPOOL_ID_LEN + 1], uidl[16];
	struct commits c = { 0 };

	for (int i = 0; i < SPOOL_GROUP_MSGS - 1; i++) {
		snprintf(uidl, sizeof uidl, "U%d", i);
		ingest(sp, "acct", uidl, MSG1, "s@x", rcpts, 1, id);
	}
	ck_assert_int_eq(spool_group_full(sp), 0);
	ingest(sp, "acct", "last", MSG1, "s@x", rcpts, 1, id);
	ck_assert_int_eq(spool_group_full(sp), 1);
	spool_close(&sp); /* drops the pending group */
	sp = open_ok();
	ingest(sp, "acct", "slow", MSG1, "s@x", rcpts, 1, id);
	usleep((SPOOL_GROUP_MS + 50) * 1000); /* the time bound */
	ck_assert_int_eq(spool_group_full(sp), 1);
	commit_ok(sp, &c);
	spool_close(&sp);
}
END_TEST

/* ---- recovery ---- */

START_TEST(test_recovery_table)
{
	struct spool *sp = open_ok();
	struct spool_msg **msgs = NULL;
	const struct spool_recovery *rec;
	char ids[4][SPOOL_ID_LEN + 1], *err = NULL;
	const char *orphan = "00000000DEADBEEF";
	size_t n = 0;

	/* 0: left in sending, 1: sent but file back, 2: deferred file lost, 3: deferred */
	for (int i = 0; i < 4; i++) {
		char uidl[16];

		snprintf(uidl, sizeof uidl, "U%d", i);
		one_msg(sp, uidl, "a@local.example", ids[i]);
	}
	claim(sp, time(NULL), 10, &msgs, &n);
	ck_assert_uint_eq(n, 4);
	for (size_t i = 1; i < 4; i++) {
		struct spool_outcome o = { NULL, i == 1 ? SPOOL_SENT : SPOOL_DEFERRED, "x", 1 };

		for (size_t j = 0; j < n; j++)
			if (strcmp(msgs[j]->id, ids[i]) == 0)
				o.msg = msgs[j];
		ck_assert_int_eq(spool_finish_attempts(sp, &o, 1, &err), SPOOL_OK);
	}
	spool_msgs_free(&msgs, n);
	spool_close(&sp);
	write_file(tpath("msg/%s", ids[1]), MSG1);
	ck_assert_int_eq(unlink(tpath("msg/%s", ids[2])), 0);
	/* lost for good: neither the file nor an inline body (a large message) */
	db_exec("DELETE FROM bodies");
	write_file(tpath("tmp/%s", "0000000000000001"), "half a message");
	write_file(tpath("msg/%s", orphan), MSG1);

	sp = open_ok();
	rec = spool_last_recovery(sp);
	ck_assert_uint_eq(rec->tmp_removed, 1);
	ck_assert_uint_eq(rec->sending_requeued, 1);
	ck_assert_uint_eq(rec->uncommitted_removed, 1);
	ck_assert_uint_eq(rec->missing_file_held, 1);
	ck_assert_uint_eq(rec->orphans_removed, 1);
	ck_assert_int_eq(rec->skipped, 0);
	ck_assert_uint_eq(count_entries("tmp"), 0);
	ck_assert(!exists(tpath("msg/%s", orphan)));
	row_str_eq("state", ids[0], "queued");
	ck_assert(exists(tpath("msg/%s", ids[0])));
	ck_assert_int_eq(db_int("SELECT COUNT(*) FROM recipients WHERE state = 'sending'", NULL),
			 0);
	row_str_eq("state", ids[1], "sent");
	ck_assert(!exists(tpath("msg/%s", ids[1])));
	row_str_eq("state", ids[2], "held");
	row_str_eq("last_reply", ids[2], "spool file missing at recovery");
	row_str_eq("state", ids[3], "deferred");
	ck_assert(exists(tpath("msg/%s", ids[3])));
	spool_close(&sp);
	/* recovery is idempotent: a second open finds nothing to do */
	sp = open_ok();
	rec = spool_last_recovery(sp);
	ck_assert_uint_eq(rec->tmp_removed + rec->sending_requeued + rec->uncommitted_removed +
				  rec->missing_file_held + rec->orphans_removed, 0);
	spool_close(&sp);
}
END_TEST

START_TEST(test_recovery_skipped_while_open)
{
	const char *rcpts[] = { "a@local.example" };
	struct spool_envelope env = { "s@x", rcpts, 1, NULL };
	struct spool *sp1 = open_ok(), *sp2;
	struct spool_writer *w = NULL;
	struct commits c = { 0 };
	char pend[SPOOL_ID_LEN + 1], *err = NULL;

	/* sp1 has one message in tmp/ and one pending in msg/ */
	ck_assert_int_eq(spool_writer_begin(sp1, "acct", "P", &w, &err), SPOOL_OK);
	snprintf(pend, sizeof pend, "%s", spool_writer_id(w));
	ck_assert_int_eq(spool_writer_write(w, MSG1, strlen(MSG1), &err), SPOOL_OK);
	ck_assert_int_eq(spool_writer_finish(&w, &env, &err), SPOOL_OK);
	ck_assert_int_eq(spool_writer_begin(sp1, "acct", "T", &w, &err), SPOOL_OK);
	sp2 = open_ok();
	ck_assert_int_eq(spool_last_recovery(sp2)->skipped, 1);
	ck_assert(exists(tpath("tmp/%s", spool_writer_id(w))));
	ck_assert(exists(tpath("msg/%s", pend)));
	spool_close(&sp2);
	spool_writer_abort(&w);
	commit_ok(sp1, &c);
	ck_assert_uint_eq(c.n, 1);
	ck_assert_int_eq(c.res[0], SPOOL_OK);
	ck_assert(exists(tpath("msg/%s", pend)));
	spool_close(&sp1);
}
END_TEST

START_TEST(test_lost_index_refused)
{
	struct spool *sp = open_ok();
	char id[SPOOL_ID_LEN + 1], *err = NULL;

	one_msg(sp, "U1", "a@local.example", id);
	spool_close(&sp);
	ck_assert_int_eq(unlink(tpath("index.db")), 0);
	unlink(tpath("index.db-wal"));
	unlink(tpath("index.db-shm"));
	ck_assert_int_eq(spool_open(tdir, &sp, &err), SPOOL_IO);
	ck_assert_ptr_nonnull(strstr(err, "index was lost"));
	free(err);
	ck_assert(exists(tpath("msg/%s", id)));
	/* and it keeps refusing: the refusal left no schema behind */
	ck_assert_int_eq(spool_open(tdir, &sp, &err), SPOOL_IO);
	free(err);
	ck_assert(exists(tpath("msg/%s", id)));
}
END_TEST

START_TEST(test_close_drops_uncommitted)
{
	const char *rcpts[] = { "a@local.example" };
	struct spool *sp = open_ok();
	char id[SPOOL_ID_LEN + 1];

	ingest(sp, "acct", "U1", MSG1, "s@x", rcpts, 1, id);
	ck_assert(exists(tpath("msg/%s", id)));
	spool_close(&sp);
	/* never committed, never DELE'd: the server still has it */
	ck_assert(!exists(tpath("msg/%s", id)));
}
END_TEST

static Suite *spool_suite(void)
{
	Suite *s = suite_create("spool");
	struct {
		const char *name;
		const TTest *tests[8];
	} cases[] = {
		{ "open", { test_open_creates_tree, test_open_relative_and_missing_root,
			    test_newer_schema_refused, test_names } },
		{ "ingest", { test_roundtrip, test_group_commit_and_duplicate,
			      test_abort_and_bad_envelope, test_large_write,
			      test_close_drops_uncommitted, test_commit_busy } },
		{ "relay", { test_claim_and_sent, test_deferred_and_held, test_mixed_recipients,
			     test_hold_at_ingest } },
		{ "admin", { test_admin, test_operator_actions, test_retention } },
		{ "group", { test_inline_bodies, test_group_bounds } },
		{ "recovery", { test_recovery_table, test_recovery_skipped_while_open,
				test_lost_index_refused } },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);

		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 60);
		for (size_t j = 0; j < 8 && cases[i].tests[j] != NULL; j++)
			tcase_add_test(tc, cases[i].tests[j]);
		suite_add_tcase(s, tc);
	}
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(spool_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
