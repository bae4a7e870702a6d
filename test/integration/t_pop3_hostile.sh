#!/bin/bash
# t_pop3_hostile.sh - hostile POP3 servers (test/fake/fakepop3.py): garbage
# greeting; connection dropped mid-RETR; stall after the greeting, after
# STLS and mid-message; 100,000 CAPA lines; duplicate and invalid UIDLs; a
# message without its final dot; plaintext injected after the STLS +OK.
# For each: the session ends with a logged reason, no DELE is sent, nothing
# half-received is committed, memory stays bounded (max RSS within 16 MiB
# of a clean run), and a second account in the same run is still served.
# Two more are not failures of the session (issue 12): a 10 MB line is
# streamed into the spool, and a RETR far longer than LIST said is read to
# its end and dropped, leaving the message on the server and the session in
# step (QUIT is sent); memory stays bounded in both.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
[ -x /usr/bin/time ] || skip_all "/usr/bin/time is not installed"

password_file "$TESTDIR/pass" 'hostile-Secr3t'
make_test_ca "$TESTDIR/ca" || bail_out "openssl failed"

# run_case NAME MODE [TLS] - a hostile account "bad" and a good one "good"
run_case() {
	local name=$1 mode=$2 tls=${3:-none} d=$TESTDIR/$1 host=127.0.0.1
	mkdir -p "$d"
	local bad_port=0 bad_rec=/dev/null
	if [ "$mode" != none ]; then
		start_fakepop3 "$d/bad" "$mode" --capa USER --capa UIDL --capa PIPELINING ||
			bail_out "cannot start fakepop3 $mode"
		bad_port=$FAKEPOP3_PORT bad_rec=$FAKEPOP3_REC
	fi
	start_fakepop3 "$d/good" mailbox --messages 2 || bail_out "cannot start fakepop3 mailbox"
	local good_port=$FAKEPOP3_PORT
	[ "$tls" = starttls ] && host=localhost
	{
		conf_base "$d/spool"
		if [ "$mode" != none ]; then
			conf_account bad server "$host" port "$bad_port" tls "$tls" \
				ca_file "$TESTDIR/ca/ca.pem" allow_plaintext true user bad \
				password_file "$TESTDIR/pass" deliver_to bad@corp.example \
				timeout 2 tls_timeout 2 connect_timeout 2
		fi
		conf_account good server 127.0.0.1 port "$good_port" tls none allow_plaintext true \
			user good password_file "$TESTDIR/pass" deliver_to good@corp.example
	} >"$d/popgate.conf"
	/usr/bin/time -f '%M' -o "$d/maxrss" timeout 120 $POPGATE_WRAPPER "$POPGATE" \
		-c "$d/popgate.conf" poll --once >>"$d/popgate.log" 2>&1
	RC=$?
	MAXRSS=$(tail -n1 "$d/maxrss")
	BAD_REC=$bad_rec
	CASE_DIR=$d
}

# a clean run (the good account only) gives the memory baseline
run_case baseline none
is "$RC" 0 "baseline: poll exits 0" || note "$CASE_DIR/popgate.log"
BASE_RSS=$MAXRSS
diag "baseline max RSS ${BASE_RSS} KiB"

check_case() {
	local name=$1 reason_re=$2
	isnt "$RC" 0 "$name: poll reports the failure"
	local line
	line=$(grep -a 'account=bad status=failed' "$CASE_DIR/popgate.log")
	like "$line" "reason=\"[^\"]*$reason_re" "$name: the failure is logged with its reason" ||
		note "$CASE_DIR/popgate.log"
	ok "! grep -qai '^DELE' '$BAD_REC'" "$name: no DELE was sent"
	is "$(spool_sql "$CASE_DIR/spool" "select count(*) from messages where account='bad'")" 0 \
		"$name: nothing of the hostile account was committed"
	is "$(count_files "$CASE_DIR/spool/tmp")" 0 "$name: no half-written file left in tmp/"
	is "$(spool_sql "$CASE_DIR/spool" "select count(*) from messages where account='good'")" 2 \
		"$name: the second account was still served"
	ok "[ '$MAXRSS' -lt $((BASE_RSS + 16384)) ]" \
		"$name: memory stayed bounded (max RSS $MAXRSS KiB, baseline $BASE_RSS KiB)"
}

# check_in_step NAME LOG_RE - the session was not broken: poll exits 0,
# LOG_RE is logged for the bad account, QUIT was sent
check_in_step() {
	local name=$1 re=$2
	is "$RC" 0 "$name: poll exits 0" || note "$CASE_DIR/popgate.log"
	like "$(grep -a 'account=bad ' "$CASE_DIR/popgate.log" | tr '\n' ' ')" "$re" \
		"$name: logged" || note "$CASE_DIR/popgate.log"
	ok "grep -qai '^QUIT' '$BAD_REC'" "$name: the session stayed in step (QUIT sent)"
	is "$(count_files "$CASE_DIR/spool/tmp")" 0 "$name: no half-written file left in tmp/"
	is "$(spool_sql "$CASE_DIR/spool" "select count(*) from messages where account='good'")" 2 \
		"$name: the second account was still served"
	ok "[ '$MAXRSS' -lt $((BASE_RSS + 16384)) ]" \
		"$name: memory stayed bounded (max RSS $MAXRSS KiB, baseline $BASE_RSS KiB)"
}

run_case garbage garbage-greeting;          check_case "garbage greeting" "unexpected reply to greeting"
run_case drop drop-mid-retr;                check_case "dropped mid-RETR" "RETR 1"
run_case stall-greet stall;                 check_case "stall after the greeting" "timed out"
run_case stall-stls stall-stls starttls;    check_case "stall after STLS" "TLS handshake.*timed out"
run_case stall-msg stall-mid-message;       check_case "stall mid-message" "timed out"
run_case longline long-line;                check_in_step "10 MB line" "status=fetched size=1048"
is "$(spool_sql "$CASE_DIR/spool" "select count(*) from messages where account='bad'")" 1 \
	"10 MB line: the message was streamed into the spool"
ok "grep -qai '^DELE 1' '$BAD_REC'" "10 MB line: and deleted from the server"
run_case capaflood capa-flood;              check_case "100,000 CAPA lines" "more than 1000 lines"
run_case dupuidl dup-uidl;                  check_case "duplicate UIDLs" "duplicate UIDL"
run_case baduidl bad-uidl;                  check_case "invalid UIDLs" "bad UIDL"
run_case longer retr-longer;                check_in_step "RETR longer than LIST" \
	"status=problem-message reason=\"[^\"]*over the limit of [0-9]* [^\"]*LIST gave 100 octets"
ok "! grep -qai '^DELE' '$BAD_REC'" "RETR longer than LIST: no DELE was sent"
is "$(spool_sql "$CASE_DIR/spool" "select count(*) from messages where account='bad'")" 0 \
	"RETR longer than LIST: nothing of it was committed"
run_case nodot no-final-dot;                check_case "no final dot" "RETR 1"
run_case inject stls-inject starttls;       check_case "STLS injection" "injection"

done_testing
