# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bookkeeping of global recovery lines (seed 003): which checkpoint of an MPI job's guests is
complete, and what taking it cost.

A *job* is a named set of guests that must roll back together: an MPI job's ranks have seen each
other's messages, so one guest restored alone from an older image would hang or compute garbage.
A *line* is one checkpoint of every guest of the job: each guest suspended for its save, and none
resumed before the last image was saved (drained), so that together they are a consistent state of the
job (docs/recovery.md).

The playbook that takes a line (checkpoint.yml) drives the guests; this file only keeps the books,
under the state directory's lock, in ``recovery-lines.json``:

``begin(job, guests)``
    opens a line. A line left open by a controller that died mid-line is *abandoned*: it never
    becomes the job's line, and the images it wrote are handed back to be removed.
``record(job, line, guest, ...)``
    notes, per guest, when it was paused and resumed, where its image is (node, path), the image's
    size and sha256, and how long its save took.
``commit(job, line)``
    makes the line the job's newest complete line, only when every guest of it has an image with a
    size and a sha256. The previous complete line stays until then, so a line cut short (a crash, a
    full disk) never replaces a good one; the last ``keep`` committed lines are kept, and the images
    of the older ones are handed back to be removed.
``abort(job, line, reason)``
    gives up an open line (its images are handed back).
``newest(job)``
    the line a restore uses: the newest committed one, or None.

The delays are seed 003's (:func:`line_timings`): the *drain* (from the first pause request, or save
request, to the last guest paused), the pause and resume *skews* (how far apart the guests stopped and started
again; TCP peers that resume at different moments back off), the *longest pause* a guest saw, each
guest's *save* time, and the *resume* delay (from the last save to the last guest running)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time
import uuid

from ansible.module_utils.pft_common import DEFAULT_LOCK_TIMEOUT, DOMAIN, check_name, utc_iso
from ansible.module_utils.pft_state import StateDir, WatchError

LINES_FILE = "recovery-lines.json"
KEEP = 2                    # committed lines kept per job: the newest, and one before it
ABANDONED_KEPT = 10         # abandoned or aborted lines remembered per job (ids and reasons only)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIMES = ("pause_requested", "paused", "save_started", "saved", "resumed")


class LineError(WatchError):
    """A recovery line operation that cannot be done as asked (its message names the job and line)."""


# --------------------------------------------------------------------------- pure: the delays


def line_timings(guests):
    """Seed 003's delays of a line, from ``{guest: {pause_requested, paused, save_started, saved,
    resumed}}`` (controller epoch seconds; a missing time leaves out what needs it).

    Returns {drain_s, pause_skew_s, longest_pause_s, save_s: {guest: s}, resume_s, resume_skew_s,
    line_s}, each rounded to milliseconds, or None where its times are missing."""
    def times(key):
        return [g[key] for g in guests.values() if isinstance(g.get(key), (int, float))]

    def span(first, last):
        return round(last - first, 3) if first is not None and last is not None else None

    requested, paused, saved, resumed = times("pause_requested"), times("paused"), times("saved"), times("resumed")
    complete = len(guests)
    pauses = [g["resumed"] - g["paused"] for g in guests.values()
              if isinstance(g.get("paused"), (int, float)) and isinstance(g.get("resumed"), (int, float))]
    saves = {name: span(g.get("save_started"), g.get("saved")) for name, g in sorted(guests.items())}
    return {
        "drain_s": span(min(requested), max(paused)) if requested and len(paused) == complete else None,
        "pause_skew_s": span(min(paused), max(paused)) if len(paused) == complete else None,
        "longest_pause_s": round(max(pauses), 3) if len(pauses) == complete and pauses else None,
        "save_s": saves,
        "resume_s": span(max(saved), max(resumed)) if len(saved) == complete and len(resumed) == complete else None,
        "resume_skew_s": span(min(resumed), max(resumed)) if len(resumed) == complete else None,
        "line_s": span(min(requested), max(resumed)) if requested and len(resumed) == complete else None,
    }


def missing_images(line):
    """The guests of ``line`` whose image is not yet recorded complete (a path, a size above 0 and a
    sha256), sorted."""
    out = []
    for name, g in sorted(line["guests"].items()):
        image = g.get("image") or {}
        if not (image.get("path") and isinstance(image.get("size"), int) and image["size"] > 0
                and _SHA256.match(str(image.get("sha256", "")))):
            out.append(name)
    return out


