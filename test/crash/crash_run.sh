#!/bin/bash
# crash_run.sh - kill -9 the whole process group of `popgate run --once`
# (the scheduler, its poll child, its relay child and that relay's
# max_sessions session processes, all at once) at random points while
# mailboxes drain through a private Dovecot into smtp-sink, restart it at
# once after every kill, and prove with test/crash/analyze.py: 0 lost, 0
# duplicates from the POP3 side, and every message the host accepted twice
# named in an `id=<id> status=requeued-after-crash` line (the duplicates
# per kill are printed).
#
# The first fsync of the index by the scheduler process is slowed down
# (test/fake/failfsync.c, FAILFSYNC_SLOW_MS, default 300 ms) as on a loaded
# disk, and every other kill lands early, in the start-up: so kills often
# land while the commit of recovery at open (which requeues the messages the
# last kill left `sending`) is written but its fsync has not returned.  analyze.py --db then checks that every requeue the
# index recorded (history) was logged by id, whether or not the message
# actually went out twice.
#
# Environment: CRASH_MESSAGES (default 3000) messages per batch;
# CRASH_KILLS (default 12) kills that must land; CRASH_SEED (default: the
# pid); CRASH_MAX_MS (default 800) the longest wait before a kill, spread
# evenly so that kills land in the relay phase too; CRASH_SESSIONS (default
# 4) relay sessions.  Run by test/integration/t_crash_run.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

: "${CRASH_MESSAGES:=3000}" "${CRASH_KILLS:=12}" "${CRASH_SEED:=$$}" "${CRASH_MAX_MS:=800}"
: "${CRASH_SESSIONS:=4}" "${FAILFSYNC_SLOW_MS:=300}"
RANDOM=$CRASH_SEED
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
RCPT=crash@corp.example

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user crash 'crash-pw'
password_file "$TESTDIR/pass" 'crash-pw'
{
	conf_base "$SPOOL" | sed "s/^  port = .*/&\n  max_sessions = $CRASH_SESSIONS/"
	conf_account crash server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user crash password_file "$TESTDIR/pass" deliver_to "$RCPT"
} >"$CONF"
sed -i 's/^log_level = "debug"/log_level = "info"/' "$CONF"

gcc -shared -fPIC -o "$TESTDIR/failfsync.so" "$top_srcdir/test/fake/failfsync.c" -ldl ||
	bail_out "cannot build the fsync shim"

batches=()
add_batch() {
	local n=${#batches[@]}
	mail_gen --maildir "$(maildir_of crash)" --expected "$TESTDIR/exp$n" \
		--count "$CRASH_MESSAGES" --prefix "r$n" --shapes simple >/dev/null ||
		bail_out "mkmail failed"
	batches+=("$TESTDIR/exp$n")
}
unsent() { spool_sql "$SPOOL" "select count(*) from messages where state <> 'sent'" 2>/dev/null || echo 0; }

diag "seed $CRASH_SEED, $CRASH_MESSAGES messages per batch, $CRASH_KILLS kills, $CRASH_SESSIONS sessions"
add_batch
kills=0 cycles=0
exec 3>&2 2>>"$TESTDIR/jobs.log" # bash's "Killed" job notices
while [ "$kills" -lt "$CRASH_KILLS" ] && [ "$cycles" -lt $((CRASH_KILLS * 10)) ]; do
	cycles=$((cycles + 1))
	if [ "$(maildir_count crash)" = 0 ] && [ "$(unsent)" = 0 ]; then
		add_batch
	fi
	printf '### run: popgate run --once\n' >>"$LOG"
	# its own process group (setsid), so that one kill reaches every
	# process of the run at the same instant
	FAILFSYNC_SLOW_MATCH="$SPOOL/index.db" FAILFSYNC_SLOW_MS=$FAILFSYNC_SLOW_MS FAILFSYNC_SLOW_FIRST=1 \
		LD_PRELOAD="$TESTDIR/failfsync.so" \
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
		setsid "$POPGATE" -c "$CONF" run --once >/dev/null 2>>"$LOG" &
	pid=$!
	# odd kills in the start-up (recovery at open), even ones spread over
	# [0, CRASH_MAX_MS): the poll, the relay while the poll goes on, the
	# relay alone
	if [ $((cycles % 2)) = 1 ]; then
		ms=$((RANDOM % 400))
	else
		ms=$((kills * CRASH_MAX_MS / CRASH_KILLS + RANDOM % 100))
	fi
	sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
	kill -KILL -- "-$pid" 2>/dev/null
	rc=0
	wait "$pid" || rc=$?
	if [ "$rc" = 137 ]; then
		kills=$((kills + 1))
		echo "### killed run after ${ms} ms" >>"$LOG"
	fi
	# no wait for the killed group's last processes: the next start may
	# meet them (the issue's restarts did)
done
exec 2>&3 3>&-
diag "$cycles cycles, $kills kills, ${#batches[@]} batches"
ok "[ $kills -ge $CRASH_KILLS ]" "at least $CRASH_KILLS kills landed ($kills)"

# ---- finish the job without kills ----------------------------------------------
for ((i = 0; i < 20; i++)); do
	[ "$(maildir_count crash)" = 0 ] && [ "$(unsent)" = 0 ] && break
	pg "$LOG" -c "$CONF" run --once
done
is "$(maildir_count crash)" 0 "the mailbox is empty at the end"
is "$(unsent)" 0 "every spooled message is sent"
is "$(count_files "$SPOOL/tmp")" 0 "no temp file is left"
run_checks "$PYTHON" "$top_srcdir/test/crash/analyze.py" --sink "$SINK_DIR" --log "$LOG" \
	--kills "$kills (run --once, process group)" --per-kill "$kills" --db "$SPOOL/index.db" \
	"${batches[@]}"
journals=$(find "$SPOOL" -maxdepth 1 -name 'relay.*.journal' | wc -l)
is "$journals" 0 "no relay journal is left once the relay finished"

done_testing
