#!/bin/bash
# t_auth_fallback.sh - issue 12, point 5: with auth = "auto", a server that
# offers APOP it cannot do (an APOP timestamp in the greeting, no APOP
# secret for the user) is not locked out: the refused APOP falls back once
# to USER/PASS (where the plaintext rules allow it), and the log names the
# methods tried.
#  a) test/fake/fakepop3.py --apop: fallback logged, messages fetched; a
#     wrong password is refused by both and the failure says
#     methods_tried=APOP,USER;
#  b) GNU Mailutils pop3d (Debian's default setup), a real server: drained
#     byte for byte with the default auth, over plain (allow_plaintext) and
#     over STLS.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

password_file "$TESTDIR/pass" 'fallback-Secr3t'
password_file "$TESTDIR/wrong" 'not-the-password'
start_smtp_sink "$TESTDIR/smtp" || bail_out "cannot start smtp-sink"

# ---- a) the fake server ----------------------------------------------------
start_fakepop3 "$TESTDIR/fake" mailbox --messages 2 --apop --password 'fallback-Secr3t' \
	--capa USER --capa UIDL || bail_out "cannot start fakepop3"
FREC=$FAKEPOP3_REC
{
	conf_base "$TESTDIR/fspool"
	conf_account fake server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
		user u password_file "$TESTDIR/pass" deliver_to fake@corp.example
} >"$TESTDIR/fake.conf"
FLOG=$TESTDIR/fake.log
pg "$FLOG" -c "$TESTDIR/fake.conf" poll --once
is "$PG_RC" 0 "a) auto: APOP refused, USER/PASS logs in, poll exits 0" || note "$FLOG"
ok "grep -qa '^APOP u ' '$FREC'" "a) APOP was tried first"
like "$(grep -a 'status=auth-fallback' "$FLOG")" "refused=APOP next=USER reason=\"[^\"]*APOP not available" \
	"a) the fallback is logged with the server's reason"
like "$(grep -a 'status=auth-ok' "$FLOG")" "auth=USER methods_tried=APOP,USER" \
	"a) the log says which methods were tried"
is "$(spool_sql "$TESTDIR/fspool" "select count(*) from messages")" 2 "a) both messages fetched"
is "$(spool_sql "$TESTDIR/fspool" "select auth_failed is null from accounts where name='fake'")" 1 \
	"a) the account is not marked auth-failed"

# a wrong password: refused by APOP and by USER/PASS; one fallback only
start_fakepop3 "$TESTDIR/fake2" mailbox --messages 1 --apop --password 'fallback-Secr3t' \
	--capa USER --capa UIDL --capa "SASL PLAIN" || bail_out "cannot start fakepop3"
F2REC=$FAKEPOP3_REC
{
	conf_base "$TESTDIR/f2spool"
	conf_account fake2 server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
		user u password_file "$TESTDIR/wrong" deliver_to fake@corp.example
} >"$TESTDIR/fake2.conf"
pg "$FLOG" -c "$TESTDIR/fake2.conf" poll --once
is "$PG_RC" 77 "a) wrong password: refused (exit 77)"
like "$(grep -a 'account=fake2 status=failed' "$FLOG")" "class=auth.*methods_tried=APOP,PLAIN[)]\"" \
	"a) the failure names the methods tried (APOP, then the next offered: PLAIN)"
is "$(grep -c -a -e '^APOP' -e '^AUTH' -e '^USER' "$F2REC")" 2 "a) two attempts, no more"

# ---- b) GNU Mailutils pop3d ------------------------------------------------
if [ ! -x /usr/sbin/pop3d ]; then
	skip 12 "GNU Mailutils pop3d (/usr/sbin/pop3d) is not installed"
	done_testing
	exit 0
