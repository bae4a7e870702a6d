/*
 * fsyncbench.c - what durable ingest costs on this disk, per design option.
 *
 * Usage: fsyncbench DIR [COUNT] [SIZE]   (defaults 2000 messages of 2048 octets)
 *
 * Each option stores COUNT messages durably and prints messages/s:
 *   file-each    a file per message: write, fsync, rename, fsync dir (per message)
 *   file-group   a file per message: write + fsync each, rename, one dir fsync
 *                per group of 100 (popgate's design, without the index)
 *   file-group+db  file-group plus one SQLite WAL synchronous=FULL transaction
 *                per group inserting an index row per message (the full cost)
 *   file-late+db as file-group+db, but the files of a group are written first
 *                and fsync'd one after the other just before the commit
 *   file-syncfs+db  as file-group+db, but one syncfs() per group writes every
 *                file, then fdatasync() on each (now cheap) collects per-file
 *                write errors (popgate's choice, see docs/internals.md)
 *   segment      append 100 messages to one segment file, one fdatasync
 *   sqlite-blob  bodies inside SQLite: 100 rows with the body as a BLOB per
 *                WAL synchronous=FULL transaction
 *
 * Build: cc -O2 -o fsyncbench fsyncbench.c -lsqlite3
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GROUP 100

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0)
			die("write");
		buf += n;
		len -= (size_t)n;
	}
}

enum sync_mode {
	SYNC_EACH,    /* fsync each file as it is finished */
	SYNC_LATE,    /* fsync each file of the group just before the commit */
	SYNC_FS,      /* one syncfs() per group, then fdatasync each file (cheap:
		       * nothing left to write; it reports the file's own errors) */
};

/* one_file - write a message into tmp/, fsync it (SYNC_EACH), rename into msg/ */
static void one_file(int tmpfd, int msgfd, int i, const char *body, size_t size,
		     enum sync_mode mode)
{
	char name[32];
	int fd;

	snprintf(name, sizeof name, "m%08d", i);
	fd = openat(tmpfd, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		die("open");
	write_all(fd, body, size);
	if (mode == SYNC_EACH && fsync(fd) < 0)
		die("fsync");
	close(fd);
	if (renameat(tmpfd, name, msgfd, name) < 0)
		die("rename");
}

/* group_sync - make the files [i, end) durable as the mode says */
static void group_sync(int msgfd, int i, int end, enum sync_mode mode)
{
	if (mode == SYNC_EACH)
		return;
	if (mode == SYNC_FS && syncfs(msgfd) < 0)
		die("syncfs");
	for (int j = i; j < end; j++) {
		char name[32];
		int fd;

		snprintf(name, sizeof name, "m%08d", j);
		fd = openat(msgfd, name, O_RDONLY);
		if (fd < 0 || (mode == SYNC_FS ? fdatasync(fd) : fsync(fd)) < 0)
			die("late fsync");
		close(fd);
	}
}

static sqlite3 *open_db(const char *dir, const char *schema)
{
	char path[4096];
	sqlite3 *db;

	snprintf(path, sizeof path, "%s/index.db", dir);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("sqlite3_open");
	sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", NULL, NULL, NULL);
	if (sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK)
		die("schema");
	return db;
}

static double run_files(const char *dir, int count, const char *body, size_t size, int group,
			int with_db, enum sync_mode mode)
{
	int tmpfd, msgfd;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	double t0;
	char p[8192];

	snprintf(p, sizeof p, "%s/tmp", dir);
	mkdir(p, 0700);
	tmpfd = open(p, O_RDONLY | O_DIRECTORY);
	snprintf(p, sizeof p, "%s/msg", dir);
	mkdir(p, 0700);
	msgfd = open(p, O_RDONLY | O_DIRECTORY);
	if (tmpfd < 0 || msgfd < 0)
		die("open dirs");
	if (with_db) {
		db = open_db(dir, "CREATE TABLE m (id TEXT PRIMARY KEY, size INTEGER)");
		sqlite3_prepare_v2(db, "INSERT INTO m VALUES (?1, ?2)", -1, &st, NULL);
	}
	t0 = now_s();
	for (int i = 0; i < count; i += group) {
		int end = i + group < count ? i + group : count;

		for (int j = i; j < end; j++)
			one_file(tmpfd, msgfd, j, body, size, mode);
		group_sync(msgfd, i, end, mode);
		if (fsync(msgfd) < 0)
			die("fsync dir");
		if (db == NULL)
			continue;
		sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		for (int j = i; j < i + group && j < count; j++) {
			char name[32];

			snprintf(name, sizeof name, "m%08d", j);
			sqlite3_reset(st);
			sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
			if (sqlite3_step(st) != SQLITE_DONE)
				die("insert");
		}
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			die("commit");
	}
	t0 = now_s() - t0;
	sqlite3_finalize(st);
	sqlite3_close(db);
	close(tmpfd);
	close(msgfd);
	return t0;
}

static double run_segment(const char *dir, int count, const char *body, size_t size)
{
	char p[8192];
	double t0 = now_s();

	for (int i = 0; i < count; i += GROUP) {
		int fd;

		snprintf(p, sizeof p, "%s/seg%06d", dir, i / GROUP);
		fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0)
			die("open segment");
		for (int j = i; j < i + GROUP && j < count; j++)
			write_all(fd, body, size);
		if (fdatasync(fd) < 0)
			die("fdatasync");
		close(fd);
	}
	/* the segment files are new: one directory fsync makes them durable */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	fsync(dfd);
	close(dfd);
	return now_s() - t0;
}

