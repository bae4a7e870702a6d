#include "config.h"

/*
 * check_dedupe.c - duplicate detection (issue 15): the content keys
 * (gateway/dedupe.c, fed through the message filter as the poller feeds
 * them), the spool's lookup at commit (one indexed query), and migration
 * 011 on an index made by schema 010 with rows in every table.
 */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "dedupe.h"
#include "msgfilter.h"
#include "spool.h"
#include "spool_int.h"

static char tdir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/check_dedupe.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
}

static void teardown(void)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tpath(const char *name)
{
	static char buf[2][256];
	static int slot;
	slot ^= 1;
	snprintf(buf[slot], sizeof buf[slot], "%s/%s", tdir, name);
	return buf[slot];
}

static enum pg_res feed_sink(void *ctx, const void *data, size_t len, char **err_r)
{
	(void)err_r;
	dedupe_feed(ctx, data, len);
	return PG_OK;
}

/* keys_of - the keys of a RETR reply body (without the terminator), as the
 * poller computes them: through the message filter, any chunking */
static void keys_of(const char *wire, struct spool_dedupe *d)
{
	struct dedupe_keys *k = dedupe_new();
	struct msgfilter *mf = mf_new(feed_sink, k);
	char *err = NULL;
	int done = 0;
	size_t len = strlen(wire);
	char *buf = malloc(len + 4);

	memcpy(buf, wire, len);
	memcpy(buf + len, ".\r\n", 4);
	ck_assert_int_eq(mf_feed_all(mf, buf, len + 3, &done, &err), PG_OK);
	ck_assert_int_eq(mf_finish(mf, &err), PG_OK);
	memset(d, 0, sizeof *d);
	dedupe_end(k, d);
	mf_free(&mf);
	dedupe_free(&k);
	free(buf);
}

#define HDR "From: a@x.example\r\nSubject: hi\r\nMessage-ID: <m1@x.example>\r\n"
#define BODY "line one\r\nline two\r\n"

START_TEST(test_keys_line_ends)
{
	struct spool_dedupe crlf, lf;
	keys_of(HDR "\r\n" BODY, &crlf);
	keys_of("From: a@x.example\nSubject: hi\nMessage-ID: <m1@x.example>\n\nline one\nline two\n",
		&lf);
	ck_assert_mem_eq(crlf.exact, lf.exact, SPOOL_KEY_LEN);
	ck_assert_int_eq(crlf.has_msgkey, 1);
	ck_assert_int_eq(lf.has_msgkey, 1);
	ck_assert_mem_eq(crlf.msgkey, lf.msgkey, SPOOL_KEY_LEN);
}
END_TEST

/* the exact key is the sha256 of the message as the server sent it: no
 * Received line of popgate's (the poller writes it to the spool only) */
START_TEST(test_keys_exact_is_content)
{
	static const char msg[] = HDR "\r\n" BODY;
	unsigned char md[SPOOL_KEY_LEN];
	unsigned int n = 0;
	struct spool_dedupe d;
	keys_of(msg, &d);
	ck_assert(EVP_Digest(msg, strlen(msg), md, &n, EVP_sha256(), NULL) == 1);
	ck_assert_mem_eq(d.exact, md, SPOOL_KEY_LEN);
}
END_TEST

START_TEST(test_keys_message_mode)
{
	struct spool_dedupe a, b, c, e, f;
	keys_of(HDR "\r\n" BODY, &a);
	/* a header added and the Message-ID folded: same message key */
	keys_of("X-Provider: new\r\nFrom: a@x.example\r\nSubject: hi\r\nmessage-id:\r\n"
		"   <m1@x.example>\r\n\r\n" BODY, &b);
	ck_assert(memcmp(a.exact, b.exact, SPOOL_KEY_LEN) != 0);
	ck_assert_int_eq(b.has_msgkey, 1);
	ck_assert_mem_eq(a.msgkey, b.msgkey, SPOOL_KEY_LEN);
	/* another Message-ID, the same body: another message */
	keys_of("From: a@x.example\r\nMessage-ID: <m2@x.example>\r\n\r\n" BODY, &c);
	ck_assert(memcmp(a.msgkey, c.msgkey, SPOOL_KEY_LEN) != 0);
	/* another body */
	keys_of(HDR "\r\nline one\r\n", &e);
	ck_assert(memcmp(a.msgkey, e.msgkey, SPOOL_KEY_LEN) != 0);
	/* no Message-ID (a Message-IDs header is another field): no key */
	keys_of("From: a@x.example\r\nMessage-IDs: <m1@x.example>\r\n\r\n" BODY, &f);
	ck_assert_int_eq(f.has_msgkey, 0);
	/* a line cut short before the colon is no field: the real one counts */
	struct spool_dedupe g;
	keys_of("Message-I\r\nFrom: a@x.example\r\nSubject: hi\r\nMessage-ID: <m1@x.example>\r\n"
		"\r\n" BODY, &g);
	ck_assert_int_eq(g.has_msgkey, 1);
	ck_assert_mem_eq(a.msgkey, g.msgkey, SPOOL_KEY_LEN);
}
END_TEST

