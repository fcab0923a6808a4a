#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Probe the recovery line protocol by hand, on the site-provisioned testbed (docs/recovery.md).

While the MPI job (pft-mpi-job) runs across the site's guests, this script takes one line of them
the way the line playbook is to take it. It saves every guest with ``xl save -p``, all at once: each
PV guest suspends itself, and stays paused after its image is written. Then it unpauses them all at
once. It prints seed 003's delays (pft_recovery_line.line_timings, on the controller's clock) and
whether each guest stayed paused through its save. It then waits for the job and prints its result,
which must be ``result=correct``. Nothing is restored: this checks the suspend and the save, not the
rollback. ``--pause-first`` runs ``xl pause`` on every guest before the saves instead, which fails: a
paused PV guest cannot answer its suspend request (docs/recovery.md has both measured).

    scripts/probe_recovery_line.py [--testbed e2e] [--steps 60] [--dir /var/lib/pft/lines/probe] [--pause-first]

It needs a testbed that site.yml provisioned (for example one kept up by
``PFT_E2E_SITE=1 PFT_E2E_KEEP=1 pytest -m e2e tests/e2e/test_site.py``). It writes one image per
guest into ``--dir`` on the guest's node, and removes it at the end.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for sub in ("bench", "tests", os.path.join("tests", "e2e"), "testbed", "scripts"):
    sys.path.insert(0, os.path.join(REPO, sub))


def on_all(nodes_guests, step):
    """Run step(node, guest) for every guest at once; returns {guest: result}."""
    out, threads = {}, []
    for node, guest in nodes_guests:
        def run(node=node, guest=guest):
            out[guest] = step(node, guest)
        threads.append(threading.Thread(target=run))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbed", default="e2e")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--dir", default="/var/lib/pft/lines/probe")
    ap.add_argument("--pause-first", action="store_true",
                    help="xl pause every guest before the saves (a paused PV guest cannot answer its suspend "
                         "request: xl save then fails after libxl's timeout; kept to show it)")
    args = ap.parse_args()

    import ansible.module_utils
    ansible.module_utils.__path__.append(os.path.join(REPO, "plugins", "module_utils"))
    from ansible.module_utils import pft_recovery_line
    from ramp_race import cluster_from_testbed
    from test_watch import GUESTS, guest_ssh, mpi_job_output, placement, start_mpi_job
    cluster = cluster_from_testbed(args.testbed)
    tb = cluster.testbed
    where = placement(cluster)
    for g in GUESTS:
        if len(where.get(g, [])) != 1:
            sys.exit("guest %s must run exactly once, it runs on %s" % (g, where.get(g)))
    pairs = [(where[g][0], g) for g in GUESTS]
    ips = {g["name"]: g["ip"] for g in cluster.guests}
    key = os.path.join(tempfile.mkdtemp(prefix="pft-line-probe-"), "guest_key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(tb.ssh("head", "cat /srv/pft/guest-root/root/.ssh/id_ed25519").stdout)
    g1 = ips[GUESTS[0]]
    start_mpi_job(key, g1, steps=args.steps)
    time.sleep(15)                                   # the ranks are exchanging by now
    for node, _ in pairs:
        tb.ssh(node, "mkdir -p %s" % args.dir)

    times = {g: {} for g in GUESTS}

    def pause(node, guest):
        times[guest]["pause_requested"] = time.time()
        r = tb.ssh(node, "xl pause %s" % guest, timeout=120, check=False)
        times[guest]["paused"] = time.time()
        return r.returncode, r.stderr.strip()

    def save(node, guest):
        times[guest]["save_started"] = time.time()
        image = "%s/%s.save" % (args.dir, guest)
        r = tb.ssh(node, "xl save -p %s %s && xl list %s | tail -1 && stat -c %%s %s"
                   % (guest, image, guest, image), timeout=600, check=False)
        times[guest]["saved"] = time.time()
        return r.returncode, r.stdout.strip(), r.stderr.strip()[-400:]

    def resume(node, guest):
        r = tb.ssh(node, "xl unpause %s" % guest, timeout=120, check=False)
        times[guest]["resumed"] = time.time()
        return r.returncode, r.stderr.strip()

    report = {"pause": on_all(pairs, pause)} if args.pause_first else {}
    if not args.pause_first:        # the pause is the guest's own suspend, inside xl save -p
        for g in GUESTS:
            times[g]["pause_requested"] = time.time()
    report["save"] = on_all(pairs, save)
    if not args.pause_first:
        for g in GUESTS:
            times[g]["paused"] = times[g]["saved"]       # known only as: suspended by the end of its save
    report["resume"] = on_all(pairs, resume)
    report["timings"] = pft_recovery_line.line_timings(times)
    report["placement_after"] = placement(cluster)
    out = mpi_job_output(key, g1)
    report["job"] = [line for line in out.splitlines() if "result=" in line or "done" in line][-3:]
    for node, guest in pairs:
        tb.ssh(node, "rm -f %s/%s.save" % (args.dir, guest), check=False)
    print(json.dumps(report, indent=1))
    answered = all(guest_ssh(key, ips[g], "true", timeout=30).returncode == 0 for g in GUESTS)
    print("guests answer after the line:", answered)
    return 0 if "result=correct" in out and answered else 1


if __name__ == "__main__":
    sys.exit(main())
