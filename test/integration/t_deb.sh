#!/bin/bash
# t_deb.sh - the Debian package, installed for real: build it with
# dpkg-buildpackage, run lintian, install it with apt into a clean root of
# the host's suite (debootstrap, cached as a tarball under
# /var/cache/popgate-test/), and check the files, the user, the spool, the
# shipped configuration, the units; boot the root (systemd-nspawn --boot)
# to see the service idle and not failed, the timer not enabled, and an
# upgrade restart the daemon on the new binary; poll and relay from inside
# the root against the suite's Dovecot and smtp-sink on loopback; upgrade
# with mail queued; remove; purge with a spool holding unsent mail (kept)
# and an empty one (removed); and nothing left behind but the documented.
#
# Skipped in the sanitizer build (the package is built from the sources,
# once is enough), when not root, and without the packaging tools
# (./quickstart installs them).  The newer builds are the same build
# repacked with a higher version (dpkg-deb): a real upgrade of the files.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
if [ -x "${POPGATE:-}" ] && nm "$POPGATE" 2>/dev/null | grep -q '__asan_init\|__ubsan'; then
	skip_all "sanitizer build: the package is built and installed in the normal build"
fi
require_env
for t in dpkg-buildpackage dh lintian debootstrap systemd-nspawn; do
	command -v "$t" >/dev/null 2>&1 || skip_all "$t is not installed (./quickstart installs it)"
done
. /etc/os-release
SUITE=${VERSION_CODENAME:-}
[ -n "$SUITE" ] || skip_all "no VERSION_CODENAME in /etc/os-release"

# mirror_of SUITE - the host's own archive for SUITE (deb822 .sources, else
# one-line sources.list entries), so no host name is written in the repo
mirror_of() {
	local u
	u=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$1" '
		/^$/ { u = "" } /^URIs:/ { u = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s && u != "") { print u; exit } }')
	[ -n "$u" ] || u=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v s="$1" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($(i + 1) == s) { print $i; exit } }')
	echo "$u"
}

CACHE=/var/cache/popgate-test
TARBALL=$CACHE/debootstrap-$SUITE.tar
ARCHIVES=$CACHE/archives-$SUITE
ROOT=$TESTDIR/root
B=$TESTDIR/build
mkdir -p "$CACHE" "$ARCHIVES/partial" "$B"

# ---- the package, built once ------------------------------------------------
(cd "$top_srcdir" && if git rev-parse --git-dir >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -
else
	tar --exclude=./build-asan --exclude=./build-deb --exclude=./autom4te.cache -cf - .
fi) | (mkdir -p "$B/popgate" && tar -xf - -C "$B/popgate")
(cd "$B/popgate" && [ ! -f Makefile ] || make distclean >/dev/null 2>&1 || true)
(cd "$B/popgate" && dpkg-buildpackage -us -uc -b -j"$(nproc)") >"$TESTDIR/build.log" 2>&1
is "$?" 0 "dpkg-buildpackage -us -uc -b builds the package" || { tail -n 30 "$TESTDIR/build.log"; bail_out "no package"; }
AC_VERSION=$(sed -n '/^AC_INIT/{s/^[^,]*, *\[//;s/\].*//;p;}' "$top_srcdir/configure.ac")
DEB=$(ls "$B"/popgate_*_amd64.deb 2>/dev/null | head -n 1)
V1=$(dpkg-deb -f "$DEB" Version)
is "$V1" "$AC_VERSION" "the package version is configure.ac's ($AC_VERSION)"

lintian --fail-on none "$B"/popgate_*_amd64.changes >"$TESTDIR/lintian.log" 2>&1
grep -v '^running with root' "$TESTDIR/lintian.log" | sed 's/^/# lintian: /'
is "$(grep -cE '^(E|W): ' "$TESTDIR/lintian.log")" 0 "lintian: no error, no warning left (the rest is overridden)"

