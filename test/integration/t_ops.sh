#!/bin/bash
# t_ops.sh - operator commands and log hygiene:
#  - no secret is ever logged or stored: a canary password (password_file,
#    Dovecot), a canary OAuth2 token (password_command, XOAUTH2 against
#    the fake server), and OAuth2 built in (a canary client secret, and the
#    refresh and access tokens the fake IdP issued, before and after a
#    rotation) at debug level; every log, the spool files other than the
#    token store, index.db, status --json and the metrics file are searched
#    for them raw and in base64;
#  - `test-account` explains success and each kind of failure in words and
#    fetches nothing;
#  - `poll --once` draws a progress bar on a terminal and never on a pipe.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v script >/dev/null 2>&1 || skip_all "script(1) is not installed"

SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
PW='CanaryPw-7f3a9Zq'
TOKEN='CanaryTok-ya29.b1c4Xw'

start_dovecot_oauth2 "$TESTDIR/pop" || bail_out "cannot start Dovecot"
command -v curl >/dev/null 2>&1 || skip_all "curl is not installed"
start_faketoken "$TESTDIR/idp" || bail_out "cannot start faketoken.py"
CSECRET='CanaryCS-q8Vz41Lm'
faketoken_client "{\"client_id\":\"o2app\",\"user\":\"o2user\",\"client_secret\":\"$CSECRET\"}" ||
	bail_out "cannot register the OAuth2 client"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
start_fakepop3 "$TESTDIR/fake" mailbox --user tok --token "$TOKEN" --messages 2 ||
	bail_out "cannot start fakepop3"
dovecot_add_user canary "$PW"
dovecot_add_user o2user 'o2-Unused-pw'
password_file "$TESTDIR/o2.secret" "$CSECRET"
password_file "$TESTDIR/pass" "$PW"
password_file "$TESTDIR/token" "$TOKEN"
{
	conf_base "$SPOOL"
	echo "metrics_file = \"$TESTDIR/popgate.prom\""
	conf_account canary server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user canary password_file "$TESTDIR/pass" \
		deliver_to "canary@corp.example"
	conf_account oauth server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
		auth xoauth2 user tok password_command "/bin/cat $TESTDIR/token" \
		deliver_to "oauth@corp.example"
	conf_account badca server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/other-ca.pem" user canary password_file "$TESTDIR/pass" \
		deliver_to "canary@corp.example"
	conf_account badpw server localhost port "$POP3_PORT" tls starttls \
		ca_file "$TESTDIR/pop/ca.pem" user canary password_file "$TESTDIR/wrong" \
		deliver_to "canary@corp.example"
	conf_account closed server 127.0.0.1 port "$(free_port)" tls implicit \
		user canary password_file "$TESTDIR/pass" deliver_to "canary@corp.example"
	cat <<EOF
account "o2" {
  server = "localhost"
  port = $POP3S_PORT
  ca_file = "$TESTDIR/pop/ca.pem"
  user = "o2user"
  auth = "xoauth2"
  deliver_to = "o2@corp.example"
  oauth2 {
    provider = "generic"
    client_id = "o2app"
    client_secret_file = "$TESTDIR/o2.secret"
    flow = "device"
    scope = "mail"
    token_endpoint = "$FAKETOKEN_URL/token"
    device_endpoint = "$FAKETOKEN_URL/devicecode"
    ca_file = "$FAKETOKEN_CA"
  }
}
EOF
} >"$CONF"
password_file "$TESTDIR/wrong" "not-$PW"
mail_gen --maildir "$(maildir_of canary)" --expected "$TESTDIR/exp" --count 30 --prefix c \
	--shapes simple || bail_out "mkmail failed"

# --- test-account ------------------------------------------------------
out=$("$POPGATE" -c "$CONF" -v test-account canary 2>>"$LOG")
is "$?" 0 "test-account: a working account exits 0"
like "$out" "capabilities:.*UIDL" "it shows the server's capabilities"
like "$out" "mailbox: +30 messages" "and the mailbox size"
is "$(maildir_count canary)" 30 "and fetches nothing"
is "$(count_files "$SPOOL/msg")" 0 "nothing in the spool"
out=$("$POPGATE" -c "$CONF" -v test-account badca 2>>"$LOG")
ok "[ $? -ne 0 ]" "test-account: an untrusted certificate fails"
like "$out" "FAILED at connect/TLS: .*certificate.*what it means: .*(issuer|CA|certificate)" \
	"and says the certificate check failed and why"
out=$("$POPGATE" -c "$CONF" -v test-account badpw 2>>"$LOG")
is "$?" 77 "test-account: a wrong password exits 77"
like "$out" "FAILED at login: .*what it means: the server refused" "and says the login was refused"
out=$("$POPGATE" -c "$CONF" -v test-account closed 2>>"$LOG")
ok "[ $? -ne 0 ]" "test-account: a closed port fails"
like "$out" "what it means: nothing listens on that port" "and says nothing listens there"

