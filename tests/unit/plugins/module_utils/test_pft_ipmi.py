# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the health logic in pft_ipmi: target checks, sampling
and error handling, with fake node readers.

The same paths run against real ipmi_sim BMCs in
tests/integration/test_ipmi_health.py; fakes here only feed decision logic.
"""
import re
import threading

import pytest
from ansible.module_utils import pft_ipmi as H
from ansible.module_utils import pft_ipmi_nodes as N
from ansible.module_utils import pft_ipmi_policy as P

TEMP = {"name": "CPU* Temp", "upper_warning": 75, "upper_critical": 85}
FAN = {"type": "Fan", "lower_warning": 900, "lower_critical": 600}


def reading(value, states=(), health=0, unavailable=False):
    return {"value": value, "states": list(states), "bmc_health": health, "unavailable": unavailable}


# -- targets ---------------------------------------------------------------------

@pytest.mark.parametrize("targets, message", [
    ([], "targets is empty"),
    ([{"address": "10.0.0.1"}], r"targets\[0\] has no name"),
    (["n1"], r"targets\[0\] must be a dict"),
    ([{"name": "n1", "interface": "local"}, {"name": "n1", "interface": "local"}], "n1 is listed twice"),
])
def test_unusable_target_lists_fail(targets, message):
    with pytest.raises(P.HealthError, match=message):
        H.validate_targets(targets)


GOOD = {"name": "n0", "address": "192.0.2.99", "username": "u", "password": "secret"}


@pytest.mark.parametrize("entry, message", [
    ({"name": "n1", "username": "u", "password": "secret"}, "inventory: bmc_address is not set for n1"),
    ({"name": "n1", "address": None, "username": "u", "password": "secret"}, "bmc_address is not set for n1"),
    ({"name": "n1", "address": "  ", "username": "u", "password": "secret"}, "bmc_address is not set for n1"),
    ({"name": "n1", "address": "a", "password": "secret"}, "inventory: bmc_username is not set for n1"),
    ({"name": "n1", "address": "a", "username": "u"}, "inventory: bmc_password is not set for n1"),
    ({"name": "n1", "address": "a", "username": "u", "password": "secret", "port": 70000},
     r"bmc_port 70000 of n1 is out of range"),
    ({"name": "n1", "address": "a", "username": "u", "password": "secret", "port": "62x3"},
     r"bmc_port of n1 must be an integer, got '62x3'"),
    ({"name": "n1", "address": "a", "username": "u", "password": "secret", "port": True},
     r"bmc_port of n1 must be an integer"),
    ({"name": "n1", "interface": "serial"}, "target n1: interface must be lan or local"),
])
def test_bad_target_is_marked_with_its_name_not_fatal(entry, message):
    """Fault 4: one host's bad BMC settings do not fail the run for everyone."""
    out = H.validate_targets([GOOD, entry])
    assert not out[0].get("invalid")
    assert out[1]["name"] == "n1"
    assert out[1]["invalid"] and re.search(message, out[1]["invalid"])
    assert "secret" not in out[1]["invalid"]


def test_target_port_is_normalised():
    out = H.validate_targets([dict(GOOD, port="624"), dict(GOOD, name="n1", address="192.0.2.98", port=None)])
    assert [t["port"] for t in out] == [624, 623]


def test_local_target_needs_no_credentials():
    assert H.validate_targets([{"name": "n1", "interface": "local"}])[0]["interface"] == "local"


def test_duplicate_bmc_is_refused_naming_both_hosts():
    """Fault 3: two hosts with one BMC address and port are both refused; a third is not."""
    out = H.validate_targets([
        dict(GOOD, name="compute1", address="10.0.0.5"),
        dict(GOOD, name="compute2", address="10.0.0.6"),
        dict(GOOD, name="compute3", address=" 10.0.0.5", port="623"),
        dict(GOOD, name="compute4", address="10.0.0.5", port=624),   # another port: another BMC
    ])
    by = {t["name"]: t for t in out}
    reason = "inventory: compute1 and compute3 have the same BMC 10.0.0.5:623; neither is sampled"
    assert by["compute1"]["invalid"].startswith(reason)
    assert by["compute3"]["invalid"] == by["compute1"]["invalid"]
    assert not by["compute2"].get("invalid") and not by["compute4"].get("invalid")


