#!/bin/bash
# t_smtp_tls.sh - TLS toward the local SMTP host, named as Postfix's
# smtp_tls_security_level, against a private Postfix with a self-signed
# certificate (as a stock Debian Postfix has: the snakeoil one) and against
# smtp-sink (no STARTTLS).  may and encrypt deliver (byte-exact); verify
# refuses the self-signed certificate (deferred, kept, the reason logged)
# and delivers with it as ca_file; verify checks the host name; "starttls"
# is verify; encrypt toward a host without STARTTLS defers; a wrong
# tls_fingerprint defers naming both fingerprints, the right one delivers.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v postfix >/dev/null 2>&1 || skip_all "postfix is not installed"

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem

# a self-signed certificate for localhost, like Debian's snakeoil one
SS=$TESTDIR/selfsigned
mkdir -p "$SS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$SS/server.key" -out "$SS/server.pem" -days 30 -subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost" >/dev/null 2>&1 || bail_out "openssl failed"
chmod 0644 "$SS/server.pem"
chmod 0600 "$SS/server.key"
FP=$(openssl x509 -in "$SS/server.pem" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' |
	tr 'A-F' 'a-f')
BADFP=sha256:$(printf '%064d' 0)

POSTFIX_TLS_DIR=$SS start_postfix "$TESTDIR/pf" || bail_out "cannot start Postfix"
CASES="may encrypt verify alias verifyca verifyip pinbad pingood office batch"
for n in $CASES; do
	postfix_mailbox "$n@corp.example"
done
postfix_reload || bail_out "postfix reload failed"

# box NAME - a Dovecot user with 2 generated messages
box() {
	dovecot_add_user "$1" "pw-$1"
	password_file "$TESTDIR/$1.pass" "pw-$1"
	mail_gen --maildir "$(maildir_of "$1")" --expected "$TESTDIR/exp-$1" --count 2 \
		--prefix "$1" --shapes simple >/dev/null || bail_out "mkmail failed"
}

# run NAME SMTP-BLOCK-LINES... - poll NAME's box into spool-NAME, relay once
run() {
	local n=$1
	shift
	box "$n"
	{
		conf_base "$TESTDIR/spool-$n" | sed '/^smtp {/,/^}/d'
		echo 'smtp {'
		printf '  %s\n' 'timeout = 10' "$@"
		echo '}'
		conf_account "$n" server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
			user "$n" password_file "$TESTDIR/$n.pass" deliver_to "$n@corp.example"
	} >"$TESTDIR/$n.conf"
	LOG=$TESTDIR/$n.log
	pg "$LOG" -c "$TESTDIR/$n.conf" poll --once
	pg "$LOG" -c "$TESTDIR/$n.conf" relay --once
	RELAY_RC=$PG_RC
}

states() { spool_sql "$TESTDIR/spool-$1" "select state, count(*) from messages group by state order by state"; }
delivered() { find "$(postfix_maildir "$1@corp.example")/new" -type f 2>/dev/null | wc -l; }

# exact NAME - each Maildir file, less Postfix's own header lines before
# popgate's Received and with CRLF restored, is the canonical message less
# Return-Path (libesmtp strips it)
exact() {
	local n=$1 f
	wait_for "delivered $n" 2 || { fail "$n: 2 messages in the Maildir"; return; }
	mkdir -p "$TESTDIR/got-$n"
	for f in $(find "$(postfix_maildir "$n@corp.example")/new" -type f); do
		"$PYTHON" - "$f" "$TESTDIR/got-$n/$(basename "$f")" <<'EOF'
import re, sys
data = open(sys.argv[1], "rb").read().replace(b"\n", b"\r\n")
m = re.search(rb"^Received: from [^\r]*\r\n\tby [^ ]+ \(popgate\)", data, re.M)
body = data[m.start():] if m else data
# the sink format is what mkmail.py check reads: X- envelope lines, then
# smtp-sink's three-line Received, then the message (LF line ends)
sender = re.search(rb"^Return-Path: <([^>]*)>", data, re.M).group(1)
with open(sys.argv[2], "wb") as o:
    o.write(b"X-Mail-Args: FROM:<" + sender + b">\nX-Rcpt-Args: TO:<" +
            re.search(rb"^Delivered-To: (\S+)", data, re.M).group(1) + b">\n")
    o.write(b"Received: x\n\tby y\n\tz\n" + body.replace(b"\r\n", b"\n") + b"\n")
EOF
	done
	run_checks mail_check --expected "$TESTDIR/exp-$n" --format sink --rcpt "$n@corp.example" \
		$(find "$TESTDIR/got-$n" -type f)
}

# ---- may and encrypt: self-signed certificate, encrypted, delivered --------
run may 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "may"'
is "$RELAY_RC" 0 "may: relay --once exits 0" || note "$LOG"
is "$(states may)" "sent|2" "may: both sent despite the self-signed certificate" || note "$LOG"
exact may
run encrypt 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "encrypt"'
is "$(states encrypt)" "sent|2" "encrypt: both sent despite the self-signed certificate" ||
	note "$LOG"
