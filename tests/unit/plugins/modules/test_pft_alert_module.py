# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the module pft_alert (in process): when it fails, what it returns, check mode.

Syslog is a real unix datagram socket and the mail server a closed loopback port here;
tests/integration/test_pft_alert_delivery.py runs the module against real SMTP and HTTP servers
through ansible-playbook.
"""
import json
import os
import shutil
import socket
import tempfile

import pft_alert
import pytest
from pft_module_run import run_module as run_module_main


@pytest.fixture
def syslog_path():
    directory = tempfile.mkdtemp(prefix="pfta", dir="/tmp")   # AF_UNIX paths are limited to 107 bytes
    path = os.path.join(directory, "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(args, capsys, check_mode=False):
    return run_module_main(pft_alert, args, capsys, check_mode)


def received(sock):
    out = []
    while True:
        try:
            out.append(sock.recv(65536).decode())
        except BlockingIOError:
            return out


def test_syslog_only(syslog_path, capsys):
    path, sock = syslog_path
    res = run({"subject": "node03 evacuated", "severity": "info", "details": {"n": 1}, "syslog_socket": path}, capsys)
    assert res["rc"] == 0 and res["changed"] is True
    assert res["delivered"] == {"syslog": True} and res["errors"] == {}
    assert res["msg"] == "alert delivered by syslog"
    [line] = received(sock)
    assert line.startswith("<14>") and line.endswith(']: info: node03 evacuated details={"n":1}')


def test_one_failed_channel_does_not_fail_the_task(syslog_path, closed_port, capsys):
    path, _ = syslog_path
    args = {"subject": "s", "syslog_socket": path, "mail": {"host": "127.0.0.1", "port": closed_port, "to": ["a@b.c"]}}
    res = run(args, capsys)
    assert res["rc"] == 0 and not res.get("failed")
    assert res["delivered"] == {"syslog": True, "mail": False}
    assert res["errors"] == {"mail": "mail to 127.0.0.1:%d: connect failed: Connection refused" % closed_port}
    res = run(dict(args, fail_on_error=True), capsys)
    assert res["rc"] == 1 and res["failed"] is True and res["delivered"]["syslog"] is True


def test_every_channel_failed_fails(syslog_path, closed_port, capsys):
    path, _ = syslog_path
    res = run({"subject": "s", "syslog_socket": path + ".none",
               "mail": {"host": "127.0.0.1", "port": closed_port, "to": ["a@b.c"]}}, capsys)
    assert res["rc"] == 1 and res["failed"] is True
    assert res["delivered"] == {"syslog": False, "mail": False}
    assert res["msg"].startswith("alert delivered by no channel; failed: syslog socket %s.none: " % path)


def test_wrong_options_of_one_channel_fail_that_channel_only(syslog_path, capsys):
    path, sock = syslog_path
    res = run({"subject": "s", "syslog_socket": path, "webhook": {"url": "ftp://h/x"},
               "mail": {"host": "mx", "to": ["a@b.c"], "username": "u", "password": "pw-never-shown"}}, capsys)
    assert res["rc"] == 0 and res["delivered"] == {"syslog": True, "mail": False, "webhook": False}
    assert res["errors"]["webhook"] == "webhook.url ftp://h/x: not an http:// or https:// URL with a host"
    assert res["errors"]["mail"].startswith("mail to mx:25: refusing to send mail.password without TLS")
    assert "pw-never-shown" not in json.dumps(res)
    assert len(received(sock)) == 1


@pytest.mark.parametrize("args, msg", [
    ({"subject": "s", "syslog": False}, "nothing to send: syslog is false and neither mail nor webhook is configured"),
    ({"subject": "s", "deadline": 0}, "deadline must be > 0 seconds, got 0.0"),
    ({"subject": "s", "webhook": {"url": "http://h/", "timeout": -1}}, "webhook.timeout must be > 0 seconds, got -1.0"),
])
def test_bad_input_fails_clearly(args, msg, capsys):
    res = run(args, capsys)
    assert res["rc"] == 1 and res["msg"] == msg


def test_check_mode_sends_nothing_and_masks_secrets(syslog_path, closed_port, capsys):
    path, sock = syslog_path
    res = run({"subject": "node03\nevacuated", "syslog_socket": path,
               "mail": {"host": "127.0.0.1", "port": closed_port, "to": ["a@b.c"], "starttls": True,
                        "username": "pft", "password": "pw-never-shown"},
               "webhook": {"url": "https://h/x", "headers": {"Authorization": "Bearer hdr-never-shown"}}},
              capsys, check_mode=True)
    assert res["rc"] == 0 and res["changed"] is True
    assert res["delivered"] == {"syslog": False, "mail": False, "webhook": False}
    assert res["would_send"]["syslog"]["line"] == "warning: node03\\nevacuated"
    assert res["would_send"]["webhook"]["headers"] == {"Authorization": "********"}
    assert res["msg"] == "check mode: would send by syslog, mail, webhook"
    assert received(sock) == []
    dump = json.dumps(res)
    assert "pw-never-shown" not in dump and "hdr-never-shown" not in dump