def test_duplicate_bmc_spelled_differently_and_three_hosts():
    out = H.validate_targets([
        dict(GOOD, name="a", address="BMC-1.example."), dict(GOOD, name="b", address="bmc-1.example"),
        dict(GOOD, name="c", address="2001:db8::1"), dict(GOOD, name="d", address="2001:DB8:0::1"),
        dict(GOOD, name="e", address="2001:db8::1"),
    ])
    by = {t["name"]: t["invalid"] for t in out}
    assert "a and b have the same BMC" in by["a"] == by["b"]
    assert "c, d and e have the same BMC 2001:db8::1:623; none of them is sampled" in by["e"]


def test_two_in_band_targets_are_refused():
    out = H.validate_targets([{"name": "a", "interface": "local"}, {"name": "b", "interface": "local"}, GOOD])
    assert [t.get("invalid", "").startswith("inventory: a and b all read the in-band BMC") for t in out] == [
        True, True, False]


# -- sampling with fake readers ------------------------------------------------

class FakeNode:
    """A synchronous node reader that plays a script of readings per sample."""

    can_async = False

    def __init__(self, target, script, block=None):
        self.name = target["name"]
        self.script = script
        self.sample = 0
        self.block = block
        self.connected = False
        self.names = []

    def connect(self):
        self.connected = True
        return [{"name": "CPU1 Temp", "type": "Temperature"}, {"name": "FAN1", "type": "Fan"}]

    def select(self, names):
        self.names = names

    def read_sync(self):
        step = self.script[min(self.sample, len(self.script) - 1)]
        self.sample += 1
        if self.block is not None:
            self.block.wait()
        if isinstance(step, Exception):
            raise step
        return {n: reading(step.get(n, 45 if "Temp" in n else 6000)) for n in self.names}


def targets(*names):
    return [{"name": n, "address": "192.0.2.%d" % (i + 1), "username": "u", "password": "secret"}
            for i, n in enumerate(names)]


def run(scripts, policy=None, **kw):
    policy = policy or P.Policy([TEMP, FAN])
    nodes = {}

    def factory(t):
        nodes[t["name"]] = FakeNode(t, scripts[t["name"]])
        return nodes[t["name"]]
    kw.setdefault("interval", 0)
    return H.run_health(targets(*scripts), policy, node_factory=factory, pump=lambda t: None, **kw)


def test_verdicts_per_node_and_summary():
    res = run({"a": [{}], "b": [{"CPU1 Temp": 80}], "c": [{"FAN1": 500}]})
    assert res["summary"] == {"ok": ["a"], "warning": ["b"], "critical": ["c"], "unknown": []}
    assert res["nodes"]["c"]["fired"] == {"sensor": "FAN1", "rule": "type=Fan", "value": 500}
    assert res["nodes"]["c"]["reason"] == "FAN1: 500 <= lower_critical 600"


def test_unreachable_node_is_unknown_never_critical():
    res = run({"a": [N.NodeUnavailable("BMC unreachable: timeout")]}, samples=3, hysteresis=1)
    node = res["nodes"]["a"]
    assert node["verdict"] == "unknown"
    assert node["reason"] == "BMC unreachable: timeout"


def test_auth_failure_is_not_retried():
    res = run({"a": [N.NodeUnavailable("authentication failed: Incorrect password", permanent=True), {}]},
              samples=3)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"].startswith("authentication failed")


def test_stop_on_returns_after_hysteresis():
    res = run({"a": [{}, {"CPU1 Temp": 90}]}, samples=50, hysteresis=2, stop_on="critical")
    assert res["stopped_early"]["nodes"] == ["a"]
    assert res["samples"] == 3


