#!/bin/bash
# t_uidl_reuse.sh - issue 12, point 6: a message whose UIDL is already in
# the spool is deleted without being fetched, unless the server's LIST size
# differs from the one recorded when the UIDL was fetched: then a
# non-compliant server has reused the UIDL for new mail, which is fetched
# (logged status=uidl-reused), not deleted unread.
#  1. fake server with message A (UIDL fake-uidl-1): fetched, deleted;
#  2. a fresh server offers A again under the same UIDL and size (as after
#     a lost QUIT): deleted without RETR;
#  3. a fresh server offers B, different content and size, under the same
#     UIDL: fetched, spooled under "fake-uidl-1 <size>", then deleted; both
#     A and B reach the SMTP host;
#  4. B offered again: known now, deleted without RETR.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

password_file "$TESTDIR/pass" 'reuse-Secr3t'
start_smtp_sink "$TESTDIR/smtp" || bail_out "cannot start smtp-sink"
W=$TESTDIR/wire
mkdir -p "$W"
printf 'Date: Mon, 1 Jan 2024 12:00:01 +0000\r\nFrom: <a@example.org>\r\nMessage-ID: <A@test>\r\nSubject: A\r\n\r\nfirst message\r\n' >"$W/A"
printf 'Date: Mon, 1 Jan 2024 12:00:02 +0000\r\nFrom: <b@example.org>\r\nMessage-ID: <B@test>\r\nSubject: B\r\n\r\nnew mail under an old UIDL, longer\r\n' >"$W/B"
BSIZE=$(stat -c %s "$W/B")
SPOOL=$TESTDIR/spool
LOG=$TESTDIR/popgate.log

# serve FILE - a fresh fake server (its maildrop: FILE as message 1,
# UIDL fake-uidl-1); writes the config for it
serve() {
	start_fakepop3 "$TESTDIR/s$N" mailbox --capa USER --capa UIDL --message "$1" ||
		bail_out "cannot start fakepop3"
	REC=$FAKEPOP3_REC
	{
		conf_base "$SPOOL"
		conf_account r server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
			user u password_file "$TESTDIR/pass" deliver_to r@corp.example
	} >"$TESTDIR/popgate.conf"
	N=$((N + 1))
}
N=1
serve "$W/A"
pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once
is "$PG_RC" 0 "1. A fetched" || note "$LOG"
is "$(spool_sql "$SPOOL" "select uidl || ':' || listed_size from messages")" \
	"fake-uidl-1:$(stat -c %s "$W/A")" "1. the index records A's LIST size"

serve "$W/A"
pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once
ok "! grep -qa '^RETR' '$REC'" "2. same UIDL, same size: not fetched again"
ok "grep -qa '^DELE 1' '$REC'" "2. ... and deleted"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 1 "2. still one message in the spool"

serve "$W/B"
pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once
is "$PG_RC" 0 "3. poll exits 0" || note "$LOG"
ok "grep -qa '^RETR 1' '$REC'" "3. same UIDL, different size: fetched"
ok "grep -qa '^DELE 1' '$REC'" "3. ... then deleted"
like "$(grep -a 'status=uidl-reused' "$LOG")" \
	"uidl=fake-uidl-1 status=uidl-reused listed=$BSIZE spooled_listed=$(stat -c %s "$W/A")" \
	"3. the reuse is logged with both sizes"
is "$(spool_sql "$SPOOL" "select uidl from messages order by created, rowid" | tr '\n' ',')" \
	"fake-uidl-1,fake-uidl-1 $BSIZE," "3. B spooled under its own key"

serve "$W/B"
pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once
ok "! grep -qa '^RETR' '$REC'" "4. B again: not fetched again"
ok "grep -qa '^DELE 1' '$REC'" "4. ... deleted"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 2 "4. still two messages"

pg "$LOG" -c "$TESTDIR/popgate.conf" relay --once
is "$(sink_count)" 2 "A and B both reached the SMTP host"
mkdir -p "$TESTDIR/got"
for f in $(sink_files); do sink_content "$f" >"$TESTDIR/got/$(basename "$f")"; done
run_checks "$PYTHON" - "$W" "$TESTDIR/got" <<'EOF'
import os, sys
w, got = sys.argv[1], sys.argv[2]
msgs = [open(os.path.join(got, f), "rb").read().split(b"\r\n", 3)[3] for f in os.listdir(got)]
for n in ("A", "B"):
    want = open(os.path.join(w, n), "rb").read()
    print("CHECK %d message %s byte for byte" % (0 if msgs.count(want) == 1 else 1, n))
EOF

done_testing
