# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""How pft judges IPMI sensors: the verdicts, the rules, the policy, and each sensor's track.

Pure logic, no pyghmi:

* :class:`Policy` turns one sensor reading into ``ok``/``warning``/
  ``critical``/``unknown``, from per-sensor rules (:class:`Rule`) and/or the
  BMC's own threshold states (:func:`bmc_threshold_verdict`).
* :class:`SensorTrack` applies hysteresis (a state counts only after K
  consecutive samples) and keeps the trend (least-squares slope).

Verdict order for a node: critical > warning > unknown > ok (:data:`RANK`).
``unknown`` (BMC unreachable, authentication failure, timeout, sensor
unavailable or missing) is reported and alerted on but never escalates to
critical.
"""

from __future__ import absolute_import, division, print_function

import fnmatch

from ansible.module_utils.pft_common import VERDICT_RANK

__metaclass__ = type

OK = "ok"
WARNING = "warning"
CRITICAL = "critical"
UNKNOWN = "unknown"
VERDICTS = (OK, WARNING, CRITICAL, UNKNOWN)
# The ordinal scale that hysteresis works on; unknown is kept apart.
LEVEL = {OK: 0, WARNING: 1, CRITICAL: 2}
LEVEL_NAME = {0: OK, 1: WARNING, 2: CRITICAL}
# Node verdict precedence: evidence of trouble beats missing evidence (pft_common's, one for all of pft).
RANK = VERDICT_RANK

THRESHOLD_KEYS = ("lower_critical", "lower_warning", "upper_warning", "upper_critical")


class HealthError(Exception):
    """Bad input: the message names the thing at fault."""


# ---------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------

def _is_glob(text):
    return any(c in text for c in "*?[")


class Rule:
    """One sensor rule: which sensors (name glob and/or type) and thresholds."""

    def __init__(self, spec, index):
        if not isinstance(spec, dict):
            raise HealthError("policy rule #%d must be a dict, got %r" % (index, spec))
        unknown = set(spec) - {"name", "type", "required", "fail_at"} - set(THRESHOLD_KEYS)
        if unknown:
            raise HealthError("policy rule #%d has unknown keys: %s" % (index, ", ".join(sorted(unknown))))
        self.index = index
        self.name = spec.get("name")
        self.type = spec.get("type")
        if self.name is None and self.type is None:
            raise HealthError("policy rule #%d needs 'name' and/or 'type'" % index)
        self.thresholds = {}
        for key in THRESHOLD_KEYS:
            value = spec.get(key)
            if value is None:
                continue
            try:
                self.thresholds[key] = float(value)
            except (TypeError, ValueError):
                raise HealthError("policy rule #%d (%s): %s must be a number, got %r"
                                  % (index, self.label, key, value)) from None
        t = self.thresholds
        if "lower_critical" in t and "lower_warning" in t and t["lower_critical"] > t["lower_warning"]:
            raise HealthError("policy rule #%d (%s): lower_critical %s is above lower_warning %s"
                              % (index, self.label, t["lower_critical"], t["lower_warning"]))
        if "upper_critical" in t and "upper_warning" in t and t["upper_critical"] < t["upper_warning"]:
            raise HealthError("policy rule #%d (%s): upper_critical %s is below upper_warning %s"
                              % (index, self.label, t["upper_critical"], t["upper_warning"]))
        # The reading at which the node fails (a thermal trip, a fan too slow to cool): the line the
        # watch's prediction (pft_predict) measures the time to. None: this sensor predicts nothing.
        self.fail_at = None
        if spec.get("fail_at") is not None:
            try:
                self.fail_at = float(spec["fail_at"])
            except (TypeError, ValueError):
                raise HealthError("policy rule #%d (%s): fail_at must be a number, got %r"
                                  % (index, self.label, spec["fail_at"])) from None
        # An exact sensor name is required by default: its absence on a BMC
        # is a discrepancy. A glob or type-only rule is required only if asked.
        default_required = self.name is not None and not _is_glob(self.name)
        self.required = bool(spec.get("required", default_required))

    @property
    def label(self):
        parts = []
        if self.name is not None:
            parts.append("name=%s" % self.name)
        if self.type is not None:
            parts.append("type=%s" % self.type)
        return " ".join(parts)

    def matches(self, name, sensor_type):
        if self.name is not None and not fnmatch.fnmatchcase(name, self.name):
            return False
        if self.type is not None and (sensor_type or "").lower() != self.type.lower():
            return False
        return True

    def evaluate(self, value):
        """(verdict, reason) of a numeric value against this rule's thresholds."""
        t = self.thresholds
        if "upper_critical" in t and value >= t["upper_critical"]:
            return CRITICAL, "%s >= upper_critical %s" % (format_number(value), format_number(t["upper_critical"]))
        if "lower_critical" in t and value <= t["lower_critical"]:
            return CRITICAL, "%s <= lower_critical %s" % (format_number(value), format_number(t["lower_critical"]))
        if "upper_warning" in t and value >= t["upper_warning"]:
            return WARNING, "%s >= upper_warning %s" % (format_number(value), format_number(t["upper_warning"]))
        if "lower_warning" in t and value <= t["lower_warning"]:
            return WARNING, "%s <= lower_warning %s" % (format_number(value), format_number(t["lower_warning"]))
        return OK, "within thresholds"


