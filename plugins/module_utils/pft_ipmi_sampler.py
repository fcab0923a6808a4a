# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Sampling many BMCs at once, each within a hard deadline per sample: the :class:`Sampler`.

It polls all nodes at once with a hard per-node deadline per sample, so a
dead BMC costs at most its deadline, and any number of dead BMCs cannot keep
the live ones from logging in; after a failed login a BMC is logged into
again only after a growing delay, in the background, so once dead BMCs have
failed a sample ends when the live ones have answered. The readers are
pft_ipmi_nodes' LanNode and LocalNode (or test stand-ins with their interface).
"""

from __future__ import absolute_import, division, print_function

import collections
import math
import queue
import threading
import time

from ansible.module_utils.pft_ipmi_nodes import NodeUnavailable
from ansible.module_utils.pft_ipmi_policy import format_number
from ansible.module_utils.pft_ipmi_pyghmi import close_session, pump_pyghmi

__metaclass__ = type


class _Job:
    __slots__ = ("reader", "fn", "result", "done")

    def __init__(self, reader, fn):
        self.reader = reader
        self.fn = fn
        self.result = None
        self.done = threading.Event()


class _LoginFailure:
    """A LAN node's failed logins since its last good answer, and when to log in again."""
    __slots__ = ("reason", "permanent", "failures", "at", "retry_at", "attempt")

    def __init__(self, reason, permanent, failures, at, retry_at, attempt):
        self.reason = reason
        self.permanent = permanent
        self.failures = failures    # failed logins in a row
        self.at = at                # clock() when the latest one was counted
        self.retry_at = retry_at    # no new login before this clock() time
        self.attempt = attempt      # which login (Sampler.login_attempts) was counted last


class _Round:
    """The sample under way: what it waits for, and the answers so far (some arrive through callbacks)."""
    __slots__ = ("readers", "prepare", "by_name", "results", "reading", "background", "waiting",
                 "logins", "retries", "end", "late", "not_through")

    def __init__(self, readers, prepare, deadline):
        self.readers = readers
        self.prepare = prepare
        self.by_name = {r.name: r for r in readers}
        self.results = {}
        self.reading = set()      # names of asynchronous readers whose answer this sample waits for
        self.background = set()   # asynchronous readers with a login this sample does not wait for
        self.waiting = {}         # name -> _Job of a synchronous reader
        self.logins = collections.deque()    # first logins (no failure since the last answer): waited for
        self.retries = collections.deque()   # logins of failed nodes whose backoff is over: not waited for
        self.end = None
        self.late = NodeUnavailable("BMC unreachable: no answer within %ss (earlier request still outstanding)"
                                    % format_number(deadline))
        self.not_through = NodeUnavailable("BMC unreachable: login not completed within %ss"
                                           % format_number(deadline), pending=True)