# repack VERSION - the same build as a newer package (a real upgrade of files)
repack() {
	local d=$B/repack-$1
	rm -rf "$d"
	dpkg-deb -R "$DEB" "$d"
	sed -i "s/^Version: .*/Version: $1/" "$d/DEBIAN/control"
	dpkg-deb -b -Zxz "$d" "$B/popgate_$1_amd64.deb" >/dev/null
	rm -rf "$d"
}
V2=$V1+t2
V3=$V1+t3
repack "$V2"
repack "$V3"

# ---- the root: a clean debootstrap, cached per suite ------------------------
MIRROR=$(mirror_of "$SUITE")
[ -n "$MIRROR" ] || skip_all "no archive for $SUITE in the host's apt sources"
(
	flock 9
	if [ ! -s "$TARBALL" ]; then
		tmp=$(mktemp -d "$CACHE/root.XXXXXX")
		debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
			"$SUITE" "$tmp" "$MIRROR" >"$TESTDIR/debootstrap.log" 2>&1 &&
			chroot "$tmp" apt-get update -qq >>"$TESTDIR/debootstrap.log" 2>&1 &&
			chmod 0755 "$tmp" && tar -C "$tmp" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
		rm -rf "$tmp"
	fi
) 9>"$CACHE/.lock"
[ -s "$TARBALL" ] || { tail -n 20 "$TESTDIR/debootstrap.log"; bail_out "debootstrap $SUITE failed"; }
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$TARBALL" || bail_out "cannot unpack $TARBALL"
chmod 0755 "$ROOT" # the container's /
# what the installer writes and debootstrap does not
[ -e "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n' >"$ROOT/etc/hosts"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null

# nspawn's own scope needs systemd as the host's PID 1 (over D-Bus); without
# it the container lives in the test's cgroup (--keep-unit)
NSPAWN="systemd-nspawn -q -D $ROOT --register=no"
[ -d /run/systemd/system ] || NSPAWN="$NSPAWN --keep-unit"
# in_root CMD... - run in the root (host network, the apt archive cache shared)
in_root() {
	$NSPAWN --console=pipe \
		--bind="$ARCHIVES:/var/cache/apt/archives" \
		--setenv=DEBIAN_FRONTEND=noninteractive -- "$@" 2> >(nspawn_noise >&2)
}
# nspawn_noise - without systemd as the host's PID 1, nspawn complains that
# it cannot clean up a propagation directory; nothing else is dropped
nspawn_noise() { grep -v '^Attempted to remove disk file system under'; }
# apt_install DEB - apt, dependencies from the archive (lists refreshed once
# when the cached ones are too old to resolve them)
apt_install() {
	cp "$1" "$ROOT/root/"
	local f=/root/$(basename "$1")
	in_root apt-get install -y -q --no-install-recommends "$f" >>"$TESTDIR/apt.log" 2>&1 && return 0
	in_root apt-get update -qq >>"$TESTDIR/apt.log" 2>&1
	in_root apt-get install -y -q --no-install-recommends "$f" >>"$TESTDIR/apt.log" 2>&1
}
leftovers() { # every path in the root that names popgate, but our own files
	find "$ROOT" -xdev \( -path "$ROOT/proc" -o -path "$ROOT/root" \) -prune -o \
		-name '*popgate*' -print -prune | sed "s|^$ROOT||" | sort
}
is "$(leftovers)" "" "the clean root has nothing of popgate"
SNAP_PASSWD=$(cut -d: -f1 "$ROOT/etc/passwd" | sort)

# ---- install -------------------------------------------------------------------
apt_install "$DEB"
is "$?" 0 "apt installs ./$(basename "$DEB") with its dependencies from the archive" ||
	{ tail -n 30 "$TESTDIR/apt.log"; bail_out "install failed"; }
is "$(in_root dpkg-query -W -f='${Version}' popgate)" "$V1" "popgate $V1 is installed"
is "$(in_root /usr/sbin/popgate --version | head -n 1)" "popgate $V1" "popgate --version agrees"
mode() { in_root stat -c '%a %U:%G' "$1" 2>&1; } # names from the root's passwd
is "$(mode /usr/sbin/popgate)" "755 root:root" "/usr/sbin/popgate 0755 root"
is "$(mode /etc/popgate/popgate.conf)" "644 root:root" "/etc/popgate/popgate.conf 0644 root"
is "$(mode /var/spool/popgate)" "750 popgate:popgate" "/var/spool/popgate popgate:popgate 0750"
for f in /usr/share/man/man8/popgate.8.gz /usr/share/man/man5/popgate.conf.5.gz \
	/lib/systemd/system/popgate.service /lib/systemd/system/popgate-batch.service \
	/lib/systemd/system/popgate-batch.timer /usr/share/doc/popgate/README.md.gz \
	/usr/share/doc/popgate/changelog.gz /usr/share/doc/popgate/copyright \
	/usr/share/doc/popgate/examples/office.conf; do
	is "$(mode "$f")" "644 root:root" "$f installed, 0644"
done
# the OAuth2 module (libcurl, jansson) in the pkglibdir, loaded by the
# installed binary when a token request is made; the binary links neither
MODULE=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/popgate/popgate-oauth2.so
is "$(mode "$MODULE")" "644 root:root" "$MODULE installed, 0644"
out=$(in_root ldd /usr/sbin/popgate 2>&1)
ok '[[ ! $out =~ libcurl|libjansson ]]' "ldd /usr/sbin/popgate: no libcurl, no jansson"
like "$(in_root ldd "$MODULE" 2>&1)" "libcurl" "ldd $MODULE: libcurl"
# (in the root's /srv: nspawn gives the container its own /tmp)
mkdir -p "$ROOT/srv/oauthtest"
printf 'cc-S3cret\n' >"$ROOT/srv/oauthtest/cc.secret"
in_root sh -c 'chown -R popgate:popgate /srv/oauthtest && chmod 0600 /srv/oauthtest/cc.secret'
cat >"$ROOT/srv/oauthtest/oauth.conf" <<EOF
spool_dir = "/srv/oauthtest/spool"
user = "popgate"
account "cc" {
  server = "localhost"
  user = "cc@corp.example"
  auth = "xoauth2"
  deliver_to = "cc@corp.example"
  oauth2 {
    provider = "microsoft"
    tenant = "contoso.example"
    client_id = "cc"
    flow = "client_credentials"
    client_secret_file = "/srv/oauthtest/cc.secret"
    token_endpoint = "https://127.0.0.1:9/token"
  }
}
EOF
out=$(in_root /usr/sbin/popgate -c /srv/oauthtest/oauth.conf authorize cc 2>&1)
rc=$?
ok "[ '$rc' != 0 ]" "authorize of a client_credentials account with no identity provider fails"
[ "$rc" != 0 ] || diag "$out"
like "$out" "https://127.0.0.1:9/token" "... at the token request (the installed binary loaded $MODULE)"
ok '[[ ! $out =~ "cannot load the OAuth2 module" ]]' "... not at loading the module"
rm -rf "$ROOT/srv/oauthtest"
like "$(head -n 1 "$ROOT/usr/share/doc/popgate/copyright")" "^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" \
	"the copyright file is machine-readable"
is "$(in_root dpkg-query -W -f='${Conffiles}' popgate | awk '{print $1}' | tr -d ' ')" \
	"/etc/popgate/popgate.conf" "/etc/popgate/popgate.conf is the one conffile"
pw=$(grep '^popgate:' "$ROOT/etc/passwd")
uid=$(echo "$pw" | cut -d: -f3)
ok "[ '$uid' -gt 0 ] && [ '$uid' -lt 1000 ]" "popgate is a system user (uid $uid)"
is "$(echo "$pw" | cut -d: -f6,7)" "/var/spool/popgate:/usr/sbin/nologin" "its home is the spool, no shell"
is "$(in_root id -gn popgate)" "popgate" "its group is popgate"
out=$(in_root /usr/sbin/popgate check-config 2>&1)
is "$?" 0 "popgate check-config accepts the shipped file"
like "$out" "ok \(0 accounts" "and it has no account"
like "$out" "no account is configured" "and warns that nothing is polled"
out=$(in_root systemd-analyze verify --man=no popgate.service popgate-batch.service \
	popgate-batch.timer 2>&1)
is "$?" 0 "systemd-analyze verify passes for the installed units"
[ -z "$out" ] || diag "$out"
is "$(in_root systemctl is-enabled popgate.service)" "enabled" "popgate.service is enabled"
is "$(in_root systemctl is-enabled popgate-batch.timer)" "disabled" "popgate-batch.timer is not enabled"

# ---- the suite's servers on loopback, and an admin's account ---------------------
start_dovecot "$TESTDIR/pop" || bail_out "cannot start Dovecot"
start_smtp_sink "$TESTDIR" || bail_out "cannot start smtp-sink"
dovecot_add_user office 'office-pass'
write_conf() { # an admin's edit of the conffile: the shipped file, one account added
	local to=${1:-/etc/popgate/popgate.conf}
	cp "$TESTDIR/pop/ca.pem" "$ROOT/etc/popgate/pop-ca.pem"
	printf 'office-pass\n' >"$ROOT/etc/popgate/office.pass"
	in_root sh -c 'chown popgate:popgate /etc/popgate/office.pass && chmod 0600 /etc/popgate/office.pass'
	{
		sed "s/^    port = 25$/    port = $SMTP_PORT/" "$B/popgate/debian/popgate.conf"
		conf_account office server localhost port "$POP3_PORT" tls starttls \
			ca_file /etc/popgate/pop-ca.pem user office password_file /etc/popgate/office.pass \
			deliver_to office@corp.example keep false
	} >"$ROOT$to"
}
write_conf /root/account.conf # for the probe's reload

# ---- boot: idle, not failed; an upgrade restarts it on the new binary ----------
cp "$B/popgate_${V2}_amd64.deb" "$ROOT/root/upgrade.deb"
cat >"$ROOT/root/probe.sh" <<'EOF'
#!/bin/sh
exec >/root/probe.out 2>&1
settle() {
	for i in $(seq 1 150); do
		[ "$(systemctl is-active popgate.service)" = activating ] || return 0
		sleep 0.2
	done
}
exe() { readlink "/proc/$(systemctl show -p MainPID --value popgate.service)/exe"; }
settle
echo "is-active=$(systemctl is-active popgate.service)"
echo "is-failed=$(systemctl is-failed popgate.service)"
echo "timer=$(systemctl is-enabled popgate-batch.timer) $(systemctl is-active popgate-batch.timer)"
echo "pid1=$(systemctl show -p MainPID --value popgate.service)"
systemctl status --no-pager --lines=5 popgate.service | sed 's/^/status: /'
dpkg -i /root/upgrade.deb >/root/upgrade.log 2>&1
echo "upgrade-rc=$?"
settle
echo "pid2=$(systemctl show -p MainPID --value popgate.service)"
echo "exe2=$(exe)"
echo "is-active2=$(systemctl is-active popgate.service)"
# an account added, then `systemctl reload`: polled, said in the status
cp /root/account.conf /etc/popgate/popgate.conf
systemctl reload popgate.service
echo "reload-rc=$?"
for i in $(seq 1 150); do
	case $(systemctl show -p StatusText --value popgate.service) in polling*) break ;; esac
	sleep 0.2
