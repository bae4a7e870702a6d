# servers.sh - private test servers on loopback (bash; sourced by common.sh,
# and by quickstart demo).
#
# Everything here runs from a test directory DIR that the caller owns; no
# system instance is touched (own configs, own base_dir, own pid files, ports
# chosen free on 127.0.0.1).  Functions:
#
#   free_port                  print a TCP port that is free on 127.0.0.1
#   wait_port PORT [SECS]      wait until 127.0.0.1:PORT accepts connections
#   make_test_ca DIR           DIR/ca.pem + ca.key (the test CA), DIR/server.pem +
#                              server.key (CN=localhost, SAN DNS:localhost only:
#                              connecting to 127.0.0.1 is a host-name mismatch),
#                              DIR/other-ca.pem (an unrelated CA)
#   start_dovecot DIR          private Dovecot (POP3 only); exports POP3_PORT
#                              (plain, STLS offered) and POP3S_PORT (implicit TLS),
#                              DOVECOT_DIR, DOVECOT_LOG
#   dovecot_add_user USER PASS add a passwd-file user (Maildir under DOVECOT_DIR)
#   maildir_of USER            print the user's Maildir path
#   maildir_count USER         messages in the user's Maildir (new + cur)
#   maildir_fix_owner USER     chown the user's Maildir to the mail uid/gid again
#   start_smtp_sink DIR [ARGS] Postfix's smtp-sink dumping each transaction into
#                              DIR/sink/; exports SMTP_PORT, SINK_DIR, SINK_PID
#   sink_count [SINKDIR]       number of dump files (= transactions ended by ".")
#   sink_envelope FILE         prints "MAIL FROM:<...>" then one "RCPT TO:<...>"
#                              line per recipient (from X-Mail-Args/X-Rcpt-Args)
#   sink_content FILE          writes the message content of a dump (CRLF, as the
#                              client sent it before dot-stuffing) to stdout
#   start_fakepop3 DIR MODE    test/fake/fakepop3.py; exports FAKEPOP3_PORT,
#                              FAKEPOP3_REC (every byte the client sent)
#   start_postfix DIR          private Postfix (postfix -c DIR/conf) on 127.0.0.1:
#                              a free port, own queue/data dirs, virtual Maildir
#                              mailboxes for corp.example under DIR/mail; exports
#                              POSTFIX_PORT, POSTFIX_CONF, POSTFIX_MAIL, POSTFIX_LOG.
#                              POSTFIX_CONF/access (texthash) is the recipient
#                              restriction table, POSTFIX_CONF/vmailbox the mailboxes
#                              With POSTFIX_TLS_DIR set (a make_test_ca DIR),
#                              smtpd offers STARTTLS with DIR/server.pem.
#   postfix_mailbox ADDR       add a virtual mailbox (before start, or reload)
#   postfix_maildir ADDR       print ADDR's Maildir path
#   postfix_reload             re-read the tables (postfix reload)
#   start_dovecot_oauth2 DIR   start_dovecot plus an oauth2 passdb (XOAUTH2 and
#                              OAUTHBEARER, JWTs validated locally with the HS256
#                              key oauth2_key makes); password users keep working.
#                              Exports DOVECOT_OAUTH2_KEYDIR, DOVECOT_OAUTH2_SCOPE
#   oauth2_key DIR             make (once) the shared HS256 key: exports
#                              OAUTH2_KEYFILE (base64 secret, no newline) and
#                              OAUTH2_ISSUER (default https://idp.popgate.test)
#   start_faketoken DIR [ARGS] test/fake/faketoken.py (HTTPS OAuth2 identity
#                              provider, see its header); exports FAKETOKEN_PORT,
#                              FAKETOKEN_URL, FAKETOKEN_CA, FAKETOKEN_STATE
#   restart_faketoken          kill -9 it and start it again: same port and state
#   faketoken_ctl JSON         POST JSON to FAKETOKEN_URL/_control; prints the reply
#   faketoken_fault JSON       queue one fault (faketoken_ctl {"fault": JSON})
#   faketoken_client JSON      register a client (faketoken_ctl {"client": JSON})
#   faketoken_stats [KEY...]   GET /_stats (JSON), or the values at dotted KEYs
#                              like grants.refresh_token (0 when absent)
#   stop_servers               stop every server started by these functions
#
# smtp-sink's -d dump format (Postfix 3.7, verified by hand, see man smtp-sink):
#   X-Client-Addr: 127.0.0.1
#   X-Client-Proto: ESMTP
#   X-Helo-Args: <helo name>              (only when HELO/EHLO was sent)
#   X-Mail-Args: <sender> [params]        (exactly once; "<>" for the null
#                                          sender; the "FROM:" is not kept)
#   X-Rcpt-Args: <rcpt> [params]          (once per accepted RCPT, in order)
#   Received: from helo ([127.0.0.1])     (always three lines, TAB-continued;
#   <TAB>by smtp-sink (smtp-sink) with ESMTP id 13281c04;  the last lines
#   <TAB>Sun, 22 Nov 2026 02:13:08 +0000 (UTC)             smtp-sink adds)
#   <message as received, dot-stuffing removed, each line ended by LF only>
#   <an empty line>
# So the dump loses the CR of every CRLF.  The canonical form popgate relays
# has no bare CR and no bare LF, so CRLF -> LF is lossless: sink_content turns
# LF back into CRLF after dropping the smtp-sink header block and the final
# empty line.  One transaction = one file "dump.<random hex>"; smtp-sink writes
# the file only when the transaction completes with "." (a transaction whose
# RCPTs were all rejected leaves no file).  Lines of 100,000 octets and 5 MiB
# messages arrive intact (checked by hand).
#
# smtp-sink error options: -f CMD,... answers 5xx ("500 5.3.0 Error: command
# failed", text set with -B) and -r CMD,... answers 4xx ("450 4.3.0 Error:
# command failed", text set with -b); both imply -p (no PIPELINING).  -q CMD
# disconnects without reply, -Q CMD answers 421 and disconnects.  CMD is one
# of CONNECT HELO EHLO MAIL RCPT DATA . RSET NOOP QUIT.

