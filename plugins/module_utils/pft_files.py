# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A node's small files, directories and removals, planned and applied in one pass.

Why one pass: every Ansible task that touches a node starts a Python interpreter there
(template and copy start two when nothing changes: stat, then file). On a Xen PV dom0 under
emulation that costs 15-50 s a task; a role that writes twenty files that way spends most of
an idempotent run starting interpreters. pft_files does the same work in one module run.

Each entry is a dict:
  path      absolute path (required)
  state     'file' (default), 'directory' or 'absent'
  content   the file's text (state=file, required)
  mode      octal string ('0644'); default 0644 for files, 0755 for directories
  owner     user name (default root); group: group name (default root)
  validate  a command with %s, run on the new content before it replaces the file
  sensitive    true: the content never appears in the diff

Entries are handled in order, so a directory entry comes before the files in it. An entry
listed twice the same way counts once; a path listed twice differently is an error.
Files are written to a temporary file in the same directory, fsynced and renamed over the old one,
and the directory is fsynced (pft_common.atomic_write).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import shlex
import stat
import subprocess

from ansible.module_utils.pft_common import atomic_write

STATES = ("file", "directory", "absent")
DEFAULT_MODE = {"file": "0644", "directory": "0755"}
VALIDATE_TIMEOUT = 60


class FilesError(Exception):
    """Bad input or a failed step; the message names the path at fault.

    done: the paths apply() had already changed when it stopped (empty before applying)."""

    def __init__(self, msg, done=None):
        super(FilesError, self).__init__(msg)
        self.done = list(done or [])


def _mode(value, path):
    if isinstance(value, int):
        return value
    text = str(value)
    try:
        mode = int(text, 8)
    except ValueError:
        raise FilesError("%s: mode %r is not an octal number like '0644'" % (path, value)) from None
    if mode < 0 or mode > 0o7777:
        raise FilesError("%s: mode %r is out of range" % (path, value))
    return mode


def _uid(name, path):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise FilesError("%s: owner %r is not a user on this node" % (path, name)) from None


def _gid(name, path):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise FilesError("%s: group %r is not a group on this node" % (path, name)) from None


def normalize(entries):
    """Check the entries and fill in the defaults; raises FilesError naming the entry at fault."""
    out = []
    seen = set()
    for index, raw in enumerate(entries or []):
        if not isinstance(raw, dict):
            raise FilesError("entry %d is not a dict: %r" % (index, raw))
        path = raw.get("path")
        if not path or not isinstance(path, str) or not os.path.isabs(path):
            raise FilesError("entry %d: path %r is not an absolute path" % (index, path))
        path = os.path.normpath(path)
        state = raw.get("state") or "file"
        if state not in STATES:
            raise FilesError("%s: state %r is not one of %s" % (path, state, ", ".join(STATES)))
        entry = {"path": path, "state": state, "sensitive": bool(raw.get("sensitive"))}
        if state == "file":
            content = raw.get("content")
            if content is None:
                raise FilesError("%s: state=file needs content" % path)
            if not isinstance(content, str):
                raise FilesError("%s: content must be text" % path)
            entry["content"] = content
            entry["validate"] = raw.get("validate") or None
            if entry["validate"] and "%s" not in entry["validate"]:
                raise FilesError("%s: validate %r has no %%s for the new file" % (path, entry["validate"]))
        elif raw.get("content") is not None:
            raise FilesError("%s: content is only for state=file" % path)
        if state != "absent":
            entry["mode"] = _mode(raw.get("mode") or DEFAULT_MODE[state], path)
            entry["owner"] = raw.get("owner") or "root"
            entry["group"] = raw.get("group") or "root"
        if path in seen:
            # the same entry twice (say, one directory reached by two variables) counts once
            if entry in out:
                continue
            raise FilesError("%s: listed twice, differently" % path)
        seen.add(path)
        out.append(entry)
    return out


