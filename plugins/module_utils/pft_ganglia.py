# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ganglia for pft: read the XML of gmond/gmetad, pick a migration target.

Everything here is plain Python so that it can be unit-tested without Ansible.

Reading
    :func:`read_ganglia` tries a list of ``host[:port]`` endpoints in order. Each
    attempt has one deadline covering connect and read, and a size cap. The
    XML is parsed with defusedxml (entity declarations and external references
    are refused) into a :class:`Snapshot` of hosts and metrics.

Liveness
    A host is *down* when its ``TN > host_down_factor * TMAX`` (Ganglia's own
    rule, factor 4). A metric is *stale* when ``TN > metric_stale_factor *
    TMAX``. gmond resets a host's ``TN`` whenever *anyone* sends a metric for
    it, including metrics other hosts send on its behalf (``gmetric -S``),
    so data injected for a dead node keeps it looking alive
    (ganglia/monitor-core PR#189). The ranking therefore also requires the
    criterion metrics that each node publishes itself (guests, Xen free
    memory, load) to be fresh: a dead node's own metrics go stale even if
    something keeps its host entry warm. (The SPOOF_HOST marker cannot tell
    the two apart: gmetric marks a node's own metrics as spoofed too when
    gmond.conf sets override_hostname; it is kept as ``Metric.spoofed``.)

Ranking
    :func:`rank_targets` is a pure function of a snapshot and the inputs. Every
    candidate gets a verdict with every reason that applies (see ``REASONS``).
    Acceptable hosts are ordered by load, then by more Xen free memory, then
    by name, so the result is deterministic.

Publishing (gmetric, the node metrics) is pft_ganglia_publish, which the dom0s carry without this
reader; :class:`GangliaError`, the metric names and :func:`parse_guest_memory` come from there.
"""
from __future__ import annotations

import dataclasses
import math
import re
import socket
import time
from xml.parsers.expat import ExpatError

try:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser
    HAS_DEFUSEDXML = True
    DEFUSEDXML_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without defusedxml
    DefusedXMLParser = None
    DefusedXmlException = Exception
    HAS_DEFUSEDXML = False
    DEFUSEDXML_IMPORT_ERROR = exc

try:
    from ansible.module_utils import pft_ganglia_publish as publish
except ImportError:     # imported by its plain name, beside pft_ganglia_publish.py (bench/)
    import pft_ganglia_publish as publish

# the metric names and errors this reader shares with the dom0's publisher (pft_select and the modules import
# them from here)
DEFAULT_FREE_MEMORY_METRIC = publish.DEFAULT_FREE_MEMORY_METRIC
DEFAULT_GUEST_MEMORY_METRIC = publish.DEFAULT_GUEST_MEMORY_METRIC
DEFAULT_GUEST_METRIC = publish.DEFAULT_GUEST_METRIC
DEFAULT_GUEST_NAMES_METRIC = publish.DEFAULT_GUEST_NAMES_METRIC
GangliaError = publish.GangliaError
parse_guest_memory = publish.parse_guest_memory

DEFAULT_PORT = 8649
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

DEFAULT_LOAD_METRIC = "load_one"
DEFAULT_HOST_DOWN_FACTOR = 4.0
DEFAULT_METRIC_STALE_FACTOR = 2.0

# Rejection reasons, in the order they are checked and reported.
REASONS = (
    "unknown_to_ganglia",   # no host of that name/IP in the Ganglia XML
    "is_source",            # the failing node itself
    "excluded",             # listed in exclude (quarantined, maintenance, ...)
    "reserved",             # holds a live spare reservation of another evacuation
    "unhealthy",            # ipmi_health_info verdict not in healthy_verdicts
    "down",                 # host TN > host_down_factor * host TMAX
    "stale",                # a criterion metric TN > metric_stale_factor * its TMAX
    "missing_metric",       # a criterion metric is absent or not a number
    "hosts_guest",          # guest metric > 0
    "insufficient_memory",  # Xen free memory < memory needed
)


class GangliaUnreachable(GangliaError):
    """No endpoint could be read (connect/read failure, deadline, size cap)."""


class GangliaXMLError(GangliaError):
    """The endpoint answered with something that is not usable Ganglia XML."""


# --------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class Metric:
    """One METRIC element: its value as gmond reports it (a string), and its age and lifetimes in seconds."""

    name: str
    val: str | None
    type: str | None
    units: str | None
    tn: int
    tmax: int
    dmax: int
    spoofed: bool = False

    def number(self):
        """The value as a float, or None if it is not a finite number."""
        try:
            value = float(self.val)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def as_dict(self):
        return {"value": self.val, "type": self.type, "units": self.units, "tn": self.tn,
                "tmax": self.tmax, "dmax": self.dmax, "spoofed": self.spoofed}


@dataclasses.dataclass(slots=True)
class Host:
    """One HOST element: when it last reported, its gmond's start, and its metrics by name."""

    name: str
    ip: str
    cluster: str
    reported: int
    tn: int
    tmax: int
    dmax: int
    gmond_started: int
    metrics: dict = dataclasses.field(default_factory=dict)

    def is_down(self, factor=DEFAULT_HOST_DOWN_FACTOR):
        """Ganglia's host-down rule: TN > factor x TMAX (TMAX 0 counts as 1 s)."""
        return self.tn > factor * max(self.tmax, 1)


class Snapshot:
    """Hosts of one Ganglia XML document, by name (several clusters merged)."""

    __slots__ = ("hosts", "source", "version", "localtime", "size")

    def __init__(self):
        self.hosts = {}
        self.source = None
        self.version = None
        self.localtime = None
        self.size = 0

    def add(self, host):
        known = self.hosts.get(host.name)
        # The same host may appear in several clusters of a gmetad grid: keep the freshest.
        if known is None or host.tn < known.tn:
            self.hosts[host.name] = host


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------
_ENDPOINT_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>\d{1,5}))?$")


