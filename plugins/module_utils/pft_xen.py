# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Xen for pft: running ``xl``, its parsers, domain facts and the target probe (issue 6).

Plain Python (no Ansible import) so it can be unit-tested; the modules xen_domain_info,
xen_prestage, xen_migrate and xen_restore are thin wrappers (and the xen_host role installs this file
on the dom0s for the checkpoint receiver). Every command is an argv list with a
deadline. The research behind the parsers is docs/xen-migration.md (Xen 4.17.5 source).

The rest of pft's Xen code builds on this file: pft_xen_lock (the migration lock),
pft_xen_migration_log (the lines of ``xl -v migrate``), pft_xen_xl_migrate (the ``xl migrate`` process,
driven and watched), pft_xen_migrate (the whole migration: checks, lock, verification), pft_xen_prestage
(the balloon and pre-staging) and pft_xen_checkpoint (checkpoint images and restore).

Facts
    :func:`parse_xl_list`, :func:`parse_xl_list_long`, :func:`parse_xl_uptime`,
    :func:`parse_xl_info` parse the stable outputs of ``xl``; :func:`domain_info` runs
    them and joins the results, with the migrations still running here (pft_xen_lock).

Target probe
    The source dom0 reaches the target only through the restricted migration key, whose
    forced command (``pft-migrate-receive``) also answers a read-only ``pft-probe`` verb.
    :func:`probe_argv` builds that call, :func:`parse_probe` reads its sections and
    :func:`check_target` judges the target from them.
"""
from __future__ import annotations

import json
import re
import subprocess

XL = "/usr/sbin/xl"
MIB = 1024 * 1024

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


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
        raise XenError("%s did not finish within %.0f s" % (" ".join(argv), timeout)) from None
    except OSError as exc:
        raise XenError("cannot run %s: %s" % (argv[0], exc)) from exc
    finally:
        if stdin_file:
            stdin_file.close()
    return proc.returncode, proc.stdout, proc.stderr


def run_ok(argv, timeout, runner=None):
    rc, out, err = (runner or run)(argv, timeout)
    if rc != 0:
        raise XenError("%s failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip()[-500:]))
    return out


def step_recorder(steps, clock):
    """A function step(name, t0, **data) that appends dict(name, seconds since t0, **data) to steps;
    data may carry its own "seconds" (the balloon's), which wins."""
    def step(name, t0, **data):
        entry = dict(name=name, seconds=round(clock() - t0, 3))
        entry.update(data)
        steps.append(entry)
    return step


# --------------------------------------------------------------------------- parsers

XL_LIST_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+"
                         r"(?P<state>[r-][b-][p-][s-][-rscwS?][d-])\s+(?P<cpu_s>\d+\.\d)$")
XL_UPTIME_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?:(?P<days>\d+) days?, )?\s*"
                           r"(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)$")
XL_INFO_ROW = re.compile(r"^(?P<key>[a-z_]+)\s*:\s?(?P<value>.*)$")


# The xl list state letters (position in ``rbpscd``, letter, word), most significant first: a domain that is
# dying is "dying" whatever else its letters say; one with no letter set is "idle".
STATE_LETTERS = ((5, "d", "dying"), (4, "c", "crashed"), (3, "s", "shutdown"), (2, "p", "paused"),
                 (0, "r", "running"), (1, "b", "blocked"))


def state_word(flags):
    """The xl list state letters (e.g. ``-b----``) as one word, most significant first."""
    if len(flags) != 6:
        return "unknown"
    return next((word for index, letter, word in STATE_LETTERS if flags[index] == letter), "idle")


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
        raise XenError("xl list -l did not print JSON (is output_format=\"sxp\" set in xl.conf?): %s" % exc) from exc
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
    # pft_xen_lock imports this file: its import waits until both are loaded (domain_info runs under
    # Ansible only: the dom0's checkpoint receiver, which imports this file by plain name, never calls it)
    from ansible.module_utils.pft_xen_lock import LOCK_DIR, migrations_here
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

def guest_rows(runner, guest, xl=XL, timeout=30):
    return find_domain(parse_xl_list(run_ok([xl, "list"], timeout, runner)), guest)


def running_once(rows):
    """True when exactly one row is the guest under its own name and alive (not shutdown/crashed/dying)."""
    own = [r for r in rows if r["role"] == "self"]
    return len(rows) == 1 and len(own) == 1 and own[0]["state"] in ("running", "blocked", "idle", "paused")


def rows_str(rows):
    return ", ".join("%s (id %s, %s)" % (r["name"], r["domid"], r["state"]) for r in rows) or "nothing"


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
