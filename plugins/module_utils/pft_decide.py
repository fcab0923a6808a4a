# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch's decision: what to do about each node's health (evacuate, pre-stage, release, alert).

:func:`decide` is pure: one ipmi_health_info result, the quarantine, the pre-staged targets and the
previous watch-state in; a plan and the new watch-state out. :func:`run_decide` runs it with the
state directory (:mod:`pft_state`) and the spare reservations (:mod:`pft_reservation`), whose owners
and purposes (who moves a guest, and why a spare is held) are named here.
"""
from __future__ import annotations

import json
import os
import time

from ansible.module_utils.pft_common import (
    DEFAULT_LOCK_TIMEOUT,
    QUARANTINE_FILE,
    VERDICT_RANK,
    WATCH_STATE_FILE,
    utc_iso,
)
from ansible.module_utils.pft_predict import DEFAULT_MARGIN, queue, should_evacuate
from ansible.module_utils.pft_reservation import ReservationStore
from ansible.module_utils.pft_state import StateDir, WatchError

SEVERITY = {"ok": "info", "unknown": "warning", "warning": "warning", "critical": "critical"}


def _bad_sensors(node):
    """The sensors of one ipmi_health_info node result that are not ok, with their values."""
    out = {}
    for name, s in sorted((node.get("sensors") or {}).items()):
        if s.get("verdict", "ok") != "ok" or s.get("pending"):
            out[name] = {k: s.get(k) for k in ("verdict", "value", "min", "max", "trend_per_min", "reason",
                                                "pending", "history") if s.get(k) is not None}
    return out


def _lost_sensors(ns, node, now, forget_after):
    """Sensors this node reported in earlier runs and does not report now (after a run with data).

    ``ns["sensors"]`` maps each sensor the node has reported to when it was last seen. A node that
    gave no data this run (BMC unreachable) says nothing about its sensors and changes nothing. A
    sensor missing for longer than ``forget_after`` seconds is forgotten (removed on purpose)."""
    seen = ns.setdefault("sensors", {})
    now_names = sorted((node.get("sensors") or {}).keys())
    if not now_names:
        return []
    for name in now_names:
        seen[name] = round(now, 3)
    for name in [n for n, t in seen.items() if now - t > forget_after]:
        del seen[name]
    return sorted(n for n in seen if n not in now_names)


def decide(health, quarantined=(), prestaged=None, state=None, now=None, history_len=20,
           realert_after=3600.0, prestage_on="warning", evacuate_on="critical", release_after_ok=True,
           sensor_forget_after=86400.0, policy_id=None, predict=None):
    """Turn one health result into a plan; returns ``(plan, new_state)``.

    ``health`` is ipmi_health_info's result (``nodes``). ``quarantined`` are nodes
    already evacuated (never acted on again until returned to service).
    ``prestaged`` maps node -> target host reserved for it. ``state`` is the previous
    watch-state (verdict history and last alerts).

    * a confirmed verdict at ``evacuate_on`` or worse -> evacuate;
    * at ``prestage_on`` (and below ``evacuate_on``) -> pre-stage a target, unless one is;
    * ``unknown`` -> alert only, never evacuate;
    * back to ``ok`` with a pre-staged target -> release it;
    * a node that no longer reports a sensor it reported in an earlier run reads ``unknown`` (never
      ``ok`` on a smaller set of evidence), until the sensor is back or ``sensor_forget_after`` s pass;
      ``policy_id`` names the health rules in force: when it changes, what each node reported before
      is forgotten (new rules watch other sensors);
    * a quarantined node that is still bad is evacuated again: the guests whose move failed are
      still on it (``pft_watch_select`` finds none on a node that has none);
    * ``predict`` ({"evacuation_s", "margin", "nodes", "slots"}): a node whose health result carries
      a prediction (ipmi_health_info's ``predict``) whose time to failure is under margin x its
      expected evacuation is evacuated too, before any threshold says so, with why ``predicted ...``
      and the prediction in its plan item (and so in its journal entry and audit record). A node's
      expected evacuation is its own (``nodes``: {node: seconds}, pft_evacuation_time; else
      ``evacuation_s``) plus its wait for one of ``slots`` migration slots behind the nodes more
      urgent than it (past a threshold first, then the soonest predicted failure);
    * alerts are planned when a node's verdict changes, and again after ``realert_after`` s. They
      are recorded as sent by ``remember_alert`` once they were sent, never here: a run that dies
      before sending them plans them again.
    """
    if now is None:
        now = time.time()
    nodes = _check_input(health, prestage_on, evacuate_on)
    quarantined = set(quarantined or ())
    prestaged = dict(prestaged or {})
    state = _start_state(state, policy_id)
    plan = {"evacuate": [], "prestage": [], "release": [], "alerts": [], "nodes": {}}
    predict = _check_predict(predict)
    levels = {"prestage_on": prestage_on, "evacuate_on": evacuate_on, "release_after_ok": release_after_ok,
              "predict": predict, "expected": _expected(nodes, predict, evacuate_on)}

    for name in sorted(nodes):
        ns = state["nodes"].setdefault(name, {})
        node, item = _observe(name, nodes[name] or {}, ns, now, history_len, sensor_forget_after)
        action, why = _choose_action(plan, item, quarantined, prestaged, **levels)
        plan["nodes"][name] = {"verdict": item["verdict"], "action": action, "why": why}
        alert = _alert_due(ns.get("alerted") or {}, name, node, item, action, why, now, realert_after)
        if alert:
            plan["alerts"].append(alert)
    # past a threshold first, then the soonest predicted failure, then worst first, then by name
    plan["evacuate"].sort(key=lambda i: (_ttf_key(i), -VERDICT_RANK[i["verdict"]], i["node"]))
    plan["summary"] = {k: [i["node"] for i in plan[k]] for k in ("evacuate", "prestage")}
    plan["summary"]["release"] = [i["node"] for i in plan["release"]]
    plan["summary"]["alert"] = [a["node"] for a in plan["alerts"]]
    return plan, state


def _ttf_key(item):
    """Seconds to the node's predicted failure; 0 for a node past its threshold without one (it may go
    at any moment), so the order among threshold evacuations stays worst first, then by name."""
    ttf = (item.get("prediction") or {}).get("time_to_failure_s")
    return ttf if ttf is not None else 0.0


def _check_input(health, prestage_on, evacuate_on):
    """The nodes of ``health``, once the policy levels and the health result are checked."""
    for name, level in (("prestage_on", prestage_on), ("evacuate_on", evacuate_on)):
        if level not in ("warning", "critical"):
            raise WatchError("%s must be warning or critical, got %r" % (name, level))
    if VERDICT_RANK[prestage_on] > VERDICT_RANK[evacuate_on]:
        raise WatchError("prestage_on (%s) must not be worse than evacuate_on (%s)" % (prestage_on, evacuate_on))
    nodes = (health or {}).get("nodes")
    if not isinstance(nodes, dict):
        raise WatchError("health must be the result of ipmi_health_info (a dict with 'nodes'), got %r"
                         % (type(health).__name__,))
    return nodes


def _check_predict(predict):
    """The prediction settings, checked: None (no prediction) or {evacuation_s, margin, nodes, slots}."""
    if not predict:
        return None
    try:
        out = {"evacuation_s": float(predict["evacuation_s"]), "margin": float(predict.get("margin", DEFAULT_MARGIN)),
               "nodes": {str(k): float(v) for k, v in (predict.get("nodes") or {}).items()},
               "slots": int(1 if predict.get("slots") is None else predict["slots"])}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise WatchError("predict must be {evacuation_s: seconds, margin: number, nodes: {node: seconds}, "
                         "slots: count}, got %r" % (predict,)) from None
    if out["evacuation_s"] <= 0 or out["margin"] <= 0 or out["slots"] < 1 or \
            any(v <= 0 for v in out["nodes"].values()):
        raise WatchError("predict: evacuation_s, margin, slots and every node's seconds must be positive, got %r"
                         % (predict,))
    return out


def _expected(nodes, predict, evacuate_on):
    """{node: {expected_s, own_s, wait_s}}: each node's own evacuation plus its wait for a migration
    slot behind the nodes more urgent than it (past evacuate_on first, then the soonest predicted
    failure). Nodes with neither wait behind all of those."""
    if predict is None:
        return {}
    inf = float("inf")

    def urgency(name):
        node = nodes[name] or {}
        if VERDICT_RANK.get(node.get("verdict"), 0) >= VERDICT_RANK[evacuate_on] and node.get("verdict") != "unknown":
            return (0, 0.0, name)
        ttf = (node.get("prediction") or {}).get("time_to_failure_s")
        return (1, ttf if ttf is not None else inf, name)

    own = {n: predict["nodes"].get(n, predict["evacuation_s"]) for n in nodes}
    order = sorted(nodes, key=urgency)
    waits = queue([(n, own[n]) for n in order if urgency(n)[1] != inf], predict["slots"])
    last = max([waits[n] + own[n] for n in waits] or [0.0])
    out = {}
    for n in nodes:
        wait = waits.get(n, last)
        out[n] = {"expected_s": round(own[n] + wait, 1), "own_s": round(own[n], 1), "wait_s": round(wait, 1)}
    return out


def _start_state(state, policy_id):
    """A deep copy of the previous watch-state; what nodes reported is forgotten when the rules changed."""
    state = json.loads(json.dumps(state or {}))
    state.setdefault("nodes", {})
    if policy_id is not None and state.get("policy_id") != policy_id:
        for ns in state["nodes"].values():
            ns.pop("sensors", None)
        state["policy_id"] = policy_id
    return state


def _observe(name, node, ns, now, history_len, sensor_forget_after):
    """This run's verdict of one node (``unknown`` when a sensor went missing), added to its history
    in ``ns`` (its watch-state); returns ``(node, item)``, item being the node's entry of the plan."""
    verdict = node.get("verdict", "unknown")
    if verdict not in VERDICT_RANK:
        raise WatchError("node %s: unknown verdict %r" % (name, verdict))
    lost = _lost_sensors(ns, node, now, sensor_forget_after)
    if lost and verdict == "ok":
        verdict = "unknown"
        node = dict(node, verdict=verdict,
                    reason="sensor%s %s reported in an earlier run %s missing now (BMC SDR changed, or a "
                           "sensor failed)" % ("s" if len(lost) > 1 else "", ", ".join(lost),
                                              "are" if len(lost) > 1 else "is"))
    hist = ns.setdefault("history", [])
    hist.append({"t": round(now, 3), "at": utc_iso(now), "verdict": verdict, "reason": node.get("reason")})
    del hist[:-history_len]
    item = {"node": name, "verdict": verdict, "reason": node.get("reason"), "fired": node.get("fired"),
            "sensors": _bad_sensors(node), "history": list(hist), "error": node.get("error")}
    if node.get("prediction"):
        item["prediction"] = node["prediction"]
    return node, item


