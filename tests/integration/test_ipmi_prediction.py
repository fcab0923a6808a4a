# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The sampler's prediction against a real ipmi_sim BMC whose sensor is ramped (pft_testbed.ramp):
run_health ends early on a predicted failure, before any threshold is crossed, and a second run
that starts with the first one's samples predicts at once; a steady sensor predicts nothing."""
import time

import pytest
from ansible.module_utils import pft_ipmi as H
from ansible.module_utils import pft_ipmi_policy as P
from ansible.module_utils.pft_ipmi_predict import Foresight

from pft_testbed.bmc import BmcFarm
from pft_testbed.ramp import BackgroundRamp, Ramp

pytestmark = pytest.mark.integration

# The thresholds are far away on purpose: only the prediction can end the run early.
POLICY = [{"name": "CPU1 Temp", "upper_warning": 200, "upper_critical": 250, "fail_at": 95}]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with BmcFarm(2, workdir=str(tmp_path_factory.mktemp("bmcs")), network="127.87.0.0/24") as f:
        yield f


def test_a_ramp_toward_the_failure_line_ends_the_sampling_early_and_is_carried(farm):
    hot, calm = farm.bmcs
    for b in farm.bmcs:
        b.reset_sensors()
    hot.set_sensor("CPU1 Temp", 60)
    ramp = BackgroundRamp(Ramp(lambda v: hot.set_sensor("CPU1 Temp", v), None, rate=0.5, start=60, to=94,
                               period=0.25)).start()
    try:
        fs = Foresight(default_within=80.0)      # expected evacuation 40 s x margin 2
        started = time.monotonic()
        got = H.run_health([hot.target(), calm.target()], P.Policy(POLICY), window=55, interval=1.0,
                           foresight=fs)
        took = time.monotonic() - started
    finally:
        ramp.stop()
    early = got["stopped_early"]
    assert early and early["predicted"] and early["nodes"] == [hot.name], got["stopped_early"]
    assert 19 <= took < 40                       # 20 s of samples at least, then at once
    pred = got["nodes"][hot.name]["prediction"]
    assert pred["predicted"] and pred["sensor"] == "CPU1 Temp" and pred["failure_line"] == 95
    assert 0.4 < pred["rate_per_s"] < 0.6 and pred["time_to_failure_s"] < 80 and pred["confidence"] > 0.9
    assert len(pred["samples"]) >= 10 and got["nodes"][hot.name]["verdict"] == "ok"   # no threshold crossed
    assert not got["nodes"][calm.name]["prediction"]["predicted"]

    # the next run starts from the carried samples: it predicts after its first sweep
    carried = fs.carried()
    assert carried["nodes"][hot.name]["CPU1 Temp"]
    hot.set_sensor("CPU1 Temp", min(94, pred["level"] + 2))
    fs2 = Foresight(default_within=80.0, carried=carried)
    got2 = H.run_health([hot.target()], P.Policy(POLICY), window=55, interval=1.0, foresight=fs2)
    assert got2["stopped_early"]["predicted"] and got2["stopped_early"]["after_samples"] <= 2, got2["stopped_early"]


def test_a_steady_sensor_predicts_nothing_and_samples_the_whole_window(farm):
    bmc = farm.bmcs[1]
    bmc.reset_sensors()
    bmc.set_sensor("CPU1 Temp", 70)
    fs = Foresight(default_within=80.0)
    got = H.run_health([bmc.target()], P.Policy(POLICY), window=25, interval=1.0, foresight=fs)
    assert got["stopped_early"] is None and got["samples"] >= 24
    pred = got["nodes"][bmc.name]["prediction"]
    assert pred["time_to_failure_s"] is None and not pred["predicted"]


def test_the_module_keeps_the_samples_between_runs_and_survives_a_corrupt_or_unwritable_file(farm, tmp_path, capsys):
    import json

    import ipmi_health_info as module
    from pft_module_run import run_module
    bmc = farm.bmcs[1]
    bmc.reset_sensors()
    bmc.set_sensor("CPU1 Temp", 70)
    state = tmp_path / "state" / "predict.json"                   # the watch's first run: no directory yet
    args = {"targets": [{"name": bmc.name, "address": bmc.address, "port": bmc.port, "username": "admin",
                         "password": bmc.password}],
            "policy": POLICY, "samples": 5, "interval": 0.2,
            "predict": {"state_file": str(state), "evacuate_within": 80}}
    got = run_module(module, args, capsys, check_mode=True)
    assert got["rc"] == 0 and not state.exists()                 # check mode writes nothing
    got = run_module(module, args, capsys)
    assert got["rc"] == 0 and got["nodes"][bmc.name]["prediction"]["time_to_failure_s"] is None
    kept = json.loads(state.read_text())
    assert len(kept["nodes"][bmc.name]["CPU1 Temp"]) == 5
    got = run_module(module, args, capsys)
    assert len(json.loads(state.read_text())["nodes"][bmc.name]["CPU1 Temp"]) == 10      # carried + new
    state.write_text("{not json")
    got = run_module(module, args, capsys)
    assert got["rc"] == 0 and "unreadable" in json.dumps(got.get("warnings")), got.get("warnings")
    assert len(json.loads(state.read_text())["nodes"][bmc.name]["CPU1 Temp"]) == 5
    state.unlink()
    state.mkdir()                       # a path that cannot be written: a warning, and the verdicts still come
    got = run_module(module, args, capsys)
    assert got["rc"] == 0 and "not kept" in json.dumps(got.get("warnings")), got.get("warnings")
    assert got["nodes"][bmc.name]["prediction"]["time_to_failure_s"] is None
    args["predict"]["min_confidence"] = 1.5
    got = run_module(module, args, capsys)
    assert got["rc"] == 1 and "min_confidence" in got["msg"]


@pytest.mark.parametrize("sensor, start, rate, line, direction", [
    ("CPU1 Temp", 60.0, 0.5, 95.0, "rising"),        # the BMC's upper non-recoverable threshold
    ("FAN1", 6000.0, -120.0, 300.0, "falling"),      # its lower non-recoverable one (m=60 in the SDR)
])
def test_without_fail_at_the_failure_line_is_the_bmcs_own_non_recoverable_threshold(farm, sensor, start, rate, line,
                                                                                     direction):
    bmc = farm.bmcs[0]
    bmc.reset_sensors()
    bmc.set_sensor(sensor, start)
    rule = {"name": sensor, "upper_critical": 1e6} if rate > 0 else {"name": sensor, "lower_critical": -1}
    end = 80.0 if rate > 0 else 1500.0
    ramp = BackgroundRamp(Ramp(lambda v: bmc.set_sensor(sensor, v), None, rate=rate, start=start, to=end,
                               period=0.25)).start()
    try:
        fs = Foresight()                            # no bound: predictions are only reported
        got = H.run_health([bmc.target()], P.Policy([rule]), window=22, interval=1.0, foresight=fs)
    finally:
        ramp.stop()
        bmc.reset_sensors()
    pred = got["nodes"][bmc.name]["prediction"]
    assert pred["failure_line"] == line and pred["direction"] == direction, pred
    assert pred["time_to_failure_s"] is not None and not pred["predicted"]
