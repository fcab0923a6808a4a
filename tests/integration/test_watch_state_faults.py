# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch's modules on a state directory that is full or read-only: real file systems, real errors.

A small tmpfs is mounted (root only) and filled up, so that a write meets a real ENOSPC (and an append a
real short write: the last page of audit.jsonl still has room); another is remounted read-only, the
"unwritable state directory" (root ignores file modes, so chmod would prove nothing). The modules run
through their main() with AnsibleModule, and once through ansible-playbook, with the repo's ansible.cfg:
every failure is a clean fail_json whose message names the directory, the file and the cause.
"""
import errno
import json
import os
import re
import subprocess
import sys

import pft_audit
import pft_quarantine
import pft_watch_decide
import pytest
import spare_reservation
import yaml
from ansible.module_utils.pft_reservation import ReservationStore
from ansible.module_utils.pft_state import audit, quarantine, read_audit
from pft_module_run import run_module
from pft_paths import REPO

pytestmark = pytest.mark.integration

HEALTH = {"nodes": {"c1": {"verdict": "critical", "reason": "CPU1 Temp: 92 >= upper_critical 85",
                           "sensors": {"CPU1 Temp": {"verdict": "critical", "value": 92.0}}}}}
# an audit record larger than the room left in the last page of audit.jsonl
BIG = {"migration": {"total_s": 41.2, "iterations": [{"iteration": i, "pages": 32768, "dirty_rate": 1234.5}
                                                     for i in range(200)]}}
ENOSPC = "No space left on device [ENOSPC]"
EROFS = "Read-only file system [EROFS]"


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, options): a fresh tmpfs under tmp_path; all are unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(name, options="size=64k"):
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip("cannot mount a tmpfs here: %s" % proc.stderr.strip())
        mounted.append(str(path))
        return str(path)
    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def remount_ro(path):
    subprocess.run(["mount", "-o", "remount,ro", path], check=True, capture_output=True)


def fill(path):
    """Write a filler file into ``path`` until the file system is full; returns its name."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def no_temporaries(path):
    return [f for d, _, fs in os.walk(path) for f in fs if f.endswith((".tmp", ".new"))] == []


@pytest.fixture
def full(tmpfs):
    """A state directory with a journal entry, one audit record and a reservation, then filled up."""
    d = tmpfs("full")
    audit(d, "event", outcome="prestaged", record={"node": "c2", "id": "p1"})
    rid = audit(d, "started", record={"node": "c1", "guest": "g1", "target": "c3"})["id"]
    ReservationStore(os.path.join(d, "reservations")).reserve(["c4"], "someone", ttl=600)
    filler = fill(d)
    return {"dir": d, "id": rid, "filler": filler}


def test_full_disk_audit_append_is_cut_off_and_the_journal_entry_stays(full, capsys):
    d, rid = full["dir"], full["id"]
    log = os.path.join(d, "audit.jsonl")
    before = open(log, "rb").read()
    res = run_module(pft_audit, {"state": "completed", "id": rid, "outcome": "migrated", "record": BIG,
                                 "state_dir": d}, capsys)
    assert res["rc"] == 1 and res["failed"], res
    assert res["msg"].startswith("state directory %s: cannot append a record to audit.jsonl: %s; " % (d, ENOSPC)), res
    written = int(re.search(r"\((\d+) of \d+ bytes written, cut off again\)", res["msg"]).group(1))
    assert written > 0                                  # a real short write: the last page had room
    assert open(log, "rb").read() == before             # whole lines or nothing
    assert os.path.exists(os.path.join(d, "journal", rid + ".json"))
    assert [e["id"] for e in audit(d, "pending")["pending"]] == [rid]
    # room again: the same call completes the record, as one whole line
    os.unlink(full["filler"])
    res = run_module(pft_audit, {"state": "completed", "id": rid, "outcome": "migrated", "record": BIG,
                                 "state_dir": d}, capsys)
    assert res["rc"] == 0 and res["changed"], res
    records, warnings = read_audit(log)
    assert warnings == [] and [r["id"] for r in records] == ["p1", rid]
    assert records[1]["migration"] == BIG["migration"] and audit(d, "pending")["pending"] == []


def test_full_disk_state_files_fail_naming_the_file(full, capsys):
    d = full["dir"]
    res = run_module(pft_watch_decide, {"health": HEALTH, "state_dir": d}, capsys)
    assert res["rc"] == 1 and res["msg"] == "state directory %s: cannot write watch-state.json: %s" % (d, ENOSPC)
    res = run_module(pft_quarantine, {"state": "present", "node": "c1", "state_dir": d}, capsys)
    assert res["rc"] == 1 and res["msg"] == "state directory %s: cannot write quarantine.json: %s" % (d, ENOSPC)
    res = run_module(pft_audit, {"state": "started", "id": "r2", "record": {"node": "c1"}, "state_dir": d}, capsys)
    assert res["rc"] == 1 and res["msg"] == "state directory %s: cannot write journal/r2.json: %s" % (d, ENOSPC)
    res = run_module(spare_reservation, {"state": "present", "hosts": ["c3"], "owner": "pft-watch:c1/g1",
                                         "directory": os.path.join(d, "reservations")}, capsys)
    assert res["rc"] == 1 and res["msg"] == ("reservation directory %s/reservations: cannot write c3.json: %s"
                                             % (d, ENOSPC)), res
    assert no_temporaries(d)
    assert not os.path.exists(os.path.join(d, "watch-state.json"))
    assert sorted(ReservationStore(os.path.join(d, "reservations")).active()) == ["c4"]


