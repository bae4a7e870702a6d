#!/bin/bash
# bench.sh - popgate against fetchmail (`make bench`; not part of make check).
#
# A private Dovecot and Postfix's smtp-sink on loopback.  For each scenario
# the same mailbox is generated anew before every run, and each tool drains
# it into the same sink, alternating, BENCH_RUNS times (default 3):
#   popgate           `run --once`: polls the account once and relays while
#                     it polls (what fetchmail does), then exits; spool on
#                     disk and durable (fsync'd files, SQLite
#                     synchronous=FULL) before any DELE
#   popgate-poll+relay `poll --once`, then `relay --once` (one after the other)
#   fetchmail         as shipped (forwarding to smtphost, fetchall, no keep)
#   fetchmail+nodelay the same with TCP_NODELAY forced (test/bench/nodelay.c)
# Timed from start (after `sync`: the mailbox generation and the previous
# run's removals are on disk) until the tool exits (every message accepted
# by the sink), verified by counting the sink's transactions and the emptied
# mailbox.  Prints per tool the median wall time, messages/s, MB/s, the
# peak RSS (/usr/bin/time -f %M) and how many times faster popgate is than
# the faster fetchmail, as a Markdown table (docs/performance.md).
#
# fetchmail as shipped needs ~45 ms per message here (Nagle's algorithm),
# so on scenarios where that would exceed
# BENCH_SLOW_SECS (default 30 s) a run they are measured once, not
# BENCH_RUNS times.  BENCH_SCENARIOS picks scenarios by name;
# BENCH_LOG_LEVEL (default warning) popgate's log level (B/popgate.log).
# Before the timed runs of each scenario one untimed drain (popgate) warms
# the disk and the servers (BENCH_WARMUP=0: none), and each round starts
# with the next tool in BENCH_TOOLS, so that no tool always runs first.
#
# smtp-sink stands for the mail host and writes one dump file per
# transaction (how the harness counts deliveries), by default on a tmpfs
# (/dev/shm): a mail host that costs next to nothing per message, so the
# table measures the tools.  BENCH_SINK_TMPFS=0 puts the dumps on the disk
# of the mailbox and the spool instead, into a new directory every second
# (SINK_DUMP_TEMPLATE %H%M%S/dump.; ext4 creates files slowly right after
# 10,000 were deleted from the same directory).  On disk, writing the dump
# files made the single smtp-sink process the bottleneck of every drain
# (docs/performance.md, 2026-12-02): its system time was 3.3-7.1 s of
# 4.4-8.2 s popgate runs of 10,000 x 2 KiB, and moved by 2x between runs.
#
# Each scenario also reports "pop3-floor": test/bench/minpop3 draining the
# same mailbox with pipelined RETR+DELE and waiting for QUIT (no SMTP): the
# POP3 server's own share of any drain.  No tool can finish before it, so
# fetchmail's time over it is the largest speed-up the harness allows.
# And "smtp-floor": test/bench/minsmtp sending as many messages of the same
# size over one session to the same sink (MAIL+RCPT+DATA in one write, the
# body in one write; no POP3): the SMTP host's share.  popgate's wall time
# over pop3-floor + smtp-floor (both protocols back to back) is the last
# column.  "esmtp-floor": test/bench/minesmtp sending the same messages
# through libesmtp alone over one session (no spool): the least CPU any
# relay built on libesmtp can use (not part of the floors column).
# Every tool's CPU seconds (user + system, the tool and all the
# processes it waited for, from /usr/bin/time) are a column too.
# BENCH_BASE=/path/to/an/older/popgate adds the tool "popgate-base": that
# binary's `run --once`, to compare two builds in the same conditions.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
: "${BENCH_RUNS:=3}" "${BENCH_SLOW_SECS:=30}"
: "${BENCH_SCENARIOS:=1000x4KiB 10000x2KiB 100x1MiB 1x50MiB 1000x4KiB-TLS}"
command -v fetchmail >/dev/null || bail_out "fetchmail is not installed"
command -v gcc >/dev/null || bail_out "gcc is needed for the shims"

B=$TESTDIR/bench
mkdir -p "$B/fm"
gcc -shared -fPIC -O2 -o "$B/nodelay.so" "$top_srcdir/test/bench/nodelay.c" -ldl ||
	bail_out "cannot build nodelay.so"
