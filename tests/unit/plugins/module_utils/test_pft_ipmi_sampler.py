# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Scheduling of pft_ipmi_sampler.Sampler over mixes of fast, slow, dead and refusing BMCs.

The sampler runs here on a fake clock and a fake event loop (``World``): an
asynchronous reader's login, sensor repository and readings are events at
fake times, delivered through ``defer`` the way LanNode's pyghmi callbacks
are; synchronous (in-band) readers run on the sampler's real worker threads,
and the fake clock only moves once they have finished (``settle``), so the
fake time line is the same on an idle and on a loaded machine.

The properties (checked by hypothesis over random mixes, and on the cases of
the bug report): no exception; every sample ends within its deadline (plus at
most one event-loop step); every node is in every sample's result; dead and
refusing BMCs are unreachable every time; every fast live BMC is read within
a bound that follows from the parallelism and from how many BMCs ahead of it
can hold a login slot, and is read every sample from then on; a BMC whose
login failed is not logged into again before its backoff delay; and once
every BMC has had its first login (so each dead one has failed once), a
sample ends as soon as the BMCs it reads have answered, whatever the dead
ones and their retries do.
"""
import heapq
import itertools
import math
import re
import threading
import time

import pytest
from ansible.module_utils import pft_ipmi as H
from ansible.module_utils import pft_ipmi_nodes as N
from ansible.module_utils import pft_ipmi_policy as P
from ansible.module_utils import pft_ipmi_sampler as S
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STEP = getattr(S.Sampler, "STEP", 0.05)   # (getattr: the regression tests also run on the code before the fix)
SENSORS = [{"name": "CPU1 Temp", "type": "Temperature"}, {"name": "FAN1", "type": "Fan"}]
# async kinds that can keep a login slot for a whole deadline each time they are tried
HOLDERS = ("dead", "slow", "gives_up")
UNREACHABLE = ("dead", "gives_up", "refusing", "refusing_now", "sync_dead", "sync_refusing")
LIVE = ("fast", "slow", "sync_fast")


class World:
    """Fake clock and event loop (stands in for pyghmi's) for one Sampler."""

    def __init__(self):
        self.now = 0.0
        self.events = []
        self.seq = 0
        self.sampler = None
        self.gate = threading.Event()   # releases the threads of dead in-band readers at the end
        self.longest_wait = 0.0
        self.timeline = []   # per sample: its start and duration

    def clock(self):
        return self.now

    def at(self, delay, fn):
        heapq.heappush(self.events, (self.now + delay, self.seq, fn))
        self.seq += 1

    def settle(self):
        """Wait (real time) until every in-band job that is going to finish has finished."""
        if self.sampler is None:
            return   # run_health's own sampler, with LAN readers only
        limit = time.monotonic() + 20
        while True:
            busy = [j for j in self.sampler.outstanding.values()
                    if not j.done.is_set() and j.reader.kind != "sync_dead"]
            if not busy:
                return
            assert time.monotonic() < limit, "an in-band fake reader did not finish"
            busy[0].done.wait(0.01)

    def _advance(self, timeout):
        assert 0 <= timeout <= STEP + 1e-12, timeout   # 0: take in what is due, without waiting
        self.longest_wait = max(self.longest_wait, timeout)
        self.settle()

    def pump(self, timeout):
        """One event-loop step: returns at the first event, or after ``timeout``."""
        self._advance(timeout)
        target = self.now + timeout
        if self.events and self.events[0][0] < target:
            target = max(self.now, self.events[0][0])
        self.now = target
        while self.events and self.events[0][0] <= self.now:
            heapq.heappop(self.events)[2]()

    def wait(self, event, timeout):
        self._advance(timeout)
        self.now += timeout

    def sleep(self, timeout):
        self._advance(timeout)
        self.now += timeout

    def rest(self, seconds):
        """The pause between samples (any length; the sampler's own waits are bounded by STEP)."""
        self.now += seconds

    def sampler_for(self, parallelism, deadline, abandon_after=None, **kw):
        self.sampler = S.Sampler(parallelism, deadline, pump=self.pump, abandon_after=abandon_after,
                                 clock=self.clock, sleep=self.sleep, wait=self.wait, **kw)
        return self.sampler


def data(names):
    return {n: {"value": 45.0, "states": [], "bmc_health": 0, "unavailable": False} for n in names}


class FakeLan:
    """An asynchronous (LAN) reader, LanNode's interface, on the World's event loop.

    ``kind``: fast and slow BMCs answer after ``login``/``read`` seconds; a
    dead one never answers; gives_up fails its login after ``login`` seconds
    (pyghmi giving up); refusing fails its login at once through the event
    loop, refusing_now inside start() (a Command() that raises). A test may
    change ``kind`` between logins (a BMC that comes back). ``login_times``
    are the fake times of its logins, ``answered`` those of its answers.
    """

    can_async = True

    def __init__(self, world, name, kind, login=0.01, read=0.01):
        self.world = world
        self.name = name
        self.kind = kind
        self.login = login
        self.read = read
        self.connected = False
        self.busy_since = None
        self.gen = 0
        self.names = []
        self.logins = 0
        self.login_times = []
        self.answered = []

    @property
    def busy(self):
        return self.busy_since is not None

    def abandon(self):
        self.gen += 1
        self.busy_since = None
        self.connected = False

    def select(self, names):
        self.names = list(names)

    def start(self, prepare, done, defer):
        self.gen += 1
        gen = self.gen
        self.busy_since = self.world.now

        def finish(result):
            if gen != self.gen:
                return
            self.busy_since = None
            self.answered.append(self.world.now)
            if isinstance(result, N.NodeUnavailable):
                self.connected = False
            done(result)

        def later(delay, fn):
            self.world.at(delay, lambda: defer(lambda: fn() if gen == self.gen else None))

        def read():
            later(self.read, lambda: finish(data(self.names)))

        if self.connected:
            read()
            return
        self.logins += 1
        self.login_times.append(self.world.now)
        if self.kind == "dead":
            return
        if self.kind == "refusing_now":
            finish(N.NodeUnavailable("authentication failed: refused", permanent=True))
        elif self.kind == "refusing":
            later(0.001, lambda: finish(N.NodeUnavailable("authentication failed: refused", permanent=True)))
        elif self.kind == "gives_up":
            later(self.login, lambda: finish(N.NodeUnavailable("BMC unreachable: timeout")))
        else:
            def logged_in():
                self.connected = True
                prepare(self, SENSORS)
                read()
            later(self.login, logged_in)


class FakeLocal:
    """A synchronous (in-band) reader: sync_fast answers, sync_refusing raises, sync_dead hangs."""

    can_async = False

    def __init__(self, world, name, kind):
        self.world = world
        self.name = name
        self.kind = kind
        self.names = []
        self.connected = False

    def connect(self):
        if self.kind == "sync_refusing":
            raise N.NodeUnavailable("in-band IPMI: authentication failed", permanent=True)
        self.connected = True
        return SENSORS

    def select(self, names):
        self.names = list(names)

    def read_sync(self):
        if self.kind == "sync_dead":
            self.world.gate.wait()
            raise N.NodeUnavailable("released at the end of the test")
        return data(self.names)


def prepare(reader, descriptions):
    reader.select([d["name"] for d in descriptions])


def make_readers(world, specs):
    readers = []
    for i, (kind, login, read) in enumerate(specs):
        name = "n%03d" % i
        if kind.startswith("sync_"):
            readers.append(FakeLocal(world, name, kind))
        else:
            readers.append(FakeLan(world, name, kind, login, read))
    return readers


def slot_cost(r, deadline):
    """How long an asynchronous reader's first login can hold a login slot."""
    if r.kind in HOLDERS:
        return deadline + STEP
    if r.kind in ("refusing", "refusing_now"):
        return 0.001 + STEP
    return r.login + STEP


def read_bound(readers, reader, parallelism, deadline):
    """The sample (1-based) by which a fast reader must have been read.

    Logins wait in list order while never tried, and nodes tried before wait
    behind them (retries of failed ones behind every first login), so only
    the asynchronous readers ahead of it in the list can
    keep it from a login slot: each for at most the deadline plus one step
    (a login that has been in flight that long frees its slot), or for its
    login time if it answers or refuses. Every sample offers
    parallelism x deadline slot-seconds while logins are queued. After its
    login starts a reader is read within two more samples (a login that
    ends after the sample's deadline leaves the node busy in the next one).
    """
    ahead = [r for r in readers[:readers.index(reader) + 1] if r.can_async]
    return math.ceil(sum(slot_cost(r, deadline) for r in ahead) / (parallelism * deadline)) + 3


def all_tried_bound(readers, parallelism, deadline):
    """The sample by which every asynchronous reader's first login is over (the same reasoning)."""
    lan = [r for r in readers if r.can_async]
    return math.ceil(sum(slot_cost(r, deadline) for r in lan) / (parallelism * deadline)) + 3


def run_samples(world, readers, parallelism, deadline, samples, interval=0.0, abandon_after=None, **kw):
    """Sample ``samples`` times, checking the per-sample properties; returns the results."""
    sampler = world.sampler_for(parallelism, deadline, abandon_after, **kw)
    names = {r.name for r in readers}
    history = []
    try:
        for _ in range(samples):
            t0 = world.now
            results = sampler.sample(readers, prepare)
            took = world.now - t0
            world.timeline.append({"t0": t0, "took": took})
            assert took <= deadline + STEP + 1e-9, "a sample took %.3f s, deadline %.3f s" % (took, deadline)
            assert set(results) == names
            for r in readers:
                res = results[r.name]
                assert isinstance(res, (dict, N.NodeUnavailable)), res
                if r.kind in UNREACHABLE:
                    assert isinstance(res, N.NodeUnavailable), (r.name, r.kind, res)
                if r.kind == "sync_fast":
                    assert isinstance(res, dict), (r.name, res)
            history.append(results)
            world.now += interval
    finally:
        world.gate.set()
        sampler.close()
    return history


def check_fast_readers(history, readers, parallelism, deadline):
    for r in readers:
        if r.kind != "fast":
            continue
        ok = [i + 1 for i, results in enumerate(history) if isinstance(results[r.name], dict)]
        bound = read_bound(readers, r, parallelism, deadline)
        assert ok, "%s never read in %d samples (bound %d)" % (r.name, len(history), bound)
        assert ok[0] <= bound, "%s first read in sample %d, bound %d" % (r.name, ok[0], bound)
        # once logged in, a fast BMC is read in every sample
        assert ok == list(range(ok[0], len(history) + 1)), (r.name, ok)
        assert r.logins == 1, (r.name, r.logins)


def samples_needed(readers, parallelism, deadline):
    fast = [read_bound(readers, r, parallelism, deadline) for r in readers if r.kind == "fast"]
    return max(fast + [3]) + 2


# -- the bug report: a rack of dead BMCs ------------------------------------------

@pytest.mark.parametrize("parallelism, dead", [(32, 33), (6, 6), (1, 1)])
def test_dead_bmcs_filling_every_login_slot_do_not_crash_sampling(parallelism, dead):
    """The issue: stuck logins held every slot and Sampler.sample raised StopIteration.

    Only the pump and clock of the old Sampler's signature are used, so this
    runs unchanged against the code before the fix.
    """
    world = World()
    readers = make_readers(world, [("dead", 0, 0)] * dead + [("fast", 0.02, 0.01)])
    sampler = S.Sampler(parallelism, 3.0, pump=world.pump, clock=world.clock)
    world.sampler = sampler
    hot = readers[-1]
    seen = []
    for _ in range(6):
        t0 = world.now
        results = sampler.sample(readers, prepare)
        assert world.now - t0 <= 3.0 + STEP
        assert set(results) == {r.name for r in readers}
        assert all(isinstance(results[r.name], N.NodeUnavailable) for r in readers[:-1])
        seen.append(isinstance(results[hot.name], dict))
    assert seen[-3:] == [True, True, True], seen


@pytest.mark.parametrize("parallelism", [1, 6, 32, 128])
@pytest.mark.parametrize("layout", ["dead_first", "mixed"])
def test_100_dead_among_128(parallelism, layout):
    import random
    specs = [("dead", 0, 0)] * 100 + [("fast", 0.05, 0.02)] * 28
    if layout == "mixed":
        random.Random(7).shuffle(specs)
    world = World()
    readers = make_readers(world, specs)
    deadline = 1.0
    history = run_samples(world, readers, parallelism, deadline, samples_needed(readers, parallelism, deadline))
    check_fast_readers(history, readers, parallelism, deadline)
    last = history[-1]
    assert sum(isinstance(v, dict) for v in last.values()) == 28
    for r in readers:
        if r.kind == "dead":
            assert "BMC unreachable" in last[r.name].reason or "not sampled yet" in last[r.name].reason


def test_dead_logins_stop_holding_slots_after_the_deadline():
    """Design (b): BMCs that never answer must not keep live ones out until abandon_after (30 s)."""
    world = World()
    readers = make_readers(world, [("dead", 0, 0)] * 3 + [("fast", 0.01, 0.01)])
    history = run_samples(world, readers, 1, 1.0, 8)
    ok = [i + 1 for i, res in enumerate(history) if isinstance(res[readers[-1].name], dict)]
    assert ok and ok[0] <= 6, ok


def test_live_bmcs_do_not_queue_behind_the_same_dead_ones_every_sample():
    """Design (c): logins pyghmi gives up on go behind nodes never tried.

    With the list order alone, the two failing BMCs would take the one login
    slot in turn every sample, and the live one would never log in.
    """
    world = World()
    readers = make_readers(world, [("gives_up", 1.5, 0), ("gives_up", 1.5, 0), ("fast", 0.01, 0.01)])
    # a second apart, so that the failing ones come out of their backoff (5 s) within the 10 samples
    history = run_samples(world, readers, 1, 1.0, 10, interval=1.0)
    ok = [i + 1 for i, res in enumerate(history) if isinstance(res[readers[-1].name], dict)]
    assert ok and ok[0] <= 5, ok
    assert readers[0].logins >= 2 and readers[1].logins >= 2   # the failing ones are still retried


def test_only_in_band_readers_one_hung():
    world = World()
    readers = make_readers(world, [("sync_dead", 0, 0), ("sync_fast", 0, 0), ("sync_refusing", 0, 0)])
    history = run_samples(world, readers, 1, 0.5, 4)
    assert "no answer within 0.5s" in history[0][readers[0].name].reason
    assert "earlier request still outstanding" in history[1][readers[0].name].reason


def test_nothing_to_do_returns_at_once():
    world = World()
    readers = make_readers(world, [("fast", 0.01, 0.01)] * 3)
    run_samples(world, readers, 4, 1.0, 2)
    t0 = world.now
    sampler = world.sampler_for(4, 1.0)
    sampler.sample(readers, prepare)
    assert world.now - t0 < 0.05   # all logged in: one read round trip, no waiting out the deadline


# -- login backoff: dead BMCs cost the live ones nothing after their first failures --------

def first_login_over(r, t0, deadline):
    """Has the reader's first login answered (either way) or used up its deadline by ``t0``?"""
    if not r.login_times:
        return False
    return (bool(r.answered) and r.answered[0] <= t0 + 1e-9) or r.login_times[0] + deadline <= t0 + 1e-9


def check_quick_samples(world, history, readers, deadline):
    """Samples after every first login must end once the BMCs they read have answered.

    Such a sample waits for no login: the dead BMCs are busy with a login
    past its deadline or in backoff, and the retries it starts run in the
    background. Checks every sample from the second on in which every
    asynchronous reader's first login is over and no live BMC is reported
    as waited for until the deadline (a slow BMC that did not answer in
    time, or the new login of one whose session was dropped, was rightly
    waited for): it must end with the last answer it got, and report no
    failing BMC as waited for. Returns the indexes checked.
    """
    lan = [r for r in readers if r.can_async]
    slack = STEP if any(not r.can_async for r in readers) else 0.0   # in-band answers: one wait step
    waited_out = {"BMC unreachable: no answer within %ss" % P.format_number(deadline),
                  "BMC unreachable: login not completed within %ss" % P.format_number(deadline)}
    checked = []
    for i, (entry, results) in enumerate(zip(world.timeline, history, strict=True)):
        t0, took = entry["t0"], entry["took"]
        if i == 0 or not all(first_login_over(r, t0, deadline) for r in lan):
            continue
        if any(getattr(results[r.name], "reason", None) in waited_out for r in readers if r.kind in LIVE):
            continue
        for r in readers:
            assert getattr(results[r.name], "reason", None) not in waited_out, (i + 1, r.name, r.kind, results[r.name])
        answers = [max(a for a in r.answered if a <= t0 + took + 1e-9) - t0
                   for r in lan if isinstance(results[r.name], dict)]
        last = max(answers + [0.0])
        assert took <= last + slack + 1e-9, (
            "sample %d took %.3f s, its BMCs had answered after %.3f s (deadline %s)" % (i + 1, took, last, deadline))
        checked.append(i)
    return checked


def check_backoff(readers, sampler):
    """No failing BMC is logged into again before its backoff delay: doubling per failure, refusals at the cap.

    (A live BMC logs in again at once if a read of its was abandoned: that is no failed login.)
    """
    for r in readers:
        if not r.can_async or r.kind not in ("refusing", "refusing_now", "dead", "gives_up"):
            continue
        for k in range(1, len(r.login_times)):
            gap = r.login_times[k] - r.login_times[k - 1]
            if r.kind in ("refusing", "refusing_now"):
                need = sampler.retry_max
            else:
                need = sampler.retry_delay(k)   # after its k-th failed login in a row
            assert gap >= need - 1e-9, (r.name, r.kind, r.login_times, need)


def test_retry_delay_doubles_up_to_the_cap():
    sampler = S.Sampler(4, 1.5)
    assert sampler.retry_after == 5.0 and sampler.retry_max == 60.0   # max(2 x deadline, 5 s); 60 s
    assert [sampler.retry_delay(k) for k in range(1, 8)] == [5, 10, 20, 40, 60, 60, 60]
    assert sampler.retry_delay(1, permanent=True) == 60
    assert sampler.retry_delay(10 ** 6) == 60
    assert S.Sampler(4, 6.0).retry_after == 12.0
    assert S.Sampler(4, 1.0, retry_after=90).retry_max == 90   # the cap is never below the first delay


@pytest.mark.parametrize("parallelism", [6, 32])
def test_samples_end_early_once_dead_bmcs_are_in_backoff(parallelism):
    """The report: with dead BMCs present every sample ran its full deadline.

    Dead BMCs (never answering, and pyghmi giving up after 3 s) and two that
    refuse the credentials come before 28 live ones. Once each has had its
    first login, a sample lasts as long as the live reads (0.02 s), whatever
    the retries of the dead ones do, and the median sample is far below the
    deadline; the refusing BMCs are not logged into again within the run.
    """
    deadline = 1.5
    world = World()
    specs = [("dead", 0, 0)] * 20 + [("gives_up", 3.0, 0)] * 80 + [("refusing", 0, 0)] * 2
    specs += [("fast", 0.05, 0.02)] * 28
    readers = make_readers(world, specs)
    history = run_samples(world, readers, parallelism, deadline, 50, interval=1.0)
    tried = all_tried_bound(readers, parallelism, deadline)
    took = [entry["took"] for entry in world.timeline]
    assert all(t <= 0.02 + 1e-9 for t in took[tried:]), took
    assert sorted(took)[len(took) // 2] < deadline / 2, took
    checked = check_quick_samples(world, history, readers, deadline)
    assert len(checked) >= 50 - tried, checked
    check_fast_readers(history, readers, parallelism, deadline)
    check_backoff(readers, world.sampler)
    assert all(r.logins >= 2 for r in readers if r.kind == "gives_up")   # retried, in the background
    assert all(r.logins == 1 for r in readers if r.kind == "refusing")   # 60 s not over yet
    seen = set()
    for results in history[tried:]:
        for r in readers:
            if r.kind == "fast":
                continue
            res = results[r.name]
            assert isinstance(res, N.NodeUnavailable) and not res.pending, (r.name, res)
            m = re.match(r"(.*) \((next login attempt in (\d+) s|login attempt under way|"
                         r"next login attempt waiting for a free login slot)\)$", res.reason)
            assert m, res.reason
            seen.add((r.kind, m.group(1), re.sub(r"\d+", "N", m.group(2))))
            if r.kind == "refusing":
                assert res.permanent and 1 <= int(m.group(3)) <= 60, res.reason
    assert ("gives_up", "BMC unreachable: timeout", "next login attempt in N s") in seen, seen
    assert ("dead", "BMC unreachable: login not completed within 1.5s", "login attempt under way") in seen, seen


def test_backoff_doubles_up_to_the_cap_and_an_answer_ends_it():
    world = World()
    flaky, hot = make_readers(world, [("gives_up", 0.1, 0), ("fast", 0.01, 0.01)])
    readers = [flaky, hot]
    sampler = world.sampler_for(2, 1.0, retry_after=2.0, retry_max=10.0)
    interval = 0.5
    slack = 0.1 + interval + 0.02   # the failure comes 0.1 s after the login; samples start every 0.51 s

    def run_until(t_end):
        out = []
        while world.now < t_end:
            results = sampler.sample(readers, prepare)
            assert isinstance(results[hot.name], dict) or not out
            out.append(results[flaky.name])
            sampler.idle(interval, readers, sleep=world.rest)   # as run_health pauses
        return out

    seen = run_until(40.0)
    gaps = [b - a for a, b in itertools.pairwise(flaky.login_times)]
    assert len(gaps) >= 5, flaky.login_times
    for k, gap in enumerate(gaps, 1):
        delay = min(10.0, 2.0 * 2 ** (k - 1))
        assert delay <= gap <= delay + slack, (k, gaps)
    assert "BMC unreachable: timeout (next login attempt in 2 s)" in [r.reason for r in seen]
    assert "BMC unreachable: timeout (next login attempt in 10 s)" in [r.reason for r in seen]

    flaky.kind = "fast"   # the BMC is back: its next retry logs in, and it is read every sample
    before = flaky.logins
    seen = run_until(world.now + 11.0)
    assert flaky.logins == before + 1
    assert isinstance(seen[-1], dict) and isinstance(seen[-2], dict)

    flaky.kind = "gives_up"   # it goes away again: the backoff starts over from retry_after
    flaky.connected = False
    start = len(flaky.login_times)
    run_until(world.now + 10.0)
    again = flaky.login_times[start:]
    assert len(again) >= 3, again
    assert 2.0 <= again[1] - again[0] <= 2.0 + slack, again
    assert 4.0 <= again[2] - again[1] <= 4.0 + slack, again


def test_refused_credentials_are_not_logged_into_every_sample():
    """A permanent error (wrong password) waits retry_max, not the first delay."""
    world = World()
    refusing, refusing_now, hot = make_readers(world, [("refusing", 0, 0), ("refusing_now", 0, 0),
                                                       ("fast", 0.01, 0.01)])
    history = run_samples(world, [refusing, refusing_now, hot], 4, 1.5, 30, interval=1.0)
    assert refusing.logins == 1 and refusing_now.logins == 1
    for results in history[1:]:
        for r in (refusing, refusing_now):
            res = results[r.name]
            assert res.permanent and res.reason.startswith("authentication failed: refused (next login attempt in ")
    world = World()
    refusing, hot = make_readers(world, [("refusing", 0, 0), ("fast", 0.01, 0.01)])
    run_samples(world, [refusing, hot], 4, 1.5, 40, interval=1.0, retry_max=10.0)
    assert 3 <= refusing.logins <= 5, refusing.login_times
    check_backoff([refusing, hot], world.sampler)


def test_a_retry_runs_in_the_background_and_idle_finishes_it():
    """A retry is not waited for, its answer counts if it comes in time, and idle() keeps it going."""
    world = World()
    back, hot = make_readers(world, [("gives_up", 0.2, 0), ("fast", 0.01, 0.01)])
    readers = [back, hot]
    sampler = world.sampler_for(2, 1.0, retry_after=2.0)
    first = sampler.sample(readers, prepare)
    assert first[back.name].reason == "BMC unreachable: timeout (next login attempt in 2 s)"
    assert world.now == pytest.approx(0.2)   # both first logins answered: no waiting out the deadline
    back.kind, back.login, back.read = "slow", 0.5, 0.01   # the BMC is back, and slow to log in
    world.now = 2.5
    second = sampler.sample(readers, prepare)
    assert world.now == pytest.approx(2.51)   # the live read only: the retry is not waited for
    assert isinstance(second[hot.name], dict)
    assert second[back.name].reason == "BMC unreachable: timeout (login attempt under way)"
    assert back.busy
    sampler.idle(1.0, readers, sleep=world.rest)   # between samples the event loop turns: the login goes on
    assert world.now == pytest.approx(3.51)
    assert back.connected and not back.busy and back.answered[-1] == pytest.approx(3.01)
    third = sampler.sample(readers, prepare)
    assert isinstance(third[back.name], dict) and isinstance(third[hot.name], dict)
    assert back.logins == 2

    # a retry that answers while the sample still waits for a slower BMC counts in that sample
    world = World()
    back, slowpoke = make_readers(world, [("gives_up", 0.2, 0), ("fast", 0.01, 0.5)])
    readers = [back, slowpoke]
    sampler = world.sampler_for(2, 1.0, retry_after=2.0)
    sampler.sample(readers, prepare)
    back.kind, back.login = "fast", 0.1
    world.now = 3.0
    results = sampler.sample(readers, prepare)
    assert isinstance(results[back.name], dict) and isinstance(results[slowpoke.name], dict)
    assert world.now == pytest.approx(3.5)


def test_idle_sleeps_when_nothing_is_in_flight():
    world = World()
    readers = make_readers(world, [("fast", 0.01, 0.01)])
    sampler = world.sampler_for(1, 1.0)
    sampler.sample(readers, prepare)
    slept = []
    sampler.idle(0.7, readers, sleep=slept.append)
    assert slept == [pytest.approx(0.7)]


def test_run_health_keeps_its_pace_with_a_dead_rack():
    """run_health over 100 dead BMCs and 28 live ones on the fake clock: most samples take no time."""
    world = World()
    specs = [("dead", 0, 0)] * 50 + [("gives_up", 3.0, 0)] * 50 + [("fast", 0.05, 0.02)] * 28
    readers = make_readers(world, specs)
    by_name = {r.name: r for r in readers}
    targets = [{"name": r.name, "address": "10.0.%d.%d" % divmod(i, 256), "username": "u", "password": "p"}
               for i, r in enumerate(readers)]
    res = H.run_health(targets, P.Policy([{"name": "CPU* Temp", "upper_critical": 85}]), window=60,
                       interval=1.0, timeout=1.5, parallelism=6, node_factory=lambda t: by_name[t["name"]],
                       pump=world.pump, clock=world.clock, sleep=world.rest)
    fast = sorted(r.name for r in readers if r.kind == "fast")
    assert res["summary"]["ok"] == fast
    assert res["summary"]["unknown"] == sorted(set(by_name) - set(fast))
    assert res["sweep_seconds"]["max"] <= 1.5 + STEP + 1e-9
    assert res["sweep_seconds"]["median"] < 0.1, res["sweep_seconds"]
    assert res["samples"] >= 50, res["samples"]
    for r in readers:
        if r.kind != "fast":
            assert res["nodes"][r.name]["reason"].startswith("BMC unreachable"), res["nodes"][r.name]


# -- the property test -------------------------------------------------------------

KINDS = ("fast", "slow", "dead", "gives_up", "refusing", "refusing_now", "sync_fast", "sync_refusing", "sync_dead")


@st.composite
def scenarios(draw):
    deadline = draw(st.sampled_from([0.5, 1.0, 3.0]))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=40))
    specs = []
    for kind in kinds:
        if kind == "fast":
            login = draw(st.floats(0.001, 0.1)) * deadline
            read = draw(st.floats(0.001, 0.1)) * deadline
        elif kind == "slow":
            login = draw(st.floats(0.5, 2.0)) * deadline
            read = draw(st.floats(0.3, 1.5)) * deadline
        elif kind == "gives_up":
            login, read = draw(st.floats(0.2, 3.0)) * deadline, 0
        else:
            login = read = 0
        specs.append((kind, login, read))
    parallelism = draw(st.integers(1, 8) | st.sampled_from([16, 64]))
    abandon = draw(st.sampled_from([None, 2.0, 5.0]))
    interval = draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]))
    return {"deadline": deadline, "specs": specs, "parallelism": parallelism,
            "abandon_after": None if abandon is None else abandon * deadline, "interval": interval * deadline}


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_sampler_schedules_any_mix_of_bmcs(case):
    world = World()
    readers = make_readers(world, case["specs"])
    parallelism, deadline = case["parallelism"], case["deadline"]
    history = run_samples(world, readers, parallelism, deadline, samples_needed(readers, parallelism, deadline),
                          interval=case["interval"], abandon_after=case["abandon_after"])
    assert world.longest_wait <= STEP + 1e-12
    check_fast_readers(history, readers, parallelism, deadline)
    check_backoff(readers, world.sampler)
    check_quick_samples(world, history, readers, deadline)


