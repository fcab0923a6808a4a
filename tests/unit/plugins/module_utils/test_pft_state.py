# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_state: the watch's memory: quarantine, journal, audit, reconciliation (real files, flock)."""
import json
import multiprocessing
import os

import pytest
from ansible.module_utils.pft_state import StateDir, WatchError, audit, locate_guest, quarantine, reconcile


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_a_lasting_cause_is_alerted_once_per_realert_period(tmp_path):
    from ansible.module_utils.pft_state import alert_due, remember_alert
    d, clock = str(tmp_path), Clock()
    assert alert_due(d, "no-target:c1/g1", "no-target", 3600, clock=clock)
    remember_alert(d, key="no-target:c1/g1", value="no-target", clock=clock)
    clock.now += 60
    assert not alert_due(d, "no-target:c1/g1", "no-target", 3600, clock=clock)
    assert alert_due(d, "no-target:c1/g1", "other", 3600, clock=clock)
    clock.now += 3600
    assert alert_due(d, "no-target:c1/g1", "no-target", 3600, clock=clock)


def test_quarantine_and_anti_flap(tmp_path):
    d = str(tmp_path)
    clock = Clock()
    out = quarantine(d, "present", node="c1", reason="hot", record="r1", clock=clock)
    assert out["changed"] and "c1" in out["quarantined"]
    out = quarantine(d, "absent", node="c1", flap_limit=2, clock=clock)
    assert out["changed"] and out["quarantined"] == {}
    quarantine(d, "present", node="c1", record="r2", clock=clock)
    out = quarantine(d, "absent", node="c1", flap_limit=2, clock=clock)
    assert out["held"] and not out["changed"] and "anti-flap" in out["msg"] and "c1" in out["quarantined"]
    clock.now += 2 * 86400            # the evacuations age out of the window
    out = quarantine(d, "absent", node="c1", flap_limit=2, clock=clock)
    assert out["changed"] and not out["held"]


def test_quarantine_force_and_check_mode(tmp_path):
    d = str(tmp_path)
    for r in ("r1", "r2", "r3"):
        quarantine(d, "present", node="c1", record=r)
    out = quarantine(d, "absent", node="c1", dry_run=True, force=True)
    assert out["changed"]
    assert "c1" in quarantine(d, "query")["quarantined"]        # nothing written
    assert quarantine(d, "absent", node="c1", force=True)["changed"]
    with pytest.raises(WatchError, match="node name"):
        quarantine(d, "present", node="../etc")


def test_journal_then_audit_record(tmp_path):
    d = str(tmp_path)
    clock = Clock()
    started = audit(d, "started", record={"node": "c1", "guest": "g1", "target": "c3"}, clock=clock)
    rid = started["id"]
    assert os.path.exists(os.path.join(d, "journal", rid + ".json"))
    assert audit(d, "pending")["pending"][0]["guest"] == "g1"
    again = audit(d, "started", record={"node": "c1"}, record_id=rid, clock=clock)
    assert again["changed"] is False
    clock.now += 42.5
    done = audit(d, "completed", record_id=rid, outcome="migrated", record={"migration": {"total_s": 40}},
                 clock=clock)
    assert done["record"]["duration_s"] == 42.5
    lines = open(os.path.join(d, "audit.jsonl")).read().splitlines()
    rec = json.loads(lines[0])
    assert rec["node"] == "c1" and rec["target"] == "c3" and rec["outcome"] == "migrated"
    assert rec["migration"]["total_s"] == 40 and rec["status"] == "completed"
    assert audit(d, "pending")["pending"] == []
    assert audit(d, "completed", record_id=rid, outcome="migrated")["changed"] is False


def test_audit_check_mode_writes_nothing(tmp_path):
    d = str(tmp_path / "s")
    out = audit(d, "started", record={"node": "c1", "guest": "g"}, dry_run=True)
    assert out["changed"] and not os.path.exists(d)
    out = audit(d, "event", record={"node": "c1"}, dry_run=True)
    assert not os.path.exists(d)


