# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shared e2e testbed: one virtual cluster (head + 4 compute) for the whole session.

guest1 runs on compute1, guest2 on compute2 (inventory/testbed-site), compute3 and compute4 are
the spares: two, so that the watch can be tested moving two guests at once (issue 7).

Any e2e test gets it with the ``testbed`` fixture (a :class:`pft_testbed.testbed.Testbed`
that is up) and its Ansible inventory with ``testbed_inventory`` (path of hosts.yml).

* ``PFT_E2E_TESTBED`` names it (default ``e2e``, so it never touches a developer's ``pft``).
* ``PFT_E2E_REUSE=1`` uses an already running testbed of that name and leaves it running.
* ``PFT_E2E_KEEP=1`` leaves the session's testbed running at the end (to look at it after a
  failure, or to rerun tests on it with ``PFT_E2E_REUSE=1 PFT_E2E_SITE_PROVISIONED=1``).

At the end of the session the testbed is taken down and the teardown asserts that nothing
(process, namespace, link, mount, state file) is left behind.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import phase_clock  # tests/phase_clock.py: make test's phase table
import pytest
from pft_paths import REPO
from xen_helpers import xen_cluster  # noqa: F401 (the Xen tests' fixture: here, so one per session)

from pft_testbed.errors import TestbedError

NAME = os.environ.get("PFT_E2E_TESTBED", "e2e")
COMPUTE, SPARES = 4, 2


# The first test that uses the testbed also pays for the image build (cold cache: 2-5 min) and
# the boot (2-4 min under load): give those tests more than pytest.ini's 900 s.
SETUP_TIMEOUT = 2400


