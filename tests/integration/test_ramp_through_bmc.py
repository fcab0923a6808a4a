# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A sensor ramp through a real ipmi_sim BMC (pft_testbed.ramp), read back over RMCP+ by pft.

The node's power-off is a stand-in here (a BMC farm has no QEMU node); the ramp's power-off through
testbed.kill on a real node is used by the e2e race tests."""
import pytest
from ansible.module_utils import pft_ipmi as H
from ansible.module_utils import pft_ipmi_policy as P

from pft_testbed.bmc import BmcFarm
from pft_testbed.ramp import Ramp, trip_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bmc(tmp_path_factory):
    with BmcFarm(1, workdir=str(tmp_path_factory.mktemp("bmcs")), network="127.85.0.0/24") as farm:
        yield farm.bmcs[0]


def test_a_ramp_reaches_the_sensors_own_trip_line_and_pft_reads_it(bmc):
    bmc.reset_sensors()
    spec = bmc.sensor("CPU1 Temp")
    line = trip_line(spec, 5.0)
    assert line == 95
    off = []
    rec = Ramp(lambda v: bmc.set_sensor("CPU1 Temp", v), lambda: off.append(True), rate=5.0, start=80,
               trip=line, period=0.1).run()
    assert off == [True] and rec["trip_value"] == 95
    assert 2.5 < rec["tripped_at"] - rec["started_at"] < 6.0
    values = [v for _, v in rec["readings"]]
    assert values == sorted(values) and values[0] == 80
    # pft reads what the ramp left, with the BMC's own thresholds: past its non-recoverable line
    got = H.run_health([bmc.target()], P.Policy([], use_bmc_thresholds=True), samples=1)
    cpu = got["nodes"][bmc.name]["sensors"]["CPU1 Temp"]
    assert cpu["value"] == 95 and got["nodes"][bmc.name]["verdict"] == "critical"
    bmc.reset_sensors()
