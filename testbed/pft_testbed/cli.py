# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""``testbed`` command line: bring the virtual cluster up and down, and act on its nodes."""
import argparse
import json
import os
import sys

from pft_testbed import config
from pft_testbed.errors import TestbedError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_NAME = "pft"


def default_inventory(name):
    """inventory/testbed/ for the default testbed, inventory/testbed.<name>/ for any other, so that
    bringing up a second testbed never overwrites the first one's inventory (both are gitignored)."""
    return os.path.join(REPO, "inventory", "testbed" if name == DEFAULT_NAME else "testbed." + name)


def _compute(text):
    try:
        return config.check_compute(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name(text):
    try:
        return config.check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _trip(text):
    if text == "unr":
        return text
    return _float(text)


def build_parser():
    ap = argparse.ArgumentParser(
        prog="testbed", description="pft's virtual cluster: QEMU/TCG nodes with ipmi_sim BMCs on a private network.")
    ap.add_argument("--name", type=_name, default=os.environ.get("PFT_TESTBED_NAME", DEFAULT_NAME),
                    help="testbed name; two testbeds with different names never collide (default: pft, "
                         "or $PFT_TESTBED_NAME)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="boot the cluster (head + N compute) and write the inventory")
    up.add_argument("--compute", type=_compute, default=3, help="compute nodes, the last ones spares (default 3)")
    up.add_argument("--spares", type=int, default=1, help="how many of the last compute nodes are spares (default 1)")
    up.add_argument("--timeout", type=int, default=None, help="seconds to wait for every node's ssh")
    up.add_argument("--inventory", help="where to write the inventory (default inventory/testbed/, or "
                                        "inventory/testbed.NAME/ for a testbed not named pft)")
    dn = sub.add_parser("down", help="stop everything; leaves no process, namespace, tap, mount or file")
    dn.add_argument("--inventory", help="inventory to remove if `up` wrote it (default as for up)")
    st = sub.add_parser("status", help="state of each node")
    st.add_argument("--json", action="store_true")
    s = sub.add_parser("ssh", help="shell (or command) on a node")
    s.add_argument("node")
    s.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run instead of a shell")
    c = sub.add_parser("console", help="attach to a node's serial console (Ctrl-] leaves), or print its log")
    c.add_argument("node")
    c.add_argument("--log", action="store_true", help="print the console log instead of attaching")
    h = sub.add_parser("heat", help="set a BMC sensor reading, e.g. heat compute1 'CPU1 Temp' 92")
    h.add_argument("node")
    h.add_argument("sensor")
    h.add_argument("value", type=_float)
    r = sub.add_parser("ramp", help="ramp a BMC sensor at RATE units/s; with --trip, power the node off hard when "
                                    "the reading reaches it (a thermal trip), e.g. ramp compute1 'CPU1 Temp' "
                                    "--rate 0.5 --from 60 --trip unr")
    r.add_argument("node")
    r.add_argument("sensor")
    r.add_argument("--rate", type=_float, required=True, help="units per second (negative: falling)")
    r.add_argument("--from", dest="start", type=_float, default=None, help="first reading (default: nominal)")
    r.add_argument("--to", type=_float, default=None, help="stop the ramp there (without --trip)")
    r.add_argument("--noise", type=_float, default=0.0, help="Gaussian noise, standard deviation in units")
    r.add_argument("--trip", type=_trip, default=None,
                   help="power the node off when the reading reaches this value; unr: the sensor's own "
                        "non-recoverable threshold")
    r.add_argument("--seed", type=int, default=None, help="noise seed (repeatable runs)")
    r.add_argument("--period", type=_float, default=0.25, help="seconds between readings (default 0.25)")
    r.add_argument("--json", action="store_true", help="print the ramp's record (readings, trip time) as JSON")
    co = sub.add_parser("cool", help="every sensor of the node's BMC back to nominal (and the BMC reachable)")
    co.add_argument("node")
    bf = sub.add_parser("bmc-fail", help="make the node's BMC unreachable")
    bf.add_argument("node")
    br = sub.add_parser("bmc-restore", help="make the node's BMC reachable again")
    br.add_argument("node")
    k = sub.add_parser("kill", help="stop the node abruptly (its BMC stays up)")
    k.add_argument("node")
    sn = sub.add_parser("start", help="power a stopped node on through its BMC (boots from its own disk)")
    sn.add_argument("node")
    pw = sub.add_parser("power", help="IPMI chassis power through the node's BMC, over LAN")
    pw.add_argument("node")
    pw.add_argument("action", choices=("on", "off", "reset", "cycle", "soft", "status"))
    inv = sub.add_parser("inventory", help="write the inventory (as up does) for the playbooks and molecule")
    inv.add_argument("--dir", help="default as for up")
    sub.add_parser("image", help="build the node image if its inputs changed, and print its path")
    return ap


def run(args):
    from pft_testbed import host
    from pft_testbed.testbed import Testbed
    tb = Testbed(args.name)
    cmd = args.command
    for key in ("inventory", "dir"):
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, default_inventory(args.name))
    if cmd == "up":
        timeout = {"boot_timeout": args.timeout} if args.timeout else {}
        tb.up(compute=args.compute, spares=args.spares, **timeout)
        path = tb.write_inventory(args.inventory)
        print(f"inventory: {path}")
    elif cmd == "down":
        tb.down()
        from pft_testbed.inventory import remove_inventory
        if remove_inventory(args.inventory, args.name):
            print(f"inventory {args.inventory}: removed")
    elif cmd == "status":
        if not tb.exists():
            print(f"testbed {args.name}: down")
            return 3
        st = tb.status()
        if args.json:
            print(json.dumps(st, indent=2))
        else:
            print(f"testbed {args.name}: subnet {tb.plan.subnet}, netns {tb.plan.netns}")
            for node, s in st.items():
                print(f"  {node:<10} {s['role']:<16} {s['address']:<14} qemu {s['qemu']:<8} ssh {s['ssh']:<5} "
                      f"bmc {s['bmc']}")
    elif cmd == "ssh":
        argv = tb.ssh_argv(args.node, *args.cmd)
        if sys.stdin.isatty() and not args.cmd:
            argv.insert(1, "-t")
        os.execvp(argv[0], argv)
    elif cmd == "console":
        log = os.path.join(tb.node_dir(tb.node(args.node).name), "console.log")
        if args.log or not sys.stdin.isatty():
            print(tb.console_tail(args.node, lines=200))
        else:
            host.require("socat")
            print(f"attached to {args.node}'s serial console; Ctrl-] leaves (log: {log})", file=sys.stderr)
            sock = os.path.join(tb.node_dir(args.node), "console.sock")
            os.execvp("socat", ["socat", "-,raw,echo=0,escape=0x1d", f"UNIX-CONNECT:{sock}"])
    elif cmd == "heat":
        value = tb.heat(args.node, args.sensor, args.value)
        print(f"{args.node}: {args.sensor} = {value}")
    elif cmd == "ramp":
        from pft_testbed.ramp import node_ramp
        ramp = node_ramp(tb, args.node, args.sensor, args.rate, start=args.start, to=args.to, noise=args.noise,
                         trip=args.trip, seed=args.seed, period=args.period)
        print(f"{args.node}: ramping {args.sensor} from {ramp.start} at {args.rate}/s"
              + (f", trip at {ramp.trip}" if ramp.trip is not None else ""), file=sys.stderr, flush=True)
        try:
            rec = ramp.run()
        except KeyboardInterrupt:
            ramp.stop()
            rec = ramp.record or {"why": "interrupted"}
        if args.json:
            print(json.dumps(rec, indent=2))
        elif rec.get("tripped_at") is not None:
            print(f"{args.node}: tripped at {rec['tripped_at']:.3f} (reading {rec['trip_value']}, "
                  f"{rec['tripped_at'] - rec['started_at']:.1f} s after the start): powered off")
        else:
            print(f"{args.node}: {args.sensor} = {rec.get('last_value')} ({rec.get('why')})")
    elif cmd == "cool":
        tb.cool(args.node)
        print(f"{args.node}: sensors back to nominal")
    elif cmd == "bmc-fail":
        tb.bmc_fail(args.node)
        print(f"{args.node}: BMC unreachable (bmc-restore or cool brings it back)")
    elif cmd == "bmc-restore":
        tb.bmc_restore(args.node)
        print(f"{args.node}: BMC reachable")
    elif cmd == "kill":
        tb.kill(args.node)
        print(f"{args.node}: killed")
    elif cmd == "start":
        tb.start_node(args.node)
        tb.wait_ssh([args.node])
    elif cmd == "power":
        print(f"{args.node}: {tb.power(args.node, args.action)}")
    elif cmd == "inventory":
        print(tb.write_inventory(args.dir))
    elif cmd == "image":
        from pft_testbed.image import ImageBuilder
        host.require_root("building the image")
        print(ImageBuilder().ensure())
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            config.check_spares(args.spares, args.compute)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        return run(args)
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130
