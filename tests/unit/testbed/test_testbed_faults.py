# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fault reporting of pft_testbed.testbed without VMs: a node that doesn't come up is named, with its console."""
import json
import os

import pytest

from pft_testbed import config
from pft_testbed.errors import TestbedError
from pft_testbed.testbed import Testbed, strip_ansi


@pytest.fixture
def tb(tmp_path, monkeypatch):
    monkeypatch.setenv("PFT_TESTBED_STATE", str(tmp_path))
    t = Testbed("unit", progress=lambda m: None)
    os.makedirs(t.node_dir("compute1"))
    with open(t.state_file, "w") as f:
        json.dump({"plan": config.plan("unit", 9, compute=2).to_dict(), "pids": {}, "bmc_password": "x"}, f)
    with open(os.path.join(t.node_dir("compute1"), "console.log"), "w") as f:
        f.write("\x1b[0;32m  OK  \x1b[0m] Started foo\r\n" + "".join(f"line {i}\n" for i in range(40))
                + "Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    return t


def test_node_that_never_answers_is_named_with_its_console_tail(tb, monkeypatch):
    monkeypatch.setattr(Testbed, "node_running", lambda self, node: True)
    monkeypatch.setattr(Testbed, "_port_open", lambda self, *a, **k: False)
    with pytest.raises(TestbedError) as exc:
        tb.wait_ssh(["compute1"], timeout=0)
    msg = str(exc.value)
    assert "node(s) compute1 did not answer ssh within 0 s" in msg
    assert "Kernel panic - not syncing" in msg
    assert "line 39" in msg and "line 5\n" not in msg          # a tail, not the whole log
    assert "\x1b" not in msg


def test_node_whose_qemu_is_gone_is_named(tb, monkeypatch):
    monkeypatch.setattr(Testbed, "node_running", lambda self, node: False)
    clock = iter(range(0, 1000, 20))
    monkeypatch.setattr("pft_testbed.testbed.time.monotonic", lambda: next(clock))
    with pytest.raises(TestbedError, match="node compute1: QEMU is not running"):
        tb.wait_ssh(["compute1"], timeout=600)


def test_unknown_node_lists_the_nodes(tb):
    with pytest.raises(TestbedError, match="no node 'compute9'; nodes: head, compute1, compute2"):
        tb.node("compute9")


def test_strip_ansi():
    assert strip_ansi("\x1b[0;32m  OK  \x1b[0m] x\r") == "  OK  ] x"
