# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the time of a test run goes: phase records for ``make test``'s closing table.

Two parts:

* :func:`record` appends one JSON line ``{"phase", "seconds", "detail", "at"}`` (``at``: the
  epoch time of the record) to the file named by the environment variable ``PFT_PHASES``, and
  does nothing when it is unset. Each line is one ``write`` on an ``O_APPEND`` descriptor, so
  several processes can record into the same file. Fixtures call it for the phases they time
  themselves: ``record("testbed up", s)``, ``"restore kept cluster"``, ``"converge"``,
  ``"second run"``, ``"verify"``.

* A pytest plugin (the ``pytest_*`` hooks below, imported by tests/conftest.py) that, when
  ``PFT_PHASES`` is set, records at the end of the session the summed wall time (setup + call +
  teardown) of the tests of each kind: ``"unit"`` (neither the ``integration`` nor the ``e2e``
  marker), ``"integration"`` (the ``integration`` marker) and one ``"e2e <module file name>"``
  per end-to-end module (the ``e2e`` marker, or a module in a directory named ``e2e``).

  A fixture phase recorded while a test runs (a session fixture is set up inside the first test
  that uses it) is not counted twice: :func:`record` adds its seconds to a running total kept
  for the current test (set by the plugin around each test), and the plugin subtracts that
  total from the test's time. Only records made in the pytest process itself are subtracted.

scripts/phase_table.py prints the file as a table.
"""
import os

import pytest
from phase_table import append  # scripts/phase_table.py (pytest.ini's pythonpath): the one writer

ENV = "PFT_PHASES"

_current = None     # nodeid of the test being run, set by pytest_runtest_protocol below
_inside = {}        # nodeid -> seconds recorded with record() while that test ran
_phase_of = {}      # nodeid -> the phase its time counts in ("unit", "e2e test_site.py", ...)
_spent = {}         # nodeid -> summed report.duration (setup + call + teardown)


def record(phase, seconds, detail=""):
    """Record that ``phase`` took ``seconds``: one line in the ``PFT_PHASES`` file if it is set."""
    if _current is not None:
        _inside[_current] = _inside.get(_current, 0.0) + seconds
    path = os.environ.get(ENV)
    if path:
        append(path, phase, seconds, detail)


def phase_of(item):
    """The phase a test's time counts in."""
    path = item.path
    if item.get_closest_marker("e2e") is not None or "e2e" in path.parent.parts:
        return f"e2e {path.name}"
    if item.get_closest_marker("integration") is not None:
        return "integration"
    return "unit"


# -- the pytest plugin -----------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current
    _current = item.nodeid
    _phase_of[item.nodeid] = phase_of(item)
    try:
        return (yield)
    finally:
        _current = None


def pytest_runtest_logreport(report):
    _spent[report.nodeid] = _spent.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    if not os.environ.get(ENV):
        return
    totals, counts = {}, {}                  # phase -> seconds, tests; in order of first test
    for nodeid, seconds in _spent.items():
        phase = _phase_of.get(nodeid)
        if phase is None:                    # a report for no test run here (xdist, collection)
            continue
        totals[phase] = totals.get(phase, 0.0) + max(0.0, seconds - _inside.get(nodeid, 0.0))
        counts[phase] = counts.get(phase, 0) + 1
    for phase, seconds in totals.items():
        n = counts[phase]
        record(phase, seconds, f"{n} test{'s' if n != 1 else ''}")
