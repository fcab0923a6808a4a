# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Migration-target selection against real gmond (Debian ganglia-monitor 3.7.2).

Loopback: one gmond per test with its own config and ports; hosts are simulated
with ``gmetric -S ip:name`` (pft_testbed.gmond). Namespaces: three gmonds on a
bridge exchanging multicast, each publishing its own metrics.
"""
import json
import multiprocessing
import os
import subprocess
import time

import pytest
from ansible.module_utils.pft_ganglia import (
    Criteria,
    GangliaUnreachable,
    GangliaXMLError,
    guest_placement,
    parse_xml,
    rank_targets,
    read_ganglia,
)
from ansible.module_utils.pft_ganglia_publish import pft_node_metrics, publish_metrics
from ansible.module_utils.pft_reservation import ReservationStore
from pft_paths import REPO

from pft_testbed.gmond import Gmond, GmondNamespaceCluster, SimHost

pytestmark = pytest.mark.integration

TRUST = Criteria()


@pytest.fixture
def gmond(tmp_path):
    g = Gmond(workdir=str(tmp_path / "gmond"), host_tmax=20)
    g.start()
    yield g
    g.close()


def wait_published(g, hosts, metric=None):
    g.wait_for_hosts([h.name for h in hosts], metric=metric, timeout=10)


# -- one gmond, every rejection reason -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """A real gmond (host_tmax=1) holding a host for every reason, ranked once.

    Timeline: t0 publish 'down' (metrics TMAX 60) and 'stale' (metrics TMAX 1); t0+5.5 s spoof a heartbeat
    for 'stale' (host fresh, metrics TN 5 > 2 x 1) and publish every other host fresh. 'down' then has
    host TN >= 5 > 4 x TMAX 1.
    """
    work = tmp_path_factory.mktemp("scenario")
    g = Gmond(workdir=str(work / "gmond"), host_tmax=1, host_dmax=600)
    g.start()
    try:
        down = SimHost("down", "10.77.1.1", load=0.0)
        stale = SimHost("stale", "10.77.1.2", load=0.0)
        g.publish([down])
        g.publish([stale], tmax=1)
        wait_published(g, [down, stale], metric="load_one")
        time.sleep(5.5)
        subprocess.run(g.gmetric_argv(None, None, spoof="10.77.1.2:stale", heartbeat=True), check=True, timeout=10)
        fresh = [
            SimHost("best", "10.77.1.10", load=0.10, xen_free_mb=8192),
            SimHost("second", "10.77.1.11", load=0.20, xen_free_mb=65536),
            SimHost("guest", "10.77.1.12", load=0.00, guests=["vm7"]),
            SimHost("lowmem", "10.77.1.13", load=0.00, xen_free_mb=1024),
            SimHost("noload", "10.77.1.14", load=None),
            SimHost("excl", "10.77.1.15", load=0.0),
            SimHost("src", "10.77.1.16", load=0.0, guests=["vm1"]),
            SimHost("sick", "10.77.1.17", load=0.0),
            SimHost("taken", "10.77.1.18", load=0.0),
        ]
        g.publish(fresh)
        wait_published(g, fresh, metric=None)
        g.wait_for(lambda xml: xml.count(b'NAME="pft_guest_count"') >= 11, what="all metrics")
        store = ReservationStore(str(work / "res"))
        assert store.reserve(["taken"], "evacuate-other", ttl=300)["host"] == "taken"
        reserved = {h: r.owner for h, r in store.active().items()}
        snapshot, endpoint, errors = read_ganglia([g.endpoint], timeout=5)
        names = [h.name for h in fresh] + ["down", "stale", "ghost"]
        health = {"nodes": {n: {"verdict": "critical" if n == "sick" else "ok"} for n in names}}
        result = rank_targets(snapshot, names, source="src", memory_mb=4096, exclude=["excl"], reserved=reserved,
                              health=health, criteria=TRUST)
        yield {"result": result, "snapshot": snapshot, "names": names, "health": health, "reserved": reserved,
               "by_host": {e["host"]: e for e in result["ranking"]}}
    finally:
        g.close()


def test_best_target_is_chosen(scenario):
    result = scenario["result"]
    assert result["target"] == "best", result["reason"]
    assert result["accepted"] == ["best", "second"]
    assert scenario["by_host"]["best"]["load"] == pytest.approx(0.1)
    assert scenario["by_host"]["best"]["free_memory_mb"] == 8192


@pytest.mark.parametrize("host,reason", [
    ("ghost", "unknown_to_ganglia"), ("src", "is_source"), ("excl", "excluded"), ("taken", "reserved"),
    ("sick", "unhealthy"), ("down", "down"), ("stale", "stale"), ("noload", "missing_metric"),
    ("guest", "hosts_guest"), ("lowmem", "insufficient_memory"),
])
def test_each_rejection_reason_on_real_gmond(scenario, host, reason):
    entry = scenario["by_host"][host]
    assert entry["accepted"] is False
    assert entry["reason"] == reason, entry
    assert host in scenario["result"]["rejected"][reason]


def test_down_host_has_stale_tn_but_fresh_metrics(scenario):
    """'down' is rejected on the host rule alone: its metrics (TMAX 60) are not stale."""
    host = scenario["snapshot"].hosts["down"]
    assert host.tn > 4 * host.tmax
    assert scenario["by_host"]["down"]["reasons"] == ["down"]
    assert scenario["by_host"]["stale"]["reasons"] == ["stale"]


def test_unknown_candidates_are_reported(scenario):
    assert scenario["result"]["unknown"] == ["ghost"]


def test_all_rejected_gives_none_with_reasons(scenario):
    names = [n for n in scenario["names"] if n not in ("best", "second")]
    result = rank_targets(scenario["snapshot"], names, source="src", memory_mb=4096, exclude=["excl"],
                          reserved=scenario["reserved"], health=scenario["health"], criteria=TRUST)
    assert result["target"] is None and result["accepted"] == []
    assert result["reason"].startswith("no target: all %d candidate(s) rejected" % len(names))
    for reason in ("unknown_to_ganglia", "is_source", "excluded", "reserved", "unhealthy", "down", "stale",
                   "missing_metric", "hosts_guest", "insufficient_memory"):
        assert reason in result["reason"]


# -- Ganglia down, fallback, bad XML ---------------------------------------------------------------------------------
def test_ganglia_down_is_a_clear_failure(tmp_path):
    g = Gmond(workdir=str(tmp_path / "g"))
    g.start()
    g.publish([SimHost("n1", "10.77.2.1")])
    g.stop()
    with pytest.raises(GangliaUnreachable) as err:
        read_ganglia([g.endpoint], timeout=2)
    assert "Ganglia unreachable" in str(err.value) and g.endpoint in str(err.value)
    g.close()


def test_endpoint_fallback_from_stopped_to_live_gmond(tmp_path, gmond):
    dead = Gmond(workdir=str(tmp_path / "dead"))
    dead.start()
    dead.stop()
    gmond.publish([SimHost("n1", "10.77.3.1")])
    wait_published(gmond, [SimHost("n1", "10.77.3.1")], metric="load_one")
    snapshot, used, errors = read_ganglia([dead.endpoint, gmond.endpoint], timeout=2)
    assert used == gmond.endpoint and "n1" in snapshot.hosts
    assert len(errors) == 1 and dead.endpoint in errors[0]
    dead.close()


@pytest.mark.parametrize("mangle,needle", [
    (lambda x: x[: len(x) * 2 // 3], "truncated"),
    (lambda x: x.replace(b"</HOST>", b"</HOTS>", 1), "malformed"),
    (lambda x: x.replace(b"<GANGLIA_XML", b"<NOT_GANGLIA", 1).replace(b"</GANGLIA_XML>", b"</NOT_GANGLIA>"),
     "not GANGLIA_XML"),
])
def test_truncated_or_malformed_xml_from_real_gmond(gmond, xml_replay_server, mangle, needle):
    hosts = [SimHost("n%d" % i, "10.77.4.%d" % i) for i in range(1, 6)]
    gmond.publish(hosts)
    real = wait_published(gmond, hosts, metric="load_one") or gmond.read_xml()
    real = gmond.read_xml()
    assert parse_xml(real).hosts  # the real XML itself is fine
    xml_replay_server["data"] = mangle(real)
    with pytest.raises(GangliaXMLError) as err:
        read_ganglia([xml_replay_server["endpoint"]], timeout=2)
    assert needle in str(err.value) and xml_replay_server["endpoint"] in str(err.value)


# -- publishing with gmetric -----------------------------------------------------------------------------------------
def test_publish_pft_metrics_with_gmetric(gmond):
    metrics = pft_node_metrics(guests=["vm-a", "vm-b"], xen_free_memory_mb=3072, tmax=30)
    published = publish_metrics(metrics, config=gmond.config_path, timeout=10)
    assert [p["name"] for p in published] == ["pft_guest_count", "pft_guest_names", "pft_xen_free_memory_mb"]
    gmond.wait_for(lambda xml: b'NAME="pft_xen_free_memory_mb"' in xml, what="published metrics")
    host = parse_xml(gmond.read_xml()).hosts[gmond.hostname]
    assert host.metrics["pft_guest_count"].val == "2"
    assert host.metrics["pft_guest_names"].val == "vm-a,vm-b"
    assert host.metrics["pft_xen_free_memory_mb"].number() == 3072
    assert host.metrics["pft_xen_free_memory_mb"].tmax == 30


def test_placement_from_the_metrics_a_node_publishes(gmond):
    """What the watch reads: a node publishes its guests with their memory through real gmetric (as
    pft-xen-metrics does), and guest_placement reads them back from real gmond's XML."""
    metrics = pft_node_metrics(guests=["guest2", "guest1"], guest_memory_mb={"guest1": 160, "guest2": 256},
                               xen_free_memory_mb=512, tmax=30)
    publish_metrics(metrics, config=gmond.config_path, timeout=10)
    gmond.wait_for(lambda xml: b'NAME="pft_guest_maxmem_mb"' in xml and b'NAME="pft_guest_names"' in xml,
                   what="published placement")
    snapshot, endpoint, _ = read_ganglia([gmond.endpoint], timeout=5)
    placement, unknown = guest_placement(snapshot, [gmond.hostname, "nosuchnode"])
    assert placement[gmond.hostname] == [{"name": "guest1", "maxmem_mb": 160}, {"name": "guest2", "maxmem_mb": 256}]
    assert placement["nosuchnode"] is None and unknown == {"nosuchnode": "not known to Ganglia"}


