# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_ipmi_predict.Foresight with a stand-in wall clock: samples kept per node and sensor, the window
trimmed, the soonest-failing sensor reported, the bound per node, and the samples carried across runs.
The same path against a real BMC is tests/integration/test_ipmi_prediction.py."""
from ansible.module_utils.pft_ipmi_predict import CARRIED_FORMAT, Foresight


class Wall:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def feed(fs, wall, node, sensor, line, values, step=1.0):
    for v in values:
        fs.add(node, sensor, line, wall.t, v)
        wall.t += step


def test_the_soonest_failing_sensor_is_the_nodes_prediction_and_ends_the_run_within_its_bound():
    wall = Wall()
    fs = Foresight(within={"c1": 30.0}, default_within=80.0, wall=wall)
    start = wall.t
    feed(fs, wall, "c1", "CPU1 Temp", 95.0, [60 + 0.5 * i for i in range(30)])     # 95 in about 41 s
    wall.t = start
    feed(fs, wall, "c1", "CPU2 Temp", 95.0, [60 + 1.0 * i for i in range(30)])     # 95 in about 6 s
    wall.t = start
    feed(fs, wall, "c2", "CPU1 Temp", 95.0, [60 + 0.5 * i for i in range(30)])
    hit = fs.judge()
    assert hit == ["c1", "c2"]
    c1 = fs.prediction("c1")
    assert c1["sensor"] == "CPU2 Temp" and c1["time_to_failure_s"] < 10 and c1["evacuate_within_s"] == 30.0
    assert len(c1["samples"]) == 30
    assert fs.prediction("c2")["evacuate_within_s"] == 80.0 and fs.prediction("nobody") is None


def test_without_a_bound_predictions_are_only_reported():
    wall = Wall()
    fs = Foresight(wall=wall)
    feed(fs, wall, "c1", "CPU1 Temp", 95.0, [60 + 0.5 * i for i in range(30)])
    assert fs.judge() == [] and fs.prediction("c1")["time_to_failure_s"] is not None


def test_the_window_trims_old_samples_and_the_carried_ones_start_the_next_run():
    wall = Wall()
    fs = Foresight(window_s=30.0, wall=wall)
    feed(fs, wall, "c1", "CPU1 Temp", 95.0, [70.0] * 60)
    assert len(fs.samples["c1"]["CPU1 Temp"]) == 31
    carried = fs.carried()
    assert carried["format"] == CARRIED_FORMAT and len(carried["nodes"]["c1"]["CPU1 Temp"]) == 31
    wall.t += 10                                               # the next cron run, 10 s later
    nxt = Foresight(window_s=30.0, carried=carried, wall=wall)
    assert len(nxt.samples["c1"]["CPU1 Temp"]) == 20           # those of the last 30 s: t 40..59
    wall.t += 60
    assert Foresight(window_s=30.0, carried=carried, wall=wall).samples == {}


def test_carried_samples_of_another_format_or_shape_are_ignored():
    wall = Wall()
    for bad in (None, [], {"format": 99, "nodes": {"c1": {"s": [[wall.t, 1]]}}},
                {"format": CARRIED_FORMAT, "nodes": {"c1": {"s": [["x", 1], [wall.t, None]]}}},
                {"format": CARRIED_FORMAT, "nodes": "nope"}):
        assert Foresight(carried=bad, wall=wall).samples == {}
