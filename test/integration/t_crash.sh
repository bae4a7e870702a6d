#!/bin/bash
# t_crash.sh - the short crash run for make check: kill -9 the poller and the
# relay at 30 random points while 2,000-message batches drain and relay
# (test/crash/crash.sh; `make crashtest` runs it with 200 kills).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
export CRASH_KILLS=${CRASH_KILLS:-30} CRASH_MESSAGES=${CRASH_MESSAGES:-2000}
exec bash "$top_srcdir/test/crash/crash.sh"