class Sampler:
    """One sample of every node, each within a hard deadline.

    LAN nodes run as callback chains on pyghmi's event loop in the calling
    thread: all logged-in BMCs are asked at once and nothing blocks; at most
    ``parallelism`` logins run at once, so a cold start of a large cluster
    does not drown in retransmissions. A login that has been in flight for
    longer than the deadline no longer holds one of those slots: its BMC is
    as good as dead, pyghmi keeps retrying it cheaply, and dead BMCs must not
    keep live ones from logging in. Logins wait in line fairly: nodes never
    tried first, then the least recently tried, so live nodes do not queue
    behind the same dead ones sample after sample. Nodes that can only
    be read synchronously (in-band) run on a bounded pool of daemon threads.
    A node whose earlier request has not come back is reported unreachable
    and gets no new request until it does; one that pyghmi never finishes is
    abandoned after ``abandon_after`` seconds and starts over with a new
    login. Every node is in every sample's result, and a sample never takes
    longer than the deadline (plus one event-loop step of at most ``STEP``
    seconds). Daemon threads never delay the module's exit.

    A LAN login that fails, or is not through within the deadline, puts its
    node in backoff: no new login before ``retry_after`` seconds (default
    ``max(2 x deadline, 5 s)``), doubling with each failed login in a row up
    to ``retry_max`` (60 s); an error marked permanent (wrong credentials)
    waits ``retry_max`` at once, and a good answer ends the backoff. Until
    then the node is reported with its last error and the time of its next
    login in every sample, at no cost to the sample. A login is waited for
    (up to the deadline) only while its node has not failed since its last
    good answer; the retries of a failed node queue behind every such login
    and run in the background: they hold a login slot like any login, and
    their answer counts if it comes in while the sample waits for the
    others, but no sample waits for them. So once each dead BMC has failed
    once, a sample ends as soon as the live nodes have answered. Between
    samples, :meth:`idle` keeps pyghmi's event loop turning while a LAN node
    has something in flight, so retries and late answers finish in real
    time rather than only while a later sample waits for the live nodes.

    ``clock``, ``sleep`` and ``wait(event, timeout)`` are the time functions
    (tests drive the sampler on a fake clock).
    """

    STEP = 0.05          # longest single wait inside a sample, in seconds
    TOLERANCE = 1e-9     # clock arithmetic slack when deciding that a login has used up its deadline

    def __init__(self, parallelism, deadline, pump=None, abandon_after=None, clock=time.monotonic,
                 sleep=time.sleep, wait=None, retry_after=None, retry_max=60.0):
        self.parallelism = max(1, int(parallelism))
        self.deadline = float(deadline)
        self.pump = pump or pump_pyghmi
        self.abandon_after = abandon_after if abandon_after is not None else max(30.0, 5 * self.deadline)
        self.retry_after = float(retry_after) if retry_after is not None else max(2 * self.deadline, 5.0)
        self.retry_max = max(float(retry_max), self.retry_after)
        self.clock = clock
        self.sleep = sleep
        self.wait = wait or (lambda event, timeout: event.wait(timeout))
        self.deferred = collections.deque()
        self.jobs = queue.Queue()
        self.lock = threading.Lock()
        self.workers = 0
        self.outstanding = {}   # name -> _Job of a synchronous reader
        self.last_login = {}    # name -> clock() when its latest login was started
        self.login_attempts = {}   # name -> how many logins were started
        self.in_login = set()   # names of LAN readers whose operation in flight began with a login
        self.failed = {}        # name -> _LoginFailure, until the node answers again
        self._round = None      # the sample under way, or None between samples

    def _worker(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job.result = job.fn(job.reader)
            except NodeUnavailable as exc:
                job.result = exc
            except Exception as exc:  # never let a worker die silently
                job.result = NodeUnavailable("internal error: %s: %s" % (exc.__class__.__name__, exc))
            job.done.set()

    def _submit(self, reader, fn):
        job = _Job(reader, fn)
        self.outstanding[reader.name] = job
        stuck = sum(1 for j in self.outstanding.values() if not j.done.is_set()) - 1
        with self.lock:
            start = max(0, min(self.parallelism, len(self.outstanding)) + stuck - self.workers)
            self.workers += start
        for _ in range(start):
            t = threading.Thread(target=self._worker, name="pft-ipmi-worker")
            t.daemon = True
            t.start()
        self.jobs.put(job)
        return job

    def _run_deferred(self):
        while self.deferred:
            self.deferred.popleft()()

    def logins_holding_slots(self, readers, now):
        """How many login slots are taken: logins in flight for less than the deadline."""
        return sum(1 for r in readers if r.can_async and r.busy and not r.connected
                   and now - r.busy_since < self.deadline - self.TOLERANCE)

    # -- login backoff ------------------------------------------------------------

    def retry_delay(self, failures, permanent=False):
        """Seconds from the ``failures``-th failed login in a row to the next login."""
        if permanent:
            return self.retry_max
        return min(self.retry_max, self.retry_after * 2 ** min(max(failures, 1) - 1, 32))

    def _login_failed(self, name, reason, permanent, now):
        attempt = self.login_attempts.get(name, 0)
        old = self.failed.get(name)
        if old is not None and old.attempt == attempt:
            # counted already when it overran the deadline: the end pyghmi reports is the better reason
            old.reason = reason
            if permanent and not old.permanent:
                old.permanent = True
                old.retry_at = max(old.retry_at, old.at + self.retry_max)
            return
        failures = old.failures + 1 if old is not None else 1
        self.failed[name] = _LoginFailure(reason, permanent, failures, now,
                                          now + self.retry_delay(failures, permanent), attempt)

    def _overran(self, reader, now):
        """Is the reader's login in flight, not through, for the whole deadline or longer?"""
        return (reader.name in self.in_login and reader.busy and not reader.connected
                and now - reader.busy_since >= self.deadline - self.TOLERANCE)

    def _login_timed_out(self, reader, now):
        """Count the reader's login in flight as failed, once (it may still succeed later)."""
        old = self.failed.get(reader.name)
        if old is None or old.attempt != self.login_attempts.get(reader.name, 0):
            self._login_failed(reader.name, "BMC unreachable: login not completed within %ss"
                               % format_number(self.deadline), False, now)

    def _backoff_result(self, reader, now):
        """A node with failed logins: its last error, and when it is logged into next."""
        failure = self.failed.get(reader.name)
        if failure is None:
            return NodeUnavailable("BMC unreachable: no answer within %ss (earlier request still outstanding)"
                                   % format_number(self.deadline))
        if reader.busy:
            note = "login attempt under way"
        elif now < failure.retry_at:
            note = "next login attempt in %d s" % max(1, int(math.ceil(failure.retry_at - now - 1e-6)))
        else:
            note = "next login attempt waiting for a free login slot"
        return NodeUnavailable("%s (%s)" % (failure.reason, note), permanent=failure.permanent)

    def _done(self, reader, login):
        """The ``done`` callback of one operation of a LAN reader."""
        name = reader.name

        def done(result):
            now = self.clock()
            failed = isinstance(result, NodeUnavailable)
            if login:
                self.in_login.discard(name)
                if failed:
                    self._login_failed(name, result.reason, result.permanent, now)
            if not failed:
                self.failed.pop(name, None)
            current = self._round
            if current is not None and (name in current.reading or name in current.background):
                current.reading.discard(name)
                current.background.discard(name)
                current.results[name] = self._backoff_result(reader, now) if login and failed else result
        return done

    def _start(self, reader, prepare, now):
        login = not reader.connected
        if login:
            self.last_login[reader.name] = now
            self.login_attempts[reader.name] = self.login_attempts.get(reader.name, 0) + 1
            self.in_login.add(reader.name)
        reader.start(prepare, self._done(reader, login), self.deferred.append)

    # -- sampling -----------------------------------------------------------------

    def sample(self, readers, prepare):
        """Sample every reader once; returns {name: {sensor: reading} or NodeUnavailable}."""
        rnd = _Round(readers, prepare, self.deadline)
        self._round = rnd
        try:
            self._sample(rnd)
        finally:
            self._round = None   # answers that come later are dropped; the node stays busy until then
        return rnd.results

    def _sample(self, rnd):
        if any(r.can_async and r.busy for r in rnd.readers):
            # take in what came since the last sample (without waiting) before judging who is late
            self.pump(0)
            self._run_deferred()
        now = self.clock()
        rnd.end = now + self.deadline
        self._dispatch(rnd, now)
        self._admit(rnd, now)
        self._run_deferred()
        now = self._wait(rnd)
        self._settle(rnd, now)

    def _admit(self, rnd, now):
        """Start queued logins while login slots are free: first logins before retries."""
        if not (rnd.logins or rnd.retries):
            return
        free = self.parallelism - self.logins_holding_slots(rnd.readers, now)
        while free > 0 and (rnd.logins or rnd.retries):
            if rnd.logins:
                reader = rnd.logins.popleft()
                rnd.reading.add(reader.name)
            else:
                reader = rnd.retries.popleft()
                rnd.background.add(reader.name)
            self._start(reader, rnd.prepare, now)
            free -= 1

    def _sync_job(self, rnd):
        def job(reader):
            rnd.prepare(reader, reader.connect())
            return reader.read_sync()
        return job

    def _dispatch(self, rnd, now):
        """Start what each reader needs this sample, queue the logins, or report it at once."""
        first, again = [], []
        for index, reader in enumerate(rnd.readers):
            if reader.can_async:
                self._dispatch_async(rnd, reader, index, now, first, again)
                continue
            old = self.outstanding.get(reader.name)
            if old is not None and not old.done.is_set():
                rnd.results[reader.name] = rnd.late
                continue
            rnd.waiting[reader.name] = self._submit(reader, self._sync_job(rnd))
        for queued, line in ((first, rnd.logins), (again, rnd.retries)):
            queued.sort(key=lambda entry: entry[0])
            line.extend(entry[1] for entry in queued)

    def _dispatch_async(self, rnd, reader, index, now, first, again):
        name = reader.name
        if reader.busy and now - reader.busy_since > self.abandon_after:
            if name in self.in_login and not reader.connected:
                self._login_timed_out(reader, now)
            self.in_login.discard(name)
            reader.abandon()
        if reader.busy:
            if name in self.in_login:
                # a login started in an earlier sample and still under way
                if self._overran(reader, now):
                    self._login_timed_out(reader, now)
                if name in self.failed:
                    rnd.background.add(name)
                else:
                    rnd.reading.add(name)   # a first login admitted late: it keeps its own deadline
            else:
                rnd.results[name] = rnd.late
            return
        if not reader.connected:
            failure = self.failed.get(name)
            # never tried first, then the least recently tried; the list order breaks ties
            entry = ((name in self.last_login, self.last_login.get(name, 0.0), index), reader)
            if failure is None:
                first.append(entry)
            elif now >= failure.retry_at:
                again.append(entry)
            else:
                rnd.results[name] = self._backoff_result(reader, now)
            return
        rnd.reading.add(name)
        self._start(reader, rnd.prepare, now)

    def _wait(self, rnd):
        """Take in answers until all are in or the deadline is up; returns the clock at the end."""
        while True:
            for name, job in list(rnd.waiting.items()):
                if job.done.is_set():
                    del rnd.waiting[name]
                    rnd.results[name] = job.result
            now = self.clock()
            for name in list(rnd.reading):
                reader = rnd.by_name[name]
                if self._overran(reader, now):
                    # the login used up its deadline: it fails for now and goes on in the background
                    self._login_timed_out(reader, now)
                    rnd.reading.discard(name)
                    rnd.background.add(name)
                    rnd.results[name] = rnd.not_through
            remaining = rnd.end - now
            if remaining <= 0:
                return now
            self._admit(rnd, now)
            if not (rnd.waiting or rnd.reading or rnd.logins):
                return now
            step = min(remaining, self.STEP)
            if rnd.reading or (rnd.logins and any(r.can_async and r.busy for r in rnd.readers)):
                # answers for this sample, or logins of earlier samples that hold the slots
                # the queued ones wait for: either way pyghmi's event loop must turn
                self.pump(step)
                self._run_deferred()
            elif rnd.waiting:
                self.wait(next(iter(rnd.waiting.values())).done, step)
            else:
                self.sleep(step)   # not reached as far as we know; bounded all the same

    def _settle(self, rnd, now):
        """A result for every node the sample did not hear from."""
        results = rnd.results
        timeout = NodeUnavailable("BMC unreachable: no answer within %ss" % format_number(self.deadline))
        for name in rnd.waiting:
            results[name] = timeout
        for name in rnd.reading:
            reader = rnd.by_name[name]
            if reader.can_async and not reader.connected:
                if self._overran(reader, now):
                    self._login_timed_out(reader, now)
                results[name] = rnd.not_through
            else:
                results[name] = timeout
        for name in rnd.background:
            if name not in results:
                results[name] = self._backoff_result(rnd.by_name[name], now)
        for reader in rnd.logins:
            results[reader.name] = NodeUnavailable(
                "not sampled yet: login still queued after %ss (%d logins at once; raise parallelism)"
                % (format_number(self.deadline), self.parallelism), pending=True)
        for reader in rnd.retries:
            results[reader.name] = self._backoff_result(reader, now)

    def idle(self, seconds, readers, clock=None, sleep=None):
        """Pause ``seconds`` between samples, turning pyghmi's event loop while a LAN reader is busy.

        Logins that no sample waits for (retries of failed BMCs, logins past
        their deadline) and answers that came too late then go on as they
        would inside a sample. ``clock`` and ``sleep`` default to the
        sampler's; ``pump`` must move ``clock`` on.
        """
        clock = clock or self.clock
        sleep = sleep or self.sleep
        end = clock() + seconds
        while True:
            remaining = end - clock()
            if remaining <= 0:
                return
            if not any(r.can_async and r.busy for r in readers):
                sleep(remaining)
                return
            self.pump(min(remaining, self.STEP))
            self._run_deferred()

    def close_sessions(self, readers, deadline):
        """Give each BMC its session slot back: Close Session to every LAN node that is logged in and not
        waiting for an answer, all at once, and the answers waited for at most ``deadline`` seconds. A BMC
        has a handful of session slots, shared with the admins' tools; a session left open holds one
        until the BMC times it out. Returns (closed, unanswered)."""
        waiting = set()
        for r in readers:
            session = getattr(getattr(r, "cmd", None), "ipmi_session", None)
            if not getattr(r, "can_async", False) or r.busy or session is None:
                continue
            try:
                if close_session(session, lambda rsp, name=r.name: waiting.discard(name)):
                    waiting.add(r.name)
            except Exception:  # a session pyghmi broke: it holds no slot worth a failure here
                continue
        sent = len(waiting)
        end = self.clock() + deadline
        while waiting and self.clock() < end:
            self.pump(min(end - self.clock(), self.STEP))
        return sent - len(waiting), len(waiting)

    def close(self):
        with self.lock:
            n = self.workers
        for _ in range(n):
            self.jobs.put(None)

