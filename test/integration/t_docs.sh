#!/bin/bash
# t_docs.sh - the manual pages document what the program has: every option
# of the parser's tables (gateway/conf_schema.c) has an entry in popgate.conf(5),
# every command of `popgate --help` is in popgate(8)'s SYNOPSIS and
# COMMANDS.  The checker is shown to fail on a page with one entry
# removed, so the test cannot pass by matching nothing.  Needs no servers.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_popgate

D=$TESTDIR
CONF_C=$top_srcdir/gateway/conf_schema.c
CONF_5=$top_srcdir/docs/popgate.conf.5
MAN_8=$top_srcdir/docs/popgate.8
"$POPGATE" --help >"$D/help.txt" 2>&1
check() { "$PYTHON" "$TESTLIB/docscheck.py" "$@"; }

run_checks check "$CONF_C" "$CONF_5" "$D/help.txt" "$MAN_8"

# the checker fails when one option or one command is missing
sed '/^\.BR tls_timeout /d' "$CONF_5" >"$D/conf5-cut"
check "$CONF_C" "$D/conf5-cut" "$D/help.txt" "$MAN_8" >"$D/out1"
is "$?" 1 "self-test: popgate.conf(5) without tls_timeout's entry fails"
like "$(cat "$D/out1")" "option 'tls_timeout' \\(account_opts\\) has no entry" \
	"self-test: ... naming tls_timeout"
# an option named second on a shared entry line counts, and is missed
sed 's/^\(\.BR token_endpoint ", "\) device_endpoint ", "/\1/' "$CONF_5" >"$D/conf5-cut3"
check "$CONF_C" "$D/conf5-cut3" "$D/help.txt" "$MAN_8" >"$D/out1c"
like "$(cat "$D/out1c")" "option 'device_endpoint' \\(oauth2_opts\\) has no entry" \
	"self-test: an oauth2 option missing from its shared entry line is named"
sed '/^\.SS The oauth2 block/d' "$CONF_5" >"$D/conf5-cut4"
check "$CONF_C" "$D/conf5-cut4" "$D/help.txt" "$MAN_8" >"$D/out1d"
like "$(cat "$D/out1d")" "option 'oauth2' \\(account_opts\\) has no entry" \
	"self-test: the oauth2 block needs its own subsection"
sed '/^\.BR tls_fingerprint /d' "$CONF_5" >"$D/conf5-cut2"
check "$CONF_C" "$D/conf5-cut2" "$D/help.txt" "$MAN_8" >"$D/out1b"
like "$(cat "$D/out1b")" "option 'tls_fingerprint' \\(account_opts\\).*option 'tls_fingerprint' \\(smtp_opts\\)" \
	"self-test: an option of two blocks needs an entry in each block's section"
awk '/^\.SH COMMANDS/ { c = 1 } c && /^\.BI test\\-account/ { next } { print }' "$MAN_8" >"$D/man8-cut"
check "$CONF_C" "$CONF_5" "$D/help.txt" "$D/man8-cut" >"$D/out2"
is "$?" 1 "self-test: popgate(8) without test-account's COMMANDS entry fails"
like "$(cat "$D/out2")" "command 'test-account' has no entry in popgate\\(8\\) COMMANDS" \
	"self-test: ... naming test-account"
sed '/^\.SH SYNOPSIS/,/^\.SH DESCRIPTION/{/^\.B route$/d}' "$MAN_8" >"$D/man8-cut2"
check "$CONF_C" "$CONF_5" "$D/help.txt" "$D/man8-cut2" >"$D/out3"
like "$(cat "$D/out3")" "command 'route' is not in popgate\\(8\\) SYNOPSIS" \
	"self-test: popgate(8) without route in SYNOPSIS fails, naming it"

done_testing
