# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The small helpers that several pft files need: locks, durable files, names, times, commands.

Standard library only: the xen_host role copies this file to the dom0s, where it is imported by
its plain name (``import pft_common``); Ansible modules import it as ``ansible.module_utils.pft_common``.

Locks
    :class:`FileLock` is an exclusive ``flock`` on one file with a deadline (``timeout=0``: one
    non-blocking try). :class:`LockedDir` is that lock on ``<dir>/.lock``, the directory created
    first. A lock still held by another process past the deadline raises :class:`LockBusy`, which
    names the lock file; any other failure raises :class:`LockError`.

Durable files
    :func:`replacing` (a ``with`` block that writes the new file), :func:`atomic_write` and
    :func:`write_json` replace a file atomically and durably: a temporary file in the same
    directory, fsync of the file, rename, fsync of the directory. On any error the old file stays
    as it was, and :func:`discard` removes the temporary file. :func:`read_json` reads one back;
    :func:`sync_dir` fsyncs a directory.

Names
    :func:`check_name` (``what, name``) with the rule :data:`NODE` (watch, quarantine, reservations)
    or :data:`DOMAIN` (Xen guests); :func:`check_host` for ssh targets.

Times, commands, verdicts, the watch's state directory
    :func:`utc_iso`; :func:`run_with_deadline`; :data:`VERDICT_RANK` and :func:`worst_verdict`;
    :func:`state_paths` and the names of the files under the state directory.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import subprocess
import time
import uuid

DEFAULT_LOCK_TIMEOUT = 30.0
LOCK_POLL_S = 0.05


class PftError(Exception):
    """A pft failure whose message names the file, name or command at fault."""


def os_error_text(exc):
    """An OSError in one line with its errno name: ``No space left on device [ENOSPC]``."""
    return "%s [%s]" % (exc.strerror or exc, errno.errorcode.get(exc.errno, exc.errno))


# --------------------------------------------------------------------------- locks


class LockError(PftError):
    """The lock file could not be opened or locked (not because another process holds it).

    ``action`` says which step failed (``open the lock file``, ``lock``, ``create the directory``),
    when an OSError (the exception's ``__cause__``) made it fail."""

    def __init__(self, msg, action=None):
        self.action = action
        super().__init__(msg)


