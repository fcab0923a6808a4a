# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU's human monitor (HMP) over the node's unix socket: one command, its output.

Every node's QEMU listens on ``<node dir>/monitor.sock`` (``-monitor unix:...,server=on,wait=off``).
HMP echoes what it is sent and ends each answer with the prompt ``(qemu) ``; :func:`hmp` sends one
command and returns the text between the echo and the next prompt.
"""
import re
import socket
import time

from pft_testbed.errors import TestbedError

PROMPT = b"(qemu) "
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


def _read_until_prompt(sock, deadline, what):
    buf = b""
    while not buf.endswith(PROMPT):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TestbedError(f"{what}: no monitor prompt within the deadline; got {buf[-300:]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            raise TestbedError(f"{what}: QEMU closed the monitor; got {buf[-300:]!r}")
        buf += chunk
    return buf


def hmp(path, command, timeout=60.0, what=None):
    """Run one HMP command on the monitor socket at `path`; return its output (stripped)."""
    what = what or f"QEMU monitor {path}: {command!r}"
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(min(timeout, 10.0))
            sock.connect(path)
            _read_until_prompt(sock, deadline, what)          # the banner
            sock.sendall(command.encode() + b"\n")
            raw = _read_until_prompt(sock, deadline, what)
    except OSError as exc:
        raise TestbedError(f"{what}: {exc}") from exc
    text = _ESCAPES.sub(b"", raw[: -len(PROMPT)]).decode(errors="replace")
    lines = text.split("\n")
    # the first line is HMP's echo of the command (readline redraws it, so compare loosely)
    if lines and command.split()[0] in lines[0]:
        lines = lines[1:]
    return "\n".join(line for line in lines if line.strip()).strip()
