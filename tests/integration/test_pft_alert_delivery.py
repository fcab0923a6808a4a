# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft_alert against real servers on loopback: an SMTP server (written here, with STARTTLS and AUTH PLAIN),
an HTTP server (http.server), a syslog socket (a unix datagram socket, as /dev/log is), a closed port and a
socket that accepts and stays silent. The module_util is called directly, then the module runs through
ansible-playbook on localhost, at -vvv, in normal and in check mode.
"""
import base64
import datetime
import email
import email.policy
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from ansible.module_utils import pft_alert as A
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pft_paths import REPO

pytestmark = pytest.mark.integration

SMTP_USER = "pft"
SMTP_PASSWORD = "smtp-Pa55-a7c1e"
TOKEN = "Bearer tok-9f3e1d77"


# -- servers -----------------------------------------------------------------------------------------------------------
def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_file, key_file


class SmtpServer:
    """A small SMTP server on 127.0.0.1: EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
    Recipients at refused.example get 550. Each accepted mail is kept with how it came (TLS, login)."""

    def __init__(self, cert, key):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.mails = []
        self.logins = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        conn.settimeout(10)
        state = {"tls": False, "login": None, "from": None, "rcpt": []}
        rfile = conn.makefile("rb")

        def say(text):
            conn.sendall(text.encode() + b"\r\n")
        try:
            say("220 pft-test ESMTP")
            while True:
                line = rfile.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    say("250-pft-test")
                    say("250-STARTTLS" if not state["tls"] else "250-AUTH PLAIN")
                    say("250 8BITMIME")
                elif verb == "STARTTLS" and not state["tls"]:
                    say("220 go ahead")
                    conn = self.context.wrap_socket(conn, server_side=True)
                    rfile = conn.makefile("rb")
                    state["tls"] = True
                elif verb == "AUTH" and state["tls"] and cmd.upper().startswith("AUTH PLAIN "):
                    _, user, password = base64.b64decode(cmd.split(" ", 2)[2]).decode().split("\0")
                    self.logins.append((user, password))
                    if (user, password) == (SMTP_USER, SMTP_PASSWORD):
                        state["login"] = user
                        say("235 2.7.0 authenticated")
                    else:
                        say("535 5.7.8 authentication credentials invalid")
                elif verb == "MAIL":
                    state["from"], state["rcpt"] = cmd.split(":", 1)[1].strip(" <>"), []
                    say("250 ok")
                elif verb == "RCPT":
                    rcpt = cmd.split(":", 1)[1].strip(" <>")
                    if rcpt.endswith("@refused.example"):
                        say("550 5.1.1 no such user here")
                    else:
                        state["rcpt"].append(rcpt)
                        say("250 ok")
                elif verb == "DATA":
                    say("354 end with <CRLF>.<CRLF>")
                    data = b""
                    while True:
                        chunk = rfile.readline()
                        if chunk in (b".\r\n", b""):
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    self.mails.append(dict(state, rcpt=list(state["rcpt"]),
                                           message=email.message_from_bytes(data.replace(b"\r\n", b"\n"),
                                                                          policy=email.policy.default)))
                    say("250 queued")
                elif verb in ("RSET", "NOOP"):
                    say("250 ok")
                elif verb == "QUIT":
                    say("221 bye")
                    return
                else:
                    say("502 not implemented")
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def close(self):
        self.sock.close()


class HookHandler(http.server.BaseHTTPRequestHandler):
    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": body})
        if self.path.startswith("/fail"):   # a careless server that echoes what it got, token included
            self._answer(500, "bad request from %s" % self.headers.get("Authorization"))
        elif self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere?token=x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(200, '{"ok": true}')

    do_POST = do_PUT = _handle

    def _answer(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def workdir():
    path = tempfile.mkdtemp(prefix="pfta", dir="/tmp")   # short: AF_UNIX paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cert(workdir):
    return self_signed(workdir)


@pytest.fixture(scope="module")
def smtp(cert):
    server = SmtpServer(*cert)
    yield server
    server.close()


@pytest.fixture(scope="module")
def hook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HookHandler)
    server.requests = []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    server.url = "http://127.0.0.1:%d" % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


class SyslogSink:
    """A unix datagram socket standing in for /dev/log."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)

    def drain(self):
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out


