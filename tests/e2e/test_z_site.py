"""End-to-end: playbooks/site.yml on the session testbed, through molecule's default scenario.

`molecule test` (converge -> idempotence -> verify) runs against the session's testbed
(PFT_MOLECULE_TESTBED = its name, PFT_MOLECULE_REUSE=1, so molecule's create/destroy neither
boot nor take it down: the `testbed` fixture owns it). The testinfra verify
(molecule/default/tests/test_default.py) checks Xen, Ganglia, the NFS export, the guests,
mpiexec across the guests and the restricted migration key.

The file name sorts last on purpose: converging turns the shared testbed's compute nodes
into Xen hosts (eth0 enslaved to xenbr0), which the plain-node tests must not see.
"""
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Bare nodes to verified cluster: image build, Xen install + reboot, guest root build under TCG.
MOLECULE_TIMEOUT = 3600


@pytest.mark.timeout(MOLECULE_TIMEOUT + 600)
def test_site_converges_idempotent_and_verified(testbed):
    env = dict(os.environ, PFT_MOLECULE_TESTBED=testbed.name, PFT_MOLECULE_REUSE="1",
               PATH=os.path.join(REPO, ".venv", "bin") + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    started = time.monotonic()
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "molecule"), "test", "--scenario-name", "default"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=MOLECULE_TIMEOUT)
    elapsed = time.monotonic() - started
    sys.stdout.write(proc.stdout[-20000:])
    sys.stderr.write(proc.stderr[-20000:])
    assert proc.returncode == 0, f"molecule test failed after {elapsed:.0f} s (see output)"
    recap = re.findall(r"changed=(\d+)", proc.stdout)
    assert recap, "no play recap in molecule's output"
    print(f"molecule test on testbed {testbed.name}: {elapsed:.0f} s")
