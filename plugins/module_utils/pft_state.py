# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch's memory on the pft controller: its state directory and what is kept there.

The watch's decisions (:mod:`pft_decide`) read and write it; so do the quarantine, audit, lock and
alert modules. Everything lives in one state directory (default ``/var/lib/pft``,
:func:`pft_common.state_paths`):

``watch-state.json``
    per node: the verdict history of recent watch runs, and the last alert
    (verdict and time), so that an unchanged state is not re-alerted every minute.
``quarantine.json``
    nodes that must not receive guests until an admin returns them to service,
    with the times of their evacuations (the anti-flap rule counts them).
``journal/<id>.json``
    evacuations that were begun and not finished. A controller killed
    mid-evacuation leaves its entry here; the next run reconciles it.
``audit.jsonl``
    one JSON object per line, append-only: every finished evacuation, pre-stage
    and reconciliation, with the evidence that caused it.

Every change holds an exclusive ``flock`` on ``<dir>/.lock`` with a deadline.
JSON files are replaced atomically (temporary file, fsync, rename); an audit line
is one ``write`` on an ``O_APPEND`` descriptor, then fsync. ``dry_run`` (check
mode) computes the same answer and writes nothing.
"""
from __future__ import annotations

import errno
import json
import os
import re
import time
import uuid

from ansible.module_utils.pft_common import (
    AUDIT_LOG,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATE_DIR,
    JOURNAL_DIR,
    LOCK_FILE,
    QUARANTINE_FILE,
    VERDICT_ORDER,
    VERDICT_RANK,
    WATCH_STATE_FILE,
    FileLock,
    JsonFileError,
    check_name,
    lock_store,
    read_json,
    sync_dir,
    utc_iso,
    write_json,
)

DEFAULT_DIR = DEFAULT_STATE_DIR
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,200}$")


# Options every watch module has; documented by the doc fragment pft.state_dir.
STATE_ARGS = dict(
    state_dir=dict(type="path", default=DEFAULT_DIR),
    lock_timeout=dict(type="float", default=DEFAULT_LOCK_TIMEOUT),
)


class WatchError(Exception):
    """A clear message naming the node, record or file at fault."""


class StateDir:
    """The files of the watch's state directory, changed under one lock.

    Every OSError met here (a full disk, a read-only or unwritable directory, a quota) becomes a
    WatchError that names the directory, the file and the cause, for example ``state directory
    /var/lib/pft: cannot write watch-state.json: No space left on device [ENOSPC]``."""

    def __init__(self, directory=DEFAULT_DIR, lock_timeout=DEFAULT_LOCK_TIMEOUT, clock=time.time):
        if not directory or not os.path.isabs(directory):
            raise WatchError("state directory %r must be an absolute path" % (directory,))
        self.directory = directory
        self.lock_timeout = lock_timeout
        self.clock = clock
        self._lock = None

    # -- errors -----------------------------------------------------------
    @staticmethod
    def cause(exc):
        """An OSError in one line, with its errno name: ``No space left on device [ENOSPC]``."""
        text = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
        name = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
        return "%s [%s]" % (text, name) if name else text

    def error(self, action, path, exc):
        """The WatchError of the OSError ``exc``, met while trying to ``action`` the file ``path``."""
        rel = os.path.relpath(path, self.directory)
        where = path if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel
        return WatchError("state directory %s: cannot %s %s: %s" % (self.directory, action, where, self.cause(exc)))

    # -- files ------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def ensure(self):
        for d in (self.directory, self.path(JOURNAL_DIR)):
            try:
                os.makedirs(d, mode=0o750, exist_ok=True)
            except OSError as exc:
                raise WatchError("state directory %s: cannot create %s: %s"
                                 % (self.directory, d, self.cause(exc))) from exc

    def __enter__(self):
        self.ensure()
        lock = FileLock(self.path(LOCK_FILE), timeout=self.lock_timeout)
        self._lock = lock_store(lock, "state directory", self.directory, WatchError,
                                "could not lock %s within %ss (another pft run holds it)"
                                % (lock.path, self.lock_timeout))
        return self

    def __exit__(self, *exc):
        lock, self._lock = self._lock, None
        lock.release()

    def read_json(self, name, default):
        path = self.path(name)
        try:
            return read_json(path, default)
        except JsonFileError as err:
            raise WatchError("state file %s is not valid JSON (%s); move it aside to start afresh"
                             % (path, err.cause)) from err
        except OSError as exc:
            raise self.error("read", path, exc) from exc

    def write_json(self, name, data):
        """Replace ``name`` atomically and durably (:func:`pft_common.write_json`: a temporary file,
        fsync, rename, fsync of its directory). On any error the old file stays as it was and the
        temporary file is removed."""
        path = self.path(name)
        try:
            write_json(path, data, mode=0o640)
        except OSError as exc:
            raise self.error("write", path, exc) from exc

    def sync_dir(self, directory):
        """fsync ``directory``, so that a rename, a new file or an unlink in it survives a crash."""
        try:
            sync_dir(directory)
        except OSError as exc:
            raise self.error("fsync the directory", directory, exc) from exc

    def remove(self, name):
        """Delete ``name`` (a journal entry) durably; a missing file is not an error."""
        path = self.path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.error("remove", path, exc) from exc
        self.sync_dir(os.path.dirname(path))

    def append_audit(self, record, audit_file=None):
        """Append ``record`` to the audit log as one whole line, fsynced, or write nothing at all.

        Call it under the lock: every writer of the log holds it, so the size read before the write is
        where this line begins. The line goes out in one ``write``; a short write is continued, and when
        the rest cannot be written (a full disk, a quota) or fsync fails, the file is cut back to that
        size and a WatchError names the file and the cause. A log whose last line is torn (no newline:
        a crash of an older pft) gets a newline first, so the new record never merges with it;
        :func:`read_audit` skips the torn line with a warning."""
        path = audit_file or self.path(AUDIT_LOG)
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise self.error("open", path, exc) from exc
        try:
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
            except OSError as exc:
                raise self.error("read the end of", path, exc) from exc
            done = 0
            try:
                while done < len(line):
                    n = os.write(fd, line[done:])
                    if n <= 0:
                        raise OSError("short write: %d of %d bytes" % (done, len(line)))
                    done += n
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                    undone = "nothing of the record was kept (%d of %d bytes written, cut off again)" % (
                        done, len(line))
                except OSError as again:
                    undone = ("and the torn line could not be cut off (%s): readers skip it"
                              % self.cause(again))
                raise WatchError("%s; %s" % (self.error("append a record to", path, exc), undone)) from exc
        finally:
            os.close(fd)
        if size == 0:
            self.sync_dir(os.path.dirname(path))    # a new log: its name must survive a crash too
        return path


def remember_alert(directory, node=None, verdict=None, key=None, value=None, clock=time.time,
                   lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """Record in watch-state.json that an alert was sent: a node's verdict (``node``, ``verdict``:
    what :func:`decide` compares the next verdict with) or any other alert (``key``, ``value``:
    what :func:`alert_due` compares with). Call it only after the alert went out."""
    if (node is None) == (key is None):
        raise WatchError("remember_alert needs either node (with verdict) or key (with value)")
    now = round(clock(), 3)
    with StateDir(directory, lock_timeout=lock_timeout, clock=clock) as store:
        state = store.read_json(WATCH_STATE_FILE, {})
        if node is not None:
            check_name("node", node, error=WatchError)
            if verdict not in VERDICT_RANK:
                raise WatchError("verdict must be one of %s, got %r" % (", ".join(VERDICT_ORDER), verdict))
            state.setdefault("nodes", {}).setdefault(node, {})["alerted"] = {"verdict": verdict, "t": now}
        else:
            state.setdefault("alerts", {})[str(key)] = {"value": value, "t": now}
        store.write_json(WATCH_STATE_FILE, state)


def alert_due(directory, key, value, realert_after, clock=time.time):
    """False when the alert ``key`` was sent with this ``value`` less than ``realert_after`` s ago
    (so a cause that lasts, Ganglia down for example, is not alerted every minute)."""
    path = os.path.join(directory, WATCH_STATE_FILE)
    try:
        data = read_json(path, None)
    except JsonFileError as err:
        raise WatchError("state file %s is not valid JSON (%s); move it aside to start afresh"
                         % (path, err.cause)) from err
    if data is None:
        return True
    last = (data.get("alerts") or {}).get(str(key))
    return not last or last.get("value") != value or clock() - float(last.get("t") or 0) >= realert_after


def verdict_history(directory, node):
    try:
        return read_json(os.path.join(directory, WATCH_STATE_FILE)).get("nodes", {}).get(node, {}).get("history", [])
    except (OSError, ValueError):
        return []


# -- quarantine ---------------------------------------------------------------
def quarantine(directory, state, node=None, reason=None, record=None, flap_window=86400.0, flap_limit=3,
               force=False, dry_run=False, clock=time.time, lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """``present``: quarantine node (counting an evacuation when ``record`` is given);
    ``absent``: return it to service, unless the anti-flap rule holds it;
    ``query``: list. Returns a dict with ``changed``, ``quarantined`` and, per call, details."""
    if state not in ("present", "absent", "query"):
        raise WatchError("state must be present, absent or query, got %r" % (state,))
    if state != "query":
        check_name("node", node, error=WatchError)
    if flap_limit < 1:
        raise WatchError("flap_limit must be >= 1, got %r" % (flap_limit,))
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    if dry_run and not os.path.isdir(directory):
        data = {"nodes": {}}
        return _quarantine_apply(data, state, node, reason, record, flap_window, flap_limit, force, clock())
    with store:
        data = store.read_json(QUARANTINE_FILE, {"nodes": {}})
        out = _quarantine_apply(data, state, node, reason, record, flap_window, flap_limit, force, clock())
        if out["changed"] and not dry_run:
            store.write_json(QUARANTINE_FILE, out.pop("_data"))
        out.pop("_data", None)
        return out


def _quarantine_apply(data, state, node, reason, record, flap_window, flap_limit, force, now):
    nodes = data.setdefault("nodes", {})
    history = data.setdefault("evacuations", {})
    out = {"changed": False, "node": node, "held": False, "msg": ""}
    if state == "present":
        entry = nodes.get(node)
        if record:
            history.setdefault(node, []).append({"t": round(now, 3), "at": utc_iso(now), "record": record})
            out["changed"] = True
        if entry is None:
            nodes[node] = {"since": round(now, 3), "at": utc_iso(now), "reason": reason or "evacuated",
                           "record": record}
            out["changed"] = True
            out["msg"] = "%s quarantined: %s" % (node, reason or "evacuated")
        else:
            out["msg"] = "%s was already quarantined since %s" % (node, entry.get("at"))
    elif state == "absent":
        recent = [e for e in history.get(node, []) if now - e["t"] <= flap_window]
        if node not in nodes:
            out["msg"] = "%s is not quarantined" % node
        elif len(recent) >= flap_limit and not force:
            out["held"] = True
            out["msg"] = ("%s stays quarantined: evacuated %d times within %ds (anti-flap limit %d); "
                          "fix the node, then return it with force" % (node, len(recent), flap_window, flap_limit))
        else:
            del nodes[node]
            out["changed"] = True
            out["msg"] = "%s returned to service" % node
        out["recent_evacuations"] = len(recent)
    out["quarantined"] = {k: dict(v) for k, v in sorted(nodes.items())}
    out["_data"] = data
    return out


# -- journal and audit ---------------------------------------------------------
def _proc_stat(pid):
    """(ppid, start time in clock ticks) of a process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def controller_identity(pid=None):
    """The ansible-playbook (or ansible) process this module runs under: the highest ancestor
    whose command line names it, as {"pid", "start"}. A journal entry carries it, so that a later
    run can tell an evacuation still in progress (that process alive) from one whose run died."""
    pid = pid or os.getpid()
    found = None
    seen = 0
    while pid > 1 and seen < 64:
        seen += 1
        st = _proc_stat(pid)
        if st is None:
            break
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            break
        if any(os.path.basename(a).startswith((b"ansible-playbook", b"ansible")) for a in argv[:3]):
            found = {"pid": pid, "start": st[1]}
        pid = st[0]
    return found


