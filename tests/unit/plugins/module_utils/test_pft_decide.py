# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_decide: the watch's decisions, alone and with the state directory and reservations."""
import json
import os

import pytest
from ansible.module_utils.pft_decide import decide, run_decide
from ansible.module_utils.pft_state import WatchError, quarantine


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def health(**verdicts):
    nodes = {}
    for name, v in verdicts.items():
        sensors = {"CPU1 Temp": {"verdict": v if v != "unknown" else "unknown",
                                 "value": 92.0 if v == "critical" else 50.0, "reason": "x", "pending": None}}
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
    from ansible.module_utils.pft_state import remember_alert
    d = str(tmp_path)
    plan = run_decide(d, health(c1="critical"))
    assert plan["summary"]["alert"] == ["c1"]
    plan = run_decide(d, health(c1="critical"))           # the first run died: planned again
    assert plan["summary"]["alert"] == ["c1"]
    remember_alert(d, node="c1", verdict="critical")       # this time it went out
    assert run_decide(d, health(c1="critical"))["alerts"] == []


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


def test_prestaged_targets_come_from_pft_reservations(tmp_path):
    from ansible.module_utils.pft_decide import owner_for, prestaged_targets
    from ansible.module_utils.pft_reservation import ReservationStore
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


def test_handled_names_the_prestaged_and_the_quarantined_nodes(tmp_path):
    from ansible.module_utils.pft_decide import handled, owner_for
    from ansible.module_utils.pft_reservation import ReservationStore
    rd, d = str(tmp_path / "res"), str(tmp_path / "state")
    assert handled(d, rd) == {}                                   # nothing yet, nothing made
    assert not os.path.exists(d)
    ReservationStore(rd).reserve(["c3"], owner_for("c1", "g1"), ttl=60, purpose="watch-prestage")
    ReservationStore(rd).reserve(["c4"], owner_for("c2", "g2"), ttl=60, purpose="watch-prestage")
    quarantine(d, "present", node="c2", clock=Clock())
    assert handled(d, rd) == {"c1": "warning", "c2": "critical"}   # quarantined wins


def test_a_prestage_becomes_the_evacuation_with_its_own_purpose(tmp_path):
    from ansible.module_utils.pft_decide import owner_for
    from ansible.module_utils.pft_reservation import ReservationStore
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


# -- prediction ----------------------------------------------------------------------------------------------
def predicted(h, node, ttf, sensor="CPU1 Temp"):
    h["nodes"][node]["prediction"] = {"time_to_failure_s": ttf, "rate_per_s": 0.5, "confidence": 0.99,
                                      "failure_line": 95.0, "sensor": sensor, "samples": [[0, 70], [20, 80]]}
    return h


def test_a_node_predicted_to_fail_before_it_could_be_emptied_is_evacuated_while_still_ok():
    h = predicted(predicted(health(c1="ok", c2="ok", c3="ok"), "c1", 50.0), "c2", 500.0)
    plan, _ = decide(h, now=1000.0, predict={"evacuation_s": 40, "margin": 2})
    assert plan["summary"]["evacuate"] == ["c1"]
    item = plan["evacuate"][0]
    assert item["verdict"] == "ok" and item["reason"].startswith("predicted: predicted failure in 50 s")
    assert item["prediction"]["expected_evacuation_s"] == 40 and item["prediction"]["samples"]
    assert plan["nodes"]["c1"]["action"] == "evacuate" and plan["nodes"]["c2"]["action"] == "none"


def test_without_predict_settings_a_prediction_changes_nothing():
    plan, _ = decide(predicted(health(c1="ok"), "c1", 5.0), now=1000.0)
    assert plan["summary"]["evacuate"] == []


def test_an_unknown_node_is_never_evacuated_on_a_prediction():
    plan, _ = decide(predicted(health(c1="unknown"), "c1", 5.0), now=1000.0, predict={"evacuation_s": 40})
    assert plan["summary"]["evacuate"] == [] and plan["nodes"]["c1"]["action"] == "alert"


