#!/bin/bash
# t_valgrind.sh - a whole poll and relay (STLS, 30 messages of every shape,
# one of 1 MiB) run under valgrind: no invalid access, no uninitialised
# use, no definite leak; and the mail still arrives byte for byte.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v valgrind >/dev/null 2>&1 || skip_all "valgrind is not installed"
# an ASan build cannot run under valgrind
if nm "$POPGATE" 2>/dev/null | grep -q __asan_init; then
	skip_all "popgate is built with AddressSanitizer"
fi

SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
RCPT=vg@corp.example
VG="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
VG="$VG --log-file=$TESTDIR/valgrind.%p.log"

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user vg 'vg-pass'
password_file "$TESTDIR/pass" 'vg-pass'
mail_gen --maildir "$(maildir_of vg)" --expected "$TESTDIR/exp" --count 30 --big-mib 1 \
	--prefix vg || bail_out "mkmail failed"
{
	conf_base "$SPOOL"
	conf_account vg server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user vg password_file "$TESTDIR/pass" deliver_to "$RCPT"
} >"$CONF"

POPGATE_WRAPPER=$VG
for cmd in "poll --once" "relay --once" "queue --all" "check-config"; do
	# shellcheck disable=SC2086
	pg "$LOG" -c "$CONF" $cmd >/dev/null
	is "$PG_RC" 0 "valgrind: popgate $cmd exits 0 (99 would be a valgrind error)"
done
errors=$(cat "$TESTDIR"/valgrind.*.log 2>/dev/null)
is "$errors" "" "valgrind reported nothing"
is "$(maildir_count vg)" 0 "the mailbox was drained"
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)

# a failing poll (wrong password) and a refused relay take the error paths
password_file "$TESTDIR/pass" 'wrong'
pg "$LOG" -c "$CONF" poll --once
is "$PG_RC" 77 "valgrind: a refused login exits 77"
is "$(cat "$TESTDIR"/valgrind.*.log 2>/dev/null)" "" "valgrind clean on the error path"
done_testing
