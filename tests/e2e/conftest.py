"""The shared e2e testbed: one virtual cluster (head + 3 compute) for the whole session.

Any e2e test gets it with the ``testbed`` fixture (a :class:`pft_testbed.testbed.Testbed`
that is up) and its Ansible inventory with ``testbed_inventory`` (path of hosts.yml).

* ``PFT_E2E_TESTBED`` names it (default ``e2e``, so it never touches a developer's ``pft``).
* ``PFT_E2E_REUSE=1`` uses an already running testbed of that name and leaves it running.

At the end of the session the testbed is taken down and the teardown asserts that nothing
(process, namespace, link, mount, state file) is left behind.
"""
import os

import pytest

NAME = os.environ.get("PFT_E2E_TESTBED", "e2e")


# The first test that uses the testbed also pays for the image build (cold cache: 2-5 min) and
# the boot (2-4 min under load): give those tests more than pytest.ini's 900 s.
SETUP_TIMEOUT = 2400


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep) and "testbed" in getattr(item, "fixturenames", ()):
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))


def _progress(msg):
    print(f"[testbed] {msg}", flush=True)


@pytest.fixture(scope="session")
def testbed():
    if os.geteuid() != 0:
        pytest.skip("the e2e testbed needs root (network namespaces, taps)")
    from pft_testbed.testbed import Testbed
    tb = Testbed(NAME, progress=_progress)
    reuse = bool(os.environ.get("PFT_E2E_REUSE")) and tb.exists()
    if not reuse:
        if tb.exists():
            tb.down()                 # left over from an interrupted session
        tb.up(compute=3)
    yield tb
    if not reuse:
        tb.down()
        assert tb.leftovers() == []


@pytest.fixture(scope="session")
def testbed_inventory(testbed, tmp_path_factory):
    """Path of an inventory (hosts.yml + group_vars) for the session testbed."""
    return testbed.write_inventory(str(tmp_path_factory.mktemp("inventory")))