def process_alive(identity):
    if not identity or not identity.get("pid"):
        return False
    st = _proc_stat(int(identity["pid"]))
    return st is not None and st[1] == identity.get("start")


def _record_id(record):
    rid = record.get("id")
    if rid is None:
        rid = "%s-%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), record.get("node", "x"),
                            uuid.uuid4().hex[:6])
    if not _ID_RE.match(str(rid)):
        raise WatchError("record id %r is not usable (letters, digits, _ . : -)" % (rid,))
    return str(rid)


def read_audit(path):
    """The records of the audit log ``path``, and a warning for each line that is not a whole record.

    Returns ``(records, warnings)``, in the order of the file; a missing file has neither. A line that
    is not one whole JSON object (torn by a crash or a full disk mid-append, in older pft versions) is
    skipped, never guessed at, and its warning names its line number."""
    records, warnings = [], []
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except ValueError:
                    rec = None
                if isinstance(rec, dict):
                    records.append(rec)
                else:
                    warnings.append("%s line %d is not a whole JSON record (torn write?): skipped" % (path, number))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise WatchError("cannot read the audit log %s: %s" % (path, StateDir.cause(exc))) from exc
    return records, warnings


def audit(directory, state, record=None, record_id=None, outcome=None, audit_file=None, dry_run=False,
          clock=time.time, lock_timeout=DEFAULT_LOCK_TIMEOUT, limit=None):
    """``started``: journal an evacuation (returns its id); ``completed``: merge ``record`` into the
    journal entry, append it to the audit log and drop the entry (only once the record is whole on
    disk: a failed append keeps the entry); ``event``: append ``record`` at once; ``pending``: list
    journal entries left by runs that did not finish; ``query``: read the audit log (read-only, no
    lock): ``records`` (with ``outcome`` only those, the last ``limit`` of them) and ``warnings``
    about torn lines skipped."""
    if state not in ("started", "completed", "event", "pending", "query"):
        raise WatchError("state must be started, completed, event, pending or query, got %r" % (state,))
    record = dict(record or {})
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    now = clock()
    if state == "query":
        return _audit_query(store, audit_file, outcome, limit)
    if state == "pending":
        return _journal_pending(store)
    if state == "started":
        return _journal_started(store, record, record_id, now, dry_run)
    if state == "event":
        return _audit_event(store, record, record_id, outcome, audit_file, now, dry_run)
    return _journal_completed(store, record, record_id, outcome, audit_file, now, dry_run)


