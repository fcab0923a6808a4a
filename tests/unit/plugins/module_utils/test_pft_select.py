# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_select: the watch's step 3 (placement, ranking, reservation, journal) in one pass.

The Ganglia XML comes from the generator of test_pft_ganglia (gmond 3.7.2's layout, checked against
real gmond there); reservations, quarantine and journal are the real files in a temporary directory.
The same path runs for real in tests/integration/test_watch_controller.py and on the testbed
(tests/e2e/test_watch.py).
"""
import json
import os

import pytest
from ansible.module_utils.pft_ganglia import GangliaUnreachable, parse_xml
from ansible.module_utils.pft_select import select_work
from ansible.module_utils.pft_state import WatchError, quarantine
from test_pft_ganglia import ganglia_xml, host_xml, metric_xml

NODES = ["compute1", "compute2", "compute3", "compute4"]


def placed(names, memory):
    return (metric_xml("pft_guest_names", names, 0, mtype="string")
            + metric_xml("pft_guest_maxmem_mb", memory, 0, mtype="string"))


def cluster(free=("compute3", "compute4"), load=None):
    """compute1 and compute2 run one guest each; the nodes in ``free`` run none."""
    hosts = []
    for i, n in enumerate(NODES):
        ip = "10.0.0.%d" % (11 + i)
        if n in free:
            hosts.append(host_xml(n, ip, guests=0, free=900, load=(load or {}).get(n, 0.1), extra=placed("", "")))
        else:
            g = "guest%d" % (i + 1)
            hosts.append(host_xml(n, ip, guests=1, free=700, extra=placed(g, "%s=160" % g)))
    data = ganglia_xml(*hosts)

    def read(endpoints, metrics=None, **kw):
        return parse_xml(data, metrics=metrics), endpoints[0], []
    return read


def cause(node, verdict="critical", **kw):
    return dict(node=node, verdict=verdict, reason="CPU1 Temp 92 >= 85", fired=None,
                sensors={"CPU1 Temp": 92}, history=[{"verdict": verdict}], **kw)


def work(*nodes, action="evacuate"):
    return [dict(node=n, action=action, cause=cause(n)) for n in nodes]


def files(path):
    return sorted(f for f in os.listdir(path) if not f.startswith(".")) if os.path.isdir(path) else []


def audit_lines(state):
    path = os.path.join(state, "audit.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def test_one_pass_places_ranks_reserves_and_journals(tmp_path):
    state = str(tmp_path)
    out = select_work(work("compute1"), NODES, state, endpoints=["head:8649"],
                      read=cluster(load={"compute3": 0.9, "compute4": 0.2}))
    assert out["changed"] and out["sources"] == ["compute1"] and not out["no_target"]
    (item,) = out["selected"]
    assert (item["guest"], item["target"], item["owner"]) == ("guest1", "compute4", "pft-watch:compute1/guest1")
    assert [r["host"] for r in item["ranking"] if r["accepted"]] == ["compute4", "compute3"]
    assert files(os.path.join(state, "reservations")) == ["compute4.json"]
    entry = json.load(open(os.path.join(state, "journal", item["record_id"] + ".json")))
    assert entry["status"] == "in-progress" and entry["target"] == "compute4" and entry["node"] == "compute1"
    assert entry["sensors"] == {"CPU1 Temp": 92} and entry["verdict_history"] and entry["ranking"]
    assert out["placements"] == {"compute1": ["guest1"]}


def test_two_nodes_one_spare_the_second_gets_a_recorded_no_target(tmp_path):
    state = str(tmp_path)
    out = select_work(work("compute1", "compute2"), NODES, state, endpoints=["e"], read=cluster(free=("compute3",)))
    assert [(i["guest"], i["target"]) for i in out["selected"]] == [("guest1", "compute3")]
    (miss,) = out["no_target"]
    assert miss["guest"] == "guest2" and "compute3" in json.dumps(miss["ranking"])
    (line,) = audit_lines(state)
    assert line["outcome"] == "no-target" and line["guest"] == "guest2" and line["msg"] == miss["msg"]


def test_two_nodes_two_spares_distinct_targets_in_check_mode_nothing_written(tmp_path):
    state = str(tmp_path / "state")
    out = select_work(work("compute1", "compute2"), NODES, state, endpoints=["e"], read=cluster(), dry_run=True)
    targets = [i["target"] for i in out["selected"]]
    assert sorted(targets) == ["compute3", "compute4"] and all(i["record_id"] for i in out["selected"])
    assert not os.path.exists(state)


def test_prestaged_target_first_when_still_acceptable(tmp_path):
    w = work("compute1")
    w[0]["cause"]["prestaged_target"] = "compute3"
    out = select_work(w, NODES, str(tmp_path), endpoints=["e"],
                      read=cluster(load={"compute3": 0.9, "compute4": 0.1}))
    assert out["selected"][0]["target"] == "compute3"


def test_quarantined_node_is_never_a_target(tmp_path):
    state = str(tmp_path)
    quarantine(state, "present", node="compute4", reason="test")
    out = select_work(work("compute1"), NODES, state, endpoints=["e"], read=cluster())
    assert out["selected"][0]["target"] == "compute3" and out["quarantined"] == ["compute4"]


def test_ganglia_unreachable_lists_nothing_guesses_nothing(tmp_path):
    def down(endpoints, **kw):
        raise GangliaUnreachable("Ganglia unreachable, tried 1 endpoint(s): e: connection refused")
    state = str(tmp_path / "state")
    out = select_work(work("compute1"), NODES, state, endpoints=["e"], read=down)
    assert out["selected"] == [] and "connection refused" in out["unlisted"]["compute1"]
    assert not out["changed"] and not os.path.exists(os.path.join(state, "journal"))


def test_live_placements_win_and_transient_names_are_skipped(tmp_path):
    placements = {"compute1": ["guest1", "guest9--incoming"], "compute2": None}
    out = select_work(work("compute1", "compute2"), NODES, str(tmp_path), endpoints=["e"], read=cluster(),
                      placements=placements, guest_memory={"compute1": {"guest1": 160}},
                      placement_unknown={"compute2": "xl list timed out"})
    assert [i["guest"] for i in out["selected"]] == ["guest1"]
    assert out["unlisted"] == {"compute2": "xl list timed out"}


def test_ganglia_down_with_live_placements_is_no_target_not_a_crash(tmp_path):
    def down(endpoints, **kw):
        raise GangliaUnreachable("Ganglia unreachable")
    out = select_work(work("compute1"), NODES, str(tmp_path), endpoints=["e"], read=down,
                      placements={"compute1": ["guest1"]}, guest_memory={"compute1": {"guest1": 160}})
    assert out["selected"] == [] and "Ganglia unreachable" in out["no_target"][0]["msg"]


@pytest.mark.parametrize("bad", [[{"node": "compute1", "action": "reboot"}], [{"action": "evacuate"}], ["x"]])
def test_bad_work_is_refused_by_name(tmp_path, bad):
    with pytest.raises(WatchError, match=r"work\[0\]"):
        select_work(bad, NODES, str(tmp_path), endpoints=["e"], read=cluster())
