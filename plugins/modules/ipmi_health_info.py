#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ipmi_health_info
short_description: Sample BMC sensors over IPMI and give each node a health verdict
description:
  - Reads the sensors of one or more nodes' BMCs with pyghmi, out-of-band over IPMI v2.0 LAN
    (RMCP+) or in-band through the local C(/dev/ipmi0) device, and judges them against a
    sensor policy.
  - Gives every node a verdict of V(ok), V(warning), V(critical) or V(unknown).
    V(unknown) means the BMC was unreachable, refused the credentials, did not answer within
    O(timeout), or a watched sensor was unavailable or missing. It is never escalated to
    V(critical), so it never triggers an evacuation.
  - Samples several times, either O(samples) times or for a O(window) of seconds, with
    hysteresis (a state counts only after O(hysteresis) consecutive samples agree) and a trend
    (least-squares slope) for every sensor. With O(stop_on) it returns as soon as a node turns
    bad, so a cron-driven run can watch for most of a minute and still act at once.
  - All BMCs are read concurrently. Sessions stay open across samples, sensors are read one by
    one (one bad sensor does not abort its node), and every node has a hard deadline per sample,
    so a dead BMC costs at most O(timeout), never pyghmi's own 27 s.
  - A sensor that the policy asks for by exact name but that a BMC does not have is reported as
    a discrepancy and makes that node V(unknown), not silently ignored. A node whose BMC has no
    sensor at all that the policy watches (glob or type-only rules that match nothing) is
    V(unknown) too, never V(ok).
  - One bad entry in O(targets) does not blind the watch for everyone. A node without a BMC address,
    user or password, with a bad port, or whose BMC address and port another node also has, is
    V(unknown) with the reason (naming the node, and for a shared BMC all the nodes that share it)
    and is not sampled; the other nodes are sampled as usual. Only a list that cannot be used at
    all (empty, an entry without a name, or a name listed twice) fails the module.
  - At the end of a run every BMC session is closed (Close Session), all at once, so that a run a minute does not
    hold one more of a BMC's few session slots each minute.
  - The module only reads; it changes nothing, so check mode runs it as usual.
version_added: "0.1.0"
author:
  - pft contributors
requirements:
  - pyghmi == 1.6.19 (pinned; pft patches two of its 1.6.x bugs at run time, see notes)
