#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Migration downtime on the Xen testbed: the ping-pong formula of seed 002 section 4.3, plus the
guest's own heartbeat gap, against xen_migrate's own estimate.

    PFT_XEN_TESTBED=xen bench/downtime.py [--memory 128] [--dirty-mb 0] [--runs 1] [--mode live]

Needs a running testbed whose compute nodes run Xen (see tests/e2e/xen_helpers.py; same
PFT_XEN_* variables). One run = guest A -> B -> A, each migration by the xen_migrate module on
the sending dom0. Each dom0 keeps its own clock:

* s1A: A's clock when A saw "Domain now suspended" (stop-and-copy of migration 1 begins);
* f1B: B's clock when B's dom0 first lists the guest under its own name and not paused
  (a watcher polling `xl list` on B, about 0.2 s resolution under TCG);
* s2B, f2A: the same for migration 2, B -> A.

    downtime = ((f2A - s1A) - (s2B - f1B)) / 2

The clocks of A and B never meet in one difference, so their offset cancels. Also printed: each
migration's downtime_log_s (suspend to the target's "Domain started" line, seen on the source),
the longest silence of the guest's heartbeat polled from the controller every 0.2 s, and the
guest's own largest gap between two heartbeat ticks (its uptime clock).

Last line: `downtime M=<MiB>: pingpong=<s> log=<s> heartbeat_gap=<s> guest_gap=<s> ratio_log/pingpong=<x>`
"""
import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "testbed"))

WATCHER = r"""
import subprocess, sys, time
guest, deadline = sys.argv[1], time.time() + float(sys.argv[2])
seen_away = False
while time.time() < deadline:
    t = time.time()
    out = subprocess.run(["xl", "list", guest], capture_output=True, text=True).stdout.split("\n")
    row = out[1].split() if len(out) > 1 and out[1].strip() else []
    if row and row[0] == guest and "p" not in row[4][2:3]:
        if seen_away:
            print("%.3f" % t, flush=True)
            break
    else:
        seen_away = True
    time.sleep(0.05)
"""


def cluster_from_env():
    import tempfile

    from xen_helpers import XenCluster, build_shim

    from pft_testbed.testbed import Testbed
    name = os.environ.get("PFT_XEN_TESTBED", "xen")
    tb = Testbed(name)
    if not tb.exists():
        sys.exit("testbed %s is not running (PFT_XEN_TESTBED)" % name)
    computes = [n.name for n in tb.nodes if n.role == "compute"]
    tmp = tempfile.mkdtemp(prefix="pft-bench-")
    inv = os.environ.get("PFT_XEN_INVENTORY") or tb.write_inventory(os.path.join(tmp, "inventory"))
    if os.path.isdir(inv):
        inv = os.path.join(inv, "hosts.yml")
    return XenCluster(tb, inv, os.environ.get("PFT_XEN_SOURCE", computes[0]),
                      os.environ.get("PFT_XEN_TARGET", computes[-1]), build_shim(tmp))


def watch(cluster, node, guest, seconds):
    """Start a watcher on node; returns the Popen (stdout: B's clock when the guest runs there).

    The script travels base64-encoded: through ssh's remote shell, a script in argv loses its
    newlines."""
    code = base64.b64encode(WATCHER.encode()).decode()
    argv = cluster.tb.ssh_argv(node, "python3 -c \"import base64; exec(base64.b64decode('%s'))\" %s %d"
                               % (code, guest, seconds))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def watched(proc, what, timeout=120):
    """The clock the watcher printed; says what the watcher said when it printed none."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit("%s: the xl list watcher printed nothing within %d s after the migration"
                         % (what, timeout)) from None
    try:
        return float(out.strip())
    except ValueError:
        raise SystemExit("%s: the xl list watcher printed %r (rc %s): %s"
                         % (what, out, proc.returncode, err.strip()[-500:])) from None


def migrate(cluster, src, dst, guest, mode):
    ok, res = cluster.module(src, "xen_migrate", dict(guest=guest, target=dst, mode=mode,
                                                      on_no_convergence="continue"))
    if not ok:
        raise SystemExit("migration %s -> %s failed: %s" % (src, dst, res.get("msg")))
    return res


def one_run(cluster, guest, ip, mode):
    from xen_helpers import Poller
    a, b = cluster.source, cluster.target
    with Poller(ip) as poll:
        w1 = watch(cluster, b, guest, 900)
        r1 = migrate(cluster, a, b, guest, mode)
        f1b = watched(w1, "migration 1 (%s -> %s)" % (a, b))
        w2 = watch(cluster, a, guest, 900)
        r2 = migrate(cluster, b, a, guest, mode)
        f2a = watched(w2, "migration 2 (%s -> %s)" % (b, a))
    s1a = r1["stats"]["wall_t0"] + r1["stats"]["markers_s"]["suspended"]
    s2b = r2["stats"]["wall_t0"] + r2["stats"]["markers_s"]["suspended"]
    hb = cluster.heartbeat(ip)
    return dict(pingpong=((f2a - s1a) - (s2b - f1b)) / 2,
                log=statistics.mean([r1["stats"]["downtime_log_s"], r2["stats"]["downtime_log_s"]]),
                heartbeat_gap=poll.longest_silence() / 1.0,
                guest_gap=hb["max_gap"] if hb else None,
                rounds=[[it["pages"] for it in r["stats"]["iterations"]] + [r["stats"]["final_round_pages"]]
                        for r in (r1, r2)],
                total_s=[r1["stats"]["total_s"], r2["stats"]["total_s"]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory", type=int, default=128)
    ap.add_argument("--dirty-mb", type=int, default=0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--mode", default="live", choices=["live", "stop-and-copy"])
    args = ap.parse_args()
    cluster = cluster_from_env()
    guest = "pftbench"
    runs = []
    try:
        for i in range(args.runs):
            ip = cluster.start_guest(guest, 60, memory=args.memory, dirty_mb=args.dirty_mb)
            time.sleep(5)
            r = one_run(cluster, guest, ip, args.mode)
            print("run %d: %s" % (i + 1, json.dumps(r)), flush=True)
            runs.append(r)
    finally:
        cluster.destroy_everywhere(guest)
    med = {k: statistics.median([r[k] for r in runs if r[k] is not None] or [float("nan")])
           for k in ("pingpong", "log", "heartbeat_gap", "guest_gap")}
    ratio = med["log"] / med["pingpong"] if med["pingpong"] else float("nan")
    print("downtime M=%d: pingpong=%.2f log=%.2f heartbeat_gap=%.2f guest_gap=%.2f ratio_log/pingpong=%.2f"
          % (args.memory, med["pingpong"], med["log"], med["heartbeat_gap"], med["guest_gap"], ratio))


if __name__ == "__main__":
    main()
