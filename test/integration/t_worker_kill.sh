#!/bin/bash
# t_worker_kill.sh - the daemon's poll workers (issue 16): polls run in
# long-lived worker processes, one account after another.  A worker killed
# with -9 in the middle of a poll (test/fake/fakepop3.py --retr-stall: it
# has fetched two messages and waits for the third) loses nothing and sends
# no DELE; the daemon keeps running, logs the kill, polls the account again
# on SIGUSR1 with a fresh worker, and every message reaches the mail host
# exactly once.  A reload (SIGHUP) while a worker is polling lets that poll
# finish and count; the next polls run in a worker forked with the new
# configuration.  Idle workers go once no poll is due; SIGTERM exits 0.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
no_plan

SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
OFF=$TESTDIR/stall-off

start_dovecot "$TESTDIR/pop" >/dev/null || bail_out "cannot start Dovecot"
dovecot_add_user other "other-pw"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
start_fakepop3 "$TESTDIR/fake" mailbox --messages 3 --user u --password p \
	--retr-stall 3 --retr-stall-off "$OFF" || bail_out "cannot start fakepop3"
password_file "$TESTDIR/pass" p
password_file "$TESTDIR/pass-other" other-pw

write_conf() {
	{
		conf_base "$SPOOL" gw.test
		conf_account stall server 127.0.0.1 port "$FAKEPOP3_PORT" tls none \
			allow_plaintext true user u password_file "$TESTDIR/pass" \
			deliver_to stall@corp.example interval 3600
		conf_account other server localhost port "$POP3_PORT" tls starttls \
			ca_file "$TESTDIR/pop/ca.pem" user other password_file "$TESTDIR/pass-other" \
			deliver_to other@corp.example interval 3600 "$@"
	} >"$CONF"
}
# children PID - the live (not zombie) children of PID
children() { ps --ppid "$1" -o pid=,stat= | awk '$2 !~ /^Z/ { print $1 }' | xargs; }
nchildren() { children "$PID" | wc -w; }
rows() { spool_sql "$SPOOL" "select account, count(*) from messages group by account order by account" | tr '\n' ' '; }
dup_uidls() { spool_sql "$SPOOL" "select count(*) from (select account, uidl from messages group by 1, 2 having count(*) > 1)"; }
worker_of() { grep "account=$1 status=polling pid=" "$LOG" | tail -1 | sed 's/.* pid=\([0-9]*\).*/\1/'; }
count() { grep -c -- "$1" "$LOG"; }

mail_gen --maildir "$(maildir_of other)" --expected "$TESTDIR/exp" --count 2 --prefix o1 --shapes simple ||
	bail_out "mkmail failed"
maildir_fix_owner other
write_conf

# ---- 1: a worker killed with -9 mid-poll ---------------------------------
rm -f "$OFF"
"$POPGATE" -c "$CONF" run -f 2>"$LOG" &
PID=$!
fetched() { grep -c 'account=stall uidl=.* status=fetched ' "$LOG"; }
ok "wait_for fetched 2" "the stall account's poll fetched two messages and waits for the third" ||
	note "$LOG" 20
other_done() { spool_sql "$SPOOL" "select count(*) from accounts where name = 'other' and last_poll > 0"; }
ok "wait_for other_done 1" "the other account was polled meanwhile" || note "$LOG" 20
W1=$(worker_of stall)
like "$(children "$PID")" "$W1" "the poll runs in a child of the daemon (pid $W1)"
kill -KILL "$W1"
killed() { count "pid=$W1 status=killed signal=9"; }
ok "wait_for killed 1" "the daemon logs the worker's death" || note "$LOG" 20
ok "kill -0 $PID" "the daemon keeps running"
is "$(grep -c '^DELE' "$FAKEPOP3_REC")" 0 "the killed poll sent no DELE"
is "$(grep -c '^QUIT' "$FAKEPOP3_REC")" 0 "nor a QUIT"
is "$(count_files "$SPOOL/tmp")" 0 "no half-written file left in tmp/"

# ---- the account is polled again: nothing lost, nothing twice -------------
touch "$OFF"
kill -USR1 "$PID"
sent_all() { spool_sql "$SPOOL" "select count(*) from messages where state = 'sent'"; }
ok "wait_for sent_all 5" "after SIGUSR1 every message is relayed" || note "$LOG" 30
W2=$(worker_of stall)
isnt "$W2" "$W1" "the new poll ran in another worker (pid $W2)"
is "$(rows)" "other|2 stall|3 " "each account's messages are in the index once"
is "$(dup_uidls)" 0 "no UIDL twice"
is "$(grep -c '^DELE' "$FAKEPOP3_REC")" 3 "the three messages were deleted on the server, once each"
sink5() { sink_count; }
ok "wait_for sink5 5" "five messages at the mail host"
is "$(sink_files | xargs cat | grep -i '^message-id:' | sort -u | wc -l)" 5 \
	"five different ones: none twice"
is "$(spool_sql "$SPOOL" "select last_result from accounts where name = 'stall'")" ok \
	"the account's state records the successful poll"
ok "wait_for nchildren 0" "with no poll due the idle workers go" || note "$LOG" 10

# ---- 2: SIGHUP while a worker polls ---------------------------------------
rm -f "$OFF"
start_fakepop3 "$TESTDIR/fake2" mailbox --messages 3 --user u --password p \
	--retr-stall 3 --retr-stall-off "$OFF" || bail_out "cannot start the second fakepop3"
write_conf2() {
	write_conf
	conf_account stall2 server 127.0.0.1 port "$FAKEPOP3_PORT" tls none \
		allow_plaintext true user u password_file "$TESTDIR/pass" \
		deliver_to stall2@corp.example interval 3600 >>"$CONF"
}
write_conf2
kill -HUP "$PID"
ok "wait_for 'count \"reload status=ok\"' 1" "the reload adding an account is logged"
fetched2() { count 'account=stall2 uidl=.* status=fetched '; }
ok "wait_for fetched2 2" "the added account is polled at once: two messages, waits for the third" ||
	note "$LOG" 20
W3=$(worker_of stall2)
seen=$(grep -o 'status=polling pid=[0-9]*' "$LOG" | sed 's/.*=//' | sort -u | xargs)
write_conf2
kill -HUP "$PID"
ok "wait_for 'count \"reload status=ok\"' 2" "a second reload while that poll runs"
touch "$OFF"
# (the fake ends the session that waited: the poll fails, temporary)
result2() { spool_sql "$SPOOL" "select last_result from accounts where name = 'stall2'"; }
ok "wait_for result2 temporary" "the poll that straddled the reload ended and its result counts" ||
	note "$LOG" 30
ok "wait_for sent_all 7" "its two committed messages are relayed" || note "$LOG" 30
ok "wait_for 'count \"status=worker-ended pid=$W3\"' 1" \
	"its worker (from before the reload) was retired after its poll"
kill -USR1 "$PID"
polls_other() { grep -c "account=other status=polling pid=" "$LOG"; }
ok "wait_for polls_other 3" "after the reload the accounts are polled again" || note "$LOG" 20
W4=$(worker_of other)
is "$(echo " $seen " | grep -c " $W4 ")" 0 "by a worker forked after the reload (pid $W4, not one of $seen)"
is "$(dup_uidls)" 0 "still no UIDL twice"

kill -TERM "$PID"
wait "$PID"
is "$?" 0 "SIGTERM: the daemon exits 0"
is "$(children "$PID" 2>/dev/null | wc -w)" 0 "no worker is left running"
like "$(cat "$LOG")" 'status=stopped reason="signal"' "the log says it stopped"

done_testing
