# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Ganglia gmond instances for tests and benchmarks.

Two helpers, both driving the Debian ganglia-monitor 3.7.2 binaries (facts in
``/work/shared/notes/ganglia.md``):

:class:`Gmond`
    One gmond on loopback with its own generated config and its own TCP/UDP
    ports (unicast to itself). :meth:`Gmond.publish` simulates many hosts by
    spoofing (``gmetric -S ip:name``): each :class:`SimHost` gets a guest count,
    guest names, Xen free memory and ``load_one``. gmond does not collect
    ``load_one`` itself, so injected values are not overwritten.

:class:`GmondNamespaceCluster`
    Several gmonds, each in its own network namespace, joined by a bridge and
    exchanging multicast (239.2.11.71) like real nodes. Each node publishes its
    own metrics (no spoofing). The bridge has an address in the root namespace
    so the controller can read any node's XML. Namespaces, veths and the bridge
    get unique names and are always removed by :meth:`close` (needs root).

Both are context managers and stop every process they started.

Example::

    with Gmond(host_tmax=2) as g:
        g.publish([SimHost("n1", "10.9.0.1", load=0.2, xen_free_mb=8192)])
        g.wait_for_hosts(["n1"])
        xml = g.read_xml()
"""
from __future__ import annotations

import atexit
import concurrent.futures
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

MODULE_DIR = "/usr/lib/x86_64-linux-gnu/ganglia"
MCAST_GROUP = "239.2.11.71"
GUEST_METRIC = "pft_guest_count"
GUEST_NAMES_METRIC = "pft_guest_names"
FREE_MEMORY_METRIC = "pft_xen_free_memory_mb"
LOAD_METRIC = "load_one"
# gmond's own collection. load_one is left out on purpose: tests inject it.
DEFAULT_OWN_METRICS = ("cpu_num", "mem_total", "mem_free", "load_five", "load_fifteen")


def _udp_buffer(want=4 << 20):
    """A UDP receive buffer gmond can get: it exits if the kernel gives less than configured."""
    try:
        with open("/proc/sys/net/core/rmem_max", encoding="ascii") as handle:
            return max(65536, min(want, int(handle.read())))
    except (OSError, ValueError):
        return 65536


_STARTED = set()  # gmonds still running; stopped at interpreter exit if the caller forgot


@atexit.register
def _stop_forgotten():
    for gmond in list(_STARTED):
        try:
            gmond.stop(grace=1.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class GmondError(RuntimeError):
    """A gmond helper failure, with the log tail of the gmond at fault."""


def _require(program, package="ganglia-monitor"):
    path = shutil.which(program) or (program if os.path.isabs(program) and os.access(program, os.X_OK) else None)
    if not path:
        raise GmondError(f"'{program}' not found: install the Debian package '{package}' (make setup)")
    return path


def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    """A port the kernel says is free right now on ``host``."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class SimHost:
    """A simulated node's pft metrics. ``None`` leaves a metric unpublished."""

    name: str
    ip: str
    load: float | None = 0.0
    xen_free_mb: int | None = 16384
    guests: list | None = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # {metric: (value, type)}

    def metrics(self):
        """[(name, value, type, units)] in publishing order."""
        out = []
        if self.guests is not None:
            out.append((GUEST_METRIC, str(len(self.guests)), "uint32", "guests"))
            out.append((GUEST_NAMES_METRIC, ",".join(self.guests), "string", ""))
        if self.xen_free_mb is not None:
            out.append((FREE_MEMORY_METRIC, str(int(self.xen_free_mb)), "uint32", "MiB"))
        if self.load is not None:
            out.append((LOAD_METRIC, "%g" % self.load, "float", ""))
        for name, (value, mtype) in sorted(self.extra.items()):
            out.append((name, str(value), mtype, ""))
        return out


def _collection_groups(own_metrics, heartbeat_every):
    groups = [
        "collection_group {\n  collect_once = yes\n  time_threshold = %d\n"
        "  metric {\n    name = \"heartbeat\"\n  }\n}\n" % heartbeat_every]
    if own_metrics:
        metrics = "".join("  metric {\n    name = \"%s\"\n  }\n" % m for m in own_metrics)
        groups.append("collection_group {\n  collect_every = 5\n  time_threshold = 10\n%s}\n" % metrics)
    return "".join(groups)


