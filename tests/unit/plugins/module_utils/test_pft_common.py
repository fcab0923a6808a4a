# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_common (real files, flock and processes in a temporary directory)."""
import fcntl
import json
import multiprocessing
import os
import stat
import sys
import time

import pytest
from ansible.module_utils import pft_common
from ansible.module_utils.pft_common import (
    DOMAIN,
    NODE,
    VERDICT_RANK,
    CommandNotStarted,
    CommandTimeout,
    FileLock,
    JsonFileError,
    LockBusy,
    LockedDir,
    LockError,
    PftNameError,
    atomic_write,
    check_host,
    check_name,
    lock_is_held,
    read_json,
    run_with_deadline,
    state_paths,
    utc_iso,
    worst_verdict,
    write_json,
)

# --------------------------------------------------------------------------- locks


def test_locked_dir_creates_the_directory_and_its_lock(tmp_path):
    d = str(tmp_path / "state")
    with LockedDir(d, timeout=1) as lock:
        assert lock.locked and os.path.isfile(os.path.join(d, ".lock"))
        assert lock_is_held(os.path.join(d, ".lock")) is True
    assert not lock.locked
    assert lock_is_held(os.path.join(d, ".lock")) is False


def test_lock_deadline_names_the_path(tmp_path):
    path = str(tmp_path / ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # flock locks belong to the open file description: a second open() in this process conflicts too.
        started = time.monotonic()
        with pytest.raises(LockBusy) as err:
            FileLock(path, timeout=0.2).acquire()
        assert time.monotonic() - started >= 0.2
        assert path in str(err.value) and "0.2 s" in str(err.value)
        assert err.value.path == path
    finally:
        os.close(fd)


def test_non_blocking_try(tmp_path):
    path = str(tmp_path / ".lock")
    first, second = FileLock(path, timeout=0), FileLock(path, timeout=0)
    assert first.try_acquire()
    assert not second.try_acquire() and not second.locked
    with pytest.raises(LockBusy, match="is held by another process"):
        second.acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_detach_hands_the_locked_descriptor_over(tmp_path):
    path = str(tmp_path / "g.lock")
    lock = FileLock(path, timeout=0)
    fd = lock.acquire()
    assert lock.detach() == fd and not lock.locked
    lock.release()                                  # no-op: the descriptor is the caller's now
    assert lock_is_held(path) is True
    os.close(fd)
    assert lock_is_held(path) is False


def test_lock_refuses_a_relative_directory_and_a_symlink(tmp_path):
    with pytest.raises(LockError, match="absolute"):
        LockedDir("relative/dir")
    target = tmp_path / "elsewhere"
    target.write_text("")
    os.symlink(str(target), str(tmp_path / "link.lock"))
    with pytest.raises(LockError, match="link.lock"):
        FileLock(str(tmp_path / "link.lock"), nofollow=True).acquire()


def test_lock_is_held_of_a_missing_file(tmp_path):
    assert lock_is_held(str(tmp_path / "none.lock")) is False
    assert not os.path.exists(str(tmp_path / "none.lock"))


def _hold(directory, hold_s, log):
    with LockedDir(directory, timeout=30):
        with open(log, "a") as fh:
            fh.write("in %d %f\n" % (os.getpid(), time.monotonic()))
        time.sleep(hold_s)
        with open(log, "a") as fh:
            fh.write("out %d %f\n" % (os.getpid(), time.monotonic()))


def test_two_processes_never_hold_the_lock_at_once(tmp_path):
    directory, log = str(tmp_path / "state"), str(tmp_path / "log")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(directory, 0.2, log)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    events = [line.split() for line in open(log)]
    assert len(events) == 6
    # The log alternates in/out of one process at a time: nobody entered while another was inside.
    for i in range(0, 6, 2):
        assert events[i][0] == "in" and events[i + 1][0] == "out" and events[i][1] == events[i + 1][1]


def test_lock_held_by_another_process_times_out(tmp_path):
    directory = str(tmp_path / "state")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def hold():
        with LockedDir(directory, timeout=5):
            ready.set()
            time.sleep(2)

    p = ctx.Process(target=hold)
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockBusy) as err:
            LockedDir(directory, timeout=0.3).acquire()
        assert os.path.join(directory, ".lock") in str(err.value)
    finally:
        p.join(10)


# --------------------------------------------------------------------------- durable files


