# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Publishing a node's metrics to Ganglia with gmetric.

The half of pft's Ganglia code that runs on the nodes: the xen_host role installs this file (with
pft_common.py) on each dom0 for pft-xen-metrics, which imports it by its plain name; the module
ganglia_metric imports it as ``ansible.module_utils.pft_ganglia_publish``. Reading the XML and
ranking the targets is pft_ganglia, on the controller.

:func:`validate_metric` and :func:`gmetric_argv` check a metric and build its ``gmetric`` argv (a list,
no shell); :func:`publish_metrics` runs them with one deadline for all; :func:`pft_node_metrics` are
the standard pft node metrics (guest count, guest names, each guest's maximum memory, Xen free memory),
whose names are the DEFAULT_*_METRIC constants. :func:`format_guest_memory` and
:func:`parse_guest_memory` are the wire format of the guests' memory metric.
:class:`GangliaError` is the base of every pft Ganglia error (pft_ganglia's included).
"""
from __future__ import annotations

import math
import re
import time

try:
    from ansible.module_utils.pft_common import CommandNotStarted, CommandTimeout, run_with_deadline
except ImportError:     # on a dom0, beside pft_common.py
    from pft_common import CommandNotStarted, CommandTimeout, run_with_deadline

# The metrics every Xen node publishes about itself (docs/ganglia.md); pft_ganglia reads them.
DEFAULT_GUEST_METRIC = "pft_guest_count"
DEFAULT_GUEST_NAMES_METRIC = "pft_guest_names"
DEFAULT_GUEST_MEMORY_METRIC = "pft_guest_maxmem_mb"
DEFAULT_FREE_MEMORY_METRIC = "pft_xen_free_memory_mb"


class GangliaError(Exception):
    """Base class: a clear message that names the endpoint or input at fault."""


GMETRIC_TYPES = ("string", "int8", "uint8", "int16", "uint16", "int32", "uint32", "float", "double")
GMETRIC_SLOPES = ("zero", "positive", "negative", "both")
_METRIC_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SPOOF_RE = re.compile(r"^[0-9A-Fa-f.:]+:[A-Za-z0-9_.-]+$")


def validate_metric(metric):
    """Check one metric spec ``{name, value, type, units, tmax, dmax, ...}``; return a normalised copy."""
    spec = dict(metric)
    name = spec.get("name")
    if not isinstance(name, str) or not _METRIC_NAME_RE.match(name):
        raise GangliaError("metric name %r: use 1-128 of A-Z a-z 0-9 _ . -" % (name,))
    mtype = spec.get("type") or "string"
    if mtype not in GMETRIC_TYPES:
        raise GangliaError("metric %s: type %r is not one of %s" % (name, mtype, ", ".join(GMETRIC_TYPES)))
    value = spec.get("value")
    if value is None:
        raise GangliaError("metric %s: value is missing" % name)
    if isinstance(value, bool):
        value = int(value)
    if mtype != "string":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise GangliaError("metric %s: value %r is not a number but type is %s" % (name, value, mtype)) from None
        if not math.isfinite(number):
            raise GangliaError("metric %s: value %r is not finite" % (name, value))
        if mtype not in ("float", "double"):
            if number != int(number):
                raise GangliaError("metric %s: value %r is not an integer but type is %s" % (name, value, mtype))
            if mtype.startswith("uint") and number < 0:
                raise GangliaError("metric %s: value %r is negative but type is %s" % (name, value, mtype))
            value = int(number)
    value = str(value)
    if "\n" in value or "\0" in value:
        raise GangliaError("metric %s: value contains a newline or NUL" % name)
    slope = spec.get("slope") or "both"
    if slope not in GMETRIC_SLOPES:
        raise GangliaError("metric %s: slope %r is not one of %s" % (name, slope, ", ".join(GMETRIC_SLOPES)))
    for key in ("tmax", "dmax"):
        if spec.get(key) is not None and (not isinstance(spec[key], int) or spec[key] < 0):
            raise GangliaError("metric %s: %s must be an integer >= 0, got %r" % (name, key, spec[key]))
    spoof = spec.get("spoof")
    if spoof and not _SPOOF_RE.match(spoof):
        raise GangliaError("metric %s: spoof %r is not IP:hostname" % (name, spoof))
    spec.update(name=name, type=mtype, value=value, slope=slope)
    return spec


def gmetric_argv(metric, gmetric="gmetric", config=None):
    """The argv (a list; no shell) that publishes one validated metric."""
    spec = validate_metric(metric)
    argv = [gmetric]
    if config:
        argv += ["-c", config]
    argv += ["-n", spec["name"], "-v", spec["value"], "-t", spec["type"], "-u", spec.get("units") or "",
             "-s", spec["slope"]]
    if spec.get("tmax") is not None:
        argv += ["-x", str(spec["tmax"])]
    if spec.get("dmax") is not None:
        argv += ["-d", str(spec["dmax"])]
    for key, flag in (("group", "-g"), ("title", "-T"), ("description", "-D")):
        if spec.get(key):
            argv += [flag, str(spec[key])]
    if spec.get("spoof"):
        argv += ["-S", spec["spoof"]]
    return argv


_GUEST_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def format_guest_memory(guest_memory):
    """``{guest: MiB}`` -> ``"guest1=160,guest2=256"`` (sorted by name), the pft_guest_maxmem_mb value."""
    parts = []
    for name in sorted(guest_memory):
        value = guest_memory[name]
        if not _GUEST_NAME_RE.match(str(name)):
            raise GangliaError("guest name %r cannot be published (use A-Z a-z 0-9 _ . -)" % (name,))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GangliaError("guest %s: memory %r is not a whole number of MiB" % (name, value))
        parts.append("%s=%d" % (name, value))
    return ",".join(parts)


def parse_guest_memory(text, origin="metric %s" % DEFAULT_GUEST_MEMORY_METRIC):
    """The inverse of :func:`format_guest_memory`; raises GangliaError naming ``origin`` on bad input."""
    out = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not _GUEST_NAME_RE.match(name) or not value.isdigit():
            raise GangliaError("%s: %r is not guest=MiB" % (origin, part))
        out[name] = int(value)
    return out


def pft_node_metrics(guests=None, xen_free_memory_mb=None, tmax=60, dmax=0,
                     guest_metric=DEFAULT_GUEST_METRIC, guest_names_metric=DEFAULT_GUEST_NAMES_METRIC,
                     free_memory_metric=DEFAULT_FREE_MEMORY_METRIC, guest_memory_mb=None,
                     guest_memory_metric=DEFAULT_GUEST_MEMORY_METRIC):
    """The standard pft node metrics: guest count, guest names, each guest's maxmem, Xen free memory (MiB)."""
    metrics = []
    if guests is not None:
        names = [str(g) for g in guests]
        metrics.append({"name": guest_metric, "value": len(names), "type": "uint32", "units": "guests",
                        "tmax": tmax, "dmax": dmax, "group": "pft", "title": "Guest VMs running"})
        metrics.append({"name": guest_names_metric, "value": ",".join(names), "type": "string", "units": "",
                        "tmax": tmax, "dmax": dmax, "group": "pft", "title": "Guest VM names"})
    if guest_memory_mb is not None:
        if guests is not None and sorted(guest_memory_mb) != sorted(str(g) for g in guests):
            raise GangliaError("guest memory is given for %s but the guests are %s"
                               % (",".join(sorted(guest_memory_mb)) or "none",
                                  ",".join(sorted(str(g) for g in guests)) or "none"))
        metrics.append({"name": guest_memory_metric, "value": format_guest_memory(guest_memory_mb),
                        "type": "string", "units": "MiB", "tmax": tmax, "dmax": dmax, "group": "pft",
                        "title": "Guest VM maximum memory"})
    if xen_free_memory_mb is not None:
        metrics.append({"name": free_memory_metric, "value": int(xen_free_memory_mb), "type": "uint32",
                        "units": "MiB", "tmax": tmax, "dmax": dmax, "group": "pft",
                        "title": "Xen free memory (xl info free_memory)"})
    return metrics


def run_argv(argv, timeout):
    """Run argv with a deadline (stdin /dev/null). Returns (rc, stdout, stderr); raises GangliaError on
    timeout/missing binary."""
    try:
        return run_with_deadline(argv, timeout)
    except CommandTimeout:
        raise GangliaError("%s timed out after %.1f s (argv: %s)" % (argv[0], timeout, " ".join(argv))) from None
    except CommandNotStarted as exc:
        raise GangliaError("cannot run %s: %s" % (argv[0], exc.cause.strerror or exc.cause)) from exc


def publish_metrics(metrics, gmetric="gmetric", config=None, timeout=10.0, runner=run_argv):
    """Publish each metric with one gmetric call. One overall deadline for all calls.

    Returns a list of ``{name, value, argv, rc}``. Raises GangliaError naming the
    metric whose gmetric failed or timed out.
    """
    argvs = [gmetric_argv(m, gmetric=gmetric, config=config) for m in metrics]  # validate all first
    deadline = time.monotonic() + timeout
    published = []
    for metric, argv in zip(metrics, argvs, strict=True):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GangliaError("publishing metric %s: deadline of %.1f s passed" % (metric["name"], timeout))
        rc, out, err = runner(argv, remaining)
        if rc != 0:
            raise GangliaError("gmetric failed for metric %s (rc=%d): %s"
                               % (metric["name"], rc, (err or out).strip() or "no output"))
        published.append({"name": metric["name"], "value": argv[argv.index("-v") + 1], "argv": argv, "rc": rc})
    return published