done
echo "status3=$(systemctl show -p StatusText --value popgate.service)"
echo "is-active3=$(systemctl is-active popgate.service)"
for i in $(seq 1 150); do
	journalctl -q --no-pager -u popgate.service | grep -q 'account=office status=' && break
	sleep 0.2
done
journalctl -q --no-pager -u popgate.service | sed 's/^/journal: /'
systemctl --no-block start poweroff.target
EOF
chmod 0755 "$ROOT/root/probe.sh"
cat >"$ROOT/etc/systemd/system/pgprobe.service" <<'EOF'
[Unit]
Description=t_deb.sh probe
After=popgate.service
[Service]
Type=oneshot
ExecStart=/root/probe.sh
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/pgprobe.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
timeout 180 $NSPAWN --boot \
	--bind="$ARCHIVES:/var/cache/apt/archives" </dev/null >"$TESTDIR/boot.log" 2>&1
brc=$?
rm -f "$ROOT/etc/systemd/system/pgprobe.service" "$ROOT/etc/systemd/system/multi-user.target.wants/pgprobe.service"
P=$(cat "$ROOT/root/probe.out" 2>/dev/null)
if [ -z "$P" ] && ! grep -q 'Welcome to' "$TESTDIR/boot.log"; then
	# systemd never came up in the container: this machine cannot boot
	# one.  What can still be checked: the unit's ExecStart, as its user,
	# under the shipped file stays up idle and says why; the upgrade
	# itself (without a running daemon to restart).
	why="systemd-nspawn --boot does not work here ($(grep -v '^$' "$TESTDIR/boot.log" | tail -n 1))"
	diag "$why"
	skip 12 "$why"
	in_root setpriv --reuid=popgate --regid=popgate --init-groups timeout 3 \
		/usr/sbin/popgate -c /etc/popgate/popgate.conf run -f >"$TESTDIR/idle.log" 2>&1
	is "$?" 124 "without a booted systemd: ExecStart under the shipped file stays up"
	like "$(cat "$TESTDIR/idle.log")" 'status=idle reason="no account in /etc/popgate/popgate.conf"' \
		"and logs why it is idle"
	apt_install "$B/popgate_${V2}_amd64.deb"
	is "$?" 0 "upgrade to $V2"
