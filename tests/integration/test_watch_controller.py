# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/watch.yml's controller half against real ipmi_sim BMCs on loopback.

The compute nodes here are inventory entries on the controller itself with no Xen, so the
watch cannot list their guests: this tests steps 1-2 and 6 for real (health over RMCP+, the
decision, hysteresis, unknown handling, the verdict history, the alerts, which arrive on a
real unix datagram socket in syslog format) and that nothing is migrated when a node cannot be
asked. Migration itself is tested on the testbed (tests/e2e/test_watch.py).
"""
import json
import os
import signal
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


def watch(site, window, *extra, rc=0):
    """Run watch.yml; returns (folded output, seconds). ``rc`` is the exit code it must have (None: any)."""
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", site["inventory"],
            os.path.join(REPO, "playbooks", "watch.yml"), "-e", "pft_watch_window=%s" % window] + list(extra)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    if rc is not None:
        assert (proc.returncode == 0) == (rc == 0), proc.stdout[-4000:] + proc.stderr[-2000:]
    return " ".join(proc.stdout.split()), time.monotonic() - started    # the yaml callback folds lines


ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")


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


# -- the watch fails loudly (issue 27) ---------------------------------------------------------------
def failure_alerts(site):
    return [m for m in site["syslog"].drain() if "pft watch failed at step" in m]


def test_corrupt_reservation_file_alerts_names_the_file_and_fails(site):
    b = site["bmcs"][0]
    rdir = os.path.join(site["state"], "reservations")
    os.makedirs(rdir)
    bad = os.path.join(rdir, "c9.json")
    with open(bad, "w") as fh:
        fh.write('{"host": "c9", "own')                       # a torn write
    b.set_sensor("CPU1 Temp", 92)
    out, _ = watch(site, 10, rc=1)
    alerts = failure_alerts(site)
    assert len(alerts) == 1 and bad in alerts[0] and "Decide" in alerts[0], alerts
    assert "<10>" in alerts[0][:5]                           # LOG_USER|LOG_CRIT
    assert bad in out


@pytest.fixture()
def small_fs(tmp_path):
    """A tmpfs of the given options mounted on a fresh directory (root ignores chmod: a read-only
    mount is the unwritable state directory); unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(options):
        path = tmp_path / ("fs%d" % len(mounts))
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "pft-test", str(path)], check=True)
        mounts.append(str(path))
        return str(path)
    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", path], check=False)


def test_full_state_directory_alerts_and_fails(site, small_fs):
    state = small_fs("size=64k,mode=0750")
    fd = os.open(os.path.join(state, "filler"), os.O_WRONLY | os.O_CREAT)     # fill it to the last byte
    try:
        while os.write(fd, b"x" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    out, _ = watch(site, 2, "-e", "pft_state_dir=%s" % state, rc=1)
    alerts = failure_alerts(site)
    assert len(alerts) == 1 and state in alerts[0] and "No space left on device" in alerts[0], alerts


def test_read_only_state_directory_alerts_and_fails(site, small_fs):
    state = small_fs("size=64k,ro")
    out, _ = watch(site, 2, "-e", "pft_state_dir=%s" % state, rc=1)
    alerts = failure_alerts(site)
    assert len(alerts) == 1 and state in alerts[0] and "Read-only file system" in alerts[0], alerts


def test_host_without_bmc_address_is_unknown_by_name_and_the_others_are_watched(site, tmp_path):
    inv = yaml.safe_load(open(site["inventory"]))
    hosts = inv["all"]["children"]["compute"]["hosts"]
    broken = sorted(hosts)[1]
    del hosts[broken]["bmc_address"]
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(inv))
    hot = site["bmcs"][0]
    hot.set_sensor("CPU1 Temp", 92)
    out, _ = watch(dict(site, inventory=str(path)), 10)
    assert "%s: unknown -> alert" % broken in out and "bmc_address" in out
    assert "%s: critical -> evacuate" % hot.name in out          # the others are still watched
    msgs = site["syslog"].drain()
    assert any("pft: %s is unknown" % broken in m and "bmc_address" in m for m in msgs), msgs


def test_two_hosts_with_one_bmc_are_refused_by_name(site, tmp_path):
    inv = yaml.safe_load(open(site["inventory"]))
    hosts = inv["all"]["children"]["compute"]["hosts"]
    first, second = sorted(hosts)[:2]
    hosts[second]["bmc_address"] = hosts[first]["bmc_address"]
    hosts[second]["bmc_port"] = hosts[first]["bmc_port"]
    path = tmp_path / "dup.yml"
    path.write_text(yaml.safe_dump(inv))
    out, _ = watch(dict(site, inventory=str(path)), 2)
    for node in (first, second):
        assert "%s: unknown -> alert" % node in out
    msgs = " ".join(site["syslog"].drain())
    assert first in msgs and second in msgs and hosts[first]["bmc_address"] in msgs


