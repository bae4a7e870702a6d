#!/bin/bash
# t_fuzz.sh - build the libFuzzer targets (test/fuzz/: reply parsers,
# line reader + message filter, a whole POP3 session over canned server
# bytes; and what any mail sender writes: routing headers, sender
# selection, the notice that quotes them; a .fetchmailrc) with clang + ASan + UBSan and run
# each for FUZZ_SECONDS (default 6: six targets in the time three took)
# over its committed corpus, which includes every crash found so far
# (regress-*).  Skipped without clang/libFuzzer, and in the sanitizer build
# of ./quickstart check (the targets are sanitized already; once is enough).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
. "$top_srcdir/test/lib/tap.sh"
command -v clang >/dev/null 2>&1 || skip_all "clang is not installed"
if [ -x "${POPGATE:-}" ] && nm -D "$POPGATE" 2>/dev/null | grep -q '__asan_init\|__ubsan'; then
	skip_all "sanitizer build: the fuzz targets already ran in the normal build"
fi
out=$(bash "$top_srcdir/test/fuzz/run.sh" "$top_srcdir" "$top_builddir" "${FUZZ_SECONDS:-6}" 2>&1)
rc=$?
[ "$rc" = 77 ] && skip_all "$out"
printf '%s\n' "$out" | sed 's/^/# /'
for t in reply multiline session route sender notice fetchmailrc; do
	like "$out" "fuzz_$t: ok" "fuzz_$t ran clean over its corpus for ${FUZZ_SECONDS:-6} s"
done
done_testing