: "${PYTHON:=python3}"
SERVERS_PIDS=${SERVERS_PIDS:-}
DOVECOT_CONF=${DOVECOT_CONF:-}
MAIL_UID=$(id -u nobody 2>/dev/null || echo 65534)
MAIL_GID=$(getent group nogroup >/dev/null 2>&1 && getent group nogroup | cut -d: -f3 || id -g nobody 2>/dev/null || echo 65534)
MAIL_USER=$(id -un "$MAIL_UID" 2>/dev/null || echo nobody)

free_port() {
	"$PYTHON" - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
	local port=$1 secs=${2:-20} i
	for ((i = 0; i < secs * 20; i++)); do
		port_open "$port" && return 0
		sleep 0.05
	done
	echo "wait_port: 127.0.0.1:$port not accepting after ${secs}s" >&2
	return 1
}

make_test_ca() {
	local d=$1
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout ca.key -out ca.pem -days 30 -subj "/CN=popgate test CA" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1 || exit 1
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout server.key -out server.csr -subj "/CN=localhost" >/dev/null 2>&1 || exit 1
		cat >server.ext <<'EOF'
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
EOF
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-out server.pem -days 30 -extfile server.ext >/dev/null 2>&1 || exit 1
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout other-ca.key -out other-ca.pem -days 30 -subj "/CN=unrelated test CA" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1 || exit 1
		chmod 0644 ca.pem server.pem other-ca.pem
		chmod 0600 ca.key server.key other-ca.key
	) || { echo "make_test_ca: openssl failed in $d" >&2; return 1; }
}

_track_pid() {
	SERVERS_PIDS="$SERVERS_PIDS $1"
}