/* ---- the spool side ---- */

static const char *const rcpt[] = { "a@local.example" };

struct cctx {
	char ids[16][SPOOL_ID_LEN + 1];
	int n;
};

static void commit_cb(void *ctx, const char *account, const char *uidl, const char *id,
		      enum spool_res r)
{
	struct cctx *c = ctx;
	(void)account, (void)uidl;
	ck_assert_int_eq(r, SPOOL_OK);
	snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", id);
}

static void spool_one(struct spool *sp, const char *uidl, struct spool_dedupe *d)
{
	struct spool_envelope env = { "s@x", rcpt, 1, NULL, d };
	struct spool_writer *w = NULL;
	char *err = NULL;
	ck_assert_int_eq(spool_writer_begin(sp, "acct", uidl, &w, &err), SPOOL_OK);
	ck_assert_int_eq(spool_writer_write(w, "Received: x\r\n\r\nb\r\n", 17, &err), SPOOL_OK);
	ck_assert_int_eq(spool_writer_finish(&w, &env, &err), SPOOL_OK);
}

START_TEST(test_commit_duplicate)
{
	struct spool_dedupe d1, d2, d3;
	struct spool *sp = NULL;
	struct cctx c = { .n = 0 };
	char *err = NULL;
	struct spool_msg *m = NULL;

	keys_of(HDR "\r\n" BODY, &d1);
	d1.mode = SPOOL_DEDUPE_EXACT;
	d2 = d1; /* the same content under another UIDL, in the same group */
	keys_of("From: b@x.example\r\n\r\nother\r\n", &d3);
	d3.mode = SPOOL_DEDUPE_EXACT;
	ck_assert_int_eq(spool_open(tdir, &sp, &err), SPOOL_OK);
	spool_one(sp, "U1", &d1);
	spool_one(sp, "U2", &d2);
	spool_one(sp, "U3", &d3);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_int_eq(c.n, 3);
	ck_assert_str_eq(d1.dup_of_r, "");
	ck_assert_str_eq(d2.dup_of_r, c.ids[0]);
	ck_assert_str_eq(d3.dup_of_r, "");
	ck_assert_int_eq(spool_get(sp, c.ids[1], &m, &err), SPOOL_OK);
	ck_assert_int_eq(m->state, SPOOL_DUPLICATE);
	ck_assert_str_eq(m->duplicate_of, c.ids[0]);
	spool_msg_free(&m);
	/* outside the window: not a duplicate */
	struct spool_dedupe d4 = d1;
	d4.since = time(NULL) + 10;
	spool_one(sp, "U4", &d4);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_str_eq(d4.dup_of_r, "");
	/* pruned: forgotten */
	unsigned int n = 0;
	uint64_t keys = 0;
	ck_assert_int_eq(spool_dedupe_count(sp, "acct", &keys, &err), SPOOL_OK);
	ck_assert_uint_eq(keys, 5);
	/* merged (not due yet: forced), nothing pruned inside the window */
	ck_assert_msg(spool_dedupe_maintain(sp, "acct", time(NULL) - 100, time(NULL), 1, &n, &err) ==
		      SPOOL_OK, "maintain: %s", err);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(spool_dedupe_count(sp, "acct", &keys, &err), SPOOL_OK);
	ck_assert_uint_eq(keys, 5);
	/* found in the merged table too (the Bloom filter built by the merge
	 * lets it through); a new message is excluded by it and is no duplicate */
	struct spool_dedupe d5 = d3, d6;
	keys_of("From: c@x.example\r\n\r\nyet another\r\n", &d6);
	d6.mode = SPOOL_DEDUPE_EXACT;
	spool_one(sp, "U5", &d5);
	spool_one(sp, "U6", &d6);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_str_eq(d5.dup_of_r, c.ids[2]);
	ck_assert_str_eq(d6.dup_of_r, "");
	/* and a copy of the new one (in dedupe_new, not in the filter) */
	struct spool_dedupe d7 = d6;
	spool_one(sp, "U7", &d7);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_str_eq(d7.dup_of_r, c.ids[5]);
	/* the filter is consulted: a key put into dedupe behind its back (never
	 * done by popgate: only the merge writes it, and rebuilds the filter)
	 * is not searched for; after a rebuild it is found */
	struct spool_dedupe d8, d9;
	keys_of("From: d@x.example\r\n\r\nsneaked in\r\n", &d8);
	d8.mode = SPOOL_DEDUPE_EXACT;
	d9 = d8;
	sqlite3 *db = NULL;
	sqlite3_stmt *ins = NULL;
	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "INSERT INTO dedupe VALUES ('acct', 0, ?1, ?2, "
					    "'00000000000000FF')", -1, &ins, NULL), SQLITE_OK);
	sqlite3_bind_blob(ins, 1, d8.exact, SPOOL_KEY_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(ins, 2, (sqlite3_int64)time(NULL) - 10);
	ck_assert_int_eq(sqlite3_step(ins), SQLITE_DONE);
	sqlite3_finalize(ins);
	sqlite3_close(db);
	spool_one(sp, "U8", &d8);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_str_eq(d8.dup_of_r, "");
	ck_assert_int_eq(spool_dedupe_maintain(sp, "acct", time(NULL) - 100, time(NULL), 1, &n,
					       &err), SPOOL_OK);
	spool_one(sp, "U9", &d9);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_str_eq(d9.dup_of_r, "00000000000000FF");
	ck_assert_int_eq(spool_dedupe_maintain(sp, "acct", time(NULL) + 100, time(NULL), 1, &n,
					       &err), SPOOL_OK);
	/* d1 and d4: exact + message; d3, d6, d8 and the sneaked one: exact */
	ck_assert_uint_eq(n, 8);
	spool_close(&sp);
}
END_TEST

