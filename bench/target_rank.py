#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: rank migration targets among 1000 hosts from a real gmond's XML.

How the XML is made (recorded from a real run, every time unless cached):
  1. start a real gmond 3.7.2 on loopback (pft_testbed.gmond.Gmond);
  2. spoof N hosts with gmetric -S ip:name, each with the 4 pft criterion metrics
     (pft_guest_count, pft_guest_names, pft_xen_free_memory_mb, load_one) plus
     filler metrics named like Debian gmond's default collection, so a host
     carries 34 metrics (~10 KB of XML, like a real node);
  3. read the XML from gmond's TCP port and keep it in run/bench/ (gitignored)
     with a sidecar .txt saying how it was recorded. --rebuild records it again.

Then it times, over --repeat runs (median):
  pft       : pft_ganglia.parse_xml (defusedxml, streaming target) + rank_targets
  peer etree: defusedxml.ElementTree.fromstring (full element tree, as scripts
              around ganglia-web usually do) + the same ranking done on the tree
and prints a table, the ratio against the peer, and LAST the contract line:
  target-rank N=1000: parse=<s> rank=<s> total=<s>
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "testbed"))
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))

import pft_ganglia  # noqa: E402  (plain import: the module_util has no Ansible dependency)

from pft_testbed.gmond import Gmond, sim_hosts  # noqa: E402

FILLER = (("cpu_num", 8, "uint16"), ("cpu_speed", 2400, "uint32"), ("mem_total", 67108864, "float"),
          ("swap_total", 0, "float"), ("boottime", 1795400000, "uint32"), ("machine_type", "x86_64", "string"),
          ("os_name", "Linux", "string"), ("os_release", "6.1.0-28-amd64", "string"),
          ("cpu_user", 1.5, "float"), ("cpu_system", 0.7, "float"), ("cpu_idle", 97.1, "float"),
          ("cpu_nice", 0.0, "float"), ("cpu_aidle", 96.8, "float"), ("cpu_wio", 0.1, "float"),
          ("cpu_steal", 0.0, "float"), ("load_five", 0.4, "float"), ("load_fifteen", 0.3, "float"),
          ("proc_run", 1, "uint32"), ("proc_total", 412, "uint32"), ("mem_free", 50331648, "float"),
          ("mem_shared", 12000, "float"), ("mem_buffers", 220000, "float"), ("mem_cached", 3000000, "float"),
          ("swap_free", 0, "float"), ("bytes_out", 1520.4, "float"), ("bytes_in", 2210.9, "float"),
          ("pkts_in", 12.1, "float"), ("pkts_out", 10.4, "float"), ("disk_total", 931.5, "double"),
          ("disk_free", 512.2, "double"))