def _predicted(item, predict, expected):
    """(True, why) when the node's prediction says it fails before it could be emptied with margin."""
    if predict is None or not item.get("prediction"):
        return False, None
    mine = expected.get(item["node"]) or {"expected_s": predict["evacuation_s"], "own_s": predict["evacuation_s"],
                                          "wait_s": 0.0}
    ok, why = should_evacuate(item["prediction"], mine["expected_s"], predict["margin"])
    item["prediction"] = dict(item["prediction"], expected_evacuation_s=mine["expected_s"],
                              own_evacuation_s=mine["own_s"], slot_wait_s=mine["wait_s"], margin=predict["margin"])
    return ok, "predicted: %s (%s)" % (why, item["prediction"].get("sensor"))


def _choose_action(plan, item, quarantined, prestaged, prestage_on, evacuate_on, release_after_ok, predict=None,
                   expected=None):
    """The action on one node and why; the node joins the plan's evacuate, prestage or release list."""
    name, verdict = item["node"], item["verdict"]
    bad = VERDICT_RANK[verdict] >= VERDICT_RANK[evacuate_on] and verdict != "unknown"
    why = "verdict %s" % verdict
    if not bad and verdict != "unknown":
        bad, predicted_why = _predicted(item, predict, expected or {})
        if bad:
            item["reason"] = why = predicted_why
    if name in quarantined and not bad:
        return "none", "quarantined (already evacuated; return it to service with playbooks/return.yml)"
    if bad:
        if name in quarantined:
            why += " (quarantined: any guest still on it is moved)"
            item["quarantined"] = True
        if name in prestaged:
            item["prestaged_target"] = prestaged[name]
        plan["evacuate"].append(item)
        return "evacuate", why
    if VERDICT_RANK[verdict] >= VERDICT_RANK[prestage_on] and verdict != "unknown":
        if name in prestaged:
            return "none", "already pre-staged on %s" % prestaged[name]
        plan["prestage"].append(item)
        return "prestage", "verdict %s" % verdict
    if verdict == "unknown":
        return "alert", "health unknown: never evacuate on missing data"
    if name in prestaged and release_after_ok:
        plan["release"].append({"node": name, "target": prestaged[name]})
        return "release", "back to ok: releasing the pre-staged target %s" % prestaged[name]
    return "none", "ok"


