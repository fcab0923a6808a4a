"""Shared pytest setup.

pft is not a collection: its module_utils live in plugins/module_utils and
Ansible finds them through ``module_utils = ./plugins/module_utils``. For
tests to import them exactly as the modules do (``ansible.module_utils.pft_*``)
the directory is added to the ``ansible.module_utils`` package path.
"""
import sys

import ansible.module_utils

from pft_paths import MODULE_UTILS, MODULES

if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)
if MODULES not in sys.path:
    sys.path.insert(0, MODULES)
