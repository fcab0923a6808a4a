# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node-side identity service (imagefiles/usr/local/sbin/pft-identity), run by sh against a fake root."""
import os
import struct
import subprocess

import pytest

from pft_testbed import config

SCRIPT = os.path.join(os.path.dirname(config.__file__), "imagefiles", "usr", "local", "sbin", "pft-identity")
PLAN = config.plan("pft", 5)


def smbios_type11(strings):
    """An SMBIOS type 11 (OEM strings) structure as /sys/firmware/dmi/entries/11-0/raw holds it."""
    header = struct.pack("<BBHB", 11, 5, 0x1100, len(strings))
    return header + b"".join(s.encode() + b"\0" for s in strings) + b"\0"


def run(root, strings=None, cmdline="BOOT_IMAGE=/boot/vmlinuz root=/dev/vda1 ro"):
    raw = root / "sys" / "firmware" / "dmi" / "entries" / "11-0" / "raw"
    if strings is None:
        if raw.exists():
            raw.unlink()
    else:
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(smbios_type11(strings))
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cmdline").write_text(cmdline + "\n")
    (root / "etc" / "ssh").mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["sh", SCRIPT], env=dict(os.environ, PFT_IDENTITY_ROOT=str(root)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def root(tmp_path):
    return tmp_path


def test_applies_the_identity_from_smbios(root):
    strings = ["other=ignored"] + config.smbios_identity(PLAN, "compute2", "ssh-ed25519 AAAAkey pft-testbed")
    assert run(root, strings).strip() == "pft-identity: compute2 10.231.5.12/24"
    assert (root / "etc/hostname").read_text() == "compute2\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert "10.231.5.10\thead" in hosts and "10.231.5.12\tcompute2" in hosts
    iface = (root / "etc/network/interfaces.d/pft-eth0").read_text()
    assert "address 10.231.5.12/24" in iface and "224.0.0.0/4 dev eth0" in iface
    keys = root / "root/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAAkey pft-testbed\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert 'Proxy "http://10.231.5.1:3142"' in (root / "etc/apt/apt.conf.d/01pft-proxy").read_text()
    assert (root / "etc/ssh/ssh_host_ed25519_key").exists()
    assert not list((root / "etc/ssh").glob("ssh_host_rsa*"))


def test_saved_identity_is_kept_when_smbios_is_gone(root):
    run(root, config.smbios_identity(PLAN, "compute1", "ssh-ed25519 AAAA k"))
    hostkey = (root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
    (root / "etc/hostname").unlink()
    assert run(root, None).strip() == "pft-identity: compute1 10.231.5.11/24"
    assert (root / "etc/hostname").read_text() == "compute1\n"
    assert (root / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA k\n"
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == hostkey      # not regenerated


def test_kernel_command_line_overrides_smbios(root):
    out = run(root, config.smbios_identity(PLAN, "compute1", "k"), cmdline="ro pft.hostname=spare9 quiet")
    assert out.strip() == "pft-identity: spare9 10.231.5.11/24"


def test_network_left_alone_when_a_role_owns_it(root):
    (root / "etc/pft").mkdir(parents=True)
    (root / "etc/pft/network-by-role").write_text("")
    run(root, config.smbios_identity(PLAN, "compute1", "k"))
    assert not (root / "etc/network/interfaces.d/pft-eth0").exists()
    assert (root / "etc/hostname").read_text() == "compute1\n"
