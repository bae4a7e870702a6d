#!/usr/bin/env python3
"""fakesmtp.py - a deliberately lenient SMTP receiver on loopback.

  fakesmtp.py --port-file FILE --dir DIR [--mode MODE]

Binds 127.0.0.1 on a free port, writes the port to --port-file, and serves
connections one at a time until killed.  It ends lines at a bare LF (as
some real receivers do), so a message whose body smuggles "\\n.\\n" or
"\\r\\n.\\n" past a client that does not normalise line ends would end the
DATA early here and the rest would be read as commands: the smuggling
test counts transactions and compares their content.

Each transaction (DATA ended by a line that is "." after stripping one
trailing CR) is written to DIR/txn.NNNN: the bytes of every data line as
received, dot-unstuffed, each followed by the LF that ended it.  The
envelope is written to DIR/txn.NNNN.env ("MAIL FROM:<...>" and one
"RCPT TO:<...>" per recipient).  Every command line is appended to
DIR/commands.log.

Modes:
  accept   (default) EHLO offers PIPELINING, 8BITMIME, SIZE, DSN; all 250.
  stall:N  as accept, but the transaction after the first N gets no reply
           to its final "." (nothing is written for it): the client hangs
           there until it gives up or is killed; later connections are
           served as in accept mode.  For killing a relay mid-session,
           and for the relay's timeout after the final ".".
  stalldata:N  as accept, but the DATA command after the first N
           transactions gets no reply at all (no 354), once; later
           connections are served as in accept mode.
  no8bit   as accept, but EHLO does not offer 8BITMIME while the file
           DIR/no8bit exists (remove it: the host is "fixed").
"""

import argparse
import os
import socket


class Session:
    def __init__(self, conn, args, counter):
        self.conn = conn
        self.args = args
        self.buf = b""
        self.counter = counter

    def stall_now(self, kind="stall:"):
        """stall:N - the first DATA after N transactions is never answered"""
        mode = self.args.mode
        if not mode.startswith(kind) or self.counter[1]:
            return False
        if self.counter[0] < int(mode.split(":", 1)[1]):
            return False
        self.counter[1] = True
        return True

    def readline(self):
        while b"\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data
            if len(self.buf) > 1 << 20:
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def log(self, line):
        with open(os.path.join(self.args.dir, "commands.log"), "ab") as f:
            f.write(line + b"\n")

    def data(self, env):
        body = []
        while True:
            line = self.readline()
            if line is None:
                return False
            if line.rstrip(b"\r") == b".":
                break
            if line.startswith(b"."):
                line = line[1:]
            body.append(line + b"\n")
        self.counter[0] += 1
        name = os.path.join(self.args.dir, "txn.%04d" % self.counter[0])
        with open(name + ".env", "wb") as f:
            f.write(b"".join(e + b"\n" for e in env))
        with open(name, "wb") as f:
            f.write(b"".join(body))
        return True

    def run(self):
        self.conn.sendall(b"220 fakesmtp ESMTP\r\n")
        env = []
        while True:
            line = self.readline()
            if line is None:
                return
            self.log(line)
            cmd = line.rstrip(b"\r")
            verb = cmd.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                no8 = (self.args.mode == "no8bit" and
                       os.path.exists(os.path.join(self.args.dir, "no8bit")))
                self.conn.sendall(b"250-fakesmtp\r\n250-PIPELINING\r\n" +
                                  (b"" if no8 else b"250-8BITMIME\r\n") +
                                  b"250-SIZE 100000000\r\n250 DSN\r\n")
            elif verb == b"HELO":
                self.conn.sendall(b"250 fakesmtp\r\n")
            elif verb == b"MAIL":
                env = [b"MAIL FROM:" + cmd[10:].split(b" ")[0]]
                self.conn.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                env.append(b"RCPT TO:" + cmd[8:].split(b" ")[0])
                self.conn.sendall(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if self.stall_now("stalldata:"):
                    while self.readline() is not None:
                        pass
                    return
                self.conn.sendall(b"354 go ahead\r\n")
                if self.stall_now():
                    while self.readline() is not None:
                        pass
                    return
                if not self.data(env):
                    return
                self.conn.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                self.conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            elif verb in (b"RSET", b"NOOP"):
                env = []
                self.conn.sendall(b"250 2.0.0 Ok\r\n")
            else:
                self.conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", default="accept")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    os.rename(tmp, args.port_file)
    counter = [0, False]  # transactions written, stalled once
    while True:
        conn, _ = srv.accept()
        conn.settimeout(60)
        try:
            Session(conn, args, counter).run()
        except (OSError, socket.timeout):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
