#!/bin/bash
# t_systemd.sh - the shipped units: `systemd-analyze verify` passes and
# `systemd-analyze security` rates popgate.service at most 2.0.  Skipped
# when systemd-analyze is not installed (PID 1 need not be systemd).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
command -v systemd-analyze >/dev/null 2>&1 || skip_all "systemd-analyze is not installed"
require_popgate

U=$TESTDIR/units
mkdir -p "$U"
# the units as `make install` generates them, pointing at the built binary
for f in popgate.service popgate-batch.service; do
	sed -e "s|@sbindir@|$(dirname "$POPGATE")|g" -e "s|@sysconfdir@|/etc|g" \
		"$top_srcdir/docs/systemd/$f.in" >"$U/$f"
done
cp "$top_srcdir/docs/systemd/popgate-batch.timer" "$U/"
out=$(cd "$U" && systemd-analyze verify --man=no ./popgate.service ./popgate-batch.service \
	./popgate-batch.timer 2>&1)
is "$?" 0 "systemd-analyze verify passes for the three units"
[ -z "$out" ] || diag "$out"
for f in popgate.service popgate-batch.service; do
	score=$(cd "$U" && systemd-analyze security --offline=true "./$f" 2>/dev/null |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	diag "$f: systemd-analyze security exposure $score"
	ok "[ -n '$score' ] && awk 'BEGIN { exit !($score <= 2.0) }'" \
		"$f: exposure level $score is at most 2.0"
done
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID' "$U/popgate.service"
is "$?" 0 "reload sends SIGHUP"
done_testing
