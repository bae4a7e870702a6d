#!/bin/bash
# bench_accounts.sh - the scheduler at scale: N (default 1000) accounts on
# one private Dovecot, each with one message; `popgate run -f` with the
# default max_parallel_polls until every account was polled once (watched
# in the spool's accounts table).  Reports the cycle time and the daemon
# parent's peak RSS (VmHWM; its children are poll workers and relay rounds) and
# its RSS at the end of the cycle (VmRSS), and
# the CPU seconds (user + system) of the daemon and all its children: at the
# end of the cycle (every account polled) and once everything is relayed,
# from /proc/PID/stat (utime + stime + cutime + cstime: a child's time is
# counted when it is reaped) plus the children still running (the poll
# workers), with the CPU milliseconds per account poll.
# BENCH_ACCOUNTS (default 1000) accounts, BENCH_PARALLEL max_parallel_polls,
# BENCH_AUTH the accounts' auth (default auto: Dovecot offers SCRAM-SHA-256,
# whose PBKDF2 of 4,096 rounds costs the client about 2-3 ms per login;
# plain shows the poll without it).
# Not a test: run with `make bench-accounts` or directly (as root).
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
N=${BENCH_ACCOUNTS:-1000}
PAR=${BENCH_PARALLEL:-4}
AUTH=${BENCH_AUTH:-auto}
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
			deliver_to "u$i@corp.example" interval 3600 auth "$AUTH"
	done
} >"$CONF"
# the users and one small message each, in one go (10,000 accounts too)
"$PYTHON" - "$DOVECOT_DIR" "$N" "$MAIL_UID" "$MAIL_GID" <<'PYEOF'
import os, sys
d, n, uid, gid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for i in range(1, n + 1):
    u = "u%d" % i
    home = os.path.join(d, "home", u)
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(home, "Maildir", sub), exist_ok=True)
    with open(os.path.join(home, "Maildir", "new", "1700000000.b%d.host" % i), "w") as f:
        f.write("From: s%d@remote.example\nTo: %s@corp.example\nSubject: bench %d\n"
                "Message-Id: <b%d@remote.example>\n\n%s\n" % (i, u, i, i, "x" * 60))
    p = os.path.join(d, "users.d", u)
    with open(p + ".tmp", "w") as f:
        f.write("%s:{PLAIN}bench-pw:%s:%s::%s::\n" % (u, uid, gid, home))
    os.chmod(p + ".tmp", 0o644)
    os.rename(p + ".tmp", p)
PYEOF
chown -R "$MAIL_UID:$MAIL_GID" "$DOVECOT_DIR/home"
echo "# $N accounts ready; max_parallel_polls=$PAR auth=$AUTH"
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
# CPU seconds of the daemon, its reaped children and those still running
# (its poll workers live on; their time counts only when they are reaped)
cpu_of() {
	local kids
	kids=$(pgrep -P "$1" | sed 's|.*|/proc/&/stat|')
	# (a child that ends meanwhile is skipped: cat goes on to the next)
	# shellcheck disable=SC2086
	cat "/proc/$1/stat" $kids 2>/dev/null |
		awk -v hz="$(getconf CLK_TCK)" '{ t += $14 + $15 + $16 + $17 } END { printf "%.2f", t / hz }'
}
cpu_cycle=$(cpu_of "$PID")
faults=$(awk '{ print $10 + $12 }' "/proc/$PID/stat") # minor page faults, children included
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
while [ "$(sink_count)" -lt "$N" ]; do sleep 0.2; done
sleep 1 # the last relay child is reaped
cpu_all=$(cpu_of "$PID")
kill -TERM "$PID"
wait "$PID"
ok=$(spool_sql "$SPOOL" "select count(*) from accounts where last_result = 'ok'")
printf 'accounts=%d polled_ok=%d cycle_s=%.2f polls_per_s=%.1f parent_peak_rss_kib=%d parent_rss_kib=%d relayed=%d cpu_cycle_s=%s cpu_ms_per_poll=%.2f cpu_total_s=%s minor_faults_per_poll=%d\n' \
	"$N" "$ok" "$(awk "BEGIN {print $end - $start}")" "$(awk "BEGIN {print $N / ($end - $start)}")" \
	"$hwm" "$rss" "$(sink_count)" "$cpu_cycle" "$(awk "BEGIN {print $cpu_cycle * 1000 / $N}")" "$cpu_all" "$((faults / N))"
pass "benchmark ran"
done_testing
