# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alerts for pft: tell the admin by syslog, mail and/or webhook.

Everything here is plain Python (the standard library and pft_common only) so that it can be
unit-tested without Ansible.

Channels
    *syslog* writes one line to the local syslog socket (``/dev/log``) in the
    format glibc's ``syslog(3)`` uses, ``<PRI>Mmm dd hh:mm:ss ident[pid]: text``,
    with the severity mapped to a syslog priority (:data:`PRIORITIES`).
    Control characters and line separators are escaped, so an alert is always
    exactly one line in the log.

    *mail* sends a text mail with ``smtplib`` (optional STARTTLS, then AUTH);
    the details are in the body as indented JSON.

    *webhook* sends a JSON document (:func:`webhook_body`) with ``urllib``;
    any 2xx answer counts as delivered, redirects are not followed (they would
    carry the headers, tokens included, elsewhere).

Deadlines
    All channels start at once, each in its own thread, with the limit
    ``min(channel timeout, overall deadline)``. Its sockets get that timeout,
    and the thread is waited for until the limit plus ``JOIN_GRACE`` (0.5 s,
    so that the socket's own, more precise error can arrive first). A server
    that accepts and stays silent, or answers one byte at a time, costs at
    most that long. A channel still running then is reported as failed
    ("no confirmation within ..."); its thread is a daemon and dies with the
    process.

Failures
    One channel failing does not stop the others. :func:`send_alert` returns,
    per configured channel, ``delivered`` (bool) and, for the failed ones,
    ``errors`` (a message naming the server or URL and the cause). Secrets (the
    SMTP password, the webhook header values) are scrubbed from every message,
    and URLs are shown without query string.
"""
from __future__ import annotations

import errno
import json
import os
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ansible.module_utils.pft_common import utc_iso

SEVERITIES = ("info", "warning", "critical")
# syslog(3) priorities: LOG_INFO 6, LOG_WARNING 4, LOG_CRIT 2.
PRIORITIES = {"info": 6, "warning": 4, "critical": 2}
FACILITIES = dict({"user": 1, "daemon": 3}, **{"local%d" % i: 16 + i for i in range(8)})
CHANNELS = ("syslog", "mail", "webhook")
WEBHOOK_METHODS = ("POST", "PUT", "PATCH")

DEFAULT_SYSLOG_SOCKET = "/dev/log"
DEFAULT_IDENT = "pft"
DEFAULT_DEADLINE = 20.0
DEFAULT_CHANNEL_TIMEOUT = 10.0
SYSLOG_TIMEOUT = 5.0
# How long past a channel's timeout its thread is waited for (see send_alert).
JOIN_GRACE = 0.5
# rsyslog's default maxMessageSize is 8 KiB; stay well below it.
SYSLOG_MAX_BYTES = 4096
MASK = "********"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
USER_AGENT = "pft-alert/1"

_IDENT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")
# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators.
_ESCAPES = {c: "\\x%02x" % c for c in list(range(0x20)) + list(range(0x7f, 0xa0))}
_ESCAPES.update({0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


class AlertError(Exception):
    """A channel could not be used or did not deliver; the message names the server or option at fault."""


class Alert:
    """What to say: severity, a one-line subject, an optional message and details (a dict)."""

    def __init__(self, severity, subject, message=None, details=None, hostname=None, clock=time.time):
        if severity not in SEVERITIES:
            raise AlertError("severity %r is not one of %s" % (severity, ", ".join(SEVERITIES)))
        if not subject or not str(subject).strip():
            raise AlertError("subject is empty")
        if details is not None and not isinstance(details, dict):
            raise AlertError("details must be a dict, got %s" % type(details).__name__)
        self.severity = severity
        self.subject = one_line(str(subject).strip())
        self.message = message or ""
        self.details = details or {}
        # gethostname, not getfqdn: getfqdn asks DNS, without a deadline.
        self.hostname = hostname or socket.gethostname()
        self.time = clock()

    def iso_time(self):
        return utc_iso(self.time)

    def title(self):
        """``[pft critical] subject``: the mail subject and the webhook's text."""
        return "[pft %s] %s" % (self.severity, self.subject)


def one_line(text):
    """Escape newlines and other control characters so that ``text`` is one line."""
    return text.translate(_ESCAPES)


def _json(obj, **kw):
    return json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False, **kw)