def _journal_name(record_id):
    return os.path.join(JOURNAL_DIR, record_id + ".json")


def _audit_query(store, audit_file, outcome, limit):
    """The records of the audit log (read-only, no lock): only ``outcome``'s, the last ``limit``."""
    if limit is not None and limit < 1:
        raise WatchError("limit must be >= 1, got %r" % (limit,))
    path = audit_file or store.path(AUDIT_LOG)
    records, warnings = read_audit(path)
    if outcome:
        records = [r for r in records if r.get("outcome") == outcome]
    if limit is not None:
        records = records[-limit:]
    return {"changed": False, "records": records, "warnings": warnings, "audit_file": path}


def _journal_pending(store):
    """The journal entries, each with ``in_progress`` (the run that began it still runs)."""
    jdir = store.path(JOURNAL_DIR)
    entries = []
    if os.path.isdir(jdir):
        try:
            names = sorted(os.listdir(jdir))
        except OSError as exc:
            raise store.error("list", jdir, exc) from exc
        for fn in names:
            if fn.endswith(".json"):
                try:
                    with open(os.path.join(jdir, fn)) as fh:
                        entries.append(json.load(fh))
                except (OSError, ValueError) as exc:
                    entries.append({"id": fn[:-5], "error": "unreadable journal entry: %s" % exc})
    for entry in entries:
        # the run that began it still runs (an operator's evacuate.yml, a watch run in its queue):
        # in progress, nothing for a later run to finish
        ctl = entry.get("controller")
        entry["in_progress"] = bool(isinstance(ctl, dict) and process_alive(ctl))
    return {"changed": False, "pending": entries,
            "interrupted": [e for e in entries if not e["in_progress"]]}


