# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A unix datagram socket standing in for /dev/log: the alerts pft_alert sends arrive here."""
import socket


class SyslogSink:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)

    def drain(self):
        """Every message received so far (waits 0.2 s for stragglers)."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode(errors="replace"))
            except socket.timeout:
                return out

    def close(self):
        self.sock.close()
