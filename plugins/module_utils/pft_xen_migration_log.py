# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The state machine over the lines of ``xl -v migrate``: the precopy rounds, the markers, the phase.

:class:`MigrationLog` is fed ``(t, line)`` pairs from ``xl -v migrate`` (stderr, with the LD_PRELOAD shim
that un-hides libxc's progress) and keeps the rounds, the markers and the phase; :meth:`MigrationLog.stats`
sums them up for xen_migrate. Recorded outputs: tests/unit/plugins/module_utils/fixtures/xen.
"""
from __future__ import annotations

import re
import time

from ansible.module_utils.pft_xen import MIB

PAGE = 4096

P = r"(?:(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?P<tz>\S+) \[(?P<pid>\d+)\] )?"
PROGRESS_RE = re.compile(P + r"xc: (?P<level>progress|detail): (?P<what>.+?): (?P<done>\d+)/(?P<total>\d+) +"
                         r"(?P<pct>\d+)%")
ROUND_RE = re.compile(r"^Frames iteration (?P<iter>\d+)$")
SENDER_RE = re.compile(r"migration sender: (?P<text>.*)$")
TARGET_RE = re.compile(r"migration target: (?P<text>.*)$")
FINAL_RE = re.compile(r"(Migration successful\.|Migration failed, resuming at sender\.|Migration failed, failed to "
                      r"suspend at sender\.|Migration failed due to problems at target\.|\*\* Migration failed "
                      r"during final handshake \*\*)")
SUSPEND_REQ_RE = re.compile(r"issuing (?:PV|HVM)? ?suspend request|suspend request via")
ERROR_RE = re.compile(r"(?:libxl|xc|libxl-save-helper): (?:error|critical): (?P<msg>.*)$")


class Round(object):
    __slots__ = ("label", "final", "pages", "done", "t_first", "t_end", "t_start")

    def __init__(self, label, final, pages, t_start, t_first):
        self.label, self.final, self.pages = label, final, pages
        self.t_start, self.t_first, self.t_end, self.done = t_start, t_first, None, 0


class MigrationLog(object):
    """State machine over the lines of ``xl -v migrate`` (source and, through ssh, target)."""

    def __init__(self, t0=0.0):
        self.t0 = t0
        self.phase = "connect"          # connect, live, final, handover, done
        self.rounds = []
        self.markers = {}
        self.errors = []
        self.other = []
        self.result = None
        self.progress_seen = False
        self.last_marker_t = t0

    # -- feeding
    def feed(self, t, line):
        """Feed one line; returns a list of events: ('round_start', Round), ('round_end', Round),
        ('suspended',), ('suspend_request',), ('no_return',), ('result', text)."""
        ev = []
        m = PROGRESS_RE.search(line)
        if m:
            return self._feed_progress(t, m)
        if "Saving domain" in line:
            self._mark("saving", t)
            if self.phase == "connect":
                self.phase = "live"
            ev.append(("saving",))
            return ev
        if SUSPEND_REQ_RE.search(line):
            self._mark("suspend_request", t)
            ev.append(("suspend_request",))
            return ev
        if "guest has suspended" in line:
            self._mark("guest_suspended", t)
            if self.phase != "final":
                self._close_round(t, ev)
                self.phase = "final"
                ev.append(("suspended",))
            return ev
        s = SENDER_RE.search(line)
        if s:
            self._feed_sender(t, s.group("text"), line, ev)
            return ev
        tm = TARGET_RE.search(line)
        if tm:
            self._feed_target(t, tm.group("text"), line)
            return ev
        f = FINAL_RE.search(line)
        if f:
            self.result = f.group(1)
            self._mark("result", t)
            self.phase = "done"
            ev.append(("result", self.result))
            return ev
        e = ERROR_RE.search(line)
        if e or "rc=" in line and "fail" in line.lower():
            self.errors.append(line.strip())
            return ev
        if line.strip():
            self.other.append(line.strip())
        return ev

    def _feed_progress(self, t, m):
        """A libxc progress line (its PROGRESS_RE match): a round's pages, or a save marker."""
        ev = []
        what, done, total = m.group("what"), int(m.group("done")), int(m.group("total"))
        r = ROUND_RE.match(what)
        if r or what == "Frames":
            self.progress_seen = True
            label = int(r.group("iter")) if r else 0
            final = self.phase == "final"
            cur = self.rounds[-1] if self.rounds else None
            if cur is None or cur.label != label or cur.final != final or cur.pages != total:
                if cur is not None and cur.t_end is None:
                    cur.t_end = t
                    ev.append(("round_end", cur))
                start = t if done > 0 or not self.rounds and self.phase == "connect" else t
                if done > 0:                      # the 0/N line was throttled away
                    start = self.last_marker_t if (label == 0 or final) else (cur.t_end if cur else t)
                cur = Round(label, final, total, start, t)
                self.rounds.append(cur)
                if self.phase == "connect":
                    self.phase = "live"
                ev.append(("round_start", cur))
            cur.done = max(cur.done, done)
            if done >= total and cur.t_end is None:
                cur.t_end = t
                ev.append(("round_end", cur))
            return ev
        if what == "Domain now suspended":
            self._close_round(t, ev)
            self._mark("suspended", t)
            self.phase = "final"
            ev.append(("suspended",))
            return ev
        if what in ("End of stream", "Complete"):
            self._close_round(t, ev)
            self._mark(what.lower().replace(" ", "_"), t)
            return ev
        return ev

    def _feed_sender(self, t, text, line, ev):
        """A "migration sender:" line of xl (its text after the prefix)."""
        if text.startswith("Target has acknowledged transfer"):
            self._close_round(t, ev)
            self._mark("acknowledged", t)
            self.phase = "handover"
        elif text.startswith("Giving target permission to start"):
            self._mark("no_return", t)
            self.phase = "handover"
            ev.append(("no_return",))
        elif text.startswith("Target reports successful startup"):
            self._mark("target_started_ack", t)
        elif "failed" in text or "failure" in text or "Trying to resume" in text:
            self.errors.append(line.strip())
        else:
            self.other.append(line.strip())

    def _feed_target(self, t, text, line):
        """A "migration target:" line (the receiver's, through ssh; its text after the prefix)."""
        if text.startswith("Transfer complete"):
            self._mark("target_transfer_complete", t)
        elif text.startswith("Got permission"):
            self._mark("target_permission", t)
        elif text.startswith("Domain started"):
            self._mark("target_started", t)
        elif "fail" in text.lower():
            self.errors.append(line.strip())

    def _mark(self, key, t):
        self.markers.setdefault(key, t)
        self.last_marker_t = t

    def _close_round(self, t, ev):
        if self.rounds and self.rounds[-1].t_end is None:
            self.rounds[-1].t_end = t
            ev.append(("round_end", self.rounds[-1]))

    # -- results
    def live_rounds(self):
        return [r for r in self.rounds if not r.final]

    def final_round(self):
        finals = [r for r in self.rounds if r.final]
        return finals[-1] if finals else None

    def live_throughput(self):
        """Pages per second over the live rounds sent completely so far, or None before the first
        one ends: what the convergence guard divides a round's size by to predict the final copy."""
        done = [r for r in self.live_rounds() if r.t_end is not None and r.done >= r.pages]
        secs = sum(r.t_end - r.t_start for r in done)
        return sum(r.pages for r in done) / secs if secs > 0 else None

    def stats(self, t_end=None, bytes_sent=None, populated_pages=None):
        live = self.live_rounds()
        iterations = []
        for i, r in enumerate(live):
            nxt = live[i + 1] if i + 1 < len(live) else self.final_round()
            secs = ((r.t_end or t_end or r.t_first) - r.t_start)
            rate = None
            if nxt is not None and nxt.t_start > r.t_start:
                rate = round(nxt.pages / (nxt.t_start - r.t_start), 1)
            iterations.append(dict(iteration=r.label, pages=r.pages, mib=round(r.pages * PAGE / MIB, 2),
                                   seconds=round(max(secs, 0.0), 3), dirty_rate_pps=rate,
                                   t_start_s=round(r.t_start - self.t0, 3)))
        final = self.final_round()
        live_secs = sum(it["seconds"] for it in iterations)
        live_pages = sum(r.pages for r in live)
        throughput = (live_pages / live_secs) if live_secs > 0 else None
        final_pages = final.pages if final else (0 if "suspended" in self.markers else None)
        data_pages = final_pages
        if final_pages is not None and populated_pages is not None and live:
            deferred = max(live[0].pages - populated_pages, 0)
            data_pages = max(final_pages - deferred, 0)
        m = self.markers
        suspend_t = m.get("suspended", m.get("guest_suspended", m.get("suspend_request")))
        down_log = None
        if suspend_t is not None and "target_started" in m:
            down_log = round(m["target_started"] - suspend_t, 3)
        down_copy = None
        if data_pages is not None and throughput:
            down_copy = round(data_pages / throughput, 3)
        return dict(
            total_s=round((t_end or time.monotonic()) - self.t0, 3) if t_end else None,
            iterations=iterations,
            live_rounds=len(live),
            final_round_pages=final_pages,
            final_round_label=final.label if final else None,
            final_round_data_pages_est=data_pages,
            converged_early=bool(final and live and final.label == live[-1].label),
            throughput_pps=round(throughput, 1) if throughput else None,
            downtime_estimate_s=down_log if down_log is not None else down_copy,
            downtime_log_s=down_log,
            downtime_copy_est_s=down_copy,
            bytes_sent=bytes_sent,
            mib_sent=round(bytes_sent / MIB, 2) if bytes_sent is not None else None,
            markers_s={k: round(v - self.t0, 3) for k, v in sorted(m.items(), key=lambda kv: kv[1])},
        )