gcc -O2 -o "$B/minpop3" "$top_srcdir/test/bench/minpop3.c" || bail_out "cannot build minpop3"
gcc -O2 -o "$B/minsmtp" "$top_srcdir/test/bench/minsmtp.c" || bail_out "cannot build minsmtp"
gcc -O2 -o "$B/minesmtp" "$top_srcdir/test/bench/minesmtp.c" -lesmtp || bail_out "cannot build minesmtp"
gcc -O2 -o "$B/fsyncbench" "$top_srcdir/test/bench/fsyncbench.c" -lsqlite3 ||
	bail_out "cannot build fsyncbench"

echo "## durability options on this disk (test/bench/fsyncbench.c, 2000 x 2 KiB)"
echo '```'
"$B/fsyncbench" "$B/fsync" 2000 2048
rm -rf "$B/fsync"
echo '```'

start_dovecot "$TESTDIR/pop" >/dev/null || bail_out "cannot start Dovecot"
if [ "${BENCH_SINK_TMPFS:-1}" != 1 ]; then
	SINK_BASE=$TESTDIR
	export SINK_DUMP_TEMPLATE=%H%M%S/dump.
	echo "# smtp-sink dumps on disk, a new directory every second ($SINK_BASE/sink; BENCH_SINK_TMPFS=0)"
else
	SINK_BASE=$(mktemp -d /dev/shm/popgate-bench.XXXXXX) || bail_out "mktemp in /dev/shm"
	# removed before the common cleanup, keeping the exit status
	_bench_cleanup() {
		local rc=$?
		stop_servers
		rm -rf "$SINK_BASE"
		(exit "$rc")
		_common_cleanup
	}
	trap _bench_cleanup EXIT
	echo "# smtp-sink dumps on tmpfs ($SINK_BASE/sink)"
fi
start_smtp_sink "$SINK_BASE" >/dev/null || bail_out "cannot start smtp-sink"
dovecot_add_user bench 'bench-pw'
password_file "$B/pass" 'bench-pw'
MAILDIR=$(maildir_of bench)

# gen COUNT SIZE - COUNT messages of about SIZE octets into the Maildir
# (new file names every time: Dovecot must not mistake them for old ones)
GEN=0
gen() {
	GEN=$((GEN + 1))
	find "$MAILDIR/new" "$MAILDIR/cur" -type f -delete
	"$PYTHON" "$top_srcdir/test/bench/genmail.py" "$MAILDIR/new" "$1" "$2" "$GEN"
	maildir_fix_owner bench
}

conf_popgate() { # TLS
	{
		conf_base "$B/spool"
		if [ "$1" = tls ]; then
			conf_account bench server localhost port "$POP3S_PORT" tls implicit \
				ca_file "$TESTDIR/pop/ca.pem" user bench password_file "$B/pass" \
				deliver_to bench@corp.example
		else
			conf_account bench server 127.0.0.1 port "$POP3_PORT" tls none \
				allow_plaintext true user bench password_file "$B/pass" \
				deliver_to bench@corp.example
		fi
	} | sed "s/^log_level = .*/log_level = \"${BENCH_LOG_LEVEL:-warning}\"/" >"$B/popgate.conf"
}

conf_fetchmail() { # TLS
	if [ "$1" = tls ]; then
		printf 'poll localhost via 127.0.0.1 port %s protocol pop3 user "bench" password "bench-pw" is root here smtphost 127.0.0.1/%s no keep fetchall ssl sslcertck sslcertfile "%s" sslcommonname localhost sslproto "TLS1.2+"\n' \
			"$POP3S_PORT" "$SMTP_PORT" "$TESTDIR/pop/ca.pem"
	else
		# sslproto '': no opportunistic STLS (the test certificate is for localhost)
		printf 'poll 127.0.0.1 port %s protocol pop3 user "bench" password "bench-pw" is root here smtphost 127.0.0.1/%s no keep fetchall sslproto ""\n' \
			"$POP3_PORT" "$SMTP_PORT"
	fi >"$B/fm/fetchmailrc"
	chmod 0600 "$B/fm/fetchmailrc"
}

