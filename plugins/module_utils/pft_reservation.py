# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Spare reservations on the pft controller.

Two evacuations running at once must never get the same spare. A reservation
is a small JSON file ``<dir>/<host>.json`` holding the host, the owner (who
evacuates what), creation time and expiry (wall clock, seconds since epoch).

Atomicity
    * Every change (reserve, release, reclaim) holds an exclusive ``flock`` on
      ``<dir>/.lock``, with a deadline, so reading "is it free or expired?" and
      writing the new reservation are one step for all pft processes.
    * A reservation file appears atomically: its content is written to a
      private temporary file that is then hard-linked to ``<host>.json``;
      ``link`` fails if the name exists (O_EXCL semantics), and readers never
      see a half-written file.
    * flock works between processes on one controller; the directory must be
      on a local file system (not NFS).

Semantics
    * ``reserve(hosts, owner, ttl)`` takes the first host of ``hosts`` (best
      first) that has no live reservation. If ``owner`` already holds a live
      reservation for one of them it is returned unchanged (idempotent).
    * ``release(hosts, owner)`` removes the owner's reservations; another
      owner's reservation is refused unless ``force``.
    * ``reclaim()`` removes expired reservations; ``reserve`` reclaims an
      expired reservation of a host it wants.
    * ``dry_run=True`` computes the same answer and writes nothing (check mode).