def _lstat(path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def plan(entries):
    """What applying the (normalized) entries would change, without changing anything.

    Returns one dict per entry: path, state, changed, reasons (list of words), uid and gid
    (files and directories), and for files 'before' (bytes or None). Directories planned earlier
    in the list count as existing.
    """
    planned_dirs = set()
    result = []
    for entry in entries:
        path, state = entry["path"], entry["state"]
        st = _lstat(path)
        reasons = []
        item = {"path": path, "state": state, "reasons": reasons}
        if state == "absent":
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    raise FilesError("%s: state=absent removes files only, and this is a directory" % path)
                reasons.append("removed")
        else:
            parent = os.path.dirname(path)
            if state == "file" and not os.path.isdir(parent) and parent not in planned_dirs:
                raise FilesError("%s: its directory %s does not exist (list it before, with state=directory)"
                                 % (path, parent))
            uid, gid = item["uid"], item["gid"] = _uid(entry["owner"], path), _gid(entry["group"], path)
            want_type = stat.S_ISREG if state == "file" else stat.S_ISDIR
            if st is not None and not want_type(st.st_mode):
                raise FilesError("%s: exists but is not a %s"
                                 % (path, "regular file" if state == "file" else "directory"))
            if st is None:
                reasons.append("created")
                item["before"] = None
            else:
                if state == "file":
                    before = _read(path)
                    item["before"] = before
                    if before != entry["content"].encode("utf-8"):
                        reasons.append("content")
                if stat.S_IMODE(st.st_mode) != entry["mode"]:
                    reasons.append("mode")
                if st.st_uid != uid or st.st_gid != gid:
                    reasons.append("owner")
            if state == "directory":
                planned_dirs.add(path)
        item["changed"] = bool(reasons)
        result.append(item)
    return result


def _validate(entry, tmp_path, timeout):
    argv = [tmp_path if word == "%s" else word.replace("%s", tmp_path) for word in shlex.split(entry["validate"])]
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except FileNotFoundError:
        raise FilesError("%s: validate command %s not found" % (entry["path"], argv[0])) from None
    except subprocess.TimeoutExpired:
        raise FilesError("%s: validate command %s did not finish within %s s"
                         % (entry["path"], argv[0], timeout)) from None
    if proc.returncode != 0:
        out = proc.stdout.decode("utf-8", "replace").strip()
        raise FilesError("%s: the new content failed validation (%s, rc %d): %s"
                         % (entry["path"], entry["validate"], proc.returncode, out))


def _write_file(entry, uid, gid, timeout):
    def finish(tmp):
        os.chown(tmp, uid, gid)
        os.chmod(tmp, entry["mode"])
        if entry.get("validate"):
            _validate(entry, tmp, timeout)

    atomic_write(entry["path"], entry["content"], mode=0o600, before_rename=finish)


def apply(entries, planned, validate_timeout=VALIDATE_TIMEOUT):
    """Carry out a plan from plan(entries) (same order); returns the paths changed.

    Stops at the first failure, which names its path; the entries before it are done (the
    FilesError's done lists them), the ones after it untouched."""
    done = []
    for entry, item in zip(entries, planned, strict=False):
        if not item["changed"]:
            continue
        path, state = entry["path"], entry["state"]
        try:
            if state == "absent":
                os.unlink(path)
                done.append(path)
                continue
            uid, gid = item["uid"], item["gid"]
            if state == "directory":
                if "created" in item["reasons"]:
                    os.makedirs(path, mode=entry["mode"])
                os.chown(path, uid, gid)
                os.chmod(path, entry["mode"])
            elif "created" in item["reasons"] or "content" in item["reasons"]:
                _write_file(entry, uid, gid, validate_timeout)
            else:
                os.chown(path, uid, gid)
                os.chmod(path, entry["mode"])
        except OSError as exc:
            raise FilesError("%s: %s" % (path, exc.strerror or exc), done) from exc
        except FilesError as exc:
            raise FilesError(str(exc), done) from exc
        done.append(path)
    return done


def _text(data):
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "(binary, %d bytes)\n" % len(data)


def diffs(entries, planned):
    """Ansible diff dicts, one per changed entry; sensitive contents are left out."""
    out = []
    for entry, item in zip(entries, planned, strict=False):
        if not item["changed"]:
            continue
        diff = {"before_header": entry["path"], "after_header": entry["path"]}
        if entry["state"] == "file" and not entry["sensitive"]:
            diff["before"] = _text(item.get("before"))
            diff["after"] = entry["content"]
        else:
            diff["before"] = "%s (%s)\n" % (entry["path"], "absent" if "created" in item["reasons"] else "present")
            diff["after"] = "%s (%s: %s)\n" % (entry["path"], entry["state"], ", ".join(item["reasons"]))
        out.append(diff)
    return out


def summary(planned):
    """The module's return values: changed_paths and one small dict per entry."""
    return {
        "changed_paths": [item["path"] for item in planned if item["changed"]],
        "files": [{"path": item["path"], "state": item["state"], "changed": item["changed"],
                   "reasons": list(item["reasons"])} for item in planned],
    }
