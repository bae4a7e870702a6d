#!/bin/bash
# t_oauth2_infra.sh - the OAuth2 test infrastructure (issue 14) proven with
# no OAuth2 code in popgate: the fake identity provider (test/fake/faketoken.py)
# and Dovecot's oauth2 passdb (start_dovecot_oauth2) agree.
#  - tokens are obtained with curl --cacert through each grant: client
#    credentials (secret in the form, in HTTP Basic, and private_key_jwt with
#    an RS256 assertion made here with openssl), the device flow (two polls
#    pending, then tokens) and authorize + code exchange with PKCE S256;
#    refresh with rotation (the old refresh token is then invalid_grant) and
#    without (no new one; the old one keeps working); a refresh token
#    survives a kill -9 and restart of the IdP;
#  - popgate (today's password_command printing the token) drains Dovecot
#    with XOAUTH2 and OAUTHBEARER over implicit TLS and STLS; every message
#    arrives at smtp-sink byte for byte; a password user still logs in;
#  - tokens Dovecot refuses (expired, wrong key, wrong user, no scope, wrong
#    issuer) fail the login (exit 77) and Dovecot's log says why;
#  - fakepop3.py's Microsoft and Google shapes (ms-xoauth2, google-xoauth2)
#    log popgate in with the IdP's tokens and refuse bad ones the providers'
#    way; the one-line XOAUTH2 form closes a Microsoft connection;
#  - /_stats counts requests per endpoint and grant, and faults answer as
#    documented (provider error shapes, 429/503 + Retry-After, close, hang,
#    HTML, garbage, no access_token, grant filters, counts).
# It is also the reference for writing OAuth2 tests against these fakes.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
# what this proves is the fakes and Dovecot's oauth2 passdb; popgate's own
# OAuth2 code runs under the sanitizers in t_oauth2.sh and t_oauth2_faults.sh
if nm "$POPGATE" 2>/dev/null | grep -q __asan_init; then
	skip_all "sanitizer build: the test infrastructure was proven in the normal build"
fi
require_popgate
command -v curl >/dev/null 2>&1 || skip_all "curl is not installed"

U=alice@corp.example
SPOOL=$TESTDIR/spool
CONF=$TESTDIR/popgate.conf
LOG=$TESTDIR/popgate.log
start_dovecot_oauth2 "$TESTDIR/pop" || bail_out "cannot start Dovecot with the oauth2 passdb"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
start_faketoken "$TESTDIR/idp" || bail_out "cannot start faketoken.py"
dovecot_add_user "$U" 'alice-Pw-9'
password_file "$TESTDIR/pass" 'alice-Pw-9'
conf_base "$SPOOL" >"$CONF"

# ---- helpers --------------------------------------------------------------
idp() { curl -sS --cacert "$FAKETOKEN_CA" "$@"; }
# json FIELD... - fields of the JSON object on stdin, space separated (""
# when absent, "<not json>" when stdin is not a JSON object).  Bash reads
# faketoken.py's flat json.dumps output itself (no escapes: fast); anything
# with a backslash goes to Python.
json() {
	local in k v out=() re
	in=$(tr -d '\0')
	if [[ $in == *\\* ]]; then
		"$PYTHON" -c 'import json,sys
try:
    o = json.loads(sys.argv[1])
except ValueError:
    o = None
out = []
for k in sys.argv[2:]:
    v = "<not json>" if not isinstance(o, dict) else o.get(k, "")
    out.append(v if isinstance(v, str) else json.dumps(v))
print(" ".join(out))' "$in" "$@"
		return
	fi
	for k in "$@"; do
		re="[{,] *\"$k\": *(\"[^\"]*\"|\\[[^]]*\\]|[^,}]*)"
		if [[ $in != "{"*"}" ]]; then
			v="<not json>"
		elif [[ $in =~ $re ]]; then
			v=${BASH_REMATCH[1]}
			[[ $v == \"*\" ]] && v=${v:1:${#v}-2}
		else
			v=
		fi
		out+=("$v")
	done
	printf '%s\n' "${out[*]}"
}
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
# jwt_claim TOKEN CLAIM - a claim of a JWT's body
jwt_claim() {
	"$PYTHON" -c 'import base64,json,sys
b = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4))).get(sys.argv[2], ""))' "$1" "$2"
}
# drain NAME TLS AUTH TOKEN - an account NAME reading U's mailbox with AUTH
# and the token from password_command; puts 2 new messages in the Maildir,
# then poll --once NAME and relay --once
drain() {
	local name=$1 tls=$2 auth=$3 port=$POP3_PORT
	[ "$tls" = implicit ] && port=$POP3S_PORT
	printf '%s\n' "$4" >"$TESTDIR/token.$name"
	conf_account "$name" server localhost port "$port" tls "$tls" \
		ca_file "$TESTDIR/pop/ca.pem" user "$U" auth "$auth" \
		password_command "/bin/cat $TESTDIR/token.$name" deliver_to "$U" >>"$CONF"
	mail_gen --maildir "$(maildir_of "$U")" --expected "$TESTDIR/exp" --count 2 \
		--prefix "$name" >/dev/null || bail_out "mkmail failed"
	pg "$LOG" -c "$CONF" poll --once "$name" && pg "$LOG" -c "$CONF" relay --once
}