def gmond_config(*, hostname, ip, cluster="pft", tcp_bind, tcp_port, send, recv, host_tmax=20, host_dmax=300,
                 cleanup_threshold=5, send_metadata_interval=2, own_metrics=DEFAULT_OWN_METRICS,
                 heartbeat_every=None, udp_buffer=None):
    """The text of a gmond.conf. ``send``/``recv`` are the channel bodies."""
    udp_buffer = udp_buffer or _udp_buffer()
    heartbeat_every = heartbeat_every or max(1, min(host_tmax, 20))
    modules = "".join(
        "  module {\n    name = \"%s\"\n    path = \"%s/%s\"\n  }\n" % (name, MODULE_DIR, lib)
        for name, lib in (("cpu_module", "modcpu.so"), ("load_module", "modload.so"), ("mem_module", "modmem.so")))
    return f"""/* generated by pft_testbed.gmond for {hostname} */
globals {{
  daemonize = no
  setuid = no
  debug_level = 0
  max_udp_msg_len = 1472
  mute = no
  deaf = no
  allow_extra_data = yes
  host_dmax = {host_dmax}
  host_tmax = {host_tmax}
  cleanup_threshold = {cleanup_threshold}
  gexec = no
  send_metadata_interval = {send_metadata_interval}
  override_hostname = "{hostname}"
  override_ip = "{ip}"
}}
cluster {{
  name = "{cluster}"
  owner = "pft-tests"
}}
host {{
  location = "pft-testbed"
}}
udp_send_channel {{
{send}
}}
udp_recv_channel {{
{recv}
  buffer = {udp_buffer}
}}
tcp_accept_channel {{
  bind = {tcp_bind}
  port = {tcp_port}
  gzip_output = no
}}
modules {{
  module {{
    name = "core_metrics"
  }}
{modules}}}
{_collection_groups(own_metrics, heartbeat_every)}"""


