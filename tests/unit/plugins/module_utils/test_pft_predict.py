# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_predict.estimate on synthetic traces: straight, curved, stepped, noisy, spiked and gappy.

The traces are generated here with a seeded random generator, sampled every second as the watch
samples (pft_watch_interval), so each test states exactly what it feeds in."""
import math
import random

import pytest
from ansible.module_utils.pft_predict import (
    estimate,
    expected_evacuation,
    fit,
    queue,
    remember_throughput,
    should_evacuate,
    throughput_of,
)

# What would make the watch evacuate: a time to failure under its margin (2) times an evacuation of
# 60 s, about the slowest one-guest move measured on the testbed.
EVACUATE_BELOW_S = 120.0


def ramp(start, rate, n, t0=0.0, noise=0.0, seed=1, step=1.0):
    rng = random.Random(seed)
    return [(t0 + i * step, start + rate * i * step + (rng.gauss(0, noise) if noise else 0.0)) for i in range(n)]


def first_warning(samples, line, below_s=EVACUATE_BELOW_S):
    """The time of the first sample at which the estimate says: fails within below_s."""
    for end in range(1, len(samples) + 1):
        got = estimate(samples[:end], line)
        if got["time_to_failure_s"] is not None and got["time_to_failure_s"] < below_s:
            return samples[end - 1][0]
    return None


def test_a_straight_ramp_gives_the_straight_answer():
    samples = ramp(60.0, 0.5, 41)                  # 60 -> 80 degC at 0.5 degC/s over 40 s
    got = estimate(samples, 95.0)
    assert got["rate_per_s"] == pytest.approx(0.5)
    assert got["level"] == pytest.approx(80.0)
    assert got["time_to_failure_s"] == pytest.approx(30.0)
    assert got["confidence"] > 0.99 and got["direction"] == "rising" and got["method"] == "theil-sen"


def test_the_contract_keys_are_there_even_without_a_prediction():
    for got in (estimate([], 95.0), estimate(ramp(70, 0.5, 40), None), estimate(ramp(70, 0.5, 5), 95.0)):
        assert {"time_to_failure_s", "rate_per_s", "confidence"} <= set(got)
        assert got["time_to_failure_s"] is None and got["why"]


def test_too_few_samples_or_too_short_a_span_do_not_predict():
    got = estimate(ramp(80, 1.0, 8), 95.0)
    assert got["time_to_failure_s"] is None and "8 samples" in got["why"]
    got = estimate(ramp(80, 0.5, 30, step=0.5), 110.0)          # 30 samples, but over 14.5 s
    assert got["time_to_failure_s"] is None and "14.5 s" in got["why"]


def test_a_falling_line_is_a_falling_failure():
    fan = ramp(6000.0, -40.0, 41)                  # rpm falling toward a 1500 rpm failure line
    got = estimate(fan, 1500.0)
    assert got["direction"] == "falling"
    assert got["time_to_failure_s"] == pytest.approx((6000 - 40 * 40 - 1500) / 40.0)


def test_moving_away_from_the_line_predicts_nothing():
    got = estimate(ramp(80.0, -0.2, 40), 95.0)
    assert got["time_to_failure_s"] is None and "no trend" in got["why"]


def test_past_the_line_is_zero():
    got = estimate(ramp(90.0, 0.5, 40), 95.0)
    assert got["time_to_failure_s"] == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_a_stable_noisy_sensor_never_predicts_a_near_failure(seed):
    """70 +- 2 degC for ten minutes, 25 degrees below the line: whatever the draw, never a time to
    failure that would evacuate, in any of the watch's views of the trace."""
    rng = random.Random(seed)
    samples = [(float(i), 70.0 + rng.gauss(0, 2.0)) for i in range(600)]
    for end in range(2, 601):                       # every sample's view of the trace
        got = estimate(samples[max(0, end - 120):end], 95.0)
        assert got["time_to_failure_s"] is None or got["time_to_failure_s"] > EVACUATE_BELOW_S, (end, got)


def test_a_single_spike_moves_neither_rate_nor_level():
    base = ramp(70.0, 0.0, 60, noise=0.3, seed=3)
    for where in (-1, 30, 55):
        samples = list(base)
        samples[where] = (samples[where][0], 94.0)   # one absurd reading
        got = estimate(samples, 95.0)
        assert abs(got["rate_per_s"]) < 0.02 and got["level"] < 71, (where, got)
        assert got["time_to_failure_s"] is None, (where, got)


def test_outliers_in_a_ramp_do_not_swing_it():
    samples = ramp(60.0, 0.3, 60, noise=0.2, seed=5)
    for i in range(3, 60, 7):                      # 9 of 60 readings wrong (15 %)
        samples[i] = (samples[i][0], samples[i][1] + (25 if i % 2 else -25))
    got = estimate(samples, 95.0)
    assert got["rate_per_s"] == pytest.approx(0.3, abs=0.03)
    truth = (95.0 - (60 + 0.3 * 59)) / 0.3
    assert got["time_to_failure_s"] == pytest.approx(truth, rel=0.15)


def test_missing_and_unreadable_samples_cost_points_not_the_fit():
    samples = ramp(60.0, 0.4, 60)
    gappy = [s for i, s in enumerate(samples) if i % 3 != 1]           # every third missed: 40 left
    gappy.insert(4, (5.5, None))
    gappy.insert(6, ("x", 1.0))
    gappy.append((float("nan"), 80.0))
    got = estimate(gappy, 110.0)
    assert got["samples_used"] == 40
    assert got["rate_per_s"] == pytest.approx(0.4)
    assert got["time_to_failure_s"] == pytest.approx((110 - (60 + 0.4 * 59)) / 0.4)


