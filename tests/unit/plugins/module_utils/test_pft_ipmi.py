# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the health logic in pft_ipmi: policy, hysteresis, trend,
sampling and error handling, with fake node readers.

The same paths run against real ipmi_sim BMCs in
tests/integration/test_ipmi_health.py; fakes here only feed decision logic.
"""
import re
import threading
import types

import pytest

from ansible.module_utils import pft_ipmi as H

TEMP = {"name": "CPU* Temp", "upper_warning": 75, "upper_critical": 85}
FAN = {"type": "Fan", "lower_warning": 900, "lower_critical": 600}


def reading(value, states=(), health=0, unavailable=False):
    return {"value": value, "states": list(states), "bmc_health": health, "unavailable": unavailable}


# -- policy ----------------------------------------------------------------------

@pytest.mark.parametrize("value, verdict", [(45, "ok"), (75, "warning"), (84.9, "warning"), (85, "critical")])
def test_upper_thresholds(value, verdict):
    policy = H.Policy([TEMP])
    rule = policy.rules[0]
    assert policy.evaluate(rule, reading(value))[0] == verdict


@pytest.mark.parametrize("value, verdict", [(6000, "ok"), (900, "warning"), (600, "critical"), (0, "critical")])
def test_lower_thresholds(value, verdict):
    policy = H.Policy([FAN])
    assert policy.evaluate(policy.rules[0], reading(value))[0] == verdict


def test_reason_names_value_and_threshold():
    policy = H.Policy([TEMP])
    assert policy.evaluate(policy.rules[0], reading(92)) == ("critical", "92 >= upper_critical 85")


def test_unavailable_and_errors_are_unknown():
    policy = H.Policy([TEMP])
    assert policy.evaluate(policy.rules[0], reading(None, unavailable=True))[0] == "unknown"
    assert policy.evaluate(policy.rules[0], {"error": "completion code 0xcb"}) == (
        "unknown", "read failed: completion code 0xcb")


def test_bmc_thresholds():
    policy = H.Policy(use_bmc_thresholds=True)
    assert policy.evaluate(None, reading(80, ["upper non-critical threshold"], health=1))[0] == "warning"
    assert policy.evaluate(None, reading(90, ["upper critical threshold"], health=2))[0] == "critical"
    assert policy.evaluate(None, reading(99, ["upper non-recoverable threshold"], health=4))[0] == "critical"
    assert policy.evaluate(None, reading(45))[0] == "ok"


def test_rule_and_bmc_thresholds_worst_wins():
    policy = H.Policy([{"name": "CPU1 Temp", "upper_warning": 80}], use_bmc_thresholds=True)
    verdict, reason = policy.evaluate(policy.rules[0], reading(78, ["upper critical threshold"], health=2))
    assert verdict == "critical" and "BMC reports" in reason


def test_select_first_rule_wins_and_discrepancies():
    policy = H.Policy([{"name": "CPU1 Temp", "upper_critical": 70}, TEMP, {"name": "CPU3 Temp", "upper_critical": 1},
                       {"name": "PSU*", "upper_critical": 1}])
    watched, missing = policy.select([{"name": "CPU1 Temp", "type": "Temperature"},
                                      {"name": "CPU2 Temp", "type": "Temperature"},
                                      {"name": "FAN1", "type": "Fan"}])
    assert watched["CPU1 Temp"].index == 0
    assert watched["CPU2 Temp"].index == 1
    assert "FAN1" not in watched
    # exact names are required by default, globs are not
    assert [r.name for r in missing] == ["CPU3 Temp"]


def test_select_all_sensors_with_bmc_thresholds_only():
    watched, missing = H.Policy(use_bmc_thresholds=True).select([{"name": "A"}, {"name": "B"}])
    assert watched == {"A": None, "B": None} and missing == []


@pytest.mark.parametrize("rules, message", [
    ([], "policy is empty"),
    ([{"upper_critical": 3}], "needs 'name' and/or 'type'"),
    ([{"name": "X", "upper_critical": "hot"}], "upper_critical must be a number"),
    ([{"name": "X", "upper_warning": 90, "upper_critical": 80}], "upper_critical 80.0 is below upper_warning 90.0"),
    ([{"name": "X", "lower_warning": 10, "lower_critical": 20}], "lower_critical 20.0 is above lower_warning 10.0"),
    ([{"name": "X", "uper_critical": 80}], "unknown keys: uper_critical"),
])
def test_bad_policies_name_the_rule(rules, message):
    with pytest.raises(H.HealthError, match=message):
        H.Policy(rules)


# -- hysteresis ------------------------------------------------------------------

def feed(track, states):
    for i, s in enumerate(states):
        track.add(float(i), s, s, value=float(i))
    return track


def test_single_spike_does_not_count():
    t = feed(H.SensorTrack(3), ["ok", "ok", "critical", "ok", "ok"])
    assert t.verdict == "ok"


def test_k_in_a_row_counts():
    t = feed(H.SensorTrack(3), ["ok", "critical", "critical"])
    assert t.verdict == "ok" and t.pending == {"state": "critical", "count": 2, "needed": 3}
    t.add(3.0, "critical", "hot")
    assert t.verdict == "critical" and t.pending is None


def test_flapping_sensor_stays_put():
    t = feed(H.SensorTrack(2), ["ok", "critical", "ok", "critical", "ok", "critical"])
    assert t.verdict == "ok"


def test_warning_and_critical_mix_confirms_warning():
    t = feed(H.SensorTrack(3), ["ok", "warning", "critical", "warning"])
    assert t.verdict == "warning"


def test_recovery_needs_k_samples_too():
    t = feed(H.SensorTrack(2), ["critical", "critical", "ok"])
    assert t.verdict == "critical"
    t.add(9.0, "ok", "cool")
    assert t.verdict == "ok"


def test_unconfirmed_bad_start_is_unknown_not_ok():
    t = feed(H.SensorTrack(3), ["critical"])
    assert t.verdict == "unknown"
    assert "not yet confirmed" in t.reason


def test_unknown_never_escalates_and_needs_k():
    t = feed(H.SensorTrack(2), ["ok", "unknown"])
    assert t.verdict == "ok"
    t.add(5.0, "unknown", "BMC unreachable")
    assert t.verdict == "unknown" and t.reason == "BMC unreachable"
    t2 = feed(H.SensorTrack(2), ["unknown"] * 10)
    assert t2.verdict == "unknown"


def test_unknown_breaks_a_streak():
    t = feed(H.SensorTrack(2), ["ok", "critical", "unknown", "critical"])
    assert t.verdict == "ok"


def test_trend_slope_per_second():
    t = H.SensorTrack(1)
    for i in range(5):
        t.add(float(i), "ok", "ok", value=50.0 + 2 * i)
    assert t.slope() == pytest.approx(2.0)
    assert H.SensorTrack(1).slope() is None


# -- targets ---------------------------------------------------------------------

@pytest.mark.parametrize("targets, message", [
    ([], "targets is empty"),
    ([{"address": "10.0.0.1"}], r"targets\[0\] has no name"),
    (["n1"], r"targets\[0\] must be a dict"),
    ([{"name": "n1", "interface": "local"}, {"name": "n1", "interface": "local"}], "n1 is listed twice"),
])
def test_unusable_target_lists_fail(targets, message):
    with pytest.raises(H.HealthError, match=message):
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


@pytest.mark.parametrize("text, reason, permanent", [
    ("Incorrect password provided", "authentication failed", True),
    ("timeout", "BMC unreachable", False),
    ("Session no longer connected", "BMC unreachable", False),
    ("Weird", "IPMI error", False),
])
def test_classify_errors(text, reason, permanent):
    r, p = H.classify_ipmi_error(Exception(text))
    assert r.startswith(reason) and p is permanent


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
    policy = policy or H.Policy([TEMP, FAN])
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
    res = run({"a": [H.NodeUnavailable("BMC unreachable: timeout")]}, samples=3, hysteresis=1)
    node = res["nodes"]["a"]
    assert node["verdict"] == "unknown"
    assert node["reason"] == "BMC unreachable: timeout"


def test_auth_failure_is_not_retried():
    res = run({"a": [H.NodeUnavailable("authentication failed: Incorrect password", permanent=True), {}]},
              samples=3)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"].startswith("authentication failed")


def test_stop_on_returns_after_hysteresis():
    res = run({"a": [{}, {"CPU1 Temp": 90}]}, samples=50, hysteresis=2, stop_on="critical")
    assert res["stopped_early"]["nodes"] == ["a"]
    assert res["samples"] == 3


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
        res = H.run_health(targets("dead", "ok1", "ok2"), H.Policy([TEMP]), samples=3, interval=0, timeout=0.2,
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
    res = run({"a": [{}], "b": [{}]}, policy=H.Policy([{"name": "PSU*", "upper_critical": 1},
                                                       {"type": "Current", "upper_critical": 9}]), samples=2)
    for name in ("a", "b"):
        node = res["nodes"][name]
        assert node["verdict"] == "unknown", node
        assert node["reason"] == "no sensor on the BMC matches the health rules (2 sensors on the BMC)"
        assert node["sensors"] == {} and node["discrepancies"] == []
    assert res["summary"]["unknown"] == ["a", "b"]
    # one matching sensor is enough
    res = run({"a": [{}]}, policy=H.Policy([{"name": "PSU*", "upper_critical": 1}, FAN]))
    assert res["nodes"]["a"]["verdict"] == "ok"
    assert res["nodes"]["a"]["reason"] == "all 1 watched sensors within thresholds"


def test_nothing_watched_but_unreachable_later_keeps_the_error():
    res = run({"a": [{}, H.NodeUnavailable("BMC unreachable: timeout")]}, policy=H.Policy([{"name": "PSU*"}]),
              samples=2)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"] == "BMC unreachable: timeout"


def run_targets(tlist, scripts, **kw):
    made = []

    def factory(t):
        made.append(t["name"])
        return FakeNode(t, scripts.get(t["name"], [{}]))
    kw.setdefault("interval", 0)
    res = H.run_health(tlist, H.Policy([TEMP, FAN]), node_factory=factory, pump=lambda t: None, **kw)
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
    with pytest.raises(H.HealthError, match=message):
        run({"a": [{}]}, **kw)


# -- in-band path ------------------------------------------------------------------

class FakeEntry:
    def __init__(self, name, number, stype):
        self.name, self.sensor_number, self.sensor_lun, self.sensor_type = name, number, 0, stype

    def decode_sensor_reading(self, cmd, data):
        return types.SimpleNamespace(value=float(data[0]), states=[], units="C", type=self.sensor_type,
                                     health=0, unavailable=0)


class FakeLocalCommand:
    """Stands in for pyghmi's local (in-band /dev/ipmi0) Command."""

    instances = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.requests = []
        FakeLocalCommand.instances.append(self)

    def init_sdr(self):
        sensors = {1: FakeEntry("CPU1 Temp", 1, "Temperature"), 2: FakeEntry("FAN1", 2, "Fan")}
        return types.SimpleNamespace(sensors=sensors, get_sensor_numbers=lambda: iter(sensors))

    def raw_command(self, netfn, command, data, rslun):
        self.requests.append((netfn, command, tuple(data)))
        return {"code": 0, "data": bytearray([91 if data[0] == 1 else 60])}


