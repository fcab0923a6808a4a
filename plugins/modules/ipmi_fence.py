#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ipmi_fence
short_description: Fence nodes through their BMCs (power off, confirmed off) within a deadline that holds
description:
  - Before a dead node's guests are restored elsewhere, the node must be off for certain. Otherwise a node that
    was only cut off from the controller would run its guests while their copies run elsewhere.
  - O(state=off) (the fence) asks each BMC for the chassis power. A node that is on gets Chassis Control (power
    down), and the BMC is then asked again until it reports the chassis off. A node is fenced only when its
    BMC reported it off (RV(fenced)). A BMC that did not answer, refused the credentials, or did not report the
    chassis off in time leaves the node in RV(not_fenced), and the module fails naming each such node
    ("cannot fence NODE"), so that nothing is restored from it.
  - O(state=status) only reads the chassis power.
  - Every BMC gets O(deadline) seconds of wall clock for all of it (login included), and all BMCs are asked
    at once. When the deadline passes, the work is abandoned in this process, so nothing is sent later.
  - Why not M(community.general.ipmi_power). Its C(timeout) counts the status polls after the command, and
    nothing bounds its login. A task C(timeout) stops the task but leaves the module process running, and
    that process can still power the node off after the task failed (docs/recovery.md has the measurements).
version_added: "0.3.0"
author:
  - pft contributors
requirements:
  - pyghmi == 1.6.19 (pinned; pft patches two of its 1.6.x bugs at run time)
options:
  targets:
    description: The nodes to fence (or read), each with its BMC.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The node's name, used as the key of the result.
        type: str
        required: true
      address:
        description: The BMC's address.
        type: str
        required: true
      port:
        description: The BMC's RMCP+ UDP port.
        type: int
        default: 623
      username:
        description: The BMC user. Defaults to O(username).
        type: str
      password:
        description: The BMC password. Defaults to O(password). Keep it in vault or the environment.
        type: str
  state:
    description: V(off) fences (powers off and confirms off); V(status) only reads the chassis power.
    type: str
    choices: ["off", status]
    default: "off"
  deadline:
    description: Seconds of wall clock each BMC gets for everything (login, commands, polls).
    type: float
    default: 20
  poll:
    description: Seconds between the status reads after the power down.
    type: float
    default: 0.5
extends_documentation_fragment:
  - pft.attributes
  - pft.bmc_credentials
attributes:
  check_mode:
    support: full
    details: Reads the chassis power and says which nodes it would power off; sends no power command.
  diff_mode:
    support: none
notes:
  - Run it on the controller (C(delegate_to) V(localhost), C(run_once)); it only talks to the BMCs.
  - A node whose BMC already reports the chassis off is fenced without any command.
seealso:
  - module: ipmi_health_info
  - module: pft_recovery_line
"""

EXAMPLES = r"""
- name: Fence the node that died, or fail naming it
  ipmi_fence:
    targets:
      - name: compute3
        address: "{{ hostvars['compute3'].bmc_address }}"
    username: "{{ pft_bmc_username }}"
    password: "{{ pft_bmc_password }}"
    deadline: 20
  delegate_to: localhost
  run_once: true
  register: pft_fence

- name: Read the chassis power of every compute node
  ipmi_fence:
    state: status
    targets: "{{ pft_bmc_targets }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
nodes:
  description:
    - Per node, C(power) as the BMC last reported it (V(on), V(off)) or V(unreachable); C(sent_off), whether
      the power down was sent; C(confirmed_off), whether the BMC reported the chassis off for the fence;
      C(seconds); and C(error), why the answer is incomplete (null when it is complete).
  returned: always
  type: dict
  sample:
    compute3: {power: "off", sent_off: true, confirmed_off: true, seconds: 1.42, polls: 3, error: null}
fenced:
  description: The nodes whose BMC reported the chassis off (O(state=off)).
  returned: always
  type: list
  elements: str
not_fenced:
  description: The nodes that are not fenced for certain (O(state=off)); restore nothing of them.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.pft_ipmi_nodes import BMC_CREDENTIAL_ARGS  # noqa: E402
from ansible.module_utils.pft_ipmi_power import chassis  # noqa: E402
from ansible.module_utils.pft_ipmi_pyghmi import HAS_PYGHMI, PYGHMI_IMPORT_ERROR  # noqa: E402

TARGET_SPEC = dict(
    name=dict(type="str", required=True),
    address=dict(type="str", required=True),
    port=dict(type="int", default=623),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            targets=dict(type="list", elements="dict", required=True, options=TARGET_SPEC),
            **BMC_CREDENTIAL_ARGS,
            state=dict(type="str", choices=["off", "status"], default="off"),
            deadline=dict(type="float", default=20.0),
            poll=dict(type="float", default=0.5),
        ),
        supports_check_mode=True,
    )
    if not HAS_PYGHMI:
        module.fail_json(msg=missing_required_lib("pyghmi"), exception=str(PYGHMI_IMPORT_ERROR))
    p = module.params
    if p["deadline"] <= 0 or p["poll"] <= 0:
        module.fail_json(msg="deadline and poll must be positive, got %s and %s" % (p["deadline"], p["poll"]))
    names = [t["name"] for t in p["targets"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        module.fail_json(msg="targets name %s more than once" % ", ".join(twice))
    targets = [dict(t, username=t["username"] or p["username"], password=t["password"] or p["password"])
               for t in p["targets"]]
    missing = [t["name"] for t in targets if not t["username"] or not t["password"]]
    if missing:
        module.fail_json(msg="no BMC username or password for %s (give targets[].username/password, "
                             "username/password, or PFT_BMC_USERNAME/PFT_BMC_PASSWORD)" % ", ".join(missing))
    fencing = p["state"] == "off" and not module.check_mode
    nodes = chassis(targets, "off" if fencing else "status", deadline=p["deadline"], poll_s=p["poll"])
    if p["state"] == "status":
        module.exit_json(changed=False, nodes=nodes, fenced=[], not_fenced=[])
    if module.check_mode:
        on = sorted(n for n, r in nodes.items() if r["power"] == "on")
        fenced = sorted(n for n, r in nodes.items() if r["power"] == "off")
        unknown = sorted(n for n, r in nodes.items() if r["power"] == "unreachable")
        module.exit_json(changed=bool(on), nodes=nodes, fenced=fenced, not_fenced=sorted(on + unknown),
                         msg="would power off %s" % (", ".join(on) or "nothing"))
    fenced = sorted(n for n, r in nodes.items() if r["confirmed_off"])
    not_fenced = sorted(n for n, r in nodes.items() if not r["confirmed_off"])
    changed = any(r["sent_off"] for r in nodes.values())
    if not_fenced:
        module.fail_json(msg="; ".join("cannot fence %s: %s" % (n, nodes[n]["error"] or "not confirmed off")
                                       for n in not_fenced),
                         changed=changed, nodes=nodes, fenced=fenced, not_fenced=not_fenced)
    module.exit_json(changed=changed, nodes=nodes, fenced=fenced, not_fenced=not_fenced)


if __name__ == "__main__":
    main()
