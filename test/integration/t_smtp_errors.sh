#!/bin/bash
# t_smtp_errors.sh - the relay's outcomes: a 5xx to RCPT or to the final dot
# holds the message with the server's reply; a 4xx defers it with a future
# next_attempt; an SMTP host that is down defers it.  Nothing is dropped:
# the spool file stays until the message is sent.  A deferred message is
# not retried before it is due, and is sent once it is.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem

# scenario NAME - a mailbox with 2 messages polled into its own spool;
# sets SPOOL CONF LOG (the smtp port is filled in later by set_smtp).
scenario() {
	local n=$1
	SPOOL=$TESTDIR/spool-$n
	CONF=$TESTDIR/$n.conf
	LOG=$TESTDIR/$n.log
	dovecot_add_user "$n" "pw-$n"
	password_file "$TESTDIR/$n.pass" "pw-$n"
	mail_gen --maildir "$(maildir_of "$n")" --expected "$TESTDIR/exp-$n" --count 2 \
		--prefix "$n" --shapes simple >/dev/null || bail_out "mkmail failed"
	set_smtp 25
	pg "$LOG" -c "$CONF" poll --once
	is "$(spool_sql "$SPOOL" "select count(*) from messages where state='queued'")" 2 \
		"$n: 2 messages queued" || note "$LOG"
}

set_smtp() {
	local n=${SPOOL##*/spool-}
	{
		SMTP_PORT=$1 conf_base "$SPOOL"
		conf_account "$n" server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
			user "$n" password_file "$TESTDIR/$n.pass" deliver_to "$n@corp.example"
	} >"$CONF"
}

states() { spool_sql "$SPOOL" "select state, count(*) from messages group by state order by state"; }

# ---- 5xx to RCPT: held with the reply --------------------------------------
scenario hard
start_smtp_sink "$TESTDIR/sink-hard" -f RCPT -B "550 5.1.1 Recipient address rejected: t_smtp_errors" ||
	bail_out "cannot start smtp-sink"
set_smtp "$SMTP_PORT"
pg "$LOG" -c "$CONF" relay --once
is "$(states)" "held|2" "5xx RCPT: both messages held" || note "$LOG"
like "$(spool_sql "$SPOOL" "select last_reply from messages limit 1")" \
	'550.*Recipient address rejected: t_smtp_errors' "5xx RCPT: last_reply holds the server's reply"
like "$(spool_sql "$SPOOL" "select group_concat(state) from recipients")" '^held,held$' \
	"5xx RCPT: the recipient rows are held"
is "$(spool_count_stored "$SPOOL")" 2 "5xx RCPT: the stored messages stay"
is "$(sink_count)" 0 "5xx RCPT: nothing reached the sink"
id=$(spool_sql "$SPOOL" "select id from messages limit 1")
like "$(pg "$LOG" -c "$CONF" queue --state held)" "$id.*held" "queue --state held lists the message"
# a held message is not retried by the next relay run
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select group_concat(attempts) from messages")" "1,1" \
	"5xx RCPT: a held message is not retried"
stop_smtp_sink

# ---- 5xx to the final dot ---------------------------------------------------
scenario dot
start_smtp_sink "$TESTDIR/sink-dot" -f . -B "554 5.7.1 Message refused: t_smtp_errors" ||
	bail_out "cannot start smtp-sink"
set_smtp "$SMTP_PORT"
pg "$LOG" -c "$CONF" relay --once
is "$(states)" "held|2" "5xx after DATA: both messages held" || note "$LOG"
like "$(spool_sql "$SPOOL" "select last_reply from messages limit 1")" \
	'554.*Message refused: t_smtp_errors' "5xx after DATA: last_reply holds the reply"
is "$(spool_count_stored "$SPOOL")" 2 "5xx after DATA: the stored messages stay"
stop_smtp_sink

# ---- 4xx to RCPT: deferred -----------------------------------------------
scenario soft
start_smtp_sink "$TESTDIR/sink-soft" -r RCPT -b "451 4.3.0 Try again later: t_smtp_errors" ||
	bail_out "cannot start smtp-sink"
set_smtp "$SMTP_PORT"
now=$(date +%s)
pg "$LOG" -c "$CONF" relay --once
is "$(states)" "deferred|2" "4xx RCPT: both messages deferred" || note "$LOG"
like "$(spool_sql "$SPOOL" "select last_reply from messages limit 1")" \
	'451.*Try again later: t_smtp_errors' "4xx RCPT: last_reply holds the reply"
is "$(spool_sql "$SPOOL" "select count(*) from messages where next_attempt > $now")" 2 \
	"4xx RCPT: next_attempt is in the future"
is "$(spool_sql "$SPOOL" "select group_concat(attempts) from messages")" "1,1" "4xx RCPT: one attempt counted"
is "$(spool_count_stored "$SPOOL")" 2 "4xx RCPT: the stored messages stay"
stop_smtp_sink

# a working sink now: nothing is due yet, so nothing is sent ...
start_smtp_sink "$TESTDIR/sink-soft2" || bail_out "cannot start smtp-sink"
set_smtp "$SMTP_PORT"
pg "$LOG" -c "$CONF" relay --once
is "$(states) $(sink_count)" "deferred|2 0" "4xx: not retried before next_attempt"
# ... until it is due
spool_sql "$SPOOL" "update messages set next_attempt = 0"
pg "$LOG" -c "$CONF" relay --once
is "$(states)" "sent|2" "4xx: sent once due" || note "$LOG"
run_checks mail_check --expected "$TESTDIR/exp-soft" --format sink --rcpt soft@corp.example $(sink_files)
is "$(spool_count_stored "$SPOOL")" 0 "4xx: the stored messages are gone once sent"
stop_smtp_sink

# ---- SMTP host down: deferred -------------------------------------------
scenario down
set_smtp "$(free_port)"
now=$(date +%s)
pg "$LOG" -c "$CONF" relay --once
isnt "$PG_RC" 0 "host down: relay reports failure"
is "$(states)" "deferred|2" "host down: both messages deferred" || note "$LOG"
is "$(spool_sql "$SPOOL" "select count(*) from messages where next_attempt > $now")" 2 \
	"host down: next_attempt is in the future"
is "$(spool_count_stored "$SPOOL")" 2 "host down: the stored messages stay"

done_testing