def test_an_alert_not_sent_is_sent_by_the_next_run(site):
    b = site["bmcs"][1]
    b.pause()
    try:
        watch(site, 2, "-e", "pft_alert_syslog_socket=%s" % os.path.join(site["state"], "nobody-listens"))
        assert site["syslog"].drain() == []                    # the first run could not send it
        watch(site, 2)
    finally:
        b.resume()
    assert any("pft: %s is unknown" % b.name in m for m in site["syslog"].drain())


# -- one controller, one lock (issue 27) ------------------------------------------------------------
LOCK_PLAY = """
- name: Hold the controller lock
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Take it
      pft_lock:
        holder: "{{ holder }}"
        wait: "{{ lock_wait }}"
        state_dir: "{{ state_dir }}"
    - name: Keep it a while
      ansible.builtin.wait_for:
        timeout: "{{ hold }}"
    - name: Give it back
      pft_lock:
        state: absent
        state_dir: "{{ state_dir }}"
"""


def lock_run(tmp_path, state, holder, hold, lock_wait):
    play = tmp_path / "lock.yml"
    play.write_text(LOCK_PLAY)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", str(play),
            "-e", json.dumps({"holder": holder, "hold": hold, "lock_wait": lock_wait, "state_dir": state})]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=REPO,
                            start_new_session=True)