# ---- clients ----------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TESTDIR/app.key" -out "$TESTDIR/app.pem" \
	-days 2 -subj "/CN=popgate test app" >/dev/null 2>&1 || bail_out "openssl req failed"
faketoken_client "{\"client_id\":\"cc\",\"user\":\"$U\",\"client_secret\":\"cc-S3cret\"}" &&
	faketoken_client "{\"client_id\":\"dev\",\"user\":\"$U\",\"grants\":[\"device_code\",\"refresh_token\"]}" &&
	faketoken_client "{\"client_id\":\"web\",\"user\":\"$U\",\"client_secret\":\"web-S3cret\"}" &&
	faketoken_client "{\"client_id\":\"app\",\"user\":\"$U\",\"certificate\":\"$TESTDIR/app.pem\"}" ||
	bail_out "cannot register the clients"
TOKEN_URL=$FAKETOKEN_URL/contoso.example/oauth2/v2.0/token

# ---- client credentials -------------------------------------------------------
r=$(idp -d grant_type=client_credentials -d client_id=cc -d client_secret=cc-S3cret \
	--data-urlencode scope=https://outlook.office365.com/.default "$TOKEN_URL")
T_CC=$(json access_token <<<"$r")
like "$T_CC" '^eyJ[^.]*\.[^.]*\.[^.]*$' "client_credentials (secret in the form): a JWT access token"
is "$(json refresh_token expires_in token_type <<<"$r")" " 3600 Bearer" \
	"... Bearer, expires_in 3600, no refresh token"
is "$(jwt_claim "$T_CC" email) $(jwt_claim "$T_CC" iss) $(jwt_claim "$T_CC" scope)" \
	"$U $OAUTH2_ISSUER mail" "... its claims: email = the mailbox user, iss, scope"
r=$(idp -u cc:cc-S3cret -d grant_type=client_credentials "$TOKEN_URL")
like "$(json access_token <<<"$r")" '^eyJ' "client_credentials with HTTP Basic works"
r=$(idp -w ' %{http_code}' -u cc:wrong -d grant_type=client_credentials "$TOKEN_URL")
is "$(json error <<<"${r% *}") ${r##* }" "invalid_client 401" "a wrong client secret: invalid_client, HTTP 401"
r=$(idp -w ' %{http_code}' -d grant_type=client_credentials -d client_id=dev "$TOKEN_URL")
is "$(json error <<<"${r% *}") ${r##* }" "invalid_client 401" "client_credentials without authentication: invalid_client"

# private_key_jwt: the assertion as RFC 7523 and Microsoft want it
assertion() { # AUD [KEY]
	local x5t h b now
	x5t=$(openssl x509 -in "$TESTDIR/app.pem" -outform DER | openssl dgst -sha256 -binary | b64url)
	now=$(date +%s)
	h=$(printf '{"alg":"RS256","typ":"JWT","x5t#S256":"%s"}' "$x5t" | b64url)
	b=$(printf '{"aud":"%s","iss":"app","sub":"app","jti":"%s","nbf":%d,"exp":%d}' \
		"$1" "$(openssl rand -hex 16)" "$now" $((now + 300)) | b64url)
	printf '%s.%s.%s' "$h" "$b" "$(printf '%s.%s' "$h" "$b" |
		openssl dgst -sha256 -sign "${2:-$TESTDIR/app.key}" | b64url)"
}
cc_jwt() { # ASSERTION [URL]
	idp -w ' %{http_code}' -d grant_type=client_credentials -d client_id=app \
		-d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
		-d client_assertion="$1" --data-urlencode scope=https://outlook.office365.com/.default \
		"${2:-$TOKEN_URL}"
}
r=$(cc_jwt "$(assertion "$TOKEN_URL")")
T_JWT=$(json access_token <<<"${r% *}")
like "$T_JWT ${r##* }" '^eyJ.* 200$' "client_credentials with private_key_jwt (RS256, x5t#S256): a token"
openssl genrsa -out "$TESTDIR/other.key" 2048 >/dev/null 2>&1
r=$(cc_jwt "$(assertion "$TOKEN_URL" "$TESTDIR/other.key")")
like "${r% *} ${r##* }" '"invalid_client".*bad signature.* 401$' "an assertion signed by another key: invalid_client"
r=$(cc_jwt "$(assertion "$FAKETOKEN_URL/elsewhere/token")")
like "${r% *}" '"invalid_client".*aud' "an assertion for another audience: invalid_client"

