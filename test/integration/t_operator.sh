#!/bin/bash
# t_operator.sh - issue 13, the operator's experience:
#  - as root with `user =`: `poll --once` leaves a spool the daemon (that
#    user) can use; read-only commands never create a spool (exit 66);
#  - `status` tells the truth: the last relay round, an account held or in
#    backoff, held mail, mail older than status_warn_age (exit 1, JSON
#    healthy false with a problems array); held mail is logged at warning;
#  - relative paths: one spool whatever the working directory, SIGHUP
#    re-reads the same file after the daemon's chdir("/");
#  - the smaller points: last_bytes, one-line usage errors, --help,
#    `show` keeps a folded header's TAB, `queue --account nosuch` exits 64,
#    duplicated options are warned about, durations everywhere, `poll`
#    says what it does at start, the RESULT column fits "permanent".
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
SINK_PORT=$SMTP_PORT
password_file "$TESTDIR/pass" 'op-pw'
LOG=$TESTDIR/popgate.log
# fake NAME MESSAGES - a fresh fake mailbox; sets FPORT
fake() {
	start_fakepop3 "$TESTDIR/$1" mailbox --messages "$2" || bail_out "cannot start fakepop3"
	FPORT=$FAKEPOP3_PORT
}
# conf FILE SPOOL [top-level lines...] - one account "op" on the fake at
# $FPORT, relaying to $SMTP_PORT
conf() {
	local f=$1 spool=$2
	shift 2
	{
		conf_base "$spool"
		printf '%s\n' "$@"
		conf_account op server 127.0.0.1 port "$FPORT" tls none allow_plaintext true \
			user op password_file "$TESTDIR/pass" deliver_to "op@corp.example" interval 1h
	} >"$f"
}
unlike() { if printf '%s' "$1" | grep -Eq -- "$2"; then fail "$3"; else pass "$3"; fi; }
json() { "$PYTHON" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# ---- 13.1: root with user = ------------------------------------------------
U=nobody
G=$(id -gn "$U")
SP=$TESTDIR/rootspool
fake f1 3
conf "$TESTDIR/root.conf" "$SP" "user = \"$U\""
chown "$U" "$TESTDIR/pass"
pg "$LOG" -c "$TESTDIR/root.conf" status
is "$PG_RC" 66 "status on a missing spool exits 66"
like "$(tail -n 3 "$LOG")" "no spool at $SP" "and names the path"
ok "[ ! -e '$SP' ]" "status created nothing"
pg "$LOG" -c "$TESTDIR/root.conf" queue >/dev/null
is "$PG_RC" 66 "queue on a missing spool exits 66"
ok "[ ! -e '$SP' ]" "queue created nothing"
pg "$LOG" -c "$TESTDIR/root.conf" poll --once
is "$PG_RC" 0 "poll --once as root with user = $U works" || note "$LOG" 10
is "$(find "$SP" ! -user "$U" | wc -l)" 0 "every file of the new spool belongs to $U"
is "$(stat -c %U "$SP/index.db")" "$U" "index.db belongs to $U"
timeout 60 setpriv --reuid "$U" --regid "$G" --clear-groups \
	"$POPGATE" -c "$TESTDIR/root.conf" run --once 2>>"$LOG"
is "$?" 0 "then run --once as $U itself works on that spool" || note "$LOG" 10
is "$(sink_count)" 3 "and relays the 3 messages"
pg "$LOG" -c "$TESTDIR/root.conf" status >/dev/null
is "$PG_RC" 0 "status as root (working as $U) exits 0"
is "$(find "$SP" ! -user "$U" | wc -l)" 0 "still no file in the spool belongs to anyone else"
chown root "$TESTDIR/pass"

# ---- 13.3: status tells the truth --------------------------------------------
SP2=$TESTDIR/spool2
fake f2 2
SMTP_PORT=$(free_port) conf "$TESTDIR/down.conf" "$SP2"
conf "$TESTDIR/up.conf" "$SP2" 'status_warn_age = "1h"'
pg "$LOG" -c "$TESTDIR/up.conf" poll --once
is "$(spool_sql "$SP2" "select count(*) from messages")" 2 "two messages spooled"
pg "$LOG" -c "$TESTDIR/up.conf" status >/dev/null
is "$PG_RC" 0 "status before any relay: exit 0"
pg "$LOG" -c "$TESTDIR/down.conf" relay --once
is "$PG_RC" 75 "the mail host is down: relay --once exits 75"
pg "$LOG" -c "$TESTDIR/up.conf" status --json >"$TESTDIR/s.json"
is "$PG_RC" 1 "status after a failed relay round exits 1"
is "$(json "$TESTDIR/s.json" 'j["healthy"], j["last_relay"]["result"], [p["what"] for p in j["problems"]]')" \
	"False temporary ['relay-failed']" "status --json: healthy false, last relay temporary, problem relay-failed"
pg "$LOG" -c "$TESTDIR/up.conf" status >"$TESTDIR/s.txt"
like "$(cat "$TESTDIR/s.txt")" "last relay round: .* temporary attempted=2" "status shows the last relay round"
like "$(cat "$TESTDIR/s.txt")" "healthy: no" "and says it is not healthy"
spool_sql "$SP2" "update messages set next_attempt = 0"
pg "$LOG" -c "$TESTDIR/up.conf" relay --once
pg "$LOG" -c "$TESTDIR/up.conf" status --json >"$TESTDIR/s2.json"
is "$PG_RC $(json "$TESTDIR/s2.json" 'j["healthy"], j["last_relay"]["result"], j["last_relay"]["sent"]')" \
	"0 True ok 2" "a relay round that worked: healthy again, last relay ok, 2 sent"
is "$(json "$TESTDIR/s2.json" 'j["accounts"][0]["last_bytes"] > 0')" "True" \
	"13.9: status --json last_bytes of the last poll is not 0"
fake f3 3 # fake-uidl-1 and -2 are known (deleted unfetched), -3 is new
conf "$TESTDIR/up.conf" "$SP2" 'status_warn_age = "1h"'
pg "$LOG" -c "$TESTDIR/up.conf" poll --once
spool_sql "$SP2" "update messages set created = strftime('%s','now') - 7200 where state <> 'sent'"
pg "$LOG" -c "$TESTDIR/up.conf" status --json >"$TESTDIR/s3.json"
is "$PG_RC $(json "$TESTDIR/s3.json" 'j["healthy"], [(p["what"], "status_warn_age 1h" in p["reason"]) for p in j["problems"]]')" \
	"1 False [('queue-age', True)]" "mail waiting 2h, over status_warn_age 1h: exit 1, problem queue-age"
spool_sql "$SP2" "update messages set created = strftime('%s','now');
	update accounts set failures = 2, last_result = 'temporary', last_error = 'boom',
	not_before = strftime('%s','now') + 600 where name = 'op'"
pg "$LOG" -c "$TESTDIR/up.conf" status --json >"$TESTDIR/s4.json"
is "$PG_RC $(json "$TESTDIR/s4.json" 'j["healthy"], [(p["what"], p["account"]) for p in j["problems"]]')" \
	"1 False [('account-failing', 'op')]" "an account in backoff: exit 1, problem account-failing naming it"
spool_sql "$SP2" "update accounts set auth_failed = 'x' where name = 'op'"
pg "$LOG" -c "$TESTDIR/up.conf" status --json >"$TESTDIR/s5.json"
is "$(json "$TESTDIR/s5.json" '[p["what"] for p in j["problems"]]')" "['account-held']" \
	"an account held after a refused login: problem account-held"

# ---- 13.9: the RESULT column fits "permanent" ---------------------------------
spool_sql "$SP2" "update accounts set auth_failed = NULL, last_result = 'permanent'"
pg "$LOG" -c "$TESTDIR/up.conf" status >"$TESTDIR/s6.txt"
is "$("$PYTHON" - "$TESTDIR/s6.txt" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
hdr = next(l for l in lines if l.startswith("ACCOUNT"))
row = next(l for l in lines if l.startswith("op "))
r, f = hdr.index("RESULT"), hdr.index("FETCHED")
print(row[r:f].rstrip(), repr(row[f - 1]))
PY
)" "permanent ' '" "status: 'permanent' fits the RESULT column, a blank before FETCHED"
spool_sql "$SP2" "update accounts set last_result = 'ok', failures = 0, not_before = 0"

