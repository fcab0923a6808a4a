# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``xl migrate`` process of one live migration, driven and watched (:class:`Migration`).

:class:`Migration` runs ``xl -v migrate`` (with the LD_PRELOAD shim that un-hides libxc's progress), feeds its
lines to :class:`MigrationLog` (pft_xen_migration_log) and acts on them: pause/unpause for stop-and-copy,
clean abort by SIGTERM to libxl-save-helper before the point of no return. :class:`ConvergenceGuard` decides,
from the round sizes, whether the precopy converges. Past the point of no return it waits for a bounded time
and then leaves xl running, never killed (``left_running``). xl holds the guest's migration lock (pft_xen_lock).
The whole act around it (checks, lock, verification) is pft_xen_migrate.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from ansible.module_utils.pft_xen import XL, XenError, run
from ansible.module_utils.pft_xen_lock import write_lock_owner
from ansible.module_utils.pft_xen_migration_log import MigrationLog

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
