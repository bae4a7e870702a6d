#!/bin/bash
# t_dedupe.sh - duplicate detection across a UIDL change (issue 15), with a
# private Dovecot: a drained mailbox served again under new UIDLs (the
# maildir restored from a copy: Dovecot gives the files new UIDs) is
# recorded `duplicate` and deleted, never relayed twice; a header added to
# each copy is still a duplicate under dedupe = message and new mail under
# exact; equal bodies with different Message-IDs are two messages; the
# renumbering alert; requeue of a duplicate sends it.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
no_plan

N=20
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
PASS='box-Secr3t!'

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user box "$PASS"
MD=$(maildir_of box)
mail_gen --maildir "$MD" --expected "$TESTDIR/exp" --count $N --prefix dd \
	|| bail_out "mkmail failed"
mkdir -p "$TESTDIR/backup"
cp -p "$MD"/new/* "$TESTDIR/backup/"
password_file "$TESTDIR/box.pass" "$PASS"

# write_conf MODE [ALERT]
write_conf() {
	{
		conf_base "$SPOOL" gw.test
		echo "keep_sent_days = 7"
		echo "metrics_file = \"$TESTDIR/popgate.prom\""
		conf_account box server localhost port "$POP3_PORT" tls starttls \
			ca_file "$TESTDIR/pop/ca.pem" user box password_file "$TESTDIR/box.pass" \
			deliver_to box@corp.example keep false dedupe "$1" dedupe_alert "${2:-100}"
	} >"$CONF"
}

# restore [HEADER] - the backup under new file names (new UIDs, new UIDLs),
# with HEADER as a first line of each copy when given
restore() {
	local f i=0
	for f in "$TESTDIR"/backup/*; do
		i=$((i + 1))
		if [ -n "${1:-}" ]; then
			{ printf '%s\n' "$1"; cat "$f"; } >"$MD/new/restored.$RANDOM.$i.$2"
		else
			cp "$f" "$MD/new/restored.$RANDOM.$i.x"
		fi
	done
	maildir_fix_owner box
}

cycle() {
	pg "$LOG" -c "$CONF" poll --once
	is "$PG_RC" 0 "$1: poll --once exits 0" || note "$LOG" 30
	pg "$LOG" -c "$CONF" relay --once
	is "$PG_RC" 0 "$1: relay --once exits 0" || note "$LOG" 30
}

# ---- 1. drain ------------------------------------------------------------
write_conf exact
cycle "first drain"
is "$(sink_count)" $N "every message relayed once"
is "$(maildir_count box)" 0 "mailbox drained"
is "$(spool_sql "$SPOOL" "select count(*) from dedupe where account = 'box' and kind = 0")" $N \
	"one exact key per message"

# ---- 2. the same messages under new UIDLs ------------------------------------
restore
is "$(maildir_count box)" $N "the mailbox holds the copies again"
write_conf exact 10
cycle "new UIDLs"
is "$(sink_count)" $N "nothing relayed twice"
is "$(maildir_count box)" 0 "the duplicates were removed from the server"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state = 'duplicate'")" $N \
	"every copy recorded as duplicate"
is "$(spool_sql "$SPOOL" "select count(*) from messages d join messages o on o.id = d.duplicate_of
	where d.state = 'duplicate' and o.state = 'sent' and o.uidl <> d.uidl")" $N \
	"each names its original (sent, another UIDL)"
is "$(grep -c 'status=duplicate duplicate_of=[0-9A-F]\{16\}' "$LOG")" $N \
	"each logged status=duplicate duplicate_of=ID"
ok "grep -q 'account=box status=mailbox-renumbered duplicates=$N dedupe_alert=10' '$LOG'" \
	"the renumbering alert is logged (over dedupe_alert)"
pg "$TESTDIR/status.out" -c "$CONF" status >"$TESTDIR/status.txt"
ok "grep -q 'duplicate=$N' '$TESTDIR/status.txt'" "status counts the duplicates" ||
	note "$TESTDIR/status.txt"
ok "grep -q 'renumbered the mailbox: $N duplicates' '$TESTDIR/status.txt'" \
	"status shows the renumbering alert"
ok "grep -q 'oldest not sent: none' '$TESTDIR/status.txt'" \
	"a duplicate is not mail waiting to be sent (no queue age from it)" || note "$TESTDIR/status.txt"
pg "$TESTDIR/status.out" -c "$CONF" status --json >"$TESTDIR/status.json"
is "$("$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1]));
a=[x for x in d["accounts"] if x["name"]=="box"][0]
print(d["queue"]["duplicate"], a["duplicates_total"], a["renumbered_duplicates"])' \
	"$TESTDIR/status.json")" "$N $N $N" "status --json: queue, total and alert"
DUP=$(spool_sql "$SPOOL" "select id from messages where state = 'duplicate' order by rowid limit 1")
ORIG=$(spool_sql "$SPOOL" "select duplicate_of from messages where id = '$DUP'")
pg "$TESTDIR/q.out" -c "$CONF" queue --all >"$TESTDIR/queue.txt"
ok "grep -q '^$DUP .*duplicate .*duplicate of $ORIG' '$TESTDIR/queue.txt'" \
	"queue --all names the state and the original" || note "$TESTDIR/queue.txt"
pg "$TESTDIR/q.out" -c "$CONF" queue >"$TESTDIR/queue-plain.txt"
ok "! grep -q ' duplicate ' '$TESTDIR/queue-plain.txt'" \
	"the plain queue leaves duplicates out (as sent mail: nothing to send)" || note "$TESTDIR/queue-plain.txt"
is "$(pg "$TESTDIR/q.out" -c "$CONF" queue --state duplicate | grep -c ' duplicate ')" $N \
	"queue --state duplicate lists them"
pg "$TESTDIR/q.out" -c "$CONF" queue --all --json >"$TESTDIR/queue.json"
is "$("$PYTHON" -c 'import json,sys; q=json.load(open(sys.argv[1]))
print(*[m["state"] + " " + str(m["duplicate_of"]) for m in q if m["id"] == sys.argv[2]])' \
	"$TESTDIR/queue.json" "$DUP")" "duplicate $ORIG" "queue --all --json: state and duplicate_of"
ok "grep -qx 'popgate_duplicates_total{account=\"box\"} $N' '$TESTDIR/popgate.prom' &&
	grep -qx 'popgate_queue_messages{state=\"duplicate\"} $N' '$TESTDIR/popgate.prom'" \
	"the metrics file counts the duplicates" || note "$TESTDIR/popgate.prom" 60
pg "$TESTDIR/q.out" -c "$CONF" show "$DUP" >"$TESTDIR/show.txt"
ok "grep -q '^state: *duplicate' '$TESTDIR/show.txt' && grep -q '^duplicate of: $ORIG' '$TESTDIR/show.txt'" \
	"show names the state and the original" || note "$TESTDIR/show.txt"

# ---- 3. a header added: message mode finds them, exact does not --------------
restore "X-Migrated-By: provider-one" a
write_conf message
cycle "header added, dedupe = message"
is "$(sink_count)" $N "dedupe = message: not delivered again"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state = 'duplicate'")" $((2 * N)) \
	"dedupe = message: recorded as duplicates"
is "$(maildir_count box)" 0 "dedupe = message: removed from the server"
restore "X-Migrated-By: provider-two" b
write_conf exact
cycle "header added, dedupe = exact"
is "$(sink_count)" $((2 * N)) "dedupe = exact: a copy with another header is delivered again"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state = 'duplicate'")" $((2 * N)) \
	"dedupe = exact: no new duplicate"

# ---- 4. equal bodies, different Message-IDs --------------------------------
for i in 1 2; do
	printf 'From: a@x.example\nTo: box@corp.example\nSubject: same\nMessage-ID: <same-body-%d@x.example>\n\nthe same body\n' \
		"$i" >"$MD/new/samebody.$i.x"
done
maildir_fix_owner box
write_conf message
before=$(sink_count)
cycle "equal bodies"
is "$(sink_count)" $((before + 2)) "two messages with equal bodies and different Message-IDs are both delivered"

# ---- 5. hold is refused, requeue of a duplicate sends it ----------------------
pg "$LOG" -c "$CONF" hold "$DUP"
is "$PG_RC" 65 "hold of a duplicate is refused (never relayed anyway)"
is "$(spool_sql "$SPOOL" "select state from messages where id = '$DUP'")" duplicate \
	"it stays a duplicate"
before=$(sink_count)
pg "$LOG" -c "$CONF" requeue "$DUP"
is "$PG_RC" 0 "requeue of a duplicate exits 0"
is "$(spool_sql "$SPOOL" "select state from messages where id = '$DUP'")" queued "it is queued"
is "$(spool_sql "$SPOOL" "select count(*) from retained where msg_id = '$DUP'")" 0 \
	"its body is no longer on the sent-retention clock"
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" $((before + 1)) "the requeued duplicate was relayed"
is "$(spool_sql "$SPOOL" "select state from messages where id = '$DUP'")" sent "it is sent"
last=$(ls -t $(sink_files) | head -1)
ok "grep -q 'with POP3 id $DUP' '$last'" "the relayed message is the duplicate's copy"

# ---- 6. keys past dedupe_days are pruned; a day's keys merged ----------------
spool_sql "$SPOOL" "UPDATE dedupe_new SET created = created - 100 * 86400;
	UPDATE dedupe SET created = created - 100 * 86400;
	DELETE FROM meta WHERE key LIKE 'dedupe_%'"
printf 'From: a@x.example\nSubject: late\nMessage-ID: <late@x.example>\n\nlate mail\n' \
	>"$MD/new/late.x"
maildir_fix_owner box
before=$(sink_count)
cycle "after dedupe_days"
is "$(sink_count)" $((before + 1)) "new mail after the window is delivered"
ok "grep -q 'account=box status=pruned digests=[0-9]* reason=\"older than dedupe_days\"' '$LOG'" \
	"the pruning is logged"
is "$(spool_sql "$SPOOL" "select count(*) from dedupe_new") $(spool_sql "$SPOOL" "select count(*) from dedupe")" \
	"0 2" "the old keys are gone, the new message's two keys merged"
restore
cycle "old mail again after dedupe_days"
is "$(sink_count)" $((before + 1 + N)) "past dedupe_days old mail is not recognised (delivered again)"

done_testing
