# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""IPMI health sampling and verdicts for pft (logic of ipmi_health_info).

The module is a thin wrapper; everything that decides lives here so it can be
tested directly:

* :class:`Policy` turns one sensor reading into ``ok``/``warning``/
  ``critical``/``unknown``, from per-sensor rules and/or the BMC's own
  threshold states.
* :class:`SensorTrack` applies hysteresis (a state counts only after K
  consecutive samples) and keeps the trend (least-squares slope).
* :class:`LanNode` drives one BMC session (login, sensor repository,
  readings) as callbacks on pyghmi's event loop, sensor by sensor, so one bad
  sensor does not abort the node and one dead BMC blocks nobody;
  :class:`LocalNode` reads the in-band BMC (/dev/ipmi0).
* :class:`Sampler` polls all nodes at once with a hard per-node deadline per
  sample, so a dead BMC costs at most its deadline, and any number of dead
  BMCs cannot keep the live ones from logging in; after a failed login a BMC
  is logged into again only after a growing delay, in the background, so
  once dead BMCs have failed a sample ends when the live ones have answered.
* :func:`run_health` is what the module calls.

Verdict order for a node: critical > warning > unknown > ok. ``unknown``
(BMC unreachable, authentication failure, timeout, sensor unavailable or
missing) is reported and alerted on but never escalates to critical.
"""

from __future__ import absolute_import, division, print_function

import collections
import fnmatch
import ipaddress
import math
import queue
import threading
import time

__metaclass__ = type

try:
    from pyghmi import exceptions as pyghmi_exc
    from pyghmi.ipmi import command as pyghmi_command
    from pyghmi.ipmi.private import session as pyghmi_session
    HAS_PYGHMI = True
    PYGHMI_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised via missing_required_lib
    pyghmi_exc = pyghmi_command = pyghmi_session = None
    HAS_PYGHMI = False
    PYGHMI_IMPORT_ERROR = _exc

OK = "ok"
WARNING = "warning"
CRITICAL = "critical"
UNKNOWN = "unknown"
VERDICTS = (OK, WARNING, CRITICAL, UNKNOWN)
# The ordinal scale that hysteresis works on; unknown is kept apart.
LEVEL = {OK: 0, WARNING: 1, CRITICAL: 2}
LEVEL_NAME = {0: OK, 1: WARNING, 2: CRITICAL}
# Node verdict precedence: evidence of trouble beats missing evidence.
RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}

THRESHOLD_KEYS = ("lower_critical", "lower_warning", "upper_warning", "upper_critical")


class HealthError(Exception):
    """Bad input: the message names the thing at fault."""


# ---------------------------------------------------------------------------
# pyghmi lost-wakeup fix
# ---------------------------------------------------------------------------
# pyghmi 1.6.x: Session.awaitresponse() calls _io_wait(timeout, sockaddr),
# which queues a waiter for the IO thread and sleeps. If the BMC's reply was
# already received (and put on the session's pktqueue) before the waiter was
# queued, nothing wakes the waiter until pyghmi's retry timer (0.5-1 s)
# fires. Against a BMC that answers within ~100 us this happens to about half
# of all requests. The fix below registers the waiter exactly as pyghmi does
# and then returns at once if a reply for that BMC is already queued. It only
# changes the directed wait (myaddr given) and is installed only on the pyghmi
# versions it was verified on.

FIXED_PYGHMI_SERIES = ("1.6.",)


def _pyghmi_version():
    try:
        from importlib.metadata import version
        return version("pyghmi")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _reply_queued(session_mod, myaddr):
    handlers = session_mod.Session.bmc_handlers.get(myaddr) or {}
    for sess in list(handlers.values()):
        if getattr(sess, "pktqueue", None):
            return True
    return False


def install_wakeup_fix(session_mod=None, force=False):
    """Install the lost-wakeup fix into pyghmi's session module.

    Returns True when the fix is (now or already) active. It is not installed
    on pyghmi versions it was not verified on, unless ``force``.
    """
    session_mod = session_mod or pyghmi_session
    if session_mod is None:
        return False
    current = session_mod._io_wait
    if getattr(current, "pft_wakeup_fix", False):
        return True
    required = ("ioqueue", "iosockets", "Session", "_monotonic_time")
    if not all(hasattr(session_mod, name) for name in required):
        return False
    if not force and not _pyghmi_version().startswith(FIXED_PYGHMI_SERIES):
        return False
    original = current

    def _io_wait(timeout, myaddr=None, evq=None):
        if myaddr is None:
            return original(timeout, myaddr, evq)
        evt = threading.Event()
        if evq is not None:
            evq.append(evt)
        deadline = timeout + session_mod._monotonic_time()
        session_mod.ioqueue.append((deadline, evt, myaddr))
        if deadline < session_mod.selectdeadline:
            # break the IO thread out of select() so it sees the new deadline
            intsock = session_mod.iosockets[0]
            intsock = getattr(intsock, "fd", intsock)
            intsock.sendto(b"\x01", (session_mod.myself, session_mod.iosockets[0].getsockname()[1]))
        if _reply_queued(session_mod, myaddr):
            return None  # the reply is already here; the stale waiter expires harmlessly
        evt.wait()
        return None

    _io_wait.pft_wakeup_fix = True
    _io_wait.pft_original = original
    session_mod._io_wait = _io_wait
    return True


def install_recv_fix(session_mod=None):
    """Make pyghmi's IO thread receive without blocking, whatever the socket mode.

    pyghmi 1.6.x shares one UDP socket between its IO thread, which sets it
    non-blocking and then calls recvfrom() until it is empty, and the senders,
    which set the same socket back to blocking before each sendto(). If a
    send lands between the IO thread's setblocking(0) and its recvfrom(),
    the IO thread blocks in recvfrom() until some packet arrives; when every
    request is waiting on the IO thread, none ever does, and the process
    hangs (seen with 512 BMCs on one event loop). MSG_DONTWAIT makes each
    receive non-blocking on its own.
    """
    session_mod = session_mod or pyghmi_session
    if session_mod is None or not hasattr(session_mod, "_io_recvfrom"):
        return False
    if getattr(session_mod._io_recvfrom, "pft_recv_fix", False):
        return True
    import socket as _socket

    def _io_recvfrom(mysocket, size):
        mysocket = getattr(mysocket, "fd", mysocket)
        try:
            return mysocket.recvfrom(size, _socket.MSG_DONTWAIT)
        except (OSError, _socket.error):
            return None

    _io_recvfrom.pft_recv_fix = True
    _io_recvfrom.pft_original = session_mod._io_recvfrom
    session_mod._io_recvfrom = _io_recvfrom
    return True


def install_pyghmi_fixes(session_mod=None, force=False):
    """All of pft's run-time fixes for pyghmi 1.6.x; True when all are active."""
    woke = install_wakeup_fix(session_mod, force=force)
    if not woke:
        return False
    return install_recv_fix(session_mod)