@pytest.fixture(scope="module")
def syslog(workdir):
    sink = SyslogSink(os.path.join(workdir, "log"))
    yield sink
    sink.sock.close()


@pytest.fixture(scope="module")
def silent():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def closed():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def alert(**kw):
    kw.setdefault("severity", "critical")
    kw.setdefault("subject", "node03 evacuated to spare1")
    return A.Alert(**kw)


# -- the module_util against the servers -------------------------------------------------------------------------------
def test_mail_delivered_with_details(smtp):
    before = len(smtp.mails)
    details = {"node": "node03", "sensors": {"CPU1 Temp": 91}, "ranking": ["spare1", "spare2"]}
    ch = A.MailChannel("127.0.0.1", ["admin@example.org"], port=smtp.port, sender="pft@ctl.example")
    out = A.send_alert(alert(message="CPU1 Temp 91 >= 85", details=details), [ch], deadline=10)
    assert out == {"delivered": {"mail": True}, "errors": {}, "info": {}}
    mail = smtp.mails[before]
    assert mail["from"] == "pft@ctl.example" and mail["rcpt"] == ["admin@example.org"] and not mail["tls"]
    msg = mail["message"]
    assert msg["Subject"] == "[pft critical] node03 evacuated to spare1"
    body = msg.get_content()
    assert body.startswith("CPU1 Temp 91 >= 85\n")
    assert json.loads(body.split("Details (JSON):\n", 1)[1]) == details


def test_mail_starttls_and_login(smtp):
    before = len(smtp.mails)
    ch = A.MailChannel("127.0.0.1", ["admin@example.org"], port=smtp.port, starttls=True, username=SMTP_USER,
                       password=SMTP_PASSWORD, validate_certs=False)
    out = A.send_alert(alert(), [ch], deadline=10)
    assert out["delivered"] == {"mail": True}, out
    assert smtp.mails[before]["tls"] is True and smtp.mails[before]["login"] == SMTP_USER


def test_mail_wrong_password_and_untrusted_certificate(smtp):
    wrong = A.MailChannel("127.0.0.1", ["admin@example.org"], port=smtp.port, starttls=True, username=SMTP_USER,
                          password="wrong-pw-4411", validate_certs=False)
    out = A.send_alert(alert(), [wrong], deadline=10)
    assert out["errors"]["mail"] == ("mail to 127.0.0.1:%d: login as pft refused: "
                                     "535 5.7.8 authentication credentials invalid" % smtp.port)
    strict = A.MailChannel("127.0.0.1", ["admin@example.org"], port=smtp.port, starttls=True)
    out = A.send_alert(alert(), [strict], deadline=10)
    assert out["errors"]["mail"].startswith("mail to 127.0.0.1:%d: TLS failed: CERTIFICATE_VERIFY_FAILED" % smtp.port)
    assert "wrong-pw-4411" not in json.dumps(out)


def test_mail_recipients_refused(smtp):
    some = A.MailChannel("127.0.0.1", ["a@example.org", "b@refused.example"], port=smtp.port)
    out = A.send_alert(alert(), [some], deadline=10)
    assert out["delivered"] == {"mail": True}
    assert out["info"] == {"mail": {"refused": {"b@refused.example": "550 5.1.1 no such user here"}}}
    every = A.MailChannel("127.0.0.1", ["b@refused.example"], port=smtp.port)
    out = A.send_alert(alert(), [every], deadline=10)
    assert out["errors"]["mail"] == ("mail to 127.0.0.1:%d: every recipient refused: "
                                     "b@refused.example (550 5.1.1 no such user here)" % smtp.port)


def test_webhook_delivered(hook):
    before = len(hook.requests)
    ch = A.WebhookChannel(hook.url + "/hook?team=hpc", method="PUT", headers={"Authorization": TOKEN})
    out = A.send_alert(alert(message="m", details={"node": "node03"}), [ch], deadline=10)
    assert out["delivered"] == {"webhook": True} and out["info"] == {"webhook": {"status": 200}}
    req = hook.requests[before]
    assert req["method"] == "PUT" and req["path"] == "/hook?team=hpc"
    assert req["headers"]["Authorization"] == TOKEN and req["headers"]["Content-Type"] == "application/json"
    body = json.loads(req["body"])
    assert body["details"] == {"node": "node03"} and body["text"] == "[pft critical] node03 evacuated to spare1: m"


