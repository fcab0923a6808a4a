# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_xen for a migration that outlives its watcher: the bound on the wait past the
point of no return (xen_migrate handover_timeout: failure handover-timeout, in_flight, xl left running)
and the migration lock (/run/pft/migrate/GUEST.lock, held by `xl migrate`; xen_domain_info's
`migrating`; a second migration refused).

`xl migrate` is a fake: a shell script that prints the lines recorded from a real migration on the
Xen testbed (fixtures/xen/migrate-live-idle.txt) up to the point of no return, then hangs as a hand-over
over a cut network would. The looks before and after (xl list, the target's pft-probe) are answered by a
fake runner, as in test_pft_xen.py. Real Xen: tests/e2e/test_xen_migrate.py.
"""
import os
import signal
import subprocess
import time

import ansible.module_utils.pft_xen_lock as pft_xen_lock
import ansible.module_utils.pft_xen_migrate as pft_xen_migrate
import pytest
from ansible.module_utils.pft_xen import XenError, domain_info
from ansible.module_utils.pft_xen_lock import (
    MigrationRunning,
    acquire_migration_lock,
    lock_holder,
    lock_is_held,
    locked_guests,
    migration_lock_path,
    migrations_here,
    xl_migrate_args,
)
from ansible.module_utils.pft_xen_migrate import Migration, migrate
from ansible.module_utils.pft_xen_migration_log import MigrationLog

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "xen")

HEAD = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
DOM0 = "Domain-0                                     0   512     1     r-----      52.1\n"
G = "g                                            3   128     1     -b----       8.4\n"
INCOMING = "g--incoming                                  7   128     1     --p---       0.1\n"


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


class Looks(object):
    """The looks of migrate() around xl: the source's `xl list` and the target's pft-probe, each a
    list of outputs given out in turn (the last one repeats): before xl, then after."""

    def __init__(self, xl, source_lists, target_lists):
        self.xl, self.sources, self.targets, self.calls = xl, list(source_lists), list(target_lists), []

    @staticmethod
    def _next(outputs):
        return outputs.pop(0) if len(outputs) > 1 else outputs[0]

    def __call__(self, argv, timeout, *a, **kw):
        self.calls.append(list(argv))
        if argv[:2] == [self.xl, "list"]:
            return 0, self._next(self.sources), ""
        if argv[0] == "ssh":
            return 0, ("== xl-info\nhost : t\nfree_memory : 600\ntotal_memory : 1151\nxen_version : 4.17.5-pre\n"
                       "virt_caps : pv hvm shadow\n== xl-list\n%s\n== toolstack\nV\n== end\n"
                       % self._next(self.targets)), ""
        if argv[0] == "dpkg-query":
            return 0, "V", ""
        return 1, "", "unexpected call %s" % argv


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


def wait_for(predicate, timeout=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def lock_dir(tmp_path):
    return str(tmp_path / "run" / "pft" / "migrate")


@pytest.fixture
def holder(lock_dir):
    """A child process holding guest g1's migration lock, as `xl migrate` does (pass_fds)."""
    fd = acquire_migration_lock("g1", lock_dir)
    child = subprocess.Popen(["sleep", "60"], pass_fds=(fd,))
    os.close(fd)
    yield child
    child.kill()
    child.wait()


# --------------------------------------------------------------------------- past the point of no return


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
    monkeypatch.setattr(pft_xen_migrate, "ABORT_WAIT_MIN_S", 0.5)
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


# --------------------------------------------------------------------------- the migration lock


def test_a_lock_held_by_a_child_process_is_listed_and_released_when_it_exits(lock_dir, holder):
    path = migration_lock_path("g1", lock_dir)
    assert oct(os.stat(lock_dir).st_mode & 0o777) == "0o700"
    assert lock_is_held(path) and lock_holder(path) == holder.pid
    assert locked_guests(lock_dir) == {"g1": holder.pid}
    assert migrations_here(lock_dir, proc_dir="/nonexistent") == [
        dict(guest="g1", lock_held=True, lock_holder_pid=holder.pid, pids=[], targets=[])]
    assert lock_is_held(path)                             # the listing's test lock was released at once
    holder.kill()
    holder.wait()
    assert locked_guests(lock_dir) == {} and not lock_is_held(path)
    assert os.path.exists(path)                           # lock files are never removed


def test_the_listing_never_creates_lock_files(tmp_path, lock_dir):
    assert locked_guests(lock_dir) == {} and not os.path.exists(lock_dir)
    res = domain_info(runner=_recorded_xl(), lock_dir=lock_dir, proc_dir=str(tmp_path / "noproc"))
    assert res["migrating"] == [] and res["migrations"] == [] and not os.path.exists(lock_dir)
    os.makedirs(lock_dir)
    open(os.path.join(lock_dir, "g2.out"), "w").close()      # not a lock
    os.symlink("/etc/passwd", os.path.join(lock_dir, "g3.lock"))  # never followed
    assert locked_guests(lock_dir) == {} and sorted(os.listdir(lock_dir)) == ["g2.out", "g3.lock"]


def test_a_second_migration_is_refused_while_the_lock_is_held(lock_dir, holder):
    looks = Looks("/usr/sbin/xl", [HEAD + DOM0 + G], [HEAD + DOM0])
    for check_mode in (False, True):
        failed, msg, res = migrate("g1", "t", runner=looks, check_mode=check_mode, source_host="s",
                                   lock_dir=lock_dir)
        assert failed and res["failure"] == "migration-running" and res["in_flight"] is False
        assert res["lock"] == migration_lock_path("g1", lock_dir) and res["lock_holder_pid"] == holder.pid
        assert res["lock"] in msg and "pid %d" % holder.pid in msg and "refusing to start a second" in msg
    assert looks.calls == []                              # nothing looked at, nothing touched
    with pytest.raises(MigrationRunning):
        acquire_migration_lock("g1", lock_dir, wait=0)
    fd = acquire_migration_lock("g2", lock_dir)           # another guest's lock is its own
    os.close(fd)


def test_the_lock_is_named_by_a_valid_guest_name_only(lock_dir):
    with pytest.raises(XenError, match="not a valid domain name"):
        migration_lock_path("../etc/x", lock_dir)
    with pytest.raises(XenError, match="not a valid domain name"):
        acquire_migration_lock("Domain-0", lock_dir)


# --------------------------------------------------------------------------- the process-list fallback


@pytest.mark.parametrize("argv, expect", [
    (["/bin/sh", "/usr/sbin/xl", "-v", "migrate", "g", "t"], ("g", "t")),
    (["/usr/lib/xen-4.17/bin/xl", "-vvv", "migrate", "-s", "ssh -x", "-e", "g", "t"], ("g", "t")),
    (["xl", "migrate", "-sssh", "-C", "/etc/xen/g.cfg", "--debug", "g", "t"], ("g", "t")),
    (["xl", "-v", "migrate-receive"], None),
    (["ssh", "compute2", "xl", "migrate", "g", "t"], None),      # a migration on another host
    (["xl", "migrate", "g"], None),
    (["vi", "migrate"], None),
])
def test_xl_migrate_args(argv, expect):
    assert xl_migrate_args(argv) == expect


def test_a_running_xl_migrate_without_lock_is_listed_from_the_process_list(tmp_path, lock_dir):
    # a stand-in that never forks (a `sleep` loop would: for a moment its child has the same
    # command line, and the listing would name two pids); it blocks opening a FIFO nobody writes
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    xl = tmp_path / "xl"
    xl.write_text(f"#!/bin/sh\nread line < {fifo}\n")
    xl.chmod(0o755)
    proc = subprocess.Popen([str(xl), "-v", "migrate", "gproc", "compute9"])
    try:
        assert wait_for(lambda: any(g == "gproc" for _, g, _ in pft_xen_lock.xl_migrate_processes()))
        res = domain_info(runner=_recorded_xl(), lock_dir=lock_dir)
        assert "gproc" in res["migrating"]
        m = [m for m in res["migrations"] if m["guest"] == "gproc"][0]
        assert m == dict(guest="gproc", lock_held=False, lock_holder_pid=None, pids=[proc.pid], targets=["compute9"])
        assert domain_info(["pfte2e"], runner=_recorded_xl(), lock_dir=lock_dir)["migrating"] == []
    finally:
        proc.kill()
        proc.wait()


def _recorded_xl():
    def read(name):
        with open(os.path.join(FIXTURES, name)) as f:
            return "".join(line for line in f if not line.startswith("#"))
    answers = {("/usr/sbin/xl", "list", "-l"): read("xl-list-l.json.txt"),
               ("/usr/sbin/xl", "list"): read("xl-list.txt"), ("/usr/sbin/xl", "uptime"): read("xl-uptime.txt"),
               ("/usr/sbin/xl", "info"): read("xl-info.txt"), ("dpkg-query",): "4.17.5+72-g01140da4e8-1"}

    def runner(argv, timeout, *a, **kw):
        for key, value in answers.items():
            if list(argv[:len(key)]) == list(key):
                return 0, value, ""
        return 1, "", "unexpected call %s" % argv
    return runner