class Gmond:
    """One real gmond process with its own config, ports and log.

    On loopback (default) it sends UDP unicast to itself on ``udp_port`` and
    serves XML on ``127.0.0.1:tcp_port``. ``netns``/``multicast_if`` are used
    by :class:`GmondNamespaceCluster`.
    """

    def __init__(self, hostname="pft-controller", ip="127.0.0.1", *, workdir=None, cluster="pft", host_tmax=20,
                 host_dmax=300, tcp_port=None, udp_port=None, bind="127.0.0.1", netns=None, multicast_if=None,
                 own_metrics=DEFAULT_OWN_METRICS, send_metadata_interval=2, gmond="gmond", gmetric="gmetric"):
        self.gmond_bin = _require(gmond)
        self.gmetric_bin = _require(gmetric)
        self.hostname = hostname
        self.ip = ip
        self.cluster = cluster
        self.host_tmax = host_tmax
        self.host_dmax = host_dmax
        self.bind = bind
        self.netns = netns
        self.multicast_if = multicast_if
        self.own_metrics = tuple(own_metrics)
        self.send_metadata_interval = send_metadata_interval
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="pft-gmond-")
        os.makedirs(self.workdir, exist_ok=True)
        if multicast_if:
            self.tcp_port = tcp_port or 8649
            self.udp_port = udp_port or 8649
        else:
            self.tcp_port = tcp_port or free_port(socket.SOCK_STREAM, bind)
            self.udp_port = udp_port or free_port(socket.SOCK_DGRAM, bind)
        self.config_path = os.path.join(self.workdir, f"gmond-{hostname}.conf")
        self.log_path = os.path.join(self.workdir, f"gmond-{hostname}.log")
        self.proc = None
        self._log = None

    # -- lifecycle ----------------------------------------------------------
    @property
    def endpoint(self):
        return f"{self.bind}:{self.tcp_port}"

    def config_text(self):
        if self.multicast_if:
            send = (f"  mcast_join = {MCAST_GROUP}\n  mcast_if = {self.multicast_if}\n"
                    f"  port = {self.udp_port}\n  ttl = 1")
            recv = (f"  mcast_join = {MCAST_GROUP}\n  mcast_if = {self.multicast_if}\n"
                    f"  port = {self.udp_port}\n  bind = {MCAST_GROUP}\n  retry_bind = true")
        else:
            send = f"  host = {self.bind}\n  port = {self.udp_port}\n  ttl = 1"
            recv = f"  bind = {self.bind}\n  port = {self.udp_port}"
        return gmond_config(hostname=self.hostname, ip=self.ip, cluster=self.cluster, tcp_bind=self.bind,
                            tcp_port=self.tcp_port, send=send, recv=recv, host_tmax=self.host_tmax,
                            host_dmax=self.host_dmax, own_metrics=self.own_metrics,
                            send_metadata_interval=self.send_metadata_interval)

    def _wrap(self, argv):
        return (["ip", "netns", "exec", self.netns] + argv) if self.netns else argv

    def start(self, timeout=10.0):
        """Write the config, start gmond in the foreground, wait until its XML port answers."""
        if self.running:
            return self
        with open(self.config_path, "w", encoding="utf-8") as handle:
            handle.write(self.config_text())
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._wrap([self.gmond_bin, "-c", self.config_path, "-f"]),
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _STARTED.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._cleanup_proc()
                raise GmondError(f"gmond {self.hostname} exited with rc={rc} at start: {self.log_tail()}")
            try:
                if b"</GANGLIA_XML>" in self.read_xml(timeout=1.0):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise GmondError(f"gmond {self.hostname} did not serve XML on {self.endpoint} within "
                                 f"{timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=3.0):
        """SIGTERM, then SIGKILL after ``grace`` seconds. Safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._cleanup_proc()

    def kill(self):
        """SIGKILL: a node dying without goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._cleanup_proc()

    def _cleanup_proc(self):
        _STARTED.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    def close(self):
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    # -- reading ------------------------------------------------------------
    def read_xml(self, timeout=5.0, host=None):
        """The XML gmond sends on connect (read to EOF, with a deadline)."""
        deadline = time.monotonic() + timeout
        chunks = []
        with socket.create_connection((host or self.bind, self.tcp_port), timeout=timeout) as sock:
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def wait_for(self, predicate, timeout=10.0, interval=0.05, what="condition"):
        """Poll the XML until ``predicate(xml_bytes)`` is true; returns the XML."""
        deadline = time.monotonic() + timeout
        xml = b""
        while time.monotonic() < deadline:
            try:
                xml = self.read_xml(timeout=2.0)
                if predicate(xml):
                    return xml
            except OSError:
                pass
            time.sleep(interval)
        raise GmondError(f"gmond {self.hostname}: {what} not reached within {timeout:.0f} s "
                         f"({len(xml)} bytes of XML)")

    def wait_for_hosts(self, names, timeout=10.0, metric=None):
        """Wait until every host in ``names`` is in the XML (with ``metric`` when given)."""
        needles = [f'<HOST NAME="{n}" '.encode() for n in names]

        def ready(xml):
            if not all(n in xml for n in needles):
                return False
            if metric is None:
                return True
            return xml.count(f'<METRIC NAME="{metric}" '.encode()) >= len(names)
        return self.wait_for(ready, timeout, what=f"{len(names)} host(s) present")

    # -- publishing ---------------------------------------------------------
    def gmetric_argv(self, name, value, mtype="float", units="", tmax=60, dmax=0, spoof=None, heartbeat=False):
        argv = [self.gmetric_bin, "-c", self.config_path]
        if heartbeat:
            return self._wrap(argv + ["-S", spoof, "-H"])
        argv += ["-n", name, "-v", str(value), "-t", mtype, "-u", units, "-x", str(tmax), "-d", str(dmax)]
        if spoof:
            argv += ["-S", spoof]
        return self._wrap(argv)

    def gmetric(self, name, value, mtype="float", units="", tmax=60, dmax=0, spoof=None, timeout=10.0):
        """Publish one metric (as this node, or spoofing ``ip:name``)."""
        argv = self.gmetric_argv(name, value, mtype, units, tmax, dmax, spoof)
        subprocess.run(argv, check=True, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True)

    def publish(self, hosts, tmax=60, dmax=0, heartbeat=True, parallel=8, timeout=600.0):
        """Publish every :class:`SimHost`'s metrics by spoofing, ``parallel`` gmetrics at a time.

        ``heartbeat`` also spoofs a heartbeat (``-H``), which sets the host's GMOND_STARTED.
        """
        argvs = []
        for host in hosts:
            spoof = f"{host.ip}:{host.name}"
            if heartbeat:
                argvs.append(self.gmetric_argv(None, None, spoof=spoof, heartbeat=True))
            for name, value, mtype, units in host.metrics():
                argvs.append(self.gmetric_argv(name, value, mtype, units, tmax, dmax, spoof))
        run_parallel(argvs, parallel=parallel, timeout=timeout)
        return len(argvs)


def run_parallel(argvs, parallel=8, timeout=600.0):
    """Run argv lists, ``parallel`` at a time; raise GmondError on the first failure."""
    deadline = time.monotonic() + timeout

    def run(argv):
        remaining = max(0.1, deadline - time.monotonic())
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=remaining)
        if proc.returncode != 0:
            raise GmondError(f"{' '.join(argv)} failed rc={proc.returncode}: {proc.stderr.decode(errors='replace')}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(run, argv) for argv in argvs]:
            future.result()


def sim_hosts(count, prefix="node", network="10.200.0.0/16", load=None, xen_free_mb=16384, guests_every=0):
    """``count`` SimHosts with distinct IPs (gmond keys spoofed hosts by IP) and varied load."""
    net = ipaddress.ip_network(network)
    if count > net.num_addresses - 2:
        raise GmondError(f"{network} is too small for {count} hosts")
    hosts = []
    for i in range(count):
        host_load = load if load is not None else round(((i * 37) % 400) / 100.0, 2)
        guests = [f"guest-{i}"] if guests_every and i % guests_every == 0 else []
        hosts.append(SimHost(f"{prefix}{i:04d}", str(net.network_address + 1 + i), load=host_load,
                             xen_free_mb=xen_free_mb, guests=guests))
    return hosts


# --------------------------------------------------------------------------
# Several nodes in network namespaces
# --------------------------------------------------------------------------
def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


def _used_networks():
    out = _ip("-o", "-4", "addr", "show").stdout + "\n" + _ip("-4", "route", "show").stdout
    return out


def _pick_subnet():
    used = _used_networks()
    for _ in range(200):
        subnet = f"10.{secrets.randbelow(40) + 200}.{secrets.randbelow(250) + 1}"
        if f"{subnet}." not in used:
            return subnet
    raise GmondError("no free 10.x.y.0/24 subnet found for the namespace bridge")


@dataclass
class NsNode:
    name: str
    netns: str
    ip: str
    veth: str
    peer: str
    gmond: Gmond

    @property
    def endpoint(self):
        return f"{self.ip}:{self.gmond.tcp_port}"


class GmondNamespaceCluster:
    """``names`` gmonds in their own network namespaces on one bridge, multicasting like real nodes."""

    def __init__(self, names=("node1", "node2", "node3"), *, host_tmax=2, host_dmax=120, workdir=None,
                 own_metrics=("mem_total",), send_metadata_interval=2):
        if os.geteuid() != 0:
            raise GmondError("network namespaces need root")
        _require("ip", "iproute2")
        self.tag = secrets.token_hex(3)
        self.bridge = f"pftbr{self.tag}"
        self.subnet = None
        self.names = list(names)
        self.host_tmax = host_tmax
        self.host_dmax = host_dmax
        self.own_metrics = own_metrics
        self.send_metadata_interval = send_metadata_interval
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="pft-gmond-ns-")
        self.nodes = {}
        self._namespaces = []
        self._bridge_made = False

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    def start(self, timeout=20.0):
        self.subnet = _pick_subnet()
        _ip("link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
        self._bridge_made = True
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names, 1):
            netns = f"pft-{self.tag}-{i}"
            veth, peer = f"pftv{self.tag}{i}", f"pftp{self.tag}{i}"
            _ip("netns", "add", netns)
            self._namespaces.append(netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", netns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            ip = f"{self.subnet}.{i}"
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", peer)
            _ip("-n", netns, "link", "set", peer, "up")
            _ip("-n", netns, "route", "add", "224.0.0.0/4", "dev", peer)
            gmond = Gmond(name, ip, workdir=self.workdir, host_tmax=self.host_tmax, host_dmax=self.host_dmax,
                          bind=ip, netns=netns, multicast_if=peer, own_metrics=self.own_metrics,
                          send_metadata_interval=self.send_metadata_interval)
            self.nodes[name] = NsNode(name, netns, ip, veth, peer, gmond)
        for node in self.nodes.values():
            node.gmond.start(timeout=timeout)
        return self

    def endpoints(self):
        return [n.endpoint for n in self.nodes.values()]

    def gmetric(self, node, name, value, mtype="float", units="", tmax=60, dmax=0):
        """Publish a metric as ``node`` itself (no spoofing), from inside its namespace."""
        self.nodes[node].gmond.gmetric(name, value, mtype, units, tmax, dmax)

    def publish(self, node, sim, tmax=60):
        """Publish a :class:`SimHost`'s metrics as the node itself."""
        for name, value, mtype, units in sim.metrics():
            self.gmetric(node, name, value, mtype, units, tmax)

    def wait_converged(self, metric=None, timeout=30.0):
        """Wait until every node's XML lists every node (with ``metric`` when given)."""
        for node in self.nodes.values():
            node.gmond.wait_for_hosts(self.names, timeout=timeout, metric=metric)

    def close(self):
        """Stop every gmond, delete the namespaces (and their veths) and the bridge. Never raises."""
        for node in self.nodes.values():
            try:
                node.gmond.stop()
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        for netns in self._namespaces:
            _ip("netns", "del", netns, check=False)
        self._namespaces = []
        if self._bridge_made:
            _ip("link", "del", self.bridge, check=False)
            self._bridge_made = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