# ---- device flow ----------------------------------------------------------------
r=$(idp -d client_id=dev --data-urlencode 'scope=https://outlook.office.com/POP.AccessAsUser.All offline_access' \
	"$FAKETOKEN_URL/contoso.example/oauth2/v2.0/devicecode")
DC=$(json device_code <<<"$r")
is "$(json interval expires_in verification_uri <<<"$r")" \
	"1 900 $FAKETOKEN_URL/contoso.example/oauth2/v2.0/device" "devicecode: interval, expires_in, verification_uri"
like "$(json user_code <<<"$r")" '^[0-9A-F]{4}-[0-9A-F]{4}$' "... and a user code"
poll_device() {
	idp -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d client_id=dev \
		-d device_code="$DC" "$TOKEN_URL"
}
is "$(poll_device | json error) $(poll_device | json error)" "authorization_pending authorization_pending" \
	"the first two polls: authorization_pending"
r=$(poll_device)
T_DEV=$(json access_token <<<"$r")
R_DEV=$(json refresh_token <<<"$r")
like "$T_DEV $R_DEV" '^eyJ.* rt-' "the third poll: access and refresh token"
is "$(poll_device | json error)" invalid_grant "a used device code: invalid_grant"
faketoken_ctl '{"set":{"device_outcome":"deny","device_polls":0}}' >/dev/null
DC=$(idp -d client_id=dev "$FAKETOKEN_URL/devicecode" | json device_code)
is "$(poll_device | json error)" access_denied "device_outcome deny: access_denied"
faketoken_ctl '{"set":{"device_outcome":"expire"}}' >/dev/null
DC=$(idp -d client_id=dev "$FAKETOKEN_URL/devicecode" | json device_code)
is "$(poll_device | json error)" expired_token "device_outcome expire: expired_token"
faketoken_ctl '{"set":{"device_outcome":"approve","device_polls":2}}' >/dev/null
r=$(idp -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d client_id=cc \
	-d client_secret=cc-S3cret -d device_code="$DC" "$TOKEN_URL" | json error)
is "$r" invalid_grant "another client's device code: invalid_grant"
is "$(idp -d grant_type=authorization_code -d client_id=dev -d code=x "$TOKEN_URL" | json error)" \
	unauthorized_client "a grant the client may not use: unauthorized_client"

