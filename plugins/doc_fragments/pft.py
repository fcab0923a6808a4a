# -*- coding: utf-8 -*-
# Copyright: pft contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
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

    # The controller state directory of the watch modules (pft_watch_decide, pft_quarantine,
    # pft_audit); the matching argument spec is pft_watch.STATE_ARGS.
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
