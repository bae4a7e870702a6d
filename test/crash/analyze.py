#!/usr/bin/env python3
"""analyze.py - the verdict of a crash run (test/crash/crash.sh).

Reads every smtp-sink dump, the popgate log and the generated manifests, and
prints "CHECK 0|1 description" lines (turned into TAP by run_checks) plus
"# ..." diagnostics:

  lost        every generated X-Test-Id reached the sink (the run ends with
              clean polls and relays, so "in the spool" is not an excuse)
  POP3 dups   every X-Test-Id reached the sink under one spool id only: one
              fetch committed once (a second fetch would get a new spool id)
  SMTP dups   a spool id that reached the sink k times has at least k-1
              "id=<id> status=requeued-after-crash" lines in the log: each
              duplicate fell in the window between the host's final 250 and
              the commit of `sent`, and recovery logged it
"""
import argparse
import collections
import json
import os
import re
import sys

TID_RE = re.compile(rb"^X-Test-Id: (\S+)", re.M)
SPOOL_ID_RE = re.compile(rb"with POP3 id ([0-9A-F]{16})")
REQUEUE_RE = re.compile(r"id=([0-9A-F]{16}) (?:account=\S* )?status=requeued-after-crash")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sink", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--kills", default="")
    ap.add_argument("--relay-kills", type=int, default=-1,
                    help="relay sessions killed: no more SMTP-side duplicates than that")
    ap.add_argument("--per-kill", type=int, default=0,
                    help="kills: print the SMTP-side duplicates per kill")
    ap.add_argument("--db", default="",
                    help="the spool's index.db: every requeue after a crash it recorded "
                    "(history) must be logged by id")
    ap.add_argument("expected", nargs="+")
    a = ap.parse_args()

    tids = set()
    for d in a.expected:
        with open(os.path.join(d, "manifest.json")) as f:
            tids.update(json.load(f).keys())
    copies = collections.defaultdict(list)   # tid -> [spool id per copy]
    unknown = 0
    for name in os.listdir(a.sink):
        if not name.startswith("dump."):
            continue
        with open(os.path.join(a.sink, name), "rb") as f:
            data = f.read()
        t, s = TID_RE.search(data), SPOOL_ID_RE.search(data)
        if not t or not s:
            unknown += 1
            continue
        copies[t.group(1).decode()].append(s.group(1).decode())
    with open(a.log, errors="replace") as f:
        requeued = collections.Counter(REQUEUE_RE.findall(f.read()))

    lost = sorted(tids - set(copies))
    pop3_dups = sorted(t for t, ids in copies.items() if len(set(ids)) > 1)
    per_id = collections.Counter(i for ids in copies.values() for i in ids)
    smtp_dups = sum(k - 1 for k in per_id.values())
    unexplained = sorted(i for i, k in per_id.items() if k - 1 > requeued[i])
    print("# messages generated: %d, at the sink: %d transactions for %d messages"
          % (len(tids), sum(per_id.values()), len(copies)))
    print("# kills: %s" % a.kills)
    print("# SMTP-side duplicates: %d (messages requeued after a crash, logged: %d, "
          "distinct: %d)" % (smtp_dups, sum(requeued.values()), len(requeued)))
    if a.per_kill > 0:
        print("# SMTP-side duplicates per kill: %.2f (%d duplicates, %d kills)"
              % (smtp_dups / a.per_kill, smtp_dups, a.per_kill))
    print("CHECK %d 0 lost: every one of the %d messages reached the sink"
          % (1 if lost else 0, len(tids)))
    for t in lost[:10]:
        print("# lost: %s" % t)
    print("CHECK %d no transaction at the sink without a test id and a spool id"
          % (1 if unknown else 0))
    print("CHECK %d 0 duplicates from the POP3 side (each message under one spool id)"
          % (1 if pop3_dups else 0))
    for t in pop3_dups[:10]:
        print("# POP3-side duplicate: %s as %s" % (t, " ".join(sorted(set(copies[t])))))
    print("CHECK %d each of the %d SMTP-side duplicates was requeued after a crash and logged"
          % (1 if unexplained else 0, smtp_dups))
    for i in unexplained[:10]:
        print("# unexplained duplicate: %s sent %d times, requeued %d times"
              % (i, per_id[i], requeued[i]))
    if a.db:
        # the index's own record of each requeue from `sending`: each must
        # have its log line, duplicate or not (the log must never say less
        # than the index did)
        import sqlite3
        con = sqlite3.connect("file:%s?mode=ro" % a.db, uri=True, timeout=10)
        hist = collections.Counter(r[0] for r in con.execute(
            "SELECT msg_id FROM history WHERE state = 'queued' AND reply LIKE 'recovery:%'"))
        con.close()
        unlogged = sorted(i for i, k in hist.items() if k > requeued[i])
        print("CHECK %d each of the %d requeues after a crash recorded in the index was logged "
              "by id" % (1 if unlogged else 0, sum(hist.values())))
        for i in unlogged[:10]:
            print("# requeue not logged: %s requeued %d times, logged %d times"
                  % (i, hist[i], requeued[i]))
    if a.relay_kills >= 0:
        # accepted recipients are journalled at once: only a kill between the
        # host's reply and that write can send a message twice, one per kill
        print("CHECK %d SMTP-side duplicates (%d) are no more than the relay sessions killed (%d)"
              % (1 if smtp_dups > a.relay_kills else 0, smtp_dups, a.relay_kills))
    return 0


if __name__ == "__main__":
    sys.exit(main())
