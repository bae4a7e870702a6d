#!/bin/bash
# t_smtp_features.sh - the relay's ESMTP features, judged by what the host
# received: SIZE= at least the spool file's size, ENVID= the spool id,
# BODY=8BITMIME on exactly the messages with 8-bit octets, the configured
# helo_name in EHLO; max_sessions parallel sessions deliver every message
# exactly once; SMTP AUTH without TLS is refused before anything is sent;
# tls = "required" toward a real Postfix delivers with the right CA and
# defers with an unrelated one.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem

# box NAME COUNT SHAPES - a Dovecot user with COUNT generated messages
box() {
	dovecot_add_user "$1" "pw-$1"
	password_file "$TESTDIR/$1.pass" "pw-$1"
	mail_gen --maildir "$(maildir_of "$1")" --expected "$TESTDIR/exp-$1" --count "$2" \
		--prefix "$1" --shapes "$3" >/dev/null || bail_out "mkmail failed"
}

# conf NAME SMTP-BLOCK-LINES... - a config polling NAME into spool-NAME
conf() {
	local n=$1
	shift
	{
		conf_base "$TESTDIR/spool-$n" | sed '/^smtp {/,/^}/d'
		echo 'smtp {'
		printf '  %s\n' "$@"
		echo '}'
		conf_account "$n" server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
			user "$n" password_file "$TESTDIR/$n.pass" deliver_to "$n@corp.example"
	} >"$TESTDIR/$n.conf"
}

states() { spool_sql "$TESTDIR/spool-$1" "select state, count(*) from messages group by state order by state"; }

# ---- (1)-(4): SIZE, ENVID, BODY=8BITMIME, helo_name -------------------------
start_smtp_sink "$TESTDIR/sink-mix" || bail_out "cannot start smtp-sink"
box mix 20 all
conf mix 'host = "127.0.0.1"' "port = $SMTP_PORT" 'helo_name = "relay.test"'
LOG=$TESTDIR/mix.log
pg "$LOG" -c "$TESTDIR/mix.conf" poll --once
is "$(states mix)" "queued|20" "mix: 20 messages queued" || note "$LOG"
# id, size, 8-bit flag and X-Test-Id of every stored message, before the
# relay removes them
spool_sql "$TESTDIR/spool-mix" "select id, size from messages" >"$TESTDIR/mix.ids"
spool_export "$TESTDIR/spool-mix" "$TESTDIR/export-mix"
"$PYTHON" - "$TESTDIR/export-mix" "$TESTDIR/mix.ids" >"$TESTDIR/mix.table" <<'EOF'
import os, re, sys
d = sys.argv[1]
for line in open(sys.argv[2]):
    mid, size = line.strip().split("|")
    data = open(os.path.join(d, mid), "rb").read()
    m = re.search(rb"^X-Test-Id: (\S+)\r?$", data, re.M)
    print(mid, size, len(data), int(any(b >= 0x80 for b in data)),
          m.group(1).decode() if m else "-")
EOF
ok "awk '\$4 == 1' '$TESTDIR/mix.table' | grep -q . && awk '\$4 == 0' '$TESTDIR/mix.table' | grep -q ." \
	"mix: both 8-bit and 7-bit messages in the spool"
spool_sql "$TESTDIR/spool-mix" "select id || ' ' || eightbit from messages" | sort >"$TESTDIR/mix.8bit"
is "$(awk '{print $1, $4}' "$TESTDIR/mix.table" | sort)" "$(cat "$TESTDIR/mix.8bit")" \
	"mix: the index's eightbit column (set at fetch) matches every message's octets"
