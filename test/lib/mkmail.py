#!/usr/bin/env python3
"""mkmail.py - test mail generator and checker for popgate's integration tests.

  mkmail.py gen --maildir DIR --expected DIR [--count N] [--prefix P]
                [--big-mib M] [--owner UID:GID] [--shapes all|simple]
      Writes N messages into DIR/new (LF line ends in the files, as a real
      maildir has; Dovecot serves them with CRLF) and, per message, the
      canonical form popgate must store and relay into EXPECTED/<X-Test-Id>:
      every line end CRLF, bare CR -> CRLF, a final CRLF ensured, every other
      byte unchanged.  EXPECTED/manifest.json maps each X-Test-Id to its
      expected envelope sender ("" = the null sender) and its shape.
      Shapes (cycled; "simple" uses only the first): plain, dots (lines
      starting with a dot, a line that is only "." also as the last line),
      utf8 (8-bit UTF-8 header and body), latin1 (8-bit ISO-8859-1 body),
      bare_cr (bare CR inside lines, CR before CRLF), crlf (the file already
      has CRLF line ends), no_final_nl, longline (one 5,000-octet line; popgate
      never folds it), blank_tail (empty lines at the end).  Some messages
      have a Return-Path, one has "Return-Path: <>", one (when --big-mib > 0)
      is about M MiB.  Every message has Date, From, To, Message-ID, Subject
      and a unique X-Test-Id, and no repeated To/Cc/From/Date headers (libesmtp
      would rewrite those).

  mkmail.py check --expected DIR --format sink|spool [--rcpt ADDR]
                  [--hostname H] [--ids-out FILE] FILE...
      Compares delivered files with the expected forms.  For --format sink
      each FILE is an smtp-sink dump (see servers.sh for its format); for
      --format spool each FILE is a popgate spool message file.  In both the
      content must start with popgate's Received header
        "Received: from HOST...\\r\\n\\tby HOSTNAME (popgate) with POP3 id ID\\r\\n
         \\tfor <RCPT>; DATE\\r\\n"
      followed by the expected form; at the sink, Return-Path header lines are
      removed from the expected form first (libesmtp strips them) and the
      envelope must be MAIL FROM:<sender from the manifest>, RCPT TO:<RCPT>.
      Prints "CHECK 0 description" (pass) or "CHECK 1 description" (fail)
      lines and "# ..." diagnostics; test/lib/common.sh's run_checks turns
      them into TAP.  --ids-out writes "X-Test-Id popgate-id" lines.
"""

import argparse
import json
import os
import re
import sys
import time

CRLF = b"\r\n"


def canonical(raw: bytes) -> bytes:
    """What popgate must make of RAW: CRLF everywhere, final CRLF."""
    out = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)
    if not out.endswith(CRLF):
        out += CRLF
    return out


SHAPES = ["plain", "dots", "utf8", "latin1", "bare_cr", "crlf",
          "no_final_nl", "longline", "blank_tail"]


