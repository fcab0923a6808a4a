# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading one node's BMC over IPMI: its session, its sensor repository, its readings.

* :class:`LanNode` drives one BMC over IPMI LAN (login, sensor repository,
  readings) as callbacks on pyghmi's event loop, sensor by sensor, so one bad
  sensor does not abort the node and one dead BMC blocks nobody; one sample's
  work is a :class:`SensorOperation` (a :class:`BmcOperation`, which other
  work on a BMC, such as chassis power, builds on too), and the sensor
  repository is read by an :class:`SdrReader`.
* :class:`LocalNode` reads the in-band BMC (/dev/ipmi0).
* :class:`NodeUnavailable` is how a node says it could not be read at all.
"""

from __future__ import absolute_import, division, print_function

import time

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.pft_ipmi_pyghmi import answered, forget_stale_login, pyghmi_command

__metaclass__ = type


class NodeUnavailable(Exception):
    """The node's BMC could not be read at all (unreachable, auth, ...)."""

    def __init__(self, reason, permanent=False, pending=False):
        Exception.__init__(self, reason)
        self.reason = reason
        self.permanent = permanent
        # first login still queued or running: no sample yet, not a failed one
        self.pending = pending


# The modules' default BMC credentials (doc fragment pft.bmc_credentials): the inventory's, else the environment's.
BMC_CREDENTIAL_ARGS = dict(
    username=dict(type="str", fallback=(env_fallback, ["PFT_BMC_USERNAME"])),
    password=dict(type="str", no_log=True, fallback=(env_fallback, ["PFT_BMC_PASSWORD"])),
)


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


# A full sensor record's thresholds (IPMI v2.0 table 43-1; pyghmi's entry bytes are the record's from
# byte 5): the readable-threshold mask at entry[13] (bit 5 UNR ... bit 0 LNC) and the raw thresholds at
# entry[31:37] (UNR, UC, UNC, LNR, LC, LNC). Checked against ipmi_sim's records of the testbed's
# sensors (pft_testbed.bmc: unr 95 degC, FAN lnr 300 RPM at m=60, 12V's four lines at m=6, r=-2).
THRESHOLD_NAMES = ("unr", "uc", "unc", "lnr", "lc", "lnc")


