#!/bin/bash
# t_keep.sh - keep = true leaves the mailbox alone and never fetches a message
# twice (unique account+UIDL); switching to keep = false later deletes what
# is already in the spool without fetching it again (the same state as a
# crash between the spool commit and QUIT).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox keeper 'keep-me'
mail_gen --maildir "$(maildir_of keeper)" --expected "$TESTDIR/exp" --count 20 --prefix keep ||
	bail_out "mkmail failed"

write_conf() {
	{
		conf_base "$SPOOL"
		conf_account keeper server localhost port "$POP3_PORT" tls starttls \
			ca_file "$TESTDIR/pop/ca.pem" user keeper password_file "$TESTDIR/pass" \
			deliver_to "$RCPT" keep "$1"
	} >"$CONF"
}
write_conf true
list_maildir() { (cd "$(maildir_of keeper)" && find new cur -type f | sed 's|^[a-z]*/||; s|:2,.*$||' | sort); }
before=$(list_maildir)

pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 0 "poll --once (keep) exits 0" || note "$LOG"
pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "relay --once exits 0" || note "$LOG"
is "$(maildir_count keeper)" 20 "keep: all 20 messages still on the server"
is "$(list_maildir)" "$before" "keep: the same messages (by file name) are on the server"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "sent|20" \
	"all 20 fetched and sent"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)

pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 0 "second poll exits 0" || note "$LOG"
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 20 "second poll fetched nothing (index unchanged)"
is "$(sink_count)" 20 "second relay sent nothing (sink unchanged)"
is "$(maildir_count keeper)" 20 "still 20 on the server"

# new mail arrives: only it is fetched
mail_gen --maildir "$(maildir_of keeper)" --expected "$TESTDIR/exp" --count 5 --prefix keepnew --shapes simple
pg "$LOG" -c "$CONF" poll --once
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 25 "third poll fetched only the 5 new messages"
is "$(sink_count)" 25 "and only those 5 were relayed"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)

# keep = false now: the 25 messages are already in the spool, so the poll
# must delete them from the server without fetching them again.
write_conf false
pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 0 "poll with keep=false exits 0" || note "$LOG"
is "$(maildir_count keeper)" 0 "messages already in the spool were deleted from the server"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 25 "and not fetched again"
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" 25 "nothing relayed twice"

done_testing