def test_webhook_errors_name_the_url_and_hide_the_token(hook):
    ch = A.WebhookChannel(hook.url + "/fail?key=q1", headers={"Authorization": TOKEN})
    out = A.send_alert(alert(), [ch], deadline=10)
    assert out["errors"]["webhook"] == ("webhook POST %s/fail?…: HTTP 500 Internal Server Error: "
                                        "bad request from ********" % hook.url)
    ch = A.WebhookChannel(hook.url + "/moved", headers={"Authorization": TOKEN})
    out = A.send_alert(alert(), [ch], deadline=10)
    assert out["errors"]["webhook"] == ("webhook POST %s/moved: HTTP 302 redirect to "
                                        "http://127.0.0.1:9/elsewhere?… (redirects are not followed)" % hook.url)


def test_silent_webhook_and_smtp_fail_at_their_timeout(silent):
    channels = [A.WebhookChannel("http://127.0.0.1:%d/hook" % silent, timeout=1.0),
                A.MailChannel("127.0.0.1", ["a@example.org"], port=silent, timeout=1.0)]
    t0 = time.monotonic()
    out = A.send_alert(alert(), channels, deadline=10)
    elapsed = time.monotonic() - t0
    assert out["errors"] == {"webhook": "webhook POST http://127.0.0.1:%d/hook: no answer within 1.0 s" % silent,
                             "mail": "mail to 127.0.0.1:%d: connect: no answer within 1.0 s" % silent}
    assert 0.9 < elapsed < 1.0 + A.JOIN_GRACE + 0.5   # both in parallel, each at its own timeout


# -- the module through ansible-playbook -------------------------------------------------------------------------------
PLAYBOOK = """
- name: pft_alert against loopback servers
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Every channel works
      pft_alert:
        severity: critical
        subject: node03 evacuated to spare1
        body: "CPU1 Temp 91 >= 85\\nfor 3 samples"
        details: {node: node03, sensors: {"CPU1 Temp": 91}}
        syslog_socket: "{{ syslog_socket }}"
        facility: local5
        mail:
          host: 127.0.0.1
          port: "{{ smtp_port }}"
          to: [admin@example.org]
          starttls: true
          validate_certs: false
          username: pft
          password: "{{ smtp_password }}"
        webhook:
          url: "{{ hook_url }}/hook"
          headers: {Authorization: "{{ token }}"}
      register: full

    - name: Mail to a closed port, webhook that never answers; syslog still goes out
      pft_alert:
        severity: warning
        subject: node04 pre-staged
        syslog_socket: "{{ syslog_socket }}"
        mail: {host: 127.0.0.1, port: "{{ closed_port }}", to: [admin@example.org]}
        webhook: {url: "http://127.0.0.1:{{ silent_port }}/hook", timeout: 1, headers: {Authorization: "{{ token }}"}}
      register: partial

    - name: Every channel fails
      pft_alert:
        subject: nobody hears this
        syslog_socket: "{{ syslog_socket }}.missing"
        mail: {host: 127.0.0.1, port: "{{ closed_port }}", to: [admin@example.org]}
      register: all_failed
      ignore_errors: true

    - name: fail_on_error with a webhook that echoes the token in its error page
      pft_alert:
        subject: strict
        syslog_socket: "{{ syslog_socket }}"
        webhook: {url: "{{ hook_url }}/fail", headers: {Authorization: "{{ token }}"}}
        fail_on_error: true
      register: strict
      ignore_errors: true

    - name: Save the results for the test
      ansible.builtin.copy:
        content: "{{ {'full': full, 'partial': partial, 'all_failed': all_failed, 'strict': strict} | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
"""


def run_playbook(tmp_path, variables, check=False):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"   # secrets in a file, never in argv
    extra.write_text(json.dumps(variables))
    log = tmp_path / "ansible.log"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_LOG_PATH=str(log))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            str(tmp_path / "play.yml"), "-e", "@%s" % extra, "-vvv"] + (["--check"] if check else [])
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    return out, json.loads((tmp_path / "result.json").read_text()), log.read_text(), argv


