# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""End-to-end: playbooks/site.yml provisions the session testbed (issue 5).

The ``site_cluster`` fixture (tests/e2e/conftest.py) converges site.yml once per session and runs
it a second time; these tests judge both runs, then run the molecule scenario's testinfra verify
(molecule/default/tests/, the same files ``molecule verify`` uses) against the converged cluster.
Later e2e tests reuse the cluster through the same fixture.
"""
import os
import subprocess
import sys
import time

import phase_clock
import pytest
from pft_paths import REPO

# Not in the default run until it has passed end to end on a clean clone within CI's budget:
# PFT_E2E_SITE=1 runs it (e.g. PFT_E2E_SITE=1 PFT_E2E_TESTBED=c5 pytest tests/e2e/test_site.py).
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.environ.get("PFT_E2E_SITE"),
                                 reason="site.yml e2e is opt-in for now: PFT_E2E_SITE=1 (docs/site.md)")]

VERIFY_TESTS = os.path.join(REPO, "molecule", "default", "tests")
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")


def _runs(site_cluster):
    if site_cluster.restored:
        pytest.skip(f"warm run: the kept cluster {site_cluster.restored} (converged from bare nodes by an earlier "
                    "session with the same inputs) was loaded instead of a converge; PFT_E2E_COLD=1 converges")
    if site_cluster.converge is None and site_cluster.idempotence is None:
        pytest.skip("PFT_E2E_SITE_PROVISIONED: this session did not run site.yml")


def test_site_converges_from_bare_nodes(site_cluster):
    _runs(site_cluster)
    run = site_cluster.converge
    print(f"converge: {run.seconds:.0f} s, recap {run.recap}")
    assert run.rc == 0, run.tail()
    assert set(run.recap) >= {"head", *site_cluster.compute}, run.recap
    assert not any(r["failed"] or r["unreachable"] for r in run.recap.values()), run.recap


def test_second_run_changes_nothing(site_cluster):
    """After a converge, or over a kept cluster (warm run): a run of site.yml changes nothing."""
    if site_cluster.idempotence is None:
        pytest.skip("PFT_E2E_SITE_PROVISIONED: this session did not run site.yml")
    run = site_cluster.idempotence
    print(f"second run: {run.seconds:.0f} s, recap {run.recap}")
    assert run.rc == 0, run.tail()
    assert run.changed() == {}, f"not idempotent: {run.changed()} (log {run.log})"


def test_testinfra_verify(site_cluster):
    """xl info, gmond with every host and the pft metrics, the NFS export, the guests, mpiexec, the migration key."""
    argv = [VENV_PYTHON, "-m", "pytest", VERIFY_TESTS, "-p", "no:cacheprovider", "-v", "-rA", "--durations=10",
            "--hosts=ansible://all", f"--ansible-inventory={site_cluster.hosts_file}"]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=site_cluster.env(), capture_output=True, text=True, timeout=1800)
    phase_clock.record("verify", time.monotonic() - started)
    sys.stdout.write(proc.stdout[-30000:])
    sys.stderr.write(proc.stderr[-10000:])
    assert proc.returncode == 0, "testinfra verify failed (see output)"
    assert " passed" in proc.stdout.splitlines()[-1]


def test_guests_run_where_the_inventory_puts_them(site_cluster):
    """The facts later e2e tests rely on: each guest on its node, nothing on the spares."""
    assert site_cluster.guests and site_cluster.spares
    for node in site_cluster.compute:
        out = site_cluster.testbed.ssh(node, "xl list").stdout.splitlines()[1:]
        running = sorted(line.split()[0] for line in out if line.split()[0] != "Domain-0")
        expected = sorted(g["name"] for g in site_cluster.guests if g["host"] == node)
        assert running == expected, (node, running)
