#!/bin/bash
# t_recovery.sh - startup recovery for states a crash leaves behind, made
# without killing anything: a stray file in SPOOL/tmp (a write that never
# reached rename) is removed; a row stuck in 'sending' (a relay that died
# before recording the outcome) returns to 'queued' and is then sent, exactly
# once at the sink.  Round 3: a committed file with no index row is removed
# (its message was never DELEted, so it is still on the server), a 'sent'
# row whose file is still there loses the file, and a queued row whose file
# is missing (and has no inline copy in the index) is held rather than dropped.
# Round 4: a small message whose file is gone is rewritten from its inline
# body in the index and sent intact.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox rec 'rec-pw'
mail_gen --maildir "$(maildir_of rec)" --expected "$TESTDIR/exp" --count 6 --prefix rec ||
	bail_out "mkmail failed"
{
	conf_base "$SPOOL"
	conf_account rec server localhost port "$POP3_PORT" tls starttls ca_file "$TESTDIR/pop/ca.pem" \
		user rec password_file "$TESTDIR/pass" deliver_to "$RCPT"
} >"$CONF"

pg "$LOG" -c "$CONF" poll --once
is "$(spool_sql "$SPOOL" "select count(*) from messages where state='queued'")" 6 "6 messages queued" ||
	note "$LOG"
ok "[ -d '$SPOOL/tmp' ]" "the spool has a tmp/ directory"

# ---- round 1: `queue` runs recovery -------------------------------------
stray=$SPOOL/tmp/stray.$$
printf 'Subject: half written\r\n\r\npartial' >"$stray"
id1=$(spool_sql "$SPOOL" "select id from messages order by id limit 1")
spool_sql "$SPOOL" "update messages set state='sending' where id='$id1'; update recipients set state='sending' where msg_id='$id1'"
is "$(spool_sql "$SPOOL" "select state from messages where id='$id1'")" sending "row $id1 set to sending"

pg "$LOG" -c "$CONF" queue >"$TESTDIR/queue.out"
out=$(cat "$TESTDIR/queue.out")
is "$PG_RC" 0 "popgate queue exits 0" || note "$LOG"
ok "[ ! -e '$stray' ]" "queue: the stray tmp file is gone"
is "$(spool_sql "$SPOOL" "select state from messages where id='$id1'")" queued "queue: the 'sending' row was requeued"
like "$out" "$id1" "queue lists the requeued message"
like "$(cat "$LOG")" 'recover' "the recovery is logged"

# ---- round 2: `relay --once` runs recovery, then sends -----------------
stray2=$SPOOL/tmp/stray2.$$
printf 'partial' >"$stray2"
id2=$(spool_sql "$SPOOL" "select id from messages order by id desc limit 1")
spool_sql "$SPOOL" "update messages set state='sending' where id='$id2'; update recipients set state='sending' where msg_id='$id2'"
pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "relay --once exits 0" || note "$LOG"
ok "[ ! -e '$stray2' ]" "relay: the stray tmp file is gone"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "sent|6" \
	"relay: the requeued messages were sent with the rest"
is "$(count_files "$SPOOL/msg") $(count_files "$SPOOL/tmp")" "0 0" "relay: spool msg/ and tmp/ are empty"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)

# ---- round 3: orphan file, sent row with file, queued row without file -----
mail_gen --maildir "$(maildir_of rec)" --expected "$TESTDIR/exp3" --count 3 --prefix rec3 \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" poll --once
mapfile -t ids < <(spool_sql "$SPOOL" "select id from messages where state='queued' order by id")
is "${#ids[@]}" 3 "round 3: 3 new messages queued"
gone=${ids[0]} early=${ids[1]} rest=${ids[2]}
orphan=$SPOOL/msg/00000000DEADBEEF
cp "$SPOOL/msg/$rest" "$orphan"
rm -f "$SPOOL/msg/$gone"
# small messages also live in the index (inline bodies, see docs/internals.md):
# recovery would rewrite the file from there, so lose that copy too
spool_sql "$SPOOL" "delete from bodies where msg_id='$gone'"
spool_sql "$SPOOL" "update messages set state='sent' where id='$early'; update recipients set state='sent' where msg_id='$early'"
pg "$LOG" -c "$CONF" queue --all >"$TESTDIR/queue3.out"
is "$PG_RC" 0 "round 3: queue exits 0" || note "$LOG"
ok "[ ! -e '$orphan' ]" "round 3: a message file without an index row is removed"
ok "[ ! -e '$SPOOL/msg/$early' ]" "round 3: the file of a 'sent' row is removed"
is "$(spool_sql "$SPOOL" "select state from messages where id='$gone'")" held \
	"round 3: a queued row whose file is missing is held, not dropped"
before=$(sink_count)
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select state from messages where id='$rest'")" sent "round 3: the intact message is sent"
is "$(sink_count)" "$((before + 1))" "round 3: exactly one more transaction at the sink"
is "$(spool_sql "$SPOOL" "select state from messages where id='$gone'")" held "round 3: the held row stays held"

# ---- round 4: a lost small-message file comes back from the index --------
mail_gen --maildir "$(maildir_of rec)" --expected "$TESTDIR/exp4" --count 1 --prefix rec4 \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" poll --once
id4=$(spool_sql "$SPOOL" "select id from messages where state='queued'")
rm -f "$SPOOL/msg/$id4"
pg "$LOG" -c "$CONF" queue >/dev/null
ok "[ -s '$SPOOL/msg/$id4' ]" "round 4: the lost file was rewritten from its inline body"
like "$(cat "$LOG")" 'inline_restored=1' "round 4: the restore is logged"
before=$(sink_count)
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" "$((before + 1))" "round 4: it is sent"
run_checks mail_check --expected "$TESTDIR/exp4" --format sink --rcpt "$RCPT" "$(ls -t "$SINK_DIR"/dump.* | head -n 1)"

done_testing