options:
  targets:
    description:
      - The nodes to check, each with its BMC.
      - Each BMC (O(targets[].address) and O(targets[].port)) may belong to one node only; nodes that
        share one are all V(unknown) and none of them is sampled, since pft could not tell whose
        sensors it reads and would evacuate the wrong node.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The node's name, used as the key of the result.
          - Every entry needs one, and no two entries may have the same; otherwise the module fails.
        type: str
      address:
        description:
          - "The BMC's address. Needed for O(targets[].interface=lan); a node without one is
            V(unknown) (C(inventory: bmc_address is not set for NODE)) and is not sampled."
        type: str
      port:
        description:
          - The BMC's RMCP+ UDP port, an integer from 1 to 65535 (a string of digits is accepted).
          - A node with any other value is V(unknown) and is not sampled.
        type: raw
        default: 623
      username:
        description:
          - The BMC user. Defaults to O(username). A LAN node with neither is V(unknown) and is not sampled.
        type: str
      password:
        description:
          - The BMC password. Defaults to O(password). Keep it in vault or the environment;
            it never appears in the module's arguments on the command line or in its result.
          - A LAN node with neither is V(unknown) and is not sampled.
        type: str
      interface:
        description:
          - V(lan) reads the BMC over the network. V(local) reads it in-band through
            C(/dev/ipmi0) on the host the module runs on (needs the ipmi_si/ipmi_devintf drivers).
        type: str
        choices: [lan, local]
        default: lan
  policy:
    description:
      - Per-sensor rules. The first rule that matches a sensor judges it.
      - Without rules, O(use_bmc_thresholds=true) watches every sensor of the BMC.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Sensor name or shell-style glob, for example C(CPU* Temp).
        type: str
      type:
        description: Sensor type as the BMC reports it, for example C(Temperature), C(Fan), C(Voltage).
        type: str
      lower_warning:
        description: A reading at or below this is V(warning).
        type: float
      lower_critical:
        description: A reading at or below this is V(critical).
        type: float
      upper_warning:
        description: A reading at or above this is V(warning).
        type: float
      upper_critical:
        description: A reading at or above this is V(critical).
        type: float
      fail_at:
        description:
          - The reading at which the node fails (a thermal trip, a fan too slow to cool it), for
            O(predict). Above the readings it is a rising failure, below them a falling one.
          - Without it, the BMC's own non-recoverable thresholds are the failure lines (without those, this sensor
            predicts nothing). Its thresholds work as before either way.
        type: float
      required:
        description:
          - Whether a BMC that has no sensor matching this rule is a discrepancy.
          - Defaults to V(true) for an exact O(policy[].name) and V(false) for globs and type-only rules.
        type: bool
  use_bmc_thresholds:
    description:
      - Also judge sensors by the threshold states the BMC itself reports (non-critical gives
        V(warning), critical and non-recoverable give V(critical)). The worse of rule and BMC wins.
    type: bool
    default: false
  samples:
    description:
      - How many samples to take. Mutually exclusive with O(window).
      - Defaults to 1 when O(window) is not given.
    type: int
  window:
    description:
      - Sample for this many seconds instead of a fixed count, for example 55 for a run started
        by cron every minute. Mutually exclusive with O(samples).
    type: float
  interval:
    description: Seconds from the start of one sample to the start of the next.
    type: float
    default: 1.0
  handled:
    description:
      - What was already done for a node, V(warning) (a target pre-staged) or V(critical) (evacuated), from
        M(pft_watch_decide) with O(pft_watch_decide#module:handled_only). Such a node ends the run early
        (O(stop_on), or a prediction) only for something worse; an evacuated node never on a prediction.
        Its verdict is still reported at the end of the run.
      - Without it, a pre-staged node that stays at its warning would end every run after O(hysteresis)
        samples, and the nodes would go unwatched for the rest of each cron minute.
    type: dict
    default: {}
  stop_on:
    description:
      - Return as soon as any node's confirmed verdict reaches this level.
      - V(never) always runs all samples or the whole window.
    type: str
    choices: [warning, critical, never]
    default: never
  hysteresis:
    description:
      - How many consecutive samples must agree before a sensor's state counts, in both
        directions, tracked per node and sensor. 1 disables hysteresis.
    type: int
    default: 1
  timeout:
    description:
      - Hard deadline in seconds for one node in one sample (login, sensor repository and readings).
        A node that does not answer in time is V(unknown) for that sample.
    type: float
    default: 3.0
  parallelism:
    description:
      - How many BMC logins (and in-band reads) run at once. Readings of logged-in BMCs are all
        in flight together on one event loop regardless. A login still queued when a sample's
        deadline passes makes that node V(unknown) for the sample.
      - A login that has not completed within O(timeout) no longer counts (its BMC is as good as
        dead; it is still retried), so BMCs that do not answer cannot keep the others from logging
        in. Logins wait in line with nodes never tried first, then the least recently tried.
      - A BMC whose login failed is logged into again only after a backoff (twice O(timeout), at least
        5 s, doubling up to 60 s; 60 s at once for refused credentials), and no sample waits for such
        a retry; its node is V(unknown) meanwhile, with the time of the next attempt in its reason.
    type: int
    default: 32
  return_history:
    description: Return every sample of every sensor (time, value, state), for plots and audits.
    type: bool
    default: false
  predict:
    description:
      - Predict each node's failure from the trend of its watched sensors that have a failure line (the
        rule's O(policy[].fail_at), else the BMC's own non-recoverable thresholds from its sensor records;
        pft_predict, docs/watch.md, "Prediction"), and end the run early, as O(stop_on) does, when a node
        is predicted to fail within its O(predict.evacuate_within) seconds.
      - Omitted, nothing is predicted.
    type: dict
    suboptions:
      state_file:
        description:
          - Where the samples of the last O(predict.window) seconds are kept between runs (JSON,
            written atomically), so that a trend that began at the end of one run is carried into
            the next. Omitted, each run starts without history.
          - An unreadable file is a warning, and the run starts without history. One that cannot be
            written (a full or read-only directory) is a warning too; the health result is returned, and
            the next run starts without history.
        type: path
      window:
        description: Seconds of samples the trend is estimated from.
        type: float
        default: 90
      min_confidence:
        description: How sure (0 to 1) the trend toward the failure line must be.
        type: float
        default: 0.9
      evacuate_within:
        description:
          - Seconds; a node predicted to fail sooner ends the run, with RV(nodes.NODE.prediction.predicted).
            The watch gives its expected evacuation times its margin.
          - Omitted, predictions are only reported.
        type: float
      evacuate_within_nodes:
        description: Per node, instead of O(predict.evacuate_within).
        type: dict