start_dovecot() {
	local d=$1 dh
	mkdir -p "$d/run" "$d/state" "$d/home"
	# the mail processes run as nobody: every directory on the way must be
	# traversable by it.
	chmod 0755 "$d" "$d/home"
	[ -f "$d/ca.pem" ] || make_test_ca "$d" || return 1
	mkdir -p "$d/users.d"
	chmod 0755 "$d/users.d"
	: >"$d/dovecot.log"
	dh=/usr/share/dovecot/dh.pem
	if [ ! -f "$dh" ]; then
		dh=$d/dh.pem
		[ -f "$dh" ] || openssl dhparam -out "$dh" 2048 >/dev/null 2>&1
	fi
	POP3_PORT=$(free_port)
	POP3S_PORT=$(free_port)
	while [ "$POP3S_PORT" = "$POP3_PORT" ]; do POP3S_PORT=$(free_port); done
	cat >"$d/dovecot.conf" <<EOF
# private Dovecot for popgate tests; generated by test/lib/servers.sh
instance_name = popgate-test-$POP3_PORT
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
info_log_path = $d/dovecot.log
debug_log_path = $d/dovecot.log
protocols = pop3
listen = 127.0.0.1
shutdown_clients = yes

ssl = yes
ssl_cert = <$d/server.pem
ssl_key = <$d/server.key
ssl_dh = <$dh
ssl_min_protocol = TLSv1.2

disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop
auth_verbose = yes
auth_failure_delay = 0

mail_location = maildir:~/Maildir
first_valid_uid = $MAIL_UID
last_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
last_valid_gid = $MAIL_GID
pop3_uidl_format = %08Xu%08Xv

# one passwd-file per user: Dovecot re-reads a passwd-file at most once a
# second, so a user added to a shared file right after a login would stay
# unknown for up to a second; a new file is read on first use.
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/users.d/%u
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/users.d/%u
}

service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $POP3_PORT
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $POP3S_PORT
    ssl = yes
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
	DOVECOT_DIR=$d
	DOVECOT_CONF=$d/dovecot.conf
	DOVECOT_LOG=$d/dovecot.log
	export POP3_PORT POP3S_PORT DOVECOT_DIR DOVECOT_CONF DOVECOT_LOG
	if ! dovecot -c "$DOVECOT_CONF" >>"$d/dovecot.log" 2>&1; then
		echo "start_dovecot: dovecot failed to start; log:" >&2
		tail -n 20 "$d/dovecot.log" >&2
		return 1
	fi
	local i
	for ((i = 0; i < 100; i++)); do
		[ -s "$d/run/master.pid" ] && break
		sleep 0.05
	done
	[ -s "$d/run/master.pid" ] && _track_pid "dovecot:$(cat "$d/run/master.pid")"
	wait_port "$POP3_PORT" && wait_port "$POP3S_PORT"
}

# dovecot_add_user USER PASS - the password is stored in {PLAIN} so every
# SASL mechanism (and APOP) works.
dovecot_add_user() {
	local u=$1 p=$2 home
	home=$DOVECOT_DIR/home/$u
	mkdir -p "$home/Maildir/new" "$home/Maildir/cur" "$home/Maildir/tmp"
	chown -R "$MAIL_UID:$MAIL_GID" "$home"
	printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$u" "$p" "$MAIL_UID" "$MAIL_GID" "$home" \
		>"$DOVECOT_DIR/users.d/$u.tmp"
	chmod 0644 "$DOVECOT_DIR/users.d/$u.tmp"
	mv "$DOVECOT_DIR/users.d/$u.tmp" "$DOVECOT_DIR/users.d/$u"
}

maildir_of() {
	echo "$DOVECOT_DIR/home/$1/Maildir"
}

maildir_count() {
	local m
	m=$(maildir_of "$1")
	find "$m/new" "$m/cur" -maxdepth 1 -type f 2>/dev/null | wc -l
}

maildir_fix_owner() {
	chown -R "$MAIL_UID:$MAIL_GID" "$(maildir_of "$1")"
}

