#!/bin/bash
# t_problem_msg.sh - issue 12, point 6: one bad message never blocks a
# mailbox.  Three-message mailboxes (test/fake/fakepop3.py) whose message 2
#  a) has a 1.5 MiB line: streamed; all three reach smtp-sink byte for byte
#     and are deleted; a second poll finds the mailbox empty;
#  b) is refused by RETR (-ERR): 1 and 3 are fetched and deleted at QUIT;
#  c) is far longer than LIST said (6 MB for a few hundred octets): read to
#     its end and dropped, the session stays in step, 1 and 3 are fetched
#     and deleted at QUIT; message 2 is remembered as a problem message;
#  d) breaks the session (connection dropped mid-RETR): the next poll
#     deletes 1, fetches and deletes 3 and leaves 2 (logged); a later poll
#     tries 2 alone, and the account state keeps it as a problem message.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

password_file "$TESTDIR/pass" 'problem-Secr3t'
start_smtp_sink "$TESTDIR/smtp" || bail_out "cannot start smtp-sink"

# conf NAME PORT - a config with one account NAME on the fake server
conf() {
	{
		conf_base "$TESTDIR/$1/spool"
		conf_account "$1" server 127.0.0.1 port "$2" tls none allow_plaintext true \
			user u password_file "$TESTDIR/pass" deliver_to "$1@corp.example"
	} >"$TESTDIR/$1/popgate.conf"
}
# poll NAME - poll --once now (an earlier failure's backoff is cleared)
poll() {
	[ -e "$TESTDIR/$1/spool/index.db" ] &&
		spool_sql "$TESTDIR/$1/spool" "update accounts set not_before = 0"
	pg "$TESTDIR/$1/popgate.log" -c "$TESTDIR/$1/popgate.conf" poll --once
}
uidls() {
	spool_sql "$TESTDIR/$1/spool" "select uidl from messages where account='$1' order by uidl" |
		tr '\n' ' '
}

# ---- a) a 1.5 MiB line ------------------------------------------------
W=$TESTDIR/wire
mkdir -p "$W" "$TESTDIR/long"
"$PYTHON" - "$W" <<'EOF'
import os, sys
d = sys.argv[1]
for i in (1, 2, 3):
    m = ("Date: Mon, 1 Jan 2024 12:00:0%d +0000\r\nFrom: <a%d@example.org>\r\n"
         "To: <long@corp.example>\r\nMessage-ID: <long%d@test>\r\nSubject: long %d\r\n\r\n"
         % (i, i, i, i)).encode()
    if i == 2:
        m += b"start " + b"L" * (1536 * 1024) + b" end\r\n"
    m += b"END-OF-MESSAGE-%d\r\n" % i
    open(os.path.join(d, "m%d" % i), "wb").write(m)
# 200 KiB in ordinary lines (for the LIST-size cases)
open(os.path.join(d, "m4"), "wb").write(
    b"From: <b@example.org>\r\nSubject: 200k\r\n\r\n" + b"z" * 78 + b"\r\n" * 0 +
    (b"z" * 78 + b"\r\n") * 2600)
EOF
start_fakepop3 "$TESTDIR/long" mailbox --capa USER --capa UIDL --capa PIPELINING \
	--message "$W/m1" --message "$W/m2" --message "$W/m3" || bail_out "cannot start fakepop3"
LONG_REC=$FAKEPOP3_REC
conf long "$FAKEPOP3_PORT"
poll long
is "$PG_RC" 0 "a) 1.5 MiB line: poll exits 0" || note "$TESTDIR/long/popgate.log"
is "$(uidls long)" "fake-uidl-1 fake-uidl-2 fake-uidl-3 " "a) all three messages spooled"
is "$(grep -c '^DELE' "$LONG_REC")" 3 "a) all three deleted at the server"
pg "$TESTDIR/long/popgate.log" -c "$TESTDIR/long/popgate.conf" relay --once
is "$(sink_count)" 3 "a) three SMTP transactions"
mkdir -p "$TESTDIR/got"
for f in $(sink_files); do sink_content "$f" >"$TESTDIR/got/$(basename "$f")"; done
run_checks "$PYTHON" - "$W" "$TESTDIR/got" <<'EOF'
import os, sys
w, got = sys.argv[1], sys.argv[2]
msgs = [open(os.path.join(got, f), "rb").read() for f in os.listdir(got)]
for i in (1, 2, 3):
    want = open(os.path.join(w, "m%d" % i), "rb").read()
    hits = [m for m in msgs if b"<long%d@test>" % i in m]
    body = hits[0].split(b"\r\n", 3)[3] if len(hits) == 1 else None
    print("CHECK %d a) message %d at the SMTP host byte for byte" % (0 if body == want else 1, i))
EOF
poll long
like "$(grep -a 'account=long status=ok' "$TESTDIR/long/popgate.log" | tail -n1)" \
	"on_server=0 fetched=0" "a) a second poll finds the mailbox empty"

# ---- b) RETR -ERR -------------------------------------------------------
start_fakepop3 "$TESTDIR/err" mailbox --messages 3 --capa USER --capa UIDL --capa PIPELINING \
	--retr-err 2 || bail_out "cannot start fakepop3"
ERR_REC=$FAKEPOP3_REC
conf err "$FAKEPOP3_PORT"
poll err
is "$PG_RC" 0 "b) RETR -ERR: poll exits 0" || note "$TESTDIR/err/popgate.log"
is "$(uidls err)" "fake-uidl-1 fake-uidl-3 " "b) messages 1 and 3 spooled"
is "$(grep -a '^DELE' "$ERR_REC" | tr -d '\r' | tr '\n' ' ')" "DELE 1 DELE 3 " \
	"b) 1 and 3 deleted, 2 left on the server"
