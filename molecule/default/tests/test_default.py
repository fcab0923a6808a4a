# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""testinfra verify of pft's site.yml on the testbed (molecule default scenario).

Runs on every node of the molecule inventory (head, compute1..3); each check picks the
nodes it is about from the node's groups.
"""
import re
import warnings
import xml.etree.ElementTree as ET

import pytest

GUEST_ROOT = "/srv/pft/guest-root"
GUEST_KEY = GUEST_ROOT + "/root/.ssh/id_ed25519"
SSH = "ssh -o BatchMode=yes -o ConnectTimeout=20"
READ_GMOND = ("python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\", 8649), 10); "
              "s.settimeout(10); b=b\"\"\n"
              "while True:\n c=s.recv(65536)\n if not c: break\n b+=c\n"
              "import sys; sys.stdout.write(b.decode())'")


def groups(host):
    return host.ansible.get_variables().get("group_names", [])


def all_hosts(host):
    v = host.ansible.get_variables()["groups"]
    return sorted(set(v["head"]) | set(v["compute"]))


def guests(host):
    """The guests as deployed (testinfra reads molecule's inventory, not pft's site variables):
    from the domain configs on a Xen node, or from the guest root's hosts and MPI host list on the head."""
    if "compute" in groups(host):
        found = []
        for path in sorted(host.file("/etc/xen/pft").listdir()):
            text = host.file(f"/etc/xen/pft/{path}").content_string
            found.append({"name": re.search(r'^name = "([^"]+)"', text, re.M).group(1),
                          "host": re.search(r"Assigned node: (\S+)\.", text).group(1),
                          "mac": re.search(r"mac=([0-9a-f:]+)", text).group(1),
                          "ip": re.search(r" ip=([0-9.]+):", text).group(1)})
        return found
    names = [line.split()[0] for line in host.file(GUEST_ROOT + "/etc/pft/mpi-hosts").content_string.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    addresses = {}
    for line in host.file(GUEST_ROOT + "/etc/hosts").content_string.splitlines():
        words = line.split()
        if len(words) == 2 and not line.lstrip().startswith("#"):
            addresses[words[1]] = words[0]
    return [{"name": n, "ip": addresses[n]} for n in names]


def run_inner(host, cmd):
    """Run cmd on host; (rc, stdout, stderr) with cmd's own exit code. testinfra's ssh backend takes
    an exit code of 255 for a failed connection to the host and raises, and an inner ssh that is
    refused also exits 255: so the code travels in stdout."""
    r = host.run(f"{cmd}; echo pft-rc=$?")
    out, _, code = r.stdout.rpartition("pft-rc=")
    return int(code.strip()), out, r.stderr


def gmond_xml(host):
    out = host.check_output(READ_GMOND)
    return ET.fromstring(out[out.index("<GANGLIA_XML"):])


def test_xen_runs_on_compute_nodes(host):
    if "compute" not in groups(host):
        pytest.skip("not a Xen node")
    info = host.check_output("xl info")
    assert re.search(r"^xen_major\s*:\s*4", info, re.M), info
    assert re.search(r"^xen_commandline\s*:.*dom0_mem=", info, re.M), info
    assert host.interface("xenbr0").exists
    assert host.file("/etc/apt/preferences.d/pft-xen").contains("4.17.5")
    assert host.package("xen-hypervisor-4.17-amd64").version.startswith("4.17.5")


def test_gmond_knows_every_host_and_the_pft_metrics(host):
    root = gmond_xml(host)
    names = {h.get("NAME") for h in root.iter("HOST")}
    assert set(all_hosts(host)) <= names, names
    compute = host.ansible.get_variables()["groups"]["compute"]
    for h in root.iter("HOST"):
        if h.get("NAME") in compute:
            metrics = {m.get("NAME"): m.get("VAL") for m in h.iter("METRIC")}
            for metric in ("pft_guest_count", "pft_guest_names", "pft_guest_maxmem_mb",
                           "pft_xen_free_memory_mb"):
                assert metric in metrics, f"{h.get('NAME')} has no {metric} in {host.backend.hostname}'s gmond"


def test_gmetad_on_head(host):
    if "head" not in groups(host):
        pytest.skip("not the head")
    assert host.service("gmetad").is_running
    assert host.socket("tcp://0.0.0.0:8651").is_listening


def test_nfs_export_on_head(host):
    if "head" not in groups(host):
        pytest.skip("not the head")
    out = host.check_output("exportfs -v")
    assert GUEST_ROOT in out and "ro," in out.replace("\n", " "), out
    assert host.file(GUEST_ROOT + "/usr/bin/mpiexec.hydra").exists


def test_guests_run_on_their_nodes(host):
    if "compute" not in groups(host):
        pytest.skip("not a Xen node")
    me = host.ansible.get_variables()["inventory_hostname"]
    running = [line.split()[0] for line in host.check_output("xl list").splitlines()[1:]]
    for g in guests(host):
        if g["host"] == me:
            assert g["name"] in running, running
        else:
            assert g["name"] not in running, running
        assert host.file(f"/etc/xen/pft/{g['name']}.cfg").contains(f"mac={g['mac']}")
    if "spares" in groups(host):
        assert running == ["Domain-0"], f"a spare runs no guest: {running}"


def _guests_report(host, ssh, gs):
    """What the guests are doing (processes, memory, kernel log): for a failed or hung mpiexec."""
    report = []
    for g in gs:
        probe = host.run(f"{ssh} root@{g['ip']} 'uptime; free -m; ps -eo pid,ppid,stat,etime,time,wchan:24,args "
                         f"| grep -E \"mpi|hydra|python\" | grep -v grep; dmesg | tail -n 8'")
        report.append(f"--- {g['name']} ({g['ip']}): rc={probe.rc}\n{probe.stdout[-3000:]}{probe.stderr[-500:]}")
    return "\n".join(report)


def test_mpiexec_across_guests(host):
    """mpiexec runs one rank on each guest, and the job's result is right.

    One known upstream hang is not counted against it: the result printed and correct, then rank 0
    spinning in MPI_Finalize after the other rank has exited (Debian 12's MPICH is ch4:ucx over UCX
    1.13's tcp transport; openucx/ucx#8738, "TCP transport hangs during cleanup"; caught on the
    testbed in session 12, about 1 run in 7 with the dom0s busy, and twice in a row in session 15 on
    guests just restored from a kept cluster). Such a run is tried again, up to three times; when
    every one printed the right result and then hung, the test passes with a warning that shows what
    the guests were doing: mpiexec did run one rank on each guest, and the answer was right. A
    wrong or missing result, or any other failure, fails."""
    if "head" not in groups(host):
        pytest.skip("run from the head")
    gs = guests(host)
    n = len(gs)
    ssh = f"{SSH} -i {GUEST_KEY} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    cmd = f"{ssh} root@{gs[0]['ip']} timeout 90 mpiexec -f /etc/pft/mpi-hosts -n {n} pft-mpi-hello"
    expected = f"ranks={n} sum={n * (n - 1) // 2}"
    for attempt in (1, 2, 3):
        run = host.run(cmd)
        out = run.stdout
        finalize_hang = run.rc == 124 and expected in out
        if not finalize_hang:
            break
        warnings.warn(f"attempt {attempt}: mpiexec printed its result ({out.strip()}) and then hung in MPI_Finalize "
                      f"until the 90 s timeout (openucx/ucx#8738). Guests:\n{_guests_report(host, ssh, gs)}",
                      stacklevel=2)
    if run.rc != 0 and not finalize_hang:
        pytest.fail(f"mpiexec on {gs[0]['name']} (attempt {attempt}): rc={run.rc}\nstdout: {out[-2000:]}\n"
                    f"stderr: {run.stderr[-2000:]}\n{_guests_report(host, ssh, gs)}")
    assert expected in out, out
    assert set(out.split("hosts=")[1].split()[0].split(",")) == {g["name"] for g in gs}, out


def test_each_guest_has_its_own_writable_root(host):
    if "head" not in groups(host):
        pytest.skip("run from the head")
    ssh = f"{SSH} -i {GUEST_KEY} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    g1, g2 = guests(host)[:2]
    host.check_output(f"{ssh} root@{g1['ip']} 'echo {g1['name']} > /etc/pft-verify-marker'")
    other = host.run(f"{ssh} root@{g2['ip']} 'cat /etc/pft-verify-marker'")
    assert other.rc != 0, "a guest's write showed up on another guest"
    assert not host.file(GUEST_ROOT + "/etc/pft-verify-marker").exists, "a guest wrote to the shared root"
    host.check_output(f"{ssh} root@{g1['ip']} 'rm /etc/pft-verify-marker'")


def test_migration_key_is_restricted(host):
    if "compute" not in groups(host) or "spares" in groups(host):
        pytest.skip("checked from the non-spare Xen nodes")
    v = host.ansible.get_variables()
    me = v["inventory_hostname"]
    peer = next(h for h in v["groups"]["compute"] if h != me)
    line = host.file("/etc/ssh/pft_authorized_keys/root").content_string
    assert 'command="/usr/local/sbin/pft-migrate-receive"' in line and "restrict" in line and "no-pty" in line
    # The migration key (used by ssh for the other dom0s) cannot run anything else.
    for attempt in ("id", "xl list", "xl migrate-receive; id", "sh -c id", "xl destroy guest1",
                    "xl migrate-receive -e $(id)"):
        rc, out, err = run_inner(host, f"ssh {peer} {attempt!r}")
        assert rc != 0 and "may only run 'xl migrate-receive'" in err, (attempt, rc, out, err)
        assert "uid=" not in out
    # No pty, no port forwarding
    rc, out, err = run_inner(host, f"ssh -tt {peer} id")
    assert "uid=" not in out
    # a remote forward is asked for at login (refused: ssh exits 255 with ExitOnForwardFailure);
    # a local one opens its channel on use, which -W does at once (refused: "open failed")
    rc, out, err = run_inner(host, "timeout 60 ssh -N -o ExitOnForwardFailure=yes "
                                   f"-R 127.0.0.1:18022:127.0.0.1:22 {peer}")
    assert rc == 255, (rc, err)
    rc, out, err = run_inner(host, f"timeout 60 ssh -W 127.0.0.1:22 {peer} < /dev/null")
    assert rc == 255 and "SSH-2.0" not in out, (rc, out, err)
    # What it allows does reach xl (here it ends at once: no migration stream on stdin).
    rc, out, err = run_inner(host, f"ssh {peer} xl migrate-receive < /dev/null")
    assert "may only run" not in err, err
    # There is no other root trust between the nodes.
    rc, out, err = run_inner(host, f"ssh -o IdentityFile=/dev/null -o IdentitiesOnly=yes {peer} id")
    assert rc != 0 and "uid=" not in out
