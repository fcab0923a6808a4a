# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_recovery_line: the books of a job's global recovery lines (seed 003). A line becomes the job's
line only when every guest's image is complete; the previous complete line stays until then; a line
left open by a controller that died is abandoned and its images handed back; seed 003's delays."""
import json
import os

import pytest
from ansible.module_utils.pft_recovery_line import (
    LINES_FILE,
    LineError,
    LineStore,
    line_timings,
    missing_images,
)

SHA = "ab" * 32


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def image(guest, line, node="compute3"):
    return {"path": "/var/lib/pft/lines/job1/%s/%s.save" % (line, guest), "node": node, "size": 167772160,
            "sha256": SHA}


def take(store, clock, guests=("guest1", "guest2"), line_id=None, save=True):
    """A whole line the way checkpoint.yml takes it: pause all, save all, resume all."""
    line = store.begin("job1", list(guests), line_id=line_id)["line"]["id"]
    start = clock.t
    for i, g in enumerate(guests):
        store.record("job1", line, g, node="compute%d" % (i + 1), pause_requested=start, paused=start + 0.1 * (i + 1))
    for i, g in enumerate(guests):
        store.record("job1", line, g, save_started=start + 0.5, saved=start + 3.0 + i,
                     image=image(g, line) if save else None)
    for i, g in enumerate(guests):
        store.record("job1", line, g, resumed=start + 5.0 + 0.05 * i)
    return line


def test_a_line_is_committed_only_when_every_guest_has_its_image(tmp_path):
    clock = Clock()
    store = LineStore(str(tmp_path), clock=clock)
    assert store.newest("job1") is None
    line = take(store, clock, save=False)
    store.record("job1", line, "guest1", image=image("guest1", line))
    with pytest.raises(LineError, match=r"job job1 line .* not committed: no complete image of guest2; "
                                        r"the job's line stays none"):
        store.commit("job1", line)
    assert store.newest("job1") is None and store.status("job1")["open"]["id"] == line
    store.record("job1", line, "guest2", image=image("guest2", line))
    clock.t += 10
    out = store.commit("job1", line)
    assert out["superseded"] == [] and out["discard"] == []
    newest = store.newest("job1")
    assert newest["id"] == line and newest["age_s"] == 0.0 and store.status("job1")["open"] is None
    assert sorted(newest["guests"]) == ["guest1", "guest2"]
    assert newest["guests"]["guest2"]["node"] == "compute2"
    kept = json.load(open(os.path.join(str(tmp_path), LINES_FILE)))
    assert kept["jobs"]["job1"]["committed"][0]["id"] == line


def test_the_delays_are_seed_003s():
    t = 100.0
    guests = {
        "a": {"pause_requested": t, "paused": t + 0.2, "save_started": t + 0.3, "saved": t + 4.3, "resumed": t + 6.0},
        "b": {"pause_requested": t, "paused": t + 0.5, "save_started": t + 0.6, "saved": t + 5.6, "resumed": t + 6.25},
    }
    got = line_timings(guests)
    assert got == {"drain_s": 0.5, "pause_skew_s": 0.3, "longest_pause_s": 5.8,
                   "save_s": {"a": 4.0, "b": 5.0}, "resume_s": 0.65, "resume_skew_s": 0.25, "line_s": 6.25}
    del guests["b"]["resumed"]                       # a guest not resumed: no resume delay, no longest pause
    got = line_timings(guests)
    assert got["resume_s"] is None and got["longest_pause_s"] is None and got["drain_s"] == 0.5


def test_the_previous_complete_line_stays_until_a_new_one_commits_and_only_keep_lines_are_kept(tmp_path):
    clock = Clock()
    store = LineStore(str(tmp_path), clock=clock)
    first = take(store, clock, line_id="L1")
    store.commit("job1", first)
    clock.t += 60
    second = take(store, clock, line_id="L2")
    assert store.newest("job1")["id"] == "L1"                 # open, not committed: the job's line is L1
    assert store.newest("job1")["age_s"] == 60.0
    store.commit("job1", second)
    clock.t += 60
    third = take(store, clock, line_id="L3")
    out = store.commit("job1", third)
    assert out["superseded"] == ["L1"]
    assert out["discard"] == [{"node": "compute3", "path": "/var/lib/pft/lines/job1/L1/guest1.save"},
                              {"node": "compute3", "path": "/var/lib/pft/lines/job1/L1/guest2.save"}]
    assert [c["id"] for c in store.status("job1")["committed"]] == ["L2", "L3"]
    assert store.newest("job1")["timings"]["drain_s"] == 0.2


