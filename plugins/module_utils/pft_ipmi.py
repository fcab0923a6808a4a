# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""IPMI health of a list of nodes for pft: :func:`run_health`, what ipmi_health_info calls.

It checks the node list (:func:`validate_targets`), samples every node's BMC
with a :class:`~pft_ipmi_sampler.Sampler` over the readers of pft_ipmi_nodes,
judges each reading by the :class:`~pft_ipmi_policy.Policy` into each
sensor's track, and sums each node up into one verdict with its reason.

Verdict order for a node: critical > warning > unknown > ok. ``unknown``
(BMC unreachable, authentication failure, timeout, sensor unavailable or
missing) is reported and alerted on but never escalates to critical.
"""

from __future__ import absolute_import, division, print_function

import collections
import ipaddress
import time

from ansible.module_utils.pft_ipmi_nodes import NodeUnavailable, make_node
from ansible.module_utils.pft_ipmi_policy import (
    CRITICAL,
    LEVEL,
    OK,
    RANK,
    UNKNOWN,
    VERDICTS,
    WARNING,
    HealthError,
    SensorTrack,
)
from ansible.module_utils.pft_ipmi_pyghmi import install_pyghmi_fixes
from ansible.module_utils.pft_ipmi_sampler import Sampler

__metaclass__ = type

# seconds a run waits, at most, for its BMCs to answer Close Session (never more than the per-sample timeout)
CLOSE_DEADLINE = 2.0


def _bmc_key(address, port):
    """(address, port) of a BMC in one spelling, so that the same BMC compares equal."""
    text = address.strip()
    try:
        text = str(ipaddress.ip_address(text))
    except ValueError:
        text = text.lower().rstrip(".")
    return text, port


def _and_join(names):
    names = list(names)
    if len(names) < 2:
        return "".join(names)
    return "%s and %s" % (", ".join(names[:-1]), names[-1])


def _check_target(name, t, interface):
    """(problem, port): why the node's own BMC settings are unusable (or None), and its port.

    The reason names the node and never quotes the password.
    """
    if interface not in ("lan", "local"):
        return "target %s: interface must be lan or local, got %r" % (name, interface), None
    if interface == "local":
        return None, None
    address = t.get("address")
    if address is None or not str(address).strip():
        return "inventory: bmc_address is not set for %s (no address for its BMC)" % name, None
    if not t.get("username"):
        return "inventory: bmc_username is not set for %s (no BMC user, and no default username)" % name, None
    if t.get("password") is None:
        return ("inventory: bmc_password is not set for %s (no BMC password, and no default password; "
                "set it from vault or the environment)" % name), None
    raw = t.get("port")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, 623
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        port = raw if isinstance(raw, int) else int(str(raw).strip())
    except (TypeError, ValueError):
        return "inventory: bmc_port of %s must be an integer, got %r" % (name, raw), None
    if not 0 < port < 65536:
        return "inventory: bmc_port %d of %s is out of range (1-65535)" % (port, name), None
    return None, port


def validate_targets(targets):
    """Check node entries; returns them normalised. Errors name the node.

    A list that cannot be used at all raises HealthError: it is empty, or an
    entry is not a dict, has no name, or repeats a name. A node whose own BMC
    settings are unusable (no address, user or password, a bad port or
    interface) or whose BMC (address and port) another node also claims is
    kept, with ``invalid`` set to the reason: it is reported unknown and never
    sampled, and the other nodes are watched as usual. Sampling two nodes
    through one BMC would judge one node by the other's sensors.
    """
    if not targets:
        raise HealthError("targets is empty: give at least one node")
    seen = set()
    out = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise HealthError("targets[%d] must be a dict, got %r" % (i, type(t).__name__))
        name = t.get("name")
        if not name:
            raise HealthError("targets[%d] has no name" % i)
        if name in seen:
            raise HealthError("target %s is listed twice" % name)
        seen.add(name)
        interface = t.get("interface") or "lan"
        entry = dict(t, interface=interface)
        entry.pop("invalid", None)
        problem, port = _check_target(name, t, interface)
        if problem is not None:
            entry["invalid"] = problem
        elif interface == "lan":
            entry["address"] = str(t["address"]).strip()
            entry["port"] = port
        out.append(entry)
    # one BMC, one node: every node that shares a BMC with another is refused, each naming all of them
    by_bmc = collections.OrderedDict()
    for entry in out:
        if entry.get("invalid"):
            continue
        if entry["interface"] == "local":
            key = ("local",)
        else:
            key = _bmc_key(entry["address"], entry["port"])
        by_bmc.setdefault(key, []).append(entry)
    for key, entries in by_bmc.items():
        if len(entries) < 2:
            continue
        names = _and_join(e["name"] for e in entries)
        if key == ("local",):
            reason = ("inventory: %s all read the in-band BMC (/dev/ipmi0) of the host the module runs on; "
                      "none of them is sampled" % names)
        else:
            reason = ("inventory: %s have the same BMC %s:%d; %s sampled (fix bmc_address or bmc_port)"
                      % (names, entries[0]["address"], entries[0]["port"],
                         "neither is" if len(entries) == 2 else "none of them is"))
        for e in entries:
            e["invalid"] = reason
    return out


def _stop_level(stop_on):
    if stop_on in (None, "never", "none"):
        return None
    if stop_on not in LEVEL:
        raise HealthError("stop_on must be warning, critical or never, got %r" % stop_on)
    return LEVEL[stop_on]


class NodeState:
    def __init__(self, target, k):
        self.target = target
        self.name = target["name"]
        self.k = k
        self.tracks = {}
        self.rules = {}
        self.discrepancies = []
        self.node_error = None
        self.node_error_pending = False
        self.permanent_error = None
        self.selected = False
        self.failure_lines = {}   # sensor -> the lines at which the node fails (prediction)
        self.bmc_sensors = None   # how many sensors the BMC has, once its repository is read
        self.reads = 0
        if target.get("invalid"):
            # a bad inventory entry: reported unknown, never sampled
            self.permanent_error = self.node_error = target["invalid"]

    def track(self, sensor):
        if sensor not in self.tracks:
            self.tracks[sensor] = SensorTrack(self.k)
        return self.tracks[sensor]


def _node_result(state, policy, keep_history):
    sensors = {}
    worst = OK
    fired = None
    for name in sorted(state.tracks):
        tr = state.tracks[name]
        rule = state.rules.get(name)
        slope = tr.slope()
        entry = {
            "verdict": tr.verdict,
            "reason": tr.reason,
            "value": tr.last_value,
            "min": tr.min_value,
            "max": tr.max_value,
            "trend_per_min": None if slope is None else round(slope * 60.0, 4),
            "samples": tr.samples,
            "rule": rule.label if rule is not None else ("bmc_thresholds" if policy.use_bmc_thresholds else None),
            "pending": tr.pending,
        }
        if keep_history:
            entry["history"] = tr.history
        sensors[name] = entry
        if RANK[tr.verdict] > RANK[worst]:
            worst = tr.verdict
            fired = name
    if state.discrepancies and RANK[UNKNOWN] > RANK[worst]:
        worst = UNKNOWN
        fired = None
    result = {
        "verdict": worst,
        "sensors": sensors,
        "discrepancies": list(state.discrepancies),
        "samples": state.reads,
    }
    node_error = state.permanent_error or state.node_error
    if node_error and not state.tracks:
        result["verdict"] = UNKNOWN
    # the BMC was read, but the policy watches none of its sensors: no evidence, so not ok
    watches_nothing = state.selected and not state.rules
    if watches_nothing:
        result["verdict"] = UNKNOWN
    result["fired"] = None
    if fired is not None and result["verdict"] in (WARNING, CRITICAL):
        entry = sensors[fired]
        result["fired"] = {"sensor": fired, "rule": entry["rule"], "value": entry["value"]}
        result["reason"] = "%s: %s" % (fired, entry["reason"])
    elif node_error and result["verdict"] == UNKNOWN:
        result["reason"] = node_error
    elif watches_nothing:
        count = state.bmc_sensors or 0
        result["reason"] = "no sensor on the BMC matches the health rules (%d sensor%s on the BMC)" % (
            count, "" if count == 1 else "s")
    elif state.discrepancies:
        result["reason"] = "requested sensors missing on the BMC: %s" % ", ".join(state.discrepancies)
    elif fired is not None:
        result["reason"] = "%s: %s" % (fired, sensors[fired]["reason"])
    else:
        result["reason"] = "all %d watched sensors within thresholds" % len(sensors)
    if state.node_error:
        result["error"] = state.node_error
    return result

def _check_sampling(samples, interval, window, hysteresis, timeout, retry_after, retry_max):
    """Raise HealthError for a sampling argument out of range."""
    if hysteresis < 1:
        raise HealthError("hysteresis must be >= 1, got %r" % hysteresis)
    if interval < 0:
        raise HealthError("interval must be >= 0, got %r" % interval)
    if timeout <= 0:
        raise HealthError("timeout must be > 0, got %r" % timeout)
    if window is not None and window <= 0:
        raise HealthError("window must be > 0 seconds, got %r" % window)
    if window is None and samples < 1:
        raise HealthError("samples must be >= 1, got %r" % samples)
    if retry_after is not None and not retry_after > 0:
        raise HealthError("retry_after must be > 0 seconds, got %r" % retry_after)
    if retry_max is None or not retry_max > 0:
        raise HealthError("retry_max must be > 0 seconds, got %r" % retry_max)


def _preparer(states, policy):
    """The sampler's ``prepare(reader, descriptions)``: picks the node's watched sensors once."""
    def prepare(reader, descriptions):
        st = states[reader.name]
        if st.permanent_error:
            raise NodeUnavailable(st.permanent_error, permanent=True)
        if not st.selected:
            watched, missing = policy.select(descriptions)
            st.rules = watched
            st.discrepancies = [r.name or r.label for r in missing]
            st.bmc_sensors = len(descriptions)
            # the failure lines prediction uses: the rule's fail_at, else the BMC's non-recoverable ones
            st.failure_lines = {}
            for d in descriptions:
                if d["name"] not in watched:
                    continue
                rule = watched[d["name"]]
                if getattr(rule, "fail_at", None) is not None:
                    st.failure_lines[d["name"]] = [rule.fail_at]
                else:
                    th = d.get("thresholds") or {}
                    st.failure_lines[d["name"]] = [th[k] for k in ("unr", "lnr") if th.get(k) is not None]
            st.selected = True
        reader.select(sorted(st.rules))
    return prepare


def _take_in(st, res, t, policy, keep_history):
    """Add one node's sample (readings or NodeUnavailable) at time ``t`` to its tracks."""
    st.reads += 1
    if isinstance(res, NodeUnavailable):
        if not (res.pending and st.node_error and not st.node_error_pending):
            # a login still queued or under way tells nothing new: an earlier
            # failure (BMC unreachable, ...) stays the reason
            st.node_error = res.reason
            st.node_error_pending = res.pending
        if res.permanent:
            st.permanent_error = res.reason
        if res.pending and not st.tracks:
            st.reads -= 1
            return  # first login still under way: no data yet, not a failed sample
        for sensor in (st.rules or {}):
            st.track(sensor).add(t, UNKNOWN, res.reason, keep_history=keep_history)
        return
    st.node_error = None
    for sensor, reading in res.items():
        verdict, reason = policy.evaluate(st.rules.get(sensor), reading)
        value = reading.get("value")
        if reading.get("unavailable") or reading.get("error"):
            value = None
        st.track(sensor).add(t, verdict, reason, value, keep_history=keep_history)