def _images(line):
    return sorted({(g["image"].get("node"), g["image"]["path"]) for g in line["guests"].values()
                   if g.get("image") and g["image"].get("path")})


def _discard(lines, kept):
    """Images of ``lines`` that no line of ``kept`` uses: [{node, path}]."""
    used = {image for line in kept for image in _images(line)}
    gone = sorted({image for line in lines for image in _images(line)} - used, key=lambda i: (str(i[0]), i[1]))
    return [{"node": node, "path": path} for node, path in gone]


# --------------------------------------------------------------------------- the store


class LineStore:
    """The recovery lines of every job, in ``<state_dir>/recovery-lines.json``, under the state
    directory's lock. Every method takes the lock for its own read-modify-write; ``dry_run``
    computes the same answer and writes nothing (not even the directory)."""

    def __init__(self, state_dir, lock_timeout=DEFAULT_LOCK_TIMEOUT, clock=time.time, dry_run=False):
        self.state_dir = state_dir
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.dry_run = dry_run

    # -- file ---------------------------------------------------------------
    def _open(self):
        return StateDir(self.state_dir, lock_timeout=self.lock_timeout)

    @staticmethod
    def _load(store):
        data = store.read_json(LINES_FILE, {"jobs": {}})
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
            raise LineError("%s/%s is not a recovery line record ({jobs: {job: ...}}); move it aside only if "
                            "no restore needs its lines" % (store.directory, LINES_FILE))
        return data

    def _change(self, job, change):
        """Run ``change(entry)`` on the job's entry ({open, committed, abandoned}) under the lock and
        write the result unless dry_run; returns what ``change`` returns."""
        check_name("job", job, error=LineError)
        if self.dry_run and not _exists(self.state_dir):
            return change(_entry({}, job))
        with self._open() as store:
            data = self._load(store)
            answer = change(_entry(data["jobs"], job))
            if not self.dry_run:
                store.write_json(LINES_FILE, data)
            return answer

    def _read(self, job):
        check_name("job", job, error=LineError)
        if not _exists(self.state_dir):
            return _entry({}, job)
        with self._open() as store:
            return _entry(self._load(store)["jobs"], job)

    # -- operations -----------------------------------------------------------
    def begin(self, job, guests, line_id=None):
        """Open a line of ``guests`` for ``job``; returns {line, abandoned, discard}."""
        names = [check_name("guest", g, rule=DOMAIN, error=LineError) for g in guests or []]
        if not names:
            raise LineError("job %s: a recovery line needs at least one guest" % job)
        if len(set(names)) != len(names):
            raise LineError("job %s: a guest is named twice in %s" % (job, names))
        now = self.clock()
        line_id = line_id or "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)), uuid.uuid4().hex[:6])
        check_name("line", line_id, error=LineError)

        def change(entry):
            abandoned = None
            discard = []
            if entry["open"] is not None:
                abandoned = _close(entry, entry["open"], "abandoned: line %s began before it was committed" % line_id,
                                   now)
                discard = _discard([abandoned], entry["committed"])
            entry["open"] = {"id": line_id, "job": job, "began": now, "began_utc": utc_iso(now),
                             "guests": {name: {} for name in names}}
            return {"line": entry["open"], "abandoned": abandoned, "discard": discard}
        return self._change(job, change)

    def record(self, job, line_id, guest, node=None, image=None, **times):
        """Note what happened to ``guest`` in the open line ``line_id``: any of the times
        (pause_requested, paused, save_started, saved, resumed; epoch seconds), its node, and its
        image {path, size, sha256, node}. Returns the guest's entry."""
        unknown = set(times) - set(_TIMES)
        if unknown:
            raise LineError("job %s line %s: unknown time(s) %s (known: %s)"
                            % (job, line_id, ", ".join(sorted(unknown)), ", ".join(_TIMES)))
        try:
            times = {k: float(v) for k, v in times.items() if v is not None}
        except (TypeError, ValueError):
            raise LineError("job %s line %s guest %s: times must be seconds since the epoch, got %r"
                            % (job, line_id, guest, times)) from None
        if image is not None:
            image = _check_image(job, line_id, guest, image)

        def change(entry):
            line = _open_line(entry, job, line_id)
            if guest not in line["guests"]:
                raise LineError("job %s line %s has no guest %s (its guests: %s)"
                                % (job, line_id, guest, ", ".join(sorted(line["guests"]))))
            g = line["guests"][guest]
            g.update(times)
            if node is not None:
                g["node"] = check_name("node", node, error=LineError)
            if image is not None:
                g["image"] = image
            return dict(g)
        return self._change(job, change)

    def commit(self, job, line_id, keep=KEEP):
        """Make the open line ``line_id`` the job's newest complete line, when every guest has its
        image. Returns {line, superseded: [ids], discard: [{node, path}]}: the images of the lines
        no longer kept, for the caller to remove after the commit."""
        if keep < 1:
            raise LineError("keep must be at least 1, got %r" % keep)
        now = self.clock()

        def change(entry):
            line = _open_line(entry, job, line_id)
            missing = missing_images(line)
            if missing:
                raise LineError("job %s line %s not committed: no complete image of %s; the job's line stays %s"
                                % (job, line_id, ", ".join(missing),
                                   entry["committed"][-1]["id"] if entry["committed"] else "none"))
            line["committed"] = now
            line["committed_utc"] = utc_iso(now)
            line["timings"] = line_timings(line["guests"])
            entry["committed"].append(line)
            entry["open"] = None
            dropped, entry["committed"] = entry["committed"][:-keep], entry["committed"][-keep:]
            return {"line": line, "superseded": [d["id"] for d in dropped],
                    "discard": _discard(dropped, entry["committed"])}
        return self._change(job, change)

    def abort(self, job, line_id, reason):
        """Give up the open line ``line_id`` (``reason`` is kept); returns {line, discard}."""
        now = self.clock()

        def change(entry):
            line = _close(entry, _open_line(entry, job, line_id), "aborted: %s" % reason, now)
            return {"line": line, "discard": _discard([line], entry["committed"])}
        return self._change(job, change)

    def newest(self, job):
        """The job's newest committed line with its ``age_s``, or None."""
        entry = self._read(job)
        if not entry["committed"]:
            return None
        line = dict(entry["committed"][-1])
        line["age_s"] = round(self.clock() - line["committed"], 3)
        return line

    def status(self, job):
        """{open, committed, abandoned} of the job, as kept."""
        return self._read(job)