start_smtp_sink() {
	local d=$1
	shift
	local sink=$d/sink port pid
	mkdir -p "$sink"
	chmod 0755 "$d"
	chown "$MAIL_UID:$MAIL_GID" "$sink"
	port=$(free_port)
	# SINK_DUMP_TEMPLATE: smtp-sink's -d template under DIR/sink (strftime;
	# a "/" makes it create directories); sink_files finds dumps below it
	/usr/sbin/smtp-sink -u "$MAIL_USER" -d "$sink/${SINK_DUMP_TEMPLATE:-dump.}" "$@" \
		"127.0.0.1:$port" 64 \
		>>"$d/smtp-sink.log" 2>&1 &
	pid=$!
	_track_pid "sink:$pid"
	SMTP_PORT=$port
	SINK_DIR=$sink
	SINK_PID=$pid
	export SMTP_PORT SINK_DIR SINK_PID
	if ! wait_port "$port"; then
		echo "start_smtp_sink: smtp-sink did not start; log:" >&2
		tail -n 20 "$d/smtp-sink.log" >&2
		return 1
	fi
}

# stop_smtp_sink - stop only the most recent sink (to test "sink not running").
stop_smtp_sink() {
	[ -n "${SINK_PID:-}" ] || return 0
	kill "$SINK_PID" 2>/dev/null || true
	wait "$SINK_PID" 2>/dev/null || true
	SERVERS_PIDS=${SERVERS_PIDS/sink:$SINK_PID/}
	SINK_PID=
	return 0
}

sink_files() {
	local s=${1:-$SINK_DIR}
	find "$s" -type f -name 'dump.*' 2>/dev/null | sort
}

sink_count() {
	sink_files "${1:-$SINK_DIR}" | wc -l
}

# sink_envelope FILE - "MAIL FROM:<addr>" then "RCPT TO:<addr>" per recipient
# (ESMTP parameters after the address are dropped).
sink_envelope() {
	"$PYTHON" - "$1" <<'EOF'
import re, sys
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\n").decode("latin-1")
        m = re.match(r"X-(Mail|Rcpt)-Args: (?:(?:FROM|TO):)?(<[^>]*>)", line, re.I)
        if m:
            print(("MAIL FROM:" if m.group(1).lower() == "mail" else "RCPT TO:") + m.group(2))
        elif line.startswith("Received: "):
            break
EOF
}

# sink_content FILE - the message content of a dump, line ends back to CRLF.
sink_content() {
	"$PYTHON" - "$1" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
lines = data.split(b"\n")
i = 0
while i < len(lines) and lines[i].startswith(b"X-"):
    i += 1
if i >= len(lines) or not lines[i].startswith(b"Received: "):
    sys.exit("sink_content: no smtp-sink Received header in " + sys.argv[1])
i += 3  # smtp-sink's Received is always three lines
body = b"\n".join(lines[i:])
# the dump ends with the message's last LF plus one empty line
if body.endswith(b"\n"):
    body = body[:-1]
sys.stdout.buffer.write(body.replace(b"\n", b"\r\n"))
EOF
}

# start_fakepop3 DIR MODE [fakepop3.py args] - test/fake/fakepop3.py on a free
# loopback port recording client bytes to DIR/fakepop3.rec; exports
# FAKEPOP3_PORT and FAKEPOP3_REC.
start_fakepop3() {
	local d=$1 mode=$2 i pid
	shift 2
	mkdir -p "$d"
	rm -f "$d/fakepop3.port"
	FAKEPOP3_REC=$d/fakepop3.rec
	"$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/../fake/fakepop3.py" --mode "$mode" \
		--port-file "$d/fakepop3.port" --record "$FAKEPOP3_REC" "$@" \
		>>"$d/fakepop3.log" 2>&1 &
	pid=$!
	_track_pid "fake:$pid"
	for ((i = 0; i < 200; i++)); do
		[ -s "$d/fakepop3.port" ] && break
		sleep 0.05
	done
	[ -s "$d/fakepop3.port" ] || { echo "start_fakepop3: no port" >&2; return 1; }
	FAKEPOP3_PORT=$(cat "$d/fakepop3.port")
	export FAKEPOP3_PORT FAKEPOP3_REC
}

