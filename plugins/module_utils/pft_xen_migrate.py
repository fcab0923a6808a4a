# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""One live migration of a guest with ``xl migrate``: driven, watched, verified (issue 6).

:class:`ConvergenceGuard` decides, from the round sizes that :class:`MigrationLog` (pft_xen_migration_log)
reads, whether the precopy converges. :func:`migrate` drives the process (pause/unpause for
stop-and-copy, clean abort by SIGTERM to libxl-save-helper before the point of no
return) and verifies where the guest runs afterwards (:func:`locate`). Past the point of no return it waits
for a bounded time and then leaves xl running (``in_flight``). xl holds the guest's migration lock
(pft_xen_lock).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

try:
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
except ImportError:
    from pft_xen import (
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
try:
    from ansible.module_utils.pft_xen_lock import (
        LOCK_DIR,
        MigrationRunning,
        acquire_migration_lock,
        lock_holder,
        lock_is_held,
        migration_lock_path,
        write_lock_owner,
    )
except ImportError:
    from pft_xen_lock import (
        LOCK_DIR,
        MigrationRunning,
        acquire_migration_lock,
        lock_holder,
        lock_is_held,
        migration_lock_path,
        write_lock_owner,
    )
try:
    from ansible.module_utils.pft_xen_migration_log import MigrationLog
except ImportError:
    from pft_xen_migration_log import MigrationLog

SHIM = "/usr/local/lib/pft/pft-xl-progress.so"


# --------------------------------------------------------------------------- process helpers


def children(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids.extend(int(x) for x in f.read().split())
    except (OSError, ValueError):
        pass
    return kids


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children(p):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def proc_io(pid, key="rchar"):
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == key:
                    return int(v)
    except (OSError, ValueError):
        pass
    return None


def find_child(pid, name):
    for c in descendants(pid):
        if comm(c) == name:
            return c
    return None


# --------------------------------------------------------------------------- convergence guard


class ConvergenceGuard(object):
    """Decides from the live round sizes whether the precopy converges.

    Non-convergence: from round ``min_rounds`` on, a round of at least ``min_pages`` pages (smaller
    rounds cost well under a second even under TCG: the testbed's idle guest wobbles between 180
    and 300 pages per round) at least ``shrink`` times the size of the one before (the dirty set
    stopped shrinking), or a predicted final copy longer than
    ``max_downtime_s`` at the measured throughput once 4.17's cap (round 4 is the last live round)
    is reached.
    """

    def __init__(self, shrink=0.8, min_rounds=2, max_downtime_s=None, last_live_round=4, min_pages=1024):
        self.shrink, self.min_rounds, self.min_pages = shrink, min_rounds, min_pages
        self.max_downtime_s, self.last_live_round = max_downtime_s, last_live_round

    def verdict(self, rounds, throughput_pps=None):
        """(converging: bool, reason: str) from the live rounds started so far (Round objects or page counts)."""
        pages = [r if isinstance(r, int) else r.pages for r in rounds]
        if len(pages) > self.min_rounds:
            k = len(pages) - 1
            if pages[k] >= self.min_pages and pages[k] >= self.shrink * pages[k - 1]:
                return False, ("round %d has %d pages, not below %.2f x round %d (%d pages): the dirty set does "
                               "not shrink" % (k, pages[k], self.shrink, k - 1, pages[k - 1]))
        if self.max_downtime_s and throughput_pps and len(pages) > 1:
            pred = pages[-1] / throughput_pps
            if len(pages) - 1 >= self.last_live_round and pred > self.max_downtime_s:
                return False, ("predicted stop-and-copy of %d pages takes %.1f s > max_downtime %.1f s"
                               % (pages[-1], pred, self.max_downtime_s))
        return True, "converging"


# --------------------------------------------------------------------------- migrate

POLICIES = ("stop-and-copy", "abort", "continue")
MODES = ("live", "stop-and-copy")


def migrate_argv(guest, target, shim_ok, xl=XL, ssh_command=None):
    argv = [xl, "-v" if shim_ok else "-vvv", "migrate"]
    if ssh_command:
        argv += ["-s", ssh_command]
    return argv + [guest, target]


# After the point of no return nothing can be aborted: pft waits for xl, but not for ever. It stops
# waiting (and leaves xl running: killing it then could leave the guest on neither host) at the later
# of (point of no return + handover_timeout) and (start + deadline). A run whose clean abort does not
# end xl gets max(handover_timeout, ABORT_WAIT_MIN_S) after the abort.
HANDOVER_TIMEOUT_S = 120.0
ABORT_WAIT_MIN_S = 60.0


class Migration(object):
    """One ``xl migrate`` run, driven and watched. Use :func:`migrate`."""

    def __init__(self, guest, target, mode="live", on_no_convergence="continue", deadline=900.0,
                 stall_timeout=90.0, shim=SHIM, xl=XL, guard=None, log_path=None, runner=None,
                 clock=time.monotonic, populated_pages=None, handover_timeout=HANDOVER_TIMEOUT_S, lock_fd=None,
                 output_path=None):
        self.guest, self.target, self.mode = guest, target, mode
        self.policy, self.deadline, self.stall_timeout = on_no_convergence, deadline, stall_timeout
        self.handover_timeout = handover_timeout
        self.lock_fd = lock_fd              # the migration lock, handed to xl (see acquire_migration_lock)
        self.output_path = output_path      # where xl's later output goes if pft stops waiting for it
        self.left_running = None            # why pft stopped waiting while xl still ran, or None
        self.output_file = None
        self.shim, self.xl, self.guard = shim, xl, guard or ConvergenceGuard()
        self.log_path, self.runner, self.clock = log_path, runner or run, clock
        self.populated_pages = populated_pages
        self.shim_ok = bool(shim) and os.path.isfile(shim)
        self.events = []
        self.paused_by_us = False
        self.pause_round = None         # index into rounds at pause time
        self.aborted = None
        self.guard_verdict = None
        self.lines = []
        self.bytes_sent = None
        self.ssh_pid = None

    def _xl(self, *args, **kw):
        return self.runner([self.xl] + list(args), kw.get("timeout", 30))

    def _event(self, t, kind, **data):
        rec = dict(t_s=round(t - self.log.t0, 3), event=kind, guest=self.guest, target=self.target, **data)
        self.events.append(rec)

    def pause(self, t):
        rc, _, err = self._xl("pause", self.guest)
        if rc == 0:
            self.paused_by_us = True
            self.pause_round = len(self.log.rounds)
            self._event(t, "paused")
        else:
            self._event(t, "pause_failed", detail=err.strip())

    def unpause(self, t, why):
        if not self.paused_by_us:
            return
        rc, _, err = self._xl("unpause", self.guest)
        self.paused_by_us = False if rc == 0 else self.paused_by_us
        self._event(t, "unpaused" if rc == 0 else "unpause_failed", why=why, detail=err.strip())

    def abort(self, t, why):
        """Clean abort before the point of no return: SIGTERM to libxl-save-helper."""
        if self.aborted or "no_return" in self.log.markers:
            return False
        helper = find_child(self.proc.pid, "libxl-save-help")
        self.aborted = why
        if helper:
            try:
                os.kill(helper, signal.SIGTERM)
            except OSError:
                helper = None
        self._event(t, "abort", why=why, helper_pid=helper)
        self.abort_t = t
        return True

    def run(self):
        env = dict(os.environ)
        if self.shim_ok:
            env["LD_PRELOAD"] = self.shim
        argv = migrate_argv(self.guest, self.target, self.shim_ok, self.xl)
        t0 = self.clock()
        self.wall_t0 = time.time()
        self.log = MigrationLog(t0)
        self.abort_t = None
        self._spawn(argv, env)
        fd = self.proc.stdout.fileno()
        buf = b""
        last_activity = t0
        last_bytes = None
        self._killed_ssh = False
        xl_exit_t = None
        eof = False
        while True:
            # after EOF, keep looping (without the pipe) until xl exits or a bound is reached
            r, _, _ = select.select([] if eof else [fd], [], [], 0.5)
            now = self.clock()
            if eof and self.proc.poll() is not None:
                break
            # xl gone but the pipe still open: an orphaned transport (seen on the testbed when the
            # target died mid-migration: xl exited, its `ssh target` lived on, reparented to init,
            # holding the pipe). xl is done, so ending that ssh is safe.
            if not r and self.proc.poll() is not None:
                xl_exit_t = xl_exit_t or now
                if now - xl_exit_t > 5:
                    if self.ssh_pid and comm(self.ssh_pid) == "ssh":
                        try:
                            os.kill(self.ssh_pid, signal.SIGTERM)
                            self._event(now, "transport_closed", ssh_pid=self.ssh_pid, why="xl exited")
                        except OSError:
                            pass
                    break
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                    continue
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    self.lines.append((round(now - t0, 3), line))
                    last_activity = now
                    for ev in self.log.feed(now, line):
                        self._on_event(now, ev)
            if self.ssh_pid is None:
                self.ssh_pid = find_child(self.proc.pid, "ssh")
            if self.ssh_pid:
                b = proc_io(self.ssh_pid)
                if b is not None:
                    if b != last_bytes:
                        last_activity = now
                    last_bytes = b
                    self.bytes_sent = b
            self._bounds(now, t0, last_activity)
            # past the point of no return (or after an abort that did not end xl): a bound, but xl is
            # left running, never killed (see HANDOVER_TIMEOUT_S)
            why = self._give_up(now, t0)
            if why and self.proc.poll() is None:
                self.left_running = why
                self._event(now, "stopped_waiting", why=why, xl_pid=self.proc.pid)
                break
        return self._finish(buf, t0)

    pause_t = None
    max_pause_s = 20.0

    def _spawn(self, argv, env):
        """Start xl, in its own session (a hang-up or ^C of the module's terminal must not reach a migration
        under way), with the migration lock (pass_fds): held while xl or a child of it runs."""
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, close_fds=True, start_new_session=True,
                                         pass_fds=(self.lock_fd,) if self.lock_fd is not None else ())
        except OSError as exc:
            raise XenError("cannot run %s: %s" % (argv[0], exc)) from exc
        if self.lock_fd is not None:
            write_lock_owner(self.lock_fd, self.proc.pid, "xl migrate %s %s" % (self.guest, self.target))

    def _bounds(self, now, t0, last_activity):
        """The watchdogs of the read loop: deadline and stall (before the point of no return), a transport
        left after an abort, a pause that lasts too long."""
        # deadline / stall: only before the point of no return
        if "no_return" not in self.log.markers and not self.aborted:
            if now - t0 > self.deadline:
                self.abort(now, "deadline of %.0f s reached before the handover" % self.deadline)
            elif now - last_activity > self.stall_timeout:
                self.abort(now, "no progress for %.0f s (target unreachable?)" % self.stall_timeout)
        # an abort whose helper is gone but xl still waits on a dead ssh: end the transport
        if self.aborted and not self._killed_ssh and now - self.abort_t > 20:
            ssh = find_child(self.proc.pid, "ssh") or (
                self.ssh_pid if self.ssh_pid and comm(self.ssh_pid) == "ssh" else None)
            helper = find_child(self.proc.pid, "libxl-save-help")
            if ssh and not helper:
                try:
                    os.kill(ssh, signal.SIGTERM)
                    self._event(now, "transport_closed", ssh_pid=ssh)
                except OSError:
                    pass
                self._killed_ssh = True
        # paused too long without the expected round: let the guest answer a suspend request
        # (xl prints a line every 1024 pages while a round runs; silence means libxl waits for the
        # guest to answer its suspend request, which a paused PV guest cannot do)
        if self.paused_by_us and self.pause_t is not None and now - last_activity > self.max_pause_s:
            self.unpause(now, "paused, and no output for %.0f s" % self.max_pause_s)

    def _finish(self, buf, t0):
        """After the read loop: the last partial line, xl reaped (or drained, when left running), the guest
        unpaused. Returns xl's exit status, or None when it was left running."""
        if buf:
            line = buf.decode("utf-8", "replace")
            self.lines.append((round(self.clock() - t0, 3), line))
            for ev in self.log.feed(self.clock(), line):
                self._on_event(self.clock(), ev)
        if self.left_running:
            rc = None
            self._drain()
        else:
            try:
                # the loop ends only once xl has exited: this reaps it, it does not wait for it
                rc = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rc = None
                self.left_running = "xl migrate did not exit"
                self._drain()
        t_end = self.clock()
        if self.paused_by_us:
            self.unpause(t_end, "migration ended")
        self.rc = rc
        self.t_end = t_end
        return rc

    def handover_limit(self, t0):
        """Monotonic time at which pft stops waiting for a hand-over (None before the point of no
        return): the later of no_return + handover_timeout and t0 + deadline. The deadline is the
        budget the caller planned for, so stopping before it only trades a confirmed outcome for an
        unconfirmed one; and a point of no return reached near the deadline still gets the whole
        handover_timeout, because nothing can be aborted past it."""
        t_nr = self.log.markers.get("no_return")
        if t_nr is None:
            return None
        return max(t_nr + self.handover_timeout, t0 + self.deadline)

    def _give_up(self, now, t0):
        limit = self.handover_limit(t0)
        if limit is not None and now >= limit:
            return ("the hand-over did not end within %.0f s of the point of no return (handover_timeout %.0f s, "
                    "deadline %.0f s)" % (now - self.log.markers["no_return"], self.handover_timeout, self.deadline))
        if limit is None and self.aborted and self.abort_t is not None:
            wait = max(self.handover_timeout, ABORT_WAIT_MIN_S)
            if now - self.abort_t >= wait:
                return "xl migrate did not end within %.0f s of the abort (%s)" % (wait, self.aborted)
        return None

    def _drain(self):
        """pft stops reading while xl still runs: a detached `cat` keeps reading xl's output (source
        and target lines) into output_path, so that xl and its ssh transport never write into a pipe
        nobody reads once this module has exited. Best effort."""
        out = subprocess.DEVNULL
        try:
            if self.output_path:
                out = os.open(self.output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600)
                self.output_file = self.output_path
            subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=out, stderr=subprocess.DEVNULL,
                             close_fds=True, start_new_session=True)
        except OSError as exc:
            self.output_file = None
            self._event(self.clock(), "drain_failed", detail=str(exc))
        finally:
            if isinstance(out, int) and out >= 0:
                os.close(out)
            self.proc.stdout.close()

    def _on_event(self, t, ev):
        kind = ev[0]
        if kind == "saving" and self.mode == "stop-and-copy" and not self.paused_by_us:
            # Pause only once libxc has read the domain's info (it logs "Saving domain" after that):
            # a guest already paused when the save starts makes libxc treat every transient bad
            # page-table entry as fatal ("Bad mfn for L1", recorded on the testbed).
            self.pause(t)
            self.pause_t = t
        elif kind == "round_start":
            r = ev[1]
            self._event(t, "round_start", iteration=r.label, final=r.final, pages=r.pages)
            if not r.final and self.guard_verdict is None:
                ok, why = self.guard.verdict(self.log.live_rounds(), self.log.live_throughput())
                if not ok:
                    self.guard_verdict = why
                    self._event(t, "no_convergence", why=why, policy=self.policy)
                    if self.policy == "abort":
                        self.abort(t, "no convergence: " + why)
                    elif self.policy == "stop-and-copy" and not self.paused_by_us:
                        self.pause(t)
                        self.pause_t = t
        elif kind == "round_end":
            r = ev[1]
            self._event(t, "round_end", iteration=r.label, final=r.final, pages=r.pages)
            # Unpause at the end of the first round that started after our pause: the next dirty
            # set is then ~empty, libxc asks for stop-and-copy and the PV guest must answer it.
            if (self.paused_by_us and not r.final and self.pause_round is not None
                    and self.log.rounds.index(r) >= self.pause_round):
                self.unpause(t, "end of round %d sent while paused" % r.label)
        elif kind == "suspend_request":
            self.unpause(t, "suspend request")
        elif kind == "suspended":
            self._event(t, "suspended")
            if self.paused_by_us:
                self.unpause(t, "suspended")
        elif kind == "no_return":
            self._event(t, "point_of_no_return")
        elif kind == "result":
            self._event(t, "result", text=ev[1])


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
