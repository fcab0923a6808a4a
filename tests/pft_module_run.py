# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() in-process, as Ansible would, and return its JSON result with its exit code."""
import json

import pytest
from ansible.module_utils import _internal as module_internal
from ansible.module_utils.testing import patch_module_args


def run_module(module, args, capsys, check_mode=False):
    """``module`` is the imported module file; ``capsys`` pytest's fixture. Adds ``rc`` to the result."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    # Once any test in this process has imported controller code (ansible._internal), ansible-core
    # treats module.warn() as the controller's display and the warning never reaches the result.
    # A module runs on the target, where that flag is False: run it so here too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module_internal, "is_controller", False)
        with patch_module_args(args):
            with pytest.raises(SystemExit) as exc:
                module.main()
    result = json.loads(capsys.readouterr().out)
    result["rc"] = exc.value.code
    return result
