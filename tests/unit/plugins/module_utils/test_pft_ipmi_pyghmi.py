# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_ipmi_pyghmi: pft's run-time fixes of pyghmi, on a stand-in session module.

The lost wake-up itself is shown against a real ipmi_sim BMC in
tests/integration/test_ipmi_health.py.
"""
import os
import types

from ansible.module_utils import pft_ipmi_pyghmi as G


def fake_session_module():
    mod = types.SimpleNamespace()
    mod.ioqueue = []
    mod.selectdeadline = 0
    mod.myself = "127.0.0.1"
    mod._monotonic_time = lambda: 100.0

    class Sess:
        bmc_handlers = {}
        initting_sessions = {}
    mod.Session = Sess

    class Sock:
        def sendto(self, data, addr):
            pass

        def getsockname(self):
            return ("127.0.0.1", 1)
    mod.iosockets = [Sock()]
    mod.original_calls = []
    mod._io_wait = lambda timeout, myaddr=None, evq=None: mod.original_calls.append((timeout, myaddr))
    return mod


def test_wakeup_fix_returns_when_reply_already_queued():
    mod = fake_session_module()
    addr = ("127.0.0.5", 623)
    mod.Session.bmc_handlers[addr] = {5000: types.SimpleNamespace(pktqueue=[b"reply"])}
    assert G.install_wakeup_fix(mod, force=True)
    mod._io_wait(1.0, addr)  # would block forever on evt.wait() without the fix
    assert mod.ioqueue and mod.ioqueue[0][2] == addr
    # undirected waits still go to pyghmi's own function
    mod._io_wait(0.5)
    assert mod.original_calls == [(0.5, None)]


def test_wakeup_fix_is_not_installed_on_unverified_versions(monkeypatch):
    mod = fake_session_module()
    monkeypatch.setattr(G, "_pyghmi_version", lambda: "2.0.0")
    assert G.install_wakeup_fix(mod) is False


def test_forget_stale_login():
    mod = fake_session_module()
    mod.Session.initting_sessions[("10.0.0.1", "admin", "pw", 623, None)] = object()
    G.forget_stale_login("10.0.0.1", "admin", "pw", 623, session_mod=mod)
    assert mod.Session.initting_sessions == {}


def test_recv_fix_receives_without_blocking():
    import socket
    mod = types.SimpleNamespace(_io_recvfrom=lambda sock, size: None)
    assert G.install_recv_fix(mod)
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("127.0.0.1", 0))
        a.setblocking(True)           # what pyghmi's sender leaves behind
        assert mod._io_recvfrom(a, 100) is None   # returns at once instead of blocking
        b.sendto(b"ping", a.getsockname())
        for _ in range(100):
            got = mod._io_recvfrom(a, 100)
            if got:
                break
        assert got[0] == b"ping"
    finally:
        a.close()
        b.close()


def test_without_pyghmi_the_modules_import_and_say_so():
    """ipmi_health_info reports a missing pyghmi with missing_required_lib: the imports must not fail."""
    import subprocess
    import sys

    import ansible.module_utils as mu
    code = (
        "import sys\n"
        "sys.modules['pyghmi'] = None\n"
        "import ansible.module_utils\n"
        "ansible.module_utils.__path__[:0] = sys.argv[1:]\n"
        "from ansible.module_utils import pft_ipmi\n"
        "from ansible.module_utils import pft_ipmi_pyghmi as G\n"
        "assert G.HAS_PYGHMI is False and isinstance(G.PYGHMI_IMPORT_ERROR, ImportError)\n"
        "assert G.install_pyghmi_fixes() is False\n"
    )
    here = os.path.dirname(G.__file__)
    out = subprocess.run([sys.executable, "-c", code, here] + list(mu.__path__), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
