# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time to failure of one sensor from its recent samples: pure, no Ansible, no pyghmi, no I/O.

The watch asks one question of a sensor's history: if the reading keeps moving as it has lately,
when does it reach the line at which the node fails (a BMC's upper non-recoverable threshold, where
a real BMC powers the node off)? pft compares that with how long it needs to empty the node.

The estimator (see docs/watch.md, "Prediction"):

* **Rate**: the Theil-Sen slope, the median of the slopes between every pair of samples. Up to
  29 % of the samples can be outliers without moving it (a spike, a stuck read); it needs no
  evenly spaced samples, so a missed sample costs one point, not the fit.
* **Confidence**: how surely the samples move toward the line, from the Mann-Kendall statistic
  (the count of rising pairs minus falling pairs, the same pairs as the slope): the one-sided
  normal probability of its z-score, 0.5 for no trend, near 1 for a steady climb. Noise around a
  flat level gives about 0.5 whatever its size; a single spike moves it by one sample's pairs.
* **Significance**: the fitted rise over the samples' span must exceed three robust standard
  deviations of the scatter around the line, so a noisy flat sensor's chance slope does not count;
  and a fit needs MIN_SAMPLES over MIN_SPAN_S (a few seconds of noise can point anywhere).
* **Level**: where the fitted line is at the newest sample (the median residual puts it through
  the middle of the points, so the newest sample alone, a spike perhaps, does not set it).
* **Curves**: a thermal runaway accelerates, and a ramp can start after a step. A line fitted to
  the whole window is late there, so the newest half of the window is fitted too, and the earlier
  failure of the two counts when its fit is confident enough on its own.

Beside it, the other half of the question: how long pft needs to empty the node
(:func:`expected_evacuation`, :func:`queue`, the measured throughputs of :func:`remember_throughput`),
and the rule that puts the two together (:func:`should_evacuate`).