extends_documentation_fragment:
  - pft.attributes
  - pft.bmc_credentials
attributes:
  check_mode:
    support: full
    details: The module only reads sensors; check mode runs it normally.
  diff_mode:
    support: none
notes:
  - Run it on the controller (C(delegate_to=localhost)) for out-of-band checks, with the
    Python that has pyghmi, or on the node itself with O(targets[].interface=local).
  - pyghmi 1.6.x loses wake-ups when a BMC answers within about 100 microseconds (about one
    request in three waits out a 0.5-1 s retry timer), can block its IO thread in a receive when
    many BMCs share its socket, and hangs a second login to the same BMC in one process. pft
    fixes these at run time, narrowly, on pyghmi 1.6.x only; RV(pyghmi_fixes) says whether the
    fixes are active.
  - Identical BMC models that report the same SDR timestamp share one parsed sensor repository
    inside pyghmi; that is correct as long as BMCs of one model have the same sensors.
seealso:
  - module: community.general.ipmi_power
"""

EXAMPLES = r"""
- name: Watch all compute nodes for up to 55 s, return as soon as one turns bad
  ipmi_health_info:
    targets: "{{ pft_bmc_targets }}"  # [{name: node01, address: 10.1.0.11}, ...]
    username: "{{ vault_bmc_username }}"
    password: "{{ vault_bmc_password }}"
    policy:
      - name: "CPU* Temp"
        upper_warning: 75
        upper_critical: 85
      - type: Fan
        lower_warning: 900
        lower_critical: 600
      - name: 12V
        lower_critical: 10.8
        upper_critical: 13.2
    window: 55
    interval: 1
    hysteresis: 3
    stop_on: warning
  delegate_to: localhost
  register: health

- name: One sample judged by the BMCs' own thresholds, credentials from the environment
  ipmi_health_info:
    targets:
      - name: node01
        address: 10.1.0.11
      - name: node02
        address: 10.1.0.12
    use_bmc_thresholds: true
  environment:
    PFT_BMC_USERNAME: admin
    PFT_BMC_PASSWORD: "{{ vault_bmc_password }}"
  delegate_to: localhost

- name: In-band, on the node itself
  ipmi_health_info:
    targets:
      - name: "{{ inventory_hostname }}"
        interface: local
    use_bmc_thresholds: true
  become: true

- name: Nodes to evacuate
  ansible.builtin.debug:
    msg: "{{ health.summary.critical }}"
