# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Checkpoint images of a guest on its target, and the reactive restore from them (issue 6).

:func:`checkpoint` (``xen_prestage checkpoint=true``) saves the guest with ``xl save -c`` and refreshes its
image on the target with the changed blocks only (:func:`ckpt_sums`, :func:`ckpt_delta` here,
:func:`ckpt_apply` there, through the forced command's verbs and :func:`ckpt_receiver_main`).
:func:`restore` (``xen_restore``) starts the guest from that image when no other dom0 runs it.

xl save -c (the guest is stopped for the whole save, then resumed) into a local image, then the
blocks that differ from the target's image, through the migration key's forced command:
  pft-ckpt-sums GUEST BLOCKSIZE   the target prints ckpt_sums() of its image (format_sums), or "none"
  pft-ckpt-put GUEST              the target applies a delta stream (ckpt_delta) to a copy of its
                                  image, checks the whole-file sha256, fsyncs and renames it
Both verbs run ckpt_receiver_main() (the xen_host role installs this file and a small helper).

Delta stream (binary, on the put's stdin):
  PFTCKPT 1\n
  blocksize N\n
  base none\n | base SIZE SHA256\n       (the target's image the sums came from; checked while copying)
  created EPOCH\n                        (when xl save ran: the image's mtime on the target)
  D OFFSET LENGTH\n + LENGTH bytes        (zero or more; 0 < LENGTH <= N)
  E SIZE SHA256\n                         (the new image's size and whole-file sha256; nothing after it)
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sys
import time

try:
    from ansible.module_utils import pft_common as common
    from ansible.module_utils import pft_xen as xen
except ImportError:          # on a dom0: the checkpoint receiver imports this beside pft_xen.py and pft_common.py
    import pft_common as common
    import pft_xen as xen

CKPT_DIR = "/var/lib/pft/checkpoints"
CKPT_BLOCK = 256 * 1024
CKPT_MAGIC = b"PFTCKPT 1\n"
XL_SAVE_MAGIC = b"Xen saved domain, xl format\n"
CKPT_MAX_SIZE = 1 << 40
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- the delta format


def check_blocksize(blocksize):
    if not isinstance(blocksize, int) or isinstance(blocksize, bool) or blocksize < 4096 or \
            blocksize > 64 * xen.MIB or blocksize % 4096:
        raise xen.XenError("checkpoint block size must be a multiple of 4096 bytes between 4 KiB and 64 MiB, got %r"
                       % (blocksize,))
    return blocksize


def ckpt_path(guest, directory=CKPT_DIR):
    return os.path.join(directory, xen.check_name(guest) + ".save")


def ckpt_sums(path, blocksize):
    """The image's size, whole-file sha256 and per-block sha256s, or None when there is no image."""
    check_blocksize(blocksize)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    whole, blocks, size = hashlib.sha256(), [], 0
    with f:
        for block in iter(lambda: f.read(blocksize), b""):
            whole.update(block)
            blocks.append(hashlib.sha256(block).hexdigest())
            size += len(block)
    return dict(size=size, sha256=whole.hexdigest(), blocksize=blocksize, blocks=blocks)


def format_sums(sums):
    if sums is None:
        return "none\n"
    return "size %d\nsha256 %s\nblocksize %d\n%s\nend\n" % (sums["size"], sums["sha256"], sums["blocksize"],
                                                        "\n".join(sums["blocks"]))


def parse_sums(text, blocksize):
    """format_sums() back; None for "none". Raises XenError on anything else (a truncated answer)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if lines == ["none"]:
        return None
    try:
        if len(lines) < 4 or lines[-1] != "end":
            raise ValueError("no end line")
        size = int(lines[0].split()[1]) if lines[0].startswith("size ") else None
        sha = lines[1].split()[1] if lines[1].startswith("sha256 ") else ""
        bs = int(lines[2].split()[1]) if lines[2].startswith("blocksize ") else None
        blocks = [b for b in lines[3:-1] if b]
        if size is None or size < 0 or not _HEX64.match(sha) or bs != blocksize:
            raise ValueError("bad header")
        if len(blocks) != (size + blocksize - 1) // blocksize or not all(_HEX64.match(b) for b in blocks):
            raise ValueError("%d block sums for %d bytes" % (len(blocks), size))
    except (ValueError, IndexError) as exc:
        raise xen.XenError("unexpected checkpoint sums from the target (%s): %r" % (exc, text[:200])) from None
    return dict(size=size, sha256=sha, blocksize=bs, blocks=blocks)


def ckpt_delta(path, blocksize, remote, out, created=None):
    """Write to out (binary file) the delta stream that turns the remote image (its parsed sums, or None)
    into the local image at path. Returns dict(size, sha256, blocks_total, blocks_sent, bytes_sent)."""
    check_blocksize(blocksize)
    if remote is not None and remote["blocksize"] != blocksize:
        raise xen.XenError("the target's sums use block size %d, not %d" % (remote["blocksize"], blocksize))
    theirs = remote["blocks"] if remote else []
    n_written = 0

    def put(data):
        nonlocal n_written
        out.write(data)
        n_written += len(data)

    put(CKPT_MAGIC)
    put(b"blocksize %d\n" % blocksize)
    put(b"base none\n" if remote is None else ("base %d %s\n" % (remote["size"], remote["sha256"])).encode())
    put(("created %.3f\n" % (created if created is not None else os.stat(path).st_mtime)).encode())
    whole, size, index, sent = hashlib.sha256(), 0, 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(blocksize), b""):
            whole.update(block)
            if index >= len(theirs) or hashlib.sha256(block).hexdigest() != theirs[index]:
                put(b"D %d %d\n" % (size, len(block)))
                put(block)
                sent += 1
            size += len(block)
            index += 1
    put(("E %d %s\n" % (size, whole.hexdigest())).encode())
    return dict(size=size, sha256=whole.hexdigest(), blocks_total=index, blocks_sent=sent, bytes_sent=n_written)


def _read_line(stream, limit=200):
    line = stream.readline(limit)
    if not line.endswith(b"\n"):
        raise xen.XenError("checkpoint stream truncated or malformed (line %r)" % line[:60])
    return line[:-1].decode("ascii", "replace")


def _copy_hashing(src, dst):
    h, n = hashlib.sha256(), 0
    for block in iter(lambda: src.read(xen.MIB), b""):
        h.update(block)
        dst.write(block)
        n += len(block)
    return n, h.hexdigest()


def _read_header(stream):
    """The header of a delta stream: (blocksize, base: None or (size, sha256), created)."""
    if stream.read(len(CKPT_MAGIC)) != CKPT_MAGIC:
        raise xen.XenError("not a pft checkpoint stream (bad magic)")
    words = _read_line(stream).split()
    if len(words) != 2 or words[0] != "blocksize" or not words[1].isdigit():
        raise xen.XenError("bad blocksize line %r" % " ".join(words))
    blocksize = check_blocksize(int(words[1]))
    words = _read_line(stream).split()
    if words == ["base", "none"]:
        base = None
    elif len(words) == 3 and words[0] == "base" and words[1].isdigit() and _HEX64.match(words[2]):
        base = (int(words[1]), words[2])
    else:
        raise xen.XenError("bad base line %r" % " ".join(words))
    words = _read_line(stream).split()
    try:
        if len(words) != 2 or words[0] != "created":
            raise ValueError
        created = float(words[1])
    except ValueError:
        raise xen.XenError("bad created line %r" % " ".join(words)) from None
    return blocksize, base, created


def _apply_records(stream, out, blocksize):
    """Write the D records of a delta stream into out, up to its E record: (records, bytes, size, sha256)."""
    received = nbytes = 0
    while True:
        words = _read_line(stream).split()
        if len(words) == 3 and words[0] == "D" and words[1].isdigit() and words[2].isdigit():
            offset, length = int(words[1]), int(words[2])
            if not 0 < length <= blocksize or offset + length > CKPT_MAX_SIZE:
                raise xen.XenError("bad record D %d %d (block size %d)" % (offset, length, blocksize))
            data = stream.read(length)
            if len(data) != length:
                raise xen.XenError("checkpoint stream truncated in the record at offset %d" % offset)
            out.seek(offset)
            out.write(data)
            received += 1
            nbytes += length
        elif len(words) == 3 and words[0] == "E" and words[1].isdigit() and _HEX64.match(words[2]):
            size, want = int(words[1]), words[2]
            break
        else:
            raise xen.XenError("bad record %r" % " ".join(words)[:80])
    return received, nbytes, size, want


def ckpt_apply(stream, guest, directory=CKPT_DIR):
    """Apply a delta stream (binary file) to a copy of guest's image in directory; verify, fsync, rename.
    On any error the old image is left as it was and XenError says why. Returns dict(path, size, sha256,
    created, blocks_received, bytes_received)."""
    final = ckpt_path(guest, directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, ".%s.lock" % guest), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise xen.XenError("another checkpoint of %s is being written on this host" % guest) from None
        blocksize, base, created = _read_header(stream)
        tmp = os.path.join(directory, ".%s.save.%d.tmp" % (guest, os.getpid()))
        with common.replacing(final, mode=0o600, tmp=tmp) as out:
            if base is not None:
                try:
                    with open(final, "rb") as old:
                        n, sha = _copy_hashing(old, out)
                except FileNotFoundError:
                    n, sha = None, None
                if (n, sha) != base:
                    raise xen.XenError("the image on this host is not the one the sums were taken from (it is %s, "
                                   "the stream expects %d bytes sha256 %s): run the checkpoint again"
                                   % ("missing" if n is None else "%d bytes sha256 %s" % (n, sha), base[0], base[1]))
            received, nbytes, size, want = _apply_records(stream, out, blocksize)
            if stream.read(1):
                raise xen.XenError("data after the end record")
            out.truncate(size)
            out.flush()
            out.seek(0)
            h = hashlib.sha256()
            for block in iter(lambda: out.read(xen.MIB), b""):
                h.update(block)
            if h.hexdigest() != want:
                raise xen.XenError("the new image's sha256 %s is not the sender's %s: image kept as it was"
                               % (h.hexdigest(), want))
            os.utime(out.fileno(), (created, created))
        return dict(path=final, size=size, sha256=want, created=created, blocks_received=received,
                    bytes_received=nbytes)
    finally:
        os.close(lock)


def ckpt_receiver_main(argv, directory=CKPT_DIR, stdin=None, stdout=None, stderr=None):
    """The target's side of pft-ckpt-sums / pft-ckpt-put (argv without the program name). Returns the exit
    status: 0, 1 (failed, old image intact) or 2 (refused arguments)."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        if len(argv) == 3 and argv[0] == "sums" and argv[2].isdigit():
            guest, blocksize = xen.check_name(argv[1]), check_blocksize(int(argv[2]))
        elif len(argv) == 2 and argv[0] == "put":
            guest = xen.check_name(argv[1])
        else:
            raise xen.XenError("usage: sums GUEST BLOCKSIZE | put GUEST")
    except xen.XenError as exc:
        stderr.write("pft-ckpt: refused: %s\n" % exc)
        return 2
    try:
        if argv[0] == "sums":
            stdout.write(format_sums(ckpt_sums(ckpt_path(guest, directory), blocksize)))
        else:
            res = ckpt_apply(stdin, guest, directory)
            stdout.write("ok %s %d %s %d\n" % (res["path"], res["size"], res["sha256"], res["blocks_received"]))
        stdout.flush()
        return 0
    except (xen.XenError, OSError) as exc:
        stderr.write("pft-ckpt %s %s: failed, the previous checkpoint is unchanged: %s\n" % (argv[0], guest, exc))
        return 1


def guest_state_word(runner, guest, xl=xen.XL):
    rows = [r for r in xen.guest_rows(runner, guest, xl) if r["role"] == "self"]
    return rows[0]["state"] if rows else "absent"


def checkpoint(guest, target, blocksize=CKPT_BLOCK, timeout=600.0, check_mode=False, runner=None, xl=xen.XL,
               local_dir=CKPT_DIR, clock=time.monotonic, wall=time.time):
    """xl save -c here, then send the changed blocks to the target's image. Returns (steps, info):
    steps [{name, seconds}] (save, sums, send) and info, the `checkpoint` result (or its prediction)."""
    xen.check_name(guest)
    xen.check_host(target)
    check_blocksize(blocksize)
    runner = runner or xen.run
    remote_path = ckpt_path(guest)
    src = xen.guest_rows(runner, guest, xl)
    if not xen.running_once(src):
        raise xen.XenError("%s does not run exactly once on this host (found %s): no checkpoint"
                       % (guest, xen.rows_str(src)))
    if check_mode:
        return [], dict(would="xl save -c %s (the guest is paused for the whole save, about %d MiB), then send "
                        "the blocks that changed to %s:%s" % (guest, src[0]["memory_mb"], target, remote_path),
                        path=remote_path, target=target)
    steps = []
    os.makedirs(local_dir, mode=0o700, exist_ok=True)
    os.chmod(local_dir, 0o700)
    local = ckpt_path(guest, local_dir)
    tmp = local + ".new"
    delta = local + ".delta"
    t = clock()
    created = wall()
    try:
        rc, out, err = runner([xl, "save", "-c", guest, tmp], timeout)
    except xen.XenError as exc:
        rc, out, err = None, "", str(exc)
    save_s = round(clock() - t, 3)
    steps.append(dict(name="save", seconds=save_s, pause_s=save_s))
    if rc != 0:
        state = guest_state_word(runner, guest, xl)
        for p in (tmp,):
            if os.path.exists(p):
                os.unlink(p)
        raise xen.XenError("xl save -c %s failed (%s): %s; the guest is now %s%s" % (
            guest, "rc=%s" % rc if rc is not None else "deadline", (err or out).strip()[-400:], state,
            "" if state in ("running", "blocked", "idle") else " -- check it (xl list), operator action may be needed"))
    os.rename(tmp, local)
    state = guest_state_word(runner, guest, xl)
    try:
        with open(local, "rb") as f:
            head = f.read(len(XL_SAVE_MAGIC))
        if head != XL_SAVE_MAGIC:
            raise xen.XenError("%s is not an xl save image (header %r)" % (local, head))
        t = clock()
        rc, out, err = runner(xen.forced_argv(target, ["pft-ckpt-sums", guest, str(blocksize)]), timeout)
        if rc != 0:
            raise xen.XenError("pft-ckpt-sums on %s failed (rc=%d; an old pft-migrate-receive without it?): %s"
                           % (target, rc, (err or out).strip()[-400:]))
        remote = parse_sums(out, blocksize)
        steps.append(dict(name="sums", seconds=round(clock() - t, 3), target_image=remote is not None))
        t = clock()
        with open(delta, "wb") as f:
            os.chmod(delta, 0o600)
            stats = ckpt_delta(local, blocksize, remote, f, created=created)
        rc, out, err = runner(xen.forced_argv(target, ["pft-ckpt-put", guest]), timeout, stdin_path=delta)
        if rc != 0:
            raise xen.XenError("pft-ckpt-put on %s failed (rc=%d): %s" % (target, rc, (err or out).strip()[-400:]))
        words = out.split()
        if len(words) < 4 or words[0] != "ok" or words[3] != stats["sha256"]:
            raise xen.XenError("pft-ckpt-put on %s gave an unexpected answer: %r" % (target, out.strip()[-300:]))
        steps.append(dict(name="send", seconds=round(clock() - t, 3)))
    finally:
        for path in (delta, local):          # the target's image is the base of the next refresh, not this one
            if os.path.exists(path):
                os.unlink(path)
    mib_sent = round(stats["bytes_sent"] / float(xen.MIB), 3)
    info = dict(path=remote_path, target=target, size=stats["size"],
                image_mib=round(stats["size"] / float(xen.MIB), 3), sha256=stats["sha256"],
                created=round(created, 3), blocksize=blocksize, blocks_total=stats["blocks_total"],
                blocks_sent=stats["blocks_sent"], mib_sent=mib_sent, base="none" if remote is None else "delta",
                guest_state=state, pause_s=save_s,
                save_s=save_s, sums_s=steps[1]["seconds"], send_s=steps[2]["seconds"])
    return steps, info


# --------------------------------------------------------------------------- reactive restore


def image_facts(path, wall=time.time):
    """Size, mtime (when xl save ran, for images sent by checkpoint()) and age of an xl save image."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            head = f.read(len(XL_SAVE_MAGIC))
    except OSError as exc:
        raise xen.XenError("cannot read the checkpoint image %s: %s" % (path, exc)) from exc
    if head != XL_SAVE_MAGIC:
        raise xen.XenError("%s is not an xl save image (header %r)" % (path, head[:32]))
    return dict(path=path, size=st.st_size, image_mib=round(st.st_size / float(xen.MIB), 3),
                created=round(st.st_mtime, 3), age_s=round(wall() - st.st_mtime, 1))


def restore(guest, image=None, config=None, absent_on=(), source_down_confirmed=False, timeout=600.0,
            probe_timeout=60.0, check_mode=False, runner=None, xl=xen.XL, clock=time.monotonic, wall=time.time):
    """Start guest here from its checkpoint image, only when it provably runs nowhere else.

    absent_on: other dom0s asked over the migration key (pft-probe) that they do not run the guest.
    One that answers and lists it: refused. One that does not answer: refused unless
    source_down_confirmed. Returns (failed, msg, result)."""
    xen.check_name(guest)
    hosts = [xen.check_host(h, "absent_on host") for h in absent_on or ()]
    runner = runner or xen.run
    image = image or ckpt_path(guest)
    if config is not None and not os.path.isfile(config):
        raise xen.XenError("config %s is not a file" % config)
    steps, checks = [], []
    result = dict(changed=False, restored=False, checks=checks, steps=steps, checkpoint=None, restore_s=None,
                  guest=None)
    step = xen.step_recorder(steps, clock)

    facts = image_facts(image, wall)
    result["checkpoint"] = facts
    checks.append(dict(name="image", ok=True, detail="%s, %.1f MiB, taken %.0f s ago" % (
        image, facts["image_mib"], facts["age_s"])))
    t = clock()
    here = xen.guest_rows(runner, guest, xl)
    step("local_list", t)
    if here:
        checks.append(dict(name="not_here", ok=False, detail="this host runs %s" % xen.rows_str(here)))
        if xen.running_once(here):
            result["guest"] = here[0]
            return False, "%s already runs here (%s): nothing restored" % (guest, xen.rows_str(here)), result
        return True, "this host already has %s: refusing to restore it" % xen.rows_str(here), result
    checks.append(dict(name="not_here", ok=True, detail="%s does not run here" % guest))
    for host in hosts:
        t = clock()
        try:
            probe = xen.probe_target(host, timeout=probe_timeout, runner=runner)
        except xen.XenError as exc:
            step("probe_" + host, t, ok=False)
            if source_down_confirmed:
                checks.append(dict(name="absent_on", host=host, ok=True, detail="no answer (%s); down, as the "
                                   "operator confirmed (source_down_confirmed)" % str(exc)[-200:]))
                continue
            checks.append(dict(name="absent_on", host=host, ok=False, detail="no answer: %s" % str(exc)[-300:]))
            return True, ("cannot check that %s does not run on %s (no answer: %s); refusing to restore it. "
                          "Set source_down_confirmed only when %s is known to be off (powered off or fenced)"
                          % (guest, host, str(exc)[-200:], host)), result
        step("probe_" + host, t, ok=True)
        rows = xen.find_domain(probe["domains"], guest)
        if rows:
            checks.append(dict(name="absent_on", host=host, ok=False, detail="%s runs %s" % (host, xen.rows_str(rows))))
            return True, "%s still runs on %s (%s); refusing to start it twice" % (guest, host, xen.rows_str(rows)), \
                result
        checks.append(dict(name="absent_on", host=host, ok=True, detail="%s answers and does not run %s"
                           % (host, guest)))
    argv = [xl, "restore"] + ([config] if config else []) + [image]
    if check_mode:
        result.update(changed=True, would=" ".join(argv))
        return False, "would restore %s from %s (taken %.0f s ago)" % (guest, image, facts["age_s"]), result
    t = clock()
    try:
        rc, out, err = runner(argv, timeout)
    except xen.XenError as exc:
        rc, out, err = None, "", str(exc)
    restore_s = round(clock() - t, 3)
    step("restore", t, rc=rc)
    result["restore_s"] = restore_s
    result["xl_output"] = (out + err).strip().splitlines()[-40:]
    here = xen.guest_rows(runner, guest, xl)
    if rc == 0 and xen.running_once(here):
        result.update(changed=True, restored=True, guest=here[0])
        return False, "%s restored from %s (taken %.0f s before) in %.1f s; it runs here exactly once" % (
            guest, image, facts["age_s"], restore_s), result
    result["changed"] = bool(here)
    result["guest"] = here[0] if here else None
    return True, ("xl restore of %s from %s failed (%s): %s; this host now has %s" % (
        guest, image, "rc=%s" % rc if rc is not None else "deadline", (err or out).strip()[-400:],
        xen.rows_str(here))), result
