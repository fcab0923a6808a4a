# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""One live migration of a guest, the whole act (xen_migrate): checks, lock, ``xl migrate``, verification (issue 6).

:func:`migrate` checks the source and the target (its probe), takes the guest's migration lock (pft_xen_lock),
runs ``xl migrate`` (:class:`Migration`, pft_xen_xl_migrate) and verifies where the guest runs afterwards
(:func:`locate`). When pft stopped waiting for xl past the point of no return, the result says ``in_flight``.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.pft_xen import (
        XL,
        XenError,
        check_host,
        check_name,
        check_target,
        find_domain,
        guest_rows,
        probe_target,
        rows_str,
        run,
        running_once,
        toolstack_version,
    )
from ansible.module_utils.pft_xen_lock import (
        LOCK_DIR,
        MigrationRunning,
        acquire_migration_lock,
        lock_holder,
        lock_is_held,
        migration_lock_path,
    )
from ansible.module_utils.pft_xen_xl_migrate import HANDOVER_TIMEOUT_S, MODES, POLICIES, SHIM, Migration


def write_log(path, records):
    """Append records as JSON lines to path (its directory made 0750 if missing). Returns None, or
    the reason it could not: the log is a record of the migration, never a cause to fail it."""
    try:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o750, exist_ok=True)
        with open(path, "a") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
    except (OSError, TypeError, ValueError) as exc:
        return "could not append the migration record to %s: %s" % (path, exc)
    return None


def in_handover(rows):
    """True while a side still shows the hand-over: a --incoming or --migratedaway name, or a dying domain."""
    return any(r["role"] != "self" or r["state"] == "dying" for r in rows)


# How long the verification after `xl migrate` waits for the hand-over to end. xl returns once the
# receiver said it has the guest; the source domain may still be dying for a moment (Xen frees its
# pages first: seconds for 128 MiB on a TCG dom0), and a failed run may leave an --incoming name
# that the receiver is still destroying.
SETTLE_S = 30.0


def locate(guest, target, runner=None, xl=XL, wait=SETTLE_S, clock=time.monotonic, sleep=time.sleep):
    """Where the guest is after a migration: (source rows, target rows, target known, probe error,
    seconds waited). Looks again, for up to `wait` seconds, while either side is in the hand-over."""
    runner = runner or run
    t0 = clock()
    while True:
        src = guest_rows(runner, guest, xl)
        try:
            tgt, known, error = find_domain(probe_target(target, runner=runner)["domains"], guest), True, None
        except XenError as exc:
            tgt, known, error = [], False, str(exc)
        waited = clock() - t0
        if not (in_handover(src) or in_handover(tgt)) or waited >= wait:
            return src, tgt, known, error, round(waited, 3)
        sleep(1.0)


# --------------------------------------------------------------------------- the whole act