def test_in_band_node_uses_local_session_and_reads_sensor_by_sensor():
    FakeLocalCommand.instances.clear()
    node = H.make_node({"name": "n1", "interface": "local"}, command_factory=FakeLocalCommand)
    assert not node.can_async
    assert {d["name"] for d in node.connect()} == {"CPU1 Temp", "FAN1"}
    node.select(["CPU1 Temp", "FAN1", "NOPE"])
    out = node.read_sync()
    cmd = FakeLocalCommand.instances[0]
    assert cmd.kwargs == {}  # pyghmi's Command() without bmc= is the local session
    assert cmd.requests == [(4, 0x2D, (1,)), (4, 0x2D, (2,))]
    assert out["CPU1 Temp"]["value"] == 91.0 and out["FAN1"]["value"] == 60.0


def test_in_band_run_health_end_to_end_with_fake_device():
    res = H.run_health([{"name": "self", "interface": "local"}], H.Policy([TEMP]),
                       node_factory=lambda t: H.make_node(t, command_factory=FakeLocalCommand),
                       pump=lambda t: None)
    assert res["nodes"]["self"]["verdict"] == "critical"


# -- the pyghmi fixes, on a stand-in session module --------------------------------

def fake_session_module():
    mod = types.SimpleNamespace()
    mod.ioqueue = []
    mod.selectdeadline = 0
    mod.myself = "127.0.0.1"
    mod._monotonic_time = lambda: 100.0

    class Sess:
        bmc_handlers = {}
        initting_sessions = {}
    mod.Session = Sess

    class Sock:
        def sendto(self, data, addr):
            pass

        def getsockname(self):
            return ("127.0.0.1", 1)
    mod.iosockets = [Sock()]
    mod.original_calls = []
    mod._io_wait = lambda timeout, myaddr=None, evq=None: mod.original_calls.append((timeout, myaddr))
    return mod


