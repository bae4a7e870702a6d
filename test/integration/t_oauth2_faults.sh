#!/bin/bash
# t_oauth2_faults.sh - OAuth2 at run time when things go wrong (issue 14),
# against Dovecot's oauth2 passdb and test/fake/faketoken.py:
#  - each fault of the token endpoint is named in the log with its class,
#    the endpoint and the HTTP status, and gives the right exit code:
#    429/503 with Retry-After, 500, HTML, garbage, a 200 without
#    access_token, a closed connection, a hanging reply (timeout), a TLS
#    host-name mismatch: temporary (75); invalid_client, unauthorized_client,
#    invalid_scope: configuration (78); a slow reply within the timeout works;
#  - a login refused with a token popgate thought valid is refreshed once and
#    retried once, against Dovecot and the Microsoft (bare -ERR) and Google
#    (JSON challenge, then -ERR) shapes of fakepop3.py; a refreshed token
#    refused again fails with no third try;
#  - two processes needing a refresh at once make one refresh request (the
#    token store's lock), and both log in;
#  - a rotated refresh token survives a kill -9 between the token reply and
#    the login (the old one is revoked by the IdP, so a later refresh works
#    only if the new one was stored first);
#  - invalid_grant puts the account in state reauthorize: exit 77, the log
#    says the command to run, status exits 1 and says REAUTHORIZE, the
#    metrics file shows it, and further polls make no request to the
#    endpoint (counted) until popgate authorize, after which mail flows.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v curl >/dev/null 2>&1 || skip_all "curl is not installed"

U=bob@corp.example
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
start_dovecot_oauth2 "$TESTDIR/pop" || bail_out "cannot start Dovecot with the oauth2 passdb"
start_faketoken "$TESTDIR/idp" --set '{"provider":"microsoft","device_polls":0}' ||
	bail_out "cannot start faketoken.py"
dovecot_add_user "$U" 'bob-Pw-9'
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
faketoken_client "{\"client_id\":\"dev\",\"user\":\"$U\"}" || bail_out "cannot register the client"
EP=$FAKETOKEN_URL/contoso.example/oauth2/v2.0
TF=$SPOOL/oauth2/dev.tokens

# write_conf FILE PORT TOKEN_ENDPOINT - account dev (device flow, 3 s timeouts)
write_conf() {
	{
		conf_base "$SPOOL"
		echo "metrics_file = \"$TESTDIR/metrics.prom\""
		cat <<EOF
account "dev" {
  server = "localhost"
  port = $2
  tls = "implicit"
  ca_file = "$TESTDIR/pop/ca.pem"
  user = "$U"
  auth = "xoauth2"
  deliver_to = "$U"
  timeout = 3
  connect_timeout = 3
  oauth2 {
    provider = "microsoft"
    tenant = "contoso.example"
    client_id = "dev"
    flow = "device"
    token_endpoint = "$3"
    device_endpoint = "$EP/devicecode"
    ca_file = "$FAKETOKEN_CA"
  }
}
EOF
	} >"$1"
}
write_conf "$CONF" "$POP3S_PORT" "$EP/token"

n=0
newmail() {
	mail_gen --maildir "$(maildir_of "$U")" --expected "$TESTDIR/exp" --count 1 \
		--prefix "m$n" >/dev/null || bail_out "mkmail failed"
	n=$((n + 1))
}
# expire - the stored access token expires within 5 minutes: next login refreshes
expire() {
	sed -i -e "s/^access_expires=.*/access_expires=$(($(date +%s) + 100))/" \
		-e '/^retry_until=/d' "$TF"
}
refreshes() { faketoken_stats grants.refresh_token; }
lastlog() { grep "$1" "$LOG" | tail -1; }

pg "$LOG" -c "$CONF" authorize dev >/dev/null
is "$PG_RC" 0 "authorize (device flow)" || note "$LOG"
newmail
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 0 "the first poll logs in with the stored token" || note "$LOG"

