# -*- coding: utf-8 -*-
"""The watch loop's memory and its decisions, on the pft controller.

Everything lives in one state directory (default ``/var/lib/pft``):

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
import fcntl
import json
import os
import re
import time
import uuid

DEFAULT_DIR = "/var/lib/pft"
DEFAULT_LOCK_TIMEOUT = 30.0
LEVELS = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,200}$")


# Options every watch module has; documented by the doc fragment pft.state_dir.
STATE_ARGS = dict(
    state_dir=dict(type="path", default=DEFAULT_DIR),
    lock_timeout=dict(type="float", default=DEFAULT_LOCK_TIMEOUT),
)


class WatchError(Exception):
    """A clear message naming the node, record or file at fault."""


def check_name(kind, name):
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise WatchError("%s name %r is not usable (letters, digits, _ . : - ; not starting with . or -)"
                         % (kind, name))
    return name


def iso(ts):
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class StateDir:
    """The files of the watch's state directory, changed under one lock."""

    def __init__(self, directory=DEFAULT_DIR, lock_timeout=DEFAULT_LOCK_TIMEOUT, clock=time.time):
        if not directory or not os.path.isabs(directory):
            raise WatchError("state directory %r must be an absolute path" % (directory,))
        self.directory = directory
        self.lock_timeout = lock_timeout
        self.clock = clock
        self._fd = None

    # -- files ------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def ensure(self):
        for d in (self.directory, self.path("journal")):
            try:
                os.makedirs(d, mode=0o750, exist_ok=True)
            except OSError as exc:
                raise WatchError("cannot create state directory %s: %s" % (d, exc.strerror))

    def __enter__(self):
        self.ensure()
        fd = os.open(self.path(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise WatchError("could not lock %s within %ss (another pft run holds it)"
                                     % (self.path(".lock"), self.lock_timeout))
                time.sleep(0.05)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def read_json(self, name, default):
        path = self.path(name)
        try:
            with open(path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return default
        except ValueError as exc:
            raise WatchError("state file %s is not valid JSON (%s); move it aside to start afresh" % (path, exc))

    def write_json(self, name, data):
        path = self.path(name)
        tmp = "%s.%s.tmp" % (path, uuid.uuid4().hex[:8])
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def append_audit(self, record, audit_file=None):
        path = audit_file or self.path("audit.jsonl")
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return path


# -- decisions --------------------------------------------------------------
def _bad_sensors(node):
    """The sensors of one ipmi_health_info node result that are not ok, with their values."""
    out = {}
    for name, s in sorted((node.get("sensors") or {}).items()):
        if s.get("verdict", "ok") != "ok" or s.get("pending"):
            out[name] = {k: s.get(k) for k in ("verdict", "value", "min", "max", "trend_per_min", "reason",
                                                "pending", "history") if s.get(k) is not None}
    return out


def decide(health, quarantined=(), prestaged=None, state=None, now=None, history_len=20,
           realert_after=3600.0, prestage_on="warning", evacuate_on="critical", release_after_ok=True):
    """Turn one health result into a plan; returns ``(plan, new_state)``.

    ``health`` is ipmi_health_info's result (``nodes``). ``quarantined`` are nodes
    already evacuated (never acted on again until returned to service).
    ``prestaged`` maps node -> target host reserved for it. ``state`` is the previous
    watch-state (verdict history and last alerts).

    * a confirmed verdict at ``evacuate_on`` or worse -> evacuate;
    * at ``prestage_on`` (and below ``evacuate_on``) -> pre-stage a target, unless one is;
    * ``unknown`` -> alert only, never evacuate;
    * back to ``ok`` with a pre-staged target -> release it;
    * alerts are sent when a node's verdict changes, and again after ``realert_after`` s.
    """
    if now is None:
        now = time.time()
    for name, level in (("prestage_on", prestage_on), ("evacuate_on", evacuate_on)):
        if level not in ("warning", "critical"):
            raise WatchError("%s must be warning or critical, got %r" % (name, level))
    if LEVELS[prestage_on] > LEVELS[evacuate_on]:
        raise WatchError("prestage_on (%s) must not be worse than evacuate_on (%s)" % (prestage_on, evacuate_on))
    nodes = (health or {}).get("nodes")
    if not isinstance(nodes, dict):
        raise WatchError("health must be the result of ipmi_health_info (a dict with 'nodes'), got %r"
                         % (type(health).__name__,))
    quarantined = set(quarantined or ())
    prestaged = dict(prestaged or {})
    state = json.loads(json.dumps(state or {}))
    state.setdefault("nodes", {})
    plan = {"evacuate": [], "prestage": [], "release": [], "alerts": [], "nodes": {}}

    for name in sorted(nodes):
        node = nodes[name] or {}
        verdict = node.get("verdict", "unknown")
        if verdict not in LEVELS:
            raise WatchError("node %s: unknown verdict %r" % (name, verdict))
        ns = state["nodes"].setdefault(name, {})
        hist = ns.setdefault("history", [])
        hist.append({"t": round(now, 3), "at": iso(now), "verdict": verdict, "reason": node.get("reason")})
        del hist[:-history_len]
        item = {"node": name, "verdict": verdict, "reason": node.get("reason"), "fired": node.get("fired"),
                "sensors": _bad_sensors(node), "history": list(hist), "error": node.get("error")}
        if name in quarantined:
            action = "none"
            why = "quarantined (already evacuated; return it to service with playbooks/return.yml)"
        elif LEVELS[verdict] >= LEVELS[evacuate_on] and verdict != "unknown":
            action, why = "evacuate", "verdict %s" % verdict
            if name in prestaged:
                item["prestaged_target"] = prestaged[name]
            plan["evacuate"].append(item)
        elif LEVELS[verdict] >= LEVELS[prestage_on] and verdict != "unknown":
            if name in prestaged:
                action, why = "none", "already pre-staged on %s" % prestaged[name]
            else:
                action, why = "prestage", "verdict %s" % verdict
                plan["prestage"].append(item)
        elif verdict == "unknown":
            action, why = "alert", "health unknown: never evacuate on missing data"
        elif name in prestaged and release_after_ok:
            action, why = "release", "back to ok: releasing the pre-staged target %s" % prestaged[name]
            plan["release"].append({"node": name, "target": prestaged[name]})
        else:
            action, why = "none", "ok"
        plan["nodes"][name] = {"verdict": verdict, "action": action, "why": why}

        last = ns.get("alerted") or {}
        if verdict != "ok" or last.get("verdict") not in (None, "ok"):
            changed = last.get("verdict") != verdict
            stale = last.get("t") is None or now - last["t"] >= realert_after
            if changed or (verdict != "ok" and stale):
                severity = {"ok": "info", "unknown": "warning", "warning": "warning", "critical": "critical"}[verdict]
                if verdict == "ok":
                    subject = "pft: %s is healthy again" % name
                else:
                    subject = "pft: %s is %s: %s" % (name, verdict, node.get("reason") or node.get("error") or "")
                plan["alerts"].append({"node": name, "verdict": verdict, "severity": severity,
                                       "subject": subject.strip().rstrip(":"), "action": action,
                                       "details": {"why": why, "reason": node.get("reason"),
                                                   "fired": node.get("fired"), "error": node.get("error"),
                                                   "sensors": item["sensors"]}})
                ns["alerted"] = {"verdict": verdict, "t": round(now, 3)}
    # worst first, then by name: critical nodes get the first migration slots
    plan["evacuate"].sort(key=lambda i: (-LEVELS[i["verdict"]], i["node"]))
    plan["summary"] = {k: [i["node"] for i in plan[k]] for k in ("evacuate", "prestage")}
    plan["summary"]["release"] = [i["node"] for i in plan["release"]]
    plan["summary"]["alert"] = [a["node"] for a in plan["alerts"]]
    return plan, state


OWNER_PREFIX = "pft-"


def owner_for(node, guest):
    """The spare reservation owner of one guest's evacuation or pre-stage."""
    return "%s%s/%s" % (OWNER_PREFIX, node, guest)


def prestaged_targets(reservation_dir, clock=time.time, owners=False):
    """node -> target of the live reservations held by pft's pre-stages and evacuations
    (with ``owners``: node -> list of reservation owners)."""
    from ansible.module_utils.pft_reservation import ReservationStore
    out, own = {}, {}
    for host, res in sorted(ReservationStore(reservation_dir, clock=clock).active().items()):
        if res.owner.startswith(OWNER_PREFIX) and "/" in res.owner:
            node = res.owner[len(OWNER_PREFIX):].split("/", 1)[0]
            out.setdefault(node, host)
            own.setdefault(node, []).append(res.owner)
    return (out, own) if owners else out


def run_decide(directory, health, quarantined=None, prestaged=None, dry_run=False, clock=time.time,
               lock_timeout=DEFAULT_LOCK_TIMEOUT, reservation_dir=None, **policy):
    """decide() with the state directory: quarantine, verdict history, alert memory, and (from
    ``reservation_dir``) the pre-staged targets when ``prestaged`` is not given."""
    owners = {}
    if prestaged is None:
        prestaged, owners = prestaged_targets(reservation_dir, clock, owners=True) if reservation_dir else ({}, {})
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    if dry_run and not os.path.isdir(directory):
        plan = decide(health, quarantined or [], prestaged, {}, clock(), **policy)[0]
        return _with_owners(plan, prestaged, owners)
    with store:
        state = store.read_json("watch-state.json", {})
        if quarantined is None:
            quarantined = sorted(store.read_json("quarantine.json", {}).get("nodes", {}))
        plan, new_state = decide(health, quarantined, prestaged, state, clock(), **policy)
        if not dry_run:
            store.write_json("watch-state.json", new_state)
    return _with_owners(plan, prestaged, owners)


def _with_owners(plan, prestaged, owners):
    plan["prestaged"] = prestaged
    for item in plan["release"]:
        item["owners"] = owners.get(item["node"], [])
    return plan


def verdict_history(directory, node):
    try:
        with open(os.path.join(directory, "watch-state.json")) as fh:
            return json.load(fh).get("nodes", {}).get(node, {}).get("history", [])
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
        check_name("node", node)
    if flap_limit < 1:
        raise WatchError("flap_limit must be >= 1, got %r" % (flap_limit,))
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    if dry_run and not os.path.isdir(directory):
        data = {"nodes": {}}
        return _quarantine_apply(data, state, node, reason, record, flap_window, flap_limit, force, clock())
    with store:
        data = store.read_json("quarantine.json", {"nodes": {}})
        out = _quarantine_apply(data, state, node, reason, record, flap_window, flap_limit, force, clock())
        if out["changed"] and not dry_run:
            store.write_json("quarantine.json", out.pop("_data"))
        out.pop("_data", None)
        return out


def _quarantine_apply(data, state, node, reason, record, flap_window, flap_limit, force, now):
    nodes = data.setdefault("nodes", {})
    history = data.setdefault("evacuations", {})
    out = {"changed": False, "node": node, "held": False, "msg": ""}
    if state == "present":
        entry = nodes.get(node)
        if record:
            history.setdefault(node, []).append({"t": round(now, 3), "at": iso(now), "record": record})
            out["changed"] = True
        if entry is None:
            nodes[node] = {"since": round(now, 3), "at": iso(now), "reason": reason or "evacuated",
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


def audit(directory, state, record=None, record_id=None, outcome=None, audit_file=None, dry_run=False,
          clock=time.time, lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """``started``: journal an evacuation (returns its id); ``completed``: merge ``record`` into the
    journal entry, append it to the audit log and drop the entry; ``event``: append ``record`` at once;
    ``pending``: list journal entries left by runs that did not finish."""
    if state not in ("started", "completed", "event", "pending"):
        raise WatchError("state must be started, completed, event or pending, got %r" % (state,))
    record = dict(record or {})
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    now = clock()
    if state == "pending":
        jdir = store.path("journal")
        entries = []
        if os.path.isdir(jdir):
            for fn in sorted(os.listdir(jdir)):
                if fn.endswith(".json"):
                    try:
                        with open(os.path.join(jdir, fn)) as fh:
                            entries.append(json.load(fh))
                    except (OSError, ValueError) as exc:
                        entries.append({"id": fn[:-5], "error": "unreadable journal entry: %s" % exc})
        return {"changed": False, "pending": entries}
    if state == "started":
        rid = record_id or _record_id(record)
        entry = dict(record, id=rid, started=round(now, 3), started_at=iso(now), status="in-progress",
                     controller=controller_identity())
        if dry_run:
            return {"changed": True, "id": rid, "record": entry}
        with store:
            existing = store.read_json(os.path.join("journal", rid + ".json"), None)
            if existing is not None:
                return {"changed": False, "id": rid, "record": existing}
            store.write_json(os.path.join("journal", rid + ".json"), entry)
        return {"changed": True, "id": rid, "record": entry}
    if state == "event":
        rid = record_id or _record_id(record)
        entry = dict(record, id=rid, time=round(now, 3), at=iso(now))
        entry.setdefault("outcome", outcome or "event")
        if dry_run:
            return {"changed": True, "id": rid, "record": entry}
        with store:
            path = store.append_audit(entry, audit_file)
        return {"changed": True, "id": rid, "record": entry, "audit_file": path}
    # completed
    if not record_id:
        raise WatchError("state=completed needs the record id that state=started returned")
    if not _ID_RE.match(record_id):
        raise WatchError("record id %r is not usable" % (record_id,))
    if not outcome:
        raise WatchError("state=completed needs an outcome (for example migrated, failed, reconciled)")
    if dry_run:
        return {"changed": True, "id": record_id, "record": dict(record, id=record_id, outcome=outcome)}
    with store:
        jname = os.path.join("journal", record_id + ".json")
        entry = store.read_json(jname, None)
        if entry is None:
            return {"changed": False, "id": record_id, "record": None,
                    "msg": "no journal entry %s (already completed?)" % record_id}
        entry.update(record)
        entry.update(id=record_id, outcome=outcome, status="completed", finished=round(now, 3),
                     finished_at=iso(now))
        if entry.get("started") is not None:
            entry["duration_s"] = round(now - entry["started"], 3)
        path = store.append_audit(entry, audit_file)
        os.unlink(store.path(jname))
    return {"changed": True, "id": record_id, "record": entry, "audit_file": path}


def reconcile(directory, placements, audit_file=None, dry_run=False, clock=time.time,
              lock_timeout=DEFAULT_LOCK_TIMEOUT, stale_after=3600.0, alive=process_alive):
    """Finish the journal entries that a killed run left behind.

    ``placements`` maps every compute node to the guests its ``xl list`` shows (None when it
    could not be asked). An entry whose guest runs exactly once is completed with outcome
    ``reconciled`` and ``location`` (``target``, ``source`` or ``elsewhere``); its reservation
    owner is returned for release. An entry whose guest runs nowhere, twice, or cannot be found
    for sure stays pending and is returned with ``alert`` set: a human must look.
    An entry whose run is still alive (its ansible-playbook process; or, when that is unknown, one
    younger than ``stale_after`` seconds) is in progress, not interrupted: it is left alone."""
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
        loc = locate_guest(guest, placements)
        item = {"id": entry["id"], "guest": guest, "node": entry.get("node"), "target": entry.get("target"),
                "owner": entry.get("owner"), "action": entry.get("action"), "state": loc["state"],
                "running_on": loc["running_on"], "leftovers": loc["leftovers"], "alert": loc["state"] != "once"}
        if loc["state"] == "once":
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
    return {"changed": changed, "reconciled": [i for i in items if i["state"] != "in-progress"],
            "in_progress": [i for i in items if i["state"] == "in-progress"],
            "alerts": [i for i in items if i["alert"]]}


def locate_guest(guest, placements):
    """Where does ``guest`` run? ``placements`` maps node -> list of guest names that node's
    ``xl list`` shows (or None when that node could not be asked). Returns a dict with
    ``running_on`` (list), ``unreachable`` (nodes), ``leftovers`` (``--incoming``/``--migratedaway``
    domains of an interrupted migration) and ``state``: once, none, twice_or_more, or uncertain
    (not found on the reachable nodes while some node could not be asked)."""
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
    if len(running) == 1:
        st = "once"
    elif len(running) > 1:
        st = "twice_or_more"
    elif unreachable:
        st = "uncertain"
    else:
        st = "none"
    return {"guest": guest, "running_on": running, "unreachable": unreachable, "leftovers": leftovers,
            "state": st}