# -- concurrency: parallel processes ---------------------------------------------------------------------------------
def _evacuate(args):
    """One evacuation in its own process: read real Ganglia, rank, reserve."""
    endpoint, directory, source, candidates = args
    owner = "evacuate-%s" % source
    store = ReservationStore(directory)
    reserved = {h: r.owner for h, r in store.active().items() if r.owner != owner}
    snapshot, _, _ = read_ganglia([endpoint], timeout=5)
    ranking = rank_targets(snapshot, candidates, source=source, memory_mb=2048, reserved=reserved, criteria=TRUST)
    out = store.reserve(ranking["accepted"], owner, ttl=300)
    return source, out["host"], out["reason"]


def _pool(n):
    # fork: the children inherit the test process's import paths (plugins/module_utils, testbed).
    return multiprocessing.get_context("fork").Pool(n)


def test_concurrent_selections_never_collide(gmond, tmp_path):
    spares = [SimHost("spare%d" % i, "10.77.5.%d" % i, load=0.1 * i) for i in range(1, 4)]
    failing = [SimHost("bad%d" % i, "10.77.6.%d" % i, guests=["vm%d" % i]) for i in range(1, 9)]
    gmond.publish(spares + failing)
    wait_published(gmond, spares + failing, metric="load_one")
    candidates = [h.name for h in spares + failing]
    directory = str(tmp_path / "res")
    with _pool(8) as pool:
        results = pool.map(_evacuate, [(gmond.endpoint, directory, h.name, candidates) for h in failing])
    got = [host for _, host, _ in results if host]
    assert sorted(got) == ["spare1", "spare2", "spare3"], results  # every spare once, none twice
    losers = [reason for _, host, reason in results if host is None]
    assert len(losers) == 5 and all(r.startswith("no spare") for r in losers)
    assert sorted(ReservationStore(directory).active()) == ["spare1", "spare2", "spare3"]


