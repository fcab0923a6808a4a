# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the module pft_watch_select (in process, through AnsibleModule).

Ganglia is a loopback socket serving generated XML in gmond 3.7.2's layout; the watch runs the same
module against real gmond on the testbed (tests/e2e/test_watch.py).
"""
import os

import pft_watch_select
import pytest
from pft_module_run import run_module as run_module_main

METRIC = '<METRIC NAME="%s" VAL="%s" TYPE="%s" UNITS="" TN="1" TMAX="60" DMAX="0" SLOPE="both"/>\n'


def host(name, ip, guests, free, load):
    names = ",".join(guests)
    memory = ",".join("%s=160" % g for g in guests)
    return ('<HOST NAME="%s" IP="%s" REPORTED="1" TN="1" TMAX="20" DMAX="0" GMOND_STARTED="1">\n' % (name, ip)
            + METRIC % ("pft_guest_count", len(guests), "uint32") + METRIC % ("pft_xen_free_memory_mb", free, "uint32")
            + METRIC % ("load_one", load, "float") + METRIC % ("pft_guest_names", names, "string")
            + METRIC % ("pft_guest_maxmem_mb", memory, "string") + "</HOST>\n")


XML = ('<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>\n<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">\n'
       '<CLUSTER NAME="pft" LOCALTIME="1795430001" OWNER="x" LATLONG="x" URL="x">\n'
       + host("n1", "10.0.0.1", ["g1"], 700, 0.5) + host("n2", "10.0.0.2", [], 900, 0.3)
       + host("n3", "10.0.0.3", [], 900, 0.1) + "</CLUSTER>\n</GANGLIA_XML>\n").encode()

WORK = [{"node": "n1", "action": "evacuate",
         "cause": {"verdict": "critical", "reason": "CPU1 Temp 92 >= 85", "sensors": {"CPU1 Temp": 92},
                   "history": [{"verdict": "critical"}]}}]


def run_module(args, capsys, check_mode=False):
    return run_module_main(pft_watch_select, args, capsys, check_mode)


@pytest.fixture
def ganglia(xml_replay_server):
    xml_replay_server["data"] = XML
    return xml_replay_server["endpoint"]


def test_selects_the_least_loaded_spare_reserves_and_journals(ganglia, tmp_path, capsys):
    state = str(tmp_path)
    res = run_module({"work": WORK, "candidates": ["n1", "n2", "n3"], "endpoints": [ganglia],
                      "state_dir": state}, capsys)
    assert res["rc"] == 0 and res["changed"], res
    (item,) = res["selected"]
    assert (item["guest"], item["target"], res["sources"]) == ("g1", "n3", ["n1"])
    assert os.path.exists(os.path.join(state, "reservations", "n3.json"))
    assert os.path.exists(os.path.join(state, "journal", item["record_id"] + ".json"))
    assert "1 guest(s) to act on" in res["msg"]


def test_check_mode_predicts_and_writes_nothing(ganglia, tmp_path, capsys):
    state = str(tmp_path / "state")
    res = run_module({"work": WORK, "candidates": ["n1", "n2", "n3"], "endpoints": [ganglia],
                      "state_dir": state}, capsys, check_mode=True)
    assert res["rc"] == 0 and res["selected"][0]["target"] == "n3"
    assert not os.path.exists(state)


def test_ganglia_unreachable_is_reported_not_guessed(tmp_path, capsys):
    res = run_module({"work": WORK, "candidates": ["n1", "n2"], "endpoints": ["127.0.0.1:9"], "timeout": 1,
                      "state_dir": str(tmp_path)}, capsys)
    assert res["rc"] == 0 and res["selected"] == [] and "127.0.0.1:9" in res["unlisted"]["n1"]
    assert "guests unknown on n1" in res["msg"]


@pytest.mark.parametrize("args,word", [({"reservation_ttl": 0}, "reservation_ttl"), ({"timeout": 0}, "timeout"),
                                       ({"work": [{"node": "n1", "action": "reboot"}]}, "work[0]")])
def test_bad_input_fails_naming_it(ganglia, tmp_path, capsys, args, word):
    res = run_module(dict({"work": WORK, "candidates": ["n1", "n2"], "endpoints": [ganglia],
                           "state_dir": str(tmp_path)}, **args), capsys)
    assert res["failed"] and word in res["msg"]
