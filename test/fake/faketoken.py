#!/usr/bin/env python3
"""faketoken.py - a loopback HTTPS OAuth2 identity provider for the tests
(issue 14).  Python 3 standard library plus the `openssl` CLI (RS256/PS256
signature checks); no other module.

README for test writers (the interface; stable once committed)
==============================================================

Start it from a test with the helpers in test/lib/servers.sh:

    start_dovecot_oauth2 "$TESTDIR/pop"       # optional, any order
    start_faketoken "$TESTDIR/idp"            # exports the variables below
    faketoken_client '{"client_id":"c1","user":"alice@corp.example"}'
    faketoken_fault '{"kind":"invalid_grant"}'
    faketoken_stats grants.refresh_token      # -> 3

  FAKETOKEN_URL    https://localhost:PORT (the server certificate says
                   DNS:localhost only: https://127.0.0.1:PORT is a host-name
                   mismatch, on purpose)
  FAKETOKEN_PORT   PORT; FAKETOKEN_CA the CA file for ca_file / curl --cacert
  FAKETOKEN_STATE  the state directory: state.json (everything, rewritten
                   after each request), requests.log (one JSON line per
                   request), faketoken.log (stderr)
  OAUTH2_KEYFILE   the HS256 secret (base64, no newline) shared with Dovecot
                   and fakepop3.py; OAUTH2_ISSUER the tokens' iss

  restart_faketoken   kill -9 and start again on the same port with the same
                      state (clients, refresh tokens, faults, stats survive)

Endpoints.  Any path that ENDS in one of these names works, so provider-shaped
URLs can be used: $FAKETOKEN_URL/contoso.example/oauth2/v2.0/token is the
token endpoint, .../oauth2/v2.0/devicecode the device endpoint,
.../oauth2/v2.0/authorize the authorization endpoint (Google shapes
/o/oauth2/v2/auth and /device/code work too).

  POST .../devicecode   (RFC 8628 3.1) form: client_id, scope
        200 {"device_code","user_code","verification_uri","expires_in",
             "interval", "verification_uri_complete"} (generic);
        microsoft adds "message"; google says "verification_url" instead of
        "verification_uri".  Unknown client_id: invalid_client.
        The device is approved after `device_polls` token polls answered
        authorization_pending (setting, default 2), then the outcome is
        `device_outcome`: approve (tokens), deny (access_denied) or expire
        (expired_token).  A used device code: invalid_grant.
  GET  .../authorize    (RFC 6749 4.1, PKCE RFC 7636, loopback RFC 8252)
        query: response_type=code, client_id, redirect_uri, state, scope,
        code_challenge, code_challenge_method=S256.  Consent is simulated:
        302 to redirect_uri?code=C&state=S (follow it with curl).  The
        redirect_uri must be http://127.0.0.1:ANYPORT/ANYPATH (or [::1] or
        localhost), or one of the client's "redirect_uris" when registered;
        otherwise 400 text/html and no redirect (as real IdPs do).  A missing
        or non-S256 challenge: 302 with error=invalid_request (setting
        require_pkce, default true).  Codes live 600 s and work once.
  POST .../token        form (application/x-www-form-urlencoded), grant_type:
        device_code         device_code, client_id (grant_type is
                            urn:ietf:params:oauth:grant-type:device_code;
                            stats and fault filters say "device_code"; a
                            bare "device_code" is unsupported_grant_type)
        authorization_code  code, redirect_uri (equal to the one at
                            /authorize), code_verifier (S256 of it must be
                            the challenge), client_id
        refresh_token       refresh_token, client_id, [scope]
        client_credentials  scope; client authentication required
      Client authentication: client_secret in the form or HTTP Basic
      (RFC 6749 2.3.1, id and secret form-urlencoded then base64), checked
      when the client has a "client_secret"; or private_key_jwt (RFC 7523):
      client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
      and client_assertion = a JWT with header alg RS256 or PS256 and
      "x5t#S256" = base64url(SHA-256(certificate DER)), body iss = sub =
      client_id, aud = the token endpoint URL as requested
      (https://localhost:PORT/.../token), exp in the future, a jti, nbf (when
      present) not in the future; signed with the key of the client's
      registered "certificate".  Failures: 401 invalid_client.
      Success: 200 {"token_type":"Bearer","access_token","expires_in",
      "scope", "refresh_token" (not for client_credentials; on refresh only
      when rotate_refresh)}; microsoft adds "ext_expires_in".
      Refresh tokens: rotate_refresh (default true) gives a new one on each
      refresh; revoke_old_refresh (default true) then makes the old one
      invalid_grant; with rotate_refresh false the reply has no
      refresh_token (Google's shape) and the old one stays valid.
  GET  /_stats          JSON: {"requests": {"token": N, "devicecode": N,
        "authorize": N}, "grants": {"device_code": N, ...}, "errors":
        {"invalid_grant": N, ...}, "statuses": {"200": N, ...},
        "faults": N, "access_tokens": N, "refresh_tokens": N,
        "last": {"token": {the last token request's form fields, plus
        "_auth": "basic" | "post" | "private_key_jwt" | "none"}, ...}}
        (control, stats and mint requests are not counted)
  POST /_control        JSON object, every key optional, applied in this
        order; reply {"ok":true,"faults":<queued>} or 400 {"error":...}:
        "reset_stats": true
        "set": {settings, below}
        "client": {client} or a list of them (registers or replaces)
        "clear_faults": true
        "fault": {fault} or a list of them (appended to the queue)
        "revoke_refresh_tokens": true        every refresh token invalid
        "revoke": "<refresh token>"          that one invalid
  GET  /_mint?user=U[&variant=V][&expires_in=N][&scope=S]   a token without
        a grant (not counted): {"access_token": JWT}; V as bad_token below
  GET  /_state          the whole state (debugging)

Clients ("client" in /_control, or --client JSON on the command line):
  {"client_id": "c1",                    required
   "user": "alice@corp.example",         the mailbox: tokens' email and sub
   "client_secret": "s3cret",            when set, required at /token
   "certificate": "/path/cert.pem",      for private_key_jwt (RSA key)
   "grants": ["device_code", ...],       allowed grant types (default all;
                                         others: unauthorized_client)
   "scopes": ["mail", ...],              allowed scopes (default any;
                                         others: invalid_scope)
   "redirect_uris": ["http://..."]}      exact redirect URIs (default: the
                                         loopback rule above)

Settings ("set"; --set JSON): provider ("generic" | "microsoft" | "google":
the error and device-reply shapes), expires_in (access token lifetime,
3600), rotate_refresh (true), revoke_old_refresh (true), device_polls (2),
device_outcome ("approve"), device_interval (1), device_expires_in (900),
enforce_interval (false: when true a poll sooner than the interval is
answered slow_down and the interval grows by 5 s, RFC 8628 3.5),
token_scope ("mail": the access token's scope claim, what Dovecot's
`scope` wants; the reply's "scope" echoes the request), require_pkce (true).

Faults ("fault"): a queue; each request to an endpoint takes the first
fault whose "endpoint" (default "token"; or "devicecode", "authorize")
and "grant" (optional grant_type filter) match; "count" (default 1, -1 =
for ever) says how many requests it answers.  Kinds:
  invalid_grant invalid_client unauthorized_client invalid_scope
  invalid_request access_denied expired_token authorization_pending
  slow_down temporarily_unavailable server_error
      the provider's error body; HTTP 400 (invalid_client 401,
      temporarily_unavailable 503, server_error 500); "status" overrides,
      "description" replaces the text
  "429", "503" (or "http" with "status")   that status, JSON error body,
      "Retry-After: <retry_after>" (default 1; "retry_after": null = none)
  slow         wait "delay" seconds (default 2), then answer normally
  hang         read the request, never answer (holds it "delay" s, 600)
  close        read the request, close the connection without a reply
  html         "status" (default 200), Content-Type text/html, a login page
  garbage      200, Content-Type application/json, binary junk
  no_access_token   200 JSON with token_type and expires_in only
  bad_token    the grant succeeds (state changes as usual) but the access
      token is one Dovecot refuses: "variant" wrong_key (default; another
      HS256 key), wrong_user, expired (exp in the past, expires_in still
      says 3600), no_scope, wrong_issuer
  At /authorize: the error kinds redirect with error=<kind> (and the
      state; access_denied says the user declined), wrong_state redirects
      with a code and another state, html/garbage/429/503/http/close/hang
      answer as above; slow, bad_token and no_access_token do nothing there

Error shapes: generic {"error","error_description"}; google the same with
Google's texts; microsoft adds "error_codes" [AADSTS number], "timestamp",
"trace_id", "correlation_id", "error_uri" and "AADSTSnnnn: " before the
description.

Access tokens are JWTs Dovecot 2.3.19 validates locally: header
{"alg":"HS256","typ":"JWT"} (no kid), body {"iss","sub","email","scope",
"exp","iat","nbf","jti","client_id"} (no azp: Dovecot would look the key up
under the azp), signed with base64-decoded OAUTH2_KEYFILE.

Command line:
  faketoken.py --state-dir DIR --cert PEM --key PEM --hs256-key-file FILE
               [--port N] [--port-file FILE] [--issuer URL]
               [--client JSON]... [--set JSON]...
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SETTINGS = {
    "provider": "generic",
    "expires_in": 3600,
    "rotate_refresh": True,
    "revoke_old_refresh": True,
    "device_polls": 2,
    "device_outcome": "approve",
    "device_interval": 1,
    "device_expires_in": 900,
    "enforce_interval": False,
    "token_scope": "mail",
    "require_pkce": True,
}
ERROR_STATUS = {"invalid_client": 401, "temporarily_unavailable": 503, "server_error": 500}
ERROR_KINDS = ("invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope",
               "invalid_request", "access_denied", "expired_token", "authorization_pending",
               "slow_down", "temporarily_unavailable", "server_error",
               "unsupported_grant_type")
OTHER_KINDS = ("429", "503", "http", "slow", "hang", "close", "html", "garbage",
               "no_access_token", "bad_token", "wrong_state")
# Microsoft Entra's AADSTS numbers and texts for each error
MS_CODES = {
    "invalid_grant": (70000, "The provided value for the input parameter 'refresh_token' or "
                      "'assertion' is not valid."),
    "invalid_client": (7000215, "Invalid client secret provided."),
    "unauthorized_client": (700016, "Application was not found in the directory."),
    "invalid_scope": (70011, "The provided value for the input parameter 'scope' is not valid."),
    "invalid_request": (900144, "The request body must contain the following parameter."),
    "access_denied": (70000, "The user has declined to authorize the application."),
    "expired_token": (70019, "Verification code expired."),
    "authorization_pending": (70016, "OAuth 2.0 device flow error. Authorization is pending. "
                              "Continue polling."),
    "slow_down": (70016, "Polling too fast."),
    "temporarily_unavailable": (50196, "The server is temporarily unavailable."),
    "server_error": (90033, "A transient error has occurred. Please try again."),
    "unsupported_grant_type": (70003, "The app requested an unsupported grant type."),
}
GOOGLE_TEXT = {
    "invalid_grant": "Token has been expired or revoked.",
    "invalid_client": "Unauthorized",
    "unauthorized_client": "Unauthorized",
    "invalid_scope": "Some requested scopes were invalid.",
    "authorization_pending": "Precondition Required",
    "slow_down": "Forbidden",
    "access_denied": "Forbidden",
    "expired_token": "Bad Request",
}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_dec(text):
    """strict base64url without padding: anything else is a ValueError (a
    lenient decoder would accept a tampered signature)"""
    text = text.encode() if isinstance(text, str) else text
    data = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    if b64u(data).encode() != text:
        raise ValueError("not canonical base64url")
    return data


def now():
    return int(time.time())


class Reply:
    """what a handler answers: status, headers, body; or an action"""

    def __init__(self, status=200, body=b"", ctype="application/json", headers=None,
                 action=None, delay=0):
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.ctype = ctype
        self.headers = headers or {}
        self.action = action  # None | "hang" | "close"
        self.delay = delay


class IdP:
    """the provider's state; every method runs under self.lock"""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.key = base64.b64decode(open(args.hs256_key_file).read().strip())
        self.state_file = os.path.join(args.state_dir, "state.json")
        self.reqlog = os.path.join(args.state_dir, "requests.log")
        self.st = {"settings": dict(DEFAULT_SETTINGS), "clients": {}, "faults": [],
                   "stats": {}, "refresh": {}, "codes": {}, "devices": {}}
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                self.st.update(json.load(f))
        self.reset_stats(keep=True)
        for c in args.client or []:
            self.register(json.loads(c))
        for s in args.set or []:
            self.st["settings"].update(json.loads(s))
        self.save()

    # ---- persistence, stats -------------------------------------------
    def save(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.st, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.state_file)

    def reset_stats(self, keep=False):
        s = self.st["stats"] if keep else {}
        for k in ("requests", "grants", "errors", "statuses", "last"):
            s.setdefault(k, {})
        for k in ("faults", "access_tokens", "refresh_tokens"):
            s.setdefault(k, 0)
        self.st["stats"] = s

    def count(self, group, key):
        g = self.st["stats"][group]
        g[key] = g.get(key, 0) + 1

    def log_request(self, rec):
        with open(self.reqlog, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def setting(self, name):
        return self.st["settings"].get(name, DEFAULT_SETTINGS.get(name))

    # ---- clients -------------------------------------------------------
    def register(self, c):
        if not isinstance(c, dict) or not c.get("client_id"):
            raise ValueError("a client needs a client_id")
        c = dict(c)
        if c.get("certificate"):
            pem = c["certificate"]
            der = subprocess.run(["openssl", "x509", "-in", pem, "-outform", "DER"],
                                 capture_output=True, check=True).stdout
            pub = subprocess.run(["openssl", "x509", "-in", pem, "-pubkey", "-noout"],
                                 capture_output=True, check=True).stdout
            c["_x5t_s256"] = b64u(hashlib.sha256(der).digest())
            c["_pubkey"] = pub.decode()
            mod = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-modulus"],
                                 capture_output=True, check=True).stdout.decode()
            # openssl dgst -verify reads only this many octets of a signature
            c["_sig_len"] = len(mod.strip().partition("=")[2]) // 2
        for k in ("scopes", "grants"):
            if isinstance(c.get(k), str):
                c[k] = c[k].split()
        self.st["clients"][c["client_id"]] = c

    # ---- faults --------------------------------------------------------
    def add_fault(self, f):
        if not isinstance(f, dict) or f.get("kind") not in ERROR_KINDS + OTHER_KINDS:
            raise ValueError("unknown fault kind %r (known: %s)"
                             % (f.get("kind") if isinstance(f, dict) else f,
                                " ".join(ERROR_KINDS + OTHER_KINDS)))
        f = dict(f)
        f.setdefault("endpoint", "token")
        f.setdefault("count", 1)
        self.st["faults"].append(f)

    def take_fault(self, endpoint, grant):
        for i, f in enumerate(self.st["faults"]):
            if f["endpoint"] != endpoint:
                continue
            if f.get("grant") and f["grant"] != grant:
                continue
            if f["count"] > 0:
                f["count"] -= 1
                if f["count"] == 0:
                    del self.st["faults"][i]
            self.st["stats"]["faults"] += 1
            return f
        return None

    # ---- replies -------------------------------------------------------
    def error(self, err, desc=None, status=None, headers=None):
        prov = self.setting("provider")
        status = status or ERROR_STATUS.get(err, 400)
        if prov == "microsoft":
            code, text = MS_CODES.get(err, (90000, "Error."))
            ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
            trace = "%s-%s" % (secrets.token_hex(4), secrets.token_hex(6))
            body = {"error": err,
                    "error_description": "AADSTS%d: %s Trace ID: %s Correlation ID: %s "
                    "Timestamp: %s" % (code, desc or text, trace, trace, ts),
                    "error_codes": [code], "timestamp": ts, "trace_id": trace,
                    "correlation_id": trace,
                    "error_uri": "https://login.microsoftonline.com/error?code=%d" % code}
        elif prov == "google":
            body = {"error": err, "error_description": desc or GOOGLE_TEXT.get(err, "Bad Request")}
        else:
            body = {"error": err, "error_description": desc or ("fake: " + err)}
        self.count("errors", err)
        return Reply(status, body, headers=dict(headers or {}, **{"Cache-Control": "no-store"}))

    def fault_reply(self, f):
        kind = f["kind"]
        if kind in ERROR_KINDS:
            return self.error(kind, f.get("description"), f.get("status"))
        if kind in ("429", "503", "http"):
            status = int(f.get("status") or (503 if kind == "http" else kind))
            ra = f.get("retry_after", 1)
            hdr = {"Retry-After": str(ra)} if ra is not None else {}
            err = "temporarily_unavailable" if status != 429 else "too_many_requests"
            r = self.error(err, f.get("description"), status, hdr)
            return r
        if kind == "hang":
            return Reply(action="hang", delay=float(f.get("delay", 600)))
        if kind == "close":
            return Reply(action="close")
        if kind == "html":
            return Reply(int(f.get("status", 200)),
                         b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
                         b"<body><h1>Sign in to your account</h1></body></html>\n",
                         "text/html; charset=utf-8")
        if kind == "garbage":
            return Reply(200, b"\x00\xff{\"acc\x1b[2Jess_tok\xfe\xfd" + os.urandom(64))
        if kind == "no_access_token":
            return Reply(200, {"token_type": "Bearer", "expires_in": self.setting("expires_in")})
        return None

    # ---- tokens --------------------------------------------------------
    def mint(self, user, client_id, variant=None, expires_in=None, scope=None):
        t = now()
        exp_in = int(expires_in if expires_in is not None else self.setting("expires_in"))
        body = {"iss": self.args.issuer, "sub": user, "email": user,
                "scope": scope or self.setting("token_scope"), "iat": t, "nbf": t,
                "exp": t + exp_in, "jti": secrets.token_hex(8), "client_id": client_id}
        key = self.key
        if variant == "wrong_key":
            key = secrets.token_bytes(32)
        elif variant == "wrong_user":
            body["email"] = body["sub"] = "wrong-" + user
        elif variant == "expired":
            body["exp"] = t - 120
            body["iat"] = body["nbf"] = t - 240
        elif variant == "no_scope":
            del body["scope"]
        elif variant == "wrong_issuer":
            body["iss"] = "https://wrong-issuer.invalid"
        elif variant:
            raise ValueError("unknown token variant %r" % variant)
        head = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + \
            b64u(json.dumps(body, sort_keys=True).encode())
        sig = hmac.new(key, head.encode(), hashlib.sha256).digest()
        self.st["stats"]["access_tokens"] += 1
        return head + "." + b64u(sig), exp_in

    def new_refresh(self, cid, user, scope):
        rt = "rt-" + secrets.token_urlsafe(24)
        self.st["refresh"][rt] = {"client_id": cid, "user": user, "scope": scope,
                                  "valid": True, "issued": now()}
        self.st["stats"]["refresh_tokens"] += 1
        return rt

    def token_reply(self, cid, user, scope, refresh, fault):
        variant = None
        if fault is not None and fault["kind"] == "bad_token":
            variant = fault.get("variant", "wrong_key")
        at, exp_in = self.mint(user, cid, variant)
        body = {"token_type": "Bearer", "access_token": at, "expires_in": exp_in,
                "scope": scope}
        if self.setting("provider") == "microsoft":
            body["ext_expires_in"] = exp_in
        if refresh:
            body["refresh_token"] = refresh
        return Reply(200, body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faketoken/1"

    def setup(self):
        self.request.settimeout(60)
        self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *a):
        sys.stderr.write("faketoken: %s %s\n" % (self.address_string(), fmt % a))
        sys.stderr.flush()

    # ---- I/O -----------------------------------------------------------
    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, r):
        if r.delay and r.action is None:
            time.sleep(r.delay)
        if r.action == "hang":
            end = time.time() + r.delay
            while time.time() < end:
                time.sleep(0.2)
            self.close_connection = True
            return
        if r.action == "close":
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(r.status)
        self.send_header("Content-Type", r.ctype)
        self.send_header("Content-Length", str(len(r.body)))
        for k, v in r.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(r.body)

    def endpoint(self, path):
        p = path.rstrip("/")
        for suffix, name in (("/token", "token"), ("/devicecode", "devicecode"),
                             ("/device/code", "devicecode"), ("/authorize", "authorize"),
                             ("/auth", "authorize")):
            if p.endswith(suffix):
                return name
        return None

    # ---- GET -----------------------------------------------------------
    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        idp = self.server.idp
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        with idp.lock:
            if u.path == "/_stats":
                r = Reply(200, idp.st["stats"])
            elif u.path == "/_state":
                r = Reply(200, idp.st)
            elif u.path == "/_mint":
                try:
                    at, _ = idp.mint(q.get("user", "user@example.test"), "mint",
                                     q.get("variant"), q.get("expires_in"), q.get("scope"))
                    idp.st["stats"]["access_tokens"] -= 1
                    r = Reply(200, {"access_token": at})
                except ValueError as e:
                    r = Reply(400, {"error": str(e)})
            elif self.endpoint(u.path) == "authorize":
                r = self.authorize(idp, q)
                idp.save()
            else:
                r = Reply(404, {"error": "not_found", "error_description": u.path})
        self.send(r)

    def authorize(self, idp, q):
        idp.count("requests", "authorize")
        st = idp.st
        st["stats"]["last"]["authorize"] = q
        c = st["clients"].get(q.get("client_id", ""))
        ru = q.get("redirect_uri", "")
        idp.log_request({"t": now(), "endpoint": "authorize", "query": q})
        if c is None:
            return self.html_error(idp, "unknown client_id %r" % q.get("client_id"))
        if not self.redirect_ok(c, ru):
            return self.html_error(idp, "redirect_uri %r is not registered" % ru)
        state = q.get("state")

        def redirect(params):
            if state is not None and "state" not in params:
                params["state"] = state
            sep = "&" if "?" in ru else "?"
            idp.count("statuses", "302")
            return Reply(302, b"", "text/plain",
                         {"Location": ru + sep + urllib.parse.urlencode(params)})

        f = idp.take_fault("authorize", None)
        if f is not None and f["kind"] in ERROR_KINDS:
            idp.count("errors", f["kind"])
            return redirect({"error": f["kind"], "error_description": f.get(
                "description", "The user declined consent." if f["kind"] == "access_denied"
                else "fake: " + f["kind"])})
        if f is not None and f["kind"] not in ("wrong_state", "slow", "bad_token",
                                               "no_access_token"):
            return idp.fault_reply(f)  # html, garbage, 429/503, close, hang
        if q.get("response_type") != "code":
            return redirect({"error": "unsupported_response_type"})
        if idp.setting("require_pkce") and (not q.get("code_challenge")
                                            or q.get("code_challenge_method") != "S256"):
            idp.count("errors", "invalid_request")
            return redirect({"error": "invalid_request",
                             "error_description": "code_challenge with method S256 required"})
        bad = self.bad_scope(c, q.get("scope", ""))
        if bad:
            idp.count("errors", "invalid_scope")
            return redirect({"error": "invalid_scope", "error_description": bad})
        code = "ac-" + secrets.token_urlsafe(18)
        st["codes"][code] = {"client_id": c["client_id"], "redirect_uri": ru,
                             "challenge": q.get("code_challenge"),
                             "scope": q.get("scope", ""), "exp": now() + 600, "used": False}
        params = {"code": code}
        if f is not None and f["kind"] == "wrong_state":
            params["state"] = "not-" + (state or "")
        return redirect(params)

    def html_error(self, idp, text):
        idp.count("statuses", "400")
        idp.count("errors", "invalid_request")
        return Reply(400, ("<html><body><h1>Sorry, but we're having trouble signing you in."
                           "</h1><p>%s</p></body></html>\n" % text).encode(),
                     "text/html; charset=utf-8")

    @staticmethod
    def redirect_ok(c, ru):
        if c.get("redirect_uris"):
            return ru in c["redirect_uris"]
        u = urllib.parse.urlsplit(ru)
        return u.scheme == "http" and u.hostname in ("127.0.0.1", "::1", "localhost") \
            and not u.fragment

    @staticmethod
    def bad_scope(c, scope):
        if not c.get("scopes"):
            return None
        extra = [s for s in scope.split() if s not in c["scopes"]]
        return ("scope not allowed: " + " ".join(extra)) if extra else None

    # ---- POST ----------------------------------------------------------
    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        idp = self.server.idp
        raw = self.body()
        if u.path == "/_control":
            with idp.lock:
                r = self.control(idp, raw)
            return self.send(r)
        ep = self.endpoint(u.path)
        if ep not in ("token", "devicecode"):
            return self.send(Reply(404, {"error": "not_found", "error_description": u.path}))
        pairs = urllib.parse.parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        form = dict(pairs)
        grant = form.get("grant_type", "") if ep == "token" else None
        if grant == DEVICE_GRANT:
            grant = "device_code"  # counted and matched by its short name
        elif grant == "device_code":
            grant = "device_code(bare)"  # RFC 8628 wants the URN: refused
        with idp.lock:
            idp.count("requests", ep)
            if grant is not None:
                idp.count("grants", grant or "(none)")
            last = dict(form)
            last["_auth"] = ("basic" if self.headers.get("Authorization", "").startswith("Basic ")
                             else "private_key_jwt" if "client_assertion" in form
                             else "post" if "client_secret" in form else "none")
            idp.st["stats"]["last"][ep] = last
            f = idp.take_fault(ep, grant)
            r = None
            if f is not None and f["kind"] not in ("slow", "bad_token"):
                r = idp.fault_reply(f)
            if r is None and len(pairs) != len(form):
                r = idp.error("invalid_request", "a parameter is repeated")
            if r is None:
                url = "https://%s%s" % (self.headers.get("Host", "localhost"), u.path)
                r = self.devicecode(idp, form, url) if ep == "devicecode" \
                    else self.token(idp, form, grant, url, f)
            if f is not None and f["kind"] == "slow":
                r.delay = float(f.get("delay", 2))
            if r.action is None:
                idp.count("statuses", str(r.status))
            err = None
            if r.ctype == "application/json" and r.status != 200:
                try:
                    err = json.loads(r.body).get("error")
                except ValueError:
                    pass
            idp.log_request({"t": now(), "endpoint": ep, "grant": grant,
                             "status": r.status if r.action is None else r.action,
                             "error": err, "fault": f["kind"] if f else None,
                             "client_id": form.get("client_id")})
            idp.save()
        self.send(r)

    def control(self, idp, raw):
        try:
            c = json.loads(raw or b"{}")
            if not isinstance(c, dict):
                raise ValueError("the control body must be a JSON object")
            known = {"reset_stats", "set", "client", "clear_faults", "fault",
                     "revoke_refresh_tokens", "revoke"}
            if set(c) - known:
                raise ValueError("unknown control keys: %s" % " ".join(sorted(set(c) - known)))
            if c.get("reset_stats"):
                idp.reset_stats()
            if "set" in c:
                unknown = set(c["set"]) - set(DEFAULT_SETTINGS)
                if unknown:
                    raise ValueError("unknown settings: %s" % " ".join(sorted(unknown)))
                idp.st["settings"].update(c["set"])
            for cl in (c["client"] if isinstance(c.get("client"), list)
                       else [c["client"]] if "client" in c else []):
                idp.register(cl)
            if c.get("clear_faults"):
                idp.st["faults"] = []
            for f in (c["fault"] if isinstance(c.get("fault"), list)
                      else [c["fault"]] if "fault" in c else []):
                idp.add_fault(f)
            if c.get("revoke_refresh_tokens"):
                for v in idp.st["refresh"].values():
                    v["valid"] = False
            if c.get("revoke"):
                if c["revoke"] in idp.st["refresh"]:
                    idp.st["refresh"][c["revoke"]]["valid"] = False
            idp.save()
            return Reply(200, {"ok": True, "faults": len(idp.st["faults"])})
        except (ValueError, TypeError, KeyError, subprocess.CalledProcessError) as e:
            return Reply(400, {"error": "control: %s" % e})

    # ---- client authentication ------------------------------------------
    def client_auth(self, idp, form, url, required):
        """(client, None) or (None, error Reply)"""
        basic_id = basic_secret = None
        ah = self.headers.get("Authorization", "")
        if ah.startswith("Basic "):
            try:
                i, _, s = base64.b64decode(ah[6:]).decode().partition(":")
                basic_id, basic_secret = urllib.parse.unquote_plus(i), \
                    urllib.parse.unquote_plus(s)
            except (ValueError, UnicodeDecodeError):
                return None, idp.error("invalid_client", "malformed HTTP Basic credentials")
        cid = basic_id or form.get("client_id")
        assertion = form.get("client_assertion")
        if assertion is not None and not cid:
            try:
                cid = json.loads(b64u_dec(assertion.split(".")[1])).get("iss")
            except (ValueError, IndexError):
                pass
        c = idp.st["clients"].get(cid or "")
        if c is None:
            return None, idp.error("invalid_client", "unknown client_id %r" % cid)
        if assertion is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return None, idp.error("invalid_client", "client_assertion_type must be "
                                       + ASSERTION_TYPE)
            why = self.check_assertion(idp, c, assertion, url)
            if why:
                return None, idp.error("invalid_client", "client_assertion: " + why)
            return c, None
        secret = basic_secret if basic_id else form.get("client_secret")
        if c.get("client_secret") is not None:
            if secret is None:
                return None, idp.error("invalid_client", "client_secret or client_assertion "
                                       "required")
            if not hmac.compare_digest(secret.encode(), c["client_secret"].encode()):
                return None, idp.error("invalid_client", "Invalid client secret provided.")
        elif required:
            return None, idp.error("invalid_client", "client authentication required")
        return c, None

    def check_assertion(self, idp, c, assertion, url):
        if not c.get("_pubkey"):
            return "no certificate registered for this client"
        parts = assertion.split(".")
        if len(parts) != 3:
            return "not a JWS compact serialization"
        try:
            head = json.loads(b64u_dec(parts[0]))
            body = json.loads(b64u_dec(parts[1]))
            sig = b64u_dec(parts[2])
        except ValueError as e:
            return "undecodable: %s" % e
        if head.get("alg") not in ("RS256", "PS256"):
            return "alg %r (RS256 or PS256 wanted)" % head.get("alg")
        if head.get("x5t#S256") != c["_x5t_s256"]:
            return "x5t#S256 %r does not match the certificate" % head.get("x5t#S256")
        if len(sig) != c["_sig_len"]:
            return "signature of %d octets (%d wanted)" % (len(sig), c["_sig_len"])
        if not self.verify_rsa(idp, c["_pubkey"], head["alg"],
                               (parts[0] + "." + parts[1]).encode(), sig):
            return "bad signature"
        t = now()
        if body.get("iss") != c["client_id"] or body.get("sub") != c["client_id"]:
            return "iss and sub must be the client_id"
        aud = body.get("aud")
        if not (aud == url or (isinstance(aud, list) and url in aud)):
            return "aud %r is not %r" % (aud, url)
        if not isinstance(body.get("exp"), (int, float)) or body["exp"] <= t:
            return "expired or no exp"
        if isinstance(body.get("nbf"), (int, float)) and body["nbf"] > t + 60:
            return "nbf in the future"
        if not body.get("jti"):
            return "no jti"
        return None

    @staticmethod
    def verify_rsa(idp, pubkey, alg, data, sig):
        d = idp.args.state_dir
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            paths = {}
            for name, content in (("pub.pem", pubkey.encode()), ("data", data), ("sig", sig)):
                paths[name] = os.path.join(tmp, name)
                with open(paths[name], "wb") as f:
                    f.write(content)
            cmd = ["openssl", "dgst", "-sha256", "-verify", paths["pub.pem"],
                   "-signature", paths["sig"]]
            if alg == "PS256":
                cmd[3:3] = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
            cmd.append(paths["data"])
            return subprocess.run(cmd, capture_output=True).returncode == 0

    # ---- grants ----------------------------------------------------------
    def devicecode(self, idp, form, url):
        c, err = self.client_auth(idp, form, url, False)
        if err:
            return err
        bad = self.bad_scope(c, form.get("scope", ""))
        if bad:
            return idp.error("invalid_scope", bad)
        dc = "dc-" + secrets.token_urlsafe(24)
        uc = "%s-%s" % (secrets.token_hex(2).upper(), secrets.token_hex(2).upper())
        exp_in = int(idp.setting("device_expires_in"))
        interval = int(idp.setting("device_interval"))
        idp.st["devices"][dc] = {"client_id": c["client_id"], "scope": form.get("scope", ""),
                                 "user_code": uc, "polls": 0, "exp": now() + exp_in,
                                 "interval": interval, "last_poll": 0, "used": False}
        verify = url.rsplit("/", 1)[0] + "/device"
        body = {"device_code": dc, "user_code": uc, "expires_in": exp_in, "interval": interval}
        prov = idp.setting("provider")
        if prov == "google":
            body["verification_url"] = verify
        else:
            body["verification_uri"] = verify
        if prov == "microsoft":
            body["message"] = ("To sign in, use a web browser to open the page %s and enter "
                               "the code %s to authenticate." % (verify, uc))
        elif prov == "generic":
            body["verification_uri_complete"] = verify + "?user_code=" + uc
        return Reply(200, body)

    def token(self, idp, form, grant, url, fault):
        known = ("device_code", "authorization_code", "refresh_token", "client_credentials")
        if grant not in known:
            return idp.error("unsupported_grant_type", "grant_type %r" % grant)
        c, err = self.client_auth(idp, form, url, grant == "client_credentials")
        if err:
            return err
        if c.get("grants") and grant not in c["grants"]:
            return idp.error("unauthorized_client", "grant %s not allowed" % grant)
        user = c.get("user", c["client_id"])
        fn = {"device_code": self.g_device, "authorization_code": self.g_code,
              "refresh_token": self.g_refresh, "client_credentials": self.g_client}[grant]
        return fn(idp, c, user, form, fault)

    def g_device(self, idp, c, user, form, fault):
        d = idp.st["devices"].get(form.get("device_code", ""))
        if d is None or d["client_id"] != c["client_id"] or d["used"]:
            return idp.error("invalid_grant", "unknown or used device_code")
        t = time.time()
        if t > d["exp"]:
            return idp.error("expired_token")
        if idp.setting("enforce_interval") and t - d["last_poll"] < d["interval"]:
            d["interval"] += 5
            d["last_poll"] = t
            return idp.error("slow_down")
        d["last_poll"] = t
        d["polls"] += 1
        if d["polls"] <= int(idp.setting("device_polls")):
            return idp.error("authorization_pending")
        outcome = idp.setting("device_outcome")
        if outcome == "deny":
            return idp.error("access_denied")
        if outcome == "expire":
            return idp.error("expired_token")
        d["used"] = True
        rt = idp.new_refresh(c["client_id"], user, d["scope"])
        return idp.token_reply(c["client_id"], user, d["scope"], rt, fault)

    def g_code(self, idp, c, user, form, fault):
        code = idp.st["codes"].get(form.get("code", ""))
        if code is None or code["client_id"] != c["client_id"]:
            return idp.error("invalid_grant", "unknown authorization code")
        if code["used"] or now() > code["exp"]:
            return idp.error("invalid_grant", "authorization code used or expired")
        code["used"] = True
        if form.get("redirect_uri") != code["redirect_uri"]:
            return idp.error("invalid_grant", "redirect_uri differs from the authorization "
                             "request")
        if code["challenge"]:
            v = form.get("code_verifier", "")
            if not 43 <= len(v) <= 128:
                return idp.error("invalid_grant", "code_verifier must be 43-128 characters")
            if b64u(hashlib.sha256(v.encode()).digest()) != code["challenge"]:
                return idp.error("invalid_grant", "PKCE verification failed")
        rt = idp.new_refresh(c["client_id"], user, code["scope"])
        return idp.token_reply(c["client_id"], user, code["scope"], rt, fault)

    def g_refresh(self, idp, c, user, form, fault):
        old = form.get("refresh_token", "")
        r = idp.st["refresh"].get(old)
        if r is None or not r["valid"] or r["client_id"] != c["client_id"]:
            return idp.error("invalid_grant", "refresh token unknown, revoked or expired")
        scope = form.get("scope") or r["scope"]
        bad = self.bad_scope(c, scope)
        if bad:
            return idp.error("invalid_scope", bad)
        new = None
        if idp.setting("rotate_refresh"):
            new = idp.new_refresh(c["client_id"], r["user"], r["scope"])
            if idp.setting("revoke_old_refresh"):
                r["valid"] = False
        return idp.token_reply(c["client_id"], r["user"], scope, new, fault)

    def g_client(self, idp, c, user, form, fault):
        scope = form.get("scope", "")
        bad = self.bad_scope(c, scope)
        if bad:
            return idp.error("invalid_scope", bad)
        return idp.token_reply(c["client_id"], user, scope, None, fault)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        sys.stderr.write("faketoken: %s: %s\n" % (client_address[0], e))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--hs256-key-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--issuer", default="https://idp.popgate.test")
    p.add_argument("--client", action="append")
    p.add_argument("--set", action="append")
    args = p.parse_args()
    os.makedirs(args.state_dir, exist_ok=True)
    srv = Server(("127.0.0.1", args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.idp = IdP(args)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(args.port_file + ".tmp", args.port_file)
    sys.stderr.write("faketoken: listening on 127.0.0.1:%d\n" % srv.server_address[1])
    sys.stderr.flush()
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
