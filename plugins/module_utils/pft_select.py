# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Step 3 of the watch, in one pass on the controller: which guests the bad nodes run, a target for
each, its reservation, and the journal entry of the work.

The watch used to do this in five module runs (placement from Ganglia, the quarantine list, a ranking
per guest, a reservation per guest, then the journal entry on the way to the source node). Each run
costs an interpreter start on the controller, and all of them sit between detection and the start of
the migration (docs/performance.md, P2). :func:`select_work` does the same steps with one Ganglia read:
the placement and the ranking come from the same snapshot.

Nothing here is new logic: placement is :func:`pft_ganglia.guest_placement`, ranking
:func:`pft_ganglia.rank_targets`, reservations :class:`pft_reservation.ReservationStore`, reservation owners
:func:`pft_decide.owner_for`, quarantine and journal :mod:`pft_state`. ``dry_run`` (check mode)
reserves and journals nothing and returns the same answer.
"""
from __future__ import annotations

import re
import time

from ansible.module_utils.pft_common import DEFAULT_LOCK_TIMEOUT, state_paths
from ansible.module_utils.pft_decide import BY, owner_for, purpose_for
from ansible.module_utils.pft_ganglia import (
    DEFAULT_GUEST_MEMORY_METRIC,
    DEFAULT_GUEST_NAMES_METRIC,
    Criteria,
    GangliaError,
    guest_placement,
    rank_targets,
    read_ganglia,
)
from ansible.module_utils.pft_reservation import ReservationError, ReservationStore
from ansible.module_utils.pft_state import WatchError, audit, quarantine

ACTIONS = ("evacuate", "prestage")
TRANSIENT_RE = re.compile(r".*--(incoming|migratedaway)$")
UNLISTED = "its domains could not be listed (node unreachable?)"


def _work_items(work):
    """Check the work list: [{node, action, cause}] with cause the decision's evidence for the node."""
    out = []
    for i, w in enumerate(work or []):
        if not isinstance(w, dict) or not w.get("node") or w.get("action") not in ACTIONS:
            raise WatchError("work[%d] must be {node, action (evacuate|prestage), cause}, got %r" % (i, w))
        cause = dict(w.get("cause") or {})
        cause.setdefault("node", w["node"])
        out.append({"node": str(w["node"]), "action": w["action"], "cause": cause})
    return out


