# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""How long emptying a node takes: the measured migration throughputs the watch keeps in its state
directory (``throughput.json``), and each node's expected evacuation from its guests' memory.

Prediction (pft_predict.should_evacuate) compares a node's time to failure with this number, so it
is made from what pft measured on this cluster, not from a constant:

* ``record(state_dir, target, mib, seconds)`` after every completed migration (act_on_guest.yml):
  the move's MiB/s is kept per target, the last few of each;
* ``expect(state_dir, guests, memory_mb, ...)`` before the watch samples: per node, the overhead
  from detection to the first ``xl migrate`` plus each guest's memory over the slowest throughput
  remembered for the targets (any target: the target is not chosen yet), or over the conservative
  default before any move was measured; a node whose guests are unknown gets the fallback.

The wait of a node behind others in the migration slots (pft_watch_max_parallel) depends on which
nodes go bad together; pft_decide adds it when it decides (pft_predict.queue)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.module_utils.pft_common import DEFAULT_LOCK_TIMEOUT, check_name
from ansible.module_utils.pft_predict import expected_evacuation, remember_throughput, throughput_of
from ansible.module_utils.pft_state import StateDir, WatchError

THROUGHPUT_FILE = "throughput.json"
KEEP = 5            # moves remembered per target


def _load(store):
    data = store.read_json(THROUGHPUT_FILE, {"targets": {}})
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise WatchError("%s/%s is not a throughput record ({targets: {node: [MiB/s, ...]}})"
                         % (store.directory, THROUGHPUT_FILE))
    return data


def record(state_dir, target, mib, seconds, dry_run=False, lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """Remember one completed move of ``mib`` MiB in ``seconds`` to ``target``. Returns
    {changed, target, mib_per_s, remembered: {target: [MiB/s, ...]} as kept after it, warning}.
    In ``dry_run`` nothing is written, not even the state directory."""
    check_name("target", target, error=WatchError)
    if not mib or not seconds or float(mib) <= 0 or float(seconds) <= 0:
        raise WatchError("a measured move needs positive mib and seconds, got mib=%r seconds=%r" % (mib, seconds))
    warning = None
    data = {"targets": {}}
    if not (dry_run and not os.path.isdir(state_dir)):
        with StateDir(state_dir, lock_timeout=lock_timeout) as store:
            try:
                data = _load(store)
            except WatchError as exc:      # a torn or foreign file: start the record again, and say so
                warning = "%s: started again" % exc
            data["targets"] = remember_throughput(data["targets"], target, float(mib), float(seconds), keep=KEEP)
            if not dry_run:
                store.write_json(THROUGHPUT_FILE, data)
    else:
        data["targets"] = remember_throughput(data["targets"], target, float(mib), float(seconds), keep=KEEP)
    return {"changed": not dry_run, "target": target, "mib_per_s": round(float(mib) / float(seconds), 3),
            "remembered": data["targets"], "warning": warning}


def read(state_dir, lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """{target: [MiB/s, ...]} remembered so far ({} before any move, or with no state directory yet)."""
    if not os.path.exists(os.path.join(state_dir, THROUGHPUT_FILE)):
        return {}
    with StateDir(state_dir, lock_timeout=lock_timeout) as store:
        return _load(store)["targets"]


def expect(remembered, guests, memory_mb, overhead_s, default_mib_per_s, fallback_s):
    """Each node's expected evacuation, without any wait for a migration slot.

    ``remembered``: :func:`read`'s answer; ``guests``: {node: [guest, ...] or None (unknown)};
    ``memory_mb``: {node: {guest: MiB}}. Returns {node: {expected_s, basis, guests: [...]}}."""
    rates = throughput_of(remembered)
    slowest = min(rates.values()) if rates else None
    plan = {"*": slowest} if slowest else {}
    out = {}
    for node, names in sorted((guests or {}).items()):
        if names is None:
            out[node] = {"expected_s": float(fallback_s), "basis": "fallback: guests unknown", "guests": []}
            continue
        mem = (memory_mb or {}).get(node) or {}
        listed = [{"name": g, "memory_mib": mem.get(g) or 0} for g in names]
        unknown = [g["name"] for g in listed if not g["memory_mib"]]
        if unknown:
            out[node] = {"expected_s": float(fallback_s), "guests": [],
                         "basis": "fallback: memory of %s unknown" % ", ".join(unknown)}
            continue
        est = expected_evacuation(listed, throughput=plan, default_mib_per_s=default_mib_per_s, overhead_s=overhead_s)
        basis = "measured" if slowest else "default throughput"
        out[node] = {"expected_s": est["expected_s"], "basis": basis if listed else "no guest", "guests": est["guests"]}
    return out
