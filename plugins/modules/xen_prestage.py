#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module xen_prestage: check (and prepare) a target dom0 for a guest before it must move."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: xen_prestage
short_description: Check that a target dom0 can take a guest, and optionally balloon the guest down first
description:
  - Run on the B(source) dom0 at a "warning" verdict, before a migration is needed. It asks the target,
    through the restricted migration key's read-only C(pft-probe) verb, for its C(xl info), C(xl list),
    toolstack version, the sha256 of the guest's kernel, initrd and configuration, and whether the guest's
    NFS root server answers on TCP 2049 from there.
  - "Checks (RV(checks)): C(receive_path) (the migration key and forced command answer), C(not_on_target),
    C(xen), C(toolstack) (same xen-utils-4.17 version as here), C(shadow_paging), C(memory) (the target's
    free memory covers the guest plus O(margin_mb), or would after ballooning to O(working_set_mb)),
    C(file) (each file present on the target and identical), C(nfs_root). RV(ready) is true when all pass."
  - "With O(balloon=true) and a measured O(working_set_mb) it balloons the guest down to
    C(max(working_set_mb, balloon_floor_mb)) with C(xl mem-set) and waits until C(xl list) shows it; if that
    does not happen within O(balloon_timeout) the old target is set back (ballooning is cancelled, as
    XenServer does) and the C(balloon) check fails. Balloon back up after the migration with
    O(memory_mb) on the host that then runs the guest."
  - "With O(checkpoint=true) it keeps a checkpoint image of the guest on the target: C(xl save -c) here into
    C(/var/lib/pft/checkpoints/GUEST.save) (the guest keeps running afterwards, but it is B(stopped for the
    whole save), reported as C(pause_s); the local image is removed after the transfer), then it asks the
    target for the per-block sha256 sums of its image (C(pft-ckpt-sums)) and sends only the blocks that differ
    (C(pft-ckpt-put)), through the same restricted migration key. The target applies them to a copy of its
    image, checks the whole-file sha256, fsyncs it and renames it into place; on any error its previous image
    stays as it was. Restore it with M(xen_restore)."
  - Each step is reported with its duration in RV(steps). In check mode the probes run (read-only) and the
    balloon and the checkpoint are only predicted.
version_added: "0.1.0"
author:
  - pft contributors
