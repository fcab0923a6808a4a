# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_ipmi_nodes: error classification, the SDR reader, the in-band node.

The LAN node runs against real ipmi_sim BMCs in tests/integration/test_ipmi_health.py.
"""
import types

import pytest
from ansible.module_utils import pft_ipmi as H
from ansible.module_utils import pft_ipmi_nodes as N
from ansible.module_utils import pft_ipmi_policy as P

TEMP = {"name": "CPU* Temp", "upper_warning": 75, "upper_critical": 85}


@pytest.mark.parametrize("text, reason, permanent", [
    ("Incorrect password provided", "authentication failed", True),
    ("timeout", "BMC unreachable", False),
    ("Session no longer connected", "BMC unreachable", False),
    ("Weird", "IPMI error", False),
])
def test_classify_errors(text, reason, permanent):
    r, p = N.classify_ipmi_error(Exception(text))
    assert r.startswith(reason) and p is permanent



# -- in-band path ------------------------------------------------------------------

class FakeEntry:
    def __init__(self, name, number, stype):
        self.name, self.sensor_number, self.sensor_lun, self.sensor_type = name, number, 0, stype

    def decode_sensor_reading(self, cmd, data):
        return types.SimpleNamespace(value=float(data[0]), states=[], units="C", type=self.sensor_type,
                                     health=0, unavailable=0)


class FakeLocalCommand:
    """Stands in for pyghmi's local (in-band /dev/ipmi0) Command."""

    instances = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.requests = []
        FakeLocalCommand.instances.append(self)

    def init_sdr(self):
        sensors = {1: FakeEntry("CPU1 Temp", 1, "Temperature"), 2: FakeEntry("FAN1", 2, "Fan")}
        return types.SimpleNamespace(sensors=sensors, get_sensor_numbers=lambda: iter(sensors))

    def raw_command(self, netfn, command, data, rslun):
        self.requests.append((netfn, command, tuple(data)))
        return {"code": 0, "data": bytearray([91 if data[0] == 1 else 60])}


def test_in_band_node_uses_local_session_and_reads_sensor_by_sensor():
    FakeLocalCommand.instances.clear()
    node = N.make_node({"name": "n1", "interface": "local"}, command_factory=FakeLocalCommand)
    assert not node.can_async
    assert {d["name"] for d in node.connect()} == {"CPU1 Temp", "FAN1"}
    node.select(["CPU1 Temp", "FAN1", "NOPE"])
    out = node.read_sync()
    cmd = FakeLocalCommand.instances[0]
    assert cmd.kwargs == {}  # pyghmi's Command() without bmc= is the local session
    assert cmd.requests == [(4, 0x2D, (1,)), (4, 0x2D, (2,))]
    assert out["CPU1 Temp"]["value"] == 91.0 and out["FAN1"]["value"] == 60.0


def test_in_band_run_health_end_to_end_with_fake_device():
    res = H.run_health([{"name": "self", "interface": "local"}], P.Policy([TEMP]),
                       node_factory=lambda t: N.make_node(t, command_factory=FakeLocalCommand),
                       pump=lambda t: None)
    assert res["nodes"]["self"]["verdict"] == "critical"

