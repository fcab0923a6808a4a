#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_watch_decide
short_description: Decide what the pft watch does about each node's health verdict
description:
  - Step 2 of the watch pipeline. Takes the result of M(ipmi_health_info) and returns a plan;
    which nodes to evacuate, which to pre-stage a target for, which pre-staged targets to release,
    and which alerts to send.
  - A confirmed verdict at O(evacuate_on) or worse means evacuate; at O(prestage_on) (below
    O(evacuate_on)) it means pre-stage a target, unless one is already reserved for the node
    (O(prestaged)). V(unknown) never evacuates and never pre-stages; it only alerts.
    A node back to V(ok) releases its pre-staged target.
  - Quarantined nodes (already evacuated, see M(pft_quarantine)) are not acted on again until they
    are returned to service, except that a quarantined node that is still bad is evacuated again, so that a
    guest whose move failed is retried (M(pft_watch_select) finds nothing to do on a node with no guest).
  - Keeps, in O(state_dir)C(/watch-state.json), each node's verdict history over recent runs (it goes
    into the audit record). An alert is planned when a node's verdict differs from the last one sent, and
    repeated every O(realert_after) seconds while it stays bad, never every minute. This module only reads
    what was sent; M(pft_alert) records it (its O(pft_alert#module:remember) option) once it was delivered.
  - Nodes to evacuate come worst first, then by name; the playbook migrates at most M at once.
version_added: "0.1.0"
author:
  - pft contributors
options:
  health:
    description: The registered result of M(ipmi_health_info) (a dict with C(nodes)). Required unless O(handled_only).
    type: dict
  handled_only:
    description:
      - Decide nothing; only return RV(handled), what the watch already did per node (V(critical) for a
        quarantined node, V(warning) for one with a pre-staged target in O(reservation_dir)). The watch passes
        it to M(ipmi_health_info)'s O(ipmi_health_info#module:handled) before it samples, so that a node already
        pre-staged or evacuated does not end every run's sampling after two samples.
    type: bool
    default: false
  quarantined:
    description:
      - Nodes never to act on. Defaults to the nodes in O(state_dir)C(/quarantine.json).
    type: list
    elements: str
  prestaged:
    description:
      - Nodes that already have a pre-staged target, mapped to that target.
      - Defaults to the live reservations in O(reservation_dir) that the watch holds for a pre-stage (purpose
        V(watch-prestage), owner C(pft-watch:<node>/<guest>)); evacuations and an operator's reservations are not
        pre-stages.
    type: dict
  reservation_dir:
    description: Directory of M(spare_reservation), read for O(prestaged) when that is not given.
    type: path
  prestage_on:
    description: The verdict that pre-stages a target.
    type: str
    choices: [warning, critical]
    default: warning
  evacuate_on:
    description: The verdict that evacuates a node.
    type: str
    choices: [warning, critical]
    default: critical
  realert_after:
    description: Seconds after which an unchanged bad verdict is alerted again.
    type: float
    default: 3600
  history_len:
    description: Verdicts kept per node.
    type: int
    default: 20
  policy_id:
    description:
      - Names the health rules in force (the watch passes a hash of C(pft_health_policy)). A node that no longer
        reports a sensor it reported in an earlier run reads V(unknown), with the sensor named, instead of V(ok);
        when O(policy_id) changes, what the nodes reported under the old rules is forgotten.
    type: str
  sensor_forget_after:
    description: Seconds after which a sensor that a node stopped reporting is forgotten (removed on purpose).
    type: float
    default: 86400
  predict:
    description:
      - Evacuate a node whose O(health) carries a prediction (M(ipmi_health_info)'s C(predict)) of a failure
        sooner than O(predict.margin) x its expected evacuation, before any threshold says so; its plan item
        has why C(predicted ...) and the C(prediction) (with C(expected_evacuation_s), C(own_evacuation_s) and
        C(slot_wait_s)), which the journal and the audit record keep.
      - A node's expected evacuation is its own (O(predict.nodes), else O(predict.evacuation_s)) plus its wait
        for one of O(predict.slots) migration slots behind the nodes more urgent than it (past the
        O(evacuate_on) threshold first, then the soonest predicted failure).
      - Omitted, predictions are ignored.
    type: dict
    suboptions:
      evacuation_s:
        description:
          - Seconds pft expects to need to empty a node not in O(predict.nodes) (detection to the last guest
            moved).
        type: float
        required: true
      nodes:
        description:
          - Each node's own expected evacuation in seconds (RV(pft_evacuation_time#module:expected) of
            M(pft_evacuation_time)).
        type: dict
        default: {}
      slots:
        description: Nodes whose guests move at once (pft_watch_max_parallel).
        type: int
        default: 1
      margin:
        description: How many times the expected evacuation the predicted failure must be away to wait.
        type: float
        default: 2.0
extends_documentation_fragment:
  - pft.attributes
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: Returns the same plan; does not record the verdict history or the alerts.
  diff_mode:
    support: none
notes:
  - Run it on the controller (C(delegate_to) V(localhost) or a play on localhost).
seealso:
  - module: ipmi_health_info
  - module: pft_quarantine
  - module: pft_audit
"""

EXAMPLES = r"""
- name: Sample the BMCs for most of a minute
  ipmi_health_info:
    targets: "{{ pft_bmc_targets }}"
    policy: "{{ pft_health_policy }}"
    window: 55
    stop_on: warning
    hysteresis: 2
  register: pft_health

- name: Decide
  pft_watch_decide:
    health: "{{ pft_health }}"
    reservation_dir: /var/lib/pft/reservations
  register: pft_plan

- name: Nodes to evacuate, worst first
  ansible.builtin.debug:
    msg: "{{ pft_plan.summary.evacuate }}"
"""

RETURN = r"""
evacuate:
  description: Nodes to evacuate now, worst first, each with the evidence.
  returned: always
  type: list
  elements: dict
  sample: [{node: compute1, verdict: critical, reason: "CPU1 Temp: 92 >= upper_critical 85",
            fired: {sensor: CPU1 Temp, value: 92.0}, sensors: {CPU1 Temp: {verdict: critical, value: 92.0}},
            history: [{at: "2026-11-23T13:00:02Z", verdict: ok}, {at: "2026-11-23T13:01:04Z", verdict: critical}]}]
prestage:
  description: Nodes to pre-stage a target for (same fields as RV(evacuate)).
  returned: always
  type: list
  elements: dict
  sample: []
release:
  description: Nodes back to ok whose pre-staged target can be released.
  returned: always
  type: list
  elements: dict
  sample: [{node: compute2, target: compute3, owners: [pft-compute2/guest2]}]
alerts:
  description: Alerts to send (for M(pft_alert)), with severity, subject and details.
  returned: always
  type: list
  elements: dict
  sample: [{node: compute2, verdict: unknown, severity: warning, subject: "pft: compute2 is unknown: BMC unreachable"}]
nodes:
  description: Per node, its verdict, the action taken and why.
  returned: always
  type: dict
  sample: {compute1: {verdict: critical, action: evacuate, why: verdict critical}}
prestaged:
  description: The pre-staged targets the decision used, node -> target.
  returned: always
  type: dict
  sample: {compute2: compute3}
handled:
  description: With O(handled_only), each node the watch already acted on, with the level it acted at.
  returned: when handled_only is true
  type: dict
  sample: {compute1: critical, compute2: warning}
summary:
  description: Node names per action.
  returned: always
  type: dict
  sample: {evacuate: [compute1], prestage: [], release: [], alert: [compute1]}
"""


from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_decide import handled, run_decide  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_reservation import ReservationError  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            health=dict(type="dict"),
            handled_only=dict(type="bool", default=False),
            quarantined=dict(type="list", elements="str"),
            prestaged=dict(type="dict"),
            reservation_dir=dict(type="path"),
            prestage_on=dict(type="str", choices=["warning", "critical"], default="warning"),
            evacuate_on=dict(type="str", choices=["warning", "critical"], default="critical"),
            realert_after=dict(type="float", default=3600),
            history_len=dict(type="int", default=20),
            policy_id=dict(type="str"),
            sensor_forget_after=dict(type="float", default=86400),
            predict=dict(type="dict", options=dict(evacuation_s=dict(type="float", required=True),
                                                   nodes=dict(type="dict", default={}),
                                                   slots=dict(type="int", default=1),
                                                   margin=dict(type="float", default=2.0))),
            **STATE_ARGS
        ),
        required_if=[("handled_only", False, ("health",))],
        supports_check_mode=True,
    )
    p = module.params
    if p["handled_only"]:
        try:
            out = handled(p["state_dir"], reservation_dir=p["reservation_dir"], lock_timeout=p["lock_timeout"])
        except Exception as exc:  # every failure is one clean message naming what is at fault
            fail(module, 'pft_watch_decide', exc, clean=(WatchError, ReservationError))
        module.exit_json(changed=False, handled=out)
    try:
        plan = run_decide(p["state_dir"], p["health"], quarantined=p["quarantined"], prestaged=p["prestaged"],
                          dry_run=module.check_mode, lock_timeout=p["lock_timeout"],
                          reservation_dir=p["reservation_dir"],
                          prestage_on=p["prestage_on"], evacuate_on=p["evacuate_on"],
                          realert_after=p["realert_after"], history_len=p["history_len"],
                          policy_id=p["policy_id"], sensor_forget_after=p["sensor_forget_after"],
                          predict=p["predict"])
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, 'pft_watch_decide', exc, clean=(WatchError, ReservationError))
    module.exit_json(changed=False, **plan)


if __name__ == "__main__":
    main()