def test_a_node_already_handled_ends_the_run_only_for_something_worse():
    """A pre-staged node (handled: warning) that stays at its warning samples the whole run, and ends
    it at once when it turns critical; an evacuated one (handled: critical) never ends it; another
    node's warning still does."""
    warm, hot = {"CPU1 Temp": 80}, {"CPU1 Temp": 90}
    res = run({"a": [warm]}, samples=6, hysteresis=2, stop_on="warning", handled={"a": "warning"})
    assert res["stopped_early"] is None and res["samples"] == 6 and res["nodes"]["a"]["verdict"] == "warning"
    res = run({"a": [warm, warm, warm, hot]}, samples=20, hysteresis=2, stop_on="warning", handled={"a": "warning"})
    assert res["stopped_early"]["nodes"] == ["a"] and res["samples"] == 5
    res = run({"a": [hot]}, samples=6, hysteresis=2, stop_on="warning", handled={"a": "critical"})
    assert res["stopped_early"] is None and res["nodes"]["a"]["verdict"] == "critical"
    res = run({"a": [warm], "b": [{}, {}, warm]}, samples=20, hysteresis=2, stop_on="warning",
              handled={"a": "warning"})
    assert res["stopped_early"]["nodes"] == ["b"] and res["samples"] == 4
    with pytest.raises(P.HealthError, match="handled: node a: level must be warning or critical"):
        run({"a": [{}]}, handled={"a": "ok"})


