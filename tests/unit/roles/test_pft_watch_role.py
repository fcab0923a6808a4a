# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/pft_watch applied for real by playbooks/install-watch.yml to localhost, with every
destination (sbin, cron.d, logrotate.d, /etc/pft, /var/lib/pft, the log, the lock) redirected
into a temporary directory: files, modes, idempotence, check mode, disabling, the preflight.

The packages (cron, util-linux, logrotate) are installed for real when missing, as the role does
on a controller. Starting the cron service is left out (pft_watch_manage_cron_service: false):
the test must not start daemons on the machine that runs it.
"""
import json
import os
import re
import stat
import subprocess
import sys

import pytest
from pft_paths import REPO

BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(REPO, "playbooks", "install-watch.yml")
PASSWORD = "s3cret-vault-Passw0rd-for-the-role-test"
FAKE = """#!/bin/sh
# Stand-in for the project's ansible-playbook (this tests the installed wrapper, not Ansible).
echo "fake ansible-playbook: $* ANSIBLE_CONFIG=$ANSIBLE_CONFIG"
exit 0
"""


def make_tree(root):
    """A project (with .venv/bin/ansible-playbook), a vault password file, and the system
    directories that exist on any Debian controller (sbin, cron.d, logrotate.d)."""
    proj = root / "project"
    (proj / "playbooks").mkdir(parents=True)
    (proj / "playbooks" / "watch.yml").write_text("---\n- hosts: localhost\n")
    (proj / "ansible.cfg").write_text("[defaults]\n")
    (proj / "inventory").mkdir()
    (proj / "inventory" / "hosts.yml").write_text("all: {}\n")
    venv = proj / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "ansible-playbook").write_text(FAKE)
    (venv / "ansible-playbook").chmod(0o755)
    secret = root / "secret" / "vault-pass"
    secret.parent.mkdir(mode=0o700)
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    sysroot = root / "sys"
    for d in ("usr/local/sbin", "etc/cron.d", "etc/logrotate.d"):
        (sysroot / d).mkdir(parents=True)
    local = root / "local.yml"
    local.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    return {
        "root": root, "project": proj, "sys": sysroot, "secret": secret, "inventory": local,
        "vars": {
            "pft_watch_project_dir": str(proj),
            "pft_watch_inventory": str(proj / "inventory" / "hosts.yml"),      # one path, not a list
            "pft_watch_vault_password_file": str(secret),
            "pft_watch_extra_vars": {"pft_watch_realert_after": 42, "pft_alert_webhook": "https://example.invalid/hook"},
            "pft_watch_lock_file": str(sysroot / "run/lock/pft-watch.lock"),
            "pft_watch_log_file": str(sysroot / "var/log/pft/watch.log"),
            "pft_watch_state_dir": str(sysroot / "var/lib/pft"),
            "pft_watch_sbin_dir": str(sysroot / "usr/local/sbin"),
            "pft_watch_conf_dir": str(sysroot / "etc/pft"),
            "pft_watch_cron_dir": str(sysroot / "etc/cron.d"),
            "pft_watch_logrotate_dir": str(sysroot / "etc/logrotate.d"),
            "pft_watch_manage_cron_service": False,
            "ansible_python_interpreter": sys.executable,
        },
    }


def apply(tree, *extra, **overrides):
    varfile = tree["root"] / "vars.json"
    varfile.write_text(json.dumps(dict(tree["vars"], **overrides)))
    out = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), PLAYBOOK, "-i", str(tree["inventory"]), "-e", f"@{varfile}", *extra],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                 PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin")))
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out.stdout)
    return out, (dict(zip(("ok", "changed", "unreachable", "failed"), map(int, recap.groups()))) if recap else None)


def mode_of(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tree = make_tree(tmp_path_factory.mktemp("pft-watch-role"))
    out, recap = apply(tree)
    assert out.returncode == 0, out.stdout + out.stderr
    assert recap["failed"] == 0 and recap["changed"] > 0
    tree["first"] = out
    return tree


def test_install_writes_the_files_with_their_modes(installed):
    s = installed["sys"]
    wrapper = s / "usr/local/sbin/pft-watch"
    assert mode_of(wrapper) == (0o750, 0, 0)
    text = wrapper.read_text()
    assert text.startswith("#!/bin/bash\n") and "Ansible managed" in text
    # the project's .venv/bin/ansible-playbook was chosen
    assert f"ansible_playbook={installed['project']}/.venv/bin/ansible-playbook\n" in text
    assert f"vault_password_file={installed['secret']}\n" in text
    assert "flock -n 9" in text and "timeout --kill-after" in text
    assert "run_timeout=1320\n" in text                   # pft_migration_deadline (900) + handover (120) + 300

    varsfile = s / "etc/pft/watch-vars.yml"
    assert mode_of(varsfile) == (0o600, 0, 0)
    assert "pft_watch_realert_after: 42" in varsfile.read_text()

    logrotate = s / "etc/logrotate.d/pft-watch"
    assert mode_of(logrotate) == (0o644, 0, 0)
    conf = logrotate.read_text()
    assert f"{s}/var/log/pft/watch.log {{" in conf
    for directive in ("daily", "rotate 14", "compress", "missingok", "create 0640 root root"):
        assert re.search(rf"^\s+{directive}$", conf, re.M), directive
    assert subprocess.run(["logrotate", "-d", str(logrotate)], capture_output=True).returncode == 0

    for d in ("etc/pft", "var/lib/pft", "var/lib/pft/reservations", "var/lib/pft/journal", "var/log/pft"):
        assert mode_of(s / d) == (0o750, 0, 0), d


def test_the_cron_line_is_only_the_wrapper(installed):
    s = installed["sys"]
    cron = (s / "etc/cron.d/pft-watch").read_text()
    jobs = [line for line in cron.splitlines() if line and not line.startswith("#")]
    assert jobs == [f"* * * * * root {s}/usr/local/sbin/pft-watch"]
    assert "#Ansible: pft watch" in cron
    assert mode_of(s / "etc/cron.d/pft-watch")[0] == 0o644


def test_no_secret_in_any_installed_file_or_in_the_output(installed):
    for path in installed["sys"].rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace"), path
    assert PASSWORD not in installed["first"].stdout + installed["first"].stderr


def test_the_installed_wrapper_runs(installed):
    s = installed["sys"]
    out = subprocess.run([str(s / "usr/local/sbin/pft-watch")], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/root"})
    assert out.returncode == 0, out.stderr
    log = (s / "var/log/pft/watch.log").read_text()
    assert mode_of(s / "var/log/pft/watch.log")[0] == 0o640
    assert " start: " in log and log.rstrip().endswith("end: exit code 0")
    assert f"fake ansible-playbook: {installed['project']}/playbooks/watch.yml -i " in log
    assert f"ANSIBLE_CONFIG={installed['project']}/ansible.cfg" in log
    assert PASSWORD not in log


def test_a_second_run_changes_nothing(installed):
    out, recap = apply(installed)
    assert out.returncode == 0, out.stdout + out.stderr
    assert recap["changed"] == 0, out.stdout


def test_check_mode_predicts_and_changes_nothing(tmp_path):
    tree = make_tree(tmp_path)
    del tree["vars"]["pft_watch_inventory"]            # the default: this run's inventory sources
    before = files_under(tree["sys"])
    out, recap = apply(tree, "--check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert recap["failed"] == 0 and recap["changed"] > 0
    assert files_under(tree["sys"]) == before
    assert f"{tree['inventory']}" in out.stdout        # the inventory source checked (loop label)


def test_a_vault_file_readable_by_others_is_refused(tmp_path):
    tree = make_tree(tmp_path)
    tree["secret"].chmod(0o644)
    out, recap = apply(tree)
    assert out.returncode != 0
    assert f"the vault password file {tree['secret']} (pft_watch_vault_password_file) must be" in out.stdout
    assert "with mode 0644" in out.stdout
    assert not (tree["sys"] / "usr/local/sbin/pft-watch").exists()


def test_a_missing_playbook_is_named(tmp_path):
    tree = make_tree(tmp_path)
    (tree["project"] / "playbooks" / "watch.yml").unlink()
    out, _ = apply(tree)
    assert out.returncode != 0
    assert f"its playbook {tree['project']}/playbooks/watch.yml (pft_watch_playbook: missing)" in out.stdout


def test_disabling_removes_the_cron_entry_and_keeps_the_rest(installed):
    """Last of the tests on the installed tree: it leaves the watch disabled."""
    cron = installed["sys"] / "etc/cron.d/pft-watch"
    out, recap = apply(installed, "--check", pft_watch_enabled=False)
    assert out.returncode == 0 and recap["changed"] == 1, out.stdout
    assert cron.exists()
    out, recap = apply(installed, "--tags", "pft_watch_cron", pft_watch_enabled=False)   # the entry alone
    assert out.returncode == 0 and recap["changed"] == 1, out.stdout + out.stderr
    assert not cron.exists()
    out, recap = apply(installed, pft_watch_enabled=False)
    assert out.returncode == 0 and recap["changed"] == 0, out.stdout + out.stderr
    assert (installed["sys"] / "usr/local/sbin/pft-watch").exists()
    assert (installed["sys"] / "var/log/pft/watch.log").exists()


def test_a_misspelt_setting_is_named_and_nothing_is_installed(tmp_path):
    tree = make_tree(tmp_path)
    out, _ = apply(tree, pft_watch_cron_minte="5",
                   pft_watch_extra_vars={"pft_watch_windw": 30, "pft_alert_webhook": {"url": "https://example.invalid"}})
    assert out.returncode != 0
    assert ("unknown pft setting(s): pft_watch_cron_minte (did you mean pft_watch_cron_minute?), "
            "pft_watch_windw (did you mean pft_watch_window?)") in " ".join(out.stdout.split()), out.stdout
    assert not (tree["sys"] / "usr/local/sbin/pft-watch").exists()
