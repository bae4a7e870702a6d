#!/usr/bin/env python3
"""fakepop3.py - a scripted fake POP3 server on loopback for faults a real
server will not produce.

  fakepop3.py --port-file FILE [--port N] [--record FILE] [--mode MODE]
              [--capa CAP]... [--max-conn N]

Binds 127.0.0.1 (port 0 = any free port unless --port), writes the port to
--port-file once listening, serves connections one at a time until killed
(or --max-conn connections).  Every byte a client sends is appended to
--record (flushed per read), so a test can assert what a client did or did
not send.

Modes:
  record        a plain-text server that offers no STLS (CAPA lists --capa
                lines, default USER, UIDL, TOP, SASL PLAIN LOGIN); USER, PASS
                and AUTH are refused; STAT/LIST/UIDL show an empty maildrop.
                For the plaintext-refusal test: the client must give up
                without sending USER, PASS, AUTH or the password.
  stls-inject   offers STLS; the "+OK Begin TLS" reply is followed in the same
                write by an injected "+OK injected\\r\\n" (a client must abort:
                bytes buffered before the handshake are an attack).
  stall         sends the greeting, then never answers (timeout tests).
  bad-greeting  answers "-ERR go away" and closes.
"""

import argparse
import os
import socket
import sys

DEFAULT_CAPA = ["USER", "UIDL", "TOP", "SASL PLAIN LOGIN"]


class Session:
    def __init__(self, conn, args):
        self.conn = conn
        self.args = args
        self.buf = b""

    def record(self, data):
        if self.args.record:
            with open(self.args.record, "ab") as f:
                f.write(data)

    def send(self, data):
        self.conn.sendall(data)

    def readline(self):
        while b"\n" not in self.buf:
            data = self.conn.recv(4096)
            if not data:
                return None
            self.record(data)
            self.buf += data
            if len(self.buf) > 65536:
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def run(self):
        mode = self.args.mode
        if mode == "bad-greeting":
            self.send(b"-ERR go away\r\n")
            return
        self.send(b"+OK fakepop3 ready\r\n")
        if mode == "stall":
            while self.readline() is not None:
                pass
            return
        capa = list(self.args.capa or DEFAULT_CAPA)
        if mode == "stls-inject" and "STLS" not in capa:
            capa.append("STLS")
        while True:
            line = self.readline()
            if line is None:
                return
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"CAPA":
                self.send(b"+OK capability list follows\r\n"
                          + b"".join(c.encode() + b"\r\n" for c in capa) + b".\r\n")
            elif verb == b"STLS" and mode == "stls-inject":
                self.send(b"+OK Begin TLS negotiation\r\n+OK injected\r\n")
            elif verb == b"STLS":
                self.send(b"-ERR STLS not available\r\n")
            elif verb in (b"USER", b"PASS", b"APOP"):
                self.send(b"-ERR [AUTH] refused by fakepop3\r\n")
            elif verb == b"AUTH":
                self.send(b"-ERR [AUTH] refused by fakepop3\r\n")
            elif verb == b"STAT":
                self.send(b"+OK 0 0\r\n")
            elif verb in (b"LIST", b"UIDL"):
                self.send(b"+OK\r\n.\r\n")
            elif verb == b"NOOP":
                self.send(b"+OK\r\n")
            elif verb == b"QUIT":
                self.send(b"+OK bye\r\n")
                return
            else:
                self.send(b"-ERR unknown command\r\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record")
    p.add_argument("--mode", default="record",
                   choices=("record", "stls-inject", "stall", "bad-greeting"))
    p.add_argument("--capa", action="append")
    p.add_argument("--max-conn", type=int, default=0)
    args = p.parse_args()
    if args.record:
        open(args.record, "ab").close()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    os.rename(args.port_file + ".tmp", args.port_file)
    served = 0
    while not args.max_conn or served < args.max_conn:
        conn, _ = srv.accept()
        served += 1
        conn.settimeout(120)
        try:
            Session(conn, args).run()
        except (OSError, socket.timeout) as e:
            print("fakepop3: %s" % e, file=sys.stderr)
        finally:
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
