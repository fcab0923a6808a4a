# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_testbed.ramp with a stand-in clock and BMC (the arithmetic and the trip decision); the same
ramp against a real ipmi_sim BMC is tests/integration/test_ramp_through_bmc.py."""
import pytest

from pft_testbed.bmc import DEFAULT_SENSORS
from pft_testbed.errors import TestbedError
from pft_testbed.ramp import Ramp, trip_line


class World:
    """A clock that sleep() moves, and a BMC that holds whole degrees."""

    def __init__(self):
        self.now = 1000.0
        self.held = []
        self.off_at = None

    def clock(self):
        return self.now

    def sleep(self, s):
        self.now += s

    def set_value(self, v):
        self.held.append(round(v))
        return round(v)

    def power_off(self):
        self.off_at = self.now


def test_a_ramp_trips_when_the_held_reading_reaches_the_line():
    w = World()
    rec = Ramp(w.set_value, w.power_off, rate=0.5, start=60, trip=95, period=0.25, clock=w.clock,
               sleep=w.sleep).run()
    # 60 + 0.5 t = 94.625 at t = 69.25, which the BMC holds as 95: the trip, 0.75 s before the
    # ideal line itself reaches 95 (the sensor's resolution, as on real hardware)
    assert rec["tripped_at"] == pytest.approx(1069.25)
    assert w.off_at == rec["tripped_at"] and rec["trip_value"] == 95
    assert rec["readings"][0] == (1000.0, 60) and rec["steps"] == len(rec["readings"]) == 278


def test_a_falling_ramp_trips_at_a_lower_line():
    w = World()
    rec = Ramp(w.set_value, w.power_off, rate=-100.0, start=6000, trip=300, period=1.0, clock=w.clock,
               sleep=w.sleep).run()
    assert rec["trip_value"] <= 300 and rec["tripped_at"] == pytest.approx(1057.0)


def test_without_a_trip_the_ramp_stops_at_to_and_never_powers_off():
    w = World()
    rec = Ramp(w.set_value, None, rate=1.0, start=40, to=50, period=1.0, clock=w.clock, sleep=w.sleep).run()
    assert rec["tripped_at"] is None and rec["last_value"] == 50 and w.off_at is None
    assert "reached 50" in rec["why"]


def test_noise_is_seeded_and_repeatable():
    runs = []
    for _ in range(2):
        w = World()
        Ramp(w.set_value, None, rate=0.0, start=70, to=70, noise=2.0, seed=4, period=1.0, clock=w.clock,
             sleep=w.sleep, max_seconds=30).run()
        runs.append(w.held)
    assert runs[0] == runs[1] and len(set(runs[0])) > 1 or runs[0] == [70]


def test_a_noisy_stable_ramp_runs_until_its_time_is_up():
    w = World()
    rec = Ramp(w.set_value, w.power_off, rate=0.0, start=70, to=None, noise=2.0, seed=1, trip=None,
               period=1.0, clock=w.clock, sleep=w.sleep, max_seconds=600).run()
    assert rec["tripped_at"] is None and w.off_at is None and rec["steps"] > 600
    assert all(60 < v < 80 for _, v in rec["readings"])


def test_bad_ramps_are_refused_with_the_reason():
    with pytest.raises(TestbedError, match="never reaches"):
        Ramp(lambda v: v, lambda: None, rate=0, start=70, trip=95)
    with pytest.raises(TestbedError, match="power the node off"):
        Ramp(lambda v: v, None, rate=1, start=70, trip=95)
    with pytest.raises(TestbedError, match="period"):
        Ramp(lambda v: v, None, rate=1, start=70, period=0)


def test_the_trip_line_is_the_sensors_own_non_recoverable_threshold():
    cpu = next(s for s in DEFAULT_SENSORS if s.name == "CPU1 Temp")
    fan = next(s for s in DEFAULT_SENSORS if s.name == "FAN1")
    volt = next(s for s in DEFAULT_SENSORS if s.name == "12V")
    assert trip_line(cpu, 0.5) == 95 and trip_line(fan, -50) == 300
    with pytest.raises(TestbedError, match="no upper non-recoverable"):
        trip_line(volt, 0.1)


def test_a_step_the_bmc_misses_is_skipped_and_too_many_in_a_row_end_the_ramp():
    w = World()
    calls = {"n": 0}

    def flaky(v):
        calls["n"] += 1
        if calls["n"] in (3, 4):
            raise TimeoutError("timed out")
        return w.set_value(v)
    rec = Ramp(flaky, None, rate=1.0, start=40, to=50, period=1.0, clock=w.clock, sleep=w.sleep).run()
    assert rec["missed_steps"] == 2 and rec["last_value"] == 50 and len(rec["readings"]) == rec["steps"] - 2

    def dead(v):
        raise TimeoutError("timed out")
    with pytest.raises(TestbedError, match="8 steps in a row"):
        Ramp(dead, None, rate=1.0, start=40, to=50, period=1.0, clock=w.clock, sleep=w.sleep).run()
