#!/bin/bash
# t_login_delay.sh - issue 12, point 6: a LOGIN-DELAY of up to 10^9 s (the
# most CAPA parsing takes) is obeyed only up to a day, and the cap is
# logged; an ordinary LOGIN-DELAY is obeyed as announced.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

password_file "$TESTDIR/pass" 'delay-Secr3t'
for delay in 1000000000 900; do
	start_fakepop3 "$TESTDIR/d$delay" mailbox --messages 1 --capa USER --capa UIDL \
		--capa "LOGIN-DELAY $delay" || bail_out "cannot start fakepop3"
	{
		conf_base "$TESTDIR/spool$delay"
		conf_account "d$delay" server 127.0.0.1 port "$FAKEPOP3_PORT" tls none \
			allow_plaintext true user u password_file "$TESTDIR/pass" \
			deliver_to d@corp.example
	} >"$TESTDIR/d$delay.conf"
	pg "$TESTDIR/log" -c "$TESTDIR/d$delay.conf" poll --once
	is "$PG_RC" 0 "LOGIN-DELAY $delay: poll exits 0" || note "$TESTDIR/log"
done
wait_s() {
	spool_sql "$TESTDIR/spool$1" "select not_before - last_poll, login_delay from accounts"
}
# last_poll and not_before come from two clock reads a moment apart
like "$(wait_s 1000000000)" "^8640[01][|]86400$" \
	"LOGIN-DELAY 10^9: the next poll waits one day, and one day is stored"
like "$(grep -a 'account=d1000000000 status=login-delay-capped' "$TESTDIR/log")" \
	"announced=1000000000 used=86400" "LOGIN-DELAY 10^9: the cap is logged"
like "$(wait_s 900)" "^90[01][|]900$" "LOGIN-DELAY 900: obeyed as announced"
ok "! grep -qa 'account=d900 status=login-delay-capped' '$TESTDIR/log'" \
	"LOGIN-DELAY 900: not capped"
done_testing
