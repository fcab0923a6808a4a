#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module xen_migrate: move a running guest to another dom0, instrumented and verified."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: xen_migrate
short_description: Live or stop-and-copy migration of a Xen guest to another dom0, with per-round instrumentation
description:
  - Run on the B(source) dom0. Migrates O(guest) to O(target) with C(xl migrate) (argv, no shell) over the
    restricted pft migration key, watches it line by line and verifies afterwards where the guest runs.
  - "Before: the guest must run here exactly once and not on the target; the target is probed through the
    migration key's read-only C(pft-probe) verb (Xen running, shadow paging, free memory >= guest memory +
    O(margin_mb)). A failed check fails the task before anything is touched."
  - "Instrumentation: with the LD_PRELOAD shim O(shim) (C(pft-xl-progress.so), built from
    C(roles/xen_host/files/pft-xl-progress.c)) C(xl -v migrate) prints libxc's per-round progress, which
    the module turns into pages per round, dirty rate, final-round pages, throughput and a downtime estimate.
    Without the shim the migration runs the same, with C(xl -vvv), and RV(stats.instrumentation) is
    C(no-progress)."
  - "Convergence guard: from round 2 on, a round of at least O(convergence_min_pages) pages that is not smaller
    than O(convergence_shrink) times the one before
    (or a predicted final copy longer than O(max_downtime)) means no convergence; then O(on_no_convergence)
    decides. Xen 4.17 has no in-band switch: C(stop-and-copy) pauses the guest (it stops dirtying pages, the
    next round is empty, libxc suspends it) and unpauses it for the suspend request; C(abort) ends the
    migration cleanly (SIGTERM to C(libxl-save-helper)) and the guest keeps running here; C(continue) lets
    Xen finish (at most 5 live rounds)."
  - "O(mode=stop-and-copy) pauses the guest as soon as libxc starts the save (its C(Saving domain) line),
    so all its memory is copied while it is stopped (the alternative of seed 002 section 4.6), and unpauses
    it when that first pass ends so that it can answer the suspend request; the next round is then almost
    empty. It uses the same safe C(xl migrate) handshake (the source copy is destroyed only after the
    target has the whole guest). Pausing before C(xl migrate) starts makes libxc 4.17 fail the save
    (C(Bad mfn for L1), seen on the testbed)."
  - O(deadline) and O(stall_timeout) abort the migration cleanly while that is still possible (before
    C(Giving target permission to start)); after that point the module waits for C(xl), but not for ever.
  - "Past the point of no return (C(Giving target permission to start)) the module waits for the hand-over
    until the later of (point of no return + O(handover_timeout)) and (start of C(xl) + O(deadline)). It then
    stops waiting B(without killing xl) (killing it then could leave the guest on neither host) and fails with
    RV(failure=handover-timeout) and RV(in_flight=true): the guest may still be moving, C(xl migrate) (RV(xl_pid))
    is left running and still holds the migration lock, and pft's next run reconciles the migration (keep its
    journal entry pending). Likewise a clean abort that does not end C(xl) within max(O(handover_timeout), 60 s)
    gives RV(failure=abort-timeout) and RV(in_flight=true). The longest run is therefore about O(deadline) + 20 s
    + O(handover_timeout), plus the checks before and the look after (each bounded by its command deadline)."
  - "Migration lock: before C(xl migrate) starts, the module takes an exclusive flock on
    C(/run/pft/migrate/GUEST.lock) on this host (the directory is made 0700 if missing) and hands the locked
    descriptor to C(xl migrate), so the lock is held exactly as long as C(xl) and its children (the ssh
    transport) run, even when the module, Ansible or the controller dies. If the lock is already held another
    migration of the guest still runs: the module refuses with RV(failure=migration-running) and touches
    nothing. M(xen_domain_info) lists the guests whose lock is held (C(migrating))."
  - "After: success means xl succeeded, the guest runs on the target exactly once and is gone from here.
    While either host still shows the hand-over (a C(--incoming) or C(--migratedaway) name, or a dying
    domain: the source copy is freed after C(xl) returns), the check looks again for up to 30 s.
    On failure the module verifies where the guest runs and fails with the cause; the message says whether
    the guest still runs here exactly once (the safe outcome) or names what was found on both hosts."
