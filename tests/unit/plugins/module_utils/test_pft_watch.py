# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_watch: the watch's decisions, quarantine, journal and audit (real files, flock)."""
import json
import multiprocessing
import os

import pytest

from ansible.module_utils.pft_watch import (
    StateDir, WatchError, audit, decide, locate_guest, quarantine, reconcile, run_decide,
)


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def health(**verdicts):
    nodes = {}
    for name, v in verdicts.items():
        sensors = {"CPU1 Temp": {"verdict": v if v != "unknown" else "unknown", "value": 92.0 if v == "critical" else 50.0,
                                 "reason": "x", "pending": None}}
        nodes[name] = {"verdict": v, "reason": "CPU1 Temp: %s" % v, "fired": None if v == "ok" else
                       {"sensor": "CPU1 Temp", "value": 92.0}, "sensors": sensors}
    return {"nodes": nodes}


def test_critical_evacuates_warning_prestages_unknown_only_alerts():
    plan, _ = decide(health(c1="critical", c2="warning", c3="unknown", c4="ok"), now=1000.0)
    assert plan["summary"]["evacuate"] == ["c1"]
    assert plan["summary"]["prestage"] == ["c2"]
    assert plan["nodes"]["c3"]["action"] == "alert"
    assert "c3" not in plan["summary"]["evacuate"] + plan["summary"]["prestage"]
    assert plan["nodes"]["c4"]["action"] == "none"
    assert sorted(plan["summary"]["alert"]) == ["c1", "c2", "c3"]
    ev = plan["evacuate"][0]
    assert ev["sensors"]["CPU1 Temp"]["value"] == 92.0 and ev["fired"]["sensor"] == "CPU1 Temp"
    assert ev["history"][-1]["verdict"] == "critical"


def test_unknown_never_evacuates_whatever_the_policy():
    plan, _ = decide(health(c1="unknown"), prestage_on="warning", evacuate_on="warning", now=1.0)
    assert plan["evacuate"] == [] and plan["prestage"] == []


def test_quarantined_nodes_are_left_alone_unless_still_bad():
    plan, _ = decide(health(c1="warning", c2="ok"), quarantined=["c1", "c2"], now=1.0)
    assert plan["evacuate"] == plan["prestage"] == plan["release"] == []
    assert all("quarantined" in plan["nodes"][n]["why"] for n in ("c1", "c2"))


def test_quarantined_node_still_critical_is_evacuated_again():
    # issue 27: a node with two guests is quarantined after the first move; the guest whose move
    # failed must be retried by the next run, not left on a critical node for ever
    plan, _ = decide(health(c1="critical"), quarantined=["c1"], now=1.0)
    assert plan["summary"]["evacuate"] == ["c1"] and plan["evacuate"][0]["quarantined"]
    assert "quarantined" in plan["nodes"]["c1"]["why"]


def test_prestaged_node_is_not_prestaged_twice_and_its_target_is_used_when_critical():
    plan, _ = decide(health(c1="warning"), prestaged={"c1": "c3"}, now=1.0)
    assert plan["prestage"] == [] and "already pre-staged on c3" in plan["nodes"]["c1"]["why"]
    plan, _ = decide(health(c1="critical"), prestaged={"c1": "c3"}, now=2.0)
    assert plan["evacuate"][0]["prestaged_target"] == "c3"


def test_back_to_ok_releases_prestaged_target():
    plan, _ = decide(health(c1="ok"), prestaged={"c1": "c3"}, now=1.0)
    assert plan["release"] == [{"node": "c1", "target": "c3"}]


def sent(plan, st, now):
    """What pft_alert's remember does once a channel delivered each planned alert."""
    for a in plan["alerts"]:
        st["nodes"][a["node"]]["alerted"] = {"verdict": a["verdict"], "t": now}
    return st


def test_alert_on_change_and_realert_after_not_every_run():
    plan, st = decide(health(c1="unknown"), now=1000.0, realert_after=3600)
    assert plan["summary"]["alert"] == ["c1"]
    plan, st = decide(health(c1="unknown"), state=sent(plan, st, 1000.0), now=1060.0, realert_after=3600)
    assert plan["alerts"] == []
    plan, st = decide(health(c1="unknown"), state=st, now=1000.0 + 3600, realert_after=3600)
    assert plan["summary"]["alert"] == ["c1"]
    plan, st = decide(health(c1="ok"), state=sent(plan, st, 4600.0), now=5000.0)
    assert plan["alerts"][0]["severity"] == "info" and "healthy again" in plan["alerts"][0]["subject"]
    plan, st = decide(health(c1="ok"), state=sent(plan, st, 5000.0), now=5060.0)
    assert plan["alerts"] == []