else
	[ -n "$P" ] || diag "systemd-nspawn --boot exited $brc without the probe's output: $(tail -n 20 "$TESTDIR/boot.log")"
	probe() { echo "$P" | sed -n "s/^$1=//p" | head -n 1; }
	is "$(probe is-active)" "active" "booted: popgate.service is active (idle)"
	isnt "$(probe is-failed)" "failed" "booted: popgate.service is not failed"
	like "$P" "Status: \"idle: no account in /etc/popgate/popgate.conf\"" "systemctl status says why it is idle"
	is "$(probe timer)" "disabled inactive" "booted: popgate-batch.timer installed, not enabled"
	is "$(probe upgrade-rc)" 0 "upgrade to $V2 under the running daemon"
	p1=$(probe pid1) p2=$(probe pid2)
	ok "[ -n '$p1' ] && [ -n '$p2' ] && [ '$p1' != 0 ] && [ '$p1' != '$p2' ]" \
		"the upgrade restarted the daemon (pid $p1 -> $p2)"
	is "$(probe exe2)" "/usr/sbin/popgate" "the restarted daemon runs the new binary"
	is "$(probe is-active2)" "active" "and it is active again"
	is "$(probe reload-rc)" 0 "an account added: systemctl reload popgate succeeds"
	is "$(probe status3)" "polling 1 account, relaying" "and systemctl status says it polls it"
	is "$(probe is-active3)" "active" "popgate.service is still active"
	like "$P" "journal: .*account=office status=ok" "the account was polled"
	[ -n "$P" ] && echo "$P" | grep -E '^(status|journal):' | sed 's/^/# /' | head -n 30
