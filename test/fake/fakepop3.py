#!/usr/bin/env python3
"""fakepop3.py - a scripted fake POP3 server on loopback for faults a real
server will not produce.

  fakepop3.py --port-file FILE [--port N] [--record FILE] [--mode MODE]
              [--capa CAP]... [--max-conn N] [--messages N] [--user U]
              [--password P] [--token T] [--login-reply LINE] [--no-uidl]
              [--greeting TEXT] [--message FILE]... [--lf-server]
              [--retr-err UID]... [--retr-drop UID]... [--retr-huge UID]...
              [--apop] [--list-size N] [--jwt-key-file FILE] [--drop-quit N]

Binds 127.0.0.1 (port 0 = any free port unless --port), writes the port to
--port-file once listening, serves connections one at a time until killed
(or --max-conn connections).  Every byte a client sends is appended to
--record (flushed per read), so a test can assert what a client did or did
not send.

Modes:
  record        a plain-text server that offers no STLS (CAPA lists --capa
                lines, default USER, UIDL, TOP, SASL PLAIN LOGIN, plus XOAUTH2
                OAUTHBEARER with --token); USER, PASS
                and AUTH are refused; STAT/LIST/UIDL show an empty maildrop.
                For the plaintext-refusal test: the client must give up
                without sending USER, PASS, AUTH or the password.
  mailbox       a working server with --messages messages (default 2):
                USER/PASS (--user/--password), AUTH PLAIN, and AUTH XOAUTH2 /
                OAUTHBEARER in the two-step form (the access token must be
                --token; a wrong one gets the error challenge, then -ERR
                [AUTH]).  --login-reply replaces the answer to the login
                (e.g. "-ERR [IN-USE] locked").  Commands are read line by
                line, so a pipelining client works.  DELE takes effect at
                QUIT and only then (the maildrop persists across
                connections, like a real server).
  stls-inject   offers STLS; the "+OK Begin TLS" reply is followed in the same
                write by an injected "+OK injected\\r\\n" (a client must abort:
                bytes buffered before the handshake are an attack).
  stall         sends the greeting, then never answers (timeout tests).
  bad-greeting  answers "-ERR go away" and closes.
  --message FILE  (mailbox mode) the maildrop is these files instead of
                generated messages, one message each, in order.  Their bytes
                are sent after RETR's +OK exactly as they are (no
                dot-stuffing is added: a file holds what the wire should
                carry), followed by the terminator ".\r\n" (".\n" with
                --lf-server); LIST gives each file's size.
  --lf-server   every line the server sends (greeting, status lines,
                CAPA/LIST/UIDL lists, the terminator) ends in a bare LF,
                as some broken servers do.
  --retr-err UID   RETR of the message with UIDL fake-uidl-UID (UID counts
                from 1 in maildrop order) answers "-ERR message is corrupt"
  --retr-drop UID  RETR of that message sends half of it, then closes
  --retr-stall UID RETR of that message is not answered until the file
                --retr-stall-off exists (a client killed while it waits has
                fetched the messages before it, not yet committed); then
                that session is closed
  --retr-huge UID  RETR of that message sends 6 MB of 1000-octet lines
                (LIST still gives its real, small size), then the terminator
                (each repeatable; they act on every connection)
  --list-size N LIST gives N octets for every message (an estimate, or a
                number near 2^63)
  --apop        the greeting carries an APOP timestamp; every APOP is
                refused with "-ERR [AUTH] APOP not available" (the
                mailutils pop3d case: a timestamp but no APOP secret).
--drop-quit N: the first N sessions of the mailbox modes answer QUIT by
closing the connection without a reply and without taking the DELEs
(a server that failed at QUIT); later sessions are served normally.
Hostile modes (a mailbox of --messages messages, default 1, misbehaving):
  garbage-greeting  the greeting is binary garbage
  drop-mid-retr     RETR sends half the message, then closes
  stall-stls        offers STLS, answers +OK, then never starts TLS
  stall-mid-message RETR sends half the message, then never sends more
  long-line         RETR sends a 10 MB line
  capa-flood        CAPA answers 100,000 lines
  dup-uidl          two messages share a UIDL
  bad-uidl          a UIDL with a control character and one of 100 octets
  retr-longer       LIST says 100 octets; RETR sends 2 MB
  no-final-dot      RETR sends the message without the final ".", closes
OAuth2 provider shapes (issue 14; a mailbox of --messages messages, default
2, like "mailbox" for everything but the login).  The access token is
checked as a JWT: HS256 with the base64 secret in --jwt-key-file (the
OAUTH2_KEYFILE of test/lib/servers.sh), exp in the future, and its "email"
claim equal (ignoring case) to the SASL user, which must be --user when
given; --token T instead accepts exactly T.  Each login's outcome goes to
stderr ("fakepop3: login ok|refused ...").
  ms-xoauth2        Microsoft 365 (outlook.office365.com).  CAPA: USER, UIDL,
                    TOP, SASL PLAIN XOAUTH2.  Only the two-step form:
                    "AUTH XOAUTH2" -> "+ " -> the base64 token line;
                    success "+OK User successfully authenticated."; a refused
                    token gets "-ERR Authentication failure: unknown user name
                    or bad password." at once, no challenge.  The one-line
                    form "AUTH XOAUTH2 <b64>" is answered "-ERR Protocol
                    error. Connection is closed." and the connection closed.
                    OAUTHBEARER: "-ERR Unrecognized authentication type."
  google-xoauth2    Gmail (pop.gmail.com).  CAPA: USER, RESP-CODES, TOP,
                    UIDL, SASL PLAIN XOAUTH2 OAUTHBEARER.  XOAUTH2 and
                    OAUTHBEARER in one step (initial response) or two;
                    success "+OK Welcome."; a refused token gets
                    "+ base64({"status":"400","schemes":"Bearer",
                    "scope":"https://mail.google.com/"})", and after the
                    client's reply (an empty line, or "AQ==" for OAUTHBEARER)
                    "-ERR [AUTH] Invalid credentials."
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import time

DEFAULT_CAPA = ["USER", "UIDL", "TOP", "SASL PLAIN LOGIN"]
OAUTH_MODES = ("ms-xoauth2", "google-xoauth2")
OAUTH_CAPA = {"ms-xoauth2": ["USER", "UIDL", "TOP", "SASL PLAIN XOAUTH2"],
              "google-xoauth2": ["USER", "RESP-CODES", "TOP", "UIDL",
                                 "SASL PLAIN XOAUTH2 OAUTHBEARER"]}
HOSTILE = ("garbage-greeting", "drop-mid-retr", "stall-stls", "stall-mid-message",
           "long-line", "capa-flood", "dup-uidl", "bad-uidl", "retr-longer",
           "no-final-dot")
# the maildrop of the mailbox modes: (uid, bytes); survives connections,
# DELE at QUIT
MAILDROP = []
# sessions left whose QUIT drops the connection (--drop-quit)
DROP_QUIT = [0]


def make_message(i):
    return ("From: fake%d@remote.example\r\nTo: rcpt@corp.example\r\n"
            "Subject: fake message %d\r\nMessage-ID: <fake%d@remote.example>\r\n\r\n"
            "body of message %d\r\n.dot-stuffed line\r\n" % (i, i, i, i)).encode()


class Session:
    def __init__(self, conn, args):
        self.conn = conn
        self.args = args
        self.buf = b""
        self.deleted = set()

    def record(self, data):
        if self.args.record:
            with open(self.args.record, "ab") as f:
                f.write(data)

    def send(self, data, raw=False):
        if self.args.lf_server and not raw:
            data = data.replace(b"\r\n", b"\n")
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

    def stall(self):
        while self.readline() is not None:
            pass

    def run(self):
        mode = self.args.mode
        if mode == "bad-greeting":
            self.send(b"-ERR go away\r\n")
            return
        if mode == "garbage-greeting":
            self.send(b"\x00\xff\xfeHELLO garbage \x1b[2J\r\n")
            self.stall()
            return
        greeting = self.args.greeting or "fakepop3 ready"
        if self.args.apop:
            greeting += " <%d.%d@fakepop3.test>" % (os.getpid(), int(time.time()))
        self.send(("+OK %s\r\n" % greeting).encode())
        if mode == "stall":
            self.stall()
            return
        capa = list(self.args.capa or OAUTH_CAPA.get(mode, DEFAULT_CAPA))
        if self.args.token and not self.args.capa and mode not in OAUTH_CAPA:
            # a server that takes OAuth2 tokens lists the mechanisms, as
            # Gmail and Microsoft 365 do (popgate refuses an explicit
            # mechanism a SASL line does not list)
            capa = [c + " XOAUTH2 OAUTHBEARER" if c.startswith("SASL ") else c for c in capa]
        if mode in ("stls-inject", "stall-stls") and "STLS" not in capa:
            capa.append("STLS")
        while True:
            line = self.readline()
            if line is None:
                return
            if not self.command(line, capa):
                return

    # ---- commands -----------------------------------------------------
    def command(self, line, capa):
        mode = self.args.mode
        parts = line.split(b" ")
        verb = parts[0].upper()
        arg = parts[1] if len(parts) > 1 else b""
        if verb == b"CAPA":
            if mode == "capa-flood":
                self.send(b"+OK flood\r\n" + b"X-FLOOD\r\n" * 100000 + b".\r\n")
            else:
                self.send(b"+OK capability list follows\r\n"
                          + b"".join(c.encode() + b"\r\n" for c in capa) + b".\r\n")
        elif verb == b"STLS" and mode == "stls-inject":
            self.send(b"+OK Begin TLS negotiation\r\n+OK injected\r\n")
        elif verb == b"STLS" and mode == "stall-stls":
            self.send(b"+OK Begin TLS negotiation\r\n")
            self.stall()
            return False
        elif verb == b"STLS":
            self.send(b"-ERR STLS not available\r\n")
        elif mode == "record" and verb in (b"USER", b"PASS", b"APOP", b"AUTH"):
            self.send(b"-ERR [AUTH] refused by fakepop3\r\n")
        elif verb == b"APOP":
            self.send(b"-ERR [AUTH] APOP not available\r\n")
        elif verb == b"USER":
            self.user = arg.decode("latin-1")
            self.send(b"+OK\r\n")
        elif verb == b"PASS":
            ok = self.args.password is None or line[5:].decode("latin-1") == self.args.password
            self.login(ok)
        elif verb == b"AUTH":
            return self.auth(arg.upper(), parts[2] if len(parts) > 2 else None)
        elif verb == b"STAT":
            msgs = self.live()
            self.send(b"+OK %d %d\r\n" % (len(msgs), sum(len(m) for _, m in msgs)))
        elif verb == b"LIST":
            self.send(b"+OK\r\n" + b"".join(b"%d %d\r\n" % (n, self.listed(n, m))
                                           for n, m in self.live()) + b".\r\n")
        elif verb == b"UIDL" and self.args.no_uidl:
            self.send(b"-ERR UIDL not supported\r\n")
        elif verb == b"UIDL":
            self.send(b"+OK\r\n" + b"".join(b"%d %s\r\n" % (n, self.uidl(n))
                                           for n, _ in self.live()) + b".\r\n")
        elif verb == b"RETR":
            return self.retr(int(arg or b"0"))
        elif verb == b"DELE":
            self.deleted.add(int(arg or b"0"))
            self.send(b"+OK deleted\r\n")
        elif verb == b"NOOP":
            self.send(b"+OK\r\n")
        elif verb == b"QUIT" and DROP_QUIT[0] > 0:
            DROP_QUIT[0] -= 1
            return False  # no reply, no deletions: the connection just ends
        elif verb == b"QUIT":
            # deletions take effect; the next session numbers 1..N again
            MAILDROP[:] = [m for i, m in enumerate(MAILDROP) if (i + 1) not in self.deleted]
            self.send(b"+OK bye\r\n")
            return False
        else:
            self.send(b"-ERR unknown command\r\n")
        return True

    def live(self):
        """(number, message bytes) of the messages not deleted this session"""
        return [(i + 1, m) for i, (_, m) in enumerate(MAILDROP) if (i + 1) not in self.deleted]

    def listed(self, n, m):
        if self.args.list_size is not None:
            return self.args.list_size
        if self.args.mode == "long-line":
            return 160 * 65536 + 100  # honest: the line check must catch it
        return 100 if self.args.mode == "retr-longer" else len(m)

    def uidl(self, n):
        mode = self.args.mode
        if mode == "dup-uidl":
            return b"same-uidl"
        if mode == "bad-uidl":
            return b"bad\x01uidl" if n == 1 else b"x" * 100
        return b"fake-uidl-%d" % MAILDROP[n - 1][0]  # stable across sessions

    def login(self, ok):
        if self.args.login_reply:
            self.send(self.args.login_reply.encode() + b"\r\n")
        elif ok:
            self.send(b"+OK logged in\r\n")
        else:
            self.send(b"-ERR [AUTH] invalid credentials\r\n")

    def auth(self, mech, initial):
        if self.args.mode in OAUTH_MODES and mech in (b"XOAUTH2", b"OAUTHBEARER"):
            return self.auth_provider(mech, initial)
        if mech == b"PLAIN":
            if initial is None:
                self.send(b"+ \r\n")
                initial = self.readline()
            try:
                _, _, pw = base64.b64decode(initial).split(b"\0")
            except Exception:
                self.send(b"-ERR [AUTH] bad PLAIN\r\n")
                return True
            self.login(self.args.password is None or pw.decode() == self.args.password)
        elif mech in (b"XOAUTH2", b"OAUTHBEARER"):
            if initial is not None:  # the two-step form is what we test
                self.send(b"-ERR initial response not expected here\r\n")
                return True
            self.send(b"+ \r\n")
            resp = self.readline()
            try:
                tok = base64.b64decode(resp)
            except Exception:
                tok = b""
            if b"auth=Bearer " + (self.args.token or "").encode() + b"\x01" in tok:
                self.login(True)
            else:
                self.send(b"+ " + base64.b64encode(b'{"status":"400","schemes":"Bearer"}')
                          + b"\r\n")
                self.readline()
                self.send(b"-ERR [AUTH] token refused\r\n")
        else:
            self.send(b"-ERR mechanism not supported\r\n")
        return True

    # ---- OAuth2 provider shapes (ms-xoauth2, google-xoauth2) ----------
    def auth_provider(self, mech, initial):
        ms = self.args.mode == "ms-xoauth2"
        if ms and mech != b"XOAUTH2":
            self.send(b"-ERR Unrecognized authentication type.\r\n")
            return True
        if ms and initial is not None:
            self.send(b"-ERR Protocol error. Connection is closed.\r\n")
            return False
        if initial is None:
            self.send(b"+ \r\n")
            initial = self.readline()
            if initial is None:
                return False
        user, token = sasl_bearer(mech, initial)
        why = self.check_token(user, token)
        print("fakepop3: login %s mech=%s user=%s%s" % ("ok" if why is None else "refused",
              mech.decode(), user, "" if why is None else " reason=" + why),
              file=sys.stderr, flush=True)
        if why is None:
            self.send(b"+OK User successfully authenticated.\r\n" if ms else b"+OK Welcome.\r\n")
        elif ms:
            self.send(b"-ERR Authentication failure: unknown user name or bad password.\r\n")
        else:
            self.send(b"+ " + base64.b64encode(
                b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}')
                + b"\r\n")
            if self.readline() is None:
                return False
            self.send(b"-ERR [AUTH] Invalid credentials.\r\n")
        return True

    def check_token(self, user, token):
        """None when TOKEN logs USER in, else why not"""
        if user is None or token is None:
            return "malformed SASL message"
        if self.args.user and user.lower() != self.args.user.lower():
            return "user %s is not %s" % (user, self.args.user)
        if self.args.token is not None:
            return None if token == self.args.token else "not the --token"
        if not self.args.jwt_key_file:
            return "no --jwt-key-file"
        with open(self.args.jwt_key_file) as f:
            key = base64.b64decode(f.read().strip())
        parts = token.split(".")
        if len(parts) != 3:
            return "not a JWT"
        try:
            head = json.loads(b64url_dec(parts[0]))
            body = json.loads(b64url_dec(parts[1]))
        except ValueError:
            return "undecodable JWT"
        if head.get("alg") != "HS256":
            return "alg %r" % head.get("alg")
        sig = hmac.new(key, (parts[0] + "." + parts[1]).encode(), hashlib.sha256).digest()
        if base64.urlsafe_b64encode(sig).rstrip(b"=").decode() != parts[2]:
            return "bad signature"
        if not isinstance(body.get("exp"), (int, float)) or body["exp"] <= time.time():
            return "expired"
        if str(body.get("email", "")).lower() != user.lower():
            return "email %r is not the user" % body.get("email")
        return None

    def retr(self, n):
        mode = self.args.mode
        live = dict(self.live())
        if n not in live:
            self.send(b"-ERR no such message\r\n")
            return True
        uid = MAILDROP[n - 1][0]
        if uid in (self.args.retr_err or []):
            self.send(b"-ERR message is corrupt\r\n")
            return True
        if uid in (self.args.retr_drop or []):
            self.send(b"+OK\r\n" + live[n][:len(live[n]) // 2])
            return False
        if uid in (self.args.retr_stall or []) and not os.path.exists(
                self.args.retr_stall_off or "/nonexistent"):
            # the client is killed meanwhile; the session ends once the
            # file appears, so the next connection is served
            while not os.path.exists(self.args.retr_stall_off or "/nonexistent"):
                time.sleep(0.05)
            return False
        if uid in (self.args.retr_huge or []):
            self.send(b"+OK\r\n" + (b"y" * 998 + b"\r\n") * 6000 + b".\r\n")
            return True
        if self.args.message:
            # raw wire bytes: sent as they are, then the terminator
            self.send(b"+OK\r\n")
            self.send(live[n], raw=True)
            self.send(b".\r\n")
            return True
        body = live[n].replace(b"\r\n.", b"\r\n..")
        if mode in ("drop-mid-retr", "stall-mid-message"):
            self.send(b"+OK\r\n" + body[:len(body) // 2])
            if mode == "stall-mid-message":
                self.stall()
            return False
        if mode == "long-line":
            self.send(b"+OK\r\nSubject: long\r\n\r\n")
            chunk = b"x" * 65536
            for _ in range(160):
                self.send(chunk)
            self.send(b"\r\n.\r\n")
            return True
        if mode == "retr-longer":
            self.send(b"+OK\r\n" + body + (b"y" * 998 + b"\r\n") * 2100 + b".\r\n")
            return True
        if mode == "no-final-dot":
            self.send(b"+OK\r\n" + body)
            return False
        self.send(b"+OK\r\n" + body + b".\r\n")
        return True


def b64url_dec(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sasl_bearer(mech, b64):
    """(user, token) from an XOAUTH2 or OAUTHBEARER initial response"""
    try:
        msg = base64.b64decode(b64, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None, None
    user = token = None
    fields = msg.split("\x01")
    if mech == b"OAUTHBEARER":
        gs2 = fields.pop(0).split(",")
        user = next((g[2:] for g in gs2 if g.startswith("a=")), None)
    for f in fields:
        if f.startswith("user="):
            user = f[5:]
        elif f.startswith("auth=Bearer "):
            token = f[12:]
    return user, token


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record")
    p.add_argument("--mode", default="record",
                   choices=("record", "mailbox", "stls-inject", "stall", "bad-greeting")
                   + HOSTILE + OAUTH_MODES)
    p.add_argument("--capa", action="append")
    p.add_argument("--max-conn", type=int, default=0)
    p.add_argument("--messages", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--token")
    p.add_argument("--jwt-key-file")
    p.add_argument("--login-reply")
    p.add_argument("--no-uidl", action="store_true")
    p.add_argument("--greeting")
    p.add_argument("--message", action="append")
    p.add_argument("--lf-server", action="store_true")
    p.add_argument("--retr-err", action="append", type=int)
    p.add_argument("--retr-drop", action="append", type=int)
    p.add_argument("--retr-huge", action="append", type=int)
    p.add_argument("--retr-stall", action="append", type=int)
    p.add_argument("--retr-stall-off")
    p.add_argument("--apop", action="store_true")
    p.add_argument("--list-size", type=int)
    p.add_argument("--drop-quit", type=int, default=0)
    args = p.parse_args()
    DROP_QUIT[0] = args.drop_quit
    count = args.messages
    if count is None:
        count = 2 if args.mode in ("mailbox", "dup-uidl") + OAUTH_MODES else 1
    if args.message:
        MAILDROP.extend((i + 1, open(f, "rb").read()) for i, f in enumerate(args.message))
    else:
        MAILDROP.extend((i, make_message(i)) for i in range(1, count + 1))
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
        except (OSError, socket.timeout, ValueError) as e:
            print("fakepop3: %s" % e, file=sys.stderr)
        finally:
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