stop_servers() {
	local e kind pid i
	for e in $SERVERS_PIDS; do
		kind=${e%%:*}
		pid=${e#*:}
		case $kind in
		postfix)
			postfix -c "$pid" stop >/dev/null 2>&1 || true
			;;
		dovecot)
			kill -TERM "$pid" 2>/dev/null || continue
			for ((i = 0; i < 100; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.05
			done
			kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
			;;
		*)
			kill -TERM "$pid" 2>/dev/null || continue
			for ((i = 0; i < 60; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.05
			done
			kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			;;
		esac
	done
	SERVERS_PIDS=
	return 0
}

# start_postfix DIR - a private Postfix instance.  Nothing of the system
# instance is used or touched: its own config directory (postfix -c), its
# own queue_directory and data_directory under DIR, no chroot, loopback only.
start_postfix() {
	local d=$1 c
	c=$d/conf
	mkdir -p "$c" "$d/queue" "$d/data" "$d/mail"
	chmod 0755 "$d" "$d/mail"
	chown "$MAIL_UID:$MAIL_GID" "$d/mail"
	chown postfix "$d/data" # the queue directory stays root's
	POSTFIX_PORT=$(free_port)
	POSTFIX_CONF=$c
	POSTFIX_MAIL=$d/mail
	POSTFIX_LOG=$d/maillog
	export POSTFIX_PORT POSTFIX_CONF POSTFIX_MAIL POSTFIX_LOG
	[ -f "$c/access" ] || : >"$c/access"
	[ -f "$c/vmailbox" ] || : >"$c/vmailbox"
	cat >"$c/main.cf" <<EOF
# private Postfix for popgate tests; generated by test/lib/servers.sh
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
# a log file outside /var must be allowed explicitly
maillog_file_prefixes = $d
myhostname = pf.test
mydomain = pf.test
myorigin = pf.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
virtual_mailbox_domains = corp.example
virtual_mailbox_maps = texthash:$c/vmailbox
virtual_mailbox_base = $d/mail
virtual_uid_maps = static:$MAIL_UID
virtual_gid_maps = static:$MAIL_GID
smtpd_recipient_restrictions = check_recipient_access texthash:$c/access,
	permit_mynetworks, reject_unauth_destination
EOF
	# POSTFIX_TLS_DIR (optional): a make_test_ca directory; smtpd offers
	# STARTTLS with its server.pem/server.key (CN=localhost)
	if [ -n "${POSTFIX_TLS_DIR:-}" ]; then
		cat >>"$c/main.cf" <<EOF
smtpd_tls_cert_file = $POSTFIX_TLS_DIR/server.pem
smtpd_tls_key_file = $POSTFIX_TLS_DIR/server.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
EOF
	fi
	cat >"$c/master.cf" <<EOF
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
	if ! postfix -c "$c" start >>"$d/start.log" 2>&1; then
		echo "start_postfix: postfix failed to start; log:" >&2
		tail -n 20 "$d/start.log" "$d/maillog" >&2 2>/dev/null
		return 1
	fi
	_track_pid "postfix:$c"
	wait_port "$POSTFIX_PORT"
}

# postfix_mailbox ADDR - a virtual Maildir mailbox (then start or reload)
postfix_mailbox() {
	printf '%s %s/%s/\n' "$1" "${1#*@}" "${1%@*}" >>"$POSTFIX_CONF/vmailbox"
}

postfix_maildir() {
	echo "$POSTFIX_MAIL/${1#*@}/${1%@*}"
}

postfix_reload() {
	local before i
	before=$(grep -c 'postfix/master.*reload' "$POSTFIX_LOG" 2>/dev/null)
	postfix -c "$POSTFIX_CONF" reload >/dev/null 2>&1 || return 1
	# the master logs the reload once it has re-read the configuration
	for ((i = 0; i < 200; i++)); do
		[ "$(grep -c 'postfix/master.*reload' "$POSTFIX_LOG" 2>/dev/null)" -gt "${before:-0}" ] &&
			return 0
		sleep 0.05
	done
	return 1
}

# ---- OAuth2 (issue 14): Dovecot's oauth2 passdb and the fake IdP ----------
#
# Facts about Dovecot 2.3.19 this relies on (checked against the installed
# 2.3.19.1, t_oauth2_infra.sh proves them): with introspection_mode = local
# the oauth2 passdb validates a JWT itself; local_validation_key_dict =
# fs:posix:prefix=KEYDIR/ reads an HS256 key from KEYDIR/default/HS256/default
# (the base64 secret, no newline; <azp> and <kid> replace "default" when the
# token has them, so faketoken.py puts neither in its tokens).  The header
# needs "typ":"JWT"; the body sub, exp, the username_attribute claim (email,
# equal to the login user, compared lowercased), an iss from `issuers`, and a
# `scope` claim holding one of the configured scopes.  Every directory down to
# the key must be world-readable: the auth process runs as dovecot.

# oauth2_key DIR - the HS256 secret shared by Dovecot, faketoken.py and
# fakepop3.py: DIR/oauth2.key (base64 of 32 random octets, no newline), made
# once; exports OAUTH2_KEYFILE and OAUTH2_ISSUER.  Already set: left alone.
oauth2_key() {
	local d=$1
	: "${OAUTH2_ISSUER:=https://idp.popgate.test}"
	export OAUTH2_ISSUER
	if [ -n "${OAUTH2_KEYFILE:-}" ] && [ -s "$OAUTH2_KEYFILE" ]; then
		return 0
	fi
	mkdir -p "$d"
	OAUTH2_KEYFILE=$d/oauth2.key
	[ -s "$OAUTH2_KEYFILE" ] ||
		openssl rand -base64 32 | tr -d '\n' >"$OAUTH2_KEYFILE" || return 1
	chmod 0644 "$OAUTH2_KEYFILE"
	export OAUTH2_KEYFILE
}

# start_dovecot_oauth2 DIR - start_dovecot DIR with an oauth2 passdb in front
# of the passwd-file one (mechanisms XOAUTH2 and OAUTHBEARER only, so a
# password login never reaches it).  Users are still made with
# dovecot_add_user (the userdb and the Maildir); their password keeps working
# with the other mechanisms.  DOVECOT_OAUTH2_SCOPE (space separated; a token
# needs one of them) defaults to the providers' POP3 scopes plus "mail".
start_dovecot_oauth2() {
	local d=$1 kd rc
	mkdir -p "$d"
	chmod 0755 "$d"
	oauth2_key "$d" || return 1
	kd=$d/oauth2-keys
	mkdir -p "$kd/default/HS256"
	cp "$OAUTH2_KEYFILE" "$kd/default/HS256/default"
	chmod 0755 "$kd" "$kd/default" "$kd/default/HS256"
	chmod 0644 "$kd/default/HS256/default"
	: "${DOVECOT_OAUTH2_SCOPE:=mail}"
	DOVECOT_OAUTH2_KEYDIR=$kd
	export DOVECOT_OAUTH2_KEYDIR DOVECOT_OAUTH2_SCOPE
	cat >"$d/dovecot-oauth2.conf.ext" <<EOF
# generated by test/lib/servers.sh start_dovecot_oauth2
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$kd/
username_attribute = email
issuers = $OAUTH2_ISSUER
scope = $DOVECOT_OAUTH2_SCOPE
debug = yes
EOF
	chmod 0644 "$d/dovecot-oauth2.conf.ext"
	# start_dovecot writes dovecot.conf and runs `dovecot -c CONF`: this
	# wrapper appends the oauth2 part in between, so start_dovecot stays
	# the one place the base configuration lives.  Later settings win in
	# Dovecot's config: auth_mechanisms is restated with the two added.
	dovecot() {
		cat >>"$DOVECOT_CONF" <<EOF

# ---- oauth2 (start_dovecot_oauth2) ----
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop xoauth2 oauthbearer
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DOVECOT_DIR/dovecot-oauth2.conf.ext
}
EOF
		command dovecot "$@"
	}
	start_dovecot "$d"
	rc=$?
	unset -f dovecot
	return "$rc"
}

# start_faketoken DIR [faketoken.py args] - the fake OAuth2 identity provider
# (test/fake/faketoken.py, whose header documents endpoints, clients, settings
# and faults) on a free port, HTTPS with a certificate from the test CA: the
# Dovecot's (DOVECOT_DIR) when there is one, else make_test_ca DIR.  State
# in DIR/state (kept across restart_faketoken).  Exports FAKETOKEN_PORT,
# FAKETOKEN_URL (https://localhost:PORT), FAKETOKEN_CA, FAKETOKEN_STATE,
# FAKETOKEN_DIR, FAKETOKEN_PID, and OAUTH2_KEYFILE / OAUTH2_ISSUER.
start_faketoken() {
	local d=$1 tls
	shift
	mkdir -p "$d/state"
	chmod 0755 "$d"
	oauth2_key "$d" || return 1
	if [ -n "${DOVECOT_DIR:-}" ] && [ -f "$DOVECOT_DIR/server.pem" ]; then
		tls=$DOVECOT_DIR
	else
		tls=$d
		[ -f "$d/server.pem" ] || make_test_ca "$d" || return 1
	fi
	FAKETOKEN_DIR=$d
	FAKETOKEN_CA=$tls/ca.pem
	FAKETOKEN_STATE=$d/state
	FAKETOKEN_ARGS=(--state-dir "$d/state" --cert "$tls/server.pem" --key "$tls/server.key"
		--hs256-key-file "$OAUTH2_KEYFILE" --issuer "$OAUTH2_ISSUER" "$@")
	export FAKETOKEN_DIR FAKETOKEN_CA FAKETOKEN_STATE
	_faketoken_run --port 0
}

# restart_faketoken - kill -9 the fake IdP and start it again on the same port
# with the same state directory.
restart_faketoken() {
	kill -KILL "$FAKETOKEN_PID" 2>/dev/null
	wait "$FAKETOKEN_PID" 2>/dev/null
	SERVERS_PIDS=${SERVERS_PIDS/fake:$FAKETOKEN_PID/}
	_faketoken_run --port "$FAKETOKEN_PORT"
}

_faketoken_run() {
	local d=$FAKETOKEN_DIR i
	rm -f "$d/faketoken.port"
	"$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/../fake/faketoken.py" "${FAKETOKEN_ARGS[@]}" \
		--port-file "$d/faketoken.port" "$@" >>"$FAKETOKEN_STATE/faketoken.log" 2>&1 &
	FAKETOKEN_PID=$!
	_track_pid "fake:$FAKETOKEN_PID"
	for ((i = 0; i < 400; i++)); do
		[ -s "$d/faketoken.port" ] && break
		kill -0 "$FAKETOKEN_PID" 2>/dev/null || break
		sleep 0.05
	done
	if [ ! -s "$d/faketoken.port" ]; then
		echo "start_faketoken: no port; log:" >&2
		tail -n 20 "$FAKETOKEN_STATE/faketoken.log" >&2
		return 1
	fi
	FAKETOKEN_PORT=$(cat "$d/faketoken.port")
	FAKETOKEN_URL=https://localhost:$FAKETOKEN_PORT
	export FAKETOKEN_PORT FAKETOKEN_URL FAKETOKEN_PID
}

# faketoken_ctl JSON - POST JSON to /_control; prints the reply, 1 unless ok
faketoken_ctl() {
	local out
	out=$(curl -sS --cacert "$FAKETOKEN_CA" -H 'Content-Type: application/json' \
		--data-binary "$1" "$FAKETOKEN_URL/_control") || return 1
	printf '%s\n' "$out"
	case $out in *'"ok": true'*) return 0 ;; esac
	return 1
}

faketoken_fault() {
	faketoken_ctl "{\"fault\": $1}" >/dev/null
}

faketoken_client() {
	faketoken_ctl "{\"client\": $1}" >/dev/null
}

# faketoken_stats [KEY...] - the /_stats JSON, or the values at the dotted
# KEYs, space separated (e.g. requests.token grants.refresh_token
# errors.invalid_grant; 0 when absent; strings and objects printed as JSON)
faketoken_stats() {
	curl -sS --cacert "$FAKETOKEN_CA" "$FAKETOKEN_URL/_stats" | "$PYTHON" -c '
import json, sys
stats = json.load(sys.stdin)
out = []
for key in sys.argv[1:] or [""]:
    v = stats
    for k in (key.split(".") if key else []):
        v = v.get(k, 0) if isinstance(v, dict) else 0
    out.append(str(v) if isinstance(v, (int, float)) else json.dumps(v, sort_keys=True))
print(" ".join(out))
' "$@"
}
