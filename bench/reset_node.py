#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark (issue 20): bringing a killed compute node back, full boot against Testbed.reset_node.

On a site.yml-provisioned testbed, each run kills one compute node (SIGKILL to its QEMU: what a
dead node looks like) and brings it back two ways, side by side:

  boot   chassis power on through its BMC, then wait until dom0 answers ssh and `xl info` works:
         GRUB, Xen and dom0 under TCG, what a test did before reset_node;
  reset  Testbed.reset_node: the node's kept reset snapshot loaded (its disk and RAM as kept right
         after the converge), its paused guests destroyed, its clock set, its BMC cooled.

Both end at the same check: `xl info` answers and no guest runs there. The peer is the full boot;
the issue's bar is a third of it.

The testbed needs a kept cluster (the e2e session keeps one after a converge, `testbed.keep`); with
--keep the bench keeps one itself first (all nodes paused for the copy; guests run on afterwards).

LAST line: reset-node runs=<n>: boot=<s> reset=<s> ratio=<reset/boot>

Usage: bench/reset_node.py --testbed NAME [--node compute4] [--runs 1] [--keep]
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))

from pft_testbed import kept as keptmod  # noqa: E402
from pft_testbed.testbed import Testbed  # noqa: E402


def xen_ready(tb, node, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        proc = tb.ssh(node, "xl info >/dev/null && xl list | tail -n +2 | awk '$1 != \"Domain-0\"' | wc -l",
                      timeout=60, check=False)
        if proc.returncode == 0:
            return int(proc.stdout.strip() or 0)
        time.sleep(2)
    raise SystemExit(f"{node}: xl info did not answer within {timeout} s")


def full_boot(tb, node):
    tb.kill(node)
    started = time.monotonic()
    tb.start_node(node)
    tb.wait_ssh([node], timeout=900)
    guests = xen_ready(tb, node, 900)
    return time.monotonic() - started, guests


def reset(tb, node):
    tb.kill(node)
    started = time.monotonic()
    tb.reset_node(node)
    guests = xen_ready(tb, node, 300)
    return time.monotonic() - started, guests


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testbed", required=True)
    ap.add_argument("--node", default=None, help="compute node to kill (default: the last one, a spare)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the cluster first if it has no kept one")
    args = ap.parse_args(argv)
    tb = Testbed(args.testbed, progress=lambda m: print(f"  [{m}]", flush=True))
    node = args.node or [n.name for n in tb.nodes if n.role == "compute"][-1]
    if not tb.state.get("kept"):
        if not args.keep:
            raise SystemExit(f"testbed {tb.name} has no kept cluster: run with --keep (or an e2e session)")
        tb.keep(keptmod.KeptCluster("bench" + os.urandom(4).hex(), tb.cache_dir))
    rows = []
    for i in range(args.runs):
        b, gb = full_boot(tb, node)
        r, gr = reset(tb, node)
        rows.append((i + 1, b, gb, r, gr))
    print(f"\n{'run':>3}  {'full boot (s)':>13}  {'guests after':>12}  {'reset (s)':>9}  {'guests after':>12}")
    for i, b, gb, r, gr in rows:
        print(f"{i:>3}  {b:>13.1f}  {gb:>12}  {r:>9.1f}  {gr:>12}")
    boot = statistics.median(r[1] for r in rows)
    res = statistics.median(r[3] for r in rows)
    print(f"\nLAST reset-node runs={len(rows)}: boot={boot:.1f} reset={res:.1f} ratio={res / boot:.2f}")


if __name__ == "__main__":
    main()