def wait_held(state, timeout=60):
    path = os.path.join(state, "controller-lock.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not os.path.exists(path):
        time.sleep(0.1)
    assert os.path.exists(path)
    return json.load(open(path))


def test_controller_lock_makes_a_second_run_wait_then_names_the_holder(tmp_path):
    state = str(tmp_path / "state")
    first = lock_run(tmp_path, state, "evacuate.yml of c1", hold=8, lock_wait=1)
    wait_held(state)
    refused = lock_run(tmp_path, state, "watch.yml", hold=0, lock_wait=1)
    out = refused.communicate(timeout=120)[0]
    assert refused.returncode != 0 and "evacuate.yml of c1" in out and "controller-lock.json" in out, out
    waiting = lock_run(tmp_path, state, "watch.yml", hold=0, lock_wait=60)
    out = waiting.communicate(timeout=120)[0]
    assert waiting.returncode == 0, out                      # it waited for the first to give it back
    assert first.wait(timeout=60) == 0
    assert not os.path.exists(os.path.join(state, "controller-lock.json"))


def test_controller_lock_of_a_killed_run_is_taken_over(tmp_path):
    state = str(tmp_path / "state")
    # hold is short: ansible-playbook's forked worker outlives the SIGKILL of its group and sleeps it out
    dead = lock_run(tmp_path, state, "evacuate.yml of c1", hold=20, lock_wait=1)
    held = wait_held(state)
    os.killpg(dead.pid, signal.SIGKILL)
    dead.wait()
    nxt = lock_run(tmp_path, state, "watch.yml", hold=0, lock_wait=1)
    out = nxt.communicate(timeout=120)[0]
    assert nxt.returncode == 0, out
    assert held["holder"] == "evacuate.yml of c1"


def test_a_lasting_no_target_cause_is_alerted_once_not_every_run(site):
    # issue 27: with Ganglia down the "cannot move the guests" critical alert came every minute
    b = site["bmcs"][0]
    b.set_sensor("CPU1 Temp", 92)
    watch(site, 10)
    first = [m for m in site["syslog"].drain() if "cannot move the guests of %s" % b.name in m]
    watch(site, 10)
    again = [m for m in site["syslog"].drain() if "cannot move the guests of %s" % b.name in m]
    assert len(first) == 1 and again == [], (first, again)


def test_with_a_node_to_evacuate_every_alert_waits_until_after_the_moves(site):
    # issue 27: alerts about the nodes not moved were sent one by one before target selection; a
    # webhook that does not answer cost ~10 s per node on the critical path
    site["bmcs"][0].set_sensor("CPU1 Temp", 92)
    site["bmcs"][1].pause()
    try:
        out, _ = watch(site, 10)
    finally:
        site["bmcs"][1].resume()
    select = out.index("TASK [Select the targets, reserve them and journal the work]")
    first_alert = out.index("TASK [Alert the admin]")
    assert select < first_alert, out
    msgs = site["syslog"].drain()
    assert any("pft: %s is unknown" % site["bmcs"][1].name in m for m in msgs), msgs


# -- the settings are checked as a set, before anything is sampled ----------------------------------
def assert_nothing_sampled(site, out):
    assert "TASK [Sample the BMCs" not in out, out
    assert not os.path.exists(os.path.join(site["state"], "watch-state.json"))


@pytest.mark.parametrize("where", ["extra-vars", "inventory"])
def test_a_misspelt_setting_fails_the_run_by_name_before_sampling(site, tmp_path, where):
    if where == "extra-vars":
        out, _ = watch(site, 2, "-e", "pft_watch_intervall=5", rc=1)
        name, meant = "pft_watch_intervall", "pft_watch_interval"
    else:
        inv = yaml.safe_load(open(site["inventory"]))
        inv["all"]["vars"]["pft_health_hysterisis"] = 3
        path = tmp_path / "misspelt.yml"
        path.write_text(yaml.safe_dump(inv))
        out, _ = watch(dict(site, inventory=str(path)), 2, rc=1)
        name, meant = "pft_health_hysterisis", "pft_health_hysteresis"
    assert "unknown pft setting(s): %s (did you mean %s?)" % (name, meant) in out, out
    assert_nothing_sampled(site, out)
    alerts = failure_alerts(site)                  # a watch that does not run is never silent
    assert len(alerts) == 1 and name in alerts[0], alerts


def test_an_internal_variable_is_no_setting_and_passes(site):
    out, _ = watch(site, 1, "-e", "pft_watch__scratch=1", "-e", "pft_watch_interval=0.5")
    assert "unknown pft setting" not in out


@pytest.mark.parametrize("setting, said", [
    ("pft_health_hysteresis=two",
     "argument 'pft_health_hysteresis' is of type str and we were unable to convert to int"),
    ("pft_watch_realert_after=later",
     "argument 'pft_watch_realert_after' is of type str and we were unable to convert to float"),
    ("pft_watch_stop_on=critcal", "value of pft_watch_stop_on must be one of: warning, critical, never, got: critcal"),
    ("pft_watch_interval=0", "pft settings out of range: pft_watch_interval=0.0 (must be above 0)"),
])
def test_a_mistyped_setting_fails_the_run_by_name_before_sampling(site, setting, said):
    out, _ = watch(site, 2, "-e", setting, rc=1)
    assert said in out, out
    assert_nothing_sampled(site, out)


def test_evacuate_checks_the_settings_before_it_asks_any_node(site):
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", site["inventory"],
            os.path.join(REPO, "playbooks", "evacuate.yml"), "-e", "node=%s" % site["bmcs"][0].name,
            "-e", "pft_watch_gruop=compute"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "unknown pft setting(s): pft_watch_gruop (did you mean pft_watch_group?)" in out, out
    assert "List this node's domains" not in out


# -- prediction (docs/watch.md, "Prediction") -----------------------------------------------------------------
PREDICT_POLICY = [dict(POLICY[0], fail_at=95), POLICY[1]]


def test_a_node_ramping_toward_its_failure_line_is_evacuated_on_a_prediction_before_any_threshold(site):
    """The BMC's sensor climbs at 0.5 degC/s from 60, far below the warning line when the watch
    decides: with pft_watch_predict the watch evacuates it (reason: predicted), the plan shows the
    prediction, and the samples are kept for the next run; without it, the same ramp does nothing."""
    from pft_testbed.ramp import BackgroundRamp, Ramp
    b = site["bmcs"][0]
    policy = json.dumps({"pft_health_policy": PREDICT_POLICY})
    for predict in (False, True):
        b.set_sensor("CPU1 Temp", 55)
        ramp = BackgroundRamp(Ramp(lambda v: b.set_sensor("CPU1 Temp", v), None, rate=0.5, start=55, to=74,
                                   period=0.25)).start()
        try:
            out, took = watch(site, 30, "-e", policy, "-e", "pft_watch_predict=%s" % predict,
                              "-e", "pft_watch_predict_evacuation=40")
        finally:
            ramp.stop()
        if not predict:
            assert "-> evacuate" not in out, out[-3000:]
            assert not os.path.exists(os.path.join(site["state"], "predict-samples.json"))
            continue
        assert "%s: ok -> evacuate (predicted: predicted failure in" % b.name in out, out[-3000:]
        msgs = site["syslog"].drain()
        assert any("cannot move the guests of %s" % b.name in m for m in msgs), msgs
        with open(os.path.join(site["state"], "predict-samples.json")) as fh:
            kept = json.load(fh)
        assert len(kept["nodes"][b.name]["CPU1 Temp"]) >= 20


def test_a_misspelt_prediction_setting_fails_by_name(site):
    out, _ = watch(site, 1, "-e", "pft_watch_predict_margn=3", rc=1)
    assert "pft_watch_predict_margn (did you mean pft_watch_predict_margin?)" in out