def _reached(states, stop_level, handled=None):
    """Names of the nodes with a sensor whose confirmed verdict is at ``stop_level`` or above, and
    above the level already handled for that node (``handled``: {node: level name})."""
    handled = handled or {}
    out = []
    for name, st in states.items():
        bar = max(stop_level, LEVEL[handled[name]] + 1) if name in handled else stop_level
        if any(LEVEL.get(tr.verdict, -1) >= bar for tr in st.tracks.values()):
            out.append(name)
    return out


def _foresee(foresight, name, st, t, wall_t):
    """Hand this sweep's readings of the node's sensors with a failure line to the foresight."""
    for sensor, tr in st.tracks.items():
        lines = st.failure_lines.get(sensor)
        if not lines or not tr.points or tr.points[-1][0] != t:
            continue                  # no failure line, or no reading in this sweep
        foresight.add(name, sensor, lines, wall_t, tr.points[-1][1])


def _sweep_seconds(sweep_times):
    if not sweep_times:
        return {"min": 0.0, "median": 0.0, "max": 0.0}
    return {
        "min": round(min(sweep_times), 4),
        "median": round(sorted(sweep_times)[len(sweep_times) // 2], 4),
        "max": round(max(sweep_times), 4),
    }


def run_health(targets, policy, samples=1, interval=1.0, window=None, stop_on=None,
               hysteresis=1, timeout=3.0, parallelism=32, keep_history=False,
               node_factory=None, pump=None, after_sample=None, clock=time.monotonic, sleep=time.sleep,
               retry_after=None, retry_max=60.0, foresight=None, wall=time.time, handled=None):
    """Sample every node's sensors and return the per-node verdicts.

    Either ``samples`` (a count) or ``window`` (seconds) bounds the run;
    ``stop_on`` (warning/critical) ends it as soon as any node's confirmed
    verdict reaches that level. ``timeout`` is the hard deadline per node and
    sample. A BMC whose login failed is logged into again after
    ``retry_after`` seconds (default ``max(2 x timeout, 5)``), doubling up to
    ``retry_max`` (see :class:`Sampler`); until then it is reported unknown
    with its last error. ``node_factory(target)`` makes the node reader and
    ``pump`` runs one event-loop step; ``clock`` and ``sleep`` time the run
    and the sampler (tests inject fakes; a fake ``pump`` must move a fake
    ``clock`` on). ``after_sample(n)`` is called after sample n (1-based),
    before the pause. ``foresight`` (a :class:`pft_ipmi_predict.Foresight`)
    gets every reading of a sensor whose rule has ``fail_at``, on the ``wall``
    clock, and ends the run early, as ``stop_on`` does, when it predicts a
    node's failure sooner than that node can be emptied; each such node's
    result then has ``prediction``. ``handled`` ({node: "warning" or "critical"}) names what
    was already done for a node (pre-staged, evacuated): such a node ends the run early only at a
    verdict worse than that, and an evacuated (``critical``) one never on a prediction.
    """
    targets = validate_targets(targets)
    _check_sampling(samples, interval, window, hysteresis, timeout, retry_after, retry_max)
    stop_level = _stop_level(stop_on)
    handled = dict(handled or {})
    for node, level in handled.items():
        if level not in ("warning", "critical"):
            raise HealthError("handled: node %s: level must be warning or critical, got %r" % (node, level))
    fixes = None
    if node_factory is None:
        fixes = install_pyghmi_fixes()
    factory = node_factory or make_node
    readers = [factory(t) for t in targets if not t.get("invalid")]
    states = {t["name"]: NodeState(t, hysteresis) for t in targets}
    sampler = Sampler(parallelism, timeout, pump=pump, clock=clock, sleep=sleep,
                      retry_after=retry_after, retry_max=retry_max)
    prepare = _preparer(states, policy)

    start = clock()
    stopped_early = None
    n = 0
    sweep_times = []
    try:
        while readers:   # no node to sample when every entry is a bad one
            t0 = clock()
            wall_t0 = wall()
            results = sampler.sample(readers, prepare)
            sweep_times.append(clock() - t0)
            n += 1
            for name, res in results.items():
                _take_in(states[name], res, t0 - start, policy, keep_history)
                if foresight is not None:
                    _foresee(foresight, name, states[name], t0 - start, wall_t0)
            if after_sample is not None:
                after_sample(n)
            if stop_level is not None:
                hit = _reached(states, stop_level, handled)
                if hit:
                    stopped_early = {"nodes": sorted(hit), "after_samples": n, "at": round(clock() - start, 3)}
                    break
            if foresight is not None:
                hit = [n for n in foresight.judge() if handled.get(n) != "critical"]
                if hit:
                    stopped_early = {"nodes": sorted(hit), "after_samples": n, "at": round(clock() - start, 3),
                                     "predicted": True}
                    break
            if window is None:
                if n >= samples:
                    break
            elif t0 - start + interval >= window:
                break  # the next sample would start outside the window
            delay = t0 + interval - clock()
            if delay > 0:
                # logins and answers no sample waits for go on meanwhile
                sampler.idle(delay, readers)
        # the BMCs' session slots back before the module exits (a run a minute would leak one a minute)
        closed, unanswered = sampler.close_sessions(readers, min(timeout, CLOSE_DEADLINE))
    finally:
        sampler.close()
    nodes = {name: _node_result(st, policy, keep_history) for name, st in states.items()}
    if foresight is not None:
        foresight.judge()
        for name, result in nodes.items():
            pred = foresight.prediction(name)
            if pred is not None:
                result["prediction"] = pred
    summary = {v: sorted(name for name, r in nodes.items() if r["verdict"] == v) for v in VERDICTS}
    return {
        "nodes": nodes,
        "summary": summary,
        "samples": n,
        "elapsed": round(clock() - start, 3),
        "bmc_sessions": {"closed": closed, "unanswered": unanswered},
        "sweep_seconds": _sweep_seconds(sweep_times),
        "stopped_early": stopped_early,
        "pyghmi_fixes": fixes,
    }
