#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pre-staging benchmark on the Xen testbed (issue 6, P3): plain live migration against
pre-staged migration (balloon the guest down to its measured working set first).

    bench/prestage.py [--memory 128] [--runs 3]

Needs a running testbed whose compute nodes run Xen (tests/e2e/xen_helpers.py; PFT_XEN_TESTBED,
default "xen"). The guest has M MiB (maxmem = memory) and touches about a quarter of it (a tmpfs
file of M/4 MiB written once at boot). Each run:

* plain: xen_migrate source -> target (live), then back, timing the first;
* prestaged: xen_prestage balloon=true with the working set measured inside the guest
  (MemTotal - MemAvailable from its /proc/meminfo, plus 16 MiB), xen_migrate source -> target,
  then balloon back up to M on the target and migrate back.

Times are xen_migrate's stats.total_s (the migration on the critical path; the balloon happens
earlier, at a warning verdict, and is reported separately); MiB sent is stats.mib_sent (bytes read
by the ssh transport). Medians over --runs. The named peer is Xen's own plain `xl migrate`.

Last line: `prestage M=<MiB>: plain=<s>/<MiB sent> prestaged=<s>/<MiB sent> speedup=<x> bytes_ratio=<x>`
with speedup = plain time / prestaged time and bytes_ratio = prestaged MiB sent / touched MiB, where
touched is the guest's measured working set in Xen's terms: its memory as `xl list` shows it less the
MemAvailable it reports (its M/4 of data plus its kernel, initramfs and the memory the kernel reserved
at boot, all of which it touched too). The balloon leaves --headroom-mb above it.
"""
import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from downtime import cluster_from_env  # noqa: E402


def meminfo(ip):
    with urllib.request.urlopen("http://%s/meminfo" % ip, timeout=5) as r:
        return dict((ln.split(":")[0], int(ln.split()[1])) for ln in r.read().decode().splitlines() if ":" in ln)


def working_set_mb(cluster, node, guest, ip):
    """The guest's working set in Xen's terms: its memory as `xl list` shows it, less what the guest
    reports available. (MemTotal - MemAvailable leaves out what the guest kernel reserved at boot, the
    gap between xl's memory and MemTotal; a balloon down to it starved the test guest.)
    Returns (working set, MemTotal - MemAvailable), MiB."""
    info = meminfo(ip)
    xl_mb = cluster.xl_list(node)[guest]["memory_mb"]
    return xl_mb - info["MemAvailable"] // 1024, (info["MemTotal"] - info["MemAvailable"]) // 1024


def migrate(cluster, src, dst, guest):
    ok, res = cluster.module(src, "xen_migrate", dict(guest=guest, target=dst, on_no_convergence="continue"))
    if not ok:
        raise SystemExit("migration %s -> %s failed: %s" % (src, dst, res.get("msg")))
    st = res["stats"]
    return dict(total_s=st["total_s"], mib_sent=st["mib_sent"],
                rounds=[it["pages"] for it in st["iterations"]], final=st["final_round_pages"],
                downtime_s=st["downtime_estimate_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--headroom-mb", type=int, default=8,
                    help="MiB above the measured working set that the balloon leaves the guest (default 8)")
    ap.add_argument("--balloon-timeout", type=float, default=600,
                    help="seconds the balloon may take (xen_prestage balloon_timeout; it runs at the warning "
                         "verdict, off the migration's critical path)")
    args = ap.parse_args()
    m = args.memory
    touched = m // 4
    cluster = cluster_from_env()
    a, b = cluster.source, cluster.target
    guest = "pftprestage"
    plain, staged = [], []
    try:
        # the guest writes its quarter once (then every 10 min), so migrations converge
        ip = cluster.start_guest(guest, 61, memory=m, dirty_mb=touched, dirty_every=600)
        for i in range(args.runs):
            p = migrate(cluster, a, b, guest)
            print("run %d plain: %s" % (i + 1, json.dumps(p)), flush=True)
            plain.append(p)
            migrate(cluster, b, a, guest)
            used, guest_used = working_set_mb(cluster, a, guest, ip)
            ws = used + args.headroom_mb
            t = time.monotonic()
            ok, res = cluster.module(a, "xen_prestage", dict(guest=guest, target=b, balloon=True,
                                                            working_set_mb=ws, balloon_floor_mb=32,
                                                            balloon_timeout=args.balloon_timeout))
            balloon_s = time.monotonic() - t
            if not ok or not res["balloon"]["ok"]:
                raise SystemExit("balloon failed: %s" % res.get("msg", res.get("balloon")))
            s = migrate(cluster, a, b, guest)
            s.update(used_mb=used, guest_used_mb=guest_used, working_set_mb=ws, balloon_s=round(balloon_s, 1),
                     ballooned_to_mb=res["balloon"]["reached_mb"])
            print("run %d prestaged: %s" % (i + 1, json.dumps(s)), flush=True)
            staged.append(s)
            ok, res = cluster.module(b, "xen_prestage", dict(guest=guest, memory_mb=m))
            if not ok:
                raise SystemExit("balloon back up failed: %s" % res.get("msg"))
            migrate(cluster, b, a, guest)
    finally:
        cluster.destroy_everywhere(guest)
    pt = statistics.median(r["total_s"] for r in plain)
    pm = statistics.median(r["mib_sent"] for r in plain)
    st = statistics.median(r["total_s"] for r in staged)
    sm = statistics.median(r["mib_sent"] for r in staged)
    used = statistics.median(r["used_mb"] for r in staged)
    print("touched: the guest's own data %d MiB; its measured working set (xl memory - MemAvailable: kernel, "
          "initramfs and boot reservations included) %d MiB" % (touched, used))
    print("prestage M=%d: plain=%.1f/%.1f prestaged=%.1f/%.1f speedup=%.2f bytes_ratio=%.2f"
          % (m, pt, pm, st, sm, pt / st, sm / used))


if __name__ == "__main__":
    main()
