#!/bin/bash
# bench_dedupe.sh - issue 15: the cost of duplicate detection's lookup.
# A poll of COUNT (default 10,000) new 2 KiB messages from a private Dovecot
# (`popgate poll --once`, keep = true so the mailbox stays the same, dedupe
# = exact) into a spool whose account spooled HISTORY (default 200,000)
# messages within dedupe_days (each with both keys, exact and Message-ID:
# 2 x HISTORY keys), against the same poll into a spool with no history;
# BENCH_RUNS (default 5) runs of each, alternating, each on a fresh copy of
# its template spool.  Prints the medians and the ratio (goal: <= 1.10),
# wall and CPU time.  Also the same poll with dedupe = off (the cost of
# computing and recording the keys at all), and the daily merge.
# Not a test: run by hand.
#   top_builddir=... bash test/bench/bench_dedupe.sh [COUNT [HISTORY]]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
POPGATE=$top_builddir/popgate
. "$top_srcdir/test/lib/common.sh"
require_env
no_plan
COUNT=${1:-10000}
HISTORY=${2:-200000}
RUNS=${BENCH_RUNS:-5}
start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
dovecot_add_user bench 'bench-pw'
password_file "$TESTDIR/pass" 'bench-pw'
MD=$(maildir_of bench)
"$PYTHON" - "$MD/cur" "$COUNT" <<'PYEOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
body = ("x" * 76 + "\n") * 24
for i in range(n):
    msg = ("From: a%d@remote.example\nTo: b@corp.example\nSubject: bench %d\n"
           "Message-ID: <bench%d@remote.example>\n\n%s" % (i, i, i, body))
    with open(os.path.join(d, "%d.bench%d:2," % (1700000000 + i, i)), "w") as f:
        f.write(msg[:2048] + "\n")
PYEOF
maildir_fix_owner bench

# conf SPOOL DEDUPE
conf() {
	{
		conf_base "$1"
		conf_account bench server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
			user bench password_file "$TESTDIR/pass" deliver_to b@corp.example keep true \
			dedupe "$2"
	} | sed 's/log_level = "debug"/log_level = "info"/' >"$TESTDIR/$(basename "$1")-$2.conf"
}
# the two templates: an empty spool, and one with HISTORY messages' keys
# of the account (other content, committed a day ago: inside the window).
# Each is made by a poll of the same account name on a mailbox of one
# message: that poll runs the key maintenance (merge, prune, the Bloom
# filter of the large table, as a day's first poll does); then its time is
# set an hour back, so no timed poll does it (it is timed on its own below)
dovecot_add_user nomail 'bench-pw'
NMD=$(maildir_of nomail)
for t in empty full; do
	conf "$TESTDIR/tpl-$t" exact
	sed -i 's/user = "bench"/user = "nomail"/; s/keep = true/keep = false/' \
		"$TESTDIR/tpl-$t-exact.conf"
	"$PYTHON" -c 'import sys; open(sys.argv[1], "w").write("From: t@x\nSubject: template\n\nt\n")' \
		"$NMD/new/template.$t"
	maildir_fix_owner nomail
	"$POPGATE" -c "$TESTDIR/tpl-$t-exact.conf" poll --once 2>/dev/null ||
		bail_out "cannot create the $t spool"
	if [ "$t" = full ]; then
		sqlite3 "$TESTDIR/tpl-full/index.db" "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL
			SELECT i + 1 FROM c WHERE i < $HISTORY), k(kind) AS (VALUES (0), (1))
			INSERT INTO dedupe_new (account, kind, key, created, msg_id)
			SELECT 'bench', kind, randomblob(32),
			CAST(strftime('%s', 'now') AS INTEGER) - 86400, printf('%016X', i) FROM c, k;
			DELETE FROM meta WHERE key LIKE 'dedupe_%';" >/dev/null ||
			bail_out "cannot fill the history"
		"$PYTHON" -c 'import sys; open(sys.argv[1], "w").write("From: t@x\nSubject: again\n\nu\n")' \
			"$NMD/new/template2.$t"
		maildir_fix_owner nomail
		m0=$(date +%s.%N)
		"$POPGATE" -c "$TESTDIR/tpl-$t-exact.conf" poll --once 2>/dev/null ||
			bail_out "cannot merge the history"
		m1=$(date +%s.%N)
		diag "$(echo "$m0 $m1" | awk -v h=$((2 * HISTORY)) '{ printf "a poll of one message that merges %d keys into an empty table and builds the Bloom filter: %.3f s", h, $2 - $1 }')"
	fi
	sqlite3 "$TESTDIR/tpl-$t/index.db" "UPDATE meta SET value = value - 3600
		WHERE key LIKE 'dedupe_%'; PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null ||
		bail_out "cannot set the meta rows"
done
is "$(sqlite3 "$TESTDIR/tpl-full/index.db" "select count(*) from dedupe_bloom")" 1 \
	"the full template has the Bloom filter of its keys"
