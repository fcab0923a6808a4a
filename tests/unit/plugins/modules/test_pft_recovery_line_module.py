# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_recovery_line, run as Ansible runs it: begin, record, commit and query a line; check mode writes
nothing; a commit with a guest unsaved fails naming it."""
import pft_recovery_line as module
from pft_module_run import run_module

SHA = "0f" * 32


def test_begin_record_commit_query(tmp_path, capsys):
    base = {"state_dir": str(tmp_path / "state"), "job": "job1"}
    got = run_module(module, dict(base, state="begin", guests=["guest1", "guest2"]), capsys, check_mode=True)
    assert got["rc"] == 0 and not got["changed"] and not (tmp_path / "state").exists()
    got = run_module(module, dict(base, state="begin", guests=["guest1", "guest2"], line_id="L1"), capsys)
    assert got["rc"] == 0 and got["changed"] and got["line"]["id"] == "L1" and got["newest"] is None
    for n, g in enumerate(("guest1", "guest2")):
        got = run_module(module, dict(base, state="record", line="L1", guest=g, node="compute%d" % (n + 1),
                                      times={"pause_requested": 100.0, "paused": 100.2 + n, "save_started": 101,
                                             "saved": "104.5", "resumed": 106 + n}), capsys)
        assert got["rc"] == 0 and got["guest"]["saved"] == 104.5
    got = run_module(module, dict(base, state="commit", line="L1"), capsys)
    assert got["rc"] == 1 and "no complete image of guest1, guest2" in got["msg"]
    for g in ("guest1", "guest2"):
        run_module(module, dict(base, state="record", line="L1", guest=g,
                                image={"path": "/srv/pft/lines/job1/L1/%s.save" % g, "size": 4096, "sha256": SHA}),
                   capsys)
    got = run_module(module, dict(base, state="commit", line="L1"), capsys)
    assert got["rc"] == 0 and got["line"]["timings"]["pause_skew_s"] == 1.0 and got["newest"]["id"] == "L1"
    got = run_module(module, base, capsys)
    assert got["rc"] == 0 and not got["changed"] and got["status"]["committed"][0]["id"] == "L1"
    got = run_module(module, dict(base, state="record", line="L1", guest="guest1", times={"paused": "soon"}), capsys)
    assert got["rc"] == 1 and "times must be seconds since the epoch" in got["msg"]
    got = run_module(module, dict(base, state="record", line="L1", guest="guest1", times={"paused": 1}), capsys)
    assert got["rc"] == 1 and "job job1 has no open line L1 (open: none; newest complete: L1)" in got["msg"]