def test_atomic_write_fsyncs_the_file_and_the_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = str(tmp_path / "state.json")
    write_json(path, {"b": 1, "a": [2]})
    assert synced == [False, True]                 # the file, then its directory after the rename
    assert open(path).read() == '{\n "a": [\n  2\n ],\n "b": 1\n}\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(str(tmp_path)) == ["state.json"]


def test_crash_between_write_and_rename_keeps_the_old_content(tmp_path, monkeypatch):
    path = str(tmp_path / "state.json")
    write_json(path, {"old": True})

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json(path, {"new": True})
    assert json.load(open(path)) == {"old": True}
    assert os.listdir(str(tmp_path)) == ["state.json"]  # no temporary file left behind


def test_failed_check_before_rename_keeps_the_old_content(tmp_path):
    path = str(tmp_path / "conf")
    atomic_write(path, "old\n")

    def refuse(tmp):
        assert open(tmp).read() == "new\n"
        raise ValueError("refused")

    with pytest.raises(ValueError):
        atomic_write(path, "new\n", before_rename=refuse)
    assert open(path).read() == "old\n" and os.listdir(str(tmp_path)) == ["conf"]


def test_compact_json_and_bytes(tmp_path):
    write_json(str(tmp_path / "r.json"), {"b": 1, "a": 2}, indent=None)
    assert open(str(tmp_path / "r.json")).read() == '{"a": 2, "b": 1}'
    atomic_write(str(tmp_path / "raw"), b"\x00\xff", mode=0o600)
    assert open(str(tmp_path / "raw"), "rb").read() == b"\x00\xff"
    assert stat.S_IMODE(os.stat(str(tmp_path / "raw")).st_mode) == 0o600


def test_read_json(tmp_path):
    path = str(tmp_path / "x.json")
    assert read_json(path, {}) == {}
    with pytest.raises(FileNotFoundError):
        read_json(path)
    open(path, "w").write("{not json")
    with pytest.raises(JsonFileError) as err:
        read_json(path, {})
    assert path in str(err.value)
    write_json(path, [1])
    assert read_json(path) == [1]


# --------------------------------------------------------------------------- names
# The cases of the tests of pft_xen.check_name (rule DOMAIN), the node names of pft_state (rule NODE: in
# test_pft_state) and pft_reservation.check_host (the expression of NODE), and pft_xen.check_host.


@pytest.mark.parametrize("name", ["guest1", "g-1.a_b", "A"])
def test_domain_names_accepted(name):
    assert check_name("guest", name, rule=DOMAIN) == name


@pytest.mark.parametrize("name", ["", "Domain-0", "-x", "a b", "a;id", "$(id)", "x" * 65, None])
def test_domain_names_refused(name):
    with pytest.raises(PftNameError, match="not a valid domain name"):
        check_name("guest", name, rule=DOMAIN)


@pytest.mark.parametrize("name", ["c1", "n1", "s1", "node-1.example", "10.0.0.1", "fe80::1", "_x", "x" * 253])
def test_node_names_accepted(name):
    assert check_name("node", name) == name


@pytest.mark.parametrize("name", ["../etc", "", ".hidden", "../etc/passwd", "a/b", "-x", "x y", None, "x" * 254])
def test_node_names_refused(name):
    with pytest.raises(PftNameError) as err:
        check_name("node", name)
    assert str(err.value) == ("node name %r is not usable (letters, digits, _ . : - ; not starting with . or -)"
                              % (name,))


def test_messages_and_errors_are_those_of_the_old_functions():
    class XenError(Exception):
        pass

    with pytest.raises(XenError) as err:
        check_name("guest", "Domain-0", rule=DOMAIN, error=XenError)
    assert str(err.value) == ("guest name 'Domain-0' is not a valid domain name ([A-Za-z0-9][A-Za-z0-9_.-]*, "
                              "not Domain-0)")
    assert NODE.match("Domain-0")                   # a node may be called that; a guest may not


def _old(module, *names):
    """Names of another pft module_utils file, or a skip once they have moved (those files are being split)."""
    mod = pytest.importorskip("ansible.module_utils." + module)
    if not all(hasattr(mod, n) for n in names):
        pytest.skip("%s no longer has %s" % (module, ", ".join(names)))
    return mod


