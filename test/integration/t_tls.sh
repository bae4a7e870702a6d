#!/bin/bash
# t_tls.sh - certificate and host name verification: a server certificate
# from an unknown CA or for another host name ends the session before any
# login, leaves nothing in the spool and the mailbox untouched, and says why
# in the log.  A failing account does not stop the others.  Implicit TLS works.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
CA=$TESTDIR/pop/ca.pem
OTHER_CA=$TESTDIR/pop/other-ca.pem
for u in wrongca wrongca2 wronghost good implicit pinned pinbad dwrongca dgood dwronghost; do
	dovecot_add_user "$u" "pw-$u"
	password_file "$TESTDIR/$u.pass" "pw-$u"
	mail_gen --maildir "$(maildir_of "$u")" --expected "$TESTDIR/exp-$u" --count 5 \
		--prefix "$u" --shapes simple >/dev/null || bail_out "mkmail failed"
done

# refused CASE USER SERVER PORT TLS CAFILE REGEX - one account that must fail
refused() {
	local case=$1 u=$2 server=$3 port=$4 tls=$5 ca=$6 re=$7
	local spool=$TESTDIR/spool-$case conf=$TESTDIR/$case.conf log=$TESTDIR/$case.log
	{
		conf_base "$spool"
		conf_account "$u" server "$server" port "$port" tls "$tls" ca_file "$ca" \
			user "$u" password_file "$TESTDIR/$u.pass" deliver_to "$u@corp.example"
	} >"$conf"
	pg "$log" -c "$conf" poll --once
	isnt "$PG_RC" 0 "$case: poll fails"
	is "$PG_RC" 69 "$case: exit status 69 (permanent failure)"
	like "$(cat "$log")" "$re" "$case: the log names the certificate problem" || note "$log"
	like "$(grep -m1 'status=failed' "$log")" "account=$u" "$case: a status=failed line names the account"
	is "$(count_files "$spool/msg")" 0 "$case: nothing in SPOOL/msg"
	if [ -f "$spool/index.db" ]; then
		is "$(spool_sql "$spool" "select count(*) from messages")" 0 "$case: no index rows"
	else
		pass "$case: no index rows (no index at all)"
	fi
	is "$(maildir_count "$u")" 5 "$case: the mailbox is unchanged"
	ok "! grep -q 'user=<$u>' '$DOVECOT_LOG'" "$case: no login reached Dovecot"
}

refused wrongca wrongca localhost "$POP3_PORT" starttls "$OTHER_CA" \
	'certificate verify failed|unable to get (local )?issuer certificate|self.signed'
refused wrongca-implicit wrongca2 localhost "$POP3S_PORT" implicit "$OTHER_CA" \
	'certificate verify failed|unable to get (local )?issuer certificate|self.signed'
refused wronghost wronghost 127.0.0.1 "$POP3_PORT" starttls "$CA" \
	'hostname mismatch|IP address mismatch|certificate'

# implicit TLS success, and one bad account does not stop a good one
SPOOL=$TESTDIR/spool-mixed
CONF=$TESTDIR/mixed.conf
LOG=$TESTDIR/mixed.log
{
	conf_base "$SPOOL"
	conf_account wronghost server 127.0.0.1 port "$POP3S_PORT" tls implicit ca_file "$CA" \
		user wronghost password_file "$TESTDIR/wronghost.pass" deliver_to wronghost@corp.example
	conf_account implicit server localhost port "$POP3S_PORT" tls implicit ca_file "$CA" \
		user implicit password_file "$TESTDIR/implicit.pass" deliver_to implicit@corp.example
	conf_account good server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
		user good password_file "$TESTDIR/good.pass" deliver_to good@corp.example
} >"$CONF"
pg "$LOG" -c "$CONF" poll --once
isnt "$PG_RC" 0 "mixed: poll reports the failed account in its exit status"
is "$(maildir_count implicit) $(maildir_count good)" "0 0" \
	"mixed: the implicit-TLS and STLS accounts were drained" || note "$LOG"
is "$(maildir_count wronghost)" 5 "mixed: the failing account's mailbox is unchanged"
is "$(spool_sql "$SPOOL" "select account, count(*) from messages group by account order by account")" \
	"good|5
implicit|5" "mixed: the spool holds exactly the good accounts' messages"
pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "mixed: relay exits 0"
files=()
while IFS= read -r f; do
	grep -q '^X-Rcpt-Args: <implicit@corp.example>' "$f" && files+=("$f")
