# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The example inventory stays valid: groups, BMC host vars and the vault."""
import os
import subprocess
import sys

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret
from pft_paths import REPO

EXAMPLE = os.path.join(REPO, "inventory", "example")
# Documented in the README ("Credentials"); for the example file only.
EXAMPLE_VAULT_PASSWORD = b"pft-example-vault"


def test_vault_example_decrypts_with_documented_password():
    with open(os.path.join(EXAMPLE, "group_vars", "all", "vault.yml"), "rb") as f:
        blob = f.read()
    assert blob.startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    plain = VaultLib([("default", VaultSecret(EXAMPLE_VAULT_PASSWORD))]).decrypt(blob)
    data = yaml.safe_load(plain)
    assert set(data) == {"vault_bmc_username", "vault_bmc_password"}


def test_inventory_groups_and_bmc_host_vars(tmp_path):
    secret = tmp_path / "vault-pass"
    secret.write_bytes(EXAMPLE_VAULT_PASSWORD + b"\n")
    secret.chmod(0o600)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"),
                          "-i", os.path.join(EXAMPLE, "hosts.yml"), "--list", "--export",
                          "--vault-password-file", str(secret)],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")))
    assert out.returncode == 0, out.stderr
    inv = yaml.safe_load(out.stdout)
    assert set(inv["spares"]["hosts"]) <= set(inv["compute"]["hosts"])
    assert inv["head"]["hosts"]
    for host, hv in inv["_meta"]["hostvars"].items():
        assert "bmc_address" in hv, host
