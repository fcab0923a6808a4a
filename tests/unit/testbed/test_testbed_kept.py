# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kept-cluster key and store (pft_testbed.kept) and the one-shot resume of a node's start.sh.

The key must change whenever anything the converge reads changes (a kept cluster from other inputs
would pass off an old converge as this one), and stay put when only unrelated files change (or
every run converges again)."""
import json
import os
import shutil
import subprocess
import time

import pytest
from pft_paths import REPO

from pft_testbed import config, kept
from pft_testbed.testbed import Testbed

PLAN = config.plan("e2e", 3, compute=4, spares=2).to_dict()
IMAGE = "/cache/images/91f47029e659f473/base.qcow2"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the converge's inputs (and one unrelated directory) to change freely."""
    root = tmp_path_factory.mktemp("repo")
    for rel in kept.REPO_INPUTS + kept.TESTBED_INPUTS + ("docs", "playbooks", "plugins", "library", "roles"):
        src = os.path.join(REPO, rel)
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        elif os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return str(root)


def key(repo, plan=PLAN, image=IMAGE, ansible="2.19.4", qemu="QEMU emulator version 7.2.22", extra=None):
    return kept.converge_key(kept.converge_inputs(repo, plan, image, ansible, qemu, extra))


def role_files(repo, roles=("ganglia", "guest_netboot", "xen_host")):
    """The files of the roles site.yml runs."""
    out = []
    for role in roles:
        for dirpath, _, filenames in os.walk(os.path.join(repo, "roles", role)):
            out.extend(os.path.join(dirpath, f) for f in filenames)
    return sorted(out)


def test_the_key_is_stable(repo):
    assert key(repo) == key(repo)
    assert len(key(repo)) == 20


def test_changing_any_role_file_changes_the_key(repo):
    before = key(repo)
    files = role_files(repo)
    assert len(files) > 20
    for path in files:
        with open(path, "rb") as f:
            original = f.read()
        with open(path, "ab") as f:
            f.write(b"\n# changed\n")
        try:
            assert key(repo) != before, f"{os.path.relpath(path, repo)} is not in the key"
        finally:
            with open(path, "wb") as f:
                f.write(original)
    assert key(repo) == before


@pytest.mark.parametrize("rel", ["playbooks/site.yml", "inventory/testbed-site/group_vars/all/site.yml",
                                 "requirements-apt.txt", "ansible.cfg", "plugins/module_utils/pft_files.py",
                                 "plugins/modules/pft_files.py", "plugins/module_utils/pft_xen.py",
                                 "plugins/module_utils/pft_ganglia.py",
                                 "testbed/pft_testbed/image.py", "testbed/pft_testbed/config.py",
                                 "testbed/pft_testbed/imagefiles/usr/local/sbin/pft-identity"])
def test_changing_another_input_changes_the_key(repo, rel):
    before = key(repo)
    path = os.path.join(repo, rel)
    with open(path, "rb") as f:
        original = f.read()
    with open(path, "ab") as f:
        f.write(b"\n")
    try:
        assert key(repo) != before
    finally:
        with open(path, "wb") as f:
            f.write(original)


def test_a_new_file_a_mode_and_a_symlink_change_the_key(repo):
    before = key(repo)
    new = os.path.join(repo, "roles", "xen_host", "files", "pft-new-file")
    os.makedirs(os.path.dirname(new), exist_ok=True)
    with open(new, "w") as f:
        f.write("x")
    assert key(repo) != before
    os.unlink(new)
    assert key(repo) == before
    target = role_files(repo)[0]
    mode = os.stat(target).st_mode
    os.chmod(target, mode ^ 0o100)
    assert key(repo) != before
    os.chmod(target, mode)
    path = os.path.join(repo, "library", "pft_files.py")       # a module the converge runs
    old = os.readlink(path)
    os.unlink(path)
    os.symlink("../plugins/modules/elsewhere.py", path)
    assert key(repo) != before
    os.unlink(path)
    os.symlink(old, path)
    assert key(repo) == before


def test_plan_image_ansible_qemu_and_extra_are_in_the_key(repo):
    before = key(repo)
    other_plan = config.plan("e2e", 4, compute=4, spares=2).to_dict()     # another subnet
    assert key(repo, plan=other_plan) != before
    assert key(repo, plan=config.plan("e2e", 3, compute=3, spares=2).to_dict()) != before
    assert key(repo, image="/cache/images/0000000000000000/base.qcow2") != before
    assert key(repo, ansible="2.19.5") != before
    assert key(repo, qemu="QEMU emulator version 8.2.2") != before
    assert key(repo, extra={"x": 1}) != before


