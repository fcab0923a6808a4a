# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_alert: formatting, validation, redaction, the dispatcher, and syslog on a real
unix socket. Delivery to real SMTP and HTTP servers is in tests/integration/test_pft_alert_delivery.py.

No timed assertions here (timing belongs to bench/); the deadlines are checked in the integration tests.
"""
import json
import os
import re
import shutil
import socket
import tempfile
import threading

import pytest
from ansible.module_utils import pft_alert as A


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="pfta", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def syslog_sock(short_dir):
    path = os.path.join(short_dir, "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now: connect is refused
    return port


@pytest.fixture
def silent_server():
    """Accepts connections and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def alert(**kw):
    kw.setdefault("severity", "critical")
    kw.setdefault("subject", "node03 evacuated to spare1")
    return A.Alert(hostname="ctl", clock=lambda: 1795430000.0, **kw)


# -- alert and formatting ---------------------------------------------------------------------------------------------
def test_alert_validation():
    with pytest.raises(A.AlertError, match="severity 'fatal'"):
        alert(severity="fatal")
    with pytest.raises(A.AlertError, match="subject is empty"):
        alert(subject="  ")
    with pytest.raises(A.AlertError, match="details must be a dict"):
        alert(details=[1])


def test_one_line_escapes_every_line_break_and_control():
    text = "a\nb\r\nc\td\x00e\x1bf\x85g\u2028h\u2029i"
    out = A.one_line(text)
    assert out == "a\\nb\\r\\nc\\td\\x00e\\x1bf\\x85g\\u2028h\\u2029i"
    assert out.splitlines() == [out]
    assert A.one_line("temp 91 °C, ok") == "temp 91 °C, ok"


def test_syslog_text_is_one_line_with_details():
    a = alert(subject="node03\nevacuated", message="CPU1 Temp 91\nfor 3 samples",
              details={"node": "node03", "note": "two\nlines", "t": 91})
    text = A.syslog_text(a)
    assert text == ('critical: node03\\nevacuated: CPU1 Temp 91\\nfor 3 samples '
                    'details={"node":"node03","note":"two\\nlines","t":91}')
    assert "\n" not in text


def test_syslog_text_is_cut_at_the_limit_on_a_character_boundary():
    text = A.syslog_text(alert(message="é" * 5000))
    raw = text.encode("utf-8")
    assert len(raw) <= A.SYSLOG_MAX_BYTES
    assert text.endswith(" [truncated]")


def test_priorities_and_facilities():
    a = alert()
    assert A.SyslogChannel("user").priority(a) == 1 * 8 + 2            # LOG_USER | LOG_CRIT
    assert A.SyslogChannel("daemon").priority(alert(severity="warning")) == 3 * 8 + 4
    assert A.SyslogChannel("local7").priority(alert(severity="info")) == 23 * 8 + 6
    with pytest.raises(A.AlertError, match="syslog_facility 'kern'"):
        A.SyslogChannel("kern")
    with pytest.raises(A.AlertError, match="syslog_ident 'p ft'"):
        A.SyslogChannel("user", ident="p ft")


def test_syslog_datagram_format_is_glibc_s():
    data = A.SyslogChannel("daemon", ident="pft-watch").datagram(alert(message="x"), pid=42).decode()
    assert re.match(r"^<26>[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d pft-watch\[42\]: "
                    r"critical: node03 evacuated to spare1: x$", data), data


def test_mail_body_and_message():
    a = alert(message="line one\nline two", details={"node": "node03", "sensors": {"CPU1 Temp": 91}})
    ch = A.MailChannel("smtp.example.org", ["root@example.org"], hostname="ctl")
    msg = ch.message(a)
    assert msg["Subject"] == "[pft critical] node03 evacuated to spare1"
    assert msg["From"] == "pft@ctl" and msg["To"] == "root@example.org"
    assert msg["Message-ID"].endswith("@ctl>")
    body = msg.get_content()
    assert body.startswith("line one\nline two\n\nSeverity: critical\nHost: ctl\nTime: 2026-11-23T")
    assert json.loads(body.split("Details (JSON):\n", 1)[1]) == a.details


def test_webhook_body():
    body = A.webhook_body(alert(message="m", details={"k": 1}))
    assert body == {"source": "pft", "severity": "critical", "subject": "node03 evacuated to spare1", "message": "m",
                    "details": {"k": 1}, "host": "ctl", "time": "2026-11-23T10:33:20Z",
                    "text": "[pft critical] node03 evacuated to spare1: m"}


