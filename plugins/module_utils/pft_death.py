# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Has a node died without warning? The decision table of sudden death, and what it allows.

Prediction misses sometimes: a node dies with no sensor warning, or faster than any move. Then its
guests can only come back from a recovery line (pft_recovery_line), and only after the node is
*fenced*: powered off through its BMC, and confirmed off through the BMC. A node that is only cut off
from the controller may still run its guests, and a guest restored elsewhere would then run twice.

:func:`judge` reads three independent signals of one node:

``bmc``
    the chassis power its BMC reports: ``on``, ``off``, or ``unreachable`` (no answer within the
    deadline, or an error);
``dom0``
    whether the dom0 answers: ``answers``, ``xl_silent`` (ssh answers, ``xl`` does not within its
    deadline), ``silent`` (no ssh), or None when it was not asked;
``heartbeat``
    Ganglia's view of the node's gmond: ``fresh``, ``stale`` (past Ganglia's host-down rule,
    ``pft_ganglia.Host.is_down``), or None when Ganglia does not know the node or cannot be read.

and returns the node's ``state`` and what the watch may do:

==============  ============  ===========  ==========  ===============================================
BMC power       dom0          heartbeat    state       action
==============  ============  ===========  ==========  ===============================================
off             any           any          dead        fence (power off again, confirm off), restore
on              answers       any          alive       none
on              xl_silent/    stale        dead        fence, then restore
                silent
on              xl_silent/    fresh or     suspect     wait: one signal alone never fences (a cut
                silent        unknown                  network, a slow ssh, a hung toolstack)
on              not asked     stale        suspect     ask the dom0
unreachable     answers       any          alive       none (the BMC itself wants looking at)
unreachable     silent/       stale        dead        alert "cannot fence NODE"; restore nothing
                xl_silent
unreachable     other                      suspect     wait
==============  ============  ===========  ==========  ===============================================

``fenced_by_operator`` (``evacuate.yml -e fenced=true`` after a power-off by hand) makes a node whose
dom0 is silent ``dead`` with the fence taken as done, whatever its BMC says: the operator has looked.
A node whose dom0 answers is never dead, whatever else is claimed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

BMC_STATES = ("on", "off", "unreachable")
DOM0_STATES = ("answers", "xl_silent", "silent", None)
HEARTBEATS = ("fresh", "stale", None)

ALIVE, DEAD, SUSPECT = "alive", "dead", "suspect"
# actions
NONE, FENCE, ASK, WAIT, CANNOT_FENCE = "none", "fence_and_restore", "ask_dom0", "wait", "alert_cannot_fence"


class DeathError(ValueError):
    """A signal outside the table (its message names the node and the signal)."""


def judge(node, bmc, dom0=None, heartbeat=None, fenced_by_operator=False):
    """The decision for one node: {node, state, action, fence, why}.

    ``fence`` is ``needed`` (power it off and confirm), ``done`` (the operator did), or None (no
    fence: alive, or not yet sure). See the module's table."""
    for what, value, allowed in (("bmc", bmc, BMC_STATES), ("dom0", dom0, DOM0_STATES),
                                 ("heartbeat", heartbeat, HEARTBEATS)):
        if value not in allowed:
            raise DeathError("node %s: %s %r is not one of %s" % (node, what, value, ", ".join(map(str, allowed))))

    def out(state, action, fence, why):
        return {"node": node, "state": state, "action": action, "fence": fence, "why": why,
                "signals": {"bmc": bmc, "dom0": dom0, "heartbeat": heartbeat}}

    silent = dom0 in ("silent", "xl_silent")
    what_silent = "xl does not answer on the dom0" if dom0 == "xl_silent" else "the dom0 does not answer ssh"
    if dom0 == "answers":
        why = "the dom0 answers"
        return out(ALIVE, NONE, None, why + ("; its BMC does not (look at the BMC)" if bmc == "unreachable" else ""))
    if fenced_by_operator:
        if not silent:
            return out(SUSPECT, ASK, None,
                       "fenced by the operator: ask the dom0 first (a node that answers is not dead)")
        return out(DEAD, FENCE, "done", "fenced by the operator, and %s" % what_silent)
    if bmc == "off":
        return out(DEAD, FENCE, "needed", "its BMC reports the chassis off")
    if dom0 is None:
        if heartbeat == "stale":
            return out(SUSPECT, ASK, None, "its Ganglia heartbeat is stale: ask the dom0")
        return out(SUSPECT if heartbeat is None else ALIVE, ASK if heartbeat is None else NONE, None,
                   "not asked" if heartbeat is None else "its Ganglia heartbeat is fresh")
    # the dom0 is silent
    if heartbeat != "stale":
        heard = "its Ganglia heartbeat is fresh" if heartbeat == "fresh" else "Ganglia cannot tell"
        return out(SUSPECT, WAIT, None, "%s, but %s: one signal alone never fences" % (what_silent, heard))
    if bmc == "unreachable":
        return out(DEAD, CANNOT_FENCE, None, "%s and its heartbeat is stale, but its BMC does not answer: "
                                             "cannot fence %s, so nothing is restored" % (what_silent, node))
    return out(DEAD, FENCE, "needed", "%s and its Ganglia heartbeat is stale, while its BMC says on" % what_silent)

