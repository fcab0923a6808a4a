# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Paths of the repository, for tests.

Import these from here, not from ``conftest``: with several conftest.py files
in the tree (tests/, tests/e2e/), ``import conftest`` gets whichever pytest
loaded last.
"""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_UTILS = os.path.join(REPO, "plugins", "module_utils")
MODULES = os.path.join(REPO, "plugins", "modules")
