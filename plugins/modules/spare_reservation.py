#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module spare_reservation: atomic spare reservations on the pft controller."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: spare_reservation
short_description: Reserve, release and reclaim migration spares atomically on the controller
description:
  - Keeps the spare reservations that stop two evacuations running at once from choosing the same target.
    A reservation is a file C(<directory>/<host>.json) with the host, an owner and an expiry.
  - O(state=present) reserves the first host of O(hosts) (best first, usually C(accepted) of M(ganglia_target_info))
    that has no live reservation of another owner. Reading and writing happen under one exclusive lock of
    C(<directory>/.lock), and the file is created atomically, so concurrent runs never get the same host.
    When O(owner) already holds one of O(hosts), that reservation is returned (re-written with the new
    O(purpose) when that differs, its expiry extended to O(ttl) from now if later).
    When every host is taken, RV(host) is null and RV(msg) says by whom (or the task fails with O(fail_on_none)).
  - O(state=absent) releases the reservations of O(owner) (on O(hosts), or all of them). Run it after the
    migration both on success and on failure (an C(always) section). Another owner's live reservation is
    refused unless O(force).
  - O(state=reclaimed) removes expired reservations. O(state=present) also takes over an expired reservation
    of a host it wants.
  - The directory must be on a local file system of the controller (C(flock) does not lock across NFS clients).
version_added: "0.1.0"
author:
  - pft contributors
options:
  state:
    description: What to do.
    type: str
    choices: [present, absent, reclaimed]
    default: present
  hosts:
    description:
      - For O(state=present), the hosts to try in order of preference; required.
      - For O(state=absent), the hosts to release; all of O(owner)'s when omitted.
    type: list
    elements: str
  owner:
    description: Who holds the reservation, for example V(evacuate-node03). Required for O(state=present)
      and, unless O(force), for O(state=absent).
    type: str
  purpose:
    description:
      - Why the reservation is held, kept in it. pft uses V(watch-prestage) (the watch reserved a target at
        C(warning)), V(watch-evacuate) (the watch moves the guests) and V(operator-evacuate)
        (C(playbooks/evacuate.yml)). The watch releases only V(watch-prestage) reservations of nodes that are
        healthy again; any other purpose is left to its owner.
    type: str
    choices: [watch-prestage, watch-evacuate, operator-evacuate, manual]
    default: manual
  ttl:
    description: Seconds until a new reservation expires and may be reclaimed. Make it longer than a migration.
    type: int
    default: 1800
  directory:
    description: Directory holding the reservations; created (mode 0750) when needed.
    type: path
    default: /var/lib/pft/reservations
  lock_timeout:
    description: Deadline in seconds to get the directory lock.
    type: float
    default: 30.0
  force:
    description: With O(state=absent), also release reservations of other owners.
    type: bool
    default: false
  fail_on_none:
    description: With O(state=present), fail when no host could be reserved.
    type: bool
    default: false
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Predicts the host that would be reserved, released or reclaimed; writes nothing and takes no lock.
  diff_mode:
    support: none
notes:
  - Run it on the controller (C(delegate_to) V(localhost), C(run_once)).
seealso:
  - module: ganglia_target_info
"""

EXAMPLES = r"""
- name: Reserve the best free spare for this evacuation
  spare_reservation:
    hosts: "{{ pft_target.accepted }}"
    owner: "evacuate-{{ failing_node }}"
    ttl: 1800
    fail_on_none: true
  delegate_to: localhost
  run_once: true
  register: pft_spare

- name: Release it whatever happened to the migration
  spare_reservation:
    state: absent
    owner: "evacuate-{{ failing_node }}"
  delegate_to: localhost
  run_once: true

- name: Drop reservations whose owner died
  spare_reservation:
    state: reclaimed
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
host:
  description: The reserved host (O(state=present)), or null when none was free.
  returned: when state is present
  type: str
  sample: node07
reservation:
  description: The reservation of RV(host).
  returned: when state is present
  type: dict
  sample: {host: node07, owner: evacuate-node03, created: 1795430000.0, expires: 1795431800.0, id: 5f0c..., pid: 4242}
skipped:
  description: Hosts passed over because another owner holds them, with that owner.
  returned: when state is present
  type: dict
  sample: {node05: evacuate-node01}
reclaimed:
  description: Expired reservations removed (or, in check mode, that would be).
  returned: when state is present or reclaimed
  type: list
  elements: dict
  sample: [{host: node05, owner: evacuate-node01, expires: 1795430000.0}]
released:
  description: Reservations released (or, in check mode, that would be).
  returned: when state is absent
  type: list
  elements: dict
  sample: [{host: node07, owner: evacuate-node03}]
refused:
  description: Hosts not released because another owner holds them.
  returned: when state is absent
  type: dict
  sample: {node05: evacuate-node01}
absent:
  description: Requested hosts that had no reservation.
  returned: when state is absent
  type: list
  elements: str
  sample: [node08]
reservations:
  description: Live reservations by host after the task (before it, in check mode).
  returned: always
  type: dict
  sample: {node07: {owner: evacuate-node03, expires: 1795431800.0}}
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: node07 reserved for evacuate-node03 until 2026-11-23T11:10:00Z
"""


from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_reservation import ReservationError, ReservationStore  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent", "reclaimed"], default="present"),
            hosts=dict(type="list", elements="str"),
            owner=dict(type="str"),
            ttl=dict(type="int", default=1800),
            purpose=dict(type="str", default="manual",
                         choices=["watch-prestage", "watch-evacuate", "operator-evacuate", "manual"]),
            directory=dict(type="path", default="/var/lib/pft/reservations"),
            lock_timeout=dict(type="float", default=30.0),
            force=dict(type="bool", default=False),
            fail_on_none=dict(type="bool", default=False),
        ),
        required_if=[("state", "present", ("hosts", "owner"))],
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    try:
        store = ReservationStore(p["directory"], lock_timeout=p["lock_timeout"])
        if p["state"] == "present":
            if p["ttl"] <= 0:
                module.fail_json(msg="ttl must be > 0 seconds, got %d" % p["ttl"])
            out = store.reserve(p["hosts"], p["owner"], ttl=p["ttl"], dry_run=check, purpose=p["purpose"])
            result = dict(changed=out["changed"], host=out["host"], reservation=out["reservation"],
                          skipped=out["skipped"], reclaimed=out["reclaimed"], msg=out["reason"])
            if out["host"] is None and p["fail_on_none"]:
                result["reservations"] = _live(store)
                module.fail_json(**result)
        elif p["state"] == "absent":
            if not p["owner"] and not p["force"]:
                module.fail_json(msg="state=absent needs owner (or force=true to release anyone's reservation)")
            out = store.release(p["hosts"], owner=p["owner"], force=p["force"], dry_run=check)
            released = [r["host"] for r in out["released"]]
            msg = "released %s" % (", ".join(released) if released else "nothing")
            if out["refused"]:
                msg += "; refused (held by another owner): %s" % ", ".join(
                    "%s by %s" % kv for kv in sorted(out["refused"].items()))
            result = dict(changed=out["changed"], released=out["released"], refused=out["refused"],
                          absent=out["absent"], msg=msg)
        else:
            removed = store.reclaim(dry_run=check)
            result = dict(changed=bool(removed), reclaimed=removed,
                          msg="reclaimed %d expired reservation(s)" % len(removed))
        result["reservations"] = _live(store)
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, 'spare_reservation', exc, clean=(ReservationError,))
    module.exit_json(**result)


def _live(store):
    return {host: res.as_dict() for host, res in sorted(store.active().items())}


if __name__ == "__main__":
    main()