def parse_endpoint(endpoint, default_port=DEFAULT_PORT):
    """``host``, ``host:port`` or ``[v6addr]:port`` -> (host, port)."""
    if not isinstance(endpoint, str):
        raise GangliaError("Ganglia endpoint %r is not a string" % (endpoint,))
    match = _ENDPOINT_RE.match(endpoint.strip())
    if not match:
        raise GangliaError("Ganglia endpoint %r is not host, host:port or [ipv6]:port" % endpoint)
    host = match.group("v6") or match.group("host")
    port = int(match.group("port")) if match.group("port") else int(default_port)
    if not 0 < port < 65536:
        raise GangliaError("Ganglia endpoint %r: port %d out of range" % (endpoint, port))
    return host, port


def fetch_xml(endpoint, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES, default_port=DEFAULT_PORT):
    """Connect to a gmond/gmetad XML port and read until EOF.

    One deadline (``timeout`` seconds) covers connect and the whole read.
    Raises :class:`GangliaUnreachable` naming the endpoint.
    """
    host, port = parse_endpoint(endpoint, default_port)
    deadline = time.monotonic() + timeout
    chunks = []
    size = 0
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise GangliaUnreachable("Ganglia endpoint %s: connect timed out after %.1f s" % (endpoint, timeout)) from None
    except OSError as exc:
        raise GangliaUnreachable("Ganglia endpoint %s: cannot connect: %s" % (endpoint, exc.strerror or exc)) from exc
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GangliaUnreachable("Ganglia endpoint %s: read deadline of %.1f s passed after %d bytes"
                                         % (endpoint, timeout, size))
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(min(1 << 20, max_bytes + 1 - size))
            except socket.timeout:
                raise GangliaUnreachable("Ganglia endpoint %s: read deadline of %.1f s passed after %d bytes"
                                         % (endpoint, timeout, size)) from None
            except OSError as exc:
                raise GangliaUnreachable("Ganglia endpoint %s: read failed after %d bytes: %s"
                                         % (endpoint, size, exc.strerror or exc)) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise GangliaUnreachable("Ganglia endpoint %s: XML larger than the cap of %d bytes"
                                         % (endpoint, max_bytes))
            chunks.append(chunk)
    finally:
        sock.close()
    return b"".join(chunks)


