#!/bin/bash
# t_route.sh - routing at ingest: multidrop rules (envelope header, skip,
# local_domains, map, fallback_to, Received `for`, guess_from_headers, hold
# when nothing matches), the envelope sender and its fallbacks, unsafe
# addresses held, and `popgate route` (the dry run).  Most cases go through
# `popgate route FILE`, which runs the same code as the poller; one poll
# through Dovecot checks that the decision is stored in the index.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

SPOOL=$TESTDIR/spool
LOG=$TESTDIR/route.log
password_file "$TESTDIR/pw" "secret"

# conf ACCOUNT-OPTIONS... - a config with one account "m" (extra options
# written verbatim, one per argument)
conf() {
	{
		conf_base "$SPOOL"
		printf 'account "m" {\n  server = "localhost"\n  port = %s\n  tls = "starttls"\n' \
			"${POP3_PORT:-110}"
		printf '  ca_file = "%s"\n' "${CA:-/etc/ssl/certs/ca-certificates.crt}"
		printf '  user = "m"\n  password_file = "%s"\n' "$TESTDIR/pw"
		printf '  %s\n' "$@"
		printf '}\n'
	} >"$TESTDIR/m.conf"
}

# msg NAME - a message file from stdin (LF line ends; printf escapes)
msg() { printf "$(cat)" >"$TESTDIR/$1.eml"; }

route() { pg "$LOG" -c "$TESTDIR/m.conf" route "$TESTDIR/$1.eml"; }

MULTI=('envelope_header = "Delivered-To"' 'local_domains = { "corp.example", "example.com" }'
	'map "sales@example.com" { to = "anna@corp.example" }'
	'map "@example.com" { to = "catchall@corp.example" }')

# ---- multidrop: Delivered-To, local_domains, map, dedup ---------------------
conf "${MULTI[@]}"
msg basic <<'EOF'
Delivered-To: Sales@EXAMPLE.com\nDelivered-To: bob@Corp.Example, "B" <sales@example.com>\nDelivered-To: z@foreign.org\nDelivered-To: info@example.com\nReturn-Path: <ret@host.example>\nFrom: a@b.example\nSubject: t\n\nbody\n
EOF
out=$(route basic)
is "$(grep '^recipient' <<<"$out")" "recipient: <anna@corp.example>
recipient: <bob@corp.example>
recipient: <catchall@corp.example>" \
	"multidrop: exact map first, domain lower-cased, foreign dropped, @domain map, dedup"
like "$out" "sender: <ret@host.example>" "sender from Return-Path"
like "$out" "status: deliver" "routable message is delivered"

# ---- envelope_skip -------------------------------------------------------------
conf "${MULTI[@]}" 'envelope_skip = 1'
msg skip <<'EOF'
Delivered-To: top@corp.example\nDelivered-To: second@corp.example\nFrom: a@b.example\n\nbody\n
EOF
is "$(route skip | grep '^recipient')" "recipient: <second@corp.example>" \
	"envelope_skip = 1 skips the first occurrence"

# ---- nothing matches: held, never guessed ---------------------------------------
conf "${MULTI[@]}"
msg none <<'EOF'
Delivered-To: z@foreign.org\nFrom: a@b.example\nTo: anna@corp.example\n\nbody\n
EOF
out=$(route none)
like "$out" "status: held \\(no recipient found in Delivered-To\\)" \
	"no local recipient: held with the reason"
unlike_to=$(grep -c '^recipient' <<<"$out")
is "$unlike_to" 0 "no local recipient: To is not guessed by default"

# ---- guess_from_headers ---------------------------------------------------------
conf "${MULTI[@]}" 'guess_from_headers = true'
out=$(route none)
is "$(grep '^recipient' <<<"$out")" "recipient: <anna@corp.example>" \
	"guess_from_headers = true: To/Cc addresses in local_domains"

# ---- fallback_to -----------------------------------------------------------------
conf "${MULTI[@]}" 'fallback_to = "postmaster@corp.example"'
out=$(route none)
is "$(grep '^recipient' <<<"$out")" "recipient: <postmaster@corp.example>" \
	"fallback_to when nothing matches"

# ---- Received for --------------------------------------------------------------
conf 'envelope_header = "Received"' 'local_domains = { "corp.example" }'
msg rcvd <<'EOF'
Received: from mx.example.org by mx.corp.example (Postfix)\n\twith ESMTP id 123\n\tfor <Carl@Corp.Example>; Mon, 1 Jan 2024 00:00:00 +0000\nReceived: from a by b for <x@elsewhere.org>; Mon, 1 Jan 2024 00:00:00 +0000\nFrom: a@b.example\n\nbody\n
EOF
is "$(route rcvd | grep '^recipient')" "recipient: <Carl@corp.example>" \
	"Received: the folded for clause, foreign hops ignored"

