#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module ganglia_metric: publish a node's custom metrics with gmetric."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: ganglia_metric
short_description: Publish a node's pft metrics (guests, Xen free memory) or any custom metric with gmetric
description:
  - Runs C(gmetric) once per metric (an argv list, no shell) with one overall deadline. gmetric sends on the
    send channels of the local gmond configuration O(config).
  - O(guests) publishes the guest count (O(guest_metric)) and the comma-separated guest names
    (O(guest_names_metric)); O(xen_free_memory_mb) publishes the memory Xen can give a new guest
    (O(free_memory_metric); take it from C(xl info) C(free_memory), not from dom0's C(mem_free)).
    M(ganglia_target_info) reads these metrics.
  - O(metrics) publishes any other metric.
  - Reports C(changed=false) because publishing a sample does not change the node's configuration; a role that
    publishes on every run stays idempotent.
version_added: "0.1.0"
author:
  - pft contributors
options:
  guests:
    description: Names of the guests running on the node (an empty list publishes 0 guests).
    type: list
    elements: str
  guest_memory_mb:
    description:
      - Each guest's maximum memory in MiB, by guest name, published as one string V(guest=MiB,...) in
        O(guest_memory_metric). With O(guests), the names must be the same. M(ganglia_placement_info) reads it.
    type: dict
  xen_free_memory_mb:
    description: Memory in MiB that Xen can give a new guest.
    type: int
  metrics:
    description: Further metrics to publish.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Metric name (letters, digits, C(_ . -)).
        type: str
        required: true
      value:
        description: Value; must be a number unless O(metrics[].type=string).
        type: raw
        required: true
      type:
        description: gmetric value type.
        type: str
        choices: [string, int8, uint8, int16, uint16, int32, uint32, float, double]
        default: string
      units:
        description: Unit of the value.
        type: str
        default: ""
      slope:
        description: gmetric slope.
        type: str
        choices: [zero, positive, negative, both]
        default: both
      tmax:
        description: Seconds between publications that consumers may expect; defaults to O(tmax).
        type: int
      dmax:
        description: Seconds after which gmond deletes the metric when not refreshed (0 keeps it); defaults to O(dmax).
        type: int
      group:
        description: Metric group.
        type: str
      title:
        description: Metric title.
        type: str
      description:
        description: Metric description.
        type: str
      spoof:
        description: Publish on behalf of another host, as V(IP:hostname) (C(gmetric -S)). Used by simulations;
          a node should publish its own pft metrics, whose freshness proves it is alive.
        type: str
  tmax:
    description: TMAX of the pft metrics, and of O(metrics) without one. Publish at least this often.
    type: int
    default: 60
  dmax:
    description: DMAX of the pft metrics, and of O(metrics) without one.
    type: int
    default: 0
  guest_metric:
    description: Name of the guest count metric.
    type: str
    default: pft_guest_count
  guest_names_metric:
    description: Name of the guest names metric.
    type: str
    default: pft_guest_names
  guest_memory_metric:
    description: Name of the guest memory metric.
    type: str
    default: pft_guest_maxmem_mb
  free_memory_metric:
    description: Name of the Xen free memory metric.
    type: str
    default: pft_xen_free_memory_mb
  config:
    description: gmond configuration whose send channels gmetric uses.
    type: path
    default: /etc/ganglia/gmond.conf
  gmetric_path:
    description: The gmetric program.
    type: path
    default: gmetric
  timeout:
    description: Deadline in seconds for all gmetric calls together.
    type: float
    default: 10.0
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Validates the metrics and returns the gmetric command lines without running them.
  diff_mode:
    support: none
requirements:
  - gmetric (Debian package ganglia-monitor) on the node
seealso:
  - module: ganglia_target_info
  - module: ganglia_placement_info
"""

EXAMPLES = r"""
- name: Publish guest presence and Xen free memory
  ganglia_metric:
    guests: "{{ pft_xl_guests }}"
    xen_free_memory_mb: "{{ pft_xl_free_memory_mb }}"
    tmax: 60

- name: Publish a custom metric
  ganglia_metric:
    metrics:
      - name: pft_prestaged
        value: 1
        type: uint8
        units: flag
        dmax: 600
"""

RETURN = r"""
published:
  description: Whether gmetric ran (false in check mode).
  returned: always
  type: bool
  sample: true
metrics:
  description: Each metric with its value and the gmetric argv (run, or in check mode, to be run).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: pft_guest_count, value: "1", argv: [gmetric, -c, /etc/ganglia/gmond.conf, -n, pft_guest_count, -v, "1"]}
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_ganglia_publish import (  # noqa: E402
    GangliaError,
    gmetric_argv,
    pft_node_metrics,
    publish_metrics,
    run_argv,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            guests=dict(type="list", elements="str"),
            guest_memory_mb=dict(type="dict"),
            xen_free_memory_mb=dict(type="int"),
            metrics=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                value=dict(type="raw", required=True),
                type=dict(type="str", default="string",
                          choices=["string", "int8", "uint8", "int16", "uint16", "int32", "uint32", "float",
                                   "double"]),
                units=dict(type="str", default=""),
                slope=dict(type="str", default="both", choices=["zero", "positive", "negative", "both"]),
                tmax=dict(type="int"),
                dmax=dict(type="int"),
                group=dict(type="str"),
                title=dict(type="str"),
                description=dict(type="str"),
                spoof=dict(type="str"),
            )),
            tmax=dict(type="int", default=60),
            dmax=dict(type="int", default=0),
            guest_metric=dict(type="str", default="pft_guest_count"),
            guest_names_metric=dict(type="str", default="pft_guest_names"),
            guest_memory_metric=dict(type="str", default="pft_guest_maxmem_mb"),
            free_memory_metric=dict(type="str", default="pft_xen_free_memory_mb"),
            config=dict(type="path", default="/etc/ganglia/gmond.conf"),
            gmetric_path=dict(type="path", default="gmetric"),
            timeout=dict(type="float", default=10.0),
        ),
        required_one_of=[("guests", "guest_memory_mb", "xen_free_memory_mb", "metrics")],
        supports_check_mode=True,
    )
    p = module.params
    if p["xen_free_memory_mb"] is not None and p["xen_free_memory_mb"] < 0:
        module.fail_json(msg="xen_free_memory_mb must be >= 0, got %d" % p["xen_free_memory_mb"])
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be > 0, got %s" % p["timeout"])
    guest_memory = None
    if p["guest_memory_mb"] is not None:
        guest_memory = {}
        for name, value in p["guest_memory_mb"].items():
            try:
                guest_memory[str(name)] = int(value)
            except (TypeError, ValueError):
                module.fail_json(msg="guest_memory_mb: the memory of guest %s is %r, not a whole number of MiB"
                                 % (name, value))
    try:
        metrics = pft_node_metrics(guests=p["guests"], xen_free_memory_mb=p["xen_free_memory_mb"], tmax=p["tmax"],
                                   dmax=p["dmax"], guest_metric=p["guest_metric"],
                                   guest_names_metric=p["guest_names_metric"],
                                   free_memory_metric=p["free_memory_metric"], guest_memory_mb=guest_memory,
                                   guest_memory_metric=p["guest_memory_metric"])
    except GangliaError as exc:
        module.fail_json(msg=str(exc))
    for metric in p["metrics"]:
        spec = {k: v for k, v in metric.items() if v is not None}
        spec.setdefault("tmax", p["tmax"])
        spec.setdefault("dmax", p["dmax"])
        metrics.append(spec)
    if not os.path.isfile(p["config"]):
        module.fail_json(msg="gmond config %s not found: gmetric takes its send channels from it" % p["config"])
    try:
        if module.check_mode:
            argvs = [gmetric_argv(m, gmetric=p["gmetric_path"], config=p["config"]) for m in metrics]
            out = [{"name": m["name"], "value": a[a.index("-v") + 1], "argv": a}
                   for m, a in zip(metrics, argvs, strict=True)]
            module.exit_json(changed=False, published=False, metrics=out)
        gmetric = module.get_bin_path(p["gmetric_path"], required=False) or p["gmetric_path"]
        out = publish_metrics(metrics, gmetric=gmetric, config=p["config"], timeout=p["timeout"], runner=run_argv)
    except GangliaError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, published=True, metrics=out)


if __name__ == "__main__":
    main()
