# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation shared by pft's modules (``extends_documentation_fragment: [pft.attributes]``).

A module's own ``attributes`` entries (support, details) are merged over these.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""

    # The default BMC credentials of the modules that talk to BMCs (ipmi_health_info, ipmi_fence); the
    # matching argument spec is pft_ipmi_nodes.BMC_CREDENTIAL_ARGS.
    BMC_CREDENTIALS = r"""
options:
  username:
    description:
      - Default BMC user for targets that do not give one.
      - If not set, the environment variable E(PFT_BMC_USERNAME) is used.
    type: str
  password:
    description:
      - Default BMC password for targets that do not give one.
      - If not set, the environment variable E(PFT_BMC_PASSWORD) is used.
    type: str
"""

    # The controller state directory of the watch modules (pft_watch_decide, pft_quarantine,
    # pft_audit); the matching argument spec is pft_state.STATE_ARGS.
    STATE_DIR = r"""
options:
  state_dir:
    description: The watch's state directory on the controller (a local file system; it is locked with flock).
    type: path
    default: /var/lib/pft
  lock_timeout:
    description: Deadline in seconds to lock the state directory.
    type: float
    default: 30
"""

    # Reading Ganglia's XML (ganglia_target_info, ganglia_placement_info); the matching argument
    # spec is pft_ganglia.READ_ARGS, and check_read_args() its checks.
    GANGLIA_READ = r"""
options:
  endpoints:
    description:
      - Ganglia XML endpoints, tried in order, as V(host), V(host:port) or V([ipv6]:port).
      - gmond serves its XML on its C(tcp_accept_channel) (usually 8649), gmetad on 8651.
    type: list
    elements: str
    required: true
  default_port:
    description: Port used for endpoints given without one.
    type: int
    default: 8649
  timeout:
    description: Deadline in seconds for connecting to and reading one endpoint.
    type: float
    default: 5.0
  max_bytes:
    description: Size cap for the XML of one endpoint; a larger answer counts as a failure of that endpoint.
    type: int
    default: 67108864
  host_down_factor:
    description: A host is down when its C(TN) is greater than this times its C(TMAX) (Ganglia's rule is 4).
    type: float
    default: 4.0
  metric_stale_factor:
    description: A metric the module reads is stale when its C(TN) is greater than this times its C(TMAX).
    type: float
    default: 2.0
"""

    # Ranking targets (ganglia_target_info, pft_watch_select); the matching argument spec is
    # pft_ganglia.RANK_ARGS, and criteria_from_params() turns it into a Criteria.
    GANGLIA_RANK = r"""
options:
  healthy_verdicts:
    description: Verdicts of O(health) that count as healthy.
    type: list
    elements: str
    default: [ok]
  guest_metric:
    description: Metric each node publishes with the number of guests it runs (see M(ganglia_metric)).
    type: str
    default: pft_guest_count
  free_memory_metric:
    description: Metric each node publishes with the memory Xen can give a new guest, in MiB.
    type: str
    default: pft_xen_free_memory_mb
  load_metric:
    description: Metric used to order acceptable hosts, lowest first.
    type: str
    default: load_one
"""
