# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the migration lock (pft_xen_lock): /run/pft/migrate/GUEST.lock, held by `xl migrate`; xen_domain_info's
`migrating`; a second migration refused; the process-list fallback.
"""
import os
import subprocess

import ansible.module_utils.pft_xen_lock as pft_xen_lock
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
from ansible.module_utils.pft_xen_migrate import migrate
from xen_fakes import DOM0, FIXTURES, HEAD, G, Looks, wait_for


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