def record(path, hosts_count, parallel):
    hosts = sim_hosts(hosts_count, prefix="cn", network="10.128.0.0/14", xen_free_mb=None, guests_every=7)
    for i, host in enumerate(hosts):
        host.xen_free_mb = 4096 + (i * 131) % 28672
        host.extra = {name: (value, mtype) for name, value, mtype in FILLER}
    t0 = time.monotonic()
    with Gmond(hostname="bench-controller", host_tmax=20, host_dmax=3600) as gmond:
        sent = gmond.publish(hosts, parallel=parallel)
        names = [h.name for h in hosts]
        xml = gmond.wait_for_hosts(names, timeout=120, metric="disk_free")
        # Re-read once metrics settled; each host must have all its metrics.
        xml = gmond.read_xml(timeout=10)
    elapsed = time.monotonic() - t0
    snapshot = pft_ganglia.parse_xml(xml, origin="bench gmond")
    missing = [h.name for h in hosts if len(snapshot.hosts.get(h.name).metrics) < 4 + len(FILLER)]
    if missing:
        raise SystemExit("recording incomplete: %d host(s) lack metrics (UDP drops?), e.g. %s"
                         % (len(missing), missing[:3]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(xml)
    with open(path + ".txt", "w", encoding="utf-8") as handle:
        handle.write("Recorded by bench/target_rank.py on %s: real gmond 3.7.2 on loopback, %d spoofed hosts, "
                     "%d gmetric calls (%d parallel) in %.1f s, %d bytes of XML.\n"
                     % (time.strftime("%Y-%m-%dT%H:%M:%S"), hosts_count, sent, parallel, elapsed, len(xml)))
    print("recorded %s: %d hosts, %d gmetric calls in %.1f s, %d bytes"
          % (path, hosts_count, sent, elapsed, len(xml)))
    return xml


def peer_etree(xml, candidates, memory_mb):
    """The obvious way: build the whole tree, then look the metrics up per host."""
    import defusedxml.ElementTree as DET
    root = DET.fromstring(xml)
    rows = []
    for host in root.iter("HOST"):
        name = host.get("NAME")
        if name not in candidates:
            continue
        if int(host.get("TN")) > 4 * int(host.get("TMAX")):
            continue
        metrics = {m.get("NAME"): m for m in host.iter("METRIC")}
        try:
            guests = float(metrics["pft_guest_count"].get("VAL"))
            free = float(metrics["pft_xen_free_memory_mb"].get("VAL"))
            load = float(metrics["load_one"].get("VAL"))
        except KeyError:
            continue
        if guests == 0 and free >= memory_mb:
            rows.append((load, -free, name))
    rows.sort()
    return rows[0][2] if rows else None


def median_time(func, repeat):
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--parallel", type=int, default=8, help="gmetric processes at once while recording")
    parser.add_argument("--xml", default=None, help="XML file (default run/bench/ganglia-<N>.xml)")
    parser.add_argument("--rebuild", action="store_true", help="record the XML again from a real gmond")
    args = parser.parse_args()

    path = args.xml or os.path.join(REPO, "run", "bench", "ganglia-%d.xml" % args.hosts)
    if args.rebuild or not os.path.exists(path):
        xml = record(path, args.hosts, args.parallel)
    else:
        with open(path, "rb") as handle:
            xml = handle.read()
        try:
            with open(path + ".txt", encoding="utf-8") as handle:
                print(handle.read().strip())
        except OSError:
            pass

    names = sorted(n for n in pft_ganglia.parse_xml(xml).hosts if n.startswith("cn"))
    candidates = names
    source = names[0]
    memory_mb = 8192
    criteria = pft_ganglia.Criteria()

    wanted = criteria.metric_names()  # what ganglia_target_info keeps
    parse_s, snapshot = median_time(lambda: pft_ganglia.parse_xml(xml, metrics=wanted), args.repeat)
    rank_s, result = median_time(lambda: pft_ganglia.rank_targets(snapshot, candidates, source=source,
                                                                  memory_mb=memory_mb, criteria=criteria),
                                 args.repeat)
    total_s, _ = median_time(lambda: pft_ganglia.rank_targets(pft_ganglia.parse_xml(xml, metrics=wanted), candidates,
                                                              source=source,
                                                              memory_mb=memory_mb, criteria=criteria),
                             args.repeat)
    parse_all_s, _ = median_time(lambda: pft_ganglia.parse_xml(xml), args.repeat)
    cand_set = set(candidates) - {source}
    peer_s, peer_target = median_time(lambda: peer_etree(xml, cand_set, memory_mb), args.repeat)

    metrics = sum(len(h.metrics) for h in pft_ganglia.parse_xml(xml).hosts.values())
    print()
    print("XML: %d bytes, %d hosts, %d metrics; candidates %d; median of %d runs"
          % (len(xml), len(snapshot.hosts), metrics, len(candidates), args.repeat))
    print("%-44s %10s %10s" % ("step", "seconds", "vs pft"))
    print("%-44s %10.4f %10s" % ("pft parse (defusedxml, criterion metrics)", parse_s, ""))
    print("%-44s %10.4f %10s" % ("pft parse keeping all 34 metrics (info)", parse_all_s, ""))
    print("%-44s %10.4f %10s" % ("pft rank (all reasons, full ranking)", rank_s, ""))
    print("%-44s %10.4f %10s" % ("pft total (parse + rank)", total_s, "1.00x"))
    print("%-44s %10.4f %9.2fx" % ("peer: defusedxml element tree + same rules", peer_s, peer_s / total_s))
    print("target: pft=%s peer=%s accepted=%d rejected=%s"
          % (result["target"], peer_target, len(result["accepted"]),
             {k: len(v) for k, v in sorted(result["rejected"].items())}))
    if result["target"] != peer_target:
        print("WARNING: pft and the peer chose different targets", file=sys.stderr)
    verdict = "ok" if total_s < 0.5 else "TOO SLOW (limit 0.5 s)"
    print("limit: total < 0.5 s: %s" % verdict)
    print("target-rank N=%d: parse=%.4f rank=%.4f total=%.4f" % (len(candidates), parse_s, rank_s, total_s))
    return 0 if total_s < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