# ---- authorization code + PKCE S256 ------------------------------------------------
REDIR=http://127.0.0.1:$(free_port)/popgate
authorize() { # CHALLENGE [extra query]
	idp -o /dev/null -w '%{http_code} %{redirect_url}' "$FAKETOKEN_URL/o/oauth2/v2/auth?response_type=code&client_id=web&redirect_uri=$(
		printf %s "$REDIR" | sed 's/:/%3A/g; s|/|%2F|g')&state=st-42&scope=https%3A%2F%2Fmail.google.com%2F&code_challenge=$1&code_challenge_method=S256${2:-}"
}
VERIFIER=$(openssl rand 48 | b64url)
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
r=$(authorize "$CHALLENGE")
like "$r" "^302 $REDIR\\?code=ac-[^&]+&state=st-42$" "authorize: 302 to the loopback redirect with code and state"
CODE=$(sed 's/.*code=\([^&]*\).*/\1/' <<<"$r")
exchange() { # CODE VERIFIER [REDIRECT]
	idp -d grant_type=authorization_code -d client_id=web -d client_secret=web-S3cret \
		-d code="$1" -d code_verifier="$2" --data-urlencode redirect_uri="${3:-$REDIR}" "$TOKEN_URL"
}
r=$(exchange "$CODE" "$VERIFIER")
T_WEB=$(json access_token <<<"$r")
R_WEB=$(json refresh_token <<<"$r")
like "$(json access_token refresh_token scope <<<"$r")" '^eyJ.* rt-.* https://mail.google.com/$' \
	"code exchange with the right verifier: tokens, the requested scope echoed"
is "$(exchange "$CODE" "$VERIFIER" | json error)" invalid_grant "a code works once"
CODE=$(authorize "$CHALLENGE" | sed 's/.*code=\([^&]*\).*/\1/')
is "$(exchange "$CODE" "$(openssl rand 48 | b64url)" | json error)" invalid_grant "a wrong code_verifier: invalid_grant"
CODE=$(authorize "$CHALLENGE" | sed 's/.*code=\([^&]*\).*/\1/')
is "$(exchange "$CODE" "$VERIFIER" "${REDIR}x" | json error)" invalid_grant "another redirect_uri: invalid_grant"
r=$(idp -w '%{http_code} %{content_type}' -o /dev/null \
	"$FAKETOKEN_URL/authorize?response_type=code&client_id=web&redirect_uri=https%3A%2F%2Fevil.example%2F&state=s")
like "$r" '^400 text/html' "a non-loopback redirect_uri: 400 HTML, no redirect"
like "$(idp -o /dev/null -w '%{redirect_url}' "$FAKETOKEN_URL/authorize?response_type=code&client_id=web&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2F&state=s")" \
	'error=invalid_request.*state=s' "no code_challenge: redirected with error=invalid_request"
faketoken_fault '{"kind":"access_denied","endpoint":"authorize"}'
like "$(authorize "$CHALLENGE")" "^302 $REDIR\\?error=access_denied&.*state=st-42" "fault access_denied at /authorize"
faketoken_fault '{"kind":"wrong_state","endpoint":"authorize"}'
like "$(authorize "$CHALLENGE")" "code=.*&state=not-st-42$" "fault wrong_state at /authorize"
faketoken_fault '{"kind":"temporarily_unavailable","endpoint":"authorize"}'
like "$(authorize "$CHALLENGE")" "^302 $REDIR\\?error=temporarily_unavailable&.*state=st-42" \
	"fault temporarily_unavailable at /authorize: redirected with that error"
faketoken_fault '{"kind":"html","endpoint":"authorize","status":500}'
like "$(authorize "$CHALLENGE")" "^500 $" "fault html at /authorize: an error page, no redirect"

# ---- refresh: rotation, no rotation, restart ------------------------------------------
refresh() { # CLIENT_ARGS... via REFRESH
	idp -d grant_type=refresh_token -d refresh_token="$REFRESH" "$@" "$TOKEN_URL"
}
REFRESH=$R_WEB
r=$(refresh -d client_id=web -d client_secret=web-S3cret)
T_REF=$(json access_token <<<"$r")
R2=$(json refresh_token <<<"$r")
like "$T_REF $R2" '^eyJ.* rt-' "refresh with rotation: new access and refresh token"
isnt "$R2" "$R_WEB" "... the refresh token is a new one"
is "$(refresh -d client_id=web -d client_secret=web-S3cret | json error)" invalid_grant \
	"... and the old one is then invalid_grant"
