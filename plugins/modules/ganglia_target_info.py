#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module ganglia_target_info: choose a live-migration target from Ganglia."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: ganglia_target_info
short_description: Choose a live-migration target for a failing node from Ganglia metrics
description:
  - Reads the Ganglia XML of a gmond or gmetad (the first of O(endpoints) that answers with valid XML)
    and ranks the O(candidates) as homes for the guest of the failing O(source) node.
  - A candidate is acceptable when it is known to Ganglia, is not the source, not excluded, not reserved by
    another evacuation, healthy (when O(health) is given), up (host C(TN <= host_down_factor x TMAX)), the
    criterion metrics it publishes itself are fresh (metric C(TN <= metric_stale_factor x TMAX)), it hosts
    no guest (O(guest_metric) is 0) and the memory Xen can give a new guest (O(free_memory_metric), from
    C(xl info) C(free_memory), not dom0's C(mem_free)) is at least O(memory_mb).
  - Acceptable candidates are ordered by lowest O(load_metric), then most Xen free memory, then name; the
    first is RV(target). Every candidate appears in RV(ranking) with its metrics and every reason that
    rejected it.
  - Ganglia resets a host's C(TN) whenever any host sends a metric on its behalf (C(gmetric -S)), so a dead
    node can look alive (ganglia/monitor-core PR#189); the freshness of the node's own criterion metrics
    catches that.
  - Read-only. To make two concurrent evacuations never get the same spare, reserve the chosen host with
    M(spare_reservation) (give it RV(accepted), best first) and pass O(reservation_dir) here so hosts
    reserved by other evacuations are reported as C(reserved).
  - Fails, naming every endpoint and its error, when Ganglia is unreachable or its XML is malformed or
    truncated; it never makes up a target.
version_added: "0.1.0"
author:
  - pft contributors
options:
  candidates:
    description: Hosts that may receive the guest (usually a group). Names are matched to Ganglia host names
      exactly, then by IP address, then by unique short name.
    type: list
    elements: str
    required: true
  source:
    description: The failing node whose guest is to be moved; never chosen.
    type: str
  memory_mb:
    description: Memory the guest needs on the target, in MiB, compared with O(free_memory_metric).
    type: int
    required: true
  exclude:
    description: Hosts never to choose (quarantined, in maintenance, known bad).
    type: list
    elements: str
    default: []
  health:
    description:
      - The registered result of C(ipmi_health_info) (a dict with C(nodes) mapping names to dicts with a
        C(verdict)), or a plain mapping of name to verdict.
      - When given, a candidate whose verdict is not in O(healthy_verdicts), or that has no verdict,
        is rejected as C(unhealthy).
    type: dict
  reservation_dir:
    description: Directory of M(spare_reservation). Hosts with a live reservation of another owner are
      rejected as C(reserved). Not read when unset.
    type: path
  reservation_owner:
    description: Owner whose own reservations in O(reservation_dir) do not count against a host.
    type: str
  fail_on_none:
    description: Fail, with RV(reason), when no candidate is acceptable, instead of returning RV(target) null.
    type: bool
    default: false
extends_documentation_fragment:
  - pft.attributes
  - pft.ganglia_read
  - pft.ganglia_rank
attributes:
  check_mode:
    support: full
    details: Read-only; check mode runs exactly as a normal run.
  diff_mode:
    support: none
requirements:
  - defusedxml (on the host that runs the module, usually the controller)
notes:
  - Run it on the controller (C(delegate_to) V(localhost), C(run_once)); it only talks to Ganglia.
  - Metrics are published on each node with M(ganglia_metric).
seealso:
  - module: spare_reservation
  - module: ganglia_metric
"""

EXAMPLES = r"""
- name: Find a home for the guest of the failing node
  ganglia_target_info:
    endpoints: [head:8651, node01:8649]
    candidates: "{{ groups['compute'] }}"
    source: "{{ failing_node }}"
    memory_mb: 4096
    exclude: "{{ pft_quarantined | default([]) }}"
    health: "{{ pft_health }}"
    reservation_dir: /var/lib/pft/reservations
    reservation_owner: "evacuate-{{ failing_node }}"
  delegate_to: localhost
  run_once: true
  register: pft_target

- name: Reserve the best acceptable spare atomically
  spare_reservation:
    hosts: "{{ pft_target.accepted }}"
    owner: "evacuate-{{ failing_node }}"
    ttl: 1800
  delegate_to: localhost
  run_once: true
  register: pft_spare
"""

RETURN = r"""
target:
  description: The chosen host (a name from O(candidates)), or null when none is acceptable.
  returned: always
  type: str
  sample: node07
reason:
  description: Why RV(target) was chosen, or why there is none (every reason with its hosts).
  returned: always
  type: str
  sample: "node07 chosen: lowest load_one (0.1), 8192 MiB Xen free >= 4096 MiB needed, no guest; 3 of 8 ..."
accepted:
  description: Acceptable candidates, best first (give these to M(spare_reservation)).
  returned: always
  type: list
  elements: str
  sample: [node07, node03]
rejected:
  description: For each rejection reason, the candidates it applies to. Reasons are C(unknown_to_ganglia),
    C(is_source), C(excluded), C(reserved), C(unhealthy), C(down), C(stale), C(missing_metric), C(hosts_guest)
    and C(insufficient_memory).
  returned: always
  type: dict
  sample: {hosts_guest: [node01], down: [node05]}
unknown:
  description: Candidates not found in the Ganglia XML.
  returned: always
  type: list
  elements: str
  sample: [node99]
ranking:
  description: Every candidate, accepted ones first in rank order, then rejected ones by name.
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: The candidate name as given.
      type: str
    ganglia_name:
      description: The Ganglia host it matched, or null.
      type: str
    ip:
      description: The host's IP address in Ganglia.
      type: str
    accepted:
      description: Whether the host is acceptable.
      type: bool
    rank:
      description: 1 for the best acceptable host; null when rejected.
      type: int
    reason:
      description: The first rejection reason, or null when accepted.
      type: str
    reasons:
      description: Every rejection reason that applies.
      type: list
      elements: str
    details:
      description: Human-readable explanations with the values that decided.
      type: list
      elements: str
    guests:
      description: Value of O(guest_metric).
      type: float
    free_memory_mb:
      description: Value of O(free_memory_metric).
      type: float
    load:
      description: Value of O(load_metric).
      type: float
    host_tn:
      description: Seconds since Ganglia last heard of the host.
      type: int
    host_tmax:
      description: The host's TMAX in seconds.
      type: int
  sample:
    - {host: node07, ganglia_name: node07, ip: 10.0.0.7, accepted: true, rank: 1, reason: null, reasons: [],
       details: ["acceptable: ..."], guests: 0, free_memory_mb: 8192, load: 0.1, host_tn: 3, host_tmax: 20}
endpoint:
  description: The endpoint whose XML was used.
  returned: always
  type: str
  sample: head:8651
endpoint_errors:
  description: Errors of the endpoints tried before RV(endpoint).
  returned: always
  type: list
  elements: str
  sample: ["Ganglia endpoint node01:8649: cannot connect: Connection refused"]
ganglia:
  description: About the XML read.
  returned: always
  type: dict
  sample: {source: gmond, version: 3.7.2, hosts: 42, bytes: 418000}
reservations:
  description: Live reservations found in O(reservation_dir), by host, with owner and expiry.
  returned: always
  type: dict
  sample: {node03: {owner: evacuate-node01, expires: 1795431000.0}}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.pft_ganglia import (  # noqa: E402
    DEFUSEDXML_IMPORT_ERROR,
    HAS_DEFUSEDXML,
    RANK_ARGS,
    READ_ARGS,
    GangliaError,
    check_read_args,
    criteria_from_params,
    rank_targets,
    read_ganglia,
)
from ansible.module_utils.pft_reservation import ReservationError, ReservationStore  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            READ_ARGS,
            **RANK_ARGS,
            candidates=dict(type="list", elements="str", required=True),
            source=dict(type="str"),
            memory_mb=dict(type="int", required=True),
            exclude=dict(type="list", elements="str", default=[]),
            health=dict(type="dict"),
            reservation_dir=dict(type="path"),
            reservation_owner=dict(type="str"),
            fail_on_none=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not HAS_DEFUSEDXML:
        module.fail_json(msg=missing_required_lib("defusedxml"), exception=str(DEFUSEDXML_IMPORT_ERROR))
    p = module.params
    bad = check_read_args(p)
    if bad:
        module.fail_json(msg=bad)
    if p["memory_mb"] < 0:
        module.fail_json(msg="memory_mb must be >= 0, got %d" % p["memory_mb"])

    reserved = {}
    reservations = {}
    if p["reservation_dir"]:
        try:
            live = ReservationStore(p["reservation_dir"]).active()
        except ReservationError as exc:
            module.fail_json(msg="reservation_dir: %s" % exc)
        for host, res in live.items():
            reservations[host] = res.as_dict()
            if res.owner != p["reservation_owner"]:
                reserved[host] = res.owner

    try:
        criteria = criteria_from_params(p)
        snapshot, endpoint, errors = read_ganglia(p["endpoints"], timeout=p["timeout"], max_bytes=p["max_bytes"],
                                                  default_port=p["default_port"], metrics=criteria.metric_names())
        result = rank_targets(snapshot, p["candidates"], source=p["source"], memory_mb=p["memory_mb"],
                              exclude=p["exclude"], reserved=reserved, health=p["health"], criteria=criteria)
    except GangliaError as exc:
        module.fail_json(msg=str(exc), target=None)

    result.update(
        changed=False,
        endpoint=endpoint,
        endpoint_errors=errors,
        ganglia=dict(source=snapshot.source, version=snapshot.version, hosts=len(snapshot.hosts),
                     bytes=snapshot.size),
        reservations=reservations,
    )
    if result["target"] is None and p["fail_on_none"]:
        module.fail_json(msg=result["reason"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
