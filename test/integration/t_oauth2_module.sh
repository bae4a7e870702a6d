#!/bin/bash
# t_oauth2_module.sh - the OAuth2 client is a module, popgate-oauth2.so,
# loaded on first use (issue 16):
#  - the popgate binary does not link libcurl or jansson (ldd); the module
#    does;
#  - a popgate whose module is broken (not an ELF file) or missing: the
#    OAuth2 account's poll fails as temporary with the error naming the
#    module's path and dlerror(), its mail stays on the server; a password
#    account in the same run still fetches; `popgate authorize` exits
#    non-zero with the message;
#  - with the module back, the OAuth2 account fetches the mail it left.
# A still valid access token needs no token request, hence no module: each
# poll here has the stored token expire first, so that it must refresh.
# The binary looks for the module next to itself (/proc/self/exe), else in
# the installed pkglibdir: the test runs a copy of popgate in its own
# directory, so the build tree's module is never touched.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
MOD=$(dirname "$POPGATE")/popgate-oauth2.so
[ -f "$MOD" ] || bail_out "no $MOD next to $POPGATE: make builds it"

# ---- what the binary maps --------------------------------------------------------
L=$(ldd "$POPGATE")
ok '[[ ! $L =~ libcurl|libjansson ]]' "ldd popgate: no libcurl, no jansson"
like "$(ldd "$MOD")" "libcurl" "ldd popgate-oauth2.so: libcurl"
like "$(ldd "$MOD")" "libjansson" "ldd popgate-oauth2.so: jansson"

U=bob@corp.example
P=carol@corp.example
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
start_dovecot_oauth2 "$TESTDIR/pop" || bail_out "cannot start Dovecot with the oauth2 passdb"
start_faketoken "$TESTDIR/idp" --set '{"provider":"microsoft","device_polls":0}' ||
	bail_out "cannot start faketoken.py"
dovecot_add_user "$U" 'bob-Pw-9'
dovecot_add_user "$P" 'carol-Pw-9'
password_file "$TESTDIR/pass" 'carol-Pw-9'
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
faketoken_client "{\"client_id\":\"dev\",\"user\":\"$U\"}" || bail_out "cannot register the client"
EP=$FAKETOKEN_URL/contoso.example/oauth2/v2.0
{
	conf_base "$SPOOL"
	cat <<EOF
account "dev" {
  server = "localhost"
  port = $POP3S_PORT
  tls = "implicit"
  ca_file = "$TESTDIR/pop/ca.pem"
  user = "$U"
  auth = "xoauth2"
  deliver_to = "$U"
  oauth2 {
    provider = "microsoft"
    tenant = "contoso.example"
    client_id = "dev"
    flow = "device"
    token_endpoint = "$EP/token"
    device_endpoint = "$EP/devicecode"
    ca_file = "$FAKETOKEN_CA"
  }
}
EOF
	conf_account pw server localhost port "$POP3S_PORT" tls implicit \
		ca_file "$TESTDIR/pop/ca.pem" user "$P" password_file "$TESTDIR/pass" deliver_to "$P"
} >"$CONF"

on_server() { find "$(maildir_of "$1")" -type f \( -path '*/new/*' -o -path '*/cur/*' \) | wc -l; }
n=0
newmail() {
	mail_gen --maildir "$(maildir_of "$1")" --expected "$TESTDIR/exp$n" --count 1 \
		--prefix "m$n" >/dev/null || bail_out "mkmail failed"
	n=$((n + 1))
}

# expire - the stored access token expires within 5 minutes: the next login
# refreshes it, a token request (a valid token needs no module)
expire() {
	sed -i -e "s/^access_expires=.*/access_expires=$(($(date +%s) + 100))/" \
		-e '/^retry_until=/d' "$SPOOL/oauth2/dev.tokens"
}

# the build tree's popgate authorizes (its module is next to it)
pg "$LOG" -c "$CONF" authorize dev >/dev/null
is "$PG_RC" 0 "authorize (device flow) with the module" || note "$LOG"

