#!/bin/bash
# t_check_config.sh - check-config checks what will fail at run time, as
# the run-time user (`user =`): a password file only root can read, a
# `user` that does not exist (and `run -f` then exits 67), a
# password_command program that is missing or not executable (also at
# test-account: a configuration error, 78), a metrics_file in a missing
# directory (a warning, exit 0).  Each names the option and the fix.
# Needs no servers.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_popgate
[ "$(id -u)" = 0 ] || skip_all "must run as root (checks as another user)"
id -u nobody >/dev/null 2>&1 || skip_all "no user nobody"

D=$TESTDIR
chmod 0711 "$D" # the run-time user may traverse it, as /etc/popgate
OUT=$D/out
password_file "$D/pass" 'cc-secret'

run() {
	timeout 60 $POPGATE_WRAPPER "$POPGATE" "$@" >"$OUT" 2>&1
	RC=$?
}

# conf FILE TOP-LINES ACCOUNT-LINES - a config with one account "office"
conf() {
	{
		printf 'spool_dir = "%s/spool"\n' "$D"
		printf '%s\n' "$2"
		printf 'account "office" {\n  server = "localhost"\n  user = "office"\n'
		printf '  deliver_to = "office@corp.example"\n%s\n}\n' "$3"
	} >"$1"
}

# ---- a password file only root can read, user = "nobody" -------------------
conf "$D/a.conf" 'user = "nobody"' "  password_file = \"$D/pass\""
run -c "$D/a.conf" check-config
is "$RC" 78 "root-only password_file, user = nobody: check-config exits 78"
like "$(cat "$OUT")" "option 'password_file': user 'nobody' cannot read '$D/pass': fix its owner or mode" \
	"... names the option, the user, the file and the fix" || note "$OUT"
chown nobody "$D/pass"
run -c "$D/a.conf" check-config
is "$RC" 0 "the same file owned by nobody: check-config exits 0" || note "$OUT"
chown root "$D/pass"
# no user: the file is read as root, which can
conf "$D/a2.conf" '' "  password_file = \"$D/pass\""
run -c "$D/a2.conf" check-config
is "$RC" 0 "without user =, the root-owned password file is fine" || note "$OUT"
# smtp password file, same check
password_file "$D/smtp.pass" 'smtp-secret'
conf "$D/a3.conf" "user = \"nobody\"
smtp {
  user = \"relay\"
  password_file = \"$D/smtp.pass\"
  tls = \"encrypt\"
}" "  password_file = \"$D/pass\""
chown nobody "$D/pass"
run -c "$D/a3.conf" check-config
is "$RC" 78 "root-only smtp password_file: check-config exits 78"
like "$(cat "$OUT")" "smtp: option 'password_file': user 'nobody' cannot read '$D/smtp.pass'" \
	"... names the smtp block's option" || note "$OUT"
chown root "$D/pass"

# ---- user = a user that does not exist -------------------------------------
conf "$D/b.conf" 'user = "popgate-no-such-user"' "  password_file = \"$D/pass\""
run -c "$D/b.conf" check-config
is "$RC" 78 "user = a missing user: check-config exits 78"
like "$(cat "$OUT")" "option 'user': no such user 'popgate-no-such-user': create it \\(useradd" \
	"... names the option and the fix" || note "$OUT"
run -c "$D/b.conf" run -f
is "$RC" 67 "user = a missing user: run -f exits 67 (EX_NOUSER, as popgate(8) says)"

# ---- password_command: missing, not in PATH, not executable -----------------
conf "$D/c1.conf" '' '  password_command = "/nonexistent/bin/get-token --account office"'
run -c "$D/c1.conf" check-config
is "$RC" 78 "password_command naming a missing program: check-config exits 78"
like "$(cat "$OUT")" "account 'office': option 'password_command': program '/nonexistent/bin/get-token' does not exist" \
	"... names the account, option and program" || note "$OUT"
run -c "$D/c1.conf" test-account office
is "$RC" 78 "password_command missing: test-account exits 78 (configuration), not 75"
like "$(cat "$OUT")" "option 'password_command': program '/nonexistent/bin/get-token' does not exist" \
	"test-account: names the option and the missing program" || note "$OUT"
conf "$D/c2.conf" '' '  password_command = "popgate-no-such-helper"'
run -c "$D/c2.conf" check-config
is "$RC" 78 "password_command not in PATH: check-config exits 78"
like "$(cat "$OUT")" "program 'popgate-no-such-helper' is not in PATH" "... says so" || note "$OUT"
printf '#!/bin/sh\necho tok\n' >"$D/helper"
chmod 0644 "$D/helper"
conf "$D/c3.conf" '' "  password_command = \"$D/helper\""
run -c "$D/c3.conf" check-config
is "$RC" 78 "password_command not executable: check-config exits 78"
like "$(cat "$OUT")" "option 'password_command': this user cannot execute '$D/helper': chmod 755" \
	"... names the program and the fix" || note "$OUT"
run -c "$D/c3.conf" test-account office
is "$RC" 78 "password_command not executable: test-account exits 78"
chmod 0755 "$D/helper"
run -c "$D/c3.conf" check-config
is "$RC" 0 "an executable password_command: check-config exits 0" || note "$OUT"

# ---- metrics_file in a directory that does not exist: a warning -------------
conf "$D/d.conf" "metrics_file = \"$D/no-such-dir/popgate.prom\"" "  password_file = \"$D/pass\""
run -c "$D/d.conf" check-config
is "$RC" 0 "metrics_file in a missing directory: check-config exits 0 (it may appear later)"
like "$(cat "$OUT")" "warnings:.*option 'metrics_file': directory '$D/no-such-dir' does not exist: create it" \
	"... but warns, naming the option, the directory and the fix" || note "$OUT"
mkdir "$D/no-such-dir"
run -c "$D/d.conf" check-config
ok "! grep -q metrics_file '$OUT'" "with the directory there, no warning"

done_testing
