#!/bin/bash
# run.sh SRCDIR BUILDDIR SECONDS [TARGET...] - build the libFuzzer targets
# with clang (ASan + UBSan) into BUILDDIR/test/fuzz and run each for SECONDS
# over a copy of its committed corpus (test/fuzz/corpus/<target>/).  Exit 0
# when every target ran clean, 1 on a crash (the reproducer is left in
# BUILDDIR/test/fuzz/crash-*), 77 when clang or libFuzzer is missing.
# SECONDS=0 only builds.  Targets: what a POP3 server sends (reply,
# multiline, session) and what any mail sender writes (route, sender,
# notice), and a .fetchmailrc (fetchmailrc); the seeds of the latter may hold repeats (fuzz_hdrs.h), so a
# 10 MiB header is a 30-byte file.
src=$1 build=$2 secs=${3:-20}
shift 3 2>/dev/null || shift $#
targets=${*:-reply multiline session route sender notice fetchmailrc}
out=$build/test/fuzz
command -v clang >/dev/null 2>&1 || { echo "clang not installed"; exit 77; }
mkdir -p "$out"
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' >"$out/probe.c"
clang -fsanitize=fuzzer "$out/probe.c" -o "$out/probe" 2>/dev/null || { echo "libFuzzer not available"; exit 77; }
LIBS="$(pkg-config --libs libconfuse openssl 2>/dev/null || echo '-lconfuse -lssl -lcrypto')"
rc=0
for t in $targets; do
	case $t in
	route|sender) srcs="util.c log.c route.c" libs= ;;
	notice) srcs="util.c log.c route.c notice.c" libs= ;; # the spool is stubbed
	fetchmailrc) srcs="util.c log.c fetchmailrc.c fetchmailrc_parse.c" libs= ;;
	*) srcs="util.c log.c conf.c conf_schema.c conf_secret.c linereader.c msgfilter.c net.c pop3.c sasl.c" libs=$LIBS ;;
	esac
	objs=()
	for f in $srcs; do objs+=("$src/gateway/$f"); done
	if ! clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-I"$build" -I"$src" -I"$src/gateway" -I"$src/spool" "$src/test/fuzz/fuzz_$t.c" \
		"${objs[@]}" $libs -o "$out/fuzz_$t" 2>"$out/build_$t.log"; then
		echo "fuzz_$t: build failed"; cat "$out/build_$t.log"; rc=1; continue
	fi
	[ "$secs" = 0 ] && { echo "fuzz_$t: built"; continue; }
	rm -rf "$out/corpus_$t" && cp -r "$src/test/fuzz/corpus/$t" "$out/corpus_$t"
	if (cd "$out" && ./fuzz_$t -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=512 \
		-print_final_stats=1 "corpus_$t" >"run_$t.log" 2>&1); then
		echo "fuzz_$t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/run_$t.log" | grep -o '[0-9]*$') runs in ${secs}s)"
	else
		echo "fuzz_$t: CRASH"; tail -n 40 "$out/run_$t.log"; rc=1
	fi
done
exit $rc
