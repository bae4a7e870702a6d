#!/usr/bin/env python3
"""seeds.py - write the seed corpora of the header fuzz targets (route,
sender, notice) into test/fuzz/corpus/: real-world header shapes.  Big
shapes use the repeat encoding of fuzz_hdrs.h (0x01 'R', 3-byte count,
1-byte length, the unit), so no seed file is over a few KiB:
'big-header' is one 10 MiB field, 'many-headers' 100,000 fields."""
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))


def rep(count, unit):
    assert 0 < len(unit) < 256 and count < 1 << 24
    return b"\x01R" + struct.pack(">I", count)[1:] + bytes([len(unit)]) + unit


MSGS = {
    "issue-received-helo": b"Received: from for boss@corp.example (unknown [192.0.2.7])\r\n"
    b"\tby mx.provider.example (Postfix) with ESMTP id 4AbC\r\n\tfor <anna@corp.example>;"
    b" Tue, 1 Dec 2026 10:00:00 +0100\r\nFrom: x@evil.example\r\n\r\nbody\r\n",
    "postfix-multidrop": b"Return-Path: <list-bounces@lists.example.org>\r\n"
    b"Delivered-To: catchall@corp.example\r\nDelivered-To: anna@corp.example\r\n"
    b"X-Original-To: anna@corp.example\r\nReceived: from mail.example.org (mail.example.org "
    b"[198.51.100.1])\r\n\tby mx.provider.example (Postfix) with ESMTPS id 4XyZ1234\r\n"
    b"\tfor <anna@corp.example>; Tue,  1 Dec 2026 10:00:00 +0100 (CET)\r\n"
    b"From: \"List\" <list@lists.example.org>\r\nTo: team@corp.example\r\n\r\nhi\r\n",
    "exim-envelope-from": b"Received: from [192.0.2.9] (helo=x\")\r\n\tby mx.example with esmtps"
    b" (TLS1.3) tls TLS_AES_256_GCM_SHA384\r\n\t(Exim 4.96)\r\n\t(envelope-from <\"a) for "
    b"<boss@corp.example> (b\"@evil.example>)\r\n\tid 1abc-000 for anna@corp.example; Tue, 1 Dec"
    b" 2026 10:00:00 +0000\r\nEnvelope-To: anna@corp.example, bob@corp.example\r\n\r\n",
    "encoded-words": b"From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <joerg@example.org>\r\n"
    b"Sender: =?iso-8859-1?Q?Andr=E9?= <andre@Example.ORG>\r\nTo: =?utf-8?q?a=2Cb?= "
    b"<a@corp.example>, \"=?utf-8?q?x?=\" <b@corp.example>\r\nX-Envelope-To: =?utf-8?q?"
    b"anna=40corp.example?=\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n\r\n",
    "comments": b"Return-Path: <a@b.example> (bounce (nested \\) paren) here)\r\n"
    b"From: (lead) anna (x) @ (y) corp.example (trail)\r\nDelivered-To: (c)\"a b\"@corp.example"
    b" (d), <c@corp.example> (e\\(f)\r\nReceived: from h (for boss@corp.example) by mx (for "
    b"boss@corp.example) id 1 (for boss@corp.example) for <anna@corp.example>; date\r\n\r\n",
    "groups": b"To: undisclosed-recipients:;\r\nCc: team: anna@corp.example, \"B\" "
    b"<bob@corp.example>;, carl@corp.example\r\nX-Original-To: grp: <a@corp.example>, "
    b"b@corp.example;\r\nFrom: group:;\r\nSender: <@relay.example,@r2.example:x@y.example>\r\n\r\n",
    "folded": b"Delivered-To:\r\n anna@corp.example\r\nReceived: from x\r\n\tby mx\r\n\tfor\r\n"
    b" <bob@corp.example>\r\n\t; date\r\nReturn-Path:\r\n\t<\r\n\tfolded@example.org\r\n >\r\n"
    b"From: a\r\n\t\r\n b@c\r\n\r\n",
    "nuls": b"Delivered-To: anna@corp.example\x00boss@corp.example\r\nReturn-Path: <a\x00@b>"
    b"\r\nFrom: x@y\x00\r\nReceived: from x by mx for <a@corp.example\x00>; d\r\n\x00\r\n\r\n",
    "8bit": "From: Jörg <jörg@exämple.org>\r\nDelivered-To: ånna@corp.example\r\n"
    "To: \"Ünïcode\" <u@corp.example>\r\nReturn-Path: <ü@é.example>\r\n\r\nbody é\r\n"
    .encode("utf-8") + b"Sender: \xff\xfe@x\r\n",
    "null-sender": b"Return-Path: <>\r\nSender: s@example.org\r\nFrom: f@example.org\r\n"
    b"X-Original-To: nobody@elsewhere.example\r\n\r\n",
    "quoted": b"Return-Path: <\"a b\"@example.org>\r\nFrom: \"Last, First\" <\"f,l\"@x.example>"
    b"\r\nDelivered-To: \"boss@corp.example\" <anna@corp.example>\r\nReceived: from x by mx "
    b"with SMTP id 2 for <\"by evil for\"@corp.example>; d\r\n\r\n",
    "no-body": b"From: a@example.org\r\nX-Original-To: bob@corp.example",
    "no-body-crlf": b"Sender: s@example.org\r\nDelivered-To: bob@corp.example\r\n",
    "bare-lf": b"Return-Path: <lf@example.org>\nDelivered-To: anna@corp.example\n\tbob@corp."
    b"example\nReceived: from a by b for c@corp.example\n\nbody\n",
    "line-998": b"X-Original-To: " + b"a" * (998 - 15 - 17) + b"@corp.example.test\r\n\r\n",
    "line-999": b"Delivered-To: " + b"b" * (999 - 14 - 13) + b"@corp.example\r\n\r\n",
    "big-header": b"X-Original-To: anna@corp.example,\r\n " + rep(163840, b"a" * 63 + b",")
    + b"\r\n\r\n",
    "big-line": b"Received: from x by mx for <" + rep(10 * 1024 * 1024 // 64, b"b" * 64)
    + b"@corp.example>; d\r\n\r\n",
    "many-headers": rep(100000, b"Delivered-To: anna@corp.example\r\n") + b"\r\n",
    "many-to": b"From: a@b\r\n" + rep(100000, b"To: x@corp.example, y@corp.example\r\n")
    + b"\r\n",
    "many-rcpts": b"Envelope-To: " + rep(150, b"u@corp.example, ") + b"\r\n\r\n",
    "received-variants": b"Received: from x for <boss@corp.example> by mx with SMTP; d\r\n"
    b"Received: from y by mx2 with LMTP id 9 for <anna@corp.example>, <bob@corp.example>\r\n"
    b"Received: from z by mx3 for carl@corp.example\r\nReceived: from w (x\r\n by mx4 for"
    b" <d@corp.example>; d\r\nReceived: by mx5 for <e@corp.example; d\r\n\r\n",
}

# route: byte 0 picks the account, byte 1 envelope_skip (fuzz_route.c)
ROUTE_CFG = [b"\x04\x00", b"\x01\x00", b"\x00\x01", b"\x28\x00", b"\x53\x00", b"\xfa\x02",
             b"\x02\x00", b"\x43\x00"]


def write(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for i, (name, msg) in enumerate(sorted(MSGS.items())):
        write("sender", name, msg)
        write("route", name, ROUTE_CFG[i % len(ROUTE_CFG)] + msg)
        write("route", name + "-received", b"\x2c\x00" + msg)
        write("notice", name, bytes([i * 37 % 256, i]) + b"550 5.1.1 <x>: unknown\n" + msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