def format_number(value):
    """A number as the reasons print it: at most 3 decimals, no trailing zeros; None is n/a."""
    if value is None:
        return "n/a"
    return ("%.3f" % value).rstrip("0").rstrip(".")


class Policy:
    """Which sensors to watch and how to judge them.

    ``rules``: list of dicts (first matching rule wins). ``use_bmc_thresholds``:
    also (or, without rules, only) judge by the threshold states the BMC
    reports: non-critical -> warning, critical/non-recoverable -> critical.
    """

    def __init__(self, rules=None, use_bmc_thresholds=False):
        self.rules = [Rule(spec, i) for i, spec in enumerate(rules or [])]
        self.use_bmc_thresholds = bool(use_bmc_thresholds)
        if not self.rules and not self.use_bmc_thresholds:
            raise HealthError("policy is empty: give rules and/or use_bmc_thresholds: true")

    def select(self, descriptions):
        """Map the BMC's sensors to rules.

        ``descriptions`` is a list of {name, type}. Returns (watched, missing):
        watched is {sensor name: rule or None}, missing lists the required
        rules that matched no sensor (discrepancies).
        """
        watched = {}
        used = set()
        for desc in descriptions:
            name, stype = desc["name"], desc.get("type")
            rule = next((r for r in self.rules if r.matches(name, stype)), None)
            if rule is not None:
                watched[name] = rule
                used.add(rule.index)
            elif self.use_bmc_thresholds and not self.rules:
                watched[name] = None
        missing = [r for r in self.rules if r.required and r.index not in used]
        return watched, missing

    def evaluate(self, rule, reading):
        """(verdict, reason) for one reading dict {value, unavailable, states, bmc_health}."""
        if reading.get("error"):
            return UNKNOWN, "read failed: %s" % reading["error"]
        if reading.get("unavailable"):
            return UNKNOWN, "sensor reading not available"
        verdict, reason = OK, "ok"
        value = reading.get("value")
        if rule is not None and rule.thresholds:
            if value is None:
                return UNKNOWN, "sensor gave no numeric value"
            verdict, reason = rule.evaluate(value)
        if self.use_bmc_thresholds:
            bmc_verdict = bmc_threshold_verdict(reading)
            if LEVEL[bmc_verdict] > LEVEL[verdict]:
                states = ", ".join(reading.get("states") or []) or bmc_verdict
                verdict, reason = bmc_verdict, "BMC reports %s" % states
        return verdict, reason


# pyghmi's const.Health bits
HEALTH_WARNING = 1
HEALTH_CRITICAL = 2
HEALTH_FAILED = 4


