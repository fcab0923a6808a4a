# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the watch's files under faults: torn audit appends, OSErrors of the state and
reservation directories, durability (fsync of the directory), and the modules' failure messages.

A real full disk and a read-only state directory are in tests/integration/test_watch_state_faults.py;
here the faults are simulated (os.write writing half, os.replace failing...) on real files.
"""
import errno
import os

import pft_audit
import pft_quarantine
import pft_watch_decide
import pft_watch_select
import pytest
import spare_reservation
from ansible.module_utils import pft_reservation, pft_state
from ansible.module_utils.pft_reservation import ReservationError, ReservationStore
from ansible.module_utils.pft_state import StateDir, WatchError, audit, read_audit
from pft_module_run import run_module

REAL_WRITE = os.write


def fd_path(fd):
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return ""


def fail_writes_to(monkeypatch, suffix, script):
    """os.write to a file whose name ends with ``suffix`` follows ``script``, one entry per call:
    ``"half"`` writes half of the bytes, an int errno raises it, ``None`` writes normally."""
    calls = []

    def fake(fd, data):
        if not fd_path(fd).endswith(suffix):
            return REAL_WRITE(fd, data)
        step = script[len(calls)] if len(calls) < len(script) else None
        calls.append(len(data))
        if step == "half":
            return REAL_WRITE(fd, bytes(data)[:len(data) // 2])
        if isinstance(step, int):
            raise OSError(step, os.strerror(step))
        return REAL_WRITE(fd, data)
    monkeypatch.setattr(pft_state.os, "write", fake)
    return calls


def started(d, guest="g1"):
    return audit(d, "started", record={"node": "c1", "guest": guest, "target": "c3"})["id"]


# -- audit appends: whole lines or nothing ---------------------------------------------------------
def test_short_write_then_full_disk_cuts_the_line_off_and_keeps_the_journal_entry(tmp_path, monkeypatch):
    d = str(tmp_path)
    audit(d, "event", outcome="prestaged", record={"node": "c2"})
    log = os.path.join(d, "audit.jsonl")
    before = open(log, "rb").read()
    rid = started(d)
    calls = fail_writes_to(monkeypatch, "audit.jsonl", ["half", errno.ENOSPC])
    with pytest.raises(WatchError) as exc:
        audit(d, "completed", record_id=rid, outcome="migrated", record={"migration": {"total_s": 41.2}})
    msg = str(exc.value)
    assert "state directory %s" % d in msg and "audit.jsonl" in msg, msg
    assert "No space left on device [ENOSPC]" in msg and "nothing of the record was kept" in msg, msg
    assert len(calls) == 2                                   # the short write was seen and continued
    assert open(log, "rb").read() == before                  # the half line is gone again
    assert os.path.exists(os.path.join(d, "journal", rid + ".json"))
    assert [p["id"] for p in audit(d, "pending")["pending"]] == [rid]
    monkeypatch.undo()
    out = audit(d, "completed", record_id=rid, outcome="migrated", record={"migration": {"total_s": 41.2}})
    records, warnings = read_audit(log)
    assert warnings == [] and [r["outcome"] for r in records] == ["prestaged", "migrated"]
    assert records[1] == out["record"] and not os.path.exists(os.path.join(d, "journal", rid + ".json"))


def test_a_short_write_is_continued_into_one_whole_line(tmp_path, monkeypatch):
    d = str(tmp_path)
    rid = started(d)
    calls = fail_writes_to(monkeypatch, "audit.jsonl", ["half"])
    out = audit(d, "completed", record_id=rid, outcome="migrated", record={"note": "x" * 300})
    assert len(calls) == 2
    records, warnings = read_audit(os.path.join(d, "audit.jsonl"))
    assert warnings == [] and records == [out["record"]]
    assert audit(d, "pending")["pending"] == []


def test_a_write_that_makes_no_progress_fails_and_writes_nothing(tmp_path, monkeypatch):
    d = str(tmp_path)
    monkeypatch.setattr(pft_state.os, "write",
                        lambda fd, data: 0 if fd_path(fd).endswith("audit.jsonl") else REAL_WRITE(fd, data))
    with pytest.raises(WatchError, match=r"cannot append a record to audit.jsonl: short write: 0 of \d+ bytes"):
        audit(d, "event", record={"node": "c1"})
    assert os.path.getsize(os.path.join(d, "audit.jsonl")) == 0


def test_failed_fsync_of_the_audit_log_undoes_the_append(tmp_path, monkeypatch):
    d = str(tmp_path)
    rid = started(d)
    real_fsync = os.fsync
    state = {"failed": False}

    def fsync(fd):
        if fd_path(fd).endswith("audit.jsonl") and not state["failed"]:
            state["failed"] = True
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)
    monkeypatch.setattr(pft_state.os, "fsync", fsync)
    with pytest.raises(WatchError, match=r"audit.jsonl: Input/output error \[EIO\]"):
        audit(d, "completed", record_id=rid, outcome="migrated")
    assert os.path.getsize(os.path.join(d, "audit.jsonl")) == 0
    assert os.path.exists(os.path.join(d, "journal", rid + ".json"))


def test_a_torn_tail_of_an_older_version_never_merges_with_the_next_record(tmp_path):
    d = str(tmp_path)
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"id":"a","outcome":"migrated","migration":{"total_s":40}}\n{"id":"b","outcome":"migr')
    audit(d, "event", outcome="prestaged", record={"node": "c2", "id": "c"})
    records, warnings = read_audit(str(log))
    assert [r["id"] for r in records] == ["a", "c"]
    assert warnings == ["%s line 2 is not a whole JSON record (torn write?): skipped" % log]


def test_read_audit_skips_what_is_not_a_whole_record_and_names_the_line(tmp_path):
    log = tmp_path / "audit.jsonl"
    assert read_audit(str(log)) == ([], [])                  # no log yet
    log.write_bytes(b'{"id":"a"}\n{"id":"b","outc\n\n[1,2]\n\xff\xfe{"id":\n{"id":"c"}')
    records, warnings = read_audit(str(log))
    assert [r["id"] for r in records] == ["a", "c"]
    assert [w.split(" line ")[1].split(" ")[0] for w in warnings] == ["2", "4", "5"]
    assert all(w.startswith(str(log)) and w.endswith("(torn write?): skipped") for w in warnings)


def test_audit_query_filters_by_outcome_and_keeps_the_last(tmp_path):
    d = str(tmp_path)
    for i, outcome in enumerate(["migrated", "failed", "migrated", "migrated"]):
        audit(d, "event", outcome=outcome, record={"id": "r%d" % i})
    with open(os.path.join(d, "audit.jsonl"), "ab") as fh:
        fh.write(b'{"id":"torn","outc')
    out = audit(d, "query", outcome="migrated", limit=2)
    assert [r["id"] for r in out["records"]] == ["r2", "r3"] and out["changed"] is False
    assert out["warnings"] == ["%s/audit.jsonl line 5 is not a whole JSON record (torn write?): skipped" % d]
    assert [r["id"] for r in audit(d, "query")["records"]] == ["r0", "r1", "r2", "r3"]
    assert audit(str(tmp_path / "none"), "query")["records"] == []
    with pytest.raises(WatchError, match="limit must be >= 1"):
        audit(d, "query", limit=0)


# -- state files: OSErrors name the directory, the file and the cause --------------------------------
def test_write_json_fsyncs_the_directory_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(pft_state.os, "fsync", lambda fd: (events.append(("fsync", fd_path(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(pft_state.os, "replace",       # pft_common.atomic_write renames with os.replace
                        lambda a, b: (events.append(("rename", b)), real_replace(a, b))[1])
    store = StateDir(str(tmp_path))
    store.ensure()
    store.write_json(os.path.join("journal", "x.json"), {"a": 1})
    journal = str(tmp_path / "journal")
    assert [e[0] for e in events] == ["fsync", "rename", "fsync"], events
    assert events[0][1].startswith(os.path.join(journal, ".x.json.")) and events[2] == ("fsync", journal)
    events.clear()
    store.remove(os.path.join("journal", "x.json"))
    assert events == [("fsync", journal)] and not os.path.exists(os.path.join(journal, "x.json"))


def test_write_json_error_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    store = StateDir(str(tmp_path))

    def replace(a, b):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    monkeypatch.setattr(pft_state.os, "replace", replace)
    with pytest.raises(WatchError) as exc:
        store.write_json("watch-state.json", {"nodes": {}})
    assert str(exc.value) == ("state directory %s: cannot write watch-state.json: %s [EDQUOT]"
                              % (tmp_path, os.strerror(errno.EDQUOT)))
    assert os.listdir(str(tmp_path)) == []


def test_unreadable_state_file_and_lock_file_are_named(tmp_path):
    d = str(tmp_path)
    os.mkdir(os.path.join(d, "watch-state.json"))        # root can read anything: a directory cannot be read
    with pytest.raises(WatchError, match=r"state directory %s: cannot read watch-state.json: .*\[EISDIR\]" % d):
        StateDir(d).read_json("watch-state.json", {})
    os.mkdir(os.path.join(d, ".lock"))
    with pytest.raises(WatchError, match=r"state directory %s: cannot open the lock file .lock: .*\[EISDIR\]" % d):
        with StateDir(d):
            pass
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(WatchError, match=r"state directory %s/sub: cannot create %s/sub: .*\[ENOTDIR\]"
                       % (blocked, blocked)):
        StateDir(str(blocked / "sub")).ensure()


# -- reservations ---------------------------------------------------------------------------------
def test_corrupt_or_unreadable_reservation_file_is_named(tmp_path):
    rd = tmp_path / "res"
    rd.mkdir()
    (rd / "c3.json").write_text('{"host": "c3", "own')
    with pytest.raises(ReservationError, match=r"reservation file %s is corrupt \(" % (rd / "c3.json")):
        ReservationStore(str(rd)).active()
    (rd / "c3.json").write_text('{"host": "c3"}')
    with pytest.raises(ReservationError, match=r"c3.json is corrupt \(missing field 'owner'\)"):
        ReservationStore(str(rd)).active()
    (rd / "c3.json").unlink()
    (rd / "c3.json").mkdir()
    with pytest.raises(ReservationError, match=r"reservation file %s: cannot read it: .*\[EISDIR\]" % (rd / "c3.json")):
        ReservationStore(str(rd)).active()


def test_reservation_write_error_is_named_and_the_directory_is_fsynced(tmp_path, monkeypatch):
    rd = str(tmp_path / "res")
    store = ReservationStore(rd)
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(pft_reservation.os, "fsync",
                        lambda fd: (events.append(fd_path(fd)), real_fsync(fd))[1])
    assert store.reserve(["c3"], "o", ttl=60)["host"] == "c3"
    assert events[-1] == rd and sorted(os.listdir(rd)) == [".lock", "c3.json"]

    def link(a, b):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(pft_reservation.os, "link", link)
    with pytest.raises(ReservationError) as exc:
        store.reserve(["c4"], "o2", ttl=60)
    assert str(exc.value) == ("reservation directory %s: cannot write c4.json: No space left on device [ENOSPC]"
                              % rd)
    assert sorted(os.listdir(rd)) == [".lock", "c3.json"]      # no temporary left behind


# -- the modules: a clean failure whatever the exception --------------------------------------------
HEALTH = {"nodes": {"c1": {"verdict": "critical", "reason": "CPU1 Temp: 92 >= 85",
                           "sensors": {"CPU1 Temp": {"verdict": "critical", "value": 92.0}}}}}


def test_decide_with_a_corrupt_reservation_file_fails_naming_it(tmp_path, capsys):
    rd = tmp_path / "res"
    rd.mkdir()
    (rd / "c3.json").write_text("{not json")
    res = run_module(pft_watch_decide, {"health": HEALTH, "state_dir": str(tmp_path / "state"),
                                        "reservation_dir": str(rd)}, capsys)
    assert res["rc"] == 1 and res["failed"], res
    assert res["msg"].startswith("reservation file %s is corrupt" % (rd / "c3.json")), res["msg"]


METRIC = '<METRIC NAME="%s" VAL="%s" TYPE="%s" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>\n'


def ganglia_host(name, ip, guests, free, load):
    return ('<HOST NAME="%s" IP="%s" REPORTED="1" TN="1" TMAX="20" DMAX="0" GMOND_STARTED="1">\n' % (name, ip)
            + METRIC % ("pft_guest_count", len(guests), "uint32") + METRIC % ("pft_xen_free_memory_mb", free, "uint32")
            + METRIC % ("load_one", load, "float") + METRIC % ("pft_guest_names", ",".join(guests), "string")
            + METRIC % ("pft_guest_maxmem_mb", ",".join("%s=160" % g for g in guests), "string") + "</HOST>\n")


def test_select_with_a_corrupt_reservation_file_fails_naming_it(tmp_path, capsys, xml_replay_server):
    xml_replay_server["data"] = (
        '<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>\n<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">\n'
        '<CLUSTER NAME="pft" LOCALTIME="1795430001" OWNER="x" LATLONG="x" URL="x">\n'
        + ganglia_host("n1", "10.0.0.1", ["g1"], 700, 0.5) + ganglia_host("n2", "10.0.0.2", [], 900, 0.1)
        + "</CLUSTER>\n</GANGLIA_XML>\n").encode()
    state = tmp_path / "state"
    (state / "reservations").mkdir(parents=True)
    (state / "reservations" / "n2.json").write_text('{"host": "n2"')
    work = [{"node": "n1", "action": "evacuate", "cause": {"verdict": "critical", "reason": "hot"}}]
    res = run_module(pft_watch_select, {"work": work, "candidates": ["n1", "n2"],
                                        "endpoints": [xml_replay_server["endpoint"]], "state_dir": str(state)}, capsys)
    assert res["rc"] == 1 and "reservation file %s is corrupt" % (state / "reservations" / "n2.json") in res["msg"]
    assert os.listdir(str(state / "journal")) == []          # nothing journaled


CALLS = [
    (pft_watch_decide, "run_decide", {"health": HEALTH}),
    (pft_watch_select, "select_work", {"work": [], "candidates": [], "endpoints": ["127.0.0.1:9"]}),
    (pft_audit, "audit", {"state": "event", "record": {"node": "c1"}}),
    (pft_quarantine, "quarantine", {"state": "query"}),
    (spare_reservation, "ReservationStore", {"state": "reclaimed"}),
]


@pytest.mark.parametrize("module,attr,args", CALLS, ids=[c[0].__name__ for c in CALLS])
def test_every_watch_module_fails_cleanly_on_any_exception(module, attr, args, tmp_path, capsys, monkeypatch):
    name = module.__name__
    try:        # ansible-core >= 2.19 returns exception= only when tracebacks are asked for
        from ansible.module_utils._internal import _traceback
        monkeypatch.setattr(_traceback, "_is_traceback_enabled", lambda event: True)
    except ImportError:
        pass
    args = dict(args, **({"directory": str(tmp_path)} if name == "spare_reservation" else {"state_dir": str(tmp_path)}))
    bad = str(tmp_path / "watch-state.json")

    def oserror(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", bad)
    monkeypatch.setattr(module, attr, oserror)
    res = run_module(module, args, capsys)
    assert res["rc"] == 1 and res["msg"] == "%s: %s: Permission denied [EACCES]" % (name, bad), res
    assert "PermissionError" in res["exception"]

    def bug(*a, **kw):
        raise KeyError("verdict")
    monkeypatch.setattr(module, attr, bug)
    res = run_module(module, args, capsys)
    assert res["rc"] == 1 and res["msg"] == "internal error in %s: KeyError: 'verdict'" % name, res
    assert "Traceback" in res["exception"] and "KeyError" in res["exception"]


def test_audit_module_query_returns_records_and_warns_of_torn_lines(tmp_path, capsys, monkeypatch):
    d = str(tmp_path)
    # where a warning goes depends on the process (the module's result, or the controller's display when a
    # controller module was imported before): record what the module warns of
    warned = []
    real_warn = pft_audit.AnsibleModule.warn
    monkeypatch.setattr(pft_audit.AnsibleModule, "warn",
                        lambda self, warning, **kw: (warned.append(warning), real_warn(self, warning, **kw))[1])
    audit(d, "event", outcome="migrated", record={"id": "a", "migration": {"total_s": 40.0}})
    with open(os.path.join(d, "audit.jsonl"), "ab") as fh:
        fh.write(b'{"id":"b","outcome":"migr')
    audit(d, "event", outcome="failed", record={"id": "c"})
    res = run_module(pft_audit, {"state": "query", "outcome": "migrated", "state_dir": d,
                                 "_ansible_check_mode": True}, capsys)
    assert res["rc"] == 0 and res["changed"] is False, res
    assert [r["id"] for r in res["records"]] == ["a"] and res["records"][0]["migration"]["total_s"] == 40.0
    assert warned == ["%s/audit.jsonl line 2 is not a whole JSON record (torn write?): skipped" % d]
    assert "1 audit record(s) with outcome migrated" in res["msg"] and "1 torn line(s) skipped" in res["msg"]
