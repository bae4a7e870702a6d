#!/bin/bash
# t_idle.sh - a configuration without an account (the Debian package's
# shipped file): check-config accepts it with a warning, `run -f` stays up,
# logs once why it is idle and tells systemd (READY=1, STATUS=idle: no
# account in FILE on $NOTIFY_SOCKET, as under Type=notify); a reload that
# adds an account starts polling it and says so in STATUS.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox idle 'i-pass'
conf_base "$SPOOL" >"$CONF"
pg "$LOG" -c "$CONF" check-config >"$TESTDIR/check.out"
is "$PG_RC" 0 "check-config accepts a file without an account"
like "$(cat "$TESTDIR/check.out")" "ok \(0 accounts" "and counts none"
like "$(cat "$LOG")" "no account is configured: nothing is polled" "and warns that nothing is polled"

# a notify socket like systemd's: one datagram per line in $NOTES
NOTES=$TESTDIR/notes
"$PYTHON" - "$TESTDIR/notify" "$NOTES" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[2], "w").close()
while True:
    d = s.recv(4096).decode()
    with open(sys.argv[2], "a") as f:
        f.write(d.replace("\n", "|") + "\n")
EOF
NPID=$!
wait_for "[ -e '$NOTES' ] && echo up" up || bail_out "no notify socket"
mail_gen --maildir "$(maildir_of idle)" --expected "$TESTDIR/exp" --count 3 --prefix i \
	--shapes simple || bail_out "mkmail failed"
NOTIFY_SOCKET=$TESTDIR/notify timeout 300 $POPGATE_WRAPPER "$POPGATE" -c "$CONF" run -f 2>>"$LOG" &
PID=$!
ok "wait_for \"grep -c '^READY=1|STATUS=idle: no account in $CONF\$' '$NOTES'\" 1" \
	"run -f is ready and reports STATUS=idle: no account in FILE"
ok "kill -0 $PID" "and stays up"
is "$(grep -c 'status=idle reason="no account in' "$LOG")" 1 "the log says once why it is idle"
is "$(maildir_count idle)" 3 "nothing is polled"

conf_account idle server localhost port "$POP3_PORT" tls starttls ca_file "$TESTDIR/pop/ca.pem" \
	user idle password_file "$TESTDIR/pass" deliver_to "$RCPT" >>"$CONF"
kill -HUP "$PID"
ok "wait_for \"grep -c '^STATUS=polling 1 account, relaying\$' '$NOTES'\" 1" \
	"after a reload that adds an account: STATUS=polling 1 account"
ok "wait_for sink_count 3" "the new account is polled and its mail relayed"
kill -TERM "$PID"
wait "$PID"
is "$?" 0 "SIGTERM: run exits 0"
ok "wait_for \"tail -n 1 '$NOTES'\" STOPPING=1" "and tells systemd it is stopping"
kill "$NPID" 2>/dev/null
wait "$NPID" 2>/dev/null
done_testing
