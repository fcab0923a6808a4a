# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pre-staging (pft_xen_prestage): the NFS root server of a guest, the checks from recorded outputs,
the balloon step. With a checkpoint: test_pft_xen_checkpoint.py.
"""
import pytest
from ansible.module_utils.pft_xen_prestage import nfs_server
from xen_fakes import fixture, isolate_lock_dir, recorded_xl


@pytest.fixture(autouse=True)
def _migration_lock_dir(tmp_path, monkeypatch):
    isolate_lock_dir(tmp_path, monkeypatch)


def test_nfs_server_from_cmdline():
    assert nfs_server("root=/dev/nfs nfsroot=10.0.0.10:/srv/pft/root,vers=3 ip=dhcp") == "10.0.0.10"
    assert nfs_server("root=/dev/nfs nfsroot=/srv/root ip=10.0.0.5:10.0.0.10:10.0.0.1:255.255.255.0") == "10.0.0.10"
    assert nfs_server("console=hvc0 pft.ip=1.2.3.4/24") is None
    assert nfs_server(None) is None


def test_prestage_checks_from_recorded_outputs(tmp_path):
    from ansible.module_utils.pft_xen_prestage import prestage
    xl = recorded_xl()
    xl.answers[("ssh",)] = (0, fixture("pft-probe.txt").replace("Domain-0", "Domain-0", 1), "")
    res = prestage("pfte2e", "compute2", runner=xl)
    checks = {c["name"]: c for c in res["checks"] if c["name"] != "file"}
    assert checks["receive_path"]["ok"] and checks["xen"]["ok"] and checks["shadow_paging"]["ok"]
    assert checks["toolstack"]["ok"]
    files = [c for c in res["checks"] if c["name"] == "file"]
    assert [c["path"] for c in files] == ["/var/lib/pft/test-guest/vmlinuz", "/var/lib/pft/test-guest/initrd.img"]
    assert all(not c["ok"] and "cannot read here" in c["detail"] for c in files)   # not on this machine
    assert not res["ready"] and not res["changed"]
    assert [s["name"] for s in res["steps"]] == ["source_facts", "probe_target"]
    probe_call = [c for c in xl.calls if c[0] == "ssh"][0]
    assert probe_call[-1].startswith("pft-probe file=/var/lib/pft/test-guest/vmlinuz")


def test_prestage_balloon_step_keeps_the_balloons_own_time():
    # On the testbed: "dict() got multiple values for keyword argument 'seconds'" (the balloon's
    # result has its own seconds). Here the guest never shrinks, so the balloon is cancelled.
    from ansible.module_utils.pft_xen_prestage import prestage
    xl = recorded_xl()
    xl.answers[("ssh",)] = (0, fixture("pft-probe.txt"), "")
    xl.answers[("/usr/sbin/xl", "mem-set")] = (0, "", "")
    res = prestage("pfte2e", "compute2", balloon_to_mb=96, balloon_timeout=0.01, runner=xl)
    assert res["balloon"]["cancelled"] and not res["balloon"]["ok"] and res["changed"]
    step = [s for s in res["steps"] if s["name"] == "balloon"][0]
    assert step["seconds"] == res["balloon"]["seconds"] and step["from_mb"] == 128
    assert [c[3] for c in xl.calls if c[:2] == ["/usr/sbin/xl", "mem-set"]] == ["96m", "128m"]   # set back
