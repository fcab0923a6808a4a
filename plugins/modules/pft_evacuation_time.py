#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_evacuation_time
short_description: Expected time to empty each node, from the migration throughputs pft measured
description:
  - Prediction evacuates a node when its time to failure is shorter than a margin times the time its
    guests take to leave it. This module gives that time per node, and keeps what it is made from.
  - O(state=expect) returns, per node of O(guests), the overhead O(overhead) (detection to the first
    C(xl migrate)) plus each guest's memory (O(memory_mb)) over the slowest migration throughput
    remembered in O(state_dir)C(/throughput.json), or over O(default_throughput) before any move was
    measured. A node whose guests or guest memory are unknown gets O(fallback). The wait for a
    migration slot behind other nodes is added by M(pft_watch_decide), which knows which nodes go
    bad together.
  - O(state=measured) remembers one completed move (O(target), O(mib), O(seconds)). The last few
    throughputs per target are kept, under the state directory's lock.
  - A C(throughput.json) that cannot be parsed is a warning, never a failure. O(state=expect) then plans with
    O(default_throughput), and O(state=measured) starts the record again.
version_added: "0.2.0"
author:
  - pft contributors
options:
  state:
    description: Estimate (V(expect)) or remember one measured move (V(measured)).
    type: str
    choices: [expect, measured]
    default: expect
  nodes:
    description: The nodes to estimate; those missing from O(guests) get O(fallback). Default, the keys of O(guests).
    type: list
    elements: str
  guests:
    description:
      - Each node mapped to the names of its guests, or to null when they are not known
        (RV(ganglia_placement_info#module:guests) of M(ganglia_placement_info)). Required with O(state=expect).
    type: dict
  memory_mb:
    description: Each node mapped to {guest, MiB} (RV(ganglia_placement_info#module:maxmem_mb)).
    type: dict
    default: {}
  overhead:
    description: Seconds from the detection to the first C(xl migrate) of the node (measured on the watch's runs).
    type: float
    default: 15
  default_throughput:
    description: MiB/s to plan with before any move was measured (conservative).
    type: float
    default: 4
  fallback:
    description: Expected seconds for a node whose guests or their memory are unknown.
    type: float
    default: 60
  margin:
    description: RV(within) is this many times the expected evacuation.
    type: float
    default: 2
  target:
    description: The node a measured move went to (O(state=measured)).
    type: str
  mib:
    description: MiB the measured move carried (the guest's memory).
    type: float
  seconds:
    description: Seconds the measured move took, from C(xl migrate) to the guest running on the target.
    type: float
extends_documentation_fragment:
  - pft.attributes
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: O(state=expect) only reads. O(state=measured) reports the throughput it would keep and writes nothing.
  diff_mode:
    support: none
notes:
  - Run it on the controller.
seealso:
  - module: ipmi_health_info
  - module: pft_watch_decide
  - module: ganglia_placement_info
"""

EXAMPLES = r"""
- name: Where the guests run, and their memory
  ganglia_placement_info:
    endpoints: ["head:8649"]
    nodes: "{{ groups['compute'] }}"
  register: pft_where

- name: Expected evacuation of each node
  pft_evacuation_time:
    guests: "{{ pft_where.guests }}"
    memory_mb: "{{ pft_where.maxmem_mb }}"
  register: pft_expected

- name: Remember a completed move
  pft_evacuation_time:
    state: measured
    target: compute3
    mib: 160
    seconds: 29.4
"""

RETURN = r"""
nodes:
  description: Per node, the expected evacuation in seconds, its basis, and each guest's share.
  returned: when state is expect
  type: dict
  sample:
    compute1:
      expected_s: 55.0
      basis: measured
      guests: [{name: guest1, memory_mib: 160, mib_per_s: 4.0, seconds: 40.0, basis: "measured (any target)"}]
expected:
  description:
    - Per node, its expected evacuation in seconds (C(expected_s) of RV(nodes)), for
      O(pft_watch_decide#module:predict.nodes) of M(pft_watch_decide).
  returned: when state is expect
  type: dict
  sample: {compute1: 55.0}
within:
  description: Per node, O(margin) times its expected evacuation (the bound a predicted failure must be under).
  returned: when state is expect
  type: dict
  sample: {compute1: 110.0}
remembered:
  description: The throughputs remembered, MiB/s per target (C(*) for any target), newest last.
  returned: always
  type: dict
  sample: {compute3: [5.4, 5.1], "*": [5.4, 5.1]}
mib_per_s:
  description: The measured move's throughput.
  returned: when state is measured
  type: float
  sample: 5.44
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_evacuation import expect, read, record  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["expect", "measured"], default="expect"),
            nodes=dict(type="list", elements="str"),
            guests=dict(type="dict"),
            memory_mb=dict(type="dict", default={}),
            overhead=dict(type="float", default=15.0),
            default_throughput=dict(type="float", default=4.0),
            fallback=dict(type="float", default=60.0),
            margin=dict(type="float", default=2.0),
            target=dict(type="str"),
            mib=dict(type="float"),
            seconds=dict(type="float"),
            **STATE_ARGS
        ),
        required_if=[("state", "expect", ("guests",)), ("state", "measured", ("target", "mib", "seconds"))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        for name in ("overhead", "default_throughput", "fallback", "margin"):
            if p[name] < 0 or (name != "overhead" and p[name] == 0):
                bound = "positive" if name != "overhead" else ">= 0"
                raise WatchError("%s must be %s, got %r" % (name, bound, p[name]))
        if p["state"] == "measured":
            out = record(p["state_dir"], p["target"], p["mib"], p["seconds"], dry_run=module.check_mode,
                         lock_timeout=p["lock_timeout"])
            if out["warning"]:
                module.warn(out["warning"])
            module.exit_json(changed=out["changed"], mib_per_s=out["mib_per_s"], remembered=out["remembered"])
        try:
            remembered = read(p["state_dir"], lock_timeout=p["lock_timeout"])
        except WatchError as exc:   # never a reason not to sample: plan with the default throughput
            module.warn("%s: planning with default_throughput" % exc)
            remembered = {}
        guests = dict(p["guests"])
        for node in p["nodes"] or ():
            guests.setdefault(node, None)
        nodes = expect(remembered, guests, p["memory_mb"], p["overhead"], p["default_throughput"], p["fallback"])
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, "pft_evacuation_time", exc, clean=(WatchError,))
    module.exit_json(changed=False, nodes=nodes, remembered=remembered,
                     expected={n: v["expected_s"] for n, v in nodes.items()},
                     within={n: round(v["expected_s"] * p["margin"], 1) for n, v in nodes.items()})


if __name__ == "__main__":
    main()