def forget_stale_login(address, username, password, port, session_mod=None):
    """Drop pyghmi's record of an earlier login to this BMC, if any.

    pyghmi 1.6.x files a session under (bmc, userid, password, port, kg) in
    Session.initting_sessions while it logs in, but removes it with the
    userid and password as bytes, so the str-keyed entry stays. The next
    Command() for the same BMC in the same process then gets that old session
    back flagged "logging" and waits forever (a second run in one process),
    or gets a broken session back and can never log in again (a BMC that
    went away and came back). pft serialises requests per node, so no login
    for this BMC is in progress when it is called.
    """
    session_mod = session_mod or pyghmi_session
    if session_mod is None:
        return
    session_mod.Session.initting_sessions.pop((address, username, password, port, None), None)


def remove_wakeup_fix(session_mod=None):
    """Undo :func:`install_wakeup_fix` (used by the test that shows the race)."""
    session_mod = session_mod or pyghmi_session
    current = session_mod._io_wait
    if getattr(current, "pft_wakeup_fix", False):
        session_mod._io_wait = current.pft_original


# ---------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------

def _is_glob(text):
    return any(c in text for c in "*?[")


class Rule:
    """One sensor rule: which sensors (name glob and/or type) and thresholds."""

    def __init__(self, spec, index):
        if not isinstance(spec, dict):
            raise HealthError("policy rule #%d must be a dict, got %r" % (index, spec))
        unknown = set(spec) - {"name", "type", "required"} - set(THRESHOLD_KEYS)
        if unknown:
            raise HealthError("policy rule #%d has unknown keys: %s" % (index, ", ".join(sorted(unknown))))
        self.index = index
        self.name = spec.get("name")
        self.type = spec.get("type")
        if self.name is None and self.type is None:
            raise HealthError("policy rule #%d needs 'name' and/or 'type'" % index)
        self.thresholds = {}
        for key in THRESHOLD_KEYS:
            value = spec.get(key)
            if value is None:
                continue
            try:
                self.thresholds[key] = float(value)
            except (TypeError, ValueError):
                raise HealthError("policy rule #%d (%s): %s must be a number, got %r"
                                  % (index, self.label, key, value))
        t = self.thresholds
        if "lower_critical" in t and "lower_warning" in t and t["lower_critical"] > t["lower_warning"]:
            raise HealthError("policy rule #%d (%s): lower_critical %s is above lower_warning %s"
                              % (index, self.label, t["lower_critical"], t["lower_warning"]))
        if "upper_critical" in t and "upper_warning" in t and t["upper_critical"] < t["upper_warning"]:
            raise HealthError("policy rule #%d (%s): upper_critical %s is below upper_warning %s"
                              % (index, self.label, t["upper_critical"], t["upper_warning"]))
        # An exact sensor name is required by default: its absence on a BMC
        # is a discrepancy. A glob or type-only rule is required only if asked.
        default_required = self.name is not None and not _is_glob(self.name)
        self.required = bool(spec.get("required", default_required))

    @property
    def label(self):
        parts = []
        if self.name is not None:
            parts.append("name=%s" % self.name)
        if self.type is not None:
            parts.append("type=%s" % self.type)
        return " ".join(parts)

    def matches(self, name, sensor_type):
        if self.name is not None and not fnmatch.fnmatchcase(name, self.name):
            return False
        if self.type is not None and (sensor_type or "").lower() != self.type.lower():
            return False
        return True

    def evaluate(self, value):
        """(verdict, reason) of a numeric value against this rule's thresholds."""
        t = self.thresholds
        if "upper_critical" in t and value >= t["upper_critical"]:
            return CRITICAL, "%s >= upper_critical %s" % (_fmt(value), _fmt(t["upper_critical"]))
        if "lower_critical" in t and value <= t["lower_critical"]:
            return CRITICAL, "%s <= lower_critical %s" % (_fmt(value), _fmt(t["lower_critical"]))
        if "upper_warning" in t and value >= t["upper_warning"]:
            return WARNING, "%s >= upper_warning %s" % (_fmt(value), _fmt(t["upper_warning"]))
        if "lower_warning" in t and value <= t["lower_warning"]:
            return WARNING, "%s <= lower_warning %s" % (_fmt(value), _fmt(t["lower_warning"]))
        return OK, "within thresholds"


def _fmt(value):
    if value is None:
        return "n/a"
    return ("%.3f" % value).rstrip("0").rstrip(".")


class Policy:
    """Which sensors to watch and how to judge them.

    ``rules``: list of dicts (first matching rule wins). ``use_bmc_thresholds``:
    also (or, without rules, only) judge by the threshold states the BMC
    reports: non-critical -> warning, critical/non-recoverable -> critical.
    """

    def __init__(self, rules=None, use_bmc_thresholds=False):
        self.rules = [Rule(spec, i) for i, spec in enumerate(rules or [])]
        self.use_bmc_thresholds = bool(use_bmc_thresholds)
        if not self.rules and not self.use_bmc_thresholds:
            raise HealthError("policy is empty: give rules and/or use_bmc_thresholds: true")

    def select(self, descriptions):
        """Map the BMC's sensors to rules.

        ``descriptions`` is a list of {name, type}. Returns (watched, missing):
        watched is {sensor name: rule or None}, missing lists the required
        rules that matched no sensor (discrepancies).
        """
        watched = {}
        used = set()
        for desc in descriptions:
            name, stype = desc["name"], desc.get("type")
            rule = next((r for r in self.rules if r.matches(name, stype)), None)
            if rule is not None:
                watched[name] = rule
                used.add(rule.index)
            elif self.use_bmc_thresholds and not self.rules:
                watched[name] = None
        missing = [r for r in self.rules if r.required and r.index not in used]
        return watched, missing

    def evaluate(self, rule, reading):
        """(verdict, reason) for one reading dict {value, unavailable, states, bmc_health}."""
        if reading.get("error"):
            return UNKNOWN, "read failed: %s" % reading["error"]
        if reading.get("unavailable"):
            return UNKNOWN, "sensor reading not available"
        verdict, reason = OK, "ok"
        value = reading.get("value")
        if rule is not None and rule.thresholds:
            if value is None:
                return UNKNOWN, "sensor gave no numeric value"
            verdict, reason = rule.evaluate(value)
        if self.use_bmc_thresholds:
            bmc_verdict = bmc_threshold_verdict(reading)
            if LEVEL[bmc_verdict] > LEVEL[verdict]:
                states = ", ".join(reading.get("states") or []) or bmc_verdict
                verdict, reason = bmc_verdict, "BMC reports %s" % states
        return verdict, reason


# pyghmi's const.Health bits
HEALTH_WARNING = 1
HEALTH_CRITICAL = 2
HEALTH_FAILED = 4


def bmc_threshold_verdict(reading):
    """Verdict from the threshold states the BMC reported for a reading.

    Non-critical thresholds give warning; critical and non-recoverable give
    critical (pyghmi's health bits of the reading).
    """
    health = int(reading.get("bmc_health") or 0)
    if health & (HEALTH_CRITICAL | HEALTH_FAILED):
        return CRITICAL
    if health & HEALTH_WARNING:
        return WARNING
    return OK


# ---------------------------------------------------------------------------
# Hysteresis and trend
# ---------------------------------------------------------------------------