def _alert_due(last, name, node, item, action, why, now, realert_after):
    """The alert to plan for one node, or None: on a change of verdict (``last``: the last alert
    sent), and while it is not ok, again after ``realert_after`` s."""
    verdict = item["verdict"]
    if verdict == "ok" and last.get("verdict") in (None, "ok"):
        return None
    changed = last.get("verdict") != verdict
    stale = last.get("t") is None or now - last["t"] >= realert_after
    if not (changed or (verdict != "ok" and stale)):
        return None
    if verdict == "ok":
        subject = "pft: %s is healthy again" % name
    else:
        subject = "pft: %s is %s: %s" % (name, verdict, node.get("reason") or node.get("error") or "")
    return {"node": name, "verdict": verdict, "severity": SEVERITY[verdict],
            "subject": subject.strip().rstrip(":"), "action": action,
            "details": {"why": why, "reason": node.get("reason"), "fired": node.get("fired"),
                        "error": node.get("error"), "sensors": item["sensors"]}}


# -- the watch's reservations -------------------------------------------------
OWNER_PREFIX = "pft-"
# Who moves a guest: the watch (pre-stage or evacuation) or an operator (evacuate.yml). Each has its
# own reservation owner for the same guest, so one never takes over or frees the other's spare.
BY = ("watch", "operator")
# Why a reservation is held (spare_reservation's purpose): the watch releases only its own pre-stages.
PURPOSES = ("watch-prestage", "watch-evacuate", "operator-evacuate", "manual")
PRESTAGE = "watch-prestage"


