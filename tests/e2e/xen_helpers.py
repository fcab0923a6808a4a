# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the Xen e2e tests (tests/e2e/test_xen_*.py): a cluster of two Xen dom0s and a PV test guest.

The tests need compute nodes that already run Xen with the xen_host role applied (migration key,
forced command with pft-probe). They never start a testbed themselves: make test on CI must not
boot a second cluster. Point them at one:

* ``PFT_E2E_SITE=1`` (the default in ``make test``): the session's site.yml-provisioned cluster
  (tests/e2e/conftest.py ``site_cluster``): source = compute1, target = the last spare, compute4.
* ``PFT_XEN_TESTBED=NAME`` (development): a running testbed (``testbed/testbed --name NAME up``) whose compute
  nodes got Xen from ``site.yml --tags xen_host``. Without it every test skips, saying so.
* ``PFT_XEN_INVENTORY=DIR``: an inventory for that testbed (default: one written for it into a
  temporary directory). For the shared, site.yml-provisioned testbed: ``PFT_XEN_TESTBED=<its name>``.
* ``PFT_XEN_SOURCE`` / ``PFT_XEN_TARGET``: the two dom0s (default: the first compute node and the
  spare, the last one).

The fixture builds the LD_PRELOAD shim with the controller's gcc and copies it to both dom0s, builds
the test guest on each (tests/e2e/xen_test_guest.sh: the node's own Debian kernel plus a busybox
initramfs) and writes the guest configs under /etc/xen/pft-test/.
"""
import hashlib
import http.client
import json
import os
import shlex
import subprocess
import tempfile
import time
import urllib.request

import pytest
from pft_paths import REPO

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_SRC = os.path.join(REPO, "roles", "xen_host", "files", "pft-xl-progress.c")
SHIM_DEST = "/usr/local/lib/pft/pft-xl-progress.so"
GUEST_DIR = "/var/lib/pft/test-guest"
CONFIG_DIR = "/etc/xen/pft-test"
# The test guest's memory. Under TCG a migration's time grows with the memory it copies, so it is
# small; but the PV domain builder must fit the unpacked Debian kernel (0x3a00 pages, 58 MiB) plus
# its own 16 MiB of boot structures: 64 and 72 MiB fail "segment kernel too large", 80 boots.
GUEST_MB = 96
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")


def build_shim(out_dir):
    """Compile the shim on the controller; returns its path, or None without gcc."""
    out = os.path.join(out_dir, "pft-xl-progress.so")
    try:
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", out, SHIM_SRC, "-ldl"], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out


class XenCluster(object):
    def __init__(self, tb, inventory, source, target, shim):
        self.tb, self.inventory, self.source, self.target, self.shim = tb, inventory, source, target, shim
        self.subnet_prefix = tb.node(source).address.rsplit(".", 1)[0]
        self.started = []

    # -- plumbing
    def ssh(self, node, cmd, timeout=300, check=True):
        out = subprocess.run(self.tb.ssh_argv(node, cmd), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError("%s: %s failed (rc=%d): %s" % (node, cmd, out.returncode, out.stderr[-2000:]))
        return out

    def module(self, node, name, args, check=False, diff=False, timeout=1500):
        """Run a pft module on a node with ad-hoc ansible; returns (ok, result dict)."""
        argv = [ANSIBLE, node, "-i", self.inventory, "-m", name] + (["-a", json.dumps(args)] if args else [])
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_STDOUT_CALLBACK="ansible.builtin.oneline", ANSIBLE_NOCOLOR="1")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        for line in out.stdout.splitlines():
            if line.startswith(node + " | ") and "=>" in line:
                status, _, payload = line.partition(" => ")
                return ("FAILED" not in status and "UNREACHABLE" not in status), json.loads(payload)
        raise AssertionError("no result from %s on %s: %s %s" % (name, node, out.stdout[-3000:], out.stderr[-3000:]))

    def xl_list(self, node):
        rows = {}
        for line in self.ssh(node, "xl list").stdout.splitlines()[1:]:
            w = line.split()
            if len(w) >= 6:
                rows[w[0]] = dict(domid=int(w[1]), memory_mb=int(w[2]), state=w[4])
        return rows

    def where(self, guest):
        """{node: [names]} for the guest's names (incl. --incoming/--migratedaway) on both nodes."""
        out = {}
        for node in (self.source, self.target):
            out[node] = sorted(n for n in self.xl_list(node) if n == guest or n.startswith(guest + "--"))
        return out

    # -- staging: the xl progress shim and the test guest's kernel and initrd
    def stage(self, nodes=None):
        """Put the shim and the test guest's files on the nodes (both by default): the guest is built
        once, on the source, and the others get the same bytes (as guest_netboot stages identical guest
        files everywhere: two builds differ in their timestamps, and xen_prestage rightly says so). A
        node back from Testbed.reset_node needs this again (its disk is the kept one)."""
        nodes = list(nodes or (self.source, self.target))
        script = open(os.path.join(HERE, "xen_test_guest.sh")).read()
        if self.shim:
            for node in nodes:
                subprocess.run(self.tb.ssh_argv(node, "mkdir -p %s && cat > %s.new && chmod 0644 %s.new && mv %s.new %s"
                                                % (os.path.dirname(SHIM_DEST), SHIM_DEST, SHIM_DEST, SHIM_DEST,
                                                   SHIM_DEST)),
                               input=open(self.shim, "rb").read(), check=True, timeout=120, capture_output=True)
        # rebuilt when the script changed (a reused testbed keeps the guest an older script built)
        stamp = hashlib.sha256(script.encode()).hexdigest()
        build = ('[ "$(cat {d}/.script-sha256 2>/dev/null)" = {s} ] && test -s {d}/initrd.img || '
                 '{{ sh -s {d} && echo {s} > {d}/.script-sha256; }}').format(d=GUEST_DIR, s=stamp)
        out = subprocess.run(self.tb.ssh_argv(self.source, build), input=script, text=True, capture_output=True,
                             timeout=900)
        assert out.returncode == 0, "%s: building the test guest failed: %s" % (self.source, out.stderr[-2000:])
        for name in ("vmlinuz", "initrd.img"):
            path = "%s/%s" % (GUEST_DIR, name)
            data = subprocess.run(self.tb.ssh_argv(self.source, "cat %s" % path), capture_output=True, check=True,
                                  timeout=300).stdout
            for node in nodes:
                if node == self.source:
                    continue
                subprocess.run(self.tb.ssh_argv(node, "mkdir -p %s && cat > %s.new && mv %s.new %s"
                                                % (GUEST_DIR, path, path, path)),
                               input=data, check=True, timeout=300, capture_output=True)

    # -- the test guest
    def guest_ip(self, index):
        return "%s.%d" % (self.subnet_prefix, 150 + index)

    def write_config(self, name, index, memory=GUEST_MB, dirty_mb=0, maxmem=None, nodes=None, dirty_every=0):
        mac = "00:16:3e:7e:00:%02x" % index
        cfg = "\n".join([
            'name = "%s"' % name, 'type = "pv"',
            'kernel = "%s/vmlinuz"' % GUEST_DIR, 'ramdisk = "%s/initrd.img"' % GUEST_DIR,
            'extra = "console=hvc0 quiet pft.ip=%s/24 pft.dirty_mb=%d pft.dirty_every=%d"'
            % (self.guest_ip(index), dirty_mb, dirty_every),
            "memory = %d" % memory, "maxmem = %d" % (maxmem or memory), "vcpus = 1",
            "vif = ['bridge=xenbr0,mac=%s']" % mac, 'on_crash = "destroy"', ""])
        path = "%s/%s.cfg" % (CONFIG_DIR, name)
        for node in nodes or (self.source, self.target):
            self.ssh(node, "mkdir -p %s && printf %%s %s > %s" % (CONFIG_DIR, shlex.quote(cfg), path))
        return path

    def start_guest(self, name, index, node=None, memory=GUEST_MB, dirty_mb=0, dirty_every=0, wait=True):
        node = node or self.source
        self.destroy_everywhere(name)
        path = self.write_config(name, index, memory=memory, dirty_mb=dirty_mb, dirty_every=dirty_every)
        self.ssh(node, "xl create %s" % path, timeout=300)
        self.started.append(name)
        if wait:
            self.wait_heartbeat(self.guest_ip(index), timeout=240)
        return self.guest_ip(index)

    def ensure_guest(self, name, index):
        """The guest running once, on the source, unpaused, with its full GUEST_MB and answering: the
        one an earlier test left when it is so (a boot under TCG costs a minute), else a fresh one."""
        rows = self.xl_list(self.source)
        ip = self.guest_ip(index)
        if (self.where(name) == {self.source: [name], self.target: []} and rows[name]["state"][2] == "-"
                and rows[name]["memory_mb"] == GUEST_MB and self.heartbeat(ip)):
            if name not in self.started:
                self.started.append(name)
            return ip
        return self.start_guest(name, index)

    def destroy_started(self):
        """Every test guest a test started, destroyed on both nodes (after the last Xen test:
        tests/e2e/conftest.py's pytest_runtest_teardown; and at the fixture's end)."""
        for name in self.started:
            self.destroy_everywhere(name)
        self.started = []

    def destroy_everywhere(self, name):
        for node in (self.source, self.target):
            for n in self.xl_list(node):
                if n == name or n.startswith(name + "--"):
                    self.ssh(node, "xl destroy %s" % n, check=False)

    @staticmethod
    def heartbeat(ip, timeout=2.0):
        """(count, uptime, max_gap, ip, id) from the guest, or None when it does not answer."""
        try:
            with urllib.request.urlopen("http://%s/hb" % ip, timeout=timeout) as r:
                hb = r.read().decode().split()
            with urllib.request.urlopen("http://%s/id" % ip, timeout=timeout) as r:
                gid = r.read().decode().strip()
        except (OSError, ValueError, http.client.HTTPException):
            # HTTPException: the guest's busybox httpd cut a reply short (IncompleteRead, seen under load)
            return None
        if len(hb) < 4:
            return None
        return dict(count=int(hb[0]), uptime=float(hb[1]), max_gap=float(hb[2]), ip=hb[3], id=gid)

    @staticmethod
    def dirty_passes(ip, timeout=2.0):
        """How many times the guest's dirtier has rewritten its memory (xen_test_guest.sh), or None."""
        try:
            with urllib.request.urlopen("http://%s/dirty" % ip, timeout=timeout) as r:
                return int(r.read().decode().strip())
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def wait_dirtying(self, ip, passes=3, timeout=180):
        """Wait until the dirtier has made `passes` more passes: it runs, and is not starved or killed."""
        end = time.monotonic() + timeout
        first = None
        while time.monotonic() < end:
            n = self.dirty_passes(ip)
            if n is not None:
                first = n if first is None else first
                if n - first >= passes:
                    return n
            time.sleep(1)
        raise AssertionError("guest %s: its dirtier made no %d passes within %d s (from %s to %s): is its memory "
                             "too small for dirty_mb? (the guest's OOM killer ends it)"
                             % (ip, passes, timeout, first, self.dirty_passes(ip)))

    def console_tail(self, node, name, lines=15):
        """The last lines of a guest's console (xl console wants a terminal: script gives it one)."""
        out = subprocess.run(self.tb.ssh_argv(node, "timeout 5 script -qc %s /dev/null | tail -%d"
                                                   % (shlex.quote("xl console " + name), lines)),
                             capture_output=True, text=True, timeout=60)
        return out.stdout.replace("\r", "")

    def wait_heartbeat(self, ip, timeout=240, guest=None, node=None):
        """The guest's heartbeat; when it gives none in time, fail with its console's last lines
        (guest and node given) or without."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hb = self.heartbeat(ip)
            if hb:
                return hb
            time.sleep(1)
        console = ""
        if guest and node:
            console = "; its console on %s ends:\n%s" % (node, self.console_tail(node, guest))
        raise AssertionError("guest %s gave no heartbeat within %d s%s" % (ip, timeout, console))


class Poller(object):
    """Polls a guest's heartbeat from the controller in a thread while a migration runs."""

    def __init__(self, ip, interval=0.2):
        import threading
        self.ip, self.interval, self.samples, self._stop = ip, interval, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            self.samples.append((t, XenCluster.heartbeat(self.ip, timeout=1.0)))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def answered(self):
        return [(t, hb) for t, hb in self.samples if hb]

    def longest_silence(self):
        last, longest = None, 0.0
        for t, hb in self.samples:
            if hb:
                if last is not None:
                    longest = max(longest, t - last)
                last = t
        return longest