def test_wakeup_fix_returns_when_reply_already_queued():
    mod = fake_session_module()
    addr = ("127.0.0.5", 623)
    mod.Session.bmc_handlers[addr] = {5000: types.SimpleNamespace(pktqueue=[b"reply"])}
    assert H.install_wakeup_fix(mod, force=True)
    mod._io_wait(1.0, addr)  # would block forever on evt.wait() without the fix
    assert mod.ioqueue and mod.ioqueue[0][2] == addr
    # undirected waits still go to pyghmi's own function
    mod._io_wait(0.5)
    assert mod.original_calls == [(0.5, None)]
    H.remove_wakeup_fix(mod)
    assert not getattr(mod._io_wait, "pft_wakeup_fix", False)


def test_wakeup_fix_is_not_installed_on_unverified_versions(monkeypatch):
    mod = fake_session_module()
    monkeypatch.setattr(H, "_pyghmi_version", lambda: "2.0.0")
    assert H.install_wakeup_fix(mod) is False


def test_forget_stale_login():
    mod = fake_session_module()
    mod.Session.initting_sessions[("10.0.0.1", "admin", "pw", 623, None)] = object()
    H.forget_stale_login("10.0.0.1", "admin", "pw", 623, session_mod=mod)
    assert mod.Session.initting_sessions == {}


