# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A sensor ramp through a node's BMC, and the thermal trip at its end.

A real BMC powers its node off when a sensor reaches its non-recoverable threshold (THERMTRIP, a
PROCHOT shutdown). The testbed's BMC owns its node's power, so a ramp can end the same way:

    testbed/testbed ramp compute1 'CPU1 Temp' --rate 0.5 --from 60 --trip unr

changes the reading every `period` seconds along ``from + rate * t`` (plus Gaussian noise, if
asked), and when the reading the BMC holds reaches the trip value, powers the node off hard (as
``testbed kill`` does) and records the time on the controller's clock. ``--trip unr`` takes the
sensor's own upper (or, for a falling rate, lower) non-recoverable threshold from the BMC's
sensor definition (pft_testbed.bmc.DEFAULT_SENSORS), the line pft's use_bmc_thresholds reads.
Without a trip the ramp only changes the reading, up to ``--to`` if given.

The readings go through the BMC's sensor resolution (1 degC for the temperatures), as on real
hardware. Nothing here knows pft: a ramp is the fault, the watch is what is tested against it.
"""
import random
import threading
import time

from pft_testbed.errors import TestbedError


class Ramp:
    """One ramp. ``set_value(v)`` sets the reading and returns the value the BMC holds;
    ``power_off()`` powers the node off. ``run()`` drives it to the end and returns its record."""

    def __init__(self, set_value, power_off=None, rate=0.5, start=None, to=None, noise=0.0, trip=None,
                 seed=None, period=0.25, clock=time.time, sleep=time.sleep, max_seconds=3600.0, max_misses=8):
        if rate == 0 and trip is not None and to is None:
            raise TestbedError("ramp: a rate of 0 never reaches the trip")
        if period <= 0:
            raise TestbedError(f"ramp: period must be positive, not {period}")
        if trip is not None and power_off is None:
            raise TestbedError("ramp: a trip needs a way to power the node off")
        self.set_value = set_value
        self.power_off = power_off
        self.rate = float(rate)
        self.start = start
        self.to = to
        self.noise = float(noise or 0.0)
        self.trip = trip
        self.period = period
        self.clock = clock
        self.sleep = sleep
        self.max_seconds = max_seconds
        self.max_misses = max_misses
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self.record = None

    def _reached(self, value, line):
        return value >= line if self.rate >= 0 else value <= line

    def stop(self):
        """End a running ramp early (from another thread); the reading stays where it is."""
        self._stop.set()

    def run(self):
        """Drive the ramp. Returns {started_at, ended_at, tripped_at (or None), trip, trip_value,
        last_value, steps, readings: [(controller time, value held)], why}."""
        started = self.clock()
        readings = []
        tripped_at = None
        trip_value = None
        why = ""
        base = self.start
        steps = 0
        misses = 0
        missed_in_a_row = 0
        while True:
            now = self.clock()
            elapsed = now - started
            ideal = base + self.rate * elapsed
            if self.to is not None and self._reached(ideal, self.to):
                ideal = self.to
            value = ideal + (self.rng.gauss(0.0, self.noise) if self.noise else 0.0)
            steps += 1
            try:
                held = self.set_value(value)
            except Exception as exc:                # noqa: BLE001 (a BMC console slow under load: a step missed)
                misses += 1
                missed_in_a_row += 1
                if missed_in_a_row >= self.max_misses:
                    raise TestbedError(f"ramp: {missed_in_a_row} steps in a row could not be set: {exc}") from exc
                held = None
            else:
                missed_in_a_row = 0
                readings.append((round(now, 3), held))
            if held is not None and self.trip is not None and self._reached(held, self.trip):
                self.power_off()
                tripped_at = self.clock()
                trip_value = held
                why = f"reading {held} reached the trip at {self.trip}"
                break
            if self.to is not None and ideal == self.to and self.trip is None:
                why = f"reached {self.to}"
                break
            if self._stop.is_set():
                why = "stopped"
                break
            if elapsed > self.max_seconds:
                why = f"no trip within {self.max_seconds:g} s"
                break
            self.sleep(max(0.0, started + steps * self.period - self.clock()))
        self.record = {"started_at": round(started, 3), "ended_at": round(self.clock(), 3),
                       "tripped_at": None if tripped_at is None else round(tripped_at, 3),
                       "trip": self.trip, "trip_value": trip_value, "rate_per_s": self.rate,
                       "start": base, "noise": self.noise, "last_value": readings[-1][1] if readings else None,
                       "steps": steps, "missed_steps": misses, "readings": readings, "why": why}
        return self.record


def trip_line(sensor, rate):
    """The sensor's own non-recoverable threshold in the ramp's direction (upper when rising)."""
    line = sensor.unr if rate >= 0 else sensor.lnr
    if line is None:
        raise TestbedError(f"sensor {sensor.name!r} has no {'upper' if rate >= 0 else 'lower'} non-recoverable "
                           "threshold; give --trip a value")
    return line


def node_ramp(testbed, node, sensor, rate, start=None, to=None, noise=0.0, trip=None, seed=None, period=0.25,
              max_seconds=3600.0):
    """A :class:`Ramp` of `sensor` on `node`'s BMC; ``trip="unr"`` takes the sensor's own line.
    ``start`` defaults to the sensor's nominal reading. The trip powers the node off with
    ``testbed.kill``."""
    bmc = testbed.bmc(node)
    spec = bmc.sensor(sensor)
    if trip == "unr":
        trip = trip_line(spec, rate)
    elif trip is not None:
        trip = float(trip)
    return Ramp(set_value=lambda v: bmc.set_sensor(sensor, v),
                power_off=(lambda: testbed.kill(node)) if trip is not None else None,
                rate=rate, start=spec.nominal if start is None else float(start), to=to, noise=noise,
                trip=trip, seed=seed, period=period, max_seconds=max_seconds)


class BackgroundRamp:
    """A ramp run in a thread, for tests that watch something else while it runs."""

    def __init__(self, ramp):
        self.ramp = ramp
        self.error = None
        self.thread = threading.Thread(target=self._run, name="pft-ramp", daemon=True)

    def _run(self):
        try:
            self.ramp.run()
        except Exception as exc:                 # noqa: BLE001 (reported by join)
            self.error = exc

    def start(self):
        self.thread.start()
        return self

    def join(self, timeout=None):
        """Wait for the ramp's end; returns its record (raises what the ramp raised)."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TestbedError(f"ramp still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.ramp.record

    def stop(self, timeout=10.0):
        self.ramp.stop()
        return self.join(timeout)
