#!/bin/bash
# t_poll_now.sh - `poll` is an operator's "poll now" (issue 12.3, 13.2,
# 13.3): it polls the accounts it is given whatever their backoff or
# [AUTH] hold; only the server's own LOGIN-DELAY stops it, and then it says
# so and exits 75.  A message spooled before a failed QUIT is deleted by
# the next poll and relayed once.  The daemon and `run --once` keep the
# backoff; `run --once` reports a skipped account in its exit status (77
# held after a refused login, 75 backoff) and returns at once.  A refused
# login or a TLS failure exits non-zero on every `poll --once`, not just
# the first.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
password_file "$TESTDIR/pass" 'now-pw'
SPOOL=$TESTDIR/spool
LOG=$TESTDIR/popgate.log
start_fakepop3 "$TESTDIR/q" mailbox --messages 3 --drop-quit 1 || bail_out "fakepop3"
QPORT=$FAKEPOP3_PORT QREC=$FAKEPOP3_REC
start_fakepop3 "$TESTDIR/d" mailbox --messages 1 --capa USER --capa UIDL \
	--capa 'LOGIN-DELAY 900' || bail_out "fakepop3"
DPORT=$FAKEPOP3_PORT DREC=$FAKEPOP3_REC
start_fakepop3 "$TESTDIR/h" mailbox --messages 1 --password 'the-right-one' || bail_out "fakepop3"
HPORT=$FAKEPOP3_PORT HREC=$FAKEPOP3_REC
# write_conf FILE NAME... - accounts q (drops at QUIT), d (LOGIN-DELAY),
# h (refuses the password), t (implicit TLS to a plain port)
write_conf() {
	local f=$1 n p
	shift
	{
		conf_base "$SPOOL"
		for n in "$@"; do
			case $n in q | t) p=$QPORT ;; d) p=$DPORT ;; h) p=$HPORT ;; esac
			conf_account "$n" server 127.0.0.1 port "$p" \
				tls "$([ "$n" = t ] && echo implicit || echo none)" \
				allow_plaintext true user "$n" password_file "$TESTDIR/pass" \
				deliver_to "$n@corp.example" interval 300 tls_timeout 5
		done
	} >"$f"
}
# one file per account, one spool: every `poll` below names no account,
# as a timer or an operator's plain `popgate poll --once` does
for n in q d h t; do write_conf "$TESTDIR/$n.conf" "$n"; done
acct() { spool_sql "$SPOOL" "select $2 from accounts where name='$1'"; }

# ---- a failed QUIT, then `poll` at once: the messages are deleted ----------
pg "$LOG" -c "$TESTDIR/q.conf" poll --once
is "$PG_RC" 75 "the server dropped the connection at QUIT: poll --once exits 75" || note "$LOG" 10
is "$(spool_sql "$SPOOL" "select count(*) from messages where account='q'")" 3 \
	"the 3 messages were spooled before the failed QUIT"
ok "[ $(acct q not_before) -gt $(date +%s) ]" "the account is in backoff"
pg "$LOG" -c "$TESTDIR/q.conf" relay --once
is "$(sink_count)" 3 "the 3 messages were relayed"
: >"$QREC"
pg "$LOG" -c "$TESTDIR/q.conf" poll --once
is "$PG_RC" 0 "poll --once right after, in backoff: it polls now and exits 0" || note "$LOG" 10
ok "! grep -q 'account=q status=skipped' '$LOG'" "it does not skip the account"
is "$(grep -ac '^DELE [123]' "$QREC") $(grep -ac '^RETR' "$QREC") $(grep -ac '^QUIT' "$QREC")" "3 0 1" \
	"the messages known as spooled are deleted (DELE 1-3, no RETR, QUIT)"
: >"$QREC"
pg "$LOG" -c "$TESTDIR/q.conf" poll --once
is "$(grep -ac '^DELE' "$QREC") $(grep -ac '^RETR' "$QREC")" "0 0" "the mailbox is empty afterwards"
pg "$LOG" -c "$TESTDIR/q.conf" relay --once
is "$(sink_count)" 3 "nothing was relayed twice"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "sent|3" \
	"the index holds each message once, sent"

# ---- the server's LOGIN-DELAY is the one thing that stops `poll` -----------
pg "$LOG" -c "$TESTDIR/d.conf" poll --once
is "$PG_RC" 0 "LOGIN-DELAY 900: the first poll works" || note "$LOG" 10
: >"$DREC"
pg "$LOG" -c "$TESTDIR/d.conf" poll --once
is "$PG_RC" 75 "a poll within the server's LOGIN-DELAY exits 75"
like "$(tail -n 3 "$LOG")" "account=d status=skipped reason=\"the server's LOGIN-DELAY 900 s" \
	"and says the server's LOGIN-DELAY holds it"
ok "! grep -qaE '^(USER|PASS|AUTH)' '$DREC'" "no login was tried within the delay"

# ---- a refused login: 77 on every poll, and run --once returns at once -----
pg "$LOG" -c "$TESTDIR/h.conf" poll --once
is "$PG_RC" 77 "a refused login: poll --once exits 77"
: >"$HREC"
pg "$LOG" -c "$TESTDIR/h.conf" poll --once
is "$PG_RC" 77 "the next poll --once tries again and exits 77 too, not 0"
ok "grep -qaE '^(USER|AUTH)' '$HREC'" "it did log in again (the operator asked for it)"
: >"$HREC"
timeout 30 "$POPGATE" -c "$TESTDIR/h.conf" run --once 2>>"$LOG"
rc=$?
isnt "$rc" 124 "run --once with a held account (interval 300) does not wait out the interval"
is "$rc" 77 "run --once exits 77: the held account was skipped"
like "$(grep 'account=h status=skipped' "$LOG" | tail -n 1)" 'warning: .*reason="authentication refused' \
	"the skip is reported at warning level with its reason"
ok "! grep -qaE '^(USER|AUTH)' '$HREC'" "run --once keeps the hold: no login sent"

# ---- run --once keeps the backoff: exit 75 ---------------------------------
spool_sql "$SPOOL" "update accounts set failures = 2, not_before = strftime('%s','now') + 3600,
	last_result = 'temporary' where name = 'q'"
: >"$QREC"
timeout 30 "$POPGATE" -c "$TESTDIR/q.conf" run --once 2>>"$LOG"
is "$?" 75 "run --once with the account in backoff exits 75"
like "$(grep 'account=q status=skipped' "$LOG" | tail -n 1)" 'reason="backoff after 2 failures' \
	"the account in backoff is skipped, with the reason"
ok "! grep -qaE '^(USER|AUTH)' '$QREC'" "and not logged into"

# ---- a TLS failure: 69 on every poll -----------------------------------------
pg "$LOG" -c "$TESTDIR/t.conf" poll --once
first=$PG_RC
pg "$LOG" -c "$TESTDIR/t.conf" poll --once
is "$first $PG_RC" "69 69" "a TLS failure exits 69 on the first poll --once and on the next"

done_testing