# ---- a copy of popgate with a broken module next to it ---------------------------
mkdir -p "$TESTDIR/bin"
cp "$POPGATE" "$TESTDIR/bin/popgate"
BAD=$TESTDIR/bin/popgate-oauth2.so
echo 'not a shared object' >"$BAD"
newmail "$U"
newmail "$P"
: >"$LOG.1"
expire
POPGATE=$TESTDIR/bin/popgate pg "$LOG.1" -c "$CONF" poll --once
is "$PG_RC" 75 "broken module: poll --once exits 75 (temporary)" || note "$LOG.1"
like "$(grep 'account=dev ' "$LOG.1")" "cannot load the OAuth2 module $BAD: .*$BAD" \
	"broken module: the OAuth2 account's error names the module and dlerror()"
is "$(on_server "$U")" 1 "broken module: the OAuth2 account's message stays on the server"
is "$(on_server "$P")" 0 "broken module: the password account's message was fetched"
is "$(spool_count_stored "$SPOOL")" 1 "broken module: one message in the spool (the password account's)"

POPGATE=$TESTDIR/bin/popgate pg "$LOG.1" -c "$CONF" authorize dev >/dev/null
ok "[ '$PG_RC' != 0 ]" "broken module: authorize exits non-zero ($PG_RC)"
like "$(tail -n 3 "$LOG.1")" "popgate authorize dev: cannot load the OAuth2 module $BAD" \
	"broken module: authorize says why"

# ---- missing: the installed one is tried ------------------------------------------
rm -f "$BAD"
: >"$LOG.2"
expire
POPGATE=$TESTDIR/bin/popgate pg "$LOG.2" -c "$CONF" poll --once dev
inst=$(sed -n 's/.*cannot load the OAuth2 module \(\/[^ ]*\/popgate-oauth2\.so\): .*/\1/p' "$LOG.2" | head -n 1)
if [ -z "$inst" ] && [ "$PG_RC" = 0 ]; then
	skip 2 "a module is installed in the pkglibdir: the missing case cannot be seen"
else
	is "$PG_RC" 75 "missing module: poll --once dev exits 75" || note "$LOG.2"
	like "$inst" "^/.*/popgate/popgate-oauth2\\.so$" \
		"missing module: the error names the installed path ($inst), not the copy's directory"
fi
is "$(on_server "$U")" 1 "missing module: the message is still on the server"

# ---- a module of another build: refused, named --------------------------------------
# the real module with its build id changed (same length, last octet): what a
# running daemon meets when another build is installed under it
BID=$(sed -n 's/^#define POPGATE_BUILD_ID "\(.*\)"$/\1/p' "$top_builddir/config.h")
ok "[ -n '$BID' ] && grep -c -a -F '$BID' '$MOD' >/dev/null" "the module carries this build's id ($BID)"
"$PYTHON" - "$MOD" "$BAD" "$BID" <<'PY'
import sys
src, dst, bid = sys.argv[1], sys.argv[2], sys.argv[3].encode()
data = open(src, "rb").read()
other = bid[:-1] + (b"x" if bid[-1:] != b"x" else b"y")
open(dst, "wb").write(data.replace(bid, other))
PY
: >"$LOG.3"
expire
POPGATE=$TESTDIR/bin/popgate pg "$LOG.3" -c "$CONF" poll --once dev
is "$PG_RC" 75 "module of another build: poll --once dev exits 75" || note "$LOG.3"
like "$(grep 'account=dev ' "$LOG.3")" "the OAuth2 module $BAD is from another build" \
	"module of another build: the error names the module and says so"
is "$(on_server "$U")" 1 "module of another build: the message is still on the server"
rm -f "$BAD"

# ---- the module back: nothing was lost ------------------------------------------
expire
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 0 "with the module: poll --once dev fetches" || note "$LOG"
is "$(on_server "$U")" 0 "with the module: the OAuth2 account's message left the server"
is "$(spool_count_stored "$SPOOL")" 2 "with the module: both messages in the spool"
like "$(grep 'account=dev oauth2=refresh_token' "$LOG" | tail -n 1)" "status=ok" \
	"with the module: the token was refreshed through it"

done_testing
