# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest setup.

pft is not a collection: its module_utils live in plugins/module_utils and
Ansible finds them through ``module_utils = ./plugins/module_utils``. For
tests to import them exactly as the modules do (``ansible.module_utils.pft_*``)
the directory is added to the ``ansible.module_utils`` package path.

The hooks of tests/phase_clock.py are imported here: with ``PFT_PHASES`` set
(``make test`` sets it) the session records how long the unit, integration and
each e2e module took, for the phase table at the end of ``make test``.
"""
import socket
import sys
import threading

import ansible.module_utils
import pytest
from pft_paths import MODULE_UTILS, MODULES
from phase_clock import pytest_runtest_logreport, pytest_runtest_protocol, pytest_sessionfinish  # noqa: F401  (pytest hooks: the phase clock plugin)

if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)
if MODULES not in sys.path:
    sys.path.insert(0, MODULES)


@pytest.fixture
def xml_replay_server():
    """A loopback TCP server that answers every connection with ``state['data']``.

    Tests set ``state['data']`` (for example XML recorded from a real gmond,
    then cut or mangled) and connect to ``state['endpoint']`` ("addr:port").
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.05)
    state = {"data": b"", "endpoint": "127.0.0.1:%d" % sock.getsockname()[1]}
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                conn.sendall(state["data"])
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield state
    stop.set()
    thread.join(5)
    sock.close()
