# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_evacuation: the measured throughputs kept in the state directory, and each node's expected
evacuation made from them (the time prediction compares a node's time to failure with)."""
import json
import os

import pytest
from ansible.module_utils.pft_evacuation import THROUGHPUT_FILE, expect, read, record
from ansible.module_utils.pft_state import WatchError


def test_a_move_is_remembered_per_target_and_for_any_target(tmp_path):
    d = str(tmp_path)
    assert read(d) == {}
    out = record(d, "compute3", 160, 32.0)
    assert out["mib_per_s"] == 5.0 and out["changed"]
    record(d, "compute4", 160, 40.0)
    kept = read(d)
    assert kept == {"compute3": [5.0], "compute4": [4.0], "*": [5.0, 4.0]}
    assert json.load(open(os.path.join(d, THROUGHPUT_FILE)))["targets"] == kept


def test_only_the_last_moves_are_kept_and_check_mode_writes_nothing(tmp_path):
    d = str(tmp_path)
    for s in range(10, 18):
        record(d, "compute3", 100, float(s))
    assert len(read(d)["compute3"]) == 5
    before = read(d)
    assert record(d, "compute3", 100, 1.0, dry_run=True)["changed"] is False
    assert read(d) == before
    fresh = tmp_path / "none"
    out = record(str(fresh), "compute3", 100, 10.0, dry_run=True)
    assert out["remembered"]["compute3"] == [10.0] and not fresh.exists()      # not even the directory


@pytest.mark.parametrize("target, mib, seconds, match", [
    ("compute 3", 160, 30, "target"),
    ("compute3", 0, 30, "positive mib and seconds"),
    ("compute3", 160, -1, "positive mib and seconds"),
])
def test_a_bad_measurement_is_refused_naming_what_is_wrong(tmp_path, target, mib, seconds, match):
    with pytest.raises(WatchError, match=match):
        record(str(tmp_path), target, mib, seconds)


def test_a_corrupt_throughput_file_names_itself(tmp_path):
    (tmp_path / THROUGHPUT_FILE).write_text('{"targets": [1, 2]}')
    with pytest.raises(WatchError, match=THROUGHPUT_FILE):
        read(str(tmp_path))


def test_expected_evacuation_uses_the_slowest_throughput_measured():
    remembered = {"compute3": [5.0, 6.0], "compute4": [4.0], "*": [5.0, 6.0, 4.0]}
    guests = {"compute1": ["guest1"], "compute2": ["a", "b"], "compute3": [], "compute4": None}
    memory = {"compute1": {"guest1": 160}, "compute2": {"a": 80, "b": 120}, "compute3": {}}
    out = expect(remembered, guests, memory, overhead_s=15, default_mib_per_s=2, fallback_s=60)
    assert out["compute1"]["expected_s"] == 15 + 160 / 4.0 and out["compute1"]["basis"] == "measured"
    assert out["compute2"]["expected_s"] == 15 + 200 / 4.0            # one guest after the other
    assert out["compute3"] == {"expected_s": 15.0, "basis": "no guest", "guests": []}
    assert out["compute4"]["expected_s"] == 60 and "guests unknown" in out["compute4"]["basis"]


def test_before_any_move_the_default_throughput_and_an_unknown_memory_the_fallback():
    out = expect({}, {"compute1": ["guest1"], "compute2": ["x"]}, {"compute1": {"guest1": 160}},
                 overhead_s=10, default_mib_per_s=4, fallback_s=90)
    assert out["compute1"]["expected_s"] == 50 and out["compute1"]["basis"] == "default throughput"
    assert out["compute2"]["expected_s"] == 90 and "memory of x unknown" in out["compute2"]["basis"]