def _int(attrib, key, default=0):
    try:
        return int(attrib.get(key, default))
    except (TypeError, ValueError):
        return default


class _Builder:
    """Parser target: builds Host/Metric objects directly, no element tree."""

    def __init__(self, metrics=None):
        self.snapshot = Snapshot()
        self.wanted = frozenset(metrics) if metrics is not None else None
        self.root = None
        self.cluster = None
        self.host = None
        self.metric = None

    def start(self, tag, attrib):
        if tag == "METRIC":
            self.metric = None
            if self.host is not None and (self.wanted is None or attrib.get("NAME") in self.wanted):
                try:
                    tn, tmax, dmax = int(attrib["TN"]), int(attrib["TMAX"]), int(attrib.get("DMAX", 0))
                except (KeyError, ValueError):
                    tn, tmax, dmax = _int(attrib, "TN"), _int(attrib, "TMAX"), _int(attrib, "DMAX")
                metric = Metric(attrib.get("NAME", ""), attrib.get("VAL"), attrib.get("TYPE"),
                                attrib.get("UNITS", ""), tn, tmax, dmax)
                self.host.metrics[metric.name] = metric
                self.metric = metric
        elif tag == "EXTRA_ELEMENT":
            if self.metric is not None and attrib.get("NAME") == "SPOOF_HOST":
                self.metric.spoofed = True
        elif tag == "HOST":
            self.host = Host(attrib.get("NAME", ""), attrib.get("IP", ""), self.cluster,
                             _int(attrib, "REPORTED"), _int(attrib, "TN"), _int(attrib, "TMAX"),
                             _int(attrib, "DMAX"), _int(attrib, "GMOND_STARTED"))
        elif tag == "CLUSTER":
            self.cluster = attrib.get("NAME")
            if self.snapshot.localtime is None:
                self.snapshot.localtime = _int(attrib, "LOCALTIME", None)
        elif self.root is None:
            self.root = tag
            self.snapshot.version = attrib.get("VERSION")
            self.snapshot.source = attrib.get("SOURCE")

    def end(self, tag):
        if tag == "METRIC":
            self.metric = None
        elif tag == "HOST":
            if self.host is not None and self.host.name:
                self.snapshot.add(self.host)
            self.host = None
        elif tag == "CLUSTER":
            self.cluster = None

    def data(self, data):
        pass

    def close(self):
        return self.snapshot


