# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the modules ganglia_target_info, spare_reservation and ganglia_metric (in process).

Ganglia is a loopback socket serving generated XML here; tests/integration
runs the same modules against real gmond and through ansible-playbook.
"""
import os
import socket

import ganglia_metric
import ganglia_placement_info
import ganglia_target_info
import pytest
import spare_reservation
from pft_module_run import run_module

XML = b"""<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>
<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">
<CLUSTER NAME="pft" LOCALTIME="1795430001" OWNER="x" LATLONG="x" URL="x">
<HOST NAME="n1" IP="10.0.0.1" REPORTED="1" TN="1" TMAX="20" DMAX="0" GMOND_STARTED="1">
<METRIC NAME="pft_guest_count" VAL="0" TYPE="uint32" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="pft_xen_free_memory_mb" VAL="8192" TYPE="uint32" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="load_one" VAL="0.3" TYPE="float" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="pft_guest_names" VAL="" TYPE="string" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="pft_guest_maxmem_mb" VAL="" TYPE="string" UNITS="MiB" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
</HOST>
<HOST NAME="n2" IP="10.0.0.2" REPORTED="1" TN="1" TMAX="20" DMAX="0" GMOND_STARTED="1">
<METRIC NAME="pft_guest_count" VAL="0" TYPE="uint32" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="pft_xen_free_memory_mb" VAL="8192" TYPE="uint32" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="load_one" VAL="0.1" TYPE="float" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>
</HOST>
</CLUSTER>
</GANGLIA_XML>
"""


@pytest.fixture
def xml_server(xml_replay_server):
    """Loopback server answering every connection with the XML above."""
    xml_replay_server["data"] = XML
    return xml_replay_server


def dead_endpoint():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return "127.0.0.1:%d" % port


def test_target_info_chooses_and_falls_back(xml_server, capsys):
    dead = dead_endpoint()
    result = run_module(ganglia_target_info, {"endpoints": [dead, xml_server["endpoint"]],
                                              "candidates": ["n1", "n2", "n9"], "memory_mb": 4096}, capsys)
    assert result["rc"] == 0 and result["changed"] is False
    assert result["target"] == "n2" and result["accepted"] == ["n2", "n1"] and result["unknown"] == ["n9"]
    assert result["endpoint"] == xml_server["endpoint"] and dead in result["endpoint_errors"][0]
    assert result["ganglia"]["hosts"] == 2


def test_target_info_unreachable_fails_clearly(capsys):
    dead = dead_endpoint()
    result = run_module(ganglia_target_info, {"endpoints": [dead], "candidates": ["n1"], "memory_mb": 1}, capsys)
    assert result["failed"] and result["target"] is None
    assert "Ganglia unreachable" in result["msg"] and dead in result["msg"]


def test_target_info_truncated_xml_fails(xml_server, capsys):
    xml_server["data"] = XML[:300]
    result = run_module(ganglia_target_info, {"endpoints": [xml_server["endpoint"]], "candidates": ["n1"],
                                              "memory_mb": 1}, capsys)
    assert result["failed"] and "truncated" in result["msg"] and xml_server["endpoint"] in result["msg"]


def test_target_info_none_and_fail_on_none(xml_server, capsys):
    args = {"endpoints": [xml_server["endpoint"]], "candidates": ["n1", "n2"], "memory_mb": 999999}
    result = run_module(ganglia_target_info, args, capsys)
    assert result["rc"] == 0 and result["target"] is None and "insufficient_memory: n1, n2" in result["reason"]
    result = run_module(ganglia_target_info, dict(args, fail_on_none=True), capsys)
    assert result["failed"] and "no target" in result["msg"]


def test_target_info_respects_reservations_of_others(xml_server, tmp_path, capsys):
    directory = str(tmp_path / "res")
    run_module(spare_reservation, {"hosts": ["n2"], "owner": "evac-a", "directory": directory}, capsys)
    args = {"endpoints": [xml_server["endpoint"]], "candidates": ["n1", "n2"], "memory_mb": 1,
            "reservation_dir": directory}
    result = run_module(ganglia_target_info, args, capsys)
    assert result["target"] == "n1" and result["rejected"] == {"reserved": ["n2"]}
    assert result["reservations"]["n2"]["owner"] == "evac-a"
    result = run_module(ganglia_target_info, dict(args, reservation_owner="evac-a"), capsys)
    assert result["target"] == "n2"


def test_target_info_bad_parameters(capsys):
    result = run_module(ganglia_target_info, {"endpoints": ["x"], "candidates": [], "memory_mb": -1}, capsys)
    assert result["failed"] and "memory_mb" in result["msg"]
    result = run_module(ganglia_target_info, {"endpoints": ["bad endpoint"], "candidates": ["n1"],
                                              "memory_mb": 1}, capsys)
    assert result["failed"] and "'bad endpoint'" in result["msg"]


def test_spare_reservation_cycle_and_check_mode(tmp_path, capsys):
    directory = str(tmp_path / "res")
    args = {"hosts": ["n1", "n2"], "owner": "evac-a", "directory": directory, "ttl": 60}
    result = run_module(spare_reservation, args, capsys, check_mode=True)
    assert result["changed"] and result["host"] == "n1" and not os.path.exists(directory)
    result = run_module(spare_reservation, args, capsys)
    assert result["changed"] and result["host"] == "n1" and "n1" in result["reservations"]
    result = run_module(spare_reservation, args, capsys)
    assert not result["changed"] and result["host"] == "n1"
    other = run_module(spare_reservation, dict(args, owner="evac-b", hosts=["n1"]), capsys)
    assert other["rc"] == 0 and other["host"] is None and "evac-a" in other["msg"]
    other = run_module(spare_reservation, dict(args, owner="evac-b", hosts=["n1"], fail_on_none=True), capsys)
    assert other["failed"] and "no spare" in other["msg"]
    result = run_module(spare_reservation, {"state": "absent", "owner": "evac-a", "directory": directory},
                        capsys, check_mode=True)
    assert result["changed"] and os.path.exists(os.path.join(directory, "n1.json"))
    result = run_module(spare_reservation, {"state": "absent", "owner": "evac-a", "directory": directory}, capsys)
    assert result["changed"] and result["reservations"] == {}
    result = run_module(spare_reservation, {"state": "reclaimed", "directory": directory}, capsys)
    assert not result["changed"] and result["reclaimed"] == []


def test_spare_reservation_needs_hosts_and_owner(tmp_path, capsys):
    result = run_module(spare_reservation, {"owner": "x", "directory": str(tmp_path)}, capsys)
    assert result["failed"] and "hosts" in result["msg"]
    result = run_module(spare_reservation, {"state": "absent", "directory": str(tmp_path)}, capsys)
    assert result["failed"] and "owner" in result["msg"]


def test_ganglia_metric_check_mode_runs_nothing(tmp_path, capsys):
    conf = tmp_path / "gmond.conf"
    conf.write_text("/* not used in check mode */\n")
    result = run_module(ganglia_metric, {"guests": ["vm1"], "xen_free_memory_mb": 2048, "config": str(conf),
                                         "gmetric_path": "/nonexistent/gmetric"}, capsys, check_mode=True)
    assert result["rc"] == 0 and result["published"] is False and result["changed"] is False
    assert [m["name"] for m in result["metrics"]] == ["pft_guest_count", "pft_guest_names",
                                                      "pft_xen_free_memory_mb"]
    assert result["metrics"][0]["argv"][:3] == ["/nonexistent/gmetric", "-c", str(conf)]


def test_ganglia_metric_errors_name_the_fault(tmp_path, capsys):
    result = run_module(ganglia_metric, {"guests": [], "config": str(tmp_path / "missing.conf")}, capsys)
    assert result["failed"] and "missing.conf" in result["msg"]
    conf = tmp_path / "gmond.conf"
    conf.write_text("\n")
    result = run_module(ganglia_metric, {"metrics": [{"name": "m", "value": "x", "type": "uint32"}],
                                         "config": str(conf)}, capsys, check_mode=True)
    assert result["failed"] and "metric m" in result["msg"]


def test_placement_info_reads_each_nodes_guests(xml_server, capsys):
    result = run_module(ganglia_placement_info, {"endpoints": [xml_server["endpoint"]],
                                                 "nodes": ["n1", "n2", "n9"]}, capsys, check_mode=True)
    assert result["rc"] == 0 and result["changed"] is False
    assert result["guests"] == {"n1": [], "n2": None, "n9": None} and result["maxmem_mb"] == {"n1": {}}
    assert "pft_guest_names not published" in result["unknown"]["n2"]
    assert result["unknown"]["n9"] == "not known to Ganglia"
    assert result["endpoint"] == xml_server["endpoint"]


def test_placement_info_fails_naming_the_endpoints(capsys):
    dead = dead_endpoint()
    result = run_module(ganglia_placement_info, {"endpoints": [dead], "nodes": ["n1"]}, capsys)
    assert result["failed"] and dead in result["msg"]
    result = run_module(ganglia_placement_info, {"endpoints": [dead], "nodes": ["n1"], "timeout": 0}, capsys)
    assert result["failed"] and "timeout" in result["msg"]


def test_ganglia_metric_publishes_guest_memory(tmp_path, capsys):
    conf = tmp_path / "gmond.conf"
    conf.write_text("\n")
    result = run_module(ganglia_metric, {"guests": ["vm1"], "guest_memory_mb": {"vm1": 160}, "config": str(conf)},
                        capsys, check_mode=True)
    assert result["rc"] == 0
    assert [(m["name"], m["value"]) for m in result["metrics"]] == [
        ("pft_guest_count", "1"), ("pft_guest_names", "vm1"), ("pft_guest_maxmem_mb", "vm1=160")]
    result = run_module(ganglia_metric, {"guests": ["vm1"], "guest_memory_mb": {"vm2": 160}, "config": str(conf)},
                        capsys, check_mode=True)
    assert result["failed"] and "vm2" in result["msg"]
    result = run_module(ganglia_metric, {"guest_memory_mb": {"vm1": "lots"}, "config": str(conf)},
                        capsys, check_mode=True)
    assert result["failed"] and "vm1" in result["msg"] and "lots" in result["msg"]