static double run_blob(const char *dir, int count, const char *body, size_t size)
{
	sqlite3 *db = open_db(dir, "CREATE TABLE m (id INTEGER PRIMARY KEY, body BLOB)");
	sqlite3_stmt *st = NULL;
	double t0;

	sqlite3_prepare_v2(db, "INSERT INTO m (body) VALUES (?1)", -1, &st, NULL);
	t0 = now_s();
	for (int i = 0; i < count; i += GROUP) {
		sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		for (int j = i; j < i + GROUP && j < count; j++) {
			sqlite3_reset(st);
			sqlite3_bind_blob(st, 1, body, (int)size, SQLITE_STATIC);
			if (sqlite3_step(st) != SQLITE_DONE)
				die("insert blob");
		}
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			die("commit");
	}
	t0 = now_s() - t0;
	sqlite3_finalize(st);
	sqlite3_close(db);
	return t0;
}

static void fresh(const char *base, const char *name, char *out, size_t len)
{
	char cmd[8192];

	snprintf(out, len, "%s/%s", base, name);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", out, out);
	if (system(cmd) != 0)
		die("mkdir");
}

int main(int argc, char **argv)
{
	int count = argc > 2 ? atoi(argv[2]) : 2000;
	size_t size = argc > 3 ? (size_t)atol(argv[3]) : 2048;
	char *body, d[4096];
	double t;

	if (argc < 2 || count <= 0 || size == 0) {
		fprintf(stderr, "usage: fsyncbench DIR [COUNT] [SIZE]\n");
		return 2;
	}
	body = malloc(size);
	memset(body, 'x', size);
	printf("%-14s %8s %10s %9s\n", "option", "messages", "seconds", "msg/s");
#define REPORT(name, expr)                                                                  \
	do {                                                                                \
		fresh(argv[1], name, d, sizeof d);                                          \
		t = (expr);                                                                 \
		printf("%-14s %8d %10.3f %9.0f\n", name, count, t, count / t);              \
		fflush(stdout);                                                             \
	} while (0)
	REPORT("file-each", run_files(d, count, body, size, 1, 0, SYNC_EACH));
	REPORT("file-group", run_files(d, count, body, size, GROUP, 0, SYNC_EACH));
	REPORT("file-group+db", run_files(d, count, body, size, GROUP, 1, SYNC_EACH));
	REPORT("file-late+db", run_files(d, count, body, size, GROUP, 1, SYNC_LATE));
	REPORT("file-syncfs+db", run_files(d, count, body, size, GROUP, 1, SYNC_FS));
	REPORT("segment", run_segment(d, count, body, size));
	REPORT("sqlite-blob", run_blob(d, count, body, size));
	free(body);
	return 0;
}
