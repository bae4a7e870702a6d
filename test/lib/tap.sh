# tap.sh - tiny TAP producer for the integration tests (bash).
#
# Contract: source this file, then call
#   plan N                 announce N tests up front, or
#   no_plan ... done_testing   announce the count at the end;
#   ok COND DESC           COND is a shell command string evaluated with eval,
#                          or the literal words true/false, or a number (0 = pass);
#   is GOT EXPECTED DESC   string comparison; on failure prints both as "# " lines
#                          plus a unified diff when they span several lines;
#   isnt GOT UNEXPECTED DESC, like STRING REGEX DESC (bash ERE);
#   pass DESC / fail DESC; diag MSG (to stdout as "# " lines, so the
#   automake TAP driver keeps it in the .log); note FILE [N] (tail of a file as diag);
#   skip N REASON          emits N "ok # SKIP" lines;
#   skip_all REASON        prints "1..0 # SKIP REASON" and exits 0;
#   bail_out REASON        prints "Bail out! REASON" and exits 1.
# Exit status (done_testing, or common.sh's EXIT trap through tap_finish): 0
# when the plan was met, so that the automake TAP driver counts a failed
# assertion once (as FAIL) and not again as an ERROR for the exit status;
# 255 on a plan mismatch; with TAP_EXIT_FAILURES=1 the number of failures
# (capped at 254), for running a script by hand.

TAP_N=0
TAP_FAILED=0
TAP_PLANNED=
TAP_FINISHED=

plan() {
	TAP_PLANNED=$1
	echo "1..$1"
}

no_plan() {
	TAP_PLANNED=
}

diag() {
	local line
	while IFS= read -r line || [ -n "$line" ]; do
		printf '# %s\n' "$line"
	done <<<"$*"
}

# note FILE [N] - show the last N (default 20) lines of FILE as diagnostics.
note() {
	local f=$1 n=${2:-20}
	if [ -f "$f" ]; then
		diag "--- tail -n $n $f"
		tail -n "$n" "$f" | cut -c1-300 | sed 's/^/# /'
	else
		diag "--- $f: no such file"
	fi
}

_tap_result() {
	# _tap_result PASSED(0/1) DESC
	TAP_N=$((TAP_N + 1))
	if [ "$1" = 1 ]; then
		printf 'ok %d - %s\n' "$TAP_N" "$2"
	else
		TAP_FAILED=$((TAP_FAILED + 1))
		printf 'not ok %d - %s\n' "$TAP_N" "$2"
	fi
}

pass() { _tap_result 1 "$1"; }
fail() { _tap_result 0 "$1"; return 1; }

ok() {
	local cond=$1 desc=${2:-}
	local r
	case $cond in
	true) r=0 ;;
	false) r=1 ;;
	'' ) r=1 ;;
	*[!0-9]*) if eval "$cond"; then r=0; else r=1; fi ;;
	*) r=$cond ;;
	esac
	if [ "$r" = 0 ]; then
		_tap_result 1 "$desc"
	else
		_tap_result 0 "$desc"
		diag "  failed condition: $cond"
		return 1
	fi
}

is() {
	local got=$1 exp=$2 desc=${3:-}
	if [ "$got" == "$exp" ]; then
		_tap_result 1 "$desc"
		return 0
	fi
	_tap_result 0 "$desc"
	case "$got$exp" in
	*$'\n'*)
		diag "  got and expected differ:"
		diff -u <(printf '%s\n' "$exp") <(printf '%s\n' "$got") |
			sed -e '1s/^.*$/--- expected/' -e '2s/^.*$/+++ got/' | head -n 60 | sed 's/^/# /'
		;;
	*)
		diag "       got: '$got'"
		diag "  expected: '$exp'"
		;;
	esac
	return 1
}

isnt() {
	local got=$1 unexp=$2 desc=${3:-}
	if [ "$got" != "$unexp" ]; then
		_tap_result 1 "$desc"
	else
		_tap_result 0 "$desc"
		diag "  got: '$got' (expected anything else)"
		return 1
	fi
}

like() {
	local got=$1 re=$2 desc=${3:-}
	if [[ $got =~ $re ]]; then
		_tap_result 1 "$desc"
	else
		_tap_result 0 "$desc"
		diag "  '$(printf '%s' "$got" | head -c 2000)'"
		diag "  does not match /$re/"
		return 1
	fi
}

skip() {
	local n=$1 reason=$2 i
	for ((i = 0; i < n; i++)); do
		TAP_N=$((TAP_N + 1))
		printf 'ok %d # SKIP %s\n' "$TAP_N" "$reason"
	done
}

skip_all() {
	echo "1..0 # SKIP $*"
	TAP_FINISHED=1
	TAP_PLANNED=0
	exit 0
}

bail_out() {
	echo "Bail out! $*"
	TAP_FINISHED=1
	exit 1
}

# tap_finish - print the plan if none was given, report a plan mismatch.
# Returns the status the script should exit with.
tap_finish() {
	[ -n "$TAP_FINISHED" ] && return 0
	TAP_FINISHED=1
	if [ -z "$TAP_PLANNED" ]; then
		echo "1..$TAP_N"
	elif [ "$TAP_PLANNED" != "$TAP_N" ]; then
		diag "planned $TAP_PLANNED tests but ran $TAP_N"
		return 255
	fi
	[ "${TAP_EXIT_FAILURES:-0}" = 1 ] || return 0
	if [ "$TAP_FAILED" -gt 254 ]; then return 254; fi
	return "$TAP_FAILED"
}

done_testing() {
	local rc=0
	tap_finish || rc=$?
	exit "$rc"
}
