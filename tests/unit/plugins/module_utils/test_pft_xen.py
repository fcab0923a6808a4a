# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_xen: names, the xl output parsers, domain facts, the target probe (argv, parsing, and
the forced command's pft-probe verb) and the checks of the target from it.

Outputs come from fixtures recorded on the Xen testbed (tests/unit/plugins/module_utils/fixtures/xen/,
each with a header saying how it was recorded). The same code paths run against real Xen in
tests/e2e/test_xen_migrate.py.
"""
import os
import shutil
import subprocess
import sys

import jinja2
import pytest
from ansible.module_utils.pft_xen import (
    XenError,
    check_host,
    check_name,
    check_target,
    domain_info,
    find_domain,
    host_facts,
    parse_probe,
    parse_xl_info,
    parse_xl_list,
    parse_xl_list_long,
    parse_xl_uptime,
    probe_argv,
    running_once,
    state_word,
)
from pft_paths import REPO
from xen_fakes import fixture, isolate_lock_dir, recorded_xl


@pytest.fixture(autouse=True)
def _migration_lock_dir(tmp_path, monkeypatch):
    isolate_lock_dir(tmp_path, monkeypatch)


@pytest.mark.parametrize("name", ["guest1", "g-1.a_b", "A"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Domain-0", "-x", "a b", "a;id", "$(id)", "x" * 65, None])
def test_invalid_names(name):
    with pytest.raises(XenError, match="not a valid domain name"):
        check_name(name)


@pytest.mark.parametrize("host", ["", "-oProxyCommand=id", "a b", "h;id", "h`id`", "user@h"])
def test_invalid_hosts(host):
    with pytest.raises(XenError, match="not a host name"):
        check_host(host)


def test_state_words():
    assert state_word("r-----") == "running"
    assert state_word("-b----") == "blocked"
    assert state_word("--p---") == "paused"
    assert state_word("---s--") == "shutdown"
    assert state_word("----c-") == "crashed"
    assert state_word("-----d") == "dying"
    assert state_word("------") == "idle"
    assert state_word("bad") == "unknown"


def test_parse_xl_list_recorded():
    rows = parse_xl_list(fixture("xl-list.txt"))
    assert rows[0]["name"] == "Domain-0" and rows[0]["domid"] == 0 and rows[0]["memory_mb"] > 0
    guest = [r for r in rows if r["name"] == "pfte2e"][0]
    assert guest["memory_mb"] == 128 and guest["vcpus"] == 1 and guest["state"] in ("blocked", "running")


def test_parse_xl_list_rejects_garbage():
    with pytest.raises(XenError, match="unexpected line"):
        parse_xl_list("Name ID Mem VCPUs State Time(s)\nthis is not a row\n")


def test_parse_xl_list_long_recorded():
    conf = parse_xl_list_long(fixture("xl-list-l.json.txt"))
    g = conf["pfte2e"]
    assert g["type"] == "pv" and g["maxmem_mb"] == 128 and g["max_vcpus"] == 1
    assert g["kernel"].endswith("/vmlinuz") and g["ramdisk"].endswith("/initrd.img")
    assert "pft.ip=" in g["cmdline"] and g["nics"][0]["mac"].startswith("00:16:3e")
    # recorded: 4.17.5's xl list -l does list dom0 (docs/xen-migration.md expected it to be skipped)
    assert conf["Domain-0"]["domid"] == 0 and conf["Domain-0"]["maxmem_mb"] == 512


def test_parse_xl_list_long_sxp_is_refused():
    with pytest.raises(XenError, match="output_format"):
        parse_xl_list_long("(domain (domid 1))")


def test_parse_xl_uptime_recorded():
    up = parse_xl_uptime(fixture("xl-uptime.txt"))
    assert up["Domain-0"] > 0 and "pfte2e" in up


def test_parse_xl_uptime_days():
    assert parse_xl_uptime("Name ID Uptime\nguest1   3  2 days,  1:02:03\n")["guest1"] == 2 * 86400 + 3723


def test_parse_xl_info_and_host_facts_recorded():
    info = parse_xl_info(fixture("xl-info.txt"))
    host = host_facts(info, "4.17.5+72-g01140da4e8-1")
    assert host["shadow_paging"] is True and "shadow" in host["virt_caps"]
    assert host["xen_version"].startswith("4.17")
    assert 0 < host["free_memory_mb"] < host["total_memory_mb"]
    assert "dom0_mem=" in host["xen_commandline"]


def test_host_facts_without_shadow():
    host = host_facts({"virt_caps": "pv hvm", "free_memory": "100", "total_memory": "1000"})
    assert host["shadow_paging"] is False and host["free_memory_mb"] == 100


def test_domain_info_joins_the_outputs():
    res = domain_info(runner=recorded_xl())
    assert res["guests"] == ["pfte2e"]
    dom0, g = res["domains"][0], res["domains"][1]
    assert dom0["type"] == "pv" and dom0["maxmem_mb"] == dom0["memory_mb"]
    assert g["maxmem_mb"] == 128 and g["type"] == "pv" and g["uptime_s"] is not None
    assert res["host"]["toolstack_version"] == "4.17.5+72-g01140da4e8-1"
    res = domain_info(["pfte2e", "ghost"], runner=recorded_xl())
    assert [d["name"] for d in res["domains"]] == ["pfte2e"] and res["missing"] == ["ghost"]
    assert res["migrating"] == [] and res["migrations"] == []


def test_find_domain_knows_the_transient_names():
    rows = [dict(name="g", domid=1, state="blocked"), dict(name="g--incoming", domid=2, state="paused"),
            dict(name="gg", domid=3, state="blocked")]
    found = find_domain(rows, "g")
    assert [r["role"] for r in found] == ["self", "incoming"]
    assert not running_once(found) and running_once(found[:1])
    assert not running_once([dict(name="g", domid=1, state="dying", role="self")])


def test_probe_argv_is_one_word_list_for_the_forced_command():
    argv = probe_argv("compute3", files=["/etc/xen/pft/g.cfg"], tcp=[("10.0.0.1", 2049)])
    assert argv[-2] == "compute3"
    assert argv[-1] == "pft-probe file=/etc/xen/pft/g.cfg tcp=10.0.0.1:2049"


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/xen/../shadow", "relative", "/boot/a b", "/etc/xen/x;id"])
def test_probe_refuses_other_files(path):
    with pytest.raises(XenError, match="cannot probe"):
        probe_argv("compute3", files=[path])


def test_parse_probe_recorded():
    probe = parse_probe(fixture("pft-probe.txt"))
    assert probe["complete"]
    assert "free_memory" in probe["xl-info"] and "Domain-0" in probe["xl-list"]
    assert probe["toolstack"].startswith("4.17.5")
    assert all(v is None or len(v) == 64 for v in probe["files"].values()) and probe["files"]


def test_parse_probe_incomplete():
    assert not parse_probe("== xl-info\nhost : x\n")["complete"]


@pytest.fixture
def forced_command(tmp_path):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(REPO, "roles", "xen_host", "templates")),
                             keep_trailing_newline=True, trim_blocks=True)
    env.filters["comment"] = lambda text: "# " + text
    xl = tmp_path / "xl"
    xl.write_text("#!/bin/sh\ncase \"$1\" in info) printf 'host : n\\nfree_memory : 600\\n' ;;"
                  " list) printf 'Name ID Mem VCPUs State Time(s)\\n' ;; *) echo \"XL $*\" ;; esac\n")
    xl.chmod(0o755)
    wrapper = tmp_path / "pft-migrate-receive"
    wrapper.write_text(env.get_template("pft-migrate-receive.j2").render(ansible_managed="test",
                                                                         xen_host_xl_path=str(xl)))
    wrapper.chmod(0o755)
    (tmp_path / "etc").mkdir()
    return str(wrapper)


def run_forced(wrapper, command):
    return subprocess.run([wrapper], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SSH_ORIGINAL_COMMAND": command})


def test_forced_command_probe_verb(forced_command):
    out = run_forced(forced_command, "pft-probe file=/etc/xen/nonexistent.cfg tcp=127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    probe = parse_probe(out.stdout)
    assert probe["complete"] and "free_memory : 600" in probe["xl-info"]
    assert probe["files"] == {"/etc/xen/nonexistent.cfg": None}
    assert probe["tcp"] == {"127.0.0.1:9": False}


@pytest.mark.parametrize("command", [
    "pft-probe file=/etc/shadow", "pft-probe file=/etc/xen/../shadow", "pft-probe tcp=h:22;id",
    "pft-probe $(id)", "pft-probe xl destroy g", "pft-probe tcp=h:x", "pft-probe file=/boot/",
])
def test_forced_command_probe_refuses(forced_command, command):
    out = run_forced(forced_command, command)
    assert out.returncode == 126 and "== xl-info" not in out.stdout


def test_forced_command_still_runs_migrate_receive(forced_command):
    out = run_forced(forced_command, "xl -v migrate-receive")
    assert out.returncode == 0 and out.stdout.strip() == "XL -v migrate-receive"


def test_check_target():
    probe = {"host": dict(xen_version="4.17.5-pre", toolstack_version="A", shadow_paging=True,
                          virt_caps=["pv", "shadow"], free_memory_mb=150)}
    checks = {c["name"]: c for c in check_target(probe, 128, 16, source_toolstack="A")}
    assert all(c["ok"] for c in checks.values())
    checks = {c["name"]: c for c in check_target(probe, 140, 16, source_toolstack="B")}
    assert not checks["memory"]["ok"] and not checks["toolstack"]["ok"]
    assert "150 MiB free" in checks["memory"]["detail"]


def test_the_dom0_copies_import_as_plain_files_beside_each_other(tmp_path):
    """The checkpoint receiver's lib dir holds pft_xen.py, pft_common.py and pft_xen_checkpoint.py only
    (roles/xen_host):
    there they import by plain name, with no Ansible and no other pft file; under Ansible the same
    files import as ansible.module_utils.pft_xen*."""
    lib = os.path.join(REPO, "plugins", "module_utils")
    for name in ("pft_xen.py", "pft_common.py", "pft_xen_checkpoint.py"):
        shutil.copy(os.path.join(lib, name), tmp_path / name)
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]; sys.path.insert(0, %r); "
            "import pft_xen_checkpoint; assert pft_xen_checkpoint.xen.__name__ == 'pft_xen'; "
            "assert pft_xen_checkpoint.common.__name__ == 'pft_common'; "
            "assert 'ansible' not in sys.modules" % str(tmp_path))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