class SensorTrack:
    """Hysteresis and trend for one sensor of one node.

    A level (ok < warning < critical) becomes the confirmed verdict only when
    the last ``k`` samples all agree: the verdict rises to the lowest level
    seen in the last k samples and falls to the highest. ``unknown`` samples
    break a streak; k unknown samples in a row make the verdict unknown.
    Until a first level is confirmed, a non-ok level that is still building
    up is reported as unknown ("pending"), never as ok.
    """

    def __init__(self, k):
        self.k = max(1, int(k))
        self.window = []        # last k raw verdicts
        self.confirmed = None   # confirmed level name, None before the first
        self.unknown_streak = 0
        self.last_reason = None
        self.fired_reason = None
        self.points = []        # (t, value) for the trend
        self.last_value = None
        self.min_value = None
        self.max_value = None
        self.samples = 0
        self.history = []

    def add(self, t, raw, reason, value=None, keep_history=False):
        self.samples += 1
        self.window.append(raw)
        if len(self.window) > self.k:
            self.window.pop(0)
        self.last_reason = reason
        if value is not None:
            self.points.append((t, value))
            self.last_value = value
            self.min_value = value if self.min_value is None else min(self.min_value, value)
            self.max_value = value if self.max_value is None else max(self.max_value, value)
        if keep_history:
            self.history.append({"t": round(t, 3), "value": value, "state": raw})
        if raw == UNKNOWN:
            self.unknown_streak += 1
            return
        self.unknown_streak = 0
        if self.confirmed is None and raw == OK:
            self.confirmed = OK
            self.fired_reason = reason
            return
        if len(self.window) < self.k or UNKNOWN in self.window:
            return
        levels = [LEVEL[v] for v in self.window]
        up, down = min(levels), max(levels)
        current = LEVEL[self.confirmed] if self.confirmed is not None else None
        if current is None:
            self.confirmed = LEVEL_NAME[up]
            self.fired_reason = reason
        elif up > current:
            self.confirmed = LEVEL_NAME[up]
            self.fired_reason = reason
        elif down < current:
            self.confirmed = LEVEL_NAME[down]
            self.fired_reason = reason

    @property
    def verdict(self):
        if self.unknown_streak >= self.k or (self.confirmed is None and self.unknown_streak):
            return UNKNOWN
        if self.confirmed is None:
            return UNKNOWN  # a non-ok level still building up
        return self.confirmed

    @property
    def pending(self):
        """A raw level different from the verdict that is building up, or None."""
        if not self.window:
            return None
        last = self.window[-1]
        if last == self.verdict:
            return None
        count = 0
        for v in reversed(self.window):
            if v != last:
                break
            count += 1
        return {"state": last, "count": count, "needed": self.k}

    @property
    def reason(self):
        verdict = self.verdict
        if verdict == UNKNOWN:
            if self.confirmed is None and self.unknown_streak == 0:
                p = self.pending
                return "%s for %d of %d samples, not yet confirmed (%s)" % (
                    p["state"], p["count"], p["needed"], self.last_reason)
            return self.last_reason
        return self.fired_reason or self.last_reason

    def slope(self):
        """Least-squares slope of value over time (units per second), or None."""
        pts = self.points
        if len(pts) < 2:
            return None
        n = float(len(pts))
        mt = sum(p[0] for p in pts) / n
        mv = sum(p[1] for p in pts) / n
        den = sum((p[0] - mt) ** 2 for p in pts)
        if den <= 0:
            return None
        return sum((p[0] - mt) * (p[1] - mv) for p in pts) / den


# ---------------------------------------------------------------------------
# Reading a BMC
# ---------------------------------------------------------------------------

class NodeUnavailable(Exception):
    """The node's BMC could not be read at all (unreachable, auth, ...)."""

    def __init__(self, reason, permanent=False, pending=False):
        Exception.__init__(self, reason)
        self.reason = reason
        self.permanent = permanent
        # first login still queued or running: no sample yet, not a failed one
        self.pending = pending


def classify_ipmi_error(exc):
    """(reason, permanent) for a pyghmi exception or error text."""
    text = str(exc) or exc.__class__.__name__
    low = text.lower()
    if "password" in low or "unauthorized" in low or "authentication" in low or "username" in low:
        return "authentication failed: %s" % text, True
    if "timeout" in low or "no longer connected" in low or "unable to" in low or "not responding" in low:
        return "BMC unreachable: %s" % text, False
    return "IPMI error: %s" % text, False


def _reading_dict(reading):
    return {
        "value": reading.value,
        "unavailable": bool(getattr(reading, "unavailable", 0)),
        "states": list(reading.states or []),
        "units": reading.units,
        "type": reading.type,
        "bmc_health": int(getattr(reading, "health", 0) or 0),
    }


# IPMI completion codes (IPMI v2.0 spec, table 5-2 and section 33.12)
CC_RESERVATION_CANCELLED = 0xC5
CC_CANNOT_RETURN_BYTES = 0xCA
SDR_LAST_RECORD = 0xFFFF
SDR_CHUNK = 16


def _sdr_entries(records, mfg_id=0, prod_id=0):
    """{sensor name: pyghmi SDREntry} of the readable sensor records."""
    from pyghmi.ipmi import sdr as sdr_mod
    from pyghmi.ipmi.private import constants as event_const
    entries = {}
    for raw in records:
        try:
            entry = sdr_mod.SDREntry(bytearray(raw), event_const, False, mfg_id, prod_id)
        except Exception:  # an odd record must not cost the node its other sensors
            continue
        if entry.sdrtype == sdr_mod.TYPE_SENSOR and entry.readable:
            entries.setdefault(entry.name, entry)
    return entries


def _decode(entries, name, cmd, rsp):
    """A reading dict from a Get Sensor Reading response."""
    code = rsp.get("code")
    if "error" in rsp and code is None:
        return {"error": str(rsp["error"])}
    if code:
        return {"error": "completion code 0x%02x%s" % (code, " (%s)" % rsp["error"] if rsp.get("error") else "")}
    try:
        return _reading_dict(entries[name].decode_sensor_reading(cmd, rsp["data"]))
    except Exception as exc:  # one bad sensor must not abort the node
        return {"error": "cannot decode reading: %s" % exc}