def test_double_failure_one_spare(gmond, tmp_path):
    hosts = [SimHost("spare", "10.77.7.1", load=0.5), SimHost("fail1", "10.77.7.2", guests=["a"]),
             SimHost("fail2", "10.77.7.3", guests=["b"])]
    gmond.publish(hosts)
    wait_published(gmond, hosts, metric="load_one")
    directory = str(tmp_path / "res")
    with _pool(2) as pool:
        results = sorted(pool.map(_evacuate, [(gmond.endpoint, directory, s, ["spare", "fail1", "fail2"])
                                              for s in ("fail1", "fail2")]), key=lambda r: r[1] is None)
    assert results[0][1] == "spare"
    assert results[1][1] is None and "no spare" in results[1][2]
    store = ReservationStore(directory)
    winner = "evacuate-%s" % results[0][0]
    assert store.release(owner=winner)["changed"]
    assert store.active() == {}


# -- through ansible-playbook ----------------------------------------------------------------------------------------
def _playbook(gmond, tmp_path, extra_args=()):
    out = tmp_path / "out.json"
    extra = {"pft_test_endpoints": [gmond.endpoint], "pft_test_candidates": ["spare1", "spare2", "spare3", "busy"],
             "pft_test_source": "busy", "pft_test_gmond_conf": gmond.config_path,
             "pft_test_reservation_dir": str(tmp_path / "res"), "pft_test_out": str(out)}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=%s" % os.path.join(REPO, ".venv", "bin", "python"),
            "-e", json.dumps(extra), *extra_args,
            os.path.join(REPO, "tests", "integration", "playbooks", "ganglia_target.yml")]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_playbook_selects_reserves_and_releases(gmond, tmp_path):
    gmond.publish([SimHost("spare1", "10.77.0.1", load=0.3), SimHost("spare2", "10.77.0.2", load=0.2),
                   SimHost("busy", "10.77.0.9", guests=["mpi-rank-0"])])
    wait_published(gmond, [SimHost("spare1", "x"), SimHost("spare2", "x"), SimHost("busy", "x")], metric="load_one")
    res, _ = _playbook(gmond, tmp_path)
    # spare3 was published by the play itself with ganglia_metric (gmetric -S) and has the lowest load.
    assert res["published"]["published"] is True
    assert res["target"]["target"] == "spare3", res["target"]["reason"]
    assert res["target"]["accepted"] == ["spare3", "spare2", "spare1"]
    assert res["target"]["rejected"] == {"is_source": ["busy"], "hosts_guest": ["busy"]}
    assert res["a"]["host"] == "spare3" and res["a"]["changed"] is True
    assert res["b"]["host"] is None and "no spare" in res["b"]["msg"] and "evacuate-a" in res["b"]["msg"]
    assert res["target_b"]["target"] == "spare2" and res["target_b"]["rejected"]["reserved"] == ["spare3"]
    assert [r["host"] for r in res["release"]["released"]] == ["spare3"]
    assert ReservationStore(str(tmp_path / "res")).list() == []