options:
  guest:
    description: Name of the guest domain (running on this host).
    type: str
    required: true
  target:
    description: The target dom0 as this dom0's ssh knows it. Not used with O(memory_mb).
    type: str
  config:
    description: Path of the guest's xl configuration file, compared with the target's copy (under
      C(/etc/xen), C(/var/lib/pft), C(/boot) or C(/srv/pft)).
    type: path
  nfs_server:
    description: NFS server of the guest's root filesystem; default is read from the guest's C(nfsroot=)
      kernel argument. No NFS check when neither is there.
    type: str
  balloon:
    description: Balloon the guest down to its working set before the migration.
    type: bool
    default: false
  working_set_mb:
    description:
      - The guest's measured working set, MiB, in Xen's terms. Required with O(balloon=true); the module does not
        guess it.
      - Measure it as the guest's memory as C(xl list) shows it, less the C(MemAvailable) the guest reports,
        plus a margin. Not C(MemTotal - MemAvailable), which leaves out what the guest kernel reserved at boot (the
        gap between xl's memory and C(MemTotal), tens of MiB); a balloon down to it starved a test guest.
    type: int
  balloon_floor_mb:
    description: Never balloon below this, MiB.
    type: int
    default: 64
  balloon_timeout:
    description: Seconds to wait for the balloon to reach its target before cancelling.
    type: float
    default: 60.0
  memory_mb:
    description: Only set the guest's memory (balloon up or down) to this many MiB on this host and wait, with
      the same timeout and cancel rule. Used after a migration, on the host that runs the guest.
    type: int
  checkpoint:
    description:
      - Keep (or refresh) a checkpoint image of the guest on the target, in
        C(/var/lib/pft/checkpoints/GUEST.save), sending only the blocks that changed since the last one.
      - Not taken when the target already has the guest. A failed checkpoint fails the task (and the
        C(checkpoint) check) and leaves the target's previous image intact.
    type: bool
    default: false
  checkpoint_block_kib:
    description: Block size, KiB, of the checkpoint delta (a multiple of 4 between 4 and 65536). Smaller blocks
      send less after small changes and cost more sums.
    type: int
    default: 256
  checkpoint_timeout:
    description: Deadline in seconds for each checkpoint step (C(xl save -c), the sums, the transfer).
    type: float
    default: 600.0
  margin_mb:
    description: Free memory, MiB, the target must have beyond the guest's memory.
    type: int
    default: 16
  timeout:
    description: Deadline in seconds for the probes.
    type: float
    default: 120.0
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Runs every read-only check; reports the balloon and checkpoint it would do (C(changed)) without
      doing them.
  diff_mode:
    support: none
requirements:
  - Xen 4.17 toolstack on both dom0s; the xen_host role's migration key and C(pft-probe) on the target
    (and its C(pft-ckpt-sums) and C(pft-ckpt-put) verbs for O(checkpoint)).
seealso:
  - module: xen_migrate
  - module: xen_restore
  - module: xen_domain_info
"""

EXAMPLES = r"""
- name: Pre-stage the spare for guest1 at a warning verdict
  xen_prestage:
    guest: guest1
    target: compute3
    config: /etc/xen/pft/guest1.cfg
  register: pft_prestage

- name: Balloon guest1 down to its measured working set before moving it
  xen_prestage:
    guest: guest1
    target: compute3
    balloon: true
    working_set_mb: 96
    balloon_floor_mb: 64

- name: Keep a checkpoint of guest1 on the spare (refreshed with the changed blocks only)
  xen_prestage:
    guest: guest1
    target: compute3
    checkpoint: true
  register: pft_checkpoint

- name: Balloon it back up on its new host
  xen_prestage:
    guest: guest1
    memory_mb: 160
  delegate_to: compute3
"""

RETURN = r"""
ready:
  description: Whether every check passed (the target can take the guest now).
  returned: always
  type: bool
  sample: true
checks:
  description: Each check with C(name), C(ok) and C(detail) (C(file) checks also have C(path)).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: receive_path, ok: true, detail: "migration key and pft-probe answer on compute3"}
    - {name: memory, ok: true, detail: "target has 623 MiB free, guest has 128 MiB + 16 MiB margin"}
steps:
  description: What was done, in order, each with C(name) and C(seconds).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: source_facts, seconds: 0.41}
    - {name: probe_target, seconds: 1.2, ok: true}
    - {name: save, seconds: 7.9, pause_s: 7.9}
    - {name: sums, seconds: 2.1, target_image: true}
    - {name: send, seconds: 3.4}
balloon:
  description: The balloon step (C(ok), C(from_mb), C(to_mb), C(reached_mb), C(seconds), C(cancelled)), its
    prediction in check mode, or null.
  returned: always
  type: dict
checkpoint:
  description:
    - With O(checkpoint=true), the image now on the target, else null. C(path) (on the target), C(target),
      C(size) (bytes), C(image_mib), C(sha256), C(created) (epoch of the save; also the image's
      mtime on the target), C(blocksize), C(blocks_total), C(blocks_sent), C(mib_sent) (stream bytes, MiB),
      C(base) (C(none) for a first full copy, C(delta)), C(guest_state) after the save, C(pause_s), C(save_s),
      C(sums_s), C(send_s).
    - In check mode C(would), C(path) and C(target) only.
  returned: always
  type: dict
  sample: {path: /var/lib/pft/checkpoints/guest1.save, target: compute3, image_mib: 128.4, blocks_total: 514,
           blocks_sent: 37, mib_sent: 9.3, pause_s: 7.9, save_s: 7.9, sums_s: 2.1, send_s: 3.4,
           created: 1795000000.0, base: delta, guest_state: blocked}