"""

RETURN = r"""
nodes:
  description: Per node, its verdict and the evidence for it.
  returned: always
  type: dict
  contains:
    verdict:
      description: V(ok), V(warning), V(critical) or V(unknown).
      type: str
      sample: critical
    reason:
      description:
        - "Why, in words. For a node that was not sampled because of its entry in O(targets), what is
          wrong with it, for example C(inventory: bmc_address is not set for compute3) or
          C(inventory: compute1 and compute3 have the same BMC 10.0.0.5:623; neither is sampled ...)."
      type: str
      sample: "CPU1 Temp: 92 >= upper_critical 85"
    fired:
      description: The sensor and rule that decided the verdict, or null.
      type: dict
      sample: {"sensor": "CPU1 Temp", "rule": "name=CPU* Temp", "value": 92.0}
    sensors:
      description:
        - Per watched sensor, its verdict, reason, last value, min, max, C(trend_per_min)
          (least-squares slope in units per minute), sample count, the rule that judged it,
          C(pending) (a state building up towards the hysteresis count) and, with
          O(return_history), C(history).
      type: dict
      sample: {"CPU1 Temp": {"verdict": "critical", "value": 92.0, "min": 45.0, "max": 92.0,
               "trend_per_min": 41.2, "samples": 7, "rule": "name=CPU* Temp", "pending": null,
               "reason": "92 >= upper_critical 85"}}
    discrepancies:
      description: Sensors the policy requires by name that this BMC does not have.
      type: list
      elements: str
      sample: ["CPU3 Temp"]
    samples:
      description: Samples taken of this node (0 for a node that was not sampled because of its entry).
      type: int
      sample: 7
    error:
      description:
        - The last node-level error (unreachable, authentication), if the last sample had one, or why
          the node's entry in O(targets) could not be used.
      type: str
      returned: when the last sample of the node failed, or the node was not sampled
      sample: "BMC unreachable: no answer within 3s"
summary:
  description: Node names by verdict.
  returned: always
  type: dict
  sample: {"ok": ["node02"], "warning": [], "critical": ["node01"], "unknown": ["node03"]}
samples:
  description: Samples taken (0 when no entry of O(targets) could be used).
  returned: always
  type: int
  sample: 7
elapsed:
  description: Seconds the module sampled for.
  returned: always
  type: float
  sample: 6.02
bmc_sessions:
  description:
    - The sessions given back at the end of the run. C(closed), the BMCs that answered Close Session; C(unanswered),
      those that did not within 2 s (or O(timeout) if shorter). A BMC has few session slots, shared with the admins'
      tools, so no run leaves one open.
  returned: always
  type: dict
  sample: {closed: 4, unanswered: 0}
sweep_seconds:
  description: Minimum, median and maximum time of one sample of all nodes.
  returned: always
  type: dict
  sample: {"min": 0.11, "median": 0.13, "max": 1.9}
stopped_early:
  description:
    - When O(stop_on) or a prediction (then C(predicted) is true) ended the run, which nodes, after how
      many samples and at what time.
  returned: always
  type: dict
  sample: {"nodes": ["node01"], "after_samples": 7, "at": 6.02}
pyghmi_fixes:
  description: Whether pft's run-time fixes for pyghmi 1.6.x (lost wake-up, blocking receive) are active.
  returned: always
  type: bool
  sample: true
