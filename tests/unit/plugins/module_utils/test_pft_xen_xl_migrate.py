# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the driven `xl migrate` (pft_xen_xl_migrate): the convergence guard, on given and on recorded rounds,
and what Migration feeds it.
"""
from ansible.module_utils.pft_xen_migration_log import MigrationLog
from ansible.module_utils.pft_xen_xl_migrate import ConvergenceGuard, Migration
from xen_fakes import migration_lines, replay


def test_guard_converging_rounds():
    g = ConvergenceGuard()
    assert g.verdict([32768])[0] and g.verdict([32768, 900])[0] and g.verdict([32768, 900, 120])[0]


def test_guard_not_shrinking():
    ok, why = ConvergenceGuard(shrink=0.8).verdict([32768, 12000, 11000])
    assert not ok and "round 2" in why and "does not shrink" in why


def test_guard_round_one_alone_is_never_judged():
    assert ConvergenceGuard().verdict([32768, 40000])[0]


def test_guard_predicted_downtime():
    g = ConvergenceGuard(shrink=2.0, max_downtime_s=1.0)
    assert g.verdict([32768, 9000, 8000, 7000, 6000], throughput_pps=1000)[0] is False
    assert g.verdict([32768, 9000, 8000], throughput_pps=1000)[0] is True


def test_guard_on_the_recorded_idle_rounds_converges():
    """The idle guest's rounds wobble (291, 191, 182, 224 pages): far below min_pages, never 'no convergence'."""
    log, _ = replay("migrate-live-idle.txt")
    g = ConvergenceGuard()
    rounds = log.live_rounds()
    assert all(g.verdict(rounds[:k])[0] for k in range(1, len(rounds) + 1))
    assert not ConvergenceGuard(min_pages=1).verdict(rounds[:4])[0]


def _guard_events(guard):
    """The recorded idle migration replayed through a Migration's event handler (policy continue:
    the guard's verdict is recorded, nothing is run)."""
    mig = Migration("pfte2e", "compute2", guard=guard, runner=lambda argv, timeout: (1, "", "not run"))
    mig.log = MigrationLog(0.0)
    for t, line in migration_lines("migrate-live-idle.txt"):
        for ev in mig.log.feed(t, line):
            mig._on_event(t, ev)
    return [e for e in mig.events if e["event"] == "no_convergence"]


def test_migration_feeds_the_measured_throughput_to_the_guard():
    """max_downtime is judged with the live rounds' throughput: round 4's 224 pages at ~590 pages/s
    predict ~0.38 s, so 0.3 s is no convergence and 1 s is not (the CI run where max_downtime was
    never applied: the guard was asked without a throughput)."""
    events = _guard_events(ConvergenceGuard(max_downtime_s=0.3))
    assert len(events) == 1 and "predicted stop-and-copy of 224 pages" in events[0]["why"]
    assert _guard_events(ConvergenceGuard(max_downtime_s=1.0)) == []
    assert _guard_events(ConvergenceGuard()) == []