def parse_xml(data, origin="Ganglia XML", metrics=None):
    """Parse gmond or gmetad XML (bytes) into a :class:`Snapshot`.

    ``metrics``: names of the metrics to keep (None keeps all); hosts are always kept.

    Raises :class:`GangliaXMLError` naming ``origin`` for empty, truncated,
    malformed or unsafe documents, or a root that is not GANGLIA_XML.
    """
    if not HAS_DEFUSEDXML:
        raise GangliaError("defusedxml is required to parse Ganglia XML: %s" % DEFUSEDXML_IMPORT_ERROR)
    if not data or not data.strip():
        raise GangliaXMLError("%s: empty answer (0 bytes of XML)" % origin)
    builder = _Builder(metrics)
    # defusedxml installs its guards (entity declarations, external references)
    # on the expat parser. Element events go straight to the builder instead
    # of through ElementTree's Python layer: about 2x faster on 7 MB of XML.
    defused = DefusedXMLParser(target=builder, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    expat = defused.parser
    expat.ordered_attributes = 0
    expat.StartElementHandler = builder.start
    expat.EndElementHandler = builder.end
    expat.CharacterDataHandler = None
    expat.DefaultHandlerExpand = None
    try:
        expat.Parse(data, True)
    except DefusedXmlException as exc:
        raise GangliaXMLError("%s: unsafe XML refused (%s: %s)" % (origin, exc.__class__.__name__, exc)) from exc
    except ExpatError as exc:
        raise GangliaXMLError("%s: malformed or truncated XML (%d bytes): %s" % (origin, len(data), exc)) from exc
    snapshot = builder.snapshot
    if builder.root != "GANGLIA_XML":
        raise GangliaXMLError("%s: root element is %r, not GANGLIA_XML" % (origin, builder.root))
    snapshot.size = len(data)
    return snapshot


def read_ganglia(endpoints, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES, default_port=DEFAULT_PORT,
                 fetch=fetch_xml, metrics=None):
    """Read the first endpoint that gives valid Ganglia XML.

    Returns ``(snapshot, endpoint, errors)`` where ``errors`` lists the
    failures of the endpoints tried before. Raises :class:`GangliaUnreachable`
    (all endpoints unreachable) or :class:`GangliaXMLError` (at least one
    answered, none with valid XML); the message lists every endpoint's error.
    """
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    endpoints = list(endpoints or [])
    if not endpoints:
        raise GangliaError("no Ganglia endpoint given")
    errors = []
    xml_failed = False
    for endpoint in endpoints:
        try:
            data = fetch(endpoint, timeout=timeout, max_bytes=max_bytes, default_port=default_port)
            snapshot = parse_xml(data, origin="Ganglia endpoint %s" % endpoint, metrics=metrics)
        except GangliaXMLError as exc:
            xml_failed = True
            errors.append(str(exc))
            continue
        except GangliaError as exc:
            errors.append(str(exc))
            continue
        return snapshot, endpoint, errors
    if xml_failed:
        raise GangliaXMLError("no valid Ganglia XML from %d endpoint(s): %s" % (len(endpoints), "; ".join(errors)))
    raise GangliaUnreachable("Ganglia unreachable, tried %d endpoint(s): %s" % (len(endpoints), "; ".join(errors)))


# --------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------
class Criteria:
    """What makes a good target. Every field has the documented module default."""

    __slots__ = ("guest_metric", "free_memory_metric", "load_metric", "host_down_factor",
                 "metric_stale_factor", "healthy_verdicts")

    def __init__(self, guest_metric=DEFAULT_GUEST_METRIC, free_memory_metric=DEFAULT_FREE_MEMORY_METRIC,
                 load_metric=DEFAULT_LOAD_METRIC, host_down_factor=DEFAULT_HOST_DOWN_FACTOR,
                 metric_stale_factor=DEFAULT_METRIC_STALE_FACTOR, healthy_verdicts=("ok",)):
        self.guest_metric = guest_metric
        self.free_memory_metric = free_memory_metric
        self.load_metric = load_metric
        self.host_down_factor = float(host_down_factor)
        self.metric_stale_factor = float(metric_stale_factor)
        self.healthy_verdicts = tuple(healthy_verdicts)

    def metric_names(self):
        """The metrics the ranking reads (pass to parse_xml/read_ganglia as ``metrics``)."""
        return (self.guest_metric, self.free_memory_metric, self.load_metric)


class HostIndex:
    """Resolve inventory names to Ganglia hosts: exact name, IP, then unique short name."""

    def __init__(self, snapshot):
        self.snapshot = snapshot
        self.by_lower = {}
        self.by_ip = {}
        self.by_short = {}
        for name, host in snapshot.hosts.items():
            self.by_lower.setdefault(name.lower(), host)
            if host.ip:
                self.by_ip.setdefault(host.ip, host)
            self.by_short.setdefault(name.split(".", 1)[0].lower(), []).append(host)

    def lookup(self, name):
        host = self.snapshot.hosts.get(name) or self.by_lower.get(name.lower()) or self.by_ip.get(name)
        if host is not None:
            return host
        matches = self.by_short.get(name.split(".", 1)[0].lower(), [])
        return matches[0] if len(matches) == 1 else None


def health_verdicts(health):
    """``{name: verdict}`` from an ipmi_health_info result (or its ``nodes`` dict)."""
    if not health:
        return None
    nodes = health.get("nodes", health) if isinstance(health, dict) else None
    if not isinstance(nodes, dict):
        raise GangliaError("health: expected the ipmi_health_info result, a dict with 'nodes'")
    verdicts = {}
    for name, info in nodes.items():
        verdict = info.get("verdict") if isinstance(info, dict) else info
        verdicts[str(name)] = str(verdict) if verdict is not None else "unknown"
    return verdicts


def _metric_check(host, metric_name, criteria, reasons, details):
    """Return the metric's number, or None after recording why it cannot be used."""
    metric = host.metrics.get(metric_name)
    if metric is None:
        reasons.add("missing_metric")
        details.append("metric %s not published" % metric_name)
        return None
    value = metric.number()
    if value is None:
        reasons.add("missing_metric")
        details.append("metric %s value %r is not a number" % (metric_name, metric.val))
        return None
    if metric.tmax > 0 and metric.tn > criteria.metric_stale_factor * metric.tmax:
        reasons.add("stale")
        details.append("metric %s is stale: TN %d s > %g x TMAX %d s"
                       % (metric_name, metric.tn, criteria.metric_stale_factor, metric.tmax))
    return value


def _fmt(value):
    return "%g" % value if value is not None else "?"


def rank_targets(snapshot, candidates, source=None, memory_mb=0, exclude=(), reserved=None, health=None,
                 criteria=None):
    """Rank migration targets. Pure: depends only on its arguments.

    :param snapshot: a :class:`Snapshot`
    :param candidates: inventory names, in any order (duplicates ignored)
    :param source: the failing node's name (never a target)
    :param memory_mb: memory the incoming guest needs, in MiB
    :param exclude: names never to choose (quarantined, maintenance)
    :param reserved: ``{name: owner}`` of live reservations of other evacuations
    :param health: ipmi_health_info result, or ``{name: verdict}``; None skips the check
    :param criteria: a :class:`Criteria`
    :returns: dict with ``target`` (name or None), ``reason``, ``ranking`` (accepted
        hosts best first, then rejected ones by name), ``accepted``, ``rejected``
        (``{reason: [names]}``) and ``unknown`` (names unknown to Ganglia).
    """
    criteria = criteria or Criteria()
    if memory_mb is None or memory_mb < 0:
        raise GangliaError("memory_mb must be a number >= 0, got %r" % (memory_mb,))
    verdicts = health_verdicts(health) if health is not None else None
    index = HostIndex(snapshot)
    exclude_set = set(exclude or ())
    reserved = dict(reserved or {})
    source_host = index.lookup(source) if source else None

    accepted = []
    rejected = []
    seen = set()
    for name in candidates:
        if name in seen:
            continue
        seen.add(name)
        reasons = set()
        details = []
        entry = {"host": name, "ganglia_name": None, "ip": None, "accepted": False, "rank": None,
                 "reason": None, "reasons": [], "details": details,
                 "guests": None, "free_memory_mb": None, "load": None, "host_tn": None, "host_tmax": None}
        host = index.lookup(name)
        if host is None:
            reasons.add("unknown_to_ganglia")
            details.append("no host named %s (by name, IP or short name) in the Ganglia XML" % name)
        else:
            entry.update(ganglia_name=host.name, ip=host.ip, host_tn=host.tn, host_tmax=host.tmax)
        if source and (name == source or (host is not None and host is source_host)):
            reasons.add("is_source")
            details.append("%s is the failing source node" % name)
        if name in exclude_set or (host is not None and (host.name in exclude_set or host.ip in exclude_set)):
            reasons.add("excluded")
            details.append("%s is in exclude" % name)
        owner = reserved.get(name) or (reserved.get(host.name) if host is not None else None)
        if owner is not None:
            reasons.add("reserved")
            details.append("%s is reserved by %s" % (name, owner))
        if verdicts is not None:
            verdict = verdicts.get(name)
            if verdict is None and host is not None:
                verdict = verdicts.get(host.name)
            if verdict not in criteria.healthy_verdicts:
                reasons.add("unhealthy")
                details.append("health verdict of %s is %s" % (name, verdict or "missing"))
        if host is not None:
            if host.is_down(criteria.host_down_factor):
                reasons.add("down")
                details.append("host down: TN %d s > %g x TMAX %d s" % (host.tn, criteria.host_down_factor, host.tmax))
            guests = _metric_check(host, criteria.guest_metric, criteria, reasons, details)
            free = _metric_check(host, criteria.free_memory_metric, criteria, reasons, details)
            load = _metric_check(host, criteria.load_metric, criteria, reasons, details)
            entry.update(guests=guests, free_memory_mb=free, load=load)
            if guests is not None and guests > 0:
                reasons.add("hosts_guest")
                details.append("hosts %g guest(s) (%s)" % (guests, criteria.guest_metric))
            if free is not None and free < memory_mb:
                reasons.add("insufficient_memory")
                details.append("Xen free memory %g MiB < %g MiB needed" % (free, memory_mb))
        ordered = [r for r in REASONS if r in reasons]
        entry["reasons"] = ordered
        if ordered:
            entry["reason"] = ordered[0]
            rejected.append(entry)
        else:
            entry["accepted"] = True
            details.append("acceptable: no guest, %s MiB Xen free >= %s MiB, %s %s"
                           % (_fmt(entry["free_memory_mb"]), _fmt(memory_mb), criteria.load_metric,
                              _fmt(entry["load"])))
            accepted.append(entry)

    # Deterministic order: least loaded, then most Xen free memory, then name.
    accepted.sort(key=lambda e: (e["load"], -e["free_memory_mb"], e["host"]))
    for rank, entry in enumerate(accepted, 1):
        entry["rank"] = rank
    rejected.sort(key=lambda e: e["host"])

    by_reason = {}
    for entry in rejected:
        for reason in entry["reasons"]:
            by_reason.setdefault(reason, []).append(entry["host"])
    unknown = by_reason.get("unknown_to_ganglia", [])

    if accepted:
        best = accepted[0]
        target = best["host"]
        reason = ("%s chosen: lowest %s (%s), %s MiB Xen free >= %s MiB needed, no guest; "
                  "%d of %d candidate(s) acceptable"
                  % (target, criteria.load_metric, _fmt(best["load"]), _fmt(best["free_memory_mb"]),
                     _fmt(memory_mb), len(accepted), len(seen)))
    else:
        target = None
        if not seen:
            reason = "no target: no candidates given"
        else:
            parts = ["%s: %s" % (r, ", ".join(by_reason[r])) for r in REASONS if r in by_reason]
            reason = "no target: all %d candidate(s) rejected (%s)" % (len(seen), "; ".join(parts))
    return {
        "target": target,
        "reason": reason,
        "ranking": accepted + rejected,
        "accepted": [e["host"] for e in accepted],
        "rejected": by_reason,
        "unknown": unknown,
    }


# --------------------------------------------------------------------------
# Module arguments shared by the modules that read Ganglia (doc fragment pft.ganglia_read)
# --------------------------------------------------------------------------
READ_ARGS = dict(
    endpoints=dict(type="list", elements="str", required=True),
    default_port=dict(type="int", default=DEFAULT_PORT),
    timeout=dict(type="float", default=DEFAULT_TIMEOUT),
    max_bytes=dict(type="int", default=DEFAULT_MAX_BYTES),
    host_down_factor=dict(type="float", default=DEFAULT_HOST_DOWN_FACTOR),
    metric_stale_factor=dict(type="float", default=DEFAULT_METRIC_STALE_FACTOR),
)


def check_read_args(params):
    """The message for the first bad READ_ARGS value, or None."""
    for key in ("timeout", "host_down_factor", "metric_stale_factor"):
        if params[key] <= 0:
            return "%s must be > 0, got %s" % (key, params[key])
    if params["max_bytes"] <= 0:
        return "max_bytes must be > 0, got %d" % params["max_bytes"]
    if not params["endpoints"]:
        return "endpoints is empty: give at least one Ganglia gmond/gmetad host[:port]"
    return None


# Module arguments shared by the modules that rank targets (doc fragment pft.ganglia_rank)
RANK_ARGS = dict(
    healthy_verdicts=dict(type="list", elements="str", default=["ok"]),
    guest_metric=dict(type="str", default=DEFAULT_GUEST_METRIC),
    free_memory_metric=dict(type="str", default=DEFAULT_FREE_MEMORY_METRIC),
    load_metric=dict(type="str", default=DEFAULT_LOAD_METRIC),
)


def criteria_from_params(params):
    """The :class:`Criteria` of a module's READ_ARGS and RANK_ARGS values."""
    return Criteria(guest_metric=params["guest_metric"], free_memory_metric=params["free_memory_metric"],
                    load_metric=params["load_metric"], host_down_factor=params["host_down_factor"],
                    metric_stale_factor=params["metric_stale_factor"], healthy_verdicts=params["healthy_verdicts"])


# --------------------------------------------------------------------------
# Guest placement (where the watch learns which guests each node runs)
# --------------------------------------------------------------------------
def guest_placement(snapshot, nodes, names_metric=DEFAULT_GUEST_NAMES_METRIC,
                    memory_metric=DEFAULT_GUEST_MEMORY_METRIC, host_down_factor=DEFAULT_HOST_DOWN_FACTOR,
                    metric_stale_factor=DEFAULT_METRIC_STALE_FACTOR):
    """Each node's guests as its own dom0 last published them. Pure.

    Returns ``(placement, unknown)``: ``placement`` maps every node to a list of
    ``{"name", "maxmem_mb"}`` (sorted by name), or to None when its guests are not known
    from Ganglia; ``unknown`` maps those nodes to the reason. A node is unknown when Ganglia
    does not know it, it is down, a metric is missing, stale or malformed, or the two metrics
    disagree. Unknown is never "no guests". (SPOOF_HOST is not checked: gmetric sets it on a
    node's own metrics too when gmond.conf has override_hostname, as roles/ganglia's does.)
    """
    index = HostIndex(snapshot)
    placement, unknown = {}, {}
    for node in nodes:
        node = str(node)
        host = index.lookup(node)
        why = None
        names = memory = None
        if host is None:
            why = "not known to Ganglia"
        elif host.is_down(host_down_factor):
            why = "down in Ganglia (TN %d s > %g x TMAX %d s)" % (host.tn, host_down_factor, host.tmax)
        else:
            for metric_name in (names_metric, memory_metric):
                metric = host.metrics.get(metric_name)
                if metric is None:
                    why = "metric %s not published" % metric_name
                elif metric.tmax > 0 and metric.tn > metric_stale_factor * metric.tmax:
                    why = ("metric %s is stale: TN %d s > %g x TMAX %d s"
                           % (metric_name, metric.tn, metric_stale_factor, metric.tmax))
                if why:
                    break
            if not why:
                names = [n.strip() for n in str(host.metrics[names_metric].val or "").split(",") if n.strip()]
                try:
                    memory = parse_guest_memory(host.metrics[memory_metric].val,
                                                origin="metric %s of %s" % (memory_metric, host.name))
                except GangliaError as exc:
                    why = str(exc)
                else:
                    if sorted(names) != sorted(memory):
                        why = ("metrics %s (%s) and %s (%s) disagree"
                               % (names_metric, ",".join(sorted(names)) or "none", memory_metric,
                                  ",".join(sorted(memory)) or "none"))
        if why:
            placement[node] = None
            unknown[node] = why
        else:
            placement[node] = [{"name": n, "maxmem_mb": memory[n]} for n in sorted(names)]
    return placement, unknown