def pytest_collection_modifyitems(config, items):
    _order_site_items(items)          # site_cluster users last, with SITE_TIMEOUT (below)
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep) and "testbed" in getattr(item, "fixturenames", ()):
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test that uses ``xen_cluster``: its test guests go (XenCluster.destroy_started),
    before the watch tests, which want only the site's guests on the compute nodes. tryfirst: the
    fixture values are still there (pytest's own teardown, which finalizes them, runs after)."""
    names = getattr(item, "fixturenames", ())
    if "xen_cluster" in names and "xen_cluster" not in getattr(nextitem, "fixturenames", ()):
        cluster = getattr(item, "funcargs", {}).get("xen_cluster")
        if cluster is not None:
            cluster.destroy_started()


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
        phase_clock.record("testbed up", tb.up(compute=COMPUTE, spares=SPARES))
    yield tb
    if os.environ.get("PFT_E2E_KEEP"):
        _progress(f"left running (PFT_E2E_KEEP): testbed/testbed --name {tb.name} down takes it down")
    elif not reuse:
        tb.down()
        assert tb.leftovers() == []


@pytest.fixture(scope="session")
def testbed_inventory(testbed, tmp_path_factory):
    """Path of an inventory (hosts.yml + group_vars) for the session testbed."""
    return testbed.write_inventory(str(tmp_path_factory.mktemp("inventory")))


# -- the provisioned pft cluster (playbooks/site.yml on the session testbed) -----------------------
#
# ``site_cluster`` converges playbooks/site.yml on the ``testbed`` once per session, runs it a
# second time (idempotence), and hands later tests a :class:`SiteCluster`: the testbed, the
# inventory, the guests and where they run. Any e2e test that needs Xen, Ganglia and running
# guests takes this fixture instead of provisioning anything itself.
#
# Order: tests that use the plain ``testbed`` only (tests/e2e/test_testbed.py kills, reboots and
# checks eth0 on bare nodes) run first; then tests/e2e/test_site.py (converge, idempotence,
# verify); then every other test that uses ``site_cluster`` (they may migrate guests, so they come
# after the verify). See pytest_collection_modifyitems below.


SITE_TIMEOUT = 5400          # per test using site_cluster: the first one pays for converge + second run
SITE_PLAYBOOK = os.path.join(REPO, "playbooks", "site.yml")
SITE_VARS = os.path.join(REPO, "inventory", "testbed-site")
VENV_BIN = os.path.join(REPO, ".venv", "bin")
_MARKS = ("TASK [", "PLAY [", "RUNNING HANDLER [", "PLAY RECAP")
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _site_order(item):
    """0: not an e2e test; 1: plain-testbed e2e tests; 2: test_site.py; 3: the Xen tests
    (xen_cluster); 4: the other site users (the watch tests).

    The tests that need no testbed run first: once it is up, its five TCG VMs take most of the two
    cores even when idle, and the unit and integration tests (timing-sensitive ones among them)
    would run slower beside them. The Xen tests come right after test_site.py: they want the
    guests where site.yml put them (their target a spare without a guest), which is how the
    converge or the kept cluster leaves them. The watch tests take the placement as they find it
    and come last, so that nobody pays for moving the guests back home (two migrations under TCG)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if not str(item.fspath).startswith(here + os.sep):
        return 0
    names = getattr(item, "fixturenames", ())
    if "site_cluster" not in names and "xen_cluster" not in names:
        return 1
    if os.path.basename(str(item.fspath)) == "test_site.py":
        return 2
    return 3 if "xen_cluster" in names else 4


def _order_site_items(items):
    """Called by pytest_collection_modifyitems above: tests without a testbed, plain-testbed tests,
    test_site.py, the Xen tests, the other site users."""
    items[:] = sorted(items, key=_site_order)        # stable: the order within each class is kept
    for item in items:
        if _site_order(item) >= 2 and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SITE_TIMEOUT))


@dataclass
class PlaybookRun:
    """One ansible-playbook run: exit code, wall time, PLAY RECAP per host, full output."""
    rc: int
    seconds: float
    recap: dict                   # host -> {"ok": n, "changed": n, "unreachable": n, "failed": n}
    output: str
    log: str                      # path of the saved output
    tasks: list = field(default_factory=list)    # [(header, seconds)] in run order

    def changed(self):
        return {h: r["changed"] for h, r in self.recap.items() if r["changed"]}

    def tail(self, lines=80):
        return "\n".join(self.output.splitlines()[-lines:])

    def slowest(self, n=15):
        """The n longest tasks, [(header, seconds)], longest first (where a converge spends its time)."""
        return sorted(self.tasks, key=lambda t: -t[1])[:n]

    def slowest_text(self, n=15):
        return "\n".join(f"{seconds:8.1f} s  {name}" for name, seconds in self.slowest(n))


def _task_times(marks, total):
    """[(header, seconds)] from the times the headers were printed: a task lasts until the next one.

    A task's header is printed when it starts on the first host, so with several hosts in a play
    this is the time until the slowest host finished it."""
    ends = [t for t, _ in marks[1:]] + [total]
    return [(name, end - t) for (t, name), end in zip(marks, ends) if not name.startswith("PLAY ")]


@dataclass
class SiteCluster:
    testbed: object               # pft_testbed.testbed.Testbed, up
    hosts_file: str               # the testbed's inventory (hosts.yml + group_vars: BMC, testbed facts)
    site_vars: str                # inventory/testbed-site (pft_cluster_*, pft_guests, role variables)
    logdir: str
    guests: list = field(default_factory=list)   # [{"name", "host", "mac", "ip"}] from pft_guests
    converge: PlaybookRun = None
    idempotence: PlaybookRun = None
    restored: str = None          # key of the kept cluster loaded instead of a converge (warm run)

    @property
    def inventory_args(self):
        """ansible-playbook / ansible arguments for this cluster."""
        return ["-i", self.hosts_file, "-i", self.site_vars]

    @property
    def spares(self):
        return [n.name for n in self.testbed.nodes if n.spare]

    @property
    def compute(self):
        return [n.name for n in self.testbed.nodes if n.role == "compute"]

    def guest(self, name):
        return next(g for g in self.guests if g["name"] == name)

    def env(self):
        return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                    ANSIBLE_NOCOLOR="1", PY_COLORS="0", PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
                    ANSIBLE_SSH_ARGS=testbed_ssh_args())

    def playbook(self, playbook, *args, name=None, timeout=3600):
        """Run a playbook against the cluster; returns a PlaybookRun (never raises on failure)."""
        name = name or os.path.splitext(os.path.basename(playbook))[0]
        log = os.path.join(self.logdir, f"{name}.log")
        argv = [os.path.join(VENV_BIN, "ansible-playbook"), *self.inventory_args, playbook, *args]
        started = time.monotonic()
        marks = []                # (seconds since start, "TASK [...]" / "PLAY [...]" / "RUNNING HANDLER [...]")
        with open(log, "w", buffering=1) as f:       # line by line: the log can be followed while it runs
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                for line in proc.stdout:
                    f.write(line)
                    if line.startswith(_MARKS):
                        marks.append((time.monotonic() - started, line.rstrip(" *\n")))
                rc = proc.wait()
            finally:
                timer.cancel()
        seconds = time.monotonic() - started
        output = open(log, errors="replace").read()
        recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                              "failed": int(m.group(5))} for m in _RECAP.finditer(output.split("PLAY RECAP")[-1])}
        run = PlaybookRun(rc, seconds, recap, output, log, _task_times(marks, seconds))
        with open(log, "a") as f:
            f.write(f"\nslowest tasks (from the task's header to the next header):\n{run.slowest_text()}\n")
        return run

    def ansible(self, pattern, module, args="", timeout=600):
        """Ad-hoc module run (e.g. ansible.builtin.command) on hosts of the cluster; CompletedProcess."""
        argv = [os.path.join(VENV_BIN, "ansible"), *self.inventory_args, pattern, "-m", module]
        if args:
            argv += ["-a", args]
        return subprocess.run(argv, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def read_guests(self):
        # ansible-core has no json stdout callback any more (ansible.posix has): the default one, with
        # results as JSON, prints "head | SUCCESS => {...}"
        env = dict(self.env(), ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1")
        argv = [os.path.join(VENV_BIN, "ansible"), *self.inventory_args, "head", "-m", "ansible.builtin.debug",
                "-a", "var=pft_guests"]
        out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True)
        result = json.loads(out.stdout.split("=>", 1)[1])["pft_guests"]
        return [{k: g[k] for k in ("name", "host", "mac", "ip")} for g in result]


# ansible.cfg's ServerAliveInterval=10 gives up on a node after three unanswered probes (30 s). A TCG
# node on the 2 shared cores, while the others run apt or a migration, has missed that: the second
# run of a CI session lost three computes at once ("Data could not be sent to remote host", ssh
# exit 255, empty stderr: the probes' timeout is logged below LogLevel ERROR). On the testbed a
# node may stall that long and still be alive; 12 probes (2 min) is what the harness allows.
TESTBED_SERVER_ALIVE_COUNT_MAX = 12


def testbed_ssh_args():
    """ansible.cfg's [ssh_connection] ssh_args, with the testbed's ServerAliveCountMax."""
    import configparser
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(REPO, "ansible.cfg"))
    args = cfg.get("ssh_connection", "ssh_args", fallback="")
    return f"{args} -o ServerAliveCountMax={TESTBED_SERVER_ALIVE_COUNT_MAX}".strip()


def _converge_key(testbed):
    """The kept-cluster key of a converge of site.yml on this testbed (pft_testbed.kept)."""
    from importlib.metadata import version

    from pft_testbed import kept as keptmod
    inputs = keptmod.converge_inputs(REPO, testbed.state["plan"], testbed.state["image"], version("ansible-core"),
                                     keptmod.qemu_version())
    return keptmod.KeptCluster(keptmod.converge_key(inputs), testbed.cache_dir)


def _kept_cluster(testbed):
    """(KeptCluster, None) when a kept cluster can replace the converge, else (None, why not)."""
    from pft_testbed import kept as keptmod
    if _flag("PFT_E2E_COLD", False):
        return None, "PFT_E2E_COLD is set"
    kept = _converge_key(testbed)
    cluster_name = f"pft-{testbed.name}"
    ok, why = kept.valid([n.name for n in testbed.nodes], keptmod.controller_files(cluster_name),
                         saved=kept.saved_controller_paths(cluster_name))
    return (kept, None) if ok else (None, why)


def _keep_cluster(testbed, cluster):
    """After a converge and an idempotent second run: keep the cluster for later sessions.

    A failure to keep costs the next session a converge, nothing more: it is reported, not raised."""
    from pft_testbed import kept as keptmod
    kept = _converge_key(testbed)
    meta = {"converge_s": round(cluster.converge.seconds), "second_run_s": round(cluster.idempotence.seconds),
            "requires": keptmod.controller_files(f"pft-{testbed.name}")}
    try:
        phase_clock.record("keep converged cluster", testbed.keep(kept, meta), kept.key)
        saved = kept.save_controller_files(f"pft-{testbed.name}")
        _site_progress(f"kept cluster {kept.key}: controller files saved with it: {', '.join(saved) or 'none'}")
        keptmod.prune(testbed.cache_dir, progress=_site_progress)
    except Exception as exc:                          # noqa: BLE001 (any failure: converge next time)
        _site_progress(f"could not keep the converged cluster: {exc}")


def _flag(name, default):
    """An on/off environment switch: unset or empty is `default`; 0, no, false and off are off."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "no", "false", "off")


def _site_progress(msg):
    print(f"[site] {msg}", flush=True)


@pytest.fixture(scope="session")
def site_cluster(testbed, testbed_inventory, tmp_path_factory):
    """The session testbed provisioned by playbooks/site.yml (converged once, then run again).

    Fails (for every test that uses it) if the converge fails; the idempotence result is left to
    tests/e2e/test_site.py to judge. Logs: SiteCluster.logdir (converge.log, idempotence.log).
    """
    cluster = SiteCluster(testbed, testbed_inventory, SITE_VARS, str(tmp_path_factory.mktemp("site")))
    if os.environ.get("PFT_E2E_SITE_PROVISIONED") and os.environ.get("PFT_E2E_REUSE"):
        # a developer's reused testbed that site.yml already provisioned: no converge here
        _site_progress(f"testbed {testbed.name} is provisioned already (PFT_E2E_SITE_PROVISIONED): no converge")
        cluster.guests = cluster.read_guests()
        return cluster
    kept, reason = _kept_cluster(testbed)
    if kept is not None:
        # warm: the converge's inputs are those of a cluster kept earlier; load it instead
        _site_progress(f"kept cluster {kept.key} matches this converge's inputs: loading it "
                       "(PFT_E2E_COLD=1 converges from bare nodes instead)")
        try:
            phase_clock.record("restore kept cluster", testbed.restore(kept), kept.key)
            back = kept.put_back_controller_files(f"pft-{testbed.name}")
            if back:
                _site_progress(f"controller files of kept cluster {kept.key} put back: {', '.join(back)}")
        except TestbedError as exc:
            # a kept cluster that does not load is dropped, and the session converges as if cold
            _site_progress(f"kept cluster {kept.key} did not load ({exc}); dropping it, converging from bare nodes")
            kept.remove()
            testbed.rebuild_nodes()
            reason = f"kept cluster {kept.key} did not load"
            kept = None
    if kept is not None:
        cluster.restored = kept.key
        cluster.idempotence = cluster.playbook(SITE_PLAYBOOK, name="idempotence")
        phase_clock.record("second run", cluster.idempotence.seconds, "the one site.yml run over the kept cluster")
        _site_progress(f"site.yml over the kept cluster: rc={cluster.idempotence.rc} in "
                       f"{cluster.idempotence.seconds:.0f} s, changed: {cluster.idempotence.changed() or 'none'}; "
                       "slowest tasks:\n" + cluster.idempotence.slowest_text(12))
        cluster.guests = cluster.read_guests()
        return cluster
    _site_progress(f"converging {SITE_PLAYBOOK} on testbed {testbed.name} from bare nodes ({reason}; "
                   f"logs in {cluster.logdir})")
    cluster.converge = cluster.playbook(SITE_PLAYBOOK, name="converge")
    phase_clock.record("converge", cluster.converge.seconds)
    _site_progress(f"converge: rc={cluster.converge.rc} in {cluster.converge.seconds:.0f} s; slowest tasks:\n"
                   + cluster.converge.slowest_text(12))
    if cluster.converge.rc != 0:
        sys.stdout.write(cluster.converge.tail(150) + "\n")
        pytest.fail(f"site.yml did not converge on testbed {testbed.name} (rc {cluster.converge.rc}, "
                    f"{cluster.converge.seconds:.0f} s); log: {cluster.converge.log}")
    cluster.idempotence = cluster.playbook(SITE_PLAYBOOK, name="idempotence")
    phase_clock.record("second run", cluster.idempotence.seconds)
    _site_progress(f"second run: rc={cluster.idempotence.rc} in {cluster.idempotence.seconds:.0f} s, "
                   f"changed: {cluster.idempotence.changed() or 'none'}; slowest tasks:\n"
                   + cluster.idempotence.slowest_text(12))
    if _flag("PFT_E2E_KEEP_CLUSTER", True) and cluster.idempotence.rc == 0 and not cluster.idempotence.changed():
        _keep_cluster(testbed, cluster)
    cluster.guests = cluster.read_guests()
    return cluster
