#!/bin/bash
# t_test_account.sh - test-account recognises the usual mistakes and says
# what to change (against the suite's Dovecot: POP3_PORT plain/STLS,
# POP3S_PORT implicit TLS): implicit TLS to the plain port; tls = starttls
# to the implicit-TLS port (without waiting out the 60 s timeout); a
# certificate failure shows subject, issuer, validity and the fingerprint
# to paste (and the pasted pin works); a password file the run-time user
# cannot read; auth = xoauth2 where the server does not offer it (78, and
# poll does not hold the account as if the password were wrong).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem
chmod 0711 "$TESTDIR"
dovecot_add_user ta pw-ta
password_file "$TESTDIR/ta.pass" pw-ta
mail_gen --maildir "$(maildir_of ta)" --expected "$TESTDIR/exp-ta" --count 1 --prefix ta \
	--shapes simple >/dev/null || bail_out "mkmail failed"
OUT=$TESTDIR/out

# ta NAME TOP-LINES KEY VALUE... - a config NAME.conf with account "ta"
ta() {
	local n=$1 top=$2
	shift 2
	{
		conf_base "$TESTDIR/spool-$n"
		printf '%s\n' "$top"
		conf_account ta server localhost user ta deliver_to ta@corp.example timeout 60 "$@"
	} >"$TESTDIR/$n.conf"
}
tacc() {
	timeout 40 "$POPGATE" -c "$TESTDIR/$1.conf" test-account ta >"$OUT" 2>&1
	RC=$?
}

# ---- implicit TLS to the plain port -----------------------------------------
ta plainport '' port "$POP3_PORT" tls implicit ca_file "$CA" password_file "$TESTDIR/ta.pass"
tacc plainport
is "$RC" 78 "implicit TLS to the plain POP3 port: exit 78 (configuration)"
like "$(cat "$OUT")" 'this port speaks plain POP3: use tls = "starttls" or port 995' \
	"... says the port speaks plain POP3" || note "$OUT"

# ---- tls = starttls to the implicit-TLS port --------------------------------
# timeout = 60 and a 40 s limit: the hint must come from the probe, not
# from waiting out the greeting timeout
ta tlsport '' port "$POP3S_PORT" tls starttls ca_file "$CA" password_file "$TESTDIR/ta.pass"
tacc tlsport
is "$RC" 78 "starttls to the implicit-TLS port: exit 78, without waiting 60 s"
like "$(cat "$OUT")" 'this port expects implicit TLS: use tls = "implicit"' \
	"... says the port expects implicit TLS" || note "$OUT"

# ---- a certificate failure shows the certificate ----------------------------
FP=$(openssl x509 -in "$TESTDIR/pop/server.pem" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' |
	tr 'A-F' 'a-f')
ta nocert '' port "$POP3S_PORT" tls implicit password_file "$TESTDIR/ta.pass"
tacc nocert
is "$RC" 69 "an untrusted certificate: exit 69"
like "$(cat "$OUT")" 'subject: +CN=localhost' "... prints the subject" || note "$OUT"
like "$(cat "$OUT")" 'issuer: +CN=popgate test CA' "... prints the issuer"
like "$(cat "$OUT")" 'valid: +from .* GMT to .* GMT' "... prints the validity"
like "$(cat "$OUT")" "fingerprint: sha256:$FP" "... prints the SHA-256 fingerprint (as openssl's)"
like "$(cat "$OUT")" "tls_fingerprint = \"sha256:$FP\"" "... ready to paste as tls_fingerprint"
ta pasted '' port "$POP3S_PORT" tls implicit password_file "$TESTDIR/ta.pass" \
	tls_fingerprint "$(sed -n 's/^ *tls_fingerprint = "\(.*\)"$/\1/p' "$OUT")"
tacc pasted
is "$RC" 0 "the pasted tls_fingerprint works" || note "$OUT"

# ---- a password file the run-time user cannot read --------------------------
ta unread 'user = "nobody"' port "$POP3S_PORT" tls implicit ca_file "$CA" \
	password_file "$TESTDIR/ta.pass"
tacc unread
is "$RC" 78 "root-only password_file with user = nobody: exit 78"
like "$(cat "$OUT")" "option 'password_file': user 'nobody' cannot read '$TESTDIR/ta.pass'" \
	"... names the option, the user and the file" || note "$OUT"
like "$(cat "$OUT")" "the run-time user cannot read it: fix owner/mode" "... and the fix"
# run as that user (the file is root's, mode 0600)
chmod 0644 "$TESTDIR/unread.conf"
if command -v setpriv >/dev/null 2>&1; then
	timeout 40 setpriv --reuid nobody --regid "$(id -g nobody)" --clear-groups \
		"$POPGATE" -c "$TESTDIR/unread.conf" test-account ta >"$OUT" 2>&1
	RC=$?
	is "$RC" 78 "as user nobody itself: exit 78"
	like "$(cat "$OUT")" "the run-time user cannot read it: fix owner/mode" \
		"... says the run-time user cannot read it" || note "$OUT"
else
	skip 2 "setpriv is not installed"
fi

# ---- auth = xoauth2 where the server does not offer it ----------------------
ta xo '' port "$POP3S_PORT" tls implicit ca_file "$CA" auth xoauth2 \
	password_command "/bin/echo not-a-token"
tacc xo
is "$RC" 78 "auth = xoauth2, not offered: exit 78 (not 77)"
like "$(cat "$OUT")" 'the server does not offer XOAUTH2 \(it offers: PLAIN LOGIN' \
	"... says the server does not offer XOAUTH2 and what it offers" || note "$OUT"
LOG=$TESTDIR/xo.log
pg "$LOG" -c "$TESTDIR/xo.conf" poll --once
is "$PG_RC" 78 "poll --once: exit 78"
is "$(spool_sql "$TESTDIR/spool-xo" "select coalesce(auth_failed, '') from accounts where name = 'ta'")" "" \
	"poll: the account is not held as auth-failed"
ok "! grep -q 'status=auth-failed' '$LOG'" "poll: no auth-failed in the log" || note "$LOG"
ok "! grep -q 'AUTH XOAUTH2' '$LOG'" "poll: AUTH XOAUTH2 was never sent"
is "$(maildir_count ta)" 1 "the mailbox is untouched"

done_testing