fi
is "$(in_root dpkg-query -W -f='${Version}' popgate)" "$V2" "popgate $V2 is installed"

# ---- poll and relay from inside the root ----------------------------------------
mail_gen --maildir "$(maildir_of office)" --expected "$TESTDIR/exp1" --count 3 --prefix one ||
	bail_out "mkmail failed"
write_conf
in_root /usr/sbin/popgate poll --once >>"$TESTDIR/popgate.log" 2>&1
is "$?" 0 "poll --once inside the root"
is "$(maildir_count office)" 0 "the mailbox is drained"
in_root /usr/sbin/popgate relay --once >>"$TESTDIR/popgate.log" 2>&1
is "$?" 0 "relay --once inside the root"
is "$(sink_count)" 3 "the three messages reached smtp-sink"
# popgate's own rule: a spool directory it owns is tightened to 0700
is "$(mode /var/spool/popgate)" "700 popgate:popgate" "popgate tightened its spool to 0700 on first use"

# ---- upgrade with mail queued -----------------------------------------------------
mail_gen --maildir "$(maildir_of office)" --expected "$TESTDIR/exp2" --count 2 --prefix two ||
	bail_out "mkmail failed"
in_root /usr/sbin/popgate poll --once >>"$TESTDIR/popgate.log" 2>&1
queued() { in_root /usr/sbin/popgate queue 2>/dev/null | sed -n 's/^-- \([0-9]*\) message.*/\1/p'; }
is "$(queued)" 2 "two messages queued before the upgrade"
conf_sum=$(md5sum <"$ROOT/etc/popgate/popgate.conf")
in_root chmod 0750 /var/spool/popgate # an admin's choice the upgrade must keep
spool_before="$(grep '^popgate:' "$ROOT/etc/passwd") $(mode /var/spool/popgate)"
apt_install "$B/popgate_${V3}_amd64.deb"
is "$?" 0 "apt upgrades to $V3 with mail queued"
is "$(in_root dpkg-query -W -f='${Version}' popgate)" "$V3" "popgate $V3 is installed"
is "$(md5sum <"$ROOT/etc/popgate/popgate.conf")" "$conf_sum" "the admin's configuration is kept"
is "$(grep '^popgate:' "$ROOT/etc/passwd") $(mode /var/spool/popgate)" "$spool_before" \
	"the user and the spool (mode 0750 set by the admin) are left as they were"
