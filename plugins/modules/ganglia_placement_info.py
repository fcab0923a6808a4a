#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module ganglia_placement_info: which guests each node runs, from Ganglia."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: ganglia_placement_info
short_description: Read which guests each Xen node runs from the nodes' own Ganglia metrics
description:
  - Reads the Ganglia XML of a gmond or gmetad (the first of O(endpoints) that answers with valid XML) and
    returns, for each of O(nodes), the guests that node's dom0 last published (O(names_metric)) with each
    guest's maximum memory (O(memory_metric)). The metrics are published by roles/xen_host's
    C(pft-xen-metrics) timer, or by M(ganglia_metric).
  - It lets the watch learn where the guests run from one read on the controller, in a fraction of a second,
    instead of running M(xen_domain_info) on every dom0 before it can start sampling.
  - A node whose guests cannot be known is C(null) in RV(guests), with the reason in RV(unknown). That
    happens when Ganglia does not know it, the host is down (C(TN > host_down_factor x TMAX)), a metric is
    missing, stale (C(TN > metric_stale_factor x TMAX)) or malformed, or the two metrics disagree. Unknown
    never means "no guests".
  - The metrics may be up to one publishing interval old. Whoever acts on a placement must check it on the
    node; M(xen_migrate) fails, and changes nothing, when the guest does not run on its source.
  - Read-only. Fails, naming every endpoint and its error, when Ganglia is unreachable or its XML is malformed.
version_added: "0.2.0"
author:
  - pft contributors
options:
  nodes:
    description: The nodes to report (usually the compute group). Names are matched to Ganglia host names
      exactly, then by IP address, then by unique short name.
    type: list
    elements: str
    required: true
  names_metric:
    description: Metric each node publishes with the comma-separated names of its guests.
    type: str
    default: pft_guest_names
  memory_metric:
    description: Metric each node publishes with each guest's maximum memory, as V(guest=MiB,...).
    type: str
    default: pft_guest_maxmem_mb
extends_documentation_fragment:
  - pft.attributes
  - pft.ganglia_read
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
seealso:
  - module: ganglia_metric
  - module: ganglia_target_info
  - module: xen_domain_info
"""

EXAMPLES = r"""
- name: Where do the guests run (as the dom0s last published it)
  ganglia_placement_info:
    endpoints: [head:8649, head:8651]
    nodes: "{{ groups['compute'] }}"
  delegate_to: localhost
  run_once: true
  register: pft_ganglia_placement

- name: Name the nodes whose guests are not known
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value }}"
  loop: "{{ pft_ganglia_placement.unknown | dict2items }}"
"""

RETURN = r"""
guests:
  description: Every node of O(nodes) mapped to the names of its guests (sorted), or to null when they are not known.
  returned: always
  type: dict
  sample: {compute1: [guest1], compute3: [], compute4: null}
maxmem_mb:
  description: Every node whose guests are known mapped to each guest's maximum memory in MiB.
  returned: always
  type: dict
  sample: {compute1: {guest1: 160}, compute3: {}}
unknown:
  description: The nodes that are null in RV(guests), each with the reason.
  returned: always
  type: dict
  sample: {compute4: "metric pft_guest_names is stale: TN 200 s > 2 x TMAX 60 s"}
endpoint:
  description: The endpoint whose XML was used.
  returned: always
  type: str
  sample: head:8649
endpoint_errors:
  description: Errors of the endpoints tried before RV(endpoint).
  returned: always
  type: list
  elements: str
  sample: ["Ganglia endpoint head:8651: cannot connect: Connection refused"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.pft_ganglia import (  # noqa: E402
    DEFUSEDXML_IMPORT_ERROR,
    HAS_DEFUSEDXML,
    READ_ARGS,
    GangliaError,
    check_read_args,
    guest_placement,
    read_ganglia,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            READ_ARGS,
            nodes=dict(type="list", elements="str", required=True),
            names_metric=dict(type="str", default="pft_guest_names"),
            memory_metric=dict(type="str", default="pft_guest_maxmem_mb"),
        ),
        supports_check_mode=True,
    )
    if not HAS_DEFUSEDXML:
        module.fail_json(msg=missing_required_lib("defusedxml"), exception=str(DEFUSEDXML_IMPORT_ERROR))
    p = module.params
    bad = check_read_args(p)
    if bad:
        module.fail_json(msg=bad)
    try:
        snapshot, endpoint, errors = read_ganglia(p["endpoints"], timeout=p["timeout"], max_bytes=p["max_bytes"],
                                                  default_port=p["default_port"],
                                                  metrics=(p["names_metric"], p["memory_metric"]))
        placement, unknown = guest_placement(snapshot, p["nodes"], names_metric=p["names_metric"],
                                             memory_metric=p["memory_metric"],
                                             host_down_factor=p["host_down_factor"],
                                             metric_stale_factor=p["metric_stale_factor"])
    except GangliaError as exc:
        module.fail_json(msg=str(exc))
    guests = {node: [g["name"] for g in placed] if placed is not None else None for node, placed in placement.items()}
    maxmem = {node: {g["name"]: g["maxmem_mb"] for g in placed} for node, placed in placement.items()
              if placed is not None}
    module.exit_json(changed=False, guests=guests, maxmem_mb=maxmem, unknown=unknown, endpoint=endpoint,
                     endpoint_errors=errors)


if __name__ == "__main__":
    main()