def owner_for(node, guest, by="watch"):
    """The spare reservation owner of one guest's move: ``pft-<by>:<node>/<guest>``."""
    if by not in BY:
        raise WatchError("by must be one of %s, got %r" % (", ".join(BY), by))
    return "%s%s:%s/%s" % (OWNER_PREFIX, by, node, guest)


def purpose_for(action, by="watch"):
    """The reservation purpose of a (by, action): watch-prestage, watch-evacuate, operator-evacuate."""
    return "%s-%s" % (by, action)


def owner_node(owner):
    """The node of a ``pft-<by>:<node>/<guest>`` owner, or None for any other owner."""
    if not owner.startswith(OWNER_PREFIX) or "/" not in owner or ":" not in owner.split("/", 1)[0]:
        return None
    return owner[len(OWNER_PREFIX):].split("/", 1)[0].split(":", 1)[1]


def prestaged_targets(reservation_dir, clock=time.time, owners=False):
    """node -> target of the live reservations held by the watch's pre-stages (purpose
    ``watch-prestage``; with ``owners``: node -> list of their owners). Evacuations in progress,
    an operator's reservations and reservations of older pft versions (no purpose) are not
    pre-stages: the watch never releases them."""
    out, own = {}, {}
    for host, res in sorted(ReservationStore(reservation_dir, clock=clock).active().items()):
        node = owner_node(res.owner)
        if node and res.purpose == PRESTAGE:
            out.setdefault(node, host)
            own.setdefault(node, []).append(res.owner)
    return (out, own) if owners else out


def handled(directory, reservation_dir=None, clock=time.time, lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """What the watch already did, per node, before it samples: ``critical`` for a quarantined
    (evacuated) node, ``warning`` for one with a pre-staged target. ipmi_health_info's ``handled``
    takes it, so that such a node ends the sampling early only for something worse (a pre-staged
    node that turns critical, or is predicted to fail), never again for what was already done: a
    warning that ended every run after two samples left the node unwatched for most of each minute."""
    out = {}
    if reservation_dir:
        for node in prestaged_targets(reservation_dir, clock):
            out[node] = "warning"
    if os.path.isdir(directory):
        with StateDir(directory, lock_timeout=lock_timeout, clock=clock) as store:
            for node in store.read_json(QUARANTINE_FILE, {}).get("nodes", {}):
                out[node] = "critical"
    return out


def run_decide(directory, health, quarantined=None, prestaged=None, dry_run=False, clock=time.time,
               lock_timeout=DEFAULT_LOCK_TIMEOUT, reservation_dir=None, **policy):
    """decide() with the state directory: quarantine, verdict history, alert memory, and (from
    ``reservation_dir``) the pre-staged targets when ``prestaged`` is not given."""
    owners = {}
    if prestaged is None:
        prestaged, owners = prestaged_targets(reservation_dir, clock, owners=True) if reservation_dir else ({}, {})
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    if dry_run and not os.path.isdir(directory):
        plan = decide(health, quarantined or [], prestaged, {}, clock(), **policy)[0]
        return _with_owners(plan, prestaged, owners)
    with store:
        state = store.read_json(WATCH_STATE_FILE, {})
        if quarantined is None:
            quarantined = sorted(store.read_json(QUARANTINE_FILE, {}).get("nodes", {}))
        plan, new_state = decide(health, quarantined, prestaged, state, clock(), **policy)
        if not dry_run:
            store.write_json(WATCH_STATE_FILE, new_state)
    return _with_owners(plan, prestaged, owners)


def _with_owners(plan, prestaged, owners):
    plan["prestaged"] = prestaged
    for item in plan["release"]:
        item["owners"] = owners.get(item["node"], [])
    return plan