@st.composite
def crowds(draw):
    """Large clusters, mostly dead: many BMCs that hold a login slot, a few live ones, in any order."""
    deadline = draw(st.sampled_from([1.0, 3.0]))
    specs = [("dead", 0, 0)] * draw(st.integers(0, 80))
    specs += [("gives_up", draw(st.floats(0.5, 2.5)) * deadline, 0) for _ in range(draw(st.integers(0, 10)))]
    specs += [("slow", draw(st.floats(0.5, 2.0)) * deadline, 0.5 * deadline) for _ in range(draw(st.integers(0, 4)))]
    specs += [("refusing", 0, 0)] * draw(st.integers(0, 4))
    specs += [("fast", draw(st.floats(0.005, 0.1)) * deadline, 0.02) for _ in range(draw(st.integers(1, 12)))]
    return {"deadline": deadline, "specs": draw(st.permutations(specs)),
            "parallelism": draw(st.sampled_from([1, 2, 6, 32, 128]))}


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowds())
def test_sampler_reads_live_bmcs_among_many_dead(case):
    world = World()
    readers = make_readers(world, case["specs"])
    parallelism, deadline = case["parallelism"], case["deadline"]
    history = run_samples(world, readers, parallelism, deadline, samples_needed(readers, parallelism, deadline))
    check_fast_readers(history, readers, parallelism, deadline)


