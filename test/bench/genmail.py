"""genmail.py DIR COUNT SIZE [TAG] - COUNT messages of about SIZE octets into
the Maildir folder DIR (its new/ or cur/), the benchmarks' mailbox.

Each message has a Message-Id and an X-Test-Id; its body is lines of 77
octets.  TAG (default "") goes into the file names and the Message-Ids, so
that a mailbox made anew gets new UIDLs (Dovecot must not mistake the new
files for old ones) and new duplicate-detection keys.
"""
import os
import sys

d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tag = sys.argv[4] if len(sys.argv) > 4 else ""
line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\n"
chunk = line * 1024
mid = tag.encode() + b"." if tag else b""
for i in range(n):
    hdr = (b"From: sender@example.org\nTo: bench@corp.example\nSubject: bench %d\n"
           b"Message-Id: <bench.%s%d@example.org>\nDate: Sun, 22 Nov 2026 02:00:00 +0000\n"
           b"X-Test-Id: b-%d\n\n" % (i, mid, i, i))
    with open(os.path.join(d, "%d.g%s_%06d.host" % (1700000000 + i, tag, i)), "wb") as f:
        f.write(hdr)
        left = max(size - len(hdr), len(line))
        while left >= len(chunk):
            f.write(chunk)
            left -= len(chunk)
        f.write(line * (left // len(line) + 1))
