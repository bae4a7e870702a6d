#!/bin/bash
# t_bare_lf.sh - issue 12, point 1: a message holding a bare-LF "." line
# ("\n.\n", "\n.\r\n", "\r\n.\n") from a server whose lines end in CRLF is
# fetched whole: only CRLF "." CRLF ends the RETR reply, a bare LF is data
# (it does not start a line for dot-unstuffing either: "line1\n.hidden-dot"
# keeps its dot).  Through popgate poll + relay to smtp-sink: the body at
# the SMTP host byte for byte (canonical CRLF, each "." kept), the end of
# each message present, one transaction per message, the mailbox drained.
# A server whose every line ends in a bare LF is still read (decided from
# its greeting).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

password_file "$TESTDIR/pass" 'bare-Secr3t'
W=$TESTDIR/wire
mkdir -p "$W"
# wire bytes (what the server sends after +OK, before the terminator) and
# the canonical message popgate must store and relay
"$PYTHON" - "$W" <<'EOF'
import os, sys
d = sys.argv[1]
def hdr(i, lf=False):
    h = ("Date: Mon, 1 Jan 2024 12:00:0%d +0000\r\nFrom: <a%d@example.org>\r\n"
         "To: <bare@corp.example>\r\nMessage-ID: <bare%d@test>\r\nSubject: bare %d\r\n\r\n"
         % (i, i, i, i)).encode()
    return h.replace(b"\r\n", b"\n") if lf else h
tail = b"MAIL FROM:<x@evil.example>\r\nRCPT TO:<victim@corp.example>\r\nDATA\r\n"
shapes = [b"\n.\n", b"\n.\r\n", b"\r\n.\n"]
for i, s in enumerate(shapes, 1):
    wire = hdr(i) + b"Before the payload " + b"%d" % i + s + tail + \
        b"line1\n.hidden-dot\r\n" + b"END-OF-MESSAGE-%d\r\n" % i
    canon = wire.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    open(os.path.join(d, "m%d.wire" % i), "wb").write(wire)
    open(os.path.join(d, "m%d.canon" % i), "wb").write(canon)
# the LF-only server: every line ends in LF, dot-stuffed after LF
wire = hdr(4, True) + b"..stuffed\nplain\nEND-OF-MESSAGE-4\n"
open(os.path.join(d, "m4.wire"), "wb").write(wire)
open(os.path.join(d, "m4.canon"), "wb").write(
    wire.replace(b"..stuffed", b".stuffed").replace(b"\n", b"\r\n"))
EOF

start_smtp_sink "$TESTDIR/smtp" || bail_out "cannot start smtp-sink"
start_fakepop3 "$TESTDIR/crlf" mailbox --capa USER --capa UIDL --capa PIPELINING \
	--message "$W/m1.wire" --message "$W/m2.wire" --message "$W/m3.wire" ||
	bail_out "cannot start fakepop3"
CRLF_PORT=$FAKEPOP3_PORT
CRLF_REC=$FAKEPOP3_REC
start_fakepop3 "$TESTDIR/lf" mailbox --capa USER --capa UIDL --lf-server \
	--message "$W/m4.wire" || bail_out "cannot start fakepop3 --lf-server"
LF_PORT=$FAKEPOP3_PORT

SPOOL=$TESTDIR/spool
LOG=$TESTDIR/popgate.log
{
	conf_base "$SPOOL"
	conf_account crlf server 127.0.0.1 port "$CRLF_PORT" tls none allow_plaintext true \
		user u password_file "$TESTDIR/pass" deliver_to bare@corp.example
	conf_account lf server 127.0.0.1 port "$LF_PORT" tls none allow_plaintext true \
		user u password_file "$TESTDIR/pass" deliver_to lf@corp.example
} >"$TESTDIR/popgate.conf"

pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once
is "$PG_RC" 0 "poll exits 0" || note "$LOG"
is "$(spool_sql "$SPOOL" "select count(*) from messages where account='crlf'")" 3 \
	"CRLF server: 3 messages spooled" || note "$LOG"
is "$(spool_sql "$SPOOL" "select count(*) from messages where account='lf'")" 1 \
	"LF-only server: 1 message spooled"
like "$(grep -a 'account=lf server=' "$LOG")" "status=bare-lf-server" \
	"the LF-only server is recognised from its greeting"
ok "! grep -a 'account=crlf.*status=failed' '$LOG'" "the CRLF account did not fail"

pg "$LOG" -c "$TESTDIR/popgate.conf" relay --once
is "$(sink_count)" 4 "exactly 4 SMTP transactions for 4 messages" || note "$LOG"
mkdir -p "$TESTDIR/got"
for f in $(sink_files); do
	sink_content "$f" >"$TESTDIR/got/$(basename "$f")"
done
run_checks "$PYTHON" - "$W" "$TESTDIR/got" <<'EOF'
import os, sys
w, got = sys.argv[1], sys.argv[2]
msgs = [open(os.path.join(got, f), "rb").read() for f in sorted(os.listdir(got))]
for i in range(1, 5):
    canon = open(os.path.join(w, "m%d.canon" % i), "rb").read()
    hits = [m for m in msgs if b"Message-ID: <bare%d@test>" % i in m]
    print("CHECK %d message %d reached the SMTP host once" % (0 if len(hits) == 1 else 1, i))
    if len(hits) != 1:
        continue
    m = hits[0]
    # popgate's own Received field (3 lines) comes first, then the message
    body = m.split(b"\r\n", 3)[3] if m.startswith(b"Received: ") else m
    print("CHECK %d message %d: byte for byte the canonical message" % (0 if body == canon else 1, i))
    if body != canon:
        print("# want %r" % canon)
        print("# got  %r" % body)
    print("CHECK %d message %d: its end is present" %
          (0 if b"END-OF-MESSAGE-%d\r\n" % i in m else 1, i))
print("CHECK %d the hidden dot kept its dot" %
      (0 if all(b"\r\n.hidden-dot\r\n" in m for m in msgs if b"bare4@" not in m) else 1))
EOF
ok "! grep -rqa -e 'X-Mail-Args: <x@evil' -e 'X-Rcpt-Args: <victim' '$SINK_DIR'" \
	"no smuggled transaction (no envelope from the body)"
is "$(grep -c '^DELE' "$CRLF_REC")" 3 "CRLF server: 3 DELEs sent"

# the mailbox is drained: a second poll finds nothing on the servers
pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once
like "$(grep -a 'account=crlf status=ok' "$LOG" | tail -n1)" "on_server=0 fetched=0" \
	"the CRLF mailbox is empty afterwards"
like "$(grep -a 'account=lf status=ok' "$LOG" | tail -n1)" "on_server=0 fetched=0" \
	"the LF-only mailbox is empty afterwards"

done_testing
