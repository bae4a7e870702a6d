#!/bin/bash
# t_plaintext.sh - secure by default: with tls = "none" and no
# allow_plaintext the client never sends a user name or password over the
# clear connection (a recording fake server proves what it sent); bytes
# injected after the STLS reply abort the session before any login; with
# allow_plaintext = true a plain connection to Dovecot works.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

SECRET='plain-Secr3t-never-sent'
password_file "$TESTDIR/pass" "$SECRET"
B64=$(printf '\0victim\0%s' "$SECRET" | base64 -w0)
B64PW=$(printf '%s' "$SECRET" | base64 -w0)

# no_credentials CASE RECFILE - the recorded client bytes hold no login
no_credentials() {
	local rec=$2
	ok "! grep -qaiE '^(USER|PASS|APOP|AUTH)( |\$)' '$rec'" "$1: the client sent no USER, PASS, APOP or AUTH" ||
		diag "client sent: $(tr -c '[:print:]\n' '.' <"$rec" | head -c 400)"
	ok "! grep -qaF -e '$SECRET' -e '$B64' -e '$B64PW' '$rec'" "$1: the password (plain or base64) was never sent"
}

# ---- tls = none, allow_plaintext unset, against the recording fake -------
start_fakepop3 "$TESTDIR/fake1" record || bail_out "cannot start fakepop3"
SPOOL=$TESTDIR/spool1
{
	conf_base "$SPOOL"
	conf_account victim server 127.0.0.1 port "$FAKEPOP3_PORT" tls none \
		user victim password_file "$TESTDIR/pass" deliver_to victim@corp.example
} >"$TESTDIR/c1.conf"
pg "$TESTDIR/c1.log" -c "$TESTDIR/c1.conf" poll --once
isnt "$PG_RC" 0 "tls=none without allow_plaintext: poll fails"
like "$(cat "$TESTDIR/c1.log")" 'allow_plaintext' "the log names allow_plaintext" || note "$TESTDIR/c1.log"
like "$(grep -m1 'status=failed' "$TESTDIR/c1.log")" 'account=victim' "a status=failed line names the account"
no_credentials "tls=none" "$FAKEPOP3_REC"
ok "! grep -qaF '$SECRET' '$TESTDIR/c1.log'" "the password is not in the log"

# allow_plaintext = false explicitly: the same
FIRST_REC=$FAKEPOP3_REC
: >"$FIRST_REC"
{
	conf_base "$SPOOL"
	conf_account victim server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext false \
		user victim password_file "$TESTDIR/pass" deliver_to victim@corp.example
} >"$TESTDIR/c2.conf"
# named: a manual poll ignores the backoff the first failure set
pg "$TESTDIR/c2.log" -c "$TESTDIR/c2.conf" poll --once victim
isnt "$PG_RC" 0 "allow_plaintext = false: poll fails"
like "$(cat "$TESTDIR/c2.log")" 'allow_plaintext' "allow_plaintext = false: the log names allow_plaintext"
no_credentials "allow_plaintext = false" "$FIRST_REC"

# ---- STLS reply followed by injected bytes (STARTTLS command injection) ---
start_fakepop3 "$TESTDIR/fake2" stls-inject || bail_out "cannot start fakepop3"
make_test_ca "$TESTDIR/ca" || bail_out "openssl failed"
{
	conf_base "$TESTDIR/spool2"
	conf_account victim server localhost port "$FAKEPOP3_PORT" tls starttls \
		ca_file "$TESTDIR/ca/ca.pem" \
		user victim password_file "$TESTDIR/pass" deliver_to victim@corp.example
} >"$TESTDIR/c3.conf"
pg "$TESTDIR/c3.log" -c "$TESTDIR/c3.conf" poll --once
isnt "$PG_RC" 0 "STLS with injected bytes: poll fails"
no_credentials "STLS injection" "$FAKEPOP3_REC"
like "$(cat "$TESTDIR/c3.log")" 'status=failed' "STLS injection: the failure is logged" || note "$TESTDIR/c3.log"

# ---- allow_plaintext = true against Dovecot's plain port ------------------
start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user plain "$SECRET"
mail_gen --maildir "$(maildir_of plain)" --expected "$TESTDIR/exp" --count 3 --prefix plain ||
	bail_out "mkmail failed"
SPOOL=$TESTDIR/spool4
{
	conf_base "$SPOOL"
	conf_account plain server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user plain password_file "$TESTDIR/pass" deliver_to plain@corp.example
} >"$TESTDIR/c4.conf"
pg "$TESTDIR/c4.log" -c "$TESTDIR/c4.conf" poll --once
is "$PG_RC" 0 "allow_plaintext = true: poll works" || note "$TESTDIR/c4.log"
is "$(maildir_count plain)" 0 "allow_plaintext = true: the mailbox was drained"
pg "$TESTDIR/c4.log" -c "$TESTDIR/c4.conf" relay --once
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" "sent|3" \
	"allow_plaintext = true: all sent"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt plain@corp.example $(sink_files)
like "$(cat "$DOVECOT_LOG")" 'Login: user=<plain>' "Dovecot saw the login"
ok "! grep -qF '$SECRET' '$TESTDIR/c4.log'" "allow_plaintext = true: the password is not in the log"

done_testing
