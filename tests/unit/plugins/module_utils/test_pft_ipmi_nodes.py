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


# -- the SDR reader, on a stand-in BMC --------------------------------------------------

def sdr_record(record_id, body_len):
    """A raw SDR record: 5-byte header (id, version, type, length) and ``body_len`` bytes."""
    return bytes([record_id & 0xFF, record_id >> 8, 0x51, 0x01, body_len]) + bytes(range(body_len))


class FakeSdrBmc:
    """Answers Reserve SDR Repository and Get SDR like a BMC; ``whole_ok``: it can return whole records."""

    def __init__(self, records, whole_ok=True, cancel_once=False):
        self.records = records        # [(record id, raw record)], in order
        self.whole_ok = whole_ok
        self.cancel_once = cancel_once
        self.sent = []
        self.reservation = 0

    def request(self, netfn, command, data, then):
        self.sent.append((netfn, command, tuple(data)))
        if command == 0x22:
            self.reservation += 1
            then({"code": 0, "data": bytes([self.reservation, 0])})
            return
        rsv, recid, offset, size = data[0] | data[1] << 8, data[2] | data[3] << 8, data[4], data[5]
        ids = [r[0] for r in self.records]
        index = ids.index(recid)
        raw = self.records[index][1]
        successor = ids[index + 1] if index + 1 < len(ids) else 0xFFFF
        if size == 0xFF and not self.whole_ok:
            then({"code": N.CC_CANNOT_RETURN_BYTES})
            return
        if self.cancel_once and offset > 0:
            self.cancel_once = False
            then({"code": N.CC_RESERVATION_CANCELLED})
            return
        assert size == 0xFF or rsv == self.reservation
        part = raw[offset:] if size == 0xFF else raw[offset:offset + size]
        then({"code": 0, "data": bytes([successor & 0xFF, successor >> 8]) + part})


@pytest.mark.parametrize("whole_ok, cancel_once", [(True, False), (False, False), (False, True)])
def test_sdr_reader_reads_every_record(whole_ok, cancel_once):
    records = [(0, sdr_record(0, 40)), (7, sdr_record(7, 3)), (9, sdr_record(9, 20))]
    bmc = FakeSdrBmc(records, whole_ok, cancel_once)
    done = []
    reader = N.SdrReader(bmc.request, {"data": bytes(11)}, lambda *args: done.append(args))
    reader.start()
    assert reader.state == N.SdrReader.DONE
    assert done == [([raw for _, raw in records], 0, 0)]
    reserves = sum(1 for s in bmc.sent if s[1] == 0x22)
    assert reserves == (0 if whole_ok else 1 + cancel_once)


def test_sdr_reader_refuses_a_record_that_is_its_own_successor():
    def request(netfn, command, data, then):
        then({"code": 0, "data": bytes([0, 0]) + sdr_record(0, 2)})
    reader = N.SdrReader(request, {}, lambda *args: None)
    with pytest.raises(N.NodeUnavailable, match="BMC returned SDR record 0 as its own successor"):
        reader.start()


def test_sdr_reader_reports_the_completion_code_of_a_failed_record():
    def request(netfn, command, data, then):
        then({"code": 0xC1})
    with pytest.raises(N.NodeUnavailable, match="Get SDR record 0: completion code 0xc1"):
        N.SdrReader(request, {}, lambda *args: None).start()
