#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_quarantine
short_description: Quarantine an evacuated node, or return it to service under the anti-flap rule
description:
  - A node whose guests pft evacuated is quarantined; the watch does not choose it as a migration
    target, and does not act on it again, until an admin returns it to service.
  - O(state=present) quarantines O(node). With O(record) it also counts one evacuation of the node
    (the audit record id).
  - O(state=absent) returns the node to service, unless it was evacuated O(flap_limit) times or more
    within O(flap_window) seconds (the anti-flap rule); then it stays quarantined and RV(held) is true,
    unless O(force).
  - O(state=query) only lists the quarantined nodes.
  - The list is O(state_dir)C(/quarantine.json), changed under the state directory's lock and replaced
    atomically.
version_added: "0.1.0"
author:
  - pft contributors
options:
  state:
    description: What to do.
    type: str
    choices: [present, absent, query]
    default: present
  node:
    description: The node. Required unless O(state=query).
    type: str
  reason:
    description: Why it is quarantined, in words (O(state=present)).
    type: str
  record:
    description: Audit record id of the evacuation that quarantines it; counted by the anti-flap rule.
    type: str
  flap_window:
    description: Seconds over which evacuations are counted by the anti-flap rule.
    type: float
    default: 86400
  flap_limit:
    description: Evacuations within O(flap_window) that keep a node quarantined.
    type: int
    default: 3
  force:
    description: With O(state=absent), return the node even if the anti-flap rule holds it.
    type: bool
    default: false
  fail_on_held:
    description: With O(state=absent), fail when the anti-flap rule keeps the node quarantined.
    type: bool
    default: true
extends_documentation_fragment:
  - pft.attributes
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: Predicts the change and the anti-flap decision; writes nothing.
  diff_mode:
    support: none
notes:
  - Run it on the controller.
seealso:
  - module: pft_watch_decide
  - module: ganglia_target_info
"""

EXAMPLES = r"""
- name: Quarantine the evacuated node
  pft_quarantine:
    node: compute1
    reason: "CPU1 Temp 92 >= 85"
    record: "{{ pft_record.id }}"
  delegate_to: localhost

- name: Return it to service (refused if it flaps)
  pft_quarantine:
    node: compute1
    state: absent
  delegate_to: localhost

- name: List quarantined nodes (to exclude them as targets)
  pft_quarantine:
    state: query
  delegate_to: localhost
  register: pft_q
"""

RETURN = r"""
quarantined:
  description: Quarantined nodes after the task (as they would be, in check mode), with since, reason and record.
  returned: always
  type: dict
  sample:
    compute1: {at: "2026-11-23T13:02:10Z", reason: "CPU1 Temp 92 >= 85", record: 20261123T130140Z-compute1-a1b2c3}
held:
  description: True when the anti-flap rule keeps the node quarantined (O(state=absent)).
  returned: always
  type: bool
  sample: false
recent_evacuations:
  description: Evacuations of the node within O(flap_window).
  returned: when state is absent
  type: int
  sample: 1
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: compute1 returned to service
"""


from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError, quarantine  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent", "query"], default="present"),
            node=dict(type="str"),
            reason=dict(type="str"),
            record=dict(type="str"),
            flap_window=dict(type="float", default=86400),
            flap_limit=dict(type="int", default=3),
            force=dict(type="bool", default=False),
            fail_on_held=dict(type="bool", default=True),
            **STATE_ARGS
        ),
        required_if=[("state", "present", ("node",)), ("state", "absent", ("node",))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        out = quarantine(p["state_dir"], p["state"], node=p["node"], reason=p["reason"], record=p["record"],
                         flap_window=p["flap_window"], flap_limit=p["flap_limit"], force=p["force"],
                         dry_run=module.check_mode, lock_timeout=p["lock_timeout"])
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, 'pft_quarantine', exc, clean=(WatchError,))
    if out["held"] and p["fail_on_held"]:
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