``estimate(samples, failure_line)`` is the contract other tools call: samples are ``(t_seconds,
value)`` pairs, oldest first; ``failure_line`` above the samples is a rising failure (temperature),
below them a falling one (a fan's speed).
"""
from __future__ import annotations

import math

METHOD = "theil-sen"
DEFAULT_WINDOW_S = 90.0    # the newest samples used: the watch samples every second, across runs
MAX_POINTS = 40            # a longer window is thinned to this many: 780 pairs, cheap over 1000 nodes
MIN_SAMPLES = 10           # fewer in a fit: no estimate from it
MIN_SPAN_S = 20.0          # a fit over a shorter time is no estimate either (noise dominates it)
DEFAULT_MIN_CONFIDENCE = 0.9
SIGNIFICANT_RISE = 4.0     # the fitted rise over the fit's span, in robust sigmas of the scatter
MAX_EXTRAPOLATION = 10.0   # a time to failure beyond this many times the samples' span is no prediction
DEFAULT_MARGIN = 2.0       # evacuate when time to failure < margin x expected evacuation


def _pairs(points):
    """(slopes, S): every pairwise slope with a time step, and the Mann-Kendall S of the values."""
    slopes = []
    s = 0
    n = len(points)
    for i in range(n - 1):
        ti, vi = points[i]
        for j in range(i + 1, n):
            tj, vj = points[j]
            if vj > vi:
                s += 1
            elif vj < vi:
                s -= 1
            if tj > ti:
                slopes.append((vj - vi) / (tj - ti))
    return slopes, s


def _median(values):
    values = sorted(values)
    n = len(values)
    if not n:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def _trend_probability(s, n, direction):
    """P(the samples trend in `direction`): the one-sided normal probability of Mann-Kendall's z."""
    var = n * (n - 1) * (2 * n + 5) / 18.0
    if var <= 0:
        return 0.5
    if s > 0:
        z = (s - 1) / math.sqrt(var)
    elif s < 0:
        z = (s + 1) / math.sqrt(var)
    else:
        z = 0.0
    return 0.5 * (1.0 + math.erf(direction * z / math.sqrt(2.0)))


def fit(points):
    """Theil-Sen fit of (t, value) points, or None.

    {rate_per_s, level (the line at the newest t), s (Mann-Kendall), n, rise (the line's change
    over the points' span), noise (the residuals' robust spread: 1.4826 x their median absolute
    deviation, a standard deviation for normal noise)}."""
    if len(points) < 2:
        return None
    slopes, s = _pairs(points)
    rate = _median(slopes)
    if rate is None:
        return None
    residuals = [v - rate * t for t, v in points]
    intercept = _median(residuals)
    noise = 1.4826 * _median([abs(r - intercept) for r in residuals])
    t_last = points[-1][0]
    return {"rate_per_s": rate, "level": intercept + rate * t_last, "s": s, "n": len(points),
            "rise": rate * (t_last - points[0][0]), "noise": noise}


def _clean(samples):
    points = []
    for item in samples or ():
        try:
            t, v = item
            t, v = float(t), float(v)
        except (TypeError, ValueError):
            continue                     # a missing or unreadable sample: one point fewer
        if math.isfinite(t) and math.isfinite(v):
            points.append((t, v))
    points.sort(key=lambda p: p[0])
    return points


def _ttf(f, failure_line, direction):
    """Seconds until the fitted line reaches the failure line (0 if past it, None if never)."""
    gap = (failure_line - f["level"]) * direction
    if gap <= 0:
        return 0.0
    toward = f["rate_per_s"] * direction
    if toward <= 0:
        return None
    return gap / toward


def _thin(points, max_points):
    """At most max_points of points, evenly by index, the newest always kept."""
    n = len(points)
    if not max_points or n <= max_points:
        return points
    step = (n - 1) / float(max_points - 1)
    return [points[int(round(n - 1 - k * step))] for k in range(max_points - 1, -1, -1)]


def _enough(points, min_samples, min_span_s):
    return len(points) >= max(2, min_samples) and points[-1][0] - points[0][0] >= min_span_s


def estimate(samples, failure_line, window_s=DEFAULT_WINDOW_S, min_samples=MIN_SAMPLES,
             min_confidence=DEFAULT_MIN_CONFIDENCE, min_span_s=MIN_SPAN_S, max_points=MAX_POINTS,
             max_extrapolation=MAX_EXTRAPOLATION):
    """Predict when a sensor reaches `failure_line`.

    Returns a dict: ``time_to_failure_s`` (float seconds from the newest sample, or None when no
    failure is predicted: too few samples, no failure line, or no trend toward it), ``rate_per_s``,
    ``confidence`` (0 to 1: how surely the samples move toward the line), ``level`` (the fitted
    reading at the newest sample), ``failure_line``, ``direction`` ("rising" or "falling"),
    ``samples_used``, ``span_s``, ``fit`` ("window" or "recent": which fit gave the time), ``method``
    and ``why`` (a short reason when time_to_failure_s is None)."""
    points = _clean(samples)
    if window_s and points:
        points = [p for p in points if p[0] >= points[-1][0] - window_s]
    points = _thin(points, max_points)
    out = {"time_to_failure_s": None, "rate_per_s": None, "confidence": 0.0, "level": None,
           "failure_line": failure_line, "direction": None, "samples_used": len(points),
           "span_s": round(points[-1][0] - points[0][0], 3) if points else 0.0, "fit": None,
           "method": METHOD, "why": ""}
    if failure_line is None:
        out["why"] = "no failure line"
        return out
    try:
        failure_line = float(failure_line)
    except (TypeError, ValueError):
        out["why"] = f"failure line {failure_line!r} is not a number"
        return out
    out["failure_line"] = failure_line
    if not _enough(points, min_samples, min_span_s):
        out["why"] = (f"{len(points)} samples over {out['span_s']:g} s; {max(2, min_samples)} over "
                      f"{min_span_s:g} s needed")
        return out
    whole = fit(points)
    if whole is None:
        out["why"] = "all samples at one time"
        return out
    # the side of the line the window starts on (the fitted line there, not one sample) decides
    # which way is toward failure: above it, the line is a rising failure; below it, a falling one
    direction = 1 if failure_line >= whole["level"] - whole["rise"] else -1
    out["direction"] = "rising" if direction > 0 else "falling"
    candidates = [("window", whole)]
    half = len(points) // 2
    if _enough(points[half:], min_samples, min_span_s):
        recent = fit(points[half:])
        if recent is not None:
            candidates.append(("recent", recent))
    best = None
    for name, f in candidates:
        conf = _trend_probability(f["s"], f["n"], direction)
        ttf = _ttf(f, failure_line, direction)
        # A trend counts when the samples surely move toward the line (confidence) and the line
        # moved more than the noise around it (SIGNIFICANT_RISE robust sigmas over the fit's span).
        significant = abs(f["rise"]) >= SIGNIFICANT_RISE * f["noise"]
        usable = ttf is not None and ((conf >= min_confidence and significant) or ttf == 0.0)
        entry = (name, f, conf, ttf, usable)
        if best is None:
            best = entry
        elif usable and (not best[4] or ttf < best[3]):
            best = entry
    name, f, conf, ttf, usable = best
    out.update(rate_per_s=round(f["rate_per_s"], 6), level=round(f["level"], 3), confidence=round(conf, 4),
               fit=name)
    if ttf is None:
        out["why"] = "no trend toward the failure line"
    elif not usable and conf < min_confidence:
        out["why"] = f"trend confidence {conf:.2f} below {min_confidence:.2f}"
    elif not usable:
        out["why"] = (f"rise {abs(f['rise']):.2f} over the samples is within the noise "
                      f"({SIGNIFICANT_RISE:g} x {f['noise']:.2f})")
    elif max_extrapolation and ttf > max_extrapolation * max(out["span_s"], min_span_s):
        out["why"] = (f"time to failure {ttf:.0f} s is beyond {max_extrapolation:g} x the samples' span "
                      f"({out['span_s']:g} s): too far to extrapolate")
    else:
        out["time_to_failure_s"] = round(ttf, 1)
    return out


def expected_evacuation(guests, throughput=None, default_mib_per_s=None, overhead_s=0.0, wait_s=0.0):
    """Seconds to empty a node: ``overhead_s`` (detection to the first ``xl migrate``, measured), plus
    each guest's memory over the throughput of its move, one guest after another (the watch moves a
    node's guests in turn), plus ``wait_s`` (the node's turn behind others, see :func:`queue`).

    ``guests``: [{"name", "memory_mib", "target" (optional)}]; ``throughput``: {target or "*": MiB/s}
    measured on earlier moves (:func:`remember_throughput`); ``default_mib_per_s``: before any
    measurement. Returns {expected_s, guests: [{name, memory_mib, mib_per_s, seconds, basis}]}."""
    throughput = throughput or {}
    total = float(overhead_s) + float(wait_s)
    out = []
    for g in guests or ():
        mib = float(g.get("memory_mib") or 0.0)
        rate, basis = None, "default"
        for key in (g.get("target"), "*"):
            if key is not None and throughput.get(key):
                rate, basis = float(throughput[key]), "measured" if key != "*" else "measured (any target)"
                break
        if rate is None:
            rate = float(default_mib_per_s) if default_mib_per_s else None
        if not rate or rate <= 0:
            raise ValueError("no throughput for guest %r: give default_mib_per_s" % g.get("name"))
        seconds = mib / rate
        total += seconds
        out.append({"name": g.get("name"), "memory_mib": mib, "mib_per_s": round(rate, 3),
                    "seconds": round(seconds, 1), "basis": basis})
    return {"expected_s": round(total, 1), "guests": out}


def queue(nodes, slots=1):
    """Each node's wait for a migration slot: ``nodes`` is [(node, own evacuation seconds)], the most
    urgent first; ``slots`` nodes move at once (pft_watch_max_parallel). Returns {node: wait_s}."""
    free = [0.0] * max(1, int(slots))
    waits = {}
    for node, seconds in nodes:
        i = min(range(len(free)), key=free.__getitem__)
        waits[node] = free[i]
        free[i] += float(seconds)
    return waits


def remember_throughput(memory, target, mib, seconds, keep=5):
    """Add one measured move (``mib`` in ``seconds`` to ``target``) to ``memory`` ({target: [MiB/s,
    ...]}, newest last, at most ``keep``); returns the new memory (the input is not changed)."""
    memory = {k: list(v) for k, v in (memory or {}).items()}
    if not seconds or seconds <= 0 or not mib or mib <= 0:
        return memory
    for key in (target, "*"):
        memory.setdefault(key, []).append(round(float(mib) / float(seconds), 3))
        del memory[key][:-keep]
    return memory


def throughput_of(memory):
    """{target: MiB/s} to plan with: the slowest of the moves remembered for each (conservative)."""
    return {k: min(v) for k, v in (memory or {}).items() if v}


def should_evacuate(prediction, expected_s, margin=DEFAULT_MARGIN):
    """(True, why) when the predicted time to failure is shorter than ``margin`` x the expected
    evacuation: starting later risks the node dying mid-move. (False, why) otherwise."""
    ttf = (prediction or {}).get("time_to_failure_s")
    if ttf is None:
        return False, "no failure predicted (%s)" % ((prediction or {}).get("why") or "no prediction")
    limit = float(expected_s) * float(margin)
    if ttf < limit:
        return True, ("predicted failure in %.0f s, within %g x the expected evacuation of %.0f s"
                      % (ttf, margin, expected_s))
    return False, ("predicted failure in %.0f s, later than %g x the expected evacuation of %.0f s"
                   % (ttf, margin, expected_s))
