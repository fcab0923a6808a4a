"""The node-side identity service (imagefiles/usr/local/sbin/pft-identity), run against a fake root."""
import importlib.machinery
import importlib.util
import os
import struct

import pytest

from pft_testbed import config

SCRIPT = os.path.join(os.path.dirname(config.__file__), "imagefiles", "usr", "local", "sbin", "pft-identity")


@pytest.fixture
def ident():
    loader = importlib.machinery.SourceFileLoader("pft_identity", SCRIPT)
    spec = importlib.util.spec_from_loader("pft_identity", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def smbios_type11(strings):
    """An SMBIOS type 11 (OEM strings) structure as /sys/firmware/dmi/entries/11-0/raw holds it."""
    header = struct.pack("<BBHB", 11, 5, 0x1100, len(strings))
    return header + b"".join(s.encode() + b"\0" for s in strings) + b"\0"


def test_reads_pft_strings_from_smbios(ident, tmp_path, monkeypatch):
    p = config.plan("pft", 5)
    strings = config.smbios_identity(p, "compute2", "ssh-ed25519 AAAAkey pft") + ["other=ignored"]
    d = tmp_path / "11-0"
    d.mkdir()
    (d / "raw").write_bytes(smbios_type11(strings))
    monkeypatch.setattr(ident.glob, "glob", lambda pattern: [str(d / "raw")])
    found = ident.smbios_strings()
    assert found["hostname"] == "compute2"
    assert found["address"] == "10.231.5.12/24"
    assert found["ssh_key"] == "ssh-ed25519 AAAAkey pft"
    assert found["hosts"].split()[0] == "head=10.231.5.10"
    assert "other" not in found


def test_saved_identity_round_trips(ident, tmp_path, monkeypatch):
    state = tmp_path / "identity.env"
    monkeypatch.setattr(ident, "STATE", str(state))
    values = {"hostname": "head", "address": "10.231.5.10/24", "hosts": "head=10.231.5.10 compute1=10.231.5.11",
              "ssh_key": "ssh-ed25519 AAAA x", "apt_proxy": "http://10.231.5.1:3142"}
    state.write_text("".join(f"PFT_{k.upper()}={ident.shlex.quote(v)}\n" for k, v in values.items()))
    assert ident.saved() == values
