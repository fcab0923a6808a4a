#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark (P2): detection latency of the watch, from a sensor crossing its threshold to the
migration starting, on the site.yml-provisioned testbed.

Each run:
  1. guest1 runs on compute1, every sensor is cool, a fresh state directory;
  2. playbooks/watch.yml starts (window --window s, 1 s sampling, hysteresis from the inventory);
  3. once the watch is sampling, and after a random 2-6 s, compute1's 'CPU1 Temp' is set to 92
     (critical >= 85) through its BMC: t_cross, on the controller's clock;
  4. the watch detects it, selects compute3, reserves it and runs xen_migrate on compute1, which
     records the wall time at which it started `xl migrate` (compute1's clock; the offset to the
     controller's clock is measured over ssh, error <= half the round trip, reported);
  5. the node is cooled and guest1 migrated back (each run has its own state directory, so no
     quarantine carries over).

Per run it reports
  detect   = the decision's time stamp (watch-state.json, just after ipmi_health_info returned) - t_cross
  journal  = the audit journal entry's start (after placement, ranking and reservation) - t_cross
  module_process, module_code = xen_migrate's process start on compute1 (/proc, +-1 s) and the
             entry into its code - t_cross: Ansible's dispatch, then the interpreter's start
  migrate  = xl migrate started - t_cross
and compares the median of `migrate` with the issue's target, 2 x interval + hysteresis x interval.
The peer is that target (the bound a sampling watcher with this interval and hysteresis can reach).

LAST line: detect-latency runs=<n>: detect=<s> migrate_start=<s> target=<s> ratio=<migrate/target>

Usage: bench/detect_latency.py --testbed NAME [--runs 3] (the testbed must be provisioned by
site.yml; `make demo` leaves one named demo).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "testbed"))

from pft_testbed.testbed import Testbed  # noqa: E402

BIN = os.path.join(REPO, ".venv", "bin")


def env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def where(tb, guest):
    nodes = []
    for n in ("compute1", "compute2", "compute3"):
        out = tb.ssh(n, "xl list", timeout=60).stdout.splitlines()[1:]
        if any(line.split()[0] == guest for line in out if line.split()):
            nodes.append(n)
    return nodes


def fmt(value):
    return "%.2f" % value if value is not None else "?"


def clock_offset(tb, node):
    """node clock - controller clock, and the round trip (error bound is half of it)."""
    best = None
    for _ in range(5):
        t1 = time.time()
        remote = float(tb.ssh(node, "date +%s.%N", timeout=30).stdout.strip())
        t2 = time.time()
        cand = (remote - (t1 + t2) / 2, t2 - t1)
        if best is None or cand[1] < best[1]:
            best = cand
    return best


def restore(tb, inv, guest="guest1", home="compute1"):
    for n in ("compute1", "compute2", "compute3"):
        tb.cool(n)
    nodes = where(tb, guest)
    if nodes != [home]:
        src = nodes[0]
        subprocess.run([os.path.join(BIN, "ansible"), *inv, src, "-m", "xen_migrate", "-a",
                        "guest=%s target=%s" % (guest, home)], cwd=REPO, env=env(), check=True,
                       capture_output=True, timeout=1200)
        # the watch reads the placement from Ganglia: publish it now, as the watch does after a move
        for n in (src, home):
            tb.ssh(n, "systemctl start pft-xen-metrics.service", timeout=120)