version_added: "0.1.0"
author:
  - pft developers
options:
  guest:
    description: Name of the guest domain.
    type: str
    required: true
  target:
    description: The target dom0 as this dom0's ssh (and C(xl migrate)) knows it, a host name or address.
    type: str
    required: true
  mode:
    description: C(live) (pre-copy) or C(stop-and-copy) (the guest is paused for the whole copy).
    type: str
    choices: [live, stop-and-copy]
    default: live
  on_no_convergence:
    description: What to do when the convergence guard says the pre-copy does not converge.
    type: str
    choices: [stop-and-copy, abort, continue]
    default: stop-and-copy
  convergence_shrink:
    description: A live round from round 2 on that is at least this fraction of the round before counts as
      no convergence.
    type: float
    default: 0.8
  convergence_min_pages:
    description: Rounds smaller than this many pages are never judged as not converging.
    type: int
    default: 1024
  max_downtime:
    description: Seconds; at Xen's last live round, a predicted final copy longer than this counts as no
      convergence. The prediction is that round's pages over the throughput measured on the live rounds
      sent so far. Unset to not use.
    type: float
  deadline:
    description: Seconds for the whole migration; reaching it before the handover aborts cleanly.
    type: float
    default: 900.0
  stall_timeout:
    description: Seconds without any output or transferred byte before the handover after which the
      migration is aborted cleanly (a dead or unreachable target).
    type: float
    default: 90.0
  handover_timeout:
    description:
      - Seconds the module waits at least for the hand-over after the point of no return. It stops waiting at
        the later of (point of no return + O(handover_timeout)) and (start + O(deadline)), leaves C(xl) running
        and fails with RV(failure=handover-timeout) and RV(in_flight=true).
      - The later of the two because O(deadline) is the budget the caller already planned for (stopping before it
        only trades a confirmed outcome for an unconfirmed one), while a point of no return reached near the
        deadline must still get time for the hand-over, since nothing can be aborted past it. A normal hand-over
        takes seconds (about 10 s under TCG, mostly the target's hotplug scripts).
    type: float
    default: 120.0
  margin_mb:
    description: Free memory, MiB, the target must have beyond the guest's memory.
    type: int
    default: 16
  shim:
    description: Path of the LD_PRELOAD progress shim on this dom0; when missing the migration runs without
      per-round counts.
    type: path
    default: /usr/local/lib/pft/pft-xl-progress.so
  log:
    description: File on this dom0 to which the events and a summary are appended as JSON lines. Its
      directory is made (mode 0750) if missing. A log that cannot be written is a warning and
      RV(log_error), never a failed migration.
    type: path
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Probes the source and the target and runs every pre-check; reports C(changed) when it would
      migrate. Nothing is paused, sent or started.
  diff_mode:
    support: full
    details: before is the host the guest runs on, after the host it would run on.
requirements:
  - Xen 4.17 toolstack on both dom0s; the xen_host role's migration key and forced command
    (C(pft-migrate-receive) with C(pft-probe)) on the target.
notes:
  - Stock C(xl) in 4.17 has a fixed pre-copy policy (5 live rounds, or fewer than 50 dirty pages); see
    C(docs/xen-migration.md) for how the numbers are obtained and what they mean.
  - Pages are not bytes, since round 0 counts unpopulated pfns and the final round counts ballooned-out pfns
    (no data). RV(stats.mib_sent) comes from the transport's byte count.
seealso:
  - module: xen_prestage
  - module: xen_domain_info
"""

EXAMPLES = r"""
- name: Evacuate guest1 from the failing node to the spare
  xen_migrate:
    guest: guest1
    target: compute3
    on_no_convergence: stop-and-copy
    deadline: 600
    log: /var/log/pft/migrations.jsonl
  register: pft_migration

- name: Show the per-round page counts
  ansible.builtin.debug:
    msg: >-
      {{ pft_migration.stats.iterations | map(attribute='pages') | list }}
      then {{ pft_migration.stats.final_round_pages }}

- name: Stop-and-copy instead of live migration
  xen_migrate:
    guest: guest1
    target: compute3
    mode: stop-and-copy
"""

RETURN = r"""
log_error:
  description: Why the O(log) record could not be written (the migration's own result is unaffected), or null.
  returned: when O(log) is set and not in check mode
  type: str
  sample: "could not append the migration record to /var/log/pft/migrations.jsonl: [Errno 28] No space left on device"
migrated:
  description: Whether the guest now runs on the target (exactly once) and not here.
  returned: always
  type: bool
  sample: true
source_running:
  description: Whether the guest runs on this (source) host exactly once after the run.
  returned: always
  type: bool
  sample: false
target_running:
  description: Whether the guest runs on the target exactly once after the run; null if the target could not
    be asked.
  returned: always
  type: bool
  sample: true
failure:
  description:
    - The cause when the migration failed or was refused (a pre-check, an abort by the guard, the
      deadline or a stall, or xl's own failure line with its errors); null on success.
    - "Fixed words for the cases a caller acts on: C(handover-timeout) and C(abort-timeout) (with RV(in_flight)
      true) say that the module stopped waiting while C(xl migrate) still ran, C(migration-running) that
      another migration of the guest holds its lock; also C(guest-not-here), C(guest-on-target), and
      C(target-check: ...) for the pre-checks."
  returned: always
  type: str
  sample: "no progress for 90 s (target unreachable?)"
in_flight:
  description:
    - True when the module stopped waiting while C(xl migrate) still runs (RV(failure) C(handover-timeout),
      past the point of no return, or C(abort-timeout), an abort that did not end C(xl)). The guest may still be
      moving; C(xl) was not killed and still holds the migration lock. The task fails; do not count the
      migration as failed or done, keep its journal entry and reservation, and let the next run reconcile
      it (M(xen_domain_info) lists the guest under C(migrating) until C(xl) ends).
    - False otherwise, also for C(migration-running) (this call started nothing).
  returned: always
  type: bool
  sample: false
xl_pid:
  description: Pid, on this host, of the C(xl migrate) that was left running.
  returned: when RV(in_flight) is true
  type: int
  sample: 4242
xl_output_file:
  description: File on this host that receives what the C(xl migrate) left running prints from then on (source
    and target lines); null if it could not be made.
  returned: when RV(in_flight) is true
  type: str
  sample: /run/pft/migrate/guest1.out
lock:
  description: The guest's migration lock on this host, C(/run/pft/migrate/GUEST.lock).
  returned: except when the module fails with an error before it decides (invalid arguments, a look that failed)
  type: str
  sample: /run/pft/migrate/guest1.lock
lock_holder_pid:
  description: Pid of the process that holds the migration lock (normally the running C(xl migrate)), or null
    when it cannot be found.
  returned: when RV(failure) is C(migration-running)
  type: int
  sample: 4242
checks:
  description: Pre-checks of the target.
  returned: always
  type: list
  elements: dict
  sample: [{name: memory, ok: true, detail: "target has 623 MiB free, guest needs 128 MiB + 16 MiB margin"}]
instrumentation:
  description: C(progress) when per-round counts were seen, C(no-progress) otherwise (no shim).
  returned: always
  type: str
  sample: progress
stats:
  description: What the migration did; null when no migration was started.
  returned: when a migration was started
  type: dict
  contains:
    total_s:
      description: Seconds from starting xl to its exit.
      type: float
    iterations:
      description: Live rounds, each with C(iteration) (libxc's label), C(pages), C(mib), C(seconds),
        C(dirty_rate_pps) (pages dirtied per second while this round was sent, from the next round's size)
        and C(t_start_s).
      type: list
      elements: dict
    live_rounds:
      description: Number of live rounds.
      type: int
    final_round_pages:
      description: Pages sent while the guest was suspended (the stop-and-copy round), including deferred pfns.
      type: int
    final_round_data_pages_est:
      description: Final-round pages minus the estimated unpopulated (ballooned-out) pfns.
      type: int
    converged_early:
      description: Whether libxc stopped before its 5-round cap because a round had fewer than 50 pages.
      type: bool
    convergence:
      description: C(converged), or the guard's reason when it found no convergence.
      type: str
    throughput_pps:
      description: Pages per second over the live rounds.
      type: float
    downtime_estimate_s:
      description: Seconds from the suspend to the target's "Domain started" line (C(downtime_log_s)), or,
        without those lines, the final round's data pages over the throughput (C(downtime_copy_est_s)).
      type: float
    mib_sent:
      description: MiB read by the ssh transport (the migration stream plus a little ssh traffic).
      type: float
    instrumentation:
      description: C(progress) or C(no-progress).
      type: str
    markers_s:
      description: Seconds from start of each marker (saving, suspended, no_return, target_started, result...).
      type: dict
    settle_s:
      description: Seconds the check after C(xl) waited for the hand-over to end on both hosts.
      type: float
    events:
      description: Round starts and ends, guard verdicts, pause/unpause and abort actions, with times.
      type: list
      elements: dict
  sample:
    total_s: 41.2
    iterations:
      - {iteration: 0, pages: 32768, mib: 128.0, seconds: 21.5, dirty_rate_pps: 19.3, t_start_s: 3.1}
      - {iteration: 1, pages: 415, mib: 1.62, seconds: 0.4, dirty_rate_pps: 40.1, t_start_s: 24.6}
    final_round_pages: 17
    downtime_estimate_s: 8.4
    mib_sent: 130.2
    instrumentation: progress
target_host:
  description: The target's host facts from its probe (free memory, versions, virt_caps).
  returned: always
  type: dict
xl_output:
  description: The last lines xl printed (source and target), each with its time from start.
  returned: when a migration was started
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_xen import ConvergenceGuard, XenError, migrate  # noqa: E402

SHIM_DEFAULT = "/usr/local/lib/pft/pft-xl-progress.so"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            guest=dict(type="str", required=True),
            target=dict(type="str", required=True),
            mode=dict(type="str", choices=["live", "stop-and-copy"], default="live"),
            on_no_convergence=dict(type="str", choices=["stop-and-copy", "abort", "continue"],
                                   default="stop-and-copy"),
            convergence_shrink=dict(type="float", default=0.8),
            convergence_min_pages=dict(type="int", default=1024),
            max_downtime=dict(type="float"),
            deadline=dict(type="float", default=900.0),
            stall_timeout=dict(type="float", default=90.0),
            handover_timeout=dict(type="float", default=120.0),
            margin_mb=dict(type="int", default=16),
            shim=dict(type="path", default=SHIM_DEFAULT),
            log=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for key in ("deadline", "stall_timeout", "handover_timeout"):
        if p[key] <= 0:
            module.fail_json(msg="%s must be > 0, got %s" % (key, p[key]))
    if not 0 < p["convergence_shrink"] <= 2:
        module.fail_json(msg="convergence_shrink must be in (0, 2], got %s" % p["convergence_shrink"])
    guard = ConvergenceGuard(shrink=p["convergence_shrink"], max_downtime_s=p["max_downtime"],
                             min_pages=p["convergence_min_pages"])
    try:
        failed, msg, result = migrate(p["guest"], p["target"], mode=p["mode"],
                                      on_no_convergence=p["on_no_convergence"], deadline=p["deadline"],
                                      stall_timeout=p["stall_timeout"], shim=p["shim"], log_path=p["log"],
                                      check_mode=module.check_mode, margin_mb=p["margin_mb"], guard=guard,
                                      handover_timeout=p["handover_timeout"])
    except XenError as exc:
        module.fail_json(msg="xen_migrate %s -> %s: %s" % (p["guest"], p["target"], exc), migrated=False,
                         failure=str(exc), in_flight=False)
    if result.get("log_error"):
        module.warn(result["log_error"])
    if failed:
        module.fail_json(msg=msg, **result)
    module.exit_json(msg=msg, **result)


if __name__ == "__main__":
    main()