pg "$LOG" -c "$TESTDIR/mix.conf" relay --once
is "$(states mix)" "sent|20" "mix: all 20 sent" || note "$LOG"
is "$(sink_count)" 20 "mix: 20 transactions at the sink"
run_checks mail_check --expected "$TESTDIR/exp-mix" --format sink --rcpt mix@corp.example $(sink_files)
run_checks "$PYTHON" - "$TESTDIR/mix.table" $(sink_files) <<'EOF'
import re, sys
table = {}
for line in open(sys.argv[1]):
    mid, size, flen, b8, tid = line.split()
    table[tid] = (mid, int(size), int(flen), b8 == "1")
seen = {}
for p in sys.argv[2:]:
    data = open(p, "rb").read()
    head, _, body = data.partition(b"\nReceived: ")
    margs = re.search(rb"^X-Mail-Args: (.*)$", head, re.M)
    helo = re.search(rb"^X-Helo-Args: (.*)$", head, re.M)
    tid = re.search(rb"^X-Test-Id: (\S+)$", body, re.M)
    tid = tid.group(1).decode() if tid else None
    seen[tid] = (margs.group(1).decode("latin-1") if margs else "",
                 helo.group(1).decode("latin-1") if helo else "")
missing = [t for t in table if t not in seen]
print("CHECK %d every spool message has a sink transaction (missing %s)" % (int(bool(missing)), missing))
bad_size, bad_envid, bad_body, bad_helo = [], [], [], []
for tid, (mid, size, flen, b8) in table.items():
    if tid not in seen:
        continue
    args, helo = seen[tid]
    params = dict(p.split("=", 1) if "=" in p else (p, "") for p in args.split()[1:])
    if "SIZE" in params:  # smtp-sink does not offer SIZE
        bad_size.append("%s SIZE=%s sent though not offered" % (tid, params["SIZE"]))
    if params.get("ENVID") != mid:
        bad_envid.append("%s ENVID=%s id=%s" % (tid, params.get("ENVID"), mid))
    if (params.get("BODY", "").upper() == "8BITMIME") != b8:
        bad_body.append("%s 8bit=%s args=%s" % (tid, b8, args))
    if helo != "relay.test":
        bad_helo.append("%s helo=%r" % (tid, helo))
for name, bad in (("no SIZE= toward a host that does not offer SIZE", bad_size),
                  ("(2) ENVID= is the spool id", bad_envid),
                  ("(3) BODY=8BITMIME on exactly the 8-bit messages", bad_body),
                  ("(4) EHLO names helo_name relay.test", bad_helo)):
    for b in bad[:5]:
        print("# " + b)
    print("CHECK %d %s" % (int(bool(bad)), name))
n8 = sum(1 for v in table.values() if v[3])
print("# %d messages, %d of them 8-bit" % (len(table), n8))
EOF
stop_smtp_sink

# ---- (1): SIZE= toward a host offering SIZE (test/fake/fakesmtp.py) ---------
FAKE=$TESTDIR/fake
mkdir -p "$FAKE"
"$PYTHON" "$top_srcdir/test/fake/fakesmtp.py" --port-file "$FAKE/port" --dir "$FAKE" \
	>>"$FAKE/log" 2>&1 &
_track_pid "fake:$!"
for ((n = 0; n < 200; n++)); do [ -s "$FAKE/port" ] && break; sleep 0.05; done
[ -s "$FAKE/port" ] || bail_out "fakesmtp.py did not start"
box size 10 all
conf size 'host = "127.0.0.1"' "port = $(cat "$FAKE/port")"
LOG=$TESTDIR/size.log
pg "$LOG" -c "$TESTDIR/size.conf" poll --once
spool_sql "$TESTDIR/spool-size" "select id, size from messages" >"$TESTDIR/size.ids"
spool_export "$TESTDIR/spool-size" "$TESTDIR/export-size"
"$PYTHON" - "$TESTDIR/export-size" "$TESTDIR/size.ids" >"$TESTDIR/size.table" <<'EOF'
import os, sys
for line in open(sys.argv[2]):
    mid, size = line.strip().split("|")
    print(mid, size, os.path.getsize(os.path.join(sys.argv[1], mid)))