class LanNode:
    """One BMC over IPMI LAN, driven entirely by pyghmi's event loop.

    Login (pyghmi's asynchronous ``onlogon`` mode), the sensor repository and
    the readings are chains of callbacks: nothing here blocks, so one dead
    BMC cannot hold up another, and all BMCs are in flight at once. The
    session stays open across samples.

    Two pyghmi rules are respected: a request is never sent from inside a
    pyghmi callback (after the callback returns pyghmi clears the request
    entry of whatever was sent last, and its reply would be dropped), so
    every continuation goes through ``defer``; and after each reply the
    caller of ``raw_command(callback=...)`` must clear ``incommand``.
    """

    can_async = True

    def __init__(self, target, command_factory=None, clock=time.monotonic):
        self.target = target
        self.name = target["name"]
        self._factory = command_factory
        self._clock = clock
        self.cmd = None
        self.entries = {}
        self.descriptions = None
        self.names = []
        self.gen = 0
        self.busy_since = None

    @property
    def connected(self):
        return self.descriptions is not None

    @property
    def busy(self):
        return self.busy_since is not None

    def reset(self):
        self.cmd = None
        self.entries = {}
        self.descriptions = None

    def abandon(self):
        """Give up on an operation pyghmi never finished; its late callbacks are ignored."""
        self.gen += 1
        self.busy_since = None
        self.reset()

    def select(self, names):
        self.names = [n for n in names if n in self.entries]

    def start(self, prepare, done, defer):
        """Do this sample's work: log in and read the SDR if needed, then read.

        ``done(result)`` gets {sensor: reading} or a NodeUnavailable, once.
        """
        self.gen += 1
        gen = self.gen
        self.busy_since = self._clock()

        def finish(result):
            if gen != self.gen:
                return  # an abandoned operation
            self.busy_since = None
            if isinstance(result, NodeUnavailable):
                self.reset()
            done(result)

        def guard(fn):
            """Run a continuation; any exception ends the operation cleanly."""
            def run(*args):
                if gen != self.gen:
                    return
                try:
                    fn(*args)
                except NodeUnavailable as exc:
                    finish(exc)
                except Exception as exc:
                    finish(NodeUnavailable("internal error: %s: %s" % (exc.__class__.__name__, exc)))
            return run

        def request(netfn, command, data, then, rslun=0):
            session = self.cmd.ipmi_session

            def got(rsp):
                session.incommand = False
                while session.evq:
                    session.evq.popleft().set()
                defer(lambda: guard(then)(rsp))
            try:
                session.raw_command(netfn=netfn, command=command, data=data, rslun=rslun, callback=got)
            except Exception as exc:
                raise NodeUnavailable(classify_ipmi_error(exc)[0])

        def check(rsp):
            if rsp.get("code") == 0xFFFF or ("error" in rsp and rsp.get("code") in (None, 0)):
                raise NodeUnavailable(classify_ipmi_error(rsp.get("error", "timeout"))[0])

        # -- readings ---------------------------------------------------
        def read(i=0, out=None):
            out = {} if out is None else out
            if i == len(self.names):
                finish(out)
                return
            name = self.names[i]
            entry = self.entries[name]

            def got(rsp):
                if rsp.get("code") == 0xFFFF or self.cmd.ipmi_session.broken:
                    raise NodeUnavailable(classify_ipmi_error(rsp.get("error", "timeout"))[0])
                out[name] = _decode(self.entries, name, self.cmd, rsp)
                read(i + 1, out)
            request(4, 0x2D, (entry.sensor_number,), got, rslun=entry.sensor_lun)

        # -- sensor repository ------------------------------------------
        def sdr(ident):
            mfg = prod = 0
            data = ident.get("data") or b""
            if len(data) >= 11:
                mfg = data[6] | (data[7] << 8) | (data[8] << 16)
                prod = data[9] | (data[10] << 8)
            records = []
            state = {"rsv": 0, "recid": 0, "offset": 0, "size": 0xFF, "buf": bytearray(), "next": None}

            def reserve(then):
                def got(rsp):
                    check(rsp)
                    if rsp.get("code"):
                        raise NodeUnavailable("IPMI error: Reserve SDR Repository: completion code 0x%02x"
                                              % rsp["code"])
                    state["rsv"] = rsp["data"][0] | (rsp["data"][1] << 8)
                    then()
                request(0x0A, 0x22, (), got)

            def get():
                st = state
                data = (st["rsv"] & 0xFF, st["rsv"] >> 8, st["recid"] & 0xFF, st["recid"] >> 8,
                        st["offset"], st["size"])
                request(0x0A, 0x23, data, got)

            def got(rsp):
                check(rsp)
                st = state
                code = rsp.get("code")
                if code == CC_CANNOT_RETURN_BYTES and st["size"] == 0xFF:
                    st["size"] = 5                     # header first, then chunks
                    reserve(get)
                    return
                if code == CC_RESERVATION_CANCELLED:
                    reserve(get)
                    return
                if code:
                    raise NodeUnavailable("IPMI error: Get SDR record %d: completion code 0x%02x"
                                          % (st["recid"], code))
                body = rsp["data"]
                if st["next"] is None:
                    st["next"] = body[0] | (body[1] << 8)
                st["buf"].extend(body[2:])
                total = st["buf"][4] + 5 if len(st["buf"]) >= 5 else None
                if total is None or len(st["buf"]) < total:
                    st["offset"] = len(st["buf"])
                    st["size"] = min(SDR_CHUNK, (total or 5) - st["offset"]) if total else 5
                    get()
                    return
                records.append(bytes(st["buf"][:total]))
                if st["next"] == st["recid"]:
                    raise NodeUnavailable("IPMI error: BMC returned SDR record %d as its own successor"
                                          % st["recid"])
                if st["next"] == SDR_LAST_RECORD or len(records) > 4096:
                    self.entries = _sdr_entries(records, mfg, prod)
                    self.descriptions = [{"name": n, "type": e.sensor_type} for n, e in self.entries.items()]
                    prepare(self, self.descriptions)
                    read()
                    return
                st.update(recid=st["next"], next=None, offset=0, buf=bytearray(),
                          size=0xFF if st["size"] == 0xFF else 5)
                get()

            get()

        # -- login --------------------------------------------------------
        def logged_in(response, cmd=None):
            if "error" in response:
                reason, permanent = classify_ipmi_error(response["error"])
                raise NodeUnavailable(reason, permanent)
            request(0x06, 0x01, (), sdr)   # Get Device ID, then the SDR

        if self.connected:
            guard(read)()
            return
        t = self.target
        port = int(t.get("port") or 623)
        factory = self._factory or pyghmi_command.Command

        def on_logon(response, cmd=None):
            defer(lambda: guard(logged_in)(response))

        try:
            forget_stale_login(t["address"], t.get("username"), t.get("password"), port)
            self.cmd = factory(bmc=t["address"], userid=t.get("username"), password=t.get("password"),
                               port=port, onlogon=on_logon)
        except Exception as exc:
            reason, permanent = classify_ipmi_error(exc)
            finish(NodeUnavailable(reason, permanent))


class LocalNode:
    """The in-band BMC of the host the module runs on (/dev/ipmi0), read synchronously."""

    can_async = False

    def __init__(self, target, command_factory=None):
        self.target = target
        self.name = target["name"]
        self._factory = command_factory
        self.cmd = None
        self.entries = {}
        self.descriptions = None
        self.names = []
        self.busy = False

    @property
    def connected(self):
        return self.descriptions is not None

    def connect(self):
        if self.connected:
            return self.descriptions
        try:
            self.cmd = (self._factory or pyghmi_command.Command)()
            sdr = self.cmd.init_sdr()
            entries = {}
            for number in sdr.get_sensor_numbers():
                entry = sdr.sensors[number]
                entries.setdefault(entry.name, entry)
        except Exception as exc:
            self.reset()
            reason, permanent = classify_ipmi_error(exc)
            raise NodeUnavailable("in-band IPMI: %s" % reason, permanent)
        self.entries = entries
        self.descriptions = [{"name": n, "type": e.sensor_type} for n, e in entries.items()]
        return self.descriptions

    def select(self, names):
        self.names = [n for n in names if n in self.entries]

    def read_sync(self):
        """Read each selected sensor on its own; returns {name: reading dict}."""
        out = {}
        for name in self.names:
            entry = self.entries[name]
            try:
                rsp = self.cmd.raw_command(netfn=4, command=0x2D, data=(entry.sensor_number,),
                                           rslun=entry.sensor_lun)
            except Exception as exc:
                self.reset()
                raise NodeUnavailable("in-band IPMI: %s" % classify_ipmi_error(exc)[0])
            out[name] = _decode(self.entries, name, self.cmd, rsp)
        return out

    def reset(self):
        self.cmd = None
        self.entries = {}
        self.descriptions = None