def bmc_threshold_verdict(reading):
    """Verdict from the threshold states the BMC reported for a reading.

    Non-critical thresholds give warning; critical and non-recoverable give
    critical (pyghmi's health bits of the reading).
    """
    health = int(reading.get("bmc_health") or 0)
    if health & (HEALTH_CRITICAL | HEALTH_FAILED):
        return CRITICAL
    if health & HEALTH_WARNING:
        return WARNING
    return OK


# ---------------------------------------------------------------------------
# Hysteresis and trend
# ---------------------------------------------------------------------------

class SensorTrack:
    """Hysteresis and trend for one sensor of one node.

    A level (ok < warning < critical) becomes the confirmed verdict only when
    the last ``k`` samples all agree: the verdict rises to the lowest level
    seen in the last k samples and falls to the highest. ``unknown`` samples
    break a streak; k unknown samples in a row make the verdict unknown.
    Until a first level is confirmed, a non-ok level that is still building
    up is reported as unknown ("pending"), never as ok.
    """

    def __init__(self, k):
        self.k = max(1, int(k))
        self.window = []        # last k raw verdicts
        self.confirmed = None   # confirmed level name, None before the first
        self.unknown_streak = 0
        self.last_reason = None
        self.fired_reason = None
        self.points = []        # (t, value) for the trend
        self.last_value = None
        self.min_value = None
        self.max_value = None
        self.samples = 0
        self.history = []

    def add(self, t, raw, reason, value=None, keep_history=False):
        self.samples += 1
        self.window.append(raw)
        if len(self.window) > self.k:
            self.window.pop(0)
        self.last_reason = reason
        if value is not None:
            self.points.append((t, value))
            self.last_value = value
            self.min_value = value if self.min_value is None else min(self.min_value, value)
            self.max_value = value if self.max_value is None else max(self.max_value, value)
        if keep_history:
            self.history.append({"t": round(t, 3), "value": value, "state": raw})
        if raw == UNKNOWN:
            self.unknown_streak += 1
            return
        self.unknown_streak = 0
        if self.confirmed is None and raw == OK:
            self.confirmed = OK
            self.fired_reason = reason
            return
        if len(self.window) < self.k or UNKNOWN in self.window:
            return
        levels = [LEVEL[v] for v in self.window]
        up, down = min(levels), max(levels)
        current = LEVEL[self.confirmed] if self.confirmed is not None else None
        if current is None:
            self.confirmed = LEVEL_NAME[up]
            self.fired_reason = reason
        elif up > current:
            self.confirmed = LEVEL_NAME[up]
            self.fired_reason = reason
        elif down < current:
            self.confirmed = LEVEL_NAME[down]
            self.fired_reason = reason

    @property
    def verdict(self):
        if self.unknown_streak >= self.k or (self.confirmed is None and self.unknown_streak):
            return UNKNOWN
        if self.confirmed is None:
            return UNKNOWN  # a non-ok level still building up
        return self.confirmed

    @property
    def pending(self):
        """A raw level different from the verdict that is building up, or None."""
        if not self.window:
            return None
        last = self.window[-1]
        if last == self.verdict:
            return None
        count = 0
        for v in reversed(self.window):
            if v != last:
                break
            count += 1
        return {"state": last, "count": count, "needed": self.k}

    @property
    def reason(self):
        verdict = self.verdict
        if verdict == UNKNOWN:
            if self.confirmed is None and self.unknown_streak == 0:
                p = self.pending
                return "%s for %d of %d samples, not yet confirmed (%s)" % (
                    p["state"], p["count"], p["needed"], self.last_reason)
            return self.last_reason
        return self.fired_reason or self.last_reason

    def slope(self):
        """Least-squares slope of value over time (units per second), or None."""
        pts = self.points
        if len(pts) < 2:
            return None
        n = float(len(pts))
        mt = sum(p[0] for p in pts) / n
        mv = sum(p[1] for p in pts) / n
        den = sum((p[0] - mt) ** 2 for p in pts)
        if den <= 0:
            return None
        return sum((p[0] - mt) * (p[1] - mv) for p in pts) / den