def test_an_alert_is_recorded_as_sent_only_after_it_was_sent(tmp_path):
    # issue 27: decide used to mark the alert sent when it planned it; a run that died before
    # sending it (the critical alert goes out after the move) never sent it at all
    from ansible.module_utils.pft_watch import remember_alert
    d = str(tmp_path)
    plan = run_decide(d, health(c1="critical"))
    assert plan["summary"]["alert"] == ["c1"]
    plan = run_decide(d, health(c1="critical"))           # the first run died: planned again
    assert plan["summary"]["alert"] == ["c1"]
    remember_alert(d, node="c1", verdict="critical")       # this time it went out
    assert run_decide(d, health(c1="critical"))["alerts"] == []


def test_a_lasting_cause_is_alerted_once_per_realert_period(tmp_path):
    from ansible.module_utils.pft_watch import alert_due, remember_alert
    d, clock = str(tmp_path), Clock()
    assert alert_due(d, "no-target:c1/g1", "no-target", 3600, clock=clock)
    remember_alert(d, key="no-target:c1/g1", value="no-target", clock=clock)
    clock.now += 60
    assert not alert_due(d, "no-target:c1/g1", "no-target", 3600, clock=clock)
    assert alert_due(d, "no-target:c1/g1", "other", 3600, clock=clock)
    clock.now += 3600
    assert alert_due(d, "no-target:c1/g1", "no-target", 3600, clock=clock)


def test_a_sensor_lost_since_an_earlier_run_makes_the_node_unknown():
    # issue 27: a node that stops reporting a sensor must not read ok on less evidence
    two = health(c1="ok")
    two["nodes"]["c1"]["sensors"]["FAN1"] = {"verdict": "ok", "value": 3000.0}
    plan, st = decide(two, now=1000.0, policy_id="p1")
    assert plan["nodes"]["c1"]["verdict"] == "ok"
    plan, st = decide(health(c1="ok"), state=st, now=1060.0, policy_id="p1")
    assert plan["nodes"]["c1"]["verdict"] == "unknown" and plan["nodes"]["c1"]["action"] == "alert"
    assert "FAN1" in plan["alerts"][0]["subject"] and plan["evacuate"] == []
    # evidence of trouble still counts: a critical node with a lost sensor is evacuated
    plan, _ = decide(health(c1="critical"), state=st, now=1120.0, policy_id="p1")
    assert plan["summary"]["evacuate"] == ["c1"]
    # new rules watch other sensors: what was reported under the old ones is forgotten
    plan, _ = decide(health(c1="ok"), state=st, now=1180.0, policy_id="p2")
    assert plan["nodes"]["c1"]["verdict"] == "ok"
    # a sensor gone for longer than sensor_forget_after is forgotten (removed on purpose)
    plan, _ = decide(health(c1="ok"), state=st, now=1000.0 + 90000, policy_id="p1", sensor_forget_after=86400)
    assert plan["nodes"]["c1"]["verdict"] == "ok"
    # a node with no data (BMC unreachable) says nothing about its sensors
    plan, st2 = decide({"nodes": {"c1": {"verdict": "unknown", "reason": "BMC unreachable", "sensors": {}}}},
                       state=st, now=1130.0, policy_id="p1")
    assert sorted(st2["nodes"]["c1"]["sensors"]) == ["CPU1 Temp", "FAN1"]


def test_worst_first_and_history_is_bounded():
    st = None
    for i in range(30):
        plan, st = decide(health(b="critical", a="critical"), state=st, now=float(i), history_len=5)
    assert [e["node"] for e in plan["evacuate"]] == ["a", "b"]
    assert len(st["nodes"]["a"]["history"]) == 5


def test_bad_input_names_the_fault():
    with pytest.raises(WatchError, match="ipmi_health_info"):
        decide({"nope": 1})
    with pytest.raises(WatchError, match="node c1: unknown verdict"):
        decide({"nodes": {"c1": {"verdict": "hot"}}})
    with pytest.raises(WatchError, match="prestage_on"):
        decide(health(c1="ok"), prestage_on="critical", evacuate_on="warning")