def process_start_wall(pid="self"):
    """Wall-clock time at which this process started (Linux /proc), or None."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted after "(comm)"
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return round(btime + start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def migrate(guest, target, mode="live", on_no_convergence="continue", deadline=900.0, stall_timeout=90.0,
            shim=SHIM, log_path=None, check_mode=False, margin_mb=16, guard=None, runner=None, xl=XL,
            source_host=None, settle=SETTLE_S, handover_timeout=HANDOVER_TIMEOUT_S, lock_dir=None):
    """Migrate and verify, holding the guest's migration lock (:func:`acquire_migration_lock`; check
    mode only tests it). Returns (failed: bool, msg: str, result: dict)."""
    wall_called = time.time()
    check_name(guest)
    check_host(target)
    if mode not in MODES:
        raise XenError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    if on_no_convergence not in POLICIES:
        raise XenError("on_no_convergence must be one of %s, got %r" % (", ".join(POLICIES), on_no_convergence))
    if not handover_timeout or handover_timeout <= 0:
        raise XenError("handover_timeout must be > 0, got %r" % (handover_timeout,))
    source_host = source_host or os.uname()[1]
    lock_dir = LOCK_DIR if lock_dir is None else lock_dir
    lock_path = migration_lock_path(guest, lock_dir)
    lock_fd = None
    try:
        if check_mode:
            if lock_is_held(lock_path):
                raise MigrationRunning(guest, lock_path, lock_holder(lock_path))
        else:
            lock_fd = acquire_migration_lock(guest, lock_dir)
    except MigrationRunning as exc:
        return True, ("%s; refusing to start a second migration of %s (to %s). xen_domain_info lists %s under "
                      "migrating until that one ends" % (exc, guest, target, guest)), dict(
            changed=False, migrated=False, source_running=None, target_running=None, stats=None,
            failure="migration-running", checks=[], instrumentation=None, in_flight=False, lock=lock_path,
            lock_holder_pid=exc.holder)
    try:
        failed, msg, result = _migrate(guest, target, mode, on_no_convergence, deadline, stall_timeout, shim,
                                       log_path, check_mode, margin_mb, guard, runner, xl, source_host, settle,
                                       handover_timeout, lock_fd, lock_path, wall_called)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)       # xl, if it was started, holds its own copy of the lock
    result["lock"] = lock_path
    return failed, msg, result


def _run_stats(mig, rc, mode, guest_mb, wall_called):
    """The `stats` of xen_migrate from a finished (or left running) Migration."""
    stats = mig.log.stats(t_end=mig.t_end, bytes_sent=mig.bytes_sent, populated_pages=guest_mb * 256)
    stats["instrumentation"] = "progress" if (mig.shim_ok and mig.log.progress_seen) else "no-progress"
    if not mig.log.progress_seen:
        for it in stats["iterations"]:
            it["pages"] = None
    stats["mode"] = mode
    stats["wall_t0"] = round(mig.wall_t0, 3)
    # where the time before `xl migrate` went (detection latency, docs/performance.md P2): the module's
    # process start (Ansible's dispatch ends), its code start (interpreter and imports), the checks
    stats["wall_process_start"] = process_start_wall()
    stats["wall_called"] = round(wall_called, 3)
    stats["xl_rc"] = rc
    stats["xl_result"] = mig.log.result
    stats["convergence"] = mig.guard_verdict or "converged"
    stats["events"] = mig.events
    return stats


def _in_flight(mig, result, guest, source_host, target, src, tgt, src_error, tgt_known, probe_error, lock_path):
    """Record in result that pft stopped waiting for xl (left running); returns the message."""
    # pft stopped waiting; xl goes on (never killed past the point of no return). Not a verdict:
    # the caller keeps the journal entry pending and a later run reconciles it.
    past = "no_return" in mig.log.markers
    result.update(changed=True, migrated=False, in_flight=True, xl_pid=mig.proc.pid,
                  xl_output_file=mig.output_file, failure="handover-timeout" if past else "abort-timeout")
    where = "seen now: here (%s) %s; %s: %s" % (
        source_host, "unknown (%s)" % src_error if src_error else rows_str(src), target,
        rows_str(tgt) if tgt_known else "unknown (%s)" % (probe_error or "not asked"))
    return ("%s: migration of %s from %s to %s: %s. pft stopped waiting and left xl migrate (pid %d) "
            "running, without killing it (%s), so %s may still be moving; %s. Its migration lock %s "
            "stays held until xl ends; pft's next run reconciles this migration (its journal entry "
            "stays pending)%s." % (
                result["failure"], guest, source_host, target, mig.left_running, mig.proc.pid,
                "after the point of no return killing xl could leave the guest on neither host" if past
                else "killing xl could leave the guest suspended", guest, where, lock_path,
                "; xl's further output goes to %s" % mig.output_file if mig.output_file else ""))


def _verdict(mig, rc, result, stats, guest, source_host, target, src, tgt, src_ok, tgt_ok, tgt_known):
    """(failed, msg) of a migration xl ended, from where the guest runs now; records the failure in result."""
    if rc == 0 and tgt_ok and not src:
        result.update(changed=True, migrated=True)
        return False, "%s migrated from %s to %s in %.1f s (%d live rounds, final round %s pages)" % (
            guest, source_host, target, stats["total_s"], stats["live_rounds"], stats["final_round_pages"])
    # failure: say why and where the guest is
    cause = mig.aborted or mig.log.result or "xl migrate exited with rc=%s" % rc
    if mig.log.errors:
        cause += " (" + "; ".join(mig.log.errors[-3:]) + ")"
    result["failure"] = cause
    result["changed"] = bool(tgt_ok and not src)
    if src_ok and not tgt:
        return True, ("migration of %s to %s failed: %s. Verified: %s still runs on %s, exactly once, and not on %s"
                      % (guest, target, cause, guest, source_host, target))
    if tgt_ok and not src:
        result["migrated"] = True
        return True, ("migration of %s to %s reported a failure (%s) but %s runs on %s exactly once and is gone "
                      "from %s" % (guest, target, cause, guest, target, source_host))
    return True, ("migration of %s to %s failed (%s) and the guest is NOT running exactly once: here %s: %s; "
                  "%s: %s. Operator action needed." % (guest, target, cause, source_host, rows_str(src), target,
                                                        rows_str(tgt) if tgt_known else "unknown"))


def _migrate(guest, target, mode, on_no_convergence, deadline, stall_timeout, shim, log_path, check_mode,
             margin_mb, guard, runner, xl, source_host, settle, handover_timeout, lock_fd, lock_path, wall_called):
    runner = runner or run
    result = dict(changed=False, migrated=False, source_running=None, target_running=None, stats=None,
                  failure=None, checks=[], instrumentation=None, in_flight=False,
                  diff=dict(before=dict(host=source_host, guest=guest), after=dict(host=source_host, guest=guest)))
    # The three looks before the move are independent: run them at once (on a slow dom0 the target's
    # probe over ssh and the local `xl list` each take seconds; detection latency, docs/performance.md P2)
    with ThreadPoolExecutor(max_workers=3) as pool:
        src_f = pool.submit(guest_rows, runner, guest, xl)
        probe_f = pool.submit(probe_target, target, runner=runner)
        version_f = pool.submit(toolstack_version, runner)
    src = src_f.result()
    probe = probe_f.result()
    source_toolstack = version_f.result()
    tgt = find_domain(probe["domains"], guest)
    result["target_host"] = probe["host"]
    if not src and running_once(tgt):
        result.update(source_running=False, target_running=True)
        result["diff"] = dict(before=dict(host=target, guest=guest), after=dict(host=target, guest=guest))
        return False, "%s already runs on %s and not here: nothing to do" % (guest, target), result
    if not running_once(src):
        result["failure"] = "guest-not-here"
        return True, ("%s does not run exactly once on this host (%s): found %s; target %s has %s"
                      % (guest, source_host, rows_str(src), target, rows_str(tgt))), result
    if tgt:
        result.update(source_running=True, target_running=False, failure="guest-on-target")
        return True, ("%s runs here and the target %s already has %s: refusing to migrate (it would run twice)"
                      % (guest, target, rows_str(tgt))), result
    guest_mb = src[0]["memory_mb"]
    checks = check_target(probe, guest_mb, margin_mb, source_toolstack=source_toolstack)
    result["checks"] = checks
    bad = [c for c in checks if not c["ok"] and c["name"] in ("xen", "memory", "shadow_paging")]
    shim_ok = bool(shim) and os.path.isfile(shim)
    result["instrumentation"] = "progress" if shim_ok else "no-progress"
    if bad:
        result.update(source_running=True, target_running=False,
                      failure="target-check: " + "; ".join("%s: %s" % (c["name"], c["detail"]) for c in bad))
        return True, ("cannot migrate %s to %s: %s; %s still runs here (%s), untouched"
                      % (guest, target, result["failure"][len("target-check: "):], guest, source_host)), result
    result["diff"]["after"]["host"] = target
    if check_mode:
        result.update(changed=True, source_running=True, target_running=False)
        return False, "would migrate %s (%d MiB) from %s to %s (%s)" % (guest, guest_mb, source_host, target,
                                                                         mode), result
    mig = Migration(guest, target, mode=mode, on_no_convergence=on_no_convergence, deadline=deadline,
                    stall_timeout=stall_timeout, shim=shim, xl=xl, guard=guard, runner=runner,
                    populated_pages=guest_mb * 256, handover_timeout=handover_timeout, lock_fd=lock_fd,
                    output_path=lock_path[:-len(".lock")] + ".out")
    rc = mig.run()
    in_flight = bool(mig.left_running)
    stats = _run_stats(mig, rc, mode, guest_mb, wall_called)
    result["stats"] = stats
    result["instrumentation"] = stats["instrumentation"]
    result["xl_output"] = ["%7.3f %s" % (t, line) for t, line in mig.lines[-400:]]
    # where is it now? (after a settle: the two sides may still be handing over; with xl left running,
    # one look without a settle: the hand-over is not over)
    src_error = None
    try:
        src, tgt, tgt_known, probe_error, settle_s = locate(guest, target, runner=runner, xl=xl,
                                                            wait=0 if in_flight else settle)
    except XenError as exc:
        if not in_flight:
            raise
        # xl was left running: that must be reported (in_flight) even if this look fails
        src, tgt, tgt_known, probe_error, settle_s, src_error = [], [], False, None, 0.0, str(exc)
    if probe_error:
        result["target_probe_error"] = probe_error
    stats["settle_s"] = settle_s
    src_ok, tgt_ok = running_once(src), running_once(tgt)
    result.update(source_running=None if src_error else src_ok, target_running=tgt_ok if tgt_known else None)
    if log_path:
        result["log_error"] = write_log(log_path, [dict(e, kind="event") for e in mig.events] + [dict(
            kind="summary", guest=guest, source=source_host, target=target, mode=mode, rc=rc,
            result=mig.log.result, aborted=mig.aborted, source_running=result["source_running"],
            target_running=result["target_running"], in_flight=in_flight,
            xl_pid=mig.proc.pid if in_flight else None,
            stats={k: v for k, v in stats.items() if k != "events"})])
    if in_flight:
        return True, _in_flight(mig, result, guest, source_host, target, src, tgt, src_error, tgt_known,
                                probe_error, lock_path), result
    failed, msg = _verdict(mig, rc, result, stats, guest, source_host, target, src, tgt, src_ok, tgt_ok,
                           tgt_known)
    return failed, msg, result
