# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Chassis power through the BMC, within a hard deadline: the read, and the fence.

A fence powers a node off through its BMC and confirms it off through the BMC, before anything of
the node is restored elsewhere (docs/recovery.md). Two things make it safe:

* **A deadline that holds.** Each BMC gets ``deadline`` seconds of wall clock for all of it: the
  login, Get Chassis Status, Chassis Control (power down) and the status polls after it. Nothing
  blocks: the requests are callbacks on pyghmi's event loop (as the sampler's,
  :class:`pft_ipmi_nodes.BmcOperation`), turned by :func:`pft_ipmi_pyghmi.pump_pyghmi` until every
  BMC has answered or the deadline has passed. Then the work is abandoned, and nothing of it runs
  later: the process that asked is the one that pumps. (``community.general.ipmi_power`` cannot
  give this: its ``timeout`` counts status polls after the command, and neither bounds the login;
  docs/recovery.md has the measurements.)
* **Saying exactly what is known.** The answer per BMC is the power it last reported (``on``,
  ``off``) or ``unreachable``. For a fence it also says whether the power-down was sent
  (``sent_off``) and whether the BMC then reported the chassis off (``confirmed_off``). A fence is
  confirmed only by a status read after the command, or by a BMC that already reported off.
  ``sent_off`` without ``confirmed_off`` means the node may be going down or not: restore nothing.

:func:`chassis` does either for many BMCs at once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.module_utils.pft_ipmi_nodes import BmcOperation, LanNode, NodeUnavailable, check_reply
from ansible.module_utils.pft_ipmi_pyghmi import install_pyghmi_fixes, pump_pyghmi

CHASSIS = 0x00                 # netfn
GET_CHASSIS_STATUS = 0x01
CHASSIS_CONTROL = 0x02
POWER_DOWN = 0x00              # Chassis Control's data byte: power down (hard off)
ACTIONS = ("status", "off")


def power_of(rsp):
    """``on`` or ``off`` from a Get Chassis Status answer (byte 1, bit 0: power is on)."""
    check_reply(rsp)
    code = rsp.get("code")
    if code not in (None, 0):
        raise NodeUnavailable("Get Chassis Status answered completion code 0x%02x" % code)
    data = rsp.get("data") or []
    if not data:
        raise NodeUnavailable("Get Chassis Status answered no data")
    return "on" if data[0] & 0x01 else "off"


class ChassisOperation(BmcOperation):
    """Read the chassis power; with action ``off``, power it down and poll until it reports off."""

    def __init__(self, node, action, poll_s, done, defer):
        super().__init__(node, done, defer)
        self.action = action
        self.poll_s = poll_s
        self.power = None           # the last power the BMC reported
        self.sent_off = False       # the power down went out (answered or not: it may have reached the BMC)
        self.polls = 0

    def resume(self):
        self.status()

    def after_login(self):
        self.status()

    def status(self):
        self.request(CHASSIS, GET_CHASSIS_STATUS, (), self.got_status)

    def got_status(self, rsp):
        self.power = power_of(rsp)
        self.polls += 1
        if self.action == "status" or self.power == "off":
            self.finish({"power": self.power, "sent_off": self.sent_off, "confirmed_off": self.power == "off"
                         and self.action == "off", "polls": self.polls})
        elif not self.sent_off:
            self.sent_off = True
            self.request(CHASSIS, CHASSIS_CONTROL, (POWER_DOWN,), self.sent)
        else:
            self.defer(lambda: self.run(self.status), self.poll_s)

    def sent(self, rsp):
        check_reply(rsp)
        if rsp.get("code") not in (None, 0):
            raise NodeUnavailable("Chassis Control (power down) refused: completion code 0x%02x" % rsp["code"])
        self.status()


class _Loop:
    """Deferred calls, each due at a time, run between turns of pyghmi's event loop."""

    def __init__(self, clock):
        self.clock = clock
        self.calls = []

    def defer(self, fn, delay=0.0):
        self.calls.append((self.clock() + delay, fn))

    def run_due(self):
        now = self.clock()
        due = [c for c in self.calls if c[0] <= now]
        self.calls = [c for c in self.calls if c[0] > now]
        for _, fn in due:
            fn()


def chassis(targets, action="status", deadline=20.0, poll_s=0.5, command_factory=None, clock=time.monotonic):
    """Chassis power of every BMC in ``targets`` ({name, address, port, username, password}), or, with
    ``action="off"``, the fence of each. Returns {name: {power, sent_off, confirmed_off, seconds,
    error}}; ``power`` is ``on``, ``off`` or ``unreachable``. Never takes more than ``deadline``
    seconds (plus one turn of the event loop)."""
    if action not in ACTIONS:
        raise ValueError("action %r is not one of %s" % (action, ", ".join(ACTIONS)))
    if deadline <= 0 or poll_s <= 0:
        raise ValueError("deadline and poll_s must be positive, got %r and %r" % (deadline, poll_s))
    install_pyghmi_fixes()
    loop = _Loop(clock)
    start = clock()
    end = start + deadline
    results, ops = {}, {}
    for t in targets:
        name = t["name"]

        def done(result, name=name):
            results[name] = (result, clock() - start)
        node = LanNode(t, command_factory=command_factory, clock=clock)
        ops[name] = node.begin(ChassisOperation, action, poll_s, done, loop.defer)
    while len(results) < len(ops) and clock() < end:
        loop.run_due()
        pump_pyghmi(max(0.0, min(0.05, end - clock())))
    out = {}
    for name, op in ops.items():
        if name not in results:
            op.node.abandon()                # late answers do nothing now
            why = "no answer within %.1f s" % deadline
            if op.sent_off:
                why = "power down sent, the BMC did not report the chassis off within %.1f s" % deadline
            results[name] = (NodeUnavailable("BMC unreachable: %s" % why), clock() - start)
        result, seconds = results[name]
        if isinstance(result, NodeUnavailable):
            out[name] = {"power": op.power if op.power is not None else "unreachable",
                         "sent_off": op.sent_off, "confirmed_off": False, "seconds": round(seconds, 3),
                         "error": result.reason}
        else:
            out[name] = dict(result, seconds=round(seconds, 3), error=None)
    return out
