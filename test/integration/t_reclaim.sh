#!/bin/bash
# t_reclaim.sh - a relay session that dies while the spool stays open (a
# session of `relay --once`, the daemon's relay child) does not leave its
# messages `sending` until the next restart: the relay or the daemon takes
# its claims back at once (spool_reclaim), the recipients the host had
# accepted (the session's journal) as sent, the rest queued again and each
# logged as requeued-after-crash; the next round delivers them, none twice.
#
# The mail host is test/fake/fakesmtp.py in stall:N mode: it answers N
# transactions, then never answers the next final "." (so the session is
# caught mid-batch and killed with SIGKILL there), then serves normally.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox reclaim 'r-pass'
# start_fake DIR MODE - (re)start fakesmtp.py writing to DIR; sets FAKE,
# FAKE_PORT
start_fake() {
	[ -n "${FAKE_PID:-}" ] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
	FAKE=$1
	mkdir -p "$FAKE"
	"$PYTHON" "$top_srcdir/test/fake/fakesmtp.py" --port-file "$FAKE/port" --dir "$FAKE" \
		--mode "$2" >>"$FAKE/log" 2>&1 &
	FAKE_PID=$!
	_track_pid "fake:$FAKE_PID"
	local n
	for ((n = 0; n < 200; n++)); do [ -s "$FAKE/port" ] && break; sleep 0.05; done
	[ -s "$FAKE/port" ] || bail_out "fakesmtp.py did not start"
	FAKE_PORT=$(cat "$FAKE/port")
}

# write_conf SESSIONS INTERVAL
write_conf() {
	{
		SMTP_PORT=$FAKE_PORT conf_base "$SPOOL"
		conf_account reclaim server 127.0.0.1 port "$POP3_PORT" tls none \
			allow_plaintext true user reclaim password_file "$TESTDIR/pass" \
			deliver_to "$RCPT" interval "$2"
	} | sed "s/^smtp {\$/smtp {\n  max_sessions = $1/" >"$CONF"
}

txns() { find "$FAKE" -name 'txn.[0-9][0-9][0-9][0-9]' | wc -l; }
datas() { grep -c '^DATA' "$FAKE/commands.log" 2>/dev/null || echo 0; }
states() { spool_sql "$SPOOL" "select state, count(*) from messages group by state order by state" | tr '\n' ' '; }
journals() { find "$SPOOL" -maxdepth 1 -name 'relay.*.journal' | wc -l; }
# children PID - the child processes of PID that have not exited (a session
# that is done stays a zombie until the relay reaps it)
children() { ps --ppid "$1" -o pid=,stat= | awk '$2 !~ /^Z/ { print $1 }' | xargs; }

# ---- 1: a session of relay --once is killed mid-batch --------------------------
start_fake "$TESTDIR/fake1" stall:5
write_conf 2 3600
mail_gen --maildir "$(maildir_of reclaim)" --expected "$TESTDIR/exp" --count 20 --prefix r1 \
	--shapes simple || bail_out "mkmail failed"
pg "$LOG" -c "$CONF" poll --once
is "$(states)" "queued|20 " "20 messages spooled"

timeout 120 "$POPGATE" -c "$CONF" relay --once 2>>"$LOG" &
TPID=$!
ok "wait_for datas 6" "the host answered 5 messages and hangs on the 6th" || note "$FAKE/log"
is "$(txns)" 5 "5 transactions at the host"
RELAY=$(children "$TPID")
SESSION=$(children "$RELAY")
is "$(echo "$SESSION" | wc -w)" 1 "one relay session is still running (it claimed them all)"
kill -KILL $SESSION
wait "$TPID"
RC=$?
isnt "$RC" 0 "relay --once reports the lost session (exit $RC)"
like "$(cat "$LOG")" "ended without a report" "the log names the session that ended"
is "$(states)" "queued|15 sent|5 " \
	"no message is left sending: 5 sent from the session's journal, 15 queued again"
is "$(journals)" 0 "the dead session's journal was applied and removed"
like "$(cat "$LOG")" 'relay status=reclaimed reason="a relay session stopped" requeued=15 journal_sent=5 journal_rcpts=5' \
	"the relay says what it took back"
is "$(grep -c 'status=requeued-after-crash' "$LOG")" 15 \
	"each requeued message is logged (the one window for a duplicate)"
is "$(spool_sql "$SPOOL" "select count(*) from messages where claim is not null")" 0 \
	"no claim is left on any message"

pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "the next relay --once delivers the rest"
is "$(states)" "sent|20 " "all 20 sent"
is "$(txns)" 20 "20 transactions at the host: none of the 5 journalled was sent again"
is "$(cat "$FAKE"/txn.[0-9][0-9][0-9][0-9] | grep -i '^message-id:' | sort -u | wc -l)" 20 \
	"20 distinct messages at the host"
is "$(grep -c 'status=recovered' "$LOG")" 0 "none of it needed the recovery of an exclusive open"

# ---- 2: the daemon's relay child is killed (max_sessions = 1) -----------------
start_fake "$TESTDIR/fake2" stall:5
write_conf 1 3600
mail_gen --maildir "$(maildir_of reclaim)" --expected "$TESTDIR/exp2" --count 10 --prefix r2 \
	--shapes simple || bail_out "mkmail failed"
: >"$LOG"
timeout 300 "$POPGATE" -c "$CONF" run -f 2>>"$LOG" &
TPID=$!
daemon_up() { children "$TPID" | wc -w; }
wait_for daemon_up 1 || bail_out "the daemon did not start"
DPID=$(pgrep -P "$TPID")
started() { grep -c 'status=started' "$LOG"; }
wait_for started 1 || bail_out "the daemon did not say it started"
# the account was polled an hour ago by its interval: SIGUSR1 polls it now
kill -USR1 "$DPID"
ok "wait_for datas 6" "the daemon relayed 5 of the new messages and hangs on the 6th" ||
	note "$LOG" 20
nchildren() { children "$DPID" | wc -w; }
ok "wait_for nchildren 1" "the poll is done, the stalled relay child runs"
RELAY=$(children "$DPID")
is "$(echo "$RELAY" | wc -w)" 1 "the daemon has one child: the relay"
kill -KILL $RELAY
is "$(txns)" 5 "5 of them had been accepted when the relay was killed"
relayed_all() { spool_sql "$SPOOL" "select count(*) from messages where state = 'sent'"; }
ok "wait_for relayed_all 30" "the daemon delivers the rest without a restart" || note "$LOG" 30
like "$(cat "$LOG")" "relay status=killed signal=9" "the daemon saw its relay killed"
like "$(cat "$LOG")" 'relay status=reclaimed reason="a relay session stopped" requeued=5 journal_sent=5' \
	"and took its claims back at once"
is "$(grep -c 'status=requeued-after-crash' "$LOG")" 5 "each requeued message is logged"
kill -0 "$DPID" 2>/dev/null
is "$?" 0 "the daemon kept running"
kill -TERM "$DPID"
wait "$TPID"
is "$?" 0 "SIGTERM: the daemon exits 0"
is "$(states)" "sent|30 " "all 30 sent"
is "$(txns)" 10 "the 10 new messages at the host, none twice"
is "$(journals)" 0 "no journal left"
is "$(maildir_count reclaim)" 0 "the mailbox is empty"

done_testing
