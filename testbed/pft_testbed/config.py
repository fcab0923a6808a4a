# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The testbed's layout: names, addresses and sizes, derived from a testbed name and index.

Pure functions only (no side effects), so the plan of a testbed can be unit-tested.

One testbed named NAME with index I (0..249, chosen so that no two testbeds share one) has:

* network namespace ``pft-NAME`` holding bridge ``br0`` (multicast snooping off) and one tap
  per node; a veth pair joins it to the controller (root namespace side ``pft-NAME``);
* L2 subnet ``10.231.I.0/24``: controller .1, head .10, computeN .10+N;
* one BMC per node on ``127.231.I.(10+n)`` port 623, its ipmi_sim console on port 9000.
"""
import dataclasses
import hashlib
import ipaddress
import re

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,10}$")
SUBNET_FMT = "10.231.{index}.0/24"
BMC_FMT = "127.231.{index}.{host}"
MAX_INDEX = 250
HEAD_MEMORY_MB = 768
COMPUTE_MEMORY_MB = 1152
MAX_COMPUTE = 8
BMC_PORT = 623
BMC_CONSOLE_PORT = 9000
BMC_SERIAL_PORT = 9002
BMC_USERNAME = "admin"
APT_PROXY_PORT = 3142


def check_name(name):
    if not NAME_RE.match(name or ""):
        raise ValueError(f"testbed name {name!r} is invalid: use 1-11 lower-case letters and digits, "
                         "starting with a letter")
    return name


def check_compute(count):
    count = int(count)
    if not 1 <= count <= MAX_COMPUTE:
        raise ValueError(f"--compute {count} is out of range: use 1..{MAX_COMPUTE}")
    return count


def check_spares(spares, compute):
    """Spares are the last compute nodes; at least one compute node must be left to run guests."""
    spares = int(spares)
    if compute >= 2 and not 1 <= spares <= compute - 1:
        raise ValueError(f"--spares {spares} is out of range for {compute} compute nodes: use 1..{compute - 1}")
    return spares


def preferred_index(name):
    """The index a name tries first; the next free one is used when it is taken."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % MAX_INDEX


def choose_index(name, taken_indices, taken_networks=()):
    """First index from the name's preferred one whose subnet is free.

    taken_indices: indices of other testbeds; taken_networks: networks already on this host.
    """
    taken_nets = [ipaddress.ip_network(n, strict=False) for n in taken_networks]
    start = preferred_index(name)
    for step in range(MAX_INDEX):
        index = (start + step) % MAX_INDEX
        if index in taken_indices:
            continue
        net = ipaddress.ip_network(SUBNET_FMT.format(index=index))
        if any(net.overlaps(t) for t in taken_nets):
            continue
        return index
    raise ValueError("no free testbed subnet in 10.231.0.0/16")


@dataclasses.dataclass
class NodePlan:
    name: str
    role: str              # head | compute
    spare: bool
    address: str           # on the testbed L2 network
    mac: str
    memory_mb: int
    bmc_address: str
    tap: str

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Plan:
    name: str
    index: int
    netns: str
    veth: str
    bridge: str
    subnet: str
    controller: str
    prefixlen: int
    nodes: list

    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def controller_mac(self):
        """The MAC of the controller's end of the veth. Fixed, so that a node loaded from a kept
        cluster finds the controller at the MAC its ARP cache kept (a random one, new at every
        `up`, left it unreachable until that entry aged out: about 40 s of every reset)."""
        return f"52:54:00:e7:{self.index:02x}:01"

    @property
    def apt_proxy(self):
        return f"http://{self.controller}:{APT_PROXY_PORT}"

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["nodes"] = [n.to_dict() for n in self.nodes]
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["nodes"] = [NodePlan(**n) for n in d["nodes"]]
        return cls(**d)


def node_names(compute):
    return ["head"] + [f"compute{i}" for i in range(1, compute + 1)]


def plan(name, index, compute=3, head_memory_mb=HEAD_MEMORY_MB, compute_memory_mb=COMPUTE_MEMORY_MB, spares=1):
    """The full layout of testbed `name` at `index` with `compute` compute nodes.

    The last `spares` compute nodes are spares when there are at least two compute nodes.
    """
    check_name(name)
    compute = check_compute(compute)
    spares = check_spares(spares, compute)
    if not 0 <= index < MAX_INDEX:
        raise ValueError(f"index {index} out of range")
    net = ipaddress.ip_network(SUBNET_FMT.format(index=index))
    nodes = []
    for n, node in enumerate(node_names(compute)):
        host = 10 + n
        nodes.append(NodePlan(
            name=node,
            role="head" if n == 0 else "compute",
            spare=(compute >= 2 and n > compute - spares),
            address=str(net.network_address + host),
            mac=f"52:54:00:e7:{index:02x}:{host:02x}",
            memory_mb=head_memory_mb if n == 0 else compute_memory_mb,
            bmc_address=BMC_FMT.format(index=index, host=host),
            tap=f"tap-{node}"[:15],
        ))
    return Plan(name=name, index=index, netns=f"pft-{name}", veth=f"pft-{name}", bridge="br0",
                subnet=str(net), controller=str(net.network_address + 1), prefixlen=net.prefixlen,
                nodes=nodes)


def smbios_identity(p, node, ssh_public_key):
    """The ``pft.KEY=VALUE`` strings a node's pft-identity service applies at boot."""
    n = p.node(node)
    hosts = " ".join(f"{x.name}={x.address}" for x in p.nodes)
    return [
        f"pft.hostname={n.name}",
        f"pft.address={n.address}/{p.prefixlen}",
        f"pft.hosts={hosts}",
        f"pft.ssh_key={ssh_public_key.strip()}",
        f"pft.apt_proxy={p.apt_proxy}",
    ]