def select_work(work, candidates, state_dir, endpoints=None, read=None, placements=None, guest_memory=None,
                placement_unknown=None, health=None, criteria=None, names_metric=DEFAULT_GUEST_NAMES_METRIC,
                memory_metric=DEFAULT_GUEST_MEMORY_METRIC, reservation_ttl=1800, prestage_ttl=3600,
                journal=True, dry_run=False, clock=time.time, lock_timeout=DEFAULT_LOCK_TIMEOUT, by="watch",
                **read_args):
    """Pair each (node, action) of ``work`` with its guests and a reserved target.

    ``placements`` (node -> guest names, None when unknown) and ``guest_memory`` (node -> {guest: MiB})
    come from a live listing when given (evacuate.yml); otherwise from the dom0s' own Ganglia metrics
    in the same snapshot as the ranking (watch.yml). ``read_args`` (timeout, max_bytes, default_port) go
    to ``read``, which is :func:`read_ganglia` unless given (tests); ``criteria`` carries the liveness
    factors for the placement too. ``by`` (``watch`` or ``operator``) is who moves the guests: it
    names the reservation owner (``pft-<by>:<node>/<guest>``) and its purpose (``<by>-<action>``).

    Returns a dict:
      ``selected``   the guests to act on, in the order of ``work`` (worst node first), each with node,
                     action, cause, guest, owner, target, ranking, ganglia_endpoint and record_id (its
                     journal entry, when ``journal``);
      ``sources``    their nodes, in that order, each once;
      ``no_target``  the guests no node can take: node, guest, action, cause, ranking, msg (recorded in
                     the audit log as outcome ``no-target`` unless ``dry_run``);
      ``unlisted``   node -> why its guests are not known (never guessed: those nodes are left alone);
      ``placements``, ``quarantined``, ``endpoint``, ``endpoint_errors``, ``changed``.
    """
    items_in = _work_items(work)
    if by not in BY:
        raise WatchError("by must be one of %s, got %r" % (", ".join(BY), by))
    criteria = criteria or Criteria()
    reservation_dir = state_paths(state_dir)["reservations"]
    result = dict(changed=False, selected=[], sources=[], no_target=[], unlisted={}, placements={},
                  quarantined=[], endpoint=None, endpoint_errors=[])
    if not items_in:
        return result
    candidates = [str(c) for c in candidates]
    nodes = sorted({w["node"] for w in items_in})

    snapshot, ganglia_error = None, None
    read = read or read_ganglia
    try:
        metrics = tuple(criteria.metric_names()) + ((names_metric, memory_metric) if placements is None else ())
        snapshot, result["endpoint"], result["endpoint_errors"] = read(endpoints, metrics=metrics, **read_args)
    except GangliaError as exc:
        ganglia_error = str(exc)

    # where the guests run
    if placements is not None:
        known = {n: (list(placements.get(n)) if placements.get(n) is not None else None) for n in nodes}
        memory = {n: dict((guest_memory or {}).get(n) or {}) for n in nodes}
        why_unknown = dict(placement_unknown or {})
    elif snapshot is not None:
        placed, why_unknown = guest_placement(snapshot, nodes, names_metric=names_metric, memory_metric=memory_metric,
                                              host_down_factor=criteria.host_down_factor,
                                              metric_stale_factor=criteria.metric_stale_factor)
        known = {n: ([g["name"] for g in p] if p is not None else None) for n, p in placed.items()}
        memory = {n: {g["name"]: g["maxmem_mb"] for g in p} for n, p in placed.items() if p is not None}
    else:
        known = {n: None for n in nodes}
        memory = {}
        why_unknown = {n: ganglia_error for n in nodes}
    result["placements"] = known
    for n in nodes:
        if known.get(n) is None:
            result["unlisted"][n] = why_unknown.get(n) or UNLISTED

    # nodes never to receive a guest
    result["quarantined"] = sorted(quarantine(state_dir, "query", dry_run=True, clock=clock,
                                              lock_timeout=lock_timeout)["quarantined"])
    store = ReservationStore(reservation_dir, lock_timeout=lock_timeout, clock=clock)
    # what this call reserved, by host: in a dry run the store is not written, so the ranking of the
    # next guest learns of them only from here (as "reserved", so they are never accepted twice)
    booked = {}

    for w in items_in:
        for guest in known.get(w["node"]) or []:
            if TRANSIENT_RE.match(guest):
                continue
            mem = (memory.get(w["node"]) or {}).get(guest)
            item = dict(w, guest=guest, owner=owner_for(w["node"], guest, by), target=None, ranking=[],
                        ganglia_endpoint=result["endpoint"], record_id=None, memory_mb=mem)
            msg = None
            if snapshot is None:
                msg = "no target can be chosen: %s" % ganglia_error
            elif mem is None:
                msg = "the memory of %s on %s is not known" % (guest, w["node"])
            else:
                try:
                    live = store.active()
                except ReservationError as exc:
                    raise WatchError("reservation_dir: %s" % exc) from exc
                reserved = {h: r.owner for h, r in live.items() if r.owner != item["owner"]}
                reserved.update({h: o for h, o in booked.items() if o != item["owner"]})
                rank = rank_targets(snapshot, candidates, source=w["node"], memory_mb=int(mem),
                                    exclude=result["quarantined"], reserved=reserved, health=health,
                                    criteria=criteria)
                item["ranking"] = rank["ranking"]
                accepted = list(rank["accepted"])
                pre = w["cause"].get("prestaged_target")
                hosts = ([pre] if pre and pre in accepted else []) + [h for h in accepted if h != pre]
                if not hosts:
                    msg = rank.get("reason") or "no acceptable target"
                else:
                    ttl = prestage_ttl if w["action"] == "prestage" else reservation_ttl
                    try:
                        got = store.reserve(hosts, item["owner"], ttl=ttl, dry_run=dry_run,
                                            purpose=purpose_for(w["action"], by))
                    except ReservationError as exc:
                        raise WatchError("reservation_dir: %s" % exc) from exc
                    if got["host"] is None:
                        msg = got.get("reason") or "every acceptable target is reserved"
                    else:
                        item["target"] = got["host"]
                        booked[got["host"]] = item["owner"]
                        result["changed"] = result["changed"] or bool(got["changed"])
            if msg:
                miss = dict(node=w["node"], guest=guest, action=w["action"], cause=w["cause"],
                            ranking=item["ranking"], msg=msg)
                result["no_target"].append(miss)
                if journal:
                    audit(state_dir, "event", outcome="no-target", dry_run=dry_run, clock=clock,
                          lock_timeout=lock_timeout, record=_record(item, msg=msg))
                    result["changed"] = result["changed"] or not dry_run
                continue
            if journal:
                started = audit(state_dir, "started", dry_run=dry_run, clock=clock, lock_timeout=lock_timeout,
                                record=_record(item))
                item["record_id"] = started["id"]
                result["changed"] = result["changed"] or bool(started["changed"])
            result["selected"].append(item)
            if w["node"] not in result["sources"]:
                result["sources"].append(w["node"])
    return result


def _record(item, msg=None):
    """The journal entry (or the no-target event) of one guest: the evidence of its decision."""
    cause = item["cause"]
    rec = dict(action=item["action"], node=item["node"], guest=item["guest"], target=item["target"],
               owner=item["owner"], verdict=cause.get("verdict"), reason=cause.get("reason"),
               fired=cause.get("fired"), sensors=cause.get("sensors") or {}, verdict_history=cause.get("history") or [],
               ranking=item["ranking"], ganglia_endpoint=item["ganglia_endpoint"])
    if cause.get("prediction"):
        rec["prediction"] = cause["prediction"]
    if msg is not None:
        rec["msg"] = msg
    return rec