# ---- 13.3: held mail is logged at warning --------------------------------------
start_smtp_sink "$TESTDIR/hard" -f RCPT -B "550 5.1.1 rejected by t_operator" ||
	bail_out "cannot start smtp-sink"
fake f4 1
conf "$TESTDIR/held.conf" "$TESTDIR/spool3" 'log_level = "warning"'
pg "$TESTDIR/held.log" -c "$TESTDIR/held.conf" poll --once
pg "$TESTDIR/held.log" -c "$TESTDIR/held.conf" relay --once
like "$(cat "$TESTDIR/held.log")" "warning: id=[0-9A-F]+ .*status=held \\(550 5.1.1 rejected" \
	"log_level = warning: the held message is logged (at warning)"
SMTP_PORT=$SINK_PORT

# ---- 13.5: relative paths ----------------------------------------------------
R=$TESTDIR/rel
mkdir -p "$R"
cp -p "$TESTDIR/pass" "$R/pass"
fake f5 2
write_rel() {
	{
		echo 'spool_dir = "relspool"'
		echo 'pid_file = "rel.pid"'
		echo 'log_level = "debug"'
		printf 'smtp {\n  host = "127.0.0.1"\n  port = %s\n}\n' "$SINK_PORT"
		for a in "$@"; do
			conf_account "$a" server 127.0.0.1 port "$FPORT" tls none allow_plaintext true \
				user "$a" password_file pass deliver_to "op@corp.example" interval 1h
		done
	} >"$R/rel.conf.tmp" && mv "$R/rel.conf.tmp" "$R/rel.conf"
}
write_rel op
(cd "$R" && "$POPGATE" -c rel.conf run 2>>"$LOG")
is "$?" 0 "popgate -c rel.conf run (relative config, relative spool_dir) detaches"
ok "wait_for '[ -s $R/rel.pid ] && echo y' y" "the pid file is where the config file is (rel.pid)"
DPID=$(cat "$R/rel.pid" 2>/dev/null)
[ -n "$DPID" ] && _track_pid "daemon:$DPID"
ok "wait_for \"spool_sql $R/relspool \\\"select count(*) from accounts where last_poll > 0\\\"\" 1" \
	"the daemon polled into relspool next to rel.conf"
