# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prediction while the BMCs are sampled: each sensor's recent samples, kept across the watch's
runs, and the nodes whose predicted failure comes sooner than pft can empty them.

run_health (pft_ipmi) hands every sample of a sensor with a failure line (a policy rule's
``fail_at``) to a :class:`Foresight`, with the controller's wall clock, and asks it after each
sweep which nodes are predicted to fail within their ``evacuate_within`` seconds (the expected
evacuation times the margin, which the watch computes). Those end the sampling early, as a
threshold crossing does. The samples of the last window are returned to be saved, so that the
next cron run starts with the trend a ramp began at the end of this one (:func:`carried`).
The estimator itself is pft_predict's."""
from __future__ import annotations

import time

from ansible.module_utils.pft_predict import DEFAULT_MIN_CONFIDENCE, DEFAULT_WINDOW_S, estimate

CARRIED_FORMAT = 1


class Foresight:
    """Samples and predictions of every node's sensors that have a failure line.

    ``within``: {node: seconds}, ``default_within``: for the other nodes (None: no early stop, the
    predictions are only reported); ``carried``: what :meth:`carried` returned in an earlier run."""

    def __init__(self, within=None, default_within=None, carried=None, window_s=DEFAULT_WINDOW_S,
                 min_confidence=DEFAULT_MIN_CONFIDENCE, wall=time.time):
        self.within = dict(within or {})
        self.default_within = default_within
        self.window_s = float(window_s)
        self.min_confidence = float(min_confidence)
        self.wall = wall
        self.samples = {}
        self.lines = {}
        self.predictions = {}
        self._hit = []
        self._judged = True       # nothing added since the last judge(): its answer stands
        now = wall()
        nodes = (carried or {}).get("nodes") if isinstance(carried, dict) else None
        if (carried or {}).get("format") == CARRIED_FORMAT and isinstance(nodes, dict):
            for node, sensors in nodes.items():
                for sensor, points in (sensors or {}).items():
                    kept = [(float(t), float(v)) for t, v in points
                            if isinstance(t, (int, float)) and isinstance(v, (int, float))
                            and now - self.window_s <= t <= now]
                    if kept:
                        self.samples.setdefault(node, {})[sensor] = kept

    def add(self, node, sensor, line, t_wall, value):
        """One reading of a sensor whose failure line is ``line`` (or lines: a list, such as a BMC's
        upper and lower non-recoverable thresholds; the sooner failure counts)."""
        self.lines.setdefault(node, {})[sensor] = list(line) if isinstance(line, (list, tuple)) else [line]
        self._judged = False
        points = self.samples.setdefault(node, {}).setdefault(sensor, [])
        points.append((round(float(t_wall), 3), float(value)))
        cut = t_wall - self.window_s
        while points and points[0][0] < cut:
            points.pop(0)

    def judge(self):
        """Predict every node's sensors; returns the nodes predicted to fail within their bound. Without
        a reading added since the last call, that call's answer is returned as it was."""
        if self._judged:
            return list(self._hit)
        hit = []
        for node, lines in sorted(self.lines.items()):
            best = None
            for sensor, sensor_lines in sorted(lines.items()):
                for line in sensor_lines:
                    est = estimate(self.samples.get(node, {}).get(sensor, []), line, window_s=self.window_s,
                                   min_confidence=self.min_confidence)
                    est["sensor"] = sensor
                    ttf = est["time_to_failure_s"]
                    if best is None or (ttf is not None and (best["time_to_failure_s"] is None
                                                             or ttf < best["time_to_failure_s"])):
                        best = est
            if best is None:
                continue
            bound = self.within.get(node, self.default_within)
            best["evacuate_within_s"] = bound
            best["predicted"] = bool(bound is not None and best["time_to_failure_s"] is not None
                                     and best["time_to_failure_s"] < float(bound))
            self.predictions[node] = best
            if best["predicted"]:
                hit.append(node)
        self._hit, self._judged = hit, True
        return list(hit)

    def prediction(self, node):
        """The node's prediction (its soonest-failing sensor) with the samples it came from, or None."""
        pred = self.predictions.get(node)
        if pred is None:
            return None
        out = dict(pred)
        out["samples"] = [list(p) for p in self.samples.get(node, {}).get(pred["sensor"], [])]
        return out

    def carried(self):
        """The samples of the last window, to save for the next run."""
        return {"format": CARRIED_FORMAT, "saved_at": round(self.wall(), 3),
                "nodes": {node: {s: [list(p) for p in pts] for s, pts in sensors.items() if pts}
                          for node, sensors in sorted(self.samples.items())}}