def _journal_started(store, record, record_id, now, dry_run):
    """Journal an evacuation begun now; an entry of that id already there is returned unchanged."""
    rid = record_id or _record_id(record)
    entry = dict(record, id=rid, started=round(now, 3), started_at=utc_iso(now), status="in-progress",
                 controller=controller_identity())
    if dry_run:
        return {"changed": True, "id": rid, "record": entry}
    with store:
        existing = store.read_json(_journal_name(rid), None)
        if existing is not None:
            return {"changed": False, "id": rid, "record": existing}
        store.write_json(_journal_name(rid), entry)
    return {"changed": True, "id": rid, "record": entry}


def _audit_event(store, record, record_id, outcome, audit_file, now, dry_run):
    """Append ``record`` to the audit log at once (no journal entry)."""
    rid = record_id or _record_id(record)
    entry = dict(record, id=rid, time=round(now, 3), at=utc_iso(now))
    entry.setdefault("outcome", outcome or "event")
    if dry_run:
        return {"changed": True, "id": rid, "record": entry}
    with store:
        path = store.append_audit(entry, audit_file)
    return {"changed": True, "id": rid, "record": entry, "audit_file": path}


def _journal_completed(store, record, record_id, outcome, audit_file, now, dry_run):
    """Merge ``record`` into the journal entry, append it to the audit log, then drop the entry."""
    if not record_id:
        raise WatchError("state=completed needs the record id that state=started returned")
    if not _ID_RE.match(record_id):
        raise WatchError("record id %r is not usable" % (record_id,))
    if not outcome:
        raise WatchError("state=completed needs an outcome (for example migrated, failed, reconciled)")
    if dry_run:
        return {"changed": True, "id": record_id, "record": dict(record, id=record_id, outcome=outcome)}
    with store:
        jname = _journal_name(record_id)
        entry = store.read_json(jname, None)
        if entry is None:
            return {"changed": False, "id": record_id, "record": None,
                    "msg": "no journal entry %s (already completed?)" % record_id}
        entry.update(record)
        entry.update(id=record_id, outcome=outcome, status="completed", finished=round(now, 3),
                     finished_at=utc_iso(now))
        if entry.get("started") is not None:
            entry["duration_s"] = round(now - entry["started"], 3)
        path = store.append_audit(entry, audit_file)     # raises, keeping the entry, unless whole and fsynced
        store.remove(jname)
    return {"changed": True, "id": record_id, "record": entry, "audit_file": path}