EOF
pg "$LOG" -c "$TESTDIR/size.conf" relay --once
is "$(states size)" "sent|10" "size: all 10 sent to a host offering SIZE" || note "$LOG"
run_checks "$PYTHON" - "$TESTDIR/size.table" "$FAKE/commands.log" <<'EOF'
import re, sys
table = {}
for line in open(sys.argv[1]):
    mid, size, flen = line.split()
    table[mid] = max(int(size), int(flen))
bad, seen = [], set()
for line in open(sys.argv[2], "rb"):
    line = line.decode("latin-1").rstrip("\r\n")
    if not line.upper().startswith("MAIL FROM:"):
        continue
    env = re.search(r" ENVID=(\S+)", line)
    sz = re.search(r" SIZE=(\d+)", line)
    mid = env.group(1) if env else None
    seen.add(mid)
    if mid not in table or sz is None or int(sz.group(1)) < table[mid]:
        bad.append("%s (spool file %s octets)" % (line, table.get(mid)))
for b in bad[:5]:
    print("# " + b)
missing = set(table) - seen
print("CHECK %d (1) SIZE= in MAIL FROM is at least the spool file size (%d messages)"
      % (int(bool(bad) or bool(missing)), len(table)))
EOF

# ---- (5): max_sessions = 3, max_messages_per_session = 5 ---------------------
start_smtp_sink "$TESTDIR/sink-par" || bail_out "cannot start smtp-sink"
box par 40 simple
conf par 'host = "127.0.0.1"' "port = $SMTP_PORT" 'max_sessions = 3' 'max_messages_per_session = 5'
LOG=$TESTDIR/par.log
pg "$LOG" -c "$TESTDIR/par.conf" poll --once
is "$(states par)" "queued|40" "par: 40 messages queued" || note "$LOG"
: >"$TESTDIR/par.relay.log"
pg "$TESTDIR/par.relay.log" -c "$TESTDIR/par.conf" relay --once
cat "$TESTDIR/par.relay.log" >>"$LOG"
is "$PG_RC" 0 "par: relay exits 0" || note "$LOG"
is "$(states par)" "sent|40" "par: all 40 sent" || note "$LOG"
is "$(sink_count)" 40 "par: 40 transactions at the sink (none twice)"
run_checks mail_check --expected "$TESTDIR/exp-par" --format sink --rcpt par@corp.example $(sink_files)
pids=$(grep 'status=sent' "$TESTDIR/par.relay.log" | sed -n 's/.*popgate\[\([0-9]*\)\].*/\1/p' | sort -u)
npids=$(printf '%s\n' "$pids" | grep -c .)
ok "[ $npids -gt 1 ] && [ $npids -le 3 ]" "(5) par: status=sent lines come from $npids sessions (2..3)"
ids_once=$(grep -o 'id=[0-9a-f]* .*status=sent' "$TESTDIR/par.relay.log" | awk '{print $1}' | sort | uniq -d | wc -l)
is "$ids_once" 0 "(5) par: no message logged as sent twice"

# ---- (6): SMTP AUTH without TLS is refused ----------------------------------
start_smtp_sink "$TESTDIR/sink-auth" -v || bail_out "cannot start smtp-sink"
box auth 3 simple
password_file "$TESTDIR/smtp.pass" 'relay-S3cret'
conf auth 'host = "127.0.0.1"' "port = $SMTP_PORT" 'user = "relay"' \
	"password_file = \"$TESTDIR/smtp.pass\"" 'tls = "none"'
LOG=$TESTDIR/auth.log
pg "$LOG" -c "$TESTDIR/auth.conf" poll --once
is "$(states auth)" "queued|3" "auth: 3 messages queued" || note "$LOG"
pg "$LOG" -c "$TESTDIR/auth.conf" relay --once
isnt "$PG_RC" 0 "(6) auth without TLS: relay reports failure"
like "$(states auth)" '^(queued|deferred)\|3$' "(6) auth without TLS: the messages stay queued or deferred" ||
	note "$LOG"