is "$(queued)" 2 "the two messages are still queued after the upgrade"
in_root /usr/sbin/popgate relay --once >>"$TESTDIR/popgate.log" 2>&1
is "$(sink_count) $(queued)" "5 0" "and relayed by the upgraded popgate"

# ---- remove, purge with unsent mail: the spool stays ----------------------------
mail_gen --maildir "$(maildir_of office)" --expected "$TESTDIR/exp3" --count 1 --prefix three ||
	bail_out "mkmail failed"
in_root /usr/sbin/popgate poll --once >>"$TESTDIR/popgate.log" 2>&1
is "$(queued)" 1 "one message queued before remove"
in_root apt-get remove -y -q popgate >"$TESTDIR/remove.log" 2>&1
is "$?" 0 "apt remove"
ok "[ ! -e '$ROOT/usr/sbin/popgate' ] && [ -f '$ROOT/etc/popgate/popgate.conf' ] && [ -f '$ROOT/var/spool/popgate/index.db' ]" \
	"remove: the program is gone, the configuration and the spool stay"
in_root apt-get purge -y -q popgate >"$TESTDIR/purge1.log" 2>&1
is "$?" 0 "apt purge"
like "$(cat "$TESTDIR/purge1.log")" "/var/spool/popgate kept: it holds 1 unsent message" "purge says the spool is kept"
ok "[ ! -e '$ROOT/etc/popgate' ] && [ -f '$ROOT/var/spool/popgate/index.db' ]" \
	"purge: the configuration is gone, the spool with its unsent message stays"
is "$(leftovers)" "/var/spool/popgate" "nothing else of popgate is left"

# ---- reinstall on the kept spool, relay, purge an empty spool -------------------
apt_install "$B/popgate_${V3}_amd64.deb"
is "$?" 0 "apt installs popgate again over the kept spool"
write_conf
in_root /usr/sbin/popgate relay --once >>"$TESTDIR/popgate.log" 2>&1
is "$(sink_count) $(queued)" "6 0" "the kept message is relayed"
in_root apt-get purge -y -q popgate >"$TESTDIR/purge2.log" 2>&1
is "$?" 0 "apt purge (nothing unsent)"
is "$(leftovers)" "" "purge with no unsent mail leaves nothing of popgate"
is "$(cut -d: -f1 "$ROOT/etc/passwd" | sort | comm -13 <(echo "$SNAP_PASSWD") -)" "popgate" \
	"but the system user popgate, as documented"
[ "${KEEP_TESTDIR:-0}" = 1 ] || rm -rf "$ROOT"
done_testing
