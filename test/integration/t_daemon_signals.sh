#!/bin/bash
# t_daemon_signals.sh - the daemon as an operator drives it: SIGUSR1 polls
# every account now, SIGHUP reloads (a bad file is rejected and the old
# configuration kept; accounts added and removed take effect), a second
# daemon on the same spool is refused (exit 75), the metrics file and
# `status --json` carry the same figures, `status` exits 1 when an account
# fails, and `run` as root drops to `user =`.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
PROM=$TESTDIR/popgate.prom

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
for u in a1 a2 a3; do
	dovecot_add_user "$u" "pw-$u"
	password_file "$TESTDIR/pass-$u" "pw-$u"
done

# acct NAME - an account block; interval 1 h: every poll here is the first
# one, a SIGUSR1 or a reload, never a timer
acct() {
	conf_account "$1" server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user "$1" password_file "$TESTDIR/pass-$1" \
		deliver_to "$1@corp.example" interval 3600
}
write_conf() {
	{
		conf_base "$SPOOL"
		echo "max_parallel_polls = 2"
		echo "metrics_file = \"$PROM\""
		for a in "$@"; do acct "$a"; done
	} >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
}

gen() { mail_gen --maildir "$(maildir_of "$1")" --expected "$TESTDIR/exp" --count "$2" \
	--prefix "$3" --shapes simple; }

write_conf a1 a2
gen a1 3 first
# not under timeout(1): it would take the USR1 and HUP itself
"$POPGATE" -c "$CONF" run -f 2>>"$LOG" &
PID=$!
_track_pid "daemon:$PID"
ok "wait_for sink_count 3" "run -f fetches and relays the first poll's mail"
ok "wait_for \"spool_sql $SPOOL \\\"select count(*) from accounts where last_poll > 0\\\"\" 2" \
	"both accounts were polled once"

# SIGUSR1: poll every account now (the interval is an hour away)
gen a1 2 usr1
kill -USR1 "$PID"
ok "wait_for sink_count 5" "SIGUSR1: new mail is fetched and relayed at once"
like "$(cat "$LOG")" "status=poll-all reason=\"SIGUSR1\" accounts=2" "SIGUSR1 is logged"

# SIGHUP with a broken file: rejected, errors logged, the old one kept
cp "$CONF" "$TESTDIR/good.conf"
printf 'account "broken" {\n  server = \n' >>"$CONF"
kill -HUP "$PID"
ok "wait_for \"grep -c 'reload status=rejected action' $LOG\" 1" "SIGHUP with a bad file: rejected"
like "$(grep 'reload status=rejected error=' "$LOG")" "popgate.conf:[0-9]+" \
	"the rejection names the file and line"
ok "kill -0 $PID" "the daemon is still running"
gen a1 1 afterbad
kill -USR1 "$PID"
ok "wait_for sink_count 6" "the old configuration keeps working after a rejected reload"

# SIGHUP with a3 added and a2 removed: effective without a restart
gen a3 2 added
write_conf a1 a3
kill -HUP "$PID"
ok "wait_for sink_count 8" "SIGHUP: an added account is polled at once"
like "$(cat "$LOG")" "reload status=ok accounts=2 added=1 removed=1" "the reload is logged"
gen a2 1 removed
gen a1 1 marker
kill -USR1 "$PID"
ok "wait_for sink_count 9" "SIGUSR1 after the reload polls the accounts"
is "$(maildir_count a2)" 1 "the removed account is no longer polled"

# two daemons never share a spool
out=$(timeout 60 "$POPGATE" -c "$CONF" run -f 2>&1)
is "$?" 75 "a second daemon on the same spool exits 75"
like "$out" "another popgate daemon \\(pid $PID\\)" "and says which one holds the spool"

# metrics file and status --json: the same figures, parseable
ok "wait_for \"grep -c '^popgate_messages_relayed_total 9\$' $PROM\" 1" \
	"metrics file: relayed counter after the relay rounds"
run_checks "$PYTHON" - "$PROM" <<'EOF'
import re, sys
vals = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    m = re.match(r'^([a-z_]+)(\{[^}]*\})? (-?[0-9]+)$', line.strip())
    if not m:
        print("CHECK 1 metrics line is valid Prometheus text: %r" % line); sys.exit()
    vals[m.group(1) + (m.group(2) or "")] = int(m.group(3))
def chk(key, want):
    got = vals.get(key)
    print("CHECK %d metrics %s = %s (got %s)" % (0 if got == want else 1, key, want, got))
chk('popgate_messages_fetched_total{account="a1"}', 7)
chk('popgate_messages_fetched_total{account="a3"}', 2)
chk('popgate_polls_total{account="a1",result="ok"}', 4)
chk('popgate_queue_messages{state="queued"}', 0)
chk('popgate_queue_messages{state="held"}', 0)
chk('popgate_queue_oldest_age_seconds', 0)
chk('popgate_account_up{account="a1"}', 1)
EOF
json=$("$POPGATE" -c "$CONF" status --json 2>>"$LOG")
is "$?" 0 "status --json exits 0 while all is well (and the daemon runs)"
run_checks "$PYTHON" -c '
import json, sys
d = json.loads(sys.argv[1])
acc = {a["name"]: a for a in d["accounts"]}
def chk(desc, cond): print("CHECK %d status --json: %s" % (0 if cond else 1, desc))
chk("a1 fetched_total 7", acc["a1"]["fetched_total"] == 7)
chk("a1 last result ok", acc["a1"]["last_result"] == "ok")
chk("a2 listed as no longer configured", acc["a2"]["configured"] is False)
chk("relay sent 9 or 8", d["relay"]["sent"] in (8, 9))
chk("healthy", d["healthy"] is True)
' "$json"

kill -TERM "$PID"
wait "$PID"
is "$?" 0 "SIGTERM: exit 0"
is "$(count_files "$SPOOL/tmp")" 0 "no half-written file left"

# status exits 1 when an account fails (wrong password)
password_file "$TESTDIR/pass-a3" "wrong"
pg "$LOG" -c "$CONF" poll --once a3
out=$("$POPGATE" -c "$CONF" status 2>>"$LOG")
is "$?" 1 "status exits 1 when an account is failing"
like "$out" "a3 +[-0-9: ]+ auth" "the text status shows the failing account"

# run as root with user = : drops to it, the spool is the user's
SP2=$TESTDIR/spool2
password_file "$TESTDIR/pass-a1" "pw-a1"
chown nobody "$TESTDIR/pass-a1"
gen a1 1 dropped
{
	conf_base "$SP2"
	echo "user = \"$MAIL_USER\""
	acct a1
} >"$TESTDIR/drop.conf"
"$POPGATE" -c "$TESTDIR/drop.conf" run -f 2>>"$LOG" &
PID=$!
_track_pid "daemon:$PID"
ok "wait_for sink_count 10" "run with user = fetches and relays"
is "$(awk '/^Uid:/ {print $2 "," $3}' /proc/$PID/status)" "$MAIL_UID,$MAIL_UID" \
	"the daemon runs as the user (real and effective uid)"
is "$(stat -c %u "$SP2/index.db")" "$MAIL_UID" "the spool belongs to the user"
kill -TERM "$PID"
wait "$PID"
is "$?" 0 "the unprivileged daemon stops with exit 0"
done_testing