/* a large duplicate's file lives like a sent one's: kept while retained
 * (across recovery), removed by recovery once its retention is gone */
START_TEST(test_duplicate_file_recovery)
{
	static char big[70001];
	struct spool_params prm = { .keep_sent_days = 1 };
	struct spool_dedupe d1, d2;
	struct spool *sp = NULL;
	struct cctx c = { .n = 0 };
	char *err = NULL, path[512];
	sqlite3 *db = NULL;

	memset(big, 'x', sizeof big - 1);
	memcpy(big, "Subject: big\r\n\r\n", 17);
	memcpy(big + sizeof big - 3, "\r\n", 2);
	keys_of(big, &d1);
	d1.mode = SPOOL_DEDUPE_EXACT;
	d2 = d1;
	ck_assert_int_eq(spool_open_ex(tdir, &prm, &sp, &err), SPOOL_OK);
	for (int i = 0; i < 2; i++) {
		struct spool_envelope env = { "s@x", rcpt, 1, NULL, i ? &d2 : &d1 };
		struct spool_writer *w = NULL;
		ck_assert_int_eq(spool_writer_begin(sp, "acct", i ? "B" : "A", &w, &err), SPOOL_OK);
		ck_assert_int_eq(spool_writer_write(w, big, sizeof big - 1, &err), SPOOL_OK);
		ck_assert_int_eq(spool_writer_finish(&w, &env, &err), SPOOL_OK);
		ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	}
	ck_assert_str_eq(d2.dup_of_r, c.ids[0]);
	spool_close(&sp);
	snprintf(path, sizeof path, "%s/msg/%s", tdir, c.ids[1]);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_int_eq(spool_open_ex(tdir, &prm, &sp, &err), SPOOL_OK);
	spool_close(&sp);
	ck_assert_msg(access(path, F_OK) == 0, "a retained duplicate's file survives recovery");
	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "DELETE FROM retained", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	ck_assert_int_eq(spool_open_ex(tdir, &prm, &sp, &err), SPOOL_OK);
	spool_close(&sp);
	ck_assert_msg(access(path, F_OK) != 0, "recovery removes it once not retained");
}
END_TEST

