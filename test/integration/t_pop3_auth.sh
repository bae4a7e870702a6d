#!/bin/bash
# t_pop3_auth.sh - every mechanism Dovecot supports (USER, APOP, PLAIN,
# LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256) over plain (allow_plaintext),
# STLS and implicit TLS, with pipelining on and off: each login fetches the
# one new message, Dovecot's log names the mechanism, and the debug trace
# shows whether commands were pipelined.  `auth = auto` picks SCRAM-SHA-256;
# on a plain connection without allow_plaintext it still logs in with a
# challenge-response mechanism, never a plaintext one.  XOAUTH2 and
# OAUTHBEARER (two-step form, token from password_command) run against the
# fake server in t_pop3_state.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

SECRET='auth-Secr3t-pw'
start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
dovecot_add_user authuser "$SECRET"
password_file "$TESTDIR/pass" "$SECRET"
SPOOL=$TESTDIR/spool
LOG=$TESTDIR/popgate.log
n=0

# login MECH TLS PIPELINING [extra account options]
login() {
	local auth=$1 tls=$2 pipe=$3 port=$POP3_PORT
	shift 3
	[ "$tls" = implicit ] && port=$POP3S_PORT
	mail_gen --maildir "$(maildir_of authuser)" --expected "$TESTDIR/exp" --count 1 \
		--prefix "m$n" --shapes simple >/dev/null || bail_out "mkmail failed"
	n=$((n + 1))
	{
		conf_base "$SPOOL"
		conf_account authuser server localhost port "$port" tls "$tls" \
			ca_file "$TESTDIR/pop/ca.pem" user authuser password_file "$TESTDIR/pass" \
			deliver_to authuser@corp.example auth "$auth" pipelining "$pipe" "$@"
	} >"$TESTDIR/popgate.conf"
	: >"$LOG"
	pg "$LOG" -c "$TESTDIR/popgate.conf" poll --once authuser
}

for tls in none starttls implicit; do
	for pipe in true false; do
		for auth in user apop plain login cram-md5 scram-sha-1 scram-sha-256; do
			extra=()
			[ "$tls" = none ] && extra=(allow_plaintext true)
			login "$auth" "$tls" "$pipe" "${extra[@]}"
			what="auth=$auth tls=$tls pipelining=$pipe"
			if ! is "$PG_RC" 0 "$what: login and poll work"; then
				note "$LOG"
				continue
			fi
			is "$(spool_sql "$SPOOL" "select count(*) from messages")" "$n" "$what: the new message was fetched"
			want=yes
			[ "$pipe" = false ] && want=no
			like "$(cat "$LOG")" "auth=$(echo "$auth" | tr a-z A-Z | sed 's/^USER$/USER/') pipelining=$want" \
				"$what: mechanism and pipelining as configured"
			ok "! grep -qaF '$SECRET' '$LOG'" "$what: the password is not in the log"
		done
	done
done
ok "grep -q 'method=SCRAM-SHA-256' '$DOVECOT_LOG' && grep -q 'method=APOP' '$DOVECOT_LOG' && grep -q 'method=CRAM-MD5' '$DOVECOT_LOG'" \
	"Dovecot logged the SCRAM-SHA-256, APOP and CRAM-MD5 logins"

# auto: the strongest offered
login auto starttls true
is "$PG_RC" 0 "auth = auto over STLS works" || note "$LOG"
like "$(cat "$LOG")" 'auth=SCRAM-SHA-256' "auth = auto picks SCRAM-SHA-256"
# auto on a plain connection without allow_plaintext: no plaintext mechanism
login auto none true
is "$PG_RC" 0 "auth = auto without TLS and without allow_plaintext still logs in" || note "$LOG"
like "$(cat "$LOG")" 'auth=SCRAM-SHA-256' "... with a challenge-response mechanism"
# an explicit plaintext mechanism without TLS is refused before anything is sent
login plain none true
is "$PG_RC" 78 "auth = plain without TLS or allow_plaintext: refused (EX_CONFIG)"
like "$(cat "$LOG")" 'allow_plaintext' "... and the log says how to allow it"
login apop none true
is "$PG_RC" 78 "auth = apop outside TLS without allow_plaintext: refused"
# a wrong password: [AUTH] state, and the secret stays out of the log
password_file "$TESTDIR/pass" 'wrong-password'
login scram-sha-256 starttls true
is "$PG_RC" 77 "a wrong password is an authentication failure (EX_NOPERM)"
is "$(spool_sql "$SPOOL" "select auth_failed is not null from accounts where name='authuser'")" 1 \
	"the account is marked as failing authentication"

done_testing
