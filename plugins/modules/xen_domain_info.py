#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module xen_domain_info: the domains of a Xen dom0 and its memory and versions."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: xen_domain_info
short_description: Domains of a Xen host (dom0) with their state and memory, and the host's free memory and versions
description:
  - Run on a Xen dom0. Reads C(xl list) (run state, current memory, vcpus), C(xl list -l) (configuration,
    type, maxmem, kernel), C(xl uptime) and C(xl info) (free memory, Xen version, C(virt_caps)), and the
    version of the Debian toolstack package C(xen-utils-4.17).
  - C(xl list -l) holds configuration, not run state; the state comes from C(xl list). C(uptime_s) restarts
    at each migration or restore (Xen gives the arriving domain a new start time).
  - RV(host.shadow_paging) tells whether the hypervisor was built with shadow paging, which PV guests need
    to live-migrate (Debian bookworm-security's 4.17.7 lacks it).
  - "RV(migrating): the guests whose migration still runs on this host (as its source). A guest counts when its
    migration lock C(/run/pft/migrate/GUEST.lock) is held (M(xen_migrate) hands it to C(xl migrate), which holds
    it as long as it and its children run); each lock file is tested with a non-blocking shared flock that is
    released at once, and no lock file or directory is ever created. As a fallback (a migration started by
    hand, without the lock), a guest also counts when an C(xl migrate GUEST HOST) process runs here
    (C(/proc/*/cmdline)). A guest seen on two hosts, or under a C(--incoming)/C(--migratedaway) name, whose
    name is in RV(migrating) on its source is still in flight, not a leftover."
  - Read-only.
version_added: "0.1.0"
author:
  - pft contributors
options:
  name:
    description:
      - Only these domains. Names not found are listed in RV(missing); that is not an error.
      - Default is every domain, Domain-0 included.
    type: list
    elements: str
  timeout:
    description: Deadline in seconds for each C(xl) command.
    type: float
    default: 30.0
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Read-only (lock files are only tested, never created); check mode runs exactly as a normal run.
  diff_mode:
    support: none
requirements:
  - Xen 4.17 toolstack (C(xl)) on the host; run as root.
seealso:
  - module: xen_prestage
  - module: xen_migrate
"""

EXAMPLES = r"""
- name: Read the domains and free memory of every compute node
  xen_domain_info:
  register: pft_xen

- name: Is guest1 here?
  xen_domain_info:
    name: [guest1]
  register: pft_guest1

- name: Refuse PV live migration on a hypervisor without shadow paging
  ansible.builtin.assert:
    that: pft_xen.host.shadow_paging
    fail_msg: "{{ inventory_hostname }}: Xen {{ pft_xen.host.xen_version }} has no shadow paging"
"""

RETURN = r"""
domains:
  description: The domains, in C(xl list) order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name (a migrating guest appears as C(NAME--incoming) or C(NAME--migratedaway)).
      type: str
    domid:
      description: Domain id.
      type: int
    state:
      description: One word from the C(xl list) state letters, most significant first, C(dying), C(crashed),
        C(shutdown), C(paused), C(running), C(blocked), or C(idle). A healthy idle PV guest is C(blocked).
      type: str
    state_flags:
      description: The six C(xl list) state letters, for example C(-b----).
      type: str
    memory_mb:
      description: Current memory (plus outstanding claims), MiB.
      type: int
    maxmem_mb:
      description: Static maximum memory (maxmem), MiB; null when the configuration cannot be read.
      type: int
    target_mb:
      description: Balloon target, MiB, from the configuration; null when unknown.
      type: int
    vcpus:
      description: Online vcpus.
      type: int
    cpu_s:
      description: CPU time used, seconds.
      type: float
    uptime_s:
      description: Seconds since the domain was created, restored or migrated in.
      type: int
    type:
      description: C(pv), C(pvh) or C(hvm).
      type: str
    kernel:
      description: Kernel path of a direct-boot guest, from the configuration.
      type: str
    ramdisk:
      description: Initrd path of a direct-boot guest, from the configuration.
      type: str
    cmdline:
      description: Kernel command line of a direct-boot guest.
      type: str
  sample:
    - {name: Domain-0, domid: 0, state: running, state_flags: r-----, memory_mb: 512, maxmem_mb: 512,
       vcpus: 1, cpu_s: 85.3, uptime_s: 640, type: pv}
    - {name: guest1, domid: 3, state: blocked, state_flags: "-b----", memory_mb: 128, maxmem_mb: 128,
       vcpus: 1, cpu_s: 7.1, uptime_s: 95, type: pv, kernel: /var/lib/pft/guest-boot/vmlinuz}
migrating:
  description: Guests whose migration from this host still runs (migration lock held, or an C(xl migrate GUEST HOST)
    process), sorted. With O(name), only those names.
  returned: always
  type: list
  elements: str
  sample: [guest1]
migrations:
  description: The same migrations with their evidence, one per guest of RV(migrating).
  returned: always
  type: list
  elements: dict
  contains:
    guest:
      description: Guest name.
      type: str
    lock_held:
      description: Whether its migration lock is held.
      type: bool
    lock_holder_pid:
      description: Pid of a process that holds the lock (normally C(xl migrate)), or null when not found or not
        held.
      type: int
    pids:
      description: Pids of the C(xl migrate) processes of this guest found in the process list.
      type: list
      elements: int
    targets:
      description: Target hosts named by those processes.
      type: list
      elements: str
  sample:
    - {guest: guest1, lock_held: true, lock_holder_pid: 4242, pids: [4242], targets: [compute3]}
guests:
  description: Names of the domains other than Domain-0.
  returned: always
  type: list
  elements: str
  sample: [guest1]
missing:
  description: Names asked for in O(name) that this host does not run.
  returned: always
  type: list
  elements: str
  sample: []
host:
  description: Facts of the Xen host.
  returned: always
  type: dict
  contains:
    hostname:
      description: Host name as Xen reports it.
      type: str
    free_memory_mb:
      description: Memory Xen can give a new domain, MiB (C(xl info) free_memory).
      type: int
    total_memory_mb:
      description: Host memory, MiB.
      type: int
    outstanding_claims_mb:
      description: Memory claimed by domains being built, MiB.
      type: int
    xen_version:
      description: Hypervisor version.
      type: str
    xen_commandline:
      description: Hypervisor command line.
      type: str
    toolstack_version:
      description: Version of the Debian package xen-utils-4.17; null when not found.
      type: str
    virt_caps:
      description: C(xl info) virt_caps words.
      type: list
      elements: str
    shadow_paging:
      description: Whether the hypervisor has shadow paging (virt_caps contains C(shadow)).
      type: bool
    nr_cpus:
      description: Physical CPUs.
      type: int
  sample: {hostname: compute1, free_memory_mb: 623, total_memory_mb: 1151, xen_version: 4.17.5-pre,
           toolstack_version: 4.17.5+72-g01140da4e8-1, virt_caps: [pv, hvm, shadow], shadow_paging: true}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_xen import XenError, domain_info  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="list", elements="str"),
            timeout=dict(type="float", default=30.0),
        ),
        supports_check_mode=True,
    )
    if module.params["timeout"] <= 0:
        module.fail_json(msg="timeout must be > 0, got %s" % module.params["timeout"])
    try:
        result = domain_info(names=module.params["name"], timeout=module.params["timeout"])
    except XenError as exc:
        module.fail_json(msg="xen_domain_info: %s" % exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
