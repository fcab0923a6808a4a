#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module xen_restore: start a guest from its checkpoint image, only when it runs nowhere else."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: xen_restore
short_description: Restore a guest from its checkpoint image on this dom0 when its node is dead (reactive restore)
description:
  - Run on the dom0 that holds the guest's checkpoint image (the spare that M(xen_prestage) sent it to with
    C(checkpoint=true)), after the node that ran the guest died. It runs C(xl restore) and verifies that the
    guest then runs here exactly once.
  - "The guest comes back as it was at the checkpoint: whatever it did since is lost (its peers may have seen
    newer output). Its age is reported in RV(checkpoint)."
  - "Safety rule: a guest must never run twice. It refuses when this host already has the guest (or one of its
    transient migration names); it asks each host of O(absent_on) over the restricted migration key (the
    read-only C(pft-probe) verb, C(xl list)) and refuses when one of them answers and runs the guest. A host that
    does not answer also makes it refuse, unless O(source_down_confirmed=true) says that host is known to be off
    (powered off or fenced)."
  - When the guest already runs here exactly once, nothing is done (not changed, not failed).
  - Each step is reported with its duration in RV(steps). In check mode every check runs (read-only) and the
    restore is only predicted.
version_added: "0.1.0"
author:
  - pft contributors
options:
  guest:
    description: Name of the guest domain.
    type: str
    required: true
  image:
    description: The checkpoint image (an C(xl save) file). Default C(/var/lib/pft/checkpoints/GUEST.save), where
      M(xen_prestage) puts it.
    type: path
  config:
    description: An xl configuration file to restore with instead of the one stored in the image (C(xl restore
      CONFIG IMAGE)).
    type: path
  absent_on:
    description: The other dom0s (as this dom0's ssh knows them) that must be seen not to run the guest, usually the
      node that ran it.
    type: list
    elements: str
    default: []
  source_down_confirmed:
    description: Restore even when a host of O(absent_on) does not answer, because the operator (or the fencing that
      ran before) knows it is off. A host that answers and runs the guest still makes the module refuse.
    type: bool
    default: false
  timeout:
    description: Deadline in seconds for C(xl restore).
    type: float
    default: 600.0
  probe_timeout:
    description: Deadline in seconds for each probe of a host of O(absent_on).
    type: float
    default: 60.0
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Runs every check (the image, this host, the O(absent_on) probes) and reports the restore it would do
      (C(changed)) without doing it.
  diff_mode:
    support: none
requirements:
  - Xen 4.17 toolstack on this dom0; for O(absent_on), the xen_host role's migration key and C(pft-probe) on those
    hosts.
seealso:
  - module: xen_prestage
  - module: xen_migrate
"""

EXAMPLES = r"""
- name: Keep a checkpoint of guest1 on the spare while compute1 only warns
  xen_prestage:
    guest: guest1
    target: compute3
    checkpoint: true
  delegate_to: compute1

- name: Compute1 died - restore guest1 on the spare, after making sure compute1 does not run it
  xen_restore:
    guest: guest1
    absent_on: [compute1]
  delegate_to: compute3
  register: pft_restore

- name: Compute1 is fenced (powered off through its BMC) and does not answer
  xen_restore:
    guest: guest1
    absent_on: [compute1]
    source_down_confirmed: true
  delegate_to: compute3
"""

RETURN = r"""
restored:
  description: Whether this run restored the guest (it now runs here exactly once).
  returned: always
  type: bool
  sample: true
restore_s:
  description: Seconds C(xl restore) took, or null when it did not run.
  returned: always
  type: float
  sample: 9.4
checkpoint:
  description: The image (C(path), C(size) in bytes, C(image_mib), C(created) epoch (its mtime, when the save ran),
    C(age_s) seconds since then).
  returned: always
  type: dict
  sample: {path: /var/lib/pft/checkpoints/guest1.save, size: 134612992, image_mib: 128.4, created: 1795000000.0,
           age_s: 41.0}
checks:
  description: Each check with C(name), C(ok), C(detail) (C(absent_on) checks also have C(host)).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: image, ok: true, detail: "/var/lib/pft/checkpoints/guest1.save, 128.4 MiB, taken 41 s ago"}
    - {name: not_here, ok: true, detail: "guest1 does not run here"}
    - {name: absent_on, host: compute1, ok: true, detail: "no answer (...); down, as the operator confirmed"}
steps:
  description: What was done, in order, each with C(name) and C(seconds).
  returned: always
  type: list
  elements: dict
  sample: [{name: local_list, seconds: 0.2}, {name: probe_compute1, seconds: 10.1, ok: false},
           {name: restore, seconds: 9.4, rc: 0}]
guest:
  description: The guest's C(xl list) row here afterwards (C(name), C(domid), C(state), ...), or null.
  returned: always
  type: dict
would:
  description: In check mode, the command it would run.
  returned: check mode, when it would restore
  type: str
  sample: /usr/sbin/xl restore /var/lib/pft/checkpoints/guest1.save
xl_output:
  description: The last lines of C(xl restore)'s output.
  returned: when xl restore ran
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_xen import XenError  # noqa: E402
from ansible.module_utils.pft_xen_checkpoint import restore  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            guest=dict(type="str", required=True),
            image=dict(type="path"),
            config=dict(type="path"),
            absent_on=dict(type="list", elements="str", default=[]),
            source_down_confirmed=dict(type="bool", default=False),
            timeout=dict(type="float", default=600.0),
            probe_timeout=dict(type="float", default=60.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for key in ("timeout", "probe_timeout"):
        if p[key] <= 0:
            module.fail_json(msg="%s must be > 0, got %s" % (key, p[key]))
    try:
        failed, msg, result = restore(p["guest"], image=p["image"], config=p["config"], absent_on=p["absent_on"],
                                      source_down_confirmed=p["source_down_confirmed"], timeout=p["timeout"],
                                      probe_timeout=p["probe_timeout"], check_mode=module.check_mode)
    except XenError as exc:
        module.fail_json(msg="xen_restore %s: %s" % (p["guest"], exc), restored=False, changed=False)
    if failed:
        module.fail_json(msg=msg, **result)
    module.exit_json(msg=msg, **result)


if __name__ == "__main__":
    main()