faketoken_ctl '{"set":{"rotate_refresh":false}}' >/dev/null
REFRESH=$R2
r=$(refresh -d client_id=web -d client_secret=web-S3cret)
is "$(json refresh_token <<<"$r")" "" "refresh without rotation: no refresh_token in the reply"
like "$(refresh -d client_id=web -d client_secret=web-S3cret | json access_token)" '^eyJ' "... the old one keeps working"
faketoken_ctl '{"set":{"rotate_refresh":true,"revoke_old_refresh":false}}' >/dev/null
r=$(refresh -d client_id=web -d client_secret=web-S3cret)
like "$(json refresh_token <<<"$r") $(refresh -d client_id=web -d client_secret=web-S3cret | json access_token)" \
	'^rt-.* eyJ' "rotation without revocation: a new one, and the old one still works"
faketoken_ctl '{"set":{"revoke_old_refresh":true}}' >/dev/null
REFRESH=$R_DEV
restart_faketoken || bail_out "cannot restart faketoken.py"
r=$(refresh -d client_id=dev)
like "$(json access_token <<<"$r")" '^eyJ' "a refresh token survives kill -9 and restart of the IdP"
R_DEV=$(json refresh_token <<<"$r")
faketoken_ctl '{"revoke_refresh_tokens":true}' >/dev/null
REFRESH=$R_DEV
is "$(refresh -d client_id=dev | json error)" invalid_grant "revoke_refresh_tokens: refresh is invalid_grant"

# ---- popgate drains Dovecot with the tokens --------------------------------------------
n=0
for run in "xi implicit xoauth2 T_CC" "xs starttls xoauth2 T_DEV" "oi implicit oauthbearer T_WEB" \
	"os starttls oauthbearer T_REF" "xj starttls xoauth2 T_JWT"; do
	set -- $run
	drain "$1" "$2" "$3" "${!4}"
	n=$((n + 2))
	if is "$PG_RC" 0 "popgate $3 over $2 with the token from ${4#T_}: poll and relay work"; then
		is "$(sink_count)" "$n" "... both new messages reached smtp-sink"
	else
		note "$LOG" 20
	fi
	is "$(maildir_count "$U")" 0 "... and left the mailbox"
done
ok "grep -q 'Login: user=<$U>, method=XOAUTH2.*TLS' '$DOVECOT_LOG' && grep -q 'Login: user=<$U>, method=OAUTHBEARER.*TLS' '$DOVECOT_LOG'" \
	"Dovecot logged XOAUTH2 and OAUTHBEARER logins"
files=()
while IFS= read -r f; do files+=("$f"); done < <(sink_files)
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$U" --hostname gw.test "${files[@]}"

# a password user of the same Dovecot still logs in
conf_account pw server localhost port "$POP3_PORT" tls starttls ca_file "$TESTDIR/pop/ca.pem" \
	user "$U" password_file "$TESTDIR/pass" auth plain deliver_to "$U" >>"$CONF"
mail_gen --maildir "$(maildir_of "$U")" --expected "$TESTDIR/exp-pw" --count 1 --prefix pw >/dev/null
pg "$LOG" -c "$CONF" poll --once pw
is "$PG_RC $(maildir_count "$U")" "0 0" "a password login (PLAIN) works in the oauth2 Dovecot"

