#!/bin/bash
# t_postfix.sh - a real local mail host: a private Postfix delivering to
# virtual Maildirs, with a recipient restriction answering 550 for one
# address and 450 for two others.  Single-drop and multidrop (Delivered-To)
# accounts are polled from Dovecot and relayed to Postfix: mail lands in
# the right Maildirs with the right Return-Path and Delivered-To; the 550
# one is held with Postfix's reply and the postmaster gets an RFC 3464
# notice; a 450 one is deferred and delivered once the restriction is
# lifted; one that stays deferred past max_queue_time is held with a notice.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v postfix >/dev/null 2>&1 || skip_all "postfix is not installed"

PF=$TESTDIR/pf
mkdir -p "$PF/conf"
printf '%s\n' "refuse@corp.example 550 5.1.1 refused by t_postfix" \
	"later@corp.example 450 4.2.1 try later t_postfix" \
	"stale@corp.example 450 4.2.1 still later t_postfix" >"$PF/conf/access"
start_postfix "$PF" || bail_out "cannot start Postfix"
for a in office anna bob later stale postmaster; do postfix_mailbox "$a@corp.example"; done
postfix_reload

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem
for u in office catch; do
	dovecot_add_user "$u" "pw-$u"
	password_file "$TESTDIR/$u.pass" "pw-$u"
done

# put USER N DELIVERED-TO... - a message into USER's Dovecot Maildir
put() {
	local u=$1 n=$2 dt=""
	shift 2
	for a in "$@"; do dt="${dt}Delivered-To: $a\n"; done
	printf "Return-Path: <ret$n@x.example>\n${dt}Date: Mon, 1 Jan 2024 12:00:00 +0000\nFrom: <f$n@x.example>\nTo: <someone@corp.example>\nMessage-ID: <m$n@t_postfix>\nSubject: t_postfix message $n\n\nbody $n\n" \
		>"$(maildir_of "$u")/new/300$n.p$n.host"
	maildir_fix_owner "$u"
}
put office 1
put catch 2 anna@corp.example
put catch 3 bob@corp.example anna@corp.example
put catch 4 refuse@corp.example
put catch 5 later@corp.example
put catch 6 stale@corp.example
put catch 7 nobody@elsewhere.org

SPOOL=$TESTDIR/spool
LOG=$TESTDIR/pf.log
CONF=$TESTDIR/pf.conf
{
	SMTP_PORT=$POSTFIX_PORT conf_base "$SPOOL"
	echo 'postmaster = "postmaster@corp.example"'
	conf_account office server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
		user office password_file "$TESTDIR/office.pass" deliver_to "office@corp.example"
	conf_account catch server localhost port "$POP3_PORT" tls starttls ca_file "$CA" \
		user catch password_file "$TESTDIR/catch.pass" envelope_header "Delivered-To" |
		sed 's/^}$/  local_domains = { "corp.example" }\n}/'
} >"$CONF"
pg "$LOG" -c "$CONF" poll --once
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state order by state")" \
	"held|1
queued|6" "poll: 6 routable messages queued, the foreign one held" || note "$LOG"

pg "$LOG" -c "$CONF" relay --once
sid() { spool_sql "$SPOOL" "select id from messages where uidl in (select uidl from messages) and id in (select msg_id from recipients where addr='$1') limit 1"; }
st() { spool_sql "$SPOOL" "select state from messages where id='$(sid "$1")'"; }

# wait for Postfix's virtual delivery agent (asynchronous after its 250)
wait_mail() {
	local a=$1 want=$2 i
	for ((i = 0; i < 200; i++)); do
		[ "$(find "$(postfix_maildir "$a")/new" -type f 2>/dev/null | wc -l)" -ge "$want" ] && return 0
		sleep 0.05
	done
	return 1
}
wait_mail office@corp.example 1
wait_mail anna@corp.example 2
wait_mail bob@corp.example 1
wait_mail postmaster@corp.example 1
count() { find "$(postfix_maildir "$1")/new" -type f 2>/dev/null | wc -l; }
is "$(count office@corp.example) $(count anna@corp.example) $(count bob@corp.example)" "1 2 1" \
	"single-drop and multidrop mail landed in the right Maildirs" || note "$PF/maillog"