def scrub(text, secrets):
    """Replace every secret in ``text`` by ``********`` (longest first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def safe_url(url):
    """The URL as it may appear in results and errors: no user info, no query, no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = "[%s]" % host
        netloc = host + (":%d" % parts.port if parts.port else "")
    except ValueError:
        return "<unparsable URL>"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


# --------------------------------------------------------------------------
# syslog
# --------------------------------------------------------------------------
def syslog_text(alert):
    """The text of the syslog line (without the ``<PRI>`` header), at most SYSLOG_MAX_BYTES bytes of UTF-8."""
    text = "%s: %s" % (alert.severity, alert.subject)
    if alert.message:
        text += ": " + one_line(alert.message)
    if alert.details:
        text += " details=" + one_line(_json(alert.details, separators=(",", ":")))
    raw = text.encode("utf-8")
    if len(raw) > SYSLOG_MAX_BYTES:
        marker = " [truncated]"
        text = raw[:SYSLOG_MAX_BYTES - len(marker)].decode("utf-8", "ignore") + marker
    return text


class SyslogChannel:
    name = "syslog"

    def __init__(self, facility="user", ident=DEFAULT_IDENT, socket_path=DEFAULT_SYSLOG_SOCKET,
                 timeout=SYSLOG_TIMEOUT):
        if facility not in FACILITIES:
            raise AlertError("syslog_facility %r is not one of %s" % (facility, ", ".join(FACILITIES)))
        if not _IDENT_RE.match(ident or ""):
            raise AlertError("syslog_ident %r: use 1-48 letters, digits, '_', '.' or '-'" % (ident,))
        self.facility = facility
        self.ident = ident
        self.socket_path = socket_path
        self.timeout = timeout
        self.secrets = ()
        self.where = "syslog socket %s" % socket_path

    def priority(self, alert):
        return FACILITIES[self.facility] * 8 + PRIORITIES[alert.severity]

    def datagram(self, alert, pid=None):
        tm = time.localtime(alert.time)
        # "Nov  3 09:05:01" as glibc writes it; English month names whatever the locale.
        stamp = "%s %2d %02d:%02d:%02d" % (_MONTHS[tm.tm_mon - 1], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
        header = "<%d>%s %s[%d]: " % (self.priority(alert), stamp, self.ident, os.getpid() if pid is None else pid)
        return (header + syslog_text(alert)).encode("utf-8")

    def preview(self, alert):
        return {"socket": self.socket_path, "facility": self.facility, "priority": self.priority(alert),
                "ident": self.ident, "line": syslog_text(alert)}

    def send(self, alert, timeout):
        data = self.datagram(alert)
        where = self.where
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind)
            sock.settimeout(timeout)
            try:
                sock.connect(self.socket_path)
                if kind == socket.SOCK_DGRAM:
                    sock.send(data)
                else:   # syslog-ng may listen on a stream socket; glibc ends each message with NUL there
                    sock.sendall(data + b"\0")
                return {}
            except OSError as exc:
                if kind == socket.SOCK_DGRAM and exc.errno == errno.EPROTOTYPE:
                    continue
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    raise AlertError("%s: not accepted within %.1f s (syslog daemon stuck?)"
                                     % (where, timeout)) from exc
                raise AlertError("%s: %s" % (where, exc.strerror or exc)) from exc
            finally:
                sock.close()
        raise AlertError("%s: neither a datagram nor a stream socket" % where)   # pragma: no cover


# --------------------------------------------------------------------------
# mail
# --------------------------------------------------------------------------
def mail_body(alert):
    lines = []
    if alert.message:
        lines += [alert.message.rstrip(), ""]
    lines += ["Severity: %s" % alert.severity, "Host: %s" % alert.hostname, "Time: %s" % alert.iso_time()]
    if alert.details:
        lines += ["", "Details (JSON):", _json(alert.details, indent=2)]
    return "\n".join(lines) + "\n"