def test_audit_lines_are_whole_under_concurrency(tmp_path):
    d = str(tmp_path)

    def writer(n):
        for i in range(50):
            audit(d, "event", record={"writer": n, "i": i, "pad": "x" * 3000})
    procs = [multiprocessing.Process(target=writer, args=(n,)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = open(os.path.join(d, "audit.jsonl")).read().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["pad"] for line in lines)


def test_locate_guest_states():
    assert locate_guest("g", {"a": ["g"], "b": []})["state"] == "once"
    assert locate_guest("g", {"a": ["g"], "b": ["g"]})["state"] == "twice_or_more"
    assert locate_guest("g", {"a": [], "b": []})["state"] == "none"
    assert locate_guest("g", {"a": [], "b": None})["state"] == "uncertain"
    loc = locate_guest("g", {"a": ["g--migratedaway"], "b": ["g"]}, migrating={"a": [], "b": []})
    assert loc["state"] == "once" and loc["leftovers"] == [{"node": "a", "domain": "g--migratedaway"}]


def test_a_migration_still_running_is_in_flight_not_done():
    # issue 27: the target's --incoming copy is not a leftover while xl migrate still runs
    loc = locate_guest("g", {"a": ["g"], "b": ["g--incoming"]}, migrating={"a": ["g"], "b": []})
    assert loc["state"] == "in_flight" and "a" in loc["why"]
    loc = locate_guest("g", {"a": ["g"], "b": []}, migrating={"a": ["g"], "b": []})   # before the receiver
    assert loc["state"] == "in_flight"
    # no word on running migrations (older dom0s): a hand-over name alone means in flight
    assert locate_guest("g", {"a": ["g"], "b": ["g--incoming"]})["state"] == "in_flight"


def test_reconcile_keeps_a_move_in_flight_then_completes_it(tmp_path):
    d = str(tmp_path)
    rid = audit(d, "started", record={"node": "c1", "guest": "g1", "target": "c3",
                                      "owner": "pft-watch:c1/g1"})["id"]
    out = reconcile(d, {"c1": ["g1"], "c3": ["g1--incoming"]}, migrating={"c1": ["g1"], "c3": []},
                    alive=lambda ctl: False, stale_after=0)
    assert out["reconciled"] == [] and out["alerts"] == [] and [i["id"] for i in out["in_flight"]] == [rid]
    assert [p["id"] for p in audit(d, "pending")["pending"]] == [rid]
    out = reconcile(d, {"c1": [], "c3": ["g1"]}, migrating={"c1": [], "c3": []}, alive=lambda ctl: False,
                    stale_after=0)
    assert out["reconciled"][0]["location"] == "target" and out["reconciled"][0]["owner"] == "pft-watch:c1/g1"
    assert audit(d, "pending")["pending"] == []


def test_reconcile_completes_once_and_keeps_doubtful_entries(tmp_path):
    d = str(tmp_path)
    r1 = audit(d, "started", record={"node": "c1", "guest": "g1", "target": "c3", "owner": "pft-c1"})["id"]
    r2 = audit(d, "started", record={"node": "c2", "guest": "g2", "target": "c4", "owner": "pft-c2"})["id"]
    out = reconcile(d, {"c1": [], "c2": [], "c3": ["g1"], "c4": None}, alive=lambda ctl: False,
                    stale_after=0)
    by_id = {i["id"]: i for i in out["reconciled"]}
    assert by_id[r1]["location"] == "target" and by_id[r1]["owner"] == "pft-c1" and not by_id[r1]["alert"]
    assert by_id[r2]["state"] == "uncertain" and by_id[r2]["alert"]
    assert [p["id"] for p in audit(d, "pending")["pending"]] == [r2]
    rec = json.loads(open(os.path.join(d, "audit.jsonl")).read())
    assert rec["outcome"] == "reconciled" and rec["location"] == "target"


def test_corrupt_state_file_is_named(tmp_path):
    d = str(tmp_path)
    StateDir(d).ensure()
    open(os.path.join(d, "quarantine.json"), "w").write("{oops")
    with pytest.raises(WatchError, match="quarantine.json"):
        quarantine(d, "query")


def test_relative_state_dir_refused():
    with pytest.raises(WatchError, match="absolute"):
        audit("var/lib/pft", "event", record={})


def test_reconcile_leaves_running_evacuations_alone(tmp_path):
    d = str(tmp_path)
    rid = audit(d, "started", record={"node": "c1", "guest": "g1", "target": "c3"})["id"]
    out = reconcile(d, {"c1": [], "c3": ["g1"]}, alive=lambda ctl: True)      # no controller known: recent
    assert out["reconciled"] == [] and out["in_progress"][0]["id"] == rid
    jpath = os.path.join(d, "journal", rid + ".json")
    entry = json.load(open(jpath))
    entry["controller"] = {"pid": 1, "start": 0}
    json.dump(entry, open(jpath, "w"))
    out = reconcile(d, {"c1": [], "c3": ["g1"]}, alive=lambda ctl: True, stale_after=0)
    assert out["reconciled"] == [] and out["in_progress"][0]["id"] == rid
    assert [p["id"] for p in audit(d, "pending")["pending"]] == [rid]


def test_controller_identity_is_the_topmost_ansible_process(tmp_path):
    import subprocess
    import sys

    from ansible.module_utils import pft_state
    # a process named ansible-playbook whose child asks for its controller
    fake = tmp_path / "ansible-playbook"
    fake.write_text("#!%s\nimport subprocess, sys\nsys.exit(subprocess.call(sys.argv[1:]))\n" % sys.executable)
    fake.chmod(0o755)
    from pft_paths import MODULE_UTILS
    probe = ("import json; import ansible.module_utils as mu; mu.__path__.append(%r); "
             "from ansible.module_utils import pft_state as w; "
             "print(json.dumps(w.controller_identity()))" % (MODULE_UTILS,))
    out = subprocess.run([str(fake), sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    ident = json.loads(out.stdout)
    assert ident and ident["pid"] != os.getpid()
    assert not pft_state.process_alive(ident)          # that process has exited
    assert pft_state.process_alive({"pid": os.getpid(), "start": pft_state._proc_stat(os.getpid())[1]})


def test_pending_tells_an_evacuation_still_running_from_an_interrupted_one(tmp_path):
    # an operator's evacuate.yml in progress must not make the watch list every dom0 and wait for
    # the controller lock it holds (found on the testbed: the watch failed after 60 s)
    import subprocess
    import sys

    from ansible.module_utils import pft_state
    d = str(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ids = []
    for node, ctl in (("c1", {"pid": os.getpid(), "start": pft_state._proc_stat(os.getpid())[1]}),
                      ("c2", {"pid": gone.pid, "start": 1})):
        rid = audit(d, "started", record={"node": node, "guest": "g"})["id"]
        path = os.path.join(d, "journal", rid + ".json")
        entry = json.load(open(path))
        with open(path, "w") as fh:
            json.dump(dict(entry, controller=ctl), fh)
        ids.append(rid)
    r1, r2 = ids
    out = audit(d, "pending")
    assert {e["id"]: e["in_progress"] for e in out["pending"]} == {r1: True, r2: False}
    assert [e["id"] for e in out["interrupted"]] == [r2]