/* requeue of a duplicate: queued while its body is kept (off the
 * retention clock); refused once the retention purged it */
START_TEST(test_requeue_duplicate)
{
	struct spool_dedupe d1, d2, d3;
	struct spool *sp = NULL;
	struct cctx c = { .n = 0 };
	struct spool_msg *m = NULL;
	char *err = NULL;

	keys_of(HDR "\r\n" BODY, &d1);
	d1.mode = SPOOL_DEDUPE_MESSAGE;
	d2 = d1;
	d3 = d1;
	ck_assert_int_eq(spool_open(tdir, &sp, &err), SPOOL_OK); /* keep_sent_days 0 */
	spool_one(sp, "U1", &d1);
	spool_one(sp, "U2", &d2);
	spool_one(sp, "U3", &d3);
	ck_assert_int_eq(spool_commit(sp, commit_cb, &c, &err), SPOOL_OK);
	ck_assert_str_eq(d3.dup_of_r, c.ids[0]);
	ck_assert_int_eq(spool_requeue(sp, c.ids[1], &err), SPOOL_OK);
	ck_assert_int_eq(spool_get(sp, c.ids[1], &m, &err), SPOOL_OK);
	ck_assert_int_eq(m->state, SPOOL_QUEUED);
	spool_msg_free(&m);
	unsigned int n = 0;
	ck_assert_int_eq(spool_purge_sent(sp, time(NULL) + 1, &n, &err), SPOOL_OK);
	ck_assert_uint_eq(n, 1); /* the other duplicate's body; not the requeued one */
	unsigned char *body = NULL;
	size_t len = 0;
	ck_assert_int_eq(spool_body_get(sp, c.ids[1], &body, &len, &err), SPOOL_OK);
	free(body);
	ck_assert_int_eq(spool_requeue(sp, c.ids[2], &err), SPOOL_INVAL);
	ck_assert_ptr_nonnull(strstr(err, "no longer kept"));
	free(err);
	err = NULL;
	ck_assert_int_eq(spool_hold(sp, c.ids[2], NULL, &err), SPOOL_INVAL);
	free(err);
	spool_close(&sp);
}
END_TEST

/* one indexed query per message: the lookup is a search of the primary key
 * of `dedupe`, never a scan */
START_TEST(test_lookup_plan)
{
	struct spool *sp = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *err = NULL, plan[1024] = "";

	ck_assert_int_eq(spool_open(tdir, &sp, &err), SPOOL_OK);
	spool_close(&sp);
	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN " SPOOL_DEDUPE_FIND_SQL, -1,
					    &st, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		strncat(plan, (const char *)sqlite3_column_text(st, 3), sizeof plan - strlen(plan) - 2);
		strcat(plan, ";");
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	ck_assert_msg(strstr(plan, "SEARCH dedupe USING PRIMARY KEY (account=? AND kind=? AND "
				   "key=? AND created>?)") != NULL, "plan: %s", plan);
	ck_assert_msg(strstr(plan, "SEARCH dedupe_new USING PRIMARY KEY (account=? AND kind=? AND "
				   "key=? AND created>?)") != NULL, "plan: %s", plan);
	/* no table is scanned (the only sort is of the two arms' one row each) */
	ck_assert_msg(strstr(plan, "SCAN dedupe") == NULL, "plan: %s", plan);
}
END_TEST

/* An index made by schema 010 (the migrations up to 10 from the library's
 * own table) with rows in every table upgrades in place: nothing lost, no
 * cascade from the rebuilt messages table, the new state accepted. */
