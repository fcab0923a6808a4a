# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_predict.estimate on traces recorded from real BMC ramps (fixtures/*.json).

Each fixture was recorded by scripts/record_ramp_trace.py (its "command" and "how" say exactly how):
a ramp driven through a real ipmi_sim BMC by pft_testbed.ramp, read back every second over RMCP+ by
pft's own sampler, so the readings have the BMC's 1 degC resolution and the sampler's timing. The
tests replay each trace as the watch sees it, one more sample at a time, up to the trip."""
import json
import os

import pytest
from ansible.module_utils.pft_predict import estimate, should_evacuate

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
LINE = 95.0                      # CPU1 Temp's upper non-recoverable threshold on the testbed's BMC
EVACUATION_S = 40.0              # one testbed guest's move with its overhead, about (docs/performance.md)


def trace(name):
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        doc = json.load(f)
    samples = [tuple(s) for s in doc["samples"]]
    trip = doc["ramp"]["trip_t"]
    if trip is not None:
        samples = [s for s in samples if s[0] < trip]       # the node is off from the trip on
    return doc, samples


def first_evacuation(samples):
    for end in range(1, len(samples) + 1):
        ok, _ = should_evacuate(estimate(samples[:end], LINE), EVACUATION_S)
        if ok:
            return samples[end - 1][0]
    return None


@pytest.mark.parametrize("name, min_lead_s", [("ramp_0p5_trip", EVACUATION_S), ("ramp_0p2_trip", 60.0)])
def test_a_recorded_ramp_to_the_trip_is_evacuated_with_time_for_the_move(name, min_lead_s):
    doc, samples = trace(name)
    trip = doc["ramp"]["trip_t"]
    warned = first_evacuation(samples)
    assert warned is not None, doc["command"]
    assert trip - warned >= min_lead_s, (warned, trip, doc["command"])


@pytest.mark.parametrize("name", ["stable_noisy", "levels_off"])
def test_a_recorded_trace_that_never_fails_is_never_evacuated(name):
    doc, samples = trace(name)
    assert len(samples) > 200, doc["command"]
    assert first_evacuation(samples) is None, doc["command"]


def test_the_fixtures_say_how_they_were_recorded():
    for name in sorted(os.listdir(FIXTURES)):
        if name.endswith(".json"):
            with open(os.path.join(FIXTURES, name)) as f:
                doc = json.load(f)
            assert doc["command"].startswith("scripts/record_ramp_trace.py ") and "ipmi_sim" in doc["how"], name
