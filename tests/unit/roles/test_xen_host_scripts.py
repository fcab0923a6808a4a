# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scripts xen_host templates onto a node, run against stand-ins for xl and gmetric.

The real paths are checked on the testbed (molecule/default/tests/test_default.py: the
migration key on real dom0s; the pft metrics in real gmonds). Here: the forced command's
accept/refuse rules, and the metrics script's parsing of `xl` output and its gmetric argv.
"""
import json
import os
import subprocess
import sys

import jinja2
import pytest
from pft_paths import REPO

ROLE = os.path.join(REPO, "roles", "xen_host")


def render(template, dest, **variables):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
                             keep_trailing_newline=True, trim_blocks=True)
    env.filters["comment"] = lambda text: "# " + text
    text = env.get_template(template).render(ansible_managed="Ansible managed (test)", **variables)
    dest.write_text(text)
    dest.chmod(0o755)
    return str(dest)


def fake(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def wrapper(tmp_path):
    xl = fake(tmp_path, "xl", 'echo "XL $*"\n')
    return render("pft-migrate-receive.j2", tmp_path / "pft-migrate-receive", xen_host_xl_path=xl)


def run_wrapper(wrapper, command):
    env = {"PATH": "/usr/bin:/bin"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run([wrapper], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("command,expected", [
    ("xl migrate-receive", "XL migrate-receive"),
    ("xl -vvv migrate-receive -e -d", "XL -vvv migrate-receive -e -d"),
    ("xl -t migrate-receive -p", "XL -t migrate-receive -p"),
])
def test_wrapper_runs_xl_migrate_receive(wrapper, command, expected):
    out = run_wrapper(wrapper, command)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("command", [
    None, "", "id", "xl", "xl list", "xl destroy guest1", "xl migrate-receive; id", "xl migrate-receive && id",
    "xl migrate-receive -e $(id)", "xl migrate-receive `id`", "xl migrate-receive -x", "sh -c 'xl migrate-receive'",
    "/usr/sbin/xl migrate-receive", "xl -t -vvv migrate guest1 host", "xl migrate-receive | sh", "xl  * ",
    "pft-ckpt-put ../../etc/passwd", "pft-ckpt-put g 1", "pft-ckpt-sums g", "pft-ckpt-sums g/x 4096",
    "pft-ckpt-sums g 4096 >/tmp/x", "pft-ckpt-put $(id)", "pft-ckpt-rm g",
])
def test_wrapper_refuses_everything_else(wrapper, command):
    out = run_wrapper(wrapper, command)
    assert out.returncode == 126
    assert "XL" not in out.stdout
    assert "may only run 'xl migrate-receive'" in out.stderr


FIXTURES = os.path.join(REPO, "tests", "unit", "plugins", "module_utils", "fixtures", "xen")


def metrics_script(tmp_path, xl_list_l):
    """The templated pft-xen-metrics with a stand-in xl (list -l prints xl_list_l) and a logging gmetric."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("pft_ganglia_publish.py", "pft_common.py"):   # what the role installs on a dom0
        os.symlink(os.path.join(REPO, "plugins", "module_utils", name), lib / name)
    log = tmp_path / "gmetric.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake(bindir, "gmetric", f'printf "%s|" "$@" >> {log}; echo >> {log}\n')
    listing = tmp_path / "xl-list-l.json"
    listing.write_text(xl_list_l)
    # `xl info` format recorded on a testbed dom0, values trimmed.
    xl = fake(tmp_path, "xl", f"""case "$1 $2" in
"list -l") cat {listing} ;;
"info "*) printf 'host                   : compute1\\nfree_memory            : 431\\nxen_major              : 4\\n' ;;
esac
""")
    script = render("pft-xen-metrics.py.j2", tmp_path / "pft-xen-metrics", xen_host_metrics_lib_dir=str(lib),
                    xen_host_metrics_gmond_conf="/etc/ganglia/gmond.conf", xen_host_metrics_tmax=60,
                    xen_host_metrics_dmax=0)
    text = open(script).read().replace('"/usr/sbin/xl"', repr(xl))
    open(script, "w").write(text)
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{bindir}:/usr/bin:/bin"})
    calls = [line.split("|")[:-1] for line in log.read_text().splitlines()] if log.exists() else []
    return out, calls


def recorded_listing():
    with open(os.path.join(FIXTURES, "xl-list-l.json.txt")) as f:
        return "".join(line for line in f if not line.startswith("#"))


def test_metrics_script_publishes_guests_their_memory_and_free_memory(tmp_path):
    # The `xl list -l` recorded on a testbed dom0 (Domain-0 and the 128 MiB test guest pfte2e)
    out, calls = metrics_script(tmp_path, recorded_listing())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pft_guest_count=1", "pft_guest_names=pfte2e", "pft_guest_maxmem_mb=pfte2e=128",
                                  "pft_xen_free_memory_mb=431"]
    assert [c[c.index("-n") + 1] for c in calls] == ["pft_guest_count", "pft_guest_names", "pft_guest_maxmem_mb",
                                                     "pft_xen_free_memory_mb"]
    for c in calls:
        assert c[:3] == ["-c", "/etc/ganglia/gmond.conf", "-n"]
        assert c[c.index("-x") + 1] == "60"


def test_metrics_script_lists_several_guests_sorted(tmp_path):
    doms = [{"domid": 0, "config": {"c_info": {"name": "Domain-0"}, "b_info": {"max_memkb": 524288}}},
            {"domid": 3, "config": {"c_info": {"name": "guest2"}, "b_info": {"max_memkb": 163840}}},
            {"domid": 2, "config": {"c_info": {"name": "guest1"}, "b_info": {"target_memkb": 262144}}}]
    out, _ = metrics_script(tmp_path, json.dumps(doms))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["pft_guest_count=2", "pft_guest_names=guest1,guest2",
                                      "pft_guest_maxmem_mb=guest1=256,guest2=160"]


def test_metrics_script_publishes_nothing_when_a_guest_has_no_memory(tmp_path):
    doms = [{"domid": 2, "config": {"c_info": {"name": "guest1"}, "b_info": {}}}]
    out, calls = metrics_script(tmp_path, json.dumps(doms))
    assert out.returncode == 1
    assert "no memory for guest guest1" in out.stderr
    assert calls == []