START_TEST(test_migration_011)
{
	sqlite3 *db = NULL;
	char *err = NULL;
	struct spool *sp = NULL;
	struct spool_msg *m = NULL;
	unsigned int applied = 0;

	ck_assert_int_eq(mkdir(tpath("tmp"), 0700), 0);
	ck_assert_int_eq(mkdir(tpath("msg"), 0700), 0);
	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	for (unsigned int i = 0; i < spool_nmigrations; i++) {
		if (spool_migrations[i].version > 10)
			continue;
		ck_assert_msg(sqlite3_exec(db, spool_migrations[i].sql, NULL, NULL, &err) ==
				      SQLITE_OK, "%s: %s", spool_migrations[i].name, err);
		applied = spool_migrations[i].version;
	}
	ck_assert_uint_eq(applied, 10);
	ck_assert_int_eq(sqlite3_exec(db,
		"PRAGMA user_version = 10;"
		"INSERT INTO messages (id, account, uidl, size, digest, sender, state, attempts, "
		"next_attempt, last_reply, created, updated, in_index, eightbit, claim, listed_size) "
		"VALUES ('00000001000000A1', 'acct', 'U1', 5, 'd1', 's@x', 'deferred', 2, 1100, "
		"'451 later', 1000, 1100, 1, 0, NULL, 5),"
		"('00000001000000A2', 'acct', 'U2', 5, 'd2', 's@x', 'sent', 1, 0, '250 ok', 1000, "
		"1200, 1, 1, NULL, NULL);"
		"INSERT INTO recipients (msg_id, addr, state) VALUES ('00000001000000A1', "
		"'a@local.example', 'deferred'), ('00000001000000A2', 'a@local.example', 'sent');"
		"INSERT INTO bodies (msg_id, body) VALUES ('00000001000000A1', CAST('hello' AS BLOB)),"
		"('00000001000000A2', CAST('world' AS BLOB));"
		"INSERT INTO history (msg_id, at, state, reply) VALUES ('00000001000000A1', 1100, "
		"'deferred', '451 later');"
		"INSERT INTO retained (msg_id, until) VALUES ('00000001000000A2', 4000000000);",
		NULL, NULL, &err), SQLITE_OK);
	sqlite3_close(db);

	ck_assert_msg(spool_open(tdir, &sp, &err) == SPOOL_OK, "open: %s", err);
	ck_assert_int_eq(spool_get(sp, "00000001000000A1", &m, &err), SPOOL_OK);
	ck_assert_int_eq(m->state, SPOOL_DEFERRED);
	ck_assert_int_eq(m->attempts, 2);
	ck_assert_str_eq(m->last_reply, "451 later");
	ck_assert_uint_eq(m->nrcpts, 1);
	ck_assert_str_eq(m->duplicate_of, "");
	spool_msg_free(&m);
	spool_close(&sp);

	ck_assert_int_eq(sqlite3_open(tpath("index.db"), &db), SQLITE_OK);
	sqlite3_stmt *st = NULL;
	ck_assert_int_eq(sqlite3_prepare_v2(db,
		"SELECT (SELECT COUNT(*) FROM recipients), (SELECT COUNT(*) FROM bodies), "
		"(SELECT COUNT(*) FROM history), (SELECT COUNT(*) FROM retained), "
		"(SELECT listed_size FROM messages WHERE id = '00000001000000A1'), "
		"(SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages_due'), "
		"(SELECT user_version FROM pragma_user_version)", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int(st, 0), 2);
	ck_assert_int_eq(sqlite3_column_int(st, 1), 2);
	ck_assert_int_eq(sqlite3_column_int(st, 2), 1);
	ck_assert_int_eq(sqlite3_column_int(st, 3), 1);
	ck_assert_int_eq(sqlite3_column_int(st, 4), 5);
	ck_assert_int_eq(sqlite3_column_int(st, 5), 1);
	ck_assert_int_eq(sqlite3_column_int(st, 6), 11);
	sqlite3_finalize(st);
	ck_assert_int_eq(sqlite3_exec(db, "UPDATE messages SET state = 'duplicate' WHERE id = "
				      "'00000001000000A2'", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA foreign_keys = ON; DELETE FROM messages WHERE "
				      "id = '00000001000000A2'", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM recipients", -1, &st, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int(st, 0), 1); /* the cascade still works */
	sqlite3_finalize(st);
	sqlite3_close(db);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("dedupe");
	TCase *tc = tcase_create("all");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_keys_line_ends);
	tcase_add_test(tc, test_keys_exact_is_content);
	tcase_add_test(tc, test_keys_message_mode);
	tcase_add_test(tc, test_commit_duplicate);
	tcase_add_test(tc, test_lookup_plan);
	tcase_add_test(tc, test_duplicate_file_recovery);
	tcase_add_test(tc, test_requeue_duplicate);
	tcase_add_test(tc, test_migration_011);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
