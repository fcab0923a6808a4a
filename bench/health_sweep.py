#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""P1: one full sensor sweep of N BMCs, pft against FreeIPMI and ipmitool.

Starts N real OpenIPMI ipmi_sim BMCs on loopback (pft_testbed.bmc), then
times one sweep of every sensor of every BMC with

  (a) pft (module_utils/pft_ipmi.run_health): warm = sessions open from an
      earlier sample, cold = a fresh run that logs in and reads the SDRs;
  (b) FreeIPMI ipmi-sensors, fanned out over all hosts (-F N), with a warm
      SDR cache (one untimed run fills it first);
  (c) ipmitool "sdr list", one host after the other.

Each is run several times; the table shows medians. No password is put on a
command line: ipmi-sensors reads it from a 0600 config file and ipmitool from
IPMI_PASSWORD (-E).

The LAST line is a contract read by other tools:

  health-sweep N=<n>: pft=<s> ipmi-sensors=<s> ipmitool=<s> speedup_vs_ipmi_sensors=<x> speedup_vs_ipmitool=<x>

pft= is the warm sweep (what the watch does every second); cold is in the table.
"""
import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "testbed"))

import ansible.module_utils  # noqa: E402

ansible.module_utils.__path__.append(os.path.join(REPO, "plugins", "module_utils"))

from ansible.module_utils import pft_ipmi  # noqa: E402
from ansible.module_utils.pft_ipmi_policy import Policy  # noqa: E402

from pft_testbed.bmc import BmcFarm  # noqa: E402

PASSWORD = "bench-sweep-pw"


COLD_SCRIPT = """
import json, sys
sys.path.insert(0, %(testbed)r)
import ansible.module_utils
ansible.module_utils.__path__.append(%(module_utils)r)
from ansible.module_utils import pft_ipmi
from ansible.module_utils.pft_ipmi_policy import Policy
targets = json.load(sys.stdin)
res = pft_ipmi.run_health(targets, Policy(use_bmc_thresholds=True), samples=1, timeout=60)
print(json.dumps({"elapsed": res["elapsed"], "ok": len(res["summary"]["ok"])}))
""" % {"testbed": os.path.join(REPO, "testbed"), "module_utils": os.path.join(REPO, "plugins", "module_utils")}


def pft_sweeps(farm, runs):
    """(warm sweep times, cold sweep times) of pft.

    Cold runs are fresh processes, as the cron-driven watch is: login, sensor
    repository and one reading of every BMC (credentials go in on stdin).
    Warm sweeps are the later samples of one run, sessions open.
    """
    import json
    targets = farm.targets()
    cold = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], input=json.dumps(targets),
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit("pft cold run failed: %s" % out.stderr.strip()[-800:])
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if res["ok"] != len(targets):
            raise SystemExit("pft cold: only %d of %d BMCs answered" % (res["ok"], len(targets)))
        cold.append(res["elapsed"])
    marks = []
    res = pft_ipmi.run_health(targets, Policy(use_bmc_thresholds=True), samples=runs + 1,
                              interval=0, timeout=300, after_sample=lambda n: marks.append(time.monotonic()))
    _check(res, len(targets), "pft warm")
    warm = [b - a for a, b in itertools.pairwise(marks)]
    return warm, cold


def _check(res, n, what):
    ok = len(res["summary"]["ok"])
    if ok != n:
        raise SystemExit("%s: only %d of %d BMCs answered: %s" % (what, ok, n, res["summary"]))


def ipmi_sensors_sweeps(farm, runs, workdir):
    conf = os.path.join(workdir, "freeipmi.conf")
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("username admin\npassword %s\n" % PASSWORD)
    cache = os.path.join(workdir, "sdr-cache")
    os.makedirs(cache, exist_ok=True)
    hosts = ",".join("%s:%d" % (b.address, b.port) for b in farm.bmcs)
    argv = ["ipmi-sensors", "--config-file", conf, "-D", "LAN_2_0", "-I", "3", "-l", "ADMIN",
            "-W", "opensesspriv", "-h", hosts, "-F", str(min(len(farm.bmcs), 1024)),
            "--sdr-cache-directory", cache, "--quiet-cache"]
    _run(argv, len(farm.bmcs), "ipmi-sensors (filling the SDR cache)")
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        _run(argv, len(farm.bmcs), "ipmi-sensors")
        times.append(time.monotonic() - t0)
    return times


def _run(argv, n, what, env=None):
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (what, out.returncode, out.stderr.strip()[-500:]))
    return out


def ipmitool_sweeps(farm, runs):
    env = dict(os.environ, IPMI_PASSWORD=PASSWORD)
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        for b in farm.bmcs:
            _run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", b.address, "-p", str(b.port),
                  "-U", "admin", "-E", "sdr", "list"], 1, "ipmitool", env=env)
        times.append(time.monotonic() - t0)
    return times


def measure(n, runs, ipmitool_runs, network, skip_peers=False):
    workdir = tempfile.mkdtemp(prefix="pft-bench-")
    try:
        t0 = time.monotonic()
        with BmcFarm(n, workdir=workdir, network=network, password=PASSWORD) as farm:
            started = time.monotonic() - t0
            warm, cold = pft_sweeps(farm, runs)
            row = {"n": n, "start": started, "pft_warm": statistics.median(warm),
                   "pft_cold": statistics.median(cold)}
            if not skip_peers:
                row["ipmi_sensors"] = statistics.median(ipmi_sensors_sweeps(farm, runs, workdir))
                row["ipmitool"] = statistics.median(ipmitool_sweeps(farm, ipmitool_runs))
            return row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def in_process(n, args, skip_peers=False):
    """measure() in a fresh process, so no pyghmi state carries over between sizes."""
    import json
    argv = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--runs", str(args.runs),
            "--ipmitool-runs", str(args.ipmitool_runs), "--network", args.network]
    if skip_peers:
        argv.append("--skip-peers")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit("benchmark of N=%d failed: %s%s" % (n, out.stdout[-500:], out.stderr[-1500:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bmcs", type=int, default=128, help="number of simulated BMCs (default 128)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per tool (default 5)")
    ap.add_argument("--ipmitool-runs", type=int, default=2, help="timed ipmitool runs (slow; default 2)")
    ap.add_argument("--scaling", default="", help="also time pft alone at these sizes, e.g. 32,128,512")
    ap.add_argument("--network", default="127.90.0.0/16", help="loopback range for the BMCs")
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--skip-peers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for tool in ("ipmi_sim", "ipmi-sensors", "ipmitool"):
        if shutil.which(tool) is None:
            raise SystemExit("%s not found: run make setup" % tool)

    if args.worker:
        import json
        print(json.dumps(measure(args.worker, args.runs, args.ipmitool_runs, args.network,
                                 skip_peers=args.skip_peers)))
        return

    if args.scaling:
        print("pft sweep scaling (median of %d; each size in a fresh process):" % args.runs)
        print("%6s %10s %10s %12s" % ("N", "warm s", "cold s", "ms per BMC"))
        for n in [int(x) for x in args.scaling.split(",") if x]:
            r = in_process(n, args, skip_peers=True)
            print("%6d %10.3f %10.3f %12.3f" % (n, r["pft_warm"], r["pft_cold"], 1000 * r["pft_warm"] / n),
                  flush=True)
        print()

    r = in_process(args.bmcs, args)
    load = os.getloadavg()[0]
    print("health sweep of %d ipmi_sim BMCs, 5 sensors each (medians; %d runs, ipmitool %d; load %.1f):"
          % (r["n"], args.runs, args.ipmitool_runs, load))
    print("  %-44s %8.3f s" % ("start the BMCs", r["start"]))
    print("  %-44s %8.3f s" % ("pft, sessions warm", r["pft_warm"]))
    print("  %-44s %8.3f s" % ("pft, cold (login + SDR + read)", r["pft_cold"]))
    print("  %-44s %8.3f s" % ("ipmi-sensors -F %d, warm SDR cache" % min(r["n"], 1024), r["ipmi_sensors"]))
    print("  %-44s %8.3f s" % ("ipmitool sdr list, host by host", r["ipmitool"]))
    print("health-sweep N=%d: pft=%.3f ipmi-sensors=%.3f ipmitool=%.3f speedup_vs_ipmi_sensors=%.2f "
          "speedup_vs_ipmitool=%.1f" % (r["n"], r["pft_warm"], r["ipmi_sensors"], r["ipmitool"],
                                        r["ipmi_sensors"] / r["pft_warm"], r["ipmitool"] / r["pft_warm"]))


if __name__ == "__main__":
    main()
