# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""End-to-end: xen_domain_info, xen_migrate and xen_prestage on real Xen 4.17 dom0s (issue 6).

Runs on the site.yml-provisioned session testbed (PFT_E2E_SITE=1), or on a Xen testbed named by
PFT_XEN_TESTBED (see xen_helpers.py); skips without either. domain info, check mode and a target
without memory are in test_xen_basic.py.
Under TCG a migration of the 96 MiB test guest (GUEST_MB) takes 20-60 s: the tests assert structure (rounds present,
final round after the suspend, guest alive, counts continuous), never downtime values.
Order matters a little: the guest goes source -> target (live) and back (stop-and-copy); the
test that kills the target runs last and brings it back (Testbed.reset_node). A test that needs the guest on the
source takes the one the test before left there (XenCluster.ensure_guest) and boots one only
when it is not so: each test still runs alone.
"""
import re
import threading
import time

import pytest
from xen_helpers import GUEST_MB, Poller, assert_runs_once_on

pytestmark = pytest.mark.e2e

GUEST = "pfte2e"


def test_live_migration_keeps_ip_and_heartbeat_and_reports_rounds(xen_cluster):
    c = xen_cluster
    ip = c.ensure_guest(GUEST, 1)
    hb0 = c.wait_heartbeat(ip)
    with Poller(ip) as poll:
        ok, res = c.module(c.source, "xen_migrate", {"guest": GUEST, "target": c.target,
                                                     "log": "/var/log/pft-xen-e2e.jsonl"})
        time.sleep(3)
    assert ok, res.get("msg")
    assert res["changed"] and res["migrated"] and res["target_running"] and not res["source_running"]
    assert_runs_once_on(c, GUEST, c.target)
    hb1 = c.wait_heartbeat(ip, timeout=60)
    assert hb1["ip"] == ip and hb1["id"] == hb0["id"], "same guest, same address"
    counts = [hb["count"] for _, hb in poll.answered()]
    assert counts == sorted(counts) and counts[-1] > hb0["count"], "heartbeat count never reset"
    st = res["stats"]
    if c.shim:
        assert st["instrumentation"] == "progress"
        its = st["iterations"]
        assert its and its[0]["iteration"] == 0 and its[0]["pages"] >= GUEST_MB * 256
        assert all(it["pages"] is not None and it["seconds"] >= 0 for it in its)
        assert st["final_round_pages"] is not None
        assert st["markers_s"]["suspended"] > st["markers_s"].get("saving", 0)
        assert st["mib_sent"] >= GUEST_MB * 0.75
    assert st["total_s"] > 0 and st["downtime_estimate_s"] is not None
    log = c.ssh(c.target if False else c.source, "tail -1 /var/log/pft-xen-e2e.jsonl").stdout
    assert '"kind": "summary"' in log


def test_stop_and_copy_brings_it_back(xen_cluster):
    c = xen_cluster
    if c.where(GUEST) != {c.source: [], c.target: [GUEST]}:
        c.ensure_guest(GUEST, 1)              # run alone: put it on the target first
        ok, res = c.module(c.source, "xen_migrate", {"guest": GUEST, "target": c.target})
        assert ok, res.get("msg")
    ip = c.guest_ip(1)
    hb0 = c.wait_heartbeat(ip)
    ok, res = c.module(c.target, "xen_migrate", {"guest": GUEST, "target": c.source, "mode": "stop-and-copy"})
    assert ok, res.get("msg")
    assert res["migrated"] and res["stats"]["mode"] == "stop-and-copy"
    kinds = [e["event"] for e in res["stats"]["events"]]
    assert kinds[0] == "paused" and "unpaused" in kinds
    assert_runs_once_on(c, GUEST, c.source)
    hb1 = c.wait_heartbeat(ip, timeout=60)
    assert hb1["id"] == hb0["id"] and hb1["count"] > hb0["count"]
    if c.shim:
        # paused for the whole first pass: every round after it is (almost) empty; how many there are
        # (libxc may still send one or two small ones before the suspend) depends on TCG's timing
        its = res["stats"]["iterations"]
        assert its[0]["pages"] >= GUEST_MB * 256 and all(it["pages"] < 1024 for it in its[1:]), its


def test_no_convergence_abort_keeps_the_guest_on_the_source(xen_cluster):
    c = xen_cluster
    if not c.shim:
        pytest.skip("the convergence guard needs the per-round counts (no gcc for the shim)")
    name = GUEST + "d"
    # 48 MiB rewritten without pause, in 192 MiB: in 128 MiB (the kernel takes 58) the guest's OOM
    # killer ended the dirtier and httpd in a CI run, the migration converged, the guest hung on the target
    ip = c.start_guest(name, 2, memory=192, dirty_mb=48)
    hb0 = c.wait_heartbeat(ip)
    c.wait_dirtying(ip)
    # The guard's thresholds set for a test that must not depend on TCG's scheduling: the dirtier and
    # dom0's sender share one emulated CPU, so a round sometimes shrinks below the default 0.8 of the
    # one before. With 0.3, or a predicted final copy over 0.5 s at Xen's last live round (an idle
    # guest's round there is ~200 pages, ~0.35 s at TCG's ~600 pages/s), a guest that keeps rewriting
    # 48 MiB is judged not converging; what is tested is the abort and the guest left on the source.
    # (A CI run converged under these thresholds when the guard was asked without a throughput, so
    # the max_downtime rule never fired.)
    ok, res = c.module(c.source, "xen_migrate", {"guest": name, "target": c.target, "on_no_convergence": "abort",
                                                 "convergence_shrink": 0.3, "max_downtime": 0.5})
    stats = res.get("stats") or {}
    assert not ok, ("migrated: rounds %s, throughput %s pages/s, convergence %r"
                    % ([it.get("pages") for it in stats.get("iterations") or []], stats.get("throughput_pps"),
                       stats.get("convergence")))
    assert "no convergence" in res["failure"] and res["source_running"] and not res["migrated"], res
    assert name in res["msg"] and "still runs on" in res["msg"]
    assert_runs_once_on(c, name, c.source)
    assert c.wait_heartbeat(ip, timeout=60)["id"] == hb0["id"]
    c.wait_dirtying(ip, passes=1)                             # and it still works
    c.destroy_everywhere(name)


def test_balloon_down_and_back_up(xen_cluster):
    c = xen_cluster
    c.ensure_guest(GUEST, 1)           # with its full GUEST_MB
    # 8 MiB down: the guest runs its kernel in little more than 80 MiB; at 80 it once stopped answering
    # (after the balloon back up; the test did not look while it was down, and the console was not kept)
    down = GUEST_MB - 8
    ok, res = c.module(c.source, "xen_prestage", {"guest": GUEST, "target": c.target, "balloon": True,
                                                  "working_set_mb": down})
    assert ok, res
    assert res["balloon"]["ok"] and res["changed"], res
    assert abs(c.xl_list(c.source)[GUEST]["memory_mb"] - down) <= 4
    assert c.wait_heartbeat(c.guest_ip(1), timeout=120, guest=GUEST, node=c.source)      # works ballooned
    ok, res = c.module(c.source, "xen_prestage", {"guest": GUEST, "memory_mb": GUEST_MB})
    assert ok, res
    assert abs(c.xl_list(c.source)[GUEST]["memory_mb"] - GUEST_MB) <= 4
    assert c.wait_heartbeat(c.guest_ip(1), guest=GUEST, node=c.source)


def test_prestage_checks_the_target(xen_cluster):
    c = xen_cluster
    c.ensure_guest(GUEST, 1)
    ok, res = c.module(c.source, "xen_prestage", {"guest": GUEST, "target": c.target,
                                                  "config": "/etc/xen/pft-test/%s.cfg" % GUEST})
    assert ok, res
    names = {ch["name"] for ch in res["checks"]}
    assert {"receive_path", "xen", "toolstack", "shadow_paging", "memory", "file", "not_on_target"} <= names
    assert res["ready"], res["checks"]
    assert [s["name"] for s in res["steps"]][:2] == ["source_facts", "probe_target"]
    # a file that differs on the target is caught
    c.ssh(c.target, "echo '# changed' >> /etc/xen/pft-test/%s.cfg" % GUEST)
    try:
        ok, res = c.module(c.source, "xen_prestage", {"guest": GUEST, "target": c.target,
                                                      "config": "/etc/xen/pft-test/%s.cfg" % GUEST})
        assert ok and not res["ready"]
        bad = [ch for ch in res["checks"] if not ch["ok"]]
        assert [ch["name"] for ch in bad] == ["file"] and "differs" in bad[0]["detail"]
    finally:
        c.write_config(GUEST, 1)


def test_target_killed_mid_migration_leaves_the_guest_on_the_source(xen_cluster):
    c = xen_cluster
    ip = c.ensure_guest(GUEST, 1)
    hb0 = c.wait_heartbeat(ip)
    box = {}

    def run():
        box["result"] = c.module(c.source, "xen_migrate", {"guest": GUEST, "target": c.target,
                                                           "stall_timeout": 30})
    th = threading.Thread(target=run)
    th.start()
    # wait until the first pass is under way (the guest is --incoming on the target)
    end = time.monotonic() + 180
    while time.monotonic() < end and not any(n.endswith("--incoming") for n in c.xl_list(c.target)):
        time.sleep(1)
    time.sleep(3)
    c.tb.kill(c.target)
    killed_at = time.monotonic()
    th.join(900)
    ok, res = box["result"]
    try:
        assert not ok
        assert res["source_running"] is True and res["migrated"] is False
        assert GUEST in res["msg"] and "still runs on" in res["msg"]
        rows = c.xl_list(c.source)
        assert GUEST in rows and rows[GUEST]["state"][2] == "-"
        assert c.wait_heartbeat(ip, timeout=60)["id"] == hb0["id"]
    finally:
        back = c.tb.reset_node(c.target)      # from the kept cluster in seconds; a full boot without one
    print("reset %s: %s" % (c.target, back))
    # back as a freshly converged node: Xen up, no guest, its BMC in sync, Ganglia sees it again ...
    assert "xen_version" in c.ssh(c.target, "xl info").stdout
    assert [n for n in c.xl_list(c.target) if n != "Domain-0"] == []
    assert "Power is on" in c.tb.power(c.target, "status")
    readings = [[w.strip() for w in line.split("|")] for line in c.tb.ipmitool(c.target, "sensor").stdout.splitlines()]
    assert readings and all(r[3] == "ok" for r in readings if len(r) > 3 and r[1] != "na"), readings
    wait_ganglia_reports(c, c.target, killed_at)
    # ... and a guest migrates onto it (its staged test-guest files went with the reset: stage again)
    c.stage([c.target])
    ok, res = c.module(c.source, "xen_migrate", {"guest": GUEST, "target": c.target})
    assert ok, res
    assert GUEST in c.xl_list(c.target) and GUEST not in c.xl_list(c.source)
    assert c.wait_heartbeat(ip, timeout=120)["id"] == hb0["id"]


def wait_ganglia_reports(c, node, killed_at, timeout=180, fresh=20):
    """Wait until the head's gmond heard from `node` again after it was killed at `killed_at`
    (time.monotonic()): its TN (seconds since the node's last report) is below `fresh` when more than
    `fresh` seconds have passed since the kill."""
    end = time.monotonic() + timeout
    pattern = re.compile(r'<HOST NAME="%s"[^>]*TN="(\d+)"' % re.escape(node))
    tn = None
    while time.monotonic() < end:
        xml = c.tb.ssh("head", "nc -w 5 127.0.0.1 8649 || true", timeout=60).stdout
        m = pattern.search(xml)
        tn = int(m.group(1)) if m else None
        if tn is not None and tn < fresh < time.monotonic() - killed_at:
            return tn
        time.sleep(5)
    raise AssertionError("Ganglia on head has not heard from %s since it was killed (TN %s)" % (node, tn))
