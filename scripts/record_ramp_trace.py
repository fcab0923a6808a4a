#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Record a sensor trace as the watch sees it: a ramp through a real ipmi_sim BMC, sampled by pft.

    .venv/bin/python scripts/record_ramp_trace.py NAME --rate 0.3 --from 60 --noise 0.5 --seconds 90 \
        [--trip 95] [--seed 1] [--out tests/unit/plugins/module_utils/fixtures]

One simulated BMC (pft_testbed.bmc, OpenIPMI's ipmi_sim on loopback) has its 'CPU1 Temp' driven by
pft_testbed.ramp in a thread, every 0.25 s, while pft_ipmi.run_health samples it over RMCP+ every
second (the watch's interval) with its history kept. The file written, NAME.json, holds the
samples (seconds from the first, value read by pft), the ramp's own record (its start and trip
on the same clock) and this command, so a test says exactly what it replays. With --trip, the
trip is where the ramp's reading reaches that value (no node is powered off: there is none).
"""
import argparse
import json
import os
import shlex
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "testbed"))
sys.path.insert(0, os.path.join(REPO, "tests"))
import ansible.module_utils  # noqa: E402

ansible.module_utils.__path__.append(os.path.join(REPO, "plugins", "module_utils"))

from ansible.module_utils import pft_ipmi  # noqa: E402
from ansible.module_utils.pft_ipmi_policy import Policy  # noqa: E402

from pft_testbed.bmc import BmcFarm  # noqa: E402
from pft_testbed.ramp import BackgroundRamp, Ramp  # noqa: E402

SENSOR = "CPU1 Temp"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--from", dest="start", type=float, default=60.0)
    ap.add_argument("--to", type=float, default=None)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--trip", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "unit", "plugins", "module_utils", "fixtures"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pft-trace-") as work, \
            BmcFarm(1, workdir=work, network="127.86.0.0/24") as farm:
        bmc = farm.bmcs[0]
        bmc.set_sensor(SENSOR, args.start)
        tripped = []
        ramp = Ramp(lambda v: bmc.set_sensor(SENSOR, max(0.0, min(255.0, v))),
                    (lambda: tripped.append(time.time())) if args.trip is not None else None,
                    rate=args.rate, start=args.start, to=args.to, noise=args.noise, trip=args.trip, seed=args.seed,
                    period=0.25, max_seconds=args.seconds)
        started = time.time()
        bg = BackgroundRamp(ramp).start()
        result = pft_ipmi.run_health([bmc.target()], Policy([{"name": SENSOR, "upper_critical": 250}]),
                                     window=args.seconds, interval=1.0, keep_history=True)
        rec = bg.stop(timeout=30)
    history = result["nodes"][bmc.name]["sensors"][SENSOR]["history"]
    offset = started - rec["started_at"]          # run_health's clock starts with the sampling
    samples = [[round(h["t"], 3), h["value"]] for h in history if h.get("value") is not None]
    trip_t = None if rec["tripped_at"] is None else round(rec["tripped_at"] - started, 3)
    doc = {
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "how": ("one ipmi_sim BMC (pft_testbed.bmc) with its %r driven by pft_testbed.ramp every 0.25 s, sampled "
                "by pft_ipmi.run_health over RMCP+ every 1 s with keep_history; t is seconds from the first "
                "sample, value what pft read" % SENSOR),
        "command": "scripts/record_ramp_trace.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "ramp": {"rate_per_s": args.rate, "from": args.start, "to": args.to, "noise": args.noise, "trip": args.trip,
                 "seed": args.seed, "trip_t": trip_t, "clock_offset_s": round(offset, 3)},
        "samples": samples,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, args.name + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{path}: {len(samples)} samples over {samples[-1][0] if samples else 0} s"
          + (f", trip at {trip_t} s" if trip_t is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
