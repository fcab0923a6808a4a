# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_ganglia_publish: gmetric argv, metric checks, the node metrics, publishing."""
import pytest
from ansible.module_utils.pft_ganglia_publish import (
    GangliaError,
    format_guest_memory,
    gmetric_argv,
    parse_guest_memory,
    pft_node_metrics,
    publish_metrics,
    run_argv,
    validate_metric,
)


# -- gmetric ----------------------------------------------------------------
def test_gmetric_argv_is_a_list_with_every_field():
    argv = gmetric_argv({"name": "pft_guest_count", "value": 2, "type": "uint32", "units": "guests", "tmax": 60,
                         "dmax": 0, "group": "pft", "spoof": "10.0.0.1:n1"}, config="/etc/g.conf")
    assert argv == ["gmetric", "-c", "/etc/g.conf", "-n", "pft_guest_count", "-v", "2", "-t", "uint32", "-u",
                    "guests", "-s", "both", "-x", "60", "-d", "0", "-g", "pft", "-S", "10.0.0.1:n1"]


@pytest.mark.parametrize("spec,needle", [
    ({"name": "bad name", "value": 1}, "metric name"),
    ({"name": "m", "value": "x", "type": "uint32"}, "not a number"),
    ({"name": "m", "value": 1.5, "type": "int32"}, "not an integer"),
    ({"name": "m", "value": -1, "type": "uint32"}, "negative"),
    ({"name": "m", "value": "a\nb"}, "newline"),
    ({"name": "m", "value": None}, "missing"),
    ({"name": "m", "value": 1, "type": "long"}, "type"),
    ({"name": "m", "value": 1, "spoof": "nocolon"}, "spoof"),
    ({"name": "m", "value": 1, "tmax": -5}, "tmax"),
])
def test_validate_metric_names_the_fault(spec, needle):
    with pytest.raises(GangliaError) as err:
        validate_metric(spec)
    assert needle in str(err.value)


def test_pft_node_metrics():
    metrics = pft_node_metrics(guests=["vm1", "vm2"], xen_free_memory_mb=3072.0, tmax=30)
    assert [(m["name"], m["value"]) for m in metrics] == [
        ("pft_guest_count", 2), ("pft_guest_names", "vm1,vm2"), ("pft_xen_free_memory_mb", 3072)]
    assert pft_node_metrics(guests=[])[1]["value"] == ""


def test_publish_metrics_stops_at_first_failure_naming_metric():
    calls = []

    def runner(argv, timeout):
        calls.append(argv)
        return (1, "", "send failed") if "m2" in argv else (0, "", "")
    with pytest.raises(GangliaError) as err:
        publish_metrics([{"name": "m1", "value": 1}, {"name": "m2", "value": 2}, {"name": "m3", "value": 3}],
                        runner=runner)
    assert "m2" in str(err.value) and "send failed" in str(err.value) and len(calls) == 2


def test_publish_metrics_timeout_is_reported():
    with pytest.raises(GangliaError) as err:
        publish_metrics([{"name": "m1", "value": 1}], gmetric="sleep", timeout=0.2,
                        runner=lambda argv, timeout: run_argv(["sleep", "5"], timeout))
    assert "timed out" in str(err.value)


def test_run_argv_missing_binary_and_output(tmp_path):
    missing = str(tmp_path / "no-gmetric")
    with pytest.raises(GangliaError) as err:
        run_argv([missing, "-n", "m"], 5)
    assert str(err.value) == "cannot run %s: No such file or directory" % missing
    assert run_argv(["sh", "-c", "echo out; echo err >&2; exit 3"], 30) == (3, "out\n", "err\n")


def test_the_reader_shares_the_error_and_the_metric_names():
    from ansible.module_utils import pft_ganglia, pft_ganglia_publish
    assert pft_ganglia.GangliaError is pft_ganglia_publish.GangliaError
    assert issubclass(pft_ganglia.GangliaUnreachable, pft_ganglia_publish.GangliaError)
    assert pft_ganglia.Criteria().guest_metric == pft_ganglia_publish.DEFAULT_GUEST_METRIC
    assert pft_ganglia.parse_guest_memory is pft_ganglia_publish.parse_guest_memory


# -- the guests' memory metric ------------------------------------------------
def test_guest_memory_round_trip_and_bad_values():
    assert format_guest_memory({"g2": 256, "g1": 160}) == "g1=160,g2=256"
    assert format_guest_memory({}) == ""
    assert parse_guest_memory("g1=160,g2=256") == {"g1": 160, "g2": 256}
    assert parse_guest_memory("") == {}
    for bad in ("g1", "g1=", "g1=-5", "g1=1.5", "a b=1", "g1=160;id"):
        with pytest.raises(GangliaError) as err:
            parse_guest_memory(bad, origin="metric m of n1")
        assert "metric m of n1" in str(err.value)
    for bad in ({"g 1": 1}, {"g1": -1}, {"g1": "160"}, {"g1": True}):
        with pytest.raises(GangliaError):
            format_guest_memory(bad)


def test_node_metrics_with_guest_memory_must_name_the_same_guests():
    metrics = pft_node_metrics(guests=["g1"], guest_memory_mb={"g1": 160}, xen_free_memory_mb=1)
    assert [(m["name"], m["value"]) for m in metrics] == [
        ("pft_guest_count", 1), ("pft_guest_names", "g1"), ("pft_guest_maxmem_mb", "g1=160"),
        ("pft_xen_free_memory_mb", 1)]
    with pytest.raises(GangliaError) as err:
        pft_node_metrics(guests=["g1", "g2"], guest_memory_mb={"g1": 160})
    assert "g1" in str(err.value) and "g1,g2" in str(err.value)
