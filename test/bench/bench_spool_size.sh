#!/bin/bash
# bench_spool_size.sh - does the index stay bounded? (a measurement, not a
# test; run as root):
#   1. N (default 20000) x 2 KiB drained and relayed by `run --once` into
#      smtp-sink: index.db and index.db-wal sizes afterwards;
#   2. a second N: the sizes again (growth?);
#   3. a third N, `run --once` killed with its process group after KILL_MS
#      (default 1500) ms, then started again: the time from that start to
#      its first relayed message, and the WAL size the restart found.
#
#   top_builddir=. bash test/bench/bench_spool_size.sh [N]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
N=${1:-20000}
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user bench pw-bench
password_file "$TESTDIR/pw" pw-bench
{
	conf_base "$SPOOL"
	conf_account bench server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user bench password_file "$TESTDIR/pw" deliver_to bench@corp.example
} >"$CONF"
sed -i 's/^log_level = "debug"/log_level = "info"/' "$CONF"

fill() {
	"$PYTHON" - "$(maildir_of bench)/new" "$N" "$1" <<'PY'
import os, sys
d, n, r = sys.argv[1], int(sys.argv[2]), sys.argv[3]
line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n"
for i in range(n):
    hdr = (b"Return-Path: <s%d@example.org>\nFrom: <s%d@example.org>\n"
           b"To: <bench@corp.example>\nMessage-ID: <b%s.%d@bench>\nSubject: bench %d\n\n"
           % (i, i, r.encode(), i, i))
    body = line * ((2048 - len(hdr)) // len(line))
    with open(os.path.join(d, "%d.b%s.%d.host" % (1000000 + i, r, i)), "wb") as f:
        f.write(hdr + body)
PY
	maildir_fix_owner bench
}
sizes() {
	local w=0
	[ -f "$SPOOL/index.db-wal" ] && w=$(stat -c %s "$SPOOL/index.db-wal")
	printf '%s: index.db %d bytes, index.db-wal %d bytes, freelist %s pages of %s\n' "$1" \
		"$(stat -c %s "$SPOOL/index.db")" "$w" \
		"$(spool_sql "$SPOOL" 'PRAGMA freelist_count')" "$(spool_sql "$SPOOL" 'PRAGMA page_count')"
}
for round in 1 2; do
	fill "$round"
	t0=$(date +%s.%N)
	pg "$LOG" -c "$CONF" run --once
	t1=$(date +%s.%N)
	sizes "after drain $round ($(echo "$t1 - $t0" | bc) s, $(spool_sql "$SPOOL" "select count(*) from messages where state='sent'") sent)"
done
fill 3
printf '### run to kill\n' >>"$LOG"
setsid "$POPGATE" -c "$CONF" run --once >/dev/null 2>>"$LOG" &
pid=$!
sleep "$(printf '%d.%03d' $((${KILL_MS:-1500} / 1000)) $((${KILL_MS:-1500} % 1000)))"
kill -KILL -- "-$pid"
wait "$pid" 2>/dev/null
sizes "after the kill"
: >"$TESTDIR/restart.log"
t0=$(date +%s.%N)
"$POPGATE" -c "$CONF" run --once 2>"$TESTDIR/restart.log" &
pid=$!
for ((i = 0; i < 6000; i++)); do
	grep -q 'status=sent' "$TESTDIR/restart.log" && break
	sleep 0.005
done
t1=$(date +%s.%N)
wait "$pid"
first=$(grep -m1 'status=sent' "$TESTDIR/restart.log" | cut -c1-23)
echo "restart: first message relayed $(echo "$t1 - $t0" | bc) s after the start (polled; first sent line at $first, started $(date -d @"$t0" +%H:%M:%S.%N | cut -c1-12))"
sizes "after the restart"
