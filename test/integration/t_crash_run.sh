#!/bin/bash
# t_crash_run.sh - the short process-group crash run for make check: kill -9
# `popgate run --once` with 4 relay sessions 12 times while 3,000-message
# batches drain, half of the kills in the start-up, on a slowed-down disk
# (test/crash/crash_run.sh): every requeue after a crash and every message
# the host accepted twice is logged by id; 0 lost.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
export CRASH_KILLS=${CRASH_KILLS:-12} CRASH_MESSAGES=${CRASH_MESSAGES:-3000}
exec bash "$top_srcdir/test/crash/crash_run.sh"
