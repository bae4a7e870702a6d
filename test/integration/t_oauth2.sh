#!/bin/bash
# t_oauth2.sh - OAuth2 built in (issue 14), against Dovecot's oauth2 passdb
# and the fake identity provider (test/fake/faketoken.py):
#  - popgate authorize with each flow: device (prints the URL, the code and
#    its validity, polls through authorization_pending), browser (the URL
#    followed with curl, which the IdP redirects to popgate's loopback
#    listener; PKCE and state checked), client_credentials with a client
#    secret and with a certificate (private_key_jwt), and
#    --refresh-token-file; the token store is 0600 in a 0700 directory;
#  - poll --once then fetches the mail with XOAUTH2 and OAUTHBEARER over
#    implicit TLS and STLS, refreshing the access token when it expires
#    within 5 minutes (and not otherwise), and the message arrives at the
#    SMTP sink;
#  - status and status --json show the token state, never a token.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate
command -v curl >/dev/null 2>&1 || skip_all "curl is not installed"

U=alice@corp.example
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
start_dovecot_oauth2 "$TESTDIR/pop" || bail_out "cannot start Dovecot with the oauth2 passdb"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
start_faketoken "$TESTDIR/idp" --set '{"provider":"microsoft"}' || bail_out "cannot start faketoken.py"
dovecot_add_user "$U" 'alice-Pw-9'
EP=$FAKETOKEN_URL/contoso.example/oauth2/v2.0

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TESTDIR/app.key" -out "$TESTDIR/app.pem" \
	-days 2 -subj "/CN=popgate test app" >/dev/null 2>&1 || bail_out "openssl req failed"
chmod 600 "$TESTDIR/app.key"
password_file "$TESTDIR/cc.secret" 'cc-S3cret'
password_file "$TESTDIR/web.secret" 'web-S3cret'
faketoken_client "{\"client_id\":\"dev\",\"user\":\"$U\",\"grants\":[\"device_code\",\"refresh_token\"]}" &&
	faketoken_client "{\"client_id\":\"web\",\"user\":\"$U\",\"client_secret\":\"web-S3cret\"}" &&
	faketoken_client "{\"client_id\":\"cc\",\"user\":\"$U\",\"client_secret\":\"cc-S3cret\",\"grants\":[\"client_credentials\"]}" &&
	faketoken_client "{\"client_id\":\"app\",\"user\":\"$U\",\"certificate\":\"$TESTDIR/app.pem\",\"grants\":[\"client_credentials\"]}" ||
	bail_out "cannot register the clients"

# account NAME TLS AUTH CLIENT FLOW [oauth2 lines] - append an account
account() {
	local name=$1 tls=$2 auth=$3 client=$4 flow=$5 port=$POP3_PORT
	[ "$tls" = implicit ] && port=$POP3S_PORT
	cat >>"$CONF" <<EOF
account "$name" {
  server = "localhost"
  port = $port
  tls = "$tls"
  ca_file = "$TESTDIR/pop/ca.pem"
  user = "$U"
  auth = "$auth"
  deliver_to = "$U"
  oauth2 {
    provider = "microsoft"
    tenant = "contoso.example"
    client_id = "$client"
    flow = "$flow"
    token_endpoint = "$EP/token"
    device_endpoint = "$EP/devicecode"
    authorize_endpoint = "$EP/authorize"
    ca_file = "$FAKETOKEN_CA"
$6
  }
}
EOF
}

conf_base "$SPOOL" >"$CONF"
account dev implicit xoauth2 dev device
account dev-stls starttls oauthbearer dev device
account web starttls xoauth2 web browser "    client_secret_file = \"$TESTDIR/web.secret\""
account cc implicit oauthbearer cc client_credentials "    client_secret_file = \"$TESTDIR/cc.secret\""
account app starttls xoauth2 app client_credentials "    client_certificate_file = \"$TESTDIR/app.pem\"
    client_key_file = \"$TESTDIR/app.key\""
account imp implicit oauthbearer dev device
pg "$LOG" -c "$CONF" check-config >/dev/null
is "$PG_RC" 0 "check-config accepts the oauth2 accounts" || note "$LOG"