ok "[ -e '$R/relspool/popgate.lock' ] && [ -e '$R/relspool/index.db' ]" \
	"the lock and the index are in the same spool ($R/relspool)"
ok "[ ! -e /relspool ]" "no second spool under / after the daemon's chdir"
write_rel op op2
kill -HUP "$DPID"
ok "wait_for \"spool_sql $R/relspool \\\"select count(*) from accounts where name = 'op2' and last_poll > 0\\\"\" 1" \
	"SIGHUP re-reads rel.conf (after chdir /): the added account is polled"
kill -TERM "$DPID"
ok "wait_for '[ -d /proc/$DPID ] || echo gone' gone" "the daemon stops on SIGTERM"
out=$(cd / && "$POPGATE" -c "$R/rel.conf" queue --all 2>&1)
like "$out" "-- [1-9][0-9]* message" "another command from another directory finds the same spool"

# ---- 13.9: smaller points ----------------------------------------------------
out=$("$POPGATE" --bogus 2>&1)
rc=$?
is "$rc $(echo "$out" | wc -l)" "64 1" "an unknown option: exit 64, one line"
like "$out" "^popgate: unknown option .*try 'popgate --help'" "the line says what and where to look"
unlike "$out" "$POPGATE" "without the binary's full path"
out=$("$POPGATE" 2>&1)
is "$? $(echo "$out" | wc -l)" "64 1" "no command: exit 64, one line"
like "$("$POPGATE" --help)" "run --once" "--help lists run --once"
pg "$LOG" -c "$TESTDIR/up.conf" queue --account nosuch >/dev/null
is "$PG_RC" 64 "queue --account nosuch exits 64"
like "$(tail -n 3 "$LOG")" "no account 'nosuch'" "and says there is no such account"
pg "$LOG" -c "$TESTDIR/up.conf" queue --account op >/dev/null
is "$PG_RC" 0 "queue --account op exits 0"
id=$(spool_sql "$SP2" "select id from messages where in_index = 1 and state <> 'sent' limit 1")
spool_sql "$SP2" "update bodies set body = cast(replace(cast(body as text), 'Subject: fake',
	'Subject: a folded' || char(13, 10, 9) || 'subject: fake') as blob) where msg_id = '$id'"
pg "$LOG" -c "$TESTDIR/up.conf" show "$id" >"$TESTDIR/show.txt"
like "$(cat "$TESTDIR/show.txt")" "$(printf '\n  \tsubject: fake')" "show prints a folded header's TAB as a TAB"
unlike "$(cat "$TESTDIR/show.txt")" '\?subject: fake' "not as '?'"
cp "$TESTDIR/up.conf" "$TESTDIR/dup.conf"
printf 'log_level = "info"\n' >>"$TESTDIR/dup.conf"
out=$("$POPGATE" -c "$TESTDIR/dup.conf" check-config 2>&1)
is "$?" 0 "a duplicated option is accepted"
like "$out" "dup.conf:$(wc -l <"$TESTDIR/dup.conf"): option 'log_level' is given again \\(first at line $(grep -n '^log_level' "$TESTDIR/dup.conf" | head -n 1 | cut -d: -f1)\\)" \
	"with a warning naming the file and both lines"
sed -i 's/interval = 1h/interval = "5m"/' "$TESTDIR/dup.conf"
out=$("$POPGATE" -c "$TESTDIR/dup.conf" check-config 2>&1)
is "$?" 0 'interval = "5m" is accepted (the syntax of max_queue_time)'
timeout -s TERM 3 "$POPGATE" -c "$TESTDIR/up.conf" poll >/dev/null 2>"$TESTDIR/poll.err"
like "$(head -n 1 "$TESTDIR/poll.err")" "popgate: polling 1 account every 1h" \
	"poll without --once says what it does at start"

done_testing
