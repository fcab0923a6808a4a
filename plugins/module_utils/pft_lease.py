# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller lock: one pft playbook at a time reserves, moves and releases spares.

``watch.yml`` (from cron), ``evacuate.yml`` and ``return.yml`` (run by an admin) all change the
same reservations, journal and quarantine. Each of those files has its own short ``flock``, which
keeps every single change whole, but a playbook's steps (reserve, move, release) span many module
runs. The controller lock makes those steps of one playbook run exclusive.

No process of the playbook lives from one task to the next, so the lock is a lease held by the
``ansible-playbook`` process itself: ``<state_dir>/controller-lock.json`` names it (pid and start
time, see :func:`pft_state.controller_identity`), the playbook and why. A lease whose process is
gone (a killed run) is free: nobody has to clean up after a crash. Taking and giving it back
happen under the state directory's ``flock``; a holder takes it again at no cost (re-entrant).
"""
from __future__ import annotations

import os
import time

from ansible.module_utils.pft_common import CONTROLLER_LEASE_FILE, DEFAULT_LOCK_TIMEOUT, utc_iso
from ansible.module_utils.pft_state import StateDir, WatchError, controller_identity, process_alive

LEASE = CONTROLLER_LEASE_FILE


class LeaseHeld(WatchError):
    """Another live playbook run holds the controller lock past the wait."""


def _describe(lease):
    return "%s (ansible-playbook pid %s, since %s)" % (lease.get("holder") or "a pft playbook",
                                                       lease.get("pid"), lease.get("at"))


def _same(lease, identity):
    return bool(lease) and lease.get("pid") == identity["pid"] and lease.get("start") == identity["start"]


def acquire(directory, holder, wait=60.0, identity=None, dry_run=False, clock=time.time, sleep=time.sleep,
            lock_timeout=DEFAULT_LOCK_TIMEOUT, alive=process_alive, poll=0.5):
    """Take the controller lock for ``holder`` (a short text: the playbook and what it does).

    Waits up to ``wait`` seconds while another live run holds it, then raises :class:`LeaseHeld`
    naming that run. Returns ``{"changed", "held_by", "took_over", "waited"}``; ``took_over`` is
    the lease of a run that died holding it. ``dry_run`` (check mode) only says whether it is free."""
    identity = identity or controller_identity()
    if not identity:
        raise WatchError("the controller lock is held by an ansible-playbook process, and none runs this "
                         "module (run it from a playbook on the controller)")
    store = StateDir(directory, lock_timeout=lock_timeout, clock=clock)
    started = time.monotonic()
    while True:
        if dry_run and not os.path.isdir(directory):
            return {"changed": True, "held_by": None, "took_over": None, "waited": 0.0}
        with store:
            lease = store.read_json(LEASE, None)
            if _same(lease, identity):
                return {"changed": False, "held_by": lease, "took_over": None, "waited": 0.0}
            free = lease is None or not alive(lease)
            if free:
                now = clock()
                mine = dict(identity, holder=holder, since=round(now, 3), at=utc_iso(now))
                if not dry_run:
                    store.write_json(LEASE, mine)
                return {"changed": True, "held_by": mine, "took_over": lease,
                        "waited": round(time.monotonic() - started, 3)}
        waited = time.monotonic() - started
        if waited >= wait:
            raise LeaseHeld("the controller lock %s is held by %s; waited %.0f s. %s may not reserve, move or "
                            "release now" % (store.path(LEASE), _describe(lease), waited, holder))
        sleep(min(poll, max(0.0, wait - waited)))


def release(directory, identity=None, dry_run=False, clock=time.time, lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """Give the lock back if this run holds it. Returns ``{"changed", "held_by"}``: another run's
    lease is left alone (``held_by`` names it)."""
    identity = identity or controller_identity()
    path = os.path.join(directory, LEASE)
    if not os.path.exists(path):
        return {"changed": False, "held_by": None}
    with StateDir(directory, lock_timeout=lock_timeout, clock=clock) as store:
        lease = store.read_json(LEASE, None)
        if identity and _same(lease, identity):
            if not dry_run:
                os.unlink(path)
            return {"changed": True, "held_by": None}
        return {"changed": False, "held_by": lease}
