#!/bin/bash
# relay_ab.sh - the relay's CPU alone, builds compared in the same minutes
# (a benchmark, not a test; run as root):
#   one `poll --once` of N x SIZE octets from a private Dovecot (not timed,
#   the first build of BINS), a copy of that spool kept; then ROUNDS rounds,
#   each restoring the copy for every build of BINS in turn and timing its
#   `relay --once` to Postfix's smtp-sink (/usr/bin/time: wall, user, sys,
#   peak RSS; the relay's sessions are reaped by it, so counted).  Then,
#   when ESMTP_FLOOR=1, test/bench/minesmtp (libesmtp alone, one session,
#   the same count and size from memory) to the same sink, ROUNDS times.
#
#   top_srcdir=. BINS="base=/path/popgate new=./popgate" [N=10000] [SIZE=2048]
#     [ROUNDS=3] [SESSIONS=4] [ESMTP_FLOOR=1] bash test/bench/relay_ab.sh
#
# SESSIONS sets smtp.max_sessions; PERF=NAME records `perf record -g` of
# that build's relay into $PERF_DIR/NAME.data (default /tmp).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
B=$TESTDIR/bench
mkdir -p "$B"
N=${N:-10000}
SIZE=${SIZE:-2048}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-4}
[ -n "$BINS" ] || bail_out "BINS=\"name=/path/to/popgate ...\" is required"
start_dovecot "$TESTDIR/pop" >/dev/null || bail_out "cannot start dovecot"
SINK_BASE=$(mktemp -d /dev/shm/popgate-relayab.XXXXXX)
start_smtp_sink "$SINK_BASE" >/dev/null || bail_out "cannot start smtp-sink"
# common.sh's EXIT trap stops the servers and removes TESTDIR: chained, not
# replaced
trap 'rc=$?; rm -rf "$SINK_BASE"; (exit $rc); _common_cleanup' EXIT
dovecot_add_user bench 'bench-pw'
password_file "$B/pass" 'bench-pw'
MAILDIR=$(maildir_of bench)
"$PYTHON" "$top_srcdir/test/bench/genmail.py" "$MAILDIR/new" "$N" "$SIZE"
maildir_fix_owner bench
{ conf_base "$B/spool"; conf_account bench server 127.0.0.1 port "$POP3_PORT" tls none \
	allow_plaintext true user bench password_file "$B/pass" deliver_to bench@corp.example; } |
	sed -e "s/^log_level = .*/log_level = \"warning\"/" \
	    -e "s/^smtp {/smtp {\n  max_sessions = $SESSIONS/" >"$B/popgate.conf"
first=${BINS%% *}
/usr/bin/time -f "poll wall=%e user=%U sys=%S rss=%M" "${first#*=}" -c "$B/popgate.conf" \
	poll --once || bail_out "poll failed"
cp -a "$B/spool" "$B/spool.saved"
for r in $(seq "$ROUNDS"); do
	for nb in $BINS; do
		name=${nb%%=*}
		bin=${nb#*=}
		rm -rf "$B/spool" "${SINK_DIR:?}"/*
		cp -a "$B/spool.saved" "$B/spool"
		sync
		P=()
		[ "$PERF" = "$name" ] && P=(perf record -g -o "${PERF_DIR:-/tmp}/$name.data" --)
		/usr/bin/time -f "relay $name sessions=$SESSIONS wall=%e user=%U sys=%S rss=%M" \
			"${P[@]}" "$bin" -c "$B/popgate.conf" relay --once
		echo "sink $name: $(sink_count) of $N"
	done
done
if [ "$ESMTP_FLOOR" = 1 ]; then
	gcc -O2 -o "$B/minesmtp" "$top_srcdir/test/bench/minesmtp.c" -lesmtp ||
		bail_out "cannot build minesmtp"
	for r in $(seq "$ROUNDS"); do
		rm -rf "${SINK_DIR:?}"/*
		/usr/bin/time -f "minesmtp wall=%e user=%U sys=%S rss=%M" "$B/minesmtp" 127.0.0.1 \
			"$SMTP_PORT" "$N" "$SIZE"
	done
fi