is "$(spool_count_stored "$TESTDIR/spool-auth")" 3 "(6) auth without TLS: the stored messages stay"
is "$(sink_count)" 0 "(6) auth without TLS: no transaction at the sink"
like "$(cat "$LOG")" "refusing SMTP AUTH as 'relay' without TLS" "(6) auth without TLS: the log says why"
ok "! grep -q -e 'relay-S3cret' -e AUTH -e 'MAIL FROM' '$TESTDIR/sink-auth/smtp-sink.log'" \
	"(6) auth without TLS: nothing (no AUTH, no MAIL) sent in clear"

# ---- (7): tls = "required" toward Postfix -----------------------------------
if ! command -v postfix >/dev/null 2>&1; then
	skip 4 "(7) postfix is not installed"
else
	PF=$TESTDIR/pf
	mkdir -p "$PF/conf"
	POSTFIX_TLS_DIR=$TESTDIR/pop start_postfix "$PF" || bail_out "cannot start Postfix"
	postfix_mailbox tls@corp.example
	postfix_mailbox tlsbad@corp.example
	postfix_reload || bail_out "postfix reload failed"
	for n in tls tlsbad; do
		box "$n" 2 simple
	done
	conf tls 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "required"' 'timeout = 5' \
		"ca_file = \"$CA\""
	conf tlsbad 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "required"' 'timeout = 5' \
		"ca_file = \"$TESTDIR/pop/other-ca.pem\""
	LOG=$TESTDIR/tls.log
	pg "$LOG" -c "$TESTDIR/tls.conf" poll --once
	pg "$LOG" -c "$TESTDIR/tls.conf" relay --once
	# regression: libesmtp missed TLS 1.3's post-handshake records and the
	# session stalled after STARTTLS; the relay now caps SMTP TLS at 1.2
	is "$(states tls)" "sent|2" "(7) tls required, the test CA: both sent" || note "$LOG"
	for ((i = 0; i < 200; i++)); do
		[ "$(find "$(postfix_maildir tls@corp.example)/new" -type f 2>/dev/null | wc -l)" -ge 2 ] && break
		sleep 0.05
	done
	is "$(find "$(postfix_maildir tls@corp.example)/new" -type f 2>/dev/null | wc -l)" 2 \
		"(7) tls required: delivered into the Maildir" || note "$POSTFIX_LOG"
	like "$(cat "$POSTFIX_LOG")" 'TLS connection established from localhost' \
		"(7) tls required: Postfix logged a TLS connection"
	LOG=$TESTDIR/tlsbad.log
	pg "$LOG" -c "$TESTDIR/tlsbad.conf" poll --once
	pg "$LOG" -c "$TESTDIR/tlsbad.conf" relay --once
	is "$(states tlsbad)" "deferred|2" "(7) tls required, an unrelated CA: both deferred" || note "$LOG"
	is "$(find "$(postfix_maildir tlsbad@corp.example)/new" -type f 2>/dev/null | wc -l)" 0 \
		"(7) unrelated CA: nothing delivered"
	ok "! grep -q 'MAIL FROM\|from=<.*> to=<tlsbad@' '$POSTFIX_LOG'" \
		"(7) unrelated CA: Postfix saw no transaction"
	like "$(cat "$POSTFIX_LOG")" 'alert unknown ca' \
		"(7) unrelated CA: the relay aborted the handshake (Postfix got 'unknown ca')"
	# regression: a refused certificate used to be logged as "no reply"
	# under "relay status=ok" with exit 0
	like "$(cat "$LOG")" 'certificate verify failed' \
		"(7) unrelated CA: the log names the certificate problem" || note "$LOG"
	is "$(grep -c '### exit 75' "$LOG")" 1 "(7) unrelated CA: relay --once exits 75 (temporary)"
fi

done_testing