class MailChannel:
    name = "mail"

    def __init__(self, host, to, port=25, sender=None, starttls=False, username=None, password=None,
                 timeout=DEFAULT_CHANNEL_TIMEOUT, validate_certs=True, hostname=None):
        self.hostname = hostname or socket.gethostname()
        if not host:
            raise AlertError("mail.host is empty")
        if not 0 < int(port) < 65536:
            raise AlertError("mail.port %s is out of range" % port)
        self.host = host
        self.port = int(port)
        self.server = "%s:%d" % ("[%s]" % host if ":" in host else host, self.port)
        self.where = "mail to %s" % self.server
        if isinstance(to, str):
            to = [to]
        self.to = [one_line(str(t)).strip() for t in (to or []) if str(t).strip()]
        if not self.to:
            raise AlertError("mail.to has no recipient")
        self.sender = one_line(sender or "pft@%s" % self.hostname).strip()
        for addr in [self.sender] + self.to:
            if "@" not in addr or any(c in addr for c in " <>,;"):
                raise AlertError("mail address %r is not of the form user@domain" % addr)
        if (username is None) != (password is None):
            raise AlertError("mail: give both mail.username and mail.password, or neither")
        if username is not None and not starttls:
            raise AlertError("mail to %s: refusing to send mail.password without TLS; set mail.starttls: true"
                             % self.server)
        self.starttls = bool(starttls)
        self.username = username
        self.password = password
        self.timeout = float(timeout)
        self.validate_certs = validate_certs
        self.secrets = (password,) if password else ()

    def message(self, alert):
        msg = EmailMessage()
        msg["Subject"] = alert.title()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(alert.time, localtime=True)
        msg["Message-ID"] = make_msgid("pft", domain=self.hostname)   # domain given: no DNS lookup
        msg["X-Pft-Severity"] = alert.severity
        msg.set_content(mail_body(alert))
        return msg

    def preview(self, alert):
        return {"server": self.server, "from": self.sender, "to": self.to, "subject": alert.title(),
                "body": mail_body(alert), "starttls": self.starttls,
                "login": self.username if self.username is not None else None}

    def send(self, alert, timeout):
        msg = self.message(alert)
        step = "connect"
        try:
            # local_hostname given: smtplib would otherwise ask DNS (getfqdn) without a deadline.
            with smtplib.SMTP(self.host, self.port, timeout=timeout, local_hostname=self.hostname) as smtp:
                step = "EHLO"
                smtp.ehlo()
                if self.starttls:
                    step = "STARTTLS"
                    if not smtp.has_extn("starttls"):
                        raise AlertError("mail to %s: the server does not offer STARTTLS" % self.server)
                    context = ssl.create_default_context()
                    if not self.validate_certs:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if self.username is not None:
                    step = "AUTH"
                    smtp.login(self.username, self.password)
                step = "send"
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.to)
                step = "QUIT"
        except AlertError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            raise AlertError("mail to %s: every recipient refused: %s"
                             % (self.server, _smtp_refusals(exc.recipients))) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertError("mail to %s: login as %s refused: %s"
                             % (self.server, self.username, _smtp_reply(exc))) from exc
        except smtplib.SMTPResponseException as exc:
            raise AlertError("mail to %s: %s refused: %s" % (self.server, step, _smtp_reply(exc))) from exc
        except (socket.timeout, TimeoutError):
            raise AlertError("mail to %s: %s: no answer within %.1f s" % (self.server, step, timeout)) from None
        except ssl.SSLError as exc:
            raise AlertError("mail to %s: TLS failed: %s" % (self.server, exc.reason or exc)) from exc
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, (socket.timeout, TimeoutError)):   # smtplib turns read timeouts into this
                raise AlertError("mail to %s: %s: no answer within %.1f s" % (self.server, step, timeout)) from exc
            raise AlertError("mail to %s: %s: server closed the connection (%s)" % (self.server, step, exc)) from exc
        except smtplib.SMTPException as exc:
            raise AlertError("mail to %s: %s failed: %s" % (self.server, step, exc)) from exc
        except OSError as exc:
            raise AlertError("mail to %s: %s failed: %s" % (self.server, step, exc.strerror or exc)) from exc
        return {"refused": {r: _smtp_reply_tuple(v) for r, v in refused.items()}} if refused else {}


def _smtp_reply_tuple(reply):
    code, text = reply
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "%s %s" % (code, one_line(text))


def _smtp_reply(exc):
    return _smtp_reply_tuple((exc.smtp_code, exc.smtp_error))


def _smtp_refusals(recipients):
    return "; ".join("%s (%s)" % (r, _smtp_reply_tuple(v)) for r, v in sorted(recipients.items()))


