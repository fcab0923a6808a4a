# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/site.yml's preflight play on inventories (no nodes contacted: --limit localhost)."""
import os
import subprocess
import sys

from pft_paths import REPO

EXAMPLE = os.path.join(REPO, "inventory", "example")
BIN = os.path.dirname(sys.executable)


def run_site(tmp_path, *inventories, extra=()):
    secret = tmp_path / "vault-pass"
    secret.write_bytes(b"pft-example-vault\n")
    secret.chmod(0o600)
    argv = [os.path.join(BIN, "ansible-playbook"), os.path.join(REPO, "playbooks", "site.yml"),
            "--limit", "localhost", "--vault-password-file", str(secret), *extra]
    local = tmp_path / "local.yml"        # an explicit localhost, so that --limit can select it
    local.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    for inv in (*inventories, str(local)):
        argv += ["-i", inv]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
                                   ANSIBLE_NOCOLOR="1"))


def test_syntax_check():
    out = subprocess.run([os.path.join(BIN, "ansible-playbook"), "--syntax-check",
                          os.path.join(REPO, "playbooks", "site.yml")],
                         capture_output=True, text=True, cwd=REPO, timeout=300,
                         env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_example_inventory_passes_the_preflight(tmp_path):
    out = run_site(tmp_path, os.path.join(EXAMPLE, "hosts.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "failed=0" in out.stdout


def test_missing_spares_group_is_named(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    head:\n      hosts:\n        h1: {bmc_address: 10.0.0.1}\n"
                   "    compute:\n      hosts:\n        c1: {bmc_address: 10.0.0.2}\n")
    out = run_site(tmp_path, str(inv), extra=["-e", "bmc_username=u bmc_password=p"])
    assert out.returncode != 0
    assert "groups head (one host), compute, and spares" in out.stdout


def test_missing_bmc_address_is_named(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    head:\n      hosts:\n        h1: {bmc_address: 10.0.0.1}\n"
                   "    compute:\n      hosts:\n        c1: {bmc_address: 10.0.0.2}\n        c2: {}\n"
                   "    spares:\n      hosts:\n        c2:\n")
    out = run_site(tmp_path, str(inv), extra=["-e", "bmc_username=u bmc_password=p"])
    assert out.returncode != 0
    assert "c2: bmc_address is missing or empty" in out.stdout


def test_two_nodes_on_one_bmc_are_named(tmp_path):
    # issue 27: pft would read c1's BMC for c2, evacuate the wrong node and leave c2 unwatched
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    head:\n      hosts:\n        h1: {bmc_address: 10.0.0.1}\n"
                   "    compute:\n      hosts:\n        c1: {bmc_address: 10.0.0.2}\n"
                   "        c2: {bmc_address: 10.0.0.2, bmc_port: 623}\n"
                   "    spares:\n      hosts:\n        c2:\n")
    out = run_site(tmp_path, str(inv), extra=["-e", "bmc_username=u bmc_password=p"])
    assert out.returncode != 0
    assert "two hosts have the same BMC: c1 and c2 (10.0.0.2:623)" in " ".join(out.stdout.split())
