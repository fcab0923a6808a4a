#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module pft_watch_select: step 3 of the watch (placement, target, reservation, journal) in one run."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pft_watch_select
short_description: Find the guests of the nodes to act on, reserve a target for each and journal the work
description:
  - Step 3 of the watch pipeline (and of C(evacuate.yml)), in one module run on the controller. It does
    what M(ganglia_placement_info), M(pft_quarantine) O(state=query), M(ganglia_target_info),
    M(spare_reservation) and M(pft_audit) O(state=started) do, with one Ganglia read; each of those
    module runs sat between detection and migration (the watch's detection latency).
  - For each entry of O(work) (a node and what to do about it) it finds the node's guests, from
    O(placements) when given (a live C(xl list), as M(xen_domain_info) gives it) or else from the
    guest metrics the node's own dom0 publishes to Ganglia (as M(ganglia_placement_info) reads them).
    A node whose guests are not known is returned in RV(unlisted) with the reason; its guests are never
    guessed and nothing is done about them.
  - For each guest it ranks the O(candidates) as M(ganglia_target_info) does (no guest, enough Xen free
    memory, healthy in O(health), fresh metrics, least load), never choosing a quarantined node or one
    reserved by another evacuation, and reserves the best acceptable one as M(spare_reservation) does.
    A pre-staged target (C(cause.prestaged_target)) comes first while it is still acceptable.
  - With O(journal) it writes the journal entry of each guest's work, as M(pft_audit) O(state=started) does
    (node, guest, target, the sensors and verdict history that caused it, the ranking), and returns its id
    in RV(selected). A guest no node can take is appended to the audit log with outcome C(no-target).
  - Ganglia unreachable is not a failure. Without O(placements) every node is then in RV(unlisted);
    with them every guest is in RV(no_target), with Ganglia's error.
version_added: "0.1.0"
author:
  - pft contributors
options:
  work:
    description:
      - The nodes to act on, worst first. Each item has C(node), C(action) (V(evacuate) or V(prestage)) and
        C(cause), the decision's evidence for the node (an item of M(pft_watch_decide)'s C(evacuate) or
        C(prestage) list; C(verdict), C(reason), C(fired), C(sensors), C(history), C(prestaged_target)).
    type: list
    elements: dict
    required: true
  candidates:
    description: Nodes that may receive a guest (the compute group). The node being emptied never does.
    type: list
    elements: str
    required: true
  placements:
    description:
      - Node to the names of the domains it runs (null when it could not be asked), from a live listing.
      - When not given, the guests come from Ganglia (O(names_metric), O(memory_metric)).
    type: dict
  guest_memory:
    description: With O(placements), node to a mapping of guest name to its maxmem in MiB.
    type: dict
  placement_unknown:
    description: With O(placements), node to why its listing is missing (used in RV(unlisted)).
    type: dict
  health:
    description:
      - The registered result of M(ipmi_health_info); a candidate whose verdict is not in O(healthy_verdicts)
        is rejected as C(unhealthy). Not checked when unset.
    type: dict
  names_metric:
    description: The metric with a node's guest names (published by its dom0).
    type: str
    default: pft_guest_names
  memory_metric:
    description: The metric with a node's C(guest=maxmem_mb) list (published by its dom0).
    type: str
    default: pft_guest_maxmem_mb
  reservation_ttl:
    description: Seconds an evacuation's reservation lives if nobody releases it.
    type: int
    default: 1800
  prestage_ttl:
    description: Seconds a pre-stage's reservation lives if nobody releases it.
    type: int
    default: 3600
  by:
    description:
      - Who moves the guests. V(watch) (C(watch.yml)) or V(operator) (C(evacuate.yml)). It names each reservation's
        owner, C(pft-<by>:<node>/<guest>), and its purpose, C(<by>-<action>) (see M(spare_reservation)), so the
        watch and an operator never take over or free each other's spare.
    type: str
    choices: [watch, operator]
    default: watch
  journal:
    description:
      - Journal each guest's work in O(state_dir)C(/journal/) (a killed run leaves it for the next run to
        reconcile) and append the guests with no target to the audit log.
    type: bool
    default: true
extends_documentation_fragment:
  - pft.attributes
  - pft.ganglia_read
  - pft.ganglia_rank
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: >-
      Reads Ganglia, the quarantine and the reservations, and predicts the targets (two guests never get the same
      one); reserves nothing and writes no journal entry or audit line.
  diff_mode:
    support: none
requirements:
  - defusedxml (on the controller)