# ---- faults of the token endpoint -----------------------------------------------------
# fault JSON RC CLASS HTTP REGEX DESC - one fault on the next refresh
fault() {
	local r0
	expire
	r0=$(faketoken_stats requests.token)
	faketoken_fault "$1" || bail_out "cannot queue fault $1"
	pg "$LOG" -c "$CONF" poll --once dev
	is "$PG_RC" "$2" "$6: exit $2"
	like "$(lastlog 'oauth2=refresh_token')" "account=dev oauth2=refresh_token endpoint=$EP/token http=$4 status=failed class=$3.*$5" \
		"$6: logged with the endpoint, HTTP status $4 and class $3"
	is "$(faketoken_stats requests.token)" $((r0 + 1)) "$6: one request"
}
fault '{"kind":"503","retry_after":7}' 75 temporary 503 ' retry_after=7 reason=.*HTTP 503' "503 with Retry-After"
fault '{"kind":"429","retry_after":3}' 75 temporary 429 ' retry_after=3 reason=.*HTTP 429' "429 with Retry-After"
# Retry-After is honoured: no request to the endpoint before it has passed,
# by a manual poll or the daemon's schedule (the account's next poll)
ok "grep -q '^retry_until=' '$TF'" "Retry-After: the deadline is kept in the token store"
faketoken_fault '{"kind":"429","retry_after":600}' || bail_out "cannot queue fault 429"
expire
r0=$(faketoken_stats requests.token)
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 75 "Retry-After 600: exit 75"
is "$(faketoken_stats requests.token)" $((r0 + 1)) "Retry-After 600: one request"
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 75 "Retry-After 600: the next poll exits 75 too"
is "$(faketoken_stats requests.token)" $((r0 + 1)) "Retry-After 600: the next poll makes no request"
like "$(lastlog 'account=dev status=failed')" "the identity provider asked for no request before [0-9T:-]*Z \\(Retry-After, [0-9]* s from now\\)" \
	"Retry-After 600: the log says until when"
nb=$(spool_sql "$SPOOL" "select not_before - strftime('%s','now') from accounts where name='dev'")
ok "[ '${nb:-0}' -ge 500 ]" "Retry-After 600: the account's next scheduled poll waits for it (${nb}s)"
fault '{"kind":"server_error"}' 75 temporary 500 'HTTP 500 error=server_error' "500 server_error"
fault '{"kind":"html"}' 75 temporary 200 'HTTP 200 with a body that is not a JSON object' "an HTML page"
fault '{"kind":"garbage"}' 75 temporary 200 'HTTP 200 with a body that is not a JSON object' "garbage"
fault '{"kind":"no_access_token"}' 75 temporary 200 "HTTP 200 with no 'access_token'" "a 200 without access_token"
fault '{"kind":"close"}' 75 temporary 0 'Empty reply from server' "a closed connection"
fault '{"kind":"hang","delay":20}' 75 temporary 0 'timed out' "a hanging reply (3 s timeout)"
fault '{"kind":"invalid_client"}' 78 config 401 'HTTP 401 error=invalid_client \(AADSTS7000215' "invalid_client"
fault '{"kind":"unauthorized_client"}' 78 config 400 'error=unauthorized_client' "unauthorized_client"
fault '{"kind":"invalid_scope"}' 78 config 400 'error=invalid_scope' "invalid_scope"
# a slow reply within the timeout is just slow
expire
faketoken_fault '{"kind":"slow","delay":1}'
newmail
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 0 "a slow reply within the timeout: the poll works"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 2 "a slow reply: the mail was fetched"

# a TLS failure: the IdP's certificate names localhost, not 127.0.0.1
write_conf "$TESTDIR/tls.conf" "$POP3S_PORT" "https://127.0.0.1:$FAKETOKEN_PORT/contoso.example/oauth2/v2.0/token"
expire
r0=$(faketoken_stats requests.token)
pg "$LOG" -c "$TESTDIR/tls.conf" poll --once dev
is "$PG_RC" 75 "TLS host name mismatch: temporary"
like "$(lastlog 'oauth2=refresh_token')" "class=temporary reason=.*TLS: .*(127\.0\.0\.1|certificate)" "TLS host name mismatch: named"
is "$(faketoken_stats requests.token)" "$r0" "TLS host name mismatch: no request reached the endpoint"