exact encrypt
is "$(grep -c 'TLS connection established from localhost' "$POSTFIX_LOG")" 2 \
	"may, encrypt: Postfix logged a TLS connection for each"

# the shipped examples' smtp tls setting works with a self-signed certificate
for n in office batch; do
	line=$(sed -n '/^smtp {/,/^}/p' "$top_srcdir/docs/examples/$n.conf" | grep -E '^ *tls *=')
	run "$n" 'host = "localhost"' "port = $POSTFIX_PORT" "$line"
	is "$(states "$n")" "sent|2" "docs/examples/$n.conf's smtp $line: delivered" || note "$LOG"
done

# ---- verify: the self-signed certificate is refused, then trusted ---------
for n in verify alias; do
	tls=verify
	[ "$n" = alias ] && tls=starttls
	run "$n" 'host = "localhost"' "port = $POSTFIX_PORT" "tls = \"$tls\""
	is "$RELAY_RC" 75 "$n (tls = $tls), no ca_file: relay --once exits 75" || note "$LOG"
	is "$(states "$n")" "deferred|2" "$n: both deferred, not lost" || note "$LOG"
	is "$(spool_count_stored "$TESTDIR/spool-$n")" 2 "$n: both still stored"
	like "$(cat "$LOG")" 'certificate verify failed \(self-signed certificate\)' \
		"$n: the log names the certificate problem"
	is "$(delivered "$n")" 0 "$n: nothing delivered"
done
ok "! grep -q 'to=<\(verify\|alias\)@' '$POSTFIX_LOG'" "verify: Postfix saw no transaction"
run verifyca 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "verify"' \
	"ca_file = \"$SS/server.pem\""
is "$(states verifyca)" "sent|2" "verify with the certificate as ca_file: both sent" || note "$LOG"
exact verifyca
run verifyip 'host = "127.0.0.1"' "port = $POSTFIX_PORT" 'tls = "verify"' \
	"ca_file = \"$SS/server.pem\""
is "$(states verifyip)" "deferred|2" "verify, host 127.0.0.1 not in the certificate: deferred" ||
	note "$LOG"
like "$(cat "$LOG")" 'certificate verify failed \(IP address mismatch\)' \
	"verify: the host name (here the address) is checked"

# ---- tls_fingerprint -------------------------------------------------------
run pinbad 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "encrypt"' \
	"tls_fingerprint = \"$BADFP\""
is "$(states pinbad)" "deferred|2" "wrong tls_fingerprint: both deferred" || note "$LOG"
like "$(cat "$LOG")" "does not match tls_fingerprint \\(expected $BADFP, the server's is sha256:$FP\\)" \
	"wrong tls_fingerprint: the log names the expected and the seen fingerprint"
is "$(delivered pinbad)" 0 "wrong tls_fingerprint: nothing delivered"
# the pin replaces the CA check (no ca_file would trust this certificate)
run pingood 'host = "localhost"' "port = $POSTFIX_PORT" 'tls = "verify"' \
	"tls_fingerprint = \"sha256:$FP\""
is "$(states pingood)" "sent|2" "right tls_fingerprint: both sent" || note "$LOG"
exact pingood

# ---- a host without STARTTLS (smtp-sink) -----------------------------------
start_smtp_sink "$TESTDIR/sink" || bail_out "cannot start smtp-sink"
run plainenc 'host = "127.0.0.1"' "port = $SMTP_PORT" 'tls = "encrypt"'
is "$RELAY_RC" 75 "encrypt, no STARTTLS offered: relay --once exits 75" || note "$LOG"
is "$(states plainenc)" "deferred|2" "encrypt, no STARTTLS offered: both deferred" || note "$LOG"
like "$(cat "$LOG")" 'does not offer STARTTLS' "encrypt, no STARTTLS: the log says so"
is "$(sink_count)" 0 "encrypt, no STARTTLS: nothing at the sink"
run plainmay 'host = "127.0.0.1"' "port = $SMTP_PORT" 'tls = "may"'
is "$(states plainmay)" "sent|2" "may, no STARTTLS offered: sent in clear" || note "$LOG"
run_checks mail_check --expected "$TESTDIR/exp-plainmay" --format sink \
	--rcpt plainmay@corp.example $(sink_files)

# ---- configuration ----------------------------------------------------------
{
	conf_base "$TESTDIR/spool-x" | sed '/^smtp {/,/^}/d'
	printf 'smtp {\n  tls = "none"\n  tls_fingerprint = "sha256:%s"\n}\n' "$FP"
} >"$TESTDIR/x.conf"
pg "$TESTDIR/x.log" -c "$TESTDIR/x.conf" check-config
is "$PG_RC" 78 "tls_fingerprint with tls = none: check-config exits 78"
like "$(cat "$TESTDIR/x.log")" "tls_fingerprint' needs TLS" "tls_fingerprint with none: named"

done_testing
