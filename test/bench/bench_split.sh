#!/bin/bash
# bench_split.sh - the poll and the relay measured apart (issue 16): a private
# Dovecot and smtp-sink (dumps on a tmpfs), N messages of SIZE octets
# generated anew each round, then `popgate poll --once` into a fresh spool
# and `popgate relay --once` of it, each under /usr/bin/time.  Prints one
# line per phase and round: "BUILD PHASE wall=S user=S sys=S rss=KiB".
#   N (10000), SIZE (2048), ROUNDS (3)
#   BENCH_BASE=/path/to/an/older/popgate: each round runs that build too,
#   alternating which goes first, so both see the same machine.
#   RELAY=0: the poll only.
# Not a test: run directly (as root), e.g.
#   N=100 SIZE=1048576 BENCH_BASE=/tmp/old/popgate bash test/bench/bench_split.sh
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
: "${N:=10000}" "${SIZE:=2048}" "${ROUNDS:=3}" "${RELAY:=1}"
B=$TESTDIR/bench
mkdir -p "$B"
start_dovecot "$TESTDIR/pop" >/dev/null || bail_out "cannot start Dovecot"
SINK_BASE=$(mktemp -d /dev/shm/popgate-split.XXXXXX) || bail_out "mktemp in /dev/shm"
_split_cleanup() {
	local rc=$?
	stop_servers
	rm -rf "$SINK_BASE"
	(exit "$rc")
	_common_cleanup
}
trap _split_cleanup EXIT
start_smtp_sink "$SINK_BASE" >/dev/null || bail_out "cannot start smtp-sink"
dovecot_add_user bench 'bench-pw'
password_file "$B/pass" 'bench-pw'
MAILDIR=$(maildir_of bench)

GEN=0
gen() {
	GEN=$((GEN + 1))
	find "$MAILDIR/new" "$MAILDIR/cur" -type f -delete
	"$PYTHON" "$top_srcdir/test/bench/genmail.py" "$MAILDIR/new" "$N" "$SIZE" "$GEN"
	maildir_fix_owner bench
}

{
	conf_base "$B/spool"
	conf_account bench server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user bench password_file "$B/pass" deliver_to bench@corp.example
} | sed 's/^log_level = .*/log_level = "warning"/' >"$B/popgate.conf"

# one BUILD BINARY: poll then relay of a new mailbox into a new spool
one() {
	gen
	rm -rf "$B/spool" "${SINK_DIR:?}"/*
	sync
	/usr/bin/time -o "$B/time" -f "$1 poll wall=%e user=%U sys=%S rss=%M" "$2" \
		-c "$B/popgate.conf" poll --once 2>>"$B/popgate.log"
	tail -n 1 "$B/time"
	[ "$RELAY" = 1 ] || return 0
	sync
	/usr/bin/time -o "$B/time" -f "$1 relay wall=%e user=%U sys=%S rss=%M" "$2" \
		-c "$B/popgate.conf" relay --once 2>>"$B/popgate.log"
	tail -n 1 "$B/time"
	[ "$(sink_count)" = "$N" ] || echo "# $1: the sink has $(sink_count) of $N"
}

echo "# $N x $SIZE octets, $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
	if [ -n "${BENCH_BASE:-}" ] && [ $((r % 2)) = 0 ]; then
		one base "$BENCH_BASE"
		one new "$POPGATE"
	else
		one new "$POPGATE"
		[ -z "${BENCH_BASE:-}" ] || one base "$BENCH_BASE"
	fi
done
pass "benchmark ran"
done_testing
