#!/bin/bash
# t_install.sh - `make install` puts the program, both man pages and the
# example configuration where an admin looks for them.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
[ -f "$top_builddir/Makefile" ] || skip_all "no configured build tree"

ROOT=$TESTDIR/root
make -s -C "$top_builddir" install DESTDIR="$ROOT" prefix=/usr sysconfdir=/etc \
	localstatedir=/var >"$TESTDIR/install.log" 2>&1
is "$?" 0 "make install DESTDIR=... succeeds" || note "$TESTDIR/install.log"
ok "[ -x $ROOT/usr/sbin/popgate ]" "popgate installed in sbin"
ok "[ -f $ROOT/usr/share/man/man8/popgate.8 ]" "popgate(8) installed"
ok "[ -f $ROOT/usr/share/man/man5/popgate.conf.5 ]" "popgate.conf(5) installed"
ok "[ -f $ROOT/etc/popgate/popgate.conf.example ]" "example config in /etc/popgate"
ok "[ -f $ROOT/usr/share/doc/popgate/examples/popgate.conf ]" "example config in the docs"
like "$("$ROOT/usr/sbin/popgate" --version)" "^popgate [0-9]" "the installed binary runs"
make -s -C "$top_builddir" uninstall DESTDIR="$ROOT" prefix=/usr sysconfdir=/etc \
	localstatedir=/var >>"$TESTDIR/install.log" 2>&1
is "$(find "$ROOT" -type f | wc -l)" 0 "make uninstall removes every installed file"
done_testing
