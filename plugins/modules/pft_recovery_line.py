#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_recovery_line
short_description: Keep the books of an MPI job's global recovery lines (consistent checkpoints of all its guests)
description:
  - A job is a named set of guests that must roll back together (the ranks of one MPI job). A recovery line is
    one checkpoint of every guest of the job, taken while all of them were paused, so that together the images
    are a consistent state of the job (seed 003's global recovery line).
  - This module keeps the books of the lines in O(state_dir)C(/recovery-lines.json), under the state
    directory's lock. The guests themselves are paused, saved and resumed by the playbook that calls it.
  - O(state=begin) opens a line of O(guests). A line still open from a run that died before committing it is
    abandoned (RV(abandoned)); its images are listed in RV(discard).
  - O(state=record) notes what happened to one O(guest) of the open line O(line) (its node, the times it was
    asked to pause, paused, began and ended its save and resumed, and its O(image)).
  - O(state=commit) makes the line the job's newest complete line, only when every guest has an image with a
    path, a size and a sha256; otherwise it fails naming the guests, and the job's line stays the previous
    one. The last O(keep) committed lines are kept; the images of older ones are listed in RV(discard), for
    the caller to remove after the commit.
  - O(state=abort) gives up the open line, with O(reason).
  - O(state=query) returns the job's newest complete line (what a restore uses) and what is kept.
version_added: "0.3.0"
author:
  - pft contributors
options:
  state:
    description: What to do.
    type: str
    choices: [begin, record, commit, abort, query]
    default: query
  job:
    description: The job's name (letters, digits, C(_.:-)).
    type: str
    required: true
  guests:
    description: The guests of the line (O(state=begin)).
    type: list
    elements: str
  line:
    description: The line's id, as RV(line.id) returned by O(state=begin) (O(state=record), V(commit), V(abort)).
    type: str
  line_id:
    description: With O(state=begin), the id to give the new line. Default, the UTC time and a random suffix.
    type: str
  guest:
    description: The guest O(state=record) is about.
    type: str
  node:
    description: The node the guest ran on when the line was taken.
    type: str
  times:
    description:
      - With O(state=record), any of C(pause_requested), C(paused), C(save_started), C(saved), C(resumed), in
        seconds since the epoch on the controller's clock.
    type: dict
    default: {}
  image:
    description:
      - With O(state=record), the guest's image of this line.
    type: dict
    suboptions:
      path:
        description: Where the image is.
        type: str
        required: true
      node:
        description: The node whose disk holds it (omitted, the controller or shared storage).
        type: str
      size:
        description: Its size in bytes.
        type: int
      sha256:
        description: Its sha256, 64 hex digits.
        type: str
  keep:
    description: With O(state=commit), how many committed lines to keep for the job (the newest included).
    type: int
    default: 2
  reason:
    description: With O(state=abort), why the line was given up (kept in the record).
    type: str
    default: aborted
extends_documentation_fragment:
  - pft.attributes
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: Returns the same answer as a real run and writes nothing (not even the state directory).
  diff_mode:
    support: none
notes:
  - Run it on the controller.
  - A line is only as consistent as the protocol behind it. C(docs/recovery.md) says why suspending every guest
    (C(xl save -p)) and resuming none before the last image is saved gives a consistent line for TCP-based MPI,
    and when it would not.
seealso:
  - module: xen_prestage
  - module: xen_restore
"""

EXAMPLES = r"""
- name: Open a line of the job's guests
  pft_recovery_line:
    state: begin
    job: job1
    guests: [guest1, guest2]
  register: pft_line

- name: Note guest1's pause, save and image
  pft_recovery_line:
    state: record
    job: job1
    line: "{{ pft_line.line.id }}"
    guest: guest1
    node: compute1
    times: {pause_requested: 1796680000.1, paused: 1796680000.3, save_started: 1796680000.4, saved: 1796680004.9}
    image: {path: /var/lib/pft/lines/job1/guest1.save, node: compute3, size: 167772160, sha256: "{{ sha }}"}

- name: Commit it when every guest is saved
  pft_recovery_line:
    state: commit
    job: job1
    line: "{{ pft_line.line.id }}"

- name: The line a restore uses
  pft_recovery_line:
    job: job1
  register: pft_newest
"""

RETURN = r"""
line:
  description: The line begun, committed or aborted, with its guests and (once committed) its RV(line.timings).
  returned: when state is begin, commit or abort
  type: dict
  contains:
    id:
      description: The line's id.
      type: str
    timings:
      description:
        - Seed 003's delays, in seconds. C(drain_s) from the first pause request to the last guest paused;
          C(pause_skew_s) and C(resume_skew_s), how far apart the guests paused and resumed; C(longest_pause_s);
          C(save_s) per guest; C(resume_s) from the last save to the last guest running; C(line_s) in all.
      type: dict
  sample: {id: 20261207T221500Z-1a2b3c, job: job1, began: 1796680000.1, guests: {guest1: {}, guest2: {}}}
guest:
  description: The guest's entry in the open line after O(state=record).
  returned: when state is record
  type: dict
abandoned:
  description: The line left open by an earlier run that O(state=begin) abandoned, or null.
  returned: when state is begin
  type: dict
discard:
  description: Images no kept line uses any more ({node, path}); remove them after this task.
  returned: when state is begin, commit or abort
  type: list
  elements: dict
  sample: [{node: compute3, path: /var/lib/pft/lines/job1/L1/guest1.save}]
superseded:
  description: Ids of the committed lines no longer kept.
  returned: when state is commit
  type: list
  elements: str
newest:
  description: The job's newest complete line with its age in seconds (C(age_s)), or null when it has none.
  returned: always
  type: dict
status:
  description: What is kept for the job (C(open), C(committed), C(abandoned)).
  returned: when state is query
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_recovery_line import LineError, LineStore  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError  # noqa: E402

IMAGE_SPEC = dict(path=dict(type="str", required=True), node=dict(type="str"), size=dict(type="int"),
                  sha256=dict(type="str"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["begin", "record", "commit", "abort", "query"], default="query"),
            job=dict(type="str", required=True),
            guests=dict(type="list", elements="str"),
            line=dict(type="str"),
            line_id=dict(type="str"),
            guest=dict(type="str"),
            node=dict(type="str"),
            times=dict(type="dict", default={}),
            image=dict(type="dict", options=IMAGE_SPEC),
            keep=dict(type="int", default=2),
            reason=dict(type="str", default="aborted"),
            **STATE_ARGS
        ),
        required_if=[("state", "begin", ("guests",)), ("state", "record", ("line", "guest")),
                     ("state", "commit", ("line",)), ("state", "abort", ("line",))],
        supports_check_mode=True,
    )
    p = module.params
    store = LineStore(p["state_dir"], lock_timeout=p["lock_timeout"], dry_run=module.check_mode)
    result = {}
    try:
        if p["state"] == "begin":
            result = store.begin(p["job"], p["guests"], line_id=p["line_id"])
        elif p["state"] == "record":
            image = {k: v for k, v in (p["image"] or {}).items() if v is not None} or None
            result = {"guest": store.record(p["job"], p["line"], p["guest"], node=p["node"], image=image,
                                            **p["times"])}
        elif p["state"] == "commit":
            result = store.commit(p["job"], p["line"], keep=p["keep"])
        elif p["state"] == "abort":
            result = store.abort(p["job"], p["line"], p["reason"])
        else:
            result = {"status": store.status(p["job"])}
        result["newest"] = store.newest(p["job"])
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, "pft_recovery_line", exc, clean=(LineError, WatchError))
    module.exit_json(changed=p["state"] not in ("query",) and not module.check_mode, **result)


if __name__ == "__main__":
    main()