# --------------------------------------------------------------------------
# webhook
# --------------------------------------------------------------------------
def webhook_body(alert):
    """The JSON document the webhook receives. ``text`` makes it usable as is by Slack/Mattermost-style hooks."""
    return {"source": "pft", "severity": alert.severity, "subject": alert.subject, "message": alert.message,
            "details": alert.details, "host": alert.hostname, "time": alert.iso_time(),
            "text": alert.title() + (": " + alert.message if alert.message else "")}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None   # urllib then raises HTTPError with the 3xx code


class WebhookChannel:
    name = "webhook"

    def __init__(self, url, method="POST", headers=None, timeout=DEFAULT_CHANNEL_TIMEOUT, validate_certs=True):
        if not url:
            raise AlertError("webhook.url is empty")
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port   # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise AlertError("webhook.url %s: %s" % (safe_url(url), exc)) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertError("webhook.url %s: not an http:// or https:// URL with a host" % safe_url(url))
        if parts.username is not None or parts.password is not None:
            raise AlertError("webhook.url %s: credentials in the URL are not supported; put them in "
                             "webhook.headers (Authorization)" % safe_url(url))
        method = (method or "POST").upper()
        if method not in WEBHOOK_METHODS:
            raise AlertError("webhook.method %r is not one of %s" % (method, ", ".join(WEBHOOK_METHODS)))
        headers = {str(k): str(v) for k, v in (headers or {}).items()}
        for key, value in headers.items():
            if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", key) or "\n" in value or "\r" in value:
                raise AlertError("webhook.headers: header %r is not a valid name, or its value has a newline" % key)
        self.url = url
        self.shown_url = safe_url(url)
        self.method = method
        self.where = "webhook %s %s" % (method, self.shown_url)
        self.headers = headers
        self.timeout = float(timeout)
        self.validate_certs = validate_certs
        self.secrets = tuple(headers.values())

    def request(self, alert):
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        headers.update(self.headers)
        data = _json(webhook_body(alert)).encode("utf-8")
        return urllib.request.Request(self.url, data=data, method=self.method, headers=headers)

    def preview(self, alert):
        return {"url": self.shown_url, "method": self.method, "headers": {k: MASK for k in self.headers},
                "body": webhook_body(alert)}

    def send(self, alert, timeout):
        handlers = [_NoRedirect()]
        if self.url.startswith("https:"):
            context = ssl.create_default_context()
            if not self.validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        where = self.where
        try:
            with opener.open(self.request(alert), timeout=timeout) as resp:
                status = resp.status
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            snippet = ""
            try:
                snippet = one_line(exc.read(200).decode("utf-8", "replace")).strip()
            except (OSError, ValueError):
                pass
            if 300 <= exc.code < 400:
                raise AlertError("%s: HTTP %d redirect to %s (redirects are not followed)"
                                 % (where, exc.code, safe_url(exc.headers.get("Location", "?")))) from exc
            raise AlertError("%s: HTTP %d %s%s"
                             % (where, exc.code, exc.reason, ": " + snippet if snippet else "")) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise AlertError("%s: no answer within %.1f s" % (where, timeout)) from exc
            raise AlertError("%s: %s" % (where, getattr(reason, "strerror", None) or reason)) from exc
        except (socket.timeout, TimeoutError):
            raise AlertError("%s: no answer within %.1f s" % (where, timeout)) from None
        except (OSError, ValueError) as exc:   # http.client errors (RemoteDisconnected, BadStatusLine) included
            raise AlertError("%s: %s" % (where, getattr(exc, "strerror", None) or exc or type(exc).__name__)) from exc
        if not 200 <= status < 300:
            raise AlertError("%s: HTTP %d" % (where, status))
        return {"status": status}