def test_run_decide_persists_history_but_not_in_check_mode(tmp_path):
    d = str(tmp_path / "state")
    run_decide(d, health(c1="warning"), dry_run=True, clock=Clock())
    assert not os.path.exists(d)
    run_decide(d, health(c1="warning"), clock=Clock())
    data = json.load(open(os.path.join(d, "watch-state.json")))
    assert data["nodes"]["c1"]["history"][0]["verdict"] == "warning"
    # quarantined nodes default to the quarantine file
    quarantine(d, "present", node="c1", clock=Clock())
    plan = run_decide(d, health(c1="warning"), clock=Clock())
    assert plan["prestage"] == [] and "quarantined" in plan["nodes"]["c1"]["why"]


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
    from ansible.module_utils import pft_watch
    # a process named ansible-playbook whose child asks for its controller
    fake = tmp_path / "ansible-playbook"
    fake.write_text("#!%s\nimport subprocess, sys\nsys.exit(subprocess.call(sys.argv[1:]))\n" % sys.executable)
    fake.chmod(0o755)
    from pft_paths import MODULE_UTILS
    probe = ("import sys, json; sys.path.insert(0, %r); import pft_watch as w; "
             "print(json.dumps(w.controller_identity()))" % (MODULE_UTILS,))
    out = subprocess.run([str(fake), sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    ident = json.loads(out.stdout)
    assert ident and ident["pid"] != os.getpid()
    assert not pft_watch.process_alive(ident)          # that process has exited
    assert pft_watch.process_alive({"pid": os.getpid(), "start": pft_watch._proc_stat(os.getpid())[1]})


def test_prestaged_targets_come_from_pft_reservations(tmp_path):
    from ansible.module_utils.pft_reservation import ReservationStore
    from ansible.module_utils.pft_watch import owner_for, prestaged_targets
    rd = str(tmp_path / "res")
    store = ReservationStore(rd)
    store.reserve(["c3"], owner_for("c1", "g1"), ttl=60, purpose="watch-prestage")
    store.reserve(["c4"], "someone-else", ttl=60)
    # issue 27: an evacuation in progress or an operator's evacuation is not a pre-stage
    store.reserve(["c5"], owner_for("c2", "g2"), ttl=60, purpose="watch-evacuate")
    store.reserve(["c6"], owner_for("c7", "g7", by="operator"), ttl=60, purpose="operator-evacuate")
    assert prestaged_targets(rd) == {"c1": "c3"}
    plan = run_decide(str(tmp_path / "state"), health(c1="warning"), reservation_dir=rd)
    assert plan["prestage"] == [] and plan["prestaged"] == {"c1": "c3"}
    plan = run_decide(str(tmp_path / "state"), health(c1="ok"), reservation_dir=rd)
    assert plan["release"] == [{"node": "c1", "target": "c3", "owners": ["pft-watch:c1/g1"]}]
    plan = run_decide(str(tmp_path / "state"), health(c2="ok", c7="ok"), reservation_dir=rd)
    assert plan["release"] == []


def test_a_prestage_becomes_the_evacuation_with_its_own_purpose(tmp_path):
    from ansible.module_utils.pft_reservation import ReservationStore
    from ansible.module_utils.pft_watch import owner_for
    store, clock = None, Clock()
    store = ReservationStore(str(tmp_path), clock=clock)
    owner = owner_for("c1", "g1")
    first = store.reserve(["c3", "c4"], owner, ttl=60, purpose="watch-prestage")
    clock.now += 30
    again = store.reserve(["c3", "c4"], owner, ttl=600, purpose="watch-evacuate")
    assert again["host"] == first["host"] == "c3" and again["changed"]
    assert store.active()["c3"].purpose == "watch-evacuate" and store.active()["c3"].expires == clock.now + 600
    # the operator's evacuation of the same guest is another owner: it never gets the watch's spare
    assert store.reserve(["c3", "c4"], owner_for("c1", "g1", by="operator"), ttl=60)["host"] == "c4"


def test_pending_tells_an_evacuation_still_running_from_an_interrupted_one(tmp_path):
    # an operator's evacuate.yml in progress must not make the watch list every dom0 and wait for
    # the controller lock it holds (found on the testbed: the watch failed after 60 s)
    import subprocess
    import sys
    from ansible.module_utils import pft_watch
    d = str(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ids = []
    for node, ctl in (("c1", {"pid": os.getpid(), "start": pft_watch._proc_stat(os.getpid())[1]}),
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
