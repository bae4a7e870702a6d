#!/bin/bash
# t_daemon.sh - `popgate run -f`: polls on its interval, relays what it
# fetched, and on SIGTERM/SIGINT finishes cleanly with exit 0 and nothing
# lost, wherever the signal lands.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox daemon 'd-pass'
{
	conf_base "$SPOOL"
	conf_account daemon server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user daemon password_file "$TESTDIR/pass" \
		deliver_to "$RCPT" interval 1
} >"$CONF"

sinkn() { sink_count; }
BASE=0
fetched_more() { spool_sql "$SPOOL" "select count(*) > $BASE + 15 from messages"; }

mail_gen --maildir "$(maildir_of daemon)" --expected "$TESTDIR/exp" --count 10 --prefix d1 \
	--shapes simple || bail_out "mkmail failed"
timeout 300 "$POPGATE" -c "$CONF" run -f 2>>"$LOG" &
PID=$!
ok "wait_for sinkn 10" "run -f fetched and relayed the first 10 messages"
mail_gen --maildir "$(maildir_of daemon)" --expected "$TESTDIR/exp" --count 5 --prefix d2 \
	--shapes simple
ok "wait_for sinkn 15" "new mail is picked up on the next interval and relayed"
sig_under_timeout TERM "$PID"
wait "$PID"
is "$?" 0 "SIGTERM: run exits 0"
like "$(cat "$LOG")" "status=stopped" "the log says it stopped"
is "$(maildir_count daemon)" 0 "the mailbox is empty"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state <> 'sent'")" 0 \
	"nothing left unsent in the spool"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)

# a signal in the middle of a larger drain: whatever moment it lands,
# every message is on the server or in the spool, never both deleted and
# missing, and a restart finishes the job.
total=15
for sig in INT TERM; do
	mail_gen --maildir "$(maildir_of daemon)" --expected "$TESTDIR/exp" --count 300 \
		--prefix "d3$sig" --shapes simple --big-mib 0
	total=$((total + 300))
	BASE=$(spool_sql "$SPOOL" "select count(*) from messages")
	timeout 300 "$POPGATE" -c "$CONF" run -f 2>>"$LOG" &
	PID=$!
	wait_for fetched_more 1
	sig_under_timeout "$sig" "$PID"
	wait "$PID"
	is "$?" 0 "SIG$sig during a drain: run exits 0"
	# every message is in exactly one place: at the sink (sent), in the
	# spool (committed, not yet sent) or still on the server.  (Rows of
	# sent messages gone from the server may be pruned, so count the sink.)
	at_sink=$(sink_count)
	unsent=$(spool_sql "$SPOOL" "select count(*) from messages where state <> 'sent'")
	on_server=$(maildir_count daemon)
	ok "[ $((at_sink + unsent + on_server)) -eq $total ]" \
		"SIG$sig: nothing lost or doubled (sink $at_sink + spool $unsent + server $on_server = $total)"
	is "$(count_files "$SPOOL/tmp")" 0 "SIG$sig: no half-written file left in tmp/"
done
timeout 300 "$POPGATE" -c "$CONF" run -f 2>>"$LOG" &
PID=$!
ok "wait_for sinkn 615" "a restart drains and relays the rest"
sig_under_timeout TERM "$PID"
wait "$PID"
is "$(maildir_count daemon)" 0 "the mailbox is empty at the end"
is "$(spool_sql "$SPOOL" "select count(*) - count(distinct account||uidl) from messages")" 0 \
	"no UIDL twice in the index"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)
done_testing
