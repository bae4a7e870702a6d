#!/bin/bash
# bench_accounts.sh - the scheduler at scale: N (default 1000) accounts on
# one private Dovecot, each with one message; `popgate run -f` with the
# default max_parallel_polls until every account was polled once (watched
# in the spool's accounts table).  Reports the cycle time and the daemon
# parent's peak RSS (VmHWM; children are short-lived, one per poll).
# Not a test: run with `make bench-accounts` or directly (as root).
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
N=${BENCH_ACCOUNTS:-1000}
PAR=${BENCH_PARALLEL:-4}
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
start_dovecot "$TESTDIR/pop" >/dev/null || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
password_file "$TESTDIR/pass" "bench-pw"
{
	conf_base "$SPOOL" | sed 's/log_level = "debug"/log_level = "warning"/'
	echo "max_parallel_polls = $PAR"
	for i in $(seq 1 "$N"); do
		conf_account "u$i" server localhost port "$POP3_PORT" tls starttls \
			ca_file "$TESTDIR/pop/ca.pem" user "u$i" password_file "$TESTDIR/pass" \
			deliver_to "u$i@corp.example" interval 3600
	done
} >"$CONF"
for i in $(seq 1 "$N"); do
	dovecot_add_user "u$i" "bench-pw"
	mail_gen --maildir "$(maildir_of "u$i")" --expected "$TESTDIR/exp-$i" --count 1 \
		--prefix "b$i" --shapes simple >/dev/null
done
echo "# $N accounts ready; max_parallel_polls=$PAR"
start=$(date +%s.%N)
"$POPGATE" -c "$CONF" run -f 2>"$TESTDIR/popgate.log" &
PID=$!
_track_pid "daemon:$PID"
while :; do
	n=$(spool_sql "$SPOOL" "select count(*) from accounts where last_poll > 0" 2>/dev/null)
	[ "${n:-0}" -ge "$N" ] && break
	kill -0 "$PID" 2>/dev/null || bail_out "the daemon died"
	sleep 0.2
done
end=$(date +%s.%N)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
while [ "$(sink_count)" -lt "$N" ]; do sleep 0.2; done
kill -TERM "$PID"
wait "$PID"
ok=$(spool_sql "$SPOOL" "select count(*) from accounts where last_result = 'ok'")
printf 'accounts=%d polled_ok=%d cycle_s=%.2f polls_per_s=%.1f parent_peak_rss_kib=%d relayed=%d\n' \
	"$N" "$ok" "$(awk "BEGIN {print $end - $start}")" "$(awk "BEGIN {print $N / ($end - $start)}")" \
	"$hwm" "$(sink_count)"
pass "benchmark ran"
done_testing
