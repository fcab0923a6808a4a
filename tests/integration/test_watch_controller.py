"""playbooks/watch.yml's controller half against real ipmi_sim BMCs on loopback.

The compute nodes here are inventory entries on the controller itself with no Xen, so the
watch cannot list their guests: this tests steps 1-2 and 6 for real (health over RMCP+, the
decision, hysteresis, unknown handling, the verdict history, the alerts, which arrive on a
real unix datagram socket in syslog format) and that nothing is migrated when a node cannot be
asked. Migration itself is tested on the testbed (tests/e2e/test_watch.py).
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from pft_paths import REPO
from pft_syslog import SyslogSink
from pft_testbed.bmc import BmcFarm

pytestmark = pytest.mark.integration

POLICY = [
    {"name": "CPU* Temp", "upper_warning": 75, "upper_critical": 85},
    {"type": "Fan", "lower_warning": 900, "lower_critical": 600},
]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with BmcFarm(3, workdir=str(tmp_path_factory.mktemp("bmcs")), network="127.83.0.0/24", prefix="c") as f:
        yield f


@pytest.fixture()
def site(farm, tmp_path):
    for b in farm.bmcs:
        b.resume()
        b.reset_sensors()
    state = tmp_path / "state"
    log = SyslogSink(str(tmp_path / "log.sock"))
    compute = {b.name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                        "bmc_address": b.address, "bmc_port": b.port, "bmc_username": b.username,
                        "bmc_password": b.password} for b in farm.bmcs}
    inv = {"all": {
        "vars": {"pft_health_policy": POLICY, "pft_state_dir": str(state),
                 "pft_alert_syslog_socket": log.path, "pft_ganglia_endpoints": ["127.0.0.1:9"],
                 "pft_watch_interval": 0.5, "pft_health_hysteresis": 2, "pft_health_timeout": 2},
        "children": {"head": {"hosts": {"head": {"ansible_connection": "local", "ansible_host": "127.0.0.1",
                                                 "ansible_python_interpreter": sys.executable}}},
                     "compute": {"hosts": compute},
                     "spares": {"hosts": {farm.bmcs[-1].name: {}}}}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    yield {"inventory": str(path), "state": str(state), "syslog": log, "bmcs": farm.bmcs}
    log.close()


def watch(site, window, *extra):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", site["inventory"],
            os.path.join(REPO, "playbooks", "watch.yml"), "-e", "pft_watch_window=%s" % window] + list(extra)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return " ".join(proc.stdout.split()), time.monotonic() - started    # the yaml callback folds lines


def history(site, node):
    with open(os.path.join(site["state"], "watch-state.json")) as fh:
        return json.load(fh)["nodes"][node]["history"]


def test_healthy_cluster_no_action_no_alert(site):
    out, _ = watch(site, 2)
    for b in site["bmcs"]:
        assert "%s: ok -> none" % b.name in out
        assert history(site, b.name)[-1]["verdict"] == "ok"
    assert site["syslog"].drain() == []
    assert not os.path.exists(os.path.join(site["state"], "audit.jsonl"))


def test_spike_shorter_than_hysteresis_is_ignored(site):
    b = site["bmcs"][0]

    def spike():
        time.sleep(4)          # well inside the window, after ansible-playbook started sampling
        b.set_sensor("CPU1 Temp", 95)
        time.sleep(0.3)        # shorter than one 0.5 s interval: at most one sample sees it
        b.set_sensor("CPU1 Temp", 45)
    t = threading.Thread(target=spike)
    t.start()
    out, _ = watch(site, 8)
    t.join()
    assert "%s: ok -> none" % b.name in out
    assert site["syslog"].drain() == []


def test_unreachable_bmc_is_unknown_alerted_never_evacuated(site):
    b = site["bmcs"][1]
    b.pause()
    try:
        out, _ = watch(site, 2)
    finally:
        b.resume()
    assert "%s: unknown -> alert" % b.name in out
    msgs = site["syslog"].drain()
    assert any("pft: %s is unknown" % b.name in m for m in msgs), msgs
    assert all(m.startswith("<12>") or "warning" in m for m in msgs)      # LOG_USER|LOG_WARNING
    assert "pft_work_sources" not in out or "skipping: no hosts matched" in out
    assert not os.path.exists(os.path.join(site["state"], "journal")) or \
        os.listdir(os.path.join(site["state"], "journal")) == []
    # unchanged next minute: no second alert
    b.pause()
    try:
        watch(site, 1)
    finally:
        b.resume()
    assert site["syslog"].drain() == []


def test_critical_stops_the_window_early_and_alerts(site):
    b = site["bmcs"][0]
    b.set_sensor("CPU1 Temp", 92)
    out, _ = watch(site, 40)
    assert "stopped early: %s;" % b.name in out          # returns as soon as the node is confirmed bad
    assert "%s: critical -> evacuate" % b.name in out
    msgs = site["syslog"].drain()
    assert any(("pft: %s is critical" % b.name) in m and "92" in m for m in msgs), msgs
    # no Xen on these nodes: their guests cannot be listed, so nothing is moved, and it says so
    assert any("cannot move the guests of %s" % b.name in m for m in msgs), msgs
    assert history(site, b.name)[-1]["verdict"] == "critical"


def test_check_mode_records_nothing(site):
    out, _ = watch(site, 1, "--check")
    assert not os.path.exists(os.path.join(site["state"], "watch-state.json"))
