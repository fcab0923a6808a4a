# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The repository layout the design fixes (README.md, "Repository layout"): the top-level directories, and
library/ holding only relative symlinks to plugins/modules/*.py."""
import os

from pft_paths import REPO

MODULES_DIR = os.path.join(REPO, "plugins", "modules")
LIBRARY_DIR = os.path.join(REPO, "library")


def _modules():
    return sorted(f for f in os.listdir(MODULES_DIR)
                  if f.endswith(".py") and not f.startswith("_"))


def test_library_holds_only_relative_symlinks_to_plugins_modules():
    entries = sorted(e for e in os.listdir(LIBRARY_DIR) if e != ".gitkeep")
    for entry in entries:
        path = os.path.join(LIBRARY_DIR, entry)
        assert os.path.islink(path), f"library/{entry} is not a symlink"
        target = os.readlink(path)
        assert not os.path.isabs(target), f"library/{entry} -> {target} is absolute"
        assert target == f"../plugins/modules/{entry}", f"library/{entry} -> {target}"
        assert os.path.isfile(path), f"library/{entry} is a dangling link"
    assert entries == _modules(), "library/ and plugins/modules/ differ"


def test_top_level_layout():
    for name in ("playbooks", "roles", "plugins/modules", "plugins/module_utils",
                 "inventory", "molecule", "README.md", "ansible.cfg", "Makefile",
                 ".ci/run", "requirements.txt", "requirements-dev.txt", "requirements.yml"):
        assert os.path.exists(os.path.join(REPO, name)), name