# /usr/bin/time's last line: peak RSS (KiB), then user and system CPU
# seconds of the tool and every process it waited for (its forked relay
# sessions and poll children included: their rusage is summed into the
# parent's at wait)
TFMT='%M %U %S'
# run_tool TOOL - one timed run; prints "SECONDS RSS_KIB OK CPU_SECONDS"
run_tool() {
	local t0 t1 rss=0 r cpu=0 k u sy
	rm -rf "${SINK_DIR:?}"/* "$B/rss".*
	rm -rf "$B/spool" "$B/fm/.fetchids"
	# the generated mailbox and the removals reach the disk before the
	# clock starts: no run pays for the previous one's writeback (it
	# slowed whichever tool came next, most the one that fsyncs)
	sync
	t0=$(date +%s.%N)
	case $1 in
	popgate)
		/usr/bin/time -f "$TFMT" -o "$B/rss.1" "$POPGATE" -c "$B/popgate.conf" run --once \
			2>>"$B/popgate.log"
		;;
	popgate-base)
		/usr/bin/time -f "$TFMT" -o "$B/rss.1" "$BENCH_BASE" -c "$B/popgate.conf" run --once \
			2>>"$B/popgate.log"
		;;
	popgate-poll+relay)
		/usr/bin/time -f "$TFMT" -o "$B/rss.1" "$POPGATE" -c "$B/popgate.conf" poll --once 2>>"$B/popgate.log" &&
			/usr/bin/time -f "$TFMT" -o "$B/rss.2" "$POPGATE" -c "$B/popgate.conf" relay --once 2>>"$B/popgate.log"
		;;
	fetchmail)
		HOME=$B/fm /usr/bin/time -f "$TFMT" -o "$B/rss.1" fetchmail -f "$B/fm/fetchmailrc" -N \
			--nosyslog -s --pidfile "$B/fm/pid" >>"$B/fetchmail.log" 2>&1
		;;
	fetchmail+nodelay)
		HOME=$B/fm LD_PRELOAD=$B/nodelay.so /usr/bin/time -f "$TFMT" -o "$B/rss.1" fetchmail \
			-f "$B/fm/fetchmailrc" -N --nosyslog --pidfile "$B/fm/pid" >>"$B/fetchmail.log" 2>&1
		;;
	pop3-floor) # plain POP3 even in the TLS scenario: the server's share
		/usr/bin/time -f "$TFMT" -o "$B/rss.1" "$B/minpop3" 127.0.0.1 "$POP3_PORT" bench bench-pw \
			"$COUNT" dele >>"$B/fetchmail.log" 2>&1
		;;
	smtp-floor) # the same count and size over one pipelined SMTP session
		/usr/bin/time -f "$TFMT" -o "$B/rss.1" "$B/minsmtp" 127.0.0.1 "$SMTP_PORT" "$COUNT" \
			"$SIZE" >>"$B/fetchmail.log" 2>&1
		;;
	esmtp-floor) # the same through libesmtp alone: the relay's floor
		/usr/bin/time -f "$TFMT" -o "$B/rss.1" "$B/minesmtp" 127.0.0.1 "$SMTP_PORT" "$COUNT" \
			"$SIZE" >>"$B/fetchmail.log" 2>&1
		;;
	esac
	t1=$(date +%s.%N)
	for r in "$B"/rss.*; do
		[ -f "$r" ] || continue
		read -r k u sy < <(tail -n 1 "$r")
		[ "$k" -gt "$rss" ] 2>/dev/null && rss=$k
		cpu=$(awk -v c="$cpu" -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", c + u + s }')
	done
	local ok=1 i
	local want=$COUNT left=0
	[ "$1" = pop3-floor ] && want=0 # it sends nothing
	[ "$1" = smtp-floor ] || [ "$1" = esmtp-floor ] && left=$COUNT # it takes nothing
	# smtp-sink writes its dump file after its 250: give the last one a moment
	for ((i = 0; i < 40; i++)); do
		[ "$(sink_count)" = "$want" ] && break
		sleep 0.05
	done
	[ "$(sink_count)" = "$want" ] && [ "$(maildir_count bench)" = "$left" ] || ok=0
	[ "$ok" = 1 ] || echo "### $1: sink $(sink_count) of $COUNT, mailbox $(maildir_count bench)" \
		>>"$B/fetchmail.log"
	sleep 0.3 # let Dovecot finish the expunge of this session (not timed)
	echo "$t0 $t1 $rss $ok $cpu" | awk '{ printf "%.3f %d %d %s\n", $2 - $1, $3, $4, $5 }'
}

TOOLS=${BENCH_TOOLS:-"popgate ${BENCH_BASE:+popgate-base }popgate-poll+relay fetchmail+nodelay fetchmail pop3-floor smtp-floor esmtp-floor"}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
echo "## popgate vs fetchmail (median of $BENCH_RUNS runs; RSS is the peak of any run)"
echo
echo "CPU s: user + system of the tool and all its processes (median); floors: see the top"
echo "of test/bench/bench.sh; popgate/floors: popgate's median wall over pop3-floor + smtp-floor."
echo
echo "| scenario | tool | runs | median s | CPU s | CPU µs/msg | msg/s | MB/s | peak RSS MiB | popgate speed-up | popgate/floors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
each=
for sc in $BENCH_SCENARIOS; do
	case $sc in
	1000x4KiB) COUNT=1000 SIZE=4096 TLS=none ;;
	10000x2KiB) COUNT=10000 SIZE=2048 TLS=none ;;
	100x1MiB) COUNT=100 SIZE=1048576 TLS=none ;;
	1x50MiB) COUNT=1 SIZE=52428800 TLS=none ;;
	1000x4KiB-TLS) COUNT=1000 SIZE=4096 TLS=tls ;;
	*) bail_out "unknown scenario $sc" ;;
	esac
	conf_popgate "$TLS"
	conf_fetchmail "$TLS"
	declare -A times=() rss=() fails=() runs=() cpus=()
	# the first drain of a bench was often its slowest, for the tool that
	# came first (10,000 x 2 KiB: popgate 11.9 s and 6.3 s against medians
	# of 3.9 s): one untimed drain first
	if [ "${BENCH_WARMUP:-1}" = 1 ]; then
		gen "$COUNT" "$SIZE"
		run_tool popgate >/dev/null
	fi
	read -ra order <<<"$TOOLS"
	for ((r = 1; r <= BENCH_RUNS; r++)); do
		# each round starts with the next tool: no tool always goes first
		for ((k = 0; k < ${#order[@]}; k++)); do
			tool=${order[(k + r - 1) % ${#order[@]}]}
			# ~45 ms a message: measured once when that is long
			if [ "$tool" = fetchmail ] && [ "$r" -gt 1 ] &&
				[ $((COUNT * 45 / 1000)) -gt "$BENCH_SLOW_SECS" ]; then
				continue
			fi
			gen "$COUNT" "$SIZE"
			read -r secs kib okk cpu < <(run_tool "$tool")
			times[$tool]+="$secs "
			cpus[$tool]+="$cpu "
			runs[$tool]=$((${runs[$tool]:-0} + 1))
			[ "$kib" -gt "${rss[$tool]:-0}" ] && rss[$tool]=$kib
			[ "$okk" = 1 ] || fails[$tool]=$((${fails[$tool]:-0} + 1))
		done
	done
	declare -A med=() mcpu=()
	for tool in $TOOLS; do
		med[$tool]=$(echo "${times[$tool]}" | tr ' ' '\n' | grep . | median)
		mcpu[$tool]=$(echo "${cpus[$tool]}" | tr ' ' '\n' | grep . | median)
	done
	floors=$(awk -v a="${med[pop3-floor]:-0}" -v b="${med[smtp-floor]:-0}" 'BEGIN { print a + b }')
	# the faster fetchmail that delivered everything
	best=$(for tool in fetchmail fetchmail+nodelay; do
		[ -n "${med[$tool]}" ] && [ -z "${fails[$tool]:-}" ] && echo "${med[$tool]}"
	done | sort -n | head -n 1)
	best=${best:-0}
	for tool in $TOOLS; do
		awk -v sc="$sc" -v tool="$tool" -v n="${runs[$tool]}" -v t="${med[$tool]}" \
			-v c="$COUNT" -v s="$SIZE" -v rss="${rss[$tool]}" -v best="$best" \
			-v fail="${fails[$tool]:-0}" -v cpu="${mcpu[$tool]}" -v floors="$floors" 'BEGIN {
			up = ""; fl = "";
			if (tool ~ /^popgate/) up = sprintf("%.2fx", best / t);
			if (tool ~ /^popgate/ && floors > 0) fl = sprintf("%.2fx", t / floors);
			if (tool == "pop3-floor" && t > 0) up = sprintf("(at most %.2fx)", best / t);
			printf "| %s | %s%s | %d | %.3f | %.2f | %.0f | %.0f | %.1f | %.1f | %s | %s |\n", sc, tool,
				fail ? " (DELIVERY FAILED x" fail ")" : "", n, t, cpu, cpu * 1e6 / c, c / t,
				c * s / t / 1048576, rss / 1024, up, fl }'
	done
	for tool in $TOOLS; do
		each+="# $sc $tool, each run in order (s): ${times[$tool]}; CPU s: ${cpus[$tool]}"$'\n'
	done
	unset times rss fails runs med cpus mcpu
done
# every run, so the spread behind each median is on record
[ -z "$each" ] || printf '\n%s' "$each"
