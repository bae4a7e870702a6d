#!/bin/bash
# t_drain.sh - drain two mailboxes (STLS and implicit TLS) from a private
# Dovecot into the spool, relay everything to smtp-sink, and prove every
# message arrived exactly once, byte for byte, with the right envelope.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

N_OFFICE=210   # the varied shapes, one of them 5 MiB
N_REMOTE=30    # over implicit TLS
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
PASS_OFFICE='office-Secr3t!'
PASS_REMOTE='remote pass w0rd'

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user office "$PASS_OFFICE"
dovecot_add_user remote "$PASS_REMOTE"
mail_gen --maildir "$(maildir_of office)" --expected "$TESTDIR/exp-office" \
	--count $N_OFFICE --prefix office --big-mib 5 || bail_out "mkmail failed"
mail_gen --maildir "$(maildir_of remote)" --expected "$TESTDIR/exp-remote" \
	--count $N_REMOTE --prefix remote || bail_out "mkmail failed"
password_file "$TESTDIR/office.pass" "$PASS_OFFICE"
password_file "$TESTDIR/remote.pass" "$PASS_REMOTE"

{
	conf_base "$SPOOL" gw.test
	conf_account office server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user office password_file "$TESTDIR/office.pass" \
		deliver_to office@corp.example keep false timeout 60
	conf_account remote server localhost port "$POP3S_PORT" tls implicit \
		ca_file "$TESTDIR/pop/ca.pem" user remote password_file "$TESTDIR/remote.pass" \
		deliver_to remote@corp.example keep false timeout 60
} >"$CONF"

is "$(maildir_count office) $(maildir_count remote)" "$N_OFFICE $N_REMOTE" "mailboxes loaded"

# ---- poll ------------------------------------------------------------------
pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 0 "poll --once exits 0" || note "$LOG" 30
is "$(maildir_count office)" 0 "office maildir (STLS) is empty after the poll" || note "$DOVECOT_LOG"
is "$(maildir_count remote)" 0 "remote maildir (implicit TLS) is empty after the poll"
is "$(spool_sql "$SPOOL" "select account, count(*) from messages group by account order by account")" \
	"office|$N_OFFICE
remote|$N_REMOTE" "index has one row per fetched message"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" \
	"queued|$((N_OFFICE + N_REMOTE))" "every row is queued after the poll"
# a message that fits 64 KiB lives in the index only, a larger one in msg/
nbig=$(spool_sql "$SPOOL" "select count(*) from messages where size > 65536")
ok "[ $nbig -gt 0 ] && [ $nbig -lt $((N_OFFICE + N_REMOTE)) ]" "the mailboxes hold small and large messages ($nbig large)"
is "$(spool_sql "$SPOOL" "select count(*) from messages where in_index <> (size <= 65536)")" 0 \
	"in_index is set exactly for the messages of at most 64 KiB"
is "$(count_files "$SPOOL/msg")" "$nbig" "one spool file per large message"
is "$(spool_sql "$SPOOL" "select count(*) from bodies b join messages m on m.id = b.msg_id where m.in_index = 1")" \
	"$((N_OFFICE + N_REMOTE - nbig))" "one index body per small message"
is "$(count_files "$SPOOL/tmp")" 0 "nothing left in SPOOL/tmp"

for acct in office remote; do
	files=()
	spool_export "$SPOOL" "$TESTDIR/export-$acct" "account = '$acct'"
	while IFS= read -r id; do files+=("$TESTDIR/export-$acct/$id"); done \
		< <(spool_sql "$SPOOL" "select id from messages where account='$acct'")
	run_checks mail_check --expected "$TESTDIR/exp-$acct" --format spool \
		--rcpt "$acct@corp.example" --hostname gw.test "${files[@]}"
done

# size and digest columns describe the stored message (file or index row)
bad=0
while IFS='|' read -r id size digest acct; do
	f=$TESTDIR/export-$acct/$id
	if [ "$(stat -c %s "$f" 2>/dev/null)" != "$size" ] ||
		[ "$(sha256sum <"$f" | cut -d' ' -f1)" != "$digest" ]; then
		bad=$((bad + 1))
		[ $bad -le 3 ] && diag "$id: size/digest $size $digest do not match the file"
	fi
done < <(spool_sql "$SPOOL" "select id, size, digest, account from messages")
is "$bad" 0 "size and sha256 digest in the index match each spool file"

# envelope sender recorded at ingest: the Return-Path address, else ''
is "$(spool_sql "$SPOOL" "select count(*) from messages where sender='bounce-0@lists.example.org' and account='office'")" 1 \
	"sender column holds the Return-Path address"

# ---- relay -----------------------------------------------------------------
pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "relay --once exits 0" || note "$LOG" 30
is "$(sink_count)" "$((N_OFFICE + N_REMOTE))" "smtp-sink received one transaction per message"
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state")" \
	"sent|$((N_OFFICE + N_REMOTE))" "every index row is 'sent'"
is "$(spool_sql "$SPOOL" "select count(*) from recipients where state <> 'sent'")" 0 \
	"every recipient row is 'sent'"
is "$(count_files "$SPOOL/msg")" 0 "no files remain in SPOOL/msg"
is "$(spool_sql "$SPOOL" "select count(*) from bodies")" 0 "no bodies remain in the index"

for acct in office remote; do
	files=()
	while IFS= read -r f; do
		grep -q "^X-Rcpt-Args: <$acct@corp.example>" "$f" && files+=("$f")
	done < <(sink_files)
	run_checks mail_check --expected "$TESTDIR/exp-$acct" --format sink \
		--rcpt "$acct@corp.example" --hostname gw.test --ids-out "$TESTDIR/ids-$acct" "${files[@]}"
	# the id in popgate's Received header is the spool id of that message
	is "$(cut -d' ' -f2 "$TESTDIR/ids-$acct" | sort)" \
		"$(spool_sql "$SPOOL" "select id from messages where account='$acct' order by id")" \
		"$acct: the Received header carries the spool id"
done

# ---- a second round finds nothing ----------------------------------------
pg "$LOG" -c "$CONF" poll --once
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count) $(spool_sql "$SPOOL" "select count(*) from messages")" \
	"$((N_OFFICE + N_REMOTE)) $((N_OFFICE + N_REMOTE))" "a second poll and relay move nothing"

# ---- secrets never reach the log ---------------------------------------
b64=$(printf '\0office\0%s' "$PASS_OFFICE" | base64 -w0)
ok "! grep -qF -e '$PASS_OFFICE' -e '$PASS_REMOTE' -e '$b64' '$LOG'" "no password (nor its AUTH PLAIN base64) in the log"

done_testing