@st.composite
def paced_crowds(draw):
    """Crowds sampled at a pace, long enough for the dead BMCs' backoff to run out several times."""
    case = draw(crowds())
    case["interval"] = draw(st.sampled_from([0.0, 0.3, 1.0, 2.0])) * case["deadline"]
    return case


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(paced_crowds())
def test_once_dead_bmcs_failed_samples_end_when_the_live_ones_answered(case):
    """After every BMC's first login, a sample waits for no login: not for the dead BMCs, not for their retries.

    It ends when the BMCs it reads have answered (fast ones in 0.02 s, slow
    ones in half the deadline), on the fake clock, however many dead BMCs
    there are and whatever their retries are doing.
    """
    world = World()
    readers = make_readers(world, case["specs"])
    parallelism, deadline = case["parallelism"], case["deadline"]
    samples = max(samples_needed(readers, parallelism, deadline), all_tried_bound(readers, parallelism, deadline)) + 12
    history = run_samples(world, readers, parallelism, deadline, samples, interval=case["interval"])
    check_fast_readers(history, readers, parallelism, deadline)
    check_backoff(readers, world.sampler)
    checked = check_quick_samples(world, history, readers, deadline)
    assert len(checked) >= 9, (len(checked), samples, [round(e["took"], 3) for e in world.timeline])
    for i in checked:
        assert world.timeline[i]["took"] <= deadline / 2 + 1e-9