notes:
  - Run it on the controller (the watch's localhost play). The reservations live in
    O(state_dir)C(/reservations), where M(spare_reservation) and M(pft_watch_decide) read them.
seealso:
  - module: pft_watch_decide
  - module: ganglia_target_info
  - module: spare_reservation
  - module: pft_audit
"""

EXAMPLES = r"""
- name: Decide
  pft_watch_decide:
    health: "{{ pft_health }}"
    reservation_dir: /var/lib/pft/reservations
  register: pft_plan

- name: Select, reserve and journal the evacuation of the failing node (guests from Ganglia)
  pft_watch_select:
    work:
      - node: "{{ failing_node }}"
        action: evacuate
        cause: "{{ pft_plan.evacuate | selectattr('node', 'equalto', failing_node) | first }}"
    candidates: "{{ groups['compute'] }}"
    endpoints: [head:8649]
    health: "{{ pft_health }}"
  register: pft_selected

- name: Evacuate a node for maintenance (guests from a live listing)
  pft_watch_select:
    work:
      - node: node07
        action: evacuate
        cause: {verdict: maintenance, reason: "admin", sensors: {}, history: []}
    candidates: "{{ groups['compute'] }}"
    endpoints: [head:8649]
    placements: {node07: [job42-rank3]}
    guest_memory: {node07: {job42-rank3: 4096}}
"""

RETURN = r"""
selected:
  description:
    - The guests to act on, in the order of O(work), each with its reserved target.
    - C(record_id) is its journal entry (null with O(journal=false)); C(owner) holds the reservation.
    - C(memory_mb) is the guest's memory as Ganglia published it (the measured move's size, for
      M(pft_evacuation_time)).
  returned: always
  type: list
  elements: dict
  sample:
    - node: compute1
      action: evacuate
      guest: guest1
      target: compute3
      owner: pft-compute1/guest1
      record_id: 20261205T101500Z-compute1-1a2b3c
      memory_mb: 160
      ganglia_endpoint: 10.0.0.1:8649
      cause: {verdict: critical, reason: "CPU1 Temp 92 >= 85"}
      ranking: [{host: compute3, accepted: true, reasons: []}]
sources:
  description: The nodes of RV(selected), in order, each once (the queue of the migration play).
  returned: always
  type: list
  elements: str
  sample: [compute1]
no_target:
  description: The guests no node can take, with C(node), C(guest), C(action), C(cause), C(ranking) and C(msg).
  returned: always
  type: list
  elements: dict
unlisted:
  description: Node to why its guests are not known; nothing is done about those nodes.
  returned: always
  type: dict
  sample: {compute2: "metric pft_guest_names is stale: TN 400 s > 2 x TMAX 60 s"}
placements:
  description: The guest names of each node of O(work) that were used (null when unknown).
  returned: always
  type: dict
  sample: {compute1: [guest1]}
quarantined:
  description: The quarantined nodes, never chosen.
  returned: always
  type: list
  elements: str
endpoint:
  description: The Ganglia endpoint that answered (null when none did).
  returned: always
  type: str
endpoint_errors:
  description: Errors of the endpoints tried before it.
  returned: always
  type: list
  elements: str
"""


from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_ganglia import (  # noqa: E402
    DEFUSEDXML_IMPORT_ERROR,
    HAS_DEFUSEDXML,
    RANK_ARGS,
    READ_ARGS,
    check_read_args,
    criteria_from_params,
)
from ansible.module_utils.pft_select import select_work  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            READ_ARGS,
            **RANK_ARGS,
            work=dict(type="list", elements="dict", required=True),
            candidates=dict(type="list", elements="str", required=True),
            placements=dict(type="dict"),
            guest_memory=dict(type="dict"),
            placement_unknown=dict(type="dict"),
            health=dict(type="dict"),
            names_metric=dict(type="str", default="pft_guest_names"),
            memory_metric=dict(type="str", default="pft_guest_maxmem_mb"),
            reservation_ttl=dict(type="int", default=1800),
            prestage_ttl=dict(type="int", default=3600),
            journal=dict(type="bool", default=True),
            by=dict(type="str", choices=["watch", "operator"], default="watch"),
            **STATE_ARGS
        ),
        supports_check_mode=True,
    )
    if not HAS_DEFUSEDXML:
        module.fail_json(msg=missing_required_lib("defusedxml"), exception=str(DEFUSEDXML_IMPORT_ERROR))
    p = module.params
    bad = check_read_args(p)
    for key in ("reservation_ttl", "prestage_ttl"):
        if p[key] <= 0:
            bad = bad or "%s must be > 0 seconds, got %d" % (key, p[key])
    if bad:
        module.fail_json(msg=bad)
    criteria = criteria_from_params(p)
    try:
        out = select_work(p["work"], p["candidates"], p["state_dir"], endpoints=p["endpoints"],
                          placements=p["placements"], guest_memory=p["guest_memory"],
                          placement_unknown=p["placement_unknown"], health=p["health"], criteria=criteria,
                          names_metric=p["names_metric"], memory_metric=p["memory_metric"],
                          reservation_ttl=p["reservation_ttl"], prestage_ttl=p["prestage_ttl"],
                          journal=p["journal"], dry_run=module.check_mode, lock_timeout=p["lock_timeout"],
                          by=p["by"],
                          timeout=p["timeout"], max_bytes=p["max_bytes"], default_port=p["default_port"])
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, 'pft_watch_select', exc, clean=(WatchError,))
    out["msg"] = "%d guest(s) to act on%s%s" % (
        len(out["selected"]), "; no target for %s" % ", ".join("%s of %s" % (m["guest"], m["node"])
                                                             for m in out["no_target"]) if out["no_target"] else "",
        "; guests unknown on %s" % ", ".join(sorted(out["unlisted"])) if out["unlisted"] else "")
    module.exit_json(**out)


if __name__ == "__main__":
    main()
