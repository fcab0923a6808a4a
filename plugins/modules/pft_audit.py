#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pft_audit
short_description: Journal pft evacuations, write their audit records, and reconcile interrupted ones
description:
  - O(state=started) writes a journal entry for an evacuation about to begin
    (O(state_dir)C(/journal/<id>.json)) and returns its RV(id). Give O(record) the node, guest, target
    and reservation owner.
  - O(state=completed) merges O(record) into the entry, appends the whole record as one JSON line to
    the audit log (O(audit_file)) with its O(outcome) and duration, and removes the entry.
  - O(state=event) appends O(record) to the audit log at once (pre-stages, alerts, returns to service).
  - O(state=pending) lists journal entries that no run completed.
  - O(state=reconciled) completes the entries a killed controller left behind; O(placements) says which
    guests every compute node runs. An entry whose guest runs exactly once is completed with outcome
    C(reconciled) and where it runs (C(target), C(source), C(elsewhere)); its reservation owner is
    returned in RV(reconciled) for release. A guest found on no node, on two, or not found while some node
    could not be asked stays pending and is returned in RV(alerts), for a human.
  - O(state=query) reads the audit log and returns its records in RV(records), oldest first (only those of
    O(outcome) when given, the last O(limit) when given). It changes nothing and takes no lock. A line that is
    not one whole JSON record (torn by a crash or a full disk in the middle of an append) is skipped with a
    warning that names its line number, never guessed at.
  - A record is appended as one whole line or not at all (a write that cannot be completed is cut off again),
    fsynced before the journal entry goes; when the append fails, the module fails and the entry stays.
version_added: "0.1.0"
author:
  - pft contributors