# ---- tokens Dovecot refuses ---------------------------------------------------------------
refused() { # NAME TOKEN DOVECOT-LOG-TEXT DESCRIPTION
	local before
	before=$(grep -c 'Local validation failed' "$DOVECOT_LOG")
	drain "$1" starttls xoauth2 "$2"
	is "$PG_RC" 77 "$4: popgate's login is refused (exit 77)"
	wait_for "grep -c 'Local validation failed' '$DOVECOT_LOG'" $((before + 1))
	like "$(grep 'Local validation failed' "$DOVECOT_LOG" | tail -n 1)" "$3" "... Dovecot says: $3"
}
mint() { idp "$FAKETOKEN_URL/_mint?user=$U&variant=$1" | json access_token; }
refused bad1 "$(mint expired)" 'Token has expired' "an expired token"
refused bad2 "$(mint wrong_key)" 'signature|Invalid|failed' "a token signed with another key"
refused bad3 "$(mint wrong_user)" "did not match" "a token for another user"
refused bad4 "$(mint no_scope)" 'scope' "a token without scope"
refused bad5 "$(mint wrong_issuer)" 'Issuer' "a token from another issuer"
faketoken_fault '{"kind":"bad_token","variant":"expired"}'
r=$(idp -d grant_type=client_credentials -d client_id=cc -d client_secret=cc-S3cret "$TOKEN_URL")
is "$(json expires_in <<<"$r")" 3600 "fault bad_token expired: the reply still says expires_in 3600"
refused bad6 "$(json access_token <<<"$r")" 'Token has expired' "the bad_token from the token endpoint"
pg "$LOG" -c "$CONF" poll --once pw
is "$(maildir_count "$U")" 0 "(the refused logins' messages drained with the password)"

# Dovecot also takes the one-step form (initial response) of both
# mechanisms, and answers a refused token with a JSON challenge, then -ERR
r=$("$PYTHON" - "$POP3_PORT" "$U" "$T_CC" "$(mint expired)" <<'EOF'
import base64, socket, sys
port, user, good, bad = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def ir(mech, tok):
    if mech == "XOAUTH2":
        m = "user=%s\x01auth=Bearer %s\x01\x01" % (user, tok)
    else:
        m = "n,a=%s,\x01host=localhost\x01port=%d\x01auth=Bearer %s\x01\x01" % (user, port, tok)
    return base64.b64encode(m.encode()).decode()
out = []
for mech in ("XOAUTH2", "OAUTHBEARER"):
    for tok in (good, bad):
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        f = s.makefile("rb")
        f.readline()
        s.sendall(("AUTH %s %s\r\n" % (mech, ir(mech, tok))).encode())
        line = f.readline().decode().strip()
        if line.startswith("+ "):
            chal = base64.b64decode(line[2:]).decode()
            s.sendall(b"\r\n" if mech == "XOAUTH2" else b"AQ==\r\n")
            line = "challenge %s then %s" % (chal, f.readline().decode().strip())
        out.append("%s %s: %s" % (mech, "good" if tok == good else "expired", line))
        s.sendall(b"QUIT\r\n")
        s.close()
print("\n".join(out))
EOF
)
like "$r" 'XOAUTH2 good: \+OK Logged in\.' "Dovecot: one-step XOAUTH2 with a good token logs in"
like "$r" 'OAUTHBEARER good: \+OK Logged in\.' "Dovecot: one-step OAUTHBEARER with a good token logs in"
like "$r" 'XOAUTH2 expired: challenge \{"status":"401","schemes":"bearer","scope":"mail"\} then -ERR \[AUTH\]' \
	"Dovecot refuses an expired XOAUTH2 token with a JSON challenge, then -ERR [AUTH]"
like "$r" 'OAUTHBEARER expired: challenge \{"status":"invalid_token"\} then -ERR \[AUTH\]' \
	"... OAUTHBEARER: {\"status\":\"invalid_token\"}, then -ERR [AUTH]"

# ---- fakepop3.py's provider shapes with the IdP's tokens ------------------------------
# popgate sends XOAUTH2/OAUTHBEARER in two steps today; the fakes check the
# token as a JWT with the same key as Dovecot
fake_login() { # NAME MODE AUTH TOKEN
	start_fakepop3 "$TESTDIR/fp-$1" "$2" --jwt-key-file "$OAUTH2_KEYFILE" --user "$U" ||
		bail_out "cannot start fakepop3 $2"
	printf '%s\n' "$4" >"$TESTDIR/token.$1"
	conf_account "$1" server 127.0.0.1 port "$FAKEPOP3_PORT" tls none allow_plaintext true \
		user "$U" auth "$3" password_command "/bin/cat $TESTDIR/token.$1" deliver_to "$U" >>"$CONF"
	pg "$LOG" -c "$CONF" poll --once "$1"
}
fake_login fms ms-xoauth2 xoauth2 "$T_DEV"
is "$PG_RC $(spool_sql "$SPOOL" "select count(*) from messages where account='fms'")" "0 2" \
	"fakepop3 ms-xoauth2: popgate logs in (two steps) with a device-flow token and fetches 2"