# ---- Received for: only the receiving host's clause (issue 12) ---------------
# The from-clause is the sender's HELO: "for boss@..." there must not route.
msg helo <<'EOF'
Received: from for boss@corp.example (unknown [192.0.2.7])\n\tby mx.provider.example (Postfix) with ESMTP id 4AbC\n\tfor <anna@corp.example>; Tue, 1 Dec 2026 10:00:00 +0100\nFrom: x@evil.example\n\nbody\n
EOF
is "$(route helo | grep '^recipient')" "recipient: <anna@corp.example>" \
	"Received: a HELO saying 'for boss' does not redirect (anna, the host's for clause)"
msg forbefore <<'EOF'
Received: from x for <boss@corp.example> (unknown [192.0.2.7])\n\tby mx.provider.example with ESMTP id 4AbC; Tue, 1 Dec 2026 10:00:00 +0100\nFrom: x@evil.example\n\nbody\n
EOF
like "$(route forbefore)" "status: held \\(no recipient found in Received\\)" \
	"Received: a for before the by clause is the sender's, never a recipient"
msg forcomment <<'EOF'
Received: from h (for boss@corp.example) by mx (for boss@corp.example)\n\tid 1 (for <boss@corp.example>) for anna@corp.example, <bob@corp.example>\nFrom: x@evil.example\n\nbody\n
EOF
is "$(route forcomment | grep '^recipient')" "recipient: <anna@corp.example>
recipient: <bob@corp.example>" \
	"Received: for in comments ignored; no ';'; a for with two addresses gives both"

# ---- unsafe addresses: held, nothing reaches the wire -----------------------------
conf "${MULTI[@]}"
msg ctl <<'EOF'
Delivered-To: an\001na@corp.example\nFrom: a@b.example\n\nbody\n
EOF
like "$(route ctl)" "status: held \\(unsafe recipient address in Delivered-To" \
	"a control character in a recipient: held"
msg angle <<'EOF'
Delivered-To: <anna@corp.example\nFrom: a@b.example\n\nbody\n
EOF
like "$(route angle)" "status: held \\(unsafe recipient address" "an unbalanced bracket: held"
long=$(printf 'a%.0s' $(seq 1 250))
printf 'Delivered-To: %s@corp.example\nFrom: a@b.example\n\nbody\n' "$long" >"$TESTDIR/long.eml"
like "$(route long)" "status: held \\(unsafe recipient address" "an address over 254 octets: held"
msg badsender <<'EOF'
Delivered-To: anna@corp.example\nReturn-Path: <a b@x.example>\n\nbody\n
EOF
like "$(route badsender)" "status: held \\(unsafe envelope sender in Return-Path" \
	"an unsafe sender: held"

# ---- sender fallbacks ----------------------------------------------------------
msg s_sender <<'EOF'
Delivered-To: anna@corp.example\nSender: "List" <owner@lists.example>\nFrom: "Joe" <joe@x.example>\n\nbody\n
EOF
like "$(route s_sender)" "sender: <owner@lists.example>" "no Return-Path: Sender"
msg s_from <<'EOF'
Delivered-To: anna@corp.example\nFrom: "Doe, Joe" <joe@X.Example>\n\nbody\n
EOF
like "$(route s_from)" "sender: <joe@x.example>" "no Return-Path, no Sender: From"
msg s_null <<'EOF'
Delivered-To: anna@corp.example\nReturn-Path: <>\nFrom: joe@x.example\n\nbody\n
EOF
like "$(route s_null)" "sender: <>" "Return-Path <> stays <>"
conf "${MULTI[@]}" 'envelope_from = "gw@corp.example"'
like "$(route s_from)" "sender: <gw@corp.example>" "envelope_from overrides the message"

# ---- single-drop and CRLF input ---------------------------------------------------
conf 'deliver_to = "office@corp.example"'
printf 'Return-Path: <r@x.example>\r\nDelivered-To: other@corp.example\r\n\r\nbody\r\n' \
	>"$TESTDIR/crlf.eml"
out=$(route crlf)
is "$(grep '^recipient' <<<"$out")" "recipient: <office@corp.example>" "single-drop: deliver_to"
like "$out" "sender: <r@x.example>" "CRLF message file"
pg "$LOG" -c "$TESTDIR/m.conf" route "$TESTDIR/missing.eml" >/dev/null
is "$PG_RC" 66 "route: a missing file is EX_NOINPUT"

# ---- end to end: a poll stores the decision in the index --------------------------
start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
CA=$TESTDIR/pop/ca.pem
dovecot_add_user m secret
md=$(maildir_of m)
i=0
for f in basic none ctl; do
	i=$((i + 1))
	sed 's/\r$//' "$TESTDIR/$f.eml" >"$md/new/100$i.m$i.host"
done
maildir_fix_owner m
conf "${MULTI[@]}"
pg "$LOG" -c "$TESTDIR/m.conf" poll --once
is "$(spool_sql "$SPOOL" "select state, count(*) from messages group by state order by state")" \
	"held|2
queued|1" "poll: one routable message queued, two held" || note "$LOG"
id=$(spool_sql "$SPOOL" "select id from messages where state='queued'")
is "$(spool_sql "$SPOOL" "select group_concat(addr, ' ') from (select addr from recipients where msg_id='$id' order by addr)")" \
	"anna@corp.example bob@corp.example catchall@corp.example" "poll: the recipients are stored per message"