ok "grep -qa '^QUIT' '$ERR_REC'" "b) QUIT sent: the deletions take effect"
like "$(grep -a 'uidl=fake-uidl-2' "$TESTDIR/err/popgate.log")" "status=retr-refused" \
	"b) the refusal is logged with the message's UIDL"

# ---- c) far longer than LIST said ------------------------------------------
start_fakepop3 "$TESTDIR/huge" mailbox --messages 3 --capa USER --capa UIDL --capa PIPELINING \
	--retr-huge 2 || bail_out "cannot start fakepop3"
HUGE_REC=$FAKEPOP3_REC
conf huge "$FAKEPOP3_PORT"
poll huge
is "$PG_RC" 0 "c) over the limit: poll exits 0" || note "$TESTDIR/huge/popgate.log"
is "$(uidls huge)" "fake-uidl-1 fake-uidl-3 " "c) messages 1 and 3 spooled, 2 not"
is "$(grep -a '^DELE' "$HUGE_REC" | tr -d '\r' | tr '\n' ' ')" "DELE 1 DELE 3 " \
	"c) 1 and 3 deleted, 2 left on the server"
ok "grep -qa '^QUIT' '$HUGE_REC'" "c) the session stayed in step: QUIT sent"
like "$(grep -a 'uidl=fake-uidl-2 status=problem-message' "$TESTDIR/huge/popgate.log")" \
	"over the limit of .*LIST gave" "c) logged with the limit and LIST's size"
is "$(spool_sql "$TESTDIR/huge/spool" "select problem_uidls from accounts where name='huge'")" \
	"fake-uidl-2" "c) remembered as a problem message"
is "$(count_files "$TESTDIR/huge/spool/tmp")" 0 "c) nothing half-written left in tmp/"

# ---- d) the session breaks inside message 2 -------------------------------
start_fakepop3 "$TESTDIR/drop" mailbox --messages 3 --capa USER --capa UIDL \
	--retr-drop 2 || bail_out "cannot start fakepop3"
DROP_REC=$FAKEPOP3_REC
conf drop "$FAKEPOP3_PORT"
poll drop
isnt "$PG_RC" 0 "d) first poll: the broken session is reported"
is "$(spool_sql "$TESTDIR/drop/spool" "select problem_uidls from accounts where name='drop'")" \
	"fake-uidl-2" "d) message 2 remembered as a problem message"
: >"$DROP_REC"
poll drop
is "$PG_RC" 0 "d) second poll exits 0" || note "$TESTDIR/drop/popgate.log"
is "$(uidls drop)" "fake-uidl-1 fake-uidl-3 " "d) messages 1 and 3 spooled"
ok "! grep -qa '^RETR 2' '$DROP_REC'" "d) second poll: message 2 not fetched"
ok "grep -qa '^QUIT' '$DROP_REC'" "d) second poll: QUIT sent"
like "$(grep -a 'uidl=fake-uidl-2 status=deferred-problem-message' "$TESTDIR/drop/popgate.log")" \
	"left on the server" "d) message 2 left on the server, logged"
: >"$DROP_REC"
poll drop
like "$(grep -a 'status=retry-problem-message' "$TESTDIR/drop/popgate.log")" "uidl=fake-uidl-2" \
	"d) third poll: message 2, now alone, is tried again"
ok "grep -qa '^RETR 1' '$DROP_REC'" "d) third poll: it is message 1 now (1 and 3 were deleted)"
is "$(spool_sql "$TESTDIR/drop/spool" "select problem_uidls from accounts where name='drop'")" \
	"fake-uidl-2" "d) still a problem message after failing again"

# ---- e) LIST sizes that are estimates, or absurd ---------------------------
# 2^63: the old limit (2 * LIST + 64 KiB) wrapped to 64 KiB; 1000 for a
# 200 KiB message: an under-estimate (as Exchange gives) by 200 times
for sz in 9223372036854775808 18446744073709551615 1000; do
	start_fakepop3 "$TESTDIR/ls$sz" mailbox --capa USER --capa UIDL --list-size "$sz" \
		--message "$W/m1" --message "$W/m4" || bail_out "cannot start fakepop3"
	conf "ls$sz" "$FAKEPOP3_PORT"
	poll "ls$sz"
	is "$PG_RC" 0 "e) LIST gives $sz: poll exits 0" || note "$TESTDIR/ls$sz/popgate.log"
	is "$(uidls "ls$sz")" "fake-uidl-1 fake-uidl-2 " "e) LIST gives $sz: both messages spooled"
done
# the account's max_message_size is the hard cap, whatever LIST said
start_fakepop3 "$TESTDIR/cap" mailbox --capa USER --capa UIDL --list-size 1000 \
	--message "$W/m1" --message "$W/m4" || bail_out "cannot start fakepop3"
CAP_REC=$FAKEPOP3_REC
conf cap "$FAKEPOP3_PORT"
sed -i '$ s/^}$/  max_message_size = 102400\n}/' "$TESTDIR/cap/popgate.conf"
poll cap
is "$(uidls cap)" "fake-uidl-1 " "e) max_message_size = 100 KiB: the 200 KiB message is not taken"
like "$(grep -a 'uidl=fake-uidl-2 status=problem-message' "$TESTDIR/cap/popgate.log")" \
	"over the limit of 102400" "e) ... logged with the cap"
ok "grep -qa '^QUIT' '$CAP_REC'" "e) ... and the session stayed in step"

done_testing
