#!/bin/bash
# t_recovery.sh - startup recovery for states a crash leaves behind, made
# without killing anything: a stray file in SPOOL/tmp (a write that never
# reached rename) is removed; a row stuck in 'sending' (a relay that died
# before recording the outcome) returns to 'queued' and is then sent, exactly
# once at the sink.  Round 3: a committed file with no index row is removed
# (its message was never DELEted, so it is still on the server), a 'sent'
# row whose file is still there loses the file, a queued row whose file
# is missing is held rather than dropped, and a copy an older popgate left
# beside an in-index body is removed.  Round 4: a small message's only copy
# is its index row (no file anywhere); recovery leaves it alone and it is
# sent intact.
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
# two large messages (over 64 KiB: they have files in msg/) and a small one
# (its only copy is its row in the index)
for p3 in rec3a rec3b; do
	mail_gen --maildir "$(maildir_of rec)" --expected "$TESTDIR/exp3" --count 1 --prefix $p3 \
		--big-mib 1 --shapes simple >/dev/null
done
mail_gen --maildir "$(maildir_of rec)" --expected "$TESTDIR/exp3" --count 1 --prefix rec3c \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" poll --once
mapfile -t ids < <(spool_sql "$SPOOL" "select id from messages where state='queued' order by size desc, id")
is "${#ids[@]}" 3 "round 3: 3 new messages queued"
gone=${ids[0]} early=${ids[1]} rest=${ids[2]}
is "$(spool_sql "$SPOOL" "select in_index from messages where id in ('$gone', '$early', '$rest') order by size desc, id" | tr '\n' ' ')" \
	"0 0 1 " "round 3: the large messages are files, the small one is in the index"
ok "[ -e '$SPOOL/msg/$gone' ] && [ -e '$SPOOL/msg/$early' ] && [ ! -e '$SPOOL/msg/$rest' ]" \
	"round 3: msg/ holds exactly the large messages"
orphan=$SPOOL/msg/00000000DEADBEEF
spool_msg "$SPOOL" "$rest" >"$orphan"
# a copy of the small message beside its index row, as an older popgate
# left them: the row is the message, the copy goes
spool_msg "$SPOOL" "$rest" >"$TESTDIR/rest.copy"
cp "$TESTDIR/rest.copy" "$SPOOL/msg/$rest"
rm -f "$SPOOL/msg/$gone"
spool_sql "$SPOOL" "update messages set state='sent' where id='$early'; update recipients set state='sent' where msg_id='$early'"
pg "$LOG" -c "$CONF" queue --all >"$TESTDIR/queue3.out"
is "$PG_RC" 0 "round 3: queue exits 0" || note "$LOG"
ok "[ ! -e '$orphan' ]" "round 3: a message file without an index row is removed"
ok "[ ! -e '$SPOOL/msg/$early' ]" "round 3: the file of a 'sent' row is removed"
ok "[ ! -e '$SPOOL/msg/$rest' ]" "round 3: an old copy of an in-index message is removed"
like "$(cat "$LOG")" 'copies_removed=1' "round 3: the removed copy is logged"
is "$(spool_sql "$SPOOL" "select state from messages where id='$gone'")" held \
	"round 3: a queued row whose file is missing is held, not dropped"
is "$(spool_sql "$SPOOL" "select last_reply from messages where id='$gone'")" \
	"spool file missing at recovery" "round 3: the held row says why"
is "$(spool_sql "$SPOOL" "select state from messages where id='$rest'")" queued \
	"round 3: the in-index message is untouched (queued)"
before=$(sink_count)
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select state from messages where id='$rest'")" sent "round 3: the intact message is sent"
is "$(sink_count)" "$((before + 1))" "round 3: exactly one more transaction at the sink"
is "$(spool_sql "$SPOOL" "select state from messages where id='$gone'")" held "round 3: the held row stays held"
last=$(ls -t "$SINK_DIR"/dump.* | head -n 1)
ok "grep -q '^X-Test-Id: rec3c-' '$last'" "round 3: the transaction is the small message"

# ---- round 4: a small message's only copy is its index row -----------------
mail_gen --maildir "$(maildir_of rec)" --expected "$TESTDIR/exp4" --count 1 --prefix rec4 \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" poll --once
id4=$(spool_sql "$SPOOL" "select id from messages where state='queued'")
ok "[ -n '$id4' ] && [ ! -e '$SPOOL/msg/$id4' ] && [ -z \"\$(ls -A '$SPOOL/tmp')\" ]" \
	"round 4: no file in msg/ or tmp/ for a small message"
is "$(spool_sql "$SPOOL" "select in_index || ' ' || length(b.body) || ' ' || m.size from messages m join bodies b on b.msg_id = m.id where m.id='$id4'")" \
	"1 $(spool_sql "$SPOOL" "select size from messages where id='$id4'") $(spool_sql "$SPOOL" "select size from messages where id='$id4'")" \
	"round 4: its body row holds all of it"
pg "$LOG" -c "$CONF" queue >/dev/null
is "$(spool_sql "$SPOOL" "select state from messages where id='$id4'")" queued \
	"round 4: recovery leaves it queued (nothing is missing)"
before=$(sink_count)
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" "$((before + 1))" "round 4: it is sent"
is "$(spool_sql "$SPOOL" "select count(*) from bodies where msg_id='$id4'")" 0 \
	"round 4: its body row goes once it is sent"
run_checks mail_check --expected "$TESTDIR/exp4" --format sink --rcpt "$RCPT" "$(ls -t "$SINK_DIR"/dump.* | head -n 1)"

done_testing