@pytest.fixture
def play_vars(tmp_path, smtp, hook, syslog, silent, closed):
    syslog.drain()
    return {"syslog_socket": syslog.path, "smtp_port": smtp.port, "smtp_password": SMTP_PASSWORD, "token": TOKEN,
            "hook_url": hook.url, "silent_port": silent, "closed_port": closed,
            "result_file": str(tmp_path / "result.json"), "ansible_python_interpreter": sys.executable}


def test_module_through_ansible_playbook(tmp_path, play_vars, smtp, hook, syslog, closed, silent):
    mails, requests = len(smtp.mails), len(hook.requests)
    out, res, log, argv = run_playbook(tmp_path, play_vars)

    full = res["full"]
    assert full["delivered"] == {"syslog": True, "mail": True, "webhook": True}, full
    assert full["errors"] == {} and full["changed"] is True
    assert "would_send" not in full
    mail = smtp.mails[mails]
    assert mail["tls"] and mail["login"] == SMTP_USER
    assert mail["message"]["Subject"] == "[pft critical] node03 evacuated to spare1"
    assert mail["message"].get_content().startswith("CPU1 Temp 91 >= 85\nfor 3 samples\n")
    body = json.loads(hook.requests[requests]["body"])
    assert body["details"] == {"node": "node03", "sensors": {"CPU1 Temp": 91}}
    lines = syslog.drain()
    assert lines[0].startswith("<%d>" % (21 * 8 + 2))   # local5.crit
    assert lines[0].endswith("]: critical: node03 evacuated to spare1: CPU1 Temp 91 >= 85\\nfor 3 samples "
                             'details={"node":"node03","sensors":{"CPU1 Temp":91}}')

    partial = res["partial"]
    assert not partial.get("failed")
    assert partial["delivered"] == {"syslog": True, "mail": False, "webhook": False}
    assert partial["errors"]["mail"] == "mail to 127.0.0.1:%d: connect failed: Connection refused" % closed
    assert partial["errors"]["webhook"] == "webhook POST http://127.0.0.1:%d/hook: no answer within 1.0 s" % silent
    assert "node04 pre-staged" in lines[1] and lines[1].startswith("<12>")   # user.warning

    assert res["all_failed"]["failed"] is True
    assert res["all_failed"]["delivered"] == {"syslog": False, "mail": False}
    assert res["all_failed"]["msg"].startswith("alert delivered by no channel; failed: syslog socket ")

    strict = res["strict"]
    assert strict["failed"] is True and strict["delivered"] == {"syslog": True, "webhook": False}
    assert strict["errors"]["webhook"].startswith("webhook POST %s/fail: HTTP 500" % hook.url)

    everything = out.stdout + out.stderr + log + json.dumps(res) + "".join(lines + syslog.drain()) + " ".join(argv)
    assert "node03 evacuated" in log    # the log is written, and at -vvv
    for secret in (SMTP_PASSWORD, TOKEN, TOKEN.split()[1]):
        assert secret not in everything


def test_check_mode_sends_nothing(tmp_path, play_vars, smtp, hook, syslog):
    mails, requests = len(smtp.mails), len(hook.requests)
    out, res, log, _ = run_playbook(tmp_path, play_vars, check=True)
    assert len(smtp.mails) == mails and len(hook.requests) == requests and syslog.drain() == []
    full = res["full"]
    assert full["changed"] is True and full["delivered"] == {"syslog": False, "mail": False, "webhook": False}
    would = full["would_send"]
    assert would["syslog"]["priority"] == 21 * 8 + 2 and "\n" not in would["syslog"]["line"]
    assert would["mail"]["server"] == "127.0.0.1:%d" % smtp.port and would["mail"]["login"] == "pft"
    assert would["webhook"]["headers"] == {"Authorization": "********"}
    assert would["webhook"]["body"]["subject"] == "node03 evacuated to spare1"
    assert full["msg"] == "check mode: would send by syslog, mail, webhook"
    for secret in (SMTP_PASSWORD, TOKEN.split()[1]):
        assert secret not in out.stdout + out.stderr + log + json.dumps(res)
