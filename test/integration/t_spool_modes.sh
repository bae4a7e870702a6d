#!/bin/bash
# t_spool_modes.sh - the spool holds mail: every file in it is 0600 and every
# directory 0700, whatever the umask (issue 12 point 4, issue 13 point 1).
# Under umask 022 and umask 000: poll --once, relay --once, then a daemon
# (`run -f`) while it holds the spool open (index.db-wal and -shm, the lock
# file); a large message kept after sending (keep_sent_days) leaves a file
# in msg/.  A spool made by an older popgate with 0644/0755 is tightened.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user modes 'modes-pw'
password_file "$TESTDIR/pass" 'modes-pw'
LOG=$TESTDIR/popgate.log

# check_modes SPOOL WHAT - every file 0600, every directory 0700
check_modes() {
	local spool=$1 what=$2 bad
	bad=$(find "$spool" \( \( -type f ! -perm 0600 \) -o \( -type d ! -perm 0700 \) \) \
		-printf '%m %p\n' 2>/dev/null)
	is "$bad" "" "$what: every file 0600, every directory 0700"
}

for um in 022 000; do
	SPOOL=$TESTDIR/spool$um
	CONF=$TESTDIR/popgate$um.conf
	{
		conf_base "$SPOOL"
		echo 'keep_sent_days = 1'
		conf_account modes server 127.0.0.1 port "$POP3_PORT" tls none \
			allow_plaintext true user modes password_file "$TESTDIR/pass" \
			deliver_to modes@corp.example
	} >"$CONF"
	mail_gen --maildir "$(maildir_of modes)" --expected "$TESTDIR/exp$um" --count 4 \
		--big-mib 1 --prefix "m$um" >/dev/null || bail_out "mkmail failed"
	(umask "$um" && pg "$LOG" -c "$CONF" poll --once)
	is "$(spool_sql "$SPOOL" "select count(*) from messages")" 4 "umask $um: 4 messages spooled"
	check_modes "$SPOOL" "umask $um, after poll --once"
	(umask "$um" && pg "$LOG" -c "$CONF" relay --once)
	is "$(spool_sql "$SPOOL" "select count(*) from messages where state = 'sent'")" 4 \
		"umask $um: 4 messages sent"
	is "$(count_files "$SPOOL/msg")" 1 "umask $um: the large message is kept in msg/"
	check_modes "$SPOOL" "umask $um, after relay --once"
	# the daemon holds the index open: its -wal and -shm exist, and the lock
	(umask "$um" && exec timeout 120 "$POPGATE" -c "$CONF" run -f 2>>"$LOG") &
	dpid=$!
	wait_for "[ -e '$SPOOL/index.db-shm' ] && [ -e '$SPOOL/popgate.lock' ] && echo y" y
	ok "[ -e '$SPOOL/index.db-wal' ] && [ -e '$SPOOL/index.db-shm' ]" \
		"umask $um: the daemon has the index open (-wal, -shm)"
	check_modes "$SPOOL" "umask $um, while the daemon runs"
	sig_under_timeout TERM "$dpid"
	wait "$dpid"
done

# a spool an older popgate (or a hand) made group- and world-readable
SPOOL=$TESTDIR/spool022
chmod 0755 "$SPOOL" "$SPOOL/msg" "$SPOOL/tmp"
chmod 0644 "$SPOOL/index.db"
pg "$LOG" -c "$TESTDIR/popgate022.conf" queue >/dev/null
check_modes "$SPOOL" "an old 0644/0755 spool after one open"

done_testing
