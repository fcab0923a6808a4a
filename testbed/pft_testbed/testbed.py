# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A running virtual cluster: network namespace, QEMU/TCG nodes, ipmi_sim BMCs.

Python API (the CLI, e2e tests and molecule use the same)::

    tb = Testbed("pft")                 # state in <cache>/run/pft
    tb.up(compute=3)                    # image (cached), network, BMCs, nodes; waits for ssh
    tb.ssh("compute1", "uname -r")      # CompletedProcess
    tb.heat("compute1", "CPU1 Temp", 92); tb.cool("compute1")
    tb.write_inventory("inventory/testbed")
    tb.down()                           # nothing left behind
    assert tb.leftovers() == []

Every process the testbed starts has its state directory or its QEMU name (``pft-NAME-NODE``)
on its command line; ``down`` finds them that way even when the state file is gone.
"""
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from pft_testbed import config, host, inventory
from pft_testbed.errors import TestbedError
from pft_testbed.image import ImageBuilder, default_cache_dir

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")
BOOT_TIMEOUT = int(os.environ.get("PFT_TESTBED_BOOT_TIMEOUT", "600"))
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def state_root():
    return os.environ.get("PFT_TESTBED_STATE") or os.path.join(default_cache_dir(), "run")


def strip_ansi(text):
    return ANSI_RE.sub("", text)


def _proc_cmdlines():
    """(pid, argv) of every process on the host."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            yield int(pid), argv


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(self, name="pft", progress=None, cache_dir=None):
        self.name = config.check_name(name)
        self.progress = progress or (lambda msg: print(msg, flush=True))
        self.cache_dir = cache_dir or default_cache_dir()
        self.state_dir = os.path.join(state_root(), name)
        self.state_file = os.path.join(self.state_dir, "state.json")
        self.key_file = os.path.join(self.state_dir, "id_ed25519")
        self.netns = f"pft-{name}"
        self._state = None

    # -- state ----------------------------------------------------------------
    @property
    def state(self):
        if self._state is None:
            if not os.path.exists(self.state_file):
                raise TestbedError(f"testbed {self.name!r} is not up (no {self.state_file}); "
                                   "run: testbed/testbed up")
            with open(self.state_file) as f:
                self._state = json.load(f)
        return self._state

    def _save(self):
        tmp = self.state_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._state, f, indent=2)
        os.replace(tmp, self.state_file)

    @property
    def plan(self):
        return config.Plan.from_dict(self.state["plan"])

    @property
    def nodes(self):
        return self.plan.nodes

    def exists(self):
        return os.path.exists(self.state_file)

    def node(self, name):
        try:
            return self.plan.node(name)
        except KeyError:
            raise TestbedError(f"testbed {self.name!r} has no node {name!r}; nodes: "
                               f"{', '.join(n.name for n in self.nodes)}") from None

    def node_dir(self, name):
        return os.path.join(self.state_dir, "nodes", name)

    # -- up -------------------------------------------------------------------
    def up(self, compute=3, boot_timeout=BOOT_TIMEOUT, memory=None, spares=1):
        """Bring the testbed up and wait until every node answers ssh. Returns seconds taken.
        The last `spares` compute nodes are the spares (inventory group ``spares``)."""
        host.require_root()
        host.require_all()
        compute = config.check_compute(compute)
        spares = config.check_spares(spares, compute)
        if self.exists():
            raise TestbedError(f"testbed {self.name!r} is already up (state {self.state_dir}); "
                               "run `testbed down` first")
        started = time.monotonic()
        image = ImageBuilder(cache_dir=self.cache_dir, progress=self.progress).ensure()
        self._cleanup(quiet=True)                      # remains of a crashed run of the same name
        os.makedirs(os.path.join(self.state_dir, "nodes"), mode=0o700)
        kwargs = {}
        if memory:
            kwargs = {"head_memory_mb": memory[0], "compute_memory_mb": memory[1]}
        # Testbeds started at the same time (maybe with other state roots) must not pick the same
        # subnet: the choice and the veth that claims it happen under one host-wide lock.
        # (Not /run/netns: `ip netns add` flocks that directory itself.)
        lock = os.open("/run/lock" if os.path.isdir("/run/lock") else "/run", os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = config.choose_index(self.name, self._taken_indices(), self._host_networks())
            plan = config.plan(self.name, index, compute, spares=spares, **kwargs)
            self._state = {"plan": plan.to_dict(), "image": image, "pids": {}, "bmc": {},
                           "bmc_password": os.urandom(9).hex(), "started": time.time()}
            self._save()
            self.progress(f"testbed {self.name}: head + {compute} compute ({spares} spare), subnet {plan.subnet}, "
                          f"netns {plan.netns}")
            try:
                self._network_up(plan)
            except BaseException:
                self.down(quiet=True)
                raise
        finally:
            os.close(lock)
        try:
            host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pft-testbed-{self.name}",
                      "-f", self.key_file])
            self._start_aptproxy(plan)
            self._bmcs_up(plan, image)
            self.wait_ssh([n.name for n in plan.nodes], boot_timeout)
        except BaseException:
            self.progress(f"testbed {self.name}: bring-up failed; cleaning up")
            keep = os.environ.get("PFT_TESTBED_KEEP_FAILED")
            if not keep:
                self.down(quiet=True)
            raise
        took = time.monotonic() - started
        self._state["up_seconds"] = round(took, 1)
        self._save()
        self.progress(f"testbed {self.name}: up in {took:.0f} s")
        return took

    def _taken_indices(self):
        taken = set()
        root = state_root()
        if os.path.isdir(root):
            for other in os.listdir(root):
                if other == self.name:
                    continue
                try:
                    with open(os.path.join(root, other, "state.json")) as f:
                        taken.add(json.load(f)["plan"]["index"])
                except (OSError, ValueError, KeyError):
                    pass
        return taken

    @staticmethod
    def _host_networks():
        proc = host.run(["ip", "-j", "-4", "route", "show", "table", "all"], check=False)
        nets = []
        try:
            for r in json.loads(proc.stdout or "[]"):
                dst = r.get("dst", "")
                if dst and dst not in ("default",) and "/" in dst and not dst.startswith(("127.", "224.")):
                    nets.append(dst)
        except ValueError:
            pass
        return nets

    def _network_up(self, plan):
        self.progress(f"network: namespace {plan.netns}, bridge, {len(plan.nodes)} taps, veth {plan.veth} "
                      f"({plan.controller})")
        ns = ["ip", "-n", plan.netns]
        host.run(["ip", "netns", "add", plan.netns])
        host.run(ns + ["link", "set", "lo", "up"])
        host.run(ns + ["link", "add", plan.bridge, "type", "bridge", "mcast_snooping", "0", "stp_state", "0",
                       "forward_delay", "0"])
        host.run(ns + ["link", "set", plan.bridge, "up"])
        host.run(["ip", "link", "add", plan.veth, "type", "veth", "peer", "name", "uplink", "netns", plan.netns])
        host.run(ns + ["link", "set", "uplink", "master", plan.bridge, "up"])
        host.run(["ip", "link", "set", plan.veth, "address", plan.controller_mac])
        host.run(["ip", "addr", "add", f"{plan.controller}/{plan.prefixlen}", "dev", plan.veth])
        host.run(["ip", "link", "set", plan.veth, "up"])
        for n in plan.nodes:
            host.run(ns + ["tuntap", "add", "dev", n.tap, "mode", "tap"])
            host.run(ns + ["link", "set", n.tap, "master", plan.bridge, "up"])

    def _start_aptproxy(self, plan):
        log = open(os.path.join(self.state_dir, "aptproxy.log"), "ab")
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pft_testbed.aptproxy", "--listen", plan.controller,
             "--port", str(config.APT_PROXY_PORT), "--cache", os.path.join(self.cache_dir, "apt"),
             "--state", os.path.join(self.state_dir, "aptproxy")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=here))
        log.close()
        self.state["pids"]["aptproxy"] = proc.pid
        self._save()

    def _bmc(self, node):
        """The node's SimBmc. Its ipmi_sim owns the node's power: ``startcmd`` starts the VM
        (``startnow``), chassis power off/reset reach QEMU over the in-band VM link."""
        from pft_testbed.bmc import SimBmc
        n = self.node(node)
        d = self.node_dir(node)
        extra = [
            f"serial 15 {n.bmc_address} {config.BMC_SERIAL_PORT} codec VM",
            f'startcmd "/bin/sh {d}/start.sh"',
            "startnow true",
            "poweroff_wait 20",
            "kill_wait 5",
        ]
        return SimBmc(n.name, n.bmc_address, os.path.join(self.state_dir, "bmc"), port=config.BMC_PORT,
                      username=config.BMC_USERNAME, password=self.state["bmc_password"],
                      console_port=config.BMC_CONSOLE_PORT, extra_lan_conf=extra)

    def _bmcs_up(self, plan, image):
        self.progress(f"BMCs: {len(plan.nodes)} ipmi_sim on {plan.nodes[0].bmc_address}.. port {config.BMC_PORT}; "
                      "each powers on its node")
        for n in plan.nodes:
            self._create_disk(n.name, image)
            self._write_start_script(n.name)
            self._start_ipmi_link(n.name)
            self.progress(f"node {n.name}: power on ({n.memory_mb} MiB, TCG)")
            bmc = self._bmc(n.name)
            bmc.start()
            self.state["pids"][f"bmc-{n.name}"] = bmc.proc.pid
            self._save()

    def _start_ipmi_link(self, node):
        """QEMU runs in the testbed namespace, ipmi_sim in the root one: a unix socket joins them."""
        n = self.node(node)
        d = self.node_dir(node)
        log = open(os.path.join(d, "ipmi-link.log"), "ab")
        proc = subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{d}/ipmi.sock,fork,unlink-early",
             f"TCP:{n.bmc_address}:{config.BMC_SERIAL_PORT}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.state["pids"][f"ipmi-link-{node}"] = proc.pid

    def _create_disk(self, node, image):
        d = self.node_dir(node)
        os.makedirs(d, exist_ok=True)
        host.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "qcow2",
                  os.path.join(d, "disk.qcow2")])

    def _write_start_script(self, node):
        """start.sh, which the node's BMC runs at every chassis power on.

        A file ``resume`` in the node's directory makes the next power on, and only that one, load a
        kept snapshot instead of booting: it holds the extra QEMU arguments (``-loadvm NAME``, maybe
        ``-S``) and is renamed before QEMU starts, so a later power on boots from the disk again."""
        d = self.node_dir(node)
        argv = ["ip", "netns", "exec", self.netns] + self.qemu_argv(node)
        cmd = " ".join(shlex.quote(a) for a in argv)
        resume = shlex.quote(os.path.join(d, "resume"))
        with open(os.path.join(d, "start.sh"), "w") as f:
            f.write("# Started by the node's BMC (ipmi_sim startcmd) at chassis power on.\n")
            f.write(f'echo "=== pft testbed: node {node} powered on $(date +%T) ===" >> '
                    f"{shlex.quote(d)}/console.log\n")
            f.write(f"if [ -f {resume} ]; then\n"
                    f"    extra=$(cat {resume}); mv -f {resume} {resume}.used\n"
                    f'    echo "=== pft testbed: resuming from the kept snapshot ($extra) ===" >> '
                    f"{shlex.quote(d)}/console.log\n"
                    f"    exec {cmd} $extra\n"
                    "fi\n")
            f.write(f"exec {cmd}\n")

    def qemu_argv(self, node):
        p = self.plan
        n = self.node(node)
        d = self.node_dir(node)
        with open(self.key_file + ".pub") as f:
            pubkey = f.read()
        smbios = "type=11," + ",".join("value=" + s.replace(",", ",,")
                                      for s in config.smbios_identity(p, node, pubkey))
        return [
            "qemu-system-x86_64", "-name", f"pft-{self.name}-{node},process=pft-{self.name}-{node}",
            "-accel", "tcg,tb-size=256", "-cpu", "qemu64", "-smp", "1", "-m", str(n.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-drive", f"file={d}/disk.qcow2,format=qcow2,if=virtio,cache=unsafe,discard=unmap",
            "-netdev", f"tap,id=net0,ifname={n.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={n.mac}",
            "-chardev", f"socket,id=con0,path={d}/console.sock,server=on,wait=off,logfile={d}/console.log,"
                        "logappend=on",
            "-serial", "chardev:con0",
            "-chardev", f"socket,id=ipmi0,path={d}/ipmi.sock,reconnect=2",
            "-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
            "-device", "isa-ipmi-kcs,bmc=bmc0",
            "-monitor", f"unix:{d}/monitor.sock,server=on,wait=off",
            "-smbios", smbios,
            "-pidfile", f"{d}/qemu.pid",
        ]

    def power(self, node, action):
        """IPMI chassis power ACTION (on, off, reset, cycle, status) through the node's BMC, over LAN."""
        if action not in ("on", "off", "reset", "cycle", "status", "soft"):
            raise TestbedError(f"unknown power action {action!r}")
        return self.ipmitool(node, "chassis", "power", action).stdout.strip()

    def ipmitool(self, node, *args, timeout=60):
        """ipmitool over IPMI LAN (RMCP+, cipher suite 3) against the node's BMC; password via env."""
        n = self.node(node)
        argv = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", n.bmc_address, "-p", str(config.BMC_PORT),
                "-U", config.BMC_USERNAME, "-E", "-N", "2", "-R", "2"] + list(args)
        env = dict(os.environ, IPMI_PASSWORD=self.state["bmc_password"])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise TestbedError(f"ipmitool {' '.join(args)} on {node}'s BMC {n.bmc_address} failed: "
                               f"{proc.stderr.strip()}")
        return proc

    def start_node(self, node):
        """Power a stopped node on through its BMC; it boots from its own disk."""
        if self.node_running(node):
            raise TestbedError(f"node {node} is already running")
        self.progress(f"node {node}: chassis power on through its BMC")
        self.power(node, "on")
        for _ in range(100):
            if self.node_running(node):
                return
            time.sleep(0.1)
        raise TestbedError(f"node {node}: the BMC's power on did not start QEMU; BMC log: "
                           f"{self._log_tail('bmc', node)}")

    def _log_tail(self, kind, node, lines=10):
        path = (os.path.join(self.state_dir, "bmc", node, "ipmi_sim.log") if kind == "bmc"
                else os.path.join(self.node_dir(node), kind))
        try:
            with open(path, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _qemu_pid(self, node):
        try:
            with open(os.path.join(self.node_dir(node), "qemu.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if self._pid_matches(pid, f"pft-{self.name}-{node},"):
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return None
            return pid
        return None

    @staticmethod
    def _pid_matches(pid, marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return marker.encode() in f.read()
        except OSError:
            return False

    def node_running(self, node):
        return self._qemu_pid(node) is not None

    def console_tail(self, node, lines=25):
        path = os.path.join(self.node_dir(node), "console.log")
        try:
            with open(path, errors="replace") as f:
                text = strip_ansi(f.read())
        except OSError:
            return "(no console log)"
        return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])

    def _port_open(self, address, port=22, timeout=2.0):
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except OSError:
            return False

    def wait_ssh(self, nodes, timeout=BOOT_TIMEOUT):
        """Wait until every node answers ssh; a node that doesn't is named with its console's tail."""
        started = time.monotonic()
        pending = list(nodes)
        ready = {}
        last_report = started
        while pending:
            for node in list(pending):
                if not self.node_running(node) and time.monotonic() - started > 10:
                    raise TestbedError(f"node {node}: QEMU is not running. Console log tail:\n"
                                       f"{self.console_tail(node)}\nBMC log tail (QEMU's own output):\n"
                                       f"{self._log_tail('bmc', node)}")
                if self._port_open(self.node(node).address):
                    if self.ssh(node, "true", timeout=60, check=False).returncode == 0:
                        ready[node] = time.monotonic() - started
                        pending.remove(node)
                        self.progress(f"node {node}: ssh up after {ready[node]:.0f} s")
            now = time.monotonic()
            if pending and now - started > timeout:
                tails = "\n".join(f"--- {node}: console log tail ---\n{self.console_tail(node)}"
                                  for node in pending)
                raise TestbedError(f"node(s) {', '.join(pending)} did not answer ssh within {timeout} s\n{tails}")
            if pending and now - last_report >= 20:
                last_report = now
                self.progress(f"  waiting for ssh: {', '.join(pending)} ({now - started:.0f} s)")
            if pending:
                time.sleep(2)
        return ready

    # -- use ------------------------------------------------------------------
    def ssh_argv(self, node, *command):
        n = self.node(node)
        return ["ssh", "-i", self.key_file] + SSH_OPTIONS + [f"root@{n.address}"] + list(command)

    def ssh(self, node, command, timeout=120, check=True):
        argv = self.ssh_argv(node, command)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise TestbedError(f"ssh {node} {command!r}: no answer within {timeout} s") from exc
        if check and proc.returncode != 0:
            raise TestbedError(f"ssh {node} {command!r} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        return proc

    def bmc(self, node):
        """A :class:`pft_testbed.bmc.SimBmc` driving the node's running BMC through its console."""
        return self._bmc(node)

    def heat(self, node, sensor, value):
        return self.bmc(node).set_sensor(sensor, float(value))

    def cool(self, node):
        self.bmc_restore(node)
        self.bmc(node).reset_sensors()

    def _bmc_pid(self, node):
        pid = self.state["pids"].get(f"bmc-{node}")
        if pid and self._pid_matches(pid, os.path.join(self.state_dir, "bmc", node)):
            return pid
        raise TestbedError(f"BMC of node {node} is not running")

    def bmc_fail(self, node):
        """Make the node's BMC unreachable (its ipmi_sim is stopped with SIGSTOP)."""
        os.kill(self._bmc_pid(node), signal.SIGSTOP)

    def bmc_restore(self, node):
        os.kill(self._bmc_pid(node), signal.SIGCONT)

    def kill(self, node):
        """Stop a node abruptly (SIGKILL to its QEMU); its BMC stays up, as on real hardware."""
        pid = self._qemu_pid(node)
        if pid is None:
            raise TestbedError(f"node {node} is not running")
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not self.node_running(node):
                break
            time.sleep(0.1)

    def status(self):
        """{node: {...}} with qemu, ssh and bmc state."""
        out = {}
        for n in self.nodes:
            bmc_state = "down"
            pid = self.state["pids"].get(f"bmc-{n.name}")
            if pid and self._pid_matches(pid, os.path.join(self.state_dir, "bmc", n.name)):
                with open(f"/proc/{pid}/stat") as f:
                    bmc_state = "paused" if f.read().split(") ", 1)[1].startswith("T") else "up"
            running = self.node_running(n.name)
            out[n.name] = {
                "role": n.role + (" (spare)" if n.spare else ""),
                "address": n.address,
                "qemu": "running" if running else "stopped",
                "ssh": "up" if running and self._port_open(n.address, timeout=1.0) else "down",
                "bmc": f"{n.bmc_address}:{config.BMC_PORT} {bmc_state}",
            }
        return out

    def write_inventory(self, directory):
        return inventory.write_inventory(directory, self.plan, self.key_file, config.BMC_USERNAME,
                                         self.state["bmc_password"])

    # -- kept snapshots (pft_testbed.kept) --------------------------------------
    def monitor(self, node, command, timeout=60.0):
        """One command on the node's QEMU monitor (HMP); its output."""
        from pft_testbed.monitor import hmp
        return hmp(os.path.join(self.node_dir(node), "monitor.sock"), command, timeout=timeout,
                   what=f"node {node}: QEMU monitor {command!r}")

    def _domus(self, node):
        """Names of the Xen guests running on a node (empty on a node without Xen)."""
        proc = self.ssh(node, "command -v xl >/dev/null && xl list || true", timeout=120)
        return [line.split()[0] for line in proc.stdout.splitlines()[1:]
                if line.split() and line.split()[0] != "Domain-0"]

    def keep(self, kept, meta=None):
        """Save every node, disk and RAM, into the kept cluster `kept` (a kept.KeptCluster).

        Two QEMU internal snapshots per node, copied with its disk into ``kept.path``:

        * ``kept.SNAPSHOT``: all nodes paused first, then saved, so the cluster is one consistent
          cut (what :meth:`restore` loads: the converged cluster, guests running);
        * ``kept.RESET`` (only on a node that runs Xen guests): the node with its guests paused
          (``xl pause``), for :meth:`reset_node`, which destroys them at once: a node back from a
          reset runs no guest. A node without guests is reset to ``kept.SNAPSHOT``.

        Returns the seconds taken. The nodes run on afterwards, as before."""
        from pft_testbed import kept as keptmod
        started = time.monotonic()
        names = [n.name for n in self.nodes]
        down = [n for n in names if not self.node_running(n)]
        if down:
            raise TestbedError(f"keep: node(s) {', '.join(down)} not running")
        domus = {n: self._domus(n) for n in names}
        tmp = kept.path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        self.progress(f"keep: saving {len(names)} nodes as kept cluster {kept.key} (guests: {domus})")
        self._pause_and(names, lambda n: self._savevm(n, keptmod.SNAPSHOT))
        reset = {}
        for n in names:
            if not domus[n]:
                reset[n] = keptmod.SNAPSHOT               # runs no guest: the cut is its reset state too
                continue
            try:
                self.ssh(n, " && ".join(f"xl pause {shlex.quote(g)}" for g in domus[n]), timeout=120)
                self._savevm(n, keptmod.RESET)
                reset[n] = keptmod.RESET
            finally:
                self.ssh(n, " ; ".join(f"xl unpause {shlex.quote(g)}" for g in domus[n]) + " ; true", timeout=120,
                         check=False)
        # the copies, with every node paused: a running QEMU rewrites its qcow2's tables
        self._pause_and(names, lambda n: host.run(
            ["cp", "--sparse=always", os.path.join(self.node_dir(n), "disk.qcow2"), os.path.join(tmp, f"{n}.qcow2")]))
        for n in names:
            listing = host.run(["qemu-img", "snapshot", "-l", os.path.join(tmp, f"{n}.qcow2")]).stdout
            missing = [t for t in {keptmod.SNAPSHOT, reset[n]} if t not in listing]
            if missing:
                raise TestbedError(f"keep: node {n}'s copied disk lacks the snapshot(s) {missing}")
        shutil.copyfile(self.key_file, os.path.join(tmp, "id_ed25519"))
        shutil.copyfile(self.key_file + ".pub", os.path.join(tmp, "id_ed25519.pub"))
        os.chmod(os.path.join(tmp, "id_ed25519"), 0o600)
        record = dict(meta or {}, key=kept.key, plan=self.state["plan"], image=self.state["image"],
                      guests=domus, reset_snapshot=reset, kept_at=time.time(), testbed=self.name)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(record, f, indent=2)
        shutil.rmtree(kept.path, ignore_errors=True)
        os.replace(tmp, kept.path)
        self.state["kept"] = kept.key
        self._save()
        took = time.monotonic() - started
        self.progress(f"keep: kept cluster {kept.key} saved in {took:.0f} s ({kept.path})")
        return took

    def _savevm(self, node, name):
        out = self.monitor(node, f"savevm {name}", timeout=900)
        if out:
            raise TestbedError(f"node {node}: savevm {name}: {out}")

    def _pause_and(self, names, action):
        """Pause every node, run action(node) for each, then let them all run again."""
        paused = []
        try:
            for n in names:
                self.monitor(n, "stop")
                paused.append(n)
            for n in names:
                action(n)
        finally:
            for n in paused:
                self.monitor(n, "cont")

    def _load_kept(self, node, kept, snapshot):
        """Power the node off, give it the kept disk, and power it on into `snapshot`."""
        if self.node_running(node):
            self.kill(node)
        disk = os.path.join(self.node_dir(node), "disk.qcow2")
        tmp = disk + ".tmp"
        host.run(["cp", "--sparse=always", kept.disk(node), tmp])
        os.replace(tmp, disk)
        with open(os.path.join(self.node_dir(node), "resume"), "w") as f:
            f.write(f"-loadvm {snapshot}\n")
        # The controller's neighbour entry for the node may be stale or failed from before the load;
        # the node comes back believing it already knows the controller, so it would not ARP first.
        plan = self.plan
        host.run(["ip", "neigh", "del", plan.node(node).address, "dev", plan.veth], check=False)
        self.start_node(node)

    def _adopt_kept_key(self, kept):
        """The kept nodes trust the kept cluster's ssh key: the testbed uses it from now on."""
        for suffix in ("", ".pub"):
            shutil.copyfile(kept.key_file + suffix, self.key_file + suffix)
        os.chmod(self.key_file, 0o600)
        for n in self.nodes:
            self._write_start_script(n.name)      # the SMBIOS identity carries the public key

    # Shifted forward with a resumed node's clock: the apt index's age (Ansible's apt module compares
    # it with cache_valid_time). Without the shift, the first run of site.yml over a cluster kept
    # more than an hour ago spends about three minutes on an `apt-get update` of every TCG node,
    # which the second run after a cold converge never does.
    AGED_WITH_CLOCK = ("/var/lib/apt/periodic/update-success-stamp", "/var/lib/apt/lists")

    def _after_resume(self, names):
        """A resumed node's clock is the one it had when it was kept: set it to now, in dom0 (Xen
        takes dom0's time as its wall clock) or on the bare node, and move AGED_WITH_CLOCK's
        timestamps by as much, so that the node is as it was a moment after it was kept."""
        self.wait_ssh(names, timeout=300)
        shift = " ".join(shlex.quote(p) for p in self.AGED_WITH_CLOCK)
        for n in names:
            self.ssh(n, f"was=$(date +%s); date -u -s @{int(time.time())} >/dev/null; "
                        f"by=$(( $(date +%s) - was )); for p in {shift}; do "
                        'if [ -e "$p" ]; then touch -h -d @$(( $(stat -c %Y "$p") + by )) "$p"; fi; done',
                     timeout=60)

    def restore(self, kept):
        """Load the kept cluster `kept` into this testbed: every node as it was kept.

        The testbed must be up, with the plan the cluster was kept from (kept.converge_key has the
        plan in it, so a key match guarantees it). Returns the seconds taken."""
        from pft_testbed import kept as keptmod
        started = time.monotonic()
        meta = kept.meta()
        if meta.get("plan") != self.state["plan"]:
            raise TestbedError(f"kept cluster {kept.key} was kept from another plan than testbed {self.name}'s")
        names = [n.name for n in self.nodes]
        self.progress(f"restore: loading kept cluster {kept.key} (kept {time.ctime(meta.get('kept_at', 0))})")
        for n in names:
            if self.node_running(n):
                self.kill(n)
        self._adopt_kept_key(kept)
        for n in names:
            self._load_kept(n, kept, keptmod.SNAPSHOT)
        self._after_resume(names)
        self.state["kept"] = kept.key
        self._save()
        kept.touch()
        took = time.monotonic() - started
        self.progress(f"restore: kept cluster {kept.key} loaded in {took:.0f} s")
        return took

    def rebuild_nodes(self, boot_timeout=BOOT_TIMEOUT):
        """Every node powered off, given a fresh disk over the base image, and booted: the bare
        nodes `up` made (after a kept cluster failed to load into them, for example)."""
        names = [n.name for n in self.nodes]
        for n in names:
            if self.node_running(n):
                self.kill(n)
        for n in names:
            os.unlink(os.path.join(self.node_dir(n), "disk.qcow2"))
            self._create_disk(n, self.state["image"])
            for stale in ("resume",):
                if os.path.exists(os.path.join(self.node_dir(n), stale)):
                    os.unlink(os.path.join(self.node_dir(n), stale))
            self._write_start_script(n)
            self.start_node(n)
        self.state.pop("kept", None)
        self._save()
        return self.wait_ssh(names, boot_timeout)

    def reset_node(self, node, timeout=300):
        """Bring a node back as a freshly converged one, running no guest, in seconds.

        With a kept cluster (:meth:`keep` or :meth:`restore` in this testbed's life) the node loads
        its reset snapshot: Xen and dom0 up, its Xen guests of that moment paused, then destroyed
        here before anything else runs. Its BMC's sensors go back to nominal and its BMC answers.
        Without one, it boots from its own disk (a full boot under TCG). Returns
        {"node", "how": "snapshot" or "boot", "seconds"}."""
        from pft_testbed import kept as keptmod
        started = time.monotonic()
        key = self.state.get("kept")
        kept = keptmod.KeptCluster(key, self.cache_dir) if key else None
        if kept is None or not os.path.exists(kept.disk(node)):
            self.progress(f"reset {node}: no kept cluster: a full boot")
            if self.node_running(node):
                self.kill(node)
            self.cool(node)
            self.start_node(node)
            self.wait_ssh([node], timeout=max(timeout, BOOT_TIMEOUT))
            end = time.monotonic() + max(timeout, BOOT_TIMEOUT)       # a dom0's toolstack comes after ssh
            while self.ssh(node, "! command -v xl >/dev/null || xl info >/dev/null 2>&1", timeout=120,
                           check=False).returncode != 0:
                if time.monotonic() > end:
                    raise TestbedError(f"reset {node}: xl info does not answer after the boot")
                time.sleep(5)
            how = "boot"
        else:
            meta = kept.meta()
            self.cool(node)
            self._load_kept(node, kept, meta.get("reset_snapshot", {}).get(node, keptmod.RESET))
            self._after_resume([node])
            paused = meta.get("guests", {}).get(node, [])
            for guest in paused:
                self.ssh(node, f"xl destroy {shlex.quote(guest)}", timeout=120)
            left = self._domus(node)
            if left:
                raise TestbedError(f"reset {node}: guests still there after the reset: {left}")
            how = "snapshot"
        took = time.monotonic() - started
        self.progress(f"reset {node}: back by {how} in {took:.0f} s")
        return {"node": node, "how": how, "seconds": round(took, 1)}

    # -- down -----------------------------------------------------------------
    def _our_processes(self):
        markers = (self.state_dir + "/", f"pft-{self.name}-")
        me = os.getpid()
        for pid, argv in _proc_cmdlines():
            if pid == me:
                continue
            joined = " ".join(argv)
            if any(m in joined for m in markers) and not joined.startswith(("bash ", "/bin/sh ")):
                if argv[0].endswith(("qemu-system-x86_64", "ipmi_sim", "socat")) or "pft_testbed.aptproxy" in joined:
                    yield pid, argv

    def down(self, quiet=False):
        """Stop everything this testbed started and remove its network and state."""
        host.require_root()
        if not quiet:
            self.progress(f"testbed {self.name}: stopping")
        self._cleanup(quiet)
        left = self.leftovers()
        if left:
            raise TestbedError(f"testbed {self.name}: left behind after down: {'; '.join(left)}")
        if not quiet:
            self.progress(f"testbed {self.name}: down, nothing left")

    def _cleanup(self, quiet=True):
        procs = list(self._our_processes())
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for pid, _argv in procs:
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().split(") ", 1)[1].startswith("Z"):
                            break              # zombie of this process: reaped below
                except OSError:
                    break
                time.sleep(0.1)
            if os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid, _ in procs:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if os.path.exists(f"/run/netns/{self.netns}"):
            host.run(["ip", "netns", "del", self.netns], check=False)
        if os.path.exists(f"/sys/class/net/{self.netns}"):
            host.run(["ip", "link", "del", self.netns], check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self._state = None

    def leftovers(self):
        """What of this testbed still exists: processes, namespace, links, mounts, files."""
        left = [f"process {pid} ({' '.join(argv)[:80]})" for pid, argv in self._our_processes()]
        if os.path.exists(f"/run/netns/{self.netns}"):
            left.append(f"network namespace {self.netns}")
        if os.path.exists(f"/sys/class/net/{self.netns}"):
            left.append(f"link {self.netns}")
        with open("/proc/mounts") as f:
            for line in f:
                if self.state_dir in line or f"/run/netns/{self.netns} " in line:
                    left.append(f"mount {line.split()[1]}")
        if os.path.exists(self.state_dir):
            left.append(f"directory {self.state_dir}")
        return left
