#!/bin/bash
# t_pop3_state.sh - the server's response codes drive the account's state
# ([IN-USE]/[SYS/TEMP] backoff, [SYS/PERM] long backoff, [AUTH] hold until
# the configuration changes or a manual poll), CAPA LOGIN-DELAY and EXPIRE,
# keep without UIDL, the per-poll limits and max_message_size/oversize,
# keep_days, and secrets (plain and base64) never in a debug log.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

SECRET='state-Secr3t-pw'
password_file "$TESTDIR/pass" "$SECRET"

# scenario NAME [fakepop3 args] -- [account options] : one fake, one account "a"
scenario() {
	local name=$1
	shift
	local fargs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do fargs+=("$1"); shift; done
	shift
	D=$TESTDIR/$name
	start_fakepop3 "$D" mailbox "${fargs[@]}" || bail_out "cannot start fakepop3"
	REC=$FAKEPOP3_REC
	SPOOL=$D/spool
	{
		conf_base "$SPOOL"
		conf_account a server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
			user a password_file "$TESTDIR/pass" deliver_to a@corp.example "$@"
	} >"$D/popgate.conf"
	LOG=$D/popgate.log
}
poll() { pg "$LOG" -c "$D/popgate.conf" poll --once "$@"; }
# timer - what a timer runs: `run --once` keeps the backoff and the holds
timer() { pg "$LOG" -c "$D/popgate.conf" run --once; }
acct() { spool_sql "$SPOOL" "select $1 from accounts where name='a'"; }
now() { date +%s; }

# ---- [IN-USE]: temporary, backoff, logged once with the server's text -------
scenario inuse --login-reply '-ERR [IN-USE] mailbox locked by another session' --
poll
isnt "$PG_RC" 0 "[IN-USE]: the poll fails"
is "$(grep -c 'status=failed' "$LOG")" 1 "[IN-USE]: logged once"
like "$(grep 'status=failed' "$LOG")" 'class=temporary code=IN-USE .*mailbox locked by another session' \
	"[IN-USE]: the log line has the code and the server's text"
is "$(acct 'failures, auth_failed is null')" "1|1" "[IN-USE]: one failure, no auth hold"
ok "[ $(acct not_before) -gt $(now) ]" "[IN-USE]: not_before is in the future (backoff)"
timer
like "$(grep 'status=skipped' "$LOG")" 'account=a status=skipped reason="backoff after 1 failure' \
	"[IN-USE]: run --once skips the account and says why"
is "$PG_RC" 75 "[IN-USE]: and exits 75"

# ---- [SYS/PERM]: long backoff ---------------------------------------------
scenario sysperm --login-reply '-ERR [SYS/PERM] account disabled' --
poll
ok "[ $(acct not_before) -ge $(($(now) + 6 * 3600 - 60)) ]" "[SYS/PERM]: backoff of about 6 hours"

# ---- [AUTH]: held until the config changes or a manual poll ----------------
scenario auth --password 'the-right-one' --
poll
is "$PG_RC" 77 "[AUTH]: the poll fails with EX_NOPERM"
is "$(acct 'not_before, auth_failed is not null')" "0|1" "[AUTH]: auth_failed set, not_before 0"
: >"$REC"
timer
ok "! grep -qaE '^(USER|AUTH)' '$REC'" "[AUTH]: a scheduled poll does not try again (no login sent)"
like "$(grep 'status=skipped' "$LOG")" 'status=skipped reason="authentication refused' "[AUTH]: the skip says why"
is "$PG_RC" 77 "[AUTH]: and run --once exits 77"
poll
ok "grep -qaE '^(USER|AUTH)' '$REC'" "[AUTH]: a manual poll tries again"
password_file "$TESTDIR/pass2" 'the-right-one'
sed -i "s|$TESTDIR/pass\"|$TESTDIR/pass2\"|" "$D/popgate.conf"
poll
is "$PG_RC" 0 "[AUTH]: after the password changed, the scheduled poll runs and succeeds" || note "$LOG"
is "$(acct 'failures, auth_failed is null')" "0|1" "[AUTH]: success clears the failure state"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 2 "[AUTH]: the mail was fetched"

# ---- LOGIN-DELAY and EXPIRE from CAPA --------------------------------------
scenario delay --capa USER --capa UIDL --capa 'LOGIN-DELAY 900' --capa 'EXPIRE 30' --
poll
is "$PG_RC" 0 "LOGIN-DELAY: the poll works" || note "$LOG"
is "$(acct 'login_delay, expire')" "900|30" "LOGIN-DELAY 900 and EXPIRE 30 are recorded"
nb=$(acct not_before)
ok "[ $nb -ge $(($(now) + 890)) ] && [ $nb -le $(($(now) + 900)) ]" "LOGIN-DELAY: the next poll waits 900 s"
timer
like "$(grep 'status=skipped' "$LOG")" 'status=skipped reason="LOGIN-DELAY 900 s"' "LOGIN-DELAY: the next scheduled poll is skipped"

