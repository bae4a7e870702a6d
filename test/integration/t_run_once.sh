#!/bin/bash
# t_run_once.sh - `popgate run --once`: every account polled once, the
# relay sending while the polls go on, then exit: the cron/timer job that
# does what fetchmail does in one command.  Asserts the messages at the
# sink byte for byte, the emptied mailboxes, the index, the exit code of a
# failing account and of an unreachable mail host, and that nothing keeps
# running afterwards.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox once 'o-pass'
dovecot_add_user second 's-pass'
password_file "$TESTDIR/pass2" 's-pass'
{
	conf_base "$SPOOL"
	conf_account once server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user once password_file "$TESTDIR/pass" deliver_to "$RCPT" interval 3600
	conf_account second server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user second password_file "$TESTDIR/pass2" deliver_to "$RCPT" interval 3600
} >"$CONF"
mail_gen --maildir "$(maildir_of once)" --expected "$TESTDIR/exp" --count 300 --prefix o1 \
	--big-mib 1 || bail_out "mkmail failed"
mail_gen --maildir "$(maildir_of second)" --expected "$TESTDIR/exp" --count 40 --prefix o2 \
	--shapes simple || bail_out "mkmail failed"

# ---- both accounts, relayed in the same run ----------------------------------
pg "$LOG" -c "$CONF" run --once
is "$PG_RC" 0 "run --once exits 0" || note "$LOG" 30
is "$(maildir_count once) $(maildir_count second)" "0 0" "both mailboxes were drained"
is "$(sink_count)" 340 "every message reached the mail host once"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "sent|340" \
	"every index row is sent"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)
like "$(cat "$LOG")" 'status=stopped reason="done"' "it says it is done, not stopped by a signal"
is "$(pgrep -f -- "-c $CONF" | wc -l)" 0 "no popgate process is left running"
is "$(grep -c 'account=once status=ok' "$LOG") $(grep -c 'account=second status=ok' "$LOG")" \
	"1 1" "each account was polled exactly once"

# ---- nothing new: a quick no-op ----------------------------------------------
: >"$LOG"
pg "$LOG" -c "$CONF" run --once
is "$PG_RC" 0 "run --once with nothing to do exits 0"
is "$(sink_count)" 340 "nothing more at the mail host"

# ---- a refused login: the others are served, the exit code says so -----------
password_file "$TESTDIR/pass2" 'wrong'
mail_gen --maildir "$(maildir_of once)" --expected "$TESTDIR/exp3" --count 5 --prefix o3 \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" run --once
is "$PG_RC" 77 "a refused login makes run --once exit 77 (EX_NOPERM)" || note "$LOG" 20
is "$(sink_count)" 345 "the other account's 5 messages were relayed in the same run"
password_file "$TESTDIR/pass2" 's-pass'

# ---- the mail host down: the mail waits in the spool, exit 75 -----------------
mail_gen --maildir "$(maildir_of once)" --expected "$TESTDIR/exp4" --count 5 --prefix o4 \
	--shapes simple >/dev/null
sed -i "s/^\(  port = \)$SMTP_PORT\$/\1$(free_port)/" "$CONF"
grep -q "port = $SMTP_PORT\$" "$CONF" && bail_out "could not point the relay at a closed port"
pg "$LOG" -c "$CONF" run --once
is "$PG_RC" 75 "the mail host down: run --once exits 75 (EX_TEMPFAIL)" || note "$LOG" 20
is "$(maildir_count once)" 0 "the mailbox was still drained"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state in ('deferred', 'queued')")" 5 \
	"the 5 new messages wait in the spool"
is "$(pgrep -f -- "-c $CONF" | wc -l)" 0 "no popgate process is left running"

done_testing
