# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Xen for pft: domain facts, target probes, instrumented `xl migrate`, checkpoint images (issue 6).

Plain Python (no Ansible import) so it can be unit-tested; the modules xen_domain_info,
xen_prestage, xen_migrate and xen_restore are thin wrappers (and the xen_host role installs this file
on the dom0s for the checkpoint receiver). Every command is an argv list with a
deadline. The research behind the parsers is docs/xen-migration.md (Xen 4.17.5 source).

Facts
    :func:`parse_xl_list`, :func:`parse_xl_list_long`, :func:`parse_xl_uptime`,
    :func:`parse_xl_info` parse the stable outputs of ``xl``; :func:`domain_info` runs
    them and joins the results.

Target probe
    The source dom0 reaches the target only through the restricted migration key, whose
    forced command (``pft-migrate-receive``) also answers a read-only ``pft-probe`` verb.
    :func:`probe_argv` builds that call and :func:`parse_probe` reads its sections.

Migration
    :class:`MigrationLog` is fed ``(t, line)`` pairs from ``xl -v migrate`` (stderr, with
    the LD_PRELOAD shim that un-hides libxc's progress) and keeps the rounds, the markers
    and the phase. :class:`ConvergenceGuard` decides, from the round sizes, whether the
    precopy converges. :func:`migrate` drives the process (pause/unpause for
    stop-and-copy, clean abort by SIGTERM to libxl-save-helper before the point of no
    return) and verifies where the guest runs afterwards. Past the point of no return it waits for a
    bounded time and then leaves xl running (``in_flight``). xl holds the guest's migration lock
    (:func:`acquire_migration_lock`); :func:`migrations_here` lists the migrations still running.

Checkpoint and restore
    :func:`checkpoint` (``xen_prestage checkpoint=true``) saves the guest with ``xl save -c``
    and refreshes its image on the target with the changed blocks only (:func:`ckpt_sums`,
    :func:`ckpt_delta` here, :func:`ckpt_apply` there, through the forced command's
    ``pft-ckpt-sums``/``pft-ckpt-put`` verbs and :func:`ckpt_receiver_main`). :func:`restore`
    (``xen_restore``) starts the guest from that image when no other dom0 runs it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import select
import signal
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

XL = "/usr/sbin/xl"
SHIM = "/usr/local/lib/pft/pft-xl-progress.so"
PAGE = 4096
MIB = 1024 * 1024

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")

# Checkpoint images (see the checkpoint section at the end)
CKPT_DIR = "/var/lib/pft/checkpoints"
CKPT_BLOCK = 256 * 1024
CKPT_MAGIC = b"PFTCKPT 1\n"
XL_SAVE_MAGIC = b"Xen saved domain, xl format\n"
CKPT_MAX_SIZE = 1 << 40
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class XenError(Exception):
    """A Xen command failed, timed out, or printed something unexpected."""


def check_name(name, what="guest"):
    if not isinstance(name, str) or not NAME_RE.match(name) or name == "Domain-0":
        raise XenError("%s name %r is not a valid domain name ([A-Za-z0-9][A-Za-z0-9_.-]*, not Domain-0)"
                       % (what, name))
    return name


def check_host(host, what="target"):
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise XenError("%s %r is not a host name or IPv4 address" % (what, host))
    return host


# --------------------------------------------------------------------------- running


def run(argv, timeout, env=None, input_text=None, stdin_path=None):
    """Run argv (no shell) with a deadline; returns (rc, stdout, stderr). stdin_path: a file for its stdin."""
    stdin_file = None
    try:
        if stdin_path is not None:
            stdin_file = open(stdin_path, "rb")
        proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=stdin_file if stdin_file else (None if input_text is not None else
                                                                   subprocess.DEVNULL))
    except subprocess.TimeoutExpired:
        raise XenError("%s did not finish within %.0f s" % (" ".join(argv), timeout))
    except OSError as exc:
        raise XenError("cannot run %s: %s" % (argv[0], exc))
    finally:
        if stdin_file:
            stdin_file.close()
    return proc.returncode, proc.stdout, proc.stderr


def run_ok(argv, timeout, runner=None):
    rc, out, err = (runner or run)(argv, timeout)
    if rc != 0:
        raise XenError("%s failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip()[-500:]))
    return out


# --------------------------------------------------------------------------- parsers

XL_LIST_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+"
                         r"(?P<state>[r-][b-][p-][s-][-rscwS?][d-])\s+(?P<cpu_s>\d+\.\d)$")
XL_UPTIME_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?:(?P<days>\d+) days?, )?\s*"
                           r"(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)$")
XL_INFO_ROW = re.compile(r"^(?P<key>[a-z_]+)\s*:\s?(?P<value>.*)$")


def state_word(flags):
    """The xl list state letters (e.g. ``-b----``) as one word, most significant first."""
    if len(flags) != 6:
        return "unknown"
    if flags[5] == "d":
        return "dying"
    if flags[4] == "c":
        return "crashed"
    if flags[3] == "s":
        return "shutdown"
    if flags[2] == "p":
        return "paused"
    if flags[0] == "r":
        return "running"
    if flags[1] == "b":
        return "blocked"
    return "idle"


def parse_xl_list(text):
    """Rows of plain ``xl list``: list of dicts (name, domid, memory_mb, vcpus, state, state_flags, cpu_s)."""
    rows = []
    lines = text.splitlines()
    for n, line in enumerate(lines):
        line = line.rstrip()
        if not line or (n == 0 and line.startswith("Name")):
            continue
        m = XL_LIST_ROW.match(line)
        if not m:
            raise XenError("unexpected line in xl list output: %r" % line)
        rows.append(dict(name=m.group("name"), domid=int(m.group("domid")), memory_mb=int(m.group("mem")),
                         vcpus=int(m.group("vcpus")), state=state_word(m.group("state")),
                         state_flags=m.group("state"), cpu_s=float(m.group("cpu_s"))))
    return rows


def parse_xl_uptime(text):
    """``xl uptime``: {name: seconds}."""
    out = {}
    for line in text.splitlines():
        m = XL_UPTIME_ROW.match(line.rstrip())
        if m:
            out[m.group("name")] = (int(m.group("days") or 0) * 86400 + int(m.group("h")) * 3600
                                    + int(m.group("m")) * 60 + int(m.group("s")))
    return out


def parse_xl_info(text):
    """``xl info``: {key: value} (strings; continuation lines are appended to the previous key)."""
    info = {}
    last = None
    for line in text.splitlines():
        m = XL_INFO_ROW.match(line)
        if m:
            last = m.group("key")
            info[last] = m.group("value").strip()
        elif last and line.strip():
            info[last] += " " + line.strip()
    return info


