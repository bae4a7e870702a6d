#!/bin/bash
# t_dedupe_nouidl.sh - a server without UIDL (test/fake/fakepop3.py
# --no-uidl) is drained with keep = false: messages identified by their
# content (issue 15).  A first session commits everything but its QUIT is
# lost (the DELEs never take effect), so the server serves the same mail
# again; a poll killed (kill -9) after fetching two of those duplicates and
# before their commit leaves no row, no file, nothing deleted; the next
# poll records each as `duplicate` once, deletes it, and nothing is relayed
# twice.  Without dedupe such a server is still refused.
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
touch "$OFF"

start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
start_fakepop3 "$TESTDIR/fake" mailbox --no-uidl --messages 3 --user u --password p \
	--drop-quit 2 --retr-stall 3 --retr-stall-off "$OFF" || bail_out "cannot start fakepop3"
password_file "$TESTDIR/pass" p

write_conf() {
	{
		conf_base "$SPOOL" gw.test
		conf_account nouidl server 127.0.0.1 port "$FAKEPOP3_PORT" tls none \
			allow_plaintext true user u password_file "$TESTDIR/pass" \
			deliver_to box@corp.example keep false "$@"
	} >"$CONF"
}

# ---- dedupe = off: refused as before -----------------------------------
write_conf dedupe off
pg "$LOG" -c "$CONF" poll --once
isnt "$PG_RC" 0 "dedupe = off: a server without UIDL is refused"
ok "grep -q 'does not support UIDL' '$LOG'" "the error says why"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 0 "nothing spooled"

# ---- first session: committed, QUIT lost ---------------------------------
write_conf
pg "$LOG" -c "$CONF" poll --once
ok "grep -q 'account=nouidl status=no-uidl' '$LOG'" "the drain by content is logged"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "queued|3" \
	"the three messages are committed (the session's QUIT was lost)"
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" 3 "relayed once each"

# ---- kill -9 between fetch and commit of duplicates -------------------------
rm -f "$OFF"
dele_before=$(grep -c '^DELE' "$FAKEPOP3_REC")
: >"$TESTDIR/killed.log"
"$POPGATE" -c "$CONF" poll --once 2>>"$TESTDIR/killed.log" &
pid=$!
fetched() { grep -c 'status=fetched ' "$TESTDIR/killed.log"; }
ok "wait_for fetched 2" "the poll fetched two copies and waits for the third" ||
	note "$TESTDIR/killed.log"
kill -KILL "$pid"
wait "$pid" 2>/dev/null
touch "$OFF"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 3 "killed before the commit: no row"
is "$(count_files "$SPOOL/tmp") $(count_files "$SPOOL/msg")" "0 0" "no file in tmp/ or msg/"
is "$(grep -c '^DELE' "$FAKEPOP3_REC")" "$dele_before" "the killed session sent no DELE"

# ---- the next poll: duplicates recorded, deleted, not relayed -------------------
pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 0 "the next poll exits 0" || note "$LOG" 20
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state order by state")" \
	"duplicate|3
sent|3" "each copy recorded as duplicate of a sent message"
is "$(spool_sql "$SPOOL" "select count(*) from messages d join messages o on o.id = d.duplicate_of
	where d.state = 'duplicate'")" 3 "each names its original"
is "$(grep -c '^DELE' "$FAKEPOP3_REC")" 6 "DELEs: three in the lost session, three now"
pg "$LOG" -c "$CONF" poll --once
ok "grep -q 'status=ok on_server=0 ' '$LOG'" "the server is empty" || note "$LOG" 5
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" 3 "nothing relayed twice"
pg "$LOG" -c "$CONF" status >/dev/null
done_testing