def test_the_old_functions_agree():
    # While pft_xen keeps its own copy, the rule must say what it says (pft_state and pft_reservation use NODE).
    pft_xen = _old("pft_xen", "check_name", "XenError")
    cases = ["guest1", "g-1.a_b", "A", "", "Domain-0", "-x", "a b", "a;id", "$(id)", "x" * 65, "x" * 254, None,
             "c1", "10.0.0.1", "fe80::1", "_x", ".hidden", "../etc", "a/b"]
    for case in cases:
        for old, old_err, rule in ((lambda n: pft_xen.check_name(n), pft_xen.XenError, DOMAIN),):
            try:
                old(case)
                old_ok = True
            except old_err:
                old_ok = False
            assert rule.match(case) == old_ok, (case, rule.description)


@pytest.mark.parametrize("host", ["", "-oProxyCommand=id", "a b", "h;id", "h`id`", "user@h"])
def test_invalid_hosts(host):
    with pytest.raises(PftNameError, match="not a host name"):
        check_host("target", host)


def test_valid_host():
    assert check_host("target", "10.0.0.2") == "10.0.0.2"


# --------------------------------------------------------------------------- times, verdicts, state paths


def test_utc_iso():
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert utc_iso(1700000000.9) == "2023-11-14T22:13:20Z"
    assert utc_iso(None) is None


def test_verdict_order():
    assert sorted(VERDICT_RANK, key=VERDICT_RANK.get) == ["ok", "unknown", "warning", "critical"]
    assert worst_verdict(["ok", "unknown", "warning"]) == "warning"
    assert worst_verdict(["ok", "unknown"]) == "unknown"
    assert worst_verdict([]) == "ok"


def test_verdict_order_is_that_of_ipmi_and_watch():
    pft_ipmi, pft_ipmi_policy = _old("pft_ipmi", "RANK"), _old("pft_ipmi_policy", "RANK")
    assert VERDICT_RANK is pft_ipmi_policy.RANK and pft_ipmi.RANK is VERDICT_RANK


def test_state_paths():
    paths = state_paths("/var/lib/pft")
    assert paths == {
        "state_dir": "/var/lib/pft",
        "lock": "/var/lib/pft/.lock",
        "watch_state": "/var/lib/pft/watch-state.json",
        "quarantine": "/var/lib/pft/quarantine.json",
        "journal": "/var/lib/pft/journal",
        "audit": "/var/lib/pft/audit.jsonl",
        "controller_lease": "/var/lib/pft/controller-lock.json",
        "reservations": "/var/lib/pft/reservations",
        "reservations_lock": "/var/lib/pft/reservations/.lock",
    }


def test_state_names_are_those_of_the_watch():
    pft_lease, pft_reservation = _old("pft_lease", "LEASE"), _old("pft_reservation", "DEFAULT_DIR", "LOCK_NAME")
    assert pft_lease.LEASE == pft_common.CONTROLLER_LEASE_FILE
    assert pft_reservation.DEFAULT_DIR == state_paths(pft_common.DEFAULT_STATE_DIR)["reservations"]
    assert pft_reservation.LOCK_NAME == pft_common.LOCK_FILE


# --------------------------------------------------------------------------- commands


def test_run_with_deadline_outputs():
    rc, out, err = run_with_deadline([sys.executable, "-c", "import sys; print(sys.stdin.read()); "
                                      "sys.stderr.write('e'); sys.exit(3)"], 30, input_text="in")
    assert (rc, out, err) == (3, "in\n", "e")
    rc, out, err = run_with_deadline([sys.executable, "-c", "import sys; print(1); sys.stderr.write('e')"], 30,
                                     merge_stderr=True, text=False)
    assert rc == 0 and out == b"1\ne" and err is None


def test_run_with_deadline_stdin_file(tmp_path):
    (tmp_path / "in").write_text("from a file")
    rc, out, _ = run_with_deadline([sys.executable, "-c", "import sys; print(sys.stdin.read())"], 30,
                                   stdin_path=str(tmp_path / "in"))
    assert out == "from a file\n"


def test_run_with_deadline_timeout_and_missing_binary(tmp_path):
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as err:
        run_with_deadline([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert time.monotonic() - started < 10
    assert "did not finish within 0.5 s" in str(err.value) and err.value.timeout == 0.5
    missing = str(tmp_path / "no-such-binary")
    with pytest.raises(CommandNotStarted) as err:
        run_with_deadline([missing], 5)
    assert str(err.value) == "cannot run %s: No such file or directory" % missing
    assert isinstance(err.value.cause, FileNotFoundError)