def make_node(target, command_factory=None):
    """The reader for a target: LanNode or LocalNode."""
    if target.get("interface") == "local":
        return LocalNode(target, command_factory)
    return LanNode(target, command_factory)


def pump_pyghmi(timeout):
    """One iteration of pyghmi's event loop, waiting at most ``timeout`` s."""
    pyghmi_session.Session.wait_for_rsp(timeout=max(0.0, timeout))


# ---------------------------------------------------------------------------
# Concurrent sampling with deadlines
# ---------------------------------------------------------------------------

class _Job:
    __slots__ = ("reader", "fn", "result", "done")

    def __init__(self, reader, fn):
        self.reader = reader
        self.fn = fn
        self.result = None
        self.done = threading.Event()


class _LoginFailure:
    """A LAN node's failed logins since its last good answer, and when to log in again."""
    __slots__ = ("reason", "permanent", "failures", "at", "retry_at", "attempt")

    def __init__(self, reason, permanent, failures, at, retry_at, attempt):
        self.reason = reason
        self.permanent = permanent
        self.failures = failures    # failed logins in a row
        self.at = at                # clock() when the latest one was counted
        self.retry_at = retry_at    # no new login before this clock() time
        self.attempt = attempt      # which login (Sampler.login_attempts) was counted last


class _Round:
    """The sample under way, for the answers that arrive through callbacks."""
    __slots__ = ("reading", "background", "results")

    def __init__(self, reading, background, results):
        self.reading = reading
        self.background = background
        self.results = results