def test_unrelated_files_do_not_change_the_key(repo):
    before = key(repo)
    for rel in ("docs/site.md", "playbooks/watch.yml", "plugins/modules/pft_watch_decide.py",
                "plugins/module_utils/pft_ipmi.py", "roles/pft_watch/defaults/main.yml"):
        with open(os.path.join(repo, rel), "a") as f:
            f.write("\n# more words\n")
    cache = os.path.join(repo, "roles", "__pycache__")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "x.pyc"), "wb") as f:
        f.write(b"\0")
    assert key(repo) == before


def _kept_cluster(root, name="abc123", nodes=("head", "compute1"), requires=None):
    c = kept.KeptCluster(name, str(root))
    os.makedirs(c.path)
    for n in nodes:
        open(c.disk(n), "w").close()
    open(c.key_file, "w").close()
    with open(c.meta_file, "w") as f:
        json.dump({"requires": requires or {}}, f)
    return c


def test_validity_names_what_is_missing_or_changed(tmp_path):
    assert kept.KeptCluster("0a", str(tmp_path)).valid(["head"], {}) == (False, "no kept cluster 0a")
    c = _kept_cluster(tmp_path, requires={"/k/pft-e2e-migration": "d1"})
    assert c.valid(["head", "compute1"], {"/k/pft-e2e-migration": "d1"}) == (True, "")
    ok, why = c.valid(["head", "compute1", "compute2"], {"/k/pft-e2e-migration": "d1"})
    assert not ok and "compute2" in why
    ok, why = c.valid(["head"], {"/k/pft-e2e-migration": "d2"})
    assert not ok and "/k/pft-e2e-migration changed" in why
    ok, why = c.valid(["head"], {})
    assert not ok and "/k/pft-e2e-migration" in why
    os.unlink(c.key_file)
    assert "ssh key" in c.valid(["head"], {"/k/pft-e2e-migration": "d1"})[1]


def test_controller_files_digest_what_exists(tmp_path):
    base = tmp_path / ".cache" / "pft"
    (base / "keys").mkdir(parents=True)
    (base / "keys" / "pft-e2e-migration").write_text("secret")
    (base / "guest-boot" / "pft-e2e").mkdir(parents=True)
    (base / "guest-boot" / "pft-e2e" / "vmlinuz").write_text("k")
    got = kept.controller_files("pft-e2e", home=str(tmp_path))
    assert got[str(base / "keys" / "pft-e2e-migration")]
    assert got[str(base / "keys" / "pft-e2e-migration.pub")] is None
    assert got[str(base / "shim")] is None
    before = got[str(base / "guest-boot" / "pft-e2e")]
    (base / "guest-boot" / "pft-e2e" / "vmlinuz").write_text("k2")
    assert kept.controller_files("pft-e2e", home=str(tmp_path))[str(base / "guest-boot" / "pft-e2e")] != before


def test_controller_files_travel_with_the_kept_cluster(tmp_path):
    """Kept with the cluster, put back after a restore: a later converge of another cluster of the
    same name (which rewrites the guest kernel and the migration key) leaves this one usable."""
    home = tmp_path / "home"
    base = home / ".cache" / "pft"
    (base / "keys").mkdir(parents=True)
    (base / "keys" / "pft-e2e-migration").write_text("key A")
    (base / "keys" / "pft-e2e-migration").chmod(0o600)
    (base / "guest-boot" / "pft-e2e").mkdir(parents=True)
    (base / "guest-boot" / "pft-e2e" / "vmlinuz").write_text("kernel A")
    requires = kept.controller_files("pft-e2e", home=str(home))
    c = _kept_cluster(tmp_path / "cache", requires=requires)
    saved = c.save_controller_files("pft-e2e", home=str(home))
    assert saved == ["keys/pft-e2e-migration", "guest-boot/pft-e2e"]
    # another converge rewrites them
    (base / "keys" / "pft-e2e-migration").write_text("key B")
    (base / "guest-boot" / "pft-e2e" / "vmlinuz").write_text("kernel B")
    (base / "guest-boot" / "pft-e2e" / "initrd").write_text("initrd B")
    now = kept.controller_files("pft-e2e", home=str(home))
    assert not c.valid(["head", "compute1"], now)[0]
    paths = c.saved_controller_paths("pft-e2e", home=str(home))
    assert c.valid(["head", "compute1"], now, saved=paths) == (True, "")
    back = c.put_back_controller_files("pft-e2e", home=str(home))
    assert sorted(back) == sorted(paths)
    assert kept.controller_files("pft-e2e", home=str(home)) == requires
    assert not (base / "guest-boot" / "pft-e2e" / "initrd").exists()
    assert (base / "keys" / "pft-e2e-migration").stat().st_mode & 0o777 == 0o600
    assert not [n for n in os.listdir(base / "keys") if n.endswith(".pft-put-back")]