# fetch NAME - one new message in the mailbox, poll --once NAME; the message
# is in the spool afterwards
n=0
fetch() {
	mail_gen --maildir "$(maildir_of "$U")" --expected "$TESTDIR/exp" --count 1 \
		--prefix "$1$n" >/dev/null || bail_out "mkmail failed"
	n=$((n + 1))
	pg "$LOG" -c "$CONF" poll --once "$1"
	is "$PG_RC" 0 "$1: poll --once logs in with the OAuth2 token and fetches" || note "$LOG" 30
	is "$(spool_sql "$SPOOL" "select count(*) from messages where account='$1'")" "$2" \
		"$1: the message is in the spool"
}

# ---- device flow --------------------------------------------------------------
pg "$LOG" -c "$CONF" poll --once dev
is "$PG_RC" 77 "dev: before authorize, poll exits 77"
like "$(grep 'account=dev status=failed' "$LOG" | tail -1)" "class=auth.*not authorized yet: run popgate authorize dev" "dev: the log says the command to run"
before=$(faketoken_stats requests.token)
is "$before" 0 "dev: no token request before authorize"
pg "$LOG" -c "$CONF" authorize dev >"$TESTDIR/dev.out"
is "$PG_RC" 0 "device flow: authorize exits 0" || { note "$LOG"; note "$TESTDIR/dev.out"; }
out=$(cat "$TESTDIR/dev.out")
like "$out" "open"$'\n'"  https://localhost:$FAKETOKEN_PORT/[^ ]*"$'\n'"and enter the code"$'\n'"  [A-Z0-9-]+" \
	"device flow: the verification URL and the user code are printed"
like "$out" "valid for 15 minutes" "device flow: and how long they are valid"
like "$out" "authorized; access token valid until" "device flow: the outcome is printed"
is "$(faketoken_stats grants.device_code)" 3 "device flow: two authorization_pending polls, then the tokens"
tf=$SPOOL/oauth2/dev.tokens
is "$(stat -c %a "$tf" 2>/dev/null)" 600 "token store: the file is mode 0600"
is "$(stat -c %a "$SPOOL/oauth2")" 700 "token store: the directory is mode 0700"
ok "grep -q '^refresh_token=.' '$tf' && grep -q '^access_token=.' '$tf'" "token store: refresh and access token stored"
fetch dev 1
is "$(faketoken_stats grants.refresh_token)" 0 "dev: a fresh access token is used without a refresh"

# the same grant over STLS with OAUTHBEARER: its own account, its own token
cp "$tf" "$SPOOL/oauth2/dev-stls.tokens"
fetch dev-stls 1

# an access token that expires within 5 minutes is refreshed first (rotation:
# the new refresh token is stored)
old_rt=$(grep '^refresh_token=' "$tf")
sed -i "s/^access_expires=.*/access_expires=$(($(date +%s) + 200))/" "$tf"
fetch dev 2
is "$(faketoken_stats grants.refresh_token)" 1 "dev: expiring within 5 minutes: one refresh"
new_rt=$(grep '^refresh_token=' "$tf")
ok "[ -n '$new_rt' ] && [ '$old_rt' != '$new_rt' ]" "dev: the rotated refresh token is stored"

# ---- browser flow ----------------------------------------------------------------
: >"$TESTDIR/web.out"
timeout 60 "$POPGATE" -c "$CONF" authorize web >"$TESTDIR/web.out" 2>>"$LOG" &
apid=$!
for _ in $(seq 1 100); do grep -q '^  https://' "$TESTDIR/web.out" && break; sleep 0.1; done
url=$(grep -m1 '^  https://' "$TESTDIR/web.out" | tr -d ' ')
like "$url" "^$EP/authorize\?response_type=code&client_id=web&redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A[0-9]+&.*code_challenge_method=S256" \
	"browser flow: the URL to open names the loopback redirect and PKCE S256"
port=$(sed -n 's/.*waits on 127.0.0.1:\([0-9]*\).*/\1/p' "$TESTDIR/web.out")
like "$(cat "$TESTDIR/web.out")" "ssh -L $port:127.0.0.1:$port gw.test" "browser flow: the ssh -L line for a headless machine"
# a request to another path does not end the wait
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/favicon.ico")" 404 \
	"browser flow: another path gets 404 and the listener keeps waiting"
page=$(curl -sS -L --cacert "$FAKETOKEN_CA" "$url")
like "$page" "authorization received" "browser flow: the browser gets a short page saying what happened"
wait "$apid"
is "$?" 0 "browser flow: authorize exits 0" || { note "$LOG"; note "$TESTDIR/web.out"; }
is "$(faketoken_stats grants.authorization_code)" 1 "browser flow: the code was exchanged once (PKCE verified by the IdP)"
fetch web 1

