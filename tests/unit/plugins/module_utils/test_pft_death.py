# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_death.judge: the decision table of sudden death. Two independent signals before a fence; no
fence, no restore; a dom0 that answers is never dead."""
import pytest
from ansible.module_utils.pft_death import DeathError, judge

# bmc, dom0, heartbeat -> state, action, fence
TABLE = [
    ("off", None, None, "dead", "fence_and_restore", "needed"),
    ("off", "silent", "stale", "dead", "fence_and_restore", "needed"),
    ("on", "answers", "stale", "alive", "none", None),
    ("on", "answers", "fresh", "alive", "none", None),
    ("on", "silent", "stale", "dead", "fence_and_restore", "needed"),
    ("on", "xl_silent", "stale", "dead", "fence_and_restore", "needed"),
    ("on", "silent", "fresh", "suspect", "wait", None),
    ("on", "silent", None, "suspect", "wait", None),
    ("on", "xl_silent", "fresh", "suspect", "wait", None),
    ("on", None, "stale", "suspect", "ask_dom0", None),
    ("on", None, "fresh", "alive", "none", None),
    ("on", None, None, "suspect", "ask_dom0", None),
    ("unreachable", "answers", "stale", "alive", "none", None),
    ("unreachable", "silent", "stale", "dead", "alert_cannot_fence", None),
    ("unreachable", "xl_silent", "stale", "dead", "alert_cannot_fence", None),
    ("unreachable", "silent", "fresh", "suspect", "wait", None),
    ("unreachable", "silent", None, "suspect", "wait", None),
    ("unreachable", None, "stale", "suspect", "ask_dom0", None),
]


@pytest.mark.parametrize("bmc, dom0, heartbeat, state, action, fence", TABLE)
def test_the_table(bmc, dom0, heartbeat, state, action, fence):
    got = judge("compute1", bmc, dom0, heartbeat)
    assert (got["state"], got["action"], got["fence"]) == (state, action, fence), got["why"]
    assert got["signals"] == {"bmc": bmc, "dom0": dom0, "heartbeat": heartbeat}


def test_nothing_is_restored_without_a_fence_and_the_alert_names_the_node():
    for bmc in ("on", "off", "unreachable"):
        for dom0 in ("answers", "xl_silent", "silent", None):
            for heartbeat in ("fresh", "stale", None):
                got = judge("compute7", bmc, dom0, heartbeat)
                assert (got["action"] == "fence_and_restore") == (got["fence"] == "needed")
                if got["action"] == "fence_and_restore":
                    assert bmc != "unreachable"             # the fence needs a BMC that answers
    got = judge("compute7", "unreachable", "silent", "stale")
    assert "cannot fence compute7" in got["why"]


def test_an_operator_fence_stands_in_for_the_bmc_only_when_the_dom0_is_silent():
    got = judge("compute1", "unreachable", "silent", None, fenced_by_operator=True)
    assert (got["state"], got["action"], got["fence"]) == ("dead", "fence_and_restore", "done")
    got = judge("compute1", "unreachable", "answers", "stale", fenced_by_operator=True)
    assert got["state"] == "alive"                             # a node that answers is not dead
    got = judge("compute1", "unreachable", None, None, fenced_by_operator=True)
    assert got["action"] == "ask_dom0"


@pytest.mark.parametrize("kwargs, message", [
    ({"bmc": "maybe"}, "node compute1: bmc 'maybe' is not one of on, off, unreachable"),
    ({"bmc": "on", "dom0": "hung"}, "dom0 'hung'"),
    ({"bmc": "on", "heartbeat": "old"}, "heartbeat 'old'"),
])
def test_a_signal_outside_the_table_is_named(kwargs, message):
    with pytest.raises(DeathError, match=message):
        judge("compute1", **kwargs)