def test_a_long_history_is_windowed_and_thinned():
    old = ramp(90.0, -0.5, 100)                    # long ago: falling
    new = ramp(60.0, 0.2, 90, t0=200.0)            # the last 90 s: rising
    got = estimate(old + new, 95.0)
    assert got["samples_used"] == 40 and got["span_s"] == pytest.approx(89.0)
    assert got["rate_per_s"] == pytest.approx(0.2)


def test_an_accelerating_runaway_is_caught_by_the_recent_fit():
    """T(t) = 60 + 0.005 t^2: the whole window's line is late; the newest half's is nearer the
    truth, and the estimate takes it."""
    samples = [(float(t), 60.0 + 0.005 * t ** 2) for t in range(61)]
    truth = math.sqrt((95.0 - 60.0) / 0.005) - 60.0
    whole = fit(samples)
    whole_ttf = (95.0 - whole["level"]) / whole["rate_per_s"]
    got = estimate(samples, 95.0)
    assert got["fit"] == "recent"
    assert truth < got["time_to_failure_s"] < whole_ttf


@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0])
def test_curves_warn_a_full_evacuation_ahead(noise):
    """Sampled as the watch does, each curve gets its warning (a time to failure under the margin
    times 60 s) at least 60 s before it reaches the line: an evacuation fits in the lead time."""
    rng = random.Random(7)
    curves = {
        "linear 0.1/s": lambda t: 60.0 + 0.1 * t,
        "accelerating": lambda t: 60.0 + 0.0008 * t ** 2,
        "step then ramp": lambda t: 55.0 if t < 100 else 68.0 + 0.15 * (t - 100),
        "exponential": lambda t: 55.0 + 2.0 * math.exp(t / 80.0),
    }
    for name, f in curves.items():
        samples = [(float(t), f(t) + rng.gauss(0, noise)) for t in range(400)]
        crossing = next(t for t, _ in samples if f(t) >= 95.0)
        warned = first_warning([s for s in samples if s[0] <= crossing], 95.0)
        assert warned is not None and crossing - warned >= 60.0, (name, warned, crossing)


def test_a_step_then_a_ramp_is_predicted_from_the_ramp():
    flat = [(float(t), 55.0) for t in range(40)]
    ramped = [(40.0 + t, 65.0 + 0.5 * t) for t in range(30)]          # +10 step, then 0.5/s
    got = estimate(flat + ramped, 95.0)
    assert got["fit"] == "recent"
    assert got["time_to_failure_s"] == pytest.approx((95 - (65.0 + 0.5 * 29)) / 0.5, rel=0.2)


def test_a_slow_ramp_that_levels_off_never_warns():
    """A fan that recovers: 70 -> 82 degC with a 2 min time constant, 13 degrees below the line."""
    rng = random.Random(9)
    samples = [(float(t), 70.0 + 12.0 * (1 - math.exp(-t / 120.0)) + rng.gauss(0, 0.5)) for t in range(900)]
    assert first_warning(samples, 95.0) is None


def test_a_shallow_noisy_trend_needs_confidence():
    got = estimate(ramp(70.0, 0.01, 60, noise=2.0, seed=11), 95.0, min_confidence=0.999)
    assert got["time_to_failure_s"] is None and ("confidence" in got["why"] or "noise" in got["why"])


def test_too_far_an_extrapolation_is_no_prediction():
    got = estimate(ramp(60.0, 0.01, 30, noise=0.0), 95.0)          # 0.01/s over 29 s: 3200 s away
    assert got["time_to_failure_s"] is None and "extrapolate" in got["why"]


def test_expected_evacuation_adds_overhead_moves_and_wait():
    got = expected_evacuation([{"name": "g1", "memory_mib": 160, "target": "c3"},
                               {"name": "g2", "memory_mib": 320, "target": "c4"}],
                              throughput={"c3": 4.0, "*": 8.0}, default_mib_per_s=2.0, overhead_s=10, wait_s=5)
    assert got["expected_s"] == pytest.approx(10 + 5 + 40 + 40)
    assert [g["basis"] for g in got["guests"]] == ["measured", "measured (any target)"]
    assert expected_evacuation([{"name": "g", "memory_mib": 100}], {}, 4.0)["guests"][0]["basis"] == "default"
    with pytest.raises(ValueError, match="'g'"):
        expected_evacuation([{"name": "g", "memory_mib": 100}], {}, None)


def test_nodes_wait_for_a_slot_most_urgent_first():
    assert queue([("a", 40), ("b", 30), ("c", 20)], slots=1) == {"a": 0.0, "b": 40.0, "c": 70.0}
    assert queue([("a", 40), ("b", 30), ("c", 20)], slots=2) == {"a": 0.0, "b": 0.0, "c": 30.0}


def test_throughput_is_remembered_per_target_and_planned_with_the_slowest():
    mem = remember_throughput({}, "c3", 160, 40)                   # 4 MiB/s
    mem = remember_throughput(mem, "c3", 160, 20)                  # 8 MiB/s
    mem = remember_throughput(mem, "c4", 160, 0)                   # no duration: ignored
    assert throughput_of(mem) == {"c3": 4.0, "*": 4.0}
    for _ in range(6):
        mem = remember_throughput(mem, "c3", 100, 10, keep=5)
    assert len(mem["c3"]) == 5 and throughput_of(mem)["c3"] == 10.0


def test_the_rule_compares_time_to_failure_with_margin_times_evacuation():
    ok, why = should_evacuate({"time_to_failure_s": 70.0}, 40.0, margin=2.0)
    assert ok and "70 s" in why and "2 x" in why
    ok, why = should_evacuate({"time_to_failure_s": 90.0}, 40.0, margin=2.0)
    assert not ok
    ok, why = should_evacuate({"time_to_failure_s": None, "why": "no failure line"}, 40.0)
    assert not ok and "no failure line" in why