"""
from __future__ import annotations

import json
import os
import time
import uuid

from ansible.module_utils.pft_common import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATE_DIR,
    LOCK_FILE,
    NODE,
    RESERVATIONS_DIR,
    FileLock,
    JsonFileError,
    NameRule,
    atomic_write,
    check_name,
    lock_store,
    os_error_text,
    read_json,
    sync_dir,
    utc_iso,
)

DEFAULT_DIR = os.path.join(DEFAULT_STATE_DIR, RESERVATIONS_DIR)
DEFAULT_TTL = 1800
LOCK_NAME = LOCK_FILE
SUFFIX = ".json"
# A reserved host is a node of the cluster (pft_common.NODE); the message says what it is for.
HOST = NameRule(NODE.regex.pattern, "is not usable for a reservation (letters, digits, _ . : - ; "
                "not starting with . or -)")


class ReservationError(Exception):
    """A clear message naming the host, owner or directory at fault."""


def check_host(host):
    return check_name("host", host, rule=HOST, error=ReservationError)


def check_owner(owner):
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 512 or "\n" in owner:
        raise ReservationError("reservation owner %r must be a non-empty single-line string (<= 512 chars)"
                               % (owner,))
    return owner


def _corrupt(path, exc):
    """The ReservationError of a reservation file that is not one (``exc``: what was wrong)."""
    return ReservationError("reservation file %s is corrupt (%s%s); move it aside once no evacuation uses its host"
                            % (path, "missing field " if isinstance(exc, KeyError) else "",
                               (str(exc).splitlines() or [type(exc).__name__])[0]))


class Reservation:
    __slots__ = ("host", "owner", "created", "expires", "id", "pid", "purpose")

    def __init__(self, host, owner, created, expires, rid=None, pid=None, purpose=None):
        self.host = host
        self.owner = owner
        self.created = float(created)
        self.expires = float(expires)
        self.id = rid or uuid.uuid4().hex
        self.pid = pid
        self.purpose = purpose

    def expired(self, now):
        return self.expires <= now

    def as_dict(self, now=None):
        data = {"host": self.host, "owner": self.owner, "created": self.created, "expires": self.expires,
                "id": self.id, "pid": self.pid, "purpose": self.purpose}
        if now is not None:
            data["expired"] = self.expired(now)
            data["remaining"] = max(0.0, round(self.expires - now, 3))
        return data

    @classmethod
    def from_dict(cls, data):
        return cls(data["host"], data["owner"], data["created"], data["expires"], data.get("id"), data.get("pid"),
                   data.get("purpose"))


class ReservationStore:
    def __init__(self, directory=DEFAULT_DIR, lock_timeout=DEFAULT_LOCK_TIMEOUT, clock=time.time):
        if not directory or not os.path.isabs(directory):
            raise ReservationError("reservation directory %r must be an absolute path" % (directory,))
        self.directory = directory
        self.lock_timeout = float(lock_timeout)
        self.clock = clock

    # -- helpers ------------------------------------------------------------
    def _path(self, host):
        return os.path.join(self.directory, check_host(host) + SUFFIX)

    def _ensure_dir(self):
        try:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise ReservationError("reservation directory %s: cannot create it: %s"
                                   % (self.directory, os_error_text(exc))) from exc
        if not os.path.isdir(self.directory):
            raise ReservationError("reservation directory %s is not a directory" % self.directory)

    def _lock(self):
        """Exclusive flock on <dir>/.lock with a deadline; returns the held :class:`FileLock`."""
        self._ensure_dir()
        lock = FileLock(os.path.join(self.directory, LOCK_NAME), timeout=self.lock_timeout, mode=0o640, poll=0.01)
        return lock_store(lock, "reservation directory", self.directory, ReservationError,
                          "reservation lock %s still held by another process after %.1f s"
                          % (lock.path, self.lock_timeout))

    @staticmethod
    def _unlock(lock):
        if lock is not None:
            lock.release()

    def _read(self, path):
        try:
            return Reservation.from_dict(read_json(path))
        except FileNotFoundError:
            return None
        except JsonFileError as err:
            raise _corrupt(path, err.cause) from err
        except OSError as exc:
            raise ReservationError("reservation file %s: cannot read it: %s" % (path, os_error_text(exc))) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise _corrupt(path, exc) from exc

    def _write_new(self, reservation):
        """Create <host>.json atomically and durably (the directory is fsynced); False if it already exists."""
        final = self._path(reservation.host)
        tmp = os.path.join(self.directory, ".%s.%s.tmp" % (reservation.host, reservation.id))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(reservation.as_dict(), handle, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    return False
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            sync_dir(self.directory)
        except OSError as exc:
            raise ReservationError("reservation directory %s: cannot write %s: %s"
                                   % (self.directory, os.path.basename(final), os_error_text(exc))) from exc
        return True

    # -- API ----------------------------------------------------------------
    def list(self):
        """All reservations (live and expired), sorted by host."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for entry in sorted(os.listdir(self.directory)):
            if entry.startswith(".") or not entry.endswith(SUFFIX):
                continue
            reservation = self._read(os.path.join(self.directory, entry))
            if reservation is not None:
                found.append(reservation)
        return found

    def active(self, now=None):
        """``{host: Reservation}`` of live (unexpired) reservations."""
        now = self.clock() if now is None else now
        return {r.host: r for r in self.list() if not r.expired(now)}

    def reserve(self, hosts, owner, ttl=DEFAULT_TTL, dry_run=False, purpose=None):
        """Reserve the first free host of ``hosts`` (best first) for ``owner``, for ``purpose`` (why it
        is held: ``watch-prestage``, ``watch-evacuate``, ``operator-evacuate``, ``manual``; free text).

        The owner's own live reservation of one of ``hosts`` is returned; when ``purpose`` differs (a
        pre-stage becoming the evacuation) it is re-written with the new purpose, and its expiry is
        extended to ``ttl`` from now if that is later. Returns ``{"host", "reservation", "changed", "skipped",
        "reclaimed", "reason"}``;
        ``host`` is None when every host holds a live reservation of another owner.
        """
        check_owner(owner)
        hosts = [check_host(h) for h in hosts]
        if not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ReservationError("reservation ttl must be > 0 seconds, got %r" % (ttl,))
        lock = None if dry_run else self._lock()
        try:
            now = self.clock()
            current = {r.host: r for r in self.list()}
            # Idempotent: the owner already holds one of these hosts.
            for host in hosts:
                mine = current.get(host)
                if mine is not None and mine.owner == owner and not mine.expired(now):
                    changed = purpose is not None and purpose != mine.purpose
                    if changed:
                        mine = Reservation(host, owner, mine.created, max(mine.expires, now + ttl), mine.id,
                                           os.getpid(), purpose)
                        if not dry_run:
                            self._replace(mine)
                    return {"host": host, "reservation": mine.as_dict(now), "changed": changed, "skipped": {},
                            "reclaimed": [], "reason": "%s already reserved by %s%s" % (
                                host, owner, " (now for %s)" % purpose if changed else "")}
            skipped = {}
            reclaimed = []
            for host in hosts:
                held = current.get(host)
                if held is not None and not held.expired(now):
                    skipped[host] = held.owner
                    continue
                if held is not None:
                    reclaimed.append(held.as_dict(now))
                    if not dry_run:
                        self._remove_if_same(held)
                new = Reservation(host, owner, now, now + ttl, pid=os.getpid(), purpose=purpose)
                if not dry_run and not self._write_new(new):
                    # Only reachable if something bypasses the lock; never double-book.
                    skipped[host] = "(concurrent writer)"
                    continue
                return {"host": host, "reservation": new.as_dict(now), "changed": True, "skipped": skipped,
                        "reclaimed": reclaimed,
                        "reason": "%s reserved for %s until %s" % (host, owner, utc_iso(new.expires))}
            if not hosts:
                reason = "no spare: no hosts given"
            else:
                reason = "no spare: all %d host(s) reserved by other evacuations (%s)" % (
                    len(hosts), ", ".join("%s by %s" % (h, o) for h, o in skipped.items()))
            return {"host": None, "reservation": None, "changed": bool(reclaimed), "skipped": skipped,
                    "reclaimed": reclaimed, "reason": reason}
        finally:
            self._unlock(lock)

    def _replace(self, reservation):
        """Re-write the caller's own reservation (same id) in place, atomically; under the lock."""
        final = self._path(reservation.host)
        try:
            atomic_write(final, json.dumps(reservation.as_dict(), sort_keys=True), mode=0o640)
        except OSError as exc:
            raise ReservationError("reservation directory %s: cannot re-write %s: %s" % (
                self.directory, os.path.basename(final), os_error_text(exc))) from exc

    def _remove_if_same(self, reservation):
        path = self._path(reservation.host)
        current = self._read(path)
        if current is not None and current.id == reservation.id:
            os.unlink(path)
            return True
        return False

    def release(self, hosts=None, owner=None, force=False, dry_run=False):
        """Release reservations of ``owner`` (for ``hosts``, or all of the owner's when None).

        Another owner's reservation is refused unless ``force``. Expired ones
        are removed whoever owns them. Returns ``{"released", "refused", "absent", "changed"}``.
        """
        if owner is None and not force:
            raise ReservationError("releasing needs the owner (or force)")
        if owner is not None:
            check_owner(owner)
        if hosts is not None:
            hosts = [check_host(h) for h in hosts]
        if dry_run and not os.path.isdir(self.directory):
            return {"released": [], "refused": {}, "absent": list(hosts or []), "changed": False}
        lock = None if dry_run else self._lock()
        try:
            now = self.clock()
            current = {r.host: r for r in self.list()}
            targets = hosts if hosts is not None else sorted(h for h, r in current.items() if r.owner == owner)
            released, refused, absent = [], {}, []
            for host in targets:
                held = current.get(host)
                if held is None:
                    absent.append(host)
                    continue
                if held.owner != owner and not force and not held.expired(now):
                    refused[host] = held.owner
                    continue
                if dry_run or self._remove_if_same(held):
                    released.append(held.as_dict(now))
                else:
                    absent.append(host)
            return {"released": released, "refused": refused, "absent": absent, "changed": bool(released)}
        finally:
            self._unlock(lock)

    def reclaim(self, dry_run=False):
        """Remove expired reservations; returns the list removed (or that would be)."""
        if not os.path.isdir(self.directory):
            return []
        lock = None if dry_run else self._lock()
        try:
            now = self.clock()
            removed = []
            for reservation in self.list():
                if reservation.expired(now) and (dry_run or self._remove_if_same(reservation)):
                    removed.append(reservation.as_dict(now))
            return removed
        finally:
            self._unlock(lock)

