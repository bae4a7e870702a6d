#!/bin/bash
# run.sh SRCDIR BUILDDIR SECONDS - build the libFuzzer targets with clang
# (ASan + UBSan) into BUILDDIR/test/fuzz and run each for SECONDS over a
# copy of its committed corpus (test/fuzz/corpus/<target>/).  Exit 0 when
# every target ran clean, 1 on a crash (the reproducer is left in
# BUILDDIR/test/fuzz/crash-*), 77 when clang or libFuzzer is missing.
src=$1 build=$2 secs=${3:-20}
out=$build/test/fuzz
command -v clang >/dev/null 2>&1 || { echo "clang not installed"; exit 77; }
mkdir -p "$out"
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' >"$out/probe.c"
clang -fsanitize=fuzzer "$out/probe.c" -o "$out/probe" 2>/dev/null || { echo "libFuzzer not available"; exit 77; }
LIBS="$(pkg-config --libs libconfuse openssl 2>/dev/null || echo '-lconfuse -lssl -lcrypto')"
SRCS="util.c log.c conf.c linereader.c msgfilter.c net.c pop3.c sasl.c"
rc=0
for t in reply multiline session; do
	objs=()
	for f in $SRCS; do objs+=("$src/gateway/$f"); done
	if ! clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-I"$build" -I"$src" -I"$src/gateway" "$src/test/fuzz/fuzz_$t.c" "${objs[@]}" $LIBS \
		-o "$out/fuzz_$t" 2>"$out/build_$t.log"; then
		echo "fuzz_$t: build failed"; cat "$out/build_$t.log"; rc=1; continue
	fi
	rm -rf "$out/corpus_$t" && cp -r "$src/test/fuzz/corpus/$t" "$out/corpus_$t"
	if (cd "$out" && ./fuzz_$t -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=512 \
		-print_final_stats=1 "corpus_$t" >"run_$t.log" 2>&1); then
		echo "fuzz_$t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/run_$t.log" | grep -o '[0-9]*$') runs in ${secs}s)"
	else
		echo "fuzz_$t: CRASH"; tail -n 40 "$out/run_$t.log"; rc=1
	fi
done
exit $rc
