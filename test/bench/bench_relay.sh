#!/bin/bash
# bench_relay.sh - relay speed (a benchmark, not a test; run as root):
#   N (default 10000) x 2 KiB messages from the spool to Postfix's smtp-sink
#   with `popgate relay --once`, against a minimal pipelined SMTP client
#   (python, one session, MAIL+RCPT+DATA in one write, then the body in one
#   write) sending the same spool files to the same sink.
#
#   top_builddir=. [SESSIONS=2] bash test/bench/bench_relay.sh [N]
#
# SESSIONS sets smtp.max_sessions (parallel relay sessions; default 1);
# SIZE the message size (default 2048); SINK_DUMP=1 makes smtp-sink write a
# dump file per message on disk, into a new directory each second (as
# bench.sh does with BENCH_SINK_TMPFS=0).
# RELAY_WRAPPER runs the timed relay under a profiler (perf record, strace -c).
#
# The spool is filled by polling a private Dovecot (not timed).  Prints both
# times and the ratio popgate/baseline (target: at most 1.5).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
N=${1:-10000}

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
dovecot_add_user bench pw-bench
password_file "$TESTDIR/pw" pw-bench
"$PYTHON" - "$(maildir_of bench)/new" "$N" "${SIZE:-2048}" <<'EOF'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n"
for i in range(n):
    hdr = (b"Return-Path: <s%d@example.org>\nDate: Mon, 1 Jan 2024 12:00:00 +0000\n"
           b"From: <s%d@example.org>\nTo: <bench@corp.example>\nMessage-ID: <b%d@bench>\n"
           b"Subject: bench %d\n\n" % (i, i, i, i))
    body = line * ((size - len(hdr)) // len(line))
    with open(os.path.join(d, "%d.b%d.host" % (1000000 + i, i)), "wb") as f:
        f.write(hdr + body)
EOF
maildir_fix_owner bench
PORT=$(free_port)
DUMP=()
if [ "${SINK_DUMP:-0}" = 1 ]; then # a dump file per message on disk
	mkdir -p "$TESTDIR/sink" && chown "$MAIL_UID:$MAIL_GID" "$TESTDIR/sink"
	DUMP=(-d "$TESTDIR/sink/%H%M%S/dump.")
fi
/usr/sbin/smtp-sink -u "$MAIL_USER" "${DUMP[@]}" "127.0.0.1:$PORT" 256 >/dev/null 2>&1 &
_track_pid "sink:$!"
wait_port "$PORT" || bail_out "smtp-sink did not start"
SPOOL=$TESTDIR/spool
{
	SMTP_PORT=$PORT conf_base "$SPOOL" | sed 's/log_level = "debug"/log_level = "warning"/'
	conf_account bench server localhost port "$POP3_PORT" tls none allow_plaintext true \
		user bench password_file "$TESTDIR/pw" deliver_to "bench@corp.example" |
		sed 's/^}$/  max_messages_per_poll = 0\n}/'
} >"$TESTDIR/b.conf"
SESSIONS=${SESSIONS:-1}
sed -i "s/^smtp {\$/smtp {\n  max_messages_per_session = 100000\n  max_sessions = $SESSIONS/" \
	"$TESTDIR/b.conf"
pg "$TESTDIR/b.log" -c "$TESTDIR/b.conf" poll --once
got=$(spool_sql "$SPOOL" "select count(*) from messages where state='queued'")
[ "$got" = "$N" ] || bail_out "spooled $got of $N messages"
spool_export "$SPOOL" "$TESTDIR/copy"
sync

t0=$(date +%s.%N)
POPGATE_WRAPPER="${RELAY_WRAPPER:-}" pg "$TESTDIR/b.log" -c "$TESTDIR/b.conf" relay --once
t1=$(date +%s.%N)
sent=$(spool_sql "$SPOOL" "select count(*) from messages where state='sent'")

t2=$(date +%s.%N)
"$PYTHON" - "$PORT" "$TESTDIR/copy" <<'EOF'
import os, socket, sys
port, d = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")
def reply():
    while True:
        l = f.readline()
        if l[3:4] != b"-":
            return l
reply()
s.sendall(b"EHLO bench\r\n"); reply()
for name in sorted(os.listdir(d)):
    data = open(os.path.join(d, name), "rb").read()
    data = data.replace(b"\r\n.", b"\r\n..")
    s.sendall(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<bench@corp.example>\r\nDATA\r\n")
    reply(); reply(); reply()
    s.sendall(data + b".\r\n")
    reply()
s.sendall(b"QUIT\r\n"); reply()
EOF
t3=$(date +%s.%N)
"$PYTHON" - "$N" "$sent" "$t0" "$t1" "$t2" "$t3" <<'EOF'
import sys
n, sent = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3 = map(float, sys.argv[3:])
p, b = t1 - t0, t3 - t2
print("# popgate relay --once: %d of %d sent in %.2f s (%.0f msg/s)" % (sent, n, p, sent / p))
print("# minimal pipelined client: %d in %.2f s (%.0f msg/s)" % (n, b, n / b))
print("# ratio popgate/baseline: %.2f (target <= 1.5)" % (p / b))
EOF
pass "benchmark ran"
done_testing