# -- validation of the channels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error", [
    (dict(host="", to=["a@b"]), "mail.host is empty"),
    (dict(host="mx", to=[]), "mail.to has no recipient"),
    (dict(host="mx", to=["root"]), "'root' is not of the form user@domain"),
    (dict(host="mx", to=["a@b"], sender="x@y, z@w"), "'x@y, z@w' is not of the form"),
    (dict(host="mx", to=["a@b"], port=0), "mail.port 0 is out of range"),
    (dict(host="mx", to=["a@b"], username="u"), "both mail.username and mail.password"),
    (dict(host="mx", port=587, to=["a@b"], username="u", password="s3cret-pw"),
     "mail to mx:587: refusing to send mail.password without TLS"),
])
def test_mail_options_are_checked(kwargs, error):
    with pytest.raises(A.AlertError) as exc:
        A.MailChannel(**kwargs)
    assert error in str(exc.value)
    assert "s3cret-pw" not in str(exc.value)


@pytest.mark.parametrize("kwargs, error", [
    (dict(url="ftp://h/x"), "webhook.url ftp://h/x: not an http:// or https:// URL"),
    (dict(url="https://"), "not an http:// or https:// URL with a host"),
    (dict(url="http://h:99999/"), "webhook.url"),
    (dict(url="https://bob:tok3n@h/x?key=tok3n"), "webhook.url https://h/x?…: credentials in the URL"),
    (dict(url="https://h/", method="GET"), "webhook.method 'GET'"),
    (dict(url="https://h/", headers={"X-A": "v\r\nX-B: injected"}), "header 'X-A'"),
    (dict(url="https://h/", headers={"Bad Name": "v"}), "header 'Bad Name'"),
])
def test_webhook_options_are_checked(kwargs, error):
    with pytest.raises(A.AlertError) as exc:
        A.WebhookChannel(**kwargs)
    assert error in str(exc.value)
    assert "tok3n" not in str(exc.value)


def test_safe_url_drops_user_info_and_query():
    assert A.safe_url("https://u:p@hooks.example.org:8443/api/x?token=abc#f") == "https://hooks.example.org:8443/api/x?…"
    assert A.safe_url("http://[::1]:8080/h") == "http://[::1]:8080/h"
    assert A.safe_url("http://h/p") == "http://h/p"


def test_scrub_longest_secret_first():
    assert A.scrub("Bearer abc123 and abc", ["abc", "Bearer abc123", ""]) == "******** and ********"


def test_build_channels_keeps_good_channels_when_one_is_wrong():
    channels, invalid = A.build_channels(syslog=True, mail={"host": "mx", "to": []},
                                         webhook={"url": "https://h/x", "headers": {"Authorization": "t"}})
    assert [c.name for c in channels] == ["syslog", "webhook"]
    assert invalid == {"mail": "mail.to has no recipient"}


# -- syslog on a real unix socket -------------------------------------------------------------------------------------
def test_syslog_delivered_to_a_datagram_socket(syslog_sock):
    path, sock = syslog_sock
    ch = A.SyslogChannel("local3", ident="pft", socket_path=path)
    out = A.send_alert(alert(message="two\nlines"), [ch], deadline=5)
    assert out["delivered"] == {"syslog": True} and out["errors"] == {}
    data = sock.recv(65536).decode()
    assert data.startswith("<%d>" % (19 * 8 + 2))
    assert data.endswith("pft[%d]: critical: node03 evacuated to spare1: two\\nlines" % os.getpid())
    assert "\n" not in data


