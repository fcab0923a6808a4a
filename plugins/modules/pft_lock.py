#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_lock
short_description: Take or give back the pft controller lock (one playbook at a time reserves, moves, releases)
description:
  - C(watch.yml), C(evacuate.yml) and C(return.yml) take this lock for the steps that reserve a spare, move
    guests and release spares, so a manual evacuation and a watch run never interleave those steps.
  - The lock is a lease held by the C(ansible-playbook) process that runs the module (its pid and start time,
    in O(state_dir)C(/controller-lock.json)). A lease whose process is gone is free, so a killed run never
    blocks the next one. Taking it again in the same run changes nothing (re-entrant).
  - O(state=present) waits up to O(wait) seconds while another live run holds it, then fails with a message that
    names that run (its playbook, pid and since when).
  - O(state=absent) gives it back if this run holds it; another run's lease is left alone.
version_added: "0.2.0"
author:
  - pft contributors
options:
  state:
    description: Take (V(present)) or give back (V(absent)) the lock.
    type: str
    choices: [present, absent]
    default: present
  holder:
    description: What this run does, in words; shown to the run that has to wait.
    type: str
    default: a pft playbook
  wait:
    description: Seconds to wait for another run to give the lock back (O(state=present)).
    type: float
    default: 60
extends_documentation_fragment:
  - pft.attributes
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: Says whether the lock is free (and waits like a real run); writes nothing.
  diff_mode:
    support: none
notes:
  - Run it on the controller, from C(ansible-playbook).
seealso:
  - module: spare_reservation
  - module: pft_watch_select
"""

EXAMPLES = r"""
- name: Take the controller lock before reserving a spare
  pft_lock:
    holder: "evacuate.yml of compute1"
    wait: 300

- name: Give it back
  pft_lock:
    state: absent
"""

RETURN = r"""
held_by:
  description: The lease after the task (pid, start, holder, since, at); another run's with O(state=absent).
  returned: always
  type: dict
  sample: {pid: 4242, start: 123456, holder: "watch.yml", since: 1764950000.0, at: "2026-12-05T10:29:07Z"}
took_over:
  description: The lease of a run that died holding the lock, taken over by this one.
  returned: when state is present
  type: dict
waited:
  description: Seconds waited for another run.
  returned: when state is present
  type: float
msg:
  description: What happened, in words.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_lease import acquire, release  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            holder=dict(type="str", default="a pft playbook"),
            wait=dict(type="float", default=60),
            **STATE_ARGS
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["state"] == "present":
            out = acquire(p["state_dir"], p["holder"], wait=p["wait"], dry_run=module.check_mode,
                          lock_timeout=p["lock_timeout"])
            msg = "controller lock taken for %s" % p["holder"] if out["changed"] else "controller lock already held"
            if out["took_over"]:
                msg += " (from %s, whose run is gone)" % out["took_over"].get("holder")
        else:
            out = release(p["state_dir"], dry_run=module.check_mode, lock_timeout=p["lock_timeout"])
            msg = "controller lock given back" if out["changed"] else "this run did not hold the controller lock"
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, "pft_lock", exc, clean=(WatchError,))
    module.exit_json(msg=msg, **out)


if __name__ == "__main__":
    main()