# ---- keep = true on a server without UIDL ------------------------------------
scenario nouidl --no-uidl -- keep true
poll
isnt "$PG_RC" 0 "no UIDL + keep: the poll fails"
like "$(grep 'status=failed' "$LOG")" 'keep = true cannot work without UIDL' "no UIDL + keep: says so clearly"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 0 "no UIDL + keep: nothing fetched"

# ---- per-poll limits -----------------------------------------------------------
scenario limits --messages 5 -- max_messages_per_poll 2
poll
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 2 "max_messages_per_poll = 2: two fetched"
like "$(cat "$LOG")" 'status=limited selected=2 deferred=3' "the limit is logged"
poll
poll
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 5 "the rest follows in later polls"

scenario bytes --messages 5 -- max_bytes_per_poll 400
poll
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 2 "max_bytes_per_poll = 400: two 152-octet messages fit, not three"

# ---- max_message_size with oversize = skip | hold | fetch ----------------------
for mode in skip hold fetch; do
	scenario "over-$mode" --messages 2 -- max_message_size 100 oversize "$mode"
	poll
	is "$PG_RC" 0 "oversize = $mode: the poll works" || note "$LOG"
	case $mode in
	skip)
		is "$(spool_sql "$SPOOL" "select count(*) from messages")" 0 "oversize = skip: nothing fetched"
		ok "! grep -qa '^DELE' '$REC'" "oversize = skip: left on the server"
		like "$(cat "$LOG")" 'status=skipped-oversize' "oversize = skip: logged" ;;
	hold)
		is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "held|2" \
			"oversize = hold: fetched and held"
		like "$(spool_sql "$SPOOL" "select last_reply from messages limit 1")" 'oversize' \
			"oversize = hold: the reason names the size" ;;
	fetch)
		is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "queued|2" \
			"oversize = fetch: fetched normally" ;;
	esac
done

# ---- keep_days: a kept message is deleted once it is N days in the spool -----
scenario keepdays --messages 2 -- keep true keep_days 1
poll
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 2 "keep_days: fetched"
ok "! grep -qa '^DELE' '$REC'" "keep_days: not deleted on the first poll"
spool_sql "$SPOOL" "update messages set created = created - 2 * 86400 where uidl = 'fake-uidl-1'"
poll
ok "grep -qa '^DELE 1' '$REC'" "keep_days: the message 2 days in the spool is deleted"
ok "! grep -qa '^DELE 2' '$REC'" "keep_days: the fresh one is kept"

# ---- UIDL pruning: sent rows gone from the server are forgotten --------------
scenario prune --messages 3 --
poll
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 3 "pruning: 3 fetched and deleted from the server"
spool_sql "$SPOOL" "update messages set state = 'sent', updated = updated - 2 * 86400 where uidl <> 'fake-uidl-3'"
spool_sql "$SPOOL" "update messages set updated = updated - 2 * 86400 where uidl = 'fake-uidl-3'"
poll
is "$(spool_sql "$SPOOL" "select uidl from messages")" "fake-uidl-3" \
	"pruning: the sent rows gone from the server are pruned, the queued one stays"
like "$(cat "$LOG")" 'status=pruned uidls=2' "pruning: logged"

# ---- secrets never in a debug log (USER/PASS, PLAIN, XOAUTH2, OAUTHBEARER) ----
TOKEN='ya29.state-TOKEN-value'
printf '#!/bin/sh\necho %s\n' "$TOKEN" >"$TESTDIR/token.sh"
chmod 0700 "$TESTDIR/token.sh"
for auth in user plain xoauth2 oauthbearer; do
	case $auth in
	user | plain) scenario "secret-$auth" --capa USER --capa UIDL --capa 'SASL PLAIN XOAUTH2 OAUTHBEARER' \
		--password "$SECRET" -- auth "$auth" ;;
	*) scenario "secret-$auth" --token "$TOKEN" -- auth "$auth"
	   sed -i "s|password_file = \"$TESTDIR/pass\"|password_command = \"$TESTDIR/token.sh\"|" "$D/popgate.conf" ;;
	esac
	poll
	is "$PG_RC" 0 "auth = $auth: login works" || note "$LOG"
	like "$(cat "$LOG")" 'debug: pop3 account=a' "auth = $auth: the log is at debug level"
	for s in "$SECRET" "$TOKEN" "$(printf '%s' "$SECRET" | base64 -w0)" "$(printf '\0a\0%s' "$SECRET" | base64 -w0)" \
		"$(printf 'user=a\001auth=Bearer %s\001\001' "$TOKEN" | base64 -w0)" \
		"$(printf '%s' "$TOKEN" | base64 -w0 | cut -c1-12)"; do
		ok "! grep -qaF -e '$s' '$LOG'" "auth = $auth: secret form ${s:0:6}... is not in the log"
	done
done

done_testing
