#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_files
short_description: Write a node's small files and directories, and remove stale ones, in one task
description:
  - The roles' configuration files, scripts and directories on a node, in one module run instead of
    one or two per file (M(ansible.builtin.template) and M(ansible.builtin.copy) start a Python
    interpreter on the node for the check, and another for the attributes). On a Xen PV dom0 each
    interpreter start is costly; under emulation, 15-50 s.
  - Each entry of O(files) is a file with its content, a directory, or a path to remove. They are
    handled in order, so list a directory before the files in it.
  - A file is written to a temporary file in its directory, validated if O(files[].validate) is set,
    and renamed over the old one. Only what differs is changed (content, mode, owner).
  - Render the content on the controller, with P(ansible.builtin.template#lookup) or
    P(ansible.builtin.file#lookup) (C(rstrip=false)).
  - It stops at the first entry it cannot handle and names it; the entries before it are done.
version_added: "0.1.0"
author:
  - pft contributors
options:
  files:
    description: The entries, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path on the node.
        type: path
        required: true
      state:
        description: V(file) writes O(files[].content), V(directory) makes a directory (with its parents),
          V(absent) removes a file or symlink (not a directory).
        type: str
        choices: [file, directory, absent]
        default: file
      content:
        description: The file's text (O(files[].state=file)).
        type: str
      mode:
        description: Octal permissions, as a string. Without it, C(0644) for files and C(0755) for directories.
        type: str
      owner:
        description: Owner's user name.
        type: str
        default: root
      group:
        description: Group name.
        type: str
        default: root
      validate:
        description: Command run on the new file before it replaces the old one, with C(%s) for its path
          (for example C(/usr/sbin/sshd -t -f %s)). A failure leaves the old file and fails the task.
        type: str
      sensitive:
        description:
          - Keep the content out of the diff.
          - Only the diff. The module's arguments, contents included, still reach the node's log and
            verbose output; a secret needs C(no_log) on its task, which hides the whole task's output.
        type: bool
        default: false
  absent:
    description:
      - Paths to remove (files or symlinks, not directories), after O(files). A missing path is fine.
      - The same as entries of O(files) with O(files[].state=absent).
    type: list
    elements: path
    default: []
  validate_timeout:
    description: Deadline in seconds for each validate command.
    type: float
    default: 60
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change; writes nothing and runs no validate command.
  diff_mode:
    support: full
    details: One diff per changed entry; sensitive contents are left out.
notes:
  - Binary files (a compiled library, a kernel) are for M(ansible.builtin.copy).
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.copy
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Configure the toolstack and the guest bridge
  pft_files:
    files:
      - path: /etc/xen/xl.conf
        content: "{{ lookup('ansible.builtin.template', 'xl.conf.j2') }}"
      - path: /usr/local/lib/pft
        state: directory
      - path: /usr/local/lib/pft/pft_xen.py
        content: "{{ lookup('ansible.builtin.file', 'plugins/module_utils/pft_xen.py', rstrip=false) }}"
      - path: /etc/ssh/sshd_config.d/50-pft-migration.conf
        content: "{{ lookup('ansible.builtin.template', 'sshd-pft-migration.conf.j2') }}"
        validate: /usr/sbin/sshd -t -f %s
    absent:
      - /etc/network/interfaces.d/pft-eth0
  register: xen_host_files
  notify: Reload sshd

# A handler that runs only when its own file changed
# - name: Reload sshd
#   ansible.builtin.service: {name: ssh, state: reloaded}
#   when: "'/etc/ssh/sshd_config.d/50-pft-migration.conf' in xen_host_files.changed_paths"
"""

RETURN = r"""
changed_paths:
  description:
    - The paths that changed (would change, in check mode), in the order given.
    - On a failure, the paths changed before it; the entries after it were left untouched.
  returned: always
  type: list
  elements: str
  sample: [/etc/xen/xl.conf]
files:
  description: One entry per path, with what differed (C(created), C(content), C(mode), C(owner), C(removed)).
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/xen/xl.conf, state: file, changed: true, reasons: [content]}]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_files import FilesError, apply, diffs, normalize, plan, summary  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=dict(
                path=dict(type="path", required=True),
                state=dict(type="str", choices=["file", "directory", "absent"], default="file"),
                content=dict(type="str"),
                mode=dict(type="str"),
                owner=dict(type="str", default="root"),
                group=dict(type="str", default="root"),
                validate=dict(type="str"),
                sensitive=dict(type="bool", default=False),
            )),
            absent=dict(type="list", elements="path", default=[]),
            validate_timeout=dict(type="float", default=60),
        ),
        supports_check_mode=True,
    )
    try:
        absent = [dict(path=path, state="absent") for path in module.params["absent"]]
        entries = normalize(module.params["files"] + absent)
        planned = plan(entries)
        if not module.check_mode:
            apply(entries, planned, validate_timeout=module.params["validate_timeout"])
    except FilesError as exc:
        # what was changed before the failure, so that the run says so
        module.fail_json(msg="pft_files: %s" % exc, changed=bool(exc.done), changed_paths=exc.done)
    out = summary(planned)
    if module._diff:
        out["diff"] = diffs(entries, planned)
    module.exit_json(changed=bool(out["changed_paths"]), **out)


if __name__ == "__main__":
    main()
