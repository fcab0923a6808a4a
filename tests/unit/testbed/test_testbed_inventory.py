# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Ansible inventory writer (pft_testbed.inventory)."""
import os
import stat

import yaml

from pft_testbed import config, inventory


def _write(tmp_path, compute=3):
    p = config.plan("pft", 28, compute=compute)
    hosts = inventory.write_inventory(str(tmp_path), p, "/state/id_ed25519", "admin", "s3cret")
    return p, hosts


def test_groups_head_compute_spares(tmp_path):
    _, hosts = _write(tmp_path)
    data = yaml.safe_load(open(hosts))
    children = data["all"]["children"]
    assert list(children["head"]["hosts"]) == ["head"]
    assert list(children["compute"]["hosts"]) == ["compute1", "compute2", "compute3"]
    assert list(children["spares"]["hosts"]) == ["compute3"]


def test_host_vars_for_ssh_and_bmc(tmp_path):
    _, hosts = _write(tmp_path)
    data = yaml.safe_load(open(hosts))
    c1 = data["all"]["children"]["compute"]["hosts"]["compute1"]
    assert c1["ansible_host"] == "10.231.28.11"
    assert c1["ansible_user"] == "root"
    assert c1["ansible_ssh_private_key_file"] == "/state/id_ed25519"
    assert "StrictHostKeyChecking=no" in c1["ansible_ssh_common_args"]
    assert c1["bmc_address"] == "127.231.28.11"
    assert c1["bmc_port"] == 623
    assert c1["bmc_username"] == "admin"
    assert "bmc_password" not in open(hosts).read()


def test_password_only_in_a_private_vars_file(tmp_path):
    _write(tmp_path)
    secrets = tmp_path / "group_vars" / "all" / "bmc_secrets.yml"
    assert yaml.safe_load(secrets.read_text()) == {"bmc_password": "s3cret"}
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o600
    tb = yaml.safe_load((tmp_path / "group_vars" / "all" / "testbed.yml").read_text())
    assert tb["testbed_name"] == "pft" and tb["testbed_controller"] == "10.231.28.1"


def test_no_spare_gives_an_empty_group(tmp_path):
    _, hosts = _write(tmp_path, compute=1)
    data = yaml.safe_load(open(hosts))
    assert data["all"]["children"]["spares"]["hosts"] == {}


def test_ansible_reads_it(tmp_path):
    import subprocess
    import sys
    _, hosts = _write(tmp_path / "inv")
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    inv = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    out = subprocess.run([inv, "-i", hosts, "--list"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(cfg)))
    assert out.returncode == 0, out.stderr
    import json
    data = json.loads(out.stdout)
    assert sorted(data["spares"]["hosts"]) == ["compute3"]
    assert data["_meta"]["hostvars"]["compute3"]["bmc_password"] == "s3cret"


def test_down_removes_only_its_own_inventory(tmp_path):
    _, hosts = _write(tmp_path / "inv")
    assert not inventory.remove_inventory(str(tmp_path / "inv"), "other")
    assert os.path.exists(hosts)
    assert inventory.remove_inventory(str(tmp_path / "inv"), "pft")
    assert not (tmp_path / "inv").exists()
    assert not inventory.remove_inventory(str(tmp_path / "inv"), "pft")
