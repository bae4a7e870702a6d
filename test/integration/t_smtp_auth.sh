#!/bin/bash
# t_smtp_auth.sh - SMTP AUTH toward the local mail host: with
# allow_plaintext_auth the relay authenticates (PLAIN or LOGIN, the
# credentials right on the wire as the host saw them) and delivers; the
# secret never reaches popgate's own log.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
# -v: smtp-sink shows the SMTP conversation, AUTH included
start_smtp_sink "$TESTDIR" -v || bail_out "cannot start smtp-sink"
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
SECRET='relay-S3cret'
dovecot_add_user box 'pw-box'
password_file "$TESTDIR/box.pass" 'pw-box'
password_file "$TESTDIR/smtp.pass" "$SECRET"
mail_gen --maildir "$(maildir_of box)" --expected "$TESTDIR/exp" --count 3 --prefix auth \
	--shapes simple >/dev/null || bail_out "mkmail failed"
{
	conf_base "$SPOOL" | sed '/^smtp {/,/^}/d'
	cat <<EOC
smtp {
  host = "127.0.0.1"
  port = $SMTP_PORT
  user = "relay"
  password_file = "$TESTDIR/smtp.pass"
  allow_plaintext_auth = true
}
EOC
	conf_account box server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user box password_file "$TESTDIR/box.pass" \
		deliver_to box@corp.example
} >"$CONF"

pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 0 "poll exits 0" || note "$LOG"
pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "relay with SMTP AUTH exits 0" || note "$LOG"
is "$(sink_count)" 3 "the 3 messages were accepted after AUTH"
sinklog=$(cat "$TESTDIR/smtp-sink.log")
like "$sinklog" "AUTH (PLAIN|LOGIN)" "the relay sent AUTH"
plain=$(printf '\0relay\0%s' "$SECRET" | base64 -w0)

pass64=$(printf '%s' "$SECRET" | base64 -w0)
ok "grep -q -e '$plain' -e '$pass64' '$TESTDIR/smtp-sink.log'" \
	"the host received the configured credentials (PLAIN or LOGIN)"
ok "! grep -q -e '$SECRET' -e '$plain' -e '$pass64' '$LOG'" \
	"the SMTP secret (raw or base64) is not in popgate's log"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt box@corp.example $(sink_files)

done_testing