class Sampler:
    """One sample of every node, each within a hard deadline.

    LAN nodes run as callback chains on pyghmi's event loop in the calling
    thread: all logged-in BMCs are asked at once and nothing blocks; at most
    ``parallelism`` logins run at once, so a cold start of a large cluster
    does not drown in retransmissions. A login that has been in flight for
    longer than the deadline no longer holds one of those slots: its BMC is
    as good as dead, pyghmi keeps retrying it cheaply, and dead BMCs must not
    keep live ones from logging in. Logins wait in line fairly: nodes never
    tried first, then the least recently tried, so live nodes do not queue
    behind the same dead ones sample after sample. Nodes that can only
    be read synchronously (in-band) run on a bounded pool of daemon threads.
    A node whose earlier request has not come back is reported unreachable
    and gets no new request until it does; one that pyghmi never finishes is
    abandoned after ``abandon_after`` seconds and starts over with a new
    login. Every node is in every sample's result, and a sample never takes
    longer than the deadline (plus one event-loop step of at most ``STEP``
    seconds). Daemon threads never delay the module's exit.

    A LAN login that fails, or is not through within the deadline, puts its
    node in backoff: no new login before ``retry_after`` seconds (default
    ``max(2 x deadline, 5 s)``), doubling with each failed login in a row up
    to ``retry_max`` (60 s); an error marked permanent (wrong credentials)
    waits ``retry_max`` at once, and a good answer ends the backoff. Until
    then the node is reported with its last error and the time of its next
    login in every sample, at no cost to the sample. A login is waited for
    (up to the deadline) only while its node has not failed since its last
    good answer; the retries of a failed node queue behind every such login
    and run in the background: they hold a login slot like any login, and
    their answer counts if it comes in while the sample waits for the
    others, but no sample waits for them. So once each dead BMC has failed
    once, a sample ends as soon as the live nodes have answered. Between
    samples, :meth:`idle` keeps pyghmi's event loop turning while a LAN node
    has something in flight, so retries and late answers finish in real
    time rather than only while a later sample waits for the live nodes.

    ``clock``, ``sleep`` and ``wait(event, timeout)`` are the time functions
    (tests drive the sampler on a fake clock).
    """

    STEP = 0.05          # longest single wait inside a sample, in seconds
    TOLERANCE = 1e-9     # clock arithmetic slack when deciding that a login has used up its deadline

    def __init__(self, parallelism, deadline, pump=None, abandon_after=None, clock=time.monotonic,
                 sleep=time.sleep, wait=None, retry_after=None, retry_max=60.0):
        self.parallelism = max(1, int(parallelism))
        self.deadline = float(deadline)
        self.pump = pump or pump_pyghmi
        self.abandon_after = abandon_after if abandon_after is not None else max(30.0, 5 * self.deadline)
        self.retry_after = float(retry_after) if retry_after is not None else max(2 * self.deadline, 5.0)
        self.retry_max = max(float(retry_max), self.retry_after)
        self.clock = clock
        self.sleep = sleep
        self.wait = wait or (lambda event, timeout: event.wait(timeout))
        self.deferred = collections.deque()
        self.jobs = queue.Queue()
        self.lock = threading.Lock()
        self.workers = 0
        self.outstanding = {}   # name -> _Job of a synchronous reader
        self.last_login = {}    # name -> clock() when its latest login was started
        self.login_attempts = {}   # name -> how many logins were started
        self.in_login = set()   # names of LAN readers whose operation in flight began with a login
        self.failed = {}        # name -> _LoginFailure, until the node answers again
        self._round = None      # the sample under way, or None between samples

    def _worker(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job.result = job.fn(job.reader)
            except NodeUnavailable as exc:
                job.result = exc
            except Exception as exc:  # never let a worker die silently
                job.result = NodeUnavailable("internal error: %s: %s" % (exc.__class__.__name__, exc))
            job.done.set()

    def _submit(self, reader, fn):
        job = _Job(reader, fn)
        self.outstanding[reader.name] = job
        stuck = sum(1 for j in self.outstanding.values() if not j.done.is_set()) - 1
        with self.lock:
            start = max(0, min(self.parallelism, len(self.outstanding)) + stuck - self.workers)
            self.workers += start
        for _ in range(start):
            t = threading.Thread(target=self._worker, name="pft-ipmi-worker")
            t.daemon = True
            t.start()
        self.jobs.put(job)
        return job

    def _run_deferred(self):
        while self.deferred:
            self.deferred.popleft()()

    def logins_holding_slots(self, readers, now):
        """How many login slots are taken: logins in flight for less than the deadline."""
        return sum(1 for r in readers if r.can_async and r.busy and not r.connected
                   and now - r.busy_since < self.deadline - self.TOLERANCE)

    # -- login backoff ------------------------------------------------------------

    def retry_delay(self, failures, permanent=False):
        """Seconds from the ``failures``-th failed login in a row to the next login."""
        if permanent:
            return self.retry_max
        return min(self.retry_max, self.retry_after * 2 ** min(max(failures, 1) - 1, 32))

    def _login_failed(self, name, reason, permanent, now):
        attempt = self.login_attempts.get(name, 0)
        old = self.failed.get(name)
        if old is not None and old.attempt == attempt:
            # counted already when it overran the deadline: the end pyghmi reports is the better reason
            old.reason = reason
            if permanent and not old.permanent:
                old.permanent = True
                old.retry_at = max(old.retry_at, old.at + self.retry_max)
            return
        failures = old.failures + 1 if old is not None else 1
        self.failed[name] = _LoginFailure(reason, permanent, failures, now,
                                          now + self.retry_delay(failures, permanent), attempt)

    def _overran(self, reader, now):
        """Is the reader's login in flight, not through, for the whole deadline or longer?"""
        return (reader.name in self.in_login and reader.busy and not reader.connected
                and now - reader.busy_since >= self.deadline - self.TOLERANCE)

    def _login_timed_out(self, reader, now):
        """Count the reader's login in flight as failed, once (it may still succeed later)."""
        old = self.failed.get(reader.name)
        if old is None or old.attempt != self.login_attempts.get(reader.name, 0):
            self._login_failed(reader.name, "BMC unreachable: login not completed within %ss"
                               % _fmt(self.deadline), False, now)

    def _backoff_result(self, reader, now):
        """A node with failed logins: its last error, and when it is logged into next."""
        failure = self.failed.get(reader.name)
        if failure is None:
            return NodeUnavailable("BMC unreachable: no answer within %ss (earlier request still outstanding)"
                                   % _fmt(self.deadline))
        if reader.busy:
            note = "login attempt under way"
        elif now < failure.retry_at:
            note = "next login attempt in %d s" % max(1, int(math.ceil(failure.retry_at - now - 1e-6)))
        else:
            note = "next login attempt waiting for a free login slot"
        return NodeUnavailable("%s (%s)" % (failure.reason, note), permanent=failure.permanent)

    def _done(self, reader, login):
        """The ``done`` callback of one operation of a LAN reader."""
        name = reader.name

        def done(result):
            now = self.clock()
            failed = isinstance(result, NodeUnavailable)
            if login:
                self.in_login.discard(name)
                if failed:
                    self._login_failed(name, result.reason, result.permanent, now)
            if not failed:
                self.failed.pop(name, None)
            current = self._round
            if current is not None and (name in current.reading or name in current.background):
                current.reading.discard(name)
                current.background.discard(name)
                current.results[name] = self._backoff_result(reader, now) if login and failed else result
        return done

    def _start(self, reader, prepare, now):
        login = not reader.connected
        if login:
            self.last_login[reader.name] = now
            self.login_attempts[reader.name] = self.login_attempts.get(reader.name, 0) + 1
            self.in_login.add(reader.name)
        reader.start(prepare, self._done(reader, login), self.deferred.append)

    # -- sampling -----------------------------------------------------------------

    def sample(self, readers, prepare):
        """Sample every reader once; returns {name: {sensor: reading} or NodeUnavailable}."""
        results = {}
        reading = set()     # names of asynchronous readers whose answer this sample waits for
        background = set()  # asynchronous readers with a login this sample does not wait for
        self._round = _Round(reading, background, results)
        try:
            self._sample(readers, prepare, results, reading, background)
        finally:
            self._round = None   # answers that come later are dropped; the node stays busy until then
        return results

    def _sample(self, readers, prepare, results, reading, background):
        if any(r.can_async and r.busy for r in readers):
            # take in what came since the last sample (without waiting) before judging who is late
            self.pump(0)
            self._run_deferred()
        now = self.clock()
        end = now + self.deadline
        waiting = {}     # name -> _Job of a synchronous reader
        by_name = {r.name: r for r in readers}
        late = NodeUnavailable("BMC unreachable: no answer within %ss (earlier request still outstanding)"
                               % _fmt(self.deadline))
        not_through = NodeUnavailable("BMC unreachable: login not completed within %ss" % _fmt(self.deadline),
                                      pending=True)

        def sync_job(reader):
            prepare(reader, reader.connect())
            return reader.read_sync()

        logins = collections.deque()    # first logins (no failure since the last answer): waited for
        retries = collections.deque()   # logins of failed nodes whose backoff is over: not waited for

        def admit(now):
            if not (logins or retries):
                return
            free = self.parallelism - self.logins_holding_slots(readers, now)
            while free > 0 and (logins or retries):
                if logins:
                    reader = logins.popleft()
                    reading.add(reader.name)
                else:
                    reader = retries.popleft()
                    background.add(reader.name)
                self._start(reader, prepare, now)
                free -= 1

        first, again = [], []
        for index, reader in enumerate(readers):
            name = reader.name
            if reader.can_async:
                if reader.busy and now - reader.busy_since > self.abandon_after:
                    if name in self.in_login and not reader.connected:
                        self._login_timed_out(reader, now)
                    self.in_login.discard(name)
                    reader.abandon()
                if reader.busy:
                    if name in self.in_login:
                        # a login started in an earlier sample and still under way
                        if self._overran(reader, now):
                            self._login_timed_out(reader, now)
                        if name in self.failed:
                            background.add(name)
                        else:
                            reading.add(name)   # a first login admitted late: it keeps its own deadline
                    else:
                        results[name] = late
                    continue
                if not reader.connected:
                    failure = self.failed.get(name)
                    # never tried first, then the least recently tried; the list order breaks ties
                    entry = ((name in self.last_login, self.last_login.get(name, 0.0), index), reader)
                    if failure is None:
                        first.append(entry)
                    elif now >= failure.retry_at:
                        again.append(entry)
                    else:
                        results[name] = self._backoff_result(reader, now)
                    continue
                reading.add(name)
                self._start(reader, prepare, now)
            else:
                old = self.outstanding.get(name)
                if old is not None and not old.done.is_set():
                    results[name] = late
                    continue
                waiting[name] = self._submit(reader, sync_job)
        for queued, line in ((first, logins), (again, retries)):
            queued.sort(key=lambda entry: entry[0])
            line.extend(entry[1] for entry in queued)
        admit(now)
        self._run_deferred()

        while True:
            for name, job in list(waiting.items()):
                if job.done.is_set():
                    del waiting[name]
                    results[name] = job.result
            now = self.clock()
            for name in list(reading):
                reader = by_name[name]
                if self._overran(reader, now):
                    # the login used up its deadline: it fails for now and goes on in the background
                    self._login_timed_out(reader, now)
                    reading.discard(name)
                    background.add(name)
                    results[name] = not_through
            remaining = end - now
            if remaining <= 0:
                break
            admit(now)
            if not (waiting or reading or logins):
                break
            step = min(remaining, self.STEP)
            if reading or (logins and any(r.can_async and r.busy for r in readers)):
                # answers for this sample, or logins of earlier samples that hold the slots
                # the queued ones wait for: either way pyghmi's event loop must turn
                self.pump(step)
                self._run_deferred()
            elif waiting:
                self.wait(next(iter(waiting.values())).done, step)
            else:
                self.sleep(step)   # not reached as far as we know; bounded all the same
        timeout = NodeUnavailable("BMC unreachable: no answer within %ss" % _fmt(self.deadline))
        for name in waiting:
            results[name] = timeout
        for name in reading:
            reader = by_name[name]
            if reader.can_async and not reader.connected:
                if self._overran(reader, now):
                    self._login_timed_out(reader, now)
                results[name] = not_through
            else:
                results[name] = timeout
        for name in background:
            if name not in results:
                results[name] = self._backoff_result(by_name[name], now)
        for reader in logins:
            results[reader.name] = NodeUnavailable(
                "not sampled yet: login still queued after %ss (%d logins at once; raise parallelism)"
                % (_fmt(self.deadline), self.parallelism), pending=True)
        for reader in retries:
            results[reader.name] = self._backoff_result(reader, now)

    def idle(self, seconds, readers, clock=None, sleep=None):
        """Pause ``seconds`` between samples, turning pyghmi's event loop while a LAN reader is busy.

        Logins that no sample waits for (retries of failed BMCs, logins past
        their deadline) and answers that came too late then go on as they
        would inside a sample. ``clock`` and ``sleep`` default to the
        sampler's; ``pump`` must move ``clock`` on.
        """
        clock = clock or self.clock
        sleep = sleep or self.sleep
        end = clock() + seconds
        while True:
            remaining = end - clock()
            if remaining <= 0:
                return
            if not any(r.can_async and r.busy for r in readers):
                sleep(remaining)
                return
            self.pump(min(remaining, self.STEP))
            self._run_deferred()

    def close(self):
        with self.lock:
            n = self.workers
        for _ in range(n):
            self.jobs.put(None)


# ---------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------

def _bmc_key(address, port):
    """(address, port) of a BMC in one spelling, so that the same BMC compares equal."""
    text = address.strip()
    try:
        text = str(ipaddress.ip_address(text))
    except ValueError:
        text = text.lower().rstrip(".")
    return text, port


def _and_join(names):
    names = list(names)
    if len(names) < 2:
        return "".join(names)
    return "%s and %s" % (", ".join(names[:-1]), names[-1])


def _check_target(name, t, interface):
    """(problem, port): why the node's own BMC settings are unusable (or None), and its port.

    The reason names the node and never quotes the password.
    """
    if interface not in ("lan", "local"):
        return "target %s: interface must be lan or local, got %r" % (name, interface), None
    if interface == "local":
        return None, None
    address = t.get("address")
    if address is None or not str(address).strip():
        return "inventory: bmc_address is not set for %s (no address for its BMC)" % name, None
    if not t.get("username"):
        return "inventory: bmc_username is not set for %s (no BMC user, and no default username)" % name, None
    if t.get("password") is None:
        return ("inventory: bmc_password is not set for %s (no BMC password, and no default password; "
                "set it from vault or the environment)" % name), None
    raw = t.get("port")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, 623
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        port = raw if isinstance(raw, int) else int(str(raw).strip())
    except (TypeError, ValueError):
        return "inventory: bmc_port of %s must be an integer, got %r" % (name, raw), None
    if not 0 < port < 65536:
        return "inventory: bmc_port %d of %s is out of range (1-65535)" % (port, name), None
    return None, port


def validate_targets(targets):
    """Check node entries; returns them normalised. Errors name the node.

    A list that cannot be used at all raises HealthError: it is empty, or an
    entry is not a dict, has no name, or repeats a name. A node whose own BMC
    settings are unusable (no address, user or password, a bad port or
    interface) or whose BMC (address and port) another node also claims is
    kept, with ``invalid`` set to the reason: it is reported unknown and never
    sampled, and the other nodes are watched as usual. Sampling two nodes
    through one BMC would judge one node by the other's sensors.
    """
    if not targets:
        raise HealthError("targets is empty: give at least one node")
    seen = set()
    out = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise HealthError("targets[%d] must be a dict, got %r" % (i, type(t).__name__))
        name = t.get("name")
        if not name:
            raise HealthError("targets[%d] has no name" % i)
        if name in seen:
            raise HealthError("target %s is listed twice" % name)
        seen.add(name)
        interface = t.get("interface") or "lan"
        entry = dict(t, interface=interface)
        entry.pop("invalid", None)
        problem, port = _check_target(name, t, interface)
        if problem is not None:
            entry["invalid"] = problem
        elif interface == "lan":
            entry["address"] = str(t["address"]).strip()
            entry["port"] = port
        out.append(entry)
    # one BMC, one node: every node that shares a BMC with another is refused, each naming all of them
    by_bmc = collections.OrderedDict()
    for entry in out:
        if entry.get("invalid"):
            continue
        if entry["interface"] == "local":
            key = ("local",)
        else:
            key = _bmc_key(entry["address"], entry["port"])
        by_bmc.setdefault(key, []).append(entry)
    for key, entries in by_bmc.items():
        if len(entries) < 2:
            continue
        names = _and_join(e["name"] for e in entries)
        if key == ("local",):
            reason = ("inventory: %s all read the in-band BMC (/dev/ipmi0) of the host the module runs on; "
                      "none of them is sampled" % names)
        else:
            reason = ("inventory: %s have the same BMC %s:%d; %s sampled (fix bmc_address or bmc_port)"
                      % (names, entries[0]["address"], entries[0]["port"],
                         "neither is" if len(entries) == 2 else "none of them is"))
        for e in entries:
            e["invalid"] = reason
    return out


def _stop_level(stop_on):
    if stop_on in (None, "never", "none"):
        return None
    if stop_on not in LEVEL:
        raise HealthError("stop_on must be warning, critical or never, got %r" % stop_on)
    return LEVEL[stop_on]


class NodeState:
    def __init__(self, target, k):
        self.target = target
        self.name = target["name"]
        self.k = k
        self.tracks = {}
        self.rules = {}
        self.discrepancies = []
        self.node_error = None
        self.node_error_pending = False
        self.permanent_error = None
        self.selected = False
        self.bmc_sensors = None   # how many sensors the BMC has, once its repository is read
        self.reads = 0
        if target.get("invalid"):
            # a bad inventory entry: reported unknown, never sampled
            self.permanent_error = self.node_error = target["invalid"]

    def track(self, sensor):
        if sensor not in self.tracks:
            self.tracks[sensor] = SensorTrack(self.k)
        return self.tracks[sensor]


def _node_result(state, policy, keep_history):
    sensors = {}
    worst = OK
    fired = None
    for name in sorted(state.tracks):
        tr = state.tracks[name]
        rule = state.rules.get(name)
        slope = tr.slope()
        entry = {
            "verdict": tr.verdict,
            "reason": tr.reason,
            "value": tr.last_value,
            "min": tr.min_value,
            "max": tr.max_value,
            "trend_per_min": None if slope is None else round(slope * 60.0, 4),
            "samples": tr.samples,
            "rule": rule.label if rule is not None else ("bmc_thresholds" if policy.use_bmc_thresholds else None),
            "pending": tr.pending,
        }
        if keep_history:
            entry["history"] = tr.history
        sensors[name] = entry
        if RANK[tr.verdict] > RANK[worst]:
            worst = tr.verdict
            fired = name
    for miss in state.discrepancies:
        if RANK[UNKNOWN] > RANK[worst]:
            worst = UNKNOWN
            fired = None
    result = {
        "verdict": worst,
        "sensors": sensors,
        "discrepancies": list(state.discrepancies),
        "samples": state.reads,
    }
    node_error = state.permanent_error or state.node_error
    if node_error and not state.tracks:
        result["verdict"] = UNKNOWN
    # the BMC was read, but the policy watches none of its sensors: no evidence, so not ok
    watches_nothing = state.selected and not state.rules
    if watches_nothing:
        result["verdict"] = UNKNOWN
    result["fired"] = None
    if fired is not None and result["verdict"] in (WARNING, CRITICAL):
        entry = sensors[fired]
        result["fired"] = {"sensor": fired, "rule": entry["rule"], "value": entry["value"]}
        result["reason"] = "%s: %s" % (fired, entry["reason"])
    elif node_error and result["verdict"] == UNKNOWN:
        result["reason"] = node_error
    elif watches_nothing:
        count = state.bmc_sensors or 0
        result["reason"] = "no sensor on the BMC matches the health rules (%d sensor%s on the BMC)" % (
            count, "" if count == 1 else "s")
    elif state.discrepancies:
        result["reason"] = "requested sensors missing on the BMC: %s" % ", ".join(state.discrepancies)
    elif fired is not None:
        result["reason"] = "%s: %s" % (fired, sensors[fired]["reason"])
    else:
        result["reason"] = "all %d watched sensors within thresholds" % len(sensors)
    if state.node_error:
        result["error"] = state.node_error
    return result


def run_health(targets, policy, samples=1, interval=1.0, window=None, stop_on=None,
               hysteresis=1, timeout=3.0, parallelism=32, keep_history=False,
               node_factory=None, pump=None, after_sample=None, clock=time.monotonic, sleep=time.sleep,
               retry_after=None, retry_max=60.0):
    """Sample every node's sensors and return the per-node verdicts.

    Either ``samples`` (a count) or ``window`` (seconds) bounds the run;
    ``stop_on`` (warning/critical) ends it as soon as any node's confirmed
    verdict reaches that level. ``timeout`` is the hard deadline per node and
    sample. A BMC whose login failed is logged into again after
    ``retry_after`` seconds (default ``max(2 x timeout, 5)``), doubling up to
    ``retry_max`` (see :class:`Sampler`); until then it is reported unknown
    with its last error. ``node_factory(target)`` makes the node reader and
    ``pump`` runs one event-loop step; ``clock`` and ``sleep`` time the run
    and the sampler (tests inject fakes; a fake ``pump`` must move a fake
    ``clock`` on). ``after_sample(n)`` is called after sample n (1-based),
    before the pause.
    """
    targets = validate_targets(targets)
    if hysteresis < 1:
        raise HealthError("hysteresis must be >= 1, got %r" % hysteresis)
    if interval < 0:
        raise HealthError("interval must be >= 0, got %r" % interval)
    if timeout <= 0:
        raise HealthError("timeout must be > 0, got %r" % timeout)
    if window is not None and window <= 0:
        raise HealthError("window must be > 0 seconds, got %r" % window)
    if window is None and samples < 1:
        raise HealthError("samples must be >= 1, got %r" % samples)
    if retry_after is not None and not retry_after > 0:
        raise HealthError("retry_after must be > 0 seconds, got %r" % retry_after)
    if retry_max is None or not retry_max > 0:
        raise HealthError("retry_max must be > 0 seconds, got %r" % retry_max)
    stop_level = _stop_level(stop_on)
    fixes = None
    if node_factory is None:
        fixes = install_pyghmi_fixes()
    factory = node_factory or make_node
    readers = [factory(t) for t in targets if not t.get("invalid")]
    states = {t["name"]: NodeState(t, hysteresis) for t in targets}
    sampler = Sampler(parallelism, timeout, pump=pump, clock=clock, sleep=sleep,
                      retry_after=retry_after, retry_max=retry_max)

    def prepare(reader, descriptions):
        st = states[reader.name]
        if st.permanent_error:
            raise NodeUnavailable(st.permanent_error, permanent=True)
        if not st.selected:
            watched, missing = policy.select(descriptions)
            st.rules = watched
            st.discrepancies = [r.name or r.label for r in missing]
            st.bmc_sensors = len(descriptions)
            st.selected = True
        reader.select(sorted(st.rules))

    start = clock()
    stopped_early = None
    n = 0
    sweep_times = []
    try:
        while readers:   # no node to sample when every entry is a bad one
            t0 = clock()
            results = sampler.sample(readers, prepare)
            sweep_times.append(clock() - t0)
            n += 1
            t = t0 - start
            for name, res in results.items():
                st = states[name]
                st.reads += 1
                if isinstance(res, NodeUnavailable):
                    if not (res.pending and st.node_error and not st.node_error_pending):
                        # a login still queued or under way tells nothing new: an earlier
                        # failure (BMC unreachable, ...) stays the reason
                        st.node_error = res.reason
                        st.node_error_pending = res.pending
                    if res.permanent:
                        st.permanent_error = res.reason
                    if res.pending and not st.tracks:
                        st.reads -= 1
                        continue  # first login still under way: no data yet, not a failed sample
                    for sensor in (st.rules or {}):
                        st.track(sensor).add(t, UNKNOWN, res.reason, keep_history=keep_history)
                    continue
                st.node_error = None
                for sensor, reading in res.items():
                    verdict, reason = policy.evaluate(st.rules.get(sensor), reading)
                    value = reading.get("value")
                    if reading.get("unavailable") or reading.get("error"):
                        value = None
                    st.track(sensor).add(t, verdict, reason, value, keep_history=keep_history)
            if after_sample is not None:
                after_sample(n)
            if stop_level is not None:
                hit = [name for name, st in states.items()
                       if any(LEVEL.get(tr.verdict, -1) >= stop_level for tr in st.tracks.values())]
                if hit:
                    stopped_early = {"nodes": sorted(hit), "after_samples": n, "at": round(clock() - start, 3)}
                    break
            if window is None:
                if n >= samples:
                    break
            elif t0 - start + interval >= window:
                break  # the next sample would start outside the window
            next_at = t0 + interval
            delay = next_at - clock()
            if delay > 0:
                # logins and answers no sample waits for go on meanwhile
                sampler.idle(delay, readers)
    finally:
        sampler.close()
    nodes = {name: _node_result(st, policy, keep_history) for name, st in states.items()}
    summary = {v: sorted(name for name, r in nodes.items() if r["verdict"] == v) for v in VERDICTS}
    return {
        "nodes": nodes,
        "summary": summary,
        "samples": n,
        "elapsed": round(clock() - start, 3),
        "sweep_seconds": {
            "min": round(min(sweep_times), 4) if sweep_times else 0.0,
            "median": round(sorted(sweep_times)[len(sweep_times) // 2], 4) if sweep_times else 0.0,
            "max": round(max(sweep_times), 4) if sweep_times else 0.0,
        },
        "stopped_early": stopped_early,
        "pyghmi_fixes": fixes,
    }

