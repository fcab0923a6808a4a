# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the whole migration (pft_xen_migrate): the decisions before `xl migrate`, the record, the
look after it, and a migration that outlives its watcher: the bound on the wait past the point of no return
(xen_migrate handover_timeout: failure handover-timeout, in_flight, xl left running).

In those, `xl migrate` is a fake: a shell script that prints the lines recorded from a real migration on the
Xen testbed (fixtures/xen/migrate-live-idle.txt) up to the point of no return, then hangs as a hand-over
over a cut network would. The looks before and after (xl list, the target's pft-probe) are answered by a
fake runner. Real Xen: tests/e2e/test_xen_migrate.py.
"""
import json
import os
import signal
import subprocess
import threading
import time

import ansible.module_utils.pft_xen_xl_migrate as pft_xen_xl_migrate
import pytest
from ansible.module_utils.pft_xen import XenError, running_once
from ansible.module_utils.pft_xen_lock import lock_is_held, locked_guests, migration_lock_path
from ansible.module_utils.pft_xen_migrate import locate, migrate, process_start_wall
from ansible.module_utils.pft_xen_migration_log import MigrationLog
from ansible.module_utils.pft_xen_xl_migrate import Migration
from xen_fakes import DOM0, FIXTURES, HEAD, INCOMING, G, Looks, Scripted, isolate_lock_dir, wait_for


@pytest.fixture(autouse=True)
def _migration_lock_dir(tmp_path, monkeypatch):
    isolate_lock_dir(tmp_path, monkeypatch)


class Together(Scripted):
    """Each call waits until the source's list, the target's probe and the version look are all running."""

    def __init__(self, *a, **kw):
        super(Together, self).__init__(*a, **kw)
        self.barrier = threading.Barrier(3, timeout=5)

    def __call__(self, argv, timeout, *a, **kw):
        self.barrier.wait()
        return super(Together, self).__call__(argv, timeout, *a, **kw)


def test_migrate_refuses_when_the_guest_is_already_on_the_target():
    failed, msg, res = migrate("g", "t", runner=Scripted(HEAD + DOM0 + G, HEAD + DOM0 + G), source_host="s")
    assert failed and "would run twice" in msg and res["failure"] == "guest-on-target"


def test_migrate_is_a_no_op_when_the_guest_already_moved():
    failed, msg, res = migrate("g", "t", runner=Scripted(HEAD + DOM0, HEAD + DOM0 + G), source_host="s")
    assert not failed and not res["changed"] and "already runs on t" in msg


def test_migrate_fails_before_acting_when_the_target_lacks_memory():
    xl = Scripted(HEAD + DOM0 + G, HEAD + DOM0, free=100)
    failed, msg, res = migrate("g", "t", runner=xl, source_host="s")
    assert failed and "memory" in msg and "still runs here" in msg and res["source_running"]
    assert not any("migrate" in c for call in xl.calls for c in call)


def test_migrate_check_mode_predicts_and_does_nothing():
    xl = Scripted(HEAD + DOM0 + G, HEAD + DOM0)
    failed, msg, res = migrate("g", "t", check_mode=True, runner=xl, source_host="s")
    assert not failed and res["changed"] and not res["migrated"] and "would migrate" in msg
    assert res["diff"] == {"before": {"host": "s", "guest": "g"}, "after": {"host": "t", "guest": "g"}}
    assert not any(c in ("migrate", "pause", "mem-set") for call in xl.calls for c in call)


def test_migrate_looks_at_source_target_and_version_at_once():
    # sequential looks would leave the barrier short of parties: BrokenBarrierError after 5 s
    xl = Together(HEAD + DOM0 + G, HEAD + DOM0)
    failed, msg, res = migrate("g", "t", check_mode=True, runner=xl, source_host="s")
    assert not failed and "would migrate" in msg
    assert sorted(c[0] for c in xl.calls) == ["/usr/sbin/xl", "dpkg-query", "ssh"]


def test_migrate_refuses_a_guest_that_is_not_here():
    failed, msg, res = migrate("g", "t", runner=Scripted(HEAD + DOM0, HEAD + DOM0), source_host="s")
    assert failed and "does not run exactly once" in msg


def test_migrate_validates_its_inputs():
    with pytest.raises(XenError):
        migrate("g", "t;id")
    with pytest.raises(XenError, match="mode"):
        migrate("g", "t", mode="fast")
    with pytest.raises(XenError, match="on_no_convergence"):
        migrate("g", "t", on_no_convergence="pray")


# -- the migration log never fails a migration -----------------------------------------------------
# (the demo's first evacuation on the testbed: the guest had moved, then the module failed with
# "No such file or directory: '/var/log/pft/migrations.jsonl'" and the watch recorded a failure)
def test_write_log_makes_its_directory(tmp_path):
    from ansible.module_utils.pft_xen_migrate import write_log
    path = tmp_path / "log" / "pft" / "migrations.jsonl"
    assert write_log(str(path), [{"kind": "summary", "guest": "guest1"}]) is None
    assert write_log(str(path), [{"kind": "summary", "guest": "guest2"}]) is None
    assert [json.loads(line)["guest"] for line in path.read_text().splitlines()] == ["guest1", "guest2"]
    assert oct(path.parent.stat().st_mode & 0o777) == "0o750"


def test_write_log_reports_instead_of_raising(tmp_path):
    from ansible.module_utils.pft_xen_migrate import write_log
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = write_log(str(blocker / "migrations.jsonl"), [{"kind": "summary"}])
    assert err and str(blocker) in err and "could not append" in err


def test_process_start_wall_is_this_process_start():
    import time
    started = process_start_wall()
    assert started is not None and time.time() - 86400 < started <= time.time() + 1
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert started - 1 <= process_start_wall(child.pid) <= time.time() + 1
    finally:
        child.kill()
        child.wait()
    assert process_start_wall(2 ** 22 + 1) is None


class Sequenced(object):
    """The source's `xl list` and the target's probe change from call to call (the last one repeats)."""

    def __init__(self, sources, targets):
        self.sources, self.targets, self.calls = list(sources), list(targets), []

    def __call__(self, argv, timeout):
        self.calls.append(argv)
        which = self.sources if argv[0] == "/usr/sbin/xl" else self.targets
        text = which.pop(0) if len(which) > 1 else which[0]
        if argv[0] == "/usr/sbin/xl":
            return 0, text, ""
        return 0, ("== xl-info\nhost : t\nfree_memory : 400\ntotal_memory : 1151\nxen_version : 4.17.5-pre\n"
                   "virt_caps : pv hvm shadow\n== xl-list\n%s\n== toolstack\nV\n== end\n" % text), ""


DYING = "g--migratedaway                              3   128     1     -----d       8.4\n"


class Clock(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_locate_waits_for_the_source_copy_to_die():
    clock = Clock()
    runner = Sequenced([HEAD + DOM0 + DYING, HEAD + DOM0 + DYING, HEAD + DOM0], [HEAD + DOM0 + G])
    src, tgt, known, error, waited = locate("g", "t", runner=runner, clock=clock, sleep=clock.sleep)
    assert src == [] and running_once(tgt) and known and error is None and waited == 2.0


def test_locate_waits_for_the_incoming_name_on_the_target():
    clock = Clock()
    runner = Sequenced([HEAD + DOM0], [HEAD + DOM0 + INCOMING, HEAD + DOM0 + G])
    src, tgt, _, _, waited = locate("g", "t", runner=runner, clock=clock, sleep=clock.sleep)
    assert src == [] and running_once(tgt) and waited == 1.0


def test_locate_gives_up_after_its_wait_and_reports_what_it_saw():
    clock = Clock()
    runner = Sequenced([HEAD + DOM0 + DYING], [HEAD + DOM0 + G])
    src, tgt, _, _, waited = locate("g", "t", runner=runner, wait=5, clock=clock, sleep=clock.sleep)
    assert [r["role"] for r in src] == ["migratedaway"] and src[0]["state"] == "dying" and waited == 5.0


def test_locate_does_not_wait_on_a_clean_picture():
    clock = Clock()
    runner = Sequenced([HEAD + DOM0 + G], [HEAD + DOM0])
    src, tgt, _, _, waited = locate("g", "t", runner=runner, clock=clock, sleep=clock.sleep)
    assert running_once(src) and tgt == [] and waited == 0.0 and len(runner.calls) == 2


def recorded_until(marker):
    """The recorded xl output (without times) up to and including the first line containing marker."""
    out = []
    with open(os.path.join(FIXTURES, "migrate-live-idle.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            out.append(line.strip().partition(" ")[2])
            if marker in out[-1]:
                return out
    raise AssertionError("%r not in the fixture" % marker)


def fake_xl(tmp_path, lines, then):
    """A fake xl: prints lines on stderr (xen_migrate reads stdout and stderr as one pipe), then runs
    the shell code `then`."""
    text = tmp_path / "xl-output.txt"
    text.write_text("\n".join(lines) + "\n")
    xl = tmp_path / "xl"
    xl.write_text("#!/bin/sh\ncat '%s' >&2\n%s\n" % (text, then))
    xl.chmod(0o755)
    return str(xl)


def end(pid):
    """Kill and reap a process this test started (through the module code)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


@pytest.fixture
def lock_dir(tmp_path):
    return str(tmp_path / "run" / "pft" / "migrate")


def test_the_handover_bound_is_the_later_of_no_return_plus_timeout_and_the_deadline():
    mig = Migration("g", "t", deadline=900.0, handover_timeout=120.0)
    mig.log = MigrationLog(0.0)
    assert mig.handover_limit(0.0) is None                 # before the point of no return: the deadline aborts
    mig.log.markers["no_return"] = 100.0
    assert mig.handover_limit(0.0) == 900.0                # early: the caller's whole budget
    mig.log.markers["no_return"] = 850.0
    assert mig.handover_limit(0.0) == 970.0                # late: still the whole handover_timeout


def test_a_hung_handover_is_left_running_and_reported_in_flight(tmp_path, lock_dir):
    # the target's "Domain started" line comes 2 s after pft stopped waiting: xl's output is still read
    xl = fake_xl(tmp_path, recorded_until("Giving target permission to start."),
                 "(sleep 2; echo 'migration target: Domain started successsfully.' >&2) &\nexec sleep 60")
    looks = Looks(xl, [HEAD + DOM0 + G], [HEAD + DOM0, HEAD + DOM0 + INCOMING])
    t0 = time.monotonic()
    failed, msg, res = migrate("g", "t", runner=looks, xl=xl, shim=None, source_host="s", deadline=0.5,
                               handover_timeout=1.0, stall_timeout=30, lock_dir=lock_dir)
    took = time.monotonic() - t0
    pid = res.get("xl_pid")
    try:
        assert failed and res["failure"] == "handover-timeout" and res["in_flight"] is True
        assert not res["migrated"] and res["changed"]
        assert 1.0 <= took < 8, took                       # bounded: no_return + handover_timeout, no settle
        assert res["stats"]["xl_rc"] is None and "no_return" in res["stats"]["markers_s"]
        assert [e["event"] for e in res["stats"]["events"]][-1] == "stopped_waiting"
        # xl was not killed, and still holds the lock: a later look sees the migration
        assert pid and os.path.isdir("/proc/%d" % pid)
        assert res["lock"] == migration_lock_path("g", lock_dir) and lock_is_held(res["lock"])
        assert locked_guests(lock_dir) == {"g": pid}
        assert "may still be moving" in msg and "left xl migrate (pid %d) running" % pid in msg
        assert "without killing it" in msg and "next run reconciles" in msg and res["lock"] in msg
        assert "here (s) g (id 3, blocked); t: g--incoming (id 7, paused)" in msg
        assert sum(1 for c in looks.calls if c[0] == "ssh") == 2     # the probe before, one look after
        # what xl prints after pft stopped reading goes on to a file, not into a pipe nobody reads
        out = res["xl_output_file"]
        assert out == os.path.join(lock_dir, "g.out")
        assert wait_for(lambda: "Domain started successsfully." in open(out).read())
    finally:
        if pid:
            end(pid)
    assert wait_for(lambda: locked_guests(lock_dir) == {})   # xl gone: the lock with it


class LookFailsAfter(Looks):
    """The source's `xl list` fails after xl was started."""

    def __call__(self, argv, timeout, *a, **kw):
        if argv[:2] == [self.xl, "list"] and any(c[:2] == [self.xl, "list"] for c in self.calls):
            self.calls.append(list(argv))
            return 1, "", "libxl: error: cannot list domains"
        return super(LookFailsAfter, self).__call__(argv, timeout, *a, **kw)


def test_in_flight_is_reported_even_when_the_look_after_fails(tmp_path, lock_dir):
    xl = fake_xl(tmp_path, recorded_until("Giving target permission to start."), "exec sleep 60")
    failed, msg, res = migrate("g", "t", runner=LookFailsAfter(xl, [HEAD + DOM0 + G], [HEAD + DOM0]), xl=xl,
                               shim=None, source_host="s", deadline=0.2, handover_timeout=0.3, lock_dir=lock_dir)
    try:
        assert failed and res["failure"] == "handover-timeout" and res["in_flight"] is True
        assert res["source_running"] is None and res["target_running"] is None
        assert "here (s) unknown (" in msg and "cannot list domains" in msg
    finally:
        end(res["xl_pid"])


def test_an_abort_that_does_not_end_xl_is_left_running_and_reported_in_flight(tmp_path, lock_dir, monkeypatch):
    # before the point of no return: the deadline aborts (no save helper to signal here); xl hangs on
    monkeypatch.setattr(pft_xen_xl_migrate, "ABORT_WAIT_MIN_S", 0.5)
    xl = fake_xl(tmp_path, recorded_until("Saving domain"), "exec sleep 60")
    failed, msg, res = migrate("g", "t", runner=Looks(xl, [HEAD + DOM0 + G], [HEAD + DOM0]), xl=xl, shim=None,
                               source_host="s", deadline=0.3, handover_timeout=0.5, stall_timeout=30,
                               lock_dir=lock_dir)
    try:
        assert failed and res["failure"] == "abort-timeout" and res["in_flight"] is True
        assert "did not end within" in msg and "may still be moving" in msg
        assert os.path.isdir("/proc/%d" % res["xl_pid"])
    finally:
        end(res["xl_pid"])


def test_a_migration_that_ends_is_not_in_flight_and_releases_the_lock(tmp_path, lock_dir):
    xl = fake_xl(tmp_path, recorded_until("Migration successful."), "exit 0")
    looks = Looks(xl, [HEAD + DOM0 + G, HEAD + DOM0], [HEAD + DOM0, HEAD + DOM0 + G])   # before, after
    failed, msg, res = migrate("g", "t", runner=looks, xl=xl, shim=None, source_host="s", lock_dir=lock_dir)
    assert not failed and res["migrated"] and res["in_flight"] is False and "xl_pid" not in res
    assert res["stats"]["xl_rc"] == 0 and locked_guests(lock_dir) == {}