def parse_xl_list_long(text):
    """``xl list -l`` (JSON): {name: config facts}. Configuration only, never run state."""
    text = text.strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise XenError("xl list -l did not print JSON (is output_format=\"sxp\" set in xl.conf?): %s" % exc)
    out = {}
    for entry in data if isinstance(data, list) else [data]:
        config = entry.get("config") or {}
        c_info = config.get("c_info") or {}
        b_info = config.get("b_info") or {}
        name = c_info.get("name")
        if not name:
            continue
        pv = (b_info.get("type.pv") or {})
        max_memkb = b_info.get("max_memkb")
        target_memkb = b_info.get("target_memkb")
        out[name] = dict(
            domid=entry.get("domid"),
            type=c_info.get("type", "hvm"),
            uuid=c_info.get("uuid"),
            maxmem_mb=(max_memkb // 1024) if isinstance(max_memkb, int) and max_memkb >= 0 else None,
            target_mb=(target_memkb // 1024) if isinstance(target_memkb, int) and target_memkb >= 0 else None,
            max_vcpus=b_info.get("max_vcpus"),
            kernel=b_info.get("kernel") or pv.get("kernel"),
            ramdisk=b_info.get("ramdisk") or pv.get("ramdisk"),
            cmdline=b_info.get("cmdline") or pv.get("cmdline"),
            nics=[dict(mac=nic.get("mac"), bridge=nic.get("bridge"), ip=nic.get("ip"))
                  for nic in config.get("nics") or []],
        )
    return out


def host_facts(info, toolstack_version=None):
    """The host part of xen_domain_info from a parsed ``xl info``."""
    def num(key):
        try:
            return int(info[key])
        except (KeyError, ValueError):
            return None
    caps = info.get("virt_caps", "").split()
    return dict(
        hostname=info.get("host"),
        free_memory_mb=num("free_memory"),
        total_memory_mb=num("total_memory"),
        outstanding_claims_mb=num("outstanding_claims"),
        xen_version=info.get("xen_version"),
        xen_commandline=info.get("xen_commandline"),
        toolstack_version=toolstack_version,
        virt_caps=caps,
        shadow_paging="shadow" in caps,
        nr_cpus=num("nr_cpus"),
    )


def toolstack_version(runner=None, timeout=15):
    rc, out, _ = (runner or run)(["dpkg-query", "-W", "-f=${Version}", "xen-utils-4.17"], timeout)
    return out.strip() if rc == 0 and out.strip() else None


def domain_info(names=None, runner=None, timeout=30, xl=XL, lock_dir=None, proc_dir="/proc"):
    """Domains (all, or those named) and host facts of this dom0. Unknown names are reported, not fatal.
    Also the guests whose migration still runs here (``migrating``, ``migrations``: see
    :func:`migrations_here`); read-only, it never creates a lock file."""
    rows = parse_xl_list(run_ok([xl, "list"], timeout, runner))
    rc, long_out, _ = (runner or run)([xl, "list", "-l"], timeout)
    configs = parse_xl_list_long(long_out) if rc == 0 else {}
    rc, up_out, _ = (runner or run)([xl, "uptime"], timeout)
    uptimes = parse_xl_uptime(up_out) if rc == 0 else {}
    info = parse_xl_info(run_ok([xl, "info"], timeout, runner))
    host = host_facts(info, toolstack_version(runner))
    domains = []
    for row in rows:
        if names and row["name"] not in names:
            continue
        conf = configs.get(row["name"], {})
        d = dict(row)
        d["maxmem_mb"] = conf.get("maxmem_mb") if conf.get("maxmem_mb") is not None else (
            host["total_memory_mb"] if row["domid"] == 0 else None)
        if row["domid"] == 0 and conf.get("maxmem_mb") is None:
            d["maxmem_mb"] = row["memory_mb"]
        d["target_mb"] = conf.get("target_mb")
        d["type"] = conf.get("type") or ("pv" if row["domid"] == 0 else None)
        d["uptime_s"] = uptimes.get(row["name"])
        d["kernel"] = conf.get("kernel")
        d["ramdisk"] = conf.get("ramdisk")
        d["cmdline"] = conf.get("cmdline")
        domains.append(d)
    found = {d["name"] for d in domains}
    missing = [n for n in (names or []) if n not in found]
    guests = [d["name"] for d in domains if d["domid"] != 0]
    migrations = [m for m in migrations_here(LOCK_DIR if lock_dir is None else lock_dir, proc_dir)
                  if not names or m["guest"] in names]
    return dict(domains=domains, guests=guests, missing=missing, host=host,
                migrating=[m["guest"] for m in migrations], migrations=migrations)


def find_domain(rows, name):
    """Rows for the guest under its own name and the transient migration names."""
    names = {name: "self", name + "--incoming": "incoming", name + "--migratedaway": "migratedaway"}
    return [dict(r, role=names[r["name"]]) for r in rows if r["name"] in names]


# --------------------------------------------------------------------------- target probe

PROBE_PATH_RE = re.compile(r"^/(etc/xen|var/lib/pft|boot|srv/pft)/[A-Za-z0-9_./-]+$")


def forced_argv(target, words, ssh="ssh", connect_timeout=10):
    """ssh argv that asks the target's forced command (the migration key's) for one of its verbs."""
    check_host(target)
    return [ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % connect_timeout, target, " ".join(words)]


def probe_argv(target, files=(), tcp=(), ssh="ssh", connect_timeout=10):
    """ssh argv that asks the target's forced command for its read-only probe."""
    check_host(target)
    words = ["pft-probe"]
    for path in files:
        if not PROBE_PATH_RE.match(path) or "/../" in path or path.endswith("/.."):
            raise XenError("cannot probe %r on the target: only files under /etc/xen, /var/lib/pft, /boot, "
                           "/srv/pft" % path)
        words.append("file=" + path)
    for host, port in tcp:
        check_host(host, "NFS server")
        words.append("tcp=%s:%d" % (host, int(port)))
    return forced_argv(target, words, ssh, connect_timeout)


def parse_probe(text):
    """Sections of pft-probe output: {"xl-info": text, "xl-list": text, "toolstack": str,
    "files": {path: sha256|None}, "tcp": {host:port: bool}, "complete": bool}."""
    out = dict(files={}, tcp={}, complete=False)
    section, arg, buf = None, None, []

    def flush():
        body = "\n".join(buf)
        if section in ("xl-info", "xl-list", "xl-uptime"):
            out[section] = body
        elif section == "toolstack":
            out["toolstack"] = body.strip() or None
        elif section == "sha256":
            word = body.strip().split()[0] if body.strip() else ""
            out["files"][arg] = word if re.match(r"^[0-9a-f]{64}$", word) else None
        elif section == "tcp":
            out["tcp"][arg] = body.strip() == "ok"

    for line in text.splitlines():
        m = re.match(r"^== (?P<sec>[a-z0-9-]+)(?: (?P<arg>\S+))?$", line)
        if m:
            if section:
                flush()
            section, arg, buf = m.group("sec"), m.group("arg"), []
            if section == "end":
                out["complete"] = True
                section = None
            continue
        buf.append(line)
    if section:
        flush()
    return out


def probe_target(target, files=(), tcp=(), timeout=60, runner=None):
    rc, out, err = (runner or run)(probe_argv(target, files, tcp), timeout)
    if rc != 0:
        raise XenError("probe of target %s failed (rc=%d): %s" % (target, rc, (err or out).strip()[-400:]))
    probe = parse_probe(out)
    if not probe["complete"] or "xl-info" not in probe:
        raise XenError("probe of target %s gave an incomplete answer (an old pft-migrate-receive without "
                       "pft-probe?): %s" % (target, (out + err).strip()[-300:]))
    probe["info"] = parse_xl_info(probe["xl-info"])
    probe["host"] = host_facts(probe["info"], probe.get("toolstack"))
    probe["domains"] = parse_xl_list(probe.get("xl-list", ""))
    return probe


# --------------------------------------------------------------------------- migration log

P = r"(?:(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?P<tz>\S+) \[(?P<pid>\d+)\] )?"
PROGRESS_RE = re.compile(P + r"xc: (?P<level>progress|detail): (?P<what>.+?): (?P<done>\d+)/(?P<total>\d+) +"
                         r"(?P<pct>\d+)%")
ROUND_RE = re.compile(r"^Frames iteration (?P<iter>\d+)$")
SENDER_RE = re.compile(r"migration sender: (?P<text>.*)$")
TARGET_RE = re.compile(r"migration target: (?P<text>.*)$")
FINAL_RE = re.compile(r"(Migration successful\.|Migration failed, resuming at sender\.|Migration failed, failed to "
                      r"suspend at sender\.|Migration failed due to problems at target\.|\*\* Migration failed "
                      r"during final handshake \*\*)")
SUSPEND_REQ_RE = re.compile(r"issuing (?:PV|HVM)? ?suspend request|suspend request via")
ERROR_RE = re.compile(r"(?:libxl|xc|libxl-save-helper): (?:error|critical): (?P<msg>.*)$")


class Round(object):
    __slots__ = ("label", "final", "pages", "done", "t_first", "t_end", "t_start")

    def __init__(self, label, final, pages, t_start, t_first):
        self.label, self.final, self.pages = label, final, pages
        self.t_start, self.t_first, self.t_end, self.done = t_start, t_first, None, 0


class MigrationLog(object):
    """State machine over the lines of ``xl -v migrate`` (source and, through ssh, target)."""

    def __init__(self, t0=0.0):
        self.t0 = t0
        self.phase = "connect"          # connect, live, final, handover, done
        self.rounds = []
        self.markers = {}
        self.errors = []
        self.other = []
        self.result = None
        self.progress_seen = False
        self.last_marker_t = t0

    # -- feeding
    def feed(self, t, line):
        """Feed one line; returns a list of events: ('round_start', Round), ('round_end', Round),
        ('suspended',), ('suspend_request',), ('no_return',), ('result', text)."""
        ev = []
        m = PROGRESS_RE.search(line)
        if m:
            what, done, total = m.group("what"), int(m.group("done")), int(m.group("total"))
            r = ROUND_RE.match(what)
            if r or what == "Frames":
                self.progress_seen = True
                label = int(r.group("iter")) if r else 0
                final = self.phase == "final"
                cur = self.rounds[-1] if self.rounds else None
                if cur is None or cur.label != label or cur.final != final or cur.pages != total:
                    if cur is not None and cur.t_end is None:
                        cur.t_end = t
                        ev.append(("round_end", cur))
                    start = t if done > 0 or not self.rounds and self.phase == "connect" else t
                    if done > 0:                      # the 0/N line was throttled away
                        start = self.last_marker_t if (label == 0 or final) else (cur.t_end if cur else t)
                    cur = Round(label, final, total, start, t)
                    self.rounds.append(cur)
                    if self.phase == "connect":
                        self.phase = "live"
                    ev.append(("round_start", cur))
                cur.done = max(cur.done, done)
                if done >= total and cur.t_end is None:
                    cur.t_end = t
                    ev.append(("round_end", cur))
                return ev
            if what == "Domain now suspended":
                self._close_round(t, ev)
                self._mark("suspended", t)
                self.phase = "final"
                ev.append(("suspended",))
                return ev
            if what in ("End of stream", "Complete"):
                self._close_round(t, ev)
                self._mark(what.lower().replace(" ", "_"), t)
                return ev
            return ev
        if "Saving domain" in line:
            self._mark("saving", t)
            if self.phase == "connect":
                self.phase = "live"
            ev.append(("saving",))
            return ev
        if SUSPEND_REQ_RE.search(line):
            self._mark("suspend_request", t)
            ev.append(("suspend_request",))
            return ev
        if "guest has suspended" in line:
            self._mark("guest_suspended", t)
            if self.phase != "final":
                self._close_round(t, ev)
                self.phase = "final"
                ev.append(("suspended",))
            return ev
        s = SENDER_RE.search(line)
        if s:
            text = s.group("text")
            if text.startswith("Target has acknowledged transfer"):
                self._close_round(t, ev)
                self._mark("acknowledged", t)
                self.phase = "handover"
            elif text.startswith("Giving target permission to start"):
                self._mark("no_return", t)
                self.phase = "handover"
                ev.append(("no_return",))
            elif text.startswith("Target reports successful startup"):
                self._mark("target_started_ack", t)
            elif "failed" in text or "failure" in text or "Trying to resume" in text:
                self.errors.append(line.strip())
            else:
                self.other.append(line.strip())
            return ev
        tm = TARGET_RE.search(line)
        if tm:
            text = tm.group("text")
            if text.startswith("Transfer complete"):
                self._mark("target_transfer_complete", t)
            elif text.startswith("Got permission"):
                self._mark("target_permission", t)
            elif text.startswith("Domain started"):
                self._mark("target_started", t)
            elif "fail" in text.lower():
                self.errors.append(line.strip())
            return ev
        f = FINAL_RE.search(line)
        if f:
            self.result = f.group(1)
            self._mark("result", t)
            self.phase = "done"
            ev.append(("result", self.result))
            return ev
        e = ERROR_RE.search(line)
        if e or "rc=" in line and "fail" in line.lower():
            self.errors.append(line.strip())
            return ev
        if line.strip():
            self.other.append(line.strip())
        return ev

    def _mark(self, key, t):
        self.markers.setdefault(key, t)
        self.last_marker_t = t

    def _close_round(self, t, ev):
        if self.rounds and self.rounds[-1].t_end is None:
            self.rounds[-1].t_end = t
            ev.append(("round_end", self.rounds[-1]))

    # -- results
    def live_rounds(self):
        return [r for r in self.rounds if not r.final]

    def final_round(self):
        finals = [r for r in self.rounds if r.final]
        return finals[-1] if finals else None

    def live_throughput(self):
        """Pages per second over the live rounds sent completely so far, or None before the first
        one ends: what the convergence guard divides a round's size by to predict the final copy."""
        done = [r for r in self.live_rounds() if r.t_end is not None and r.done >= r.pages]
        secs = sum(r.t_end - r.t_start for r in done)
        return sum(r.pages for r in done) / secs if secs > 0 else None

    def stats(self, t_end=None, bytes_sent=None, populated_pages=None):
        live = self.live_rounds()
        iterations = []
        for i, r in enumerate(live):
            nxt = live[i + 1] if i + 1 < len(live) else self.final_round()
            secs = ((r.t_end or t_end or r.t_first) - r.t_start)
            rate = None
            if nxt is not None and nxt.t_start > r.t_start:
                rate = round(nxt.pages / (nxt.t_start - r.t_start), 1)
            iterations.append(dict(iteration=r.label, pages=r.pages, mib=round(r.pages * PAGE / MIB, 2),
                                   seconds=round(max(secs, 0.0), 3), dirty_rate_pps=rate,
                                   t_start_s=round(r.t_start - self.t0, 3)))
        final = self.final_round()
        live_secs = sum(it["seconds"] for it in iterations)
        live_pages = sum(r.pages for r in live)
        throughput = (live_pages / live_secs) if live_secs > 0 else None
        final_pages = final.pages if final else (0 if "suspended" in self.markers else None)
        data_pages = final_pages
        if final_pages is not None and populated_pages is not None and live:
            deferred = max(live[0].pages - populated_pages, 0)
            data_pages = max(final_pages - deferred, 0)
        m = self.markers
        suspend_t = m.get("suspended", m.get("guest_suspended", m.get("suspend_request")))
        down_log = None
        if suspend_t is not None and "target_started" in m:
            down_log = round(m["target_started"] - suspend_t, 3)
        down_copy = None
        if data_pages is not None and throughput:
            down_copy = round(data_pages / throughput, 3)
        return dict(
            total_s=round((t_end or time.monotonic()) - self.t0, 3) if t_end else None,
            iterations=iterations,
            live_rounds=len(live),
            final_round_pages=final_pages,
            final_round_label=final.label if final else None,
            final_round_data_pages_est=data_pages,
            converged_early=bool(final and live and final.label == live[-1].label),
            throughput_pps=round(throughput, 1) if throughput else None,
            downtime_estimate_s=down_log if down_log is not None else down_copy,
            downtime_log_s=down_log,
            downtime_copy_est_s=down_copy,
            bytes_sent=bytes_sent,
            mib_sent=round(bytes_sent / MIB, 2) if bytes_sent is not None else None,
            markers_s={k: round(v - self.t0, 3) for k, v in sorted(m.items(), key=lambda kv: kv[1])},
        )


class ConvergenceGuard(object):
    """Decides from the live round sizes whether the precopy converges.

    Non-convergence: from round ``min_rounds`` on, a round of at least ``min_pages`` pages (smaller
    rounds cost well under a second even under TCG: the testbed's idle guest wobbles between 180
    and 300 pages per round) at least ``shrink`` times the size of the one before (the dirty set
    stopped shrinking), or a predicted final copy longer than
    ``max_downtime_s`` at the measured throughput once 4.17's cap (round 4 is the last live round)
    is reached.
    """

    def __init__(self, shrink=0.8, min_rounds=2, max_downtime_s=None, last_live_round=4, min_pages=1024):
        self.shrink, self.min_rounds, self.min_pages = shrink, min_rounds, min_pages
        self.max_downtime_s, self.last_live_round = max_downtime_s, last_live_round

    def verdict(self, rounds, throughput_pps=None):
        """(converging: bool, reason: str) from the live rounds started so far (Round objects or page counts)."""
        pages = [r if isinstance(r, int) else r.pages for r in rounds]
        if len(pages) > self.min_rounds:
            k = len(pages) - 1
            if pages[k] >= self.min_pages and pages[k] >= self.shrink * pages[k - 1]:
                return False, ("round %d has %d pages, not below %.2f x round %d (%d pages): the dirty set does "
                               "not shrink" % (k, pages[k], self.shrink, k - 1, pages[k - 1]))
        if self.max_downtime_s and throughput_pps and len(pages) > 1:
            pred = pages[-1] / throughput_pps
            if len(pages) - 1 >= self.last_live_round and pred > self.max_downtime_s:
                return False, ("predicted stop-and-copy of %d pages takes %.1f s > max_downtime %.1f s"
                               % (pages[-1], pred, self.max_downtime_s))
        return True, "converging"


# --------------------------------------------------------------------------- process helpers


def children(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids.extend(int(x) for x in f.read().split())
    except (OSError, ValueError):
        pass
    return kids


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children(p):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def proc_io(pid, key="rchar"):
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == key:
                    return int(v)
    except (OSError, ValueError):
        pass
    return None


def find_child(pid, name):
    for c in descendants(pid):
        if comm(c) == name:
            return c
    return None


def pid_alive(pid):
    return pid is not None and pid > 0 and os.path.isdir("/proc/%d" % pid)


# --------------------------------------------------------------------------- migration lock
# xen_migrate takes an exclusive flock on LOCK_DIR/GUEST.lock on the source before it starts
# `xl migrate`, and hands the locked descriptor to xl (pass_fds): xl and every child that inherits it
# (the ssh transport, the save helper) hold the lock, and the kernel drops it when the last of them
# exits, even if the module, Ansible or the controller died first. xen_domain_info lists the guests
# whose lock is held (`migrating`), which is how a later run tells "still moving" from "done".
# The lock files are never removed (a removed file would let a second migration lock a new inode);
# /run is a tmpfs, so they go at reboot with the processes that could hold them.

LOCK_DIR = "/run/pft/migrate"
# A lister tests each lock with a momentary shared flock; a migration that finds its lock taken
# tries again for this long before it concludes that another migration holds it.
LOCK_WAIT_S = 1.0


class MigrationRunning(XenError):
    """The guest's migration lock is held: an `xl migrate` of it still runs on this host."""

    def __init__(self, guest, path, holder):
        self.guest, self.path, self.holder = guest, path, holder
        super(MigrationRunning, self).__init__(
            "a migration of %s is still running on this host: its lock %s is held%s" % (
                guest, path, " by pid %d (%s)" % (holder, _cmdline_str(holder)) if holder else ""))


def migration_lock_path(guest, directory=LOCK_DIR):
    return os.path.join(directory, check_name(guest) + ".lock")


def _cmdline(pid, proc_dir="/proc"):
    try:
        with open(os.path.join(proc_dir, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] if raw else None


def _cmdline_str(pid):
    argv = _cmdline(pid)
    return " ".join(argv)[:200] if argv else "gone"


def _write_lock_owner(fd, pid, what):
    """Record who holds the lock in the lock file (the first word is the pid): for the message of a
    refused second migration, once the module that took the lock is gone."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%d %s\n" % (pid, what)).encode(), 0)
    except OSError:
        pass


def _has_open(pid, st):
    """Whether process pid has a descriptor open on the file whose os.stat is st."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            o = os.stat(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if o.st_ino == st.st_ino and o.st_dev == st.st_dev:
            return True
    return False


def lock_holder(path):
    """Pid of a live process that has the (held) lock file open, or None. Tried in order: the pid
    written in the file (the `xl migrate` that holds it), the owner /proc/locks names for the inode
    (the process that took the lock, which may have handed it on and exited), then every process."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    candidates = []
    try:
        with open(path, "rb") as f:
            candidates.append(int(f.read(64).split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    try:
        ident = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        with open("/proc/locks") as f:
            for line in f:
                words = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF"; waiters have "->" after the number
                if len(words) >= 6 and words[1] == "FLOCK" and words[5] == ident:
                    candidates.append(int(words[4]))
    except (OSError, ValueError):
        pass
    for pid in candidates:
        if pid_alive(pid) and _has_open(pid, st):
            return pid
    try:
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return None
    me = os.getpid()
    for pid in pids:
        if pid != me and pid not in candidates and _has_open(pid, st):
            return pid
    return None


def acquire_migration_lock(guest, directory=LOCK_DIR, wait=LOCK_WAIT_S, clock=time.monotonic, sleep=time.sleep):
    """Take the guest's migration lock (its directory made 0700 if missing). Returns the locked
    descriptor (close-on-exec: hand it to `xl migrate` with pass_fds, then close it here). Raises
    MigrationRunning when another process holds it, XenError when it cannot be opened."""
    path = migration_lock_path(guest, directory)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise XenError("cannot open the migration lock %s: %s" % (path, exc))
    t0 = clock()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise XenError("cannot lock %s: %s" % (path, exc))
            if clock() - t0 >= wait:
                os.close(fd)
                raise MigrationRunning(guest, path, lock_holder(path))
            sleep(0.05)
    _write_lock_owner(fd, os.getpid(), "xen_migrate %s" % guest)
    return fd


def lock_is_held(path):
    """True when some process holds a flock on path. Opens it read-only and never creates it; the test
    is a shared non-blocking flock, released at once. None when it cannot be tested."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def locked_guests(directory=LOCK_DIR):
    """{guest: holder pid or None} for the migration locks held in directory (missing: {})."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return {}
    out = {}
    for entry in entries:
        guest = entry[:-len(".lock")] if entry.endswith(".lock") else None
        if not guest or not NAME_RE.match(guest) or guest == "Domain-0":
            continue
        path = os.path.join(directory, entry)
        if lock_is_held(path):
            out[guest] = lock_holder(path)
    return out


def xl_migrate_args(argv):
    """(guest, target) when argv is a command line `[sh] .../xl [global options] migrate [options] GUEST
    TARGET` (xl 4.17's getopt "FC:s:epD" plus long options), else None. `migrate-receive` is not."""
    if not argv or "migrate" not in argv:
        return None
    i = argv.index("migrate")
    head = [os.path.basename(a) for a in argv[:i]]
    if not (head[0] == "xl" or (len(head) > 1 and head[0] in ("sh", "bash", "dash") and head[1] == "xl")):
        return None
    rest, pos, j = argv[i + 1:], [], 0
    while j < len(rest):
        a = rest[j]
        j += 1
        if a.startswith("--") or a == "-":
            continue
        if a.startswith("-") and not pos:
            flags = a[1:]
            for k, c in enumerate(flags):
                if c in "Cs":
                    if k == len(flags) - 1:
                        j += 1          # its argument is the next word
                    break
            continue
        pos.append(a)
    return (pos[0], pos[1]) if len(pos) >= 2 else None


def xl_migrate_processes(proc_dir="/proc"):
    """[(pid, guest, target)] of the `xl migrate` processes running here (from /proc/*/cmdline)."""
    out = []
    try:
        pids = [int(p) for p in os.listdir(proc_dir) if p.isdigit()]
    except OSError:
        return out
    for pid in sorted(pids):
        args = xl_migrate_args(_cmdline(pid, proc_dir) or [])
        if args and NAME_RE.match(args[0]) and args[0] != "Domain-0":
            out.append((pid, args[0], args[1]))
    return out


def migrations_here(lock_dir=LOCK_DIR, proc_dir="/proc"):
    """The migrations still running on this host: [{guest, lock_held, lock_holder_pid, pids, targets}],
    by guest. A guest counts when its migration lock is held, or (fallback, for a migration started
    without the lock) when an `xl migrate GUEST TARGET` process runs. Read-only."""
    locks = locked_guests(lock_dir)
    procs = xl_migrate_processes(proc_dir)
    out = []
    for guest in sorted(set(locks) | {g for _, g, _ in procs}):
        out.append(dict(guest=guest, lock_held=guest in locks, lock_holder_pid=locks.get(guest),
                        pids=[p for p, g, _ in procs if g == guest],
                        targets=sorted({t for _, g, t in procs if g == guest})))
    return out


# --------------------------------------------------------------------------- migrate

POLICIES = ("stop-and-copy", "abort", "continue")
MODES = ("live", "stop-and-copy")


def migrate_argv(guest, target, shim_ok, xl=XL, ssh_command=None):
    argv = [xl, "-v" if shim_ok else "-vvv", "migrate"]
    if ssh_command:
        argv += ["-s", ssh_command]
    return argv + [guest, target]


def guest_rows(runner, guest, xl=XL, timeout=30):
    return find_domain(parse_xl_list(run_ok([xl, "list"], timeout, runner)), guest)


# After the point of no return nothing can be aborted: pft waits for xl, but not for ever. It stops
# waiting (and leaves xl running: killing it then could leave the guest on neither host) at the later
# of (point of no return + handover_timeout) and (start + deadline). A run whose clean abort does not
# end xl gets max(handover_timeout, ABORT_WAIT_MIN_S) after the abort.
HANDOVER_TIMEOUT_S = 120.0
ABORT_WAIT_MIN_S = 60.0


class Migration(object):
    """One ``xl migrate`` run, driven and watched. Use :func:`migrate`."""

    def __init__(self, guest, target, mode="live", on_no_convergence="continue", deadline=900.0,
                 stall_timeout=90.0, shim=SHIM, xl=XL, guard=None, log_path=None, runner=None,
                 clock=time.monotonic, populated_pages=None, handover_timeout=HANDOVER_TIMEOUT_S, lock_fd=None,
                 output_path=None):
        self.guest, self.target, self.mode = guest, target, mode
        self.policy, self.deadline, self.stall_timeout = on_no_convergence, deadline, stall_timeout
        self.handover_timeout = handover_timeout
        self.lock_fd = lock_fd              # the migration lock, handed to xl (see acquire_migration_lock)
        self.output_path = output_path      # where xl's later output goes if pft stops waiting for it
        self.left_running = None            # why pft stopped waiting while xl still ran, or None
        self.output_file = None
        self.shim, self.xl, self.guard = shim, xl, guard or ConvergenceGuard()
        self.log_path, self.runner, self.clock = log_path, runner or run, clock
        self.populated_pages = populated_pages
        self.shim_ok = bool(shim) and os.path.isfile(shim)
        self.events = []
        self.paused_by_us = False
        self.pause_round = None         # index into rounds at pause time
        self.aborted = None
        self.guard_verdict = None
        self.lines = []
        self.bytes_sent = None
        self.ssh_pid = None

    def _xl(self, *args, **kw):
        return self.runner([self.xl] + list(args), kw.get("timeout", 30))

    def _event(self, t, kind, **data):
        rec = dict(t_s=round(t - self.log.t0, 3), event=kind, guest=self.guest, target=self.target, **data)
        self.events.append(rec)

    def pause(self, t):
        rc, _, err = self._xl("pause", self.guest)
        if rc == 0:
            self.paused_by_us = True
            self.pause_round = len(self.log.rounds)
            self._event(t, "paused")
        else:
            self._event(t, "pause_failed", detail=err.strip())

    def unpause(self, t, why):
        if not self.paused_by_us:
            return
        rc, _, err = self._xl("unpause", self.guest)
        self.paused_by_us = False if rc == 0 else self.paused_by_us
        self._event(t, "unpaused" if rc == 0 else "unpause_failed", why=why, detail=err.strip())

    def abort(self, t, why):
        """Clean abort before the point of no return: SIGTERM to libxl-save-helper."""
        if self.aborted or "no_return" in self.log.markers:
            return False
        helper = find_child(self.proc.pid, "libxl-save-help")
        self.aborted = why
        if helper:
            try:
                os.kill(helper, signal.SIGTERM)
            except OSError:
                helper = None
        self._event(t, "abort", why=why, helper_pid=helper)
        self.abort_t = t
        return True

    def run(self):
        env = dict(os.environ)
        if self.shim_ok:
            env["LD_PRELOAD"] = self.shim
        argv = migrate_argv(self.guest, self.target, self.shim_ok, self.xl)
        t0 = self.clock()
        self.wall_t0 = time.time()
        self.log = MigrationLog(t0)
        self.abort_t = None
        # The migration lock goes to xl (pass_fds): held while xl or a child of it runs. Its own
        # session: a hang-up or ^C of the module's terminal must not reach a migration under way.
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, close_fds=True, start_new_session=True,
                                         pass_fds=(self.lock_fd,) if self.lock_fd is not None else ())
        except OSError as exc:
            raise XenError("cannot run %s: %s" % (argv[0], exc))
        if self.lock_fd is not None:
            _write_lock_owner(self.lock_fd, self.proc.pid, "xl migrate %s %s" % (self.guest, self.target))
        fd = self.proc.stdout.fileno()
        buf = b""
        last_activity = t0
        last_bytes = None
        killed_ssh = False
        xl_exit_t = None
        eof = False
        while True:
            # after EOF, keep looping (without the pipe) until xl exits or a bound is reached
            r, _, _ = select.select([] if eof else [fd], [], [], 0.5)
            now = self.clock()
            if eof and self.proc.poll() is not None:
                break
            # xl gone but the pipe still open: an orphaned transport (seen on the testbed when the
            # target died mid-migration: xl exited, its `ssh target` lived on, reparented to init,
            # holding the pipe). xl is done, so ending that ssh is safe.
            if not r and self.proc.poll() is not None:
                xl_exit_t = xl_exit_t or now
                if now - xl_exit_t > 5:
                    if self.ssh_pid and comm(self.ssh_pid) == "ssh":
                        try:
                            os.kill(self.ssh_pid, signal.SIGTERM)
                            self._event(now, "transport_closed", ssh_pid=self.ssh_pid, why="xl exited")
                        except OSError:
                            pass
                    break
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                    continue
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    self.lines.append((round(now - t0, 3), line))
                    last_activity = now
                    for ev in self.log.feed(now, line):
                        self._on_event(now, ev)
            if self.ssh_pid is None:
                self.ssh_pid = find_child(self.proc.pid, "ssh")
            if self.ssh_pid:
                b = proc_io(self.ssh_pid)
                if b is not None:
                    if b != last_bytes:
                        last_activity = now
                    last_bytes = b
                    self.bytes_sent = b
            # deadline / stall: only before the point of no return
            if "no_return" not in self.log.markers and not self.aborted:
                if now - t0 > self.deadline:
                    self.abort(now, "deadline of %.0f s reached before the handover" % self.deadline)
                elif now - last_activity > self.stall_timeout:
                    self.abort(now, "no progress for %.0f s (target unreachable?)" % self.stall_timeout)
            # an abort whose helper is gone but xl still waits on a dead ssh: end the transport
            if self.aborted and not killed_ssh and now - self.abort_t > 20:
                ssh = find_child(self.proc.pid, "ssh") or (
                    self.ssh_pid if self.ssh_pid and comm(self.ssh_pid) == "ssh" else None)
                helper = find_child(self.proc.pid, "libxl-save-help")
                if ssh and not helper:
                    try:
                        os.kill(ssh, signal.SIGTERM)
                        self._event(now, "transport_closed", ssh_pid=ssh)
                    except OSError:
                        pass
                    killed_ssh = True
            # paused too long without the expected round: let the guest answer a suspend request
            # (xl prints a line every 1024 pages while a round runs; silence means libxl waits for the
            # guest to answer its suspend request, which a paused PV guest cannot do)
            if self.paused_by_us and self.pause_t is not None and now - last_activity > self.max_pause_s:
                self.unpause(now, "paused, and no output for %.0f s" % self.max_pause_s)
            # past the point of no return (or after an abort that did not end xl): a bound, but xl is
            # left running, never killed (see HANDOVER_TIMEOUT_S)
            why = self._give_up(now, t0)
            if why and self.proc.poll() is None:
                self.left_running = why
                self._event(now, "stopped_waiting", why=why, xl_pid=self.proc.pid)
                break
        if buf:
            line = buf.decode("utf-8", "replace")
            self.lines.append((round(self.clock() - t0, 3), line))
            for ev in self.log.feed(self.clock(), line):
                self._on_event(self.clock(), ev)
        if self.left_running:
            rc = None
            self._drain()
        else:
            try:
                # the loop ends only once xl has exited: this reaps it, it does not wait for it
                rc = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rc = None
                self.left_running = "xl migrate did not exit"
                self._drain()
        t_end = self.clock()
        if self.paused_by_us:
            self.unpause(t_end, "migration ended")
        self.rc = rc
        self.t_end = t_end
        return rc

    pause_t = None
    max_pause_s = 20.0

    def handover_limit(self, t0):
        """Monotonic time at which pft stops waiting for a hand-over (None before the point of no
        return): the later of no_return + handover_timeout and t0 + deadline. The deadline is the
        budget the caller planned for, so stopping before it only trades a confirmed outcome for an
        unconfirmed one; and a point of no return reached near the deadline still gets the whole
        handover_timeout, because nothing can be aborted past it."""
        t_nr = self.log.markers.get("no_return")
        if t_nr is None:
            return None
        return max(t_nr + self.handover_timeout, t0 + self.deadline)

    def _give_up(self, now, t0):
        limit = self.handover_limit(t0)
        if limit is not None and now >= limit:
            return ("the hand-over did not end within %.0f s of the point of no return (handover_timeout %.0f s, "
                    "deadline %.0f s)" % (now - self.log.markers["no_return"], self.handover_timeout, self.deadline))
        if limit is None and self.aborted and self.abort_t is not None:
            wait = max(self.handover_timeout, ABORT_WAIT_MIN_S)
            if now - self.abort_t >= wait:
                return "xl migrate did not end within %.0f s of the abort (%s)" % (wait, self.aborted)
        return None

    def _drain(self):
        """pft stops reading while xl still runs: a detached `cat` keeps reading xl's output (source
        and target lines) into output_path, so that xl and its ssh transport never write into a pipe
        nobody reads once this module has exited. Best effort."""
        out = subprocess.DEVNULL
        try:
            if self.output_path:
                out = os.open(self.output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600)
                self.output_file = self.output_path
            subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=out, stderr=subprocess.DEVNULL,
                             close_fds=True, start_new_session=True)
        except OSError as exc:
            self.output_file = None
            self._event(self.clock(), "drain_failed", detail=str(exc))
        finally:
            if isinstance(out, int) and out >= 0:
                os.close(out)
            self.proc.stdout.close()

    def _on_event(self, t, ev):
        kind = ev[0]
        if kind == "saving" and self.mode == "stop-and-copy" and not self.paused_by_us:
            # Pause only once libxc has read the domain's info (it logs "Saving domain" after that):
            # a guest already paused when the save starts makes libxc treat every transient bad
            # page-table entry as fatal ("Bad mfn for L1", recorded on the testbed).
            self.pause(t)
            self.pause_t = t
        elif kind == "round_start":
            r = ev[1]
            self._event(t, "round_start", iteration=r.label, final=r.final, pages=r.pages)
            if not r.final and self.guard_verdict is None:
                ok, why = self.guard.verdict(self.log.live_rounds(), self.log.live_throughput())
                if not ok:
                    self.guard_verdict = why
                    self._event(t, "no_convergence", why=why, policy=self.policy)
                    if self.policy == "abort":
                        self.abort(t, "no convergence: " + why)
                    elif self.policy == "stop-and-copy" and not self.paused_by_us:
                        self.pause(t)
                        self.pause_t = t
        elif kind == "round_end":
            r = ev[1]
            self._event(t, "round_end", iteration=r.label, final=r.final, pages=r.pages)
            # Unpause at the end of the first round that started after our pause: the next dirty
            # set is then ~empty, libxc asks for stop-and-copy and the PV guest must answer it.
            if (self.paused_by_us and not r.final and self.pause_round is not None
                    and self.log.rounds.index(r) >= self.pause_round):
                self.unpause(t, "end of round %d sent while paused" % r.label)
        elif kind == "suspend_request":
            self.unpause(t, "suspend request")
        elif kind == "suspended":
            self._event(t, "suspended")
            if self.paused_by_us:
                self.unpause(t, "suspended")
        elif kind == "no_return":
            self._event(t, "point_of_no_return")
        elif kind == "result":
            self._event(t, "result", text=ev[1])


def write_log(path, records):
    """Append records as JSON lines to path (its directory made 0750 if missing). Returns None, or
    the reason it could not: the log is a record of the migration, never a cause to fail it."""
    try:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o750, exist_ok=True)
        with open(path, "a") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
    except (OSError, TypeError, ValueError) as exc:
        return "could not append the migration record to %s: %s" % (path, exc)
    return None


def where_is(guest, target, runner=None, xl=XL, probe=None):
    """(source rows, target rows) for the guest, each [{name, domid, state, role}]."""
    src = guest_rows(runner, guest, xl)
    if probe is None:
        probe = probe_target(target, runner=runner)
    tgt = find_domain(probe["domains"], guest)
    return src, tgt


def running_once(rows):
    """True when exactly one row is the guest under its own name and alive (not shutdown/crashed/dying)."""
    own = [r for r in rows if r["role"] == "self"]
    return len(rows) == 1 and len(own) == 1 and own[0]["state"] in ("running", "blocked", "idle", "paused")


def in_handover(rows):
    """True while a side still shows the hand-over: a --incoming or --migratedaway name, or a dying domain."""
    return any(r["role"] != "self" or r["state"] == "dying" for r in rows)


# How long the verification after `xl migrate` waits for the hand-over to end. xl returns once the
# receiver said it has the guest; the source domain may still be dying for a moment (Xen frees its
# pages first: seconds for 128 MiB on a TCG dom0), and a failed run may leave an --incoming name
# that the receiver is still destroying.
SETTLE_S = 30.0


def locate(guest, target, runner=None, xl=XL, wait=SETTLE_S, clock=time.monotonic, sleep=time.sleep):
    """Where the guest is after a migration: (source rows, target rows, target known, probe error,
    seconds waited). Looks again, for up to `wait` seconds, while either side is in the hand-over."""
    runner = runner or run
    t0 = clock()
    while True:
        src = guest_rows(runner, guest, xl)
        try:
            tgt, known, error = find_domain(probe_target(target, runner=runner)["domains"], guest), True, None
        except XenError as exc:
            tgt, known, error = [], False, str(exc)
        waited = clock() - t0
        if not (in_handover(src) or in_handover(tgt)) or waited >= wait:
            return src, tgt, known, error, round(waited, 3)
        sleep(1.0)


# --------------------------------------------------------------------------- the whole act


def _rows_str(rows):
    return ", ".join("%s (id %s, %s)" % (r["name"], r["domid"], r["state"]) for r in rows) or "nothing"


def check_target(probe, guest_mb, margin_mb=16, source_toolstack=None, require_shadow=True):
    """Checks of the target from its probe: [{name, ok, detail}]."""
    host = probe["host"]
    checks = []
    checks.append(dict(name="xen", ok=bool(host.get("xen_version")),
                       detail="Xen %s, toolstack %s" % (host.get("xen_version"), host.get("toolstack_version"))))
    if source_toolstack is not None:
        ok = host.get("toolstack_version") == source_toolstack
        checks.append(dict(name="toolstack", ok=ok, detail="target %s, source %s" % (
            host.get("toolstack_version"), source_toolstack)))
    if require_shadow:
        checks.append(dict(name="shadow_paging", ok=bool(host.get("shadow_paging")),
                           detail="virt_caps: %s" % " ".join(host.get("virt_caps") or [])))
    free = host.get("free_memory_mb")
    ok = free is not None and free >= guest_mb + margin_mb
    checks.append(dict(name="memory", ok=ok, detail="target has %s MiB free, guest needs %d MiB + %d MiB margin"
                       % (free, guest_mb, margin_mb)))
    return checks


def process_start_wall(pid="self"):
    """Wall-clock time at which this process started (Linux /proc), or None."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted after "(comm)"
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return round(btime + start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def migrate(guest, target, mode="live", on_no_convergence="continue", deadline=900.0, stall_timeout=90.0,
            shim=SHIM, log_path=None, check_mode=False, margin_mb=16, guard=None, runner=None, xl=XL,
            source_host=None, settle=SETTLE_S, handover_timeout=HANDOVER_TIMEOUT_S, lock_dir=None):
    """Migrate and verify, holding the guest's migration lock (:func:`acquire_migration_lock`; check
    mode only tests it). Returns (failed: bool, msg: str, result: dict)."""
    wall_called = time.time()
    check_name(guest)
    check_host(target)
    if mode not in MODES:
        raise XenError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    if on_no_convergence not in POLICIES:
        raise XenError("on_no_convergence must be one of %s, got %r" % (", ".join(POLICIES), on_no_convergence))
    if not handover_timeout or handover_timeout <= 0:
        raise XenError("handover_timeout must be > 0, got %r" % (handover_timeout,))
    source_host = source_host or os.uname()[1]
    lock_dir = LOCK_DIR if lock_dir is None else lock_dir
    lock_path = migration_lock_path(guest, lock_dir)
    lock_fd = None
    try:
        if check_mode:
            if lock_is_held(lock_path):
                raise MigrationRunning(guest, lock_path, lock_holder(lock_path))
        else:
            lock_fd = acquire_migration_lock(guest, lock_dir)
    except MigrationRunning as exc:
        return True, ("%s; refusing to start a second migration of %s (to %s). xen_domain_info lists %s under "
                      "migrating until that one ends" % (exc, guest, target, guest)), dict(
            changed=False, migrated=False, source_running=None, target_running=None, stats=None,
            failure="migration-running", checks=[], instrumentation=None, in_flight=False, lock=lock_path,
            lock_holder_pid=exc.holder)
    try:
        failed, msg, result = _migrate(guest, target, mode, on_no_convergence, deadline, stall_timeout, shim,
                                       log_path, check_mode, margin_mb, guard, runner, xl, source_host, settle,
                                       handover_timeout, lock_fd, lock_path, wall_called)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)       # xl, if it was started, holds its own copy of the lock
    result["lock"] = lock_path
    return failed, msg, result


def _migrate(guest, target, mode, on_no_convergence, deadline, stall_timeout, shim, log_path, check_mode,
             margin_mb, guard, runner, xl, source_host, settle, handover_timeout, lock_fd, lock_path, wall_called):
    runner = runner or run
    result = dict(changed=False, migrated=False, source_running=None, target_running=None, stats=None,
                  failure=None, checks=[], instrumentation=None, in_flight=False,
                  diff=dict(before=dict(host=source_host, guest=guest), after=dict(host=source_host, guest=guest)))
    # The three looks before the move are independent: run them at once (on a slow dom0 the target's
    # probe over ssh and the local `xl list` each take seconds; detection latency, docs/performance.md P2)
    with ThreadPoolExecutor(max_workers=3) as pool:
        src_f = pool.submit(guest_rows, runner, guest, xl)
        probe_f = pool.submit(probe_target, target, runner=runner)
        version_f = pool.submit(toolstack_version, runner)
    src = src_f.result()
    probe = probe_f.result()
    source_toolstack = version_f.result()
    tgt = find_domain(probe["domains"], guest)
    result["target_host"] = probe["host"]
    if not src and running_once(tgt):
        result.update(source_running=False, target_running=True)
        result["diff"] = dict(before=dict(host=target, guest=guest), after=dict(host=target, guest=guest))
        return False, "%s already runs on %s and not here: nothing to do" % (guest, target), result
    if not running_once(src):
        result["failure"] = "guest-not-here"
        return True, ("%s does not run exactly once on this host (%s): found %s; target %s has %s"
                      % (guest, source_host, _rows_str(src), target, _rows_str(tgt))), result
    if tgt:
        result.update(source_running=True, target_running=False, failure="guest-on-target")
        return True, ("%s runs here and the target %s already has %s: refusing to migrate (it would run twice)"
                      % (guest, target, _rows_str(tgt))), result
    guest_mb = src[0]["memory_mb"]
    checks = check_target(probe, guest_mb, margin_mb, source_toolstack=source_toolstack)
    result["checks"] = checks
    bad = [c for c in checks if not c["ok"] and c["name"] in ("xen", "memory", "shadow_paging")]
    shim_ok = bool(shim) and os.path.isfile(shim)
    result["instrumentation"] = "progress" if shim_ok else "no-progress"
    if bad:
        result.update(source_running=True, target_running=False,
                      failure="target-check: " + "; ".join("%s: %s" % (c["name"], c["detail"]) for c in bad))
        return True, ("cannot migrate %s to %s: %s; %s still runs here (%s), untouched"
                      % (guest, target, result["failure"][len("target-check: "):], guest, source_host)), result
    result["diff"]["after"]["host"] = target
    if check_mode:
        result.update(changed=True, source_running=True, target_running=False)
        return False, "would migrate %s (%d MiB) from %s to %s (%s)" % (guest, guest_mb, source_host, target,
                                                                         mode), result
    mig = Migration(guest, target, mode=mode, on_no_convergence=on_no_convergence, deadline=deadline,
                    stall_timeout=stall_timeout, shim=shim, xl=xl, guard=guard, runner=runner,
                    populated_pages=guest_mb * 256, handover_timeout=handover_timeout, lock_fd=lock_fd,
                    output_path=lock_path[:-len(".lock")] + ".out")
    rc = mig.run()
    in_flight = bool(mig.left_running)
    stats = mig.log.stats(t_end=mig.t_end, bytes_sent=mig.bytes_sent, populated_pages=guest_mb * 256)
    stats["instrumentation"] = "progress" if (mig.shim_ok and mig.log.progress_seen) else "no-progress"
    if not mig.log.progress_seen:
        for it in stats["iterations"]:
            it["pages"] = None
    stats["mode"] = mode
    stats["wall_t0"] = round(mig.wall_t0, 3)
    # where the time before `xl migrate` went (detection latency, docs/performance.md P2): the module's
    # process start (Ansible's dispatch ends), its code start (interpreter and imports), the checks
    stats["wall_process_start"] = process_start_wall()
    stats["wall_called"] = round(wall_called, 3)
    stats["xl_rc"] = rc
    stats["xl_result"] = mig.log.result
    stats["convergence"] = mig.guard_verdict or "converged"
    stats["events"] = mig.events
    result["stats"] = stats
    result["instrumentation"] = stats["instrumentation"]
    result["xl_output"] = ["%7.3f %s" % (t, line) for t, line in mig.lines[-400:]]
    # where is it now? (after a settle: the two sides may still be handing over; with xl left running,
    # one look without a settle: the hand-over is not over)
    src_error = None
    try:
        src, tgt, tgt_known, probe_error, settle_s = locate(guest, target, runner=runner, xl=xl,
                                                            wait=0 if in_flight else settle)
    except XenError as exc:
        if not in_flight:
            raise
        # xl was left running: that must be reported (in_flight) even if this look fails
        src, tgt, tgt_known, probe_error, settle_s, src_error = [], [], False, None, 0.0, str(exc)
    if probe_error:
        result["target_probe_error"] = probe_error
    stats["settle_s"] = settle_s
    src_ok, tgt_ok = running_once(src), running_once(tgt)
    result.update(source_running=None if src_error else src_ok, target_running=tgt_ok if tgt_known else None)
    if log_path:
        result["log_error"] = write_log(log_path, [dict(e, kind="event") for e in mig.events] + [dict(
            kind="summary", guest=guest, source=source_host, target=target, mode=mode, rc=rc,
            result=mig.log.result, aborted=mig.aborted, source_running=result["source_running"],
            target_running=result["target_running"], in_flight=in_flight,
            xl_pid=mig.proc.pid if in_flight else None,
            stats={k: v for k, v in stats.items() if k != "events"})])
    if in_flight:
        # pft stopped waiting; xl goes on (never killed past the point of no return). Not a verdict:
        # the caller keeps the journal entry pending and a later run reconciles it.
        past = "no_return" in mig.log.markers
        result.update(changed=True, migrated=False, in_flight=True, xl_pid=mig.proc.pid,
                      xl_output_file=mig.output_file, failure="handover-timeout" if past else "abort-timeout")
        where = "seen now: here (%s) %s; %s: %s" % (
            source_host, "unknown (%s)" % src_error if src_error else _rows_str(src), target,
            _rows_str(tgt) if tgt_known else "unknown (%s)" % (probe_error or "not asked"))
        return True, ("%s: migration of %s from %s to %s: %s. pft stopped waiting and left xl migrate (pid %d) "
                      "running, without killing it (%s), so %s may still be moving; %s. Its migration lock %s "
                      "stays held until xl ends; pft's next run reconciles this migration (its journal entry "
                      "stays pending)%s." % (
                          result["failure"], guest, source_host, target, mig.left_running, mig.proc.pid,
                          "after the point of no return killing xl could leave the guest on neither host" if past
                          else "killing xl could leave the guest suspended", guest, where, lock_path,
                          "; xl's further output goes to %s" % mig.output_file if mig.output_file else "")), result
    if rc == 0 and tgt_ok and not src:
        result.update(changed=True, migrated=True)
        return False, "%s migrated from %s to %s in %.1f s (%d live rounds, final round %s pages)" % (
            guest, source_host, target, stats["total_s"], stats["live_rounds"], stats["final_round_pages"]), result
    # failure: say why and where the guest is
    cause = mig.aborted or mig.log.result or "xl migrate exited with rc=%s" % rc
    if mig.log.errors:
        cause += " (" + "; ".join(mig.log.errors[-3:]) + ")"
    result["failure"] = cause
    result["changed"] = bool(tgt_ok and not src)
    if src_ok and not tgt:
        return True, ("migration of %s to %s failed: %s. Verified: %s still runs on %s, exactly once, and not on %s"
                      % (guest, target, cause, guest, source_host, target)), result
    if tgt_ok and not src:
        result["migrated"] = True
        return True, ("migration of %s to %s reported a failure (%s) but %s runs on %s exactly once and is gone "
                      "from %s" % (guest, target, cause, guest, target, source_host)), result
    return True, ("migration of %s to %s failed (%s) and the guest is NOT running exactly once: here %s: %s; "
                  "%s: %s. Operator action needed." % (guest, target, cause, source_host, _rows_str(src), target,
                                                        _rows_str(tgt) if tgt_known else "unknown")), result


# --------------------------------------------------------------------------- pre-staging

NFSROOT_RE = re.compile(r"(?:^|\s)nfsroot=(?:(?P<host>[A-Za-z0-9.-]+):)?(?P<path>/\S*?)(?:,\S*)?(?:\s|$)")
IPARG_RE = re.compile(r"(?:^|\s)ip=(?P<client>[^:\s]*):(?P<server>[^:\s]*):")


def nfs_server(cmdline):
    """The NFS root server of a guest kernel command line (nfsroot=HOST:/path or ip=...:SERVER:...), or None."""
    if not cmdline:
        return None
    m = NFSROOT_RE.search(cmdline)
    if not m:
        return None
    if m.group("host"):
        return m.group("host")
    ip = IPARG_RE.search(cmdline)
    return ip.group("server") if ip and ip.group("server") else None


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def balloon(guest, target_mb, timeout=60.0, tolerance_mb=4, runner=None, xl=XL, clock=time.monotonic,
            sleep=time.sleep):
    """xl mem-set and wait until `xl list` shows the guest within tolerance; on timeout set the old
    target back (the cancel rule of xenopsd PR#359). Returns a dict (ok, from_mb, to_mb, reached_mb, seconds)."""
    runner = runner or run
    rows = [r for r in guest_rows(runner, guest, xl) if r["role"] == "self"]
    if not rows:
        raise XenError("%s does not run on this host: cannot balloon it" % guest)
    start_mb = rows[0]["memory_mb"]
    t0 = clock()
    run_ok([xl, "mem-set", guest, "%dm" % target_mb], 30, runner)
    reached = start_mb
    while clock() - t0 < timeout:
        rows = [r for r in guest_rows(runner, guest, xl) if r["role"] == "self"]
        reached = rows[0]["memory_mb"] if rows else None
        if reached is not None and abs(reached - target_mb) <= tolerance_mb:
            return dict(ok=True, from_mb=start_mb, to_mb=target_mb, reached_mb=reached,
                        seconds=round(clock() - t0, 3), cancelled=False)
        sleep(0.5)
    runner([xl, "mem-set", guest, "%dm" % start_mb], 30)
    return dict(ok=False, from_mb=start_mb, to_mb=target_mb, reached_mb=reached, seconds=round(clock() - t0, 3),
                cancelled=True)


def prestage(guest, target, config=None, nfs=None, balloon_to_mb=None, balloon_floor_mb=64, balloon_timeout=60.0,
             margin_mb=16, check_mode=False, timeout=120.0, runner=None, xl=XL, clock=time.monotonic,
             checkpoint_image=False, checkpoint_block=CKPT_BLOCK, checkpoint_timeout=600.0, checkpoint_dir=CKPT_DIR):
    """Checks (and optional balloon, and checkpoint image on the target) before a migration of guest to target.
    Returns a result dict."""
    check_name(guest)
    check_host(target)
    if checkpoint_image:
        check_blocksize(checkpoint_block)
    runner = runner or run
    steps, checks = [], []

    def step(name, t0, **data):   # data may carry its own "seconds" (the balloon's), which wins
        entry = dict(name=name, seconds=round(clock() - t0, 3))
        entry.update(data)
        steps.append(entry)

    t = clock()
    info = domain_info([guest], runner=runner, timeout=min(timeout, 60), xl=xl)
    step("source_facts", t)
    dom = [d for d in info["domains"] if d["name"] == guest]
    if not dom:
        raise XenError("%s does not run on this host: nothing to pre-stage" % guest)
    dom = dom[0]
    files = [p for p in (dom.get("kernel"), dom.get("ramdisk"), config) if p]
    server = nfs or nfs_server(dom.get("cmdline"))
    t = clock()
    try:
        probe = probe_target(target, files=files, tcp=[(server, 2049)] if server else [],
                             timeout=min(timeout, 120), runner=runner)
        checks.append(dict(name="receive_path", ok=True, detail="migration key and pft-probe answer on %s" % target))
    except XenError as exc:
        step("probe_target", t, ok=False)
        checks.append(dict(name="receive_path", ok=False, detail=str(exc)))
        if checkpoint_image:
            checks.append(dict(name="checkpoint", ok=False, detail="not taken: the target does not answer"))
        return dict(ready=False, checks=checks, steps=steps, changed=False, guest=dom, target_host=None,
                    balloon=None, checkpoint=None)
    step("probe_target", t, ok=True)
    tgt_rows = find_domain(probe["domains"], guest)
    checks.append(dict(name="not_on_target", ok=not tgt_rows,
                       detail="target runs %s" % _rows_str(tgt_rows) if tgt_rows else "guest not on target"))
    checks += check_target(probe, 0, 0, source_toolstack=info["host"]["toolstack_version"])
    # memory: now, or after ballooning within limits
    free = probe["host"]["free_memory_mb"] or 0
    need = dom["memory_mb"] + margin_mb
    mem = [c for c in checks if c["name"] == "memory"][0]
    mem["ok"] = free >= need
    mem["detail"] = "target has %d MiB free, guest has %d MiB + %d MiB margin" % (free, dom["memory_mb"], margin_mb)
    if not mem["ok"] and balloon_to_mb:
        floor_ok = max(balloon_to_mb, balloon_floor_mb) + margin_mb <= free
        mem["ok"] = floor_ok
        mem["detail"] += "; after ballooning to %d MiB: %s" % (max(balloon_to_mb, balloon_floor_mb),
                                                                "fits" if floor_ok else "still does not fit")
    for path in files:
        try:
            mine = sha256_file(path)
        except OSError as exc:
            checks.append(dict(name="file", path=path, ok=False, detail="cannot read here: %s" % exc))
            continue
        theirs = probe["files"].get(path)
        checks.append(dict(name="file", path=path, ok=theirs == mine,
                           detail="identical (sha256 %s)" % mine[:16] if theirs == mine else
                           ("missing on target" if theirs is None else "differs: here %s, target %s"
                            % (mine[:16], theirs[:16]))))
    if server:
        ok = probe["tcp"].get("%s:2049" % server, False)
        checks.append(dict(name="nfs_root", ok=ok, detail="NFS server %s:2049 %s from %s"
                           % (server, "reachable" if ok else "NOT reachable", target)))
    result = dict(ready=all(c["ok"] for c in checks), checks=checks, steps=steps, changed=False, guest=dom,
                  target_host=probe["host"], balloon=None, checkpoint=None)
    if balloon_to_mb:
        to_mb = max(balloon_to_mb, balloon_floor_mb)
        if to_mb >= dom["memory_mb"]:
            result["balloon"] = dict(ok=True, skipped="guest already at %d MiB <= %d MiB" % (dom["memory_mb"], to_mb))
        elif check_mode:
            result["balloon"] = dict(ok=None, would="balloon %s from %d MiB to %d MiB" % (guest, dom["memory_mb"],
                                                                                         to_mb))
            result["changed"] = True
        else:
            t = clock()
            b = balloon(guest, to_mb, timeout=balloon_timeout, runner=runner, xl=xl, clock=clock)
            step("balloon", t, **b)
            result["balloon"] = b
            result["changed"] = True
            checks.append(dict(name="balloon", ok=b["ok"], detail=(
                "ballooned from %d to %d MiB in %.1f s" % (b["from_mb"], b["reached_mb"], b["seconds"]) if b["ok"]
                else "did not reach %d MiB within %.0f s (at %s MiB); target set back to %d MiB"
                % (to_mb, balloon_timeout, b["reached_mb"], b["from_mb"]))))
            result["ready"] = all(c["ok"] for c in checks)
    if checkpoint_image:
        if tgt_rows:
            checks.append(dict(name="checkpoint", ok=False, detail="not taken: %s already has %s"
                               % (target, _rows_str(tgt_rows))))
        else:
            try:
                ck_steps, ck = checkpoint(guest, target, blocksize=checkpoint_block, timeout=checkpoint_timeout,
                                          check_mode=check_mode, runner=runner, xl=xl, local_dir=checkpoint_dir,
                                          clock=clock)
            except XenError as exc:
                checks.append(dict(name="checkpoint", ok=False, detail=str(exc)))
            else:
                steps.extend(ck_steps)
                result["checkpoint"] = ck
                result["changed"] = True
                if check_mode:
                    checks.append(dict(name="checkpoint", ok=True, detail=ck["would"]))
                else:
                    alive = ck["guest_state"] in ("running", "blocked", "idle")
                    checks.append(dict(name="checkpoint", ok=alive, detail=(
                        "%s:%s, %.1f MiB image, %d of %d blocks sent (%.1f MiB); guest paused %.1f s for the save; "
                        "guest is %s" % (target, ck["path"], ck["image_mib"], ck["blocks_sent"], ck["blocks_total"],
                                         ck["mib_sent"], ck["pause_s"], ck["guest_state"]))))
        result["ready"] = all(c["ok"] for c in checks)
    return result


# --------------------------------------------------------------------------- checkpoint on the target
#
# xl save -c (the guest is stopped for the whole save, then resumed) into a local image, then the
# blocks that differ from the target's image, through the migration key's forced command:
#   pft-ckpt-sums GUEST BLOCKSIZE   the target prints ckpt_sums() of its image (format_sums), or "none"
#   pft-ckpt-put GUEST              the target applies a delta stream (ckpt_delta) to a copy of its
#                                   image, checks the whole-file sha256, fsyncs and renames it
# Both verbs run ckpt_receiver_main() (the xen_host role installs this file and a small helper).
#
# Delta stream (binary, on the put's stdin):
#   PFTCKPT 1\n
#   blocksize N\n
#   base none\n | base SIZE SHA256\n       (the target's image the sums came from; checked while copying)
#   created EPOCH\n                        (when xl save ran: the image's mtime on the target)
#   D OFFSET LENGTH\n + LENGTH bytes        (zero or more; 0 < LENGTH <= N)
#   E SIZE SHA256\n                         (the new image's size and whole-file sha256; nothing after it)



def check_blocksize(blocksize):
    if not isinstance(blocksize, int) or isinstance(blocksize, bool) or blocksize < 4096 or \
            blocksize > 64 * MIB or blocksize % 4096:
        raise XenError("checkpoint block size must be a multiple of 4096 bytes between 4 KiB and 64 MiB, got %r"
                       % (blocksize,))
    return blocksize


def ckpt_path(guest, directory=CKPT_DIR):
    return os.path.join(directory, check_name(guest) + ".save")


def ckpt_sums(path, blocksize):
    """The image's size, whole-file sha256 and per-block sha256s, or None when there is no image."""
    import hashlib
    check_blocksize(blocksize)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    whole, blocks, size = hashlib.sha256(), [], 0
    with f:
        for block in iter(lambda: f.read(blocksize), b""):
            whole.update(block)
            blocks.append(hashlib.sha256(block).hexdigest())
            size += len(block)
    return dict(size=size, sha256=whole.hexdigest(), blocksize=blocksize, blocks=blocks)


def format_sums(sums):
    if sums is None:
        return "none\n"
    return "size %d\nsha256 %s\nblocksize %d\n%s\nend\n" % (sums["size"], sums["sha256"], sums["blocksize"],
                                                        "\n".join(sums["blocks"]))


def parse_sums(text, blocksize):
    """format_sums() back; None for "none". Raises XenError on anything else (a truncated answer)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if lines == ["none"]:
        return None
    try:
        if len(lines) < 4 or lines[-1] != "end":
            raise ValueError("no end line")
        size = int(lines[0].split()[1]) if lines[0].startswith("size ") else None
        sha = lines[1].split()[1] if lines[1].startswith("sha256 ") else ""
        bs = int(lines[2].split()[1]) if lines[2].startswith("blocksize ") else None
        blocks = [b for b in lines[3:-1] if b]
        if size is None or size < 0 or not _HEX64.match(sha) or bs != blocksize:
            raise ValueError("bad header")
        if len(blocks) != (size + blocksize - 1) // blocksize or not all(_HEX64.match(b) for b in blocks):
            raise ValueError("%d block sums for %d bytes" % (len(blocks), size))
    except (ValueError, IndexError) as exc:
        raise XenError("unexpected checkpoint sums from the target (%s): %r" % (exc, text[:200]))
    return dict(size=size, sha256=sha, blocksize=bs, blocks=blocks)


def ckpt_delta(path, blocksize, remote, out, created=None):
    """Write to out (binary file) the delta stream that turns the remote image (its parsed sums, or None)
    into the local image at path. Returns dict(size, sha256, blocks_total, blocks_sent, bytes_sent)."""
    import hashlib
    check_blocksize(blocksize)
    if remote is not None and remote["blocksize"] != blocksize:
        raise XenError("the target's sums use block size %d, not %d" % (remote["blocksize"], blocksize))
    theirs = remote["blocks"] if remote else []
    n_written = 0

    def put(data):
        nonlocal n_written
        out.write(data)
        n_written += len(data)

    put(CKPT_MAGIC)
    put(b"blocksize %d\n" % blocksize)
    put(b"base none\n" if remote is None else ("base %d %s\n" % (remote["size"], remote["sha256"])).encode())
    put(("created %.3f\n" % (created if created is not None else os.stat(path).st_mtime)).encode())
    whole, size, index, sent = hashlib.sha256(), 0, 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(blocksize), b""):
            whole.update(block)
            if index >= len(theirs) or hashlib.sha256(block).hexdigest() != theirs[index]:
                put(b"D %d %d\n" % (size, len(block)))
                put(block)
                sent += 1
            size += len(block)
            index += 1
    put(("E %d %s\n" % (size, whole.hexdigest())).encode())
    return dict(size=size, sha256=whole.hexdigest(), blocks_total=index, blocks_sent=sent, bytes_sent=n_written)


def _read_line(stream, limit=200):
    line = stream.readline(limit)
    if not line.endswith(b"\n"):
        raise XenError("checkpoint stream truncated or malformed (line %r)" % line[:60])
    return line[:-1].decode("ascii", "replace")


def _copy_hashing(src, dst):
    import hashlib
    h, n = hashlib.sha256(), 0
    for block in iter(lambda: src.read(MIB), b""):
        h.update(block)
        dst.write(block)
        n += len(block)
    return n, h.hexdigest()


def ckpt_apply(stream, guest, directory=CKPT_DIR):
    """Apply a delta stream (binary file) to a copy of guest's image in directory; verify, fsync, rename.
    On any error the old image is left as it was and XenError says why. Returns dict(path, size, sha256,
    created, blocks_received, bytes_received)."""
    import fcntl
    import hashlib
    final = ckpt_path(guest, directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, ".%s.lock" % guest), os.O_RDWR | os.O_CREAT, 0o600)
    tmp = os.path.join(directory, ".%s.save.%d.tmp" % (guest, os.getpid()))
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise XenError("another checkpoint of %s is being written on this host" % guest)
        if stream.read(len(CKPT_MAGIC)) != CKPT_MAGIC:
            raise XenError("not a pft checkpoint stream (bad magic)")
        words = _read_line(stream).split()
        if len(words) != 2 or words[0] != "blocksize" or not words[1].isdigit():
            raise XenError("bad blocksize line %r" % " ".join(words))
        blocksize = check_blocksize(int(words[1]))
        words = _read_line(stream).split()
        if words == ["base", "none"]:
            base = None
        elif len(words) == 3 and words[0] == "base" and words[1].isdigit() and _HEX64.match(words[2]):
            base = (int(words[1]), words[2])
        else:
            raise XenError("bad base line %r" % " ".join(words))
        words = _read_line(stream).split()
        try:
            if len(words) != 2 or words[0] != "created":
                raise ValueError
            created = float(words[1])
        except ValueError:
            raise XenError("bad created line %r" % " ".join(words))
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "r+b") as out:
            if base is not None:
                try:
                    with open(final, "rb") as old:
                        n, sha = _copy_hashing(old, out)
                except FileNotFoundError:
                    n, sha = None, None
                if (n, sha) != base:
                    raise XenError("the image on this host is not the one the sums were taken from (it is %s, "
                                   "the stream expects %d bytes sha256 %s): run the checkpoint again"
                                   % ("missing" if n is None else "%d bytes sha256 %s" % (n, sha), base[0], base[1]))
            received = nbytes = 0
            while True:
                words = _read_line(stream).split()
                if len(words) == 3 and words[0] == "D" and words[1].isdigit() and words[2].isdigit():
                    offset, length = int(words[1]), int(words[2])
                    if not 0 < length <= blocksize or offset + length > CKPT_MAX_SIZE:
                        raise XenError("bad record D %d %d (block size %d)" % (offset, length, blocksize))
                    data = stream.read(length)
                    if len(data) != length:
                        raise XenError("checkpoint stream truncated in the record at offset %d" % offset)
                    out.seek(offset)
                    out.write(data)
                    received += 1
                    nbytes += length
                elif len(words) == 3 and words[0] == "E" and words[1].isdigit() and _HEX64.match(words[2]):
                    size, want = int(words[1]), words[2]
                    break
                else:
                    raise XenError("bad record %r" % " ".join(words)[:80])
            if stream.read(1):
                raise XenError("data after the end record")
            out.truncate(size)
            out.flush()
            out.seek(0)
            h = hashlib.sha256()
            for block in iter(lambda: out.read(MIB), b""):
                h.update(block)
            if h.hexdigest() != want:
                raise XenError("the new image's sha256 %s is not the sender's %s: image kept as it was"
                               % (h.hexdigest(), want))
            os.fsync(out.fileno())
        os.utime(tmp, (created, created))
        os.rename(tmp, final)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return dict(path=final, size=size, sha256=want, created=created, blocks_received=received,
                    bytes_received=nbytes)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(lock)


def ckpt_receiver_main(argv, directory=CKPT_DIR, stdin=None, stdout=None, stderr=None):
    """The target's side of pft-ckpt-sums / pft-ckpt-put (argv without the program name). Returns the exit
    status: 0, 1 (failed, old image intact) or 2 (refused arguments)."""
    import sys
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        if len(argv) == 3 and argv[0] == "sums" and argv[2].isdigit():
            guest, blocksize = check_name(argv[1]), check_blocksize(int(argv[2]))
        elif len(argv) == 2 and argv[0] == "put":
            guest = check_name(argv[1])
        else:
            raise XenError("usage: sums GUEST BLOCKSIZE | put GUEST")
    except XenError as exc:
        stderr.write("pft-ckpt: refused: %s\n" % exc)
        return 2
    try:
        if argv[0] == "sums":
            stdout.write(format_sums(ckpt_sums(ckpt_path(guest, directory), blocksize)))
        else:
            res = ckpt_apply(stdin, guest, directory)
            stdout.write("ok %s %d %s %d\n" % (res["path"], res["size"], res["sha256"], res["blocks_received"]))
        stdout.flush()
        return 0
    except (XenError, OSError) as exc:
        stderr.write("pft-ckpt %s %s: failed, the previous checkpoint is unchanged: %s\n" % (argv[0], guest, exc))
        return 1


def guest_state_word(runner, guest, xl=XL):
    rows = [r for r in guest_rows(runner, guest, xl) if r["role"] == "self"]
    return rows[0]["state"] if rows else "absent"


def checkpoint(guest, target, blocksize=CKPT_BLOCK, timeout=600.0, check_mode=False, runner=None, xl=XL,
               local_dir=CKPT_DIR, clock=time.monotonic, wall=time.time):
    """xl save -c here, then send the changed blocks to the target's image. Returns (steps, info):
    steps [{name, seconds}] (save, sums, send) and info, the `checkpoint` result (or its prediction)."""
    check_name(guest)
    check_host(target)
    check_blocksize(blocksize)
    runner = runner or run
    remote_path = ckpt_path(guest)
    src = guest_rows(runner, guest, xl)
    if not running_once(src):
        raise XenError("%s does not run exactly once on this host (found %s): no checkpoint"
                       % (guest, _rows_str(src)))
    if check_mode:
        return [], dict(would="xl save -c %s (the guest is paused for the whole save, about %d MiB), then send "
                        "the blocks that changed to %s:%s" % (guest, src[0]["memory_mb"], target, remote_path),
                        path=remote_path, target=target)
    steps = []
    os.makedirs(local_dir, mode=0o700, exist_ok=True)
    os.chmod(local_dir, 0o700)
    local = ckpt_path(guest, local_dir)
    tmp = local + ".new"
    delta = local + ".delta"
    t = clock()
    created = wall()
    try:
        rc, out, err = runner([xl, "save", "-c", guest, tmp], timeout)
    except XenError as exc:
        rc, out, err = None, "", str(exc)
    save_s = round(clock() - t, 3)
    steps.append(dict(name="save", seconds=save_s, pause_s=save_s))
    if rc != 0:
        state = guest_state_word(runner, guest, xl)
        for p in (tmp,):
            if os.path.exists(p):
                os.unlink(p)
        raise XenError("xl save -c %s failed (%s): %s; the guest is now %s%s" % (
            guest, "rc=%s" % rc if rc is not None else "deadline", (err or out).strip()[-400:], state,
            "" if state in ("running", "blocked", "idle") else " -- check it (xl list), operator action may be needed"))
    os.rename(tmp, local)
    state = guest_state_word(runner, guest, xl)
    try:
        with open(local, "rb") as f:
            head = f.read(len(XL_SAVE_MAGIC))
        if head != XL_SAVE_MAGIC:
            raise XenError("%s is not an xl save image (header %r)" % (local, head))
        t = clock()
        rc, out, err = runner(forced_argv(target, ["pft-ckpt-sums", guest, str(blocksize)]), timeout)
        if rc != 0:
            raise XenError("pft-ckpt-sums on %s failed (rc=%d; an old pft-migrate-receive without it?): %s"
                           % (target, rc, (err or out).strip()[-400:]))
        remote = parse_sums(out, blocksize)
        steps.append(dict(name="sums", seconds=round(clock() - t, 3), target_image=remote is not None))
        t = clock()
        with open(delta, "wb") as f:
            os.chmod(delta, 0o600)
            stats = ckpt_delta(local, blocksize, remote, f, created=created)
        rc, out, err = runner(forced_argv(target, ["pft-ckpt-put", guest]), timeout, stdin_path=delta)
        if rc != 0:
            raise XenError("pft-ckpt-put on %s failed (rc=%d): %s" % (target, rc, (err or out).strip()[-400:]))
        words = out.split()
        if len(words) < 4 or words[0] != "ok" or words[3] != stats["sha256"]:
            raise XenError("pft-ckpt-put on %s gave an unexpected answer: %r" % (target, out.strip()[-300:]))
        steps.append(dict(name="send", seconds=round(clock() - t, 3)))
    finally:
        for path in (delta, local):          # the target's image is the base of the next refresh, not this one
            if os.path.exists(path):
                os.unlink(path)
    mib_sent = round(stats["bytes_sent"] / float(MIB), 3)
    info = dict(path=remote_path, target=target, size=stats["size"],
                image_mib=round(stats["size"] / float(MIB), 3), sha256=stats["sha256"],
                created=round(created, 3), blocksize=blocksize, blocks_total=stats["blocks_total"],
                blocks_sent=stats["blocks_sent"], mib_sent=mib_sent, base="none" if remote is None else "delta",
                guest_state=state, pause_s=save_s,
                save_s=save_s, sums_s=steps[1]["seconds"], send_s=steps[2]["seconds"])
    return steps, info


# --------------------------------------------------------------------------- reactive restore


def image_facts(path, wall=time.time):
    """Size, mtime (when xl save ran, for images sent by checkpoint()) and age of an xl save image."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            head = f.read(len(XL_SAVE_MAGIC))
    except OSError as exc:
        raise XenError("cannot read the checkpoint image %s: %s" % (path, exc))
    if head != XL_SAVE_MAGIC:
        raise XenError("%s is not an xl save image (header %r)" % (path, head[:32]))
    return dict(path=path, size=st.st_size, image_mib=round(st.st_size / float(MIB), 3),
                created=round(st.st_mtime, 3), age_s=round(wall() - st.st_mtime, 1))


def restore(guest, image=None, config=None, absent_on=(), source_down_confirmed=False, timeout=600.0,
            probe_timeout=60.0, check_mode=False, runner=None, xl=XL, clock=time.monotonic, wall=time.time):
    """Start guest here from its checkpoint image, only when it provably runs nowhere else.

    absent_on: other dom0s asked over the migration key (pft-probe) that they do not run the guest.
    One that answers and lists it: refused. One that does not answer: refused unless
    source_down_confirmed. Returns (failed, msg, result)."""
    check_name(guest)
    hosts = [check_host(h, "absent_on host") for h in absent_on or ()]
    runner = runner or run
    image = image or ckpt_path(guest)
    if config is not None and not os.path.isfile(config):
        raise XenError("config %s is not a file" % config)
    steps, checks = [], []
    result = dict(changed=False, restored=False, checks=checks, steps=steps, checkpoint=None, restore_s=None,
                  guest=None)

    def step(name, t0, **data):   # data may carry its own "seconds" (the balloon's), which wins
        entry = dict(name=name, seconds=round(clock() - t0, 3))
        entry.update(data)
        steps.append(entry)

    facts = image_facts(image, wall)
    result["checkpoint"] = facts
    checks.append(dict(name="image", ok=True, detail="%s, %.1f MiB, taken %.0f s ago" % (
        image, facts["image_mib"], facts["age_s"])))
    t = clock()
    here = guest_rows(runner, guest, xl)
    step("local_list", t)
    if here:
        checks.append(dict(name="not_here", ok=False, detail="this host runs %s" % _rows_str(here)))
        if running_once(here):
            result["guest"] = here[0]
            return False, "%s already runs here (%s): nothing restored" % (guest, _rows_str(here)), result
        return True, "this host already has %s: refusing to restore it" % _rows_str(here), result
    checks.append(dict(name="not_here", ok=True, detail="%s does not run here" % guest))
    for host in hosts:
        t = clock()
        try:
            probe = probe_target(host, timeout=probe_timeout, runner=runner)
        except XenError as exc:
            step("probe_" + host, t, ok=False)
            if source_down_confirmed:
                checks.append(dict(name="absent_on", host=host, ok=True, detail="no answer (%s); down, as the "
                                   "operator confirmed (source_down_confirmed)" % str(exc)[-200:]))
                continue
            checks.append(dict(name="absent_on", host=host, ok=False, detail="no answer: %s" % str(exc)[-300:]))
            return True, ("cannot check that %s does not run on %s (no answer: %s); refusing to restore it. "
                          "Set source_down_confirmed only when %s is known to be off (powered off or fenced)"
                          % (guest, host, str(exc)[-200:], host)), result
        step("probe_" + host, t, ok=True)
        rows = find_domain(probe["domains"], guest)
        if rows:
            checks.append(dict(name="absent_on", host=host, ok=False, detail="%s runs %s" % (host, _rows_str(rows))))
            return True, "%s still runs on %s (%s); refusing to start it twice" % (guest, host, _rows_str(rows)), \
                result
        checks.append(dict(name="absent_on", host=host, ok=True, detail="%s answers and does not run %s"
                           % (host, guest)))
    argv = [xl, "restore"] + ([config] if config else []) + [image]
    if check_mode:
        result.update(changed=True, would=" ".join(argv))
        return False, "would restore %s from %s (taken %.0f s ago)" % (guest, image, facts["age_s"]), result
    t = clock()
    try:
        rc, out, err = runner(argv, timeout)
    except XenError as exc:
        rc, out, err = None, "", str(exc)
    restore_s = round(clock() - t, 3)
    step("restore", t, rc=rc)
    result["restore_s"] = restore_s
    result["xl_output"] = (out + err).strip().splitlines()[-40:]
    here = guest_rows(runner, guest, xl)
    if rc == 0 and running_once(here):
        result.update(changed=True, restored=True, guest=here[0])
        return False, "%s restored from %s (taken %.0f s before) in %.1f s; it runs here exactly once" % (
            guest, image, facts["age_s"], restore_s), result
    result["changed"] = bool(here)
    result["guest"] = here[0] if here else None
    return True, ("xl restore of %s from %s failed (%s): %s; this host now has %s" % (
        guest, image, "rc=%s" % rc if rc is not None else "deadline", (err or out).strip()[-400:],
        _rows_str(here))), result
