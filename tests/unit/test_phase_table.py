# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The phase table of ``make test`` (scripts/phase_table.py) and its recorder (tests/phase_clock.py)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import phase_clock
from pft_paths import REPO

SCRIPT = os.path.join(REPO, "scripts", "phase_table.py")
_spec = importlib.util.spec_from_file_location("phase_table", SCRIPT)
phase_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(phase_table)


def write(path, *records):
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def rec(phase, seconds, detail="", at=None):
    return {"phase": phase, "seconds": seconds, "detail": detail, "at": at}


def test_table_orders_sums_and_totals_the_phases(tmp_path):
    path = tmp_path / "phases.jsonl"
    write(path,
          rec("make test start", 0, at=1000.0),
          rec("setup", 2.0), rec("lint", 40.0),
          rec("e2e test_testbed.py", 100.0, "3 tests"),
          rec("converge", 600.0), rec("testbed up", 200.0),
          rec("e2e test_site.py", 30.0, "5 tests"),
          rec("custom", 1.5), rec("unit", 60.0, "900 tests"),
          rec("verify", 10.0), rec("verify", 5.0))
    with open(path, "a") as f:
        f.write('{"phase": "cut by a kil\n')                   # a torn line is skipped
        f.write(json.dumps(rec("make test end", 0, at=2200.0)) + "\n")
    out = phase_table.table(phase_table.read(str(path))).splitlines()
    names = [line.split("  ")[0] for line in out[2:-3]]   # down to the line above TOTAL
    assert names == ["setup", "lint", "unit", "testbed up", "converge", "verify",
                     "e2e test_testbed.py", "e2e test_site.py", "custom", "(not in a phase)"]
    rows = {line.split("  ")[0].strip(): line.split() for line in out[2:]}
    assert "integration" not in rows and "second run" not in rows
    assert rows["verify"][1:3] == ["15.0", "0.2"]
    assert rows["unit"][-2:] == ["900", "tests"]
    assert rows["TOTAL"][1:] == ["1200.0", "20.0", "wall"]
    assert rows["(not in a phase)"][4] == "151.5"
    assert out[-1] == ("PHASES setup=2.0 lint=40.0 unit=60.0 testbed_up=200.0 converge=600.0 "
                       "verify=15.0 e2e_test_testbed.py=100.0 e2e_test_site.py=30.0 custom=1.5 "
                       "total=1200.0")


def test_total_is_the_sum_without_the_markers(tmp_path):
    path = tmp_path / "phases.jsonl"
    write(path, rec("setup", 1.0), rec("unit", 2.5))
    out = phase_table.table(phase_table.read(str(path)))
    assert "(not in a phase)" not in out
    assert out.splitlines()[-1] == "PHASES setup=1.0 unit=2.5 total=3.5"
    assert phase_table.table(phase_table.read(str(tmp_path / "absent"))) == "no phases recorded"


def test_cli_records_and_prints(tmp_path):
    path = str(tmp_path / "phases.jsonl")
    assert phase_table.main([path, "--record", "setup", "--seconds", "1.25"]) == 0
    assert phase_table.main([path, "--record", "lint", "--since", "0"]) == 0
    got = phase_table.read(path)
    assert [r["phase"] for r in got] == ["setup", "lint"]
    assert got[0]["seconds"] == 1.25 and got[1]["seconds"] > 1e9


def test_record_appends_a_line_and_charges_the_current_test(tmp_path, monkeypatch):
    path = tmp_path / "phases.jsonl"
    monkeypatch.setenv(phase_clock.ENV, str(path))
    phase_clock.record("converge", 1.5, "site.yml")
    phase_clock.record("verify", 0.5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["phase"], r["seconds"], r["detail"]) for r in lines] == [
        ("converge", 1.5, "site.yml"), ("verify", 0.5, "")]
    # this test runs under the plugin (tests/conftest.py): its time is charged 2.0 s less
    assert phase_clock._inside[phase_clock._current] == 2.0
    phase_clock._inside.pop(phase_clock._current)
    monkeypatch.delenv(phase_clock.ENV)
    phase_clock.record("verify", 0.0)                   # unset: nothing written, no error
    assert len(path.read_text().splitlines()) == 2


def test_plugin_records_unit_integration_and_e2e_modules(tmp_path):
    """A small session under the plugin: fixture time recorded inside an e2e test is not counted."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    integration\n    e2e\n")
    (tmp_path / "test_u.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    (tmp_path / "test_i.py").write_text(textwrap.dedent("""\
        import pytest
        pytestmark = pytest.mark.integration
        def test_c():
            pass
        """))
    (tmp_path / "e2e").mkdir()
    (tmp_path / "e2e" / "test_x.py").write_text(textwrap.dedent("""\
        import time
        import pytest
        import phase_clock
        @pytest.fixture(scope="module")
        def cluster():
            t = time.monotonic()
            time.sleep(0.4)
            phase_clock.record("converge", time.monotonic() - t)
        def test_d(cluster):
            pass
        """))
    phases = tmp_path / "phases.jsonl"
    env = dict(os.environ, PFT_PHASES=str(phases), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "tests"), os.path.join(REPO, "scripts")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "phase_clock",
                           "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {r["phase"]: r for r in phase_table.read(str(phases))}
    assert set(got) == {"unit", "integration", "converge", "e2e test_x.py"}
    assert got["unit"]["detail"] == "2 tests" and got["integration"]["detail"] == "1 test"
    assert got["converge"]["seconds"] >= 0.4
    assert got["e2e test_x.py"]["seconds"] < 0.3