def test_playbook_check_mode_predicts_and_writes_nothing(gmond, tmp_path):
    gmond.publish([SimHost("spare1", "10.77.0.1", load=0.3), SimHost("busy", "10.77.0.9", guests=["g"])])
    wait_published(gmond, [SimHost("spare1", "x"), SimHost("busy", "x")], metric="load_one")
    res, _ = _playbook(gmond, tmp_path, ["--check"])
    assert res["published"]["published"] is False  # gmetric not run in check mode
    assert res["target"]["target"] == "spare1"
    assert res["a"]["host"] == "spare1" and res["a"]["changed"] is True
    assert res["b"]["host"] == "spare1"  # A wrote nothing, so B's prediction is the same host
    assert not os.path.exists(str(tmp_path / "res"))
    assert b"spare3" not in gmond.read_xml()


# -- several gmonds in network namespaces, multicast -----------------------------------------------------------------
def _republish(cluster, names, loads):
    for name in names:
        cluster.publish(name, SimHost(name, "", load=loads[name], xen_free_mb=8192,
                                      guests=["mpi-0"] if name == "cn1" else []), tmax=2)


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_multicast_namespaces_down_node_and_injected_resurrection(tmp_path):
    """Four gmonds in namespaces on a bridge, multicast 239.2.11.71, each publishing its own metrics (TMAX 2 s)."""
    with GmondNamespaceCluster(("cn1", "cn2", "cn3", "cn4"), host_tmax=1, workdir=str(tmp_path / "ns")) as cluster:
        loads = {"cn1": 0.9, "cn2": 0.4, "cn3": 0.2, "cn4": 0.1}
        names = list(cluster.names)
        _republish(cluster, names, loads)
        cluster.wait_converged(metric="load_one", timeout=30)
        endpoints = cluster.endpoints()
        # Every node's XML lists every node with the values each node published itself.
        for endpoint in endpoints:
            snapshot, _, _ = read_ganglia([endpoint], timeout=5)
            assert set(names) <= set(snapshot.hosts)
            assert snapshot.hosts["cn3"].metrics["load_one"].number() == pytest.approx(0.2)
            assert snapshot.hosts["cn3"].ip == cluster.nodes["cn3"].ip
        result = rank_targets(read_ganglia(endpoints, timeout=5)[0], names, source="cn1", memory_mb=4096)
        assert result["target"] == "cn4" and result["accepted"] == ["cn4", "cn3", "cn2"], result["reason"]

        # cn4's gmond dies: the others keep its host, TN climbing, until TN > 4 x TMAX.
        cluster.nodes["cn4"].gmond.kill()
        live = ["cn1", "cn2", "cn3"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _republish(cluster, live, loads)
            snapshot = read_ganglia([cluster.nodes["cn2"].endpoint], timeout=5)[0]
            if snapshot.hosts["cn4"].is_down():
                break
            time.sleep(0.5)
        result = rank_targets(snapshot, names, source="cn1", memory_mb=4096)
        by = {e["host"]: e for e in result["ranking"]}
        assert by["cn4"]["reason"] == "down", by["cn4"]
        assert result["target"] == "cn3"

        # Another node injects a metric for dead cn4 (gmetric -S): gmond resets cn4's host TN, so by
        # Ganglia's rule cn4 is alive again (PR#189). cn4's own metrics are stale, so it stays rejected.
        cn2 = cluster.nodes["cn2"].gmond
        subprocess.run(cn2.gmetric_argv("ipmi_cpu_temp", 41, spoof="%s:cn4" % cluster.nodes["cn4"].ip),
                       check=True, timeout=10)
        cn2.wait_for(lambda xml: b'NAME="ipmi_cpu_temp"' in xml, what="injected cn4 metric")
        _republish(cluster, live, loads)
        snapshot = read_ganglia([cluster.nodes["cn2"].endpoint], timeout=5)[0]
        assert not snapshot.hosts["cn4"].is_down()
        result = rank_targets(snapshot, names, source="cn1", memory_mb=4096)
        by = {e["host"]: e for e in result["ranking"]}
        assert by["cn4"]["reasons"] == ["stale"], by["cn4"]
        assert result["target"] == "cn3"
    assert cluster.bridge not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not any(ns.startswith("pft-%s-" % cluster.tag)
                   for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
