#!/bin/bash
# t_smuggle.sh - content is safe on the wire (SMTP smuggling): bodies with
# "\n.\n", "\r.\r", "\n.\r\n" and "\r\n.\n" are normalised at ingest, so a
# deliberately lenient receiver that ends lines at LF (test/fake/fakesmtp.py)
# sees exactly one message per transaction, each byte-identical to the
# canonical spool file, and no body text is ever read as an SMTP command.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem
dovecot_add_user smug "pw-smug"
password_file "$TESTDIR/pw" "pw-smug"
md=$(maildir_of smug)

# one message per smuggling sequence; after the sequence comes what an
# attacker would want read as the next transaction
seqs=('\n.\n' '\r.\r' '\n.\r\n' '\r\n.\n')
i=0
for s in "${seqs[@]}"; do
	i=$((i + 1))
	printf "Date: Mon, 1 Jan 2024 12:00:0$i +0000\r\nFrom: <a$i@example.org>\r\nTo: <smug@corp.example>\r\nMessage-ID: <smug$i@test>\r\nSubject: smuggle $i\r\n\r\nbefore-$i${s}MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@corp.example>\r\nDATA\r\nSubject: smuggled-$i\r\n\r\nafter-$i\r\n" \
		>"$md/new/200$i.s$i.host"
done
maildir_fix_owner smug

FAKE=$TESTDIR/fake
mkdir -p "$FAKE"
"$PYTHON" "$top_srcdir/test/fake/fakesmtp.py" --port-file "$FAKE/port" --dir "$FAKE" \
	>>"$FAKE/log" 2>&1 &
_track_pid "fake:$!"
for ((n = 0; n < 200; n++)); do [ -s "$FAKE/port" ] && break; sleep 0.05; done
[ -s "$FAKE/port" ] || bail_out "fakesmtp.py did not start"

SPOOL=$TESTDIR/spool
LOG=$TESTDIR/smuggle.log
{
	SMTP_PORT=$(cat "$FAKE/port") conf_base "$SPOOL"
	conf_account smug server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
		user smug password_file "$TESTDIR/pw" deliver_to "smug@corp.example"
} >"$TESTDIR/smug.conf"
pg "$LOG" -c "$TESTDIR/smug.conf" poll --once
is "$(spool_sql "$SPOOL" "select count(*) from messages where state='queued'")" 4 \
	"4 messages spooled" || note "$LOG"
mkdir -p "$TESTDIR/canon"
spool_export "$SPOOL" "$TESTDIR/canon"
run_checks "$PYTHON" - "$TESTDIR/canon" <<'EOF'
import os, re, sys
d = sys.argv[1]
bad = [f for f in os.listdir(d)
       if re.search(rb"\r(?!\n)|(?<!\r)\n", open(os.path.join(d, f), "rb").read())]
print("CHECK %d spool files have no bare CR and no bare LF %s" % (1 if bad else 0, bad))
EOF
pg "$LOG" -c "$TESTDIR/smug.conf" relay --once
is "$(find "$FAKE" -name 'txn.*[0-9]' | wc -l)" 4 \
	"the lenient receiver saw exactly 4 transactions" || note "$LOG"
run_checks "$PYTHON" - "$TESTDIR/canon" "$FAKE" <<'EOF'
import os, sys
canon, fake = sys.argv[1], sys.argv[2]
want = sorted(open(os.path.join(canon, f), "rb").read() for f in os.listdir(canon))
got = sorted(open(os.path.join(fake, f), "rb").read()
             for f in os.listdir(fake) if f.startswith("txn.") and not f.endswith(".env"))
print("CHECK %d each transaction is byte-identical to one canonical spool file"
      % (0 if want == got else 1))
for i in range(1, 5):
    hits = [g for g in got if b"before-%d" % i in g and b"after-%d" % i in g]
    print("CHECK %d message %d: the text before and after the sequence in one transaction"
          % (0 if len(hits) == 1 else 1, i))
envs = [open(os.path.join(fake, f), "rb").read()
        for f in os.listdir(fake) if f.endswith(".env")]
evil = [e for e in envs if b"evil" in e or b"victim" in e]
print("CHECK %d no smuggled envelope" % (1 if evil else 0))
cmds = open(os.path.join(fake, "commands.log"), "rb").read()
print("CHECK %d no body text was read as a command" % (1 if b"evil" in cmds else 0))
EOF
is "$(spool_sql "$SPOOL" "select count(*) from messages where state='sent'")" 4 \
	"all 4 recorded as sent"

# regression: the relay once opened every message file of a session up
# front, so a session larger than the descriptor limit held the rest with
# "Too many open files".  Files are now opened one at a time.
for ((i = 1; i <= 70; i++)); do
	printf 'From: <b%d@example.org>\r\nSubject: fd %d\r\n\r\nbody\r\n' "$i" "$i" \
		>"$md/new/400$i.f$i.host"
done
maildir_fix_owner smug
pg "$LOG" -c "$TESTDIR/smug.conf" poll --once
(ulimit -n 40 && pg "$LOG" -c "$TESTDIR/smug.conf" relay --once)
is "$(spool_sql "$SPOOL" "select count(*) from messages where state <> 'sent'")" 0 \
	"70 messages in one session under a 40-descriptor limit: none left unsent" || note "$LOG"
is "$(find "$FAKE" -name 'txn.*[0-9]' | wc -l)" 74 "... and all 70 reached the receiver"

done_testing