def test_a_line_left_open_by_a_dead_controller_is_abandoned_never_committed(tmp_path):
    clock = Clock()
    store = LineStore(str(tmp_path), clock=clock)
    good = take(store, clock, line_id="L1")
    store.commit("job1", good)
    cut = take(store, clock, line_id="L2")                    # the controller dies here, before commit
    clock.t += 600
    out = LineStore(str(tmp_path), clock=clock).begin("job1", ["guest1", "guest2"], line_id="L3")
    assert out["abandoned"]["id"] == cut and "began before it was committed" in out["abandoned"]["why"]
    assert {d["path"] for d in out["discard"]} == {"/var/lib/pft/lines/job1/L2/guest1.save",
                                                   "/var/lib/pft/lines/job1/L2/guest2.save"}
    assert store.newest("job1")["id"] == "L1"                 # a restore now uses L1
    with pytest.raises(LineError, match="job job1 has no open line L2 .open: L3; newest complete: L1"):
        store.commit("job1", cut)
    assert [a["id"] for a in store.status("job1")["abandoned"]] == ["L2"]


def test_an_aborted_line_hands_back_only_images_no_kept_line_uses(tmp_path):
    clock = Clock()
    store = LineStore(str(tmp_path), clock=clock)
    store.commit("job1", take(store, clock, line_id="L1"))
    line = store.begin("job1", ["guest1", "guest2"], line_id="L2")["line"]["id"]
    store.record("job1", line, "guest1", image=image("guest1", "L2"))
    store.record("job1", line, "guest2", image=image("guest2", "L1"))      # (a reused path: not removed)
    out = store.abort("job1", line, "guest2 could not be paused")
    assert out["discard"] == [{"node": "compute3", "path": "/var/lib/pft/lines/job1/L2/guest1.save"}]
    assert store.status("job1")["abandoned"][-1]["why"] == "aborted: guest2 could not be paused"
    assert store.newest("job1")["id"] == "L1"


def test_dry_run_answers_the_same_and_writes_nothing(tmp_path):
    d = str(tmp_path / "state")
    clock = Clock()
    out = LineStore(d, clock=clock, dry_run=True).begin("job1", ["guest1"], line_id="L1")
    assert out["line"]["id"] == "L1" and not os.path.exists(d)
    store = LineStore(d, clock=clock)
    store.commit("job1", take(store, clock, guests=("guest1",), line_id="L1"))
    before = open(os.path.join(d, LINES_FILE)).read()
    dry = LineStore(d, clock=clock, dry_run=True)
    assert dry.begin("job1", ["guest1"], line_id="L2")["line"]["id"] == "L2"
    assert open(os.path.join(d, LINES_FILE)).read() == before


@pytest.mark.parametrize("call, message", [
    (lambda s: s.begin("job1", []), "job job1: a recovery line needs at least one guest"),
    (lambda s: s.begin("job1", ["g1", "g1"]), "a guest is named twice"),
    (lambda s: s.begin("job 1", ["g1"]), "job name 'job 1'"),
    (lambda s: s.begin("job1", ["../g"]), "guest name '../g'"),
    (lambda s: s.record("job1", "nope", "g1", paused=1), "job job1 has no open line nope .open: none"),
    (lambda s: s.record("job1", "L", "g1", frozen=1), "unknown time.s. frozen"),
    (lambda s: s.record("job1", "L", "g1", image={"path": "/x", "sha256": "xyz"}), "sha256 'xyz' is not 64 hex"),
    (lambda s: s.record("job1", "L", "g1", image={"size": 3}), "an image needs at least a path"),
    (lambda s: s.commit("job1", "L", keep=0), "keep must be at least 1"),
])
def test_bad_input_is_named(tmp_path, call, message):
    with pytest.raises(LineError, match=message):
        call(LineStore(str(tmp_path)))


def test_a_guest_not_in_the_line_and_a_foreign_file_are_named(tmp_path):
    store = LineStore(str(tmp_path))
    line = store.begin("job1", ["guest1"])["line"]["id"]
    with pytest.raises(LineError, match="job job1 line %s has no guest guest9 .its guests: guest1." % line):
        store.record("job1", line, "guest9", paused=1.0)
    (tmp_path / LINES_FILE).write_text("[]")
    with pytest.raises(LineError, match="recovery-lines.json is not a recovery line record"):
        store.newest("job1")


def test_missing_images_checks_path_size_and_sum():
    line = {"guests": {"a": {"image": {"path": "/p", "size": 1, "sha256": SHA}}, "b": {"image": {"path": "/p"}},
                       "c": {}, "d": {"image": {"path": "/p", "size": 0, "sha256": SHA}}}}
    assert missing_images(line) == ["b", "c", "d"]