class LockBusy(PftError):
    """Another process still held the lock when the deadline passed."""

    def __init__(self, path, timeout):
        self.path, self.timeout = path, timeout
        if timeout > 0:
            msg = "lock %s is still held by another process after %.1f s" % (path, timeout)
        else:
            msg = "lock %s is held by another process" % path
        super().__init__(msg)


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), taken with a deadline.

    ``timeout`` seconds of tries every ``poll`` seconds; 0 is one try (non-blocking). Use it as a
    context manager or with :meth:`acquire`/:meth:`release`; :meth:`detach` hands the locked
    descriptor over (for example to a child through ``pass_fds``), after which this object no
    longer releases it. ``nofollow`` refuses a lock file that is a symbolic link."""

    def __init__(self, path, timeout=DEFAULT_LOCK_TIMEOUT, mode=0o600, nofollow=False, poll=LOCK_POLL_S,
                 clock=time.monotonic, sleep=time.sleep):
        self.path = path
        self.timeout = float(timeout)
        self.mode = mode
        self.nofollow = nofollow
        self.poll = poll
        self.clock = clock
        self.sleep = sleep
        self.fd = None

    @property
    def locked(self):
        return self.fd is not None

    def _open(self):
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_NOFOLLOW if self.nofollow else 0)
        try:
            return os.open(self.path, flags, self.mode)
        except OSError as exc:
            raise LockError("cannot open the lock file %s: %s" % (self.path, os_error_text(exc)),
                            action="open the lock file") from exc

    def acquire(self, timeout=None):
        """Take the lock; returns its descriptor. Raises LockBusy when it is still held after
        ``timeout`` (default: the object's), LockError when it cannot be opened or locked."""
        if self.fd is not None:
            raise LockError("lock %s is already held by this object" % self.path)
        timeout = self.timeout if timeout is None else float(timeout)
        fd = self._open()
        deadline = self.clock() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise LockError("cannot lock %s: %s" % (self.path, os_error_text(exc)), action="lock") from exc
            if self.clock() >= deadline:
                os.close(fd)
                raise LockBusy(self.path, timeout)
            self.sleep(self.poll)
        self.fd = fd
        return fd

    def try_acquire(self):
        """One non-blocking try: True when the lock is now held, False when another process holds it."""
        try:
            self.acquire(timeout=0)
        except LockBusy:
            return False
        return True

    def release(self):
        """Give the lock back (no-op when not held)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def detach(self):
        """The locked descriptor, which the caller now owns (and closes); this object forgets it."""
        fd, self.fd = self.fd, None
        return fd

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


LOCK_FILE = ".lock"


class LockedDir(FileLock):
    """A directory whose changes are made under an exclusive ``flock`` on ``<directory>/.lock``.

    The directory (an absolute path) is created with ``dir_mode`` when missing."""

    def __init__(self, directory, timeout=DEFAULT_LOCK_TIMEOUT, dir_mode=0o750, lock_name=LOCK_FILE, **kwargs):
        if not directory or not os.path.isabs(directory):
            raise LockError("directory %r must be an absolute path" % (directory,))
        self.directory = directory
        self.dir_mode = dir_mode
        super().__init__(os.path.join(directory, lock_name), timeout=timeout, **kwargs)

    def path_of(self, *parts):
        return os.path.join(self.directory, *parts)

    def _open(self):
        try:
            os.makedirs(self.directory, mode=self.dir_mode, exist_ok=True)
        except OSError as exc:
            raise LockError("cannot create the directory %s: %s" % (self.directory, os_error_text(exc)),
                            action="create the directory") from exc
        return super()._open()


def lock_store(lock, label, directory, error, busy):
    """Take ``lock``, the lock file of the store ``directory`` (a state or reservation directory), and
    return it; its failures become the store's own ``error`` class. Still held by another process past
    the deadline: ``error(busy)``. An OSError: ``<label> <directory>: cannot <action> <lock file>:
    <cause>``, for example ``state directory /var/lib/pft: cannot open the lock file .lock: Permission
    denied [EACCES]``. Any other failure: ``<label> <directory>: <what failed>``."""
    try:
        lock.acquire()
    except LockBusy:
        raise error(busy) from None
    except LockError as err:
        cause = err.__cause__
        if err.action is None or not isinstance(cause, OSError):
            raise error("%s %s: %s" % (label, directory, err)) from err
        raise error("%s %s: cannot %s %s: %s" % (label, directory, err.action, os.path.relpath(lock.path, directory),
                                                   os_error_text(cause))) from err
    return lock


def lock_is_held(path):
    """True when some process holds a ``flock`` on ``path``, False when none does or it does not exist,
    None when it cannot be tested (not a regular file, no access). Never creates the file; the test is a
    shared non-blocking flock, released at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- durable files


def sync_dir(directory):
    """fsync a directory, so that a file just renamed, linked or removed in it survives a crash.
    A file system that cannot sync a directory (EINVAL) is not an error."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(dfd)


def discard(path):
    """Remove ``path`` if it is there; a file already gone, or one that cannot be removed, is not an error
    (this runs while another error is being raised, which must not be masked)."""
    try:
        os.unlink(path)
    except OSError:
        pass


@contextlib.contextmanager
def replacing(path, mode=0o640, tmp=None):
    """Replace ``path`` atomically and durably with what the ``with`` block writes.

    The block gets a new temporary file beside ``path`` (``tmp``, by default
    ``.<name>.<random>.tmp``), created with ``mode`` and open for binary reading and writing; its
    ``name`` is the temporary path. When the block ends without error, the file is flushed, fsynced
    and closed, renamed over ``path``, and the directory is fsynced. On any error (OSError included,
    which is raised as it is) the temporary file is removed and the old ``path`` is left as it was."""
    directory, name = os.path.split(os.path.abspath(path))
    if tmp is None:
        tmp = os.path.join(directory, ".%s.%s.tmp" % (name, uuid.uuid4().hex[:8]))
    try:
        with open(tmp, "x+b", opener=lambda p, flags: os.open(p, flags | os.O_CLOEXEC, mode)) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    sync_dir(directory)


def atomic_write(path, data, mode=0o640, before_rename=None):
    """Replace ``path`` with ``data`` (str, written as UTF-8, or bytes): :func:`replacing`.

    ``before_rename(tmp_path)`` runs once the data is written and flushed, before the rename: it may
    chown, chmod or validate the temporary file, and an error from it leaves ``path`` as it was."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with replacing(path, mode=mode) as handle:
        handle.write(data)
        if before_rename is not None:
            handle.flush()
            before_rename(handle.name)


def write_json(path, data, mode=0o640, indent=1):
    """:func:`atomic_write` of ``data`` as JSON (sorted keys, ``indent``, a final newline when indented;
    ``indent=None``: one compact line, as the reservation files are)."""
    if indent is None:
        text = json.dumps(data, sort_keys=True)
    else:
        text = json.dumps(data, indent=indent, sort_keys=True) + "\n"
    atomic_write(path, text, mode=mode)


class JsonFileError(PftError):
    """A file that should hold JSON does not."""

    def __init__(self, path, cause):
        self.path, self.cause = path, cause
        super().__init__("%s is not valid JSON (%s)" % (path, cause))


_MISSING = object()


def read_json(path, default=_MISSING):
    """The JSON content of ``path``; ``default`` when it does not exist (FileNotFoundError without one).
    Raises JsonFileError naming the file when it is not JSON; other OSErrors as they are."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
    except ValueError as exc:
        raise JsonFileError(path, exc) from exc


# --------------------------------------------------------------------------- names


class PftNameError(PftError, ValueError):
    """A name that pft will not put into a path, a command line or a Ganglia metric."""


class NameRule:
    """What a name may look like: a regular expression, names that are never allowed, and the words
    that tell the user what is allowed (the error message is ``<what> name <name> <description>``)."""

    def __init__(self, pattern, description, forbidden=()):
        self.regex = re.compile(pattern)
        self.description = description
        self.forbidden = frozenset(forbidden)

    def match(self, name):
        return isinstance(name, str) and bool(self.regex.match(name)) and name not in self.forbidden


# A node of the cluster, as the watch, the quarantine and the reservations name it (inventory names,
# IPv4/IPv6 addresses): up to 253 characters, no path separator, not starting with . or -.
NODE = NameRule(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$",
                "is not usable (letters, digits, _ . : - ; not starting with . or -)")
# A Xen guest (domain) name, as xl accepts it and pft puts it into file names: up to 64 characters.
DOMAIN = NameRule(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                  "is not a valid domain name ([A-Za-z0-9][A-Za-z0-9_.-]*, not Domain-0)", forbidden=("Domain-0",))
# A host name or IPv4 address that is safe as an ssh target (no option, user or shell syntax).
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


def check_name(what, name, rule=NODE, error=PftNameError):
    """``name`` when ``rule`` allows it; otherwise raises ``error`` (an exception class taking one
    message) saying ``<what> name <name!r> <rule.description>``."""
    if not rule.match(name):
        raise error("%s name %r %s" % (what, name, rule.description))
    return name


def check_host(what, host, error=PftNameError):
    """``host`` when it is a host name or IPv4 address (:data:`HOST_RE`); otherwise raises ``error``."""
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise error("%s %r is not a host name or IPv4 address" % (what, host))
    return host


# --------------------------------------------------------------------------- times

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_iso(timestamp):
    """Seconds since the epoch as ``2026-01-31T12:00:00Z`` (UTC, whole seconds); None stays None."""
    if timestamp is None:
        return None
    return time.strftime(UTC_FORMAT, time.gmtime(timestamp))


# --------------------------------------------------------------------------- commands


class CommandError(PftError):
    """A command that could not be run to its end."""


class CommandTimeout(CommandError):
    """The command did not finish within its deadline (it was killed)."""

    def __init__(self, argv, timeout):
        self.argv, self.timeout = list(argv), timeout
        super().__init__("%s did not finish within %.1f s" % (" ".join(self.argv), timeout))


class CommandNotStarted(CommandError):
    """The command could not be started (``cause``: the OSError, e.g. FileNotFoundError)."""

    def __init__(self, argv, cause):
        self.argv, self.cause = list(argv), cause
        super().__init__("cannot run %s: %s" % (self.argv[0] if self.argv else "''",
                                                 getattr(cause, "strerror", None) or cause))


def run_with_deadline(argv, timeout, input_text=None, stdin_path=None, env=None, text=True, merge_stderr=False):
    """Run ``argv`` (a list, no shell) with a deadline; returns ``(rc, stdout, stderr)``.

    stdin is ``input_text``, or the file ``stdin_path``, or /dev/null. ``text``: str outputs (UTF-8,
    undecodable bytes replaced), else bytes. ``merge_stderr``: stderr goes into stdout (stderr is then
    None). Raises :class:`CommandTimeout` when the deadline passes (the command is killed) and
    :class:`CommandNotStarted` when it cannot be started; a non-zero rc is the caller's to judge."""
    stdin_file = None
    try:
        if stdin_path is not None:
            stdin_file = open(stdin_path, "rb")
        stdin = stdin_file if stdin_file else (None if input_text is not None else subprocess.DEVNULL)
        data = input_text.encode("utf-8") if isinstance(input_text, str) else input_text
        proc = subprocess.run(argv, input=data, stdin=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise CommandTimeout(argv, timeout) from None
    except OSError as exc:
        raise CommandNotStarted(argv, exc) from exc
    finally:
        if stdin_file:
            stdin_file.close()
    out, err = proc.stdout, proc.stderr
    if text:
        out = out.decode("utf-8", "replace") if out is not None else None
        err = err.decode("utf-8", "replace") if err is not None else None
    return proc.returncode, out, err


# --------------------------------------------------------------------------- verdicts

OK, UNKNOWN, WARNING, CRITICAL = "ok", "unknown", "warning", "critical"
# A node's verdicts from best to worst: evidence of trouble beats missing evidence (ok < unknown <
# warning < critical). pft_ipmi's hysteresis works on ok < warning < critical alone (its LEVEL).
VERDICT_ORDER = (OK, UNKNOWN, WARNING, CRITICAL)
VERDICT_RANK = {v: i for i, v in enumerate(VERDICT_ORDER)}


def worst_verdict(verdicts, default=OK):
    """The worst of ``verdicts`` by :data:`VERDICT_RANK` (``default`` when there are none)."""
    return max(verdicts, key=VERDICT_RANK.__getitem__, default=default)


# --------------------------------------------------------------------------- the watch's state directory

DEFAULT_STATE_DIR = "/var/lib/pft"
WATCH_STATE_FILE = "watch-state.json"      # verdict history and alert memory per node
QUARANTINE_FILE = "quarantine.json"        # nodes kept free of guests until returned to service
JOURNAL_DIR = "journal"                    # journal/<id>.json: evacuations begun and not finished
AUDIT_LOG = "audit.jsonl"                  # one JSON object per line, append-only
CONTROLLER_LEASE_FILE = "controller-lock.json"  # the controller lock (pft_lease)
RESERVATIONS_DIR = "reservations"          # reservations/<host>.json, with its own reservations/.lock
STATE_SUBDIRS = (RESERVATIONS_DIR, JOURNAL_DIR)


def state_paths(state_dir=DEFAULT_STATE_DIR):
    """The absolute paths of everything under the watch's state directory, by role."""
    join = os.path.join
    return {
        "state_dir": state_dir,
        "lock": join(state_dir, LOCK_FILE),
        "watch_state": join(state_dir, WATCH_STATE_FILE),
        "quarantine": join(state_dir, QUARANTINE_FILE),
        "journal": join(state_dir, JOURNAL_DIR),
        "audit": join(state_dir, AUDIT_LOG),
        "controller_lease": join(state_dir, CONTROLLER_LEASE_FILE),
        "reservations": join(state_dir, RESERVATIONS_DIR),
        "reservations_lock": join(state_dir, RESERVATIONS_DIR, LOCK_FILE),
    }
