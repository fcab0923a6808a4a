# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host checks: missing programs and root (pft_testbed.host)."""
import pytest

from pft_testbed import host
from pft_testbed.errors import MissingPackageError, TestbedError


def test_missing_program_names_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(host.shutil, "which", lambda *a, **k: None)
    with pytest.raises(MissingPackageError, match="'qemu-system-x86'"):
        host.require("qemu-system-x86_64")


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match="must run as root"):
        host.require_root()


def test_failed_command_reports_its_output():
    with pytest.raises(TestbedError, match="exit 3.*boom"):
        host.run(["sh", "-c", "echo boom; exit 3"])


def test_unknown_program_is_a_missing_package():
    with pytest.raises(MissingPackageError):
        host.run(["pft-no-such-program-xyz"])
