#!/bin/bash
# t_cli.sh - the command line and configuration errors: --version, --help,
# check-config on good and broken files (each error names FILE:LINE and the
# option, with the real line even after comments), a password file readable
# by others, unknown commands.  Needs no servers.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_popgate

D=$TESTDIR
password_file "$D/pass" 'cli-secret'
OUT=$D/out

# run ARGS... - popgate with stdout+stderr in $OUT; sets RC
run() {
	timeout 60 $POPGATE_WRAPPER "$POPGATE" "$@" >"$OUT" 2>&1
	RC=$?
}

# line_of FILE PATTERN - the line number of the first line matching PATTERN
line_of() { grep -n -m1 -e "$2" "$1" | cut -d: -f1; }

good_account() {
	cat <<EOF
account "office" {
  server = "localhost"
  port = 995
  tls = "implicit"
  user = "office"
  password_file = "$D/pass"
  deliver_to = "office@corp.example"
}
EOF
}

# ---- --version / --help ----------------------------------------------------
run --version
is "$RC" 0 "--version exits 0"
like "$(cat "$OUT")" 'popgate.*[0-9]+\.[0-9]+\.[0-9]+' "--version prints the name and version"
run --help
is "$RC" 0 "--help exits 0"
like "$(cat "$OUT")" 'poll' "--help mentions poll"
like "$(cat "$OUT")" 'relay' "--help mentions relay"
like "$(cat "$OUT")" 'check-config' "--help mentions check-config"

# ---- usage errors ------------------------------------------------------------
run frobnicate
is "$RC" 64 "an unknown command exits 64"
like "$(cat "$OUT")" 'frobnicate|usage|Usage' "... and says what is wrong"
run
is "$RC" 64 "no command exits 64"
run --no-such-option poll
is "$RC" 64 "an unknown option exits 64"

# ---- check-config: good -------------------------------------------------------
{ conf_base "$D/spool"; good_account; } >"$D/good.conf"
run -c "$D/good.conf" check-config
is "$RC" 0 "check-config on a good file exits 0" || note "$OUT"

# check_bad NAME FILE LINE OPTION DESC - exit 78 and "FILE:LINE: ... OPTION"
check_bad() {
	local name=$1 file=$2 line=$3 opt=$4
	run -c "$file" check-config
	is "$RC" 78 "$name: check-config exits 78" || note "$OUT"
	like "$(cat "$OUT")" "$file:$line: [^[:cntrl:]]*$opt" "$name: the error names $file:$line and '$opt'" ||
		note "$OUT"
}

# (a) an unknown option
{ conf_base "$D/spool"; good_account | sed 's/^  user = .*/&\n  colour = "blue"/'; } >"$D/unknown.conf"
check_bad "unknown option" "$D/unknown.conf" "$(line_of "$D/unknown.conf" colour)" colour

# unknown option at the top level
{ conf_base "$D/spool"; echo 'spool_size = 10'; good_account; } >"$D/unknown-top.conf"
check_bad "unknown top-level option" "$D/unknown-top.conf" "$(line_of "$D/unknown-top.conf" spool_size)" spool_size

# (b) a missing required option: an account without server
{ conf_base "$D/spool"; good_account | grep -v 'server ='; } >"$D/missing.conf"
run -c "$D/missing.conf" check-config
is "$RC" 78 "missing server: check-config exits 78"
like "$(cat "$OUT")" "$D/missing.conf:[0-9]+: .*server" "missing server: the error names the file, a line and 'server'"
l=$(grep -o "$D/missing.conf:[0-9]*" "$OUT" | head -1 | cut -d: -f2)
first=$(line_of "$D/missing.conf" '^account')
last=$(wc -l <"$D/missing.conf")
ok "[ -n '$l' ] && [ '$l' -ge $first ] && [ '$l' -le $last ]" \
	"missing server: the line ($l) is within the account block ($first-$last)"

# (c) bad values
{ conf_base "$D/spool"; good_account | sed 's/tls = "implicit"/tls = "maybe"/'; } >"$D/tls.conf"
check_bad "tls = maybe" "$D/tls.conf" "$(line_of "$D/tls.conf" maybe)" tls
{ conf_base "$D/spool"; good_account | sed 's/port = 995/port = 99999/'; } >"$D/port.conf"
check_bad "port = 99999" "$D/port.conf" "$(line_of "$D/port.conf" 99999)" port
{ conf_base "$D/spool"; good_account | sed 's/port = 995/port = "pop3s"/'; } >"$D/portstr.conf"
check_bad 'port = "pop3s"' "$D/portstr.conf" "$(line_of "$D/portstr.conf" pop3s)" port

# (d) an error after comments of every kind (libconfuse miscounts lines
# after some comments: the reported line must be the real one)
{
	echo '# popgate.conf with comments'
	echo '# a second hash comment'
	echo ''
	echo '/* a C comment'
	echo '   spanning'
	echo '   four lines */'
	echo '// a C++ comment'
	conf_base "$D/spool" | sed 's|^hostname = .*|& # trailing comment|'
	echo '/* one-line C comment */'
	echo ''
	good_account | sed 's|^  port = 995|  # the port:\n  /* really\n     */\n  port = 99999 // wrong|'
} >"$D/comments.conf"
check_bad "error after comments" "$D/comments.conf" "$(line_of "$D/comments.conf" 99999)" port

# a config file that does not exist
run -c "$D/nonexistent.conf" check-config
isnt "$RC" 0 "a missing config file fails"
like "$(cat "$OUT")" "$D/nonexistent.conf" "... and names the file"

# ---- password file readable by others ------------------------------------
start_fakepop3 "$D/fake" record || bail_out "cannot start fakepop3"
password_file "$D/open.pass" 'cli-secret'
chmod 0644 "$D/open.pass"
{
	conf_base "$D/spool-open"
	conf_account office server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
		user office password_file "$D/open.pass" deliver_to office@corp.example
} >"$D/open.conf"
run -c "$D/open.conf" check-config
is "$RC" 78 "password file mode 0644: check-config exits 78"
like "$(cat "$OUT")" "$D/open.pass" "... naming the password file"
like "$(cat "$OUT")" '(readable|accessible).*(other|group)|(group|other).*(read|access)|0644|mode' \
	"... saying it is readable by others" || note "$OUT"
run -c "$D/open.conf" poll --once
is "$RC" 78 "password file mode 0644: poll refuses with 78" || note "$OUT"
ok "! grep -qaE '^(USER|PASS|AUTH)' '$FAKEPOP3_REC'" "poll sent no credentials"
ok "! grep -qF cli-secret '$OUT'" "the secret is not printed"
chmod 0600 "$D/open.pass"
run -c "$D/open.conf" check-config
is "$RC" 0 "the same file at mode 0600 is accepted" || note "$OUT"

done_testing