def test_window_mode_with_fake_clock():
    now = [0.0]
    res = run({"a": [{}]}, window=5.0, interval=1.0, clock=lambda: now[0],
              sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert res["samples"] == 5


def test_after_sample_hook_and_history():
    seen = []
    res = run({"a": [{}, {"CPU1 Temp": 50}]}, samples=2, keep_history=True, after_sample=seen.append)
    assert seen == [1, 2]
    hist = res["nodes"]["a"]["sensors"]["CPU1 Temp"]["history"]
    assert [h["value"] for h in hist] == [45, 50]


def test_deadline_bounds_a_stuck_node():
    gate = threading.Event()
    nodes = {}

    def factory(t):
        block = gate if t["name"] == "dead" else None
        nodes[t["name"]] = FakeNode(t, [{}], block=block)
        return nodes[t["name"]]
    try:
        res = H.run_health(targets("dead", "ok1", "ok2"), P.Policy([TEMP]), samples=3, interval=0, timeout=0.2,
                           node_factory=factory, pump=lambda t: None)
    finally:
        gate.set()
    assert res["summary"]["ok"] == ["ok1", "ok2"]
    assert res["nodes"]["dead"]["verdict"] == "unknown"
    assert "no answer within 0.2s" in res["nodes"]["dead"]["reason"]
    # the stuck node got no second request while the first was outstanding
    assert nodes["dead"].sample == 1


def test_no_watched_sensor_is_unknown_not_ok():
    """Fault 2: glob or type-only rules that match nothing on the BMC leave no evidence: unknown."""
    res = run({"a": [{}], "b": [{}]}, policy=P.Policy([{"name": "PSU*", "upper_critical": 1},
                                                       {"type": "Current", "upper_critical": 9}]), samples=2)
    for name in ("a", "b"):
        node = res["nodes"][name]
        assert node["verdict"] == "unknown", node
        assert node["reason"] == "no sensor on the BMC matches the health rules (2 sensors on the BMC)"
        assert node["sensors"] == {} and node["discrepancies"] == []
    assert res["summary"]["unknown"] == ["a", "b"]
    # one matching sensor is enough
    res = run({"a": [{}]}, policy=P.Policy([{"name": "PSU*", "upper_critical": 1}, FAN]))
    assert res["nodes"]["a"]["verdict"] == "ok"
    assert res["nodes"]["a"]["reason"] == "all 1 watched sensors within thresholds"


def test_nothing_watched_but_unreachable_later_keeps_the_error():
    res = run({"a": [{}, N.NodeUnavailable("BMC unreachable: timeout")]}, policy=P.Policy([{"name": "PSU*"}]),
              samples=2)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"] == "BMC unreachable: timeout"


def run_targets(tlist, scripts, **kw):
    made = []

    def factory(t):
        made.append(t["name"])
        return FakeNode(t, scripts.get(t["name"], [{}]))
    kw.setdefault("interval", 0)
    res = H.run_health(tlist, P.Policy([TEMP, FAN]), node_factory=factory, pump=lambda t: None, **kw)
    return res, made


def test_host_without_bmc_address_is_unknown_others_watched():
    """Fault 4: a host without bmc_address (as the watch passes it: nulls) is unknown with its name."""
    tlist = targets("compute1", "compute2", "compute4")
    tlist.insert(2, {"name": "compute3", "address": None, "port": 623, "username": None, "password": None})
    res, made = run_targets(tlist, {"compute2": [{"CPU1 Temp": 90}]}, samples=2)
    node = res["nodes"]["compute3"]
    assert node["verdict"] == "unknown"
    assert node["reason"] == "inventory: bmc_address is not set for compute3 (no address for its BMC)"
    assert node["error"] == node["reason"] and node["samples"] == 0 and node["sensors"] == {}
    assert res["summary"] == {"ok": ["compute1", "compute4"], "warning": [], "critical": ["compute2"],
                              "unknown": ["compute3"]}
    assert made == ["compute1", "compute2", "compute4"]   # never sampled


def test_bad_password_and_port_entries_never_leak_the_password():
    tlist = targets("a", "b", "c")
    tlist[1]["username"] = ""
    tlist[2]["port"] = "not-a-port"
    res, made = run_targets(tlist, {})
    assert res["nodes"]["b"]["reason"].startswith("inventory: bmc_username is not set for b")
    assert res["nodes"]["c"]["reason"] == "inventory: bmc_port of c must be an integer, got 'not-a-port'"
    assert "secret" not in repr(res)
    assert made == ["a"] and res["summary"]["ok"] == ["a"]


def test_duplicate_bmc_nodes_are_unknown_and_not_sampled():
    """Fault 3: the run goes on for the others; both hosts of one BMC are unknown, named in the reason."""
    tlist = targets("compute1", "compute2", "compute3")
    tlist[2]["address"] = tlist[0]["address"]
    res, made = run_targets(tlist, {"compute1": [{"CPU1 Temp": 95}]}, samples=2)
    assert made == ["compute2"]
    for name in ("compute1", "compute3"):
        node = res["nodes"][name]
        assert node["verdict"] == "unknown" and node["samples"] == 0
        assert node["reason"].startswith("inventory: compute1 and compute3 have the same BMC 192.0.2.1:623")
    assert res["summary"]["ok"] == ["compute2"]


def test_every_entry_bad_samples_nothing():
    res, made = run_targets([{"name": "x"}], {}, window=30, interval=1.0)
    assert made == [] and res["samples"] == 0 and res["nodes"]["x"]["verdict"] == "unknown"
    assert res["elapsed"] < 5


@pytest.mark.parametrize("kw, message", [
    ({"hysteresis": 0}, "hysteresis must be >= 1"),
    ({"timeout": 0}, "timeout must be > 0"),
    ({"window": -1}, "window must be > 0"),
    ({"samples": 0}, "samples must be >= 1"),
    ({"stop_on": "sometimes"}, "stop_on must be"),
    ({"retry_after": 0}, "retry_after must be > 0"),
    ({"retry_max": -5}, "retry_max must be > 0"),
    ({"retry_max": None}, "retry_max must be > 0"),
])
def test_bad_sampling_arguments(kw, message):
    with pytest.raises(P.HealthError, match=message):
        run({"a": [{}]}, **kw)


def test_first_login_under_way_is_no_data_not_a_failed_sample():
    pending = N.NodeUnavailable("not sampled yet: login still queued", pending=True)
    res = run({"a": [pending, pending, {}]}, samples=3, hysteresis=2)
    node = res["nodes"]["a"]
    assert node["verdict"] == "ok" and node["samples"] == 1
    res = run({"a": [pending]}, samples=2)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"] == "not sampled yet: login still queued"


def test_relogin_after_data_counts_as_unknown():
    pending = N.NodeUnavailable("BMC unreachable: login not completed within 1s", pending=True)
    res = run({"a": [{}, pending, pending, pending]}, samples=4, hysteresis=3)
    assert res["nodes"]["a"]["verdict"] == "unknown"


def test_queued_login_does_not_hide_an_earlier_failure():
    pending = N.NodeUnavailable("not sampled yet: login still queued after 3s", pending=True)
    res = run({"a": [N.NodeUnavailable("BMC unreachable: timeout"), pending, pending]}, samples=3)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"] == "BMC unreachable: timeout"
    later = N.NodeUnavailable("BMC unreachable: login not completed within 3s", pending=True)
    res = run({"a": [pending, later, pending]}, samples=3)
    assert res["nodes"]["a"]["reason"] == "not sampled yet: login still queued after 3s"
