#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark (issue 21): the race between a real thermal trip and the evacuation, threshold
against predictive, counted as guests saved.

On a site.yml-provisioned testbed (guest1 and guest2 running, at least one free compute node),
each run ramps CPU1 Temp of the node that runs guest1, through its BMC, from a normal reading up
to the sensor's own upper non-recoverable threshold (95 degC), where the testbed powers the node
off hard (`testbed.kill`, as THERMTRIP would). Meanwhile watch.yml runs back to back, as cron
runs it every minute (each run's sampling window is most of a minute), under one of two policies:

  threshold   prediction off: evacuate once the reading is past the critical line (85 degC);
  predictive  prediction on (pft_watch_predict=true and the role's defaults).

The watch is sampling before the ramp begins (--lead-in seconds, the reading steady at the ramp's
start), as it would be on a cluster. A run counts as **saved** only if the guest ran on another node before the trip
(its migration ended first) and still answers ssh after it. Otherwise **lost**, with the lead time
it had. Then the tripped node comes back (`testbed.reset_node`, its kept snapshot) and a lost guest
is started again on it, so that every run begins with the same cluster.

Then, under the predictive policy only, traces that must not evacuate anything (any evacuation
there is counted false): a noisy but stable reading (70 +- 2 degC for --stable-seconds), a single
spike (90 degC for half a second, one sample, among 70s), and a slow ramp that levels off below the critical line
(0.05 degC/s from 70 to 82, then held).

Rates: chosen from the evacuation measured here (decision to guest running on the target, about
40-60 s under TCG): a slow ramp both policies win, ramps whose time past the critical line is
shorter than a move (only prediction can win), and one too fast for any move (both must still act,
and report the guest lost with the lead it had).

Prints a table (rate, policy, crossing or prediction time, migration start and end, trip, saved or
lost, margin) and the LAST line:

  ramp-race runs=<n>: saved_threshold=<a>/<n> saved_predictive=<b>/<n> false_evacuations=<f> median_margin_s=<m>

where n is the number of ramps (each run under both policies) and the margin is trip time minus
migration end, over the saved runs.

Usage: bench/ramp_race.py --testbed e2e [--rates 0.1@75,0.3@60,0.6@60,2@60] [--stable-seconds 600]
       [--lead-in 20] [--only-ramps | --only-false]
The testbed must have been provisioned by site.yml (a `PFT_E2E_KEEP=1` e2e session leaves one).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for sub in ("tests", os.path.join("tests", "e2e"), "testbed", "scripts"):
    sys.path.insert(0, os.path.join(REPO, sub))

WATCH = os.path.join(REPO, "playbooks", "watch.yml")
SENSOR = "CPU1 Temp"
CRITICAL = 85.0
GUEST = "guest1"


def cluster_from_testbed(name):
    from conftest import SITE_VARS, SiteCluster

    from pft_testbed.testbed import Testbed
    tb = Testbed(name)
    if not tb.exists():
        sys.exit(f"testbed {name} is not running: bring one up provisioned by site.yml "
                 "(PFT_E2E_SITE=1 PFT_E2E_KEEP=1 pytest tests/e2e/test_site.py)")
    tmp = tempfile.mkdtemp(prefix="pft-ramp-race-")
    hosts = tb.write_inventory(os.path.join(tmp, "inventory"))
    cluster = SiteCluster(tb, hosts, SITE_VARS, tmp)
    cluster.guests = cluster.read_guests()
    return cluster


class Cron:
    """watch.yml back to back in a thread (cron every minute, each run sampling most of it), until
    stopped; every run's PlaybookRun is kept."""

    def __init__(self, cluster, state_dir, syslog, predictive, window):
        self.cluster, self.state_dir, self.syslog = cluster, state_dir, syslog
        self.extra = ["-e", f"pft_state_dir={state_dir}", "-e", f"pft_alert_syslog_socket={syslog}",
                      "-e", f"pft_watch_window={window}", "-e", f"pft_watch_predict={str(predictive).lower()}"]
        self.runs = []
        self.started = []             # wall clock start of each run
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        i = 0
        while not self._stop.is_set():
            i += 1
            name = f"watch-{os.path.basename(self.state_dir)}-{i}"
            self.started.append(time.time())
            self.runs.append(self.cluster.playbook(WATCH, *self.extra, name=name, timeout=900))

    def start(self):
        self.thread.start()
        return self

    def stop(self, after=None):
        """Let the run in progress finish (a migration is never cut), start no other. With ``after``
        (a wall clock time: the trip), first wait for a run that started after it to end, as the
        next cron run would: pft acts on a node that died between two runs, and records it."""
        if after is not None:
            while self.thread.is_alive() and not any(t > after for t in self.started[:len(self.runs)]):
                time.sleep(1)
        self._stop.set()
        self.thread.join()


def audit(state_dir):
    path = os.path.join(state_dir, "audit.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def epoch(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def restore(cluster, hot, tripped, lost, key):
    """Every run starts from the same cluster: the tripped node back, a lost guest running again."""
    from test_watch import _published, guest_ssh
    if tripped:
        cluster.testbed.reset_node(hot)
        _published.pop(hot, None)
    if lost:
        cluster.testbed.ssh(hot, f"xl create /etc/xen/pft/{GUEST}.cfg", timeout=300)
        ip = cluster.guest(GUEST)["ip"]
        deadline = time.monotonic() + 600
        while guest_ssh(key, ip, "true", timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit(f"{GUEST} did not come back on {hot} within 600 s")
            time.sleep(3)


def race(cluster, workdir, key, rate, start, policy, lead_in, window, noise=0.3, seed=21):
    """One ramp under one policy. Returns the table row."""
    from pft_syslog import SyslogSink
    from test_watch import guest_ssh, placement, settle

    from pft_testbed.ramp import BackgroundRamp, node_ramp
    lay = settle(cluster)
    hot = lay.node[GUEST]
    state = os.path.join(workdir, f"{policy}-{rate:g}")
    os.makedirs(state)
    sink = SyslogSink(os.path.join(state, "syslog.sock"))
    # the reading sits at the ramp's start through the lead-in: a ramp grows out of a steady
    # reading, not out of a step from the sensor's nominal value (which reads as a runaway)
    cluster.testbed.bmc(hot).set_sensor(SENSOR, start)
    cron = Cron(cluster, state, sink.path, policy == "predictive", window).start()
    try:
        time.sleep(lead_in)
        ramp = BackgroundRamp(node_ramp(cluster.testbed, hot, SENSOR, rate, start=start, noise=noise, trip="unr",
                                        seed=seed, max_seconds=1800)).start()
        trip = ramp.join(timeout=1900)
        cron.stop(after=trip["tripped_at"])
    finally:
        cron.stop()
        alerts = sink.drain()
        sink.close()
    began, tripped = trip["started_at"], trip["tripped_at"]
    recs = [r for r in audit(state) if r.get("guest") == GUEST]
    moved = next((r for r in recs if r.get("outcome") == "migrated"), None)
    lost = next((r for r in recs if r.get("outcome") == "lost"), None)      # its source died under it
    evacuations = [r for r in recs if r.get("action") == "evacuate"]
    rec = moved or lost or (evacuations[0] if evacuations else None)
    crossed = next((t for t, v in trip["readings"] if v >= CRITICAL), None)
    decided = epoch(rec.get("started_at")) if rec else None
    mig = (rec or {}).get("migration") or {}
    ended = epoch(rec.get("finished_at")) if moved else None
    where = placement(cluster).get(GUEST, [])
    answers = bool(where) and guest_ssh(key, cluster.guest(GUEST)["ip"], "true", timeout=30).returncode == 0
    saved = bool(moved and tripped and ended is not None and ended < tripped and where == [moved["target"]]
                 and answers)
    row = {"rate": rate, "start": start, "policy": policy,
           "available_s": round(tripped - began, 1) if tripped else None,
           "crossed_s": round(crossed - began, 1) if crossed else None,
           "decided_s": round(decided - began, 1) if decided else None,
           "reason": (rec or {}).get("reason", "-"),
           "migration_s": mig.get("total_s"), "ended_s": round(ended - began, 1) if ended else None,
           "outcome": "saved" if saved else "lost", "recorded": (rec or {}).get("outcome", "none"),
           "margin_s": round(tripped - ended, 1) if (saved and ended) else None,
           "lead_at_decision_s": round(tripped - decided, 1) if (decided and tripped) else None,
           "watch_runs": len(cron.runs), "watch_rc": [r.rc for r in cron.runs],
           "alerted_lost": any(f"{GUEST} LOST" in a for a in alerts)}
    restore(cluster, hot, bool(tripped), not saved and not where, key)
    return row


def no_failure_trace(cluster, workdir, name, values, seconds, window):
    """A trace that must not evacuate (predictive policy). values(t) -> reading. Returns evacuations."""
    from pft_syslog import SyslogSink
    from test_watch import settle
    lay = settle(cluster)
    node = lay.node[GUEST]
    bmc = cluster.testbed.bmc(node)
    state = os.path.join(workdir, f"false-{name}")
    os.makedirs(state)
    sink = SyslogSink(os.path.join(state, "syslog.sock"))
    bmc.set_sensor(SENSOR, values(0.0))
    cron = Cron(cluster, state, sink.path, True, window).start()
    began = time.time()
    try:
        while time.time() - began < seconds:
            try:
                bmc.set_sensor(SENSOR, values(time.time() - began))
            except Exception:          # noqa: BLE001 (a missed step, as the ramps skip them)
                pass
            time.sleep(0.25)
    finally:
        cron.stop()
        sink.close()
        cluster.testbed.cool(node)
    evac = [r for r in audit(state) if r.get("action", "evacuate") == "evacuate" and r.get("outcome") in
            ("migrated", "lost", "failed")]
    return {"trace": name, "seconds": seconds, "evacuations": len(evac), "watch_runs": len(cron.runs),
            "watch_rc": [r.rc for r in cron.runs]}


def parse_rates(text):
    out = []
    for part in text.split(","):
        rate, _, start = part.partition("@")
        out.append((float(rate), float(start or 60)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testbed", default=os.environ.get("PFT_E2E_TESTBED", "e2e"))
    ap.add_argument("--rates", default="0.1@75,0.3@60,0.6@60,2@60",
                    help="RATE@START,... degC/s from START (default: %(default)s)")
    ap.add_argument("--lead-in", type=float, default=20.0, help="seconds the watch samples before a ramp begins")
    ap.add_argument("--window", type=float, default=55.0, help="each watch run's sampling window")
    ap.add_argument("--stable-seconds", type=float, default=600.0)
    ap.add_argument("--only-ramps", action="store_true")
    ap.add_argument("--only-false", action="store_true")
    ap.add_argument("--json", help="write every row here too")
    args = ap.parse_args()
    cluster = cluster_from_testbed(args.testbed)
    from test_watch import guest_key
    workdir = tempfile.mkdtemp(prefix="ramp-race-", dir=cluster.logdir)
    key = guest_key(cluster, pathlib.Path(workdir))
    rows, falses = [], []
    if not args.only_false:
        for rate, start in parse_rates(args.rates):
            for policy in ("threshold", "predictive"):
                row = race(cluster, workdir, key, rate, start, policy, args.lead_in, args.window)
                rows.append(row)
                print("run: " + json.dumps(row), flush=True)
    if not args.only_ramps:
        import random
        rng = random.Random(7)
        traces = [("stable-noisy", lambda t: 70 + rng.gauss(0, 2), args.stable_seconds),
                  ("single-spike", lambda t: 90.0 if 30 <= t < 30.5 else 70 + rng.gauss(0, 0.3), 120.0),
                  ("levels-off", lambda t: min(82.0, 70 + 0.05 * t) + rng.gauss(0, 0.3), 420.0)]
        for name, values, seconds in traces:
            f = no_failure_trace(cluster, workdir, name, values, seconds, args.window)
            falses.append(f)
            print("trace: " + json.dumps(f), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"races": rows, "false": falses}, fh, indent=1)
    print()
    head = ("rate", "from", "policy", "avail_s", "crossed_s", "decided_s", "mig_s", "ended_s", "outcome",
            "margin_s", "lead_at_decision_s", "reason")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(x) for x in (r["rate"], r["start"], r["policy"], r["available_s"], r["crossed_s"],
                                          r["decided_s"], r["migration_s"], r["ended_s"], r["outcome"],
                                          r["margin_s"], r["lead_at_decision_s"], r["reason"][:60])))
    for f in falses:
        print(f"no-failure trace {f['trace']} ({f['seconds']:g} s, predictive): {f['evacuations']} evacuations "
              f"in {f['watch_runs']} watch runs")
    n = len(parse_rates(args.rates)) if not args.only_false else 0
    saved_t = sum(1 for r in rows if r["policy"] == "threshold" and r["outcome"] == "saved")
    saved_p = sum(1 for r in rows if r["policy"] == "predictive" and r["outcome"] == "saved")
    margins = [r["margin_s"] for r in rows if r["margin_s"] is not None]
    false_evac = sum(f["evacuations"] for f in falses)
    median = round(statistics.median(margins), 1) if margins else 0.0
    print(f"ramp-race runs={n}: saved_threshold={saved_t}/{n} saved_predictive={saved_p}/{n} "
          f"false_evacuations={false_evac} median_margin_s={median}")


if __name__ == "__main__":
    main()