options:
  state:
    description: What to do.
    type: str
    choices: [started, completed, event, pending, reconciled, query]
    default: event
  id:
    description:
      - Record id. Returned by O(state=started) and required by O(state=completed).
      - For O(state=started), an id already journaled returns that entry unchanged.
    type: str
  record:
    description: Fields of the record (node, guest, target, owner, sensors, ranking, migration stats...).
    type: dict
    default: {}
  outcome:
    description:
      - How it ended (for example V(migrated), V(failed), V(prestaged)); required by O(state=completed).
      - For O(state=query), return only the records of this outcome.
    type: str
  limit:
    description:
      - For O(state=query), return only the last (most recent) this many records that match; all when unset.
      - Must be at least 1.
    type: int
  placements:
    description:
      - For O(state=reconciled), every compute node mapped to the list of domain names it runs, or null
        when the node could not be asked.
    type: dict
  migrating:
    description:
      - For O(state=reconciled), every compute node mapped to the guests whose C(xl migrate) still runs there
        (C(migrating) of M(xen_domain_info)). Such a guest, or one seen under a hand-over name
        (C(--incoming), C(--migratedaway)), is in flight; its entry and its reservation are kept, and a later
        run looks again.
    type: dict
  stale_after:
    description:
      - For O(state=reconciled), an entry whose run's ansible-playbook process is still alive is in
        progress and left alone. When the entry does not name that process, it counts as interrupted
        only after this many seconds (make it longer than a migration's deadline).
    type: float
    default: 3600
  audit_file:
    description: The audit log. Defaults to O(state_dir)C(/audit.jsonl).
    type: path
extends_documentation_fragment:
  - pft.attributes
  - pft.state_dir
attributes:
  check_mode:
    support: full
    details: Returns the record that would be written; writes nothing. O(state=query) reads the log in check mode too.
  diff_mode:
    support: none
notes:
  - Run it on the controller.
seealso:
  - module: pft_quarantine
  - module: pft_watch_decide
"""

EXAMPLES = r"""
- name: Journal the evacuation
  pft_audit:
    state: started
    record:
      node: compute1
      guest: guest1
      target: "{{ pft_spare.host }}"
      owner: "pft-compute1"
  delegate_to: localhost
  register: pft_record

- name: Complete its audit record
  pft_audit:
    state: completed
    id: "{{ pft_record.id }}"
    outcome: migrated
    record:
      migration: "{{ pft_migration.stats }}"
  delegate_to: localhost

- name: Finish what a killed run left behind
  pft_audit:
    state: reconciled
    placements: {compute1: [], compute2: [guest1], compute3: null}
  delegate_to: localhost

- name: The last 20 migrations (torn lines are skipped with a warning)
  pft_audit:
    state: query
    outcome: migrated
    limit: 20
    state_dir: /var/lib/pft
  delegate_to: localhost
  register: pft_history

- name: Their migration times
  ansible.builtin.debug:
    msg: "{{ pft_history.records | map(attribute='migration') | select('mapping') | map(attribute='total_s') | list }}"
"""

RETURN = r"""
id:
  description: The record id.
  returned: when state is started, completed or event
  type: str
  sample: 20261123T130140Z-compute1-a1b2c3
record:
  description: The record as journaled or written.
  returned: when state is started, completed or event
  type: dict
  sample: {id: 20261123T130140Z-compute1-a1b2c3, node: compute1, guest: guest1, target: compute3, outcome: migrated}
audit_file:
  description: The audit log written to, or read (O(state=query)).
  returned: when a line was written, and when state is query
  type: str
  sample: /var/lib/pft/audit.jsonl
records:
  description:
    - The whole records of the audit log, oldest first, filtered by O(outcome) and O(limit).
    - Lines that are not whole records are not in it; a warning names each of them by its line number.
  returned: when state is query
  type: list
  elements: dict
  sample: [{id: 20261123T130140Z-compute1-a1b2c3, node: compute1, guest: guest1, target: compute3, outcome: migrated,
            migration: {total_s: 41.2}, duration_s: 45.1}]
pending:
  description:
    - Journal entries not completed. C(in_progress) is true while the C(ansible-playbook) run that began the entry
      still runs (an operator's evacuation, a watch run working its queue).
  returned: when state is pending
  type: list
  elements: dict
  sample: [{id: 20261123T130140Z-compute1-a1b2c3, guest: guest1, node: compute1, status: in-progress,
            in_progress: false}]
interrupted:
  description: The entries of RV(pending) whose run is gone (C(in_progress) false); what O(state=reconciled) finishes.
  returned: when state is pending
  type: list
  elements: dict
reconciled:
  description: Per pending entry, where its guest was found and what was done.
  returned: when state is reconciled
  type: list
  elements: dict
  sample: [{id: 20261123T130140Z-compute1-a1b2c3, guest: guest1, state: once, location: target, owner: pft-compute1}]
in_progress:
  description: Entries whose run is still going; left alone.
  returned: when state is reconciled
  type: list
  elements: dict
  sample: []
in_flight:
  description: Entries whose guest is still moving (a migration that outlived the run that began it); kept pending.
  returned: when state is reconciled
  type: list
  elements: dict
  sample: []
alerts:
  description: Entries left pending because their guest was not found exactly once.
  returned: when state is reconciled
  type: list
  elements: dict
  sample: []
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: audit record 20261123T130140Z-compute1-a1b2c3 written (migrated)
"""


from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_state import STATE_ARGS, WatchError, audit, reconcile  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "completed", "event", "pending", "reconciled", "query"],
                       default="event"),
            id=dict(type="str"),
            record=dict(type="dict", default={}),
            outcome=dict(type="str"),
            placements=dict(type="dict"),
            migrating=dict(type="dict"),
            stale_after=dict(type="float", default=3600),
            audit_file=dict(type="path"),
            limit=dict(type="int"),
            **STATE_ARGS
        ),
        required_if=[("state", "completed", ("id", "outcome")), ("state", "reconciled", ("placements",))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["state"] == "reconciled":
            out = reconcile(p["state_dir"], p["placements"], audit_file=p["audit_file"], dry_run=module.check_mode,
                            lock_timeout=p["lock_timeout"], stale_after=p["stale_after"], migrating=p["migrating"])
            out["msg"] = "%d interrupted evacuation(s) completed, %d still moving, %d need a human" % (
                len([i for i in out["reconciled"] if not i["alert"]]), len(out["in_flight"]), len(out["alerts"]))
        elif p["state"] == "query":
            out = audit(p["state_dir"], "query", outcome=p["outcome"], audit_file=p["audit_file"], limit=p["limit"])
            torn = out.pop("warnings")
            for warning in torn:
                module.warn(warning)
            out["msg"] = "%d audit record(s)%s in %s%s" % (
                len(out["records"]), " with outcome %s" % p["outcome"] if p["outcome"] else "", out["audit_file"],
                "; %d torn line(s) skipped" % len(torn) if torn else "")
        else:
            out = audit(p["state_dir"], p["state"], record=p["record"], record_id=p["id"], outcome=p["outcome"],
                        audit_file=p["audit_file"], dry_run=module.check_mode, lock_timeout=p["lock_timeout"])
            if p["state"] == "pending":
                out["msg"] = "%d pending evacuation(s)" % len(out["pending"])
            elif "msg" not in out:
                out["msg"] = "%s %s (%s)" % ({"started": "journaled", "completed": "audit record written",
                                              "event": "audit record written"}[p["state"]], out["id"],
                                             p["outcome"] or p["state"])
    except Exception as exc:  # every failure is one clean message naming what is at fault
        fail(module, 'pft_audit', exc, clean=(WatchError,))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
