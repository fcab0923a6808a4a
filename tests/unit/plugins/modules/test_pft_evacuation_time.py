# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_evacuation_time, run as Ansible runs it: expect from Ganglia's placement, remember a move."""
import json

import pft_evacuation_time as module
from pft_module_run import run_module


def test_expect_then_measured_then_expect_again(tmp_path, capsys):
    d = str(tmp_path / "state")
    args = {"state_dir": d, "nodes": ["compute1", "compute2", "compute3"],
            "guests": {"compute1": ["guest1"], "compute2": None}, "memory_mb": {"compute1": {"guest1": 160}},
            "overhead": 10, "default_throughput": 4, "fallback": 70, "margin": 2}
    got = run_module(module, args, capsys)
    assert got["rc"] == 0 and got["expected"] == {"compute1": 50.0, "compute2": 70.0, "compute3": 70.0}
    assert got["within"]["compute1"] == 100.0 and got["remembered"] == {}
    got = run_module(module, {"state_dir": d, "state": "measured", "target": "compute3", "mib": 160, "seconds": 20},
                     capsys, check_mode=True)
    assert got["rc"] == 0 and not got["changed"] and got["mib_per_s"] == 8.0
    assert not (tmp_path / "state" / "throughput.json").exists()         # check mode writes nothing
    got = run_module(module, {"state_dir": d, "state": "measured", "target": "compute3", "mib": 160, "seconds": 20},
                     capsys)
    assert got["rc"] == 0 and got["changed"] and got["remembered"]["compute3"] == [8.0]
    got = run_module(module, args, capsys)
    assert got["expected"]["compute1"] == 30.0 and got["nodes"]["compute1"]["basis"] == "measured"


def test_bad_settings_name_the_option(tmp_path, capsys):
    got = run_module(module, {"state_dir": str(tmp_path), "guests": {}, "default_throughput": 0}, capsys)
    assert got["rc"] == 1 and "default_throughput must be positive" in got["msg"]
    got = run_module(module, {"state_dir": str(tmp_path), "state": "measured", "target": "c3", "mib": 160,
                              "seconds": 0}, capsys)
    assert got["rc"] == 1 and "positive mib and seconds" in got["msg"]


def test_a_corrupt_throughput_file_is_a_warning_and_starts_again(tmp_path, capsys):
    d = tmp_path / "state"
    d.mkdir()
    (d / "throughput.json").write_text("{torn")
    got = run_module(module, {"state_dir": str(d), "guests": {"c1": ["g"]}, "memory_mb": {"c1": {"g": 160}},
                              "overhead": 10, "default_throughput": 4}, capsys)
    assert got["rc"] == 0 and got["expected"]["c1"] == 50.0 and "default_throughput" in json.dumps(got["warnings"])
    got = run_module(module, {"state_dir": str(d), "state": "measured", "target": "c3", "mib": 160, "seconds": 20},
                     capsys)
    assert got["rc"] == 0 and got["remembered"]["c3"] == [8.0] and "started again" in json.dumps(got["warnings"])
