# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_ipmi_policy: rules, policy, BMC-threshold verdicts, hysteresis and trend.

pft_ipmi_policy is pure: it is also imported here with pyghmi blocked.
"""
import os
import subprocess
import sys

import pytest
from ansible.module_utils import pft_ipmi_policy as P

TEMP = {"name": "CPU* Temp", "upper_warning": 75, "upper_critical": 85}
FAN = {"type": "Fan", "lower_warning": 900, "lower_critical": 600}


def reading(value, states=(), health=0, unavailable=False):
    return {"value": value, "states": list(states), "bmc_health": health, "unavailable": unavailable}


# -- policy ----------------------------------------------------------------------

@pytest.mark.parametrize("value, verdict", [(45, "ok"), (75, "warning"), (84.9, "warning"), (85, "critical")])
def test_upper_thresholds(value, verdict):
    policy = P.Policy([TEMP])
    rule = policy.rules[0]
    assert policy.evaluate(rule, reading(value))[0] == verdict


@pytest.mark.parametrize("value, verdict", [(6000, "ok"), (900, "warning"), (600, "critical"), (0, "critical")])
def test_lower_thresholds(value, verdict):
    policy = P.Policy([FAN])
    assert policy.evaluate(policy.rules[0], reading(value))[0] == verdict


def test_reason_names_value_and_threshold():
    policy = P.Policy([TEMP])
    assert policy.evaluate(policy.rules[0], reading(92)) == ("critical", "92 >= upper_critical 85")


def test_unavailable_and_errors_are_unknown():
    policy = P.Policy([TEMP])
    assert policy.evaluate(policy.rules[0], reading(None, unavailable=True))[0] == "unknown"
    assert policy.evaluate(policy.rules[0], {"error": "completion code 0xcb"}) == (
        "unknown", "read failed: completion code 0xcb")


def test_bmc_thresholds():
    policy = P.Policy(use_bmc_thresholds=True)
    assert policy.evaluate(None, reading(80, ["upper non-critical threshold"], health=1))[0] == "warning"
    assert policy.evaluate(None, reading(90, ["upper critical threshold"], health=2))[0] == "critical"
    assert policy.evaluate(None, reading(99, ["upper non-recoverable threshold"], health=4))[0] == "critical"
    assert policy.evaluate(None, reading(45))[0] == "ok"


def test_rule_and_bmc_thresholds_worst_wins():
    policy = P.Policy([{"name": "CPU1 Temp", "upper_warning": 80}], use_bmc_thresholds=True)
    verdict, reason = policy.evaluate(policy.rules[0], reading(78, ["upper critical threshold"], health=2))
    assert verdict == "critical" and "BMC reports" in reason


def test_select_first_rule_wins_and_discrepancies():
    policy = P.Policy([{"name": "CPU1 Temp", "upper_critical": 70}, TEMP, {"name": "CPU3 Temp", "upper_critical": 1},
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
    watched, missing = P.Policy(use_bmc_thresholds=True).select([{"name": "A"}, {"name": "B"}])
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
    with pytest.raises(P.HealthError, match=message):
        P.Policy(rules)


# -- hysteresis ------------------------------------------------------------------

def feed(track, states):
    for i, s in enumerate(states):
        track.add(float(i), s, s, value=float(i))
    return track


def test_single_spike_does_not_count():
    t = feed(P.SensorTrack(3), ["ok", "ok", "critical", "ok", "ok"])
    assert t.verdict == "ok"


def test_k_in_a_row_counts():
    t = feed(P.SensorTrack(3), ["ok", "critical", "critical"])
    assert t.verdict == "ok" and t.pending == {"state": "critical", "count": 2, "needed": 3}
    t.add(3.0, "critical", "hot")
    assert t.verdict == "critical" and t.pending is None


def test_flapping_sensor_stays_put():
    t = feed(P.SensorTrack(2), ["ok", "critical", "ok", "critical", "ok", "critical"])
    assert t.verdict == "ok"


def test_warning_and_critical_mix_confirms_warning():
    t = feed(P.SensorTrack(3), ["ok", "warning", "critical", "warning"])
    assert t.verdict == "warning"


def test_recovery_needs_k_samples_too():
    t = feed(P.SensorTrack(2), ["critical", "critical", "ok"])
    assert t.verdict == "critical"
    t.add(9.0, "ok", "cool")
    assert t.verdict == "ok"


def test_unconfirmed_bad_start_is_unknown_not_ok():
    t = feed(P.SensorTrack(3), ["critical"])
    assert t.verdict == "unknown"
    assert "not yet confirmed" in t.reason


def test_unknown_never_escalates_and_needs_k():
    t = feed(P.SensorTrack(2), ["ok", "unknown"])
    assert t.verdict == "ok"
    t.add(5.0, "unknown", "BMC unreachable")
    assert t.verdict == "unknown" and t.reason == "BMC unreachable"
    t2 = feed(P.SensorTrack(2), ["unknown"] * 10)
    assert t2.verdict == "unknown"


def test_unknown_breaks_a_streak():
    t = feed(P.SensorTrack(2), ["ok", "critical", "unknown", "critical"])
    assert t.verdict == "ok"


def test_trend_slope_per_second():
    t = P.SensorTrack(1)
    for i in range(5):
        t.add(float(i), "ok", "ok", value=50.0 + 2 * i)
    assert t.slope() == pytest.approx(2.0)
    assert P.SensorTrack(1).slope() is None



# -- no pyghmi -----------------------------------------------------------------------

def test_policy_imports_and_works_without_pyghmi():
    import ansible.module_utils as mu
    code = (
        "import sys\n"
        "sys.modules['pyghmi'] = None\n"
        "import ansible.module_utils\n"
        "ansible.module_utils.__path__[:0] = sys.argv[1:]\n"
        "from ansible.module_utils import pft_ipmi_policy as P\n"
        "policy = P.Policy([{'name': 'T', 'upper_critical': 1}])\n"
        "assert policy.evaluate(policy.rules[0], {'value': 2})[0] == 'critical'\n"
        "assert not [m for m in sys.modules if m.startswith('pyghmi') and sys.modules[m] is not None]\n"
    )
    here = os.path.dirname(P.__file__)
    out = subprocess.run([sys.executable, "-c", code, here] + list(mu.__path__), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