def test_syslog_falls_back_to_a_stream_socket(short_dir):
    path = os.path.join(short_dir, "log")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(5)
    got = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while not buf.endswith(b"\0"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            got.append(buf)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    out = A.send_alert(alert(), [A.SyslogChannel(socket_path=path)], deadline=5)
    thread.join(5)
    srv.close()
    assert out["delivered"] == {"syslog": True}
    assert got[0].endswith(b": critical: node03 evacuated to spare1\0")


def test_missing_syslog_socket_names_the_path(short_dir):
    path = os.path.join(short_dir, "nothing-here")
    out = A.send_alert(alert(), [A.SyslogChannel(socket_path=path)], deadline=5)
    assert out["delivered"] == {"syslog": False}
    assert out["errors"]["syslog"] == "syslog socket %s: No such file or directory" % path


# -- dispatcher: failures, deadlines, check mode -----------------------------------------------------------------------
def test_refused_mail_does_not_stop_syslog(syslog_sock):
    path, sock = syslog_sock
    port = closed_port()
    channels = [A.SyslogChannel(socket_path=path), A.MailChannel("127.0.0.1", ["root@localhost"], port=port)]
    out = A.send_alert(alert(), channels, deadline=5)
    assert out["delivered"] == {"syslog": True, "mail": False}
    assert out["errors"]["mail"].startswith("mail to 127.0.0.1:%d: connect failed: Connection refused" % port)
    assert sock.recv(65536)


def test_silent_servers_fail_at_their_timeout_not_hang(silent_server):
    channels = [A.MailChannel("127.0.0.1", ["root@localhost"], port=silent_server, timeout=0.3),
                A.WebhookChannel("http://127.0.0.1:%d/hook" % silent_server, timeout=0.3)]
    out = A.send_alert(alert(), channels, deadline=5)
    assert out["delivered"] == {"mail": False, "webhook": False}
    assert "mail to 127.0.0.1:%d: " % silent_server in out["errors"]["mail"]
    assert "0.3 s" in out["errors"]["mail"]
    assert out["errors"]["webhook"] in (
        "webhook POST http://127.0.0.1:%d/hook: no answer within 0.3 s" % silent_server,
        "webhook POST http://127.0.0.1:%d/hook: no confirmation within 0.3 s" % silent_server)


def test_the_overall_deadline_caps_each_channel(silent_server):
    ch = A.WebhookChannel("http://127.0.0.1:%d/hook" % silent_server, timeout=30)
    out = A.send_alert(alert(), [ch], deadline=0.3)
    assert out["delivered"] == {"webhook": False}
    assert "0.3 s" in out["errors"]["webhook"]


class Exploding:
    name = "webhook"
    where = "webhook POST http://h/"
    timeout = 5
    secrets = ("tok-123",)

    def send(self, alert, timeout):
        raise RuntimeError("bug with tok-123")


def test_a_bug_in_one_channel_is_an_error_of_that_channel_only(syslog_sock):
    path, _ = syslog_sock
    out = A.send_alert(alert(), [Exploding(), A.SyslogChannel(socket_path=path)], deadline=5)
    assert out["delivered"] == {"webhook": False, "syslog": True}
    assert out["errors"]["webhook"] == "webhook: unexpected RuntimeError: bug with ********"


def test_check_mode_sends_nothing_and_shows_no_secret(syslog_sock):
    path, sock = syslog_sock
    mail = A.MailChannel("127.0.0.1", ["root@localhost"], port=closed_port(), starttls=True, username="pft",
                         password="pw-XYZ-secret", hostname="ctl")
    hook = A.WebhookChannel("https://h.example/x?token=q-secret", headers={"Authorization": "Bearer hdr-secret"})
    out = A.send_alert(alert(details={"a": 1}), [A.SyslogChannel(socket_path=path), mail, hook], deadline=5,
                       check_mode=True, invalid={"other": "x"})
    assert out["delivered"] == {"syslog": False, "mail": False, "webhook": False, "other": False}
    would = out["would_send"]
    assert would["syslog"]["line"] == 'critical: node03 evacuated to spare1 details={"a":1}'
    assert would["syslog"]["priority"] == 10
    assert would["mail"]["server"] == "127.0.0.1:%d" % mail.port and would["mail"]["login"] == "pft"
    assert would["webhook"]["headers"] == {"Authorization": "********"}
    assert would["webhook"]["url"] == "https://h.example/x?…"
    dump = json.dumps(out)
    for secret in ("pw-XYZ-secret", "hdr-secret", "q-secret"):
        assert secret not in dump
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(65536)


def test_summary():
    assert A.summary({"syslog": True, "mail": False}, {"mail": "mail to mx:25: boom"}) == \
        "alert delivered by syslog; failed: mail to mx:25: boom"
    assert A.summary({"syslog": False}, {}, check_mode=True) == "check mode: would send by syslog"
    with pytest.raises(A.AlertError, match="deadline must be > 0"):
        A.send_alert(alert(), [], deadline=0)
