#!/bin/bash
# bench_pop3.sh - acceptance point 9 of issue 3: drain COUNT (default
# 10,000) x 2 KiB messages from a private Dovecot into the spool with
# `popgate poll --once` (plain POP3 on loopback, pipelining, keep = true so
# the mailbox stays the same), against test/bench/minpop3 (a minimal
# pipelined RETR client that only counts) on the same mailbox, BENCH_RUNS
# (default 5) times alternating.  Prints the medians and the ratio.
# Not a test: run by hand or `make bench`.
#   top_builddir=... bash test/bench/bench_pop3.sh [COUNT]
# BENCH_SPOOL=DIR puts the spool elsewhere (e.g. on tmpfs, to separate the
# POP3 side from the file system's cost of creating files).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
POPGATE=$top_builddir/popgate
. "$top_srcdir/test/lib/common.sh"
require_env
COUNT=${1:-10000}
cc -O2 -o "$TESTDIR/minpop3" "$top_srcdir/test/bench/minpop3.c" || bail_out "cannot build minpop3"
start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
dovecot_add_user bench 'bench-pw'
password_file "$TESTDIR/pass" 'bench-pw'
MD=$(maildir_of bench)
"$PYTHON" - "$MD/cur" "$COUNT" <<'PYEOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
body = ("x" * 76 + "\n") * 24
for i in range(n):
    msg = "From: a%d@remote.example\nTo: b@corp.example\nSubject: bench %d\n\n%s" % (i, i, body)
    with open(os.path.join(d, "%d.bench%d:2," % (1700000000 + i, i)), "w") as f:
        f.write(msg[:2048] + "\n")
PYEOF
maildir_fix_owner bench
{
	conf_base "${BENCH_SPOOL:-$TESTDIR/spool}"
	conf_account bench server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user bench password_file "$TESTDIR/pass" deliver_to b@corp.example keep true
} | sed 's/log_level = "debug"/log_level = "info"/' >"$TESTDIR/popgate.conf"
# warm Dovecot's index and the page cache once
"$TESTDIR/minpop3" 127.0.0.1 "$POP3_PORT" bench bench-pw "$COUNT" >/dev/null || bail_out "minpop3 failed"
RUNS=${BENCH_RUNS:-5}
SP=${BENCH_SPOOL:-$TESTDIR/spool}
: >"$TESTDIR/times"
for r in $(seq "$RUNS"); do
	# alternate, same mailbox: the minimal client, then popgate on an empty spool
	rm -rf "$SP"
	t0=$(date +%s.%N)
	"$TESTDIR/minpop3" 127.0.0.1 "$POP3_PORT" bench bench-pw "$COUNT" >"$TESTDIR/min.out" ||
		bail_out "minpop3 failed"
	t1=$(date +%s.%N)
	$POPGATE_WRAPPER /usr/bin/time -f "%U %S %M" -o "$TESTDIR/cpu" "$POPGATE" \
		-c "$TESTDIR/popgate.conf" poll --once 2>"$TESTDIR/popgate.log" || bail_out "popgate failed"
	t2=$(date +%s.%N)
	got=$(sqlite3 "$SP/index.db" "select count(*) from messages")
	[ "$got" = "$COUNT" ] || bail_out "run $r: $got of $COUNT messages in the spool"
	echo "$t0 $t1 $t2 $(cat "$TESTDIR/cpu")" >>"$TESTDIR/times"
done
"$PYTHON" - "$COUNT" "$(cat "$TESTDIR/min.out")" "$TESTDIR/times" <<'PYEOF'
import statistics, sys
n, minout = int(sys.argv[1]), sys.argv[2]
rows = [list(map(float, l.split())) for l in open(sys.argv[3])]
mins = [r[1] - r[0] for r in rows]
pops = [r[2] - r[1] for r in rows]
cpus = [r[3] + r[4] for r in rows]
ratios = [p / m for p, m in zip(pops, mins)]
m, p, c = statistics.median(mins), statistics.median(pops), statistics.median(cpus)
print("# %d runs, alternating, medians; every run committed all %d messages" % (len(rows), n))
print("# minimal pipelined RETR client: %.3f s (%s, %.0f msg/s)" % (m, minout, n / m))
print("# popgate poll --once into the spool: %.3f s (%.0f msg/s; CPU %.3f s; peak RSS %.1f MiB)"
      % (p, n / p, c, max(r[5] for r in rows) / 1024))
print("# ratio popgate / minimal: %.2fx (median of the per-run ratios; each run: %s) (goal: <= 2x)"
      % (statistics.median(ratios), " ".join("%.2f" % x for x in ratios)))
PYEOF
pass "benchmark ran"
done_testing