# --- progress bar: on a terminal only ----------------------------------
TERMOUT=$TESTDIR/tty.out
script -qec "$POPGATE -c $CONF poll --once canary" "$TERMOUT" >/dev/null 2>&1
is "$?" 0 "poll --once on a terminal exits 0"
like "$(tr '\r' '\n' <"$TERMOUT")" "canary \\[#+\\] 30/30 messages" \
	"a terminal shows the progress bar (messages and bytes)"
mail_gen --maildir "$(maildir_of canary)" --expected "$TESTDIR/exp" --count 5 --prefix p \
	--shapes simple
pg "$TESTDIR/pipe.log" -c "$CONF" poll --once canary | cat
ok "! grep -q -e '\\[#' -e 'messages [0-9.]* MiB' $TESTDIR/pipe.log" "a pipe gets no progress bar"
like "$(cat "$TESTDIR/pipe.log")" "account=canary status=ok" "only the log lines"

# --- the canary secrets at debug level ---------------------------------
pg "$LOG" -c "$CONF" -v poll --once canary oauth
pg "$LOG" -c "$CONF" -v relay --once
is "$(spool_sql "$SPOOL" "select count(*) from messages where account = 'oauth'")" 2 \
	"the XOAUTH2 account logged in with the canary token and fetched"
# OAuth2 built in: authorize, a login, a rotation, a login (all at debug)
TS=$SPOOL/oauth2/o2.tokens
pg "$LOG" -c "$CONF" -v authorize o2 >>"$TESTDIR/authorize.out"
is "$PG_RC" 0 "the OAuth2 account was authorized"
O2TOKENS=$(grep -E '^(refresh|access)_token=' "$TS" | cut -d= -f2- | tr '\n' ' ')
mail_gen --maildir "$(maildir_of o2user)" --expected "$TESTDIR/exp" --count 1 --prefix o \
	--shapes simple >/dev/null || bail_out "mkmail failed"
pg "$LOG" -c "$CONF" -v poll --once o2
sed -i "s/^access_expires=.*/access_expires=1/" "$TS"
pg "$LOG" -c "$CONF" -v poll --once o2
is "$PG_RC" 0 "the OAuth2 account refreshed (rotation) and logged in again"
O2TOKENS="$O2TOKENS $(grep -E '^(refresh|access)_token=' "$TS" | cut -d= -f2- | tr '\n' ' ')"
is "$(echo "$O2TOKENS" | wc -w)" 4 "four OAuth2 tokens to look for (two refresh, two access)"
is "$(spool_sql "$SPOOL" "select count(*) from messages where account = 'o2'")" 1 \
	"the OAuth2 account fetched its message"
pg "$LOG" -c "$CONF" -v relay --once
"$POPGATE" -c "$CONF" -v status --json >"$TESTDIR/status.json" 2>>"$LOG"
"$POPGATE" -c "$CONF" -v status >"$TESTDIR/status.txt" 2>>"$LOG"
O2TOKENS="$O2TOKENS $CSECRET" run_checks "$PYTHON" - "$PW" "$TOKEN" "$LOG" "$TESTDIR/pipe.log" "$TERMOUT" \
	"$TESTDIR/authorize.out" "$TESTDIR/status.txt" \
	"$TESTDIR/status.json" "$TESTDIR/popgate.prom" "$SPOOL" <<'EOF'
import base64, os, sys
pw, tok = sys.argv[1].encode(), sys.argv[2].encode()
paths = []
for p in sys.argv[3:]:
    if os.path.isdir(p):
        for d, _, fs in os.walk(p):
            # the token store is where tokens belong (and only there)
            paths += [os.path.join(d, f) for f in fs
                      if not (os.path.basename(d) == "oauth2" and f.endswith(".tokens"))]
    elif os.path.exists(p):
        paths.append(p)
def forms(secret, extra):
    out = {"raw": secret}
    # the secret at each alignment inside a longer base64 string
    for pad in range(3):
        enc = base64.b64encode(b"x" * pad + secret + b"xxx")
        start = (pad * 4 + 2) // 3 + 1
        core = enc[start:start + (len(secret) * 4) // 3 - 2]
        out["base64@%d" % pad] = core
    for name, payload in extra.items():
        out[name] = base64.b64encode(payload)
    return out
checks = {"password": forms(pw, {"AUTH PLAIN": b"\0canary\0" + pw}),
          "token": forms(tok, {"XOAUTH2": b"user=tok\x01auth=Bearer " + tok + b"\x01\x01"})}
for i, t in enumerate(os.environ["O2TOKENS"].split()):
    t = t.encode()
    checks["oauth2 secret %d" % i] = forms(t, {"XOAUTH2": b"user=o2user\x01auth=Bearer " + t +
                                                b"\x01\x01"})
print("# searched %d files" % len(paths))
for what, fs in checks.items():
    for form, needle in fs.items():
        hits = [p for p in paths if needle in open(p, "rb").read()]
        print("CHECK %d the %s (%s) appears in no log, spool file or index %s" %
              (1 if hits else 0, what, form, hits))
EOF
done_testing