like "$(tr '\r\n' '  ' <"$FAKEPOP3_REC")" '^CAPA  AUTH XOAUTH2  [A-Za-z0-9+/=]+  ' "... AUTH XOAUTH2, then the token line"
like "$(cat "$TESTDIR/fp-fms/fakepop3.log")" 'login ok mech=XOAUTH2' "... and the fake checked the JWT"
fake_login fmsbad ms-xoauth2 xoauth2 "$(mint expired)"
is "$PG_RC" 77 "ms-xoauth2: an expired token is refused (exit 77)"
like "$(tr '\r\n' '  ' <"$TESTDIR/fp-fmsbad/fakepop3.rec")" 'AUTH XOAUTH2  [A-Za-z0-9+/=]+  (QUIT  )?$' \
	"... after the bare -ERR, no empty line is sent (there was no challenge)"
like "$(cat "$TESTDIR/fp-fmsbad/fakepop3.log")" 'login refused .*reason=expired' "... the fake says why"
r=$("$PYTHON" - "$FAKEPOP3_PORT" "$(printf 'user=%s\001auth=Bearer %s\001\001' "$U" "$T_DEV" | base64 -w0)" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
f = s.makefile("rb")
f.readline()
s.sendall(b"AUTH XOAUTH2 " + sys.argv[2].encode() + b"\r\n")
print(f.readline().decode().strip() + "|" + f.read().decode())
EOF
)
is "$r" "-ERR Protocol error. Connection is closed.|" "ms-xoauth2: the one-line form is refused and the connection closed"
fake_login fgo google-xoauth2 oauthbearer "$T_WEB"
is "$PG_RC $(spool_sql "$SPOOL" "select count(*) from messages where account='fgo'")" "0 2" \
	"fakepop3 google-xoauth2: popgate logs in with OAUTHBEARER and an auth-code token"
fake_login fgobad google-xoauth2 xoauth2 "$(mint wrong_key)"
is "$PG_RC" 77 "google-xoauth2: a token signed with another key is refused (exit 77)"
like "$(tr '\r\n' '  ' <"$TESTDIR/fp-fgobad/fakepop3.rec")" 'AUTH XOAUTH2  [A-Za-z0-9+/=]+    (QUIT  )?$' \
	"... popgate answered the JSON challenge with an empty line"

# ---- /_stats -------------------------------------------------------------------------------
# counted from the requests above
is "$(faketoken_stats grants.device_code errors.authorization_pending requests.devicecode)" "7 2 3" \
	"stats: 3 device authorizations, 7 polls, 2 of them authorization_pending"
is "$(faketoken_stats requests.authorize grants.authorization_code grants.refresh_token)" "9 5 8" \
	"stats: 9 authorize requests, 5 code and 8 refresh grants"
is "$(faketoken_stats grants.client_credentials access_tokens)" "8 12" \
	"stats: 8 client_credentials grants, 12 access tokens minted (/_mint not counted)"
is "$(faketoken_stats last.token | json _auth)" post "/_stats keeps the last request's client authentication"
faketoken_ctl '{"reset_stats":true}' >/dev/null
is "$(faketoken_stats requests.token)" 0 "reset_stats: the counts start again"

# ---- faults -----------------------------------------------------------------------------------
cc() { idp -D "$TESTDIR/hdr" -w ' %{http_code}' "$@" -d grant_type=client_credentials -d client_id=cc \
	-d client_secret=cc-S3cret "$TOKEN_URL"; }
faketoken_ctl '{"set":{"provider":"microsoft"},"fault":{"kind":"invalid_grant"}}' >/dev/null
r=$(cc)
is "${r##* } $(json error error_codes <<<"${r% *}")" "400 invalid_grant [70000]" \
	"provider microsoft: invalid_grant with error_codes [70000]"