def reconcile(directory, placements, audit_file=None, dry_run=False, clock=time.time,
              lock_timeout=DEFAULT_LOCK_TIMEOUT, stale_after=3600.0, alive=process_alive, migrating=None):
    """Finish the journal entries that a killed run left behind.

    ``placements`` maps every compute node to the guests its ``xl list`` shows (None when it
    could not be asked). An entry whose guest runs exactly once is completed with outcome
    ``reconciled`` and ``location`` (``target``, ``source`` or ``elsewhere``); its reservation
    owner is returned for release. An entry whose guest runs nowhere, twice, or cannot be found
    for sure stays pending and is returned with ``alert`` set: a human must look.
    An entry whose run is still alive (its ansible-playbook process; or, when that is unknown, one
    younger than ``stale_after`` seconds) is in progress, not interrupted: it is left alone.
    So is a guest whose migration is still running although the run that began it died
    (``migrating``: node -> guests whose ``xl migrate`` still holds its lock there, from
    ``xen_domain_info``; or the guest seen under a hand-over name, ``--incoming`` or
    ``--migratedaway``): it is ``in_flight``, its reservation stays, and a later run looks again."""
    pending = audit(directory, "pending", clock=clock, lock_timeout=lock_timeout)["pending"]
    items = []
    changed = False
    now = clock()
    for entry in pending:
        ctl = entry.get("controller")
        if (ctl and alive(ctl)) or (not ctl and now - float(entry.get("started") or 0) < stale_after):
            items.append({"id": entry.get("id"), "guest": entry.get("guest"), "node": entry.get("node"),
                          "alert": False, "state": "in-progress", "owner": None,
                          "msg": "%s: its run is still going (%s)" % (entry.get("id"),
                                                                      "pid %s" % ctl["pid"] if ctl else "recent")})
            continue
        guest = entry.get("guest")
        if not guest:
            items.append({"id": entry.get("id"), "alert": True, "state": "unreadable",
                          "msg": "journal entry %s names no guest: %s" % (entry.get("id"), entry.get("error", ""))})
            continue
        loc = locate_guest(guest, placements, migrating)
        item = {"id": entry["id"], "guest": guest, "node": entry.get("node"), "target": entry.get("target"),
                "owner": entry.get("owner"), "action": entry.get("action"), "state": loc["state"],
                "running_on": loc["running_on"], "leftovers": loc["leftovers"],
                "alert": loc["state"] not in ("once", "in_flight")}
        if loc["state"] == "in_flight":
            item["msg"] = ("%s is still moving (%s): journal entry %s and its reservation are kept; the next run "
                           "looks again" % (guest, loc["why"], entry["id"]))
        elif loc["state"] == "once":
            where = loc["running_on"][0]
            item["location"] = ("target" if where == entry.get("target") else
                                "source" if where == entry.get("node") else "elsewhere")
            done = audit(directory, "completed", record={"location": item["location"], "running_on": where,
                                                          "leftovers": loc["leftovers"],
                                                          "note": "completed by a later run (the run that began "
                                                                  "it did not finish)"},
                         record_id=entry["id"], outcome="reconciled", audit_file=audit_file, dry_run=dry_run,
                         clock=clock, lock_timeout=lock_timeout)
            changed = changed or done["changed"]
            item["msg"] = "%s runs once, on %s (%s): record %s completed" % (guest, where, item["location"],
                                                                             entry["id"])
        else:
            item["msg"] = {"none": "%s runs on NO node" % guest,
                           "twice_or_more": "%s runs on %d nodes: %s" % (guest, len(loc["running_on"]),
                                                                         ", ".join(loc["running_on"])),
                           "uncertain": "%s not found; could not ask %s" % (guest, ", ".join(loc["unreachable"]))
                           }[loc["state"]] + ": journal entry %s left pending" % entry["id"]
        items.append(item)
    return {"changed": changed,
            "reconciled": [i for i in items if i["state"] not in ("in-progress", "in_flight")],
            "in_progress": [i for i in items if i["state"] == "in-progress"],
            "in_flight": [i for i in items if i["state"] == "in_flight"],
            "alerts": [i for i in items if i["alert"]]}


