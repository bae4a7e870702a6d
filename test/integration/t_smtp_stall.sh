#!/bin/bash
# t_smtp_stall.sh - SMTP hosts that cannot take a message now (issue 12
# point 4), against test/fake/fakesmtp.py:
#  (1) a host without 8BITMIME and an 8-bit message: held at once (not
#      deferred until max_queue_time) with a reason naming 8BITMIME; a
#      7-bit message of the same round is sent; once the host offers
#      8BITMIME, `requeue ID` and `relay --once` deliver it byte for byte;
#  (2) a host that stops answering after DATA (no 354) and (3) one that
#      stops after the final ".": with smtp `timeout = 2` the relay gives
#      up, logs the timeout, the message is deferred (not sent, not lost),
#      and a later run delivers it to the host, now answering.
# No timing is asserted: only outcomes.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox stall 's-pass'

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

# add_msg NAME 8BIT - one message in the mailbox; its body in $TESTDIR/NAME.body
# (as the host must receive it: CRLF line ends)
add_msg() {
	"$PYTHON" - "$(maildir_of stall)/new" "$1" "$2" "$TESTDIR/$1.body" <<'PY'
import os, sys
d, name, b8, out = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
body = b"Hello %s.\n.leading dot\n" % name.encode()
if b8:
    body += "Gr\u00fc\u00dfe aus K\u00f6ln, \u00e9t\u00e9 \u20ac\n".encode()
body += b"end of %s\n" % name.encode()
hdr = (b"Return-Path: <s@example.org>\nFrom: <s@example.org>\nTo: <stall@corp.example>\n"
       b"Message-ID: <%s@stall>\nSubject: %s\nMIME-Version: 1.0\n"
       b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: %s\n\n"
       % (name.encode(), name.encode(), b"8bit" if b8 else b"7bit"))
with open(os.path.join(d, "%s.host" % name), "wb") as f:
    f.write(hdr + body)
with open(out, "wb") as f:
    f.write(body.replace(b"\n", b"\r\n"))
PY
	maildir_fix_owner stall
}

write_conf() {
	{
		SMTP_PORT=$FAKE_PORT conf_base "$SPOOL"
		conf_account stall server 127.0.0.1 port "$POP3_PORT" tls none \
			allow_plaintext true user stall password_file "$TESTDIR/pass" deliver_to "$RCPT"
	} | sed 's/^  port = \([0-9]*\)$/  port = \1\n  timeout = 2/' >"$CONF"
}

# body_at FILE - the data the host got, after the header
body_at() { "$PYTHON" -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(d.split(b"\r\n\r\n",1)[1])' "$1"; }

# ---- (1) no 8BITMIME ---------------------------------------------------------
start_fake "$TESTDIR/f8" no8bit
touch "$FAKE/no8bit"
SPOOL=$TESTDIR/spool8
write_conf
add_msg eight 1
add_msg seven 0
pg "$LOG" -c "$CONF" poll --once
id8=$(spool_sql "$SPOOL" "select id from messages where eightbit = 1")
id7=$(spool_sql "$SPOOL" "select id from messages where eightbit = 0")
ok "[ -n '$id8' ] && [ -n '$id7' ]" "an 8-bit and a 7-bit message spooled"
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select state from messages where id = '$id8'")" held \
	"the 8-bit message is held at once, not deferred"
like "$(spool_sql "$SPOOL" "select last_reply from messages where id = '$id8'")" \
	"does not offer 8BITMIME" "its reason says the host lacks 8BITMIME"
is "$(spool_sql "$SPOOL" "select attempts from messages where id = '$id8'")" 1 "after one attempt"
is "$(spool_sql "$SPOOL" "select state from messages where id = '$id7'")" sent \
	"the 7-bit message of the same round is sent"
is "$(ls "$FAKE" | grep -c '^txn\.[0-9]*$')" 1 "one transaction at the host (the 7-bit one)"
like "$(grep "id=$id8 " "$LOG" | grep 'status=held')" "8BITMIME" "the held line names 8BITMIME"
rm -f "$FAKE/no8bit" # the host is fixed
pg "$LOG" -c "$CONF" requeue "$id8"
is "$PG_RC" 0 "requeue of the held message"
pg "$LOG" -c "$CONF" relay --once
is "$(spool_sql "$SPOOL" "select state from messages where id = '$id8'")" sent \
	"after requeue, relay --once sends it"
is "$(ls "$FAKE" | grep -c '^txn\.[0-9]*$')" 2 "a second transaction at the host"
is "$(body_at "$FAKE/txn.0002" | od -An -tx1)" "$(od -An -tx1 <"$TESTDIR/eight.body")" \
	"its body arrived byte for byte (8-bit octets intact)"
like "$(grep -i '^MAIL FROM' "$FAKE/commands.log" | tail -1)" "BODY=8BITMIME" \
	"declared BODY=8BITMIME to the fixed host"

# ---- (2), (3): a host that stops answering -----------------------------------
n=0
for mode in stalldata:0 stall:0; do
	n=$((n + 1))
	case $mode in
	stalldata:*) where="after DATA" ;;
	*) where="after the final dot" ;;
	esac
	start_fake "$TESTDIR/fs$n" "$mode"
	SPOOL=$TESTDIR/spool-stall$n
	write_conf
	add_msg "st$n" 0
	pg "$LOG" -c "$CONF" poll --once
	id=$(spool_sql "$SPOOL" "select id from messages")
	: >"$TESTDIR/relay$n.log"
	pg "$TESTDIR/relay$n.log" -c "$CONF" relay --once
	like "$(grep 'status=session-failed' "$TESTDIR/relay$n.log")" "timed out.*$where" \
		"host silent $where: the relay gives up and logs the timeout"
	like "$(grep "id=$id .*status=deferred" "$TESTDIR/relay$n.log")" "timed out" \
		"host silent $where: the message's deferred line says why"
	is "$(spool_sql "$SPOOL" "select state from messages where id = '$id'")" deferred \
		"host silent $where: the message is deferred (not sent, not lost)"
	is "$(ls "$FAKE" | grep -c '^txn\.[0-9]*$')" 0 "host silent $where: nothing recorded at the host"
	cat "$TESTDIR/relay$n.log" >>"$LOG"
	pg "$LOG" -c "$CONF" flush
	is "$(spool_sql "$SPOOL" "select state from messages where id = '$id'")" sent \
		"host silent $where: a later run delivers it to the host, answering again"
	is "$(body_at "$FAKE/txn.0001" | od -An -tx1)" "$(od -An -tx1 <"$TESTDIR/st$n.body")" \
		"host silent $where: delivered whole"
done

done_testing