def test_threshold_evacuations_come_first_then_the_soonest_predicted_failure():
    h = health(a="ok", b="ok", z="critical")
    predicted(h, "a", 70.0)
    predicted(h, "b", 20.0)
    plan, _ = decide(h, now=1000.0, predict={"evacuation_s": 40, "margin": 2})
    assert [i["node"] for i in plan["evacuate"]] == ["z", "b", "a"]


def test_each_node_is_judged_by_its_own_expected_evacuation():
    """c1 runs a big guest (120 s to empty), c2 a small one (30 s): the same time to failure, 100 s,
    evacuates c1 (100 < 2 x 120) and not yet c2 (100 > 2 x 30)."""
    h = predicted(predicted(health(c1="ok", c2="ok"), "c1", 100.0), "c2", 100.0)
    plan, _ = decide(h, now=1000.0, predict={"evacuation_s": 60, "margin": 2, "nodes": {"c1": 120, "c2": 30},
                                             "slots": 2})
    assert plan["summary"]["evacuate"] == ["c1"]
    assert plan["nodes"]["c2"]["action"] != "evacuate"
    item = plan["evacuate"][0]
    assert item["prediction"]["own_evacuation_s"] == 120 and item["prediction"]["slot_wait_s"] == 0


def test_a_node_waiting_for_a_migration_slot_counts_its_turn():
    """One slot: c1 is past its threshold and goes first (50 s); c2, predicted in 70 s with its own
    30 s, waits 50 s for the slot: 2 x 80 > 70, so it is evacuated now, in line. With two slots it
    would not wait, and 70 > 2 x 30 leaves it for a later run."""
    h = predicted(health(c1="critical", c2="ok"), "c2", 70.0)
    one, _ = decide(h, now=1000.0, predict={"evacuation_s": 60, "nodes": {"c1": 50, "c2": 30}, "slots": 1})
    assert one["summary"]["evacuate"] == ["c1", "c2"]
    pred = [i for i in one["evacuate"] if i["node"] == "c2"][0]["prediction"]
    assert pred["slot_wait_s"] == 50 and pred["expected_evacuation_s"] == 80
    two, _ = decide(h, now=1000.0, predict={"evacuation_s": 60, "nodes": {"c1": 50, "c2": 30}, "slots": 2})
    assert two["summary"]["evacuate"] == ["c1"]


def test_predict_settings_are_checked():
    with pytest.raises(WatchError, match="evacuation_s"):
        decide(health(c1="ok"), now=1000.0, predict={"margin": 2})
    with pytest.raises(WatchError, match="positive"):
        decide(health(c1="ok"), now=1000.0, predict={"evacuation_s": 0})
    with pytest.raises(WatchError, match="positive"):
        decide(health(c1="ok"), now=1000.0, predict={"evacuation_s": 60, "slots": 0})
    with pytest.raises(WatchError, match="nodes"):
        decide(health(c1="ok"), now=1000.0, predict={"evacuation_s": 60, "nodes": {"c1": "soon"}})


def test_a_predicted_node_takes_the_evacuation_path_of_a_bad_one():
    """Quarantined or pre-staged, a node predicted to fail is evacuated as a node past its threshold is."""
    h = predicted(health(c1="ok", c2="ok"), "c1", 30.0)
    predicted(h, "c2", 30.0)
    plan, _ = decide(h, quarantined=["c1"], prestaged={"c2": "spare1"}, now=1000.0,
                     predict={"evacuation_s": 40, "margin": 2})
    by = {i["node"]: i for i in plan["evacuate"]}
    assert by["c1"]["quarantined"] and "(quarantined: any guest still on it is moved)" in plan["nodes"]["c1"]["why"]
    assert by["c2"]["prestaged_target"] == "spare1" and plan["nodes"]["c2"]["why"].startswith("predicted: ")
