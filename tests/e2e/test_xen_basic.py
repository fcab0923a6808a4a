# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""End-to-end, quick part: xen_domain_info, check mode, a target without memory, and a checkpoint
restored on the spare, on real Xen 4.17 dom0s (issue 6). The migrations are in test_xen_migrate.py.

Runs on the site.yml-provisioned session cluster (PFT_E2E_SITE=1), or on a Xen testbed named by
PFT_XEN_TESTBED (see xen_helpers.py); skips without either.
"""
import time

import pytest
from xen_helpers import GUEST_MB, assert_runs_once_on

pytestmark = pytest.mark.e2e

GUEST = "pfte2e"


def test_domain_info_reports_domains_and_host(xen_cluster):
    c = xen_cluster
    c.ensure_guest(GUEST, 1)
    ok, res = c.module(c.source, "xen_domain_info", {})
    assert ok, res
    names = [d["name"] for d in res["domains"]]
    assert names[0] == "Domain-0" and GUEST in res["guests"] and "Domain-0" not in res["guests"]
    g = [d for d in res["domains"] if d["name"] == GUEST][0]
    assert g["memory_mb"] == GUEST_MB and g["maxmem_mb"] == GUEST_MB and g["vcpus"] == 1 and g["type"] == "pv"
    assert g["state"] in ("running", "blocked", "idle") and g["uptime_s"] >= 0   # idle: xl's "------"
    assert g["kernel"].endswith("/vmlinuz")
    host = res["host"]
    assert host["shadow_paging"] is True and "shadow" in host["virt_caps"]
    assert host["xen_version"].startswith("4.17") and host["toolstack_version"].startswith("4.17.5")
    assert 0 < host["free_memory_mb"] < host["total_memory_mb"]
    ok, res = c.module(c.source, "xen_domain_info", {"name": [GUEST, "nosuchguest"]})
    assert ok and [d["name"] for d in res["domains"]] == [GUEST] and res["missing"] == ["nosuchguest"]


def test_check_mode_changes_nothing(xen_cluster):
    c = xen_cluster
    c.ensure_guest(GUEST, 1)
    before = c.where(GUEST)
    ok, res = c.module(c.source, "xen_migrate", {"guest": GUEST, "target": c.target}, check=True, diff=True)
    assert ok, res
    assert res["changed"] is True and res["migrated"] is False
    if "diff" in res:           # the oneline callback shows the diff apart from the result
        assert res["diff"]["before"]["host"] == c.source and res["diff"]["after"]["host"] == c.target
    assert "would migrate %s" % GUEST in res["msg"]
    assert all(ch["ok"] for ch in res["checks"] if ch["name"] in ("xen", "memory", "shadow_paging"))
    assert c.where(GUEST) == before
    assert c.xl_list(c.source)[GUEST]["state"][2] == "-"            # not paused


def test_target_without_memory_fails_cleanly(xen_cluster):
    c = xen_cluster
    c.ensure_guest(GUEST, 1)
    free = int([ln.split(":")[1] for ln in c.ssh(c.target, "xl info").stdout.splitlines()
                if ln.startswith("free_memory")][0])
    filler = "pftfiller"
    c.write_config(filler, 99, memory=max(free - GUEST_MB // 2, 80), nodes=[c.target])   # leaves less than the guest
    c.ssh(c.target, "xl create -p /etc/xen/pft-test/%s.cfg" % filler, timeout=300)
    try:
        ok, res = c.module(c.source, "xen_migrate", {"guest": GUEST, "target": c.target})
        assert not ok
        assert GUEST in res["msg"] and c.target in res["msg"] and "memory" in res["msg"]
        assert res["migrated"] is False and res["source_running"] is True
        assert_runs_once_on(c, GUEST, c.source)
    finally:
        c.ssh(c.target, "xl destroy %s" % filler, check=False)


def test_checkpoint_then_restore_on_the_spare(xen_cluster):
    """xen_prestage checkpoint=true to the spare (a full image, then a delta refresh), then the source
    'dies' (its guest is destroyed) and xen_restore starts the guest on the spare from the checkpoint:
    it runs there exactly once, with its IP, and its heartbeat goes on from the checkpoint (not a reboot)."""
    c = xen_cluster
    name, image = "pftckpt", "/var/lib/pft/checkpoints/pftckpt.save"
    if c.ssh(c.target, "test -x /usr/local/sbin/pft-ckpt-recv", check=False).returncode != 0:
        pytest.skip("%s has no pft-ckpt-recv: apply site.yml --tags xen_host with this version" % c.target)
    for node in (c.source, c.target):
        c.ssh(node, "rm -f %s" % image)
    ip = c.start_guest(name, 7)
    try:
        ok, res = c.module(c.source, "xen_prestage", {"guest": name, "target": c.target, "checkpoint": True},
                           check=True)
        assert ok and res["changed"] and "would" in res["checkpoint"], res
        assert c.ssh(c.target, "test -e %s" % image, check=False).returncode != 0
        ok, res = c.module(c.source, "xen_prestage", {"guest": name, "target": c.target, "checkpoint": True})
        assert ok, res
        ck = res["checkpoint"]
        assert ck["base"] == "none" and ck["blocks_sent"] == ck["blocks_total"] > 0 and ck["path"] == image
        assert ck["image_mib"] > GUEST_MB / 2 and ck["pause_s"] > 0
        assert ck["guest_state"] in ("running", "blocked", "idle")
        assert [s["name"] for s in res["steps"]][-3:] == ["save", "sums", "send"]
        assert_runs_once_on(c, name, c.source)
        c.wait_heartbeat(ip, timeout=60)
        # refresh: only the changed blocks travel
        hb_ckpt = c.wait_heartbeat(ip)
        ok, res = c.module(c.source, "xen_prestage", {"guest": name, "target": c.target, "checkpoint": True})
        assert ok, res
        hb_after_ckpt = c.wait_heartbeat(ip)                    # the checkpoint's count lies between these two
        ck = res["checkpoint"]
        assert ck["base"] == "delta" and 0 < ck["blocks_sent"] < ck["blocks_total"], ck
        assert ck["mib_sent"] < ck["image_mib"]
        target_sha = c.ssh(c.target, "sha256sum %s" % image).stdout.split()[0]
        assert target_sha == ck["sha256"]
        # the guest still runs on the source: the restore refuses to start it twice
        ok, res = c.module(c.target, "xen_restore", {"guest": name, "absent_on": [c.source]})
        assert not ok and "%s still runs on %s" % (name, c.source) in res["msg"], res
        assert "refusing to start it twice" in res["msg"], res
        assert_runs_once_on(c, name, c.source)
        time.sleep(10)
        hb_dead = c.wait_heartbeat(ip)
        c.ssh(c.source, "xl destroy %s" % name)                  # the node "dies"
        assert c.heartbeat(ip) is None
        ok, res = c.module(c.target, "xen_restore", {"guest": name, "absent_on": [c.source]}, check=True)
        assert ok and res["changed"] and not res["restored"] and "would restore" in res["msg"], res
        t_restore = time.monotonic()
        ok, res = c.module(c.target, "xen_restore", {"guest": name, "absent_on": [c.source]})
        assert ok and res["restored"] and res["changed"], res
        assert res["restore_s"] > 0 and res["checkpoint"]["age_s"] >= 10
        assert_runs_once_on(c, name, c.target)
        hb = c.wait_heartbeat(ip, timeout=120)
        assert hb["id"] == hb_ckpt["id"] and hb["ip"] == ip
        # not a reboot, and from the checkpoint (at most 10 ticks/s since the restore began), not a later state
        assert hb["count"] >= hb_ckpt["count"] and hb["uptime"] >= hb_ckpt["uptime"] - 1, (hb_ckpt, hb)
        assert hb["count"] <= hb_after_ckpt["count"] + 10 * (time.monotonic() - t_restore) + 10, (hb_after_ckpt, hb)
        assert hb_dead["count"] > hb_after_ckpt["count"]
        time.sleep(3)
        assert c.wait_heartbeat(ip)["count"] > hb["count"]
        ok, res = c.module(c.target, "xen_restore", {"guest": name, "absent_on": [c.source]})
        assert ok and not res["changed"] and "already runs here" in res["msg"], res
    finally:
        c.destroy_everywhere(name)
        for node in (c.source, c.target):
            c.ssh(node, "rm -f %s" % image, check=False)
