# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/pft_watch: the pft-watch wrapper, rendered from the role's template and run for real.

The template is rendered by Ansible's own template module (so ``ansible_managed | comment`` and
``quote`` are the real filters). ansible-playbook is replaced by a small shell script in a
temporary project: this tests the wrapper (flock, timeout, environment, log), not Ansible.
The script reports its argv and environment to stdout, which the wrapper logs.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from pft_paths import REPO

BIN = os.path.dirname(sys.executable)
TEMPLATE = os.path.join(REPO, "roles", "pft_watch", "templates", "pft-watch.j2")
PASSWORD = "s3cret-vault-Passw0rd-for-the-wrapper-test"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"

FAKE = r"""#!/bin/bash
# Stand-in for ansible-playbook: reports what it got, then does what the control file says.
state=__STATE__
echo "fake: pid $$"
echo "fake: argv $*"
echo "fake: ANSIBLE_CONFIG=${ANSIBLE_CONFIG-unset}"
echo "fake: ANSIBLE_VAULT_PASSWORD_FILE=${ANSIBLE_VAULT_PASSWORD_FILE-unset}"
echo "fake: PFT_WATCH_RUN_ID=${PFT_WATCH_RUN_ID-unset}"
echo "fake: cwd $(pwd)"
if [ -n "${ANSIBLE_VAULT_PASSWORD_FILE-}" ] && [ -r "$ANSIBLE_VAULT_PASSWORD_FILE" ]; then
    echo "fake: the vault password file is readable"
fi
echo "fake: open fds $(ls /proc/$$/fd | tr '\n' ' ')"
echo "$$" > "$state/started"
read -r mode arg < "$state/control"
case "$mode" in
    hold)    # until the test creates the release file (at most 120 s)
        for _ in $(seq 1200); do [ -e "$state/release" ] && break; sleep 0.1; done ;;
    hang)    sleep 600 ;;
    stubborn) trap '' TERM; for _ in $(seq 600); do sleep 1; done ;;
    daemon)  # leave a process behind that keeps every inherited descriptor open
        sleep 60 & echo $! > "$state/daemon.pid" ;;
    exit)    printf 'last line without a newline'; exit "$arg" ;;
esac
exit 0
"""