# ---- a token the server refuses ----------------------------------------------------
r0=$(refreshes)
sed -i "s/^access_token=.*/access_token=not.a.valid.jwt/; s/^access_expires=.*/access_expires=$(($(date +%s) + 3000))/" "$TF"
newmail
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 0 "a refused token popgate thought valid: refreshed and retried" || note "$LOG"
like "$(lastlog 'status=token-refused')" 'account=dev status=token-refused action="refresh and retry once"' "a refused token: logged"
is "$(refreshes)" $((r0 + 1)) "a refused token: one refresh"
is "$(spool_sql "$SPOOL" "select count(*) from messages")" 3 "a refused token: the mail was fetched"
sed -i "s/^access_token=.*/access_token=not.a.valid.jwt/" "$TF"
faketoken_fault '{"kind":"bad_token","variant":"wrong_key","grant":"refresh_token"}'
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 77 "the refreshed token refused too: the login fails (77)"
is "$(refreshes)" $((r0 + 2)) "the refreshed token refused too: one refresh, no third try"

# ---- the providers' shapes of a refused token (fakepop3.py) -----------------------------
# Microsoft: two-step XOAUTH2 only, a bare -ERR; Google: a "+ base64(JSON)"
# challenge, then -ERR.  popgate refreshes once and logs in on a new connection.
for shape in ms-xoauth2:xoauth2 google-xoauth2:xoauth2 google-xoauth2:oauthbearer; do
	mode=${shape%%:*} mech=${shape#*:} name=${shape//:/-}
	start_fakepop3 "$TESTDIR/fp-$name" "$mode" --jwt-key-file "$OAUTH2_KEYFILE" --user "$U" ||
		bail_out "cannot start fakepop3 $mode"
	sed -e "s/^  port = .*/  port = $FAKEPOP3_PORT/" -e 's/^  tls = .*/  tls = "none"\n  allow_plaintext = true/' \
		-e "s/^  auth = .*/  auth = \"$mech\"/" -e "s/^account \"dev\"/account \"$name\"/" \
		-e 's/^  server = .*/  server = "127.0.0.1"/' "$CONF" >"$TESTDIR/$name.conf"
	pg "$LOG" -c "$TESTDIR/$name.conf" authorize "$name" >/dev/null || bail_out "cannot authorize $name"
	sed -i -e "s/^access_token=.*/access_token=not.a.valid.jwt/" \
		-e "s/^access_expires=.*/access_expires=$(($(date +%s) + 3000))/" "$SPOOL/oauth2/$name.tokens"
	r0=$(refreshes)
	pg "$LOG" -c "$TESTDIR/$name.conf" poll --once "$name"
	is "$PG_RC" 0 "$mode $mech: a refused token is refreshed and the login retried" || note "$LOG"
	is "$(refreshes)" $((r0 + 1)) "$mode $mech: one refresh"
	is "$(grep -c 'fakepop3: login refused' "$TESTDIR/fp-$name/fakepop3.log"):$(grep -c 'fakepop3: login ok' "$TESTDIR/fp-$name/fakepop3.log")" "1:1" \
		"$mode $mech: one refused login, then one that worked"
	ok "! grep -aq 'AUTH [A-Z2]* [A-Za-z0-9+/=]' '$FAKEPOP3_REC'" "$mode $mech: AUTH in two steps (no initial response)"
	is "$(spool_sql "$SPOOL" "select count(*) from messages where account='$name'")" 2 "$mode $mech: the mail was fetched"
done

# ---- two processes, one refresh ------------------------------------------------------
expire
r0=$(refreshes)
faketoken_fault '{"kind":"slow","delay":2,"grant":"refresh_token"}'
pg "$LOG" -c "$CONF" test-account dev >"$TESTDIR/ta.out" &
tapid=$!
pg "$LOG" -c "$CONF" poll --once dev
prc=$PG_RC
wait "$tapid"
tarc=$?
is "$prc:$tarc" "0:0" "two processes needing a refresh at once both log in" || note "$TESTDIR/ta.out"
is "$(refreshes)" $((r0 + 1)) "two processes needing a refresh at once: one refresh request"

# ---- kill -9 between the token reply and the login --------------------------------------
# a POP3 port that accepts and never answers: the poll hangs after the refresh
"$PYTHON" -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
conns = []
while True:
    conns.append(s.accept()[0])
' "$TESTDIR/hang.port" &
hangpid=$!
for _ in $(seq 1 50); do [ -s "$TESTDIR/hang.port" ] && break; sleep 0.1; done
write_conf "$TESTDIR/hang.conf" "$(cat "$TESTDIR/hang.port")" "$EP/token"
expire
r0=$(refreshes)
old_rt=$(grep '^refresh_token=' "$TF")
"$POPGATE" -c "$TESTDIR/hang.conf" poll --once dev 2>>"$LOG" &
ppid=$!
for _ in $(seq 1 100); do [ "$(grep '^refresh_token=' "$TF")" != "$old_rt" ] && break; sleep 0.1; done
kill -KILL "$ppid"
wait "$ppid" 2>/dev/null
kill "$hangpid"; wait "$hangpid" 2>/dev/null
ok "[ '$(grep '^refresh_token=' "$TF")' != '$old_rt' ]" "kill -9: the rotated refresh token was stored before the login"
expire
newmail
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 0 "kill -9 after the token reply: the next poll refreshes with the stored token and fetches" || note "$LOG"
is "$(refreshes)" $((r0 + 2)) "kill -9: two refreshes, both granted"
is "$(faketoken_stats errors.invalid_grant)" 0 "kill -9: no invalid_grant (the revoked token was never reused)"

# ---- invalid_grant: reauthorize ---------------------------------------------------------
expire
faketoken_fault '{"kind":"invalid_grant"}'
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 77 "invalid_grant: poll exits 77"
like "$(lastlog 'status=reauthorize')" 'account=dev status=reauthorize action="run: popgate authorize dev" reason=".*error=invalid_grant' \
	"invalid_grant: the log says the command to run"
ok "grep -q '^state=reauthorize' '$TF'" "invalid_grant: the state is stored"
ok "! grep -q '^access_token=' '$TF'" "invalid_grant: no access token kept"
r0=$(faketoken_stats requests.token)
newmail
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 77 "reauthorize: the next poll exits 77 too"
pg "$LOG" -c "$CONF" run --once
is "$PG_RC" 77 "reauthorize: run --once exits 77"
is "$(faketoken_stats requests.token)" "$r0" "reauthorize: no more requests to the token endpoint"
like "$(lastlog 'account=dev status=failed')" "must be authorized again .*run popgate authorize dev" "reauthorize: each poll says what to run"
pg "$LOG" -c "$CONF" status >"$TESTDIR/status.out"
is "$PG_RC" 1 "reauthorize: status exits 1"
like "$(cat "$TESTDIR/status.out")" "oauth2: REAUTHORIZE: the grant was refused; run popgate authorize dev" "reauthorize: status says so"
pg "$LOG" -c "$CONF" status --json >"$TESTDIR/status.json"
like "$(cat "$TESTDIR/status.json")" '"oauth2": \{"state": "reauthorize"' "reauthorize: status --json says so"
like "$(cat "$TESTDIR/status.json")" '\{"what": "account-reauthorize", "account": "dev", "reason": "the OAuth2 grant was refused: run popgate authorize dev"' "reauthorize: status --json lists it among the problems"
like "$(cat "$TESTDIR/status.json")" '"healthy": false' "reauthorize: status --json is not healthy"
like "$(cat "$TESTDIR/metrics.prom")" 'popgate_account_oauth2_reauthorize\{account="dev"\} 1' "reauthorize: the metrics show it"
pg "$LOG" -c "$CONF" authorize dev >/dev/null
is "$PG_RC" 0 "reauthorize: popgate authorize dev"
ok "grep -q '^state=valid' '$TF'" "authorize: the state is valid again"
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 0 "after authorize the account polls again" || note "$LOG"
is "$(spool_sql "$SPOOL" "select count(*) from messages where account='dev'")" "$n" "after authorize: every message is in the spool"
pg "$LOG" -c "$CONF" status >/dev/null
is "$PG_RC" 0 "after authorize: status is healthy"

done_testing
