#!/usr/bin/env python3
"""docscheck.py - the manual pages document what the program has.

  docscheck.py CONF_C CONF_5 HELP_TXT POPGATE_8

Every option of the parser's tables (the cfg_opt_t arrays of gateway/conf_schema.c)
must have an entry in popgate.conf(5) in its block's section: a line after
.TP whose first word is the option (a block's sub-options, such as map's
"to", in the parent's entry line as "NAME ="); every command that
`popgate --help` lists must be in popgate(8)'s SYNOPSIS and have an entry
in COMMANDS.  Prints "CHECK 0/1 description" lines (run_checks) and
"# missing: ..." diagnostics; exit 1 if anything is missing.
"""
import re
import shlex
import sys

SECTIONS = {"top_opts": "TOP-LEVEL OPTIONS", "smtp_opts": "THE SMTP BLOCK",
            "account_opts": "ACCOUNT BLOCKS", "map_opts": "ACCOUNT BLOCKS",
            "oauth2_opts": "ACCOUNT BLOCKS"}
SUBBLOCKS = {"oauth2": "The oauth2 block"}  # an account option that is a block: its .SS
PARENT = {"map_opts": "map"}


def parser_options(path):
    """{array name: [option names]} from the cfg_opt_t arrays"""
    src = open(path).read()
    out = {}
    for m in re.finditer(r"static cfg_opt_t (\w+)\[\] = \{(.*?)CFG_END\(\)", src, re.S):
        out[m.group(1)] = re.findall(r'CFG_\w+\(\s*"([^"]+)"', m.group(2))
    return out


def sections(path):
    """{section title: [lines]} of a man page (.SS stays in its .SH)"""
    secs, cur = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        m = re.match(r'\.SH\s+"?([^"]*)"?', line)
        if m:
            cur = m.group(1).strip()
            secs[cur] = []
        elif cur is not None:
            secs[cur].append(line)
    return secs


def entries(lines):
    """first words of the lines after .TP, and those lines"""
    words, texts = set(), []
    for prev, line in zip(lines, lines[1:]):
        if prev.strip() == ".TP":
            m = re.match(r"\.(B[RI]?)\s+\S", line)
            if m:
                try:
                    toks = shlex.split(line)
                except ValueError:
                    toks = line.split()
                # .B: every word bold; .BR/.BI: every other word, from the first
                bold = toks[1:] if m.group(1) == "B" else toks[1::2]
                for t in bold[:1] + [t for t in bold[1:] if re.fullmatch(r"[a-z0-9_\\-]+", t)]:
                    words.add(t.replace("\\-", "-").strip('"'))
                texts.append(line)
    return words, texts


def main():
    conf_c, conf_5, help_txt, man_8 = sys.argv[1:5]
    ok = True
    opts = parser_options(conf_c)
    s5 = sections(conf_5)
    missing = []
    count = 0
    for arr, names in sorted(opts.items()):
        sec = SECTIONS.get(arr)
        if sec is None:
            missing.append("%s: no section known for this table" % arr)
            continue
        words, texts = entries(s5.get(sec, []))
        for name in names:
            count += 1
            if name in ("smtp", "account") and arr == "top_opts":
                # a block: its own section
                found = ("THE SMTP BLOCK" if name == "smtp" else "ACCOUNT BLOCKS") in s5
            elif name in SUBBLOCKS and arr == "account_opts":
                found = any(l.startswith(".SS") and SUBBLOCKS[name] in l
                            for l in s5.get(sec, []))
            elif arr in PARENT:
                found = any(re.match(r"\.B[RI]?\s+%s\b" % PARENT[arr], t) and
                            re.search(r"\b%s =" % re.escape(name), t) for t in texts)
            else:
                found = name in words
            if not found:
                missing.append("option '%s' (%s) has no entry in popgate.conf(5) section %s"
                               % (name, arr, sec))
    for m in missing:
        print("# missing: " + m)
    print("CHECK %d every one of the %d options of the parser's tables has an entry in "
          "popgate.conf(5)" % (1 if missing else 0, count))
    ok = ok and not missing

    help_text = open(help_txt).read()
    body = help_text.split("Commands:", 1)[1].split("Options:", 1)[0]
    cmds = re.findall(r"^  ([a-z][a-z-]*)", body, re.M)
    s8 = sections(man_8)
    syn = "\n".join(s8.get("SYNOPSIS", []))
    words, _ = entries(s8.get("COMMANDS", []))
    miss8 = []
    for c in cmds:
        esc = c.replace("-", "\\-")
        if not re.search(r"^\.B[RI]?\s+%s(\s|$)" % re.escape(esc), syn, re.M):
            miss8.append("command '%s' is not in popgate(8) SYNOPSIS" % c)
        if c not in words:
            miss8.append("command '%s' has no entry in popgate(8) COMMANDS" % c)
    for m in miss8:
        print("# missing: " + m)
    print("CHECK %d every one of the %d commands of --help is in popgate(8)'s SYNOPSIS "
          "and COMMANDS" % (1 if (miss8 or len(cmds) < 5) else 0, len(cmds)))
    ok = ok and not miss8 and len(cmds) >= 5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
