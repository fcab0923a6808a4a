# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The evacuation timeline of `make demo` as a PNG: sensor, verdicts, migration, MPI progress.

``render(samples, heated_at, path, ...)`` takes what the demo collected (wall-clock times):

* ``sensor``: [(t, value)] read from the node's BMC with ipmitool;
* ``placement``: [(t, {guest: node})] from ``xl list`` on the compute nodes;
* ``mpi``: [(t, step)] from the job's own progress lines (their time stamps, taken in the guest);
* ``audit``: the audit records (started/finished times, migration stats with per-iteration pages);

plus the watch's verdict history from ``watch-state.json``. Time 0 is the moment the sensor was
heated. Usable on its own: ``python3 scripts/pft_demo_timeline.py run/demo-latest``.
"""
import json
import os
import sys

LEVEL = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}


def _verdicts(watch_state, node):
    try:
        with open(watch_state) as fh:
            hist = json.load(fh).get("nodes", {}).get(node, {}).get("history", [])
    except (OSError, ValueError):
        return []
    return [(h["t"], h["verdict"]) for h in hist if "t" in h]


def render(samples, heated_at, path, watch_state=None, node="compute1", sensor="CPU1 Temp",
           thresholds=(75, 85)):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = heated_at or min([t for t, _ in samples.get("sensor", [])] or [0])
    fig, axes = plt.subplots(4, 1, figsize=(11, 9), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.2, 2, 2]})
    ax_s, ax_v, ax_m, ax_j = axes

    pts = samples.get("sensor", [])
    if pts:
        ax_s.plot([t - t0 for t, _ in pts], [v for _, v in pts], "-o", ms=3, color="tab:red")
    ax_s.axhline(thresholds[0], ls="--", color="orange", lw=1, label="warning %g" % thresholds[0])
    ax_s.axhline(thresholds[1], ls="--", color="red", lw=1, label="critical %g" % thresholds[1])
    ax_s.set_ylabel("%s\n%s (C)" % (node, sensor))
    ax_s.legend(loc="upper left", fontsize=8)

    verdicts = _verdicts(watch_state, node) if watch_state else []
    for rec in samples.get("audit", []):
        for h in rec.get("verdict_history") or []:
            if "t" in h:
                verdicts.append((h["t"], h["verdict"]))
    verdicts = sorted(set(verdicts))
    if verdicts:
        ax_v.step([t - t0 for t, _ in verdicts], [LEVEL.get(v, 1) for _, v in verdicts], where="post",
                  color="tab:purple")
        ax_v.plot([t - t0 for t, _ in verdicts], [LEVEL.get(v, 1) for _, v in verdicts], "o", color="tab:purple")
    ax_v.set_yticks(list(LEVEL.values()))
    ax_v.set_yticklabels(list(LEVEL))
    ax_v.set_ylabel("watch\nverdict")

    for rec in samples.get("audit", []):
        if rec.get("outcome") not in ("migrated", "failed") or not rec.get("started"):
            continue
        start, end = rec["started"] - t0, (rec.get("finished") or rec["started"]) - t0
        for ax in axes:
            ax.axvspan(start, end, color="tab:blue", alpha=0.08)
        ax_m.annotate("%s: %s -> %s" % (rec.get("outcome"), rec.get("node"), rec.get("target")),
                      (start, 0.95), xycoords=("data", "axes fraction"), fontsize=8, va="top")
        its = ((rec.get("migration") or {}).get("iterations")) or []
        if its:
            mig_t0 = (rec.get("migration") or {}).get("wall_t0") or rec["started"]
            xs, ys = [], []
            for i, it in enumerate(its):
                at = it.get("t_start_s")
                xs.append((mig_t0 + at - t0) if at is not None else start + i * (end - start) / max(len(its), 1))
                ys.append(it.get("pages") or 0)
            ax_m.bar(xs, ys, width=max((end - start) / max(len(its), 1) * 0.6, 0.5), color="tab:blue",
                     align="edge")
            for x, y, it in zip(xs, ys, its):
                ax_m.annotate(str(it.get("iteration", "")), (x, y), fontsize=7, va="bottom")
    if ax_m.has_data():
        ax_m.set_yscale("log")
    ax_m.set_ylabel("migration\npages / round")

    place = samples.get("placement", [])
    if place:
        guests = sorted({g for _, p in place for g in p})
        nodes = sorted({n for _, p in place for n in p.values()})
        for g in guests:
            xs = [t - t0 for t, p in place if g in p]
            ys = [nodes.index(p[g]) for t, p in place if g in p]
            ax_j.plot(xs, ys, "s", ms=3, label="%s on" % g)
        ax_j.set_yticks(range(len(nodes)))
        ax_j.set_yticklabels(nodes)
        ax_j.legend(loc="upper left", fontsize=8)
    ax_j.set_ylabel("placement")
    ax_p = ax_j.twinx()
    mpi = samples.get("mpi", [])
    if mpi:
        ax_p.plot([t - t0 for t, _ in mpi], [s for _, s in mpi], ".", ms=2, color="tab:green")
    ax_p.set_ylabel("MPI step", color="tab:green")

    ax_j.set_xlabel("seconds since the sensor was heated")
    fig.suptitle("pft: proactive evacuation of %s" % node)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(run_dir):
    with open(os.path.join(run_dir, "timeline.json")) as fh:
        data = json.load(fh)
    heated = data.pop("heated_at", None)
    out = render(data, heated, os.path.join(run_dir, "timeline.png"),
                 watch_state=os.path.join(run_dir, "state", "watch-state.json"))
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "run/demo-latest")