guest:
  description: The guest as xen_domain_info reports it here.
  returned: always
  type: dict
target_host:
  description: The target's host facts from its probe.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_xen import XenError, check_name  # noqa: E402
from ansible.module_utils.pft_xen_prestage import balloon, prestage  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            guest=dict(type="str", required=True),
            target=dict(type="str"),
            config=dict(type="path"),
            nfs_server=dict(type="str"),
            balloon=dict(type="bool", default=False),
            working_set_mb=dict(type="int"),
            balloon_floor_mb=dict(type="int", default=64),
            balloon_timeout=dict(type="float", default=60.0),
            memory_mb=dict(type="int"),
            checkpoint=dict(type="bool", default=False),
            checkpoint_block_kib=dict(type="int", default=256),
            checkpoint_timeout=dict(type="float", default=600.0),
            margin_mb=dict(type="int", default=16),
            timeout=dict(type="float", default=120.0),
        ),
        required_if=[("balloon", True, ("working_set_mb",))],
        required_one_of=[("target", "memory_mb")],
        supports_check_mode=True,
    )
    p = module.params
    if p["checkpoint"] and p["memory_mb"] is not None:
        module.fail_json(msg="checkpoint needs a target; it does not go with memory_mb")
    if p["checkpoint"] and not p["target"]:
        module.fail_json(msg="checkpoint needs a target")
    for key in ("balloon_timeout", "timeout", "checkpoint_timeout"):
        if p[key] <= 0:
            module.fail_json(msg="%s must be > 0, got %s" % (key, p[key]))
    try:
        if p["memory_mb"] is not None:
            check_name(p["guest"])
            if p["memory_mb"] < p["balloon_floor_mb"]:
                module.fail_json(msg="memory_mb %d is below balloon_floor_mb %d" % (p["memory_mb"],
                                                                                  p["balloon_floor_mb"]))
            if module.check_mode:
                module.exit_json(changed=True, ready=True, checks=[], steps=[], guest=None, target_host=None,
                                 checkpoint=None,
                                 balloon=dict(ok=None, would="set %s to %d MiB" % (p["guest"], p["memory_mb"])))
            b = balloon(p["guest"], p["memory_mb"], timeout=p["balloon_timeout"])
            res = dict(changed=b["from_mb"] != b["reached_mb"], ready=b["ok"], balloon=b, guest=None,
                       checkpoint=None, target_host=None, steps=[dict(name="balloon", seconds=b["seconds"])],
                       checks=[dict(name="balloon", ok=b["ok"], detail="%s MiB -> %s MiB" % (b["from_mb"],
                                                                                           b["reached_mb"]))])
            if not b["ok"]:
                module.fail_json(msg="%s did not reach %d MiB within %.0f s; set back to %d MiB" % (
                    p["guest"], p["memory_mb"], p["balloon_timeout"], b["from_mb"]), **res)
            module.exit_json(**res)
        result = prestage(p["guest"], p["target"], config=p["config"], nfs=p["nfs_server"],
                          balloon_to_mb=p["working_set_mb"] if p["balloon"] else None,
                          balloon_floor_mb=p["balloon_floor_mb"], balloon_timeout=p["balloon_timeout"],
                          margin_mb=p["margin_mb"], check_mode=module.check_mode, timeout=p["timeout"],
                          checkpoint_image=p["checkpoint"], checkpoint_block=p["checkpoint_block_kib"] * 1024,
                          checkpoint_timeout=p["checkpoint_timeout"])
    except XenError as exc:
        module.fail_json(msg="xen_prestage %s -> %s: %s" % (p["guest"], p["target"], exc), ready=False)
    failed_ckpt = [c for c in result["checks"] if c["name"] == "checkpoint" and not c["ok"]]
    if failed_ckpt:
        module.fail_json(msg="xen_prestage %s -> %s: checkpoint failed: %s" % (p["guest"], p["target"],
                                                                              failed_ckpt[0]["detail"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