f=$(find "$(postfix_maildir office@corp.example)/new" -type f | head -1)
is "$(sed -n 's/\r$//; /^Return-Path:/p; /^Delivered-To:/p' "$f" | head -2)" \
	"Return-Path: <ret1@x.example>
Delivered-To: office@corp.example" "single-drop: Postfix's Return-Path and Delivered-To"
f=$(grep -l "t_postfix message 3" "$(postfix_maildir bob@corp.example)"/new/*)
is "$(sed -n 's/\r$//; /^Return-Path:/p; /^Delivered-To: bob/p' "$f" | head -2)" \
	"Return-Path: <ret3@x.example>
Delivered-To: bob@corp.example" "multidrop: the envelope of a two-recipient message"
is "$(st refuse@corp.example)" held "550: held"
like "$(spool_sql "$SPOOL" "select last_reply from messages where id='$(sid refuse@corp.example)'")" \
	"^550 .*refused by t_postfix" "550: the server's reply is kept"
is "$(st later@corp.example)" deferred "450: deferred"

# the notice to the postmaster: RFC 3464 layout, from <>
n=$(find "$(postfix_maildir postmaster@corp.example)/new" -type f | head -1)
run_checks "$PYTHON" - "$n" "$(sid refuse@corp.example)" <<'EOF'
import email, sys
from email import policy
raw = open(sys.argv[1], "rb").read()
m = email.message_from_bytes(raw, policy=policy.compat32)
rid = sys.argv[2]
print("CHECK %d notice: Return-Path <> (never a notice from a real sender)"
      % (0 if m["Return-Path"] == "<>" else 1))
print("CHECK %d notice: multipart/report; report-type=delivery-status"
      % (0 if m.get_content_type() == "multipart/report"
         and m.get_param("report-type") == "delivery-status" else 1))
parts = m.get_payload()
types = [p.get_content_type() for p in parts]
print("CHECK %d notice: text/plain, message/delivery-status, text/rfc822-headers %s"
      % (0 if types == ["text/plain", "message/delivery-status", "text/rfc822-headers"] else 1, types))
ds = parts[1].as_string() if len(parts) > 1 else ""
for want in ("Reporting-MTA: dns; gw.test", "Original-Envelope-Id: " + rid,
             "Final-Recipient: rfc822; refuse@corp.example", "Action: failed",
             "Status: 5.1.1", "Diagnostic-Code: smtp; 550"):
    print("CHECK %d notice: delivery-status has %s" % (0 if want in ds else 1, want))
hd = parts[2].as_string() if len(parts) > 2 else ""
print("CHECK %d notice: the original headers are attached"
      % (0 if "Subject: t_postfix message 4" in hd else 1))
EOF

# expiry: a message deferred past max_queue_time is held, with a notice
spool_sql "$SPOOL" "update messages set created = created - 6*86400, next_attempt = 0
	where id='$(sid stale@corp.example)'"
pg "$LOG" -c "$CONF" relay --once
is "$(st stale@corp.example)" held "past max_queue_time: held"
like "$(spool_sql "$SPOOL" "select last_reply from messages where id='$(sid stale@corp.example)'")" \
	"^expired: .*450 .*still later" "past max_queue_time: the reason keeps the last reply"
wait_mail postmaster@corp.example 2
like "$(cat "$(postfix_maildir postmaster@corp.example)"/new/*)" "Status: 4\\.4\\.7" \
	"past max_queue_time: a notice with status 4.4.7"
is "$(spool_sql "$SPOOL" "select count(*) from messages where account='_notice' and state='sent'")" 2 \
	"notices are sent, and no notice about a notice"

# lift the 450 and retry: the deferred message is delivered
printf '%s\n' "refuse@corp.example 550 5.1.1 refused by t_postfix" >"$PF/conf/access"
postfix_reload || bail_out "postfix reload failed"
spool_sql "$SPOOL" "update messages set next_attempt = 0 where state = 'deferred'"
pg "$LOG" -c "$CONF" relay --once
is "$(st later@corp.example)" sent "450 lifted: delivered on the next attempt" || note "$LOG"
wait_mail later@corp.example 1
is "$(count later@corp.example)" 1 "450 lifted: the message is in its Maildir"

done_testing