def locate_guest(guest, placements, migrating=None):
    """Where does ``guest`` run? ``placements`` maps node -> list of guest names that node's
    ``xl list`` shows (or None when that node could not be asked); ``migrating`` maps node -> the
    guests whose ``xl migrate`` is running there. Returns a dict with ``running_on`` (list),
    ``unreachable`` (nodes), ``leftovers`` (``--incoming``/``--migratedaway`` domains) and
    ``state``: in_flight (a migration of it still runs; or, when ``migrating`` is not known at all,
    a hand-over name shows: ``why`` says which; nothing about it is final yet), once, none,
    twice_or_more, or uncertain (not found on the reachable nodes while some node could not be asked)."""
    running, leftovers, unreachable = [], [], []
    for node, guests in sorted(placements.items()):
        if guests is None:
            unreachable.append(node)
            continue
        for g in guests:
            if g == guest:
                running.append(node)
            elif g in (guest + "--incoming", guest + "--migratedaway"):
                leftovers.append({"node": node, "domain": g})
    moving = sorted(n for n, gs in (migrating or {}).items() if guest in (gs or ()))
    why = None
    if moving:
        st, why = "in_flight", "xl migrate of it still runs on %s" % ", ".join(moving)
    elif leftovers and migrating is None:
        # no word on running migrations: a hand-over name may be a migration still going
        st, why = "in_flight", "hand-over domain%s %s" % ("s" if len(leftovers) > 1 else "", ", ".join(
            "%s on %s" % (x["domain"], x["node"]) for x in leftovers))
    elif len(running) == 1:
        st = "once"
    elif len(running) > 1:
        st = "twice_or_more"
    elif unreachable:
        st = "uncertain"
    else:
        st = "none"
    return {"guest": guest, "running_on": running, "unreachable": unreachable, "leftovers": leftovers,
            "state": st, "why": why}