def test_the_controller_end_of_the_veth_has_a_fixed_mac():
    """A node loaded from a kept cluster has the controller's MAC in its ARP cache: it must not change."""
    p = config.plan("e2e", 3, compute=4, spares=2)
    assert p.controller_mac == "52:54:00:e7:03:01"
    assert p.controller_mac not in {n.mac for n in p.nodes}
    assert config.Plan.from_dict(p.to_dict()).controller_mac == p.controller_mac


def test_prune_keeps_the_most_recently_used(tmp_path):
    clusters = [_kept_cluster(tmp_path, name) for name in ("aa", "bb", "cc")]
    now = time.time()
    for age, c in zip((300, 100, 200), clusters):
        os.utime(c.meta_file, (now - age, now - age))
    half = os.path.join(kept.kept_root(str(tmp_path)), "dd.tmp")
    os.makedirs(half)
    os.utime(half, (now - 7200, now - 7200))
    removed = kept.prune(str(tmp_path), keep=2, progress=lambda m: None)
    assert sorted(removed) == ["aa", "dd.tmp"]
    assert sorted(os.listdir(kept.kept_root(str(tmp_path)))) == ["bb", "cc"]


def test_start_script_resumes_once_then_boots(tmp_path, monkeypatch):
    """start.sh with a resume file passes its arguments to QEMU once; the next power on boots."""
    monkeypatch.setenv("PFT_TESTBED_STATE", str(tmp_path / "run"))
    tb = Testbed("unit", progress=lambda m: None, cache_dir=str(tmp_path / "cache"))
    os.makedirs(tb.node_dir("compute1"))
    tb._state = {"plan": PLAN, "pids": {}}
    with open(tb.key_file + ".pub", "w") as f:
        f.write("ssh-ed25519 AAAA unit\n")
    tb._write_start_script("compute1")
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "ip").write_text('#!/bin/sh\necho "$@" > "$OUT"\n')
    (fakebin / "ip").chmod(0o755)
    env = dict(os.environ, PATH=f"{fakebin}:{os.environ['PATH']}", OUT=str(tmp_path / "argv"))
    script = os.path.join(tb.node_dir("compute1"), "start.sh")
    with open(os.path.join(tb.node_dir("compute1"), "resume"), "w") as f:
        f.write("-S -loadvm pft-reset\n")
    subprocess.run(["/bin/sh", script], env=env, check=True)
    first = (tmp_path / "argv").read_text()
    assert first.rstrip().endswith("-S -loadvm pft-reset") and "qemu-system-x86_64" in first
    assert not os.path.exists(os.path.join(tb.node_dir("compute1"), "resume"))
    subprocess.run(["/bin/sh", script], env=env, check=True)
    second = (tmp_path / "argv").read_text()
    assert "-loadvm" not in second and "qemu-system-x86_64" in second


def test_the_converge_code_follows_calls_and_imports(repo):
    """The modules site.yml's roles call, the module_utils they import or install, transitively."""
    code = kept.converge_code(repo)
    assert "plugins/modules/pft_files.py" in code and "library/pft_files.py" in code
    assert "plugins/module_utils/pft_files.py" in code            # imported by the module
    assert "plugins/module_utils/pft_xen.py" in code              # installed on the dom0s by xen_host
    assert not any("watch" in rel or "ipmi" in rel for rel in code)
    before = key(repo)
    # A role that starts calling another module makes that module and its imports inputs.
    task = os.path.join(repo, "roles", "ganglia", "tasks", "pft-extra.yml")
    with open(task, "w") as f:
        f.write("- name: Extra\n  ipmi_health_info:\n    nodes: []\n")
    try:
        code = kept.converge_code(repo)
        assert "plugins/modules/ipmi_health_info.py" in code
        assert "plugins/module_utils/pft_ipmi.py" in code
        assert key(repo) != before
    finally:
        os.unlink(task)
    assert key(repo) == before
    # A util imported by an installed util is an input too (the dom0 programs import by plain name).
    util = os.path.join(repo, "plugins", "module_utils", "pft_xen.py")
    with open(util) as f:
        original = f.read()
    with open(util, "a") as f:
        f.write("\ntry:\n    from ansible.module_utils.pft_lease import x\nexcept ImportError:\n    pass\n")
    try:
        assert "plugins/module_utils/pft_lease.py" in kept.converge_code(repo)
    finally:
        with open(util, "w") as f:
            f.write(original)


def test_the_converge_roles_are_those_site_yml_runs(repo):
    assert kept.converge_roles(repo) == ["roles/ganglia", "roles/guest_netboot", "roles/xen_host"]
    before = key(repo)
    site = os.path.join(repo, "playbooks", "site.yml")
    with open(site) as f:
        original = f.read()
    with open(site, "a") as f:
        f.write("\n- name: The watch too\n  hosts: head\n  roles:\n    - role: pft_watch\n")
    try:
        assert "roles/pft_watch" in kept.converge_roles(repo)
        assert key(repo) != before
    finally:
        with open(site, "w") as f:
            f.write(original)