def _exists(state_dir):
    return os.path.exists(os.path.join(state_dir, LINES_FILE))


def _entry(jobs, job):
    entry = jobs.setdefault(job, {})
    entry.setdefault("open", None)
    entry.setdefault("committed", [])
    entry.setdefault("abandoned", [])
    return entry


def _open_line(entry, job, line_id):
    line = entry["open"]
    if line is None or line["id"] != line_id:
        raise LineError("job %s has no open line %s (open: %s; newest complete: %s)"
                        % (job, line_id, line["id"] if line else "none",
                           entry["committed"][-1]["id"] if entry["committed"] else "none"))
    return line


def _close(entry, line, why, now):
    line = dict(line, closed=now, closed_utc=utc_iso(now), why=why)
    entry["open"] = None
    entry["abandoned"].append({"id": line["id"], "began": line["began"], "why": why})
    del entry["abandoned"][:-ABANDONED_KEPT]
    return line


def _check_image(job, line_id, guest, image):
    if not isinstance(image, dict) or not image.get("path"):
        raise LineError("job %s line %s guest %s: an image needs at least a path, got %r"
                        % (job, line_id, guest, image))
    out = {"path": str(image["path"])}
    if image.get("node") is not None:
        out["node"] = check_name("node", image["node"], error=LineError)
    if image.get("size") is not None:
        try:
            out["size"] = int(image["size"])
        except (TypeError, ValueError):
            raise LineError("job %s line %s guest %s: image size %r is not a number"
                            % (job, line_id, guest, image["size"])) from None
    if image.get("sha256") is not None:
        if not _SHA256.match(str(image["sha256"])):
            raise LineError("job %s line %s guest %s: image sha256 %r is not 64 hex digits"
                            % (job, line_id, guest, image["sha256"]))
        out["sha256"] = str(image["sha256"])
    return out