def test_read_only_state_directory_fails_naming_it_and_can_still_be_read(tmpfs, capsys):
    d = tmpfs("ro")
    audit(d, "event", outcome="migrated", record={"id": "m1", "migration": {"total_s": 40.0}})
    quarantine(d, "present", node="c2", reason="test")
    ReservationStore(os.path.join(d, "reservations")).reserve(["c4"], "someone", ttl=600)
    remount_ro(d)
    lock = "state directory %s: cannot open the lock file .lock: %s" % (d, EROFS)
    res = run_module(pft_watch_decide, {"health": HEALTH, "state_dir": d}, capsys)
    assert res["rc"] == 1 and res["msg"] == lock, res
    res = run_module(pft_quarantine, {"state": "present", "node": "c1", "state_dir": d}, capsys)
    assert res["rc"] == 1 and res["msg"] == lock, res
    res = run_module(pft_audit, {"state": "event", "outcome": "returned", "record": {"node": "c2"}, "state_dir": d},
                     capsys)
    assert res["rc"] == 1 and res["msg"] == lock, res
    res = run_module(spare_reservation, {"state": "present", "hosts": ["c3"], "owner": "o",
                                         "directory": os.path.join(d, "reservations")}, capsys)
    assert res["rc"] == 1, res
    assert res["msg"] == "reservation directory %s/reservations: cannot open the lock file .lock: %s" % (d, EROFS)
    res = run_module(pft_watch_decide, {"health": HEALTH, "state_dir": os.path.join(d, "new")}, capsys)
    assert res["rc"] == 1 and res["msg"] == "state directory %s/new: cannot create %s/new: %s" % (d, d, EROFS), res
    # reading needs no lock: the audit log can still be queried, in check mode too
    res = run_module(pft_audit, {"state": "query", "outcome": "migrated", "state_dir": d}, capsys, check_mode=True)
    assert res["rc"] == 0 and [r["id"] for r in res["records"]] == ["m1"], res


def evacuate_tasks(*names):
    """The tasks of playbooks/evacuate.yml with these names, as they are there."""
    with open(os.path.join(REPO, "playbooks", "evacuate.yml")) as fh:
        plays = yaml.safe_load(fh)
    tasks = {t.get("name"): t for p in plays for t in p.get("tasks", [])}
    return [tasks[n] for n in names]


def test_through_ansible_playbook(full, tmp_path):
    """The faults of the issue through ansible-playbook: a critical node with a corrupt reservation file,
    the same on a full disk, and evacuate.yml's estimate reading an audit log with a torn line."""
    d = full["dir"]
    res_dir = tmp_path / "res"
    res_dir.mkdir()
    (res_dir / "c3.json").write_text('{"host": "c3", "owner": "pft-watch:c2/g2", "crea')
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "audit.jsonl").write_bytes(
        b'{"id":"a","outcome":"migrated","migration":{"total_s":40.0}}\n'
        b'{"id":"b","outcome":"migrated","migr\n'
        b'{"id":"c","outcome":"failed"}\n'
        b'{"id":"d","outcome":"migrated","migration":{"total_s":44.0}}\n')
    estimate = evacuate_tasks("Read earlier migration times from the audit log (for the estimate)", "Show the plan")
    estimate[1] = dict(estimate[1], register="pft_test_plan")
    out = tmp_path / "results.json"
    play = {"name": "faults", "hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable, "node": "localhost", "pft_w": {"state_dir": str(ok)},
                     "pft_placements": {"localhost": ["g1"]}, "pft_evac_targets": {"accepted": ["c3"], "ranking": []},
                     "pft_confirmed": False},
            "tasks": [
                {"name": "placement", "ansible.builtin.set_fact": {
                    "pft_placement": {"domains": [{"name": "g1", "maxmem_mb": 160}]}}},
                {"name": "corrupt reservation", "pft_watch_decide": {
                    "health": HEALTH, "state_dir": str(tmp_path / "state"), "reservation_dir": str(res_dir)},
                 "register": "pft_test_corrupt", "ignore_errors": True},
                {"name": "full disk", "pft_watch_decide": {"health": HEALTH, "state_dir": d},
                 "register": "pft_test_full", "ignore_errors": True},
            ] + estimate + [
                {"name": "results", "ansible.builtin.copy": {"dest": str(out), "mode": "0600", "content": (
                    "{{ {'corrupt': pft_test_corrupt, 'full': pft_test_full, 'history': pft_evac_history, "
                    "'plan': pft_test_plan} | to_json }}")}},
            ]}
    book = tmp_path / "faults.yml"
    book.write_text(yaml.safe_dump([play], sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", str(book)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "MODULE FAILURE" not in output and "Traceback" not in output, output
    results = json.loads(out.read_text())
    corrupt = results["corrupt"]
    assert corrupt["failed"] and corrupt["msg"].startswith("reservation file %s is corrupt (" % (res_dir / "c3.json"))
    assert results["full"]["msg"] == "state directory %s: cannot write watch-state.json: %s" % (d, ENOSPC)
    history = results["history"]
    assert [r["id"] for r in history["records"]] == ["a", "d"] and not history.get("failed")
    torn = "%s/audit.jsonl line 2 is not a whole JSON record (torn write?): skipped" % ok
    assert torn in " ".join(output.split()), output          # shown as a warning of the run
    plan = results["plan"]["msg"]
    assert "expected duration: about 44 s per guest (median of 2 earlier migrations)" in plan, plan
