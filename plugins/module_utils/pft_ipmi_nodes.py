# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading one node's BMC over IPMI: its session, its sensor repository, its readings.

* :class:`LanNode` drives one BMC over IPMI LAN (login, sensor repository,
  readings) as callbacks on pyghmi's event loop, sensor by sensor, so one bad
  sensor does not abort the node and one dead BMC blocks nobody.
* :class:`LocalNode` reads the in-band BMC (/dev/ipmi0).
* :class:`NodeUnavailable` is how a node says it could not be read at all.
"""

from __future__ import absolute_import, division, print_function

import time

from ansible.module_utils.pft_ipmi_pyghmi import forget_stale_login, pyghmi_command

__metaclass__ = type


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
            raise NodeUnavailable("in-band IPMI: %s" % reason, permanent) from exc
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