is "$(sqlite3 "$TESTDIR/tpl-full/index.db" "select count(*) from dedupe where kind = 0")" \
	"$((HISTORY + 2))" "the full template has $HISTORY exact keys (and as many Message-ID keys)"
for t in empty full; do
	conf "$TESTDIR/run-$t" exact
	conf "$TESTDIR/run-$t" off
done
# warm Dovecot's index and the page cache once
cp -a "$TESTDIR/tpl-empty" "$TESTDIR/run-empty"
"$POPGATE" -c "$TESTDIR/run-empty-off.conf" poll --once 2>/dev/null || bail_out "warm-up failed"

# one KIND MODE - a poll into a fresh copy of template KIND; prints
# "wall,cpu" seconds (cpu: user + system of the poll, all its threads)
one() {
	rm -rf "$TESTDIR/run-$1"
	cp -a "$TESTDIR/tpl-$1" "$TESTDIR/run-$1"
	sync
	local t0 t1
	t0=$(date +%s.%N)
	/usr/bin/time -f "%U %S" -o "$TESTDIR/cpu" "$POPGATE" -c "$TESTDIR/run-$1-$2.conf" \
		poll --once 2>"$TESTDIR/poll.log" || bail_out "popgate failed"
	t1=$(date +%s.%N)
	local got
	got=$(sqlite3 "$TESTDIR/run-$1/index.db" "select count(*) from messages where state = 'queued'")
	had=$(sqlite3 "$TESTDIR/tpl-$1/index.db" "select count(*) from messages where state = 'queued'")
	[ "$got" = $((COUNT + had)) ] || bail_out "$1/$2: $((got - had)) of $COUNT messages queued"
	echo "$t0 $t1 $(cat "$TESTDIR/cpu")" | awk '{ printf "%.4f,%.2f\n", $2 - $1, $3 + $4 }'
}
: >"$TESTDIR/times"
for r in $(seq "$RUNS"); do
	echo "$(one empty exact) $(one full exact) $(one empty off)" >>"$TESTDIR/times"
done
keys=$(sqlite3 "$TESTDIR/run-full/index.db" "select (select count(*) from dedupe) + (select count(*) from dedupe_new)")
is "$keys" $((2 * HISTORY + 2 + 2 * COUNT)) "the last full run recorded both keys of each message"
# the daily merge of the last full run's 2 x COUNT recent keys into the
# 2 x HISTORY keys, as spool_dedupe_maintain does it (one fsync'd
# transaction; without the Bloom filter's rebuild, timed above)
t0=$(date +%s.%N)
sqlite3 "$TESTDIR/run-full/index.db" "PRAGMA synchronous = FULL; BEGIN IMMEDIATE;
	INSERT OR IGNORE INTO dedupe SELECT * FROM dedupe_new
	ORDER BY account, kind, key, created, msg_id; DELETE FROM dedupe_new; COMMIT;" >/dev/null ||
	bail_out "merge failed"
t1=$(date +%s.%N)
is "$(sqlite3 "$TESTDIR/run-full/index.db" "select count(*) from dedupe")" $((2 * HISTORY + 2 + 2 * COUNT)) \
	"the merge moved every recent key"
diag "$(echo "$t0 $t1" | awk -v n=$((2 * COUNT)) -v h=$((2 * HISTORY)) \
	'{ printf "merge of %d recent keys into %d: %.3f s", n, h, $2 - $1 }')"
"$PYTHON" - "$COUNT" "$HISTORY" "$TESTDIR/times" <<'PYEOF'
import statistics, sys
n, h = int(sys.argv[1]), int(sys.argv[2])
cells = [[c.split(",") for c in l.split()] for l in open(sys.argv[3])]
rows = [[float(c[0]) for c in l] for l in cells]
cpu = [[float(c[1]) for c in l] for l in cells]
e, f, o = (statistics.median(r[i] for r in rows) for i in range(3))
ce, cf, co = (statistics.median(r[i] for r in cpu) for i in range(3))
print("# %d runs, alternating, medians; %d new 2 KiB messages per poll" % (len(rows), n))
print("# dedupe = exact, empty history:       %.3f s (%.0f msg/s)" % (e, n / e))
print("# dedupe = exact, %d messages' keys in window: %.3f s (%.0f msg/s)" % (h, f, n / f))
print("# dedupe = off:                        %.3f s (%.0f msg/s)" % (o, n / o))
print("# full / empty: %.3f (goal <= 1.10); per run: %s" % (
    f / e, " ".join("%.3f" % (r[1] / r[0]) for r in rows)))
print("# exact (empty) / off: %.3f" % (e / o))
print("# CPU (user+sys) medians: empty %.2f s, full %.2f s, off %.2f s; full / empty %.3f"
      % (ce, cf, co, cf / ce))
PYEOF
pass "benchmark ran"
done_testing
