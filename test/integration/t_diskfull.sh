#!/bin/bash
# t_diskfull.sh - disk faults under the spool.
# 1. The spool on a small tmpfs that fills up mid-poll: the poll fails with
#    a clear error (no space, naming the spool file); no message that was not
#    committed is deleted from the server; after space is freed the next poll
#    finishes the job; every message reaches the sink exactly once.
# 2. An fsync that fails with EIO on one message file (LD_PRELOAD shim
#    test/fake/failfsync.c): that message is neither committed nor deleted
#    from the server; the next poll takes it; nothing is lost.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v gcc >/dev/null 2>&1 || skip_all "gcc is needed to build the fsync shim"

SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
RCPT=df@corp.example

start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user df 'df-pw'
password_file "$TESTDIR/pass" 'df-pw'
{
	conf_base "$SPOOL"
	conf_account df server 127.0.0.1 port "$POP3_PORT" tls none allow_plaintext true \
		user df password_file "$TESTDIR/pass" deliver_to "$RCPT"
} >"$CONF"

# gen PREFIX N - N messages of about 100 KiB (larger than the inline limit:
# each is an fsync'd file) with X-Test-Id PREFIX-<i>
gen() {
	"$PYTHON" - "$(maildir_of df)/new" "$1" "$2" <<'EOF'
import os, sys
d, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
line = b"x" * 76 + b"\n"
for i in range(n):
    body = b"".join(b"%s %05d %s" % (prefix.encode(), k, line) for k in range(1300))
    msg = (b"From: a@example.org\nTo: df@corp.example\nSubject: %s %d\n"
           b"X-Test-Id: %s-%d\n\n" % (prefix.encode(), i, prefix.encode(), i)) + body
    with open(os.path.join(d, "%d.%s%03d.host" % (1700000000 + i, prefix, i)), "wb") as f:
        f.write(msg)
EOF
	maildir_fix_owner df
}
# ids_in_maildir / ids_in_spool / ids_at_sink - sorted X-Test-Ids
ids_in_maildir() { cat "$(maildir_of df)"/new/* "$(maildir_of df)"/cur/* 2>/dev/null | sed -n 's/^X-Test-Id: //p' | tr -d '\r' | sort; }
ids_in_spool() {
	local id
	for id in $(spool_sql "$SPOOL" "select id from messages"); do
		spool_msg "$SPOOL" "$id" 2>/dev/null | sed -n 's/^X-Test-Id: //p' | tr -d '\r'
	done | sort
}
ids_at_sink() { cat "$SINK_DIR"/dump.* 2>/dev/null | sed -n 's/^X-Test-Id: //p' | sort; }
all_ids() { for ((i = 0; i < $2; i++)); do echo "$1-$i"; done | sort; }

# ---- 1. the spool's filesystem fills up mid-poll -------------------------------
mkdir -p "$SPOOL"
mount -t tmpfs -o size=1200k,mode=0700 popgate-test "$SPOOL" || skip_all "cannot mount a tmpfs"
# common.sh's EXIT trap must still run, with the test's exit status
trap 'rc=$?; umount -l "$SPOOL" 2>/dev/null; (exit $rc); _common_cleanup' EXIT
gen full 20
pg "$LOG" -c "$CONF" poll --once
isnt "$PG_RC" 0 "the poll fails when the spool's filesystem is full"
like "$(cat "$LOG")" "$SPOOL/[a-z]+/[0-9A-F]+: [a-z]+: No space left on device" \
	"the log says no space left and names the spool file"
committed=$(ids_in_spool)
left=$(ids_in_maildir)
n_committed=$(echo "$committed" | grep -c . || true)
diag "committed before the disk filled: $n_committed of 20"
ok "[ $n_committed -lt 20 ]" "the disk filled before the mailbox was done"
is "$(sort <(echo "$committed") <(echo "$left") | grep . | sort -u)" "$(all_ids full 20)" \
	"no message lost: each is committed or still on the server"
is "$(comm -23 <(all_ids full 20) <( (echo "$committed"; echo "$left") | grep . | sort -u) |
	grep -c . || true)" 0 \
	"no uncommitted message was deleted from the server"
mount -o remount,size=20m "$SPOOL"
# the account is named: a manual poll, not held back by the failure backoff
pg "$LOG" -c "$CONF" poll --once df
is "$PG_RC" 0 "after space is freed the next poll succeeds" || note "$LOG"
is "$(maildir_count df)" 0 "... and finishes the job (the mailbox is empty)"
pg "$LOG" -c "$CONF" relay --once
is "$(ids_at_sink)" "$(all_ids full 20)" "all 20 messages at the sink, each once"

# ---- 2. fsync fails with EIO on the third message file ------------------------------
gcc -shared -fPIC -o "$TESTDIR/failfsync.so" "$top_srcdir/test/fake/failfsync.c" -ldl ||
	bail_out "cannot build the fsync shim"
gen eio 5
FAILFSYNC_MATCH="$SPOOL/tmp/" FAILFSYNC_N=3 LD_PRELOAD="$TESTDIR/failfsync.so" \
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
	pg "$LOG" -c "$CONF" poll --once
isnt "$PG_RC" 0 "the poll fails when a message file's fsync fails"
like "$(cat "$LOG")" "failfsync: failing fsync #3" "the shim failed the third message's fsync"
like "$(cat "$LOG")" "$SPOOL/tmp/[0-9A-F]+: fsync: Input/output error" \
	"the log names the file and the I/O error"
committed=$(ids_in_spool | grep '^eio' || true)
left=$(ids_in_maildir)
is "$(echo "$committed" | grep -c . || true)" 2 "the two messages before it are committed"
like "$left" "eio-2" "the failed message is still on the server"
ok "! echo '$committed' | grep -qx 'eio-2'" "the failed message is not in the spool"
is "$(sort <(echo "$committed") <(echo "$left") | grep . | sort -u)" "$(all_ids eio 5)" \
	"no message lost"
pg "$LOG" -c "$CONF" poll --once df
pg "$LOG" -c "$CONF" relay --once
is "$(maildir_count df)" 0 "the next poll takes the rest"
is "$(ids_at_sink | grep '^eio')" "$(all_ids eio 5)" "all 5 at the sink, each once"

done_testing