like "$(json error_description <<<"${r% *}")" '^AADSTS70000: .*Trace ID: ' "... and an AADSTS description"
faketoken_ctl '{"set":{"provider":"google"},"fault":{"kind":"invalid_grant"}}' >/dev/null
r=$(cc)
is "${r##* } ${r% *}" '400 {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}' \
	"provider google: Google's invalid_grant body"
faketoken_ctl '{"set":{"provider":"generic"}}' >/dev/null
for e in invalid_client:401 unauthorized_client:400 invalid_scope:400; do
	faketoken_fault "{\"kind\":\"${e%:*}\"}"
	r=$(cc)
	is "$(json error <<<"${r% *}") ${r##* }" "${e%:*} ${e#*:}" "fault ${e%:*}: HTTP ${e#*:}"
done
faketoken_fault '{"kind":"429","retry_after":7}'
r=$(cc)
is "${r##* } $(tr -d '\r' <"$TESTDIR/hdr" | sed -n 's/^Retry-After: //p')" "429 7" "fault 429: Retry-After: 7"
faketoken_fault '{"kind":"503","retry_after":3}'
r=$(cc)
is "${r##* } $(tr -d '\r' <"$TESTDIR/hdr" | sed -n 's/^Retry-After: //p') $(json error <<<"${r% *}")" \
	"503 3 temporarily_unavailable" "fault 503: Retry-After: 3, temporarily_unavailable"
faketoken_fault '{"kind":"close"}'
r=$(cc 2>/dev/null)
is "$? ${r##* }" "52 000" "fault close: no reply at all (curl: empty reply)"
faketoken_fault '{"kind":"hang"}'
r=$(cc -m 3 2>/dev/null)
is "$? ${r##* }" "28 000" "fault hang: no answer (curl gives up)"
faketoken_fault '{"kind":"slow","delay":1}'
r=$(cc)
like "${r##* } $(json access_token <<<"${r% *}")" '^200 eyJ' "fault slow: answers, late"
faketoken_fault '{"kind":"html"}'
r=$(cc)
like "${r##* } $(grep -i '^Content-Type' "$TESTDIR/hdr")" '^200 Content-Type: text/html' "fault html: 200 text/html"
faketoken_fault '{"kind":"garbage"}'
r=$(cc -o "$TESTDIR/garbage")
is "$r $(json access_token <"$TESTDIR/garbage")" " 200 <not json>" "fault garbage: 200, not JSON"
faketoken_fault '{"kind":"no_access_token"}'
r=$(cc)
is "${r##* } $(json access_token token_type <<<"${r% *}")" "200  Bearer" \
	"fault no_access_token: 200 without access_token"
faketoken_fault '{"kind":"invalid_grant","grant":"refresh_token","count":2}'
r=$(cc)
is "${r##* }" 200 "a fault for refresh_token leaves client_credentials alone"
REFRESH=nonexistent
faketoken_ctl '{"set":{"rotate_refresh":true}}' >/dev/null
is "$(refresh -d client_id=web -d client_secret=web-S3cret -d x=1 | json error_description)" "fake: invalid_grant" \
	"... and answers refresh_token requests (count 2: once)"
is "$(refresh -d client_id=web -d client_secret=web-S3cret | json error_description)" "fake: invalid_grant" \
	"... twice"
is "$(refresh -d client_id=web -d client_secret=web-S3cret | json error_description)" \
	"refresh token unknown, revoked or expired" "... then the real answer"
faketoken_fault '{"kind":"503","count":-1}'
r1=$(cc)
r2=$(cc)
r3=$(cc)
is "${r1##* } ${r2##* } ${r3##* }" "503 503 503" "count -1: for ever"
faketoken_ctl '{"clear_faults":true}' >/dev/null
r=$(cc)
is "${r##* }" 200 "clear_faults: back to normal"
is "$(faketoken_stats faults)" 18 "stats: 18 faulted requests since reset_stats"
r=$(faketoken_ctl '{"fault":{"kind":"nonsense"}}')
is "$?" 1 "an unknown fault kind is refused by /_control"
like "$r" 'unknown fault kind' "... with a message naming it"

done_testing