# a redirect with another state is refused and no code is exchanged
timeout 60 "$POPGATE" -c "$CONF" authorize web >"$TESTDIR/web2.out" 2>>"$LOG" &
apid=$!
for _ in $(seq 1 100); do grep -q 'waits on' "$TESTDIR/web2.out" && break; sleep 0.1; done
port=$(sed -n 's/.*waits on 127.0.0.1:\([0-9]*\).*/\1/p' "$TESTDIR/web2.out")
page=$(curl -sS "http://127.0.0.1:$port/?code=stolen&state=forged")
like "$page" "authorization failed" "browser flow: a forged state gets a failure page"
wait "$apid"
is "$?" 77 "browser flow: a forged state: authorize exits 77"
like "$(tail -3 "$LOG")" "state does not match" "browser flow: the error names the state"
is "$(faketoken_stats grants.authorization_code)" 1 "browser flow: no code exchange for a forged state"

# ---- client credentials ---------------------------------------------------------
fetch cc 1
is "$(faketoken_stats grants.client_credentials)" 1 "client secret: one client_credentials request, no authorize needed"
is "$(faketoken_stats last.token._auth)" '"post"' "client secret: sent in the form"
fetch app 1
is "$(faketoken_stats grants.client_credentials)" 2 "certificate: a private_key_jwt client_credentials request"
is "$(faketoken_stats last.token._auth)" '"private_key_jwt"' "certificate: authenticated by the signed assertion"
pg "$LOG" -c "$CONF" authorize app >"$TESTDIR/app.out"
is "$PG_RC" 0 "client_credentials: authorize tests the credentials"
ok "! grep -q '^refresh_token=' '$SPOOL/oauth2/app.tokens'" "client_credentials: no refresh token stored"

# ---- import a refresh token -------------------------------------------------------
grep '^refresh_token=' "$tf" | cut -d= -f2- >"$TESTDIR/imported"
chmod 600 "$TESTDIR/imported"
rm -f "$tf"
r0=$(faketoken_stats grants.refresh_token)
pg "$LOG" -c "$CONF" authorize --refresh-token-file "$TESTDIR/imported" imp >"$TESTDIR/imp.out"
is "$PG_RC" 0 "--refresh-token-file: imported" || note "$LOG"
is "$(faketoken_stats grants.refresh_token)" $((r0 + 1)) "--refresh-token-file: checked by one refresh"
fetch imp 1
echo garbage-token >"$TESTDIR/imported"
pg "$LOG" -c "$CONF" authorize --refresh-token-file "$TESTDIR/imported" imp >/dev/null
is "$PG_RC" 77 "--refresh-token-file: a refused token is not stored (exit 77)"
like "$(tail -3 "$LOG")" "error=invalid_grant" "--refresh-token-file: the IdP's error is named"

# ---- the mail arrives ---------------------------------------------------------------
pg "$LOG" -c "$CONF" relay --once
is "$PG_RC" 0 "relay --once sends what the OAuth2 accounts fetched"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state='sent'")" 7 "every fetched message was relayed"

# ---- status ------------------------------------------------------------------------
pg "$LOG" -c "$CONF" status >"$TESTDIR/status.out"
like "$(grep -A1 '^imp ' "$TESTDIR/status.out" | tail -1)" "oauth2: token valid until [0-9-]+ [0-9:]+, refresh token age [0-9]+s" \
	"status: the token state per account (valid until, refresh token age)"
pg "$LOG" -c "$CONF" status --json >"$TESTDIR/status.json"
is "$("$PYTHON" -c 'import json,sys; a={x["name"]:x for x in json.load(open(sys.argv[1]))["accounts"]}; print(a["imp"]["oauth2"]["state"], a["app"]["oauth2"]["refresh_token_issued"], a["imp"]["oauth2"]["access_token_expires"] > 0)' "$TESTDIR/status.json")" "valid 0 True" \
	"status --json: the token state per account"
for f in "$TESTDIR/status.out" "$TESTDIR/status.json" "$LOG"; do
	ok "! grep -q \"$(grep '^access_token=' "$SPOOL/oauth2/imp.tokens" | cut -d= -f2- | cut -c1-40)\" '$f'" "no access token in $(basename "$f")"
done

done_testing
