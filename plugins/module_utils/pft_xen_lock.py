# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The migration lock of a guest, and the migrations still running on this host.

xen_migrate takes an exclusive flock on LOCK_DIR/GUEST.lock on the source before it starts
`xl migrate`, and hands the locked descriptor to xl (pass_fds): xl and every child that inherits it
(the ssh transport, the save helper) hold the lock, and the kernel drops it when the last of them
exits, even if the module, Ansible or the controller died first. xen_domain_info lists the guests
whose lock is held (`migrating`), which is how a later run tells "still moving" from "done".
The lock files are never removed (a removed file would let a second migration lock a new inode);
/run is a tmpfs, so they go at reboot with the processes that could hold them.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from ansible.module_utils.pft_common import lock_is_held
from ansible.module_utils.pft_xen import NAME_RE, XenError, check_name

LOCK_DIR = "/run/pft/migrate"
# A lister tests each lock with a momentary shared flock; a migration that finds its lock taken
# tries again for this long before it concludes that another migration holds it.
LOCK_WAIT_S = 1.0


class MigrationRunning(XenError):
    """The guest's migration lock is held: an `xl migrate` of it still runs on this host."""

    def __init__(self, guest, path, holder):
        self.guest, self.path, self.holder = guest, path, holder
        super(MigrationRunning, self).__init__(
            "a migration of %s is still running on this host: its lock %s is held%s" % (
                guest, path, " by pid %d (%s)" % (holder, _cmdline_str(holder)) if holder else ""))


def migration_lock_path(guest, directory=LOCK_DIR):
    return os.path.join(directory, check_name(guest) + ".lock")


def _cmdline(pid, proc_dir="/proc"):
    try:
        with open(os.path.join(proc_dir, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] if raw else None


def _cmdline_str(pid):
    argv = _cmdline(pid)
    return " ".join(argv)[:200] if argv else "gone"


def write_lock_owner(fd, pid, what):
    """Record who holds the lock in the lock file (the first word is the pid): for the message of a
    refused second migration, once the module that took the lock is gone."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%d %s\n" % (pid, what)).encode(), 0)
    except OSError:
        pass


def _has_open(pid, st):
    """Whether process pid has a descriptor open on the file whose os.stat is st."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            o = os.stat(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if o.st_ino == st.st_ino and o.st_dev == st.st_dev:
            return True
    return False


def pid_alive(pid):
    return pid is not None and pid > 0 and os.path.isdir("/proc/%d" % pid)



def lock_holder(path):
    """Pid of a live process that has the (held) lock file open, or None. Tried in order: the pid
    written in the file (the `xl migrate` that holds it), the owner /proc/locks names for the inode
    (the process that took the lock, which may have handed it on and exited), then every process."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    candidates = []
    try:
        with open(path, "rb") as f:
            candidates.append(int(f.read(64).split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    try:
        ident = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        with open("/proc/locks") as f:
            for line in f:
                words = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF"; waiters have "->" after the number
                if len(words) >= 6 and words[1] == "FLOCK" and words[5] == ident:
                    candidates.append(int(words[4]))
    except (OSError, ValueError):
        pass
    for pid in candidates:
        if pid_alive(pid) and _has_open(pid, st):
            return pid
    try:
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return None
    me = os.getpid()
    for pid in pids:
        if pid != me and pid not in candidates and _has_open(pid, st):
            return pid
    return None


def acquire_migration_lock(guest, directory=LOCK_DIR, wait=LOCK_WAIT_S, clock=time.monotonic, sleep=time.sleep):
    """Take the guest's migration lock (its directory made 0700 if missing). Returns the locked
    descriptor (close-on-exec: hand it to `xl migrate` with pass_fds, then close it here). Raises
    MigrationRunning when another process holds it, XenError when it cannot be opened."""
    path = migration_lock_path(guest, directory)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise XenError("cannot open the migration lock %s: %s" % (path, exc)) from exc
    t0 = clock()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise XenError("cannot lock %s: %s" % (path, exc)) from exc
            if clock() - t0 >= wait:
                os.close(fd)
                raise MigrationRunning(guest, path, lock_holder(path)) from None
            sleep(0.05)
    write_lock_owner(fd, os.getpid(), "xen_migrate %s" % guest)
    return fd


def locked_guests(directory=LOCK_DIR):
    """{guest: holder pid or None} for the migration locks held in directory (missing: {})."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return {}
    out = {}
    for entry in entries:
        guest = entry[:-len(".lock")] if entry.endswith(".lock") else None
        if not guest or not NAME_RE.match(guest) or guest == "Domain-0":
            continue
        path = os.path.join(directory, entry)
        if lock_is_held(path):
            out[guest] = lock_holder(path)
    return out


def xl_migrate_args(argv):
    """(guest, target) when argv is a command line `[sh] .../xl [global options] migrate [options] GUEST
    TARGET` (xl 4.17's getopt "FC:s:epD" plus long options), else None. `migrate-receive` is not."""
    if not argv or "migrate" not in argv:
        return None
    i = argv.index("migrate")
    head = [os.path.basename(a) for a in argv[:i]]
    if not (head[0] == "xl" or (len(head) > 1 and head[0] in ("sh", "bash", "dash") and head[1] == "xl")):
        return None
    rest, pos, j = argv[i + 1:], [], 0
    while j < len(rest):
        a = rest[j]
        j += 1
        if a.startswith("--") or a == "-":
            continue
        if a.startswith("-") and not pos:
            flags = a[1:]
            for k, c in enumerate(flags):
                if c in "Cs":
                    if k == len(flags) - 1:
                        j += 1          # its argument is the next word
                    break
            continue
        pos.append(a)
    return (pos[0], pos[1]) if len(pos) >= 2 else None


def xl_migrate_processes(proc_dir="/proc"):
    """[(pid, guest, target)] of the `xl migrate` processes running here (from /proc/*/cmdline)."""
    out = []
    try:
        pids = [int(p) for p in os.listdir(proc_dir) if p.isdigit()]
    except OSError:
        return out
    for pid in sorted(pids):
        args = xl_migrate_args(_cmdline(pid, proc_dir) or [])
        if args and NAME_RE.match(args[0]) and args[0] != "Domain-0":
            out.append((pid, args[0], args[1]))
    return out


def migrations_here(lock_dir=LOCK_DIR, proc_dir="/proc"):
    """The migrations still running on this host: [{guest, lock_held, lock_holder_pid, pids, targets}],
    by guest. A guest counts when its migration lock is held, or (fallback, for a migration started
    without the lock) when an `xl migrate GUEST TARGET` process runs. Read-only."""
    locks = locked_guests(lock_dir)
    procs = xl_migrate_processes(proc_dir)
    out = []
    for guest in sorted(set(locks) | {g for _, g, _ in procs}):
        out.append(dict(guest=guest, lock_held=guest in locks, lock_holder_pid=locks.get(guest),
                        pids=[p for p, g, _ in procs if g == guest],
                        targets=sorted({t for _, g, t in procs if g == guest})))
    return out
