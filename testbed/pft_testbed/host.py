# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host-side helpers: required programs, running commands with clear errors and progress."""
import os
import shutil
import subprocess
import threading
import time

from pft_testbed.errors import MissingPackageError, TestbedError

# Programs the testbed runs on the controller, and the Debian package of each.
HOST_PROGRAMS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "mke2fs": "e2fsprogs",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ipmi_sim": "openipmi",
    "ipmitool": "ipmitool",
    "socat": "socat",
}


def require(program, package=None):
    """Full path of program, or MissingPackageError naming its Debian package."""
    path = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not path:
        raise MissingPackageError(program, package or HOST_PROGRAMS.get(program, program))
    return path


def require_all(programs=HOST_PROGRAMS):
    for program, package in programs.items():
        require(program, package)


def require_root(what="the testbed"):
    if os.geteuid() != 0:
        raise TestbedError(f"{what} must run as root (it creates network namespaces, taps and "
                           "VMs); try: sudo testbed/testbed ...")


def run(cmd, input=None, check=True, timeout=900, env=None):
    """Run cmd; on failure raise TestbedError with the command and its output's tail."""
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError as exc:
        raise MissingPackageError(cmd[0], HOST_PROGRAMS.get(os.path.basename(cmd[0]), cmd[0])) from exc
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"timed out after {timeout} s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise TestbedError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def run_progress(cmd, label, progress=print, every=20, timeout=1800, log=None):
    """Run a long command, reporting its latest output line every `every` seconds."""
    started = time.monotonic()
    lines = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip())
            if log:
                log.write(line)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    last = started
    while proc.poll() is None:
        time.sleep(0.5)
        now = time.monotonic()
        if now - started > timeout:
            proc.kill()
            raise TestbedError(f"{label} timed out after {timeout} s")
        if now - last >= every:
            last = now
            progress(f"  {label}: {now - started:.0f} s, {lines[-1] if lines else '...'}")
    t.join(5)
    if proc.returncode != 0:
        tail = "\n".join(lines[-15:])
        raise TestbedError(f"{label} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return lines
