# -*- coding: utf-8 -*-
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""How a pft module fails on any error: one clean message that names what is at fault.

The watch alerts with the first line of a failed step's message, so a bare traceback (a full disk,
a corrupt state file, a bug) would reach the admin as noise, or not at all.
"""
from __future__ import annotations

import traceback

from ansible.module_utils.pft_common import os_error_text


def fail(module, name, exc, clean=()):
    """``module.fail_json`` for ``exc``, raised in module ``name``.

    * ``clean`` types (pft's own errors, whose text names the node, file or directory at fault):
      their message as it is;
    * an ``OSError``: the file and the cause with its errno name (``No space left on device [ENOSPC]``);
    * anything else is a bug: ``internal error in <name>: <Type>: <first line>``.

    The last two carry the traceback in ``exception`` (shown with ``-vvv``)."""
    if isinstance(exc, clean):
        module.fail_json(msg=str(exc))
    if isinstance(exc, OSError):
        msg = "%s: %s%s" % (name, "%s: " % exc.filename if exc.filename else "", os_error_text(exc))
    else:
        msg = "internal error in %s: %s: %s" % (name, type(exc).__name__, (str(exc).splitlines() or [""])[0])
    module.fail_json(msg=msg, exception=traceback.format_exc())
