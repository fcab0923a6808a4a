# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pyghmi for pft: its import, its event loop, and pft's run-time fixes of pyghmi 1.6.x.

pyghmi is imported here once; :data:`HAS_PYGHMI` and
:data:`PYGHMI_IMPORT_ERROR` tell ipmi_health_info whether it is there (the
module reports its absence with ``missing_required_lib``).

The fixes patch pyghmi's session module at run time, and only where needed:

* :func:`install_wakeup_fix` (pyghmi 1.6.x only, unless forced): a request
  whose reply arrived before its waiter was queued no longer sleeps until
  pyghmi's 0.5-1 s retry timer (the lost wake-up).
* :func:`install_recv_fix` (pyghmi 1.6.x; harmless elsewhere): the IO thread
  receives with ``MSG_DONTWAIT``, so a sender that set the shared socket back
  to blocking cannot hang the process.
* :func:`forget_stale_login` (pyghmi 1.6.x): drops the str-keyed login record
  pyghmi never removes, so a second login to the same BMC in one process
  neither waits forever nor gets a broken session back.

:func:`close_session` sends Close Session without waiting for the answer
(pyghmi's own ``logout`` waits, one BMC after the other), so that a run can
give every BMC its session slot back at once before it exits.

:func:`install_pyghmi_fixes` installs the first two; ipmi_health_info reports
whether they are active (``pyghmi_fixes``).
"""

from __future__ import absolute_import, division, print_function

import struct
import threading

__metaclass__ = type

try:
    from pyghmi.ipmi import command as pyghmi_command
    from pyghmi.ipmi.private import session as pyghmi_session
    HAS_PYGHMI = True
    PYGHMI_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised via missing_required_lib
    pyghmi_command = pyghmi_session = None
    HAS_PYGHMI = False
    PYGHMI_IMPORT_ERROR = _exc

# ---------------------------------------------------------------------------
# The lost wake-up
# ---------------------------------------------------------------------------
# pyghmi 1.6.x: Session.awaitresponse() calls _io_wait(timeout, sockaddr),
# which queues a waiter for the IO thread and sleeps. If the BMC's reply was
# already received (and put on the session's pktqueue) before the waiter was
# queued, nothing wakes the waiter until pyghmi's retry timer (0.5-1 s)
# fires. Against a BMC that answers within ~100 us this happens to about half
# of all requests. The fix below registers the waiter exactly as pyghmi does
# and then returns at once if a reply for that BMC is already queued. It only
# changes the directed wait (myaddr given) and is installed only on the pyghmi
# versions it was verified on.

FIXED_PYGHMI_SERIES = ("1.6.",)


def _pyghmi_version():
    try:
        from importlib.metadata import version
        return version("pyghmi")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _reply_queued(session_mod, myaddr):
    handlers = session_mod.Session.bmc_handlers.get(myaddr) or {}
    for sess in list(handlers.values()):
        if getattr(sess, "pktqueue", None):
            return True
    return False


def install_wakeup_fix(session_mod=None, force=False):
    """Install the lost-wakeup fix into pyghmi's session module.

    Returns True when the fix is (now or already) active. It is not installed
    on pyghmi versions it was not verified on, unless ``force``.
    """
    session_mod = session_mod or pyghmi_session
    if session_mod is None:
        return False
    current = session_mod._io_wait
    if getattr(current, "pft_wakeup_fix", False):
        return True
    required = ("ioqueue", "iosockets", "Session", "_monotonic_time")
    if not all(hasattr(session_mod, name) for name in required):
        return False
    if not force and not _pyghmi_version().startswith(FIXED_PYGHMI_SERIES):
        return False
    original = current

    def _io_wait(timeout, myaddr=None, evq=None):
        if myaddr is None:
            return original(timeout, myaddr, evq)
        evt = threading.Event()
        if evq is not None:
            evq.append(evt)
        deadline = timeout + session_mod._monotonic_time()
        session_mod.ioqueue.append((deadline, evt, myaddr))
        if deadline < session_mod.selectdeadline:
            # break the IO thread out of select() so it sees the new deadline
            intsock = session_mod.iosockets[0]
            intsock = getattr(intsock, "fd", intsock)
            intsock.sendto(b"\x01", (session_mod.myself, session_mod.iosockets[0].getsockname()[1]))
        if _reply_queued(session_mod, myaddr):
            return None  # the reply is already here; the stale waiter expires harmlessly
        evt.wait()
        return None

    _io_wait.pft_wakeup_fix = True
    _io_wait.pft_original = original
    session_mod._io_wait = _io_wait
    return True


def install_recv_fix(session_mod=None):
    """Make pyghmi's IO thread receive without blocking, whatever the socket mode.

    pyghmi 1.6.x shares one UDP socket between its IO thread, which sets it
    non-blocking and then calls recvfrom() until it is empty, and the senders,
    which set the same socket back to blocking before each sendto(). If a
    send lands between the IO thread's setblocking(0) and its recvfrom(),
    the IO thread blocks in recvfrom() until some packet arrives; when every
    request is waiting on the IO thread, none ever does, and the process
    hangs (seen with 512 BMCs on one event loop). MSG_DONTWAIT makes each
    receive non-blocking on its own.
    """
    session_mod = session_mod or pyghmi_session
    if session_mod is None or not hasattr(session_mod, "_io_recvfrom"):
        return False
    if getattr(session_mod._io_recvfrom, "pft_recv_fix", False):
        return True
    import socket as _socket

    def _io_recvfrom(mysocket, size):
        mysocket = getattr(mysocket, "fd", mysocket)
        try:
            return mysocket.recvfrom(size, _socket.MSG_DONTWAIT)
        except (OSError, _socket.error):
            return None

    _io_recvfrom.pft_recv_fix = True
    _io_recvfrom.pft_original = session_mod._io_recvfrom
    session_mod._io_recvfrom = _io_recvfrom
    return True


def install_pyghmi_fixes(session_mod=None, force=False):
    """All of pft's run-time fixes for pyghmi 1.6.x; True when all are active."""
    woke = install_wakeup_fix(session_mod, force=force)
    if not woke:
        return False
    return install_recv_fix(session_mod)


def forget_stale_login(address, username, password, port, session_mod=None):
    """Drop pyghmi's record of an earlier login to this BMC, if any.

    pyghmi 1.6.x files a session under (bmc, userid, password, port, kg) in
    Session.initting_sessions while it logs in, but removes it with the
    userid and password as bytes, so the str-keyed entry stays. The next
    Command() for the same BMC in the same process then gets that old session
    back flagged "logging" and waits forever (a second run in one process),
    or gets a broken session back and can never log in again (a BMC that
    went away and came back). pft serialises requests per node, so no login
    for this BMC is in progress when it is called.
    """
    session_mod = session_mod or pyghmi_session
    if session_mod is None:
        return
    session_mod.Session.initting_sessions.pop((address, username, password, port, None), None)



def answered(session):
    """What the caller of ``raw_command(callback=...)`` owes pyghmi once the answer came: the session is
    free for its next request, and whoever waits for it is woken."""
    session.incommand = False
    while session.evq:
        session.evq.popleft().set()


def close_session(session, done):
    """Close a logged-in pyghmi session: Close Session (App netfn 6, command 0x3C, the session id) is
    sent now, and ``done(response)`` runs from pyghmi's event loop on its answer or its timeout. pyghmi
    then forgets the session as its own ``logout`` does (no keepalive, not logged in). Returns False,
    sending nothing, when the session is not logged in."""
    if not getattr(session, "logged", False):
        return False

    def closed(rsp):
        answered(session)
        session.lastpayload = None
        with pyghmi_session.util.protect(pyghmi_session.KEEPALIVE_SESSIONS):
            pyghmi_session.Session.keepalive_sessions.pop(session, None)
        session.logged = 0
        done(rsp)
    session.raw_command(netfn=6, command=0x3C, data=tuple(struct.pack("<I", session.sessionid)), retry=False,
                        callback=closed)
    return True


def pump_pyghmi(timeout):
    """One iteration of pyghmi's event loop, waiting at most ``timeout`` s."""
    pyghmi_session.Session.wait_for_rsp(timeout=max(0.0, timeout))
