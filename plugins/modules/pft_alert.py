#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module pft_alert: alert the admin by syslog, mail and webhook."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pft_alert
short_description: Alert the admin by syslog, and by mail and/or webhook when configured
description:
  - Sends one alert on every configured channel. O(syslog) is on by default; O(mail) and O(webhook) are used when given.
  - >-
    Syslog gets exactly one line on the local socket O(syslog_socket) (C(/dev/log)), in the format of the
    C library function C(syslog), at the priority of O(severity) (C(info) -> C(LOG_INFO),
    C(warning) -> C(LOG_WARNING), C(critical) -> C(LOG_CRIT)).
    Newlines and other control characters in O(subject), O(body) and O(details) are escaped (C(\n), C(\xNN)).
    The line is C(<severity>: <subject>: <body> details=<compact JSON>), cut at 4096 bytes.
  - Mail is a text mail with the subject C([pft <severity>] <subject>); its body holds O(body), the severity,
    the controller's host name, the time and O(details) as indented JSON.
  - >-
    The webhook gets a JSON object with the keys C(source) (V(pft)), C(severity), C(subject), C(message) (O(body)),
    C(details), C(host), C(time) (UTC, ISO 8601) and C(text) (C([pft <severity>] <subject>: <body>), which
    Slack- and Mattermost-style incoming webhooks show as is). Any 2xx answer counts as delivered; redirects are
    not followed. Proxies come from the environment (C(https_proxy), C(no_proxy)).
  - Every channel has a deadline (its own O(mail.timeout), O(webhook.timeout)) and all of them together have
    O(deadline) (they run in parallel). A server that accepts the connection and never answers makes that channel
    fail after its timeout (plus at most half a second).
  - One failing channel does not stop the others. The task fails only when every configured channel failed, or,
    with O(fail_on_error=true), when any did; otherwise RV(errors) tells what failed, so that a watch run is not
    aborted because the mail relay is down. Wrong options of one channel (say a C(ftp://) O(webhook.url)) count as a
    failure of that channel.
  - The mail password and the webhook header values never appear in the result, in error messages or in logs;
    webhook URLs are shown without their query string.
  - Reports C(changed=true) when an alert was sent (in check mode, would be sent).
version_added: "0.1.0"
author:
  - pft contributors
options:
  severity:
    description: How bad it is.
    type: str
    choices: [info, warning, critical]
    default: warning
  subject:
    description: One line saying what happened, for example V(node03 evacuated to spare1).
    type: str
    required: true
  body:
    description: More text. Mail and webhook keep its newlines; syslog escapes them.
    type: str
  details:
    description: Structured facts (sensors, verdicts, target ranking, ...), sent as JSON on every channel.
    type: dict
  syslog:
    description: Send to the local syslog.
    type: bool
    default: true
  facility:
    description: Syslog facility.
    type: str
    choices: [user, daemon, local0, local1, local2, local3, local4, local5, local6, local7]
    default: user
  syslog_ident:
    description: Syslog identifier (program name) of the line; letters, digits, C(_ . -).
    type: str
    default: pft
  syslog_socket:
    description: The syslog daemon's local socket (datagram, or stream as some syslog-ng setups use).
    type: path
    default: /dev/log
  mail:
    description: Send a mail through this SMTP server. No mail when omitted.
    type: dict
    suboptions:
      host:
        description: SMTP server (relay) name or address.
        type: str
        required: true
      port:
        description: SMTP port.
        type: int
        default: 25
      from:
        description: Sender address, a plain C(user@domain) (no display name); defaults to C(pft@<host name>).
        type: str
      to:
        description: Recipient addresses, each a plain C(user@domain).
        type: list
        elements: str
        required: true
      starttls:
        description: Switch to TLS with STARTTLS before anything else; the task refuses to log in without it.
        type: bool
        default: false
      validate_certs:
        description: Check the server's certificate and name after STARTTLS.
        type: bool
        default: true
      username:
        description: Log in (SMTP AUTH) as this user; needs O(mail.password) and O(mail.starttls=true).
        type: str
      password:
        description: Password of O(mail.username). Keep it in vault.
        type: str
      timeout:
        description: Seconds for the whole mail delivery (connect, TLS, login, send), at most O(deadline).
        type: float
        default: 10.0
  webhook:
    description: Send the alert as JSON to this HTTP(S) endpoint. No webhook when omitted.
    type: dict
    suboptions:
      url:
        description: The C(http://) or C(https://) URL. No credentials in it; put tokens in O(webhook.headers).
        type: str
        required: true
      method:
        description: HTTP method.
        type: str
        choices: [POST, PUT, PATCH]
        default: POST
      headers:
        description: Extra request headers, for example C(Authorization). Their values are treated as secrets.
          C(Content-Type) is C(application/json) unless set here.
        type: dict
      timeout:
        description: Seconds for the whole request (connect, TLS, send, answer), at most O(deadline).
        type: float
        default: 10.0
      validate_certs:
        description: Check the server's certificate for C(https://) URLs.
        type: bool
        default: true
  deadline:
    description: Seconds for all channels together (they are sent in parallel).
    type: float
    default: 20.0
  fail_on_error:
    description: Fail when any configured channel failed, not only when all did.
    type: bool
    default: false
  remember:
    description:
      - Keep the watch's memory of this alert in O(remember.state_dir)C(/watch-state.json), written only after the
        alert was delivered on at least one channel (never in check mode), so an alert that was not sent is planned
        again by the next run.
      - With O(remember.node) and O(remember.verdict), the alert is the node's verdict alert of M(pft_watch_decide).
      - With O(remember.key) and O(remember.value), the alert is not sent again while the same key was sent with the
        same value less than O(remember.realert_after) seconds ago (RV(deduplicated) is then true); a cause that
        lasts, such as Ganglia down, is alerted once an hour, not every minute.
    type: dict
    suboptions:
      state_dir:
        description: The watch's state directory.
        type: path
        required: true
      node:
        description: The node whose verdict alert this is.
        type: str
      verdict:
        description: Its verdict.
        type: str
        choices: [ok, unknown, warning, critical]
      key:
        description: Any other alert's identity, for example V(no-target:compute1/guest1).
        type: str
      value:
        description: What it said, in a word (a new value is alerted at once).
        type: str
        default: ""
      realert_after:
        description: Seconds after which the same key and value are alerted again.
        type: float
        default: 3600
      lock_timeout:
        description: Deadline in seconds to lock the state directory.
        type: float
        default: 30
extends_documentation_fragment:
  - pft.attributes
attributes:
  check_mode:
    support: full
    details: Validates every channel and returns in RV(would_send) what each would send; connects to nothing.
  diff_mode:
    support: none
notes:
  - Run it on the controller (C(delegate_to) V(localhost), C(run_once)), where the watch runs.
  - Any C(Authorization) or token header belongs in O(webhook.headers), not in the URL. A URL whose path is
    itself the secret (as Slack's) is shown in errors and results; keep such a URL in vault and prefer a header token.
"""

EXAMPLES = r"""
- name: Tell the admin that a node was evacuated (syslog only)
  pft_alert:
    severity: critical
    subject: "node03 evacuated to spare1"
    body: "CPU1 Temp 91 C >= upper_critical 85 C for 3 samples"
    details:
      node: node03
      target: spare1
      sensors: {"CPU1 Temp": 91}
  delegate_to: localhost
  run_once: true

- name: Syslog, mail and a webhook; a failing channel does not fail the task
  pft_alert:
    severity: warning
    subject: "{{ pft_node }} pre-staged on {{ pft_target }}"
    details: "{{ pft_audit_record }}"
    facility: daemon
    mail:
      host: smtp.example.org
      port: 587
      starttls: true
      username: pft
      password: "{{ vault_pft_smtp_password }}"
      from: pft@example.org
      to: [hpc-admins@example.org]
    webhook:
      url: https://alerts.example.org/api/pft
      headers:
        Authorization: "Bearer {{ vault_pft_webhook_token }}"
      timeout: 5
    deadline: 15
  delegate_to: localhost
  run_once: true
  register: pft_alert_result

- name: Show what would be sent, send nothing
  pft_alert:
    subject: test alert
    mail:
      host: localhost
      to: [root@localhost]
  check_mode: true
"""

RETURN = r"""
delivered:
  description: For every configured channel (C(syslog), C(mail), C(webhook)), whether it was delivered.
    Always false in check mode.
  returned: always
  type: dict
  sample: {syslog: true, mail: false, webhook: true}
errors:
  description: For every failed channel, the error, naming the socket, server (C(host:port)) or URL and the cause.
    In check mode, the channels whose options are wrong.
  returned: always
  type: dict
  sample: {mail: "mail to smtp.example.org:25: connect failed: Connection refused"}
would_send:
  description: In check mode, what each valid channel would send. C(syslog) has C(socket), C(facility),
    C(priority), C(ident) and C(line); C(mail) has C(server), C(from), C(to), C(subject), C(body), C(starttls)
    and C(login) (the user name, or null); C(webhook) has C(url) (without query), C(method), C(headers)
    (values masked) and C(body) (the JSON object).
  returned: in check mode
  type: dict
  sample:
    syslog: {socket: /dev/log, facility: user, priority: 10, ident: pft, line: "critical: node03 evacuated to spare1"}
    webhook: {url: "https://alerts.example.org/api/pft", method: POST, headers: {Authorization: "********"},
              body: {source: pft, severity: critical, subject: node03 evacuated to spare1}}
deduplicated:
  description: True when O(remember.key) was alerted with the same value less than O(remember.realert_after) ago.
  returned: when remember is given
  type: bool
  sample: false
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: "alert delivered by syslog, webhook; failed: mail to smtp.example.org:25: connect failed: Connection refused"
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pft_alert import (  # noqa: E402
    FACILITIES,
    SEVERITIES,
    WEBHOOK_METHODS,
    Alert,
    AlertError,
    build_channels,
    send_alert,
    summary,
)
from ansible.module_utils.pft_state import WatchError, alert_due, remember_alert  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            severity=dict(type="str", choices=list(SEVERITIES), default="warning"),
            subject=dict(type="str", required=True),
            body=dict(type="str"),
            details=dict(type="dict"),
            syslog=dict(type="bool", default=True),
            facility=dict(type="str", choices=list(FACILITIES), default="user"),
            syslog_ident=dict(type="str", default="pft"),
            syslog_socket=dict(type="path", default="/dev/log"),
            mail=dict(type="dict", options={
                "host": dict(type="str", required=True),
                "port": dict(type="int", default=25),
                "from": dict(type="str"),
                "to": dict(type="list", elements="str", required=True),
                "starttls": dict(type="bool", default=False),
                "validate_certs": dict(type="bool", default=True),
                "username": dict(type="str"),
                "password": dict(type="str", no_log=True),
                "timeout": dict(type="float", default=10.0),
            }),
            webhook=dict(type="dict", options=dict(
                url=dict(type="str", required=True),
                method=dict(type="str", choices=list(WEBHOOK_METHODS), default="POST"),
                headers=dict(type="dict", no_log=True),
                timeout=dict(type="float", default=10.0),
                validate_certs=dict(type="bool", default=True),
            )),
            deadline=dict(type="float", default=20.0),
            fail_on_error=dict(type="bool", default=False),
            remember=dict(type="dict", options=dict(
                state_dir=dict(type="path", required=True),
                node=dict(type="str"),
                verdict=dict(type="str", choices=["ok", "unknown", "warning", "critical"]),
                key=dict(type="str", no_log=False),
                value=dict(type="str", default=""),
                realert_after=dict(type="float", default=3600),
                lock_timeout=dict(type="float", default=30),
            ), required_one_of=[("node", "key")], mutually_exclusive=[("node", "key")],
                required_together=[("node", "verdict")]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    if p["deadline"] <= 0:
        module.fail_json(msg="deadline must be > 0 seconds, got %s" % p["deadline"])
    for channel in ("mail", "webhook"):
        if p[channel] and p[channel]["timeout"] <= 0:
            module.fail_json(msg="%s.timeout must be > 0 seconds, got %s" % (channel, p[channel]["timeout"]))
    if not (p["syslog"] or p["mail"] or p["webhook"]):
        module.fail_json(msg="nothing to send: syslog is false and neither mail nor webhook is configured")
    mem = p["remember"]
    try:
        if mem and mem["key"] and not alert_due(mem["state_dir"], mem["key"], mem["value"], mem["realert_after"]):
            module.exit_json(changed=False, deduplicated=True, delivered={}, errors={},
                             msg="not sent: %s was alerted with the same value less than %.0f s ago"
                             % (mem["key"], mem["realert_after"]))
    except WatchError as exc:
        module.fail_json(msg=str(exc))
    try:
        alert = Alert(p["severity"], p["subject"], message=p["body"], details=p["details"])
        channels, invalid = build_channels(syslog=p["syslog"], syslog_facility=p["facility"],
                                           syslog_ident=p["syslog_ident"], syslog_socket=p["syslog_socket"],
                                           mail=p["mail"], webhook=p["webhook"])
        out = send_alert(alert, channels, deadline=p["deadline"], check_mode=check, invalid=invalid)
    except AlertError as exc:
        module.fail_json(msg=str(exc))
    delivered, errors = out["delivered"], out["errors"]
    result = dict(delivered=delivered, errors=errors, msg=summary(delivered, errors, check_mode=check))
    if check:
        result["would_send"] = out["would_send"]
        result["changed"] = bool(out["would_send"])
        all_failed = not out["would_send"]
    else:
        result["changed"] = any(delivered.values())
        all_failed = not any(delivered.values())
        refused = out["info"].get("mail", {}).get("refused")
        if refused:
            module.warn("mail: recipients refused: %s" % "; ".join("%s (%s)" % kv for kv in sorted(refused.items())))
    if mem:
        result["deduplicated"] = False
    if mem and not check and not all_failed:
        try:
            remember_alert(mem["state_dir"], node=mem["node"], verdict=mem["verdict"], key=mem["key"],
                           value=mem["value"] if mem["key"] else None, lock_timeout=mem["lock_timeout"])
        except (WatchError, OSError) as exc:
            errors["remember"] = "delivered, but not recorded as sent in %s: %s" % (mem["state_dir"], exc)
            result["msg"] += "; " + errors["remember"]
    if all_failed or (errors and p["fail_on_error"]):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