def test_recv_fix_receives_without_blocking():
    import socket
    mod = types.SimpleNamespace(_io_recvfrom=lambda sock, size: None)
    assert H.install_recv_fix(mod)
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("127.0.0.1", 0))
        a.setblocking(True)           # what pyghmi's sender leaves behind
        assert mod._io_recvfrom(a, 100) is None   # returns at once instead of blocking
        b.sendto(b"ping", a.getsockname())
        for _ in range(100):
            got = mod._io_recvfrom(a, 100)
            if got:
                break
        assert got[0] == b"ping"
    finally:
        a.close()
        b.close()


def test_first_login_under_way_is_no_data_not_a_failed_sample():
    pending = H.NodeUnavailable("not sampled yet: login still queued", pending=True)
    res = run({"a": [pending, pending, {}]}, samples=3, hysteresis=2)
    node = res["nodes"]["a"]
    assert node["verdict"] == "ok" and node["samples"] == 1
    res = run({"a": [pending]}, samples=2)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"] == "not sampled yet: login still queued"


def test_relogin_after_data_counts_as_unknown():
    pending = H.NodeUnavailable("BMC unreachable: login not completed within 1s", pending=True)
    res = run({"a": [{}, pending, pending, pending]}, samples=4, hysteresis=3)
    assert res["nodes"]["a"]["verdict"] == "unknown"


def test_queued_login_does_not_hide_an_earlier_failure():
    pending = H.NodeUnavailable("not sampled yet: login still queued after 3s", pending=True)
    res = run({"a": [H.NodeUnavailable("BMC unreachable: timeout"), pending, pending]}, samples=3)
    assert res["nodes"]["a"]["verdict"] == "unknown"
    assert res["nodes"]["a"]["reason"] == "BMC unreachable: timeout"
    later = H.NodeUnavailable("BMC unreachable: login not completed within 3s", pending=True)
    res = run({"a": [pending, later, pending]}, samples=3)
    assert res["nodes"]["a"]["reason"] == "not sampled yet: login still queued after 3s"