fi
start_mailutils "$TESTDIR/mu" || bail_out "cannot start GNU Mailutils pop3d"
mailutils_add_user muser 'fallback-Secr3t'
MUBOX=$MU_DIR/mail/muser/INBOX
# mk N - a message file with LF ends (a dot line, a long line, 8-bit)
mk() {
	printf 'Date: Mon, 1 Jan 2024 12:00:0%d +0000\nFrom: <m%d@example.org>\nTo: <mu@corp.example>\nMessage-ID: <mu%d@test>\nSubject: mailutils %d\n\nline one\n.starts with a dot\n..two dots\n%s\nS\303\251 8-bit\nEND-OF-MESSAGE-%d\n' \
		"$1" "$1" "$1" "$1" "$(head -c 3000 /dev/zero | tr '\0' x)" "$1" \
		>"$MUBOX/new/17000000$1.M$1P1.host"
	chown "$MAIL_UID:$MAIL_GID" "$MUBOX/new/17000000$1.M$1P1.host"
	mkdir -p "$TESTDIR/want"
	sed 's/$/\r/' "$MUBOX/new/17000000$1.M$1P1.host" >"$TESTDIR/want/$1"
}
mk 1
mk 2
{
	conf_base "$TESTDIR/muspool"
	conf_account plain server 127.0.0.1 port "$MU_PORT" tls none allow_plaintext true \
		user muser@test.example password_file "$TESTDIR/pass" deliver_to mu@corp.example
	conf_account stls server localhost port "$MU_PORT" tls starttls ca_file "$MU_DIR/ca.pem" \
		user muser@test.example password_file "$TESTDIR/pass" deliver_to mu@corp.example
} >"$TESTDIR/mu.conf"
MLOG=$TESTDIR/mu.log
pg "$MLOG" -c "$TESTDIR/mu.conf" poll --once plain
is "$PG_RC" 0 "b) mailutils over plain: poll exits 0 with the default auth" || note "$MLOG"
like "$(grep -a 'account=plain status=auth-ok' "$MLOG")" "methods_tried=APOP,USER" \
	"b) plain: APOP refused, USER/PASS used"
is "$(find "$MUBOX/new" "$MUBOX/cur" -type f | wc -l)" 0 "b) plain: the mailbox is drained"
mk 3
mk 4
pg "$MLOG" -c "$TESTDIR/mu.conf" poll --once stls
is "$PG_RC" 0 "b) mailutils over STLS: poll exits 0 with the default auth" || note "$MLOG"
like "$(grep -a 'account=stls status=auth-ok' "$MLOG")" "methods_tried=APOP,USER" \
	"b) STLS: APOP refused, USER/PASS used"
is "$(find "$MUBOX/new" "$MUBOX/cur" -type f | wc -l)" 0 "b) STLS: the mailbox is drained"
is "$(spool_sql "$TESTDIR/muspool" "select count(*) from messages")" 4 "b) 4 messages spooled"
pg "$MLOG" -c "$TESTDIR/mu.conf" relay --once
is "$(sink_count)" 4 "b) 4 SMTP transactions"
mkdir -p "$TESTDIR/got"
for f in $(sink_files); do sink_content "$f" >"$TESTDIR/got/$(basename "$f")"; done
run_checks "$PYTHON" - "$TESTDIR/want" "$TESTDIR/got" <<'EOF'
import os, re, sys
want, got = sys.argv[1], sys.argv[2]
msgs = [open(os.path.join(got, f), "rb").read() for f in os.listdir(got)]
for i in (1, 2, 3, 4):
    w = open(os.path.join(want, str(i)), "rb").read()
    hits = [m for m in msgs if b"Message-ID: <mu%d@test>" % i in m]
    if len(hits) != 1:
        print("CHECK 1 message %d reached the SMTP host once (%d times)" % (i, len(hits)))
        continue
    m = hits[0].split(b"\r\n", 3)[3]  # popgate's Received field: 3 lines
    # pop3d adds an X-UIDL field once UIDL was used (the server's doing)
    x = re.findall(rb"^X-UIDL: [^\r]*\r\n", m, re.M)
    m = re.sub(rb"^X-UIDL: [^\r]*\r\n", b"", m, flags=re.M)
    print("CHECK %d message %d byte for byte (apart from the server's X-UIDL field: %d)"
          % (0 if m == w else 1, i, len(x)))
EOF

done_testing