def assert_runs_once_on(cluster, guest, node):
    """The guest runs on node and not on the other dom0 of the pair (never twice, never nowhere)."""
    where = cluster.where(guest)
    other = cluster.target if node == cluster.source else cluster.source
    assert where[node] == [guest] and where[other] == [], where


def _free_node(tb, computes, source):
    """The last compute node (not the source) whose dom0 runs no guest but the Xen tests' own: on
    a cluster as site.yml leaves it, the last spare. (A reused testbed whose guests the watch tests
    moved has another free node; the target must be free, the tests size its memory so.)"""
    for node in reversed(computes):
        if node != source and all(g.startswith("pft") for g in tb._domus(node)):
            return node
    pytest.fail("no compute node of testbed %s but %s is free of guests for the Xen tests (set PFT_XEN_TARGET)"
                % (tb.name, source))


@pytest.fixture(scope="session")
def xen_cluster(request):
    """Two Xen dom0s: the site.yml-provisioned session cluster (source = first compute node, target
    = the spare), or the testbed PFT_XEN_TESTBED names (a developer's Xen testbed)."""
    if os.geteuid() != 0:
        pytest.skip("the Xen e2e tests need root (testbed network namespace)")
    name = os.environ.get("PFT_XEN_TESTBED")
    inventory = os.environ.get("PFT_XEN_INVENTORY")
    if name:
        from pft_testbed.testbed import Testbed
        tb = Testbed(name)
        if not tb.exists():
            pytest.skip("PFT_XEN_TESTBED=%s is not running" % name)
    elif os.environ.get("PFT_E2E_SITE"):
        site = request.getfixturevalue("site_cluster")
        tb, inventory = site.testbed, site.hosts_file
    else:
        pytest.skip("no Xen testbed: these run on the site.yml-provisioned cluster (PFT_E2E_SITE=1) or on "
                    "PFT_XEN_TESTBED (a running testbed whose compute nodes run Xen); see tests/e2e/xen_helpers.py")
    computes = [n.name for n in tb.nodes if n.role == "compute"]
    source = os.environ.get("PFT_XEN_SOURCE", computes[0])
    target = os.environ.get("PFT_XEN_TARGET") or _free_node(tb, computes, source)
    for node in (source, target):
        out = subprocess.run(tb.ssh_argv(node, "xl info"), capture_output=True, text=True, timeout=120)
        if out.returncode != 0 or "xen_version" not in out.stdout:
            pytest.skip("%s of testbed %s does not run Xen (apply site.yml --tags xen_host)" % (node, tb.name))
    tmp = tempfile.mkdtemp(prefix="pft-xen-e2e-")
    inventory = inventory or tb.write_inventory(os.path.join(tmp, "inventory"))
    if os.path.isdir(inventory):
        inventory = os.path.join(inventory, "hosts.yml")
    shim = build_shim(tmp)
    cluster = XenCluster(tb, inventory, source, target, shim)
    cluster.stage()
    yield cluster
    cluster.destroy_started()