def headers(tid, i, subject, return_path, extra=b""):
    h = b""
    if return_path is not None:
        h += b"Return-Path: " + return_path + b"\n"
    h += (b"Received: from mx.example.org by pop.example.net; "
          b"Mon, 1 Jan 2024 00:00:%02d +0000\n" % (i % 60))
    h += b"Date: Mon, 1 Jan 2024 12:%02d:%02d +0000\n" % ((i // 60) % 60, i % 60)
    h += b"From: Sender %d <sender%d@example.org>\n" % (i, i)
    h += b"To: Office <office@corp.example>\n"
    h += b"Message-ID: <" + tid.encode() + b"@mkmail.test>\n"
    h += b"Subject: " + subject + b"\n"
    h += b"X-Test-Id: " + tid.encode() + b"\n"
    h += extra
    return h


def body_for(shape, i, big_bytes):
    """Return (raw body bytes, subject) for SHAPE; raw uses LF unless noted."""
    if big_bytes:
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=+/ big\n"
        n = big_bytes // len(line) + 1
        parts = [b"%08d " % k + line for k in range(n)]
        return b"Big message.\n" + b"".join(parts) + b".\n..\n.end\n", b"big message"
    if shape == "plain":
        return (b"Hello,\n\nthis is message %d.\nRegards\n" % i), b"plain %d" % i
    if shape == "dots":
        return (b".leading dot\n..two dots\n.\n. space\nmiddle\n...\n.\n"), b"dots %d" % i
    if shape == "utf8":
        return ("Gr\u00fc\u00dfe aus K\u00f6ln \u2014 \u65e5\u672c\u8a9e \U0001F600\n"
                "na\u00efve caf\u00e9\n").encode("utf-8"), \
            ("utf8 \u00e9t\u00e9 %d" % i).encode("utf-8")
    if shape == "latin1":
        return ("Gr\u00fc\u00dfe, se\u00f1or, \u00e7a va? \u00a7\u00b5\u00ff\n".encode("latin-1")
                + bytes(range(0xa0, 0x100)) + b"\n"), b"latin1 %d" % i
    if shape == "bare_cr":
        return (b"one\rtwo\nthree\r\r\nfour\r\n\rfive\n"), b"bare cr %d" % i
    if shape == "crlf":
        return (b"already\r\ncrlf\r\n.dot\r\n"), b"crlf %d" % i
    if shape == "no_final_nl":
        return (b"first line\nno newline at the end"), b"no final newline %d" % i
    if shape == "longline":
        return (b"before\n" + long_line(i) + b"\nafter\n"), b"long line %d" % i
    if shape == "blank_tail":
        return (b"text\n\n\n\n"), b"blank tail %d" % i
    raise ValueError(shape)


LONG = 5000


def long_line(i):
    base = b"L%06d-" % i
    s = (base + b"x" * 97 + b" ") * (LONG // 105 + 1)
    return s[:LONG]


def cmd_gen(a):
    md = a.maildir
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    os.makedirs(a.expected, exist_ok=True)
    manpath = os.path.join(a.expected, "manifest.json")
    manifest = {}
    if os.path.exists(manpath):
        with open(manpath) as f:
            manifest = json.load(f)
    owner = None
    if a.owner:
        u, g = a.owner.split(":")
        owner = (int(u), int(g))
    shapes = SHAPES if a.shapes == "all" else ["plain"]
    now = int(time.time())
    big_at = a.count // 2 if a.big_mib > 0 else -1
    for i in range(a.count):
        tid = "%s-%05d" % (a.prefix, i)
        shape = shapes[i % len(shapes)]
        big = (a.big_mib << 20) if i == big_at else 0
        if big:
            shape = "big"
        # envelope sender: Return-Path on about two thirds of the messages,
        # "<>" on exactly one, none on the rest (popgate then falls back to
        # Sender, then From: here the From address).
        if i == 1:
            rp, sender = b"<>", ""
        elif i % 3 != 2:
            sender = "bounce-%d@lists.example.org" % i
            rp = b"<" + sender.encode() + b">"
        else:
            rp, sender = None, "sender%d@example.org" % i
        body, subject = body_for(shape, i, big)
        raw = headers(tid, i, subject, rp) + b"\n" + body
        if shape == "crlf":
            raw = raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
        name = "%d.M%dP%d.mkmail-%s" % (now, i, os.getpid(), tid)
        path = os.path.join(md, "new", name)
        with open(path, "wb") as f:
            f.write(raw)
        os.chmod(path, 0o644)
        if owner:
            os.chown(path, *owner)
        with open(os.path.join(a.expected, tid), "wb") as f:
            f.write(canonical(raw))
        manifest[tid] = {"sender": sender, "shape": shape, "file": name}
    with open(manpath, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return 0


# ---------------------------------------------------------------- check

RECEIVED_RE = (rb"\AReceived: from [^\r\n]+\r\n\tby (?P<host>[^ \r\n]+) \(popgate\) "
               rb"with POP3 id (?P<id>[0-9A-Za-z._-]+)\r\n\tfor <(?P<rcpt>[^>\r\n]*)>; "
               rb"(?P<date>[^\r\n]+)\r\n")


def split_sink_dump(data):
    lines = data.split(b"\n")
    env = {"from": None, "rcpt": []}
    i = 0
    while i < len(lines) and lines[i].startswith(b"X-"):
        m = re.match(rb"X-(Mail|Rcpt)-Args: (?:(?:FROM|TO):)?<([^>]*)>", lines[i], re.I)
        if m and m.group(1).lower() == b"mail":
            env["from"] = m.group(2).decode("latin-1")
        elif m:
            env["rcpt"].append(m.group(2).decode("latin-1"))
        i += 1
    if i >= len(lines) or not lines[i].startswith(b"Received: "):
        return None, env
    body = b"\n".join(lines[i + 3:])
    if body.endswith(b"\n"):
        body = body[:-1]
    return body.replace(b"\n", CRLF), env


def strip_return_path(msg):
    """Remove Return-Path header fields (with continuation lines) from MSG."""
    end = msg.find(b"\r\n\r\n")
    head, rest = (msg, b"") if end < 0 else (msg[:end + 2], msg[end + 2:])
    out, skipping = [], False
    for line in head.split(CRLF)[:-1]:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"return-path:")
        if not skipping:
            out.append(line + CRLF)
    return b"".join(out) + rest


def test_id_of(msg):
    end = msg.find(b"\r\n\r\n")
    head = msg if end < 0 else msg[:end + 2]
    m = re.search(rb"^X-Test-Id: (\S+)\r$", head, re.M)
    return m.group(1).decode() if m else None


def first_diff(a, b):
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


def cmd_check(a):
    with open(os.path.join(a.expected, "manifest.json")) as f:
        manifest = json.load(f)
    results = []  # (ok, desc)
    diags = []
    seen = {}
    bad_received, bad_content, bad_env, unknown = [], [], [], []
    ids_out = []
    for path in a.files:
        with open(path, "rb") as f:
            data = f.read()
        env = None
        if a.format == "sink":
            content, env = split_sink_dump(data)
            if content is None:
                bad_received.append((path, "not an smtp-sink dump"))
                continue
        else:
            content = data
        m = re.match(RECEIVED_RE, content)
        if not m:
            bad_received.append((path, content[:300]))
            rest = content
        else:
            rest = content[m.end():]
            if a.rcpt and m.group("rcpt").decode("latin-1") != a.rcpt:
                bad_received.append((path, b"for <%s>" % m.group("rcpt")))
            elif a.hostname and m.group("host").decode("latin-1") != a.hostname:
                bad_received.append((path, b"by " + m.group("host")))
        tid = test_id_of(rest)
        if tid is None or tid not in manifest:
            unknown.append(path)
            continue
        seen.setdefault(tid, []).append(path)
        if m:
            ids_out.append("%s %s\n" % (tid, m.group("id").decode("latin-1")))
        with open(os.path.join(a.expected, tid), "rb") as f:
            exp = f.read()
        if a.format == "sink":
            exp = strip_return_path(exp)
        if rest != exp:
            k = first_diff(rest, exp)
            bad_content.append((tid, path, k, rest[max(0, k - 40):k + 40],
                                exp[max(0, k - 40):k + 40], len(rest), len(exp)))
        if env is not None:
            want_from = manifest[tid]["sender"]
            if env["from"] != want_from or env["rcpt"] != [a.rcpt]:
                bad_env.append((tid, env, want_from))
    missing = sorted(t for t in manifest if t not in seen)
    dups = sorted(t for t, p in seen.items() if len(p) > 1)
    n = len(manifest)

    results.append((not missing, "every one of the %d expected messages is present" % n))
    for t in missing[:10]:
        diags.append("missing: %s (%s)" % (t, manifest[t]["shape"]))
    if len(missing) > 10:
        diags.append("... and %d more missing" % (len(missing) - 10))
    results.append((not dups and not unknown,
                    "each message present exactly once, nothing unexpected"))
    for t in dups[:10]:
        diags.append("duplicate: %s in %s" % (t, " ".join(seen[t])))
    for p in unknown[:10]:
        diags.append("no known X-Test-Id in %s" % p)
    results.append((not bad_received, "each starts with popgate's Received header"
                    + (" for <%s>" % a.rcpt if a.rcpt else "")))
    for p, what in bad_received[:5]:
        diags.append("bad Received in %s: %r" % (p, what))
    results.append((not bad_content, "content is byte-identical to the canonical form"
                    + (" (less Return-Path)" if a.format == "sink" else "")))
    for tid, p, k, got, exp, lg, le in bad_content[:5]:
        diags.append("%s (%s, %s): differs at octet %d (got %d octets, expected %d)"
                     % (tid, manifest[tid]["shape"], p, k, lg, le))
        diags.append("   got: %r" % got)
        diags.append("   exp: %r" % exp)
    if len(bad_content) > 5:
        diags.append("... %d messages differ in all" % len(bad_content))
    if a.format == "sink":
        results.append((not bad_env, "envelope: MAIL FROM = Return-Path, else From, or <>; RCPT TO = <%s>"
                        % a.rcpt))
        for tid, env, want in bad_env[:5]:
            diags.append("%s: MAIL FROM:<%s> RCPT %s; expected MAIL FROM:<%s> RCPT [%s]"
                         % (tid, env["from"], env["rcpt"], want, a.rcpt))
    # shapes of special interest get their own line, so a failure is named
    bad_tids = {x[0] for x in bad_content} | set(missing)
    for shape, desc in (("longline", "the 5000-octet line arrived unchanged (never folded)"),
                        ("big", "the big message arrived intact"),
                        ("dots", "dot lines arrived intact"),
                        ("bare_cr", "bare CRs became CRLF"),
                        ("no_final_nl", "a final CRLF was added where none was")):
        tids = [t for t in manifest if manifest[t]["shape"] == shape]
        if tids:
            results.append((not any(t in bad_tids for t in tids), desc))
    if a.ids_out:
        with open(a.ids_out, "w") as f:
            f.writelines(ids_out)
    for d in diags:
        print("# " + d)
    for ok, desc in results:
        print("CHECK %d %s" % (0 if ok else 1, desc))
    return 0 if all(ok for ok, _ in results) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--maildir", required=True)
    g.add_argument("--expected", required=True)
    g.add_argument("--count", type=int, default=10)
    g.add_argument("--prefix", default="msg")
    g.add_argument("--big-mib", type=int, default=0)
    g.add_argument("--owner")
    g.add_argument("--shapes", choices=("all", "simple"), default="all")
    c = sub.add_parser("check")
    c.add_argument("--expected", required=True)
    c.add_argument("--format", choices=("sink", "spool"), required=True)
    c.add_argument("--rcpt")
    c.add_argument("--hostname")
    c.add_argument("--ids-out")
    c.add_argument("files", nargs="*")
    a = p.parse_args()
    return cmd_gen(a) if a.cmd == "gen" else cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