"""

# E402: an Ansible module documents itself (DOCUMENTATION, EXAMPLES, RETURN) before its imports.
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.pft_common import JsonFileError, read_json, write_json  # noqa: E402
from ansible.module_utils.pft_failure import fail  # noqa: E402
from ansible.module_utils.pft_ipmi import run_health  # noqa: E402
from ansible.module_utils.pft_ipmi_nodes import BMC_CREDENTIAL_ARGS  # noqa: E402
from ansible.module_utils.pft_ipmi_policy import HealthError, Policy  # noqa: E402
from ansible.module_utils.pft_ipmi_predict import Foresight  # noqa: E402
from ansible.module_utils.pft_ipmi_pyghmi import HAS_PYGHMI, PYGHMI_IMPORT_ERROR  # noqa: E402

RULE_SPEC = dict(
    name=dict(type="str"),
    type=dict(type="str"),
    lower_warning=dict(type="float"),
    lower_critical=dict(type="float"),
    upper_warning=dict(type="float"),
    upper_critical=dict(type="float"),
    required=dict(type="bool"),
    fail_at=dict(type="float"),
)

PREDICT_SPEC = dict(
    state_file=dict(type="path"),
    window=dict(type="float", default=90.0),
    min_confidence=dict(type="float", default=0.9),
    evacuate_within=dict(type="float"),
    evacuate_within_nodes=dict(type="dict"),
)

# Only what makes the whole list unusable fails the module (pft_ipmi.validate_targets says so, by
# index or name); a bad BMC entry of one node makes that node unknown, so address, port, username
# and password are not checked here: port is raw so that a mistyped inventory value is that node's
# problem alone.
TARGET_SPEC = dict(
    name=dict(type="str"),
    address=dict(type="str"),
    port=dict(type="raw", default=623),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    interface=dict(type="str", choices=["lan", "local"], default="lan"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            targets=dict(type="list", elements="dict", required=True, options=TARGET_SPEC),
            **BMC_CREDENTIAL_ARGS,
            policy=dict(type="list", elements="dict", default=[], options=RULE_SPEC),
            use_bmc_thresholds=dict(type="bool", default=False),
            samples=dict(type="int"),
            window=dict(type="float"),
            interval=dict(type="float", default=1.0),
            stop_on=dict(type="str", choices=["warning", "critical", "never"], default="never"),
            handled=dict(type="dict", default={}),
            hysteresis=dict(type="int", default=1),
            timeout=dict(type="float", default=3.0),
            parallelism=dict(type="int", default=32),
            return_history=dict(type="bool", default=False),
            predict=dict(type="dict", options=PREDICT_SPEC),
        ),
        mutually_exclusive=[("samples", "window")],
        supports_check_mode=True,
    )
    if not HAS_PYGHMI:
        module.fail_json(msg=missing_required_lib("pyghmi"), exception=str(PYGHMI_IMPORT_ERROR))

    p = module.params
    targets = []
    for t in p["targets"]:
        t = dict(t)
        if t.get("username") is None:
            t["username"] = p["username"]
        if t.get("password") is None:
            t["password"] = p["password"]
        targets.append(t)
    # drop empty rule keys so that Rule() sees only what the user gave
    rules = [{k: v for k, v in r.items() if v is not None} for r in p["policy"]]
    try:
        policy = Policy(rules, p["use_bmc_thresholds"])
        foresight = _foresight(module, p["predict"]) if p["predict"] else None
        result = run_health(
            targets, policy,
            samples=p["samples"] or 1, interval=p["interval"], window=p["window"],
            stop_on=p["stop_on"], hysteresis=p["hysteresis"], timeout=p["timeout"],
            parallelism=p["parallelism"], keep_history=p["return_history"], foresight=foresight,
            handled=p["handled"],
        )
        if foresight is not None and p["predict"]["state_file"] and not module.check_mode:
            _keep_samples(module, p["predict"]["state_file"], foresight.carried())
    except HealthError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        fail(module, "ipmi_health_info", exc)
    module.exit_json(changed=False, **result)


def _keep_samples(module, path, carried):
    """Write the samples the next run carries. The verdicts matter more than this cache: a file that cannot
    be written (a full or read-only state directory) is a warning, and the next run starts without them."""
    try:
        # the watch's first run may come before anything else made its state directory
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
        write_json(path, carried, indent=None)
    except OSError as exc:
        module.warn("prediction samples %s not kept (%s): the next run starts without them" % (path, exc))


def _foresight(module, predict):
    """The Foresight of O(predict), with the samples an earlier run kept (a warning if unreadable)."""
    carried = None
    if predict["state_file"]:
        try:
            carried = read_json(predict["state_file"], None)
        except (JsonFileError, OSError) as exc:
            module.warn("prediction samples %s unreadable (%s): starting without history"
                        % (predict["state_file"], exc))
    if not 0.0 < predict["min_confidence"] < 1.0:
        raise HealthError("predict.min_confidence must be between 0 and 1, got %s" % predict["min_confidence"])
    if predict["window"] <= 0:
        raise HealthError("predict.window must be positive, got %s" % predict["window"])
    return Foresight(within=predict["evacuate_within_nodes"], default_within=predict["evacuate_within"],
                     carried=carried, window_s=predict["window"], min_confidence=predict["min_confidence"])


if __name__ == "__main__":
    main()