VARIANTS = {                                    # wrapper name: variables that differ from the base
    "default": {},
    "hang": {"pft_watch_timeout": 1, "pft_watch_kill_after": 2},
    "stubborn": {"pft_watch_timeout": 1, "pft_watch_kill_after": 1},
    "no-vault-file": {"pft_watch_vault_password_file": "__ROOT__/nowhere"},
    "no-vault": {"pft_watch_vault_password_file": ""},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A temporary project with a fake ansible-playbook and a vault password file, and the wrapper
    rendered by Ansible (one ansible-playbook run) once per variant into <root>/sbin/<variant>."""
    root = tmp_path_factory.mktemp("pft-watch")
    proj = root / "project"
    (proj / "playbooks").mkdir(parents=True)
    (proj / "playbooks" / "watch.yml").write_text("---\n- hosts: localhost\n")
    (proj / "ansible.cfg").write_text("[defaults]\n")
    (proj / "inventory").mkdir()
    (proj / "inventory" / "hosts.yml").write_text("all: {}\n")
    state = root / "state"
    state.mkdir()
    fake = root / "bin" / "ansible-playbook"
    fake.parent.mkdir()
    fake.write_text(FAKE.replace("__STATE__", str(state)))
    fake.chmod(0o755)
    secret = root / "secret" / "vault-pass"
    secret.parent.mkdir(mode=0o700)
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    conf = root / "etc"
    conf.mkdir()
    (conf / "watch-vars.yml").write_text("pft_watch_test: 1\n")
    project = {"root": root, "dir": proj, "state": state, "fake": fake, "secret": secret,
               "conf": conf, "log": root / "log" / "pft" / "watch.log",
               "lock": root / "run" / "lock" / "pft-watch.lock", "sbin": root / "sbin"}
    base = {
        "pft_watch_project_dir": str(proj),
        "pft_watch_ansible_config": str(proj / "ansible.cfg"),
        "pft_watch__ansible_playbook": str(fake),
        "pft_watch_playbook": str(proj / "playbooks" / "watch.yml"),
        "pft_watch__inventory": [str(proj / "inventory" / "hosts.yml"), str(proj / "inventory")],
        "pft_watch_conf_dir": str(conf),
        "pft_watch_vault_password_file": str(secret),
        "pft_watch_lock_file": str(project["lock"]),
        "pft_watch_log_file": str(project["log"]),
        "pft_watch_timeout": 600,
        "pft_watch_kill_after": 5,
    }
    project["sbin"].mkdir()
    tasks = []
    for name, overrides in VARIANTS.items():
        variables = dict(base, **{k: v.replace("__ROOT__", str(root)) if isinstance(v, str) else v
                                  for k, v in overrides.items()})
        tasks.append({"name": f"Render {name}", "ansible.builtin.template": {
            "src": TEMPLATE, "dest": str(project["sbin"] / name), "mode": "0750"}, "vars": variables})
    play = root / "render.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks,
                                 "vars": {"ansible_python_interpreter": sys.executable}}]))
    out = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    assert out.returncode == 0, out.stdout + out.stderr
    return project


@pytest.fixture
def project(rendered):
    """The rendered project, with the log, the lock and the fake's state files of earlier tests removed."""
    for path in [rendered["log"], rendered["lock"], *rendered["state"].iterdir()]:
        if path.exists():
            path.unlink()
    return rendered


def render(project, variant="default"):
    return project["sbin"] / variant


def control(project, text):
    (project["state"] / "control").write_text(text + "\n")


def run(wrapper, *args, timeout=120):
    # cron's environment: almost nothing
    return subprocess.run([str(wrapper), *args], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh"})


def wait_for(path, proc=None, limit=120):
    """Wait for a file written by the fake (not a timing assertion: a bound on a hang)."""
    for _ in range(limit * 20):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the wrapper exited ({proc.returncode}) before the fake started")
        time.sleep(0.05)
    pytest.fail(f"{path} never appeared")


def ended(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return re.search(r"^State:\s+Z", f.read(), re.M) is not None
    except FileNotFoundError:
        return True


def gone(pid, limit=30):
    """True when pid has ended (a zombie left to an init that does not reap counts as ended).
    A SIGKILL sent to a process group is delivered asynchronously: a loaded machine may need a
    moment to end every member, so this waits up to ``limit`` seconds (a bound, not an assertion)."""
    for _ in range(limit * 20):
        if ended(pid):
            return True
        time.sleep(0.05)
    return False


def log_text(project):
    return project["log"].read_text()


def test_template_renders_a_valid_script_headed_by_ansible_managed(project):
    wrapper = render(project)
    text = wrapper.read_text()
    assert text.startswith("#!/bin/bash\n#")
    assert "Ansible managed" in "\n".join(text.splitlines()[1:4])
    assert PASSWORD not in text
    assert subprocess.run(["bash", "-n", str(wrapper)]).returncode == 0


def test_a_run_logs_a_header_the_stamped_output_and_the_exit_code(project):
    wrapper = render(project)
    control(project, "exit 3")
    out = run(wrapper, "--check")
    assert out.returncode == 3, out.stderr
    assert out.stdout == "" and out.stderr == ""            # nothing for cron to mail
    log = log_text(project)
    lines = log.splitlines()
    header = re.match(rf"^{STAMP} pft-watch\[(\S+)\] run (\S+) start: (.*)$", lines[0])
    assert header, lines[0]
    run_id = header.group(1)
    assert header.group(2) == run_id
    assert re.match(r"^\d{8}T\d{6}Z-\d+$", run_id)
    assert f"{project['fake']} {project['dir']}/playbooks/watch.yml" in header.group(3)
    assert sum(" start: " in line for line in lines) == 1
    assert re.search(rf"^{STAMP} pft-watch\[{run_id}\] run {run_id} end: exit code 3$", log, re.M)
    # every line of the playbook's output is time-stamped, the last one even without a newline
    fake_lines = [line for line in lines if "fake: " in line or "last line" in line]
    assert fake_lines and all(re.match(rf"^{STAMP} ", line) for line in fake_lines)
    assert re.search(rf"^{STAMP} last line without a newline$", log, re.M)
    # what ansible-playbook got
    inv = project["dir"] / "inventory"
    assert (f"fake: argv {project['dir']}/playbooks/watch.yml -i {inv}/hosts.yml -i {inv} "
            f"-e @{project['conf']}/watch-vars.yml --check") in log
    assert f"fake: ANSIBLE_CONFIG={project['dir']}/ansible.cfg" in log
    assert f"fake: ANSIBLE_VAULT_PASSWORD_FILE={project['secret']}" in log
    assert "fake: the vault password file is readable" in log
    assert f"fake: PFT_WATCH_RUN_ID={run_id}" in log
    assert f"fake: cwd {project['dir']}" in log
    assert PASSWORD not in log
    # the lock descriptor (9) and the log pipe's spare descriptor (8) are not passed on
    fds = re.search(r"fake: open fds (.*)$", log, re.M).group(1).split()
    assert "9" not in fds and "8" not in fds


def test_a_second_run_exits_at_once_while_the_first_holds_the_lock(project):
    wrapper = render(project)
    control(project, "hold")
    first = subprocess.Popen([str(wrapper)], env={"PATH": "/usr/bin:/bin"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fake_pid = int(wait_for(project["state"] / "started", first))
        # no password in the argv of anything in the run: the fake, timeout, the wrapper
        pids = [fake_pid]
        with open(f"/proc/{fake_pid}/stat") as f:
            pids.append(int(f.read().rsplit(")", 1)[1].split()[1]))      # its parent: timeout
        pids.append(first.pid)
        for pid in pids:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert PASSWORD.encode() not in f.read()
        with open(f"/proc/{fake_pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert f"ANSIBLE_VAULT_PASSWORD_FILE={project['secret']}".encode() in environ
        assert f"ANSIBLE_CONFIG={project['dir']}/ansible.cfg".encode() in environ
        assert not any(PASSWORD.encode() in item for item in environ)

        second = run(wrapper)
        assert second.returncode == 0, second.stderr
        assert first.poll() is None                     # the first run is still going: the second did not queue
        busy = [line for line in log_text(project).splitlines() if "previous run still active" in line]
        assert len(busy) == 1 and re.match(rf"^{STAMP} pft-watch\[\S+\] previous run still active", busy[0])
    finally:
        (project["state"] / "release").write_text("go\n")
        first.wait(120)
    assert first.returncode == 0
    log = log_text(project)
    assert sum(" start: " in line for line in log.splitlines()) == 1      # the second run never started one
    assert log.rstrip().endswith("end: exit code 0")
    assert PASSWORD not in log


def test_the_deadline_stops_a_hung_run(project):
    wrapper = render(project, "hang")
    control(project, "hang")
    out = run(wrapper)
    assert out.returncode == 124
    fake_pid = int((project["state"] / "started").read_text())
    assert gone(fake_pid)
    log = log_text(project)
    assert "timed out after 1s: ansible-playbook stopped (SIGTERM)" in log
    assert log.rstrip().endswith("end: exit code 124")


def test_the_deadline_kills_a_run_that_ignores_sigterm(project):
    wrapper = render(project, "stubborn")
    control(project, "stubborn")
    out = run(wrapper)
    assert out.returncode == 128 + signal.SIGKILL
    fake_pid = int((project["state"] / "started").read_text())
    assert gone(fake_pid)
    log = log_text(project)
    assert "timed out after 1s: ansible-playbook killed (SIGKILL 1s after SIGTERM)" in log
    assert log.rstrip().endswith("end: exit code 137")
    # the lock is free again
    control(project, "exit 0")
    assert run(wrapper).returncode == 0
    assert "previous run still active" not in log_text(project)


def test_a_process_left_behind_does_not_hold_the_lock_or_the_wrapper(project):
    """Like an ssh ControlPersist master: it outlives the run with the run's descriptors."""
    wrapper = render(project)
    control(project, "daemon")
    daemon = None
    try:
        out = run(wrapper)
        daemon = int((project["state"] / "daemon.pid").read_text())
        assert out.returncode == 0
        assert os.path.exists(f"/proc/{daemon}")            # still there, holding the run's stdout
        control(project, "exit 0")
        again = run(wrapper)
        assert again.returncode == 0
        log = log_text(project)
        assert "previous run still active" not in log
        assert sum(" start: " in line for line in log.splitlines()) == 2
    finally:
        if daemon:
            try:
                os.kill(daemon, signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_a_missing_vault_password_file_is_named(project):
    wrapper = render(project, "no-vault-file")
    control(project, "exit 0")
    out = run(wrapper)
    assert out.returncode == 2
    log = log_text(project)
    assert f"error: the vault password file {project['root']}/nowhere is missing or unreadable" in log
    assert not (project["state"] / "started").exists()
    assert log.rstrip().endswith("end: exit code 2")


def test_without_a_vault_file_the_variable_is_not_set(project):
    wrapper = render(project, "no-vault")
    control(project, "exit 0")
    assert run(wrapper).returncode == 0
    assert "fake: ANSIBLE_VAULT_PASSWORD_FILE=unset" in log_text(project)


def test_a_signal_to_the_wrapper_stops_the_run_before_the_lock_is_released(project):
    wrapper = render(project)
    control(project, "hold")
    first = subprocess.Popen([str(wrapper)], env={"PATH": "/usr/bin:/bin"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fake_pid = int(wait_for(project["state"] / "started", first))
    first.send_signal(signal.SIGTERM)
    assert first.wait(120) == 128 + signal.SIGTERM
    assert gone(fake_pid)                           # the wrapper let go of the lock only after the playbook ended
    log = log_text(project)
    assert "signal received, stopping ansible-playbook" in log
    assert "stopped by a signal" in log and log.rstrip().endswith("end: exit code 143")