def one_run(tb, inv, window, log):
    state = tempfile.mkdtemp(prefix="pft-latency-")
    argv = [os.path.join(BIN, "ansible-playbook"), *inv, os.path.join(REPO, "playbooks", "watch.yml"),
            "-e", "pft_state_dir=%s" % state, "-e", "pft_watch_window=%s" % window,
            "-e", "pft_alert_syslog_socket=/nonexistent"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_cross = {}

    def heat_when_sampling():
        time.sleep(random.uniform(2, 6))
        tb.heat("compute1", "CPU1 Temp", 92)
        t_cross["t"] = time.time()
    out = []
    started = False
    for line in proc.stdout:
        out.append(line)
        log.write(line)
        if not started and line.startswith("TASK [Sample the BMCs"):
            started = True
            threading.Thread(target=heat_when_sampling, daemon=True).start()
    rc = proc.wait()
    if rc != 0 or "t" not in t_cross:
        raise SystemExit("watch run failed (rc %d); see the log" % rc)
    hist = json.load(open(os.path.join(state, "watch-state.json")))["nodes"]["compute1"]["history"]
    decided = hist[-1]["t"]
    recs = [json.loads(line) for line in open(os.path.join(state, "audit.jsonl"))]
    mig = [r for r in recs if r.get("outcome") == "migrated"]
    if not mig:
        raise SystemExit("no migration recorded: %s" % recs)
    offset, rtt = clock_offset(tb, "compute1")
    m = mig[0]["migration"]

    def on_ctrl(key):  # a time stamp taken on compute1, on the controller's clock, relative to the crossing
        return m[key] - offset - t_cross["t"] if m.get(key) is not None else None
    return {"detect": decided - t_cross["t"], "journal": mig[0]["started"] - t_cross["t"],
            "module_process": on_ctrl("wall_process_start"), "module_code": on_ctrl("wall_called"),
            "migrate": on_ctrl("wall_t0"), "clock_err": rtt / 2, "total_s": m.get("total_s")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testbed", default=os.environ.get("PFT_DEMO_TESTBED", "demo"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=float, default=25)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--hysteresis", type=int, default=2)
    args = ap.parse_args()
    tb = Testbed(args.testbed)
    inv_dir = tempfile.mkdtemp(prefix="pft-latency-inv-")
    inv = ["-i", tb.write_inventory(inv_dir), "-i", os.path.join(REPO, "inventory", "testbed-site"),
           "-e", "pft_watch_interval=%s" % args.interval, "-e", "pft_health_hysteresis=%d" % args.hysteresis]
    os.makedirs(os.path.join(REPO, "run", "bench"), exist_ok=True)
    log = open(os.path.join(REPO, "run", "bench", "detect_latency.log"), "a")
    results = []
    for i in range(args.runs):
        restore(tb, inv[:4])
        r = one_run(tb, inv, args.window, log)
        results.append(r)
        print("run %d: verdict %.2f s, journal %.2f s, xen_migrate process on compute1 %s s, its code %s s, "
              "xl migrate %.2f s after the crossing (compute1 clock error <= %.2f s; process start +-1 s); "
              "migration took %s s"
              % (i + 1, r["detect"], r["journal"], fmt(r["module_process"]), fmt(r["module_code"]), r["migrate"],
                 r["clock_err"], r["total_s"]), flush=True)
    restore(tb, inv[:4])
    target = 2 * args.interval + args.hysteresis * args.interval
    det = statistics.median(r["detect"] for r in results)
    mig = statistics.median(r["migrate"] for r in results)
    print("target (2 x interval + hysteresis x interval) = %.1f s" % target)
    for key, what in (("detect", "crossing -> verdict (sampling, hysteresis)"),
                      ("journal", "-> journal (decide, placement, rank, reserve on the controller)"),
                      ("module_process", "-> xen_migrate process starts on the source (Ansible dispatch)"),
                      ("module_code", "-> its code runs (interpreter and imports on the source dom0)"),
                      ("migrate", "-> xl migrate starts (source and target checks)")):
        values = [r[key] for r in results if r[key] is not None]
        print("  median %-15s %7s s  %s" % (key, fmt(statistics.median(values)) if values else "?", what))
    print("detect-latency runs=%d: detect=%.2f migrate_start=%.2f target=%.1f ratio=%.2f"
          % (len(results), det, mig, target, mig / target))


if __name__ == "__main__":
    main()