like "$(spool_sql "$SPOOL" "select group_concat(last_reply, '|') from messages where state='held'")" \
	"no recipient found in Delivered-To" "poll: the hold reason is stored"
out=$(pg "$LOG" -c "$TESTDIR/m.conf" route "$id")
like "$out" "recipient: <catchall@corp.example>" "route ID: the dry run on a spooled message"
like "$out" "sender: <ret@host.example>" "route ID: its sender"
start_smtp_sink "$TESTDIR/sink" || bail_out "cannot start smtp-sink"
conf "${MULTI[@]}"
sed -i "s/port = 25\$/port = $SMTP_PORT/" "$TESTDIR/m.conf"
pg "$LOG" -c "$TESTDIR/m.conf" relay --once
f=$(sink_files | head -1)
is "$(sink_envelope "$f")" "MAIL FROM:<ret@host.example>
RCPT TO:<anna@corp.example>
RCPT TO:<bob@corp.example>
RCPT TO:<catchall@corp.example>" "relay: the stored envelope reaches the SMTP host"
is "$(sink_count)" 1 "relay: held messages are not sent"

# ---- end to end (issue 12): the HELO's `for`, a message without a body, and
# over-long envelope header lines, through Dovecot, the poller and the relay
SPOOL2=$TESTDIR/spool2
dovecot_add_user r secret
dovecot_add_user x secret
printf '%b' 'Received: from for boss@corp.example (unknown [192.0.2.7])\r\n\tby mx.provider.example (Postfix) with ESMTP id 4AbC\r\n\tfor <anna@corp.example>; Tue, 1 Dec 2026 10:00:00 +0100\r\nFrom: x@evil.example\r\nSubject: helo\r\n\r\nbody\r\n' \
	>"$(maildir_of r)/new/2001.r1.host"
xmd=$(maildir_of x)
# no body, no empty line, no final line end: the last header still routes
printf 'From: a@b.example\r\nSubject: nobody\r\nX-Original-To: bob@corp.example' \
	>"$xmd/new/3001.x1.host"
# a line of exactly 998 octets without its CRLF: routed; 999 and 5,000: held
# ("X-Original-To: xxxx@corp.example (" is 34 octets, ")" one more)
for n in 998 999 5000; do
	pad=$(head -c $((n - 35)) /dev/zero | tr '\0' c)
	printf 'Subject: l%s\r\nX-Original-To: %s@corp.example (%s)\r\n\r\nbody\r\n' "$n" \
		"$([ "$n" = 998 ] && echo carl || echo dora)" "$pad" >"$xmd/new/3$n.x.host"
done
maildir_fix_owner r
maildir_fix_owner x
{
	conf_base "$SPOOL2"
	printf 'keep_sent_days = 1\n' # so `route ID` can read a sent message
	for a in r x; do
		printf 'account "%s" {\n  server = "localhost"\n  port = %s\n  tls = "starttls"\n' "$a" "$POP3_PORT"
		printf '  ca_file = "%s"\n  user = "%s"\n  password_file = "%s"\n' "$CA" "$a" "$TESTDIR/pw"
		printf '  local_domains = { "corp.example" }\n  fallback_to = "fallback@corp.example"\n'
		if [ "$a" = r ]; then hdr=Received; else hdr=X-Original-To; fi
		printf '  envelope_header = "%s"\n}\n' "$hdr"
	done
} >"$TESTDIR/rx.conf"
sed -i "s/port = 25\$/port = $SMTP_PORT/" "$TESTDIR/rx.conf"
before=$(sink_files)
pg "$LOG" -c "$TESTDIR/rx.conf" run --once
is "$(spool_sql "$SPOOL2" "select state, count(*) from messages group by state order by state")" \
	"held|2
sent|3" "issue 12: three messages relayed, the two over-long envelope lines held" || note "$LOG"
is "$(spool_sql "$SPOOL2" "select count(*) from messages where state='held' and last_reply like 'unusable X-Original-To field (a line over 998 octets%'")" \
	2 "issue 12: lines of 999 and 5,000 octets hold with the reason, never fallback_to"
got=
for f in $(comm -13 <(printf '%s\n' "$before") <(sink_files)); do
	subj=$(grep -m1 '^Subject:' "$f" | tr -d '\r')
	got+="${subj#Subject: } $(sink_envelope "$f" | grep RCPT | tr '\n' ' ')"$'\n'
done
is "$(sort <<<"$got" | sed '/^$/d')" "helo RCPT TO:<anna@corp.example> 
l998 RCPT TO:<carl@corp.example> 
nobody RCPT TO:<bob@corp.example> " \
	"issue 12: the HELO's for ignored (anna), 998 octets routed, last header without body (bob)"
id=$(spool_sql "$SPOOL2" "select id from messages where account='x' and state='sent' and id in (select msg_id from recipients where addr='bob@corp.example')")
out=$(pg "$LOG" -c "$TESTDIR/rx.conf" route "$id")
like "$out" "recipient: <bob@corp.example>" "issue 12: popgate route ID agrees with the fetch (bob)"

done_testing