def sdr_thresholds(entry, raw):
    """{unr, uc, unc, lnr, lc, lnc: value} a full sensor record says its BMC reads, in engineering
    units ({} for other records, and for non-linear sensors whose factors need a command)."""
    try:
        if raw[3] != 1 or entry.linearization > 11:
            return {}
        body = raw[5:]
        mask = body[13]
        out = {}
        for bit, name in zip(range(5, -1, -1), THRESHOLD_NAMES):
            if mask & (1 << bit):
                value = body[31 + (5 - bit)]
                if entry.numeric_format == 1 and value & 0x80:      # one's complement
                    value = -((~value) & 0x7F)
                elif entry.numeric_format == 2 and value & 0x80:    # two's complement
                    value -= 0x100
                out[name] = round(entry.decode_value(None, value), 6)
        return out
    except (AttributeError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return {}


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
            entry.pft_thresholds = sdr_thresholds(entry, bytearray(raw))
            entries.setdefault(entry.name, entry)
    return entries


def describe(entries):
    """The sampler's sensor descriptions: name, type, and the thresholds the SDR gives."""
    return [{"name": n, "type": e.sensor_type, "thresholds": getattr(e, "pft_thresholds", {}) or {}}
            for n, e in entries.items()]


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



def check_reply(rsp):
    """Raise NodeUnavailable when a request got no answer at all (timeout, broken session)."""
    if rsp.get("code") == 0xFFFF or ("error" in rsp and rsp.get("code") in (None, 0)):
        raise NodeUnavailable(classify_ipmi_error(rsp.get("error", "timeout"))[0])


def _manufacturer(ident):
    """(manufacturer id, product id) from a Get Device ID response, 0 when it is too short."""
    mfg = prod = 0
    data = ident.get("data") or b""
    if len(data) >= 11:
        mfg = data[6] | (data[7] << 8) | (data[8] << 16)
        prod = data[9] | (data[10] << 8)
    return mfg, prod


class SdrReader:
    """Reads a BMC's sensor data repository (SDR), record by record, one request at a time.

    Its states, in :attr:`state`:

    * ``READING``: a Get SDR request for (a part of) the current record is out.
      The first try asks for the whole record (``size`` 0xFF) without a
      reservation; a BMC that cannot return that many bytes is then asked for
      the 5-byte header and chunks of :data:`SDR_CHUNK` bytes, which need a
      reservation.
    * ``RESERVING``: a Reserve SDR Repository request is out, because the
      reading switched to parts or the BMC cancelled the reservation; then
      the same part is asked for again.
    * ``DONE``: the last record (successor 0xFFFF, or more than 4096 records)
      is in; ``finished(records, manufacturer id, product id)`` has been called.

    ``request(netfn, command, data, then)`` sends a request and runs
    ``then(response)`` on its answer; a failed step raises NodeUnavailable.
    """

    READING = "reading"
    RESERVING = "reserving"
    DONE = "done"

    MAX_RECORDS = 4096
    WHOLE_RECORD = 0xFF
    HEADER = 5

    def __init__(self, request, ident, finished):
        self.request = request
        self.finished = finished
        self.mfg, self.prod = _manufacturer(ident)
        self.records = []
        self.state = None
        self.reservation = 0
        self.record_id = 0
        self.offset = 0
        self.size = self.WHOLE_RECORD
        self.buf = bytearray()
        self.next_id = None    # the current record's successor, once its first part is in

    def start(self):
        self._get()

    # -- RESERVING ----------------------------------------------------------

    def _reserve(self):
        self.state = self.RESERVING
        self.request(0x0A, 0x22, (), self._on_reservation)

    def _on_reservation(self, rsp):
        check_reply(rsp)
        if rsp.get("code"):
            raise NodeUnavailable("IPMI error: Reserve SDR Repository: completion code 0x%02x" % rsp["code"])
        self.reservation = rsp["data"][0] | (rsp["data"][1] << 8)
        self._get()

    # -- READING ------------------------------------------------------------

    def _get(self):
        self.state = self.READING
        data = (self.reservation & 0xFF, self.reservation >> 8, self.record_id & 0xFF, self.record_id >> 8,
                self.offset, self.size)
        self.request(0x0A, 0x23, data, self._on_part)

    def _on_part(self, rsp):
        check_reply(rsp)
        code = rsp.get("code")
        if code == CC_CANNOT_RETURN_BYTES and self.size == self.WHOLE_RECORD:
            self.size = self.HEADER                     # header first, then chunks
            self._reserve()
            return
        if code == CC_RESERVATION_CANCELLED:
            self._reserve()
            return
        if code:
            raise NodeUnavailable("IPMI error: Get SDR record %d: completion code 0x%02x" % (self.record_id, code))
        body = rsp["data"]
        if self.next_id is None:
            self.next_id = body[0] | (body[1] << 8)
        self.buf.extend(body[2:])
        total = self.buf[4] + self.HEADER if len(self.buf) >= self.HEADER else None
        if total is None or len(self.buf) < total:
            self.offset = len(self.buf)
            self.size = min(SDR_CHUNK, (total or self.HEADER) - self.offset) if total else self.HEADER
            self._get()
            return
        self._record_done(total)

    def _record_done(self, total):
        self.records.append(bytes(self.buf[:total]))
        if self.next_id == self.record_id:
            raise NodeUnavailable("IPMI error: BMC returned SDR record %d as its own successor" % self.record_id)
        if self.next_id == SDR_LAST_RECORD or len(self.records) > self.MAX_RECORDS:
            self.state = self.DONE
            self.finished(self.records, self.mfg, self.prod)
            return
        self.record_id = self.next_id
        self.next_id = None
        self.offset = 0
        self.buf = bytearray()
        self.size = self.WHOLE_RECORD if self.size == self.WHOLE_RECORD else self.HEADER
        self._get()


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
    caller of ``raw_command(callback=...)`` must clear ``incommand`` (:func:`pft_ipmi_pyghmi.answered`).
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
        self.begin(SensorOperation, prepare, done, defer)

    def begin(self, operation, *args):
        """Start ``operation(self, *args)`` (a :class:`BmcOperation`) as the node's current one."""
        self.gen += 1
        self.busy_since = self._clock()
        op = operation(self, *args)
        op.start()
        return op


class BmcOperation:
    """One piece of work on a LanNode: log in if needed, then a chain of requests.

    Every step after the first is a continuation run through ``defer`` and
    :meth:`run`: any exception ends the operation with a NodeUnavailable. A
    newer operation on the node (or ``abandon``) makes this one stale: its
    late continuations do nothing and it never reports. A subclass says what
    follows the login (:meth:`after_login`) and what an already connected node
    does (:meth:`resume`); it ends with :meth:`finish`.
    """

    def __init__(self, node, done, defer):
        self.node = node
        self.gen = node.gen
        self.done = done
        self.defer = defer

    @property
    def stale(self):
        return self.gen != self.node.gen

    def finish(self, result):
        if self.stale:
            return  # an abandoned operation
        self.node.busy_since = None
        if isinstance(result, NodeUnavailable):
            self.node.reset()
        self.done(result)

    def run(self, fn, *args):
        """Run a continuation; any exception ends the operation cleanly."""
        if self.stale:
            return
        try:
            fn(*args)
        except NodeUnavailable as exc:
            self.finish(exc)
        except Exception as exc:
            self.finish(NodeUnavailable("internal error: %s: %s" % (exc.__class__.__name__, exc)))

    def request(self, netfn, command, data, then, rslun=0):
        """Send one request; ``then(response)`` runs, deferred and guarded, on its answer."""
        session = self.node.cmd.ipmi_session

        def got(rsp):
            answered(session)
            self.defer(lambda: self.run(then, rsp))
        try:
            session.raw_command(netfn=netfn, command=command, data=data, rslun=rslun, callback=got)
        except Exception as exc:
            raise NodeUnavailable(classify_ipmi_error(exc)[0]) from exc

    # -- login ----------------------------------------------------------------

    def start(self):
        node = self.node
        if node.connected:
            self.run(self.resume)
            return
        t = node.target
        port = int(t.get("port") or 623)
        factory = node._factory or pyghmi_command.Command
        try:
            forget_stale_login(t["address"], t.get("username"), t.get("password"), port)
            node.cmd = factory(bmc=t["address"], userid=t.get("username"), password=t.get("password"),
                               port=port, onlogon=self.on_logon)
        except Exception as exc:
            reason, permanent = classify_ipmi_error(exc)
            self.finish(NodeUnavailable(reason, permanent))

    def on_logon(self, response, cmd=None):
        self.defer(lambda: self.run(self.logged_in, response))

    def logged_in(self, response):
        if "error" in response:
            reason, permanent = classify_ipmi_error(response["error"])
            raise NodeUnavailable(reason, permanent)
        self.after_login()

    def resume(self):
        raise NotImplementedError

    def after_login(self):
        raise NotImplementedError


class SensorOperation(BmcOperation):
    """One sample's work: log in and read the SDR if needed, then read the selected sensors."""

    def __init__(self, node, prepare, done, defer):
        super().__init__(node, done, defer)
        self.prepare = prepare
        self.index = 0      # the next of node.names to read
        self.out = {}       # {sensor: reading} read so far

    def resume(self):
        self.read_next()

    def after_login(self):
        self.request(0x06, 0x01, (), self.read_sdr)   # Get Device ID, then the SDR

    # -- sensor repository --------------------------------------------------

    def read_sdr(self, ident):
        SdrReader(self.request, ident, self.sdr_read).start()

    def sdr_read(self, records, mfg, prod):
        node = self.node
        node.entries = _sdr_entries(records, mfg, prod)
        node.descriptions = describe(node.entries)
        self.prepare(node, node.descriptions)
        self.read_next()

    # -- readings -------------------------------------------------------------

    def read_next(self):
        node = self.node
        if self.index == len(node.names):
            self.finish(self.out)
            return
        name = node.names[self.index]
        entry = node.entries[name]
        self.request(4, 0x2D, (entry.sensor_number,), lambda rsp: self.got_reading(name, rsp),
                     rslun=entry.sensor_lun)

    def got_reading(self, name, rsp):
        node = self.node
        if rsp.get("code") == 0xFFFF or node.cmd.ipmi_session.broken:
            raise NodeUnavailable(classify_ipmi_error(rsp.get("error", "timeout"))[0])
        self.out[name] = _decode(node.entries, name, node.cmd, rsp)
        self.index += 1
        self.read_next()


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
            raise NodeUnavailable("in-band IPMI: %s" % reason, permanent) from exc
        self.entries = entries
        self.descriptions = describe(entries)
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
                raise NodeUnavailable("in-band IPMI: %s" % classify_ipmi_error(exc)[0]) from exc
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

