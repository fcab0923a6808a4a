#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: pft's proactive loop on the built-in virtual cluster, end to end.

1. boot the testbed (head + 3 compute nodes under QEMU, real ipmi_sim BMCs);
2. provision it with playbooks/site.yml (Ganglia, Xen, NFS-root guests);
3. start an MPI job across the guests;
4. install the watch (roles/pft_watch: cron every minute, under flock);
5. heat a CPU sensor on the node that runs guest1;
6. show the watch detecting it, choosing the spare, migrating, the MPI job finishing with
   the right answer, and the audit record;
7. write a PNG timeline and say where the logs are and how to tear down.

Everything it writes goes to run/demo-<time>/ (run/demo-latest points to it).
Usage: scripts/demo.py [--name demo] [--keep-watch] [--steps 240]
"""
import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "testbed"))

from pft_testbed.testbed import Testbed, TestbedError  # noqa: E402

BIN = os.path.join(REPO, ".venv", "bin")
HEAT_NODE, HEAT_SENSOR, HEAT_VALUE = "compute1", "CPU1 Temp", 92.0
GUEST, SPARE = "guest1", "compute3"
CRON_FILE = "/etc/cron.d/pft-watch"   # roles/pft_watch: pft_watch_cron_dir/pft-watch
T0 = time.monotonic()


def say(msg, step=None):
    stamp = "%6.1fs" % (time.monotonic() - T0)
    if step:
        print("\n\033[1m[%s] == %s\033[0m" % (stamp, msg), flush=True)
    else:
        print("[%s] %s" % (stamp, msg), flush=True)


class Demo:
    def __init__(self, args):
        self.args = args
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.run_dir = os.path.join(REPO, "run", "demo-" + stamp)
        os.makedirs(self.run_dir, mode=0o750)
        latest = os.path.join(REPO, "run", "demo-latest")
        if os.path.islink(latest):
            os.unlink(latest)
        if not os.path.exists(latest):
            os.symlink(os.path.basename(self.run_dir), latest)
        self.state_dir = os.path.join(self.run_dir, "state")
        self.inventory_dir = os.path.join(self.run_dir, "inventory")
        self.tb = Testbed(args.name, progress=lambda m: say(m))
        self.samples = {"sensor": [], "placement": [], "mpi": []}
        self.heated_at = None
        self.syslog_path = self.syslog()

    def syslog(self):
        """The watch's alerts go to syslog; the demo listens on its own socket and shows them."""
        path = os.path.join(self.run_dir, "syslog.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        log = open(os.path.join(self.run_dir, "alerts.log"), "a")

        def loop():
            while True:
                data = sock.recv(65536).decode(errors="replace")
                log.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + data + "\n")
                log.flush()
                text = data.split(": ", 1)[-1] if data.startswith("<") else data
                say("\033[33malert | %s\033[0m" % text[:200])
        threading.Thread(target=loop, daemon=True).start()
        return path

    # -- helpers ------------------------------------------------------------------
    def env(self):
        return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
                    ANSIBLE_FORCE_COLOR="0", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))

    def playbook(self, name, log, *extra, check=True):
        argv = [os.path.join(BIN, "ansible-playbook"), "-i", self.hosts, "-i",
                os.path.join(REPO, "inventory", "testbed-site"), os.path.join(REPO, "playbooks", name)] + list(extra)
        path = os.path.join(self.run_dir, log)
        say("ansible-playbook %s (log: %s)" % (" ".join([name] + list(extra)), os.path.relpath(path, REPO)))
        started = time.monotonic()
        with open(path, "a") as fh:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=self.env(), cwd=REPO)
            recap = []
            for line in proc.stdout:
                fh.write(line)
                if line.startswith("TASK ["):
                    print("    " + line.strip().rstrip("*").strip(), flush=True)
                elif line.startswith(("fatal:", "failed:")) or "PLAY RECAP" in line or recap:
                    recap.append(line.rstrip())
            rc = proc.wait()
        for line in recap:
            print("    " + line)
        say("%s finished in %.0f s (exit %d)" % (name, time.monotonic() - started, rc))
        if rc != 0 and check:
            raise SystemExit("demo: %s failed (exit %d); see %s" % (name, rc, path))
        return rc

    def guest_ssh(self, guest_ip, command, timeout=20):
        argv = ["ssh", "-i", self.guest_key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15", "-o", "BatchMode=yes",
                "root@" + guest_ip, command]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None

    # -- steps ------------------------------------------------------------------------
    def boot(self):
        say("1. the virtual cluster: head + 3 compute nodes, BMCs, network", step=True)
        if self.tb.exists():
            say("testbed %r is up already: reusing it" % self.args.name)
        else:
            self.tb.up(compute=3)
        self.hosts = self.tb.write_inventory(self.inventory_dir)
        for n in self.tb.nodes:
            say("  %-9s %s  BMC %s" % (n.name, n.address, n.bmc_address))

    def site(self):
        say("2. provision: playbooks/site.yml (Ganglia, Xen, NFS-root guests)", step=True)
        self.playbook("site.yml", "site.log")

    def guests(self):
        """Guest addresses (from the inventory variables) and the guests' ssh key (from the head)."""
        out = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", self.hosts, "-i",
                              os.path.join(REPO, "inventory", "testbed-site"), "--host", "head"],
                             capture_output=True, text=True, env=self.env(), cwd=REPO, check=True)
        hostvars = json.loads(out.stdout)
        self.guest_ips = {}
        prefix = self.tb.plan.subnet.rsplit(".", 1)[0]
        for g in hostvars.get("pft_guests", []):
            ip = g["ip"]
            if "{{" in ip:          # the inventory is not templated by ansible-inventory --host
                ip = prefix + "." + ip.rsplit(".", 1)[1]
            self.guest_ips[g["name"]] = ip
        self.guest_key = os.path.join(self.run_dir, "guest_ed25519")
        key = self.tb.ssh("head", "cat /srv/pft/guest-root/root/.ssh/id_ed25519").stdout
        fd = os.open(self.guest_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)

    def start_mpi(self):
        say("3. an MPI job across the guests (pi by the midpoint rule, one Allreduce per step)", step=True)
        self.guests()
        ip = self.guest_ips[GUEST]
        n = len(self.guest_ips)
        cmd = ("nohup mpiexec -f /etc/pft/mpi-hosts -n %d pft-mpi-job --steps %d --pause 1 "
               "> /root/pft-mpi-job.log 2>&1 < /dev/null & echo started" % (n, self.args.steps))
        deadline = time.monotonic() + 180      # a guest on a busy TCG node can be slow to answer
        while True:
            proc = self.guest_ssh(ip, cmd, timeout=60)
            if (proc is not None and proc.returncode == 0) or time.monotonic() > deadline:
                break
            say("guest1 did not answer ssh yet (%s); trying again" % (proc and proc.stderr.strip()[:80]))
            time.sleep(5)
        if proc is None or proc.returncode != 0:
            raise SystemExit("demo: could not start the MPI job on %s (%s): %s" % (GUEST, ip, proc and proc.stderr))
        say("mpiexec -n %d pft-mpi-job --steps %d started from %s (%s); log /root/pft-mpi-job.log there"
            % (n, self.args.steps, GUEST, ip))

    def install_watch(self):
        say("4. the watch: cron every minute, under flock (roles/pft_watch)", step=True)
        extra = {"pft_watch_inventory": [self.hosts, os.path.join(REPO, "inventory", "testbed-site")],
                 "pft_watch_log_file": os.path.join(self.run_dir, "watch.log"),
                 "pft_watch_state_dir": self.state_dir,
                 "pft_watch_extra_vars": {"pft_state_dir": self.state_dir,
                                          "pft_alert_syslog_socket": self.syslog_path},
                 "pft_watch_enabled": True}
        path = os.path.join(self.run_dir, "watch-install-vars.json")
        with open(path, "w") as fh:
            json.dump(extra, fh)
        self.playbook("install-watch.yml", "install-watch.log", "-e", "@" + path)

    def heat(self):
        say("5. heat %s '%s' to %.0f degrees C on %s's BMC" % (HEAT_NODE, HEAT_SENSOR, HEAT_VALUE, HEAT_NODE),
            step=True)
        # Heat a few seconds into a minute, so the cron run of this minute is sampling.
        now = time.time()
        wait = (65 - now % 60) % 60
        if wait > 5:
            say("waiting %.0f s: the next watch run starts at the minute" % wait)
            time.sleep(wait)        # not watch_for(): one of its polls of three TCG dom0s can take 30 s
        self.tb.heat(HEAT_NODE, HEAT_SENSOR, HEAT_VALUE)
        self.heated_at = time.time()
        say("%s '%s' = %.0f (critical is >= 85)" % (HEAT_NODE, HEAT_SENSOR, HEAT_VALUE))

    def watch_for(self, seconds, until=None):
        """Poll and print: watch log lines, the audit log, where the guest runs, MPI progress."""
        end = time.monotonic() + seconds
        logs = {"watch": [os.path.join(self.run_dir, "watch.log"), 0],
                "audit": [os.path.join(self.state_dir, "audit.jsonl"), 0]}
        last_place, last_sensor, last_mpi = None, 0.0, 0.0
        while time.monotonic() < end:
            for name, ent in logs.items():
                try:
                    with open(ent[0]) as fh:
                        fh.seek(ent[1])
                        chunk = fh.read()
                        ent[1] = fh.tell()
                except OSError:
                    continue
                for line in chunk.splitlines():
                    if name == "audit":
                        self.on_audit(line)
                    elif any(k in line for k in ("TASK [", "fatal", "-> ", "PLAY RECAP", "pft-watch")):
                        print("    watch | " + line.strip().rstrip("*").strip()[:150], flush=True)
            now = time.monotonic()
            if now - last_sensor >= 2:
                last_sensor = now
                self.sample_sensor()
                place = self.placement()
                if place and place != last_place:
                    say("guests: " + ", ".join("%s on %s" % (g, n) for g, n in sorted(place.items())))
                    last_place = place
            if now - last_mpi >= 5:
                last_mpi = now
                self.sample_mpi()
            if until and until():
                return True
            time.sleep(0.5)
        return False

    def on_audit(self, line):
        try:
            rec = json.loads(line)
        except ValueError:
            return
        self.samples.setdefault("audit", []).append(rec)
        mig = rec.get("migration") or {}
        say("audit: %s %s of %s -> %s (%s)%s" % (rec.get("outcome"), rec.get("guest", ""), rec.get("node"),
                                                 rec.get("target"), rec.get("reason"),
                                                 " in %.1f s" % mig["total_s"] if mig.get("total_s") else ""))

    def sample_sensor(self):
        try:
            out = self.tb.ipmitool(HEAT_NODE, "sensor", "reading", HEAT_SENSOR, timeout=10).stdout
            value = float(out.split("|")[1])
        except (TestbedError, subprocess.TimeoutExpired, IndexError, ValueError):
            return
        self.samples["sensor"].append((time.time(), value))

    def placement(self):
        place = {}
        for node in ("compute1", "compute2", "compute3"):
            try:
                out = self.tb.ssh(node, "xl list", timeout=10, check=False).stdout
            except TestbedError:
                continue
            for line in out.splitlines()[1:]:
                name = line.split()[0] if line.split() else ""
                if name and name != "Domain-0":
                    place[name] = node
        if place:
            self.samples["placement"].append((time.time(), dict(place)))
        return place

    def sample_mpi(self):
        proc = self.guest_ssh(self.guest_ips[GUEST], "cat /root/pft-mpi-job.log", timeout=8)
        if proc is None or proc.returncode != 0:
            return None
        steps = []
        done = None
        for line in proc.stdout.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            if line.startswith("pft-mpi-job step="):
                steps.append((float(f["t"]), int(f["step"].split("/")[0])))
            elif line.startswith("pft-mpi-job done"):
                done = line
        if steps and (not self.samples["mpi"] or steps[-1] != self.samples["mpi"][-1]):
            say("mpi: step %d/%d" % (steps[-1][1], self.args.steps))
        self.samples["mpi"] = steps
        self.mpi_done = done
        return done

    def follow(self):
        say("6. the watch at work (Ctrl-C stops watching; the cluster keeps running)", step=True)
        self.mpi_done = None

        def moved_and_done():
            recs = [r for r in self.samples.get("audit", []) if r.get("outcome") in ("migrated", "failed")]
            return bool(recs) and self.mpi_done
        ok = self.watch_for(self.args.timeout, until=moved_and_done)
        self.sample_mpi()
        if self.mpi_done:
            say(self.mpi_done)
        recs = [r for r in self.samples.get("audit", []) if r.get("outcome") in ("migrated", "failed")]
        if recs:
            print(json.dumps(recs[-1], indent=1, sort_keys=True)[:6000])
        moved = bool(recs) and recs[-1].get("outcome") == "migrated"
        if recs and not moved:
            say("the evacuation was recorded as %r: %s" % (recs[-1].get("outcome"), recs[-1].get("error", "")))
        return ok and moved and "result=correct" in (self.mpi_done or "")

    def timeline(self):
        path = os.path.join(self.run_dir, "timeline.png")
        with open(os.path.join(self.run_dir, "timeline.json"), "w") as fh:
            json.dump({"heated_at": self.heated_at, **self.samples}, fh, indent=1)
        from pft_demo_timeline import render
        render(self.samples, self.heated_at, path, watch_state=os.path.join(self.state_dir, "watch-state.json"),
               node=HEAT_NODE, sensor=HEAT_SENSOR)
        say("timeline: %s" % os.path.relpath(path, REPO))

    def finish(self, ok):
        say("7. where things are", step=True)
        if not self.args.keep_watch:
            # the later -e wins: the install's vars file says pft_watch_enabled: true
            self.playbook("install-watch.yml", "install-watch.log",
                          "-e", "@" + os.path.join(self.run_dir, "watch-install-vars.json"),
                          "-e", "pft_watch_enabled=false", check=False)
            if os.path.exists(CRON_FILE):
                say("\033[31mthe watch cron is still installed (%s): remove it with install-watch.yml "
                    "-e pft_watch_enabled=false\033[0m" % CRON_FILE)
                ok = False
            else:
                say("watch cron removed again (--keep-watch leaves it)")
        for what, rel in (("run directory", ""), ("watch log", "watch.log"), ("audit log", "state/audit.jsonl"),
                          ("alerts", "alerts.log"),
                          ("site.yml log", "site.log"), ("timeline", "timeline.png")):
            print("  %-14s %s" % (what, os.path.relpath(os.path.join(self.run_dir, rel), REPO)))
        print("  tear down:     testbed/testbed --name %s down" % shlex.quote(self.args.name))
        print("  cool the node: testbed/testbed --name %s cool %s, then ansible-playbook playbooks/return.yml "
              "-e node=%s" % (self.args.name, HEAT_NODE, HEAT_NODE))
        say("demo %s" % ("PASSED: the guest moved and the MPI job finished correctly" if ok else "did NOT complete"))
        return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default=os.environ.get("PFT_DEMO_TESTBED", "demo"), help="testbed name")
    ap.add_argument("--steps", type=int, default=240, help="MPI job steps (about 1.3 s each)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the evacuation and the job")
    ap.add_argument("--keep-watch", action="store_true", help="leave the watch cron installed")
    ap.add_argument("--skip-site", action="store_true", help="the testbed is provisioned already")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("demo: needs root (network namespaces, taps, cron)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    demo = Demo(args)
    say("pft demo; run directory %s" % os.path.relpath(demo.run_dir, REPO))
    demo.boot()
    if not args.skip_site:
        demo.site()
    demo.start_mpi()
    demo.install_watch()
    demo.heat()
    ok = False
    try:
        ok = demo.follow()
    except KeyboardInterrupt:
        say("stopped watching")
    demo.timeline()
    ok = demo.finish(ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