done < <(sink_files)
run_checks mail_check --expected "$TESTDIR/exp-implicit" --format sink \
	--rcpt implicit@corp.example "${files[@]}"

# tls_fingerprint pins the server's certificate: a matching pin is trusted
# even when the CA check alone would refuse (a self-managed server), and a
# pin that does not match refuses even a certificate the CA vouches for.
FP=$(openssl x509 -in "$TESTDIR/pop/server.pem" -noout -fingerprint -sha256 | sed 's/^.*=//')
pin_conf() {
	{
		conf_base "$TESTDIR/spool-$1"
		conf_account "$1" server localhost port "$POP3_PORT" tls starttls ca_file "$2" \
			tls_fingerprint "sha256:$3" user "$1" password_file "$TESTDIR/$1.pass" \
			deliver_to "$1@corp.example"
	} >"$TESTDIR/$1.conf"
}
pin_conf pinned "$OTHER_CA" "$FP"
pg "$TESTDIR/pinned.log" -c "$TESTDIR/pinned.conf" poll --once
is "$PG_RC" 0 "pin: a matching tls_fingerprint is trusted despite an unknown CA" ||
	note "$TESTDIR/pinned.log"
is "$(maildir_count pinned)" 0 "pin: the pinned account was drained"
is "$(spool_sql "$TESTDIR/spool-pinned" "select count(*) from messages")" 5 \
	"pin: its 5 messages are in the spool"
pin_conf pinbad "$CA" "$(printf '%064d' 0)"
pg "$TESTDIR/pinbad.log" -c "$TESTDIR/pinbad.conf" poll --once
is "$PG_RC" 69 "pin: a wrong tls_fingerprint refuses a CA-valid certificate (exit 69)"
like "$(cat "$TESTDIR/pinbad.log")" "does not match tls_fingerprint" \
	"pin: the log says the fingerprint does not match"
is "$(maildir_count pinbad)" 5 "pin: the mailbox of the refused account is unchanged"
ok "! grep -q 'user=<pinbad>' '$DOVECOT_LOG'" "pin: no login reached Dovecot"

# The daemon (run --once) loads each ca_file's trust store once, before it
# forks its poll workers (net_tls_preload): the stores of two CA files stay
# apart, and a preloaded store still checks the host name.  One worker
# (max_parallel_polls = 1) polls the three accounts in turn and keeps one
# SSL_CTX per store: the one dgood's poll built serves dwronghost's too, and
# the host name is still checked (it is set on each connection).
SPOOL=$TESTDIR/spool-daemon
CONF=$TESTDIR/daemon.conf
LOG=$TESTDIR/daemon.log
{
	conf_base "$SPOOL"
	echo "max_parallel_polls = 1"
	conf_account dwrongca server localhost port "$POP3_PORT" tls starttls ca_file "$OTHER_CA" \
		user dwrongca password_file "$TESTDIR/dwrongca.pass" deliver_to dwrongca@corp.example
	conf_account dgood server localhost port "$POP3S_PORT" tls implicit ca_file "$CA" \
		user dgood password_file "$TESTDIR/dgood.pass" deliver_to dgood@corp.example
	conf_account dwronghost server 127.0.0.1 port "$POP3_PORT" tls starttls ca_file "$CA" \
		user dwronghost password_file "$TESTDIR/dwronghost.pass" deliver_to dwronghost@corp.example
} >"$CONF"
pg "$LOG" -c "$CONF" run --once
isnt "$PG_RC" 0 "daemon: run --once reports the refused accounts"
is "$(grep -c 'status=worker-started' "$LOG")" 1 "daemon: one worker polled the three accounts"
is "$(maildir_count dgood)" 0 "daemon: the account of the good CA was drained" || note "$LOG"
is "$(maildir_count dwrongca) $(maildir_count dwronghost)" "5 5" \
	"daemon: the other CA's account and the wrong host's are untouched"
like "$(grep 'account=dwrongca' "$LOG")" 'certificate verify failed|unable to get (local )?issuer certificate' \
	"daemon: the other CA's store refused the certificate"
like "$(grep 'account=dwronghost' "$LOG")" 'hostname mismatch|IP address mismatch|certificate' \
	"daemon: the preloaded store still checks the host name"
ok "! grep -q -e 'user=<dwrongca>' -e 'user=<dwronghost>' '$DOVECOT_LOG'" \
	"daemon: no login of a refused account reached Dovecot"
is "$(spool_sql "$SPOOL" "select account, count(*) from messages group by account")" "dgood|5" \
	"daemon: the spool holds the good account's messages only"

done_testing
