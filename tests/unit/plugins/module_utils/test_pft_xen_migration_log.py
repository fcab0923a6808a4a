# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the migration log (pft_xen_migration_log): the state machine over recorded `xl -v migrate` outputs.
"""
import pytest
from ansible.module_utils.pft_xen_migration_log import MigrationLog
from xen_fakes import migration_lines, replay


def test_migration_log_live_idle_recorded():
    log, events = replay("migrate-live-idle.txt")
    live = log.live_rounds()
    assert [r.label for r in live] == [0, 1, 2, 3, 4]
    assert live[0].pages == 32768 and [r.pages for r in live[1:]] == [291, 191, 182, 224]
    final = log.final_round()
    assert final.label == 5 and final.pages == 370            # Xen's cap: the final round is "iteration 5"
    assert log.result == "Migration successful." and log.progress_seen
    order = [k for k, _ in sorted(log.markers.items(), key=lambda kv: kv[1])]
    assert order.index("saving") < order.index("suspended") < order.index("no_return") < order.index("result")
    kinds = [k for _, k in events]
    assert kinds.index("suspended") < kinds.index("no_return") < kinds.index("result")
    st = log.stats(t_end=92.9, bytes_sent=139724373, populated_pages=128 * 256)
    assert st["live_rounds"] == 5 and st["final_round_pages"] == 370 and st["converged_early"] is False
    assert [it["pages"] for it in st["iterations"]] == [32768, 291, 191, 182, 224]
    assert st["iterations"][0]["dirty_rate_pps"] > 0 and st["iterations"][0]["seconds"] > 10
    assert st["downtime_log_s"] == pytest.approx(82.687 - 73.177, abs=0.01)
    assert st["mib_sent"] == pytest.approx(133.25, abs=0.01)


def test_live_throughput_from_the_recorded_rounds():
    """Only live rounds sent to the end count: none before round 0 ends, then pages over seconds."""
    log = MigrationLog(0.0)
    lines = migration_lines("migrate-live-idle.txt")
    for t, line in lines:
        log.feed(t, line)
        if "iteration 0: 31744/32768" in line:
            assert log.live_throughput() is None
    rounds = [r for r in log.live_rounds()]
    expect = sum(r.pages for r in rounds) / sum(r.t_end - r.t_start for r in rounds)
    assert log.live_throughput() == pytest.approx(expect)
    assert 400 < log.live_throughput() < 800                  # TCG: about 600 pages/s


def test_migration_log_without_shim_lines():
    """No shim: no progress lines, the -vvv suspend line still gives the suspend time."""
    log = MigrationLog(0.0)
    lines = [(1.0, "xc: info: Saving domain 2, type x86 PV"),
             (50.0, "libxl: debug: libxl_dom_suspend.c:203:domain_suspend_common_pvcontrol_suspending: "
                    "Domain 2:issuing PV suspend request via XenBus control node"),
             (51.0, "libxl: debug: libxl_dom_suspend.c:358:suspend_common_wait_guest_check: Domain 2:guest has "
                    "suspended"),
             (60.0, "migration target: Domain started successsfully."),
             (61.0, "Migration successful.")]
    for t, line in lines:
        log.feed(t, line)
    assert not log.progress_seen and log.rounds == []
    st = log.stats(t_end=62.0)
    assert st["downtime_log_s"] == pytest.approx(9.0)


def test_migration_log_failed_at_sender_recorded():
    log, events = replay("migrate-paused-failed.txt")
    assert log.result == "Migration failed, failed to suspend at sender."
    assert "no_return" not in log.markers and "suspended" not in log.markers
    assert [r.label for r in log.rounds] == [0] and log.rounds[0].pages == 32768
    assert any("Bad mfn" in e for e in log.errors) and any("Domain creation failed" in e for e in log.errors)
    st = log.stats(t_end=24.3)
    assert st["final_round_pages"] is None and st["downtime_estimate_s"] is None


def test_migration_log_stop_and_copy_recorded():
    log, events = replay("migrate-stop-and-copy.txt")
    kinds = [k for _, k in events]
    assert kinds[0] == "saving" and kinds.count("suspended") == 1 and log.result == "Migration successful."
    assert [r.pages for r in log.live_rounds()] == [32768, 294, 175, 184, 193]
    assert log.final_round().pages == 369
