# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fence against real ipmi_sim BMCs whose chassis power runs a stand-in node process (as the
testbed's BMC runs QEMU): power off and confirm off, within a deadline that holds, and nothing done
late when the BMC did not answer in time."""
import os
import signal
import time

import pytest
from ansible.module_utils.pft_ipmi_power import chassis

from pft_testbed.bmc import SimBmc, find_free_address

pytestmark = pytest.mark.integration

NODE_SCRIPT = """#!/bin/sh
# the node: while this runs, the BMC reports chassis power on; ipmi_sim's power off SIGTERMs it
echo $$ > "$1/node.pid"
trap 'rm -f "$1/node.pid"; kill $child 2>/dev/null; exit 0' TERM
while :; do sleep 3600 & child=$!; wait $child; done
"""


class PoweredBmc:
    """A SimBmc that owns the power of a stand-in node process."""

    def __init__(self, workdir, name, network):
        self.dir = os.path.join(workdir, name + "-node")
        os.makedirs(self.dir)
        script = os.path.join(self.dir, "node.sh")
        with open(script, "w") as f:
            f.write(NODE_SCRIPT)
        addr = find_free_address(network, 623)
        self.bmc = SimBmc(name, addr, workdir, port=623, extra_lan_conf=[
            "serial 15 %s 9002 codec VM" % addr, 'startcmd "/bin/sh %s %s"' % (script, self.dir),
            "startnow true", "poweroff_wait 2", "kill_wait 2"])
        self.bmc.start()
        self.wait_node(True)

    def node_pid(self):
        try:
            return int(open(os.path.join(self.dir, "node.pid")).read())
        except (OSError, ValueError):
            return None

    def node_on(self):
        pid = self.node_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def wait_node(self, on, timeout=10):
        deadline = time.monotonic() + timeout
        while self.node_on() != on:
            assert time.monotonic() < deadline, "the stand-in node is still %s" % ("off" if on else "on")
            time.sleep(0.1)

    def target(self, **kw):
        return dict({"name": self.bmc.name, "address": self.bmc.address, "port": self.bmc.port,
                     "username": "admin", "password": self.bmc.password}, **kw)

    def stop(self):
        self.bmc.resume()
        self.bmc.stop()
        pid = self.node_pid()                  # ours: the stand-in this BMC started
        if pid is not None and self.node_on():
            os.kill(pid, signal.SIGTERM)


@pytest.fixture()
def powered(tmp_path):
    made = []

    def make(name="fence1"):
        made.append(PoweredBmc(str(tmp_path), name, "127.89.0.0/24"))
        return made[-1]
    yield make
    for b in made:
        b.stop()


def test_the_fence_powers_off_and_confirms_off_then_is_a_no_op(powered):
    b = powered()
    got = chassis([b.target()], "status", deadline=10)[b.bmc.name]
    assert got["power"] == "on" and not got["confirmed_off"] and got["error"] is None, got
    got = chassis([b.target()], "off", deadline=20)[b.bmc.name]
    assert got["confirmed_off"] and got["sent_off"] and got["power"] == "off" and got["error"] is None, got
    b.wait_node(False)
    got = chassis([b.target()], "off", deadline=10)[b.bmc.name]
    assert got["confirmed_off"] and not got["sent_off"], got          # already off: confirmed, nothing sent
    assert chassis([b.target()], "status", deadline=10)[b.bmc.name]["power"] == "off"


def test_an_unanswering_bmc_is_unreachable_within_the_deadline_and_nothing_happens_late(powered):
    b = powered()
    b.bmc.pause()                                                # SIGSTOP: packets go unanswered
    started = time.monotonic()
    got = chassis([b.target()], "off", deadline=3)[b.bmc.name]
    took = time.monotonic() - started
    assert took < 4.0, took
    assert got["power"] == "unreachable" and not got["confirmed_off"] and not got["sent_off"], got
    assert "no answer within 3.0 s" in got["error"], got
    b.bmc.resume()
    time.sleep(5)                                                # a late power off would land by now
    assert b.node_on()


def test_two_bmcs_at_once_one_fenced_one_unreachable_and_a_wrong_password(powered, tmp_path):
    a, b = powered("fence1"), powered("fence2")
    b.bmc.pause()
    started = time.monotonic()
    got = chassis([a.target(), b.target()], "off", deadline=5)
    assert time.monotonic() - started < 6.0
    assert got["fence1"]["confirmed_off"] and got["fence2"]["power"] == "unreachable", got
    b.bmc.resume()
    got = chassis([b.target(password="not-the-password")], "off", deadline=10)["fence2"]
    assert got["power"] == "unreachable" and "authentication failed" in got["error"], got
    assert b.node_on()
    nobody = find_free_address("127.89.0.0/24", 623)             # nothing listens there
    got = chassis([{"name": "ghost", "address": nobody, "port": 623, "username": "admin", "password": "x"}],
                  "status", deadline=2)["ghost"]
    assert got["power"] == "unreachable" and got["error"], got


def test_the_module_fences_says_what_check_mode_would_do_and_fails_naming_the_node_it_cannot_fence(powered,
                                                                                                   capsys):
    import json

    import ipmi_fence as module
    from pft_module_run import run_module
    a, b = powered("fence1"), powered("fence2")
    targets = [{"name": x.bmc.name, "address": x.bmc.address, "password": x.bmc.password} for x in (a, b)]
    args = {"targets": targets, "username": "admin", "deadline": 5}
    got = run_module(module, args, capsys, check_mode=True)
    assert got["rc"] == 0 and got["changed"] and got["msg"] == "would power off fence1, fence2", got
    assert a.node_on() and b.node_on()
    b.bmc.pause()
    got = run_module(module, args, capsys)
    assert got["rc"] == 1 and got["fenced"] == ["fence1"] and got["not_fenced"] == ["fence2"], got
    # our deadline, or pyghmi's own login timeout (about 4-5 s) if it comes first: unreachable either way
    assert "cannot fence fence2: BMC unreachable: " in got["msg"], got["msg"]
    assert a.bmc.password not in json.dumps(got) and b.bmc.password not in json.dumps(got)
    a.wait_node(False)
    b.bmc.resume()
    assert b.node_on()
    got = run_module(module, dict(args, targets=targets[:1]), capsys)
    assert got["rc"] == 0 and not got["changed"] and got["fenced"] == ["fence1"], got      # already off
    got = run_module(module, dict(args, targets=targets[:1] * 2), capsys)
    assert got["rc"] == 1 and "targets name fence1 more than once" in got["msg"]
