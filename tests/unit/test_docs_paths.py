# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""No doc names a repository file that the repository does not have.

Every path in backticks or in a Markdown link of README.md and docs/*.md that starts with one of
the repository's top directories must exist (a `file.py::test` or `file.py:12` reference counts as
its file). Paths that only exist at run time are listed in RUNTIME, with where they come from."""
import glob
import os
import re

from pft_paths import REPO

TOP = ("plugins/", "roles/", "playbooks/", "tests/", "testbed/", "bench/", "scripts/", "docs/", "inventory/",
       "molecule/", "library/")
RUNTIME = {
    "inventory/testbed/",        # written by `testbed/testbed up` (the testbed named pft)
    "inventory/testbed.NAME/",   # written by `testbed/testbed --name NAME up`
}
REF = re.compile(r"`([^`\s]+)`|\]\(([^)\s]+)\)")


def referenced_paths(path):
    with open(path) as f:
        text = f.read()
    for m in REF.finditer(text):
        ref = (m.group(1) or m.group(2)).split("::")[0].split("#")[0].rstrip(".,:;)")
        if m.group(2) and path.startswith(os.path.join(REPO, "docs")) and not ref.startswith(TOP) \
                and "://" not in ref:
            ref = os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(path), ref)), REPO)
        ref = re.sub(r":\d+(-\d+)?$", "", ref)
        if ref.startswith(TOP) and not any(c in ref for c in "*<>{}$"):
            yield ref


def test_every_repository_path_a_doc_names_exists():
    docs = sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))) + [os.path.join(REPO, "README.md")]
    missing = sorted({(os.path.relpath(d, REPO), ref) for d in docs for ref in referenced_paths(d)
                      if ref not in RUNTIME and not os.path.exists(os.path.join(REPO, ref))})
    assert not missing, missing
