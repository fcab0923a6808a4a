# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Before a migration: the balloon, and the pre-staging checks of the target (xen_prestage).

:func:`prestage` checks that the target can take the guest (its probe, memory, the guest's files, the NFS
root server), can balloon the guest down to fit (:func:`balloon`) and can refresh its checkpoint image on
the target (pft_xen_checkpoint).
"""
from __future__ import annotations

import hashlib
import re
import time

from ansible.module_utils.pft_xen import (
        XL,
        XenError,
        check_host,
        check_name,
        check_target,
        domain_info,
        find_domain,
        guest_rows,
        probe_target,
        rows_str,
        run,
        run_ok,
        step_recorder,
    )
from ansible.module_utils.pft_xen_checkpoint import CKPT_BLOCK, CKPT_DIR, check_blocksize, checkpoint

NFSROOT_RE = re.compile(r"(?:^|\s)nfsroot=(?:(?P<host>[A-Za-z0-9.-]+):)?(?P<path>/\S*?)(?:,\S*)?(?:\s|$)")
IPARG_RE = re.compile(r"(?:^|\s)ip=(?P<client>[^:\s]*):(?P<server>[^:\s]*):")


def nfs_server(cmdline):
    """The NFS root server of a guest kernel command line (nfsroot=HOST:/path or ip=...:SERVER:...), or None."""
    if not cmdline:
        return None
    m = NFSROOT_RE.search(cmdline)
    if not m:
        return None
    if m.group("host"):
        return m.group("host")
    ip = IPARG_RE.search(cmdline)
    return ip.group("server") if ip and ip.group("server") else None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def balloon(guest, target_mb, timeout=60.0, tolerance_mb=4, runner=None, xl=XL, clock=time.monotonic,
            sleep=time.sleep):
    """xl mem-set and wait until `xl list` shows the guest within tolerance; on timeout set the old
    target back (the cancel rule of xenopsd PR#359). Returns a dict (ok, from_mb, to_mb, reached_mb, seconds)."""
    runner = runner or run
    rows = [r for r in guest_rows(runner, guest, xl) if r["role"] == "self"]
    if not rows:
        raise XenError("%s does not run on this host: cannot balloon it" % guest)
    start_mb = rows[0]["memory_mb"]
    t0 = clock()
    run_ok([xl, "mem-set", guest, "%dm" % target_mb], 30, runner)
    reached = start_mb
    while clock() - t0 < timeout:
        rows = [r for r in guest_rows(runner, guest, xl) if r["role"] == "self"]
        reached = rows[0]["memory_mb"] if rows else None
        if reached is not None and abs(reached - target_mb) <= tolerance_mb:
            return dict(ok=True, from_mb=start_mb, to_mb=target_mb, reached_mb=reached,
                        seconds=round(clock() - t0, 3), cancelled=False)
        sleep(0.5)
    runner([xl, "mem-set", guest, "%dm" % start_mb], 30)
    return dict(ok=False, from_mb=start_mb, to_mb=target_mb, reached_mb=reached, seconds=round(clock() - t0, 3),
                cancelled=True)


def _memory_check(mem, free, guest_mb, margin_mb, balloon_to_mb, balloon_floor_mb):
    """Fill in the memory check: the guest fits in the target's free memory now, or after ballooning within limits."""
    mem["ok"] = free >= guest_mb + margin_mb
    mem["detail"] = "target has %d MiB free, guest has %d MiB + %d MiB margin" % (free, guest_mb, margin_mb)
    if not mem["ok"] and balloon_to_mb:
        floor_ok = max(balloon_to_mb, balloon_floor_mb) + margin_mb <= free
        mem["ok"] = floor_ok
        mem["detail"] += "; after ballooning to %d MiB: %s" % (max(balloon_to_mb, balloon_floor_mb),
                                                                "fits" if floor_ok else "still does not fit")


def _file_checks(files, theirs_by_path):
    """Checks that the target has the same files as here (their sha256 from its probe)."""
    checks = []
    for path in files:
        try:
            mine = sha256_file(path)
        except OSError as exc:
            checks.append(dict(name="file", path=path, ok=False, detail="cannot read here: %s" % exc))
            continue
        theirs = theirs_by_path.get(path)
        checks.append(dict(name="file", path=path, ok=theirs == mine,
                           detail="identical (sha256 %s)" % mine[:16] if theirs == mine else
                           ("missing on target" if theirs is None else "differs: here %s, target %s"
                            % (mine[:16], theirs[:16]))))
    return checks


def _checkpoint_check(guest, target, tgt_rows, checks, steps, result, block, timeout, check_mode, runner, xl,
                      local_dir, clock):
    """Refresh the guest's checkpoint image on the target (pft_xen_checkpoint) and add its check."""
    if tgt_rows:
        checks.append(dict(name="checkpoint", ok=False, detail="not taken: %s already has %s"
                           % (target, rows_str(tgt_rows))))
        return
    try:
        ck_steps, ck = checkpoint(guest, target, blocksize=block, timeout=timeout, check_mode=check_mode,
                                  runner=runner, xl=xl, local_dir=local_dir, clock=clock)
    except XenError as exc:
        checks.append(dict(name="checkpoint", ok=False, detail=str(exc)))
        return
    steps.extend(ck_steps)
    result["checkpoint"] = ck
    result["changed"] = True
    if check_mode:
        checks.append(dict(name="checkpoint", ok=True, detail=ck["would"]))
        return
    alive = ck["guest_state"] in ("running", "blocked", "idle")
    checks.append(dict(name="checkpoint", ok=alive, detail=(
        "%s:%s, %.1f MiB image, %d of %d blocks sent (%.1f MiB); guest paused %.1f s for the save; "
        "guest is %s" % (target, ck["path"], ck["image_mib"], ck["blocks_sent"], ck["blocks_total"],
                         ck["mib_sent"], ck["pause_s"], ck["guest_state"]))))


def prestage(guest, target, config=None, nfs=None, balloon_to_mb=None, balloon_floor_mb=64, balloon_timeout=60.0,
             margin_mb=16, check_mode=False, timeout=120.0, runner=None, xl=XL, clock=time.monotonic,
             checkpoint_image=False, checkpoint_block=CKPT_BLOCK, checkpoint_timeout=600.0, checkpoint_dir=CKPT_DIR):
    """Checks (and optional balloon, and checkpoint image on the target) before a migration of guest to target.
    Returns a result dict."""
    check_name(guest)
    check_host(target)
    if checkpoint_image:
        check_blocksize(checkpoint_block)
    runner = runner or run
    steps, checks = [], []
    step = step_recorder(steps, clock)

    t = clock()
    info = domain_info([guest], runner=runner, timeout=min(timeout, 60), xl=xl)
    step("source_facts", t)
    dom = [d for d in info["domains"] if d["name"] == guest]
    if not dom:
        raise XenError("%s does not run on this host: nothing to pre-stage" % guest)
    dom = dom[0]
    files = [p for p in (dom.get("kernel"), dom.get("ramdisk"), config) if p]
    server = nfs or nfs_server(dom.get("cmdline"))
    t = clock()
    try:
        probe = probe_target(target, files=files, tcp=[(server, 2049)] if server else [],
                             timeout=min(timeout, 120), runner=runner)
        checks.append(dict(name="receive_path", ok=True, detail="migration key and pft-probe answer on %s" % target))
    except XenError as exc:
        step("probe_target", t, ok=False)
        checks.append(dict(name="receive_path", ok=False, detail=str(exc)))
        if checkpoint_image:
            checks.append(dict(name="checkpoint", ok=False, detail="not taken: the target does not answer"))
        return dict(ready=False, checks=checks, steps=steps, changed=False, guest=dom, target_host=None,
                    balloon=None, checkpoint=None)
    step("probe_target", t, ok=True)
    tgt_rows = find_domain(probe["domains"], guest)
    checks.append(dict(name="not_on_target", ok=not tgt_rows,
                       detail="target runs %s" % rows_str(tgt_rows) if tgt_rows else "guest not on target"))
    checks += check_target(probe, 0, 0, source_toolstack=info["host"]["toolstack_version"])
    _memory_check([c for c in checks if c["name"] == "memory"][0], probe["host"]["free_memory_mb"] or 0,
                  dom["memory_mb"], margin_mb, balloon_to_mb, balloon_floor_mb)
    checks += _file_checks(files, probe["files"])
    if server:
        ok = probe["tcp"].get("%s:2049" % server, False)
        checks.append(dict(name="nfs_root", ok=ok, detail="NFS server %s:2049 %s from %s"
                           % (server, "reachable" if ok else "NOT reachable", target)))
    result = dict(ready=all(c["ok"] for c in checks), checks=checks, steps=steps, changed=False, guest=dom,
                  target_host=probe["host"], balloon=None, checkpoint=None)
    if balloon_to_mb:
        to_mb = max(balloon_to_mb, balloon_floor_mb)
        if to_mb >= dom["memory_mb"]:
            result["balloon"] = dict(ok=True, skipped="guest already at %d MiB <= %d MiB" % (dom["memory_mb"], to_mb))
        elif check_mode:
            result["balloon"] = dict(ok=None, would="balloon %s from %d MiB to %d MiB" % (guest, dom["memory_mb"],
                                                                                         to_mb))
            result["changed"] = True
        else:
            t = clock()
            b = balloon(guest, to_mb, timeout=balloon_timeout, runner=runner, xl=xl, clock=clock)
            step("balloon", t, **b)
            result["balloon"] = b
            result["changed"] = True
            checks.append(dict(name="balloon", ok=b["ok"], detail=(
                "ballooned from %d to %d MiB in %.1f s" % (b["from_mb"], b["reached_mb"], b["seconds"]) if b["ok"]
                else "did not reach %d MiB within %.0f s (at %s MiB); target set back to %d MiB"
                % (to_mb, balloon_timeout, b["reached_mb"], b["from_mb"]))))
            result["ready"] = all(c["ok"] for c in checks)
    if checkpoint_image:
        _checkpoint_check(guest, target, tgt_rows, checks, steps, result, checkpoint_block, checkpoint_timeout,
                          check_mode, runner, xl, checkpoint_dir, clock)
        result["ready"] = all(c["ok"] for c in checks)
    return result