# --------------------------------------------------------------------------
# sending
# --------------------------------------------------------------------------
def send_alert(alert, channels, deadline=DEFAULT_DEADLINE, check_mode=False, invalid=None):
    """Send ``alert`` on every channel, each in its own thread, all within ``deadline`` seconds.

    ``channels`` is a list of channel objects (:class:`SyslogChannel`, :class:`MailChannel`,
    :class:`WebhookChannel`); ``invalid`` maps the names of configured channels whose options were
    rejected to that error (they count as failed). Returns a dict with ``delivered`` (channel -> bool),
    ``errors`` (channel -> message), ``info`` (channel -> extra facts, e.g. refused recipients, HTTP
    status) and, in check mode, ``would_send`` (channel -> what would be sent) instead of sending.
    """
    if deadline <= 0:
        raise AlertError("deadline must be > 0 seconds, got %s" % deadline)
    secrets = [s for ch in channels for s in ch.secrets]
    delivered = {}
    errors = {}
    for name, error in (invalid or {}).items():
        delivered[name] = False
        errors[name] = scrub(str(error), secrets)
    if check_mode:
        would = {ch.name: ch.preview(alert) for ch in channels}
        delivered.update({ch.name: False for ch in channels})
        return {"delivered": delivered, "errors": errors, "info": {}, "would_send": would}

    start = time.monotonic()
    outcome = {}

    def run(ch, limit):
        try:
            outcome[ch.name] = ("ok", ch.send(alert, limit))
        except AlertError as exc:
            outcome[ch.name] = ("error", str(exc))
        except Exception as exc:   # noqa: BLE001 - a bug in one channel must not silence the others
            outcome[ch.name] = ("error", "%s: unexpected %s: %s" % (ch.name, type(exc).__name__, exc))

    threads = []
    for ch in channels:
        limit = min(ch.timeout, deadline)
        thread = threading.Thread(target=run, args=(ch, limit), name="pft-alert-" + ch.name, daemon=True)
        thread.start()
        threads.append((ch, thread, limit))
    for _ch, thread, limit in threads:
        # The channel's sockets time out at ``limit``; the grace lets that specific error (which step, which
        # server) arrive before the generic one below.
        thread.join(max(0.0, start + limit + JOIN_GRACE - time.monotonic()))
    info = {}
    for ch, _thread, limit in threads:
        state = outcome.get(ch.name)
        if state is None:   # still running: no confirmation in time
            delivered[ch.name] = False
            errors[ch.name] = "%s: no confirmation within %.1f s" % (ch.where, limit)
        elif state[0] == "ok":
            delivered[ch.name] = True
            if state[1]:
                info[ch.name] = state[1]
        else:
            delivered[ch.name] = False
            errors[ch.name] = scrub(state[1], secrets)
    return {"delivered": delivered, "errors": errors, "info": info}


def build_channels(syslog=True, syslog_facility="user", syslog_ident=DEFAULT_IDENT,
                   syslog_socket=DEFAULT_SYSLOG_SOCKET, mail=None, webhook=None, hostname=None):
    """Channel objects from module-style options. Returns (channels, invalid) where ``invalid`` maps
    a configured channel whose options are wrong to the error; the other channels still send."""
    channels, invalid = [], {}
    makers = []
    if syslog:
        makers.append(("syslog", lambda: SyslogChannel(syslog_facility, syslog_ident, syslog_socket)))
    if mail:
        makers.append(("mail", lambda: MailChannel(
            host=mail.get("host"), to=mail.get("to"), port=mail.get("port") or 25, sender=mail.get("from"),
            starttls=bool(mail.get("starttls")), username=mail.get("username"), password=mail.get("password"),
            timeout=mail.get("timeout") or DEFAULT_CHANNEL_TIMEOUT,
            validate_certs=mail.get("validate_certs", True) is not False, hostname=hostname)))
    if webhook:
        makers.append(("webhook", lambda: WebhookChannel(
            url=webhook.get("url"), method=webhook.get("method") or "POST", headers=webhook.get("headers"),
            timeout=webhook.get("timeout") or DEFAULT_CHANNEL_TIMEOUT,
            validate_certs=webhook.get("validate_certs", True) is not False)))
    for name, make in makers:
        try:
            channels.append(make())
        except AlertError as exc:
            invalid[name] = str(exc)
    return channels, invalid


def summary(delivered, errors, check_mode=False):
    """A sentence for ``msg``."""
    ok = [c for c in CHANNELS if delivered.get(c)]
    if check_mode:
        would = [c for c in CHANNELS if c in delivered and c not in errors]
        text = "check mode: would send by %s" % (", ".join(would) or "nothing")
    else:
        text = "alert delivered by %s" % (", ".join(ok) or "no channel")
    if errors:
        text += "; failed: " + "; ".join(errors[c] for c in CHANNELS if c in errors)
    return text
