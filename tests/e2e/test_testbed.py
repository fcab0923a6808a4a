# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""End-to-end: the virtual cluster testbed (issue 4) on real QEMU/TCG nodes and ipmi_sim BMCs."""
import os
import subprocess
import threading
import time

import pytest

from pft_testbed import config
from pft_testbed.errors import TestbedError

pytestmark = pytest.mark.e2e

SENSORS = ("CPU1 Temp", "CPU2 Temp", "FAN1", "FAN2", "12V")
GROUP, PORT = "239.255.77.1", 5007

RECEIVER = f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", {PORT}))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("{GROUP}"), socket.inet_aton("0.0.0.0")))
s.settimeout(30)
print(s.recvfrom(100)[0].decode())
"""
SENDER = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(40):
    s.sendto(b"pft-mcast-hello", ("{GROUP}", {PORT}))
    time.sleep(0.5)
"""


def ipmi_sensors(tb, node):
    """`ipmitool sensor` over IPMI LAN (RMCP+) from the controller: {name: (value, status)}."""
    n = tb.node(node)
    argv = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", n.bmc_address, "-p", str(config.BMC_PORT),
            "-U", config.BMC_USERNAME, "-E", "-N", "2", "-R", "2", "sensor"]
    env = dict(os.environ, IPMI_PASSWORD=tb.state["bmc_password"])      # not in argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, f"{node}: {out.stderr}"
    readings = {}
    for line in out.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 4:
            readings[cols[0]] = (cols[1], cols[3])
    return readings


def test_every_node_answers_ssh_with_its_identity(testbed):
    for n in testbed.nodes:
        out = testbed.ssh(n.name, "hostname; ip -4 -o addr show eth0; cat /etc/machine-id").stdout.split("\n")
        assert out[0] == n.name
        assert f"{n.address}/24" in out[1]
    ids = {testbed.ssh(n.name, "cat /etc/machine-id").stdout.strip() for n in testbed.nodes}
    assert len(ids) == len(testbed.nodes), "machine-ids must differ between nodes"


def test_nodes_booted_grub_from_their_own_disk(testbed):
    for n in testbed.nodes:
        assert "BOOT_IMAGE=/boot/vmlinuz-" in testbed.ssh(n.name, "cat /proc/cmdline").stdout
    assert "GNU GRUB" in open(os.path.join(testbed.node_dir("head"), "console.log"), errors="replace").read()


def test_every_bmc_answers_ipmi_with_the_expected_sensors(testbed):
    for n in testbed.nodes:
        readings = ipmi_sensors(testbed, n.name)
        assert set(SENSORS) <= set(readings), f"{n.name}: {sorted(readings)}"
        assert readings["CPU1 Temp"][1] == "ok"


def test_heat_moves_a_reading_and_cool_restores_it(testbed):
    try:
        assert testbed.heat("compute1", "CPU1 Temp", 92) == 92
        value, status = ipmi_sensors(testbed, "compute1")["CPU1 Temp"]
        assert float(value) == 92.0 and status == "cr"
        assert float(ipmi_sensors(testbed, "compute2")["CPU1 Temp"][0]) == 45.0   # other BMCs untouched
    finally:
        testbed.cool("compute1")
    assert float(ipmi_sensors(testbed, "compute1")["CPU1 Temp"][0]) == 45.0


def test_bmc_fail_makes_the_bmc_unreachable_and_cool_brings_it_back(testbed):
    n = testbed.node("compute2")
    argv = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", n.bmc_address, "-U", config.BMC_USERNAME, "-E",
            "-N", "1", "-R", "1", "mc", "info"]
    env = dict(os.environ, IPMI_PASSWORD=testbed.state["bmc_password"])
    testbed.bmc_fail("compute2")
    try:
        assert subprocess.run(argv, capture_output=True, env=env, timeout=30).returncode != 0
        assert testbed.status()["compute2"]["bmc"].endswith("paused")
    finally:
        testbed.cool("compute2")
    assert subprocess.run(argv, capture_output=True, env=env, timeout=30).returncode == 0


def test_multicast_reaches_every_compute_node(testbed):
    results = {}

    def receive(node):
        results[node] = testbed.ssh(node, f"python3 -c '{RECEIVER}'", timeout=60, check=False)

    receivers = [n.name for n in testbed.nodes if n.role == "compute"]
    threads = [threading.Thread(target=receive, args=(node,)) for node in receivers]
    for t in threads:
        t.start()
    time.sleep(3)
    testbed.ssh("head", f"python3 -c '{SENDER}' >/dev/null 2>&1 &")
    for t in threads:
        t.join(90)
    for node in receivers:
        assert results[node].stdout.strip() == "pft-mcast-hello", f"{node}: {results[node].stderr}"


def test_nodes_reach_the_debian_registry_through_the_controller_proxy(testbed):
    out = testbed.ssh("compute1", "apt-get -q update >/dev/null && apt-cache policy xen-system-amd64", timeout=300)
    assert "4.17" in out.stdout


def test_reboot_from_inside_comes_back_through_grub(testbed):
    log = os.path.join(testbed.node_dir("compute3"), "console.log")
    grubs = open(log, errors="replace").read().count("GNU GRUB")
    testbed.ssh("compute3", "systemctl reboot", check=False)
    time.sleep(5)
    testbed.wait_ssh(["compute3"], timeout=300)
    assert testbed.ssh("compute3", "hostname").stdout.strip() == "compute3"
    assert open(log, errors="replace").read().count("GNU GRUB") > grubs


def test_kill_stops_the_node_but_not_its_bmc_and_start_brings_it_back(testbed):
    testbed.kill("compute3")
    st = testbed.status()["compute3"]
    assert st["qemu"] == "stopped"
    assert "CPU1 Temp" in ipmi_sensors(testbed, "compute3")
    assert "Power is off" in testbed.power("compute3", "status")
    with pytest.raises(TestbedError, match="node compute3: QEMU is not running. Console log tail"):
        testbed.wait_ssh(["compute3"], timeout=120)
    testbed.start_node("compute3")
    testbed.wait_ssh(["compute3"], timeout=300)


def test_a_second_testbed_does_not_collide_and_down_leaves_nothing(testbed):
    from pft_testbed.testbed import Testbed
    other = Testbed("e2eother", progress=lambda m: print(f"[e2eother] {m}", flush=True))
    if other.exists():
        other.down()
    try:
        other.up(compute=1, memory=(512, 512))
        assert other.plan.subnet != testbed.plan.subnet
        assert {n.bmc_address for n in other.nodes}.isdisjoint(n.bmc_address for n in testbed.nodes)
        assert other.ssh("compute1", "hostname").stdout.strip() == "compute1"
        assert testbed.ssh("compute1", "hostname").stdout.strip() == "compute1"
        # no route between the two testbeds' networks
        assert other.ssh("head", f"ping -c1 -W2 {testbed.node('head').address}", check=False).returncode != 0
    finally:
        other.down()
    assert other.leftovers() == []
    assert not os.path.exists(f"/run/netns/{other.netns}")
    assert testbed.ssh("head", "true").returncode == 0
