#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The phase table at the end of ``make test``: where the time of the run went.

The phases file has one JSON object a line, ``{"phase", "seconds", "detail", "at"}``, written by
tests/phase_clock.py (``record()`` and its pytest plugin, through ``PFT_PHASES``) and by this
script's ``--record`` (the Makefile's setup and lint, and the ``make test start``/``end``
markers).

    phase_table.py FILE                                  print the table
    phase_table.py FILE --record PHASE --seconds S       append a record
    phase_table.py FILE --record PHASE --since EPOCH     ... of the seconds since EPOCH

The table lists setup, lint, unit, integration, testbed up, restore kept cluster, converge,
second run, verify, the e2e modules in the order they ran, then any other phase (a phase
recorded more than once is summed); phases absent from the run are left out. TOTAL is the wall
time between the ``make test start`` and ``make test end`` markers when both are there (a row
"(not in a phase)" then shows what the phases do not cover), else the sum of the phases. The
last line, ``PHASES name=seconds ... total=seconds`` (spaces in names as ``_``), is for grep.
"""
import argparse
import json
import os
import sys
import time

ORDER = ("setup", "lint", "unit", "integration", "testbed up", "restore kept cluster",
         "converge", "second run", "verify")
START, END = "make test start", "make test end"


def append(path, phase, seconds, detail=""):
    """Append one record (the same line as tests/phase_clock.py's record() writes)."""
    line = json.dumps({"phase": phase, "seconds": round(float(seconds), 3), "detail": detail,
                       "at": round(time.time(), 3)}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(path):
    """The records of the file, in order; lines that do not parse are skipped."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    records.append({"phase": str(rec["phase"]), "seconds": float(rec["seconds"]),
                                    "detail": str(rec.get("detail", "")), "at": rec.get("at")})
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return records


def phases(records):
    """[(phase, seconds, detail)] in table order, repeated phases summed; and the total."""
    sums, details, seen, marks = {}, {}, [], {}
    for rec in records:
        name = rec["phase"]
        if name in (START, END):
            marks[name] = rec["at"]
            continue
        if name not in sums:
            seen.append(name)
            sums[name], details[name] = 0.0, []
        sums[name] += rec["seconds"]
        if rec["detail"]:
            details[name].append(rec["detail"])
    e2e = [n for n in seen if n.startswith("e2e ")]
    rest = [n for n in seen if n not in ORDER and n not in e2e]
    names = [n for n in ORDER if n in sums] + e2e + rest
    rows = [(n, sums[n], "; ".join(details[n])) for n in names]
    if isinstance(marks.get(START), (int, float)) and isinstance(marks.get(END), (int, float)):
        total = (marks[END] - marks[START], "wall")
    else:
        total = (sum(sums.values()), "sum")
    return rows, total


def table(records):
    """The table as text (no trailing newline)."""
    rows, (total, how) = phases(records)
    if not rows:
        return "no phases recorded"
    width = max(len("phase"), len("(not in a phase)"), *(len(n) for n, _, _ in rows))
    out = [f"{'phase':<{width}}  {'seconds':>9}  {'minutes':>7}  detail",
           f"{'-' * width}  {'-' * 9}  {'-' * 7}  ------"]
    for name, seconds, detail in rows:
        out.append(f"{name:<{width}}  {seconds:>9.1f}  {seconds / 60:>7.1f}  {detail}".rstrip())
    unphased = total - sum(seconds for _, seconds, _ in rows)
    if how == "wall" and unphased >= 0.05:
        name = "(not in a phase)"
        out.append(f"{name:<{width}}  {unphased:>9.1f}  {unphased / 60:>7.1f}  "
                   "pytest start and collection, make, between the phases")
    elif how == "wall" and unphased <= -0.05:
        name = "(side by side)"
        out.append(f"{name:<{width}}  {unphased:>9.1f}  {unphased / 60:>7.1f}  "
                   "phases that ran at the same time (make test's side run), counted once in TOTAL")
    out.append(f"{'-' * width}  {'-' * 9}  {'-' * 7}")
    out.append(f"{'TOTAL':<{width}}  {total:>9.1f}  {total / 60:>7.1f}  {how}")
    greppable = " ".join(f"{name.replace(' ', '_')}={seconds:.1f}" for name, seconds, _ in rows)
    out.append(f"PHASES {greppable} total={total:.1f}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("file", help="the phases file (JSON lines)")
    ap.add_argument("--record", metavar="PHASE", help="append a record instead of printing")
    ap.add_argument("--seconds", type=float, help="its seconds")
    ap.add_argument("--since", type=float, metavar="EPOCH", help="its seconds: now - EPOCH")
    ap.add_argument("--detail", default="", help="its detail")
    args = ap.parse_args(argv)
    if args.record is None:
        print("==> where the time went")
        print(table(read(args.file)))
        return 0
    if args.since is not None:
        seconds = time.time() - args.since
    elif args.seconds is not None:
        seconds = args.seconds
    else:
        ap.error("--record needs --seconds or --since")
    append(args.file, args.record, seconds, args.detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
